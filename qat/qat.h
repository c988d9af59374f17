/* qat.h — eager-mode quantization-aware training as PyTorch 1.13's torch.ao.quantization:
 * stubs, module fusion, the QAT modules and prepare / prepare_qat.
 *
 * The workflow (docs/QAT.md has the details and the mapping to PyTorch's names):
 *
 *     nn_module *model = nn_zoo_new(&cfg, &rng);            // float model, training mode
 *     const nn_fusion_group *groups; int32_t n;
 *     nn_zoo_fusion_groups("refcnn", &groups, &n);
 *     qat_fuse_modules(model, groups, n, true);              // fuse_modules_qat
 *     qat_qconfig qc;
 *     qat_qconfig_by_name("fbgemm-qat", &qc);                // qat/qconfig.h
 *     qat_qconfig_map *map = qat_qconfig_map_new(&qc);
 *     qat_prepare_qat(model, map);                           // swap + fake quants
 *     ...train as usual (nn_forward, ag_backward, optim_step)...
 *     qat_freeze_bn_stats(model);                            // late in training
 *
 * Everything works in place on the given tree (PyTorch's inplace=True): modules that are
 * replaced are freed, and the tensors of a module that becomes its QAT version move into
 * it (the same ag_tensor objects, so pointers to parameters stay valid). Types follow
 * PyTorch's classes with their package as prefix: "nni.ConvBnReLU2d" (the float fused
 * container of torch.ao.nn.intrinsic), "nniqat.ConvBnReLU2d" (its QAT version),
 * "nnqat.Linear"; state_dict keys are exactly those of PyTorch's prepared model.
 */
#ifndef CQAT_QAT_QAT_H
#define CQAT_QAT_QAT_H

#include <stdbool.h>
#include <stdint.h>

#include "nn/layers.h"
#include "nn/nn.h"
#include "nn/zoo.h"
#include "qat/observer.h"
#include "qat/qconfig.h"

/* ---- stubs ------------------------------------------------------------------------ */

/* QuantWrapper(m): a "QuantWrapper" with children quant (QuantStub), dequant
 * (DeQuantStub) and module (m), in PyTorch's registration order, whose forward is
 * dequant(module(quant(x))). The stubs take m's own qconfig if it has one, and the
 * wrapper m's training mode. Takes ownership of m (freed on failure too). */
nn_module *qat_quant_wrapper_new(nn_module *m);

/* ---- fusion (fuse_modules.py, fuser_method_mappings.py, torch/nn/utils/fusion.py) ---- */

/* fuse_modules (is_qat false) / fuse_modules_qat (is_qat true), in place. Each group
 * names 2 or 3 modules by dotted path, in order; the first becomes the fused module
 * and the others Identity (in the first one's training mode). Patterns:
 *
 *   group                        eval (is_qat false)            QAT (is_qat true)
 *   Conv2d, BatchNorm2d          Conv2d with BN folded          nni.ConvBn2d
 *   Conv2d, BatchNorm2d, ReLU    nni.ConvReLU2d(folded, relu)   nni.ConvBnReLU2d
 *   Conv2d, ReLU                 nni.ConvReLU2d                 nni.ConvReLU2d
 *   Linear, BatchNorm1d          Linear with BN folded          nni.LinearBn1d
 *   Linear, ReLU                 nni.LinearReLU                 nni.LinearReLU
 *   BatchNorm2d, ReLU            nni.BNReLU2d                   nni.BNReLU2d
 *
 * Fused containers hold the original modules as children "0", "1", "2" (state keys
 * "conv1.0.weight", "conv1.1.running_mean", as PyTorch). All groups are checked before
 * anything changes; AG_ERR_ARG names the group and the module for: a missing path, a
 * module in two groups, an unknown pattern, members in different train/eval modes,
 * eval folding of a module in training mode, BatchNorm features that do not match the
 * conv's or linear's outputs. A group of the zoo (nn_zoo_fusion_groups) can be passed
 * as it is. An observer hook of a member is not carried over (fuse before prepare). */
ag_status qat_fuse_modules(nn_module *root, const nn_fusion_group *groups, int32_t n_groups,
                           bool is_qat);

