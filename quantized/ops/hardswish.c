/* hardswish.c — y = table[x]: a 256-entry lookup computed at build time from the qparams.
 *
 *   table[i] = quantize_out(h(s_in * (q - zp_in))),  h(v) = v * min(max(v + 3, 0), 6) / 6
 *
 * in float32 with PyTorch's scalar formulas (qhardswish_kernel: dequantize_val, then
 * hardswish, then quantize_val), q = i for u8 inputs and q = i - 128 for i8 inputs, then
 * clamped to the output's clamp range (q8_qparams; the table carries it, the node has
 * no clamp attributes). The table's dtype is the output's. A reader needs no float math:
 * it only indexes. */
#include "quantized/builder.h"

enum { TABLE };
static const q8_const_spec consts[] = {
    [TABLE] = {"table", true},
};

static q8_status check(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_input_quantized(m, n, 0);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    if (y->dtype != Q8_U8 && y->dtype != Q8_I8)
        return q8_node_error(n, Q8_ERR_FORMAT, "output (value %d) is %s, hardswish gives u8 or i8",
                             (int)n->out[0], q8_dtype_name(y->dtype));
    int64_t t_shape[1] = {256};
    st = q8_check_output(m, n, y->dtype, x->ndim, x->shape);
    if (st == Q8_OK)
        st = q8_check_const(n, TABLE, y->dtype, 1, t_shape);
    return st;
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *x = q8_in(m, n, 0);
    const uint8_t *xd = q8_value_data(m, n->in[0]); // (N, ...)
    uint8_t *yd = q8_value_data(m, n->out[0]);      // (N, ...)
    const uint8_t *table = n->cst[TABLE].data;      // (256)
    int64_t total = batch * x->item_numel;
    uint8_t flip = q8_xor(x->dtype);
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++)
        yd[i] = table[xd[i] ^ flip];
    return Q8_OK;
}

const q8_op_def q8_op_hardswish = {
    .name = "hardswish",
    .min_inputs = 1,
    .max_inputs = 1,
    .consts = consts,
    .n_consts = sizeof consts / sizeof consts[0],
    .check = check,
    .run = run,
};

void q8_hardswish_table(q8_qparams in, q8_qparams out, uint8_t table[256])
{
    float inv = 1.0f / out.scale;
    int32_t lo = 0, hi = 0;
    Q8_ASSERT(q8_qparams_range(out, &lo, &hi) == Q8_OK);
    for (int i = 0; i < 256; i++) {
        int32_t q = in.dtype == Q8_I8 ? i - 128 : i;
        float v = in.scale * (float)(q - in.zero_point);
        float r = v + 3.0f;
        r = r < 0.0f ? 0.0f : r;
        r = r > 6.0f ? 6.0f : r;
        float h = v * r / 6.0f;
        table[i] = (uint8_t)q8_quantize_inv(h, inv, out.zero_point, lo, hi);
    }
}

int32_t q8_builder_hardswish(q8_builder *b, const char *name, int32_t x, q8_qparams out)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "hardswish", name, &x, 1, out.dtype, xv.ndim, xv.shape,
                                    out.scale, out.zero_point, &y);
    int32_t lo = 0, hi = 0;
    if (node >= 0 && (out.dtype == Q8_U8 || out.dtype == Q8_I8) &&
        q8_qparams_range(out, &lo, &hi) != Q8_OK)
        return q8_builder_node_fail_last(b, node);
    if (node >= 0 && (xv.dtype == Q8_U8 || xv.dtype == Q8_I8) &&
        (out.dtype == Q8_U8 || out.dtype == Q8_I8)) {
        uint8_t table[256];
        int64_t t_shape[1] = {256};
        q8_hardswish_table((q8_qparams){xv.dtype, xv.scale, xv.zero_point, 0, 0}, out, table);
        q8_builder_add_constant(b, node, "table", out.dtype, 1, t_shape, table);
    }
    return q8_builder_done(b, node, y);
}
