/* cat.c — concatenation along dim 1 of quantized values with equal other dimensions.
 * Each input is requantized to the output's qparams (PyTorch quantized::cat dequantizes
 * and quantizes in float; here integer-only):
 *
 *   y = clamp(zp_out + rq(x_i - zp_i, multiplier[i], shift[i]), clamp_min, clamp_max)
 *
 * with M_i = s_i / s_out; the clamp defaults to the output dtype's range. An input with
 * the output's dtype and qparams is copied (clamped, if the range is narrower). */
#include "quantized/builder.h"

#include <inttypes.h>
#include <stdlib.h>

enum { DIM, CLAMP_MIN, CLAMP_MAX };
static const q8_attr_spec attrs[] = {
    [DIM] = {"dim", false, 1, 1, 1},
    [CLAMP_MIN] = {"clamp_min", false, Q8_DEF_OUT_QMIN, -128, 255},
    [CLAMP_MAX] = {"clamp_max", false, Q8_DEF_OUT_QMAX, -128, 255},
};
enum { MULTIPLIER, SHIFT };
static const q8_const_spec consts[] = {
    [MULTIPLIER] = {"multiplier", true},
    [SHIFT] = {"shift", true},
};

static q8_status check_inputs(const q8_model *m, const q8_node *n, int64_t *shape)
{
    const q8_value *x0 = q8_in(m, n, 0);
    char s0[128], si[128];
    memcpy(shape, x0->shape, sizeof x0->shape);
    shape[1] = 0;
    for (int32_t i = 0; i < n->n_in; i++) {
        q8_status st = q8_check_input_quantized(m, n, i);
        if (st != Q8_OK)
            return st;
        const q8_value *x = q8_in(m, n, i);
        bool same = x->ndim == x0->ndim && x->ndim >= 2;
        for (int32_t d = 2; same && d < x->ndim; d++)
            same = x->shape[d] == x0->shape[d];
        if (!same)
            return q8_node_error(n, Q8_ERR_SHAPE,
                                 "input %d has shape %s, input 0 has %s: cat along dim 1 needs "
                                 "rank >= 2 and equal other dimensions",
                                 (int)i, q8_shape_str(si, sizeof si, x->ndim, x->shape),
                                 q8_shape_str(s0, sizeof s0, x0->ndim, x0->shape));
        shape[1] += x->shape[1];
    }
    if (shape[1] > Q8_MAX_DIM)
        return q8_node_error(n, Q8_ERR_SHAPE, "the output has more than %" PRId64 " channels",
                             Q8_MAX_DIM);
    return Q8_OK;
}

static q8_status check(const q8_model *m, const q8_node *n)
{
    int64_t shape[Q8_MAX_DIMS];
    q8_status st = check_inputs(m, n, shape);
    if (st != Q8_OK)
        return st;
    const q8_value *y = q8_out(m, n);
    if (y->dtype != Q8_U8 && y->dtype != Q8_I8)
        return q8_node_error(n, Q8_ERR_FORMAT, "output (value %d) is %s, cat gives u8 or i8",
                             (int)n->out[0], q8_dtype_name(y->dtype));
    int64_t k_shape[1] = {n->n_in};
    st = q8_check_output(m, n, y->dtype, q8_in(m, n, 0)->ndim, shape);
    if (st == Q8_OK)
        st = q8_check_const(n, MULTIPLIER, Q8_I32, 1, k_shape);
    if (st == Q8_OK)
        st = q8_check_const(n, SHIFT, Q8_I32, 1, k_shape);
    const int32_t *mult = n->cst[MULTIPLIER].data, *shift = n->cst[SHIFT].data;
    for (int32_t i = 0; st == Q8_OK && i < n->n_in; i++)
        st = q8_check_multiplier(n, "multiplier", i, mult[i], shift[i],
                                 (double)q8_in(m, n, i)->scale / (double)y->scale);
    if (st == Q8_OK)
        st = q8_check_out_clamp(m, n, CLAMP_MIN, CLAMP_MAX);
    return st;
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *y = q8_out(m, n);
    uint8_t *yd = q8_value_data(m, n->out[0]); // (N, sum C_i, ...)
    const int32_t *mult = n->cst[MULTIPLIER].data, *shift = n->cst[SHIFT].data;
    int32_t lo = (int32_t)n->attr[CLAMP_MIN], hi = (int32_t)n->attr[CLAMP_MAX];
    bool full = lo == q8_qmin(y->dtype) && hi == q8_qmax(y->dtype);
    int64_t offset = 0; /* elements of one output item before input i */
    for (int32_t i = 0; i < n->n_in; i++) {
        const q8_value *x = q8_in(m, n, i);
        const uint8_t *xd = q8_value_data(m, n->in[i]); // (N, C_i, ...)
        int64_t len = x->item_numel;
        bool copy = full && x->dtype == y->dtype && x->scale == y->scale &&
                    x->zero_point == y->zero_point;
#pragma omp parallel for schedule(static) if (batch * len > 32768)
        for (int64_t b = 0; b < batch; b++) {
            const uint8_t *src = xd + b * len;
            uint8_t *dst = yd + b * y->item_numel + offset;
            if (copy) {
                memcpy(dst, src, (size_t)len);
                continue;
            }
            for (int64_t e = 0; e < len; e++)
                dst[e] = q8_rq_byte(q8_load(src, e, x->dtype) - x->zero_point, mult[i], shift[i],
                                    y->zero_point, lo, hi);
        }
        offset += len;
    }
    return Q8_OK;
}

const q8_op_def q8_op_cat = {
    .name = "cat",
    .min_inputs = 1,
    .max_inputs = Q8_MAX_NODE_INPUTS,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .consts = consts,
    .n_consts = sizeof consts / sizeof consts[0],
    .check = check,
    .run = run,
};

int32_t q8_builder_cat(q8_builder *b, const char *name, const int32_t *xs, int32_t n,
                       q8_qparams out)
{
    if (!q8_builder_ok(b))
        return -1;
    if (!xs || n < 1 || n > Q8_MAX_NODE_INPUTS) {
        q8_error(Q8_ERR_ARG, "cat '%s': %d inputs (1 to %d)", name ? name : "", (int)n,
                 Q8_MAX_NODE_INPUTS);
        q8_builder_fail(b, Q8_ERR_ARG);
        return -1;
    }
    int32_t mult[Q8_MAX_NODE_INPUTS], shift[Q8_MAX_NODE_INPUTS];
    int64_t shape[Q8_MAX_DIMS] = {0};
    int32_t ndim = 0;
    for (int32_t i = 0; i < n; i++) {
        q8_value xv;
        if (q8_builder_value(b, xs[i], &xv) != Q8_OK)
            return -1;
        if (i == 0) {
            ndim = xv.ndim;
            memcpy(shape, xv.shape, sizeof shape);
            shape[1] = 0;
        }
        shape[1] += xv.ndim >= 2 ? xv.shape[1] : 1;
        if (q8_multiplier_from_real((double)xv.scale / (double)out.scale, &mult[i], &shift[i]) !=
            Q8_OK)
            mult[i] = shift[i] = 0; /* an f32 input: check() below names it */
    }
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "cat", name, xs, n, out.dtype, ndim, shape, out.scale,
                                    out.zero_point, &y);
    int64_t k_shape[1] = {n};
    q8_builder_add_constant(b, node, "multiplier", Q8_I32, 1, k_shape, mult);
    q8_builder_add_constant(b, node, "shift", Q8_I32, 1, k_shape, shift);
    q8_builder_clamp_attrs(b, node, Q8_ACT_NONE, out);
    return q8_builder_done(b, node, y);
}
