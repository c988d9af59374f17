/* test_loss.c — log_softmax, nll_loss, cross_entropy (with label smoothing) and mse_loss
 * against values computed here in double, their gradients, and their errors. */
#include "../test_util.h"

#include <stdlib.h>
#include <string.h>

static ag_tensor *from_values(int32_t ndim, const int64_t *shape, const float *v,
                              bool requires_grad)
{
    ag_tensor *t = ag_tensor_new(ndim, shape, requires_grad);
    ck_assert_ptr_nonnull(t);
    memcpy(t->data, v, (size_t)t->numel * sizeof(float));
    return t;
}

/* F.cross_entropy(x, y, label_smoothing=eps) in double, straight from its definition:
 * mean_i((1 - eps)(-logp[i, y_i]) + eps / C sum_c(-logp[i, c])). */
static double cross_entropy_ref(const ag_tensor *x, const int32_t *labels, double eps)
{
    const int64_t n = x->shape[0], c = x->shape[1];
    double total = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *r = x->data + i * c;
        double mx = r[0], s = 0.0, smooth = 0.0;
        for (int64_t k = 1; k < c; k++)
            mx = fmax(mx, r[k]);
        for (int64_t k = 0; k < c; k++)
            s += exp(r[k] - mx);
        double lse = mx + log(s);
        for (int64_t k = 0; k < c; k++)
            smooth += lse - r[k];
        total += (1.0 - eps) * (lse - r[labels[i]]) + eps / (double)c * smooth;
    }
    return total / (double)n;
}

/* ---- forward values ---- */

START_TEST(log_softmax_matches_hand_values)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = from_values(2, AG_SHAPE(2, 3), (const float[]){1, 2, 3, 0, 0, 0}, false);
    ag_tensor *y = ag_log_softmax(ctx, x);
    ck_assert_ptr_nonnull(y);
    const double lse = log(exp(1.0) + exp(2.0) + exp(3.0)); /* 3.4076... */
    for (int k = 0; k < 3; k++) {
        ck_assert_double_eq_tol(y->data[k], (k + 1) - lse, 1e-6);
        ck_assert_double_eq_tol(y->data[3 + k], -log(3.0), 1e-6);
    }
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(cross_entropy_of_hand_picked_logits)
{
    ag_ctx *ctx = ag_ctx_new();
    /* softmax(0, ln 3) = (1/4, 3/4): the losses are ln 4 and ln 4/3. */
    const float l3 = (float)log(3.0);
    ag_tensor *x = from_values(2, AG_SHAPE(2, 2), (const float[]){0, l3, 0, l3}, false);
    ag_tensor *y = ag_cross_entropy(ctx, x, (const int32_t[]){0, 1}, 0.0f);
    ck_assert_int_eq(y->ndim, 1);
    ck_assert_int_eq(y->shape[0], 1);
    ck_assert_double_eq_tol(y->data[0], (log(4.0) + log(4.0 / 3.0)) / 2, 1e-6);
    /* With eps = 0.1, each sample adds 0.1 / 2 (ln 4 + ln 4/3) and keeps 0.9 of its own. */
    y = ag_cross_entropy(ctx, x, (const int32_t[]){0, 1}, 0.1f);
    double smooth = 0.05 * (log(4.0) + log(4.0 / 3.0));
    ck_assert_double_eq_tol(
        y->data[0], (0.9 * log(4.0) + smooth + 0.9 * log(4.0 / 3.0) + smooth) / 2, 1e-6);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

static void check_cross_entropy(int64_t n, int64_t c, uint64_t seed)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(n, c), -5.0f, 5.0f, seed, false);
    int32_t *labels = malloc((size_t)n * sizeof *labels);
    for (int64_t i = 0; i < n; i++)
        labels[i] = (int32_t)((i * 7 + 3) % c);
    const float eps[3] = {0.0f, 0.1f, 1.0f};
    for (int k = 0; k < 3; k++) {
        ag_tensor *y = ag_cross_entropy(ctx, x, labels, eps[k]);
        ck_assert_ptr_nonnull(y);
        double ref = cross_entropy_ref(x, labels, eps[k]);
        ck_assert_double_eq_tol(y->data[0], ref, 1e-6 * fabs(ref) + 1e-7);
    }
    free(labels);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}

START_TEST(cross_entropy_matches_double_reference)
{
    check_cross_entropy(7, 10, 3);
    check_cross_entropy(1, 2, 4);
    check_cross_entropy(300, 123, 5); /* large enough to run rows in parallel */
}
END_TEST

