/* add.c — elementwise quantized add (add_relu = add with clamp_min = zp_out), on equal
 * shapes. Integer-only, TFLite's method (reference_ops::Add): both inputs move onto the
 * common fine scale 2*max(s_a, s_b) / 2^left_shift, are summed, then rescaled:
 *
 *   a' = rq((a - zp_a) * 2^left_shift, a_multiplier, a_shift)   (M_a = s_a / (2 max))
 *   b' = rq((b - zp_b) * 2^left_shift, b_multiplier, b_shift)   (M_b = s_b / (2 max))
 *   y  = clamp(zp_out + rq(a' + b', out_multiplier, out_shift), clamp_min, clamp_max)
 *                                      (M_out = 2 max / (2^left_shift * s_out))
 *
 * each rq a single half-even rounding of the exact 64-bit product. With left_shift = 20
 * the two rescaled inputs keep 20 bits below the coarser input's step, so the result
 * equals PyTorch's float add  quantize(s_a (a - zp_a) + s_b (b - zp_b))  except when that
 * float sum lies within about 2^-20 of a rounding tie. left_shift <= 20 keeps every
 * product below 2^63. */
#include "quantized/builder.h"

#include <inttypes.h>

enum { LEFT_SHIFT, A_MULT, A_SHIFT, B_MULT, B_SHIFT, OUT_MULT, OUT_SHIFT, CLAMP_MIN, CLAMP_MAX };
static const q8_attr_spec attrs[] = {
    [LEFT_SHIFT] = {"left_shift", true, 0, 0, 20},
    [A_MULT] = {"a_multiplier", true, 0, 0, INT32_MAX},
    [A_SHIFT] = {"a_shift", true, 0, 0, 63},
    [B_MULT] = {"b_multiplier", true, 0, 0, INT32_MAX},
    [B_SHIFT] = {"b_shift", true, 0, 0, 63},
    [OUT_MULT] = {"out_multiplier", true, 0, 0, INT32_MAX},
    [OUT_SHIFT] = {"out_shift", true, 0, 0, 63},
    [CLAMP_MIN] = {"clamp_min", true, 0, -128, 255},
    [CLAMP_MAX] = {"clamp_max", true, 0, -128, 255},
};

/* Both inputs quantized with identical shapes; the output quantized of the same shape. */
q8_status q8_check_binary(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_input_quantized(m, n, 0);
    if (st == Q8_OK)
        st = q8_check_input_quantized(m, n, 1);
    if (st != Q8_OK)
        return st;
    st = q8_check_same_shapes(m, n);
    if (st != Q8_OK)
        return st;
    const q8_value *a = q8_in(m, n, 0), *y = q8_out(m, n);
    if (y->dtype != Q8_U8 && y->dtype != Q8_I8)
        return q8_node_error(n, Q8_ERR_FORMAT, "output (value %d) is %s, the op gives u8 or i8",
                             (int)n->out[0], q8_dtype_name(y->dtype));
    return q8_check_output(m, n, y->dtype, a->ndim, a->shape);
}

static q8_status check(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_binary(m, n);
    if (st != Q8_OK)
        return st;
    const q8_value *a = q8_in(m, n, 0), *b = q8_in(m, n, 1), *y = q8_out(m, n);
    double ma, mb, mo;
    q8_add_reals(a->scale, b->scale, y->scale, (int32_t)n->attr[LEFT_SHIFT], &ma, &mb, &mo);
    st = q8_check_multiplier(n, "a_multiplier", 0, n->attr[A_MULT], n->attr[A_SHIFT], ma);
    if (st == Q8_OK)
        st = q8_check_multiplier(n, "b_multiplier", 0, n->attr[B_MULT], n->attr[B_SHIFT], mb);
    if (st == Q8_OK)
        st = q8_check_multiplier(n, "out_multiplier", 0, n->attr[OUT_MULT], n->attr[OUT_SHIFT],
                                 mo);
    if (st == Q8_OK)
        st = q8_check_out_clamp(m, n, CLAMP_MIN, CLAMP_MAX);
    return st;
}

/* The sum of input bytes a and b (raw, u8 or i8): one output byte. */
static uint8_t add_byte(const q8_model *m, const q8_node *n, uint8_t a, uint8_t b)
{
    const q8_value *av = q8_in(m, n, 0), *bv = q8_in(m, n, 1), *y = q8_out(m, n);
    int64_t lift = INT64_C(1) << n->attr[LEFT_SHIFT];
    int64_t ra = q8_rq((q8_load(&a, 0, av->dtype) - av->zero_point) * lift,
                       (int32_t)n->attr[A_MULT], (int32_t)n->attr[A_SHIFT]);
    int64_t rb = q8_rq((q8_load(&b, 0, bv->dtype) - bv->zero_point) * lift,
                       (int32_t)n->attr[B_MULT], (int32_t)n->attr[B_SHIFT]);
    return q8_rq_byte(ra + rb, (int32_t)n->attr[OUT_MULT], (int32_t)n->attr[OUT_SHIFT],
                      y->zero_point, (int32_t)n->attr[CLAMP_MIN], (int32_t)n->attr[CLAMP_MAX]);
}

