/* quantize.c — f32 -> u8/i8 with the output value's qparams.
 *
 *   q = clamp(zp + round_half_even(x * f32(1 / scale)), clamp_min, clamp_max)
 *
 * PyTorch's quantize_per_tensor (AffineQuantizerBase.cpp quantize_val; fbgemm Quantize
 * with LEGACY=false): multiply by the float reciprocal, round, then add the zero point.
 * PyTorch clamps to the full dtype range (not the observer's quant_min/max, issue
 * #83521); clamp_min/clamp_max (default: that full range) let a converted model clamp
 * where QAT's fake quantization did. NaN gives the zero point; +-inf saturate. */
#include "quantized/builder.h"

enum { CLAMP_MIN, CLAMP_MAX };
static const q8_attr_spec attrs[] = {
    [CLAMP_MIN] = {"clamp_min", false, Q8_DEF_OUT_QMIN, -128, 255},
    [CLAMP_MAX] = {"clamp_max", false, Q8_DEF_OUT_QMAX, -128, 255},
};

static q8_status check(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_input_dtype(m, n, 0, Q8_F32);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    if (y->dtype != Q8_U8 && y->dtype != Q8_I8)
        return q8_node_error(n, Q8_ERR_FORMAT, "output (value %d) is %s, quantize gives u8 or i8",
                             (int)n->out[0], q8_dtype_name(y->dtype));
    st = q8_check_output(m, n, y->dtype, x->ndim, x->shape);
    if (st == Q8_OK)
        st = q8_check_out_clamp(m, n, CLAMP_MIN, CLAMP_MAX);
    return st;
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    const float *xd = q8_value_data(m, n->in[0]); // (N, ...)
    uint8_t *yd = q8_value_data(m, n->out[0]);    // (N, ...)
    int64_t total = batch * x->item_numel;
    float inv = 1.0f / y->scale;
    int32_t zp = y->zero_point, qmin = (int32_t)n->attr[CLAMP_MIN];
    int32_t qmax = (int32_t)n->attr[CLAMP_MAX];
    enum { BLOCK = 4096 };
    int64_t blocks = (total + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t i = b * BLOCK, len = total - i < BLOCK ? total - i : BLOCK;
        if (m->kernel == Q8_GEMM_AVX2)
            q8_quantize_row_avx2(xd + i, len, inv, zp, qmin, qmax, yd + i);
        else
            q8_quantize_row_reference(xd + i, len, inv, zp, qmin, qmax, yd + i);
    }
    return Q8_OK;
}

const q8_op_def q8_op_quantize = {
    .name = "quantize",
    .min_inputs = 1,
    .max_inputs = 1,
    .attrs = attrs,
    .n_attrs = sizeof attrs / sizeof attrs[0],
    .check = check,
    .run = run,
};

int32_t q8_builder_quantize(q8_builder *b, const char *name, int32_t x, q8_qparams out)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "quantize", name, &x, 1, out.dtype, xv.ndim, xv.shape,
                                    out.scale, out.zero_point, &y);
    q8_builder_clamp_attrs(b, node, Q8_ACT_NONE, out);
    return q8_builder_done(b, node, y);
}
