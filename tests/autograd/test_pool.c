/* test_pool.c — max_pool2d, avg_pool2d and adaptive_avg_pool2d: windows, ties, NaN,
 * padding and divisors by hand (the numbers F.max_pool2d / F.avg_pool2d /
 * F.adaptive_avg_pool2d give), finite-difference checks on odd shapes, the
 * MaxPool2d(2) fast path against a plain reference, and argument errors. */
#include "../test_util.h"

#include "autograd/ag_impl.h"

#include <stdlib.h>
#include <string.h>

static ag_tensor *nchw_of(int64_t n, int64_t c, int64_t h, int64_t w, const float *v)
{
    ag_tensor *t = ag_tensor_new(4, AG_SHAPE(n, c, h, w), true);
    ck_assert_ptr_nonnull(t);
    memcpy(t->data, v, (size_t)t->numel * sizeof *v);
    return t;
}

/* Backward from y with dL/dy = 1 everywhere. */
static void backward_ones(ag_ctx *ctx, ag_tensor *y)
{
    float *ones = malloc((size_t)y->numel * sizeof *ones);
    for (int64_t i = 0; i < y->numel; i++)
        ones[i] = 1.0f;
    ck_assert_int_eq(ag_backward_seeded(ctx, y, ones), AG_OK);
    free(ones);
}

static void assert_shape(const ag_tensor *t, int64_t n, int64_t c, int64_t h, int64_t w)
{
    ck_assert_int_eq(t->ndim, 4);
    ck_assert_int_eq(t->shape[0], n);
    ck_assert_int_eq(t->shape[1], c);
    ck_assert_int_eq(t->shape[2], h);
    ck_assert_int_eq(t->shape[3], w);
}

/* |got - want| <= tol element by element; NaN matches only NaN. */
static void assert_values(const float *got, const float *want, int64_t n, float tol,
                          const char *what)
{
    for (int64_t i = 0; i < n; i++) {
        bool ok = isnan(want[i]) ? isnan(got[i])
                                 : got[i] == want[i] || fabsf(got[i] - want[i]) <= tol;
        if (!ok) /* not ck_assert: a passing one costs a message to the parent process */
            ck_abort_msg("%s[%d] = %.9g, want %.9g", what, (int)i, got[i], want[i]);
    }
}

static ag_pool2d_args pool_args(int32_t kh, int32_t kw, int32_t sh, int32_t sw, int32_t ph,
                                int32_t pw, bool include_pad)
{
    ag_pool2d_args a = {{kh, kw}, {sh, sw}, {ph, pw}, include_pad, false};
    return a;
}

/* ---- max_pool2d ---- */

