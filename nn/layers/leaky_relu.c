/* leaky_relu.c — LeakyReLU: max(0, x) + negative_slope min(0, x), elementwise. */
#include "nn/layers/layer_impl.h"

static ag_tensor *leaky_relu_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    return ag_leaky_relu(ctx, x, ((nn_leaky_relu *)m)->negative_slope);
}

static const nn_module_vtbl leaky_relu_vtbl = {.type = "LeakyReLU",
                                               .forward = leaky_relu_forward};

nn_module *nn_leaky_relu_new(float negative_slope)
{
    nn_leaky_relu *l = nn_layer_alloc(sizeof *l, &leaky_relu_vtbl);
    if (l)
        l->negative_slope = negative_slope;
    return (nn_module *)l;
}
