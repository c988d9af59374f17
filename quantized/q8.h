/* q8.h — cqat's integer-only inference runtime.
 *
 * A q8 model is a small graph frozen from a QAT model: an ordered list of nodes
 * (quantize, conv2d, linear, add, pools, ..., dequantize), each reading and writing
 * *values* — activations whose dimension 0 is the batch. Activations are uint8 or int8
 * with a per-tensor scale and zero point (real = scale * (q - zero_point)); weights are
 * int8, symmetric, per output channel or per tensor; accumulators and biases are int32;
 * every rescaling is an integer multiplier M0 in [2^30, 2^31) with a right shift n,
 * rounded once, half to even (see requantization below). Float ops (conv2d_f32,
 * max_pool2d_f32, ...) run the float parts of partly-quantized graphs, such as dynamic
 * quantization's float convolutions before an int8 linear_dynamic. The model lives in an HDF5
 * file described in docs/FORMAT.md; this runtime depends on HDF5, libm and OpenMP only.
 *
 * Running a model (examples/embed_q8.c is a complete program):
 *
 *     q8_model *m = q8_model_load("lenet_int8.h5");
 *     if (!m) { fprintf(stderr, "%s\n", q8_last_error()); return 1; }
 *     int64_t in_shape[Q8_MAX_DIMS], out_shape[Q8_MAX_DIMS];
 *     q8_model_input_shape(m, in_shape);     // {-1, 1, 28, 28}: -1 is the batch
 *     q8_model_output_shape(m, out_shape);   // {-1, 10}
 *     if (q8_model_run(m, images, batch, logits) != Q8_OK) ...   // float in, float out
 *     q8_model_free(m);
 *
 * Building a model (what qat/convert does), then saving it:
 *
 *     q8_builder *b = q8_builder_new();
 *     int64_t shape[] = {-1, 1, 28, 28};
 *     int32_t x = q8_builder_input(b, "x", Q8_F32, 4, shape);
 *     x = q8_builder_quantize(b, "quant", x, (q8_qparams){Q8_U8, 0.0078f, 128, 0, 0});
 *     x = q8_builder_conv2d(b, "features.0", x, &conv_desc, &weights,
 *                           (q8_qparams){Q8_U8, 0.05f, 0, 0, 127}, Q8_ACT_RELU); // 0..127
 *     ...
 *     q8_builder_output(b, q8_builder_dequantize(b, "dequant", x));
 *     q8_model *m = q8_builder_finish(b);      // validates; NULL + message on error
 *     q8_model_save(m, "lenet_int8.h5");
 *
 * Builder calls never need checking one by one: the first failure is remembered, later
 * calls do nothing and return -1, and q8_builder_finish() reports it.
 *
 * Threads: the kernels use OpenMP (OMP_NUM_THREADS / omp_set_num_threads decide how
 * many threads). A model owns its activation buffers and scratch, so one model is run
 * by one thread at a time; load a model per thread to serve requests concurrently.
 */
#ifndef CQAT_Q8_H
#define CQAT_Q8_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "quantized/q8_status.h"

enum {
    Q8_MAX_DIMS = 6,      /* rank of a value, batch included */
    Q8_FORMAT_VERSION = 1 /* the version this runtime writes and reads */
};

typedef enum q8_dtype {
    Q8_U8 = 1,  /* quint8 activations */
    Q8_I8 = 2,  /* qint8 activations and weights */
    Q8_I32 = 3, /* biases, multipliers, shifts (constants only) */
    Q8_F32 = 4, /* float model inputs/outputs, scales, dynamic linear */
} q8_dtype;

const char *q8_dtype_name(q8_dtype dtype); /* "u8", "i8", "i32", "f32" */
size_t q8_dtype_size(q8_dtype dtype);      /* bytes per element, 0 if unknown */

/* ------------------------------------------------------------------------------------
 * Running a model
 * ---------------------------------------------------------------------------------- */

typedef struct q8_model q8_model;

/* Loads and validates a model file (docs/FORMAT.md); weights are packed once here.
 * Returns NULL and sets the message (file, node, field) on any problem. Free with
 * q8_model_free(). */
q8_model *q8_model_load(const char *path);
void q8_model_free(q8_model *m);

