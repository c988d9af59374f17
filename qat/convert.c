/* convert.c — tracing a QAT or calibrated model and lowering it to a q8 graph; see
 * convert.h for the steps. */
#include "qat/convert.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/layers.h"
#include "qat/observer.h"
#include "qat/qat.h"
#include "qat/qconfig.h"

enum { CV_MAX_IN = 8, CV_PATH_MAX = 256 };

/* One module call seen while tracing. */
typedef struct cv_record {
    nn_module *m;
    ag_tensor *in[CV_MAX_IN];
    int32_t n_in;
    ag_tensor *out;
    nn_ff_op ff_op; /* FloatFunctional: what the call computed */
    int32_t cat_dim;
} cv_record;

/* A lowered tensor: the q8 value standing for a traced tensor's storage. */
typedef struct cv_value {
    const float *data;
    int64_t numel;
    int32_t ndim;
    int64_t shape[AG_MAX_DIMS];
    int32_t id;
    q8_qparams qp; /* dtype Q8_F32 for float values */
} cv_value;

typedef struct cv_state {
    cv_record *rec;
    int32_t n_rec, cap_rec;
    bool oom;
    /* module -> dotted path, and which modules are inside a lowered module */
    nn_module **mods;
    char (*paths)[CV_PATH_MAX];
    bool *inside;
    int32_t n_mods, cap_mods;
    cv_value *vals;
    int32_t n_vals, cap_vals;
    q8_builder *b;
    int32_t output;
    bool pytorch_qparams;
} cv_state;

static bool grow(void **p, int32_t n, int32_t *cap, size_t elem)
{
    if (n < *cap)
        return true;
    int32_t nc = *cap ? 2 * *cap : 64;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q)
        return false;
    *p = q;
    *cap = nc;
    return true;
}

/* ---- tracing ---- */

static void trace_cb(void *ud, nn_module *m, ag_tensor *const *in, int32_t n_in, ag_tensor *out)
{
    cv_state *s = ud;
    if (!grow((void **)&s->rec, s->n_rec, &s->cap_rec, sizeof *s->rec)) {
        s->oom = true;
        return;
    }
    cv_record *r = &s->rec[s->n_rec++];
    memset(r, 0, sizeof *r);
    r->m = m;
    r->n_in = n_in < CV_MAX_IN ? n_in : CV_MAX_IN;
    for (int32_t i = 0; i < r->n_in; i++)
        r->in[i] = in[i];
    r->out = out;
    if (nn_module_is(m, "FloatFunctional"))
        r->ff_op = nn_ff_last_op(m, &r->cat_dim);
}

/* ---- module table ---- */

static bool is_conv_like(const nn_module *m)
{
    static const char *const t[] = {"nniqat.ConvBnReLU2d", "nniqat.ConvBn2d", "nniqat.ConvReLU2d",
                                    "nnqat.Conv2d", "Conv2d", "nni.ConvReLU2d"};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (nn_module_is(m, t[i]))
            return true;
    return false;
}

static bool is_linear_like(const nn_module *m)
{
    static const char *const t[] = {"nniqat.LinearReLU", "nniqat.LinearBn1d", "nnqat.Linear",
                                    "Linear", "nni.LinearReLU"};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (nn_module_is(m, t[i]))
            return true;
    return false;
}

/* Modules lowered as a whole: their children (weight fake quant, bn, ...) are not. */
static bool is_lowered_unit(const nn_module *m)
{
    return is_conv_like(m) || is_linear_like(m) || nn_module_is(m, "FloatFunctional") ||
           nn_module_is(m, "QuantStub") || nn_module_is(m, "DeQuantStub");
}

static int32_t module_index(const cv_state *s, const nn_module *m)
{
    for (int32_t i = 0; i < s->n_mods; i++)
        if (s->mods[i] == m)
            return i;
    return -1;
}

static const char *module_path(const cv_state *s, const nn_module *m)
{
    int32_t i = module_index(s, m);
    return i < 0 ? "?" : (s->paths[i][0] ? s->paths[i] : "(root)");
}

/* Collects every module with its path and marks the ones inside lowered units. */
static ag_status index_modules(cv_state *s, nn_module *m, const char *path, bool inside)
{
    if (s->n_mods == s->cap_mods) {
        int32_t nc = s->cap_mods ? 2 * s->cap_mods : 64;
        nn_module **mm = realloc(s->mods, (size_t)nc * sizeof *mm);
        if (mm)
            s->mods = mm;
        char(*pp)[CV_PATH_MAX] = realloc(s->paths, (size_t)nc * sizeof *pp);
        if (pp)
            s->paths = pp;
        bool *ii = realloc(s->inside, (size_t)nc * sizeof *ii);
        if (ii)
            s->inside = ii;
        if (!mm || !pp || !ii)
            return ag_error(AG_ERR_NOMEM, "convert: out of memory");
        s->cap_mods = nc;
    }
    int32_t k = s->n_mods++;
    s->mods[k] = m;
    snprintf(s->paths[k], CV_PATH_MAX, "%s", path);
    s->inside[k] = inside;
    bool child_inside = inside || is_lowered_unit(m);
    for (int32_t i = 0; i < m->n_children; i++) {
        char sub[CV_PATH_MAX];
        snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", m->children[i].name);
        /* A hook (activation_post_process) is read by its owner, never lowered alone. */
        bool hook = m->children[i].m == m->post;
        ag_status st = index_modules(s, m->children[i].m, sub, child_inside || hook);
        if (st != AG_OK)
            return st;
    }
    return AG_OK;
}

