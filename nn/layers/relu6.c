/* relu6.c — ReLU6: min(max(0, x), 6), elementwise, no state. */
#include "nn/layers/layer_impl.h"

static ag_tensor *relu6_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    (void)m;
    return ag_relu6(ctx, x);
}

static const nn_module_vtbl relu6_vtbl = {.type = "ReLU6", .forward = relu6_forward};

nn_module *nn_relu6_new(void)
{
    return nn_layer_alloc(sizeof(nn_module), &relu6_vtbl);
}
