/* schedule.c — learning-rate schedules (formulas in schedule.h). Computed in double as
 * PyTorch's schedulers compute in Python floats, in the same operation order, so the
 * rates equal torch's closed forms exactly. */
#include <inttypes.h>
#include <math.h>

#include "optim/schedule.h"

const char *optim_schedule_kind_name(optim_schedule_kind kind)
{
    switch (kind) {
    case OPTIM_SCHEDULE_CONSTANT:
        return "constant";
    case OPTIM_SCHEDULE_STEP:
        return "step";
    case OPTIM_SCHEDULE_COSINE:
        return "cosine";
    }
    return "unknown";
}

ag_status optim_schedule_check(const optim_schedule *s)
{
    const char *op = "optim_schedule";
    if (!s)
        return ag_error(AG_ERR_ARG, "%s: NULL schedule", op);
    if (s->kind != OPTIM_SCHEDULE_CONSTANT && s->kind != OPTIM_SCHEDULE_STEP &&
        s->kind != OPTIM_SCHEDULE_COSINE)
        return ag_error(AG_ERR_ARG, "%s: unknown kind %d", op, (int)s->kind);
    if (!(s->base_lr >= 0.0))
        return ag_error(AG_ERR_ARG, "%s: invalid base_lr %g (must be >= 0)", op, s->base_lr);
    if (s->warmup_steps < 0)
        return ag_error(AG_ERR_ARG, "%s: invalid warmup_steps %" PRId64 " (must be >= 0)", op,
                        s->warmup_steps);
    if (s->kind == OPTIM_SCHEDULE_STEP && s->step_size < 1)
        return ag_error(AG_ERR_ARG, "%s: step schedule needs step_size >= 1 (got %" PRId64 ")",
                        op, s->step_size);
    if (s->kind == OPTIM_SCHEDULE_STEP && !(s->gamma >= 0.0))
        return ag_error(AG_ERR_ARG, "%s: invalid gamma %g (must be >= 0)", op, s->gamma);
    if (s->kind == OPTIM_SCHEDULE_COSINE && s->total_steps <= s->warmup_steps)
        return ag_error(AG_ERR_ARG,
                        "%s: cosine schedule needs total_steps (%" PRId64
                        ") > warmup_steps (%" PRId64 ")",
                        op, s->total_steps, s->warmup_steps);
    if (s->kind == OPTIM_SCHEDULE_COSINE && !(s->eta_min >= 0.0))
        return ag_error(AG_ERR_ARG, "%s: invalid eta_min %g (must be >= 0)", op, s->eta_min);
    return AG_OK;
}

/* torch.optim.lr_scheduler.CosineAnnealingLR._get_closed_form_lr. */
static double cosine_lr(double base, double eta_min, int64_t t, int64_t T)
{
    return eta_min + (base - eta_min) * (1.0 + cos(M_PI * (double)t / (double)T)) / 2.0;
}

double optim_schedule_lr(const optim_schedule *s, int64_t step)
{
    if (step < s->warmup_steps)
        return s->base_lr * (double)(step + 1) / (double)s->warmup_steps;
    int64_t t = step - s->warmup_steps;
    switch (s->kind) {
    case OPTIM_SCHEDULE_STEP: /* StepLR._get_closed_form_lr */
        return s->base_lr * pow(s->gamma, (double)(t / s->step_size));
    case OPTIM_SCHEDULE_COSINE:
        return cosine_lr(s->base_lr, s->eta_min, t, s->total_steps - s->warmup_steps);
    case OPTIM_SCHEDULE_CONSTANT:
        break;
    }
    return s->base_lr;
}
