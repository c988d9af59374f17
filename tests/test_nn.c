/* test_nn.c — layers, initialisation and the model zoo: PyTorch names and state_dict
 * keys, module walks and replacement, train/eval, BatchNorm statistics, default
 * initialisation, forward shapes, FloatFunctional hooks, constructor errors. */
#include "test_util.h"

#include <string.h>

#include "nn/layers.h"
#include "nn/zoo.h"

/* ---- helpers ------------------------------------------------------------------------ */

static nn_module *zoo_model(const char *name, int32_t c, int32_t h, int32_t w, uint64_t seed)
{
    nn_zoo_config cfg;
    ck_assert_int_eq(nn_zoo_config_default(name, &cfg), AG_OK);
    cfg.in_channels = c;
    cfg.in_h = h;
    cfg.in_w = w;
    ag_rng rng;
    ag_rng_seed(&rng, seed, 0);
    nn_module *m = nn_zoo_new(&cfg, &rng);
    ck_assert_msg(m != NULL, "nn_zoo_new(%s): %s", name, ag_last_error());
    return m;
}

/* An arena input filled with U[-1, 1) from a fixed seed. */
static ag_tensor *rand_input(ag_ctx *ctx, int32_t ndim, const int64_t *shape, uint64_t seed)
{
    ag_tensor *x = ag_ctx_tensor(ctx, ndim, shape);
    ck_assert_ptr_nonnull(x);
    ag_rng rng;
    ag_rng_seed(&rng, seed, 7);
    for (int64_t i = 0; i < x->numel; i++)
        x->data[i] = ag_rng_uniform_range(&rng, -1.0f, 1.0f);
    return x;
}

enum { LIST_MAX = 128 };
typedef struct name_list {
    char names[LIST_MAX][64];
    const char *types[LIST_MAX];
    nn_state_kind kinds[LIST_MAX];
    int n;
} name_list;

static bool collect_key(void *ud, const char *key, ag_tensor *t, nn_state_kind kind)
{
    (void)t;
    name_list *l = ud;
    ck_assert_int_lt(l->n, LIST_MAX);
    snprintf(l->names[l->n], sizeof l->names[0], "%s", key);
    l->kinds[l->n++] = kind;
    return true;
}

static bool collect_path(void *ud, const char *path, nn_module *m)
{
    name_list *l = ud;
    ck_assert_int_lt(l->n, LIST_MAX);
    snprintf(l->names[l->n], sizeof l->names[0], "%s", path);
    l->types[l->n++] = nn_module_type(m);
    return true;
}

static void assert_names(const name_list *got, const char *const *want, int n)
{
    for (int i = 0; i < n && i < got->n; i++)
        ck_assert_msg(strcmp(got->names[i], want[i]) == 0, "entry %d: got '%s', want '%s'", i,
                      got->names[i], want[i]);
    ck_assert_int_eq(got->n, n);
}

static void assert_shape(const ag_tensor *t, int32_t ndim, const int64_t *shape)
{
    ck_assert_msg(t != NULL, "forward failed: %s", ag_last_error());
    ck_assert_int_eq(t->ndim, ndim);
    for (int32_t i = 0; i < ndim; i++)
        ck_assert_int_eq(t->shape[i], shape[i]);
}

static void assert_error_contains(const char *needle)
{
    ck_assert_msg(strstr(ag_last_error(), needle) != NULL, "message '%s' lacks '%s'",
                  ag_last_error(), needle);
}

/* A tiny post-process hook: y = 2 x. */
static ag_tensor *scale2_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    (void)m;
    return ag_scale(ctx, x, 2.0f);
}

static const nn_module_vtbl scale2_vtbl = {.type = "Scale2", .forward = scale2_forward};

static nn_module *scale2_new(void)
{
    nn_module *m = calloc(1, sizeof *m);
    ck_assert_ptr_nonnull(m);
    nn_module_init(m, &scale2_vtbl);
    return m;
}

/* ---- refcnn: names, keys, counts ------------------------------------------------------- */

/* What PyTorch's state_dict() gives for the twin module of BENCHMARK.md: per module its
 * parameters, then its buffers, in registration order. */
static const char *const refcnn_keys[] = {
    "conv1.weight",
    "conv1.bias",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
    "conv2.weight",
    "conv2.bias",
    "bn2.weight",
    "bn2.bias",
    "bn2.running_mean",
    "bn2.running_var",
    "bn2.num_batches_tracked",
    "conv3.weight",
    "conv3.bias",
    "bn3.weight",
    "bn3.bias",
    "bn3.running_mean",
    "bn3.running_var",
    "bn3.num_batches_tracked",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
};
enum { N_REFCNN_KEYS = sizeof refcnn_keys / sizeof refcnn_keys[0] };

START_TEST(refcnn_state_keys_are_pytorch_state_dict_keys)
{
    nn_module *m = zoo_model("refcnn", 1, 28, 28, 1);
    name_list l = {0};
    nn_state_foreach(m, collect_key, &l);
    assert_names(&l, refcnn_keys, N_REFCNN_KEYS);
    for (int i = 0; i < l.n; i++) {
        bool buffer = strstr(l.names[i], "running_") || strstr(l.names[i], "num_batches");
        ck_assert_int_eq(l.kinds[i], buffer ? NN_STATE_BUFFER : NN_STATE_PARAM);
    }
    nn_module_free(m);
}
END_TEST

