/* arith.c — elementwise add, sub, mul, div with NumPy broadcasting (torch.add, sub,
 * mul, div), and the unary neg, scale (alpha * x) and add_scalar (x + c).
 *
 * Broadcasting: shapes are aligned at their trailing dims and a size-1 dim stretches
 * to the other operand's size. A plan folds the output shape into at most five
 * coalesced dims (size-1 dims dropped, neighbours merged when both operands walk them
 * the same way) with each operand's element stride per dim, 0 where it is stretched.
 * The hot cases then fall out as short loop nests whose innermost loop runs with
 * stride 1 or 0 on each side, so each is one plain vectorisable loop:
 *     same shape                  -> [n]         a (1)            b (1)
 *     one-element b               -> [n]         a (1)            b (0)
 *     bias row [F] over [N, F]    -> [N, F]      a (F, 1)         b (0, 1)
 *     [1, C, 1, 1] over NCHW      -> [N, C, HW]  a (C*HW, HW, 1)  b (0, 1, 0)
 *     [C, 1] over [C, W]          -> [C, W]      a (W, 1)         b (1, 0)
 *
 * Backward sums a broadcast gradient back onto each input's shape (PyTorch's sum_to)
 * with ag_reduce_sum_acc() from reduce.c, in double.
 */
#include "autograd/ag_impl.h"

/* Defined in reduce.c (documented there); its prototype belongs in ag_impl.h. */
void ag_reduce_sum_acc(int32_t ndim, const int64_t *shape, const bool *keep,
                       const float *x, const float *w, double scale, float *dst);

/* Loops over more elements than this run on all threads; BLOCK is the unit of work. */
enum { PAR_MIN = 32768, BLOCK = 8192 };

/* ---- broadcast plan ---- */

typedef struct bcast_plan {
    int32_t nd;                     /* coalesced dims, outermost first, >= 1 */
    int64_t size[AG_MAX_DIMS];
    int64_t stride[2][AG_MAX_DIMS]; /* element strides of operands 0 and 1; 0 = stretched */
    int64_t numel;
} bcast_plan;

/* Dim r of t counted from the end (0 = last); 1 beyond t's dims (NumPy alignment). */
static int64_t trailing_dim(const ag_tensor *t, int32_t r)
{
    return r < t->ndim ? t->shape[t->ndim - 1 - r] : 1;
}

/* The broadcast shape of a and b; false when a pair of dims differs and neither is 1. */
static bool broadcast_shape(const ag_tensor *a, const ag_tensor *b, int32_t *ndim,
                            int64_t *shape)
{
    int32_t nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int32_t r = 0; r < nd; r++) {
        int64_t da = trailing_dim(a, r), db = trailing_dim(b, r);
        if (da != db && da != 1 && db != 1)
            return false;
        shape[nd - 1 - r] = da == 1 ? db : da;
    }
    *ndim = nd;
    return true;
}

/* The plan for walking the output `out_shape` with operands t0 and t1, whose shapes
 * broadcast to it. Built from the innermost dim outwards. */
static void plan_make(const ag_tensor *t0, const ag_tensor *t1, int32_t nd,
                      const int64_t *out_shape, bcast_plan *p)
{
    const ag_tensor *t[2] = {t0, t1};
    int64_t run[2] = {1, 1}; /* elements of each operand inside the current dim */
    int64_t size[AG_MAX_DIMS], st[2][AG_MAX_DIMS];
    int32_t m = 0;
    for (int32_t r = 0; r < nd; r++) {
        int64_t n = out_shape[nd - 1 - r];
        if (n == 1)
            continue;
        int64_t s[2];
        for (int i = 0; i < 2; i++) {
            int64_t ti = trailing_dim(t[i], r);
            s[i] = ti == 1 ? 0 : run[i];
            run[i] *= ti;
        }
        /* Strides that are both zero or both nonzero on two neighbouring dims mean
         * the operand walks them as one dim (nothing but size-1 dims lies between). */
        if (m > 0 && (s[0] == 0) == (st[0][m - 1] == 0) && (s[1] == 0) == (st[1][m - 1] == 0)) {
            size[m - 1] *= n;
            continue;
        }
        size[m] = n;
        st[0][m] = s[0];
        st[1][m] = s[1];
        m++;
    }
    if (m == 0) { /* one element: a single contiguous dim */
        size[0] = 1;
        st[0][0] = st[1][0] = 1;
        m = 1;
    }
    p->nd = m;
    p->numel = 1;
    for (int32_t k = 0; k < m; k++) {
        p->size[k] = size[m - 1 - k];
        p->stride[0][k] = st[0][m - 1 - k];
        p->stride[1][k] = st[1][m - 1 - k];
        p->numel *= p->size[k];
    }
}

