/* adaptive_avg_pool2d_f32.c — float adaptive average pooling, PyTorch's
 * adaptive_avg_pool2d: output row o averages input rows [floor(o*H/OH), ceil((o+1)*H/OH))
 * (likewise columns). The float32 sum runs row by row; then, as PyTorch,
 *
 *   y = sum / f32(H*W)           for a 1x1 output (ATen computes mean(x, {-1, -2}))
 *   y = sum / f32(kh) / f32(kw)  otherwise (cpu_adaptive_avg_pool: two divisions)
 *
 * with kh x kw the window. The output size is the output value's shape. */
#include "quantized/builder.h"

#include <inttypes.h>

static q8_status check(const q8_model *m, const q8_node *n)
{
    q8_status st = q8_check_input_dtype(m, n, 0, Q8_F32);
    if (st == Q8_OK)
        st = q8_check_input_rank(m, n, 0, 4);
    if (st != Q8_OK)
        return st;
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    if (y->dtype != Q8_F32 || y->ndim != 4)
        return q8_node_error(n, Q8_ERR_FORMAT,
                             "output (value %d) is %s of rank %d, adaptive_avg_pool2d_f32 gives "
                             "f32 of rank 4 (its shape sets the output size)",
                             (int)n->out[0], q8_dtype_name(y->dtype), (int)y->ndim);
    int64_t shape[4] = {-1, x->shape[1], y->shape[2], y->shape[3]};
    return q8_check_output(m, n, Q8_F32, 4, shape);
}

static q8_status run(q8_model *m, const q8_node *n, int64_t batch)
{
    const q8_value *x = q8_in(m, n, 0), *y = q8_out(m, n);
    const float *xd = q8_value_data(m, n->in[0]); // (N, C, H, W)
    float *yd = q8_value_data(m, n->out[0]);      // (N, C, OH, OW)
    int64_t h = x->shape[2], w = x->shape[3], oh_n = y->shape[2], ow_n = y->shape[3];
    int64_t planes = batch * x->shape[1];
    bool global = oh_n == 1 && ow_n == 1;
#pragma omp parallel for schedule(static) if (planes * h * w > 32768)
    for (int64_t t = 0; t < planes; t++) {
        const float *xp = xd + t * h * w; // (H, W)
        float *yp = yd + t * oh_n * ow_n; // (OH, OW)
        for (int64_t oh = 0; oh < oh_n; oh++) {
            int64_t hs = q8_adaptive_start(oh, h, oh_n), he = q8_adaptive_end(oh, h, oh_n);
            for (int64_t ow = 0; ow < ow_n; ow++) {
                int64_t ws = q8_adaptive_start(ow, w, ow_n), we = q8_adaptive_end(ow, w, ow_n);
                float sum = 0.0f;
                for (int64_t ih = hs; ih < he; ih++)
                    for (int64_t iw = ws; iw < we; iw++)
                        sum += xp[ih * w + iw];
                yp[oh * ow_n + ow] = global ? sum / (float)(h * w)
                                            : sum / (float)(he - hs) / (float)(we - ws);
            }
        }
    }
    return Q8_OK;
}

const q8_op_def q8_op_adaptive_avg_pool2d_f32 = {
    .name = "adaptive_avg_pool2d_f32", .min_inputs = 1, .max_inputs = 1, .check = check,
    .run = run,
};

int32_t q8_builder_adaptive_avg_pool2d_f32(q8_builder *b, const char *name, int32_t x,
                                           int64_t out_h, int64_t out_w)
{
    q8_value xv;
    if (q8_builder_value(b, x, &xv) != Q8_OK)
        return -1;
    if (xv.ndim != 4 || out_h < 1 || out_w < 1 || out_h > Q8_MAX_DIM || out_w > Q8_MAX_DIM) {
        q8_error(Q8_ERR_ARG, "adaptive_avg_pool2d_f32 '%s': needs a rank-4 input and an output "
                 "size of at least 1x1", name ? name : "");
        q8_builder_fail(b, Q8_ERR_ARG);
        return -1;
    }
    int64_t shape[4] = {-1, xv.shape[1], out_h, out_w};
    int32_t y = -1;
    int32_t node = q8_builder_node1(b, "adaptive_avg_pool2d_f32", name, &x, 1, Q8_F32, 4, shape,
                                    0.0f, 0, &y);
    return q8_builder_done(b, node, y);
}