START_TEST(refcnn_has_216330_parameters_in_pytorch_layouts)
{
    nn_module *m = zoo_model("refcnn", 1, 28, 28, 1);
    // conv1 160 + bn1 32 + conv2 4640 + bn2 64 + conv3 9248 + bn3 64 + fc1 200832 + fc2 1290
    ck_assert_int_eq(nn_param_count(m), 216330);
    nn_conv2d *c2 = (nn_conv2d *)nn_module_find(m, "conv2");
    assert_shape(c2->weight, 4, AG_SHAPE(32, 16, 3, 3));
    nn_linear *fc1 = (nn_linear *)nn_module_find(m, "fc1");
    assert_shape(fc1->weight, 2, AG_SHAPE(128, 1568));
    nn_param_list pl;
    ck_assert_int_eq(nn_param_list_get(m, &pl), AG_OK);
    ck_assert_int_eq(pl.n, 16); // the 25 keys minus 3 x 3 BN buffers
    ck_assert_str_eq(pl.names[15], "fc2.bias");
    nn_param_list_deinit(&pl);
    nn_module_free(m);
}
END_TEST

START_TEST(refcnn_walk_yields_named_modules_paths)
{
    static const char *const want[] = {"",
                                       "quant",
                                       "conv1",
                                       "bn1",
                                       "relu1",
                                       "pool1",
                                       "conv2",
                                       "bn2",
                                       "relu2",
                                       "conv3",
                                       "bn3",
                                       "skip",
                                       "skip.activation_post_process",
                                       "pool2",
                                       "fc1",
                                       "relu3",
                                       "fc2",
                                       "dequant"};
    static const char *const types[] = {
        "RefCNN",   "QuantStub",   "Conv2d", "BatchNorm2d", "ReLU",        "MaxPool2d",
        "Conv2d",   "BatchNorm2d", "ReLU",   "Conv2d",      "BatchNorm2d", "FloatFunctional",
        "Identity", "MaxPool2d",   "Linear", "ReLU",        "Linear",      "DeQuantStub"};
    nn_module *m = zoo_model("refcnn", 1, 28, 28, 1);
    name_list l = {0};
    nn_module_walk(m, collect_path, &l);
    assert_names(&l, want, 18);
    for (int i = 0; i < l.n; i++)
        ck_assert_str_eq(l.types[i], types[i]);
    nn_module_free(m);
}
END_TEST

START_TEST(mobilenet_tiny_names_follow_torchvision_style)
{
    nn_module *m = zoo_model("mobilenet-tiny", 3, 32, 32, 1);
    name_list l = {0};
    nn_state_foreach(m, collect_key, &l);
    // stem conv (no bias) + bn, then per block dw conv + bn + pw conv + bn, then fc
    ck_assert_int_eq(l.n, (1 + 5) + 3 * (1 + 5 + 1 + 5) + 2);
    ck_assert_str_eq(l.names[0], "features.0.0.weight");
    ck_assert_str_eq(l.names[1], "features.0.1.weight");
    ck_assert_str_eq(l.names[6], "features.1.0.weight");
    ck_assert_str_eq(l.names[12], "features.1.3.weight");
    ck_assert_str_eq(l.names[l.n - 2], "fc.weight");
    ck_assert_str_eq(l.names[l.n - 1], "fc.bias");
    nn_conv2d *dw = (nn_conv2d *)nn_module_find(m, "features.2.0");
    ck_assert_int_eq(dw->args.groups, 32);
    ck_assert_int_eq(dw->args.stride[0], 2);
    assert_shape(dw->weight, 4, AG_SHAPE(32, 1, 3, 3));
    ck_assert_ptr_null(dw->bias);
    ck_assert(nn_module_is(nn_module_find(m, "features.3.5"), "ReLU6"));
    ck_assert(nn_module_is(nn_module_find(m, "pool"), "AdaptiveAvgPool2d"));
    nn_module_free(m);
}
END_TEST

START_TEST(zoo_fusion_groups_name_existing_modules)
{
    const nn_fusion_group *g = NULL;
    int32_t n = 0;
    ck_assert_int_eq(nn_zoo_fusion_groups("refcnn", &g, &n), AG_OK);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(g[0].n, 3);
    ck_assert_str_eq(g[0].names[2], "relu1");
    ck_assert_int_eq(g[2].n, 2);
    ck_assert_str_eq(g[2].names[0], "conv3");
    ck_assert_str_eq(g[2].names[1], "bn3");
    ck_assert_str_eq(g[3].names[0], "fc1");
    ck_assert_str_eq(g[3].names[1], "relu3");
    for (const char *const *name = nn_zoo_names(); *name; name++) {
        nn_zoo_config cfg;
        ck_assert_int_eq(nn_zoo_config_default(*name, &cfg), AG_OK);
        nn_module *m = nn_zoo_new(&cfg, NULL);
        ck_assert_ptr_nonnull(m);
        ck_assert_int_eq(nn_zoo_fusion_groups(*name, &g, &n), AG_OK);
        ck_assert_int_gt(n, 0);
        for (int32_t i = 0; i < n; i++)
            for (int32_t j = 0; j < g[i].n; j++)
                ck_assert_msg(nn_module_find(m, g[i].names[j]) != NULL, "%s: no module %s",
                              *name, g[i].names[j]);
        nn_module_free(m);
    }
}
END_TEST

