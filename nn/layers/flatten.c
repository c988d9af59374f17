/* flatten.c — Flatten(start_dim): keeps the dims before start_dim and multiplies the
 * rest into one (a view, no copy). */
#include "nn/layers/layer_impl.h"

static ag_tensor *flatten_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    return ag_flatten(ctx, x, ((nn_flatten *)m)->start_dim);
}

static const nn_module_vtbl flatten_vtbl = {.type = "Flatten", .forward = flatten_forward};

nn_module *nn_flatten_new(int32_t start_dim)
{
    nn_flatten *f = nn_layer_alloc(sizeof *f, &flatten_vtbl);
    if (f)
        f->start_dim = start_dim;
    return (nn_module *)f;
}
