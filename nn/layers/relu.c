/* relu.c — ReLU: max(0, x), elementwise, no state. */
#include "nn/layers/layer_impl.h"

static ag_tensor *relu_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    (void)m;
    return ag_relu(ctx, x);
}

static const nn_module_vtbl relu_vtbl = {.type = "ReLU", .forward = relu_forward};

nn_module *nn_relu_new(void)
{
    return nn_layer_alloc(sizeof(nn_module), &relu_vtbl);
}
