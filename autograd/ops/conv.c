/* conv.c — 2-D convolution, torch.nn.functional.conv2d (zero padding, stride, dilation,
 * groups; a 3-D input is one unbatched sample, as in PyTorch).
 *
 *   y[n, o, oh, ow] = b[o] + sum_{c, i, j} w[o, c, i, j]
 *                     * x[n, g Cg + c, oh sh - ph + i dh, ow sw - pw + j dw]
 * for output channel o in group g = o / Og (Cg = C_in / groups, Og = C_out / groups),
 * with x = 0 outside the image and H_out = (H + 2 ph - dh (kH - 1) - 1) / sh + 1 (floor).
 *
 * Three paths:
 *   - direct (stride 1, not depthwise nor plain 1x1, on CPUs with AVX-512; refcnn's
 *     three convolutions): register tiles that read zero-bordered copies of the input
 *     planes, no im2col, no sgemm; dx is the same kind of convolution of dY and dW a
 *     tile of taps x channels fed position by position. See "direct path" below.
 *   - general: one (sample, group) at a time, im2col builds the column matrix col
 *     (K, P), K = Cg kH kW, P = H_out W_out, from bordered planes, and one sgemm
 *     W_g (Og, K) . col writes that block of y in place (it is contiguous in NCHW). A
 *     1x1 convolution with stride 1 and no padding needs no im2col: col is x itself.
 *     Backward per (sample, group): dW_g += dY_g col^T, dcol = W_g^T dY_g added back
 *     into dx by col2im.
 *   - depthwise (groups == C_in == C_out): a direct loop; its sgemm would be a
 *     matrix-vector product with K = kH kW, all overhead (the loop is 2-4x faster than
 *     im2col + sgemm on [64, 32..128, 7..28, 7..28], 3x3, padding 1).
 *
 * Threads: samples run in parallel (static schedule), each thread with its own scratch
 * and its own partial dW (and db on the direct path), summed in thread order at the
 * end: the same result for the same thread count. On the general path each sgemm runs
 * on its calling thread only: OpenBLAS's OpenMP build (which cqat links) does not thread
 * a call made inside a parallel region, and the per-sample products are small (32 x 196
 * x 144 for refcnn's conv2) and threaded poorly by OpenBLAS anyway.
 */
#include "autograd/ag_impl.h"

#include <cblas.h>
#include <inttypes.h>
#include <stdio.h>
#include <omp.h>

/* Below this many multiply-adds a convolution runs on one thread; at most this many
 * threads share one (each has its own scratch, described on the stack). */
enum { CONV_PARALLEL_MIN_MACS = 1 << 18, CONV_MAX_THREADS = 64 };

/* Sizes and arguments in one place, as int64 so that no product overflows. */
typedef struct conv_geom {
    int64_t n, c_in, h, w; // x (N, C_in, H, W); N = 1 for an unbatched x
    int64_t c_out, kh, kw; // weight (C_out, Cg, kH, kW)
    int64_t ho, wo;        // y (N, C_out, H_out, W_out)
    int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
    int64_t groups, cg, og; // channels per group: in (Cg), out (Og)
    int64_t k, p;           // column matrix (K, P): K = Cg kH kW, P = H_out W_out
    bool pointwise;         // 1x1, stride 1, no padding: col is x itself
    bool depthwise;         // Cg == Og == 1: the direct loop
} conv_geom;

static const ag_conv2d_args conv_defaults = {{1, 1}, {0, 0}, {1, 1}, 1};

static void conv_geom_init(conv_geom *g, const ag_tensor *x, const ag_tensor *w,
                           const ag_conv2d_args *a)
{
    int32_t d = x->ndim - 3; // 1 if batched
    g->n = d ? x->shape[0] : 1;
    g->c_in = x->shape[d];
    g->h = x->shape[d + 1];
    g->w = x->shape[d + 2];
    g->c_out = w->shape[0];
    g->kh = w->shape[2];
    g->kw = w->shape[3];
    g->stride_h = a->stride[0];
    g->stride_w = a->stride[1];
    g->pad_h = a->padding[0];
    g->pad_w = a->padding[1];
    g->dil_h = a->dilation[0];
    g->dil_w = a->dilation[1];
    g->groups = a->groups;
    g->cg = w->shape[1];
    g->og = g->c_out / g->groups;
    g->ho = (g->h + 2 * g->pad_h - g->dil_h * (g->kh - 1) - 1) / g->stride_h + 1;
    g->wo = (g->w + 2 * g->pad_w - g->dil_w * (g->kw - 1) - 1) / g->stride_w + 1;
    g->k = g->cg * g->kh * g->kw;
    g->p = g->ho * g->wo;
    g->pointwise = g->kh == 1 && g->kw == 1 && g->stride_h == 1 && g->stride_w == 1 &&
                   g->pad_h == 0 && g->pad_w == 0;
    g->depthwise = g->cg == 1 && g->og == 1;
}

/* ---- argument checks ---------------------------------------------------------------- */

/* Sets "conv2d: <what> (input [..], weight [..])" and returns false. */
static bool conv_arg_error(const ag_tensor *x, const ag_tensor *w, const char *what)
{
    char sx[AG_SHAPE_STR_MAX], sw[AG_SHAPE_STR_MAX];
    ag_error(AG_ERR_ARG, "conv2d: %s (input %s, weight %s)", what,
             ag_shape_str(x, sx, sizeof sx), ag_shape_str(w, sw, sizeof sw));
    return false;
}

static bool conv_check_args(const ag_tensor *x, const ag_tensor *w, const ag_conv2d_args *a)
{
    char what[128];
    if (a->groups < 1) {
        snprintf(what, sizeof what, "groups must be positive, got %d", (int)a->groups);
        return conv_arg_error(x, w, what);
    }
    if (a->stride[0] < 1 || a->stride[1] < 1) {
        snprintf(what, sizeof what, "stride must be positive, got (%d, %d)", (int)a->stride[0],
                 (int)a->stride[1]);
        return conv_arg_error(x, w, what);
    }
    if (a->dilation[0] < 1 || a->dilation[1] < 1) {
        snprintf(what, sizeof what, "dilation must be positive, got (%d, %d)",
                 (int)a->dilation[0], (int)a->dilation[1]);
        return conv_arg_error(x, w, what);
    }
    if (a->padding[0] < 0 || a->padding[1] < 0) {
        snprintf(what, sizeof what, "padding must be non-negative, got (%d, %d)",
                 (int)a->padding[0], (int)a->padding[1]);
        return conv_arg_error(x, w, what);
    }
    return true;
}

static bool conv_check_shapes(const ag_tensor *x, const ag_tensor *w, const ag_tensor *b,
                              const ag_conv2d_args *a)
{
    char sx[AG_SHAPE_STR_MAX], sw[AG_SHAPE_STR_MAX], sb[AG_SHAPE_STR_MAX];
    ag_shape_str(x, sx, sizeof sx);
    ag_shape_str(w, sw, sizeof sw);
    if (x->ndim != 3 && x->ndim != 4) {
        ag_error(AG_ERR_SHAPE, "conv2d: input %s must be 4-D (N, C, H, W) or 3-D (C, H, W)",
                 sx);
        return false;
    }
    if (w->ndim != 4) {
        ag_error(AG_ERR_SHAPE, "conv2d: weight %s must be 4-D (C_out, C_in/groups, kH, kW)",
                 sw);
        return false;
    }
    if (w->shape[2] < 1 || w->shape[3] < 1) {
        ag_error(AG_ERR_SHAPE, "conv2d: weight %s has an empty kernel", sw);
        return false;
    }
    if (w->shape[0] % a->groups) {
        ag_error(AG_ERR_SHAPE,
                 "conv2d: weight %s has %" PRId64 " output channels, which "
                 "groups=%d does not divide (input %s)",
                 sw, w->shape[0], (int)a->groups, sx);
        return false;
    }
    int64_t c_in = x->shape[x->ndim - 3];
    if (c_in != w->shape[1] * a->groups) {
        char per_group[48] = "";
        if (a->groups != 1)
            snprintf(per_group, sizeof per_group, " (%" PRId64 " per group x groups=%d)",
                     w->shape[1], (int)a->groups);
        ag_error(AG_ERR_SHAPE,
                 "conv2d: input %s has %" PRId64 " channels, weight %s expects %" PRId64 "%s",
                 sx, c_in, sw, w->shape[1] * a->groups, per_group);
        return false;
    }
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0])) {
        ag_error(AG_ERR_SHAPE,
                 "conv2d: bias %s must be [%" PRId64 "], one value per output "
                 "channel of weight %s",
                 ag_shape_str(b, sb, sizeof sb), w->shape[0], sw);
        return false;
    }
    return true;
}

