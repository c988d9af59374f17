/* test_qat_observer.c — qat/: observers, calculate_qparams, ChooseQuantizationParams, the
 * fake-quant ops and the three FakeQuantize modules against PyTorch 1.13 (golden file
 * written by tools/gen_qat_golden.py): scales and fake-quant outputs bit for bit, zero
 * points equal, learned-parameter gradients within 1e-6; state_dict keys and order;
 * loading lazily sized per-channel state; toggles; argument errors. */
#include "test_util.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ag_impl.h"
#include "nn/state_h5.h"
#include "qat/observer.h"

#define GOLDEN CQAT_TEST_DATA_DIR "/qat_golden.h5"

/* ---- reading the golden file ------------------------------------------------------ */

typedef struct arr {
    void *v;
    int32_t ndim;
    int64_t shape[AG_MAX_DIMS + 2];
    int64_t numel;
} arr;

static hid_t golden_open(void)
{
    nn_h5_quiet();
    hid_t f = nn_h5_open_read(GOLDEN);
    ck_assert_msg(f >= 0, "%s", ag_last_error());
    return f;
}

/* A whole dataset in the given memory type (H5T_NATIVE_FLOAT, _INT32, _DOUBLE...). */
static arr arr_read(hid_t g, const char *name, hid_t mtype)
{
    arr a = {0};
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    ck_assert_msg(ds >= 0, "no dataset '%s'", name);
    hid_t space = H5Dget_space(ds);
    hsize_t dims[AG_MAX_DIMS + 2] = {0};
    a.ndim = H5Sget_simple_extent_ndims(space);
    ck_assert_int_le(a.ndim, AG_MAX_DIMS + 2);
    H5Sget_simple_extent_dims(space, dims, NULL);
    a.numel = 1;
    for (int i = 0; i < a.ndim; i++) {
        a.shape[i] = (int64_t)dims[i];
        a.numel *= a.shape[i];
    }
    a.v = malloc((size_t)(a.numel ? a.numel : 1) * H5Tget_size(mtype));
    ck_assert_ptr_nonnull(a.v);
    ck_assert_int_ge(H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.v), 0);
    H5Sclose(space);
    H5Dclose(ds);
    return a;
}

static arr arr_f32(hid_t g, const char *name) { return arr_read(g, name, H5T_NATIVE_FLOAT); }
static float *f32(const arr *a) { return a->v; }

/* The group's "config" attribute: "key=value key=value ...". */
typedef struct config {
    char text[2048];
} config;

static config config_read(hid_t g, const char *label)
{
    config c;
    ck_assert_int_eq(nn_h5_read_attr_str(g, label, "config", c.text, sizeof c.text), AG_OK);
    return c;
}

static const char *config_find(const config *c, const char *key)
{
    size_t len = strlen(key);
    for (const char *p = c->text; (p = strstr(p, key)) != NULL; p += len)
        if ((p == c->text || p[-1] == ' ') && p[len] == '=')
            return p + len + 1;
    ck_abort_msg("config has no '%s': %s", key, c->text);
    return NULL;
}

static int64_t config_i(const config *c, const char *key)
{
    return strtoll(config_find(c, key), NULL, 10);
}

static double config_f(const config *c, const char *key)
{
    return strtod(config_find(c, key), NULL);
}

static bool config_is(const config *c, const char *key, const char *value)
{
    const char *v = config_find(c, key);
    return strncmp(v, value, strlen(value)) == 0;
}

/* The observer configuration the generator wrote, keys optionally prefixed. */
static qat_observer_cfg observer_cfg_from(const config *c, const char *prefix)
{
    char k[64];
#define GET_I(field) (snprintf(k, sizeof k, "%s" #field, prefix), config_i(c, k))
#define GET_F(field) (snprintf(k, sizeof k, "%s" #field, prefix), config_f(c, k))
    qat_observer_cfg o = qat_observer_cfg_default((qat_observer_kind)GET_I(kind));
    o.dtype = (qat_dtype)GET_I(dtype);
    o.qscheme = (qat_qscheme)GET_I(qscheme);
    o.reduce_range = GET_I(reduce_range) != 0;
    o.has_custom_range = GET_I(has_custom_range) != 0;
    o.quant_min = (int32_t)GET_I(quant_min);
    o.quant_max = (int32_t)GET_I(quant_max);
    o.eps = (float)GET_F(eps);
    o.averaging_constant = (float)GET_F(averaging_constant);
    o.ch_axis = (int32_t)GET_I(ch_axis);
    o.bins = (int32_t)GET_I(bins);
#undef GET_I
#undef GET_F
    return o;
}

/* Group names under `path` that start with `prefix`. */
typedef struct names {
    char name[64][96];
    int n;
} names;

static herr_t collect_name(hid_t g, const char *name, const H5L_info_t *info, void *ud)
{
    (void)g;
    (void)info;
    names *ns = ud;
    if (ns->n < 64)
        snprintf(ns->name[ns->n++], sizeof ns->name[0], "%s", name);
    return 0;
}

static names list_groups(hid_t f, const char *path, const char *prefix)
{
    names all = {0}, out = {0};
    hid_t g = H5Gopen2(f, path, H5P_DEFAULT);
    ck_assert_int_ge(g, 0);
    H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_name, &all);
    H5Gclose(g);
    for (int i = 0; i < all.n; i++)
        if (strncmp(all.name[i], prefix, strlen(prefix)) == 0)
            memcpy(out.name[out.n++], all.name[i], sizeof all.name[i]);
    ck_assert_int_gt(out.n, 0);
    return out;
}

/* ---- comparisons ------------------------------------------------------------------ */

/* Bit for bit (memcmp-equal floats), naming the first difference. */
static void expect_bits(const float *got, const float *want, int64_t n, const char *what,
                        const char *where)
{
    if (memcmp(got, want, (size_t)n * sizeof *got) == 0)
        return;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof *got) != 0)
            ck_abort_msg("%s: %s[%lld] = %.9g, PyTorch %.9g", where, what, (long long)i,
                         (double)got[i], (double)want[i]);
}

/* Equal as numbers (+0 == -0): running statistics, and input gradients, which PyTorch
 * writes as dy * mask (-0 where dy < 0) and cqat accumulates into zeros (+0). */
static void expect_equal(const float *got, const float *want, int64_t n, const char *what,
                         const char *where)
{
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(got[i] == want[i] || (isnan(got[i]) && isnan(want[i])),
                      "%s: %s[%lld] = %.9g, PyTorch %.9g", where, what, (long long)i,
                      (double)got[i], (double)want[i]);
}

/* |got - want| <= rel * |want| + abs. */
static void expect_close(const float *got, const float *want, int64_t n, double rel, double abs,
                         const char *what, const char *where)
{
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs((double)got[i] - want[i]) <= rel * fabs((double)want[i]) + abs,
                      "%s: %s[%lld] = %.9g, PyTorch %.9g", where, what, (long long)i,
                      (double)got[i], (double)want[i]);
}

