/* zoo.h — ready-made models by name: the reference CNN of the benchmark and two
 * classics, built from nn/layers with PyTorch's names and default initialisation.
 *
 *     nn_zoo_config cfg;
 *     if (nn_zoo_config_default("refcnn", &cfg) != AG_OK)   // 1x28x28 in, 10 classes
 *         fprintf(stderr, "%s\n", ag_last_error());          // lists the known names
 *     ag_rng rng;
 *     ag_rng_seed(&rng, 42, 0);
 *     nn_module *model = nn_zoo_new(&cfg, &rng);             // owned by the caller
 *     ag_tensor *logits = nn_forward(model, ctx, x);         // x (N, C, H, W)
 *     ...
 *     nn_module_free(model);
 *
 * The models (each a module with its own forward that calls its children through
 * nn_forward, so hooks and traces see every call, and leaves the tensor reshaping to
 * ag_flatten as a PyTorch forward would):
 *
 *   refcnn          the benchmark model of BENCHMARK.md, children in this order:
 *                   quant, conv1, bn1, relu1, pool1, conv2, bn2, relu2, conv3, bn3,
 *                   skip (FloatFunctional: add_relu(bn3 output, relu2 output)), pool2,
 *                   fc1, relu3, fc2, dequant. 216,330 parameters for 1x28x28 and 10
 *                   classes; other sizes change fc1's input, 32 (H/4) (W/4).
 *   lenet5          quant, conv1 (C->6, 5x5), relu1, pool1 (max 2), conv2 (6->16, 5x5),
 *                   relu2, pool2, fc1 (400->120), relu3, fc2 (120->84), relu4,
 *                   fc3 (84->classes), dequant. Inputs 28x28 (conv1 padding 2) or 32x32
 *                   (no padding).
 *   mobilenet-tiny  depthwise-separable, torchvision-style names: quant;
 *                   features.0 = Sequential(Conv2d(C->16, 3x3), BatchNorm2d, ReLU6);
 *                   features.1..3 = Sequential(depthwise Conv2d 3x3, BatchNorm2d, ReLU6,
 *                   pointwise Conv2d 1x1, BatchNorm2d, ReLU6) for 16->32 (stride 2),
 *                   32->64 (stride 2), 64->64 (stride 1); convs without bias as they
 *                   feed a BatchNorm; pool (AdaptiveAvgPool2d 1x1), flatten,
 *                   fc (64->classes), dequant. Any input size (1x28x28, 3x32x32...).
 *
 * Fusion groups are the dotted names that qat's fuse_modules merges, as one would pass
 * to torch.ao.quantization.fuse_modules. For mobilenet-tiny they are [conv, bn] pairs
 * only: PyTorch has no (Conv2d, BatchNorm2d, ReLU6) fusion, so each ReLU6 stays a
 * module of its own (observed separately in QAT), as in torchvision's quantizable
 * models, which swap ReLU6 for ReLU to fuse it.
 */
#ifndef CQAT_NN_ZOO_H
#define CQAT_NN_ZOO_H

#include "nn/nn.h"

typedef struct nn_zoo_config {
    char name[32]; /* "refcnn", "lenet5", "mobilenet-tiny" */
    int32_t in_channels, in_h, in_w;
    int32_t num_classes;
} nn_zoo_config;

/* The model's usual configuration (refcnn and lenet5: 1x28x28, mobilenet-tiny: 1x28x28;
 * 10 classes). Unknown name: AG_ERR_ARG with a message listing the known ones. */
ag_status nn_zoo_config_default(const char *name, nn_zoo_config *out);

/* A new model, owned by the caller (nn_module_free). Parameters are initialised from
 * rng in the order the children appear (NULL rng: a generator seeded with (0, 0)).
 * NULL and ag_last_error() for an unknown name or a configuration the model cannot
 * take (non-positive sizes, an input too small, lenet5 at other than 28 or 32). */
nn_module *nn_zoo_new(const nn_zoo_config *cfg, ag_rng *rng);

/* The known names, NULL-terminated; static storage. */
const char *const *nn_zoo_names(void);

enum { NN_FUSION_GROUP_MAX = 4 };
typedef struct nn_fusion_group {
    int32_t n;                              /* 2 or 3 */
    const char *names[NN_FUSION_GROUP_MAX]; /* dotted module paths, in fusion order */
} nn_fusion_group;

/* The model's fusion groups in model order (static storage) into *groups and their
 * count into *n; refcnn: [conv1, bn1, relu1], [conv2, bn2, relu2], [conv3, bn3],
 * [fc1, relu3]. Unknown name: AG_ERR_ARG as nn_zoo_config_default. */
ag_status nn_zoo_fusion_groups(const char *name, const nn_fusion_group **groups, int32_t *n);

#endif
