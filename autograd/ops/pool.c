/* pool.c — max, average and adaptive average pooling over NCHW planes.
 *
 * The loops follow PyTorch's contiguous CPU kernels (aten/src/ATen/native/cpu/
 * MaxPoolKernel.cpp, AvgPoolKernel.cpp, AdaptiveAvgPoolKernel.cpp): the same window
 * bounds, the same scan order, the same float sums and divisions, so the values agree
 * with F.max_pool2d / F.avg_pool2d / F.adaptive_avg_pool2d to the last bit or so.
 *
 * Every kernel works one (n, c) plane at a time. Planes are independent, so they are
 * what OpenMP splits, and each plane's gradient is written by one thread only (no
 * atomics even where windows overlap).
 */
#include "autograd/ag_impl.h"

#include <math.h>

/* Below this many window reads a loop is not worth waking the thread team for. */
enum { POOL_PAR_WORK = 32768 };

/* Bytes past the end of max_pool2d's argmax buffer, so that the 2x2 backward can read
 * sixteen offset codes at any row start (a row of refcnn's is 14 or 7 wide). */
enum { POOL_IDX_SLACK = 16 };

/* Node parameters shared by max_pool2d and avg_pool2d (ip[]). */
enum { IP_KH, IP_KW, IP_SH, IP_SW, IP_PH, IP_PW, IP_INCLUDE_PAD };

typedef struct pool_geom {
    int64_t planes; /* N * C */
    int64_t ih, iw; /* input plane */
    int64_t oh, ow; /* output plane */
    int64_t kh, kw, sh, sw, ph, pw;
} pool_geom;

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* ---- arguments and shapes ---- */

/* PyTorch's pool2d_shape_check and pooling_output_shape (floor mode): kernel > 0,
 * stride > 0 (0 here means = kernel), 0 <= padding <= kernel / 2, and at least one
 * output row and column. Sets the last error and returns false otherwise. */
static bool pool_geom_init(pool_geom *g, const char *op, const ag_tensor *x,
                           const ag_pool2d_args *a)
{
    char s[AG_SHAPE_STR_MAX];
    ag_shape_str(x, s, sizeof s);
    if (!a) {
        ag_error(AG_ERR_ARG, "%s: args is NULL", op);
        return false;
    }
    if (x->ndim != 4 || x->shape[1] == 0 || x->shape[2] == 0 || x->shape[3] == 0) {
        ag_error(AG_ERR_SHAPE, "%s: input %s must be [N, C, H, W] with non-zero C, H, W",
                 op, s);
        return false;
    }
    if (a->ceil_mode) {
        ag_error(AG_ERR_UNSUPPORTED, "%s: ceil_mode is not supported (input %s)", op, s);
        return false;
    }
    const int32_t *k = a->kernel, *p = a->padding;
    if (k[0] <= 0 || k[1] <= 0) {
        ag_error(AG_ERR_ARG, "%s: kernel %dx%d must be positive (input %s)", op, (int)k[0],
                 (int)k[1], s);
        return false;
    }
    if (a->stride[0] < 0 || a->stride[1] < 0) {
        ag_error(AG_ERR_ARG, "%s: stride %dx%d must be positive, or 0 for the kernel size",
                 op, (int)a->stride[0], (int)a->stride[1]);
        return false;
    }
    if (p[0] < 0 || p[1] < 0) {
        ag_error(AG_ERR_ARG, "%s: padding %dx%d must be non-negative", op, (int)p[0],
                 (int)p[1]);
        return false;
    }
    if (p[0] > k[0] / 2 || p[1] > k[1] / 2) {
        ag_error(AG_ERR_ARG, "%s: padding %dx%d must be at most half the kernel %dx%d", op,
                 (int)p[0], (int)p[1], (int)k[0], (int)k[1]);
        return false;
    }
    g->planes = x->shape[0] * x->shape[1];
    g->ih = x->shape[2];
    g->iw = x->shape[3];
    g->kh = k[0];
    g->kw = k[1];
    g->sh = a->stride[0] ? a->stride[0] : k[0];
    g->sw = a->stride[1] ? a->stride[1] : k[1];
    g->ph = p[0];
    g->pw = p[1];
    if (g->ih + 2 * g->ph < g->kh || g->iw + 2 * g->pw < g->kw) {
        ag_error(AG_ERR_SHAPE, "%s: input %s is smaller than the kernel %dx%d with padding %dx%d",
                 op, s, (int)k[0], (int)k[1], (int)p[0], (int)p[1]);
        return false;
    }
    g->oh = (g->ih + 2 * g->ph - g->kh) / g->sh + 1;
    g->ow = (g->iw + 2 * g->pw - g->kw) / g->sw + 1;
    return true;
}

