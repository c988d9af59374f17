/* ag.h — cqat's tensors and reverse-mode autograd engine.
 *
 * A tour in five lines:
 *
 *     ag_ctx *ctx = ag_ctx_new();                       // one per training loop
 *     ag_tensor *w = ag_param_new(2, AG_SHAPE(10, 784)); // heap: owned by the caller
 *     ag_tensor *x = ag_ctx_tensor(ctx, 2, AG_SHAPE(64, 784)); // arena: this step only
 *     ag_tensor *loss = ag_cross_entropy(ctx, ag_linear(ctx, x, w, NULL), labels, 0.0f);
 *     ag_backward(ctx, loss);  ...optimizer step...  ag_ctx_reset(ctx);
 *
 * Ops run eagerly (values are there as soon as the call returns, as in PyTorch) and,
 * while grad mode is on and an input requires a gradient, append a node to the
 * context's tape. ag_backward() seeds d(loss)=1 and runs the tape in reverse; every
 * op's backward only *accumulates* (+=) into its inputs' gradients.
 *
 * Memory has two lifetimes and no reference counting:
 *   - parameters and buffers (ag_param_new / ag_tensor_new) live on the heap and are
 *     freed by their owner with ag_tensor_free(); their gradients persist across steps
 *     until ag_tensor_zero_grad();
 *   - everything an op returns, intermediate gradients and the tape live in the
 *     context's arena, released all at once by ag_ctx_reset(). The arena grows on
 *     demand; after the first step it is one block and no op allocates again.
 *
 * Errors: an op given bad shapes returns NULL and sets ag_last_error() ("conv2d:
 * input [64, 3, 28, 28] has 3 channels, weight [16, 1, 3, 3] expects 1"). An op given
 * a NULL input returns NULL without touching the message, so a whole forward pass can
 * be written straight through and checked once at the end.
 *
 * Layout: float32, contiguous, row-major, shape[0] outermost (PyTorch order):
 * activations NCHW, conv weights OIHW, linear weights [out, in].
 */
#ifndef CQAT_AG_H
#define CQAT_AG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "autograd/ag_rng.h"
#include "autograd/ag_status.h"

#define AG_MAX_DIMS 5
/* AG_SHAPE(64, 3, 28, 28) -> a compound-literal int64_t array for shape arguments. */
#define AG_SHAPE(...) ((const int64_t[]){__VA_ARGS__})

typedef enum ag_dtype {
    AG_F32 = 0, /* the only dtype ops compute on */
    AG_I32,     /* storage only: buffers such as zero points, counters, flags */
    AG_I64,
    AG_I8,
    AG_U8,
} ag_dtype;

size_t ag_dtype_size(ag_dtype dtype);
const char *ag_dtype_name(ag_dtype dtype);

enum ag_tensor_flags {
    AG_F_REQUIRES_GRAD = 1u << 0, /* gradients flow into this tensor */
    AG_F_HEAP = 1u << 1,          /* owned by the caller, freed with ag_tensor_free */
    AG_F_VIEW = 1u << 2,          /* data belongs to another tensor (reshape) */
    AG_F_RESIZABLE = 1u << 3,     /* a buffer whose shape follows what is loaded into it
                                     (lazily sized observer statistics, as in PyTorch) */
};

typedef struct ag_node ag_node;

typedef struct ag_tensor {
    ag_dtype dtype;
    int32_t ndim;
    int64_t shape[AG_MAX_DIMS];
    int64_t numel;
    float *data;     /* numel values (for AG_F32; other dtypes cast the pointer) */
    float *grad;     /* numel values or NULL until something accumulates into it */
    uint32_t flags;  /* ag_tensor_flags */
    ag_node *node;   /* the tape node that produced it, or NULL for a leaf */
} ag_tensor;

/* ---- Context: arena + tape + grad mode --------------------------------------- */

typedef struct ag_ctx ag_ctx;

ag_ctx *ag_ctx_new(void);           /* NULL (and last error) if out of memory */
void ag_ctx_free(ag_ctx *ctx);
/* Releases every arena tensor, gradient and tape node made since the last reset.
 * Heap tensors (parameters) and their gradients are untouched. */
void ag_ctx_reset(ag_ctx *ctx);
/* Bytes the arena holds (its capacity) and how many are in use this step. */
size_t ag_ctx_arena_capacity(const ag_ctx *ctx);
size_t ag_ctx_arena_used(const ag_ctx *ctx);
/* Number of nodes on the tape. */
int64_t ag_ctx_tape_len(const ag_ctx *ctx);

/* The context's random generator (dropout and other stochastic ops draw from it). It
 * survives ag_ctx_reset; seeded with (0, 0) at creation. Trainers seed it, and save and
 * restore *ag_ctx_rng(ctx) with their checkpoints so that a resumed run is exact. */
ag_rng *ag_ctx_rng(ag_ctx *ctx);

