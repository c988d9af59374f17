/* fuzz_model_check.h — what the state fuzz targets do with a model that loaded: run
 * it as `cqat eval` would, on two blank images of its input shape (a loaded model must
 * evaluate without crashing or undefined behaviour, whatever the file held). */
#ifndef CQAT_FUZZ_MODEL_CHECK_H
#define CQAT_FUZZ_MODEL_CHECK_H

#include <stdlib.h>
#include <string.h>

#include "tools/commands.h"

static inline void fuzz_evaluate(nn_module *m, const nn_zoo_config *cfg)
{
    int64_t pixels = (int64_t)cfg->in_channels * cfg->in_h * cfg->in_w;
    if (pixels > (1 << 16) || cfg->in_channels > 3)
        return; /* the loader takes at most 3 channels; keep big inputs fast */
    data_dataset ds = {.n = 2,
                       .c = cfg->in_channels,
                       .h = cfg->in_h,
                       .w = cfg->in_w,
                       .n_classes = cfg->num_classes};
    ds.images = calloc((size_t)(2 * pixels), 1);
    ds.labels = calloc(2, sizeof *ds.labels);
    if (!ds.images || !ds.labels)
        abort();
    memset(ds.images, 128, (size_t)pixels); /* one grey image, one black */
    cqat_eval_result r;
    (void)cqat_evaluate(m, &ds, 2, &r);
    data_dataset_deinit(&ds);
}

#endif
