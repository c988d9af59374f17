/* weights.c — what conv2d and linear share: the constants next to the int8 weight
 * (weight_scale, bias, multiplier, shift), their checks and how the builder makes them. */
#include "quantized/builder.h"

#include <inttypes.h>
#include <stdlib.h>

/* The per-channel (S = O) or per-tensor (S = 1) length of the weight scales. */
static q8_status check_scale_len(const q8_node *n, int32_t c_scale, int64_t out_channels,
                                 int64_t *len)
{
    const q8_tensor *t = &n->cst[c_scale];
    const char *key = q8_ops[n->op]->consts[c_scale].key;
    if (t->dtype != Q8_F32 || t->ndim != 1 || (t->shape[0] != 1 && t->shape[0] != out_channels))
        return q8_node_error(n, Q8_ERR_SHAPE,
                             "constant '%s' must be f32 of shape [%" PRId64 "] (per channel) or "
                             "[1] (per tensor), it is %s of rank %d and %" PRId64 " elements",
                             key, out_channels, q8_dtype_name(t->dtype), (int)t->ndim, t->numel);
    *len = t->shape[0];
    return q8_check_scales(n, c_scale);
}

q8_status q8_check_weight_consts(const q8_model *m, const q8_node *n, const q8_weight_consts *c,
                                 int64_t out_channels)
{
    int64_t s_len = 0;
    q8_status st = check_scale_len(n, c->scale, out_channels, &s_len);
    int64_t o_shape[1] = {out_channels}, s_shape[1] = {s_len};
    if (st == Q8_OK)
        st = q8_check_const(n, c->bias, Q8_I32, 1, o_shape);
    if (st == Q8_OK)
        st = q8_check_const(n, c->multiplier, Q8_I32, 1, s_shape);
    if (st == Q8_OK)
        st = q8_check_const(n, c->shift, Q8_I32, 1, s_shape);
    if (st != Q8_OK)
        return st;
    const float *sw = n->cst[c->scale].data;
    const int32_t *mult = n->cst[c->multiplier].data, *shift = n->cst[c->shift].data;
    double s_in = q8_in(m, n, 0)->scale, s_out = q8_out(m, n)->scale;
    for (int64_t s = 0; s < s_len && st == Q8_OK; s++)
        st = q8_check_multiplier(n, "multiplier", s, mult[s], shift[s],
                                 s_in * (double)sw[s] / s_out);
    return st;
}

q8_status q8_builder_weight_consts(q8_builder *b, int32_t node, const q8_weights *w,
                                   int64_t out_channels, float s_in, float s_out)
{
    int64_t s_len = w->n_scale, o_shape[1] = {out_channels}, s_shape[1] = {s_len};
    if (!w->scale || (s_len != 1 && s_len != out_channels))
        return q8_builder_node_fail(b, node, Q8_ERR_ARG,
                                    "weights need %" PRId64 " scales (per channel) or 1 (per "
                                    "tensor), got %" PRId64,
                                    out_channels, s_len);
    q8_builder_add_constant(b, node, "weight_scale", Q8_F32, 1, s_shape, w->scale);
    int32_t *mult = malloc((size_t)s_len * sizeof *mult);
    int32_t *shift = malloc((size_t)s_len * sizeof *shift);
    int32_t *bias = w->bias ? malloc((size_t)out_channels * sizeof *bias) : NULL;
    q8_status st = (!mult || !shift || (w->bias && !bias))
                       ? q8_error(Q8_ERR_NOMEM, "out of memory quantizing the bias")
                       : Q8_OK;
    for (int64_t s = 0; st == Q8_OK && s < s_len; s++)
        st = q8_multiplier_from_real((double)s_in * (double)w->scale[s] / (double)s_out,
                                     &mult[s], &shift[s]);
    if (st == Q8_OK && bias)
        st = q8_quantize_bias(w->bias, out_channels, s_in, w->scale, s_len, bias);
    if (st != Q8_OK) {
        free(mult);
        free(shift);
        free(bias);
        q8_builder_node_fail_last(b, node);
        return st;
    }
    q8_builder_adopt_constant(b, node, "multiplier", Q8_I32, 1, s_shape, mult);
    q8_builder_adopt_constant(b, node, "shift", Q8_I32, 1, s_shape, shift);
    if (bias)
        q8_builder_adopt_constant(b, node, "bias", Q8_I32, 1, o_shape, bias);
    return q8_builder_status(b);
}

q8_status q8_builder_clamp_attrs(q8_builder *b, int32_t node, q8_act act, q8_qparams out)
{
    int32_t lo = 0, hi = 0;
    if (!q8_builder_ok(b))
        return q8_last_status();
    if (act != Q8_ACT_NONE && act != Q8_ACT_RELU && act != Q8_ACT_RELU6) {
        q8_builder_node_fail(b, node, Q8_ERR_ARG, "unknown activation %d", (int)act);
        return q8_builder_status(b);
    }
    if (out.dtype != Q8_U8 && out.dtype != Q8_I8) {
        q8_builder_set_attr(b, node, "clamp_min", 0); /* the op's check names the dtype */
        return q8_builder_set_attr(b, node, "clamp_max", 0);
    }
    if (q8_qparams_range(out, &lo, &hi) != Q8_OK) {
        q8_builder_node_fail_last(b, node);
        return q8_builder_status(b);
    }
    q8_act_bounds(act, out, &lo, &hi);
    q8_builder_set_attr(b, node, "clamp_min", lo);
    return q8_builder_set_attr(b, node, "clamp_max", hi);
}
