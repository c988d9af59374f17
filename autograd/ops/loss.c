/* loss.c — log_softmax over the last dim and the losses, as PyTorch with
 * reduction='mean':
 *
 *   log_softmax(x)[c] = x[c] - lse,   lse = max + log(sum_k exp(x[k] - max))
 *       backward: dx += g - exp(y) sum(g)            (_log_softmax_backward_data)
 *   nll_loss(logp, y) = mean_i(-logp[i, y_i])
 *       backward: dlogp[i, y_i] -= g / N
 *   cross_entropy(x, y, eps) = mean_i((1 - eps)(lse_i - x[i, y_i])
 *                                     + eps/C sum_c(lse_i - x[i, c]))
 *       F.cross_entropy with label_smoothing=eps, fused rather than log_softmax + nll:
 *       backward: dx += g / N (softmax(x) - q),  q = (1 - eps) onehot(y) + eps / C
 *   mse_loss(a, b) = mean((a - b)^2)
 *       backward: da += 2 / numel (a - b) g,  db -= the same
 *
 * Sums are taken in double and in a fixed order (per-row or per-chunk partials added up
 * serially), so a loss does not depend on the thread count. An empty batch gives NaN
 * (0 / 0), as PyTorch. Labels are borrowed for the call only: the ops that need them in
 * backward keep a copy in the arena. PyTorch's ignore_index (-100) is not supported:
 * every label must lie in [0, C).
 */
#include "autograd/ag_impl.h"

#include <inttypes.h>
#include <math.h>

enum { LOSS_PARALLEL_MIN = 32768, MSE_CHUNK = 8192 };

typedef struct ce_saved {
    int32_t *labels; // (N)
    float *prob;     // (N, C) softmax of the logits
} ce_saved;

static bool is_matrix(const char *op, const ag_tensor *x)
{
    if (x->ndim == 2)
        return true;
    char s[AG_SHAPE_STR_MAX];
    ag_error(AG_ERR_SHAPE, "%s: input %s must be [N, C]", op, ag_shape_str(x, s, sizeof s));
    return false;
}

static bool labels_valid(const char *op, const ag_tensor *x, const int32_t *labels)
{
    const int64_t n = x->shape[0], c = x->shape[1];
    if (!labels && n > 0) {
        ag_error(AG_ERR_ARG, "%s: labels is NULL", op);
        return false;
    }
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] >= 0 && labels[i] < c)
            continue;
        char s[AG_SHAPE_STR_MAX];
        ag_error(AG_ERR_ARG,
                 "%s: sample %" PRId64 " has label %" PRId32 ", outside [0, %" PRId64
                 ") for input %s",
                 op, i, labels[i], c, ag_shape_str(x, s, sizeof s));
        return false;
    }
    return true;
}

static int32_t *labels_copy(ag_ctx *ctx, const int32_t *labels, int64_t n)
{
    int32_t *copy = ag_ctx_alloc(ctx, (size_t)n * sizeof *copy); // (N)
    if (copy && n > 0)
        memcpy(copy, labels, (size_t)n * sizeof *copy);
    return copy;
}

/* log(sum_k exp(x[k])) of one row of c values, shifted by the row max so that exp never
 * overflows (logits of 1e4 stay finite); also softmax(x) into prob unless it is NULL. */
static double row_logsumexp(const float *x, int64_t c, float *prob)
{
    float mx = -INFINITY;
    for (int64_t k = 0; k < c; k++)
        mx = x[k] > mx ? x[k] : mx;
    double s = 0.0;
    for (int64_t k = 0; k < c; k++) {
        const float e = expf(x[k] - mx);
        s += e;
        if (prob)
            prob[k] = e;
    }
    if (prob) {
        const float inv = (float)(1.0 / s);
        for (int64_t k = 0; k < c; k++)
            prob[k] *= inv;
    }
    return (double)mx + log(s);
}

/* ---- log_softmax ---- */

ag_tensor *ag_log_softmax(ag_ctx *ctx, ag_tensor *x)
{
    if (!x)
        return NULL;
    if (x->ndim < 1) {
        ag_error(AG_ERR_SHAPE, "log_softmax: input has no dims (need at least [C])");
        return NULL;
    }
    const int64_t c = x->shape[x->ndim - 1], rows = c ? x->numel / c : 0;
    ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape);
    if (!y)
        return NULL;
#pragma omp parallel for schedule(static) if (x->numel > LOSS_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x->data + r * c;
        float *yr = y->data + r * c;
        const float lse = (float)row_logsumexp(xr, c, NULL);
        for (int64_t k = 0; k < c; k++)
            yr[k] = xr[k] - lse;
    }
    ag_node *n = ag_op_record(ctx, AG_OP_LOG_SOFTMAX, y, (ag_tensor *[]){x}, 1);
    return ag_op_recorded(n, y);
}

