/* reduce.c — sum and mean over every dim or a list of dims (torch.sum / torch.mean
 * with dim and keepdim), and the summing kernel that arith.c's backward also uses to
 * fold a broadcast gradient back onto an input's shape (PyTorch's sum_to).
 *
 * Both ops record one AG_OP_SUM node: ip[0] is the bit mask of reduced dims of the
 * input, fp[0] the factor applied to the sum (1, or 1/count for mean).
 *
 * Sums accumulate in double (PyTorch sums float32 with a cascade, which is also far
 * better than a naive float loop; double is at least as good), so a mean over a few
 * million elements keeps all its float digits.
 *
 * Layout: the input is viewed as its non-1 dims with neighbours of the same kind
 * (kept / summed) merged, e.g. sum over (0, 2, 3) of [N, C, H, W] is [N | C | H*W]
 * (summed, kept, summed). Two loop shapes cover every case:
 *   - the innermost dim is summed: each output element is a sum of contiguous runs;
 *   - the innermost dim is kept: whole rows of the output accumulate together, which
 *     is what a column sum (a bias gradient, [N, F] -> [F]) needs.
 */
#include "autograd/ag_impl.h"

#include <math.h>

/* The prototype belongs in ag_impl.h (arith.c repeats it until it moves there). */
void ag_reduce_sum_acc(int32_t ndim, const int64_t *shape, const bool *keep,
                       const float *x, const float *w, double scale, float *dst);

/* Loops over more elements than this run on all threads. */
enum { PAR_MIN = 32768, ROW_BLOCK = 256, LONG_CHUNKS = 64 };

typedef struct red_layout {
    int32_t nk, nr;                                    /* kept / summed dims, merged */
    int64_t ksize[AG_MAX_DIMS], kstride[AG_MAX_DIMS];  /* input strides, outermost first */
    int64_t rsize[AG_MAX_DIMS], rstride[AG_MAX_DIMS];
    bool inner_summed; /* the input's innermost (stride-1) merged dim is summed */
    int64_t numel;     /* input elements */
    int64_t kept;      /* output elements */
    int64_t run;       /* size of the innermost merged dim */
} red_layout;

static void layout_make(int32_t ndim, const int64_t *shape, const bool *keep, red_layout *L)
{
    int64_t size[AG_MAX_DIMS], stride[AG_MAX_DIMS];
    bool kind[AG_MAX_DIMS];
    int32_t m = 0;
    int64_t step = 1;
    /* From the innermost dim outwards, merging a dim into its inner neighbour when
     * both are kept or both summed (the input is contiguous, so they are one dim). */
    for (int32_t k = ndim - 1; k >= 0; k--) {
        int64_t n = shape[k];
        if (n != 1) {
            if (m > 0 && kind[m - 1] == keep[k]) {
                size[m - 1] *= n;
            } else {
                size[m] = n;
                stride[m] = step;
                kind[m] = keep[k];
                m++;
            }
        }
        step *= n;
    }
    L->numel = step;
    L->nk = L->nr = 0;
    L->kept = 1;
    for (int32_t j = m - 1; j >= 0; j--) { /* back to outermost first */
        if (kind[j]) {
            L->ksize[L->nk] = size[j];
            L->kstride[L->nk++] = stride[j];
            L->kept *= size[j];
        } else {
            L->rsize[L->nr] = size[j];
            L->rstride[L->nr++] = stride[j];
        }
    }
    L->inner_summed = m > 0 && !kind[0];
    L->run = m > 0 ? size[0] : 1;
}

/* The input offset of the idx-th position (row-major) over n dims of size/stride,
 * idx < the product of the sizes (so the outermost dim needs no modulo, and one dim
 * is a single multiply). */
static int64_t offset_of(int64_t idx, int32_t n, const int64_t *size, const int64_t *stride)
{
    if (n == 0)
        return 0;
    int64_t off = 0;
    for (int32_t k = n - 1; k > 0; k--) {
        off += (idx % size[k]) * stride[k];
        idx /= size[k];
    }
    return off + idx * stride[0];
}