START_TEST(max_pool2d_2x2_takes_each_window_max)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = nchw_of(1, 1, 4, 4, (float[]){1, 5, 2, 0,
                                                  3, 4, 8, 7,
                                                  6, 0, 1, 1,
                                                  2, 9, 3, 2});
    ag_pool2d_args a = pool_args(2, 2, 0, 0, 0, 0, false); /* stride 0 = kernel */
    ag_tensor *y = ag_max_pool2d(ctx, x, &a);
    assert_shape(y, 1, 1, 2, 2);
    assert_values(y->data, (float[]){5, 8, 9, 3}, 4, 0, "max_pool2d");
    backward_ones(ctx, y);
    assert_values(x->grad, (float[]){0, 1, 0, 0,
                                     0, 0, 1, 0,
                                     0, 0, 0, 0,
                                     0, 1, 1, 0}, 16, 0, "max_pool2d grad");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(max_pool2d_grad_goes_to_first_max)
{
    ag_ctx *ctx = ag_ctx_new();
    /* kernel 2 stride 2 (the fast path): windows {1, 3 / 3, 2} and {3, 3 / 1, 3} */
    ag_tensor *x = nchw_of(1, 1, 2, 4, (float[]){1, 3, 3, 3,
                                                  3, 2, 1, 3});
    ag_pool2d_args a = pool_args(2, 2, 2, 2, 0, 0, false);
    ag_tensor *y = ag_max_pool2d(ctx, x, &a);
    assert_values(y->data, (float[]){3, 3}, 2, 0, "max_pool2d");
    backward_ones(ctx, y);
    assert_values(x->grad, (float[]){0, 1, 1, 0,
                                     0, 0, 0, 0}, 8, 0, "max_pool2d grad");
    /* kernel 2 stride 1 (the general path) on a flat plane: each window's first cell */
    ag_tensor *flat = nchw_of(1, 1, 2, 3, (float[]){2, 2, 2, 2, 2, 2});
    a = pool_args(2, 2, 1, 1, 0, 0, false);
    y = ag_max_pool2d(ctx, flat, &a);
    assert_shape(y, 1, 1, 1, 2);
    backward_ones(ctx, y);
    assert_values(flat->grad, (float[]){1, 1, 0, 0, 0, 0}, 6, 0, "max_pool2d flat grad");
    ag_tensor_free(x);
    ag_tensor_free(flat);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(max_pool2d_padding_is_minus_infinity)
{
    ag_ctx *ctx = ag_ctx_new();
    /* all negative: zero padding would win every border window, -inf never does */
    ag_tensor *x = nchw_of(1, 1, 2, 2, (float[]){-1, -2,
                                                  -3, -4});
    ag_pool2d_args a = pool_args(2, 2, 1, 1, 1, 1, false);
    ag_tensor *y = ag_max_pool2d(ctx, x, &a);
    assert_shape(y, 1, 1, 3, 3);
    assert_values(y->data, (float[]){-1, -1, -2,
                                     -1, -1, -2,
                                     -3, -3, -4}, 9, 0, "max_pool2d");
    backward_ones(ctx, y);
    assert_values(x->grad, (float[]){4, 2, 2, 1}, 4, 0, "max_pool2d grad");
    /* a window of -inf only: -inf, and the gradient goes to its first cell */
    ag_tensor *inf = nchw_of(1, 1, 1, 2, (float[]){-INFINITY, -INFINITY});
    a = pool_args(1, 2, 1, 1, 0, 1, false);
    y = ag_max_pool2d(ctx, inf, &a);
    assert_shape(y, 1, 1, 1, 3);
    assert_values(y->data, (float[]){-INFINITY, -INFINITY, -INFINITY}, 3, 0, "all -inf");
    backward_ones(ctx, y);
    assert_values(inf->grad, (float[]){2, 1}, 2, 0, "all -inf grad");
    ag_tensor_free(x);
    ag_tensor_free(inf);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(max_pool2d_propagates_nan_and_the_last_nan_takes_the_grad)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = nchw_of(1, 1, 2, 4, (float[]){1, NAN, 5, 2,
                                                  NAN, 0, 3, NAN});
    /* fast path: windows {1, NaN / NaN, 0} and {5, 2 / 3, NaN} */
    ag_pool2d_args a = pool_args(2, 2, 2, 2, 0, 0, false);
    ag_tensor *y = ag_max_pool2d(ctx, x, &a);
    assert_values(y->data, (float[]){NAN, NAN}, 2, 0, "max_pool2d");
    backward_ones(ctx, y);
    assert_values(x->grad, (float[]){0, 0, 0, 0,
                                     1, 0, 0, 1}, 8, 0, "max_pool2d grad");
    /* general path (stride 1): the middle window {NaN, 5 / 0, 3} keeps its only NaN */
    ag_tensor_zero_grad(x);
    a = pool_args(2, 2, 1, 1, 0, 0, false);
    y = ag_max_pool2d(ctx, x, &a);
    assert_values(y->data, (float[]){NAN, NAN, NAN}, 3, 0, "max_pool2d stride 1");
    backward_ones(ctx, y);
    assert_values(x->grad, (float[]){0, 1, 0, 0,
                                     1, 0, 0, 1}, 8, 0, "max_pool2d stride 1 grad");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(max_pool2d_2x2_drops_the_odd_last_row_and_column)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(2, 3, 5, 7), -1, 1, 3, false);
    ag_pool2d_args a = pool_args(2, 2, 0, 0, 0, 0, false);
    ag_tensor *y = ag_max_pool2d(ctx, x, &a);
    assert_shape(y, 2, 3, 2, 3);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* Plain max pool with kernel 2, stride 2, first max wins; dx from dL/dy = seed. */
static void max_pool_2x2_reference(const ag_tensor *x, const float *seed, float *y, float *dx)
{
    int64_t planes = x->shape[0] * x->shape[1], h = x->shape[2], w = x->shape[3];
    int64_t oh = h / 2, ow = w / 2;
    memset(dx, 0, (size_t)x->numel * sizeof *dx);
    for (int64_t p = 0; p < planes; p++)
        for (int64_t r = 0; r < oh; r++)
            for (int64_t c = 0; c < ow; c++) {
                int64_t best = p * h * w + 2 * r * w + 2 * c;
                for (int64_t i = 0; i < 2; i++)
                    for (int64_t j = 0; j < 2; j++) {
                        int64_t k = p * h * w + (2 * r + i) * w + 2 * c + j;
                        if (x->data[k] > x->data[best])
                            best = k;
                    }
                int64_t o = (p * oh + r) * ow + c;
                y[o] = x->data[best];
                dx[best] += seed[o];
            }
}

/* refcnn's pool1 shape at batch 8: big enough for the threaded path. */
START_TEST(max_pool2d_fast_path_matches_a_plain_reference)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(8, 16, 28, 28), -1, 1, 11, true);
    ag_pool2d_args a = pool_args(2, 2, 2, 2, 0, 0, false);
    ag_tensor *y = ag_max_pool2d(ctx, x, &a);
    assert_shape(y, 8, 16, 14, 14);
    float *seed = malloc((size_t)y->numel * sizeof *seed);
    for (int64_t i = 0; i < y->numel; i++)
        seed[i] = (float)(i % 5) - 2.0f;
    ck_assert_int_eq(ag_backward_seeded(ctx, y, seed), AG_OK);
    float *want_y = malloc((size_t)y->numel * sizeof *want_y);
    float *want_dx = malloc((size_t)x->numel * sizeof *want_dx);
    max_pool_2x2_reference(x, seed, want_y, want_dx);
    assert_values(y->data, want_y, y->numel, 0, "max_pool2d");
    assert_values(x->grad, want_dx, x->numel, 0, "max_pool2d grad");
    free(seed);
    free(want_y);
    free(want_dx);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* Rows of 18 outputs (a vector of 16 and 2 more) from 37 columns (the last dropped),
 * and 7 rows (the last dropped): every edge of the 2x2 path's vector loop. */