/* The single float input and output of the common model shape ("quantize first,
 * dequantize last"): copies `batch` items from `input` (N, ...) and writes `output`
 * (N, ...), both float32 row-major. Fails with Q8_ERR_STATE if the model has several
 * inputs/outputs or non-float ones (use q8_model_run_values then). Runs allocate nothing,
 * except the first run with a larger batch than any before (the activation buffers grow to
 * it) or with more OpenMP threads than at load (one scratch block per thread).
 * Only the output is promised: this run uses the fused plan chosen at load (a conv2d whose
 * only reader is a 2x2 stride-2 max_pool2d is computed together with the pool, the same
 * integers), so such a conv's own output value is not written — q8_model_value() gives
 * it with data NULL. Use q8_model_run_values for every value. */
q8_status q8_model_run(q8_model *m, const float *input, int64_t batch, float *output);

/* General run: inputs[i] points to the i-th graph input, `batch` items in its dtype.
 * Every node runs on its own, so every value is written: read the results and any
 * intermediate value with q8_model_value(). */
q8_status q8_model_run_values(q8_model *m, const void *const *inputs, int64_t batch);

/* Grows the activation buffers for `batch` items now, so that later runs up to that
 * batch never allocate. */
q8_status q8_model_reserve(q8_model *m, int64_t batch);

/* Shapes of the first graph input/output, batch dimension as -1; returns the rank. */
int32_t q8_model_input_shape(const q8_model *m, int64_t shape[Q8_MAX_DIMS]);
int32_t q8_model_output_shape(const q8_model *m, int64_t shape[Q8_MAX_DIMS]);

int32_t q8_model_n_values(const q8_model *m);
int32_t q8_model_n_nodes(const q8_model *m);
int32_t q8_model_n_inputs(const q8_model *m);
int32_t q8_model_n_outputs(const q8_model *m);
int32_t q8_model_input_id(const q8_model *m, int32_t i);  /* value id, -1 if out of range */
int32_t q8_model_output_id(const q8_model *m, int32_t i);

/* What a value is and, after a run, what it holds: `data` points to batch * numel
 * elements of `dtype` (row-major, shape[0] = the last run's batch), owned by the model
 * and valid until the next run or q8_model_free. Before any run data is NULL and
 * shape[0] is -1; after q8_model_run, data is also NULL for the values its fused plan
 * skipped. Comparison tools read every value's integers this way, after
 * q8_model_run_values. */
typedef struct q8_value_info {
    const char *name; /* owned by the model; "" if unnamed */
    q8_dtype dtype;
    int32_t ndim;
    int64_t shape[Q8_MAX_DIMS];
    float scale;        /* u8/i8 values; 0 for f32 */
    int32_t zero_point; /* u8/i8 values; 0 for f32 */
    const void *data;
} q8_value_info;
q8_status q8_model_value(const q8_model *m, int32_t id, q8_value_info *info);

/* Model-level text attributes: "format", "source_model", "qconfig", "rounding".
 * Returns "" for an unset or unknown key; owned by the model. */
const char *q8_model_attr(const q8_model *m, const char *key);

/* Prints the graph: attributes, values (dtype, shape, qparams), nodes (op, ids,
 * attributes, constants with sizes) and memory totals. */
void q8_model_describe(const q8_model *m, FILE *out);

/* Writes the model to `path` atomically (a temporary file next to it, fsync, rename):
 * on failure the old file, if any, is untouched. */
q8_status q8_model_save(const q8_model *m, const char *path);

/* Which int8 GEMM kernel the model uses: "avx2" or "reference". It is chosen at load
 * from the CPU (__builtin_cpu_supports("avx2")); CQAT_Q8_GEMM=reference|avx2 in the
 * environment overrides the choice (avx2 only where the CPU has it; "avx2" also keeps
 * the vpmaddwd kernels where the CPU has AVX-VNNI, and "vnni256" the 256-bit VNNI
 * kernels where it has AVX-512 VNNI, for comparison). The float GEMM of
 * conv2d_f32/linear_f32 follows it (its AVX2 kernel also needs FMA). */
const char *q8_model_gemm_kernel(const q8_model *m);

/* ------------------------------------------------------------------------------------
 * Building a model
 * ---------------------------------------------------------------------------------- */

typedef struct q8_builder q8_builder;

