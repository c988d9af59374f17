/* bn_tail.c — the tail of the approximate ConvBn forward as one op with one backward:
 *     z   = conv / s[c] (+ bias[c])          s = bn.weight / running_std, as conv_fused.py
 *     out = bn(z)                            batch statistics in training, running in eval
 *     out = relu(out)                        ConvBnReLU2d only
 * The same float operations as the op chain ag_div -> ag_add -> ag_batch_norm -> ag_relu
 * (per element: one divide, one add, one multiply-add with the channel's alpha, beta),
 * the same statistics (shifted sums, float lanes within a row, double across rows),
 * and the same backward formulas; only the passes over memory are fewer (the chain
 * made five tensors and walked them eleven times in a training step). Per channel,
 * forward reads conv twice (statistics, then out) and backward reads dout and conv
 * twice (sums, then dz), recomputing z each time; nothing else is kept.
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

enum { TAIL_PARALLEL_MIN = 32768 }; /* elements below which threads cost more */

/* Node parameters. */
enum { TP_N, TP_C, TP_INNER, TP_TRAINING, TP_RELU, TP_BIAS };

/* The per-channel values forward keeps for backward. z itself is not kept: backward
 * recomputes it from the conv output (which it reads anyway for the gradient of s),
 * with the forward's float ops, so the values are the same; a divide per value costs
 * less than writing z and reading it back twice. */
typedef struct tail_saved {
    float *s;      // (C) gamma / running_std
    float *std;    // (C) running_std
    float *mean;   // (C) the mean BN used
    float *invstd; // (C)
    float *alpha, *beta; // (C) out = z alpha + beta before the relu
} tail_saved;

typedef struct tail_dims {
    int64_t n, c, inner;
} tail_dims;

static int64_t row_off(tail_dims d, int64_t i, int64_t ch)
{
    return (i * d.c + ch) * d.inner;
}

/* Eight float lanes within a row, eight double lanes across rows, added up once per
 * channel: the statistics of the batch_norm op (float within a row, double across rows)
 * without an eight-step double reduction per row, which cost more than the row's own
 * sums for a 14x14 plane. Value k of a row goes to lane k % 8, the row's last n % 8
 * values to lane 0 through a scalar partial sum: the lane sums, and so the results, are
 * the same whatever instruction set compiles the loops.
 *
 * The kernels below are always inlined into two copies of each per-channel function:
 * one built for AVX2 (picked at run time) and one for any x86-64 (GCC's SSE2 code for
 * 8-float vectors). The operations are the same IEEE ones in both (no contraction:
 * -ffp-contract=off), so both give the same bits. */
typedef float tail_f8 __attribute__((vector_size(32)));
typedef int32_t tail_i8 __attribute__((vector_size(32)));
typedef double tail_d8 __attribute__((vector_size(64)));
enum { TAIL_LANES = 8 };
#define TAIL_INLINE static inline __attribute__((always_inline))
/* 8-float vectors passed between always-inlined helpers: no call, so no ABI to warn of */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef struct lane_sums {
    tail_d8 a, ab; // sum(a - ka), sum((a - ka)(b - kb)) per lane
} lane_sums;

TAIL_INLINE tail_f8 load8(const float *p)
{
    tail_f8 v; // unaligned load
    memcpy(&v, p, sizeof v);
    return v;
}

TAIL_INLINE void store8(float *p, tail_f8 v) { memcpy(p, &v, sizeof v); }

/* A row's float lane sums s, p (the scalar rest ts, tp into lane 0) into acc. */
TAIL_INLINE void lanes_add(lane_sums *acc, tail_f8 s, tail_f8 p, float ts, float tp)
{
    s[0] += ts;
    p[0] += tp;
    acc->a += __builtin_convertvector(s, tail_d8);
    acc->ab += __builtin_convertvector(p, tail_d8);
}

TAIL_INLINE double lanes_total(tail_d8 v)
{
    double t = 0.0;
    for (int l = 0; l < TAIL_LANES; l++)
        t += v[l];
    return t;
}

/* relu's mask on a gradient: 0 where z alpha + beta <= 0 (threshold_backward on the
 * recomputed output), else d. */
TAIL_INLINE tail_f8 relu_mask8(tail_f8 d, tail_f8 z, float alpha, float beta)
{
    tail_i8 off = z * alpha + beta <= 0.0f;
    return (tail_f8)((tail_i8)d & ~off);
}

