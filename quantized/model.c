/* model.c — the op registry, the model's lifetime, graph validation and accessors. */
#include "quantized/q8_impl.h"

#include <inttypes.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>

const q8_op_def *const q8_ops[Q8_OP_COUNT] = {
#define Q8_OP(ENUM, name) [Q8_OP_##ENUM] = &q8_op_##name,
#include "quantized/q8_ops.def"
#undef Q8_OP
};

_Static_assert(sizeof q8_ops / sizeof q8_ops[0] == Q8_OP_COUNT, "op table out of step");

q8_op q8_op_from_name(const char *name)
{
    for (int i = 0; i < Q8_OP_COUNT; i++)
        if (strcmp(q8_ops[i]->name, name) == 0)
            return (q8_op)i;
    return Q8_OP_COUNT;
}

q8_model *q8_model_alloc(void)
{
    q8_model *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->source_model = q8_strdup("");
    m->qconfig = q8_strdup("");
    if (!m->source_model || !m->qconfig) {
        q8_model_free(m);
        return NULL;
    }
    m->kernel = q8_gemm_choose();
    return m;
}

void q8_model_free(q8_model *m)
{
    if (!m)
        return;
    for (int32_t i = 0; i < m->n_nodes; i++) {
        q8_node *n = &m->nodes[i];
        if (n->prep && q8_ops[n->op]->release)
            q8_ops[n->op]->release(n);
        for (int c = 0; c < Q8_MAX_CONSTS; c++)
            free(n->cst[c].data);
        free(n->name);
        free(n->in);
        free(n->out);
    }
    for (int32_t i = 0; i < m->n_values; i++)
        free(m->values[i].name);
    free(m->nodes);
    free(m->values);
    free(m->source_model);
    free(m->qconfig);
    q8_free(m->arena);
    q8_free(m->scratch);
    free(m);
}

q8_status q8_node_error(const q8_node *n, q8_status st, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *op = n->op < Q8_OP_COUNT ? q8_ops[n->op]->name : "?";
    return q8_error(st, "node %d (%s '%s'): %s", (int)n->index, op, n->name ? n->name : "",
                    msg);
}

