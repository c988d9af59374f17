/* ag_impl.h — what an op needs to be written: the tape node, the registry, and the
 * helpers that make outputs, record nodes and accumulate gradients.
 *
 * The shape of every op (see autograd/ops/activation.c for a short one):
 *
 *     ag_tensor *ag_relu(ag_ctx *ctx, ag_tensor *x) {
 *         if (!x) return NULL;                                 // errors propagate
 *         ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape); // arena, NULL on OOM
 *         if (!y) return NULL;
 *         ...compute y->data from x->data...
 *         ag_node *n = ag_op_record(ctx, AG_OP_RELU, y, (ag_tensor *[]){x}, 1);
 *         return ag_op_recorded(n, y);                         // y, or NULL on OOM
 *     }
 *     void ag_relu_backward(ag_ctx *ctx, ag_node *n) {
 *         float *dx = ag_grad(ctx, n->src[0]);       // NULL if x needs no gradient
 *         if (dx) for (...) dx[i] += ...n->out->grad[i]...;
 *     }
 *
 * (The hot ops use ag_grad_write instead, which spares the zeroing when they are the
 * first to contribute to a gradient; see there.)
 *
 * ag_op_record() returns NULL both when nothing needs recording (no_grad, or no input
 * requires a gradient) and on OOM; ag_op_recorded() tells the two apart.
 */
#ifndef CQAT_AG_IMPL_H
#define CQAT_AG_IMPL_H

#include "autograd/ag.h"

#include <string.h>

typedef enum ag_op {
#define AG_OP(ENUM, name) AG_OP_##ENUM,
#include "autograd/ops.def"
#undef AG_OP
    AG_OP_COUNT
} ag_op;

enum { AG_MAX_SRC = 4, AG_MAX_IPARAMS = 16, AG_MAX_FPARAMS = 8 };

/* Backward of a CUSTOM node (used by qat/ for fake quant and friends, whose code may
 * not live in autograd/). */
typedef void (*ag_custom_backward_fn)(ag_ctx *ctx, ag_node *n);

struct ag_node {
    ag_op op;
    ag_tensor *out;
    ag_tensor *src[AG_MAX_SRC];
    int32_t n_src;
    int64_t ip[AG_MAX_IPARAMS];  /* integer parameters (stride, dims, ...) */
    float fp[AG_MAX_FPARAMS];    /* float parameters (slope, eps, ...) */
    void *saved;                 /* forward->backward scratch, in the arena */
    const void *extra;           /* borrowed pointer (labels, ...) valid for the step */
    ag_custom_backward_fn custom_backward;
};

typedef void (*ag_backward_fn)(ag_ctx *ctx, ag_node *n);

/* Registry (registry.c). */
extern const char *const ag_op_names[];
extern const ag_backward_fn ag_op_backward[];

#define AG_OP(ENUM, name) void ag_##name##_backward(ag_ctx *ctx, ag_node *n);
#include "autograd/ops.def"
#undef AG_OP

/* A fresh arena output tensor (data uninitialised); NULL + AG_ERR_NOMEM on OOM. */
ag_tensor *ag_op_output(ag_ctx *ctx, int32_t ndim, const int64_t *shape);
/* Records a node producing `out` from src[0..n_src) if grad mode is on and some source
 * requires a gradient (then `out` requires one too). See the header comment. */
ag_node *ag_op_record(ag_ctx *ctx, ag_op op, ag_tensor *out, ag_tensor *const *src,
                      int32_t n_src);
/* After ag_op_record: returns out, or NULL if recording was needed but failed (OOM). */
ag_tensor *ag_op_recorded(const ag_node *n, ag_tensor *out);
bool ag_op_needs_record(const ag_ctx *ctx, ag_tensor *const *src, int32_t n_src);

/* The gradient buffer of t, allocated and zeroed on first use (arena for activations,
 * heap for heap tensors), or NULL if t does not require a gradient. Backward code
 * only ever adds into it. */
float *ag_grad(ag_ctx *ctx, ag_tensor *t);
/* ag_grad for a backward that can write its contribution instead of adding it, which
 * saves zeroing the buffer and reading it back. Sets *fresh to true when t had no
 * gradient yet: the buffer is then new and NOT zeroed, and the caller must store (=)
 * every one of its t->numel values before anything else reads it. Otherwise *fresh is
 * false and the caller adds (+=) as with ag_grad: another consumer of t got there
 * first, or t is a heap tensor (a parameter, whose gradient sums over backward calls
 * until ag_tensor_zero_grad). Either way the first contribution to an activation
 * gradient is written and later ones added, so the sum is the same as with ag_grad
 * (up to the sign of a zero).
 *
 *     bool fresh;
 *     float *dx = ag_grad_write(ctx, n->src[0], &fresh);
 *     if (dx && fresh) for (...) dx[i] = ...;
 *     else if (dx)     for (...) dx[i] += ...;
 *
 * An op asking for two sources' gradients (which may be one tensor: add(x, x)) must
 * store each value of the first before the second adds into it. Debug and sanitizer
 * builds fill fresh buffers with NaN, so a value left unwritten shows in gradchecks. */
float *ag_grad_write(ag_ctx *ctx, ag_tensor *t, bool *fresh);
/* grad(t) += g[0..n); asserts n == t->numel (the gradient shape check). */
void ag_grad_acc(ag_ctx *ctx, ag_tensor *t, const float *g, int64_t n);

/* Stores into a buffer that is not in cache (a fresh gradient, an op's new output)
 * each wait for their cache line to be fetched; the hardware prefetchers of the AMD
 * CPUs cqat is measured on follow loads, not stores. Asking for the line a few lines
 * ahead of the store made such a loop 25% faster there (3 MB buffers; plain prefetch,
 * prefetchw did no better). An elementwise loop over a large output runs in blocks of
 * AG_LINE_FLOATS and calls ag_prefetch_store(y + i + AG_PREFETCH_AHEAD) once a block;
 * the hint never faults, but the address is kept inside the buffer all the same. */
enum { AG_LINE_FLOATS = 16, AG_PREFETCH_AHEAD = 4 * AG_LINE_FLOATS };

static inline void ag_prefetch_store(const float *p)
{
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p, 1, 3);
#else
    (void)p;
#endif
}

/* The same for a line that will be read: for short rows a stride apart (a sample's
 * plane of one channel), which the hardware prefetcher has to learn anew each time. */
static inline void ag_prefetch_load(const float *p)
{
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p, 0, 3);
#else
    (void)p;
#endif
}

/* Shape-error helper: "op: what [shape of a] ... [shape of b]". */
ag_status ag_shape_error2(const char *op, const char *what, const ag_tensor *a,
                          const ag_tensor *b);

#endif
