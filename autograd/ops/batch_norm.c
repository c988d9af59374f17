/* batch_norm.c — batch normalisation over dim 1 of (N, C, *), as F.batch_norm.
 *
 * Per channel c, over its M = N * H * W values (PyTorch's batch_norm_cpu_template):
 *     training: mean = sum(x) / M,  var = sum((x - mean)^2) / M   (biased)
 *               running_mean = (1 - m) running_mean + m mean
 *               running_var  = (1 - m) running_var  + m var M / (M - 1)   (unbiased)
 *     eval:     mean, var = running_mean, running_var (left alone)
 *     y = (x - mean) invstd w + b,   invstd = 1 / sqrt(var + eps)
 * computed as y = x alpha + beta with alpha = invstd w, beta = b - mean alpha.
 *
 * Backward (batch_norm_backward_cpu_template), with dotp = sum(g (x - mean)):
 *     training: dx = (g - sum(g) / M - (x - mean) dotp invstd^2 / M) invstd w
 *     eval:     dx = g invstd w
 *     dw += dotp invstd,  db += sum(g)
 * Without affine parameters w = 1, b = 0.
 *
 * Statistics are accumulated around a shift (the channel's first value), so one pass
 * gives the variance without the cancellation of sum(x^2) - M mean^2; float lanes
 * within a row, double across rows (sums2).
 * The mean and invstd used are saved (arena) for backward. Channels run in parallel.
 */
#include "autograd/ag_impl.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

enum { BN_PARALLEL_MIN = 32768 }; /* elements below which threads cost more than they save */

/* x viewed as (n, c, inner): channel c of sample i starts at (i * c + ch) * inner. */
typedef struct bn_dims {
    int64_t n, c, inner;
} bn_dims;

/* Index of node parameters. */
enum { BN_IP_N, BN_IP_C, BN_IP_INNER, BN_IP_TRAINING };

static int64_t bn_count(bn_dims d)
{
    return d.n * d.inner;
}

static const float *bn_row(const float *base, bn_dims d, int64_t i, int64_t ch)
{
    return base + (i * d.c + ch) * d.inner;
}

/* The row a channel pass visits after row i of channel ch: row i + 1, or the next
 * channel's first (a thread takes consecutive channels); NULL after the last.
 * A row is a short stream (196-784 floats in refcnn) a whole sample apart from the
 * next, which the hardware prefetcher learns anew each time, so each pass asks for
 * the next row's lines while it works on this one (ag_prefetch_load, _store). */
static const float *bn_next_row(const float *base, bn_dims d, int64_t i, int64_t ch)
{
    if (i + 1 < d.n)
        return bn_row(base, d, i + 1, ch);
    return ch + 1 < d.c ? bn_row(base, d, 0, ch + 1) : NULL;
}

/* Sixteen float lanes as one value (a GCC/Clang vector: SSE registers in four, wider
 * ones where the compiler may use them); lane-wise arithmetic, so sums taken in lanes
 * add up in a fixed order whatever the instruction set. */
typedef float bn_lanes __attribute__((vector_size(64)));
enum { BN_LANES = 16 };

/* sum(a - ka) and sum((a - ka)(b - kb)) over one row of n values, added to *sa, *sab.
 * Within the row, sixteen float lanes; across rows, double. A row is one sample's
 * plane, a few hundred values, so each lane adds a few dozen terms and rounds about as
 * well as double would; summing every value in double (PyTorch's accumulate type) cost
 * 3-4x more, and BN was 15% of refcnn's training step. */
static void sums2(const float *a, const float *b, float ka, float kb, int64_t n,
                  const float *next_a, const float *next_b, double *sa, double *sab)
{
    bn_lanes s = {0}, p = {0};
    int64_t i = 0;
    for (; i + BN_LANES <= n; i += BN_LANES) {
        if (next_a) // the rows to come (see bn_next_row); next_b may be next_a
            ag_prefetch_load(next_a + i);
        if (next_b && next_b != next_a)
            ag_prefetch_load(next_b + i);
        bn_lanes va, vb; // unaligned loads
        memcpy(&va, a + i, sizeof va);
        memcpy(&vb, b + i, sizeof vb);
        bn_lanes u = va - ka;
        s += u;
        p += u * (vb - kb);
    }
    double ts = 0.0, tp = 0.0;
    for (; i < n; i++) {
        float u = a[i] - ka;
        ts += u;
        tp += (double)u * (b[i] - kb);
    }
    for (int l = 0; l < BN_LANES; l++) {
        ts += s[l];
        tp += p[l];
    }
    *sa += ts;
    *sab += tp;
}

/* Batch mean and biased variance of channel ch (0 and 0 for an empty batch, whose
 * output is empty and whose running stats are left alone, as PyTorch). */
