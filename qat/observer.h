/* observer.h — observers and FakeQuantize: PyTorch 1.13's eager-mode quantization numerics.
 *
 * Observers watch the tensors that flow through them (min/max, moving averages,
 * histograms) and turn what they saw into quantization parameters with PyTorch's exact
 * calculate_qparams. FakeQuantize modules quantize and dequantize in float with a
 * straight-through gradient, so training sees the rounding it will meet after convert.
 * Both are nn_modules, with PyTorch's buffer names and order, so that a prepared
 * model's state_dict keys are PyTorch's:
 *
 *     MinMaxObserver / MovingAverage...:  eps, min_val, max_val
 *     HistogramObserver:                  eps, histogram, min_val, max_val
 *     FakeQuantize:                       fake_quant_enabled, observer_enabled, scale,
 *                                         zero_point, activation_post_process.<observer>
 *     FusedMovingAvgObsFakeQuantize:      the same keys (flags are int64 there)
 *     _LearnableFakeQuantize:             scale, zero_point (parameters), then
 *                                         fake_quant_enabled, observer_enabled,
 *                                         static_enabled, learning_enabled, eps,
 *                                         activation_post_process.<observer>
 *
 *     qat_observer_cfg oc = qat_observer_cfg_default(QAT_OBS_MOVING_AVG_MINMAX);
 *     nn_module *fq = qat_fake_quant_new(&(qat_fq_cfg){.kind = QAT_FQ_STANDARD, .obs = oc});
 *     ag_tensor *y = nn_forward(fq, ctx, x);   // observes, then fake-quantizes
 *
 * Formulas and version notes: docs/QUANTIZATION.md and
 * ../shared/reference/pytorch_quant_numerics.md.
 */
#ifndef CQAT_QAT_OBSERVER_H
#define CQAT_QAT_OBSERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "nn/nn.h"

typedef enum qat_dtype {
    QAT_QUINT8 = 0, /* 0..255 */
    QAT_QINT8,      /* -128..127 */
    QAT_QINT32,     /* -2^31..2^31-1 */
} qat_dtype;

typedef enum qat_qscheme {
    QAT_PER_TENSOR_AFFINE = 0,
    QAT_PER_TENSOR_SYMMETRIC,
    QAT_PER_CHANNEL_AFFINE,
    QAT_PER_CHANNEL_SYMMETRIC,
} qat_qscheme;

typedef enum qat_observer_kind {
    QAT_OBS_MINMAX = 0,
    QAT_OBS_MOVING_AVG_MINMAX,
    QAT_OBS_PER_CHANNEL_MINMAX,
    QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX,
    QAT_OBS_HISTOGRAM,
    QAT_OBS_PLACEHOLDER, /* carries a dtype only (dynamic quantization); no qparams */
    QAT_OBS_FIXED_QPARAMS, /* fixed scale/zero point (sigmoid: 1/256, 0) */
} qat_observer_kind;

typedef struct qat_observer_cfg {
    qat_observer_kind kind;
    qat_dtype dtype;
    qat_qscheme qscheme;
    bool reduce_range;
    bool has_custom_range;  /* quant_min/quant_max given by the user (e.g. 4-bit) */
    int32_t quant_min, quant_max; /* used when has_custom_range */
    float eps;               /* default float32 eps 2^-23 */
    float averaging_constant; /* moving averages: default 0.01 */
    int32_t ch_axis;          /* per-channel: default 0 */
    int32_t bins;             /* histogram: default 2048 */
    bool is_dynamic;          /* placeholder for dynamic quantization */
    float fixed_scale;        /* FIXED_QPARAMS */
    int32_t fixed_zero_point;
} qat_observer_cfg;

/* The PyTorch defaults of an observer kind (dtype quint8, per-tensor affine, eps 2^-23,
 * averaging 0.01, bins 2048; per-channel kinds: per_channel_affine, ch_axis 0, dtype
 * still quint8 as in PyTorch 1.13 -- weight observers ask for qint8 themselves;
 * FIXED_QPARAMS: scale 1/256, zero point 0, range 0..255). */
qat_observer_cfg qat_observer_cfg_default(qat_observer_kind kind);
/* The effective [quant_min, quant_max] of a configuration (PyTorch's
 * calculate_qmin_qmax, reduce_range included). AG_ERR_ARG for invalid combinations
 * (custom range not containing 0, symmetric quint8 with reduce_range, ...). */
ag_status qat_observer_cfg_range(const qat_observer_cfg *c, int32_t *qmin, int32_t *qmax);

