/* test_qat_modules.c — qconfigs, propagation, fusion, the QAT modules and prepare /
 * prepare_qat, against PyTorch 1.13 (tests/data/qat_modules_golden.h5, written by
 * tools/gen_qat_modules_golden.py). */
#include "test_util.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/layers.h"
#include "nn/state_h5.h"
#include "nn/zoo.h"
#include "qat/qat.h"
#include "qat/qconfig.h"
#include "qat/modules/modules_impl.h"

#define GOLDEN CQAT_TEST_DATA_DIR "/qat_modules_golden.h5"

/* ---- helpers ------------------------------------------------------------------------ */

static qat_qconfig named(const char *name)
{
    qat_qconfig qc;
    ck_assert_msg(qat_qconfig_by_name(name, &qc) == AG_OK, "%s", ag_last_error());
    return qc;
}

static bool has_post(nn_module *root, const char *path)
{
    nn_module *m = nn_module_find(root, path);
    ck_assert_msg(m != NULL, "no module %s", path);
    return m->post != NULL && nn_module_find(m, "activation_post_process") == m->post;
}

static hid_t golden_open(void)
{
    nn_h5_quiet();
    hid_t f = nn_h5_open_read(GOLDEN);
    ck_assert_msg(f >= 0, "%s", ag_last_error());
    return f;
}

static hid_t group_open(hid_t loc, const char *name)
{
    hid_t g = H5Gopen2(loc, name, H5P_DEFAULT);
    ck_assert_msg(g >= 0, "golden file has no group %s", name);
    return g;
}

static void read_into(hid_t g, const char *name, ag_tensor *t)
{
    ck_assert_msg(nn_h5_read_tensor(g, "golden", name, t) == AG_OK, "%s", ag_last_error());
}

/* A heap tensor of a dataset's values, for inputs (requires_grad as asked). */
static ag_tensor *read_new(hid_t g, const char *name, int32_t ndim, const int64_t *shape,
                           bool requires_grad)
{
    ag_tensor *t = ag_tensor_new(ndim, shape, requires_grad);
    ck_assert_ptr_nonnull(t);
    read_into(g, name, t);
    return t;
}

/* |got - want| <= atol + rtol * |want| everywhere. */
static void expect_close(const char *what, const float *got, const float *want, int64_t n,
                         float rtol, float atol)
{
    ck_assert_ptr_nonnull(got);
    for (int64_t i = 0; i < n; i++) {
        const float tol = atol + rtol * fabsf(want[i]);
        ck_assert_msg(fabsf(got[i] - want[i]) <= tol, "%s[%lld]: got %.9g, want %.9g", what,
                      (long long)i, (double)got[i], (double)want[i]);
    }
}

static void expect_golden(hid_t g, const char *name, const float *got, int64_t n, float rtol,
                          float atol)
{
    float *want = malloc((size_t)n * sizeof *want);
    ck_assert_ptr_nonnull(want);
    ck_assert_msg(nn_h5_read_floats(g, "golden", name, want, n) == AG_OK, "%s",
                  ag_last_error());
    expect_close(name, got, want, n, rtol, atol);
    free(want);
}

/* Distance in units in the last place between two finite floats of one sign. */
static int64_t ulp_diff(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    return llabs((long long)ia - (long long)ib);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int64_t int_at(const ag_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case AG_I64:
        return ((const int64_t *)(const void *)t->data)[i];
    case AG_I32:
        return ((const int32_t *)(const void *)t->data)[i];
    case AG_I8:
        return ((const int8_t *)(const void *)t->data)[i];
    case AG_U8:
        return ((const uint8_t *)(const void *)t->data)[i];
    default:
        return 0;
    }
}

/* How close a state entry must be to PyTorch's. Weight scales come from elementwise
 * float32 ops on the weights (W * gamma / std, min/max, ChooseQuantizationParams) and
 * must be bit-exact. Activation scales come from the min/max of conv / linear / BN
 * outputs, whose sums round differently in cqat's sgemm and PyTorch's oneDNN kernels:
 * they may be a few ulps off. */
typedef struct state_tol {
    int64_t weight_scale_ulps, act_scale_ulps;
    float rtol, atol; /* parameters, BN statistics, observer ranges */
} state_tol;

typedef struct state_cmp {
    hid_t g;
    state_tol tol;
    int32_t n;
} state_cmp;

static bool compare_entry(void *ud, const char *key, ag_tensor *t, nn_state_kind kind)
{
    (void)kind;
    state_cmp *c = ud;
    c->n++;
    ag_tensor *want = ag_tensor_new_dtype(t->dtype, t->ndim, t->shape);
    ck_assert_ptr_nonnull(want);
    read_into(c->g, key, want);
    for (int64_t i = 0; i < t->numel; i++) {
        if (t->dtype != AG_F32) {
            ck_assert_msg(int_at(t, i) == int_at(want, i), "%s[%lld]: got %lld, want %lld", key,
                          (long long)i, (long long)int_at(t, i), (long long)int_at(want, i));
        } else if (ends_with(key, ".scale")) {
            const int64_t ulps = strstr(key, "weight_fake_quant.") ? c->tol.weight_scale_ulps
                                                                   : c->tol.act_scale_ulps;
            ck_assert_msg(ulp_diff(t->data[i], want->data[i]) <= ulps,
                          "%s[%lld]: got %.9g, want %.9g (%lld ulp)", key, (long long)i,
                          (double)t->data[i], (double)want->data[i],
                          (long long)ulp_diff(t->data[i], want->data[i]));
        } else {
            const float w = want->data[i], tol = c->tol.atol + c->tol.rtol * fabsf(w);
            ck_assert_msg(fabsf(t->data[i] - w) <= tol, "%s[%lld]: got %.9g, want %.9g", key,
                          (long long)i, (double)t->data[i], (double)w);
        }
    }
    ag_tensor_free(want);
    return true;
}

/* Every state entry of m equals the group's dataset of the same key, and the group has
 * no other datasets. */
static void expect_state(nn_module *m, hid_t g, state_tol tol)
{
    state_cmp c = {g, tol, 0};
    nn_state_foreach(m, compare_entry, &c);
    H5G_info_t info;
    ck_assert(H5Gget_info(g, &info) >= 0);
    ck_assert_int_eq((int)info.nlinks, c.n);
}

/* ---- qconfigs ------------------------------------------------------------------------ */

START_TEST(fbgemm_qat_qconfig_is_pytorchs_default)
{
    qat_qconfig qc = named("fbgemm-qat"), same;
    ck_assert_int_eq(qat_get_default_qat_qconfig("fbgemm", 1, &same), AG_OK);
    ck_assert(qat_qconfig_equal(&qc, &same));
    ck_assert(!qat_qconfig_equal(&qc, &qat_qconfig_none));
    ck_assert(qc.is_qat);
    ck_assert_int_eq(qc.activation.kind, QAT_FQ_FUSED);
    ck_assert_int_eq(qc.activation.obs.kind, QAT_OBS_MOVING_AVG_MINMAX);
    ck_assert_int_eq(qc.activation.obs.dtype, QAT_QUINT8);
    int32_t lo, hi;
    ck_assert_int_eq(qat_observer_cfg_range(&qc.activation.obs, &lo, &hi), AG_OK);
    ck_assert_int_eq(lo, 0); // quant_min=0, quant_max=255, reduce_range -> 0..127
    ck_assert_int_eq(hi, 127);
    ck_assert_int_eq(qc.weight.kind, QAT_FQ_FUSED);
    ck_assert_int_eq(qc.weight.obs.kind, QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX);
    ck_assert_int_eq(qc.weight.obs.qscheme, QAT_PER_CHANNEL_SYMMETRIC);
    ck_assert_int_eq(qat_observer_cfg_range(&qc.weight.obs, &lo, &hi), AG_OK);
    ck_assert_int_eq(lo, -128);
    ck_assert_int_eq(hi, 127);
}
END_TEST

