/* test_torch_import.c — weights trained in PyTorch give PyTorch's results in cqat.
 *
 * tests/data/torch_refcnn_float.h5 is a refcnn state_dict written by
 * tools/gen_torch_refcnn_golden.py (PyTorch 1.13), and torch_refcnn_float_ref.h5 holds
 * PyTorch's eval-mode accuracy, loss, the logits of the first 256 test images and all
 * predictions. */
#include "test_util.h"

#include <hdf5.h>
#include <string.h>

#include "nn/state_h5.h"
#include "nn/zoo.h"
#include "tools/commands.h"
#include "tools/train.h"

#define WEIGHTS CQAT_TEST_DATA_DIR "/torch_refcnn_float.h5"
#define REF CQAT_TEST_DATA_DIR "/torch_refcnn_float_ref.h5"
#define QAT_WEIGHTS CQAT_TEST_DATA_DIR "/torch_refcnn_qat.h5"
#define QAT_REF CQAT_TEST_DATA_DIR "/torch_refcnn_qat_ref.h5"

static nn_module *load_refcnn(void)
{
    nn_zoo_config cfg;
    ck_assert_int_eq(nn_zoo_config_default("refcnn", &cfg), AG_OK);
    nn_module *m = nn_zoo_new(&cfg, NULL);
    ck_assert_ptr_nonnull(m);
    ck_assert_msg(nn_state_load_file(WEIGHTS, m, NULL) == AG_OK, "%s", ag_last_error());
    return m;
}

static double ref_attr(const char *name)
{
    hid_t f = nn_h5_open_read(REF);
    ck_assert_int_ge(f, 0);
    double v = 0;
    ck_assert_int_eq(nn_h5_read_attr_f64(f, REF, name, &v), AG_OK);
    H5Fclose(f);
    return v;
}

START_TEST(pytorch_weights_give_pytorch_accuracy_on_the_test_set)
{
    nn_module *m = load_refcnn();
    data_dataset test = {0};
    ck_assert_msg(data_fashion_mnist_load(NULL, false, &test) == AG_OK, "%s", ag_last_error());
    test.n = tu_test_images(test.n);
    cqat_eval_result r;
    ck_assert_int_eq(cqat_evaluate(m, &test, 256, &r), AG_OK);
    if (test.n == 10000) {
        double torch_acc = ref_attr("accuracy"), torch_loss = ref_attr("loss");
        ck_assert_msg(fabs(r.accuracy - torch_acc) <= 0.0005,
                      "cqat accuracy %.4f, PyTorch %.4f", r.accuracy, torch_acc);
        ck_assert_msg(fabs(r.loss - torch_loss) <= 1e-4 * (1 + torch_loss),
                      "cqat loss %.6f, PyTorch %.6f", r.loss, torch_loss);
    } else { /* a subset: PyTorch's accuracy there from its predictions (no loss kept) */
        static int32_t ref[10000];
        ag_tensor rt = {.dtype = AG_I32, .ndim = 1, .shape = {10000}, .numel = 10000,
                        .data = (float *)ref};
        hid_t f = nn_h5_open_read(REF);
        ck_assert_int_eq(nn_h5_read_tensor(f, REF, "predictions", &rt), AG_OK);
        H5Fclose(f);
        int64_t torch_correct = 0;
        for (int64_t i = 0; i < test.n; i++)
            torch_correct += ref[i] == test.labels[i];
        int64_t correct = (int64_t)llround(r.accuracy * (double)test.n);
        ck_assert_msg(llabs(correct - torch_correct) <= tu_scaled(5, test.n),
                      "cqat %lld, PyTorch %lld correct of %lld", (long long)correct,
                      (long long)torch_correct, (long long)test.n);
    }
    ck_assert_int_eq(r.n, test.n);
    data_dataset_deinit(&test);
    nn_module_free(m);
}
END_TEST