void ag_log_softmax_backward(ag_ctx *ctx, ag_node *n)
{
    float *dx = ag_grad(ctx, n->src[0]);
    if (!dx)
        return;
    const ag_tensor *y = n->out;
    const int64_t c = y->shape[y->ndim - 1], rows = c ? y->numel / c : 0;
#pragma omp parallel for schedule(static) if (y->numel > LOSS_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *g = y->grad + r * c, *yr = y->data + r * c;
        float *dr = dx + r * c;
        double sum_g = 0.0;
        for (int64_t k = 0; k < c; k++)
            sum_g += g[k];
        const float sg = (float)sum_g;
        for (int64_t k = 0; k < c; k++)
            dr[k] += g[k] - expf(yr[k]) * sg;
    }
}

/* ---- nll_loss ---- */

ag_tensor *ag_nll_loss(ag_ctx *ctx, ag_tensor *logp, const int32_t *labels)
{
    if (!logp)
        return NULL;
    if (!is_matrix("nll_loss", logp) || !labels_valid("nll_loss", logp, labels))
        return NULL;
    const int64_t n = logp->shape[0], c = logp->shape[1];
    ag_tensor *y = ag_op_output(ctx, 1, AG_SHAPE(1));
    if (!y)
        return NULL;
    const bool record = ag_op_needs_record(ctx, (ag_tensor *[]){logp}, 1);
    int32_t *saved = record ? labels_copy(ctx, labels, n) : NULL;
    if (record && !saved)
        return NULL;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s -= logp->data[i * c + labels[i]];
    y->data[0] = (float)(s / (double)n);
    ag_node *node = ag_op_record(ctx, AG_OP_NLL_LOSS, y, (ag_tensor *[]){logp}, 1);
    if (node && ag_op_recorded(node, y))
        node->saved = saved;
    return ag_op_recorded(node, y);
}

void ag_nll_loss_backward(ag_ctx *ctx, ag_node *n)
{
    float *dx = ag_grad(ctx, n->src[0]);
    if (!dx)
        return;
    const int32_t *labels = n->saved;
    const int64_t rows = n->src[0]->shape[0], c = n->src[0]->shape[1];
    const float g = (float)((double)n->out->grad[0] / (double)rows);
    for (int64_t i = 0; i < rows; i++)
        dx[i * c + labels[i]] -= g;
}

/* ---- cross_entropy ---- */

static ce_saved *ce_saved_new(ag_ctx *ctx, const int32_t *labels, int64_t n, int64_t c)
{
    ce_saved *s = ag_ctx_alloc(ctx, sizeof *s);
    if (!s)
        return NULL;
    s->labels = labels_copy(ctx, labels, n);
    s->prob = ag_ctx_alloc(ctx, (size_t)(n * c) * sizeof(float)); // (N, C)
    return s->labels && s->prob ? s : NULL;
}

/* loss_i = (1 - eps)(lse - x[y]) + eps (lse - mean_c x[c]); the smoothing term is left
 * out entirely at eps == 0 so that an infinite logit gives PyTorch's inf, not NaN. */
static double ce_row(const float *x, int64_t c, int32_t label, double eps, float *prob)
{
    const double lse = row_logsumexp(x, c, prob);
    double loss = (1.0 - eps) * (lse - x[label]);
    if (eps > 0.0) {
        double sum_x = 0.0;
        for (int64_t k = 0; k < c; k++)
            sum_x += x[k];
        loss += eps * (lse - sum_x / (double)c);
    }
    return loss;
}

ag_tensor *ag_cross_entropy(ag_ctx *ctx, ag_tensor *logits, const int32_t *labels,
                            float label_smoothing)
{
    if (!logits)
        return NULL;
    if (!is_matrix("cross_entropy", logits) || !labels_valid("cross_entropy", logits, labels))
        return NULL;
    if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f)) {
        ag_error(AG_ERR_ARG,
                 "cross_entropy: label_smoothing must be between 0.0 and 1.0, got %g",
                 (double)label_smoothing);
        return NULL;
    }
    const int64_t n = logits->shape[0], c = logits->shape[1];
    ag_tensor *y = ag_op_output(ctx, 1, AG_SHAPE(1));
    double *row_loss = ag_ctx_alloc(ctx, (size_t)n * sizeof(double)); // (N)
    if (!y || !row_loss)
        return NULL;
    const bool record = ag_op_needs_record(ctx, (ag_tensor *[]){logits}, 1);
    ce_saved *saved = record ? ce_saved_new(ctx, labels, n, c) : NULL;
    if (record && !saved)
        return NULL;