/* Position in the plan: a multi-index and the matching offset into each operand. */
typedef struct bcast_cursor {
    int64_t idx[AG_MAX_DIMS];
    int64_t off[2];
} bcast_cursor;

static void cursor_seek(const bcast_plan *p, bcast_cursor *c, int64_t pos)
{
    c->off[0] = c->off[1] = 0;
    for (int32_t k = p->nd - 1; k >= 0; k--) {
        c->idx[k] = pos % p->size[k];
        pos /= p->size[k];
        c->off[0] += c->idx[k] * p->stride[0][k];
        c->off[1] += c->idx[k] * p->stride[1][k];
    }
}

/* Moves `len` elements along the innermost dim (at most to its end), carrying out. */
static void cursor_advance(const bcast_plan *p, bcast_cursor *c, int64_t len)
{
    int32_t k = p->nd - 1;
    c->idx[k] += len;
    c->off[0] += len * p->stride[0][k];
    c->off[1] += len * p->stride[1][k];
    while (k > 0 && c->idx[k] == p->size[k]) {
        c->off[0] -= p->size[k] * p->stride[0][k];
        c->off[1] -= p->size[k] * p->stride[1][k];
        c->idx[k] = 0;
        k--;
        c->idx[k]++;
        c->off[0] += p->stride[0][k];
        c->off[1] += p->stride[1][k];
    }
}

/* ---- kernels: one contiguous run of the innermost dim ---- */

/* What a kernel computes per element; the ACC forms add into y (backward). */
typedef enum bin_fn { BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV, BIN_ACC_MUL, BIN_ACC_DIV } bin_fn;

static void run_vv(bin_fn f, int64_t n, const float *restrict a, const float *restrict b,
                   float *restrict y)
{
    switch (f) {
    case BIN_ADD: for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i]; break;
    case BIN_SUB: for (int64_t i = 0; i < n; i++) y[i] = a[i] - b[i]; break;
    case BIN_MUL: for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i]; break;
    case BIN_DIV: for (int64_t i = 0; i < n; i++) y[i] = a[i] / b[i]; break;
    case BIN_ACC_MUL: for (int64_t i = 0; i < n; i++) y[i] += a[i] * b[i]; break;
    case BIN_ACC_DIV: for (int64_t i = 0; i < n; i++) y[i] += a[i] / b[i]; break;
    }
}

/* b is one value for the whole run. */
static void run_vs(bin_fn f, int64_t n, const float *restrict a, float b, float *restrict y)
{
    switch (f) {
    case BIN_ADD: for (int64_t i = 0; i < n; i++) y[i] = a[i] + b; break;
    case BIN_SUB: for (int64_t i = 0; i < n; i++) y[i] = a[i] - b; break;
    case BIN_MUL: for (int64_t i = 0; i < n; i++) y[i] = a[i] * b; break;
    case BIN_DIV: for (int64_t i = 0; i < n; i++) y[i] = a[i] / b; break;
    case BIN_ACC_MUL: for (int64_t i = 0; i < n; i++) y[i] += a[i] * b; break;
    case BIN_ACC_DIV: for (int64_t i = 0; i < n; i++) y[i] += a[i] / b; break;
    }
}

/* a is one value for the whole run (only the forward ops get here: the backward
 * always passes the full-shaped gradient as operand 0). */
static void run_sv(bin_fn f, int64_t n, float a, const float *restrict b, float *restrict y)
{
    switch (f) {
    case BIN_ADD: for (int64_t i = 0; i < n; i++) y[i] = a + b[i]; break;
    case BIN_SUB: for (int64_t i = 0; i < n; i++) y[i] = a - b[i]; break;
    case BIN_MUL: for (int64_t i = 0; i < n; i++) y[i] = a * b[i]; break;
    case BIN_DIV: for (int64_t i = 0; i < n; i++) y[i] = a / b[i]; break;
    case BIN_ACC_MUL:
    case BIN_ACC_DIV: AG_ASSERT(!"accumulating kernels take a full-shaped operand 0");
    }
}

