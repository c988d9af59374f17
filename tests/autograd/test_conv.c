/* test_conv.c — ag_conv2d against torch.nn.functional.conv2d's definition: values by
 * hand, forward and backward against a naive direct convolution in double (stride,
 * padding, dilation, groups, depthwise, 1x1, non-square, unbatched), gradients by
 * finite differences, the threaded paths, accumulation, and the argument errors. */
#include "../test_util.h"

#include <stdlib.h>
#include <string.h>

/* One convolution to test: x (n, c, h, w), weight (o, c / groups, kh, kw). n == 0
 * means an unbatched 3-D input of one sample. */
typedef struct conv_case {
    const char *name;
    int64_t n, c, h, w, o, kh, kw;
    ag_conv2d_args args;
    bool bias;
} conv_case;

/* clang-format off */
static const conv_case cases[] = {
    /* name                            n  c  h   w  o kh kw  stride  padding dilation g  bias */
    {"plain 3x3",                      2, 3, 5,  5, 4, 3, 3, {{1, 1}, {0, 0}, {1, 1}, 1}, true},
    {"stride 2, padding 1, 5x7",       3, 2, 5,  7, 3, 3, 3, {{2, 2}, {1, 1}, {1, 1}, 1}, true},
    {"dilation 2, padding (2, 1)",     1, 2, 7,  5, 2, 3, 3, {{1, 1}, {2, 1}, {2, 2}, 1}, false},
    {"groups 2, 3x2, stride (1, 2)",   3, 4, 5,  7, 6, 3, 2, {{1, 2}, {1, 0}, {1, 1}, 2}, true},
    {"depthwise 3x3 padding 1",        3, 3, 5,  7, 3, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 3}, true},
    {"depthwise stride 2 dil (2, 1)",  1, 4, 7,  5, 4, 3, 3, {{2, 2}, {2, 1}, {2, 1}, 4}, false},
    {"depthwise multiplier 2",         1, 2, 5,  5, 4, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 2}, true},
    {"pointwise 1x1",                  3, 4, 5,  7, 5, 1, 1, {{1, 1}, {0, 0}, {1, 1}, 1}, true},
    {"1x1 stride 2 padding 1",         1, 3, 5,  7, 2, 1, 1, {{2, 2}, {1, 1}, {1, 1}, 1}, false},
    {"1x1 padding (0, 1)",             2, 3, 4,  5, 2, 1, 1, {{1, 1}, {0, 1}, {1, 1}, 1}, true},
    {"unbatched 3-D input",            0, 2, 4,  6, 3, 2, 3, {{1, 1}, {1, 0}, {1, 1}, 1}, true},
    /* rows of 16 or more take the depthwise loops' vectorised branches */
    {"depthwise wide rows",            2, 2, 3, 21, 2, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 2}, true},
    {"depthwise wide, stride (1, 2)",  1, 2, 3, 37, 2, 3, 3, {{1, 2}, {1, 1}, {1, 1}, 2}, false},
};
/* clang-format on */
enum { N_CASES = sizeof cases / sizeof cases[0] };

