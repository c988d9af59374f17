/* q8_impl.h — the runtime's insides: the model struct, the op table, the integer
 * helpers every kernel shares, the int8 GEMM and the float GEMM of the _f32 ops. Not
 * installed; tests include it.
 *
 * An op (quantized/ops/<name>.c) is a q8_op_def: the names of its int attributes and
 * constants (the file's vocabulary, with ranges), then
 *   check   — at load/finish: inputs' dtypes, qparams and shapes, constants' dtypes and
 *             shapes, the declared output; messages name the node and the field;
 *   prepare — once after validation: pack weights, fold zero points, size scratch;
 *   run     — the loops (TFLite Micro's prepare/eval split): no allocation, no checks
 *             that could have been done before.
 */
#ifndef CQAT_Q8_IMPL_H
#define CQAT_Q8_IMPL_H

#include "quantized/q8.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef enum q8_op {
#define Q8_OP(ENUM, name) Q8_OP_##ENUM,
#include "quantized/q8_ops.def"
#undef Q8_OP
    Q8_OP_COUNT
} q8_op;

enum {
    Q8_MAX_ATTRS = 16,
    Q8_MAX_CONSTS = 6,
    Q8_MAX_NODE_INPUTS = 64, /* cat */
    Q8_MAX_GRAPH_IO = 64,
    Q8_MAX_NAME = 256,       /* bytes of a name or text attribute, NUL included */
    Q8_MAX_TEXT = 4096,
    Q8_MAX_VALUES = 1 << 16,
    Q8_MAX_NODES = 1 << 16,
    Q8_CHUNK_ROWS = 256,     /* GEMM rows per step: scratch does not grow with the batch */
};
/* Bounds that keep every size computation far from overflow. */
#define Q8_MAX_DIM (INT64_C(1) << 24)        /* one dimension */
#define Q8_MAX_ITEM_NUMEL (INT64_C(1) << 28) /* elements of one batch item of a value */
#define Q8_MAX_CONST_BYTES (INT64_C(1) << 30)
#define Q8_MAX_BATCH_BYTES (INT64_C(1) << 40)
/* Elements of one pooling window: 255 * 2^22 * M0 (< 2^31) stays below 2^63. */
#define Q8_MAX_WINDOW (INT64_C(1) << 22)
#define Q8_ROUNDING "half_even"
#define Q8_FORMAT_NAME "cqat-q8"

/* A constant of a node (weights, bias, multipliers...). */
typedef struct q8_tensor {
    q8_dtype dtype;
    int32_t ndim;
    int64_t shape[Q8_MAX_DIMS];
    int64_t numel;
    void *data; /* NULL: absent */
} q8_tensor;

typedef struct q8_value {
    char *name;
    q8_dtype dtype;
    int32_t ndim;
    int64_t shape[Q8_MAX_DIMS]; /* shape[0] == -1: the batch */
    int64_t item_numel;         /* product of shape[1..] */
    bool fused_away;            /* not written by fused runs (q8_model_run): see q8_node */
    float scale;                /* u8/i8 */
    int32_t zero_point;
    int32_t producer;           /* node index; -1 for a graph input */
    size_t offset;              /* into the model's arena (for cap_batch items) */
} q8_value;

typedef struct q8_node {
    q8_op op;
    int32_t index;
    char *name;
    int32_t n_in, n_out;
    int32_t *in, *out;
    int64_t attr[Q8_MAX_ATTRS]; /* indexed like the op's attribute table */
    bool has_attr[Q8_MAX_ATTRS];
    q8_tensor cst[Q8_MAX_CONSTS]; /* indexed like the op's constant table */
    void *prep;                   /* op-private, made by prepare */
    size_t scratch_bytes;         /* set by prepare */
    /* The fused plan of q8_model_run, chosen by prepare: node fused_into computes this
     * node's output itself (conv2d -> max_pool2d 2x2/2), so fused runs skip this node and
     * leave the intermediate value (marked fused_away) unwritten; -1: none.
     * q8_model_run_values runs every node unfused. */
    int32_t fused_into;
} q8_node;

typedef enum q8_gemm_kernel { Q8_GEMM_REFERENCE = 0, Q8_GEMM_AVX2 = 1 } q8_gemm_kernel;

