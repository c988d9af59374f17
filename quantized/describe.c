/* describe.c — q8_model_describe: the graph as text, for people and for diffs. */
#include "quantized/q8_impl.h"

#include <inttypes.h>

static void describe_value(const q8_model *m, int32_t id, FILE *out)
{
    const q8_value *v = &m->values[id];
    char s[128];
    fprintf(out, "  %%%-3d %-4s %-20s", (int)id, q8_dtype_name(v->dtype),
            q8_shape_str(s, sizeof s, v->ndim, v->shape));
    if (v->dtype != Q8_F32)
        fprintf(out, " scale %-12.9g zp %-4d", (double)v->scale, (int)v->zero_point);
    else
        fprintf(out, " %-24s", "");
    fprintf(out, " %7" PRId64 " B/item  '%s'\n",
            v->item_numel * (int64_t)q8_dtype_size(v->dtype), v->name);
}

static size_t describe_node(const q8_node *n, FILE *out)
{
    const q8_op_def *def = q8_ops[n->op];
    fprintf(out, "  #%-3d %-19s '%s' ", (int)n->index, def->name, n->name);
    for (int32_t i = 0; i < n->n_in; i++)
        fprintf(out, "%s%%%d", i ? ", " : "(", (int)n->in[i]);
    fprintf(out, ") -> %%%d\n", (int)n->out[0]);
    if (def->n_attrs) {
        fprintf(out, "        ");
        for (int32_t a = 0; a < def->n_attrs; a++)
            fprintf(out, "%s%s=%" PRId64, a ? " " : "", def->attrs[a].key, n->attr[a]);
        fprintf(out, "\n");
    }
    size_t bytes = 0;
    for (int32_t c = 0; c < def->n_consts; c++) {
        const q8_tensor *t = &n->cst[c];
        if (!t->data)
            continue;
        char s[128];
        size_t b = (size_t)t->numel * q8_dtype_size(t->dtype);
        bytes += b;
        fprintf(out, "        %-13s %-4s %-18s %zu B", def->consts[c].key,
                q8_dtype_name(t->dtype), q8_shape_str(s, sizeof s, t->ndim, t->shape), b);
        if (t->dtype == Q8_F32 && t->numel <= 4) {
            for (int64_t i = 0; i < t->numel; i++)
                fprintf(out, " %.9g", (double)((const float *)t->data)[i]);
        } else if (t->dtype == Q8_I32 && t->numel <= 4) {
            for (int64_t i = 0; i < t->numel; i++)
                fprintf(out, " %d", (int)((const int32_t *)t->data)[i]);
        }
        fprintf(out, "\n");
    }
    return bytes;
}

void q8_model_describe(const q8_model *m, FILE *out)
{
    fprintf(out, "%s model (format_version %d, rounding %s)\n", Q8_FORMAT_NAME,
            Q8_FORMAT_VERSION, Q8_ROUNDING);
    fprintf(out, "source_model: %s\nqconfig: %s\n", m->source_model[0] ? m->source_model : "-",
            m->qconfig[0] ? m->qconfig : "-");
    fprintf(out, "gemm kernel: %s\ninputs:", q8_model_gemm_kernel(m));
    for (int32_t i = 0; i < m->n_inputs; i++)
        fprintf(out, " %%%d", (int)m->inputs[i]);
    fprintf(out, "\noutputs:");
    for (int32_t i = 0; i < m->n_outputs; i++)
        fprintf(out, " %%%d", (int)m->outputs[i]);
    fprintf(out, "\nvalues (%d):\n", (int)m->n_values);
    int64_t per_item = 0;
    for (int32_t i = 0; i < m->n_values; i++) {
        describe_value(m, i, out);
        per_item += m->values[i].item_numel * (int64_t)q8_dtype_size(m->values[i].dtype);
    }
    fprintf(out, "nodes (%d):\n", (int)m->n_nodes);
    size_t constants = 0;
    for (int32_t k = 0; k < m->n_nodes; k++)
        constants += describe_node(&m->nodes[k], out);
    fprintf(out, "constants: %zu bytes; activations: %" PRId64 " bytes per batch item; "
            "scratch: %zu bytes\n", constants, per_item, m->scratch_bytes);
}
