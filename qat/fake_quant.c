/* fake_quant.c — the fake-quant ops (quantize-dequantize in float with a
 * straight-through gradient) and the three FakeQuantize modules of PyTorch 1.13:
 * FakeQuantize (observer -> calculate_qparams -> fake quant), FusedMovingAvgObs-
 * FakeQuantize (EMA min/max + ChooseQuantizationParams in one op) and
 * _LearnableFakeQuantize (whose ops live in learnable_fq.c).
 *
 * The kernel is ATen's fake_quantize_tensor_cachemask_kernel:
 *     qf = zp + RNE(x * f32(1 / scale))          (float; zp added after rounding)
 *     y  = (clamp((int64) qf, qmin, qmax) - zp) * scale
 *     dx = dy * (qmin <= qf <= qmax)             (mask before clamping, bounds inclusive)
 * (int64) is x86's conversion: NaN, +-inf and |qf| >= 2^63 become INT64_MIN, so they
 * land on qmin with a zero gradient, as in PyTorch on x86. */
#include "qat/observer.h"

#include "autograd/ag_impl.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- rounding and the element kernel ------------------------------------------------ */

/* std::nearbyint on float in the default rounding mode (ties to even), without a libm
 * call so that the loops vectorize: adding 2^23 to |v| < 2^23 drops the fraction (larger
 * values are integers already). The final choice is a bit blend rather than ?:, which
 * GCC would turn into a branch (and then not vectorize) under -ftrapping-math. */
static inline float rne(float v)
{
    float a = fabsf(v);
    float r = copysignf((a + 0x1p23f) - 0x1p23f, v);
    uint32_t rb, vb, keep = 0u - (uint32_t)(a < 0x1p23f);
    memcpy(&rb, &r, sizeof rb);
    memcpy(&vb, &v, sizeof vb);
    uint32_t out = (rb & keep) | (vb & ~keep);
    memcpy(&r, &out, sizeof r);
    return r;
}

/* The quantization range and zero point of one tensor or channel, prepared once. */
typedef struct fq_params {
    float scale, inv;  /* inv = f32(1 / scale): PyTorch multiplies, never divides */
    float zp, lo, hi;  /* as floats: exact while |values| <= 2^24 (narrow) */
    int32_t izp, qmin, qmax;
} fq_params;

static fq_params fq_params_make(float scale, int32_t zp, int32_t qmin, int32_t qmax)
{
    return (fq_params){scale, 1.0f / scale, (float)zp, (float)qmin, (float)qmax, zp, qmin, qmax};
}

/* Ranges up to 2^24 wide (everything but qint32) compute exactly in float: q - zp is an
 * exact float and its product with scale rounds once, as PyTorch's double product then
 * float store does. Wider ranges take the double path of fq_one_wide. */
static bool range_is_narrow(int32_t qmin, int32_t qmax)
{
    return qmin >= -(1 << 24) && qmax <= (1 << 24);
}

/* qf = zp + RNE(x * inv), in float as PyTorch's int + float. */
static inline float fq_qf(float x, float inv, float zp) { return zp + rne(x * inv); }

/* clamp((int64) qf, lo, hi) as a float, with x86's conversion: NaN, +inf and values
 * >= 2^63 become INT64_MIN, i.e. lo. Selects only, so that it vectorizes. */
static inline float fq_clamp(float qf, float lo, float hi)
{
    float above = qf < 0x1p63f ? hi : lo;
    float q = qf > hi ? above : qf;
    return qf >= lo ? q : lo;
}

static inline float fq_mask(float qf, float lo, float hi)
{
    return (float)((qf >= lo) & (qf <= hi));
}

/* (int64_t) of a float on x86: INT64_MIN when it does not fit (or is NaN). */
static inline int64_t to_int64_x86(float v)
{
    return v >= -0x1p63f && v < 0x1p63f ? (int64_t)v : INT64_MIN;
}

static inline float fq_one_wide(float x, const fq_params *p)
{
    double q = (double)to_int64_x86(fq_qf(x, p->inv, p->zp));
    q = fmin(fmax(q, (double)p->qmin), (double)p->qmax);
    return (float)((q - (double)p->izp) * (double)p->scale);
}

static inline bool fq_in_range_wide(float x, const fq_params *p)
{
    int64_t q = to_int64_x86(fq_qf(x, p->inv, p->zp));
    return p->qmin <= q && q <= p->qmax;
}

/* ---- AVX-512 kernels of the narrow range ---------------------------------------------
 * The same float operations as fq_span / fq_span_grad below, sixteen lanes at a time,
 * so the outputs are bit for bit the scalar ones: vrndscaleps in round-to-nearest-even
 * is rne(), the masked moves are fq_clamp's selects, the 0/1 mask multiplies dy as in
 * the scalar code (so 0 * inf stays NaN). GCC's own vectorization of the scalar loop
 * is SSE2 only (no round instruction, no blends: ~40 instructions per 4 values), which
 * made fake quant the largest cost of a QAT step after the convolutions. Runtime
 * dispatch: the binary still runs on any x86-64. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FQ_X86 1
#include <immintrin.h>
#define FQ_AVX512 __attribute__((target("avx512f")))
#else
#define FQ_X86 0
#endif

#if FQ_X86
static bool fq_has_avx512(void) { return __builtin_cpu_supports("avx512f"); }

typedef struct fq_vec {
    __m512 inv, zp, lo, hi, scale;
} fq_vec;

FQ_AVX512 static fq_vec fq_vec_of(const fq_params *p)
{
    return (fq_vec){_mm512_set1_ps(p->inv), _mm512_set1_ps(p->zp), _mm512_set1_ps(p->lo),
                    _mm512_set1_ps(p->hi), _mm512_set1_ps(p->scale)};
}

/* fq_qf: zp + rne(x * inv) */
FQ_AVX512 static inline __m512 fq_qf16(__m512 x, const fq_vec *v)
{
    __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(x, v->inv),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm512_add_ps(v->zp, r);
}

