/* test_optim.c — optim/: SGD, Adam and AdamW against PyTorch 1.13 step by step (golden
 * file written by tools/gen_optim_golden.py), LR schedules, state export and restore,
 * parameters without gradients, and argument errors. */
#include "test_util.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"
#include "optim/schedule.h"

#define GOLDEN CQAT_TEST_DATA_DIR "/optim_golden.h5"

enum { STEPS = 100, NO_GRAD_EVERY = 7, NO_GRAD_AT = 3 };
enum { N_W = 12, N_B = 3 }; /* W [3, 4], b [3] */

/* ---- the toy problem: two parameters, g = (2 c) (p - t) ---------------------------- */

typedef struct toy {
    float init[2][N_W], coef[2][N_W], target[2][N_W]; /* [W, b], b uses the first 3 */
    ag_tensor *p[2];                                  /* W [3, 4], b [3] */
} toy;

static const int64_t toy_numel[2] = {N_W, N_B};
static const char *const toy_names[2] = {"fc1.weight", "fc1.bias"};

static void toy_make_params(toy *t)
{
    t->p[0] = ag_param_new(2, AG_SHAPE(3, 4));
    t->p[1] = ag_param_new(1, AG_SHAPE(3));
    ck_assert_ptr_nonnull(t->p[0]);
    ck_assert_ptr_nonnull(t->p[1]);
    for (int k = 0; k < 2; k++)
        memcpy(t->p[k]->data, t->init[k], (size_t)toy_numel[k] * sizeof(float));
}

static void toy_free_params(toy *t)
{
    ag_tensor_free(t->p[0]);
    ag_tensor_free(t->p[1]);
}

/* Values without a file, for the tests that do not compare with torch. */
static void toy_random(toy *t, uint64_t seed)
{
    ag_tensor *r = tu_rand(1, AG_SHAPE(6 * N_W), -1.0f, 1.0f, seed, false);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < N_W; i++) {
            t->init[k][i] = r->data[k * N_W + i];
            t->target[k][i] = r->data[(2 + k) * N_W + i];
            t->coef[k][i] = 1.0f + 0.5f * r->data[(4 + k) * N_W + i];
        }
    ag_tensor_free(r);
    toy_make_params(t);
}

/* The gradients of step `step`, computed as the generator computes them in float32:
 * (2 * c) * (p - t). b has none (grad NULL, PyTorch's None) when step % 7 == 3. */
static void toy_set_grads(toy *t, int64_t step)
{
    for (int k = 0; k < 2; k++) {
        ag_tensor *p = t->p[k];
        if (k == 1 && step % NO_GRAD_EVERY == NO_GRAD_AT) {
            free(p->grad);
            p->grad = NULL;
            continue;
        }
        if (!p->grad)
            p->grad = calloc((size_t)p->numel, sizeof(float));
        ck_assert_ptr_nonnull(p->grad);
        for (int64_t i = 0; i < p->numel; i++)
            p->grad[i] = (2.0f * t->coef[k][i]) * (p->data[i] - t->target[k][i]);
    }
}

static void toy_run(toy *t, optim_optimizer *o, int64_t from, int64_t to)
{
    for (int64_t s = from; s < to; s++) {
        toy_set_grads(t, s);
        ck_assert_int_eq(optim_step(o), AG_OK);
    }
}

/* ---- the runs of the golden file ---------------------------------------------------- */

typedef enum run_kind { RUN_SGD, RUN_ADAM, RUN_ADAMW } run_kind;

typedef struct run_config {
    const char *name; /* group /runs/<name> of the golden file */
    run_kind kind;
    optim_sgd_args sgd;
    optim_adam_args adam;
} run_config;

/* The generator's RUNS table. */
static const run_config runs[] = {
    {"sgd", RUN_SGD, .sgd = {.lr = 0.05}},
    {"sgd_momentum_wd", RUN_SGD, .sgd = {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4}},
    {"sgd_nesterov", RUN_SGD, .sgd = {.lr = 0.05, .momentum = 0.9, .nesterov = true}},
    {"sgd_dampening", RUN_SGD, .sgd = {.lr = 0.05, .momentum = 0.9, .dampening = 0.1}},
    {"adam", RUN_ADAM, .adam = {.lr = 0.05, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8}},
    {"adam_amsgrad_wd", RUN_ADAM,
     .adam = {.lr = 0.05,
              .beta1 = 0.8,
              .beta2 = 0.99,
              .eps = 1e-6,
              .weight_decay = 1e-2,
              .amsgrad = true}},
    {"adamw", RUN_ADAMW,
     .adam = {.lr = 0.05, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 1e-2}},
};

static const run_config *find_run(const char *name)
{
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++)
        if (strcmp(runs[i].name, name) == 0)
            return &runs[i];
    ck_abort_msg("no run named %s", name);
    return NULL;
}