struct q8_model {
    q8_value *values;
    int32_t n_values, cap_values;
    q8_node *nodes;
    int32_t n_nodes, cap_nodes;
    int32_t inputs[Q8_MAX_GRAPH_IO], outputs[Q8_MAX_GRAPH_IO];
    int32_t n_inputs, n_outputs;
    char *source_model, *qconfig;
    q8_gemm_kernel kernel;
    /* run state */
    int64_t cap_batch;  /* the arena holds this many items of every value */
    int64_t batch;      /* of the last successful run; 0 before */
    bool fused;         /* the last run used the fused plan (q8_model_run) */
    uint8_t *arena;
    uint8_t *scratch;     /* scratch_threads blocks of scratch_bytes (64-byte aligned) */
    size_t scratch_bytes; /* per thread: the max over nodes of their scratch_bytes */
    int scratch_threads;
};

typedef struct q8_attr_spec {
    const char *key;
    bool required;
    int64_t def; /* when absent and not required; or one of the two below */
    int64_t lo, hi;
} q8_attr_spec;
/* Defaults that depend on the output value's dtype: its qmin / qmax (the optional
 * clamp_min/clamp_max of quantize, cat and the average pools, absent from older files).
 * The writer leaves such an attribute out when it has that value. */
#define Q8_DEF_OUT_QMIN INT64_MIN
#define Q8_DEF_OUT_QMAX INT64_MAX

typedef struct q8_const_spec {
    const char *key;
    bool required;
} q8_const_spec;

typedef struct q8_op_def {
    const char *name;
    int32_t min_inputs, max_inputs; /* every op has one output */
    const q8_attr_spec *attrs;
    int32_t n_attrs;
    const q8_const_spec *consts;
    int32_t n_consts;
    q8_status (*check)(const q8_model *m, const q8_node *n);
    q8_status (*prepare)(q8_model *m, q8_node *n); /* may be NULL */
    void (*release)(q8_node *n);                   /* frees n->prep; may be NULL */
    q8_status (*run)(q8_model *m, const q8_node *n, int64_t batch);
} q8_op_def;

#define Q8_OP(ENUM, name) extern const q8_op_def q8_op_##name;
#include "quantized/q8_ops.def"
#undef Q8_OP
extern const q8_op_def *const q8_ops[Q8_OP_COUNT];
/* Q8_OP_COUNT if unknown. */
q8_op q8_op_from_name(const char *name);

/* ---- model plumbing (model.c) ---- */

q8_model *q8_model_alloc(void);
/* Runs every op's check in order after the graph-level checks; then prepare. */
q8_status q8_model_validate(q8_model *m);
q8_status q8_model_prepare(q8_model *m);
/* Input/output counts, attribute defaults and ranges, required constants of one node
 * (whose input and output ids are valid). */
q8_status q8_node_check_fields(const q8_model *m, q8_node *n);
/* The value of an attribute default for node n (resolves Q8_DEF_OUT_QMIN/QMAX). */
int64_t q8_attr_default(const q8_model *m, const q8_node *n, const q8_attr_spec *s);
static inline void *q8_value_data(const q8_model *m, int32_t id)
{
    return m->arena + m->values[id].offset;
}
/* Thread t's scratch block (t < scratch_threads; q8_model_run_values grows the blocks
 * when OpenMP is given more threads than at load). */
static inline uint8_t *q8_scratch(const q8_model *m, int t)
{
    return m->scratch + (size_t)t * m->scratch_bytes;
}
/* Grows the scratch to one block per OpenMP thread. */
q8_status q8_model_scratch_reserve(q8_model *m);
static inline const q8_value *q8_in(const q8_model *m, const q8_node *n, int32_t i)
{
    return &m->values[n->in[i]];
}
static inline const q8_value *q8_out(const q8_model *m, const q8_node *n)
{
    return &m->values[n->out[0]];
}