/* ---- values ---- */

static cv_value *find_value(cv_state *s, const ag_tensor *t)
{
    for (int32_t i = s->n_vals - 1; i >= 0; i--)
        if (s->vals[i].data == t->data && s->vals[i].numel == t->numel)
            return &s->vals[i];
    return NULL;
}

static ag_status add_value(cv_state *s, const ag_tensor *t, int32_t id, q8_qparams qp)
{
    if (!grow((void **)&s->vals, s->n_vals, &s->cap_vals, sizeof *s->vals))
        return ag_error(AG_ERR_NOMEM, "convert: out of memory");
    cv_value *v = &s->vals[s->n_vals++];
    v->data = t->data;
    v->numel = t->numel;
    v->ndim = t->ndim;
    memcpy(v->shape, t->shape, sizeof v->shape);
    v->id = id;
    v->qp = qp;
    return AG_OK;
}

static bool same_shape(const cv_value *v, const ag_tensor *t)
{
    if (v->ndim != t->ndim)
        return false;
    for (int32_t i = 0; i < t->ndim; i++)
        if (v->shape[i] != t->shape[i])
            return false;
    return true;
}

/* The q8 value for a module input: its lowered tensor, with a flatten node when the
 * model reshaped it between modules (torch.flatten in a forward). */
static ag_status input_value(cv_state *s, const nn_module *m, const ag_tensor *t, cv_value *out)
{
    cv_value *v = find_value(s, t);
    if (!v)
        return ag_error(AG_ERR_UNSUPPORTED,
                        "convert: the input of '%s' (%s) was not produced by a quantized "
                        "module (is a QuantStub missing, or an op done outside modules?)",
                        module_path(s, m), nn_module_type(m));
    if (same_shape(v, t)) {
        *out = *v;
        return AG_OK;
    }
    if (t->ndim == 2 && v->ndim >= 2 && t->shape[0] == v->shape[0]) {
        char name[CV_PATH_MAX + 16];
        snprintf(name, sizeof name, "%s.flatten_input", module_path(s, m));
        int32_t id = q8_builder_flatten(s->b, name, v->id);
        ag_status st = add_value(s, t, id, v->qp);
        *out = s->vals[s->n_vals - 1];
        return st;
    }
    char a[AG_SHAPE_STR_MAX], b[AG_SHAPE_STR_MAX];
    ag_tensor tv = {.ndim = v->ndim};
    memcpy(tv.shape, v->shape, sizeof tv.shape);
    return ag_error(AG_ERR_UNSUPPORTED, "convert: '%s' reads %s as %s: only flattening "
                                        "reshapes between modules can be lowered",
                    module_path(s, m), ag_shape_str(&tv, a, sizeof a), ag_shape_str(t, b, sizeof b));
}

/* ---- activation qparams ---- */

static q8_dtype q8_dtype_of(qat_dtype d) { return d == QAT_QINT8 ? Q8_I8 : Q8_U8; }

/* Output qparams of a module from its activation_post_process; the clamp range is the
 * fake quant's (or observer's) [quant_min, quant_max]. */
static ag_status output_qparams(cv_state *s, const nn_module *m, q8_qparams *qp)
{
    nn_module *post = m->post;
    float scale[1];
    int32_t zp[1], n = 0, qmin = 0, qmax = 0;
    ag_status st;
    const qat_observer_cfg *oc = NULL;
    if (post && qat_is_fake_quant(post) && s->pytorch_qparams &&
        qat_fake_quant_config(post)->kind != QAT_FQ_LEARNABLE)
        post = nn_module_find(post, "activation_post_process"); /* calculate_qparams */
    if (post && qat_is_fake_quant(post)) {
        st = qat_fake_quant_qparams(post, scale, zp, 1, &n);
        qat_fake_quant_range(post, &qmin, &qmax);
        oc = &qat_fake_quant_config(post)->obs;
    } else if (post && qat_is_observer(post)) {
        bool valid = true;
        st = qat_observer_qparams(post, scale, zp, 1, &n, &valid);
        oc = qat_observer_config(post);
        if (st == AG_OK)
            st = qat_observer_cfg_range(oc, &qmin, &qmax);
        if (st == AG_OK && !valid)
            st = ag_error(AG_ERR_STATE, "convert: the observer of '%s' saw no data (calibrate "
                                        "first)", module_path(s, m));
    } else {
        return ag_error(AG_ERR_UNSUPPORTED,
                        "convert: '%s' (%s) has no activation observer or fake quant (qconfig "
                        "None, or not prepared)", module_path(s, m), nn_module_type(m));
    }
    if (st != AG_OK)
        return st;
    if (oc->dtype == QAT_QINT32 || n != 1)
        return ag_error(AG_ERR_UNSUPPORTED, "convert: '%s': activations must be per-tensor "
                                            "quint8 or qint8", module_path(s, m));
    *qp = (q8_qparams){.dtype = q8_dtype_of(oc->dtype), .scale = scale[0], .zero_point = zp[0],
                       .qmin = qmin, .qmax = qmax};
    return AG_OK;
}