/* Quantization parameters of an activation: real = scale * (q - zero_point).
 *
 * [qmin, qmax] is the clamp range of the integers, QAT's observer quant_min/quant_max
 * (0..127 with reduce_range): fake quantization clamps there, so the deployed model
 * must too. qmin = qmax = 0 means the dtype's full range ([0, 255] u8, [-128, 127] i8):
 * `(q8_qparams){.dtype = Q8_U8, .scale = 0.05f, .zero_point = 0}`. Otherwise the
 * builder requires dtype min <= qmin <= zero_point <= qmax <= dtype max (PyTorch's
 * calculate_qparams clamps the zero point into [quant_min, quant_max]).
 *
 * The range is not a property of the stored value (a value keeps dtype, scale and zero
 * point): every op that writes `out` from a rescale (quantize, conv2d, linear, add, mul,
 * cat, the average pools when they requantize, hardswish, requantize) turns it into its
 * node's clamp_min/clamp_max (hardswish: into its table). Ops that keep their input's
 * qparams (max_pool2d, flatten, clamp) cannot leave the input's range. Ignored for graph
 * inputs. */
typedef struct q8_qparams {
    q8_dtype dtype; /* Q8_U8 or Q8_I8 */
    float scale;    /* > 0, finite */
    int32_t zero_point;
    int32_t qmin, qmax; /* clamp range; both 0: the dtype's */
} q8_qparams;

/* Fused clamp of conv2d/linear/add/mul/requantize, turned into integer output bounds
 * from the output qparams and their range [lo, hi] (above): none -> [lo, hi],
 * relu -> [max(lo, zp), hi], relu6 -> [max(lo, zp), min(hi, quantize(6.0))]. The float
 * ops apply it to the float result: relu max(x, 0), relu6 min(max(x, 0), 6), NaN kept. */
typedef enum q8_act { Q8_ACT_NONE = 0, Q8_ACT_RELU, Q8_ACT_RELU6 } q8_act;

/* Weights of conv2d/linear/linear_dynamic. Symmetric int8: real = scale[c] * q.
 * `bias` is PyTorch's float bias (NULL: none); the builder quantizes it to int32 at scale
 * s_in * s_w[c] (b_q = round_half_even(b / (s_in * s_w[c])) in double) and fails with
 * Q8_ERR_NUMERIC, naming the channel, if b_q does not fit in int32 (it is never clamped
 * silently). linear_dynamic keeps the float bias. All arrays are copied. */
typedef struct q8_weights {
    const int8_t *data;  /* conv2d (O, I/groups, kH, kW); linear (O, I) */
    const float *scale;  /* (n_scale): per output channel (n_scale = O) or per tensor (1) */
    int64_t n_scale;
    const float *bias;   /* (O) or NULL */
} q8_weights;

typedef struct q8_conv2d_desc {
    int64_t out_channels;
    int64_t kernel[2];   /* kH, kW */
    int64_t stride[2];   /* 0 means 1 */
    int64_t padding[2];  /* on both sides, filled with the input zero point */
    int64_t dilation[2]; /* 0 means 1 */
    int64_t groups;      /* 0 means 1; in_channels for depthwise */
} q8_conv2d_desc;

typedef struct q8_pool2d_desc {
    int64_t kernel[2];
    int64_t stride[2];   /* 0 means "= kernel", as in PyTorch */
    int64_t padding[2];  /* at most kernel/2 */
    int64_t dilation[2]; /* max_pool2d only; 0 means 1 */
    bool ceil_mode;
    bool count_include_pad; /* avg_pool2d only (PyTorch's default is true) */
    int64_t divisor_override; /* avg_pool2d only; 0 means none */
} q8_pool2d_desc;

q8_builder *q8_builder_new(void); /* NULL only when out of memory */
void q8_builder_free(q8_builder *b);
/* Q8_OK, or the status of the first failed call (its message is q8_builder_error()). */
q8_status q8_builder_status(const q8_builder *b);
const char *q8_builder_error(const q8_builder *b);
/* Sets "source_model" or "qconfig" (free text stored in the file). */
q8_status q8_builder_set_attr_text(q8_builder *b, const char *key, const char *text);

/* Validates the graph (docs/FORMAT.md, "What the loader refuses"), packs the weights and returns the
 * model; NULL with the first error as the message. Always frees the builder. */
q8_model *q8_builder_finish(q8_builder *b);

/* High-level calls, one per op: each creates the output value (shape inferred, qparams
 * as given) and the node, and returns the output value id (-1 on error). `name` (may be
 * NULL) names the node and the value: use the module path ("features.0"). */
