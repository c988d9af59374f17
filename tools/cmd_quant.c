/* cmd_quant.c — the deployment commands: convert, calibrate, quantize-dynamic, infer,
 * inspect, compare, and evaluation of frozen int8 models. */
#include "tools/commands.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "nn/state_h5.h"
#include "qat/convert.h"
#include "quantized/q8.h"
#include "tools/args.h"
#include "tools/qat_model.h"

/* ---- shared ---- */

static ag_status q8_fail(const char *what)
{
    return ag_error(AG_ERR_FORMAT, "%s: %s", what, q8_last_error());
}

/* True if `path` holds a frozen cqat-q8 model (its format attribute says so). */
bool cqat_is_q8_file(const char *path)
{
    hid_t f = nn_h5_open_read(path);
    if (f < 0) {
        ag_error_clear();
        return false;
    }
    char fmt[32] = "";
    bool q8 = nn_h5_has_attr(f, "format") &&
              nn_h5_read_attr_str(f, path, "format", fmt, sizeof fmt) == AG_OK &&
              strcmp(fmt, "cqat-q8") == 0;
    H5Fclose(f);
    return q8;
}

static int64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
}

static int64_t argmax(const float *row, int64_t n)
{
    int64_t best = 0;
    for (int64_t j = 1; j < n; j++)
        if (row[j] > row[best])
            best = j;
    return best;
}

/* Runs a q8 model over a data set: accuracy, and optionally every prediction and the
 * logits (arrays of ds->n and ds->n * classes, may be NULL). */
static ag_status q8_predict(q8_model *qm, const data_dataset *ds, int32_t batch, double *acc,
                            int32_t *pred, float *logits, double *seconds)
{
    int64_t oshape[Q8_MAX_DIMS];
    q8_model_output_shape(qm, oshape);
    const int64_t k = oshape[1];
    data_transform tf = data_transform_fashion_mnist();
    data_loader ld;
    ag_status st = data_loader_init(&ld, ds, batch, false, false, 0, &tf);
    if (st != AG_OK)
        return st;
    const int64_t item = (int64_t)ds->c * ds->h * ds->w;
    float *x = malloc((size_t)(batch * item) * sizeof *x);
    float *y = malloc((size_t)(batch * k) * sizeof *y);
    int32_t *labels = malloc((size_t)batch * sizeof *labels);
    if (!x || !y || !labels)
        st = ag_error(AG_ERR_NOMEM, "out of memory");
    int64_t correct = 0, seen = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int64_t b = 0; st == AG_OK && b < data_loader_num_batches(&ld); b++) {
        int32_t count = 0;
        st = data_loader_batch(&ld, b, x, labels, &count);
        if (st == AG_OK && q8_model_run(qm, x, count, y) != Q8_OK)
            st = q8_fail("int8 model");
        for (int32_t i = 0; st == AG_OK && i < count; i++) {
            int64_t p = argmax(y + i * k, k);
            correct += p == labels[i];
            if (pred)
                pred[seen + i] = (int32_t)p;
            if (logits)
                memcpy(logits + (seen + i) * k, y + i * k, (size_t)k * sizeof *y);
        }
        seen += count;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (seconds)
        *seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    *acc = seen ? (double)correct / (double)seen : 0.0;
    free(x);
    free(y);
    free(labels);
    data_loader_deinit(&ld);
    return st;
}

int cqat_cmd_eval_q8(const char *path, const char *data, int64_t limit, bool json)
{
    data_dataset test = {0};
    q8_model *qm = q8_model_load(path);
    if (!qm)
        return cqat_fail_msg("eval", "%s", q8_last_error());
    ag_status st = cqat_load_data(data, limit, NULL, &test);
    double acc = 0, secs = 0;
    if (st == AG_OK)
        st = q8_predict(qm, &test, 256, &acc, NULL, NULL, &secs);
    if (st == AG_OK) {
        printf("eval: %s (int8 %s, %s kernel) on %" PRId64 " test images: accuracy %.2f%%, "
               "%.0f samples/s\n",
               path, q8_model_attr(qm, "source_model"), q8_model_gemm_kernel(qm), test.n,
               100.0 * acc, secs > 0 ? (double)test.n / secs : 0.0);
        if (json)
            printf("{\"kind\": \"int8\", \"accuracy\": %.6f, \"n\": %" PRId64
                   ", \"eval_samples_per_s\": %.1f}\n",
                   acc, test.n, secs > 0 ? (double)test.n / secs : 0.0);
    }
    q8_model_free(qm);
    data_dataset_deinit(&test);
    return st == AG_OK ? 0 : cqat_fail("eval");
}