#pragma omp parallel for schedule(static) if (logits->numel > LOSS_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        row_loss[i] = ce_row(logits->data + i * c, c, labels[i], label_smoothing,
                             saved ? saved->prob + i * c : NULL);
    double total = 0.0;
    for (int64_t i = 0; i < n; i++)
        total += row_loss[i];
    y->data[0] = (float)(total / (double)n);
    ag_node *node = ag_op_record(ctx, AG_OP_CROSS_ENTROPY, y, (ag_tensor *[]){logits}, 1);
    if (node && ag_op_recorded(node, y)) {
        node->saved = saved;
        node->fp[0] = label_smoothing;
    }
    return ag_op_recorded(node, y);
}

void ag_cross_entropy_backward(ag_ctx *ctx, ag_node *n)
{
    float *dx = ag_grad(ctx, n->src[0]);
    if (!dx)
        return;
    const ce_saved *s = n->saved;
    const ag_tensor *x = n->src[0];
    const int64_t rows = x->shape[0], c = x->shape[1];
    const double eps = n->fp[0];
    const float g = (float)((double)n->out->grad[0] / (double)rows);
    const float off = (float)(eps / (double)c), on = (float)(1.0 - eps);
#pragma omp parallel for schedule(static) if (x->numel > LOSS_PARALLEL_MIN)
    for (int64_t i = 0; i < rows; i++) {
        const float *p = s->prob + i * c;
        float *dr = dx + i * c;
        for (int64_t k = 0; k < c; k++)
            dr[k] += g * (p[k] - off);
        dr[s->labels[i]] -= g * on;
    }
}

/* ---- mse_loss ---- */

/* sum((a - b)^2) in double over fixed chunks, added up in chunk order. */
static bool sum_sq_diff(ag_ctx *ctx, const float *a, const float *b, int64_t n, double *out)
{
    const int64_t chunks = (n + MSE_CHUNK - 1) / MSE_CHUNK;
    double *part = ag_ctx_alloc(ctx, (size_t)chunks * sizeof(double)); // (chunks)
    if (!part)
        return false;
#pragma omp parallel for schedule(static) if (n > LOSS_PARALLEL_MIN)
    for (int64_t ch = 0; ch < chunks; ch++) {
        const int64_t end = ch * MSE_CHUNK + MSE_CHUNK < n ? ch * MSE_CHUNK + MSE_CHUNK : n;
        double s = 0.0;
        for (int64_t i = ch * MSE_CHUNK; i < end; i++) {
            const double d = (double)a[i] - (double)b[i];
            s += d * d;
        }
        part[ch] = s;
    }
    double total = 0.0;
    for (int64_t ch = 0; ch < chunks; ch++)
        total += part[ch];
    *out = total;
    return true;
}

ag_tensor *ag_mse_loss(ag_ctx *ctx, ag_tensor *pred, ag_tensor *target)
{
    if (!pred || !target)
        return NULL;
    if (!ag_shape_equal(pred, target)) {
        ag_shape_error2("mse_loss", "pred and target differ in shape:", pred, target);
        return NULL;
    }
    ag_tensor *y = ag_op_output(ctx, 1, AG_SHAPE(1));
    double s = 0.0;
    if (!y || !sum_sq_diff(ctx, pred->data, target->data, pred->numel, &s))
        return NULL;
    y->data[0] = (float)(s / (double)pred->numel);
    ag_node *n = ag_op_record(ctx, AG_OP_MSE_LOSS, y, (ag_tensor *[]){pred, target}, 2);
    return ag_op_recorded(n, y);
}

void ag_mse_loss_backward(ag_ctx *ctx, ag_node *n)
{
    const ag_tensor *a = n->src[0], *b = n->src[1];
    float *da = ag_grad(ctx, n->src[0]);
    float *db = ag_grad(ctx, n->src[1]);
    const float norm = (float)(2.0 / (double)a->numel), g = n->out->grad[0];
    const int64_t numel = a->numel;
    if (da) {
#pragma omp parallel for schedule(static) if (numel > LOSS_PARALLEL_MIN)
        for (int64_t i = 0; i < numel; i++)
            da[i] += norm * (a->data[i] - b->data[i]) * g;
    }
    if (db) {
#pragma omp parallel for schedule(static) if (numel > LOSS_PARALLEL_MIN)
        for (int64_t i = 0; i < numel; i++)
            db[i] -= norm * (a->data[i] - b->data[i]) * g;
    }
}
