/* zoo.c — the model registry: names, default configurations, construction, fusion
 * groups. A model file defines an nn_zoo_entry; list it here. */
#include "nn/models/zoo_impl.h"

#include <string.h>

static const nn_zoo_entry *const entries[] = {
    &nn_zoo_refcnn,
    &nn_zoo_lenet5,
    &nn_zoo_mobilenet_tiny,
};
enum { N_ENTRIES = sizeof entries / sizeof entries[0] };

static const char *const names[N_ENTRIES + 1] = {"refcnn", "lenet5", "mobilenet-tiny", NULL};

const char *const *nn_zoo_names(void)
{
    return names;
}

/* The entry named `name` (at most `max` chars read), or NULL with a message that
 * lists the known names. */
static const nn_zoo_entry *zoo_find(const char *name, size_t max)
{
    for (int i = 0; i < N_ENTRIES; i++)
        if (name && strncmp(entries[i]->name, name, max) == 0 && strlen(entries[i]->name) < max)
            return entries[i];
    char known[128] = "";
    for (int i = 0; i < N_ENTRIES; i++) {
        strncat(known, i ? ", " : "", sizeof known - strlen(known) - 1);
        strncat(known, entries[i]->name, sizeof known - strlen(known) - 1);
    }
    ag_error(AG_ERR_ARG, "zoo: unknown model '%.*s' (known: %s)", (int)max,
             name ? name : "(null)", known);
    return NULL;
}

ag_status nn_zoo_config_default(const char *name, nn_zoo_config *out)
{
    const nn_zoo_entry *e = zoo_find(name, SIZE_MAX);
    if (!e)
        return AG_ERR_ARG;
    *out = e->defaults;
    return AG_OK;
}

nn_module *nn_zoo_new(const nn_zoo_config *cfg, ag_rng *rng)
{
    if (!cfg) {
        ag_error(AG_ERR_ARG, "zoo: config is NULL");
        return NULL;
    }
    const nn_zoo_entry *e = zoo_find(cfg->name, sizeof cfg->name);
    if (!e)
        return NULL;
    if (cfg->in_channels <= 0 || cfg->in_h <= 0 || cfg->in_w <= 0 || cfg->num_classes <= 0) {
        ag_error(AG_ERR_ARG,
                 "%s: in_channels %d, input %dx%d and num_classes %d must be positive", e->name,
                 (int)cfg->in_channels, (int)cfg->in_h, (int)cfg->in_w, (int)cfg->num_classes);
        return NULL;
    }
    ag_rng fallback;
    if (!rng) {
        ag_rng_seed(&fallback, 0, 0);
        rng = &fallback;
    }
    return e->build(cfg, rng);
}

ag_status nn_zoo_fusion_groups(const char *name, const nn_fusion_group **groups, int32_t *n)
{
    const nn_zoo_entry *e = zoo_find(name, SIZE_MAX);
    if (!e)
        return AG_ERR_ARG;
    *groups = e->groups;
    *n = e->n_groups;
    return AG_OK;
}
