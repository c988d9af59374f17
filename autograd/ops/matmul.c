/* matmul.c — matrix products through cblas_sgemm: ag_matmul (torch.mm with optional
 * transposes) and ag_linear (torch.nn.functional.linear).
 *
 * Backward passes call sgemm straight into the gradient buffers: beta = 0 into a fresh
 * one (ag_grad_write), beta = 1 to add to one that holds a contribution already, so
 * neither zeroing nor accumulation (+=) costs a pass.
 */
#include "autograd/ag_impl.h"

#include <cblas.h>
#include <inttypes.h>
#include <stdio.h>

/* Row-major C (m, n) = A (m, k) . B (k, n) + beta C, with op() transposes. BLAS rejects
 * or leaves undefined the empty cases; like PyTorch, an empty sum is zero. */
static void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a,
                  int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    if (m == 0 || n == 0)
        return;
    if (k == 0) {
        if (beta == 0.0f)
            for (int64_t i = 0; i < m; i++)
                memset(c + i * ldc, 0, (size_t)n * sizeof(float));
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)m, (blasint)n, (blasint)k, 1.0f, a, (blasint)lda, b, (blasint)ldb,
                beta, c, (blasint)ldc);
}

/* ---- matmul ----------------------------------------------------------------------- */

/* "[3, 2] (transposed: 2x3)" or "[2, 3]" into buf. */
static const char *operand_str(const ag_tensor *t, bool trans, char *buf, size_t size)
{
    char s[AG_SHAPE_STR_MAX];
    ag_shape_str(t, s, sizeof s);
    if (trans)
        snprintf(buf, size, "%s (transposed: %" PRId64 "x%" PRId64 ")", s, t->shape[1],
                 t->shape[0]);
    else
        snprintf(buf, size, "%s", s);
    return buf;
}

static bool matmul_check(const ag_tensor *a, const ag_tensor *b, bool trans_a, bool trans_b)
{
    char sa[2 * AG_SHAPE_STR_MAX], sb[2 * AG_SHAPE_STR_MAX];
    if (a->ndim != 2 || b->ndim != 2) {
        ag_shape_error2("matmul", "expects 2-D matrices, got a", a, b);
        return false;
    }
    int64_t ka = trans_a ? a->shape[0] : a->shape[1];
    int64_t kb = trans_b ? b->shape[1] : b->shape[0];
    if (ka != kb) {
        ag_error(AG_ERR_SHAPE,
                 "matmul: a %s and b %s cannot be multiplied: %" PRId64
                 " columns against %" PRId64 " rows",
                 operand_str(a, trans_a, sa, sizeof sa), operand_str(b, trans_b, sb, sizeof sb),
                 ka, kb);
        return false;
    }
    return true;
}

/* C (M, N) = op(A) (M, K) . op(B) (K, N), torch.mm(a.t() if trans_a else a, ...). */
ag_tensor *ag_matmul(ag_ctx *ctx, ag_tensor *a, ag_tensor *b, bool trans_a, bool trans_b)
{
    if (!a || !b)
        return NULL;
    if (!matmul_check(a, b, trans_a, trans_b))
        return NULL;
    int64_t m = trans_a ? a->shape[1] : a->shape[0];
    int64_t k = trans_a ? a->shape[0] : a->shape[1];
    int64_t n = trans_b ? b->shape[0] : b->shape[1];
    ag_tensor *c = ag_op_output(ctx, 2, AG_SHAPE(m, n)); // (M, N)
    if (!c)
        return NULL;
    sgemm(trans_a, trans_b, m, n, k, a->data, a->shape[1], b->data, b->shape[1], 0.0f, c->data,
          n);
    ag_node *node = ag_op_record(ctx, AG_OP_MATMUL, c, (ag_tensor *[]){a, b}, 2);
    if (node && ag_op_recorded(node, c)) {
        node->ip[0] = trans_a;
        node->ip[1] = trans_b;
    }
    return ag_op_recorded(node, c);
}

/* With G = dC (M, N):  d op(A) = G op(B)^T  and  d op(B) = op(A)^T G.  A transposed
 * operand receives the transpose of that: dA = op(B) G^T, dB = G^T op(A). */