START_TEST(pytorch_weights_give_pytorch_logits)
{
    nn_module *m = load_refcnn();
    nn_module_eval(m);
    data_dataset test = {0};
    ck_assert_int_eq(data_fashion_mnist_load(NULL, false, &test), AG_OK);
    data_transform tf = data_transform_fashion_mnist();
    data_loader ld;
    ck_assert_int_eq(data_loader_init(&ld, &test, 256, false, false, 0, &tf), AG_OK);
    ag_ctx *ctx = ag_ctx_new();
    ag_tensor *x = ag_ctx_tensor(ctx, 4, AG_SHAPE(256, 1, 28, 28));
    int32_t labels[256], count = 0;
    ck_assert_int_eq(data_loader_batch(&ld, 0, x->data, labels, &count), AG_OK);
    ag_no_grad_begin(ctx);
    ag_tensor *y = nn_forward(m, ctx, x);
    ag_no_grad_end(ctx);
    ck_assert_ptr_nonnull(y);

    static float ref[256 * 10];
    hid_t f = nn_h5_open_read(REF);
    ck_assert_int_eq(nn_h5_read_floats(f, REF, "logits_first256", ref, 2560), AG_OK);
    H5Fclose(f);
    double worst = 0;
    for (int i = 0; i < 2560; i++) {
        double d = fabs((double)y->data[i] - ref[i]);
        worst = d > worst ? d : worst;
    }
    ck_assert_msg(worst < 1e-4, "largest logit difference from PyTorch: %g", worst);
    ag_ctx_free(ctx);
    data_loader_deinit(&ld);
    data_dataset_deinit(&test);
    nn_module_free(m);
}
END_TEST

START_TEST(strict_load_lists_missing_unexpected_and_misshaped_keys)
{
    nn_zoo_config cfg;
    nn_zoo_config_default("lenet5", &cfg);
    nn_module *m = nn_zoo_new(&cfg, NULL);
    ck_assert_int_ne(nn_state_load_file(WEIGHTS, m, NULL), AG_OK);
    const char *e = ag_last_error();
    ck_assert_msg(strstr(e, "missing key(s)") && strstr(e, "unexpected key(s)") &&
                      strstr(e, "size mismatch for conv1.weight"),
                  "%s", e);
    ck_assert_ptr_nonnull(strstr(e, "bn1.running_mean")); /* unexpected in lenet5 */
    nn_module_free(m);
}
END_TEST

START_TEST(failed_load_leaves_the_model_untouched)
{
    nn_zoo_config cfg;
    nn_zoo_config_default("refcnn", &cfg);
    ag_rng rng;
    ag_rng_seed(&rng, 5, 0);
    nn_module *m = nn_zoo_new(&cfg, &rng);
    ag_tensor *w = nn_module_param(nn_module_find(m, "conv1"), "weight");
    float before = w->data[0];
    nn_module *extra = nn_zoo_new(&cfg, NULL);
    /* A model with one extra key: the file lacks it, so the strict load fails. */
    ck_assert_int_eq(nn_module_add_buffer(m, "extra", ag_tensor_new(1, AG_SHAPE(1), false)),
                     AG_OK);
    ck_assert_int_ne(nn_state_load_file(WEIGHTS, m, NULL), AG_OK);
    ck_assert_ptr_nonnull(strstr(ag_last_error(), "missing key(s) (1): extra"));
    ck_assert_float_eq(w->data[0], before);
    nn_load_opts lax = {.strict = false};
    ck_assert_int_eq(nn_state_load_file(WEIGHTS, m, &lax), AG_OK);
    ck_assert_float_ne(w->data[0], before);
    nn_module_free(extra);
    nn_module_free(m);
}
END_TEST