START_TEST(cross_entropy_equals_nll_of_log_softmax)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(5, 4), -3.0f, 3.0f, 4, true);
    const int32_t labels[5] = {3, 0, 2, 1, 3};
    ag_tensor *fused = ag_cross_entropy(ctx, x, labels, 0.0f);
    ag_tensor *composed = ag_nll_loss(ctx, ag_log_softmax(ctx, x), labels);
    ck_assert_float_eq_tol(fused->data[0], composed->data[0], 1e-6f);
    ck_assert_int_eq(ag_backward(ctx, fused), AG_OK);
    float g_fused[20];
    memcpy(g_fused, x->grad, sizeof g_fused);
    ag_tensor_zero_grad(x);
    ck_assert_int_eq(ag_backward(ctx, composed), AG_OK);
    for (int i = 0; i < 20; i++)
        ck_assert_float_eq_tol(g_fused[i], x->grad[i], 1e-6f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(nll_loss_is_the_mean_negative_picked_value)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *lp =
        from_values(2, AG_SHAPE(3, 2), (const float[]){-1, -2, -0.5f, -4, -3, -0.25f}, true);
    ag_tensor *y = ag_nll_loss(ctx, lp, (const int32_t[]){1, 0, 1});
    ck_assert_float_eq_tol(y->data[0], (2.0f + 0.5f + 0.25f) / 3, 1e-6f);
    ck_assert_int_eq(ag_backward(ctx, y), AG_OK);
    const float expect[6] = {0, -1.0f / 3, -1.0f / 3, 0, 0, -1.0f / 3};
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq_tol(lp->grad[i], expect[i], 1e-7f);
    ag_tensor_free(lp);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(mse_loss_is_the_mean_squared_difference)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = from_values(2, AG_SHAPE(2, 2), (const float[]){1, 2, 3, 4}, true);
    ag_tensor *b = from_values(2, AG_SHAPE(2, 2), (const float[]){0, 2, 5, 4}, true);
    ag_tensor *y = ag_mse_loss(ctx, a, b);
    ck_assert_float_eq(y->data[0], 1.25f); /* (1 + 0 + 4 + 0) / 4 */
    ck_assert_int_eq(ag_backward(ctx, y), AG_OK);
    const float da[4] = {0.5f, 0.0f, -1.0f, 0.0f}; /* 2 (a - b) / 4 */
    for (int i = 0; i < 4; i++) {
        ck_assert_float_eq(a->grad[i], da[i]);
        ck_assert_float_eq(b->grad[i], -da[i]);
    }
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(mse_loss_of_many_elements_matches_double_sum)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *a = tu_rand(2, AG_SHAPE(250, 201), -3.0f, 3.0f, 40, false);
    ag_tensor *b = tu_rand(2, AG_SHAPE(250, 201), -1.0f, 1.0f, 41, false);
    double s = 0.0;
    for (int64_t i = 0; i < a->numel; i++)
        s += ((double)a->data[i] - b->data[i]) * ((double)a->data[i] - b->data[i]);
    ag_tensor *y = ag_mse_loss(ctx, a, b);
    ck_assert_double_eq_tol(y->data[0], s / (double)a->numel, 1e-6);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- gradients ---- */

START_TEST(cross_entropy_grad_is_softmax_minus_target_over_n)
{
    ag_ctx *ctx = ag_ctx_new();
    const float l3 = (float)log(3.0);
    ag_tensor *x = from_values(2, AG_SHAPE(2, 2), (const float[]){0, l3, 0, l3}, true);
    ag_tensor *y = ag_cross_entropy(ctx, x, (const int32_t[]){0, 1}, 0.1f);
    ck_assert_int_eq(ag_backward(ctx, y), AG_OK);
    /* target = 0.9 onehot + 0.05: (0.95, 0.05) and (0.05, 0.95); softmax (0.25, 0.75). */
    const float expect[4] = {(0.25f - 0.95f) / 2, (0.75f - 0.05f) / 2, (0.25f - 0.05f) / 2,
                             (0.75f - 0.95f) / 2};
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq_tol(x->grad[i], expect[i], 1e-6f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

typedef struct labelled {
    const int32_t *labels;
    float eps;
} labelled;

static ag_tensor *log_softmax_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    return ag_log_softmax(ctx, in[0]);
}

static ag_tensor *nll_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    return ag_nll_loss(ctx, in[0], ((const labelled *)user)->labels);
}

static ag_tensor *cross_entropy_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    const labelled *l = user;
    return ag_cross_entropy(ctx, in[0], l->labels, l->eps);
}

static ag_tensor *mse_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    return ag_mse_loss(ctx, in[0], in[1]);
}

