/* test_quantized.c — the integer runtime (quantized/): requantization arithmetic, the
 * int8 GEMM kernels, every op against a reference computed here from its formula, the
 * builder, save/load, and malformed files crafted with the HDF5 C API.
 *
 * Links only quantized/ and Check (the runtime stands alone). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <check.h>
#include <float.h>
#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "quantized/builder.h"
#include "quantized/q8.h"
#include "quantized/q8_impl.h"

Suite *make_suite(void);

/* ---------------------------------------------------------------------------------
 * helpers
 * ------------------------------------------------------------------------------- */

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

static float rng_float(rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(rng_next(r) >> 11) / 9007199254740992.0);
}

static void fill_bytes(rng *r, uint8_t *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = (uint8_t)rng_next(r);
}

static void fill_weights(rng *r, int8_t *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = (int8_t)rng_int(r, -128, 127);
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

/* The integer stored in a u8/i8 byte. */
static int32_t qv(const uint8_t *p, int64_t i, q8_dtype dt)
{
    return dt == Q8_U8 ? p[i] : (int8_t)p[i];
}

#define CK_Q8(call) ck_assert_msg((call) == Q8_OK, "%s failed: %s", #call, q8_last_error())

/* Expects `m == NULL` from a failed build/load whose message contains `needle`. */
#define CK_FAILS_WITH(m, status, needle)                                                  \
    do {                                                                                  \
        ck_assert_msg((m) == NULL, "expected a failure mentioning \"%s\"", (needle));     \
        ck_assert_msg(strstr(q8_last_error(), (needle)) != NULL,                          \
                      "message \"%s\" lacks \"%s\"", q8_last_error(), (needle));          \
        ck_assert_msg(q8_last_status() == (status), "status %s, expected %s (%s)",        \
                      q8_status_name(q8_last_status()), q8_status_name(status),           \
                      q8_last_error());                                                   \
    } while (0)

/* Runs a finished single-input model on `input` and returns its output value. */
static const void *run1(q8_model *m, const void *input, int64_t batch, q8_value_info *out)
{
    const void *in[1] = {input};
    CK_Q8(q8_model_run_values(m, in, batch));
    CK_Q8(q8_model_value(m, q8_model_output_id(m, 0), out));
    return out->data;
}

static int32_t find_value(const q8_model *m, const char *name)
{
    for (int32_t i = 0; i < q8_model_n_values(m); i++) {
        q8_value_info v;
        if (q8_model_value(m, i, &v) == Q8_OK && strcmp(v.name, name) == 0)
            return i;
    }
    ck_abort_msg("no value named %s", name);
    return -1;
}

static char *make_tmpdir(void)
{
    static char dir[64];
    snprintf(dir, sizeof dir, "/tmp/q8test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    return dir;
}

__extension__ typedef __int128 i128;

/* round_half_even(x * m0 / 2^shift) in exact 128-bit integers (not long double, whose
 * 64-bit mantissa valgrind does not emulate). */
static int64_t exact_rq(int64_t x, int32_t m0, int32_t shift)
{
    i128 v = (i128)x * m0;
    if (shift == 0)
        return (int64_t)v;
    const i128 p = (i128)1 << shift, half = p / 2;
    i128 f = v / p; /* truncates toward zero: make it the floor */
    if (v % p < 0)
        f -= 1;
    i128 rem = v - f * p; /* in [0, p) */
    if (rem > half || (rem == half && (f & 1)))
        f++;
    return (int64_t)f;
}

/* ---------------------------------------------------------------------------------
 * requantization arithmetic
 * ------------------------------------------------------------------------------- */

/* TFLite's old double rounding (SaturatingRoundingDoublingHighMul, then
 * RoundingDivideByPOT rounding half away from zero), here only to show the trap. */
static int64_t tflite_double_rounding(int32_t x, int32_t m0, int exponent_shift)
{
    int64_t ab = (int64_t)x * m0;
    int64_t nudge = ab >= 0 ? (INT64_C(1) << 30) : 1 - (INT64_C(1) << 30);
    int64_t high = (ab + nudge) / (INT64_C(1) << 31);
    int64_t mask = (INT64_C(1) << exponent_shift) - 1, rem = high & mask;
    int64_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
    return (high >> exponent_shift) + (rem > threshold ? 1 : 0);
}

START_TEST(requantize_single_rounding_avoids_the_double_rounding_golden_case)
{
    /* c_codebases_study §2.9: x = 7984, M0 = 1583594044, shift -9 (TFLite) is
     * 7984 * M0 / 2^40 = 11.499...: one rounding gives 11, rounding twice gives 12. */
    ck_assert_int_eq(q8_requantize(7984, 1583594044, 31 + 9), 11);
    ck_assert_int_eq(tflite_double_rounding(7984, 1583594044, 9), 12);
    ck_assert_int_eq(q8_requantize(-7984, 1583594044, 40), -11);
}
END_TEST

START_TEST(requantize_breaks_exact_ties_to_even)
{
    /* M = 2^30 / 2^31 = 0.5: x/2 */
    const int64_t x[] = {1, 3, 5, 7, -1, -3, -5, -7, 2, -2};
    const int64_t want[] = {0, 2, 2, 4, 0, -2, -2, -4, 1, -1};
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
        ck_assert_int_eq(q8_requantize(x[i], 1 << 30, 31), want[i]);
    /* 2.5 and 3.5 through a multiplier of 0.625 * 2^-2: 4 * 0.625 / 1 = 2.5 -> 2 */
    ck_assert_int_eq(q8_requantize(4, 1342177280, 31), 2);     /* 2.5 -> 2 */
    ck_assert_int_eq(q8_requantize(-4, 1342177280, 31), -2);   /* -2.5 -> -2 */
    ck_assert_int_eq(q8_requantize(12, 1342177280, 32), 4);    /* 3.75 -> 4 */
    ck_assert_int_eq(q8_requantize(-12, 1342177280, 32), -4);  /* -3.75 -> -4 */
}
END_TEST

START_TEST(requantize_handles_shift_zero_and_large_shifts)
{
    ck_assert_int_eq(q8_requantize(-123, 1 << 30, 0), -123 * (INT64_C(1) << 30));
    /* 2^62 / 2^63 = 0.5 -> 0 (even); / 2^62 = 1 */
    ck_assert_int_eq(q8_requantize(INT64_C(1) << 32, 1 << 30, 63), 0);
    ck_assert_int_eq(q8_requantize(INT64_C(1) << 32, 1 << 30, 62), 1);
    ck_assert_int_eq(q8_requantize(-(INT64_C(1) << 32), 1 << 30, 63), 0);
    ck_assert_int_eq(q8_requantize(-(INT64_C(1) << 32), 1 << 30, 62), -1);
    /* just above and at a half at shift 62 */
    ck_assert_int_eq(q8_requantize((INT64_C(1) << 31) + 1, 1 << 30, 62), 1);
    ck_assert_int_eq(q8_requantize(INT64_C(1) << 31, 1 << 30, 62), 0);
    ck_assert_int_eq(q8_requantize(-(INT64_C(1) << 31) - 1, 1 << 30, 62), -1);
    ck_assert_int_eq(q8_requantize(INT32_MAX, INT32_MAX, 63), 0);
    ck_assert_int_eq(q8_requantize(INT32_MIN, INT32_MAX, 61), -2); /* -1.99999999953 */
    ck_assert_int_eq(q8_requantize(INT32_MIN, INT32_MAX, 62), -1); /* -0.99999999977 */
}
END_TEST

START_TEST(requantize_equals_exact_rounding_on_random_inputs)
{
    rng r = {1};
    for (int i = 0; i < 200000; i++) {
        int64_t x = rng_int(&r, INT32_MIN, INT32_MAX) >> rng_int(&r, 0, 31);
        int32_t m0 = (int32_t)rng_int(&r, INT64_C(1) << 30, INT32_MAX);
        int32_t shift = (int32_t)rng_int(&r, 0, 63);
        if (i % 4 == 0) /* land exactly on ties: x*m0 = (2k+1) * 2^(shift-1) */
            shift = (int32_t)rng_int(&r, 1, 40), m0 = 1 << 30, x = (x | 1) * 2;
        ck_assert_msg(q8_requantize(x, m0, shift) == exact_rq(x, m0, shift),
                      "x=%" PRId64 " m0=%d shift=%d: %" PRId64 " vs exact %" PRId64, x, m0, shift,
                      q8_requantize(x, m0, shift), exact_rq(x, m0, shift));
    }
}
END_TEST

START_TEST(rq_div_is_one_exact_half_even_rounding_of_the_quotient)
{
    rng r = {2};
    for (int i = 0; i < 200000; i++) {
        int64_t x = rng_int(&r, -(INT64_C(1) << 30), INT64_C(1) << 30) >> rng_int(&r, 0, 28);
        int32_t m0 = (int32_t)rng_int(&r, INT64_C(1) << 30, INT32_MAX);
        int32_t shift = (int32_t)rng_int(&r, 0, 63);
        int64_t d = rng_int(&r, 1, i % 2 ? 9 : 1 << 22);
        if (i % 3 == 0) /* the pools' usual case: equal qparams, M = 1 */
            m0 = 1 << 30, shift = 30;
        /* exact: floor division of x*m0 by d*2^shift in 128 bits, then the half rule */
        i128 num = (i128)x * m0, den = (i128)d << shift;
        i128 fl = num / den - ((num % den != 0) && (num < 0));
        i128 twice_rem = 2 * (num - fl * den);
        int64_t q = (int64_t)fl + (twice_rem > den || (twice_rem == den && ((int64_t)fl & 1)));
        ck_assert_msg(q8_rq_div(x, m0, shift, d) == q,
                      "x=%" PRId64 " m0=%d shift=%d d=%" PRId64 ": %" PRId64 " vs %" PRId64, x, m0,
                      shift, d, q8_rq_div(x, m0, shift, d), q);
    }
    /* the mean of equal qparams: 9/6 = 1.5 -> 2, 15/6 = 2.5 -> 2, -9/6 -> -2 */
    ck_assert_int_eq(q8_rq_div(9, 1 << 30, 30, 6), 2);
    ck_assert_int_eq(q8_rq_div(15, 1 << 30, 30, 6), 2);
    ck_assert_int_eq(q8_rq_div(-9, 1 << 30, 30, 6), -2);
    ck_assert_int_eq(q8_rq_div(3, 1 << 30, 30, 6), 0);
    ck_assert_int_eq(q8_rq_div(4, 1 << 30, 30, 6), 1);
}
END_TEST

START_TEST(multiplier_below_one_is_normalized_into_2p30_2p31)
{
    int32_t m0 = 0, sh = 0;
    CK_Q8(q8_multiplier_from_real(0.5, &m0, &sh));
    ck_assert_int_eq(m0, 1 << 30);
    ck_assert_int_eq(sh, 31);
    CK_Q8(q8_multiplier_from_real(0.75, &m0, &sh));
    ck_assert_int_eq(m0, 1610612736);
    ck_assert_int_eq(sh, 31);
    CK_Q8(q8_multiplier_from_real(0.001, &m0, &sh));
    ck_assert_int_eq(sh, 31 + 9); /* 0.001 = 0.512 * 2^-9 */
    ck_assert_int_eq(m0, (int32_t)nearbyint(0.512 * 2147483648.0));
}
END_TEST

START_TEST(multiplier_at_least_one_uses_small_shifts)
{
    int32_t m0 = 0, sh = 0;
    CK_Q8(q8_multiplier_from_real(1.0, &m0, &sh));
    ck_assert_int_eq(m0, 1 << 30);
    ck_assert_int_eq(sh, 30);
    CK_Q8(q8_multiplier_from_real(3.5, &m0, &sh));
    ck_assert_int_eq(m0, 1879048192); /* 0.875 * 2^31 */
    ck_assert_int_eq(sh, 29);
    CK_Q8(q8_multiplier_from_real(2147483000.0, &m0, &sh));
    ck_assert_int_eq(sh, 0);
    ck_assert_int_eq(m0, 2147483000);
    ck_assert_int_eq(q8_multiplier_from_real(2147483648.0, &m0, &sh), Q8_ERR_NUMERIC);
}
END_TEST

START_TEST(multiplier_tiny_underflows_to_zero)
{
    int32_t m0 = -1, sh = -1;
    CK_Q8(q8_multiplier_from_real(ldexp(1.0, -33), &m0, &sh));
    ck_assert_int_eq(m0, 1 << 30);
    ck_assert_int_eq(sh, 63);
    CK_Q8(q8_multiplier_from_real(ldexp(1.0, -40), &m0, &sh));
    ck_assert_int_eq(m0, 0);
    ck_assert_int_eq(sh, 0);
    /* no int32 accumulator reaches 0.5 at 2^-33 */
    ck_assert_int_eq(q8_requantize(INT32_MIN, 1 << 30, 63), 0);
}
END_TEST

START_TEST(multiplier_rounding_up_to_2p31_renormalizes)
{
    int32_t m0 = 0, sh = 0;
    CK_Q8(q8_multiplier_from_real(1.0 - ldexp(1.0, -40), &m0, &sh));
    ck_assert_int_eq(m0, 1 << 30);
    ck_assert_int_eq(sh, 30);
}
END_TEST

START_TEST(multiplier_relative_error_is_at_most_2m31)
{
    rng r = {3};
    for (int i = 0; i < 100000; i++) {
        double real = ldexp(1.0 + (double)(rng_next(&r) >> 12) / 4503599627370496.0,
                            (int)rng_int(&r, -32, 30));
        int32_t m0 = 0, sh = 0;
        CK_Q8(q8_multiplier_from_real(real, &m0, &sh));
        ck_assert_int_ge(m0, 1 << 30);
        ck_assert(sh >= 0 && sh <= 63);
        double err = fabs(ldexp((double)m0, -sh) - real) / real;
        ck_assert_msg(err <= ldexp(1.0, -31), "M=%.17g: error %g", real, err);
    }
}
END_TEST

START_TEST(multiplier_rejects_zero_negative_and_nonfinite)
{
    int32_t m0 = 0, sh = 0;
    ck_assert_int_eq(q8_multiplier_from_real(0.0, &m0, &sh), Q8_ERR_NUMERIC);
    ck_assert_int_eq(q8_multiplier_from_real(-0.5, &m0, &sh), Q8_ERR_NUMERIC);
    ck_assert_int_eq(q8_multiplier_from_real(NAN, &m0, &sh), Q8_ERR_NUMERIC);
    ck_assert_int_eq(q8_multiplier_from_real(INFINITY, &m0, &sh), Q8_ERR_NUMERIC);
    ck_assert_ptr_nonnull(strstr(q8_last_error(), "finite"));
}
END_TEST

START_TEST(quantize_value_follows_pytorch_quantize_val)
{
    /* scale 0.5 (inv 2): x*inv rounds half to even, then the zero point is added */
    ck_assert_int_eq(q8_quantize_value(0.25f, 0.5f, 10, Q8_U8), 10);  /* 0.5 -> 0 */
    ck_assert_int_eq(q8_quantize_value(0.75f, 0.5f, 10, Q8_U8), 12);  /* 1.5 -> 2 */
    ck_assert_int_eq(q8_quantize_value(-0.25f, 0.5f, 10, Q8_U8), 10); /* -0.5 -> -0 */
    ck_assert_int_eq(q8_quantize_value(-0.75f, 0.5f, 10, Q8_U8), 8);  /* -1.5 -> -2 */
    ck_assert_int_eq(q8_quantize_value(1000.0f, 0.5f, 10, Q8_U8), 255);
    ck_assert_int_eq(q8_quantize_value(-1000.0f, 0.5f, 10, Q8_U8), 0);
    ck_assert_int_eq(q8_quantize_value(INFINITY, 0.5f, 10, Q8_U8), 255);
    ck_assert_int_eq(q8_quantize_value(-INFINITY, 0.5f, -3, Q8_I8), -128);
    ck_assert_int_eq(q8_quantize_value(NAN, 0.5f, -3, Q8_I8), -3);
    ck_assert_int_eq(q8_quantize_value(63.0f, 0.5f, 0, Q8_I8), 126);
    ck_assert_int_eq(q8_quantize_value(64.0f, 0.5f, 0, Q8_I8), 127);
    /* the float reciprocal, not a division: 1/0.1f is 10.0f after rounding, 0.35f*10 =
     * 3.5000002 -> 4 (a division 0.35f/0.1f gives 3.4999998 -> 3) */
    ck_assert_int_eq(q8_quantize_value(0.35f, 0.1f, 0, Q8_U8), 4);
}
END_TEST

START_TEST(bias_quantizes_half_even_and_refuses_int32_overflow)
{
    const float bias[3] = {0.75f, -0.75f, 1.25f}, sw[3] = {1.0f, 1.0f, 1.0f};
    int32_t out[3];
    CK_Q8(q8_quantize_bias(bias, 3, 0.5f, sw, 3, out));
    ck_assert_int_eq(out[0], 2);  /* 1.5 -> 2 */
    ck_assert_int_eq(out[1], -2); /* -1.5 -> -2 */
    ck_assert_int_eq(out[2], 2);  /* 2.5 -> 2 */
    const float big[1] = {3000.0f}, tiny[1] = {1e-3f};
    ck_assert_int_eq(q8_quantize_bias(big, 1, 1e-3f, tiny, 1, out), Q8_ERR_NUMERIC);
    ck_assert_ptr_nonnull(strstr(q8_last_error(), "bias[0] = 3000"));
    ck_assert_ptr_nonnull(strstr(q8_last_error(), "outside int32"));
}
END_TEST

START_TEST(dynamic_qparams_match_choose_quantization_params)
{
    float s = 0;
    int32_t zp = -1;
    q8_choose_qparams_dynamic(-1.0f, 3.0f, true, &s, &zp); /* range 0..127 */
    ck_assert_float_eq(s, (float)(4.0 / 127.0));
    ck_assert_int_eq(zp, 32); /* 31.75 */
    q8_choose_qparams_dynamic(0.0f, 0.0f, true, &s, &zp);
    ck_assert_float_eq(s, 0.1f);
    ck_assert_int_eq(zp, 0);
    q8_choose_qparams_dynamic(2.0f, 5.0f, true, &s, &zp); /* the range is widened to 0 */
    ck_assert_float_eq(s, (float)(5.0 / 127.0));
    ck_assert_int_eq(zp, 0);
    q8_choose_qparams_dynamic(-5.0f, -1.0f, true, &s, &zp);
    ck_assert_int_eq(zp, 127);
    q8_choose_qparams_dynamic(0.0f, 1e-4f, true, &s, &zp); /* below SMALL_SCALE_THRESHOLD */
    ck_assert_float_eq(s, 6.1e-5f);
    ck_assert_int_eq(zp, 0);
    q8_choose_qparams_dynamic(-1.0f, 1.0f, false, &s, &zp); /* 127.5 -> 128 */
    ck_assert_float_eq(s, (float)(2.0 / 255.0));
    ck_assert_int_eq(zp, 128);
}
END_TEST

START_TEST(fused_activation_bounds_come_from_the_output_qparams)
{
    int32_t lo = 0, hi = 0;
    q8_act_bounds(Q8_ACT_NONE, qp(Q8_U8, 0.1f, 20), &lo, &hi);
    ck_assert(lo == 0 && hi == 255);
    q8_act_bounds(Q8_ACT_RELU, qp(Q8_U8, 0.1f, 20), &lo, &hi);
    ck_assert(lo == 20 && hi == 255);
    q8_act_bounds(Q8_ACT_RELU6, qp(Q8_U8, 0.1f, 20), &lo, &hi);
    ck_assert(lo == 20 && hi == 80);
    q8_act_bounds(Q8_ACT_RELU6, qp(Q8_I8, 0.01f, -100), &lo, &hi);
    ck_assert(lo == -100 && hi == 127); /* quantize(6) = 500 saturates */
}
END_TEST

/* ---------------------------------------------------------------------------------
 * int8 GEMM
 * ------------------------------------------------------------------------------- */

static int16_t *pack_rows(const int8_t *w, int64_t n, int64_t k, int64_t kp)
{
    int16_t *p = calloc((size_t)(n * kp), sizeof *p);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < k; i++)
            p[j * kp + i] = w[j * k + i];
    return p;
}

START_TEST(gemm_avx2_equals_reference_on_random_shapes)
{
    if (!q8_gemm_avx2_available()) {
        fprintf(stderr, "gemm_avx2_equals_reference: no AVX2 on this CPU, skipped\n");
        return;
    }
    rng r = {4};
    for (int t = 0; t < 60; t++) {
        int64_t m = rng_int(&r, 1, 37), n = rng_int(&r, 1, 23), k = rng_int(&r, 1, 300);
        int64_t kp = q8_gemm_kp(k), lda = kp + rng_int(&r, 0, 3) * 16;
        uint8_t *a = calloc((size_t)(m * lda), 1);
        int8_t *w = malloc((size_t)(n * k));
        int32_t *bias = malloc((size_t)n * sizeof *bias);
        int32_t *c1 = malloc((size_t)(m * n) * sizeof *c1), *c2 = malloc((size_t)(m * n) * 4);
        for (int64_t i = 0; i < m; i++)
            fill_bytes(&r, a + i * lda, k);
        fill_weights(&r, w, n * k);
        for (int64_t j = 0; j < n; j++)
            bias[j] = (int32_t)rng_int(&r, -100000, 100000);
        int16_t *b = pack_rows(w, n, k, kp);
        const int32_t *bp = t % 3 == 0 ? NULL : bias;
        q8_gemm_reference(m, n, kp, a, lda, b, bp, c1, n, 1);
        q8_gemm_avx2(m, n, kp, a, lda, b, bp, c2, n, 1);
        for (int64_t i = 0; i < m * n; i++)
            ck_assert_msg(c1[i] == c2[i], "m=%" PRId64 " n=%" PRId64 " k=%" PRId64 " at %" PRId64
                          ": %d vs %d", m, n, k, i, c1[i], c2[i]);
        /* the reference is the plain sum */
        int64_t i0 = rng_int(&r, 0, m - 1), j0 = rng_int(&r, 0, n - 1), want = bp ? bias[j0] : 0;
        for (int64_t kk = 0; kk < k; kk++)
            want += (int64_t)a[i0 * lda + kk] * w[j0 * k + kk];
        ck_assert_int_eq(c1[i0 * n + j0], want);
        /* the tiled OpenMP driver gives the same numbers, also stored transposed */
        q8_gemm(Q8_GEMM_AVX2, m, n, kp, a, lda, b, bp, c2, n, 1);
        ck_assert_int_eq(memcmp(c1, c2, (size_t)(m * n) * 4), 0);
        for (int kernel = 0; kernel < 2; kernel++) {
            q8_gemm(kernel ? Q8_GEMM_AVX2 : Q8_GEMM_REFERENCE, m, n, kp, a, lda, b, bp, c2, 1, m);
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < n; j++)
                    ck_assert_int_eq(c2[j * m + i], c1[i * n + j]);
        }
        free(a), free(w), free(bias), free(c1), free(c2), free(b);
    }
}
END_TEST

