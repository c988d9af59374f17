/* dropout.c — STUB: to be written. */
#include "autograd/ag_impl.h"
#define STUB(...) { (void)ctx; ag_error(AG_ERR_UNSUPPORTED, "%s: not implemented", __func__); return NULL; }

void ag_dropout_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
ag_tensor *ag_dropout(ag_ctx *ctx, ag_tensor *x, float p, bool training, ag_rng *rng) STUB()
