/* shape.c — reshape, flatten and channels (views: no copy) and cat (a copy).
 *
 * A view's data pointer is its input's data (flag AG_F_VIEW); its gradient is its own
 * buffer, added into the input's in backward. reshape, flatten and channels all
 * record AG_OP_RESHAPE; the backward only needs the element count, which views share.
 *
 * cat records AG_OP_CAT with ip[0] = the (non-negative) dim and ip[1] = the number of
 * inputs. Up to AG_MAX_SRC inputs live in node->src; beyond that the node keeps the
 * whole list in node->saved (an arena array) and src holds just the inputs that made
 * recording necessary.
 */
#include "autograd/ag_impl.h"

#include <stdio.h>

/* Loops over more elements than this run on all threads. */
enum { PAR_MIN = 32768 };

/* "[2, -1]" for a requested shape that is not (yet) a tensor's. */
static const char *shape_str(int32_t ndim, const int64_t *shape, char *buf, size_t size)
{
    ag_tensor t = {.ndim = ndim};
    for (int32_t k = 0; k < ndim && k < AG_MAX_DIMS; k++)
        t.shape[k] = shape[k];
    return ag_shape_str(&t, buf, size);
}

/* ---- views ---- */

/* A view of x with the given shape (same numel, checked by the caller). */
static ag_tensor *view_of(ag_ctx *ctx, ag_tensor *x, int32_t ndim, const int64_t *shape)
{
    ag_tensor *y = ag_ctx_alloc(ctx, sizeof *y);
    if (!y)
        return NULL;
    memset(y, 0, sizeof *y);
    y->dtype = x->dtype;
    y->ndim = ndim;
    for (int32_t k = 0; k < AG_MAX_DIMS; k++)
        y->shape[k] = k < ndim ? shape[k] : 1;
    y->numel = x->numel;
    y->data = x->data;
    y->flags = AG_F_VIEW;
    ag_node *n = ag_op_record(ctx, AG_OP_RESHAPE, y, (ag_tensor *[]){x}, 1);
    return ag_op_recorded(n, y);
}

/* Fills out[] from shape[], inferring a -1 from x's element count (torch.reshape's
 * infer_size); false with a message when no size fits. */
static bool infer_shape(const ag_tensor *x, int32_t ndim, const int64_t *shape, int64_t *out)
{
    char sx[AG_SHAPE_STR_MAX], ss[AG_SHAPE_STR_MAX];
    int32_t infer = -1;
    int64_t known = 1;
    bool overflow = false;
    for (int32_t k = 0; k < ndim; k++) {
        out[k] = shape[k];
        if (shape[k] == -1 && infer < 0) {
            infer = k;
        } else if (shape[k] == -1) {
            ag_error(AG_ERR_ARG, "reshape: only one dim may be -1 in %s",
                     shape_str(ndim, shape, ss, sizeof ss));
            return false;
        } else if (shape[k] < 0) {
            ag_error(AG_ERR_ARG, "reshape: invalid size %lld in dim %d of %s",
                     (long long)shape[k], (int)k, shape_str(ndim, shape, ss, sizeof ss));
            return false;
        } else if (shape[k] > 0 && known > INT64_MAX / shape[k]) {
            overflow = true;
        } else {
            known *= shape[k];
        }
    }
    if (infer >= 0 && known == 0) {
        ag_error(AG_ERR_SHAPE, "reshape: cannot view %s as %s: the -1 is ambiguous next to "
                 "a size-0 dim", ag_shape_str(x, sx, sizeof sx),
                 shape_str(ndim, shape, ss, sizeof ss));
        return false;
    }
    if (infer >= 0 && !overflow && x->numel % known == 0)
        out[infer] = x->numel / known;
    else if (infer >= 0 || overflow || known != x->numel) {
        ag_error(AG_ERR_SHAPE, "reshape: shape %s is invalid for input %s of %lld elements",
                 shape_str(ndim, shape, ss, sizeof ss), ag_shape_str(x, sx, sizeof sx),
                 (long long)x->numel);
        return false;
    }
    return true;
}