/* An observer module (types "MinMaxObserver", "MovingAverageMinMaxObserver",
 * "PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver",
 * "HistogramObserver", "PlaceholderObserver", "FixedQParamsObserver"). Its forward
 * records statistics of x (no gradient; x is returned unchanged). Per-channel
 * min_val/max_val start with shape [0] and take shape [C] at the first forward, as in
 * PyTorch (they are marked resizable, so state of either shape loads). */
nn_module *qat_observer_new(const qat_observer_cfg *c);
bool qat_is_observer(const nn_module *m);
/* Records statistics of x without autograd (also usable outside a forward). */
ag_status qat_observer_observe(nn_module *obs, const ag_tensor *x);
/* PyTorch's calculate_qparams: n = 1 per-tensor, C per-channel (n_out receives it).
 * scale/zero_point must hold max_n values. An observer that saw nothing gives
 * scale 1, zero point 0 (and says so through *valid = false if valid is not NULL). */
ag_status qat_observer_qparams(nn_module *obs, float *scale, int32_t *zero_point,
                               int32_t max_n, int32_t *n_out, bool *valid);
const qat_observer_cfg *qat_observer_config(const nn_module *obs);

/* ---- FakeQuantize --------------------------------------------------------------- */

typedef enum qat_fq_kind {
    QAT_FQ_STANDARD = 0, /* FakeQuantize: observer -> calculate_qparams -> fake quant */
    QAT_FQ_FUSED,        /* FusedMovingAvgObsFakeQuantize: EMA + ChooseQuantizationParams */
    QAT_FQ_LEARNABLE,    /* _LearnableFakeQuantize (LSQ): scale and zero point learned */
} qat_fq_kind;

typedef struct qat_fq_cfg {
    qat_fq_kind kind;
    qat_observer_cfg obs;
    bool use_grad_scaling; /* learnable: gradient factor 1/sqrt(numel * quant_max) */
    /* Learnable per-channel: the size of the channel axis (PyTorch's channel_len), which
     * fixes the shape of the scale / zero_point parameters; unused otherwise. */
    int32_t channel_len;
} qat_fq_cfg;

/* Types "FakeQuantize", "FusedMovingAvgObsFakeQuantize", "_LearnableFakeQuantize".
 * Forward: if observer_enabled, observe x and refresh scale/zero_point; if
 * fake_quant_enabled, y = (clamp(RNE(x * f32(1/scale)) + zp, qmin, qmax) - zp) * scale
 * with the STE gradient (dy passed where qmin <= RNE(x/s)+zp <= qmax, bounds
 * inclusive); else y = x. Runs in eval mode too (PyTorch does): disable the observer
 * to freeze the parameters. */
nn_module *qat_fake_quant_new(const qat_fq_cfg *c);
bool qat_is_fake_quant(const nn_module *m);
const qat_fq_cfg *qat_fake_quant_config(const nn_module *fq);
/* The parameters currently in the scale / zero_point buffers (what the next forward
 * with the observer disabled uses, and what convert takes). */
ag_status qat_fake_quant_qparams(nn_module *fq, float *scale, int32_t *zero_point,
                                 int32_t max_n, int32_t *n_out);
/* Range actually used by the fake quant ([quant_min, quant_max] of its observer). */
void qat_fake_quant_range(const nn_module *fq, int32_t *qmin, int32_t *qmax);

/* A producer that knows its output's min and max (it took them while writing it) can
 * spare the fake quant that observes the output its own pass over it.
 * qat_fake_quant_takes_range(fq): fq is a FusedMovingAvgObsFakeQuantize, per tensor,
 * observing (false for NULL and anything else). qat_fake_quant_give_range(fq, x, lo,
 * hi): fq's next forward, if its input is x (the same tensor and data), uses lo and hi
 * as x's min and max instead of computing them; any forward forgets the range. lo and
 * hi must be what qat_aminmax(x) gives (up to the sign of a zero), and not NaN. */
bool qat_fake_quant_takes_range(const nn_module *fq);
void qat_fake_quant_give_range(nn_module *fq, const ag_tensor *x, float lo, float hi);

/* Toggles, on one module or (the _all variants) on every FakeQuantize in a tree, as
 * PyTorch's model.apply(torch.ao.quantization.disable_observer) etc. Bare observers
 * have no switch (in PyTorch either): they are skipped. On a _LearnableFakeQuantize
 * "observer" means static_enabled, as its enable_observer() override does. */
