/* loss.c — STUB: to be written. */
#include "autograd/ag_impl.h"

void ag_log_softmax_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_nll_loss_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_cross_entropy_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_mse_loss_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
