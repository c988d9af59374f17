/* optim.c — what every optimizer shares: creation from a parameter list, step and
 * zero_grad over the list, the learning rate, and the state and hyper-parameter
 * enumeration for checkpoints. The update rules live in sgd.c and adam.c. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "optim/optim_impl.h"

bool optim_check_nonneg(const char *op, const char *what, double v)
{
    if (v >= 0.0) /* false for NaN too */
        return true;
    ag_error(AG_ERR_ARG, "%s: invalid %s %g (must be >= 0)", op, what, v);
    return false;
}

static char *join_name(const char *param, const char *key)
{
    size_t lp = strlen(param), lk = strlen(key);
    char *s = malloc(lp + 1 + lk + 1);
    if (!s)
        return NULL;
    memcpy(s, param, lp);
    s[lp] = '.';
    memcpy(s + lp + 1, key, lk + 1);
    return s;
}

/* A parameter must be a float32 tensor with data, given once. */
static bool check_params(const char *op, ag_tensor *const *params, int32_t n)
{
    if (n < 1 || !params) {
        ag_error(AG_ERR_ARG, "%s: empty parameter list (n = %" PRId32 ")", op, n);
        return false;
    }
    for (int32_t i = 0; i < n; i++) {
        const ag_tensor *p = params[i];
        if (!p || !p->data || p->dtype != AG_F32) {
            ag_error(AG_ERR_ARG, "%s: parameter %" PRId32 " is %s", op, i,
                     !p         ? "NULL"
                     : !p->data ? "without data"
                                : "not float32");
            return false;
        }
        for (int32_t j = 0; j < i; j++) {
            if (params[j] == p) {
                ag_error(AG_ERR_ARG,
                         "%s: parameter %" PRId32 " is parameter %" PRId32
                         " again (each may appear once)",
                         op, i, j);
                return false;
            }
        }
    }
    return true;
}

static bool check_names(const char *op, const char *const *names, int32_t n)
{
    if (!names)
        return true;
    for (int32_t i = 0; i < n; i++) {
        if (!names[i] || !names[i][0]) {
            ag_error(AG_ERR_ARG, "%s: parameter %" PRId32 " has no name", op, i);
            return false;
        }
        for (int32_t j = 0; j < i; j++) {
            if (strcmp(names[i], names[j]) == 0) {
                ag_error(AG_ERR_ARG,
                         "%s: parameters %" PRId32 " and %" PRId32 " are both named \"%s\"", op,
                         j, i, names[i]);
                return false;
            }
        }
    }
    return true;
}

/* State names "<param>.<key>" for the buffers, then "<param>.step". */
static bool make_state_names(optim_optimizer *o, const char *const *names)
{
    int32_t per = o->n_bufs + 1;
    o->state_names = calloc((size_t)o->n * (size_t)per, sizeof *o->state_names);
    if (!o->state_names)
        return false;
    for (int32_t i = 0; i < o->n; i++) {
        char index[24];
        snprintf(index, sizeof index, "%" PRId32, i);
        const char *pname = names ? names[i] : index;
        for (int32_t k = 0; k < per; k++) {
            const char *key = k < o->n_bufs ? o->buf_keys[k] : "step";
            o->state_names[i * per + k] = join_name(pname, key);
            if (!o->state_names[i * per + k])
                return false;
        }
    }
    return true;
}

static bool alloc_slots(optim_optimizer *o, ag_tensor *const *params)
{
    o->slots = calloc((size_t)o->n, sizeof *o->slots);
    if (!o->slots)
        return false;
    for (int32_t i = 0; i < o->n; i++) {
        optim_slot *s = &o->slots[i];
        s->param = params[i];
        for (int32_t k = 0; k < o->n_bufs; k++) {
            size_t numel = (size_t)(params[i]->numel ? params[i]->numel : 1);
            s->buf[k] = calloc(numel, sizeof(float)); // (param shape)
            if (!s->buf[k])
                return false;
        }
    }
    return true;
}

optim_optimizer *optim_new_common(const char *op, optim_kind kind, ag_tensor *const *params,
                                  const char *const *names, int32_t n, int32_t n_bufs,
                                  const char *const *buf_keys)
{
    AG_ASSERT(n_bufs >= 0 && n_bufs <= OPTIM_MAX_BUFS);
    if (!check_params(op, params, n) || !check_names(op, names, n))
        return NULL;
    optim_optimizer *o = calloc(1, sizeof *o);
    if (!o)
        goto oom;
    o->kind = kind;
    o->n = n;
    o->n_bufs = n_bufs;
    o->buf_keys = buf_keys;
    if (!alloc_slots(o, params) || !make_state_names(o, names))
        goto oom;
    return o;
oom:
    optim_free(o);
    ag_error(AG_ERR_NOMEM, "%s: out of memory for the state of %" PRId32 " parameters", op, n);
    return NULL;
}