static int64_t count_of(int32_t n, const int64_t *size)
{
    int64_t c = 1;
    for (int32_t k = 0; k < n; k++)
        c *= size[k];
    return c;
}

/* ---- sums ---- */

/* sum x[i] (* w[i]) over one contiguous run, in eight double lanes so that the adds do
 * not wait on each other and the compiler can vectorise them. A product is rounded to
 * float first, as torch would store g * x before summing it. */
static double sum_run(const float *restrict x, const float *restrict w, int64_t n)
{
    double lane[8] = {0};
    int64_t i = 0;
    if (w) {
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++)
                lane[k] += (double)(x[i + k] * w[i + k]);
        for (; i < n; i++)
            lane[0] += (double)(x[i] * w[i]);
    } else {
        for (; i + 8 <= n; i += 8)
            for (int k = 0; k < 8; k++)
                lane[k] += (double)x[i + k];
        for (; i < n; i++)
            lane[0] += (double)x[i];
    }
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
           ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* One long run split over the threads. The split is fixed (not per thread), so the
 * result does not depend on the thread count. */
static double sum_long(const float *x, const float *w, int64_t n)
{
    if (n <= PAR_MIN)
        return sum_run(x, w, n);
    double part[LONG_CHUNKS];
#pragma omp parallel for
    for (int c = 0; c < LONG_CHUNKS; c++) {
        int64_t lo = n * c / LONG_CHUNKS, hi = n * (c + 1) / LONG_CHUNKS;
        part[c] = sum_run(x + lo, w ? w + lo : NULL, hi - lo);
    }
    double s = 0.0;
    for (int c = 0; c < LONG_CHUNKS; c++)
        s += part[c];
    return s;
}

/* Innermost dim summed: dst[j] gathers contiguous runs of `run` elements. */
static void sum_inner_summed(const red_layout *L, const float *x, const float *w,
                             double scale, float *dst)
{
    if (L->kept == 1) { /* everything is summed: one contiguous run */
        dst[0] += (float)(scale * sum_long(x, w, L->numel));
        return;
    }
    int64_t n_runs = count_of(L->nr - 1, L->rsize); /* runs per output element */
#pragma omp parallel for if (L->numel > PAR_MIN)
    for (int64_t j = 0; j < L->kept; j++) {
        int64_t base = offset_of(j, L->nk, L->ksize, L->kstride);
        double s = 0.0;
        for (int64_t r = 0; r < n_runs; r++) {
            int64_t o = base + offset_of(r, L->nr - 1, L->rsize, L->rstride);
            s += sum_run(x + o, w ? w + o : NULL, L->run);
        }
        dst[j] += (float)(scale * s);
    }
}

/* Innermost dim kept: a block of up to ROW_BLOCK contiguous outputs accumulates whole
 * input rows, one per summed position. */
static void sum_inner_kept(const red_layout *L, const float *x, const float *w,
                           double scale, float *dst)
{
    int64_t run = L->run;
    int64_t n_blocks = (run + ROW_BLOCK - 1) / ROW_BLOCK;
    int64_t n_outer = L->kept / run;
    int64_t n_sum = count_of(L->nr, L->rsize);
#pragma omp parallel for if (L->numel > PAR_MIN)
    for (int64_t item = 0; item < n_outer * n_blocks; item++) {
        int64_t jo = item / n_blocks, l0 = item % n_blocks * ROW_BLOCK;
        int64_t len = run - l0 < ROW_BLOCK ? run - l0 : ROW_BLOCK;
        int64_t base = offset_of(jo, L->nk - 1, L->ksize, L->kstride) + l0;
        double acc[ROW_BLOCK] = {0};
        for (int64_t r = 0; r < n_sum; r++) {
            int64_t o = base + offset_of(r, L->nr, L->rsize, L->rstride);
            if (w)
                for (int64_t l = 0; l < len; l++)
                    acc[l] += (double)(x[o + l] * w[o + l]);
            else
                for (int64_t l = 0; l < len; l++)
                    acc[l] += (double)x[o + l];
        }
        float *d = dst + jo * run + l0;
        for (int64_t l = 0; l < len; l++)
            d[l] += (float)(scale * acc[l]);
    }
}

