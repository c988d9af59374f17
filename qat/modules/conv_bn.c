/* conv_bn.c — nniqat.ConvBn2d and nniqat.ConvBnReLU2d (torch/ao/nn/intrinsic/qat/modules/
 * conv_fused.py, _ConvBnNd), and freeze_bn_stats / update_bn_stats.
 *
 * Forward: PyTorch 1.13's default _forward_approximate, op for op:
 *     running_std  = sqrt(bn.running_var + bn.eps)                  (C)
 *     scale_factor = bn.weight / running_std                         (C)
 *     scaled_w     = weight_fake_quant(W * scale_factor[:, None, None, None])
 *     conv         = conv2d(x, scaled_w, zero bias)
 *     conv_orig    = conv / scale_factor[None, :, None, None]  (+ bias[None, :, None, None])
 *     out          = bn(conv_orig)                               ConvBnReLU2d: relu(out)
 * bn is a BatchNorm2d child: in training it normalises with the batch statistics and
 * updates its running ones; after freeze_bn_stats it is in eval mode and uses them.
 * The gradient reaches bn.weight both through bn and through scale_factor, as in
 * PyTorch's autograd. State: weight, bias (if any), bn.*, weight_fake_quant.*. */
#include "qat/modules/modules_impl.h"

#include <math.h>

ag_tensor *qat_running_std(ag_ctx *ctx, const nn_batch_norm *bn)
{
    const int64_t c = bn->num_features;
    ag_tensor *std = ag_ctx_tensor(ctx, 1, AG_SHAPE(c)); // (C)
    if (!std)
        return NULL;
    const float *var = bn->running_var->data;
    for (int64_t i = 0; i < c; i++)
        std->data[i] = sqrtf(var[i] + bn->eps);
    return std;
}

/* The fused tail; when the output hook is a fake quant that observes a per-tensor
 * range, the tail takes the output's min and max as it writes it and hands them over,
 * which spares the hook its own pass over the output. */
static ag_tensor *conv_bn_tail(nn_module *m, ag_ctx *ctx, ag_tensor *conv, nn_batch_norm *bn,
                               bool relu)
{
    const bool hand_over = qat_fake_quant_takes_range(m->post);
    float range[2];
    ag_tensor *out = qat_bn_tail(ctx, conv, ((qat_conv_bn2d *)m)->conv.bias, bn, relu,
                                 hand_over ? range : NULL);
    if (out && hand_over && !isnan(range[0]))
        qat_fake_quant_give_range(m->post, out, range[0], range[1]);
    return out;
}

static ag_tensor *conv_bn_run(nn_module *m, ag_ctx *ctx, ag_tensor *x, bool relu)
{
    nn_conv2d *c = &((qat_conv_bn2d *)m)->conv;
    nn_batch_norm *bn = qat_module_bn(m);
    if (!bn) {
        ag_error(AG_ERR_STATE, "%s: has no BatchNorm2d child 'bn'", nn_module_type(m));
        return NULL;
    }
    const int64_t oc = c->out_channels;
    ag_tensor *s = ag_div(ctx, bn->weight, qat_running_std(ctx, bn)); // (C)
    ag_tensor *w = ag_mul(ctx, c->weight, ag_reshape(ctx, s, 4, AG_SHAPE(oc, 1, 1, 1)));
    ag_tensor *y = ag_conv2d(ctx, x, qat_weight_post(m, ctx, w), NULL, &c->args);
    if (y && qat_bn_tail_applies(ctx, y, bn))
        return conv_bn_tail(m, ctx, y, bn, relu); // the chain below, fused
    y = ag_div(ctx, y, ag_channels(ctx, s)); // (N, C, H, W)
    if (c->bias)
        y = ag_add(ctx, y, ag_channels(ctx, c->bias));
    y = y ? nn_forward(&bn->base, ctx, y) : NULL;
    return relu ? ag_relu(ctx, y) : y;
}

static ag_tensor *conv_bn_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    return conv_bn_run(m, ctx, x, false);
}

static ag_tensor *conv_bn_relu_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    return conv_bn_run(m, ctx, x, true);
}

/* _ConvBnNd.train(mode): children follow the mode unless BN is frozen. nn_module_train
 * has already set every child; a frozen BN goes back to eval. */
static void conv_bn_on_train(nn_module *m, bool training)
{
    (void)training;
    nn_batch_norm *bn = qat_module_bn(m);
    if (((qat_conv_bn2d *)m)->freeze_bn && bn)
        bn->base.training = false;
}

static const nn_module_vtbl conv_bn_vtbl = {
    .type = "nniqat.ConvBn2d", .forward = conv_bn_forward, .on_train = conv_bn_on_train};
