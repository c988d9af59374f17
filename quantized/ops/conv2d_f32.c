/* conv2d_f32.c — float 2-D convolution (NCHW, OIHW float weights), PyTorch's
 * F.conv2d(x, w, b, stride, padding, dilation, groups) followed by the fused activation:
 *
 *   y[n,o,p] = act(sum_{c,i,j} x[n, g*Cg+c, ih, iw] * W[o,c,i,j] + b[o])
 *
 * with ih = oh*stride_h - pad_h + i*dilation_h (likewise iw), zero padding and
 * g = o / (O/groups). The sum runs in float32, in the kernel's order (PyTorch's oneDNN
 * or im2col kernels have theirs), so results agree to rounding, not bit for bit.
 *
 * Two kernels, chosen at prepare:
 * - GEMM: per image, group and chunk of output positions, im2col writes the patches
 *   directly as packed B panels (16 positions x K, see q8_sgemm) and the weights, packed
 *   once into A panels, multiply them; C comes out as (O/groups, positions), which is
 *   NCHW, with the bias and activation applied at the store;
 * - direct: depthwise (one input channel per group): per output row and kernel tap, a
 *   loop over the valid output columns accumulating into the output row itself.
 */
#include "quantized/builder.h"

#include <inttypes.h>
#include <omp.h>
#include <stdlib.h>

enum { STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W, GROUPS, ACT };
static const q8_attr_spec attrs[] = {
    [STRIDE_H] = {"stride_h", false, 1, 1, Q8_MAX_DIM},
    [STRIDE_W] = {"stride_w", false, 1, 1, Q8_MAX_DIM},
    [PAD_H] = {"pad_h", false, 0, 0, Q8_MAX_DIM},
    [PAD_W] = {"pad_w", false, 0, 0, Q8_MAX_DIM},
    [DIL_H] = {"dilation_h", false, 1, 1, Q8_MAX_DIM},
    [DIL_W] = {"dilation_w", false, 1, 1, Q8_MAX_DIM},
    [GROUPS] = {"groups", false, 1, 1, Q8_MAX_DIM},
    [ACT] = {"act", false, 0, 0, 2},
};
enum { WEIGHT, BIAS };
static const q8_const_spec consts[] = {
    [WEIGHT] = {"weight", true},
    [BIAS] = {"bias", false},
};

enum { NR = Q8_SGEMM_NR, MR = Q8_SGEMM_MR };
/* Floats of packed B per chunk: 256 KB keeps a chunk in L2 next to the weights. */
enum { CHUNK_FLOATS = 65536 };

typedef struct convf_geom {
    int64_t c, h, w;      /* input channels, height, width */
    int64_t o, oh, ow, p; /* output channels, height, width, oh*ow */
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    int64_t groups, cg, og; /* channels per group: in, out */
    int64_t k;              /* cg*kh*kw */
} convf_geom;

typedef struct convf_prep {
    convf_geom g;
    bool direct;
    float *ap;        /* GEMM: groups x packed A of (og, k) */
    int64_t ap_group; /* floats per group */
    int64_t chunk;    /* output positions per im2col chunk, a multiple of NR */
    int64_t *col_lo, *col_hi; /* (kW): output columns whose tap j is inside the input */
} convf_prep;

static void geom_of(const q8_model *m, const q8_node *n, convf_geom *g)
{
    const q8_value *x = q8_in(m, n, 0);
    const q8_tensor *w = &n->cst[WEIGHT];
    g->c = x->shape[1];
    g->h = x->shape[2];
    g->w = x->shape[3];
    g->o = w->shape[0];
    g->cg = w->shape[1];
    g->kh = w->shape[2];
    g->kw = w->shape[3];
    g->sh = n->attr[STRIDE_H];
    g->sw = n->attr[STRIDE_W];
    g->ph = n->attr[PAD_H];
    g->pw = n->attr[PAD_W];
    g->dh = n->attr[DIL_H];
    g->dw = n->attr[DIL_W];
    g->groups = n->attr[GROUPS];
    g->og = g->o / g->groups;
    g->k = g->cg * g->kh * g->kw;
    g->oh = q8_window_out_size(g->h, g->kh, g->sh, g->ph, g->dh, false);
    g->ow = q8_window_out_size(g->w, g->kw, g->sw, g->pw, g->dw, false);
    g->p = g->oh * g->ow;
}

