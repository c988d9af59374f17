/* cmd_train.c — `cqat train` and `cqat eval` (float models). */
#include "tools/commands.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/state_h5.h"
#include "tools/args.h"
#include "tools/train.h"

typedef struct train_opts {
    const char *model, *data, *optimizer, *schedule, *init, *resume, *out;
    int64_t epochs, batch_size, warmup_steps, step_size, seed, threads, limit, save_every,
        stop_after;
    double lr, momentum, weight_decay, gamma, label_smoothing;
    bool json, no_progress, profile;
} train_opts;

static train_opts train_defaults(void)
{
    /* BENCHMARK.md's float recipe. */
    return (train_opts){.model = "refcnn", .optimizer = "sgd", .schedule = "cosine",
                        .epochs = 6, .batch_size = 64, .step_size = 1000, .gamma = 0.1,
                        .lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4};
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

/* ---- cqat train ---- */

static ag_status train_run(train_opts *o, const char *args_text, const cqat_ckpt_meta *resumed)
{
    data_dataset train = {0}, test = {0};
    nn_module *m = NULL;
    optim_optimizer *opt = NULL;
    nn_param_list pl = {0};
    cqat_ckpt_meta meta = {0};
    ag_set_num_threads((int)o->threads);
    if (o->profile)
        setenv("CQAT_PROFILE", "1", 1); /* read by ag_ctx_new in the training loop */
    ag_status st = cqat_load_data(o->data, o->limit, &train, &test);
    if (st != AG_OK)
        goto done;
    if (resumed) {
        meta = *resumed;
    } else {
        st = nn_zoo_config_default(o->model, &meta.model);
        meta.model.in_channels = train.c;
        meta.model.in_h = train.h;
        meta.model.in_w = train.w;
        meta.model.num_classes = train.n_classes;
        snprintf(meta.kind, sizeof meta.kind, "float");
        ag_rng_seed(&meta.rng, (uint64_t)o->seed, 3); /* dropout stream */
    }
    snprintf(meta.train_args, sizeof meta.train_args, "%s", args_text);
    ag_rng init_rng;
    ag_rng_seed(&init_rng, (uint64_t)o->seed, 1);
    if (st == AG_OK && !(m = nn_zoo_new(&meta.model, &init_rng)))
        st = ag_last_status();
    if (st == AG_OK && o->init && !resumed)
        st = nn_state_load_file(o->init, m, NULL);
    if (st == AG_OK)
        st = nn_param_list_get(m, &pl);
    if (st == AG_OK)
        st = build_optimizer(o, &pl, &opt);
    if (st == AG_OK && resumed)
        st = cqat_ckpt_load(o->resume, m, opt);
    if (st != AG_OK)
        goto done;

    char out_default[128];
    snprintf(out_default, sizeof out_default, "%s-float.h5", meta.model.name);
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
    st = optim_schedule_check(&fa.schedule);
    if (st != AG_OK)
        goto done;
    printf("train: %s (%" PRId64 " parameters) on %s, %" PRId64 " train / %" PRId64
           " test images, %" PRId64 " epochs of %" PRId64 " steps, batch %" PRId64
           ", %s lr %g %s, %d threads%s\n",
           meta.model.name, nn_param_count(m), train.source, train.n, test.n, o->epochs, nb,
           o->batch_size, o->optimizer, o->lr, o->schedule, ag_num_threads(),
           resumed ? ", resumed" : "");
    if (resumed)
        printf("train: resuming at epoch %" PRId64 ", step %" PRId64 "\n",
               meta.step / nb + 1, meta.step);
    cqat_fit_result res;
    st = cqat_fit(&fa, &res);
    if (st != AG_OK)
        goto done;
    if (res.steps < nb * o->epochs) {
        printf("train: stopped after %" PRId64 " steps as asked, saved %s (continue with "
               "--resume %s)\n", res.steps, fa.out, fa.out);
        goto done;
    }
    printf("train: done, %" PRId64 " steps, test accuracy %.2f%%, saved %s\n", res.steps,
           100.0 * res.test.accuracy, fa.out);
    if (o->json)
        printf("{\"accuracy\": %.6f, \"loss\": %.6f, \"train_loss\": %.6f, \"samples_per_s\": "
               "%.1f, \"steps\": %" PRId64 ", \"checkpoint\": \"%s\"}\n",
               res.test.accuracy, res.test.loss, res.train_loss, res.samples_per_s, res.steps,
               fa.out);
done:
    optim_free(opt);
    nn_param_list_deinit(&pl);
    nn_module_free(m);
    data_dataset_deinit(&train);
    data_dataset_deinit(&test);
    return st;
}

int cqat_cmd_train(int argc, char **argv)
{
    train_opts o = train_defaults();
    cli_opt opts[] = {TRAIN_OPTIONS(o)};
    int n_opts = (int)(sizeof opts / sizeof opts[0]);
    cli_parsed p;
    if (cli_args_parse(argc, argv, opts, n_opts, &p) != AG_OK)
        return cqat_fail("train");
    if (p.help) {
        cli_args_help("cqat train [options]",
                      "Train a float model from the zoo on Fashion-MNIST (BENCHMARK.md's recipe "
                      "by default)\nand save an HDF5 checkpoint after every epoch.",
                      opts, n_opts);
        return 0;
    }
    if (p.n_positional)
        return cqat_fail_msg("train", "unexpected argument '%s'", p.positional[0]);
    char args_text[2048];
    join_args(argc, argv, args_text, sizeof args_text);
    if (!o.resume)
        return train_run(&o, args_text, NULL) == AG_OK ? 0 : cqat_fail("train");

    /* Resume: the saved command line first, then what this command line changes. */
    cqat_ckpt_meta meta;
    if (cqat_ckpt_read_meta(o.resume, &meta) != AG_OK)
        return cqat_fail("train");
    if (strcmp(meta.kind, "float") != 0)
        return cqat_fail_msg("train", "%s is a %s checkpoint (use cqat %s --resume)", o.resume,
                             meta.kind, meta.kind);
    char saved[2048];
    snprintf(saved, sizeof saved, "%s", meta.train_args);
    char *sargv[256];
    int sargc = split_args(saved, sargv, 256);
    train_opts r = train_defaults();
    cli_opt ropts[] = {TRAIN_OPTIONS(r)};
    if (cli_args_parse(sargc, sargv, ropts, n_opts, &p) != AG_OK ||
        cli_args_parse(argc, argv, ropts, n_opts, &p) != AG_OK)
        return cqat_fail("train");
    return train_run(&r, args_text, &meta) == AG_OK ? 0 : cqat_fail("train");
}

/* ---- cqat eval (float checkpoints and state_dicts) ---- */

int cqat_cmd_eval_float(const char *path, const char *model_name, const char *data,
                        int64_t limit, bool json)
{
    cqat_ckpt_meta meta = {0};
    bool is_ckpt = false;
    data_dataset test = {0};
    nn_module *m = NULL;
    ag_status st = cqat_ckpt_probe(path, &is_ckpt);
    if (st == AG_OK && is_ckpt)
        st = cqat_ckpt_read_meta(path, &meta);
    if (st == AG_OK && !is_ckpt) {
        if (!model_name)
            return cqat_fail_msg("eval", "%s is a plain state_dict: say which model with --model",
                                 path);
        st = nn_zoo_config_default(model_name, &meta.model);
    }
    if (st == AG_OK)
        st = cqat_load_data(data, limit, NULL, &test);
    ag_rng rng;
    ag_rng_seed(&rng, 0, 1);
    if (st == AG_OK && !(m = nn_zoo_new(&meta.model, &rng)))
        st = ag_last_status();
    if (st == AG_OK)
        st = nn_state_load_file(path, m, NULL);
    cqat_eval_result r;
    if (st == AG_OK)
        st = cqat_evaluate(m, &test, 256, &r);
    if (st == AG_OK) {
        printf("eval: %s (%s) on %" PRId64 " test images: accuracy %.2f%%, loss %.4f\n", path,
               meta.model.name, r.n, 100.0 * r.accuracy, r.loss);
        if (json)
            cqat_print_json_eval("float", &r, 0);
    }
    nn_module_free(m);
    data_dataset_deinit(&test);
    return st == AG_OK ? 0 : cqat_fail("eval");
}