ag_tensor *ag_reshape(ag_ctx *ctx, ag_tensor *x, int32_t ndim, const int64_t *shape)
{
    if (!x)
        return NULL;
    if (ndim < 0 || ndim > AG_MAX_DIMS || (ndim > 0 && !shape)) {
        ag_error(AG_ERR_ARG, "reshape: %d dims requested (0..%d allowed)", (int)ndim,
                 AG_MAX_DIMS);
        return NULL;
    }
    int64_t out[AG_MAX_DIMS];
    if (!infer_shape(x, ndim, shape, out))
        return NULL;
    return view_of(ctx, x, ndim, out);
}

/* torch.flatten(x, start_dim): dims before start_dim stay, the rest become one; a
 * 0-dim tensor becomes [1]. */
ag_tensor *ag_flatten(ag_ctx *ctx, ag_tensor *x, int32_t start_dim)
{
    if (!x)
        return NULL;
    int32_t nd = x->ndim > 0 ? x->ndim : 1;
    if (start_dim < -nd || start_dim >= nd) {
        char s[AG_SHAPE_STR_MAX];
        ag_error(AG_ERR_SHAPE, "flatten: start_dim %d out of range for %s (expected %d..%d)",
                 (int)start_dim, ag_shape_str(x, s, sizeof s), (int)-nd, (int)nd - 1);
        return NULL;
    }
    int32_t start = start_dim < 0 ? start_dim + nd : start_dim;
    int64_t shape[AG_MAX_DIMS];
    for (int32_t k = 0; k < start; k++)
        shape[k] = x->shape[k];
    shape[start] = ag_shape_numel(x->ndim - start, x->shape + start);
    return view_of(ctx, x, start + 1, shape);
}

ag_tensor *ag_channels(ag_ctx *ctx, ag_tensor *v)
{
    if (!v)
        return NULL;
    if (v->ndim != 1) {
        char s[AG_SHAPE_STR_MAX];
        ag_error(AG_ERR_SHAPE, "channels: expected a 1-D [C] vector, got %s",
                 ag_shape_str(v, s, sizeof s));
        return NULL;
    }
    return view_of(ctx, v, 4, AG_SHAPE(1, v->shape[0], 1, 1));
}

/* dx += g (or = g, into a fresh dx): a view has its input's elements in the same
 * order. */
void ag_reshape_backward(ag_ctx *ctx, ag_node *n)
{
    bool fresh;
    float *dx = ag_grad_write(ctx, n->src[0], &fresh);
    if (!dx)
        return;
    const float *g = n->out->grad;
    AG_ASSERT(n->src[0]->numel == n->out->numel);
    if (fresh) {
        memcpy(dx, g, (size_t)n->out->numel * sizeof(float));
        return;
    }
#pragma omp parallel for if (n->out->numel > PAR_MIN)
    for (int64_t i = 0; i < n->out->numel; i++)
        dx[i] += g[i];
}

/* ---- cat ---- */

/* Every input's shape must equal the first's except in dim (torch.cat). */
static bool cat_shapes_match(ag_tensor *const *xs, int32_t n, int32_t dim)
{
    const ag_tensor *x0 = xs[0];
    for (int32_t i = 1; i < n; i++) {
        bool same = xs[i]->ndim == x0->ndim;
        for (int32_t k = 0; same && k < x0->ndim; k++)
            same = k == dim || xs[i]->shape[k] == x0->shape[k];
        if (!same) {
            char what[64];
            snprintf(what, sizeof what, "sizes must match except in dim %d, got", (int)dim);
            ag_shape_error2("cat", what, x0, xs[i]);
            return false;
        }
    }
    return true;
}

/* The output viewed as [outer, row]: each input contributes a contiguous piece of
 * shape[dim] * inner elements to every row. */
static int64_t cat_outer(const ag_tensor *t, int32_t dim)
{
    return ag_shape_numel(dim, t->shape);
}

static int64_t cat_inner(const ag_tensor *t, int32_t dim)
{
    return ag_shape_numel(t->ndim - dim - 1, t->shape + dim + 1);
}

/* Records the node; for more than AG_MAX_SRC inputs src gets the first inputs that
 * require a gradient (only to decide that a node is needed) and saved the list. */