/* Bytes the float model's parameters would take (for "size vs float"). */
static int64_t float_bytes(nn_module *m) { return nn_param_count(m) * (int64_t)sizeof(float); }

static ag_status save_q8(q8_model *qm, const char *out, nn_module *m, const char *what)
{
    if (q8_model_save(qm, out) != Q8_OK)
        return q8_fail(out);
    printf("%s: wrote %s: %d nodes, %" PRId64 " bytes on disk (float parameters: %" PRId64
           " bytes)\n",
           what, out, (int)q8_model_n_nodes(qm), file_size(out), float_bytes(m));
    return AG_OK;
}

/* ---- cqat convert ---- */

int cqat_cmd_convert(int argc, char **argv)
{
    const char *out = NULL, *model = NULL, *weights = NULL, *qconfig = NULL;
    bool pytorch_qparams = false;
    cli_opt opts[] = {
        {"--out", CLI_STR, &out, "the int8 model to write", 0, 0, NULL, "MODEL.h5"},
        {"--model", CLI_STR, &model, "model name, for a plain QAT state_dict", 0, 0, NULL, "NAME"},
        {"--weights", CLI_STR, &weights, "a QAT-prepared state_dict (e.g. PyTorch's)", 0, 0, NULL, "FILE"},
        {"--qconfig", CLI_STR, &qconfig, "with --weights: its qconfig (default: guessed)", 0, 0, NULL, "NAME"},
        {"--pytorch-qparams", CLI_FLAG, &pytorch_qparams, "recompute scales from observer statistics as PyTorch's convert does (default: the scales QAT used)", 0, 0, NULL, NULL},
    };
    int n_opts = (int)(sizeof opts / sizeof opts[0]);
    cli_parsed p;
    if (cli_args_parse(argc, argv, opts, n_opts, &p) != AG_OK)
        return cqat_fail("convert");
    if (p.help) {
        cli_args_help("cqat convert QAT.h5 --out MODEL.h5 | cqat convert --model NAME --weights "
                      "QAT_STATE_DICT.h5 --out MODEL.h5",
                      "Freeze a QAT model into an integer-only model (HDF5, docs/FORMAT.md): BN "
                      "folded, int8\nweights, int32 biases, fixed-point requantization.",
                      opts, n_opts);
        return 0;
    }
    const char *path = p.n_positional ? p.positional[0] : weights;
    if (!path || (p.n_positional && weights) || p.n_positional > 1)
        return cqat_fail_msg("convert", "give one QAT file: QAT.h5 or --weights FILE");
    if (!out)
        return cqat_fail_msg("convert", "--out MODEL.h5 is required");
    nn_module *m = NULL;
    qat_qconfig_map *map = NULL;
    cqat_ckpt_meta meta;
    ag_status st = cqat_model_for_file(path, model, true, qconfig, &m, &map, &meta);
    if (st == AG_OK && strcmp(meta.kind, "qat") != 0)
        st = ag_error(AG_ERR_ARG, "%s holds float weights: run cqat qat first, or cqat "
                                  "calibrate for post-training quantization", path);
    q8_model *qm = NULL;
    if (st == AG_OK) {
        qat_convert_opts o = {.in_channels = meta.model.in_channels, .in_h = meta.model.in_h,
                              .in_w = meta.model.in_w, .source_model = meta.model.name,
                              .qconfig = meta.extra[0] ? meta.extra : "PyTorch QAT state_dict",
                              .pytorch_qparams = pytorch_qparams};
        if (!(qm = qat_convert(m, &o)))
            st = ag_last_status();
    }
    if (st == AG_OK)
        st = save_q8(qm, out, m, "convert");
    q8_model_free(qm);
    nn_module_free(m);
    qat_qconfig_map_free(map);
    return st == AG_OK ? 0 : cqat_fail("convert");
}

/* ---- cqat calibrate (static post-training quantization) ---- */

static ag_status calibrate(nn_module *m, const data_dataset *train, int64_t batches,
                           int32_t batch_size)
{
    data_transform tf = data_transform_fashion_mnist();
    data_loader ld;
    ag_status st = data_loader_init(&ld, train, batch_size, true, false, 0, &tf);
    ag_ctx *ctx = st == AG_OK ? ag_ctx_new() : NULL;
    int32_t *labels = malloc((size_t)batch_size * sizeof *labels);
    if (st == AG_OK && (!ctx || !labels))
        st = ag_error(AG_ERR_NOMEM, "calibrate: out of memory");
    nn_module_eval(m);
    if (ctx)
        ag_no_grad_begin(ctx);
    for (int64_t b = 0; st == AG_OK && b < batches && b < data_loader_num_batches(&ld); b++) {
        int32_t count = 0;
        ag_tensor *x = ag_ctx_tensor(ctx, 4, AG_SHAPE(batch_size, train->c, train->h, train->w));
        st = x ? data_loader_batch(&ld, b, x->data, labels, &count) : ag_last_status();
        if (st == AG_OK && count < batch_size) {
            x->shape[0] = count;
            x->numel = (int64_t)count * train->c * train->h * train->w;
        }
        if (st == AG_OK && !nn_forward(m, ctx, x))
            st = ag_last_status();
        ag_ctx_reset(ctx);
    }
    if (ctx)
        ag_no_grad_end(ctx);
    ag_ctx_free(ctx);
    free(labels);
    data_loader_deinit(&ld);
    return st;
}

