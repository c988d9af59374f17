/* cmd_train.c — `cqat train` (float), `cqat qat` (quantization-aware fine-tuning) and
 * `cqat eval`. Both training commands share one option table and one run: qat adds
 * fusion, prepare_qat and the BN / observer freezing schedule on top. */
#include "tools/commands.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/state_h5.h"
#include "tools/args.h"
#include "tools/qat_model.h"
#include "tools/train.h"

typedef struct train_opts {
    const char *model, *data, *optimizer, *schedule, *init, *resume, *out;
    int64_t epochs, batch_size, warmup_steps, step_size, seed, threads, limit, save_every,
        stop_after;
    double lr, momentum, weight_decay, gamma, label_smoothing;
    bool json, no_progress, profile;
    /* qat only */
    bool qat, learnable;
    const char *qconfig;
    int64_t bits_weight, bits_activation, freeze_bn_after, freeze_observers_after;
} train_opts;

static train_opts train_defaults(bool qat)
{
    /* BENCHMARK.md's float recipe, and its QAT fine-tune: 2 epochs at lr 0.001 with the
     * default fbgemm QAT qconfig; BN statistics and observers frozen for the last epoch,
     * so that the scales the model ends with are the ones it was tuned under. */
    train_opts o = {.model = "refcnn", .optimizer = "sgd", .schedule = "cosine",
                    .epochs = 6, .batch_size = 64, .step_size = 1000, .gamma = 0.1,
                    .lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4};
    if (qat) {
        o.qat = true;
        o.model = NULL; /* taken from --init when it is a checkpoint */
        o.epochs = 2;
        o.lr = 0.001;
        o.qconfig = "fbgemm";
        o.bits_weight = o.bits_activation = 8;
        o.freeze_bn_after = 1;
        o.freeze_observers_after = 1;
    }
    return o;
}

#define TRAIN_OPTIONS(o)                                                                         \
    {"--model", CLI_STR, &(o).model, "model from the zoo (lenet5, refcnn, mobilenet-tiny)", 0, 0, NULL, "NAME"}, \
    {"--data", CLI_STR, &(o).data, "data folder (default: Debian's Fashion-MNIST)", 0, 0, NULL, "DIR"}, \
    {"--epochs", CLI_INT, &(o).epochs, "epochs in all (default 6)", 0, 100000, NULL, NULL},     \
    {"--batch-size", CLI_INT, &(o).batch_size, "mini-batch size (default 64)", 1, 1 << 20, NULL, NULL}, \
    {"--lr", CLI_FLOAT, &(o).lr, "base learning rate (default 0.05)", 0, 1e6, NULL, NULL},       \
    {"--momentum", CLI_FLOAT, &(o).momentum, "SGD momentum (default 0.9)", 0, 1, NULL, NULL},    \
    {"--weight-decay", CLI_FLOAT, &(o).weight_decay, "weight decay (default 5e-4)", 0, 1e3, NULL, NULL}, \
    {"--optimizer", CLI_CHOICE, &(o).optimizer, "optimizer (default sgd)", 0, 0, "sgd|adam|adamw", NULL}, \
    {"--schedule", CLI_CHOICE, &(o).schedule, "learning-rate schedule (default cosine)", 0, 0, "constant|step|cosine", NULL}, \
    {"--warmup-steps", CLI_INT, &(o).warmup_steps, "linear warm-up steps (default 0)", 0, 1e15, NULL, NULL}, \
    {"--step-size", CLI_INT, &(o).step_size, "step schedule: steps between decays", 1, 1e15, NULL, NULL}, \
    {"--gamma", CLI_FLOAT, &(o).gamma, "step schedule: decay factor (default 0.1)", 0, 1, NULL, NULL}, \
    {"--label-smoothing", CLI_FLOAT, &(o).label_smoothing, "cross-entropy label smoothing", 0, 1, NULL, NULL}, \
    {"--seed", CLI_INT, &(o).seed, "seed for init, shuffling and dropout (default 0)", 0, 1e18, NULL, NULL}, \
    {"--threads", CLI_INT, &(o).threads, "threads (default: CQAT_NUM_THREADS or all cores)", 0, 1024, NULL, NULL}, \
    {"--init", CLI_STR, &(o).init, "start from these weights (state_dict HDF5)", 0, 0, NULL, "FILE"}, \
    {"--resume", CLI_STR, &(o).resume, "continue the run saved in this checkpoint", 0, 0, NULL, "FILE"}, \
    {"--limit", CLI_INT, &(o).limit, "use only the first N train and test images", 0, 1e12, NULL, NULL}, \
    {"--out", CLI_STR, &(o).out, "checkpoint to write (default MODEL-float.h5)", 0, 0, NULL, "FILE"}, \
    {"--save-every", CLI_INT, &(o).save_every, "also save every N steps", 0, 1e15, NULL, NULL}, \
    {"--stop-after", CLI_INT, &(o).stop_after, "stop after N steps in all (saved; resumable)", 0, 1e15, NULL, NULL}, \
    {"--no-progress", CLI_FLAG, &(o).no_progress, "no progress bar", 0, 0, NULL, NULL},         \
    {"--profile", CLI_FLAG, &(o).profile, "print time per op kind (as CQAT_PROFILE=1)", 0, 0, NULL, NULL}, \
    {"--json", CLI_FLAG, &(o).json, "print a JSON summary as the last line", 0, 0, NULL, NULL}

