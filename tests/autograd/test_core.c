/* test_core.c — the engine itself: arena, tape, grad mode, accumulation, errors, RNG. */
#include "../test_util.h"

#include "autograd/ag_impl.h"

#include <stdlib.h>
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

/* Runs backward from y twice and checks every leaf's gradient is exactly twice what the
 * first pass gave; frees the leaves and the context. */
static void backward_twice_gives_exactly_twice(ag_ctx *ctx, ag_tensor *y, ag_tensor **leaves,
                                               int n)
{
    float *once[8];
    ck_assert_int_le(n, 8);
    ck_assert_int_eq(ag_backward(ctx, y), AG_OK);
    for (int k = 0; k < n; k++) {
        once[k] = malloc((size_t)leaves[k]->numel * sizeof(float));
        memcpy(once[k], leaves[k]->grad, (size_t)leaves[k]->numel * sizeof(float));
    }
    ck_assert_int_eq(ag_backward(ctx, y), AG_OK);
    for (int k = 0; k < n; k++) {
        for (int64_t i = 0; i < leaves[k]->numel; i++)
            ck_assert_msg(leaves[k]->grad[i] == 2.0f * once[k][i],
                          "leaf %d [%lld]: %g after two passes, %g after one", k,
                          (long long)i, (double)leaves[k]->grad[i], (double)once[k][i]);
        free(once[k]);
        ag_tensor_free(leaves[k]);
    }
    ag_ctx_free(ctx);
}

/* Convolutions off the direct path (strided: im2col + sgemm; depthwise) add a backward's
 * whole weight gradient once, not sample by sample: two passes give exactly twice one. */
START_TEST(two_backward_passes_through_strided_and_depthwise_convs_give_exactly_twice)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(3, 4, 7, 6), -1.0f, 1.0f, 30, true);
    ag_tensor *w1 = tu_rand(4, AG_SHAPE(4, 4, 3, 3), -1.0f, 1.0f, 31, true);
    ag_tensor *w2 = tu_rand(4, AG_SHAPE(4, 1, 3, 3), -1.0f, 1.0f, 32, true);
    const ag_conv2d_args strided = {{2, 2}, {1, 1}, {1, 1}, 1};
    const ag_conv2d_args depthwise = {{1, 1}, {1, 1}, {1, 1}, 4};
    ag_tensor *y = ag_sum(ctx, ag_conv2d(ctx, ag_conv2d(ctx, x, w1, NULL, &strided), w2, NULL,
                                         &depthwise), NULL, 0, false);
    ck_assert_msg(y != NULL, "%s", ag_last_error());
    ag_tensor *leaves[] = {x, w1, w2};
    backward_twice_gives_exactly_twice(ctx, y, leaves, 3);
}
END_TEST

/* The second pass finds the intermediate gradients allocated (and cleared): the ops
 * that wrote them fresh the first time now add, and the leaves get exactly twice. */
START_TEST(two_backward_passes_through_writing_ops_give_exactly_twice)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(2, 3, 6, 5), -1.0f, 1.0f, 20, true);
    ag_tensor *w = tu_rand(4, AG_SHAPE(3, 3, 3, 3), -1.0f, 1.0f, 21, true);
    ag_tensor *bw = tu_rand(1, AG_SHAPE(3), 0.5f, 1.5f, 22, true);
    ag_tensor *bb = tu_rand(1, AG_SHAPE(3), -0.5f, 0.5f, 23, true);
    ag_tensor *fw = tu_rand(2, AG_SHAPE(4, 3 * 3 * 2), -1.0f, 1.0f, 24, true);
    const ag_conv2d_args ca = {{1, 1}, {1, 1}, {1, 1}, 1};
    const ag_batch_norm_args ba = {.training = true, .momentum = 0.1f, .eps = 1e-5f};
    const ag_pool2d_args pa = {.kernel = {2, 2}};
    ag_tensor *t = ag_relu(ctx, ag_scale(ctx, x, 1.0f));
    ag_tensor *u = ag_batch_norm(ctx, ag_conv2d(ctx, t, w, NULL, &ca), bw, bb, NULL, NULL, &ba);
    ag_tensor *v = ag_max_pool2d(ctx, ag_relu(ctx, ag_add(ctx, u, t)), &pa);
    ag_tensor *y = ag_sum(ctx, ag_linear(ctx, ag_flatten(ctx, v, 1), fw, NULL), NULL, 0, false);
    ck_assert_msg(y != NULL, "%s", ag_last_error());
    ag_tensor *leaves[] = {x, w, bw, bb, fw};
    backward_twice_gives_exactly_twice(ctx, y, leaves, 5);
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