/* Per-op profile: time per op kind, forward and backward, accumulated over the
 * context's life. On when CQAT_PROFILE is set (and not "0") at ag_ctx_new, or by call. */
void ag_ctx_set_profile(ag_ctx *ctx, bool on);
bool ag_ctx_profile_enabled(const ag_ctx *ctx);
void ag_ctx_profile_print(const ag_ctx *ctx, FILE *f);

/* Grad mode. no_grad scopes nest; inside one, ops record nothing and their outputs
 * do not require gradients (eval, observers, convert). */
void ag_no_grad_begin(ag_ctx *ctx);
void ag_no_grad_end(ag_ctx *ctx);
bool ag_grad_enabled(const ag_ctx *ctx);

/* Runs the tape backward from a one-element tensor, seeding d(loss) = 1. Intermediate
 * gradients are cleared first, so two calls on one tape add exactly twice the
 * gradient into the leaves. */
ag_status ag_backward(ag_ctx *ctx, ag_tensor *loss);

/* ---- Tensors ------------------------------------------------------------------ */

/* Heap tensor, zero-filled, owned by the caller; requires_grad as given. */
ag_tensor *ag_tensor_new(int32_t ndim, const int64_t *shape, bool requires_grad);
/* Heap tensor of another dtype (storage only: buffers such as num_batches_tracked
 * or zero points), zero-filled, never requires a gradient. */
ag_tensor *ag_tensor_new_dtype(ag_dtype dtype, int32_t ndim, const int64_t *shape);
/* A parameter: ag_tensor_new(..., true). */
ag_tensor *ag_param_new(int32_t ndim, const int64_t *shape);
void ag_tensor_free(ag_tensor *t);   /* heap tensors only; NULL is fine */
/* Gives a heap tensor a new shape (data reallocated, zero-filled, gradient dropped).
 * The tensor struct stays the same, so pointers to it remain valid. */
ag_status ag_tensor_resize(ag_tensor *t, int32_t ndim, const int64_t *shape);
void ag_tensor_zero_grad(ag_tensor *t);

/* Arena tensor (uninitialised data), valid until ag_ctx_reset. For inputs. */
ag_tensor *ag_ctx_tensor(ag_ctx *ctx, int32_t ndim, const int64_t *shape);
ag_tensor *ag_ctx_zeros(ag_ctx *ctx, int32_t ndim, const int64_t *shape);
/* Raw arena memory (64-byte aligned), valid until ag_ctx_reset; NULL on OOM. */
void *ag_ctx_alloc(ag_ctx *ctx, size_t bytes);

int64_t ag_shape_numel(int32_t ndim, const int64_t *shape);
bool ag_shape_equal(const ag_tensor *a, const ag_tensor *b);
/* "[64, 3, 28, 28]" into buf; returns buf. */
const char *ag_shape_str(const ag_tensor *t, char *buf, size_t size);
enum { AG_SHAPE_STR_MAX = 96 };

/* ---- Ops ------------------------------------------------------------------------
 * All take the context first, return an arena tensor, or NULL on error.
 */

/* Elementwise binary with NumPy broadcasting (trailing dims aligned; size-1 dims
 * stretch). Covers same shape, a one-element scalar tensor, a bias row [F] over
 * [N, F], and per-channel [1, C, 1, 1] over NCHW (see ag_channels for a [C] vector). */
ag_tensor *ag_add(ag_ctx *ctx, ag_tensor *a, ag_tensor *b);
ag_tensor *ag_sub(ag_ctx *ctx, ag_tensor *a, ag_tensor *b);
ag_tensor *ag_mul(ag_ctx *ctx, ag_tensor *a, ag_tensor *b);
ag_tensor *ag_div(ag_ctx *ctx, ag_tensor *a, ag_tensor *b);
ag_tensor *ag_neg(ag_ctx *ctx, ag_tensor *x);
ag_tensor *ag_scale(ag_ctx *ctx, ag_tensor *x, float alpha);          /* alpha * x */
ag_tensor *ag_add_scalar(ag_ctx *ctx, ag_tensor *x, float c);         /* x + c */

/* Reductions. dims == NULL (n_dims 0) reduces everything to shape [1]. */
ag_tensor *ag_sum(ag_ctx *ctx, ag_tensor *x, const int32_t *dims, int32_t n_dims, bool keepdim);
ag_tensor *ag_mean(ag_ctx *ctx, ag_tensor *x, const int32_t *dims, int32_t n_dims, bool keepdim);

/* Matrix products through cblas_sgemm. matmul: op(a) [M, K] x op(b) [K, N], where
 * op transposes when the flag is set. linear: x [N, in] . w[out, in]^T + b[out]. */
ag_tensor *ag_matmul(ag_ctx *ctx, ag_tensor *a, ag_tensor *b, bool trans_a, bool trans_b);
ag_tensor *ag_linear(ag_ctx *ctx, ag_tensor *x, ag_tensor *w, ag_tensor *b /* or NULL */);

