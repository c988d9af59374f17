/* q8_run.c — test helper: runs a q8 model on inputs from an HDF5 file and writes every
 * value's contents (the integers of quantized values, the floats of f32 ones) to another
 * HDF5 file, so that tools/q8_reference.py can be compared with the C runtime.
 *
 *   q8_run MODEL.h5 INPUT.h5 OUT.h5
 *       INPUT.h5 holds one dataset per graph input, "input_0", "input_1", ..., of the
 *       input value's dtype (f32, u8 or i8) and shape (N, ...). OUT.h5 gets "values/<id>"
 *       for every value id, shape (N, ...), the value's dtype.
 *   q8_run --make-demo MODEL.h5 u8|i8|float|dynamic
 *       builds and saves a demo model, input f32 (N,3,12,11), output f32 (N,5):
 *       u8/i8: every quantized op on those activations, with restricted clamp ranges
 *       and requantize; float: every float op; dynamic: the float ops with dyadic weights
 *       (every float sum exact for dyadic inputs) ending in linear_dynamic.
 *   q8_run --describe MODEL.h5
 *
 * CQAT_Q8_GEMM=reference forces the portable GEMM kernel. Exit status 0 on success.
 */
#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quantized/q8.h"

/* ---- the demo model ---- */

static uint64_t seed = 0x5eed;

static uint64_t next(void)
{
    uint64_t z = (seed += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static float uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(next() >> 11) / 9007199254740992.0);
}

/* qparams over the dtype's full range, and over [lo, hi]. */
static q8_qparams qp(q8_dtype dt, float scale, int32_t zp)
{
    return (q8_qparams){.dtype = dt, .scale = scale, .zero_point = zp};
}

static q8_qparams qpr(q8_dtype dt, float scale, int32_t zp, int32_t lo, int32_t hi)
{
    return (q8_qparams){dt, scale, zp, lo, hi};
}

/* Random weights (O, K) with per-channel (or one) scales and a float bias; the arrays live
 * in static storage until the builder has copied them. */
static q8_weights weights(int64_t o, int64_t k, bool per_channel, float scale_lo, float scale_hi)
{
    static int8_t w[8][4096];
    static float s[8][64], b[8][64];
    static int slot = 0;
    int i = slot++ % 8;
    for (int64_t j = 0; j < o * k; j++)
        w[i][j] = (int8_t)(next() % 256 - 128);
    for (int64_t j = 0; j < o; j++) {
        s[i][j] = uniform(scale_lo, scale_hi);
        b[i][j] = uniform(-0.3f, 0.3f);
    }
    return (q8_weights){w[i], s[i], per_channel ? o : 1, b[i]};
}

/* Random floats in [lo, hi), or multiples of 1/denom with |k| <= kmax (denom > 0): the
 * dyadic values of the exact demo, whose float sums no order can round. Static storage,
 * as weights(). */
static float *floats(int64_t n, float lo, float hi, int32_t kmax, float denom)
{
    static float pool[16][4096];
    static int slot = 0;
    float *p = pool[slot++ % 16];
    for (int64_t j = 0; j < n; j++)
        p[j] = denom > 0 ? (float)((int32_t)(next() % (uint64_t)(2 * kmax + 1)) - kmax) / denom
                         : uniform(lo, hi);
    return p;
}

/* Every quantized op, with restricted clamp ranges (QAT's quant_min/quant_max) on most
 * outputs and requantize nodes. */
