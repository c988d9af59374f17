/* qconfig.c — PyTorch 1.13's named qconfigs, the qconfig map and propagate_qconfig_.
 *
 * Every constructor below spells out one with_args() of torch/ao/quantization: where
 * PyTorch passes quant_min/quant_max (FakeQuantize forwards them to its observer) the
 * observer gets a custom range, even when it equals the dtype's default, because a
 * custom range changes the symmetric quint8 zero point ((qmin+qmax)//2 instead of 128)
 * and combines with reduce_range by halving ((0, 255) -> (0, 127)). */
#include "qat/qconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const qat_qconfig qat_qconfig_none = {.is_qat = false};

/* ---- observers (observer.py) --------------------------------------------------- */

static qat_observer_cfg obs_custom(qat_observer_cfg c, int32_t qmin, int32_t qmax)
{
    c.has_custom_range = true;
    c.quant_min = qmin;
    c.quant_max = qmax;
    return c;
}

static qat_observer_cfg obs_typed(qat_observer_kind kind, qat_dtype dtype, qat_qscheme qs)
{
    qat_observer_cfg c = qat_observer_cfg_default(kind);
    c.dtype = dtype;
    c.qscheme = qs;
    return c;
}

/* default_observer = MinMaxObserver.with_args(quant_min=0, quant_max=127) */
static qat_observer_cfg default_observer(void)
{
    return obs_custom(obs_typed(QAT_OBS_MINMAX, QAT_QUINT8, QAT_PER_TENSOR_AFFINE), 0, 127);
}

/* default_weight_observer = MinMaxObserver(qint8, per_tensor_symmetric) */
static qat_observer_cfg default_weight_observer(void)
{
    return obs_typed(QAT_OBS_MINMAX, QAT_QINT8, QAT_PER_TENSOR_SYMMETRIC);
}

/* default_per_channel_weight_observer = PerChannelMinMaxObserver(qint8, per_channel_symmetric)
 */
static qat_observer_cfg default_per_channel_weight_observer(void)
{
    return obs_typed(QAT_OBS_PER_CHANNEL_MINMAX, QAT_QINT8, QAT_PER_CHANNEL_SYMMETRIC);
}

/* HistogramObserver.with_args(reduce_range=...) (quint8, per_tensor_affine) */
static qat_observer_cfg histogram_observer(bool reduce_range)
{
    qat_observer_cfg c = obs_typed(QAT_OBS_HISTOGRAM, QAT_QUINT8, QAT_PER_TENSOR_AFFINE);
    c.reduce_range = reduce_range;
    return c;
}

/* default_dynamic_quant_observer = PlaceholderObserver(dtype=quint8, compute_dtype=quint8) */
static qat_observer_cfg default_dynamic_quant_observer(void)
{
    qat_observer_cfg c = obs_typed(QAT_OBS_PLACEHOLDER, QAT_QUINT8, QAT_PER_TENSOR_AFFINE);
    c.is_dynamic = true;
    return c;
}

/* (per_channel_)weight_observer_range_neg_127_to_127: qint8 symmetric [-127, 127], eps 2^-12 */
static qat_observer_cfg weight_observer_neg_127_to_127(bool per_channel)
{
    qat_observer_cfg c =
        per_channel ? default_per_channel_weight_observer() : default_weight_observer();
    c = obs_custom(c, -127, 127);
    c.eps = 0x1p-12f;
    return c;
}

/* HistogramObserver(dtype=qint8, reduce_range=False, eps=2^-12): qnnpack's symmetric
 * qconfigs' activations. */
static qat_observer_cfg histogram_qint8_observer(void)
{
    qat_observer_cfg c = obs_typed(QAT_OBS_HISTOGRAM, QAT_QINT8, QAT_PER_TENSOR_AFFINE);
    c.eps = 0x1p-12f;
    return c;
}

/* ---- fake quants (fake_quantize.py) ------------------------------------------------ */

static qat_fq_cfg fq(qat_fq_kind kind, qat_observer_cfg obs)
{
    return (qat_fq_cfg){.kind = kind, .obs = obs};
}