/* Predictions of m on the whole test set. */
static void predict_all(nn_module *m, const data_dataset *test, int32_t *pred)
{
    data_transform tf = data_transform_fashion_mnist();
    data_loader ld;
    ck_assert_int_eq(data_loader_init(&ld, test, 500, false, false, 0, &tf), AG_OK);
    ag_ctx *ctx = ag_ctx_new();
    int32_t labels[500];
    nn_module_eval(m);
    ag_no_grad_begin(ctx);
    for (int64_t b = 0; b < data_loader_num_batches(&ld); b++) {
        int32_t count = 0;
        ag_tensor *x = ag_ctx_tensor(ctx, 4, AG_SHAPE(500, 1, 28, 28));
        ck_assert_int_eq(data_loader_batch(&ld, b, x->data, labels, &count), AG_OK);
        ag_tensor *y = nn_forward(m, ctx, x);
        ck_assert_msg(y != NULL, "%s", ag_last_error());
        for (int32_t i = 0; i < count; i++) {
            int32_t best = 0;
            for (int32_t j = 1; j < 10; j++)
                if (y->data[i * 10 + j] > y->data[i * 10 + best])
                    best = j;
            pred[b * 500 + i] = best;
        }
        ag_ctx_reset(ctx);
    }
    ag_no_grad_end(ctx);
    ag_ctx_free(ctx);
    data_loader_deinit(&ld);
}

START_TEST(pytorch_qat_state_dict_gives_pytorch_fake_quant_results)
{
    nn_module *m = NULL;
    qat_qconfig_map *map = NULL;
    cqat_ckpt_meta meta;
    ck_assert_msg(cqat_model_for_file(QAT_WEIGHTS, "refcnn", true, NULL, &m, &map, &meta) ==
                      AG_OK, "%s", ag_last_error());
    data_dataset test = {0};
    ck_assert_int_eq(data_fashion_mnist_load(NULL, false, &test), AG_OK);
    test.n = tu_test_images(test.n);
    static int32_t pred[10000], ref[10000];
    predict_all(m, &test, pred);
    hid_t f = nn_h5_open_read(QAT_REF);
    ag_tensor rt = {.dtype = AG_I32, .ndim = 1, .shape = {10000}, .numel = 10000, .data = (float *)ref};
    ck_assert_int_eq(nn_h5_read_tensor(f, QAT_REF, "fake_quant_predictions", &rt), AG_OK);
    double torch_acc = 0;
    ck_assert_int_eq(nn_h5_read_attr_f64(f, QAT_REF, "fake_quant_accuracy", &torch_acc), AG_OK);
    H5Fclose(f);
    int64_t correct = 0, same = 0;
    int64_t torch_correct = 0;
    for (int64_t i = 0; i < test.n; i++) {
        correct += pred[i] == test.labels[i];
        same += pred[i] == ref[i];
        torch_correct += ref[i] == test.labels[i];
    }
    if (test.n == 10000) /* the attribute is PyTorch's own accuracy, computed apart */
        ck_assert_msg(fabs(correct / 10000.0 - torch_acc) <= 0.001, "cqat %.4f, PyTorch %.4f",
                      correct / 10000.0, torch_acc);
    ck_assert_msg(llabs(correct - torch_correct) <= tu_scaled(10, test.n),
                  "cqat %lld, PyTorch %lld correct of %lld", (long long)correct,
                  (long long)torch_correct, (long long)test.n);
    ck_assert_msg(same >= test.n - tu_scaled(10, test.n),
                  "only %lld of %lld predictions equal PyTorch's", (long long)same,
                  (long long)test.n);
    data_dataset_deinit(&test);
    nn_module_free(m);
    qat_qconfig_map_free(map);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("torch import");
    TCase *tc = tcase_create("refcnn");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, pytorch_weights_give_pytorch_accuracy_on_the_test_set);
    tcase_add_test(tc, pytorch_weights_give_pytorch_logits);
    tcase_add_test(tc, strict_load_lists_missing_unexpected_and_misshaped_keys);
    tcase_add_test(tc, failed_load_leaves_the_model_untouched);
    tcase_add_test(tc, pytorch_qat_state_dict_gives_pytorch_fake_quant_results);
    suite_add_tcase(s, tc);
    return s;
}
