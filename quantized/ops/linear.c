/* linear.c — quantized fully connected layer: x (N, K) u8/i8, W (O, K) int8.
 *
 *   acc[n,o] = b_q[o] + sum_k (x[n,k] - zp_in) * W[o,k]
 *   y[n,o]   = clamp(zp_out + rq(acc, M0[o], shift[o]), clamp_min, clamp_max)
 *
 * One q8_gemm per chunk of rows; -zp_in * sum_k W[o,k] is folded into the packed bias.
 * A uint8 input whose K is a multiple of 16 feeds the GEMM in place; otherwise each
 * chunk is copied into scratch, shifted to uint8 (int8 inputs) and zero padded. */
#include "quantized/builder.h"

#include <inttypes.h>
#include <omp.h>
#include <stdlib.h>

enum { CLAMP_MIN, CLAMP_MAX };
static const q8_attr_spec attrs[] = {
    [CLAMP_MIN] = {"clamp_min", true, 0, -128, 255},
    [CLAMP_MAX] = {"clamp_max", true, 0, -128, 255},
};
enum { WEIGHT, WEIGHT_SCALE, BIAS, MULTIPLIER, SHIFT };
static const q8_const_spec consts[] = {
    [WEIGHT] = {"weight", true},
    [WEIGHT_SCALE] = {"weight_scale", true},
    [BIAS] = {"bias", false},
    [MULTIPLIER] = {"multiplier", true},
    [SHIFT] = {"shift", true},
};
static const q8_weight_consts wconsts = {WEIGHT_SCALE, BIAS, MULTIPLIER, SHIFT};

typedef struct linear_prep {
    q8_packed pk;
    int8_t *wq;    /* AVX-VNNI: (O, kp) the int8 weights zero padded, else NULL */
    bool in_place; /* the input rows are already GEMM rows */
    uint8_t xor_in;
} linear_prep;

static q8_status check(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_input_quantized(m, n, 0);
    if (st == Q8_OK)
        st = q8_check_input_rank(m, n, 0, 2);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    const q8_tensor *w = &n->cst[WEIGHT];
    if (w->dtype != Q8_I8 || w->ndim != 2)
        return q8_node_error(n, Q8_ERR_SHAPE,
                             "constant 'weight' is %s of rank %d, linear needs i8 of shape "
                             "[out_features, in_features]",
                             q8_dtype_name(w->dtype), (int)w->ndim);
    if (w->shape[1] != x->shape[1])
        return q8_node_error(n, Q8_ERR_SHAPE,
                             "input has %" PRId64 " features, the weight [%" PRId64 ", %" PRId64
                             "] expects %" PRId64,
                             x->shape[1], w->shape[0], w->shape[1], w->shape[1]);
    if (y->dtype != Q8_U8 && y->dtype != Q8_I8)
        return q8_node_error(n, Q8_ERR_FORMAT, "output (value %d) is %s, linear gives u8 or i8",
                             (int)n->out[0], q8_dtype_name(y->dtype));
    int64_t shape[2] = {-1, w->shape[0]};
    st = q8_check_output(m, n, y->dtype, 2, shape);
    if (st == Q8_OK)
        st = q8_check_weight_consts(m, n, &wconsts, w->shape[0]);
    if (st == Q8_OK)
        st = q8_check_out_clamp(m, n, CLAMP_MIN, CLAMP_MAX);
    return st;
}

static void release(q8_node *n)
{
    linear_prep *pp = n->prep;
    q8_packed_free(&pp->pk);
    free(pp->wq);
    free(pp);
    n->prep = NULL;
}

static q8_status prepare(q8_model *m, q8_node *n)
{
    linear_prep *pp = calloc(1, sizeof *pp);
    if (!pp)
        return q8_node_error(n, Q8_ERR_NOMEM, "out of memory");
    n->prep = pp;
    const q8_value *x = q8_in(m, n, 0);
    const q8_tensor *w = &n->cst[WEIGHT];
    int32_t zp_u8 = x->zero_point + (x->dtype == Q8_I8 ? 128 : 0);
    pp->xor_in = q8_xor(x->dtype);
    q8_status st = q8_pack_weights(n, w->data, w->shape[0], w->shape[1], n->cst[BIAS].data,
                                   zp_u8, &pp->pk);
    if (st != Q8_OK)
        return st;
    pp->in_place = pp->xor_in == 0 && pp->pk.kp == pp->pk.k;
    if (q8_gemm_vnni_available()) {
        pp->wq = calloc((size_t)(pp->pk.n * pp->pk.kp), 1);
        if (!pp->wq)
            return q8_node_error(n, Q8_ERR_NOMEM, "out of memory");
        for (int64_t o = 0; o < pp->pk.n; o++)
            memcpy(pp->wq + o * pp->pk.kp, (const int8_t *)w->data + o * pp->pk.k,
                   (size_t)pp->pk.k);
    }
    n->scratch_bytes = (size_t)((Q8_CHUNK_ROWS * pp->pk.kp + 63) / 64 * 64) +
                       (size_t)(Q8_CHUNK_ROWS * pp->pk.n) * sizeof(int32_t);
    return Q8_OK;
}

