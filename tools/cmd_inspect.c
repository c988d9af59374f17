/* cmd_inspect.c — `cqat infer`, `cqat inspect` and `cqat compare`. */
#include "tools/commands.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nn/state_h5.h"
#include "quantized/q8.h"
#include "tools/args.h"

/* ---- cqat infer ---- */

/* Images from an IDX images file (plain/gzip) or an HDF5 file's image dataset
 * (data_h5_load); inference needs no labels. */
static ag_status load_images(const char *path, const char *dataset, data_dataset *ds)
{
    nn_h5_quiet();
    hid_t f = H5Fis_hdf5(path) > 0 ? nn_h5_open_read(path) : H5I_INVALID_HID;
    if (f >= 0) {
        H5Fclose(f);
        return data_h5_load(path, dataset ? dataset : "images", NULL, ds);
    }
    ag_error_clear();
    return data_idx_load(path, NULL, ds);
}

static ag_status write_predictions(const char *out, const float *logits, const int32_t *pred,
                                   int64_t n, int64_t k)
{
    nn_h5_writer w;
    ag_status st = nn_h5_writer_open(&w, out);
    if (st != AG_OK)
        return st;
    st = nn_h5_write_floats(w.file, "logits", logits, 2, AG_SHAPE(n, k));
    if (st == AG_OK) {
        ag_tensor t = {.dtype = AG_I32, .ndim = 1, .shape = {n}, .numel = n, .data = (float *)pred};
        st = nn_h5_write_tensor(w.file, "predictions", &t);
    }
    if (st != AG_OK) {
        nn_h5_writer_abort(&w);
        return st;
    }
    return nn_h5_writer_commit(&w);
}

int cqat_cmd_infer(int argc, char **argv)
{
    const char *input = NULL, *output = NULL, *dataset = NULL;
    int64_t threads = 0;
    cli_opt opts[] = {
        {"--input", CLI_STR, &input, "images: IDX (plain or gzip) or HDF5", 0, 0, NULL, "FILE"},
        {"--dataset", CLI_STR, &dataset, "HDF5 input: the image dataset (default 'images')", 0, 0, NULL, "NAME"},
        {"--output", CLI_STR, &output, "write logits and predictions here (HDF5)", 0, 0, NULL, "FILE"},
        {"--threads", CLI_INT, &threads, "threads", 0, 1024, NULL, NULL},
    };
    int n_opts = (int)(sizeof opts / sizeof opts[0]);
    cli_parsed p;
    if (cli_args_parse(argc, argv, opts, n_opts, &p) != AG_OK)
        return cqat_fail("infer");
    if (p.help) {
        cli_args_help("cqat infer MODEL.h5 --input FILE [--output FILE]",
                      "Run a frozen int8 model on images; predictions to standard output, or "
                      "logits and\npredictions to an HDF5 file.",
                      opts, n_opts);
        return 0;
    }
    if (p.n_positional != 1 || !input)
        return cqat_fail_msg("infer", "usage: cqat infer MODEL.h5 --input FILE [--output FILE]");
    ag_set_num_threads((int)threads);
    q8_model *qm = q8_model_load(p.positional[0]);
    if (!qm)
        return cqat_fail_msg("infer", "%s", q8_last_error());
    data_dataset ds = {0};
    ag_status st = load_images(input, dataset, &ds);
    int64_t ishape[Q8_MAX_DIMS], oshape[Q8_MAX_DIMS];
    int32_t ind = q8_model_input_shape(qm, ishape);
    q8_model_output_shape(qm, oshape);
    if (st == AG_OK && (ind != 4 || ishape[1] != ds.c || ishape[2] != ds.h || ishape[3] != ds.w))
        st = ag_error(AG_ERR_SHAPE, "%s: images are %dx%dx%d, the model takes %" PRId64 "x%" PRId64
                      "x%" PRId64, input, (int)ds.c, (int)ds.h, (int)ds.w, ishape[1], ishape[2],
                      ishape[3]);
    const int64_t k = oshape[1], item = (int64_t)ds.c * ds.h * ds.w;
    float *logits = st == AG_OK ? malloc((size_t)(ds.n * k) * sizeof *logits) : NULL;
    int32_t *pred = st == AG_OK ? malloc((size_t)ds.n * sizeof *pred) : NULL;
    float *x = st == AG_OK ? malloc((size_t)(256 * item) * sizeof *x) : NULL;
    int32_t labels[256];
    data_transform tf = data_transform_fashion_mnist();
    data_loader ld = {0};
    if (st == AG_OK && (!logits || !pred || !x))
        st = ag_error(AG_ERR_NOMEM, "infer: out of memory");
    if (st == AG_OK)
        st = data_loader_init(&ld, &ds, 256, false, false, 0, &tf);
    for (int64_t b = 0, seen = 0; st == AG_OK && b < data_loader_num_batches(&ld); b++) {
        int32_t count = 0;
        st = data_loader_batch(&ld, b, x, labels, &count);
        if (st == AG_OK && q8_model_run(qm, x, count, logits + seen * k) != Q8_OK)
            st = ag_error(AG_ERR_FORMAT, "%s", q8_last_error());
        for (int32_t i = 0; st == AG_OK && i < count; i++) {
            int64_t best = 0;
            for (int64_t j = 1; j < k; j++)
                if (logits[(seen + i) * k + j] > logits[(seen + i) * k + best])
                    best = j;
            pred[seen + i] = (int32_t)best;
        }
        seen += count;
    }
    if (st == AG_OK && output) {
        st = write_predictions(output, logits, pred, ds.n, k);
        if (st == AG_OK)
            printf("infer: %" PRId64 " images, logits and predictions written to %s\n", ds.n, output);
    } else if (st == AG_OK) {
        for (int64_t i = 0; i < ds.n; i++)
            printf("%" PRId64 " %d\n", i, (int)pred[i]);
    }
    data_loader_deinit(&ld);
    free(x);
    free(pred);
    free(logits);
    data_dataset_deinit(&ds);
    q8_model_free(qm);
    return st == AG_OK ? 0 : cqat_fail("infer");
}

