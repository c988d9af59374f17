/* test_q8_fused.c — conv2d's GEMM with the requantization fused into its epilogue
 * (q8_gemm_quads_rq_vnni) writes the same bytes as the plain sum requantized with
 * q8_rq_byte, at the same places, and nothing outside the planes it may use. Links
 * quantized/ and Check (tests/check_main.c provides main). */
#include <check.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "quantized/q8_impl.h"

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
    int64_t wp = rng_int(r, 8, 40), ow = rng_int(r, 1, wp), rows = rng_int(r, 1, 6);
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
    for (int kernel = 0; kernel < 2; kernel++) {
        if (kernel == 1 && !q8_gemm_vnni_available())
            continue;
        memset(got, CANARY, (size_t)(m * ldo + GUARD));
        if (kernel == 0)
            q8_gemm_quads_rq_reference(m, kquads, w, kq4, a, NULL, np, bias, &d);
        else
            q8_gemm_quads_rq_vnni(m, kquads, w, kq4, a, NULL, np, bias, &d);
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

Suite *make_suite(void)
{
    Suite *s = suite_create("q8_fused");
    TCase *tc = tcase_create("fused");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, fused_requantization_equals_the_requantized_sum_on_random_chunks);
    tcase_add_test(tc, fused_requantization_breaks_exact_ties_to_even);
    tcase_add_test(tc, rq_chan_skips_the_tie_test_only_where_no_tie_is_possible);
    suite_add_tcase(s, tc);
    return s;
}
