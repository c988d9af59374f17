/* observer.c — the observer modules: MinMax, MovingAverageMinMax, their per-channel
 * versions, Histogram, Placeholder and FixedQParams, with PyTorch 1.13's buffers,
 * statistics updates and calculate_qparams. The formulas live in qparams.c and
 * histogram.c; this file keeps the state. */
#include "qat/observer.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct qat_observer {
    nn_module base;
    qat_observer_cfg cfg;
    int32_t qmin, qmax;
    /* Borrowed from base.buffers (the module owns them); NULL where a kind has none. */
    ag_tensor *eps;        // (1)
    ag_tensor *min_val;    // () per-tensor, (C) per-channel (starts (0), resizable)
    ag_tensor *max_val;    // same as min_val
    ag_tensor *histogram;  // (bins)
    ag_tensor *scale;      // (1) FixedQParams
    ag_tensor *zero_point; // (1) int32, FixedQParams
    void *work;            /* histogram scratch, qat_histogram_work_size(bins) bytes */
} qat_observer;

static ag_tensor *observer_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x);
static void observer_destroy(nn_module *m);

/* Indexed by qat_observer_kind; PyTorch's class names. */
static const nn_module_vtbl observer_vt[] = {
    [QAT_OBS_MINMAX] = {"MinMaxObserver", observer_forward, observer_destroy, NULL},
    [QAT_OBS_MOVING_AVG_MINMAX] = {"MovingAverageMinMaxObserver", observer_forward,
                                   observer_destroy, NULL},
    [QAT_OBS_PER_CHANNEL_MINMAX] = {"PerChannelMinMaxObserver", observer_forward,
                                    observer_destroy, NULL},
    [QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX] = {"MovingAveragePerChannelMinMaxObserver",
                                               observer_forward, observer_destroy, NULL},
    [QAT_OBS_HISTOGRAM] = {"HistogramObserver", observer_forward, observer_destroy, NULL},
    [QAT_OBS_PLACEHOLDER] = {"PlaceholderObserver", observer_forward, observer_destroy, NULL},
    [QAT_OBS_FIXED_QPARAMS] = {"FixedQParamsObserver", observer_forward, observer_destroy,
                               NULL},
};
enum { N_OBSERVER_KINDS = sizeof observer_vt / sizeof observer_vt[0] };

bool qat_is_observer(const nn_module *m)
{
    for (int i = 0; m && i < N_OBSERVER_KINDS; i++)
        if (m->vt == &observer_vt[i])
            return true;
    return false;
}

static qat_observer *as_observer(const nn_module *m)
{
    return qat_is_observer(m) ? (qat_observer *)m : NULL;
}

const qat_observer_cfg *qat_observer_config(const nn_module *obs)
{
    qat_observer *o = as_observer(obs);
    return o ? &o->cfg : NULL;
}

static void observer_destroy(nn_module *m) { free(((qat_observer *)m)->work); }

/* ---- construction ------------------------------------------------------------------ */

static bool kind_is_per_channel(qat_observer_kind k)
{
    return k == QAT_OBS_PER_CHANNEL_MINMAX || k == QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX;
}

static bool kind_is_uniform(qat_observer_kind k)
{
    return k != QAT_OBS_PLACEHOLDER && k != QAT_OBS_FIXED_QPARAMS;
}

/* A float buffer registered under `name`, filled with v; *out borrows it. */
static ag_status add_filled(nn_module *m, const char *name, int32_t ndim, int64_t len, float v,
                            ag_tensor **out)
{
    ag_tensor *t = ag_tensor_new(ndim, (const int64_t[]){len}, false);
    if (!t)
        return ag_last_status();
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = v;
    *out = t;
    return nn_module_add_buffer(m, name, t);
}

/* Per-channel statistics: shape (0) until the first forward (or a load) sizes them. */
static ag_status add_lazy(nn_module *m, const char *name, ag_tensor **out)
{
    ag_tensor *t = ag_tensor_new(1, (const int64_t[]){0}, false);
    if (!t)
        return ag_last_status();
    t->flags |= AG_F_RESIZABLE;
    *out = t;
    return nn_module_add_buffer(m, name, t);
}

