/* train.c — the training loop and evaluation; see train.h. */
#include "tools/train.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The input tensor of a batch, filled by the loader, in the step's arena. */
static ag_tensor *batch_input(ag_ctx *ctx, const data_loader *ld, int64_t b, int32_t *labels,
                              int32_t *count)
{
    const data_dataset *ds = ld->ds;
    int64_t shape[4] = {ld->batch_size, ds->c, ds->h, ds->w};
    ag_tensor *x = ag_ctx_tensor(ctx, 4, shape);
    if (!x)
        return NULL;
    if (data_loader_batch(ld, b, x->data, labels, count) != AG_OK)
        return NULL;
    if (*count < ld->batch_size) { /* a short last batch: shrink the view */
        x->shape[0] = *count;
        x->numel = (int64_t)*count * ds->c * ds->h * ds->w;
    }
    return x;
}

static int64_t argmax_row(const float *row, int64_t n)
{
    int64_t best = 0;
    for (int64_t j = 1; j < n; j++)
        if (row[j] > row[best])
            best = j;
    return best;
}

ag_status cqat_evaluate(nn_module *m, const data_dataset *ds, int32_t batch_size,
                        cqat_eval_result *out)
{
    memset(out, 0, sizeof *out);
    data_transform tf = data_transform_fashion_mnist();
    data_loader ld;
    ag_status st = data_loader_init(&ld, ds, batch_size, false, false, 0, &tf);
    if (st != AG_OK)
        return st;
    ag_ctx *ctx = ag_ctx_new();
    int32_t *labels = malloc((size_t)batch_size * sizeof *labels);
    if (!ctx || !labels) {
        st = ag_error(AG_ERR_NOMEM, "evaluate: out of memory");
        goto done;
    }
    double t0 = now_s(), loss_sum = 0.0;
    int64_t correct = 0;
    bool was_training = m->training;
    nn_module_eval(m);
    ag_no_grad_begin(ctx);
    for (int64_t b = 0; b < data_loader_num_batches(&ld); b++) {
        int32_t count = 0;
        ag_tensor *x = batch_input(ctx, &ld, b, labels, &count);
        ag_tensor *logits = nn_forward(m, ctx, x);
        ag_tensor *loss = ag_cross_entropy(ctx, logits, labels, 0.0f);
        if (!loss) {
            st = ag_last_status() ? ag_last_status() : AG_ERR_STATE;
            break;
        }
        loss_sum += (double)loss->data[0] * count;
        int64_t k = logits->shape[1];
        for (int32_t i = 0; i < count; i++)
            correct += argmax_row(logits->data + (int64_t)i * k, k) == labels[i];
        out->n += count;
        ag_ctx_reset(ctx);
    }
    ag_no_grad_end(ctx);
    nn_module_train(m, was_training);
    if (st == AG_OK && out->n > 0) {
        out->accuracy = (double)correct / (double)out->n;
        out->loss = loss_sum / (double)out->n;
    }
    out->seconds = now_s() - t0;
done:
    free(labels);
    ag_ctx_free(ctx);
    data_loader_deinit(&ld);
    return st;
}

/* ---- non-finite detection ---- */

typedef struct first_bad {
    const char *key;
    char buf[256];
} first_bad;

static bool find_nonfinite_grad(void *ud, const char *key, ag_tensor *t, nn_state_kind kind)
{
    first_bad *fb = ud;
    if (kind != NN_STATE_PARAM || !t->grad)
        return true;
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(t->grad[i])) {
            snprintf(fb->buf, sizeof fb->buf, "%s", key);
            fb->key = fb->buf;
            return false;
        }
    return true;
}

/* Which layer's gradient went non-finite first, in forward (state_dict) order. */
static ag_status check_grads(nn_module *m, int64_t step)
{
    first_bad fb = {0};
    nn_state_foreach(m, find_nonfinite_grad, &fb);
    if (fb.key)
        return ag_error(AG_ERR_NUMERIC,
                        "step %" PRId64 ": the gradient of '%s' is NaN or Inf (lower the "
                        "learning rate?); training stopped, the last checkpoint is intact",
                        step, fb.key);
    return AG_OK;
}

