/* conv.c — 2-D convolution, torch.nn.functional.conv2d (zero padding, stride, dilation,
 * groups; a 3-D input is one unbatched sample, as in PyTorch).
 *
 *   y[n, o, oh, ow] = b[o] + sum_{c, i, j} w[o, c, i, j]
 *                     * x[n, g Cg + c, oh sh - ph + i dh, ow sw - pw + j dw]
 * for output channel o in group g = o / Og (Cg = C_in / groups, Og = C_out / groups),
 * with x = 0 outside the image and H_out = (H + 2 ph - dh (kH - 1) - 1) / sh + 1 (floor).
 *
 * The general path lowers one (sample, group) at a time: im2col builds the column
 * matrix col (K, P), K = Cg kH kW, P = H_out W_out, and one sgemm W_g (Og, K) . col
 * writes that block of y in place (it is contiguous in NCHW). A 1x1 convolution with
 * stride 1 and no padding needs no im2col: col is x itself. Backward per (sample,
 * group): dW_g += dY_g col^T, dcol = W_g^T dY_g scattered back into dx by col2im.
 * Depthwise convolutions (groups == C_in == C_out) take a direct loop instead: their
 * sgemm would be a matrix-vector product with K = kH kW, all overhead (the loop is
 * 2-4x faster than im2col + sgemm on [64, 32..128, 7..28, 7..28], 3x3, padding 1).
 *
 * Threads: samples run in parallel (static schedule, so dW sums in a fixed order), each
 * thread with its own column scratch and its own partial dW, summed at the end, while
 * OpenBLAS is held to one thread: the per-sample products are small (32 x 196 x 144 for
 * refcnn's conv2) and OpenBLAS threads them poorly. Measured on 2 cores, batch 64, for
 * refcnn's conv1 / conv2 / conv3, forward + backward: 0.5 / 2.8 / 5.5 ms this way
 * against 0.9 / 4.3 / 8.3 ms with the samples in series and OpenBLAS threading each
 * product, and far worse (2-10x) with both threading at once.
 */
#include "autograd/ag_impl.h"

#include <cblas.h>
#include <inttypes.h>
#include <stdio.h>
#include <omp.h>

/* Below this many multiply-adds a convolution runs on one thread. */
enum { CONV_PARALLEL_MIN_MACS = 1 << 18 };

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
    return items < nt ? (int)items : nt;
}

/* Inside our parallel loops OpenBLAS must not thread each small sgemm again (the
 * pthreads build cannot see OpenMP's team and would oversubscribe the cores). Returns
 * the count to restore, 0 if nothing changed. */
static int conv_parallel_begin(int nt)
{
    if (nt < 2)
        return 0;
    int saved = openblas_get_num_threads();
    if (saved > 1)
        openblas_set_num_threads(1);
    return saved > 1 ? saved : 0;
}

static void conv_parallel_end(int saved)
{
    if (saved)
        openblas_set_num_threads(saved);
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

/* One row of col, for kernel tap (i, j) of one channel xc (H, W):
 * row[oh, ow] = xc[oh sh + i dh - ph, ow sw + j dw - pw], 0 in the padding. */
static void im2col_row(const conv_geom *g, const float *xc, int64_t i, int64_t j, float *row)
{
    int64_t off_h = i * g->dil_h - g->pad_h, off_w = j * g->dil_w - g->pad_w;
    int64_t h_lo, h_hi, w_lo, w_hi;
    valid_range(off_h, g->stride_h, g->h, g->ho, &h_lo, &h_hi);
    valid_range(off_w, g->stride_w, g->w, g->wo, &w_lo, &w_hi);
    memset(row, 0, (size_t)(h_lo * g->wo) * sizeof(float));
    for (int64_t oh = h_lo; oh < h_hi; oh++) {
        float *r = row + oh * g->wo;
        const float *xr = xc + (oh * g->stride_h + off_h) * g->w;
        memset(r, 0, (size_t)w_lo * sizeof(float));
        if (g->stride_w == 1 && w_hi > w_lo)
            memcpy(r + w_lo, xr + w_lo + off_w, (size_t)(w_hi - w_lo) * sizeof(float));
        else
            for (int64_t ow = w_lo; ow < w_hi; ow++)
                r[ow] = xr[ow * g->stride_w + off_w];
        memset(r + w_hi, 0, (size_t)(g->wo - w_hi) * sizeof(float));
    }
    memset(row + h_hi * g->wo, 0, (size_t)((g->ho - h_hi) * g->wo) * sizeof(float));
}

/* col (K, P) from one group's channels x (Cg, H, W); row (c, i, j) matches the weight's
 * (Cg, kH, kW) order. */
static void im2col(const conv_geom *g, const float *x, float *col)
{
    for (int64_t c = 0; c < g->cg; c++)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++)
                im2col_row(g, x + c * g->h * g->w, i, j,
                           col + ((c * g->kh + i) * g->kw + j) * g->p);
}

