/* fuse.c — fuse_modules / fuse_modules_qat (torch/ao/quantization/fuse_modules.py,
 * fuser_method_mappings.py) and the BatchNorm folding of torch/nn/utils/fusion.py.
 *
 * Every group is checked before the first is applied, so a bad group leaves the tree
 * as it was. Applying a group first allocates all it needs (the folded layer, the
 * container's slots, the Identities), then moves modules between slots, which cannot
 * fail: running out of memory leaves each group either fused or untouched. */
#include "qat/modules/modules_impl.h"

#include <math.h>
#include <stdio.h>

/* ---- folding (torch/nn/utils/fusion.py) ---------------------------------------------- */

void qat_fuse_conv_bn_weights(const float *w, const float *b, int64_t out_channels,
                              int64_t per_channel, const float *mean, const float *var,
                              float eps, const float *gamma, const float *beta, float *w_out,
                              float *b_out)
{
    for (int64_t c = 0; c < out_channels; c++) {
        const float r = 1.0f / sqrtf(var[c] + eps); // torch.rsqrt(bn_rv + bn_eps)
        const float g = gamma ? gamma[c] : 1.0f;
        const float s = g * r; // (bn_w * bn_var_rsqrt)
        for (int64_t k = 0; k < per_channel; k++)
            w_out[c * per_channel + k] = w[c * per_channel + k] * s;
        // (conv_b - bn_rm) * bn_var_rsqrt * bn_w + bn_b, left to right
        b_out[c] = (((b ? b[c] : 0.0f) - mean[c]) * r) * g + (beta ? beta[c] : 0.0f);
    }
}

void qat_fuse_linear_bn_weights(const float *w, const float *b, int64_t out_features,
                                int64_t in_features, const float *mean, const float *var,
                                float eps, const float *gamma, const float *beta, float *w_out,
                                float *b_out)
{
    for (int64_t c = 0; c < out_features; c++) {
        // bn_scale = bn_w * torch.rsqrt(bn_rv + bn_eps)
        const float s = (gamma ? gamma[c] : 1.0f) * (1.0f / sqrtf(var[c] + eps));
        for (int64_t k = 0; k < in_features; k++)
            w_out[c * in_features + k] = w[c * in_features + k] * s;
        // (linear_b - bn_rm) * bn_scale + bn_b
        b_out[c] = ((b ? b[c] : 0.0f) - mean[c]) * s + (beta ? beta[c] : 0.0f);
    }
}

static bool bn_fits(const nn_module *bn, const char *bn_type, int32_t features)
{
    return nn_module_is(bn, bn_type) && ((const nn_batch_norm *)bn)->num_features == features;
}

nn_module *qat_fuse_conv_bn_eval(const nn_module *conv_m, const nn_module *bn_m)
{
    if (!nn_module_is(conv_m, "Conv2d") ||
        !bn_fits(bn_m, "BatchNorm2d", ((const nn_conv2d *)conv_m)->out_channels)) {
        ag_error(AG_ERR_ARG,
                 "fuse_conv_bn_eval: needs a Conv2d and a BatchNorm2d of its "
                 "output channels, got %s and %s",
                 conv_m ? nn_module_type(conv_m) : "NULL",
                 bn_m ? nn_module_type(bn_m) : "NULL");
        return NULL;
    }
    const nn_conv2d *conv = (const nn_conv2d *)conv_m;
    const nn_batch_norm *bn = (const nn_batch_norm *)bn_m;
    nn_module *m = nn_conv2d_new_args(conv->in_channels, conv->out_channels, conv->kernel,
                                      &conv->args, true, NULL);
    if (!m)
        return NULL;
    nn_conv2d *f = (nn_conv2d *)m;
    const int64_t out = conv->out_channels;
    qat_fuse_conv_bn_weights(conv->weight->data, conv->bias ? conv->bias->data : NULL, out,
                             conv->weight->numel / out, bn->running_mean->data,
                             bn->running_var->data, bn->eps, bn->weight->data, bn->bias->data,
                             f->weight->data, f->bias->data);
    m->training = conv_m->training; // copy.deepcopy(conv) keeps its mode and qconfig
    m->qconfig = conv_m->qconfig;
    return m;
}

