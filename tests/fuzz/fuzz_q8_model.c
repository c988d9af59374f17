/* fuzz_q8_model.c — frozen int8 models (docs/FORMAT.md) through q8_model_load; a model
 * that loads is described and run once on a small batch (whatever validation accepts
 * must run without crashing or undefined behaviour).
 *
 * Input: a selector byte (bit 0: batch 2 instead of 1), then an HDF5 input as
 * fuzz_util.h describes. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "quantized/q8.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_h5_init();
    devnull = fopen("/dev/null", "w");
    if (!devnull)
        abort();
    fuzz_h5_mark();
    return 0;
}

enum { MAX_RUN_ELEMENTS = 1 << 18 };

/* Elements of one batch item of every value; -1 if any value is unbounded. */
static int64_t model_elements(const q8_model *m)
{
    int64_t total = 0;
    for (int32_t id = 0; id < q8_model_n_values(m); id++) {
        q8_value_info v;
        if (q8_model_value(m, id, &v) != Q8_OK)
            abort(); /* every id below n_values must be describable */
        int64_t numel = 1;
        for (int32_t d = 1; d < v.ndim; d++)
            if (__builtin_mul_overflow(numel, v.shape[d], &numel) || numel > MAX_RUN_ELEMENTS)
                return -1;
        total += numel;
        if (total > MAX_RUN_ELEMENTS)
            return -1;
    }
    return total;
}

/* Runs the model on inputs filled with a byte pattern (floats: small values). */
static void run_once(q8_model *m, int64_t batch)
{
    int32_t n_in = q8_model_n_inputs(m);
    void *bufs[8] = {0};
    const void *inputs[8];
    if (n_in < 1 || n_in > 8)
        return;
    for (int32_t i = 0; i < n_in; i++) {
        q8_value_info v;
        if (q8_model_value(m, q8_model_input_id(m, i), &v) != Q8_OK)
            abort();
        int64_t numel = batch;
        for (int32_t d = 1; d < v.ndim; d++)
            numel *= v.shape[d];
        size_t bytes = (size_t)numel * q8_dtype_size(v.dtype);
        bufs[i] = malloc(bytes ? bytes : 1);
        if (!bufs[i])
            abort();
        if (v.dtype == Q8_F32)
            for (int64_t k = 0; k < numel; k++)
                ((float *)bufs[i])[k] = (float)(k % 7) * 0.25f - 0.5f;
        else
            memset(bufs[i], 0x5a, bytes);
        inputs[i] = bufs[i];
    }
    q8_error_clear();
    q8_status st = q8_model_run_values(m, inputs, batch);
    fuzz_report("q8_model_run_values", st == Q8_OK ? NULL : q8_last_error());
    if (st != Q8_OK && !q8_last_error()[0])
        abort();
    for (int32_t i = 0; i < n_in; i++)
        free(bufs[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int64_t batch = 1 + (data[0] & 1);
    const char *path = fuzz_write_h5(0, data + 1, size - 1);
    q8_error_clear();
    q8_model *m = q8_model_load(path);
    fuzz_report("q8_model_load", m ? NULL : q8_last_error());
    if (!m) {
        if (!q8_last_error()[0])
            abort(); /* a refusal must say why */
    } else {
        q8_model_describe(m, devnull);
        if (model_elements(m) >= 0)
            run_once(m, batch);
        q8_model_free(m);
    }
    fuzz_h5_check_closed("q8_model_load");
    return 0;
}
