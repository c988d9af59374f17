/* conv2d.c — quantized 2-D convolution (NCHW activations, OIHW int8 weights).
 *
 *   acc[n,o,p] = b_q[o] + sum_{c,i,j} (x[n, g*Cg+c, ih, iw] - zp_in) * W[o,c,i,j]
 *   y = clamp(zp_out + rq(acc, M0[o], shift[o]), clamp_min, clamp_max)
 *
 * with ih = oh*stride_h - pad_h + i*dilation_h (likewise iw), padding read as zp_in (so
 * it contributes 0), g = o / (O/groups), and rq the single half-even rounding of
 * q8_impl.h. PyTorch's quantized::conv2d (fbgemm) computes the same sum but requantizes
 * in float (see docs/FORMAT.md for where the two can differ by one).
 *
 * Two kernels, chosen at prepare:
 * - GEMM (q8_gemm_cols / q8_gemm_quads of q8_impl.h): output channels as rows, output
 *   positions as vector lanes, per image, group and chunk of positions; the packed bias
 *   already holds -zp_in * sum_k W (folded at pack time, so the loop never subtracts a
 *   zero point), padding is zp_in in the uint8 domain (int8 inputs shifted by +128), and
 *   each channel's int32 results come out contiguous for the requantization. Stride 1
 *   runs on the padded grid (conv_image_grid: every patch row is a slice of a padded
 *   plane); other strides build the patch rows per position (conv_image). With AVX-VNNI
 *   K goes in quads of bytes (vpdpbusd), else in int16 pairs (vpmaddwd); the VNNI grid
 *   path requantizes each tile in the GEMM's epilogue and writes the output rows
 *   directly (q8_gemm_quads_rq_vnni; q8_gemm_quads_rq_avx512 with AVX-512 VNNI) when
 *   every shift is in [32, 62]. A conv whose only reader is a 2x2/2 max-pool computes
 *   the pool's output in q8_model_run's fused plan (plan_pool): the int32 results of a
 *   chunk pooled, then requantized (monotone, so the same bytes as pooling after);
 * - direct: depthwise (groups > 1, one input channel per group, any channel multiplier,
 *   output rows up to DIRECT_COLS wide): per output row and kernel tap, a branch-free
 *   loop over the output columns that subtracts zp_in and skips the padding.
 * Both obey the same int32 accumulator rule (q8_acc_overflows), so whether a file loads
 * never depends on the kernel.
 */
#include "quantized/builder.h"

#include <inttypes.h>
#include <omp.h>
#include <stdlib.h>

enum { STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W, GROUPS, CLAMP_MIN, CLAMP_MAX };
static const q8_attr_spec attrs[] = {
    [STRIDE_H] = {"stride_h", false, 1, 1, Q8_MAX_DIM},
    [STRIDE_W] = {"stride_w", false, 1, 1, Q8_MAX_DIM},
    [PAD_H] = {"pad_h", false, 0, 0, Q8_MAX_DIM},
    [PAD_W] = {"pad_w", false, 0, 0, Q8_MAX_DIM},
    [DIL_H] = {"dilation_h", false, 1, 1, Q8_MAX_DIM},
    [DIL_W] = {"dilation_w", false, 1, 1, Q8_MAX_DIM},
    [GROUPS] = {"groups", false, 1, 1, Q8_MAX_DIM},
    [CLAMP_MIN] = {"clamp_min", true, 0, -128, 255},
    [CLAMP_MAX] = {"clamp_max", true, 0, -128, 255},
};
enum { WEIGHT, WEIGHT_SCALE, BIAS, MULTIPLIER, SHIFT };
static const q8_const_spec consts[] = {
    [WEIGHT] = {"weight", true},
    [WEIGHT_SCALE] = {"weight_scale", true},
    [BIAS] = {"bias", false},
    [MULTIPLIER] = {"multiplier", true},
    [SHIFT] = {"shift", true},
};
static const q8_weight_consts wconsts = {WEIGHT_SCALE, BIAS, MULTIPLIER, SHIFT};

enum { DIRECT_COLS = 256 }; /* the direct kernel keeps one output row on the stack */

/* Everything the loops need, derived once. */
typedef struct conv_geom {
    int64_t c, h, w;      /* input channels, height, width */
    int64_t o, oh, ow, p; /* output channels, height, width, oh*ow */
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    int64_t groups, cg, og; /* channels per group: in, out */
    int64_t k;              /* cg*kh*kw */
} conv_geom;

typedef struct conv_prep {
    conv_geom g;
    bool direct;
    q8_packed pk;       /* GEMM path */
    int32_t *bias;      /* direct path: b_q (O) */
    int64_t chunk;      /* output positions per GEMM step, a multiple of Q8_COLS_STEP */
    int64_t kpairs;     /* ceil(K / 2) */
    bool grid;          /* stride 1: positions on the padded grid (see conv_image_grid) */
    int64_t hp, wp;     /* grid: the padded input plane */
    int64_t grid_rows;  /* grid: output rows per GEMM step */
    bool vnni;          /* grid: the AVX-VNNI kernel on K in quads (with the AVX2 kernel) */
    int64_t kquads, kq4; /* ceil(K / 4), its bytes */
    int8_t *wq;         /* vnni: (O, kq4) the weights zero padded */
    int64_t *koff;      /* grid: (K) where patch row k starts in the padded planes */
    bool cquads;        /* vnni with cg % 4 == 0: channel quads interleaved in the planes */
    bool tquads;        /* vnni with cg == 1, 3 <= kw <= 4, dw <= 2: a kernel row's taps as a
                         * quad per grid position (q8_taps_quads), K = (kh, 4) */
    bool fused_rq;      /* vnni, Wp >= 8 and every shift in [32, 62]: requantize in the GEMM */
    bool avx512;        /* fused_rq on 512-bit vectors (q8_gemm_quads_rq_avx512) */
    q8_rq_chan *chan;   /* fused_rq: (O) the requantization constants per output channel */
    int64_t *qoff;      /* cquads: (kquads) where K quad t starts, t = (i*kw + j)*(cg/4) + q */
    int32_t pool_out;   /* grid, fused runs: the 2x2/2 max-pool's output value computed here
                         * (the int32 results pooled, a quarter requantized); -1: none */
    int32_t zp_u8;      /* input zero point, shifted to uint8 for int8 inputs */
    uint8_t xor_in;
} conv_prep;