#define QAT_OPTIONS(o)                                                                           \
    {"--qconfig", CLI_STR, &(o).qconfig, "fbgemm (default), qnnpack, per-tensor, per-channel, or a qconfig name", 0, 0, NULL, "NAME"}, \
    {"--freeze-bn-after-epoch", CLI_INT, &(o).freeze_bn_after, "freeze BN statistics from this epoch (0-based; default 1; -1 never)", -1, 1e9, NULL, "K"}, \
    {"--freeze-observers-after-epoch", CLI_INT, &(o).freeze_observers_after, "freeze scales from this epoch (default 1; -1 never)", -1, 1e9, NULL, "K"}, \
    {"--bits-weight", CLI_INT, &(o).bits_weight, "weight bits (2..8, default 8)", 2, 8, NULL, "B"}, \
    {"--bits-activation", CLI_INT, &(o).bits_activation, "activation bits (2..8, default 8)", 2, 8, NULL, "B"}, \
    {"--learnable-scales", CLI_FLAG, &(o).learnable, "learn scales and zero points (LSQ)", 0, 0, NULL, NULL}

/* ---- shared helpers (also used by the qat and eval commands) ---- */

ag_status cqat_load_data(const char *dir, int64_t limit, data_dataset *train,
                         data_dataset *test)
{
    ag_status st = AG_OK;
    if (train)
        st = data_fashion_mnist_load(dir, true, train);
    if (st == AG_OK && test)
        st = data_fashion_mnist_load(dir, false, test);
    if (st != AG_OK)
        return st;
    /* A mismatched pair of files would otherwise fail only at the first evaluation,
     * after a whole epoch of training. */
    if (train && test && (train->c != test->c || train->h != test->h || train->w != test->w))
        return ag_error(AG_ERR_SHAPE, "%s: test images are %dx%dx%d but the training "
                        "images (%s) are %dx%dx%d", test->source, test->c, test->h, test->w,
                        train->source, train->c, train->h, train->w);
    for (int64_t i = 0; train && test && i < test->n; i++)
        if (test->labels[i] >= train->n_classes)
            return ag_error(AG_ERR_FORMAT, "%s: test label %d at index %lld is outside the "
                            "%d classes of the training set (%s)", test->source,
                            test->labels[i], (long long)i, train->n_classes, train->source);
    if (limit > 0) {
        if (train && train->n > limit)
            train->n = limit;
        if (test && test->n > limit)
            test->n = limit;
    }
    return AG_OK;
}

/* Options that steer this invocation only and are not carried into a resumed run. */
static bool is_transient(const char *arg)
{
    /* --threads stays: float sums split over threads round differently, so a resumed
     * run is bitwise identical only with the thread count it started with. */
    static const char *const transient[] = {"--resume", "--stop-after", "--json",
                                            "--no-progress", "--profile"};
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++) {
        size_t n = strlen(transient[i]);
        if (strncmp(arg, transient[i], n) == 0 && (arg[n] == '\0' || arg[n] == '='))
            return true;
    }
    return false;
}

/* The command line as one string, one argument per line (re-parsed on --resume),
 * without the transient options. */
static void join_args(int argc, char **argv, char *buf, size_t size)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < argc && off < size; i++) {
        if (is_transient(argv[i])) {
            bool has_value = !strchr(argv[i], '=') && strcmp(argv[i], "--json") != 0 &&
                             strcmp(argv[i], "--no-progress") != 0 &&
                             strcmp(argv[i], "--profile") != 0;
            i += has_value;
            continue;
        }
        off += (size_t)snprintf(buf + off, size - off, "%s%s", off ? "\n" : "", argv[i]);
    }
}

