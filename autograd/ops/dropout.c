/* dropout.c — inverted dropout, as F.dropout (PyTorch's _dropout_impl on the CPU):
 *
 *     y = x * keep / (1 - p),   keep ~ Bernoulli(1 - p) per element
 *     dx += g * keep / (1 - p)
 *
 * The mask is drawn from the caller's rng, exactly one ag_rng_uniform per element in
 * memory order, and an element is dropped when u < p. So a given seed gives the same
 * mask on every machine and thread count, and the stream advances by numel draws
 * whenever dropout is active (also at p == 1, where every u < 1 drops everything and
 * y = x * 0, as PyTorch). Inactive dropout (eval, p == 0, an empty tensor) returns x
 * itself, records nothing and draws nothing.
 *
 * The keep mask (one byte per element, arena) is saved for backward; the scale
 * 1 / (1 - p) is computed in float as PyTorch's noise.div_(1 - p).
 */
#include "autograd/ag_impl.h"

ag_tensor *ag_dropout(ag_ctx *ctx, ag_tensor *x, float p, bool training, ag_rng *rng)
{
    if (!x)
        return NULL;
    if (!(p >= 0.0f && p <= 1.0f)) {
        ag_error(AG_ERR_ARG, "dropout: probability has to be between 0 and 1, but got %g",
                 (double)p);
        return NULL;
    }
    if (!training || p == 0.0f || x->numel == 0)
        return x;
    if (!rng) {
        ag_error(AG_ERR_ARG, "dropout: rng is NULL in training mode");
        return NULL;
    }
    ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape);
    if (!y)
        return NULL;
    const bool record = ag_op_needs_record(ctx, (ag_tensor *[]){x}, 1);
    uint8_t *keep = record ? ag_ctx_alloc(ctx, (size_t)x->numel) : NULL; // x's shape
    if (record && !keep)
        return NULL;
    const float scale = p < 1.0f ? 1.0f / (float)(1.0 - (double)p) : 0.0f;
    /* Sequential: the draws must come in element order. */
    for (int64_t i = 0; i < x->numel; i++) {
        const bool k = ag_rng_uniform(rng) >= p;
        y->data[i] = x->data[i] * (k ? scale : 0.0f);
        if (keep)
            keep[i] = k;
    }
    ag_node *n = ag_op_record(ctx, AG_OP_DROPOUT, y, (ag_tensor *[]){x}, 1);
    if (n && ag_op_recorded(n, y)) {
        n->saved = keep;
        n->fp[0] = scale;
    }
    return ag_op_recorded(n, y);
}

void ag_dropout_backward(ag_ctx *ctx, ag_node *n)
{
    float *dx = ag_grad(ctx, n->src[0]);
    if (!dx)
        return;
    const uint8_t *keep = n->saved;
    const float *g = n->out->grad;
    const float scale = n->fp[0];
    const int64_t numel = n->out->numel;
#pragma omp parallel for schedule(static) if (numel > 32768)
    for (int64_t i = 0; i < numel; i++)
        dx[i] += g[i] * (keep[i] ? scale : 0.0f);
}