/* ---- lookups and replacement ------------------------------------------------------------- */

START_TEST(find_and_replace_by_dotted_path)
{
    nn_module *m = zoo_model("refcnn", 1, 28, 28, 1);
    ck_assert(nn_module_is(nn_module_find(m, "conv1"), "Conv2d"));
    ck_assert(nn_module_is(nn_module_find(m, "skip.activation_post_process"), "Identity"));
    ck_assert_ptr_eq(nn_module_find(m, ""), m);
    ck_assert_ptr_null(nn_module_find(m, "conv9"));
    ck_assert_ptr_null(nn_module_find(m, "conv1.weight"));

    ck_assert_int_eq(nn_module_replace(m, "conv1", nn_identity_new()), AG_OK);
    ck_assert(nn_module_is(nn_module_find(m, "conv1"), "Identity"));
    name_list l = {0};
    nn_state_foreach(m, collect_key, &l);
    assert_names(&l, refcnn_keys + 2, N_REFCNN_KEYS - 2);
    ck_assert_int_eq(nn_param_count(m), 216330 - 160);

    ck_assert_int_eq(nn_module_replace(m, "nope.conv1", nn_identity_new()), AG_ERR_ARG);

    nn_module *mb = zoo_model("mobilenet-tiny", 1, 28, 28, 1);
    ck_assert(nn_module_is(nn_module_find(mb, "features.1.3"), "Conv2d"));
    ck_assert_int_eq(nn_module_replace(mb, "features.1.4", nn_identity_new()), AG_OK);
    ck_assert(nn_module_is(nn_module_find(mb, "features.1.4"), "Identity"));
    ck_assert_ptr_null(nn_module_find(mb, "features.1.9"));
    nn_module_free(mb);
    nn_module_free(m);
}
END_TEST

START_TEST(replaced_conv_still_runs_in_model_forward)
{
    // The model forward calls children by position, so a replacement is what runs.
    ag_ctx *ctx = ag_ctx_new();
    nn_module *m = zoo_model("refcnn", 1, 28, 28, 1);
    ck_assert_int_eq(nn_module_replace(m, "bn1", nn_identity_new()), AG_OK);
    ck_assert_int_eq(nn_module_replace(m, "relu1", nn_identity_new()), AG_OK);
    assert_shape(nn_forward(m, ctx, rand_input(ctx, 4, AG_SHAPE(2, 1, 28, 28), 3)), 2,
                 AG_SHAPE(2, 10));
    nn_module_free(m);
    ag_ctx_free(ctx);
}
END_TEST

static bool all_in_mode(void *ud, const char *path, nn_module *m)
{
    (void)path;
    bool *want = ud;
    ck_assert_int_eq(m->training, *want);
    return true;
}

START_TEST(train_and_eval_reach_every_module)
{
    nn_module *m = zoo_model("mobilenet-tiny", 1, 28, 28, 1);
    bool want = true;
    nn_module_walk(m, all_in_mode, &want);
    nn_module_eval(m);
    want = false;
    nn_module_walk(m, all_in_mode, &want);
    ck_assert_int_eq(nn_module_replace(m, "features.2.2", nn_relu6_new()), AG_OK);
    nn_module_walk(m, all_in_mode, &want); // a replacement takes the slot's mode
    nn_module_train(m, true);
    want = true;
    nn_module_walk(m, all_in_mode, &want);
    nn_module_free(m);
}
END_TEST

/* ---- BatchNorm ----------------------------------------------------------------------------
 */

