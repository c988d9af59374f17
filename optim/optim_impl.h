/* optim_impl.h — the optimizer object shared by optim.c (creation, state, lr) and the
 * update rules in sgd.c and adam.c. Not a public header. */
#ifndef CQAT_OPTIM_IMPL_H
#define CQAT_OPTIM_IMPL_H

#include "optim/optim.h"

typedef enum optim_kind {
    OPTIM_SGD,
    OPTIM_ADAM,
    OPTIM_ADAMW,
} optim_kind;

/* Buffers per parameter: momentum_buffer | exp_avg, exp_avg_sq, max_exp_avg_sq. */
enum { OPTIM_MAX_BUFS = 3 };

/* Element loops go parallel above this many values (smaller ones are not worth a fork). */
enum { OPTIM_PARALLEL_MIN = 32768 };

/* One parameter and its state. */
typedef struct optim_slot {
    ag_tensor *param;           /* borrowed */
    int64_t step;               /* steps that updated this parameter */
    float *buf[OPTIM_MAX_BUFS]; /* n_bufs buffers of param->numel values, zeros at first */
} optim_slot;

struct optim_optimizer {
    optim_kind kind;
    optim_sgd_args sgd;   /* kind == OPTIM_SGD */
    optim_adam_args adam; /* kind == OPTIM_ADAM or OPTIM_ADAMW */
    int32_t n;
    optim_slot *slots;           /* n */
    int32_t n_bufs;              /* buffers per parameter */
    const char *const *buf_keys; /* n_bufs PyTorch state keys */
    char **state_names;          /* n * (n_bufs + 1): per parameter, buffers then "step" */
};

/* Builds the common part: validates params and names, allocates slots, zeroed buffers
 * and state names. `op` names the caller in messages. NULL (message set) on error. */
optim_optimizer *optim_new_common(const char *op, optim_kind kind, ag_tensor *const *params,
                                  const char *const *names, int32_t n, int32_t n_bufs,
                                  const char *const *buf_keys);

/* The update of one parameter that has a gradient; each advances slot->step. */
void optim_sgd_update(const optim_sgd_args *a, optim_slot *slot);
void optim_adam_update(const optim_adam_args *a, bool decoupled_decay, optim_slot *slot);

/* "invalid lr -1 (must be >= 0)" checks shared by the constructors and set_lr. */
bool optim_check_nonneg(const char *op, const char *what, double v);

/* The update loops are compiled twice, for the baseline and for FMA, picked at run time
 * (optim_fma_available): the build targets baseline x86-64, where fmaf is a libm call per
 * element. Both give the same bits (fma rounds once either way). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define OPTIM_FMA_DISPATCH 1
#define OPTIM_FMA __attribute__((target("avx2,fma")))
static inline bool optim_fma_available(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
#define OPTIM_FMA_DISPATCH 0
#endif

#endif
