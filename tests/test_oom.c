/* test_oom.c — out of memory is an error, not a crash (issue 7).
 *
 * Each test runs one piece of work again and again, the first time with cqat's first
 * allocation failing, then its second, ..., until a run makes every allocation it asks
 * for and completes. Every run with a failed allocation must return an error with the
 * "out of memory" status and a message, and leave nothing behind (ASan's leak checker
 * and valgrind see a leaked block). Saving is not here: it allocates nothing of its own
 * (tensors are written from where they live), and a failed write is tested in
 * tests/cli/test_cli.py. Allocations
 * fail through tests/oom/oom_inject.c (the program is linked with --wrap=malloc...),
 * so libc's, libhdf5's and OpenBLAS's own allocations are not affected. */
#include "test_util.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "data/data.h"
#include "nn/zoo.h"
#include "oom/oom_inject.h"
#include "optim/optim.h"
#include "qat/convert.h"
#include "tools/commands.h"

#define QAT_WEIGHTS CQAT_TEST_DATA_DIR "/torch_refcnn_qat.h5"

typedef struct sweep_result {
    long runs;        /* runs with an injected failure that reported it */
    long absorbed;    /* runs that completed anyway (an optional allocation, e.g. the
                         arena merging its blocks at a reset: it then starts empty and
                         grows again block by block) */
    long allocations; /* allocations made by the run that completed */
} sweep_result;

typedef bool (*scenario_fn)(void *ud); /* true: completed; false: failed, error set */
typedef bool (*nomem_fn)(void);        /* the error set is "out of memory" */

static bool ag_nomem(void) { return ag_last_status() == AG_ERR_NOMEM && *ag_last_error(); }
static bool q8_nomem(void) { return q8_last_status() == Q8_ERR_NOMEM && *q8_last_error(); }

/* Fail allocation 1, 2, ... of fn until it completes without a failed allocation; a run
 * that fails must report out of memory (a run may also complete anyway, if the failed
 * allocation was one it can do without). */
static sweep_result oom_sweep(const char *what, scenario_fn fn, void *ud, nomem_fn nomem)
{
    enum { MAX_RUNS = 20000 };
    sweep_result r = {0, 0, 0};
    for (long k = 1; k <= MAX_RUNS; k++) {
        oom_arm(k);
        bool ok = fn(ud);
        long seen = oom_allocations_seen();
        bool injected = oom_disarm();
        if (!injected) {
            ck_assert_msg(ok, "%s: failed with every allocation granted: %s", what,
                          ag_last_error());
            r.allocations = seen;
            printf("%s: %ld allocations; %ld runs failed cleanly, %ld completed anyway\n",
                   what, seen, r.runs, r.absorbed);
            return r;
        }
        if (ok) {
            r.absorbed++;
            continue;
        }
        ck_assert_msg(nomem(), "%s: allocation %ld failed, reported as: '%s' / '%s'", what, k,
                      ag_last_error(), q8_last_error());
        r.runs++;
    }
    ck_abort_msg("%s: never completed in %d runs", what, MAX_RUNS);
    return r;
}

/* ---- a training step: context, model, optimizer, forward, backward, update ---- */

