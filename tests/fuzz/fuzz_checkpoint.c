/* fuzz_checkpoint.c — training checkpoints as the command line reads them:
 *   `cqat eval CKPT`:           cqat_model_for_file (metadata, the model it names, float
 *                               or QAT, its state), then an evaluation;
 *   `cqat train --resume CKPT`: cqat_ckpt_read_meta, the model built from it (as
 *                               cmd_train.c's train_run does), an optimizer, then
 *                               cqat_ckpt_load (model and optimizer state), then an
 *                               evaluation.
 *
 * Input: a selector byte (bit 2: the resume path instead of eval; bits 0-1: the
 * optimizer of the resumed run, sgd / adam / adamw / sgd), then an HDF5 input as
 * fuzz_util.h describes. */
#include <string.h>

#include "fuzz_model_check.h"
#include "fuzz_util.h"
#include "optim/optim.h"
#include "tools/qat_model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_h5_init();
    ag_set_num_threads(1);
    fuzz_h5_mark();
    return 0;
}

/* A failure must leave a message. */
static void expect_message(const char *who, ag_status st)
{
    fuzz_report(who, st == AG_OK ? NULL : ag_last_error());
    if (st != AG_OK && !ag_last_error()[0])
        abort();
}

static optim_optimizer *new_optimizer(int kind, nn_param_list *pl)
{
    const char *const *names = (const char *const *)pl->names;
    if (kind == 1 || kind == 2) {
        optim_adam_args a = kind == 2 ? optim_adamw_defaults() : optim_adam_defaults();
        return kind == 2 ? optim_adamw_new(pl->params, names, pl->n, &a)
                         : optim_adam_new(pl->params, names, pl->n, &a);
    }
    optim_sgd_args a = {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4};
    return optim_sgd_new(pl->params, names, pl->n, &a);
}

/* `cqat eval CKPT` */
static void eval_path(const char *path)
{
    nn_module *m = NULL;
    qat_qconfig_map *map = NULL;
    cqat_ckpt_meta meta;
    ag_error_clear();
    ag_status st = cqat_model_for_file(path, NULL, false, NULL, &m, &map, &meta);
    expect_message("cqat_model_for_file", st);
    if (st == AG_OK)
        fuzz_evaluate(m, &meta.model);
    nn_module_free(m);
    qat_qconfig_map_free(map);
}

/* The model a checkpoint's metadata names, as a resumed run builds it. */
static ag_status build_model(const cqat_ckpt_meta *meta, nn_module **m, qat_qconfig_map **map)
{
    if (strcmp(meta->kind, "qat") == 0) {
        cqat_qat_spec spec;
        ag_status st = cqat_qat_spec_parse(meta->extra, &spec);
        return st == AG_OK ? cqat_qat_build(&meta->model, &spec, NULL, m, map) : st;
    }
    ag_rng rng;
    ag_rng_seed(&rng, 0, 1);
    *m = nn_zoo_new(&meta->model, &rng);
    return *m ? AG_OK : ag_last_status();
}

/* `cqat train --resume CKPT` */
static void resume_path(const char *path, int kind)
{
    cqat_ckpt_meta meta;
    nn_module *m = NULL;
    qat_qconfig_map *map = NULL;
    nn_param_list pl = {0};
    optim_optimizer *opt = NULL;
    ag_error_clear();
    ag_status st = cqat_ckpt_read_meta(path, &meta);
    if (st == AG_OK)
        st = build_model(&meta, &m, &map);
    if (st == AG_OK)
        st = nn_param_list_get(m, &pl);
    if (st == AG_OK && !(opt = new_optimizer(kind, &pl)))
        st = ag_last_status();
    if (st == AG_OK)
        st = cqat_ckpt_load(path, m, opt);
    expect_message("resume", st);
    if (st == AG_OK)
        fuzz_evaluate(m, &meta.model);
    optim_free(opt);
    nn_param_list_deinit(&pl);
    nn_module_free(m);
    qat_qconfig_map_free(map);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const char *path = fuzz_write_h5(0, data + 1, size - 1);
    if (sel & 4)
        resume_path(path, sel & 3);
    else
        eval_path(path);
    fuzz_h5_check_closed("checkpoint loading");
    return 0;
}
