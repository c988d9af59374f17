/* pool.c — STUB: to be written. */
#include "autograd/ag_impl.h"

void ag_max_pool2d_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_avg_pool2d_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_adaptive_avg_pool2d_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