START_TEST(gemm_worst_case_products_over_long_k_do_not_saturate)
{
    /* vpmaddubsw would turn 255*127 + 255*127 into 32767; the kernels widen first. */
    const int64_t m = 3, n = 5, k = 16384, kp = q8_gemm_kp(k);
    uint8_t *a = malloc((size_t)(m * kp));
    int16_t *b = malloc((size_t)(n * kp) * sizeof *b);
    int32_t c[15];
    memset(a, 255, (size_t)(m * kp));
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < kp; i++)
            b[j * kp + i] = j % 2 ? -128 : 127;
    for (int kernel = 0; kernel < 2; kernel++) {
        if (kernel == 1 && !q8_gemm_avx2_available())
            break;
        memset(c, 0, sizeof c);
        q8_gemm(kernel ? Q8_GEMM_AVX2 : Q8_GEMM_REFERENCE, m, n, kp, a, kp, b, NULL, c, n, 1);
        for (int64_t i = 0; i < m * n; i++)
            ck_assert_int_eq(c[i], (i % n) % 2 ? -255 * 128 * k : 255 * 127 * k);
    }
    free(a);
    free(b);
}
END_TEST

START_TEST(requant_avx2_equals_reference_on_random_rows)
{
    if (!q8_gemm_avx2_available())
        return;
    rng r = {14};
    int32_t acc[300], m0[300], shift[300];
    uint8_t a[300], b[300];
    for (int t = 0; t < 400; t++) {
        int64_t n = rng_int(&r, 1, 300), step = t % 2;
        q8_dtype dt = t % 3 ? Q8_U8 : Q8_I8;
        int32_t zp = (int32_t)rng_int(&r, q8_qmin(dt), q8_qmax(dt));
        int32_t lo = (int32_t)rng_int(&r, q8_qmin(dt), zp), hi = (int32_t)rng_int(&r, zp, q8_qmax(dt));
        for (int64_t i = 0; i < n; i++) {
            acc[i] = (int32_t)(rng_int(&r, INT32_MIN, INT32_MAX) >> rng_int(&r, 0, 31));
            m0[i] = (int32_t)rng_int(&r, INT64_C(1) << 30, INT32_MAX);
            /* mostly realistic shifts, some 0 and 63, some exact ties (m0 = 2^30) */
            shift[i] = (int32_t)(i % 7 == 0 ? rng_int(&r, 0, 63) : rng_int(&r, 28, 45));
            if (i % 5 == 0)
                m0[i] = 1 << 30, shift[i] = (int32_t)rng_int(&r, 31, 34);
        }
        q8_requant_reference(acc, n, m0, shift, step, zp, lo, hi, a);
        q8_requant_avx2(acc, n, m0, shift, step, zp, lo, hi, b);
        for (int64_t i = 0; i < n; i++)
            ck_assert_msg(a[i] == b[i], "t=%d i=%" PRId64 " acc=%d m0=%d shift=%d: %d vs %d", t, i,
                          acc[i], m0[step ? i : 0], shift[step ? i : 0], a[i], b[i]);
    }
}
END_TEST

/* The column GEMM operand of random patch rows: (kpairs, np, 2) or (kquads, np, 4). */
static void make_col_operands(rng *r, int64_t k, int64_t np, uint8_t *rows, int16_t *pairs,
                              uint8_t *quads)
{
    int64_t kpairs = (k + 1) / 2, kquads = (k + 3) / 4;
    memset(rows, 0, (size_t)(4 * kquads * np));
    for (int64_t i = 0; i < k; i++)
        fill_bytes(r, rows + i * np, np);
    for (int64_t t = 0; t < kpairs; t++)
        q8_interleave_pairs_reference(rows + 2 * t * np, rows + (2 * t + 1) * np, np,
                                      pairs + t * np * 2);
    for (int64_t t = 0; t < kquads; t++) {
        const uint8_t *q[4] = {rows + 4 * t * np, rows + (4 * t + 1) * np, rows + (4 * t + 2) * np,
                               rows + (4 * t + 3) * np};
        q8_interleave_quads_reference(q, np, quads + t * np * 4);
    }
}

START_TEST(column_gemm_kernels_equal_the_plain_sum_on_random_shapes)
{
    rng r = {41};
    for (int t = 0; t < 40; t++) {
        int64_t m = rng_int(&r, 1, 11), k = rng_int(&r, 1, 300);
        /* whole tiles of Q8_COLS_NR positions and tails of Q8_COLS_STEP */
        int64_t np = Q8_COLS_STEP * rng_int(&r, 1, 13), ldc = np + rng_int(&r, 0, 5);
        int64_t kp = q8_gemm_kp(k), kpairs = (k + 1) / 2, kquads = (k + 3) / 4, kq4 = 4 * kquads;
        uint8_t *rows = malloc((size_t)(4 * kquads * np)), *quads = malloc((size_t)(kq4 * np));
        int16_t *pairs = malloc((size_t)(kpairs * np * 2) * sizeof *pairs);
        int8_t *w = malloc((size_t)(m * k)), *wq = calloc((size_t)(m * kq4), 1);
        int32_t *bias = malloc((size_t)m * sizeof *bias);
        /* calloc: the padding columns (p >= np) are compared too, and must be defined */
        int32_t *want = calloc((size_t)(m * ldc), 4), *got = malloc((size_t)(m * ldc) * 4);
        make_col_operands(&r, k, np, rows, pairs, quads);
        fill_weights(&r, w, m * k);
        for (int64_t o = 0; o < m; o++) {
            bias[o] = (int32_t)rng_int(&r, -100000, 100000);
            memcpy(wq + o * kq4, w + o * k, (size_t)k);
        }
        int16_t *b = pack_rows(w, m, k, kp);
        const int32_t *bp = t % 3 == 0 ? NULL : bias;
        for (int64_t o = 0; o < m; o++)
            for (int64_t p = 0; p < np; p++) {
                int64_t sum = bp ? bias[o] : 0;
                for (int64_t i = 0; i < k; i++)
                    sum += (int64_t)w[o * k + i] * rows[i * np + p];
                want[o * ldc + p] = (int32_t)sum;
            }
        for (int kernel = 0; kernel < 4; kernel++) {
            if ((kernel == 1 && !q8_gemm_avx2_available()) ||
                (kernel == 3 && !q8_gemm_vnni_available()))
                continue;
            memcpy(got, want, (size_t)(m * ldc) * 4); /* the padding columns stay put */
            for (int64_t o = 0; o < m; o++)
                for (int64_t p = 0; p < np; p++)
                    got[o * ldc + p] = -1;
            if (kernel == 0)
                q8_gemm_cols_reference(m, kpairs, b, kp, pairs, np, bp, got, ldc);
            else if (kernel == 1)
                q8_gemm_cols_avx2(m, kpairs, b, kp, pairs, np, bp, got, ldc);
            else if (kernel == 2)
                q8_gemm_quads_reference(m, kquads, wq, kq4, quads, NULL, np, bp, got, ldc);
            else
                q8_gemm_quads_vnni(m, kquads, wq, kq4, quads, NULL, np, bp, got, ldc);
            for (int64_t i = 0; i < m * ldc; i++)
                ck_assert_msg(got[i] == want[i], "kernel %d m=%" PRId64 " k=%" PRId64
                              " np=%" PRId64 " at %" PRId64 ": %d vs %d", kernel, m, k, np, i,
                              got[i], want[i]);
        }
        free(rows), free(quads), free(pairs), free(w), free(wq), free(bias), free(want);
        free(got), free(b);
    }
}
END_TEST

START_TEST(gemm_dot_vnni_equals_reference_on_random_shapes)
{
    /* linear's VNNI product: int8 weight rows, 32 bytes of K per step, a 16-byte tail,
     * odd row counts (the last row runs twice in its tile) */
    if (!q8_gemm_vnni_available())
        return;
    rng r = {45};
    for (int t = 0; t < 40; t++) {
        int64_t m = rng_int(&r, 1, 13), n = rng_int(&r, 1, 19), k = rng_int(&r, 1, 200);
        int64_t kp = q8_gemm_kp(k), lda = kp + rng_int(&r, 0, 2) * 16;
        uint8_t *a = calloc((size_t)(m * lda), 1);
        int8_t *w = malloc((size_t)(n * k)), *wq = calloc((size_t)(n * kp), 1);
        int32_t *bias = malloc((size_t)n * sizeof *bias);
        int32_t *c1 = malloc((size_t)(m * n) * 4), *c2 = malloc((size_t)(m * n) * 4);
        for (int64_t i = 0; i < m; i++)
            fill_bytes(&r, a + i * lda, k);
        fill_weights(&r, w, n * k);
        for (int64_t j = 0; j < n; j++) {
            bias[j] = (int32_t)rng_int(&r, -100000, 100000);
            memcpy(wq + j * kp, w + j * k, (size_t)k);
        }
        int16_t *b = pack_rows(w, n, k, kp);
        const int32_t *bp = t % 3 == 0 ? NULL : bias;
        q8_gemm_reference(m, n, kp, a, lda, b, bp, c1, n, 1);
        q8_gemm_dot_vnni(m, n, kp, a, lda, wq, bp, c2, n, 1);
        for (int64_t i = 0; i < m * n; i++)
            ck_assert_msg(c1[i] == c2[i], "m=%" PRId64 " n=%" PRId64 " k=%" PRId64 " at %" PRId64
                          ": %d vs %d", m, n, k, i, c1[i], c2[i]);
        free(a), free(w), free(wq), free(bias), free(c1), free(c2), free(b);
    }
}
END_TEST

START_TEST(column_gemm_worst_case_products_do_not_saturate)
{
    /* 255 * -128 four times in a vpdpbusd lane and 255 * 127 twice in a vpmaddwd lane: the
     * sums go straight to int32, no int16 step saturates them. */
    const int64_t m = 5, k = 4096, np = Q8_COLS_NR + Q8_COLS_STEP, kp = q8_gemm_kp(k);
    const int64_t kpairs = k / 2, kquads = k / 4;
    uint8_t *quads = malloc((size_t)(k * np));
    int16_t *pairs = malloc((size_t)(k * np) * sizeof *pairs);
    int16_t *b = malloc((size_t)(m * kp) * sizeof *b);
    int8_t *wq = malloc((size_t)(m * k));
    int32_t *c = malloc((size_t)(m * np) * 4);
    memset(quads, 255, (size_t)(k * np));
    for (int64_t i = 0; i < k * np; i++)
        pairs[i] = 255;
    for (int64_t o = 0; o < m; o++)
        for (int64_t i = 0; i < kp; i++) {
            b[o * kp + i] = (int16_t)(i >= k ? 0 : o % 2 ? -128 : 127);
            if (i < k)
                wq[o * k + i] = (int8_t)b[o * kp + i];
        }
    for (int kernel = 0; kernel < 4; kernel++) {
        if ((kernel == 1 && !q8_gemm_avx2_available()) ||
            (kernel == 3 && !q8_gemm_vnni_available()))
            continue;
        memset(c, 0, (size_t)(m * np) * 4);
        if (kernel == 0)
            q8_gemm_cols_reference(m, kpairs, b, kp, pairs, np, NULL, c, np);
        else if (kernel == 1)
            q8_gemm_cols_avx2(m, kpairs, b, kp, pairs, np, NULL, c, np);
        else if (kernel == 2)
            q8_gemm_quads_reference(m, kquads, wq, k, quads, NULL, np, NULL, c, np);
        else
            q8_gemm_quads_vnni(m, kquads, wq, k, quads, NULL, np, NULL, c, np);
        for (int64_t i = 0; i < m * np; i++)
            ck_assert_int_eq(c[i], (i / np) % 2 ? -255 * 128 * k : 255 * 127 * k);
    }
    free(quads), free(pairs), free(b), free(wq), free(c);
}
END_TEST

START_TEST(interleave_kernels_equal_the_reference_on_odd_lengths)
{
    rng r = {43};
    uint8_t rows[4][100], q1[400], q2[400];
    int16_t p1[200], p2[200];
    for (int t = 0; t < 30; t++) {
        int64_t n = rng_int(&r, 0, 100);
        for (int s = 0; s < 4; s++)
            fill_bytes(&r, rows[s], 100);
        const uint8_t *q[4] = {rows[0], rows[1], rows[2], rows[3]};
        memset(p2, 0x5a, sizeof p2);
        memset(q2, 0x5a, sizeof q2);
        memcpy(p1, p2, sizeof p1);
        memcpy(q1, q2, sizeof q1);
        q8_interleave_pairs_reference(rows[0], rows[1], n, p1);
        q8_interleave_pairs_avx2(rows[0], rows[1], n, p2);
        q8_interleave_quads_reference(q, n, q1);
        q8_interleave_quads_avx2(q, n, q2);
        ck_assert_int_eq(memcmp(p1, p2, sizeof p1), 0); /* nothing written beyond n */
        ck_assert_int_eq(memcmp(q1, q2, sizeof q1), 0);
        for (int64_t i = 0; i < n; i++)
            ck_assert(p1[2 * i + 1] == rows[1][i] && q1[4 * i + 3] == rows[3][i]);
    }
}
END_TEST

START_TEST(requant_avx2_one_channel_high_shifts_break_ties_to_even)
{
    /* step 0 with 32 <= shift <= 62 takes the 32-bit path of q8_requant_avx2; m0 = 2^30
     * makes acc * m0 / 2^shift an exact half for odd multiples of 2^(shift - 31). */
    if (!q8_gemm_avx2_available())
        return;
    rng r = {44};
    int32_t acc[203];
    uint8_t a[203], b[203];
    for (int t = 0; t < 600; t++) {
        int32_t shift = (int32_t)rng_int(&r, 32, 62), m0 = t % 2 ? 1 << 30 :
                        (int32_t)rng_int(&r, INT64_C(1) << 30, INT32_MAX);
        int64_t n = rng_int(&r, 1, 203);
        q8_dtype dt = t % 3 ? Q8_U8 : Q8_I8;
        int32_t zp = (int32_t)rng_int(&r, q8_qmin(dt), q8_qmax(dt));
        int32_t lo = q8_qmin(dt), hi = q8_qmax(dt);
        int32_t unit = shift - 31 < 31 ? 1 << (shift - 31) : 1 << 30;
        for (int64_t i = 0; i < n; i++) {
            int64_t v = i % 2 ? (int64_t)rng_int(&r, -300, 300) * unit + (i % 4 == 1 ? unit / 2 : 0)
                              : rng_int(&r, INT32_MIN, INT32_MAX) >> rng_int(&r, 0, 31);
            acc[i] = (int32_t)q8_clamp64(v, INT32_MIN, INT32_MAX);
        }
        q8_requant_reference(acc, n, &m0, &shift, 0, zp, lo, hi, a);
        q8_requant_avx2(acc, n, &m0, &shift, 0, zp, lo, hi, b);
        for (int64_t i = 0; i < n; i++)
            ck_assert_msg(a[i] == b[i], "shift %d m0 %d acc %d: %d vs %d", shift, m0, acc[i], a[i],
                          b[i]);
    }
}
END_TEST

START_TEST(pack_weights_refuses_weights_that_could_overflow_int32)
{
    q8_node node = {.op = Q8_OP_LINEAR, .index = 7, .name = "fc"};
    const int64_t k = 70000; /* 255 * 127 * 70000 > 2^31 */
    int8_t *w = malloc((size_t)k);
    memset(w, 127, (size_t)k);
    q8_packed pk;
    ck_assert_int_eq(q8_pack_weights(&node, w, 1, k, NULL, 0, &pk), Q8_ERR_NUMERIC);
    ck_assert_ptr_nonnull(strstr(q8_last_error(), "node 7 (linear 'fc')"));
    ck_assert_ptr_nonnull(strstr(q8_last_error(), "output channel 0"));
    CK_Q8(q8_pack_weights(&node, w, 1, 60000, NULL, 0, &pk));
    q8_packed_free(&pk);
    free(w);
}
END_TEST

START_TEST(pack_weights_folds_the_input_zero_point_into_the_bias)
{
    q8_node node = {.op = Q8_OP_LINEAR, .name = "fc"};
    const int8_t w[6] = {1, -2, 3, 4, 5, -6};
    const int32_t bias[2] = {100, -100};
    q8_packed pk;
    CK_Q8(q8_pack_weights(&node, w, 2, 3, bias, 10, &pk));
    ck_assert_int_eq(pk.kp, 16);
    ck_assert_int_eq(pk.bias[0], 100 - 10 * 2);
    ck_assert_int_eq(pk.bias[1], -100 - 10 * 3);
    ck_assert_int_eq(pk.wsum[1], 3);
    ck_assert_int_eq(pk.w[1 * 16 + 2], -6);
    ck_assert_int_eq(pk.w[1 * 16 + 3], 0);
    q8_packed_free(&pk);
}
END_TEST

/* ---------------------------------------------------------------------------------
 * ops against their formulas
 * ------------------------------------------------------------------------------- */

START_TEST(quantize_op_matches_the_formula_with_ties_nan_and_inf)
{
    int64_t shape[2] = {-1, 8};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input(b, "x", Q8_F32, 2, shape);
    int32_t q1 = q8_builder_quantize(b, "q", x, qp(Q8_U8, 0.5f, 10));
    int32_t q2 = q8_builder_quantize(b, "qi", x, qp(Q8_I8, 0.25f, -3));
    q8_builder_output(b, q1);
    q8_builder_output(b, q2);
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    float in[16] = {0.25f, 0.75f, -0.25f, -0.75f, 1000, -1000, INFINITY, NAN,
                    1.125f, 1.375f, 31.75f, -32.0f, -33.0f, 0.0f, -0.0f, 2.6f};
    const void *ins[1] = {in};
    CK_Q8(q8_model_run_values(m, ins, 2));
    q8_value_info v1, v2;
    CK_Q8(q8_model_value(m, q1, &v1));
    CK_Q8(q8_model_value(m, q2, &v2));
    for (int i = 0; i < 16; i++) {
        float r1 = nearbyintf(in[i] * (1.0f / 0.5f)), r2 = nearbyintf(in[i] * (1.0f / 0.25f));
        int32_t e1 = isnan(r1) ? 10 : (int32_t)fmaxf(0.0f, fminf(255.0f, 10.0f + r1));
        int32_t e2 = isnan(r2) ? -3 : (int32_t)fmaxf(-128.0f, fminf(127.0f, -3.0f + r2));
        ck_assert_int_eq(qv(v1.data, i, Q8_U8), e1);
        ck_assert_int_eq(qv(v2.data, i, Q8_I8), e2);
    }
    ck_assert_int_eq(v1.shape[0], 2);
    q8_model_free(m);
}
END_TEST

START_TEST(dequantize_op_is_scale_times_q_minus_zero_point)
{
    int64_t shape[3] = {-1, 2, 3};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input_quantized(b, "x", qp(Q8_I8, 0.3f, -7), 3, shape);
    q8_builder_output(b, q8_builder_dequantize(b, "dq", x));
    q8_model *m = q8_builder_finish(b);
    ck_assert_ptr_nonnull(m);
    int8_t in[6] = {-128, -7, 0, 1, 100, 127};
    q8_value_info out;
    const float *y = run1(m, in, 1, &out);
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(y[i], 0.3f * (float)(in[i] + 7));
    q8_model_free(m);
}
END_TEST

/* A random conv/linear layer and its two references. */
typedef struct layer_case {
    int64_t n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups;
    q8_dtype in_dt, out_dt;
    bool per_channel;
    q8_act act;
} layer_case;

typedef struct layer_data {
    uint8_t *x;   /* (N, C, H, W) or (N, C) */
    int8_t *w;    /* (O, C/g, kH, kW) or (O, C) */
    float *sw, *bias;
    float s_in, s_out;
    int32_t zp_in, zp_out;
    int64_t oh, ow;
} layer_data;

/* Integer reference (naive loops, independent of im2row/GEMM) and the real-valued
 * result; conv when lc->h > 0, linear otherwise. */
static void layer_reference(const layer_case *lc, const layer_data *d, int32_t lo, int32_t hi,
                            int32_t *y_int, double *y_real)
{
    int64_t h = lc->h > 0 ? lc->h : 1, w = lc->h > 0 ? lc->w : 1; /* linear: 1x1 */
    int64_t cg = lc->c / lc->groups, og = lc->o / lc->groups, p = d->oh * d->ow;
    int64_t k = cg * lc->kh * lc->kw;
    for (int64_t b = 0; b < lc->n; b++)
        for (int64_t o = 0; o < lc->o; o++) {
            int64_t si = lc->per_channel ? o : 0, g = o / og;
            double s_acc = (double)d->s_in * (double)d->sw[si];
            int32_t m0 = 0, sh = 0;
            ck_assert_int_eq(q8_multiplier_from_real(s_acc / (double)d->s_out, &m0, &sh), Q8_OK);
            int64_t bq = (int64_t)nearbyint((double)d->bias[o] / s_acc);
            for (int64_t pos = 0; pos < p; pos++) {
                int64_t oh = pos / d->ow, ow = pos % d->ow, acc = 0;
                for (int64_t c = 0; c < cg; c++)
                    for (int64_t i = 0; i < lc->kh; i++)
                        for (int64_t j = 0; j < lc->kw; j++) {
                            int64_t ih = oh * lc->sh - lc->ph + i * lc->dh;
                            int64_t iw = ow * lc->sw - lc->pw + j * lc->dw;
                            if (ih < 0 || ih >= h || iw < 0 || iw >= w)
                                continue;
                            int64_t xi = ((b * lc->c + g * cg + c) * h + ih) * w + iw;
                            acc += (qv(d->x, xi, lc->in_dt) - d->zp_in) *
                                   d->w[o * k + (c * lc->kh + i) * lc->kw + j];
                        }
                int64_t yi = (b * lc->o + o) * p + pos;
                int64_t v = d->zp_out + q8_requantize(acc + bq, m0, sh);
                y_int[yi] = (int32_t)(v < lo ? lo : v > hi ? hi : v);
                y_real[yi] = ((double)acc * s_acc + d->bias[o]) / d->s_out + d->zp_out;
            }
        }
}