static void geom_of(const q8_model *m, const q8_node *n, conv_geom *g)
{
    const q8_value *x = q8_in(m, n, 0);
    const q8_tensor *w = &n->cst[WEIGHT];
    g->c = x->shape[1];
    g->h = x->shape[2];
    g->w = x->shape[3];
    g->o = w->shape[0];
    g->kh = w->shape[2];
    g->kw = w->shape[3];
    g->sh = n->attr[STRIDE_H];
    g->sw = n->attr[STRIDE_W];
    g->ph = n->attr[PAD_H];
    g->pw = n->attr[PAD_W];
    g->dh = n->attr[DIL_H];
    g->dw = n->attr[DIL_W];
    g->groups = n->attr[GROUPS];
    g->cg = w->shape[1];
    g->og = g->o / g->groups;
    g->k = g->cg * g->kh * g->kw;
    g->oh = q8_window_out_size(g->h, g->kh, g->sh, g->ph, g->dh, false);
    g->ow = q8_window_out_size(g->w, g->kw, g->sw, g->pw, g->dw, false);
    g->p = g->oh * g->ow;
}

static q8_status check_geometry(const q8_model *m, const q8_node *n, conv_geom *g)
{
    const q8_tensor *w = &n->cst[WEIGHT];
    if (w->dtype != Q8_I8 || w->ndim != 4)
        return q8_node_error(n, Q8_ERR_SHAPE, "constant 'weight' is %s of rank %d, conv2d needs "
                             "i8 of shape [O, C/groups, kH, kW]",
                             q8_dtype_name(w->dtype), (int)w->ndim);
    geom_of(m, n, g);
    if (g->c % g->groups != 0 || g->o % g->groups != 0)
        return q8_node_error(n, Q8_ERR_SHAPE,
                             "groups = %" PRId64 " must divide the %" PRId64
                             " input and %" PRId64 " output channels",
                             g->groups, g->c, g->o);
    if (g->cg != g->c / g->groups)
        return q8_node_error(n, Q8_ERR_SHAPE,
                             "input has %" PRId64 " channels: with groups = %" PRId64
                             " the weight needs %" PRId64 " input channels per group, it has "
                             "%" PRId64,
                             g->c, g->groups, g->c / g->groups, g->cg);
    if (g->oh < 1 || g->ow < 1)
        return q8_node_error(n, Q8_ERR_SHAPE,
                             "kernel %" PRId64 "x%" PRId64 " with dilation %" PRId64 "x%" PRId64
                             " does not fit the input %" PRId64 "x%" PRId64
                             " padded by %" PRId64 "x%" PRId64,
                             g->kh, g->kw, g->dh, g->dw, g->h, g->w, g->ph, g->pw);
    return Q8_OK;
}

static q8_status check(const q8_model *m, const q8_node *n)
{
    conv_geom g;
    q8_status st = q8_check_input_quantized(m, n, 0);
    if (st == Q8_OK)
        st = q8_check_input_rank(m, n, 0, 4);
    if (st == Q8_OK)
        st = check_geometry(m, n, &g);
    if (st != Q8_OK)
        return st;
    const q8_value *y = q8_out(m, n);
    if (y->dtype != Q8_U8 && y->dtype != Q8_I8)
        return q8_node_error(n, Q8_ERR_FORMAT, "output (value %d) is %s, conv2d gives u8 or i8",
                             (int)n->out[0], q8_dtype_name(y->dtype));
    int64_t shape[4] = {-1, g.o, g.oh, g.ow};
    st = q8_check_output(m, n, y->dtype, 4, shape);
    if (st == Q8_OK)
        st = q8_check_weight_consts(m, n, &wconsts, g.o);
    if (st == Q8_OK)
        st = q8_check_out_clamp(m, n, CLAMP_MIN, CLAMP_MAX);
    return st;
}

static void release(q8_node *n)
{
    conv_prep *pp = n->prep;
    q8_packed_free(&pp->pk);
    free(pp->bias);
    free(pp->wq);
    free(pp->koff);
    free(pp->qoff);
    free(pp->chan);
    free(pp);
    n->prep = NULL;
}

/* Direct path: acc = b_q + sum (x - zp) * w, under the same int32 rule as the GEMM. */
static q8_status prepare_direct(const q8_node *n, conv_prep *pp)
{
    const conv_geom *g = &pp->g;
    const int8_t *w = n->cst[WEIGHT].data;
    const int32_t *bq = n->cst[BIAS].data;
    pp->bias = malloc((size_t)g->o * sizeof *pp->bias);
    if (!pp->bias)
        return q8_node_error(n, Q8_ERR_NOMEM, "out of memory");
    for (int64_t o = 0; o < g->o; o++) {
        int64_t abs_sum = 0, sum = 0;
        for (int64_t i = 0; i < g->k; i++) {
            abs_sum += abs(w[o * g->k + i]);
            sum += w[o * g->k + i];
        }
        int64_t b = bq ? bq[o] : 0;
        if (q8_acc_overflows(abs_sum, b, b - pp->zp_u8 * sum))
            return q8_node_error(n, Q8_ERR_NUMERIC,
                                 "output channel %" PRId64 ": the int32 accumulator could "
                                 "overflow (255 * sum|W| = %" PRId64 ", bias %" PRId64 ")",
                                 o, 255 * abs_sum, b);
        pp->bias[o] = (int32_t)b;
    }
    return Q8_OK;
}

/* Output positions per GEMM step: all of an image when its patch operand (kpairs x chunk
 * int16 pairs) stays within COLS_BYTES, so that it is built once and read from L2 by
 * every channel tile; at least one Q8_COLS_NR block (a multiple of Q8_COLS_STEP). */
enum { COLS_BYTES = 256 * 1024 };
static int64_t round_nr(int64_t p) { return (p + Q8_COLS_STEP - 1) / Q8_COLS_STEP * Q8_COLS_STEP; }
static int64_t chunk_of(int64_t p, int64_t kpairs)
{
    int64_t fit = COLS_BYTES / (kpairs * 4) / Q8_COLS_NR * Q8_COLS_NR;
    fit = fit < Q8_COLS_NR ? Q8_COLS_NR : fit;
    return round_nr(p) < fit ? round_nr(p) : fit;
}

