/* builder.c — the low-level builder: values, nodes, attributes, constants, graph inputs
 * and outputs, and finish (validate + pack). The high-level q8_builder_<op> calls live
 * beside each op in quantized/ops/. Every call checks what it can at once (ids, names,
 * dtypes, sizes), so a converter learns about a mistake at the call that made it. */
#include "quantized/builder.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>

q8_builder *q8_builder_new(void)
{
    q8_builder *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->m = q8_model_alloc();
    if (!b->m) {
        free(b);
        return NULL;
    }
    return b;
}

void q8_builder_free(q8_builder *b)
{
    if (!b)
        return;
    q8_model_free(b->m);
    free(b);
}

q8_status q8_builder_status(const q8_builder *b) { return b ? b->status : Q8_ERR_ARG; }

const char *q8_builder_error(const q8_builder *b) { return b ? b->error : "no builder"; }

bool q8_builder_ok(const q8_builder *b)
{
    if (!b) {
        q8_error(Q8_ERR_ARG, "builder is NULL");
        return false;
    }
    if (b->status != Q8_OK)
        q8_error(b->status, "%s", b->error); /* keep reporting the first error */
    return b->status == Q8_OK;
}

q8_status q8_builder_fail(q8_builder *b, q8_status st)
{
    if (b->status == Q8_OK) {
        b->status = st;
        snprintf(b->error, sizeof b->error, "%s", q8_last_error());
    }
    return st;
}