START_TEST(qconfig_versions_and_backends_differ_as_pytorch)
{
    qat_qconfig v0 = named("fbgemm-qat-v0"), qnn = named("qnnpack-qat"), ptq = named("fbgemm");
    ck_assert_int_eq(v0.activation.kind, QAT_FQ_STANDARD);
    ck_assert_int_eq(v0.weight.obs.kind, QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX);
    int32_t lo, hi;
    ck_assert_int_eq(qat_observer_cfg_range(&qnn.activation.obs, &lo, &hi), AG_OK);
    ck_assert_int_eq(hi, 255); // qnnpack: no reduce_range
    ck_assert_int_eq(qnn.weight.obs.qscheme, QAT_PER_TENSOR_SYMMETRIC);
    ck_assert(!ptq.is_qat);
    ck_assert_int_eq(ptq.activation.obs.kind, QAT_OBS_HISTOGRAM);
    ck_assert(ptq.activation.obs.reduce_range);
    ck_assert_int_eq(ptq.weight.obs.kind, QAT_OBS_PER_CHANNEL_MINMAX);
    qat_qconfig d = named("default");
    ck_assert_int_eq(qat_observer_cfg_range(&d.activation.obs, &lo, &hi), AG_OK);
    ck_assert_int_eq(hi, 127); // default_observer: quant_min=0, quant_max=127
    qat_qconfig dyn = named("default-dynamic");
    ck_assert_int_eq(dyn.activation.obs.kind, QAT_OBS_PLACEHOLDER);
    ck_assert(dyn.activation.obs.is_dynamic);
    qat_qconfig sym = named("qnnpack-symmetric-qat");
    ck_assert_int_eq(qat_observer_cfg_range(&sym.weight.obs, &lo, &hi), AG_OK);
    ck_assert_int_eq(lo, -127);
    ck_assert(sym.weight.obs.eps == 0x1p-12f);
}
END_TEST

START_TEST(every_listed_qconfig_name_resolves)
{
    int n = 0;
    for (const char *const *p = qat_qconfig_names(); *p; p++, n++) {
        qat_qconfig qc;
        ck_assert_msg(qat_qconfig_by_name(*p, &qc) == AG_OK, "%s: %s", *p, ag_last_error());
    }
    ck_assert_int_ge(n, 20);
}
END_TEST

START_TEST(unknown_qconfig_name_lists_the_known_ones)
{
    qat_qconfig qc;
    ck_assert_int_eq(qat_qconfig_by_name("fbgem-qat", &qc), AG_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "'fbgem-qat'"));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "fbgemm-qat"));
    ck_assert_int_eq(qat_get_default_qat_qconfig("fbgemm", 2, &qc), AG_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "version 2"));
    ck_assert_int_eq(qat_get_default_qconfig("tpu", &qc), AG_ERR_ARG);
}
END_TEST

START_TEST(set_bits_gives_4bit_ranges)
{
    qat_qconfig qc = named("fbgemm-qat");
    ck_assert_int_eq(qat_qconfig_set_bits(&qc, 4, 4), AG_OK);
    int32_t lo, hi;
    ck_assert_int_eq(qat_observer_cfg_range(&qc.weight.obs, &lo, &hi), AG_OK);
    ck_assert_int_eq(lo, -8);
    ck_assert_int_eq(hi, 7);
    ck_assert_int_eq(qat_observer_cfg_range(&qc.activation.obs, &lo, &hi), AG_OK);
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, 15); // reduce_range cleared: all 16 levels
    ck_assert_int_eq(qat_qconfig_set_bits(&qc, 9, 0), AG_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "activation bits"));
}
END_TEST

START_TEST(set_learnable_needs_a_qat_qconfig)
{
    qat_qconfig qc = named("fbgemm-qat");
    ck_assert_int_eq(qat_qconfig_set_learnable(&qc, true, true, true), AG_OK);
    ck_assert_int_eq(qc.activation.kind, QAT_FQ_LEARNABLE);
    ck_assert_int_eq(qc.weight.kind, QAT_FQ_LEARNABLE);
    ck_assert(qc.weight.use_grad_scaling);
    qat_qconfig ptq = named("fbgemm");
    ck_assert_int_eq(qat_qconfig_set_learnable(&ptq, true, false, false), AG_ERR_ARG);
}
END_TEST

/* ---- propagation -------------------------------------------------------------------- */

/* root: Sequential(0: Sequential(0: Conv2d, 1: ReLU), 1: Linear, 2: Sequential(0: Conv2d)) */
static nn_module *small_tree(void)
{
    nn_module *inner = nn_sequential_from(
        (nn_module *[]){nn_conv2d_new(1, 2, 3, 1, 1, 1, 1, true, NULL), nn_relu_new()}, 2);
    nn_module *other =
        nn_sequential_from((nn_module *[]){nn_conv2d_new(2, 2, 1, 1, 0, 1, 1, true, NULL)}, 1);
    nn_module *root =
        nn_sequential_from((nn_module *[]){inner, nn_linear_new(4, 3, true, NULL), other}, 3);
    ck_assert_ptr_nonnull(root);
    return root;
}

static const qat_qconfig *qconfig_at(nn_module *root, const char *path)
{
    return qat_module_qconfig(nn_module_find(root, path));
}

START_TEST(propagation_prefers_own_then_name_then_type_then_parent)
{
    qat_qconfig global = named("default"), by_type = named("default-per-channel"),
                by_name = named("fbgemm"), own = named("qnnpack");
    ck_assert(!qat_qconfig_equal(&by_type, &global) && !qat_qconfig_equal(&by_name, &global));
    nn_module *root = small_tree();
    qat_module_set_qconfig(nn_module_find(root, "2.0"), &own);
    qat_qconfig_map *map = qat_qconfig_map_new(&global);
    ck_assert_int_eq(qat_qconfig_map_set_type(map, "Conv2d", &by_type), AG_OK);
    ck_assert_int_eq(qat_qconfig_map_set_name(map, "2", &by_name), AG_OK);
    ck_assert_int_eq(qat_qconfig_map_set_name(map, "2.0", &by_name), AG_OK); // own wins
    ck_assert_int_eq(qat_propagate_qconfig(root, map), AG_OK);
    const qat_qconfig *g = qconfig_at(root, ""), *t = qconfig_at(root, "0.0");
    ck_assert(qat_qconfig_equal(g, &global));
    ck_assert(qat_qconfig_equal(t, &by_type));    // type > parent
    ck_assert_ptr_eq(qconfig_at(root, "0.1"), g); // parent's
    ck_assert_ptr_eq(qconfig_at(root, "1"), g);
    ck_assert(qat_qconfig_equal(qconfig_at(root, "2"), &by_name)); // name
    ck_assert_ptr_eq(qconfig_at(root, "2.0"), &own);               // own > name
    qat_qconfig_map_set_name(map, "2.0", NULL); // a later map entry does not win over
    ck_assert_int_eq(qat_propagate_qconfig(root, map), AG_OK); // a propagated qconfig
    ck_assert_ptr_eq(qconfig_at(root, "2.0"), &own);
    nn_module_free(root);
    qat_qconfig_map_free(map);
}
END_TEST

START_TEST(none_skips_a_subtree_unless_a_child_has_its_own)
{
    qat_qconfig global = named("fbgemm-qat"), own = named("qnnpack-qat");
    nn_module *root = small_tree();
    qat_module_set_qconfig(nn_module_find(root, "2.0"), &own);
    qat_qconfig_map *map = qat_qconfig_map_new(&global);
    qat_qconfig_map_set_name(map, "0", NULL);
    qat_qconfig_map_set_name(map, "2", NULL);
    ck_assert_int_eq(qat_propagate_qconfig(root, map), AG_OK);
    ck_assert_ptr_null(qconfig_at(root, "0"));
    ck_assert_ptr_null(qconfig_at(root, "0.0"));
    ck_assert_ptr_null(qconfig_at(root, "2"));
    ck_assert_ptr_eq(qconfig_at(root, "2.0"), &own);
    qat_qconfig_clear(root); // forget, then prepare afresh with the same own qconfig
    ck_assert_ptr_null(nn_module_find(root, "2.0")->qconfig);
    qat_module_set_qconfig(nn_module_find(root, "2.0"), &own);
    ck_assert_int_eq(qat_prepare_qat(root, map), AG_OK);
    ck_assert(nn_module_is(nn_module_find(root, "0.0"), "Conv2d")); // not swapped
    ck_assert(!has_post(root, "0.0"));
    ck_assert(nn_module_is(nn_module_find(root, "1"), "nnqat.Linear"));
    ck_assert(has_post(root, "1"));
    ck_assert(nn_module_is(nn_module_find(root, "2"), "Sequential"));
    ck_assert(!has_post(root, "2"));
    ck_assert(nn_module_is(nn_module_find(root, "2.0"), "nnqat.Conv2d")); // own qconfig
    ck_assert(has_post(root, "2.0"));
    nn_module_free(root);
    qat_qconfig_map_free(map);
}
END_TEST

