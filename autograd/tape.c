/* tape.c — the context (arena + tape + grad mode), tensors, recording and backward. */
#include "autograd/ag_gradcheck.h"
#include "autograd/ag_impl.h"
#include "autograd/arena.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct ag_ctx {
    ag_arena arena;
    ag_node **tape; /* heap array, grown by doubling; kept across resets */
    int64_t n_tape, cap_tape;
    int32_t no_grad_depth;
    bool in_backward;     /* inside ag_backward_seeded's loop over the tape */
    bool oom_in_backward; /* a gradient buffer or an op's scratch could not be allocated */
    ag_rng rng;
    /* Per-op profile (CQAT_PROFILE=1 or ag_ctx_set_profile): an op's forward is timed
     * from its first output allocation to its tape record, its backward around the
     * call. Off by default: then it costs one branch per op. */
    bool profile;
    double prof_start;
    double prof_fwd[AG_OP_COUNT], prof_bwd[AG_OP_COUNT];
    int64_t prof_calls[AG_OP_COUNT];
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- context ---- */

ag_ctx *ag_ctx_new(void)
{
    ag_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        ag_error(AG_ERR_NOMEM, "ag_ctx_new: out of memory");
        return NULL;
    }
    ag_arena_init(&ctx->arena);
    ag_rng_seed(&ctx->rng, 0, 0);
    const char *prof = getenv("CQAT_PROFILE");
    ctx->profile = prof && *prof && strcmp(prof, "0") != 0;
    return ctx;
}

void ag_ctx_free(ag_ctx *ctx)
{
    if (!ctx)
        return;
    ag_arena_deinit(&ctx->arena);
    free(ctx->tape);
    free(ctx);
}

void ag_ctx_reset(ag_ctx *ctx)
{
    ag_arena_reset(&ctx->arena);
    ctx->n_tape = 0;
    ctx->oom_in_backward = false;
}

size_t ag_ctx_arena_capacity(const ag_ctx *ctx) { return ctx->arena.capacity; }
size_t ag_ctx_arena_used(const ag_ctx *ctx) { return ctx->arena.used; }
int64_t ag_ctx_tape_len(const ag_ctx *ctx) { return ctx->n_tape; }

ag_rng *ag_ctx_rng(ag_ctx *ctx) { return &ctx->rng; }

void ag_ctx_set_profile(ag_ctx *ctx, bool on) { ctx->profile = on; }

bool ag_ctx_profile_enabled(const ag_ctx *ctx) { return ctx->profile; }

void ag_ctx_profile_print(const ag_ctx *ctx, FILE *f)
{
    double total = 0.0;
    for (int i = 0; i < AG_OP_COUNT; i++)
        total += ctx->prof_fwd[i] + ctx->prof_bwd[i];
    fprintf(f, "%-22s %10s %12s %12s %7s\n", "op", "calls", "forward ms", "backward ms",
            "share");
    for (int i = 0; i < AG_OP_COUNT; i++) {
        if (!ctx->prof_calls[i] && ctx->prof_bwd[i] == 0.0)
            continue;
        double t = ctx->prof_fwd[i] + ctx->prof_bwd[i];
        fprintf(f, "%-22s %10" PRId64 " %12.1f %12.1f %6.1f%%\n", ag_op_names[i],
                ctx->prof_calls[i], 1e3 * ctx->prof_fwd[i], 1e3 * ctx->prof_bwd[i],
                total > 0 ? 100.0 * t / total : 0.0);
    }
    fprintf(f, "%-22s %10s %12s %12.1f\n", "total (ops)", "", "", 1e3 * total);
}

void ag_no_grad_begin(ag_ctx *ctx) { ctx->no_grad_depth++; }

void ag_no_grad_end(ag_ctx *ctx)
{
    AG_ASSERT(ctx->no_grad_depth > 0);
    ctx->no_grad_depth--;
}

bool ag_grad_enabled(const ag_ctx *ctx) { return ctx->no_grad_depth == 0; }

void *ag_ctx_alloc(ag_ctx *ctx, size_t bytes)
{
    void *p = ag_arena_alloc(&ctx->arena, bytes);
    if (!p) {
        ag_error(AG_ERR_NOMEM, "out of memory: the step arena could not grow by %zu bytes "
                               "(it holds %zu)", bytes, ctx->arena.capacity);
        /* a backward that loses its scratch leaves its gradients unfinished (or, if
         * written fresh, uninitialised): ag_backward must fail */
        ctx->oom_in_backward |= ctx->in_backward;
    }
    return p;
}