/* dst += scale * (sum of x (* w, elementwise, if w) over the dims where keep[k] is
 * false). x and w: contiguous, `ndim` dims of `shape`; dst: contiguous over the kept
 * dims in order. The sums run in double; dst is only added to. */
void ag_reduce_sum_acc(int32_t ndim, const int64_t *shape, const bool *keep,
                       const float *x, const float *w, double scale, float *dst)
{
    red_layout L;
    layout_make(ndim, shape, keep, &L);
    if (L.numel == 0)
        return;
    if (L.nr == 0) { /* nothing to sum: only size-1 dims go */
#pragma omp parallel for if (L.numel > PAR_MIN)
        for (int64_t i = 0; i < L.numel; i++)
            dst[i] += (float)(scale * (double)(w ? x[i] * w[i] : x[i]));
        return;
    }
    if (L.inner_summed)
        sum_inner_summed(&L, x, w, scale, dst);
    else
        sum_inner_kept(&L, x, w, scale, dst);
}

/* ---- sum / mean ---- */

/* The bit mask of dims to reduce; every dim when dims is NULL or n_dims is 0. Dims
 * wrap like PyTorch's (-1 is the last); a 0-dim tensor accepts 0 and -1. */
static bool dims_mask(const char *op, const ag_tensor *x, const int32_t *dims,
                      int32_t n_dims, uint32_t *mask)
{
    if (!dims || n_dims == 0) {
        *mask = (1u << x->ndim) - 1u;
        return true;
    }
    char s[AG_SHAPE_STR_MAX];
    if (n_dims < 0) {
        ag_error(AG_ERR_ARG, "%s: n_dims is %d", op, (int)n_dims);
        return false;
    }
    int32_t nd = x->ndim > 0 ? x->ndim : 1;
    *mask = 0;
    for (int32_t i = 0; i < n_dims; i++) {
        int32_t d = dims[i];
        if (d < -nd || d >= nd) {
            ag_error(AG_ERR_SHAPE, "%s: dim %d out of range for %s (expected %d..%d)", op,
                     (int)d, ag_shape_str(x, s, sizeof s), (int)-nd, (int)nd - 1);
            return false;
        }
        d = d < 0 ? d + nd : d;
        if (*mask & (1u << d)) {
            ag_error(AG_ERR_ARG, "%s: dim %d appears more than once in dims", op, (int)d);
            return false;
        }
        *mask |= 1u << d;
    }
    return true;
}

/* Shape of the result: reduced dims dropped (or kept as 1 with keepdim). When every
 * dim goes the result is [1] (torch gives a 0-dim tensor; cqat keeps one dim). */
static int32_t reduced_shape(const ag_tensor *x, uint32_t mask, bool keepdim, int64_t *shape)
{
    int32_t nd = 0;
    for (int32_t k = 0; k < x->ndim; k++) {
        bool summed = mask & (1u << k);
        if (!summed || keepdim)
            shape[nd++] = summed ? 1 : x->shape[k];
    }
    if (nd == 0 && !keepdim)
        shape[nd++] = 1;
    return nd;
}

static void keep_from_mask(const ag_tensor *x, uint32_t mask, bool *keep)
{
    for (int32_t k = 0; k < x->ndim; k++)
        keep[k] = !(mask & (1u << k));
}

