/* histogram.c — HistogramObserver's numerics, bit for bit with PyTorch 1.13:
 * the running histogram (torch.histc over [int(min), int(max)], merged into a widened
 * range with upsample_rate 128) and the L2 search for the clipping range
 * (_non_linear_param_search, after caffe2's NormMinimization).
 *
 * The float arithmetic follows the tensor ops of observer.py one by one: each op rounds
 * to float32, Python floats entering a float32 op are rounded to float32 first, and the
 * reductions (torch.sum, torch.cumsum) are reproduced in the order ATen's CPU kernels
 * add (see torch_sum_f32). */
#include "qat/observer.h"

#include <math.h>
#include <string.h>

enum { UPSAMPLE_RATE = 128 };

/* ---- torch.sum of a contiguous float32 vector -------------------------------------
 * ATen's cascade_sum (ReduceOps SumKernel.cpp) as built for AVX2: the vector is read
 * as 8-float vectors, 4 of them interleaved (ilp), and each of the 4 accumulators is a
 * 4-level cascade that flushes every 2^level_power rows; then the lanes are added
 * left to right after the scalar tail. Vectors shorter than 8 take the scalar path
 * (the same cascade on single floats). One thread: PyTorch splits only above 32768. */
enum { VEC = 8, ILP = 4, LEVELS = 4 };

static int64_t ceil_log2(int64_t x)
{
    if (x <= 2)
        return 1;
    int64_t bits = 0;
    for (uint64_t v = (uint64_t)(x - 1); v; v >>= 1)
        bits++;
    return bits;
}

/* `rows` rows of ILP elements of w lanes each (w = VEC or 1), at `in`. */
static void multi_row_sum(const float *in, int64_t rows, int w, float out[ILP][VEC])
{
    const int64_t power = ceil_log2(rows) / LEVELS > 4 ? ceil_log2(rows) / LEVELS : 4;
    const int64_t step = (int64_t)1 << power, mask = step - 1;
    const int64_t row_len = (int64_t)ILP * w;
    float acc[LEVELS][ILP][VEC] = {{{0}}};
    int64_t i = 0;
    while (i + step <= rows) {
        for (int64_t j = 0; j < step; j++, i++)
            for (int k = 0; k < ILP; k++)
                for (int l = 0; l < w; l++)
                    acc[0][k][l] += in[i * row_len + k * w + l];
        for (int j = 1; j < LEVELS; j++) {
            for (int k = 0; k < ILP; k++)
                for (int l = 0; l < w; l++) {
                    acc[j][k][l] += acc[j - 1][k][l];
                    acc[j - 1][k][l] = 0.0f;
                }
            if ((i & (mask << (j * power))) != 0)
                break;
        }
    }
    for (; i < rows; i++)
        for (int k = 0; k < ILP; k++)
            for (int l = 0; l < w; l++)
                acc[0][k][l] += in[i * row_len + k * w + l];
    for (int j = 1; j < LEVELS; j++)
        for (int k = 0; k < ILP; k++)
            for (int l = 0; l < w; l++)
                acc[0][k][l] += acc[j][k][l];
    memcpy(out, acc[0], sizeof acc[0]);
}

/* row_sum: `size` elements of w lanes; the result's w lanes in out[0..w). */
static void row_sum(const float *in, int64_t size, int w, float out[VEC])
{
    float partial[ILP][VEC];
    int64_t rows = size / ILP;
    multi_row_sum(in, rows, w, partial);
    for (int64_t i = rows * ILP; i < size; i++)
        for (int l = 0; l < w; l++)
            partial[0][l] += in[i * w + l];
    for (int k = 1; k < ILP; k++)
        for (int l = 0; l < w; l++)
            partial[0][l] += partial[k][l];
    memcpy(out, partial[0], sizeof partial[0]);
}

static float torch_sum_f32(const float *x, int64_t n)
{
    float lanes[VEC];
    if (n < VEC) {
        row_sum(x, n, 1, lanes);
        return lanes[0];
    }
    int64_t nvec = n / VEC;
    row_sum(x, nvec, VEC, lanes);
    float total = 0.0f;
    for (int64_t k = nvec * VEC; k < n; k++)
        total += x[k];
    for (int l = 0; l < VEC; l++)
        total += lanes[l];
    return total;
}

/* ---- torch.aminmax --------------------------------------------------------------- */

enum { LANES = 16, MINMAX_CHUNK = 1 << 16 };

/* torch.minimum / torch.maximum: a NaN on either side wins (and then stays). */
static inline float nan_min(float a, float b)
{
    float m = a < b ? a : b;
    return a != a ? a : m; /* written as two selects, so that it vectorizes */
}

static inline float nan_max(float a, float b)
{
    float m = a > b ? a : b;
    return a != a ? a : m;
}