/* y[lo..hi) (output layout) from the operands, run by run. */
static void plan_range(bin_fn f, const bcast_plan *p, int64_t lo, int64_t hi,
                       const float *a, const float *b, float *y)
{
    int32_t in = p->nd - 1;
    bcast_cursor c;
    cursor_seek(p, &c, lo);
    while (lo < hi) {
        int64_t len = p->size[in] - c.idx[in];
        if (len > hi - lo)
            len = hi - lo;
        const float *pa = a + c.off[0], *pb = b + c.off[1];
        if (p->stride[0][in] && p->stride[1][in])
            run_vv(f, len, pa, pb, y + lo);
        else if (p->stride[0][in])
            run_vs(f, len, pa, *pb, y + lo);
        else
            run_sv(f, len, *pa, pb, y + lo);
        cursor_advance(p, &c, len);
        lo += len;
    }
}

static void plan_apply(bin_fn f, const bcast_plan *p, const float *a, const float *b,
                       float *y)
{
    int64_t n_blocks = (p->numel + BLOCK - 1) / BLOCK;
#pragma omp parallel for if (p->numel > PAR_MIN)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
        int64_t lo = blk * BLOCK;
        int64_t hi = lo + BLOCK < p->numel ? lo + BLOCK : p->numel;
        plan_range(f, p, lo, hi, a, b, y);
    }
}

/* ---- binary forward ---- */

/* Whether backward needs a temporary (out): only for a stretched input that wants a
 * gradient. mul sums g * other straight from the two buffers when the other operand
 * has the output's shape; div always divides first. */
static bool needs_scratch(ag_op op, const ag_tensor *a, const ag_tensor *b,
                          const ag_tensor *y)
{
    bool a_full = a->numel == y->numel, b_full = b->numel == y->numel;
    bool a_sum = !a_full && (a->flags & AG_F_REQUIRES_GRAD);
    bool b_sum = !b_full && (b->flags & AG_F_REQUIRES_GRAD);
    if (op == AG_OP_MUL)
        return (a_sum && !b_full) || (b_sum && !a_full);
    return op == AG_OP_DIV && (a_sum || b_sum);
}

static ag_tensor *binary(ag_ctx *ctx, ag_op op, bin_fn f, ag_tensor *a, ag_tensor *b)
{
    if (!a || !b)
        return NULL;
    int32_t nd;
    int64_t shape[AG_MAX_DIMS];
    if (!broadcast_shape(a, b, &nd, shape)) {
        ag_shape_error2(ag_op_names[op], "cannot broadcast", a, b);
        return NULL;
    }
    ag_tensor *y = ag_op_output(ctx, nd, shape);
    if (!y)
        return NULL;
    bcast_plan p;
    plan_make(a, b, nd, shape, &p);
    plan_apply(f, &p, a->data, b->data, y->data);
    ag_tensor *src[2] = {a, b};
    /* Backward may need an output-sized buffer for a product or quotient that is then
     * summed onto a stretched input; take it now, where OOM can still be reported. */
    float *scratch = NULL;
    if (needs_scratch(op, a, b, y) && ag_op_needs_record(ctx, src, 2)) {
        scratch = ag_ctx_alloc(ctx, (size_t)y->numel * sizeof(float));
        if (!scratch)
            return NULL;
    }
    ag_node *n = ag_op_record(ctx, op, y, src, 2);
    if (n && ag_op_recorded(n, y))
        n->saved = scratch; /* (out) */
    return ag_op_recorded(n, y);
}

ag_tensor *ag_add(ag_ctx *ctx, ag_tensor *a, ag_tensor *b)
{
    return binary(ctx, AG_OP_ADD, BIN_ADD, a, b);
}

ag_tensor *ag_sub(ag_ctx *ctx, ag_tensor *a, ag_tensor *b)
{
    return binary(ctx, AG_OP_SUB, BIN_SUB, a, b);
}

ag_tensor *ag_mul(ag_ctx *ctx, ag_tensor *a, ag_tensor *b)
{
    return binary(ctx, AG_OP_MUL, BIN_MUL, a, b);
}

ag_tensor *ag_div(ag_ctx *ctx, ag_tensor *a, ag_tensor *b)
{
    return binary(ctx, AG_OP_DIV, BIN_DIV, a, b);
}

/* ---- binary backward ---- */

/* dt += scale * sum_to(x * w): x (and w unless NULL) have the output's shape; the
 * dims where t is stretched are summed away. */