const char *q8_shape_str(char *buf, size_t size, int32_t ndim, const int64_t *shape)
{
    size_t used = 0;
    used += (size_t)snprintf(buf, size, "[");
    for (int32_t i = 0; i < ndim && used < size; i++) {
        if (shape[i] < 0)
            used += (size_t)snprintf(buf + used, size - used, "%sN", i ? ", " : "");
        else
            used += (size_t)snprintf(buf + used, size - used, "%s%" PRId64, i ? ", " : "",
                                     shape[i]);
    }
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

/* ---- validation ---- */

/* Every value is defined exactly once (a graph input or one node's output) before any
 * node reads it. Nodes run in file order, so a cycle shows up as a use before
 * definition. */
static q8_status check_definitions(const q8_model *m, int32_t *producer)
{
    enum { UNDEFINED = -2, GRAPH_INPUT = -1 };
    for (int32_t v = 0; v < m->n_values; v++)
        producer[v] = UNDEFINED;
    for (int32_t i = 0; i < m->n_inputs; i++) {
        if (producer[m->inputs[i]] != UNDEFINED)
            return q8_error(Q8_ERR_FORMAT, "graph input %d: value %d is listed twice", (int)i,
                            (int)m->inputs[i]);
        producer[m->inputs[i]] = GRAPH_INPUT;
    }
    for (int32_t k = 0; k < m->n_nodes; k++) {
        const q8_node *n = &m->nodes[k];
        for (int32_t i = 0; i < n->n_in; i++)
            if (producer[n->in[i]] == UNDEFINED)
                return q8_node_error(n, Q8_ERR_FORMAT,
                                     "input %d is value %d, which is not defined before this "
                                     "node (use before definition, or a cycle)",
                                     (int)i, (int)n->in[i]);
        for (int32_t i = 0; i < n->n_out; i++) {
            int32_t v = n->out[i];
            if (producer[v] == GRAPH_INPUT)
                return q8_node_error(n, Q8_ERR_FORMAT, "output %d is value %d, a graph input",
                                     (int)i, (int)v);
            if (producer[v] != UNDEFINED)
                return q8_node_error(n, Q8_ERR_FORMAT,
                                     "output %d is value %d, already produced by node %d",
                                     (int)i, (int)v, (int)producer[v]);
            producer[v] = k;
        }
    }
    for (int32_t i = 0; i < m->n_outputs; i++)
        if (producer[m->outputs[i]] == UNDEFINED)
            return q8_error(Q8_ERR_FORMAT, "graph output %d: value %d is never produced", (int)i,
                            (int)m->outputs[i]);
    for (int32_t v = 0; v < m->n_values; v++)
        if (producer[v] == UNDEFINED)
            return q8_error(Q8_ERR_FORMAT,
                            "value %d ('%s') is neither a graph input nor produced by a node",
                            (int)v, m->values[v].name);
    return Q8_OK;
}

int64_t q8_attr_default(const q8_model *m, const q8_node *n, const q8_attr_spec *s)
{
    q8_dtype dt = m->values[n->out[0]].dtype;
    if (s->def == Q8_DEF_OUT_QMIN)
        return q8_qmin(dt);
    if (s->def == Q8_DEF_OUT_QMAX)
        return q8_qmax(dt);
    return s->def;
}

/* Defaults for absent optional attributes, an error for absent required ones, and the
 * range of each; absent required constants. */
q8_status q8_node_check_fields(const q8_model *m, q8_node *n)
{
    const q8_op_def *def = q8_ops[n->op];
    if (n->n_in < def->min_inputs || n->n_in > def->max_inputs)
        return q8_node_error(n, Q8_ERR_FORMAT, "has %d inputs, the op takes %d to %d",
                             (int)n->n_in, (int)def->min_inputs, (int)def->max_inputs);
    if (n->n_out != 1)
        return q8_node_error(n, Q8_ERR_FORMAT, "has %d outputs, the op has 1", (int)n->n_out);
    for (int32_t a = 0; a < def->n_attrs; a++) {
        const q8_attr_spec *s = &def->attrs[a];
        if (!n->has_attr[a]) {
            if (s->required)
                return q8_node_error(n, Q8_ERR_FORMAT, "attribute '%s' is missing", s->key);
            n->attr[a] = q8_attr_default(m, n, s);
            n->has_attr[a] = true;
        }
        if (n->attr[a] < s->lo || n->attr[a] > s->hi)
            return q8_node_error(n, Q8_ERR_FORMAT,
                                 "attribute '%s' = %" PRId64 " is out of range [%" PRId64
                                 ", %" PRId64 "]",
                                 s->key, n->attr[a], s->lo, s->hi);
    }
    for (int32_t c = 0; c < def->n_consts; c++)
        if (def->consts[c].required && !n->cst[c].data)
            return q8_node_error(n, Q8_ERR_FORMAT, "constant '%s' is missing",
                                 def->consts[c].key);
    return Q8_OK;
}

q8_status q8_model_validate(q8_model *m)
{
    if (m->n_values == 0 || m->n_nodes == 0)
        return q8_error(Q8_ERR_FORMAT, "the model has %d values and %d nodes (needs at least one "
                        "of each)", (int)m->n_values, (int)m->n_nodes);
    if (m->n_inputs == 0 || m->n_outputs == 0)
        return q8_error(Q8_ERR_FORMAT, "the model has %d graph inputs and %d outputs (needs at "
                        "least one of each)", (int)m->n_inputs, (int)m->n_outputs);
    int32_t *producer = malloc((size_t)m->n_values * sizeof *producer);
    if (!producer)
        return q8_error(Q8_ERR_NOMEM, "out of memory validating the graph");
    q8_status st = check_definitions(m, producer);
    for (int32_t v = 0; st == Q8_OK && v < m->n_values; v++)
        m->values[v].producer = producer[v];
    free(producer);
    for (int32_t k = 0; st == Q8_OK && k < m->n_nodes; k++) {
        st = q8_node_check_fields(m, &m->nodes[k]);
        if (st == Q8_OK)
            st = q8_ops[m->nodes[k].op]->check(m, &m->nodes[k]);
    }
    return st;
}

q8_status q8_model_scratch_reserve(q8_model *m)
{
    int threads = omp_get_max_threads();
    if (m->scratch_bytes == 0 || threads <= m->scratch_threads)
        return Q8_OK;
    uint8_t *p = q8_alloc(m->scratch_bytes * (size_t)threads);
    if (!p)
        return q8_error(Q8_ERR_NOMEM, "cannot allocate %zu bytes of scratch for %d threads",
                        m->scratch_bytes * (size_t)threads, threads);
    q8_free(m->scratch);
    m->scratch = p;
    m->scratch_threads = threads;
    return Q8_OK;
}

q8_status q8_model_prepare(q8_model *m)
{
    size_t scratch = 0;
    for (int32_t k = 0; k < m->n_nodes; k++) /* the ops' prepare plan the fusions */
        m->nodes[k].fused_into = -1;
    for (int32_t i = 0; i < m->n_values; i++)
        m->values[i].fused_away = false;
    for (int32_t k = 0; k < m->n_nodes; k++) {
        q8_node *n = &m->nodes[k];
        const q8_op_def *def = q8_ops[n->op];
        if (def->prepare) {
            q8_status st = def->prepare(m, n);
            if (st != Q8_OK)
                return st;
        }
        if (n->scratch_bytes > scratch)
            scratch = n->scratch_bytes;
    }
    m->scratch_bytes = (scratch + 63) / 64 * 64;
    return q8_model_scratch_reserve(m);
}

/* ---- accessors ---- */

static int32_t copy_shape(const q8_model *m, int32_t id, int64_t shape[Q8_MAX_DIMS])
{
    const q8_value *v = &m->values[id];
    memcpy(shape, v->shape, sizeof v->shape);
    return v->ndim;
}

int32_t q8_model_input_shape(const q8_model *m, int64_t shape[Q8_MAX_DIMS])
{
    return copy_shape(m, m->inputs[0], shape);
}

int32_t q8_model_output_shape(const q8_model *m, int64_t shape[Q8_MAX_DIMS])
{
    return copy_shape(m, m->outputs[0], shape);
}

int32_t q8_model_n_values(const q8_model *m) { return m->n_values; }
int32_t q8_model_n_nodes(const q8_model *m) { return m->n_nodes; }
int32_t q8_model_n_inputs(const q8_model *m) { return m->n_inputs; }
int32_t q8_model_n_outputs(const q8_model *m) { return m->n_outputs; }

int32_t q8_model_input_id(const q8_model *m, int32_t i)
{
    return i >= 0 && i < m->n_inputs ? m->inputs[i] : -1;
}

int32_t q8_model_output_id(const q8_model *m, int32_t i)
{
    return i >= 0 && i < m->n_outputs ? m->outputs[i] : -1;
}

q8_status q8_model_value(const q8_model *m, int32_t id, q8_value_info *info)
{
    if (id < 0 || id >= m->n_values)
        return q8_error(Q8_ERR_ARG, "value %d does not exist (the model has %d)", (int)id,
                        (int)m->n_values);
    const q8_value *v = &m->values[id];
    memset(info, 0, sizeof *info);
    info->name = v->name;
    info->dtype = v->dtype;
    info->ndim = v->ndim;
    memcpy(info->shape, v->shape, sizeof v->shape);
    if (v->dtype != Q8_F32) {
        info->scale = v->scale;
        info->zero_point = v->zero_point;
    }
    if (m->batch > 0) {
        info->shape[0] = m->batch;
        if (m->fused && v->fused_away) /* q8_model_run did not write it */
            return Q8_OK;
        info->data = q8_value_data(m, id);
    }
    return Q8_OK;
}

const char *q8_model_attr(const q8_model *m, const char *key)
{
    if (strcmp(key, "format") == 0)
        return Q8_FORMAT_NAME;
    if (strcmp(key, "rounding") == 0)
        return Q8_ROUNDING;
    if (strcmp(key, "source_model") == 0)
        return m->source_model;
    if (strcmp(key, "qconfig") == 0)
        return m->qconfig;
    return "";
}

const char *q8_model_gemm_kernel(const q8_model *m)
{
    return m->kernel == Q8_GEMM_AVX2 ? "avx2" : "reference";
}