static ag_tensor *cat_record(ag_ctx *ctx, ag_tensor *y, ag_tensor *const *xs, int32_t n,
                             int32_t dim)
{
    ag_tensor **all = NULL;
    ag_tensor *want[AG_MAX_SRC];
    int32_t n_src = n;
    if (n > AG_MAX_SRC) {
        if (!ag_op_needs_record(ctx, xs, n))
            return y;
        all = ag_ctx_alloc(ctx, (size_t)n * sizeof *all);
        if (!all)
            return NULL;
        n_src = 0;
        for (int32_t i = 0; i < n; i++) {
            all[i] = xs[i];
            if (n_src < AG_MAX_SRC && (xs[i]->flags & AG_F_REQUIRES_GRAD))
                want[n_src++] = xs[i];
        }
        xs = want;
    }
    ag_node *node = ag_op_record(ctx, AG_OP_CAT, y, xs, n_src);
    if (node && ag_op_recorded(node, y)) {
        node->ip[0] = dim;
        node->ip[1] = n;
        node->saved = all;
    }
    return ag_op_recorded(node, y);
}

ag_tensor *ag_cat(ag_ctx *ctx, ag_tensor *const *xs, int32_t n, int32_t dim)
{
    if (!xs || n < 1) {
        ag_error(AG_ERR_ARG, "cat: expected at least one tensor, got %d", xs ? (int)n : 0);
        return NULL;
    }
    for (int32_t i = 0; i < n; i++)
        if (!xs[i])
            return NULL;
    const ag_tensor *x0 = xs[0];
    char s[AG_SHAPE_STR_MAX];
    if (x0->ndim == 0) {
        ag_error(AG_ERR_SHAPE, "cat: a zero-dimensional tensor cannot be concatenated");
        return NULL;
    }
    if (dim < -x0->ndim || dim >= x0->ndim) {
        ag_error(AG_ERR_SHAPE, "cat: dim %d out of range for %s (expected %d..%d)", (int)dim,
                 ag_shape_str(x0, s, sizeof s), (int)-x0->ndim, (int)x0->ndim - 1);
        return NULL;
    }
    dim = dim < 0 ? dim + x0->ndim : dim;
    if (!cat_shapes_match(xs, n, dim))
        return NULL;
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof shape);
    shape[dim] = 0;
    for (int32_t i = 0; i < n; i++)
        shape[dim] += xs[i]->shape[dim];
    ag_tensor *y = ag_op_output(ctx, x0->ndim, shape);
    if (!y)
        return NULL;
    int64_t outer = cat_outer(y, dim), row = y->numel / (outer ? outer : 1);
    int64_t inner = cat_inner(y, dim);
#pragma omp parallel for if (y->numel > PAR_MIN && outer > 1)
    for (int64_t o = 0; o < outer; o++) {
        float *dst = y->data + o * row; /* (shape[dim], inner) */
        for (int32_t i = 0; i < n; i++) {
            int64_t piece = xs[i]->shape[dim] * inner;
            memcpy(dst, xs[i]->data + o * piece, (size_t)piece * sizeof(float));
            dst += piece;
        }
    }
    return cat_record(ctx, y, xs, n, dim);
}

/* dx_i += the piece of g that x_i filled in the forward. */
void ag_cat_backward(ag_ctx *ctx, ag_node *n)
{
    ag_tensor *const *xs = n->saved ? (ag_tensor *const *)n->saved : n->src;
    int32_t count = (int32_t)n->ip[1], dim = (int32_t)n->ip[0];
    ag_tensor *y = n->out;
    int64_t outer = cat_outer(y, dim), row = y->numel / (outer ? outer : 1);
    int64_t inner = cat_inner(y, dim), start = 0;
    for (int32_t i = 0; i < count; i++) {
        int64_t piece = xs[i]->shape[dim] * inner;
        float *dx = ag_grad(ctx, xs[i]);
        const float *g = y->grad + start;
        start += piece;
        if (!dx)
            continue;
#pragma omp parallel for if (y->numel > PAR_MIN && outer > 1)
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < piece; j++)
                dx[o * piece + j] += g[o * row + j];
    }
}