/* ---- weights ---- */

typedef struct cv_weights {
    int8_t *q;        /* (O, ...) */
    float *scale;     /* (O) or (1) */
    int64_t n_scale;
    float *bias;      /* (O) */
    int64_t out, per_out; /* O and elements per output channel */
} cv_weights;

static void cv_weights_free(cv_weights *w)
{
    free(w->q);
    free(w->scale);
    free(w->bias);
    memset(w, 0, sizeof *w);
}

/* Quantizes float weights (O, per_out) with the weight post-process's qparams exactly as
 * the fake quant computes them: q = clamp(zp + RNE(w * f32(1/s)), qmin, qmax). */
static ag_status quantize_weights(cv_state *s, const nn_module *m, nn_module *wpp, const float *w,
                                  cv_weights *out)
{
    int32_t n = 0, qmin = -128, qmax = 127;
    int32_t *zp = malloc((size_t)out->out * sizeof *zp);
    out->scale = malloc((size_t)out->out * sizeof *out->scale);
    out->q = malloc((size_t)(out->out * out->per_out) * sizeof *out->q);
    if (!zp || !out->scale || !out->q) {
        free(zp);
        return ag_error(AG_ERR_NOMEM, "convert: out of memory");
    }
    ag_status st;
    if (qat_is_fake_quant(wpp) && s->pytorch_qparams &&
        qat_fake_quant_config(wpp)->kind != QAT_FQ_LEARNABLE) {
        /* from_float: the weight observer's calculate_qparams, values clamped to its range */
        nn_module *obs = nn_module_find(wpp, "activation_post_process");
        st = qat_observer_qparams(obs, out->scale, zp, (int32_t)out->out, &n, NULL);
        if (st == AG_OK)
            st = qat_observer_cfg_range(qat_observer_config(obs), &qmin, &qmax);
    } else if (qat_is_fake_quant(wpp)) {
        st = qat_fake_quant_qparams(wpp, out->scale, zp, (int32_t)out->out, &n);
        qat_fake_quant_range(wpp, &qmin, &qmax);
    } else {
        /* Calibration (PTQ): the weight observer sees the weights now, as from_float does. */
        ag_tensor view = {.dtype = AG_F32, .ndim = 2, .shape = {out->out, out->per_out},
                          .numel = out->out * out->per_out, .data = (float *)w};
        st = qat_observer_observe(wpp, &view);
        if (st == AG_OK)
            st = qat_observer_qparams(wpp, out->scale, zp, (int32_t)out->out, &n, NULL);
        if (st == AG_OK)
            st = qat_observer_cfg_range(qat_observer_config(wpp), &qmin, &qmax);
    }
    out->n_scale = n;
    for (int32_t c = 0; st == AG_OK && c < n; c++)
        if (zp[c] != 0)
            st = ag_error(AG_ERR_UNSUPPORTED,
                          "convert: '%s': weight zero point %d in channel %d; integer weights "
                          "must be symmetric (use a symmetric weight qconfig)",
                          module_path(s, m), (int)zp[c], (int)c);
    if (st == AG_OK && qmin < -128)
        st = ag_error(AG_ERR_UNSUPPORTED, "convert: '%s': weights must be int8", module_path(s, m));
    for (int64_t c = 0; st == AG_OK && c < out->out; c++) {
        const float sc = out->scale[n == 1 ? 0 : c];
        const float inv = 1.0f / sc; /* PyTorch multiplies by the float reciprocal */
        for (int64_t k = 0; k < out->per_out; k++) {
            float q = nearbyintf(w[c * out->per_out + k] * inv);
            q = q < (float)qmin ? (float)qmin : q > (float)qmax ? (float)qmax : q;
            out->q[c * out->per_out + k] = (int8_t)q;
        }
    }
    free(zp);
    return st;
}

/* The float weight the module's QAT forward fake-quantizes, and its effective bias:
 *   plain conv/linear:  W, b
 *   ConvBn / LinearBn:  W * s[c] with s = gamma / sqrtf(running_var + eps) (computed in
 *                       float as the QAT forward does, so the integers are the same),
 *                       bias (b - mean) * s + beta (the frozen BN folded, in double). */
