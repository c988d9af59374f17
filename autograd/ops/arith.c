/* arith.c — STUB: to be written. */
#include "autograd/ag_impl.h"
#define STUB(...) { (void)ctx; ag_error(AG_ERR_UNSUPPORTED, "%s: not implemented", __func__); return NULL; }

void ag_add_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_sub_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_mul_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_div_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_neg_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_scale_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_add_scalar_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
ag_tensor *ag_add(ag_ctx *ctx, ag_tensor *a, ag_tensor *b) STUB()
ag_tensor *ag_sub(ag_ctx *ctx, ag_tensor *a, ag_tensor *b) STUB()
ag_tensor *ag_mul(ag_ctx *ctx, ag_tensor *a, ag_tensor *b) STUB()
ag_tensor *ag_div(ag_ctx *ctx, ag_tensor *a, ag_tensor *b) STUB()
ag_tensor *ag_neg(ag_ctx *ctx, ag_tensor *x) STUB()
ag_tensor *ag_scale(ag_ctx *ctx, ag_tensor *x, float alpha) STUB()
ag_tensor *ag_add_scalar(ag_ctx *ctx, ag_tensor *x, float c) STUB()