typedef struct ag_conv2d_args {
    int32_t stride[2];   /* h, w */
    int32_t padding[2];  /* zeros added on each side */
    int32_t dilation[2];
    int32_t groups;      /* groups == C_in == C_out: depthwise */
} ag_conv2d_args;
/* x [N, C_in, H, W], w [C_out, C_in/groups, kH, kW], b [C_out] or NULL. */
ag_tensor *ag_conv2d(ag_ctx *ctx, ag_tensor *x, ag_tensor *w, ag_tensor *b,
                     const ag_conv2d_args *args);

typedef struct ag_pool2d_args {
    int32_t kernel[2];
    int32_t stride[2];   /* 0 means = kernel, as PyTorch's default */
    int32_t padding[2];
    bool count_include_pad; /* avg_pool2d only */
    bool ceil_mode;         /* not supported yet: must be false */
} ag_pool2d_args;
ag_tensor *ag_max_pool2d(ag_ctx *ctx, ag_tensor *x, const ag_pool2d_args *args);
ag_tensor *ag_avg_pool2d(ag_ctx *ctx, ag_tensor *x, const ag_pool2d_args *args);
ag_tensor *ag_adaptive_avg_pool2d(ag_ctx *ctx, ag_tensor *x, int32_t out_h, int32_t out_w);

/* Activations. */
ag_tensor *ag_relu(ag_ctx *ctx, ag_tensor *x);
ag_tensor *ag_hardtanh(ag_ctx *ctx, ag_tensor *x, float min_val, float max_val);
ag_tensor *ag_relu6(ag_ctx *ctx, ag_tensor *x);                       /* hardtanh(0, 6) */
ag_tensor *ag_clamp(ag_ctx *ctx, ag_tensor *x, float min_val, float max_val);
ag_tensor *ag_leaky_relu(ag_ctx *ctx, ag_tensor *x, float negative_slope);
ag_tensor *ag_sigmoid(ag_ctx *ctx, ag_tensor *x);
ag_tensor *ag_tanh(ag_ctx *ctx, ag_tensor *x);
ag_tensor *ag_hardswish(ag_ctx *ctx, ag_tensor *x);

/* Shape. reshape is a view (no copy); one dim may be -1. flatten(x, start) keeps
 * dims before `start` and multiplies the rest together (PyTorch's flatten(x, start)).
 * ag_channels views a [C] vector as [1, C, 1, 1] for per-channel broadcasting. */
ag_tensor *ag_reshape(ag_ctx *ctx, ag_tensor *x, int32_t ndim, const int64_t *shape);
ag_tensor *ag_flatten(ag_ctx *ctx, ag_tensor *x, int32_t start_dim);
ag_tensor *ag_channels(ag_ctx *ctx, ag_tensor *v);
ag_tensor *ag_cat(ag_ctx *ctx, ag_tensor *const *xs, int32_t n, int32_t dim);

/* Batch norm over dim 1 of [N, C] or [N, C, H, W]. In training mode it normalises
 * with the batch mean and the biased variance and, if running stats are given,
 * updates them in place: r = (1 - momentum) r + momentum * batch, with the unbiased
 * variance for running_var (as PyTorch). In eval mode it uses the running stats.
 * weight/bias may be NULL (affine=False). */
typedef struct ag_batch_norm_args {
    bool training;
    float momentum;  /* PyTorch default 0.1 */
    float eps;       /* PyTorch default 1e-5 */
} ag_batch_norm_args;
ag_tensor *ag_batch_norm(ag_ctx *ctx, ag_tensor *x, ag_tensor *weight, ag_tensor *bias,
                         ag_tensor *running_mean, ag_tensor *running_var,
                         const ag_batch_norm_args *args);

/* Inverted dropout: zero with probability p, scale the rest by 1/(1-p); identity when
 * !training or p == 0. Draws from rng (one uniform per element, in order). */
ag_tensor *ag_dropout(ag_ctx *ctx, ag_tensor *x, float p, bool training, ag_rng *rng);

/* Losses and softmax over the last dim of [N, C]. Labels are class indices in [0, C).
 * Losses return shape [1] (the mean over the batch). */
ag_tensor *ag_log_softmax(ag_ctx *ctx, ag_tensor *x);
ag_tensor *ag_nll_loss(ag_ctx *ctx, ag_tensor *logp, const int32_t *labels);
ag_tensor *ag_cross_entropy(ag_ctx *ctx, ag_tensor *logits, const int32_t *labels,
                            float label_smoothing);
ag_tensor *ag_mse_loss(ag_ctx *ctx, ag_tensor *pred, ag_tensor *target);

/* ---- Threads -------------------------------------------------------------------- */

/* One knob for OpenMP loops and OpenBLAS: n <= 0 means CQAT_NUM_THREADS from the
 * environment if set, else all cores. Returns the number in force. */
int ag_set_num_threads(int n);
int ag_num_threads(void);

#endif
