/* test_batch_norm.c — ag_batch_norm against F.batch_norm: batch statistics in training,
 * running statistics in eval, the running-stat update, gradients and errors. */
#include "../test_util.h"

#include <string.h>

static const ag_batch_norm_args TRAIN = {.training = true, .momentum = 0.1f, .eps = 1e-5f};
static const ag_batch_norm_args EVAL = {.training = false, .momentum = 0.1f, .eps = 1e-5f};

static ag_tensor *from_values(int32_t ndim, const int64_t *shape, const float *v,
                              bool requires_grad)
{
    ag_tensor *t = ag_tensor_new(ndim, shape, requires_grad);
    ck_assert_ptr_nonnull(t);
    memcpy(t->data, v, (size_t)t->numel * sizeof(float));
    return t;
}

/* PyTorch's fresh BatchNorm buffers: running_mean 0, running_var 1. */
static void fresh_running_stats(int64_t c, ag_tensor **mean, ag_tensor **var)
{
    *mean = ag_tensor_new(1, AG_SHAPE(c), false);
    *var = ag_tensor_new(1, AG_SHAPE(c), false);
    for (int64_t i = 0; i < c; i++)
        (*var)->data[i] = 1.0f;
}

/* x [4, 2]: channel 0 = 1, 2, 3, 4 (mean 2.5, biased var 1.25, unbiased 5/3),
 * channel 1 = 10, 10, 10, 14 (mean 11, biased var 3, unbiased 4). */
static const float X42[8] = {1, 10, 2, 10, 3, 10, 4, 14};