void qat_fake_quant_enable_observer(nn_module *fq, bool on);
void qat_fake_quant_enable_fake_quant(nn_module *fq, bool on);
void qat_enable_observer_all(nn_module *root, bool on);
void qat_enable_fake_quant_all(nn_module *root, bool on);

/* ---- the fake-quant ops themselves (autograd, STE) -------------------------------- */

/* Per-tensor and per-channel (axis) fake quant as differentiable ops: PyTorch's
 * fake_quantize_per_tensor_affine / fake_quantize_per_channel_affine. */
ag_tensor *qat_fake_quantize_per_tensor(ag_ctx *ctx, ag_tensor *x, float scale,
                                        int32_t zero_point, int32_t qmin, int32_t qmax);
ag_tensor *qat_fake_quantize_per_channel(ag_ctx *ctx, ag_tensor *x, const float *scale,
                                         const int32_t *zero_point, int32_t axis,
                                         int32_t qmin, int32_t qmax);

/* _LearnableFakeQuantize (LSQ) as differentiable ops: PyTorch's
 * _fake_quantize_learnable_per_tensor_affine / _per_channel_affine. scale and
 * zero_point are float tensors ([1], or [C] for the channel axis) that receive
 * gradients (summed over x) when they require them; grad_factor scales those two. */
ag_tensor *qat_fake_quantize_learnable_per_tensor(ag_ctx *ctx, ag_tensor *x, ag_tensor *scale,
                                                  ag_tensor *zero_point, int32_t qmin,
                                                  int32_t qmax, float grad_factor);
ag_tensor *qat_fake_quantize_learnable_per_channel(ag_ctx *ctx, ag_tensor *x, ag_tensor *scale,
                                                   ag_tensor *zero_point, int32_t axis,
                                                   int32_t qmin, int32_t qmax,
                                                   float grad_factor);
/* _LearnableFakeQuantize's modes, as its PyTorch methods of the same names:
 *   param learning:     learning on (scale/zero_point require gradients), fake quant on,
 *                       observer (static estimates) off;
 *   static estimate:    learning off, fake quant on, observer on;
 *   static observation: learning off, fake quant off, observer on.
 * qat_learnable_fq_toggle_learning is toggle_qparam_learning alone. */
void qat_learnable_fq_enable_param_learning(nn_module *fq);
void qat_learnable_fq_enable_static_estimate(nn_module *fq);
void qat_learnable_fq_enable_static_observation(nn_module *fq);
void qat_learnable_fq_toggle_learning(nn_module *fq, bool on);

/* PyTorch's _calculate_qparams on float32 min/max (observer.py), elementwise over n:
 * the formula every observer ends with. */
void qat_calculate_qparams(const float *min_val, const float *max_val, int32_t n,
                           qat_qscheme qscheme, qat_dtype dtype, bool has_custom_range,
                           int32_t qmin, int32_t qmax, float eps, float *scale,
                           int32_t *zero_point);
/* fbgemm's ChooseQuantizationParams (used by the fused fake quant while training). */
void qat_choose_qparams(float min, float max, int32_t qmin, int32_t qmax,
                        bool preserve_sparsity, float *scale, int32_t *zero_point);

/* ---- HistogramObserver numerics on raw arrays (histogram.c) -----------------------
 * PyTorch 1.13's HistogramObserver.forward (histc over [int(min), int(max)], merging
 * with upsample_rate 128) and _non_linear_param_search, bit for bit. `work` is scratch
 * of qat_histogram_work_size(bins) bytes owned by the caller. */
size_t qat_histogram_work_size(int32_t bins);
/* torch.aminmax over n floats: a NaN anywhere makes both results NaN. */
void qat_aminmax(const float *x, int64_t n, float *min_out, float *max_out);
/* Updates hist[bins] and the 0-dim min/max with x[0..n). AG_ERR_NUMERIC (state
 * untouched) for non-finite values, which PyTorch refuses too (int(inf) raises). */
ag_status qat_histogram_observe(float *hist, int32_t bins, float *min_val, float *max_val,
                                const float *x, int64_t n, void *work);
/* The L2-optimal [new_min, new_max] that calculate_qparams feeds to _calculate_qparams;
 * dst_nbins = 2^bits of the dtype (256 for 8-bit, even with reduce_range). */
void qat_histogram_search(const float *hist, int32_t bins, float min_val, float max_val,
                          int64_t dst_nbins, void *work, float *new_min, float *new_max);

#endif
