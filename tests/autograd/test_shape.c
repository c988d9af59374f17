/* test_shape.c — reshape, flatten, channels (views) and cat. */
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

static void assert_values(const float *got, const float *want, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(got[i] == want[i], "element %lld: got %.7g, want %.7g", (long long)i,
                      (double)got[i], (double)want[i]);
}

static void assert_shape(const ag_tensor *t, int32_t ndim, const int64_t *shape)
{
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->ndim, ndim);
    for (int32_t k = 0; k < ndim; k++)
        ck_assert_int_eq(t->shape[k], shape[k]);
}

/* ---- views ---- */

START_TEST(reshape_is_a_view_with_its_own_gradient)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(2, 6), -1, 1, 1, true);
    ag_tensor *y = ag_reshape(ctx, x, 3, AG_SHAPE(3, 2, 2));
    assert_shape(y, 3, AG_SHAPE(3, 2, 2));
    ck_assert_int_eq(y->numel, 12);
    ck_assert_ptr_eq(y->data, x->data);
    ck_assert(y->flags & AG_F_VIEW);
    ck_assert(y->flags & AG_F_REQUIRES_GRAD);
    float g[12];
    for (int i = 0; i < 12; i++)
        g[i] = (float)i;
    ck_assert_int_eq(ag_backward_seeded(ctx, y, g), AG_OK);
    ck_assert_ptr_nonnull(y->grad);
    ck_assert_ptr_ne(y->grad, x->grad);
    assert_values(x->grad, g, 12);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(reshape_infers_the_minus_one_dim)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(3, AG_SHAPE(2, 3, 4), -1, 1, 1, false);
    assert_shape(ag_reshape(ctx, x, 2, AG_SHAPE(-1, 4)), 2, AG_SHAPE(6, 4));
    assert_shape(ag_reshape(ctx, x, 3, AG_SHAPE(4, -1, 2)), 3, AG_SHAPE(4, 3, 2));
    assert_shape(ag_reshape(ctx, x, 1, AG_SHAPE(-1)), 1, AG_SHAPE(24));
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(reshape_rejects_a_different_element_count)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(2, 6), -1, 1, 1, true);
    ck_assert_ptr_null(ag_reshape(ctx, x, 2, AG_SHAPE(5, 3)));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_str_eq(ag_last_error(),
                     "reshape: shape [5, 3] is invalid for input [2, 6] of 12 elements");
    ck_assert_ptr_null(ag_reshape(ctx, x, 2, AG_SHAPE(5, -1)));
    ck_assert_str_eq(ag_last_error(),
                     "reshape: shape [5, -1] is invalid for input [2, 6] of 12 elements");
    ck_assert_ptr_null(ag_reshape(ctx, x, 3, AG_SHAPE(-1, 2, -1)));
    ck_assert_int_eq(ag_last_status(), AG_ERR_ARG);
    ck_assert_str_eq(ag_last_error(), "reshape: only one dim may be -1 in [-1, 2, -1]");
    ck_assert_ptr_null(ag_reshape(ctx, x, 2, AG_SHAPE(-3, -4)));
    ck_assert_int_eq(ag_last_status(), AG_ERR_ARG);
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(flatten_keeps_the_dims_before_start)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(2, 3, 4, 5), -1, 1, 1, false);
    assert_shape(ag_flatten(ctx, x, 1), 2, AG_SHAPE(2, 60));
    assert_shape(ag_flatten(ctx, x, 0), 1, AG_SHAPE(120));
    assert_shape(ag_flatten(ctx, x, -2), 3, AG_SHAPE(2, 3, 20));
    assert_shape(ag_flatten(ctx, x, 3), 4, AG_SHAPE(2, 3, 4, 5));
    ck_assert_ptr_eq(ag_flatten(ctx, x, 1)->data, x->data);
    ck_assert_ptr_null(ag_flatten(ctx, x, 4));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_str_eq(ag_last_error(),
                     "flatten: start_dim 4 out of range for [2, 3, 4, 5] (expected -4..3)");
    ck_assert_ptr_null(ag_flatten(ctx, x, -5));
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(channels_views_a_vector_as_1_c_1_1)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *v = tensor_of(1, AG_SHAPE(3), (float[]){1, 2, 3}, true);
    ag_tensor *c = ag_channels(ctx, v);
    assert_shape(c, 4, AG_SHAPE(1, 3, 1, 1));
    ck_assert_ptr_eq(c->data, v->data);
    ag_tensor *m = tu_rand(2, AG_SHAPE(3, 1), -1, 1, 1, false);
    ck_assert_ptr_null(ag_channels(ctx, m));
    ck_assert_str_eq(ag_last_error(), "channels: expected a 1-D [C] vector, got [3, 1]");
    ag_tensor_free(v);
    ag_tensor_free(m);
    ag_ctx_free(ctx);
}
END_TEST

typedef struct view_case {
    int kind; /* 0 reshape, 1 flatten, 2 channels */
} view_case;

