/* activation.c — elementwise activations and their gradients.
 *
 * Forward formulas are PyTorch's CPU kernels (aten/src/ATen/native/cpu/Activation.cpp,
 * UnaryOpsKernel.cpp); backward formulas are the ones tools/autograd/derivatives.yaml
 * names (threshold_backward, hardtanh_backward, clamp_backward, ...), written in the
 * same order of operations. Each op is one pass; the piecewise loops are written so
 * that -O3 turns them into compare + blend (no float arithmetic inside a branch, which
 * GCC will not vectorise under -ftrapping-math), `omp simd` vouches that the pointers
 * do not alias, and OpenMP splits large tensors. sigmoid and tanh call libm per
 * element; hardswish's backward is left scalar.
 */
#include "autograd/ag_impl.h"

#include <math.h>

/* Below this many elements a pass is faster on one thread than on a woken team. */
enum { ACT_PAR_ELEMS = 1 << 16 };

/* ip[0] of a HARDTANH node: which gradient rule at the bounds (see ag_clamp). */
enum { RULE_HARDTANH = 0, RULE_CLAMP = 1 };

/* Records y = op(x) with its float parameters; returns y, or NULL on OOM. */
static ag_tensor *record_unary(ag_ctx *ctx, ag_op op, ag_tensor *x, ag_tensor *y, float p0,
                               float p1, int64_t rule)
{
    ag_node *n = ag_op_record(ctx, op, y, &x, 1);
    if (n && ag_op_recorded(n, y)) {
        n->fp[0] = p0;
        n->fp[1] = p1;
        n->ip[0] = rule;
    }
    return ag_op_recorded(n, y);
}

/* ---- relu ---- */

ag_tensor *ag_relu(ag_ctx *ctx, ag_tensor *x)
{
    if (!x)
        return NULL;
    ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape);
    if (!y)
        return NULL;
    const float *xd = x->data;
    float *yd = y->data;
    int64_t n = x->numel;
    /* torch.relu is clamp_min(x, 0): NaN stays NaN */
#pragma omp parallel for if (n > ACT_PAR_ELEMS) schedule(static)
    for (int64_t i0 = 0; i0 < n; i0 += AG_LINE_FLOATS) {
        int64_t end = i0 + AG_LINE_FLOATS < n ? i0 + AG_LINE_FLOATS : n;
        if (i0 + AG_PREFETCH_AHEAD < n)
            ag_prefetch_store(yd + i0 + AG_PREFETCH_AHEAD);
#pragma omp simd
        for (int64_t i = i0; i < end; i++)
            yd[i] = xd[i] < 0.0f ? 0.0f : xd[i];
    }
    return record_unary(ctx, AG_OP_RELU, x, y, 0.0f, 0.0f, 0);
}

/* threshold_backward(grad, result, 0): zero where the output is <= 0 (so at x = 0 too),
 * the gradient elsewhere (a NaN output passes it). */
void ag_relu_backward(ag_ctx *ctx, ag_node *n)
{
    bool fresh;
    float *dx = ag_grad_write(ctx, n->src[0], &fresh);
    if (!dx)
        return;
    const float *y = n->out->data, *dy = n->out->grad;
    int64_t len = n->out->numel;
    if (fresh) { /* dx is not in cache: stored a line at a time, fetched ahead */
#pragma omp parallel for if (len > ACT_PAR_ELEMS) schedule(static)
        for (int64_t i0 = 0; i0 < len; i0 += AG_LINE_FLOATS) {
            int64_t end = i0 + AG_LINE_FLOATS < len ? i0 + AG_LINE_FLOATS : len;
            if (i0 + AG_PREFETCH_AHEAD < len)
                ag_prefetch_store(dx + i0 + AG_PREFETCH_AHEAD);
#pragma omp simd
            for (int64_t i = i0; i < end; i++) {
                float g = dy[i]; /* loaded unconditionally so the select vectorises */
                dx[i] = y[i] <= 0.0f ? 0.0f : g;
            }
        }
        return;
    }
#pragma omp parallel for simd if (len > ACT_PAR_ELEMS) schedule(static)
    for (int64_t i = 0; i < len; i++) {
        float g = dy[i];
        dx[i] += y[i] <= 0.0f ? 0.0f : g;
    }
}

/* ---- hardtanh, relu6, clamp ---- */

/* clamp(x, lo, hi) = min(max(x, lo), hi), NaN propagating; with lo > hi every value
 * becomes hi, as in PyTorch. */