/* "node 3 (conv2d 'features.0'): <message>" with the status. */
q8_status q8_node_error(const q8_node *n, q8_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* "[N, 3, 28, 28]" (N for -1). */
const char *q8_shape_str(char *buf, size_t size, int32_t ndim, const int64_t *shape);

/* ---- checks shared by the ops (check.c); each names the node and the field ---- */

q8_status q8_check_input_quantized(const q8_model *m, const q8_node *n, int32_t i);
q8_status q8_check_input_dtype(const q8_model *m, const q8_node *n, int32_t i, q8_dtype dt);
q8_status q8_check_input_rank(const q8_model *m, const q8_node *n, int32_t i, int32_t ndim);
q8_status q8_check_output(const q8_model *m, const q8_node *n, q8_dtype dt, int32_t ndim,
                          const int64_t *shape);
/* The output's scale and zero point equal input i's (ops that only move integers). */
q8_status q8_check_same_qparams(const q8_model *m, const q8_node *n, int32_t i);
/* Constant `idx` is present (if required), of dtype `dt` and shape `shape[0..ndim)`. */
q8_status q8_check_const(const q8_node *n, int32_t idx, q8_dtype dt, int32_t ndim,
                         const int64_t *shape);
/* Shift array in range, multiplier in [2^30, 2^31) (or 0 with shift 0), and
 * M0 * 2^-shift within 2^-20 relative of `real`: the scales agree with the integers (a
 * writer may compute M in float; a wrong scale or multiplier is caught). */
q8_status q8_check_multiplier(const q8_node *n, const char *field, int64_t i, int64_t m0,
                              int64_t shift, double real);
/* Bounds inside the dtype's range, lo <= zp <= hi (a clamp range always holds the zero
 * point: relu's lower bound is zp, and calculate_qparams clamps zp into the range). */
q8_status q8_check_clamp(const q8_node *n, int64_t lo, int64_t hi, q8_dtype dt, int32_t zp);
/* The node's clamp_min/clamp_max attributes (indices lo_idx, hi_idx) against the output. */
q8_status q8_check_out_clamp(const q8_model *m, const q8_node *n, int32_t lo_idx, int32_t hi_idx);
/* Pools: input of rank 4 (f32 for the float pools, else u8/i8), padding at most half the
 * (dilated) kernel, a window of at most Q8_MAX_WINDOW elements, an output of at least
 * 1x1 (written to out_hw). */
q8_status q8_check_pool(const q8_model *m, const q8_node *n, const int64_t *kernel,
                        const int64_t *stride, const int64_t *pad, const int64_t *dilation,
                        bool ceil_mode, bool f32, int64_t *out_hw);
/* Weight-scale constant: finite, > 0. */
q8_status q8_check_scales(const q8_node *n, int32_t idx);
/* An f32 constant whose every element is finite (float weights and biases). */
q8_status q8_check_finite(const q8_node *n, int32_t idx);
/* Equal ranks and dimensions (the batch aside) of inputs 0 and 1 (no broadcasting); the
 * message names both shapes. */
q8_status q8_check_same_shapes(const q8_model *m, const q8_node *n);

/* A max_pool2d node with a 2x2 window at stride 2, no padding, no dilation, floor mode. */
bool q8_max_pool_is_2x2s2(const q8_node *n);

/* ---- integer arithmetic ---- */

static inline int32_t q8_qmin(q8_dtype dt) { return dt == Q8_U8 ? 0 : -128; }
static inline int32_t q8_qmax(q8_dtype dt) { return dt == Q8_U8 ? 255 : 127; }
/* XOR that maps an int8 byte onto uint8 with the same order: q + 128. */
static inline uint8_t q8_xor(q8_dtype dt) { return dt == Q8_I8 ? 0x80 : 0; }
static inline int64_t q8_clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* >> of a negative number is implementation-defined in C; every compiler cqat targets
 * shifts arithmetically (floor), which the rounding below relies on. */
_Static_assert((-3 >> 1) == -2 && (INT64_C(-3) >> 1) == -2, "arithmetic right shift needed");

/* floor(p / 2^n). */
static inline int64_t q8_floor_shift(int64_t p, int32_t n) { return p >> n; }

/* round_half_even(x * m0 / 2^shift), from the exact 64-bit product (see q8.h), without
 * branches: with p = q * 2^n + r, adding 2^(n-1) - 1 + (q & 1) carries into q exactly
 * when r > 2^(n-1), or r = 2^(n-1) and q is odd. Needs |p| < 2^62. */
static inline int64_t q8_rq(int64_t x, int32_t m0, int32_t shift)
{
    int64_t p = x * (int64_t)m0;
    if (shift == 0)
        return p;
    int64_t half = INT64_C(1) << (shift - 1);
    return (p + (half - 1) + ((p >> shift) & 1)) >> shift;
}

/* round_half_even(x * m0 / (d * 2^shift)) exactly, d >= 1, |x * m0| < 2^63: the average
 * pools' rounding (one rounding of the exact quotient, without forming d * 2^shift).
 * Write x*m0 = q1 * 2^shift + r1 and q1 = q2 * d + r2 (floors); the fraction beyond q2
 * is (r2 * 2^shift + r1) / (d * 2^shift), compared with 1/2 through k = 2*r2 - d. */
static inline int64_t q8_rq_div(int64_t x, int32_t m0, int32_t shift, int64_t d)
{
    int64_t p = x * (int64_t)m0;
    int64_t q1 = q8_floor_shift(p, shift);
    uint64_t r1 = shift ? (uint64_t)p & ((UINT64_C(1) << shift) - 1) : 0;
    int64_t q2 = q1 >= 0 ? q1 / d : -((-q1 - 1) / d) - 1; /* floor */
    int64_t k = 2 * (q1 - q2 * d) - d;
    uint64_t half = shift ? UINT64_C(1) << (shift - 1) : 1; /* r1 == 0 when shift == 0 */
    int cmp; /* sign of (fraction - 1/2) */
    if (k >= 1)
        cmp = 1;
    else if (k <= -2)
        cmp = -1;
    else if (k == 0)
        cmp = r1 > 0 ? 1 : 0;
    else
        cmp = shift == 0 ? -1 : r1 > half ? 1 : r1 == half ? 0 : -1;
    if (cmp > 0 || (cmp == 0 && (q2 & 1)))
        q2 += 1;
    return q2;
}

/* Stores one requantized result: clamp(zp + rq(acc), lo, hi) as the output byte. */
static inline uint8_t q8_rq_byte(int64_t acc, int32_t m0, int32_t shift, int32_t zp, int32_t lo,
                                 int32_t hi)
{
    return (uint8_t)q8_clamp64(zp + q8_rq(acc, m0, shift), lo, hi); /* i8: two's complement */
}

/* The integer stored in a value's byte (u8 or i8). */
static inline int32_t q8_load(const uint8_t *p, int64_t i, q8_dtype dt)
{
    return dt == Q8_U8 ? (int32_t)p[i] : (int32_t)(int8_t)p[i];
}

/* PyTorch quantize_val (AffineQuantizerBase.cpp) with inv = 1.0f / scale precomputed:
 * zp + nearbyint(x * inv), clamped to [qmin, qmax]. The clamp happens on the float before
 * the conversion: the same integers without an out-of-range cast. NaN gives zp. */
static inline int32_t q8_quantize_inv(float x, float inv, int32_t zp, int32_t qmin, int32_t qmax)
{
    float r = nearbyintf(x * inv);
    if (r != r) /* NaN */
        return zp;
    if (r <= (float)(qmin - zp))
        return qmin;
    if (r >= (float)(qmax - zp))
        return qmax;
    return zp + (int32_t)r;
}

/* adaptive pools: output o of `out` averages input [start, end) of `in` (PyTorch
 * start_index = floor(o*in/out), end_index = ceil((o+1)*in/out), in integers). */
static inline int64_t q8_adaptive_start(int64_t o, int64_t in, int64_t out) { return o * in / out; }
static inline int64_t q8_adaptive_end(int64_t o, int64_t in, int64_t out)
{
    return ((o + 1) * in + out - 1) / out;
}

/* Output size of a window op along one axis (PyTorch pooling_output_shape: floor, or
 * ceil without starting a window in the right padding); <= 0 when the window does not
 * fit. conv2d is the floor case. */
int64_t q8_window_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                           int64_t dilation, bool ceil_mode);