int32_t q8_builder_input(q8_builder *b, const char *name, q8_dtype dtype, int32_t ndim,
                         const int64_t *shape /* shape[0] = -1 */);
int32_t q8_builder_input_quantized(q8_builder *b, const char *name, q8_qparams qp, int32_t ndim,
                                   const int64_t *shape);
void q8_builder_output(q8_builder *b, int32_t value);
/* f32 -> u8/i8 with PyTorch's quantize_per_tensor formula (docs/FORMAT.md). */
int32_t q8_builder_quantize(q8_builder *b, const char *name, int32_t x, q8_qparams out);
/* u8/i8 -> f32: scale * (q - zero_point). */
int32_t q8_builder_dequantize(q8_builder *b, const char *name, int32_t x);
int32_t q8_builder_conv2d(q8_builder *b, const char *name, int32_t x, const q8_conv2d_desc *d,
                          const q8_weights *w, q8_qparams out, q8_act act);
/* x: (N, in_features) */
int32_t q8_builder_linear(q8_builder *b, const char *name, int32_t x, int64_t out_features,
                          const q8_weights *w, q8_qparams out, q8_act act);
/* f32 (N, in) -> f32 (N, out): PyTorch's quantize_dynamic Linear (fbgemm, reduce_range),
 * act NONE or RELU. */
int32_t q8_builder_linear_dynamic(q8_builder *b, const char *name, int32_t x,
                                  int64_t out_features, const q8_weights *w, q8_act act);
/* Elementwise on equal shapes and dtypes (no broadcasting). act: NONE or RELU. */
int32_t q8_builder_add(q8_builder *b, const char *name, int32_t x, int32_t y, q8_qparams out,
                       q8_act act);
int32_t q8_builder_mul(q8_builder *b, const char *name, int32_t x, int32_t y, q8_qparams out,
                       q8_act act);
/* Concatenation along dim 1; each input is requantized to `out`. */
int32_t q8_builder_cat(q8_builder *b, const char *name, const int32_t *xs, int32_t n,
                       q8_qparams out);
/* Output qparams are the input's (as in PyTorch). */
int32_t q8_builder_max_pool2d(q8_builder *b, const char *name, int32_t x, const q8_pool2d_desc *d);
/* out: NULL keeps the input's qparams (PyTorch), else requantizes to *out. */
int32_t q8_builder_avg_pool2d(q8_builder *b, const char *name, int32_t x, const q8_pool2d_desc *d,
                              const q8_qparams *out);
int32_t q8_builder_adaptive_avg_pool2d(q8_builder *b, const char *name, int32_t x, int64_t out_h,
                                       int64_t out_w, const q8_qparams *out);
/* (N, d1, d2, ...) -> (N, d1*d2*...), qparams kept. */
int32_t q8_builder_flatten(q8_builder *b, const char *name, int32_t x);
/* Standalone relu / relu6 on a quantized value (qparams kept). */
int32_t q8_builder_clamp(q8_builder *b, const char *name, int32_t x, q8_act act);
/* hardswish through a 256-entry table computed here from the input and output qparams
 * (entries clamped to out's range). */
int32_t q8_builder_hardswish(q8_builder *b, const char *name, int32_t x, q8_qparams out);
/* u8/i8 -> u8/i8 with its own output qparams: y = clamp(zp_out + rq(x - zp_in, M0, n))
 * with M0 * 2^-n = s_in / s_out (one half-even rounding), act NONE, RELU or RELU6 (relu6's
 * bound is quantize(6.0) with `out`), clamped to out's range. An observed ReLU6, or any
 * change of qparams. */
int32_t q8_builder_requantize(q8_builder *b, const char *name, int32_t x, q8_qparams out,
                              q8_act act);

/* Float ops: f32 in, f32 out, so that partly-float graphs run here (dynamic quantization
 * keeps convolutions float: conv2d_f32 -> clamp_f32 -> max_pool2d_f32 -> flatten ->
 * linear_dynamic). Float arrays are copied; non-finite weights or biases are refused.
 * Results agree with PyTorch's float kernels to rounding (the summation order of a
 * convolution or a pool is the runtime's; docs/FORMAT.md). act: NONE, RELU or RELU6. */
/* weight (O, C/groups, kH, kW), bias (O) or NULL; padding is zeros. */
int32_t q8_builder_conv2d_f32(q8_builder *b, const char *name, int32_t x,
                              const q8_conv2d_desc *d, const float *weight, const float *bias,
                              q8_act act);