/* The output depends on the two input bytes only: all 256 x 256 results, computed once by
 * the arithmetic above, make the run one table lookup per element (64 KiB, in L2). */
static q8_status prepare(q8_model *m, q8_node *n)
{
    uint8_t *table = q8_alloc(256 * 256 + 64); // (a byte, b byte), slack for the gathers
    if (!table)
        return q8_node_error(n, Q8_ERR_NOMEM, "out of memory");
    for (int a = 0; a < 256; a++)
        for (int b = 0; b < 256; b++)
            table[a * 256 + b] = add_byte(m, n, (uint8_t)a, (uint8_t)b);
    memset(table + 256 * 256, 0, 64);
    n->prep = table;
    return Q8_OK;
}

static void release(q8_node *n)
{
    q8_free(n->prep);
    n->prep = NULL;
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const uint8_t *table = n->prep;                 // (256, 256)
    const uint8_t *ad = q8_value_data(m, n->in[0]); // (N, ...)
    const uint8_t *bd = q8_value_data(m, n->in[1]); // (N, ...)
    uint8_t *yd = q8_value_data(m, n->out[0]);      // (N, ...)
    int64_t total = batch * q8_in(m, n, 0)->item_numel;
    enum { BLOCK = 4096 };
    int64_t blocks = (total + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (total > 32768)
    for (int64_t k = 0; k < blocks; k++) {
        int64_t i = k * BLOCK, len = total - i < BLOCK ? total - i : BLOCK;
        if (m->kernel == Q8_GEMM_AVX2)
            q8_lookup2_avx2(table, ad + i, bd + i, len, yd + i);
        else
            q8_lookup2_reference(table, ad + i, bd + i, len, yd + i);
    }
    return Q8_OK;
}

const q8_op_def q8_op_add = {
    .name = "add",
    .min_inputs = 2,
    .max_inputs = 2,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = check,
    .prepare = prepare,
    .release = release,
    .run = run,
};

/* Adds the output value and the two-input node; the caller sets attributes. */
int32_t q8_builder_binary(q8_builder *b, const char *op, const char *name, int32_t x, int32_t y,
                          q8_qparams out, q8_act act, q8_value *xv, q8_value *yv, int32_t *out_id)
{
    if (q8_builder_value(b, x, xv) != Q8_OK || q8_builder_value(b, y, yv) != Q8_OK)
        return -1;
    int32_t in[2] = {x, y};
    int32_t node = q8_builder_node1(b, op, name, in, 2, out.dtype, xv->ndim, xv->shape, out.scale,
                                    out.zero_point, out_id);
    if (node < 0)
        return -1;
    if ((xv->dtype != Q8_U8 && xv->dtype != Q8_I8) || (yv->dtype != Q8_U8 && yv->dtype != Q8_I8))
        return q8_builder_node_fail(b, node, Q8_ERR_FORMAT, "inputs are %s and %s, the op needs "
                                    "u8 or i8",
                                    q8_dtype_name(xv->dtype), q8_dtype_name(yv->dtype));
    if (act != Q8_ACT_NONE && act != Q8_ACT_RELU)
        return q8_builder_node_fail(b, node, Q8_ERR_ARG, "act must be NONE or RELU");
    q8_builder_clamp_attrs(b, node, act, out);
    return node;
}

int32_t q8_builder_add(q8_builder *b, const char *name, int32_t x, int32_t y, q8_qparams out,
                       q8_act act)
{
    q8_value xv, yv;
    int32_t z = -1;
    int32_t node = q8_builder_binary(b, "add", name, x, y, out, act, &xv, &yv, &z);
    if (node < 0)
        return -1;
    double ma, mb, mo;
    q8_add_reals(xv.scale, yv.scale, out.scale, Q8_ADD_LEFT_SHIFT, &ma, &mb, &mo);
    int32_t m0[3] = {0}, sh[3] = {0};
    if (q8_multiplier_from_real(ma, &m0[0], &sh[0]) != Q8_OK ||
        q8_multiplier_from_real(mb, &m0[1], &sh[1]) != Q8_OK ||
        q8_multiplier_from_real(mo, &m0[2], &sh[2]) != Q8_OK)
        return q8_builder_node_fail_last(b, node);
    q8_builder_set_attr(b, node, "left_shift", Q8_ADD_LEFT_SHIFT);
    q8_builder_set_attr(b, node, "a_multiplier", m0[0]);
    q8_builder_set_attr(b, node, "a_shift", sh[0]);
    q8_builder_set_attr(b, node, "b_multiplier", m0[1]);
    q8_builder_set_attr(b, node, "b_shift", sh[1]);
    q8_builder_set_attr(b, node, "out_multiplier", m0[2]);
    q8_builder_set_attr(b, node, "out_shift", sh[2]);
    return q8_builder_done(b, node, z);
}
