/* cifar.c — CIFAR-10 binary batches (https://www.cs.toronto.edu/~kriz/cifar.html).
 *
 * Each record: 1 label byte (0..9), then 3072 pixel bytes: the 1024 red values of a
 * 32x32 image in row-major order, then the green, then the blue; that is already
 * the (C, H, W) layout the dataset keeps, so a record's pixels are copied as they are.
 * Every file is sized first, so the buffers are allocated once, at the right size.
 */
#include "data/data_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum {
    CIFAR_SIDE = 32,
    CIFAR_PIXELS = 3 * CIFAR_SIDE * CIFAR_SIDE, /* 3072, (C, H, W) */
    CIFAR_RECORD = 1 + CIFAR_PIXELS,            /* 3073 */
    CIFAR_CLASSES = 10,
    CIFAR_RECORDS_PER_READ = 1024,
};

/* Number of records in `path`, from its size. */
static ag_status cifar_count(const char *path, int64_t *records)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return ag_error(AG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    int64_t size = 0;
    *records = 0;
    ag_status st = data_file_size(f, path, &size);
    fclose(f);
    if (st != AG_OK)
        return st;
    if (size == 0 || size % CIFAR_RECORD != 0)
        return ag_error(AG_ERR_FORMAT,
                        "%s: %lld bytes is not a whole number of CIFAR-10 records (%d bytes "
                        "each: 1 label + 3072 pixels)",
                        path, (long long)size, CIFAR_RECORD);
    *records = size / CIFAR_RECORD;
    return AG_OK;
}

/* Reads the `records` records of `path` into images (records, 3, 32, 32) and labels. */
static ag_status cifar_read(const char *path, int64_t records, uint8_t *images, int32_t *labels,
                            uint8_t *chunk)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return ag_error(AG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    ag_status st = AG_OK;
    for (int64_t r0 = 0; r0 < records && st == AG_OK; r0 += CIFAR_RECORDS_PER_READ) {
        int64_t n =
            records - r0 < CIFAR_RECORDS_PER_READ ? records - r0 : CIFAR_RECORDS_PER_READ;
        if (fread(chunk, CIFAR_RECORD, (size_t)n, f) != (size_t)n) {
            st = ag_error(AG_ERR_IO, "%s: read error at record %lld: %s", path, (long long)r0,
                          ferror(f) ? strerror(errno) : "file shrank");
            break;
        }
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *rec = chunk + i * CIFAR_RECORD;
            if (rec[0] >= CIFAR_CLASSES) {
                st = ag_error(AG_ERR_FORMAT,
                              "%s: record %lld has label %d, CIFAR-10 labels are 0..9 (a "
                              "CIFAR-100 file has 2 label bytes per record)",
                              path, (long long)(r0 + i), rec[0]);
                break;
            }
            labels[r0 + i] = rec[0];
            memcpy(images + (r0 + i) * CIFAR_PIXELS, rec + 1, CIFAR_PIXELS);
        }
    }
    fclose(f);
    return st;
}

/* "data_batch_1.bin (+5 more)" style source name. */
static void cifar_source(data_dataset *ds, const char *const *paths, int32_t n_paths)
{
    if (n_paths == 1) {
        data_source_set(ds, paths[0]);
        return;
    }
    char buf[4096 + 32];
    snprintf(buf, sizeof buf, "%.4096s (+%d more)", paths[0], n_paths - 1);
    data_source_set(ds, buf);
}

ag_status data_cifar10_load(const char *const *paths, int32_t n_paths, data_dataset *ds)
{
    if (!ds)
        return ag_error(AG_ERR_ARG, "data_cifar10_load: dataset is NULL");
    memset(ds, 0, sizeof *ds);
    if (!paths || n_paths < 1)
        return ag_error(AG_ERR_ARG, "data_cifar10_load: no files given (n_paths = %d)",
                        n_paths);
    for (int32_t i = 0; i < n_paths; i++)
        if (!paths[i])
            return ag_error(AG_ERR_ARG, "data_cifar10_load: path %d is NULL", i);

    ag_status st = AG_OK;
    uint8_t *images = NULL, *chunk = NULL;
    int32_t *labels = NULL;
    int64_t *records = malloc((size_t)n_paths * sizeof *records); /* (n_paths) */
    if (!records)
        return ag_error(AG_ERR_NOMEM, "data_cifar10_load: out of memory");
    int64_t total = 0;
    for (int32_t i = 0; i < n_paths && st == AG_OK; i++) {
        st = cifar_count(paths[i], &records[i]);
        total += records[i];
    }
    if (st == AG_OK && total > DATA_MAX_IMAGE_BYTES / CIFAR_PIXELS)
        st = ag_error(AG_ERR_FORMAT, "%s ...: %lld records exceed the %lld-byte limit",
                      paths[0], (long long)total, (long long)DATA_MAX_IMAGE_BYTES);
    if (st != AG_OK)
        goto cleanup;

    images = malloc((size_t)(total * CIFAR_PIXELS));
    labels = malloc((size_t)total * sizeof *labels);
    chunk = malloc((size_t)CIFAR_RECORDS_PER_READ * CIFAR_RECORD);
    if (!images || !labels || !chunk) {
        st = ag_error(AG_ERR_NOMEM, "%s: out of memory for %lld CIFAR-10 records", paths[0],
                      (long long)total);
        goto cleanup;
    }
    int64_t at = 0;
    for (int32_t i = 0; i < n_paths && st == AG_OK; i++) {
        st = cifar_read(paths[i], records[i], images + at * CIFAR_PIXELS, labels + at, chunk);
        at += records[i];
    }
    if (st != AG_OK)
        goto cleanup;

    ds->n = total;
    ds->c = 3;
    ds->h = CIFAR_SIDE;
    ds->w = CIFAR_SIDE;
    ds->n_classes = CIFAR_CLASSES;
    ds->images = images;
    ds->labels = labels;
    cifar_source(ds, paths, n_paths);
    images = NULL;
    labels = NULL;
cleanup:
    free(images);
    free(labels);
    free(chunk);
    free(records);
    return st;
}
