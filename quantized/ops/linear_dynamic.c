/* linear_dynamic.c — PyTorch's dynamically quantized Linear (nnqd.Linear, fbgemm):
 * float in, float out, int8 weights, float bias; the input is quantized per call.
 *
 * Per run, over the whole input x (N, K) (PyTorch qlinear_dynamic.cpp, _version 4):
 *   min, max  = the smallest and largest element (fbgemm FindMinMax)
 *   s_x, zp_x = ChooseQuantizationParams(min, max, 0, 255, reduce_range) -> range 0..127
 *   q[n,k]    = clamp(round_half_even(fma(x, f32(1/s_x), zp_x)), 0, 255)
 *               (QuantizeAvx2 with LEGACY = true: the zero point is added before rounding)
 *   raw[n,o]  = sum_k (q[n,k] - zp_x) * W[o,k]                       (int32, exact)
 *   y[n,o]    = f32(raw) * f32(s_x * s_w[o]) + b[o]   (two float roundings, no fma;
 *               fbgemm ReQuantizeForFloat), relu: y < 0 ? 0 : y
 * A non-finite input element is an error (the scale would be meaningless).
 */
#include "quantized/builder.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

enum { RELU, REDUCE_RANGE };
static const q8_attr_spec attrs[] = {
    [RELU] = {"relu", false, 0, 0, 1},
    [REDUCE_RANGE] = {"reduce_range", false, 1, 0, 1},
};
enum { WEIGHT, WEIGHT_SCALE, BIAS };
static const q8_const_spec consts[] = {
    [WEIGHT] = {"weight", true},
    [WEIGHT_SCALE] = {"weight_scale", true},
    [BIAS] = {"bias", false},
};

static q8_status check(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_input_dtype(m, n, 0, Q8_F32);
    if (st == Q8_OK)
        st = q8_check_input_rank(m, n, 0, 2);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0);
    const q8_tensor *w = &n->cst[WEIGHT], *s = &n->cst[WEIGHT_SCALE];
    if (w->dtype != Q8_I8 || w->ndim != 2 || w->shape[1] != x->shape[1])
        return q8_node_error(n, Q8_ERR_SHAPE,
                             "constant 'weight' must be i8 of shape [out_features, %" PRId64
                             "], it is %s of rank %d",
                             x->shape[1], q8_dtype_name(w->dtype), (int)w->ndim);
    int64_t o = w->shape[0];
    if (s->dtype != Q8_F32 || s->ndim != 1 || (s->shape[0] != 1 && s->shape[0] != o))
        return q8_node_error(n, Q8_ERR_SHAPE,
                             "constant 'weight_scale' must be f32 of shape [%" PRId64
                             "] or [1], it is %s with %" PRId64 " elements",
                             o, q8_dtype_name(s->dtype), s->numel);
    st = q8_check_scales(n, WEIGHT_SCALE);
    int64_t o_shape[1] = {o}, y_shape[2] = {-1, o};
    if (st == Q8_OK)
        st = q8_check_const(n, BIAS, Q8_F32, 1, o_shape);
    if (st == Q8_OK)
        st = q8_check_output(m, n, Q8_F32, 2, y_shape);
    return st;
}

static void release(q8_node *n)
{
    q8_packed *pk = n->prep;
    q8_packed_free(pk);
    free(pk);
    n->prep = NULL;
}

static q8_status prepare(q8_model *m, q8_node *n)
{
    (void)m;
    q8_packed *pk = calloc(1, sizeof *pk);
    if (!pk)
        return q8_node_error(n, Q8_ERR_NOMEM, "out of memory");
    n->prep = pk;
    const q8_tensor *w = &n->cst[WEIGHT];
    /* zp_x up to 255 is subtracted as zp_x * wsum after the GEMM (in int64), so the GEMM
     * itself only needs 255 * sum|W| inside int32: pack with a zero bias and zero point. */
    q8_status st = q8_pack_weights(n, w->data, w->shape[0], w->shape[1], NULL, 0, pk);
    if (st != Q8_OK)
        return st;
    n->scratch_bytes = (size_t)((Q8_CHUNK_ROWS * pk->kp + 63) / 64 * 64) +
                       (size_t)(Q8_CHUNK_ROWS * pk->n) * sizeof(int32_t);
    return Q8_OK;
}