static int64_t out_size(int64_t in, int64_t k, int32_t s, int32_t p, int32_t d)
{
    return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

typedef struct conv_data {
    ag_tensor *x, *w, *b; /* b NULL without bias */
    int64_t n, ho, wo;    /* n >= 1 */
} conv_data;

static conv_data make_data(const conv_case *k, uint64_t seed, bool requires_grad)
{
    conv_data d = {0};
    d.n = k->n ? k->n : 1;
    if (k->n)
        d.x = tu_rand(4, AG_SHAPE(k->n, k->c, k->h, k->w), -1.0f, 1.0f, seed, requires_grad);
    else
        d.x = tu_rand(3, AG_SHAPE(k->c, k->h, k->w), -1.0f, 1.0f, seed, requires_grad);
    d.w = tu_rand(4, AG_SHAPE(k->o, k->c / k->args.groups, k->kh, k->kw), -1.0f, 1.0f, seed + 1,
                  requires_grad);
    d.b = k->bias ? tu_rand(1, AG_SHAPE(k->o), -1.0f, 1.0f, seed + 2, requires_grad) : NULL;
    d.ho = out_size(k->h, k->kh, k->args.stride[0], k->args.padding[0], k->args.dilation[0]);
    d.wo = out_size(k->w, k->kw, k->args.stride[1], k->args.padding[1], k->args.dilation[1]);
    return d;
}

static void free_data(conv_data *d)
{
    ag_tensor_free(d->x);
    ag_tensor_free(d->w);
    ag_tensor_free(d->b);
}

/* The definition, one term at a time in double:
 *   y[s,o,oh,ow] = b[o] + sum_{c,i,j} w[o,c,i,j] x[s, g*cg + c, oh*sh - ph + i*dh, ...]
 * and, for dy, its adjoints dx, dw, db. Any output pointer may be NULL. */
static void ref_conv(const conv_case *k, const conv_data *d, const float *dy, double *y,
                     double *dx, double *dw, double *db)
{
    const ag_conv2d_args *a = &k->args;
    int64_t cg = k->c / a->groups, og = k->o / a->groups;
    for (int64_t s = 0; s < d->n; s++)
        for (int64_t o = 0; o < k->o; o++)
            for (int64_t oh = 0; oh < d->ho; oh++)
                for (int64_t ow = 0; ow < d->wo; ow++) {
                    int64_t yi = ((s * k->o + o) * d->ho + oh) * d->wo + ow;
                    double acc = d->b ? d->b->data[o] : 0.0;
                    double g = dy ? dy[yi] : 0.0;
                    if (db)
                        db[o] += g;
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t i = 0; i < k->kh; i++)
                            for (int64_t j = 0; j < k->kw; j++) {
                                int64_t ih =
                                    oh * a->stride[0] - a->padding[0] + i * a->dilation[0];
                                int64_t iw =
                                    ow * a->stride[1] - a->padding[1] + j * a->dilation[1];
                                if (ih < 0 || ih >= k->h || iw < 0 || iw >= k->w)
                                    continue;
                                int64_t ch = (o / og) * cg + c;
                                int64_t xi = ((s * k->c + ch) * k->h + ih) * k->w + iw;
                                int64_t wi = ((o * cg + c) * k->kh + i) * k->kw + j;
                                acc += (double)d->w->data[wi] * d->x->data[xi];
                                if (dx)
                                    dx[xi] += (double)d->w->data[wi] * g;
                                if (dw)
                                    dw[wi] += (double)d->x->data[xi] * g;
                            }
                    if (y)
                        y[yi] = acc;
                }
}

static void assert_close(const char *what, const float *got, const double *ref, int64_t n,
                         double tol)
{
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(got[i] - ref[i]) <= tol * (1.0 + fabs(ref[i])),
                      "%s element %lld: got %.7g, expected %.7g", what, (long long)i, got[i],
                      ref[i]);
}

static double *dcalloc(int64_t n)
{
    double *p = calloc((size_t)(n ? n : 1), sizeof *p);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* Forward and backward of one case against ref_conv, with dy from a fixed seed. */
static void check_against_reference(const conv_case *k, uint64_t seed)
{
    ag_ctx *ctx = ag_ctx_new();
    conv_data d = make_data(k, seed, true);
    ag_tensor *y = ag_conv2d(ctx, d.x, d.w, d.b, &k->args);
    ck_assert_msg(y != NULL, "%s: %s", k->name, ag_last_error());
    ck_assert_int_eq(y->ndim, d.x->ndim);
    ck_assert_int_eq(y->shape[y->ndim - 3], k->o);
    ck_assert_int_eq(y->shape[y->ndim - 2], d.ho);
    ck_assert_int_eq(y->shape[y->ndim - 1], d.wo);
    int64_t ny = y->numel;
    float *dy = malloc((size_t)ny * sizeof *dy);
    ck_assert_ptr_nonnull(dy);
    ag_rng rng;
    ag_rng_seed(&rng, seed + 3, 5);
    for (int64_t i = 0; i < ny; i++)
        dy[i] = ag_rng_uniform_range(&rng, -1.0f, 1.0f);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, dy), AG_OK);
    double *ry = dcalloc(ny), *rdx = dcalloc(d.x->numel), *rdw = dcalloc(d.w->numel);
    double *rdb = dcalloc(k->o);
    ref_conv(k, &d, dy, ry, rdx, rdw, rdb);
    assert_close(k->name, y->data, ry, ny, 1e-5);
    assert_close("dx", d.x->grad, rdx, d.x->numel, 1e-5);
    assert_close("dw", d.w->grad, rdw, d.w->numel, 1e-5);
    if (d.b)
        assert_close("db", d.b->grad, rdb, k->o, 1e-5);
    free(ry);
    free(rdx);
    free(rdw);
    free(rdb);
    free(dy);
    free_data(&d);
    ag_ctx_free(ctx);
}

