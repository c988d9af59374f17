/* matmul.c — STUB: to be written. */
#include "autograd/ag_impl.h"

void ag_matmul_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_linear_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