/* ---- fusion ------------------------------------------------------------------------ */

static nn_module *refcnn_new(int32_t h, int32_t w, uint64_t seed)
{
    nn_zoo_config cfg;
    ck_assert_int_eq(nn_zoo_config_default("refcnn", &cfg), AG_OK);
    cfg.in_h = h;
    cfg.in_w = w;
    ag_rng rng;
    ag_rng_seed(&rng, seed, 0);
    nn_module *m = nn_zoo_new(&cfg, &rng);
    ck_assert_msg(m != NULL, "%s", ag_last_error());
    return m;
}

/* BatchNorms with non-trivial parameters and running statistics. */
static void randomize_bns(nn_module *m, uint64_t seed)
{
    ag_rng rng;
    ag_rng_seed(&rng, seed, 3);
    const char *bns[] = {"bn1", "bn2", "bn3"};
    for (int i = 0; i < 3; i++) {
        nn_batch_norm *bn = (nn_batch_norm *)nn_module_find(m, bns[i]);
        for (int32_t c = 0; c < bn->num_features; c++) {
            bn->weight->data[c] = ag_rng_uniform_range(&rng, 0.5f, 1.5f);
            bn->bias->data[c] = ag_rng_uniform_range(&rng, -0.5f, 0.5f);
            bn->running_mean->data[c] = ag_rng_uniform_range(&rng, -0.2f, 0.2f);
            bn->running_var->data[c] = ag_rng_uniform_range(&rng, 0.5f, 2.0f);
        }
    }
}

static const nn_fusion_group *refcnn_groups(int32_t *n)
{
    const nn_fusion_group *groups;
    ck_assert_int_eq(nn_zoo_fusion_groups("refcnn", &groups, n), AG_OK);
    return groups;
}

START_TEST(eval_fusion_folds_bn_like_torch)
{
    hid_t f = golden_open();
    const char *cases[] = {"fold/conv", "fold/conv_nobias"};
    for (int k = 0; k < 2; k++) {
        hid_t g = group_open(f, cases[k]);
        const bool bias = k == 0;
        nn_module *conv = nn_conv2d_new(3, 5, 3, 1, 0, 1, 1, bias, NULL);
        nn_module *bn = nn_batch_norm2d_new(5);
        read_into(g, "conv.weight", ((nn_conv2d *)conv)->weight);
        if (bias)
            read_into(g, "conv.bias", ((nn_conv2d *)conv)->bias);
        nn_batch_norm *b = (nn_batch_norm *)bn;
        read_into(g, "bn.weight", b->weight);
        read_into(g, "bn.bias", b->bias);
        read_into(g, "bn.running_mean", b->running_mean);
        read_into(g, "bn.running_var", b->running_var);
        nn_module *fused = qat_fuse_conv_bn_eval(conv, bn);
        ck_assert_msg(fused != NULL, "%s", ag_last_error());
        nn_conv2d *fc = (nn_conv2d *)fused;
        ck_assert_ptr_nonnull(fc->bias); // created even when the conv had none
        expect_golden(g, "fused.weight", fc->weight->data, fc->weight->numel, 0.0f, 0.0f);
        expect_golden(g, "fused.bias", fc->bias->data, 5, 0.0f, 0.0f);
        nn_module_free(fused);
        nn_module_free(conv);
        nn_module_free(bn);
        H5Gclose(g);
    }
    hid_t g = group_open(f, "fold/linear");
    nn_module *lin = nn_linear_new(6, 4, true, NULL), *bn = nn_batch_norm1d_new(4);
    read_into(g, "linear.weight", ((nn_linear *)lin)->weight);
    read_into(g, "linear.bias", ((nn_linear *)lin)->bias);
    nn_batch_norm *b = (nn_batch_norm *)bn;
    read_into(g, "bn.weight", b->weight);
    read_into(g, "bn.bias", b->bias);
    read_into(g, "bn.running_mean", b->running_mean);
    read_into(g, "bn.running_var", b->running_var);
    nn_module *fused = qat_fuse_linear_bn_eval(lin, bn);
    ck_assert_ptr_nonnull(fused);
    expect_golden(g, "fused.weight", ((nn_linear *)fused)->weight->data, 24, 0.0f, 0.0f);
    expect_golden(g, "fused.bias", ((nn_linear *)fused)->bias->data, 4, 0.0f, 0.0f);
    nn_module_free(fused);
    nn_module_free(lin);
    nn_module_free(bn);
    H5Gclose(g);
    H5Fclose(f);
}
END_TEST

START_TEST(eval_fusion_preserves_outputs)
{
    nn_module *m = refcnn_new(28, 28, 7);
    randomize_bns(m, 8);
    nn_module_eval(m);
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(3, 1, 28, 28), -2.0f, 2.0f, 9, false);
    ag_no_grad_begin(ctx);
    ag_tensor *before = nn_forward(m, ctx, x);
    ck_assert_ptr_nonnull(before);
    int32_t n;
    const nn_fusion_group *groups = refcnn_groups(&n);
    ck_assert_msg(qat_fuse_modules(m, groups, n, false) == AG_OK, "%s", ag_last_error());
    ck_assert(nn_module_is(nn_module_find(m, "conv1"), "nni.ConvReLU2d"));
    ck_assert(nn_module_is(nn_module_find(m, "conv1.0"), "Conv2d"));
    ck_assert(nn_module_is(nn_module_find(m, "conv3"), "Conv2d")); // folded
    ck_assert(nn_module_is(nn_module_find(m, "bn1"), "Identity"));
    ck_assert(nn_module_is(nn_module_find(m, "relu1"), "Identity"));
    ck_assert(nn_module_is(nn_module_find(m, "fc1"), "nni.LinearReLU"));
    ck_assert(!nn_module_find(m, "bn1")->training);
    ag_tensor *after = nn_forward(m, ctx, x);
    ck_assert_ptr_nonnull(after);
    expect_close("logits", after->data, before->data, before->numel, 1e-5f, 1e-5f);
    ag_no_grad_end(ctx);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
    nn_module_free(m);
}
END_TEST

static void randomize_bn(nn_module *m, uint64_t seed)
{
    nn_batch_norm *bn = (nn_batch_norm *)m;
    ag_rng rng;
    ag_rng_seed(&rng, seed, 4);
    for (int32_t c = 0; c < bn->num_features; c++) {
        bn->weight->data[c] = ag_rng_uniform_range(&rng, 0.5f, 1.5f);
        bn->bias->data[c] = ag_rng_uniform_range(&rng, -0.5f, 0.5f);
        bn->running_mean->data[c] = ag_rng_uniform_range(&rng, -0.2f, 0.2f);
        bn->running_var->data[c] = ag_rng_uniform_range(&rng, 0.5f, 2.0f);
    }
}

