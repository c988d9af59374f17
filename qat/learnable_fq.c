/* learnable_fq.c — _LearnableFakeQuantize's ops (LSQ / TQT): fake quant whose scale and
 * zero point receive gradients, as PyTorch 1.13's _fake_quantize_learnable_per_tensor_
 * affine and _per_channel_affine, and the module's learning modes.
 *
 * Forward: the ordinary fake quant (fake_quant.c) with zp = clamp(round(zero_point)).
 * Backward, per element, with xq = RNE(zp + x / scale) (written x * f32(1 / scale)):
 *     qmin <= xq <= qmax:  dx = dy,  dscale = dy * (xfq - x) / scale,  dzp = 0
 *     xq < qmin:           dx = 0,   dscale = dy * (qmin - zp),        dzp = -dy * scale
 *     xq > qmax:           dx = 0,   dscale = dy * (qmax - zp),        dzp = -dy * scale
 * with xfq = (clamp(xq) - zp) * scale; dscale and dzp are multiplied by grad_factor and
 * summed over every element (per tensor) or every non-channel position (per channel).
 * Two multiply-adds are fused (fmaf) because PyTorch's AVX2 kernel build fuses them:
 * zp + x * inv, and xfq - x = (clamp(xq) - zp) * scale - x. The per-tensor backward
 * takes zp = (int64)(zero_point + 0.5) clamped, which differs from the forward's
 * round-half-even at .5 (as in PyTorch). Sums accumulate in double in fixed-size
 * blocks (PyTorch sums float32 in its own order), so they are deterministic for any
 * thread count and within float rounding of PyTorch's. */
#include "qat/observer.h"

#include "autograd/ag_impl.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

/* std::nearbyint in the default rounding mode: round half to even. rintf gives the same
 * value without saving the floating-point environment (it may raise "inexact"). */
static inline float rne(float v) { return rintf(v); }

/* (int64_t) of a float on x86: INT64_MIN when it does not fit (or is NaN). */
static inline int64_t to_int64_x86(float v)
{
    return v >= -0x1p63f && v < 0x1p63f ? (int64_t)v : INT64_MIN;
}

/* std::min(std::max(v, lo), hi) on floats. */
static float clamp_std(float v, float lo, float hi)
{
    v = v < lo ? lo : v;
    return hi < v ? hi : v;
}

/* The gradients of one element: dx, and the terms of dscale and dzp. */
typedef struct lsq_grad {
    float dx, dscale, dzp;
} lsq_grad;

/* One element of ATen's fake_quantize_learnable_*_grad_kernel_cpu. zpf is the zero
 * point as the kernel sees it (an integer-valued float), small/big = qmin/qmax - zp. */
static inline lsq_grad lsq_element(float x, float dy, float scale, float inv, float zpf,
                                   float small, float big, int32_t qmin, int32_t qmax,
                                   float gf)
{
    int64_t xq = to_int64_x86(rne(fmaf(x, inv, zpf)));
    lsq_grad g;
    g.dx = dy * (float)(xq >= qmin && xq <= qmax);
    if (xq < qmin || xq > qmax) {
        g.dzp = dy * -1.0f * scale * gf;
        g.dscale = (xq < qmin ? dy * small : dy * big) * gf;
    } else {
        float q = (float)xq - zpf; /* clamp(xq) - zp, exact: xq is within the range */
        g.dzp = 0.0f;
        g.dscale = dy * fmaf(q, scale, -x) * inv * gf;
    }
    return g;
}

enum { LSQ_BLOCK = 8192, LSQ_PARALLEL_MIN = 65536 };

/* ---- per tensor ---------------------------------------------------------------------- */

static ag_status check_lsq_args(const char *op, const ag_tensor *x, const ag_tensor *scale,
                                const ag_tensor *zero_point, int64_t want, int32_t qmin,
                                int32_t qmax)
{
    if (qmin > qmax)
        return ag_error(AG_ERR_ARG, "%s: quant_min %d should be less than or equal to "
                        "quant_max %d", op, (int)qmin, (int)qmax);
    if (scale->dtype != AG_F32 || zero_point->dtype != AG_F32 || x->dtype != AG_F32)
        return ag_error(AG_ERR_ARG, "%s: x, scale and zero_point must be float32", op);
    if (scale->ndim != 1 || zero_point->ndim != 1 || scale->numel != want ||
        zero_point->numel != want) {
        char s[AG_SHAPE_STR_MAX], z[AG_SHAPE_STR_MAX];
        return ag_error(AG_ERR_SHAPE, "%s: scale %s and zero_point %s must be [%" PRId64 "]",
                        op, ag_shape_str(scale, s, sizeof s),
                        ag_shape_str(zero_point, z, sizeof z), want);
    }
    return AG_OK;
}