static q8_status check_geometry(const q8_model *m, const q8_node *n, convf_geom *g)
{
    const q8_tensor *w = &n->cst[WEIGHT];
    if (w->dtype != Q8_F32 || w->ndim != 4)
        return q8_node_error(n, Q8_ERR_SHAPE, "constant 'weight' is %s of rank %d, conv2d_f32 "
                             "needs f32 of shape [O, C/groups, kH, kW]",
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
    convf_geom g;
    q8_status st = q8_check_input_dtype(m, n, 0, Q8_F32);
    if (st == Q8_OK)
        st = q8_check_input_rank(m, n, 0, 4);
    if (st == Q8_OK)
        st = check_geometry(m, n, &g);
    if (st != Q8_OK)
        return st;
    int64_t shape[4] = {-1, g.o, g.oh, g.ow}, o_shape[1] = {g.o};
    st = q8_check_output(m, n, Q8_F32, 4, shape);
    if (st == Q8_OK)
        st = q8_check_const(n, BIAS, Q8_F32, 1, o_shape);
    if (st == Q8_OK)
        st = q8_check_finite(n, WEIGHT);
    if (st == Q8_OK)
        st = q8_check_finite(n, BIAS);
    return st;
}

static void release(q8_node *n)
{
    convf_prep *pp = n->prep;
    q8_free(pp->ap);
    free(pp->col_lo);
    free(pp->col_hi);
    free(pp);
    n->prep = NULL;
}

/* Output columns [lo, hi) whose input column ow*sw - pw + j*dw is inside [0, W). */
static void valid_cols(const convf_geom *g, int64_t j, int64_t *ow_lo, int64_t *ow_hi)
{
    int64_t off = j * g->dw - g->pw; /* iw = ow * sw + off */
    int64_t lo = off >= 0 ? 0 : (-off + g->sw - 1) / g->sw;
    int64_t hi = g->w - 1 - off < 0 ? 0 : (g->w - 1 - off) / g->sw + 1;
    *ow_lo = lo < g->ow ? lo : g->ow;
    *ow_hi = hi < g->ow ? hi : g->ow;
    if (*ow_hi < *ow_lo)
        *ow_hi = *ow_lo;
}

static q8_status prepare(q8_model *m, q8_node *n)
{
    convf_prep *pp = calloc(1, sizeof *pp);
    if (!pp)
        return q8_node_error(n, Q8_ERR_NOMEM, "out of memory");
    n->prep = pp;
    geom_of(m, n, &pp->g);
    const convf_geom *g = &pp->g;
    pp->col_lo = malloc((size_t)g->kw * sizeof *pp->col_lo);
    pp->col_hi = malloc((size_t)g->kw * sizeof *pp->col_hi);
    if (!pp->col_lo || !pp->col_hi)
        return q8_node_error(n, Q8_ERR_NOMEM, "out of memory");
    for (int64_t j = 0; j < g->kw; j++)
        valid_cols(g, j, &pp->col_lo[j], &pp->col_hi[j]);
    pp->direct = g->cg == 1 && g->groups > 1;
    if (pp->direct)
        return Q8_OK;
    pp->ap_group = q8_sgemm_panels(g->og, MR) * MR * g->k;
    pp->ap = q8_alloc((size_t)(g->groups * pp->ap_group) * sizeof(float));
    if (!pp->ap)
        return q8_node_error(n, Q8_ERR_NOMEM, "cannot allocate the packed weights (%" PRId64
                             " x %" PRId64 ")", g->o, g->k);
    const float *w = n->cst[WEIGHT].data; // (O, cg, kH, kW)
    for (int64_t grp = 0; grp < g->groups; grp++)
        q8_sgemm_pack_a(g->og, g->k, w + grp * g->og * g->k, g->k, pp->ap + grp * pp->ap_group);
    int64_t all = q8_sgemm_panels(g->p, NR) * NR, fit = CHUNK_FLOATS / g->k / NR * NR;
    pp->chunk = fit < NR ? NR : fit < all ? fit : all;
    n->scratch_bytes = (size_t)(pp->chunk * g->k) * sizeof(float);
    return Q8_OK;
}

/* The output positions [t0, t0 + len) of a B panel that lie on output row oh, from
 * column ow0. */
typedef struct segment {
    int64_t t0, len, oh, ow0;
} segment;

/* One tap row of a segment: d[ow - ow0] = x[ih][ow*sw + off] for the valid columns, 0
 * for the padding. */
static void fill_segment(const convf_geom *g, const float *xrow, int64_t off, int64_t lo,
                         int64_t hi, const segment *s, float *d)
{
    int64_t a = lo > s->ow0 ? lo : s->ow0, end = s->ow0 + s->len;
    int64_t b = hi < end ? hi : end;
    b = b > a ? b : a;
    for (int64_t ow = s->ow0; ow < a; ow++)
        d[ow - s->ow0] = 0.0f;
    if (g->sw == 1) {
        for (int64_t ow = a; ow < b; ow++)
            d[ow - s->ow0] = xrow[ow + off];
    } else {
        for (int64_t ow = a; ow < b; ow++)
            d[ow - s->ow0] = xrow[ow * g->sw + off];
    }
    for (int64_t ow = b; ow < end; ow++)
        d[ow - s->ow0] = 0.0f;
}

/* im2col into one packed B panel: bp[kk][t] = x[c][ih][iw] for kk = (c*kH + i)*kW + j and
 * output position p0 + t, zero for padding and for positions past the end. The panel is
 * cut into row segments once; each (c, i, j) then copies contiguous runs. */
static void pack_panel(const convf_prep *pp, const float *xg /* (cg, H, W) */, int64_t p0,
                       float *bp /* (k, NR) */)
{
    const convf_geom g = pp->g; /* a local copy: the float stores below may alias it */
    segment seg[NR];
    int n_seg = 0;
    int64_t t = 0;
    for (int64_t p = p0; t < NR && p < g.p; n_seg++) {
        int64_t ow0 = p % g.ow, len = g.ow - ow0;
        len = len < NR - t ? len : NR - t;
        seg[n_seg] = (segment){t, len, p / g.ow, ow0};
        t += len;
        p += len;
    }
    for (int64_t c = 0; c < g.cg; c++)
        for (int64_t i = 0; i < g.kh; i++)
            for (int64_t j = 0; j < g.kw; j++) {
                float *dst = bp + ((c * g.kh + i) * g.kw + j) * NR; // (NR)
                int64_t off = j * g.dw - g.pw;
                for (int s = 0; s < n_seg; s++) {
                    int64_t ih = seg[s].oh * g.sh - g.ph + i * g.dh;
                    if (ih < 0 || ih >= g.h) {
                        memset(dst + seg[s].t0, 0, (size_t)seg[s].len * sizeof(float));
                        continue;
                    }
                    fill_segment(&g, xg + (c * g.h + ih) * g.w, off, pp->col_lo[j],
                                 pp->col_hi[j], &seg[s], dst + seg[s].t0);
                }
                for (int64_t e = t; e < NR; e++)
                    dst[e] = 0.0f;
            }
}

/* One image: per group and chunk of positions, im2col then the GEMM into y. Inside the
 * per-image parallel loop the inner loops stay serial. */
static void conv_image(const q8_model *m, const q8_node *n, const float *xb, float *yb,
                       float *bp)
{
    const convf_prep *pp = n->prep;
    const convf_geom *g = &pp->g;
    const float *bias = n->cst[BIAS].data;
    int32_t act = (int32_t)n->attr[ACT];
    bool inner = !omp_in_parallel();
    for (int64_t grp = 0; grp < g->groups; grp++) {
        const float *xg = xb + grp * g->cg * g->h * g->w; // (cg, H, W)
        for (int64_t p0 = 0; p0 < g->p; p0 += pp->chunk) {
            int64_t cols = g->p - p0 < pp->chunk ? g->p - p0 : pp->chunk;
            int64_t panels = q8_sgemm_panels(cols, NR);
#pragma omp parallel for schedule(static) if (inner && panels * g->k * NR > (1 << 18))
            for (int64_t q = 0; q < panels; q++)
                pack_panel(pp, xg, p0 + q * NR, bp + q * NR * g->k);
            q8_sgemm(m->kernel, g->og, cols, g->k, pp->ap + grp * pp->ap_group, bp,
                     yb + grp * g->og * g->p + p0, g->p, bias ? bias + grp * g->og : NULL, NULL,
                     act);
        }
    }
}

static void run_gemm(q8_model *m, const q8_node *n, int64_t batch)
{
    const convf_geom *g = &((const convf_prep *)n->prep)->g;
    const float *x = q8_value_data(m, n->in[0]); // (N, C, H, W)
    float *y = q8_value_data(m, n->out[0]);      // (N, O, OH, OW)
    bool per_image = batch > 1 && m->scratch_threads > 1;
#pragma omp parallel for schedule(dynamic, 1) if (per_image)
    for (int64_t b = 0; b < batch; b++)
        conv_image(m, n, x + b * g->c * g->h * g->w, y + b * g->o * g->p,
                   (float *)q8_scratch(m, per_image ? omp_get_thread_num() : 0));
}

/* One output row of a depthwise channel: per tap, the valid columns accumulate into yr. */
static void direct_row(const convf_prep *pp, const float *xc, const float *wo, int64_t oh,
                       float *yr)
{
    const convf_geom g = pp->g;
    for (int64_t ow = 0; ow < g.ow; ow++)
        yr[ow] = 0.0f;
    for (int64_t i = 0; i < g.kh; i++) {
        int64_t ih = oh * g.sh - g.ph + i * g.dh;
        if (ih < 0 || ih >= g.h)
            continue;
        const float *xr = xc + ih * g.w; // (W)
        for (int64_t j = 0; j < g.kw; j++) {
            float wv = wo[i * g.kw + j];
            int64_t off = j * g.dw - g.pw, lo = pp->col_lo[j], hi = pp->col_hi[j];
            for (int64_t ow = lo; ow < hi; ow++)
                yr[ow] += wv * xr[ow * g.sw + off];
        }
    }
}

static void run_direct(q8_model *m, const q8_node *n, int64_t batch)
{
    const convf_prep *pp = n->prep;
    const convf_geom *g = &pp->g;
    const float *x = q8_value_data(m, n->in[0]); // (N, C, H, W)
    float *y = q8_value_data(m, n->out[0]);      // (N, O, OH, OW)
    const float *w = n->cst[WEIGHT].data;        // (O, 1, kH, kW)
    const float *bias = n->cst[BIAS].data;
    int32_t act = (int32_t)n->attr[ACT];
    int64_t planes = batch * g->o;
#pragma omp parallel for schedule(static) if (planes * g->p * g->k > 32768)
    for (int64_t t = 0; t < planes; t++) {
        int64_t b = t / g->o, oc = t % g->o;
        const float *xc = x + (b * g->c + oc / g->og) * g->h * g->w; // (H, W)
        float *yo = y + t * g->p;                                    // (OH, OW)
        float bv = bias ? bias[oc] : 0.0f;
        for (int64_t oh = 0; oh < g->oh; oh++)
            direct_row(pp, xc, w + oc * g->k, oh, yo + oh * g->ow);
        for (int64_t e = 0; e < g->p; e++)
            yo[e] = q8_act_f32(bias ? yo[e] + bv : yo[e], act);
    }
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const convf_prep *pp = n->prep;
    if (pp->direct)
        run_direct(m, n, batch);
    else
        run_gemm(m, n, batch);
    return Q8_OK;
}

const q8_op_def q8_op_conv2d_f32 = {
    .name = "conv2d_f32",
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

int32_t q8_builder_conv2d_f32(q8_builder *b, const char *name, int32_t x,
                              const q8_conv2d_desc *d, const float *weight, const float *bias,
                              q8_act act)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    if (!d || !weight) {
        q8_error(Q8_ERR_ARG, "conv2d_f32 '%s': descriptor or weights missing", name ? name : "");
        q8_builder_fail(b, Q8_ERR_ARG);
        return -1;
    }
    int64_t shape[4], wshape[4], bshape[1] = {d->out_channels};
    q8_conv_out_shape(&xv, d, shape);
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "conv2d_f32", name, &x, 1, Q8_F32, 4, shape, 0.0f, 0, &y);
    if (node < 0)
        return -1;
    if (xv.dtype != Q8_F32)
        return q8_builder_node_fail(b, node, Q8_ERR_FORMAT, "input (value %d) is %s, conv2d_f32 "
                                    "needs f32", (int)x, q8_dtype_name(xv.dtype));
    if (q8_builder_conv_attrs(b, node, &xv, d, wshape) != Q8_OK)
        return -1;
    q8_builder_act_attr(b, node, act);
    q8_builder_add_constant(b, node, "weight", Q8_F32, 4, wshape, weight);
    if (bias)
        q8_builder_add_constant(b, node, "bias", Q8_F32, 1, bshape, bias);
    return q8_builder_done(b, node, y);
}
