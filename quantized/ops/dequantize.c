/* dequantize.c — u8/i8 -> f32:  x = f32(scale) * (float)(q - zp)  (fbgemm Dequantize, the
 * scalar form; ATen's vectorized kernels use fma(scale, q, -zp*scale), which may differ
 * in the last ulp). */
#include "quantized/builder.h"

static q8_status check(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_input_quantized(m, n, 0);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0);
    return q8_check_output(m, n, Q8_F32, x->ndim, x->shape);
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *x = q8_in(m, n, 0);
    const uint8_t *xd = q8_value_data(m, n->in[0]); // (N, ...)
    float *yd = q8_value_data(m, n->out[0]);        // (N, ...)
    int64_t total = batch * x->item_numel;
    float scale = x->scale;
    int32_t zp = x->zero_point;
    q8_dtype dt = x->dtype;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++)
        yd[i] = scale * (float)(q8_load(xd, i, dt) - zp);
    return Q8_OK;
}

const q8_op_def q8_op_dequantize = {
    .name = "dequantize", .min_inputs = 1, .max_inputs = 1, .check = check, .run = run,
};

int32_t q8_builder_dequantize(q8_builder *b, const char *name, int32_t x)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "dequantize", name, &x, 1, Q8_F32, xv.ndim, xv.shape, 0.0f,
                                    0, &y);
    return q8_builder_done(b, node, y);
}