static ag_tensor *clamp_forward(ag_ctx *ctx, ag_tensor *x, float lo, float hi, int64_t rule)
{
    if (!x)
        return NULL;
    ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape);
    if (!y)
        return NULL;
    const float *xd = x->data;
    float *yd = y->data;
    int64_t n = x->numel;
#pragma omp parallel for simd if (n > ACT_PAR_ELEMS) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float v = xd[i] < lo ? lo : xd[i];
        yd[i] = v > hi ? hi : v;
    }
    return record_unary(ctx, AG_OP_HARDTANH, x, y, lo, hi, rule);
}

/* F.hardtanh is clamp in the forward pass; its backward differs (see below). */
ag_tensor *ag_hardtanh(ag_ctx *ctx, ag_tensor *x, float min_val, float max_val)
{
    return clamp_forward(ctx, x, min_val, max_val, RULE_HARDTANH);
}

/* F.relu6 is hardtanh(x, 0, 6), gradient rule included. */
ag_tensor *ag_relu6(ag_ctx *ctx, ag_tensor *x)
{
    return clamp_forward(ctx, x, 0.0f, 6.0f, RULE_HARDTANH);
}

/* torch.clamp: the same values as hardtanh, recorded as a HARDTANH node whose ip[0]
 * selects clamp's gradient rule. */
ag_tensor *ag_clamp(ag_ctx *ctx, ag_tensor *x, float min_val, float max_val)
{
    return clamp_forward(ctx, x, min_val, max_val, RULE_CLAMP);
}

/* hardtanh_backward passes the gradient strictly inside (lo, hi); clamp_backward
 * (FunctionsManual.cpp) passes it on the closed [lo, hi]. A NaN input gets 0 under
 * both (PyTorch's vectorised hardtanh_backward, which is what most elements take). */
void ag_hardtanh_backward(ag_ctx *ctx, ag_node *n)
{
    float *dx = ag_grad(ctx, n->src[0]);
    if (!dx)
        return;
    const float *x = n->src[0]->data, *dy = n->out->grad;
    const float lo = n->fp[0], hi = n->fp[1];
    int64_t len = n->out->numel;
    if (n->ip[0] == RULE_CLAMP) {
#pragma omp parallel for simd if (len > ACT_PAR_ELEMS) schedule(static)
        for (int64_t i = 0; i < len; i++) {
            float v = x[i], g = dy[i];
            dx[i] += v >= lo && v <= hi ? g : 0.0f;
        }
    } else {
#pragma omp parallel for simd if (len > ACT_PAR_ELEMS) schedule(static)
        for (int64_t i = 0; i < len; i++) {
            float v = x[i], g = dy[i];
            dx[i] += v > lo && v < hi ? g : 0.0f;
        }
    }
}

/* ---- leaky_relu ---- */

ag_tensor *ag_leaky_relu(ag_ctx *ctx, ag_tensor *x, float negative_slope)
{
    if (!x)
        return NULL;
    ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape);
    if (!y)
        return NULL;
    const float *xd = x->data;
    float *yd = y->data;
    int64_t n = x->numel;
    /* leaky_relu_kernel: x > 0 ? x : x * slope. Written as x * {slope, 1}[x > 0]: the
     * multiply is unconditional (x * 1 is exact), and GCC, which will not vectorise
     * a float multiply inside a branch under -ftrapping-math, keeps the lookup a blend. */
    const float factor[2] = {negative_slope, 1.0f};
#pragma omp parallel for simd if (n > ACT_PAR_ELEMS) schedule(static)
    for (int64_t i = 0; i < n; i++)
        yd[i] = xd[i] * factor[xd[i] > 0.0f];
    return record_unary(ctx, AG_OP_LEAKY_RELU, x, y, negative_slope, 0.0f, 0);
}

/* leaky_relu_backward: x > 0 ? g : g * slope (the slope at x = 0 too). */
void ag_leaky_relu_backward(ag_ctx *ctx, ag_node *n)
{
    float *dx = ag_grad(ctx, n->src[0]);
    if (!dx)
        return;
    const float *x = n->src[0]->data, *dy = n->out->grad;
    const float factor[2] = {n->fp[0], 1.0f}; /* g * {slope, 1}[x > 0], as forward */
    int64_t len = n->out->numel;
#pragma omp parallel for simd if (len > ACT_PAR_ELEMS) schedule(static)
    for (int64_t i = 0; i < len; i++)
        dx[i] += dy[i] * factor[x[i] > 0.0f];
}

