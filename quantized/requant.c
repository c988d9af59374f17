/* requant.c — the scalar arithmetic of quantization: multipliers, rounding, quantizing
 * one float, bias quantization, fused-activation bounds, dynamic qparams. */
#include "quantized/q8_impl.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

const char *q8_dtype_name(q8_dtype dtype)
{
    switch (dtype) {
    case Q8_U8: return "u8";
    case Q8_I8: return "i8";
    case Q8_I32: return "i32";
    case Q8_F32: return "f32";
    }
    return "?";
}

size_t q8_dtype_size(q8_dtype dtype)
{
    switch (dtype) {
    case Q8_U8:
    case Q8_I8: return 1;
    case Q8_I32:
    case Q8_F32: return 4;
    }
    return 0;
}

/* M = f * 2^e with f in [0.5, 1) (frexp); M0 = round_half_even(f * 2^31), n = 31 - e.
 * Rounding f up to 1.0 gives M0 = 2^31, which does not fit: use 2^30 and one shift less. */
q8_status q8_multiplier_from_real(double real, int32_t *m0, int32_t *shift)
{
    if (!isfinite(real) || !(real > 0))
        return q8_error(Q8_ERR_NUMERIC, "multiplier %g is not a finite positive number", real);
    int e = 0;
    double f = frexp(real, &e);
    double q = nearbyint(ldexp(f, 31));
    if (q >= 2147483648.0) {
        q = 1073741824.0;
        e += 1;
    }
    int s = 31 - e;
    if (s < 0)
        return q8_error(Q8_ERR_NUMERIC, "multiplier %g is too large (must be < 2^31)", real);
    if (s > 63) {
        /* M < 2^-33: |acc * M| < 0.5 for every int32 acc, so the product rounds to 0. */
        *m0 = 0;
        *shift = 0;
        return Q8_OK;
    }
    *m0 = (int32_t)q;
    *shift = s;
    return Q8_OK;
}

int64_t q8_requantize(int64_t x, int32_t m0, int32_t shift)
{
    Q8_ASSERT(shift >= 0 && shift <= 63 && m0 >= 0);
    Q8_ASSERT(m0 == 0 || (x < 0 ? -(x + 1) : x) < (INT64_C(1) << 62) / m0 + 1);
    return q8_rq(x, m0, shift);
}

int32_t q8_quantize_value(float x, float scale, int32_t zero_point, q8_dtype dtype)
{
    return q8_quantize_inv(x, 1.0f / scale, zero_point, q8_qmin(dtype), q8_qmax(dtype));
}

void q8_requant_reference(const int32_t *acc, int64_t n, const int32_t *m0,
                          const int32_t *shift, int64_t step, int32_t zp, int32_t lo,
                          int32_t hi, uint8_t *out)
{
    for (int64_t i = 0; i < n; i++) {
        int64_t k = step ? i : 0;
        out[i] = q8_rq_byte(acc[i], m0[k], shift[k], zp, lo, hi);
    }
}

void q8_rq_chan_init(q8_rq_chan *c, int32_t m0, int32_t shift, int32_t zp, int64_t bound)
{
    int v2_m0 = 0, log2_bound = 0;
    for (uint32_t v = (uint32_t)m0; v && !(v & 1u); v >>= 1)
        v2_m0++;
    for (int64_t b = bound; b > 1; b >>= 1)
        log2_bound++;
    c->m0 = m0;
    c->shift = shift;
    c->no_ties = m0 > 0 && shift >= 32 && shift <= 54 && v2_m0 + log2_bound < shift - 1;
    c->add = c->no_ties ? (INT64_C(1) << (shift - 1)) + (int64_t)zp * (INT64_C(1) << shift) : 0;
}

void q8_pool_rq_reference(const int32_t *acc, int64_t ld, int64_t prows, int64_t pw, int32_t m0,
                          int32_t shift, int32_t zp, int32_t lo, int32_t hi, uint8_t *out)
{
    for (int64_t i = 0; i < prows; i++) {
        const int32_t *r0 = acc + 2 * i * ld, *r1 = r0 + ld; // (2 * pw) each
        for (int64_t j = 0; j < pw; j++) {
            int32_t a = r0[2 * j] > r0[2 * j + 1] ? r0[2 * j] : r0[2 * j + 1];
            int32_t b = r1[2 * j] > r1[2 * j + 1] ? r1[2 * j] : r1[2 * j + 1];
            out[i * pw + j] = q8_rq_byte(a > b ? a : b, m0, shift, zp, lo, hi);
        }
    }
}

void q8_quantize_row_reference(const float *x, int64_t n, float inv, int32_t zp, int32_t qmin,
                               int32_t qmax, uint8_t *out)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = (uint8_t)q8_quantize_inv(x[i], inv, zp, qmin, qmax);
}

void q8_lookup2_reference(const uint8_t *table, const uint8_t *a, const uint8_t *b, int64_t n,
                          uint8_t *out)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = table[a[i] * 256 + b[i]];
}

