/* qparams.c — observer configurations and the two formulas that turn a range into
 * quantization parameters: PyTorch's _calculate_qparams (observer.py, what every
 * observer and convert use) and ChooseQuantizationParams (ATen QuantUtils.h, a copy of
 * fbgemm's, what FusedMovingAvgObsFakeQuantize uses while training). Both in the float
 * and double arithmetic of PyTorch 1.13's CPU build, so the results are bit-exact. */
#include "qat/observer.h"

#include <inttypes.h>
#include <math.h>

qat_observer_cfg qat_observer_cfg_default(qat_observer_kind kind)
{
    qat_observer_cfg c = {
        .kind = kind,
        .dtype = QAT_QUINT8,
        .qscheme = QAT_PER_TENSOR_AFFINE,
        .eps = 0x1p-23f, /* torch.finfo(torch.float32).eps */
        .averaging_constant = 0.01f,
        .ch_axis = 0,
        .bins = 2048,
    };
    if (kind == QAT_OBS_PER_CHANNEL_MINMAX || kind == QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX)
        c.qscheme = QAT_PER_CHANNEL_AFFINE;
    if (kind == QAT_OBS_FIXED_QPARAMS) {
        c.fixed_scale = 1.0f / 256.0f;
        c.fixed_zero_point = 0;
    }
    return c;
}

static bool kind_is_per_channel(qat_observer_kind k)
{
    return k == QAT_OBS_PER_CHANNEL_MINMAX || k == QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX;
}

static bool qscheme_is_per_channel(qat_qscheme q)
{
    return q == QAT_PER_CHANNEL_AFFINE || q == QAT_PER_CHANNEL_SYMMETRIC;
}

static bool qscheme_is_symmetric(qat_qscheme q)
{
    return q == QAT_PER_TENSOR_SYMMETRIC || q == QAT_PER_CHANNEL_SYMMETRIC;
}

/* Python's floor division by 2 (utils.calculate_qmin_qmax halves with //). */
static int32_t floor_half(int32_t v)
{
    return v >= 0 ? v / 2 : -((-(int64_t)v + 1) / 2);
}

static void dtype_range(qat_dtype dtype, bool reduce_range, int32_t *qmin, int32_t *qmax)
{
    switch (dtype) {
    case QAT_QINT8:
        *qmin = reduce_range ? -64 : -128;
        *qmax = reduce_range ? 63 : 127;
        return;
    case QAT_QINT32: /* reduce_range does not apply */
        *qmin = INT32_MIN;
        *qmax = INT32_MAX;
        return;
    case QAT_QUINT8:
    default:
        *qmin = 0;
        *qmax = reduce_range ? 127 : 255;
        return;
    }
}

/* utils.calculate_qmin_qmax with UniformQuantizationObserverBase._validate_qmin_qmax. */
static ag_status custom_range(const qat_observer_cfg *c, int32_t *qmin, int32_t *qmax)
{
    int64_t lo = c->quant_min, hi = c->quant_max, len = hi - lo + 1;
    if (!(lo <= 0 && 0 <= hi))
        return ag_error(AG_ERR_ARG, "observer: quant_min %" PRId64 " .. quant_max %" PRId64
                        " must include 0", lo, hi);
    if (!(lo < hi))
        return ag_error(AG_ERR_ARG, "observer: quant_min %" PRId64 " must be less than "
                        "quant_max %" PRId64, lo, hi);
    if (c->dtype == QAT_QINT8 && len > 256)
        return ag_error(AG_ERR_ARG, "observer: quant_min %" PRId64 " .. quant_max %" PRId64
                        " exceeds the 8-bit range (256 values)", lo, hi);
    if (c->dtype == QAT_QINT32 && len > ((int64_t)1 << 31))
        return ag_error(AG_ERR_ARG, "observer: quant_min %" PRId64 " .. quant_max %" PRId64
                        " exceeds 2^31 values", lo, hi);
    *qmin = c->reduce_range ? floor_half(c->quant_min) : c->quant_min;
    *qmax = c->reduce_range ? floor_half(c->quant_max) : c->quant_max;
    return AG_OK;
}