/* The output must have at least one row and column: the padded input must hold the
 * dilated kernel (PyTorch: "Kernel size can't be greater than actual input size"). */
static bool conv_check_output(const ag_tensor *x, const ag_tensor *w, const ag_conv2d_args *a)
{
    char sx[AG_SHAPE_STR_MAX], sw[AG_SHAPE_STR_MAX];
    int64_t span[2];
    for (int d = 0; d < 2; d++)
        span[d] = x->shape[x->ndim - 2 + d] + 2 * (int64_t)a->padding[d] -
                  (int64_t)a->dilation[d] * (w->shape[2 + d] - 1);
    if (span[0] >= 1 && span[1] >= 1)
        return true;
    ag_error(AG_ERR_SHAPE,
             "conv2d: input %s padded by (%d, %d) is %" PRId64 "x%" PRId64
             ", smaller than the kernel of weight %s dilated by (%d, %d) "
             "(output size < 1)",
             ag_shape_str(x, sx, sizeof sx), (int)a->padding[0], (int)a->padding[1],
             x->shape[x->ndim - 2] + 2 * (int64_t)a->padding[0],
             x->shape[x->ndim - 1] + 2 * (int64_t)a->padding[1], ag_shape_str(w, sw, sizeof sw),
             (int)a->dilation[0], (int)a->dilation[1]);
    return false;
}

/* ---- threads and BLAS ----------------------------------------------------------------- */

/* OpenMP threads for a loop over `items` independent pieces costing `macs` in all. */
static int conv_threads(int64_t items, int64_t macs)
{
    if (items < 2 || macs < CONV_PARALLEL_MIN_MACS)
        return 1;
    int nt = omp_get_max_threads();
    nt = nt < CONV_MAX_THREADS ? nt : CONV_MAX_THREADS;
    return items < nt ? (int)items : nt;
}

/* Row-major C (m, n) = op(A) (m, k) . op(B) (k, n) + beta C; an empty sum is zero. */
static void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a,
                  int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    if (m == 0 || n == 0)
        return;
    if (k == 0) {
        if (beta == 0.0f)
            for (int64_t i = 0; i < m; i++)
                memset(c + i * ldc, 0, (size_t)n * sizeof(float));
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)m, (blasint)n, (blasint)k, 1.0f, a, (blasint)lda, b, (blasint)ldb,
                beta, c, (blasint)ldc);
}

/* ---- im2col / col2im ------------------------------------------------------------------ */

/* The outputs o in [*lo, *hi) (of n_out) whose input index o * stride + off lies in
 * [0, size); the others read padding. */
static void valid_range(int64_t off, int64_t stride, int64_t size, int64_t n_out, int64_t *lo,
                        int64_t *hi)
{
    int64_t l = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t h = off >= size ? 0 : (size - 1 - off) / stride + 1;
    if (h > n_out)
        h = n_out;
    *lo = l < h ? l : h;
    *hi = h;
}

/* Padding is made real before im2col: one group's channels are copied into planes with
 * a zero border, xp (Cg, Hp, Wp) with Hp = H + 2 ph, Wp = W + 2 pw, so that every row
 * of col is a plain strided copy without bounds. Clipping each row to the image instead
 * (short memcpy and memset calls per row) cost as much as the sgemm itself on refcnn's
 * 14-wide rows. Without padding, x itself is the padded plane. */
static int64_t padded_h(const conv_geom *g)
{
    return g->h + 2 * g->pad_h;
}

static int64_t padded_w(const conv_geom *g)
{
    return g->w + 2 * g->pad_w;
}

/* Floats of one group's padded planes, 0 if x can be used as it is. */
static int64_t padded_floats(const conv_geom *g)
{
    bool padded = g->pad_h || g->pad_w;
    return padded && !g->pointwise ? g->cg * padded_h(g) * padded_w(g) : 0;
}

/* d[k] = s[k stride] for k < n: the compiler vectorises the stride-1 copy (refcnn's
 * rows are 7..28 floats, too short for a memcpy call to pay). */
static void copy_row(float *restrict d, const float *restrict s, int64_t stride, int64_t n)
{
    if (stride == 1)
        for (int64_t k = 0; k < n; k++)
            d[k] = s[k];
    else
        for (int64_t k = 0; k < n; k++)
            d[k] = s[k * stride];
}

/* d[k stride] += s[k] for k < n. */
static void add_row(float *restrict d, const float *restrict s, int64_t stride, int64_t n)
{
    if (stride == 1)
        for (int64_t k = 0; k < n; k++)
            d[k] += s[k];
    else
        for (int64_t k = 0; k < n; k++)
            d[k * stride] += s[k];
}

/* v[0] + ... + v[n-1]: eight interleaved float lanes (which vectorise, and round less
 * than one running total), combined in double. */
static double sum_floats(const float *v, int64_t n)
{
    float lane[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            lane[l] += v[i + l];
    double s = 0.0;
    for (; i < n; i++)
        s += v[i];
    for (int l = 0; l < 8; l++)
        s += lane[l];
    return s;
}

/* The interior of xp (Cg, Hp, Wp) = x (Cg, H, W); the border is left as it is (zero). */
static void pad_planes(const conv_geom *g, const float *x, float *xp)
{
    int64_t hp = padded_h(g), wp = padded_w(g);
    for (int64_t c = 0; c < g->cg; c++)
        for (int64_t h = 0; h < g->h; h++)
            copy_row(xp + (c * hp + h + g->pad_h) * wp + g->pad_w, x + (c * g->h + h) * g->w, 1,
                     g->w);
}

/* dx (Cg, H, W) += the interior of dxp (Cg, Hp, Wp). */
static void unpad_planes_add(const conv_geom *g, const float *dxp, float *dx)
{
    int64_t hp = padded_h(g), wp = padded_w(g);
    for (int64_t c = 0; c < g->cg; c++)
        for (int64_t h = 0; h < g->h; h++)
            add_row(dx + (c * g->h + h) * g->w, dxp + (c * hp + h + g->pad_h) * wp + g->pad_w,
                    1, g->w);
}

/* col (K, P) from padded planes xp (Cg, Hp, Wp): row (c, i, j), in the weight's
 * (Cg, kH, kW) order, holds xp[c, oh sh + i dh, ow sw + j dw] at column (oh, ow). */
static void im2col(const conv_geom *g, const float *xp, float *col)
{
    int64_t hp = padded_h(g), wp = padded_w(g);
    for (int64_t c = 0; c < g->cg; c++)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++) {
                const float *src = xp + (c * hp + i * g->dil_h) * wp + j * g->dil_w;
                float *row = col + ((c * g->kh + i) * g->kw + j) * g->p;
                for (int64_t oh = 0; oh < g->ho; oh++)
                    copy_row(row + oh * g->wo, src + oh * g->stride_h * wp, g->stride_w, g->wo);
            }
}

/* The adjoint of im2col: dxp (Cg, Hp, Wp) += col2im(dcol (K, P)). */
static void col2im(const conv_geom *g, const float *dcol, float *dxp)
{
    int64_t hp = padded_h(g), wp = padded_w(g);
    for (int64_t c = 0; c < g->cg; c++)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++) {
                float *dst = dxp + (c * hp + i * g->dil_h) * wp + j * g->dil_w;
                const float *row = dcol + ((c * g->kh + i) * g->kw + j) * g->p;
                for (int64_t oh = 0; oh < g->ho; oh++)
                    add_row(dst + oh * g->stride_h * wp, row + oh * g->wo, g->stride_w, g->wo);
            }
}

