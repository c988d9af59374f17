/* layers.h — the standard layers, as torch.nn's: Conv2d, Linear, BatchNorm, activations,
 * pooling, Flatten, Dropout, Identity, Sequential, the quantization stubs and
 * FloatFunctional, with PyTorch's default initialisation.
 *
 *     ag_rng rng;
 *     ag_rng_seed(&rng, 42, 0);                        // init draws from it, in order
 *     nn_module *net = nn_sequential_from((nn_module *[]){
 *         nn_conv2d_new(1, 16, 3, 1, 1, 1, 1, true, &rng),  // Conv2d(1, 16, 3, padding=1)
 *         nn_batch_norm2d_new(16),
 *         nn_relu_new(),
 *     }, 3);                                           // NULL if any part failed
 *     ag_tensor *y = nn_forward(net, ctx, x);
 *     nn_module_free(net);
 *
 * Every constructor returns a module owned by the caller (free it with nn_module_free,
 * or hand it to a parent, which then owns it), or NULL with ag_last_error() set for a
 * bad argument or out of memory; nothing leaks on failure. Type names, parameter and
 * buffer names are PyTorch's ("Conv2d", "weight", "running_mean"), so state_dict keys
 * match. Each concrete struct starts with its nn_module base, so code that knows the
 * type (qat/ fusion, convert) reads the fields directly after nn_module_is(m, "Conv2d").
 * Tensor fields (weight, running_mean...) point at the very tensors registered in the
 * base's params[] / buffers[]: load values into them in place; code that swaps a
 * tensor object must update both.
 *
 * Initialisation (reset_parameters in PyTorch): Conv2d and Linear draw the weight from
 * kaiming_uniform_(a = sqrt(5)), which is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), then the
 * bias from the same range; BatchNorm sets weight 1, bias 0, running_mean 0,
 * running_var 1. Draws come from the ag_rng given, weight before bias, so a model built
 * in a fixed order is reproducible from its seed. The numbers differ from PyTorch's
 * (another generator); the distributions are the same. A NULL rng leaves the
 * parameters zero, for callers that load weights right after.
 *
 * Not supported (PyTorch options with a non-default value): padding modes other than
 * zeros, BatchNorm without affine or running stats, momentum=None (cumulative average),
 * pooling with ceil_mode, dilation or return_indices, Flatten's end_dim.
 */
#ifndef CQAT_NN_LAYERS_H
#define CQAT_NN_LAYERS_H

#include "nn/nn.h"

/* ---- initialisation (torch.nn.init) ---------------------------------------------- */

/* t ~ U[lo, hi), every element in memory order (nn.init.uniform_). */
void nn_init_uniform(ag_tensor *t, float lo, float hi, ag_rng *rng);
void nn_init_constant(ag_tensor *t, float value); /* nn.init.constant_ */
/* fan_in as _calculate_fan_in_and_fan_out: shape[1] times the product of the dims
 * after it ([out, in] -> in; [O, I/groups, kH, kW] -> I/groups * kH * kW). */
int64_t nn_init_fan_in(const ag_tensor *t);
/* kaiming_uniform_(t, a, mode='fan_in', nonlinearity='leaky_relu'):
 * bound = sqrt(3) * sqrt(2 / (1 + a^2)) / sqrt(fan_in), t ~ U[-bound, bound). */
void nn_init_kaiming_uniform(ag_tensor *t, double a, ag_rng *rng);

/* ---- Conv2d ------------------------------------------------------------------------ */

typedef struct nn_conv2d {
    nn_module base;
    ag_tensor *weight; /* (out, in/groups, kH, kW) */
    ag_tensor *bias;   /* (out) or NULL */
    ag_conv2d_args args;
    int32_t in_channels, out_channels, kernel[2];
} nn_conv2d;

/* Conv2d(in, out, kernel_size, stride, padding, dilation, groups, bias) with square
 * kernel, stride, padding and dilation. */
nn_module *nn_conv2d_new(int32_t in_channels, int32_t out_channels, int32_t kernel_size,
                         int32_t stride, int32_t padding, int32_t dilation, int32_t groups,
                         bool bias, ag_rng *rng);
/* The general form: kernel[2] = (kH, kW) and per-axis args. */
nn_module *nn_conv2d_new_args(int32_t in_channels, int32_t out_channels,
                              const int32_t kernel[2], const ag_conv2d_args *args, bool bias,
                              ag_rng *rng);

/* ---- Linear ------------------------------------------------------------------------ */

typedef struct nn_linear {
    nn_module base;
    ag_tensor *weight; /* (out, in) */
    ag_tensor *bias;   /* (out) or NULL */
    int32_t in_features, out_features;
} nn_linear;

nn_module *nn_linear_new(int32_t in_features, int32_t out_features, bool bias, ag_rng *rng);

/* ---- BatchNorm2d, BatchNorm1d ------------------------------------------------------ */

/* One struct for both; the type name ("BatchNorm2d" or "BatchNorm1d") tells them apart.
 * Training forward: normalise with batch statistics, update running_mean/var in place
 * (momentum) and add 1 to num_batches_tracked; eval forward uses the running stats. */
typedef struct nn_batch_norm {
    nn_module base;
    ag_tensor *weight, *bias;              /* (C) parameters */
    ag_tensor *running_mean, *running_var; /* (C) buffers */
    ag_tensor *num_batches_tracked;        /* AG_I64, shape [] */
    int32_t num_features;
    float eps;      /* 1e-5 */
    float momentum; /* 0.1 */
} nn_batch_norm;