/* FakeQuantize / FusedMovingAvgObsFakeQuantize .with_args(observer=MovingAverageMinMax,
 * quant_min=0, quant_max=255, reduce_range=rr): activations, quint8 affine. */
static qat_fq_cfg act_fake_quant(qat_fq_kind kind, bool reduce_range)
{
    qat_observer_cfg c =
        obs_typed(QAT_OBS_MOVING_AVG_MINMAX, QAT_QUINT8, QAT_PER_TENSOR_AFFINE);
    c = obs_custom(c, 0, 255);
    c.reduce_range = reduce_range;
    return fq(kind, c);
}

/* default_weight_fake_quant / default_fused_wt_fake_quant: MovingAverageMinMax, qint8
 * -128..127, per_tensor_symmetric. */
static qat_fq_cfg weight_fake_quant(qat_fq_kind kind)
{
    qat_observer_cfg c =
        obs_typed(QAT_OBS_MOVING_AVG_MINMAX, QAT_QINT8, QAT_PER_TENSOR_SYMMETRIC);
    return fq(kind, obs_custom(c, -128, 127));
}

/* default_per_channel_weight_fake_quant / default_fused_per_channel_wt_fake_quant:
 * MovingAveragePerChannelMinMax, qint8 -128..127, per_channel_symmetric, ch_axis 0. */
static qat_fq_cfg per_channel_weight_fake_quant(qat_fq_kind kind)
{
    qat_observer_cfg c =
        obs_typed(QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX, QAT_QINT8, QAT_PER_CHANNEL_SYMMETRIC);
    return fq(kind, obs_custom(c, -128, 127));
}

/* (per_channel_)fused_wt_fake_quant_range_neg_127_to_127 */
static qat_fq_cfg fused_weight_neg_127_to_127(bool per_channel)
{
    qat_fq_cfg f = per_channel ? per_channel_weight_fake_quant(QAT_FQ_FUSED)
                               : weight_fake_quant(QAT_FQ_FUSED);
    f.obs = obs_custom(f.obs, -127, 127);
    f.obs.eps = 0x1p-12f;
    return f;
}

/* ---- the named qconfigs (qconfig.py) -------------------------------------------- */

static qat_qconfig ptq(qat_observer_cfg act, qat_observer_cfg weight)
{
    return (qat_qconfig){.activation = fq(QAT_FQ_STANDARD, act),
                         .weight = fq(QAT_FQ_STANDARD, weight),
                         .is_qat = false};
}

static qat_qconfig qat(qat_fq_cfg act, qat_fq_cfg weight)
{
    return (qat_qconfig){.activation = act, .weight = weight, .is_qat = true};
}

qat_qconfig qat_default_qconfig(void)
{
    return ptq(default_observer(), default_weight_observer());
}

qat_qconfig qat_default_per_channel_qconfig(void)
{
    return ptq(default_observer(), default_per_channel_weight_observer());
}

/* default_fake_quant: FakeQuantize(MovingAverageMinMax, 0..255, quint8 affine,
 * reduce_range=True) -> 0..127. */
qat_qconfig qat_default_qat_qconfig(void)
{
    return qat(act_fake_quant(QAT_FQ_STANDARD, true), weight_fake_quant(QAT_FQ_STANDARD));
}

/* default_fused_act_fake_quant: Fused(MovingAverageMinMax, 0..255, quint8), no reduce. */
qat_qconfig qat_default_qat_qconfig_v2(void)
{
    return qat(act_fake_quant(QAT_FQ_FUSED, false), weight_fake_quant(QAT_FQ_FUSED));
}

qat_qconfig qat_default_dynamic_qconfig(void)
{
    return ptq(default_dynamic_quant_observer(), default_weight_observer());
}

qat_qconfig qat_per_channel_dynamic_qconfig(void)
{
    return ptq(default_dynamic_quant_observer(), default_per_channel_weight_observer());
}

typedef enum backend { BK_FBGEMM, BK_X86, BK_QNNPACK, BK_ONEDNN, BK_UNKNOWN } backend;