/* ---- general path: im2col + sgemm per (sample, group) ----------------------------- */

/* One thread's scratch (NULL where not needed): col and dcol (K, P); xp and dxp, one
 * group's padded planes (Cg, Hp, Wp), whose border xp keeps at zero. */
typedef struct conv_scratch {
    float *col, *dcol, *xp, *dxp;
} conv_scratch;

/* Scratch for nt threads, each slice rounded to 64 bytes (no two threads share a cache
 * line); the xp borders are zeroed here once. Returns false on OOM. */
static bool scratch_alloc(ag_ctx *ctx, const conv_geom *g, int nt, bool col, bool dcol,
                          conv_scratch *s)
{
    int64_t col_f = g->pointwise ? 0 : g->k * g->p, pad_f = padded_floats(g);
    int64_t sizes[4] = {col ? col_f : 0, dcol ? col_f : 0, col ? pad_f : 0, dcol ? pad_f : 0};
    int64_t per_thread = 0;
    for (int i = 0; i < 4; i++)
        per_thread += (sizes[i] + 15) / 16 * 16;
    memset(s, 0, (size_t)nt * sizeof *s);
    if (per_thread == 0)
        return true;
    float *base = ag_ctx_alloc(ctx, (size_t)(nt * per_thread) * sizeof(float));
    if (!base)
        return false;
    for (int t = 0; t < nt; t++) {
        float *p = base + t * per_thread,
              **slot[4] = {&s[t].col, &s[t].dcol, &s[t].xp, &s[t].dxp};
        for (int i = 0; i < 4; i++) {
            *slot[i] = sizes[i] ? p : NULL;
            p += (sizes[i] + 15) / 16 * 16;
        }
        if (s[t].xp)
            memset(s[t].xp, 0, (size_t)pad_f * sizeof(float));
    }
    return true;
}

/* col (K, P) for one group's channels xg (Cg, H, W), through xp if there is padding. */
static const float *lower(const conv_geom *g, const float *xg, const conv_scratch *s)
{
    if (g->pointwise)
        return xg;
    if (s->xp) {
        pad_planes(g, xg, s->xp);
        xg = s->xp;
    }
    im2col(g, xg, s->col);
    return s->col;
}

/* y (C_out, P) of one sample from x (C_in, H, W). */
static void forward_sample(const conv_geom *g, const float *x, const float *w, const float *b,
                           float *y, const conv_scratch *s)
{
    for (int64_t grp = 0; grp < g->groups; grp++) {
        const float *xg = x + grp * g->cg * g->h * g->w; // (Cg, H, W)
        const float *wg = w + grp * g->og * g->k;        // (Og, K)
        float *yg = y + grp * g->og * g->p;              // (Og, P)
        const float *col = lower(g, xg, s);              // (K, P)
        if (b) // bias rows first; sgemm then adds W col onto them (beta = 1)
            for (int64_t o = 0; o < g->og; o++)
                for (int64_t q = 0; q < g->p; q++)
                    yg[o * g->p + q] = b[grp * g->og + o];
        sgemm(false, false, g->og, g->p, g->k, wg, g->k, col, g->p, b ? 1.0f : 0.0f, yg, g->p);
    }
}

/* dxg (Cg, H, W) += col2im(W_g^T dY_g) for one group. */
static void input_grad_group(const conv_geom *g, const float *wg, const float *dyg, float *dxg,
                             const conv_scratch *s)
{
    if (g->pointwise) { // 1x1: dcol is dx itself, so sgemm accumulates in place
        sgemm(true, false, g->k, g->p, g->og, wg, g->k, dyg, g->p, 1.0f, dxg, g->p);
        return;
    }
    sgemm(true, false, g->k, g->p, g->og, wg, g->k, dyg, g->p, 0.0f, s->dcol, g->p);
    if (!s->dxp) {
        col2im(g, s->dcol, dxg);
        return;
    }
    memset(s->dxp, 0, (size_t)padded_floats(g) * sizeof(float));
    col2im(g, s->dcol, s->dxp);
    unpad_planes_add(g, s->dxp, dxg);
}

/* One sample's share of the backward: dw (C_out, K) += dY col^T if dw, and
 * dx (C_in, H, W) += col2im(W^T dY) if dx. */
static void backward_sample(const conv_geom *g, const float *x, const float *w, const float *dy,
                            float *dx, float *dw, const conv_scratch *s)
{
    for (int64_t grp = 0; grp < g->groups; grp++) {
        const float *xg = x + grp * g->cg * g->h * g->w; // (Cg, H, W)
        const float *dyg = dy + grp * g->og * g->p;      // (Og, P)
        if (dw)
            sgemm(false, true, g->og, g->k, g->p, dyg, g->p, lower(g, xg, s), g->p, 1.0f,
                  dw + grp * g->og * g->k, g->k);
        if (dx)
            input_grad_group(g, w + grp * g->og * g->k, dyg, dx + grp * g->cg * g->h * g->w, s);
    }
}

/* Inside these parallel loops each sgemm runs on its calling thread alone: OpenBLAS's
 * OpenMP build does not thread a call made from inside a parallel region. */
static bool conv_forward_general(ag_ctx *ctx, const conv_geom *g, const float *x,
                                 const float *w, const float *b, float *y)
{
    int nt = conv_threads(g->n, g->n * g->c_out * g->k * g->p);
    conv_scratch s[CONV_MAX_THREADS];
    if (!scratch_alloc(ctx, g, nt, true, false, s))
        return false;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < g->n; i++)
        forward_sample(g, x + i * g->c_in * g->h * g->w, w, b, y + i * g->c_out * g->p,
                       &s[omp_get_thread_num()]);
    return true;
}

/* Every thread accumulates dW into a zeroed partial of its own, added to dw once at the
 * end: no two threads add into one buffer, and a backward adds its whole contribution to
 * the parameter's gradient in one addition (so two passes give exactly twice one, as
 * PyTorch's accumulation into .grad does). A fresh dx (see ag_grad_write) is zeroed a
 * sample at a time by the thread that then adds into it. */
static bool conv_backward_general(ag_ctx *ctx, const conv_geom *g, const float *x,
                                  const float *w, const float *dy, float *dx, bool dx_fresh,
                                  float *dw)
{
    int nt = conv_threads(g->n, g->n * g->c_out * g->k * g->p * (!!dx + !!dw));
    size_t w_floats = (size_t)(g->c_out * g->k);
    float *dw_part = NULL;
    conv_scratch s[CONV_MAX_THREADS];
    if (!scratch_alloc(ctx, g, nt, dw != NULL, dx != NULL, s))
        return false;
    if (dw) {
        dw_part = ag_ctx_alloc(ctx, (size_t)nt * w_floats * sizeof(float)); // nt x (C_out, K)
        if (!dw_part)
            return false;
        memset(dw_part, 0, (size_t)nt * w_floats * sizeof(float));
    }
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < g->n; i++) {
        size_t t = (size_t)omp_get_thread_num();
        float *dw_t = dw ? dw_part + t * w_floats : NULL;
        float *dx_i = dx ? dx + i * g->c_in * g->h * g->w : NULL; // (C_in, H, W)
        if (dx_i && dx_fresh)
            memset(dx_i, 0, (size_t)(g->c_in * g->h * g->w) * sizeof(float));
        backward_sample(g, x + i * g->c_in * g->h * g->w, w, dy + i * g->c_out * g->p, dx_i,
                        dw_t, &s[t]);
    }
    for (size_t i = 0; dw_part && i < w_floats; i++) {
        float sum = dw_part[i];
        for (int t = 1; t < nt; t++)
            sum += dw_part[(size_t)t * w_floats + i];
        dw[i] += sum;
    }
    return true;
}

/* ---- direct path: AVX-512 register tiles, no im2col ------------------------------------ */