static ag_tensor *tensor_from(const float *v, int32_t ndim, const int64_t *shape, bool grad)
{
    ag_tensor *t = ag_tensor_new(ndim, shape, grad);
    ck_assert_ptr_nonnull(t);
    memcpy(t->data, v, (size_t)t->numel * sizeof(float));
    return t;
}

/* ---- observers against PyTorch ----------------------------------------------------- */

/* qparams of an observer against row `step` of the (steps, 2, C) float64 golden. */
static void expect_observer_qparams(nn_module *obs, const double *qp, int64_t channels,
                                    const char *where)
{
    float scale[64];
    int32_t zp[64], n = 0;
    bool valid = false;
    ck_assert_msg(qat_observer_qparams(obs, scale, zp, 64, &n, &valid) == AG_OK, "%s: %s",
                  where, ag_last_error());
    ck_assert_msg(valid, "%s: qparams reported invalid", where);
    ck_assert_int_eq(n, channels);
    for (int64_t c = 0; c < channels; c++) {
        float want = (float)qp[c];
        expect_bits(&scale[c], &want, 1, "scale", where);
        ck_assert_msg(zp[c] == (int64_t)qp[channels + c], "%s: zero_point[%lld] = %d, PyTorch "
                      "%lld", where, (long long)c, (int)zp[c], (long long)qp[channels + c]);
    }
}

static void run_observer_case(hid_t f, const char *name)
{
    char path[160], where[200];
    snprintf(path, sizeof path, "/observers/%s", name);
    hid_t g = H5Gopen2(f, path, H5P_DEFAULT);
    config c = config_read(g, path);
    qat_observer_cfg oc = observer_cfg_from(&c, "");
    if (oc.kind == QAT_OBS_FIXED_QPARAMS) {
        oc.fixed_scale = (float)config_f(&c, "fixed_scale");
        oc.fixed_zero_point = (int32_t)config_i(&c, "fixed_zero_point");
    }
    const bool fresh = config_i(&c, "fresh") != 0;
    nn_module *obs = qat_observer_new(&oc);
    ck_assert_msg(obs != NULL, "%s: %s", name, ag_last_error());

    /* Before any input: PyTorch's defaults (scale 1, zero point 0). */
    float scale;
    int32_t zp, n;
    bool valid = true;
    ck_assert_int_eq(qat_observer_qparams(obs, &scale, &zp, 1, &n, &valid), AG_OK);
    ck_assert_float_eq(scale, (float)config_f(&c, "scale_init"));
    ck_assert_int_eq(zp, config_i(&c, "zp_init"));
    ck_assert(valid == (oc.kind == QAT_OBS_FIXED_QPARAMS));

    arr x = arr_f32(g, "x");
    arr shapes = arr_read(g, "shapes", H5T_NATIVE_INT64);
    arr qp = arr_read(g, "qparams", H5T_NATIVE_DOUBLE); /* (steps, 2, C) */
    bool has_stats = H5Lexists(g, "stats", H5P_DEFAULT) > 0;
    bool has_hist = H5Lexists(g, "hists", H5P_DEFAULT) > 0;
    arr stats = has_stats ? arr_f32(g, "stats") : (arr){0};
    arr hists = has_hist ? arr_f32(g, "hists") : (arr){0};
    const int64_t steps = shapes.shape[0], channels = qp.shape[2];
    int64_t offset = 0;
    for (int64_t k = 0; k < steps; k++) {
        const int64_t *sh = (const int64_t *)shapes.v + k * 6;
        snprintf(where, sizeof where, "%s step %lld", name, (long long)k);
        ag_tensor *xt = tensor_from(f32(&x) + offset, (int32_t)sh[0], sh + 1, false);
        offset += xt->numel;
        if (fresh && k > 0) {
            nn_module_free(obs);
            obs = qat_observer_new(&oc);
        }
        ck_assert_msg(nn_forward(obs, NULL, xt) == xt, "%s: %s", where, ag_last_error());
        if (has_stats) {
            ag_tensor *mn = nn_module_buffer(obs, "min_val"), *mx = nn_module_buffer(obs, "max_val");
            ck_assert_int_eq(mn->numel, channels);
            expect_equal(mn->data, f32(&stats) + (2 * k) * channels, channels, "min_val", where);
            expect_equal(mx->data, f32(&stats) + (2 * k + 1) * channels, channels, "max_val",
                         where);
        }
        if (has_hist) {
            ag_tensor *h = nn_module_buffer(obs, "histogram");
            expect_bits(h->data, f32(&hists) + k * h->numel, h->numel, "histogram", where);
        }
        expect_observer_qparams(obs, (const double *)qp.v + k * 2 * channels, channels, where);
        ag_tensor_free(xt);
    }
    free(x.v);
    free(shapes.v);
    free(qp.v);
    free(stats.v);
    free(hists.v);
    nn_module_free(obs);
    H5Gclose(g);
}

static void run_observer_cases(const char *prefix)
{
    hid_t f = golden_open();
    names ns = list_groups(f, "/observers", prefix);
    for (int i = 0; i < ns.n; i++)
        run_observer_case(f, ns.name[i]);
    H5Fclose(f);
}

START_TEST(minmax_observer_matches_pytorch_for_every_dtype_and_range)
{
    run_observer_cases("minmax_");
}
END_TEST

START_TEST(moving_average_observer_matches_pytorch_over_several_updates)
{
    run_observer_cases("moving_avg_");
}
END_TEST

START_TEST(per_channel_observers_match_pytorch_on_every_axis)
{
    run_observer_cases("per_channel_");
    run_observer_cases("moving_avg_per_channel_");
}
END_TEST

START_TEST(histogram_observer_matches_pytorch_merging_ranges)
{
    run_observer_cases("histogram_");
}
END_TEST

START_TEST(fixed_qparams_observer_returns_its_parameters)
{
    run_observer_cases("fixed_qparams_");
}
END_TEST

/* ---- calculate_qparams and ChooseQuantizationParams by hand ------------------------- */

START_TEST(calculate_qparams_affine_and_symmetric_by_hand)
{
    float mn[3] = {-1.0f, 0.0f, 0.5f}, mx[3] = {2.0f, 0.0f, 0.5f}, s[3];
    int32_t z[3];
    qat_calculate_qparams(mn, mx, 3, QAT_PER_CHANNEL_AFFINE, QAT_QUINT8, false, 0, 255, 0x1p-23f,
                          s, z);
    ck_assert_float_eq(s[0], 3.0f / 255.0f);
    ck_assert_int_eq(z[0], 85);           /* 0 - round(-1 / (3/255)) */
    ck_assert_float_eq(s[1], 0x1p-23f);   /* all zero: eps */
    ck_assert_int_eq(z[1], 0);
    ck_assert_float_eq(s[2], 0.5f / 255.0f); /* constant c > 0: range [0, c] */
    ck_assert_int_eq(z[2], 0);
    qat_calculate_qparams(mn, mx, 1, QAT_PER_TENSOR_SYMMETRIC, QAT_QINT8, false, -128, 127,
                          0x1p-23f, s, z);
    ck_assert_float_eq(s[0], 2.0f / 127.5f);
    ck_assert_int_eq(z[0], 0);
    qat_calculate_qparams(mn, mx, 1, QAT_PER_TENSOR_SYMMETRIC, QAT_QUINT8, false, 0, 255,
                          0x1p-23f, s, z);
    ck_assert_int_eq(z[0], 128);
    qat_calculate_qparams(mn, mx, 1, QAT_PER_TENSOR_SYMMETRIC, QAT_QUINT8, true, 0, 15, 0x1p-23f,
                          s, z);
    ck_assert_int_eq(z[0], 7); /* (0 + 15) // 2 */
}
END_TEST