START_TEST(batch_norm_training_normalises_with_batch_mean_and_biased_var)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = from_values(2, AG_SHAPE(4, 2), X42, false);
    ag_tensor *w = from_values(1, AG_SHAPE(2), (const float[]){2.0f, 0.5f}, true);
    ag_tensor *b = from_values(1, AG_SHAPE(2), (const float[]){0.1f, -1.0f}, true);
    ag_tensor *rm, *rv;
    fresh_running_stats(2, &rm, &rv);
    ag_tensor *y = ag_batch_norm(ctx, x, w, b, rm, rv, &TRAIN);
    ck_assert_ptr_nonnull(y);
    const double mean[2] = {2.5, 11.0}, var[2] = {1.25, 3.0};
    const double wv[2] = {2.0, 0.5}, bv[2] = {0.1, -1.0};
    for (int i = 0; i < 8; i++) {
        int c = i % 2;
        double expect = (X42[i] - mean[c]) / sqrt(var[c] + 1e-5) * wv[c] + bv[c];
        ck_assert_double_eq_tol(y->data[i], expect, 1e-6);
    }
    /* Channel 0's first value: (1 - 2.5) / sqrt(1.25) * 2 + 0.1 = -2.583...; */
    ck_assert_double_eq_tol(y->data[0], -1.5 / sqrt(1.25 + 1e-5) * 2.0 + 0.1, 1e-6);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
    ag_tensor_free(rm);
    ag_tensor_free(rv);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(batch_norm_training_updates_running_stats_with_unbiased_var)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = from_values(2, AG_SHAPE(4, 2), X42, false);
    ag_tensor *rm, *rv;
    fresh_running_stats(2, &rm, &rv);
    ck_assert_ptr_nonnull(ag_batch_norm(ctx, x, NULL, NULL, rm, rv, &TRAIN));
    /* r = 0.9 r + 0.1 batch: mean 0 -> 0.25 and 1.1; var 1 -> 0.9 + 0.1 * 5/3, 0.9 + 0.4. */
    ck_assert_float_eq_tol(rm->data[0], 0.25f, 1e-7f);
    ck_assert_float_eq_tol(rm->data[1], 1.1f, 1e-6f);
    ck_assert_float_eq_tol(rv->data[0], 0.9f + 0.1f * 5.0f / 3.0f, 1e-6f);
    ck_assert_float_eq_tol(rv->data[1], 1.3f, 1e-6f);
    /* A second step moves them again from where they are. */
    ck_assert_ptr_nonnull(ag_batch_norm(ctx, x, NULL, NULL, rm, rv, &TRAIN));
    ck_assert_float_eq_tol(rm->data[0], 0.9f * 0.25f + 0.25f, 1e-6f);
    ck_assert_float_eq_tol(rv->data[1], 0.9f * 1.3f + 0.4f, 1e-6f);
    ag_tensor_free(x);
    ag_tensor_free(rm);
    ag_tensor_free(rv);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(batch_norm_eval_uses_running_stats_and_leaves_them_alone)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = from_values(2, AG_SHAPE(4, 2), X42, false);
    ag_tensor *w = from_values(1, AG_SHAPE(2), (const float[]){2.0f, 0.5f}, false);
    ag_tensor *b = from_values(1, AG_SHAPE(2), (const float[]){0.1f, -1.0f}, false);
    ag_tensor *rm = from_values(1, AG_SHAPE(2), (const float[]){1.0f, -2.0f}, false);
    ag_tensor *rv = from_values(1, AG_SHAPE(2), (const float[]){4.0f, 0.25f}, false);
    ag_tensor *y = ag_batch_norm(ctx, x, w, b, rm, rv, &EVAL);
    ck_assert_ptr_nonnull(y);
    /* y = (x - 1) / 2 * 2 + 0.1 in channel 0 and (x + 2) / 0.5 * 0.5 - 1 in channel 1
     * (up to eps = 1e-5 under the square roots). */
    ck_assert_float_eq_tol(y->data[0], 0.1f, 1e-5f);
    ck_assert_float_eq_tol(y->data[6], 3.1f, 1e-5f);
    ck_assert_float_eq_tol(y->data[1], 11.0f, 1e-3f);
    for (int i = 0; i < 8; i++) {
        int c = i % 2;
        double mean = c ? -2.0 : 1.0, var = c ? 0.25 : 4.0, wv = c ? 0.5 : 2.0;
        double bv = c ? -1.0 : 0.1;
        ck_assert_double_eq_tol(y->data[i], (X42[i] - mean) / sqrt(var + 1e-5) * wv + bv, 1e-5);
    }
    ck_assert_float_eq(rm->data[0], 1.0f);
    ck_assert_float_eq(rm->data[1], -2.0f);
    ck_assert_float_eq(rv->data[0], 4.0f);
    ck_assert_float_eq(rv->data[1], 0.25f);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
    ag_tensor_free(rm);
    ag_tensor_free(rv);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(batch_norm_without_running_stats_uses_batch_stats)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = from_values(2, AG_SHAPE(4, 2), X42, false);
    ag_tensor *y = ag_batch_norm(ctx, x, NULL, NULL, NULL, NULL, &TRAIN);
    ck_assert_ptr_nonnull(y);
    ck_assert_double_eq_tol(y->data[7], 3.0 / sqrt(3.0 + 1e-5), 1e-6);
    ck_assert_double_eq_tol(y->data[1], -1.0 / sqrt(3.0 + 1e-5), 1e-6);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* The 4-D forward and running stats against a plain double implementation written here. */
static void check_against_reference(int n_, int c_, int h, int w_)
{
    const int hw = h * w_, m = n_ * hw;
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(n_, c_, h, w_), -2.0f, 3.0f, 11, false);
    ag_tensor *w = tu_rand(1, AG_SHAPE(c_), 0.5f, 1.5f, 12, false);
    ag_tensor *b = tu_rand(1, AG_SHAPE(c_), -1.0f, 1.0f, 13, false);
    ag_tensor *rm, *rv;
    fresh_running_stats(c_, &rm, &rv);
    ag_tensor *y = ag_batch_norm(ctx, x, w, b, rm, rv, &TRAIN);
    ck_assert_ptr_nonnull(y);
    for (int c = 0; c < c_; c++) {
        double s = 0.0, ss = 0.0;
        for (int n = 0; n < n_; n++)
            for (int i = 0; i < hw; i++)
                s += x->data[(n * c_ + c) * hw + i];
        double mean = s / m;
        for (int n = 0; n < n_; n++)
            for (int i = 0; i < hw; i++) {
                double d = x->data[(n * c_ + c) * hw + i] - mean;
                ss += d * d;
            }
        double invstd = 1.0 / sqrt(ss / m + 1e-5);
        for (int n = 0; n < n_; n++)
            for (int i = 0; i < hw; i++) {
                int k = (n * c_ + c) * hw + i;
                double expect = (x->data[k] - mean) * invstd * w->data[c] + b->data[c];
                ck_assert_double_eq_tol(y->data[k], expect, 1e-5);
            }
        ck_assert_double_eq_tol(rm->data[c], 0.1 * mean, 1e-6);
        ck_assert_double_eq_tol(rv->data[c], 0.9 + 0.1 * ss / (m - 1), 1e-6);
    }
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
    ag_tensor_free(rm);
    ag_tensor_free(rv);
    ag_ctx_free(ctx);
}