TAIL_INLINE float relu_mask1(float d, float z, float alpha, float beta)
{
    return z * alpha + beta <= 0.0f ? 0.0f : d;
}

/* ---- forward ------------------------------------------------------------------------ */

/* z = conv / s (+ b): conv_fused.py's conv / scale_factor, then + bias */
typedef struct tail_z {
    float s, b;
    bool bias;
} tail_z;

TAIL_INLINE tail_f8 z8(const float *conv, const tail_z *c)
{
    tail_f8 z = load8(conv) / c->s;
    return c->bias ? z + c->b : z;
}

TAIL_INLINE float z1(float conv, const tail_z *c)
{
    return c->bias ? conv / c->s + c->b : conv / c->s;
}

/* The sums of one row of z around shift into acc. */
TAIL_INLINE void row_z_sums(const float *conv, int64_t n, const tail_z *c, float shift,
                            lane_sums *acc)
{
    tail_f8 su = {0}, pu = {0};
    int64_t k = 0;
    for (; k + TAIL_LANES <= n; k += TAIL_LANES) {
        tail_f8 u = z8(conv + k, c) - shift;
        su += u;
        pu += u * u;
    }
    float ts = 0.0f, tp = 0.0f;
    for (; k < n; k++) {
        float u = z1(conv[k], c) - shift;
        ts += u;
        tp += u * u;
    }
    lanes_add(acc, su, pu, ts, tp);
}

/* The batch mean and biased variance of channel ch's z. */
TAIL_INLINE void channel_z_stats(const float *conv, tail_dims d, int64_t ch, const tail_z *c,
                                 double *mean, double *var)
{
    // sums of z - shift (shift = the first z: the spread's size)
    const float shift = z1(conv[row_off(d, 0, ch)], c);
    lane_sums acc = {{0}, {0}};
    for (int64_t i = 0; i < d.n; i++)
        row_z_sums(conv + row_off(d, i, ch), d.inner, c, shift, &acc);
    const double sum = lanes_total(acc.a), sum2 = lanes_total(acc.ab);
    const double m = (double)(d.n * d.inner);
    *mean = shift + sum / m;
    *var = fmax((sum2 - sum * sum / m) / m, 0.0);
}

/* The forward's arguments, shared by every channel. */
typedef struct tail_fwd {
    const float *conv; // (N, C, H, W)
    float *out;        // (N, C, H, W)
    tail_saved *sv;
    nn_batch_norm *bn;
    const float *bias; // (C) or NULL
    tail_dims d;
    bool training, relu;
    float *range; // (3, C): min, max and NaN seen (0 / 1) of each channel's out, or NULL
} tail_fwd;

/* Lane-wise select (C has no ?: on vectors). */
TAIL_INLINE tail_f8 select8(tail_i8 m, tail_f8 a, tail_f8 b)
{
    return (tail_f8)(((tail_i8)a & m) | ((tail_i8)b & ~m));
}

/* out = relu(z alpha + beta) of channel ch; with f->range, its min, max and NaN flag. */
TAIL_INLINE void channel_out(const tail_fwd *f, int64_t ch, const tail_z *c, float alpha,
                             float beta)
{
    tail_f8 lo = {0}, hi = {0};
    lo += INFINITY;
    hi -= INFINITY;
    tail_i8 nan = {0};
    float slo = INFINITY, shi = -INFINITY;
    bool snan = false;
    const int64_t inner = f->d.inner; /* locals: the stores to out may not alias them */
    const bool relu = f->relu;
    for (int64_t i = 0; i < f->d.n; i++) {
        const float *src = f->conv + row_off(f->d, i, ch);
        float *dst = f->out + row_off(f->d, i, ch);
        int64_t k = 0;
        for (; k + TAIL_LANES <= inner; k += TAIL_LANES) {
            tail_f8 v = z8(src + k, c) * alpha + beta;
            if (relu) /* clamp_min: NaN stays NaN */
                v = (tail_f8)((tail_i8)v & ~(v < 0.0f));
            store8(dst + k, v);
            lo = select8(v < lo, v, lo);
            hi = select8(v > hi, v, hi);
            nan |= v != v;
        }
        for (; k < inner; k++) {
            float v = z1(src[k], c) * alpha + beta;
            v = relu && v < 0.0f ? 0.0f : v;
            dst[k] = v;
            slo = v < slo ? v : slo;
            shi = v > shi ? v : shi;
            snan |= v != v;
        }
    }
    if (!f->range)
        return;
    for (int l = 0; l < TAIL_LANES; l++) {
        slo = lo[l] < slo ? lo[l] : slo;
        shi = hi[l] > shi ? hi[l] : shi;
        snan |= nan[l] != 0;
    }
    f->range[ch] = slo;
    f->range[f->d.c + ch] = shi;
    f->range[2 * f->d.c + ch] = snan;
}