static void make_layer(const layer_case *lc, rng *r, layer_data *d)
{
    bool conv = lc->h > 0;
    int64_t h = conv ? lc->h : 1, w = conv ? lc->w : 1;
    int64_t k = lc->c / lc->groups * lc->kh * lc->kw;
    d->x = malloc((size_t)(lc->n * lc->c * h * w));
    d->w = malloc((size_t)(lc->o * k));
    d->sw = malloc((size_t)lc->o * sizeof(float));
    d->bias = malloc((size_t)lc->o * sizeof(float));
    fill_bytes(r, d->x, lc->n * lc->c * h * w);
    fill_weights(r, d->w, lc->o * k);
    d->s_in = rng_float(r, 0.01f, 0.05f);
    d->zp_in = (int32_t)rng_int(r, q8_qmin(lc->in_dt), q8_qmax(lc->in_dt));
    for (int64_t o = 0; o < lc->o; o++) {
        d->sw[o] = rng_float(r, 0.002f, 0.01f);
        d->bias[o] = rng_float(r, -2.0f, 2.0f);
    }
    /* an output scale that spreads the results over ~100 steps */
    d->s_out = (float)(sqrt((double)k) * 74.0 * 73.0 * d->s_in * 0.006 / 40.0);
    d->zp_out = lc->out_dt == Q8_U8 ? 128 : 0;
    d->oh = conv ? q8_window_out_size(lc->h, lc->kh, lc->sh, lc->ph, lc->dh, false) : 1;
    d->ow = conv ? q8_window_out_size(lc->w, lc->kw, lc->sw, lc->pw, lc->dw, false) : 1;
}

static void free_layer(layer_data *d)
{
    free(d->x), free(d->w), free(d->sw), free(d->bias);
}

/* Builds the one-layer model, runs it with both GEMM kernels and checks: identical to the
 * integer reference, within 1 of the real result and equal to it for >= 98%. The output
 * is clamped to [qmin, qmax] (0, 0: the dtype's range). */
static void check_layer_range(const layer_case *lc, uint64_t seed, int32_t qmin, int32_t qmax)
{
    rng r = {seed};
    layer_data d;
    make_layer(lc, &r, &d);
    bool conv = lc->h > 0;
    q8_qparams out = qpr(lc->out_dt, d.s_out, d.zp_out, qmin, qmax);
    q8_weights wt = {d.w, d.sw, lc->per_channel ? lc->o : 1, d.bias};
    q8_builder *b = q8_builder_new();
    int64_t xs[4] = {-1, lc->c, lc->h, lc->w}, y;
    int32_t x = q8_builder_input_quantized(b, "x", qp(lc->in_dt, d.s_in, d.zp_in),
                                           conv ? 4 : 2, xs);
    if (conv) {
        q8_conv2d_desc cd = {lc->o, {lc->kh, lc->kw}, {lc->sh, lc->sw}, {lc->ph, lc->pw},
                             {lc->dh, lc->dw}, lc->groups};
        y = q8_builder_conv2d(b, "conv", x, &cd, &wt, out, lc->act);
    } else {
        y = q8_builder_linear(b, "fc", x, lc->o, &wt, out, lc->act);
    }
    q8_builder_output(b, (int32_t)y);
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    int32_t lo = 0, hi = 0;
    q8_act_bounds(lc->act, out, &lo, &hi);
    int64_t total = lc->n * lc->o * d.oh * d.ow;
    int32_t *y_int = malloc((size_t)total * sizeof *y_int);
    double *y_real = malloc((size_t)total * sizeof *y_real);
    layer_reference(lc, &d, lo, hi, y_int, y_real);
    if (qmin != 0 || qmax != 0) { /* the range must clamp some results, or proves nothing */
        int32_t full_lo = 0, full_hi = 0, *y_full = malloc((size_t)total * sizeof *y_full);
        int64_t clamped = 0;
        q8_act_bounds(lc->act, qp(lc->out_dt, d.s_out, d.zp_out), &full_lo, &full_hi);
        layer_reference(lc, &d, full_lo, full_hi, y_full, y_real);
        for (int64_t i = 0; i < total; i++)
            clamped += y_full[i] != y_int[i];
        ck_assert_msg(clamped > 0, "seed %" PRIu64 ": the range [%d, %d] clamps nothing", seed,
                      (int)qmin, (int)qmax);
        free(y_full);
    }
    for (int kernel = 0; kernel < 2; kernel++) {
        if (kernel == 1 && !q8_gemm_avx2_available())
            break;
        m->kernel = kernel ? Q8_GEMM_AVX2 : Q8_GEMM_REFERENCE;
        q8_value_info v;
        const uint8_t *got = run1(m, d.x, lc->n, &v);
        int64_t off_by_one = 0;
        for (int64_t i = 0; i < total; i++) {
            ck_assert_msg(qv(got, i, lc->out_dt) == y_int[i],
                          "seed %" PRIu64 " kernel %d element %" PRId64 ": %d vs integer "
                          "reference %d", seed, kernel, i, qv(got, i, lc->out_dt), y_int[i]);
            double rf = nearbyint(y_real[i]);
            rf = rf < lo ? lo : rf > hi ? hi : rf;
            ck_assert_msg(fabs(qv(got, i, lc->out_dt) - rf) <= 1.0, "element %" PRId64
                          ": %d vs real %g", i, qv(got, i, lc->out_dt), y_real[i]);
            off_by_one += qv(got, i, lc->out_dt) != (int32_t)rf;
        }
        ck_assert_msg(off_by_one * 50 <= total, "%" PRId64 " of %" PRId64 " off by one",
                      off_by_one, total);
    }
    free(y_int), free(y_real);
    free_layer(&d);
    q8_model_free(m);
}

static void check_layer(const layer_case *lc, uint64_t seed) { check_layer_range(lc, seed, 0, 0); }

START_TEST(conv2d_matches_integer_and_real_references)
{
    /* n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups, in, out, per_channel, act */
    const layer_case cases[] = {
        {1, 3, 7, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, Q8_U8, Q8_U8, true, Q8_ACT_NONE},
        {3, 4, 9, 6, 6, 3, 2, 2, 2, 1, 0, 1, 1, 2, Q8_I8, Q8_I8, true, Q8_ACT_RELU},
        {2, 3, 8, 8, 5, 3, 3, 1, 1, 2, 2, 2, 2, 1, Q8_U8, Q8_I8, false, Q8_ACT_RELU6},
        {2, 4, 6, 7, 8, 3, 3, 2, 1, 1, 1, 1, 1, 4, Q8_I8, Q8_U8, true, Q8_ACT_NONE}, /* dw x2 */
        {1, 5, 5, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5, Q8_U8, Q8_U8, false, Q8_ACT_RELU}, /* dw */
        {3, 1, 6, 9, 3, 2, 3, 1, 2, 0, 1, 1, 1, 1, Q8_U8, Q8_U8, true, Q8_ACT_NONE},  /* C=1 */
        {1, 2, 20, 17, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1, Q8_I8, Q8_U8, true, Q8_ACT_NONE}, /* 2 chunks */
        {2, 6, 5, 4, 4, 2, 2, 1, 1, 1, 1, 1, 1, 2, Q8_U8, Q8_U8, true, Q8_ACT_RELU},
        {2, 16, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, Q8_U8, Q8_U8, true, Q8_ACT_RELU}, /* refcnn */
        {1, 64, 23, 30, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, Q8_I8, Q8_U8, true, Q8_ACT_NONE}, /* rows */
        {19, 3, 6, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, Q8_U8, Q8_U8, true, Q8_ACT_RELU}, /* slices */
        {2, 8, 7, 5, 6, 3, 2, 1, 1, 2, 1, 2, 1, 2, Q8_I8, Q8_U8, true, Q8_ACT_RELU}, /* quads */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_layer(&cases[i], 100 + i);
    /* stride 1 runs on the padded grid with the VNNI kernel where the CPU has it: the same
     * cases with the vpmaddwd kernel (CQAT_Q8_GEMM=avx2 at load) */
    setenv("CQAT_Q8_GEMM", "avx2", 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_layer(&cases[i], 200 + i);
    unsetenv("CQAT_Q8_GEMM");
}
END_TEST

START_TEST(linear_matches_integer_and_real_references)
{
    const layer_case cases[] = {
        {1, 10, 0, 0, 7, 1, 1, 1, 1, 0, 0, 1, 1, 1, Q8_U8, Q8_U8, true, Q8_ACT_NONE},
        {5, 32, 0, 0, 9, 1, 1, 1, 1, 0, 0, 1, 1, 1, Q8_U8, Q8_U8, false, Q8_ACT_RELU}, /* in place */
        {3, 33, 0, 0, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1, Q8_I8, Q8_I8, true, Q8_ACT_RELU6},
        {300, 20, 0, 0, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1, Q8_I8, Q8_U8, true, Q8_ACT_NONE}, /* chunks */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_layer(&cases[i], 200 + i);
}
END_TEST

START_TEST(linear_dynamic_matches_pytorch_formula_and_float_linear)
{
    rng r = {5};
    const int64_t n = 3, k = 21, o = 5;
    float x[3 * 21], sw[5], bias[5];
    int8_t w[5 * 21];
    for (int i = 0; i < n * k; i++)
        x[i] = rng_float(&r, -1.5f, 2.5f);
    fill_weights(&r, w, o * k);
    for (int j = 0; j < o; j++)
        sw[j] = rng_float(&r, 0.001f, 0.01f), bias[j] = rng_float(&r, -1.0f, 1.0f);
    for (int relu = 0; relu < 2; relu++) {
        q8_builder *b = q8_builder_new();
        int64_t xs[2] = {-1, k};
        int32_t xi = q8_builder_input(b, "x", Q8_F32, 2, xs);
        q8_weights wt = {w, sw, o, bias};
        q8_builder_output(b, q8_builder_linear_dynamic(b, "fc", xi, o, &wt,
                                                       relu ? Q8_ACT_RELU : Q8_ACT_NONE));
        q8_model *m = q8_builder_finish(b);
        ck_assert_msg(m != NULL, "%s", q8_last_error());
        float y[15];
        CK_Q8(q8_model_run(m, x, n, y));
        /* qlinear_dynamic: min/max of the batch, qparams in 0..127, fma quantization */
        float lo = x[0], hi = x[0], sx = 0;
        int32_t zx = 0;
        for (int i = 0; i < n * k; i++)
            lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
        q8_choose_qparams_dynamic(lo, hi, true, &sx, &zx);
        ck_assert_int_le(zx, 127);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < o; j++) {
                int64_t raw = 0;
                double fl = bias[j], bound = 0;
                for (int64_t kk = 0; kk < k; kk++) {
                    float q = fminf(255.0f, fmaxf(0.0f, nearbyintf(fmaf(x[i * k + kk], 1.0f / sx,
                                                                        (float)zx))));
                    raw += ((int64_t)q - zx) * w[j * k + kk];
                    fl += (double)x[i * k + kk] * w[j * k + kk] * sw[j];
                    bound += 0.5 * sx * fabs(w[j * k + kk] * sw[j]);
                }
                float want = (float)raw * (sx * sw[j]) + bias[j];
                want = relu && want < 0.0f ? 0.0f : want;
                ck_assert_float_eq(y[i * o + j], want);
                fl = relu && fl < 0 ? 0 : fl;
                ck_assert_msg(fabs(y[i * o + j] - fl) <= bound * 1.01 + 1e-5, "%g vs float %g",
                              (double)y[i * o + j], fl);
            }
        /* a non-finite input is an error naming the node */
        float bad[21 * 3];
        memcpy(bad, x, sizeof bad);
        bad[4] = INFINITY;
        ck_assert_int_eq(q8_model_run(m, bad, n, y), Q8_ERR_NUMERIC);
        ck_assert_ptr_nonnull(strstr(q8_last_error(), "linear_dynamic 'fc'"));
        q8_model_free(m);
    }
}
END_TEST

/* A two-input elementwise model (add/mul) on random integers. */
static q8_model *binary_model(const char *op, q8_qparams qa, q8_qparams qb, q8_qparams out,
                              q8_act act)
{
    int64_t shape[3] = {-1, 5, 7};
    q8_builder *b = q8_builder_new();
    int32_t a = q8_builder_input_quantized(b, "a", qa, 3, shape);
    int32_t c = q8_builder_input_quantized(b, "b", qb, 3, shape);
    int32_t y = strcmp(op, "add") == 0 ? q8_builder_add(b, "sum", a, c, out, act)
                                       : q8_builder_mul(b, "prod", a, c, out, act);
    q8_builder_output(b, y);
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    return m;
}

static void check_binary(const char *op, q8_qparams qa, q8_qparams qb, q8_qparams out, q8_act act,
                         uint64_t seed)
{
    q8_model *m = binary_model(op, qa, qb, out, act);
    rng r = {seed};
    const int64_t total = 4 * 35;
    uint8_t a[140], bb[140];
    fill_bytes(&r, a, total);
    fill_bytes(&r, bb, total);
    const void *ins[2] = {a, bb};
    CK_Q8(q8_model_run_values(m, ins, 4));
    q8_value_info v;
    CK_Q8(q8_model_value(m, q8_model_output_id(m, 0), &v));
    int32_t lo = 0, hi = 0;
    q8_act_bounds(act, out, &lo, &hi);
    for (int64_t i = 0; i < total; i++) {
        double ra = (double)qa.scale * (qv(a, i, qa.dtype) - qa.zero_point);
        double rb = (double)qb.scale * (qv(bb, i, qb.dtype) - qb.zero_point);
        double real = (strcmp(op, "add") == 0 ? ra + rb : ra * rb) / out.scale + out.zero_point;
        double rf = nearbyint(real);
        rf = rf < lo ? lo : rf > hi ? hi : rf;
        int32_t got = qv(v.data, i, out.dtype);
        /* exact, except within 1e-4 of a rounding tie (the fixed-point multipliers and
         * add's rescaled inputs carry about 2^-20 of error) */
        bool near_tie = fabs(fabs(real - floor(real)) - 0.5) < 1e-4;
        ck_assert_msg(got == (int32_t)rf || (near_tie && fabs(got - rf) <= 1),
                      "%s element %" PRId64 ": %d vs real %.9f", op, i, got, real);
    }
    q8_model_free(m);
}

START_TEST(add_matches_the_float_sum_and_add_relu_clamps_at_the_zero_point)
{
    check_binary("add", qp(Q8_U8, 0.05f, 120), qp(Q8_U8, 0.02f, 30),
                 qp(Q8_U8, 0.07f, 100), Q8_ACT_NONE, 1);
    check_binary("add", qp(Q8_I8, 0.01f, -5), qp(Q8_U8, 0.03f, 128),
                 qp(Q8_I8, 0.04f, 3), Q8_ACT_RELU, 2);
    check_binary("add", qp(Q8_U8, 0.1f, 0), qp(Q8_U8, 0.1f, 0),
                 qp(Q8_U8, 0.1f, 0), Q8_ACT_NONE, 3); /* equal scales: exact */
}
END_TEST

START_TEST(mul_matches_the_float_product)
{
    check_binary("mul", qp(Q8_U8, 0.05f, 120), qp(Q8_U8, 0.02f, 30),
                 qp(Q8_U8, 0.3f, 100), Q8_ACT_NONE, 4);
    check_binary("mul", qp(Q8_I8, 0.02f, 0), qp(Q8_I8, 0.02f, 10),
                 qp(Q8_I8, 0.5f, -20), Q8_ACT_RELU, 5);
}
END_TEST

START_TEST(cat_requantizes_each_input_and_copies_equal_qparams)
{
    int64_t s1[4] = {-1, 2, 3, 2}, s2[4] = {-1, 1, 3, 2};
    q8_qparams q1 = qp(Q8_U8, 0.1f, 10), q2 = qp(Q8_I8, 0.05f, -4);
    q8_builder *b = q8_builder_new();
    int32_t a = q8_builder_input_quantized(b, "a", q1, 4, s1);
    int32_t c = q8_builder_input_quantized(b, "c", q2, 4, s2);
    int32_t xs[2] = {a, c};
    q8_builder_output(b, q8_builder_cat(b, "cat", xs, 2, q1));
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    rng r = {6};
    uint8_t x1[2 * 12], x2[2 * 6];
    fill_bytes(&r, x1, 24);
    fill_bytes(&r, x2, 12);
    const void *ins[2] = {x1, x2};
    CK_Q8(q8_model_run_values(m, ins, 2));
    q8_value_info v;
    CK_Q8(q8_model_value(m, q8_model_output_id(m, 0), &v));
    ck_assert_int_eq(v.shape[1], 3);
    const uint8_t *y = v.data;
    for (int bt = 0; bt < 2; bt++) {
        for (int i = 0; i < 12; i++)
            ck_assert_int_eq(y[bt * 18 + i], x1[bt * 12 + i]); /* copied */
        for (int i = 0; i < 6; i++) {
            /* 0.05 (q + 4) / 0.1 + 10 = (q + 4) / 2 + 10: exact halves go to even */
            int32_t q = (int8_t)x2[bt * 6 + i];
            double real = (q + 4) / 2.0 + 10;
            int32_t want = (int32_t)fmin(255, fmax(0, nearbyint(real)));
            ck_assert_int_eq(y[bt * 18 + 12 + i], want);
        }
    }
    q8_model_free(m);
}
END_TEST

/* A single pooling node on an (N, C, H, W) input of dtype dt. */
static q8_model *pool_model(const char *op, q8_dtype dt, int64_t c, int64_t h, int64_t w,
                            const q8_pool2d_desc *d, const q8_qparams *out, int64_t oh, int64_t ow)
{
    int64_t shape[4] = {-1, c, h, w};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input_quantized(b, "x", qp(dt, 0.1f, dt == Q8_U8 ? 7 : -7),
                                           4, shape);
    int32_t y = !strcmp(op, "max")   ? q8_builder_max_pool2d(b, "pool", x, d)
                : !strcmp(op, "avg") ? q8_builder_avg_pool2d(b, "pool", x, d, out)
                                     : q8_builder_adaptive_avg_pool2d(b, "pool", x, oh, ow, out);
    q8_builder_output(b, y);
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    return m;
}

START_TEST(max_pool2d_takes_the_window_max_with_padding_dilation_and_ceil_mode)
{
    const struct {
        q8_dtype dt;
        q8_pool2d_desc d;
    } cases[] = {
        {Q8_U8, {{2, 2}, {2, 2}, {0, 0}, {1, 1}, false, false, 0}},
        {Q8_I8, {{3, 3}, {2, 2}, {1, 1}, {1, 1}, true, false, 0}},
        {Q8_I8, {{3, 2}, {1, 2}, {1, 1}, {2, 1}, false, false, 0}},
        {Q8_U8, {{2, 3}, {3, 2}, {1, 0}, {1, 1}, true, false, 0}},
    };
    rng r = {7};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const q8_pool2d_desc *d = &cases[t].d;
        q8_dtype dt = cases[t].dt;
        const int64_t n = 2, c = 3, h = 7, w = 6;
        q8_model *m = pool_model("max", dt, c, h, w, d, NULL, 0, 0);
        uint8_t x[2 * 3 * 7 * 6];
        fill_bytes(&r, x, n * c * h * w);
        q8_value_info v;
        const uint8_t *y = run1(m, x, n, &v);
        int64_t oh_n = v.shape[2], ow_n = v.shape[3];
        ck_assert_int_eq(oh_n, q8_window_out_size(h, d->kernel[0], d->stride[0], d->padding[0],
                                                  d->dilation[0], d->ceil_mode));
        for (int64_t p = 0; p < n * c; p++)
            for (int64_t oh = 0; oh < oh_n; oh++)
                for (int64_t ow = 0; ow < ow_n; ow++) {
                    int32_t best = q8_qmin(dt);
                    for (int64_t i = 0; i < d->kernel[0]; i++)
                        for (int64_t j = 0; j < d->kernel[1]; j++) {
                            int64_t ih = oh * d->stride[0] - d->padding[0] + i * d->dilation[0];
                            int64_t iw = ow * d->stride[1] - d->padding[1] + j * d->dilation[1];
                            if (ih >= 0 && ih < h && iw >= 0 && iw < w)
                                best = qv(x, (p * h + ih) * w + iw, dt) > best
                                           ? qv(x, (p * h + ih) * w + iw, dt)
                                           : best;
                        }
                    ck_assert_int_eq(qv(y, (p * oh_n + oh) * ow_n + ow, dt), best);
                }
        ck_assert_float_eq(v.scale, 0.1f); /* qparams kept */
        q8_model_free(m);
    }
}
END_TEST

START_TEST(max_pool2d_2x2_rows_and_sliced_batches_match_the_window_max)
{
    /* the 2x2 stride-2 path: 16-byte blocks, odd widths (floor), the tail near the end of
     * the input, int8 order; a batch above the slice size runs in slices over threads */
    const q8_pool2d_desc d = {{2, 2}, {2, 2}, {0, 0}, {1, 1}, false, false, 0};
    rng r = {71};
    for (int t = 0; t < 4; t++) {
        q8_dtype dt = t % 2 ? Q8_I8 : Q8_U8;
        const int64_t n = t < 2 ? 3 : 21, c = 2, h = 5 + t, w = 37 - 3 * t;
        q8_model *m = pool_model("max", dt, c, h, w, &d, NULL, 0, 0);
        uint8_t *x = malloc((size_t)(n * c * h * w));
        fill_bytes(&r, x, n * c * h * w);
        q8_value_info v;
        const uint8_t *y = run1(m, x, n, &v);
        int64_t oh_n = h / 2, ow_n = w / 2;
        ck_assert(v.shape[2] == oh_n && v.shape[3] == ow_n);
        for (int64_t p = 0; p < n * c; p++)
            for (int64_t oh = 0; oh < oh_n; oh++)
                for (int64_t ow = 0; ow < ow_n; ow++) {
                    int32_t best = q8_qmin(dt);
                    for (int64_t i = 0; i < 2; i++)
                        for (int64_t j = 0; j < 2; j++) {
                            int32_t q = qv(x, (p * h + 2 * oh + i) * w + 2 * ow + j, dt);
                            best = q > best ? q : best;
                        }
                    ck_assert_msg(qv(y, (p * oh_n + oh) * ow_n + ow, dt) == best,
                                  "case %d plane %" PRId64 " (%" PRId64 ", %" PRId64 ")", t, p,
                                  oh, ow);
                }
        free(x);
        q8_model_free(m);
    }
}
END_TEST

START_TEST(lookup2_avx2_equals_reference_up_to_the_last_table_entry)
{
    /* add's 256 x 256 table read by 32-bit gathers: entry 65535 included */
    if (!q8_gemm_avx2_available())
        return;
    rng r = {73};
    uint8_t *table = q8_alloc(256 * 256 + 64), a[131], b[131], y1[131], y2[131];
    fill_bytes(&r, table, 256 * 256 + 64);
    for (int t = 0; t < 50; t++) {
        int64_t n = rng_int(&r, 0, 131);
        fill_bytes(&r, a, 131);
        fill_bytes(&r, b, 131);
        if (t % 5 == 0)
            memset(a, 255, sizeof a), memset(b, 255, sizeof b);
        q8_lookup2_reference(table, a, b, n, y1);
        q8_lookup2_avx2(table, a, b, n, y2);
        for (int64_t i = 0; i < n; i++)
            ck_assert_int_eq(y2[i], y1[i]);
        for (int64_t i = 0; i < n; i++)
            ck_assert_int_eq(y1[i], table[a[i] * 256 + b[i]]);
    }
    q8_free(table);
}
END_TEST

START_TEST(quantize_row_avx2_equals_reference_with_ties_nan_and_inf)
{
    if (!q8_gemm_avx2_available())
        return;
    rng r = {72};
    float x[203];
    uint8_t a[203], b[203];
    for (int t = 0; t < 300; t++) {
        int64_t n = rng_int(&r, 1, 203);
        q8_dtype dt = t % 2 ? Q8_U8 : Q8_I8;
        float scale = rng_float(&r, 0.001f, 0.5f), inv = 1.0f / scale;
        int32_t zp = (int32_t)rng_int(&r, q8_qmin(dt), q8_qmax(dt));
        int32_t qmin = (int32_t)rng_int(&r, q8_qmin(dt), zp), qmax = (int32_t)rng_int(&r, zp, q8_qmax(dt));
        for (int64_t i = 0; i < n; i++) {
            switch (i % 6) {
            case 0: x[i] = ((float)rng_int(&r, -300, 300) + 0.5f) / inv; break; /* near ties */
            case 1: x[i] = i % 12 == 1 ? NAN : -0.0f; break;
            case 2: x[i] = i % 4 == 2 ? INFINITY : -INFINITY; break;
            case 3: x[i] = rng_float(&r, -1e30f, 1e30f); break;
            default: x[i] = rng_float(&r, -300.0f, 300.0f) * scale; break;
            }
        }
        q8_quantize_row_reference(x, n, inv, zp, qmin, qmax, a);
        q8_quantize_row_avx2(x, n, inv, zp, qmin, qmax, b);
        for (int64_t i = 0; i < n; i++)
            ck_assert_msg(a[i] == b[i], "x = %a: %d vs %d", (double)x[i], a[i], b[i]);
    }
}
END_TEST

/* round_half_even(acc * ratio / divide) for a dyadic ratio (exact in double). */
static int32_t pool_ref(int64_t acc, double ratio, int64_t divide, int32_t zo, q8_dtype dt)
{
    double v = (double)acc * ratio / (double)divide; /* exact enough: checked near ties */
    double f = floor(v), frac = v - f;
    int64_t q = (int64_t)f + (frac > 0.5 || (frac == 0.5 && fmod(f, 2.0) != 0.0));
    int64_t y = zo + q;
    return (int32_t)(y < q8_qmin(dt) ? q8_qmin(dt) : y > q8_qmax(dt) ? q8_qmax(dt) : y);
}

START_TEST(avg_pool2d_is_the_half_even_mean_with_both_pad_counting_rules)
{
    const struct {
        q8_dtype dt;
        q8_pool2d_desc d;
        bool requant;
    } cases[] = {
        {Q8_U8, {{2, 2}, {2, 2}, {0, 0}, {0, 0}, false, true, 0}, false},
        {Q8_I8, {{3, 3}, {2, 2}, {1, 1}, {0, 0}, true, true, 0}, false},
        {Q8_I8, {{3, 3}, {2, 2}, {1, 1}, {0, 0}, true, false, 0}, false},
        {Q8_U8, {{3, 2}, {1, 2}, {1, 1}, {0, 0}, false, false, 0}, true},
        {Q8_U8, {{2, 2}, {1, 1}, {1, 0}, {0, 0}, false, true, 3}, false},
    };
    rng r = {8};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const q8_pool2d_desc *d = &cases[t].d;
        q8_dtype dt = cases[t].dt;
        const int64_t n = 2, c = 2, h = 7, w = 6;
        /* a requantizing pool: out scale 0.4 = 4 * in scale, so the ratio 1/4 is dyadic */
        q8_qparams out = qp(dt, 0.4f, dt == Q8_U8 ? 20 : -20);
        q8_model *m = pool_model("avg", dt, c, h, w, d, cases[t].requant ? &out : NULL, 0, 0);
        uint8_t x[2 * 2 * 7 * 6];
        fill_bytes(&r, x, n * c * h * w);
        q8_value_info v;
        const uint8_t *y = run1(m, x, n, &v);
        int32_t zi = dt == Q8_U8 ? 7 : -7, zo = cases[t].requant ? out.zero_point : zi;
        double ratio = cases[t].requant ? 0.25 : 1.0;
        int64_t oh_n = v.shape[2], ow_n = v.shape[3], kh = d->kernel[0], kw = d->kernel[1];
        int64_t sh = d->stride[0], sw = d->stride[1], ph = d->padding[0], pw = d->padding[1];
        for (int64_t p = 0; p < n * c; p++)
            for (int64_t oh = 0; oh < oh_n; oh++)
                for (int64_t ow = 0; ow < ow_n; ow++) {
                    /* PyTorch avg_pool2d's window and divisor */
                    int64_t h0 = oh * sh - ph, w0 = ow * sw - pw;
                    int64_t h1 = h0 + kh < h + ph ? h0 + kh : h + ph;
                    int64_t w1 = w0 + kw < w + pw ? w0 + kw : w + pw;
                    int64_t pool = (h1 - h0) * (w1 - w0);
                    h0 = h0 < 0 ? 0 : h0, w0 = w0 < 0 ? 0 : w0;
                    h1 = h1 > h ? h : h1, w1 = w1 > w ? w : w1;
                    int64_t acc = 0, valid = (h1 - h0) * (w1 - w0);
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++)
                            acc += qv(x, (p * h + ih) * w + iw, dt) - zi;
                    int64_t divide = d->divisor_override ? d->divisor_override
                                     : d->count_include_pad ? pool
                                                            : valid;
                    ck_assert_int_eq(qv(y, (p * oh_n + oh) * ow_n + ow, dt),
                                     pool_ref(acc, ratio, divide, zo, dt));
                }
        q8_model_free(m);
    }
}
END_TEST

