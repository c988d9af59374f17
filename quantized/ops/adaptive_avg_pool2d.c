/* adaptive_avg_pool2d.c — average over PyTorch's adaptive windows: output row o covers
 * input rows [floor(o*H/OH), ceil((o+1)*H/OH)) (likewise columns; computed in integers).
 * The output size is the output value's shape. Integer-only, as avg_pool2d:
 *
 *   y = clamp(zp_out + round_half_even(sum(x - zp_in) * M0 / (area * 2^shift)), clamp_min,
 *             clamp_max)
 *
 * with M0 * 2^-shift = s_in / s_out, area the window's element count and the clamp by
 * default the output dtype's range. PyTorch's NCHW
 * kernel computes RNE(sum(x) * f32(1/area)) in float (the zero points cancel when the
 * qparams are equal); exact halves can round the other way there. */
#include "quantized/builder.h"

#include <inttypes.h>

enum { MULT, SHIFT, CLAMP_MIN, CLAMP_MAX };
static const q8_attr_spec attrs[] = {
    [MULT] = {"multiplier", true, 0, 0, INT32_MAX},
    [SHIFT] = {"shift", true, 0, 0, 63},
    [CLAMP_MIN] = {"clamp_min", false, Q8_DEF_OUT_QMIN, -128, 255},
    [CLAMP_MAX] = {"clamp_max", false, Q8_DEF_OUT_QMAX, -128, 255},
};

static q8_status check(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_input_quantized(m, n, 0);
    if (st == Q8_OK)
        st = q8_check_input_rank(m, n, 0, 4);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    if ((y->dtype != Q8_U8 && y->dtype != Q8_I8) || y->ndim != 4)
        return q8_node_error(n, Q8_ERR_FORMAT,
                             "output (value %d) is %s of rank %d, adaptive_avg_pool2d gives u8 or "
                             "i8 of rank 4 (its shape sets the output size)",
                             (int)n->out[0], q8_dtype_name(y->dtype), (int)y->ndim);
    int64_t h = x->shape[2], w = x->shape[3], oh_n = y->shape[2], ow_n = y->shape[3];
    int64_t shape[4] = {-1, x->shape[1], oh_n, ow_n};
    st = q8_check_output(m, n, y->dtype, 4, shape);
    /* A window spans at most ceil(H/OH) + 1 rows and ceil(W/OW) + 1 columns. */
    if (st == Q8_OK && ((h + oh_n - 1) / oh_n + 1) * ((w + ow_n - 1) / ow_n + 1) > Q8_MAX_WINDOW)
        return q8_node_error(n, Q8_ERR_SHAPE, "windows of more than %" PRId64 " elements",
                             Q8_MAX_WINDOW);
    if (st == Q8_OK)
        st = q8_check_multiplier(n, "multiplier", 0, n->attr[MULT], n->attr[SHIFT],
                                 (double)x->scale / (double)y->scale);
    if (st == Q8_OK)
        st = q8_check_out_clamp(m, n, CLAMP_MIN, CLAMP_MAX);
    return st;
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    const uint8_t *xd = q8_value_data(m, n->in[0]); // (N, C, H, W)
    uint8_t *yd = q8_value_data(m, n->out[0]);      // (N, C, OH, OW)
    int32_t mult = (int32_t)n->attr[MULT], shift = (int32_t)n->attr[SHIFT];
    int64_t h = x->shape[2], w = x->shape[3], oh_n = y->shape[2], ow_n = y->shape[3];
    int64_t planes = batch * x->shape[1];
    int32_t zi = x->zero_point, zo = y->zero_point, qmin = (int32_t)n->attr[CLAMP_MIN],
            qmax = (int32_t)n->attr[CLAMP_MAX];
#pragma omp parallel for schedule(static) if (planes * h * w > 32768)
    for (int64_t t = 0; t < planes; t++) {
        const uint8_t *xp = xd + t * h * w; // (H, W)
        uint8_t *yp = yd + t * oh_n * ow_n; // (OH, OW)
        for (int64_t oh = 0; oh < oh_n; oh++) {
            int64_t hs = q8_adaptive_start(oh, h, oh_n), he = q8_adaptive_end(oh, h, oh_n);
            for (int64_t ow = 0; ow < ow_n; ow++) {
                int64_t ws = q8_adaptive_start(ow, w, ow_n), we = q8_adaptive_end(ow, w, ow_n);
                int64_t acc = 0;
                for (int64_t ih = hs; ih < he; ih++)
                    for (int64_t iw = ws; iw < we; iw++)
                        acc += q8_load(xp, ih * w + iw, x->dtype) - zi;
                int64_t v = zo + q8_rq_div(acc, mult, shift, (he - hs) * (we - ws));
                yp[oh * ow_n + ow] = (uint8_t)q8_clamp64(v, qmin, qmax);
            }
        }
    }
    return Q8_OK;
}

const q8_op_def q8_op_adaptive_avg_pool2d = {
    .name = "adaptive_avg_pool2d",
    .min_inputs = 1,
    .max_inputs = 1,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = check,
    .run = run,
};

int32_t q8_builder_adaptive_avg_pool2d(q8_builder *b, const char *name, int32_t x, int64_t out_h,
                                       int64_t out_w, const q8_qparams *out)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    if (xv.ndim != 4 || out_h < 1 || out_w < 1 || out_h > Q8_MAX_DIM || out_w > Q8_MAX_DIM) {
        q8_error(Q8_ERR_ARG, "adaptive_avg_pool2d '%s': needs a rank-4 input and an output size "
                 "of at least 1x1", name ? name : "");
        q8_builder_fail(b, Q8_ERR_ARG);
        return -1;
    }
    q8_qparams qp = out ? *out : (q8_qparams){xv.dtype, xv.scale, xv.zero_point, 0, 0};
    int64_t shape[4] = {-1, xv.shape[1], out_h, out_w};
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "adaptive_avg_pool2d", name, &x, 1, qp.dtype, 4, shape,
                                    qp.scale, qp.zero_point, &y);
    if (node < 0)
        return -1;
    if (xv.dtype == Q8_U8 || xv.dtype == Q8_I8)
        q8_builder_pool_ratio(b, node, xv.scale, qp.scale);
    q8_builder_clamp_attrs(b, node, Q8_ACT_NONE, qp);
    return q8_builder_done(b, node, y);
}
