/* quant_stub.c — QuantStub and DeQuantStub: identities in float that mark where a
 * model's quantized region starts and ends. qat/prepare observes QuantStub's output;
 * convert replaces them with quantize and dequantize. */
#include "nn/layers/layer_impl.h"

static ag_tensor *stub_forward(nn_module *m, ag_ctx *ctx, ag_tensor *x)
{
    (void)m;
    (void)ctx;
    return x;
}

static const nn_module_vtbl quant_stub_vtbl = {.type = "QuantStub", .forward = stub_forward};
static const nn_module_vtbl dequant_stub_vtbl = {.type = "DeQuantStub",
                                                 .forward = stub_forward};

nn_module *nn_quant_stub_new(void)
{
    return nn_layer_alloc(sizeof(nn_module), &quant_stub_vtbl);
}

nn_module *nn_dequant_stub_new(void)
{
    return nn_layer_alloc(sizeof(nn_module), &dequant_stub_vtbl);
}