START_TEST(grad_write_is_fresh_once_and_never_for_heap_tensors)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_param_new(1, AG_SHAPE(3));
    ag_tensor *t = triple(ctx, x); /* an arena tensor that requires a gradient */
    bool fresh = false;
    float *g = ag_grad_write(ctx, t, &fresh);
    ck_assert_ptr_nonnull(g);
    ck_assert(fresh); /* new and not zeroed: the caller stores every value */
    for (int i = 0; i < 3; i++)
        g[i] = 1.0f;
    ck_assert_ptr_eq(ag_grad_write(ctx, t, &fresh), g);
    ck_assert(!fresh); /* a second consumer adds */
    ck_assert_ptr_nonnull(ag_grad_write(ctx, x, &fresh));
    ck_assert(!fresh); /* a parameter's gradient sums over backward calls */
    ck_assert_float_eq(x->grad[0], 0.0f);
    ag_tensor *c = ag_tensor_new(1, AG_SHAPE(3), false);
    fresh = true;
    ck_assert_ptr_null(ag_grad_write(ctx, c, &fresh));
    ck_assert(!fresh);
    ag_tensor_free(c);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- ops that write their first contribution (ag_grad_write) ----
 * Each op's input gradient is computed three ways, from a leaf x:
 *   leaf:   y = f(x)                 the op adds into x's zeroed heap gradient;
 *   fresh:  y = f(t), t = 1 * x      the op stores into t's new gradient buffer;
 *   shared: y = f(t), plus a second consumer of t whose backward runs first and adds
 *           0.5 into t's gradient, so the op then adds.
 * All three must give the same x gradient, to the bit (shared: + 0.5, up to rounding).
 * In debug and sanitizer builds fresh buffers start as NaN, so a value the op leaves
 * unwritten fails here. */

typedef ag_tensor *(*fresh_case_fn)(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p);

static ag_tensor *case_relu(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    (void)p;
    return ag_relu(ctx, t);
}

static ag_tensor *case_add_self(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    (void)p;
    return ag_add(ctx, t, t); /* one tensor as both operands: stored, then added */
}

static ag_tensor *case_sub_from(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    return ag_sub(ctx, p[0], t);
}

static ag_tensor *case_bn_train(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    const ag_batch_norm_args a = {.training = true, .momentum = 0.1f, .eps = 1e-5f};
    return ag_batch_norm(ctx, t, p[0], p[1], NULL, NULL, &a);
}

static ag_tensor *case_bn_eval(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    const ag_batch_norm_args a = {.training = false, .momentum = 0.1f, .eps = 1e-5f};
    return ag_batch_norm(ctx, t, p[0], p[1], p[2], p[3], &a);
}

static ag_tensor *case_linear(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    return ag_linear(ctx, t, p[0], p[1]);
}

static ag_tensor *case_matmul_self(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    (void)p;
    return ag_matmul(ctx, t, t, false, true); /* t t^T */
}

static ag_tensor *case_conv(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p,
                            ag_conv2d_args a)
{
    return ag_conv2d(ctx, t, p[0], p[1], &a);
}

static ag_tensor *case_conv_3x3_pad(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    return case_conv(ctx, t, p, (ag_conv2d_args){{1, 1}, {1, 1}, {1, 1}, 1});
}

static ag_tensor *case_conv_stride2(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    return case_conv(ctx, t, p, (ag_conv2d_args){{2, 2}, {1, 0}, {1, 1}, 1});
}

