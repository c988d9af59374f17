/* test_q8_fused.c — conv2d's GEMM with the requantization fused into its epilogue
 * (q8_gemm_quads_rq_vnni) writes the same bytes as the plain sum requantized with
 * q8_rq_byte, at the same places, and nothing outside the planes it may use; the fused
 * plan of q8_model_run (conv2d -> 2x2/2 max_pool2d computed as one op) gives the bytes of
 * the unfused run. Links quantized/ and Check (tests/check_main.c provides main). */
#include <check.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "quantized/q8_impl.h"

#include <stdio.h>

Suite *make_suite(void);

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r)
{
    uint64_t z = (r->s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static int64_t rng_int(rng *r, int64_t lo, int64_t hi) /* [lo, hi] */
{
    return lo + (int64_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

enum { CANARY = 0xA5, GUARD = 64 };

/* One random chunk: m channels, K in kquads quads, `rows` grid rows of wp positions of
 * which ow are outputs, planes of `room` bytes (room >= rows * ow: later chunks' rows)
 * GUARD bytes apart. Every kernel must give want[] on the chunk's outputs and leave the
 * guards alone; the bytes of later rows may change (a later chunk rewrites them). */
static void check_chunk(rng *r, bool ties)
{
    int64_t m = rng_int(r, 1, 9), kquads = rng_int(r, 1, 24), kq4 = 4 * kquads;
    int64_t wp = rng_int(r, 8, 40), ow = rng_int(r, 1, wp), rows = rng_int(r, 1, 9);
    int64_t np = (rows * wp + Q8_COLS_STEP - 1) / Q8_COLS_STEP * Q8_COLS_STEP;
    int64_t room = rows * ow + (rng_int(r, 0, 1) ? rng_int(r, 1, 3) * ow : 0);
    int64_t ldo = room + GUARD;
    uint8_t *a = malloc((size_t)(kquads * np * 4));
    int8_t *w = malloc((size_t)(m * kq4));
    int32_t *bias = malloc((size_t)m * sizeof *bias);
    q8_rq_chan *chan = malloc((size_t)m * sizeof *chan);
    uint8_t *want = malloc((size_t)(m * ldo + GUARD)), *got = malloc((size_t)(m * ldo + GUARD));
    /* small operands make exact ties likely where m0 has many trailing zeros */
    int64_t amax = ties ? 3 : 255, wmax = ties ? 2 : 127;
    for (int64_t i = 0; i < kquads * np * 4; i++)
        a[i] = (uint8_t)rng_int(r, 0, amax);
    for (int64_t i = 0; i < m * kq4; i++)
        w[i] = (int8_t)rng_int(r, -wmax, wmax);
    bool u8 = rng_int(r, 0, 1);
    int32_t zp = u8 ? (int32_t)rng_int(r, 0, 255) : (int32_t)rng_int(r, -128, 127);
    int32_t lo = u8 ? (int32_t)rng_int(r, 0, zp) : (int32_t)rng_int(r, -128, zp);
    int32_t hi = u8 ? (int32_t)rng_int(r, zp, 255) : (int32_t)rng_int(r, zp, 127);
    for (int64_t o = 0; o < m; o++) {
        int32_t shift = ties ? (int32_t)rng_int(r, 32, 36) : (int32_t)rng_int(r, 32, 62);
        /* ties: m0 = 2^30 + j * 2^28, many trailing zero bits */
        int32_t m0 = ties ? (int32_t)((INT64_C(1) << 30) + rng_int(r, 0, 3) * (INT64_C(1) << 28))
                          : (int32_t)rng_int(r, INT64_C(1) << 30, (INT64_C(1) << 31) - 1);
        bias[o] = ties ? (int32_t)rng_int(r, -40, 40) : (int32_t)rng_int(r, -100000, 100000);
        int64_t bound = (bias[o] < 0 ? -bias[o] : bias[o]) + 255 * 128 * kq4;
        q8_rq_chan_init(&chan[o], m0, shift, zp, bound);
    }
    memset(want, CANARY, (size_t)(m * ldo + GUARD));
    for (int64_t o = 0; o < m; o++)
        for (int64_t p = 0; p < rows * wp; p++) {
            if (p % wp >= ow)
                continue;
            int64_t acc = bias[o];
            for (int64_t k = 0; k < kq4; k++)
                acc += (int64_t)w[o * kq4 + k] * a[(k / 4 * np + p) * 4 + k % 4];
            want[o * ldo + p / wp * ow + p % wp] =
                q8_rq_byte(acc, chan[o].m0, chan[o].shift, zp, lo, hi);
        }
    q8_rq_rows d = {.chan = chan, .zp = zp, .lo = lo, .hi = hi, .out = got, .ldo = ldo,
                    .room = room, .wp = wp, .ow = ow, .rows = rows};
    for (int kernel = 0; kernel < 3; kernel++) {
        if ((kernel == 1 && !q8_gemm_vnni_available()) ||
            (kernel == 2 && !q8_gemm_avx512_available()))
            continue;
        memset(got, CANARY, (size_t)(m * ldo + GUARD));
        if (kernel == 0)
            q8_gemm_quads_rq_reference(m, kquads, w, kq4, a, NULL, np, bias, &d);
        else if (kernel == 1)
            q8_gemm_quads_rq_vnni(m, kquads, w, kq4, a, NULL, np, bias, &d);
        else
            q8_gemm_quads_rq_avx512(m, kquads, w, kq4, a, NULL, np, bias, &d);
        for (int64_t o = 0; o < m; o++)
            for (int64_t i = 0; i < ldo; i++) {
                int64_t at = o * ldo + i;
                if (i >= rows * ow && i < room)
                    continue; /* a later chunk's rows */
                ck_assert_msg(got[at] == want[at],
                              "kernel %d m=%" PRId64 " kquads=%" PRId64 " wp=%" PRId64
                              " ow=%" PRId64 " rows=%" PRId64 " room=%" PRId64
                              ": channel %" PRId64 " byte %" PRId64 ": %d, want %d",
                              kernel, m, kquads, wp, ow, rows, room, o, i, got[at], want[at]);
            }
    }
    free(a), free(w), free(bias), free(chan), free(want), free(got);
}

START_TEST(fused_requantization_equals_the_requantized_sum_on_random_chunks)
{
    rng r = {7};
    for (int t = 0; t < 300; t++)
        check_chunk(&r, false);
}
END_TEST

START_TEST(fused_requantization_breaks_exact_ties_to_even)
{
    rng r = {8};
    for (int t = 0; t < 300; t++)
        check_chunk(&r, true);
}
END_TEST

START_TEST(rq_chan_skips_the_tie_test_only_where_no_tie_is_possible)
{
    q8_rq_chan c;
    /* m0 odd: v2 = 0; |acc| < 2^20 → v2(acc) <= 19 < shift - 1 = 32 */
    q8_rq_chan_init(&c, (INT32_C(1) << 30) + 1, 33, 5, (INT64_C(1) << 20) - 1);
    ck_assert(c.no_ties);
    ck_assert_int_eq(c.add, (INT64_C(1) << 32) + 5 * (INT64_C(1) << 33));
    /* m0 = 2^30 and acc = 4: 2^32 = 2^(shift-1), an exact tie */
    q8_rq_chan_init(&c, INT32_C(1) << 30, 33, 0, 4);
    ck_assert(!c.no_ties);
    ck_assert_int_eq(q8_rq_byte(4, INT32_C(1) << 30, 33, 0, 0, 255), 0);  /* 0.5 -> 0 */
    ck_assert_int_eq(q8_rq_byte(12, INT32_C(1) << 30, 33, 0, 0, 255), 2); /* 1.5 -> 2 */
    /* beyond shift 54 the zero point does not ride along in 64 bits */
    q8_rq_chan_init(&c, (INT32_C(1) << 30) + 1, 55, 0, 1);
    ck_assert(!c.no_ties);
}
END_TEST

/* ---- conv2d -> max_pool2d: the pooled requantization and the fused plan ---- */

/* One random channel of int32 results (prows pairs of rows of ld, 2*pw <= ld): both
 * kernels give q8_rq_byte of each window's max, and the AVX2 one stores nothing beyond
 * `room`. */
static void check_pool_rq(rng *r, bool ties)
{
    int64_t pw = rng_int(r, 1, 20), ld = 2 * pw + rng_int(r, 0, 5), prows = rng_int(r, 1, 5);
    int64_t n = 2 * prows * ld + 16, room = prows * pw + (rng_int(r, 0, 1) ? pw : 0);
    int32_t *acc = malloc((size_t)n * sizeof *acc);
    int64_t amax = ties ? 40 : 2000000;
    for (int64_t i = 0; i < n; i++)
        acc[i] = (int32_t)rng_int(r, -amax, amax);
    bool u8 = rng_int(r, 0, 1);
    int32_t zp = u8 ? (int32_t)rng_int(r, 0, 255) : (int32_t)rng_int(r, -128, 127);
    int32_t lo = u8 ? (int32_t)rng_int(r, 0, zp) : (int32_t)rng_int(r, -128, zp);
    int32_t hi = u8 ? (int32_t)rng_int(r, zp, 255) : (int32_t)rng_int(r, zp, 127);
    int32_t shift = ties ? (int32_t)rng_int(r, 32, 36) : (int32_t)rng_int(r, 32, 62);
    int32_t m0 = ties ? (int32_t)((INT64_C(1) << 30) + rng_int(r, 0, 3) * (INT64_C(1) << 28))
                      : (int32_t)rng_int(r, INT64_C(1) << 30, (INT64_C(1) << 31) - 1);
    q8_rq_chan chan;
    q8_rq_chan_init(&chan, m0, shift, zp, amax);
    uint8_t *want = malloc((size_t)(room + GUARD)), *got = malloc((size_t)(room + GUARD));
    memset(want, CANARY, (size_t)(room + GUARD));
    for (int64_t i = 0; i < prows; i++)
        for (int64_t j = 0; j < pw; j++) {
            int32_t best = INT32_MIN;
            for (int64_t a = 0; a < 2; a++)
                for (int64_t b = 0; b < 2; b++) {
                    int32_t v = acc[(2 * i + a) * ld + 2 * j + b];
                    best = v > best ? v : best;
                }
            want[i * pw + j] = q8_rq_byte(best, m0, shift, zp, lo, hi);
        }
    for (int kernel = 0; kernel < 2; kernel++) {
        if (kernel == 1 && !q8_gemm_avx2_available())
            continue;
        memset(got, CANARY, (size_t)(room + GUARD));
        if (kernel == 0)
            q8_pool_rq_reference(acc, ld, prows, pw, m0, shift, zp, lo, hi, got);
        else
            q8_pool_rq_avx2(acc, ld, prows, pw, &chan, zp, lo, hi, got, room);
        for (int64_t i = 0; i < room + GUARD; i++) {
            if (i >= prows * pw && i < room)
                continue; /* the next rows' bytes, rewritten by their own call */
            ck_assert_msg(got[i] == want[i],
                          "kernel %d pw=%" PRId64 " ld=%" PRId64 " prows=%" PRId64
                          " room=%" PRId64 ": byte %" PRId64 ": %d, want %d",
                          kernel, pw, ld, prows, room, i, got[i], want[i]);
        }
    }
    free(acc), free(want), free(got);
}

/* A kernel row's taps as one quad per position: the AVX2 builder's bytes are the
 * reference's, for every kw (1..4) and dilation (1..3; beyond its shuffle's reach the
 * reference runs). */
START_TEST(taps_quads_match_the_reference)
{
    rng r = {12};
    uint8_t p[200], want[4 * 160], got[4 * 160];
    for (int t = 0; t < 200; t++) {
        int64_t n = rng_int(&r, 0, 160), kw = rng_int(&r, 1, 4), dw = rng_int(&r, 1, 3);
        for (int i = 0; i < 200; i++)
            p[i] = (uint8_t)rng_int(&r, 0, 255);
        memset(want, CANARY, sizeof want);
        memset(got, CANARY, sizeof got);
        q8_taps_quads_reference(p, n, kw, dw, want);
        q8_taps_quads_avx2(p, n, kw, dw, got);
        ck_assert_msg(memcmp(want, got, sizeof want) == 0,
                      "n=%" PRId64 " kw=%" PRId64 " dw=%" PRId64, n, kw, dw);
    }
}
END_TEST

START_TEST(pooled_requantization_is_the_requantized_max_of_each_window)
{
    rng r = {9};
    for (int t = 0; t < 300; t++)
        check_pool_rq(&r, t % 2 == 1);
}
END_TEST

static float rng_float(rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)(rng_next(r) >> 40) / (float)(UINT64_C(1) << 24);
}

/* quantize -> conv2d (stride 1: the grid path) -> max_pool2d (pool) -> dequantize, random
 * sizes, qparams (multipliers from 2^-15 to about 2, so that some shifts fall outside
 * the 32-bit requantization) and weights. */
static q8_model *conv_pool_model(rng *r, const q8_pool2d_desc *pool, int64_t *item_in,
                                 int32_t *conv_out, int32_t *pool_out)
{
    int64_t c = rng_int(r, 1, 9), o = rng_int(r, 1, 9), k = rng_int(r, 1, 3);
    int64_t dil = rng_int(r, 1, 2), pad = rng_int(r, 0, k / 2 * dil);
    int64_t h = rng_int(r, (k - 1) * dil + 2, 19) | 1, w = rng_int(r, (k - 1) * dil + 2, 23);
    int64_t shape[4] = {-1, c, h, w};
    *item_in = c * h * w;
    q8_dtype dt_in = rng_int(r, 0, 1) ? Q8_U8 : Q8_I8, dt_out = rng_int(r, 0, 1) ? Q8_U8 : Q8_I8;
    float s_in = rng_float(r, 0.005f, 0.05f), s_w = rng_float(r, 0.002f, 0.03f);
    float s_out = rng_int(r, 0, 2) ? rng_float(r, 0.01f, 0.5f) : s_in * s_w * rng_float(r, 0.6f, 3);
    q8_qparams qin = {dt_in, s_in, dt_in == Q8_U8 ? (int32_t)rng_int(r, 0, 255)
                                                  : (int32_t)rng_int(r, -128, 127), 0, 0};
    q8_qparams qout = {dt_out, s_out, dt_out == Q8_U8 ? (int32_t)rng_int(r, 0, 255)
                                                      : (int32_t)rng_int(r, -128, 127), 0, 0};
    int8_t *wd = malloc((size_t)(o * c * k * k));
    float *scale = malloc((size_t)o * sizeof *scale), *bias = malloc((size_t)o * sizeof *bias);
    for (int64_t i = 0; i < o * c * k * k; i++)
        wd[i] = (int8_t)rng_int(r, -127, 127);
    for (int64_t i = 0; i < o; i++) {
        scale[i] = s_w * rng_float(r, 0.5f, 1.5f);
        bias[i] = rng_float(r, -1, 1);
    }
    q8_weights wts = {wd, scale, rng_int(r, 0, 1) ? o : 1, rng_int(r, 0, 1) ? bias : NULL};
    q8_conv2d_desc cd = {o, {k, k}, {1, 1}, {pad, pad}, {dil, dil}, 1};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_quantize(b, "quant", q8_builder_input(b, "x", Q8_F32, 4, shape), qin);
    *conv_out = q8_builder_conv2d(b, "conv", x, &cd, &wts, qout,
                                  rng_int(r, 0, 1) ? Q8_ACT_RELU : Q8_ACT_NONE);
    *pool_out = q8_builder_max_pool2d(b, "pool", *conv_out, pool);
    q8_builder_output(b, q8_builder_dequantize(b, "dequant", *pool_out));
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    free(wd), free(scale), free(bias);
    return m;
}

static size_t value_bytes(const q8_model *m, int32_t id)
{
    q8_value_info v;
    ck_assert_int_eq(q8_model_value(m, id, &v), Q8_OK);
    size_t n = q8_dtype_size(v.dtype);
    for (int32_t d = 0; d < v.ndim; d++)
        n *= (size_t)v.shape[d];
    return n;
}

static const void *value_data(const q8_model *m, int32_t id)
{
    q8_value_info v;
    ck_assert_int_eq(q8_model_value(m, id, &v), Q8_OK);
    return v.data;
}

/* q8_model_run (fused) and q8_model_run_values (every value) on the same inputs: the same
 * output floats and pooled bytes; the conv's own output is written by the second only. */
static void check_plan(rng *r, const char *kernel)
{
    const q8_pool2d_desc pool = {{2, 2}, {2, 2}, {0, 0}, {1, 1}, false, false, 0};
    int64_t item = 0;
    int32_t conv = -1, pooled = -1;
    q8_model *m = conv_pool_model(r, &pool, &item, &conv, &pooled);
    int64_t out_item = 1, oshape[Q8_MAX_DIMS];
    for (int32_t d = 1; d < q8_model_output_shape(m, oshape); d++)
        out_item *= oshape[d];
    for (int64_t batch = 1; batch <= 17; batch += batch == 1 ? 2 : 14) { /* 1, 3, 17 */
        float *x = malloc((size_t)(batch * item) * sizeof *x);
        float *y = malloc((size_t)(batch * out_item) * sizeof *y);
        for (int64_t i = 0; i < batch * item; i++)
            x[i] = rng_float(r, -2, 2);
        ck_assert_int_eq(q8_model_run(m, x, batch, y), Q8_OK);
        ck_assert_msg(value_data(m, conv) == NULL, "%s: the plan did not fuse", kernel);
        size_t nb = value_bytes(m, pooled);
        uint8_t *fused = malloc(nb);
        memcpy(fused, value_data(m, pooled), nb);
        const void *in[1] = {x};
        ck_assert_int_eq(q8_model_run_values(m, in, batch), Q8_OK);
        ck_assert(value_data(m, conv) != NULL);
        ck_assert_msg(memcmp(fused, value_data(m, pooled), nb) == 0,
                      "%s, batch %" PRId64 ": the fused pool differs", kernel, batch);
        ck_assert(memcmp(y, value_data(m, q8_model_output_id(m, 0)),
                         (size_t)(batch * out_item) * sizeof *y) == 0);
        free(x), free(y), free(fused);
    }
    q8_model_free(m);
}

/* Each kernel choice (the environment is read when a model is prepared). */
START_TEST(fused_conv_pool_plan_gives_the_unfused_bytes)
{
    const char *kernels[] = {"reference", "avx2", NULL};
    rng r = {10};
    for (int k = 0; k < 3; k++) {
        if (kernels[k])
            setenv("CQAT_Q8_GEMM", kernels[k], 1);
        else
            unsetenv("CQAT_Q8_GEMM");
        for (int t = 0; t < 10; t++)
            check_plan(&r, kernels[k] ? kernels[k] : "default");
    }
    unsetenv("CQAT_Q8_GEMM");
}
END_TEST

/* A pool other than 2x2/2 (here 3x3/2) keeps the conv's output: nothing is fused. */
START_TEST(conv_pool_plan_needs_a_2x2_stride_2_pool)
{
    const q8_pool2d_desc pool = {{2, 2}, {1, 1}, {0, 0}, {1, 1}, false, false, 0};
    rng r = {11};
    int64_t item = 0;
    int32_t conv = -1, pooled = -1;
    q8_model *m = conv_pool_model(&r, &pool, &item, &conv, &pooled);
    int64_t oshape[Q8_MAX_DIMS], out_item = 1;
    for (int32_t d = 1; d < q8_model_output_shape(m, oshape); d++)
        out_item *= oshape[d];
    float *x = calloc((size_t)(3 * item), sizeof *x), *y = malloc((size_t)(3 * out_item) * 4);
    ck_assert_int_eq(q8_model_run(m, x, 3, y), Q8_OK);
    ck_assert(value_data(m, conv) != NULL);
    free(x), free(y);
    q8_model_free(m);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("q8_fused");
    TCase *tc = tcase_create("fused");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, fused_requantization_equals_the_requantized_sum_on_random_chunks);
    tcase_add_test(tc, fused_requantization_breaks_exact_ties_to_even);
    tcase_add_test(tc, rq_chan_skips_the_tie_test_only_where_no_tie_is_possible);
    tcase_add_test(tc, pooled_requantization_is_the_requantized_max_of_each_window);
    tcase_add_test(tc, taps_quads_match_the_reference);
    tcase_add_test(tc, fused_conv_pool_plan_gives_the_unfused_bytes);
    tcase_add_test(tc, conv_pool_plan_needs_a_2x2_stride_2_pool);
    suite_add_tcase(s, tc);
    return s;
}