/* The geometry a recorded max/avg pool node was made with. */
static pool_geom pool_geom_of(const ag_node *n)
{
    const ag_tensor *x = n->src[0];
    pool_geom g = {
        .planes = x->shape[0] * x->shape[1],
        .ih = x->shape[2], .iw = x->shape[3],
        .oh = n->out->shape[2], .ow = n->out->shape[3],
        .kh = n->ip[IP_KH], .kw = n->ip[IP_KW], .sh = n->ip[IP_SH], .sw = n->ip[IP_SW],
        .ph = n->ip[IP_PH], .pw = n->ip[IP_PW],
    };
    return g;
}

static void pool_geom_save(ag_node *n, const pool_geom *g)
{
    n->ip[IP_KH] = g->kh;
    n->ip[IP_KW] = g->kw;
    n->ip[IP_SH] = g->sh;
    n->ip[IP_SW] = g->sw;
    n->ip[IP_PH] = g->ph;
    n->ip[IP_PW] = g->pw;
}

static ag_tensor *pool_output(ag_ctx *ctx, const ag_tensor *x, int64_t oh, int64_t ow)
{
    return ag_op_output(ctx, 4, AG_SHAPE(x->shape[0], x->shape[1], oh, ow));
}

/* One window along one axis. [lo, hi) are the input cells it covers; `full` is its
 * length counting padding, PyTorch's min(start + k, in + pad) - start, which is the
 * count_include_pad divisor. */
typedef struct pool_span {
    int64_t lo, hi, full;
} pool_span;

static pool_span pool_span_at(int64_t o, int64_t k, int64_t stride, int64_t pad, int64_t in)
{
    int64_t start = o * stride - pad;
    int64_t end = min64(start + k, in + pad);
    pool_span s = {max64(start, 0), min64(end, in), end - start};
    return s;
}

/* ---- max_pool2d ---- */

/* F.max_pool2d on one plane. Padding acts as -inf: only real cells are scanned, and
 * the index starts at the first real cell (so an all -inf window points there). The
 * first maximum in scan order wins ties; a NaN always takes over (PyTorch's
 * `val > max || isnan(val)`), so NaN propagates and the last NaN holds the index. */
static void max_pool_plane(const float *x, float *y, int32_t *idx, const pool_geom *g)
{
    for (int64_t oh = 0; oh < g->oh; oh++) {
        pool_span sh = pool_span_at(oh, g->kh, g->sh, g->ph, g->ih);
        for (int64_t ow = 0; ow < g->ow; ow++) {
            pool_span sw = pool_span_at(ow, g->kw, g->sw, g->pw, g->iw);
            int64_t best_i = sh.lo * g->iw + sw.lo;
            float best = -INFINITY;
            for (int64_t h = sh.lo; h < sh.hi; h++)
                for (int64_t w = sw.lo; w < sw.hi; w++) {
                    float v = x[h * g->iw + w];
                    bool take = (v > best) | isnan(v); /* a select, not a branch */
                    best = take ? v : best;
                    best_i = take ? h * g->iw + w : best_i;
                }
            y[oh * g->ow + ow] = best;
            if (idx)
                idx[oh * g->ow + ow] = (int32_t)best_i;
        }
    }
}

/* Kernel 2, stride 2, no padding (MaxPool2d(2), the common case) has a path of its own,
 * which records the argmax as the window offset k (0..3 for cells a b / c d) in one
 * byte instead of an int32 plane index: a quarter of the index memory and traffic. */
static bool max_pool_is_2x2(const pool_geom *g)
{
    return g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0;
}

/* One plane, cells a b / c d scanned a, b, c, d with the same tie and NaN rule as
 * max_pool_plane. Written as selects (`|`, not `||`) so that GCC vectorises across
 * output columns: random data makes each comparison a coin flip, which as a branch
 * costs more than the whole loop. */