/* Splits a join_args string in place into argv. */
static int split_args(char *s, char **argv, int max)
{
    int n = 0;
    if (!*s)
        return 0;
    while (n < max) {
        argv[n++] = s;
        char *nl = strchr(s, '\n');
        if (!nl)
            break;
        *nl = '\0';
        s = nl + 1;
    }
    return n;
}

static ag_status build_optimizer(const train_opts *o, nn_param_list *pl, optim_optimizer **out)
{
    if (strcmp(o->optimizer, "sgd") == 0) {
        optim_sgd_args a = {.lr = o->lr, .momentum = o->momentum,
                            .weight_decay = o->weight_decay};
        *out = optim_sgd_new(pl->params, (const char *const *)pl->names, pl->n, &a);
    } else {
        bool w = strcmp(o->optimizer, "adamw") == 0;
        optim_adam_args a = w ? optim_adamw_defaults() : optim_adam_defaults();
        a.lr = o->lr;
        a.weight_decay = o->weight_decay;
        *out = w ? optim_adamw_new(pl->params, (const char *const *)pl->names, pl->n, &a)
                 : optim_adam_new(pl->params, (const char *const *)pl->names, pl->n, &a);
    }
    return *out ? AG_OK : ag_last_status();
}

static optim_schedule build_schedule(const train_opts *o, int64_t total_steps)
{
    optim_schedule s = {.base_lr = o->lr, .total_steps = total_steps,
                        .warmup_steps = o->warmup_steps, .step_size = o->step_size,
                        .gamma = o->gamma};
    s.kind = strcmp(o->schedule, "cosine") == 0 ? OPTIM_SCHEDULE_COSINE
             : strcmp(o->schedule, "step") == 0 ? OPTIM_SCHEDULE_STEP
                                                 : OPTIM_SCHEDULE_CONSTANT;
    return s;
}

void cqat_print_json_eval(const char *kind, const cqat_eval_result *r, double extra_sps)
{
    printf("{\"kind\": \"%s\", \"accuracy\": %.6f, \"loss\": %.6f, \"n\": %" PRId64
           ", \"eval_samples_per_s\": %.1f",
           kind, r->accuracy, r->loss, r->n, r->seconds > 0 ? (double)r->n / r->seconds : 0.0);
    if (extra_sps > 0)
        printf(", \"samples_per_s\": %.1f", extra_sps);
    printf("}\n");
}

/* ---- cqat train / cqat qat ---- */

typedef struct qat_hook_state {
    cqat_qat_spec spec;
} qat_hook_state;

static ag_status qat_epoch_begin(void *ud, nn_module *m, int64_t epoch)
{
    cqat_qat_apply_schedule(m, &((qat_hook_state *)ud)->spec, epoch);
    return AG_OK;
}

static void qat_eval_begin(void *ud, nn_module *m)
{
    (void)ud;
    qat_enable_observer_all(m, false);
}

/* The model of a new run: float from the zoo (+ --init), or fused and prepared for QAT. */
static ag_status build_model(const train_opts *o, cqat_ckpt_meta *meta, const char *init,
                             const qat_hook_state *qs, nn_module **m, qat_qconfig_map **map)
{
    if (o->qat)
        return cqat_qat_build(&meta->model, &qs->spec, init, m, map);
    ag_rng init_rng;
    ag_rng_seed(&init_rng, (uint64_t)o->seed, 1);
    if (!(*m = nn_zoo_new(&meta->model, &init_rng)))
        return ag_last_status();
    return init ? nn_state_load_file(init, *m, NULL) : AG_OK;
}

/* For qat: the model named by the --init checkpoint, else --model. */
static ag_status model_config(const train_opts *o, const data_dataset *train, nn_zoo_config *cfg)
{
    const char *name = o->model;
    cqat_ckpt_meta init_meta;
    bool is_ckpt = false;
    if (o->init && cqat_ckpt_probe(o->init, &is_ckpt) == AG_OK && is_ckpt &&
        cqat_ckpt_read_meta(o->init, &init_meta) == AG_OK) {
        if (name && strcmp(name, init_meta.model.name) != 0)
            return ag_error(AG_ERR_ARG, "--model %s, but %s holds a %s", name, o->init,
                            init_meta.model.name);
        *cfg = init_meta.model;
        return AG_OK;
    }
    if (!name && o->qat)
        return ag_error(AG_ERR_ARG, "say which model with --model (--init %s is a plain "
                                    "state_dict)", o->init ? o->init : "");
    ag_status st = nn_zoo_config_default(name ? name : "refcnn", cfg);
    cfg->in_channels = train->c;
    cfg->in_h = train->h;
    cfg->in_w = train->w;
    cfg->num_classes = train->n_classes;
    return st;
}

