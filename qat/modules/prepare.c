/* prepare.c — prepare and prepare_qat (torch/ao/quantization/quantize.py) with the QAT
 * module mapping and the observed-type list of quantization_mappings.py.
 *
 *   prepare_qat:  assert training; propagate_qconfig_; convert(mapping=QAT mapping)
 *                 (swap_module on every child with a qconfig, post-order, fused modules
 *                 swapped whole); prepare(observer_non_leaf_module_list=QAT types)
 *   prepare:      propagate_qconfig_; add_observer_
 *
 * add_observer_ walks the children of each module: Dropout is skipped; a
 * FloatFunctional's activation_post_process is replaced; a fused module (nni.*,
 * nniqat.*) is observed as a whole and not entered; Sigmoid / Tanh in training mode get
 * their fixed-qparams fake quant; QAT modules (prepare_qat) are observed as a whole;
 * anything else is entered. Then a module without children whose type is in the
 * propagation list (and is not a Sequential) is observed. Observing = adding the child
 * "activation_post_process" if the module's qconfig is not None and it is not a
 * DeQuantStub. An error (out of memory) can leave the tree part-way prepared. */
#include "qat/modules/modules_impl.h"

/* get_default_qconfig_propagation_list(): the keys of the static, QAT and dynamic
 * mappings plus Sequential, restricted to the types cqat has. */
static const char *const propagation_list[] = {
    "QuantStub",
    "DeQuantStub",
    "BatchNorm2d",
    "Dropout",
    "Conv2d",
    "Linear",
    "Hardswish",
    "LeakyReLU",
    "ReLU6",
    "FloatFunctional",
    "Sequential",
    "nni.BNReLU2d",
    "nni.ConvReLU2d",
    "nni.LinearReLU",
    "nni.ConvBn2d",
    "nni.ConvBnReLU2d",
    "nni.LinearBn1d",
    "nniqat.ConvBn2d",
    "nniqat.ConvBnReLU2d",
    "nniqat.ConvReLU2d",
    "nniqat.LinearReLU",
    "nniqat.LinearBn1d",
    "nnqat.Conv2d",
    "nnqat.Linear",
};

static bool in_propagation_list(const nn_module *m)
{
    for (size_t i = 0; i < sizeof propagation_list / sizeof propagation_list[0]; i++)
        if (nn_module_is(m, propagation_list[i]))
            return true;
    return false;
}

bool qat_is_qat_module(const nn_module *m)
{
    const char *t = nn_module_type(m);
    return strncmp(t, "nnqat.", 6) == 0 || strncmp(t, "nniqat.", 7) == 0;
}

nn_module *qat_module_weight_fake_quant(nn_module *m)
{
    return m && qat_is_qat_module(m) ? qat_child(m, "weight_fake_quant") : NULL;
}

/* ---- from_float through the QAT mapping (DEFAULT_QAT_MODULE_MAPPINGS) ------------- */