static void max_pool_2x2_plane(const float *restrict x, float *restrict y,
                               uint8_t *restrict idx, const pool_geom *g)
{
    const int32_t iw = (int32_t)g->iw, ow_n = (int32_t)g->ow; /* a plane fits int32 */
    for (int32_t oh = 0; oh < (int32_t)g->oh; oh++) {
        const float *top = x + 2 * oh * iw; /* (iw) */
        const float *bot = top + iw;        /* (iw) */
        float *yr = y + oh * ow_n;          /* (ow) */
        uint8_t *ir = idx ? idx + oh * ow_n : NULL;
        for (int32_t ow = 0; ow < ow_n; ow++) {
            float a = top[2 * ow], b = top[2 * ow + 1];
            float c = bot[2 * ow], d = bot[2 * ow + 1];
            float m = a;
            uint8_t k = 0;
            bool t = (b > m) | isnan(b);
            m = t ? b : m;
            k = t ? 1 : k;
            t = (c > m) | isnan(c);
            m = t ? c : m;
            k = t ? 2 : k;
            t = (d > m) | isnan(d);
            m = t ? d : m;
            k = t ? 3 : k;
            yr[ow] = m;
            if (ir)
                ir[ow] = k;
        }
    }
}

/* Its backward: the gradient of output (oh, ow) goes to cell k of its window. */
static void max_pool_2x2_plane_backward(float *restrict dx, const float *restrict dy,
                                        const uint8_t *restrict idx, const pool_geom *g)
{
    for (int64_t oh = 0; oh < g->oh; oh++) {
        float *top = dx + 2 * oh * g->iw, *bot = top + g->iw; /* (iw) each */
        const uint8_t *kr = idx + oh * g->ow;
        const float *dr = dy + oh * g->ow;
        for (int64_t ow = 0; ow < g->ow; ow++)
            ((kr[ow] & 2 ? bot : top) + 2 * ow)[kr[ow] & 1] += dr[ow];
    }
}

/* A last odd row and column of the input plane (H, W), which no 2x2 window covers and
 * whose gradient is zero, stored as zeros. */
static void max_pool_2x2_zero_uncovered(float *dx, const pool_geom *g)
{
    if (g->iw > 2 * g->ow)
        for (int64_t h = 0; h < 2 * g->oh; h++)
            dx[h * g->iw + g->iw - 1] = 0.0f;
    if (g->ih > 2 * g->oh)
        memset(dx + 2 * g->oh * g->iw, 0, (size_t)g->iw * sizeof(float));
}

/* The backward into a fresh dx (ag_grad_write): every cell is stored, the argmax of
 * its window with the window's gradient, the other three with zero. */
static void max_pool_2x2_plane_backward_store(float *restrict dx, const float *restrict dy,
                                              const uint8_t *restrict idx, const pool_geom *g)
{
    for (int64_t oh = 0; oh < g->oh; oh++) {
        float *top = dx + 2 * oh * g->iw, *bot = top + g->iw; /* (iw) each */
        const uint8_t *kr = idx + oh * g->ow;
        const float *dr = dy + oh * g->ow;
        for (int64_t ow = 0; ow < g->ow; ow++) {
            float d = dr[ow];
            top[2 * ow] = kr[ow] == 0 ? d : 0.0f;
            top[2 * ow + 1] = kr[ow] == 1 ? d : 0.0f;
            bot[2 * ow] = kr[ow] == 2 ? d : 0.0f;
            bot[2 * ow + 1] = kr[ow] == 3 ? d : 0.0f;
        }
    }
    max_pool_2x2_zero_uncovered(dx, g);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define POOL_AVX512 1
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f")))

/* The forward sixteen output columns at a time with AVX-512: 2.5-4x faster than the
 * SSE2 code the compiler makes for the baseline x86-64 target on refcnn's 14- and 7-wide
 * rows, where its vector loop barely starts. (The backward stays scalar: written the
 * same way, its masked stores of one row and loads of the next overlap, and on this
 * AMD CPU every such load waits for the store to retire; 3x slower than the scatter.) */
static inline AVX512 __mmask16 lanes_below(int64_t n)
{
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n > 0 ? n : 0)) - 1u);
}

