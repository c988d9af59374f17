/* batch_norm.c — BatchNorm2d and BatchNorm1d (torch/nn/modules/batchnorm.py), which
 * differ only in the input ranks they accept. Parameters weight = 1, bias = 0; buffers
 * running_mean = 0, running_var = 1, num_batches_tracked = 0 (int64, shape []).
 *
 * Forward (_BatchNorm.forward with track_running_stats and momentum 0.1):
 *     training: y = batch_norm with batch statistics; running stats updated in place
 *               by ag_batch_norm; num_batches_tracked += 1
 *     eval:     y = batch_norm with running_mean, running_var */
#include "nn/layers/layer_impl.h"

#include <inttypes.h>

static ag_tensor *batch_norm_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    nn_batch_norm *bn = (nn_batch_norm *)m;
    const ag_batch_norm_args args = {
        .training = m->training, .momentum = bn->momentum, .eps = bn->eps};
    ag_tensor *y =
        ag_batch_norm(ctx, x, bn->weight, bn->bias, bn->running_mean, bn->running_var, &args);
    if (y && m->training)
        *(int64_t *)(void *)bn->num_batches_tracked->data += 1;
    return y;
}

static ag_tensor *batch_norm2d_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    if (x->ndim != 4) {
        ag_error(AG_ERR_SHAPE, "BatchNorm2d: expected 4D input (got %dD input)", (int)x->ndim);
        return NULL;
    }
    return batch_norm_forward(m, ctx, x);
}

static ag_tensor *batch_norm1d_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    if (x->ndim != 2 && x->ndim != 3) {
        ag_error(AG_ERR_SHAPE, "BatchNorm1d: expected 2D or 3D input (got %dD input)",
                 (int)x->ndim);
        return NULL;
    }
    return batch_norm_forward(m, ctx, x);
}

static const nn_module_vtbl batch_norm2d_vtbl = {.type = "BatchNorm2d",
                                                 .forward = batch_norm2d_forward};
static const nn_module_vtbl batch_norm1d_vtbl = {.type = "BatchNorm1d",
                                                 .forward = batch_norm1d_forward};

static nn_module *batch_norm_new(int32_t num_features, const nn_module_vtbl *vt)
{
    if (num_features <= 0) {
        ag_error(AG_ERR_ARG, "%s: num_features must be positive, got %d", vt->type,
                 (int)num_features);
        return NULL;
    }
    nn_batch_norm *bn = nn_layer_alloc(sizeof *bn, vt);
    if (!bn)
        return NULL;
    bn->num_features = num_features;
    bn->eps = 1e-5f;
    bn->momentum = 0.1f;
    nn_module *m = &bn->base;
    const int64_t *c = AG_SHAPE(num_features);
    ag_status st = nn_add_tensor(m, AG_OK, true, "weight", ag_param_new(1, c), &bn->weight);
    st = nn_add_tensor(m, st, true, "bias", ag_param_new(1, c), &bn->bias);
    st = nn_add_tensor(m, st, false, "running_mean", ag_tensor_new(1, c, false),
                       &bn->running_mean);
    st = nn_add_tensor(m, st, false, "running_var", ag_tensor_new(1, c, false),
                       &bn->running_var);
    st = nn_add_tensor(m, st, false, "num_batches_tracked",
                       ag_tensor_new_dtype(AG_I64, 0, NULL), &bn->num_batches_tracked);
    if (st == AG_OK) {
        nn_init_constant(bn->weight, 1.0f);
        nn_init_constant(bn->running_var, 1.0f);
    }
    return nn_finish(m, st);
}

nn_module *nn_batch_norm2d_new(int32_t num_features)
{
    return batch_norm_new(num_features, &batch_norm2d_vtbl);
}

nn_module *nn_batch_norm1d_new(int32_t num_features)
{
    return batch_norm_new(num_features, &batch_norm1d_vtbl);
}
