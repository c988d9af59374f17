/* hardswish.c — Hardswish: x relu6(x + 3) / 6, elementwise, no state. */
#include "nn/layers/layer_impl.h"

static ag_tensor *hardswish_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    (void)m;
    return ag_hardswish(ctx, x);
}

static const nn_module_vtbl hardswish_vtbl = {.type = "Hardswish",
                                              .forward = hardswish_forward};

nn_module *nn_hardswish_new(void)
{
    return nn_layer_alloc(sizeof(nn_module), &hardswish_vtbl);
}
