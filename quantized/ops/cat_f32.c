/* cat_f32.c — torch.cat of float values along dim 1 (equal other dimensions): each
 * batch item of the output is the inputs' items one after the other. */
#include "quantized/builder.h"

#include <inttypes.h>

enum { DIM };
static const q8_attr_spec attrs[] = {
    [DIM] = {"dim", false, 1, 1, 1},
};

static q8_status check(const q8_model *m, const q8_node *n)
{
    const q8_value *x0 = q8_in(m, n, 0);
    int64_t shape[Q8_MAX_DIMS];
    char s0[128], si[128];
    memcpy(shape, x0->shape, sizeof shape);
    shape[1] = 0;
    for (int32_t i = 0; i < n->n_in; i++) {
        q8_status st = q8_check_input_dtype(m, n, i, Q8_F32);
        if (st != Q8_OK)
            return st;
        const q8_value *x = q8_in(m, n, i);
        bool same = x->ndim == x0->ndim && x->ndim >= 2;
        for (int32_t d = 2; same && d < x->ndim; d++)
            same = x->shape[d] == x0->shape[d];
        if (!same)
            return q8_node_error(n, Q8_ERR_SHAPE,
                                 "input %d has shape %s, input 0 has %s: cat along dim 1 needs "
                                 "rank >= 2 and equal other dimensions",
                                 (int)i, q8_shape_str(si, sizeof si, x->ndim, x->shape),
                                 q8_shape_str(s0, sizeof s0, x0->ndim, x0->shape));
        shape[1] += x->shape[1];
    }
    if (shape[1] > Q8_MAX_DIM)
        return q8_node_error(n, Q8_ERR_SHAPE, "the output has more than %" PRId64 " channels",
                             Q8_MAX_DIM);
    return q8_check_output(m, n, Q8_F32, x0->ndim, shape);
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *y = q8_out(m, n);
    float *yd = q8_value_data(m, n->out[0]); // (N, sum C_i, ...)
    int64_t offset = 0;                      /* floats of one output item before input i */
    for (int32_t i = 0; i < n->n_in; i++) {
        const float *xd = q8_value_data(m, n->in[i]); // (N, C_i, ...)
        int64_t len = q8_in(m, n, i)->item_numel;
        for (int64_t b = 0; b < batch; b++)
            memcpy(yd + b * y->item_numel + offset, xd + b * len, (size_t)len * sizeof(float));
        offset += len;
    }
    return Q8_OK;
}

const q8_op_def q8_op_cat_f32 = {
    .name = "cat_f32",
    .min_inputs = 1,
    .max_inputs = Q8_MAX_NODE_INPUTS,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = check,
    .run = run,
};

int32_t q8_builder_cat_f32(q8_builder *b, const char *name, const int32_t *xs, int32_t n)
{
    if (!q8_builder_ok(b))
        return -1;
    if (!xs || n < 1 || n > Q8_MAX_NODE_INPUTS) {
        q8_error(Q8_ERR_ARG, "cat_f32 '%s': %d inputs (1 to %d)", name ? name : "", (int)n,
                 Q8_MAX_NODE_INPUTS);
        q8_builder_fail(b, Q8_ERR_ARG);
        return -1;
    }
    int64_t shape[Q8_MAX_DIMS] = {0};
    int32_t ndim = 0;
    for (int32_t i = 0; i < n; i++) {
        q8_value xv;
        if (q8_builder_value(b, xs[i], &xv) != Q8_OK)
            return -1;
        if (i == 0) {
            ndim = xv.ndim;
            memcpy(shape, xv.shape, sizeof shape);
            shape[1] = 0;
        }
        shape[1] += xv.ndim >= 2 ? xv.shape[1] : 1;
    }
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "cat_f32", name, xs, n, Q8_F32, ndim, shape, 0.0f, 0, &y);
    return q8_builder_done(b, node, y);
}
