/* test_reduce.c — sum and mean over all dims or a list of dims, with keepdim. */
#include "../test_util.h"

#include "autograd/ag_impl.h"

#include <string.h>

/* x[i, j, k] = 12 i + 4 j + k, shape [2, 3, 4]: sums are easy to write by hand. */
static ag_tensor *arange_234(bool grad)
{
    ag_tensor *x = ag_tensor_new(3, AG_SHAPE(2, 3, 4), grad);
    ck_assert_ptr_nonnull(x);
    for (int i = 0; i < 24; i++)
        x->data[i] = (float)i;
    return x;
}

static void assert_values(const float *got, const float *want, int64_t n, float tol)
{
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabsf(got[i] - want[i]) <= tol, "element %lld: got %.7g, want %.7g",
                      (long long)i, (double)got[i], (double)want[i]);
}

static void assert_shape(const ag_tensor *t, int32_t ndim, const int64_t *shape)
{
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->ndim, ndim);
    for (int32_t k = 0; k < ndim; k++)
        ck_assert_int_eq(t->shape[k], shape[k]);
}

/* ---- forward values ---- */

START_TEST(sum_of_everything_has_shape_1)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = arange_234(false);
    ag_tensor *y = ag_sum(ctx, x, NULL, 0, false);
    assert_shape(y, 1, AG_SHAPE(1));
    ck_assert_float_eq(y->data[0], 276.0f);
    ag_tensor *m = ag_mean(ctx, x, NULL, 0, false);
    assert_shape(m, 1, AG_SHAPE(1));
    ck_assert_float_eq(m->data[0], 11.5f);
    assert_shape(ag_sum(ctx, x, NULL, 0, true), 3, AG_SHAPE(1, 1, 1));
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(sum_over_dim_1_with_and_without_keepdim)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = arange_234(false);
    /* sum_j (12 i + 4 j + k) = 36 i + 3 k + 12 */
    const float want[8] = {12, 15, 18, 21, 48, 51, 54, 57};
    ag_tensor *y = ag_sum(ctx, x, (int32_t[]){1}, 1, false);
    assert_shape(y, 2, AG_SHAPE(2, 4));
    assert_values(y->data, want, 8, 0.0f);
    ag_tensor *yk = ag_sum(ctx, x, (int32_t[]){1}, 1, true);
    assert_shape(yk, 3, AG_SHAPE(2, 1, 4));
    assert_values(yk->data, want, 8, 0.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(sum_and_mean_over_dims_0_and_2)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = arange_234(false);
    /* sum_{i,k} (12 i + 4 j + k) = 60 + 32 j */
    ag_tensor *y = ag_sum(ctx, x, (int32_t[]){0, 2}, 2, false);
    assert_shape(y, 1, AG_SHAPE(3));
    assert_values(y->data, (float[]){60, 92, 124}, 3, 0.0f);
    ag_tensor *m = ag_mean(ctx, x, (int32_t[]){2, 0}, 2, true);
    assert_shape(m, 3, AG_SHAPE(1, 3, 1));
    assert_values(m->data, (float[]){7.5f, 11.5f, 15.5f}, 3, 0.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(negative_dim_counts_from_the_end)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = arange_234(false);
    /* sum_k (12 i + 4 j + k) = 48 i + 16 j + 6 */
    ag_tensor *y = ag_sum(ctx, x, (int32_t[]){-1}, 1, false);
    assert_shape(y, 2, AG_SHAPE(2, 3));
    assert_values(y->data, (float[]){6, 22, 38, 54, 70, 86}, 6, 0.0f);
    ag_tensor *m = ag_mean(ctx, x, (int32_t[]){-3}, 1, false);
    assert_shape(m, 2, AG_SHAPE(3, 4));
    for (int i = 0; i < 12; i++)
        ck_assert_float_eq(m->data[i], (float)i + 6.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(reducing_every_listed_dim_gives_shape_1)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = arange_234(false);
    ag_tensor *y = ag_sum(ctx, x, (int32_t[]){0, 1, 2}, 3, false);
    assert_shape(y, 1, AG_SHAPE(1));
    ck_assert_float_eq(y->data[0], 276.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(mean_over_an_empty_dim_is_nan_and_sum_is_zero)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_tensor_new(2, AG_SHAPE(0, 3), true);
    ag_tensor *m = ag_mean(ctx, x, (int32_t[]){0}, 1, false);
    assert_shape(m, 1, AG_SHAPE(3));
    ck_assert(isnan(m->data[0]) && isnan(m->data[2]));
    ag_tensor *s = ag_sum(ctx, x, (int32_t[]){0}, 1, false);
    assert_values(s->data, (float[]){0, 0, 0}, 3, 0.0f);
    ck_assert_int_eq(ag_backward_seeded(ctx, s, (float[]){1, 1, 1}), AG_OK);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* A float loop adding 0.1f three million times drifts by about 1%; the double sum
 * keeps every float digit. */
START_TEST(long_sums_keep_float_accuracy)
{
    enum { N = 3000000 };
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_tensor_new(1, AG_SHAPE(N), false);
    for (int i = 0; i < N; i++)
        x->data[i] = 0.1f;
    double want = (double)N * (double)0.1f;
    ag_tensor *s = ag_sum(ctx, x, NULL, 0, false);
    ck_assert_double_eq_tol(s->data[0], want, want * 1e-7);
    ag_tensor *m = ag_mean(ctx, x, NULL, 0, false);
    ck_assert_float_eq(m->data[0], 0.1f);
    /* the same along a column ([N/2, 2] over dim 0) and along rows ([2, N/2] over 1) */
    ag_tensor *cols = ag_reshape(ctx, x, 2, AG_SHAPE(N / 2, 2));
    ag_tensor *sc = ag_mean(ctx, cols, (int32_t[]){0}, 1, false);
    ck_assert_float_eq(sc->data[0], 0.1f);
    ck_assert_float_eq(sc->data[1], 0.1f);
    ag_tensor *rows = ag_reshape(ctx, x, 2, AG_SHAPE(2, N / 2));
    ag_tensor *sr = ag_mean(ctx, rows, (int32_t[]){1}, 1, false);
    ck_assert_float_eq(sr->data[0], 0.1f);
    ck_assert_float_eq(sr->data[1], 0.1f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- backward values ---- */

START_TEST(sum_gradient_spreads_over_the_summed_dim)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_param_new(2, AG_SHAPE(2, 3));
    ag_tensor *y = ag_sum(ctx, x, (int32_t[]){1}, 1, false);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, (float[]){2, -1}), AG_OK);
    assert_values(x->grad, (float[]){2, 2, 2, -1, -1, -1}, 6, 0.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(mean_gradient_is_one_over_count)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_param_new(3, AG_SHAPE(2, 3, 4));
    ck_assert_int_eq(ag_backward(ctx, ag_mean(ctx, x, NULL, 0, false)), AG_OK);
    for (int i = 0; i < 24; i++)
        ck_assert_float_eq(x->grad[i], 1.0f / 24.0f);
    ag_tensor_zero_grad(x);
    ag_tensor *m = ag_mean(ctx, x, (int32_t[]){0, 2}, 2, false);
    ck_assert_int_eq(ag_backward_seeded(ctx, m, (float[]){8, 16, 24}), AG_OK);
    for (int i = 0; i < 24; i++)
        ck_assert_float_eq(x->grad[i], (float)(i / 4 % 3 + 1));
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- gradient checks ---- */

typedef struct reduce_case {
    int32_t n_dims;
    int32_t dims[3];
} reduce_case;

static const reduce_case reduce_cases[] = {
    {0, {0}}, {1, {1}}, {2, {0, 2}}, {1, {-1}}, {1, {0}}, {2, {-3, -2}}, {3, {2, 0, 1}},
};

typedef struct reduce_call {
    const reduce_case *c;
    bool keepdim, mean;
} reduce_call;

static ag_tensor *run_reduce(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    const reduce_call *r = user;
    const int32_t *dims = r->c->n_dims ? r->c->dims : NULL;
    return r->mean ? ag_mean(ctx, in[0], dims, r->c->n_dims, r->keepdim)
                   : ag_sum(ctx, in[0], dims, r->c->n_dims, r->keepdim);
}

START_TEST(sum_and_mean_gradcheck_over_dims_and_keepdim)
{
    ag_tensor *x = tu_rand(3, AG_SHAPE(3, 4, 5), -2, 2, 30 + (uint64_t)_i, true);
    for (int mean = 0; mean < 2; mean++)
        for (int keepdim = 0; keepdim < 2; keepdim++) {
            reduce_call r = {&reduce_cases[_i], keepdim, mean};
            TU_GRADCHECK(&x, 1, run_reduce, &r, NULL);
        }
    ag_tensor_free(x);
}
END_TEST

START_TEST(sum_gradcheck_with_size_1_dims_between)
{
    ag_tensor *x = tu_rand(5, AG_SHAPE(2, 1, 3, 1, 4), -2, 2, 40, true);
    static const reduce_case cases[] = {{1, {1}}, {2, {0, 4}}, {2, {1, 2}}, {1, {3}}};
    for (int i = 0; i < 4; i++) {
        reduce_call r = {&cases[i], i % 2 == 0, i >= 2};
        TU_GRADCHECK(&x, 1, run_reduce, &r, NULL);
    }
    ag_tensor_free(x);
}
END_TEST

/* ---- the multithreaded paths against plain loops ---- */

START_TEST(large_reductions_match_plain_loops)
{
    enum { N = 8, C = 16, HW = 20 * 20 };
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(N, C, 20, 20), -1, 1, 50, true);
    /* per channel: dims (0, 2, 3) */
    ag_tensor *m = ag_mean(ctx, x, (int32_t[]){0, 2, 3}, 3, true);
    assert_shape(m, 4, AG_SHAPE(1, C, 1, 1));
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++)
                s += x->data[(n * C + c) * HW + i];
        ck_assert_double_eq_tol(m->data[c], s / (N * HW), 1e-6);
    }
    /* over channels: dim 1 (innermost dim kept) */
    ag_tensor *s1 = ag_sum(ctx, x, (int32_t[]){1}, 1, false);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < HW; i++) {
            double s = 0;
            for (int c = 0; c < C; c++)
                s += x->data[(n * C + c) * HW + i];
            ck_assert_double_eq_tol(s1->data[n * HW + i], s, 1e-5);
        }
    ck_assert_int_eq(ag_backward_seeded(ctx, m, (float[C]){[0] = 1, [5] = -2}), AG_OK);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < HW; i++) {
                float want = c == 0 ? 1.0f / (N * HW) : c == 5 ? -2.0f / (N * HW) : 0.0f;
                ck_assert_float_eq_tol(x->grad[(n * C + c) * HW + i], want, 1e-9f);
            }
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- errors ---- */

START_TEST(dim_out_of_range_names_the_shape)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = arange_234(true);
    ck_assert_ptr_null(ag_sum(ctx, x, (int32_t[]){3}, 1, false));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_str_eq(ag_last_error(), "sum: dim 3 out of range for [2, 3, 4] (expected -3..2)");
    ck_assert_ptr_null(ag_mean(ctx, x, (int32_t[]){0, -4}, 2, true));
    ck_assert_str_eq(ag_last_error(), "mean: dim -4 out of range for [2, 3, 4] (expected -3..2)");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(repeated_dim_is_an_error)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = arange_234(true);
    ck_assert_ptr_null(ag_mean(ctx, x, (int32_t[]){1, -2}, 2, false));
    ck_assert_int_eq(ag_last_status(), AG_ERR_ARG);
    ck_assert_str_eq(ag_last_error(), "mean: dim 1 appears more than once in dims");
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(null_input_returns_null_and_keeps_the_message)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_error(AG_ERR_SHAPE, "earlier failure");
    ck_assert_ptr_null(ag_sum(ctx, NULL, NULL, 0, false));
    ck_assert_ptr_null(ag_mean(ctx, NULL, (int32_t[]){0}, 1, true));
    ck_assert_str_eq(ag_last_error(), "earlier failure");
    ag_ctx_free(ctx);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("reduce");
    TCase *tc = tcase_create("reduce");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, sum_of_everything_has_shape_1);
    tcase_add_test(tc, sum_over_dim_1_with_and_without_keepdim);
    tcase_add_test(tc, sum_and_mean_over_dims_0_and_2);
    tcase_add_test(tc, negative_dim_counts_from_the_end);
    tcase_add_test(tc, reducing_every_listed_dim_gives_shape_1);
    tcase_add_test(tc, mean_over_an_empty_dim_is_nan_and_sum_is_zero);
    tcase_add_test(tc, long_sums_keep_float_accuracy);
    tcase_add_test(tc, sum_gradient_spreads_over_the_summed_dim);
    tcase_add_test(tc, mean_gradient_is_one_over_count);
    tcase_add_loop_test(tc, sum_and_mean_gradcheck_over_dims_and_keepdim, 0,
                        (int)(sizeof reduce_cases / sizeof reduce_cases[0]));
    tcase_add_test(tc, sum_gradcheck_with_size_1_dims_between);
    tcase_add_test(tc, large_reductions_match_plain_loops);
    tcase_add_test(tc, dim_out_of_range_names_the_shape);
    tcase_add_test(tc, repeated_dim_is_an_error);
    tcase_add_test(tc, null_input_returns_null_and_keeps_the_message);
    suite_add_tcase(s, tc);
    return s;
}
