/* qconfig.h — quantization configurations (PyTorch's QConfig) and how they reach modules.
 *
 * A qconfig says how to build the two post-processes of a quantized layer: one that
 * watches (PTQ: an observer) or fake-quantizes (QAT: a FakeQuantize) the layer's output
 * activations, and one for its weight. The named qconfigs below are PyTorch 1.13's,
 * field for field (torch/ao/quantization/qconfig.py, fake_quantize.py, observer.py).
 *
 *     qat_qconfig qc;
 *     qat_qconfig_by_name("fbgemm-qat", &qc);           // get_default_qat_qconfig('fbgemm')
 *     qat_qconfig_map *map = qat_qconfig_map_new(&qc);  // the global qconfig
 *     qat_qconfig_map_set_name(map, "fc2", NULL);       // fc2 and its children stay float
 *     qat_qconfig_map_set_type(map, "Linear", &other);  // every plain Linear: another one
 *     qat_prepare_qat(model, map);                      // qat/qat.h
 *     ...train...
 *     nn_module_free(model);
 *     qat_qconfig_map_free(map);                        // after the model: see below
 *
 * Propagation follows propagate_qconfig_: for every module, its own qconfig (set
 * before with qat_module_set_qconfig) wins over the map's entry for its dotted name,
 * which wins over the entry for its type, which wins over its parent's qconfig. The
 * result is stored in nn_module.qconfig. "None" (a NULL qconfig given to the map or to
 * qat_module_set_qconfig) means: leave this module in float — no observer, no swap —
 * and, unless they have their own, its children too.
 *
 * Lifetime: modules only point at qconfigs (m->qconfig is borrowed). The map owns the
 * qconfigs it was given (copies), so it must outlive every model it was propagated to;
 * a qconfig set directly with qat_module_set_qconfig must outlive the module.
 */
#ifndef CQAT_QAT_QCONFIG_H
#define CQAT_QAT_QCONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "nn/nn.h"
#include "qat/observer.h"

/* PyTorch's QConfig(activation, weight). For a QAT qconfig (is_qat) both are fake quants;
 * for PTQ and dynamic qconfigs they are observers and only .obs is used. */
typedef struct qat_qconfig {
    qat_fq_cfg activation, weight;
    bool is_qat;
} qat_qconfig;

/* ---- the named qconfigs of PyTorch 1.13 ------------------------------------------ */

/* default_qconfig: MinMaxObserver(quant_min=0, quant_max=127) for activations (quint8
 * affine), MinMaxObserver(qint8, per_tensor_symmetric) for weights. */
qat_qconfig qat_default_qconfig(void);
/* default_per_channel_qconfig: as default_qconfig with PerChannelMinMaxObserver(qint8,
 * per_channel_symmetric, ch_axis 0) weights. */
qat_qconfig qat_default_per_channel_qconfig(void);
/* default_qat_qconfig: FakeQuantize(MovingAverageMinMax, 0..255, reduce_range: 0..127)
 * and FakeQuantize(MovingAverageMinMax, qint8 -128..127, per_tensor_symmetric). */
qat_qconfig qat_default_qat_qconfig(void);
/* default_qat_qconfig_v2: FusedMovingAvgObsFakeQuantize for both (activations quint8
 * 0..255, weights qint8 -128..127 per_tensor_symmetric). */
qat_qconfig qat_default_qat_qconfig_v2(void);
/* default_dynamic_qconfig: PlaceholderObserver(quint8, dynamic) activations,
 * MinMaxObserver(qint8, per_tensor_symmetric) weights. */
qat_qconfig qat_default_dynamic_qconfig(void);
/* per_channel_dynamic_qconfig: the same with per-channel symmetric weights. */
qat_qconfig qat_per_channel_dynamic_qconfig(void);

/* get_default_qconfig(backend): "fbgemm" and "x86": HistogramObserver(reduce_range)
 * (0..127) and per-channel symmetric weights; "qnnpack": HistogramObserver (0..255) and
 * per-tensor symmetric weights; "onednn": HistogramObserver (0..255), per-channel.
 * Unknown backend: AG_ERR_ARG (PyTorch silently falls back to default_qconfig). */
ag_status qat_get_default_qconfig(const char *backend, qat_qconfig *out);
/* get_default_qat_qconfig(backend, version): version 1 (1.13's default) uses
 * FusedMovingAvgObsFakeQuantize, version 0 FakeQuantize; activations 0..255 with
 * reduce_range (0..127) for "fbgemm" and "x86", 0..255 for "qnnpack" and "onednn";
 * weights per-channel symmetric except "qnnpack" (per-tensor symmetric). */
ag_status qat_get_default_qat_qconfig(const char *backend, int version, qat_qconfig *out);

