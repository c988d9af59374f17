/* avg_pool2d_f32.c — float average pooling, PyTorch's CPU avg_pool2d (AvgPoolKernel.cpp,
 * NCHW): the float32 sum over the window's positions inside the input, row by row, then
 * one division by the divisor:
 *
 *   divide = divisor_override, or (count_include_pad ? the window clipped to the padded
 *            input : the number of positions inside the input)
 *   y      = sum / f32(divide)
 *
 * Attributes as avg_pool2d, without multiplier/shift/clamp. */
#include "quantized/builder.h"

enum { KERNEL_H, KERNEL_W, STRIDE_H, STRIDE_W, PAD_H, PAD_W, CEIL_MODE, COUNT_INCLUDE_PAD,
       DIVISOR_OVERRIDE };
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
};

static q8_status check(const q8_model *m, const q8_node *n)
{
    const int64_t *a = n->attr, dil[2] = {1, 1};
    int64_t out_hw[2];
    q8_status st = q8_check_pool(m, n, &a[KERNEL_H], &a[STRIDE_H], &a[PAD_H], dil,
                                 a[CEIL_MODE] != 0, true, out_hw);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0);
    int64_t shape[4] = {-1, x->shape[1], out_hw[0], out_hw[1]};
    return q8_check_output(m, n, Q8_F32, 4, shape);
}

typedef struct avgf_args {
    int64_t h, w, oh_n, ow_n, kh, kw, sh, sw, ph, pw, include_pad, divisor;
} avgf_args;

static void avg_plane(const float *xp, float *yp, const avgf_args *p)
{
    const avgf_args a = *p; /* locals: the float stores may alias the arguments */
    for (int64_t oh = 0; oh < a.oh_n; oh++) {
        int64_t h0 = oh * a.sh - a.ph;
        int64_t h1 = h0 + a.kh < a.h + a.ph ? h0 + a.kh : a.h + a.ph;
        int64_t hs = h0 > 0 ? h0 : 0, he = h1 < a.h ? h1 : a.h;
        for (int64_t ow = 0; ow < a.ow_n; ow++) {
            int64_t w0 = ow * a.sw - a.pw;
            int64_t w1 = w0 + a.kw < a.w + a.pw ? w0 + a.kw : a.w + a.pw;
            int64_t ws = w0 > 0 ? w0 : 0, we = w1 < a.w ? w1 : a.w;
            float sum = 0.0f;
            for (int64_t ih = hs; ih < he; ih++)
                for (int64_t iw = ws; iw < we; iw++)
                    sum += xp[ih * a.w + iw];
            int64_t divide = a.divisor       ? a.divisor
                             : a.include_pad ? (h1 - h0) * (w1 - w0)
                                             : (he - hs) * (we - ws);
            yp[oh * a.ow_n + ow] = sum / (float)(divide > 0 ? divide : 1);
        }
    }
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    const float *xd = q8_value_data(m, n->in[0]); // (N, C, H, W)
    float *yd = q8_value_data(m, n->out[0]);      // (N, C, OH, OW)
    const int64_t *at = n->attr;
    avgf_args a = {
        .h = x->shape[2], .w = x->shape[3], .oh_n = y->shape[2], .ow_n = y->shape[3],
        .kh = at[KERNEL_H], .kw = at[KERNEL_W], .sh = at[STRIDE_H], .sw = at[STRIDE_W],
        .ph = at[PAD_H], .pw = at[PAD_W], .include_pad = at[COUNT_INCLUDE_PAD],
        .divisor = at[DIVISOR_OVERRIDE],
    };
    int64_t planes = batch * x->shape[1];
#pragma omp parallel for schedule(static) if (planes * a.oh_n * a.ow_n > 16384)
    for (int64_t t = 0; t < planes; t++)
        avg_plane(xd + t * a.h * a.w, yd + t * a.oh_n * a.ow_n, &a);
    return Q8_OK;
}

const q8_op_def q8_op_avg_pool2d_f32 = {
    .name = "avg_pool2d_f32",
    .min_inputs = 1,
    .max_inputs = 1,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = check,
    .run = run,
};

int32_t q8_builder_avg_pool2d_f32(q8_builder *b, const char *name, int32_t x,
                                  const q8_pool2d_desc *d)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    if (!d || d->kernel[0] < 1 || d->kernel[1] < 1 || d->divisor_override < 0 ||
        d->kernel[0] * d->kernel[1] > Q8_MAX_WINDOW) {
        q8_error(Q8_ERR_ARG, "avg_pool2d_f32 '%s': descriptor missing or kernel out of range",
                 name ? name : "");
        q8_builder_fail(b, Q8_ERR_ARG);
        return -1;
    }
    int64_t o[2];
    q8_pool_out_hw(&xv, d, false, o);
    int64_t shape[4] = {-1, xv.ndim == 4 ? xv.shape[1] : 1, o[0], o[1]};
    int32_t y = -1;
    int32_t node =
        q8_builder_node1(b, "avg_pool2d_f32", name, &x, 1, Q8_F32, 4, shape, 0.0f, 0, &y);
    q8_builder_avg_pool_attrs(b, node, d);
    return q8_builder_done(b, node, y);
}
