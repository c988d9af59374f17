/* data_impl.h — helpers shared by the dataset readers of data/ (not installed). */
#ifndef CQAT_DATA_IMPL_H
#define CQAT_DATA_IMPL_H

#include <stdio.h>

#include "data/data.h"

/* Copies `path` into ds->source, keeping its end (the file name) if it is too long. */
void data_source_set(data_dataset *ds, const char *path);

/* n_classes for labels without a declared class count (IDX, HDF5 without the
 * attribute): max(10, largest + 1), where every class from 10 up to the largest must
 * occur. Labels must be >= 0. `where` names the file (and dataset) for messages. */
ag_status data_classes_infer(const int32_t *labels, int64_t n, const char *where,
                             int32_t *n_classes);

/* Checks that every label is in [0, n_classes). */
ag_status data_classes_check(const int32_t *labels, int64_t n, int32_t n_classes,
                             const char *where);

/* Size in bytes of an open regular file (AG_ERR_IO if it is not one). */
ag_status data_file_size(FILE *f, const char *path, int64_t *size);

/* a * b into *out, false if it overflows int64 (operands >= 0). */
static inline bool data_mul_ok(int64_t a, int64_t b, int64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

#endif