static const nn_module_vtbl conv_bn_relu_vtbl = {.type = "nniqat.ConvBnReLU2d",
                                                 .forward = conv_bn_relu_forward,
                                                 .on_train = conv_bn_on_train};

bool qat_is_conv_bn(const nn_module *m)
{
    return m && (m->vt == &conv_bn_vtbl || m->vt == &conv_bn_relu_vtbl);
}

/* _ConvBnNd.from_float: the conv's hyper-parameters, weight and bias; the BatchNorm
 * itself (its tensors, eps and momentum) becomes the child "bn". */
nn_module *qat_conv_bn2d_from_float(nn_module *conv_bn, const qat_qconfig *qc, bool relu)
{
    nn_conv2d *src = (nn_conv2d *)qat_child(conv_bn, "0");
    nn_named_module *src_bn = qat_child_slot(conv_bn, "1");
    qat_conv_bn2d *q = qat_mod_alloc(sizeof *q, relu ? &conv_bn_relu_vtbl : &conv_bn_vtbl);
    if (!q)
        return NULL;
    nn_conv2d *c = &q->conv;
    nn_module *m = &c->base;
    c->args = src->args;
    c->in_channels = src->in_channels;
    c->out_channels = src->out_channels;
    c->kernel[0] = src->kernel[0];
    c->kernel[1] = src->kernel[1];
    const ag_tensor *w = src->weight;
    ag_status st =
        qat_add_param(m, AG_OK, "weight", ag_param_new(w->ndim, w->shape), &c->weight);
    if (src->bias)
        st = qat_add_param(m, st, "bias", ag_param_new(1, src->bias->shape), &c->bias);
    st = qat_add_child(m, st, "bn", nn_batch_norm2d_new(src->out_channels));
    st = qat_add_child(m, st, "weight_fake_quant", qat_new_weight_post(qc, src->out_channels));
    if (st != AG_OK)
        return qat_finish(m, st);
    qat_swap_param(m, &c->weight, &src->base, &src->weight, "weight");
    if (src->bias)
        qat_swap_param(m, &c->bias, &src->base, &src->bias, "bias");
    qat_swap_child(qat_child_slot(m, "bn"), src_bn);
    m->qconfig = qc;
    q->freeze_bn = false;
    nn_module_train(m, true); // a new PyTorch module: training, update_bn_stats()
    return m;
}

/* ---- freeze_bn_stats / update_bn_stats --------------------------------------------- */

nn_batch_norm *qat_module_bn(nn_module *m)
{
    if (!qat_is_conv_bn(m) && !qat_is_linear_bn(m))
        return NULL;
    return (nn_batch_norm *)qat_child(m, "bn");
}

static bool *freeze_flag(nn_module *m)
{
    if (qat_is_conv_bn(m))
        return &((qat_conv_bn2d *)m)->freeze_bn;
    if (qat_is_linear_bn(m))
        return &((qat_linear_bn1d *)m)->freeze_bn;
    return NULL;
}

static ag_status set_bn_frozen(nn_module *m, bool frozen, const char *who)
{
    bool *flag = m ? freeze_flag(m) : NULL;
    nn_batch_norm *bn = m ? qat_module_bn(m) : NULL;
    if (!flag || !bn)
        return ag_error(AG_ERR_ARG, "%s: %s is not a QAT ConvBn or LinearBn module", who,
                        m ? nn_module_type(m) : "NULL");
    *flag = frozen;
    bn->base.training = !frozen;
    return AG_OK;
}

ag_status qat_module_freeze_bn_stats(nn_module *m)
{
    return set_bn_frozen(m, true, "freeze_bn_stats");
}

ag_status qat_module_update_bn_stats(nn_module *m)
{
    return set_bn_frozen(m, false, "update_bn_stats");
}

typedef struct bn_walk {
    bool frozen;
    int32_t count;
} bn_walk;

/* conv_fused.freeze_bn_stats(mod): only the ConvBn* and ConvBnReLU* types. */
static bool visit_bn(void *ud, const char *path, nn_module *m)
{
    (void)path;
    bn_walk *w = ud;
    if (qat_is_conv_bn(m) && set_bn_frozen(m, w->frozen, "") == AG_OK)
        w->count++;
    return true;
}

int32_t qat_freeze_bn_stats(nn_module *root)
{
    bn_walk w = {true, 0};
    nn_module_walk(root, visit_bn, &w);
    return w.count;
}

int32_t qat_update_bn_stats(nn_module *root)
{
    bn_walk w = {false, 0};
    nn_module_walk(root, visit_bn, &w);
    return w.count;
}