START_TEST(adaptive_avg_pool2d_uses_pytorch_windows)
{
    rng r = {9};
    const int64_t n = 2, c = 3, h = 7, w = 5;
    const int64_t sizes[][2] = {{3, 2}, {1, 1}, {7, 5}, {4, 3}};
    for (size_t t = 0; t < 4; t++) {
        int64_t oh_n = sizes[t][0], ow_n = sizes[t][1];
        q8_model *m = pool_model("adaptive", Q8_I8, c, h, w, NULL, NULL, oh_n, ow_n);
        uint8_t x[2 * 3 * 7 * 5];
        fill_bytes(&r, x, n * c * h * w);
        q8_value_info v;
        const uint8_t *y = run1(m, x, n, &v);
        for (int64_t p = 0; p < n * c; p++)
            for (int64_t oh = 0; oh < oh_n; oh++)
                for (int64_t ow = 0; ow < ow_n; ow++) {
                    /* start = floor(o*I/O), end = ceil((o+1)*I/O) (PyTorch, float math) */
                    int64_t hs = (int64_t)floorf((float)(oh * h) / (float)oh_n);
                    int64_t he = (int64_t)ceilf((float)((oh + 1) * h) / (float)oh_n);
                    int64_t ws = (int64_t)floorf((float)(ow * w) / (float)ow_n);
                    int64_t we = (int64_t)ceilf((float)((ow + 1) * w) / (float)ow_n);
                    int64_t acc = 0;
                    for (int64_t ih = hs; ih < he; ih++)
                        for (int64_t iw = ws; iw < we; iw++)
                            acc += qv(x, (p * h + ih) * w + iw, Q8_I8) + 7;
                    ck_assert_int_eq(qv(y, (p * oh_n + oh) * ow_n + ow, Q8_I8),
                                     pool_ref(acc, 1.0, (he - hs) * (we - ws), -7, Q8_I8));
                }
        q8_model_free(m);
    }
}
END_TEST

START_TEST(flatten_and_clamp_move_integers_without_changing_qparams)
{
    int64_t shape[4] = {-1, 2, 2, 3};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input_quantized(b, "x", qp(Q8_U8, 0.1f, 30), 4, shape);
    int32_t f = q8_builder_flatten(b, "flat", x);
    int32_t r6 = q8_builder_clamp(b, "relu6", f, Q8_ACT_RELU6);
    q8_builder_output(b, r6);
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    uint8_t in[12] = {0, 29, 30, 31, 89, 90, 91, 200, 255, 1, 60, 100};
    q8_value_info vf, vr;
    run1(m, in, 1, &vr);
    CK_Q8(q8_model_value(m, f, &vf));
    ck_assert_int_eq(vf.ndim, 2);
    ck_assert_int_eq(vf.shape[1], 12);
    ck_assert_int_eq(memcmp(vf.data, in, 12), 0);
    const uint8_t *y = vr.data;
    for (int i = 0; i < 12; i++) /* relu6: [zp, quantize(6) = 90] */
        ck_assert_int_eq(y[i], in[i] < 30 ? 30 : in[i] > 90 ? 90 : in[i]);
    q8_model_free(m);
}
END_TEST

START_TEST(hardswish_table_matches_the_float_formula)
{
    const q8_qparams ins[2] = {qp(Q8_U8, 0.05f, 100), qp(Q8_I8, 0.04f, -10)};
    const q8_qparams outs[2] = {qp(Q8_U8, 0.03f, 20), qp(Q8_I8, 0.02f, -30)};
    for (int t = 0; t < 2; t++) {
        int64_t shape[2] = {-1, 256};
        q8_builder *b = q8_builder_new();
        int32_t x = q8_builder_input_quantized(b, "x", ins[t], 2, shape);
        q8_builder_output(b, q8_builder_hardswish(b, "hs", x, outs[t]));
        q8_model *m = q8_builder_finish(b);
        ck_assert_msg(m != NULL, "%s", q8_last_error());
        uint8_t in[256];
        for (int i = 0; i < 256; i++)
            in[i] = (uint8_t)i;
        q8_value_info v;
        const uint8_t *y = run1(m, in, 1, &v);
        for (int i = 0; i < 256; i++) {
            float xr = ins[t].scale * (float)(qv(in, i, ins[t].dtype) - ins[t].zero_point);
            float hs = xr * fminf(fmaxf(xr + 3.0f, 0.0f), 6.0f) / 6.0f;
            ck_assert_int_eq(qv(y, i, outs[t].dtype),
                             q8_quantize_value(hs, outs[t].scale, outs[t].zero_point,
                                               outs[t].dtype));
        }
        /* spot values: hardswish(-4) = 0, hardswish(3) = 3 */
        float r3 = 3.0f * fminf(6.0f, 6.0f) / 6.0f;
        ck_assert_float_eq(r3, 3.0f);
        q8_model_free(m);
    }
}
END_TEST

/* ---------------------------------------------------------------------------------
 * restricted clamp ranges (QAT's quant_min/quant_max) and requantize
 * ------------------------------------------------------------------------------- */

START_TEST(qparams_range_is_the_dtype_by_default_and_must_hold_the_zero_point)
{
    int32_t lo = 0, hi = 0;
    CK_Q8(q8_qparams_range(qp(Q8_U8, 0.1f, 3), &lo, &hi));
    ck_assert(lo == 0 && hi == 255);
    CK_Q8(q8_qparams_range(qp(Q8_I8, 0.1f, 3), &lo, &hi));
    ck_assert(lo == -128 && hi == 127);
    CK_Q8(q8_qparams_range(qpr(Q8_U8, 0.1f, 3, 0, 127), &lo, &hi)); /* reduce_range */
    ck_assert(lo == 0 && hi == 127);
    CK_Q8(q8_qparams_range(qpr(Q8_I8, 0.1f, -64, -64, 63), &lo, &hi));
    ck_assert(lo == -64 && hi == 63);
    ck_assert_int_eq(q8_qparams_range(qpr(Q8_U8, 0.1f, 3, -1, 127), &lo, &hi), Q8_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(q8_last_error(), "clamp range [-1, 127] is not an interval "
                                                  "inside the u8 range [0, 255]"));
    ck_assert_int_eq(q8_qparams_range(qpr(Q8_I8, 0.1f, 0, -10, 128), &lo, &hi), Q8_ERR_ARG);
    ck_assert_int_eq(q8_qparams_range(qpr(Q8_U8, 0.1f, 45, 50, 40), &lo, &hi), Q8_ERR_ARG);
    ck_assert_int_eq(q8_qparams_range(qpr(Q8_U8, 0.1f, 130, 0, 127), &lo, &hi), Q8_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(q8_last_error(), "zero point 130 is outside the clamp range "
                                                  "[0, 127]"));
    ck_assert_int_eq(q8_qparams_range(qp(Q8_F32, 0.1f, 0), &lo, &hi), Q8_ERR_ARG);
}
END_TEST

START_TEST(fused_activation_bounds_are_intersected_with_the_clamp_range)
{
    int32_t lo = 0, hi = 0;
    q8_act_bounds(Q8_ACT_NONE, qpr(Q8_U8, 0.1f, 20, 5, 127), &lo, &hi);
    ck_assert(lo == 5 && hi == 127);
    q8_act_bounds(Q8_ACT_RELU, qpr(Q8_U8, 0.1f, 20, 5, 127), &lo, &hi);
    ck_assert(lo == 20 && hi == 127);
    q8_act_bounds(Q8_ACT_RELU6, qpr(Q8_U8, 0.1f, 20, 5, 127), &lo, &hi);
    ck_assert(lo == 20 && hi == 80); /* quantize(6) = 80 inside the range */
    q8_act_bounds(Q8_ACT_RELU6, qpr(Q8_U8, 0.01f, 20, 0, 127), &lo, &hi);
    ck_assert(lo == 20 && hi == 127); /* quantize(6) = 255 (saturated): the range wins */
    q8_act_bounds(Q8_ACT_RELU, qpr(Q8_I8, 0.1f, -64, -64, 63), &lo, &hi);
    ck_assert(lo == -64 && hi == 63);
}
END_TEST

START_TEST(quantize_clamps_where_fake_quant_clamped)
{
    int64_t shape[2] = {-1, 8};
    const q8_qparams q1 = qpr(Q8_U8, 0.5f, 10, 0, 127), q2 = qpr(Q8_I8, 0.25f, -3, -64, 63);
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input(b, "x", Q8_F32, 2, shape);
    int32_t y1 = q8_builder_quantize(b, "q", x, q1);
    int32_t y2 = q8_builder_quantize(b, "qi", x, q2);
    q8_builder_output(b, y1);
    q8_builder_output(b, y2);
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    float in[16] = {0.25f, 0.75f, 58.25f, 58.75f, 1000, -1000, INFINITY, NAN,
                    -5.0f, -4.75f, 15.75f, 16.0f, -16.0f, -16.25f, -0.0f, 2.6f};
    const void *ins[1] = {in};
    CK_Q8(q8_model_run_values(m, ins, 2));
    q8_value_info v1, v2;
    CK_Q8(q8_model_value(m, y1, &v1));
    CK_Q8(q8_model_value(m, y2, &v2));
    for (int i = 0; i < 16; i++) {
        float r1 = nearbyintf(in[i] * 2.0f), r2 = nearbyintf(in[i] * 4.0f);
        int32_t e1 = isnan(r1) ? 10 : (int32_t)fmaxf(0.0f, fminf(127.0f, 10.0f + r1));
        int32_t e2 = isnan(r2) ? -3 : (int32_t)fmaxf(-64.0f, fminf(63.0f, -3.0f + r2));
        ck_assert_int_eq(qv(v1.data, i, Q8_U8), e1);
        ck_assert_int_eq(qv(v2.data, i, Q8_I8), e2);
    }
    /* 58.25 * 2 = 116.5 -> 116 + 10 = 126; 58.75 -> 117.5 -> 118 + 10 = 128 -> 127 */
    ck_assert_int_eq(((const uint8_t *)v1.data)[2], 126);
    ck_assert_int_eq(((const uint8_t *)v1.data)[3], 127);
    q8_model_free(m);
}
END_TEST

START_TEST(conv2d_and_linear_clamp_to_the_restricted_range)
{
    /* n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups, in, out, per_channel, act;
     * outputs spread ~100 steps around zp 128 (u8) / 0 (i8) */
    const layer_case conv_u8 = {2, 3, 7, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1,
                                Q8_U8, Q8_U8, true, Q8_ACT_NONE};
    const layer_case conv_i8 = {1, 4, 6, 7, 8, 3, 3, 2, 1, 1, 1, 1, 1, 4,
                                Q8_I8, Q8_I8, true, Q8_ACT_RELU6}; /* depthwise, direct */
    const layer_case fc_u8 = {5, 32, 0, 0, 9, 1, 1, 1, 1, 0, 0, 1, 1, 1,
                              Q8_U8, Q8_U8, false, Q8_ACT_RELU};
    const layer_case fc_i8 = {3, 33, 0, 0, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1,
                              Q8_U8, Q8_I8, true, Q8_ACT_NONE};
    check_layer_range(&conv_u8, 300, 60, 200);
    check_layer_range(&conv_i8, 301, -40, 20);
    check_layer_range(&fc_u8, 302, 0, 150);
    check_layer_range(&fc_i8, 303, -30, 40);
}
END_TEST

START_TEST(add_and_mul_clamp_to_the_restricted_range)
{
    check_binary("add", qp(Q8_U8, 0.05f, 120), qp(Q8_U8, 0.02f, 30),
                 qpr(Q8_U8, 0.07f, 100, 60, 127), Q8_ACT_NONE, 11);
    check_binary("add", qp(Q8_I8, 0.01f, -5), qp(Q8_U8, 0.03f, 128),
                 qpr(Q8_I8, 0.04f, 3, -20, 30), Q8_ACT_RELU, 12);
    check_binary("mul", qp(Q8_U8, 0.05f, 120), qp(Q8_U8, 0.02f, 30),
                 qpr(Q8_U8, 0.01f, 100, 70, 130), Q8_ACT_NONE, 13);
}
END_TEST

START_TEST(cat_clamps_copied_and_requantized_inputs_to_the_range)
{
    int64_t s1[4] = {-1, 2, 3, 2}, s2[4] = {-1, 1, 3, 2};
    q8_builder *b = q8_builder_new();
    int32_t a = q8_builder_input_quantized(b, "a", qp(Q8_U8, 0.1f, 10), 4, s1);
    int32_t c = q8_builder_input_quantized(b, "c", qp(Q8_I8, 0.05f, -4), 4, s2);
    int32_t xs[2] = {a, c};
    /* a's qparams, but a narrower range: a's part is clamped, not copied */
    q8_builder_output(b, q8_builder_cat(b, "cat", xs, 2, qpr(Q8_U8, 0.1f, 10, 5, 100)));
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    rng r = {16};
    uint8_t x1[2 * 12], x2[2 * 6];
    fill_bytes(&r, x1, 24);
    fill_bytes(&r, x2, 12);
    const void *ins[2] = {x1, x2};
    CK_Q8(q8_model_run_values(m, ins, 2));
    q8_value_info v;
    CK_Q8(q8_model_value(m, q8_model_output_id(m, 0), &v));
    const uint8_t *y = v.data;
    int clamped = 0;
    for (int bt = 0; bt < 2; bt++) {
        for (int i = 0; i < 12; i++) {
            int32_t q = x1[bt * 12 + i];
            ck_assert_int_eq(y[bt * 18 + i], q < 5 ? 5 : q > 100 ? 100 : q);
            clamped += q < 5 || q > 100;
        }
        for (int i = 0; i < 6; i++) {
            int32_t q = (int8_t)x2[bt * 6 + i];
            int32_t want = (int32_t)fmin(100, fmax(5, nearbyint((q + 4) / 2.0 + 10)));
            ck_assert_int_eq(y[bt * 18 + 12 + i], want);
        }
    }
    ck_assert_int_gt(clamped, 0);
    q8_model_free(m);
}
END_TEST

START_TEST(average_pools_clamp_to_the_restricted_range)
{
    rng r = {17};
    const int64_t n = 2, c = 2, h = 7, w = 6;
    /* avg_pool2d 2x2 stride 2, u8 input (0.1, 7) -> (0.4, 20) in [15, 40]: the ratio 1/4
     * is dyadic, y = (mean - 7) / 4 + 20 */
    q8_pool2d_desc d = {{2, 2}, {2, 2}, {0, 0}, {0, 0}, false, true, 0};
    q8_qparams out = qpr(Q8_U8, 0.4f, 20, 15, 40);
    q8_model *m = pool_model("avg", Q8_U8, c, h, w, &d, &out, 0, 0);
    uint8_t x[2 * 2 * 7 * 6];
    fill_bytes(&r, x, n * c * h * w);
    q8_value_info v;
    const uint8_t *y = run1(m, x, n, &v);
    int clamped = 0;
    for (int64_t p = 0; p < n * c; p++)
        for (int64_t oh = 0; oh < 3; oh++)
            for (int64_t ow = 0; ow < 3; ow++) {
                int64_t acc = 0;
                for (int64_t i = 0; i < 2; i++)
                    for (int64_t j = 0; j < 2; j++)
                        acc += x[(p * h + 2 * oh + i) * w + 2 * ow + j] - 7;
                int32_t full = pool_ref(acc, 0.25, 4, 20, Q8_U8);
                int32_t want = full < 15 ? 15 : full > 40 ? 40 : full;
                clamped += want != full;
                ck_assert_int_eq(y[(p * 3 + oh) * 3 + ow], want);
            }
    q8_model_free(m);
    /* adaptive to 2x2, i8 input (0.1, -7) -> (0.4, -20) in [-25, 0] */
    q8_qparams aout = qpr(Q8_I8, 0.4f, -20, -25, 0);
    m = pool_model("adaptive", Q8_I8, c, h, w, NULL, &aout, 2, 2);
    y = run1(m, x, n, &v);
    for (int64_t p = 0; p < n * c; p++)
        for (int64_t oh = 0; oh < 2; oh++)
            for (int64_t ow = 0; ow < 2; ow++) {
                int64_t hs = oh * h / 2, he = ((oh + 1) * h + 1) / 2;
                int64_t ws = ow * w / 2, we = ((ow + 1) * w + 1) / 2, acc = 0;
                for (int64_t ih = hs; ih < he; ih++)
                    for (int64_t iw = ws; iw < we; iw++)
                        acc += qv(x, (p * h + ih) * w + iw, Q8_I8) + 7;
                int32_t full = pool_ref(acc, 0.25, (he - hs) * (we - ws), -20, Q8_I8);
                int32_t want = full < -25 ? -25 : full > 0 ? 0 : full;
                clamped += want != full;
                ck_assert_int_eq(qv(y, (p * 2 + oh) * 2 + ow, Q8_I8), want);
            }
    ck_assert_int_gt(clamped, 0);
    q8_model_free(m);
}
END_TEST