static q8_status fail(q8_builder *b, q8_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static q8_status fail(q8_builder *b, q8_status st, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    q8_error(st, "%s", msg);
    return q8_builder_fail(b, st);
}

static bool name_ok(q8_builder *b, const char *what, const char *name)
{
    if (name && strlen(name) >= Q8_MAX_NAME) {
        fail(b, Q8_ERR_ARG, "%s name '%.40s...' is longer than %d bytes", what, name,
             Q8_MAX_NAME - 1);
        return false;
    }
    return true;
}

q8_status q8_builder_set_attr_text(q8_builder *b, const char *key, const char *text)
{
    if (!q8_builder_ok(b))
        return q8_last_status();
    char **slot = strcmp(key, "source_model") == 0 ? &b->m->source_model
                  : strcmp(key, "qconfig") == 0    ? &b->m->qconfig
                                                   : NULL;
    if (!slot)
        return fail(b, Q8_ERR_ARG, "unknown model attribute '%s' (source_model, qconfig)", key);
    if (!text || strlen(text) >= Q8_MAX_TEXT)
        return fail(b, Q8_ERR_ARG, "model attribute '%s' is missing or longer than %d bytes", key,
                    Q8_MAX_TEXT - 1);
    char *copy = q8_strdup(text);
    if (!copy)
        return fail(b, Q8_ERR_NOMEM, "out of memory");
    free(*slot);
    *slot = copy;
    return Q8_OK;
}

/* ---- values ---- */

static q8_status check_value_shape(q8_builder *b, int32_t id, int32_t ndim, const int64_t *shape,
                                   int64_t *item_numel)
{
    if (ndim < 1 || ndim > Q8_MAX_DIMS)
        return fail(b, Q8_ERR_FORMAT, "value %d: rank %d is outside [1, %d]", (int)id, (int)ndim,
                    Q8_MAX_DIMS);
    if (shape[0] != -1)
        return fail(b, Q8_ERR_FORMAT,
                    "value %d: shape[0] = %" PRId64 ", but dimension 0 is the batch and must be "
                    "-1",
                    (int)id, shape[0]);
    int64_t numel = 1;
    for (int32_t d = 1; d < ndim; d++) {
        if (shape[d] < 1 || shape[d] > Q8_MAX_DIM)
            return fail(b, Q8_ERR_FORMAT,
                        "value %d: shape[%d] = %" PRId64 " is outside [1, %" PRId64 "]", (int)id,
                        (int)d, shape[d], Q8_MAX_DIM);
        numel *= shape[d];
        if (numel > Q8_MAX_ITEM_NUMEL)
            return fail(b, Q8_ERR_FORMAT,
                        "value %d: more than %" PRId64 " elements per batch item", (int)id,
                        Q8_MAX_ITEM_NUMEL);
    }
    *item_numel = numel;
    return Q8_OK;
}

static q8_status check_value_qparams(q8_builder *b, int32_t id, q8_dtype dtype, float scale,
                                     int32_t zero_point)
{
    if (dtype == Q8_F32)
        return Q8_OK;
    if (dtype != Q8_U8 && dtype != Q8_I8)
        return fail(b, Q8_ERR_FORMAT, "value %d: dtype %d is not u8, i8 or f32 (i32 is for "
                    "constants only)", (int)id, (int)dtype);
    if (!isfinite(scale) || !(scale > 0))
        return fail(b, Q8_ERR_FORMAT, "value %d: scale %g is not a finite positive number",
                    (int)id, (double)scale);
    if (zero_point < q8_qmin(dtype) || zero_point > q8_qmax(dtype))
        return fail(b, Q8_ERR_FORMAT, "value %d: zero_point %d is outside the %s range [%d, %d]",
                    (int)id, (int)zero_point, q8_dtype_name(dtype), (int)q8_qmin(dtype),
                    (int)q8_qmax(dtype));
    return Q8_OK;
}

static bool grow(void **arr, int32_t *cap, int32_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    int32_t cap2 = *cap ? *cap * 2 : 16;
    while (cap2 < need)
        cap2 *= 2;
    void *p = realloc(*arr, (size_t)cap2 * elem);
    if (!p)
        return false;
    memset((char *)p + (size_t)*cap * elem, 0, (size_t)(cap2 - *cap) * elem);
    *arr = p;
    *cap = cap2;
    return true;
}

int32_t q8_builder_add_value(q8_builder *b, const char *name, q8_dtype dtype, int32_t ndim,
                             const int64_t *shape, float scale, int32_t zero_point)
{
    if (!q8_builder_ok(b))
        return -1;
    q8_model *m = b->m;
    int32_t id = m->n_values;
    int64_t item_numel = 0;
    if (id >= Q8_MAX_VALUES) {
        fail(b, Q8_ERR_FORMAT, "more than %d values", Q8_MAX_VALUES);
        return -1;
    }
    if (!name_ok(b, "value", name) || !shape ||
        check_value_shape(b, id, ndim, shape, &item_numel) != Q8_OK ||
        check_value_qparams(b, id, dtype, scale, zero_point) != Q8_OK) {
        if (!shape)
            fail(b, Q8_ERR_ARG, "value %d: shape is NULL", (int)id);
        return -1;
    }
    if (!grow((void **)&m->values, &m->cap_values, id + 1, sizeof *m->values)) {
        fail(b, Q8_ERR_NOMEM, "out of memory adding value %d", (int)id);
        return -1;
    }
    q8_value *v = &m->values[id];
    memset(v, 0, sizeof *v);
    v->name = q8_strdup(name);
    if (!v->name) {
        fail(b, Q8_ERR_NOMEM, "out of memory adding value %d", (int)id);
        return -1;
    }
    v->dtype = dtype;
    v->ndim = ndim;
    memcpy(v->shape, shape, (size_t)ndim * sizeof *shape);
    v->item_numel = item_numel;
    v->scale = dtype == Q8_F32 ? 0.0f : scale;
    v->zero_point = dtype == Q8_F32 ? 0 : zero_point;
    v->producer = -2;
    m->n_values++;
    return id;
}

q8_status q8_builder_value(q8_builder *b, int32_t id, q8_value *copy)
{
    if (!q8_builder_ok(b))
        return q8_last_status();
    if (id < 0 || id >= b->m->n_values)
        return fail(b, Q8_ERR_ARG, "value %d does not exist (the builder has %d)", (int)id,
                    (int)b->m->n_values);
    *copy = b->m->values[id];
    return Q8_OK;
}

/* ---- nodes ---- */

static bool ids_ok(q8_builder *b, int32_t node, const char *what, const int32_t *ids, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= b->m->n_values) {
            fail(b, Q8_ERR_FORMAT, "node %d: %s %d is value %d, but the model has %d values",
                 (int)node, what, (int)i, (int)ids[i], (int)b->m->n_values);
            return false;
        }
    return true;
}