/* Buffers in PyTorch's registration order (the state_dict order). */
static ag_status add_buffers(qat_observer *o)
{
    nn_module *m = &o->base;
    const qat_observer_cfg *c = &o->cfg;
    ag_status st = AG_OK;
    if (kind_is_uniform(c->kind))
        st = add_filled(m, "eps", 1, 1, c->eps, &o->eps);
    if (st == AG_OK && c->kind == QAT_OBS_HISTOGRAM)
        st = add_filled(m, "histogram", 1, c->bins, 0.0f, &o->histogram);
    if (st == AG_OK && kind_is_per_channel(c->kind)) {
        st = add_lazy(m, "min_val", &o->min_val);
        if (st == AG_OK)
            st = add_lazy(m, "max_val", &o->max_val);
    } else if (st == AG_OK && kind_is_uniform(c->kind)) {
        st = add_filled(m, "min_val", 0, 1, INFINITY, &o->min_val);
        if (st == AG_OK)
            st = add_filled(m, "max_val", 0, 1, -INFINITY, &o->max_val);
    }
    if (st == AG_OK && c->kind == QAT_OBS_FIXED_QPARAMS) {
        st = add_filled(m, "scale", 1, 1, c->fixed_scale, &o->scale);
        ag_tensor *zp = st == AG_OK ? ag_tensor_new_dtype(AG_I32, 1, (const int64_t[]){1}) : NULL;
        if (st == AG_OK && !zp)
            st = ag_last_status();
        if (st == AG_OK) {
            ((int32_t *)zp->data)[0] = c->fixed_zero_point;
            o->zero_point = zp;
            st = nn_module_add_buffer(m, "zero_point", zp);
        }
    }
    return st;
}

nn_module *qat_observer_new(const qat_observer_cfg *c)
{
    int32_t qmin, qmax;
    if (qat_observer_cfg_range(c, &qmin, &qmax) != AG_OK)
        return NULL;
    if (c->kind == QAT_OBS_HISTOGRAM && c->bins < 1) {
        ag_error(AG_ERR_ARG, "HistogramObserver: bins must be positive, got %d", (int)c->bins);
        return NULL;
    }
    qat_observer *o = calloc(1, sizeof *o);
    if (!o) {
        ag_error(AG_ERR_NOMEM, "observer: out of memory");
        return NULL;
    }
    nn_module_init(&o->base, &observer_vt[c->kind]);
    o->cfg = *c;
    o->qmin = qmin;
    o->qmax = qmax;
    if (c->kind == QAT_OBS_HISTOGRAM) {
        o->work = malloc(qat_histogram_work_size(c->bins));
        if (!o->work) {
            ag_error(AG_ERR_NOMEM, "HistogramObserver: out of memory for %d bins", (int)c->bins);
            nn_module_free(&o->base);
            return NULL;
        }
    }
    if (add_buffers(o) != AG_OK) {
        nn_module_free(&o->base);
        return NULL;
    }
    return &o->base;
}

/* ---- statistics -------------------------------------------------------------------- */

static float nan_min(float a, float b) { return isnan(a) || a < b ? a : b; }
static float nan_max(float a, float b) { return isnan(a) || a > b ? a : b; }

/* MinMaxObserver: running min(min(x), min_val), max likewise (torch.min/max: NaN wins). */
static void observe_minmax(qat_observer *o, const ag_tensor *x)
{
    float lo, hi;
    qat_aminmax(x->data, x->numel, &lo, &hi);
    o->min_val->data[0] = nan_min(lo, o->min_val->data[0]);
    o->max_val->data[0] = nan_max(hi, o->max_val->data[0]);
}

/* MovingAverageMinMaxObserver: the first batch (min_val == +inf and max_val == -inf)
 * is taken as it is; later ones move the statistics by c * (batch - running), each
 * step a float32 op with c rounded to float32. */
static float ema(float running, float batch, float c) { return running + c * (batch - running); }

static void observe_moving_avg(qat_observer *o, const ag_tensor *x)
{
    float lo, hi;
    qat_aminmax(x->data, x->numel, &lo, &hi);
    float *mn = o->min_val->data, *mx = o->max_val->data;
    if (mn[0] == INFINITY && mx[0] == -INFINITY) {
        mn[0] = lo;
        mx[0] = hi;
        return;
    }
    mn[0] = ema(mn[0], lo, o->cfg.averaging_constant);
    mx[0] = ema(mx[0], hi, o->cfg.averaging_constant);
}

/* x viewed as (outer, C, inner) around the channel axis. */
typedef struct channel_view {
    int64_t outer, channels, inner;
} channel_view;

