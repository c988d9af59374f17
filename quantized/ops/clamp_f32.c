/* clamp_f32.c — a standalone float nn.ReLU (act = 1: x < 0 ? 0 : x) or nn.ReLU6
 * (act = 2: also x > 6 ? 6 : x), PyTorch's clamp: NaN stays NaN. */
#include "quantized/builder.h"

enum { ACT };
static const q8_attr_spec attrs[] = {
    [ACT] = {"act", true, 0, 1, 2},
};

static q8_status check(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_input_dtype(m, n, 0, Q8_F32);
    const q8_value *x = q8_in(m, n, 0);
    if (st == Q8_OK)
        st = q8_check_output(m, n, Q8_F32, x->ndim, x->shape);
    return st;
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const float *x = q8_value_data(m, n->in[0]); // (N, ...)
    float *y = q8_value_data(m, n->out[0]);      // (N, ...)
    int64_t total = batch * q8_in(m, n, 0)->item_numel;
    int32_t act = (int32_t)n->attr[ACT];
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++)
        y[i] = q8_act_f32(x[i], act);
    return Q8_OK;
}

const q8_op_def q8_op_clamp_f32 = {
    .name = "clamp_f32",
    .min_inputs = 1,
    .max_inputs = 1,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = check,
    .run = run,
};

int32_t q8_builder_clamp_f32(q8_builder *b, const char *name, int32_t x, q8_act act)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "clamp_f32", name, &x, 1, Q8_F32, xv.ndim, xv.shape, 0.0f,
                                    0, &y);
    if (node >= 0 && act != Q8_ACT_RELU && act != Q8_ACT_RELU6)
        return q8_builder_node_fail(b, node, Q8_ERR_ARG, "act must be RELU or RELU6");
    q8_builder_act_attr(b, node, act);
    return q8_builder_done(b, node, y);
}
