/* clamp.c — y = clamp(x, clamp_min, clamp_max) on the integers, qparams unchanged: a
 * standalone nn.ReLU (clamp_min = zp) or nn.ReLU6 (clamp_max = quantize(6.0)) on a
 * quantized value, as PyTorch's quantized relu/relu6 (QuantizedOpKernels.cpp). */
#include "quantized/builder.h"

enum { CLAMP_MIN, CLAMP_MAX };
static const q8_attr_spec attrs[] = {
    [CLAMP_MIN] = {"clamp_min", true, 0, -128, 255},
    [CLAMP_MAX] = {"clamp_max", true, 0, -128, 255},
};

static q8_status check(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_input_quantized(m, n, 0);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0);
    st = q8_check_output(m, n, x->dtype, x->ndim, x->shape);
    if (st == Q8_OK)
        st = q8_check_same_qparams(m, n, 0);
    if (st == Q8_OK)
        st = q8_check_out_clamp(m, n, CLAMP_MIN, CLAMP_MAX);
    return st;
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *x = q8_in(m, n, 0);
    const uint8_t *xd = q8_value_data(m, n->in[0]); // (N, ...)
    uint8_t *yd = q8_value_data(m, n->out[0]);      // (N, ...)
    int64_t total = batch * x->item_numel;
    int32_t lo = (int32_t)n->attr[CLAMP_MIN], hi = (int32_t)n->attr[CLAMP_MAX];
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++)
        yd[i] = (uint8_t)q8_clamp64(q8_load(xd, i, x->dtype), lo, hi);
    return Q8_OK;
}

const q8_op_def q8_op_clamp = {
    .name = "clamp",
    .min_inputs = 1,
    .max_inputs = 1,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = check,
    .run = run,
};

int32_t q8_builder_clamp(q8_builder *b, const char *name, int32_t x, q8_act act)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "clamp", name, &x, 1, xv.dtype, xv.ndim, xv.shape, xv.scale,
                                    xv.zero_point, &y);
    q8_builder_clamp_attrs(b, node, act, (q8_qparams){xv.dtype, xv.scale, xv.zero_point, 0, 0});
    return q8_builder_done(b, node, y);
}
