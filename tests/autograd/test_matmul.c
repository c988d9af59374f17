/* test_matmul.c — ag_matmul (all four transpose cases) and ag_linear (F.linear):
 * values by hand and against a naive product in double, gradients by finite
 * differences, accumulation, and the shape errors. */
#include "../test_util.h"

#include <string.h>

static ag_tensor *tensor_of(int32_t ndim, const int64_t *shape, const float *values,
                            bool requires_grad)
{
    ag_tensor *t = ag_tensor_new(ndim, shape, requires_grad);
    ck_assert_ptr_nonnull(t);
    memcpy(t->data, values, (size_t)t->numel * sizeof(float));
    return t;
}

/* op(a)[i][k] for a row-major (rows, cols) matrix. */
static double at(const ag_tensor *a, bool trans, int64_t i, int64_t k)
{
    return trans ? a->data[k * a->shape[1] + i] : a->data[i * a->shape[1] + k];
}

static void assert_close(const ag_tensor *y, const double *ref, int64_t n, double tol)
{
    ck_assert_int_eq(y->numel, n);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(y->data[i] - ref[i]) <= tol * (1.0 + fabs(ref[i])),
                      "element %lld: got %.7g, expected %.7g", (long long)i, y->data[i],
                      ref[i]);
}

typedef struct mm_flags {
    bool ta, tb;
} mm_flags;

static ag_tensor *mm_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    const mm_flags *f = user;
    return ag_matmul(ctx, in[0], in[1], f->ta, f->tb);
}

/* Shapes for op(a) (3, 4) and op(b) (4, 5) under the given transposes. */
static void mm_operands(bool ta, bool tb, ag_tensor **a, ag_tensor **b, uint64_t seed)
{
    *a = tu_rand(2, ta ? AG_SHAPE(4, 3) : AG_SHAPE(3, 4), -1.0f, 1.0f, seed, true);
    *b = tu_rand(2, tb ? AG_SHAPE(5, 4) : AG_SHAPE(4, 5), -1.0f, 1.0f, seed + 1, true);
}

/* ---- matmul ---------------------------------------------------------------------- */

START_TEST(matmul_multiplies_2x2_by_hand)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tensor_of(2, AG_SHAPE(2, 2), (const float[]){1, 2, 3, 4}, false);
    ag_tensor *b = tensor_of(2, AG_SHAPE(2, 2), (const float[]){5, 6, 7, 8}, false);
    ag_tensor *c = ag_matmul(ctx, a, b, false, false);
    ck_assert_ptr_nonnull(c);
    const float ab[4] = {19, 22, 43, 50};
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(c->data[i], ab[i]);
    /* a^T b = [[1,3],[2,4]] [[5,6],[7,8]];  a b^T = [[1,2],[3,4]] [[5,7],[6,8]] */
    const float atb[4] = {26, 30, 38, 44}, abt[4] = {17, 23, 39, 53};
    c = ag_matmul(ctx, a, b, true, false);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(c->data[i], atb[i]);
    c = ag_matmul(ctx, a, b, false, true);
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(c->data[i], abt[i]);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(matmul_all_transposes_match_naive_product)
{
    for (int flags = 0; flags < 4; flags++) {
        bool ta = flags & 1, tb = flags & 2;
        ag_ctx *ctx = ag_ctx_new();
        ag_tensor *a, *b;
        mm_operands(ta, tb, &a, &b, 10 + (uint64_t)flags);
        ag_tensor *c = ag_matmul(ctx, a, b, ta, tb);
        ck_assert_ptr_nonnull(c);
        ck_assert_int_eq(c->ndim, 2);
        ck_assert_int_eq(c->shape[0], 3);
        ck_assert_int_eq(c->shape[1], 5);
        double ref[15];
        for (int64_t i = 0; i < 3; i++)
            for (int64_t j = 0; j < 5; j++) {
                double s = 0.0;
                for (int64_t k = 0; k < 4; k++)
                    s += at(a, ta, i, k) * at(b, tb, k, j);
                ref[i * 5 + j] = s;
            }
        assert_close(c, ref, 15, 1e-6);
        ag_tensor_free(a);
        ag_tensor_free(b);
        ag_ctx_free(ctx);
    }
}
END_TEST