static ag_status channel_view_of(const ag_tensor *x, int32_t axis, const char *who,
                                 channel_view *v)
{
    int32_t ax = axis < 0 ? axis + x->ndim : axis;
    if (ax < 0 || ax >= x->ndim) {
        char s[AG_SHAPE_STR_MAX];
        return ag_error(AG_ERR_SHAPE, "%s: ch_axis %d is out of range for input %s", who,
                        (int)axis, ag_shape_str(x, s, sizeof s));
    }
    v->outer = ag_shape_numel(ax, x->shape);
    v->channels = x->shape[ax];
    v->inner = ag_shape_numel(x->ndim - ax - 1, x->shape + ax + 1);
    return AG_OK;
}

/* torch.aminmax(y, dim=1) of x permuted to put the channel axis first and flattened:
 * channel c's min and max over every (outer, inner) position. NaN propagates. */
static void channel_minmax(const float *x, const channel_view *v, int64_t c, float *lo,
                           float *hi)
{
    float mn = INFINITY, mx = -INFINITY;
    bool nan = false;
    for (int64_t o = 0; o < v->outer; o++) {
        const float *row = x + (o * v->channels + c) * v->inner;
        for (int64_t i = 0; i < v->inner; i++) {
            mn = row[i] < mn ? row[i] : mn;
            mx = row[i] > mx ? row[i] : mx;
            nan |= row[i] != row[i];
        }
    }
    *lo = nan ? NAN : mn;
    *hi = nan ? NAN : mx;
}

/* PerChannelMinMaxObserver and its moving-average version. The first call sizes the
 * (0)-shaped statistics to (C) and takes the batch values. */
static ag_status observe_per_channel(qat_observer *o, const ag_tensor *x)
{
    const char *who = o->base.vt->type;
    channel_view v;
    ag_status st = channel_view_of(x, o->cfg.ch_axis, who, &v);
    if (st != AG_OK)
        return st;
    ag_tensor *mn = o->min_val, *mx = o->max_val;
    const bool first = mn->numel == 0 || mx->numel == 0;
    if (first) {
        st = ag_tensor_resize(mn, 1, (const int64_t[]){v.channels});
        if (st == AG_OK)
            st = ag_tensor_resize(mx, 1, (const int64_t[]){v.channels});
        if (st != AG_OK)
            return st;
    } else if (mn->numel != v.channels || mx->numel != v.channels) {
        return ag_error(AG_ERR_SHAPE, "%s: input has %" PRId64 " channels on axis %d, the "
                        "statistics hold %" PRId64, who, v.channels, (int)o->cfg.ch_axis,
                        mn->numel);
    }
    const bool moving = o->cfg.kind == QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX;
    const float c_avg = o->cfg.averaging_constant;
#pragma omp parallel for if (x->numel > 65536 && v.channels > 1) schedule(static)
    for (int64_t c = 0; c < v.channels; c++) {
        float lo, hi;
        channel_minmax(x->data, &v, c, &lo, &hi);
        if (first) {
            mn->data[c] = lo;
            mx->data[c] = hi;
        } else if (moving) {
            mn->data[c] = ema(mn->data[c], lo, c_avg);
            mx->data[c] = ema(mx->data[c], hi, c_avg);
        } else {
            mn->data[c] = nan_min(lo, mn->data[c]);
            mx->data[c] = nan_max(hi, mx->data[c]);
        }
    }
    return AG_OK;
}

ag_status qat_observer_observe(nn_module *obs, const ag_tensor *x)
{
    qat_observer *o = as_observer(obs);
    if (!o)
        return ag_error(AG_ERR_ARG, "qat_observer_observe: %s is not an observer",
                        obs ? nn_module_type(obs) : "NULL");
    if (!x)
        return ag_last_status() != AG_OK ? ag_last_status()
                                         : ag_error(AG_ERR_ARG, "%s: input is NULL",
                                                    obs->vt->type);
    if (x->numel == 0)
        return AG_OK; /* every observer skips empty tensors */
    switch (o->cfg.kind) {
    case QAT_OBS_MINMAX:
        observe_minmax(o, x);
        return AG_OK;
    case QAT_OBS_MOVING_AVG_MINMAX:
        observe_moving_avg(o, x);
        return AG_OK;
    case QAT_OBS_PER_CHANNEL_MINMAX:
    case QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX:
        return observe_per_channel(o, x);
    case QAT_OBS_HISTOGRAM:
        return qat_histogram_observe(o->histogram->data, o->cfg.bins, o->min_val->data,
                                     o->max_val->data, x->data, x->numel, o->work);
    case QAT_OBS_PLACEHOLDER:
    case QAT_OBS_FIXED_QPARAMS:
        return AG_OK;
    }
    return AG_OK;
}