static void sum_onto(const ag_tensor *out, const ag_tensor *t, const float *x,
                     const float *w, double scale, float *dt)
{
    bool keep[AG_MAX_DIMS];
    for (int32_t k = 0; k < out->ndim; k++)
        keep[k] = trailing_dim(t, out->ndim - 1 - k) == out->shape[k];
    ag_reduce_sum_acc(out->ndim, out->shape, keep, x, w, scale, dt);
}

/* dt += sign * sum_to(g): the gradient of add and sub. */
static void grad_pass(ag_ctx *ctx, ag_node *n, int i, float sign)
{
    ag_tensor *t = n->src[i], *y = n->out;
    float *dt = ag_grad(ctx, t);
    if (!dt)
        return;
    if (t->numel != y->numel) {
        sum_onto(y, t, y->grad, NULL, sign, dt);
        return;
    }
    const float *g = y->grad;
#pragma omp parallel for if (y->numel > PAR_MIN)
    for (int64_t j = 0; j < y->numel; j++)
        dt[j] += sign * g[j];
}

/* d[lo, hi) = sign g, into a fresh buffer (fetched ahead: it is not in cache), or
 * d[lo, hi) += sign g. */
static inline void grad_block(float *restrict d, const float *restrict g, float sign,
                              bool fresh, int64_t lo, int64_t hi, int64_t len)
{
    if (!fresh) {
        for (int64_t j = lo; j < hi; j++)
            d[j] += sign * g[j];
        return;
    }
    if (lo + AG_PREFETCH_AHEAD < len)
        ag_prefetch_store(d + lo + AG_PREFETCH_AHEAD);
    for (int64_t j = lo; j < hi; j++)
        d[j] = sign * g[j];
}

/* da += g, db += sign_b g (or =, into fresh buffers). When neither operand was
 * broadcast, both in one pass: one parallel region instead of two (each costs ~30 us of
 * wake-up under the passive wait policy cqat runs with) and one read of g. a and b may
 * be the same tensor: then db is not fresh, and each block of da is stored before db
 * adds into it. */
static void add_sub_backward(ag_ctx *ctx, ag_node *n, float sign_b)
{
    ag_tensor *a = n->src[0], *b = n->src[1], *y = n->out;
    if (a->numel != y->numel || b->numel != y->numel) {
        grad_pass(ctx, n, 0, 1.0f);
        grad_pass(ctx, n, 1, sign_b);
        return;
    }
    bool a_fresh, b_fresh;
    float *da = ag_grad_write(ctx, a, &a_fresh), *db = ag_grad_write(ctx, b, &b_fresh);
    const float *g = y->grad;
    const int64_t len = y->numel;
#pragma omp parallel for if (len > PAR_MIN)
    for (int64_t j0 = 0; j0 < len; j0 += AG_LINE_FLOATS) {
        int64_t end = j0 + AG_LINE_FLOATS < len ? j0 + AG_LINE_FLOATS : len;
        if (da)
            grad_block(da, g, 1.0f, a_fresh, j0, end, len);
        if (db)
            grad_block(db, g, sign_b, b_fresh, j0, end, len);
    }
}

void ag_add_backward(ag_ctx *ctx, ag_node *n)
{
    add_sub_backward(ctx, n, 1.0f);
}

void ag_sub_backward(ag_ctx *ctx, ag_node *n)
{
    add_sub_backward(ctx, n, -1.0f); /* torch: -grad */
}

/* dt += sum_to(g (f) o), f = mul or div, o the operand other than t. */
static void grad_with_other(ag_ctx *ctx, ag_node *n, int i, bin_fn f, const ag_tensor *o)
{
    ag_tensor *t = n->src[i], *y = n->out;
    float *dt = ag_grad(ctx, t);
    if (!dt)
        return;
    bcast_plan p; /* operand 0: the gradient, in the output's layout; operand 1: o */
    plan_make(y, o, y->ndim, y->shape, &p);
    if (t->numel == y->numel) {
        plan_apply(f == BIN_MUL ? BIN_ACC_MUL : BIN_ACC_DIV, &p, y->grad, o->data, dt);
    } else if (f == BIN_MUL && o->numel == y->numel) {
        sum_onto(y, t, y->grad, o->data, 1.0, dt); /* no temporary: sum g * o directly */
    } else {
        float *s = n->saved; /* (out) g * o or g / o before the sum */
        AG_ASSERT(s); /* taken by the forward, see needs_scratch() */
        plan_apply(f, &p, y->grad, o->data, s);
        sum_onto(y, t, s, NULL, 1.0, dt);
    }
}