q8_status q8_qparams_range(q8_qparams qp, int32_t *lo, int32_t *hi)
{
    if (qp.dtype != Q8_U8 && qp.dtype != Q8_I8)
        return q8_error(Q8_ERR_ARG, "qparams of dtype %s: a quantized value is u8 or i8",
                        q8_dtype_name(qp.dtype));
    int32_t dmin = q8_qmin(qp.dtype), dmax = q8_qmax(qp.dtype);
    if (qp.qmin == 0 && qp.qmax == 0) {
        *lo = dmin;
        *hi = dmax;
        return Q8_OK;
    }
    if (qp.qmin < dmin || qp.qmax > dmax || qp.qmin > qp.qmax)
        return q8_error(Q8_ERR_ARG, "clamp range [%d, %d] is not an interval inside the %s range "
                        "[%d, %d]",
                        (int)qp.qmin, (int)qp.qmax, q8_dtype_name(qp.dtype), (int)dmin, (int)dmax);
    if (qp.zero_point < qp.qmin || qp.zero_point > qp.qmax)
        return q8_error(Q8_ERR_ARG, "zero point %d is outside the clamp range [%d, %d]",
                        (int)qp.zero_point, (int)qp.qmin, (int)qp.qmax);
    *lo = qp.qmin;
    *hi = qp.qmax;
    return Q8_OK;
}

void q8_act_bounds(q8_act act, q8_qparams out, int32_t *lo, int32_t *hi)
{
    int32_t qmin = 0, qmax = 0;
    Q8_ASSERT(q8_qparams_range(out, &qmin, &qmax) == Q8_OK);
    *lo = qmin;
    *hi = qmax;
    if (act == Q8_ACT_RELU || act == Q8_ACT_RELU6)
        *lo = out.zero_point > qmin ? out.zero_point : qmin;
    if (act == Q8_ACT_RELU6) {
        /* nnq.ReLU6: min(max(q, zp), quantize(6.0)), here inside the clamp range */
        int32_t q6 = q8_quantize_value(6.0f, out.scale, out.zero_point, out.dtype);
        *hi = q6 < qmax ? q6 : qmax;
    }
}

q8_status q8_quantize_bias(const float *bias, int64_t n, float s_in, const float *s_w,
                           int64_t n_scale, int32_t *out)
{
    for (int64_t c = 0; c < n; c++) {
        double s = (double)s_in * (double)s_w[n_scale == 1 ? 0 : c];
        double v = nearbyint((double)bias[c] / s);
        if (!(v >= (double)INT32_MIN && v <= (double)INT32_MAX))
            return q8_error(Q8_ERR_NUMERIC,
                            "bias[%" PRId64 "] = %g at scale s_in*s_w = %g quantizes to %.0f, "
                            "outside int32 (the bias is not clamped: check the input and "
                            "weight scales)",
                            c, (double)bias[c], s, v);
        out[c] = (int32_t)v;
    }
    return Q8_OK;
}

/* PyTorch's quant_utils::ChooseQuantizationParams (aten/.../quantized/cpu/QuantUtils.h),
 * the copy of fbgemm's that qlinear_dynamic calls, step by step with its float/double
 * mix (including the sign of the two "error" terms, which compares |q| - |x/scale|). */
void q8_choose_qparams_dynamic(float min, float max, bool reduce_range, float *scale_out,
                               int32_t *zero_point)
{
    const float small_scale = 6.1e-5f; /* SMALL_SCALE_THRESHOLD */
    int32_t qmin = 0, qmax = 255;
    if (reduce_range) {
        qmin = qmin / 2;
        qmax = qmax / 2;
    }
    min = 0.0f < min ? 0.0f : min; /* std::min(min, 0.f) */
    max = max < 0.0f ? 0.0f : max; /* std::max(max, 0.f) */
    double scale = ((double)max - min) / (qmax - qmin);
    if ((float)scale == 0.0f || isinf(1.0f / (float)scale))
        scale = 0.1;
    if (scale < small_scale) {
        float org_scale = (float)scale;
        scale = small_scale;
        if (min == 0.0f) {
            max = small_scale * (float)(qmax - qmin);
        } else if (max == 0.0f) {
            min = -small_scale * (float)(qmax - qmin);
        } else {
            float amplifier = small_scale / org_scale;
            min *= amplifier;
            max *= amplifier;
        }
    }
    double zp_from_min = qmin - min / scale;
    double zp_from_max = qmax - max / scale;
    double err_min = abs(qmin) - fabs(min / scale);
    double err_max = abs(qmax) - fabs(max / scale);
    double initial = err_min < err_max ? zp_from_min : zp_from_max;
    int32_t zp;
    if (initial < qmin)
        zp = qmin;
    else if (initial > qmax)
        zp = qmax;
    else
        zp = (int32_t)nearbyint(initial);
    *scale_out = (float)scale;
    *zero_point = zp;
}

/* TFLite's quantized add (reference_ops::Add with ADD's prepare): both inputs are moved
 * onto the scale 2*max(sa, sb) / 2^left_shift, summed, then rescaled to the output. */
void q8_add_reals(float sa, float sb, float so, int32_t left_shift, double *ma, double *mb,
                  double *mo)
{
    double twice_max = 2.0 * fmax((double)sa, (double)sb);
    *ma = (double)sa / twice_max;
    *mb = (double)sb / twice_max;
    *mo = twice_max / (ldexp(1.0, left_shift) * (double)so);
}

void *q8_alloc(size_t bytes)
{
    size_t rounded = (bytes + 63) / 64 * 64;
    return aligned_alloc(64, rounded ? rounded : 64);
}

void q8_free(void *p) { free(p); }

char *q8_strdup(const char *s)
{
    if (!s)
        s = "";
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}