/* (fq_clamp(qf) - zp) * scale: above hi -> hi unless >= 2^63 (-> lo); below lo and
 * NaN -> lo. */
FQ_AVX512 static inline __m512 fq_y16(__m512 x, const fq_vec *v)
{
    const __m512 qf = fq_qf16(x, v);
    const __mmask16 ge_lo = _mm512_cmp_ps_mask(qf, v->lo, _CMP_GE_OQ);
    const __mmask16 gt_hi = _mm512_cmp_ps_mask(qf, v->hi, _CMP_GT_OQ);
    const __mmask16 huge = _mm512_cmp_ps_mask(qf, _mm512_set1_ps(0x1p63f), _CMP_GE_OQ);
    __m512 q = _mm512_mask_mov_ps(qf, gt_hi, v->hi);
    q = _mm512_mask_mov_ps(q, huge, v->lo);
    q = _mm512_mask_mov_ps(v->lo, ge_lo, q);
    return _mm512_mul_ps(_mm512_sub_ps(q, v->zp), v->scale);
}

/* fq_mask: 1 where lo <= qf <= hi, else 0 */
FQ_AVX512 static inline __m512 fq_mask16(__m512 x, const fq_vec *v)
{
    const __m512 qf = fq_qf16(x, v);
    const __mmask16 in = _mm512_cmp_ps_mask(qf, v->lo, _CMP_GE_OQ) &
                         _mm512_cmp_ps_mask(qf, v->hi, _CMP_LE_OQ);
    return _mm512_maskz_mov_ps(in, _mm512_set1_ps(1.0f));
}

static __mmask16 fq_tail_mask(int64_t left) { return (__mmask16)((1u << left) - 1u); }

FQ_AVX512 static void fq_span_avx512(const float *x, float *y, int64_t n, const fq_params *p)
{
    const fq_vec v = fq_vec_of(p);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, fq_y16(_mm512_loadu_ps(x + i), &v));
    if (i < n) {
        const __mmask16 m = fq_tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, fq_y16(_mm512_maskz_loadu_ps(m, x + i), &v));
    }
}

FQ_AVX512 static void fq_span_grad_avx512(const float *x, const float *dy, float *dx, int64_t n,
                                          const fq_params *p, bool fresh)
{
    const fq_vec v = fq_vec_of(p);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 g =
            _mm512_mul_ps(_mm512_loadu_ps(dy + i), fq_mask16(_mm512_loadu_ps(x + i), &v));
        _mm512_storeu_ps(dx + i, fresh ? g : _mm512_add_ps(_mm512_loadu_ps(dx + i), g));
    }
    if (i < n) {
        const __mmask16 m = fq_tail_mask(n - i);
        __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dy + i),
                                 fq_mask16(_mm512_maskz_loadu_ps(m, x + i), &v));
        _mm512_mask_storeu_ps(dx + i, m,
                              fresh ? g : _mm512_add_ps(_mm512_maskz_loadu_ps(m, dx + i), g));
    }
}
#endif

static void fq_span(const float *restrict x, float *restrict y, int64_t n, const fq_params *p)
{
#if FQ_X86
    if (range_is_narrow(p->qmin, p->qmax) && fq_has_avx512()) {
        fq_span_avx512(x, y, n, p);
        return;
    }
#endif
    if (!range_is_narrow(p->qmin, p->qmax)) {
        for (int64_t i = 0; i < n; i++)
            y[i] = fq_one_wide(x[i], p);
        return;
    }
    const float inv = p->inv, zp = p->zp, lo = p->lo, hi = p->hi, scale = p->scale;
    for (int64_t i = 0; i < n; i++)
        y[i] = (fq_clamp(fq_qf(x[i], inv, zp), lo, hi) - zp) * scale;
}

/* dx += dy * mask: a bool mask times dy, as PyTorch's backward (0 * inf is NaN);
 * dx = dy * mask into a fresh gradient (ag_grad_write). */
static void fq_span_grad(const float *restrict x, const float *restrict dy, float *restrict dx,
                         int64_t n, const fq_params *p, bool fresh)
{
#if FQ_X86
    if (range_is_narrow(p->qmin, p->qmax) && fq_has_avx512()) {
        fq_span_grad_avx512(x, dy, dx, n, p, fresh);
        return;
    }
#endif
    if (!range_is_narrow(p->qmin, p->qmax)) {
        for (int64_t i = 0; i < n; i++) {
            float g = dy[i] * (float)fq_in_range_wide(x[i], p);
            dx[i] = fresh ? g : dx[i] + g;
        }
        return;
    }
    const float inv = p->inv, zp = p->zp, lo = p->lo, hi = p->hi;
    for (int64_t i = 0; i < n; i++) {
        float g = dy[i] * fq_mask(fq_qf(x[i], inv, zp), lo, hi);
        dx[i] = fresh ? g : dx[i] + g;
    }
}

enum { FQ_CHUNK = 16384, FQ_PARALLEL_MIN = 65536 };

/* ---- per-tensor op ------------------------------------------------------------------ */

static ag_status check_range(const char *op, int32_t zp, int32_t qmin, int32_t qmax)
{
    if (qmin > qmax)
        return ag_error(AG_ERR_ARG, "%s: quant_min %d should be less than or equal to "
                        "quant_max %d", op, (int)qmin, (int)qmax);
    if (zp < qmin || zp > qmax)
        return ag_error(AG_ERR_ARG, "%s: zero_point %d must be between quant_min %d and "
                        "quant_max %d", op, (int)zp, (int)qmin, (int)qmax);
    return AG_OK;
}