static ag_status ptq_qconfig(const char *name, const char *observer, bool per_tensor,
                             qat_qconfig *qc)
{
    ag_status st = qat_qconfig_by_name(name, qc);
    if (st != AG_OK)
        return st;
    if (qc->is_qat)
        return ag_error(AG_ERR_ARG, "qconfig '%s' is for QAT; calibration needs an observer "
                                    "qconfig (fbgemm, qnnpack, default, ...)", name);
    if (observer) {
        qat_observer_kind k = strcmp(observer, "minmax") == 0       ? QAT_OBS_MINMAX
                              : strcmp(observer, "moving-average") == 0 ? QAT_OBS_MOVING_AVG_MINMAX
                                                                       : QAT_OBS_HISTOGRAM;
        qc->activation.obs.kind = k;
    }
    if (per_tensor) {
        qc->weight.obs.kind = QAT_OBS_MINMAX;
        qc->weight.obs.qscheme = QAT_PER_TENSOR_SYMMETRIC;
    }
    return AG_OK;
}

int cqat_cmd_calibrate(int argc, char **argv)
{
    const char *model = NULL, *init = NULL, *out = NULL, *data = NULL, *qconfig = "fbgemm",
               *observer = NULL;
    int64_t batches = 32, batch_size = 64, limit = 0, threads = 0;
    bool per_tensor = false;
    cli_opt opts[] = {
        {"--model", CLI_STR, &model, "model name (default: from a cqat checkpoint)", 0, 0, NULL, "NAME"},
        {"--init", CLI_STR, &init, "the float weights", 0, 0, NULL, "FLOAT.h5"},
        {"--batches", CLI_INT, &batches, "calibration batches of training images (default 32)", 1, 1e9, NULL, NULL},
        {"--batch-size", CLI_INT, &batch_size, "calibration batch size (default 64)", 1, 1 << 20, NULL, NULL},
        {"--qconfig", CLI_STR, &qconfig, "fbgemm (default: histogram, per-channel), qnnpack, default, default-per-channel, ...", 0, 0, NULL, "NAME"},
        {"--observer", CLI_CHOICE, &observer, "activation observer (default: the qconfig's)", 0, 0, "minmax|moving-average|histogram", NULL},
        {"--per-tensor", CLI_FLAG, &per_tensor, "per-tensor weights (default per-channel)", 0, 0, NULL, NULL},
        {"--data", CLI_STR, &data, "data folder (default: Debian's Fashion-MNIST)", 0, 0, NULL, "DIR"},
        {"--limit", CLI_INT, &limit, "use only the first N images", 0, 1e12, NULL, NULL},
        {"--threads", CLI_INT, &threads, "threads", 0, 1024, NULL, NULL},
        {"--out", CLI_STR, &out, "the int8 model to write", 0, 0, NULL, "MODEL.h5"},
    };
    int n_opts = (int)(sizeof opts / sizeof opts[0]);
    cli_parsed p;
    if (cli_args_parse(argc, argv, opts, n_opts, &p) != AG_OK)
        return cqat_fail("calibrate");
    if (p.help) {
        cli_args_help("cqat calibrate --init FLOAT.h5 [--model NAME] [--batches N] --out MODEL.h5",
                      "Static post-training quantization: fuse, attach observers, run N batches "
                      "of training\nimages, convert to an integer-only model.",
                      opts, n_opts);
        return 0;
    }
    if (!init || !out)
        return cqat_fail_msg("calibrate", "--init FLOAT.h5 and --out MODEL.h5 are required");
    ag_set_num_threads((int)threads);
    nn_module *m = NULL;
    qat_qconfig_map *map = NULL;
    q8_model *qm = NULL;
    cqat_ckpt_meta meta;
    data_dataset train = {0};
    qat_qconfig qc;
    const nn_fusion_group *groups = NULL;
    int32_t n_groups = 0;
    ag_status st = cqat_model_for_file(init, model, false, NULL, &m, &map, &meta);
    if (st == AG_OK && strcmp(meta.kind, "float") != 0)
        st = ag_error(AG_ERR_ARG, "%s is a %s checkpoint: calibrate float weights", init, meta.kind);
    if (st == AG_OK)
        st = ptq_qconfig(qconfig, observer, per_tensor, &qc);
    if (st == AG_OK)
        st = cqat_load_data(data, limit, &train, NULL);
    if (st == AG_OK)
        st = nn_zoo_fusion_groups(meta.model.name, &groups, &n_groups);
    if (st == AG_OK) {
        nn_module_eval(m);
        st = qat_fuse_modules(m, groups, n_groups, false);
    }
    if (st == AG_OK && !(map = qat_qconfig_map_new(&qc)))
        st = ag_last_status();
    if (st == AG_OK)
        st = qat_prepare(m, map);
    if (st == AG_OK)
        st = calibrate(m, &train, batches, (int32_t)batch_size);
    if (st == AG_OK) {
        char desc[160];
        snprintf(desc, sizeof desc, "ptq: qconfig=%s%s%s;%s weights;batches=%" PRId64, qconfig,
                 observer ? ";observer=" : "", observer ? observer : "",
                 per_tensor ? "per-tensor" : "per-channel", batches);
        qat_convert_opts o = {.in_channels = meta.model.in_channels, .in_h = meta.model.in_h,
                              .in_w = meta.model.in_w, .source_model = meta.model.name,
                              .qconfig = desc};
        if (!(qm = qat_convert(m, &o)))
            st = ag_last_status();
    }
    if (st == AG_OK)
        st = save_q8(qm, out, m, "calibrate");
    q8_model_free(qm);
    nn_module_free(m);
    qat_qconfig_map_free(map);
    data_dataset_deinit(&train);
    return st == AG_OK ? 0 : cqat_fail("calibrate");
}

