/* shape.c — STUB: to be written. */
#include "autograd/ag_impl.h"

void ag_reshape_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
void ag_cat_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