static ag_status check_f32(const char *op, const ag_tensor *x)
{
    if (x->dtype != AG_F32)
        return ag_error(AG_ERR_ARG, "%s: input must be float32, got %s", op,
                        ag_dtype_name(x->dtype));
    return AG_OK;
}

static void fq_tensor_backward(ag_ctx *ctx, ag_node *n)
{
    bool fresh;
    float *dx = ag_grad_write(ctx, n->src[0], &fresh);
    if (!dx)
        return;
    const fq_params p = fq_params_make(n->fp[0], (int32_t)n->ip[0], (int32_t)n->ip[1],
                                       (int32_t)n->ip[2]);
    const float *x = n->src[0]->data, *dy = n->out->grad;
    const int64_t total = n->out->numel;
#pragma omp parallel for if (total > FQ_PARALLEL_MIN) schedule(static)
    for (int64_t s = 0; s < total; s += FQ_CHUNK) {
        int64_t len = total - s < FQ_CHUNK ? total - s : FQ_CHUNK;
        fq_span_grad(x + s, dy + s, dx + s, len, &p, fresh);
    }
}

ag_tensor *qat_fake_quantize_per_tensor(ag_ctx *ctx, ag_tensor *x, float scale,
                                        int32_t zero_point, int32_t qmin, int32_t qmax)
{
    static const char op[] = "fake_quantize_per_tensor_affine";
    if (!x)
        return NULL;
    if (check_f32(op, x) != AG_OK || check_range(op, zero_point, qmin, qmax) != AG_OK)
        return NULL;
    ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape);
    if (!y)
        return NULL;
    const fq_params p = fq_params_make(scale, zero_point, qmin, qmax);
    const int64_t total = x->numel;
#pragma omp parallel for if (total > FQ_PARALLEL_MIN) schedule(static)
    for (int64_t s = 0; s < total; s += FQ_CHUNK) {
        int64_t len = total - s < FQ_CHUNK ? total - s : FQ_CHUNK;
        fq_span(x->data + s, y->data + s, len, &p);
    }
    ag_node *n = ag_op_record(ctx, AG_OP_CUSTOM, y, (ag_tensor *[]){x}, 1);
    if (n && ag_op_recorded(n, y)) {
        n->custom_backward = fq_tensor_backward;
        n->fp[0] = scale;
        n->ip[0] = zero_point;
        n->ip[1] = qmin;
        n->ip[2] = qmax;
    }
    return ag_op_recorded(n, y);
}

/* ---- per-channel op ----------------------------------------------------------------- */

/* x as (outer, C, inner) around `axis`; node ip[] = {outer, C, inner, qmin, qmax}.
 * Forward into y, or backward from dy into dx (written if fresh, else added to). */
static void fq_channel_rows(const float *x, float *y, const float *dy, float *dx, bool fresh,
                            const float *scale, const int32_t *zp, const int64_t dims[3],
                            int32_t qmin, int32_t qmax)
{
    const int64_t rows = dims[0] * dims[1], inner = dims[2];
#pragma omp parallel for if (rows * inner > FQ_PARALLEL_MIN && rows > 1) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t c = r % dims[1];
        const fq_params p = fq_params_make(scale[c], zp[c], qmin, qmax);
        if (y)
            fq_span(x + r * inner, y + r * inner, inner, &p);
        else
            fq_span_grad(x + r * inner, dy + r * inner, dx + r * inner, inner, &p, fresh);
    }
}

typedef struct fq_channel_saved {
    float *scale;     // (C)
    int32_t *zp;      // (C)
} fq_channel_saved;

static void fq_channel_backward(ag_ctx *ctx, ag_node *n)
{
    bool fresh;
    float *dx = ag_grad_write(ctx, n->src[0], &fresh);
    if (!dx)
        return;
    const fq_channel_saved *sv = n->saved;
    fq_channel_rows(n->src[0]->data, NULL, n->out->grad, dx, fresh, sv->scale, sv->zp, n->ip,
                    (int32_t)n->ip[3], (int32_t)n->ip[4]);
}

/* A copy of the per-channel parameters for the backward (the caller's arrays need not
 * outlive the step). NULL on OOM. */
static fq_channel_saved *save_channel_params(ag_ctx *ctx, const float *scale,
                                             const int32_t *zp, int64_t channels)
{
    fq_channel_saved *sv = ag_ctx_alloc(ctx, sizeof *sv);
    if (!sv)
        return NULL;
    sv->scale = ag_ctx_alloc(ctx, (size_t)channels * sizeof *sv->scale);
    sv->zp = ag_ctx_alloc(ctx, (size_t)channels * sizeof *sv->zp);
    if (!sv->scale || !sv->zp)
        return NULL;
    memcpy(sv->scale, scale, (size_t)channels * sizeof *scale);
    memcpy(sv->zp, zp, (size_t)channels * sizeof *zp);
    return sv;
}

ag_tensor *qat_fake_quantize_per_channel(ag_ctx *ctx, ag_tensor *x, const float *scale,
                                         const int32_t *zero_point, int32_t axis,
                                         int32_t qmin, int32_t qmax)
{
    static const char op[] = "fake_quantize_per_channel_affine";
    if (!x)
        return NULL;
    if (check_f32(op, x) != AG_OK)
        return NULL;
    if (axis < 0 || axis >= x->ndim) {
        char s[AG_SHAPE_STR_MAX];
        ag_error(AG_ERR_SHAPE, "%s: axis %d must be between 0 and the number of dimensions of "
                 "input %s", op, (int)axis, ag_shape_str(x, s, sizeof s));
        return NULL;
    }
    const int64_t dims[3] = {ag_shape_numel(axis, x->shape), x->shape[axis],
                             ag_shape_numel(x->ndim - axis - 1, x->shape + axis + 1)};
    for (int64_t c = 0; c < dims[1]; c++)
        if (check_range(op, zero_point[c], qmin, qmax) != AG_OK)
            return NULL;
    ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape);
    if (!y)
        return NULL;
    fq_channel_rows(x->data, y->data, NULL, NULL, false, scale, zero_point, dims, qmin, qmax);
    fq_channel_saved *sv = NULL;
    if (ag_op_needs_record(ctx, (ag_tensor *[]){x}, 1)) {
        sv = save_channel_params(ctx, scale, zero_point, dims[1]);
        if (!sv)
            return NULL;
    }
    ag_node *n = ag_op_record(ctx, AG_OP_CUSTOM, y, (ag_tensor *[]){x}, 1);
    if (n && ag_op_recorded(n, y)) {
        n->custom_backward = fq_channel_backward;
        n->saved = sv;
        memcpy(n->ip, dims, sizeof dims);
        n->ip[3] = qmin;
        n->ip[4] = qmax;
    }
    return ag_op_recorded(n, y);
}

