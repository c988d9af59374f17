/* adam.c — Adam and AdamW, as torch.optim.Adam / torch.optim.AdamW (PyTorch 1.13,
 * _single_tensor_adam / _single_tensor_adamw, the non-capturable branch):
 *
 *     step += 1
 *     AdamW: p = p * (1 - lr * wd)          Adam: g = g + wd * p   (if wd != 0)
 *     m = beta1 * m + (1 - beta1) * g       exp_avg.mul_(b1).add_(g, alpha=1-b1)
 *     v = beta2 * v + (1 - beta2) * g * g   exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2)
 *     amsgrad: vmax = maximum(vmax, v), used in place of v below
 *     bc1 = 1 - beta1^step, bc2 = 1 - beta2^step          (double, like Python floats)
 *     denom = sqrt(v) / sqrt(bc2) + eps
 *     p = p + (-(lr / bc1) * m) / denom     p.addcdiv_(m, denom, value=-step_size)
 *
 * Tensor ops round in float32 in the order written, with add_(alpha) and addcmul_ fused
 * (fmaf) and addcdiv_ not, as torch's CPU kernels compute them on machines with FMA; the
 * bias corrections and step size are computed in double and cast to float where they
 * meet a tensor, as in torch.
 */
#include <math.h>
#include <omp.h>

#include "optim/optim_impl.h"

static const char *const adam_keys[] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};

optim_adam_args optim_adam_defaults(void)
{
    return (optim_adam_args){
        .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0};
}

optim_adam_args optim_adamw_defaults(void)
{
    optim_adam_args a = optim_adam_defaults();
    a.weight_decay = 1e-2;
    return a;
}

static bool check_beta(const char *op, const char *what, double beta)
{
    if (beta >= 0.0 && beta < 1.0) /* false for NaN too */
        return true;
    ag_error(AG_ERR_ARG, "%s: invalid %s %g (must be in [0, 1))", op, what, beta);
    return false;
}

static bool check_adam_args(const char *op, const optim_adam_args *a)
{
    return optim_check_nonneg(op, "learning rate", a->lr) &&
           optim_check_nonneg(op, "eps", a->eps) && check_beta(op, "beta1", a->beta1) &&
           check_beta(op, "beta2", a->beta2) &&
           optim_check_nonneg(op, "weight_decay", a->weight_decay);
}

static optim_optimizer *adam_new(const char *op, optim_kind kind, ag_tensor *const *params,
                                 const char *const *names, int32_t n, const optim_adam_args *a)
{
    if (!check_adam_args(op, a))
        return NULL;
    int32_t n_bufs = a->amsgrad ? 3 : 2;
    optim_optimizer *o = optim_new_common(op, kind, params, names, n, n_bufs, adam_keys);
    if (o)
        o->adam = *a;
    return o;
}

optim_optimizer *optim_adam_new(ag_tensor *const *params, const char *const *names, int32_t n,
                                const optim_adam_args *args)
{
    optim_adam_args a = args ? *args : optim_adam_defaults();
    return adam_new("optim_adam_new", OPTIM_ADAM, params, names, n, &a);
}

optim_optimizer *optim_adamw_new(ag_tensor *const *params, const char *const *names, int32_t n,
                                 const optim_adam_args *args)
{
    optim_adam_args a = args ? *args : optim_adamw_defaults();
    return adam_new("optim_adamw_new", OPTIM_ADAMW, params, names, n, &a);
}

/* torch.maximum: NaN wins. */
static inline float max_nan(float a, float b)
{
    return a >= b || a != a ? a : b;
}

/* One parameter's update, the constants of the formulas above. */
typedef struct adam_pass {
    float *w;       // (param shape)
    const float *g; // (param shape)
    float *m, *v;   // (param shape) exp_avg, exp_avg_sq
    float *vmax;    // (param shape) max_exp_avg_sq, amsgrad only
    bool decoupled_decay, l2, amsgrad;
    float neg_step_size, bc2_sqrt, eps, b1, one_b1, b2, one_b2, wd, shrink;
} adam_pass;

/* Elements [lo, hi), inlined into a plain and an FMA-target copy as in sgd.c (fmaf is
 * exactly rounded either way: the same bits). */
static inline __attribute__((always_inline)) void adam_span_body(const adam_pass *s,
                                                                 int64_t lo, int64_t hi)
{
    float *restrict w = s->w, *restrict m = s->m, *restrict v = s->v;
    float *restrict vmax = s->vmax;
    const float *restrict g = s->g;
    for (int64_t i = lo; i < hi; i++) {
        float gi = g[i];
        if (s->decoupled_decay)
            w[i] = w[i] * s->shrink;
        else if (s->l2)
            gi = fmaf(s->wd, w[i], gi);
        m[i] = fmaf(s->one_b1, gi, m[i] * s->b1);
        v[i] = fmaf(s->one_b2 * gi, gi, v[i] * s->b2);
        float vi = v[i];
        if (s->amsgrad) {
            vmax[i] = max_nan(vmax[i], vi);
            vi = vmax[i];
        }
        float denom = sqrtf(vi) / s->bc2_sqrt + s->eps;
        w[i] = w[i] + s->neg_step_size * m[i] / denom;
    }
}

static void adam_span(const adam_pass *s, int64_t lo, int64_t hi)
{
    adam_span_body(s, lo, hi);
}

#if OPTIM_FMA_DISPATCH
static OPTIM_FMA void adam_span_fma(const adam_pass *s, int64_t lo, int64_t hi)
{
    adam_span_body(s, lo, hi);
}
#endif

void optim_adam_update(const optim_adam_args *a, bool decoupled_decay, optim_slot *slot)
{
    ag_tensor *p = slot->param;
    slot->step++;
    const double bc1 = 1.0 - pow(a->beta1, (double)slot->step);
    const double bc2 = 1.0 - pow(a->beta2, (double)slot->step);
    const adam_pass s = {
        .w = p->data,
        .g = p->grad,
        .m = slot->buf[0],
        .v = slot->buf[1],
        .vmax = slot->buf[2],
        .decoupled_decay = decoupled_decay,
        .l2 = !decoupled_decay && a->weight_decay != 0.0,
        .amsgrad = a->amsgrad,
        .neg_step_size = (float)-(a->lr / bc1),
        .bc2_sqrt = (float)sqrt(bc2),
        .eps = (float)a->eps,
        .b1 = (float)a->beta1,
        .one_b1 = (float)(1.0 - a->beta1),
        .b2 = (float)a->beta2,
        .one_b2 = (float)(1.0 - a->beta2),
        .wd = (float)a->weight_decay,
        .shrink = (float)(1.0 - a->lr * a->weight_decay), /* AdamW's p.mul_ */
    };
    void (*span)(const adam_pass *, int64_t, int64_t) = adam_span;
#if OPTIM_FMA_DISPATCH
    if (optim_fma_available())
        span = adam_span_fma;
#endif
    const int64_t n = p->numel;
#pragma omp parallel if (n > OPTIM_PARALLEL_MIN)
    {
        int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        span(&s, n * t / nt, n * (t + 1) / nt);
    }
}