/* ---- progress ---- */

static void progress_line(const cqat_fit_args *a, int64_t epoch, int64_t b, int64_t nb,
                          double loss, double lr, double sps, double eta)
{
    fprintf(stderr, "\repoch %" PRId64 "/%" PRId64 " [", epoch + 1, a->epochs);
    int width = 24, filled = (int)((double)width * (double)(b + 1) / (double)nb);
    for (int i = 0; i < width; i++)
        fputc(i < filled ? '=' : ' ', stderr);
    fprintf(stderr, "] %" PRId64 "/%" PRId64 " loss %.4f lr %.5f %.0f samples/s ETA %.0fs  ",
            b + 1, nb, loss, lr, sps, eta);
    fflush(stderr);
}

static ag_status save(cqat_fit_args *a, ag_ctx *ctx, int64_t epoch_done, int64_t step)
{
    if (!a->out)
        return AG_OK;
    a->meta->epoch = epoch_done;
    a->meta->step = step;
    a->meta->rng = *ag_ctx_rng(ctx);
    return cqat_ckpt_save(a->out, a->model, a->opt, a->meta);
}

/* ---- where a non-finite loss came from ---- */

typedef struct first_nonfinite {
    nn_module *root;
    char path[256];
    bool found;
} first_nonfinite;

typedef struct find_module {
    const nn_module *target;
    char *path;
    size_t size;
} find_module;

static bool find_module_path(void *ud, const char *path, nn_module *m)
{
    find_module *f = ud;
    if (m != f->target)
        return true;
    snprintf(f->path, f->size, "%s", *path ? path : "(model)");
    return false;
}

/* Trace callback: the first module (in execution order) whose output holds NaN/Inf. */
static void note_nonfinite(void *ud, nn_module *m, ag_tensor *const *in, int32_t n_in,
                           ag_tensor *out)
{
    (void)in;
    (void)n_in;
    first_nonfinite *f = ud;
    if (f->found || out->dtype != AG_F32)
        return;
    for (int64_t i = 0; i < out->numel; i++)
        if (!isfinite(out->data[i])) {
            find_module fm = {m, f->path, sizeof f->path};
            nn_module_walk(f->root, find_module_path, &fm);
            f->found = true;
            return;
        }
}

/* Runs the batch's forward again, without recording, to name the first layer whose
 * output went non-finite; "" if none did (the loss itself overflowed). */
static void locate_nonfinite(nn_module *m, ag_ctx *ctx, ag_tensor *x, char *path, size_t size)
{
    first_nonfinite f = {.root = m};
    ag_no_grad_begin(ctx);
    nn_trace_set(note_nonfinite, &f);
    nn_forward(m, ctx, x);
    nn_trace_set(NULL, NULL);
    ag_no_grad_end(ctx);
    snprintf(path, size, "%s", f.found ? f.path : "");
}

/* One optimizer step on batch b. */
static ag_status train_step(cqat_fit_args *a, ag_ctx *ctx, const data_loader *ld, int64_t b,
                            int64_t step, int32_t *labels, double *loss_out, int32_t *count)
{
    ag_tensor *x = batch_input(ctx, ld, b, labels, count);
    ag_tensor *logits = nn_forward(a->model, ctx, x);
    ag_tensor *loss = ag_cross_entropy(ctx, logits, labels, a->label_smoothing);
    if (!loss)
        return ag_last_status() ? ag_last_status() : AG_ERR_STATE;
    if (!isfinite(loss->data[0])) {
        double value = loss->data[0];
        char where[256];
        locate_nonfinite(a->model, ctx, x, where, sizeof where);
        return ag_error(AG_ERR_NUMERIC,
                        "step %" PRId64 ": the loss is %g%s%s%s (lower the learning rate?); "
                        "training stopped, the last checkpoint is intact",
                        step, value, *where ? "; the output of '" : "", where,
                        *where ? "' went non-finite first" : "");
    }
    ag_status st = ag_backward(ctx, loss);
    if (st == AG_OK)
        st = check_grads(a->model, step);
    if (st == AG_OK)
        st = optim_set_lr(a->opt, optim_schedule_lr(&a->schedule, step));
    if (st == AG_OK)
        st = optim_step(a->opt);
    optim_zero_grad(a->opt);
    *loss_out = loss->data[0];
    return st;
}