static int32_t *copy_ids(const int32_t *ids, int32_t n)
{
    int32_t *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    if (p && n > 0)
        memcpy(p, ids, (size_t)n * sizeof *p);
    return p;
}

int32_t q8_builder_add_node(q8_builder *b, const char *op, const char *name,
                            const int32_t *inputs, int32_t n_inputs, const int32_t *outputs,
                            int32_t n_outputs)
{
    if (!q8_builder_ok(b))
        return -1;
    q8_model *m = b->m;
    int32_t k = m->n_nodes;
    if (k >= Q8_MAX_NODES) {
        fail(b, Q8_ERR_FORMAT, "more than %d nodes", Q8_MAX_NODES);
        return -1;
    }
    q8_op o = op ? q8_op_from_name(op) : Q8_OP_COUNT;
    if (o == Q8_OP_COUNT) {
        fail(b, Q8_ERR_FORMAT, "node %d ('%s'): unknown op '%s'", (int)k, name ? name : "",
             op ? op : "(null)");
        return -1;
    }
    Q8_ASSERT(q8_ops[o]->n_attrs <= Q8_MAX_ATTRS && q8_ops[o]->n_consts <= Q8_MAX_CONSTS);
    if (n_inputs < 0 || n_inputs > Q8_MAX_NODE_INPUTS || n_outputs < 0 || n_outputs > 1) {
        fail(b, Q8_ERR_FORMAT, "node %d (%s '%s'): %d inputs and %d outputs (at most %d and 1)",
             (int)k, op, name ? name : "", (int)n_inputs, (int)n_outputs, Q8_MAX_NODE_INPUTS);
        return -1;
    }
    if (!name_ok(b, "node", name) || !ids_ok(b, k, "input", inputs, n_inputs) ||
        !ids_ok(b, k, "output", outputs, n_outputs))
        return -1;
    if (!grow((void **)&m->nodes, &m->cap_nodes, k + 1, sizeof *m->nodes)) {
        fail(b, Q8_ERR_NOMEM, "out of memory adding node %d", (int)k);
        return -1;
    }
    q8_node *n = &m->nodes[k];
    memset(n, 0, sizeof *n);
    n->op = o;
    n->index = k;
    n->name = q8_strdup(name);
    n->in = copy_ids(inputs, n_inputs);
    n->out = copy_ids(outputs, n_outputs);
    n->n_in = n_inputs;
    n->n_out = n_outputs;
    m->n_nodes++; /* counted before the checks below so that q8_model_free frees it */
    if (!n->name || !n->in || !n->out) {
        fail(b, Q8_ERR_NOMEM, "out of memory adding node %d", (int)k);
        return -1;
    }
    return k;
}

static q8_node *node_of(q8_builder *b, int32_t node)
{
    if (!q8_builder_ok(b))
        return NULL;
    if (node < 0 || node >= b->m->n_nodes) {
        fail(b, Q8_ERR_ARG, "node %d does not exist (the builder has %d)", (int)node,
             (int)b->m->n_nodes);
        return NULL;
    }
    return &b->m->nodes[node];
}

q8_status q8_builder_set_attr(q8_builder *b, int32_t node, const char *key, int64_t value)
{
    q8_node *n = node_of(b, node);
    if (!n)
        return q8_last_status();
    const q8_op_def *def = q8_ops[n->op];
    for (int32_t a = 0; a < def->n_attrs; a++) {
        if (strcmp(def->attrs[a].key, key) != 0)
            continue;
        if (n->has_attr[a])
            return q8_builder_fail(b, q8_node_error(n, Q8_ERR_FORMAT,
                                                    "attribute '%s' is set twice", key));
        n->attr[a] = value;
        n->has_attr[a] = true;
        return Q8_OK;
    }
    return q8_builder_fail(b, q8_node_error(n, Q8_ERR_FORMAT, "unknown attribute '%s'", key));
}