static size_t round64(size_t b) { return (b + 63) / 64 * 64; }

/* Bytes of the grid path's padded planes (cg of them), with the slack its last operand
 * rows read beyond the last plane (a tap's offset plus the rounding to Q8_COLS_STEP, in
 * 4-byte pixels for the channel-quad layout). */
static size_t planes_bytes(const conv_prep *pp)
{
    const conv_geom *g = &pp->g;
    return (size_t)(g->cg * pp->hp * pp->wp + ((g->kw - 1) * g->dw + Q8_COLS_NR) * 4);
}

/* Bytes of the tquads operand: a quad per grid position, 16 more positions read and
 * written beyond the plane. */
static size_t taps_bytes(const conv_prep *pp)
{
    return pp->tquads ? (size_t)((pp->hp * pp->wp + 16) * 4) : 0;
}

/* The scratch of one thread: the patch rows (two uint8 rows, or the grid path's padded
 * planes and a zero row), the pair-interleaved operand, the int32 results and one row of
 * output bytes; returns its size (base may be NULL). */
typedef struct conv_scratch {
    uint8_t *rows;
    int16_t *cols; // (kpairs, chunk, 2)
    int32_t *acc;  // (og, chunk)
    uint8_t *out;  // (chunk)
} conv_scratch;
static size_t scratch_layout(const conv_prep *pp, uint8_t *base, conv_scratch *sc)
{
    size_t rows = round64((size_t)(2 * pp->chunk));
    if (pp->grid)
        rows = round64(planes_bytes(pp)) + round64(taps_bytes(pp)) + round64((size_t)pp->chunk);
    size_t ops = round64((size_t)(pp->kpairs * pp->chunk) * 2 * sizeof(int16_t));
    /* + 64: q8_pool_rq_avx2 reads up to 14 int32 beyond the last channel's rows */
    size_t res = round64((size_t)(pp->g.og * pp->chunk) * sizeof(int32_t)) + 64;
    if (base) {
        sc->rows = base;
        sc->cols = (int16_t *)(base + rows);
        sc->acc = (int32_t *)(base + rows + ops);
        sc->out = base + rows + ops + res;
    }
    return rows + ops + res + round64((size_t)pp->chunk);
}

/* The weights zero padded to whole quads of K for the VNNI kernel (the folded bias and
 * the accumulator check are q8_pack_weights'). */
static q8_status prepare_quads(const q8_node *n, conv_prep *pp)
{
    const conv_geom *g = &pp->g;
    const int8_t *w = n->cst[WEIGHT].data; // (O, K)
    pp->kquads = (g->k + 3) / 4;
    pp->kq4 = 4 * pp->kquads;
    pp->vnni = q8_gemm_vnni_available();
    if (!pp->vnni)
        return Q8_OK;
    pp->cquads = g->cg % 4 == 0;
    pp->tquads = g->cg == 1 && g->kw >= 3 && g->kw <= 4 && g->dw <= 2;
    if (pp->tquads) {
        pp->kquads = g->kh;
        pp->kq4 = 4 * g->kh;
    }
    bool offsets = pp->cquads || pp->tquads;
    pp->wq = calloc((size_t)(g->o * pp->kq4), 1);
    pp->qoff = offsets ? malloc((size_t)pp->kquads * sizeof *pp->qoff) : NULL;
    if (!pp->wq || (offsets && !pp->qoff))
        return q8_node_error(n, Q8_ERR_NOMEM, "out of memory");
    if (pp->tquads) { /* quad i: row i of the kernel, taps j < kw, zero beyond */
        for (int64_t i = 0; i < g->kh; i++) {
            pp->qoff[i] = i * g->dh * pp->wp * 4;
            for (int64_t o = 0; o < g->o; o++)
                memcpy(pp->wq + o * pp->kq4 + 4 * i, w + o * g->k + i * g->kw, (size_t)g->kw);
        }
        return Q8_OK;
    }
    if (!pp->cquads) {
        for (int64_t o = 0; o < g->o; o++)
            memcpy(pp->wq + o * pp->kq4, w + o * g->k, (size_t)g->k);
        return Q8_OK;
    }
    /* K reordered as (tap, channel quad, channel in quad), the order of the planes */
    const int64_t taps = g->kh * g->kw, nq = g->cg / 4;
    for (int64_t tap = 0; tap < taps; tap++)
        for (int64_t q = 0; q < nq; q++) {
            int64_t t = tap * nq + q, i = tap / g->kw, j = tap % g->kw;
            pp->qoff[t] = ((q * pp->hp + i * g->dh) * pp->wp + j * g->dw) * 4;
            for (int64_t o = 0; o < g->o; o++)
                for (int64_t s = 0; s < 4; s++)
                    pp->wq[o * pp->kq4 + 4 * t + s] = w[o * g->k + (4 * q + s) * taps + tap];
        }
    return Q8_OK;
}

/* Every channel's shift is in the range of the 32-bit requantization (multipliers below
 * 2^-1, the usual case), which the fused GEMM epilogue implements. */
static bool shifts_high(const q8_node *n)
{
    const int32_t *shift = n->cst[SHIFT].data;
    for (int64_t i = 0; i < n->cst[SHIFT].numel; i++)
        if (shift[i] < 32 || shift[i] > 62)
            return false;
    return true;
}

/* The fused epilogue's constants per output channel; an accumulator is bounded by
 * |folded bias| + 255 * sum|W| (the GEMM starts from the folded bias and reads bytes). */
