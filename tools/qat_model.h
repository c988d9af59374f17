/* qat_model.h — building a QAT model the way `cqat qat` does, from a zoo model and a
 * short spec, so that checkpoints, eval and convert can rebuild exactly the same tree.
 *
 * The spec is saved in a QAT checkpoint's "extra" attribute as text
 * ("qconfig=fbgemm-qat;bits_weight=8;bits_activation=8;learnable=0;...").
 */
#ifndef CQAT_TOOLS_QAT_MODEL_H
#define CQAT_TOOLS_QAT_MODEL_H

#include "nn/nn.h"
#include "nn/zoo.h"
#include "qat/qat.h"
#include "qat/qconfig.h"

typedef struct cqat_qat_spec {
    char qconfig[48];        /* a name of qat_qconfig_by_name (after alias resolution) */
    int32_t bits_weight;     /* 8 = as the qconfig says */
    int32_t bits_activation;
    bool learnable;          /* LSQ scales and zero points */
    int64_t freeze_bn_after;        /* epoch from which BN statistics are frozen; -1 never */
    int64_t freeze_observers_after; /* epoch from which observers are off; -1 never */
} cqat_qat_spec;

/* "fbgemm" -> "fbgemm-qat", "qnnpack" -> "qnnpack-qat", "per-tensor" -> "default-qat",
 * "per-channel" -> "fbgemm-qat"; any qat_qconfig_by_name name passes through. */
ag_status cqat_qat_resolve_qconfig(const char *name, char *out, size_t size);

void cqat_qat_spec_format(const cqat_qat_spec *s, char *buf, size_t size);
ag_status cqat_qat_spec_parse(const char *text, cqat_qat_spec *s);

/* Guesses the qconfig of a PyTorch QAT-prepared state_dict file: fused or plain fake
 * quant (flag dtype int64 or uint8), per-channel or per-tensor weight scales. */
ag_status cqat_qat_spec_from_state(const char *path, cqat_qat_spec *s);

/* The float model of cfg, with float weights from `init` if not NULL (a cqat float
 * checkpoint or a state_dict), fused (the zoo's groups, QAT style) and prepared for QAT.
 * *map must be freed (qat_qconfig_map_free) after the model. */
ag_status cqat_qat_build(const nn_zoo_config *cfg, const cqat_qat_spec *spec, const char *init,
                         nn_module **model, qat_qconfig_map **map);

/* Sets observers and BN statistics as the spec says for `epoch`: BN frozen from
 * freeze_bn_after on, observers off from freeze_observers_after on. */
void cqat_qat_apply_schedule(nn_module *m, const cqat_qat_spec *spec, int64_t epoch);

#endif
