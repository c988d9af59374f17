/* adaptive_avg_pool2d.c — AdaptiveAvgPool2d: output (N, C, out_h, out_w) whatever the
 * input size, each output the mean of its window (F.adaptive_avg_pool2d). */
#include "nn/layers/layer_impl.h"

static ag_tensor *adaptive_avg_pool2d_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    nn_adaptive_avg_pool2d *p = (nn_adaptive_avg_pool2d *)m;
    return ag_adaptive_avg_pool2d(ctx, x, p->out_h, p->out_w);
}

static const nn_module_vtbl adaptive_avg_pool2d_vtbl = {.type = "AdaptiveAvgPool2d",
                                                        .forward = adaptive_avg_pool2d_forward};

nn_module *nn_adaptive_avg_pool2d_new(int32_t out_h, int32_t out_w)
{
    if (out_h <= 0 || out_w <= 0) {
        ag_error(AG_ERR_ARG, "AdaptiveAvgPool2d: output size (%d, %d) must be positive",
                 (int)out_h, (int)out_w);
        return NULL;
    }
    nn_adaptive_avg_pool2d *p = nn_layer_alloc(sizeof *p, &adaptive_avg_pool2d_vtbl);
    if (p) {
        p->out_h = out_h;
        p->out_w = out_w;
    }
    return (nn_module *)p;
}