static q8_status prepare_chan(const q8_model *m, const q8_node *n, conv_prep *pp)
{
    const conv_geom *g = &pp->g;
    const int8_t *w = n->cst[WEIGHT].data; // (O, K)
    const int32_t *mult = n->cst[MULTIPLIER].data, *shift = n->cst[SHIFT].data;
    bool per_channel = n->cst[MULTIPLIER].numel != 1;
    pp->chan = malloc((size_t)g->o * sizeof *pp->chan);
    if (!pp->chan)
        return q8_node_error(n, Q8_ERR_NOMEM, "out of memory");
    for (int64_t o = 0; o < g->o; o++) {
        int64_t abs_sum = 0, b = pp->pk.bias[o], mi = per_channel ? o : 0;
        for (int64_t i = 0; i < g->k; i++)
            abs_sum += abs(w[o * g->k + i]);
        q8_rq_chan_init(&pp->chan[o], mult[mi], shift[mi], q8_out(m, n)->zero_point,
                        (b < 0 ? -b : b) + 255 * abs_sum);
    }
    return Q8_OK;
}

/* The fused plan: when the conv's only reader is a 2x2/2 max-pool and its output is not a
 * graph output, fused runs compute the pool's output here and skip the pool node (the
 * conv's own output is not written then). Returns the pool's output value, or -1. */
static int32_t plan_pool(q8_model *m, const q8_node *n)
{
    int32_t y = n->out[0], reader = -1;
    for (int32_t i = 0; i < m->n_outputs; i++)
        if (m->outputs[i] == y)
            return -1;
    for (int32_t k = 0; k < m->n_nodes; k++)
        for (int32_t i = 0; i < m->nodes[k].n_in; i++) {
            if (m->nodes[k].in[i] != y)
                continue;
            if (reader >= 0)
                return -1;
            reader = k;
        }
    if (reader < 0 || !q8_max_pool_is_2x2s2(&m->nodes[reader]))
        return -1;
    m->nodes[reader].fused_into = (int32_t)(n - m->nodes);
    m->values[y].fused_away = true;
    return m->nodes[reader].out[0];
}

static q8_status prepare(q8_model *m, q8_node *n)
{
    conv_prep *pp = calloc(1, sizeof *pp);
    if (!pp)
        return q8_node_error(n, Q8_ERR_NOMEM, "out of memory");
    n->prep = pp;
    pp->pool_out = -1;
    geom_of(m, n, &pp->g);
    const q8_value *x = q8_in(m, n, 0);
    pp->xor_in = q8_xor(x->dtype);
    pp->zp_u8 = x->zero_point + (x->dtype == Q8_I8 ? 128 : 0);
    /* Depthwise (one input channel per group) runs direct; a single-channel input with
     * groups = 1 (a grayscale first layer) is a plain GEMM of K = kH*kW. */
    pp->direct = pp->g.cg == 1 && pp->g.groups > 1 && pp->g.ow <= DIRECT_COLS;
    if (pp->direct)
        return prepare_direct(n, pp);
    q8_status st = q8_pack_weights(n, n->cst[WEIGHT].data, pp->g.o, pp->g.k, n->cst[BIAS].data,
                                   pp->zp_u8, &pp->pk);
    if (st != Q8_OK)
        return st;
    pp->kpairs = (pp->g.k + 1) / 2;
    const conv_geom *g = &pp->g;
    pp->grid = g->sh == 1 && g->sw == 1;
    pp->chunk = chunk_of(g->p, pp->kpairs);
    if (pp->grid) {
        pp->hp = g->h + 2 * g->ph;
        pp->wp = g->w + 2 * g->pw;
        int64_t fit = COLS_BYTES / (pp->kpairs * 4) / pp->wp;
        pp->grid_rows = fit < 1 ? 1 : fit < g->oh ? fit : g->oh;
        pp->pool_out = plan_pool(m, n);
        if (pp->pool_out >= 0) /* pairs of rows stay in one chunk */
            pp->grid_rows = pp->grid_rows < 2 ? 2 : pp->grid_rows / 2 * 2;
        pp->chunk = round_nr(pp->grid_rows * pp->wp);
        st = prepare_quads(n, pp);
        if (st != Q8_OK)
            return st;
        pp->fused_rq = pp->vnni && pp->wp >= 8 && shifts_high(n);
        pp->avx512 = pp->fused_rq && q8_gemm_avx512_available();
        bool chan = pp->fused_rq || (pp->pool_out >= 0 && shifts_high(n));
        if (chan && (st = prepare_chan(m, n, pp)) != Q8_OK)
            return st;
        pp->koff = malloc((size_t)g->k * sizeof *pp->koff);
        if (!pp->koff)
            return q8_node_error(n, Q8_ERR_NOMEM, "out of memory");
        for (int64_t k = 0; k < g->k; k++) { /* k = (c*kh + i)*kw + j */
            int64_t c = k / (g->kh * g->kw), i = k / g->kw % g->kh, j = k % g->kw;
            pp->koff[k] = (c * pp->hp + i * g->dh) * pp->wp + j * g->dw;
        }
    }
    n->scratch_bytes = scratch_layout(pp, NULL, NULL);
    return Q8_OK;
}

/* Output columns [ow_lo, ow_hi) whose input column ow*sw - pw + j*dw is inside [0, W). */
static void valid_cols(const conv_geom *g, int64_t j, int64_t *ow_lo, int64_t *ow_hi)
{
    int64_t off = j * g->dw - g->pw; /* iw = ow * sw + off */
    int64_t lo = off >= 0 ? 0 : (-off + g->sw - 1) / g->sw;
    int64_t hi = g->w - 1 - off < 0 ? 0 : (g->w - 1 - off) / g->sw + 1;
    *ow_lo = lo < g->ow ? lo : g->ow;
    *ow_hi = hi < g->ow ? hi : g->ow;
    if (*ow_hi < *ow_lo)
        *ow_hi = *ow_lo;
}

static int64_t clamp_i64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Row k = (c, i, j) of the patch matrix over output positions [p0, p0 + cols): dst[p - p0]
 * = x[c][oh*sh - ph + i*dh][ow*sw - pw + j*dw] in the uint8 domain, zp_u8 in the padding.
 * Per output row the inside columns are one run (a memcpy at stride 1). */