/* Sequential(mods) in eval mode, fused as group ["0", "1"(, "2")]: the outputs stay. */
static void expect_fusion_keeps_outputs(nn_module *const *mods, int32_t n, bool is_qat,
                                        const char *want_type, ag_tensor *x)
{
    nn_module *seq = nn_sequential_from(mods, n);
    ck_assert_ptr_nonnull(seq);
    for (int32_t i = 0; i < n; i++)
        if (nn_module_is(seq->children[i].m, "BatchNorm2d") ||
            nn_module_is(seq->children[i].m, "BatchNorm1d"))
            randomize_bn(seq->children[i].m, 20 + (uint64_t)i);
    nn_module_eval(seq);
    ag_ctx *ctx = ag_ctx_new();
    ag_no_grad_begin(ctx);
    ag_tensor *before = nn_forward(seq, ctx, x);
    ck_assert_ptr_nonnull(before);
    nn_fusion_group g = {n, {"0", "1", "2"}};
    ck_assert_msg(qat_fuse_modules(seq, &g, 1, is_qat) == AG_OK, "%s", ag_last_error());
    ck_assert_str_eq(nn_module_type(seq->children[0].m), want_type);
    for (int32_t i = 1; i < n; i++)
        ck_assert(nn_module_is(seq->children[i].m, "Identity"));
    ag_tensor *after = nn_forward(seq, ctx, x);
    ck_assert_ptr_nonnull(after);
    expect_close(want_type, after->data, before->data, before->numel, 1e-5f, 1e-6f);
    ag_no_grad_end(ctx);
    ag_ctx_free(ctx);
    nn_module_free(seq);
}

START_TEST(every_fusion_pattern_keeps_eval_outputs)
{
    ag_tensor *img = tu_rand(4, AG_SHAPE(2, 3, 5, 4), -1.0f, 1.0f, 12, false);
    ag_tensor *vec = tu_rand(2, AG_SHAPE(3, 6), -1.0f, 1.0f, 13, false);
    for (int qat = 0; qat < 2; qat++) {
        ag_rng rng;
        ag_rng_seed(&rng, 5, (uint64_t)qat);
        expect_fusion_keeps_outputs(
            (nn_module *[]){nn_conv2d_new(3, 4, 3, 1, 1, 1, 1, true, &rng),
                            nn_batch_norm2d_new(4)},
            2, qat, qat ? "nni.ConvBn2d" : "Conv2d", img);
        expect_fusion_keeps_outputs(
            (nn_module *[]){nn_conv2d_new(3, 4, 3, 2, 1, 1, 1, false, &rng),
                            nn_batch_norm2d_new(4), nn_relu_new()},
            3, qat, qat ? "nni.ConvBnReLU2d" : "nni.ConvReLU2d", img);
        expect_fusion_keeps_outputs(
            (nn_module *[]){nn_conv2d_new(3, 4, 3, 1, 0, 1, 1, true, &rng), nn_relu_new()}, 2,
            qat, "nni.ConvReLU2d", img);
        expect_fusion_keeps_outputs(
            (nn_module *[]){nn_linear_new(6, 5, true, &rng), nn_batch_norm1d_new(5)}, 2, qat,
            qat ? "nni.LinearBn1d" : "Linear", vec);
        expect_fusion_keeps_outputs(
            (nn_module *[]){nn_linear_new(6, 5, false, &rng), nn_relu_new()}, 2, qat,
            "nni.LinearReLU", vec);
        expect_fusion_keeps_outputs((nn_module *[]){nn_batch_norm2d_new(3), nn_relu_new()}, 2,
                                    qat, "nni.BNReLU2d", img);
    }
    ag_tensor_free(img);
    ag_tensor_free(vec);
}
END_TEST

static bool collect_key(void *ud, const char *key, ag_tensor *t, nn_state_kind kind)
{
    (void)t;
    (void)kind;
    char *buf = ud;
    strcat(buf, key);
    strcat(buf, "\n");
    return true;
}

START_TEST(qat_fusion_keeps_modules_in_containers)
{
    nn_module *m = refcnn_new(28, 28, 1);
    int32_t n;
    const nn_fusion_group *groups = refcnn_groups(&n);
    ck_assert_int_eq(qat_fuse_modules(m, groups, n, true), AG_OK);
    ck_assert(nn_module_is(nn_module_find(m, "conv1"), "nni.ConvBnReLU2d"));
    ck_assert(nn_module_is(nn_module_find(m, "conv1.1"), "BatchNorm2d"));
    ck_assert(nn_module_is(nn_module_find(m, "conv1.2"), "ReLU"));
    ck_assert(nn_module_is(nn_module_find(m, "conv3"), "nni.ConvBn2d"));
    ck_assert(nn_module_is(nn_module_find(m, "fc1"), "nni.LinearReLU"));
    ck_assert(nn_module_is(nn_module_find(m, "bn3"), "Identity"));
    ck_assert(qat_is_fused(nn_module_find(m, "conv1")));
    char *keys = calloc(1, 8192);
    nn_state_foreach(m, collect_key, keys);
    ck_assert_ptr_nonnull(strstr(keys, "conv1.0.weight\nconv1.0.bias\nconv1.1.weight\n"));
    ck_assert_ptr_nonnull(strstr(keys, "conv1.1.num_batches_tracked\nconv2.0.weight\n"));
    free(keys);
    nn_module_free(m);
}
END_TEST

/* fuse_modules(root, [a, b(, c)]) must fail with a message containing `want`, leaving
 * the model as it was. */
static void expect_fuse_error(nn_module *m, nn_fusion_group g, bool is_qat, const char *want)
{
    char before[8192] = "", after[8192] = "";
    nn_state_foreach(m, collect_key, before);
    nn_fusion_group groups[2] = {{2, {"fc1", "relu3"}}, g}; // a good group first
    ck_assert_int_eq(qat_fuse_modules(m, groups, 2, is_qat), AG_ERR_ARG);
    ck_assert_msg(strstr(ag_last_error(), want) != NULL, "message '%s' lacks '%s'",
                  ag_last_error(), want);
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "group 1 ["));
    nn_state_foreach(m, collect_key, after);
    ck_assert_str_eq(before, after);
}

START_TEST(fusion_errors_name_the_group_and_module)
{
    nn_module *m = refcnn_new(28, 28, 1);
    expect_fuse_error(m, (nn_fusion_group){2, {"conv1", "bn9"}}, true, "no module named 'bn9'");
    expect_fuse_error(m, (nn_fusion_group){2, {"conv1", "pool1"}}, true,
                      "cannot fuse (Conv2d, MaxPool2d)");
    expect_fuse_error(m, (nn_fusion_group){2, {"conv3", "relu3"}}, true,
                      "'relu3' is already in an earlier group");
    expect_fuse_error(m, (nn_fusion_group){2, {"conv1", "bn2"}}, true,
                      "bn2 has 32 features but conv1 has 16 outputs");
    expect_fuse_error(m, (nn_fusion_group){3, {"conv1", "bn1", "relu1"}}, false,
                      "needs eval mode, but conv1 is in training mode");
    nn_module_eval(nn_module_find(m, "relu1"));
    expect_fuse_error(m, (nn_fusion_group){3, {"conv1", "bn1", "relu1"}}, true,
                      "relu1 (ReLU) in eval mode");
    nn_module_free(m);
}
END_TEST

/* ---- QAT modules against PyTorch --------------------------------------------------- */

typedef struct golden_case {
    const char *name;
    bool conv, bn, relu;
} golden_case;

static int64_t attr_i64(hid_t g, const char *name)
{
    int64_t v = 0;
    ck_assert_msg(nn_h5_read_attr_i64(g, "golden", name, &v) == AG_OK, "%s", ag_last_error());
    return v;
}

/* The float layer and BN of a case, loaded, fused (QAT) and made a QAT module by
 * from_float with the fbgemm QAT qconfig (no output fake quant, as the golden). */