START_TEST(choose_qparams_symmetric_scale_differs_from_convert)
{
    /* preserve_sparsity: max(|min| / 128, max / 127), zero point (qmin + qmax) / 2 -> 0,
     * whereas _calculate_qparams would give amax / 127.5. */
    float s;
    int32_t z;
    qat_choose_qparams(-1.28f, 0.5f, -128, 127, true, &s, &z);
    ck_assert_float_eq(s, (float)(double)(1.28f / 128.0f));
    ck_assert_int_eq(z, 0);
    /* A channel that is all positive stays affine even when symmetric. */
    qat_choose_qparams(0.25f, 1.0f, -128, 127, true, &s, &z);
    ck_assert_float_eq(s, (float)(1.0 / 255.0));
    ck_assert_int_eq(z, -128);
    /* Zero range: scale 0.1; tiny range: the 6.1e-5 floor. */
    qat_choose_qparams(0.0f, 0.0f, 0, 255, false, &s, &z);
    ck_assert_float_eq(s, 0.1f);
    ck_assert_int_eq(z, 0);
    qat_choose_qparams(0.0f, 1e-4f, 0, 255, false, &s, &z);
    ck_assert_float_eq(s, 6.1e-5f);
    ck_assert_int_eq(z, 0);
}
END_TEST

START_TEST(observer_range_rules_follow_calculate_qmin_qmax)
{
    int32_t lo, hi;
    qat_observer_cfg c = qat_observer_cfg_default(QAT_OBS_MINMAX);
    c.reduce_range = true;
    ck_assert_int_eq(qat_observer_cfg_range(&c, &lo, &hi), AG_OK);
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, 127);
    c.dtype = QAT_QINT8;
    c.has_custom_range = true;
    c.quant_min = -7;
    c.quant_max = 7;
    ck_assert_int_eq(qat_observer_cfg_range(&c, &lo, &hi), AG_OK);
    ck_assert_int_eq(lo, -4); /* -7 // 2, Python floor division */
    ck_assert_int_eq(hi, 3);
    c.quant_min = 1;
    ck_assert_int_eq(qat_observer_cfg_range(&c, &lo, &hi), AG_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "must include 0"));
    c = qat_observer_cfg_default(QAT_OBS_MINMAX);
    c.qscheme = QAT_PER_TENSOR_SYMMETRIC;
    c.reduce_range = true;
    ck_assert_int_eq(qat_observer_cfg_range(&c, &lo, &hi), AG_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "symmetric"));
    c = qat_observer_cfg_default(QAT_OBS_PER_CHANNEL_MINMAX);
    c.qscheme = QAT_PER_TENSOR_AFFINE;
    ck_assert_ptr_null(qat_observer_new(&c));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "per-channel"));
}
END_TEST

START_TEST(observer_buffers_start_like_pytorch)
{
    qat_observer_cfg c = qat_observer_cfg_default(QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX);
    nn_module *pc = qat_observer_new(&c);
    ag_tensor *mn = nn_module_buffer(pc, "min_val");
    ck_assert_int_eq(mn->ndim, 1);
    ck_assert_int_eq(mn->shape[0], 0);
    ck_assert(mn->flags & AG_F_RESIZABLE);
    ck_assert_float_eq(nn_module_buffer(pc, "eps")->data[0], 0x1p-23f);
    c = qat_observer_cfg_default(QAT_OBS_MINMAX);
    nn_module *mm = qat_observer_new(&c);
    mn = nn_module_buffer(mm, "min_val");
    ck_assert_int_eq(mn->ndim, 0);
    ck_assert(isinf(mn->data[0]) && mn->data[0] > 0);
    ck_assert(isinf(nn_module_buffer(mm, "max_val")->data[0]));
    ck_assert_str_eq(nn_module_type(mm), "MinMaxObserver");
    ck_assert(qat_is_observer(mm) && !qat_is_fake_quant(mm));
    /* A per-channel observer fed a new channel count refuses it. */
    ag_tensor *x = tu_rand(2, AG_SHAPE(3, 4), -1.0f, 1.0f, 1, false);
    ag_tensor *x2 = tu_rand(2, AG_SHAPE(5, 4), -1.0f, 1.0f, 2, false);
    ck_assert_int_eq(qat_observer_observe(pc, x), AG_OK);
    ck_assert_int_eq(nn_module_buffer(pc, "min_val")->shape[0], 3);
    ck_assert_int_eq(qat_observer_observe(pc, x2), AG_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "5 channels"));
    ag_tensor_free(x);
    ag_tensor_free(x2);
    nn_module_free(pc);
    nn_module_free(mm);
}
END_TEST

START_TEST(placeholder_observer_has_no_qparams)
{
    qat_observer_cfg c = qat_observer_cfg_default(QAT_OBS_PLACEHOLDER);
    nn_module *p = qat_observer_new(&c);
    float s;
    int32_t z, n;
    ck_assert_int_eq(qat_observer_qparams(p, &s, &z, 1, &n, NULL), AG_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "PlaceholderObserver"));
    ck_assert_int_eq(p->n_buffers, 0);
    nn_module_free(p);
}
END_TEST

/* ---- fake-quant ops ------------------------------------------------------------------ */

static void run_fq_op_case(hid_t f, const char *name)
{
    char path[160];
    snprintf(path, sizeof path, "/fq_ops/%s", name);
    hid_t g = H5Gopen2(f, path, H5P_DEFAULT);
    config c = config_read(g, path);
    arr data = arr_f32(g, "data"); /* (4, ...): x, dy, y, dx */
    const int32_t ndim = data.ndim - 1;
    const int64_t n = data.numel / 4;
    const int32_t qmin = (int32_t)config_i(&c, "qmin"), qmax = (int32_t)config_i(&c, "qmax");
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tensor_from(f32(&data), ndim, data.shape + 1, true);
    ag_tensor *y;
    arr scales = {0}, zps = {0};
    if (config_i(&c, "per_channel")) {
        scales = arr_f32(g, "scales");
        zps = arr_read(g, "zps", H5T_NATIVE_INT32);
        y = qat_fake_quantize_per_channel(ctx, x, scales.v, zps.v, (int32_t)config_i(&c, "axis"),
                                          qmin, qmax);
    } else {
        y = qat_fake_quantize_per_tensor(ctx, x, (float)config_f(&c, "scale"),
                                         (int32_t)config_i(&c, "zero_point"), qmin, qmax);
    }
    ck_assert_msg(y != NULL, "%s: %s", name, ag_last_error());
    expect_bits(y->data, f32(&data) + 2 * n, n, "y", name);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, f32(&data) + n), AG_OK);
    expect_equal(x->grad, f32(&data) + 3 * n, n, "dx", name);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
    free(data.v);
    free(scales.v);
    free(zps.v);
    H5Gclose(g);
}