static ag_status train_run(train_opts *o, const char *args_text, const cqat_ckpt_meta *resumed)
{
    const char *cmd = o->qat ? "qat" : "train";
    data_dataset train = {0}, test = {0};
    nn_module *m = NULL;
    qat_qconfig_map *map = NULL;
    optim_optimizer *opt = NULL;
    nn_param_list pl = {0};
    cqat_ckpt_meta meta = {0};
    qat_hook_state qs = {0};
    ag_set_num_threads((int)o->threads);
    if (o->profile)
        setenv("CQAT_PROFILE", "1", 1); /* read by ag_ctx_new in the training loop */
    ag_status st = cqat_load_data(o->data, o->limit, &train, &test);
    if (st == AG_OK && o->qat && !o->init && !resumed)
        st = ag_error(AG_ERR_ARG, "QAT fine-tunes float weights: give them with --init FLOAT.h5");
    if (st != AG_OK)
        goto done;
    if (resumed) {
        meta = *resumed;
        if (o->qat)
            st = cqat_qat_spec_parse(meta.extra, &qs.spec);
    } else {
        st = model_config(o, &train, &meta.model);
        snprintf(meta.kind, sizeof meta.kind, "%s", o->qat ? "qat" : "float");
        ag_rng_seed(&meta.rng, (uint64_t)o->seed, 3); /* dropout stream */
        if (st == AG_OK && o->qat) {
            st = cqat_qat_resolve_qconfig(o->qconfig, qs.spec.qconfig, sizeof qs.spec.qconfig);
            qs.spec.bits_weight = (int32_t)o->bits_weight;
            qs.spec.bits_activation = (int32_t)o->bits_activation;
            qs.spec.learnable = o->learnable;
            qs.spec.freeze_bn_after = o->freeze_bn_after;
            qs.spec.freeze_observers_after = o->freeze_observers_after;
            cqat_qat_spec_format(&qs.spec, meta.extra, sizeof meta.extra);
        }
    }
    snprintf(meta.train_args, sizeof meta.train_args, "%s", args_text);
    if (st == AG_OK)
        st = build_model(o, &meta, resumed ? NULL : o->init, &qs, &m, &map);
    if (st == AG_OK)
        st = nn_param_list_get(m, &pl);
    if (st == AG_OK)
        st = build_optimizer(o, &pl, &opt);
    if (st == AG_OK && resumed)
        st = cqat_ckpt_load(o->resume, m, opt);
    if (st != AG_OK)
        goto done;

    char out_default[128];
    snprintf(out_default, sizeof out_default, "%s-%s.h5", meta.model.name, meta.kind);
    data_loader probe;
    st = data_loader_init(&probe, &train, (int32_t)o->batch_size, false, false, 0, NULL);
    if (st != AG_OK)
        goto done;
    int64_t nb = data_loader_num_batches(&probe);
    data_loader_deinit(&probe);
    cqat_fit_args fa = {
        .model = m, .opt = opt, .schedule = build_schedule(o, nb * o->epochs),
        .train = &train, .test = &test, .transform = data_transform_fashion_mnist(),
        .batch_size = (int32_t)o->batch_size, .epochs = o->epochs, .seed = (uint64_t)o->seed,
        .label_smoothing = (float)o->label_smoothing, .save_every = o->save_every,
        .stop_after_steps = o->stop_after, .out = o->out ? o->out : out_default,
        .meta = &meta, .progress = !o->no_progress && isatty(STDERR_FILENO), .log = stdout};
    if (o->qat)
        fa.hooks = (cqat_fit_hooks){.epoch_begin = qat_epoch_begin, .eval_begin = qat_eval_begin,
                                    .ud = &qs};
    st = optim_schedule_check(&fa.schedule);
    if (st != AG_OK)
        goto done;
    printf("%s: %s (%" PRId64 " parameters) on %s, %" PRId64 " train / %" PRId64
           " test images, %" PRId64 " epochs of %" PRId64 " steps, batch %" PRId64
           ", %s lr %g %s, %d threads%s\n",
           cmd, meta.model.name, nn_param_count(m), train.source, train.n, test.n, o->epochs,
           nb, o->batch_size, o->optimizer, o->lr, o->schedule, ag_num_threads(),
           resumed ? ", resumed" : "");
    if (o->qat)
        printf("qat: %s\n", meta.extra);
    if (resumed)
        printf("%s: resuming at epoch %" PRId64 ", step %" PRId64 "\n", cmd,
               meta.step / nb + 1, meta.step);
    cqat_fit_result res;
    st = cqat_fit(&fa, &res);
    if (st != AG_OK)
        goto done;
    if (res.steps < nb * o->epochs) {
        printf("%s: stopped after %" PRId64 " steps as asked, saved %s (continue with "
               "--resume %s)\n", cmd, res.steps, fa.out, fa.out);
        goto done;
    }
    printf("%s: done, %" PRId64 " steps, test accuracy %.2f%%%s, saved %s\n", cmd, res.steps,
           100.0 * res.test.accuracy, o->qat ? " with fake quant" : "", fa.out);
    if (o->json)
        printf("{\"kind\": \"%s\", \"accuracy\": %.6f, \"loss\": %.6f, \"train_loss\": %.6f, "
               "\"samples_per_s\": %.1f, \"steps\": %" PRId64 ", \"checkpoint\": \"%s\"}\n",
               meta.kind, res.test.accuracy, res.test.loss, res.train_loss, res.samples_per_s,
               res.steps, fa.out);
done:
    optim_free(opt);
    nn_param_list_deinit(&pl);
    nn_module_free(m);
    qat_qconfig_map_free(map);
    data_dataset_deinit(&train);
    data_dataset_deinit(&test);
    return st;
}