static ag_tensor *run_view(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    switch (((const view_case *)user)->kind) {
    case 0: return ag_reshape(ctx, in[0], 3, AG_SHAPE(5, -1, 3));
    case 1: return ag_flatten(ctx, in[0], -2);
    default: return ag_channels(ctx, in[0]);
    }
}

START_TEST(views_gradcheck)
{
    ag_tensor *x = tu_rand(3, AG_SHAPE(3, 5, 2), -2, 2, 1, true);
    ag_tensor *v = tu_rand(1, AG_SHAPE(7), -2, 2, 2, true);
    for (int kind = 0; kind < 2; kind++)
        TU_GRADCHECK(&x, 1, run_view, &(view_case){kind}, NULL);
    TU_GRADCHECK(&v, 1, run_view, &(view_case){2}, NULL);
    ag_tensor_free(x);
    ag_tensor_free(v);
}
END_TEST

START_TEST(view_of_a_view_reaches_the_leaf)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(2, 3), -1, 1, 1, true);
    ag_tensor *y = ag_flatten(ctx, ag_reshape(ctx, x, 2, AG_SHAPE(3, 2)), 0);
    assert_shape(y, 1, AG_SHAPE(6));
    const float g[6] = {1, 2, 3, 4, 5, 6};
    ck_assert_int_eq(ag_backward_seeded(ctx, y, g), AG_OK);
    assert_values(x->grad, g, 6);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- cat ---- */

START_TEST(cat_along_dim_0_stacks_rows)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tensor_of(2, AG_SHAPE(1, 2), (float[]){1, 2}, false);
    ag_tensor *b = tensor_of(2, AG_SHAPE(2, 2), (float[]){3, 4, 5, 6}, false);
    ag_tensor *c = tensor_of(2, AG_SHAPE(1, 2), (float[]){7, 8}, false);
    ag_tensor *y = ag_cat(ctx, (ag_tensor *[]){a, b, c}, 3, 0);
    assert_shape(y, 2, AG_SHAPE(4, 2));
    assert_values(y->data, (float[]){1, 2, 3, 4, 5, 6, 7, 8}, 8);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(c);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(cat_along_dim_1_interleaves_rows)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tensor_of(2, AG_SHAPE(2, 1), (float[]){1, 2}, false);
    ag_tensor *b = tensor_of(2, AG_SHAPE(2, 2), (float[]){3, 4, 5, 6}, false);
    ag_tensor *c = tensor_of(2, AG_SHAPE(2, 1), (float[]){7, 8}, false);
    ag_tensor *y = ag_cat(ctx, (ag_tensor *[]){a, b, c}, 3, 1);
    assert_shape(y, 2, AG_SHAPE(2, 4));
    assert_values(y->data, (float[]){1, 3, 4, 7, 2, 5, 6, 8}, 8);
    ag_tensor *z = ag_cat(ctx, (ag_tensor *[]){a, b, c}, 3, -1);
    assert_values(z->data, y->data, 8);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(c);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(cat_gradient_goes_back_to_each_piece)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tensor_of(2, AG_SHAPE(2, 1), (float[]){0, 0}, true);
    ag_tensor *b = tensor_of(2, AG_SHAPE(2, 2), (float[]){0, 0, 0, 0}, false);
    ag_tensor *c = tensor_of(2, AG_SHAPE(2, 1), (float[]){0, 0}, true);
    ag_tensor *y = ag_cat(ctx, (ag_tensor *[]){a, b, c}, 3, 1);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, (float[]){1, 2, 3, 4, 5, 6, 7, 8}), AG_OK);
    assert_values(a->grad, (float[]){1, 5}, 2);
    assert_values(c->grad, (float[]){4, 8}, 2);
    ck_assert_ptr_null(b->grad);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(c);
    ag_ctx_free(ctx);
}
END_TEST

typedef struct cat_case {
    int32_t n, dim;
} cat_case;

static ag_tensor *run_cat(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    const cat_case *c = user;
    return ag_cat(ctx, in, c->n, c->dim);
}

static const struct {
    int32_t dim;
    int64_t shapes[3][3];
} cat_cases[] = {
    {0, {{1, 3, 2}, {2, 3, 2}, {3, 3, 2}}},
    {1, {{2, 1, 4}, {2, 3, 4}, {2, 2, 4}}},
    {-1, {{2, 3, 1}, {2, 3, 2}, {2, 3, 3}}},
    {2, {{1, 3, 2}, {1, 3, 1}, {1, 3, 2}}},
};

START_TEST(cat_of_three_gradcheck)
{
    ag_tensor *in[3];
    for (int i = 0; i < 3; i++)
        in[i] = tu_rand(3, cat_cases[_i].shapes[i], -2, 2, 60 + (uint64_t)(i + 3 * _i), true);
    cat_case c = {3, cat_cases[_i].dim};
    TU_GRADCHECK(in, 3, run_cat, &c, NULL);
    for (int i = 0; i < 3; i++)
        ag_tensor_free(in[i]);
}
END_TEST