START_TEST(max_pool2d_fast_path_matches_a_plain_reference_on_wide_odd_rows)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(3, 5, 7, 37), -1, 1, 12, true);
    ag_pool2d_args a = pool_args(2, 2, 2, 2, 0, 0, false);
    ag_tensor *y = ag_max_pool2d(ctx, x, &a);
    assert_shape(y, 3, 5, 3, 18);
    float *seed = malloc((size_t)y->numel * sizeof *seed);
    for (int64_t i = 0; i < y->numel; i++)
        seed[i] = (float)(i % 7) - 3.0f;
    ck_assert_int_eq(ag_backward_seeded(ctx, y, seed), AG_OK);
    float *want_y = malloc((size_t)y->numel * sizeof *want_y);
    float *want_dx = malloc((size_t)x->numel * sizeof *want_dx);
    max_pool_2x2_reference(x, seed, want_y, want_dx);
    assert_values(y->data, want_y, y->numel, 0, "max_pool2d");
    assert_values(x->grad, want_dx, x->numel, 0, "max_pool2d grad");
    free(seed);
    free(want_y);
    free(want_dx);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* Distinct values 0.01 apart, shuffled: a +-eps step never changes a window's argmax. */
static ag_tensor *spaced_rand(int32_t ndim, const int64_t *shape, uint64_t seed)
{
    ag_tensor *t = ag_tensor_new(ndim, shape, true);
    uint32_t n = (uint32_t)t->numel;
    uint32_t *perm = malloc(n * sizeof *perm);
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    ag_rng rng;
    ag_rng_seed(&rng, seed, 1);
    ag_rng_shuffle(&rng, perm, n);
    for (uint32_t i = 0; i < n; i++)
        t->data[i] = 0.01f * ((float)perm[i] - (float)n / 2);
    free(perm);
    return t;
}

static ag_tensor *max_pool_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    return ag_max_pool2d(ctx, in[0], user);
}

static ag_tensor *avg_pool_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    return ag_avg_pool2d(ctx, in[0], user);
}