/* fuse_conv_bn_eval / fuse_linear_bn_eval: a new Conv2d / Linear (owned by the caller,
 * always with a bias) whose weight and bias fold the BatchNorm's running statistics;
 * the inputs are untouched. NULL + ag_last_error() if the types or sizes do not fit. */
nn_module *qat_fuse_conv_bn_eval(const nn_module *conv, const nn_module *bn);
nn_module *qat_fuse_linear_bn_eval(const nn_module *linear, const nn_module *bn);
/* fuse_conv_bn_weights in float32 as torch computes it, per output channel c of
 * `per_channel` weights each (linear: in_features, conv: in/groups*kH*kW):
 *     r = 1 / sqrt(var[c] + eps)                     (torch.rsqrt)
 *     w_out = w * (gamma[c] * r)
 *     b_out = ((b[c] - mean[c]) * r) * gamma[c] + beta[c]      (b NULL: 0)
 * gamma/beta NULL mean 1/0. w_out may be w, b_out may be b. */
void qat_fuse_conv_bn_weights(const float *w, const float *b, int64_t out_channels,
                              int64_t per_channel, const float *mean, const float *var,
                              float eps, const float *gamma, const float *beta, float *w_out,
                              float *b_out);
/* fuse_linear_bn_weights, which groups the bias differently (bit for bit):
 *     s = gamma[c] * (1 / sqrt(var[c] + eps));  w_out = w * s;
 *     b_out = (b[c] - mean[c]) * s + beta[c] */
void qat_fuse_linear_bn_weights(const float *w, const float *b, int64_t out_features,
                                int64_t in_features, const float *mean, const float *var,
                                float eps, const float *gamma, const float *beta, float *w_out,
                                float *b_out);

/* A fused float container of `type` ("nni.ConvBn2d", "nni.ConvBnReLU2d", "nni.ConvReLU2d",
 * "nni.LinearReLU", "nni.LinearBn1d", "nni.BNReLU2d") over mods[0..n) (children "0",
 * "1", "2"; forward runs them in order). Takes ownership of the modules (all freed on
 * failure: AG_ERR_ARG if their types do not match the container's pattern). */
nn_module *qat_intrinsic_new(const char *type, nn_module *const *mods, int32_t n);
/* True for the nni.* containers and the nniqat.* modules (PyTorch's _FusedModule). */
bool qat_is_fused(const nn_module *m);

/* ---- QAT modules ------------------------------------------------------------------ *
 *
 * type                 from               state (in order)               forward
 * nnqat.Conv2d         Conv2d             weight, bias, weight_fake_quant conv2d(x, wfq(W), b)
 * nniqat.ConvReLU2d    nni.ConvReLU2d     same                            relu(...)
 * nnqat.Linear         Linear             weight, bias, weight_fake_quant linear(x, wfq(W), b)
 * nniqat.LinearReLU    nni.LinearReLU     same                            relu(...)
 * nniqat.ConvBn2d      nni.ConvBn2d       weight, bias, bn.*, weight_fake_quant   see below
 * nniqat.ConvBnReLU2d  nni.ConvBnReLU2d   same                            relu(...)
 * nniqat.LinearBn1d    nni.LinearBn1d     same                            see below
 *
 * ("bias" only if the float module had one.) ConvBn is conv_fused.py's default
 * (approximate) _forward:
 *     running_std = sqrt(bn.running_var + bn.eps);  s = bn.weight / running_std   (C)
 *     y = conv2d(x, weight_fake_quant(W * s[c]), no bias) / s[c]  (+ conv bias)
 *     out = bn(y)   (training: batch statistics, running stats updated; frozen: eval)
 * so gradients reach gamma through s as in PyTorch. LinearBn1d is the same with linear.
 * weight_fake_quant is a child module (a FakeQuantize, or an observer if the qconfig is
 * a PTQ one), called with nn_forward. The concrete structs embed the float layer's
 * struct, so code reading nn_conv2d / nn_linear fields works on them too. */

typedef struct qat_conv2d { /* nnqat.Conv2d, nniqat.ConvReLU2d */
    nn_conv2d conv;
} qat_conv2d;