static void quantized_demo(q8_builder *b, q8_dtype act)
{
    int32_t zlo = act == Q8_U8 ? 0 : -128, zmid = act == Q8_U8 ? 128 : 0;
    q8_dtype other = act == Q8_U8 ? Q8_I8 : Q8_U8;
    int64_t xs[4] = {-1, 3, 12, 11};
    int32_t x = q8_builder_input(b, "x", Q8_F32, 4, xs);
    int32_t q = q8_builder_quantize(b, "quant", x,
                                    qpr(act, 1.0f / 32, zmid, zmid - 90, zmid + 100));
    int32_t zo = other == Q8_U8 ? 100 : 3; /* values in the other dtype */
    q8_builder_quantize(b, "quant_other", x, qpr(other, 0.05f, zo, zo - 30, zo + 40)); /* unread */
    q8_conv2d_desc d1 = {8, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 1};
    q8_weights w1 = weights(8, 27, true, 0.004f, 0.008f);
    int32_t c1 = q8_builder_conv2d(b, "conv1", q, &d1, &w1, qpr(act, 0.1f, zlo, zlo, zlo + 127),
                                   Q8_ACT_RELU);
    q8_pool2d_desc mp = {{3, 3}, {2, 2}, {1, 1}, {1, 1}, true, false, 0};
    int32_t p1 = q8_builder_max_pool2d(b, "pool1", c1, &mp);
    q8_conv2d_desc d2 = {8, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 8};
    q8_weights w2 = weights(8, 9, true, 0.005f, 0.01f);
    int32_t c2 = q8_builder_conv2d(b, "dw", p1, &d2, &w2, qp(act, 0.08f, zmid), Q8_ACT_NONE);
    int32_t h = q8_builder_hardswish(b, "hswish", c2,
                                     qpr(act, 0.04f, zmid - 20, zmid - 60, zmid + 60));
    q8_conv2d_desc d3 = {8, {3, 3}, {1, 1}, {2, 2}, {2, 2}, 2};
    q8_weights w3 = weights(8, 36, false, 0.003f, 0.003f);
    int32_t c3 = q8_builder_conv2d(b, "grouped", p1, &d3, &w3,
                                   qpr(act, 0.07f, zmid, zmid - 50, zmid + 50), Q8_ACT_RELU6);
    int32_t a = q8_builder_add(b, "add", h, c3, qpr(act, 0.05f, zmid, zmid - 100, zmid + 72),
                               Q8_ACT_RELU);
    int32_t mu = q8_builder_mul(b, "mul", a, c3, qpr(act, 0.15f, zlo + 10, zlo + 4, zlo + 90),
                                Q8_ACT_NONE);
    int32_t parts[3] = {a, mu, p1};
    int32_t ct = q8_builder_cat(b, "cat", parts, 3, qpr(act, 0.1f, zlo + 5, zlo + 2, zlo + 150));
    int32_t cl = q8_builder_clamp(b, "relu6", ct, Q8_ACT_RELU6);
    int32_t r6 = q8_builder_requantize(b, "relu6_observed", cl,
                                       qpr(act, 0.06f, zlo + 3, zlo, zlo + 127), Q8_ACT_RELU6);
    q8_pool2d_desc ap = {{3, 3}, {2, 2}, {1, 1}, {0, 0}, true, false, 0};
    q8_qparams ap_out = qpr(act, 0.02f, zlo + 3, zlo, zlo + 127);
    int32_t av = q8_builder_avg_pool2d(b, "avgpool", r6, &ap, &ap_out);
    q8_qparams ad_out = qpr(act, 0.025f, zlo + 4, zlo + 1, zlo + 200);
    int32_t ad = q8_builder_adaptive_avg_pool2d(b, "adaptive", av, 2, 2, &ad_out);
    int32_t f = q8_builder_flatten(b, "flatten", ad);
    q8_weights w4 = weights(16, 96, false, 0.004f, 0.004f);
    int32_t l1 = q8_builder_linear(b, "fc1", f, 16, &w4, qpr(act, 0.08f, zlo, zlo, zlo + 127),
                                   Q8_ACT_RELU6);
    q8_weights w5 = weights(12, 16, true, 0.005f, 0.01f);
    int32_t l2 = q8_builder_linear(b, "fc2", l1, 12, &w5, qp(act, 0.12f, zmid), Q8_ACT_NONE);
    q8_builder_requantize(b, "to_other", l2, qpr(other, 0.1f, zo, zo - 50, zo + 50),
                          Q8_ACT_NONE); /* unread */
    int32_t dq = q8_builder_dequantize(b, "dequant", l2);
    q8_weights w6 = weights(5, 12, true, 0.005f, 0.01f);
    q8_builder_output(b, q8_builder_linear_dynamic(b, "fc3", dq, 5, &w6, Q8_ACT_NONE));
}

/* Every float op. denom > 0: the convolutions' weights and biases dyadic (on a dyadic
 * input every float sum of a convolution is then exact, in any order; the other float
 * ops round in an order the format fixes), and linear_dynamic in place of linear_f32. */