nn_module *qat_fuse_linear_bn_eval(const nn_module *lin_m, const nn_module *bn_m)
{
    if (!nn_module_is(lin_m, "Linear") ||
        !bn_fits(bn_m, "BatchNorm1d", ((const nn_linear *)lin_m)->out_features)) {
        ag_error(AG_ERR_ARG,
                 "fuse_linear_bn_eval: needs a Linear and a BatchNorm1d of its "
                 "output features, got %s and %s",
                 lin_m ? nn_module_type(lin_m) : "NULL", bn_m ? nn_module_type(bn_m) : "NULL");
        return NULL;
    }
    const nn_linear *lin = (const nn_linear *)lin_m;
    const nn_batch_norm *bn = (const nn_batch_norm *)bn_m;
    nn_module *m = nn_linear_new(lin->in_features, lin->out_features, true, NULL);
    if (!m)
        return NULL;
    nn_linear *f = (nn_linear *)m;
    qat_fuse_linear_bn_weights(lin->weight->data, lin->bias ? lin->bias->data : NULL,
                               lin->out_features, lin->in_features, bn->running_mean->data,
                               bn->running_var->data, bn->eps, bn->weight->data, bn->bias->data,
                               f->weight->data, f->bias->data);
    m->training = lin_m->training;
    m->qconfig = lin_m->qconfig;
    return m;
}

/* ---- patterns (DEFAULT_OP_LIST_TO_FUSER_METHOD) ----------------------------------- */

typedef enum pattern_kind {
    P_CONV_BN,
    P_CONV_BN_RELU,
    P_CONV_RELU,
    P_LINEAR_BN,
    P_LINEAR_RELU,
    P_BN_RELU,
} pattern_kind;

typedef struct pattern {
    pattern_kind kind;
    int32_t n;
    const char *types[3];
    const char *eval_result; /* container type in eval, NULL when eval folds to one layer */
    const char *qat_result;
} pattern;

static const pattern patterns[] = {
    {P_CONV_BN, 2, {"Conv2d", "BatchNorm2d"}, NULL, "nni.ConvBn2d"},
    {P_CONV_BN_RELU,
     3,
     {"Conv2d", "BatchNorm2d", "ReLU"},
     "nni.ConvReLU2d",
     "nni.ConvBnReLU2d"},
    {P_CONV_RELU, 2, {"Conv2d", "ReLU"}, "nni.ConvReLU2d", "nni.ConvReLU2d"},
    {P_LINEAR_BN, 2, {"Linear", "BatchNorm1d"}, NULL, "nni.LinearBn1d"},
    {P_LINEAR_RELU, 2, {"Linear", "ReLU"}, "nni.LinearReLU", "nni.LinearReLU"},
    {P_BN_RELU, 2, {"BatchNorm2d", "ReLU"}, "nni.BNReLU2d", "nni.BNReLU2d"},
};
enum { N_PATTERNS = (int)(sizeof patterns / sizeof patterns[0]) };

static const pattern *pattern_of(nn_module *const *mods, int32_t n)
{
    for (int i = 0; i < N_PATTERNS; i++) {
        bool fits = patterns[i].n == n;
        for (int32_t k = 0; fits && k < n; k++)
            fits = nn_module_is(mods[k], patterns[i].types[k]);
        if (fits)
            return &patterns[i];
    }
    return NULL;
}

/* Eval fusion of a BatchNorm pattern folds the BN into the layer. */
static bool folds(const pattern *p, bool is_qat)
{
    return !is_qat &&
           (p->kind == P_CONV_BN || p->kind == P_CONV_BN_RELU || p->kind == P_LINEAR_BN);
}

/* ---- checking a group ------------------------------------------------------------- */

typedef struct group_ctx {
    int32_t index;
    char label[256]; /* "group 1 [conv1, bn1, relu1]" */
} group_ctx;

static void group_label(group_ctx *gc, const nn_fusion_group *g, int32_t index)
{
    gc->index = index;
    size_t len = (size_t)snprintf(gc->label, sizeof gc->label, "group %d [", (int)index);
    for (int32_t i = 0; i < g->n && i < NN_FUSION_GROUP_MAX && len < sizeof gc->label; i++) {
        int k = snprintf(gc->label + len, sizeof gc->label - len, "%s%s", i ? ", " : "",
                         g->names[i] ? g->names[i] : "(null)");
        len += k > 0 ? (size_t)k : 0;
    }
    if (len < sizeof gc->label)
        snprintf(gc->label + len, sizeof gc->label - len, "]");
}

