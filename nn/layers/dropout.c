/* dropout.c — Dropout(p): in training, zero each element with probability p and scale
 * the rest by 1 / (1 - p), the mask drawn from the context's rng; identity in eval. */
#include "nn/layers/layer_impl.h"

static ag_tensor *dropout_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    return ag_dropout(ctx, x, ((nn_dropout *)m)->p, m->training, ag_ctx_rng(ctx));
}

static const nn_module_vtbl dropout_vtbl = {.type = "Dropout", .forward = dropout_forward};

nn_module *nn_dropout_new(float p)
{
    if (!(p >= 0.0f && p <= 1.0f)) {
        ag_error(AG_ERR_ARG, "Dropout: probability has to be between 0 and 1, but got %g",
                 (double)p);
        return NULL;
    }
    nn_dropout *d = nn_layer_alloc(sizeof *d, &dropout_vtbl);
    if (d)
        d->p = p;
    return (nn_module *)d;
}