static backend backend_of(const char *name)
{
    static const char *const names[] = {"fbgemm", "x86", "qnnpack", "onednn"};
    for (int i = 0; name && i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return (backend)i;
    return BK_UNKNOWN;
}

ag_status qat_get_default_qconfig(const char *backend_name, qat_qconfig *out)
{
    switch (backend_of(backend_name)) {
    case BK_FBGEMM:
    case BK_X86:
        *out = ptq(histogram_observer(true), default_per_channel_weight_observer());
        return AG_OK;
    case BK_QNNPACK:
        *out = ptq(histogram_observer(false), default_weight_observer());
        return AG_OK;
    case BK_ONEDNN:
        *out = ptq(histogram_observer(false), default_per_channel_weight_observer());
        return AG_OK;
    default:
        return ag_error(
            AG_ERR_ARG,
            "get_default_qconfig: unknown backend '%s' (fbgemm, x86, qnnpack, onednn)",
            backend_name ? backend_name : "(null)");
    }
}

ag_status qat_get_default_qat_qconfig(const char *backend_name, int version, qat_qconfig *out)
{
    if (version != 0 && version != 1)
        return ag_error(AG_ERR_ARG,
                        "get_default_qat_qconfig: version %d is not supported, must be 0 or 1",
                        version);
    const qat_fq_kind kind = version == 1 ? QAT_FQ_FUSED : QAT_FQ_STANDARD;
    switch (backend_of(backend_name)) {
    case BK_FBGEMM:
    case BK_X86:
        *out = qat(act_fake_quant(kind, true), per_channel_weight_fake_quant(kind));
        return AG_OK;
    case BK_QNNPACK:
        *out = qat(act_fake_quant(kind, false), weight_fake_quant(kind));
        return AG_OK;
    case BK_ONEDNN:
        *out = qat(act_fake_quant(kind, false), per_channel_weight_fake_quant(kind));
        return AG_OK;
    default:
        return ag_error(AG_ERR_ARG,
                        "get_default_qat_qconfig: unknown backend '%s' (fbgemm, x86, qnnpack, "
                        "onednn)",
                        backend_name ? backend_name : "(null)");
    }
}

/* default_(per_channel_)symmetric_qnnpack_qconfig */
static qat_qconfig symmetric_qnnpack(bool per_channel)
{
    return ptq(histogram_qint8_observer(), weight_observer_neg_127_to_127(per_channel));
}

/* default_(per_channel_)symmetric_qnnpack_qat_qconfig: Fused(MovingAverageMinMax,
 * qint8 -128..127, eps 2^-12) activations. */
static qat_qconfig symmetric_qnnpack_qat(bool per_channel)
{
    qat_observer_cfg c = obs_typed(QAT_OBS_MOVING_AVG_MINMAX, QAT_QINT8, QAT_PER_TENSOR_AFFINE);
    c = obs_custom(c, -128, 127);
    c.eps = 0x1p-12f;
    return qat(fq(QAT_FQ_FUSED, c), fused_weight_neg_127_to_127(per_channel));
}

static const char *const qconfig_names[] = {
    "default",
    "default-per-channel",
    "default-qat",
    "default-qat-v2",
    "default-dynamic",
    "per-channel-dynamic",
    "fbgemm",
    "x86",
    "qnnpack",
    "onednn",
    "fbgemm-qat",
    "x86-qat",
    "qnnpack-qat",
    "onednn-qat",
    "fbgemm-qat-v0",
    "x86-qat-v0",
    "qnnpack-qat-v0",
    "onednn-qat-v0",
    "qnnpack-symmetric",
    "qnnpack-per-channel-symmetric",
    "qnnpack-symmetric-qat",
    "qnnpack-per-channel-symmetric-qat",
    NULL,
};

const char *const *qat_qconfig_names(void)
{
    return qconfig_names;
}

/* "fbgemm-qat-v0" -> backend "fbgemm", version 0; false if name is not "<backend>-qat..." */
static bool parse_backend_qat(const char *name, char *backend_buf, size_t size, int *version)
{
    const char *dash = strstr(name, "-qat");
    if (!dash || (size_t)(dash - name) >= size)
        return false;
    const char *rest = dash + 4;
    if (*rest == '\0')
        *version = 1;
    else if (strcmp(rest, "-v0") == 0)
        *version = 0;
    else
        return false;
    memcpy(backend_buf, name, (size_t)(dash - name));
    backend_buf[dash - name] = '\0';
    return backend_of(backend_buf) != BK_UNKNOWN;
}

static ag_status unknown_name(const char *name)
{
    char list[768] = "";
    size_t len = 0;
    for (int i = 0; qconfig_names[i]; i++) {
        int n =
            snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", qconfig_names[i]);
        if (n < 0 || (size_t)n >= sizeof list - len)
            break;
        len += (size_t)n;
    }
    return ag_error(AG_ERR_ARG, "qconfig: unknown name '%s' (known: %s)",
                    name ? name : "(null)", list);
}

ag_status qat_qconfig_by_name(const char *name, qat_qconfig *out)
{
    if (!name)
        return unknown_name(name);
    static const struct {
        const char *name;
        qat_qconfig (*make)(void);
    } fixed[] = {
        {"default", qat_default_qconfig},
        {"default-per-channel", qat_default_per_channel_qconfig},
        {"default-qat", qat_default_qat_qconfig},
        {"default-qat-v2", qat_default_qat_qconfig_v2},
        {"default-dynamic", qat_default_dynamic_qconfig},
        {"per-channel-dynamic", qat_per_channel_dynamic_qconfig},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(name, fixed[i].name) == 0) {
            *out = fixed[i].make();
            return AG_OK;
        }
    if (strcmp(name, "qnnpack-symmetric") == 0 ||
        strcmp(name, "qnnpack-per-channel-symmetric") == 0) {
        *out = symmetric_qnnpack(strstr(name, "per-channel") != NULL);
        return AG_OK;
    }
    if (strcmp(name, "qnnpack-symmetric-qat") == 0 ||
        strcmp(name, "qnnpack-per-channel-symmetric-qat") == 0) {
        *out = symmetric_qnnpack_qat(strstr(name, "per-channel") != NULL);
        return AG_OK;
    }
    if (backend_of(name) != BK_UNKNOWN)
        return qat_get_default_qconfig(name, out);
    char backend_buf[16];
    int version = 1;
    if (parse_backend_qat(name, backend_buf, sizeof backend_buf, &version))
        return qat_get_default_qat_qconfig(backend_buf, version, out);
    return unknown_name(name);
}

/* ---- equality ------------------------------------------------------------------------ */

static bool obs_equal(const qat_observer_cfg *a, const qat_observer_cfg *b)
{
    return a->kind == b->kind && a->dtype == b->dtype && a->qscheme == b->qscheme &&
           a->reduce_range == b->reduce_range && a->has_custom_range == b->has_custom_range &&
           (!a->has_custom_range ||
            (a->quant_min == b->quant_min && a->quant_max == b->quant_max)) &&
           a->eps == b->eps && a->averaging_constant == b->averaging_constant &&
           a->ch_axis == b->ch_axis && a->bins == b->bins && a->is_dynamic == b->is_dynamic &&
           a->fixed_scale == b->fixed_scale && a->fixed_zero_point == b->fixed_zero_point;
}

static bool fq_equal(const qat_fq_cfg *a, const qat_fq_cfg *b, bool is_qat)
{
    if (!is_qat) // PTQ: only the observers count
        return obs_equal(&a->obs, &b->obs);
    return a->kind == b->kind && obs_equal(&a->obs, &b->obs) &&
           a->use_grad_scaling == b->use_grad_scaling && a->channel_len == b->channel_len;
}

bool qat_qconfig_equal(const qat_qconfig *a, const qat_qconfig *b)
{
    const bool a_none = !a || a == &qat_qconfig_none, b_none = !b || b == &qat_qconfig_none;
    if (a_none || b_none)
        return a_none == b_none;
    return a->is_qat == b->is_qat && fq_equal(&a->activation, &b->activation, a->is_qat) &&
           fq_equal(&a->weight, &b->weight, a->is_qat);
}

/* ---- modifiers ---------------------------------------------------------------------- */

/* [qmin, qmax] of a b-bit integer of the observer's signedness. */
static void set_obs_bits(qat_observer_cfg *c, int bits)
{
    const int32_t levels = (int32_t)1 << bits;
    const bool is_signed = c->dtype == QAT_QINT8 || c->dtype == QAT_QINT32;
    *c = obs_custom(*c, is_signed ? -levels / 2 : 0, is_signed ? levels / 2 - 1 : levels - 1);
    c->reduce_range = false;
}

ag_status qat_qconfig_set_bits(qat_qconfig *qc, int activation_bits, int weight_bits)
{
    const int bits[2] = {activation_bits, weight_bits};
    for (int i = 0; i < 2; i++)
        if (bits[i] != 0 && (bits[i] < 2 || bits[i] > 8))
            return ag_error(AG_ERR_ARG,
                            "qconfig_set_bits: %s bits must be in 2..8 (or 0 to keep), got %d",
                            i ? "weight" : "activation", bits[i]);
    if (activation_bits)
        set_obs_bits(&qc->activation.obs, activation_bits);
    if (weight_bits)
        set_obs_bits(&qc->weight.obs, weight_bits);
    return AG_OK;
}

ag_status qat_qconfig_set_learnable(qat_qconfig *qc, bool activation, bool weight,
                                    bool use_grad_scaling)
{
    if (!qc->is_qat && (activation || weight))
        return ag_error(AG_ERR_ARG, "qconfig_set_learnable: a PTQ qconfig has observers, not "
                                    "fake quants; start from a QAT qconfig");
    if (activation) {
        qc->activation.kind = QAT_FQ_LEARNABLE;
        qc->activation.use_grad_scaling = use_grad_scaling;
    }
    if (weight) {
        qc->weight.kind = QAT_FQ_LEARNABLE;
        qc->weight.use_grad_scaling = use_grad_scaling;
    }
    return AG_OK;
}

/* ---- building the post-processes -------------------------------------------------- */

static nn_module *new_post_process(const qat_qconfig *qc, const qat_fq_cfg *c)
{
    if (!qc || qc == &qat_qconfig_none) {
        ag_error(AG_ERR_ARG, "qconfig: no qconfig (None) to build an observer from");
        return NULL;
    }
    return qc->is_qat ? qat_fake_quant_new(c) : qat_observer_new(&c->obs);
}

nn_module *qat_qconfig_new_activation(const qat_qconfig *qc)
{
    return new_post_process(qc, qc ? &qc->activation : NULL);
}

nn_module *qat_qconfig_new_weight(const qat_qconfig *qc)
{
    return new_post_process(qc, qc ? &qc->weight : NULL);
}

/* ---- qconfig on modules ------------------------------------------------------------ */

void qat_module_set_qconfig(nn_module *m, const qat_qconfig *qc)
{
    m->qconfig = qc ? qc : &qat_qconfig_none;
}

const qat_qconfig *qat_module_qconfig(const nn_module *m)
{
    const qat_qconfig *qc = m->qconfig;
    return qc == &qat_qconfig_none ? NULL : qc;
}

static bool clear_one(void *ud, const char *path, nn_module *m)
{
    (void)ud;
    (void)path;
    m->qconfig = NULL;
    return true;
}

void qat_qconfig_clear(nn_module *root)
{
    nn_module_walk(root, clear_one, NULL);
}

/* ---- the map ------------------------------------------------------------------------- */

typedef struct map_entry {
    char *key;
    qat_qconfig *qc; /* heap copy; NULL = None */
} map_entry;

typedef struct entry_list {
    map_entry *items;
    int32_t n, cap;
} entry_list;

struct qat_qconfig_map {
    entry_list by_type, by_name;
};

static void entries_free(entry_list *l)
{
    for (int32_t i = 0; i < l->n; i++) {
        free(l->items[i].key);
        free(l->items[i].qc);
    }
    free(l->items);
}

static const map_entry *entry_find(const entry_list *l, const char *key)
{
    for (int32_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i].key, key) == 0)
            return &l->items[i];
    return NULL;
}