static void lsq_tensor_backward(ag_ctx *ctx, ag_node *n)
{
    ag_tensor *x = n->src[0], *sc = n->src[1], *zpt = n->src[2];
    float *dx = ag_grad(ctx, x), *dsc = ag_grad(ctx, sc), *dzp = ag_grad(ctx, zpt);
    const int32_t qmin = (int32_t)n->ip[0], qmax = (int32_t)n->ip[1];
    const float gf = n->fp[0];
    const float scale = sc->data[0], inv = 1.0f / scale;
    /* _get_zero_point_from_tensor(is_forward = false): (int64)clamp(zp + 0.5). */
    const int64_t zp = to_int64_x86(clamp_std(zpt->data[0] + 0.5f, (float)qmin, (float)qmax));
    const float zpf = (float)zp, small = (float)(qmin - zp), big = (float)(qmax - zp);
    const float *xd = x->data, *dy = n->out->grad;
    const int64_t total = x->numel, blocks = (total + LSQ_BLOCK - 1) / LSQ_BLOCK;
    double *partial = (dsc || dzp) ? ag_ctx_alloc(ctx, (size_t)(2 * blocks + 1) * sizeof(double))
                                   : NULL;
    if ((dsc || dzp) && !partial)
        return; /* out of memory: ag_backward reports it */
#pragma omp parallel for if (total > LSQ_PARALLEL_MIN) schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        double s_acc = 0.0, z_acc = 0.0;
        int64_t end = (b + 1) * LSQ_BLOCK < total ? (b + 1) * LSQ_BLOCK : total;
        for (int64_t i = b * LSQ_BLOCK; i < end; i++) {
            lsq_grad g = lsq_element(xd[i], dy[i], scale, inv, zpf, small, big, qmin, qmax, gf);
            if (dx)
                dx[i] += g.dx;
            s_acc += g.dscale;
            z_acc += g.dzp;
        }
        if (partial) {
            partial[2 * b] = s_acc;
            partial[2 * b + 1] = z_acc;
        }
    }
    double s_sum = 0.0, z_sum = 0.0;
    for (int64_t b = 0; partial && b < blocks; b++) {
        s_sum += partial[2 * b];
        z_sum += partial[2 * b + 1];
    }
    if (dsc)
        dsc[0] += (float)s_sum;
    if (dzp)
        dzp[0] += (float)z_sum;
}

ag_tensor *qat_fake_quantize_learnable_per_tensor(ag_ctx *ctx, ag_tensor *x, ag_tensor *scale,
                                                  ag_tensor *zero_point, int32_t qmin,
                                                  int32_t qmax, float grad_factor)
{
    static const char op[] = "fake_quantize_learnable_per_tensor_affine";
    if (!x || !scale || !zero_point)
        return NULL;
    if (check_lsq_args(op, x, scale, zero_point, 1, qmin, qmax) != AG_OK)
        return NULL;
    /* _get_zero_point_from_tensor(is_forward = true): clamp(nearbyint(zp)). */
    int32_t zp = (int32_t)to_int64_x86(clamp_std(rne(zero_point->data[0]), (float)qmin,
                                                 (float)qmax));
    ag_no_grad_begin(ctx);
    ag_tensor *y = qat_fake_quantize_per_tensor(ctx, x, scale->data[0], zp, qmin, qmax);
    ag_no_grad_end(ctx);
    if (!y)
        return NULL;
    ag_node *n = ag_op_record(ctx, AG_OP_CUSTOM, y, (ag_tensor *[]){x, scale, zero_point}, 3);
    if (n && ag_op_recorded(n, y)) {
        n->custom_backward = lsq_tensor_backward;
        n->ip[0] = qmin;
        n->ip[1] = qmax;
        n->fp[0] = grad_factor;
    }
    return ag_op_recorded(n, y);
}

/* ---- per channel --------------------------------------------------------------------- */

/* zero_point.round().clamp(quant_min, quant_max), as floats (the backward's zp) and
 * as int32 (the forward's). */
static void rounded_zero_points(const float *zp, int64_t channels, int32_t qmin, int32_t qmax,
                                float *zpf, int32_t *zpi)
{
    for (int64_t c = 0; c < channels; c++) {
        float r = rne(zp[c]);
        r = r < (float)qmin ? (float)qmin : r > (float)qmax ? (float)qmax : r;
        if (zpf)
            zpf[c] = r;
        if (zpi)
            zpi[c] = (int32_t)r;
    }
}

/* ip[] = {outer, C, inner, qmin, qmax}. Channels are split between threads, so each
 * channel's sums are accumulated by one thread in a fixed order. */
