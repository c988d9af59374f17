/* matmul.c — STUB: to be written. */
#include "autograd/ag_impl.h"
#define STUB(...) { (void)ctx; ag_error(AG_ERR_UNSUPPORTED, "%s: not implemented", __func__); return NULL; }

void ag_matmul_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_linear_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
ag_tensor *ag_matmul(ag_ctx *ctx, ag_tensor *a, ag_tensor *b, bool trans_a, bool trans_b) STUB()
ag_tensor *ag_linear(ag_ctx *ctx, ag_tensor *x, ag_tensor *w, ag_tensor *b) STUB()