START_TEST(fake_quant_ops_match_pytorch_on_ties_bounds_and_specials)
{
    hid_t f = golden_open();
    names ns = list_groups(f, "/fq_ops", "");
    for (int i = 0; i < ns.n; i++)
        run_fq_op_case(f, ns.name[i]);
    H5Fclose(f);
}
END_TEST

START_TEST(fake_quant_grad_is_zero_only_when_rounding_leaves_the_range)
{
    /* scale 0.01, 0..127: 1.27 rounds onto 127 (kept), 1.275 rounds to 128 (dropped). */
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_param_new(1, AG_SHAPE(4));
    const float v[4] = {1.27f, 1.275f, -0.004f, -0.006f};
    memcpy(x->data, v, sizeof v);
    ag_tensor *y = qat_fake_quantize_per_tensor(ctx, x, 0.01f, 0, 0, 127);
    ck_assert_float_eq(y->data[0], 127 * 0.01f);
    ck_assert_float_eq(y->data[1], 127 * 0.01f);
    ck_assert_float_eq(y->data[2], 0.0f);
    ck_assert_float_eq(y->data[3], 0.0f);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, (const float[]){1, 1, 1, 1}), AG_OK);
    ck_assert_float_eq(x->grad[0], 1.0f);
    ck_assert_float_eq(x->grad[1], 0.0f);
    ck_assert_float_eq(x->grad[2], 1.0f); /* rounds to -0: inside */
    ck_assert_float_eq(x->grad[3], 0.0f); /* rounds to -1: outside */
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(fake_quant_rounds_half_to_even_like_nearbyintf)
{
    /* Scale 1, zero point 0, a 2^25-wide range: y is the rounded value itself. */
    enum { N = 2000 };
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(1, AG_SHAPE(N), -3e7f, 3e7f, 8, false);
    const float special[] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 0x1p22f + 0.5f,
                             0x1p23f - 0.5f, -(0x1p23f - 0.5f), 0x1p23f + 1.0f, 0x1p24f,
                             -0x1p24f, 1e-30f, -0.0f, 0.49999997f, 8388607.5f, 3.5f};
    for (int i = 0; i < (int)(sizeof special / sizeof *special); i++)
        x->data[i] = special[i];
    for (int i = 100; i < 600; i++) /* halves of all sizes */
        x->data[i] = (float)(i - 350) + 0.5f;
    ag_tensor *y = qat_fake_quantize_per_tensor(ctx, x, 1.0f, 0, -(1 << 24), 1 << 24);
    for (int i = 0; i < N; i++) {
        float want = nearbyintf(x->data[i]);
        want = want < -0x1p24f ? -0x1p24f : want > 0x1p24f ? 0x1p24f : want;
        ck_assert_msg(y->data[i] == want, "x = %.9g: %.9g, nearbyintf %.9g", (double)x->data[i],
                      (double)y->data[i], (double)want);
    }
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(fake_quant_large_tensor_matches_element_by_element)
{
    /* Above the OpenMP threshold, per tensor and per channel. */
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(3, AG_SHAPE(3, 301, 97), -3.0f, 3.0f, 7, true);
    const float scales[3] = {0.02f, 0.013f, 0.05f};
    const int32_t zps[3] = {3, -5, 0};
    ag_tensor *yt = qat_fake_quantize_per_tensor(ctx, x, 0.021f, 1, -128, 127);
    ag_tensor *yc = qat_fake_quantize_per_channel(ctx, x, scales, zps, 0, -128, 127);
    ck_assert_ptr_nonnull(yt);
    ck_assert_ptr_nonnull(yc);
    for (int64_t i = 0; i < x->numel; i += 997) {
        ag_tensor *xi = ag_ctx_tensor(ctx, 1, AG_SHAPE(1));
        xi->data[0] = x->data[i];
        int64_t c = i / (301 * 97);
        ag_tensor *a = qat_fake_quantize_per_tensor(ctx, xi, 0.021f, 1, -128, 127);
        ag_tensor *b = qat_fake_quantize_per_tensor(ctx, xi, scales[c], zps[c], -128, 127);
        ck_assert_float_eq(yt->data[i], a->data[0]);
        ck_assert_float_eq(yc->data[i], b->data[0]);
    }
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* The kernel of ATen's fake_quantize_tensor_cachemask, one value at a time, with
 * x86's float -> int64 conversion (NaN and out-of-range values become INT64_MIN). */
static float ref_fq(float x, float scale, int32_t zp, int32_t qmin, int32_t qmax, float *mask)
{
    const float qf = (float)zp + nearbyintf(x * (1.0f / scale));
    const int64_t q = qf >= -0x1p63f && qf < 0x1p63f ? (int64_t)qf : INT64_MIN;
    *mask = (float)(qmin <= q && q <= qmax);
    const int64_t c = q < qmin ? qmin : q > qmax ? qmax : q;
    return (float)(c - zp) * scale;
}

START_TEST(fake_quant_and_aminmax_match_one_value_at_a_time_at_every_length)
{
    /* Every length up to 40 (vector bodies and every remainder) with specials at every
     * position: the vector kernels must give the scalar formula's bits, including for
     * the values past the last full vector. */
    static const float special[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 3e19f, -3e19f,
                                    1e30f, 6e16f, 0.125f, 0.375f, -0.125f, 1.275f};
    ag_ctx *ctx = ag_ctx_new();
    for (int64_t n = 1; n <= 40; n++) {
        for (int64_t at = 0; at < n; at += 3) {
            ag_tensor *x = tu_rand(1, AG_SHAPE(n), -2.0f, 2.0f, (uint64_t)(n * 41 + at), true);
            x->data[at] = special[(n + at) % (sizeof special / sizeof *special)];
            ag_tensor *y = qat_fake_quantize_per_tensor(ctx, x, 0.01f, 3, -128, 127);
            ck_assert_ptr_nonnull(y);
            ag_tensor *seed = tu_rand(1, AG_SHAPE(n), -1.0f, 1.0f, 99, false);
            const float *dy = seed->data;
            ck_assert_int_eq(ag_backward_seeded(ctx, y, dy), AG_OK);
            float lo = INFINITY, hi = -INFINITY, got_lo, got_hi;
            bool nan = false;
            for (int64_t i = 0; i < n; i++) {
                float mask, want = ref_fq(x->data[i], 0.01f, 3, -128, 127, &mask);
                ck_assert_msg(memcmp(&y->data[i], &want, sizeof want) == 0,
                              "n %d, x[%d] = %g: y %g, want %g", (int)n, (int)i,
                              (double)x->data[i], (double)y->data[i], (double)want);
                float want_dx = 0.0f + dy[i] * mask; /* added into a zeroed gradient */
                ck_assert_msg(memcmp(&x->grad[i], &want_dx, sizeof want_dx) == 0,
                              "n %d, x[%d] = %g: dx %g, want %g", (int)n, (int)i,
                              (double)x->data[i], (double)x->grad[i], (double)want_dx);
                nan |= isnan(x->data[i]);
                lo = x->data[i] < lo ? x->data[i] : lo;
                hi = x->data[i] > hi ? x->data[i] : hi;
            }
            qat_aminmax(x->data, n, &got_lo, &got_hi);
            if (nan) {
                ck_assert(isnan(got_lo) && isnan(got_hi));
            } else {
                ck_assert_float_eq(got_lo, lo);
                ck_assert_float_eq(got_hi, hi);
            }
            ag_tensor_free(seed);
            ag_tensor_free(x);
            ag_ctx_reset(ctx);
        }
    }
    ag_ctx_free(ctx);
}
END_TEST

START_TEST(fake_quant_ops_refuse_bad_arguments)
{
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(2, 3), -1.0f, 1.0f, 3, true);
    ck_assert_ptr_null(qat_fake_quantize_per_tensor(ctx, x, 0.1f, 300, 0, 255));
    ck_assert_str_eq(ag_last_error(), "fake_quantize_per_tensor_affine: zero_point 300 must be "
                                      "between quant_min 0 and quant_max 255");
    ck_assert_ptr_null(qat_fake_quantize_per_tensor(ctx, x, 0.1f, 0, 5, 4));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "quant_min 5 should be less than or equal"));
    const float s[3] = {0.1f, 0.1f, 0.1f};
    const int32_t z[3] = {0, 0, 0};
    ck_assert_ptr_null(qat_fake_quantize_per_channel(ctx, x, s, z, 2, 0, 255));
    ck_assert_str_eq(ag_last_error(), "fake_quantize_per_channel_affine: axis 2 must be between "
                                      "0 and the number of dimensions of input [2, 3]");
    ag_error_clear();
    ck_assert_ptr_null(qat_fake_quantize_per_tensor(ctx, NULL, 0.1f, 0, 0, 255));
    ck_assert_str_eq(ag_last_error(), "");
    /* no_grad: nothing recorded. */
    ag_no_grad_begin(ctx);
    ag_tensor *y = qat_fake_quantize_per_channel(ctx, x, s, z, 1, 0, 255);
    ag_no_grad_end(ctx);
    ck_assert_ptr_null(y->node);
    ck_assert_int_eq(ag_ctx_tape_len(ctx), 0);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
}
END_TEST