/* One step of the scan: cell v (offset code) takes over if greater or NaN. */
static inline AVX512 void scan_cell(__m512 v, int code, __m512 *m, __m512i *k)
{
    __mmask16 take =
        _mm512_cmp_ps_mask(v, *m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    *m = _mm512_mask_blend_ps(take, *m, v);
    *k = _mm512_mask_blend_epi32(take, *k, _mm512_set1_epi32(code));
}

static AVX512 void max_pool_2x2_plane_avx512(const float *x, float *y, uint8_t *idx,
                                             const pool_geom *g)
{
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int64_t oh = 0; oh < g->oh; oh++)
        for (int64_t o0 = 0; o0 < g->ow; o0 += 16) {
            int64_t n = g->ow - o0 < 16 ? g->ow - o0 : 16; // outputs; inputs 2n
            __mmask16 m0 = lanes_below(2 * n), m1 = lanes_below(2 * n - 16);
            const float *top = x + 2 * oh * g->iw + 2 * o0, *bot = top + g->iw;
            __m512 t0 = _mm512_maskz_loadu_ps(m0, top),
                   t1 = _mm512_maskz_loadu_ps(m1, top + 16);
            __m512 b0 = _mm512_maskz_loadu_ps(m0, bot),
                   b1 = _mm512_maskz_loadu_ps(m1, bot + 16);
            __m512 m = _mm512_permutex2var_ps(t0, even, t1);
            __m512i k = _mm512_setzero_si512();
            scan_cell(_mm512_permutex2var_ps(t0, odd, t1), 1, &m, &k);
            scan_cell(_mm512_permutex2var_ps(b0, even, b1), 2, &m, &k);
            scan_cell(_mm512_permutex2var_ps(b0, odd, b1), 3, &m, &k);
            _mm512_mask_storeu_ps(y + oh * g->ow + o0, lanes_below(n), m);
            if (idx)
                _mm512_mask_cvtepi32_storeu_epi8(idx + oh * g->ow + o0, lanes_below(n), k);
        }
}

/* max_pool_2x2_plane_backward_store sixteen windows at a time: each of the four cells
 * masks dY by its offset code, and the cells of a row are interleaved into two
 * vectors of 16 columns. Plain stores, no loads of dx, so none of the store-to-load
 * stalls of a vector scatter. */
static AVX512 void max_pool_2x2_plane_backward_store_avx512(float *dx, const float *dy,
                                                            const uint8_t *idx,
                                                            const pool_geom *g)
{
    const __m512i lo =
        _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    for (int64_t oh = 0; oh < g->oh; oh++) {
        // dx is not in cache: the two input rows of window row oh + 2 are fetched ahead
        for (int64_t c = 0; oh + 2 < g->oh && c < 2 * g->iw; c += AG_LINE_FLOATS)
            ag_prefetch_store(dx + 2 * (oh + 2) * g->iw + c);
        for (int64_t o0 = 0; o0 < g->ow; o0 += 16) {
            int64_t n = g->ow - o0 < 16 ? g->ow - o0 : 16; // windows; columns 2n
            __mmask16 m = lanes_below(n), m0 = lanes_below(2 * n), m1 = lanes_below(2 * n - 16);
            /* codes past n (the next row's, or the slack) meet d = 0 and are not stored */
            __m512i k = _mm512_cvtepu8_epi32(
                _mm_loadu_si128((const __m128i *)(const void *)(idx + oh * g->ow + o0)));
            __m512 d = _mm512_maskz_loadu_ps(m, dy + oh * g->ow + o0);
            __m512 c[4];
            for (int i = 0; i < 4; i++)
                c[i] = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(i)), d);
            float *top = dx + 2 * oh * g->iw + 2 * o0, *bot = top + g->iw;
            _mm512_mask_storeu_ps(top, m0, _mm512_permutex2var_ps(c[0], lo, c[1]));
            _mm512_mask_storeu_ps(top + 16, m1, _mm512_permutex2var_ps(c[0], hi, c[1]));
            _mm512_mask_storeu_ps(bot, m0, _mm512_permutex2var_ps(c[2], lo, c[3]));
            _mm512_mask_storeu_ps(bot + 16, m1, _mm512_permutex2var_ps(c[2], hi, c[3]));
        }
    }
    max_pool_2x2_zero_uncovered(dx, g);
}

#else
#define POOL_AVX512 0
#endif