/* A row of requantized outputs: out[i] = clamp(zp + rq(acc[i], m0[k], shift[k]), lo, hi)
 * as bytes, with k = i (step 1, per element) or 0 (step 0). The AVX2 kernel gives the
 * same bytes; q8_requant picks by the model's kernel choice. */
void q8_requant_reference(const int32_t *acc, int64_t n, const int32_t *m0,
                          const int32_t *shift, int64_t step, int32_t zp, int32_t lo,
                          int32_t hi, uint8_t *out);
void q8_requant_avx2(const int32_t *acc, int64_t n, const int32_t *m0, const int32_t *shift,
                     int64_t step, int32_t zp, int32_t lo, int32_t hi, uint8_t *out);
static inline void q8_requant(q8_gemm_kernel kernel, const int32_t *acc, int64_t n,
                              const int32_t *m0, const int32_t *shift, int64_t step, int32_t zp,
                              int32_t lo, int32_t hi, uint8_t *out)
{
    if (kernel == Q8_GEMM_AVX2)
        q8_requant_avx2(acc, n, m0, shift, step, zp, lo, hi, out);
    else
        q8_requant_reference(acc, n, m0, shift, step, zp, lo, hi, out);
}

/* A row of quantized floats: out[i] = q8_quantize_inv(x[i], inv, zp, qmin, qmax) as bytes;
 * the AVX2 kernel (round to nearest even under the default rounding mode, like
 * nearbyintf; NaN to zp; the clamp on the float) gives the same bytes. */
void q8_quantize_row_reference(const float *x, int64_t n, float inv, int32_t zp, int32_t qmin,
                               int32_t qmax, uint8_t *out);
void q8_quantize_row_avx2(const float *x, int64_t n, float inv, int32_t zp, int32_t qmin,
                          int32_t qmax, uint8_t *out);