/* Observers record and pass x through unchanged (no gradient of their own). */
static ag_tensor *observer_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    (void)ctx;
    return qat_observer_observe(m, x) == AG_OK ? x : NULL;
}

/* ---- calculate_qparams ------------------------------------------------------------- */

/* What PyTorch returns (with a warning) for an observer that saw nothing. */
static ag_status default_qparams(float *scale, int32_t *zero_point, int32_t *n_out, bool *valid)
{
    scale[0] = 1.0f;
    zero_point[0] = 0;
    *n_out = 1;
    if (valid)
        *valid = false;
    return AG_OK;
}

/* utils.check_min_max_valid's assertion, as an error (NaN fails it too). */
static ag_status check_ordered(const qat_observer *o, const float *mn, const float *mx,
                               int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!(mn[i] <= mx[i]))
            return ag_error(AG_ERR_STATE, "%s: min %g should be less than max %g (at %" PRId64
                            ")", o->base.vt->type, (double)mn[i], (double)mx[i], i);
    return AG_OK;
}

static ag_status qparams_of_range(const qat_observer *o, const float *mn, const float *mx,
                                  int64_t n, float *scale, int32_t *zero_point,
                                  int32_t max_n, int32_t *n_out)
{
    if (n > max_n)
        return ag_error(AG_ERR_ARG, "%s: %" PRId64 " channels do not fit in %d", o->base.vt->type,
                        n, (int)max_n);
    ag_status st = check_ordered(o, mn, mx, n);
    if (st != AG_OK)
        return st;
    qat_calculate_qparams(mn, mx, (int32_t)n, o->cfg.qscheme, o->cfg.dtype,
                          o->cfg.has_custom_range, o->qmin, o->qmax, o->eps->data[0], scale,
                          zero_point);
    *n_out = (int32_t)n;
    return AG_OK;
}

ag_status qat_observer_qparams(nn_module *obs, float *scale, int32_t *zero_point,
                               int32_t max_n, int32_t *n_out, bool *valid)
{
    qat_observer *o = as_observer(obs);
    if (!o)
        return ag_error(AG_ERR_ARG, "qat_observer_qparams: %s is not an observer",
                        obs ? nn_module_type(obs) : "NULL");
    if (max_n < 1)
        return ag_error(AG_ERR_ARG, "%s: max_n must be at least 1", obs->vt->type);
    if (valid)
        *valid = true;
    switch (o->cfg.kind) {
    case QAT_OBS_PLACEHOLDER:
        return ag_error(AG_ERR_STATE, "PlaceholderObserver: calculate_qparams should not be "
                        "called (it only carries a dtype)");
    case QAT_OBS_FIXED_QPARAMS:
        scale[0] = o->scale->data[0];
        zero_point[0] = ((const int32_t *)o->zero_point->data)[0];
        *n_out = 1;
        return AG_OK;
    case QAT_OBS_HISTOGRAM: {
        float mn = o->min_val->data[0], mx = o->max_val->data[0], lo, hi;
        if (mn == INFINITY && mx == -INFINITY)
            return default_qparams(scale, zero_point, n_out, valid);
        qat_histogram_search(o->histogram->data, o->cfg.bins, mn, mx,
                             o->cfg.dtype == QAT_QINT32 ? (int64_t)1 << 32 : 256, o->work, &lo,
                             &hi);
        return qparams_of_range(o, &lo, &hi, 1, scale, zero_point, max_n, n_out);
    }
    default:
        break;
    }
    const ag_tensor *mn = o->min_val, *mx = o->max_val;
    if (mn->numel == 0 || mx->numel == 0)
        return default_qparams(scale, zero_point, n_out, valid);
    if (mn->ndim == 0 && mn->data[0] == INFINITY && mx->data[0] == -INFINITY)
        return default_qparams(scale, zero_point, n_out, valid);
    if (mn->numel != mx->numel)
        return ag_error(AG_ERR_STATE, "%s: min_val has %" PRId64 " values, max_val %" PRId64,
                        obs->vt->type, mn->numel, mx->numel);
    return qparams_of_range(o, mn->data, mx->data, mn->numel, scale, zero_point, max_n, n_out);
}