/* ---- cqat inspect ---- */

typedef struct inspect_ctx {
    int64_t n_keys, n_values, bytes;
} inspect_ctx;

static herr_t inspect_dataset(hid_t g, const char *name, const H5L_info_t *info, void *ud)
{
    (void)info;
    inspect_ctx *c = ud;
    H5O_info_t oi;
    if (H5Oget_info_by_name2(g, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0 ||
        oi.type != H5O_TYPE_DATASET)
        return 0;
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    hid_t sp = H5Dget_space(ds), t = H5Dget_type(ds);
    hsize_t dims[8] = {0};
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd > 8)
        nd = 8;
    H5Sget_simple_extent_dims(sp, dims, NULL);
    int64_t n = (int64_t)H5Sget_simple_extent_npoints(sp);
    char shape[96] = "[";
    for (int i = 0; i < nd; i++)
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), i ? ", %llu" : "%llu",
                 (unsigned long long)dims[i]);
    strncat(shape, "]", sizeof shape - strlen(shape) - 1);
    const char *kind = H5Tget_class(t) == H5T_FLOAT ? "float" : "int";
    printf("  %-64s %-18s %s%d\n", name, shape, kind, (int)(8 * H5Tget_size(t)));
    c->n_keys++;
    c->n_values += n;
    c->bytes += n * (int64_t)H5Tget_size(t);
    H5Tclose(t);
    H5Sclose(sp);
    H5Dclose(ds);
    return 0;
}

static void print_attr(hid_t f, const char *path, const char *name)
{
    char buf[2048];
    int64_t v;
    if (!nn_h5_has_attr(f, name))
        return;
    if (nn_h5_read_attr_str(f, path, name, buf, sizeof buf) == AG_OK) {
        for (char *c = buf; *c; c++)
            if (*c == '\n')
                *c = ' ';
        printf("  %-16s %s\n", name, buf);
    } else if (nn_h5_read_attr_i64(f, path, name, &v) == AG_OK) {
        printf("  %-16s %" PRId64 "\n", name, v);
    }
    ag_error_clear();
}

int cqat_cmd_inspect(int argc, char **argv)
{
    cli_parsed p;
    if (cli_args_parse(argc, argv, NULL, 0, &p) != AG_OK)
        return cqat_fail("inspect");
    if (p.help || p.n_positional != 1) {
        printf("usage: cqat inspect FILE.h5\n\nA frozen int8 model: its graph, shapes, dtypes, "
               "qparams and sizes.\nA checkpoint or state_dict: its attributes and datasets.\n");
        return p.help ? 0 : 2;
    }
    const char *path = p.positional[0];
    struct stat sb;
    int64_t disk = stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
    if (cqat_is_q8_file(path)) {
        q8_model *qm = q8_model_load(path);
        if (!qm)
            return cqat_fail_msg("inspect", "%s", q8_last_error());
        q8_model_describe(qm, stdout);
        printf("size on disk: %" PRId64 " bytes\n", disk);
        q8_model_free(qm);
        return 0;
    }
    hid_t f = nn_h5_open_read(path);
    if (f < 0)
        return cqat_fail("inspect");
    printf("%s: %" PRId64 " bytes on disk\n", path, disk);
    static const char *const attrs[] = {"format", "format_version", "model_name", "kind", "epoch",
                                        "step", "in_channels", "in_h", "in_w", "num_classes",
                                        "extra", "train_args"};
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++)
        print_attr(f, path, attrs[i]);
    inspect_ctx c = {0};
    printf("state (one dataset per state_dict key):\n");
    H5Literate(f, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, inspect_dataset, &c);
    printf("%" PRId64 " keys, %" PRId64 " values, %" PRId64 " bytes of data\n", c.n_keys,
           c.n_values, c.bytes);
    H5Fclose(f);
    return 0;
}