static int train_command(int argc, char **argv, bool qat)
{
    const char *cmd = qat ? "qat" : "train";
    train_opts o = train_defaults(qat);
    cli_opt opts[] = {TRAIN_OPTIONS(o), QAT_OPTIONS(o)};
    int n_opts = (int)(sizeof opts / sizeof opts[0]) - (qat ? 0 : 6);
    cli_parsed p;
    if (cli_args_parse(argc, argv, opts, n_opts, &p) != AG_OK)
        return cqat_fail(cmd);
    if (p.help) {
        if (qat)
            cli_args_help("cqat qat --init FLOAT.h5 [options]",
                          "Quantization-aware fine-tuning: fuse conv-bn(-relu) and linear-relu, "
                          "prepare_qat with the\nqconfig, train with fake quant (BENCHMARK.md's "
                          "QAT recipe by default), save a QAT checkpoint\nwith PyTorch's "
                          "prepared state_dict keys.",
                          opts, n_opts);
        else
            cli_args_help("cqat train [options]",
                          "Train a float model from the zoo on Fashion-MNIST (BENCHMARK.md's "
                          "recipe by default)\nand save an HDF5 checkpoint after every epoch.",
                          opts, n_opts);
        return 0;
    }
    if (p.n_positional)
        return cqat_fail_msg(cmd, "unexpected argument '%s'", p.positional[0]);
    char args_text[2048];
    join_args(argc, argv, args_text, sizeof args_text);
    if (!o.resume)
        return train_run(&o, args_text, NULL) == AG_OK ? 0 : cqat_fail(cmd);

    /* Resume: the saved command line first, then what this command line changes. */
    cqat_ckpt_meta meta;
    if (cqat_ckpt_read_meta(o.resume, &meta) != AG_OK)
        return cqat_fail(cmd);
    if (strcmp(meta.kind, qat ? "qat" : "float") != 0)
        return cqat_fail_msg(cmd, "%s is a %s checkpoint (use cqat %s --resume)", o.resume,
                             meta.kind, strcmp(meta.kind, "qat") == 0 ? "qat" : "train");
    char saved[2048];
    snprintf(saved, sizeof saved, "%s", meta.train_args);
    char *sargv[256];
    int sargc = split_args(saved, sargv, 256);
    train_opts r = train_defaults(qat);
    cli_opt ropts[] = {TRAIN_OPTIONS(r), QAT_OPTIONS(r)};
    if (cli_args_parse(sargc, sargv, ropts, n_opts, &p) != AG_OK ||
        cli_args_parse(argc, argv, ropts, n_opts, &p) != AG_OK)
        return cqat_fail(cmd);
    /* Keep the whole recipe for the next resume: the saved arguments, then this call's. */
    char combined[sizeof meta.train_args + sizeof args_text + 2];
    snprintf(combined, sizeof combined, "%s%s%s", meta.train_args,
             meta.train_args[0] && args_text[0] ? "\n" : "", args_text);
    return train_run(&r, combined, &meta) == AG_OK ? 0 : cqat_fail(cmd);
}

