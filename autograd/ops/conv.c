/* conv.c — STUB: to be written. */
#include "autograd/ag_impl.h"

void ag_conv2d_backward(ag_ctx *ctx, ag_node *n) { (void)ctx; (void)n; }
