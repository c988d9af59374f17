/* builder.h — what the high-level q8_builder_<op> calls in quantized/ops/ share with the
 * low-level builder (builder.c). Internal. */
#ifndef CQAT_Q8_BUILDER_H
#define CQAT_Q8_BUILDER_H

#include "quantized/q8_impl.h"

struct q8_builder {
    q8_model *m;      /* the model being built */
    q8_status status; /* of the first failed call */
    char error[1024]; /* its message */
};

/* False (and the first error re-set as the last error) once a call has failed. */
bool q8_builder_ok(const q8_builder *b);
/* Records the current last error as the builder's first error (if none yet). */
q8_status q8_builder_fail(q8_builder *b, q8_status st);
/* A copy of value `id` (the array moves as values are added). */
q8_status q8_builder_value(q8_builder *b, int32_t id, q8_value *copy);
/* Takes ownership of malloc'ed `data` (freed on failure too). */
q8_status q8_builder_adopt_constant(q8_builder *b, int32_t node, const char *key,
                                   q8_dtype dtype, int32_t ndim, const int64_t *shape,
                                   void *data);
/* Bytes of a constant of that dtype and shape, refusing sizes out of bounds. */
q8_status q8_constant_bytes(const q8_node *n, const char *key, q8_dtype dtype, int32_t ndim,
                            const int64_t *shape, size_t *bytes);
/* Adds the output value and a one-output node reading inputs; returns the node id. */
int32_t q8_builder_node1(q8_builder *b, const char *op, const char *name, const int32_t *inputs,
                         int32_t n_inputs, q8_dtype dtype, int32_t ndim, const int64_t *shape,
                         float scale, int32_t zero_point, int32_t *out_value);
/* Records "node N (op 'name'): message" as the builder's error; returns -1. */
int32_t q8_builder_node_fail(q8_builder *b, int32_t node, q8_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* The same with the current last error as the message (after a helper failed). */
int32_t q8_builder_node_fail_last(q8_builder *b, int32_t node);
/* Checks the finished node at once; returns `value`, or -1 if anything failed. */
int32_t q8_builder_done(q8_builder *b, int32_t node, int32_t value);

/* conv2d/linear: indices of the constants beside the weight in the op's table. */
typedef struct q8_weight_consts {
    int32_t scale, bias, multiplier, shift;
} q8_weight_consts;
/* weight_scale f32 (O or 1) finite > 0, bias i32 (O) if present, multiplier/shift i32
 * (same length as weight_scale) agreeing with s_in * s_w[c] / s_out. */
q8_status q8_check_weight_consts(const q8_model *m, const q8_node *n, const q8_weight_consts *c,
                                 int64_t out_channels);
/* Adds weight_scale, bias (quantized to int32), multiplier and shift to `node`. */
q8_status q8_builder_weight_consts(q8_builder *b, int32_t node, const q8_weights *w,
                                   int64_t out_channels, float s_in, float s_out);
/* clamp_min/clamp_max of a fused activation on `out`, inside out's clamp range (act NONE:
 * the range itself); fails the node if `out` has a bad range. */
q8_status q8_builder_clamp_attrs(q8_builder *b, int32_t node, q8_act act, q8_qparams out);

/* add/mul: both inputs quantized, identical shapes, quantized output of that shape. */
q8_status q8_check_binary(const q8_model *m, const q8_node *n);
/* add/mul: the output value and the node with clamp attributes; returns the node. */
int32_t q8_builder_binary(q8_builder *b, const char *op, const char *name, int32_t x, int32_t y,
                          q8_qparams out, q8_act act, q8_value *xv, q8_value *yv,
                          int32_t *out_id);

/* add_f32/mul_f32: both inputs f32 with identical shapes, the output f32 of that shape. */
q8_status q8_check_binary_f32(const q8_model *m, const q8_node *n);
/* add_f32/mul_f32: the output value and the node with its act attribute. */
int32_t q8_builder_binary_f32(q8_builder *b, const char *op, const char *name, int32_t x,
                              int32_t y, q8_act act);

/* avg pools: multiplier/shift attributes of s_in / s_out. */
q8_status q8_builder_pool_ratio(q8_builder *b, int32_t node, float s_in, float s_out);

/* hardswish's lookup table for these input/output qparams (index: the input byte, int8
 * inputs shifted by +128), entries clamped to out's range (which must be valid). */
void q8_hardswish_table(q8_qparams in, q8_qparams out, uint8_t table[256]);

/* Pools (quantized and float share the attribute names): the output size of `d` on value
 * xv (1 where it does not fit: the op's check names the problem), and the attributes.
 * max: kernel, stride, padding, dilation, ceil_mode; avg: kernel, stride, padding,
 * ceil_mode, count_include_pad, divisor_override. Strides 0 become the kernel. */
void q8_pool_out_hw(const q8_value *xv, const q8_pool2d_desc *d, bool dilated, int64_t out_hw[2]);
void q8_builder_max_pool_attrs(q8_builder *b, int32_t node, const q8_pool2d_desc *d);
void q8_builder_avg_pool_attrs(q8_builder *b, int32_t node, const q8_pool2d_desc *d);

/* conv2d / conv2d_f32: the output shape of `d` on xv (best effort: check names a bad
 * geometry) and the geometry attributes; fails the node (Q8_ERR_SHAPE) on an input that
 * is not (N, C, H, W) or groups that do not divide. Returns the weight shape in wshape. */
void q8_conv_out_shape(const q8_value *xv, const q8_conv2d_desc *d, int64_t shape[4]);
q8_status q8_builder_conv_attrs(q8_builder *b, int32_t node, const q8_value *xv,
                                const q8_conv2d_desc *d, int64_t wshape[4]);

/* Float ops: f32 `act` attribute (0 none, 1 relu, 2 relu6) from a q8_act. */
q8_status q8_builder_act_attr(q8_builder *b, int32_t node, q8_act act);

#endif