/* Min and max of one span in LANES independent lanes, so that the compiler keeps them in
 * vector registers (min and max are exact in any order; a NaN sticks to its lane). */
static bool minmax_span_fast(const float *x, int64_t n, float *lo_out, float *hi_out);

static void minmax_span(const float *x, int64_t n, float *lo_out, float *hi_out)
{
    if (minmax_span_fast(x, n, lo_out, hi_out))
        return;
    float lo[LANES], hi[LANES];
    for (int l = 0; l < LANES; l++) {
        lo[l] = INFINITY;
        hi[l] = -INFINITY;
    }
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) {
            lo[l] = nan_min(x[i + l], lo[l]);
            hi[l] = nan_max(x[i + l], hi[l]);
        }
    for (; i < n; i++) {
        lo[0] = nan_min(x[i], lo[0]);
        hi[0] = nan_max(x[i], hi[0]);
    }
    for (int l = 0; l < LANES; l++) {
        *lo_out = nan_min(lo[l], *lo_out);
        *hi_out = nan_max(hi[l], *hi_out);
    }
}

/* minmax_span in AVX-512: the same sixteen lanes, each seeing the same values in the
 * same order (vminps(v, lo) is v < lo ? v : lo, nan_min without NaN), so even the sign
 * of a zero result is the scalar one. A span holding a NaN is left to the scalar code
 * (false), which knows which NaN wins. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

__attribute__((target("avx512f"))) static bool minmax_span_avx512(const float *x, int64_t n,
                                                                  float *lo_out, float *hi_out)
{
    __m512 vlo = _mm512_set1_ps(INFINITY), vhi = _mm512_set1_ps(-INFINITY);
    __mmask16 nan = 0;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        const __m512 v = _mm512_loadu_ps(x + i);
        vlo = _mm512_min_ps(v, vlo);
        vhi = _mm512_max_ps(v, vhi);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    }
    if (nan)
        return false;
    float lo[LANES], hi[LANES];
    _mm512_storeu_ps(lo, vlo);
    _mm512_storeu_ps(hi, vhi);
    for (; i < n; i++) {
        lo[0] = nan_min(x[i], lo[0]);
        hi[0] = nan_max(x[i], hi[0]);
    }
    for (int l = 0; l < LANES; l++) {
        *lo_out = nan_min(lo[l], *lo_out);
        *hi_out = nan_max(hi[l], *hi_out);
    }
    return true;
}

static bool minmax_span_fast(const float *x, int64_t n, float *lo_out, float *hi_out)
{
    return __builtin_cpu_supports("avx512f") && minmax_span_avx512(x, n, lo_out, hi_out);
}
#else
static bool minmax_span_fast(const float *x, int64_t n, float *lo_out, float *hi_out)
{
    (void)x, (void)n, (void)lo_out, (void)hi_out;
    return false;
}
#endif

void qat_aminmax(const float *x, int64_t n, float *min_out, float *max_out)
{
    const int64_t chunks = (n + MINMAX_CHUNK - 1) / MINMAX_CHUNK;
    float lo = INFINITY, hi = -INFINITY;
    if (chunks <= 1) {
        minmax_span(x, n, &lo, &hi);
    } else {
        /* Per-chunk results, combined in order (OpenMP's min/max reductions drop NaN). */
        float part[2 * 64];
        const int64_t per = (chunks + 63) / 64; /* chunks per part, at most 64 parts */
        const int64_t parts = (chunks + per - 1) / per;
#pragma omp parallel for schedule(static)
        for (int64_t p = 0; p < parts; p++) {
            int64_t start = p * per * MINMAX_CHUNK;
            int64_t len = n - start < per * MINMAX_CHUNK ? n - start : per * MINMAX_CHUNK;
            part[2 * p] = INFINITY;
            part[2 * p + 1] = -INFINITY;
            minmax_span(x + start, len, &part[2 * p], &part[2 * p + 1]);
        }
        for (int64_t p = 0; p < parts; p++) {
            lo = nan_min(part[2 * p], lo);
            hi = nan_max(part[2 * p + 1], hi);
        }
    }
    *min_out = lo;
    *max_out = hi;
}

/* ---- torch.histc ------------------------------------------------------------------ */

/* histc(x, bins, min=lo, max=hi) (Histogram.cpp + HistogramKernel.cpp, linear bins):
 * lo == hi falls back to the data's range, then to [lo - 1, hi + 1]; the edges are the
 * float32 ends of linspace; values outside [L, R] are dropped; the bin is
 * (int64)((v - L) * bins / (R - L)) in float, the last bin closed. */
