/* qat_linear.c — nnqat.Linear and nniqat.LinearReLU (torch/ao/nn/qat/modules/linear.py,
 * torch/ao/nn/intrinsic/qat/modules/linear_relu.py):
 *     y = linear(x, weight_fake_quant(W), b)        LinearReLU: relu(y)
 * State: weight, bias (if any), weight_fake_quant.* — the keys of PyTorch's module. */
#include "qat/modules/modules_impl.h"

static ag_tensor *linear_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    nn_linear *l = &((qat_linear *)m)->linear;
    return ag_linear(ctx, x, qat_weight_post(m, ctx, l->weight), l->bias);
}

static ag_tensor *linear_relu_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    return ag_relu(ctx, linear_forward(m, ctx, x));
}

static const nn_module_vtbl linear_vtbl = {.type = "nnqat.Linear", .forward = linear_forward};
static const nn_module_vtbl linear_relu_vtbl = {.type = "nniqat.LinearReLU",
                                                .forward = linear_relu_forward};

/* nnqat.Linear.from_float: cls(in, out, bias, qconfig), then weight and bias taken over. */
nn_module *qat_linear_from_float(nn_linear *src, const qat_qconfig *qc, bool relu)
{
    qat_linear *q = qat_mod_alloc(sizeof *q, relu ? &linear_relu_vtbl : &linear_vtbl);
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
    st = qat_add_child(m, st, "weight_fake_quant", qat_new_weight_post(qc, src->out_features));
    if (st != AG_OK)
        return qat_finish(m, st);
    qat_swap_param(m, &l->weight, &src->base, &src->weight, "weight");
    if (src->bias)
        qat_swap_param(m, &l->bias, &src->base, &src->bias, "bias");
    m->qconfig = qc;
    return m;
}
