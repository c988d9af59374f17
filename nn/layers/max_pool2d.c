/* max_pool2d.c — MaxPool2d: the maximum over each window, as F.max_pool2d (padding never wins).
 */
#include "nn/layers/layer_impl.h"

static ag_tensor *max_pool2d_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    return ag_max_pool2d(ctx, x, &((nn_pool2d *)m)->args);
}

static const nn_module_vtbl max_pool2d_vtbl = {.type = "MaxPool2d",
                                               .forward = max_pool2d_forward};

nn_module *nn_max_pool2d_new_args(const ag_pool2d_args *args)
{
    ag_pool2d_args a = *args;
    if (nn_pool2d_args_resolve("MaxPool2d", &a) != AG_OK)
        return NULL;
    nn_pool2d *p = nn_layer_alloc(sizeof *p, &max_pool2d_vtbl);
    if (p)
        p->args = a;
    return (nn_module *)p;
}

nn_module *nn_max_pool2d_new(int32_t kernel_size, int32_t stride, int32_t padding)
{
    const ag_pool2d_args args = {.kernel = {kernel_size, kernel_size},
                                 .stride = {stride, stride},
                                 .padding = {padding, padding},
                                 .count_include_pad = false}; // unused by max
    return nn_max_pool2d_new_args(&args);
}
