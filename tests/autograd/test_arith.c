/* test_arith.c — add, sub, mul, div with broadcasting; neg, scale, add_scalar. */
#include "../test_util.h"

#include "autograd/ag_impl.h"

#include <string.h>

static ag_tensor *tensor_of(int32_t ndim, const int64_t *shape, const float *v, bool grad)
{
    ag_tensor *t = ag_tensor_new(ndim, shape, grad);
    ck_assert_ptr_nonnull(t);
    memcpy(t->data, v, (size_t)t->numel * sizeof(float));
    return t;
}

static void assert_values(const float *got, const float *want, int64_t n, float tol)
{
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabsf(got[i] - want[i]) <= tol, "element %lld: got %.7g, want %.7g",
                      (long long)i, (double)got[i], (double)want[i]);
}

static void assert_shape(const ag_tensor *t, int32_t ndim, const int64_t *shape)
{
    ck_assert_int_eq(t->ndim, ndim);
    for (int32_t k = 0; k < ndim; k++)
        ck_assert_int_eq(t->shape[k], shape[k]);
}

typedef ag_tensor *(*binop_fn)(ag_ctx *, ag_tensor *, ag_tensor *);
typedef struct binop_case {
    binop_fn fn;
} binop_case;

static ag_tensor *run_binop(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    return ((const binop_case *)user)->fn(ctx, in[0], in[1]);
}

/* ---- forward values ---- */

