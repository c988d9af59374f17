/* check.c — validation helpers shared by the ops' check functions. Each message names
 * the node (q8_node_error) and the field at fault. */
#include "quantized/q8_impl.h"

#include <inttypes.h>
#include <math.h>

static bool is_quantized(q8_dtype dt) { return dt == Q8_U8 || dt == Q8_I8; }

q8_status q8_check_input_quantized(const q8_model *m, const q8_node *n, int32_t i)
{
    const q8_value *v = q8_in(m, n, i);
    if (!is_quantized(v->dtype))
        return q8_node_error(n, Q8_ERR_FORMAT, "input %d (value %d) is %s, the op needs u8 or i8",
                             (int)i, (int)n->in[i], q8_dtype_name(v->dtype));
    return Q8_OK;
}

q8_status q8_check_input_dtype(const q8_model *m, const q8_node *n, int32_t i, q8_dtype dt)
{
    const q8_value *v = q8_in(m, n, i);
    if (v->dtype != dt)
        return q8_node_error(n, Q8_ERR_FORMAT, "input %d (value %d) is %s, the op needs %s",
                             (int)i, (int)n->in[i], q8_dtype_name(v->dtype), q8_dtype_name(dt));
    return Q8_OK;
}

q8_status q8_check_input_rank(const q8_model *m, const q8_node *n, int32_t i, int32_t ndim)
{
    const q8_value *v = q8_in(m, n, i);
    char s[128];
    if (v->ndim != ndim)
        return q8_node_error(n, Q8_ERR_SHAPE, "input %d (value %d) has shape %s, the op needs "
                             "rank %d",
                             (int)i, (int)n->in[i], q8_shape_str(s, sizeof s, v->ndim, v->shape),
                             (int)ndim);
    return Q8_OK;
}

q8_status q8_check_output(const q8_model *m, const q8_node *n, q8_dtype dt, int32_t ndim,
                          const int64_t *shape)
{
    const q8_value *y = q8_out(m, n);
    char want[128], have[128];
    if (y->dtype != dt)
        return q8_node_error(n, Q8_ERR_FORMAT, "output (value %d) is %s, the op gives %s",
                             (int)n->out[0], q8_dtype_name(y->dtype), q8_dtype_name(dt));
    bool same = y->ndim == ndim;
    for (int32_t d = 1; same && d < ndim; d++)
        same = y->shape[d] == shape[d];
    if (!same)
        return q8_node_error(n, Q8_ERR_SHAPE,
                             "output (value %d) has shape %s, the op gives %s from its inputs",
                             (int)n->out[0], q8_shape_str(have, sizeof have, y->ndim, y->shape),
                             q8_shape_str(want, sizeof want, ndim, shape));
    return Q8_OK;
}

q8_status q8_check_same_qparams(const q8_model *m, const q8_node *n, int32_t i)
{
    const q8_value *x = q8_in(m, n, i), *y = q8_out(m, n);
    if (x->dtype != y->dtype || x->scale != y->scale || x->zero_point != y->zero_point)
        return q8_node_error(n, Q8_ERR_FORMAT,
                             "output (value %d: %s scale %g zero_point %d) must keep the "
                             "input's dtype and qparams (%s scale %g zero_point %d)",
                             (int)n->out[0], q8_dtype_name(y->dtype), (double)y->scale,
                             (int)y->zero_point, q8_dtype_name(x->dtype), (double)x->scale,
                             (int)x->zero_point);
    return Q8_OK;
}

q8_status q8_check_const(const q8_node *n, int32_t idx, q8_dtype dt, int32_t ndim,
                         const int64_t *shape)
{
    const q8_tensor *t = &n->cst[idx];
    const char *key = q8_ops[n->op]->consts[idx].key;
    if (!t->data)
        return Q8_OK; /* absent: check_node_fields already refused a required one */
    if (t->dtype != dt)
        return q8_node_error(n, Q8_ERR_FORMAT, "constant '%s' is %s, the op needs %s", key,
                             q8_dtype_name(t->dtype), q8_dtype_name(dt));
    bool same = t->ndim == ndim;
    for (int32_t d = 0; same && d < ndim; d++)
        same = t->shape[d] == shape[d];
    char want[128], have[128];
    if (!same)
        return q8_node_error(n, Q8_ERR_SHAPE, "constant '%s' has shape %s, the op needs %s", key,
                             q8_shape_str(have, sizeof have, t->ndim, t->shape),
                             q8_shape_str(want, sizeof want, ndim, shape));
    return Q8_OK;
}

q8_status q8_check_multiplier(const q8_node *n, const char *field, int64_t i, int64_t m0,
                              int64_t shift, double real)
{
    if (m0 == 0) {
        if (shift != 0 || !(real < ldexp(1.0, -32)))
            return q8_node_error(n, Q8_ERR_FORMAT,
                                 "%s[%" PRId64 "]: multiplier 0 (shift %" PRId64
                                 ") stands only for a real multiplier below 2^-32, the scales "
                                 "give %g",
                                 field, i, shift, real);
        return Q8_OK;
    }
    if (m0 < (INT64_C(1) << 30) || m0 > INT32_MAX)
        return q8_node_error(n, Q8_ERR_FORMAT,
                             "%s[%" PRId64 "]: multiplier %" PRId64 " is outside [2^30, 2^31)",
                             field, i, m0);
    if (shift < 0 || shift > 63)
        return q8_node_error(n, Q8_ERR_FORMAT,
                             "%s[%" PRId64 "]: shift %" PRId64 " is outside [0, 63]", field, i,
                             shift);
    double stored = ldexp((double)m0, -(int)shift);
    if (!(fabs(stored - real) <= real * ldexp(1.0, -20)))
        return q8_node_error(n, Q8_ERR_FORMAT,
                             "%s[%" PRId64 "]: multiplier %" PRId64 " * 2^-%" PRId64
                             " = %.9g does not match the scales, which give %.9g",
                             field, i, m0, shift, stored, real);
    return Q8_OK;
}

