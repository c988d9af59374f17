/* activation.c — STUB: to be written. */
#include "autograd/ag_impl.h"
#define STUB(...) { (void)ctx; ag_error(AG_ERR_UNSUPPORTED, "%s: not implemented", __func__); return NULL; }

void ag_relu_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_hardtanh_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_leaky_relu_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_sigmoid_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_tanh_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_hardswish_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
ag_tensor *ag_relu(ag_ctx *ctx, ag_tensor *x) STUB()
ag_tensor *ag_hardtanh(ag_ctx *ctx, ag_tensor *x, float min_val, float max_val) STUB()
ag_tensor *ag_relu6(ag_ctx *ctx, ag_tensor *x) STUB()
ag_tensor *ag_clamp(ag_ctx *ctx, ag_tensor *x, float min_val, float max_val) STUB()
ag_tensor *ag_leaky_relu(ag_ctx *ctx, ag_tensor *x, float negative_slope) STUB()
ag_tensor *ag_sigmoid(ag_ctx *ctx, ag_tensor *x) STUB()
ag_tensor *ag_tanh(ag_ctx *ctx, ag_tensor *x) STUB()
ag_tensor *ag_hardswish(ag_ctx *ctx, ag_tensor *x) STUB()
