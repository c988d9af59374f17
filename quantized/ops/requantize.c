/* requantize.c — u8/i8 -> u8/i8 with new qparams (and an optional fused relu/relu6):
 *
 *   y = clamp(zp_out + rq(x - zp_in, multiplier, shift), clamp_min, clamp_max)
 *
 * with M0 * 2^-shift = s_in / s_out and rq the single half-even rounding. It is
 * quantize(act(dequantize(x))) in the output qparams — an observed ReLU6 (relu6's bound
 * is quantize(6.0) with the output qparams), or a change of scale — computed in integers
 * (PyTorch requantizes in float: see docs/FORMAT.md, "Versus PyTorch"). Only 256 inputs
 * exist, so prepare tabulates them and run only indexes. */
#include "quantized/builder.h"

#include <stdlib.h>

enum { MULT, SHIFT, CLAMP_MIN, CLAMP_MAX };
static const q8_attr_spec attrs[] = {
    [MULT] = {"multiplier", true, 0, 0, INT32_MAX},
    [SHIFT] = {"shift", true, 0, 0, 63},
    [CLAMP_MIN] = {"clamp_min", true, 0, -128, 255},
    [CLAMP_MAX] = {"clamp_max", true, 0, -128, 255},
};

static q8_status check(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_input_quantized(m, n, 0);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    if (y->dtype != Q8_U8 && y->dtype != Q8_I8)
        return q8_node_error(n, Q8_ERR_FORMAT, "output (value %d) is %s, requantize gives u8 or i8",
                             (int)n->out[0], q8_dtype_name(y->dtype));
    st = q8_check_output(m, n, y->dtype, x->ndim, x->shape);
    if (st == Q8_OK)
        st = q8_check_multiplier(n, "multiplier", 0, n->attr[MULT], n->attr[SHIFT],
                                 (double)x->scale / (double)y->scale);
    if (st == Q8_OK)
        st = q8_check_out_clamp(m, n, CLAMP_MIN, CLAMP_MAX);
    return st;
}

static void release(q8_node *n)
{
    free(n->prep);
    n->prep = NULL;
}

/* table[i]: the output byte of the input byte i (int8 inputs shifted by +128). */
static q8_status prepare(q8_model *m, q8_node *n)
{
    uint8_t *table = malloc(256);
    if (!table)
        return q8_node_error(n, Q8_ERR_NOMEM, "out of memory");
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    int32_t mult = (int32_t)n->attr[MULT], shift = (int32_t)n->attr[SHIFT];
    int32_t lo = (int32_t)n->attr[CLAMP_MIN], hi = (int32_t)n->attr[CLAMP_MAX];
    for (int32_t i = 0; i < 256; i++) {
        int32_t q = x->dtype == Q8_I8 ? i - 128 : i;
        table[i] = q8_rq_byte(q - x->zero_point, mult, shift, y->zero_point, lo, hi);
    }
    n->prep = table;
    return Q8_OK;
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *x = q8_in(m, n, 0);
    const uint8_t *xd = q8_value_data(m, n->in[0]); // (N, ...)
    uint8_t *yd = q8_value_data(m, n->out[0]);      // (N, ...)
    const uint8_t *table = n->prep;                 // (256)
    int64_t total = batch * x->item_numel;
    uint8_t flip = q8_xor(x->dtype);
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++)
        yd[i] = table[xd[i] ^ flip];
    return Q8_OK;
}

const q8_op_def q8_op_requantize = {
    .name = "requantize",
    .min_inputs = 1,
    .max_inputs = 1,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = check,
    .prepare = prepare,
    .release = release,
    .run = run,
};

int32_t q8_builder_requantize(q8_builder *b, const char *name, int32_t x, q8_qparams out,
                              q8_act act)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "requantize", name, &x, 1, out.dtype, xv.ndim, xv.shape,
                                    out.scale, out.zero_point, &y);
    if (node < 0)
        return -1;
    if (xv.dtype != Q8_U8 && xv.dtype != Q8_I8)
        return q8_builder_node_fail(b, node, Q8_ERR_FORMAT, "input (value %d) is %s, requantize "
                                    "needs u8 or i8", (int)x, q8_dtype_name(xv.dtype));
    int32_t m0 = 0, sh = 0;
    if (q8_multiplier_from_real((double)xv.scale / (double)out.scale, &m0, &sh) != Q8_OK)
        return q8_builder_node_fail_last(b, node);
    q8_builder_set_attr(b, node, "multiplier", m0);
    q8_builder_set_attr(b, node, "shift", sh);
    q8_builder_clamp_attrs(b, node, act, out);
    return q8_builder_done(b, node, y);
}
