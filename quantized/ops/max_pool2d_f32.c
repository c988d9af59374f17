/* max_pool2d_f32.c — float max pooling, PyTorch's CPU max_pool2d (MaxPoolKernel.cpp):
 * the largest element over the window's positions inside the input, where a NaN wins
 * (`val > max || isnan(val)`), and -inf for a window with no position inside the input
 * (possible with dilation). Attributes as max_pool2d. */
#include "quantized/builder.h"

#include <math.h>

enum { KERNEL_H, KERNEL_W, STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W, CEIL_MODE };
static const q8_attr_spec attrs[] = {
    [KERNEL_H] = {"kernel_h", true, 0, 1, Q8_MAX_DIM},
    [KERNEL_W] = {"kernel_w", true, 0, 1, Q8_MAX_DIM},
    [STRIDE_H] = {"stride_h", true, 0, 1, Q8_MAX_DIM},
    [STRIDE_W] = {"stride_w", true, 0, 1, Q8_MAX_DIM},
    [PAD_H] = {"pad_h", false, 0, 0, Q8_MAX_DIM},
    [PAD_W] = {"pad_w", false, 0, 0, Q8_MAX_DIM},
    [DIL_H] = {"dilation_h", false, 1, 1, Q8_MAX_DIM},
    [DIL_W] = {"dilation_w", false, 1, 1, Q8_MAX_DIM},
    [CEIL_MODE] = {"ceil_mode", false, 0, 0, 1},
};

static q8_status check(const q8_model *m, const q8_node *n)
{
    const int64_t *a = n->attr;
    int64_t out_hw[2];
    q8_status st = q8_check_pool(m, n, &a[KERNEL_H], &a[STRIDE_H], &a[PAD_H], &a[DIL_H],
                                 a[CEIL_MODE] != 0, true, out_hw);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0);
    int64_t shape[4] = {-1, x->shape[1], out_hw[0], out_hw[1]};
    return q8_check_output(m, n, Q8_F32, 4, shape);
}

typedef struct maxf_args {
    int64_t h, w, oh_n, ow_n, kh, kw, sh, sw, ph, pw, dh, dw;
} maxf_args;

static void pool_plane(const float *xp, float *yp, const maxf_args *p)
{
    const maxf_args a = *p; /* locals: the float stores may alias the arguments */
    for (int64_t oh = 0; oh < a.oh_n; oh++)
        for (int64_t ow = 0; ow < a.ow_n; ow++) {
            float best = -INFINITY;
            for (int64_t i = 0; i < a.kh; i++) {
                int64_t ih = oh * a.sh - a.ph + i * a.dh;
                if (ih < 0 || ih >= a.h)
                    continue;
                for (int64_t j = 0; j < a.kw; j++) {
                    int64_t iw = ow * a.sw - a.pw + j * a.dw;
                    if (iw < 0 || iw >= a.w)
                        continue;
                    float v = xp[ih * a.w + iw];
                    if (v > best || isnan(v))
                        best = v;
                }
            }
            yp[oh * a.ow_n + ow] = best;
        }
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    const float *xd = q8_value_data(m, n->in[0]); // (N, C, H, W)
    float *yd = q8_value_data(m, n->out[0]);      // (N, C, OH, OW)
    const int64_t *at = n->attr;
    maxf_args a = {x->shape[2], x->shape[3], y->shape[2], y->shape[3], at[KERNEL_H],
                   at[KERNEL_W], at[STRIDE_H], at[STRIDE_W], at[PAD_H], at[PAD_W], at[DIL_H],
                   at[DIL_W]};
    int64_t planes = batch * x->shape[1];
#pragma omp parallel for schedule(static) if (planes * a.oh_n * a.ow_n > 16384)
    for (int64_t t = 0; t < planes; t++)
        pool_plane(xd + t * a.h * a.w, yd + t * a.oh_n * a.ow_n, &a);
    return Q8_OK;
}

const q8_op_def q8_op_max_pool2d_f32 = {
    .name = "max_pool2d_f32",
    .min_inputs = 1,
    .max_inputs = 1,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = check,
    .run = run,
};

int32_t q8_builder_max_pool2d_f32(q8_builder *b, const char *name, int32_t x,
                                  const q8_pool2d_desc *d)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    if (!d) {
        q8_error(Q8_ERR_ARG, "max_pool2d_f32 '%s': descriptor missing", name ? name : "");
        q8_builder_fail(b, Q8_ERR_ARG);
        return -1;
    }
    int64_t o[2];
    q8_pool_out_hw(&xv, d, true, o);
    int64_t shape[4] = {-1, xv.ndim == 4 ? xv.shape[1] : 1, o[0], o[1]};
    int32_t y = -1;
    int32_t node =
        q8_builder_node1(b, "max_pool2d_f32", name, &x, 1, Q8_F32, 4, shape, 0.0f, 0, &y);
    q8_builder_max_pool_attrs(b, node, d);
    return q8_builder_done(b, node, y);
}