/* By name, the names being (each = the PyTorch object it copies):
 *   "default"                    default_qconfig
 *   "default-per-channel"        default_per_channel_qconfig
 *   "default-qat"                default_qat_qconfig
 *   "default-qat-v2"             default_qat_qconfig_v2
 *   "default-dynamic"            default_dynamic_qconfig
 *   "per-channel-dynamic"        per_channel_dynamic_qconfig
 *   "fbgemm" "x86" "qnnpack" "onednn"                 get_default_qconfig(backend)
 *   "fbgemm-qat" "x86-qat" "qnnpack-qat" "onednn-qat" get_default_qat_qconfig(backend, 1)
 *   "fbgemm-qat-v0" ... "onednn-qat-v0"               get_default_qat_qconfig(backend, 0)
 *   "qnnpack-symmetric"          default_symmetric_qnnpack_qconfig
 *   "qnnpack-per-channel-symmetric"      default_per_channel_symmetric_qnnpack_qconfig
 *   "qnnpack-symmetric-qat"      default_symmetric_qnnpack_qat_qconfig
 *   "qnnpack-per-channel-symmetric-qat"  default_per_channel_symmetric_qnnpack_qat_qconfig
 * Unknown name: AG_ERR_ARG with a message listing the known ones. */
ag_status qat_qconfig_by_name(const char *name, qat_qconfig *out);
/* The names above, NULL-terminated; static storage. */
const char *const *qat_qconfig_names(void);

/* qconfig_equals: the same kinds and settings field by field (None, as NULL or
 * &qat_qconfig_none, equals only None). */
bool qat_qconfig_equal(const qat_qconfig *a, const qat_qconfig *b);

/* ---- modifiers ------------------------------------------------------------------- */

/* Narrower integers through a custom quant range (reduce_range is cleared, as the bit
 * count is then the whole story): unsigned (quint8) tensors get 0..2^b-1, signed (qint8)
 * ones -2^(b-1)..2^(b-1)-1, e.g. 4-bit weights -8..7 and 4-bit activations 0..15.
 * bits in 2..8, or 0 to leave that side as it is. AG_ERR_ARG otherwise. */
ag_status qat_qconfig_set_bits(qat_qconfig *qc, int activation_bits, int weight_bits);
/* Learnable scales and zero points (_LearnableFakeQuantize, LSQ) for the chosen sides,
 * keeping their observer and range; use_grad_scaling as given. A PTQ qconfig has no
 * fake quants to make learnable: AG_ERR_ARG. */
ag_status qat_qconfig_set_learnable(qat_qconfig *qc, bool activation, bool weight,
                                    bool use_grad_scaling);

/* ---- building the post-processes ---------------------------------------------------- */

/* qconfig.activation() / qconfig.weight(): a new FakeQuantize (QAT) or observer (PTQ),
 * owned by the caller; NULL with ag_last_error() on failure. */
nn_module *qat_qconfig_new_activation(const qat_qconfig *qc);
nn_module *qat_qconfig_new_weight(const qat_qconfig *qc);

/* ---- qconfig on modules ------------------------------------------------------------ */

/* The "None" qconfig: its address in nn_module.qconfig marks a module left in float. */
extern const qat_qconfig qat_qconfig_none;

/* Sets m's own qconfig (borrowed: it must outlive m); NULL means None (keep m in float). */
void qat_module_set_qconfig(nn_module *m, const qat_qconfig *qc);
/* The qconfig in force for m after propagation, or NULL when it is None or unset. */
const qat_qconfig *qat_module_qconfig(const nn_module *m);
/* Forgets every module's qconfig in the tree (unset, not None), so that another map can
 * be propagated (PyTorch's _remove_qconfig, without touching observers). */
void qat_qconfig_clear(nn_module *root);

/* ---- the qconfig map (PyTorch's qconfig_dict of eager mode) --------------------------- */

typedef struct qat_qconfig_map qat_qconfig_map;

/* A new map whose global qconfig (the entry for the root, name "") is *global (copied),
 * or None when global is NULL. NULL with ag_last_error() if out of memory. */
qat_qconfig_map *qat_qconfig_map_new(const qat_qconfig *global);
void qat_qconfig_map_free(qat_qconfig_map *map); /* NULL is fine */
/* Entries by exact module type name ("Conv2d", "nni.ConvBnReLU2d") or by dotted path
 * ("features.0"; "" is the global entry). qc NULL means None; qc is copied. Setting a
 * key again replaces its entry. AG_ERR_ARG for a NULL key, AG_ERR_NOMEM. */
ag_status qat_qconfig_map_set_type(qat_qconfig_map *map, const char *type,
                                   const qat_qconfig *qc);
ag_status qat_qconfig_map_set_name(qat_qconfig_map *map, const char *path,
                                   const qat_qconfig *qc);

/* propagate_qconfig_(root, map): stores in every module of the tree the qconfig in force
 * (own > map by name > map by type > parent's; None as &qat_qconfig_none). map NULL:
 * only own qconfigs and inheritance (PyTorch's qconfig_dict=None). */
ag_status qat_propagate_qconfig(nn_module *root, const qat_qconfig_map *map);

#endif
