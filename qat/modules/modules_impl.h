/* modules_impl.h — private helpers of qat/modules: building modules in a chain that
 * stops at the first failure, the post-process hook, moving tensors between modules,
 * and the internal constructors behind qat_module_from_float. Not installed. */
#ifndef CQAT_QAT_MODULES_IMPL_H
#define CQAT_QAT_MODULES_IMPL_H

#include <stdlib.h>
#include <string.h>

#include "qat/qat.h"

/* A zeroed concrete module of `size` bytes with its base initialised (training mode). */
static inline void *qat_mod_alloc(size_t size, const nn_module_vtbl *vt)
{
    nn_module *m = calloc(1, size);
    if (!m) {
        ag_error(AG_ERR_NOMEM, "%s: out of memory", vt->type);
        return NULL;
    }
    nn_module_init(m, vt);
    return m;
}

/* The status a failed constructor left behind (it set the message). */
static inline ag_status qat_failed_status(void)
{
    ag_status st = ag_last_status();
    return st != AG_OK ? st : ag_error(AG_ERR_NOMEM, "qat: constructor failed");
}

/* st = qat_add_child(m, st, "bn", nn_batch_norm2d_new(c)): registers child unless st is
 * already an error (then child is freed); a NULL child keeps its constructor's message. */
static inline ag_status qat_add_child(nn_module *m, ag_status st, const char *name,
                                      nn_module *child)
{
    if (st != AG_OK) {
        nn_module_free(child);
        return st;
    }
    if (!child)
        return qat_failed_status();
    return nn_module_add_child(m, name, child);
}

/* The same for a parameter, stored in *slot too. */
static inline ag_status qat_add_param(nn_module *m, ag_status st, const char *name,
                                      ag_tensor *t, ag_tensor **slot)
{
    if (st != AG_OK) {
        ag_tensor_free(t);
        return st;
    }
    if (!t)
        return qat_failed_status();
    *slot = t;
    return nn_module_add_param(m, name, t);
}

static inline nn_module *qat_finish(nn_module *m, ag_status st)
{
    if (st == AG_OK)
        return m;
    nn_module_free(m);
    return NULL;
}

/* The slot of m's direct child `name`, or NULL. */
static inline nn_named_module *qat_child_slot(nn_module *m, const char *name)
{
    for (int32_t i = 0; i < m->n_children; i++)
        if (strcmp(m->children[i].name, name) == 0)
            return &m->children[i];
    return NULL;
}

static inline nn_module *qat_child(nn_module *m, const char *name)
{
    nn_named_module *s = qat_child_slot(m, name);
    return s ? s->m : NULL;
}

/* The slot of m's own parameter `name`, or NULL. */
static inline nn_named_tensor *qat_param_slot(nn_module *m, const char *name)
{
    for (int32_t i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0)
            return &m->params[i];
    return NULL;
}

/* Exchanges the parameters registered as `name` in a and b (both must have it) and
 * the struct fields that point at them. Cannot fail: how from_float moves tensors
 * only once everything else is built. */
static inline void qat_swap_param(nn_module *a, ag_tensor **a_field, nn_module *b,
                                  ag_tensor **b_field, const char *name)
{
    nn_named_tensor *sa = qat_param_slot(a, name), *sb = qat_param_slot(b, name);
    ag_tensor *t = sa->t;
    sa->t = sb->t;
    sb->t = t;
    *a_field = sa->t;
    *b_field = sb->t;
}

/* Exchanges the children slots sa and sb between two modules. */
static inline void qat_swap_child(nn_named_module *sa, nn_named_module *sb)
{
    nn_module *t = sa->m;
    sa->m = sb->m;
    sb->m = t;
}

/* Sets m's activation_post_process (its output hook) to obs, replacing an existing one
 * in its place among the children (as PyTorch's add_module / setattr) or appending it.
 * Takes ownership of obs (freed on failure). nn/ has no such helper: the post pointer
 * and the child must be kept in step here. */
