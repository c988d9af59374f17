/* dataset.c — the dataset struct and the label rules shared by every reader. */
#include "data/data_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void data_dataset_deinit(data_dataset *ds)
{
    if (!ds)
        return;
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

void data_source_set(data_dataset *ds, const char *path)
{
    size_t len = strlen(path);
    size_t cap = sizeof ds->source - 1;
    if (len <= cap) {
        memcpy(ds->source, path, len + 1);
        return;
    }
    /* The end of a path names the file: keep it, mark the cut with "...". */
    memcpy(ds->source, "...", 3);
    memcpy(ds->source + 3, path + len - (cap - 3), cap - 3 + 1);
}

ag_status data_classes_check(const int32_t *labels, int64_t n, int32_t n_classes,
                             const char *where)
{
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= n_classes)
            return ag_error(AG_ERR_FORMAT, "%s: label %d at index %lld is outside [0, %d)",
                            where, labels[i], (long long)i, n_classes);
    return AG_OK;
}

ag_status data_classes_infer(const int32_t *labels, int64_t n, const char *where,
                             int32_t *n_classes)
{
    enum { BASE_CLASSES = 10 };
    int32_t max = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0)
            return ag_error(AG_ERR_FORMAT, "%s: label %d at index %lld is negative", where,
                            labels[i], (long long)i);
        if (labels[i] > max)
            max = labels[i];
    }
    if (max < BASE_CLASSES) {
        *n_classes = BASE_CLASSES;
        return AG_OK;
    }
    /* Classes above the usual 10 must all be present: a lone large label is far
     * more likely a corrupt byte than a dataset with that many classes. */
    int64_t extra = (int64_t)max - BASE_CLASSES + 1;
    int64_t at = 0;
    while (labels[at] != max)
        at++;
    if (extra > n || max == INT32_MAX) /* n labels cannot cover that many classes */
        return ag_error(AG_ERR_FORMAT,
                        "%s: label %d at index %lld is out of range: labels above 9 must "
                        "form the contiguous classes 10..%d, which %lld labels cannot cover",
                        where, max, (long long)at, max, (long long)n);
    uint8_t *seen = calloc((size_t)extra, 1);
    if (!seen)
        return ag_error(AG_ERR_NOMEM, "%s: out of memory checking %lld classes", where,
                        (long long)extra);
    for (int64_t i = 0; i < n; i++)
        if (labels[i] >= BASE_CLASSES)
            seen[labels[i] - BASE_CLASSES] = 1;
    ag_status st = AG_OK;
    for (int64_t k = 0; k < extra; k++) {
        if (seen[k])
            continue;
        st = ag_error(AG_ERR_FORMAT,
                      "%s: label %d at index %lld is out of range: labels above 9 must "
                      "form the contiguous classes 10..%d, but class %lld never occurs",
                      where, max, (long long)at, max, (long long)(k + BASE_CLASSES));
        break;
    }
    free(seen);
    if (st == AG_OK)
        *n_classes = max + 1;
    return st;
}

ag_status data_file_size(FILE *f, const char *path, int64_t *size)
{
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0)
        return ag_error(AG_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return ag_error(AG_ERR_IO, "%s: not a regular file", path);
    *size = (int64_t)sb.st_size;
    return AG_OK;
}