/* Beyond AG_MAX_SRC inputs the node keeps its list in the arena. */
START_TEST(cat_of_six_gradcheck_even_when_only_the_last_needs_grad)
{
    for (int only_last = 0; only_last < 2; only_last++) {
        ag_tensor *in[6];
        for (int i = 0; i < 6; i++)
            in[i] = tu_rand(2, AG_SHAPE(2, i + 1), -2, 2, 70 + (uint64_t)i,
                            !only_last || i == 5);
        cat_case c = {6, only_last ? -1 : 1};
        TU_GRADCHECK(in, 6, run_cat, &c, NULL);
        for (int i = 0; i < 6; i++) {
            ck_assert(only_last && i < 5 ? !in[i]->grad : in[i]->grad != NULL);
            ag_tensor_free(in[i]);
        }
    }
}
END_TEST

START_TEST(large_cat_matches_plain_copies)
{
    enum { N = 3, H = 64 * 64 };
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tu_rand(3, AG_SHAPE(N, 5, H), -1, 1, 1, true);
    ag_tensor *b = tu_rand(3, AG_SHAPE(N, 3, H), -1, 1, 2, true);
    ag_tensor *y = ag_cat(ctx, (ag_tensor *[]){a, b}, 2, 1);
    assert_shape(y, 3, AG_SHAPE(N, 8, H));
    for (int n = 0; n < N; n++)
        for (int c = 0; c < 8; c++)
            for (int i = 0; i < H; i++) {
                float want = c < 5 ? a->data[(n * 5 + c) * H + i] : b->data[(n * 3 + c - 5) * H + i];
                ck_assert_float_eq(y->data[(n * 8 + c) * H + i], want);
            }
    ck_assert_int_eq(ag_backward_seeded(ctx, y, y->data), AG_OK);
    assert_values(a->grad, a->data, a->numel);
    assert_values(b->grad, b->data, b->numel);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(cat_rejects_mismatched_shapes_naming_both)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tu_rand(2, AG_SHAPE(2, 3), -1, 1, 1, true);
    ag_tensor *b = tu_rand(2, AG_SHAPE(3, 3), -1, 1, 2, true);
    ag_tensor *c = tu_rand(1, AG_SHAPE(3), -1, 1, 3, true);
    ck_assert_ptr_null(ag_cat(ctx, (ag_tensor *[]){a, b}, 2, 1));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_str_eq(ag_last_error(),
                     "cat: sizes must match except in dim 1, got [2, 3] and [3, 3]");
    ck_assert_ptr_null(ag_cat(ctx, (ag_tensor *[]){a, c}, 2, 0));
    ck_assert_str_eq(ag_last_error(),
                     "cat: sizes must match except in dim 0, got [2, 3] and [3]");
    ck_assert_ptr_null(ag_cat(ctx, (ag_tensor *[]){a, b}, 2, 2));
    ck_assert_str_eq(ag_last_error(), "cat: dim 2 out of range for [2, 3] (expected -2..1)");
    ck_assert_ptr_null(ag_cat(ctx, (ag_tensor *[]){a}, 0, 0));
    ck_assert_int_eq(ag_last_status(), AG_ERR_ARG);
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_tensor_free(c);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(null_input_returns_null_and_keeps_the_message)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tu_rand(1, AG_SHAPE(4), -1, 1, 1, true);
    ag_error(AG_ERR_SHAPE, "earlier failure");
    ck_assert_ptr_null(ag_reshape(ctx, NULL, 1, AG_SHAPE(4)));
    ck_assert_ptr_null(ag_flatten(ctx, NULL, 0));
    ck_assert_ptr_null(ag_channels(ctx, NULL));
    ck_assert_ptr_null(ag_cat(ctx, (ag_tensor *[]){a, NULL}, 2, 0));
    ck_assert_str_eq(ag_last_error(), "earlier failure");
    ag_tensor_free(a);
    ag_ctx_free(ctx);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("shape");
    TCase *tc = tcase_create("shape");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, reshape_is_a_view_with_its_own_gradient);
    tcase_add_test(tc, reshape_infers_the_minus_one_dim);
    tcase_add_test(tc, reshape_rejects_a_different_element_count);
    tcase_add_test(tc, flatten_keeps_the_dims_before_start);
    tcase_add_test(tc, channels_views_a_vector_as_1_c_1_1);
    tcase_add_test(tc, views_gradcheck);
    tcase_add_test(tc, view_of_a_view_reaches_the_leaf);
    tcase_add_test(tc, cat_along_dim_0_stacks_rows);
    tcase_add_test(tc, cat_along_dim_1_interleaves_rows);
    tcase_add_test(tc, cat_gradient_goes_back_to_each_piece);
    tcase_add_loop_test(tc, cat_of_three_gradcheck, 0,
                        (int)(sizeof cat_cases / sizeof cat_cases[0]));
    tcase_add_test(tc, cat_of_six_gradcheck_even_when_only_the_last_needs_grad);
    tcase_add_test(tc, large_cat_matches_plain_copies);
    tcase_add_test(tc, cat_rejects_mismatched_shapes_naming_both);
    tcase_add_test(tc, null_input_returns_null_and_keeps_the_message);
    suite_add_tcase(s, tc);
    return s;
}