static optim_optimizer *make_optimizer(const run_config *c, ag_tensor *const *params)
{
    optim_optimizer *o = NULL;
    switch (c->kind) {
    case RUN_SGD:
        o = optim_sgd_new(params, toy_names, 2, &c->sgd);
        break;
    case RUN_ADAM:
        o = optim_adam_new(params, toy_names, 2, &c->adam);
        break;
    case RUN_ADAMW:
        o = optim_adamw_new(params, toy_names, 2, &c->adam);
        break;
    }
    ck_assert_msg(o != NULL, "%s: %s", c->name, ag_last_error());
    return o;
}

/* ---- reading the golden file -------------------------------------------------------- */

static hid_t golden_open(void)
{
    hid_t f = H5Fopen(GOLDEN, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_msg(f >= 0, "cannot open %s (run tools/gen_optim_golden.py)", GOLDEN);
    return f;
}

/* Reads dataset `path` of exactly n values as `type` (H5T_NATIVE_FLOAT or _DOUBLE). */
static void golden_read(hid_t f, const char *path, hid_t type, void *out, int64_t n)
{
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    ck_assert_msg(d >= 0, "%s: no dataset %s", GOLDEN, path);
    hid_t space = H5Dget_space(d);
    int64_t count = (int64_t)H5Sget_simple_extent_npoints(space);
    H5Sclose(space);
    ck_assert_msg(count == n, "%s: %s has %lld values, expected %lld", GOLDEN, path,
                  (long long)count, (long long)n);
    ck_assert_int_ge(H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out), 0);
    H5Dclose(d);
}

static void toy_load(hid_t f, toy *t)
{
    static const char *const pn[2] = {"W", "b"};
    char path[64];
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "init/%s", pn[k]);
        golden_read(f, path, H5T_NATIVE_FLOAT, t->init[k], toy_numel[k]);
        snprintf(path, sizeof path, "coef/%s", pn[k]);
        golden_read(f, path, H5T_NATIVE_FLOAT, t->coef[k], toy_numel[k]);
        snprintf(path, sizeof path, "target/%s", pn[k]);
        golden_read(f, path, H5T_NATIVE_FLOAT, t->target[k], toy_numel[k]);
    }
    toy_make_params(t);
}

/* |c - ref| / |ref|, with |ref| floored at 1e-3: parameters pass near zero on their way
 * to the target, where one float rounding at the scale of the step is no longer small
 * relative to the value. (On this toy cqat matches torch bit for bit.) */
static double rel_err(float c, float ref)
{
    double den = fabs((double)ref) > 1e-3 ? fabs((double)ref) : 1e-3;
    return fabs((double)c - (double)ref) / den;
}

/* Runs `name` for 100 steps and returns the largest relative error against torch. */
static double golden_run(const char *name)
{
    const run_config *c = find_run(name);
    hid_t f = golden_open();
    toy t;
    toy_load(f, &t);
    float *ref[2] = {malloc(STEPS * N_W * sizeof(float)), malloc(STEPS * N_B * sizeof(float))};
    char path[96];
    snprintf(path, sizeof path, "runs/%s/W", name);
    golden_read(f, path, H5T_NATIVE_FLOAT, ref[0], STEPS * N_W); // (100, 3, 4)
    snprintf(path, sizeof path, "runs/%s/b", name);
    golden_read(f, path, H5T_NATIVE_FLOAT, ref[1], STEPS * N_B); // (100, 3)
    H5Fclose(f);

    optim_optimizer *o = make_optimizer(c, t.p);
    double worst = 0.0;
    for (int64_t s = 0; s < STEPS; s++) {
        toy_set_grads(&t, s);
        ck_assert_int_eq(optim_step(o), AG_OK);
        for (int k = 0; k < 2; k++)
            for (int64_t i = 0; i < toy_numel[k]; i++) {
                float want = ref[k][s * toy_numel[k] + i];
                double e = rel_err(t.p[k]->data[i], want);
                ck_assert_msg(e <= 1e-6,
                              "%s step %lld %s[%lld]: cqat %.9g, torch %.9g (rel %.3g)", name,
                              (long long)s, toy_names[k], (long long)i, (double)t.p[k]->data[i],
                              (double)want, e);
                worst = e > worst ? e : worst;
            }
    }
    printf("optim golden %-16s max relative error %.3g\n", name, worst);
    optim_free(o);
    toy_free_params(&t);
    free(ref[0]);
    free(ref[1]);
    return worst;
}

START_TEST(sgd_matches_torch_for_100_steps)
{
    golden_run("sgd");
}
END_TEST

START_TEST(sgd_momentum_weight_decay_matches_torch)
{
    golden_run("sgd_momentum_wd");
}
END_TEST

