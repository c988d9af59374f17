/* test_convert.c — QAT models frozen into integer-only q8 models: agreement with the QAT
 * model they came from, and with PyTorch's own converted model.
 *
 * tests/data/torch_refcnn_qat.h5 is a PyTorch QAT-prepared refcnn (fbgemm QAT qconfig,
 * tools/gen_torch_refcnn_qat_golden.py); torch_refcnn_qat_ref.h5 holds its fake-quant
 * predictions and PyTorch's int8 predictions (onednn and qnnpack engines). */
#include "test_util.h"

#include <hdf5.h>
#include <string.h>
#include <unistd.h>

#include "nn/state_h5.h"
#include "qat/convert.h"
#include "tools/commands.h"

#define QAT_WEIGHTS CQAT_TEST_DATA_DIR "/torch_refcnn_qat.h5"
#define QAT_REF CQAT_TEST_DATA_DIR "/torch_refcnn_qat_ref.h5"

static int32_t ref_fq[10000], ref_onednn[10000], ref_qnnpack[10000];
static data_dataset test_set;

static void read_preds(hid_t f, const char *name, int32_t *dst)
{
    ag_tensor t = {.dtype = AG_I32, .ndim = 1, .shape = {10000}, .numel = 10000,
                   .data = (float *)dst};
    ck_assert_msg(nn_h5_read_tensor(f, QAT_REF, name, &t) == AG_OK, "%s", ag_last_error());
}

static void setup(void)
{
    ck_assert_int_eq(data_fashion_mnist_load(NULL, false, &test_set), AG_OK);
    test_set.n = tu_test_images(test_set.n);
    hid_t f = nn_h5_open_read(QAT_REF);
    ck_assert_int_ge(f, 0);
    read_preds(f, "fake_quant_predictions", ref_fq);
    read_preds(f, "int8_predictions_onednn", ref_onednn);
    read_preds(f, "int8_predictions_qnnpack", ref_qnnpack);
    H5Fclose(f);
}

static void teardown(void) { data_dataset_deinit(&test_set); }

static q8_model *convert_torch_model(bool pytorch_qparams)
{
    nn_module *m = NULL;
    qat_qconfig_map *map = NULL;
    cqat_ckpt_meta meta;
    ck_assert_msg(cqat_model_for_file(QAT_WEIGHTS, "refcnn", true, NULL, &m, &map, &meta) ==
                      AG_OK, "%s", ag_last_error());
    qat_convert_opts o = {.in_channels = 1, .in_h = 28, .in_w = 28, .source_model = "refcnn",
                          .pytorch_qparams = pytorch_qparams};
    q8_model *qm = qat_convert(m, &o);
    ck_assert_msg(qm != NULL, "%s", ag_last_error());
    nn_module_free(m);
    qat_qconfig_map_free(map);
    return qm;
}

static void q8_predictions(q8_model *qm, int32_t *pred)
{
    data_transform tf = data_transform_fashion_mnist();
    data_loader ld;
    ck_assert_int_eq(data_loader_init(&ld, &test_set, 500, false, false, 0, &tf), AG_OK);
    static float x[500 * 784], y[500 * 10];
    int32_t labels[500];
    for (int64_t b = 0; b < data_loader_num_batches(&ld); b++) {
        int32_t count = 0;
        ck_assert_int_eq(data_loader_batch(&ld, b, x, labels, &count), AG_OK);
        ck_assert_msg(q8_model_run(qm, x, count, y) == Q8_OK, "%s", q8_last_error());
        for (int32_t i = 0; i < count; i++) {
            int32_t best = 0;
            for (int32_t j = 1; j < 10; j++)
                best = y[i * 10 + j] > y[i * 10 + best] ? j : best;
            pred[b * 500 + i] = best;
        }
    }
    data_loader_deinit(&ld);
}

/* How many of the test images (the first test_set.n) a and b predict alike. */
static int64_t same(const int32_t *a, const int32_t *b)
{
    int64_t n = 0;
    for (int64_t i = 0; i < test_set.n; i++)
        n += a[i] == b[i];
    return n;
}

START_TEST(pytorch_qparams_convert_agrees_with_pytorchs_int8_model)
{
    q8_model *qm = convert_torch_model(true);
    static int32_t pred[10000];
    q8_predictions(qm, pred);
    int64_t a = same(pred, ref_onednn), b = same(pred, ref_qnnpack);
    int64_t need = test_set.n - tu_scaled(50, test_set.n);
    ck_assert_msg(a >= need && b >= need,
                  "identical predictions with PyTorch's int8 model: onednn %lld, qnnpack %lld "
                  "of %lld (need %lld)", (long long)a, (long long)b, (long long)test_set.n,
                  (long long)need);
    q8_model_free(qm);
}
END_TEST

START_TEST(converted_model_agrees_with_the_fake_quant_model_it_came_from)
{
    q8_model *qm = convert_torch_model(false);
    static int32_t pred[10000];
    q8_predictions(qm, pred);
    /* Measured 9989: the fake-quant model sums its convolutions in float, the int8 model
     * exactly, so values within float rounding of a rounding boundary can land one step
     * apart (cqat compare shows where). This short-trained PyTorch model has more such
     * near-ties than the BENCHMARK recipe's model (99.92% there); PyTorch's own convert
     * of it agrees with its fake quant on 99.34%. */
    int64_t n = same(pred, ref_fq);
    ck_assert_msg(n >= test_set.n - tu_scaled(15, test_set.n),
                  "identical predictions with the QAT model: %lld of %lld", (long long)n,
                  (long long)test_set.n);
    q8_model_free(qm);
}
END_TEST

START_TEST(saved_model_reloads_with_the_same_outputs)
{
    q8_model *qm = convert_torch_model(false);
    char path[] = "/tmp/cqat-convert-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_msg(q8_model_save(qm, path) == Q8_OK, "%s", q8_last_error());
    q8_model *back = q8_model_load(path);
    ck_assert_msg(back != NULL, "%s", q8_last_error());
    static int32_t a[10000], b[10000];
    q8_predictions(qm, a);
    q8_predictions(back, b);
    ck_assert_int_eq(same(a, b), test_set.n);
    ck_assert_str_eq(q8_model_attr(back, "source_model"), "refcnn");
    unlink(path);
    q8_model_free(back);
    q8_model_free(qm);
}
END_TEST

START_TEST(convert_refuses_a_model_that_was_not_prepared)
{
    nn_zoo_config cfg;
    nn_zoo_config_default("refcnn", &cfg);
    nn_module *m = nn_zoo_new(&cfg, NULL);
    qat_convert_opts o = {.in_channels = 1, .in_h = 28, .in_w = 28};
    ck_assert_ptr_null(qat_convert(m, &o));
    ck_assert_msg(strstr(ag_last_error(), "'quant'") != NULL, "%s", ag_last_error());
    nn_module_free(m);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("convert");
    TCase *tc = tcase_create("refcnn");
    tcase_set_timeout(tc, 300);
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, pytorch_qparams_convert_agrees_with_pytorchs_int8_model);
    tcase_add_test(tc, converted_model_agrees_with_the_fake_quant_model_it_came_from);
    tcase_add_test(tc, saved_model_reloads_with_the_same_outputs);
    tcase_add_test(tc, convert_refuses_a_model_that_was_not_prepared);
    suite_add_tcase(s, tc);
    return s;
}