START_TEST(max_pool2d_gradcheck_k3_s2_p1_batch_3_and_1)
{
    ag_pool2d_args a = pool_args(3, 3, 2, 2, 1, 1, false);
    ag_tensor *x3 = spaced_rand(4, AG_SHAPE(3, 2, 5, 7), 1);
    TU_GRADCHECK(&x3, 1, max_pool_fn, &a, NULL);
    ag_tensor *x1 = spaced_rand(4, AG_SHAPE(1, 1, 5, 7), 2);
    TU_GRADCHECK(&x1, 1, max_pool_fn, &a, NULL);
    ag_tensor_free(x3);
    ag_tensor_free(x1);
}
END_TEST

START_TEST(max_pool2d_gradcheck_fast_path_and_rectangular_kernel)
{
    ag_pool2d_args fast = pool_args(2, 2, 0, 0, 0, 0, false);
    ag_tensor *x = spaced_rand(4, AG_SHAPE(3, 2, 5, 7), 3);
    TU_GRADCHECK(&x, 1, max_pool_fn, &fast, NULL);
    ag_pool2d_args rect = pool_args(3, 2, 2, 1, 1, 1, false);
    TU_GRADCHECK(&x, 1, max_pool_fn, &rect, NULL);
    ag_tensor_free(x);
}
END_TEST

/* ---- avg_pool2d ---- */

/* 1..12 in a 3x4 plane, kernel 3, stride 2, padding 1: rows {0, 1} and {1, 2} (the
 * second window hangs over the bottom), columns {0, 1} and {1, 2, 3}. */