static ag_status check_qscheme(const qat_observer_cfg *c)
{
    if (c->kind == QAT_OBS_PLACEHOLDER || c->kind == QAT_OBS_FIXED_QPARAMS)
        return AG_OK;
    if (kind_is_per_channel(c->kind) != qscheme_is_per_channel(c->qscheme))
        return ag_error(AG_ERR_ARG, "observer: kind %d takes a %s qscheme", (int)c->kind,
                        kind_is_per_channel(c->kind) ? "per-channel" : "per-tensor");
    /* MinMaxObserver / PerChannelMinMaxObserver refuse this (HistogramObserver does not). */
    if (c->kind != QAT_OBS_HISTOGRAM && qscheme_is_symmetric(c->qscheme) &&
        c->reduce_range && c->dtype == QAT_QUINT8)
        return ag_error(AG_ERR_UNSUPPORTED, "observer: cannot reduce range for symmetric "
                        "quantization for quint8");
    return AG_OK;
}

ag_status qat_observer_cfg_range(const qat_observer_cfg *c, int32_t *qmin, int32_t *qmax)
{
    if ((unsigned)c->dtype > QAT_QINT32 || (unsigned)c->qscheme > QAT_PER_CHANNEL_SYMMETRIC ||
        (unsigned)c->kind > QAT_OBS_FIXED_QPARAMS)
        return ag_error(AG_ERR_ARG, "observer: unknown kind, dtype or qscheme");
    ag_status st = check_qscheme(c);
    if (st != AG_OK)
        return st;
    if (c->kind == QAT_OBS_FIXED_QPARAMS) {
        /* FixedQParamsObserver takes quant_min/quant_max as given (default 0..255). */
        *qmin = c->has_custom_range ? c->quant_min : 0;
        *qmax = c->has_custom_range ? c->quant_max : 255;
        if (*qmin >= *qmax)
            return ag_error(AG_ERR_ARG, "observer: quant_min %d must be less than quant_max %d",
                            (int)*qmin, (int)*qmax);
        return AG_OK;
    }
    if (c->has_custom_range && c->kind != QAT_OBS_PLACEHOLDER)
        return custom_range(c, qmin, qmax);
    dtype_range(c->dtype, c->reduce_range && c->kind != QAT_OBS_PLACEHOLDER, qmin, qmax);
    return AG_OK;
}

/* ---- _calculate_qparams ------------------------------------------------------------ */

/* torch.minimum / torch.maximum: NaN wins. */
static float nan_min(float a, float b) { return isnan(a) || a < b ? a : b; }
static float nan_max(float a, float b) { return isnan(a) || a > b ? a : b; }

/* torch.round / std::nearbyint on float32: round half to even (the default mode). */
static float rne(float v) { return nearbyintf(v); }

/* Tensor.to(torch.int) on x86: out-of-range and NaN become INT32_MIN (cvttss2si). */
static int32_t to_int32_x86(float v)
{
    return v >= -0x1p31f && v < 0x1p31f ? (int32_t)v : INT32_MIN;
}

