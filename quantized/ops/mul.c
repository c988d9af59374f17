/* mul.c — elementwise quantized multiply on equal shapes (PyTorch quantized::mul):
 *
 *   y = clamp(zp_out + rq((a - zp_a) * (b - zp_b), multiplier, shift), clamp_min, clamp_max)
 *
 * with M = s_a * s_b / s_out. PyTorch computes the same integer product but scales it in
 * float: lrintf(c * f32(s_a * s_b / s_out)). */
#include "quantized/builder.h"

enum { MULT, SHIFT, CLAMP_MIN, CLAMP_MAX };
static const q8_attr_spec attrs[] = {
    [MULT] = {"multiplier", true, 0, 0, INT32_MAX},
    [SHIFT] = {"shift", true, 0, 0, 63},
    [CLAMP_MIN] = {"clamp_min", true, 0, -128, 255},
    [CLAMP_MAX] = {"clamp_max", true, 0, -128, 255},
};

static q8_status check(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_binary(m, n);
    if (st != Q8_OK)
        return st;
    const q8_value *a = q8_in(m, n, 0), *b = q8_in(m, n, 1), *y = q8_out(m, n);
    double real = (double)a->scale * (double)b->scale / (double)y->scale;
    st = q8_check_multiplier(n, "multiplier", 0, n->attr[MULT], n->attr[SHIFT], real);
    if (st == Q8_OK)
        st = q8_check_out_clamp(m, n, CLAMP_MIN, CLAMP_MAX);
    return st;
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *a = q8_in(m, n, 0), *b = q8_in(m, n, 1), *y = q8_out(m, n);
    const uint8_t *ad = q8_value_data(m, n->in[0]); // (N, ...)
    const uint8_t *bd = q8_value_data(m, n->in[1]); // (N, ...)
    uint8_t *yd = q8_value_data(m, n->out[0]);      // (N, ...)
    int64_t total = batch * a->item_numel;
    int32_t mult = (int32_t)n->attr[MULT], shift = (int32_t)n->attr[SHIFT];
    int32_t lo = (int32_t)n->attr[CLAMP_MIN], hi = (int32_t)n->attr[CLAMP_MAX];
#pragma omp parallel for schedule(static) if (total > 32768)
    for (int64_t i = 0; i < total; i++) {
        int64_t prod = (int64_t)(q8_load(ad, i, a->dtype) - a->zero_point) *
                       (q8_load(bd, i, b->dtype) - b->zero_point);
        yd[i] = q8_rq_byte(prod, mult, shift, y->zero_point, lo, hi);
    }
    return Q8_OK;
}

const q8_op_def q8_op_mul = {
    .name = "mul",
    .min_inputs = 2,
    .max_inputs = 2,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = check,
    .run = run,
};

int32_t q8_builder_mul(q8_builder *b, const char *name, int32_t x, int32_t y, q8_qparams out,
                       q8_act act)
{
    q8_value xv, yv;
    int32_t z = -1;
    int32_t node = q8_builder_binary(b, "mul", name, x, y, out, act, &xv, &yv, &z);
    if (node < 0)
        return -1;
    int32_t m0 = 0, sh = 0;
    double real = (double)xv.scale * (double)yv.scale / (double)out.scale;
    if (q8_multiplier_from_real(real, &m0, &sh) != Q8_OK)
        return q8_builder_node_fail_last(b, node);
    q8_builder_set_attr(b, node, "multiplier", m0);
    q8_builder_set_attr(b, node, "shift", sh);
    return q8_builder_done(b, node, z);
}