START_TEST(hardswish_table_entries_stay_inside_the_range)
{
    const q8_qparams in = qp(Q8_U8, 0.05f, 100), out = qpr(Q8_U8, 0.03f, 20, 10, 120);
    int64_t shape[2] = {-1, 256};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input_quantized(b, "x", in, 2, shape);
    q8_builder_output(b, q8_builder_hardswish(b, "hs", x, out));
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    uint8_t bytes[256];
    for (int i = 0; i < 256; i++)
        bytes[i] = (uint8_t)i;
    q8_value_info v;
    const uint8_t *y = run1(m, bytes, 1, &v);
    int at_top = 0;
    for (int i = 0; i < 256; i++) {
        float xr = 0.05f * (float)(i - 100);
        float hs = xr * fminf(fmaxf(xr + 3.0f, 0.0f), 6.0f) / 6.0f;
        int32_t full = q8_quantize_value(hs, 0.03f, 20, Q8_U8);
        ck_assert_int_eq(y[i], full < 10 ? 10 : full > 120 ? 120 : full);
        at_top += full > 120;
    }
    ck_assert_int_gt(at_top, 0);
    q8_model_free(m);
}
END_TEST

/* A one-node requantize model on all 256 bytes: checks the exact single rounding, the
 * real rescale (within half a step, ties to even) and the bounds. Returns the largest
 * output. */
static int32_t check_requantize(q8_qparams in, q8_qparams out, q8_act act)
{
    int64_t shape[2] = {-1, 256};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input_quantized(b, "x", in, 2, shape);
    q8_builder_output(b, q8_builder_requantize(b, "rq", x, out, act));
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    uint8_t bytes[256];
    for (int i = 0; i < 256; i++)
        bytes[i] = (uint8_t)i;
    q8_value_info v;
    const uint8_t *y = run1(m, bytes, 1, &v);
    ck_assert_int_eq(v.dtype, out.dtype);
    ck_assert_float_eq(v.scale, out.scale);
    int32_t m0 = 0, sh = 0, lo = 0, hi = 0, top = INT32_MIN;
    CK_Q8(q8_multiplier_from_real((double)in.scale / (double)out.scale, &m0, &sh));
    q8_act_bounds(act, out, &lo, &hi);
    for (int i = 0; i < 256; i++) {
        int32_t q = qv(bytes, i, in.dtype);
        int64_t r = exact_rq(q - in.zero_point, m0, sh);
        double real = (double)in.scale * (q - in.zero_point) / (double)out.scale;
        ck_assert_msg(fabs((double)r - real) <= 0.5 + 1e-6, "q %d: %" PRId64 " vs %.9f", q, r,
                      real);
        int64_t want = out.zero_point + r;
        want = want < lo ? lo : want > hi ? hi : want;
        ck_assert_int_eq(qv(y, i, out.dtype), want);
        top = qv(y, i, out.dtype) > top ? qv(y, i, out.dtype) : top;
    }
    q8_model_free(m);
    return top;
}

START_TEST(requantize_rescales_once_and_fuses_relu6_inside_the_range)
{
    check_requantize(qp(Q8_U8, 0.05f, 100), qp(Q8_U8, 0.07f, 30), Q8_ACT_NONE);
    check_requantize(qp(Q8_U8, 0.1f, 128), qpr(Q8_I8, 0.05f, -10, -64, 63), Q8_ACT_RELU);
    check_requantize(qp(Q8_I8, 0.02f, -5), qpr(Q8_U8, 0.03f, 10, 0, 127), Q8_ACT_RELU6);
    /* relu6's bound is quantize(6.0) in the output qparams: 3 + 6 / 0.04 = 153 */
    ck_assert_int_eq(check_requantize(qp(Q8_U8, 0.05f, 0), qp(Q8_U8, 0.04f, 3), Q8_ACT_RELU6),
                     153);
    /* equal qparams: the identity */
    ck_assert_int_eq(check_requantize(qp(Q8_U8, 0.1f, 0), qp(Q8_U8, 0.1f, 0), Q8_ACT_NONE), 255);
    /* ratio 1/2: (q - 5) / 2 has exact halves, which go to even: q = 8 -> 1.5 -> 2 */
    check_requantize(qp(Q8_U8, 0.1f, 5), qp(Q8_U8, 0.2f, 0), Q8_ACT_NONE);
    ck_assert_int_eq(exact_rq(3, 1 << 30, 31), 2);
}
END_TEST

START_TEST(builder_refuses_a_range_outside_the_dtype_or_without_the_zero_point)
{
    int64_t shape[4] = {-1, 1, 4, 4};
    int8_t w[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    float sw[1] = {0.01f};
    q8_conv2d_desc cd = {1, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 1};
    q8_weights wt = {w, sw, 1, NULL};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input_quantized(b, "x", qp(Q8_U8, 0.1f, 0), 4, shape);
    ck_assert_int_eq(q8_builder_conv2d(b, "conv", x, &cd, &wt, qpr(Q8_U8, 0.1f, 0, 10, 100),
                                       Q8_ACT_RELU), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_ARG,
                  "node 0 (conv2d 'conv'): zero point 0 is outside the clamp range [10, 100]");
    b = q8_builder_new();
    x = q8_builder_input(b, "x", Q8_F32, 4, shape);
    ck_assert_int_eq(q8_builder_quantize(b, "q", x, qpr(Q8_I8, 0.1f, 0, -129, 10)), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_ARG,
                  "node 0 (quantize 'q'): clamp range [-129, 10] is not an interval inside the "
                  "i8 range");
    b = q8_builder_new();
    x = q8_builder_input_quantized(b, "x", qp(Q8_U8, 0.1f, 0), 4, shape);
    ck_assert_int_eq(q8_builder_hardswish(b, "hs", x, qpr(Q8_U8, 0.1f, 0, 0, 300)), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_ARG, "node 0 (hardswish 'hs'): clamp range");
    b = q8_builder_new();
    x = q8_builder_input_quantized(b, "x", qp(Q8_U8, 0.1f, 0), 4, shape);
    ck_assert_int_eq(q8_builder_requantize(b, "rq", x, qpr(Q8_U8, 0.1f, 50, 60, 40),
                                           Q8_ACT_NONE), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_ARG, "node 0 (requantize 'rq'): clamp range");
    b = q8_builder_new();
    int64_t fshape[2] = {-1, 3};
    x = q8_builder_input(b, "x", Q8_F32, 2, fshape);
    ck_assert_int_eq(q8_builder_requantize(b, "rq", x, qp(Q8_U8, 0.1f, 0), Q8_ACT_NONE), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_FORMAT,
                  "node 0 (requantize 'rq'): input (value 0) is f32, requantize needs u8 or i8");
}
END_TEST

static bool node_has_attr(const char *path, const char *node, const char *attr)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    hid_t g = H5Gopen2(f, node, H5P_DEFAULT);
    ck_assert_int_ge(g, 0);
    bool has = H5Aexists(g, attr) > 0;
    H5Gclose(g), H5Fclose(f);
    return has;
}

START_TEST(full_range_clamps_are_left_out_of_files_and_restricted_ones_round_trip)
{
    char *dir = make_tmpdir(), path[128];
    snprintf(path, sizeof path, "%s/ranges.h5", dir);
    int64_t shape[4] = {-1, 2, 3, 4};
    q8_pool2d_desc pd = {{2, 2}, {1, 1}, {0, 0}, {0, 0}, false, true, 0};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input(b, "x", Q8_F32, 4, shape);
    int32_t q = q8_builder_quantize(b, "full", x, qp(Q8_U8, 0.05f, 3));
    int32_t r = q8_builder_quantize(b, "narrow", x, qpr(Q8_U8, 0.05f, 3, 0, 127));
    int32_t xs[2] = {q, r};
    int32_t c = q8_builder_cat(b, "cat", xs, 2, qpr(Q8_U8, 0.1f, 3, 2, 90));
    int32_t a = q8_builder_avg_pool2d(b, "avg", c, &pd, NULL);
    int32_t rq = q8_builder_requantize(b, "rq", a, qpr(Q8_I8, 0.08f, -100, -120, 7),
                                       Q8_ACT_RELU6);
    q8_builder_output(b, q8_builder_dequantize(b, "dq", rq));
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    CK_Q8(q8_model_save(m, path));
    /* files without restricted ranges stay what readers of the first version-1 files read */
    ck_assert(!node_has_attr(path, "nodes/0", "clamp_min"));
    ck_assert(!node_has_attr(path, "nodes/0", "clamp_max"));
    ck_assert(!node_has_attr(path, "nodes/3", "clamp_min")); /* avg keeps the input's */
    ck_assert(node_has_attr(path, "nodes/1", "clamp_max"));
    ck_assert(node_has_attr(path, "nodes/2", "clamp_min"));
    ck_assert(node_has_attr(path, "nodes/4", "clamp_min")); /* requantize: always */
    q8_model *l = q8_model_load(path);
    ck_assert_msg(l != NULL, "%s", q8_last_error());
    for (int32_t k = 0; k < m->n_nodes; k++)
        ck_assert_int_eq(memcmp(m->nodes[k].attr, l->nodes[k].attr, sizeof m->nodes[k].attr), 0);
    ck_assert_int_eq(l->nodes[0].attr[1], 255); /* the default: the dtype's range */
    ck_assert_int_eq(l->nodes[1].attr[1], 127);
    rng rg = {18};
    float in[3 * 24];
    for (int i = 0; i < 3 * 24; i++)
        in[i] = rng_float(&rg, -2.0f, 12.0f);
    const void *ins[1] = {in};
    CK_Q8(q8_model_run_values(m, ins, 3));
    CK_Q8(q8_model_run_values(l, ins, 3));
    for (int32_t id = 0; id < m->n_values; id++) {
        q8_value_info va, vb;
        CK_Q8(q8_model_value(m, id, &va));
        CK_Q8(q8_model_value(l, id, &vb));
        ck_assert_int_eq(memcmp(va.data, vb.data, (size_t)(3 * m->values[id].item_numel) *
                                                      q8_dtype_size(va.dtype)), 0);
    }
    q8_value_info vn;
    CK_Q8(q8_model_value(l, r, &vn));
    for (int i = 0; i < 3 * 24; i++)
        ck_assert_int_le(((const uint8_t *)vn.data)[i], 127);
    q8_model_free(m);
    q8_model_free(l);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* ---------------------------------------------------------------------------------
 * float ops (partly-float graphs: dynamic quantization keeps convolutions float)
 * ------------------------------------------------------------------------------- */

static void fill_floats(rng *r, float *p, int64_t n, float lo, float hi)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = rng_float(r, lo, hi);
}

static double act_double(double v, q8_act act)
{
    if (act != Q8_ACT_NONE)
        v = v < 0 ? 0 : v;
    if (act == Q8_ACT_RELU6)
        v = v > 6 ? 6 : v;
    return v;
}

/* Float32 results against a double reference whose error bound is relative to the sum
 * of the magnitudes of the terms (any summation order is within 1e-5 of it). */
static void ck_close(float got, double want, double magnitude, const char *what, int64_t i)
{
    ck_assert_msg(fabs((double)got - want) <= 1e-5 * magnitude + 1e-30,
                  "%s element %" PRId64 ": %.9g vs reference %.9g (magnitude %g)", what, i,
                  (double)got, want, magnitude);
}

typedef struct fconv_case {
    int64_t n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups;
    q8_act act;
    bool bias;
} fconv_case;

/* One conv2d_f32 node on random data, run with both GEMM kernels against naive double
 * loops. */
static void check_conv_f32(const fconv_case *fc, uint64_t seed)
{
    rng r = {seed};
    int64_t cg = fc->c / fc->groups, og = fc->o / fc->groups, k = cg * fc->kh * fc->kw;
    int64_t oh_n = q8_window_out_size(fc->h, fc->kh, fc->sh, fc->ph, fc->dh, false);
    int64_t ow_n = q8_window_out_size(fc->w, fc->kw, fc->sw, fc->pw, fc->dw, false);
    float *x = malloc((size_t)(fc->n * fc->c * fc->h * fc->w) * sizeof *x);
    float *w = malloc((size_t)(fc->o * k) * sizeof *w);
    float *bias = malloc((size_t)fc->o * sizeof *bias);
    fill_floats(&r, x, fc->n * fc->c * fc->h * fc->w, -2.0f, 2.0f);
    fill_floats(&r, w, fc->o * k, -0.5f, 0.5f);
    fill_floats(&r, bias, fc->o, -1.0f, 1.0f);
    q8_builder *b = q8_builder_new();
    int64_t xs[4] = {-1, fc->c, fc->h, fc->w};
    int32_t xi = q8_builder_input(b, "x", Q8_F32, 4, xs);
    q8_conv2d_desc cd = {fc->o, {fc->kh, fc->kw}, {fc->sh, fc->sw}, {fc->ph, fc->pw},
                         {fc->dh, fc->dw}, fc->groups};
    q8_builder_output(b, q8_builder_conv2d_f32(b, "conv", xi, &cd, w, fc->bias ? bias : NULL,
                                               fc->act));
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    for (int kernel = 0; kernel < 2; kernel++) {
        if (kernel == 1 && !q8_sgemm_avx2_available())
            break;
        m->kernel = kernel ? Q8_GEMM_AVX2 : Q8_GEMM_REFERENCE;
        q8_value_info v;
        const float *y = run1(m, x, fc->n, &v);
        ck_assert_int_eq(v.shape[2], oh_n);
        ck_assert_int_eq(v.shape[3], ow_n);
        for (int64_t bt = 0; bt < fc->n; bt++)
            for (int64_t o = 0; o < fc->o; o++)
                for (int64_t oh = 0; oh < oh_n; oh++)
                    for (int64_t ow = 0; ow < ow_n; ow++) {
                        double sum = fc->bias ? bias[o] : 0.0, mag = fabs(sum);
                        for (int64_t c = 0; c < cg; c++)
                            for (int64_t i = 0; i < fc->kh; i++)
                                for (int64_t j = 0; j < fc->kw; j++) {
                                    int64_t ih = oh * fc->sh - fc->ph + i * fc->dh;
                                    int64_t iw = ow * fc->sw - fc->pw + j * fc->dw;
                                    if (ih < 0 || ih >= fc->h || iw < 0 || iw >= fc->w)
                                        continue;
                                    int64_t ch = o / og * cg + c;
                                    double t = (double)x[((bt * fc->c + ch) * fc->h + ih) * fc->w +
                                                         iw] *
                                               w[o * k + (c * fc->kh + i) * fc->kw + j];
                                    sum += t;
                                    mag += fabs(t);
                                }
                        int64_t yi = ((bt * fc->o + o) * oh_n + oh) * ow_n + ow;
                        ck_close(y[yi], act_double(sum, fc->act), mag, "conv2d_f32", yi);
                    }
    }
    free(x), free(w), free(bias);
    q8_model_free(m);
}

START_TEST(conv2d_f32_matches_a_double_reference_on_odd_shapes)
{
    /* n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups, act, bias */
    const fconv_case cases[] = {
        {1, 3, 7, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, Q8_ACT_RELU, true},
        {3, 4, 9, 6, 6, 3, 2, 2, 2, 1, 0, 1, 1, 2, Q8_ACT_NONE, false}, /* groups, stride 2 */
        {2, 3, 8, 8, 5, 3, 3, 1, 1, 2, 2, 2, 2, 1, Q8_ACT_RELU6, true},  /* dilation */
        {2, 4, 6, 7, 8, 3, 3, 2, 1, 1, 1, 1, 1, 4, Q8_ACT_NONE, true},   /* depthwise x2 */
        {1, 5, 5, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5, Q8_ACT_RELU, false},  /* depthwise */
        {3, 1, 6, 9, 3, 2, 3, 1, 2, 0, 1, 1, 1, 1, Q8_ACT_NONE, true},   /* C = 1 */
        {1, 40, 20, 17, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, Q8_ACT_RELU, true}, /* K 360: 2 chunks */
        {2, 16, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, Q8_ACT_RELU, true}, /* refcnn conv2 */
        {1, 6, 5, 4, 4, 1, 1, 1, 1, 0, 0, 1, 1, 2, Q8_ACT_RELU6, true},    /* 1x1, groups */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_conv_f32(&cases[i], 400 + i);
}
END_TEST

START_TEST(conv2d_f32_gives_hand_computed_values)
{
    /* x = 1..9 in a 3x3 image. Weight [[1, 0], [0, -1]] + 0.5: x[i][j] - x[i+1][j+1] + 0.5
     * = -3.5 everywhere. All-ones 2x2, pad 1, stride 2, bias 0.5, relu6: the corners
     * 1 + 0.5, 2 + 3 + 0.5, 4 + 7 + 0.5 -> 6, 5 + 6 + 8 + 9 + 0.5 -> 6. */
    int64_t shape[4] = {-1, 1, 3, 3};
    const float diag[4] = {1, 0, 0, -1}, ones[4] = {1, 1, 1, 1}, half[1] = {0.5f};
    q8_conv2d_desc d1 = {1, {2, 2}, {1, 1}, {0, 0}, {1, 1}, 1};
    q8_conv2d_desc d2 = {1, {2, 2}, {2, 2}, {1, 1}, {1, 1}, 1};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input(b, "x", Q8_F32, 4, shape);
    int32_t y1 = q8_builder_conv2d_f32(b, "diag", x, &d1, diag, half, Q8_ACT_NONE);
    int32_t y2 = q8_builder_conv2d_f32(b, "ones", x, &d2, ones, half, Q8_ACT_RELU6);
    q8_builder_output(b, y1);
    q8_builder_output(b, y2);
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    const float in[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const void *ins[1] = {in};
    CK_Q8(q8_model_run_values(m, ins, 1));
    q8_value_info v1, v2;
    CK_Q8(q8_model_value(m, y1, &v1));
    CK_Q8(q8_model_value(m, y2, &v2));
    const float *a = v1.data, *c = v2.data;
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(a[i], -3.5f);
    ck_assert_float_eq(c[0], 1.5f);
    ck_assert_float_eq(c[1], 5.5f);
    ck_assert_float_eq(c[2], 6.0f);
    ck_assert_float_eq(c[3], 6.0f);
    q8_model_free(m);
}
END_TEST

START_TEST(sgemm_kernels_match_a_double_product_on_edge_tiles)
{
    const int64_t shapes[][3] = {{1, 1, 1}, {5, 17, 3}, {6, 16, 10}, {13, 35, 70}, {7, 3, 200}};
    rng r = {19};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int64_t m = shapes[t][0], n = shapes[t][1], k = shapes[t][2], ldc = n + 3;
        float *a = malloc((size_t)(m * k) * sizeof *a), *bt = malloc((size_t)(n * k) * sizeof *bt);
        float *ap = q8_alloc((size_t)(q8_sgemm_panels(m, Q8_SGEMM_MR) * Q8_SGEMM_MR * k) * 4);
        float *bp = q8_alloc((size_t)(q8_sgemm_panels(n, Q8_SGEMM_NR) * Q8_SGEMM_NR * k) * 4);
        float *c = malloc((size_t)(m * ldc) * sizeof *c), br[13], bc[35];
        fill_floats(&r, a, m * k, -1.0f, 1.0f);
        fill_floats(&r, bt, n * k, -1.0f, 1.0f);
        fill_floats(&r, br, m, -1.0f, 1.0f);
        fill_floats(&r, bc, n, -1.0f, 1.0f);
        q8_sgemm_pack_a(m, k, a, k, ap);
        q8_sgemm_pack_bt(n, k, bt, k, bp);
        for (int variant = 0; variant < 6; variant++) {
            int kernel = variant & 1;
            if (kernel && !q8_sgemm_avx2_available())
                continue;
            const float *bias_row = variant / 2 == 1 ? br : NULL;
            const float *bias_col = variant / 2 == 2 ? bc : NULL;
            q8_act act = (q8_act)(variant / 2);
            for (int64_t i = 0; i < m * ldc; i++)
                c[i] = 1234.5f; /* sentinel: the gaps between rows stay untouched */
            q8_sgemm(kernel ? Q8_GEMM_AVX2 : Q8_GEMM_REFERENCE, m, n, k, ap, bp, c, ldc, bias_row,
                     bias_col, act);
            for (int64_t i = 0; i < m; i++) {
                for (int64_t j = 0; j < n; j++) {
                    double sum = 0, mag = 0;
                    for (int64_t kk = 0; kk < k; kk++) {
                        sum += (double)a[i * k + kk] * bt[j * k + kk];
                        mag += fabs((double)a[i * k + kk] * bt[j * k + kk]);
                    }
                    sum += (bias_row ? bias_row[i] : 0.0) + (bias_col ? bias_col[j] : 0.0);
                    ck_close(c[i * ldc + j], act_double(sum, act), mag + 2, "sgemm", i * n + j);
                }
                for (int64_t j = n; j < ldc; j++)
                    ck_assert_float_eq(c[i * ldc + j], 1234.5f);
            }
        }
        free(a), free(bt), free(c);
        q8_free(ap), q8_free(bp);
    }
}
END_TEST

START_TEST(linear_f32_matches_a_double_reference_over_chunks)
{
    const struct {
        int64_t n, k, o;
        q8_act act;
        bool bias;
    } cases[] = {{1, 10, 7, Q8_ACT_NONE, true}, {7, 33, 17, Q8_ACT_RELU6, false},
                 {300, 20, 3, Q8_ACT_RELU, true}};
    rng r = {20};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int64_t n = cases[t].n, k = cases[t].k, o = cases[t].o;
        float *x = malloc((size_t)(n * k) * sizeof *x), *w = malloc((size_t)(o * k) * sizeof *w);
        float bias[17];
        fill_floats(&r, x, n * k, -2.0f, 2.0f);
        fill_floats(&r, w, o * k, -0.5f, 0.5f);
        fill_floats(&r, bias, o, -1.0f, 1.0f);
        q8_builder *b = q8_builder_new();
        int64_t xs[2] = {-1, k};
        int32_t xi = q8_builder_input(b, "x", Q8_F32, 2, xs);
        q8_builder_output(b, q8_builder_linear_f32(b, "fc", xi, o, w,
                                                   cases[t].bias ? bias : NULL, cases[t].act));
        q8_model *m = q8_builder_finish(b);
        ck_assert_msg(m != NULL, "%s", q8_last_error());
        for (int kernel = 0; kernel < 2; kernel++) {
            if (kernel == 1 && !q8_sgemm_avx2_available())
                break;
            m->kernel = kernel ? Q8_GEMM_AVX2 : Q8_GEMM_REFERENCE;
            q8_value_info v;
            const float *y = run1(m, x, n, &v);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < o; j++) {
                    double sum = cases[t].bias ? bias[j] : 0.0, mag = fabs(sum);
                    for (int64_t kk = 0; kk < k; kk++) {
                        sum += (double)x[i * k + kk] * w[j * k + kk];
                        mag += fabs((double)x[i * k + kk] * w[j * k + kk]);
                    }
                    ck_close(y[i * o + j], act_double(sum, cases[t].act), mag, "linear_f32",
                             i * o + j);
                }
        }
        free(x), free(w);
        q8_model_free(m);
    }
}
END_TEST

