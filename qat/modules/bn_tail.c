/* bn_tail.c — the tail of the approximate ConvBn forward as one op with one backward:
 *     z   = conv / s[c] (+ bias[c])          s = bn.weight / running_std, as conv_fused.py
 *     out = bn(z)                            batch statistics in training, running in eval
 *     out = relu(out)                        ConvBnReLU2d only
 * The same float operations as the op chain ag_div -> ag_add -> ag_batch_norm -> ag_relu
 * (per element: one divide, one add, one multiply-add with the channel's alpha, beta),
 * the same statistics (shifted sums, float lanes within a row, double across rows),
 * and the same backward formulas; only the passes over memory are fewer (the chain
 * made five tensors and walked them eleven times in a training step).
 *
 * Gradients (PyTorch's autograd of the chain, summed per channel):
 *     g      = dout (out > 0)                                        relu
 *     dbeta  = sum(g),  dgamma_bn = sum(g (z - mean)) invstd          batch_norm
 *     dz     = (g - sum(g) / M - (z - mean) sum(g (z - mean)) invstd^2 / M) invstd gamma
 *              (eval: g invstd gamma)
 *     dconv  = dz / s,  dbias = sum(dz)                                div, add
 *     ds     = -sum(dz conv) / (s s),  dgamma += ds / running_std     div, s = gamma / std
 * The gradient of s through the scaled weight (W * s) is the graph's own business. */
#include "qat/modules/modules_impl.h"

#include "autograd/ag_impl.h"

#include <math.h>
#include <omp.h>

enum { TAIL_PARALLEL_MIN = 32768 }; /* elements below which threads cost more */

/* Node parameters. */
enum { TP_N, TP_C, TP_INNER, TP_TRAINING, TP_RELU, TP_BIAS };

/* The per-channel values forward keeps for backward, and z itself. */
typedef struct tail_saved {
    float *z;      // (N, C, H, W): conv / s + bias, BN's input
    float *s;      // (C) gamma / running_std
    float *std;    // (C) running_std
    float *mean;   // (C) the mean BN used
    float *invstd; // (C)
    float *alpha, *beta; // (C) out = z alpha + beta before the relu
    float *rows;   // (threads, H * W): backward's g / dz row of each thread
    int threads;
} tail_saved;

typedef struct tail_dims {
    int64_t n, c, inner;
} tail_dims;

static int64_t row_off(tail_dims d, int64_t i, int64_t ch)
{
    return (i * d.c + ch) * d.inner;
}

/* Eight float lanes within a row (two SSE-wide vectors: wider GCC vectors end up on the
 * stack), eight double lanes across rows, added up once per channel: the statistics of
 * the batch_norm op (float within a row, double across rows) without an eight-step
 * double reduction per row, which cost more than the row's own sums for a 14x14 plane. */
typedef float tail_f4 __attribute__((vector_size(16)));
typedef double tail_d4 __attribute__((vector_size(32)));
enum { TAIL_LANES = 8 };

typedef struct lane_sums {
    tail_d4 a[2], ab[2]; // sum(a - ka), sum((a - ka)(b - kb)), lanes 0-3 and 4-7
} lane_sums;

static tail_f4 load4(const float *p)
{
    tail_f4 v; // unaligned load
    memcpy(&v, p, sizeof v);
    return v;
}

static void sums2(const float *a, const float *b, float ka, float kb, int64_t n,
                  lane_sums *acc)
{
    tail_f4 s0 = {0}, s1 = {0}, p0 = {0}, p1 = {0};
    int64_t i = 0;
    for (; i + TAIL_LANES <= n; i += TAIL_LANES) {
        tail_f4 u0 = load4(a + i) - ka, u1 = load4(a + i + 4) - ka;
        s0 += u0;
        s1 += u1;
        p0 += u0 * (load4(b + i) - kb);
        p1 += u1 * (load4(b + i + 4) - kb);
    }
    float ts = 0.0f, tp = 0.0f; /* the rest, into lane 0 */
    for (; i < n; i++) {
        float u = a[i] - ka;
        ts += u;
        tp += u * (b[i] - kb);
    }
    s0[0] += ts;
    p0[0] += tp;
    acc->a[0] += __builtin_convertvector(s0, tail_d4);
    acc->a[1] += __builtin_convertvector(s1, tail_d4);
    acc->ab[0] += __builtin_convertvector(p0, tail_d4);
    acc->ab[1] += __builtin_convertvector(p1, tail_d4);
}

