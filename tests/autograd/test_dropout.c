/* test_dropout.c — ag_dropout: inverted dropout driven by one uniform draw per element. */
#include "../test_util.h"

#include <string.h>

static ag_tensor *ones(int64_t n, bool requires_grad)
{
    ag_tensor *t = ag_tensor_new(1, AG_SHAPE(n), requires_grad);
    ck_assert_ptr_nonnull(t);
    for (int64_t i = 0; i < n; i++)
        t->data[i] = 1.0f;
    return t;
}

/* The scale PyTorch applies to survivors: noise.div_(1 - p) in float. */
static float survivor_scale(float p)
{
    return 1.0f / (float)(1.0 - (double)p);
}

START_TEST(dropout_drops_exactly_where_the_uniform_draw_is_below_p)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(3, AG_SHAPE(3, 5, 7), -1.0f, 1.0f, 1, false);
    ag_rng rng, replay;
    ag_rng_seed(&rng, 2024, 3);
    replay = rng;
    const float p = 0.4f;
    ag_tensor *y = ag_dropout(ctx, x, p, true, &rng);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->ndim, 3);
    for (int64_t i = 0; i < x->numel; i++) {
        float u = ag_rng_uniform(&replay);
        float expect = u < p ? 0.0f : x->data[i] * survivor_scale(p);
        ck_assert_float_eq(y->data[i], expect);
    }
    /* ...and the caller's generator has advanced by exactly numel draws. */
    ck_assert_uint_eq(ag_rng_u32(&rng), ag_rng_u32(&replay));
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(dropout_same_seed_gives_the_same_mask)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ones(1000, false);
    ag_rng a, b, c;
    ag_rng_seed(&a, 7, 0);
    ag_rng_seed(&b, 7, 0);
    ag_rng_seed(&c, 8, 0);
    ag_tensor *ya = ag_dropout(ctx, x, 0.5f, true, &a);
    ag_tensor *yb = ag_dropout(ctx, x, 0.5f, true, &b);
    ag_tensor *yc = ag_dropout(ctx, x, 0.5f, true, &c);
    ck_assert_mem_eq(ya->data, yb->data, 1000 * sizeof(float));
    ck_assert(memcmp(ya->data, yc->data, 1000 * sizeof(float)) != 0);
    /* A second call with the advanced generator draws a different mask. */
    ag_tensor *ya2 = ag_dropout(ctx, x, 0.5f, true, &a);
    ck_assert(memcmp(ya->data, ya2->data, 1000 * sizeof(float)) != 0);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(dropout_rate_is_near_p_and_survivors_are_scaled)
{
    enum { N = 100000 };
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ones(N, false);
    ag_rng rng;
    ag_rng_seed(&rng, 99, 1);
    const float ps[3] = {0.1f, 0.3f, 0.75f};
    for (int k = 0; k < 3; k++) {
        ag_tensor *y = ag_dropout(ctx, x, ps[k], true, &rng);
        int64_t dropped = 0;
        for (int64_t i = 0; i < N; i++) {
            if (y->data[i] == 0.0f)
                dropped++;
            else
                ck_assert_float_eq(y->data[i], survivor_scale(ps[k]));
        }
        /* The standard deviation of the rate is at most 0.0015 here: 0.006 is 4 sigma. */
        ck_assert_double_eq_tol((double)dropped / N, ps[k], 0.006);
    }
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(dropout_grad_is_mask_times_scale)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ones(300, true);
    ag_tensor *g = tu_rand(1, AG_SHAPE(300), -1.0f, 1.0f, 5, false);
    ag_rng rng;
    ag_rng_seed(&rng, 1, 1);
    const float p = 0.25f;
    ag_tensor *y = ag_dropout(ctx, x, p, true, &rng);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, g->data), AG_OK);
    int kept = 0;
    for (int i = 0; i < 300; i++) {
        bool keep = y->data[i] != 0.0f; /* x = 1, so the output shows the mask */
        kept += keep;
        ck_assert_float_eq(x->grad[i], keep ? g->data[i] * survivor_scale(p) : 0.0f);
    }
    ck_assert_int_gt(kept, 0);
    ck_assert_int_lt(kept, 300);
    ag_tensor_free(x);
    ag_tensor_free(g);
    ag_ctx_free(ctx);
}
END_TEST

