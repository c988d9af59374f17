/* mobilenet_tiny.c — a small depthwise-separable network (MobileNet v1 blocks with
 * ReLU6), torchvision-style names:
 *
 *     x = features(quant(x))               // (N, 64, ~H/4, ~W/4)
 *     x = torch.flatten(pool(x), 1)        // (N, 64)
 *     return dequant(fc(x))
 *
 * features.0 is the stem Sequential(conv 3x3, bn, relu6); features.1..3 are blocks
 * Sequential(dw conv 3x3 groups=C, bn, relu6, pw conv 1x1, bn, relu6). */
#include "nn/models/zoo_impl.h"

enum { QUANT, FEATURES, POOL, FC, DEQUANT, N_CHILDREN };

static ag_tensor *mobilenet_tiny_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    AG_ASSERT(m->n_children >= N_CHILDREN);
    x = nn_zoo_run(m, POOL, ctx, nn_zoo_run(m, FEATURES, ctx, nn_zoo_run(m, QUANT, ctx, x)));
    x = ag_flatten(ctx, x, 1); // (N, 64)
    return nn_zoo_run(m, DEQUANT, ctx, nn_zoo_run(m, FC, ctx, x));
}

static const nn_module_vtbl mobilenet_tiny_vtbl = {.type = "MobileNetTiny",
                                                   .forward = mobilenet_tiny_forward};

/* Conv2d without bias (a BatchNorm follows), square kernel, padding k / 2. */
static nn_module *conv(int32_t in, int32_t out, int32_t k, int32_t stride, int32_t groups,
                       ag_rng *rng)
{
    return nn_conv2d_new(in, out, k, stride, k / 2, 1, groups, false, rng);
}

static nn_module *stem(int32_t in, int32_t out, ag_rng *rng)
{
    return nn_sequential_from(
        (nn_module *[]){conv(in, out, 3, 1, 1, rng), nn_batch_norm2d_new(out), nn_relu6_new()},
        3);
}

/* The initialisation order is the parameter order: dw conv, then pw conv. */
static nn_module *block(int32_t in, int32_t out, int32_t stride, ag_rng *rng)
{
    nn_module *dw = conv(in, in, 3, stride, in, rng);
    nn_module *pw = conv(in, out, 1, 1, 1, rng);
    return nn_sequential_from((nn_module *[]){dw, nn_batch_norm2d_new(in), nn_relu6_new(), pw,
                                              nn_batch_norm2d_new(out), nn_relu6_new()},
                              6);
}

static nn_module *features(int32_t in, ag_rng *rng)
{
    nn_module *s = stem(in, 16, rng);
    nn_module *b1 = block(16, 32, 2, rng);
    nn_module *b2 = block(32, 64, 2, rng);
    nn_module *b3 = block(64, 64, 1, rng);
    return nn_sequential_from((nn_module *[]){s, b1, b2, b3}, 4);
}

static nn_module *mobilenet_tiny_build(const nn_zoo_config *cfg, ag_rng *rng)
{
    nn_module *m = nn_layer_alloc(sizeof(nn_module), &mobilenet_tiny_vtbl);
    if (!m)
        return NULL;
    ag_status st = nn_add_child(m, AG_OK, "quant", nn_quant_stub_new());
    st = nn_add_child(m, st, "features", features(cfg->in_channels, rng));
    st = nn_add_child(m, st, "pool", nn_adaptive_avg_pool2d_new(1, 1));
    st = nn_add_child(m, st, "fc", nn_linear_new(64, cfg->num_classes, true, rng));
    st = nn_add_child(m, st, "dequant", nn_dequant_stub_new());
    return nn_finish(m, st);
}

static const nn_fusion_group mobilenet_tiny_groups[] = {
    {2, {"features.0.0", "features.0.1"}}, {2, {"features.1.0", "features.1.1"}},
    {2, {"features.1.3", "features.1.4"}}, {2, {"features.2.0", "features.2.1"}},
    {2, {"features.2.3", "features.2.4"}}, {2, {"features.3.0", "features.3.1"}},
    {2, {"features.3.3", "features.3.4"}},
};

const nn_zoo_entry nn_zoo_mobilenet_tiny = {
    .name = "mobilenet-tiny",
    .defaults =
        {.name = "mobilenet-tiny", .in_channels = 1, .in_h = 28, .in_w = 28, .num_classes = 10},
    .build = mobilenet_tiny_build,
    .groups = mobilenet_tiny_groups,
    .n_groups = (int32_t)(sizeof mobilenet_tiny_groups / sizeof mobilenet_tiny_groups[0]),
};