/* ---- FakeQuantize modules ------------------------------------------------------------ */

static void run_fq_module_case(hid_t f, const char *name)
{
    char path[160], where[200];
    snprintf(path, sizeof path, "/fq_modules/%s", name);
    hid_t g = H5Gopen2(f, path, H5P_DEFAULT);
    config c = config_read(g, path);
    qat_fq_cfg fc = {.kind = (qat_fq_kind)config_i(&c, "fq_kind"),
                     .obs = observer_cfg_from(&c, "obs_")};
    nn_module *fq = qat_fake_quant_new(&fc);
    ck_assert_msg(fq != NULL, "%s: %s", name, ag_last_error());
    arr data = arr_f32(g, "data");     /* (4, steps, ...): x, dy, y, dx */
    arr flags = arr_read(g, "flags", H5T_NATIVE_INT32);
    arr qp = arr_f32(g, "qparams");    /* (steps, 2, C) */
    arr calc = arr_f32(g, "calc");     /* (2, C) */
    bool has_stats = H5Lexists(g, "stats", H5P_DEFAULT) > 0;
    arr stats = has_stats ? arr_f32(g, "stats") : (arr){0};
    const int64_t steps = data.shape[1], n = data.numel / (4 * steps), C = qp.shape[2];
    ag_ctx *ctx = ag_ctx_new();
    for (int64_t k = 0; k < steps; k++) {
        snprintf(where, sizeof where, "%s step %lld", name, (long long)k);
        const int32_t *fl = (const int32_t *)flags.v + 2 * k;
        qat_fake_quant_enable_observer(fq, fl[0]);
        qat_fake_quant_enable_fake_quant(fq, fl[1]);
        ag_tensor *x = tensor_from(f32(&data) + k * n, data.ndim - 2, data.shape + 2, true);
        ag_tensor *y = nn_forward(fq, ctx, x);
        ck_assert_msg(y != NULL, "%s: %s", where, ag_last_error());
        expect_bits(y->data, f32(&data) + (2 * steps + k) * n, n, "y", where);
        if (fl[1]) {
            ck_assert_int_eq(ag_backward_seeded(ctx, y, f32(&data) + (steps + k) * n), AG_OK);
            expect_equal(x->grad, f32(&data) + (3 * steps + k) * n, n, "dx", where);
        } else { /* fake quant off: the identity, dx = dy */
            ck_assert_ptr_eq(y, x);
            expect_equal(f32(&data) + (steps + k) * n, f32(&data) + (3 * steps + k) * n, n, "dx",
                         where);
        }
        /* The scale / zero_point buffers after the step. */
        float scale[64];
        int32_t zp[64], cnt = 0;
        ck_assert_int_eq(qat_fake_quant_qparams(fq, scale, zp, 64, &cnt), AG_OK);
        ck_assert_int_eq(cnt, C);
        expect_bits(scale, f32(&qp) + 2 * k * C, C, "scale", where);
        for (int64_t i = 0; i < C; i++)
            ck_assert_msg(zp[i] == (int32_t)f32(&qp)[(2 * k + 1) * C + i],
                          "%s: zero_point[%lld] = %d, PyTorch %g", where, (long long)i, zp[i],
                          (double)f32(&qp)[(2 * k + 1) * C + i]);
        if (has_stats) {
            nn_module *obs = nn_module_find(fq, "activation_post_process");
            ag_tensor *mn = nn_module_buffer(obs, "min_val"), *mx = nn_module_buffer(obs, "max_val");
            int64_t sc = stats.shape[2];
            ck_assert_int_eq(mn->numel, sc);
            expect_equal(mn->data, f32(&stats) + 2 * k * sc, sc, "min_val", where);
            expect_equal(mx->data, f32(&stats) + (2 * k + 1) * sc, sc, "max_val", where);
        }
        ag_tensor_free(x);
        ag_ctx_reset(ctx);
    }
    /* calculate_qparams() of the module: its observer's (what convert uses). */
    float scale[64];
    int32_t zp[64], cnt = 0;
    ck_assert_int_eq(qat_observer_qparams(nn_module_find(fq, "activation_post_process"), scale,
                                          zp, 64, &cnt, NULL), AG_OK);
    ck_assert_int_eq(cnt, calc.shape[1]);
    snprintf(where, sizeof where, "%s calculate_qparams", name);
    expect_bits(scale, f32(&calc), cnt, "scale", where);
    for (int32_t i = 0; i < cnt; i++)
        ck_assert_int_eq(zp[i], (int32_t)f32(&calc)[cnt + i]);
    ag_ctx_free(ctx);
    nn_module_free(fq);
    free(data.v);
    free(flags.v);
    free(qp.v);
    free(calc.v);
    free(stats.v);
    H5Gclose(g);
}

static void run_fq_module_cases(const char *prefix)
{
    hid_t f = golden_open();
    names ns = list_groups(f, "/fq_modules", prefix);
    for (int i = 0; i < ns.n; i++)
        run_fq_module_case(f, ns.name[i]);
    H5Fclose(f);
}