START_TEST(sgd_nesterov_matches_torch)
{
    golden_run("sgd_nesterov");
}
END_TEST

START_TEST(sgd_dampening_matches_torch)
{
    golden_run("sgd_dampening");
}
END_TEST

START_TEST(adam_matches_torch_for_100_steps)
{
    golden_run("adam");
}
END_TEST

START_TEST(adam_amsgrad_weight_decay_matches_torch)
{
    golden_run("adam_amsgrad_wd");
}
END_TEST

START_TEST(adamw_matches_torch_for_100_steps)
{
    golden_run("adamw");
}
END_TEST

/* ---- schedules ---------------------------------------------------------------------- */

static void golden_schedule(const char *name, const optim_schedule *s)
{
    ck_assert_msg(optim_schedule_check(s) == AG_OK, "%s: %s", name, ag_last_error());
    double ref[STEPS];
    hid_t f = golden_open();
    char path[64];
    snprintf(path, sizeof path, "schedules/%s", name);
    golden_read(f, path, H5T_NATIVE_DOUBLE, ref, STEPS);
    H5Fclose(f);
    double worst = 0.0;
    for (int64_t i = 0; i < STEPS; i++) {
        double lr = optim_schedule_lr(s, i);
        double e = fabs(lr - ref[i]) / ref[i];
        ck_assert_msg(e <= 1e-15, "%s step %lld: %.17g, torch %.17g", name, (long long)i, lr,
                      ref[i]);
        worst = e > worst ? e : worst;
    }
    printf("optim golden schedule %-14s max relative error %.3g\n", name, worst);
}

START_TEST(cosine_schedule_matches_torch_closed_form)
{
    golden_schedule("cosine", &(optim_schedule){.kind = OPTIM_SCHEDULE_COSINE,
                                                .base_lr = 0.1,
                                                .total_steps = 100,
                                                .eta_min = 0.001});
}
END_TEST

START_TEST(step_schedule_matches_torch_step_lr)
{
    golden_schedule("step", &(optim_schedule){.kind = OPTIM_SCHEDULE_STEP,
                                              .base_lr = 0.1,
                                              .total_steps = 100,
                                              .step_size = 30,
                                              .gamma = 0.1});
}
END_TEST

START_TEST(cosine_with_warmup_matches_golden)
{
    golden_schedule("cosine_warmup", &(optim_schedule){.kind = OPTIM_SCHEDULE_COSINE,
                                                       .base_lr = 0.1,
                                                       .total_steps = 100,
                                                       .warmup_steps = 10});
}
END_TEST

START_TEST(step_with_warmup_matches_golden)
{
    golden_schedule("step_warmup", &(optim_schedule){.kind = OPTIM_SCHEDULE_STEP,
                                                     .base_lr = 0.1,
                                                     .total_steps = 100,
                                                     .warmup_steps = 5,
                                                     .step_size = 20,
                                                     .gamma = 0.5});
}
END_TEST

START_TEST(warmup_rises_linearly_then_cosine_starts_at_base)
{
    optim_schedule s = {.kind = OPTIM_SCHEDULE_COSINE,
                        .base_lr = 0.1,
                        .total_steps = 14,
                        .warmup_steps = 4,
                        .eta_min = 0.0};
    ck_assert_double_eq_tol(optim_schedule_lr(&s, 0), 0.025, 1e-15);
    ck_assert_double_eq_tol(optim_schedule_lr(&s, 1), 0.05, 1e-15);
    ck_assert_double_eq_tol(optim_schedule_lr(&s, 3), 0.1, 1e-15);
    ck_assert_double_eq_tol(optim_schedule_lr(&s, 4), 0.1, 1e-15);  /* cosine t = 0 */
    ck_assert_double_eq_tol(optim_schedule_lr(&s, 9), 0.05, 1e-15); /* t = T/2 */
    ck_assert_double_eq_tol(optim_schedule_lr(&s, 14), 0.0, 1e-15); /* t = T */
    s.kind = OPTIM_SCHEDULE_CONSTANT;
    ck_assert_double_eq_tol(optim_schedule_lr(&s, 2), 0.075, 1e-15);
    ck_assert_double_eq(optim_schedule_lr(&s, 1000), 0.1);
}
END_TEST