/* out[i] = table[a[i] * 256 + b[i]]: a binary op whose result depends on the two input
 * bytes only (add). The AVX2 kernel gathers 32-bit words: the table needs 3 readable
 * bytes beyond its 65536. */
void q8_lookup2_reference(const uint8_t *table, const uint8_t *a, const uint8_t *b, int64_t n,
                          uint8_t *out);
void q8_lookup2_avx2(const uint8_t *table, const uint8_t *a, const uint8_t *b, int64_t n,
                     uint8_t *out);

/* Output bounds of a fused activation on `out`, inside out's range (q8.h); `out` must be
 * valid (q8_qparams_range). */
void q8_act_bounds(q8_act act, q8_qparams out, int32_t *lo, int32_t *hi);
/* A fused activation on a float: relu x < 0 ? 0 : x, relu6 also x > 6 ? 6 : x (PyTorch's
 * clamp: NaN stays NaN, -0.0 stays -0.0). */
static inline float q8_act_f32(float x, int32_t act)
{
    if (act != Q8_ACT_NONE)
        x = x < 0.0f ? 0.0f : x;
    if (act == Q8_ACT_RELU6)
        x = x > 6.0f ? 6.0f : x;
    return x;
}
/* The scalar bias quantization of q8_weights (q8.h); Q8_ERR_NUMERIC if out of int32. */
q8_status q8_quantize_bias(const float *bias, int64_t n, float s_in, const float *s_w,
                           int64_t n_scale, int32_t *out);
/* fbgemm/PyTorch ChooseQuantizationParams(min, max, 0, 255, preserve_sparsity=false,
 * force_scale_power_of_two=false, reduce_range) (QuantUtils.h); min, max finite. */
void q8_choose_qparams_dynamic(float min, float max, bool reduce_range, float *scale,
                               int32_t *zero_point);
/* Real multiplier of input i of an add: used by the builder and by check. */
void q8_add_reals(float sa, float sb, float so, int32_t left_shift, double *ma, double *mb,
                  double *mo);
enum { Q8_ADD_LEFT_SHIFT = 20 };

/* ---- int8 GEMM (gemm*.c) ---- */

/* K padded to the kernels' step: A rows and packed B rows hold kp bytes/shorts. */
static inline int64_t q8_gemm_kp(int64_t k) { return (k + 15) / 16 * 16; }

/* C[i*rs + j*cs] = bias[j] + sum_{k<kp} A[i*lda + k] * B[j*kp + k] for i < m, j < n.
 * A uint8 (already shifted to unsigned: an int8 activation is stored as q + 128), B the
 * int8 weights widened to int16 and zero padded to kp (a multiple of 16), bias may be
 * NULL. (rs, cs) = (n, 1) stores C row-major; (1, m) stores its transpose, which conv2d
 * uses so that each output channel's results are contiguous. Exact int32 arithmetic as
 * long as no partial sum leaves int32 (q8_pack_weights refuses weights that could). The
 * reference and the AVX2 kernel give identical results; q8_gemm splits the work into
 * tiles over OpenMP threads. */
typedef void (*q8_gemm_fn)(int64_t m, int64_t n, int64_t kp, const uint8_t *a, int64_t lda,
                           const int16_t *b, const int32_t *bias, int32_t *c, int64_t rs,
                           int64_t cs);
void q8_gemm_reference(int64_t m, int64_t n, int64_t kp, const uint8_t *a, int64_t lda,
                       const int16_t *b, const int32_t *bias, int32_t *c, int64_t rs,
                       int64_t cs);
void q8_gemm_avx2(int64_t m, int64_t n, int64_t kp, const uint8_t *a, int64_t lda,
                  const int16_t *b, const int32_t *bias, int32_t *c, int64_t rs, int64_t cs);
bool q8_gemm_avx2_available(void);

/* The column GEMM of conv2d: output channels as rows, output positions as vector lanes,
 * so that one channel's results come out contiguous (NCHW) and the inner loop runs over
 * positions however small K and the channel count are (refcnn's K = 9..288, 16..32
 * channels, where the dot-product GEMM above spends its time in horizontal sums).
 *
 *   c[o*ldc + p] = bias[o] + sum_{t<kpairs} w[o*kp + 2t] * a[(t*np + p)*2]
 *                                         + w[o*kp + 2t+1] * a[(t*np + p)*2 + 1]
 *
 * for o < m, p < np: `a` holds the patch matrix with K in pairs interleaved per position
 * (kpairs, np, 2), int16 (uint8 widened, so vpmaddwd sums the pair exactly), np a multiple
 * of Q8_COLS_STEP (tiles of Q8_COLS_NR positions, then of 8); `w` is q8_packed's (m, kp)
 * rows, whose pairs load as one int32. */