/* The qconfig an entry stands for: None as &qat_qconfig_none. */
static const qat_qconfig *entry_qconfig(const map_entry *e)
{
    return e->qc ? e->qc : &qat_qconfig_none;
}

static ag_status entry_set(entry_list *l, const char *what, const char *key,
                           const qat_qconfig *qc)
{
    if (!key)
        return ag_error(AG_ERR_ARG, "qconfig_map_set_%s: NULL key", what);
    qat_qconfig *copy = NULL;
    if (qc) {
        copy = malloc(sizeof *copy);
        if (!copy)
            return ag_error(AG_ERR_NOMEM, "qconfig_map: out of memory");
        *copy = *qc;
    }
    for (int32_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i].key, key) == 0) {
            free(l->items[i].qc);
            l->items[i].qc = copy;
            return AG_OK;
        }
    char *k = malloc(strlen(key) + 1);
    if (l->n == l->cap) {
        int32_t ncap = l->cap ? 2 * l->cap : 8;
        map_entry *p = realloc(l->items, (size_t)ncap * sizeof *p);
        if (p) {
            l->items = p;
            l->cap = ncap;
        }
    }
    if (!k || l->n == l->cap) {
        free(k);
        free(copy);
        return ag_error(AG_ERR_NOMEM, "qconfig_map: out of memory");
    }
    strcpy(k, key);
    l->items[l->n++] = (map_entry){k, copy};
    return AG_OK;
}