/* ---- values -------------------------------------------------------------------- */

START_TEST(conv2d_sums_windows_by_hand)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_tensor_new(4, AG_SHAPE(1, 1, 3, 3), false);
    for (int i = 0; i < 9; i++)
        x->data[i] = (float)(i + 1); /* [[1,2,3],[4,5,6],[7,8,9]] */
    ag_tensor *w = ag_tensor_new(4, AG_SHAPE(1, 1, 2, 2), false);
    ag_tensor *b = ag_tensor_new(1, AG_SHAPE(1), false);
    for (int i = 0; i < 4; i++)
        w->data[i] = 1.0f;
    b->data[0] = 0.5f;
    ag_conv2d_args plain = {{1, 1}, {0, 0}, {1, 1}, 1};
    ag_tensor *y = ag_conv2d(ctx, x, w, b, &plain);
    ck_assert_ptr_nonnull(y);
    const float sums[4] = {12.5f, 16.5f, 24.5f, 28.5f};
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(y->data[i], sums[i]);
    /* padding 1, stride 2: windows at rows {-1,0},{1,2} and cols {-1,0},{1,2} */
    ag_conv2d_args padded = {{2, 2}, {1, 1}, {1, 1}, 1};
    y = ag_conv2d(ctx, x, w, NULL, &padded);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(y->shape[2], 2);
    ck_assert_int_eq(y->shape[3], 2);
    const float padded_sums[4] = {1, 5, 11, 28};
    for (int i = 0; i < 4; i++)
        ck_assert_float_eq(y->data[i], padded_sums[i]);
    /* a 2x2 kernel dilated by 2 spans the whole image and reads its four corners */
    ag_tensor *w3 = ag_tensor_new(4, AG_SHAPE(1, 1, 2, 2), false);
    w3->data[0] = 1, w3->data[1] = 10, w3->data[2] = 100, w3->data[3] = 1000;
    ag_conv2d_args dilated = {{1, 1}, {0, 0}, {2, 2}, 1};
    y = ag_conv2d(ctx, x, w3, NULL, &dilated);
    ck_assert_int_eq(y->numel, 1);
    ck_assert_float_eq(y->data[0], 1 + 30 + 700 + 9000);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(w3);
    ag_tensor_free(b);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(conv2d_null_args_mean_torch_defaults)
{
    ag_ctx *ctx = ag_ctx_new();
    conv_data d = make_data(&cases[0], 200, false);
    ag_tensor *y = ag_conv2d(ctx, d.x, d.w, d.b, NULL);
    ag_tensor *y_explicit = ag_conv2d(ctx, d.x, d.w, d.b, &cases[0].args);
    ck_assert_ptr_nonnull(y);
    ck_assert(ag_shape_equal(y, y_explicit));
    ck_assert_mem_eq(y->data, y_explicit->data, (size_t)y->numel * sizeof(float));
    free_data(&d);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(conv2d_matches_direct_convolution)
{
    check_against_reference(&cases[_i], 300 + (uint64_t)_i * 10);
}
END_TEST

/* Stride-1 shapes that reach every edge of the register tiles of conv.c's direct path
 * (taken on CPUs with AVX-512; elsewhere these run the general path): channel tiles
 * of 32 and of 16 + a remainder of channels, rows cut into 14 + 6 columns; position
 * tiles with 3 + 3 + 1 and 3 + 2 rows, 16 + 3 columns and fewer channels than a tile;
 * weight-gradient tiles with 12 + 6 taps; groups and dilation on both tile kinds, and
 * the input gradient as a convolution of dY with more or fewer channels than 16. */
/* clang-format off */
static const conv_case tile_cases[] = {
    /* name                               n   c  h   w   o kh kw  stride  padding dilation g  bias */
    {"channel tiles, 37 out, 20 wide",    2, 20, 5, 20, 37, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 1}, true},
    {"channel tiles, groups 2, dil 2",    2,  8, 7,  9, 40, 3, 3, {{1, 1}, {2, 2}, {2, 2}, 2}, false},
    {"channel tiles, 5x5, 16 out",        3,  2, 6,  6, 16, 5, 5, {{1, 1}, {2, 1}, {1, 1}, 1}, true},
    {"position tiles, 7 rows, 19 wide",   1,  2, 7, 19,  5, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 1}, true},
    {"position tiles, 5 rows, 1x3",       3,  3, 5,  8, 12, 1, 3, {{1, 1}, {0, 1}, {1, 1}, 1}, false},
    {"position tiles, groups 3",          2,  6, 5,  5,  9, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 3}, true},
};
/* clang-format on */