enum { Q8_COLS_NR = 24, Q8_COLS_STEP = 8 };
typedef void (*q8_gemm_cols_fn)(int64_t m, int64_t kpairs, const int16_t *w, int64_t kp,
                                const int16_t *a, int64_t np, const int32_t *bias, int32_t *c,
                                int64_t ldc);
void q8_gemm_cols_reference(int64_t m, int64_t kpairs, const int16_t *w, int64_t kp,
                            const int16_t *a, int64_t np, const int32_t *bias, int32_t *c,
                            int64_t ldc);
void q8_gemm_cols_avx2(int64_t m, int64_t kpairs, const int16_t *w, int64_t kp, const int16_t *a,
                       int64_t np, const int32_t *bias, int32_t *c, int64_t ldc);
/* dst[2p] = r0[p], dst[2p+1] = r1[p] (p < n): two uint8 patch rows into one pair row of
 * the column GEMM's operand. */
void q8_interleave_pairs_reference(const uint8_t *r0, const uint8_t *r1, int64_t n, int16_t *dst);
void q8_interleave_pairs_avx2(const uint8_t *r0, const uint8_t *r1, int64_t n, int16_t *dst);
/* The same product with K in quads of bytes, for CPUs with AVX-VNNI: vpdpbusd sums four
 * uint8 x int8 products into int32 without an int16 step (no vpmaddubsw saturation), four
 * times the products of a vpmaddwd:
 *
 *   c[o*ldc + p] = bias[o] + sum_{t<kquads} sum_{s<4} w[o*kq4 + 4t+s] * a[off[t] + 4p + s]
 *
 * `a` uint8 with the 4 bytes of quad t at each position p at off[t] + 4p: off == NULL is
 * the packed operand (kquads, np, 4), off[t] = t*np*4; conv2d's grid passes offsets into
 * its channel-quad-interleaved padded input instead. `w` (m, kq4) the int8 weights zero
 * padded to kq4 >= 4*kquads.
 * q8_gemm_vnni_available: the CPU has AVX-VNNI and CQAT_Q8_GEMM is not "avx2" (which
 * keeps the vpmaddwd kernel, for comparison). */
void q8_gemm_quads_reference(int64_t m, int64_t kquads, const int8_t *w, int64_t kq4,
                             const uint8_t *a, const int64_t *off, int64_t np,
                             const int32_t *bias, int32_t *c, int64_t ldc);
void q8_gemm_quads_vnni(int64_t m, int64_t kquads, const int8_t *w, int64_t kq4,
                        const uint8_t *a, const int64_t *off, int64_t np, const int32_t *bias,
                        int32_t *c, int64_t ldc);
bool q8_gemm_vnni_available(void);
/* q8_gemm_quads with conv2d's requantization fused into the epilogue: each tile is
 * requantized in registers (32 <= shift <= 62 only, the 32-bit path of q8_requant_avx2)
 * and its bytes go straight into the output rows, without int32 results in memory.
 * Positions are those of one chunk of conv2d's padded grid: position p (row p / wp,
 * column p % wp) is output byte (p / wp) * ow + p % wp of its channel's plane when
 * p % wp < ow and p / wp < rows; the grid's extra columns and the rounding of np are
 * dropped. A tile may store up to 7 bytes beyond its last output byte while they stay
 * inside the plane (`room`): those are positions the same or a later call rewrites,
 * so the calls must go through a plane's chunks in order and cover all of it. */
typedef struct q8_rq_chan {
    int32_t m0, shift; /* 32 <= shift <= 62 */
    bool no_ties;      /* acc * m0 is never an exact tie, and shift <= 54 */
    int64_t add;       /* no_ties: 2^(shift-1) + zp * 2^shift (the zero point rides along) */
} q8_rq_chan;
/* The requantization constants of one channel with multiplier (m0, shift), output zero
 * point zp and accumulators bounded by |acc| <= bound. A tie (acc * m0 an odd multiple of
 * 2^(shift-1)) needs v2(acc) + v2(m0) = shift - 1 (v2: the count of trailing zero bits),
 * and v2(acc) <= log2(bound): when v2(m0) + floor(log2(bound)) < shift - 1 no accumulator
 * can tie and the epilogue skips the half-even test, bit-identical to q8_rq_byte. */