/* ---- cqat compare ---- */

/* Per traced layer: integer steps between the QAT model's fake-quantized output and the
 * int8 model's value of the same name. */
typedef struct layer_stat {
    char name[128];
    int32_t value_id;
    int64_t n, same;
    int64_t max_diff;
    double sum_diff;
} layer_stat;

typedef struct compare_ctx {
    q8_model *qm;
    layer_stat *layers;
    int32_t n_layers;
    nn_module *root;
} compare_ctx;

typedef struct path_find {
    const nn_module *target;
    char path[128];
} path_find;

static bool find_path(void *ud, const char *path, nn_module *m)
{
    path_find *pf = ud;
    if (m != pf->target)
        return true;
    snprintf(pf->path, sizeof pf->path, "%s", path);
    return false;
}

static void compare_trace(void *ud, nn_module *m, ag_tensor *const *in, int32_t n_in,
                          ag_tensor *out)
{
    (void)in;
    (void)n_in;
    compare_ctx *c = ud;
    if (!m->post || !qat_is_fake_quant(m->post))
        return;
    path_find pf = {.target = m};
    nn_module_walk(c->root, find_path, &pf);
    for (int32_t i = 0; i < c->n_layers; i++) {
        layer_stat *l = &c->layers[i];
        if (strcmp(l->name, pf.path) != 0)
            continue;
        q8_value_info vi;
        if (q8_model_value(c->qm, l->value_id, &vi) != Q8_OK || !vi.data)
            return;
        int64_t n = 1;
        for (int32_t d = 0; d < vi.ndim; d++)
            n *= vi.shape[d];
        if (n != out->numel)
            return;
        for (int64_t j = 0; j < n; j++) {
            int32_t qv = vi.dtype == Q8_U8 ? ((const uint8_t *)vi.data)[j]
                                           : ((const int8_t *)vi.data)[j];
            /* The QAT output is (q - zp) * scale exactly: recover q. */
            int32_t qq = (int32_t)nearbyintf(out->data[j] / vi.scale) + vi.zero_point;
            int64_t d = llabs((long long)qq - qv);
            l->same += d == 0;
            l->max_diff = d > l->max_diff ? d : l->max_diff;
            l->sum_diff += (double)d;
        }
        l->n += n;
    }
}