static ag_status folded_weights(const cv_state *s, const nn_module *m, const ag_tensor *weight,
                                const ag_tensor *bias, nn_batch_norm *bn, float **w_out,
                                cv_weights *out)
{
    out->out = weight->shape[0];
    out->per_out = weight->numel / out->out;
    float *w = malloc((size_t)weight->numel * sizeof *w);
    out->bias = calloc((size_t)out->out, sizeof *out->bias);
    if (!w || !out->bias) {
        free(w);
        return ag_error(AG_ERR_NOMEM, "convert: out of memory");
    }
    if (bn && s->pytorch_qparams) {
        /* torch.nn.utils.fusion's fold, bit for bit (what PyTorch's convert quantizes) */
        if (is_conv_like(m))
            qat_fuse_conv_bn_weights(weight->data, bias ? bias->data : NULL, out->out,
                                     out->per_out, bn->running_mean->data, bn->running_var->data,
                                     bn->eps, bn->weight->data, bn->bias->data, w, out->bias);
        else
            qat_fuse_linear_bn_weights(weight->data, bias ? bias->data : NULL, out->out,
                                       out->per_out, bn->running_mean->data,
                                       bn->running_var->data, bn->eps, bn->weight->data,
                                       bn->bias->data, w, out->bias);
        *w_out = w;
        return AG_OK;
    }
    for (int64_t c = 0; c < out->out; c++) {
        float sc = 1.0f;
        double b = bias ? bias->data[c] : 0.0;
        if (bn) {
            float std = sqrtf(bn->running_var->data[c] + bn->eps);
            sc = bn->weight->data[c] / std;
            b = (b - bn->running_mean->data[c]) * ((double)bn->weight->data[c] / std) +
                bn->bias->data[c];
        }
        for (int64_t k = 0; k < out->per_out; k++)
            w[c * out->per_out + k] = bn ? weight->data[c * out->per_out + k] * sc
                                         : weight->data[c * out->per_out + k];
        out->bias[c] = (float)b;
    }
    *w_out = w;
    return AG_OK;
}

/* Weight post-process of a QAT module, or (PTQ) a fresh weight observer from its qconfig. */
static nn_module *weight_post(const nn_module *m, bool *owned)
{
    *owned = false;
    nn_module *wpp = qat_module_weight_fake_quant((nn_module *)m);
    if (wpp)
        return wpp;
    const qat_qconfig *qc = qat_module_qconfig(m);
    if (!qc)
        return NULL;
    *owned = true;
    return qat_qconfig_new_weight(qc);
}

static bool has_relu(const nn_module *m)
{
    const char *t = nn_module_type(m);
    return strstr(t, "ReLU") != NULL;
}

/* The float conv/linear layer, its BN (if folded in) of a conv-like or linear-like module. */
static ag_status layer_parts(const nn_module *m, const ag_tensor **weight, const ag_tensor **bias,
                             nn_batch_norm **bn, const nn_conv2d **conv)
{
    nn_module *mm = (nn_module *)m;
    *bn = qat_module_bn(mm);
    *conv = NULL;
    if (nn_module_is(m, "nni.ConvReLU2d") || nn_module_is(m, "nni.LinearReLU"))
        mm = nn_module_find(mm, "0"); /* PTQ: the fused float container (conv, relu) */
    if (!mm)
        return ag_error(AG_ERR_STATE, "convert: %s without its layer", nn_module_type(m));
    *weight = nn_module_param(mm, "weight");
    *bias = nn_module_param(mm, "bias");
    if (is_conv_like(m))
        *conv = (const nn_conv2d *)mm;
    return *weight ? AG_OK : ag_error(AG_ERR_STATE, "convert: %s without a weight",
                                      nn_module_type(m));
}

static ag_status lower_layer(cv_state *s, const cv_record *r)
{
    const nn_module *m = r->m;
    const ag_tensor *weight, *bias;
    nn_batch_norm *bn;
    const nn_conv2d *conv;
    cv_value in;
    q8_qparams out_qp;
    ag_status st = layer_parts(m, &weight, &bias, &bn, &conv);
    if (st == AG_OK)
        st = input_value(s, m, r->in[0], &in);
    if (st == AG_OK)
        st = output_qparams(s, m, &out_qp);
    if (st != AG_OK)
        return st;
    if (bn && bn->base.training)
        return ag_error(AG_ERR_STATE, "convert: '%s': BN statistics are not frozen",
                        module_path(s, m));
    cv_weights w = {0};
    float *wf = NULL;
    bool owned = false;
    nn_module *wpp = weight_post(m, &owned);
    if (!wpp)
        return ag_error(AG_ERR_UNSUPPORTED, "convert: '%s' has no weight quantizer (qconfig None?)",
                        module_path(s, m));
    st = folded_weights(s, m, weight, bias, bn, &wf, &w);
    if (st == AG_OK)
        st = quantize_weights(s, m, wpp, wf, &w);
    if (owned)
        nn_module_free(wpp);
    free(wf);
    q8_weights qw = {.data = w.q, .scale = w.scale, .n_scale = w.n_scale, .bias = w.bias};
    q8_act act = has_relu(m) ? Q8_ACT_RELU : Q8_ACT_NONE;
    int32_t id = -1;
    const char *name = module_path(s, m);
    if (st == AG_OK && conv) {
        q8_conv2d_desc d = {.out_channels = conv->out_channels,
                            .kernel = {conv->kernel[0], conv->kernel[1]},
                            .stride = {conv->args.stride[0], conv->args.stride[1]},
                            .padding = {conv->args.padding[0], conv->args.padding[1]},
                            .dilation = {conv->args.dilation[0], conv->args.dilation[1]},
                            .groups = conv->args.groups};
        id = q8_builder_conv2d(s->b, name, in.id, &d, &qw, out_qp, act);
    } else if (st == AG_OK) {
        id = q8_builder_linear(s->b, name, in.id, weight->shape[0], &qw, out_qp, act);
    }
    cv_weights_free(&w);
    if (st == AG_OK)
        st = add_value(s, r->out, id, out_qp);
    return st;
}