static void histc(const float *x, int64_t n, int32_t bins, double lo, double hi, float *out)
{
    if (lo == hi) {
        float mn, mx;
        qat_aminmax(x, n, &mn, &mx);
        lo = mn;
        hi = mx;
    }
    if (lo == hi) {
        lo -= 1;
        hi += 1;
    }
    const float left = (float)lo, right = (float)hi, width = right - left;
    const float nbins = (float)bins;
    memset(out, 0, (size_t)bins * sizeof *out);
    /* Counts are integers in float (exact below 2^24 per bin): any order gives them. */
#pragma omp parallel for reduction(+ : out[:bins]) if (n > 65536) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        if (!(v >= left && v <= right))
            continue;
        int64_t pos = (int64_t)((v - left) * nbins / width);
        pos = pos >= bins ? bins - 1 : pos < 0 ? 0 : pos;
        out[pos] += 1.0f;
    }
}

/* ---- HistogramObserver.forward ----------------------------------------------------- */

/* The scratch: `bins` floats, then `bins` doubles (8-aligned). */
static float *work_floats(void *work) { return work; }
static double *work_doubles(void *work, int32_t bins)
{
    return (double *)((char *)work + (((size_t)bins * sizeof(float) + 15) & ~(size_t)15));
}

size_t qat_histogram_work_size(int32_t bins)
{
    return (((size_t)bins * sizeof(float) + 15) & ~(size_t)15) + (size_t)bins * sizeof(double);
}

/* _combine_histograms: the old histogram, each bin repeated `up` times, sits at
 * start_idx in a grid of bins * down cells; a float64 cumulative sum sampled every
 * `down` cells is differenced (against its float32 copy, as PyTorch's zeros() buffer
 * stores it), divided by `up` and added to the new histogram. The grid is never built:
 * its only nonzero cells are the old bins, summed in order. PyTorch raises when the
 * placed histogram overruns the grid by a rounding cell; here it is clipped. */
static void combine(float *new_hist, const float *old_hist, int32_t bins, int64_t down,
                    int64_t start, double *integral)
{
    const int64_t up = UPSAMPLE_RATE;
    int64_t len = (int64_t)bins * up, grid = (int64_t)bins * down;
    if (start + len > grid)
        len = grid - start;
    double acc = 0.0;
    int64_t j = 0; /* next cell of the placed histogram to add */
    for (int32_t k = 0; k < bins; k++) {
        int64_t last = (int64_t)k * down + down - 1; /* cell sampled for output bin k */
        for (; j < len && start + j <= last; j++)
            acc += (double)old_hist[j / up];
        integral[k] = acc;
    }
    for (int32_t k = 0; k < bins; k++) {
        double shifted = k ? (double)(float)integral[k - 1] : 0.0;
        new_hist[k] += (float)((integral[k] - shifted) / (double)up);
    }
}

/* torch.round / std::nearbyint on float32: round half to even (the default mode). */
static float rne(float v) { return nearbyintf(v); }

ag_status qat_histogram_observe(float *hist, int32_t bins, float *min_val, float *max_val,
                                const float *x, int64_t n, void *work)
{
    if (n == 0)
        return AG_OK;
    float xmin, xmax;
    qat_aminmax(x, n, &xmin, &xmax);
    if (!isfinite(xmin) || !isfinite(xmax))
        return ag_error(AG_ERR_NUMERIC, "HistogramObserver: the input holds NaN or Inf "
                        "(min %g, max %g)", (double)xmin, (double)xmax);
    float *fresh = work_floats(work);
    bool uninitialized = *min_val == INFINITY && *max_val == -INFINITY;
    if (uninitialized || *min_val == *max_val) {
        histc(x, n, bins, trunc((double)xmin), trunc((double)xmax), hist);
        *min_val = xmin;
        *max_val = xmax;
        return AG_OK;
    }
    /* _adjust_min_max: a grid of pitch (max - min) / (bins * up) that also covers the
     * combined range, widened at the top only. */
    float cmin = nan_min(xmin, *min_val), cmax = nan_max(xmax, *max_val);
    float pitch = (*max_val - *min_val) / (float)((int64_t)bins * UPSAMPLE_RATE);
    float ratio = (cmax - cmin) / ((float)bins * pitch);
    if (!(ratio < 0x1p40f))
        return ag_error(AG_ERR_NUMERIC, "HistogramObserver: new range [%g, %g] is too far "
                        "from the observed [%g, %g] to merge", (double)xmin, (double)xmax,
                        (double)*min_val, (double)*max_val);
    int64_t down = (int64_t)ceilf(ratio);
    float extra = (float)down * ((float)bins * pitch) - (cmax - cmin);
    cmax = cmax + extra;
    int64_t start = (int64_t)rne((*min_val - cmin) / pitch);

    histc(x, n, bins, trunc((double)cmin), trunc((double)cmax), fresh);
    if (cmin == *min_val && cmax == *max_val) {
        for (int32_t i = 0; i < bins; i++)
            fresh[i] += hist[i];
    } else {
        combine(fresh, hist, bins, down, start, work_doubles(work, bins));
    }
    memcpy(hist, fresh, (size_t)bins * sizeof *hist);
    *min_val = cmin;
    *max_val = cmax;
    return AG_OK;
}

