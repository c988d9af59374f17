/* batch_norm.c — STUB: to be written. */
#include "autograd/ag_impl.h"
#define STUB(...) { (void)ctx; ag_error(AG_ERR_UNSUPPORTED, "%s: not implemented", __func__); return NULL; }

void ag_batch_norm_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
ag_tensor *ag_batch_norm(ag_ctx *ctx, ag_tensor *x, ag_tensor *weight, ag_tensor *bias, ag_tensor *running_mean, ag_tensor *running_var, const ag_batch_norm_args *args) STUB()