/* The slot holding the module at a dotted path (not the root), or NULL. */
static nn_named_module *slot_of(nn_module *root, const char *path)
{
    if (!path || !*path)
        return NULL;
    const char *dot = strrchr(path, '.');
    nn_module *parent = root;
    if (dot) {
        char buf[1024];
        size_t len = (size_t)(dot - path);
        if (len >= sizeof buf)
            return NULL;
        memcpy(buf, path, len);
        buf[len] = '\0';
        parent = nn_module_find(root, buf);
    }
    return parent ? qat_child_slot(parent, dot ? dot + 1 : path) : NULL;
}

static ag_status check_duplicates(const nn_fusion_group *groups, int32_t gi,
                                  const group_ctx *gc)
{
    const nn_fusion_group *g = &groups[gi];
    for (int32_t i = 0; i < g->n; i++)
        for (int32_t gj = 0; gj <= gi; gj++)
            for (int32_t j = 0; j < (gj == gi ? i : groups[gj].n); j++)
                if (strcmp(g->names[i], groups[gj].names[j]) == 0)
                    return ag_error(AG_ERR_ARG, "fuse_modules: %s: '%s' is already in %s",
                                    gc->label, g->names[i],
                                    gj == gi ? "this group" : "an earlier group");
    return AG_OK;
}

static ag_status check_modes(const nn_fusion_group *g, nn_module *const *mods, const pattern *p,
                             bool is_qat, const group_ctx *gc)
{
    for (int32_t i = 1; i < g->n; i++)
        if (mods[i]->training != mods[0]->training)
            return ag_error(AG_ERR_ARG,
                            "fuse_modules: %s: all modules must be in the same mode (train or "
                            "eval), but %s (%s) is in %s mode and %s (%s) in %s mode",
                            gc->label, g->names[0], nn_module_type(mods[0]),
                            mods[0]->training ? "training" : "eval", g->names[i],
                            nn_module_type(mods[i]), mods[i]->training ? "training" : "eval");
    if (folds(p, is_qat) && mods[0]->training)
        return ag_error(
            AG_ERR_ARG,
            "fuse_modules: %s: eval fusion folds %s into %s and needs eval mode, "
            "but %s is in training mode (fuse for QAT, or call nn_module_eval first)",
            gc->label, g->names[1], g->names[0], g->names[0]);
    return AG_OK;
}

static ag_status check_features(const nn_fusion_group *g, nn_module *const *mods,
                                const pattern *p, const group_ctx *gc)
{
    int32_t outputs = -1;
    if (p->kind == P_CONV_BN || p->kind == P_CONV_BN_RELU)
        outputs = ((const nn_conv2d *)mods[0])->out_channels;
    else if (p->kind == P_LINEAR_BN)
        outputs = ((const nn_linear *)mods[0])->out_features;
    if (outputs < 0)
        return AG_OK;
    const int32_t features = ((const nn_batch_norm *)mods[1])->num_features;
    if (features != outputs)
        return ag_error(AG_ERR_ARG,
                        "fuse_modules: %s: %s has %d features but %s has %d outputs", gc->label,
                        g->names[1], (int)features, g->names[0], (int)outputs);
    return AG_OK;
}

static ag_status check_group(nn_module *root, const nn_fusion_group *groups, int32_t gi,
                             bool is_qat, nn_named_module **slots, const pattern **p)
{
    const nn_fusion_group *g = &groups[gi];
    group_ctx gc;
    if (g->n < 2 || g->n > 3)
        return ag_error(AG_ERR_ARG, "fuse_modules: group %d has %d modules (2 or 3 fuse)",
                        (int)gi, (int)g->n);
    group_label(&gc, g, gi);
    nn_module *mods[3];
    for (int32_t i = 0; i < g->n; i++) {
        slots[i] = slot_of(root, g->names[i]);
        if (!slots[i])
            return ag_error(AG_ERR_ARG, "fuse_modules: %s: no module named '%s'", gc.label,
                            g->names[i] ? g->names[i] : "(null)");
        mods[i] = slots[i]->m;
    }
    ag_status st = check_duplicates(groups, gi, &gc);
    if (st != AG_OK)
        return st;
    *p = pattern_of(mods, g->n);
    if (!*p) {
        char types[128];
        size_t len = 0;
        for (int32_t i = 0; i < g->n; i++) {
            int k = snprintf(types + len, sizeof types - len, "%s%s", i ? ", " : "",
                             nn_module_type(mods[i]));
            len += k > 0 && (size_t)k < sizeof types - len ? (size_t)k : 0;
        }
        return ag_error(AG_ERR_ARG,
                        "fuse_modules: %s: cannot fuse (%s); known patterns: (Conv2d, "
                        "BatchNorm2d[, ReLU]), (Conv2d, ReLU), (Linear, BatchNorm1d), (Linear, "
                        "ReLU), (BatchNorm2d, ReLU)",
                        gc.label, types);
    }
    st = check_modes(g, mods, *p, is_qat, &gc);
    return st != AG_OK ? st : check_features(g, mods, *p, &gc);
}