static void patch_row(const conv_prep *pp, const uint8_t *xc, int64_t i, int64_t j, int64_t p0,
                      int64_t cols, uint8_t *dst)
{
    const conv_geom g = pp->g; /* a local copy: the byte stores below alias everything */
    const uint8_t pad = (uint8_t)pp->zp_u8, flip = pp->xor_in;
    int64_t lo = 0, hi = 0, off = j * g.dw - g.pw;
    valid_cols(&g, j, &lo, &hi);
    for (int64_t p = p0; p < p0 + cols;) {
        int64_t oh = p / g.ow, ow0 = p % g.ow;
        int64_t ow1 = g.ow < ow0 + (p0 + cols - p) ? g.ow : ow0 + (p0 + cols - p);
        int64_t ih = oh * g.sh - g.ph + i * g.dh;
        uint8_t *d = dst + (p - p0) - ow0; /* d[ow] */
        int64_t a = ih < 0 || ih >= g.h ? ow1 : clamp_i64(lo, ow0, ow1);
        int64_t b = ih < 0 || ih >= g.h ? ow1 : clamp_i64(hi, a, ow1);
        const uint8_t *xr = xc + ih * g.w + off; /* xr[ow * sw], used for ow in [a, b) only */
        memset(d + ow0, pad, (size_t)(a - ow0));
        if (g.sw == 1 && !flip)
            memcpy(d + a, xr + a, (size_t)(b - a));
        else
            for (int64_t ow = a; ow < b; ow++)
                d[ow] = (uint8_t)(xr[ow * g.sw] ^ flip);
        memset(d + b, pad, (size_t)(ow1 - b));
        p += ow1 - ow0;
    }
}

/* The GEMM operand of positions [p0, p0 + cols) of group grp: K in pairs, each pair's two
 * patch rows interleaved and widened ((kpairs, np, 2) int16; columns beyond cols and the
 * row beyond an odd K are zero). */
static void build_cols(const q8_model *m, const conv_prep *pp, const uint8_t *xg, int64_t p0,
                       int64_t cols, int64_t np, uint8_t *rows, int16_t *out)
{
    const conv_geom *g = &pp->g;
    const int64_t taps = g->kh * g->kw, plane = g->h * g->w;
    memset(rows, 0, (size_t)(2 * np));
    for (int64_t t = 0; t < pp->kpairs; t++) {
        for (int64_t s = 0; s < 2; s++) {
            int64_t k = 2 * t + s;
            uint8_t *r = rows + s * np;
            if (k < g->k)
                patch_row(pp, xg + k / taps * plane, k % taps / g->kw, k % g->kw, p0, cols, r);
            else
                memset(r, 0, (size_t)np);
        }
        if (m->kernel == Q8_GEMM_AVX2)
            q8_interleave_pairs_avx2(rows, rows + np, np, out + t * np * 2);
        else
            q8_interleave_pairs_reference(rows, rows + np, np, out + t * np * 2);
    }
}

typedef struct requant_args {
    const int32_t *mult, *shift;
    int64_t n_mult;
    int32_t zp, lo, hi;
} requant_args;

static requant_args requant_of(const q8_model *m, const q8_node *n)
{
    requant_args r;
    r.mult = n->cst[MULTIPLIER].data;
    r.shift = n->cst[SHIFT].data;
    r.n_mult = n->cst[MULTIPLIER].numel;
    r.zp = q8_out(m, n)->zero_point;
    r.lo = (int32_t)n->attr[CLAMP_MIN];
    r.hi = (int32_t)n->attr[CLAMP_MAX];
    return r;
}

/* Padded copies of the cg planes of one group, uint8 domain, zp_u8 around: (cg, Hp, Wp). */
static void pad_planes(const conv_prep *pp, const uint8_t *xg, uint8_t *planes)
{
    const conv_geom *g = &pp->g;
    const uint8_t pad = (uint8_t)pp->zp_u8, flip = pp->xor_in;
    memset(planes, pad, planes_bytes(pp));
    for (int64_t c = 0; c < g->cg; c++)
        for (int64_t ih = 0; ih < g->h; ih++) {
            const uint8_t *src = xg + (c * g->h + ih) * g->w; // (W)
            uint8_t *dst = planes + (c * pp->hp + ih + g->ph) * pp->wp + g->pw;
            memcpy(dst, src, (size_t)g->w);
            for (int64_t iw = 0; flip && iw < g->w; iw++)
                dst[iw] ^= flip;
        }
}

/* Row k of the grid operand from output row oh0 on: a slice of a padded plane (zero rows
 * beyond K). */
static const uint8_t *grid_row(const conv_prep *pp, const uint8_t *planes, const uint8_t *zero,
                               int64_t k, int64_t oh0)
{
    return k < pp->g.k ? planes + pp->koff[k] + oh0 * pp->wp : zero;
}

static void grid_pairs(const q8_model *m, const conv_prep *pp, const uint8_t *planes,
                       const uint8_t *zero, int64_t oh0, int64_t np, int16_t *cols)
{
    for (int64_t t = 0; t < pp->kpairs; t++) {
        const uint8_t *r0 = grid_row(pp, planes, zero, 2 * t, oh0);
        const uint8_t *r1 = grid_row(pp, planes, zero, 2 * t + 1, oh0);
        if (m->kernel == Q8_GEMM_AVX2)
            q8_interleave_pairs_avx2(r0, r1, np, cols + t * np * 2);
        else
            q8_interleave_pairs_reference(r0, r1, np, cols + t * np * 2);
    }
}

static void grid_quads(const conv_prep *pp, const uint8_t *planes, const uint8_t *zero,
                       int64_t oh0, int64_t np, uint8_t *cols)
{
    for (int64_t t = 0; t < pp->kquads; t++) {
        const uint8_t *r[4];
        for (int64_t s = 0; s < 4; s++)
            r[s] = grid_row(pp, planes, zero, 4 * t + s, oh0);
        q8_interleave_quads_avx2(r, np, cols + t * np * 4);
    }
}

/* The cquads layout: (cg/4, Hp, Wp, 4), the 4 channels of a quad interleaved per pixel, so
 * that quad q of tap (i, j) at grid positions p.. is 4p bytes from qoff[t]: the GEMM
 * reads its operand straight from here, nothing is interleaved per K. */