qat_qconfig_map *qat_qconfig_map_new(const qat_qconfig *global)
{
    qat_qconfig_map *map = calloc(1, sizeof *map);
    if (!map) {
        ag_error(AG_ERR_NOMEM, "qconfig_map: out of memory");
        return NULL;
    }
    if (qat_qconfig_map_set_name(map, "", global) != AG_OK) {
        qat_qconfig_map_free(map);
        return NULL;
    }
    return map;
}

void qat_qconfig_map_free(qat_qconfig_map *map)
{
    if (!map)
        return;
    entries_free(&map->by_type);
    entries_free(&map->by_name);
    free(map);
}

ag_status qat_qconfig_map_set_type(qat_qconfig_map *map, const char *type,
                                   const qat_qconfig *qc)
{
    return entry_set(&map->by_type, "type", type, qc);
}

ag_status qat_qconfig_map_set_name(qat_qconfig_map *map, const char *path,
                                   const qat_qconfig *qc)
{
    return entry_set(&map->by_name, "name", path, qc);
}

/* ---- propagation ------------------------------------------------------------------- */

enum { PATH_MAX_LEN = 1024 };

/* _propagate_qconfig_helper: module_qconfig = dict.get(type, parent); then
 * dict.get(prefix, that); then getattr(module, 'qconfig', that). */