START_TEST(bad_schedules_are_rejected_with_the_field_named)
{
    optim_schedule s = {
        .kind = OPTIM_SCHEDULE_COSINE, .base_lr = 0.1, .total_steps = 10, .warmup_steps = 10};
    ck_assert_int_eq(optim_schedule_check(&s), AG_ERR_ARG);
    ck_assert_str_eq(
        ag_last_error(),
        "optim_schedule: cosine schedule needs total_steps (10) > warmup_steps (10)");
    s = (optim_schedule){.kind = OPTIM_SCHEDULE_STEP, .base_lr = 0.1, .gamma = 0.1};
    ck_assert_int_eq(optim_schedule_check(&s), AG_ERR_ARG);
    ck_assert_str_eq(ag_last_error(),
                     "optim_schedule: step schedule needs step_size >= 1 (got 0)");
    s = (optim_schedule){.kind = OPTIM_SCHEDULE_CONSTANT, .base_lr = -1.0};
    ck_assert_int_eq(optim_schedule_check(&s), AG_ERR_ARG);
    ck_assert_str_eq(ag_last_error(), "optim_schedule: invalid base_lr -1 (must be >= 0)");
    ck_assert_str_eq(optim_schedule_kind_name(OPTIM_SCHEDULE_COSINE), "cosine");
}
END_TEST

/* ---- hand-computed steps -------------------------------------------------------------- */

static ag_tensor *scalar_param(float value, float grad)
{
    ag_tensor *p = ag_param_new(1, AG_SHAPE(1));
    p->data[0] = value;
    p->grad = calloc(1, sizeof(float));
    p->grad[0] = grad;
    return p;
}

START_TEST(sgd_step_is_p_minus_lr_g_and_momentum_starts_from_gradient)
{
    ag_tensor *p = scalar_param(1.0f, 0.5f);
    optim_optimizer *o = optim_sgd_new(
        &p, NULL, 1, &(optim_sgd_args){.lr = 0.5, .momentum = 0.5, .dampening = 0.5});
    ck_assert_int_eq(optim_step(o), AG_OK);
    ck_assert_float_eq(p->data[0], 0.75f); /* buf = g = 0.5 (no dampening yet) */
    ck_assert_int_eq(optim_step(o), AG_OK);
    /* buf = 0.5 * 0.5 + (1 - 0.5) * 0.5 = 0.5; p = 0.75 - 0.5 * 0.5 */
    ck_assert_float_eq(p->data[0], 0.5f);
    ck_assert_float_eq(optim_state_get(o, 0).data[0], 0.5f);
    optim_free(o);
    ag_tensor_free(p);
}
END_TEST

START_TEST(adam_first_step_moves_by_lr_times_sign_of_gradient)
{
    ag_tensor *p[2] = {scalar_param(1.0f, 0.5f), scalar_param(1.0f, -2.0f)};
    optim_optimizer *o = optim_adam_new(p, NULL, 2, NULL); /* lr 1e-3 */
    ck_assert_int_eq(optim_step(o), AG_OK);
    /* m_hat = g, sqrt(v_hat) = |g|: p -= lr * g / (|g| + eps) */
    ck_assert_float_eq_tol(p[0]->data[0], 0.999f, 1e-7f);
    ck_assert_float_eq_tol(p[1]->data[0], 1.001f, 1e-7f);
    optim_free(o);
    ag_tensor_free(p[0]);
    ag_tensor_free(p[1]);
}
END_TEST

START_TEST(adamw_decays_weights_even_with_zero_gradient)
{
    ag_tensor *p = scalar_param(2.0f, 0.0f);
    optim_adam_args a = optim_adamw_defaults();
    a.lr = 0.1;
    optim_optimizer *o = optim_adamw_new(&p, NULL, 1, &a);
    ck_assert_int_eq(optim_step(o), AG_OK);
    ck_assert_float_eq(p->data[0], 2.0f * (float)(1.0 - 0.1 * 0.01)); /* m = 0: no Adam move */
    optim_free(o);
    ag_tensor_free(p);
}
END_TEST

/* ---- parameters without gradients, zero_grad, lr ------------------------------------ */

START_TEST(param_with_null_grad_is_untouched_and_keeps_its_step)
{
    toy t;
    toy_random(&t, 11);
    optim_optimizer *o = make_optimizer(find_run("adam_amsgrad_wd"), t.p);
    toy_set_grads(&t, 0);
    free(t.p[1]->grad);
    t.p[1]->grad = NULL;
    float before[N_B];
    memcpy(before, t.p[1]->data, sizeof before);
    ck_assert_int_eq(optim_step(o), AG_OK);
    ck_assert_mem_eq(before, t.p[1]->data, sizeof before);
    ck_assert_int_eq(*optim_state_get(o, optim_state_find(o, "fc1.bias.step")).counter, 0);
    ck_assert_int_eq(*optim_state_get(o, optim_state_find(o, "fc1.weight.step")).counter, 1);
    optim_state_entry m = optim_state_get(o, optim_state_find(o, "fc1.bias.exp_avg"));
    for (int64_t i = 0; i < m.numel; i++)
        ck_assert_float_eq(m.data[i], 0.0f);
    ck_assert(t.p[0]->data[0] != t.init[0][0]);
    optim_free(o);
    toy_free_params(&t);
}
END_TEST

