/* avg_pool2d.c — AvgPool2d: the mean over each window, as F.avg_pool2d; count_include_pad
 * counts the zero padding in the divisor. */
#include "nn/layers/layer_impl.h"

static ag_tensor *avg_pool2d_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    return ag_avg_pool2d(ctx, x, &((nn_pool2d *)m)->args);
}

static const nn_module_vtbl avg_pool2d_vtbl = {.type = "AvgPool2d",
                                               .forward = avg_pool2d_forward};

nn_module *nn_avg_pool2d_new_args(const ag_pool2d_args *args)
{
    ag_pool2d_args a = *args;
    if (nn_pool2d_args_resolve("AvgPool2d", &a) != AG_OK)
        return NULL;
    nn_pool2d *p = nn_layer_alloc(sizeof *p, &avg_pool2d_vtbl);
    if (p)
        p->args = a;
    return (nn_module *)p;
}

nn_module *nn_avg_pool2d_new(int32_t kernel_size, int32_t stride, int32_t padding)
{
    const ag_pool2d_args args = {.kernel = {kernel_size, kernel_size},
                                 .stride = {stride, stride},
                                 .padding = {padding, padding},
                                 .count_include_pad = true};
    return nn_avg_pool2d_new_args(&args);
}