static nn_module *golden_module(hid_t g, const golden_case *gc, const qat_qconfig *qc)
{
    const int32_t in = (int32_t)attr_i64(g, "in"), out = (int32_t)attr_i64(g, "out");
    const bool bias = attr_i64(g, "bias") != 0;
    nn_module *mods[3];
    int32_t n = 0;
    if (gc->conv) {
        mods[n] = nn_conv2d_new(in, out, (int32_t)attr_i64(g, "kernel"),
                                (int32_t)attr_i64(g, "stride"), (int32_t)attr_i64(g, "padding"),
                                1, 1, bias, NULL);
        read_into(g, "float/conv.weight", ((nn_conv2d *)mods[n])->weight);
        if (bias)
            read_into(g, "float/conv.bias", ((nn_conv2d *)mods[n])->bias);
    } else {
        mods[n] = nn_linear_new(in, out, bias, NULL);
        read_into(g, "float/linear.weight", ((nn_linear *)mods[n])->weight);
        if (bias)
            read_into(g, "float/linear.bias", ((nn_linear *)mods[n])->bias);
    }
    n++;
    if (gc->bn) {
        mods[n] = gc->conv ? nn_batch_norm2d_new(out) : nn_batch_norm1d_new(out);
        nn_batch_norm *b = (nn_batch_norm *)mods[n++];
        read_into(g, "float/bn.weight", b->weight);
        read_into(g, "float/bn.bias", b->bias);
        read_into(g, "float/bn.running_mean", b->running_mean);
        read_into(g, "float/bn.running_var", b->running_var);
    }
    if (gc->relu)
        mods[n++] = nn_relu_new();
    const char *type = gc->conv ? (gc->relu ? "nni.ConvBnReLU2d" : "nni.ConvBn2d")
                                : (gc->bn ? "nni.LinearBn1d" : "nni.LinearReLU");
    nn_module *fused = qat_intrinsic_new(type, mods, n);
    ck_assert_msg(fused != NULL, "%s", ag_last_error());
    nn_module *q = qat_module_from_float(fused, qc);
    ck_assert_msg(q != NULL, "%s", ag_last_error());
    nn_module_free(fused);
    return q;
}

static ag_tensor *param_of(nn_module *q, const char *key)
{
    const char *dot = strrchr(key, '.');
    if (!dot)
        return nn_module_param(q, key);
    char owner[64];
    snprintf(owner, sizeof owner, "%.*s", (int)(dot - key), key);
    nn_module *m = nn_module_find(q, owner);
    return m ? nn_module_param(m, dot + 1) : NULL;
}

/* One forward/backward of loss = sum(q(x) * r) compared with PyTorch's. */
static void golden_step(nn_module *q, hid_t g, const char *phase)
{
    hid_t p = group_open(g, phase);
    hid_t ds = H5Dopen2(p, "x", H5P_DEFAULT), sp = H5Dget_space(ds);
    hsize_t dims[4];
    int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    H5Dclose(ds);
    int64_t shape[4];
    for (int i = 0; i < nd; i++)
        shape[i] = (int64_t)dims[i];
    ag_tensor *x = read_new(p, "x", nd, shape, true);
    ag_ctx *ctx = ag_ctx_new();
    nn_zero_grad(q);
    ag_tensor *y = nn_forward(q, ctx, x);
    ck_assert_msg(y != NULL, "%s", ag_last_error());
    ag_tensor *r = read_new(p, "r", y->ndim, y->shape, false);
    ag_tensor *loss = ag_sum(ctx, ag_mul(ctx, y, r), NULL, 0, false);
    ck_assert_int_eq(ag_backward(ctx, loss), AG_OK);
    expect_golden(p, "y", y->data, y->numel, 1e-5f, 1e-5f);
    expect_golden(p, "dx", x->grad, x->numel, 1e-5f, 1e-5f);
    const char *grads[] = {"weight", "bias", "bn.weight", "bn.bias"};
    for (int i = 0; i < 4; i++) {
        ag_tensor *t = param_of(q, grads[i]);
        if (!t)
            continue; // no conv bias, or no bn
        char name[32];
        snprintf(name, sizeof name, "%s.grad", grads[i]);
        expect_golden(p, name, t->grad, t->numel, 1e-5f, 1e-5f);
    }
    hid_t st = group_open(p, "state");
    expect_state(q, st, (state_tol){0, 0, .rtol = 1e-6f, .atol = 1e-7f});
    H5Gclose(st);
    ag_tensor_free(r);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
    H5Gclose(p);
}

static const golden_case golden_cases[] = {
    {"convbnrelu", true, true, true},
    {"convbn", true, true, false},
    {"linearrelu", false, false, true},
    {"linearbn", false, true, false},
};

START_TEST(qat_module_matches_torch_in_training_and_frozen)
{
    const golden_case *gc = &golden_cases[_i];
    qat_qconfig qc = named("fbgemm-qat");
    hid_t f = golden_open();
    hid_t g = group_open(f, gc->name);
    nn_module *q = golden_module(g, gc, &qc);
    golden_step(q, g, "train");
    if (qat_module_bn(q))
        ck_assert_int_eq(qat_module_freeze_bn_stats(q), AG_OK);
    golden_step(q, g, "frozen");
    nn_module_free(q);
    H5Gclose(g);
    H5Fclose(f);
}
END_TEST

START_TEST(frozen_bn_stays_frozen_through_train_and_eval)
{
    nn_module *m = refcnn_new(28, 28, 1);
    int32_t n;
    const nn_fusion_group *groups = refcnn_groups(&n);
    ck_assert_int_eq(qat_fuse_modules(m, groups, n, true), AG_OK);
    qat_qconfig qc = named("fbgemm-qat");
    qat_qconfig_map *map = qat_qconfig_map_new(&qc);
    ck_assert_int_eq(qat_prepare_qat(m, map), AG_OK);
    nn_batch_norm *bn = qat_module_bn(nn_module_find(m, "conv1"));
    ck_assert(bn && bn->base.training);
    ck_assert_int_eq(qat_freeze_bn_stats(m), 3); // conv1, conv2, conv3
    ck_assert(!bn->base.training);
    nn_module_eval(m);
    nn_module_train(m, true);
    ck_assert(!bn->base.training);
    ck_assert(nn_module_find(m, "conv1")->training);
    ck_assert_int_eq(qat_update_bn_stats(m), 3);
    ck_assert(bn->base.training);
    ck_assert_int_eq(qat_module_freeze_bn_stats(nn_module_find(m, "fc1")), AG_ERR_ARG);
    nn_module_free(m);
    qat_qconfig_map_free(map);
}
END_TEST

/* ---- prepare / prepare_qat ----------------------------------------------------------- */

START_TEST(prepare_qat_refuses_eval_mode)
{
    nn_module *m = refcnn_new(28, 28, 1);
    nn_module_eval(m);
    qat_qconfig qc = named("fbgemm-qat");
    qat_qconfig_map *map = qat_qconfig_map_new(&qc);
    ck_assert_int_eq(qat_prepare_qat(m, map), AG_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "training mode"));
    ck_assert(nn_module_is(nn_module_find(m, "conv1"), "Conv2d"));
    nn_module_free(m);
    qat_qconfig_map_free(map);
}
END_TEST

