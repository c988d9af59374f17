/* avg_pool2d.c — quantized average pooling, integer-only:
 *
 *   acc    = sum over the window's positions inside the input of (x - zp_in)
 *   divide = divisor_override, or (count_include_pad ? the window clipped to the padded
 *            input : the number of positions inside the input)   (PyTorch avg_pool2d)
 *   y      = clamp(zp_out + round_half_even(acc * M0 / (divide * 2^shift)), clamp_min,
 *                  clamp_max)
 *
 * with M0 * 2^-shift = s_in / s_out (multiplier/shift attributes; the division by the
 * divisor is exact, see q8_rq_div); the clamp defaults to the output dtype's range.
 * Padding counts as real 0 (zp_in). With the input's qparams kept (PyTorch's default)
 * this is exactly round_half_even(mean). PyTorch's NCHW
 * kernel rounds f32(acc) * f32(1/divide) in float instead, so an exact half (acc = 9,
 * divide = 6) can round the other way there. */
#include "quantized/builder.h"


enum { KERNEL_H, KERNEL_W, STRIDE_H, STRIDE_W, PAD_H, PAD_W, CEIL_MODE, COUNT_INCLUDE_PAD,
       DIVISOR_OVERRIDE, MULT, SHIFT, CLAMP_MIN, CLAMP_MAX };
static const q8_attr_spec attrs[] = {
    [KERNEL_H] = {"kernel_h", true, 0, 1, Q8_MAX_DIM},
    [KERNEL_W] = {"kernel_w", true, 0, 1, Q8_MAX_DIM},
    [STRIDE_H] = {"stride_h", true, 0, 1, Q8_MAX_DIM},
    [STRIDE_W] = {"stride_w", true, 0, 1, Q8_MAX_DIM},
    [PAD_H] = {"pad_h", false, 0, 0, Q8_MAX_DIM},
    [PAD_W] = {"pad_w", false, 0, 0, Q8_MAX_DIM},
    [CEIL_MODE] = {"ceil_mode", false, 0, 0, 1},
    [COUNT_INCLUDE_PAD] = {"count_include_pad", false, 1, 0, 1},
    [DIVISOR_OVERRIDE] = {"divisor_override", false, 0, 0, Q8_MAX_WINDOW},
    [MULT] = {"multiplier", true, 0, 0, INT32_MAX},
    [SHIFT] = {"shift", true, 0, 0, 63},
    [CLAMP_MIN] = {"clamp_min", false, Q8_DEF_OUT_QMIN, -128, 255},
    [CLAMP_MAX] = {"clamp_max", false, Q8_DEF_OUT_QMAX, -128, 255},
};

static q8_status check(const q8_model *m, const q8_node *n)
{
    const int64_t *a = n->attr, dil[2] = {1, 1};
    int64_t out_hw[2];
    q8_status st = q8_check_pool(m, n, &a[KERNEL_H], &a[STRIDE_H], &a[PAD_H], dil,
                                 a[CEIL_MODE] != 0, false, out_hw);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    if (y->dtype != Q8_U8 && y->dtype != Q8_I8)
        return q8_node_error(n, Q8_ERR_FORMAT, "output (value %d) is %s, avg_pool2d gives u8 or i8",
                             (int)n->out[0], q8_dtype_name(y->dtype));
    int64_t shape[4] = {-1, x->shape[1], out_hw[0], out_hw[1]};
    st = q8_check_output(m, n, y->dtype, 4, shape);
    if (st == Q8_OK)
        st = q8_check_multiplier(n, "multiplier", 0, a[MULT], a[SHIFT],
                                 (double)x->scale / (double)y->scale);
    if (st == Q8_OK)
        st = q8_check_out_clamp(m, n, CLAMP_MIN, CLAMP_MAX);
    return st;
}

typedef struct avg_args {
    int64_t h, w, oh_n, ow_n, kh, kw, sh, sw, ph, pw, include_pad, divisor;
    int32_t mult, shift, zi, zo, qmin, qmax;
    q8_dtype dt;
} avg_args;

/* One output plane, with every parameter in a local struct (see max_pool2d.c). */
static void avg_plane(const uint8_t *xp, uint8_t *yp, const avg_args *p)
{
    const avg_args a = *p;
    for (int64_t oh = 0; oh < a.oh_n; oh++) {
        int64_t h0 = oh * a.sh - a.ph;
        int64_t h1 = h0 + a.kh < a.h + a.ph ? h0 + a.kh : a.h + a.ph;
        int64_t hs = h0 > 0 ? h0 : 0, he = h1 < a.h ? h1 : a.h;
        for (int64_t ow = 0; ow < a.ow_n; ow++) {
            int64_t w0 = ow * a.sw - a.pw;
            int64_t w1 = w0 + a.kw < a.w + a.pw ? w0 + a.kw : a.w + a.pw;
            int64_t ws = w0 > 0 ? w0 : 0, we = w1 < a.w ? w1 : a.w;
            int64_t acc = 0;
            for (int64_t ih = hs; ih < he; ih++)
                for (int64_t iw = ws; iw < we; iw++)
                    acc += q8_load(xp, ih * a.w + iw, a.dt) - a.zi;
            int64_t divide = a.divisor       ? a.divisor
                             : a.include_pad ? (h1 - h0) * (w1 - w0)
                                             : (he - hs) * (we - ws);
            int64_t v = a.zo + q8_rq_div(acc, a.mult, a.shift, divide > 0 ? divide : 1);
            yp[oh * a.ow_n + ow] = (uint8_t)q8_clamp64(v, a.qmin, a.qmax);
        }
    }
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    const uint8_t *xd = q8_value_data(m, n->in[0]); // (N, C, H, W)
    uint8_t *yd = q8_value_data(m, n->out[0]);      // (N, C, OH, OW)
    const int64_t *a = n->attr;
    avg_args args = {
        .h = x->shape[2], .w = x->shape[3], .oh_n = y->shape[2], .ow_n = y->shape[3],
        .kh = a[KERNEL_H], .kw = a[KERNEL_W], .sh = a[STRIDE_H], .sw = a[STRIDE_W],
        .ph = a[PAD_H], .pw = a[PAD_W], .include_pad = a[COUNT_INCLUDE_PAD],
        .divisor = a[DIVISOR_OVERRIDE], .mult = (int32_t)a[MULT], .shift = (int32_t)a[SHIFT],
        .zi = x->zero_point, .zo = y->zero_point, .qmin = (int32_t)a[CLAMP_MIN],
        .qmax = (int32_t)a[CLAMP_MAX], .dt = x->dtype,
    };
    int64_t planes = batch * x->shape[1], in_plane = args.h * args.w;
    int64_t out_plane = args.oh_n * args.ow_n;
#pragma omp parallel for schedule(static) if (planes * out_plane > 16384)
    for (int64_t t = 0; t < planes; t++)
        avg_plane(xd + t * in_plane, yd + t * out_plane, &args);
    return Q8_OK;
}