/* The adjoint of im2col_row: dxc (H, W) += the taps of row that read inside the image. */
static void col2im_row(const conv_geom *g, const float *row, int64_t i, int64_t j, float *dxc)
{
    int64_t off_h = i * g->dil_h - g->pad_h, off_w = j * g->dil_w - g->pad_w;
    int64_t h_lo, h_hi, w_lo, w_hi;
    valid_range(off_h, g->stride_h, g->h, g->ho, &h_lo, &h_hi);
    valid_range(off_w, g->stride_w, g->w, g->wo, &w_lo, &w_hi);
    for (int64_t oh = h_lo; oh < h_hi; oh++) {
        const float *r = row + oh * g->wo;
        float *dxr = dxc + (oh * g->stride_h + off_h) * g->w;
        for (int64_t ow = w_lo; ow < w_hi; ow++)
            dxr[ow * g->stride_w + off_w] += r[ow];
    }
}

/* dx (Cg, H, W) += col2im(dcol (K, P)). */
static void col2im(const conv_geom *g, const float *dcol, float *dx)
{
    for (int64_t c = 0; c < g->cg; c++)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++)
                col2im_row(g, dcol + ((c * g->kh + i) * g->kw + j) * g->p, i, j,
                           dx + c * g->h * g->w);
}

/* ---- general path: im2col + sgemm per (sample, group) ----------------------------- */

/* y (C_out, P) of one sample from x (C_in, H, W); col is K * P floats of scratch. */
static void forward_sample(const conv_geom *g, const float *x, const float *w, const float *b,
                           float *y, float *col)
{
    for (int64_t grp = 0; grp < g->groups; grp++) {
        const float *xg = x + grp * g->cg * g->h * g->w; // (Cg, H, W)
        const float *wg = w + grp * g->og * g->k;        // (Og, K)
        float *yg = y + grp * g->og * g->p;              // (Og, P)
        if (!g->pointwise)
            im2col(g, xg, col);
        if (b) // bias rows first; sgemm then adds W col onto them (beta = 1)
            for (int64_t o = 0; o < g->og; o++)
                for (int64_t q = 0; q < g->p; q++)
                    yg[o * g->p + q] = b[grp * g->og + o];
        sgemm(false, false, g->og, g->p, g->k, wg, g->k, g->pointwise ? xg : col, g->p,
              b ? 1.0f : 0.0f, yg, g->p);
    }
}

/* One sample's share of the backward: dw (C_out, K) += dY col^T if dw, and
 * dx (C_in, H, W) += col2im(W^T dY) if dx. col, dcol: K * P floats of scratch each. */
static void backward_sample(const conv_geom *g, const float *x, const float *w, const float *dy,
                            float *dx, float *dw, float *col, float *dcol)
{
    for (int64_t grp = 0; grp < g->groups; grp++) {
        const float *xg = x + grp * g->cg * g->h * g->w; // (Cg, H, W)
        const float *wg = w + grp * g->og * g->k;        // (Og, K)
        const float *dyg = dy + grp * g->og * g->p;      // (Og, P)
        if (dw) {
            if (!g->pointwise)
                im2col(g, xg, col);
            sgemm(false, true, g->og, g->k, g->p, dyg, g->p, g->pointwise ? xg : col, g->p,
                  1.0f, dw + grp * g->og * g->k, g->k);
        }
        if (!dx)
            continue;
        float *dxg = dx + grp * g->cg * g->h * g->w; // (Cg, H, W)
        if (g->pointwise) { // 1x1: dcol is dx itself, so sgemm accumulates in place
            sgemm(true, false, g->k, g->p, g->og, wg, g->k, dyg, g->p, 1.0f, dxg, g->p);
            continue;
        }
        sgemm(true, false, g->k, g->p, g->og, wg, g->k, dyg, g->p, 0.0f, dcol, g->p);
        col2im(g, dcol, dxg);
    }
}

static bool conv_forward_general(ag_ctx *ctx, const conv_geom *g, const float *x,
                                 const float *w, const float *b, float *y)
{
    int nt = conv_threads(g->n, g->n * g->c_out * g->k * g->p);
    size_t col_floats = g->pointwise ? 0 : (size_t)(g->k * g->p);
    float *cols =
        col_floats ? ag_ctx_alloc(ctx, (size_t)nt * col_floats * sizeof(float)) : NULL;
    if (col_floats && !cols)
        return false;
    int blas_saved = conv_parallel_begin(nt);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t s = 0; s < g->n; s++)
        forward_sample(g, x + s * g->c_in * g->h * g->w, w, b, y + s * g->c_out * g->p,
                       cols ? cols + (size_t)omp_get_thread_num() * col_floats : NULL);
    conv_parallel_end(blas_saved);
    return true;
}