START_TEST(matmul_grad_all_four_transpose_cases)
{
    for (int flags = 0; flags < 4; flags++) {
        mm_flags f = {flags & 1, flags & 2};
        ag_tensor *a, *b;
        mm_operands(f.ta, f.tb, &a, &b, 20 + (uint64_t)flags);
        TU_GRADCHECK(((ag_tensor *[]){a, b}), 2, mm_fn, &f, NULL);
        ag_tensor_free(a);
        ag_tensor_free(b);
    }
}
END_TEST

/* a^T a: one tensor on both sides receives both gradient contributions. */
static ag_tensor *gram_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    return ag_matmul(ctx, in[0], in[0], true, false);
}

START_TEST(matmul_grad_of_a_tensor_used_twice)
{
    ag_tensor *a = tu_rand(2, AG_SHAPE(4, 3), -1.0f, 1.0f, 31, true);
    TU_GRADCHECK(((ag_tensor *[]){a}), 1, gram_fn, NULL, NULL);
    ag_tensor_free(a);
}
END_TEST

START_TEST(matmul_backward_accumulates_into_existing_grads)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a, *b;
    mm_operands(true, true, &a, &b, 40);
    ag_tensor *c = ag_matmul(ctx, a, b, true, true);
    float seed[15];
    for (int i = 0; i < 15; i++)
        seed[i] = 1.0f;
    ck_assert_int_eq(ag_backward_seeded(ctx, c, seed), AG_OK);
    float once_a = a->grad[5], once_b = b->grad[7];
    ck_assert_int_eq(ag_backward_seeded(ctx, c, seed), AG_OK);
    ck_assert_float_eq_tol(a->grad[5], 2.0f * once_a, 1e-6f);
    ck_assert_float_eq_tol(b->grad[7], 2.0f * once_b, 1e-6f);
    /* d sum(a^T b^T) / da[k][i] = sum_j b[j][k]: row 1 of a is k = 1, so b's column 1. */
    double expect = 0.0;
    for (int j = 0; j < 5; j++)
        expect += b->data[j * 4 + 1];
    ck_assert_double_eq_tol(a->grad[1 * 3 + 2], 2.0 * expect, 1e-5);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(matmul_skips_grad_of_inputs_that_need_none)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tu_rand(2, AG_SHAPE(3, 4), -1.0f, 1.0f, 50, true);
    ag_tensor *b = tu_rand(2, AG_SHAPE(4, 5), -1.0f, 1.0f, 51, false);
    ag_tensor *c = ag_matmul(ctx, a, b, false, false);
    float seed[15] = {0};
    seed[0] = 1.0f;
    ck_assert_int_eq(ag_backward_seeded(ctx, c, seed), AG_OK);
    ck_assert_ptr_nonnull(a->grad);
    ck_assert_ptr_null(b->grad);
    ck_assert_float_eq(a->grad[2], b->data[2 * 5 + 0]); /* dc00/da02 = b20 */
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(matmul_rejects_mismatched_inner_dims)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = ag_tensor_new(2, AG_SHAPE(2, 3), false);
    ag_tensor *b = ag_tensor_new(2, AG_SHAPE(4, 5), false);
    ck_assert_ptr_null(ag_matmul(ctx, a, b, false, false));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_str_eq(
        ag_last_error(),
        "matmul: a [2, 3] and b [4, 5] cannot be multiplied: 3 columns against 4 rows");
    ck_assert_ptr_null(ag_matmul(ctx, a, b, true, true));
    ck_assert_str_eq(ag_last_error(), "matmul: a [2, 3] (transposed: 3x2) and b [4, 5] "
                                      "(transposed: 5x4) cannot be multiplied: 2 columns "
                                      "against 5 rows");
    /* a [2, 3] fits c [5, 3] transposed */
    ag_tensor *c = ag_tensor_new(2, AG_SHAPE(5, 3), false);
    ck_assert_ptr_nonnull(ag_matmul(ctx, a, c, false, true));
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(c);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(matmul_rejects_non_matrices)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = ag_tensor_new(3, AG_SHAPE(2, 3, 4), false);
    ag_tensor *b = ag_tensor_new(2, AG_SHAPE(4, 5), false);
    ck_assert_ptr_null(ag_matmul(ctx, a, b, false, false));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "matmul: expects 2-D matrices"));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "[2, 3, 4]"));
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(matmul_and_linear_pass_null_through_silently)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = ag_tensor_new(2, AG_SHAPE(2, 2), false);
    ag_error(AG_ERR_SHAPE, "earlier failure");
    ck_assert_ptr_null(ag_matmul(ctx, NULL, a, false, false));
    ck_assert_ptr_null(ag_matmul(ctx, a, NULL, false, false));
    ck_assert_ptr_null(ag_linear(ctx, NULL, a, NULL));
    ck_assert_ptr_null(ag_linear(ctx, a, NULL, NULL));
    ck_assert_str_eq(ag_last_error(), "earlier failure");
    ag_tensor_free(a);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- linear ---------------------------------------------------------------------- */