static void channel_stats(const float *x, bn_dims d, int64_t ch, double *mean, double *var)
{
    *mean = *var = 0.0;
    if (bn_count(d) == 0)
        return;
    const float shift = bn_row(x, d, 0, ch)[0]; // sums of x - shift: the spread's size
    double s = 0.0, s2 = 0.0;
    for (int64_t i = 0; i < d.n; i++) {
        const float *row = bn_row(x, d, i, ch), *next = bn_next_row(x, d, i, ch);
        sums2(row, row, shift, shift, d.inner, next, next, &s, &s2);
    }
    const double m = (double)bn_count(d);
    *mean = shift + s / m;
    *var = fmax((s2 - s * s / m) / m, 0.0);
}

static void channel_normalise(const float *x, float *y, bn_dims d, int64_t ch, float alpha,
                              float beta)
{
    for (int64_t i = 0; i < d.n; i++) {
        const float *src = bn_row(x, d, i, ch), *next = bn_next_row(x, d, i, ch);
        float *dst = y + (src - x);
        for (int64_t k0 = 0; k0 < d.inner; k0 += AG_LINE_FLOATS) {
            int64_t end = k0 + AG_LINE_FLOATS < d.inner ? k0 + AG_LINE_FLOATS : d.inner;
            if (next) // y is new: its next row is fetched for the stores to come
                ag_prefetch_store(y + (next - x) + k0);
            for (int64_t k = k0; k < end; k++)
                dst[k] = src[k] * alpha + beta;
        }
    }
}

static bool vector_fits(const char *name, const ag_tensor *v, const ag_tensor *x)
{
    if (!v || v->numel == x->shape[1])
        return true;
    char sx[AG_SHAPE_STR_MAX], sv[AG_SHAPE_STR_MAX];
    ag_error(AG_ERR_SHAPE,
             "batch_norm: input %s has %" PRId64 " channels, %s %s has %" PRId64 " values",
             ag_shape_str(x, sx, sizeof sx), x->shape[1], name, ag_shape_str(v, sv, sizeof sv),
             v->numel);
    return false;
}

static bool bn_args_valid(const ag_tensor *x, const ag_tensor *weight, const ag_tensor *bias,
                          const ag_tensor *running_mean, const ag_tensor *running_var,
                          const ag_batch_norm_args *args)
{
    char sx[AG_SHAPE_STR_MAX];
    if (!args) {
        ag_error(AG_ERR_ARG, "batch_norm: args is NULL");
        return false;
    }
    if (x->ndim < 2) {
        ag_error(AG_ERR_SHAPE, "batch_norm: input %s must be [N, C, ...] (2 dims or more)",
                 ag_shape_str(x, sx, sizeof sx));
        return false;
    }
    if (!vector_fits("weight", weight, x) || !vector_fits("bias", bias, x) ||
        !vector_fits("running_mean", running_mean, x) ||
        !vector_fits("running_var", running_var, x))
        return false;
    if (!running_mean != !running_var) {
        ag_error(AG_ERR_ARG, "batch_norm: running_mean and running_var must both be given or "
                             "both be NULL");
        return false;
    }
    if (!args->training && !running_mean) {
        ag_error(AG_ERR_ARG, "batch_norm: eval mode needs running_mean and running_var");
        return false;
    }
    const int64_t count = x->shape[0] * ag_shape_numel(x->ndim - 2, x->shape + 2);
    if (args->training && count == 1) {
        ag_error(AG_ERR_ARG,
                 "batch_norm: Expected more than 1 value per channel when training, got "
                 "input size %s",
                 ag_shape_str(x, sx, sizeof sx));
        return false;
    }
    return true;
}

/* Fills mean[c], invstd[c] (floats saved for backward) and y, and updates the running
 * stats in training mode. */
static void bn_forward(const ag_tensor *x, const ag_tensor *weight, const ag_tensor *bias,
                       ag_tensor *running_mean, ag_tensor *running_var,
                       const ag_batch_norm_args *args, bn_dims d, float *mean, float *invstd,
                       float *y)
{
    const double momentum = args->momentum, eps = args->eps;
    const int64_t count = bn_count(d);
#pragma omp parallel for schedule(static) if (x->numel > BN_PARALLEL_MIN)
    for (int64_t ch = 0; ch < d.c; ch++) {
        double mu, var;
        if (args->training) {
            channel_stats(x->data, d, ch, &mu, &var);
            if (running_mean && count > 0) {
                const double unbiased = var * (double)count / (double)(count - 1);
                running_mean->data[ch] =
                    (float)(momentum * mu + (1.0 - momentum) * running_mean->data[ch]);
                running_var->data[ch] =
                    (float)(momentum * unbiased + (1.0 - momentum) * running_var->data[ch]);
            }
        } else {
            mu = running_mean->data[ch];
            var = running_var->data[ch];
        }
        const double is = 1.0 / sqrt(var + eps);
        const double w = weight ? weight->data[ch] : 1.0;
        const double b = bias ? bias->data[ch] : 0.0;
        mean[ch] = (float)mu;
        invstd[ch] = (float)is;
        channel_normalise(x->data, y, d, ch, (float)(is * w), (float)(b - mu * is * w));
    }
}