static double lanes_total(const tail_d4 v[2])
{
    double t = 0.0;
    for (int l = 0; l < 4; l++)
        t += v[0][l];
    for (int l = 0; l < 4; l++)
        t += v[1][l];
    return t;
}

/* ---- forward ------------------------------------------------------------------------ */

/* z of channel ch (all rows) and its batch mean and biased variance. */
static void channel_z(const float *conv, float *z, tail_dims d, int64_t ch, float s,
                      const float *bias, double *mean, double *var)
{
    for (int64_t i = 0; i < d.n; i++) {
        const float *src = conv + row_off(d, i, ch);
        float *dst = z + row_off(d, i, ch);
        if (bias) {
            const float b = bias[ch];
            for (int64_t k = 0; k < d.inner; k++)
                dst[k] = src[k] / s + b;
        } else {
            for (int64_t k = 0; k < d.inner; k++)
                dst[k] = src[k] / s;
        }
    }
    const float shift = z[row_off(d, 0, ch)]; // sums of z - shift: the spread's size
    lane_sums acc = {{{0}}, {{0}}};
    for (int64_t i = 0; i < d.n; i++) {
        const float *row = z + row_off(d, i, ch);
        sums2(row, row, shift, shift, d.inner, &acc);
    }
    const double sum = lanes_total(acc.a), sum2 = lanes_total(acc.ab);
    const double m = (double)(d.n * d.inner);
    *mean = shift + sum / m;
    *var = fmax((sum2 - sum * sum / m) / m, 0.0);
}

static void channel_out(const float *z, float *out, tail_dims d, int64_t ch, float alpha,
                        float beta, bool relu)
{
    for (int64_t i = 0; i < d.n; i++) {
        const float *src = z + row_off(d, i, ch);
        float *dst = out + row_off(d, i, ch);
        for (int64_t k = 0; k < d.inner; k++) {
            float v = src[k] * alpha + beta;
            dst[k] = relu && v < 0.0f ? 0.0f : v; /* clamp_min: NaN stays NaN */
        }
    }
}

/* One channel: z, the statistics (running ones updated in training), out. */
static void tail_channel(const float *conv, tail_saved *sv, float *out, nn_batch_norm *bn,
                         const float *bias, tail_dims d, int64_t ch, bool training, bool relu)
{
    const double momentum = bn->momentum, m = (double)(d.n * d.inner);
    float *rm = bn->running_mean->data, *rv = bn->running_var->data;
    double mu = rm[ch], var = rv[ch];
    sv->std[ch] = sqrtf(rv[ch] + bn->eps); // torch.sqrt(running_var + eps), before the update
    sv->s[ch] = bn->weight->data[ch] / sv->std[ch];
    if (training) {
        channel_z(conv, sv->z, d, ch, sv->s[ch], bias, &mu, &var);
        const double unbiased = var * m / (m - 1.0);
        rm[ch] = (float)(momentum * mu + (1.0 - momentum) * rm[ch]);
        rv[ch] = (float)(momentum * unbiased + (1.0 - momentum) * rv[ch]);
    } else {
        double unused_mean, unused_var;
        channel_z(conv, sv->z, d, ch, sv->s[ch], bias, &unused_mean, &unused_var);
    }
    const double is = 1.0 / sqrt(var + (double)bn->eps);
    const double w = bn->weight->data[ch], b = bn->bias->data[ch];
    sv->mean[ch] = (float)mu;
    sv->invstd[ch] = (float)is;
    sv->alpha[ch] = (float)(is * w);
    sv->beta[ch] = (float)(b - mu * is * w);
    channel_out(sv->z, out, d, ch, sv->alpha[ch], sv->beta[ch], relu);
}

static void tail_backward(ag_ctx *ctx, ag_node *n);