/* ---- shapes ---- */

int64_t ag_shape_numel(int32_t ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int32_t i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

bool ag_shape_equal(const ag_tensor *a, const ag_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int32_t i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

const char *ag_shape_str(const ag_tensor *t, char *buf, size_t size)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, size - off, "[");
    for (int32_t i = 0; i < t->ndim && off < size; i++)
        off += (size_t)snprintf(buf + off, size - off, i ? ", %" PRId64 : "%" PRId64,
                                t->shape[i]);
    if (off < size)
        snprintf(buf + off, size - off, "]");
    return buf;
}

ag_status ag_shape_error2(const char *op, const char *what, const ag_tensor *a,
                          const ag_tensor *b)
{
    char sa[AG_SHAPE_STR_MAX], sb[AG_SHAPE_STR_MAX];
    return ag_error(AG_ERR_SHAPE, "%s: %s %s and %s", op, what,
                    ag_shape_str(a, sa, sizeof sa), ag_shape_str(b, sb, sizeof sb));
}

static bool shape_valid(int32_t ndim, const int64_t *shape, const char *who)
{
    if (ndim < 0 || ndim > AG_MAX_DIMS) {
        ag_error(AG_ERR_SHAPE, "%s: %d dims (at most %d)", who, (int)ndim, AG_MAX_DIMS);
        return false;
    }
    int64_t n = 1;
    for (int32_t i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            ag_error(AG_ERR_SHAPE, "%s: negative size %" PRId64 " in dim %d", who, shape[i],
                     (int)i);
            return false;
        }
        if (shape[i] && n > INT64_MAX / 4 / shape[i]) {
            ag_error(AG_ERR_SHAPE, "%s: shape too large", who);
            return false;
        }
        n *= shape[i];
    }
    return true;
}

static void tensor_set_shape(ag_tensor *t, int32_t ndim, const int64_t *shape)
{
    t->dtype = AG_F32;
    t->ndim = ndim;
    for (int32_t i = 0; i < AG_MAX_DIMS; i++)
        t->shape[i] = i < ndim ? shape[i] : 1;
    t->numel = ag_shape_numel(ndim, shape);
}

/* ---- heap tensors ---- */

size_t ag_dtype_size(ag_dtype dtype)
{
    switch (dtype) {
    case AG_F32: return 4;
    case AG_I32: return 4;
    case AG_I64: return 8;
    case AG_I8: return 1;
    case AG_U8: return 1;
    }
    return 0;
}

const char *ag_dtype_name(ag_dtype dtype)
{
    switch (dtype) {
    case AG_F32: return "float32";
    case AG_I32: return "int32";
    case AG_I64: return "int64";
    case AG_I8: return "int8";
    case AG_U8: return "uint8";
    }
    return "unknown";
}

static ag_tensor *heap_tensor(ag_dtype dtype, int32_t ndim, const int64_t *shape,
                              uint32_t flags)
{
    if (!shape_valid(ndim, shape, "ag_tensor_new"))
        return NULL;
    ag_tensor *t = calloc(1, sizeof *t);
    if (!t)
        goto oom;
    tensor_set_shape(t, ndim, shape);
    t->dtype = dtype;
    t->data = calloc((size_t)(t->numel ? t->numel : 1), ag_dtype_size(dtype));
    if (!t->data)
        goto oom;
    t->flags = AG_F_HEAP | flags;
    return t;
oom:
    free(t);
    ag_error(AG_ERR_NOMEM, "ag_tensor_new: out of memory for %" PRId64 " values",
             ag_shape_numel(ndim, shape));
    return NULL;
}

ag_tensor *ag_tensor_new(int32_t ndim, const int64_t *shape, bool requires_grad)
{
    return heap_tensor(AG_F32, ndim, shape, requires_grad ? AG_F_REQUIRES_GRAD : 0u);
}

ag_tensor *ag_tensor_new_dtype(ag_dtype dtype, int32_t ndim, const int64_t *shape)
{
    return heap_tensor(dtype, ndim, shape, 0u);
}

ag_tensor *ag_param_new(int32_t ndim, const int64_t *shape)
{
    return ag_tensor_new(ndim, shape, true);
}

void ag_tensor_free(ag_tensor *t)
{
    if (!t)
        return;
    AG_ASSERT(t->flags & AG_F_HEAP);
    free(t->data);
    free(t->grad);
    free(t);
}