static ag_status propagate(nn_module *m, const qat_qconfig_map *map, const void *parent,
                           char *path, size_t len)
{
    const void *qc = parent;
    if (map) {
        const map_entry *e = entry_find(&map->by_type, nn_module_type(m));
        if (e)
            qc = entry_qconfig(e);
        e = entry_find(&map->by_name, path);
        if (e)
            qc = entry_qconfig(e);
    }
    if (m->qconfig)
        qc = m->qconfig;
    /* Stored even when None, as PyTorch sets the attribute: a later propagation then
     * sees it as the module's own and keeps it. */
    m->qconfig = qc ? qc : &qat_qconfig_none;
    for (int32_t i = 0; i < m->n_children; i++) {
        const char *name = m->children[i].name;
        int n = snprintf(path + len, PATH_MAX_LEN - len, len ? ".%s" : "%s", name);
        if (n < 0 || (size_t)n >= PATH_MAX_LEN - len)
            return ag_error(AG_ERR_ARG, "propagate_qconfig: module path '%s.%s' is too long",
                            path, name);
        ag_status st = propagate(m->children[i].m, map, qc, path, len + (size_t)n);
        path[len] = '\0';
        if (st != AG_OK)
            return st;
    }
    return AG_OK;
}

ag_status qat_propagate_qconfig(nn_module *root, const qat_qconfig_map *map)
{
    if (!root)
        return ag_error(AG_ERR_ARG, "propagate_qconfig: NULL module");
    char path[PATH_MAX_LEN] = "";
    return propagate(root, map, NULL, path, 0);
}
