/* optim.h — optimizers that update parameters from their gradients, as torch.optim.
 *
 *     optim_sgd_args a = {.lr = 0.1, .momentum = 0.9, .weight_decay = 5e-4};
 *     optim_optimizer *opt = optim_sgd_new(params, names, n, &a);  // NULL + message if bad
 *     for (int64_t step = 0; ...; step++) {
 *         optim_set_lr(opt, optim_schedule_lr(&sched, step));     // optim/schedule.h
 *         optim_zero_grad(opt);
 *         ...forward, ag_backward...
 *         optim_step(opt);
 *     }
 *     optim_free(opt);
 *
 * SGD, Adam and AdamW follow PyTorch 1.13's single-tensor code (torch/optim/sgd.py,
 * adam.py, adamw.py) operation by operation in float32, with hyper-parameters held as
 * double like Python floats, so a run matches torch to float rounding. A parameter whose
 * grad is NULL this step is skipped entirely (value, state and step count untouched),
 * as PyTorch skips a parameter whose .grad is None. optim_step does not look for NaN or
 * Inf: a non-finite gradient propagates into the parameters, as in PyTorch; check the
 * loss (or the gradients) before stepping if that matters.
 *
 * The optimizer borrows the parameters (they must outlive it) and copies the names.
 *
 * State for checkpoints: optim/ does no file I/O. Every state buffer and counter is an
 * entry with a stable name (see optim_state_get); a checkpoint writer saves the entries
 * and a reader writes them back into a freshly created optimizer with the same
 * parameters and hyper-parameters, after which it continues bit for bit as the original.
 * Buffers that PyTorch creates lazily on the first step are allocated (zeros) up front;
 * the per-parameter step count says whether they hold anything yet.
 */
#ifndef CQAT_OPTIM_H
#define CQAT_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "autograd/ag.h"

typedef struct optim_optimizer optim_optimizer;

/* torch.optim.SGD. Defaults are PyTorch's: everything but lr (which PyTorch requires)
 * is 0/false, so a designated initializer {.lr = 0.1} is the default SGD. */
typedef struct optim_sgd_args {
    double lr;           /* >= 0 */
    double momentum;     /* >= 0; 0 keeps no buffer */
    double dampening;    /* used from the second step on */
    double weight_decay; /* >= 0; L2 added to the gradient */
    bool nesterov;       /* needs momentum > 0 and dampening 0 */
} optim_sgd_args;

/* torch.optim.Adam / AdamW. Use optim_adam_defaults() / optim_adamw_defaults() and
 * change what differs: betas 0 and eps 0 are valid values, not "default". */
typedef struct optim_adam_args {
    double lr;           /* >= 0; default 1e-3 */
    double beta1, beta2; /* in [0, 1); defaults 0.9, 0.999 */
    double eps;          /* >= 0; default 1e-8 */
    double weight_decay; /* >= 0; Adam: L2 on the gradient (default 0);
                            AdamW: decoupled p *= 1 - lr*wd (default 1e-2) */
    bool amsgrad;        /* keep the running max of exp_avg_sq; default false */
} optim_adam_args;

optim_adam_args optim_adam_defaults(void);
optim_adam_args optim_adamw_defaults(void);

/* Each returns a new optimizer over params[0..n) (owned by the caller, freed with
 * optim_free), or NULL with ag_last_error() set if an argument is invalid (negative lr,
 * nesterov without momentum, a beta outside [0, 1), a NULL or repeated parameter or a
 * repeated name, n < 1) or memory runs out. names may be NULL: the parameters are then
 * named "0", "1", ... as in PyTorch's optimizer state_dict. args NULL: SGD fails (lr is
 * required), Adam and AdamW take their defaults. */
optim_optimizer *optim_sgd_new(ag_tensor *const *params, const char *const *names, int32_t n,
                               const optim_sgd_args *args);
optim_optimizer *optim_adam_new(ag_tensor *const *params, const char *const *names, int32_t n,
                                const optim_adam_args *args);
optim_optimizer *optim_adamw_new(ag_tensor *const *params, const char *const *names, int32_t n,
                                 const optim_adam_args *args);
void optim_free(optim_optimizer *opt); /* NULL is fine */

/* One update of every parameter that has a gradient. AG_OK, or AG_ERR_ARG for NULL. */
ag_status optim_step(optim_optimizer *opt);
/* Zero-fills every parameter's gradient (PyTorch 1.13's zero_grad(set_to_none=False));
 * a NULL gradient stays NULL. */
void optim_zero_grad(optim_optimizer *opt);

/* The learning rate of the next steps. set_lr fails (AG_ERR_ARG) for lr < 0 or NaN. */
ag_status optim_set_lr(optim_optimizer *opt, double lr);
double optim_get_lr(const optim_optimizer *opt);

/* ---- Introspection for checkpoints ------------------------------------------------ */

const char *optim_kind_name(const optim_optimizer *opt); /* "sgd", "adam", "adamw" */
int32_t optim_param_count(const optim_optimizer *opt);

/* Hyper-parameters by name, e.g. for checkpoint attributes. SGD: lr, momentum,
 * dampening, weight_decay, nesterov (0/1). Adam, AdamW: lr, beta1, beta2, eps,
 * weight_decay, amsgrad (0/1). The name is owned by the library. */
typedef struct optim_hparam {
    const char *name;
    double value;
} optim_hparam;
int32_t optim_hparam_count(const optim_optimizer *opt);
optim_hparam optim_hparam_get(const optim_optimizer *opt, int32_t i);

/* One state entry: a float buffer of the parameter's shape or a step counter.
 * Names are "<param>.<key>" with PyTorch's state keys:
 *   SGD with momentum != 0:  <param>.momentum_buffer
 *   Adam, AdamW:             <param>.exp_avg, <param>.exp_avg_sq,
 *                            <param>.max_exp_avg_sq (amsgrad only)
 *   every optimizer:         <param>.step (how many steps updated the parameter; for
 *                            SGD it says whether the momentum buffer exists yet)
 * data/counter point into the optimizer: read them to save, write them to restore.
 * Entries are in a fixed order (parameter by parameter, buffers then step) that
 * depends only on the kind, hyper-parameters and names. */
typedef struct optim_state_entry {
    const char *name;       /* owned by the optimizer */
    const ag_tensor *param; /* the parameter it belongs to (its shape is the buffer's) */
    float *data;            /* numel floats, or NULL for a counter */
    int64_t *counter;       /* the step count, or NULL for a buffer */
    int64_t numel;          /* of data; 1 for a counter */
} optim_state_entry;

int32_t optim_state_count(const optim_optimizer *opt);
/* Entry i in [0, optim_state_count); an entry of NULLs if i is out of range. */
optim_state_entry optim_state_get(const optim_optimizer *opt, int32_t i);
/* The index of the entry with this name, or -1. */
int32_t optim_state_find(const optim_optimizer *opt, const char *name);

#endif
