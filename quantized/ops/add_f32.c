/* add_f32.c — elementwise float add on equal shapes, then the fused activation
 * (torch.add, and add_relu with act = relu):  y = act(a + b). */
#include "quantized/builder.h"

enum { ACT };
static const q8_attr_spec attrs[] = {
    [ACT] = {"act", false, 0, 0, 2},
};

q8_status q8_check_binary_f32(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_input_dtype(m, n, 0, Q8_F32);
    if (st == Q8_OK)
        st = q8_check_input_dtype(m, n, 1, Q8_F32);
    if (st == Q8_OK)
        st = q8_check_same_shapes(m, n);
    const q8_value *a = q8_in(m, n, 0);
    if (st == Q8_OK)
        st = q8_check_output(m, n, Q8_F32, a->ndim, a->shape);
    return st;
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const float *a = q8_value_data(m, n->in[0]); // (N, ...)
    const float *b = q8_value_data(m, n->in[1]); // (N, ...)
    float *y = q8_value_data(m, n->out[0]);      // (N, ...)
    int64_t total = batch * q8_in(m, n, 0)->item_numel;
    int32_t act = (int32_t)n->attr[ACT];
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++)
        y[i] = q8_act_f32(a[i] + b[i], act);
    return Q8_OK;
}

const q8_op_def q8_op_add_f32 = {
    .name = "add_f32",
    .min_inputs = 2,
    .max_inputs = 2,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = q8_check_binary_f32,
    .run = run,
};

int32_t q8_builder_binary_f32(q8_builder *b, const char *op, const char *name, int32_t x,
                              int32_t y, q8_act act)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    int32_t in[2] = {x, y}, out = -1;
    int32_t node = q8_builder_node1(b, op, name, in, 2, Q8_F32, xv.ndim, xv.shape, 0.0f, 0, &out);
    q8_builder_act_attr(b, node, act);
    return q8_builder_done(b, node, out);
}

int32_t q8_builder_add_f32(q8_builder *b, const char *name, int32_t x, int32_t y, q8_act act)
{
    return q8_builder_binary_f32(b, "add_f32", name, x, y, act);
}