/* The VNNI product over blocks of rows (in parallel unless the run already is). */
static void gemm_vnni(const q8_packed *pk, const int8_t *wq, int64_t rows, const uint8_t *a,
                      int32_t *acc)
{
    enum { BLOCK = 16 };
    int64_t blocks = (rows + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (blocks > 1 && !omp_in_parallel())
    for (int64_t b = 0; b < blocks; b++) {
        int64_t r0 = b * BLOCK, len = rows - r0 < BLOCK ? rows - r0 : BLOCK;
        q8_gemm_dot_vnni(len, pk->n, pk->kp, a + r0 * pk->kp, pk->kp, wq, pk->bias,
                         acc + r0 * pk->n, pk->n, 1);
    }
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const linear_prep *pp = n->prep;
    const q8_packed *pk = &pp->pk;
    const uint8_t *x = q8_value_data(m, n->in[0]); // (N, K)
    uint8_t *y = q8_value_data(m, n->out[0]);      // (N, O)
    uint8_t *a = q8_scratch(m, 0);                       // (chunk, kp)
    int32_t *acc = (int32_t *)(q8_scratch(m, 0) + (Q8_CHUNK_ROWS * pk->kp + 63) / 64 * 64); // (chunk, O)
    const int32_t *mult = n->cst[MULTIPLIER].data, *shift = n->cst[SHIFT].data;
    bool per_tensor = n->cst[MULTIPLIER].numel == 1;
    int32_t zp = q8_out(m, n)->zero_point;
    int32_t lo = (int32_t)n->attr[CLAMP_MIN], hi = (int32_t)n->attr[CLAMP_MAX];
    for (int64_t r0 = 0; r0 < batch; r0 += Q8_CHUNK_ROWS) {
        int64_t rows = batch - r0 < Q8_CHUNK_ROWS ? batch - r0 : Q8_CHUNK_ROWS;
        const uint8_t *ar = x + r0 * pk->k;
        if (!pp->in_place) {
            for (int64_t r = 0; r < rows; r++) {
                for (int64_t k = 0; k < pk->k; k++)
                    a[r * pk->kp + k] = (uint8_t)(ar[r * pk->k + k] ^ pp->xor_in);
                memset(a + r * pk->kp + pk->k, 0, (size_t)(pk->kp - pk->k));
            }
            ar = a;
        }
        if (m->kernel == Q8_GEMM_AVX2 && pp->wq)
            gemm_vnni(pk, pp->wq, rows, ar, acc);
        else
            q8_gemm(m->kernel, rows, pk->n, pk->kp, ar, pk->kp, pk->w, pk->bias, acc, pk->n, 1);
#pragma omp parallel for schedule(static) if (rows * pk->n > 16384)
        for (int64_t r = 0; r < rows; r++)
            q8_requant(m->kernel, acc + r * pk->n, pk->n, mult, shift, per_tensor ? 0 : 1, zp,
                       lo, hi, y + (r0 + r) * pk->n);
    }
    return Q8_OK;
}

const q8_op_def q8_op_linear = {
    .name = "linear",
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

int32_t q8_builder_linear(q8_builder *b, const char *name, int32_t x, int64_t out_features,
                          const q8_weights *w, q8_qparams out, q8_act act)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    if (!w || !w->data) {
        q8_error(Q8_ERR_ARG, "linear '%s': weights missing", name ? name : "");
        q8_builder_fail(b, Q8_ERR_ARG);
        return -1;
    }
    int64_t shape[2] = {-1, out_features > 0 ? out_features : 1};
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "linear", name, &x, 1, out.dtype, 2, shape, out.scale,
                                    out.zero_point, &y);
    if (node < 0)
        return -1;
    if (xv.dtype != Q8_U8 && xv.dtype != Q8_I8)
        return q8_builder_node_fail(b, node, Q8_ERR_FORMAT, "input (value %d) is %s, linear needs "
                                    "u8 or i8", (int)x, q8_dtype_name(xv.dtype));
    if (xv.ndim != 2 || out_features < 1) {
        char s[128];
        return q8_builder_node_fail(b, node, Q8_ERR_SHAPE,
                                    "input %s with %" PRId64 " output features: linear needs "
                                    "(N, in_features) and out_features >= 1 (flatten first)",
                                    q8_shape_str(s, sizeof s, xv.ndim, xv.shape), out_features);
    }
    int64_t wshape[2] = {out_features, xv.shape[1]};
    q8_builder_clamp_attrs(b, node, act, out);
    q8_builder_add_constant(b, node, "weight", Q8_I8, 2, wshape, w->data);
    if (q8_builder_status(b) == Q8_OK)
        q8_builder_weight_consts(b, node, w, out_features, xv.scale, out.scale);
    return q8_builder_done(b, node, y);
}
