/* test_core.c — the engine itself: arena, tape, grad mode, accumulation, errors, RNG. */
#include "../test_util.h"

#include "autograd/ag_impl.h"

#include <string.h>

/* A tiny op made with the internal helpers, so these tests do not depend on any op
 * family: y = 3 x (a CUSTOM node with its own backward). */
static void triple_backward(ag_ctx *ctx, ag_node *n)
{
    float *dx = ag_grad(ctx, n->src[0]);
    if (dx)
        for (int64_t i = 0; i < n->out->numel; i++)
            dx[i] += 3.0f * n->out->grad[i];
}

static ag_tensor *triple(ag_ctx *ctx, ag_tensor *x)
{
    ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape);
    if (!y)
        return NULL;
    for (int64_t i = 0; i < x->numel; i++)
        y->data[i] = 3.0f * x->data[i];
    ag_node *n = ag_op_record(ctx, AG_OP_CUSTOM, y, (ag_tensor *[]){x}, 1);
    if (n && ag_op_recorded(n, y))
        n->custom_backward = triple_backward;
    return ag_op_recorded(n, y);
}

START_TEST(backward_seeds_one_and_reaches_leaf)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_param_new(1, AG_SHAPE(1));
    x->data[0] = 2.0f;
    ag_tensor *y = triple(ctx, triple(ctx, x));
    ck_assert_float_eq(y->data[0], 18.0f);
    ck_assert_int_eq(ag_backward(ctx, y), AG_OK);
    ck_assert_float_eq(x->grad[0], 9.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(two_backward_passes_accumulate_exactly_twice)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_param_new(1, AG_SHAPE(1));
    x->data[0] = 0.5f;
    ag_tensor *y = triple(ctx, triple(ctx, x));
    ck_assert_int_eq(ag_backward(ctx, y), AG_OK);
    float once = x->grad[0];
    ck_assert_int_eq(ag_backward(ctx, y), AG_OK);
    ck_assert_float_eq(x->grad[0], 2.0f * once);
    ag_tensor_zero_grad(x);
    ck_assert_float_eq(x->grad[0], 0.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(no_grad_records_nothing)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_param_new(1, AG_SHAPE(1));
    ag_no_grad_begin(ctx);
    ck_assert(!ag_grad_enabled(ctx));
    ag_tensor *y = triple(ctx, x);
    ag_no_grad_end(ctx);
    ck_assert(ag_grad_enabled(ctx));
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ck_assert_ptr_null(y->node);
    ck_assert(!(y->flags & AG_F_REQUIRES_GRAD));
    ck_assert_int_eq(ag_backward(ctx, y), AG_ERR_STATE);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(inputs_without_grad_record_nothing)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_tensor_new(1, AG_SHAPE(4), false);
    triple(ctx, x);
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(arena_stops_growing_after_first_step)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_param_new(2, AG_SHAPE(300, 1000)); /* 1.2 MB per activation */
    size_t cap_after_first = 0;
    for (int step = 0; step < 4; step++) {
        ag_tensor *y = x;
        for (int k = 0; k < 5; k++)
            y = triple(ctx, y);
        ck_assert_ptr_nonnull(y);
        if (step == 1)
            cap_after_first = ag_ctx_arena_capacity(ctx);
        if (step > 1)
            ck_assert_uint_eq(ag_ctx_arena_capacity(ctx), cap_after_first);
        ag_ctx_reset(ctx);
        ck_assert_uint_eq(ag_ctx_arena_used(ctx), 0);
        ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    }
    ck_assert_uint_ge(cap_after_first, (size_t)5 * 300 * 1000 * sizeof(float));
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(backward_rejects_non_scalar_and_null)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_param_new(1, AG_SHAPE(3));
    ck_assert_int_eq(ag_backward(ctx, triple(ctx, x)), AG_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "[3]"));
    ck_assert_int_eq(ag_backward(ctx, NULL), AG_ERR_STATE);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(tensor_new_rejects_bad_shapes)
{
    ck_assert_ptr_null(ag_tensor_new(6, AG_SHAPE(1, 1, 1, 1, 1, 1), false));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_ptr_null(ag_tensor_new(2, AG_SHAPE(3, -1), false));
    ck_assert_ptr_null(ag_tensor_new(2, AG_SHAPE(INT64_MAX / 2, 16), false));
    ag_error_clear();
    ck_assert_str_eq(ag_last_error(), "");
}
END_TEST

START_TEST(error_context_prefixes_the_message)
{
    ag_error(AG_ERR_FORMAT, "bad magic 0x%x", 0x1234);
    ag_error_context("data/train.idx");
    ck_assert_str_eq(ag_last_error(), "data/train.idx: bad magic 0x1234");
    ck_assert_int_eq(ag_last_status(), AG_ERR_FORMAT);
}
END_TEST

START_TEST(rng_is_reproducible_and_matches_pcg32_reference)
{
    /* pcg32_srandom_r(&rng, 42, 54) then 6 outputs: the reference values printed by
     * pcg32-demo in the PCG C distribution. */
    ag_rng r;
    ag_rng_seed(&r, 42u, 54u);
    const uint32_t expect[6] = {0xa15c02b7, 0x7b47f409, 0xba1d3330,
                                0x83d2f293, 0xbfa4784b, 0xcbed606e};
    for (int i = 0; i < 6; i++)
        ck_assert_uint_eq(ag_rng_u32(&r), expect[i]);
    ag_rng a, b;
    ag_rng_seed(&a, 7, 1);
    ag_rng_seed(&b, 7, 1);
    for (int i = 0; i < 100; i++) {
        float u = ag_rng_uniform(&a);
        ck_assert(u >= 0.0f && u < 1.0f);
        ck_assert_float_eq(u, ag_rng_uniform(&b));
        ck_assert_uint_lt(ag_rng_below(&a, 10), 10);
        ag_rng_below(&b, 10);
    }
}
END_TEST

START_TEST(rng_shuffle_is_a_permutation)
{
    uint32_t idx[100];
    for (uint32_t i = 0; i < 100; i++)
        idx[i] = i;
    ag_rng r;
    ag_rng_seed(&r, 3, 0);
    ag_rng_shuffle(&r, idx, 100);
    int seen[100] = {0};
    int moved = 0;
    for (uint32_t i = 0; i < 100; i++) {
        seen[idx[i]]++;
        moved += idx[i] != i;
    }
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(seen[i], 1);
    ck_assert_int_gt(moved, 50);
}
END_TEST

START_TEST(op_names_come_from_the_list)
{
    ck_assert_str_eq(ag_op_names[AG_OP_ADD], "add");
    ck_assert_str_eq(ag_op_names[AG_OP_CONV2D], "conv2d");
    ck_assert_str_eq(ag_op_names[AG_OP_COUNT - 1], "custom");
}
END_TEST

START_TEST(thread_knob_reads_environment)
{
    setenv("CQAT_NUM_THREADS", "1", 1);
    ck_assert_int_eq(ag_set_num_threads(0), 1);
    ck_assert_int_eq(ag_num_threads(), 1);
    ck_assert_int_eq(ag_set_num_threads(2), 2);
    unsetenv("CQAT_NUM_THREADS");
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("autograd core");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, backward_seeds_one_and_reaches_leaf);
    tcase_add_test(tc, two_backward_passes_accumulate_exactly_twice);
    tcase_add_test(tc, no_grad_records_nothing);
    tcase_add_test(tc, inputs_without_grad_record_nothing);
    tcase_add_test(tc, arena_stops_growing_after_first_step);
    tcase_add_test(tc, backward_rejects_non_scalar_and_null);
    tcase_add_test(tc, tensor_new_rejects_bad_shapes);
    tcase_add_test(tc, error_context_prefixes_the_message);
    tcase_add_test(tc, rng_is_reproducible_and_matches_pcg32_reference);
    tcase_add_test(tc, rng_shuffle_is_a_permutation);
    tcase_add_test(tc, op_names_come_from_the_list);
    tcase_add_test(tc, thread_knob_reads_environment);
    suite_add_tcase(s, tc);
    return s;
}
