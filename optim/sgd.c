/* sgd.c — stochastic gradient descent with momentum, dampening, weight decay and
 * Nesterov, as torch.optim.SGD (PyTorch 1.13, torch/optim/sgd.py _single_tensor_sgd):
 *
 *     d = g + wd * p                           (if wd != 0)
 *     buf = d                                  (first step: no dampening)
 *     buf = momentum * buf + (1 - dampening) * d   (later steps)
 *     d = nesterov ? d + momentum * buf : buf  (if momentum != 0)
 *     p = p - lr * d
 *
 * Every line is one float32 PyTorch op, rounded as torch rounds it: scalars are Python
 * doubles cast to float where they meet a tensor, and add(x, alpha=a) is the fused
 * fmaf(a, x, self) that torch's CPU kernels compute on any machine with FMA (see
 * docs/OPTIM.md).
 */
#include <math.h>
#include <omp.h>

#include "optim/optim_impl.h"

static const char *const sgd_keys[] = {"momentum_buffer"};

static bool check_sgd_args(const optim_sgd_args *a)
{
    const char *op = "optim_sgd_new";
    if (!a) {
        ag_error(AG_ERR_ARG, "%s: NULL args (SGD needs a learning rate)", op);
        return false;
    }
    if (!optim_check_nonneg(op, "learning rate", a->lr) ||
        !optim_check_nonneg(op, "momentum", a->momentum) ||
        !optim_check_nonneg(op, "weight_decay", a->weight_decay))
        return false;
    if (a->nesterov && (a->momentum <= 0.0 || a->dampening != 0.0)) {
        ag_error(AG_ERR_ARG,
                 "%s: nesterov momentum requires a momentum > 0 and zero "
                 "dampening (momentum %g, dampening %g)",
                 op, a->momentum, a->dampening);
        return false;
    }
    return true;
}

optim_optimizer *optim_sgd_new(ag_tensor *const *params, const char *const *names, int32_t n,
                               const optim_sgd_args *args)
{
    if (!check_sgd_args(args))
        return NULL;
    /* Without momentum SGD keeps no buffer (PyTorch stores None). */
    int32_t n_bufs = args->momentum != 0.0 ? 1 : 0;
    optim_optimizer *o =
        optim_new_common("optim_sgd_new", OPTIM_SGD, params, names, n, n_bufs, sgd_keys);
    if (o)
        o->sgd = *args;
    return o;
}

/* One parameter's update, the constants of the formulas above. */
typedef struct sgd_pass {
    float *w;         // (param shape)
    const float *g;   // (param shape)
    float *buf;       // (param shape), momentum only
    bool decay, heavy, first, nesterov;
    float wd, m, keep, neg_lr;
} sgd_pass;

/* Elements [lo, hi). Inlined into a plain and an FMA-target copy: without -mfma each
 * fmaf is a call into libm (3% of refcnn's training step); with the target the
 * compiler emits the instruction and vectorises. fmaf is exactly rounded either way,
 * so the two copies give the same bits. */
static inline __attribute__((always_inline)) void sgd_span_body(const sgd_pass *s, int64_t lo,
                                                                int64_t hi)
{
    float *restrict w = s->w, *restrict buf = s->buf;
    const float *restrict g = s->g;
    for (int64_t i = lo; i < hi; i++) {
        float d = g[i];
        if (s->decay)
            d = fmaf(s->wd, w[i], d);
        if (s->heavy) {
            float b = s->first ? d : fmaf(s->keep, d, buf[i] * s->m);
            buf[i] = b;
            d = s->nesterov ? fmaf(s->m, b, d) : b;
        }
        w[i] = fmaf(s->neg_lr, d, w[i]);
    }
}

static void sgd_span(const sgd_pass *s, int64_t lo, int64_t hi)
{
    sgd_span_body(s, lo, hi);
}

#if OPTIM_FMA_DISPATCH
static OPTIM_FMA void sgd_span_fma(const sgd_pass *s, int64_t lo, int64_t hi)
{
    sgd_span_body(s, lo, hi);
}
#endif

void optim_sgd_update(const optim_sgd_args *a, optim_slot *slot)
{
    ag_tensor *p = slot->param;
    const sgd_pass s = {
        .w = p->data,
        .g = p->grad,
        .buf = slot->buf[0],
        .decay = a->weight_decay != 0.0,
        .heavy = a->momentum != 0.0,
        .first = slot->step == 0,
        .nesterov = a->nesterov,
        .wd = (float)a->weight_decay,
        .m = (float)a->momentum,
        .keep = (float)(1.0 - a->dampening), /* alpha of buf.add_(d, alpha=1-damp) */
        .neg_lr = (float)-a->lr,             /* alpha of p.add_(d, alpha=-lr) */
    };
    void (*span)(const sgd_pass *, int64_t, int64_t) = sgd_span;
#if OPTIM_FMA_DISPATCH
    if (optim_fma_available())
        span = sgd_span_fma;
#endif
    const int64_t n = p->numel;
#pragma omp parallel if (n > OPTIM_PARALLEL_MIN)
    {
        int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        span(&s, n * t / nt, n * (t + 1) / nt);
    }
    slot->step++;
}