const q8_op_def q8_op_avg_pool2d = {
    .name = "avg_pool2d",
    .min_inputs = 1,
    .max_inputs = 1,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = check,
    .run = run,
};

/* multiplier/shift attributes of the ratio s_in / s_out of an average pool. */
q8_status q8_builder_pool_ratio(q8_builder *b, int32_t node, float s_in, float s_out)
{
    int32_t m0 = 0, sh = 0;
    if (q8_multiplier_from_real((double)s_in / (double)s_out, &m0, &sh) != Q8_OK) {
        q8_builder_node_fail_last(b, node);
        return q8_builder_status(b);
    }
    q8_builder_set_attr(b, node, "multiplier", m0);
    return q8_builder_set_attr(b, node, "shift", sh);
}

int32_t q8_builder_avg_pool2d(q8_builder *b, const char *name, int32_t x, const q8_pool2d_desc *d,
                              const q8_qparams *out)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    if (!d || d->kernel[0] < 1 || d->kernel[1] < 1 || d->divisor_override < 0 ||
        d->kernel[0] * d->kernel[1] > Q8_MAX_WINDOW) {
        q8_error(Q8_ERR_ARG, "avg_pool2d '%s': descriptor missing or kernel out of range",
                 name ? name : "");
        q8_builder_fail(b, Q8_ERR_ARG);
        return -1;
    }
    q8_qparams qp = out ? *out : (q8_qparams){xv.dtype, xv.scale, xv.zero_point, 0, 0};
    int64_t o[2];
    q8_pool_out_hw(&xv, d, false, o);
    int64_t shape[4] = {-1, xv.ndim == 4 ? xv.shape[1] : 1, o[0], o[1]};
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "avg_pool2d", name, &x, 1, qp.dtype, 4, shape, qp.scale,
                                    qp.zero_point, &y);
    if (node < 0)
        return -1;
    q8_builder_avg_pool_attrs(b, node, d);
    if (xv.dtype == Q8_U8 || xv.dtype == Q8_I8)
        q8_builder_pool_ratio(b, node, xv.scale, qp.scale);
    q8_builder_clamp_attrs(b, node, Q8_ACT_NONE, qp);
    return q8_builder_done(b, node, y);
}

void q8_pool_out_hw(const q8_value *xv, const q8_pool2d_desc *d, bool dilated, int64_t out_hw[2])
{
    for (int a = 0; a < 2; a++) {
        int64_t k = d->kernel[a] > 0 ? d->kernel[a] : 1;
        int64_t s = d->stride[a] > 0 ? d->stride[a] : k;
        int64_t dil = dilated && d->dilation[a] > 0 ? d->dilation[a] : 1;
        int64_t in = xv->ndim == 4 ? xv->shape[2 + a] : 1;
        int64_t o = q8_window_out_size(in, k, s, d->padding[a], dil, d->ceil_mode);
        out_hw[a] = o > 0 ? o : 1;
    }
}

/* The attributes every pool has. */
static void pool_common_attrs(q8_builder *b, int32_t node, const q8_pool2d_desc *d)
{
    q8_builder_set_attr(b, node, "kernel_h", d->kernel[0]);
    q8_builder_set_attr(b, node, "kernel_w", d->kernel[1]);
    q8_builder_set_attr(b, node, "stride_h", d->stride[0] > 0 ? d->stride[0] : d->kernel[0]);
    q8_builder_set_attr(b, node, "stride_w", d->stride[1] > 0 ? d->stride[1] : d->kernel[1]);
    q8_builder_set_attr(b, node, "pad_h", d->padding[0]);
    q8_builder_set_attr(b, node, "pad_w", d->padding[1]);
    q8_builder_set_attr(b, node, "ceil_mode", d->ceil_mode);
}

void q8_builder_max_pool_attrs(q8_builder *b, int32_t node, const q8_pool2d_desc *d)
{
    pool_common_attrs(b, node, d);
    q8_builder_set_attr(b, node, "dilation_h", d->dilation[0] > 0 ? d->dilation[0] : 1);
    q8_builder_set_attr(b, node, "dilation_w", d->dilation[1] > 0 ? d->dilation[1] : 1);
}

void q8_builder_avg_pool_attrs(q8_builder *b, int32_t node, const q8_pool2d_desc *d)
{
    pool_common_attrs(b, node, d);
    q8_builder_set_attr(b, node, "count_include_pad", d->count_include_pad);
    q8_builder_set_attr(b, node, "divisor_override", d->divisor_override);
}