void optim_free(optim_optimizer *opt)
{
    if (!opt)
        return;
    if (opt->slots)
        for (int32_t i = 0; i < opt->n; i++)
            for (int32_t k = 0; k < OPTIM_MAX_BUFS; k++)
                free(opt->slots[i].buf[k]);
    if (opt->state_names)
        for (int32_t i = 0; i < opt->n * (opt->n_bufs + 1); i++)
            free(opt->state_names[i]);
    free(opt->state_names);
    free(opt->slots);
    free(opt);
}

ag_status optim_step(optim_optimizer *opt)
{
    if (!opt)
        return ag_error(AG_ERR_ARG, "optim_step: NULL optimizer");
    for (int32_t i = 0; i < opt->n; i++) {
        optim_slot *s = &opt->slots[i];
        if (!s->param->grad) /* no gradient this step: PyTorch skips the parameter */
            continue;
        if (opt->kind == OPTIM_SGD)
            optim_sgd_update(&opt->sgd, s);
        else
            optim_adam_update(&opt->adam, opt->kind == OPTIM_ADAMW, s);
    }
    return AG_OK;
}

void optim_zero_grad(optim_optimizer *opt)
{
    if (!opt)
        return;
    for (int32_t i = 0; i < opt->n; i++)
        ag_tensor_zero_grad(opt->slots[i].param);
}

ag_status optim_set_lr(optim_optimizer *opt, double lr)
{
    if (!opt)
        return ag_error(AG_ERR_ARG, "optim_set_lr: NULL optimizer");
    if (!optim_check_nonneg("optim_set_lr", "learning rate", lr))
        return AG_ERR_ARG;
    if (opt->kind == OPTIM_SGD)
        opt->sgd.lr = lr;
    else
        opt->adam.lr = lr;
    return AG_OK;
}

double optim_get_lr(const optim_optimizer *opt)
{
    return opt->kind == OPTIM_SGD ? opt->sgd.lr : opt->adam.lr;
}

const char *optim_kind_name(const optim_optimizer *opt)
{
    static const char *const names[] = {
        [OPTIM_SGD] = "sgd", [OPTIM_ADAM] = "adam", [OPTIM_ADAMW] = "adamw"};
    return names[opt->kind];
}

int32_t optim_param_count(const optim_optimizer *opt)
{
    return opt->n;
}

/* ---- hyper-parameters ---- */

enum { SGD_HPARAMS = 5, ADAM_HPARAMS = 6 };

int32_t optim_hparam_count(const optim_optimizer *opt)
{
    return opt->kind == OPTIM_SGD ? SGD_HPARAMS : ADAM_HPARAMS;
}

optim_hparam optim_hparam_get(const optim_optimizer *opt, int32_t i)
{
    if (opt->kind == OPTIM_SGD) {
        const optim_sgd_args *a = &opt->sgd;
        const optim_hparam h[SGD_HPARAMS] = {
            {"lr", a->lr},
            {"momentum", a->momentum},
            {"dampening", a->dampening},
            {"weight_decay", a->weight_decay},
            {"nesterov", a->nesterov ? 1.0 : 0.0},
        };
        return i >= 0 && i < SGD_HPARAMS ? h[i] : (optim_hparam){NULL, 0.0};
    }
    const optim_adam_args *a = &opt->adam;
    const optim_hparam h[ADAM_HPARAMS] = {
        {"lr", a->lr},
        {"beta1", a->beta1},
        {"beta2", a->beta2},
        {"eps", a->eps},
        {"weight_decay", a->weight_decay},
        {"amsgrad", a->amsgrad ? 1.0 : 0.0},
    };
    return i >= 0 && i < ADAM_HPARAMS ? h[i] : (optim_hparam){NULL, 0.0};
}

/* ---- state entries ---- */

int32_t optim_state_count(const optim_optimizer *opt)
{
    return opt->n * (opt->n_bufs + 1);
}

optim_state_entry optim_state_get(const optim_optimizer *opt, int32_t i)
{
    optim_state_entry e = {0};
    if (i < 0 || i >= optim_state_count(opt))
        return e;
    int32_t per = opt->n_bufs + 1;
    optim_slot *s = &opt->slots[i / per];
    int32_t k = i % per;
    e.name = opt->state_names[i];
    e.param = s->param;
    if (k < opt->n_bufs) {
        e.data = s->buf[k];
        e.numel = s->param->numel;
    } else {
        e.counter = &s->step;
        e.numel = 1;
    }
    return e;
}

int32_t optim_state_find(const optim_optimizer *opt, const char *name)
{
    for (int32_t i = 0; i < optim_state_count(opt); i++)
        if (strcmp(opt->state_names[i], name) == 0)
            return i;
    return -1;
}