/* Bitwise equality of floats, NaN equal to NaN (and -0.0 distinct from 0.0). */
static void ck_same_float(float got, float want, const char *what, int64_t i)
{
    uint32_t a, c;
    memcpy(&a, &got, 4);
    memcpy(&c, &want, 4);
    ck_assert_msg(a == c || (isnan(got) && isnan(want)), "%s element %" PRId64 ": %.9g vs %.9g",
                  what, i, (double)got, (double)want);
}

static float relu_f(float v) { return v < 0.0f ? 0.0f : v; }

START_TEST(add_f32_and_mul_f32_are_elementwise_with_fused_activation)
{
    int64_t shape[3] = {-1, 5, 7}, other[3] = {-1, 7, 5};
    q8_builder *b = q8_builder_new();
    int32_t a = q8_builder_input(b, "a", Q8_F32, 3, shape);
    int32_t c = q8_builder_input(b, "b", Q8_F32, 3, shape);
    int32_t s = q8_builder_add_f32(b, "sum", a, c, Q8_ACT_RELU);
    int32_t p = q8_builder_mul_f32(b, "prod", a, c, Q8_ACT_NONE);
    int32_t p6 = q8_builder_mul_f32(b, "prod6", a, c, Q8_ACT_RELU6);
    q8_builder_output(b, s);
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    rng r = {21};
    float x[2 * 35], y[2 * 35];
    fill_floats(&r, x, 70, -4.0f, 4.0f);
    fill_floats(&r, y, 70, -4.0f, 4.0f);
    x[0] = NAN, x[1] = -0.0f, y[1] = -0.0f, x[2] = INFINITY, y[2] = -INFINITY;
    const void *ins[2] = {x, y};
    CK_Q8(q8_model_run_values(m, ins, 2));
    q8_value_info vs, vp, v6;
    CK_Q8(q8_model_value(m, s, &vs));
    CK_Q8(q8_model_value(m, p, &vp));
    CK_Q8(q8_model_value(m, p6, &v6));
    for (int64_t i = 0; i < 70; i++) {
        float sum = x[i] + y[i], prod = x[i] * y[i];
        ck_same_float(((const float *)vs.data)[i], relu_f(sum), "add_f32", i);
        ck_same_float(((const float *)vp.data)[i], prod, "mul_f32", i);
        ck_same_float(((const float *)v6.data)[i], prod > 6.0f ? 6.0f : relu_f(prod), "relu6", i);
    }
    ck_assert(isnan(((const float *)vs.data)[0]));       /* relu keeps NaN */
    ck_assert(signbit(((const float *)vs.data)[1]));     /* -0 + -0 = -0, relu keeps it */
    ck_assert(isnan(((const float *)vs.data)[2]));       /* inf - inf */
    q8_model_free(m);
    b = q8_builder_new();
    a = q8_builder_input(b, "a", Q8_F32, 3, shape);
    c = q8_builder_input(b, "b", Q8_F32, 3, other);
    ck_assert_int_eq(q8_builder_add_f32(b, "sum", a, c, Q8_ACT_NONE), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_SHAPE,
                  "node 0 (add_f32 'sum'): inputs have shapes [N, 5, 7] and [N, 7, 5]");
}
END_TEST

START_TEST(cat_f32_concatenates_along_channels)
{
    int64_t s1[3] = {-1, 2, 3}, s2[3] = {-1, 1, 3};
    q8_builder *b = q8_builder_new();
    int32_t xs[2] = {q8_builder_input(b, "a", Q8_F32, 3, s1),
                     q8_builder_input(b, "b", Q8_F32, 3, s2)};
    q8_builder_output(b, q8_builder_cat_f32(b, "cat", xs, 2));
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    const float a[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, c[6] = {-1, -2, -3, -4, -5, -6};
    const void *ins[2] = {a, c};
    CK_Q8(q8_model_run_values(m, ins, 2));
    q8_value_info v;
    CK_Q8(q8_model_value(m, q8_model_output_id(m, 0), &v));
    const float want[18] = {1, 2, 3, 4, 5, 6, -1, -2, -3, 7, 8, 9, 10, 11, 12, -4, -5, -6};
    ck_assert_int_eq(v.shape[1], 3);
    ck_assert_int_eq(memcmp(v.data, want, sizeof want), 0);
    q8_model_free(m);
}
END_TEST

/* A single float pooling node on an (N, C, H, W) input. */
static q8_model *pool_f32_model(const char *op, int64_t c, int64_t h, int64_t w,
                                const q8_pool2d_desc *d, int64_t oh, int64_t ow)
{
    int64_t shape[4] = {-1, c, h, w};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input(b, "x", Q8_F32, 4, shape);
    int32_t y = !strcmp(op, "max")   ? q8_builder_max_pool2d_f32(b, "pool", x, d)
                : !strcmp(op, "avg") ? q8_builder_avg_pool2d_f32(b, "pool", x, d)
                                     : q8_builder_adaptive_avg_pool2d_f32(b, "pool", x, oh, ow);
    q8_builder_output(b, y);
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    return m;
}

START_TEST(max_pool2d_f32_lets_nan_win_and_gives_minus_inf_to_empty_windows)
{
    const q8_pool2d_desc cases[] = {
        {{2, 2}, {2, 2}, {0, 0}, {1, 1}, false, false, 0},
        {{3, 3}, {2, 2}, {1, 1}, {1, 1}, true, false, 0},
        {{3, 2}, {1, 2}, {1, 1}, {2, 1}, false, false, 0},
        {{2, 3}, {3, 2}, {1, 0}, {1, 1}, true, false, 0},
    };
    rng r = {22};
    const int64_t n = 2, c = 3, h = 7, w = 6;
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const q8_pool2d_desc *d = &cases[t];
        q8_model *m = pool_f32_model("max", c, h, w, d, 0, 0);
        float x[2 * 3 * 7 * 6];
        fill_floats(&r, x, n * c * h * w, -5.0f, 5.0f);
        x[17] = NAN;
        q8_value_info v;
        const float *y = run1(m, x, n, &v);
        int64_t oh_n = v.shape[2], ow_n = v.shape[3];
        int nan_out = 0;
        for (int64_t p = 0; p < n * c; p++)
            for (int64_t oh = 0; oh < oh_n; oh++)
                for (int64_t ow = 0; ow < ow_n; ow++) {
                    float best = -INFINITY;
                    for (int64_t i = 0; i < d->kernel[0]; i++)
                        for (int64_t j = 0; j < d->kernel[1]; j++) {
                            int64_t ih = oh * d->stride[0] - d->padding[0] + i * d->dilation[0];
                            int64_t iw = ow * d->stride[1] - d->padding[1] + j * d->dilation[1];
                            if (ih < 0 || ih >= h || iw < 0 || iw >= w)
                                continue;
                            float e = x[(p * h + ih) * w + iw];
                            best = e > best || isnan(e) ? e : best;
                        }
                    int64_t yi = (p * oh_n + oh) * ow_n + ow;
                    ck_same_float(y[yi], best, "max_pool2d_f32", yi);
                    nan_out += isnan(y[yi]);
                }
        ck_assert_int_gt(nan_out, 0);
        q8_model_free(m);
    }
    /* H = 1, kernel 2 with dilation 2 and padding 1: the window reads rows -1 and 1 */
    q8_pool2d_desc empty = {{2, 1}, {1, 1}, {1, 0}, {2, 1}, false, false, 0};
    q8_model *m = pool_f32_model("max", 1, 1, 3, &empty, 0, 0);
    const float x[3] = {1, 2, 3};
    q8_value_info v;
    const float *y = run1(m, x, 1, &v);
    ck_assert_int_eq(v.shape[2], 1);
    for (int i = 0; i < 3; i++)
        ck_assert(isinf(y[i]) && y[i] < 0);
    q8_model_free(m);
}
END_TEST

START_TEST(avg_pool2d_f32_sums_row_by_row_then_divides_once)
{
    const q8_pool2d_desc cases[] = {
        {{2, 2}, {2, 2}, {0, 0}, {0, 0}, false, true, 0},
        {{3, 3}, {2, 2}, {1, 1}, {0, 0}, true, true, 0},
        {{3, 3}, {2, 2}, {1, 1}, {0, 0}, true, false, 0},
        {{3, 2}, {1, 2}, {1, 1}, {0, 0}, false, false, 0},
        {{2, 2}, {1, 1}, {1, 0}, {0, 0}, false, true, 3},
    };
    rng r = {23};
    const int64_t n = 2, c = 2, h = 7, w = 6;
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const q8_pool2d_desc *d = &cases[t];
        q8_model *m = pool_f32_model("avg", c, h, w, d, 0, 0);
        float x[2 * 2 * 7 * 6];
        fill_floats(&r, x, n * c * h * w, -5.0f, 5.0f);
        q8_value_info v;
        const float *y = run1(m, x, n, &v);
        int64_t oh_n = v.shape[2], ow_n = v.shape[3], kh = d->kernel[0], kw = d->kernel[1];
        int64_t sh = d->stride[0], sw = d->stride[1], ph = d->padding[0], pw = d->padding[1];
        for (int64_t p = 0; p < n * c; p++)
            for (int64_t oh = 0; oh < oh_n; oh++)
                for (int64_t ow = 0; ow < ow_n; ow++) {
                    int64_t h0 = oh * sh - ph, w0 = ow * sw - pw;
                    int64_t h1 = h0 + kh < h + ph ? h0 + kh : h + ph;
                    int64_t w1 = w0 + kw < w + pw ? w0 + kw : w + pw;
                    int64_t pool = (h1 - h0) * (w1 - w0);
                    h0 = h0 < 0 ? 0 : h0, w0 = w0 < 0 ? 0 : w0;
                    h1 = h1 > h ? h : h1, w1 = w1 > w ? w : w1;
                    float sum = 0.0f;
                    for (int64_t ih = h0; ih < h1; ih++)
                        for (int64_t iw = w0; iw < w1; iw++)
                            sum += x[(p * h + ih) * w + iw];
                    int64_t divide = d->divisor_override   ? d->divisor_override
                                     : d->count_include_pad ? pool
                                                            : (h1 - h0) * (w1 - w0);
                    int64_t yi = (p * oh_n + oh) * ow_n + ow;
                    ck_same_float(y[yi], sum / (float)divide, "avg_pool2d_f32", yi);
                }
        q8_model_free(m);
    }
}
END_TEST

START_TEST(adaptive_avg_pool2d_f32_divides_like_pytorch)
{
    rng r = {24};
    const int64_t n = 2, c = 3, h = 7, w = 5;
    const int64_t sizes[][2] = {{3, 2}, {1, 1}, {7, 5}, {4, 3}};
    for (size_t t = 0; t < 4; t++) {
        int64_t oh_n = sizes[t][0], ow_n = sizes[t][1];
        q8_model *m = pool_f32_model("adaptive", c, h, w, NULL, oh_n, ow_n);
        float x[2 * 3 * 7 * 5];
        fill_floats(&r, x, n * c * h * w, -5.0f, 5.0f);
        q8_value_info v;
        const float *y = run1(m, x, n, &v);
        for (int64_t p = 0; p < n * c; p++)
            for (int64_t oh = 0; oh < oh_n; oh++)
                for (int64_t ow = 0; ow < ow_n; ow++) {
                    int64_t hs = (int64_t)floorf((float)(oh * h) / (float)oh_n);
                    int64_t he = (int64_t)ceilf((float)((oh + 1) * h) / (float)oh_n);
                    int64_t ws = (int64_t)floorf((float)(ow * w) / (float)ow_n);
                    int64_t we = (int64_t)ceilf((float)((ow + 1) * w) / (float)ow_n);
                    float sum = 0.0f;
                    for (int64_t ih = hs; ih < he; ih++)
                        for (int64_t iw = ws; iw < we; iw++)
                            sum += x[(p * h + ih) * w + iw];
                    /* 1x1: torch.mean over (H, W), one division; else sum / kh / kw */
                    float want = oh_n == 1 && ow_n == 1
                                     ? sum / (float)(h * w)
                                     : sum / (float)(he - hs) / (float)(we - ws);
                    int64_t yi = (p * oh_n + oh) * ow_n + ow;
                    ck_same_float(y[yi], want, "adaptive_avg_pool2d_f32", yi);
                }
        q8_model_free(m);
    }
}
END_TEST

START_TEST(clamp_f32_and_hardswish_f32_follow_pytorch_nan_included)
{
    int64_t shape[2] = {-1, 16};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input(b, "x", Q8_F32, 2, shape);
    int32_t r = q8_builder_clamp_f32(b, "relu", x, Q8_ACT_RELU);
    int32_t r6 = q8_builder_clamp_f32(b, "relu6", x, Q8_ACT_RELU6);
    int32_t hs = q8_builder_hardswish_f32(b, "hs", x);
    q8_builder_output(b, r);
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    const float in[16] = {-7, -3, -1.5f, -0.0f, 0, 0.5f, 3, 5.9f,
                          6, 7, INFINITY, -INFINITY, NAN, 1e-30f, -1e-30f, 1};
    const void *ins[1] = {in};
    CK_Q8(q8_model_run_values(m, ins, 1));
    q8_value_info vr, v6, vh;
    CK_Q8(q8_model_value(m, r, &vr));
    CK_Q8(q8_model_value(m, r6, &v6));
    CK_Q8(q8_model_value(m, hs, &vh));
    const float *yr = vr.data, *y6 = v6.data, *yh = vh.data;
    const float relu[16] = {0, 0, 0, -0.0f, 0, 0.5f, 3, 5.9f, 6, 7, INFINITY, 0, NAN, 1e-30f, 0, 1};
    const float relu6[16] = {0, 0, 0, -0.0f, 0, 0.5f, 3, 5.9f, 6, 6, 6, 0, NAN, 1e-30f, 0, 1};
    for (int i = 0; i < 16; i++) {
        ck_same_float(yr[i], relu[i], "relu", i);
        ck_same_float(y6[i], relu6[i], "relu6", i);
        float t = in[i] + 3.0f; /* PyTorch: x * min(max(x + 3, 0), 6) / 6, NaN kept */
        t = t < 0.0f ? 0.0f : t > 6.0f ? 6.0f : t;
        ck_same_float(yh[i], in[i] * t / 6.0f, "hardswish", i);
    }
    ck_assert_float_eq(yh[6], 3.0f);              /* hardswish(3) = 3 */
    ck_assert_float_eq(yh[15], 4.0f / 6.0f);      /* hardswish(1) = 1 * 4 / 6 */
    ck_assert(yh[1] == 0.0f && yh[0] == 0.0f);    /* -3 and below: 0 */
    ck_assert(isinf(yh[10]) && isnan(yh[11]) && isnan(yh[12])); /* inf, -inf * 0, NaN */
    q8_model_free(m);
    b = q8_builder_new();
    x = q8_builder_input(b, "x", Q8_F32, 2, shape);
    ck_assert_int_eq(q8_builder_clamp_f32(b, "id", x, Q8_ACT_NONE), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_ARG,
                  "node 0 (clamp_f32 'id'): act must be RELU or RELU6");
}
END_TEST

/* x f32 (N,2,9,8) -> conv2d_f32 3x3 pad 1 relu -> max_pool2d_f32 2 -> conv2d_f32 dw relu6 ->
 * add_f32 (skip) -> avg_pool2d_f32 -> adaptive_avg_pool2d_f32 (1,1) -> flatten ->
 * linear_dynamic: PyTorch's quantize_dynamic of a conv net (convs stay float). */
static q8_model *dynamic_model(uint64_t seed)
{
    rng r = {seed};
    float w1[4 * 18], b1[4], w2[4 * 9], b2[4], sw[3], bias[3];
    int8_t w3[3 * 4];
    fill_floats(&r, w1, 72, -0.4f, 0.4f), fill_floats(&r, b1, 4, -0.5f, 0.5f);
    fill_floats(&r, w2, 36, -0.4f, 0.4f), fill_floats(&r, b2, 4, -0.5f, 0.5f);
    fill_floats(&r, sw, 3, 0.005f, 0.01f), fill_floats(&r, bias, 3, -0.5f, 0.5f);
    fill_weights(&r, w3, 12);
    q8_builder *b = q8_builder_new();
    q8_builder_set_attr_text(b, "source_model", "test-dynamic");
    int64_t xs[4] = {-1, 2, 9, 8};
    int32_t x = q8_builder_input(b, "x", Q8_F32, 4, xs);
    q8_conv2d_desc c1 = {4, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 1};
    x = q8_builder_conv2d_f32(b, "features.0", x, &c1, w1, b1, Q8_ACT_RELU);
    q8_pool2d_desc mp = {{2, 2}, {2, 2}, {0, 0}, {1, 1}, false, true, 0};
    int32_t p = q8_builder_max_pool2d_f32(b, "features.2", x, &mp);
    q8_conv2d_desc c2 = {4, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 4};
    int32_t d = q8_builder_conv2d_f32(b, "features.3", p, &c2, w2, b2, Q8_ACT_RELU6);
    int32_t s = q8_builder_add_f32(b, "skip", d, p, Q8_ACT_NONE);
    q8_pool2d_desc ap = {{2, 2}, {1, 1}, {0, 0}, {0, 0}, false, true, 0};
    s = q8_builder_avg_pool2d_f32(b, "avg", s, &ap);
    s = q8_builder_adaptive_avg_pool2d_f32(b, "pool", s, 1, 1);
    s = q8_builder_flatten(b, "flatten", s);
    q8_weights wt = {w3, sw, 3, bias};
    q8_builder_output(b, q8_builder_linear_dynamic(b, "fc", s, 3, &wt, Q8_ACT_NONE));
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    return m;
}