/* Sequential of every layer kind, in the order of `kinds`. */
START_TEST(prepare_observes_what_pytorch_observes)
{
    nn_module *mods[] = {
        nn_quant_stub_new(),
        nn_conv2d_new(1, 2, 3, 1, 1, 1, 1, true, NULL),
        nn_batch_norm2d_new(2),
        nn_relu_new(),
        nn_relu6_new(),
        nn_hardswish_new(),
        nn_leaky_relu_new(0.01f),
        nn_max_pool2d_new(2, 0, 0),
        nn_sigmoid_new(),
        nn_tanh_new(),
        nn_adaptive_avg_pool2d_new(1, 1),
        nn_flatten_new(1),
        nn_dropout_new(0.5f),
        nn_identity_new(),
        nn_linear_new(2, 3, true, NULL),
        nn_batch_norm1d_new(3),
        nn_float_functional_new(),
        nn_dequant_stub_new(),
    };
    const bool observed[] = {true,  true,  true,  false, true,  true, true,  false, false,
                             false, false, false, false, false, true, false, true,  false};
    const int32_t n = (int32_t)(sizeof mods / sizeof mods[0]);
    nn_module *seq = nn_sequential_from(mods, n);
    ck_assert_ptr_nonnull(seq);
    nn_module_eval(seq); // Sigmoid and Tanh get fixed-qparams fake quants only in training
    qat_qconfig qc = named("default");
    qat_qconfig_map *map = qat_qconfig_map_new(&qc);
    ck_assert_msg(qat_prepare(seq, map) == AG_OK, "%s", ag_last_error());
    for (int32_t i = 0; i < n; i++) {
        char path[8];
        snprintf(path, sizeof path, "%d", (int)i);
        nn_module *c = nn_module_find(seq, path);
        ck_assert_msg(has_post(seq, path) == observed[i], "%s observed: %d, want %d",
                      nn_module_type(c), has_post(seq, path), observed[i]);
        if (observed[i])
            ck_assert_msg(qat_is_observer(c->post), "%s: %s", nn_module_type(c),
                          nn_module_type(c->post));
    }
    ck_assert(!has_post(seq, "")); // a Sequential is never observed itself
    nn_module_free(seq);

    /* Training-mode Sigmoid / Tanh: fixed qparams whatever the qconfig. */
    seq = nn_sequential_from((nn_module *[]){nn_sigmoid_new(), nn_tanh_new()}, 2);
    ck_assert_int_eq(qat_prepare(seq, map), AG_OK);
    float scale;
    int32_t zp, nq;
    ck_assert(has_post(seq, "0") && has_post(seq, "1"));
    ck_assert_int_eq(
        qat_fake_quant_qparams(nn_module_find(seq, "1")->post, &scale, &zp, 1, &nq), AG_OK);
    ck_assert(scale == 2.0f / 256.0f);
    ck_assert_int_eq(zp, 128);
    nn_module_free(seq);
    qat_qconfig_map_free(map);
}
END_TEST

START_TEST(quant_wrapper_runs_quant_module_dequant)
{
    qat_qconfig qc = named("default");
    nn_module *lin = nn_linear_new(3, 2, true, NULL);
    qat_module_set_qconfig(lin, &qc);
    nn_module_eval(lin);
    nn_module *w = qat_quant_wrapper_new(lin);
    ck_assert_ptr_nonnull(w);
    ck_assert(!w->training);
    ck_assert_str_eq(w->children[0].name, "quant");
    ck_assert_str_eq(w->children[1].name, "dequant");
    ck_assert_str_eq(w->children[2].name, "module");
    ck_assert_ptr_eq(qat_module_qconfig(w->children[0].m), &qc);
    ck_assert_int_eq(qat_prepare(w, NULL), AG_OK);
    ck_assert(has_post(w, "quant") && has_post(w, "module") && !has_post(w, "dequant"));
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(4, 3), -1.0f, 1.0f, 5, false);
    ag_tensor *y = nn_forward(w, ctx, x), *want = nn_forward(lin, ctx, x);
    ck_assert_ptr_nonnull(y);
    expect_close("wrapped", y->data, want->data, y->numel, 0.0f, 0.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
    nn_module_free(w);
}
END_TEST

START_TEST(prepare_observes_fused_modules_as_a_whole)
{
    nn_module *m = refcnn_new(8, 4, 2);
    nn_module_eval(m);
    int32_t n;
    const nn_fusion_group *groups = refcnn_groups(&n);
    ck_assert_int_eq(qat_fuse_modules(m, groups, n, false), AG_OK);
    qat_qconfig qc = named("fbgemm");
    qat_qconfig_map *map = qat_qconfig_map_new(&qc);
    ck_assert_int_eq(qat_prepare(m, map), AG_OK);
    const char *yes[] = {"quant", "conv1", "conv2", "conv3", "skip", "fc1", "fc2"};
    const char *no[] = {"conv1.0", "conv1.1", "bn1", "relu1", "pool1", "pool2", "dequant"};
    for (int i = 0; i < 7; i++) {
        ck_assert_msg(has_post(m, yes[i]), "%s not observed", yes[i]);
        ck_assert_msg(!has_post(m, no[i]), "%s observed", no[i]);
    }
    ck_assert_str_eq(nn_module_type(nn_module_find(m, "conv1")->post), "HistogramObserver");
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(2, 1, 8, 4), -1.0f, 1.0f, 4, false);
    ag_no_grad_begin(ctx);
    ck_assert_ptr_nonnull(nn_forward(m, ctx, x)); // calibration runs through observers
    ag_no_grad_end(ctx);
    float scale;
    int32_t zp, nq;
    bool valid = false;
    ck_assert_int_eq(
        qat_observer_qparams(nn_module_find(m, "fc1")->post, &scale, &zp, 1, &nq, &valid),
        AG_OK);
    ck_assert(valid && scale > 0.0f);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
    nn_module_free(m);
    qat_qconfig_map_free(map);
}
END_TEST

START_TEST(from_float_failure_leaves_the_float_module)
{
    nn_module *conv = nn_conv2d_new(2, 3, 3, 1, 1, 1, 1, true, NULL);
    nn_conv2d *c = (nn_conv2d *)conv;
    c->weight->data[4] = 0.5f;
    ck_assert_ptr_null(qat_module_from_float(conv, NULL));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "needs a valid qconfig"));
    nn_module *pool = nn_max_pool2d_new(2, 0, 0);
    qat_qconfig qc = named("fbgemm-qat");
    ck_assert_ptr_null(qat_module_from_float(pool, &qc));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "no QAT module for MaxPool2d"));
    ag_tensor *w = c->weight;
    nn_module *q = qat_module_from_float(conv, &qc);
    ck_assert_ptr_nonnull(q);
    ck_assert_ptr_eq(((qat_conv2d *)q)->conv.weight, w); // the same tensor moved over
    ck_assert(((qat_conv2d *)q)->conv.weight->data[4] == 0.5f);
    ck_assert_ptr_ne(c->weight, w);
    ck_assert(qat_is_fake_quant(qat_module_weight_fake_quant(q)));
    nn_module_free(q);
    nn_module_free(conv);
    nn_module_free(pool);
}
END_TEST

/* One training step of the 1x8x4 refcnn prepared with qc; returns the prepared model. */
static nn_module *prepare_and_step(const qat_qconfig *qc, qat_qconfig_map **map)
{
    nn_module *m = refcnn_new(8, 4, 3);
    int32_t n;
    const nn_fusion_group *groups = refcnn_groups(&n);
    ck_assert_int_eq(qat_fuse_modules(m, groups, n, true), AG_OK);
    *map = qat_qconfig_map_new(qc);
    ck_assert_msg(qat_prepare_qat(m, *map) == AG_OK, "%s", ag_last_error());
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(4, AG_SHAPE(4, 1, 8, 4), -1.0f, 1.0f, 6, false);
    ag_tensor *logits = nn_forward(m, ctx, x);
    ck_assert_msg(logits != NULL, "%s", ag_last_error());
    ag_tensor *loss = ag_cross_entropy(ctx, logits, (const int32_t[]){1, 2, 3, 4}, 0.0f);
    ck_assert_int_eq(ag_backward(ctx, loss), AG_OK);
    ck_assert(isfinite(loss->data[0]));
    ag_tensor_free(x);
    ag_ctx_free(ctx);
    return m;
}