START_TEST(zero_grad_zeroes_gradients_and_leaves_null_ones_null)
{
    toy t;
    toy_random(&t, 12);
    optim_optimizer *o = make_optimizer(find_run("sgd"), t.p);
    toy_set_grads(&t, NO_GRAD_AT); /* b without gradient */
    optim_zero_grad(o);
    for (int64_t i = 0; i < N_W; i++)
        ck_assert_float_eq(t.p[0]->grad[i], 0.0f);
    ck_assert_ptr_null(t.p[1]->grad);
    optim_free(o);
    toy_free_params(&t);
}
END_TEST

START_TEST(set_lr_changes_the_next_step_and_rejects_negative)
{
    ag_tensor *p = scalar_param(1.0f, 1.0f);
    optim_optimizer *o = optim_sgd_new(&p, NULL, 1, &(optim_sgd_args){.lr = 0.5});
    ck_assert_int_eq(optim_set_lr(o, 0.25), AG_OK);
    ck_assert_double_eq(optim_get_lr(o), 0.25);
    ck_assert_int_eq(optim_step(o), AG_OK);
    ck_assert_float_eq(p->data[0], 0.75f);
    ck_assert_int_eq(optim_set_lr(o, -0.1), AG_ERR_ARG);
    ck_assert_str_eq(ag_last_error(),
                     "optim_set_lr: invalid learning rate -0.1 (must be >= 0)");
    ck_assert_double_eq(optim_get_lr(o), 0.25);
    optim_free(o);
    ag_tensor_free(p);
}
END_TEST

/* ---- state export and restore ------------------------------------------------------- */

typedef struct saved_state {
    int32_t n;
    char **names;
    float **data;
    int64_t *counter;
    int64_t *numel;
} saved_state;

/* What a checkpoint writer does: copy every entry out under its name. */
static saved_state state_save(const optim_optimizer *o)
{
    saved_state s = {.n = optim_state_count(o)};
    s.names = calloc((size_t)s.n, sizeof *s.names);
    s.data = calloc((size_t)s.n, sizeof *s.data);
    s.counter = calloc((size_t)s.n, sizeof *s.counter);
    s.numel = calloc((size_t)s.n, sizeof *s.numel);
    for (int32_t i = 0; i < s.n; i++) {
        optim_state_entry e = optim_state_get(o, i);
        s.names[i] = strdup(e.name);
        s.numel[i] = e.numel;
        if (e.data) {
            s.data[i] = malloc((size_t)e.numel * sizeof(float));
            memcpy(s.data[i], e.data, (size_t)e.numel * sizeof(float));
        } else {
            s.counter[i] = *e.counter;
        }
    }
    return s;
}

/* What a checkpoint reader does: write each saved entry back by name. */
static void state_restore(optim_optimizer *o, const saved_state *s)
{
    ck_assert_int_eq(optim_state_count(o), s->n);
    for (int32_t i = 0; i < s->n; i++) {
        int32_t j = optim_state_find(o, s->names[i]);
        ck_assert_msg(j >= 0, "no state entry %s", s->names[i]);
        optim_state_entry e = optim_state_get(o, j);
        ck_assert_int_eq(e.numel, s->numel[i]);
        if (e.data)
            memcpy(e.data, s->data[i], (size_t)e.numel * sizeof(float));
        else
            *e.counter = s->counter[i];
    }
}

static void state_free(saved_state *s)
{
    for (int32_t i = 0; i < s->n; i++) {
        free(s->names[i]);
        free(s->data[i]);
    }
    free(s->names);
    free(s->data);
    free(s->counter);
    free(s->numel);
}

/* 100 uninterrupted steps vs 50 steps, save, a fresh optimizer, restore, 50 more. The
 * control (a fresh optimizer without the state) must end elsewhere, or the test could
 * not fail. */
static void check_restore(const char *name)
{
    const run_config *c = find_run(name);
    toy a, b, ctl;
    toy_random(&a, 21);
    toy_random(&b, 21);
    toy_random(&ctl, 21);
    optim_optimizer *oa = make_optimizer(c, a.p);
    toy_run(&a, oa, 0, STEPS);

    optim_optimizer *ob = make_optimizer(c, b.p);
    toy_run(&b, ob, 0, STEPS / 2);
    saved_state saved = state_save(ob);
    optim_free(ob);
    for (int k = 0; k < 2; k++) /* the model's own checkpoint */
        memcpy(ctl.p[k]->data, b.p[k]->data, (size_t)toy_numel[k] * sizeof(float));
    ob = make_optimizer(c, b.p);
    state_restore(ob, &saved);
    toy_run(&b, ob, STEPS / 2, STEPS);
    optim_optimizer *octl = make_optimizer(c, ctl.p);
    toy_run(&ctl, octl, STEPS / 2, STEPS);

    for (int k = 0; k < 2; k++)
        ck_assert_msg(
            memcmp(a.p[k]->data, b.p[k]->data, (size_t)toy_numel[k] * sizeof(float)) == 0,
            "%s: %s differs after restore", name, toy_names[k]);
    ck_assert_msg(memcmp(a.p[0]->data, ctl.p[0]->data, N_W * sizeof(float)) != 0,
                  "%s: the control run without state matched too", name);
    state_free(&saved);
    optim_free(oa);
    optim_free(ob);
    optim_free(octl);
    toy_free_params(&a);
    toy_free_params(&b);
    toy_free_params(&ctl);
}

