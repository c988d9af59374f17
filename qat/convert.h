/* convert.h — freeze a QAT (or calibrated) model into an integer-only quantized/ model.
 *
 *     qat_convert_opts o = {.in_channels = 1, .in_h = 28, .in_w = 28,
 *                           .source_model = "refcnn", .qconfig = "fbgemm-qat"};
 *     q8_model *q = qat_convert(model, &o);      // NULL + ag_last_error() on failure
 *     q8_model_save(q, "refcnn-int8.h5");
 *
 * How (PyTorch's convert, lowered to a graph instead of swapped modules):
 *  1. The model is put in eval mode with its observers off, so the scales are the ones
 *     training ended with, and one forward on a sample batch is traced: every module
 *     call (module, inputs, output) in execution order, so residual adds, shared
 *     tensors and any module order are captured; tensors are matched by their storage,
 *     so reshapes between modules (flatten in a model's forward) become flatten nodes.
 *  2. Each traced module is lowered by type: QuantStub -> quantize; QAT convs and
 *     linears (BN folded with its running statistics, exactly the weights the frozen
 *     QAT forward fake-quantized: the integer weights are those very integers) ->
 *     conv2d / linear with the fused ReLU; FloatFunctional -> add / add_relu / mul /
 *     cat; pools, flatten, ReLU, ReLU6, Hardswish; Identity and Dropout vanish;
 *     DeQuantStub -> dequantize. Activation scales and zero points come from each
 *     module's activation_post_process (the FakeQuantize's scale/zero_point buffers, or
 *     an observer's calculate_qparams after calibration); the integer clamp bounds are
 *     the fake quant's [quant_min, quant_max], so that reduce_range models clamp in
 *     deployment exactly where they clamped in training.
 *  3. Biases become int32 at s_in * s_w[c] and every rescale an integer multiplier and
 *     shift (quantized/q8.h); the builder validates the graph.
 * Modules with a None qconfig, or types with no integer kernel, are an error naming the
 * module path: the deployed model is integer-only from its QuantStub to its DeQuantStub.
 */
#ifndef CQAT_QAT_CONVERT_H
#define CQAT_QAT_CONVERT_H

#include "nn/nn.h"
#include "quantized/q8.h"

typedef struct qat_convert_opts {
    int32_t in_channels, in_h, in_w; /* one sample's shape (the batch stays free) */
    const char *source_model;        /* stored in the file (may be NULL) */
    const char *qconfig;             /* a description stored in the file (may be NULL) */
    /* false (default): the scales and zero points QAT ended with (the fake quants'
     * buffers), so the int8 model computes what was validated. true: recompute them
     * from the observers' statistics and fold BN as torch.ao.quantization.convert does
     * (for agreement with PyTorch's own converted model; fused fake quants train with
     * other scales than convert then uses, see docs/QUANTIZATION.md). */
    bool pytorch_qparams;
} qat_convert_opts;

q8_model *qat_convert(nn_module *root, const qat_convert_opts *opts);

/* Post-training dynamic quantization (PyTorch's quantize_dynamic for Linear): every
 * Linear (and LinearReLU) gets int8 per-channel symmetric weights and quantizes its
 * float input per batch at run time; the rest of the model must be Linear-only layers,
 * ReLU, Flatten, Identity, Dropout (a float graph in q8 has no conv). */
q8_model *qat_convert_dynamic(nn_module *root, const qat_convert_opts *opts);

#endif
