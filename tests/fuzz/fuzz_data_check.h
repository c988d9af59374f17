/* fuzz_data_check.h — what every data loader promises about a dataset it returns,
 * checked by the data fuzz targets after a successful load (and a batch drawn from it). */
#ifndef CQAT_FUZZ_DATA_CHECK_H
#define CQAT_FUZZ_DATA_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "data/data.h"

static inline void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz: broken promise: %s\n", what);
    abort();
}

/* Shape, ownership and label range; then one shuffled, augmented batch. */
static inline void fuzz_check_dataset(const data_dataset *ds)
{
    if (ds->n < 1 || ds->c < 1 || ds->h < 1 || ds->w < 1 || !ds->images || !ds->labels)
        fuzz_fail("a loaded dataset has an empty dimension or no buffers");
    if (ds->n_classes < 1)
        fuzz_fail("n_classes < 1");
    for (int64_t i = 0; i < ds->n; i++)
        if (ds->labels[i] < 0 || ds->labels[i] >= ds->n_classes)
            fuzz_fail("a label outside [0, n_classes)");
    /* The last image's last byte must be readable (ASan checks the extent). */
    volatile uint8_t last = ds->images[ds->n * (int64_t)ds->c * ds->h * ds->w - 1];
    (void)last;
    if (ds->c > 3 || ds->n > 4096 || (int64_t)ds->c * ds->h * ds->w > (1 << 16))
        return; /* the loader refuses > 3 channels; keep large images fast */
    data_transform tf = data_transform_fashion_mnist();
    tf.crop_padding = 2;
    tf.hflip = true;
    data_loader ld;
    if (data_loader_init(&ld, ds, 4, true, false, 7, &tf) != AG_OK)
        fuzz_fail("data_loader_init refused a loaded dataset");
    float *x = malloc(sizeof *x * 4 * (size_t)ds->c * (size_t)ds->h * (size_t)ds->w);
    int32_t y[4], count = 0;
    if (!x)
        abort();
    if (data_loader_batch(&ld, data_loader_num_batches(&ld) - 1, x, y, &count) != AG_OK ||
        count < 1 || count > 4)
        fuzz_fail("the last batch of a loaded dataset cannot be drawn");
    free(x);
    data_loader_deinit(&ld);
}

#endif