/* Stride-1 convolutions on CPUs with AVX-512 skip im2col and sgemm. The input planes
 * of a sample are copied once inside a zero border; then every output is a sum over
 * taps k = (c, i, j) of w[o, k] times the bordered plane shifted by the tap, and a
 * register tile holds a block of outputs while the taps stream past:
 *   - channel tile: 16 or 32 output channels x DT = 14 columns of one row (up to 28
 *     zmm accumulators), per tap one or two weight vectors x 14 broadcast inputs, then
 *     transposed into rows on the way out. For many taps (refcnn's conv2, conv3).
 *   - position tile: PC = 8 channels x PR = 3 rows x 16 columns, per tap three input
 *     vectors x 8 broadcast weights, stored as they are. For few taps (conv1: 9), where
 *     a channel tile would spend more on its transpose than on its taps, or few
 *     channels.
 * The input gradient is the same kind of convolution, of dY bordered by the kernel
 * extent minus the padding, with the weights flipped and transposed. The weight
 * gradient keeps DK = 12 taps x 32 output channels in registers while the positions of
 * a sample stream past, from the bordered input the forward kept and dY transposed.
 * Measured on refcnn's conv3 (per sample, one core of the 2-core AVX-512 machine these
 * benchmarks run on): the forward tile runs at 220 GFLOP/s, against 110 for OpenBLAS's
 * sgemm (its runtime detection picks its Haswell kernels for this CPU) before the
 * im2col that sgemm needs. Other CPUs, strides and shapes take the general path. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CONV_DIRECT 1
#include <immintrin.h>
#define CONV_AVX512 __attribute__((target("avx512f")))
#else
#define CONV_DIRECT 0
#endif

enum {
    DLANES = 16, /* floats per zmm register */
    DT = 14,     /* columns per channel tile: 2 x 14 accumulators + 2 weight vectors */
    PC = 8,      /* channels x rows per position tile: 8 x 3 accumulators + 3 inputs */
    PR = 3,
    POSITION_MAX_TAPS = 32, /* up to this many taps, position tiles */
    DK = 12, /* taps per weight-gradient tile: 12 x 2 accumulators + 2 dY vectors */
};

static bool direct_usable(const conv_geom *g)
{
#if CONV_DIRECT
    if (g->stride_h != 1 || g->stride_w != 1 || g->depthwise || g->pointwise)
        return false;
    /* dx is a convolution of dY bordered by (k - 1) d - p, which must not be negative */
    if (g->pad_h > (g->kh - 1) * g->dil_h || g->pad_w > (g->kw - 1) * g->dil_w)
        return false;
    return __builtin_cpu_supports("avx512f");
#else
    (void)g;
    return false;
#endif
}

static int64_t round_lanes(int64_t n)
{
    return (n + DLANES - 1) / DLANES * DLANES;
}

/* Padded planes of one sample: its channels inside a zero border, then DIRECT_SLACK
 * floats of zero slack, which the last tiles read past their rows (a channel tile up to
 * DT - 1 columns, a position tile up to 15). Samples keep their own slack so that no
 * thread reads a sample another thread is writing. */
enum { DIRECT_SLACK = 2 * DLANES };

static int64_t padded_sample_floats(int64_t planes, int64_t hp, int64_t wp)
{
    return (planes * hp * wp + DIRECT_SLACK + DLANES - 1) / DLANES * DLANES;
}

/* dst (planes, H + 2 ph, W + 2 pw) + slack = src (planes, H, W) inside a zero border. */
static void pad_sample(const float *src, int64_t planes, int64_t h, int64_t w, int64_t ph,
                       int64_t pw, float *dst)
{
    int64_t hp = h + 2 * ph, wp = w + 2 * pw;
    for (int64_t pl = 0; pl < planes; pl++) {
        float *d = dst + pl * hp * wp;
        const float *s = src + pl * h * w;
        memset(d, 0, (size_t)(ph * wp) * sizeof(float));
        for (int64_t y = 0; y < h; y++) {
            float *r = d + (ph + y) * wp;
            for (int64_t k = 0; k < pw; k++)
                r[k] = r[pw + w + k] = 0.0f;
            copy_row(r + pw, s + y * w, 1, w);
        }
        memset(d + (ph + h) * wp, 0, (size_t)(ph * wp) * sizeof(float));
    }
    int64_t used = planes * hp * wp;
    memset(dst + used, 0,
           (size_t)(padded_sample_floats(planes, hp, wp) - used) * sizeof(float));
}

/* One direct convolution of one sample, all groups:
 *   dst[g Od + o, oh, ow] (=, or += if accumulate) bias[g, o]
 *       + sum_k w[g, k, o] src[g Cs .., tap[k] + oh Wp + ow]
 * where src are the sample's padded planes and tap[k] the offset of tap k = (c, i, j)
 * within a group's planes: c Hp Wp + i dh Wp + j dw. */
typedef struct direct_conv {
    int64_t cs, hp, wp; // source channels per group, padded plane
    const int64_t *tap; // (K)
    int64_t k;          // taps per group
    const float *w;     // (groups, K, ldw), zero past Od
    int64_t ldw;        // round_lanes(Od)
    const float *bias;  // (groups, ldw) or NULL
    int64_t groups, od, ho, wo;
    bool accumulate;
} direct_conv;

#if CONV_DIRECT
/* r[0..16) as the rows of a 16 x 16 matrix, transposed in place (unpacks within 128-bit
 * lanes, then lane shuffles: 64 instructions instead of 256 scalar moves). */
static inline __attribute__((always_inline)) CONV_AVX512 void transpose16(__m512 r[DLANES])
{
    __m512 t[DLANES];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; g++) { // r[4 g + i]: column 4 l + i of rows 4 g.. in lane l
        __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
        __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
        r[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0x88);
        t[4 + i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0xdd);
        t[8 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0x88);
        t[12 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
        r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd);
        r[4 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0x88);
        r[12 + i] = _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0xdd);
    }
}

/* dst[0..n) = v (or += v if accumulate), n <= 16. */
static inline __attribute__((always_inline)) CONV_AVX512 void
store_cols(float *dst, __m512 v, __mmask16 cols, bool accumulate)
{
    if (accumulate)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(cols, dst));
    _mm512_mask_storeu_ps(dst, cols, v);
}

static __mmask16 first_lanes(int64_t n)
{
    return (__mmask16)((1u << n) - 1u);
}

/* Channel tile: output channels [o0, o0 + 16 V) x columns [q0, q0 + DT) of one output
 * row, acc[v][q] a vector of 16 channels. x is the tile's first input (tap offsets apply
 * to it), w and bias start at o0, out at dst[.., o0, oh, q0]; oc channels and tw columns
 * are stored. V is a constant once inlined, so acc stays in registers. */
static inline __attribute__((always_inline)) CONV_AVX512 void
channel_tile(const direct_conv *d, const float *x, const float *w, const float *bias,
             float *out, int64_t oc, int64_t tw, int V)
{
    __m512 acc[2][DT];
    for (int v = 0; v < V; v++) {
        __m512 b = bias ? _mm512_loadu_ps(bias + DLANES * v) : _mm512_setzero_ps();
        for (int q = 0; q < DT; q++)
            acc[v][q] = b;
    }
    for (int64_t k = 0; k < d->k; k++) {
        const float *xk = x + d->tap[k];
        const float *wk = w + k * d->ldw;
        __m512 w0 = _mm512_loadu_ps(wk);
        __m512 w1 = V > 1 ? _mm512_loadu_ps(wk + DLANES) : w0;
        for (int q = 0; q < DT; q++) {
            __m512 xb = _mm512_set1_ps(xk[q]);
            acc[0][q] = _mm512_fmadd_ps(w0, xb, acc[0][q]);
            if (V > 1)
                acc[1][q] = _mm512_fmadd_ps(w1, xb, acc[1][q]);
        }
    }
    // columns x channels -> channels x columns, one block of 16 channels at a time
    const __mmask16 cols = first_lanes(tw);
    const int64_t plane = d->ho * d->wo;
    for (int v = 0; v < V; v++) {
        __m512 r[DLANES];
        for (int q = 0; q < DLANES; q++)
            r[q] = q < DT ? acc[v][q] : _mm512_setzero_ps();
        transpose16(r);
        for (int64_t o = 0; o < DLANES && DLANES * v + o < oc; o++)
            store_cols(out + (DLANES * v + o) * plane, r[o], cols, d->accumulate);
    }
}