START_TEST(log_softmax_gradcheck)
{
    ag_tensor *x = tu_rand(2, AG_SHAPE(3, 7), -3.0f, 3.0f, 10, true);
    TU_GRADCHECK(&x, 1, log_softmax_fn, NULL, NULL);
    ag_tensor *x1 = tu_rand(2, AG_SHAPE(1, 5), -3.0f, 3.0f, 11, true);
    TU_GRADCHECK(&x1, 1, log_softmax_fn, NULL, NULL);
    ag_tensor_free(x);
    ag_tensor_free(x1);
}
END_TEST

START_TEST(nll_loss_gradcheck)
{
    ag_tensor *x = tu_rand(2, AG_SHAPE(3, 7), -3.0f, 0.0f, 12, true);
    labelled l = {(const int32_t[]){6, 0, 3}, 0.0f};
    TU_GRADCHECK(&x, 1, nll_fn, &l, NULL);
    ag_tensor_free(x);
}
END_TEST

START_TEST(cross_entropy_gradcheck)
{
    ag_tensor *x = tu_rand(2, AG_SHAPE(3, 7), -3.0f, 3.0f, 13, true);
    labelled l = {(const int32_t[]){2, 6, 0}, 0.0f};
    TU_GRADCHECK(&x, 1, cross_entropy_fn, &l, NULL);
    l.eps = 0.1f;
    TU_GRADCHECK(&x, 1, cross_entropy_fn, &l, NULL);
    ag_tensor *x1 = tu_rand(2, AG_SHAPE(1, 5), -3.0f, 3.0f, 14, true);
    labelled l1 = {(const int32_t[]){4}, 0.25f};
    TU_GRADCHECK(&x1, 1, cross_entropy_fn, &l1, NULL);
    ag_tensor_free(x);
    ag_tensor_free(x1);
}
END_TEST

START_TEST(mse_loss_gradcheck_to_both_inputs)
{
    ag_tensor *in[2] = {tu_rand(3, AG_SHAPE(3, 5, 2), -2.0f, 2.0f, 15, true),
                        tu_rand(3, AG_SHAPE(3, 5, 2), -2.0f, 2.0f, 16, true)};
    TU_GRADCHECK(in, 2, mse_fn, NULL, NULL);
    /* A target that needs no gradient gets none. */
    ag_tensor_free(in[1]);
    in[1] = tu_rand(3, AG_SHAPE(3, 5, 2), -2.0f, 2.0f, 16, false);
    TU_GRADCHECK(in, 2, mse_fn, NULL, NULL);
    ck_assert_ptr_null(in[1]->grad);
    ag_tensor_free(in[0]);
    ag_tensor_free(in[1]);
}
END_TEST

/* ---- numerics ---- */