ag_status ag_tensor_resize(ag_tensor *t, int32_t ndim, const int64_t *shape)
{
    AG_ASSERT(t->flags & AG_F_HEAP);
    if (!shape_valid(ndim, shape, "ag_tensor_resize"))
        return ag_last_status();
    int64_t n = ag_shape_numel(ndim, shape);
    void *data = calloc((size_t)(n ? n : 1), ag_dtype_size(t->dtype));
    if (!data)
        return ag_error(AG_ERR_NOMEM, "ag_tensor_resize: out of memory for %" PRId64 " values",
                        n);
    ag_dtype dtype = t->dtype;
    free(t->data);
    free(t->grad);
    t->grad = NULL;
    t->data = data;
    tensor_set_shape(t, ndim, shape);
    t->dtype = dtype;
    return AG_OK;
}

void ag_tensor_zero_grad(ag_tensor *t)
{
    if (t && t->grad)
        memset(t->grad, 0, (size_t)t->numel * sizeof(float));
}

/* ---- arena tensors ---- */

ag_tensor *ag_op_output(ag_ctx *ctx, int32_t ndim, const int64_t *shape)
{
    if (ctx->profile && ctx->prof_start == 0.0)
        ctx->prof_start = now_seconds();
    if (!shape_valid(ndim, shape, "tensor"))
        return NULL;
    ag_tensor *t = ag_ctx_alloc(ctx, sizeof *t);
    if (!t)
        return NULL;
    memset(t, 0, sizeof *t);
    tensor_set_shape(t, ndim, shape);
    t->data = ag_ctx_alloc(ctx, (size_t)t->numel * sizeof(float));
    return t->data ? t : NULL;
}

ag_tensor *ag_ctx_tensor(ag_ctx *ctx, int32_t ndim, const int64_t *shape)
{
    return ag_op_output(ctx, ndim, shape);
}

ag_tensor *ag_ctx_zeros(ag_ctx *ctx, int32_t ndim, const int64_t *shape)
{
    ag_tensor *t = ag_op_output(ctx, ndim, shape);
    if (t)
        memset(t->data, 0, (size_t)t->numel * sizeof(float));
    return t;
}

/* ---- recording ---- */

bool ag_op_needs_record(const ag_ctx *ctx, ag_tensor *const *src, int32_t n_src)
{
    if (!ag_grad_enabled(ctx))
        return false;
    for (int32_t i = 0; i < n_src; i++)
        if (src[i] && (src[i]->flags & AG_F_REQUIRES_GRAD))
            return true;
    return false;
}

static bool tape_push(ag_ctx *ctx, ag_node *n)
{
    if (ctx->n_tape == ctx->cap_tape) {
        int64_t cap = ctx->cap_tape ? 2 * ctx->cap_tape : 256;
        ag_node **t = realloc(ctx->tape, (size_t)cap * sizeof *t);
        if (!t)
            return false;
        ctx->tape = t;
        ctx->cap_tape = cap;
    }
    ctx->tape[ctx->n_tape++] = n;
    return true;
}

/* A distinct address that means "recording was needed and failed". */
static ag_node ag_record_failed;

ag_node *ag_op_record(ag_ctx *ctx, ag_op op, ag_tensor *out, ag_tensor *const *src,
                      int32_t n_src)
{
    AG_ASSERT(n_src <= AG_MAX_SRC && op < AG_OP_COUNT);
    if (ctx->profile) {
        if (ctx->prof_start != 0.0)
            ctx->prof_fwd[op] += now_seconds() - ctx->prof_start;
        ctx->prof_start = 0.0;
        ctx->prof_calls[op]++;
    }
    if (!ag_op_needs_record(ctx, src, n_src))
        return NULL;
    ag_node *n = ag_ctx_alloc(ctx, sizeof *n);
    if (!n)
        return &ag_record_failed;
    memset(n, 0, sizeof *n);
    n->op = op;
    n->out = out;
    n->n_src = n_src;
    for (int32_t i = 0; i < n_src; i++)
        n->src[i] = src[i];
    if (!tape_push(ctx, n)) {
        ag_error(AG_ERR_NOMEM, "%s: out of memory growing the tape", ag_op_names[op]);
        return &ag_record_failed;
    }
    out->node = n;
    out->flags |= AG_F_REQUIRES_GRAD;
    return n;
}

ag_tensor *ag_op_recorded(const ag_node *n, ag_tensor *out)
{
    return n == &ag_record_failed ? NULL : out;
}

/* ---- gradients ---- */