ag_status cqat_fit(cqat_fit_args *a, cqat_fit_result *res)
{
    memset(res, 0, sizeof *res);
    data_loader ld;
    ag_status st = data_loader_init(&ld, a->train, a->batch_size, true, false, a->seed,
                                    &a->transform);
    if (st != AG_OK)
        return st;
    ag_ctx *ctx = ag_ctx_new();
    int32_t *labels = malloc((size_t)a->batch_size * sizeof *labels);
    if (!ctx || !labels) {
        st = ag_error(AG_ERR_NOMEM, "train: out of memory");
        goto done;
    }
    *ag_ctx_rng(ctx) = a->meta->rng;
    const int64_t nb = data_loader_num_batches(&ld);
    int64_t step = a->meta->step;
    double train_time = 0.0; /* training steps only, not evaluation */
    int64_t samples = 0;
    for (int64_t epoch = step / nb; epoch < a->epochs && st == AG_OK; epoch++) {
        nn_module_train(a->model, true);
        if (a->hooks.epoch_begin)
            st = a->hooks.epoch_begin(a->hooks.ud, a->model, epoch);
        if (st == AG_OK)
            st = data_loader_epoch_begin(&ld, epoch);
        double loss_sum = 0.0, t_epoch = now_s();
        int64_t seen = 0;
        for (int64_t b = step - epoch * nb; b < nb && st == AG_OK; b++) {
            double loss = 0.0;
            int32_t count = 0;
            st = train_step(a, ctx, &ld, b, step, labels, &loss, &count);
            ag_ctx_reset(ctx);
            if (st != AG_OK)
                break;
            step++;
            loss_sum += loss * count;
            seen += count;
            samples += count;
            if (a->progress && (b % 10 == 9 || b + 1 == nb)) {
                double el = now_s() - t_epoch;
                progress_line(a, epoch, b, nb, loss_sum / (double)seen,
                              optim_get_lr(a->opt), (double)seen / el,
                              el / (double)seen * (double)(nb - b - 1) * a->batch_size);
            }
            bool stop = a->stop_after_steps && step >= a->stop_after_steps;
            if ((a->save_every && step % a->save_every == 0 && b + 1 < nb) || (stop && b + 1 < nb))
                st = save(a, ctx, epoch, step);
            if (stop && b + 1 < nb) {
                res->steps = step;
                goto done;
            }
        }
        if (st != AG_OK)
            break;
        if (a->progress)
            fputc('\n', stderr);
        res->train_loss = seen ? loss_sum / (double)seen : 0.0;
        double train_s = now_s() - t_epoch;
        train_time += train_s;
        if (a->hooks.eval_begin)
            a->hooks.eval_begin(a->hooks.ud, a->model);
        st = cqat_evaluate(a->model, a->test, 256, &res->test);
        if (st == AG_OK && a->log)
            fprintf(a->log,
                    "epoch %" PRId64 "/%" PRId64 ": train loss %.4f, test loss %.4f, test "
                    "accuracy %.2f%%, %.0f samples/s, %.1fs\n",
                    epoch + 1, a->epochs, res->train_loss, res->test.loss,
                    100.0 * res->test.accuracy, seen / (train_s > 0 ? train_s : 1), train_s);
        if (st == AG_OK)
            st = save(a, ctx, epoch + 1, step);
        if (a->stop_after_steps && step >= a->stop_after_steps)
            break;
    }
    if (ag_ctx_profile_enabled(ctx)) {
        fprintf(stderr, "profile of the training steps (CQAT_PROFILE):\n");
        ag_ctx_profile_print(ctx, stderr);
    }
    res->steps = step;
    res->samples_per_s = train_time > 0 ? (double)samples / train_time : 0.0;
done:
    free(labels);
    ag_ctx_free(ctx);
    data_loader_deinit(&ld);
    return st;
}
