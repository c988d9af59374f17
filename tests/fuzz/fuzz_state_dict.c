/* fuzz_state_dict.c — state_dict files as `cqat eval --model NAME [--qat] --weights FILE`
 * and `cqat train --init FILE` read them: nn_state_load_file into a zoo model, float or
 * QAT-prepared (qconfig guessed from the file, as `--qat` does), then an evaluation.
 *
 * Input: a selector byte, then an HDF5 input as fuzz_util.h describes. Selector bits
 * 0-1: the model (refcnn, lenet5, mobilenet-tiny, refcnn; refcnn and mobilenet-tiny at
 * 8x8 inputs, lenet5 at 28x28: the loader does not care and small models fuzz faster);
 * bit 2: the file is a QAT-prepared state_dict; bit 3: load with nn_load_opts (bit 4:
 * strict, bit 5: allow non-finite values) instead of the command line's strict default.
 *
 * Besides "no crash, no leak, a message on failure", it checks the loader's promise that
 * a refused file leaves the model untouched: models are built once and reused until a
 * load succeeds, and a failed load must leave their state bit for bit as it was. */
#include <string.h>

#include "fuzz_model_check.h"
#include "fuzz_util.h"
#include "nn/state_h5.h"
#include "tools/qat_model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_h5_init();
    ag_set_num_threads(1);
    fuzz_h5_mark();
    return 0;
}

/* One cached model: its configuration, the QAT spec it was prepared with ("" for
 * float) and a hash of its state when built. */
typedef struct cached {
    nn_module *m;
    qat_qconfig_map *map;
    nn_zoo_config cfg;
    char spec[256];
    uint64_t hash;
} cached;

static cached models[4];

static bool hash_one(void *ud, const char *key, ag_tensor *t, nn_state_kind kind)
{
    (void)kind;
    uint64_t *h = ud;
    const unsigned char *p = (const unsigned char *)t->data;
    size_t n = (size_t)t->numel * ag_dtype_size(t->dtype);
    for (const char *k = key; *k; k++)
        *h = (*h ^ (unsigned char)*k) * 0x100000001b3u;
    for (int32_t d = 0; d < t->ndim; d++)
        *h = (*h ^ (uint64_t)t->shape[d]) * 0x100000001b3u;
    for (size_t i = 0; i < n; i++)
        *h = (*h ^ p[i]) * 0x100000001b3u;
    return true;
}

static uint64_t state_hash(nn_module *m)
{
    uint64_t h = 0xcbf29ce484222325u;
    nn_state_foreach(m, hash_one, &h);
    return h;
}

static void drop(cached *c)
{
    nn_module_free(c->m);
    qat_qconfig_map_free(c->map);
    memset(c, 0, sizeof *c);
}

/* The model of slot `slot` for this file (float, or QAT with the spec guessed from the
 * file), from the cache when it is the same. NULL if the QAT spec cannot be guessed. */
static cached *model_for(int slot, bool qat, const char *path)
{
    static const char *const names[] = {"refcnn", "lenet5", "mobilenet-tiny", "refcnn"};
    cached *c = &models[slot];
    cqat_qat_spec spec;
    char text[256] = "";
    if (qat) {
        ag_error_clear();
        if (cqat_qat_spec_from_state(path, &spec) != AG_OK) {
            if (!ag_last_error()[0])
                abort();
            return NULL;
        }
        cqat_qat_spec_format(&spec, text, sizeof text);
    }
    if (c->m && strcmp(c->spec, text) == 0)
        return c;
    drop(c);
    if (nn_zoo_config_default(names[slot], &c->cfg) != AG_OK)
        abort();
    if (slot != 1)
        c->cfg.in_h = c->cfg.in_w = 8;
    if (qat ? cqat_qat_build(&c->cfg, &spec, NULL, &c->m, &c->map) != AG_OK
            : !(c->m = nn_zoo_new(&c->cfg, NULL)))
        abort();
    snprintf(c->spec, sizeof c->spec, "%s", text);
    c->hash = state_hash(c->m);
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    bool qat = (sel >> 2) & 1;
    const char *path = fuzz_write_h5(0, data + 1, size - 1);
    cached *c = model_for(sel & 3, qat, path);
    if (c) {
        nn_load_opts strict = {.strict = true, .allow_nonfinite = false};
        nn_load_opts opts = {.strict = (sel >> 4) & 1, .allow_nonfinite = (sel >> 5) & 1};
        ag_error_clear();
        ag_status st = nn_state_load_file(path, c->m, (sel & 8) ? &opts : &strict);
        fuzz_report("nn_state_load_file", st == AG_OK ? NULL : ag_last_error());
        if (st == AG_OK) {
            if (qat) { /* as cqat_model_for_file: evaluate as trained */
                qat_enable_observer_all(c->m, false);
                qat_freeze_bn_stats(c->m);
            }
            fuzz_evaluate(c->m, &c->cfg);
            drop(c); /* loaded and run: rebuilt for the next input */
        } else if (!ag_last_error()[0]) {
            abort(); /* a refusal must say why */
        } else if (state_hash(c->m) != c->hash) {
            fprintf(stderr, "fuzz: a refused state_dict changed the model (%s)\n",
                    ag_last_error());
            abort();
        }
    }
    fuzz_h5_check_closed("state_dict loading");
    return 0;
}