bool qat_bn_tail_applies(ag_ctx *ctx, const ag_tensor *conv, const nn_batch_norm *bn)
{
    if (!conv || conv->ndim != 4 || !bn->weight || !bn->bias || !bn->running_mean ||
        !bn->running_var || bn->base.post || conv->shape[1] != bn->num_features)
        return false;
    const int64_t count = conv->shape[0] * conv->shape[2] * conv->shape[3];
    if (count < 2) /* batch_norm's own checks and messages */
        return false;
    /* Only where a gradient is recorded: the no-grad paths (eval, convert's tracing)
     * keep the module-by-module chain, whose BN reports to nn_trace. */
    return ag_op_needs_record(ctx, (ag_tensor *[]){(ag_tensor *)conv, bn->weight, bn->bias},
                              3);
}

static tail_saved *tail_saved_new(ag_ctx *ctx, tail_dims d)
{
    const int threads = omp_get_max_threads();
    tail_saved *sv = ag_ctx_alloc(ctx, sizeof *sv);
    float *chan = ag_ctx_alloc(ctx, (size_t)(6 * d.c) * sizeof(float)); // (6, C)
    float *z = ag_ctx_alloc(ctx, (size_t)(d.n * d.c * d.inner) * sizeof(float));
    float *rows = ag_ctx_alloc(ctx, (size_t)(threads * d.inner) * sizeof(float));
    if (!sv || !chan || !z || !rows)
        return NULL;
    *sv = (tail_saved){z,           chan,          chan + d.c, chan + 2 * d.c, chan + 3 * d.c,
                       chan + 4 * d.c, chan + 5 * d.c, rows,      threads};
    return sv;
}

ag_tensor *qat_bn_tail(ag_ctx *ctx, ag_tensor *conv, ag_tensor *bias, nn_batch_norm *bn,
                       bool relu)
{
    const tail_dims d = {conv->shape[0], conv->shape[1], conv->shape[2] * conv->shape[3]};
    const bool training = bn->base.training;
    ag_tensor *out = ag_op_output(ctx, conv->ndim, conv->shape);
    tail_saved *sv = tail_saved_new(ctx, d);
    if (!out || !sv)
        return NULL;
    const float *b = bias ? bias->data : NULL;
#pragma omp parallel for schedule(static) if (conv->numel > TAIL_PARALLEL_MIN)
    for (int64_t ch = 0; ch < d.c; ch++)
        tail_channel(conv->data, sv, out->data, bn, b, d, ch, training, relu);
    if (training)
        *(int64_t *)(void *)bn->num_batches_tracked->data += 1;

    ag_tensor *src[4] = {conv, bn->weight, bn->bias, bias};
    ag_node *n = ag_op_record(ctx, AG_OP_CUSTOM, out, src, bias ? 4 : 3);
    if (n && ag_op_recorded(n, out)) {
        n->custom_backward = tail_backward;
        n->saved = sv;
        n->ip[TP_N] = d.n;
        n->ip[TP_C] = d.c;
        n->ip[TP_INNER] = d.inner;
        n->ip[TP_TRAINING] = training;
        n->ip[TP_RELU] = relu;
        n->ip[TP_BIAS] = bias != NULL;
    }
    return ag_op_recorded(n, out);
}

/* ---- backward ----------------------------------------------------------------------- */

/* The incoming gradient of one row, through the relu's mask (threshold_backward: zero
 * where out <= 0) into g. out is recomputed from z, the same float ops as forward, so
 * that backward reads one tensor less. */
static const float *row_grad(const float *dout, const float *z, float alpha, float beta,
                             float *g, int64_t len, bool relu)
{
    if (!relu)
        return dout;
    for (int64_t k = 0; k < len; k++) {
        float v = dout[k]; /* loaded unconditionally so the select vectorises */
        g[k] = z[k] * alpha + beta <= 0.0f ? 0.0f : v;
    }
    return g;
}

typedef struct tail_grads {
    float *dconv, *dgamma, *dbeta, *dbias;
} tail_grads;

/* sum(g) and sum(g (z - mean)) of channel ch; g through the relu mask. */
static void channel_sums(const ag_node *n, tail_dims d, int64_t ch, float *g, double *sum_g,
                         double *dotp)
{
    const tail_saved *sv = n->saved;
    const bool relu = n->ip[TP_RELU] != 0;
    lane_sums acc = {{{0}}, {{0}}};
    for (int64_t i = 0; i < d.n; i++) {
        const int64_t off = row_off(d, i, ch);
        const float *gr = row_grad(n->out->grad + off, sv->z + off, sv->alpha[ch],
                                   sv->beta[ch], g, d.inner, relu);
        sums2(gr, sv->z + off, 0.0f, sv->mean[ch], d.inner, &acc);
    }
    *sum_g = lanes_total(acc.a);
    *dotp = lanes_total(acc.ab);
}

