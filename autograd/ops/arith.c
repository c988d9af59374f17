/* arith.c — STUB: to be written. */
#include "autograd/ag_impl.h"

void ag_add_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_sub_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_mul_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_div_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_neg_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_scale_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_add_scalar_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