static inline ag_status qat_set_post(nn_module *m, nn_module *obs)
{
    if (!obs)
        return qat_failed_status();
    nn_named_module *slot = qat_child_slot(m, "activation_post_process");
    if (slot) {
        obs->training = slot->m->training;
        nn_module_free(slot->m);
        slot->m = obs;
        m->post = obs;
        return AG_OK;
    }
    ag_status st = nn_module_add_child(m, "activation_post_process", obs);
    if (st == AG_OK)
        m->post = obs;
    return st;
}

/* weight_fake_quant(w) of a QAT module: its child run through nn_forward (a FakeQuantize,
 * or an observer under a PTQ qconfig). NULL with AG_ERR_STATE if the child is gone. */
static inline ag_tensor *qat_weight_post(nn_module *m, ag_ctx *ctx, ag_tensor *w)
{
    nn_module *fq = qat_child(m, "weight_fake_quant");
    if (!fq) {
        ag_error(AG_ERR_STATE, "%s: has no weight_fake_quant child", nn_module_type(m));
        return NULL;
    }
    return nn_forward(fq, ctx, w);
}

/* qconfig.weight() for a layer of `out_channels` outputs: a learnable per-channel fake
 * quant needs its channel count up front (PyTorch's channel_len); when the qconfig
 * leaves it 0, the layer's is used. */
static inline nn_module *qat_new_weight_post(const qat_qconfig *qc, int32_t out_channels)
{
    if (!qc || !qc->is_qat || qc->weight.kind != QAT_FQ_LEARNABLE)
        return qat_qconfig_new_weight(qc);
    qat_fq_cfg c = qc->weight;
    const bool per_channel =
        c.obs.qscheme == QAT_PER_CHANNEL_AFFINE || c.obs.qscheme == QAT_PER_CHANNEL_SYMMETRIC;
    if (per_channel && c.channel_len == 0)
        c.channel_len = out_channels;
    return qat_fake_quant_new(&c);
}

/* Internal constructors (one file each). from_float: see qat_module_from_float; `relu`
 * picks the ReLU variant. */
nn_module *qat_conv2d_from_float(nn_conv2d *conv, const qat_qconfig *qc, bool relu);
nn_module *qat_linear_from_float(nn_linear *lin, const qat_qconfig *qc, bool relu);
/* conv_bn: the nni.ConvBn2d / nni.ConvBnReLU2d container (children "0" conv, "1" bn). */
nn_module *qat_conv_bn2d_from_float(nn_module *conv_bn, const qat_qconfig *qc, bool relu);
nn_module *qat_linear_bn1d_from_float(nn_module *linear_bn, const qat_qconfig *qc);

/* An nni.* container of `type` with n named, empty child slots ("0".."n-1", modules
 * NULL) for fusion to fill once nothing can fail any more. NULL on OOM. */
nn_module *qat_intrinsic_reserve(const char *type, int32_t n);

bool qat_is_conv_bn(const nn_module *m); /* nniqat.ConvBn2d, nniqat.ConvBnReLU2d */
bool qat_is_linear_bn(const nn_module *m);

/* sqrt(running_var + eps) as torch.sqrt(bn.running_var + bn.eps) in float32, into an
 * arena tensor (C): the running std of the approximate ConvBn forward. */
ag_tensor *qat_running_std(ag_ctx *ctx, const nn_batch_norm *bn);

/* bn_tail.c: bn(conv / (bn.weight / running_std) + bias), relu'd if asked, as one op
 * (the approximate ConvBn forward after its conv). qat_bn_tail_applies says whether it
 * may replace the op chain: 4-D input, an affine BN with running stats and no hook, a
 * gradient being recorded. With range non-NULL, range[0..1] receive the output's min
 * and max (both NaN if it holds a NaN), taken while writing it: what qat_aminmax of the
 * output gives, up to the sign of a zero. */
bool qat_bn_tail_applies(ag_ctx *ctx, const ag_tensor *conv, const nn_batch_norm *bn);
ag_tensor *qat_bn_tail(ag_ctx *ctx, ag_tensor *conv, ag_tensor *bias, nn_batch_norm *bn,
                       bool relu, float range[2]);

#endif
