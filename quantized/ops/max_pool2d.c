/* max_pool2d.c — the largest integer of each window (PyTorch quantized max_pool2d: the
 * max of the raw values over the window's positions inside the input; padding never
 * wins). Output qparams are the input's. A window with no position inside the input
 * (possible with dilation) gives qmin, as PyTorch's lowest() start value. */
#include "quantized/builder.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

/* The common 2x2 window at stride 2 without padding, every window inside the plane. */
static bool is_2x2(const int64_t *a, int64_t h, int64_t w, int64_t oh_n, int64_t ow_n)
{
    return a[KERNEL_H] == 2 && a[KERNEL_W] == 2 && a[STRIDE_H] == 2 && a[STRIDE_W] == 2 &&
           a[PAD_H] == 0 && a[PAD_W] == 0 && a[DIL_H] == 1 && a[DIL_W] == 1 && 2 * oh_n <= h &&
           2 * ow_n <= w;
}

bool q8_max_pool_is_2x2s2(const q8_node *n)
{
    const int64_t *a = n->attr;
    return n->op == Q8_OP_MAX_POOL2D && a[KERNEL_H] == 2 && a[KERNEL_W] == 2 && a[STRIDE_H] == 2 &&
           a[STRIDE_W] == 2 && a[PAD_H] == 0 && a[PAD_W] == 0 && a[DIL_H] == 1 && a[DIL_W] == 1 &&
           a[CEIL_MODE] == 0;
}

/* Outputs [ow, ow_n) of one row of the 2x2 pool (uint8 domain inside). */
static void pool_row_2x2_scalar(const uint8_t *r0, const uint8_t *r1, uint8_t *yr, int64_t ow,
                                int64_t ow_n, uint8_t flip)
{
    for (; ow < ow_n; ow++) {
        uint8_t a = (uint8_t)(r0[2 * ow] ^ flip), b = (uint8_t)(r0[2 * ow + 1] ^ flip);
        uint8_t c = (uint8_t)(r1[2 * ow] ^ flip), d = (uint8_t)(r1[2 * ow + 1] ^ flip);
        uint8_t ab = a > b ? a : b, cd = c > d ? c : d;
        yr[ow] = (uint8_t)((ab > cd ? ab : cd) ^ flip);
    }
}

#if defined(__SSE2__)
/* 8 outputs from 16 bytes of each row: the max of the rows, then of byte pairs (the high
 * byte of each 16-bit lane shifted down onto the low one), packed to bytes. `n` (<= 8)
 * outputs are stored. */
static void pool_8_2x2_sse2(const uint8_t *r0, const uint8_t *r1, uint8_t *y, int64_t n,
                            __m128i flip)
{
    __m128i v = _mm_max_epu8(_mm_xor_si128(_mm_loadu_si128((const __m128i *)r0), flip),
                             _mm_xor_si128(_mm_loadu_si128((const __m128i *)r1), flip));
    v = _mm_max_epu8(v, _mm_srli_epi16(v, 8));
    v = _mm_packus_epi16(_mm_and_si128(v, _mm_set1_epi16(0xff)), v);
    v = _mm_xor_si128(v, flip);
    uint8_t out[16];
    _mm_storeu_si128((__m128i *)out, v);
    memcpy(y, out, (size_t)n);
}
#endif

/* One plane; `end` bounds the input the 16-byte loads may touch (the input value's end). */
static void pool_plane_2x2(const uint8_t *xp, const uint8_t *end, uint8_t *yp, int64_t w,
                           int64_t oh_n, int64_t ow_n, uint8_t flip)
{
    for (int64_t oh = 0; oh < oh_n; oh++) {
        const uint8_t *r0 = xp + 2 * oh * w, *r1 = r0 + w; // (W) each
        uint8_t *yr = yp + oh * ow_n;                      // (OW)
        int64_t ow = 0;
#if defined(__SSE2__)
        for (; ow < ow_n && r1 + 2 * ow + 16 <= end; ow += 8)
            pool_8_2x2_sse2(r0 + 2 * ow, r1 + 2 * ow, yr + ow, ow_n - ow < 8 ? ow_n - ow : 8,
                            _mm_set1_epi8((char)flip));
#endif
        pool_row_2x2_scalar(r0, r1, yr, ow, ow_n, flip);
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
    if (is_2x2(n->attr, h, w, oh_n, ow_n)) {
#pragma omp parallel for schedule(static) if (planes * oh_n * ow_n > 16384)
        for (int64_t t = 0; t < planes; t++)
            pool_plane_2x2(xd + t * h * w, xd + planes * h * w, yd + t * oh_n * ow_n, w, oh_n,
                           ow_n, flip);
        return Q8_OK;
    }
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
