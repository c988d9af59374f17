/* sequential.c — Sequential: children "0", "1", ... called in order. */
#include "nn/layers/layer_impl.h"

#include <stdio.h>
#include <string.h>

/* The hook child (qat/prepare's observer on the Sequential itself) is not a stage:
 * nn_forward applies it once to the final output. */
static bool is_stage(const nn_module *m, int32_t i)
{
    return m->children[i].m != m->post &&
           strcmp(m->children[i].name, "activation_post_process") != 0;
}

static ag_tensor *sequential_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    for (int32_t i = 0; i < m->n_children && x; i++)
        if (is_stage(m, i))
            x = nn_forward(m->children[i].m, ctx, x);
    return x;
}

static const nn_module_vtbl sequential_vtbl = {.type = "Sequential",
                                               .forward = sequential_forward};

nn_module *nn_sequential_new(void)
{
    return nn_layer_alloc(sizeof(nn_module), &sequential_vtbl);
}

ag_status nn_sequential_append(nn_module *seq, nn_module *child)
{
    if (!nn_module_is(seq, "Sequential")) {
        nn_module_free(child);
        return ag_error(AG_ERR_ARG, "nn_sequential_append: not a Sequential");
    }
    int32_t index = 0;
    for (int32_t i = 0; i < seq->n_children; i++)
        index += is_stage(seq, i);
    char name[16];
    snprintf(name, sizeof name, "%d", (int)index);
    return nn_add_child(seq, AG_OK, name, child);
}

nn_module *nn_sequential_from(nn_module *const *mods, int32_t n)
{
    nn_module *seq = nn_sequential_new();
    ag_status st = seq ? AG_OK : AG_ERR_NOMEM;
    for (int32_t i = 0; i < n; i++) {
        if (st != AG_OK)
            nn_module_free(mods[i]);
        else
            st = nn_sequential_append(seq, mods[i]);
    }
    return nn_finish(seq, st);
}
