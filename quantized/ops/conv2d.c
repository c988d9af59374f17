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
 * - GEMM: per image, per group and per chunk of output positions, im2row writes the
 *   patches as rows of A (uint8, int8 inputs shifted by +128), and q8_gemm multiplies
 *   them with the packed weights, whose bias already holds -zp_in * sum_k W (folded at
 *   pack time, so the loop never subtracts a zero point); the results come out
 *   transposed, one contiguous row per output channel, for the requantization;
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
    int64_t chunk;      /* output positions per GEMM step */
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

static q8_status prepare(q8_model *m, q8_node *n)
{
    conv_prep *pp = calloc(1, sizeof *pp);
    if (!pp)
        return q8_node_error(n, Q8_ERR_NOMEM, "out of memory");
    n->prep = pp;
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
    pp->chunk = pp->g.p < Q8_CHUNK_ROWS ? pp->g.p : Q8_CHUNK_ROWS;
    n->scratch_bytes = (size_t)((pp->chunk * pp->pk.kp + 63) / 64 * 64) +
                       (size_t)(pp->chunk * pp->g.og) * sizeof(int32_t);
    return Q8_OK;
}

/* One patch row: a[(c*kh + i)*kw + j] = x[grp*cg + c][ih][iw] (uint8 domain), padding =
 * zp_u8. Whether a kernel row lies inside the image does not depend on the channel, so
 * the checks are made once per (row, i) and the channel loop only copies. */
static void patch(const conv_prep *pp, const uint8_t *xg, int64_t oh, int64_t ow, uint8_t *ar)
{
    const conv_geom g = pp->g; /* a local copy: the byte stores below alias everything */
    const uint8_t pad = (uint8_t)pp->zp_u8, flip = pp->xor_in;
    const int64_t plane = g.h * g.w, iw0 = ow * g.sw - g.pw;
    const bool cols_inside = iw0 >= 0 && iw0 + (g.kw - 1) * g.dw < g.w;
    for (int64_t i = 0; i < g.kh; i++) {
        int64_t ih = oh * g.sh - g.ph + i * g.dh;
        uint8_t *dst = ar + i * g.kw;
        if (ih < 0 || ih >= g.h) {
            for (int64_t c = 0; c < g.cg; c++)
                memset(dst + c * g.kh * g.kw, pad, (size_t)g.kw);
        } else if (cols_inside) {
            const uint8_t *src = xg + ih * g.w + iw0;
            for (int64_t c = 0; c < g.cg; c++, src += plane, dst += g.kh * g.kw)
                for (int64_t j = 0; j < g.kw; j++)
                    dst[j] = (uint8_t)(src[j * g.dw] ^ flip);
        } else {
            const uint8_t *src = xg + ih * g.w;
            for (int64_t c = 0; c < g.cg; c++, src += plane, dst += g.kh * g.kw)
                for (int64_t j = 0; j < g.kw; j++) {
                    int64_t iw = iw0 + j * g.dw;
                    dst[j] = iw >= 0 && iw < g.w ? (uint8_t)(src[iw] ^ flip) : pad;
                }
        }
    }
}

/* Rows p0 .. p0+rows of the patch matrix of group grp of one image (kp bytes each, zero
 * padded beyond K). */
static void im2row(const conv_prep *pp, const uint8_t *xb, int64_t grp, int64_t p0,
                   int64_t rows, uint8_t *a)
{
    const conv_geom *g = &pp->g;
    const uint8_t *xg = xb + grp * g->cg * g->h * g->w; // (cg, H, W)
    int64_t kp = pp->pk.kp;
#pragma omp parallel for schedule(static) if (rows * g->k > 65536 && !omp_in_parallel())
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *ar = a + r * kp; // (kp)
        patch(pp, xg, (p0 + r) / g->ow, (p0 + r) % g->ow, ar);
        memset(ar + g->k, 0, (size_t)(kp - g->k));
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

/* One image through im2row, GEMM and requantization, chunk by chunk, in `scratch`. Run
 * inside the per-image parallel loop, the inner loops stay serial (omp_in_parallel). */
static void conv_image(const q8_model *m, const q8_node *n, const uint8_t *xb, uint8_t *yb,
                       uint8_t *scratch)
{
    const conv_prep *pp = n->prep;
    const conv_geom *g = &pp->g;
    requant_args rq = requant_of(m, n);
    uint8_t *a = scratch;                                                  // (chunk, kp)
    int32_t *acc = (int32_t *)(scratch + (pp->chunk * pp->pk.kp + 63) / 64 * 64); // (og, chunk)
    bool inner = !omp_in_parallel();
    for (int64_t grp = 0; grp < g->groups; grp++) {
        for (int64_t p0 = 0; p0 < g->p; p0 += pp->chunk) {
            int64_t rows = g->p - p0 < pp->chunk ? g->p - p0 : pp->chunk;
            im2row(pp, xb, grp, p0, rows, a);
            /* stored transposed, (og, rows): each channel's results are contiguous */
            q8_gemm(m->kernel, rows, g->og, pp->pk.kp, a, pp->pk.kp,
                    pp->pk.w + grp * g->og * pp->pk.kp, pp->pk.bias + grp * g->og, acc, 1, rows);
#pragma omp parallel for schedule(static) if (inner && rows * g->og > 16384)
            for (int64_t o = 0; o < g->og; o++) {
                int64_t oc = grp * g->og + o, mi = rq.n_mult == 1 ? 0 : oc;
                q8_requant(m->kernel, acc + o * rows, rows, rq.mult + mi, rq.shift + mi, 0, rq.zp,
                           rq.lo, rq.hi, yb + oc * g->p + p0);
            }
        }
    }
}

/* A batch runs as one parallel region over images, each thread with its own scratch
 * (under a passive OpenMP wait policy every region costs a wake-up); a single image
 * parallelizes inside instead. */
static void run_gemm(q8_model *m, const q8_node *n, int64_t batch)
{
    const conv_geom *g = &((const conv_prep *)n->prep)->g;
    const uint8_t *x = q8_value_data(m, n->in[0]); // (N, C, H, W)
    uint8_t *y = q8_value_data(m, n->out[0]);      // (N, O, OH, OW)
    bool per_image = batch > 1 && m->scratch_threads > 1;
#pragma omp parallel for schedule(dynamic, 1) if (per_image)
    for (int64_t b = 0; b < batch; b++)
        conv_image(m, n, x + b * g->c * g->h * g->w, y + b * g->o * g->p,
                   q8_scratch(m, per_image ? omp_get_thread_num() : 0));
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