START_TEST(batch_norm_4d_matches_a_double_reference)
{
    check_against_reference(3, 2, 5, 7);
    check_against_reference(1, 3, 1, 2);   /* two values per channel: the least allowed */
    check_against_reference(8, 5, 31, 33); /* large enough to run channels in parallel */
}
END_TEST

/* A large mean over a small spread: sum(x^2) - M mean^2 in float would lose the variance. */
START_TEST(batch_norm_variance_stays_accurate_under_a_large_mean)
{
    enum { N = 1000 };
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(N, 1), -0.01f, 0.01f, 5, false);
    for (int i = 0; i < N; i++)
        x->data[i] += 1000.0f;
    double s = 0.0, ss = 0.0;
    for (int i = 0; i < N; i++)
        s += x->data[i];
    for (int i = 0; i < N; i++)
        ss += (x->data[i] - s / N) * (x->data[i] - s / N);
    ag_tensor *rm, *rv;
    fresh_running_stats(1, &rm, &rv);
    ag_batch_norm_args args = {.training = true, .momentum = 1.0f, .eps = 0.0f};
    ck_assert_ptr_nonnull(ag_batch_norm(ctx, x, NULL, NULL, rm, rv, &args));
    ck_assert_double_eq_tol(rv->data[0], ss / (N - 1), 1e-4 * ss / (N - 1));
    ck_assert_double_eq_tol(rm->data[0], s / N, 1e-4);
    ag_tensor_free(x);
    ag_tensor_free(rm);
    ag_tensor_free(rv);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- gradients ---- */

typedef struct bn_case {
    ag_batch_norm_args args;
    bool affine;
    ag_tensor *running_mean, *running_var; /* may be NULL in training */
} bn_case;

static ag_tensor *bn_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    const bn_case *k = user;
    return ag_batch_norm(ctx, in[0], k->affine ? in[1] : NULL, k->affine ? in[2] : NULL,
                         k->running_mean, k->running_var, &k->args);
}

static void bn_gradcheck(int32_t ndim, const int64_t *shape, bool training, bool affine,
                         bool running)
{
    const int64_t c = shape[1];
    ag_tensor *x = tu_rand(ndim, shape, -2.0f, 2.0f, 21, true);
    ag_tensor *w = tu_rand(1, AG_SHAPE(c), 0.5f, 1.5f, 22, true);
    ag_tensor *b = tu_rand(1, AG_SHAPE(c), -0.5f, 0.5f, 23, true);
    ag_tensor *rm = running ? tu_rand(1, AG_SHAPE(c), -0.5f, 0.5f, 24, false) : NULL;
    ag_tensor *rv = running ? tu_rand(1, AG_SHAPE(c), 0.5f, 2.0f, 25, false) : NULL;
    bn_case k = {.args = training ? TRAIN : EVAL,
                 .affine = affine,
                 .running_mean = rm,
                 .running_var = rv};
    ag_tensor *inputs[3] = {x, w, b};
    TU_GRADCHECK(inputs, affine ? 3 : 1, bn_fn, &k, NULL);
    if (running) /* the buffers are read or updated, never differentiated */
        ck_assert_ptr_null(rm->grad);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
    ag_tensor_free(rm);
    ag_tensor_free(rv);
}