static const float x_3x4[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

START_TEST(avg_pool2d_count_include_pad_divides_by_the_full_window)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = nchw_of(1, 1, 3, 4, x_3x4);
    ag_pool2d_args a = pool_args(3, 3, 2, 2, 1, 1, true);
    ag_tensor *y = ag_avg_pool2d(ctx, x, &a);
    assert_shape(y, 1, 1, 2, 2);
    /* sums 14, 30, 30, 54, each over 9 */
    assert_values(y->data, (float[]){14.0f / 9, 30.0f / 9, 30.0f / 9, 6}, 4, 1e-6f,
                  "avg_pool2d");
    backward_ones(ctx, y);
    /* 1/9 per window holding the cell: row counts 1 2 1, column counts 1 2 1 1 */
    const float q = 1.0f / 9;
    assert_values(x->grad, (float[]){q, 2 * q, q, q,
                                     2 * q, 4 * q, 2 * q, 2 * q,
                                     q, 2 * q, q, q}, 12, 1e-6f, "avg_pool2d grad");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(avg_pool2d_without_count_include_pad_divides_by_real_cells)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = nchw_of(1, 1, 3, 4, x_3x4);
    ag_pool2d_args a = pool_args(3, 3, 2, 2, 1, 1, false);
    ag_tensor *y = ag_avg_pool2d(ctx, x, &a);
    /* real cells per window: 4, 6, 4, 6 */
    assert_values(y->data, (float[]){14.0f / 4, 30.0f / 6, 30.0f / 4, 54.0f / 6}, 4, 1e-6f,
                  "avg_pool2d");
    backward_ones(ctx, y);
    const float a4 = 0.25f, a6 = 1.0f / 6;
    assert_values(x->grad, (float[]){a4, a4 + a6, a6, a6,
                                     2 * a4, 2 * (a4 + a6), 2 * a6, 2 * a6,
                                     a4, a4 + a6, a6, a6}, 12, 1e-6f, "avg_pool2d grad");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(avg_pool2d_gradcheck_both_divisors_batch_3_and_1)
{
    ag_tensor *x3 = tu_rand(4, AG_SHAPE(3, 2, 5, 7), -1, 1, 4, true);
    ag_tensor *x1 = tu_rand(4, AG_SHAPE(1, 1, 5, 7), -1, 1, 5, true);
    for (int include = 0; include < 2; include++) {
        ag_pool2d_args a = pool_args(3, 3, 2, 2, 1, 1, include);
        TU_GRADCHECK(&x3, 1, avg_pool_fn, &a, NULL);
        TU_GRADCHECK(&x1, 1, avg_pool_fn, &a, NULL);
        ag_pool2d_args rect = pool_args(3, 2, 1, 2, 1, 1, include);
        TU_GRADCHECK(&x3, 1, avg_pool_fn, &rect, NULL);
    }
    ag_tensor_free(x3);
    ag_tensor_free(x1);
}
END_TEST

/* ---- adaptive_avg_pool2d ---- */

START_TEST(adaptive_avg_pool2d_windows_are_floor_to_ceil)
{
    ag_ctx *ctx = ag_ctx_new();
    /* x[r][c] = 5 r + c on 3x5 -> 2x3: rows {0, 1} {1, 2}; columns {0, 1} {1, 2, 3} {3, 4} */
    float v[15];
    for (int i = 0; i < 15; i++)
        v[i] = (float)i;
    ag_tensor *x = nchw_of(1, 1, 3, 5, v);
    ag_tensor *y = ag_adaptive_avg_pool2d(ctx, x, 2, 3);
    assert_shape(y, 1, 1, 2, 3);
    /* sums 12/4, 27/6, 24/4, 32/4, 57/6, 44/4 */
    assert_values(y->data, (float[]){3, 4.5f, 6, 8, 9.5f, 11}, 6, 1e-6f, "adaptive");
    backward_ones(ctx, y);
    const float a = 0.25f, b = 1.0f / 6;
    float row[5] = {a, a + b, b, b + a, a};
    float want[15];
    for (int c = 0; c < 5; c++) {
        want[c] = row[c];
        want[5 + c] = 2 * row[c];
        want[10 + c] = row[c];
    }
    assert_values(x->grad, want, 15, 1e-6f, "adaptive grad");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(adaptive_avg_pool2d_to_1x1_is_the_plane_mean)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = nchw_of(1, 2, 2, 3, (float[]){1, 2, 3, 4, 5, 6,
                                                  -6, 0, 0, 0, 0, 0});
    ag_tensor *y = ag_adaptive_avg_pool2d(ctx, x, 1, 1);
    assert_shape(y, 1, 2, 1, 1);
    assert_values(y->data, (float[]){3.5f, -1}, 2, 1e-6f, "adaptive 1x1");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

typedef struct out_hw {
    int32_t h, w;
} out_hw;

static ag_tensor *adaptive_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    const out_hw *o = user;
    return ag_adaptive_avg_pool2d(ctx, in[0], o->h, o->w);
}

START_TEST(adaptive_avg_pool2d_gradcheck_down_and_up)
{
    ag_tensor *x3 = tu_rand(4, AG_SHAPE(3, 2, 7, 5), -1, 1, 6, true);
    TU_GRADCHECK(&x3, 1, adaptive_fn, &((out_hw){3, 2}), NULL);
    ag_tensor *x1 = tu_rand(4, AG_SHAPE(1, 1, 5, 7), -1, 1, 7, true);
    TU_GRADCHECK(&x1, 1, adaptive_fn, &((out_hw){3, 2}), NULL);
    /* more outputs than inputs: overlapping windows */
    ag_tensor *small = tu_rand(4, AG_SHAPE(1, 2, 2, 3), -1, 1, 8, true);
    TU_GRADCHECK(&small, 1, adaptive_fn, &((out_hw){3, 4}), NULL);
    ag_tensor_free(x3);
    ag_tensor_free(x1);
    ag_tensor_free(small);
}
END_TEST

/* ---- shapes, recording and errors ---- */

START_TEST(pools_accept_an_empty_batch)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_ctx_zeros(ctx, 4, AG_SHAPE(0, 2, 4, 4));
    ag_pool2d_args a = pool_args(2, 2, 0, 0, 0, 0, true);
    assert_shape(ag_max_pool2d(ctx, x, &a), 0, 2, 2, 2);
    assert_shape(ag_avg_pool2d(ctx, x, &a), 0, 2, 2, 2);
    assert_shape(ag_adaptive_avg_pool2d(ctx, x, 3, 1), 0, 2, 3, 1);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(input_without_grad_records_nothing)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(2, 3, 6, 6), -1, 1, 9, false);
    ag_pool2d_args a = pool_args(2, 2, 0, 0, 0, 0, true);
    ck_assert_ptr_null(ag_max_pool2d(ctx, x, &a)->node);
    ck_assert_ptr_null(ag_avg_pool2d(ctx, x, &a)->node);
    ck_assert_ptr_null(ag_adaptive_avg_pool2d(ctx, x, 2, 2)->node);
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* The op fails with `status` and a message holding every string in `want`. */
static void expect_error(ag_tensor *y, ag_status status, const char *const *want, int n)
{
    ck_assert_ptr_null(y);
    ck_assert_msg(ag_last_status() == status, "status %s, want %s (%s)",
                  ag_status_name(ag_last_status()), ag_status_name(status), ag_last_error());
    for (int i = 0; i < n; i++)
        ck_assert_msg(strstr(ag_last_error(), want[i]), "\"%s\" lacks \"%s\"", ag_last_error(),
                      want[i]);
}