q8_status q8_builder_adopt_constant(q8_builder *b, int32_t node, const char *key,
                                   q8_dtype dtype, int32_t ndim, const int64_t *shape, void *data)
{
    q8_node *n = node_of(b, node);
    if (!n) {
        free(data);
        return q8_last_status();
    }
    const q8_op_def *def = q8_ops[n->op];
    int32_t c = 0;
    while (c < def->n_consts && strcmp(def->consts[c].key, key) != 0)
        c++;
    q8_status st = Q8_OK;
    if (c == def->n_consts)
        st = q8_node_error(n, Q8_ERR_FORMAT, "unknown constant '%s'", key);
    else if (n->cst[c].data)
        st = q8_node_error(n, Q8_ERR_FORMAT, "constant '%s' is set twice", key);
    else if (q8_dtype_size(dtype) == 0)
        st = q8_node_error(n, Q8_ERR_FORMAT, "constant '%s' has an unknown dtype", key);
    else if (ndim < 1 || ndim > Q8_MAX_DIMS)
        st = q8_node_error(n, Q8_ERR_FORMAT, "constant '%s' has rank %d (1 to %d)", key,
                           (int)ndim, Q8_MAX_DIMS);
    if (st != Q8_OK) {
        free(data);
        return q8_builder_fail(b, st);
    }
    q8_tensor *t = &n->cst[c];
    t->dtype = dtype;
    t->ndim = ndim;
    t->numel = 1;
    for (int32_t d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        t->numel *= shape[d];
    }
    t->data = data;
    return Q8_OK;
}

/* Sizes are checked before anything is allocated: a dimension outside [1, 2^24] or a
 * constant above 1 GiB is refused. */
q8_status q8_constant_bytes(const q8_node *n, const char *key, q8_dtype dtype, int32_t ndim,
                            const int64_t *shape, size_t *bytes)
{
    if (ndim < 1 || ndim > Q8_MAX_DIMS)
        return q8_node_error(n, Q8_ERR_FORMAT, "constant '%s' has rank %d (1 to %d)", key,
                             (int)ndim, Q8_MAX_DIMS);
    int64_t total = (int64_t)q8_dtype_size(dtype);
    for (int32_t d = 0; d < ndim; d++) {
        if (shape[d] < 1 || shape[d] > Q8_MAX_DIM)
            return q8_node_error(n, Q8_ERR_FORMAT,
                                 "constant '%s': dimension %d = %" PRId64
                                 " is outside [1, %" PRId64 "]",
                                 key, (int)d, shape[d], Q8_MAX_DIM);
        total *= shape[d];
        if (total > Q8_MAX_CONST_BYTES)
            return q8_node_error(n, Q8_ERR_FORMAT, "constant '%s' is larger than %" PRId64
                                 " bytes", key, Q8_MAX_CONST_BYTES);
    }
    *bytes = (size_t)total;
    return Q8_OK;
}

q8_status q8_builder_add_constant(q8_builder *b, int32_t node, const char *key, q8_dtype dtype,
                                  int32_t ndim, const int64_t *shape, const void *data)
{
    q8_node *n = node_of(b, node);
    if (!n)
        return q8_last_status();
    size_t bytes = 0;
    q8_status st = q8_constant_bytes(n, key, dtype, ndim, shape, &bytes);
    if (st != Q8_OK)
        return q8_builder_fail(b, st);
    if (!data)
        return q8_builder_fail(b, q8_node_error(n, Q8_ERR_ARG, "constant '%s' has no data", key));
    void *copy = malloc(bytes);
    if (!copy)
        return fail(b, Q8_ERR_NOMEM, "out of memory copying constant '%s' (%zu bytes)", key, bytes);
    memcpy(copy, data, bytes);
    return q8_builder_adopt_constant(b, node, key, dtype, ndim, shape, copy);
}

static q8_status mark(q8_builder *b, int32_t value, int32_t *list, int32_t *count,
                      const char *what)
{
    if (!q8_builder_ok(b))
        return q8_last_status();
    if (value < 0 || value >= b->m->n_values)
        return fail(b, Q8_ERR_FORMAT, "graph %s %d is value %d, but the model has %d values",
                    what, (int)*count, (int)value, (int)b->m->n_values);
    if (*count >= Q8_MAX_GRAPH_IO)
        return fail(b, Q8_ERR_FORMAT, "more than %d graph %ss", Q8_MAX_GRAPH_IO, what);
    list[(*count)++] = value;
    return Q8_OK;
}

q8_status q8_builder_mark_input(q8_builder *b, int32_t value)
{
    return mark(b, value, b ? b->m->inputs : NULL, b ? &b->m->n_inputs : NULL, "input");
}