START_TEST(conv2d_direct_tiles_match_direct_convolution)
{
    int before = ag_num_threads();
    ag_set_num_threads(2);
    check_against_reference(&tile_cases[_i], 900 + (uint64_t)_i * 10);
    ag_set_num_threads(before);
}
END_TEST

/* ---- gradients by finite differences ------------------------------------------- */

static ag_tensor *conv_fn(ag_ctx *ctx, ag_tensor *const *in, void *user)
{
    const conv_case *k = user;
    return ag_conv2d(ctx, in[0], in[1], k->bias ? in[2] : NULL, &k->args);
}

START_TEST(conv2d_gradcheck)
{
    const conv_case *k = &cases[_i];
    conv_data d = make_data(k, 500 + (uint64_t)_i * 10, true);
    ag_tensor *in[3] = {d.x, d.w, d.b};
    TU_GRADCHECK(in, k->bias ? 3 : 2, conv_fn, (void *)k, NULL);
    free_data(&d);
}
END_TEST

/* ---- threads, accumulation, what needs no gradient -------------------------------- */

/* Big enough that forward and backward run the samples (or planes) on both threads:
 * refcnn's conv2 on 8 samples, and a depthwise layer. */
START_TEST(conv2d_threaded_paths_match_direct_convolution)
{
    int before = ag_num_threads();
    ag_set_num_threads(2);
    const conv_case big[] = {
        {"refcnn conv2", 8, 16, 14, 14, 32, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 1}, true},
        {"depthwise 32ch", 4, 32, 16, 16, 32, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 32}, true},
        {"pointwise 32->16", 8, 32, 9, 11, 16, 1, 1, {{1, 1}, {0, 0}, {1, 1}, 1}, false},
    };
    for (int i = 0; i < 3; i++)
        check_against_reference(&big[i], 700 + (uint64_t)i);
    ag_set_num_threads(before);
}
END_TEST

