/* train.h — the training loop shared by `cqat train` and `cqat qat`, and evaluation.
 *
 * cqat_fit runs epochs of shuffled mini-batches: forward, cross-entropy, backward,
 * a check that loss and gradients are finite, the LR of the schedule at this step,
 * the optimizer step. After each epoch it evaluates on the test set and, if asked,
 * saves a checkpoint atomically. Everything that decides the numbers is a function
 * of (seed, epoch, step) or is saved in the checkpoint, so a run resumed from any
 * saved step ends with bitwise the same weights as one never interrupted.
 */
#ifndef CQAT_TOOLS_TRAIN_H
#define CQAT_TOOLS_TRAIN_H

#include <stdio.h>

#include "data/data.h"
#include "nn/nn.h"
#include "optim/optim.h"
#include "optim/schedule.h"
#include "tools/checkpoint.h"

typedef struct cqat_eval_result {
    double accuracy; /* share of correct predictions */
    double loss;     /* mean cross-entropy */
    int64_t n;
    double seconds;
} cqat_eval_result;

/* Evaluates m (switched to eval mode, no gradients) on ds. */
ag_status cqat_evaluate(nn_module *m, const data_dataset *ds, int32_t batch_size,
                        cqat_eval_result *out);

typedef struct cqat_fit_hooks {
    /* Called before each epoch (after the model is set to training mode): QAT
     * switches observers and BN statistics off here. May be NULL. */
    ag_status (*epoch_begin)(void *ud, nn_module *m, int64_t epoch);
    /* Called before each end-of-epoch evaluation: QAT turns its observers off so that
     * the test set does not move the scales (PyTorch's FakeQuantize would observe in
     * eval mode too). The next epoch_begin sets them again. May be NULL. */
    void (*eval_begin)(void *ud, nn_module *m);
    void *ud;
} cqat_fit_hooks;

typedef struct cqat_fit_args {
    nn_module *model;
    optim_optimizer *opt;
    optim_schedule schedule;    /* total_steps set by the caller */
    const data_dataset *train, *test;
    data_transform transform;
    int32_t batch_size;
    int64_t epochs;             /* total, including those already done */
    uint64_t seed;
    float label_smoothing;
    int64_t save_every;         /* also save every N steps (0: only at epoch ends) */
    int64_t stop_after_steps;   /* stop (after saving) once this many steps are done; 0 = no */
    const char *out;            /* checkpoint path, or NULL */
    cqat_ckpt_meta *meta;       /* epoch/step/rng updated here; saved with the model */
    cqat_fit_hooks hooks;
    bool progress;              /* a live progress bar (stderr is a terminal) */
    FILE *log;                  /* per-epoch lines (stdout), or NULL */
} cqat_fit_args;

typedef struct cqat_fit_result {
    cqat_eval_result test;      /* after the last epoch */
    double train_loss;          /* mean over the last epoch */
    double samples_per_s;       /* training throughput over the run */
    int64_t steps;
} cqat_fit_result;

ag_status cqat_fit(cqat_fit_args *a, cqat_fit_result *res);

#endif