START_TEST(add_same_shape_adds_elementwise)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tensor_of(2, AG_SHAPE(2, 2), (float[]){1, 2, 3, 4}, false);
    ag_tensor *b = tensor_of(2, AG_SHAPE(2, 2), (float[]){10, 20, 30, 40}, false);
    ag_tensor *y = ag_add(ctx, a, b);
    assert_shape(y, 2, AG_SHAPE(2, 2));
    assert_values(y->data, (float[]){11, 22, 33, 44}, 4, 0.0f);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(add_broadcasts_a_row_over_every_row)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tensor_of(2, AG_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6}, false);
    ag_tensor *b = tensor_of(1, AG_SHAPE(3), (float[]){10, 20, 30}, false);
    ag_tensor *y = ag_add(ctx, a, b);
    assert_shape(y, 2, AG_SHAPE(2, 3));
    assert_values(y->data, (float[]){11, 22, 33, 14, 25, 36}, 6, 0.0f);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(sub_with_a_one_element_tensor_on_either_side)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tensor_of(2, AG_SHAPE(2, 2), (float[]){1, 2, 3, 4}, false);
    ag_tensor *s = tensor_of(1, AG_SHAPE(1), (float[]){0.5f}, false);
    assert_values(ag_sub(ctx, a, s)->data, (float[]){0.5f, 1.5f, 2.5f, 3.5f}, 4, 0.0f);
    ag_tensor *y = ag_sub(ctx, s, a);
    assert_shape(y, 2, AG_SHAPE(2, 2));
    assert_values(y->data, (float[]){-0.5f, -1.5f, -2.5f, -3.5f}, 4, 0.0f);
    ag_tensor_free(a);
    ag_tensor_free(s);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(mul_scales_each_channel_of_nchw)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tensor_of(4, AG_SHAPE(1, 2, 2, 2), (float[]){1, 2, 3, 4, 5, 6, 7, 8}, false);
    ag_tensor *w = tensor_of(4, AG_SHAPE(1, 2, 1, 1), (float[]){2, -1}, false);
    ag_tensor *y = ag_mul(ctx, x, w);
    assert_shape(y, 4, AG_SHAPE(1, 2, 2, 2));
    assert_values(y->data, (float[]){2, 4, 6, 8, -5, -6, -7, -8}, 8, 0.0f);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(div_by_a_column_divides_each_row)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tensor_of(2, AG_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6}, false);
    ag_tensor *b = tensor_of(2, AG_SHAPE(2, 1), (float[]){2, 4}, false);
    ag_tensor *y = ag_div(ctx, a, b);
    assert_values(y->data, (float[]){0.5f, 1, 1.5f, 1, 1.25f, 1.5f}, 6, 0.0f);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(column_plus_row_makes_an_outer_sum)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tensor_of(2, AG_SHAPE(3, 1), (float[]){1, 2, 3}, false);
    ag_tensor *b = tensor_of(2, AG_SHAPE(1, 4), (float[]){10, 20, 30, 40}, false);
    ag_tensor *y = ag_add(ctx, a, b);
    assert_shape(y, 2, AG_SHAPE(3, 4));
    assert_values(y->data, (float[]){11, 21, 31, 41, 12, 22, 32, 42, 13, 23, 33, 43}, 12, 0.0f);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(broadcast_shape_aligns_trailing_dims)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tu_rand(3, AG_SHAPE(5, 1, 3), -1, 1, 1, false);
    ag_tensor *b = tu_rand(2, AG_SHAPE(4, 1), -1, 1, 2, false);
    ag_tensor *y = ag_mul(ctx, a, b);
    assert_shape(y, 3, AG_SHAPE(5, 4, 3));
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 3; k++)
                ck_assert_float_eq(y->data[(i * 4 + j) * 3 + k], a->data[i * 3 + k] * b->data[j]);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(neg_scale_and_add_scalar_values)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tensor_of(1, AG_SHAPE(3), (float[]){1, -2, 0.5f}, false);
    assert_values(ag_neg(ctx, x)->data, (float[]){-1, 2, -0.5f}, 3, 0.0f);
    assert_values(ag_scale(ctx, x, 3.0f)->data, (float[]){3, -6, 1.5f}, 3, 0.0f);
    assert_values(ag_add_scalar(ctx, x, 0.25f)->data, (float[]){1.25f, -1.75f, 0.75f}, 3, 0.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- backward values ---- */

START_TEST(bias_gradient_sums_over_the_rows)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tensor_of(2, AG_SHAPE(3, 2), (float[]){0, 0, 0, 0, 0, 0}, true);
    ag_tensor *b = tensor_of(1, AG_SHAPE(2), (float[]){0, 0}, true);
    ag_tensor *y = ag_add(ctx, x, b);
    const float g[6] = {1, 2, 3, 4, 5, 6};
    ck_assert_int_eq(ag_backward_seeded(ctx, y, g), AG_OK);
    assert_values(b->grad, (float[]){9, 12}, 2, 0.0f);
    assert_values(x->grad, g, 6, 0.0f);
    ag_tensor_free(x);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(channel_scale_gradient_sums_g_times_x_per_channel)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tensor_of(4, AG_SHAPE(2, 2, 1, 1), (float[]){1, 2, 3, 4}, true);
    ag_tensor *w = tensor_of(4, AG_SHAPE(1, 2, 1, 1), (float[]){10, 100}, true);
    ag_tensor *y = ag_mul(ctx, x, w);
    const float g[4] = {1, 1, 2, 3};
    ck_assert_int_eq(ag_backward_seeded(ctx, y, g), AG_OK);
    assert_values(w->grad, (float[]){1 * 1 + 2 * 3, 1 * 2 + 3 * 4}, 2, 0.0f);
    assert_values(x->grad, (float[]){10, 100, 20, 300}, 4, 0.0f);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(div_gradients_are_g_over_b_and_minus_g_a_over_b_squared)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tensor_of(1, AG_SHAPE(1), (float[]){3}, true);
    ag_tensor *b = tensor_of(1, AG_SHAPE(1), (float[]){2}, true);
    ag_tensor *y = ag_div(ctx, a, b);
    ck_assert_int_eq(ag_backward(ctx, y), AG_OK);
    ck_assert_float_eq(a->grad[0], 0.5f);
    ck_assert_float_eq(b->grad[0], -0.75f);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(sub_gradient_of_b_is_negated)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tensor_of(1, AG_SHAPE(2), (float[]){1, 2}, true);
    ag_tensor *b = tensor_of(1, AG_SHAPE(1), (float[]){5}, true);
    ag_tensor *y = ag_sub(ctx, a, b);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, (float[]){2, 3}), AG_OK);
    assert_values(a->grad, (float[]){2, 3}, 2, 0.0f);
    ck_assert_float_eq(b->grad[0], -5.0f);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(input_without_grad_gets_no_gradient_buffer)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tu_rand(2, AG_SHAPE(3, 4), -1, 1, 1, true);
    ag_tensor *b = tu_rand(1, AG_SHAPE(4), 0.5f, 2, 2, false);
    ag_tensor *y = ag_div(ctx, a, b);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, a->data), AG_OK);
    ck_assert_ptr_nonnull(a->grad);
    ck_assert_ptr_null(b->grad);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(unary_gradients_scale_by_their_slope)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tensor_of(1, AG_SHAPE(2), (float[]){1, 2}, true);
    const float g[2] = {1, -2};
    ck_assert_int_eq(ag_backward_seeded(ctx, ag_neg(ctx, x), g), AG_OK);
    assert_values(x->grad, (float[]){-1, 2}, 2, 0.0f);
    ag_tensor_zero_grad(x);
    ck_assert_int_eq(ag_backward_seeded(ctx, ag_scale(ctx, x, 0.5f), g), AG_OK);
    assert_values(x->grad, (float[]){0.5f, -1}, 2, 0.0f);
    ag_tensor_zero_grad(x);
    ck_assert_int_eq(ag_backward_seeded(ctx, ag_add_scalar(ctx, x, 7.0f), g), AG_OK);
    assert_values(x->grad, g, 2, 0.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- gradient checks ---- */

static const struct {
    int32_t nda;
    int64_t a[AG_MAX_DIMS];
    int32_t ndb;
    int64_t b[AG_MAX_DIMS];
} bcast_cases[] = {
    {3, {2, 3, 4}, 3, {2, 3, 4}},          /* same shape */
    {2, {3, 5}, 1, {1}},                   /* one-element b */
    {1, {1}, 2, {3, 5}},                   /* one-element a */
    {2, {3, 7}, 1, {7}},                   /* row [F] over [N, F] */
    {1, {7}, 2, {3, 7}},                   /* the row on the left */
    {4, {2, 4, 3, 5}, 4, {1, 4, 1, 1}},    /* per-channel over NCHW */
    {4, {1, 4, 1, 1}, 4, {1, 4, 3, 5}},    /* per-channel on the left, batch 1 */
    {2, {4, 6}, 2, {4, 1}},                /* [C, 1] over [C, W] */
    {2, {3, 1}, 2, {1, 4}},                /* both stretched */
    {5, {2, 1, 3, 1, 2}, 3, {3, 4, 2}},    /* five dims */
};

static const binop_case binops[] = {{ag_add}, {ag_sub}, {ag_mul}, {ag_div}};
static const char *const binop_names[] = {"add", "sub", "mul", "div"};

START_TEST(binary_ops_gradcheck_over_broadcast_shapes)
{
    for (int op = 0; op < 4; op++) {
        ag_tensor *in[2] = {
            tu_rand(bcast_cases[_i].nda, bcast_cases[_i].a, -2, 2, 10 + (uint64_t)_i, true),
            /* divisors kept away from zero */
            tu_rand(bcast_cases[_i].ndb, bcast_cases[_i].b, 0.5f, 2, 20 + (uint64_t)_i, true),
        };
        ag_gradcheck_result res;
        ag_status st = ag_gradcheck(in, 2, run_binop, (void *)&binops[op], NULL, &res);
        ck_assert_msg(st == AG_OK, "%s: %s", binop_names[op], ag_last_error());
        ck_assert_int_eq(res.n_checked, in[0]->numel + in[1]->numel);
        ck_assert_msg(res.ok, "%s: %s", binop_names[op], res.message);
        ag_tensor_free(in[0]);
        ag_tensor_free(in[1]);
    }
}
END_TEST

START_TEST(binary_ops_gradcheck_with_one_input_requiring_grad)
{
    for (int op = 0; op < 4; op++)
        for (int which = 0; which < 2; which++) {
            ag_tensor *in[2] = {tu_rand(4, AG_SHAPE(3, 2, 1, 5), -2, 2, 1, which == 0),
                                tu_rand(2, AG_SHAPE(4, 1), 0.5f, 2, 2, which == 1)};
            TU_GRADCHECK(in, 2, run_binop, (void *)&binops[op], NULL);
            ag_tensor_free(in[0]);
            ag_tensor_free(in[1]);
        }
}
END_TEST

START_TEST(same_tensor_on_both_sides_gets_both_gradients)
{
    ag_tensor *x = tu_rand(2, AG_SHAPE(2, 3), 0.5f, 2, 3, true);
    for (int op = 0; op < 4; op++) {
        ag_tensor *in[2] = {x, x};
        TU_GRADCHECK(in, 1, run_binop, (void *)&binops[op], NULL);
    }
    ag_tensor_free(x);
}
END_TEST

static ag_tensor *run_unary(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    switch (*(const int *)user) {
    case 0: return ag_neg(ctx, in[0]);
    case 1: return ag_scale(ctx, in[0], -1.5f);
    default: return ag_add_scalar(ctx, in[0], 0.75f);
    }
}

START_TEST(unary_ops_gradcheck)
{
    ag_tensor *x = tu_rand(3, AG_SHAPE(3, 1, 5), -2, 2, 4, true);
    for (int op = 0; op < 3; op++)
        TU_GRADCHECK(&x, 1, run_unary, &op, NULL);
    ag_tensor_free(x);
}
END_TEST

/* ---- the multithreaded paths against plain loops ---- */

START_TEST(large_channel_affine_matches_plain_loops)
{
    enum { N = 4, C = 16, HW = 24 * 24 };
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(N, C, 24, 24), -1, 1, 5, true);
    ag_tensor *w = tu_rand(4, AG_SHAPE(1, C, 1, 1), 0.5f, 2, 6, true);
    ag_tensor *b = tu_rand(4, AG_SHAPE(1, C, 1, 1), -1, 1, 7, true);
    ag_tensor *g = tu_rand(4, AG_SHAPE(N, C, 24, 24), -1, 1, 8, false);
    ag_tensor *y = ag_add(ctx, ag_mul(ctx, x, w), b);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, g->data), AG_OK);
    for (int c = 0; c < C; c++) {
        double dw = 0, db = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                int64_t j = ((int64_t)n * C + c) * HW + i;
                ck_assert_float_eq(y->data[j], x->data[j] * w->data[c] + b->data[c]);
                ck_assert_float_eq(x->grad[j], g->data[j] * w->data[c]);
                dw += (double)(g->data[j] * x->data[j]);
                db += g->data[j];
            }
        ck_assert_double_eq_tol(w->grad[c], dw, 1e-4);
        ck_assert_double_eq_tol(b->grad[c], db, 1e-4);
    }
    ag_tensor *all[] = {x, w, b, g};
    for (int i = 0; i < 4; i++)
        ag_tensor_free(all[i]);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(large_row_bias_and_column_divide_match_plain_loops)
{
    enum { R = 300, F = 201 };
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(R, F), -1, 1, 1, true);
    ag_tensor *row = tu_rand(1, AG_SHAPE(F), -1, 1, 2, true);
    ag_tensor *col = tu_rand(2, AG_SHAPE(R, 1), 0.5f, 2, 3, true);
    ag_tensor *g = tu_rand(2, AG_SHAPE(R, F), -1, 1, 4, false);
    ag_tensor *s = ag_add(ctx, x, row);
    ag_tensor *y = ag_div(ctx, s, col);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, g->data), AG_OK);
    for (int r = 0; r < R; r++) {
        double dcol = 0;
        for (int f = 0; f < F; f++) {
            int64_t j = (int64_t)r * F + f;
            ck_assert_float_eq(y->data[j], (x->data[j] + row->data[f]) / col->data[r]);
            ck_assert_float_eq(x->grad[j], g->data[j] / col->data[r]);
            dcol += (double)(-g->data[j] * (y->data[j] / col->data[r]));
        }
        ck_assert_double_eq_tol(col->grad[r], dcol, 1e-4);
    }
    for (int f = 0; f < F; f++) {
        double drow = 0;
        for (int r = 0; r < R; r++)
            drow += (double)(g->data[r * F + f] / col->data[r]);
        ck_assert_double_eq_tol(row->grad[f], drow, 1e-4);
    }
    ag_tensor *all[] = {x, row, col, g};
    for (int i = 0; i < 4; i++)
        ag_tensor_free(all[i]);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- errors ---- */

