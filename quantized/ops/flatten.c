/* flatten.c — (N, d1, d2, ...) -> (N, d1*d2*...), the integers and qparams unchanged
 * (torch.flatten(x, 1)). Any dtype. */
#include "quantized/builder.h"

static q8_status check(const q8_model *m, const q8_node *n)
{
    const q8_value *x = q8_in(m, n, 0);
    int64_t shape[2] = {-1, x->item_numel};
    q8_status st = q8_check_output(m, n, x->dtype, 2, shape);
    if (st == Q8_OK && x->dtype != Q8_F32)
        st = q8_check_same_qparams(m, n, 0);
    return st;
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *x = q8_in(m, n, 0);
    memcpy(q8_value_data(m, n->out[0]), q8_value_data(m, n->in[0]),
           (size_t)(batch * x->item_numel) * q8_dtype_size(x->dtype));
    return Q8_OK;
}

const q8_op_def q8_op_flatten = {
    .name = "flatten", .min_inputs = 1, .max_inputs = 1, .check = check, .run = run,
};

int32_t q8_builder_flatten(q8_builder *b, const char *name, int32_t x)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    int64_t shape[2] = {-1, xv.item_numel};
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "flatten", name, &x, 1, xv.dtype, 2, shape, xv.scale,
                                    xv.zero_point, &y);
    return q8_builder_done(b, node, y);
}
