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
/* clamp_min/clamp_max of a fused activation on `out`. */
q8_status q8_builder_clamp_attrs(q8_builder *b, int32_t node, q8_act act, q8_qparams out);

/* add/mul: both inputs quantized, identical shapes, quantized output of that shape. */
q8_status q8_check_binary(const q8_model *m, const q8_node *n);
/* add/mul: the output value and the node with clamp attributes; returns the node. */
int32_t q8_builder_binary(q8_builder *b, const char *op, const char *name, int32_t x, int32_t y,
                          q8_qparams out, q8_act act, q8_value *xv, q8_value *yv,
                          int32_t *out_id);

/* avg pools: multiplier/shift attributes of s_in / s_out. */
q8_status q8_builder_pool_ratio(q8_builder *b, int32_t node, float s_in, float s_out);

/* hardswish's lookup table for these input/output qparams (index: the input byte, int8
 * inputs shifted by +128). */
void q8_hardswish_table(q8_qparams in, q8_qparams out, uint8_t table[256]);

#endif