START_TEST(dynamic_model_round_trips_through_a_file_with_identical_results)
{
    char *dir = make_tmpdir(), path[128];
    snprintf(path, sizeof path, "%s/dynamic.h5", dir);
    q8_model *m = dynamic_model(25);
    CK_Q8(q8_model_save(m, path));
    q8_model *l = q8_model_load(path);
    ck_assert_msg(l != NULL, "%s", q8_last_error());
    rng r = {26};
    float x[3 * 144], y1[9], y2[9];
    fill_floats(&r, x, 3 * 144, -1.0f, 1.0f);
    CK_Q8(q8_model_run(m, x, 3, y1));
    CK_Q8(q8_model_run(l, x, 3, y2));
    ck_assert_int_eq(memcmp(y1, y2, sizeof y1), 0);
    for (int32_t id = 0; id < m->n_values; id++) {
        q8_value_info a, c;
        CK_Q8(q8_model_value(m, id, &a));
        CK_Q8(q8_model_value(l, id, &c));
        ck_assert_int_eq(memcmp(a.data, c.data, (size_t)(3 * m->values[id].item_numel) * 4), 0);
    }
    /* a batch of one gives the same float values up to linear_dynamic */
    CK_Q8(q8_model_run(l, x + 144, 1, y2));
    q8_value_info a;
    int32_t flat = find_value(l, "flatten");
    float keep[4];
    CK_Q8(q8_model_value(l, flat, &a));
    memcpy(keep, a.data, sizeof keep);
    CK_Q8(q8_model_run(l, x, 3, y2));
    CK_Q8(q8_model_value(l, flat, &a));
    ck_assert_int_eq(memcmp(keep, (const float *)a.data + 4, sizeof keep), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    q8_model_describe(l, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "conv2d_f32"));
    ck_assert_ptr_nonnull(strstr(text, "adaptive_avg_pool2d_f32"));
    ck_assert_ptr_nonnull(strstr(text, "act=2"));
    free(text);
    q8_model_free(m);
    q8_model_free(l);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(float_builders_refuse_quantized_inputs_and_non_finite_weights)
{
    int64_t shape[4] = {-1, 1, 4, 4};
    float w[9] = {1, NAN, 3, 4, 5, 6, 7, 8, 9}, bias[2] = {0, INFINITY};
    q8_conv2d_desc cd = {1, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 1};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input_quantized(b, "x", qp(Q8_U8, 0.1f, 0), 4, shape);
    ck_assert_int_eq(q8_builder_conv2d_f32(b, "c", x, &cd, w, NULL, Q8_ACT_NONE), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_FORMAT,
                  "node 0 (conv2d_f32 'c'): input (value 0) is u8, conv2d_f32 needs f32");
    b = q8_builder_new();
    x = q8_builder_input(b, "x", Q8_F32, 4, shape);
    ck_assert_int_eq(q8_builder_conv2d_f32(b, "c", x, &cd, w, NULL, Q8_ACT_NONE), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_FORMAT,
                  "node 0 (conv2d_f32 'c'): constant 'weight'[1] = nan is not finite");
    b = q8_builder_new();
    int64_t fs[2] = {-1, 9};
    x = q8_builder_input(b, "x", Q8_F32, 2, fs);
    ck_assert_int_eq(q8_builder_linear_f32(b, "fc", x, 2, (const float[18]){0}, bias,
                                           Q8_ACT_NONE), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_FORMAT,
                  "node 0 (linear_f32 'fc'): constant 'bias'[1] = inf is not finite");
    b = q8_builder_new();
    x = q8_builder_input_quantized(b, "x", qp(Q8_U8, 0.1f, 0), 4, shape);
    q8_pool2d_desc pd = {{2, 2}, {2, 2}, {0, 0}, {1, 1}, false, true, 0};
    ck_assert_int_eq(q8_builder_max_pool2d_f32(b, "p", x, &pd), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_FORMAT,
                  "node 0 (max_pool2d_f32 'p'): input 0 (value 0) is u8, the op needs f32");
    b = q8_builder_new();
    x = q8_builder_input(b, "x", Q8_F32, 4, shape);
    ck_assert_int_eq(q8_builder_max_pool2d(b, "p", x, &pd), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_FORMAT,
                  "node 0 (max_pool2d 'p'): input 0 (value 0) is f32, the op needs u8 or i8");
}
END_TEST

/* ---------------------------------------------------------------------------------
 * models: build, run, save, load
 * ------------------------------------------------------------------------------- */

/* x f32 (N,1,8,7) -> quantize -> conv 3x3 pad 1 relu -> max_pool 2 -> conv dw 3x3 ->
 * hardswish -> add (skip) -> adaptive avg (2,2) -> flatten -> linear relu6 -> dequantize
 * -> linear_dynamic -> y f32 (N, 3). Weights from `seed`. */
static q8_model *small_model(uint64_t seed, q8_dtype act)
{
    rng r = {seed};
    int8_t w1[4 * 9], w2[4 * 9], w3[6 * 16], w4[3 * 6];
    float s1[4], s2[4], s3[6], s4[3], b1[4], b2[4], b3[6], b4[3];
    fill_weights(&r, w1, 36), fill_weights(&r, w2, 36), fill_weights(&r, w3, 96);
    fill_weights(&r, w4, 18);
    for (int i = 0; i < 6; i++) {
        if (i < 4)
            s1[i] = rng_float(&r, 0.005f, 0.01f), s2[i] = rng_float(&r, 0.005f, 0.01f),
            b1[i] = rng_float(&r, -0.5f, 0.5f), b2[i] = rng_float(&r, -0.5f, 0.5f);
        if (i < 3)
            s4[i] = rng_float(&r, 0.005f, 0.01f), b4[i] = rng_float(&r, -0.5f, 0.5f);
        s3[i] = rng_float(&r, 0.005f, 0.01f), b3[i] = rng_float(&r, -0.5f, 0.5f);
    }
    int32_t z = act == Q8_U8 ? 0 : -128, zm = act == Q8_U8 ? 128 : 0;
    q8_builder *b = q8_builder_new();
    q8_builder_set_attr_text(b, "source_model", "test-small");
    q8_builder_set_attr_text(b, "qconfig", "test: per-channel weights");
    int64_t xs[4] = {-1, 1, 8, 7};
    int32_t x = q8_builder_input(b, "x", Q8_F32, 4, xs);
    x = q8_builder_quantize(b, "quant", x, qp(act, 1.0f / 64, zm));
    q8_conv2d_desc c1 = {4, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 1};
    q8_weights wt1 = {w1, s1, 4, b1};
    x = q8_builder_conv2d(b, "features.0", x, &c1, &wt1, qp(act, 0.02f, z), Q8_ACT_RELU);
    q8_pool2d_desc mp = {{2, 2}, {2, 2}, {0, 0}, {1, 1}, false, true, 0};
    int32_t p = q8_builder_max_pool2d(b, "features.2", x, &mp);
    q8_conv2d_desc c2 = {4, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 4};
    q8_weights wt2 = {w2, s2, 4, b2};
    int32_t d = q8_builder_conv2d(b, "features.3", p, &c2, &wt2, qp(act, 0.03f, zm),
                                  Q8_ACT_NONE);
    d = q8_builder_hardswish(b, "features.4", d, qp(act, 0.025f, zm));
    int32_t s = q8_builder_add(b, "skip", d, p, qp(act, 0.04f, z), Q8_ACT_RELU);
    s = q8_builder_adaptive_avg_pool2d(b, "pool", s, 2, 2, NULL);
    s = q8_builder_flatten(b, "flatten", s);
    q8_weights wt3 = {w3, s3, 6, b3};
    s = q8_builder_linear(b, "fc1", s, 6, &wt3, qp(act, 0.05f, z), Q8_ACT_RELU6);
    s = q8_builder_dequantize(b, "dequant", s);
    q8_weights wt4 = {w4, s4, 3, b4};
    s = q8_builder_linear_dynamic(b, "fc2", s, 3, &wt4, Q8_ACT_NONE);
    q8_builder_output(b, s);
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    return m;
}

START_TEST(small_model_runs_end_to_end_and_batches_are_independent)
{
    for (int a = 0; a < 2; a++) {
        q8_model *m = small_model(11, a ? Q8_I8 : Q8_U8);
        int64_t in_shape[Q8_MAX_DIMS], out_shape[Q8_MAX_DIMS];
        ck_assert_int_eq(q8_model_input_shape(m, in_shape), 4);
        ck_assert_int_eq(in_shape[0], -1);
        ck_assert_int_eq(q8_model_output_shape(m, out_shape), 2);
        ck_assert_int_eq(out_shape[1], 3);
        rng r = {12};
        float x[5 * 56], y5[5 * 3], y1[3];
        for (int i = 0; i < 5 * 56; i++)
            x[i] = rng_float(&r, -1.0f, 1.0f);
        /* the integers of each item do not depend on the batch (only linear_dynamic's
         * per-batch qparams do: compare up to it) */
        CK_Q8(q8_model_run(m, x, 5, y5));
        q8_value_info v;
        int32_t fc1 = find_value(m, "fc1");
        CK_Q8(q8_model_value(m, fc1, &v));
        ck_assert_int_eq(v.dtype, a ? Q8_I8 : Q8_U8);
        uint8_t keep[5 * 6];
        memcpy(keep, v.data, sizeof keep);
        for (int i = 0; i < 5; i++) {
            CK_Q8(q8_model_run(m, x + i * 56, 1, y1));
            CK_Q8(q8_model_value(m, fc1, &v));
            ck_assert_int_eq(memcmp(v.data, keep + i * 6, 6), 0);
        }
        /* a larger batch grows the buffers; a smaller one reuses them */
        float x9[9 * 56], y9[9 * 3];
        for (int i = 0; i < 9 * 56; i++)
            x9[i] = x[i % (5 * 56)];
        CK_Q8(q8_model_run(m, x9, 9, y9));
        ck_assert_int_eq(m->cap_batch, 9);
        CK_Q8(q8_model_run(m, x, 5, y5));
        ck_assert_int_eq(m->cap_batch, 9);
        for (int i = 0; i < 15; i++)
            ck_assert(isfinite(y5[i]));
        q8_model_free(m);
    }
}
END_TEST

START_TEST(more_threads_than_at_load_grow_the_scratch_and_keep_the_results)
{
    omp_set_num_threads(1);
    q8_model *m = small_model(31, Q8_U8);
    ck_assert_int_eq(m->scratch_threads, 1);
    rng r = {32};
    float x[6 * 56], y1[18], y3[18];
    for (int i = 0; i < 6 * 56; i++)
        x[i] = rng_float(&r, -1.0f, 1.0f);
    CK_Q8(q8_model_run(m, x, 6, y1));
    omp_set_num_threads(3);
    CK_Q8(q8_model_run(m, x, 6, y3));
    ck_assert_int_eq(m->scratch_threads, 3);
    ck_assert_int_eq(memcmp(y1, y3, sizeof y1), 0);
    q8_model_free(m);
}
END_TEST

START_TEST(save_then_load_round_trips_every_field_and_result)
{
    char *dir = make_tmpdir(), path[128];
    snprintf(path, sizeof path, "%s/model.h5", dir);
    q8_model *m = small_model(21, Q8_U8);
    CK_Q8(q8_model_save(m, path));
    q8_model *l = q8_model_load(path);
    ck_assert_msg(l != NULL, "%s", q8_last_error());
    ck_assert_int_eq(q8_model_n_values(l), q8_model_n_values(m));
    ck_assert_int_eq(q8_model_n_nodes(l), q8_model_n_nodes(m));
    ck_assert_str_eq(q8_model_attr(l, "source_model"), "test-small");
    ck_assert_str_eq(q8_model_attr(l, "qconfig"), "test: per-channel weights");
    ck_assert_str_eq(q8_model_attr(l, "rounding"), "half_even");
    for (int32_t k = 0; k < m->n_nodes; k++) {
        const q8_node *a = &m->nodes[k], *c = &l->nodes[k];
        ck_assert_int_eq(a->op, c->op);
        ck_assert_str_eq(a->name, c->name);
        ck_assert_int_eq(memcmp(a->attr, c->attr, sizeof a->attr), 0);
        for (int i = 0; i < Q8_MAX_CONSTS; i++) {
            ck_assert_int_eq(a->cst[i].numel, c->cst[i].numel);
            if (a->cst[i].data)
                ck_assert_int_eq(memcmp(a->cst[i].data, c->cst[i].data,
                                        (size_t)a->cst[i].numel * q8_dtype_size(a->cst[i].dtype)),
                                 0);
        }
    }
    rng r = {22};
    float x[3 * 56], y1[9], y2[9];
    for (int i = 0; i < 3 * 56; i++)
        x[i] = rng_float(&r, -1.0f, 1.0f);
    CK_Q8(q8_model_run(m, x, 3, y1));
    CK_Q8(q8_model_run(l, x, 3, y2));
    ck_assert_int_eq(memcmp(y1, y2, sizeof y1), 0);
    /* every value: q8_model_run's fused plan leaves conv -> pool intermediates unwritten */
    const void *ins[1] = {x};
    CK_Q8(q8_model_run_values(m, ins, 3));
    CK_Q8(q8_model_run_values(l, ins, 3));
    for (int32_t id = 0; id < m->n_values; id++) {
        q8_value_info a, c;
        CK_Q8(q8_model_value(m, id, &a));
        CK_Q8(q8_model_value(l, id, &c));
        ck_assert_int_eq(memcmp(a.data, c.data, (size_t)(3 * m->values[id].item_numel) *
                                                    q8_dtype_size(a.dtype)), 0);
    }
    /* no temporary file is left next to the model */
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s/model.h5.tmp-%ld", dir, (long)getpid());
    ck_assert_int_ne(access(tmp, F_OK), 0);
    /* the description names the ops, qparams and sizes */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    q8_model_describe(l, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "conv2d"));
    ck_assert_ptr_nonnull(strstr(text, "'features.3'"));
    ck_assert_ptr_nonnull(strstr(text, "linear_dynamic"));
    ck_assert_ptr_nonnull(strstr(text, "scale 0.0199999996"));
    ck_assert_ptr_nonnull(strstr(text, "constants:"));
    free(text);
    q8_model_free(m);
    q8_model_free(l);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(save_into_a_missing_directory_fails_and_keeps_nothing)
{
    q8_model *m = small_model(23, Q8_U8);
    ck_assert_int_eq(q8_model_save(m, "/nonexistent-dir/q8/model.h5"), Q8_ERR_IO);
    ck_assert_ptr_nonnull(strstr(q8_last_error(), "/nonexistent-dir/q8/model.h5"));
    q8_model_free(m);
}
END_TEST

START_TEST(run_refuses_bad_batches_and_non_float_models)
{
    q8_model *m = small_model(24, Q8_U8);
    float x[56], y[3];
    memset(x, 0, sizeof x);
    ck_assert_int_eq(q8_model_run(m, x, 0, y), Q8_ERR_ARG);
    ck_assert_int_eq(q8_model_run(m, x, INT64_C(1) << 40, y), Q8_ERR_ARG);
    q8_value_info v;
    CK_Q8(q8_model_value(m, 3, &v));
    ck_assert_ptr_null(v.data); /* nothing has run yet */
    ck_assert_int_eq(q8_model_value(m, 99, &v), Q8_ERR_ARG);
    q8_model_free(m);
    int64_t shape[2] = {-1, 4};
    q8_builder *b = q8_builder_new();
    int32_t xi = q8_builder_input_quantized(b, "x", qp(Q8_U8, 0.1f, 0), 2, shape);
    q8_builder_output(b, q8_builder_flatten(b, "f", xi));
    m = q8_builder_finish(b);
    ck_assert_int_eq(q8_model_run(m, x, 1, y), Q8_ERR_STATE);
    q8_model_free(m);
}
END_TEST

/* ---------------------------------------------------------------------------------
 * builder errors
 * ------------------------------------------------------------------------------- */

START_TEST(builder_errors_name_the_node_and_the_first_error_sticks)
{
    int64_t shape[4] = {-1, 3, 5, 5};
    int8_t w[4 * 2 * 9] = {0};
    float sw[4] = {0.01f, 0.01f, 0.01f, 0.01f};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input_quantized(b, "x", qp(Q8_U8, 0.1f, 0), 4, shape);
    q8_conv2d_desc cd = {4, {3, 3}, {1, 1}, {0, 0}, {1, 1}, 2}; /* 3 channels, 2 groups */
    q8_weights wt = {w, sw, 4, NULL};
    ck_assert_int_eq(q8_builder_conv2d(b, "conv", x, &cd, &wt, qp(Q8_U8, 0.1f, 0),
                                       Q8_ACT_NONE),
                     -1);
    ck_assert_ptr_nonnull(strstr(q8_last_error(), "node 0 (conv2d 'conv')"));
    ck_assert_ptr_nonnull(strstr(q8_last_error(), "groups = 2"));
    /* later calls do nothing; finish reports the first error */
    ck_assert_int_eq(q8_builder_flatten(b, "f", x), -1);
    ck_assert_int_eq(q8_builder_status(b), Q8_ERR_SHAPE);
    q8_model *m = q8_builder_finish(b);
    CK_FAILS_WITH(m, Q8_ERR_SHAPE, "node 0 (conv2d 'conv')");
}
END_TEST

START_TEST(builder_refuses_a_bias_that_does_not_fit_int32)
{
    int64_t shape[2] = {-1, 4};
    int8_t w[2 * 4] = {1, 2, 3, 4, 5, 6, 7, 8};
    float sw[2] = {1e-4f, 1e-4f}, bias[2] = {0.5f, 5000.0f};
    q8_builder *b = q8_builder_new();
    int32_t x = q8_builder_input_quantized(b, "x", qp(Q8_U8, 1e-3f, 0), 2, shape);
    q8_weights wt = {w, sw, 2, bias};
    ck_assert_int_eq(q8_builder_linear(b, "fc", x, 2, &wt, qp(Q8_U8, 0.1f, 0),
                                       Q8_ACT_NONE),
                     -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_NUMERIC, "node 0 (linear 'fc'): bias[1] = 5000");
}
END_TEST

START_TEST(builder_refuses_unknown_ops_keys_and_bad_values)
{
    int64_t shape[2] = {-1, 4}, bad_batch[2] = {2, 4}, zero_dim[3] = {-1, 0, 2};
    q8_builder *b = q8_builder_new();
    ck_assert_int_eq(q8_builder_add_value(b, "v", Q8_U8, 2, shape, 0.0f, 0), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_FORMAT, "value 0: scale 0");
    b = q8_builder_new();
    ck_assert_int_eq(q8_builder_add_value(b, "v", Q8_I8, 2, shape, 0.1f, 128), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_FORMAT, "zero_point 128 is outside the i8 range");
    b = q8_builder_new();
    ck_assert_int_eq(q8_builder_add_value(b, "v", Q8_U8, 2, bad_batch, 0.1f, 0), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_FORMAT, "dimension 0 is the batch");
    b = q8_builder_new();
    ck_assert_int_eq(q8_builder_add_value(b, "v", Q8_U8, 3, zero_dim, 0.1f, 0), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_FORMAT, "shape[1] = 0");
    b = q8_builder_new();
    int32_t v = q8_builder_add_value(b, "v", Q8_U8, 2, shape, 0.1f, 0);
    ck_assert_int_eq(q8_builder_add_node(b, "conv3d", "c", &v, 1, &v, 1), -1);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_FORMAT, "node 0 ('c'): unknown op 'conv3d'");
    b = q8_builder_new();
    v = q8_builder_add_value(b, "v", Q8_U8, 2, shape, 0.1f, 0);
    int32_t y = q8_builder_add_value(b, "y", Q8_U8, 2, shape, 0.1f, 0);
    int32_t node = q8_builder_add_node(b, "clamp", "c", &v, 1, &y, 1);
    ck_assert_int_eq(q8_builder_set_attr(b, node, "clamp_mni", 0), Q8_ERR_FORMAT);
    CK_FAILS_WITH(q8_builder_finish(b), Q8_ERR_FORMAT, "node 0 (clamp 'c'): unknown attribute "
                                                       "'clamp_mni'");
}
END_TEST

/* ---------------------------------------------------------------------------------
 * malformed files, crafted with the HDF5 C API
 * ------------------------------------------------------------------------------- */

/* value 0 x f32 (N,3,7,5) -> node 0 quantize -> value 1 u8 -> node 1 conv2d 3->4 3x3
 * pad 1 relu -> value 2 u8 (N,4,7,5) -> node 2 dequantize -> value 3 f32 */
static void save_base_model(const char *path)
{
    int8_t w[4 * 3 * 9];
    float sw[4] = {0.01f, 0.02f, 0.015f, 0.01f}, bias[4] = {0.1f, -0.2f, 0.3f, 0.0f};
    rng r = {30};
    fill_weights(&r, w, sizeof w);
    q8_builder *b = q8_builder_new();
    int64_t xs[4] = {-1, 3, 7, 5};
    int32_t x = q8_builder_input(b, "x", Q8_F32, 4, xs);
    x = q8_builder_quantize(b, "quant", x, qp(Q8_U8, 0.02f, 128));
    q8_conv2d_desc cd = {4, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 1};
    q8_weights wt = {w, sw, 4, bias};
    x = q8_builder_conv2d(b, "conv", x, &cd, &wt, qp(Q8_U8, 0.05f, 0), Q8_ACT_RELU);
    q8_builder_output(b, q8_builder_dequantize(b, "dequant", x));
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    CK_Q8(q8_model_save(m, path));
    q8_model_free(m);
}

static hid_t open_rw(const char *path)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    return f;
}

static void put_attr(const char *path, const char *obj, const char *name, hid_t type,
                     const void *data, int64_t n)
{
    hid_t f = open_rw(path), o = H5Oopen(f, obj, H5P_DEFAULT);
    ck_assert_int_ge(o, 0);
    if (H5Aexists(o, name) > 0)
        H5Adelete(o, name);
    hsize_t dims[1] = {(hsize_t)n};
    hid_t space = n < 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    hid_t a = H5Acreate2(o, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(H5Awrite(a, type, data), 0);
    H5Aclose(a), H5Sclose(space), H5Oclose(o), H5Fclose(f);
}

static void put_text(const char *path, const char *obj, const char *name, const char *text)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(text) + 1);
    put_attr(path, obj, name, t, text, -1);
    H5Tclose(t);
}

static void put_i64(const char *path, const char *obj, const char *name, int64_t v)
{
    put_attr(path, obj, name, H5T_NATIVE_INT64, &v, -1);
}

static void drop(const char *path, const char *obj, const char *attr)
{
    hid_t f = open_rw(path);
    if (attr) {
        hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
        ck_assert_int_ge(H5Adelete(o, attr), 0);
        H5Oclose(o);
    } else {
        ck_assert_int_ge(H5Ldelete(f, obj, H5P_DEFAULT), 0);
    }
    H5Fclose(f);
}