static ag_tensor *case_conv_depthwise(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    return case_conv(ctx, t, p, (ag_conv2d_args){{1, 1}, {1, 1}, {1, 1}, 3});
}

static ag_tensor *case_conv_1x1(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    return case_conv(ctx, t, p, (ag_conv2d_args){{1, 1}, {0, 0}, {1, 1}, 1});
}

static ag_tensor *case_pool_2x2(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    (void)p;
    const ag_pool2d_args a = {.kernel = {2, 2}};
    return ag_max_pool2d(ctx, t, &a);
}

static ag_tensor *case_pool_3x3(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    (void)p;
    const ag_pool2d_args a = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}};
    return ag_max_pool2d(ctx, t, &a);
}

static ag_tensor *case_flatten(ag_ctx *ctx, ag_tensor *t, ag_tensor *const *p)
{
    (void)p;
    return ag_flatten(ctx, t, 1);
}

/* Adds 0.5 into t's gradient and passes y's through: joined after f, so its backward
 * runs before f's. */
static void join_backward(ag_ctx *ctx, ag_node *n)
{
    ag_grad_acc(ctx, n->src[0], n->out->grad, n->out->numel);
    float *dt = ag_grad(ctx, n->src[1]);
    for (int64_t i = 0; dt && i < n->src[1]->numel; i++)
        dt[i] += 0.5f;
}

static ag_tensor *join(ag_ctx *ctx, ag_tensor *y, ag_tensor *t)
{
    ag_tensor *z = ag_op_output(ctx, y->ndim, y->shape);
    ck_assert_ptr_nonnull(z);
    memcpy(z->data, y->data, (size_t)y->numel * sizeof(float));
    ag_node *n = ag_op_record(ctx, AG_OP_CUSTOM, z, (ag_tensor *[]){y, t}, 2);
    ck_assert_ptr_nonnull(n);
    n->custom_backward = join_backward;
    return z;
}

enum { PATH_LEAF, PATH_FRESH, PATH_SHARED };

/* x's gradient after one backward of f along `path`, seeded with fixed values. */
static float *fresh_case_grad(fresh_case_fn f, ag_tensor *x, ag_tensor *const *p, int path)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor_zero_grad(x);
    ag_tensor *t = path == PATH_LEAF ? x : ag_scale(ctx, x, 1.0f);
    ag_tensor *y = f(ctx, t, p);
    ck_assert_msg(y != NULL, "%s", ag_last_error());
    if (path == PATH_SHARED)
        y = join(ctx, y, t);
    float *seed = malloc((size_t)y->numel * sizeof(float));
    ag_rng rng;
    ag_rng_seed(&rng, 5, 6);
    for (int64_t i = 0; i < y->numel; i++)
        seed[i] = ag_rng_uniform_range(&rng, -1.0f, 1.0f);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, seed), AG_OK);
    free(seed);
    float *g = malloc((size_t)x->numel * sizeof(float));
    memcpy(g, x->grad, (size_t)x->numel * sizeof(float));
    ag_ctx_free(ctx);
    return g;
}

static void check_fresh_case(const char *name, fresh_case_fn f, ag_tensor *x,
                             ag_tensor *const *p)
{
    float *leaf = fresh_case_grad(f, x, p, PATH_LEAF);
    float *fresh = fresh_case_grad(f, x, p, PATH_FRESH);
    float *shared = fresh_case_grad(f, x, p, PATH_SHARED);
    for (int64_t i = 0; i < x->numel; i++) {
        ck_assert_msg(fresh[i] == leaf[i], "%s: written dx[%lld] = %g, accumulated %g", name,
                      (long long)i, (double)fresh[i], (double)leaf[i]);
        /* an op that adds several terms into one value adds them after the 0.5, not
         * before: the same sum in another order */
        float want = 0.5f + leaf[i];
        ck_assert_msg(fabsf(shared[i] - want) <= 1e-6f * (1.0f + fabsf(want)),
                      "%s: shared dx[%lld] = %.9g, expected %.9g", name, (long long)i,
                      (double)shared[i], (double)want);
    }
    free(leaf);
    free(fresh);
    free(shared);
}

