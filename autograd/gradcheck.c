/* gradcheck.c — finite-difference gradient checking; see ag_gradcheck.h. */
#include "autograd/ag_gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* loss = sum(r * y) in double, from a forward run without recording. */
static ag_status project(ag_ctx *ctx, ag_tensor *const *inputs, ag_gradcheck_fn fn,
                         void *user, const float *r, int64_t n_out, double *loss)
{
    ag_ctx_reset(ctx);
    ag_no_grad_begin(ctx);
    ag_tensor *y = fn(ctx, inputs, user);
    ag_no_grad_end(ctx);
    if (!y)
        return ag_last_status() ? ag_last_status() : AG_ERR_STATE;
    if (y->numel != n_out)
        return ag_error(AG_ERR_STATE, "gradcheck: output size changed between runs");
    double s = 0.0;
    for (int64_t i = 0; i < n_out; i++)
        s += (double)r[i] * (double)y->data[i];
    *loss = s;
    return AG_OK;
}

static ag_status analytic(ag_ctx *ctx, ag_tensor *const *inputs, int32_t n_inputs,
                          ag_gradcheck_fn fn, void *user, uint64_t seed, float **r_out,
                          int64_t *n_out)
{
    for (int32_t i = 0; i < n_inputs; i++)
        ag_tensor_zero_grad(inputs[i]);
    ag_ctx_reset(ctx);
    ag_tensor *y = fn(ctx, inputs, user);
    if (!y)
        return ag_last_status() ? ag_last_status() : AG_ERR_STATE;
    float *r = malloc((size_t)(y->numel ? y->numel : 1) * sizeof *r);
    if (!r)
        return ag_error(AG_ERR_NOMEM, "gradcheck: out of memory");
    ag_rng rng;
    ag_rng_seed(&rng, seed, 7);
    for (int64_t i = 0; i < y->numel; i++)
        r[i] = ag_rng_uniform_range(&rng, -1.0f, 1.0f);
    ag_status st = ag_backward_seeded(ctx, y, r);
    if (st != AG_OK) {
        free(r);
        return st;
    }
    *r_out = r;
    *n_out = y->numel;
    return AG_OK;
}

ag_status ag_gradcheck(ag_tensor *const *inputs, int32_t n_inputs, ag_gradcheck_fn fn,
                       void *user, const ag_gradcheck_opts *opts, ag_gradcheck_result *res)
{
    ag_gradcheck_opts o = {1e-3, 2e-3, 1e-2, 1234};
    if (opts)
        o = *opts;
    memset(res, 0, sizeof *res);
    res->ok = true;
    ag_ctx *ctx = ag_ctx_new();
    if (!ctx)
        return AG_ERR_NOMEM;
    float *r = NULL;
    int64_t n_out = 0;
    ag_status st = analytic(ctx, inputs, n_inputs, fn, user, o.seed, &r, &n_out);
    double worst_excess = 0.0;
    for (int32_t k = 0; st == AG_OK && k < n_inputs; k++) {
        ag_tensor *x = inputs[k];
        if (!(x->flags & AG_F_REQUIRES_GRAD))
            continue;
        for (int64_t j = 0; j < x->numel && st == AG_OK; j++) {
            float a = x->grad ? x->grad[j] : 0.0f;
            float saved = x->data[j];
            double lp = 0.0, lm = 0.0;
            x->data[j] = saved + (float)o.eps;
            double hp = (double)x->data[j] - saved; /* the step float32 really took */
            st = project(ctx, inputs, fn, user, r, n_out, &lp);
            x->data[j] = saved - (float)o.eps;
            double hm = saved - (double)x->data[j];
            if (st == AG_OK)
                st = project(ctx, inputs, fn, user, r, n_out, &lm);
            x->data[j] = saved;
            double num = (lp - lm) / (hp + hm);
            double err = fabs((double)a - num);
            double excess = err - (o.atol + o.rtol * fabs(num));
            res->n_checked++;
            if (err > res->max_abs_err)
                res->max_abs_err = err;
            if (excess > worst_excess || !isfinite(a)) {
                worst_excess = isfinite(a) ? excess : INFINITY;
                res->ok = false;
                res->worst_input = k;
                res->worst_index = j;
                res->worst_analytic = a;
                res->worst_numeric = num;
            }
        }
    }
    if (!res->ok)
        snprintf(res->message, sizeof res->message,
                 "input %d element %lld: analytic %.6g, numeric %.6g (max abs err %.3g)",
                 (int)res->worst_input, (long long)res->worst_index, res->worst_analytic,
                 res->worst_numeric, res->max_abs_err);
    free(r);
    ag_ctx_free(ctx);
    return st;
}