static void put_dataset(const char *path, const char *name, hid_t type, int ndim,
                        const hsize_t *dims, const void *data, bool chunked_empty)
{
    hid_t f = open_rw(path);
    if (H5Lexists(f, name, H5P_DEFAULT) > 0)
        H5Ldelete(f, name, H5P_DEFAULT);
    hid_t space = H5Screate_simple(ndim, dims, NULL), plist = H5Pcreate(H5P_DATASET_CREATE);
    if (chunked_empty) {
        hsize_t chunk[Q8_MAX_DIMS];
        for (int d = 0; d < ndim; d++)
            chunk[d] = 1;
        H5Pset_chunk(plist, ndim, chunk);
    }
    hid_t ds = H5Dcreate2(f, name, type, space, H5P_DEFAULT, plist, H5P_DEFAULT);
    ck_assert_int_ge(ds, 0);
    if (data)
        ck_assert_int_ge(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
    H5Dclose(ds), H5Pclose(plist), H5Sclose(space), H5Fclose(f);
}

typedef void (*corrupt_fn)(const char *path);

static void check_corrupt(corrupt_fn fn, q8_status status, const char *needle)
{
    char *dir = make_tmpdir(), path[128];
    snprintf(path, sizeof path, "%s/m.h5", dir);
    save_base_model(path);
    fn(path);
    q8_model *m = q8_model_load(path);
    CK_FAILS_WITH(m, status, needle);
    ck_assert_ptr_nonnull(strstr(q8_last_error(), path)); /* the file is named */
    unlink(path);
    rmdir(dir);
}

static void c_not_hdf5(const char *path)
{
    FILE *f = fopen(path, "wb");
    fputs("not a model", f);
    fclose(f);
}
static void c_truncated(const char *path) { ck_assert_int_eq(truncate(path, 600), 0); }
static void c_format(const char *path) { put_text(path, "/", "format", "other"); }
static void c_version(const char *path) { put_i64(path, "/", "format_version", 2); }
static void c_rounding(const char *path) { put_text(path, "/", "rounding", "half_up"); }
static void c_unknown_root_attr(const char *path) { put_i64(path, "/", "created", 1); }
static void c_unknown_op(const char *path) { put_text(path, "nodes/1", "op", "conv3d"); }
static void c_input_out_of_range(const char *path)
{
    int32_t ids[1] = {99};
    put_attr(path, "nodes/1", "inputs", H5T_NATIVE_INT32, ids, 1);
}
static void c_use_before_definition(const char *path)
{
    int32_t ids[1] = {2}; /* conv reads its own output: a cycle */
    put_attr(path, "nodes/1", "inputs", H5T_NATIVE_INT32, ids, 1);
}
static void c_produced_twice(const char *path)
{
    int32_t ids[1] = {1};
    put_attr(path, "nodes/2", "outputs", H5T_NATIVE_INT32, ids, 1);
}
static void c_graph_output_undefined(const char *path)
{
    int32_t ids[1] = {0};
    put_attr(path, "/", "inputs", H5T_NATIVE_INT32, ids, 1);
    ids[0] = 1;
    put_attr(path, "/", "inputs", H5T_NATIVE_INT32, ids, 1); /* x is never defined now */
}
static void c_zero_scale(const char *path)
{
    float s = 0.0f;
    put_attr(path, "values/1", "scale", H5T_NATIVE_FLOAT, &s, -1);
}
static void c_nan_scale(const char *path)
{
    float s = NAN;
    put_attr(path, "values/2", "scale", H5T_NATIVE_FLOAT, &s, -1);
}
static void c_negative_scale(const char *path)
{
    float s = -0.5f;
    put_attr(path, "values/2", "scale", H5T_NATIVE_FLOAT, &s, -1);
}
static void c_double_scale(const char *path)
{
    double s = 0.02;
    put_attr(path, "values/1", "scale", H5T_NATIVE_DOUBLE, &s, -1);
}
static void c_zero_point_range(const char *path)
{
    int32_t zp = 300;
    put_attr(path, "values/1", "zero_point", H5T_NATIVE_INT32, &zp, -1);
}
static void c_batch_dim(const char *path)
{
    int64_t shape[4] = {1, 3, 7, 5};
    put_attr(path, "values/0", "shape", H5T_NATIVE_INT64, shape, 4);
}
static void c_huge_dim(const char *path)
{
    int64_t shape[4] = {-1, 3, INT64_C(1) << 40, 5};
    put_attr(path, "values/0", "shape", H5T_NATIVE_INT64, shape, 4);
}
static void c_shift_range(const char *path)
{
    int32_t shift[4] = {70, 31, 31, 31};
    hsize_t dims[1] = {4};
    put_dataset(path, "nodes/1/shift", H5T_NATIVE_INT32, 1, dims, shift, false);
}
static void c_multiplier_mismatch(const char *path)
{
    int32_t mult[4] = {1 << 30, 1 << 30, 1 << 30, 1 << 30};
    hsize_t dims[1] = {4};
    put_dataset(path, "nodes/1/multiplier", H5T_NATIVE_INT32, 1, dims, mult, false);
}
static void c_output_shape(const char *path)
{
    int64_t shape[4] = {-1, 4, 5, 5};
    put_attr(path, "values/2", "shape", H5T_NATIVE_INT64, shape, 4);
}
static void c_weight_channels(const char *path)
{
    int8_t w[4 * 2 * 9] = {0};
    hsize_t dims[4] = {4, 2, 3, 3};
    put_dataset(path, "nodes/1/weight", H5T_NATIVE_INT8, 4, dims, w, false);
}
static void c_bias_size(const char *path)
{
    int32_t bias[3] = {0};
    hsize_t dims[1] = {3};
    put_dataset(path, "nodes/1/bias", H5T_NATIVE_INT32, 1, dims, bias, false);
}
static void c_weight_dtype(const char *path)
{
    int16_t w[4 * 3 * 9] = {0};
    hsize_t dims[4] = {4, 3, 3, 3};
    put_dataset(path, "nodes/1/weight", H5T_NATIVE_INT16, 4, dims, w, false);
}
static void c_weight_no_data(const char *path)
{
    hsize_t dims[4] = {4000, 3000, 3, 3}; /* 108 MB declared, nothing stored */
    put_dataset(path, "nodes/1/weight", H5T_NATIVE_INT8, 4, dims, NULL, true);
}
static void c_weight_scale_inf(const char *path)
{
    float sw[4] = {0.01f, INFINITY, 0.01f, 0.01f};
    hsize_t dims[1] = {4};
    put_dataset(path, "nodes/1/weight_scale", H5T_NATIVE_FLOAT, 1, dims, sw, false);
}
static void c_missing_attr(const char *path) { drop(path, "nodes/1", "clamp_min"); }
static void c_unknown_attr(const char *path) { put_i64(path, "nodes/1", "strid", 2); }
static void c_attr_range(const char *path) { put_i64(path, "nodes/1", "groups", 0); }
static void c_clamp_range(const char *path) { put_i64(path, "nodes/1", "clamp_max", 300); }
static void c_missing_const(const char *path) { drop(path, "nodes/1/multiplier", NULL); }
static void c_missing_value(const char *path) { drop(path, "values/3", NULL); }
static void c_count_mismatch(const char *path) { put_i64(path, "/", "n_nodes", 4); }
static void c_input_dtype(const char *path) { put_text(path, "values/0", "dtype", "u16"); }
static void c_text_not_string(const char *path) { put_i64(path, "nodes/0", "op", 3); }

START_TEST(malformed_files_are_refused_with_the_node_and_field_named)
{
    const struct {
        corrupt_fn fn;
        q8_status status;
        const char *needle;
    } cases[] = {
        {c_not_hdf5, Q8_ERR_FORMAT, "not an HDF5 file"},
        {c_truncated, Q8_ERR_FORMAT, "HDF5"},
        {c_format, Q8_ERR_FORMAT, "not a cqat-q8 model"},
        {c_version, Q8_ERR_UNSUPPORTED, "format_version 2"},
        {c_rounding, Q8_ERR_UNSUPPORTED, "rounding rule 'half_up'"},
        {c_unknown_root_attr, Q8_ERR_FORMAT, "root: unknown attribute 'created'"},
        {c_unknown_op, Q8_ERR_FORMAT, "node 1 ('conv'): unknown op 'conv3d'"},
        {c_input_out_of_range, Q8_ERR_FORMAT, "node 1: input 0 is value 99, but the model has 4"},
        {c_use_before_definition, Q8_ERR_FORMAT,
         "node 1 (conv2d 'conv'): input 0 is value 2, which is not defined before this node"},
        {c_produced_twice, Q8_ERR_FORMAT,
         "node 2 (dequantize 'dequant'): output 0 is value 1, already produced by node 0"},
        {c_graph_output_undefined, Q8_ERR_FORMAT, "node 0 (quantize 'quant'): input 0 is value 0"},
        {c_zero_scale, Q8_ERR_FORMAT, "value 1: scale 0 is not a finite positive number"},
        {c_nan_scale, Q8_ERR_FORMAT, "value 2: scale nan"},
        {c_negative_scale, Q8_ERR_FORMAT, "value 2: scale -0.5"},
        {c_double_scale, Q8_ERR_FORMAT, "value 1: attribute 'scale' must be a float32 scalar"},
        {c_zero_point_range, Q8_ERR_FORMAT, "value 1: zero_point 300 is outside the u8 range"},
        {c_batch_dim, Q8_ERR_FORMAT, "value 0: shape[0] = 1"},
        {c_huge_dim, Q8_ERR_FORMAT, "value 0: shape[2] = 1099511627776 is outside"},
        {c_shift_range, Q8_ERR_FORMAT,
         "node 1 (conv2d 'conv'): multiplier[0]: shift 70 is outside [0, 63]"},
        {c_multiplier_mismatch, Q8_ERR_FORMAT, "does not match the scales"},
        {c_output_shape, Q8_ERR_SHAPE,
         "node 1 (conv2d 'conv'): output (value 2) has shape [N, 4, 5, 5], the op gives "
         "[N, 4, 7, 5]"},
        {c_weight_channels, Q8_ERR_SHAPE,
         "node 1 (conv2d 'conv'): input has 3 channels: with groups = 1 the weight needs 3"},
        {c_bias_size, Q8_ERR_SHAPE, "constant 'bias' has shape [3], the op needs [4]"},
        {c_weight_dtype, Q8_ERR_FORMAT, "constant 'weight' has an HDF5 type"},
        {c_weight_no_data, Q8_ERR_FORMAT, "constant 'weight' should hold 108000000 bytes"},
        {c_weight_scale_inf, Q8_ERR_FORMAT,
         "node 1 (conv2d 'conv'): constant 'weight_scale'[1] = inf is not a finite positive"},
        {c_missing_attr, Q8_ERR_FORMAT, "node 1 (conv2d 'conv'): attribute 'clamp_min' is missing"},
        {c_unknown_attr, Q8_ERR_FORMAT, "node 1 (conv2d 'conv'): unknown attribute 'strid'"},
        {c_attr_range, Q8_ERR_FORMAT, "attribute 'groups' = 0 is out of range"},
        {c_clamp_range, Q8_ERR_FORMAT, "attribute 'clamp_max' = 300 is out of range"},
        {c_missing_const, Q8_ERR_FORMAT, "node 1 (conv2d 'conv'): constant 'multiplier' is missing"},
        {c_missing_value, Q8_ERR_FORMAT, "group 'values' holds 3 members"},
        {c_count_mismatch, Q8_ERR_FORMAT, "group 'nodes' holds 3 members"},
        {c_input_dtype, Q8_ERR_FORMAT, "value 0: dtype 'u16'"},
        {c_text_not_string, Q8_ERR_FORMAT, "node 0: attribute 'op' must be a string"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_corrupt(cases[i].fn, cases[i].status, cases[i].needle);
}
END_TEST

/* value 0 x f32 (N,3,7,5) -> node 0 conv2d_f32 3->4 3x3 pad 1 relu -> value 1 f32 ->
 * node 1 quantize u8 (0.05, 3) in [0, 127] -> value 2 -> node 2 requantize i8 (0.1, -5)
 * in [-64, 63] relu6 -> value 3 -> node 3 dequantize -> value 4 f32 */
static void save_mixed_model(const char *path)
{
    float w[4 * 3 * 9], bias[4] = {0.1f, -0.2f, 0.3f, 0.0f};
    rng r = {31};
    fill_floats(&r, w, 4 * 27, -0.5f, 0.5f);
    q8_builder *b = q8_builder_new();
    int64_t xs[4] = {-1, 3, 7, 5};
    int32_t x = q8_builder_input(b, "x", Q8_F32, 4, xs);
    q8_conv2d_desc cd = {4, {3, 3}, {1, 1}, {1, 1}, {1, 1}, 1};
    x = q8_builder_conv2d_f32(b, "fconv", x, &cd, w, bias, Q8_ACT_RELU);
    x = q8_builder_quantize(b, "quant", x, qpr(Q8_U8, 0.05f, 3, 0, 127));
    x = q8_builder_requantize(b, "requant", x, qpr(Q8_I8, 0.1f, -5, -64, 63), Q8_ACT_RELU6);
    q8_builder_output(b, q8_builder_dequantize(b, "dequant", x));
    q8_model *m = q8_builder_finish(b);
    ck_assert_msg(m != NULL, "%s", q8_last_error());
    CK_Q8(q8_model_save(m, path));
    q8_model_free(m);
}

static void check_corrupt_mixed(corrupt_fn fn, q8_status status, const char *needle)
{
    char *dir = make_tmpdir(), path[128];
    snprintf(path, sizeof path, "%s/m.h5", dir);
    save_mixed_model(path);
    q8_model *ok = q8_model_load(path); /* the base loads */
    ck_assert_msg(ok != NULL, "%s", q8_last_error());
    q8_model_free(ok);
    fn(path);
    q8_model *m = q8_model_load(path);
    CK_FAILS_WITH(m, status, needle);
    ck_assert_ptr_nonnull(strstr(q8_last_error(), path));
    unlink(path);
    rmdir(dir);
}

static void c_quantize_clamp_outside_dtype(const char *path)
{
    put_i64(path, "nodes/0", "clamp_min", -5);
}
static void c_quantize_clamp_without_zero_point(const char *path)
{
    put_i64(path, "nodes/0", "clamp_max", 100); /* zp 128 */
}
static void c_conv_clamp_above_zero_point(const char *path)
{
    put_i64(path, "nodes/1", "clamp_min", 10); /* zp 0 */
}
static void c_clamp_inverted(const char *path)
{
    put_i64(path, "nodes/0", "clamp_min", 200);
    put_i64(path, "nodes/0", "clamp_max", 100);
}
static void c_fconv_weight_nan(const char *path)
{
    float w[4 * 3 * 9] = {0};
    w[5] = NAN;
    hsize_t dims[4] = {4, 3, 3, 3};
    put_dataset(path, "nodes/0/weight", H5T_NATIVE_FLOAT, 4, dims, w, false);
}
static void c_fconv_bias_inf(const char *path)
{
    float bias[4] = {0, 0, -INFINITY, 0};
    hsize_t dims[1] = {4};
    put_dataset(path, "nodes/0/bias", H5T_NATIVE_FLOAT, 1, dims, bias, false);
}
static void c_fconv_weight_i8(const char *path)
{
    int8_t w[4 * 3 * 9] = {0};
    hsize_t dims[4] = {4, 3, 3, 3};
    put_dataset(path, "nodes/0/weight", H5T_NATIVE_INT8, 4, dims, w, false);
}
static void c_fconv_act_range(const char *path) { put_i64(path, "nodes/0", "act", 3); }
static void c_fconv_extra_const(const char *path)
{
    int32_t m[4] = {0};
    hsize_t dims[1] = {4};
    put_dataset(path, "nodes/0/multiplier", H5T_NATIVE_INT32, 1, dims, m, false);
}
static void c_requant_missing_clamp(const char *path) { drop(path, "nodes/2", "clamp_max"); }
static void c_requant_multiplier(const char *path)
{
    put_i64(path, "nodes/2", "multiplier", (INT64_C(1) << 30) + 100000); /* M = 0.05/0.1 = 2^-1 */
}
static void c_requant_clamp_outside_i8(const char *path)
{
    put_i64(path, "nodes/2", "clamp_max", 200);
}
static void c_requant_from_float(const char *path)
{
    int32_t ids[1] = {1}; /* value 1 is the f32 conv output */
    put_attr(path, "nodes/2", "inputs", H5T_NATIVE_INT32, ids, 1);
}

START_TEST(malformed_clamp_ranges_requantize_and_float_ops_are_refused)
{
    const struct {
        corrupt_fn fn;
        q8_status status;
        const char *needle;
    } base[] = {
        {c_quantize_clamp_outside_dtype, Q8_ERR_FORMAT,
         "node 0 (quantize 'quant'): clamp [-5, 255] is not an interval inside the u8 range"},
        {c_quantize_clamp_without_zero_point, Q8_ERR_FORMAT,
         "node 0 (quantize 'quant'): clamp [0, 100] does not contain the output zero point 128"},
        {c_conv_clamp_above_zero_point, Q8_ERR_FORMAT,
         "node 1 (conv2d 'conv'): clamp [10, 255] does not contain the output zero point 0"},
        {c_clamp_inverted, Q8_ERR_FORMAT, "clamp [200, 100] is not an interval"},
    }, mixed[] = {
        {c_fconv_weight_nan, Q8_ERR_FORMAT,
         "node 0 (conv2d_f32 'fconv'): constant 'weight'[5] = nan is not finite"},
        {c_fconv_bias_inf, Q8_ERR_FORMAT,
         "node 0 (conv2d_f32 'fconv'): constant 'bias'[2] = -inf is not finite"},
        {c_fconv_weight_i8, Q8_ERR_SHAPE,
         "constant 'weight' is i8 of rank 4, conv2d_f32 needs f32"},
        {c_fconv_act_range, Q8_ERR_FORMAT, "attribute 'act' = 3 is out of range [0, 2]"},
        {c_fconv_extra_const, Q8_ERR_FORMAT,
         "node 0 (conv2d_f32 'fconv'): unknown constant 'multiplier'"},
        {c_requant_missing_clamp, Q8_ERR_FORMAT,
         "node 2 (requantize 'requant'): attribute 'clamp_max' is missing"},
        {c_requant_multiplier, Q8_ERR_FORMAT,
         "node 2 (requantize 'requant'): multiplier[0]: multiplier 1073841824 * 2^-31"},
        {c_requant_clamp_outside_i8, Q8_ERR_FORMAT,
         "node 2 (requantize 'requant'): clamp [-5, 200] is not an interval inside the i8 range"},
        {c_requant_from_float, Q8_ERR_FORMAT,
         "node 2 (requantize 'requant'): input 0 (value 1) is f32, the op needs u8 or i8"},
    };
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
        check_corrupt(base[i].fn, base[i].status, base[i].needle);
    for (size_t i = 0; i < sizeof mixed / sizeof mixed[0]; i++)
        check_corrupt_mixed(mixed[i].fn, mixed[i].status, mixed[i].needle);
}
END_TEST

START_TEST(load_of_a_missing_file_is_an_io_error)
{
    q8_model *m = q8_model_load("/nonexistent/model.h5");
    CK_FAILS_WITH(m, Q8_ERR_IO, "/nonexistent/model.h5: cannot open");
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("quantized");
    TCase *tc = tcase_create("requantization");
    tcase_add_test(tc, requantize_single_rounding_avoids_the_double_rounding_golden_case);
    tcase_add_test(tc, requantize_breaks_exact_ties_to_even);
    tcase_add_test(tc, requantize_handles_shift_zero_and_large_shifts);
    tcase_add_test(tc, requantize_equals_exact_rounding_on_random_inputs);
    tcase_add_test(tc, rq_div_is_one_exact_half_even_rounding_of_the_quotient);
    tcase_add_test(tc, multiplier_below_one_is_normalized_into_2p30_2p31);
    tcase_add_test(tc, multiplier_at_least_one_uses_small_shifts);
    tcase_add_test(tc, multiplier_tiny_underflows_to_zero);
    tcase_add_test(tc, multiplier_rounding_up_to_2p31_renormalizes);
    tcase_add_test(tc, multiplier_relative_error_is_at_most_2m31);
    tcase_add_test(tc, multiplier_rejects_zero_negative_and_nonfinite);
    tcase_add_test(tc, quantize_value_follows_pytorch_quantize_val);
    tcase_add_test(tc, bias_quantizes_half_even_and_refuses_int32_overflow);
    tcase_add_test(tc, dynamic_qparams_match_choose_quantization_params);
    tcase_add_test(tc, fused_activation_bounds_come_from_the_output_qparams);
    suite_add_tcase(s, tc);

    tc = tcase_create("gemm");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, gemm_avx2_equals_reference_on_random_shapes);
    tcase_add_test(tc, gemm_worst_case_products_over_long_k_do_not_saturate);
    tcase_add_test(tc, requant_avx2_equals_reference_on_random_rows);
    tcase_add_test(tc, column_gemm_kernels_equal_the_plain_sum_on_random_shapes);
    tcase_add_test(tc, column_gemm_worst_case_products_do_not_saturate);
    tcase_add_test(tc, gemm_dot_vnni_equals_reference_on_random_shapes);
    tcase_add_test(tc, interleave_kernels_equal_the_reference_on_odd_lengths);
    tcase_add_test(tc, requant_avx2_one_channel_high_shifts_break_ties_to_even);
    tcase_add_test(tc, pack_weights_refuses_weights_that_could_overflow_int32);
    tcase_add_test(tc, pack_weights_folds_the_input_zero_point_into_the_bias);
    suite_add_tcase(s, tc);

    tc = tcase_create("ops");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, quantize_op_matches_the_formula_with_ties_nan_and_inf);
    tcase_add_test(tc, dequantize_op_is_scale_times_q_minus_zero_point);
    tcase_add_test(tc, conv2d_matches_integer_and_real_references);
    tcase_add_test(tc, linear_matches_integer_and_real_references);
    tcase_add_test(tc, linear_dynamic_matches_pytorch_formula_and_float_linear);
    tcase_add_test(tc, add_matches_the_float_sum_and_add_relu_clamps_at_the_zero_point);
    tcase_add_test(tc, mul_matches_the_float_product);
    tcase_add_test(tc, cat_requantizes_each_input_and_copies_equal_qparams);
    tcase_add_test(tc, max_pool2d_takes_the_window_max_with_padding_dilation_and_ceil_mode);
    tcase_add_test(tc, max_pool2d_2x2_rows_and_sliced_batches_match_the_window_max);
    tcase_add_test(tc, quantize_row_avx2_equals_reference_with_ties_nan_and_inf);
    tcase_add_test(tc, lookup2_avx2_equals_reference_up_to_the_last_table_entry);
    tcase_add_test(tc, avg_pool2d_is_the_half_even_mean_with_both_pad_counting_rules);
    tcase_add_test(tc, adaptive_avg_pool2d_uses_pytorch_windows);
    tcase_add_test(tc, flatten_and_clamp_move_integers_without_changing_qparams);
    tcase_add_test(tc, hardswish_table_matches_the_float_formula);
    suite_add_tcase(s, tc);

    tc = tcase_create("ranges");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, qparams_range_is_the_dtype_by_default_and_must_hold_the_zero_point);
    tcase_add_test(tc, fused_activation_bounds_are_intersected_with_the_clamp_range);
    tcase_add_test(tc, quantize_clamps_where_fake_quant_clamped);
    tcase_add_test(tc, conv2d_and_linear_clamp_to_the_restricted_range);
    tcase_add_test(tc, add_and_mul_clamp_to_the_restricted_range);
    tcase_add_test(tc, cat_clamps_copied_and_requantized_inputs_to_the_range);
    tcase_add_test(tc, average_pools_clamp_to_the_restricted_range);
    tcase_add_test(tc, hardswish_table_entries_stay_inside_the_range);
    tcase_add_test(tc, requantize_rescales_once_and_fuses_relu6_inside_the_range);
    tcase_add_test(tc, builder_refuses_a_range_outside_the_dtype_or_without_the_zero_point);
    tcase_add_test(tc, full_range_clamps_are_left_out_of_files_and_restricted_ones_round_trip);
    suite_add_tcase(s, tc);

    tc = tcase_create("float_ops");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, conv2d_f32_matches_a_double_reference_on_odd_shapes);
    tcase_add_test(tc, conv2d_f32_gives_hand_computed_values);
    tcase_add_test(tc, sgemm_kernels_match_a_double_product_on_edge_tiles);
    tcase_add_test(tc, linear_f32_matches_a_double_reference_over_chunks);
    tcase_add_test(tc, add_f32_and_mul_f32_are_elementwise_with_fused_activation);
    tcase_add_test(tc, cat_f32_concatenates_along_channels);
    tcase_add_test(tc, max_pool2d_f32_lets_nan_win_and_gives_minus_inf_to_empty_windows);
    tcase_add_test(tc, avg_pool2d_f32_sums_row_by_row_then_divides_once);
    tcase_add_test(tc, adaptive_avg_pool2d_f32_divides_like_pytorch);
    tcase_add_test(tc, clamp_f32_and_hardswish_f32_follow_pytorch_nan_included);
    tcase_add_test(tc, dynamic_model_round_trips_through_a_file_with_identical_results);
    tcase_add_test(tc, float_builders_refuse_quantized_inputs_and_non_finite_weights);
    suite_add_tcase(s, tc);

    tc = tcase_create("model");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, small_model_runs_end_to_end_and_batches_are_independent);
    tcase_add_test(tc, more_threads_than_at_load_grow_the_scratch_and_keep_the_results);
    tcase_add_test(tc, save_then_load_round_trips_every_field_and_result);
    tcase_add_test(tc, save_into_a_missing_directory_fails_and_keeps_nothing);
    tcase_add_test(tc, run_refuses_bad_batches_and_non_float_models);
    tcase_add_test(tc, builder_errors_name_the_node_and_the_first_error_sticks);
    tcase_add_test(tc, builder_refuses_a_bias_that_does_not_fit_int32);
    tcase_add_test(tc, builder_refuses_unknown_ops_keys_and_bad_values);
    suite_add_tcase(s, tc);

    tc = tcase_create("files");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, malformed_files_are_refused_with_the_node_and_field_named);
    tcase_add_test(tc, malformed_clamp_ranges_requantize_and_float_ops_are_refused);
    tcase_add_test(tc, load_of_a_missing_file_is_an_io_error);
    suite_add_tcase(s, tc);
    return s;
}