START_TEST(pool_rejects_a_kernel_larger_than_the_padded_input)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_ctx_zeros(ctx, 4, AG_SHAPE(1, 1, 2, 2));
    ag_pool2d_args a = pool_args(3, 3, 1, 1, 0, 0, false);
    expect_error(ag_max_pool2d(ctx, x, &a), AG_ERR_SHAPE,
                 (const char *[]){"max_pool2d", "[1, 1, 2, 2]", "kernel 3x3"}, 3);
    expect_error(ag_avg_pool2d(ctx, x, &a), AG_ERR_SHAPE,
                 (const char *[]){"avg_pool2d", "[1, 1, 2, 2]"}, 2);
    /* padding 1 makes it fit: 2 + 2 >= 3 */
    a.padding[0] = a.padding[1] = 1;
    assert_shape(ag_max_pool2d(ctx, x, &a), 1, 1, 2, 2);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(pool_rejects_bad_padding)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_ctx_zeros(ctx, 4, AG_SHAPE(1, 1, 6, 6));
    ag_pool2d_args neg = pool_args(3, 3, 1, 1, -1, 0, false);
    expect_error(ag_max_pool2d(ctx, x, &neg), AG_ERR_ARG,
                 (const char *[]){"max_pool2d", "padding -1x0", "non-negative"}, 3);
    ag_pool2d_args big = pool_args(3, 3, 1, 1, 1, 2, false);
    expect_error(ag_max_pool2d(ctx, x, &big), AG_ERR_ARG,
                 (const char *[]){"max_pool2d", "padding 1x2", "half the kernel 3x3"}, 3);
    expect_error(ag_avg_pool2d(ctx, x, &big), AG_ERR_ARG,
                 (const char *[]){"avg_pool2d", "half the kernel"}, 2);
    ag_pool2d_args tall = pool_args(3, 3, 1, 1, 2, 0, false);
    expect_error(ag_max_pool2d(ctx, x, &tall), AG_ERR_ARG,
                 (const char *[]){"padding 2x0", "half the kernel 3x3"}, 2);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(pool_rejects_bad_kernel_stride_ceil_mode_and_rank)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_ctx_zeros(ctx, 4, AG_SHAPE(1, 1, 6, 6));
    ag_pool2d_args a = pool_args(0, 2, 1, 1, 0, 0, false);
    expect_error(ag_max_pool2d(ctx, x, &a), AG_ERR_ARG,
                 (const char *[]){"max_pool2d", "kernel 0x2"}, 2);
    a = pool_args(2, 2, -1, 1, 0, 0, false);
    expect_error(ag_avg_pool2d(ctx, x, &a), AG_ERR_ARG,
                 (const char *[]){"avg_pool2d", "stride -1x1"}, 2);
    a = pool_args(2, 2, 2, 2, 0, 0, false);
    a.ceil_mode = true;
    expect_error(ag_max_pool2d(ctx, x, &a), AG_ERR_UNSUPPORTED,
                 (const char *[]){"max_pool2d", "ceil_mode"}, 2);
    expect_error(ag_max_pool2d(ctx, x, NULL), AG_ERR_ARG, (const char *[]){"max_pool2d"}, 1);
    ag_tensor *x3 = ag_ctx_zeros(ctx, 3, AG_SHAPE(1, 6, 6));
    a.ceil_mode = false;
    expect_error(ag_max_pool2d(ctx, x3, &a), AG_ERR_SHAPE,
                 (const char *[]){"max_pool2d", "[1, 6, 6]"}, 2);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(adaptive_avg_pool2d_rejects_negative_size_and_bad_rank)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_ctx_zeros(ctx, 4, AG_SHAPE(2, 3, 5, 5));
    expect_error(ag_adaptive_avg_pool2d(ctx, x, -1, 2), AG_ERR_ARG,
                 (const char *[]){"adaptive_avg_pool2d", "-1x2", "[2, 3, 5, 5]"}, 3);
    ag_tensor *x2 = ag_ctx_zeros(ctx, 2, AG_SHAPE(5, 5));
    expect_error(ag_adaptive_avg_pool2d(ctx, x2, 1, 1), AG_ERR_SHAPE,
                 (const char *[]){"adaptive_avg_pool2d", "[5, 5]"}, 2);
    ag_tensor *empty_plane = ag_ctx_zeros(ctx, 4, AG_SHAPE(1, 1, 0, 5));
    expect_error(ag_adaptive_avg_pool2d(ctx, empty_plane, 1, 1), AG_ERR_SHAPE,
                 (const char *[]){"[1, 1, 0, 5]"}, 1);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(null_input_returns_null_and_keeps_the_message)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_pool2d_args a = pool_args(2, 2, 0, 0, 0, 0, false);
    ag_error(AG_ERR_IO, "earlier failure");
    ck_assert_ptr_null(ag_max_pool2d(ctx, NULL, &a));
    ck_assert_ptr_null(ag_avg_pool2d(ctx, NULL, &a));
    ck_assert_ptr_null(ag_adaptive_avg_pool2d(ctx, NULL, 1, 1));
    ck_assert_str_eq(ag_last_error(), "earlier failure");
    ag_error_clear();
    ag_ctx_free(ctx);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *max = tcase_create("max_pool2d");
    tcase_add_test(max, max_pool2d_2x2_takes_each_window_max);
    tcase_add_test(max, max_pool2d_grad_goes_to_first_max);
    tcase_add_test(max, max_pool2d_padding_is_minus_infinity);
    tcase_add_test(max, max_pool2d_propagates_nan_and_the_last_nan_takes_the_grad);
    tcase_add_test(max, max_pool2d_2x2_drops_the_odd_last_row_and_column);
    tcase_add_test(max, max_pool2d_fast_path_matches_a_plain_reference);
    tcase_add_test(max, max_pool2d_fast_path_matches_a_plain_reference_on_wide_odd_rows);
    tcase_add_test(max, max_pool2d_gradcheck_k3_s2_p1_batch_3_and_1);
    tcase_add_test(max, max_pool2d_gradcheck_fast_path_and_rectangular_kernel);
    suite_add_tcase(s, max);
    TCase *avg = tcase_create("avg_pool2d");
    tcase_add_test(avg, avg_pool2d_count_include_pad_divides_by_the_full_window);
    tcase_add_test(avg, avg_pool2d_without_count_include_pad_divides_by_real_cells);
    tcase_add_test(avg, avg_pool2d_gradcheck_both_divisors_batch_3_and_1);
    suite_add_tcase(s, avg);
    TCase *ada = tcase_create("adaptive_avg_pool2d");
    tcase_add_test(ada, adaptive_avg_pool2d_windows_are_floor_to_ceil);
    tcase_add_test(ada, adaptive_avg_pool2d_to_1x1_is_the_plane_mean);
    tcase_add_test(ada, adaptive_avg_pool2d_gradcheck_down_and_up);
    suite_add_tcase(s, ada);
    TCase *err = tcase_create("shapes and errors");
    tcase_add_test(err, pools_accept_an_empty_batch);
    tcase_add_test(err, input_without_grad_records_nothing);
    tcase_add_test(err, pool_rejects_a_kernel_larger_than_the_padded_input);
    tcase_add_test(err, pool_rejects_bad_padding);
    tcase_add_test(err, pool_rejects_bad_kernel_stride_ceil_mode_and_rank);
    tcase_add_test(err, adaptive_avg_pool2d_rejects_negative_size_and_bad_rank);
    tcase_add_test(err, null_input_returns_null_and_keeps_the_message);
    suite_add_tcase(s, err);
    return s;
}
