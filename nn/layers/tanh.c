/* tanh.c — Tanh: tanh(x), elementwise, no state. */
#include "nn/layers/layer_impl.h"

static ag_tensor *tanh_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    (void)m;
    return ag_tanh(ctx, x);
}

static const nn_module_vtbl tanh_vtbl = {.type = "Tanh", .forward = tanh_forward};

nn_module *nn_tanh_new(void)
{
    return nn_layer_alloc(sizeof(nn_module), &tanh_vtbl);
}
