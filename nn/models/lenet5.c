/* lenet5.c — LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, as usually written
 * in PyTorch:
 *
 *     x = pool1(relu1(conv1(quant(x))))            // (N, 6, 14, 14)
 *     x = torch.flatten(pool2(relu2(conv2(x))), 1) // (N, 400)
 *     return dequant(fc3(relu4(fc2(relu3(fc1(x))))))
 *
 * conv1 pads 28x28 inputs by 2 so that both sizes reach the classic 28x28 map. */
#include "nn/models/zoo_impl.h"

enum {
    QUANT,
    CONV1,
    RELU1,
    POOL1,
    CONV2,
    RELU2,
    POOL2,
    FC1,
    RELU3,
    FC2,
    RELU4,
    FC3,
    DEQUANT,
    N_CHILDREN
};

static ag_tensor *lenet5_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    AG_ASSERT(m->n_children >= N_CHILDREN);
    for (int32_t i = QUANT; i <= POOL2; i++)
        x = nn_zoo_run(m, i, ctx, x);
    x = ag_flatten(ctx, x, 1); // (N, 16 * 5 * 5)
    for (int32_t i = FC1; i <= DEQUANT; i++)
        x = nn_zoo_run(m, i, ctx, x);
    return x;
}

static const nn_module_vtbl lenet5_vtbl = {.type = "LeNet5", .forward = lenet5_forward};

static nn_module *lenet5_build(const nn_zoo_config *cfg, ag_rng *rng)
{
    const bool is28 = cfg->in_h == 28 && cfg->in_w == 28;
    const bool is32 = cfg->in_h == 32 && cfg->in_w == 32;
    if (!is28 && !is32) {
        ag_error(AG_ERR_ARG, "lenet5: input %dx%d is not supported (28x28 or 32x32)",
                 (int)cfg->in_h, (int)cfg->in_w);
        return NULL;
    }
    nn_module *m = nn_layer_alloc(sizeof(nn_module), &lenet5_vtbl);
    if (!m)
        return NULL;
    const int32_t pad1 = is28 ? 2 : 0;
    ag_status st = nn_add_child(m, AG_OK, "quant", nn_quant_stub_new());
    st = nn_add_child(m, st, "conv1",
                      nn_conv2d_new(cfg->in_channels, 6, 5, 1, pad1, 1, 1, true, rng));
    st = nn_add_child(m, st, "relu1", nn_relu_new());
    st = nn_add_child(m, st, "pool1", nn_max_pool2d_new(2, 0, 0));
    st = nn_add_child(m, st, "conv2", nn_conv2d_new(6, 16, 5, 1, 0, 1, 1, true, rng));
    st = nn_add_child(m, st, "relu2", nn_relu_new());
    st = nn_add_child(m, st, "pool2", nn_max_pool2d_new(2, 0, 0));
    st = nn_add_child(m, st, "fc1", nn_linear_new(16 * 5 * 5, 120, true, rng));
    st = nn_add_child(m, st, "relu3", nn_relu_new());
    st = nn_add_child(m, st, "fc2", nn_linear_new(120, 84, true, rng));
    st = nn_add_child(m, st, "relu4", nn_relu_new());
    st = nn_add_child(m, st, "fc3", nn_linear_new(84, cfg->num_classes, true, rng));
    st = nn_add_child(m, st, "dequant", nn_dequant_stub_new());
    return nn_finish(m, st);
}

static const nn_fusion_group lenet5_groups[] = {
    {2, {"conv1", "relu1"}},
    {2, {"conv2", "relu2"}},
    {2, {"fc1", "relu3"}},
    {2, {"fc2", "relu4"}},
};

const nn_zoo_entry nn_zoo_lenet5 = {
    .name = "lenet5",
    .defaults = {.name = "lenet5", .in_channels = 1, .in_h = 28, .in_w = 28, .num_classes = 10},
    .build = lenet5_build,
    .groups = lenet5_groups,
    .n_groups = (int32_t)(sizeof lenet5_groups / sizeof lenet5_groups[0]),
};
