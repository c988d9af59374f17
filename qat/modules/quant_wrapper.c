/* quant_wrapper.c — QuantWrapper (torch/ao/quantization/stubs.py): a module between a
 * QuantStub and a DeQuantStub, so that a float module can be quantized on its own:
 *     forward(x) = dequant(module(quant(x)))
 * Children are registered as PyTorch does: quant, dequant, module. */
#include "qat/modules/modules_impl.h"

enum { QUANT, DEQUANT, MODULE, N_CHILDREN };

static ag_tensor *quant_wrapper_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    AG_ASSERT(m->n_children >= N_CHILDREN);
    x = nn_forward(m->children[QUANT].m, ctx, x);
    x = nn_forward(m->children[MODULE].m, ctx, x);
    return nn_forward(m->children[DEQUANT].m, ctx, x);
}

static const nn_module_vtbl quant_wrapper_vtbl = {.type = "QuantWrapper",
                                                  .forward = quant_wrapper_forward};

nn_module *qat_quant_wrapper_new(nn_module *module)
{
    if (!module) {
        qat_failed_status();
        return NULL;
    }
    const bool training = module->training; // registration overwrites it
    nn_module *m = qat_mod_alloc(sizeof(nn_module), &quant_wrapper_vtbl);
    if (!m) {
        nn_module_free(module);
        return NULL;
    }
    /* QuantStub(qconfig) / DeQuantStub(qconfig) keep the module's own qconfig if it has
     * one (a None qconfig is falsy in PyTorch and not passed on). */
    const qat_qconfig *qc = qat_module_qconfig(module);
    nn_module *quant = nn_quant_stub_new(), *dequant = nn_dequant_stub_new();
    if (quant && qc)
        quant->qconfig = qc;
    if (dequant && qc)
        dequant->qconfig = qc;
    ag_status st = qat_add_child(m, AG_OK, "quant", quant);
    st = qat_add_child(m, st, "dequant", dequant);
    st = qat_add_child(m, st, "module", module);
    if (st == AG_OK)
        nn_module_train(m, training); // self.train(module.training)
    return qat_finish(m, st);
}