START_TEST(batch_norm_training_updates_running_stats_and_counter)
{
    ag_ctx *ctx = ag_ctx_new();
    nn_module *m = nn_batch_norm2d_new(2);
    ck_assert_ptr_nonnull(m);
    nn_batch_norm *bn = (nn_batch_norm *)m;
    ck_assert_int_eq(bn->num_batches_tracked->dtype, AG_I64);
    ck_assert_int_eq(bn->num_batches_tracked->ndim, 0);
    ck_assert_ptr_eq(nn_module_buffer(m, "running_var"), bn->running_var);
    // x (1, 2, 1, 2): channel 0 = {1, 3} (mean 2, unbiased var 2), channel 1 = {0, 0}
    ag_tensor *x = ag_ctx_tensor(ctx, 4, AG_SHAPE(1, 2, 1, 2));
    const float xv[4] = {1, 3, 0, 0};
    memcpy(x->data, xv, sizeof xv);
    ag_tensor *y = nn_forward(m, ctx, x);
    ck_assert_ptr_nonnull(y);
    ck_assert_float_eq_tol(y->data[0], -1.0f / sqrtf(1.0f + 1e-5f), 1e-6f);
    ck_assert_float_eq_tol(bn->running_mean->data[0], 0.1f * 2.0f, 1e-7f);
    ck_assert_float_eq_tol(bn->running_var->data[0], 0.9f + 0.1f * 2.0f, 1e-6f);
    ck_assert_float_eq_tol(bn->running_mean->data[1], 0.0f, 1e-7f);
    ck_assert_float_eq_tol(bn->running_var->data[1], 0.9f, 1e-6f);
    ck_assert_int_eq(*(int64_t *)(void *)bn->num_batches_tracked->data, 1);
    ck_assert_ptr_nonnull(nn_forward(m, ctx, x));
    ck_assert_int_eq(*(int64_t *)(void *)bn->num_batches_tracked->data, 2);

    nn_module_eval(m);
    const float rm = bn->running_mean->data[0], rv = bn->running_var->data[0];
    y = nn_forward(m, ctx, x);
    ck_assert_ptr_nonnull(y);
    ck_assert_float_eq(bn->running_mean->data[0], rm);
    ck_assert_float_eq(bn->running_var->data[0], rv);
    ck_assert_int_eq(*(int64_t *)(void *)bn->num_batches_tracked->data, 2);
    ck_assert_float_eq_tol(y->data[1], (3.0f - rm) / sqrtf(rv + 1e-5f), 1e-5f);
    nn_module_free(m);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(batch_norm_checks_input_rank_like_pytorch)
{
    ag_ctx *ctx = ag_ctx_new();
    nn_module *bn2 = nn_batch_norm2d_new(3);
    nn_module *bn1 = nn_batch_norm1d_new(3);
    ck_assert(nn_module_is(bn1, "BatchNorm1d"));
    ag_tensor *x2 = rand_input(ctx, 2, AG_SHAPE(4, 3), 1);
    ck_assert_ptr_null(nn_forward(bn2, ctx, x2));
    assert_error_contains("BatchNorm2d: expected 4D input (got 2D input)");
    assert_shape(nn_forward(bn1, ctx, x2), 2, AG_SHAPE(4, 3));
    assert_shape(nn_forward(bn1, ctx, rand_input(ctx, 3, AG_SHAPE(2, 3, 5), 2)), 3,
                 AG_SHAPE(2, 3, 5));
    ck_assert_ptr_null(nn_forward(bn1, ctx, rand_input(ctx, 4, AG_SHAPE(2, 3, 1, 2), 3)));
    assert_error_contains("expected 2D or 3D input (got 4D input)");
    nn_module_free(bn1);
    nn_module_free(bn2);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- initialisation ------------------------------------------------------------------------
 */

/* Every value within [-bound, bound] and spread over it (not all equal). */
static void assert_uniform_within(const ag_tensor *t, double bound)
{
    float lo = t->data[0], hi = t->data[0];
    for (int64_t i = 0; i < t->numel; i++) {
        ck_assert_msg(fabs((double)t->data[i]) <= bound * (1 + 1e-6), "value %g outside +-%g",
                      (double)t->data[i], bound);
        lo = fminf(lo, t->data[i]);
        hi = fmaxf(hi, t->data[i]);
    }
    ck_assert_msg(hi - lo > bound, "range [%g, %g] too narrow for +-%g", (double)lo, (double)hi,
                  bound);
}

START_TEST(conv_and_linear_init_within_one_over_sqrt_fan_in)
{
    ag_rng rng;
    ag_rng_seed(&rng, 5, 0);
    // groups 2: fan_in = 8 / 2 * 3 * 5 = 60
    nn_module *c = nn_conv2d_new_args(
        8, 6, (int32_t[2]){3, 5},
        &(ag_conv2d_args){.stride = {1, 2}, .padding = {1, 2}, .dilation = {1, 1}, .groups = 2},
        true, &rng);
    ck_assert_ptr_nonnull(c);
    nn_conv2d *conv = (nn_conv2d *)c;
    assert_shape(conv->weight, 4, AG_SHAPE(6, 4, 3, 5));
    ck_assert_int_eq(nn_init_fan_in(conv->weight), 60);
    assert_uniform_within(conv->weight, 1.0 / sqrt(60.0));
    assert_uniform_within(conv->bias, 1.0 / sqrt(60.0));
    ck_assert(conv->weight->flags & AG_F_REQUIRES_GRAD);

    nn_module *l = nn_linear_new(300, 40, true, &rng);
    ck_assert_ptr_nonnull(l);
    assert_uniform_within(((nn_linear *)l)->weight, 1.0 / sqrt(300.0));
    assert_uniform_within(((nn_linear *)l)->bias, 1.0 / sqrt(300.0));

    nn_module *nb = nn_linear_new(3, 2, false, &rng);
    ck_assert_ptr_null(((nn_linear *)nb)->bias);
    ck_assert_int_eq(nb->n_params, 1);
    nn_module_free(nb);
    nn_module_free(l);
    nn_module_free(c);
}
END_TEST

START_TEST(batch_norm_init_is_identity)
{
    nn_batch_norm *bn = (nn_batch_norm *)nn_batch_norm2d_new(4);
    ck_assert_ptr_nonnull(bn);
    for (int i = 0; i < 4; i++) {
        ck_assert_float_eq(bn->weight->data[i], 1.0f);
        ck_assert_float_eq(bn->bias->data[i], 0.0f);
        ck_assert_float_eq(bn->running_mean->data[i], 0.0f);
        ck_assert_float_eq(bn->running_var->data[i], 1.0f);
    }
    ck_assert(!(bn->running_mean->flags & AG_F_REQUIRES_GRAD));
    ck_assert_int_eq(*(int64_t *)(void *)bn->num_batches_tracked->data, 0);
    ck_assert_float_eq(bn->eps, 1e-5f);
    ck_assert_float_eq(bn->momentum, 0.1f);
    nn_module_free(&bn->base);
}
END_TEST

typedef struct state_pair {
    nn_module *other;
    int n_equal, n_total;
} state_pair;

static bool compare_state(void *ud, const char *key, ag_tensor *t, nn_state_kind kind)
{
    (void)kind;
    state_pair *p = ud;
    ag_tensor *u = NULL;
    // the other model's tensor with the same key: find its module and own name
    const char *dot = strrchr(key, '.');
    char path[64];
    snprintf(path, sizeof path, "%.*s", (int)(dot - key), key);
    nn_module *om = nn_module_find(p->other, path);
    ck_assert_ptr_nonnull(om);
    u = nn_module_param(om, dot + 1);
    if (!u)
        u = nn_module_buffer(om, dot + 1);
    ck_assert_ptr_nonnull(u);
    ck_assert_int_eq(t->numel, u->numel);
    p->n_total++;
    p->n_equal += memcmp(t->data, u->data, (size_t)t->numel * ag_dtype_size(t->dtype)) == 0;
    return true;
}

START_TEST(same_seed_gives_same_model_other_seed_differs)
{
    nn_module *a = zoo_model("refcnn", 1, 28, 28, 42);
    nn_module *b = zoo_model("refcnn", 1, 28, 28, 42);
    nn_module *c = zoo_model("refcnn", 1, 28, 28, 43);
    state_pair same = {b, 0, 0}, other = {c, 0, 0};
    nn_state_foreach(a, compare_state, &same);
    ck_assert_int_eq(same.n_equal, N_REFCNN_KEYS);
    nn_state_foreach(a, compare_state, &other);
    // only BN tensors (5 x 3, not random) agree
    ck_assert_int_eq(other.n_equal, 15);
    nn_module_free(a);
    nn_module_free(b);
    nn_module_free(c);
}
END_TEST

/* ---- forward --------------------------------------------------------------------------------
 */

START_TEST(zoo_models_give_logits_for_batch_2)
{
    static const struct {
        const char *name;
        int32_t c, h, w;
    } cases[] = {{"refcnn", 1, 28, 28},         {"lenet5", 1, 28, 28},
                 {"lenet5", 3, 32, 32},         {"mobilenet-tiny", 1, 28, 28},
                 {"mobilenet-tiny", 3, 32, 32}, {"refcnn", 3, 32, 20}};
    ag_ctx *ctx = ag_ctx_new();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nn_module *m = zoo_model(cases[i].name, cases[i].c, cases[i].h, cases[i].w, 9);
        ag_tensor *x = rand_input(ctx, 4, AG_SHAPE(2, cases[i].c, cases[i].h, cases[i].w), i);
        assert_shape(nn_forward(m, ctx, x), 2, AG_SHAPE(2, 10));
        nn_module_eval(m);
        assert_shape(nn_forward(m, ctx, x), 2, AG_SHAPE(2, 10));
        nn_module_free(m);
        ag_ctx_reset(ctx);
    }
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(refcnn_backward_reaches_every_parameter)
{
    // In eval mode: in training mode a conv bias feeding a BatchNorm has a zero
    // gradient by construction (the batch mean cancels it).
    ag_ctx *ctx = ag_ctx_new();
    nn_module *m = zoo_model("refcnn", 1, 28, 28, 4);
    nn_module_eval(m);
    ag_tensor *logits = nn_forward(m, ctx, rand_input(ctx, 4, AG_SHAPE(2, 1, 28, 28), 5));
    ag_tensor *loss = ag_cross_entropy(ctx, logits, (const int32_t[]){3, 7}, 0.0f);
    ck_assert_msg(loss != NULL, "%s", ag_last_error());
    ck_assert_int_eq(ag_backward(ctx, loss), AG_OK);
    nn_param_list pl;
    ck_assert_int_eq(nn_param_list_get(m, &pl), AG_OK);
    for (int32_t i = 0; i < pl.n; i++) {
        double s = 0;
        ck_assert_msg(pl.params[i]->grad != NULL, "%s has no gradient", pl.names[i]);
        for (int64_t j = 0; j < pl.params[i]->numel; j++)
            s += fabs((double)pl.params[i]->grad[j]);
        ck_assert_msg(s > 0, "%s has a zero gradient", pl.names[i]);
    }
    nn_param_list_deinit(&pl);
    nn_module_free(m);
    ag_ctx_free(ctx);
}
END_TEST

typedef struct call_log {
    const char *types[64];
    int32_t n_in[64];
    int n;
} call_log;

static void log_call(void *ud, nn_module *m, ag_tensor *const *in, int32_t n_in, ag_tensor *out)
{
    (void)in;
    (void)out;
    call_log *log = ud;
    ck_assert_int_lt(log->n, 64);
    log->n_in[log->n] = n_in;
    log->types[log->n++] = nn_module_type(m);
}

START_TEST(refcnn_forward_calls_each_child_through_nn_forward)
{
    static const char *const want[] = {
        "QuantStub",   "Conv2d", "BatchNorm2d", "ReLU",        "MaxPool2d",       "Conv2d",
        "BatchNorm2d", "ReLU",   "Conv2d",      "BatchNorm2d", "FloatFunctional", "MaxPool2d",
        "Linear",      "ReLU",   "Linear",      "DeQuantStub", "RefCNN"};
    ag_ctx *ctx = ag_ctx_new();
    nn_module *m = zoo_model("refcnn", 1, 28, 28, 1);
    call_log log = {0};
    nn_trace_set(log_call, &log);
    ag_tensor *y = nn_forward(m, ctx, rand_input(ctx, 4, AG_SHAPE(1, 1, 28, 28), 1));
    nn_trace_set(NULL, NULL);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(log.n, 17);
    for (int i = 0; i < log.n; i++)
        ck_assert_str_eq(log.types[i], want[i]);
    ck_assert_int_eq(log.n_in[10], 2); // skip: add_relu(bn3 output, y)
    nn_module_free(m);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(float_functional_applies_its_post_hook_and_reports)
{
    ag_ctx *ctx = ag_ctx_new();
    nn_module *ff = nn_float_functional_new();
    ck_assert_ptr_nonnull(ff);
    ck_assert_int_eq(nn_module_replace(ff, "activation_post_process", scale2_new()), AG_OK);
    ck_assert_ptr_eq(ff->post, nn_module_find(ff, "activation_post_process"));
    ag_tensor *a = ag_ctx_tensor(ctx, 1, AG_SHAPE(3));
    ag_tensor *b = ag_ctx_tensor(ctx, 1, AG_SHAPE(3));
    memcpy(a->data, (const float[]){1, -2, 3}, 3 * sizeof(float));
    memcpy(b->data, (const float[]){0.5f, 1, -4}, 3 * sizeof(float));
    call_log log = {0};
    nn_trace_set(log_call, &log);
    ag_tensor *s = nn_ff_add(ff, ctx, a, b);
    ag_tensor *r = nn_ff_add_relu(ff, ctx, a, b);
    ag_tensor *p = nn_ff_mul(ff, ctx, a, b);
    ag_tensor *c = nn_ff_cat(ff, ctx, (ag_tensor *[]){a, b}, 2, 0);
    nn_trace_set(NULL, NULL);
    ck_assert_float_eq(s->data[0], 3.0f);  // 2 (1 + 0.5)
    ck_assert_float_eq(s->data[1], -2.0f); // 2 (-2 + 1)
    ck_assert_float_eq(r->data[1], 0.0f);
    ck_assert_float_eq(r->data[0], 3.0f);
    ck_assert_float_eq(p->data[2], -24.0f); // 2 (3 x -4)
    assert_shape(c, 1, AG_SHAPE(6));
    ck_assert_float_eq(c->data[3], 1.0f); // 2 x 0.5
    ck_assert_int_eq(log.n, 4);
    ck_assert_str_eq(log.types[0], "FloatFunctional");
    ck_assert_int_eq(log.n_in[3], 2);
    ck_assert_ptr_null(nn_forward(ff, ctx, a)); // no one-input forward
    ck_assert_ptr_null(nn_ff_add(ff, ctx, NULL, b));
    nn_module *relu = nn_relu_new();
    ck_assert_ptr_null(nn_ff_add(relu, ctx, a, b));
    assert_error_contains("not FloatFunctional");
    nn_module_free(relu);
    nn_module_free(ff);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(simple_layers_compute_pytorch_values)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_ctx_tensor(ctx, 4, AG_SHAPE(1, 1, 2, 2));
    memcpy(x->data, (const float[]){-2, 0.5f, 7, 1}, 4 * sizeof(float));
    struct {
        nn_module *m;
        float want[4];
    } cases[] = {
        {nn_relu_new(), {0, 0.5f, 7, 1}},
        {nn_relu6_new(), {0, 0.5f, 6, 1}},
        {nn_leaky_relu_new(0.1f), {-0.2f, 0.5f, 7, 1}},
        {nn_hardswish_new(), {-2.0f / 6.0f, 0.5f * 3.5f / 6.0f, 7, 4.0f / 6.0f}},
        {nn_sigmoid_new(),
         {1 / (1 + expf(2)), 1 / (1 + expf(-0.5f)), 1 / (1 + expf(-7)), 1 / (1 + expf(-1))}},
        {nn_tanh_new(), {tanhf(-2), tanhf(0.5f), tanhf(7), tanhf(1)}},
        {nn_identity_new(), {-2, 0.5f, 7, 1}},
        {nn_quant_stub_new(), {-2, 0.5f, 7, 1}},
        {nn_dequant_stub_new(), {-2, 0.5f, 7, 1}},
        {nn_dropout_new(0.5f), {-2, 0.5f, 7, 1}}, // eval: identity
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_ptr_nonnull(cases[i].m);
        nn_module_eval(cases[i].m);
        ag_tensor *y = nn_forward(cases[i].m, ctx, x);
        ck_assert_msg(y != NULL, "%s: %s", nn_module_type(cases[i].m), ag_last_error());
        for (int j = 0; j < 4; j++)
            ck_assert_msg(fabsf(y->data[j] - cases[i].want[j]) < 1e-6f, "%s[%d]: %g, want %g",
                          nn_module_type(cases[i].m), j, (double)y->data[j],
                          (double)cases[i].want[j]);
        nn_module_free(cases[i].m);
    }
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(pooling_and_flatten_give_pytorch_shapes)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = rand_input(ctx, 4, AG_SHAPE(2, 3, 7, 9), 1);
    nn_module *mp = nn_max_pool2d_new(2, 0, 0);
    nn_module *ap = nn_avg_pool2d_new(3, 2, 1);
    nn_module *aap = nn_adaptive_avg_pool2d_new(2, 3);
    nn_module *fl = nn_flatten_new(1);
    ck_assert_int_eq(((nn_pool2d *)mp)->args.stride[1], 2); // stride None = kernel
    assert_shape(nn_forward(mp, ctx, x), 4, AG_SHAPE(2, 3, 3, 4));
    assert_shape(nn_forward(ap, ctx, x), 4, AG_SHAPE(2, 3, 4, 5));
    assert_shape(nn_forward(aap, ctx, x), 4, AG_SHAPE(2, 3, 2, 3));
    assert_shape(nn_forward(fl, ctx, x), 2, AG_SHAPE(2, 189));
    nn_module_free(mp);
    nn_module_free(ap);
    nn_module_free(aap);
    nn_module_free(fl);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(dropout_in_training_draws_from_context_rng)
{
    ag_ctx *ctx = ag_ctx_new();
    nn_module *d = nn_dropout_new(0.5f);
    ag_tensor *x = ag_ctx_tensor(ctx, 1, AG_SHAPE(1000));
    for (int i = 0; i < 1000; i++)
        x->data[i] = 1.0f;
    ag_rng before = *ag_ctx_rng(ctx);
    ag_tensor *y = nn_forward(d, ctx, x);
    ck_assert_ptr_nonnull(y);
    int zeros = 0;
    for (int i = 0; i < 1000; i++) {
        ck_assert(y->data[i] == 0.0f || y->data[i] == 2.0f);
        zeros += y->data[i] == 0.0f;
    }
    ck_assert_int_gt(zeros, 400);
    ck_assert_int_lt(zeros, 600);
    ck_assert(memcmp(&before, ag_ctx_rng(ctx), sizeof before) != 0);
    nn_module_free(d);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(sequential_runs_children_in_order_named_by_index)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_rng rng;
    ag_rng_seed(&rng, 1, 0);
    nn_module *seq =
        nn_sequential_from((nn_module *[]){nn_linear_new(4, 3, true, &rng), nn_relu_new()}, 2);
    ck_assert_ptr_nonnull(seq);
    ck_assert_int_eq(nn_sequential_append(seq, nn_tanh_new()), AG_OK);
    ck_assert(nn_module_is(nn_module_find(seq, "2"), "Tanh"));
    name_list l = {0};
    nn_state_foreach(seq, collect_key, &l);
    assert_names(&l, (const char *const[]){"0.weight", "0.bias"}, 2);
    // a hook on the Sequential is applied once to the output, not run as a stage
    ck_assert_int_eq(nn_module_add_child(seq, "activation_post_process", scale2_new()), AG_OK);
    seq->post = nn_module_find(seq, "activation_post_process");
    ck_assert_int_eq(nn_sequential_append(seq, nn_identity_new()), AG_OK);
    ck_assert(nn_module_is(nn_module_find(seq, "3"), "Identity"));
    ag_tensor *x = rand_input(ctx, 2, AG_SHAPE(5, 4), 2);
    ag_tensor *y = nn_forward(seq, ctx, x);
    ag_tensor *h = ag_linear(ctx, x, ((nn_linear *)nn_module_find(seq, "0"))->weight,
                             ((nn_linear *)nn_module_find(seq, "0"))->bias);
    assert_shape(y, 2, AG_SHAPE(5, 3));
    for (int64_t i = 0; i < y->numel; i++)
        ck_assert_float_eq_tol(y->data[i], 2.0f * tanhf(fmaxf(h->data[i], 0.0f)), 1e-6f);
    nn_module_free(seq);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- errors ---------------------------------------------------------------------------------
 */

START_TEST(constructors_reject_bad_arguments)
{
    ag_rng rng;
    ag_rng_seed(&rng, 1, 0);
    ck_assert_ptr_null(nn_conv2d_new(0, 4, 3, 1, 0, 1, 1, true, &rng));
    assert_error_contains("Conv2d: channels must be positive");
    ck_assert_ptr_null(nn_conv2d_new(6, 4, 3, 1, 0, 1, 4, true, &rng));
    assert_error_contains("Conv2d: groups 4 must divide in_channels 6 and out_channels 4");
    ck_assert_ptr_null(nn_conv2d_new(4, 6, 3, 1, 0, 1, 4, true, &rng));
    ck_assert_int_eq(ag_last_status(), AG_ERR_ARG);
    ck_assert_ptr_null(nn_conv2d_new(4, 4, 3, 0, 0, 1, 1, true, &rng));
    assert_error_contains("stride (0, 0)");
    ck_assert_ptr_null(nn_conv2d_new(4, 4, 3, 1, -1, 1, 1, true, &rng));
    ck_assert_ptr_null(nn_conv2d_new(4, 4, 3, 1, 0, 1, 0, true, &rng));
    assert_error_contains("groups must be positive");
    ck_assert_ptr_null(nn_linear_new(0, 3, true, &rng));
    assert_error_contains("Linear: features must be positive");
    ck_assert_ptr_null(nn_batch_norm2d_new(0));
    assert_error_contains("BatchNorm2d: num_features must be positive, got 0");
    ck_assert_ptr_null(nn_dropout_new(1.5f));
    assert_error_contains("between 0 and 1, but got 1.5");
    ck_assert_ptr_null(nn_max_pool2d_new(2, 2, 2));
    assert_error_contains("MaxPool2d: pad should be at most half of kernel size");
    ck_assert_ptr_null(nn_avg_pool2d_new(0, 0, 0));
    ck_assert_ptr_null(
        nn_max_pool2d_new_args(&(ag_pool2d_args){.kernel = {2, 2}, .ceil_mode = true}));
    ck_assert_int_eq(ag_last_status(), AG_ERR_UNSUPPORTED);
    ck_assert_ptr_null(nn_adaptive_avg_pool2d_new(0, 1));
    // a failed part inside a Sequential frees the others and keeps its message
    ck_assert_ptr_null(nn_sequential_from(
        (nn_module *[]){nn_relu_new(), nn_linear_new(-1, 2, true, &rng), nn_tanh_new()}, 3));
    assert_error_contains("Linear: features must be positive");
    ck_assert_int_eq(nn_sequential_append(NULL, nn_relu_new()), AG_ERR_ARG);
}
END_TEST

START_TEST(zoo_rejects_unknown_names_and_bad_configs)
{
    nn_zoo_config cfg;
    ck_assert_int_eq(nn_zoo_config_default("resnet50", &cfg), AG_ERR_ARG);
    assert_error_contains("unknown model 'resnet50' (known: refcnn, lenet5, mobilenet-tiny)");
    const nn_fusion_group *g;
    int32_t n;
    ck_assert_int_eq(nn_zoo_fusion_groups("refcn", &g, &n), AG_ERR_ARG);
    ck_assert_int_eq(nn_zoo_config_default("refcnn", &cfg), AG_OK);
    ck_assert_int_eq(cfg.in_channels, 1);
    ck_assert_int_eq(cfg.in_h, 28);
    ck_assert_int_eq(cfg.num_classes, 10);
    snprintf(cfg.name, sizeof cfg.name, "refcnnx");
    ck_assert_ptr_null(nn_zoo_new(&cfg, NULL));
    assert_error_contains("unknown model 'refcnnx'");
    snprintf(cfg.name, sizeof cfg.name, "refcnn");
    cfg.num_classes = 0;
    ck_assert_ptr_null(nn_zoo_new(&cfg, NULL));
    assert_error_contains("must be positive");
    cfg.num_classes = 10;
    cfg.in_h = 3;
    ck_assert_ptr_null(nn_zoo_new(&cfg, NULL));
    assert_error_contains("refcnn: input 3x28 is smaller than 4x4");
    ck_assert_int_eq(nn_zoo_config_default("lenet5", &cfg), AG_OK);
    cfg.in_h = cfg.in_w = 30;
    ck_assert_ptr_null(nn_zoo_new(&cfg, NULL));
    assert_error_contains("lenet5: input 30x30 is not supported");
    ck_assert_ptr_null(nn_zoo_new(NULL, NULL));
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("nn");
    TCase *tc = tcase_create("nn");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, refcnn_state_keys_are_pytorch_state_dict_keys);
    tcase_add_test(tc, refcnn_has_216330_parameters_in_pytorch_layouts);
    tcase_add_test(tc, refcnn_walk_yields_named_modules_paths);
    tcase_add_test(tc, mobilenet_tiny_names_follow_torchvision_style);
    tcase_add_test(tc, zoo_fusion_groups_name_existing_modules);
    tcase_add_test(tc, find_and_replace_by_dotted_path);
    tcase_add_test(tc, replaced_conv_still_runs_in_model_forward);
    tcase_add_test(tc, train_and_eval_reach_every_module);
    tcase_add_test(tc, batch_norm_training_updates_running_stats_and_counter);
    tcase_add_test(tc, batch_norm_checks_input_rank_like_pytorch);
    tcase_add_test(tc, conv_and_linear_init_within_one_over_sqrt_fan_in);
    tcase_add_test(tc, batch_norm_init_is_identity);
    tcase_add_test(tc, same_seed_gives_same_model_other_seed_differs);
    tcase_add_test(tc, zoo_models_give_logits_for_batch_2);
    tcase_add_test(tc, refcnn_backward_reaches_every_parameter);
    tcase_add_test(tc, refcnn_forward_calls_each_child_through_nn_forward);
    tcase_add_test(tc, float_functional_applies_its_post_hook_and_reports);
    tcase_add_test(tc, simple_layers_compute_pytorch_values);
    tcase_add_test(tc, pooling_and_flatten_give_pytorch_shapes);
    tcase_add_test(tc, dropout_in_training_draws_from_context_rng);
    tcase_add_test(tc, sequential_runs_children_in_order_named_by_index);
    tcase_add_test(tc, constructors_reject_bad_arguments);
    tcase_add_test(tc, zoo_rejects_unknown_names_and_bad_configs);
    suite_add_tcase(s, tc);
    return s;
}