START_TEST(modified_qconfigs_prepare_and_train)
{
    qat_qconfig qc = named("fbgemm-qat");
    ck_assert_int_eq(qat_qconfig_set_bits(&qc, 4, 4), AG_OK);
    qat_qconfig_map *map;
    nn_module *m = prepare_and_step(&qc, &map);
    int32_t lo, hi;
    qat_fake_quant_range(qat_module_weight_fake_quant(nn_module_find(m, "conv2")), &lo, &hi);
    ck_assert_int_eq(lo, -8);
    ck_assert_int_eq(hi, 7);
    qat_fake_quant_range(nn_module_find(m, "fc1")->post, &lo, &hi);
    ck_assert_int_eq(hi, 15);
    nn_module_free(m);
    qat_qconfig_map_free(map);

    qc = named("fbgemm-qat");
    ck_assert_int_eq(qat_qconfig_set_learnable(&qc, true, true, false), AG_OK);
    m = prepare_and_step(&qc, &map);
    nn_module *wfq = qat_module_weight_fake_quant(nn_module_find(m, "conv2"));
    ck_assert_str_eq(nn_module_type(wfq), "_LearnableFakeQuantize");
    ag_tensor *scale = nn_module_param(wfq, "scale");
    ck_assert_ptr_nonnull(scale);
    ck_assert_int_eq((int)scale->numel, 32); // channel_len taken from conv2
    nn_module_free(m);
    qat_qconfig_map_free(map);

    qc = named("fbgemm"); // a PTQ qconfig in prepare_qat: observers, as in PyTorch
    m = prepare_and_step(&qc, &map);
    ck_assert(qat_is_observer(qat_module_weight_fake_quant(nn_module_find(m, "fc2"))));
    ck_assert(qat_is_observer(nn_module_find(m, "fc2")->post));
    nn_module_free(m);
    qat_qconfig_map_free(map);
}
END_TEST

/* ---- the whole refcnn step against PyTorch ---------------------------------------- */

/* The first step of torch.optim.SGD(lr, momentum) as optim/sgd.c computes it: the
 * momentum buffer starts as the gradient, then p.add_(buf, alpha=-lr), a fused
 * multiply-add in torch's CPU kernel. (This program does not link optim/: the test
 * wiring gives it qat_dep only.) */
static void sgd_first_step(const nn_param_list *pl, double lr)
{
    const float neg_lr = (float)-lr;
    for (int32_t k = 0; k < pl->n; k++) {
        ag_tensor *p = pl->params[k];
        if (!p->grad)
            continue; // PyTorch skips a parameter whose .grad is None
        for (int64_t i = 0; i < p->numel; i++)
            p->data[i] = fmaf(neg_lr, p->grad[i], p->data[i]);
    }
}

/* cqat's refcnn for 1x8x4 inputs with the golden float state, fused and prepared for QAT
 * with get_default_qat_qconfig('fbgemm'). */
static nn_module *golden_refcnn(hid_t g, qat_qconfig_map *map)
{
    nn_module *m = refcnn_new(8, 4, 1);
    hid_t fl = group_open(g, "float");
    ck_assert_msg(nn_state_load_h5(fl, "golden float", m, NULL) == AG_OK, "%s",
                  ag_last_error());
    H5Gclose(fl);
    int32_t n;
    const nn_fusion_group *groups = refcnn_groups(&n);
    ck_assert_int_eq(qat_fuse_modules(m, groups, n, true), AG_OK);
    ck_assert_msg(qat_prepare_qat(m, map) == AG_OK, "%s", ag_last_error());
    return m;
}

/* ---- the fused ConvBn tail (qat/modules/bn_tail.c) against the op chain ------------- */

typedef struct tail_case {
    bool relu, bias, training;
} tail_case;

typedef struct tail_run {
    ag_tensor *out;                         // (N, C, H, W), the step's arena
    float dconv[3 * 5 * 4 * 7], dgamma[5], dbeta[5], dbias[5];
    float running_mean[5], running_var[5];
    int64_t batches;
} tail_run;

/* A BatchNorm2d(5) with gamma of both signs, running stats away from 0 / 1. */
static nn_batch_norm *tail_bn(bool training)
{
    nn_batch_norm *bn = (nn_batch_norm *)nn_batch_norm2d_new(5);
    ck_assert_ptr_nonnull(bn);
    ag_rng rng;
    ag_rng_seed(&rng, 11, 3);
    for (int c = 0; c < 5; c++) {
        bn->weight->data[c] = (c % 2 ? -1.0f : 1.0f) * ag_rng_uniform_range(&rng, 0.5f, 2.0f);
        bn->bias->data[c] = ag_rng_uniform_range(&rng, -1.0f, 1.0f);
        bn->running_mean->data[c] = ag_rng_uniform_range(&rng, -0.5f, 0.5f);
        bn->running_var->data[c] = ag_rng_uniform_range(&rng, 0.5f, 3.0f);
    }
    bn->base.training = training;
    return bn;
}

/* loss = sum(out * r) for fixed r, its backward, and what it left behind. fused picks
 * qat_bn_tail, else the chain conv_bn.c runs without a gradient. */
static void tail_step(const tail_case *tc, bool fused, tail_run *r)
{
    const int64_t shape[4] = {3, 5, 4, 7}; /* batch 3, non-square */
    ag_tensor *conv = tu_rand(4, shape, -2.0f, 3.0f, 5, true);
    ag_tensor *bias = tu_rand(1, AG_SHAPE(5), -1.0f, 1.0f, 6, true);
    ag_tensor *w = tu_rand(4, shape, -1.0f, 1.0f, 7, false);
    nn_batch_norm *bn = tail_bn(tc->training);
    ag_tensor *b = tc->bias ? bias : NULL;
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *out;
    if (fused) {
        ck_assert(qat_bn_tail_applies(ctx, conv, bn));
        float range[2];
        out = qat_bn_tail(ctx, conv, b, bn, tc->relu, range);
        float lo, hi;
        qat_aminmax(out->data, out->numel, &lo, &hi);
        ck_assert_float_eq(range[0], lo); /* the range the tail hands to a fake quant */
        ck_assert_float_eq(range[1], hi);
    } else {
        ag_tensor *sf = ag_div(ctx, bn->weight, qat_running_std(ctx, bn));
        out = ag_div(ctx, conv, ag_channels(ctx, sf));
        if (b)
            out = ag_add(ctx, out, ag_channels(ctx, b));
        out = nn_forward(&bn->base, ctx, out);
        if (tc->relu)
            out = ag_relu(ctx, out);
    }
    ck_assert_msg(out != NULL, "%s", ag_last_error());
    ck_assert_int_eq(ag_backward(ctx, ag_sum(ctx, ag_mul(ctx, out, w), NULL, 0, false)), AG_OK);
    r->out = ag_tensor_new(4, shape, false);
    memcpy(r->out->data, out->data, sizeof r->dconv);
    memcpy(r->dconv, conv->grad, sizeof r->dconv);
    memcpy(r->dgamma, bn->weight->grad, sizeof r->dgamma);
    memcpy(r->dbeta, bn->bias->grad, sizeof r->dbeta);
    memset(r->dbias, 0, sizeof r->dbias);
    if (b)
        memcpy(r->dbias, bias->grad, sizeof r->dbias);
    memcpy(r->running_mean, bn->running_mean->data, sizeof r->running_mean);
    memcpy(r->running_var, bn->running_var->data, sizeof r->running_var);
    r->batches = *(const int64_t *)(const void *)bn->num_batches_tracked->data;
    ag_ctx_free(ctx);
    nn_module_free(&bn->base);
    ag_tensor_free(w);
    ag_tensor_free(bias);
    ag_tensor_free(conv);
}

START_TEST(conv_bn_fused_tail_matches_op_chain)
{
    for (int k = 0; k < 8; k++) {
        const tail_case tc = {k & 1, (k >> 1) & 1, (k >> 2) & 1};
        tail_run *fused = calloc(1, sizeof *fused), *chain = calloc(1, sizeof *chain);
        tail_step(&tc, true, fused);
        tail_step(&tc, false, chain);
        /* The statistics are summed in another order than batch_norm's: rounding apart. */
        expect_close("out", fused->out->data, chain->out->data, fused->out->numel, 1e-5f,
                     1e-6f);
        expect_close("dconv", fused->dconv, chain->dconv, 3 * 5 * 4 * 7, 1e-4f, 1e-5f);
        expect_close("dgamma", fused->dgamma, chain->dgamma, 5, 1e-4f, 1e-5f);
        expect_close("dbeta", fused->dbeta, chain->dbeta, 5, 1e-4f, 1e-5f);
        expect_close("dbias", fused->dbias, chain->dbias, 5, 1e-4f, 1e-5f);
        expect_close("running_mean", fused->running_mean, chain->running_mean, 5, 1e-6f, 1e-7f);
        expect_close("running_var", fused->running_var, chain->running_var, 5, 1e-6f, 1e-7f);
        ck_assert_int_eq(fused->batches, chain->batches);
        ck_assert_int_eq(fused->batches, tc.training ? 1 : 0);
        ag_tensor_free(fused->out);
        ag_tensor_free(chain->out);
        free(fused);
        free(chain);
    }
}
END_TEST