/* ---- cqat quantize-dynamic ---- */

int cqat_cmd_quantize_dynamic(int argc, char **argv)
{
    const char *out = NULL, *model = NULL;
    cli_opt opts[] = {
        {"--out", CLI_STR, &out, "the model to write", 0, 0, NULL, "MODEL.h5"},
        {"--model", CLI_STR, &model, "model name, for a plain state_dict", 0, 0, NULL, "NAME"},
    };
    int n_opts = (int)(sizeof opts / sizeof opts[0]);
    cli_parsed p;
    if (cli_args_parse(argc, argv, opts, n_opts, &p) != AG_OK)
        return cqat_fail("quantize-dynamic");
    if (p.help) {
        cli_args_help("cqat quantize-dynamic FLOAT.h5 --out MODEL.h5",
                      "Dynamic quantization (PyTorch's quantize_dynamic): Linear layers get int8 "
                      "weights and\nquantize their input per batch at run time; the rest stays "
                      "float (BN folded).",
                      opts, n_opts);
        return 0;
    }
    if (p.n_positional != 1 || !out)
        return cqat_fail_msg("quantize-dynamic", "usage: cqat quantize-dynamic FLOAT.h5 --out MODEL.h5");
    nn_module *m = NULL;
    qat_qconfig_map *map = NULL;
    q8_model *qm = NULL;
    cqat_ckpt_meta meta;
    ag_status st = cqat_model_for_file(p.positional[0], model, false, NULL, &m, &map, &meta);
    if (st == AG_OK && strcmp(meta.kind, "float") != 0)
        st = ag_error(AG_ERR_ARG, "%s is a %s checkpoint: quantize-dynamic takes float weights",
                      p.positional[0], meta.kind);
    const nn_fusion_group *groups = NULL;
    int32_t n_groups = 0;
    if (st == AG_OK)
        st = nn_zoo_fusion_groups(meta.model.name, &groups, &n_groups);
    if (st == AG_OK) { /* BN folded into the float convolutions, ReLUs fused */
        nn_module_eval(m);
        st = qat_fuse_modules(m, groups, n_groups, false);
    }
    if (st == AG_OK) {
        qat_convert_opts o = {.in_channels = meta.model.in_channels, .in_h = meta.model.in_h,
                              .in_w = meta.model.in_w, .source_model = meta.model.name,
                              .qconfig = "dynamic: default_dynamic_qconfig, per-channel weights"};
        if (!(qm = qat_convert_dynamic(m, &o)))
            st = ag_last_status();
    }
    if (st == AG_OK)
        st = save_q8(qm, out, m, "quantize-dynamic");
    q8_model_free(qm);
    nn_module_free(m);
    qat_qconfig_map_free(map);
    return st == AG_OK ? 0 : cqat_fail("quantize-dynamic");
}
