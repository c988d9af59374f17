/* layer_impl.h — private helpers for the layer and model files: allocate a module,
 * register parts in a chain that stops at the first failure. Not installed. */
#ifndef CQAT_NN_LAYER_IMPL_H
#define CQAT_NN_LAYER_IMPL_H

#include <stdlib.h>

#include "nn/layers.h"

/* A zeroed concrete module of `size` bytes with its base initialised; NULL and an
 * out-of-memory message naming the type on failure. */
static inline void *nn_layer_alloc(size_t size, const nn_module_vtbl *vt)
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
static inline ag_status nn_failed_status(void)
{
    ag_status st = ag_last_status();
    return st != AG_OK ? st : ag_error(AG_ERR_NOMEM, "module: constructor failed");
}

/* Registration in a chain: `st = nn_add_child(m, st, "conv1", nn_conv2d_new(...))`.
 * Once st is an error, later children are freed unregistered and st passes through;
 * a NULL child (its constructor failed) keeps the constructor's message. */
static inline ag_status nn_add_child(nn_module *m, ag_status st, const char *name,
                                     nn_module *child)
{
    if (st != AG_OK) {
        nn_module_free(child);
        return st;
    }
    if (!child)
        return nn_failed_status();
    return nn_module_add_child(m, name, child);
}

/* The same for a parameter or buffer `t` (NULL when its allocation failed): registered
 * under `name` and stored in *slot, the concrete struct's field. */
static inline ag_status nn_add_tensor(nn_module *m, ag_status st, bool param, const char *name,
                                      ag_tensor *t, ag_tensor **slot)
{
    if (st != AG_OK) {
        ag_tensor_free(t);
        return st;
    }
    if (!t)
        return nn_failed_status();
    *slot = t;
    return param ? nn_module_add_param(m, name, t) : nn_module_add_buffer(m, name, t);
}

/* Checks and completes pooling args for MaxPool2d / AvgPool2d (`who`): stride 0 becomes
 * the kernel (PyTorch's stride=None); padding at most half the kernel, as PyTorch. */
static inline ag_status nn_pool2d_args_resolve(const char *who, ag_pool2d_args *a)
{
    if (a->ceil_mode)
        return ag_error(AG_ERR_UNSUPPORTED, "%s: ceil_mode is not supported", who);
    for (int i = 0; i < 2; i++) {
        if (a->stride[i] == 0)
            a->stride[i] = a->kernel[i];
        if (a->kernel[i] <= 0 || a->stride[i] <= 0 || a->padding[i] < 0)
            return ag_error(AG_ERR_ARG,
                            "%s: kernel (%d, %d) and stride (%d, %d) must be positive, "
                            "padding (%d, %d) non-negative",
                            who, (int)a->kernel[0], (int)a->kernel[1], (int)a->stride[0],
                            (int)a->stride[1], (int)a->padding[0], (int)a->padding[1]);
        if (a->padding[i] > a->kernel[i] / 2)
            return ag_error(AG_ERR_ARG,
                            "%s: pad should be at most half of kernel size, but got pad=%d "
                            "and kernel_size=%d",
                            who, (int)a->padding[i], (int)a->kernel[i]);
    }
    return AG_OK;
}

/* Frees m and returns NULL when st is an error: the end of every constructor. */
static inline nn_module *nn_finish(nn_module *m, ag_status st)
{
    if (st == AG_OK)
        return m;
    nn_module_free(m);
    return NULL;
}

#endif