/* ---- the other module kinds ---- */

static ag_status lower_quant_stub(cv_state *s, const cv_record *r)
{
    q8_qparams qp;
    ag_status st = output_qparams(s, r->m, &qp);
    if (st != AG_OK)
        return st;
    cv_value *v = find_value(s, r->in[0]);
    int32_t x;
    if (v) {
        if (v->qp.dtype != Q8_F32)
            return ag_error(AG_ERR_UNSUPPORTED, "convert: '%s' quantizes an already quantized "
                                                "tensor", module_path(s, r->m));
        x = v->id;
    } else {
        int64_t shape[AG_MAX_DIMS];
        const ag_tensor *t = r->in[0];
        shape[0] = -1;
        for (int32_t i = 1; i < t->ndim; i++)
            shape[i] = t->shape[i];
        x = q8_builder_input(s->b, "input", Q8_F32, t->ndim, shape);
        st = add_value(s, t, x, (q8_qparams){.dtype = Q8_F32});
    }
    int32_t id = q8_builder_quantize(s->b, module_path(s, r->m), x, qp);
    return st == AG_OK ? add_value(s, r->out, id, qp) : st;
}

static ag_status lower_dequant_stub(cv_state *s, const cv_record *r)
{
    cv_value in;
    ag_status st = input_value(s, r->m, r->in[0], &in);
    if (st != AG_OK)
        return st;
    int32_t id = q8_builder_dequantize(s->b, module_path(s, r->m), in.id);
    s->output = id;
    return add_value(s, r->out, id, (q8_qparams){.dtype = Q8_F32});
}

static ag_status lower_float_functional(cv_state *s, const cv_record *r)
{
    cv_value in[CV_MAX_IN];
    q8_qparams qp;
    ag_status st = output_qparams(s, r->m, &qp);
    for (int32_t i = 0; st == AG_OK && i < r->n_in; i++)
        st = input_value(s, r->m, r->in[i], &in[i]);
    if (st != AG_OK)
        return st;
    const char *name = module_path(s, r->m);
    int32_t id = -1;
    switch (r->ff_op) {
    case NN_FF_ADD:
    case NN_FF_ADD_RELU:
        id = q8_builder_add(s->b, name, in[0].id, in[1].id, qp,
                            r->ff_op == NN_FF_ADD_RELU ? Q8_ACT_RELU : Q8_ACT_NONE);
        break;
    case NN_FF_MUL:
        id = q8_builder_mul(s->b, name, in[0].id, in[1].id, qp, Q8_ACT_NONE);
        break;
    case NN_FF_CAT: {
        if (r->cat_dim != 1)
            return ag_error(AG_ERR_UNSUPPORTED, "convert: '%s': cat along dim %d (only the "
                                                "channel dim 1 is supported)", name, (int)r->cat_dim);
        int32_t ids[CV_MAX_IN];
        for (int32_t i = 0; i < r->n_in; i++)
            ids[i] = in[i].id;
        id = q8_builder_cat(s->b, name, ids, r->n_in, qp);
        break;
    }
    case NN_FF_NONE:
        return ag_error(AG_ERR_STATE, "convert: '%s' was not called", name);
    }
    return add_value(s, r->out, id, qp);
}

/* Ops that keep their input's qparams (PyTorch runs them on the quantized tensor). */
static ag_status lower_passthrough(cv_state *s, const cv_record *r)
{
    const nn_module *m = r->m;
    cv_value in;
    ag_status st = input_value(s, m, r->in[0], &in);
    if (st != AG_OK)
        return st;
    if (in.qp.dtype == Q8_F32)
        return ag_error(AG_ERR_UNSUPPORTED, "convert: '%s' (%s) runs on float data: is a "
                                            "QuantStub missing?", module_path(s, m), nn_module_type(m));
    const char *name = module_path(s, m);
    int32_t id = in.id;
    if (nn_module_is(m, "MaxPool2d") || nn_module_is(m, "AvgPool2d")) {
        const nn_pool2d *p = (const nn_pool2d *)m;
        q8_pool2d_desc d = {.kernel = {p->args.kernel[0], p->args.kernel[1]},
                            .stride = {p->args.stride[0], p->args.stride[1]},
                            .padding = {p->args.padding[0], p->args.padding[1]},
                            .count_include_pad = p->args.count_include_pad};
        id = nn_module_is(m, "MaxPool2d") ? q8_builder_max_pool2d(s->b, name, in.id, &d)
                                          : q8_builder_avg_pool2d(s->b, name, in.id, &d, NULL);
    } else if (nn_module_is(m, "AdaptiveAvgPool2d")) {
        id = q8_builder_adaptive_avg_pool2d(s->b, name, in.id, r->out->shape[2], r->out->shape[3],
                                            NULL);
    } else if (nn_module_is(m, "Flatten")) {
        id = q8_builder_flatten(s->b, name, in.id);
    } else if (nn_module_is(m, "ReLU")) {
        id = q8_builder_clamp(s->b, name, in.id, Q8_ACT_RELU);
    } else if (nn_module_is(m, "ReLU6") && !m->post) {
        id = q8_builder_clamp(s->b, name, in.id, Q8_ACT_RELU6);
    }
    /* Identity, Dropout (eval): the value itself. */
    return add_value(s, r->out, id, in.qp);
}

