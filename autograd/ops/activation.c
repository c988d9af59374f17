/* activation.c — STUB: to be written. */
#include "autograd/ag_impl.h"

void ag_relu_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_hardtanh_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_leaky_relu_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_sigmoid_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_tanh_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_hardswish_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