START_TEST(ops_that_write_fresh_gradients_match_accumulation)
{
    const int64_t n = _i ? 1 : 3; /* batch 3, then 1 */
    ag_tensor *img = tu_rand(4, AG_SHAPE(n, 3, 5, 7), -1.0f, 1.0f, 1, true); // odd H, W
    ag_tensor *mat = tu_rand(2, AG_SHAPE(n, 5), -1.0f, 1.0f, 2, true);
    ag_tensor *other = tu_rand(4, AG_SHAPE(n, 3, 5, 7), -1.0f, 1.0f, 3, false);
    ag_tensor *bn[4] = {tu_rand(1, AG_SHAPE(3), 0.5f, 1.5f, 4, true),
                        tu_rand(1, AG_SHAPE(3), -0.5f, 0.5f, 5, true),
                        tu_rand(1, AG_SHAPE(3), -0.5f, 0.5f, 6, false),
                        tu_rand(1, AG_SHAPE(3), 0.5f, 1.5f, 7, false)};
    ag_tensor *lin[2] = {tu_rand(2, AG_SHAPE(4, 5), -1.0f, 1.0f, 8, true),
                         tu_rand(1, AG_SHAPE(4), -1.0f, 1.0f, 9, true)};
    ag_tensor *conv[2] = {tu_rand(4, AG_SHAPE(4, 3, 3, 3), -1.0f, 1.0f, 10, true),
                          tu_rand(1, AG_SHAPE(4), -1.0f, 1.0f, 11, true)};
    ag_tensor *dw[2] = {tu_rand(4, AG_SHAPE(3, 1, 3, 3), -1.0f, 1.0f, 12, true),
                        tu_rand(1, AG_SHAPE(3), -1.0f, 1.0f, 13, true)};
    ag_tensor *pw[2] = {tu_rand(4, AG_SHAPE(4, 3, 1, 1), -1.0f, 1.0f, 14, true), NULL};
    check_fresh_case("relu", case_relu, img, NULL);
    check_fresh_case("add(t, t)", case_add_self, img, NULL);
    check_fresh_case("sub(c, t)", case_sub_from, img, &other);
    check_fresh_case("batch_norm training", case_bn_train, img, bn);
    check_fresh_case("batch_norm eval", case_bn_eval, img, bn);
    check_fresh_case("linear", case_linear, mat, lin);
    check_fresh_case("matmul(t, t^T)", case_matmul_self, mat, NULL);
    check_fresh_case("conv2d 3x3 padding 1", case_conv_3x3_pad, img, conv);
    check_fresh_case("conv2d stride 2", case_conv_stride2, img, conv);
    check_fresh_case("conv2d depthwise", case_conv_depthwise, img, dw);
    check_fresh_case("conv2d 1x1", case_conv_1x1, img, pw);
    check_fresh_case("max_pool2d 2x2", case_pool_2x2, img, NULL);
    check_fresh_case("max_pool2d 3x3 stride 2", case_pool_3x3, img, NULL);
    check_fresh_case("flatten", case_flatten, img, NULL);
    ag_tensor *all[] = {img, mat, other, bn[0], bn[1], bn[2], bn[3], lin[0],
                        lin[1], conv[0], conv[1], dw[0], dw[1], pw[0]};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ag_tensor_free(all[i]);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("autograd core");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, backward_seeds_one_and_reaches_leaf);
    tcase_add_test(tc, two_backward_passes_accumulate_exactly_twice);
    tcase_add_test(tc, two_backward_passes_through_writing_ops_give_exactly_twice);
    tcase_add_test(tc, two_backward_passes_through_strided_and_depthwise_convs_give_exactly_twice);
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
    tcase_add_test(tc, grad_write_is_fresh_once_and_never_for_heap_tensors);
    tcase_add_loop_test(tc, ops_that_write_fresh_gradients_match_accumulation, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}