/* ---- the modules ------------------------------------------------------------------- */

typedef struct qat_fq {
    nn_module base;
    qat_fq_cfg cfg;  /* cfg.obs is what the observer got (custom range filled in) */
    int32_t qmin, qmax;
    bool per_channel, symmetric;
    /* Borrowed from base.params / base.buffers. */
    ag_tensor *fake_quant_enabled, *observer_enabled; // (1) uint8; int64 when fused
    ag_tensor *scale;      // (1) -> (C) buffer, resizable; learnable: parameter
    ag_tensor *zero_point; // (1) -> (C) int32 buffer; learnable: float parameter
    ag_tensor *static_enabled, *learning_enabled;    // (1) uint8, learnable only
    ag_tensor *eps;                                   // (1) learnable only
    /* qat_fake_quant_give_range: the next input's min and max, if it is x. */
    struct {
        const ag_tensor *x;
        const float *data;
        float lo, hi;
    } given;
} qat_fq;

static ag_tensor *fq_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x);

static const nn_module_vtbl fq_standard_vt = {"FakeQuantize", fq_forward, NULL, NULL};
static const nn_module_vtbl fq_fixed_vt = {"FixedQParamsFakeQuantize", fq_forward, NULL, NULL};
static const nn_module_vtbl fq_fused_vt = {"FusedMovingAvgObsFakeQuantize", fq_forward, NULL,
                                           NULL};
static const nn_module_vtbl fq_learnable_vt = {"_LearnableFakeQuantize", fq_forward, NULL,
                                               NULL};

bool qat_is_fake_quant(const nn_module *m)
{
    return m && (m->vt == &fq_standard_vt || m->vt == &fq_fixed_vt || m->vt == &fq_fused_vt ||
                 m->vt == &fq_learnable_vt);
}

static qat_fq *as_fq(const nn_module *m) { return qat_is_fake_quant(m) ? (qat_fq *)m : NULL; }

const qat_fq_cfg *qat_fake_quant_config(const nn_module *fq)
{
    qat_fq *f = as_fq(fq);
    return f ? &f->cfg : NULL;
}

/* The observer is the module's only child, "activation_post_process". */
static nn_module *fq_observer(qat_fq *f) { return f->base.children[0].m; }

/* FakeQuantize tests `flag[0] == 1`; the fused op tests `flag.item() != 0`. */
static bool flag_on(const ag_tensor *t)
{
    if (t->dtype == AG_I64)
        return ((const int64_t *)t->data)[0] != 0;
    return ((const uint8_t *)t->data)[0] == 1;
}

static void flag_set(ag_tensor *t, bool on)
{
    if (t->dtype == AG_I64)
        ((int64_t *)t->data)[0] = on;
    else
        ((uint8_t *)t->data)[0] = on;
}

/* ---- construction ---- */

static ag_status add_flag(qat_fq *f, const char *name, ag_dtype dtype, bool on, ag_tensor **out)
{
    ag_tensor *t = ag_tensor_new_dtype(dtype, 1, (const int64_t[]){1});
    if (!t)
        return ag_last_status();
    flag_set(t, on);
    *out = t;
    return nn_module_add_buffer(&f->base, name, t);
}

/* FakeQuantize's scale / zero_point buffers: (1), resized to (C) by a per-channel
 * observer's first result or by a loaded state (PyTorch's _load_from_state_dict). */
static ag_status add_qparam_buffers(qat_fq *f, float scale, int32_t zp)
{
    ag_tensor *s = ag_tensor_new(1, (const int64_t[]){1}, false);
    if (!s)
        return ag_last_status();
    s->data[0] = scale;
    s->flags |= AG_F_RESIZABLE;
    f->scale = s;
    ag_status st = nn_module_add_buffer(&f->base, "scale", s);
    ag_tensor *z = st == AG_OK ? ag_tensor_new_dtype(AG_I32, 1, (const int64_t[]){1}) : NULL;
    if (!z)
        return st == AG_OK ? ag_last_status() : st;
    ((int32_t *)z->data)[0] = zp;
    z->flags |= AG_F_RESIZABLE;
    f->zero_point = z;
    return nn_module_add_buffer(&f->base, "zero_point", z);
}

/* _LearnableFakeQuantize: Parameters scale = 1, zero_point = 0 of shape (1) or
 * (channel_len), then its five buffers. */