typedef struct qat_linear { /* nnqat.Linear, nniqat.LinearReLU */
    nn_linear linear;
} qat_linear;

typedef struct qat_conv_bn2d { /* nniqat.ConvBn2d, nniqat.ConvBnReLU2d */
    nn_conv2d conv;
    bool freeze_bn; /* BN uses running stats; survives nn_module_train */
} qat_conv_bn2d;

typedef struct qat_linear_bn1d { /* nniqat.LinearBn1d */
    nn_linear linear;
    bool freeze_bn;
} qat_linear_bn1d;

/* from_float of the QAT mapping: the QAT module for a float Conv2d, Linear or nni.*
 * container (the table above), with weight_fake_quant = qat_qconfig_new_weight(qc) and
 * qconfig qc (borrowed), in training mode with BN statistics updating, as PyTorch's
 * constructors leave it. On success the result has taken over float_mod's weight, bias
 * and BatchNorm (the very tensors and module), and float_mod is left holding zero
 * placeholders: free it. On failure NULL, and float_mod is as it was. */
nn_module *qat_module_from_float(nn_module *float_mod, const qat_qconfig *qc);
/* True for the nnqat.* and nniqat.* types. */
bool qat_is_qat_module(const nn_module *m);
/* The weight_fake_quant child of a QAT module, or NULL. */
nn_module *qat_module_weight_fake_quant(nn_module *m);
/* The "bn" child of a ConvBn / ConvBnReLU / LinearBn1d module, or NULL. */
nn_batch_norm *qat_module_bn(nn_module *m);

/* freeze_bn_stats / update_bn_stats of one ConvBn, ConvBnReLU or LinearBn1d module
 * (others: AG_ERR_ARG). Frozen: bn in eval mode (running statistics, no updates), and
 * nn_module_train(m, true) leaves it so, as PyTorch's _ConvBnNd.train does. */
ag_status qat_module_freeze_bn_stats(nn_module *m);
ag_status qat_module_update_bn_stats(nn_module *m);
/* The same over a tree, as model.apply(torch.nn.intrinsic.qat.freeze_bn_stats): PyTorch's
 * functions only touch the ConvBn / ConvBnReLU modules (not LinearBn1d), and so do these;
 * they return how many modules they changed. */
int32_t qat_freeze_bn_stats(nn_module *root);
int32_t qat_update_bn_stats(nn_module *root);

/* ---- prepare (quantize.py) ----------------------------------------------------------- */

/* prepare(model): propagates the map's qconfigs (qat_propagate_qconfig), then attaches
 * an activation_post_process (qat_qconfig_new_activation) to every module PyTorch's
 * add_observer_ observes and whose qconfig is not None:
 *   - leaves of the types PyTorch maps to quantized ones: QuantStub, Conv2d, Linear,
 *     BatchNorm2d, ReLU6, Hardswish, LeakyReLU (BatchNorm1d, ReLU, pooling, Flatten,
 *     Identity, Sigmoid and Tanh are not; Dropout and DeQuantStub never);
 *   - fused modules (nni.*, nniqat.*) as one, without looking inside;
 *   - FloatFunctional: its Identity activation_post_process is replaced;
 *   - Sigmoid and Tanh in training mode: a fixed-qparams FakeQuantize (scale 1/256,
 *     zero point 0; Tanh 2/256, 128), whatever the qconfig says.
 * The observer is the child "activation_post_process", run by nn_forward on the module's
 * output. Modules whose qconfig is None are left untouched. The map must outlive the
 * model (modules point at its qconfigs); map NULL uses only the qconfigs set on modules. */
ag_status qat_prepare(nn_module *root, const qat_qconfig_map *map);
/* prepare_qat(model): the model must be in training mode (AG_ERR_STATE otherwise, as
 * PyTorch asserts); propagates the map, swaps every float module with a qconfig through
 * the QAT mapping (Conv2d -> nnqat.Conv2d, Linear -> nnqat.Linear, nni.X -> nniqat.X;
 * the root itself is never swapped), then attaches the activation fake quants as
 * qat_prepare does, the QAT modules being observed as a whole. */
ag_status qat_prepare_qat(nn_module *root, const qat_qconfig_map *map);

#endif