static q8_status find_min_max(const q8_node *n, const float *x, int64_t total, float *min,
                              float *max)
{
    float lo = x[0], hi = x[0];
    int64_t bad = -1;
    for (int64_t i = 0; i < total; i++) {
        if (!isfinite(x[i]) && bad < 0)
            bad = i;
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    if (bad >= 0)
        return q8_node_error(n, Q8_ERR_NUMERIC,
                             "input element %" PRId64 " is %g: dynamic quantization needs finite "
                             "inputs",
                             bad, (double)x[bad]);
    *min = lo;
    *max = hi;
    return Q8_OK;
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_packed *pk = n->prep;
    const float *x = q8_value_data(m, n->in[0]); // (N, K)
    float *y = q8_value_data(m, n->out[0]);      // (N, O)
    uint8_t *a = q8_scratch(m, 0);                     // (chunk, kp)
    int32_t *acc = (int32_t *)(q8_scratch(m, 0) + (Q8_CHUNK_ROWS * pk->kp + 63) / 64 * 64); // (chunk, O)
    const float *sw = n->cst[WEIGHT_SCALE].data, *bias = n->cst[BIAS].data;
    bool per_tensor = n->cst[WEIGHT_SCALE].numel == 1, relu = n->attr[RELU] != 0;
    float min = 0, max = 0, sx = 0;
    int32_t zx = 0;
    q8_status st = find_min_max(n, x, batch * pk->k, &min, &max);
    if (st != Q8_OK)
        return st;
    q8_choose_qparams_dynamic(min, max, n->attr[REDUCE_RANGE] != 0, &sx, &zx);
    float inv = 1.0f / sx, zf = (float)zx;
    for (int64_t r0 = 0; r0 < batch; r0 += Q8_CHUNK_ROWS) {
        int64_t rows = batch - r0 < Q8_CHUNK_ROWS ? batch - r0 : Q8_CHUNK_ROWS;
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + (r0 + r) * pk->k;
            uint8_t *ar = a + r * pk->kp;
            for (int64_t k = 0; k < pk->k; k++) {
                float t = nearbyintf(fmaf(xr[k], inv, zf));
                ar[k] = (uint8_t)(t < 0.0f ? 0.0f : t > 255.0f ? 255.0f : t);
            }
            memset(ar + pk->k, 0, (size_t)(pk->kp - pk->k));
        }
        q8_gemm(m->kernel, rows, pk->n, pk->kp, a, pk->kp, pk->w, NULL, acc, pk->n, 1);
#pragma omp parallel for schedule(static) if (rows * pk->n > 16384)
        for (int64_t r = 0; r < rows; r++) {
            float *yr = y + (r0 + r) * pk->n;
            for (int64_t o = 0; o < pk->n; o++) {
                int64_t raw = (int64_t)acc[r * pk->n + o] - (int64_t)zx * pk->wsum[o];
                float scale = sx * sw[per_tensor ? 0 : o];
                float v = (float)raw * scale;
                if (bias)
                    v = v + bias[o];
                yr[o] = relu && v < 0.0f ? 0.0f : v;
            }
        }
    }
    return Q8_OK;
}

const q8_op_def q8_op_linear_dynamic = {
    .name = "linear_dynamic",
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

int32_t q8_builder_linear_dynamic(q8_builder *b, const char *name, int32_t x,
                                  int64_t out_features, const q8_weights *w, q8_act act)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    if (!w || !w->data || !w->scale) {
        q8_error(Q8_ERR_ARG, "linear_dynamic '%s': weights missing", name ? name : "");
        q8_builder_fail(b, Q8_ERR_ARG);
        return -1;
    }
    int64_t shape[2] = {-1, out_features > 0 ? out_features : 1};
    int32_t y = -1;
    int32_t node =
        q8_builder_node1(b, "linear_dynamic", name, &x, 1, Q8_F32, 2, shape, 0.0f, 0, &y);
    if (node < 0)
        return -1;
    if (xv.ndim != 2 || out_features < 1 || (w->n_scale != 1 && w->n_scale != out_features) ||
        (act != Q8_ACT_NONE && act != Q8_ACT_RELU))
        return q8_builder_node_fail(b, node, Q8_ERR_ARG,
                                    "needs an input (N, in_features), out_features >= 1, 1 or "
                                    "out_features weight scales and act NONE or RELU");
    int64_t wshape[2] = {out_features, xv.shape[1]}, sshape[1] = {w->n_scale};
    int64_t bshape[1] = {out_features};
    q8_builder_set_attr(b, node, "relu", act == Q8_ACT_RELU);
    q8_builder_set_attr(b, node, "reduce_range", 1);
    q8_builder_add_constant(b, node, "weight", Q8_I8, 2, wshape, w->data);
    q8_builder_add_constant(b, node, "weight_scale", Q8_F32, 1, sshape, w->scale);
    if (w->bias)
        q8_builder_add_constant(b, node, "bias", Q8_F32, 1, bshape, w->bias);
    return q8_builder_done(b, node, y);
}