static bool pool_avx512(void)
{
#if POOL_AVX512
    return __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

/* One plane of max_pool2d: y, and the argmax (idx, NULL when backward does not need it):
 * int32 plane indices in general, window offsets (uint8) for 2x2. */
static void max_pool_plane_any(const float *x, float *y, void *idx, const pool_geom *g,
                               bool avx512)
{
    if (!max_pool_is_2x2(g))
        max_pool_plane(x, y, idx, g);
#if POOL_AVX512
    else if (avx512)
        max_pool_2x2_plane_avx512(x, y, idx, g);
#endif
    else
        max_pool_2x2_plane(x, y, idx, g);
    (void)avx512;
}

ag_tensor *ag_max_pool2d(ag_ctx *ctx, ag_tensor *x, const ag_pool2d_args *args)
{
    if (!x)
        return NULL;
    pool_geom g;
    if (!pool_geom_init(&g, "max_pool2d", x, args))
        return NULL;
    if (g.ih * g.iw > INT32_MAX) {
        char s[AG_SHAPE_STR_MAX];
        ag_error(AG_ERR_UNSUPPORTED, "max_pool2d: input %s has planes too large for int32 "
                                     "indices", ag_shape_str(x, s, sizeof s));
        return NULL;
    }
    ag_tensor *y = pool_output(ctx, x, g.oh, g.ow); /* (N, C, oh, ow) */
    if (!y)
        return NULL;
    /* argmax per output cell (see max_pool_plane_any); only when backward needs it */
    size_t idx_size = max_pool_is_2x2(&g) ? sizeof(uint8_t) : sizeof(int32_t);
    char *idx = NULL; /* (N, C, oh, ow) + POOL_IDX_SLACK zero bytes */
    if (ag_op_needs_record(ctx, &x, 1)) {
        size_t bytes = (size_t)y->numel * idx_size;
        idx = ag_ctx_alloc(ctx, bytes + POOL_IDX_SLACK);
        if (!idx)
            return NULL;
        memset(idx + bytes, 0, POOL_IDX_SLACK);
    }
    int64_t in_plane = g.ih * g.iw, out_plane = g.oh * g.ow;
    const float *xd = x->data;
    float *yd = y->data;
    bool avx512 = pool_avx512();
#pragma omp parallel for if (y->numel * g.kh * g.kw > POOL_PAR_WORK) schedule(static)
    for (int64_t p = 0; p < g.planes; p++)
        max_pool_plane_any(xd + p * in_plane, yd + p * out_plane,
                           idx ? idx + (size_t)(p * out_plane) * idx_size : NULL, &g, avx512);
    ag_node *n = ag_op_record(ctx, AG_OP_MAX_POOL2D, y, &x, 1);
    if (n && ag_op_recorded(n, y)) {
        pool_geom_save(n, &g);
        n->saved = idx;
    }
    return ag_op_recorded(n, y);
}

/* One plane of the backward: a scatter that adds, or for 2x2 into a fresh dx, stores.
 * A fresh dx that is scattered into is zeroed here, by the thread that owns the plane
 * and while it is in cache, rather than by the engine in a pass of its own. */
static void max_pool_plane_backward_any(float *dx, const float *dy, const void *idx,
                                        const pool_geom *g, bool fresh, bool avx512)
{
    if (max_pool_is_2x2(g) && fresh) {
#if POOL_AVX512
        if (avx512) {
            max_pool_2x2_plane_backward_store_avx512(dx, dy, idx, g);
            return;
        }
#endif
        max_pool_2x2_plane_backward_store(dx, dy, idx, g);
        return;
    }
    (void)avx512;
    if (fresh)
        memset(dx, 0, (size_t)(g->ih * g->iw) * sizeof(float));
    if (max_pool_is_2x2(g)) {
        max_pool_2x2_plane_backward(dx, dy, idx, g);
        return;
    }
    const int32_t *ip = idx; /* (oh, ow) */
    for (int64_t o = 0; o < g->oh * g->ow; o++)
        dx[ip[o]] += dy[o];
}

/* max_pool2d_with_indices_backward: each output gradient goes to its argmax. */
void ag_max_pool2d_backward(ag_ctx *ctx, ag_node *n)
{
    bool fresh;
    float *dx = ag_grad_write(ctx, n->src[0], &fresh); /* (N, C, ih, iw) */
    if (!dx)
        return;
    pool_geom g = pool_geom_of(n);
    const float *dy = n->out->grad; /* (N, C, oh, ow) */
    int64_t in_plane = g.ih * g.iw, out_plane = g.oh * g.ow;
    size_t idx_size = max_pool_is_2x2(&g) ? sizeof(uint8_t) : sizeof(int32_t);
    const char *idx = n->saved; /* (N, C, oh, ow) */
    bool avx512 = pool_avx512();
#pragma omp parallel for if (n->out->numel > POOL_PAR_WORK) schedule(static)
    for (int64_t p = 0; p < g.planes; p++)
        max_pool_plane_backward_any(dx + p * in_plane, dy + p * out_plane,
                                    idx + (size_t)(p * out_plane) * idx_size, &g, fresh, avx512);
}

/* ---- avg_pool2d ---- */

/* F.avg_pool2d on one plane: a float sum over the real cells of the window, divided
 * by the padded window size (count_include_pad) or by the number of real cells. With
 * floor mode and padding <= kernel / 2 every window holds at least one real cell. */
static void avg_pool_plane(const float *x, float *y, const pool_geom *g, bool include_pad)
{
    for (int64_t oh = 0; oh < g->oh; oh++) {
        pool_span sh = pool_span_at(oh, g->kh, g->sh, g->ph, g->ih);
        for (int64_t ow = 0; ow < g->ow; ow++) {
            pool_span sw = pool_span_at(ow, g->kw, g->sw, g->pw, g->iw);
            int64_t div = include_pad ? sh.full * sw.full : (sh.hi - sh.lo) * (sw.hi - sw.lo);
            float sum = 0.0f;
            for (int64_t h = sh.lo; h < sh.hi; h++)
                for (int64_t w = sw.lo; w < sw.hi; w++)
                    sum += x[h * g->iw + w];
            y[oh * g->ow + ow] = sum / (float)div;
        }
    }
}

static void avg_pool_plane_backward(float *dx, const float *dy, const pool_geom *g,
                                    bool include_pad)
{
    for (int64_t oh = 0; oh < g->oh; oh++) {
        pool_span sh = pool_span_at(oh, g->kh, g->sh, g->ph, g->ih);
        for (int64_t ow = 0; ow < g->ow; ow++) {
            pool_span sw = pool_span_at(ow, g->kw, g->sw, g->pw, g->iw);
            int64_t div = include_pad ? sh.full * sw.full : (sh.hi - sh.lo) * (sw.hi - sw.lo);
            float delta = dy[oh * g->ow + ow] / (float)div;
            for (int64_t h = sh.lo; h < sh.hi; h++)
                for (int64_t w = sw.lo; w < sw.hi; w++)
                    dx[h * g->iw + w] += delta;
        }
    }
}

ag_tensor *ag_avg_pool2d(ag_ctx *ctx, ag_tensor *x, const ag_pool2d_args *args)
{
    if (!x)
        return NULL;
    pool_geom g;
    if (!pool_geom_init(&g, "avg_pool2d", x, args))
        return NULL;
    ag_tensor *y = pool_output(ctx, x, g.oh, g.ow); /* (N, C, oh, ow) */
    if (!y)
        return NULL;
    bool include_pad = args->count_include_pad;
    int64_t in_plane = g.ih * g.iw, out_plane = g.oh * g.ow;
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for if (y->numel * g.kh * g.kw > POOL_PAR_WORK) schedule(static)
    for (int64_t p = 0; p < g.planes; p++)
        avg_pool_plane(xd + p * in_plane, yd + p * out_plane, &g, include_pad);
    ag_node *n = ag_op_record(ctx, AG_OP_AVG_POOL2D, y, &x, 1);
    if (n && ag_op_recorded(n, y)) {
        pool_geom_save(n, &g);
        n->ip[IP_INCLUDE_PAD] = include_pad;
    }
    return ag_op_recorded(n, y);
}

void ag_avg_pool2d_backward(ag_ctx *ctx, ag_node *n)
{
    float *dx = ag_grad(ctx, n->src[0]); /* (N, C, ih, iw) */
    if (!dx)
        return;
    pool_geom g = pool_geom_of(n);
    bool include_pad = n->ip[IP_INCLUDE_PAD] != 0;
    const float *dy = n->out->grad; /* (N, C, oh, ow) */
    int64_t in_plane = g.ih * g.iw, out_plane = g.oh * g.ow;
#pragma omp parallel for if (n->out->numel * g.kh * g.kw > POOL_PAR_WORK) schedule(static)
    for (int64_t p = 0; p < g.planes; p++)
        avg_pool_plane_backward(dx + p * in_plane, dy + p * out_plane, &g, include_pad);
}

/* ---- adaptive_avg_pool2d ---- */

/* Output cell o of O over an input axis of I covers [floor(o I / O), ceil((o+1) I / O)),
 * PyTorch's start_index / end_index (AdaptivePooling.h). */
static pool_span adaptive_span(int64_t o, int64_t out, int64_t in)
{
    pool_span s = {(o * in) / out, ((o + 1) * in + out - 1) / out, 0};
    s.full = s.hi - s.lo;
    return s;
}

/* cpu_adaptive_avg_pool: the sum divided by kh, then by kw, as PyTorch does it. */
static void adaptive_avg_plane(const float *x, float *y, int64_t ih, int64_t iw, int64_t oh,
                               int64_t ow)
{
    for (int64_t r = 0; r < oh; r++) {
        pool_span sh = adaptive_span(r, oh, ih);
        for (int64_t c = 0; c < ow; c++) {
            pool_span sw = adaptive_span(c, ow, iw);
            float sum = 0.0f;
            for (int64_t h = sh.lo; h < sh.hi; h++)
                for (int64_t w = sw.lo; w < sw.hi; w++)
                    sum += x[h * iw + w];
            y[r * ow + c] = sum / (float)sh.full / (float)sw.full;
        }
    }
}

static void adaptive_avg_plane_backward(float *dx, const float *dy, int64_t ih, int64_t iw,
                                        int64_t oh, int64_t ow)
{
    for (int64_t r = 0; r < oh; r++) {
        pool_span sh = adaptive_span(r, oh, ih);
        for (int64_t c = 0; c < ow; c++) {
            pool_span sw = adaptive_span(c, ow, iw);
            float delta = dy[r * ow + c] / (float)sh.full / (float)sw.full;
            for (int64_t h = sh.lo; h < sh.hi; h++)
                for (int64_t w = sw.lo; w < sw.hi; w++)
                    dx[h * iw + w] += delta;
        }
    }
}

ag_tensor *ag_adaptive_avg_pool2d(ag_ctx *ctx, ag_tensor *x, int32_t out_h, int32_t out_w)
{
    if (!x)
        return NULL;
    char s[AG_SHAPE_STR_MAX];
    if (x->ndim != 4 || x->shape[1] == 0 || x->shape[2] == 0 || x->shape[3] == 0) {
        ag_error(AG_ERR_SHAPE, "adaptive_avg_pool2d: input %s must be [N, C, H, W] with "
                               "non-zero C, H, W", ag_shape_str(x, s, sizeof s));
        return NULL;
    }
    /* PyTorch accepts an output size of 0 (an empty result), not a negative one. */
    if (out_h < 0 || out_w < 0) {
        ag_error(AG_ERR_ARG, "adaptive_avg_pool2d: output size %dx%d must be non-negative "
                             "(input %s)", (int)out_h, (int)out_w, ag_shape_str(x, s, sizeof s));
        return NULL;
    }
    ag_tensor *y = pool_output(ctx, x, out_h, out_w); /* (N, C, out_h, out_w) */
    if (!y)
        return NULL;
    int64_t planes = x->shape[0] * x->shape[1], ih = x->shape[2], iw = x->shape[3];
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for if (x->numel > POOL_PAR_WORK) schedule(static)
    for (int64_t p = 0; p < planes; p++)
        adaptive_avg_plane(xd + p * ih * iw, yd + p * out_h * out_w, ih, iw, out_h, out_w);
    ag_node *n = ag_op_record(ctx, AG_OP_ADAPTIVE_AVG_POOL2D, y, &x, 1);
    return ag_op_recorded(n, y);
}

void ag_adaptive_avg_pool2d_backward(ag_ctx *ctx, ag_node *n)
{
    ag_tensor *x = n->src[0];
    float *dx = ag_grad(ctx, x); /* (N, C, ih, iw) */
    if (!dx)
        return;
    const float *dy = n->out->grad; /* (N, C, oh, ow) */
    int64_t planes = x->shape[0] * x->shape[1], ih = x->shape[2], iw = x->shape[3];
    int64_t oh = n->out->shape[2], ow = n->out->shape[3];
#pragma omp parallel for if (x->numel > POOL_PAR_WORK) schedule(static)
    for (int64_t p = 0; p < planes; p++)
        adaptive_avg_plane_backward(dx + p * ih * iw, dy + p * oh * ow, ih, iw, oh, ow);
}
