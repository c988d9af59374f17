/* qat_model.c — QAT models as `cqat qat` builds them; see qat_model.h. */
#include "tools/qat_model.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/state_h5.h"
#include "tools/checkpoint.h"

static const struct {
    const char *alias, *name;
} QCONFIG_ALIASES[] = {
    {"fbgemm", "fbgemm-qat"},   {"x86", "x86-qat"},           {"qnnpack", "qnnpack-qat"},
    {"onednn", "onednn-qat"},   {"per-channel", "fbgemm-qat"}, {"per-tensor", "default-qat"},
};

ag_status cqat_qat_resolve_qconfig(const char *name, char *out, size_t size)
{
    for (size_t i = 0; i < sizeof QCONFIG_ALIASES / sizeof QCONFIG_ALIASES[0]; i++)
        if (strcmp(name, QCONFIG_ALIASES[i].alias) == 0)
            name = QCONFIG_ALIASES[i].name;
    qat_qconfig qc;
    ag_status st = qat_qconfig_by_name(name, &qc);
    if (st != AG_OK)
        return st;
    if (!qc.is_qat)
        return ag_error(AG_ERR_ARG, "qconfig '%s' is for post-training quantization; QAT "
                                    "needs a fake-quant qconfig such as fbgemm-qat", name);
    snprintf(out, size, "%s", name);
    return AG_OK;
}

void cqat_qat_spec_format(const cqat_qat_spec *s, char *buf, size_t size)
{
    snprintf(buf, size,
             "qconfig=%s;bits_weight=%d;bits_activation=%d;learnable=%d;freeze_bn_after=%" PRId64
             ";freeze_observers_after=%" PRId64,
             s->qconfig, (int)s->bits_weight, (int)s->bits_activation, (int)s->learnable,
             s->freeze_bn_after, s->freeze_observers_after);
}

ag_status cqat_qat_spec_parse(const char *text, cqat_qat_spec *s)
{
    int bw = 0, ba = 0, learn = 0;
    long long fbn = 0, fobs = 0;
    char q[48] = "";
    if (sscanf(text,
               "qconfig=%47[^;];bits_weight=%d;bits_activation=%d;learnable=%d;"
               "freeze_bn_after=%lld;freeze_observers_after=%lld",
               q, &bw, &ba, &learn, &fbn, &fobs) != 6)
        return ag_error(AG_ERR_FORMAT, "QAT settings '%s' are malformed", text);
    memset(s, 0, sizeof *s);
    ag_status st = cqat_qat_resolve_qconfig(q, s->qconfig, sizeof s->qconfig);
    if (st == AG_OK && (bw < 2 || bw > 8 || ba < 2 || ba > 8))
        st = ag_error(AG_ERR_FORMAT, "QAT settings '%s': bits out of range", text);
    s->bits_weight = bw;
    s->bits_activation = ba;
    s->learnable = learn != 0;
    s->freeze_bn_after = fbn;
    s->freeze_observers_after = fobs;
    return st;
}

/* A dataset's class and element count, or false if absent. */
static bool dataset_probe(hid_t f, const char *name, H5T_class_t *cls, size_t *size,
                          int64_t *numel)
{
    if (!nn_h5_has_object(f, name))
        return false;
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0)
        return false;
    hid_t t = H5Dget_type(ds), sp = H5Dget_space(ds);
    *cls = H5Tget_class(t);
    *size = H5Tget_size(t);
    *numel = (int64_t)H5Sget_simple_extent_npoints(sp);
    H5Tclose(t);
    H5Sclose(sp);
    H5Dclose(ds);
    return true;
}

typedef struct fq_probe {
    char key[256]; /* "<path>.weight_fake_quant" of the first weight fake quant */
} fq_probe;

static herr_t find_weight_fq(hid_t g, const char *name, const H5L_info_t *info, void *ud)
{
    (void)g;
    (void)info;
    fq_probe *p = ud;
    const char *hit = strstr(name, ".weight_fake_quant.scale");
    if (hit && !p->key[0]) {
        snprintf(p->key, sizeof p->key, "%.*s.weight_fake_quant", (int)(hit - name), name);
        return 1;
    }
    return 0;
}