START_TEST(conv2d_backward_accumulates_into_existing_grads)
{
    int before = ag_num_threads();
    ag_set_num_threads(2); /* the per-thread partial dW buffers must add up, twice */
    const conv_case k = {"", 6, 8, 12, 12, 16, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 1}, true};
    ag_ctx *ctx = ag_ctx_new();
    conv_data d = make_data(&k, 800, true);
    ag_tensor *y = ag_conv2d(ctx, d.x, d.w, d.b, &k.args);
    float *dy = malloc((size_t)y->numel * sizeof *dy);
    for (int64_t i = 0; i < y->numel; i++)
        dy[i] = (float)(i % 7) - 3.0f;
    ck_assert_int_eq(ag_backward_seeded(ctx, y, dy), AG_OK);
    float *once = malloc((size_t)d.w->numel * sizeof *once);
    memcpy(once, d.w->grad, (size_t)d.w->numel * sizeof *once);
    float dx_once = d.x->grad[100], db_once = d.b->grad[3];
    ck_assert_int_eq(ag_backward_seeded(ctx, y, dy), AG_OK);
    for (int64_t i = 0; i < d.w->numel; i++)
        ck_assert_float_eq_tol(d.w->grad[i], 2.0f * once[i], 1e-4f * (1.0f + fabsf(once[i])));
    ck_assert_float_eq_tol(d.x->grad[100], 2.0f * dx_once, 1e-5f);
    ck_assert_float_eq_tol(d.b->grad[3], 2.0f * db_once, 1e-4f);
    free(once);
    free(dy);
    free_data(&d);
    ag_ctx_free(ctx);
    ag_set_num_threads(before);
}
END_TEST

