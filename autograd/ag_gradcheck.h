/* ag_gradcheck.h — checks an op's backward against central finite differences.
 *
 * The function under test maps heap input tensors to an output tensor y. The checker
 * projects y onto a fixed random direction r (loss = sum(r * y), accumulated in
 * double), takes the analytic gradient with one backward pass seeded with r, then
 * perturbs every input element by +-eps and compares
 *     numeric = (loss(x + eps) - loss(x - eps)) / (2 eps)
 * with the analytic value: |a - n| <= atol + rtol |n| for every element.
 * Inputs that do not require a gradient are not checked (labels, running stats).
 * The function must be deterministic (re-seed any RNG inside it).
 */
#ifndef CQAT_AG_GRADCHECK_H
#define CQAT_AG_GRADCHECK_H

#include "autograd/ag.h"

typedef ag_tensor *(*ag_gradcheck_fn)(ag_ctx *ctx, ag_tensor *const *inputs, void *user);

typedef struct ag_gradcheck_opts {
    double eps;   /* perturbation, default 1e-3 */
    double atol;  /* default 2e-3 */
    double rtol;  /* default 1e-2 */
    uint64_t seed; /* for the projection direction */
} ag_gradcheck_opts;

typedef struct ag_gradcheck_result {
    bool ok;
    int64_t n_checked;     /* elements compared */
    double max_abs_err;
    int32_t worst_input;   /* where the largest violation (or error) was */
    int64_t worst_index;
    double worst_analytic, worst_numeric;
    char message[256];     /* a readable summary of the first failure */
} ag_gradcheck_result;

/* opts may be NULL for the defaults. Returns AG_OK when the check could be run (see
 * res->ok for its verdict) or the status of a failing forward/backward. */
ag_status ag_gradcheck(ag_tensor *const *inputs, int32_t n_inputs, ag_gradcheck_fn fn,
                       void *user, const ag_gradcheck_opts *opts, ag_gradcheck_result *res);

/* Runs the tape backward from any tensor y, seeding dL/dy = seed[0..y->numel). */
ag_status ag_backward_seeded(ag_ctx *ctx, ag_tensor *y, const float *seed);

#endif