static ag_status add_learnable_state(qat_fq *f)
{
    int64_t len = f->per_channel ? f->cfg.channel_len : 1;
    ag_tensor *s = ag_param_new(1, (const int64_t[]){len});
    if (!s)
        return ag_last_status();
    for (int64_t i = 0; i < len; i++)
        s->data[i] = 1.0f;
    f->scale = s;
    ag_status st = nn_module_add_param(&f->base, "scale", s);
    ag_tensor *z = st == AG_OK ? ag_param_new(1, (const int64_t[]){len}) : NULL;
    if (!z)
        return st == AG_OK ? ag_last_status() : st;
    f->zero_point = z;
    st = nn_module_add_param(&f->base, "zero_point", z);
    if (st == AG_OK)
        st = add_flag(f, "fake_quant_enabled", AG_U8, true, &f->fake_quant_enabled);
    if (st == AG_OK)
        st = add_flag(f, "observer_enabled", AG_U8, true, &f->observer_enabled);
    if (st == AG_OK)
        st = add_flag(f, "static_enabled", AG_U8, true, &f->static_enabled);
    if (st == AG_OK)
        st = add_flag(f, "learning_enabled", AG_U8, false, &f->learning_enabled);
    if (st != AG_OK)
        return st;
    ag_tensor *eps = ag_tensor_new(1, (const int64_t[]){1}, false);
    if (!eps)
        return ag_last_status();
    eps->data[0] = 0x1p-23f; /* torch.finfo(torch.float32).eps, whatever the observer's */
    f->eps = eps;
    return nn_module_add_buffer(&f->base, "eps", eps);
}

static ag_status add_state(qat_fq *f)
{
    if (f->cfg.kind == QAT_FQ_LEARNABLE)
        return add_learnable_state(f);
    ag_dtype flag_dtype = f->cfg.kind == QAT_FQ_FUSED ? AG_I64 : AG_U8;
    ag_status st = add_flag(f, "fake_quant_enabled", flag_dtype, true, &f->fake_quant_enabled);
    if (st == AG_OK)
        st = add_flag(f, "observer_enabled", flag_dtype, true, &f->observer_enabled);
    if (st != AG_OK)
        return st;
    const qat_observer_cfg *oc = &f->cfg.obs;
    if (oc->kind == QAT_OBS_FIXED_QPARAMS)
        return add_qparam_buffers(f, oc->fixed_scale, oc->fixed_zero_point);
    return add_qparam_buffers(f, 1.0f, 0);
}

static void dtype_bounds(qat_dtype d, int64_t *lo, int64_t *hi)
{
    *lo = d == QAT_QUINT8 ? 0 : d == QAT_QINT8 ? -128 : INT32_MIN;
    *hi = d == QAT_QUINT8 ? 255 : d == QAT_QINT8 ? 127 : INT32_MAX;
}

/* The observer configuration each kind hands down, with PyTorch's constructor checks:
 * FusedMovingAvgObsFakeQuantize and _LearnableFakeQuantize always pass quant_min /
 * quant_max (default 0 and 255) to their observer, so its range is a custom one. */
static ag_status fq_check_cfg(const qat_fq_cfg *c, qat_observer_cfg *oc, const char *type)
{
    *oc = c->obs;
    if (c->kind == QAT_FQ_FUSED && oc->kind != QAT_OBS_MOVING_AVG_MINMAX &&
        oc->kind != QAT_OBS_MOVING_AVG_PER_CHANNEL_MINMAX)
        return ag_error(AG_ERR_ARG, "%s: the observer must be a MovingAverageMinMaxObserver or "
                        "MovingAveragePerChannelMinMaxObserver", type);
    if (oc->kind == QAT_OBS_PLACEHOLDER || (c->kind != QAT_FQ_STANDARD &&
                                            oc->kind == QAT_OBS_FIXED_QPARAMS))
        return ag_error(AG_ERR_ARG, "%s: observer kind %d gives no quantization parameters "
                        "here", type, (int)oc->kind);
    if (c->kind == QAT_FQ_LEARNABLE && oc->qscheme >= QAT_PER_CHANNEL_AFFINE &&
        c->channel_len <= 0)
        return ag_error(AG_ERR_ARG, "%s: per-channel needs channel_len (the size of ch_axis), "
                        "got %d", type, (int)c->channel_len);
    if (c->kind != QAT_FQ_STANDARD && !oc->has_custom_range) {
        oc->has_custom_range = true;
        oc->quant_min = 0;
        oc->quant_max = 255;
    }
    if (!oc->has_custom_range || oc->kind == QAT_OBS_FIXED_QPARAMS)
        return AG_OK;
    int64_t lo, hi;
    dtype_bounds(oc->dtype, &lo, &hi);
    if (oc->quant_min > oc->quant_max || (c->kind == QAT_FQ_LEARNABLE &&
                                          oc->quant_min == oc->quant_max))
        return ag_error(AG_ERR_ARG, "%s: quant_min %d must be less than quant_max %d", type,
                        (int)oc->quant_min, (int)oc->quant_max);
    if (oc->quant_min < lo || oc->quant_max > hi)
        return ag_error(AG_ERR_ARG, "%s: quant_min %d .. quant_max %d is out of the dtype's "
                        "bounds %" PRId64 " .. %" PRId64, type, (int)oc->quant_min,
                        (int)oc->quant_max, lo, hi);
    return AG_OK;
}

static const nn_module_vtbl *fq_vtable(const qat_fq_cfg *c)
{
    switch (c->kind) {
    case QAT_FQ_FUSED: return &fq_fused_vt;
    case QAT_FQ_LEARNABLE: return &fq_learnable_vt;
    case QAT_FQ_STANDARD:
    default:
        return c->obs.kind == QAT_OBS_FIXED_QPARAMS ? &fq_fixed_vt : &fq_standard_vt;
    }
}