ag_status cqat_qat_spec_from_state(const char *path, cqat_qat_spec *s)
{
    hid_t f = nn_h5_open_read(path);
    if (f < 0)
        return ag_last_status();
    fq_probe p = {""};
    H5Literate(f, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, find_weight_fq, &p);
    ag_status st = AG_OK;
    H5T_class_t cls;
    size_t size = 0;
    int64_t n_scale = 0, n_flag = 0;
    char name[300];
    if (!p.key[0]) {
        st = ag_error(AG_ERR_FORMAT, "%s: no '*.weight_fake_quant.scale' dataset: not a "
                                     "QAT-prepared state_dict", path);
    } else {
        snprintf(name, sizeof name, "%s.scale", p.key);
        dataset_probe(f, name, &cls, &size, &n_scale);
        snprintf(name, sizeof name, "%s.fake_quant_enabled", p.key);
        if (!dataset_probe(f, name, &cls, &size, &n_flag))
            st = ag_error(AG_ERR_FORMAT, "%s: no '%s'", path, name);
    }
    H5Fclose(f);
    if (st != AG_OK)
        return st;
    bool fused = size == 8; /* FusedMovingAvgObsFakeQuantize keeps int64 flags */
    bool per_channel = n_scale > 1;
    memset(s, 0, sizeof *s);
    snprintf(s->qconfig, sizeof s->qconfig, "%s",
             fused ? (per_channel ? "fbgemm-qat" : "qnnpack-qat")
                   : (per_channel ? "fbgemm-qat-v0" : "default-qat"));
    s->bits_weight = s->bits_activation = 8;
    s->freeze_bn_after = s->freeze_observers_after = -1;
    return AG_OK;
}

/* Float weights from a cqat float checkpoint or a plain state_dict. */
static ag_status load_init(nn_module *m, const char *init)
{
    bool is_ckpt = false;
    ag_status st = cqat_ckpt_probe(init, &is_ckpt);
    if (st == AG_OK && is_ckpt) {
        cqat_ckpt_meta meta;
        st = cqat_ckpt_read_meta(init, &meta);
        if (st == AG_OK && strcmp(meta.kind, "float") != 0)
            return ag_error(AG_ERR_ARG, "%s is a %s checkpoint, not float weights (continue "
                                        "a QAT run with --resume)", init, meta.kind);
    }
    return st == AG_OK ? nn_state_load_file(init, m, NULL) : st;
}

ag_status cqat_qat_build(const nn_zoo_config *cfg, const cqat_qat_spec *spec, const char *init,
                         nn_module **model, qat_qconfig_map **map)
{
    *model = NULL;
    *map = NULL;
    ag_rng rng;
    ag_rng_seed(&rng, 0, 1);
    nn_module *m = nn_zoo_new(cfg, &rng);
    if (!m)
        return ag_last_status();
    const nn_fusion_group *groups = NULL;
    int32_t n_groups = 0;
    qat_qconfig qc;
    ag_status st = init ? load_init(m, init) : AG_OK;
    if (st == AG_OK)
        st = nn_zoo_fusion_groups(cfg->name, &groups, &n_groups);
    nn_module_train(m, true);
    if (st == AG_OK)
        st = qat_fuse_modules(m, groups, n_groups, true);
    if (st == AG_OK)
        st = qat_qconfig_by_name(spec->qconfig, &qc);
    if (st == AG_OK && (spec->bits_weight != 8 || spec->bits_activation != 8))
        st = qat_qconfig_set_bits(&qc, spec->bits_activation == 8 ? 0 : spec->bits_activation,
                                  spec->bits_weight == 8 ? 0 : spec->bits_weight);
    if (st == AG_OK && spec->learnable)
        st = qat_qconfig_set_learnable(&qc, true, true, true);
    qat_qconfig_map *mp = st == AG_OK ? qat_qconfig_map_new(&qc) : NULL;
    if (st == AG_OK && !mp)
        st = ag_last_status();
    if (st == AG_OK)
        st = qat_prepare_qat(m, mp);
    if (st != AG_OK) {
        nn_module_free(m);
        qat_qconfig_map_free(mp);
        return st;
    }
    *model = m;
    *map = mp;
    return AG_OK;
}

void cqat_qat_apply_schedule(nn_module *m, const cqat_qat_spec *spec, int64_t epoch)
{
    if (spec->freeze_bn_after >= 0 && epoch >= spec->freeze_bn_after)
        qat_freeze_bn_stats(m);
    else
        qat_update_bn_stats(m);
    bool observers_on = !(spec->freeze_observers_after >= 0 && epoch >= spec->freeze_observers_after);
    qat_enable_observer_all(m, observers_on);
}
