/* float_functional.c — FloatFunctional (torch/ao/nn/quantized/modules/functional_modules.py):
 * a module standing for a functional op so that QAT can observe the op's output. Each
 * call computes the op with autograd, then applies the module's activation_post_process
 * (an Identity until qat/prepare replaces it) and reports the call to the trace. */
#include "nn/layers/layer_impl.h"

static const nn_module_vtbl float_functional_vtbl = {.type = "FloatFunctional"};

nn_module *nn_float_functional_new(void)
{
    nn_module *m = nn_layer_alloc(sizeof(nn_float_functional), &float_functional_vtbl);
    if (!m)
        return NULL;
    ag_status st = nn_add_child(m, AG_OK, "activation_post_process", nn_identity_new());
    if (st == AG_OK)
        m->post = m->children[0].m;
    return nn_finish(m, st);
}

nn_ff_op nn_ff_last_op(const nn_module *m, int32_t *cat_dim)
{
    const nn_float_functional *f = (const nn_float_functional *)m;
    if (cat_dim)
        *cat_dim = f->last_dim;
    return f->last_op;
}

/* Post-process and trace: the common tail of every call. The op is noted first, so
 * that a trace callback can ask nn_ff_last_op what the reported call computed. */
static ag_tensor *ff_finish(nn_module *m, ag_ctx *ctx, ag_tensor *const *in, int32_t n,
                            ag_tensor *y, nn_ff_op op, int32_t dim)
{
    ((nn_float_functional *)m)->last_op = op;
    ((nn_float_functional *)m)->last_dim = dim;
    y = nn_post_process(m, ctx, y);
    nn_trace_report(m, in, n, y);
    return y;
}

static bool ff_check(const nn_module *m, const char *fn)
{
    if (nn_module_is(m, "FloatFunctional"))
        return true;
    ag_error(AG_ERR_ARG, "%s: module is %s, not FloatFunctional", fn,
             m ? nn_module_type(m) : "NULL");
    return false;
}

ag_tensor *nn_ff_add(nn_module *m, ag_ctx *ctx, ag_tensor *a, ag_tensor *b)
{
    if (!ff_check(m, "nn_ff_add"))
        return NULL;
    return ff_finish(m, ctx, (ag_tensor *[]){a, b}, 2, ag_add(ctx, a, b), NN_FF_ADD, 0);
}

ag_tensor *nn_ff_add_relu(nn_module *m, ag_ctx *ctx, ag_tensor *a, ag_tensor *b)
{
    if (!ff_check(m, "nn_ff_add_relu"))
        return NULL;
    return ff_finish(m, ctx, (ag_tensor *[]){a, b}, 2, ag_relu(ctx, ag_add(ctx, a, b)),
                     NN_FF_ADD_RELU, 0);
}

ag_tensor *nn_ff_mul(nn_module *m, ag_ctx *ctx, ag_tensor *a, ag_tensor *b)
{
    if (!ff_check(m, "nn_ff_mul"))
        return NULL;
    return ff_finish(m, ctx, (ag_tensor *[]){a, b}, 2, ag_mul(ctx, a, b), NN_FF_MUL, 0);
}

ag_tensor *nn_ff_cat(nn_module *m, ag_ctx *ctx, ag_tensor *const *xs, int32_t n, int32_t dim)
{
    if (!ff_check(m, "nn_ff_cat"))
        return NULL;
    return ff_finish(m, ctx, xs, n, ag_cat(ctx, xs, n, dim), NN_FF_CAT, dim);
}