START_TEST(batch_norm_2d_grad_training_affine)
{
    bn_gradcheck(2, AG_SHAPE(3, 4), true, true, true);
}
END_TEST

START_TEST(batch_norm_2d_grad_training_no_affine_no_running_stats)
{
    bn_gradcheck(2, AG_SHAPE(5, 3), true, false, false);
}
END_TEST

START_TEST(batch_norm_2d_grad_eval_affine)
{
    bn_gradcheck(2, AG_SHAPE(3, 4), false, true, true);
}
END_TEST

START_TEST(batch_norm_3d_grad_training_affine)
{
    bn_gradcheck(3, AG_SHAPE(3, 4, 5), true, true, true); /* BatchNorm1d's [N, C, L] */
}
END_TEST

START_TEST(batch_norm_4d_grad_training_affine)
{
    bn_gradcheck(4, AG_SHAPE(3, 2, 5, 7), true, true, true);
}
END_TEST

START_TEST(batch_norm_4d_grad_training_no_affine)
{
    bn_gradcheck(4, AG_SHAPE(3, 2, 5, 7), true, false, true);
}
END_TEST

START_TEST(batch_norm_4d_grad_training_batch_1)
{
    bn_gradcheck(4, AG_SHAPE(1, 3, 5, 7), true, true, false);
}
END_TEST

START_TEST(batch_norm_4d_grad_eval_affine)
{
    bn_gradcheck(4, AG_SHAPE(3, 2, 5, 7), false, true, true);
}
END_TEST

START_TEST(batch_norm_4d_grad_eval_no_affine)
{
    bn_gradcheck(4, AG_SHAPE(1, 2, 5, 7), false, false, true);
}
END_TEST

/* The same over planes of 9 x 11 = 99 values, which batch_norm.c sums in vectors of 16
 * lanes (six of them and three values left over) around the shifted first value. */
START_TEST(batch_norm_variance_stays_accurate_under_a_large_mean_in_wide_planes)
{
    enum { N = 4, C = 2, HW = 99 };
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(N, C, 9, 11), -0.01f, 0.01f, 6, false);
    for (int i = 0; i < N * C * HW; i++)
        x->data[i] += 1000.0f;
    ag_tensor *rm, *rv;
    fresh_running_stats(C, &rm, &rv);
    ag_batch_norm_args args = {.training = true, .momentum = 1.0f, .eps = 0.0f};
    ck_assert_ptr_nonnull(ag_batch_norm(ctx, x, NULL, NULL, rm, rv, &args));
    for (int c = 0; c < C; c++) {
        double s = 0.0, ss = 0.0;
        for (int n = 0; n < N; n++)
            for (int k = 0; k < HW; k++)
                s += x->data[(n * C + c) * HW + k];
        for (int n = 0; n < N; n++)
            for (int k = 0; k < HW; k++) {
                double u = x->data[(n * C + c) * HW + k] - s / (N * HW);
                ss += u * u;
            }
        double var = ss / (N * HW - 1);
        ck_assert_double_eq_tol(rv->data[c], var, 1e-4 * var);
        ck_assert_double_eq_tol(rm->data[c], s / (N * HW), 1e-4);
    }
    ag_tensor_free(x);
    ag_tensor_free(rm);
    ag_tensor_free(rv);
    ag_ctx_free(ctx);
}
END_TEST

/* With g = 1 everywhere the training-mode dx vanishes (the mean absorbs a constant
 * shift) while db counts the M values of each channel; g = xhat gives dw = M. Large
 * enough to run channels in parallel. */