/* ---- applying a group (fuse_known_modules) ------------------------------------------ */

static void free_modules(nn_module **mods, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        nn_module_free(mods[i]);
}

/* Builds what replaces the group's first member, or NULL (out of memory). Eval folds
 * allocate a new layer (the originals are freed when the group is applied); containers
 * are reserved empty and filled by apply_group. */
static nn_module *build_result(const pattern *p, bool is_qat, nn_module *const *mods,
                               nn_module **folded)
{
    *folded = NULL;
    if (folds(p, is_qat)) {
        *folded = p->kind == P_LINEAR_BN ? qat_fuse_linear_bn_eval(mods[0], mods[1])
                                         : qat_fuse_conv_bn_eval(mods[0], mods[1]);
        if (!*folded || p->kind != P_CONV_BN_RELU)
            return *folded;
        nn_module *c = qat_intrinsic_reserve(p->eval_result, 2);
        if (!c) {
            nn_module_free(*folded);
            *folded = NULL;
        }
        return c;
    }
    return qat_intrinsic_reserve(is_qat ? p->qat_result : p->eval_result, p->n);
}

static ag_status apply_group(nn_named_module **slots, int32_t n, const pattern *p, bool is_qat)
{
    nn_module *mods[3] = {NULL, NULL, NULL}, *ids[3] = {NULL, NULL, NULL}, *folded = NULL;
    for (int32_t i = 0; i < n; i++)
        mods[i] = slots[i]->m;
    const bool training = mods[0]->training;
    for (int32_t i = 1; i < n; i++) {
        ids[i] = nn_identity_new();
        if (!ids[i]) {
            free_modules(ids, n);
            return qat_failed_status();
        }
        ids[i]->training = training; // identity.training = mod_list[0].training
    }
    nn_module *result = build_result(p, is_qat, mods, &folded);
    if (!result) {
        free_modules(ids, n);
        return qat_failed_status();
    }
    /* Nothing below can fail. */
    if (result != folded) {
        result->training = training;
        if (folded) { // eval conv-bn-relu: nni.ConvReLU2d(folded conv, relu)
            result->children[0].m = folded;
            result->children[1].m = mods[2];
            nn_module_free(mods[0]);
            nn_module_free(mods[1]);
        } else {
            for (int32_t i = 0; i < n; i++)
                result->children[i].m = mods[i];
        }
    } else {
        nn_module_free(mods[0]);
        nn_module_free(mods[1]);
    }
    slots[0]->m = result;
    for (int32_t i = 1; i < n; i++)
        slots[i]->m = ids[i];
    return AG_OK;
}

ag_status qat_fuse_modules(nn_module *root, const nn_fusion_group *groups, int32_t n_groups,
                           bool is_qat)
{
    if (!root || (n_groups > 0 && !groups) || n_groups < 0)
        return ag_error(AG_ERR_ARG, "fuse_modules: NULL model or groups");
    for (int32_t gi = 0; gi < n_groups; gi++) {
        nn_named_module *slots[3];
        const pattern *p = NULL;
        ag_status st = check_group(root, groups, gi, is_qat, slots, &p);
        if (st != AG_OK)
            return st;
    }
    for (int32_t gi = 0; gi < n_groups; gi++) {
        nn_named_module *slots[3];
        const pattern *p = NULL;
        ag_status st = check_group(root, groups, gi, is_qat, slots, &p);
        if (st == AG_OK)
            st = apply_group(slots, groups[gi].n, p, is_qat);
        if (st != AG_OK)
            return st;
    }
    return AG_OK;
}