START_TEST(linear_computes_x_wt_plus_b_by_hand)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tensor_of(2, AG_SHAPE(2, 2), (const float[]){1, 2, -1, 3}, false);
    ag_tensor *w = tensor_of(2, AG_SHAPE(3, 2), (const float[]){1, 0, 0, 1, 1, 1}, false);
    ag_tensor *b = tensor_of(1, AG_SHAPE(3), (const float[]){0.5f, -1, 0}, false);
    ag_tensor *y = ag_linear(ctx, x, w, b);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->shape[0], 2);
    ck_assert_int_eq(y->shape[1], 3);
    const float with_b[6] = {1.5f, 1, 3, -0.5f, 2, 2};
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(y->data[i], with_b[i]);
    y = ag_linear(ctx, x, w, NULL);
    const float no_b[6] = {1, 2, 3, -1, 3, 2};
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(y->data[i], no_b[i]);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(linear_flattens_leading_dims_like_torch)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(3, AG_SHAPE(2, 3, 4), -1.0f, 1.0f, 60, false);
    ag_tensor *w = tu_rand(2, AG_SHAPE(5, 4), -1.0f, 1.0f, 61, false);
    ag_tensor *b = tu_rand(1, AG_SHAPE(5), -1.0f, 1.0f, 62, false);
    ag_tensor *y = ag_linear(ctx, x, w, b);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->ndim, 3);
    ck_assert_int_eq(y->shape[0], 2);
    ck_assert_int_eq(y->shape[1], 3);
    ck_assert_int_eq(y->shape[2], 5);
    double ref[30];
    for (int64_t r = 0; r < 6; r++)
        for (int64_t o = 0; o < 5; o++) {
            double s = b->data[o];
            for (int64_t i = 0; i < 4; i++)
                s += (double)x->data[r * 4 + i] * w->data[o * 4 + i];
            ref[r * 5 + o] = s;
        }
    assert_close(y, ref, 30, 1e-6);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

/* No input features: an empty sum, so y is the bias (zeros without one), as in torch. */
START_TEST(linear_with_zero_features_gives_the_bias)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_tensor_new(2, AG_SHAPE(2, 0), true);
    ag_tensor *w = ag_tensor_new(2, AG_SHAPE(3, 0), true);
    ag_tensor *b = tensor_of(1, AG_SHAPE(3), (const float[]){1, 2, 3}, true);
    ag_tensor *y = ag_linear(ctx, x, w, b);
    ck_assert_ptr_nonnull(y);
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(y->data[i], (float)(i % 3 + 1));
    float seed[6] = {1, 1, 1, 1, 1, 1};
    ck_assert_int_eq(ag_backward_seeded(ctx, y, seed), AG_OK);
    ck_assert_float_eq(b->grad[0], 2.0f);
    y = ag_linear(ctx, x, w, NULL);
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(y->data[i], 0.0f);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

static ag_tensor *linear_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    bool with_bias = *(const bool *)user;
    return ag_linear(ctx, in[0], in[1], with_bias ? in[2] : NULL);
}

START_TEST(linear_grad_with_bias)
{
    ag_tensor *x = tu_rand(2, AG_SHAPE(3, 4), -1.0f, 1.0f, 70, true);
    ag_tensor *w = tu_rand(2, AG_SHAPE(5, 4), -1.0f, 1.0f, 71, true);
    ag_tensor *b = tu_rand(1, AG_SHAPE(5), -1.0f, 1.0f, 72, true);
    bool with_bias = true;
    TU_GRADCHECK(((ag_tensor *[]){x, w, b}), 3, linear_fn, &with_bias, NULL);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
}
END_TEST

START_TEST(linear_grad_without_bias_batch_1)
{
    ag_tensor *x = tu_rand(2, AG_SHAPE(1, 7), -1.0f, 1.0f, 80, true);
    ag_tensor *w = tu_rand(2, AG_SHAPE(3, 7), -1.0f, 1.0f, 81, true);
    bool with_bias = false;
    TU_GRADCHECK(((ag_tensor *[]){x, w}), 2, linear_fn, &with_bias, NULL);
    ag_tensor_free(x);
    ag_tensor_free(w);
}
END_TEST

