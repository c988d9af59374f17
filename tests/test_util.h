/* test_util.h — helpers shared by the Check suites: seeded random tensors and a
 * gradient-check assertion that prints where a gradient went wrong. */
#ifndef CQAT_TEST_UTIL_H
#define CQAT_TEST_UTIL_H

#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "autograd/ag.h"
#include "autograd/ag_gradcheck.h"

Suite *make_suite(void);

/* How many of the test set's images the whole-test-set comparisons use: all of them,
 * or the first CQAT_TEST_IMAGES. CI's valgrind run sets 500: memory checking needs the
 * code paths, not the statistics, and valgrind runs 30-50x slower. Thresholds given for
 * the whole set scale with tu_scaled(). */
static inline int64_t tu_test_images(int64_t n_all)
{
    const char *e = getenv("CQAT_TEST_IMAGES");
    long long n = e ? atoll(e) : 0;
    return n > 0 && n < n_all ? (int64_t)n : n_all;
}

/* A count allowed out of 10000 (mismatches, say), for n images: at least 1. */
static inline int64_t tu_scaled(int64_t per_10000, int64_t n)
{
    int64_t k = (per_10000 * n + 9999) / 10000;
    return k > 1 ? k : 1;
}

/* Heap tensor filled with uniform values in [lo, hi) from a fixed seed. */
static inline ag_tensor *tu_rand(int32_t ndim, const int64_t *shape, float lo, float hi,
                                 uint64_t seed, bool requires_grad)
{
    ag_tensor *t = ag_tensor_new(ndim, shape, requires_grad);
    ck_assert_ptr_nonnull(t);
    ag_rng rng;
    ag_rng_seed(&rng, seed, 99);
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = ag_rng_uniform_range(&rng, lo, hi);
    return t;
}

/* Values in [lo, hi) kept at least `gap` away from every kink in `kinks` (so
 * finite differences of relu, clamp, ... never straddle a corner). */
static inline void tu_avoid_kinks(ag_tensor *t, const float *kinks, int n_kinks, float gap)
{
    for (int64_t i = 0; i < t->numel; i++)
        for (int k = 0; k < n_kinks; k++)
            if (fabsf(t->data[i] - kinks[k]) < gap)
                t->data[i] = kinks[k] + (t->data[i] >= kinks[k] ? gap : -gap);
}

#define TU_GRADCHECK(inputs, n, fn, user, opts)                                         \
    do {                                                                                \
        ag_gradcheck_result res_;                                                       \
        ag_status st_ = ag_gradcheck((inputs), (n), (fn), (user), (opts), &res_);       \
        ck_assert_msg(st_ == AG_OK, "gradcheck could not run: %s", ag_last_error());    \
        ck_assert_msg(res_.n_checked > 0, "gradcheck compared nothing");                \
        ck_assert_msg(res_.ok, "gradient mismatch: %s", res_.message);                  \
    } while (0)

#endif