static void lsq_channel_backward(ag_ctx *ctx, ag_node *n)
{
    ag_tensor *x = n->src[0], *sc = n->src[1], *zpt = n->src[2];
    float *dx = ag_grad(ctx, x), *dsc = ag_grad(ctx, sc), *dzp = ag_grad(ctx, zpt);
    const int64_t outer = n->ip[0], channels = n->ip[1], inner = n->ip[2];
    const int32_t qmin = (int32_t)n->ip[3], qmax = (int32_t)n->ip[4];
    const float gf = n->fp[0];
    float *zpf = ag_ctx_alloc(ctx, (size_t)channels * sizeof *zpf);
    if (!zpf)
        return;
    rounded_zero_points(zpt->data, channels, qmin, qmax, zpf, NULL);
    const float *xd = x->data, *dy = n->out->grad;
#pragma omp parallel for if (x->numel > LSQ_PARALLEL_MIN && channels > 1) schedule(static)
    for (int64_t c = 0; c < channels; c++) {
        const float scale = sc->data[c], inv = 1.0f / scale, z = zpf[c];
        const float small = (float)qmin - z, big = (float)qmax - z;
        double s_acc = 0.0, z_acc = 0.0;
        for (int64_t o = 0; o < outer; o++) {
            int64_t base = (o * channels + c) * inner;
            for (int64_t i = base; i < base + inner; i++) {
                lsq_grad g = lsq_element(xd[i], dy[i], scale, inv, z, small, big, qmin, qmax,
                                         gf);
                if (dx)
                    dx[i] += g.dx;
                s_acc += g.dscale;
                z_acc += g.dzp;
            }
        }
        if (dsc)
            dsc[c] += (float)s_acc;
        if (dzp)
            dzp[c] += (float)z_acc;
    }
}

ag_tensor *qat_fake_quantize_learnable_per_channel(ag_ctx *ctx, ag_tensor *x, ag_tensor *scale,
                                                   ag_tensor *zero_point, int32_t axis,
                                                   int32_t qmin, int32_t qmax,
                                                   float grad_factor)
{
    static const char op[] = "fake_quantize_learnable_per_channel_affine";
    if (!x || !scale || !zero_point)
        return NULL;
    if (axis < 0 || axis >= x->ndim) {
        char s[AG_SHAPE_STR_MAX];
        ag_error(AG_ERR_SHAPE, "%s: axis %d must be between 0 and the number of dimensions of "
                 "input %s", op, (int)axis, ag_shape_str(x, s, sizeof s));
        return NULL;
    }
    const int64_t channels = x->shape[axis];
    if (check_lsq_args(op, x, scale, zero_point, channels, qmin, qmax) != AG_OK)
        return NULL;
    int32_t *zpi = ag_ctx_alloc(ctx, (size_t)(channels ? channels : 1) * sizeof *zpi);
    if (!zpi)
        return NULL;
    rounded_zero_points(zero_point->data, channels, qmin, qmax, NULL, zpi);
    ag_no_grad_begin(ctx);
    ag_tensor *y = qat_fake_quantize_per_channel(ctx, x, scale->data, zpi, axis, qmin, qmax);
    ag_no_grad_end(ctx);
    if (!y)
        return NULL;
    ag_node *n = ag_op_record(ctx, AG_OP_CUSTOM, y, (ag_tensor *[]){x, scale, zero_point}, 3);
    if (n && ag_op_recorded(n, y)) {
        n->custom_backward = lsq_channel_backward;
        n->ip[0] = ag_shape_numel(axis, x->shape);
        n->ip[1] = channels;
        n->ip[2] = ag_shape_numel(x->ndim - axis - 1, x->shape + axis + 1);
        n->ip[3] = qmin;
        n->ip[4] = qmax;
        n->fp[0] = grad_factor;
    }
    return ag_op_recorded(n, y);
}

/* ---- modes --------------------------------------------------------------------------- */

static void set_u8(nn_module *fq, const char *name, bool on)
{
    ag_tensor *t = nn_module_buffer(fq, name);
    if (t)
        ((uint8_t *)t->data)[0] = on;
}

static void set_requires_grad(ag_tensor *t, bool on)
{
    if (!t)
        return;
    if (on)
        t->flags |= AG_F_REQUIRES_GRAD;
    else
        t->flags &= ~(uint32_t)AG_F_REQUIRES_GRAD;
}

/* toggle_qparam_learning: the flag and requires_grad of scale and zero_point. */
void qat_learnable_fq_toggle_learning(nn_module *fq, bool on)
{
    if (!nn_module_is(fq, "_LearnableFakeQuantize"))
        return;
    set_u8(fq, "learning_enabled", on);
    set_requires_grad(nn_module_param(fq, "scale"), on);
    set_requires_grad(nn_module_param(fq, "zero_point"), on);
}

static void set_modes(nn_module *fq, bool learning, bool fake_quant, bool observer)
{
    if (!nn_module_is(fq, "_LearnableFakeQuantize"))
        return;
    qat_learnable_fq_toggle_learning(fq, learning);
    set_u8(fq, "fake_quant_enabled", fake_quant);
    set_u8(fq, "static_enabled", observer);
}

void qat_learnable_fq_enable_param_learning(nn_module *fq) { set_modes(fq, true, true, false); }
void qat_learnable_fq_enable_static_estimate(nn_module *fq) { set_modes(fq, false, true, true); }
void qat_learnable_fq_enable_static_observation(nn_module *fq)
{
    set_modes(fq, false, false, true);
}