/* Observed elementwise modules: output requantized to their own qparams. */
static ag_status lower_observed_activation(cv_state *s, const cv_record *r)
{
    cv_value in;
    q8_qparams qp;
    ag_status st = input_value(s, r->m, r->in[0], &in);
    if (st == AG_OK)
        st = output_qparams(s, r->m, &qp);
    if (st != AG_OK)
        return st;
    const char *name = module_path(s, r->m);
    int32_t id = nn_module_is(r->m, "Hardswish")
                     ? q8_builder_hardswish(s->b, name, in.id, qp)
                     : q8_builder_requantize(s->b, name, in.id, qp, Q8_ACT_RELU6);
    return add_value(s, r->out, id, qp);
}

static bool is_passthrough(const nn_module *m)
{
    static const char *const t[] = {"MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten",
                                    "ReLU",      "Identity",  "Dropout"};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (nn_module_is(m, t[i]))
            return true;
    return nn_module_is(m, "ReLU6") && !m->post;
}

static ag_status lower_record(cv_state *s, const cv_record *r)
{
    const nn_module *m = r->m;
    int32_t k = module_index(s, m);
    if (k < 0 || s->inside[k])
        return AG_OK; /* part of a unit lowered as a whole (weight fake quant, bn, hook) */
    if (nn_module_is(m, "QuantStub"))
        return lower_quant_stub(s, r);
    if (nn_module_is(m, "DeQuantStub"))
        return lower_dequant_stub(s, r);
    if (is_conv_like(m) || is_linear_like(m))
        return lower_layer(s, r);
    if (nn_module_is(m, "FloatFunctional"))
        return lower_float_functional(s, r);
    if (is_passthrough(m))
        return lower_passthrough(s, r);
    if ((nn_module_is(m, "Hardswish") || nn_module_is(m, "ReLU6")) && m->post)
        return lower_observed_activation(s, r);
    if (m->n_children > (m->post ? 1 : 0))
        return AG_OK; /* a container (the model, Sequential): its children were lowered */
    return ag_error(AG_ERR_UNSUPPORTED, "convert: no integer kernel for '%s' (%s)",
                    module_path(s, m), nn_module_type(m));
}

/* ---- driver ---- */

typedef ag_status (*cv_lower_fn)(cv_state *s, const cv_record *r);

/* A failed builder call (they are sticky: later calls do nothing) as the error of
 * convert; running out of memory stays that. */
static ag_status builder_error(q8_status st, const char *msg)
{
    return ag_error(st == Q8_ERR_NOMEM ? AG_ERR_NOMEM : AG_ERR_ARG, "convert: %s", msg);
}

static ag_status run_trace(cv_state *s, nn_module *root, const qat_convert_opts *o,
                           cv_lower_fn lower)
{
    ag_ctx *ctx = ag_ctx_new();
    if (!ctx)
        return ag_last_status();
    ag_status st = AG_OK;
    ag_tensor *x = ag_ctx_tensor(ctx, 4, AG_SHAPE(2, o->in_channels, o->in_h, o->in_w));
    if (!x) {
        ag_ctx_free(ctx);
        return ag_last_status();
    }
    ag_rng rng;
    ag_rng_seed(&rng, 1, 0);
    for (int64_t i = 0; i < x->numel; i++)
        x->data[i] = ag_rng_uniform_range(&rng, -1.0f, 1.0f);
    ag_no_grad_begin(ctx);
    nn_trace_set(trace_cb, s);
    ag_tensor *y = nn_forward(root, ctx, x);
    nn_trace_set(NULL, NULL);
    ag_no_grad_end(ctx);
    if (!y)
        st = ag_last_status() ? ag_last_status() : AG_ERR_STATE;
    else if (s->oom)
        st = ag_error(AG_ERR_NOMEM, "convert: out of memory while tracing");
    if (st == AG_OK)
        st = index_modules(s, root, "", false);
    for (int32_t i = 0; st == AG_OK && i < s->n_rec; i++)
        st = lower(s, &s->rec[i]);
    if (st == AG_OK && s->output < 0 && lower != lower_record) {
        /* dynamic: the model's own output is the graph's (it stays float) */
        cv_value *v = find_value(s, y);
        if (v && v->qp.dtype == Q8_F32)
            s->output = v->id;
    }
    if (st == AG_OK && q8_builder_status(s->b) != Q8_OK)
        st = builder_error(q8_builder_status(s->b), q8_builder_error(s->b));
    if (st == AG_OK && s->output < 0)
        st = ag_error(AG_ERR_UNSUPPORTED, "convert: the model has no DeQuantStub: its output "
                                          "would stay quantized");
    if (st == AG_OK && q8_builder_status(s->b) != Q8_OK)
        st = ag_error(AG_ERR_ARG, "convert: %s", q8_builder_error(s->b));
    ag_ctx_free(ctx); /* the traced tensors die here: only used above */
    return st;
}