static void pad_planes_quads(const conv_prep *pp, const uint8_t *xg, uint8_t *planes)
{
    const conv_geom *g = &pp->g;
    const uint8_t flip = pp->xor_in;
    memset(planes, pp->zp_u8, planes_bytes(pp));
    for (int64_t q = 0; q < g->cg / 4; q++)
        for (int64_t ih = 0; ih < g->h; ih++) {
            const uint8_t *r[4]; // (W) each: row ih of channels 4q .. 4q+3
            for (int64_t s = 0; s < 4; s++)
                r[s] = xg + ((4 * q + s) * g->h + ih) * g->w;
            uint8_t *dst = planes + ((q * pp->hp + ih + g->ph) * pp->wp + g->pw) * 4; // (W, 4)
            if (!flip) {
                q8_interleave_quads_avx2(r, g->w, dst); /* cquads runs with the AVX2 kernels */
                continue;
            }
            for (int64_t iw = 0; iw < g->w; iw++)
                for (int64_t s = 0; s < 4; s++)
                    dst[4 * iw + s] = (uint8_t)(r[s][iw] ^ flip);
        }
}

/* The fused epilogue's destination for output rows [oh0, oh0 + rows) of group grp. */
static q8_rq_rows rows_of(const conv_prep *pp, const requant_args *rq, int64_t grp, int64_t oh0,
                          int64_t rows, uint8_t *yb)
{
    const conv_geom *g = &pp->g;
    q8_rq_rows d;
    d.chan = pp->chan + grp * g->og;
    d.zp = rq->zp;
    d.lo = rq->lo;
    d.hi = rq->hi;
    d.out = yb + grp * g->og * g->p + oh0 * g->ow;
    d.ldo = g->p;
    d.room = (g->oh - oh0) * g->ow;
    d.wp = pp->wp;
    d.ow = g->ow;
    d.rows = rows;
    return d;
}

/* The fused plan's epilogue for grid rows [oh0, oh0 + rows) (oh0 even) of group grp: the
 * int32 results acc (og, np) pooled over 2x2 windows and requantized into the pool's
 * output yp (O, OH/2, OW/2); a last odd row is the one the floor-mode pool drops. */
static void pool_chunk(const q8_model *m, const conv_prep *pp, const requant_args *rq,
                       int64_t grp, int64_t oh0, int64_t rows, int64_t np, const int32_t *acc,
                       uint8_t *yp)
{
    const conv_geom *g = &pp->g;
    const int64_t ph = g->oh / 2, pw = g->ow / 2, i0 = oh0 / 2, prows = rows / 2;
    for (int64_t o = 0; o < g->og; o++) {
        int64_t oc = grp * g->og + o, mi = rq->n_mult == 1 ? 0 : oc;
        uint8_t *out = yp + (oc * ph + i0) * pw; // (prows, pw)
        if (m->kernel == Q8_GEMM_AVX2 && pp->chan)
            q8_pool_rq_avx2(acc + o * np, pp->wp, prows, pw, &pp->chan[oc], rq->zp, rq->lo,
                            rq->hi, out, (ph - i0) * pw);
        else
            q8_pool_rq_reference(acc + o * np, pp->wp, prows, pw, rq->mult[mi], rq->shift[mi],
                                 rq->zp, rq->lo, rq->hi, out);
    }
}

/* Stride 1: the conv computed at every position oh*Wp + ow of the padded grid (ow < Wp,
 * the columns ow >= OW are computed and dropped, Wp/OW more work), which makes every
 * patch row a contiguous slice of a padded plane: tap (c, i, j) of rows [oh0, oh1) starts
 * at plane c, (oh0 + i*dh)*Wp + j*dw. No per-position copies, no per-row bounds. */
static void conv_image_grid(const q8_model *m, const q8_node *n, const uint8_t *xb,
                            uint8_t *yb, uint8_t *yp, uint8_t *scratch)
{
    const conv_prep *pp = n->prep;
    const conv_geom *g = &pp->g;
    requant_args rq = requant_of(m, n);
    q8_gemm_cols_fn gemm = m->kernel == Q8_GEMM_AVX2 ? q8_gemm_cols_avx2 : q8_gemm_cols_reference;
    conv_scratch sc;
    scratch_layout(pp, scratch, &sc);
    uint8_t *planes = sc.rows;                                // (cg, Hp, Wp) + slack
    uint8_t *taps = sc.rows + round64(planes_bytes(pp));      // tquads: (Hp * Wp + 16, 4)
    uint8_t *zero = taps + round64(taps_bytes(pp));           // (chunk)
    memset(zero, 0, (size_t)pp->chunk);
    bool cquads = m->kernel == Q8_GEMM_AVX2 && pp->vnni && pp->cquads;
    bool tquads = m->kernel == Q8_GEMM_AVX2 && pp->vnni && pp->tquads;
    const uint8_t *quads = tquads ? taps : planes; /* cquads/tquads: the GEMM's operand */
    for (int64_t grp = 0; grp < g->groups; grp++) {
        const uint8_t *xg = xb + grp * g->cg * g->h * g->w; // (cg, H, W)
        if (cquads)
            pad_planes_quads(pp, xg, planes);
        else
            pad_planes(pp, xg, planes);
        if (tquads) {
            q8_taps_quads_avx2(planes, pp->hp * pp->wp, g->kw, g->dw, taps);
            memset(taps + pp->hp * pp->wp * 4, 0, 16 * 4);
        }
        const bool offs = cquads || tquads; /* the operand read through pp->qoff */
        for (int64_t oh0 = 0; oh0 < g->oh; oh0 += pp->grid_rows) {
            int64_t rows = g->oh - oh0 < pp->grid_rows ? g->oh - oh0 : pp->grid_rows;
            int64_t np = round_nr(rows * pp->wp);
            const int8_t *wq = pp->wq + grp * g->og * pp->kq4;
            if (m->kernel == Q8_GEMM_AVX2 && pp->fused_rq && !yp) {
                q8_rq_rows d = rows_of(pp, &rq, grp, oh0, rows, yb);
                const uint8_t *a = quads + oh0 * pp->wp * 4;
                if (!offs) {
                    grid_quads(pp, planes, zero, oh0, np, (uint8_t *)sc.cols);
                    a = (const uint8_t *)sc.cols;
                }
                (pp->avx512 ? q8_gemm_quads_rq_avx512 : q8_gemm_quads_rq_vnni)(
                    g->og, pp->kquads, wq, pp->kq4, a, offs ? pp->qoff : NULL, np,
                    pp->pk.bias + grp * g->og, &d);
                continue;
            }
            if (offs)
                q8_gemm_quads_vnni(g->og, pp->kquads, wq, pp->kq4, quads + oh0 * pp->wp * 4,
                                   pp->qoff, np, pp->pk.bias + grp * g->og, sc.acc, np);
            else if (m->kernel == Q8_GEMM_AVX2 && pp->vnni) {
                grid_quads(pp, planes, zero, oh0, np, (uint8_t *)sc.cols);
                q8_gemm_quads_vnni(g->og, pp->kquads, wq, pp->kq4, (const uint8_t *)sc.cols,
                                   NULL, np, pp->pk.bias + grp * g->og, sc.acc, np);
            } else {
                grid_pairs(m, pp, planes, zero, oh0, np, sc.cols);
                gemm(g->og, pp->kpairs, pp->pk.w + grp * g->og * pp->pk.kp, pp->pk.kp, sc.cols,
                     np, pp->pk.bias + grp * g->og, sc.acc, np);
            }
            if (yp) {
                pool_chunk(m, pp, &rq, grp, oh0, rows, np, sc.acc, yp);
                continue;
            }
            for (int64_t o = 0; o < g->og; o++) {
                int64_t oc = grp * g->og + o, mi = rq.n_mult == 1 ? 0 : oc;
                q8_requant(m->kernel, sc.acc + o * np, rows * pp->wp, rq.mult + mi,
                           rq.shift + mi, 0, rq.zp, rq.lo, rq.hi, sc.out);
                uint8_t *yo = yb + oc * g->p + oh0 * g->ow; // (rows, OW)
                for (int64_t r = 0; r < rows; r++)
                    memcpy(yo + r * g->ow, sc.out + r * pp->wp, (size_t)g->ow);
            }
        }
    }
}