/* The gradient check needs the same mask on every run: re-seed inside. */
static ag_tensor *dropout_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    ag_rng rng;
    ag_rng_seed(&rng, 42, 0);
    return ag_dropout(ctx, in[0], *(const float *)user, true, &rng);
}

START_TEST(dropout_gradcheck)
{
    ag_tensor *x = tu_rand(4, AG_SHAPE(3, 2, 5, 7), -2.0f, 2.0f, 6, true);
    float p = 0.3f;
    TU_GRADCHECK(&x, 1, dropout_fn, &p, NULL);
    ag_tensor_free(x);
}
END_TEST

START_TEST(dropout_is_identity_in_eval_and_at_p_zero)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ones(10, true);
    ag_rng rng, before;
    ag_rng_seed(&rng, 3, 3);
    before = rng;
    ck_assert_ptr_eq(ag_dropout(ctx, x, 0.5f, false, &rng), x);
    ck_assert_ptr_eq(ag_dropout(ctx, x, 0.0f, true, &rng), x);
    ck_assert_ptr_eq(ag_dropout(ctx, x, 0.5f, false, NULL), x); /* no rng needed */
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ck_assert_uint_eq(rng.state, before.state); /* nothing drawn */
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(dropout_p_one_zeroes_everything)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(4, 6), -3.0f, 3.0f, 8, true);
    ag_rng rng;
    ag_rng_seed(&rng, 5, 5);
    ag_tensor *y = ag_dropout(ctx, x, 1.0f, true, &rng);
    ck_assert_ptr_nonnull(y);
    for (int i = 0; i < 24; i++)
        ck_assert_float_eq(y->data[i], 0.0f);
    float g[24];
    for (int i = 0; i < 24; i++)
        g[i] = 1.0f;
    ck_assert_int_eq(ag_backward_seeded(ctx, y, g), AG_OK);
    for (int i = 0; i < 24; i++)
        ck_assert_float_eq(x->grad[i], 0.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(dropout_rejects_p_outside_zero_one)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ones(4, false);
    ag_rng rng;
    ag_rng_seed(&rng, 1, 1);
    ck_assert_ptr_null(ag_dropout(ctx, x, 1.5f, true, &rng));
    ck_assert_int_eq(ag_last_status(), AG_ERR_ARG);
    ck_assert_str_eq(ag_last_error(),
                     "dropout: probability has to be between 0 and 1, but got 1.5");
    ck_assert_ptr_null(ag_dropout(ctx, x, -0.1f, true, &rng));
    ck_assert_ptr_null(ag_dropout(ctx, x, NAN, true, &rng));
    /* Checked in eval mode too, as F.dropout does. */
    ck_assert_ptr_null(ag_dropout(ctx, x, 2.0f, false, &rng));
    ck_assert_ptr_null(ag_dropout(ctx, x, 0.5f, true, NULL));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "rng is NULL"));
    ag_error(AG_ERR_SHAPE, "earlier failure");
    ck_assert_ptr_null(ag_dropout(ctx, NULL, 0.5f, true, &rng));
    ck_assert_str_eq(ag_last_error(), "earlier failure");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("dropout");
    TCase *tc = tcase_create("dropout");
    tcase_add_test(tc, dropout_drops_exactly_where_the_uniform_draw_is_below_p);
    tcase_add_test(tc, dropout_same_seed_gives_the_same_mask);
    tcase_add_test(tc, dropout_rate_is_near_p_and_survivors_are_scaled);
    tcase_add_test(tc, dropout_grad_is_mask_times_scale);
    tcase_add_test(tc, dropout_gradcheck);
    tcase_add_test(tc, dropout_is_identity_in_eval_and_at_p_zero);
    tcase_add_test(tc, dropout_p_one_zeroes_everything);
    tcase_add_test(tc, dropout_rejects_p_outside_zero_one);
    suite_add_tcase(s, tc);
    return s;
}