START_TEST(large_logits_stay_finite)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x =
        from_values(2, AG_SHAPE(2, 3), (const float[]){1e4f, 0, -1e4f, 1e4f, 1e4f, 1e4f}, true);
    const int32_t labels[2] = {0, 2};
    ag_tensor *y = ag_cross_entropy(ctx, x, labels, 0.1f);
    ck_assert(isfinite(y->data[0]));
    /* Row 0 is certain of its label (only the smoothing term 0.1/3 (0 + 1e4 + 2e4)
     * remains); row 1 is uniform, ln 3. */
    ck_assert_double_eq_tol(y->data[0], (0.1 / 3 * 3e4 + log(3.0)) / 2, 1e-2);
    ck_assert_int_eq(ag_backward(ctx, y), AG_OK);
    for (int i = 0; i < 6; i++)
        ck_assert(isfinite(x->grad[i]));
    ag_tensor *lp = ag_log_softmax(ctx, x);
    ck_assert_float_eq(lp->data[0], 0.0f);
    ck_assert_float_eq(lp->data[2], -2e4f);
    /* x - lse in float: lse = 1e4 + ln 3 is only known to float's 1e-3 there (so in
     * PyTorch too). */
    ck_assert_float_eq_tol(lp->data[4], (float)-log(3.0), 1e-3f);
    y = ag_cross_entropy(ctx, x, labels, 0.0f);
    ck_assert_double_eq_tol(y->data[0], log(3.0) / 2, 1e-6);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(labels_are_only_borrowed_for_the_call)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(2, 3), -1.0f, 1.0f, 20, true);
    int32_t labels[2] = {0, 1};
    ag_tensor *y = ag_cross_entropy(ctx, x, labels, 0.0f);
    labels[0] = 2; /* the caller reuses its buffer before backward */
    labels[1] = 2;
    ck_assert_int_eq(ag_backward(ctx, y), AG_OK);
    ck_assert_float_lt(x->grad[0], 0.0f); /* the true class is pushed up */
    ck_assert_float_lt(x->grad[4], 0.0f);
    ck_assert_float_gt(x->grad[2], 0.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- errors ---- */

START_TEST(losses_reject_labels_out_of_range)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_tensor_new(2, AG_SHAPE(4, 5), true);
    ck_assert_ptr_null(ag_cross_entropy(ctx, x, (const int32_t[]){0, 4, 5, 1}, 0.0f));
    ck_assert_int_eq(ag_last_status(), AG_ERR_ARG);
    ck_assert_str_eq(ag_last_error(),
                     "cross_entropy: sample 2 has label 5, outside [0, 5) for input [4, 5]");
    ck_assert_ptr_null(ag_nll_loss(ctx, x, (const int32_t[]){0, 1, 2, -100}));
    ck_assert_str_eq(ag_last_error(),
                     "nll_loss: sample 3 has label -100, outside [0, 5) for input [4, 5]");
    ck_assert_ptr_null(ag_cross_entropy(ctx, x, NULL, 0.0f));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "labels is NULL"));
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(losses_reject_bad_shapes_and_arguments)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x3 = ag_tensor_new(3, AG_SHAPE(2, 3, 4), false);
    const int32_t labels[2] = {0, 1};
    ck_assert_ptr_null(ag_cross_entropy(ctx, x3, labels, 0.0f));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_str_eq(ag_last_error(), "cross_entropy: input [2, 3, 4] must be [N, C]");
    ck_assert_ptr_null(ag_nll_loss(ctx, x3, labels));
    ck_assert_str_eq(ag_last_error(), "nll_loss: input [2, 3, 4] must be [N, C]");
    ag_tensor *x = ag_tensor_new(2, AG_SHAPE(2, 3), false);
    ck_assert_ptr_null(ag_cross_entropy(ctx, x, labels, 1.5f));
    ck_assert_int_eq(ag_last_status(), AG_ERR_ARG);
    ck_assert_ptr_nonnull(
        strstr(ag_last_error(), "label_smoothing must be between 0.0 and 1.0"));
    ck_assert_ptr_null(ag_cross_entropy(ctx, x, labels, -0.1f));
    ag_tensor *a = ag_tensor_new(2, AG_SHAPE(3, 4), false);
    ag_tensor *b = ag_tensor_new(2, AG_SHAPE(4, 3), false);
    ck_assert_ptr_null(ag_mse_loss(ctx, a, b));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_str_eq(ag_last_error(),
                     "mse_loss: pred and target differ in shape: [3, 4] and [4, 3]");
    /* A NULL input (an earlier op failed) passes through without a new message. */
    ag_error(AG_ERR_SHAPE, "earlier failure");
    ck_assert_ptr_null(ag_log_softmax(ctx, NULL));
    ck_assert_ptr_null(ag_nll_loss(ctx, NULL, labels));
    ck_assert_ptr_null(ag_cross_entropy(ctx, NULL, labels, 0.0f));
    ck_assert_ptr_null(ag_mse_loss(ctx, a, NULL));
    ck_assert_str_eq(ag_last_error(), "earlier failure");
    ag_tensor_free(x3);
    ag_tensor_free(x);
    ag_tensor_free(a);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(losses_record_nothing_under_no_grad)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(3, 4), -1.0f, 1.0f, 30, true);
    ag_no_grad_begin(ctx);
    ag_tensor *y = ag_cross_entropy(ctx, x, (const int32_t[]){0, 1, 2}, 0.1f);
    ag_no_grad_end(ctx);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ck_assert(!(y->flags & AG_F_REQUIRES_GRAD));
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("loss");
    TCase *tc = tcase_create("loss");
    tcase_add_test(tc, log_softmax_matches_hand_values);
    tcase_add_test(tc, cross_entropy_of_hand_picked_logits);
    tcase_add_test(tc, cross_entropy_matches_double_reference);
    tcase_add_test(tc, cross_entropy_equals_nll_of_log_softmax);
    tcase_add_test(tc, nll_loss_is_the_mean_negative_picked_value);
    tcase_add_test(tc, mse_loss_is_the_mean_squared_difference);
    tcase_add_test(tc, mse_loss_of_many_elements_matches_double_sum);
    tcase_add_test(tc, cross_entropy_grad_is_softmax_minus_target_over_n);
    tcase_add_test(tc, log_softmax_gradcheck);
    tcase_add_test(tc, nll_loss_gradcheck);
    tcase_add_test(tc, cross_entropy_gradcheck);
    tcase_add_test(tc, mse_loss_gradcheck_to_both_inputs);
    tcase_add_test(tc, large_logits_stay_finite);
    tcase_add_test(tc, labels_are_only_borrowed_for_the_call);
    tcase_add_test(tc, losses_reject_labels_out_of_range);
    tcase_add_test(tc, losses_reject_bad_shapes_and_arguments);
    tcase_add_test(tc, losses_record_nothing_under_no_grad);
    suite_add_tcase(s, tc);
    return s;
}