START_TEST(restored_sgd_momentum_continues_bit_for_bit)
{
    check_restore("sgd_momentum_wd");
}
END_TEST

START_TEST(restored_sgd_nesterov_continues_bit_for_bit)
{
    check_restore("sgd_nesterov");
}
END_TEST

START_TEST(restored_sgd_dampening_continues_bit_for_bit)
{
    check_restore("sgd_dampening");
}
END_TEST

START_TEST(restored_adam_amsgrad_continues_bit_for_bit)
{
    check_restore("adam_amsgrad_wd");
}
END_TEST

START_TEST(restored_adamw_continues_bit_for_bit)
{
    check_restore("adamw");
}
END_TEST

START_TEST(state_names_use_pytorch_keys)
{
    toy t;
    toy_random(&t, 31);
    optim_optimizer *o = make_optimizer(find_run("sgd_momentum_wd"), t.p);
    ck_assert_int_eq(optim_state_count(o), 4);
    ck_assert_str_eq(optim_state_get(o, 0).name, "fc1.weight.momentum_buffer");
    ck_assert_int_eq(optim_state_get(o, 0).numel, 12);
    ck_assert_ptr_eq(optim_state_get(o, 0).param, t.p[0]);
    ck_assert_str_eq(optim_state_get(o, 1).name, "fc1.weight.step");
    ck_assert_ptr_nonnull(optim_state_get(o, 1).counter);
    ck_assert_ptr_null(optim_state_get(o, 1).data);
    ck_assert_str_eq(optim_state_get(o, 2).name, "fc1.bias.momentum_buffer");
    ck_assert_ptr_null(optim_state_get(o, 4).name); /* out of range */
    optim_free(o);

    o = make_optimizer(find_run("adam_amsgrad_wd"), t.p);
    ck_assert_int_eq(optim_state_count(o), 8);
    ck_assert_str_eq(optim_state_get(o, 4).name, "fc1.bias.exp_avg");
    ck_assert_str_eq(optim_state_get(o, 5).name, "fc1.bias.exp_avg_sq");
    ck_assert_str_eq(optim_state_get(o, 6).name, "fc1.bias.max_exp_avg_sq");
    ck_assert_str_eq(optim_state_get(o, 7).name, "fc1.bias.step");
    ck_assert_int_eq(optim_state_find(o, "fc1.bias.max_exp_avg_sq"), 6);
    ck_assert_int_eq(optim_state_find(o, "fc1.bias.momentum_buffer"), -1);
    optim_free(o);

    /* No names: indices, as PyTorch's optimizer state_dict; plain SGD keeps only steps. */
    o = optim_sgd_new(t.p, NULL, 2, &(optim_sgd_args){.lr = 0.1});
    ck_assert_int_eq(optim_state_count(o), 2);
    ck_assert_str_eq(optim_state_get(o, 1).name, "1.step");
    optim_free(o);
    toy_free_params(&t);
}
END_TEST

START_TEST(hyperparameters_are_readable_with_pytorch_defaults)
{
    toy t;
    toy_random(&t, 32);
    optim_optimizer *o = optim_adamw_new(t.p, toy_names, 2, NULL);
    ck_assert_str_eq(optim_kind_name(o), "adamw");
    ck_assert_int_eq(optim_param_count(o), 2);
    static const char *const want_names[] = {"lr",  "beta1",        "beta2",
                                             "eps", "weight_decay", "amsgrad"};
    static const double want[] = {1e-3, 0.9, 0.999, 1e-8, 1e-2, 0.0};
    ck_assert_int_eq(optim_hparam_count(o), 6);
    for (int32_t i = 0; i < 6; i++) {
        optim_hparam h = optim_hparam_get(o, i);
        ck_assert_str_eq(h.name, want_names[i]);
        ck_assert_double_eq(h.value, want[i]);
    }
    optim_free(o);
    o = optim_adam_new(t.p, toy_names, 2, NULL);
    ck_assert_str_eq(optim_kind_name(o), "adam");
    ck_assert_double_eq(optim_hparam_get(o, 4).value, 0.0); /* Adam: no weight decay */
    optim_free(o);
    o = make_optimizer(find_run("sgd_nesterov"), t.p);
    ck_assert_str_eq(optim_kind_name(o), "sgd");
    ck_assert_str_eq(optim_hparam_get(o, 4).name, "nesterov");
    ck_assert_double_eq(optim_hparam_get(o, 4).value, 1.0);
    ck_assert_ptr_null(optim_hparam_get(o, 5).name);
    optim_free(o);
    toy_free_params(&t);
}
END_TEST