static bool in_qat_mapping(const nn_module *m)
{
    static const char *const keys[] = {"Conv2d",           "Linear",         "nni.ConvBn2d",
                                       "nni.ConvBnReLU2d", "nni.ConvReLU2d", "nni.LinearReLU",
                                       "nni.LinearBn1d"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (nn_module_is(m, keys[i]))
            return true;
    return false;
}

nn_module *qat_module_from_float(nn_module *m, const qat_qconfig *qc)
{
    if (!m || !in_qat_mapping(m)) {
        ag_error(AG_ERR_ARG,
                 "from_float: no QAT module for %s (Conv2d, Linear and the nni.* "
                 "containers but BNReLU2d have one)",
                 m ? nn_module_type(m) : "NULL");
        return NULL;
    }
    if (!qc || qc == &qat_qconfig_none) {
        ag_error(AG_ERR_ARG, "from_float: %s needs a valid qconfig, got None",
                 nn_module_type(m));
        return NULL;
    }
    if (nn_module_is(m, "Conv2d"))
        return qat_conv2d_from_float((nn_conv2d *)m, qc, false);
    if (nn_module_is(m, "Linear"))
        return qat_linear_from_float((nn_linear *)m, qc, false);
    if (nn_module_is(m, "nni.ConvReLU2d"))
        return qat_conv2d_from_float((nn_conv2d *)qat_child(m, "0"), qc, true);
    if (nn_module_is(m, "nni.LinearReLU"))
        return qat_linear_from_float((nn_linear *)qat_child(m, "0"), qc, true);
    if (nn_module_is(m, "nni.LinearBn1d"))
        return qat_linear_bn1d_from_float(m, qc);
    return qat_conv_bn2d_from_float(m, qc, nn_module_is(m, "nni.ConvBnReLU2d"));
}

/* _convert(module, QAT mapping): children first (but not inside fused modules), then
 * swap_module on each child that has a qconfig and a QAT version. The old module and
 * its observer hook are dropped, as swap_module does with _observer_forward_hook. */
static ag_status swap_to_qat(nn_module *m)
{
    for (int32_t i = 0; i < m->n_children; i++) {
        nn_module *c = m->children[i].m;
        if (!qat_is_fused(c)) {
            ag_status st = swap_to_qat(c);
            if (st != AG_OK)
                return st;
        }
        const qat_qconfig *qc = qat_module_qconfig(c);
        if (!qc || !in_qat_mapping(c))
            continue;
        nn_module *q = qat_module_from_float(c, qc);
        if (!q) {
            ag_error_context("prepare_qat: %s", m->children[i].name);
            return ag_last_status();
        }
        m->children[i].m = q;
        nn_module_free(c);
    }
    return AG_OK;
}

/* ---- observers (add_observer_) --------------------------------------------------- */

/* DEFAULT_MODULE_TO_ACT_POST_PROCESS, for modules in training mode:
 * default_fixed_qparams_range_0to1_fake_quant / ..._neg1to1_fake_quant. */
static bool special_act(const nn_module *m, qat_fq_cfg *out)
{
    const bool sigmoid = nn_module_is(m, "Sigmoid"), tanh = nn_module_is(m, "Tanh");
    if (!m->training || (!sigmoid && !tanh))
        return false;
    qat_observer_cfg c = qat_observer_cfg_default(QAT_OBS_FIXED_QPARAMS); // quint8, 0..255
    c.fixed_scale = sigmoid ? 1.0f / 256.0f : 2.0f / 256.0f;
    c.fixed_zero_point = sigmoid ? 0 : 128;
    *out = (qat_fq_cfg){.kind = QAT_FQ_STANDARD, .obs = c};
    return true;
}

/* insert_activation_post_process(m[, special]) */
static ag_status observe(nn_module *m, const qat_fq_cfg *special)
{
    const qat_qconfig *qc = qat_module_qconfig(m);
    if (!qc || nn_module_is(m, "DeQuantStub"))
        return AG_OK;
    nn_module *obs = special ? qat_fake_quant_new(special) : qat_qconfig_new_activation(qc);
    return qat_set_post(m, obs);
}

static ag_status add_observers(nn_module *m, bool qat);

static ag_status observe_child(nn_module *c, bool qat)
{
    qat_fq_cfg special;
    if (nn_module_is(c, "Dropout"))
        return AG_OK;
    if (nn_module_is(c, "FloatFunctional")) {
        const qat_qconfig *qc = qat_module_qconfig(c);
        return qc ? qat_set_post(c, qat_qconfig_new_activation(qc)) : AG_OK;
    }
    if (qat_is_fused(c))
        return observe(c, NULL);
    if (special_act(c, &special))
        return observe(c, &special);
    if (qat && qat_is_qat_module(c)) // observer_non_leaf_module_list
        return observe(c, NULL);
    return add_observers(c, qat);
}

static ag_status add_observers(nn_module *m, bool qat)
{
    for (int32_t i = 0; i < m->n_children; i++) {
        ag_status st = observe_child(m->children[i].m, qat);
        if (st != AG_OK)
            return st;
    }
    if (m->n_children == 0 && !nn_module_is(m, "Sequential") && in_propagation_list(m))
        return observe(m, NULL);
    return AG_OK;
}

ag_status qat_prepare(nn_module *root, const qat_qconfig_map *map)
{
    ag_status st = qat_propagate_qconfig(root, map);
    return st != AG_OK ? st : add_observers(root, false);
}

ag_status qat_prepare_qat(nn_module *root, const qat_qconfig_map *map)
{
    if (!root)
        return ag_error(AG_ERR_ARG, "prepare_qat: NULL model");
    if (!root->training)
        return ag_error(AG_ERR_STATE, "prepare_qat only works on models in training mode "
                                      "(call nn_module_train(model, true) first)");
    ag_status st = qat_propagate_qconfig(root, map);
    if (st == AG_OK)
        st = swap_to_qat(root);
    /* prepare() propagates again without a map: the new modules' children (their
     * weight_fake_quant) inherit, everything else keeps what it has. */
    if (st == AG_OK)
        st = qat_propagate_qconfig(root, NULL);
    return st != AG_OK ? st : add_observers(root, true);
}