void q8_rq_chan_init(q8_rq_chan *c, int32_t m0, int32_t shift, int32_t zp, int64_t bound);
typedef struct q8_rq_rows {
    const q8_rq_chan *chan; /* (m) */
    int32_t zp, lo, hi;
    uint8_t *out;          /* channel 0's output byte of grid position 0 */
    int64_t ldo;           /* bytes from one channel's plane to the next */
    int64_t room;          /* bytes from `out` to the end of its plane */
    int64_t wp, ow, rows;  /* grid row, output row (ow <= wp, wp >= 8), rows of this chunk */
} q8_rq_rows;
void q8_gemm_quads_rq_reference(int64_t m, int64_t kquads, const int8_t *w, int64_t kq4,
                                const uint8_t *a, const int64_t *off, int64_t np,
                                const int32_t *bias, const q8_rq_rows *d);
void q8_gemm_quads_rq_vnni(int64_t m, int64_t kquads, const int8_t *w, int64_t kq4,
                           const uint8_t *a, const int64_t *off, int64_t np, const int32_t *bias,
                           const q8_rq_rows *d);
/* The same with 4 x 48 tiles on 512-bit vectors, for CPUs with AVX-512 VNNI (same bytes).
 * q8_gemm_avx512_available: those and AVX-VNNI (conv2d takes this kernel where it took
 * q8_gemm_quads_rq_vnni), unless CQAT_Q8_GEMM is "avx2" or "vnni256" (the 256-bit
 * kernel, for comparison). */
void q8_gemm_quads_rq_avx512(int64_t m, int64_t kquads, const int8_t *w, int64_t kq4,
                             const uint8_t *a, const int64_t *off, int64_t np, const int32_t *bias,
                             const q8_rq_rows *d);
bool q8_gemm_avx512_available(void);
/* conv2d followed by a 2x2 max-pool at stride 2 (the fused plan of q8_model_run): since
 * requantization is monotone (m0 >= 0), the max of the requantized values is the
 * requantized max of the int32 results, so only a quarter of them is requantized.
 * out[i*pw + j] = q8_rq_byte(max of acc[(2i + a)*ld + 2j + b], a, b in {0, 1}) for i <
 * prows, j < pw (2*pw <= ld). The AVX2 kernel (32 <= shift <= 62, the channel's
 * q8_rq_chan) gives the same bytes; it reads up to 14 int32 beyond the last window's row
 * and may store up to 7 bytes beyond a row's last output while they stay within `room`
 * bytes of `out` (the next row rewrites them). */
void q8_pool_rq_reference(const int32_t *acc, int64_t ld, int64_t prows, int64_t pw, int32_t m0,
                          int32_t shift, int32_t zp, int32_t lo, int32_t hi, uint8_t *out);
void q8_pool_rq_avx2(const int32_t *acc, int64_t ld, int64_t prows, int64_t pw,
                     const q8_rq_chan *ch, int32_t zp, int32_t lo, int32_t hi, uint8_t *out,
                     int64_t room);
/* q8_gemm's product (row-major C, rs = n... any strides) with the weights as int8 rows
 * (n, kp) instead of int16: vpdpbusd on 32 bytes of K at a time (a 16-byte tail in the
 * lower half), for linear on CPUs with AVX-VNNI. Same integers as q8_gemm_reference. */
void q8_gemm_dot_vnni(int64_t m, int64_t n, int64_t kp, const uint8_t *a, int64_t lda,
                      const int8_t *w, const int32_t *bias, int32_t *c, int64_t rs, int64_t cs);
/* dst[4p + s] = r[s][p] (p < n, s < 4). */
void q8_interleave_quads_reference(const uint8_t *const r[4], int64_t n, uint8_t *dst);
void q8_interleave_quads_avx2(const uint8_t *const r[4], int64_t n, uint8_t *dst);
/* q[4x + j] = p[x + j*dw] for j < kw, 0 for kw <= j < 4 (x < n): a single-channel conv's
 * kernel row as one K quad per grid position of the padded plane p (readable to
 * n + (kw-1)*dw + 16), so the VNNI GEMM reads quad i of position x at row offset i*dh. */
void q8_taps_quads_reference(const uint8_t *p, int64_t n, int64_t kw, int64_t dw, uint8_t *q);
void q8_taps_quads_avx2(const uint8_t *p, int64_t n, int64_t kw, int64_t dw, uint8_t *q);
q8_gemm_kernel q8_gemm_choose(void); /* CPU + CQAT_Q8_GEMM */
void q8_gemm(q8_gemm_kernel kernel, int64_t m, int64_t n, int64_t kp, const uint8_t *a,
             int64_t lda, const int16_t *b, const int32_t *bias, int32_t *c, int64_t rs,
             int64_t cs);