q8_status q8_builder_mark_output(q8_builder *b, int32_t value)
{
    return mark(b, value, b ? b->m->outputs : NULL, b ? &b->m->n_outputs : NULL, "output");
}

void q8_builder_output(q8_builder *b, int32_t value) { q8_builder_mark_output(b, value); }

q8_model *q8_builder_finish(q8_builder *b)
{
    if (!q8_builder_ok(b)) {
        q8_builder_free(b);
        return NULL;
    }
    q8_model *m = b->m;
    b->m = NULL;
    q8_builder_free(b);
    if (q8_model_validate(m) != Q8_OK || q8_model_prepare(m) != Q8_OK) {
        q8_model_free(m);
        return NULL;
    }
    return m;
}

/* ---- shared by the high-level calls ---- */

int32_t q8_builder_input(q8_builder *b, const char *name, q8_dtype dtype, int32_t ndim,
                         const int64_t *shape)
{
    if (dtype != Q8_F32 && q8_builder_ok(b)) {
        fail(b, Q8_ERR_ARG, "input '%s': use q8_builder_input_quantized for u8/i8 inputs",
             name ? name : "");
        return -1;
    }
    int32_t v = q8_builder_add_value(b, name, Q8_F32, ndim, shape, 0.0f, 0);
    if (v >= 0)
        q8_builder_mark_input(b, v);
    return q8_builder_ok(b) ? v : -1;
}

int32_t q8_builder_input_quantized(q8_builder *b, const char *name, q8_qparams qp, int32_t ndim,
                                   const int64_t *shape)
{
    if (qp.dtype == Q8_F32 && q8_builder_ok(b)) {
        fail(b, Q8_ERR_ARG, "input '%s': a quantized input needs dtype u8 or i8",
             name ? name : "");
        return -1;
    }
    int32_t v = q8_builder_add_value(b, name, qp.dtype, ndim, shape, qp.scale, qp.zero_point);
    if (v >= 0)
        q8_builder_mark_input(b, v);
    return q8_builder_ok(b) ? v : -1;
}

int32_t q8_builder_node1(q8_builder *b, const char *op, const char *name, const int32_t *inputs,
                         int32_t n_inputs, q8_dtype dtype, int32_t ndim, const int64_t *shape,
                         float scale, int32_t zero_point, int32_t *out_value)
{
    int32_t y = q8_builder_add_value(b, name, dtype, ndim, shape, scale, zero_point);
    int32_t node = q8_builder_add_node(b, op, name, inputs, n_inputs, &y, 1);
    *out_value = y;
    return node;
}

int32_t q8_builder_node_fail(q8_builder *b, int32_t node, q8_status st, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!q8_builder_ok(b))
        return -1;
    q8_builder_fail(b, q8_node_error(&b->m->nodes[node], st, "%s", msg));
    return -1;
}

int32_t q8_builder_node_fail_last(q8_builder *b, int32_t node)
{
    char msg[768];
    snprintf(msg, sizeof msg, "%s", q8_last_error());
    return q8_builder_node_fail(b, node, q8_last_status(), "%s", msg);
}

int32_t q8_builder_done(q8_builder *b, int32_t node, int32_t value)
{
    if (!q8_builder_ok(b))
        return -1;
    /* Check the node now (inputs exist by construction) so a converter sees the error at
     * the call that caused it; finish checks it again with the whole graph. */
    q8_model *m = b->m;
    q8_node *n = &m->nodes[node];
    q8_status st = q8_node_check_fields(m, n);
    if (st == Q8_OK)
        st = q8_ops[n->op]->check(m, n);
    if (st != Q8_OK) {
        q8_builder_fail(b, st);
        return -1;
    }
    return value;
}

q8_status q8_builder_act_attr(q8_builder *b, int32_t node, q8_act act)
{
    if (!q8_builder_ok(b))
        return q8_last_status();
    if (act != Q8_ACT_NONE && act != Q8_ACT_RELU && act != Q8_ACT_RELU6) {
        q8_builder_node_fail(b, node, Q8_ERR_ARG, "unknown activation %d", (int)act);
        return q8_builder_status(b);
    }
    return q8_builder_set_attr(b, node, "act", act);
}