/* One channel: the statistics (running ones updated in training), out. */
TAIL_INLINE void tail_channel_body(const tail_fwd *f, int64_t ch)
{
    nn_batch_norm *bn = f->bn;
    tail_saved *sv = f->sv;
    const double momentum = bn->momentum, m = (double)(f->d.n * f->d.inner);
    float *rm = bn->running_mean->data, *rv = bn->running_var->data;
    double mu = rm[ch], var = rv[ch];
    sv->std[ch] = sqrtf(rv[ch] + bn->eps); // torch.sqrt(running_var + eps), before the update
    sv->s[ch] = bn->weight->data[ch] / sv->std[ch];
    const tail_z c = {sv->s[ch], f->bias ? f->bias[ch] : 0.0f, f->bias != NULL};
    if (f->training) {
        channel_z_stats(f->conv, f->d, ch, &c, &mu, &var);
        const double unbiased = var * m / (m - 1.0);
        rm[ch] = (float)(momentum * mu + (1.0 - momentum) * rm[ch]);
        rv[ch] = (float)(momentum * unbiased + (1.0 - momentum) * rv[ch]);
    }
    const double is = 1.0 / sqrt(var + (double)bn->eps);
    const double w = bn->weight->data[ch], b = bn->bias->data[ch];
    sv->mean[ch] = (float)mu;
    sv->invstd[ch] = (float)is;
    sv->alpha[ch] = (float)(is * w);
    sv->beta[ch] = (float)(b - mu * is * w);
    channel_out(f, ch, &c, sv->alpha[ch], sv->beta[ch]);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TAIL_X86 1
__attribute__((target("avx2"))) static void tail_channel_avx2(const tail_fwd *f, int64_t ch)
{
    tail_channel_body(f, ch);
}
#else
#define TAIL_X86 0
#endif

static void tail_channel(const tail_fwd *f, int64_t ch)
{
#if TAIL_X86
    if (__builtin_cpu_supports("avx2")) {
        tail_channel_avx2(f, ch);
        return;
    }
#endif
    tail_channel_body(f, ch);
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
    tail_saved *sv = ag_ctx_alloc(ctx, sizeof *sv);
    float *chan = ag_ctx_alloc(ctx, (size_t)(6 * d.c) * sizeof(float)); // (6, C)
    if (!sv || !chan)
        return NULL;
    *sv = (tail_saved){chan,           chan + d.c,     chan + 2 * d.c,
                       chan + 3 * d.c, chan + 4 * d.c, chan + 5 * d.c};
    return sv;
}

/* The per-channel ranges of out (3, C) into range[0..1]: min and max over the
 * channels, NaN for both if a NaN was seen (what qat_aminmax would say, up to the sign
 * of a zero: min and max are exact in any order). */
static void tail_range_total(const float *cr, int64_t c, float range[2])
{
    float lo = INFINITY, hi = -INFINITY;
    bool nan = false;
    for (int64_t ch = 0; ch < c; ch++) {
        lo = cr[ch] < lo ? cr[ch] : lo;
        hi = cr[c + ch] > hi ? cr[c + ch] : hi;
        nan |= cr[2 * c + ch] != 0.0f;
    }
    range[0] = nan ? NAN : lo;
    range[1] = nan ? NAN : hi;
}

ag_tensor *qat_bn_tail(ag_ctx *ctx, ag_tensor *conv, ag_tensor *bias, nn_batch_norm *bn,
                       bool relu, float range[2])
{
    const tail_dims d = {conv->shape[0], conv->shape[1], conv->shape[2] * conv->shape[3]};
    ag_tensor *out = ag_op_output(ctx, conv->ndim, conv->shape);
    tail_saved *sv = tail_saved_new(ctx, d);
    float *cr = range ? ag_ctx_alloc(ctx, (size_t)(3 * d.c) * sizeof(float)) : NULL; // (3, C)
    if (!out || !sv || (range && !cr))
        return NULL;
    const tail_fwd f = {conv->data, out->data, sv,  bn,  bias ? bias->data : NULL,
                        d,          bn->base.training, relu, cr};
#pragma omp parallel for schedule(static) if (conv->numel > TAIL_PARALLEL_MIN)
    for (int64_t ch = 0; ch < d.c; ch++)
        tail_channel(&f, ch);
    if (f.training)
        *(int64_t *)(void *)bn->num_batches_tracked->data += 1;
    if (range)
        tail_range_total(cr, d.c, range);

    ag_tensor *src[4] = {conv, bn->weight, bn->bias, bias};
    ag_node *n = ag_op_record(ctx, AG_OP_CUSTOM, out, src, bias ? 4 : 3);
    if (n && ag_op_recorded(n, out)) {
        n->custom_backward = tail_backward;
        n->saved = sv;
        n->ip[TP_N] = d.n;
        n->ip[TP_C] = d.c;
        n->ip[TP_INNER] = d.inner;
        n->ip[TP_TRAINING] = f.training;
        n->ip[TP_RELU] = relu;
        n->ip[TP_BIAS] = bias != NULL;
    }
    return ag_op_recorded(n, out);
}

/* ---- backward ----------------------------------------------------------------------- */

/* The incoming gradient goes through the relu's mask (threshold_backward: zero where
 * out <= 0) as g; out is recomputed from z, the same float ops as forward, so that
 * backward reads one tensor less. Two passes per channel, each one loop over the rows:
 * the sums, then dz with dconv and the sums for bias and s. */

typedef struct tail_grads {
    float *dconv, *dgamma, *dbeta, *dbias;
    bool dconv_fresh; /* dconv is written (=), not added to */
} tail_grads;

typedef struct tail_row {
    const float *dout, *conv;
    tail_z z; /* z from conv */
    float alpha, beta;
    bool relu;
} tail_row;

/* sum(g) and sum(g (z - mean)) of one row into acc. */
TAIL_INLINE void row_sums(const tail_row *r, int64_t n, float mean, lane_sums *acc)
{
    tail_f8 s = {0}, p = {0};
    int64_t k = 0;
    for (; k + TAIL_LANES <= n; k += TAIL_LANES) {
        tail_f8 z = z8(r->conv + k, &r->z), g = load8(r->dout + k);
        if (r->relu)
            g = relu_mask8(g, z, r->alpha, r->beta);
        g = g - 0.0f; // the sums' shift of 0 (it turns -0 into -0: no change)
        s += g;
        p += g * (z - mean);
    }
    float ts = 0.0f, tp = 0.0f;
    for (; k < n; k++) {
        float g = r->dout[k], z = z1(r->conv[k], &r->z);
        if (r->relu)
            g = relu_mask1(g, z, r->alpha, r->beta);
        g = g - 0.0f;
        ts += g;
        tp += g * (z - mean);
    }
    lanes_add(acc, s, p, ts, tp);
}

/* The per-channel constants of dz = (g - grad_mean - (z - mean) k) scale (training) or
 * g scale (eval), and of dconv = dz / s (as dz * (1 / s): within an ulp). */
typedef struct tail_dz {
    float mean, k, grad_mean, scale, inv_s;
    bool training;
} tail_dz;

TAIL_INLINE float dz1(float g, float z, const tail_dz *c)
{
    return c->training ? (g - c->grad_mean - (z - c->mean) * c->k) * c->scale : g * c->scale;
}

/* dz of one row: dconv (+)= dz / s; sum(dz) and sum(dz conv) into acc. */
TAIL_INLINE void row_dconv(const tail_row *r, int64_t n, const tail_dz *c, float *dconv,
                           bool fresh, lane_sums *acc)
{
    tail_f8 s = {0}, p = {0};
    int64_t k = 0;
    for (; k + TAIL_LANES <= n; k += TAIL_LANES) {
        const tail_f8 conv = load8(r->conv + k);
        tail_f8 z = r->z.bias ? conv / r->z.s + r->z.b : conv / r->z.s, g = load8(r->dout + k);
        if (r->relu)
            g = relu_mask8(g, z, r->alpha, r->beta);
        tail_f8 dz = c->training ? (g - c->grad_mean - (z - c->mean) * c->k) * c->scale
                                 : g * c->scale;
        if (dconv && fresh)
            store8(dconv + k, dz * c->inv_s);
        else if (dconv)
            store8(dconv + k, load8(dconv + k) + dz * c->inv_s);
        dz = dz - 0.0f;
        s += dz;
        p += dz * (conv - 0.0f);
    }
    float ts = 0.0f, tp = 0.0f;
    for (; k < n; k++) {
        float g = r->dout[k], z = z1(r->conv[k], &r->z);
        if (r->relu)
            g = relu_mask1(g, z, r->alpha, r->beta);
        float dz = dz1(g, z, c);
        if (dconv)
            dconv[k] = fresh ? dz * c->inv_s : dconv[k] + dz * c->inv_s;
        dz = dz - 0.0f;
        ts += dz;
        tp += dz * (r->conv[k] - 0.0f);
    }
    lanes_add(acc, s, p, ts, tp);
}

TAIL_INLINE tail_row tail_row_of(const ag_node *n, int64_t off, int64_t ch)
{
    const tail_saved *sv = n->saved;
    const bool bias = n->ip[TP_BIAS] != 0;
    const tail_z z = {sv->s[ch], bias ? n->src[3]->data[ch] : 0.0f, bias};
    return (tail_row){n->out->grad + off, n->src[0]->data + off, z, sv->alpha[ch],
                      sv->beta[ch], n->ip[TP_RELU] != 0};
}

TAIL_INLINE void tail_channel_backward_body(const ag_node *n, tail_dims d, int64_t ch,
                                            const tail_grads *gr)
{
    const tail_saved *sv = n->saved;
    const bool training = n->ip[TP_TRAINING] != 0;
    const double m = (double)(d.n * d.inner), is = sv->invstd[ch];
    lane_sums acc = {{0}, {0}};
    for (int64_t i = 0; i < d.n; i++) {
        const tail_row r = tail_row_of(n, row_off(d, i, ch), ch);
        row_sums(&r, d.inner, sv->mean[ch], &acc);
    }
    const double sum_g = lanes_total(acc.a), dotp = lanes_total(acc.ab);
    if (gr->dbeta)
        gr->dbeta[ch] += (float)sum_g;
    const double w = n->src[1]->data[ch];
    const tail_dz c = {sv->mean[ch],
                       training ? (float)(dotp * is * is / m) : 0.0f,
                       training ? (float)(sum_g / m) : 0.0f,
                       (float)(is * w),
                       1.0f / sv->s[ch],
                       training};
    lane_sums dacc = {{0}, {0}};
    for (int64_t i = 0; i < d.n; i++) {
        const int64_t off = row_off(d, i, ch);
        const tail_row r = tail_row_of(n, off, ch);
        row_dconv(&r, d.inner, &c, gr->dconv ? gr->dconv + off : NULL, gr->dconv_fresh, &dacc);
    }
    const double sum_dz = lanes_total(dacc.a), sum_dz_conv = lanes_total(dacc.ab);
    if (gr->dbias)
        gr->dbias[ch] += (float)sum_dz;
    if (gr->dgamma) {
        const float s = sv->s[ch];
        const float ds = -(float)sum_dz_conv / (s * s);
        gr->dgamma[ch] += (float)(dotp * is) + ds / sv->std[ch];
    }
}

#if TAIL_X86
__attribute__((target("avx2"))) static void
tail_channel_backward_avx2(const ag_node *n, tail_dims d, int64_t ch, const tail_grads *gr)
{
    tail_channel_backward_body(n, d, ch, gr);
}
#endif

static void tail_channel_backward(const ag_node *n, tail_dims d, int64_t ch,
                                  const tail_grads *gr)
{
#if TAIL_X86
    if (__builtin_cpu_supports("avx2")) {
        tail_channel_backward_avx2(n, d, ch, gr);
        return;
    }
#endif
    tail_channel_backward_body(n, d, ch, gr);
}

static void tail_backward(ag_ctx *ctx, ag_node *n)
{
    const tail_dims d = {n->ip[TP_N], n->ip[TP_C], n->ip[TP_INNER]};
    tail_grads gr = {NULL, ag_grad(ctx, n->src[1]), ag_grad(ctx, n->src[2]),
                     n->ip[TP_BIAS] ? ag_grad(ctx, n->src[3]) : NULL, false};
    gr.dconv = ag_grad_write(ctx, n->src[0], &gr.dconv_fresh);
    const int64_t numel = d.n * d.c * d.inner;
#pragma omp parallel for schedule(static) if (numel > TAIL_PARALLEL_MIN)
    for (int64_t ch = 0; ch < d.c; ch++)
        tail_channel_backward(n, d, ch, &gr);
}
