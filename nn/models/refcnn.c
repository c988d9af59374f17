/* refcnn.c — the reference CNN of BENCHMARK.md: conv-bn-relu, max pool, conv-bn-relu,
 * a conv-bn branch joined back by add_relu (FloatFunctional), max pool, two linears.
 * The forward is RefCNN.forward of the PyTorch twin line by line:
 *
 *     x = pool1(relu1(bn1(conv1(quant(x)))))
 *     y = relu2(bn2(conv2(x)))
 *     x = skip.add_relu(bn3(conv3(y)), y)
 *     x = torch.flatten(pool2(x), 1)
 *     return dequant(fc2(relu3(fc1(x)))) */
#include "nn/models/zoo_impl.h"

/* Children in registration (= state_dict) order. */
enum {
    QUANT,
    CONV1,
    BN1,
    RELU1,
    POOL1,
    CONV2,
    BN2,
    RELU2,
    CONV3,
    BN3,
    SKIP,
    POOL2,
    FC1,
    RELU3,
    FC2,
    DEQUANT,
    N_CHILDREN
};

static ag_tensor *refcnn_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    AG_ASSERT(m->n_children >= N_CHILDREN);
    x = nn_zoo_run(m, QUANT, ctx, x);
    for (int32_t i = CONV1; i <= RELU2; i++)
        x = nn_zoo_run(m, i, ctx, x);
    ag_tensor *y = x; // (N, 32, H/2, W/2)
    x = nn_zoo_run(m, BN3, ctx, nn_zoo_run(m, CONV3, ctx, y));
    x = nn_ff_add_relu(nn_zoo_child(m, SKIP), ctx, x, y);
    x = ag_flatten(ctx, nn_zoo_run(m, POOL2, ctx, x), 1); // (N, 32 * H/4 * W/4)
    for (int32_t i = FC1; i <= DEQUANT; i++)
        x = nn_zoo_run(m, i, ctx, x);
    return x;
}

static const nn_module_vtbl refcnn_vtbl = {.type = "RefCNN", .forward = refcnn_forward};

static nn_module *refcnn_build(const nn_zoo_config *cfg, ag_rng *rng)
{
    const int32_t h4 = cfg->in_h / 4, w4 = cfg->in_w / 4; // after the two 2x2 pools
    if (h4 < 1 || w4 < 1) {
        ag_error(AG_ERR_ARG, "refcnn: input %dx%d is smaller than 4x4", (int)cfg->in_h,
                 (int)cfg->in_w);
        return NULL;
    }
    nn_module *m = nn_layer_alloc(sizeof(nn_module), &refcnn_vtbl);
    if (!m)
        return NULL;
    ag_status st = nn_add_child(m, AG_OK, "quant", nn_quant_stub_new());
    st = nn_add_child(m, st, "conv1",
                      nn_conv2d_new(cfg->in_channels, 16, 3, 1, 1, 1, 1, true, rng));
    st = nn_add_child(m, st, "bn1", nn_batch_norm2d_new(16));
    st = nn_add_child(m, st, "relu1", nn_relu_new());
    st = nn_add_child(m, st, "pool1", nn_max_pool2d_new(2, 0, 0));
    st = nn_add_child(m, st, "conv2", nn_conv2d_new(16, 32, 3, 1, 1, 1, 1, true, rng));
    st = nn_add_child(m, st, "bn2", nn_batch_norm2d_new(32));
    st = nn_add_child(m, st, "relu2", nn_relu_new());
    st = nn_add_child(m, st, "conv3", nn_conv2d_new(32, 32, 3, 1, 1, 1, 1, true, rng));
    st = nn_add_child(m, st, "bn3", nn_batch_norm2d_new(32));
    st = nn_add_child(m, st, "skip", nn_float_functional_new());
    st = nn_add_child(m, st, "pool2", nn_max_pool2d_new(2, 0, 0));
    st = nn_add_child(m, st, "fc1", nn_linear_new(32 * h4 * w4, 128, true, rng));
    st = nn_add_child(m, st, "relu3", nn_relu_new());
    st = nn_add_child(m, st, "fc2", nn_linear_new(128, cfg->num_classes, true, rng));
    st = nn_add_child(m, st, "dequant", nn_dequant_stub_new());
    return nn_finish(m, st);
}

static const nn_fusion_group refcnn_groups[] = {
    {3, {"conv1", "bn1", "relu1"}},
    {3, {"conv2", "bn2", "relu2"}},
    {2, {"conv3", "bn3"}},
    {2, {"fc1", "relu3"}},
};

const nn_zoo_entry nn_zoo_refcnn = {
    .name = "refcnn",
    .defaults = {.name = "refcnn", .in_channels = 1, .in_h = 28, .in_w = 28, .num_classes = 10},
    .build = refcnn_build,
    .groups = refcnn_groups,
    .n_groups = (int32_t)(sizeof refcnn_groups / sizeof refcnn_groups[0]),
};