/* Weights packed for q8_gemm, with the input zero point folded into the bias:
 * bias[j] = b_q[j] - zp_u8 * sum_k W[j][k] (gemmlowp's rank-one correction, XNNPACK's
 * pack-time fold), where zp_u8 is the zero point in the unsigned domain of A. */
typedef struct q8_packed {
    int64_t n, k, kp;
    int16_t *w;    /* (n, kp) */
    int32_t *bias; /* (n) */
    int32_t *wsum; /* (n): sum_k W[j][k] */
} q8_packed;
/* The int32 accumulator rule shared by every kernel (docs/FORMAT.md, conv2d): the sums
 * stay in int32 if 255 * sum|W| + max(|b_q|, |b_q - zp_u8 * sum W|) does. */
static inline bool q8_acc_overflows(int64_t abs_sum, int64_t bias, int64_t folded)
{
    int64_t b = bias < 0 ? -bias : bias, f = folded < 0 ? -folded : folded;
    return 255 * abs_sum + (b > f ? b : f) > INT32_MAX;
}
/* `bias` (n) may be NULL (zero). Fails (Q8_ERR_NUMERIC, naming the node and the output
 * channel) when q8_acc_overflows. */
q8_status q8_pack_weights(const q8_node *node, const int8_t *w, int64_t n, int64_t k,
                          const int32_t *bias, int32_t zp_u8, q8_packed *out);
void q8_packed_free(q8_packed *p);

/* ---- float GEMM (sgemm*.c): conv2d_f32 and linear_f32 ----
 *
 * C (m x n) = A (m x k) * B (k x n), then a bias per row and/or per column and a fused
 * activation. Both operands are packed (BLIS's layout): A in panels of MR rows, each
 * stored k-major (ap[panel][kk][MR]), B in panels of NR columns (bp[panel][kk][NR]),
 * rows/columns beyond m/n zero. A micro-kernel keeps an MR x NR tile of C in registers
 * for the whole k (the AVX2 one: 12 ymm accumulators, one FMA per 8 products). */
enum { Q8_SGEMM_MR = 6, Q8_SGEMM_NR = 16 };
static inline int64_t q8_sgemm_panels(int64_t rows, int64_t r) { return (rows + r - 1) / r; }
/* One tile: rows <= MR and cols <= NR of C at `c` (row stride ldc) from one A and one B
 * panel; bias_row (rows) / bias_col (cols) may be NULL. */
typedef void (*q8_sgemm_tile_fn)(int64_t k, const float *ap, const float *bp, float *c,
                                 int64_t ldc, int64_t rows, int64_t cols, const float *bias_row,
                                 const float *bias_col, int32_t act);
void q8_sgemm_tile_reference(int64_t k, const float *ap, const float *bp, float *c, int64_t ldc,
                             int64_t rows, int64_t cols, const float *bias_row,
                             const float *bias_col, int32_t act);
void q8_sgemm_tile_avx2(int64_t k, const float *ap, const float *bp, float *c, int64_t ldc,
                        int64_t rows, int64_t cols, const float *bias_row, const float *bias_col,
                        int32_t act);
bool q8_sgemm_avx2_available(void); /* AVX2 and FMA */
/* c = act(tile + bias_row[i] + bias_col[j]) over rows x cols of an (MR, NR) tile: the
 * edge store both kernels share (the AVX2 one stores full tiles itself, same order). */
void q8_sgemm_store_tile(const float *tile, float *c, int64_t ldc, int64_t rows, int64_t cols,
                         const float *bias_row, const float *bias_col, int32_t act);
/* A (m x k, row stride lda) into MR-row panels: q8_sgemm_panels(m, MR) * MR * k floats. */
void q8_sgemm_pack_a(int64_t m, int64_t k, const float *a, int64_t lda, float *ap);
/* B given transposed, bt (n x k, row stride ldb) — a linear weight (O, K) — into NR-column
 * panels: q8_sgemm_panels(n, NR) * NR * k floats. */
void q8_sgemm_pack_bt(int64_t n, int64_t k, const float *bt, int64_t ldb, float *bp);
/* The tiles over OpenMP threads (unless already inside a parallel region); `kernel`
 * picks the micro-kernel (AVX2 only where q8_sgemm_avx2_available). */
void q8_sgemm(q8_gemm_kernel kernel, int64_t m, int64_t n, int64_t k, const float *ap,
              const float *bp, float *c, int64_t ldc, const float *bias_row,
              const float *bias_col, int32_t act);

void *q8_alloc(size_t bytes);  /* 64-byte aligned, NULL on OOM (no message) */
void q8_free(void *p);
char *q8_strdup(const char *s); /* NULL in, "" out */

#endif