static bool train_step(void *ud)
{
    (void)ud;
    bool ok = false;
    ag_ctx *ctx = ag_ctx_new();
    nn_module *m = NULL;
    optim_optimizer *opt = NULL;
    nn_param_list pl = {0};
    nn_zoo_config cfg;
    if (!ctx || nn_zoo_config_default("refcnn", &cfg) != AG_OK)
        goto out;
    if (!(m = nn_zoo_new(&cfg, ag_ctx_rng(ctx))) || nn_param_list_get(m, &pl) != AG_OK)
        goto out;
    optim_sgd_args a = {.lr = 0.1, .momentum = 0.9};
    if (!(opt = optim_sgd_new(pl.params, (const char *const *)pl.names, pl.n, &a)))
        goto out;
    for (int step = 0; step < 2; step++) { /* the second step reuses the grown arena */
        ag_ctx_reset(ctx);
        ag_tensor *x = ag_ctx_zeros(ctx, 4, (int64_t[]){3, 1, 28, 28});
        if (!x)
            goto out;
        for (int64_t i = 0; i < x->numel; i++)
            x->data[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
        const int32_t labels[3] = {1, 7, 4};
        optim_zero_grad(opt);
        ag_tensor *loss = ag_cross_entropy(ctx, nn_forward(m, ctx, x), labels, 0.0f);
        if (!loss || ag_backward(ctx, loss) != AG_OK || optim_step(opt) != AG_OK)
            goto out;
    }
    ok = true;
out:
    optim_free(opt);
    nn_param_list_deinit(&pl);
    nn_module_free(m);
    ag_ctx_free(ctx);
    return ok;
}

START_TEST(oom_in_a_training_step_is_an_error)
{
    sweep_result r = oom_sweep("training step", train_step, NULL, ag_nomem);
    ck_assert_int_gt(r.runs, 10); /* the sweep reached the model, optimizer and arena */
    ck_assert_int_le(r.absorbed, 2); /* only the arena's merge of its blocks may fail */
}
END_TEST

/* ---- loading a QAT checkpoint (model spec, qconfig, state) ---- */

static bool load_qat_checkpoint(void *ud)
{
    nn_module **out = ud;
    nn_module *m = NULL;
    qat_qconfig_map *map = NULL;
    cqat_ckpt_meta meta;
    ag_status st = cqat_model_for_file(QAT_WEIGHTS, "refcnn", true, NULL, &m, &map, &meta);
    qat_qconfig_map_free(map);
    if (st != AG_OK) {
        ck_assert_ptr_null(m);
        return false;
    }
    if (out)
        *out = m;
    else
        nn_module_free(m);
    return true;
}

START_TEST(oom_loading_a_checkpoint_is_an_error)
{
    sweep_result r = oom_sweep("checkpoint load", load_qat_checkpoint, NULL, ag_nomem);
    ck_assert_int_gt(r.runs, 10);
}
END_TEST

/* ---- reading the test set ---- */

static bool load_test_set(void *ud)
{
    (void)ud;
    data_dataset ds;
    if (data_fashion_mnist_load(NULL, false, &ds) != AG_OK)
        return false;
    data_dataset_deinit(&ds);
    return true;
}

START_TEST(oom_reading_a_dataset_is_an_error)
{
    sweep_result r = oom_sweep("dataset load", load_test_set, NULL, ag_nomem);
    ck_assert_int_gt(r.runs, 1);
}
END_TEST

/* ---- convert, then load and run the int8 model ---- */

static nn_module *qat_model;

static bool convert_model(void *ud)
{
    qat_convert_opts o = {.in_channels = 1, .in_h = 28, .in_w = 28,
                          .source_model = "refcnn"};
    q8_model *qm = qat_convert(qat_model, &o);
    if (!qm)
        return false;
    if (ud)
        *(q8_model **)ud = qm;
    else
        q8_model_free(qm);
    return true;
}

START_TEST(oom_converting_a_model_is_an_error)
{
    ck_assert(load_qat_checkpoint(&qat_model));
    sweep_result r = oom_sweep("convert", convert_model, NULL, ag_nomem);
    ck_assert_int_gt(r.runs, 10);
    nn_module_free(qat_model);
}
END_TEST

static bool load_and_run_q8(void *ud)
{
    const char *path = ud;
    q8_model *m = q8_model_load(path);
    if (!m)
        return false;
    static float x[3 * 784], y[3 * 10];
    for (int i = 0; i < 3 * 784; i++)
        x[i] = (float)((i * 13) % 29) / 14.0f - 1.0f;
    bool ok = q8_model_run(m, x, 3, y) == Q8_OK;
    q8_model_free(m);
    return ok;
}

START_TEST(oom_loading_and_running_an_int8_model_is_an_error)
{
    ck_assert(load_qat_checkpoint(&qat_model));
    q8_model *qm = NULL;
    ck_assert_msg(convert_model(&qm), "%s", ag_last_error());
    char path[64];
    snprintf(path, sizeof path, "/tmp/cqat-oom-q8-%ld.h5", (long)getpid());
    ck_assert_msg(q8_model_save(qm, path) == Q8_OK, "%s", q8_last_error());
    q8_model_free(qm);
    nn_module_free(qat_model);
    sweep_result r = oom_sweep("int8 load and run", load_and_run_q8, path, q8_nomem);
    unlink(path);
    ck_assert_int_gt(r.runs, 10);
}
END_TEST

/* One case per test, so that CK_RUN_CASE=convert (with CQAT_OOM_TRAP=k) runs one sweep. */
static void add_case(Suite *s, const char *name, const TTest *test)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test);
    suite_add_tcase(s, tc);
}

Suite *make_suite(void)
{
    Suite *s = suite_create("oom");
    add_case(s, "train", oom_in_a_training_step_is_an_error);
    add_case(s, "checkpoint_load", oom_loading_a_checkpoint_is_an_error);
    add_case(s, "dataset", oom_reading_a_dataset_is_an_error);
    add_case(s, "convert", oom_converting_a_model_is_an_error);
    add_case(s, "q8", oom_loading_and_running_an_int8_model_is_an_error);
    return s;
}