START_TEST(conv_bn_fused_tail_is_for_gradient_steps_only)
{
    nn_batch_norm *bn = tail_bn(true);
    ag_tensor *conv = tu_rand(4, AG_SHAPE(2, 5, 3, 3), -1.0f, 1.0f, 5, true);
    ag_ctx *ctx = ag_ctx_new();
    ck_assert(qat_bn_tail_applies(ctx, conv, bn));
    ag_no_grad_begin(ctx); /* eval and convert's tracing: the module-by-module chain */
    ck_assert(!qat_bn_tail_applies(ctx, conv, bn));
    ag_no_grad_end(ctx);
    ag_tensor *one = tu_rand(4, AG_SHAPE(1, 5, 1, 1), -1.0f, 1.0f, 5, true);
    ck_assert(!qat_bn_tail_applies(ctx, one, bn)); /* batch_norm's own error message */
    ag_ctx_free(ctx);
    ag_tensor_free(one);
    ag_tensor_free(conv);
    nn_module_free(&bn->base);
}
END_TEST

START_TEST(prepared_refcnn_has_pytorchs_state_keys_in_order)
{
    hid_t f = golden_open();
    hid_t g = group_open(f, "refcnn");
    qat_qconfig qc = named("fbgemm-qat");
    qat_qconfig_map *map = qat_qconfig_map_new(&qc);
    nn_module *m = golden_refcnn(g, map);
    char *want = calloc(1, 16384), *got = calloc(1, 16384);
    ck_assert_int_eq(nn_h5_read_attr_str(g, "golden", "prepared_keys", want, 16384), AG_OK);
    strcat(want, "\n");
    nn_state_foreach(m, collect_key, got);
    ck_assert_str_eq(got, want);
    ck_assert(nn_module_is(nn_module_find(m, "conv1"), "nniqat.ConvBnReLU2d"));
    ck_assert(nn_module_is(nn_module_find(m, "conv3"), "nniqat.ConvBn2d"));
    ck_assert(nn_module_is(nn_module_find(m, "fc1"), "nniqat.LinearReLU"));
    ck_assert(nn_module_is(nn_module_find(m, "fc2"), "nnqat.Linear"));
    ck_assert(qat_is_fake_quant(nn_module_find(m, "skip")->post));
    free(want);
    free(got);
    nn_module_free(m);
    qat_qconfig_map_free(map);
    H5Gclose(g);
    H5Fclose(f);
}
END_TEST

START_TEST(refcnn_qat_step_matches_torch)
{
    hid_t f = golden_open();
    hid_t g = group_open(f, "refcnn");
    qat_qconfig qc = named("fbgemm-qat");
    qat_qconfig_map *map = qat_qconfig_map_new(&qc);
    nn_module *m = golden_refcnn(g, map);
    nn_param_list pl;
    ck_assert_int_eq(nn_param_list_get(m, &pl), AG_OK);
    ag_tensor *x = read_new(g, "x", 4, AG_SHAPE(8, 1, 8, 4), false);
    ag_tensor *labels64 = ag_tensor_new_dtype(AG_I64, 1, AG_SHAPE(8));
    read_into(g, "labels", labels64);
    int32_t labels[8];
    for (int i = 0; i < 8; i++)
        labels[i] = (int32_t)int_at(labels64, i);
    ag_ctx *ctx = ag_ctx_new();
    nn_zero_grad(m);
    ag_tensor *logits = nn_forward(m, ctx, x);
    ck_assert_msg(logits != NULL, "%s", ag_last_error());
    ag_tensor *loss = ag_cross_entropy(ctx, logits, labels, 0.0f);
    ck_assert_int_eq(ag_backward(ctx, loss), AG_OK);
    sgd_first_step(&pl, 0.01); // SGD(lr=0.01, momentum=0.9), step 1
    expect_golden(g, "logits", logits->data, logits->numel, 1e-5f, 1e-5f);
    expect_golden(g, "loss", loss->data, 1, 1e-5f, 0.0f);
    hid_t after = group_open(g, "after");
    expect_state(m, after, (state_tol){0, 4, .rtol = 1e-5f, .atol = 1e-6f});
    H5Gclose(after);
    ag_ctx_free(ctx);
    ag_tensor_free(labels64);
    ag_tensor_free(x);
    nn_param_list_deinit(&pl);
    nn_module_free(m);
    qat_qconfig_map_free(map);
    H5Gclose(g);
    H5Fclose(f);
}
END_TEST

START_TEST(prepared_refcnn_loads_pytorchs_state_dict)
{
    hid_t f = golden_open();
    hid_t g = group_open(f, "refcnn");
    qat_qconfig qc = named("fbgemm-qat");
    qat_qconfig_map *map = qat_qconfig_map_new(&qc);
    nn_module *m = golden_refcnn(g, map); // per-channel ranges still of shape [0]
    hid_t after = group_open(g, "after");
    ck_assert_msg(nn_state_load_h5(after, "golden after", m, NULL) == AG_OK, "%s",
                  ag_last_error());
    expect_state(m, after, (state_tol){0, 0, 0.0f, 0.0f});
    H5Gclose(after);
    nn_module_free(m);
    qat_qconfig_map_free(map);
    H5Gclose(g);
    H5Fclose(f);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("qat_modules");
    TCase *tc = tcase_create("qconfig");
    tcase_add_test(tc, fbgemm_qat_qconfig_is_pytorchs_default);
    tcase_add_test(tc, qconfig_versions_and_backends_differ_as_pytorch);
    tcase_add_test(tc, every_listed_qconfig_name_resolves);
    tcase_add_test(tc, unknown_qconfig_name_lists_the_known_ones);
    tcase_add_test(tc, set_bits_gives_4bit_ranges);
    tcase_add_test(tc, set_learnable_needs_a_qat_qconfig);
    tcase_add_test(tc, propagation_prefers_own_then_name_then_type_then_parent);
    tcase_add_test(tc, none_skips_a_subtree_unless_a_child_has_its_own);
    suite_add_tcase(s, tc);

    tc = tcase_create("fusion");
    tcase_add_test(tc, eval_fusion_folds_bn_like_torch);
    tcase_add_test(tc, eval_fusion_preserves_outputs);
    tcase_add_test(tc, every_fusion_pattern_keeps_eval_outputs);
    tcase_add_test(tc, qat_fusion_keeps_modules_in_containers);
    tcase_add_test(tc, fusion_errors_name_the_group_and_module);
    suite_add_tcase(s, tc);

    tc = tcase_create("modules");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, qat_module_matches_torch_in_training_and_frozen, 0,
                        (int)(sizeof golden_cases / sizeof golden_cases[0]));
    tcase_add_test(tc, frozen_bn_stays_frozen_through_train_and_eval);
    suite_add_tcase(s, tc);

    tc = tcase_create("prepare");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, prepare_qat_refuses_eval_mode);
    tcase_add_test(tc, prepare_observes_what_pytorch_observes);
    tcase_add_test(tc, quant_wrapper_runs_quant_module_dequant);
    tcase_add_test(tc, prepare_observes_fused_modules_as_a_whole);
    tcase_add_test(tc, from_float_failure_leaves_the_float_module);
    tcase_add_test(tc, modified_qconfigs_prepare_and_train);
    tcase_add_test(tc, prepared_refcnn_has_pytorchs_state_keys_in_order);
    tcase_add_test(tc, refcnn_qat_step_matches_torch);
    tcase_add_test(tc, conv_bn_fused_tail_matches_op_chain);
    tcase_add_test(tc, conv_bn_fused_tail_is_for_gradient_steps_only);
    tcase_add_test(tc, prepared_refcnn_loads_pytorchs_state_dict);
    suite_add_tcase(s, tc);
    return s;
}