/* Position tile, for few taps (refcnn's conv1: 9) where a channel tile would spend more
 * on its transpose than on its taps: PC output channels [o0, o0 + PC) x R output rows
 * x 16 columns, acc[c][r] a vector of 16 columns stored as it is. Arguments as for
 * channel_tile, x and out at row oh; R is a constant once inlined. */
static inline __attribute__((always_inline)) CONV_AVX512 void
position_tile(const direct_conv *d, const float *x, const float *w, const float *bias,
              float *out, int64_t oc, int64_t tw, int R)
{
    __m512 acc[PC][PR];
    for (int c = 0; c < PC; c++)
        for (int r = 0; r < R; r++)
            acc[c][r] = bias ? _mm512_set1_ps(bias[c]) : _mm512_setzero_ps();
    for (int64_t k = 0; k < d->k; k++) {
        const float *xk = x + d->tap[k];
        const float *wk = w + k * d->ldw;
        __m512 xv[PR];
        for (int r = 0; r < R; r++)
            xv[r] = _mm512_loadu_ps(xk + r * d->wp);
        for (int c = 0; c < PC; c++) {
            __m512 wb = _mm512_set1_ps(wk[c]);
            for (int r = 0; r < R; r++)
                acc[c][r] = _mm512_fmadd_ps(wb, xv[r], acc[c][r]);
        }
    }
    const __mmask16 cols = first_lanes(tw);
    const int64_t plane = d->ho * d->wo;
    for (int64_t c = 0; c < PC && c < oc; c++)
        for (int r = 0; r < R; r++)
            store_cols(out + c * plane + r * d->wo, acc[c][r], cols, d->accumulate);
}

/* Work item r of the flattened (groups, Ho) of one sample (padded planes src, output
 * dst): every channel tile of output row r. */
static CONV_AVX512 void channel_row(const direct_conv *d, const float *src, float *dst,
                                    int64_t r)
{
    int64_t oh = r % d->ho, grp = r / d->ho;
    const float *x = src + grp * d->cs * d->hp * d->wp + oh * d->wp;
    const float *w = d->w + grp * d->k * d->ldw;
    const float *bias = d->bias ? d->bias + grp * d->ldw : NULL;
    float *out = dst + grp * d->od * d->ho * d->wo + oh * d->wo;
    for (int64_t o0 = 0; o0 < d->od; o0 += 2 * DLANES) {
        int64_t oc = d->od - o0 < 2 * DLANES ? d->od - o0 : 2 * DLANES;
        for (int64_t q0 = 0; q0 < d->wo; q0 += DT) {
            int64_t tw = d->wo - q0 < DT ? d->wo - q0 : DT;
            const float *b = bias ? bias + o0 : NULL;
            float *o = out + o0 * d->ho * d->wo + q0;
            if (oc > DLANES)
                channel_tile(d, x + q0, w + o0, b, o, oc, tw, 2);
            else
                channel_tile(d, x + q0, w + o0, b, o, oc, tw, 1);
        }
    }
}

/* Work item r of the flattened (groups, ceil(Ho / PR)) of one sample: every position
 * tile of output rows [PR r', PR r' + PR), r' = r % ceil(Ho / PR). */
static CONV_AVX512 void position_rows(const direct_conv *d, const float *src, float *dst,
                                      int64_t r)
{
    int64_t blocks = (d->ho + PR - 1) / PR, oh = r % blocks * PR, grp = r / blocks;
    int64_t rows = d->ho - oh < PR ? d->ho - oh : PR;
    const float *x = src + grp * d->cs * d->hp * d->wp + oh * d->wp;
    const float *w = d->w + grp * d->k * d->ldw;
    const float *bias = d->bias ? d->bias + grp * d->ldw : NULL;
    float *out = dst + grp * d->od * d->ho * d->wo + oh * d->wo;
    for (int64_t o0 = 0; o0 < d->od; o0 += PC)
        for (int64_t q0 = 0; q0 < d->wo; q0 += DLANES) {
            int64_t tw = d->wo - q0 < DLANES ? d->wo - q0 : DLANES;
            const float *b = bias ? bias + o0 : NULL;
            float *o = out + o0 * d->ho * d->wo + q0;
            if (rows == 3)
                position_tile(d, x + q0, w + o0, b, o, d->od - o0, tw, 3);
            else if (rows == 2)
                position_tile(d, x + q0, w + o0, b, o, d->od - o0, tw, 2);
            else
                position_tile(d, x + q0, w + o0, b, o, d->od - o0, tw, 1);
        }
}

/* Position tiles when there are few taps or few output channels (a channel tile would
 * leave lanes empty); channel tiles otherwise. */
static bool direct_by_position(const direct_conv *d)
{
    return d->k <= POSITION_MAX_TAPS || d->od <= PC;
}
#endif

/* Work items of one sample: output rows (channel tiles) or blocks of PR rows. */
static int64_t direct_items(const direct_conv *d)
{
#if CONV_DIRECT
    return d->groups * (direct_by_position(d) ? (d->ho + PR - 1) / PR : d->ho);
#else
    (void)d;
    return 0;
#endif
}

/* Items [lo, hi) of one sample; each output value is one item's, summed in tap order. */
static void direct_sample(const direct_conv *d, const float *src, float *dst, int64_t lo,
                          int64_t hi)
{
#if CONV_DIRECT
    bool pos = direct_by_position(d);
    for (int64_t r = lo; r < hi; r++) {
        if (pos)
            position_rows(d, src, dst, r);
        else
            channel_row(d, src, dst, r);
    }
#else
    (void)d, (void)src, (void)dst, (void)lo, (void)hi;
#endif
}

/* Tap offsets (K rounded up to DK, the extra taps reading offset 0) for planes of
 * Hp x Wp: tap (c, i, j) -> c Hp Wp + i dh Wp + j dw. */
static int64_t *direct_taps(ag_ctx *ctx, int64_t channels, int64_t kh, int64_t kw, int64_t dh,
                            int64_t dw, int64_t hp, int64_t wp)
{
    int64_t k = channels * kh * kw, k_pad = (k + DK - 1) / DK * DK;
    int64_t *tap = ag_ctx_alloc(ctx, (size_t)k_pad * sizeof *tap);
    if (!tap)
        return NULL;
    for (int64_t c = 0, t = 0; c < channels; c++)
        for (int64_t i = 0; i < kh; i++)
            for (int64_t j = 0; j < kw; j++)
                tap[t++] = c * hp * wp + i * dh * wp + j * dw;
    for (int64_t t = k; t < k_pad; t++)
        tap[t] = 0;
    return tap;
}

/* Under OMP_WAIT_POLICY=PASSIVE (the cqat command's default) each parallel region or
 * barrier costs some 30 us of thread wake-up on these machines, against 0.5 us for
 * spinning workers, so the direct path runs each pass as one region over samples:
 * a thread pads its own samples and computes their outputs (and, in backward, their
 * bias, input and weight gradients) without waiting for the other. Four regions per
 * backward became one; refcnn's step had some 40 regions in all. */

/* Forward: y = conv(x, w) + b. Returns the padded input (N, C_in, Hp, Wp + slack per
 * sample), which the weight gradient reads again, or NULL on OOM. */
