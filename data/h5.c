/* h5.c — image and label arrays from an HDF5 file.
 *
 * Every HDF5 call is checked and turned into a message naming the file and the
 * dataset; HDF5's own error printing is switched off for the duration of a load and
 * restored after (the library leaves the process's HDF5 settings as it found them).
 * A declared array size is trusted only as far as the file stores data for it.
 */
#include "data/data_impl.h"

#include <errno.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

enum { DEFLATE_MAX_RATIO = 1032 };

/* The HDF5 handles of one load, closed together. */
typedef struct h5_load {
    const char *path;
    hid_t file;
    hid_t dset[2]; /* images, labels */
    hid_t space[2];
    hid_t type[2];
    int rank[2];
    hsize_t dims[2][4];
} h5_load;

static void h5_load_close(h5_load *ld)
{
    for (int i = 0; i < 2; i++) {
        if (ld->type[i] >= 0)
            H5Tclose(ld->type[i]);
        if (ld->space[i] >= 0)
            H5Sclose(ld->space[i]);
        if (ld->dset[i] >= 0)
            H5Dclose(ld->dset[i]);
    }
    if (ld->file >= 0)
        H5Fclose(ld->file);
}

/* "uint8", "int64", "float32", "string"...: a dtype for messages. */
static void h5_type_name(hid_t type, char *out, size_t cap)
{
    H5T_class_t cls = H5Tget_class(type);
    size_t bits = H5Tget_size(type) * 8;
    if (cls == H5T_INTEGER)
        snprintf(out, cap, "%sint%zu", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", bits);
    else if (cls == H5T_FLOAT)
        snprintf(out, cap, "float%zu", bits);
    else if (cls == H5T_STRING)
        snprintf(out, cap, "string");
    else
        snprintf(out, cap, "a non-numeric type (HDF5 class %d)", (int)cls);
}

/* "[60000, 28, 28]" */
static void h5_shape_str(const hsize_t *dims, int rank, char *out, size_t cap)
{
    size_t len = (size_t)snprintf(out, cap, "[");
    for (int d = 0; d < rank && len < cap; d++)
        len += (size_t)snprintf(out + len, cap - len, "%s%llu", d ? ", " : "",
                                (unsigned long long)dims[d]);
    if (len < cap)
        snprintf(out + len, cap - len, "]");
}

/* Opens dataset `name` (role: "images" or "labels") with its space, type and shape. */
static ag_status h5_open_dataset(h5_load *ld, int i, const char *name, const char *role)
{
    if (!name || !name[0])
        return ag_error(AG_ERR_ARG, "%s: no name given for the %s dataset", ld->path, role);
    if (H5Lexists(ld->file, name, H5P_DEFAULT) <= 0)
        return ag_error(AG_ERR_FORMAT, "%s: no dataset '%s' (the %s)", ld->path, name, role);
    ld->dset[i] = H5Dopen2(ld->file, name, H5P_DEFAULT);
    if (ld->dset[i] < 0)
        return ag_error(AG_ERR_FORMAT, "%s: '%s' (the %s) is not a dataset", ld->path, name,
                        role);
    ld->space[i] = H5Dget_space(ld->dset[i]);
    ld->type[i] = H5Dget_type(ld->dset[i]);
    if (ld->space[i] < 0 || ld->type[i] < 0)
        return ag_error(AG_ERR_FORMAT, "%s: cannot read the dataspace or type of '%s'",
                        ld->path, name);
    ld->rank[i] = H5Sget_simple_extent_ndims(ld->space[i]);
    if (ld->rank[i] < 0)
        return ag_error(AG_ERR_FORMAT, "%s: cannot read the shape of '%s'", ld->path, name);
    if (ld->rank[i] > 4)
        return ag_error(AG_ERR_FORMAT, "%s: '%s' (the %s) has rank %d, too many", ld->path,
                        name, role, ld->rank[i]);
    if (H5Sget_simple_extent_dims(ld->space[i], ld->dims[i], NULL) < 0)
        return ag_error(AG_ERR_FORMAT, "%s: cannot read the shape of '%s'", ld->path, name);
    return AG_OK;
}

/* Refuses a declared size the file does not store data for (a tiny crafted file
 * must not make us allocate gigabytes): deflate compresses at most 1032:1. */
static ag_status h5_check_stored(const h5_load *ld, int i, const char *name, int64_t bytes)
{
    int64_t stored = (int64_t)H5Dget_storage_size(ld->dset[i]);
    if (bytes / DEFLATE_MAX_RATIO > stored)
        return ag_error(AG_ERR_FORMAT,
                        "%s: '%s' declares %lld bytes but the file stores only %lld for it "
                        "(unwritten or not real data)",
                        ld->path, name, (long long)bytes, (long long)stored);
    return AG_OK;
}

/* Checks the images dataset: uint8, [N, H, W] or [N, C, H, W], nothing empty, within
 * the size limit; fills ds->n, c, h, w. */
static ag_status h5_check_images(const h5_load *ld, const char *name, data_dataset *ds)
{
    char tname[64], shape[128];
    h5_type_name(ld->type[0], tname, sizeof tname);
    h5_shape_str(ld->dims[0], ld->rank[0], shape, sizeof shape);
    if (H5Tget_class(ld->type[0]) != H5T_INTEGER || H5Tget_size(ld->type[0]) != 1 ||
        H5Tget_sign(ld->type[0]) != H5T_SGN_NONE)
        return ag_error(AG_ERR_FORMAT, "%s: images '%s' are %s, expected uint8", ld->path, name,
                        tname);
    int rank = ld->rank[0];
    if (rank != 3 && rank != 4)
        return ag_error(AG_ERR_FORMAT,
                        "%s: images '%s' have shape %s, expected [N, H, W] or [N, C, H, W]",
                        ld->path, name, shape);
    int64_t bytes = 1;
    bool overflow = false;
    for (int d = 0; d < rank; d++) {
        if (ld->dims[0][d] == 0)
            return ag_error(AG_ERR_FORMAT, "%s: images '%s' have shape %s: empty", ld->path,
                            name, shape);
        overflow |=
            ld->dims[0][d] > INT64_MAX || !data_mul_ok(bytes, (int64_t)ld->dims[0][d], &bytes);
    }
    if (overflow || bytes > DATA_MAX_IMAGE_BYTES || bytes / (int64_t)ld->dims[0][0] > INT32_MAX)
        return ag_error(AG_ERR_FORMAT,
                        "%s: images '%s' have shape %s, more than the %lld-byte limit",
                        ld->path, name, shape, (long long)DATA_MAX_IMAGE_BYTES);
    ds->n = (int64_t)ld->dims[0][0];
    ds->c = rank == 4 ? (int32_t)ld->dims[0][1] : 1;
    ds->h = (int32_t)ld->dims[0][rank - 2];
    ds->w = (int32_t)ld->dims[0][rank - 1];
    return h5_check_stored(ld, 0, name, bytes);
}

/* Checks the labels dataset: any integer type, shape [N] with N the image count. */
static ag_status h5_check_labels(const h5_load *ld, const char *name, const char *images_name,
                                 int64_t n)
{
    char tname[64], shape[128];
    h5_type_name(ld->type[1], tname, sizeof tname);
    h5_shape_str(ld->dims[1], ld->rank[1], shape, sizeof shape);
    if (H5Tget_class(ld->type[1]) != H5T_INTEGER)
        return ag_error(AG_ERR_FORMAT, "%s: labels '%s' are %s, expected an integer type",
                        ld->path, name, tname);
    if (ld->rank[1] != 1)
        return ag_error(AG_ERR_FORMAT, "%s: labels '%s' have shape %s, expected [N]", ld->path,
                        name, shape);
    if ((int64_t)ld->dims[1][0] != n)
        return ag_error(AG_ERR_FORMAT,
                        "%s: labels '%s' have shape %s but images '%s' hold %lld images",
                        ld->path, name, shape, images_name, (long long)n);
    return h5_check_stored(ld, 1, name, n * (int64_t)H5Tget_size(ld->type[1]));
}

/* Reads the labels as int64 (HDF5 converts any integer type; values beyond int64
 * clip to its maximum) and narrows them to int32 after a range check. */
static ag_status h5_read_labels(const h5_load *ld, const char *name, int64_t n, int32_t *out)
{
    int64_t *wide = malloc((size_t)n * sizeof *wide); /* (n) */
    if (!wide)
        return ag_error(AG_ERR_NOMEM, "%s: out of memory for %lld labels", ld->path,
                        (long long)n);
    ag_status st = AG_OK;
    if (H5Dread(ld->dset[1], H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, wide) < 0)
        st = ag_error(AG_ERR_FORMAT, "%s: cannot read labels '%s'", ld->path, name);
    for (int64_t i = 0; i < n && st == AG_OK; i++) {
        if (wide[i] < 0 || wide[i] >= INT32_MAX)
            st = ag_error(AG_ERR_FORMAT,
                          "%s: labels '%s': label %lld at index %lld is outside [0, %d)",
                          ld->path, name, (long long)wide[i], (long long)i, INT32_MAX);
        else
            out[i] = (int32_t)wide[i];
    }
    free(wide);
    return st;
}

/* The optional integer attribute "n_classes" of the labels: *n_classes = 0 if absent. */
static ag_status h5_read_n_classes(const h5_load *ld, const char *name, int32_t *n_classes)
{
    *n_classes = 0;
    htri_t has = H5Aexists(ld->dset[1], "n_classes");
    if (has < 0)
        return ag_error(AG_ERR_FORMAT, "%s: cannot read the attributes of '%s'", ld->path,
                        name);
    if (has == 0)
        return AG_OK;
    ag_status st = AG_OK;
    hid_t attr = H5Aopen(ld->dset[1], "n_classes", H5P_DEFAULT);
    hid_t type = attr >= 0 ? H5Aget_type(attr) : -1;
    hid_t space = attr >= 0 ? H5Aget_space(attr) : -1;
    int64_t value = 0;
    if (type < 0 || space < 0 || H5Tget_class(type) != H5T_INTEGER ||
        H5Sget_simple_extent_npoints(space) != 1 || H5Aread(attr, H5T_NATIVE_INT64, &value) < 0)
        st = ag_error(AG_ERR_FORMAT, "%s: attribute n_classes of '%s' is not one integer",
                      ld->path, name);
    else if (value < 1 || value > INT32_MAX)
        st = ag_error(AG_ERR_FORMAT, "%s: attribute n_classes of '%s' is %lld, not in [1, %d]",
                      ld->path, name, (long long)value, INT32_MAX);
    else
        *n_classes = (int32_t)value;
    if (space >= 0)
        H5Sclose(space);
    if (type >= 0)
        H5Tclose(type);
    if (attr >= 0)
        H5Aclose(attr);
    return st;
}

/* Opens the file: a missing file is an I/O error, anything else that is not HDF5 a
 * format error. */
static ag_status h5_open_file(h5_load *ld)
{
    FILE *f = fopen(ld->path, "rb");
    if (!f)
        return ag_error(AG_ERR_IO, "%s: cannot open: %s", ld->path, strerror(errno));
    fclose(f);
#if H5_VERSION_GE(1, 12, 0)
    htri_t is_hdf5 = H5Fis_accessible(ld->path, H5P_DEFAULT);
#else
    htri_t is_hdf5 = H5Fis_hdf5(ld->path);
#endif
    if (is_hdf5 <= 0)
        return ag_error(AG_ERR_FORMAT, "%s: not an HDF5 file", ld->path);
    ld->file = H5Fopen(ld->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (ld->file < 0)
        return ag_error(AG_ERR_FORMAT, "%s: cannot open as HDF5", ld->path);
    return AG_OK;
}

static ag_status h5_load_all(h5_load *ld, const char *images_name, const char *labels_name,
                             data_dataset *ds)
{
    ag_status st = h5_open_file(ld);
    if (st == AG_OK)
        st = h5_open_dataset(ld, 0, images_name, "images");
    if (st == AG_OK)
        st = h5_check_images(ld, images_name, ds);
    if (st == AG_OK && labels_name)
        st = h5_open_dataset(ld, 1, labels_name, "labels");
    if (st == AG_OK && labels_name)
        st = h5_check_labels(ld, labels_name, images_name, ds->n);
    if (st != AG_OK)
        return st;

    int64_t bytes = ds->n * ds->c * ds->h * ds->w;
    ds->images = malloc((size_t)bytes);
    ds->labels = calloc((size_t)ds->n, sizeof *ds->labels);
    if (!ds->images || !ds->labels)
        return ag_error(AG_ERR_NOMEM, "%s: out of memory for %lld images", ld->path,
                        (long long)ds->n);
    if (H5Dread(ld->dset[0], H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, ds->images) < 0)
        return ag_error(AG_ERR_FORMAT, "%s: cannot read images '%s'", ld->path, images_name);
    if (!labels_name) /* images only (inference): labels 0, classes unknown, as for IDX */
        return AG_OK;
    st = h5_read_labels(ld, labels_name, ds->n, ds->labels);
    int32_t declared = 0;
    if (st == AG_OK)
        st = h5_read_n_classes(ld, labels_name, &declared);
    if (st != AG_OK)
        return st;
    char where[1024];
    snprintf(where, sizeof where, "%s: labels '%s'", ld->path, labels_name);
    ds->n_classes = declared;
    if (declared > 0)
        return data_classes_check(ds->labels, ds->n, declared, where);
    return data_classes_infer(ds->labels, ds->n, where, &ds->n_classes);
}

ag_status data_h5_load(const char *path, const char *images_name, const char *labels_name,
                       data_dataset *ds)
{
    if (!ds)
        return ag_error(AG_ERR_ARG, "data_h5_load: dataset is NULL");
    memset(ds, 0, sizeof *ds);
    if (!path)
        return ag_error(AG_ERR_ARG, "data_h5_load: path is NULL");

    /* Silence HDF5's error stack printing; our messages replace it. */
    H5E_auto2_t old_func = NULL;
    void *old_data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);

    h5_load ld = {
        .path = path, .file = -1, .dset = {-1, -1}, .space = {-1, -1}, .type = {-1, -1}};
    ag_status st = h5_load_all(&ld, images_name, labels_name, ds);
    h5_load_close(&ld);
    H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
    if (st != AG_OK) {
        data_dataset_deinit(ds);
        return st;
    }
    data_source_set(ds, path);
    return AG_OK;
}
