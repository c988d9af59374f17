/* linear_bn.c — nniqat.LinearBn1d (torch/ao/nn/intrinsic/qat/modules/linear_fused.py):
 * the ConvBn scheme for a Linear followed by BatchNorm1d,
 *     scale_factor = bn.weight / sqrt(bn.running_var + bn.eps)          (C)
 *     out = bn(linear(x, weight_fake_quant(W * scale_factor[:, None]), 0)
 *              / scale_factor[None, :] (+ bias))
 * State: weight, bias (if any), bn.*, weight_fake_quant.*. */
#include "qat/modules/modules_impl.h"

static ag_tensor *linear_bn_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    nn_linear *l = &((qat_linear_bn1d *)m)->linear;
    nn_batch_norm *bn = qat_module_bn(m);
    if (!bn) {
        ag_error(AG_ERR_STATE, "%s: has no BatchNorm1d child 'bn'", nn_module_type(m));
        return NULL;
    }
    const int64_t out = l->out_features;
    ag_tensor *s = ag_div(ctx, bn->weight, qat_running_std(ctx, bn)); // (C)
    ag_tensor *w = ag_mul(ctx, l->weight, ag_reshape(ctx, s, 2, AG_SHAPE(out, 1)));
    ag_tensor *y = ag_linear(ctx, x, qat_weight_post(m, ctx, w), NULL); // (N, C)
    y = ag_div(ctx, y, ag_reshape(ctx, s, 2, AG_SHAPE(1, out)));
    if (l->bias)
        y = ag_add(ctx, y, ag_reshape(ctx, l->bias, 2, AG_SHAPE(1, out)));
    return y ? nn_forward(&bn->base, ctx, y) : NULL;
}

/* LinearBn1d.train(mode): a frozen BN stays in eval. */
static void linear_bn_on_train(nn_module *m, bool training)
{
    (void)training;
    nn_batch_norm *bn = qat_module_bn(m);
    if (((qat_linear_bn1d *)m)->freeze_bn && bn)
        bn->base.training = false;
}

static const nn_module_vtbl linear_bn_vtbl = {
    .type = "nniqat.LinearBn1d", .forward = linear_bn_forward, .on_train = linear_bn_on_train};

bool qat_is_linear_bn(const nn_module *m)
{
    return m && m->vt == &linear_bn_vtbl;
}

/* LinearBn1d.from_float: the linear's weight and bias, the BatchNorm1d as child "bn". */
nn_module *qat_linear_bn1d_from_float(nn_module *linear_bn, const qat_qconfig *qc)
{
    nn_linear *src = (nn_linear *)qat_child(linear_bn, "0");
    nn_named_module *src_bn = qat_child_slot(linear_bn, "1");
    qat_linear_bn1d *q = qat_mod_alloc(sizeof *q, &linear_bn_vtbl);
    if (!q)
        return NULL;
    nn_linear *l = &q->linear;
    nn_module *m = &l->base;
    l->in_features = src->in_features;
    l->out_features = src->out_features;
    const ag_tensor *w = src->weight;
    ag_status st =
        qat_add_param(m, AG_OK, "weight", ag_param_new(w->ndim, w->shape), &l->weight);
    if (src->bias)
        st = qat_add_param(m, st, "bias", ag_param_new(1, src->bias->shape), &l->bias);
    st = qat_add_child(m, st, "bn", nn_batch_norm1d_new(src->out_features));
    st = qat_add_child(m, st, "weight_fake_quant", qat_new_weight_post(qc, src->out_features));
    if (st != AG_OK)
        return qat_finish(m, st);
    qat_swap_param(m, &l->weight, &src->base, &src->weight, "weight");
    if (src->bias)
        qat_swap_param(m, &l->bias, &src->base, &src->bias, "bias");
    qat_swap_child(qat_child_slot(m, "bn"), src_bn);
    m->qconfig = qc;
    q->freeze_bn = false;
    nn_module_train(m, true);
    return m;
}