q8_status q8_check_clamp(const q8_node *n, int64_t lo, int64_t hi, q8_dtype dt, int32_t zp)
{
    if (lo < q8_qmin(dt) || hi > q8_qmax(dt) || lo > hi)
        return q8_node_error(n, Q8_ERR_FORMAT,
                             "clamp [%" PRId64 ", %" PRId64 "] is not an interval inside the "
                             "%s range [%d, %d]",
                             lo, hi, q8_dtype_name(dt), (int)q8_qmin(dt), (int)q8_qmax(dt));
    if (zp < lo || zp > hi)
        return q8_node_error(n, Q8_ERR_FORMAT,
                             "clamp [%" PRId64 ", %" PRId64 "] does not contain the output "
                             "zero point %d",
                             lo, hi, (int)zp);
    return Q8_OK;
}

q8_status q8_check_out_clamp(const q8_model *m, const q8_node *n, int32_t lo_idx, int32_t hi_idx)
{
    const q8_value *y = q8_out(m, n);
    return q8_check_clamp(n, n->attr[lo_idx], n->attr[hi_idx], y->dtype, y->zero_point);
}

q8_status q8_check_scales(const q8_node *n, int32_t idx)
{
    const q8_tensor *t = &n->cst[idx];
    const float *s = t->data;
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(s[i]) || !(s[i] > 0))
            return q8_node_error(n, Q8_ERR_FORMAT,
                                 "constant '%s'[%" PRId64 "] = %g is not a finite positive scale",
                                 q8_ops[n->op]->consts[idx].key, i, (double)s[i]);
    return Q8_OK;
}

/* PyTorch pooling_output_shape_pad_lr with div_rtn (floor, also for negatives). */
int64_t q8_window_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                           int64_t dilation, bool ceil_mode)
{
    int64_t num = in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
    int64_t q = num / stride;
    if (num % stride != 0 && num < 0)
        q -= 1;
    int64_t out = q + 1;
    if (ceil_mode && out > 0 && (out - 1) * stride >= in + pad)
        out -= 1;
    return out;
}

q8_status q8_check_pool(const q8_model *m, const q8_node *n, const int64_t *kernel,
                        const int64_t *stride, const int64_t *pad, const int64_t *dilation,
                        bool ceil_mode, bool f32, int64_t *out_hw)
{
    q8_status st = f32 ? q8_check_input_dtype(m, n, 0, Q8_F32) : q8_check_input_quantized(m, n, 0);
    if (st == Q8_OK)
        st = q8_check_input_rank(m, n, 0, 4);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0);
    for (int a = 0; a < 2; a++) {
        int64_t effective = (kernel[a] - 1) * dilation[a] + 1;
        if (pad[a] > effective / 2)
            return q8_node_error(n, Q8_ERR_SHAPE,
                                 "padding %" PRId64 " is more than half the kernel (%" PRId64
                                 " with dilation %" PRId64 ")",
                                 pad[a], kernel[a], dilation[a]);
        out_hw[a] = q8_window_out_size(x->shape[2 + a], kernel[a], stride[a], pad[a], dilation[a],
                                       ceil_mode);
        if (out_hw[a] < 1)
            return q8_node_error(n, Q8_ERR_SHAPE,
                                 "kernel %" PRId64 "x%" PRId64 " does not fit the input %" PRId64
                                 "x%" PRId64 " padded by %" PRId64 "x%" PRId64,
                                 kernel[0], kernel[1], x->shape[2], x->shape[3], pad[0], pad[1]);
    }
    if (kernel[0] * kernel[1] > Q8_MAX_WINDOW)
        return q8_node_error(n, Q8_ERR_SHAPE, "kernel %" PRId64 "x%" PRId64 " has more than %"
                             PRId64 " elements", kernel[0], kernel[1], Q8_MAX_WINDOW);
    return Q8_OK;
}

q8_status q8_check_finite(const q8_node *n, int32_t idx)
{
    const q8_tensor *t = &n->cst[idx];
    const float *v = t->data;
    if (!v || t->dtype != Q8_F32)
        return Q8_OK; /* absent, or a dtype the op's own check names */
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(v[i]))
            return q8_node_error(n, Q8_ERR_FORMAT, "constant '%s'[%" PRId64 "] = %g is not finite",
                                 q8_ops[n->op]->consts[idx].key, i, (double)v[i]);
    return Q8_OK;
}

q8_status q8_check_same_shapes(const q8_model *m, const q8_node *n)
{
    const q8_value *a = q8_in(m, n, 0), *b = q8_in(m, n, 1);
    bool same = a->ndim == b->ndim;
    for (int32_t d = 1; same && d < a->ndim; d++)
        same = a->shape[d] == b->shape[d];
    char sa[128], sb[128];
    if (!same)
        return q8_node_error(n, Q8_ERR_SHAPE, "inputs have shapes %s and %s (no broadcasting: "
                             "they must be equal)",
                             q8_shape_str(sa, sizeof sa, a->ndim, a->shape),
                             q8_shape_str(sb, sizeof sb, b->ndim, b->shape));
    return Q8_OK;
}
