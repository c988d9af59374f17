/* max_pool2d.c — the largest integer of each window (PyTorch quantized max_pool2d: the
 * max of the raw values over the window's positions inside the input; padding never
 * wins). Output qparams are the input's. A window with no position inside the input
 * (possible with dilation) gives qmin, as PyTorch's lowest() start value. */
#include "quantized/builder.h"

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
                                 a[CEIL_MODE] != 0, false, out_hw);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0);
    int64_t shape[4] = {-1, x->shape[1], out_hw[0], out_hw[1]};
    st = q8_check_output(m, n, x->dtype, 4, shape);
    if (st == Q8_OK)
        st = q8_check_same_qparams(m, n, 0);
    return st;
}

/* One output plane. The attributes are copied into locals first: the byte stores may
 * alias anything, and would otherwise force a reload of every attribute per element. */
static void pool_plane(const uint8_t *xp, uint8_t *yp, int64_t h, int64_t w, int64_t oh_n,
                       int64_t ow_n, const int64_t *a, uint8_t flip)
{
    const int64_t kh = a[KERNEL_H], kw = a[KERNEL_W], sh = a[STRIDE_H], sw = a[STRIDE_W];
    const int64_t ph = a[PAD_H], pw = a[PAD_W], dh = a[DIL_H], dw = a[DIL_W];
    for (int64_t oh = 0; oh < oh_n; oh++) {
        for (int64_t ow = 0; ow < ow_n; ow++) {
            uint8_t best = 0;
            for (int64_t i = 0; i < kh; i++) {
                int64_t ih = oh * sh - ph + i * dh;
                if (ih < 0 || ih >= h)
                    continue;
                const uint8_t *xr = xp + ih * w;
                for (int64_t j = 0; j < kw; j++) {
                    int64_t iw = ow * sw - pw + j * dw;
                    uint8_t v = iw >= 0 && iw < w ? (uint8_t)(xr[iw] ^ flip) : 0;
                    best = v > best ? v : best;
                }
            }
            yp[oh * ow_n + ow] = (uint8_t)(best ^ flip);
        }
    }
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    const uint8_t *xd = q8_value_data(m, n->in[0]); // (N, C, H, W)
    uint8_t *yd = q8_value_data(m, n->out[0]);      // (N, C, OH, OW)
    int64_t h = x->shape[2], w = x->shape[3], oh_n = y->shape[2], ow_n = y->shape[3];
    int64_t planes = batch * x->shape[1];
    /* Compare in the uint8 domain (int8 + 128 keeps the order), flip back on store; 0 in
     * that domain is qmin, the value of a window without input positions. */
    uint8_t flip = q8_xor(x->dtype);
#pragma omp parallel for schedule(static) if (planes * oh_n * ow_n > 16384)
    for (int64_t t = 0; t < planes; t++)
        pool_plane(xd + t * h * w, yd + t * oh_n * ow_n, h, w, oh_n, ow_n, n->attr, flip);
    return Q8_OK;
}

const q8_op_def q8_op_max_pool2d = {
    .name = "max_pool2d",
    .min_inputs = 1,
    .max_inputs = 1,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = check,
    .run = run,
};

int32_t q8_builder_max_pool2d(q8_builder *b, const char *name, int32_t x, const q8_pool2d_desc *d)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    if (!d) {
        q8_error(Q8_ERR_ARG, "max_pool2d '%s': descriptor missing", name ? name : "");
        q8_builder_fail(b, Q8_ERR_ARG);
        return -1;
    }
    int64_t o[2];
    q8_pool_out_hw(&xv, d, true, o);
    int64_t shape[4] = {-1, xv.ndim == 4 ? xv.shape[1] : 1, o[0], o[1]};
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "max_pool2d", name, &x, 1, xv.dtype, 4, shape, xv.scale,
                                    xv.zero_point, &y);
    q8_builder_max_pool_attrs(b, node, d);
    return q8_builder_done(b, node, y);
}
