/* qat_conv.c — nnqat.Conv2d and nniqat.ConvReLU2d (torch/ao/nn/qat/modules/conv.py,
 * torch/ao/nn/intrinsic/qat/modules/conv_fused.py ConvReLU2d): a Conv2d whose weight
 * passes through its weight_fake_quant on every forward,
 *     y = conv2d(x, weight_fake_quant(W), b)        ConvReLU2d: relu(y)
 * State: weight, bias (if any), weight_fake_quant.* — the keys of PyTorch's module. */
#include "qat/modules/modules_impl.h"

static ag_tensor *conv_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    nn_conv2d *c = &((qat_conv2d *)m)->conv;
    return ag_conv2d(ctx, x, qat_weight_post(m, ctx, c->weight), c->bias, &c->args);
}

static ag_tensor *conv_relu_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    return ag_relu(ctx, conv_forward(m, ctx, x));
}

static const nn_module_vtbl conv_vtbl = {.type = "nnqat.Conv2d", .forward = conv_forward};
static const nn_module_vtbl conv_relu_vtbl = {.type = "nniqat.ConvReLU2d",
                                              .forward = conv_relu_forward};

/* nnqat.Conv2d.from_float: cls(conv's hyper-parameters, qconfig), then
 * qat_conv.weight = mod.weight, qat_conv.bias = mod.bias. */
nn_module *qat_conv2d_from_float(nn_conv2d *src, const qat_qconfig *qc, bool relu)
{
    qat_conv2d *q = qat_mod_alloc(sizeof *q, relu ? &conv_relu_vtbl : &conv_vtbl);
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
    st = qat_add_child(m, st, "weight_fake_quant", qat_new_weight_post(qc, src->out_channels));
    if (st != AG_OK)
        return qat_finish(m, st);
    qat_swap_param(m, &c->weight, &src->base, &src->weight, "weight");
    if (src->bias)
        qat_swap_param(m, &c->bias, &src->base, &src->bias, "bias");
    m->qconfig = qc;
    return m;
}