/* ---- _non_linear_param_search ------------------------------------------------------ */

/* torch.div(a, b, rounding_mode='floor') on float32 (BinaryOpsKernel div_floor). */
static float div_floor(float a, float b)
{
    if (b == 0.0f)
        return a / b;
    float mod = fmodf(a, b);
    float div = (a - mod) / b;
    if (mod != 0.0f && (b < 0.0f) != (mod < 0.0f))
        div -= 1.0f;
    if (div == 0.0f)
        return copysignf(0.0f, a / b);
    float floordiv = floorf(div);
    if (div - floordiv > 0.5f)
        floordiv += 1.0f;
    return floordiv;
}

static float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

/* _get_norm: density * (end^3 - begin^3) / 3, in float32 ops. */
static float l2_piece(float begin, float end, float density)
{
    float norm = ((end * end) * end - (begin * begin) * begin) / 3.0f;
    return density * norm;
}

/* _compute_quantization_error: the L2 error of mapping bins [first, last] onto
 * dst_nbins uniform bins, summed with torch.sum. `norm` is scratch of `bins` floats. */
static double quant_error(const float *hist, int32_t bins, float min_val, float max_val,
                          int64_t dst_nbins, int64_t first, int64_t last, float *norm)
{
    double bin_width = ((double)max_val - (double)min_val) / bins;
    double dst_width = bin_width * (double)(last - first + 1) / (double)dst_nbins;
    if (dst_width == 0.0)
        return 0.0;
    const float bw = (float)bin_width, dw = (float)dst_width;
    const float half = (float)(dst_width / 2), neg_half = (float)(-dst_width / 2);
    const float top = (float)(dst_nbins - 1);
    const float mid_norm = ((half * half) * half - (neg_half * neg_half) * neg_half) / 3.0f;
    for (int32_t i = 0; i < bins; i++) {
        float src_begin = (float)(i - first) * bw;
        float src_end = src_begin + bw;
        float dst_of_begin = clampf(div_floor(src_begin, dw), 0.0f, top);
        float dst_of_end = clampf(div_floor(src_end, dw), 0.0f, top);
        float begin_center = (dst_of_begin + 0.5f) * dw;
        float end_center = dst_of_end * dw + half;
        float density = hist[i] / bw;
        float v = l2_piece(src_begin - begin_center, half, density);
        v += ((dst_of_end - dst_of_begin) - 1.0f) * (density * mid_norm);
        v += l2_piece(neg_half, src_end - end_center, density);
        norm[i] = v;
    }
    return (double)torch_sum_f32(norm, bins);
}

void qat_histogram_search(const float *hist, int32_t bins, float min_val, float max_val,
                          int64_t dst_nbins, void *work, float *new_min, float *new_max)
{
    float *csum = work_floats(work);
    float *norm = (float *)work_doubles(work, bins);
    const float bin_width = (max_val - min_val) / (float)bins;
    const double total = (double)torch_sum_f32(hist, bins);
    double run = 0.0; /* torch.cumsum of float32 accumulates in double */
    for (int32_t i = 0; i < bins; i++) {
        run += hist[i];
        csum[i] = (float)run;
    }
    const double step = 1e-5;
    double alpha = 0.0, beta = 1.0, norm_min = INFINITY;
    int64_t start = 0, end = bins - 1;
    while (alpha < beta) {
        double next_alpha = alpha + step, next_beta = beta - step;
        /* cSum[l] < next_alpha * total compares in float32 (the tensor's dtype). */
        float lo_mass = (float)(next_alpha * total), hi_mass = (float)(next_beta * total);
        int64_t l = start, r = end;
        while (l < end && csum[l] < lo_mass)
            l++;
        while (r > start && csum[r] > hi_mass)
            r--;
        int64_t next_start = start, next_end = end;
        if (l - start > end - r) {
            next_start = l;
            alpha = next_alpha;
        } else {
            next_end = r;
            beta = next_beta;
        }
        if (next_start == start && next_end == end)
            continue;
        double err = quant_error(hist, bins, min_val, max_val, dst_nbins, next_start, next_end,
                                 norm);
        if (err > norm_min)
            break;
        norm_min = err;
        start = next_start;
        end = next_end;
    }
    *new_min = min_val + bin_width * (float)start;
    *new_max = min_val + bin_width * (float)(end + 1);
}