START_TEST(batch_norm_training_grad_of_a_constant_is_zero)
{
    enum { N = 6, C = 4, HW = 40 * 37, NUMEL = N * C * HW, M = N * HW };
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(N, C, 40, 37), -1.0f, 1.0f, 31, true);
    ag_tensor *w = tu_rand(1, AG_SHAPE(C), 0.5f, 1.5f, 32, true);
    ag_tensor *b = ag_param_new(1, AG_SHAPE(C));
    /* eps = 0 so that sum(xhat^2) = M exactly; with eps, g = xhat below would leave
     * dx = w invstd xhat eps / (var + eps). */
    const ag_batch_norm_args args = {.training = true, .momentum = 0.1f, .eps = 0.0f};
    ag_tensor *y = ag_batch_norm(ctx, x, w, b, NULL, NULL, &args);
    ag_tensor *g = ag_tensor_new(1, AG_SHAPE(NUMEL), false);
    for (int i = 0; i < NUMEL; i++)
        g->data[i] = 1.0f;
    ck_assert_int_eq(ag_backward_seeded(ctx, y, g->data), AG_OK);
    for (int i = 0; i < NUMEL; i++)
        ck_assert_float_eq_tol(x->grad[i], 0.0f, 1e-5f);
    for (int c = 0; c < C; c++) {
        ck_assert_float_eq_tol(b->grad[c], (float)M, 1e-3f);
        ck_assert_float_eq_tol(w->grad[c], 0.0f, 1e-2f); /* sum(xhat) = 0 */
    }
    /* g = xhat = (y - b) / w: dw = sum(xhat^2) = M, dx = w invstd / M (M xhat - M xhat) = 0. */
    ag_tensor_zero_grad(w);
    for (int i = 0; i < NUMEL; i++) {
        int c = (i / HW) % C;
        g->data[i] = y->data[i] / w->data[c];
    }
    ag_tensor_zero_grad(x);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, g->data), AG_OK);
    for (int i = 0; i < NUMEL; i++)
        ck_assert_float_eq_tol(x->grad[i], 0.0f, 1e-5f);
    for (int c = 0; c < C; c++)
        ck_assert_float_eq_tol(w->grad[c], (float)M, 1e-3f * M);
    ag_tensor_free(g);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- errors ---- */

