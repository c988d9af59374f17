/* pool.c — STUB: to be written. */
#include "autograd/ag_impl.h"
#define STUB(...) { (void)ctx; ag_error(AG_ERR_UNSUPPORTED, "%s: not implemented", __func__); return NULL; }

void ag_max_pool2d_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_avg_pool2d_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_adaptive_avg_pool2d_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
ag_tensor *ag_max_pool2d(ag_ctx *ctx, ag_tensor *x, const ag_pool2d_args *args) STUB()
ag_tensor *ag_avg_pool2d(ag_ctx *ctx, ag_tensor *x, const ag_pool2d_args *args) STUB()
ag_tensor *ag_adaptive_avg_pool2d(ag_ctx *ctx, ag_tensor *x, int32_t out_h, int32_t out_w) STUB()