ag_tensor *ag_batch_norm(ag_ctx *ctx, ag_tensor *x, ag_tensor *weight, ag_tensor *bias,
                         ag_tensor *running_mean, ag_tensor *running_var,
                         const ag_batch_norm_args *args)
{
    if (!x)
        return NULL;
    if (!bn_args_valid(x, weight, bias, running_mean, running_var, args))
        return NULL;
    const bn_dims d = {x->shape[0], x->shape[1], ag_shape_numel(x->ndim - 2, x->shape + 2)};
    ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape);
    float *saved = ag_ctx_alloc(ctx, (size_t)(2 * d.c) * sizeof(float)); // (2, C)
    if (!y || !saved)
        return NULL;
    float *mean = saved, *invstd = saved + d.c;
    bn_forward(x, weight, bias, running_mean, running_var, args, d, mean, invstd, y->data);

    ag_node *n = ag_op_record(ctx, AG_OP_BATCH_NORM, y, (ag_tensor *[]){x, weight, bias}, 3);
    if (n && ag_op_recorded(n, y)) {
        n->saved = saved;
        n->ip[BN_IP_N] = d.n;
        n->ip[BN_IP_C] = d.c;
        n->ip[BN_IP_INNER] = d.inner;
        n->ip[BN_IP_TRAINING] = args->training;
    }
    return ag_op_recorded(n, y);
}

/* dx for channel ch, stored (fresh) or added; k = dotp invstd^2 / M and
 * grad_mean = sum(g) / M in training. */
static void channel_dx(const float *x, const float *g, float *dx, bool fresh, bn_dims d,
                       int64_t ch, bool training, float mu, float k, float grad_mean,
                       float scale)
{
    for (int64_t i = 0; i < d.n; i++) {
        const int64_t off = bn_row(x, d, i, ch) - x;
        const float *xr = x + off, *gr = g + off, *next = bn_next_row(x, d, i, ch);
        float *dr = dx + off;
        if (training && fresh) /* dx is new: its next row is fetched for the stores */
            for (int64_t j0 = 0; j0 < d.inner; j0 += AG_LINE_FLOATS) {
                int64_t end = j0 + AG_LINE_FLOATS < d.inner ? j0 + AG_LINE_FLOATS : d.inner;
                if (next)
                    ag_prefetch_store(dx + (next - x) + j0);
                for (int64_t j = j0; j < end; j++)
                    dr[j] = (gr[j] - grad_mean - (xr[j] - mu) * k) * scale;
            }
        else if (training)
            for (int64_t j = 0; j < d.inner; j++)
                dr[j] += (gr[j] - grad_mean - (xr[j] - mu) * k) * scale;
        else if (fresh)
            for (int64_t j = 0; j < d.inner; j++)
                dr[j] = gr[j] * scale;
        else
            for (int64_t j = 0; j < d.inner; j++)
                dr[j] += gr[j] * scale;
    }
}

void ag_batch_norm_backward(ag_ctx *ctx, ag_node *n)
{
    const bn_dims d = {n->ip[BN_IP_N], n->ip[BN_IP_C], n->ip[BN_IP_INNER]};
    const bool training = n->ip[BN_IP_TRAINING] != 0;
    const ag_tensor *x = n->src[0], *weight = n->src[1];
    const float *g = n->out->grad, *mean = n->saved, *invstd = mean + d.c;
    bool fresh;
    float *dx = ag_grad_write(ctx, n->src[0], &fresh);
    float *dw = ag_grad(ctx, n->src[1]);
    float *db = ag_grad(ctx, n->src[2]);
    const bool need_sums = dw || db || (dx && training);
    const double m = (double)bn_count(d);
#pragma omp parallel for schedule(static) if (x->numel > BN_PARALLEL_MIN)
    for (int64_t ch = 0; ch < d.c; ch++) {
        double sum_g = 0.0, dotp = 0.0; /* sum(g), sum(g (x - mean)) */
        for (int64_t i = 0; need_sums && i < d.n; i++)
            sums2(bn_row(g, d, i, ch), bn_row(x->data, d, i, ch), 0.0f, mean[ch], d.inner,
                  bn_next_row(g, d, i, ch), bn_next_row(x->data, d, i, ch), &sum_g, &dotp);
        const double is = invstd[ch];
        if (dw)
            dw[ch] += (float)(dotp * is);
        if (db)
            db[ch] += (float)sum_g;
        if (!dx)
            continue;
        const double w = weight ? weight->data[ch] : 1.0;
        const float k = m > 0 ? (float)(dotp * is * is / m) : 0.0f;
        const float grad_mean = m > 0 ? (float)(sum_g / m) : 0.0f;
        channel_dx(x->data, g, dx, fresh, d, ch, training, mean[ch], k, grad_mean,
                   (float)(is * w));
    }
}
