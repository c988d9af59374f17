/* loss.c — STUB: to be written. */
#include "autograd/ag_impl.h"
#define STUB(...) { (void)ctx; ag_error(AG_ERR_UNSUPPORTED, "%s: not implemented", __func__); return NULL; }

void ag_log_softmax_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_nll_loss_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_cross_entropy_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_mse_loss_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
ag_tensor *ag_log_softmax(ag_ctx *ctx, ag_tensor *x) STUB()
ag_tensor *ag_nll_loss(ag_ctx *ctx, ag_tensor *logp, const int32_t *labels) STUB()
ag_tensor *ag_cross_entropy(ag_ctx *ctx, ag_tensor *logits, const int32_t *labels, float label_smoothing) STUB()
ag_tensor *ag_mse_loss(ag_ctx *ctx, ag_tensor *pred, ag_tensor *target) STUB()