static float *direct_forward(ag_ctx *ctx, const conv_geom *g, const float *x, const float *w,
                             const float *b, float *y)
{
    int64_t hp = padded_h(g), wp = padded_w(g), ldw = round_lanes(g->og);
    int64_t xs = padded_sample_floats(g->c_in, hp, wp);
    float *xp = ag_ctx_alloc(ctx, (size_t)(g->n * xs) * sizeof(float));
    float *wt = ag_ctx_alloc(ctx, (size_t)(g->groups * g->k * ldw) * sizeof(float));
    float *bt = b ? ag_ctx_alloc(ctx, (size_t)(g->groups * ldw) * sizeof(float)) : NULL;
    int64_t *tap = direct_taps(ctx, g->cg, g->kh, g->kw, g->dil_h, g->dil_w, hp, wp);
    if (!xp || !wt || (b && !bt) || !tap)
        return NULL;
    // wt[grp, k, o] = w[grp Og + o, k]: the weights of one tap for a vector of outputs
    memset(wt, 0, (size_t)(g->groups * g->k * ldw) * sizeof(float));
    for (int64_t grp = 0; grp < g->groups; grp++)
        for (int64_t o = 0; o < g->og; o++)
            for (int64_t k = 0; k < g->k; k++)
                wt[(grp * g->k + k) * ldw + o] = w[(grp * g->og + o) * g->k + k];
    for (int64_t grp = 0; bt && grp < g->groups; grp++)
        for (int64_t o = 0; o < ldw; o++)
            bt[grp * ldw + o] = o < g->og ? b[grp * g->og + o] : 0.0f;
    direct_conv d = {.cs = g->cg,
                     .hp = hp,
                     .wp = wp,
                     .tap = tap,
                     .k = g->k,
                     .w = wt,
                     .ldw = ldw,
                     .bias = bt,
                     .groups = g->groups,
                     .od = g->og,
                     .ho = g->ho,
                     .wo = g->wo,
                     .accumulate = false};
    const int64_t items = direct_items(&d), ys = g->c_out * g->p,
                  macs = g->n * g->c_out * g->k * g->p;
    int nt = conv_threads(g->n * items, macs);
    if (g->n >= nt) { // a sample at a time: pad, then all of its outputs
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int64_t i = 0; i < g->n; i++) {
            pad_sample(x + i * g->c_in * g->h * g->w, g->c_in, g->h, g->w, g->pad_h, g->pad_w,
                       xp + i * xs);
            direct_sample(&d, xp + i * xs, y + i * ys, 0, items);
        }
        return xp;
    }
    // fewer samples than threads (batch-1 inference): pad first, then share the items
    for (int64_t i = 0; i < g->n; i++)
        pad_sample(x + i * g->c_in * g->h * g->w, g->c_in, g->h, g->w, g->pad_h, g->pad_w,
                   xp + i * xs);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t r = 0; r < g->n * items; r++)
        direct_sample(&d, xp + r / items * xs, y + r / items * ys, r % items, r % items + 1);
    return xp;
}

/* The input gradient as a convolution (see direct_backward): dY bordered by
 * (k - 1) d - p, weights flipped in space and transposed,
 *   dx[n, c, h, w] += sum_{o, i, j} w[o, c, i, j] dy[n, o, h + p - i d, w + p - j d]
 * (conv_transpose2d's definition for stride 1), taps (o, i', j'), i' = kh - 1 - i.
 * Fills *d (accumulating) and the weights it points to; false on OOM. */
static bool input_grad_conv(ag_ctx *ctx, const conv_geom *g, const float *w, direct_conv *d)
{
    int64_t bh = (g->kh - 1) * g->dil_h - g->pad_h, bw = (g->kw - 1) * g->dil_w - g->pad_w;
    int64_t hp = g->ho + 2 * bh, wp = g->wo + 2 * bw, ldw = round_lanes(g->cg);
    int64_t kk = g->og * g->kh * g->kw;
    float *wt = ag_ctx_alloc(ctx, (size_t)(g->groups * kk * ldw) * sizeof(float));
    int64_t *tap = direct_taps(ctx, g->og, g->kh, g->kw, g->dil_h, g->dil_w, hp, wp);
    if (!wt || !tap)
        return false;
    // wt[grp, (o, i', j'), c] = w[grp Og + o, c, kh - 1 - i', kw - 1 - j']
    memset(wt, 0, (size_t)(g->groups * kk * ldw) * sizeof(float));
    for (int64_t grp = 0; grp < g->groups; grp++)
        for (int64_t o = 0; o < g->og; o++)
            for (int64_t c = 0; c < g->cg; c++)
                for (int64_t i = 0; i < g->kh; i++)
                    for (int64_t j = 0; j < g->kw; j++) {
                        int64_t t = (o * g->kh + g->kh - 1 - i) * g->kw + g->kw - 1 - j;
                        wt[(grp * kk + t) * ldw + c] =
                            w[(grp * g->og + o) * g->k + (c * g->kh + i) * g->kw + j];
                    }
    direct_conv dd = {.cs = g->og,
                      .hp = hp,
                      .wp = wp,
                      .tap = tap,
                      .k = kk,
                      .w = wt,
                      .ldw = ldw,
                      .bias = NULL,
                      .groups = g->groups,
                      .od = g->cg,
                      .ho = g->h,
                      .wo = g->w,
                      .accumulate = true};
    *d = dd;
    return true;
}

#if CONV_DIRECT
/* DK taps [k0, k0 + DK) x 16 V output channels of one sample's weight gradient:
 *   dwt[k, o] += sum_{oh, ow} x[tap[k] + oh Wp + ow] dyt[oh Wo + ow, o]
 * dwt and dyt start at the tile's first channel; nk taps are real (the tap table is
 * padded to DK with offset 0, harmless reads). */
static inline __attribute__((always_inline)) CONV_AVX512 void
dw_tile(const float *x, const int64_t *tap, int64_t nk, int64_t wp, const float *dyt,
        int64_t ldw, int64_t ho, int64_t wo, float *dwt, int V)
{
    __m512 acc[DK][2];
    const float *xk[DK];
    for (int t = 0; t < DK; t++) {
        xk[t] = x + tap[t];
        for (int v = 0; v < V; v++)
            acc[t][v] = _mm512_setzero_ps();
    }
    for (int64_t oh = 0; oh < ho; oh++)
        for (int64_t ow = 0; ow < wo; ow++) {
            const float *dp = dyt + (oh * wo + ow) * ldw;
            int64_t off = oh * wp + ow;
            __m512 d0 = _mm512_loadu_ps(dp);
            __m512 d1 = V > 1 ? _mm512_loadu_ps(dp + DLANES) : d0;
            for (int t = 0; t < DK; t++) {
                __m512 xb = _mm512_set1_ps(xk[t][off]);
                acc[t][0] = _mm512_fmadd_ps(d0, xb, acc[t][0]);
                if (V > 1)
                    acc[t][1] = _mm512_fmadd_ps(d1, xb, acc[t][1]);
            }
        }
    /* one sample's sum first, then added: a running total over all samples would
     * round more (sgemm with beta = 1 does the same) */
    for (int t = 0; t < nk; t++)
        for (int v = 0; v < V; v++) {
            float *p = dwt + t * ldw + DLANES * v;
            _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), acc[t][v]));
        }
}

/* dwt (K, ldw) += one sample's and group's weight gradient; x its padded planes. */
static CONV_AVX512 void dw_sample(const conv_geom *g, const float *x, const int64_t *tap,
                                  const float *dyt, int64_t ldw, float *dwt)
{
    int64_t wp = padded_w(g);
    for (int64_t o0 = 0; o0 < ldw; o0 += 2 * DLANES)
        for (int64_t k0 = 0; k0 < g->k; k0 += DK) {
            int64_t nk = g->k - k0 < DK ? g->k - k0 : DK;
            if (ldw - o0 > DLANES)
                dw_tile(x, tap + k0, nk, wp, dyt + o0, ldw, g->ho, g->wo, dwt + k0 * ldw + o0,
                        2);
            else
                dw_tile(x, tap + k0, nk, wp, dyt + o0, ldw, g->ho, g->wo, dwt + k0 * ldw + o0,
                        1);
        }
}
#endif

#if CONV_DIRECT
/* dyt (P, ldw) = dy (Og, P) transposed, zero past Og, in blocks of 16 x 16. */
static CONV_AVX512 void transpose_dy(const float *dy, int64_t og, int64_t p, int64_t ldw,
                                     float *dyt)
{
    for (int64_t o0 = 0; o0 < ldw; o0 += DLANES)
        for (int64_t q0 = 0; q0 < p; q0 += DLANES) {
            int64_t n = p - q0 < DLANES ? p - q0 : DLANES;
            __m512 r[DLANES];
            for (int64_t o = 0; o < DLANES; o++)
                r[o] = o0 + o < og
                           ? _mm512_maskz_loadu_ps(first_lanes(n), dy + (o0 + o) * p + q0)
                           : _mm512_setzero_ps();
            transpose16(r);
            for (int64_t q = 0; q < n; q++)
                _mm512_storeu_ps(dyt + (q0 + q) * ldw + o0, r[q]);
        }
}
#endif