nn_module *nn_batch_norm2d_new(int32_t num_features); /* input (N, C, H, W) */
nn_module *nn_batch_norm1d_new(int32_t num_features); /* input (N, C) or (N, C, L) */

/* ---- activations (no state) --------------------------------------------------------- */

nn_module *nn_relu_new(void);
nn_module *nn_relu6_new(void);
nn_module *nn_hardswish_new(void);
nn_module *nn_sigmoid_new(void);
nn_module *nn_tanh_new(void);

typedef struct nn_leaky_relu {
    nn_module base;
    float negative_slope; /* 0.01 in PyTorch */
} nn_leaky_relu;

nn_module *nn_leaky_relu_new(float negative_slope);

/* ---- pooling ------------------------------------------------------------------------ */

typedef struct nn_pool2d {
    nn_module base;
    ag_pool2d_args args;
} nn_pool2d;

/* MaxPool2d(kernel, stride, padding) and AvgPool2d(kernel, stride, padding), square;
 * stride 0 means stride = kernel (PyTorch's stride=None). AvgPool2d counts the padding
 * in the divisor (count_include_pad=True, PyTorch's default). */
nn_module *nn_max_pool2d_new(int32_t kernel_size, int32_t stride, int32_t padding);
nn_module *nn_avg_pool2d_new(int32_t kernel_size, int32_t stride, int32_t padding);
/* The general forms (rectangular, count_include_pad as given). */
nn_module *nn_max_pool2d_new_args(const ag_pool2d_args *args);
nn_module *nn_avg_pool2d_new_args(const ag_pool2d_args *args);

typedef struct nn_adaptive_avg_pool2d {
    nn_module base;
    int32_t out_h, out_w;
} nn_adaptive_avg_pool2d;

nn_module *nn_adaptive_avg_pool2d_new(int32_t out_h, int32_t out_w);

/* ---- shape, regularisation, plumbing ------------------------------------------------ */

typedef struct nn_flatten {
    nn_module base;
    int32_t start_dim; /* 1 in PyTorch; end_dim is always -1 */
} nn_flatten;

nn_module *nn_flatten_new(int32_t start_dim);

/* Inverted dropout with probability p in [0, 1]; active only in training mode, drawing
 * its mask from ag_ctx_rng(ctx). */
typedef struct nn_dropout {
    nn_module base;
    float p;
} nn_dropout;

nn_module *nn_dropout_new(float p);

nn_module *nn_identity_new(void); /* returns its input */

/* Sequential: children "0", "1", ... run in order by nn_forward (so each child's hooks
 * and trace run). A post-process hook on the Sequential itself is applied once, after
 * the last child, not run as a stage. */
nn_module *nn_sequential_new(void);
/* Appends `child` under the next index, taking ownership (freed on failure; a NULL
 * child is an error that keeps the constructor's message). */
ag_status nn_sequential_append(nn_module *seq, nn_module *child);
/* A Sequential of mods[0..n), taking ownership of all of them. If any is NULL (its
 * constructor failed: its message is kept) or memory runs out, every module given is
 * freed and NULL is returned, so constructors can be written inline. */
nn_module *nn_sequential_from(nn_module *const *mods, int32_t n);

/* ---- quantization plumbing ----------------------------------------------------------- */

/* QuantStub and DeQuantStub are identities in float; qat/ attaches observers to them
 * and convert turns them into quantize / dequantize. */
nn_module *nn_quant_stub_new(void);
nn_module *nn_dequant_stub_new(void);

/* FloatFunctional: the module that stands for a functional op (add, mul, cat) so that
 * QAT can observe its output. It has no one-input forward; call the functions below.
 * As in PyTorch it is born with an Identity child named "activation_post_process"
 * (its post-process hook); qat/prepare replaces that child with an observer, e.g.
 * nn_module_replace(root, "skip.activation_post_process", observer). Each call
 * computes the op, applies the hook and reports (module, inputs, output) to the trace.
 * Inputs may be NULL (the result is then NULL, as with ops). */
typedef enum nn_ff_op {
    NN_FF_NONE = 0, /* not called yet */
    NN_FF_ADD,
    NN_FF_ADD_RELU,
    NN_FF_MUL,
    NN_FF_CAT,
} nn_ff_op;

typedef struct nn_float_functional {
    nn_module base;
    nn_ff_op last_op;  /* the op of the latest call (convert reads it while tracing) */
    int32_t last_dim;  /* cat's dim */
} nn_float_functional;

nn_module *nn_float_functional_new(void);
/* The op of m's latest call and, for cat, its dim (may be NULL). */
nn_ff_op nn_ff_last_op(const nn_module *m, int32_t *cat_dim);
ag_tensor *nn_ff_add(nn_module *m, ag_ctx *ctx, ag_tensor *a, ag_tensor *b);
ag_tensor *nn_ff_add_relu(nn_module *m, ag_ctx *ctx, ag_tensor *a,
                          ag_tensor *b); /* relu(a + b) */
ag_tensor *nn_ff_mul(nn_module *m, ag_ctx *ctx, ag_tensor *a, ag_tensor *b);
ag_tensor *nn_ff_cat(nn_module *m, ag_ctx *ctx, ag_tensor *const *xs, int32_t n, int32_t dim);

#endif