/* x (N, in_features); weight (out_features, in_features), bias (out_features) or NULL. */
int32_t q8_builder_linear_f32(q8_builder *b, const char *name, int32_t x, int64_t out_features,
                              const float *weight, const float *bias, q8_act act);
/* Elementwise on equal shapes (no broadcasting). */
int32_t q8_builder_add_f32(q8_builder *b, const char *name, int32_t x, int32_t y, q8_act act);
int32_t q8_builder_mul_f32(q8_builder *b, const char *name, int32_t x, int32_t y, q8_act act);
/* Concatenation along dim 1. */
int32_t q8_builder_cat_f32(q8_builder *b, const char *name, const int32_t *xs, int32_t n);
int32_t q8_builder_max_pool2d_f32(q8_builder *b, const char *name, int32_t x,
                                  const q8_pool2d_desc *d);
int32_t q8_builder_avg_pool2d_f32(q8_builder *b, const char *name, int32_t x,
                                  const q8_pool2d_desc *d);
int32_t q8_builder_adaptive_avg_pool2d_f32(q8_builder *b, const char *name, int32_t x,
                                           int64_t out_h, int64_t out_w);
/* Standalone relu (act RELU) or relu6 (RELU6). */
int32_t q8_builder_clamp_f32(q8_builder *b, const char *name, int32_t x, q8_act act);
int32_t q8_builder_hardswish_f32(q8_builder *b, const char *name, int32_t x);
/* (q8_builder_flatten takes any dtype, f32 included.) */

/* Low-level calls: the file's own vocabulary (what q8_model_load uses). Values and
 * nodes are numbered from 0 in the order they are added; shapes include the batch
 * dimension as -1; scale/zero_point are ignored for f32 values. Every int attribute,
 * constant and their meaning per op is listed in docs/FORMAT.md. */
int32_t q8_builder_add_value(q8_builder *b, const char *name, q8_dtype dtype, int32_t ndim,
                             const int64_t *shape, float scale, int32_t zero_point);
int32_t q8_builder_add_node(q8_builder *b, const char *op, const char *name,
                            const int32_t *inputs, int32_t n_inputs, const int32_t *outputs,
                            int32_t n_outputs);
q8_status q8_builder_set_attr(q8_builder *b, int32_t node, const char *key, int64_t value);
/* Copies `data` (numel * q8_dtype_size(dtype) bytes). */
q8_status q8_builder_add_constant(q8_builder *b, int32_t node, const char *key, q8_dtype dtype,
                                  int32_t ndim, const int64_t *shape, const void *data);
q8_status q8_builder_mark_input(q8_builder *b, int32_t value);
q8_status q8_builder_mark_output(q8_builder *b, int32_t value);

/* ------------------------------------------------------------------------------------
 * Requantization arithmetic (exposed for converters, tools and tests)
 * ---------------------------------------------------------------------------------- */

/* Splits a real multiplier M (0 < M < 2^31) into M0 in [2^30, 2^31) and a right shift
 * n in [0, 63] with M ~= M0 * 2^-n (M0 = round_half_even(frac(M) * 2^31), frexp). An M
 * too small for any int32 input to reach 0.5 (M < 2^-33) gives M0 = 0, n = 0. */
q8_status q8_multiplier_from_real(double real, int32_t *m0, int32_t *shift);

/* round_half_even(x * m0 / 2^shift) computed exactly from the 64-bit product: one
 * rounding, no intermediate one (the double-rounding trap of TFLite's old
 * SaturatingRoundingDoublingHighMul + RoundingDivideByPOT). Requires m0 >= 0,
 * shift in [0, 63] and |x * m0| <= 2^62 (every op stays far below); asserts otherwise. */
int64_t q8_requantize(int64_t x, int32_t m0, int32_t shift);

/* PyTorch's quantize_per_tensor of one float: clamp(zp + round_half_even(x * f32(1/s))),
 * to the full range of dtype; NaN gives the zero point. */
int32_t q8_quantize_value(float x, float scale, int32_t zero_point, q8_dtype dtype);

/* The integer range of qp: [qmin, qmax], or the dtype's when both are 0. Q8_ERR_ARG
 * (message set) for a dtype other than u8/i8 or a range that is not inside the dtype's
 * or does not contain the zero point. */
q8_status q8_qparams_range(q8_qparams qp, int32_t *lo, int32_t *hi);

#endif