START_TEST(fake_quantize_matches_pytorch_training_then_frozen)
{
    run_fq_module_cases("fq_");
}
END_TEST

START_TEST(fused_fake_quantize_matches_pytorch_scale_sequence)
{
    run_fq_module_cases("fused_");
}
END_TEST

START_TEST(fused_fake_quant_without_observations_refuses_to_quantize)
{
    qat_fq_cfg c = {.kind = QAT_FQ_FUSED, .obs = qat_observer_cfg_default(QAT_OBS_MOVING_AVG_MINMAX)};
    nn_module *fq = qat_fake_quant_new(&c);
    qat_fake_quant_enable_observer(fq, false);
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(1, AG_SHAPE(5), -1.0f, 1.0f, 4, false);
    ck_assert_ptr_null(nn_forward(fq, ctx, x));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "ChooseQuantizationParams"));
    qat_fake_quant_enable_fake_quant(fq, false); /* then it is the identity */
    ck_assert_ptr_eq(nn_forward(fq, ctx, x), x);
    /* Its range defaults to PyTorch's quant_min 0, quant_max 255. */
    int32_t lo, hi;
    qat_fake_quant_range(fq, &lo, &hi);
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, 255);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
    nn_module_free(fq);
}
END_TEST

START_TEST(fake_quant_constructors_refuse_what_pytorch_refuses)
{
    qat_fq_cfg c = {.kind = QAT_FQ_FUSED, .obs = qat_observer_cfg_default(QAT_OBS_HISTOGRAM)};
    ck_assert_ptr_null(qat_fake_quant_new(&c));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "MovingAverageMinMaxObserver"));
    c.obs = qat_observer_cfg_default(QAT_OBS_MOVING_AVG_MINMAX);
    c.obs.dtype = QAT_QINT8; /* default range 0..255 does not fit qint8 */
    ck_assert_ptr_null(qat_fake_quant_new(&c));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "out of the dtype's bounds"));
    c.kind = QAT_FQ_LEARNABLE;
    c.obs = qat_observer_cfg_default(QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX);
    ck_assert_ptr_null(qat_fake_quant_new(&c));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "channel_len"));
    c.kind = QAT_FQ_STANDARD;
    c.obs = qat_observer_cfg_default(QAT_OBS_PLACEHOLDER);
    ck_assert_ptr_null(qat_fake_quant_new(&c));
}
END_TEST

/* ---- _LearnableFakeQuantize ---------------------------------------------------------- */

/* Per channel, the sum of |dscale| and |dzp| terms (approximately: xq = rint(x / s + zp)),
 * which bounds the rounding error of summing them in float. */
static void lsq_term_magnitudes(const arr *data, int32_t axis, bool per_channel,
                                const float *scale, const float *zp, nn_module *fq,
                                double *abs_s, double *abs_z)
{
    int32_t qmin, qmax;
    qat_fake_quant_range(fq, &qmin, &qmax);
    const int32_t ndim = data->ndim - 1;
    const int64_t *shape = data->shape + 1, n = data->numel / 4;
    const int64_t channels = per_channel ? shape[axis] : 1;
    const int64_t inner = per_channel ? ag_shape_numel(ndim - axis - 1, shape + axis + 1) : n;
    const bool grad_scaling = qat_fake_quant_config(fq)->use_grad_scaling;
    const double gf = grad_scaling ? 1.0 / sqrt((double)n * qmax) : 1.0;
    const float *x = data->v, *dy = (const float *)data->v + n;
    for (int64_t i = 0; i < n; i++) {
        int64_t c = (i / inner) % channels;
        double z = fmin(fmax(rint(zp[c]), qmin), qmax), s = scale[c];
        double xq = rint(x[i] / s + z);
        if (xq < qmin || xq > qmax) {
            abs_s[c] += fabs(dy[i] * ((xq < qmin ? qmin : qmax) - z) * gf);
            abs_z[c] += fabs(dy[i] * s * gf);
        } else {
            abs_s[c] += fabs(dy[i] * ((xq - z) * s - x[i]) / s * gf);
        }
    }
}

static void run_learnable_case(hid_t f, const char *name)
{
    char path[160];
    snprintf(path, sizeof path, "/learnable/%s", name);
    hid_t g = H5Gopen2(f, path, H5P_DEFAULT);
    config c = config_read(g, path);
    qat_fq_cfg fc = {.kind = QAT_FQ_LEARNABLE, .obs = observer_cfg_from(&c, "obs_"),
                     .use_grad_scaling = config_i(&c, "use_grad_scaling") != 0,
                     .channel_len = (int32_t)config_i(&c, "channel_len")};
    nn_module *fq = qat_fake_quant_new(&fc);
    ck_assert_msg(fq != NULL, "%s: %s", name, ag_last_error());
    if (config_is(&c, "mode", "learn")) {
        qat_learnable_fq_enable_param_learning(fq);
    } else {
        qat_learnable_fq_enable_static_estimate(fq);
        qat_learnable_fq_toggle_learning(fq, true);
    }
    arr data = arr_f32(g, "data");     /* (4, ...): x, dy, y, dx */
    arr params = arr_f32(g, "params"); /* (6, L) */
    const int64_t n = data.numel / 4, L = params.shape[1];
    ag_tensor *scale = nn_module_param(fq, "scale"), *zp = nn_module_param(fq, "zero_point");
    ck_assert_int_eq(scale->numel, L);
    memcpy(scale->data, f32(&params), (size_t)L * sizeof(float));
    memcpy(zp->data, f32(&params) + L, (size_t)L * sizeof(float));
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tensor_from(f32(&data), data.ndim - 1, data.shape + 1, true);
    ag_tensor *y = nn_forward(fq, ctx, x);
    ck_assert_msg(y != NULL, "%s: %s", name, ag_last_error());
    expect_bits(y->data, f32(&data) + 2 * n, n, "y", name);
    ck_assert_int_eq(ag_backward_seeded(ctx, y, f32(&data) + n), AG_OK);
    expect_equal(x->grad, f32(&data) + 3 * n, n, "dx", name);
    /* Sums over the elements: PyTorch adds float32 in its own order, cqat in double; both
     * are within float rounding of the sum of the terms' magnitudes. */
    double abs_s[128] = {0}, abs_z[128] = {0};
    lsq_term_magnitudes(&data, fc.obs.ch_axis, L > 1 || fc.channel_len > 0, f32(&params) + 4 * L,
                        f32(&params) + 5 * L, fq, abs_s, abs_z);
    for (int64_t i = 0; i < L; i++) {
        expect_close(&scale->grad[i], f32(&params) + 2 * L + i, 1, 1e-6, 1e-6 * abs_s[i],
                     "dscale", name);
        expect_close(&zp->grad[i], f32(&params) + 3 * L + i, 1, 1e-6, 1e-6 * abs_z[i],
                     "dzero_point", name);
    }
    if (L == n) { /* one element per channel: single terms, no summation order */
        expect_equal(scale->grad, f32(&params) + 2 * L, L, "dscale (per element)", name);
        expect_equal(zp->grad, f32(&params) + 3 * L, L, "dzero_point (per element)", name);
    }
    expect_bits(scale->data, f32(&params) + 4 * L, L, "scale after", name);
    expect_bits(zp->data, f32(&params) + 5 * L, L, "zero_point after", name);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
    nn_module_free(fq);
    free(data.v);
    free(params.v);
    H5Gclose(g);
}