static q8_model *convert_with(nn_module *root, const qat_convert_opts *o, cv_lower_fn lower)
{
    cv_state s = {.output = -1, .pytorch_qparams = o->pytorch_qparams};
    s.b = q8_builder_new();
    if (!s.b) {
        ag_error(AG_ERR_NOMEM, "convert: out of memory");
        return NULL;
    }
    bool was_training = root->training;
    nn_module_eval(root);
    qat_enable_observer_all(root, false);
    if (o->source_model)
        q8_builder_set_attr_text(s.b, "source_model", o->source_model);
    if (o->qconfig)
        q8_builder_set_attr_text(s.b, "qconfig", o->qconfig);
    ag_status st = run_trace(&s, root, o, lower);
    nn_module_train(root, was_training);
    free(s.rec);
    free(s.mods);
    free(s.paths);
    free(s.inside);
    free(s.vals);
    if (st != AG_OK) {
        q8_builder_free(s.b);
        return NULL;
    }
    q8_builder_output(s.b, s.output);
    q8_model *qm = q8_builder_finish(s.b);
    if (!qm)
        builder_error(q8_last_status(), q8_last_error());
    return qm;
}

q8_model *qat_convert(nn_module *root, const qat_convert_opts *o)
{
    return convert_with(root, o, lower_record);
}

/* ---- dynamic quantization: float graph, int8 Linear weights ---- */

/* The float value for a module input; a graph input the first time a tensor is seen. */
static ag_status float_input(cv_state *s, const nn_module *m, const ag_tensor *t, cv_value *out)
{
    cv_value *v = find_value(s, t);
    if (!v) {
        if (s->n_vals > 0)
            return input_value(s, m, t, out); /* the error message */
        int64_t shape[AG_MAX_DIMS] = {-1};
        for (int32_t i = 1; i < t->ndim; i++)
            shape[i] = t->shape[i];
        int32_t id = q8_builder_input(s->b, "input", Q8_F32, t->ndim, shape);
        ag_status st = add_value(s, t, id, (q8_qparams){.dtype = Q8_F32});
        *out = s->vals[s->n_vals - 1];
        return st;
    }
    return input_value(s, m, t, out);
}

static const q8_qparams F32 = {.dtype = Q8_F32};

static ag_status lower_dynamic_layer(cv_state *s, const cv_record *r, const cv_value *in)
{
    const nn_module *m = r->m;
    const ag_tensor *weight, *bias;
    nn_batch_norm *bn;
    const nn_conv2d *conv;
    ag_status st = layer_parts(m, &weight, &bias, &bn, &conv);
    if (st == AG_OK && bn)
        st = ag_error(AG_ERR_UNSUPPORTED, "quantize-dynamic: '%s' still has BN (fuse first)",
                      module_path(s, m));
    if (st != AG_OK)
        return st;
    const char *name = module_path(s, m);
    q8_act act = has_relu(m) ? Q8_ACT_RELU : Q8_ACT_NONE;
    int32_t id;
    if (conv) { /* PyTorch's quantize_dynamic leaves convolutions float */
        q8_conv2d_desc d = {.out_channels = conv->out_channels,
                            .kernel = {conv->kernel[0], conv->kernel[1]},
                            .stride = {conv->args.stride[0], conv->args.stride[1]},
                            .padding = {conv->args.padding[0], conv->args.padding[1]},
                            .dilation = {conv->args.dilation[0], conv->args.dilation[1]},
                            .groups = conv->args.groups};
        id = q8_builder_conv2d_f32(s->b, name, in->id, &d, weight->data,
                                   bias ? bias->data : NULL, act);
        return add_value(s, r->out, id, F32);
    }
    /* default_dynamic_qconfig's weight observer: per-tensor symmetric qint8 MinMax */
    qat_qconfig qc = qat_default_dynamic_qconfig();
    nn_module *wobs = qat_observer_new(&qc.weight.obs);
    if (!wobs)
        return ag_last_status();
    cv_weights w = {.out = weight->shape[0], .per_out = weight->numel / weight->shape[0]};
    w.bias = calloc((size_t)w.out, sizeof *w.bias);
    if (!w.bias)
        st = ag_error(AG_ERR_NOMEM, "convert: out of memory");
    for (int64_t c = 0; st == AG_OK && bias && c < w.out; c++)
        w.bias[c] = bias->data[c];
    if (st == AG_OK)
        st = quantize_weights(s, m, wobs, weight->data, &w);
    nn_module_free(wobs);
    q8_weights qw = {.data = w.q, .scale = w.scale, .n_scale = w.n_scale, .bias = w.bias};
    id = st == AG_OK ? q8_builder_linear_dynamic(s->b, name, in->id, weight->shape[0], &qw, act) : -1;
    cv_weights_free(&w);
    return st == AG_OK ? add_value(s, r->out, id, F32) : st;
}

