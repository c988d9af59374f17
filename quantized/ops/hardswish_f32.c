/* hardswish_f32.c — float hardswish, PyTorch's hardswish_kernel (Activation.cpp):
 *
 *   y = x * min(max(x + 3, 0), 6) / 6        in float32, in that order
 *
 * NaN stays NaN (the comparisons keep it, as std::max/std::min do there). */
#include "quantized/builder.h"

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
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++) {
        float r = x[i] + 3.0f;
        r = r < 0.0f ? 0.0f : r;
        r = r > 6.0f ? 6.0f : r;
        y[i] = x[i] * r / 6.0f;
    }
    return Q8_OK;
}

const q8_op_def q8_op_hardswish_f32 = {
    .name = "hardswish_f32", .min_inputs = 1, .max_inputs = 1, .check = check, .run = run,
};

int32_t q8_builder_hardswish_f32(q8_builder *b, const char *name, int32_t x)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "hardswish_f32", name, &x, 1, Q8_F32, xv.ndim, xv.shape,
                                    0.0f, 0, &y);
    return q8_builder_done(b, node, y);
}