START_TEST(learnable_fake_quant_gradients_match_pytorch)
{
    hid_t f = golden_open();
    names ns = list_groups(f, "/learnable", "");
    for (int i = 0; i < ns.n; i++)
        run_learnable_case(f, ns.name[i]);
    H5Fclose(f);
}
END_TEST

START_TEST(learnable_modes_set_flags_and_requires_grad)
{
    qat_fq_cfg c = {.kind = QAT_FQ_LEARNABLE, .obs = qat_observer_cfg_default(QAT_OBS_MOVING_AVG_MINMAX)};
    nn_module *fq = qat_fake_quant_new(&c);
    ag_tensor *scale = nn_module_param(fq, "scale");
    const uint8_t *learning = (const uint8_t *)nn_module_buffer(fq, "learning_enabled")->data;
    const uint8_t *stat = (const uint8_t *)nn_module_buffer(fq, "static_enabled")->data;
    const uint8_t *fqe = (const uint8_t *)nn_module_buffer(fq, "fake_quant_enabled")->data;
    ck_assert_int_eq(learning[0], 0); /* PyTorch's defaults */
    ck_assert_int_eq(stat[0], 1);
    qat_learnable_fq_enable_param_learning(fq);
    ck_assert(learning[0] == 1 && stat[0] == 0 && fqe[0] == 1);
    ck_assert(scale->flags & AG_F_REQUIRES_GRAD);
    qat_learnable_fq_enable_static_observation(fq);
    ck_assert(learning[0] == 0 && stat[0] == 1 && fqe[0] == 0);
    ck_assert(!(scale->flags & AG_F_REQUIRES_GRAD));
    /* enable_observer on a learnable module means static_enabled. */
    qat_fake_quant_enable_observer(fq, false);
    ck_assert_int_eq(stat[0], 0);
    ck_assert_int_eq(((const uint8_t *)nn_module_buffer(fq, "observer_enabled")->data)[0], 1);
    nn_module_free(fq);
}
END_TEST

/* ---- state_dict keys and loading ------------------------------------------------------- */

typedef struct key_text {
    char s[1024];
} key_text;

static bool append_key(void *ud, const char *key, ag_tensor *t, nn_state_kind kind)
{
    (void)t;
    (void)kind;
    key_text *k = ud;
    size_t len = strlen(k->s);
    snprintf(k->s + len, sizeof k->s - len, "%s%s", len ? "\n" : "", key);
    return true;
}

static nn_module *module_named(const char *type)
{
    if (strstr(type, "Observer")) {
        static const char *const kinds[] = {"MinMaxObserver", "MovingAverageMinMaxObserver",
                                            "PerChannelMinMaxObserver",
                                            "MovingAveragePerChannelMinMaxObserver",
                                            "HistogramObserver", "PlaceholderObserver",
                                            "FixedQParamsObserver"};
        for (int k = 0; k < 7; k++)
            if (strcmp(type, kinds[k]) == 0) {
                qat_observer_cfg c = qat_observer_cfg_default((qat_observer_kind)k);
                return qat_observer_new(&c);
            }
    }
    qat_fq_cfg c = {.kind = QAT_FQ_STANDARD, .obs = qat_observer_cfg_default(QAT_OBS_MOVING_AVG_MINMAX)};
    if (strcmp(type, "FakeQuantize_per_channel") == 0) {
        c.obs = qat_observer_cfg_default(QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX);
        c.obs.dtype = QAT_QINT8;
        c.obs.qscheme = QAT_PER_CHANNEL_SYMMETRIC;
        c.obs.has_custom_range = true;
        c.obs.quant_min = -128;
        c.obs.quant_max = 127;
    } else if (strcmp(type, "FixedQParamsFakeQuantize") == 0) {
        c.obs = qat_observer_cfg_default(QAT_OBS_FIXED_QPARAMS);
    } else if (strcmp(type, "FusedMovingAvgObsFakeQuantize") == 0) {
        c.kind = QAT_FQ_FUSED;
    } else if (strcmp(type, "_LearnableFakeQuantize") == 0) {
        c.kind = QAT_FQ_LEARNABLE;
    }
    return qat_fake_quant_new(&c);
}

static herr_t check_keys(hid_t loc, const char *attr, const H5A_info_t *info, void *ud)
{
    (void)info;
    (void)ud;
    char want[1024];
    ck_assert_int_eq(nn_h5_read_attr_str(loc, "state_keys", attr, want, sizeof want), AG_OK);
    nn_module *m = module_named(attr);
    ck_assert_msg(m != NULL, "%s: %s", attr, ag_last_error());
    key_text got = {{0}};
    nn_state_foreach(m, append_key, &got);
    ck_assert_msg(strcmp(got.s, want) == 0, "%s keys:\n%s\nPyTorch:\n%s", attr, got.s, want);
    if (strcmp(attr, "FakeQuantize_per_channel") != 0)
        ck_assert_str_eq(nn_module_type(m), attr);
    nn_module_free(m);
    return 0;
}

START_TEST(state_dict_keys_and_order_match_pytorch)
{
    hid_t f = golden_open();
    hid_t g = H5Gopen2(f, "/state_keys", H5P_DEFAULT);
    hsize_t idx = 0;
    ck_assert_int_ge(H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, &idx, check_keys, NULL), 0);
    ck_assert_int_eq(idx, 12);
    H5Gclose(g);
    H5Fclose(f);
}
END_TEST

static void expect_state_qparams(hid_t f, const char *name, nn_module *obs)
{
    char path[160];
    snprintf(path, sizeof path, "/state_expect/%s", name);
    hid_t g = H5Gopen2(f, path, H5P_DEFAULT);
    arr s = arr_f32(g, "scale");
    arr z = arr_read(g, "zp", H5T_NATIVE_INT32);
    float scale[16];
    int32_t zp[16], n = 0;
    ck_assert_int_eq(qat_observer_qparams(obs, scale, zp, 16, &n, NULL), AG_OK);
    ck_assert_int_eq(n, s.numel);
    expect_bits(scale, f32(&s), n, "scale", name);
    ck_assert_int_eq(memcmp(zp, z.v, (size_t)n * sizeof *zp), 0);
    free(s.v);
    free(z.v);
    H5Gclose(g);
}

