/* test_activation.c — relu, hardtanh, relu6, clamp, leaky_relu, sigmoid, tanh and
 * hardswish: values by hand, the gradient at every kink (PyTorch's rule for each),
 * finite-difference checks away from the kinks, and the threaded path. */
#include "../test_util.h"

#include "autograd/ag_impl.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef enum act_kind { RELU, HARDTANH, RELU6, CLAMP, LEAKY_RELU, SIGMOID, TANH, HARDSWISH } act_kind;

/* One activation with its parameters, the kinks a finite difference must not
 * straddle, and the range its test inputs are drawn from. */
typedef struct act_case {
    const char *name;
    act_kind kind;
    float a, b;
    float kinks[2];
    int n_kinks;
    float lo, hi;
} act_case;

static const act_case cases[] = {
    {"relu", RELU, 0, 0, {0}, 1, -3, 3},
    {"hardtanh(-1, 2)", HARDTANH, -1, 2, {-1, 2}, 2, -3, 4},
    {"relu6", RELU6, 0, 0, {0, 6}, 2, -2, 8},
    {"clamp(-0.5, 0.5)", CLAMP, -0.5f, 0.5f, {-0.5f, 0.5f}, 2, -2, 2},
    {"leaky_relu(0.1)", LEAKY_RELU, 0.1f, 0, {0}, 1, -3, 3},
    {"sigmoid", SIGMOID, 0, 0, {0}, 0, -6, 6},
    {"tanh", TANH, 0, 0, {0}, 0, -3, 3},
    {"hardswish", HARDSWISH, 0, 0, {-3, 3}, 2, -5, 5},
};
enum { N_CASES = sizeof cases / sizeof cases[0] };

static ag_tensor *act_apply(ag_ctx *ctx, ag_tensor *x, const act_case *c)
{
    switch (c->kind) {
    case RELU: return ag_relu(ctx, x);
    case HARDTANH: return ag_hardtanh(ctx, x, c->a, c->b);
    case RELU6: return ag_relu6(ctx, x);
    case CLAMP: return ag_clamp(ctx, x, c->a, c->b);
    case LEAKY_RELU: return ag_leaky_relu(ctx, x, c->a);
    case SIGMOID: return ag_sigmoid(ctx, x);
    case TANH: return ag_tanh(ctx, x);
    case HARDSWISH: return ag_hardswish(ctx, x);
    }
    return NULL;
}

static ag_tensor *act_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    return act_apply(ctx, in[0], user);
}

static ag_tensor *vec_of(int64_t n, const float *v)
{
    ag_tensor *t = ag_tensor_new(1, AG_SHAPE(n), true);
    ck_assert_ptr_nonnull(t);
    memcpy(t->data, v, (size_t)n * sizeof *v);
    return t;
}

/* y = f(x) and dL/dx for dL/dy = 1 everywhere; x->grad holds the gradient. */
static ag_tensor *run_with_unit_grad(ag_ctx *ctx, ag_tensor *x, const act_case *c)
{
    ag_tensor_zero_grad(x);
    ag_tensor *y = act_apply(ctx, x, c);
    ck_assert_ptr_nonnull(y);
    float ones[64];
    ck_assert_int_le(y->numel, 64);
    for (int i = 0; i < 64; i++)
        ones[i] = 1.0f;
    ck_assert_int_eq(ag_backward_seeded(ctx, y, ones), AG_OK);
    ck_assert_ptr_nonnull(x->grad);
    return y;
}

/* Exact equality that also accepts NaN == NaN. */
static void assert_same(const float *got, const float *want, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        bool same = isnan(want[i]) ? isnan(got[i]) : got[i] == want[i];
        if (!same)
            ck_abort_msg("%s[%d] = %.9g, want %.9g", what, i, got[i], want[i]);
    }
}

static void assert_close(const float *got, const float *want, int n, float tol, const char *what)
{
    for (int i = 0; i < n; i++)
        if (!(fabsf(got[i] - want[i]) <= tol))
            ck_abort_msg("%s[%d] = %.9g, want %.9g", what, i, got[i], want[i]);
}