void ag_mul_backward(ag_ctx *ctx, ag_node *n)
{
    grad_with_other(ctx, n, 0, BIN_MUL, n->src[1]); /* torch: grad * other */
    grad_with_other(ctx, n, 1, BIN_MUL, n->src[0]); /* torch: grad * self */
}

/* db += sum_to(-grad * ((a / b) / b)) as torch's div_tensor_other_backward, where
 * a / b is the output y already computed. */
static void div_grad_b(ag_ctx *ctx, ag_node *n)
{
    ag_tensor *b = n->src[1], *y = n->out;
    float *db = ag_grad(ctx, b);
    if (!db)
        return;
    const float *g = y->grad, *q = y->data;
    if (b->numel == y->numel) {
        const float *bv = b->data;
#pragma omp parallel for if (y->numel > PAR_MIN)
        for (int64_t j = 0; j < y->numel; j++)
            db[j] += -g[j] * (q[j] / bv[j]);
        return;
    }
    float *s = n->saved; /* (out) */
    AG_ASSERT(s);
    bcast_plan p;
    plan_make(y, b, y->ndim, y->shape, &p);
    plan_apply(BIN_DIV, &p, q, b->data, s);
#pragma omp parallel for if (y->numel > PAR_MIN)
    for (int64_t j = 0; j < y->numel; j++)
        s[j] = -g[j] * s[j];
    sum_onto(y, b, s, NULL, 1.0, db);
}

void ag_div_backward(ag_ctx *ctx, ag_node *n)
{
    grad_with_other(ctx, n, 0, BIN_DIV, n->src[1]); /* torch: grad / other */
    div_grad_b(ctx, n);
}

/* ---- unary: neg, scale, add_scalar ---- */

/* y = alpha * x + c elementwise, computed as torch does for each op: -x, x * alpha,
 * x + c (each exact in one rounding). */
static ag_tensor *affine(ag_ctx *ctx, ag_op op, ag_tensor *x, float alpha, float c)
{
    if (!x)
        return NULL;
    ag_tensor *y = ag_op_output(ctx, x->ndim, x->shape);
    if (!y)
        return NULL;
    const float *xv = x->data;
    float *yv = y->data;
    if (op == AG_OP_ADD_SCALAR) {
#pragma omp parallel for if (x->numel > PAR_MIN)
        for (int64_t i = 0; i < x->numel; i++)
            yv[i] = xv[i] + c;
    } else {
#pragma omp parallel for if (x->numel > PAR_MIN)
        for (int64_t i = 0; i < x->numel; i++)
            yv[i] = xv[i] * alpha;
    }
    ag_node *n = ag_op_record(ctx, op, y, (ag_tensor *[]){x}, 1);
    if (n && ag_op_recorded(n, y))
        n->fp[0] = alpha;
    return ag_op_recorded(n, y);
}

/* dx += alpha * g: the backward of all three (alpha = 1 for add_scalar). */
static void affine_backward(ag_ctx *ctx, ag_node *n)
{
    float *dx = ag_grad(ctx, n->src[0]);
    if (!dx)
        return;
    const float *g = n->out->grad;
    float alpha = n->fp[0];
#pragma omp parallel for if (n->out->numel > PAR_MIN)
    for (int64_t i = 0; i < n->out->numel; i++)
        dx[i] += g[i] * alpha;
}

ag_tensor *ag_neg(ag_ctx *ctx, ag_tensor *x)
{
    return affine(ctx, AG_OP_NEG, x, -1.0f, 0.0f);
}

void ag_neg_backward(ag_ctx *ctx, ag_node *n) { affine_backward(ctx, n); }

ag_tensor *ag_scale(ag_ctx *ctx, ag_tensor *x, float alpha)
{
    return affine(ctx, AG_OP_SCALE, x, alpha, 0.0f);
}

void ag_scale_backward(ag_ctx *ctx, ag_node *n) { affine_backward(ctx, n); }

ag_tensor *ag_add_scalar(ag_ctx *ctx, ag_tensor *x, float c)
{
    return affine(ctx, AG_OP_ADD_SCALAR, x, 1.0f, c);
}

void ag_add_scalar_backward(ag_ctx *ctx, ag_node *n) { affine_backward(ctx, n); }