float *ag_grad(ag_ctx *ctx, ag_tensor *t)
{
    if (!t || !(t->flags & AG_F_REQUIRES_GRAD))
        return NULL;
    if (t->grad)
        return t->grad;
    size_t bytes = (size_t)(t->numel ? t->numel : 1) * sizeof(float);
    if (t->flags & AG_F_HEAP) {
        t->grad = calloc(1, bytes);
    } else {
        t->grad = ag_arena_alloc(&ctx->arena, bytes);
        if (t->grad)
            memset(t->grad, 0, bytes);
    }
    if (!t->grad)
        ctx->oom_in_backward = true;
    return t->grad;
}

/* Debug and sanitizer builds poison a fresh gradient buffer with NaN (all bits set),
 * so that an op which leaves part of it unwritten fails its gradcheck instead of
 * passing on whatever the arena held. */
#if !defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__)
enum { POISON_FRESH_GRADS = 1 };
#else
enum { POISON_FRESH_GRADS = 0 };
#endif

float *ag_grad_write(ag_ctx *ctx, ag_tensor *t, bool *fresh)
{
    *fresh = false;
    if (!t || !(t->flags & AG_F_REQUIRES_GRAD))
        return NULL;
    if (t->grad || (t->flags & AG_F_HEAP))
        return ag_grad(ctx, t);
    size_t bytes = (size_t)(t->numel ? t->numel : 1) * sizeof(float);
    t->grad = ag_arena_alloc(&ctx->arena, bytes);
    if (!t->grad) {
        ctx->oom_in_backward = true;
        return NULL;
    }
    if (POISON_FRESH_GRADS)
        memset(t->grad, 0xff, bytes);
    *fresh = true;
    return t->grad;
}

void ag_grad_acc(ag_ctx *ctx, ag_tensor *t, const float *g, int64_t n)
{
    AG_ASSERT(!t || n == t->numel); /* a gradient has exactly its tensor's shape */
    bool fresh;
    float *dst = ag_grad_write(ctx, t, &fresh);
    if (dst && fresh)
        memcpy(dst, g, (size_t)n * sizeof(float));
    else if (dst)
        for (int64_t i = 0; i < n; i++)
            dst[i] += g[i];
}

ag_status ag_backward(ag_ctx *ctx, ag_tensor *loss)
{
    if (!loss)
        return ag_error(AG_ERR_STATE, "backward: the loss is NULL (an op before it failed)");
    if (loss->numel != 1) {
        char s[AG_SHAPE_STR_MAX];
        return ag_error(AG_ERR_SHAPE, "backward: the loss must have one element, got %s",
                        ag_shape_str(loss, s, sizeof s));
    }
    const float one = 1.0f;
    return ag_backward_seeded(ctx, loss, &one);
}

ag_status ag_backward_seeded(ag_ctx *ctx, ag_tensor *y, const float *seed)
{
    if (!y)
        return ag_error(AG_ERR_STATE, "backward: the output is NULL (an op before it failed)");
    if (!y->node)
        return ag_error(AG_ERR_STATE,
                        "backward: the output was not recorded (no_grad, or no input requires "
                        "a gradient)");
    /* Clear intermediate gradients so that a second backward on the same tape adds the
     * same amount into the leaves again instead of re-propagating stale sums. */
    for (int64_t i = 0; i < ctx->n_tape; i++) {
        ag_tensor *out = ctx->tape[i]->out;
        if (out->grad)
            memset(out->grad, 0, (size_t)out->numel * sizeof(float));
    }
    bool fresh; /* either way the seed replaces what y's gradient held */
    float *dy = ag_grad_write(ctx, y, &fresh);
    if (!dy)
        return ag_error(AG_ERR_NOMEM, "backward: out of memory");
    memcpy(dy, seed, (size_t)y->numel * sizeof(float));
    ctx->in_backward = true;
    for (int64_t i = ctx->n_tape - 1; i >= 0; i--) {
        ag_node *n = ctx->tape[i];
        if (!n->out->grad)
            continue; /* nothing flowed into this node: it does not reach the output */
        double t0 = ctx->profile ? now_seconds() : 0.0;
        ag_op_backward[n->op](ctx, n);
        if (ctx->profile)
            ctx->prof_bwd[n->op] += now_seconds() - t0;
    }
    ctx->in_backward = false;
    if (ctx->oom_in_backward)
        return ag_error(AG_ERR_NOMEM,
                        "backward: out of memory for gradients or an op's scratch");
    return AG_OK;
}
