/* linear_f32.c — float fully connected layer, PyTorch's F.linear then the fused
 * activation:
 *
 *   y[n,o] = act(sum_k x[n,k] * W[o,k] + b[o])        x (N, K), W (O, K), float32
 *
 * The weight is packed once as the B operand of q8_sgemm (W^T in panels of 16 output
 * features); each chunk of input rows is packed as A panels in scratch. */
#include "quantized/builder.h"

#include <inttypes.h>
#include <stdlib.h>

enum { ACT };
static const q8_attr_spec attrs[] = {
    [ACT] = {"act", false, 0, 0, 2},
};
enum { WEIGHT, BIAS };
static const q8_const_spec consts[] = {
    [WEIGHT] = {"weight", true},
    [BIAS] = {"bias", false},
};

enum { MR = Q8_SGEMM_MR, NR = Q8_SGEMM_NR, CHUNK = Q8_CHUNK_ROWS };

static q8_status check(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_input_dtype(m, n, 0, Q8_F32);
    if (st == Q8_OK)
        st = q8_check_input_rank(m, n, 0, 2);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0);
    const q8_tensor *w = &n->cst[WEIGHT];
    if (w->dtype != Q8_F32 || w->ndim != 2 || w->shape[1] != x->shape[1])
        return q8_node_error(n, Q8_ERR_SHAPE,
                             "constant 'weight' must be f32 of shape [out_features, %" PRId64
                             "], it is %s of rank %d",
                             x->shape[1], q8_dtype_name(w->dtype), (int)w->ndim);
    int64_t o_shape[1] = {w->shape[0]}, y_shape[2] = {-1, w->shape[0]};
    st = q8_check_const(n, BIAS, Q8_F32, 1, o_shape);
    if (st == Q8_OK)
        st = q8_check_output(m, n, Q8_F32, 2, y_shape);
    if (st == Q8_OK)
        st = q8_check_finite(n, WEIGHT);
    if (st == Q8_OK)
        st = q8_check_finite(n, BIAS);
    return st;
}

static void release(q8_node *n)
{
    q8_free(n->prep);
    n->prep = NULL;
}

/* n->prep: W^T packed in NR-column panels, (panels(O) * NR, K). */
static q8_status prepare(q8_model *m, q8_node *n)
{
    (void)m;
    const q8_tensor *w = &n->cst[WEIGHT];
    int64_t o = w->shape[0], k = w->shape[1];
    float *bp = q8_alloc((size_t)(q8_sgemm_panels(o, NR) * NR * k) * sizeof(float));
    if (!bp)
        return q8_node_error(n, Q8_ERR_NOMEM, "cannot allocate the packed weights (%" PRId64
                             " x %" PRId64 ")", o, k);
    q8_sgemm_pack_bt(o, k, w->data, k, bp);
    n->prep = bp;
    n->scratch_bytes = (size_t)(q8_sgemm_panels(CHUNK, MR) * MR * k) * sizeof(float);
    return Q8_OK;
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_tensor *w = &n->cst[WEIGHT];
    int64_t o = w->shape[0], k = w->shape[1];
    const float *x = q8_value_data(m, n->in[0]); // (N, K)
    float *y = q8_value_data(m, n->out[0]);      // (N, O)
    float *ap = (float *)q8_scratch(m, 0);       // (panels(chunk) * MR, K)
    for (int64_t r0 = 0; r0 < batch; r0 += CHUNK) {
        int64_t rows = batch - r0 < CHUNK ? batch - r0 : CHUNK;
        q8_sgemm_pack_a(rows, k, x + r0 * k, k, ap);
        q8_sgemm(m->kernel, rows, o, k, ap, n->prep, y + r0 * o, o, NULL, n->cst[BIAS].data,
                 (int32_t)n->attr[ACT]);
    }
    return Q8_OK;
}

const q8_op_def q8_op_linear_f32 = {
    .name = "linear_f32",
    .min_inputs = 1,
    .max_inputs = 1,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .consts = consts,
    .n_consts = sizeof consts / sizeof consts[0],
    .check = check,
    .prepare = prepare,
    .release = release,
    .run = run,
};

int32_t q8_builder_linear_f32(q8_builder *b, const char *name, int32_t x, int64_t out_features,
                              const float *weight, const float *bias, q8_act act)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    if (!weight) {
        q8_error(Q8_ERR_ARG, "linear_f32 '%s': weights missing", name ? name : "");
        q8_builder_fail(b, Q8_ERR_ARG);
        return -1;
    }
    int64_t shape[2] = {-1, out_features > 0 ? out_features : 1};
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "linear_f32", name, &x, 1, Q8_F32, 2, shape, 0.0f, 0, &y);
    if (node < 0)
        return -1;
    if (xv.ndim != 2 || out_features < 1) {
        char s[128];
        return q8_builder_node_fail(b, node, Q8_ERR_SHAPE,
                                    "input %s with %" PRId64 " output features: linear_f32 needs "
                                    "(N, in_features) and out_features >= 1 (flatten first)",
                                    q8_shape_str(s, sizeof s, xv.ndim, xv.shape), out_features);
    }
    int64_t wshape[2] = {out_features, xv.shape[1]}, bshape[1] = {out_features};
    q8_builder_act_attr(b, node, act);
    q8_builder_add_constant(b, node, "weight", Q8_F32, 2, wshape, weight);
    if (bias)
        q8_builder_add_constant(b, node, "bias", Q8_F32, 1, bshape, bias);
    return q8_builder_done(b, node, y);
}