/* ---- parallel path ------------------------------------------------------------------- */

/* A parameter above the parallel threshold updates exactly as a small one does. */
START_TEST(large_params_update_like_small_ones)
{
    enum { BIG = 40000, SMALL = 1000 };
    ag_tensor *big = tu_rand(1, AG_SHAPE(BIG), -1.0f, 1.0f, 41, true);
    ag_tensor *small = ag_param_new(1, AG_SHAPE(SMALL));
    memcpy(small->data, big->data, SMALL * sizeof(float));
    big->grad = calloc(BIG, sizeof(float));
    small->grad = calloc(SMALL, sizeof(float));
    ag_tensor *ps[2] = {big, small};
    const run_kind kinds[] = {RUN_SGD, RUN_ADAM};
    for (int r = 0; r < 2; r++) {
        const run_config *c =
            find_run(kinds[r] == RUN_SGD ? "sgd_nesterov" : "adam_amsgrad_wd");
        optim_optimizer *o = kinds[r] == RUN_SGD ? optim_sgd_new(ps, NULL, 2, &c->sgd)
                                                 : optim_adam_new(ps, NULL, 2, &c->adam);
        ck_assert_ptr_nonnull(o);
        for (int s = 0; s < 3; s++) {
            for (int64_t i = 0; i < BIG; i++)
                big->grad[i] = big->data[i] * 0.5f - 0.1f;
            memcpy(small->grad, big->grad, SMALL * sizeof(float));
            ck_assert_int_eq(optim_step(o), AG_OK);
        }
        ck_assert_mem_eq(big->data, small->data, SMALL * sizeof(float));
        optim_free(o);
    }
    ag_tensor_free(big);
    ag_tensor_free(small);
}
END_TEST

/* ---- argument errors ---------------------------------------------------------------- */

START_TEST(bad_sgd_args_return_null_with_a_message)
{
    ag_tensor *p = scalar_param(1.0f, 1.0f);
    ck_assert_ptr_null(optim_sgd_new(&p, NULL, 1, &(optim_sgd_args){.lr = -0.1}));
    ck_assert_str_eq(ag_last_error(),
                     "optim_sgd_new: invalid learning rate -0.1 (must be >= 0)");
    ck_assert_ptr_null(optim_sgd_new(&p, NULL, 1, &(optim_sgd_args){.lr = NAN}));
    ck_assert_str_eq(ag_last_error(),
                     "optim_sgd_new: invalid learning rate nan (must be >= 0)");
    ck_assert_ptr_null(
        optim_sgd_new(&p, NULL, 1, &(optim_sgd_args){.lr = 0.1, .nesterov = true}));
    ck_assert_str_eq(ag_last_error(),
                     "optim_sgd_new: nesterov momentum requires a momentum > 0 "
                     "and zero dampening (momentum 0, dampening 0)");
    ck_assert_ptr_null(optim_sgd_new(
        &p, NULL, 1,
        &(optim_sgd_args){.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}));
    ck_assert_str_eq(ag_last_error(),
                     "optim_sgd_new: nesterov momentum requires a momentum > 0 "
                     "and zero dampening (momentum 0.9, dampening 0.1)");
    ck_assert_ptr_null(
        optim_sgd_new(&p, NULL, 1, &(optim_sgd_args){.lr = 0.1, .momentum = -1}));
    ck_assert_str_eq(ag_last_error(), "optim_sgd_new: invalid momentum -1 (must be >= 0)");
    ck_assert_ptr_null(optim_sgd_new(&p, NULL, 1, NULL));
    ck_assert_str_eq(ag_last_error(), "optim_sgd_new: NULL args (SGD needs a learning rate)");
    ag_tensor_free(p);
}
END_TEST

START_TEST(bad_adam_args_return_null_with_a_message)
{
    ag_tensor *p = scalar_param(1.0f, 1.0f);
    optim_adam_args a = optim_adam_defaults();
    a.beta1 = 1.0;
    ck_assert_ptr_null(optim_adam_new(&p, NULL, 1, &a));
    ck_assert_str_eq(ag_last_error(), "optim_adam_new: invalid beta1 1 (must be in [0, 1))");
    a = optim_adamw_defaults();
    a.beta2 = -0.5;
    ck_assert_ptr_null(optim_adamw_new(&p, NULL, 1, &a));
    ck_assert_str_eq(ag_last_error(),
                     "optim_adamw_new: invalid beta2 -0.5 (must be in [0, 1))");
    a = optim_adam_defaults();
    a.eps = -1e-8;
    ck_assert_ptr_null(optim_adam_new(&p, NULL, 1, &a));
    ck_assert_str_eq(ag_last_error(), "optim_adam_new: invalid eps -1e-08 (must be >= 0)");
    a = optim_adam_defaults();
    a.weight_decay = -1.0;
    ck_assert_ptr_null(optim_adam_new(&p, NULL, 1, &a));
    ck_assert_str_eq(ag_last_error(), "optim_adam_new: invalid weight_decay -1 (must be >= 0)");
    ag_tensor_free(p);
}
END_TEST