int cqat_cmd_train(int argc, char **argv) { return train_command(argc, argv, false); }

int cqat_cmd_qat(int argc, char **argv) { return train_command(argc, argv, true); }

/* ---- cqat eval (float and QAT checkpoints, plain state_dicts) ---- */

/* Builds the model a file describes: a cqat checkpoint names its model (and, for QAT,
 * its qconfig); a plain state_dict needs --model, and --qat for a QAT-prepared one. */
ag_status cqat_model_for_file(const char *path, const char *model_name, bool qat_state,
                              const char *qconfig, nn_module **m, qat_qconfig_map **map,
                              cqat_ckpt_meta *meta)
{
    bool is_ckpt = false;
    cqat_qat_spec spec;
    *m = NULL;
    *map = NULL;
    memset(meta, 0, sizeof *meta);
    ag_status st = cqat_ckpt_probe(path, &is_ckpt);
    if (st == AG_OK && is_ckpt) {
        st = cqat_ckpt_read_meta(path, meta);
        qat_state = strcmp(meta->kind, "qat") == 0;
        if (st == AG_OK && qat_state)
            st = cqat_qat_spec_parse(meta->extra, &spec);
    } else if (st == AG_OK) {
        if (!model_name)
            return ag_error(AG_ERR_ARG, "%s is a plain state_dict: say which model with --model",
                            path);
        st = nn_zoo_config_default(model_name, &meta->model);
        snprintf(meta->kind, sizeof meta->kind, "%s", qat_state ? "qat" : "float");
        if (st == AG_OK && qat_state)
            st = cqat_qat_spec_from_state(path, &spec);
    }
    if (st == AG_OK && qat_state && qconfig)
        st = cqat_qat_resolve_qconfig(qconfig, spec.qconfig, sizeof spec.qconfig);
    if (st != AG_OK)
        return st;
    if (qat_state) {
        st = cqat_qat_build(&meta->model, &spec, NULL, m, map);
    } else {
        ag_rng rng;
        ag_rng_seed(&rng, 0, 1);
        if (!(*m = nn_zoo_new(&meta->model, &rng)))
            st = ag_last_status();
    }
    if (st == AG_OK)
        st = nn_state_load_file(path, *m, NULL);
    if (st == AG_OK && qat_state) {
        /* Evaluation and convert see the model as trained: scales fixed, BN statistics
         * frozen (eval mode uses the running statistics). */
        qat_enable_observer_all(*m, false);
        qat_freeze_bn_stats(*m);
    }
    if (st != AG_OK) {
        nn_module_free(*m);
        qat_qconfig_map_free(*map);
        *m = NULL;
        *map = NULL;
    }
    return st;
}

int cqat_cmd_eval_file(const char *path, const char *model_name, bool qat_state,
                       const char *qconfig, const char *data, int64_t limit, bool json)
{
    data_dataset test = {0};
    nn_module *m = NULL;
    qat_qconfig_map *map = NULL;
    cqat_ckpt_meta meta;
    ag_status st = cqat_model_for_file(path, model_name, qat_state, qconfig, &m, &map, &meta);
    if (st == AG_OK)
        st = cqat_load_data(data, limit, NULL, &test);
    cqat_eval_result r;
    if (st == AG_OK)
        st = cqat_evaluate(m, &test, 256, &r);
    if (st == AG_OK) {
        bool qat = strcmp(meta.kind, "qat") == 0;
        printf("eval: %s (%s%s) on %" PRId64 " test images: accuracy %.2f%%, loss %.4f\n", path,
               meta.model.name, qat ? ", fake quant" : "", r.n, 100.0 * r.accuracy, r.loss);
        if (json)
            cqat_print_json_eval(meta.kind, &r, 0);
    }
    nn_module_free(m);
    qat_qconfig_map_free(map);
    data_dataset_deinit(&test);
    return st == AG_OK ? 0 : cqat_fail("eval");
}