START_TEST(linear_grad_3d_input)
{
    ag_tensor *x = tu_rand(3, AG_SHAPE(2, 3, 4), -1.0f, 1.0f, 90, true);
    ag_tensor *w = tu_rand(2, AG_SHAPE(2, 4), -1.0f, 1.0f, 91, true);
    ag_tensor *b = tu_rand(1, AG_SHAPE(2), -1.0f, 1.0f, 92, true);
    bool with_bias = true;
    TU_GRADCHECK(((ag_tensor *[]){x, w, b}), 3, linear_fn, &with_bias, NULL);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
}
END_TEST

START_TEST(linear_bias_grad_is_column_sum)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(3, 2), -1.0f, 1.0f, 100, false);
    ag_tensor *w = tu_rand(2, AG_SHAPE(2, 2), -1.0f, 1.0f, 101, false);
    ag_tensor *b = ag_param_new(1, AG_SHAPE(2));
    ag_tensor *y = ag_linear(ctx, x, w, b);
    const float seed[6] = {1, 10, 2, 20, 3, 30};
    ck_assert_int_eq(ag_backward_seeded(ctx, y, seed), AG_OK);
    ck_assert_float_eq(b->grad[0], 6.0f);
    ck_assert_float_eq(b->grad[1], 60.0f);
    ck_assert_ptr_null(x->grad);
    ck_assert_ptr_null(w->grad);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(linear_rejects_bad_shapes_naming_them)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_tensor_new(2, AG_SHAPE(64, 784), false);
    ag_tensor *w = ag_tensor_new(2, AG_SHAPE(10, 783), false);
    ag_tensor *w3 = ag_tensor_new(3, AG_SHAPE(10, 784, 1), false);
    ag_tensor *w_ok = ag_tensor_new(2, AG_SHAPE(10, 784), false);
    ag_tensor *b = ag_tensor_new(1, AG_SHAPE(9), false);
    ck_assert_ptr_null(ag_linear(ctx, x, w, NULL));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_str_eq(ag_last_error(),
                     "linear: input [64, 784] has 784 features, weight [10, 783] expects 783");
    ck_assert_ptr_null(ag_linear(ctx, x, w3, NULL));
    ck_assert_str_eq(ag_last_error(),
                     "linear: weight [10, 784, 1] must be 2-D [out_features, in_features]");
    ck_assert_ptr_null(ag_linear(ctx, x, w_ok, b));
    ck_assert_str_eq(ag_last_error(), "linear: bias [9] must be [10], one value per output "
                                      "feature of weight [10, 784]");
    ck_assert_ptr_nonnull(ag_linear(ctx, x, w_ok, NULL));
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(w3);
    ag_tensor_free(w_ok);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("matmul");
    TCase *tc = tcase_create("matmul");
    tcase_add_test(tc, matmul_multiplies_2x2_by_hand);
    tcase_add_test(tc, matmul_all_transposes_match_naive_product);
    tcase_add_test(tc, matmul_grad_all_four_transpose_cases);
    tcase_add_test(tc, matmul_grad_of_a_tensor_used_twice);
    tcase_add_test(tc, matmul_backward_accumulates_into_existing_grads);
    tcase_add_test(tc, matmul_skips_grad_of_inputs_that_need_none);
    tcase_add_test(tc, matmul_rejects_mismatched_inner_dims);
    tcase_add_test(tc, matmul_rejects_non_matrices);
    tcase_add_test(tc, matmul_and_linear_pass_null_through_silently);
    suite_add_tcase(s, tc);
    TCase *tl = tcase_create("linear");
    tcase_add_test(tl, linear_computes_x_wt_plus_b_by_hand);
    tcase_add_test(tl, linear_flattens_leading_dims_like_torch);
    tcase_add_test(tl, linear_with_zero_features_gives_the_bias);
    tcase_add_test(tl, linear_grad_with_bias);
    tcase_add_test(tl, linear_grad_without_bias_batch_1);
    tcase_add_test(tl, linear_grad_3d_input);
    tcase_add_test(tl, linear_bias_grad_is_column_sum);
    tcase_add_test(tl, linear_rejects_bad_shapes_naming_them);
    suite_add_tcase(s, tl);
    return s;
}