START_TEST(relu_zeroes_negatives_and_keeps_nan)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = vec_of(6, (float[]){-2, -0.5f, 0, 0.5f, 3, NAN});
    ag_tensor *y = run_with_unit_grad(ctx, x, &(act_case){.kind = RELU});
    assert_same(y->data, (float[]){0, 0, 0, 0.5f, 3, NAN}, 6, "relu");
    /* threshold_backward(g, y, 0): zero where y <= 0, so at x = 0 too; a NaN output
     * is not <= 0, so its gradient passes */
    assert_same(x->grad, (float[]){0, 0, 0, 1, 1, 1}, 6, "relu grad");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(hardtanh_grad_is_zero_at_the_bounds)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = vec_of(5, (float[]){-3, -1, 0.5f, 2, 5});
    ag_tensor *y = run_with_unit_grad(ctx, x, &(act_case){.kind = HARDTANH, .a = -1, .b = 2});
    assert_same(y->data, (float[]){-1, -1, 0.5f, 2, 2}, 5, "hardtanh");
    assert_same(x->grad, (float[]){0, 0, 1, 0, 0}, 5, "hardtanh grad"); /* strict (lo, hi) */
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(clamp_grad_passes_at_the_bounds)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = vec_of(5, (float[]){-3, -1, 0.5f, 2, 5});
    ag_tensor *y = run_with_unit_grad(ctx, x, &(act_case){.kind = CLAMP, .a = -1, .b = 2});
    assert_same(y->data, (float[]){-1, -1, 0.5f, 2, 2}, 5, "clamp");
    assert_same(x->grad, (float[]){0, 1, 1, 1, 0}, 5, "clamp grad"); /* closed [lo, hi] */
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(clamp_with_min_above_max_gives_max_and_no_grad)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = vec_of(3, (float[]){0, 1.5f, 3});
    ag_tensor *y = run_with_unit_grad(ctx, x, &(act_case){.kind = CLAMP, .a = 2, .b = 1});
    assert_same(y->data, (float[]){1, 1, 1}, 3, "clamp(2, 1)");
    assert_same(x->grad, (float[]){0, 0, 0}, 3, "clamp(2, 1) grad");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(clamp_and_hardtanh_keep_nan)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = vec_of(1, (float[]){NAN});
    ck_assert(isnan(ag_clamp(ctx, x, -1, 1)->data[0]));
    ck_assert(isnan(ag_hardtanh(ctx, x, -1, 1)->data[0]));
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(relu6_is_hardtanh_0_6_on_the_tape)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = vec_of(5, (float[]){-1, 0, 3, 6, 7});
    ag_tensor *y = run_with_unit_grad(ctx, x, &(act_case){.kind = RELU6});
    assert_same(y->data, (float[]){0, 0, 3, 6, 6}, 5, "relu6");
    assert_same(x->grad, (float[]){0, 0, 1, 0, 0}, 5, "relu6 grad");
    ck_assert_int_eq(y->node->op, AG_OP_HARDTANH);
    ck_assert_float_eq(y->node->fp[0], 0.0f);
    ck_assert_float_eq(y->node->fp[1], 6.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(leaky_relu_uses_the_slope_at_and_below_zero)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = vec_of(4, (float[]){-2, 0, 3, NAN});
    ag_tensor *y = run_with_unit_grad(ctx, x, &(act_case){.kind = LEAKY_RELU, .a = 0.1f});
    assert_same(y->data, (float[]){-2 * 0.1f, 0, 3, NAN}, 4, "leaky_relu");
    assert_same(x->grad, (float[]){0.1f, 0.1f, 1, 0.1f}, 4, "leaky_relu grad");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(sigmoid_saturates_without_nan)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = vec_of(5, (float[]){-100, -20, 0, 20, 100});
    ag_tensor *y = run_with_unit_grad(ctx, x, &(act_case){.kind = SIGMOID});
    ck_assert_float_eq(y->data[0], 0.0f); /* exp(100) overflows to inf: 1 / inf */
    ck_assert_float_eq_tol(y->data[1], 2.0611537e-9f, 1e-15f);
    ck_assert_float_eq(y->data[2], 0.5f);
    ck_assert_float_eq(y->data[3], 1.0f);
    ck_assert_float_eq(y->data[4], 1.0f);
    /* sigmoid_backward: g * (1 - y) * y */
    assert_close(x->grad, (float[]){0, 2.0611537e-9f, 0.25f, 0, 0}, 5, 1e-12f, "sigmoid grad");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(tanh_values_and_grad)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = vec_of(4, (float[]){-1, 0, 0.5f, 30});
    ag_tensor *y = run_with_unit_grad(ctx, x, &(act_case){.kind = TANH});
    assert_close(y->data, (float[]){-0.76159416f, 0, 0.46211716f, 1}, 4, 1e-7f, "tanh");
    /* tanh_backward: g * (1 - y^2) */
    assert_close(x->grad, (float[]){0.41997434f, 1, 0.78644773f, 0}, 4, 1e-6f, "tanh grad");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(hardswish_values_and_piecewise_grad)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = vec_of(7, (float[]){-4, -3, -1, 0, 1.5f, 3, 4});
    ag_tensor *y = run_with_unit_grad(ctx, x, &(act_case){.kind = HARDSWISH});
    /* x * relu6(x + 3) / 6 */
    assert_close(y->data, (float[]){0, 0, -1.0f / 3, 0, 1.125f, 3, 4}, 7, 1e-7f, "hardswish");
    /* x < -3: 0; -3 <= x <= 3: x / 3 + 0.5; x > 3: 1 */
    assert_close(x->grad, (float[]){0, -0.5f, 1.0f / 6, 0.5f, 1, 1.5f, 1}, 7, 1e-7f,
                 "hardswish grad");
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* Finite differences on [3, 2, 5, 7] and [1, 5, 7], inputs kept off the kinks. */
START_TEST(activation_gradcheck_on_odd_shapes)
{
    const act_case *c = &cases[_i];
    const int64_t *shapes[2] = {AG_SHAPE(3, 2, 5, 7), AG_SHAPE(1, 5, 7)};
    const int32_t ndims[2] = {4, 3};
    for (int s = 0; s < 2; s++) {
        ag_tensor *x = tu_rand(ndims[s], shapes[s], c->lo, c->hi, 10 + (uint64_t)_i, true);
        tu_avoid_kinks(x, c->kinks, c->n_kinks, 0.05f);
        ag_gradcheck_result res;
        ck_assert_int_eq(ag_gradcheck(&x, 1, act_fn, (void *)c, NULL, &res), AG_OK);
        ck_assert_msg(res.ok, "%s: %s", c->name, res.message);
        ck_assert_int_eq(res.n_checked, x->numel);
        ag_tensor_free(x);
    }
}
END_TEST

/* Big tensors take the OpenMP path; an elementwise op must give the same bits there
 * as on small tensors (the serial path) holding the same values, chunk by chunk,
 * forward and backward. */
START_TEST(threaded_path_matches_small_chunks)
{
    const act_case *c = &cases[_i];
    enum { BIG = (1 << 17) + 3, CHUNK = 1021 };
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *big = tu_rand(1, AG_SHAPE(BIG), c->lo, c->hi, 5, true);
    float *seed = malloc(BIG * sizeof *seed);
    float *y_big = malloc(BIG * sizeof *y_big);
    for (int64_t i = 0; i < BIG; i++)
        seed[i] = (float)(i % 7) - 3.0f;
    ag_tensor *y = act_apply(ctx, big, c);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, seed), AG_OK);
    memcpy(y_big, y->data, BIG * sizeof *y_big);
    for (int64_t off = 0; off < BIG; off += CHUNK) {
        int64_t len = BIG - off < CHUNK ? BIG - off : CHUNK;
        ag_ctx_reset(ctx);
        ag_tensor *part = ag_tensor_new(1, AG_SHAPE(len), true);
        memcpy(part->data, big->data + off, (size_t)len * sizeof(float));
        y = act_apply(ctx, part, c);
        ck_assert_int_eq(ag_backward_seeded(ctx, y, seed + off), AG_OK);
        /* (a plain `if`: a passing ck_assert costs a message to the parent process) */
        for (int64_t i = 0; i < len; i++) {
            if (y->data[i] != y_big[off + i])
                ck_abort_msg("%s value %" PRId64, c->name, off + i);
            if (part->grad[i] != big->grad[off + i])
                ck_abort_msg("%s grad %" PRId64, c->name, off + i);
        }
        ag_tensor_free(part);
    }
    free(seed);
    free(y_big);
    ag_tensor_free(big);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(null_input_returns_null_and_keeps_the_message)
{
    ag_ctx *ctx = ag_ctx_new();
    for (int i = 0; i < N_CASES; i++) {
        ag_error(AG_ERR_IO, "earlier failure");
        ck_assert_ptr_null(act_apply(ctx, NULL, &cases[i]));
        ck_assert_str_eq(ag_last_error(), "earlier failure");
        ck_assert_int_eq(ag_last_status(), AG_ERR_IO);
    }
    ag_error_clear();
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(input_without_grad_records_nothing)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(3, 4), -2, 2, 1, false);
    for (int i = 0; i < N_CASES; i++) {
        ag_tensor *y = act_apply(ctx, x, &cases[i]);
        ck_assert_ptr_nonnull(y);
        ck_assert_ptr_null(y->node);
        ck_assert(!(y->flags & AG_F_REQUIRES_GRAD));
    }
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("activation");
    TCase *tc = tcase_create("activation");
    tcase_add_test(tc, relu_zeroes_negatives_and_keeps_nan);
    tcase_add_test(tc, hardtanh_grad_is_zero_at_the_bounds);
    tcase_add_test(tc, clamp_grad_passes_at_the_bounds);
    tcase_add_test(tc, clamp_with_min_above_max_gives_max_and_no_grad);
    tcase_add_test(tc, clamp_and_hardtanh_keep_nan);
    tcase_add_test(tc, relu6_is_hardtanh_0_6_on_the_tape);
    tcase_add_test(tc, leaky_relu_uses_the_slope_at_and_below_zero);
    tcase_add_test(tc, sigmoid_saturates_without_nan);
    tcase_add_test(tc, tanh_values_and_grad);
    tcase_add_test(tc, hardswish_values_and_piecewise_grad);
    tcase_add_loop_test(tc, activation_gradcheck_on_odd_shapes, 0, N_CASES);
    tcase_add_loop_test(tc, threaded_path_matches_small_chunks, 0, N_CASES);
    tcase_add_test(tc, null_input_returns_null_and_keeps_the_message);
    tcase_add_test(tc, input_without_grad_records_nothing);
    suite_add_tcase(s, tc);
    return s;
}
