/* reduce.c — STUB: to be written. */
#include "autograd/ag_impl.h"
#define STUB(...) { (void)ctx; ag_error(AG_ERR_UNSUPPORTED, "%s: not implemented", __func__); return NULL; }

void ag_sum_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
ag_tensor *ag_sum(ag_ctx *ctx, ag_tensor *x, const int32_t *dims, int32_t n_dims, bool keepdim) STUB()
ag_tensor *ag_mean(ag_ctx *ctx, ag_tensor *x, const int32_t *dims, int32_t n_dims, bool keepdim) STUB()