/* dconv += dz / s over channel ch; returns sum(dz) and sum(dz conv) for bias and s. */
static void channel_dconv(const ag_node *n, tail_dims d, int64_t ch, float *g, float k,
                          float grad_mean, float scale, float *dconv, double *sum_dz,
                          double *sum_dz_conv)
{
    const tail_saved *sv = n->saved;
    const bool relu = n->ip[TP_RELU] != 0, training = n->ip[TP_TRAINING] != 0;
    const float mu = sv->mean[ch], inv_s = 1.0f / sv->s[ch]; /* within an ulp of dz / s */
    const float *conv = n->src[0]->data;
    lane_sums acc = {{{0}}, {{0}}};
    for (int64_t i = 0; i < d.n; i++) {
        const int64_t off = row_off(d, i, ch);
        const float *gr = row_grad(n->out->grad + off, sv->z + off, sv->alpha[ch],
                                   sv->beta[ch], g, d.inner, relu);
        const float *zr = sv->z + off, *cr = conv + off;
        float *dz = g; /* g's row is read before dz overwrites it, element by element */
        if (training)
            for (int64_t j = 0; j < d.inner; j++)
                dz[j] = (gr[j] - grad_mean - (zr[j] - mu) * k) * scale;
        else
            for (int64_t j = 0; j < d.inner; j++)
                dz[j] = gr[j] * scale;
        if (dconv)
            for (int64_t j = 0; j < d.inner; j++)
                dconv[off + j] += dz[j] * inv_s;
        sums2(dz, cr, 0.0f, 0.0f, d.inner, &acc);
    }
    *sum_dz = lanes_total(acc.a);
    *sum_dz_conv = lanes_total(acc.ab);
}

static void tail_channel_backward(const ag_node *n, tail_dims d, int64_t ch, float *g,
                                  const tail_grads *gr)
{
    const tail_saved *sv = n->saved;
    const bool training = n->ip[TP_TRAINING] != 0;
    const double m = (double)(d.n * d.inner), is = sv->invstd[ch];
    double sum_g, dotp;
    channel_sums(n, d, ch, g, &sum_g, &dotp);
    if (gr->dbeta)
        gr->dbeta[ch] += (float)sum_g;
    const double w = n->src[1]->data[ch];
    const float k = (float)(dotp * is * is / m), grad_mean = (float)(sum_g / m);
    double sum_dz = 0.0, sum_dz_conv = 0.0;
    channel_dconv(n, d, ch, g, training ? k : 0.0f, training ? grad_mean : 0.0f,
                  (float)(is * w), gr->dconv, &sum_dz, &sum_dz_conv);
    if (gr->dbias)
        gr->dbias[ch] += (float)sum_dz;
    if (gr->dgamma) {
        const float s = sv->s[ch];
        const float ds = -(float)sum_dz_conv / (s * s);
        gr->dgamma[ch] += (float)(dotp * is) + ds / sv->std[ch];
    }
}

static void tail_backward(ag_ctx *ctx, ag_node *n)
{
    const tail_dims d = {n->ip[TP_N], n->ip[TP_C], n->ip[TP_INNER]};
    const tail_grads gr = {ag_grad(ctx, n->src[0]), ag_grad(ctx, n->src[1]),
                           ag_grad(ctx, n->src[2]),
                           n->ip[TP_BIAS] ? ag_grad(ctx, n->src[3]) : NULL};
    const tail_saved *sv = n->saved;
    const int64_t numel = d.n * d.c * d.inner;
#pragma omp parallel num_threads(sv->threads) if (numel > TAIL_PARALLEL_MIN)
    {
        float *g = sv->rows + omp_get_thread_num() * d.inner; // (H * W)
#pragma omp for schedule(static)
        for (int64_t ch = 0; ch < d.c; ch++)
            tail_channel_backward(n, d, ch, g, &gr);
    }
}