nn_module *qat_fake_quant_new(const qat_fq_cfg *c)
{
    if ((unsigned)c->kind > QAT_FQ_LEARNABLE) {
        ag_error(AG_ERR_ARG, "qat_fake_quant_new: unknown kind %d", (int)c->kind);
        return NULL;
    }
    const nn_module_vtbl *vt = fq_vtable(c);
    qat_observer_cfg oc;
    if (fq_check_cfg(c, &oc, vt->type) != AG_OK)
        return NULL;
    nn_module *obs = qat_observer_new(&oc);
    if (!obs)
        return NULL;
    qat_fq *f = calloc(1, sizeof *f);
    if (!f) {
        nn_module_free(obs);
        ag_error(AG_ERR_NOMEM, "%s: out of memory", vt->type);
        return NULL;
    }
    nn_module_init(&f->base, vt);
    f->cfg = *c;
    f->cfg.obs = oc;
    f->per_channel = oc.qscheme == QAT_PER_CHANNEL_AFFINE ||
                     oc.qscheme == QAT_PER_CHANNEL_SYMMETRIC;
    f->symmetric = oc.qscheme == QAT_PER_TENSOR_SYMMETRIC ||
                   oc.qscheme == QAT_PER_CHANNEL_SYMMETRIC;
    /* The learnable module keeps its own quant_min/max (the observer's may be halved by
     * reduce_range); the others use their observer's. */
    ag_status st = AG_OK;
    if (c->kind == QAT_FQ_LEARNABLE) {
        f->qmin = oc.quant_min;
        f->qmax = oc.quant_max;
    } else {
        st = qat_observer_cfg_range(&oc, &f->qmin, &f->qmax);
    }
    if (st == AG_OK)
        st = add_state(f);
    if (st == AG_OK)
        st = nn_module_add_child(&f->base, "activation_post_process", obs);
    else
        nn_module_free(obs);
    if (st != AG_OK) {
        nn_module_free(&f->base);
        return NULL;
    }
    return &f->base;
}

/* ---- FakeQuantize.forward ---- */

/* How many parameters the observer will return (its per-channel statistics, or 1). */
static int32_t observer_count(nn_module *obs)
{
    ag_tensor *mn = nn_module_buffer(obs, "min_val");
    return mn && mn->numel > 1 ? (int32_t)mn->numel : 1;
}

/* scale / zero_point buffers <- the observer's calculate_qparams (resized if needed). */
static ag_status fq_refresh_qparams(qat_fq *f, ag_ctx *ctx)
{
    nn_module *obs = fq_observer(f);
    int32_t max_n = observer_count(obs), n = 0;
    float *scale = ag_ctx_alloc(ctx, (size_t)max_n * sizeof *scale);
    int32_t *zp = ag_ctx_alloc(ctx, (size_t)max_n * sizeof *zp);
    if (!scale || !zp)
        return ag_last_status();
    ag_status st = qat_observer_qparams(obs, scale, zp, max_n, &n, NULL);
    if (st == AG_OK && f->scale->numel != n)
        st = ag_tensor_resize(f->scale, 1, (const int64_t[]){n});
    if (st == AG_OK && f->zero_point->numel != n)
        st = ag_tensor_resize(f->zero_point, 1, (const int64_t[]){n});
    if (st != AG_OK)
        return st;
    memcpy(f->scale->data, scale, (size_t)n * sizeof *scale);
    memcpy(f->zero_point->data, zp, (size_t)n * sizeof *zp);
    return AG_OK;
}

static ag_tensor *fq_apply(qat_fq *f, ag_ctx *ctx, ag_tensor *x)
{
    const int32_t *zp = (const int32_t *)f->zero_point->data;
    if (!f->per_channel)
        return qat_fake_quantize_per_tensor(ctx, x, f->scale->data[0], zp[0], f->qmin, f->qmax);
    int32_t axis = f->cfg.obs.ch_axis;
    if (axis >= 0 && axis < x->ndim && f->scale->numel != x->shape[axis]) {
        char s[AG_SHAPE_STR_MAX];
        ag_error(AG_ERR_SHAPE, "%s: %" PRId64 " scales for input %s on axis %d (observe it "
                 "first, or load a state)", f->base.vt->type, f->scale->numel,
                 ag_shape_str(x, s, sizeof s), (int)axis);
        return NULL;
    }
    return qat_fake_quantize_per_channel(ctx, x, f->scale->data, zp, axis, f->qmin, f->qmax);
}

static ag_tensor *fq_standard_forward(qat_fq *f, ag_ctx *ctx, ag_tensor *x)
{
    /* FixedQParamsFakeQuantize's scale is its observer's tensor in PyTorch: always in step. */
    bool refresh = flag_on(f->observer_enabled) || f->cfg.obs.kind == QAT_OBS_FIXED_QPARAMS;
    if (flag_on(f->observer_enabled) && qat_observer_observe(fq_observer(f), x) != AG_OK)
        return NULL;
    if (refresh && fq_refresh_qparams(f, ctx) != AG_OK)
        return NULL;
    return flag_on(f->fake_quant_enabled) ? fq_apply(f, ctx, x) : x;
}

/* ---- FusedMovingAvgObsFakeQuantize.forward: fused_moving_avg_obs_fake_quant ---- */

/* calculate_moving_average: a running value that is +-inf takes the batch value. */
static float fused_ema(float running, float batch, float c)
{
    return isinf(running) ? batch : running + c * (batch - running);
}

/* The per-tensor min and max of x: the range given for it, else computed. */
static void fused_minmax(qat_fq *f, const ag_tensor *x, float *lo, float *hi)
{
    if (f->given.x == x && f->given.data == x->data) {
        *lo = f->given.lo;
        *hi = f->given.hi;
        return;
    }
    qat_aminmax(x->data, x->numel, lo, hi);
}