/* One thread's share of the backward, sample i: db_t[o] += sum of dy over positions,
 * dw_t (groups, K, ldw) += dY x^T, dx += conv(dY, flipped W). */
typedef struct direct_grads {
    const conv_geom *g;
    const float *xp, *dy; // padded input (N, ...) kept by the forward; dY (N, C_out, P)
    const int64_t *tap;   // forward taps
    int64_t ldw;          // round_lanes(Og)
    double *db;           // (nt, C_out) partials, or NULL
    float *dw;            // (nt, groups, K, ldw) partials, or NULL
    float *dyt;           // (nt, P, ldw) scratch for dY transposed
    float *dyp;           // (nt, padded dY of one sample) scratch, or NULL without dx
    float *dx;            // (N, C_in, H, W), or NULL
    const direct_conv *dxc;
} direct_grads;

static void direct_backward_sample(const direct_grads *a, int64_t i, int t)
{
    const conv_geom *g = a->g;
    const float *dy = a->dy + i * g->c_out * g->p; // (C_out, P)
    for (int64_t o = 0; a->db && o < g->c_out; o++)
        a->db[t * g->c_out + o] += sum_floats(dy + o * g->p, g->p);
#if CONV_DIRECT
    int64_t hp = padded_h(g), wp = padded_w(g), xs = padded_sample_floats(g->c_in, hp, wp);
    size_t part_f = (size_t)(g->groups * g->k * a->ldw), dyt_f = (size_t)(g->p * a->ldw);
    for (int64_t grp = 0; a->dw && grp < g->groups; grp++) {
        transpose_dy(dy + grp * g->og * g->p, g->og, g->p, a->ldw, a->dyt + t * dyt_f);
        dw_sample(g, a->xp + i * xs + grp * g->cg * hp * wp, a->tap, a->dyt + t * dyt_f, a->ldw,
                  a->dw + t * part_f + grp * g->k * a->ldw);
    }
#endif
    if (!a->dx)
        return;
    const direct_conv *d = a->dxc;
    float *dyp = a->dyp + t * padded_sample_floats(g->c_out, d->hp, d->wp);
    pad_sample(dy, g->c_out, g->ho, g->wo, (d->hp - g->ho) / 2, (d->wp - g->wo) / 2, dyp);
    direct_sample(d, dyp, a->dx + i * g->c_in * g->h * g->w, 0, direct_items(d));
}

/* db += sum of dY, dw += sum over samples of dY x^T (from the padded input the forward
 * kept), dx += conv(dY, flipped W) (or =, into a fresh dx), in one parallel region over
 * samples. Each thread adds its samples' db and dw into its own zeroed partials, summed
 * in thread order at the end: a fixed order for a given thread count. False on OOM. */
static bool direct_backward(ag_ctx *ctx, const conv_geom *g, const float *xp, const float *w,
                            const float *dy, float *dx, bool dx_fresh, float *dw, float *db)
{
    int64_t hp = padded_h(g), wp = padded_w(g), ldw = round_lanes(g->og);
    int nt = conv_threads(g->n, g->n * g->c_out * g->k * g->p * (!!dx + !!dw));
    size_t part_f = (size_t)(g->groups * g->k * ldw), dyt_f = (size_t)(g->p * ldw);
    direct_conv dxc;
    direct_grads a = {.g = g, .xp = xp, .dy = dy, .ldw = ldw, .dx = dx, .dxc = &dxc};
    if (db && !(a.db = ag_ctx_alloc(ctx, (size_t)(nt * g->c_out) * sizeof(double))))
        return false;
    if (dw && (!(a.dw = ag_ctx_alloc(ctx, nt * part_f * sizeof(float))) ||
               !(a.dyt = ag_ctx_alloc(ctx, nt * dyt_f * sizeof(float))) ||
               !(a.tap = direct_taps(ctx, g->cg, g->kh, g->kw, g->dil_h, g->dil_w, hp, wp))))
        return false;
    if (dx && (!input_grad_conv(ctx, g, w, &dxc) ||
               !(a.dyp = ag_ctx_alloc(
                     ctx, (size_t)(nt * padded_sample_floats(g->c_out, dxc.hp, dxc.wp)) *
                              sizeof(float)))))
        return false;
    dxc.accumulate = !dx_fresh;
    if (a.db)
        memset(a.db, 0, (size_t)(nt * g->c_out) * sizeof(double));
    if (a.dw)
        memset(a.dw, 0, nt * part_f * sizeof(float));
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < g->n; i++)
        direct_backward_sample(&a, i, omp_get_thread_num());
    for (int64_t o = 0; db && o < g->c_out; o++) {
        double sum = 0.0;
        for (int t = 0; t < nt; t++)
            sum += a.db[t * g->c_out + o];
        db[o] += (float)sum;
    }
    for (int64_t grp = 0; dw && grp < g->groups; grp++)
        for (int64_t o = 0; o < g->og; o++)
            for (int64_t k = 0; k < g->k; k++) {
                float sum = 0.0f;
                for (int t = 0; t < nt; t++)
                    sum += a.dw[t * part_f + (grp * g->k + k) * ldw + o];
                dw[(grp * g->og + o) * g->k + k] += sum;
            }
    return true;
}

/* ---- depthwise path: a direct loop per (sample, channel) plane --------------------- */

/* y[k] += a x[k s] for k < n. Long contiguous rows have their own loop, which vectorises;
 * for short rows (7 or 14 wide) the vector loop's set-up costs more than it saves. */
static void axpy_row(float a, const float *restrict x, int64_t s, float *restrict y, int64_t n)
{
    if (s == 1 && n >= 16)
        for (int64_t k = 0; k < n; k++)
            y[k] += a * x[k];
    else
        for (int64_t k = 0; k < n; k++)
            y[k] += a * x[k * s];
}

/* One row of the depthwise backward: dx[k s] += a dy[k] for k < n if dx, and returns
 * sum_k dy[k] x[k s]. Long contiguous rows take two loops that vectorise (the sum in
 * eight lanes); short rows (7 or 14 wide) are faster in one plain loop. */
static float depthwise_row_backward(float a, const float *restrict dy, const float *restrict x,
                                    float *restrict dx, int64_t s, int64_t n)
{
    float acc = 0.0f;
    if (s != 1 || n < 16) {
        for (int64_t k = 0; k < n; k++) {
            acc += dy[k] * x[k * s];
            if (dx)
                dx[k * s] += a * dy[k];
        }
        return acc;
    }
    if (dx)
        for (int64_t k = 0; k < n; k++)
            dx[k] += a * dy[k];
    float lane[8] = {0};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++)
            lane[l] += dy[k + l] * x[k + l];
    for (; k < n; k++)
        acc += dy[k] * x[k];
    for (int l = 0; l < 8; l++)
        acc += lane[l];
    return acc;
}

/* y (H_out, W_out) = bias + sum_{i,j} w[i, j] x[oh sh + i dh - ph, ow sw + j dw - pw],
 * one kernel tap at a time over the rows it reaches. */
static void depthwise_plane(const conv_geom *g, const float *x, const float *w, float bias,
                            float *y)
{
    for (int64_t q = 0; q < g->p; q++)
        y[q] = bias;
    for (int64_t i = 0; i < g->kh; i++) {
        int64_t off_h = i * g->dil_h - g->pad_h, h_lo, h_hi;
        valid_range(off_h, g->stride_h, g->h, g->ho, &h_lo, &h_hi);
        for (int64_t j = 0; j < g->kw; j++) {
            int64_t off_w = j * g->dil_w - g->pad_w, w_lo, w_hi;
            valid_range(off_w, g->stride_w, g->w, g->wo, &w_lo, &w_hi);
            if (w_hi == w_lo)
                continue;
            for (int64_t oh = h_lo; oh < h_hi; oh++) {
                int64_t ix = (oh * g->stride_h + off_h) * g->w + w_lo * g->stride_w + off_w;
                axpy_row(w[i * g->kw + j], x + ix, g->stride_w, y + oh * g->wo + w_lo,
                         w_hi - w_lo);
            }
        }
    }
}

