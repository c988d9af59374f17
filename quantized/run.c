/* run.c — running a model: activation buffers sized for the largest batch seen, graph
 * inputs copied in, nodes run in order. */
#include "quantized/q8_impl.h"

#include <inttypes.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

/* Bytes of one batch item of value v. */
static size_t item_bytes(const q8_value *v)
{
    return (size_t)v->item_numel * q8_dtype_size(v->dtype);
}

q8_status q8_model_reserve(q8_model *m, int64_t batch)
{
    if (batch < 1)
        return q8_error(Q8_ERR_ARG, "batch %" PRId64 " must be at least 1", batch);
    if (batch <= m->cap_batch)
        return Q8_OK;
    int64_t per_item = 0;
    for (int32_t i = 0; i < m->n_values; i++)
        per_item += (int64_t)item_bytes(&m->values[i]) + 64;
    if (batch > Q8_MAX_BATCH_BYTES / per_item)
        return q8_error(Q8_ERR_ARG,
                        "batch %" PRId64 " needs more than %" PRId64 " bytes of activations "
                        "(%" PRId64 " per item)",
                        batch, Q8_MAX_BATCH_BYTES, per_item);
    size_t total = 0;
    for (int32_t i = 0; i < m->n_values; i++) {
        m->values[i].offset = total;
        total += ((size_t)batch * item_bytes(&m->values[i]) + 63) / 64 * 64;
    }
    uint8_t *arena = q8_alloc(total);
    if (!arena)
        return q8_error(Q8_ERR_NOMEM, "cannot allocate %zu bytes of activations for batch %" PRId64,
                        total, batch);
    q8_free(m->arena);
    m->arena = arena;
    m->cap_batch = batch;
    m->batch = 0; /* the old contents are gone */
    return Q8_OK;
}

static q8_status run_nodes(q8_model *m, int64_t batch)
{
    for (int32_t k = 0; k < m->n_nodes; k++) {
        const q8_node *n = &m->nodes[k];
        if (m->fused && n->fused_into >= 0) /* computed by node fused_into */
            continue;
        q8_status st = q8_ops[n->op]->run(m, n, batch);
        if (st != Q8_OK)
            return st;
    }
    return Q8_OK;
}

/* Items per slice: a slice's activations (refcnn: 41 KB an item) stay in L2 from one
 * layer to the next, and the slices are enough to balance two or more threads. */
enum { SLICE = 8 };

/* Ops whose items are independent (not linear_dynamic, whose qparams come from the whole
 * batch; the float ops keep their own parallel GEMM). */
static bool sliceable(const q8_model *m)
{
    for (int32_t k = 0; k < m->n_nodes; k++)
        switch (m->nodes[k].op) {
        case Q8_OP_QUANTIZE:
        case Q8_OP_DEQUANTIZE:
        case Q8_OP_CONV2D:
        case Q8_OP_LINEAR:
        case Q8_OP_ADD:
        case Q8_OP_MUL:
        case Q8_OP_CAT:
        case Q8_OP_MAX_POOL2D:
        case Q8_OP_AVG_POOL2D:
        case Q8_OP_ADAPTIVE_AVG_POOL2D:
        case Q8_OP_FLATTEN:
        case Q8_OP_CLAMP:
        case Q8_OP_HARDSWISH:
        case Q8_OP_REQUANTIZE:
            break;
        default:
            return false;
        }
    return true;
}

/* The whole graph per slice of the batch, slices over the threads (one parallel region
 * per run instead of one per op, and a slice's activations stay in cache between
 * layers). Each slice runs the ops on a view of the model: the same nodes, the values'
 * offsets moved to the slice's first item, and the thread's scratch block as the only
 * one (so the ops run serially inside). */
static q8_status run_sliced(q8_model *m, int64_t batch)
{
    int64_t slices = (batch + SLICE - 1) / SLICE;
    q8_status st = Q8_OK;
    char msg[512] = "cannot allocate a model view per thread"; /* the error slot is per thread */
#pragma omp parallel
    {
        q8_model view = *m;
        view.values = malloc((size_t)m->n_values * sizeof *view.values);
        view.scratch = q8_scratch(m, omp_get_thread_num());
        view.scratch_threads = 1;
        bool ok = view.values != NULL;
#pragma omp for schedule(dynamic, 1)
        for (int64_t sl = 0; sl < slices; sl++) {
            int64_t b0 = sl * SLICE, bs = batch - b0 < SLICE ? batch - b0 : SLICE;
            for (int32_t i = 0; ok && i < m->n_values; i++) {
                view.values[i] = m->values[i];
                view.values[i].offset += (size_t)b0 * item_bytes(&m->values[i]);
            }
            q8_status s = ok ? run_nodes(&view, bs) : Q8_ERR_NOMEM;
            if (s != Q8_OK) {
#pragma omp critical(q8_run_sliced)
                if (st == Q8_OK) {
                    st = s;
                    if (ok)
                        snprintf(msg, sizeof msg, "%s", q8_last_error());
                }
            }
        }
        free(view.values);
    }
    return st == Q8_OK ? Q8_OK : q8_error(st, "%s", msg);
}

/* One run, with the fused plan (only the graph outputs are written) or without. */
static q8_status run_graph(q8_model *m, const void *const *inputs, int64_t batch, bool fused)
{
    q8_status st = q8_model_reserve(m, batch);
    if (st == Q8_OK)
        st = q8_model_scratch_reserve(m);
    if (st != Q8_OK)
        return st;
    m->batch = 0;
    m->fused = fused;
    for (int32_t i = 0; i < m->n_inputs; i++) {
        const q8_value *v = &m->values[m->inputs[i]];
        if (!inputs[i])
            return q8_error(Q8_ERR_ARG, "graph input %d (value %d) is NULL", (int)i,
                            (int)m->inputs[i]);
        memcpy(q8_value_data(m, m->inputs[i]), inputs[i], (size_t)batch * item_bytes(v));
    }
    st = sliceable(m) && batch > SLICE && omp_get_max_threads() > 1 && !omp_in_parallel()
             ? run_sliced(m, batch)
             : run_nodes(m, batch);
    if (st != Q8_OK)
        return st;
    m->batch = batch;
    return Q8_OK;
}

q8_status q8_model_run_values(q8_model *m, const void *const *inputs, int64_t batch)
{
    if (!m || !inputs)
        return q8_error(Q8_ERR_ARG, "q8_model_run_values: model or inputs is NULL");
    return run_graph(m, inputs, batch, false);
}

q8_status q8_model_run(q8_model *m, const float *input, int64_t batch, float *output)
{
    if (!m || !input || !output)
        return q8_error(Q8_ERR_ARG, "q8_model_run: model, input or output is NULL");
    if (m->n_inputs != 1 || m->n_outputs != 1 || m->values[m->inputs[0]].dtype != Q8_F32 ||
        m->values[m->outputs[0]].dtype != Q8_F32)
        return q8_error(Q8_ERR_STATE,
                        "q8_model_run needs one f32 input and one f32 output; this model has "
                        "%d inputs and %d outputs (use q8_model_run_values)",
                        (int)m->n_inputs, (int)m->n_outputs);
    const void *in[1] = {input};
    q8_status st = run_graph(m, in, batch, true);
    if (st != Q8_OK)
        return st;
    const q8_value *y = &m->values[m->outputs[0]];
    memcpy(output, q8_value_data(m, m->outputs[0]), (size_t)batch * item_bytes(y));
    return Q8_OK;
}
