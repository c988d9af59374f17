/* intrinsic.c — the float fused containers of torch.ao.nn.intrinsic (nni.ConvBn2d,
 * nni.ConvBnReLU2d, nni.ConvReLU2d, nni.LinearReLU, nni.LinearBn1d, nni.BNReLU2d).
 * Each is a Sequential of the original modules under "0", "1", "2" (PyTorch's
 * _FusedModule): its forward runs them in order, and prepare observes its output as a
 * whole. prepare_qat swaps the first five for their nniqat.* versions. */
#include "qat/modules/modules_impl.h"

#include <stdio.h>

static ag_tensor *intrinsic_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    for (int32_t i = 0; i < m->n_children; i++)
        if (strcmp(m->children[i].name, "activation_post_process") != 0)
            x = nn_forward(m->children[i].m, ctx, x);
    return x;
}

typedef struct intrinsic_kind {
    nn_module_vtbl vt;
    int32_t n;
    const char *parts[3]; /* member types, in order */
} intrinsic_kind;

static const intrinsic_kind kinds[] = {
    {{"nni.ConvBn2d", intrinsic_forward, NULL, NULL}, 2, {"Conv2d", "BatchNorm2d"}},
    {{"nni.ConvBnReLU2d", intrinsic_forward, NULL, NULL}, 3, {"Conv2d", "BatchNorm2d", "ReLU"}},
    {{"nni.ConvReLU2d", intrinsic_forward, NULL, NULL}, 2, {"Conv2d", "ReLU"}},
    {{"nni.LinearReLU", intrinsic_forward, NULL, NULL}, 2, {"Linear", "ReLU"}},
    {{"nni.LinearBn1d", intrinsic_forward, NULL, NULL}, 2, {"Linear", "BatchNorm1d"}},
    {{"nni.BNReLU2d", intrinsic_forward, NULL, NULL}, 2, {"BatchNorm2d", "ReLU"}},
};
enum { N_KINDS = (int)(sizeof kinds / sizeof kinds[0]) };

static const intrinsic_kind *kind_of(const char *type)
{
    for (int i = 0; type && i < N_KINDS; i++)
        if (strcmp(kinds[i].vt.type, type) == 0)
            return &kinds[i];
    return NULL;
}

static void free_all(nn_module *const *mods, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        nn_module_free(mods[i]);
}

/* "(Conv2d, MaxPool2d)" for messages. */
static const char *types_str(nn_module *const *mods, int32_t n, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int32_t i = 0; i < n && len < size; i++) {
        int k = snprintf(buf + len, size - len, "%s%s", i ? ", " : "(",
                         mods[i] ? nn_module_type(mods[i]) : "NULL");
        len += k > 0 ? (size_t)k : 0;
    }
    if (len < size)
        snprintf(buf + len, size - len, ")");
    return buf;
}

nn_module *qat_intrinsic_new(const char *type, nn_module *const *mods, int32_t n)
{
    const intrinsic_kind *k = kind_of(type);
    if (!k) {
        free_all(mods, n);
        ag_error(AG_ERR_ARG, "intrinsic: unknown fused type '%s'", type ? type : "(null)");
        return NULL;
    }
    bool fits = n == k->n;
    for (int32_t i = 0; fits && i < n; i++)
        fits = nn_module_is(mods[i], k->parts[i]);
    if (!fits) {
        char buf[128];
        ag_error(AG_ERR_ARG, "%s: cannot hold modules %s", type,
                 types_str(mods, n, buf, sizeof buf));
        free_all(mods, n);
        return NULL;
    }
    nn_module *m = qat_mod_alloc(sizeof(nn_module), &k->vt);
    if (!m) {
        free_all(mods, n);
        return NULL;
    }
    m->training = mods[0]->training; /* registration gives children the parent's mode */
    ag_status st = AG_OK;
    for (int32_t i = 0; i < n; i++) {
        char name[12];
        snprintf(name, sizeof name, "%d", (int)i);
        st = qat_add_child(m, st, name, mods[i]);
    }
    return qat_finish(m, st);
}

nn_module *qat_intrinsic_reserve(const char *type, int32_t n)
{
    const intrinsic_kind *k = kind_of(type);
    AG_ASSERT(k && k->n == n);
    nn_module *m = qat_mod_alloc(sizeof(nn_module), &k->vt);
    if (!m)
        return NULL;
    m->children = calloc((size_t)n, sizeof *m->children);
    if (!m->children) {
        nn_module_free(m);
        ag_error(AG_ERR_NOMEM, "%s: out of memory", type);
        return NULL;
    }
    m->cap_children = n;
    /* Slots with names and no modules yet: nn_module_free skips the NULLs. */
    for (m->n_children = 0; m->n_children < n; m->n_children++) {
        char *name = malloc(12);
        if (!name) {
            nn_module_free(m);
            ag_error(AG_ERR_NOMEM, "%s: out of memory", type);
            return NULL;
        }
        snprintf(name, 12, "%d", (int)m->n_children);
        m->children[m->n_children].name = name;
    }
    return m;
}

bool qat_is_fused(const nn_module *m)
{
    const char *t = nn_module_type(m);
    return strncmp(t, "nni.", 4) == 0 || strncmp(t, "nniqat.", 7) == 0;
}