/* The adjoint of depthwise_plane: dx (H, W) += taps of dy if dx; dw_plane (kH, kW) =
 * this plane's share of dW (overwritten) if dw_plane. */
static void depthwise_plane_backward(const conv_geom *g, const float *x, const float *w,
                                     const float *dy, float *dx, float *dw_plane)
{
    for (int64_t i = 0; i < g->kh; i++) {
        int64_t off_h = i * g->dil_h - g->pad_h, h_lo, h_hi;
        valid_range(off_h, g->stride_h, g->h, g->ho, &h_lo, &h_hi);
        for (int64_t j = 0; j < g->kw; j++) {
            int64_t off_w = j * g->dil_w - g->pad_w, w_lo, w_hi;
            valid_range(off_w, g->stride_w, g->w, g->wo, &w_lo, &w_hi);
            float acc = 0.0f;
            for (int64_t oh = h_lo; oh < h_hi && w_hi > w_lo; oh++) {
                const float *dyr = dy + oh * g->wo + w_lo;
                int64_t ix = (oh * g->stride_h + off_h) * g->w + w_lo * g->stride_w + off_w;
                acc += depthwise_row_backward(w[i * g->kw + j], dyr, x + ix,
                                              dx ? dx + ix : NULL, g->stride_w, w_hi - w_lo);
            }
            if (dw_plane)
                dw_plane[i * g->kw + j] = acc;
        }
    }
}

static void conv_forward_depthwise(const conv_geom *g, const float *x, const float *w,
                                   const float *b, float *y)
{
    int64_t planes = g->n * g->c_out, kk = g->kh * g->kw;
    int nt = conv_threads(planes, planes * g->p * kk);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t pl = 0; pl < planes; pl++) {
        int64_t c = pl % g->c_out;
        depthwise_plane(g, x + pl * g->h * g->w, w + c * kk, b ? b[c] : 0.0f, y + pl * g->p);
    }
}

/* Every plane writes its dW share to its own slot of a (N, C, kH, kW) scratch, summed
 * over N afterwards: planes run in parallel without sharing an accumulator. A fresh dx
 * is zeroed a plane at a time before the plane adds into it. */
static bool conv_backward_depthwise(ag_ctx *ctx, const conv_geom *g, const float *x,
                                    const float *w, const float *dy, float *dx, bool dx_fresh,
                                    float *dw)
{
    int64_t planes = g->n * g->c_out, kk = g->kh * g->kw;
    float *dw_planes = NULL; // (N, C, kH, kW)
    if (dw && !(dw_planes = ag_ctx_alloc(ctx, (size_t)(planes * kk) * sizeof(float))))
        return false;
    int nt = conv_threads(planes, planes * g->p * kk * 2);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t pl = 0; pl < planes; pl++) {
        int64_t c = pl % g->c_out;
        float *dx_pl = dx ? dx + pl * g->h * g->w : NULL; // (H, W)
        if (dx_pl && dx_fresh)
            memset(dx_pl, 0, (size_t)(g->h * g->w) * sizeof(float));
        depthwise_plane_backward(g, x + pl * g->h * g->w, w + c * kk, dy + pl * g->p, dx_pl,
                                 dw_planes ? dw_planes + pl * kk : NULL);
    }
    /* summed over the samples first, then added to dw once (see conv_backward_general) */
    for (int64_t c = 0; dw_planes && c < g->c_out; c++)
        for (int64_t t = 0; t < kk; t++) {
            float sum = dw_planes[c * kk + t];
            for (int64_t i = 1; i < g->n; i++)
                sum += dw_planes[(i * g->c_out + c) * kk + t];
            dw[c * kk + t] += sum;
        }
    return true;
}

/* ---- the op ----------------------------------------------------------------------------- */

/* db[o] += sum over samples and positions of dy[n, o, :, :]. */
static void bias_backward(const conv_geom *g, const float *dy, float *db)
{
    int nt = conv_threads(g->c_out, g->n * g->c_out * g->p);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t o = 0; o < g->c_out; o++) {
        double acc = 0.0;
        for (int64_t s = 0; s < g->n; s++)
            acc += sum_floats(dy + (s * g->c_out + o) * g->p, g->p);
        db[o] += (float)acc;
    }
}

/* args NULL means PyTorch's defaults: stride 1, padding 0, dilation 1, groups 1. */
ag_tensor *ag_conv2d(ag_ctx *ctx, ag_tensor *x, ag_tensor *w, ag_tensor *b,
                     const ag_conv2d_args *args)
{
    if (!x || !w)
        return NULL;
    const ag_conv2d_args *a = args ? args : &conv_defaults;
    if (!conv_check_args(x, w, a) || !conv_check_shapes(x, w, b, a) ||
        !conv_check_output(x, w, a))
        return NULL;
    conv_geom g;
    conv_geom_init(&g, x, w, a);
    int64_t batched[4] = {g.n, g.c_out, g.ho, g.wo};
    ag_tensor *y =
        ag_op_output(ctx, x->ndim, batched + (4 - x->ndim)); // (N, C_out, H_out, W_out)
    if (!y)
        return NULL;
    const float *bias = b ? b->data : NULL;
    float *xp = NULL; // the direct path's padded input, kept for the weight gradient
    if (g.depthwise)
        conv_forward_depthwise(&g, x->data, w->data, bias, y->data);
    else if (direct_usable(&g)) {
        if (!(xp = direct_forward(ctx, &g, x->data, w->data, bias, y->data)))
            return NULL;
    } else if (!conv_forward_general(ctx, &g, x->data, w->data, bias, y->data))
        return NULL;
    ag_tensor *src[3] = {x, w, b};
    ag_node *n = ag_op_record(ctx, AG_OP_CONV2D, y, src, b ? 3 : 2);
    if (n && ag_op_recorded(n, y)) {
        const int32_t ip[7] = {a->stride[0],   a->stride[1],   a->padding[0], a->padding[1],
                               a->dilation[0], a->dilation[1], a->groups};
        for (int i = 0; i < 7; i++)
            n->ip[i] = ip[i];
        n->saved = xp;
    }
    return ag_op_recorded(n, y);
}

void ag_conv2d_backward(ag_ctx *ctx, ag_node *n)
{
    ag_tensor *x = n->src[0], *w = n->src[1], *b = n->n_src > 2 ? n->src[2] : NULL;
    const ag_conv2d_args a = {{(int32_t)n->ip[0], (int32_t)n->ip[1]},
                              {(int32_t)n->ip[2], (int32_t)n->ip[3]},
                              {(int32_t)n->ip[4], (int32_t)n->ip[5]},
                              (int32_t)n->ip[6]};
    conv_geom g;
    conv_geom_init(&g, x, w, &a);
    const float *dy = n->out->grad; // (N, C_out, H_out, W_out)
    float *db = ag_grad(ctx, b), *dw = ag_grad(ctx, w);
    bool dx_fresh; /* asked last, so false if x is also w or b (then dx is dw or db) */
    float *dx = ag_grad_write(ctx, x, &dx_fresh);
    if (n->saved) { // the forward took the direct path
        direct_backward(ctx, &g, n->saved, w->data, dy, dx, dx_fresh, dw, db);
        return;
    }
    if (db)
        bias_backward(&g, dy, db);
    if (!dx && !dw)
        return;
    /* If the scratch cannot be had, dx and dw stay unfinished: ag_ctx_alloc has set the
     * message, and ag_backward returns AG_ERR_NOMEM for any allocation that failed in a
     * backward function. */
    if (g.depthwise)
        conv_backward_depthwise(ctx, &g, x->data, w->data, dy, dx, dx_fresh, dw);
    else
        conv_backward_general(ctx, &g, x->data, w->data, dy, dx, dx_fresh, dw);
}
