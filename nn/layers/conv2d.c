/* conv2d.c — Conv2d: y = conv2d(x, weight, bias) with stride, padding, dilation, groups.
 * Initialisation as Conv2d.reset_parameters (torch/nn/modules/conv.py):
 *     weight ~ kaiming_uniform_(a = sqrt(5))  = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
 *     bias   ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),  fan_in = in/groups * kH * kW */
#include "nn/layers/layer_impl.h"

#include <math.h>

static ag_tensor *conv2d_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    nn_conv2d *c = (nn_conv2d *)m;
    return ag_conv2d(ctx, x, c->weight, c->bias, &c->args);
}

static const nn_module_vtbl conv2d_vtbl = {.type = "Conv2d", .forward = conv2d_forward};

static ag_status conv2d_check(int32_t in, int32_t out, const int32_t kernel[2],
                              const ag_conv2d_args *a)
{
    if (in <= 0 || out <= 0)
        return ag_error(AG_ERR_ARG, "Conv2d: channels must be positive, got in %d, out %d",
                        (int)in, (int)out);
    if (a->groups <= 0)
        return ag_error(AG_ERR_ARG, "Conv2d: groups must be positive, got %d", (int)a->groups);
    if (in % a->groups || out % a->groups)
        return ag_error(AG_ERR_ARG,
                        "Conv2d: groups %d must divide in_channels %d and out_channels %d",
                        (int)a->groups, (int)in, (int)out);
    for (int i = 0; i < 2; i++)
        if (kernel[i] <= 0 || a->stride[i] <= 0 || a->dilation[i] <= 0 || a->padding[i] < 0)
            return ag_error(AG_ERR_ARG,
                            "Conv2d: kernel (%d, %d), stride (%d, %d) and dilation (%d, %d) "
                            "must be positive, padding (%d, %d) non-negative",
                            (int)kernel[0], (int)kernel[1], (int)a->stride[0],
                            (int)a->stride[1], (int)a->dilation[0], (int)a->dilation[1],
                            (int)a->padding[0], (int)a->padding[1]);
    return AG_OK;
}

nn_module *nn_conv2d_new_args(int32_t in_channels, int32_t out_channels,
                              const int32_t kernel[2], const ag_conv2d_args *args, bool bias,
                              ag_rng *rng)
{
    if (conv2d_check(in_channels, out_channels, kernel, args) != AG_OK)
        return NULL;
    nn_conv2d *c = nn_layer_alloc(sizeof *c, &conv2d_vtbl);
    if (!c)
        return NULL;
    c->args = *args;
    c->in_channels = in_channels;
    c->out_channels = out_channels;
    c->kernel[0] = kernel[0];
    c->kernel[1] = kernel[1];
    nn_module *m = &c->base;
    const int64_t wshape[4] = {out_channels, in_channels / args->groups, kernel[0], kernel[1]};
    ag_status st = nn_add_tensor(m, AG_OK, true, "weight", ag_param_new(4, wshape), &c->weight);
    if (bias)
        st = nn_add_tensor(m, st, true, "bias", ag_param_new(1, AG_SHAPE(out_channels)),
                           &c->bias);
    if (st == AG_OK && rng) {
        nn_init_kaiming_uniform(c->weight, sqrt(5.0), rng);
        if (c->bias) {
            const float bound = (float)(1.0 / sqrt((double)nn_init_fan_in(c->weight)));
            nn_init_uniform(c->bias, -bound, bound, rng);
        }
    }
    return nn_finish(m, st);
}

nn_module *nn_conv2d_new(int32_t in_channels, int32_t out_channels, int32_t kernel_size,
                         int32_t stride, int32_t padding, int32_t dilation, int32_t groups,
                         bool bias, ag_rng *rng)
{
    const ag_conv2d_args args = {.stride = {stride, stride},
                                 .padding = {padding, padding},
                                 .dilation = {dilation, dilation},
                                 .groups = groups};
    return nn_conv2d_new_args(in_channels, out_channels, (int32_t[2]){kernel_size, kernel_size},
                              &args, bias, rng);
}
