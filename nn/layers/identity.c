/* identity.c — Identity: returns its input (the placeholder fusion leaves behind). */
#include "nn/layers/layer_impl.h"

static ag_tensor *identity_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    (void)m;
    (void)ctx;
    return x;
}

static const nn_module_vtbl identity_vtbl = {.type = "Identity", .forward = identity_forward};

nn_module *nn_identity_new(void)
{
    return nn_layer_alloc(sizeof(nn_module), &identity_vtbl);
}
