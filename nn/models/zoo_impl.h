/* zoo_impl.h — how a model file plugs into the zoo: one entry per model. Private. */
#ifndef CQAT_NN_ZOO_IMPL_H
#define CQAT_NN_ZOO_IMPL_H

#include "nn/layers/layer_impl.h"
#include "nn/zoo.h"

typedef struct nn_zoo_entry {
    const char *name;
    nn_zoo_config defaults;
    /* Builds the model; cfg is already checked for positive sizes. */
    nn_module *(*build)(const nn_zoo_config *cfg, ag_rng *rng);
    const nn_fusion_group *groups;
    int32_t n_groups;
} nn_zoo_entry;

extern const nn_zoo_entry nn_zoo_refcnn;
extern const nn_zoo_entry nn_zoo_lenet5;
extern const nn_zoo_entry nn_zoo_mobilenet_tiny;

/* The child at index i of a model whose children were added in enum order. */
static inline nn_module *nn_zoo_child(nn_module *m, int32_t i)
{
    return m->children[i].m;
}

static inline ag_tensor *nn_zoo_run(nn_module *m, int32_t i, ag_ctx *ctx, ag_tensor *x)
{
    return nn_forward(m->children[i].m, ctx, x);
}

#endif
