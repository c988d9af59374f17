/* registry.c — op names and backward functions, generated from ops.def. */
#include "autograd/ag_impl.h"

const char *const ag_op_names[] = {
#define AG_OP(ENUM, name) #name,
#include "autograd/ops.def"
#undef AG_OP
};

const ag_backward_fn ag_op_backward[] = {
#define AG_OP(ENUM, name) ag_##name##_backward,
#include "autograd/ops.def"
#undef AG_OP
};

/* The tables are positional: these catch an entry added to one and not the other. */
_Static_assert(sizeof ag_op_names / sizeof ag_op_names[0] == AG_OP_COUNT,
               "op name table out of step with ops.def");
_Static_assert(sizeof ag_op_backward / sizeof ag_op_backward[0] == AG_OP_COUNT,
               "op backward table out of step with ops.def");

/* CUSTOM nodes carry their own backward (n->custom_backward); this entry is never
 * called through the table. */
void ag_custom_backward(ag_ctx *ctx, ag_node *n)
{
    AG_ASSERT(n->custom_backward);
    n->custom_backward(ctx, n);
}