int cqat_cmd_compare(int argc, char **argv)
{
    const char *data = NULL, *model = NULL;
    int64_t limit = 0, threads = 0;
    bool json = false;
    cli_opt opts[] = {
        {"--model", CLI_STR, &model, "model name, for a plain QAT state_dict", 0, 0, NULL, "NAME"},
        {"--data", CLI_STR, &data, "data folder (default: Debian's Fashion-MNIST)", 0, 0, NULL, "DIR"},
        {"--limit", CLI_INT, &limit, "use only the first N test images", 0, 1e12, NULL, NULL},
        {"--threads", CLI_INT, &threads, "threads", 0, 1024, NULL, NULL},
        {"--json", CLI_FLAG, &json, "print a JSON summary as the last line", 0, 0, NULL, NULL},
    };
    int n_opts = (int)(sizeof opts / sizeof opts[0]);
    cli_parsed p;
    if (cli_args_parse(argc, argv, opts, n_opts, &p) != AG_OK)
        return cqat_fail("compare");
    if (p.help) {
        cli_args_help("cqat compare QAT.h5 MODEL.h5",
                      "The test images through the QAT model (eval mode: fake quant, observers "
                      "off) and the\nint8 model: identical predictions, identical output "
                      "integers, and per layer the\nlargest and mean difference in integer "
                      "steps.",
                      opts, n_opts);
        return 0;
    }
    if (p.n_positional != 2)
        return cqat_fail_msg("compare", "usage: cqat compare QAT.h5 MODEL.h5");
    ag_set_num_threads((int)threads);
    nn_module *m = NULL;
    qat_qconfig_map *map = NULL;
    cqat_ckpt_meta meta;
    data_dataset test = {0};
    q8_model *qm = q8_model_load(p.positional[1]);
    if (!qm)
        return cqat_fail_msg("compare", "%s", q8_last_error());
    ag_status st = cqat_model_for_file(p.positional[0], model, true, NULL, &m, &map, &meta);
    if (st == AG_OK)
        st = cqat_load_data(data, limit, NULL, &test);
    compare_ctx c = {.qm = qm, .root = m};
    int32_t nv = q8_model_n_values(qm);
    c.layers = calloc((size_t)(nv ? nv : 1), sizeof *c.layers);
    for (int32_t i = 0; st == AG_OK && c.layers && i < nv; i++) {
        q8_value_info vi;
        if (q8_model_value(qm, i, &vi) == Q8_OK && vi.dtype != Q8_F32 && vi.name[0]) {
            snprintf(c.layers[c.n_layers].name, sizeof c.layers[0].name, "%s", vi.name);
            c.layers[c.n_layers++].value_id = i;
        }
    }
    data_transform tf = data_transform_fashion_mnist();
    data_loader ld = {0};
    if (st == AG_OK)
        st = data_loader_init(&ld, &test, 250, false, false, 0, &tf);
    ag_ctx *ctx = ag_ctx_new();
    int64_t k = 0, n = 0, same_pred = 0, qat_correct = 0, q8_correct = 0;
    int32_t labels[250];
    float *y8 = NULL;
    if (m)
        nn_module_eval(m);
    for (int64_t b = 0; st == AG_OK && b < data_loader_num_batches(&ld); b++) {
        int32_t count = 0;
        ag_tensor *x = ag_ctx_tensor(ctx, 4, AG_SHAPE(250, test.c, test.h, test.w));
        st = data_loader_batch(&ld, b, x->data, labels, &count);
        x->shape[0] = count;
        x->numel = (int64_t)count * test.c * test.h * test.w;
        if (!y8) {
            int64_t os[Q8_MAX_DIMS];
            q8_model_output_shape(qm, os);
            k = os[1];
            y8 = malloc((size_t)(250 * k) * sizeof *y8);
        }
        /* every value written (q8_model_run's fused plan skips some), for the layers */
        const void *ins[1] = {x->data};
        q8_value_info yo = {0};
        if (st == AG_OK && (q8_model_run_values(qm, ins, count) != Q8_OK ||
                            q8_model_value(qm, q8_model_output_id(qm, 0), &yo) != Q8_OK))
            st = ag_error(AG_ERR_FORMAT, "%s", q8_last_error());
        else if (st == AG_OK && yo.dtype != Q8_F32)
            st = ag_error(AG_ERR_FORMAT, "compare: the int8 model's output is not f32");
        if (st == AG_OK)
            memcpy(y8, yo.data, (size_t)(count * k) * sizeof *y8);
        ag_no_grad_begin(ctx);
        nn_trace_set(compare_trace, &c);
        ag_tensor *y = st == AG_OK ? nn_forward(m, ctx, x) : NULL;
        nn_trace_set(NULL, NULL);
        ag_no_grad_end(ctx);
        if (st == AG_OK && !y)
            st = ag_last_status();
        for (int32_t i = 0; st == AG_OK && i < count; i++) {
            int64_t pa = 0, pb = 0;
            for (int64_t j = 1; j < k; j++) {
                pa = y->data[i * k + j] > y->data[i * k + pa] ? j : pa;
                pb = y8[i * k + j] > y8[i * k + pb] ? j : pb;
            }
            same_pred += pa == pb;
            qat_correct += pa == labels[i];
            q8_correct += pb == labels[i];
        }
        n += count;
        ag_ctx_reset(ctx);
    }
    if (st == AG_OK && n > 0) {
        printf("compare: %s (QAT, fake quant) vs %s (int8) on %" PRId64 " test images\n",
               p.positional[0], p.positional[1], n);
        printf("  accuracy: QAT %.2f%%, int8 %.2f%%; identical predictions %.2f%%\n",
               100.0 * qat_correct / n, 100.0 * q8_correct / n, 100.0 * same_pred / n);
        printf("  %-28s %12s %10s %10s %10s\n", "layer", "values", "identical", "max diff",
               "mean diff");
        const layer_stat *last = NULL;
        for (int32_t i = 0; i < c.n_layers; i++) {
            const layer_stat *l = &c.layers[i];
            if (!l->n)
                continue;
            printf("  %-28s %12" PRId64 " %9.4f%% %10" PRId64 " %10.5f\n", l->name, l->n,
                   100.0 * l->same / l->n, l->max_diff, l->sum_diff / l->n);
            last = l;
        }
        if (json)
            printf("{\"n\": %" PRId64 ", \"qat_accuracy\": %.6f, \"int8_accuracy\": %.6f, "
                   "\"identical_predictions\": %.6f, \"identical_output_integers\": %.6f}\n",
                   n, (double)qat_correct / n, (double)q8_correct / n, (double)same_pred / n,
                   last ? (double)last->same / last->n : 0.0);
    }
    free(y8);
    free(c.layers);
    ag_ctx_free(ctx);
    data_loader_deinit(&ld);
    data_dataset_deinit(&test);
    nn_module_free(m);
    qat_qconfig_map_free(map);
    q8_model_free(qm);
    return st == AG_OK ? 0 : cqat_fail("compare");
}