static void float_demo(q8_builder *b, float denom)
{
    int32_t km = 8; /* weights k/denom, |k| <= 8 */
    int64_t xs[4] = {-1, 3, 12, 11};
    int32_t x = q8_builder_input(b, "x", Q8_F32, 4, xs);
    q8_conv2d_desc d1 = {8, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 1};
    int32_t c1 = q8_builder_conv2d_f32(b, "conv1", x, &d1, floats(8 * 27, -0.3f, 0.3f, km, denom),
                                       floats(8, -0.3f, 0.3f, km, denom), Q8_ACT_RELU);
    q8_pool2d_desc mp = {{3, 3}, {2, 2}, {1, 1}, {1, 1}, true, false, 0};
    int32_t p1 = q8_builder_max_pool2d_f32(b, "pool1", c1, &mp);
    q8_conv2d_desc d2 = {8, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 8};
    int32_t c2 = q8_builder_conv2d_f32(b, "dw", p1, &d2, floats(8 * 9, -0.5f, 0.5f, km, denom),
                                       NULL, Q8_ACT_NONE);
    int32_t h = q8_builder_hardswish_f32(b, "hswish", c2);
    q8_conv2d_desc d3 = {8, {3, 3}, {1, 1}, {2, 2}, {2, 2}, 2};
    int32_t c3 = q8_builder_conv2d_f32(b, "grouped", p1, &d3,
                                       floats(8 * 36, -0.3f, 0.3f, km, denom),
                                       floats(8, -0.3f, 0.3f, km, denom), Q8_ACT_RELU6);
    int32_t a = q8_builder_add_f32(b, "add", h, c3, Q8_ACT_RELU);
    int32_t mu = q8_builder_mul_f32(b, "mul", a, c3, Q8_ACT_NONE);
    int32_t parts[3] = {a, mu, p1};
    int32_t ct = q8_builder_cat_f32(b, "cat", parts, 3);
    int32_t cl = q8_builder_clamp_f32(b, "relu6", ct, Q8_ACT_RELU6);
    q8_pool2d_desc ap = {{3, 3}, {2, 2}, {1, 1}, {0, 0}, true, false, 0};
    int32_t av = q8_builder_avg_pool2d_f32(b, "avgpool", cl, &ap);
    q8_pool2d_desc ap2 = {{2, 2}, {1, 1}, {1, 0}, {0, 0}, false, true, 0};
    q8_builder_avg_pool2d_f32(b, "avgpool_pad", cl, &ap2); /* unread */
    int32_t ad = q8_builder_adaptive_avg_pool2d_f32(b, "adaptive", av, 2, 2);
    q8_builder_adaptive_avg_pool2d_f32(b, "global", av, 1, 1); /* unread */
    int32_t f = q8_builder_flatten(b, "flatten", ad);
    if (denom > 0) {
        /* dynamic quantization's tail: int8 linears on float data (a float linear would
         * sum inexact terms here, in an order the format leaves free) */
        q8_weights w1 = weights(16, 96, true, 0.005f, 0.01f);
        int32_t l1 = q8_builder_linear_dynamic(b, "fc1", f, 16, &w1, Q8_ACT_RELU);
        q8_weights w2 = weights(5, 16, true, 0.005f, 0.01f);
        q8_builder_output(b, q8_builder_linear_dynamic(b, "fc2", l1, 5, &w2, Q8_ACT_NONE));
        return;
    }
    int32_t l1 = q8_builder_linear_f32(b, "fc1", f, 16, floats(16 * 96, -0.2f, 0.2f, 0, 0),
                                       floats(16, -0.3f, 0.3f, 0, 0), Q8_ACT_RELU6);
    q8_builder_output(b, q8_builder_linear_f32(b, "fc2", l1, 5, floats(5 * 16, -0.3f, 0.3f, 0, 0),
                                               floats(5, -0.3f, 0.3f, 0, 0), Q8_ACT_NONE));
}

static int make_demo(const char *path, const char *kind)
{
    q8_builder *b = q8_builder_new();
    q8_builder_set_attr_text(b, "source_model", "q8_run demo");
    q8_builder_set_attr_text(b, "qconfig", kind);
    if (strcmp(kind, "float") == 0)
        float_demo(b, 0.0f);
    else if (strcmp(kind, "dynamic") == 0)
        float_demo(b, 64.0f);
    else
        quantized_demo(b, strcmp(kind, "i8") == 0 ? Q8_I8 : Q8_U8);
    q8_model *m = q8_builder_finish(b);
    if (!m || q8_model_save(m, path) != Q8_OK) {
        fprintf(stderr, "q8_run: %s\n", q8_last_error());
        q8_model_free(m);
        return 1;
    }
    q8_model_free(m);
    return 0;
}

/* ---- running ---- */

static hid_t native(q8_dtype dt)
{
    return dt == Q8_F32 ? H5T_NATIVE_FLOAT : dt == Q8_I8 ? H5T_NATIVE_INT8 : H5T_NATIVE_UINT8;
}