/* One image through the patch operand, the column GEMM and requantization, chunk by
 * chunk, in `scratch`. The results come out one contiguous row per output channel. */
static void conv_image(const q8_model *m, const q8_node *n, const uint8_t *xb, uint8_t *yb,
                       uint8_t *scratch)
{
    const conv_prep *pp = n->prep;
    const conv_geom *g = &pp->g;
    requant_args rq = requant_of(m, n);
    q8_gemm_cols_fn gemm = m->kernel == Q8_GEMM_AVX2 ? q8_gemm_cols_avx2 : q8_gemm_cols_reference;
    conv_scratch sc;
    scratch_layout(pp, scratch, &sc);
    int16_t *cols = sc.cols; // (kpairs, chunk, 2)
    int32_t *acc = sc.acc;   // (og, chunk)
    for (int64_t grp = 0; grp < g->groups; grp++) {
        const uint8_t *xg = xb + grp * g->cg * g->h * g->w; // (cg, H, W)
        for (int64_t p0 = 0; p0 < g->p; p0 += pp->chunk) {
            int64_t n_pos = g->p - p0 < pp->chunk ? g->p - p0 : pp->chunk;
            int64_t np = round_nr(n_pos);
            build_cols(m, pp, xg, p0, n_pos, np, scratch, cols);
            gemm(g->og, pp->kpairs, pp->pk.w + grp * g->og * pp->pk.kp, pp->pk.kp, cols, np,
                 pp->pk.bias + grp * g->og, acc, np);
            for (int64_t o = 0; o < g->og; o++) {
                int64_t oc = grp * g->og + o, mi = rq.n_mult == 1 ? 0 : oc;
                q8_requant(m->kernel, acc + o * np, n_pos, rq.mult + mi, rq.shift + mi, 0, rq.zp,
                           rq.lo, rq.hi, yb + oc * g->p + p0);
            }
        }
    }
}

/* A batch runs as one parallel region over images, each thread with its own scratch
 * (under a passive OpenMP wait policy every region costs a wake-up); a single image
 * parallelizes inside instead. A fused run with a pool planned writes the pool's output
 * instead of the conv's. */
static void run_gemm(q8_model *m, const q8_node *n, int64_t batch)
{
    const conv_prep *pp = n->prep;
    const conv_geom *g = &pp->g;
    const uint8_t *x = q8_value_data(m, n->in[0]); // (N, C, H, W)
    uint8_t *y = q8_value_data(m, n->out[0]);      // (N, O, OH, OW)
    bool pooled = m->fused && pp->pool_out >= 0;
    uint8_t *yp = pooled ? q8_value_data(m, pp->pool_out) : NULL; // (N, O, OH/2, OW/2)
    int64_t pool_item = g->o * (g->oh / 2) * (g->ow / 2);
    bool per_image = batch > 1 && m->scratch_threads > 1;
#pragma omp parallel for schedule(dynamic, 1) if (per_image)
    for (int64_t b = 0; b < batch; b++) {
        uint8_t *scratch = q8_scratch(m, per_image ? omp_get_thread_num() : 0);
        if (pp->grid)
            conv_image_grid(m, n, x + b * g->c * g->h * g->w, y + b * g->o * g->p,
                            pooled ? yp + b * pool_item : NULL, scratch);
        else
            conv_image(m, n, x + b * g->c * g->h * g->w, y + b * g->o * g->p, scratch);
    }
}

/* One output row of one depthwise channel: per kernel tap, a branch-free loop over the
 * output columns whose input column is inside the image (stride 1: contiguous, so the
 * compiler vectorizes it). */
static void direct_row(const conv_prep *pp, const uint8_t *xc, const int8_t *wo, int64_t oh,
                       int32_t bias, int32_t *acc)
{
    const conv_geom *g = &pp->g;
    for (int64_t ow = 0; ow < g->ow; ow++)
        acc[ow] = bias;
    for (int64_t i = 0; i < g->kh; i++) {
        int64_t ih = oh * g->sh - g->ph + i * g->dh;
        if (ih < 0 || ih >= g->h)
            continue;
        const uint8_t *xr = xc + ih * g->w; // (W)
        for (int64_t j = 0; j < g->kw; j++) {
            int64_t lo = 0, hi = 0, off = j * g->dw - g->pw;
            valid_cols(g, j, &lo, &hi);
            int32_t wv = wo[i * g->kw + j], zp = pp->zp_u8;
            uint8_t flip = pp->xor_in;
            for (int64_t ow = lo; ow < hi; ow++)
                acc[ow] += ((int32_t)(uint8_t)(xr[ow * g->sw + off] ^ flip) - zp) * wv;
        }
    }
}