static int32_t clamp_i32(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* observer.py _calculate_qparams, for per-tensor and per-channel schemes:
 *   min_neg = min(min_val, 0), max_pos = max(max_val, 0)
 *   symmetric: scale = max(max(-min_neg, max_pos) / ((qmax - qmin) / 2), eps),
 *              zp = 0 (quint8: 128, or (qmin + qmax) // 2 for a custom range)
 *   affine:    scale = max((max_pos - min_neg) / (qmax - qmin), eps),
 *              zp = clamp(qmin - round(min_neg / scale), qmin, qmax)
 * Every step is a float32 tensor op in PyTorch; the divisors are Python floats that
 * the op rounds to float32. */
void qat_calculate_qparams(const float *min_val, const float *max_val, int32_t n,
                           qat_qscheme qscheme, qat_dtype dtype, bool has_custom_range,
                           int32_t qmin, int32_t qmax, float eps, float *scale,
                           int32_t *zero_point)
{
    const double span = (double)((int64_t)qmax - qmin);
    const bool symmetric = qscheme_is_symmetric(qscheme);
    int32_t sym_zp = 0;
    if (dtype == QAT_QUINT8)
        sym_zp = has_custom_range ? floor_half((int32_t)((int64_t)qmin + qmax)) : 128;
    for (int32_t i = 0; i < n; i++) {
        float min_neg = nan_min(min_val[i], 0.0f);
        float max_pos = nan_max(max_val[i], 0.0f);
        if (symmetric) {
            float amax = nan_max(-min_neg, max_pos);
            scale[i] = nan_max(amax / (float)(span / 2.0), eps);
            zero_point[i] = sym_zp;
            continue;
        }
        scale[i] = nan_max((max_pos - min_neg) / (float)span, eps);
        /* quant_min - round(...).to(int): int32 tensor arithmetic, which wraps. */
        uint32_t zp = (uint32_t)qmin - (uint32_t)to_int32_x86(rne(min_neg / scale[i]));
        zero_point[i] = clamp_i32((int32_t)zp, qmin, qmax);
    }
}

/* ---- ChooseQuantizationParams ------------------------------------------------------ */

static const float small_scale_threshold = 6.1e-5f; /* QuantUtils.h SMALL_SCALE_THRESHOLD */

/* ATen quant_utils::ChooseQuantizationParams(min, max, qmin, qmax, preserve_sparsity,
 * force_scale_power_of_two = false, reduce_range = false): float inputs, double
 * intermediate scale and zero point, float result. std::min/std::max semantics are kept
 * (a NaN min stays NaN). The span qmax - qmin is taken in 64 bits (PyTorch overflows
 * int for the full qint32 range). */
void qat_choose_qparams(float min, float max, int32_t qmin, int32_t qmax,
                        bool preserve_sparsity, float *scale_out, int32_t *zero_point)
{
    const int64_t span = (int64_t)qmax - qmin;
    if (min < 0 && max > 0 && preserve_sparsity) {
        int64_t sym_qmin = -(span / 2 + 1), sym_qmax = span / 2;
        double max_scale = fmax(fabsf(min / (float)sym_qmin), fabsf(max / (float)sym_qmax));
        min = (float)(max_scale * (double)sym_qmin);
        max = (float)(max_scale * (double)sym_qmax);
    }
    min = 0.0f < min ? 0.0f : min; /* std::min(min, 0.f) */
    max = max < 0.0f ? 0.0f : max; /* std::max(max, 0.f) */

    double scale = ((double)max - (double)min) / (double)span;
    if ((float)scale == 0.0f || isinf(1.0f / (float)scale))
        scale = 0.1;
    if (scale < (double)small_scale_threshold) {
        float org_scale = (float)scale;
        scale = (double)small_scale_threshold;
        if (min == 0.0f) {
            max = small_scale_threshold * (float)span;
        } else if (max == 0.0f) {
            min = -small_scale_threshold * (float)span;
        } else {
            float amplifier = small_scale_threshold / org_scale;
            min *= amplifier;
            max *= amplifier;
        }
    }

    /* Zero point from whichever end adds the smaller terms (less rounding error). */
    double zp_from_min = (double)qmin - (double)min / scale;
    double zp_from_max = (double)qmax - (double)max / scale;
    double err_min = fabs((double)qmin) - fabs((double)min / scale);
    double err_max = fabs((double)qmax) - fabs((double)max / scale);
    double zp = err_min < err_max ? zp_from_min : zp_from_max;
    if (min < 0 && max > 0 && preserve_sparsity)
        zp = (double)((int64_t)qmin + qmax) / 2;

    if (zp < qmin)
        *zero_point = qmin;
    else if (zp > qmax)
        *zero_point = qmax;
    else
        *zero_point = (int32_t)nearbyint(zp);
    *scale_out = (float)scale;
}