/* Threads other than the first accumulate dW into zeroed partials summed at the end,
 * so that no two threads add into one buffer. */
static bool conv_backward_general(ag_ctx *ctx, const conv_geom *g, const float *x,
                                  const float *w, const float *dy, float *dx, float *dw)
{
    int nt = conv_threads(g->n, g->n * g->c_out * g->k * g->p * (!!dx + !!dw));
    size_t col_floats = (size_t)(g->k * g->p), w_floats = (size_t)(g->c_out * g->k);
    float *cols = NULL, *dcols = NULL, *dw_part = NULL;
    if (dw && !g->pointwise && !(cols = ag_ctx_alloc(ctx, nt * col_floats * sizeof(float))))
        return false;
    if (dx && !g->pointwise && !(dcols = ag_ctx_alloc(ctx, nt * col_floats * sizeof(float))))
        return false;
    if (dw && nt > 1) {
        dw_part = ag_ctx_alloc(ctx, (size_t)(nt - 1) * w_floats * sizeof(float));
        if (!dw_part)
            return false;
        memset(dw_part, 0, (size_t)(nt - 1) * w_floats * sizeof(float));
    }
    int blas_saved = conv_parallel_begin(nt);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t s = 0; s < g->n; s++) {
        size_t t = (size_t)omp_get_thread_num();
        float *dw_t = dw && t ? dw_part + (t - 1) * w_floats : dw;
        backward_sample(g, x + s * g->c_in * g->h * g->w, w, dy + s * g->c_out * g->p,
                        dx ? dx + s * g->c_in * g->h * g->w : NULL, dw_t,
                        cols ? cols + t * col_floats : NULL,
                        dcols ? dcols + t * col_floats : NULL);
    }
    conv_parallel_end(blas_saved);
    for (int t = 1; dw_part && t < nt; t++)
        for (size_t i = 0; i < w_floats; i++)
            dw[i] += dw_part[(size_t)(t - 1) * w_floats + i];
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
 * over N afterwards: planes run in parallel without sharing an accumulator. */
static bool conv_backward_depthwise(ag_ctx *ctx, const conv_geom *g, const float *x,
                                    const float *w, const float *dy, float *dx, float *dw)
{
    int64_t planes = g->n * g->c_out, kk = g->kh * g->kw;
    float *dw_planes = NULL; // (N, C, kH, kW)
    if (dw && !(dw_planes = ag_ctx_alloc(ctx, (size_t)(planes * kk) * sizeof(float))))
        return false;
    int nt = conv_threads(planes, planes * g->p * kk * 2);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t pl = 0; pl < planes; pl++) {
        int64_t c = pl % g->c_out;
        depthwise_plane_backward(g, x + pl * g->h * g->w, w + c * kk, dy + pl * g->p,
                                 dx ? dx + pl * g->h * g->w : NULL,
                                 dw_planes ? dw_planes + pl * kk : NULL);
    }
    for (int64_t pl = 0; dw_planes && pl < planes; pl++)
        for (int64_t t = 0; t < kk; t++)
            dw[(pl % g->c_out) * kk + t] += dw_planes[pl * kk + t];
    return true;
}

/* ---- the op ----------------------------------------------------------------------------- */

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
    if (g.depthwise)
        conv_forward_depthwise(&g, x->data, w->data, bias, y->data);
    else if (!conv_forward_general(ctx, &g, x->data, w->data, bias, y->data))
        return NULL;
    ag_tensor *src[3] = {x, w, b};
    ag_node *n = ag_op_record(ctx, AG_OP_CONV2D, y, src, b ? 3 : 2);
    if (n && ag_op_recorded(n, y)) {
        const int32_t ip[7] = {a->stride[0],   a->stride[1],   a->padding[0], a->padding[1],
                               a->dilation[0], a->dilation[1], a->groups};
        for (int i = 0; i < 7; i++)
            n->ip[i] = ip[i];
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
    float *db = ag_grad(ctx, b);
    if (db)
        bias_backward(&g, dy, db);
    float *dx = ag_grad(ctx, x), *dw = ag_grad(ctx, w);
    if (!dx && !dw)
        return;
    /* If the scratch cannot be had, ag_ctx_alloc has set the message and dx, dw stay
     * short; a backward function has no way to fail the whole ag_backward (yet). */
    if (g.depthwise)
        conv_backward_depthwise(ctx, &g, x->data, w->data, dy, dx, dw);
    else
        conv_backward_general(ctx, &g, x->data, w->data, dy, dx, dw);
}
