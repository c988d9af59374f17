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

void optim_sgd_update(const optim_sgd_args *a, optim_slot *slot)
{
    ag_tensor *p = slot->param;
    float *w = p->data;        // (param shape)
    const float *g = p->grad;  // (param shape)
    float *buf = slot->buf[0]; // (param shape), momentum only
    const int64_t n = p->numel;
    const bool decay = a->weight_decay != 0.0, heavy = a->momentum != 0.0;
    const bool first = slot->step == 0, nesterov = a->nesterov;
    const float wd = (float)a->weight_decay, m = (float)a->momentum;
    const float keep = (float)(1.0 - a->dampening); /* alpha of buf.add_(d, alpha=1-damp) */
    const float neg_lr = (float)-a->lr;             /* alpha of p.add_(d, alpha=-lr) */

#pragma omp parallel for if (n > OPTIM_PARALLEL_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        if (decay)
            d = fmaf(wd, w[i], d);
        if (heavy) {
            float b = first ? d : fmaf(keep, d, buf[i] * m);
            buf[i] = b;
            d = nesterov ? fmaf(m, b, d) : b;
        }
        w[i] = fmaf(neg_lr, d, w[i]);
    }
    slot->step++;
}
