/* shape.c — STUB: to be written. */
#include "autograd/ag_impl.h"
#define STUB(...) { (void)ctx; ag_error(AG_ERR_UNSUPPORTED, "%s: not implemented", __func__); return NULL; }

void ag_reshape_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_cat_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
ag_tensor *ag_reshape(ag_ctx *ctx, ag_tensor *x, int32_t ndim, const int64_t *shape) STUB()
ag_tensor *ag_flatten(ag_ctx *ctx, ag_tensor *x, int32_t start_dim) STUB()
ag_tensor *ag_channels(ag_ctx *ctx, ag_tensor *v) STUB()
ag_tensor *ag_cat(ag_ctx *ctx, ag_tensor *const *xs, int32_t n, int32_t dim) STUB()