static ag_tensor *reduce(ag_ctx *ctx, const char *op, ag_tensor *x, const int32_t *dims,
                         int32_t n_dims, bool keepdim, bool mean)
{
    if (!x)
        return NULL;
    uint32_t mask;
    if (!dims_mask(op, x, dims, n_dims, &mask))
        return NULL;
    int64_t shape[AG_MAX_DIMS];
    int32_t nd = reduced_shape(x, mask, keepdim, shape);
    ag_tensor *y = ag_op_output(ctx, nd, shape);
    if (!y)
        return NULL;
    bool keep[AG_MAX_DIMS];
    keep_from_mask(x, mask, keep);
    /* torch.mean is sum / count; the mean of nothing is 0 / 0 = NaN, as in torch. */
    int64_t count = y->numel ? x->numel / y->numel : 0;
    double scale = mean ? 1.0 / (double)count : 1.0;
    float fill = mean && count == 0 ? NAN : 0.0f;
    for (int64_t j = 0; j < y->numel; j++)
        y->data[j] = fill;
    ag_reduce_sum_acc(x->ndim, x->shape, keep, x->data, NULL, scale, y->data);
    ag_node *n = ag_op_record(ctx, AG_OP_SUM, y, (ag_tensor *[]){x}, 1);
    if (n && ag_op_recorded(n, y)) {
        n->ip[0] = mask;
        n->fp[0] = (float)scale;
    }
    return ag_op_recorded(n, y);
}

ag_tensor *ag_sum(ag_ctx *ctx, ag_tensor *x, const int32_t *dims, int32_t n_dims, bool keepdim)
{
    return reduce(ctx, "sum", x, dims, n_dims, keepdim, false);
}

ag_tensor *ag_mean(ag_ctx *ctx, ag_tensor *x, const int32_t *dims, int32_t n_dims,
                   bool keepdim)
{
    return reduce(ctx, "mean", x, dims, n_dims, keepdim, true);
}

/* dx += g * scale, g spread back over the summed dims (torch: grad.expand(...), and
 * / count for mean; here times the stored 1/count). */
void ag_sum_backward(ag_ctx *ctx, ag_node *n)
{
    ag_tensor *x = n->src[0];
    float *dx = ag_grad(ctx, x);
    if (!dx)
        return;
    bool keep[AG_MAX_DIMS];
    keep_from_mask(x, (uint32_t)n->ip[0], keep);
    red_layout L;
    layout_make(x->ndim, x->shape, keep, &L);
    if (L.numel == 0)
        return;
    const float *g = n->out->grad;
    float scale = n->fp[0];
    if (L.nr == 0 || L.kept == 1) { /* one value per element, or one value for all */
        int64_t g_step = L.nr == 0 ? 1 : 0;
#pragma omp parallel for if (L.numel > PAR_MIN)
        for (int64_t i = 0; i < L.numel; i++)
            dx[i] += g[i * g_step] * scale;
        return;
    }
    /* Each work item fills one run of the innermost dim: with g constant along it when
     * that dim is summed, or with a row of g when it is kept. */
    int64_t n_runs = L.numel / L.run;
    int32_t nk_out = L.inner_summed ? L.nk : L.nk - 1; /* kept dims outside the run */
    int32_t nr_out = L.inner_summed ? L.nr - 1 : L.nr;
    int64_t n_sum = count_of(nr_out, L.rsize);
#pragma omp parallel for if (L.numel > PAR_MIN)
    for (int64_t q = 0; q < n_runs; q++) {
        int64_t jo = q / n_sum, r = q % n_sum; /* kept position outside the run, summed one */
        int64_t o = offset_of(jo, nk_out, L.ksize, L.kstride) +
                    offset_of(r, nr_out, L.rsize, L.rstride);
        float *d = dx + o;
        if (L.inner_summed) {
            float v = g[jo] * scale;
            for (int64_t i = 0; i < L.run; i++)
                d[i] += v;
        } else {
            const float *gr = g + jo * L.run;
            for (int64_t i = 0; i < L.run; i++)
                d[i] += gr[i] * scale;
        }
    }
}