/* ---- sigmoid, tanh ---- */

ag_tensor *ag_sigmoid(ag_ctx *ctx, ag_tensor *x)
{
    if (!x)
        return NULL;
    ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape);
    if (!y)
        return NULL;
    const float *xd = x->data;
    float *yd = y->data;
    int64_t n = x->numel;
    /* PyTorch's sigmoid_kernel, 1 / (1 + exp(-x)). It is safe for any |x|: for
     * x < -88 exp(-x) overflows to inf and the result is exactly 0, for large x it is
     * exactly 1; never NaN. */
#pragma omp parallel for if (n > ACT_PAR_ELEMS / 8) schedule(static)
    for (int64_t i = 0; i < n; i++)
        yd[i] = 1.0f / (1.0f + expf(-xd[i]));
    return record_unary(ctx, AG_OP_SIGMOID, x, y, 0.0f, 0.0f, 0);
}

/* sigmoid_backward(grad, y) = grad * (1 - y) * y */
void ag_sigmoid_backward(ag_ctx *ctx, ag_node *n)
{
    float *dx = ag_grad(ctx, n->src[0]);
    if (!dx)
        return;
    const float *y = n->out->data, *dy = n->out->grad;
    int64_t len = n->out->numel;
#pragma omp parallel for simd if (len > ACT_PAR_ELEMS) schedule(static)
    for (int64_t i = 0; i < len; i++)
        dx[i] += dy[i] * (1.0f - y[i]) * y[i];
}

ag_tensor *ag_tanh(ag_ctx *ctx, ag_tensor *x)
{
    if (!x)
        return NULL;
    ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape);
    if (!y)
        return NULL;
    const float *xd = x->data;
    float *yd = y->data;
    int64_t n = x->numel;
#pragma omp parallel for if (n > ACT_PAR_ELEMS / 8) schedule(static)
    for (int64_t i = 0; i < n; i++)
        yd[i] = tanhf(xd[i]);
    return record_unary(ctx, AG_OP_TANH, x, y, 0.0f, 0.0f, 0);
}

/* tanh_backward(grad, y) = grad * (1 - y * y) */
void ag_tanh_backward(ag_ctx *ctx, ag_node *n)
{
    float *dx = ag_grad(ctx, n->src[0]);
    if (!dx)
        return;
    const float *y = n->out->data, *dy = n->out->grad;
    int64_t len = n->out->numel;
#pragma omp parallel for simd if (len > ACT_PAR_ELEMS) schedule(static)
    for (int64_t i = 0; i < len; i++)
        dx[i] += dy[i] * (1.0f - y[i] * y[i]);
}

/* ---- hardswish ---- */

ag_tensor *ag_hardswish(ag_ctx *ctx, ag_tensor *x)
{
    if (!x)
        return NULL;
    ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape);
    if (!y)
        return NULL;
    const float *xd = x->data;
    float *yd = y->data;
    int64_t n = x->numel;
    /* hardswish_kernel: x * min(max(x + 3, 0), 6) / 6 */
#pragma omp parallel for simd if (n > ACT_PAR_ELEMS) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float r = xd[i] + 3.0f;
        r = r < 0.0f ? 0.0f : r;
        r = r > 6.0f ? 6.0f : r;
        yd[i] = xd[i] * r / 6.0f;
    }
    return record_unary(ctx, AG_OP_HARDSWISH, x, y, 0.0f, 0.0f, 0);
}

/* hardswish_backward: x < -3 -> 0, x <= 3 -> g * (x / 3 + 0.5), else g. (PyTorch's
 * scalar rule; its vectorised path already gives g at exactly x = 3.) */
void ag_hardswish_backward(ag_ctx *ctx, ag_node *n)
{
    float *dx = ag_grad(ctx, n->src[0]);
    if (!dx)
        return;
    const float *x = n->src[0]->data, *dy = n->out->grad;
    int64_t len = n->out->numel;
#pragma omp parallel for if (len > ACT_PAR_ELEMS) schedule(static)
    for (int64_t i = 0; i < len; i++) {
        float v = x[i], g = dy[i];
        float inner = v <= 3.0f ? g * (v / 3.0f + 0.5f) : g;
        dx[i] += v < -3.0f ? 0.0f : inner;
    }
}