START_TEST(per_channel_state_loads_with_shape_zero_or_c)
{
    hid_t f = golden_open();
    hid_t observed = H5Gopen2(f, "/state_load/per_channel_observed", H5P_DEFAULT);
    hid_t fresh = H5Gopen2(f, "/state_load/per_channel_fresh", H5P_DEFAULT);
    qat_observer_cfg c = qat_observer_cfg_default(QAT_OBS_PER_CHANNEL_MINMAX);
    c.dtype = QAT_QINT8;
    c.qscheme = QAT_PER_CHANNEL_SYMMETRIC;
    nn_module *obs = qat_observer_new(&c);
    /* (0) -> (5): PyTorch's observed state into a fresh observer. */
    ck_assert_msg(nn_state_load_h5(observed, "observed", obs, NULL) == AG_OK, "%s",
                  ag_last_error());
    ck_assert_int_eq(nn_module_buffer(obs, "min_val")->shape[0], 5);
    expect_state_qparams(f, "per_channel_observed", obs);
    /* (5) -> (0): a fresh state makes it unobserved again. */
    ck_assert_msg(nn_state_load_h5(fresh, "fresh", obs, NULL) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(nn_module_buffer(obs, "min_val")->numel, 0);
    float s;
    int32_t z, n;
    bool valid = true;
    ck_assert_int_eq(qat_observer_qparams(obs, &s, &z, 1, &n, &valid), AG_OK);
    ck_assert(!valid);
    nn_module_free(obs);
    /* A per-channel FakeQuantize: scale / zero_point (1) -> (5) as well. */
    nn_module *fq = module_named("FakeQuantize_per_channel");
    hid_t fqg = H5Gopen2(f, "/state_load/fq_per_channel_observed", H5P_DEFAULT);
    ck_assert_msg(nn_state_load_h5(fqg, "fq", fq, NULL) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(nn_module_buffer(fq, "scale")->numel, 5);
    expect_state_qparams(f, "fq_per_channel_observed", nn_module_find(fq, "activation_post_process"));
    /* Frozen, it fake-quantizes a [5, ...] input with the loaded parameters. */
    qat_fake_quant_enable_observer(fq, false);
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(2, AG_SHAPE(5, 6), -1.0f, 1.0f, 5, false);
    ck_assert_ptr_nonnull(nn_forward(fq, ctx, x));
    ag_tensor *x4 = tu_rand(2, AG_SHAPE(4, 6), -1.0f, 1.0f, 5, false);
    ck_assert_ptr_null(nn_forward(fq, ctx, x4));
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "5 scales for input [4, 6]"));
    ag_tensor_free(x);
    ag_tensor_free(x4);
    ag_ctx_free(ctx);
    nn_module_free(fq);
    H5Gclose(fqg);
    H5Gclose(observed);
    H5Gclose(fresh);
    H5Fclose(f);
}
END_TEST

/* ---- toggles over a tree --------------------------------------------------------------- */

static const nn_module_vtbl holder_vt = {"Holder", NULL, NULL, NULL};

START_TEST(toggles_reach_every_fake_quant_in_a_tree)
{
    nn_module *root = calloc(1, sizeof *root);
    nn_module_init(root, &holder_vt);
    qat_fq_cfg c = {.kind = QAT_FQ_STANDARD, .obs = qat_observer_cfg_default(QAT_OBS_MOVING_AVG_MINMAX)};
    nn_module *a = qat_fake_quant_new(&c);
    c.kind = QAT_FQ_FUSED;
    nn_module *b = qat_fake_quant_new(&c);
    qat_observer_cfg oc = qat_observer_cfg_default(QAT_OBS_MINMAX);
    ck_assert_int_eq(nn_module_add_child(root, "a", a), AG_OK);
    ck_assert_int_eq(nn_module_add_child(root, "b", b), AG_OK);
    ck_assert_int_eq(nn_module_add_child(root, "obs", qat_observer_new(&oc)), AG_OK);
    qat_enable_fake_quant_all(root, false);
    qat_enable_observer_all(root, false);
    ck_assert_int_eq(((uint8_t *)nn_module_buffer(a, "fake_quant_enabled")->data)[0], 0);
    ck_assert_int_eq(((uint8_t *)nn_module_buffer(a, "observer_enabled")->data)[0], 0);
    ck_assert_int_eq(((int64_t *)nn_module_buffer(b, "fake_quant_enabled")->data)[0], 0);
    ck_assert_int_eq(((int64_t *)nn_module_buffer(b, "observer_enabled")->data)[0], 0);
    /* Both off: the identity, and the statistics do not move. */
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = tu_rand(1, AG_SHAPE(8), -1.0f, 1.0f, 6, false);
    ck_assert_ptr_eq(nn_forward(a, ctx, x), x);
    ck_assert(isinf(nn_module_buffer(nn_module_find(a, "activation_post_process"), "min_val")->data[0]));
    qat_enable_fake_quant_all(root, true);
    ck_assert_int_eq(((int64_t *)nn_module_buffer(b, "fake_quant_enabled")->data)[0], 1);
    ag_tensor_free(x);
    ag_ctx_free(ctx);
    nn_module_free(root);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("qat_observer");
    TCase *golden = tcase_create("golden");
    tcase_set_timeout(golden, 120);
    tcase_add_test(golden, minmax_observer_matches_pytorch_for_every_dtype_and_range);
    tcase_add_test(golden, moving_average_observer_matches_pytorch_over_several_updates);
    tcase_add_test(golden, per_channel_observers_match_pytorch_on_every_axis);
    tcase_add_test(golden, histogram_observer_matches_pytorch_merging_ranges);
    tcase_add_test(golden, fixed_qparams_observer_returns_its_parameters);
    tcase_add_test(golden, fake_quant_ops_match_pytorch_on_ties_bounds_and_specials);
    tcase_add_test(golden, fake_quantize_matches_pytorch_training_then_frozen);
    tcase_add_test(golden, fused_fake_quantize_matches_pytorch_scale_sequence);
    tcase_add_test(golden, learnable_fake_quant_gradients_match_pytorch);
    tcase_add_test(golden, state_dict_keys_and_order_match_pytorch);
    tcase_add_test(golden, per_channel_state_loads_with_shape_zero_or_c);
    suite_add_tcase(s, golden);

    TCase *unit = tcase_create("unit");
    tcase_set_timeout(unit, 60);
    tcase_add_test(unit, calculate_qparams_affine_and_symmetric_by_hand);
    tcase_add_test(unit, choose_qparams_symmetric_scale_differs_from_convert);
    tcase_add_test(unit, observer_range_rules_follow_calculate_qmin_qmax);
    tcase_add_test(unit, observer_buffers_start_like_pytorch);
    tcase_add_test(unit, placeholder_observer_has_no_qparams);
    tcase_add_test(unit, fake_quant_grad_is_zero_only_when_rounding_leaves_the_range);
    tcase_add_test(unit, fake_quant_rounds_half_to_even_like_nearbyintf);
    tcase_add_test(unit, fake_quant_large_tensor_matches_element_by_element);
    tcase_add_test(unit, fake_quant_and_aminmax_match_one_value_at_a_time_at_every_length);
    tcase_add_test(unit, fake_quant_ops_refuse_bad_arguments);
    tcase_add_test(unit, fused_fake_quant_without_observations_refuses_to_quantize);
    tcase_add_test(unit, fake_quant_constructors_refuse_what_pytorch_refuses);
    tcase_add_test(unit, learnable_modes_set_flags_and_requires_grad);
    tcase_add_test(unit, toggles_reach_every_fake_quant_in_a_tree);
    suite_add_tcase(s, unit);
    return s;
}