static ag_status lower_dynamic_ff(cv_state *s, const cv_record *r)
{
    cv_value in[CV_MAX_IN];
    ag_status st = AG_OK;
    for (int32_t i = 0; st == AG_OK && i < r->n_in; i++)
        st = float_input(s, r->m, r->in[i], &in[i]);
    if (st != AG_OK)
        return st;
    const char *name = module_path(s, r->m);
    int32_t id = -1, ids[CV_MAX_IN];
    switch (r->ff_op) {
    case NN_FF_ADD:
    case NN_FF_ADD_RELU:
        id = q8_builder_add_f32(s->b, name, in[0].id, in[1].id,
                                r->ff_op == NN_FF_ADD_RELU ? Q8_ACT_RELU : Q8_ACT_NONE);
        break;
    case NN_FF_MUL:
        id = q8_builder_mul_f32(s->b, name, in[0].id, in[1].id, Q8_ACT_NONE);
        break;
    case NN_FF_CAT:
        if (r->cat_dim != 1)
            return ag_error(AG_ERR_UNSUPPORTED, "convert: '%s': cat along dim %d", name,
                            (int)r->cat_dim);
        for (int32_t i = 0; i < r->n_in; i++)
            ids[i] = in[i].id;
        id = q8_builder_cat_f32(s->b, name, ids, r->n_in);
        break;
    case NN_FF_NONE:
        return ag_error(AG_ERR_STATE, "convert: '%s' was not called", name);
    }
    return add_value(s, r->out, id, F32);
}

static ag_status lower_record_dynamic(cv_state *s, const cv_record *r)
{
    const nn_module *m = r->m;
    int32_t k = module_index(s, m);
    if (k < 0 || s->inside[k])
        return AG_OK;
    if (nn_module_is(m, "FloatFunctional"))
        return lower_dynamic_ff(s, r);
    if (m->n_children > (m->post ? 1 : 0) && !is_lowered_unit(m))
        return AG_OK; /* a container */
    cv_value in;
    ag_status st = float_input(s, m, r->in[0], &in);
    if (st != AG_OK)
        return st;
    const char *name = module_path(s, m);
    if (is_conv_like(m) || is_linear_like(m))
        return lower_dynamic_layer(s, r, &in);
    int32_t id = in.id;
    if (nn_module_is(m, "MaxPool2d") || nn_module_is(m, "AvgPool2d")) {
        const nn_pool2d *p = (const nn_pool2d *)m;
        q8_pool2d_desc d = {.kernel = {p->args.kernel[0], p->args.kernel[1]},
                            .stride = {p->args.stride[0], p->args.stride[1]},
                            .padding = {p->args.padding[0], p->args.padding[1]},
                            .count_include_pad = p->args.count_include_pad};
        id = nn_module_is(m, "MaxPool2d") ? q8_builder_max_pool2d_f32(s->b, name, in.id, &d)
                                          : q8_builder_avg_pool2d_f32(s->b, name, in.id, &d);
    } else if (nn_module_is(m, "AdaptiveAvgPool2d")) {
        id = q8_builder_adaptive_avg_pool2d_f32(s->b, name, in.id, r->out->shape[2],
                                                r->out->shape[3]);
    } else if (nn_module_is(m, "Flatten")) {
        id = q8_builder_flatten(s->b, name, in.id);
    } else if (nn_module_is(m, "ReLU") || nn_module_is(m, "ReLU6")) {
        id = q8_builder_clamp_f32(s->b, name, in.id,
                                  nn_module_is(m, "ReLU") ? Q8_ACT_RELU : Q8_ACT_RELU6);
    } else if (nn_module_is(m, "Hardswish")) {
        id = q8_builder_hardswish_f32(s->b, name, in.id);
    } else if (!(nn_module_is(m, "Identity") || nn_module_is(m, "Dropout") ||
                 nn_module_is(m, "QuantStub") || nn_module_is(m, "DeQuantStub"))) {
        return ag_error(AG_ERR_UNSUPPORTED, "quantize-dynamic: no kernel for '%s' (%s)", name,
                        nn_module_type(m));
    }
    return add_value(s, r->out, id, F32);
}

q8_model *qat_convert_dynamic(nn_module *root, const qat_convert_opts *o)
{
    return convert_with(root, o, lower_record_dynamic);
}
