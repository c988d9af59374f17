/* schedule.h — learning-rate schedules as pure functions of the step.
 *
 *     optim_schedule s = {.kind = OPTIM_SCHEDULE_COSINE, .base_lr = 0.1,
 *                         .total_steps = epochs * batches, .warmup_steps = 500};
 *     if (optim_schedule_check(&s) != AG_OK) ...;            // message names the field
 *     optim_set_lr(opt, optim_schedule_lr(&s, step));        // before each optim_step
 *
 * The learning rate depends on nothing but the schedule and the step, so a resumed run
 * gets exactly the rates of an uninterrupted one. "step" is whatever the caller counts
 * (optimizer steps or epochs), starting at 0.
 *
 * Warm-up (warmup_steps > 0): lr = base_lr * (step + 1) / warmup_steps for step <
 * warmup_steps (so the first step already moves, and the last warm-up step reaches
 * base_lr), then the schedule runs over the remaining steps with t = step - warmup_steps:
 *   constant: base_lr
 *   step:     base_lr * gamma^floor(t / step_size)       (torch StepLR's closed form)
 *   cosine:   eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T)) / 2,
 *             T = total_steps - warmup_steps              (CosineAnnealingLR's closed
 *             form; past T it rises again as PyTorch's does)
 */
#ifndef CQAT_OPTIM_SCHEDULE_H
#define CQAT_OPTIM_SCHEDULE_H

#include <stdint.h>

#include "autograd/ag_status.h"

typedef enum optim_schedule_kind {
    OPTIM_SCHEDULE_CONSTANT = 0,
    OPTIM_SCHEDULE_STEP,
    OPTIM_SCHEDULE_COSINE,
} optim_schedule_kind;

typedef struct optim_schedule {
    optim_schedule_kind kind;
    double base_lr;       /* >= 0 */
    int64_t total_steps;  /* cosine: must exceed warmup_steps */
    int64_t step_size;    /* step: >= 1 */
    double gamma;         /* step: factor every step_size steps, >= 0 */
    int64_t warmup_steps; /* >= 0; 0 = no warm-up */
    double eta_min;       /* cosine: the final lr, >= 0 */
} optim_schedule;

/* AG_OK, or AG_ERR_ARG with a message naming the bad field. */
ag_status optim_schedule_check(const optim_schedule *s);
/* The learning rate at `step` (>= 0) of a schedule that passes optim_schedule_check. */
double optim_schedule_lr(const optim_schedule *s, int64_t step);
const char *optim_schedule_kind_name(optim_schedule_kind kind); /* "constant", ... */

#endif
