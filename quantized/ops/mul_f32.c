/* mul_f32.c — elementwise float multiply on equal shapes, then the fused activation
 * (torch.mul):  y = act(a * b). */
#include "quantized/builder.h"

enum { ACT };
static const q8_attr_spec attrs[] = {
    [ACT] = {"act", false, 0, 0, 2},
};

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const float *a = q8_value_data(m, n->in[0]); // (N, ...)
    const float *b = q8_value_data(m, n->in[1]); // (N, ...)
    float *y = q8_value_data(m, n->out[0]);      // (N, ...)
    int64_t total = batch * q8_in(m, n, 0)->item_numel;
    int32_t act = (int32_t)n->attr[ACT];
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++)
        y[i] = q8_act_f32(a[i] * b[i], act);
    return Q8_OK;
}

const q8_op_def q8_op_mul_f32 = {
    .name = "mul_f32",
    .min_inputs = 2,
    .max_inputs = 2,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = q8_check_binary_f32,
    .run = run,
};

int32_t q8_builder_mul_f32(q8_builder *b, const char *name, int32_t x, int32_t y, q8_act act)
{
    return q8_builder_binary_f32(b, "mul_f32", name, x, y, act);
}