void ag_matmul_backward(ag_ctx *ctx, ag_node *node)
{
    ag_tensor *a = node->src[0], *b = node->src[1];
    bool ta = node->ip[0], tb = node->ip[1];
    int64_t m = node->out->shape[0], n = node->out->shape[1];
    int64_t k = ta ? a->shape[0] : a->shape[1];
    int64_t lda = a->shape[1], ldb = b->shape[1];
    const float *g = node->out->grad; // (M, N)
    bool fresh; /* a then b: if they are one tensor, da is stored before db adds */
    float *da = ag_grad_write(ctx, a, &fresh);
    float beta = fresh ? 0.0f : 1.0f;
    if (da && !ta)
        sgemm(false, !tb, m, k, n, g, n, b->data, ldb, beta, da, k); // (M, K)
    if (da && ta)
        sgemm(tb, true, k, m, n, b->data, ldb, g, n, beta, da, m); // (K, M)
    float *db = ag_grad_write(ctx, b, &fresh);
    beta = fresh ? 0.0f : 1.0f;
    if (db && !tb)
        sgemm(!ta, false, k, n, m, a->data, lda, g, n, beta, db, n); // (K, N)
    if (db && tb)
        sgemm(true, ta, n, k, m, g, n, a->data, lda, beta, db, k); // (N, K)
}

/* ---- linear ----------------------------------------------------------------------- */

static bool linear_check(const ag_tensor *x, const ag_tensor *w, const ag_tensor *b)
{
    char sx[AG_SHAPE_STR_MAX], sw[AG_SHAPE_STR_MAX], sb[AG_SHAPE_STR_MAX];
    ag_shape_str(x, sx, sizeof sx);
    ag_shape_str(w, sw, sizeof sw);
    if (w->ndim != 2) {
        ag_error(AG_ERR_SHAPE, "linear: weight %s must be 2-D [out_features, in_features]", sw);
        return false;
    }
    if (x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1]) {
        ag_error(AG_ERR_SHAPE,
                 "linear: input %s has %" PRId64 " features, weight %s expects %" PRId64, sx,
                 x->ndim ? x->shape[x->ndim - 1] : 0, sw, w->shape[1]);
        return false;
    }
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0])) {
        ag_error(AG_ERR_SHAPE,
                 "linear: bias %s must be [%" PRId64 "], one value per output "
                 "feature of weight %s",
                 ag_shape_str(b, sb, sizeof sb), w->shape[0], sw);
        return false;
    }
    return true;
}

/* y = x w^T + b, torch.nn.functional.linear: x [*, in], w [out, in], b [out] -> y [*, out].
 * Leading dims of x are flattened into rows. */
ag_tensor *ag_linear(ag_ctx *ctx, ag_tensor *x, ag_tensor *w, ag_tensor *b)
{
    if (!x || !w)
        return NULL;
    if (!linear_check(x, w, b))
        return NULL;
    int64_t in = w->shape[1], out = w->shape[0];
    int64_t rows = ag_shape_numel(x->ndim - 1, x->shape);
    int64_t shape[AG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out;
    ag_tensor *y = ag_op_output(ctx, x->ndim, shape); // (rows, out)
    if (!y)
        return NULL;
    if (b) // the bias rows first, then sgemm adds the product onto them (beta = 1)
        for (int64_t r = 0; r < rows; r++)
            memcpy(y->data + r * out, b->data, (size_t)out * sizeof(float));
    sgemm(false, true, rows, out, in, x->data, in, w->data, in, b ? 1.0f : 0.0f, y->data, out);
    ag_tensor *src[3] = {x, w, b};
    ag_node *n = ag_op_record(ctx, AG_OP_LINEAR, y, src, b ? 3 : 2);
    return ag_op_recorded(n, y);
}

/* With G = dy (rows, out):  dx += G w,  dw += G^T x,  db += column sums of G. */
void ag_linear_backward(ag_ctx *ctx, ag_node *n)
{
    ag_tensor *x = n->src[0], *w = n->src[1], *b = n->n_src > 2 ? n->src[2] : NULL;
    int64_t in = w->shape[1], out = w->shape[0];
    int64_t rows = ag_shape_numel(x->ndim - 1, x->shape);
    const float *g = n->out->grad; // (rows, out)
    bool fresh;
    float *dx = ag_grad_write(ctx, x, &fresh);
    if (dx) // (rows, in)
        sgemm(false, false, rows, in, out, g, out, w->data, in, fresh ? 0.0f : 1.0f, dx, in);
    float *dw = ag_grad(ctx, w);
    if (dw)
        sgemm(true, false, out, in, rows, g, out, x->data, in, 1.0f, dw, in); // (out, in)
    float *db = ag_grad(ctx, b);
    if (db)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t o = 0; o < out; o++)
                db[o] += g[r * out + o];
}