static ag_status fused_observe(qat_fq *f, const ag_tensor *x, ag_tensor *mn, ag_tensor *mx)
{
    const float c = f->cfg.obs.averaging_constant;
    if (!f->per_channel) {
        float lo, hi;
        fused_minmax(f, x, &lo, &hi);
        mn->data[0] = fused_ema(mn->data[0], lo, c);
        mx->data[0] = fused_ema(mx->data[0], hi, c);
        return AG_OK;
    }
    if (f->cfg.obs.ch_axis != 0)
        return ag_error(AG_ERR_UNSUPPORTED, "%s: per-channel observation is only supported on "
                        "axis 0, got ch_axis %d", f->base.vt->type, (int)f->cfg.obs.ch_axis);
    const int64_t channels = x->shape[0], len = x->numel / channels;
#pragma omp parallel for if (x->numel > FQ_PARALLEL_MIN && channels > 1) schedule(static)
    for (int64_t ch = 0; ch < channels; ch++) {
        float lo, hi;
        qat_aminmax(x->data + ch * len, len, &lo, &hi);
        mn->data[ch] = fused_ema(mn->data[ch], lo, c);
        mx->data[ch] = fused_ema(mx->data[ch], hi, c);
    }
    return AG_OK;
}

/* Per-channel statistics of shape (0) become (C) of +-inf, scale/zero_point (C). */
static ag_status fused_size_channels(qat_fq *f, const ag_tensor *x, ag_tensor *mn,
                                     ag_tensor *mx)
{
    int32_t axis = f->cfg.obs.ch_axis;
    if (axis < 0 || axis >= x->ndim) {
        char s[AG_SHAPE_STR_MAX];
        return ag_error(AG_ERR_SHAPE, "%s: ch_axis %d must be < the input's dims (%s)",
                        f->base.vt->type, (int)axis, ag_shape_str(x, s, sizeof s));
    }
    const int64_t channels = x->shape[axis];
    if (mn->numel == 0) {
        const int64_t shape[1] = {channels};
        ag_status st = ag_tensor_resize(mn, 1, shape);
        if (st == AG_OK)
            st = ag_tensor_resize(mx, 1, shape);
        if (st == AG_OK)
            st = ag_tensor_resize(f->scale, 1, shape);
        if (st == AG_OK)
            st = ag_tensor_resize(f->zero_point, 1, shape);
        if (st != AG_OK)
            return st;
        for (int64_t c = 0; c < channels; c++) {
            mn->data[c] = INFINITY;
            mx->data[c] = -INFINITY;
        }
    }
    if (mn->numel != channels || mx->numel != channels || f->scale->numel != channels ||
        f->zero_point->numel != channels)
        return ag_error(AG_ERR_SHAPE, "%s: input has %" PRId64 " channels on axis %d, the "
                        "state holds %" PRId64, f->base.vt->type, channels, (int)axis, mn->numel);
    return AG_OK;
}

/* choose_qparams_fake_quant: ChooseQuantizationParams per tensor / channel, stored in
 * the scale and zero_point buffers, preserve_sparsity = symmetric qscheme. */
static ag_status fused_choose(qat_fq *f, const ag_tensor *mn, const ag_tensor *mx)
{
    int32_t *zp = (int32_t *)f->zero_point->data;
    for (int64_t i = 0; i < mn->numel; i++) {
        if (!(mn->data[i] <= mx->data[i]))
            return ag_error(AG_ERR_STATE, "%s: in ChooseQuantizationParams, min %g should be "
                            "less than or equal to max %g (observe before fake-quantizing)",
                            f->base.vt->type, (double)mn->data[i], (double)mx->data[i]);
        qat_choose_qparams(mn->data[i], mx->data[i], f->qmin, f->qmax, f->symmetric,
                           &f->scale->data[i], &zp[i]);
    }
    return AG_OK;
}

static ag_tensor *fq_fused_forward(qat_fq *f, ag_ctx *ctx, ag_tensor *x)
{
    nn_module *obs = fq_observer(f);
    ag_tensor *mn = nn_module_buffer(obs, "min_val"), *mx = nn_module_buffer(obs, "max_val");
    if (f->per_channel && fused_size_channels(f, x, mn, mx) != AG_OK)
        return NULL;
    if (flag_on(f->observer_enabled)) {
        if (x->numel == 0) {
            char s[AG_SHAPE_STR_MAX];
            ag_error(AG_ERR_SHAPE, "%s: cannot observe an empty input %s", f->base.vt->type,
                     ag_shape_str(x, s, sizeof s));
            return NULL;
        }
        if (fused_observe(f, x, mn, mx) != AG_OK)
            return NULL;
    }
    if (!flag_on(f->fake_quant_enabled))
        return x; /* PyTorch returns a clone with an all-ones mask: the identity */
    if (fused_choose(f, mn, mx) != AG_OK)
        return NULL;
    return fq_apply(f, ctx, x);
}

/* ---- _LearnableFakeQuantize.forward ---- */

static float nan_max(float a, float b) { return isnan(a) || a > b ? a : b; }

/* static_enabled: the observer's qparams are copied into the parameters (broadcast
 * from one value if the observer is per-tensor). */
static ag_status learnable_static(qat_fq *f, ag_ctx *ctx, ag_tensor *x)
{
    nn_module *obs = fq_observer(f);
    ag_status st = qat_observer_observe(obs, x);
    int32_t max_n = observer_count(obs), n = 0;
    float *scale = ag_ctx_alloc(ctx, (size_t)max_n * sizeof *scale);
    int32_t *zp = ag_ctx_alloc(ctx, (size_t)max_n * sizeof *zp);
    if (st == AG_OK && (!scale || !zp))
        st = ag_last_status();
    if (st == AG_OK)
        st = qat_observer_qparams(obs, scale, zp, max_n, &n, NULL);
    if (st != AG_OK)
        return st;
    if (n != 1 && n != f->scale->numel)
        return ag_error(AG_ERR_SHAPE, "%s: the observer gives %d parameters for a scale of %"
                        PRId64, f->base.vt->type, (int)n, f->scale->numel);
    for (int64_t i = 0; i < f->scale->numel; i++) {
        f->scale->data[i] = scale[n == 1 ? 0 : i];
        f->zero_point->data[i] = (float)zp[n == 1 ? 0 : i];
    }
    return AG_OK;
}