static void run_direct(q8_model *m, const q8_node *n, int64_t batch)
{
    const conv_prep *pp = n->prep;
    const conv_geom *g = &pp->g;
    requant_args rq = requant_of(m, n);
    const uint8_t *x = q8_value_data(m, n->in[0]); // (N, C, H, W)
    uint8_t *y = q8_value_data(m, n->out[0]);      // (N, O, OH, OW)
    const int8_t *w = n->cst[WEIGHT].data;          // (O, 1, kH, kW)
    int64_t planes = batch * g->o;
#pragma omp parallel for schedule(static) if (planes * g->p * g->k > 32768)
    for (int64_t t = 0; t < planes; t++) {
        int32_t acc[DIRECT_COLS]; // (OW)
        int64_t b = t / g->o, oc = t % g->o, mi = rq.n_mult == 1 ? 0 : oc;
        const uint8_t *xc = x + (b * g->c + oc / g->og) * g->h * g->w; // (H, W)
        uint8_t *yo = y + t * g->p;                                    // (OH, OW)
        for (int64_t oh = 0; oh < g->oh; oh++) {
            direct_row(pp, xc, w + oc * g->k, oh, pp->bias[oc], acc);
            q8_requant(m->kernel, acc, g->ow, rq.mult + mi, rq.shift + mi, 0, rq.zp, rq.lo,
                       rq.hi, yo + oh * g->ow);
        }
    }
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const conv_prep *pp = n->prep;
    if (pp->direct)
        run_direct(m, n, batch);
    else
        run_gemm(m, n, batch);
    return Q8_OK;
}

const q8_op_def q8_op_conv2d = {
    .name = "conv2d",
    .min_inputs = 1,
    .max_inputs = 1,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .consts = consts,
    .n_consts = sizeof consts / sizeof consts[0],
    .check = check,
    .prepare = prepare,
    .release = release,
    .run = run,
};

static int64_t or1(int64_t v) { return v > 0 ? v : 1; }

void q8_conv_out_shape(const q8_value *xv, const q8_conv2d_desc *d, int64_t shape[4])
{
    bool rank4 = xv->ndim == 4;
    int64_t h = rank4 ? xv->shape[2] : 1, w = rank4 ? xv->shape[3] : 1;
    int64_t oh = q8_window_out_size(h, d->kernel[0], or1(d->stride[0]), d->padding[0],
                                    or1(d->dilation[0]), false);
    int64_t ow = q8_window_out_size(w, d->kernel[1], or1(d->stride[1]), d->padding[1],
                                    or1(d->dilation[1]), false);
    shape[0] = -1;
    shape[1] = or1(d->out_channels);
    shape[2] = or1(oh);
    shape[3] = or1(ow);
}

q8_status q8_builder_conv_attrs(q8_builder *b, int32_t node, const q8_value *xv,
                                const q8_conv2d_desc *d, int64_t wshape[4])
{
    int64_t groups = or1(d->groups), c = xv->ndim == 4 ? xv->shape[1] : 1;
    if (xv->ndim != 4 || c % groups != 0 || d->out_channels < 1 ||
        d->out_channels % groups != 0 || d->kernel[0] < 1 || d->kernel[1] < 1) {
        q8_builder_node_fail(b, node, Q8_ERR_SHAPE,
                             "input of rank %d with %" PRId64 " channels, %" PRId64
                             " output channels, kernel %" PRId64 "x%" PRId64
                             " and groups = %" PRId64 " do not make a conv2d",
                             (int)xv->ndim, c, d->out_channels, d->kernel[0], d->kernel[1],
                             groups);
        return q8_builder_status(b);
    }
    wshape[0] = d->out_channels;
    wshape[1] = c / groups;
    wshape[2] = d->kernel[0];
    wshape[3] = d->kernel[1];
    q8_builder_set_attr(b, node, "stride_h", or1(d->stride[0]));
    q8_builder_set_attr(b, node, "stride_w", or1(d->stride[1]));
    q8_builder_set_attr(b, node, "pad_h", d->padding[0]);
    q8_builder_set_attr(b, node, "pad_w", d->padding[1]);
    q8_builder_set_attr(b, node, "dilation_h", or1(d->dilation[0]));
    q8_builder_set_attr(b, node, "dilation_w", or1(d->dilation[1]));
    return q8_builder_set_attr(b, node, "groups", groups);
}

int32_t q8_builder_conv2d(q8_builder *b, const char *name, int32_t x, const q8_conv2d_desc *d,
                          const q8_weights *w, q8_qparams out, q8_act act)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    if (!d || !w || !w->data) {
        q8_error(Q8_ERR_ARG, "conv2d '%s': descriptor or weights missing", name ? name : "");
        q8_builder_fail(b, Q8_ERR_ARG);
        return -1;
    }
    int64_t shape[4], wshape[4];
    q8_conv_out_shape(&xv, d, shape);
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "conv2d", name, &x, 1, out.dtype, 4, shape, out.scale,
                                    out.zero_point, &y);
    if (node < 0)
        return -1;
    if (xv.dtype != Q8_U8 && xv.dtype != Q8_I8)
        return q8_builder_node_fail(b, node, Q8_ERR_FORMAT, "input (value %d) is %s, conv2d needs "
                                    "u8 or i8", (int)x, q8_dtype_name(xv.dtype));
    if (q8_builder_conv_attrs(b, node, &xv, d, wshape) != Q8_OK)
        return -1;
    q8_builder_clamp_attrs(b, node, act, out);
    q8_builder_add_constant(b, node, "weight", Q8_I8, 4, wshape, w->data);
    if (q8_builder_status(b) == Q8_OK)
        q8_builder_weight_consts(b, node, w, d->out_channels, xv.scale, out.scale);
    return q8_builder_done(b, node, y);
}