START_TEST(batch_norm_training_rejects_one_value_per_channel)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_tensor_new(2, AG_SHAPE(1, 3), true);
    ag_tensor *rm, *rv;
    fresh_running_stats(3, &rm, &rv);
    ck_assert_ptr_null(ag_batch_norm(ctx, x, NULL, NULL, rm, rv, &TRAIN));
    ck_assert_int_eq(ag_last_status(), AG_ERR_ARG);
    ck_assert_str_eq(ag_last_error(), "batch_norm: Expected more than 1 value per channel "
                                      "when training, got input size [1, 3]");
    ag_tensor *x4 = ag_tensor_new(4, AG_SHAPE(1, 3, 1, 1), false);
    ck_assert_ptr_null(ag_batch_norm(ctx, x4, NULL, NULL, rm, rv, &TRAIN));
    /* Eval mode has no batch statistics to estimate: one sample is fine. */
    ck_assert_ptr_nonnull(ag_batch_norm(ctx, x, NULL, NULL, rm, rv, &EVAL));
    ck_assert_float_eq(rm->data[0], 0.0f); /* the failed call updated nothing */
    ag_tensor_free(x);
    ag_tensor_free(x4);
    ag_tensor_free(rm);
    ag_tensor_free(rv);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(batch_norm_rejects_parameters_of_the_wrong_size)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_tensor_new(4, AG_SHAPE(2, 3, 5, 5), false);
    ag_tensor *w = ag_param_new(1, AG_SHAPE(4));
    ck_assert_ptr_null(ag_batch_norm(ctx, x, w, NULL, NULL, NULL, &TRAIN));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_str_eq(ag_last_error(),
                     "batch_norm: input [2, 3, 5, 5] has 3 channels, weight [4] has 4 values");
    ag_tensor *rv = ag_tensor_new(1, AG_SHAPE(2), false);
    ag_tensor *rm = ag_tensor_new(1, AG_SHAPE(3), false);
    ck_assert_ptr_null(ag_batch_norm(ctx, x, NULL, NULL, rm, rv, &EVAL));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "running_var [2] has 2 values"));
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(rv);
    ag_tensor_free(rm);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(batch_norm_rejects_bad_inputs_and_missing_stats)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *v = ag_tensor_new(1, AG_SHAPE(6), false);
    ck_assert_ptr_null(ag_batch_norm(ctx, v, NULL, NULL, NULL, NULL, &TRAIN));
    ck_assert_str_eq(ag_last_error(),
                     "batch_norm: input [6] must be [N, C, ...] (2 dims or more)");
    ag_tensor *x = ag_tensor_new(2, AG_SHAPE(4, 3), false);
    ck_assert_ptr_null(ag_batch_norm(ctx, x, NULL, NULL, NULL, NULL, &EVAL));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "eval mode needs running_mean"));
    ag_tensor *rm = ag_tensor_new(1, AG_SHAPE(3), false);
    ck_assert_ptr_null(ag_batch_norm(ctx, x, NULL, NULL, rm, NULL, &TRAIN));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "both"));
    ck_assert_ptr_null(ag_batch_norm(ctx, x, NULL, NULL, NULL, NULL, NULL));
    ck_assert_int_eq(ag_last_status(), AG_ERR_ARG);
    /* A NULL input (an earlier op failed) passes through without a new message. */
    ag_error(AG_ERR_SHAPE, "earlier failure");
    ck_assert_ptr_null(ag_batch_norm(ctx, NULL, NULL, NULL, NULL, NULL, &TRAIN));
    ck_assert_str_eq(ag_last_error(), "earlier failure");
    ag_tensor_free(v);
    ag_tensor_free(x);
    ag_tensor_free(rm);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(batch_norm_records_nothing_without_grad_but_still_updates_stats)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = from_values(2, AG_SHAPE(4, 2), X42, true);
    ag_tensor *rm, *rv;
    fresh_running_stats(2, &rm, &rv);
    ag_no_grad_begin(ctx);
    ag_tensor *y = ag_batch_norm(ctx, x, NULL, NULL, rm, rv, &TRAIN);
    ag_no_grad_end(ctx);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ck_assert_float_eq_tol(rm->data[0], 0.25f, 1e-7f);
    ag_tensor_free(x);
    ag_tensor_free(rm);
    ag_tensor_free(rv);
    ag_ctx_free(ctx);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("batch_norm");
    TCase *tc = tcase_create("batch_norm");
    tcase_add_test(tc, batch_norm_training_normalises_with_batch_mean_and_biased_var);
    tcase_add_test(tc, batch_norm_training_updates_running_stats_with_unbiased_var);
    tcase_add_test(tc, batch_norm_eval_uses_running_stats_and_leaves_them_alone);
    tcase_add_test(tc, batch_norm_without_running_stats_uses_batch_stats);
    tcase_add_test(tc, batch_norm_4d_matches_a_double_reference);
    tcase_add_test(tc, batch_norm_variance_stays_accurate_under_a_large_mean);
    tcase_add_test(tc, batch_norm_variance_stays_accurate_under_a_large_mean_in_wide_planes);
    tcase_add_test(tc, batch_norm_2d_grad_training_affine);
    tcase_add_test(tc, batch_norm_2d_grad_training_no_affine_no_running_stats);
    tcase_add_test(tc, batch_norm_2d_grad_eval_affine);
    tcase_add_test(tc, batch_norm_3d_grad_training_affine);
    tcase_add_test(tc, batch_norm_4d_grad_training_affine);
    tcase_add_test(tc, batch_norm_4d_grad_training_no_affine);
    tcase_add_test(tc, batch_norm_4d_grad_training_batch_1);
    tcase_add_test(tc, batch_norm_4d_grad_eval_affine);
    tcase_add_test(tc, batch_norm_4d_grad_eval_no_affine);
    tcase_add_test(tc, batch_norm_training_grad_of_a_constant_is_zero);
    tcase_add_test(tc, batch_norm_training_rejects_one_value_per_channel);
    tcase_add_test(tc, batch_norm_rejects_parameters_of_the_wrong_size);
    tcase_add_test(tc, batch_norm_rejects_bad_inputs_and_missing_stats);
    tcase_add_test(tc, batch_norm_records_nothing_without_grad_but_still_updates_stats);
    suite_add_tcase(s, tc);
    return s;
}