static ag_tensor *fq_learnable_forward(qat_fq *f, ag_ctx *ctx, ag_tensor *x)
{
    if (flag_on(f->static_enabled)) {
        if (learnable_static(f, ctx, x) != AG_OK)
            return NULL;
    } else {
        for (int64_t i = 0; i < f->scale->numel; i++) /* scale.data.clamp_(min=eps) */
            f->scale->data[i] = nan_max(f->scale->data[i], f->eps->data[0]);
    }
    if (!flag_on(f->fake_quant_enabled))
        return x;
    if (f->symmetric)
        memset(f->zero_point->data, 0, (size_t)f->zero_point->numel * sizeof(float));
    /* grad_factor = 1.0 / (X.numel() * quant_max) ** 0.5, a Python float. */
    double gf = f->cfg.use_grad_scaling ? 1.0 / pow((double)x->numel * f->qmax, 0.5) : 1.0;
    if (f->per_channel)
        return qat_fake_quantize_learnable_per_channel(ctx, x, f->scale, f->zero_point,
                                                       f->cfg.obs.ch_axis, f->qmin, f->qmax,
                                                       (float)gf);
    return qat_fake_quantize_learnable_per_tensor(ctx, x, f->scale, f->zero_point, f->qmin,
                                                  f->qmax, (float)gf);
}

static ag_tensor *fq_forward_kind(qat_fq *f, ag_ctx *ctx, ag_tensor *x)
{
    if (!x)
        return NULL;
    if (x->dtype != AG_F32) {
        ag_error(AG_ERR_ARG, "%s: input must be float32, got %s", f->base.vt->type,
                 ag_dtype_name(x->dtype));
        return NULL;
    }
    switch (f->cfg.kind) {
    case QAT_FQ_FUSED: return fq_fused_forward(f, ctx, x);
    case QAT_FQ_LEARNABLE: return fq_learnable_forward(f, ctx, x);
    case QAT_FQ_STANDARD:
    default: return fq_standard_forward(f, ctx, x);
    }
}

static ag_tensor *fq_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    qat_fq *f = (qat_fq *)m;
    ag_tensor *y = fq_forward_kind(f, ctx, x);
    f->given.x = NULL; /* a given range serves one forward */
    return y;
}

/* ---- parameters, range, toggles ---- */

static float rne_clamp(float v, float lo, float hi)
{
    float r = rne(v);
    return r < lo ? lo : r > hi ? hi : r;
}

ag_status qat_fake_quant_qparams(nn_module *fq, float *scale, int32_t *zero_point,
                                 int32_t max_n, int32_t *n_out)
{
    qat_fq *f = as_fq(fq);
    if (!f)
        return ag_error(AG_ERR_ARG, "qat_fake_quant_qparams: %s is not a fake quant",
                        fq ? nn_module_type(fq) : "NULL");
    const int64_t n = f->scale->numel;
    if (n > max_n)
        return ag_error(AG_ERR_ARG, "%s: %" PRId64 " parameters do not fit in %d",
                        fq->vt->type, n, (int)max_n);
    for (int64_t i = 0; i < n; i++) {
        if (f->cfg.kind == QAT_FQ_LEARNABLE) {
            /* calculate_qparams: scale.data.clamp_(min=eps) (in place, as PyTorch), and
             * zero_point.round().clamp(quant_min, quant_max). */
            f->scale->data[i] = nan_max(f->scale->data[i], f->eps->data[0]);
            zero_point[i] = (int32_t)rne_clamp(f->zero_point->data[i], (float)f->qmin,
                                               (float)f->qmax);
        } else {
            zero_point[i] = ((const int32_t *)f->zero_point->data)[i];
        }
        scale[i] = f->scale->data[i];
    }
    *n_out = (int32_t)n;
    return AG_OK;
}

void qat_fake_quant_range(const nn_module *fq, int32_t *qmin, int32_t *qmax)
{
    const qat_fq *f = as_fq(fq);
    AG_ASSERT(f);
    *qmin = f->qmin;
    *qmax = f->qmax;
}

bool qat_fake_quant_takes_range(const nn_module *fq)
{
    const qat_fq *f = as_fq(fq);
    return f && f->cfg.kind == QAT_FQ_FUSED && !f->per_channel && flag_on(f->observer_enabled);
}

void qat_fake_quant_give_range(nn_module *fq, const ag_tensor *x, float lo, float hi)
{
    qat_fq *f = as_fq(fq);
    AG_ASSERT(f && !isnan(lo) && !isnan(hi));
    f->given.x = x;
    f->given.data = x->data;
    f->given.lo = lo;
    f->given.hi = hi;
}

void qat_fake_quant_enable_observer(nn_module *fq, bool on)
{
    qat_fq *f = as_fq(fq);
    if (!f)
        return;
    flag_set(f->cfg.kind == QAT_FQ_LEARNABLE ? f->static_enabled : f->observer_enabled, on);
}

void qat_fake_quant_enable_fake_quant(nn_module *fq, bool on)
{
    qat_fq *f = as_fq(fq);
    if (f)
        flag_set(f->fake_quant_enabled, on);
}

static bool visit_observer(void *ud, const char *path, nn_module *m)
{
    (void)path;
    qat_fake_quant_enable_observer(m, *(const bool *)ud);
    return true;
}

static bool visit_fake_quant(void *ud, const char *path, nn_module *m)
{
    (void)path;
    qat_fake_quant_enable_fake_quant(m, *(const bool *)ud);
    return true;
}

void qat_enable_observer_all(nn_module *root, bool on)
{
    nn_module_walk(root, visit_observer, &on);
}

void qat_enable_fake_quant_all(nn_module *root, bool on)
{
    nn_module_walk(root, visit_fake_quant, &on);
}