START_TEST(incompatible_shapes_name_the_op_and_both_shapes)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tu_rand(2, AG_SHAPE(2, 3), -1, 1, 1, true);
    ag_tensor *b = tu_rand(1, AG_SHAPE(4), -1, 1, 2, true);
    ck_assert_ptr_null(ag_add(ctx, a, b));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_str_eq(ag_last_error(), "add: cannot broadcast [2, 3] and [4]");
    ck_assert_ptr_null(ag_div(ctx, b, a));
    ck_assert_str_eq(ag_last_error(), "div: cannot broadcast [4] and [2, 3]");
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(null_input_returns_null_and_keeps_the_message)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tu_rand(1, AG_SHAPE(2), -1, 1, 1, true);
    ag_error(AG_ERR_SHAPE, "earlier failure");
    ck_assert_ptr_null(ag_mul(ctx, a, NULL));
    ck_assert_ptr_null(ag_sub(ctx, NULL, a));
    ck_assert_ptr_null(ag_neg(ctx, NULL));
    ck_assert_ptr_null(ag_scale(ctx, NULL, 2.0f));
    ck_assert_ptr_null(ag_add_scalar(ctx, NULL, 2.0f));
    ck_assert_str_eq(ag_last_error(), "earlier failure");
    ag_tensor_free(a);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(no_grad_records_nothing)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tu_rand(2, AG_SHAPE(2, 3), -1, 1, 1, true);
    ag_no_grad_begin(ctx);
    ag_tensor *y = ag_mul(ctx, ag_add(ctx, a, a), a);
    ag_no_grad_end(ctx);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ck_assert(!(y->flags & AG_F_REQUIRES_GRAD));
    ag_tensor_free(a);
    ag_ctx_free(ctx);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("arith");
    TCase *tc = tcase_create("arith");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, add_same_shape_adds_elementwise);
    tcase_add_test(tc, add_broadcasts_a_row_over_every_row);
    tcase_add_test(tc, sub_with_a_one_element_tensor_on_either_side);
    tcase_add_test(tc, mul_scales_each_channel_of_nchw);
    tcase_add_test(tc, div_by_a_column_divides_each_row);
    tcase_add_test(tc, column_plus_row_makes_an_outer_sum);
    tcase_add_test(tc, broadcast_shape_aligns_trailing_dims);
    tcase_add_test(tc, neg_scale_and_add_scalar_values);
    tcase_add_test(tc, bias_gradient_sums_over_the_rows);
    tcase_add_test(tc, channel_scale_gradient_sums_g_times_x_per_channel);
    tcase_add_test(tc, div_gradients_are_g_over_b_and_minus_g_a_over_b_squared);
    tcase_add_test(tc, sub_gradient_of_b_is_negated);
    tcase_add_test(tc, input_without_grad_gets_no_gradient_buffer);
    tcase_add_test(tc, unary_gradients_scale_by_their_slope);
    tcase_add_loop_test(tc, binary_ops_gradcheck_over_broadcast_shapes, 0,
                        (int)(sizeof bcast_cases / sizeof bcast_cases[0]));
    tcase_add_test(tc, binary_ops_gradcheck_with_one_input_requiring_grad);
    tcase_add_test(tc, same_tensor_on_both_sides_gets_both_gradients);
    tcase_add_test(tc, unary_ops_gradcheck);
    tcase_add_test(tc, large_channel_affine_matches_plain_loops);
    tcase_add_test(tc, large_row_bias_and_column_divide_match_plain_loops);
    tcase_add_test(tc, incompatible_shapes_name_the_op_and_both_shapes);
    tcase_add_test(tc, null_input_returns_null_and_keeps_the_message);
    tcase_add_test(tc, no_grad_records_nothing);
    suite_add_tcase(s, tc);
    return s;
}