START_TEST(conv2d_computes_only_the_grads_needed)
{
    ag_ctx *ctx = ag_ctx_new();
    conv_data d = make_data(&cases[3], 900, false);
    d.w->flags |= AG_F_REQUIRES_GRAD; /* an input image: no dx, as for refcnn's conv1 */
    ag_tensor *y = ag_conv2d(ctx, d.x, d.w, d.b, &cases[3].args);
    ck_assert_ptr_nonnull(y->node);
    float *dy = calloc((size_t)y->numel, sizeof *dy);
    dy[0] = 1.0f;
    ck_assert_int_eq(ag_backward_seeded(ctx, y, dy), AG_OK);
    ck_assert_ptr_null(d.x->grad);
    ck_assert_ptr_null(d.b->grad);
    ck_assert_ptr_nonnull(d.w->grad);
    /* y[0,0,0,0] with padding (1, 0): w[0,c,i,j] meets x[0,c,i-1,j] */
    ck_assert_float_eq(d.w->grad[0], 0.0f);                 /* i = 0 reads padding */
    ck_assert_float_eq(d.w->grad[1 * 2 + 1], d.x->data[1]); /* c 0, i 1, j 1: x[0,0,0,1] */
    free(dy);
    ag_ctx_reset(ctx);
    ag_no_grad_begin(ctx);
    y = ag_conv2d(ctx, d.x, d.w, d.b, &cases[3].args);
    ag_no_grad_end(ctx);
    ck_assert_ptr_null(y->node);
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    free_data(&d);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- errors --------------------------------------------------------------------- */

static ag_tensor *conv_try(ag_ctx *ctx, const int64_t *xs, int32_t xnd, const int64_t *ws,
                           const ag_conv2d_args *args, const int64_t *bs)
{
    ag_tensor *x = ag_tensor_new(xnd, xs, false);
    ag_tensor *w = ag_tensor_new(4, ws, false);
    ag_tensor *b = bs ? ag_tensor_new(1, bs, false) : NULL;
    ag_error_clear();
    ag_tensor *y = ag_conv2d(ctx, x, w, b, args);
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(b);
    return y;
}

START_TEST(conv2d_rejects_wrong_channel_counts)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_conv2d_args plain = {{1, 1}, {0, 0}, {1, 1}, 1};
    ck_assert_ptr_null(
        conv_try(ctx, AG_SHAPE(2, 3, 5, 5), 4, AG_SHAPE(4, 2, 3, 3), &plain, NULL));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_str_eq(
        ag_last_error(),
        "conv2d: input [2, 3, 5, 5] has 3 channels, weight [4, 2, 3, 3] expects 2");
    ag_conv2d_args g2 = {{1, 1}, {0, 0}, {1, 1}, 2};
    ck_assert_ptr_null(conv_try(ctx, AG_SHAPE(2, 3, 5, 5), 4, AG_SHAPE(4, 1, 3, 3), &g2, NULL));
    ck_assert_str_eq(ag_last_error(), "conv2d: input [2, 3, 5, 5] has 3 channels, weight "
                                      "[4, 1, 3, 3] expects 2 (1 per group x groups=2)");
    ck_assert_ptr_null(conv_try(ctx, AG_SHAPE(2, 4, 5, 5), 4, AG_SHAPE(3, 2, 3, 3), &g2, NULL));
    ck_assert_str_eq(ag_last_error(), "conv2d: weight [3, 2, 3, 3] has 3 output channels, "
                                      "which groups=2 does not divide (input [2, 4, 5, 5])");
    ck_assert_ptr_null(
        conv_try(ctx, AG_SHAPE(2, 3, 5, 5), 4, AG_SHAPE(4, 3, 3, 3), &plain, AG_SHAPE(5)));
    ck_assert_str_eq(ag_last_error(), "conv2d: bias [5] must be [4], one value per output "
                                      "channel of weight [4, 3, 3, 3]");
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(conv2d_rejects_bad_ranks)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_tensor_new(2, AG_SHAPE(3, 5), false);
    ag_tensor *w = ag_tensor_new(4, AG_SHAPE(4, 3, 3, 3), false);
    ag_tensor *w2 = ag_tensor_new(2, AG_SHAPE(4, 3), false);
    ag_tensor *x4 = ag_tensor_new(4, AG_SHAPE(1, 3, 5, 5), false);
    ck_assert_ptr_null(ag_conv2d(ctx, x, w, NULL, NULL));
    ck_assert_str_eq(ag_last_error(),
                     "conv2d: input [3, 5] must be 4-D (N, C, H, W) or 3-D (C, H, W)");
    ck_assert_ptr_null(ag_conv2d(ctx, x4, w2, NULL, NULL));
    ck_assert_str_eq(ag_last_error(),
                     "conv2d: weight [4, 3] must be 4-D (C_out, C_in/groups, kH, kW)");
    ag_tensor_free(x);
    ag_tensor_free(w);
    ag_tensor_free(w2);
    ag_tensor_free(x4);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(conv2d_rejects_bad_stride_padding_dilation_groups)
{
    ag_ctx *ctx = ag_ctx_new();
    const int64_t *xs = AG_SHAPE(1, 2, 5, 5), *ws = AG_SHAPE(2, 2, 3, 3);
    ag_conv2d_args a = {{0, 1}, {0, 0}, {1, 1}, 1};
    ck_assert_ptr_null(conv_try(ctx, xs, 4, ws, &a, NULL));
    ck_assert_int_eq(ag_last_status(), AG_ERR_ARG);
    ck_assert_str_eq(ag_last_error(), "conv2d: stride must be positive, got (0, 1) "
                                      "(input [1, 2, 5, 5], weight [2, 2, 3, 3])");
    a = (ag_conv2d_args){{1, 1}, {0, -1}, {1, 1}, 1};
    ck_assert_ptr_null(conv_try(ctx, xs, 4, ws, &a, NULL));
    ck_assert_str_eq(ag_last_error(), "conv2d: padding must be non-negative, got (0, -1) "
                                      "(input [1, 2, 5, 5], weight [2, 2, 3, 3])");
    a = (ag_conv2d_args){{1, 1}, {0, 0}, {1, 0}, 1};
    ck_assert_ptr_null(conv_try(ctx, xs, 4, ws, &a, NULL));
    ck_assert_str_eq(ag_last_error(), "conv2d: dilation must be positive, got (1, 0) "
                                      "(input [1, 2, 5, 5], weight [2, 2, 3, 3])");
    a = (ag_conv2d_args){{1, 1}, {0, 0}, {1, 1}, 0};
    ck_assert_ptr_null(conv_try(ctx, xs, 4, ws, &a, NULL));
    ck_assert_str_eq(ag_last_error(), "conv2d: groups must be positive, got 0 "
                                      "(input [1, 2, 5, 5], weight [2, 2, 3, 3])");
    /* a zero-initialised args struct is not the defaults (groups 0, stride 0) */
    a = (ag_conv2d_args){0};
    ck_assert_ptr_null(conv_try(ctx, xs, 4, ws, &a, NULL));
    ck_assert_int_eq(ag_last_status(), AG_ERR_ARG);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(conv2d_rejects_kernel_larger_than_padded_input)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_conv2d_args a = {{1, 1}, {0, 0}, {1, 1}, 1};
    ck_assert_ptr_null(conv_try(ctx, AG_SHAPE(1, 1, 2, 5), 4, AG_SHAPE(1, 1, 3, 3), &a, NULL));
    ck_assert_int_eq(ag_last_status(), AG_ERR_SHAPE);
    ck_assert_str_eq(ag_last_error(), "conv2d: input [1, 1, 2, 5] padded by (0, 0) is 2x5, "
                                      "smaller than the kernel of weight [1, 1, 3, 3] dilated "
                                      "by (1, 1) (output size < 1)");
    /* padding makes room; dilation takes it away again */
    a.padding[0] = 1;
    ck_assert_ptr_nonnull(
        conv_try(ctx, AG_SHAPE(1, 1, 2, 5), 4, AG_SHAPE(1, 1, 3, 3), &a, NULL));
    a.dilation[1] = 3;
    ck_assert_ptr_null(conv_try(ctx, AG_SHAPE(1, 1, 2, 5), 4, AG_SHAPE(1, 1, 3, 3), &a, NULL));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "dilated by (1, 3)"));
    ck_assert_ptr_null(conv_try(ctx, AG_SHAPE(1, 1, 2, 5), 4, AG_SHAPE(1, 1, 0, 3), &a, NULL));
    ck_assert_str_eq(ag_last_error(), "conv2d: weight [1, 1, 0, 3] has an empty kernel");
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(conv2d_passes_null_through_silently)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *w = ag_tensor_new(4, AG_SHAPE(1, 1, 1, 1), false);
    ag_error(AG_ERR_SHAPE, "earlier failure");
    ck_assert_ptr_null(ag_conv2d(ctx, NULL, w, NULL, NULL));
    ck_assert_ptr_null(ag_conv2d(ctx, w, NULL, NULL, NULL));
    ck_assert_str_eq(ag_last_error(), "earlier failure");
    ag_tensor_free(w);
    ag_ctx_free(ctx);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("conv");
    TCase *tv = tcase_create("values");
    tcase_add_test(tv, conv2d_sums_windows_by_hand);
    tcase_add_test(tv, conv2d_null_args_mean_torch_defaults);
    tcase_add_loop_test(tv, conv2d_matches_direct_convolution, 0, N_CASES);
    tcase_add_loop_test(tv, conv2d_direct_tiles_match_direct_convolution, 0,
                        (int)(sizeof tile_cases / sizeof tile_cases[0]));
    tcase_add_test(tv, conv2d_threaded_paths_match_direct_convolution);
    tcase_add_test(tv, conv2d_backward_accumulates_into_existing_grads);
    tcase_add_test(tv, conv2d_computes_only_the_grads_needed);
    suite_add_tcase(s, tv);
    TCase *tg = tcase_create("gradcheck");
    tcase_set_timeout(tg, 60);
    tcase_add_loop_test(tg, conv2d_gradcheck, 0, N_CASES);
    suite_add_tcase(s, tg);
    TCase *te = tcase_create("errors");
    tcase_add_test(te, conv2d_rejects_wrong_channel_counts);
    tcase_add_test(te, conv2d_rejects_bad_ranks);
    tcase_add_test(te, conv2d_rejects_bad_stride_padding_dilation_groups);
    tcase_add_test(te, conv2d_rejects_kernel_larger_than_padded_input);
    tcase_add_test(te, conv2d_passes_null_through_silently);
    suite_add_tcase(s, te);
    return s;
}