/* Reads dataset "input_<i>" checking it against the value's shape; returns the batch. */
static void *read_input(hid_t f, int32_t i, const q8_value_info *v, int64_t *batch)
{
    char name[32];
    snprintf(name, sizeof name, "input_%d", (int)i);
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) {
        fprintf(stderr, "q8_run: the input file has no dataset %s\n", name);
        return NULL;
    }
    hid_t space = H5Dget_space(ds);
    hsize_t dims[Q8_MAX_DIMS] = {0};
    int rank = H5Sget_simple_extent_ndims(space);
    void *data = NULL;
    bool ok = rank == v->ndim && rank <= Q8_MAX_DIMS;
    if (ok)
        H5Sget_simple_extent_dims(space, dims, NULL);
    size_t bytes = ok ? q8_dtype_size(v->dtype) * dims[0] : 0;
    for (int d = 1; ok && d < rank; d++) {
        ok = (int64_t)dims[d] == v->shape[d];
        bytes *= dims[d];
    }
    if (!ok || dims[0] < 1)
        fprintf(stderr, "q8_run: %s does not have the input's shape\n", name);
    else if (!(data = malloc(bytes)) ||
             H5Dread(ds, native(v->dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        fprintf(stderr, "q8_run: cannot read %s\n", name);
        free(data);
        data = NULL;
    }
    *batch = (int64_t)dims[0];
    H5Sclose(space);
    H5Dclose(ds);
    return data;
}

static int write_values(const q8_model *m, const char *path)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t g = f < 0 ? -1 : H5Gcreate2(f, "values", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = g < 0;
    for (int32_t id = 0; !rc && id < q8_model_n_values(m); id++) {
        q8_value_info v;
        q8_model_value(m, id, &v);
        hsize_t dims[Q8_MAX_DIMS];
        for (int32_t d = 0; d < v.ndim; d++)
            dims[d] = (hsize_t)v.shape[d];
        char name[32];
        snprintf(name, sizeof name, "%d", (int)id);
        hid_t space = H5Screate_simple(v.ndim, dims, NULL);
        hid_t ds = H5Dcreate2(g, name, native(v.dtype), space, H5P_DEFAULT, H5P_DEFAULT,
                              H5P_DEFAULT);
        rc = ds < 0 || H5Dwrite(ds, native(v.dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data) < 0;
        if (ds >= 0)
            H5Dclose(ds);
        H5Sclose(space);
    }
    if (g >= 0)
        H5Gclose(g);
    if (f < 0 || H5Fclose(f) < 0)
        rc = 1;
    if (rc)
        fprintf(stderr, "q8_run: cannot write %s\n", path);
    return rc;
}

static int run(const char *model_path, const char *input_path, const char *out_path)
{
    q8_model *m = q8_model_load(model_path);
    if (!m) {
        fprintf(stderr, "q8_run: %s\n", q8_last_error());
        return 1;
    }
    hid_t f = H5Fopen(input_path, H5F_ACC_RDONLY, H5P_DEFAULT);
    int32_t n_in = q8_model_n_inputs(m);
    void *inputs[64] = {NULL};
    int64_t batch = -1;
    int rc = f < 0 || n_in > 64;
    for (int32_t i = 0; !rc && i < n_in; i++) {
        q8_value_info v;
        int64_t b = 0;
        q8_model_value(m, q8_model_input_id(m, i), &v);
        inputs[i] = read_input(f, i, &v, &b);
        rc = !inputs[i] || (batch >= 0 && b != batch);
        batch = b;
    }
    if (f >= 0)
        H5Fclose(f);
    if (!rc && q8_model_run_values(m, (const void *const *)inputs, batch) != Q8_OK) {
        fprintf(stderr, "q8_run: %s\n", q8_last_error());
        rc = 1;
    }
    if (!rc)
        rc = write_values(m, out_path);
    for (int32_t i = 0; i < n_in && i < 64; i++)
        free(inputs[i]);
    q8_model_free(m);
    return rc;
}

int main(int argc, char **argv)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (argc == 4 && strcmp(argv[1], "--make-demo") == 0)
        return make_demo(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "--describe") == 0) {
        q8_model *m = q8_model_load(argv[2]);
        if (!m) {
            fprintf(stderr, "q8_run: %s\n", q8_last_error());
            return 1;
        }
        q8_model_describe(m, stdout);
        q8_model_free(m);
        return 0;
    }
    if (argc == 4)
        return run(argv[1], argv[2], argv[3]);
    fprintf(stderr, "usage: q8_run MODEL.h5 INPUT.h5 OUT.h5\n"
                    "       q8_run --make-demo MODEL.h5 u8|i8|float|dynamic\n"
                    "       q8_run --describe MODEL.h5\n");
    return 2;
}