START_TEST(bad_parameter_lists_return_null_with_a_message)
{
    ag_tensor *p = scalar_param(1.0f, 1.0f);
    optim_sgd_args a = {.lr = 0.1};
    ck_assert_ptr_null(optim_sgd_new(&p, NULL, 0, &a));
    ck_assert_str_eq(ag_last_error(), "optim_sgd_new: empty parameter list (n = 0)");
    ck_assert_ptr_null(optim_adam_new((ag_tensor *[]){p, NULL}, NULL, 2, NULL));
    ck_assert_str_eq(ag_last_error(), "optim_adam_new: parameter 1 is NULL");
    ck_assert_ptr_null(optim_sgd_new((ag_tensor *[]){p, p}, NULL, 2, &a));
    ck_assert_str_eq(ag_last_error(),
                     "optim_sgd_new: parameter 1 is parameter 0 again (each may appear once)");
    ag_tensor *q = scalar_param(2.0f, 1.0f);
    ck_assert_ptr_null(optim_sgd_new((ag_tensor *[]){p, q}, (const char *[]){"w", "w"}, 2, &a));
    ck_assert_str_eq(ag_last_error(), "optim_sgd_new: parameters 0 and 1 are both named \"w\"");
    ck_assert_int_eq(optim_step(NULL), AG_ERR_ARG);
    ag_tensor_free(p);
    ag_tensor_free(q);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("optim");
    TCase *golden = tcase_create("golden");
    tcase_add_test(golden, sgd_matches_torch_for_100_steps);
    tcase_add_test(golden, sgd_momentum_weight_decay_matches_torch);
    tcase_add_test(golden, sgd_nesterov_matches_torch);
    tcase_add_test(golden, sgd_dampening_matches_torch);
    tcase_add_test(golden, adam_matches_torch_for_100_steps);
    tcase_add_test(golden, adam_amsgrad_weight_decay_matches_torch);
    tcase_add_test(golden, adamw_matches_torch_for_100_steps);
    tcase_add_test(golden, cosine_schedule_matches_torch_closed_form);
    tcase_add_test(golden, step_schedule_matches_torch_step_lr);
    tcase_add_test(golden, cosine_with_warmup_matches_golden);
    tcase_add_test(golden, step_with_warmup_matches_golden);
    suite_add_tcase(s, golden);

    TCase *rules = tcase_create("rules");
    tcase_add_test(rules, sgd_step_is_p_minus_lr_g_and_momentum_starts_from_gradient);
    tcase_add_test(rules, adam_first_step_moves_by_lr_times_sign_of_gradient);
    tcase_add_test(rules, adamw_decays_weights_even_with_zero_gradient);
    tcase_add_test(rules, param_with_null_grad_is_untouched_and_keeps_its_step);
    tcase_add_test(rules, zero_grad_zeroes_gradients_and_leaves_null_ones_null);
    tcase_add_test(rules, set_lr_changes_the_next_step_and_rejects_negative);
    tcase_add_test(rules, warmup_rises_linearly_then_cosine_starts_at_base);
    tcase_add_test(rules, large_params_update_like_small_ones);
    suite_add_tcase(s, rules);

    TCase *state = tcase_create("state");
    tcase_add_test(state, restored_sgd_momentum_continues_bit_for_bit);
    tcase_add_test(state, restored_sgd_nesterov_continues_bit_for_bit);
    tcase_add_test(state, restored_sgd_dampening_continues_bit_for_bit);
    tcase_add_test(state, restored_adam_amsgrad_continues_bit_for_bit);
    tcase_add_test(state, restored_adamw_continues_bit_for_bit);
    tcase_add_test(state, state_names_use_pytorch_keys);
    tcase_add_test(state, hyperparameters_are_readable_with_pytorch_defaults);
    suite_add_tcase(s, state);

    TCase *errors = tcase_create("errors");
    tcase_add_test(errors, bad_sgd_args_return_null_with_a_message);
    tcase_add_test(errors, bad_adam_args_return_null_with_a_message);
    tcase_add_test(errors, bad_parameter_lists_return_null_with_a_message);
    tcase_add_test(errors, bad_schedules_are_rejected_with_the_field_named);
    suite_add_tcase(s, errors);
    return s;
}
