/* sigmoid.c — Sigmoid: 1 / (1 + exp(-x)), elementwise, no state. */
#include "nn/layers/layer_impl.h"

static ag_tensor *sigmoid_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    (void)m;
    return ag_sigmoid(ctx, x);
}

static const nn_module_vtbl sigmoid_vtbl = {.type = "Sigmoid", .forward = sigmoid_forward};

nn_module *nn_sigmoid_new(void)
{
    return nn_layer_alloc(sizeof(nn_module), &sigmoid_vtbl);
}
