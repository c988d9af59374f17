/* linear.c — Linear: y = x weight^T + bias, x (N, in), weight (out, in).
 * Initialisation as Linear.reset_parameters (torch/nn/modules/linear.py):
 *     weight ~ kaiming_uniform_(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in))
 *     bias   ~ U(-1/sqrt(in), 1/sqrt(in)) */
#include "nn/layers/layer_impl.h"

#include <math.h>

static ag_tensor *linear_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    nn_linear *l = (nn_linear *)m;
    return ag_linear(ctx, x, l->weight, l->bias);
}

static const nn_module_vtbl linear_vtbl = {.type = "Linear", .forward = linear_forward};

nn_module *nn_linear_new(int32_t in_features, int32_t out_features, bool bias, ag_rng *rng)
{
    if (in_features <= 0 || out_features <= 0) {
        ag_error(AG_ERR_ARG, "Linear: features must be positive, got in %d, out %d",
                 (int)in_features, (int)out_features);
        return NULL;
    }
    nn_linear *l = nn_layer_alloc(sizeof *l, &linear_vtbl);
    if (!l)
        return NULL;
    l->in_features = in_features;
    l->out_features = out_features;
    nn_module *m = &l->base;
    ag_status st =
        nn_add_tensor(m, AG_OK, true, "weight",
                      ag_param_new(2, AG_SHAPE(out_features, in_features)), &l->weight);
    if (bias)
        st = nn_add_tensor(m, st, true, "bias", ag_param_new(1, AG_SHAPE(out_features)),
                           &l->bias);
    if (st == AG_OK && rng) {
        nn_init_kaiming_uniform(l->weight, sqrt(5.0), rng);
        if (l->bias) {
            const float bound = (float)(1.0 / sqrt((double)in_features));
            nn_init_uniform(l->bias, -bound, bound, rng);
        }
    }
    return nn_finish(m, st);
}
