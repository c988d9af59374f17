/* state_h5.c — state_dict <-> HDF5, atomic writes; see state_h5.h. */
#include "nn/state_h5.h"

#include "common/atomic_file.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void nn_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* ---- atomic writer ---- */

ag_status nn_h5_writer_open(nn_h5_writer *w, const char *path)
{
    nn_h5_quiet();
    memset(w, 0, sizeof *w);
    w->file = H5I_INVALID_HID;
    if (strlen(path) >= sizeof w->path)
        return ag_error(AG_ERR_ARG, "%s: path too long", path);
    snprintf(w->path, sizeof w->path, "%s", path);
    cq_atomic_tmp_path(w->tmp_path, sizeof w->tmp_path, path);
    cq_atomic_remove_stale(path);
    w->file = H5Fcreate(w->tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0) {
        unlink(w->tmp_path);
        return ag_error(AG_ERR_IO, "%s: cannot create file for writing (%s)", path,
                        errno ? strerror(errno) : "HDF5 refused");
    }
    return AG_OK;
}

ag_status nn_h5_writer_commit(nn_h5_writer *w)
{
    herr_t rc = H5Fclose(w->file);
    w->file = H5I_INVALID_HID;
    if (rc < 0) {
        unlink(w->tmp_path);
        return ag_error(AG_ERR_IO, "%s: writing failed (disk full?)", w->path);
    }
    int err = cq_atomic_fsync(w->tmp_path);
    if (err) {
        unlink(w->tmp_path);
        return ag_error(AG_ERR_IO, "%s: fsync failed: %s", w->tmp_path, strerror(err));
    }
    if (rename(w->tmp_path, w->path) != 0) {
        err = errno;
        unlink(w->tmp_path);
        return ag_error(AG_ERR_IO, "%s: cannot move the new file into place: %s", w->path,
                        strerror(err));
    }
    cq_atomic_fsync_dir_of(w->path);
    return AG_OK;
}

void nn_h5_writer_abort(nn_h5_writer *w)
{
    if (w->file >= 0)
        H5Fclose(w->file);
    w->file = H5I_INVALID_HID;
    if (w->tmp_path[0])
        unlink(w->tmp_path);
}

hid_t nn_h5_open_read(const char *path)
{
    nn_h5_quiet();
    if (access(path, R_OK) != 0) {
        ag_error(AG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return H5I_INVALID_HID;
    }
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) {
        ag_error(AG_ERR_FORMAT, "%s: not an HDF5 file (or truncated)", path);
        return H5I_INVALID_HID;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        ag_error(AG_ERR_FORMAT, "%s: cannot open as HDF5 (corrupt or truncated?)", path);
    return f;
}

/* ---- datasets ---- */

static hid_t native_type(ag_dtype dt)
{
    switch (dt) {
    case AG_F32: return H5T_NATIVE_FLOAT;
    case AG_I32: return H5T_NATIVE_INT32;
    case AG_I64: return H5T_NATIVE_INT64;
    case AG_I8: return H5T_NATIVE_INT8;
    case AG_U8: return H5T_NATIVE_UINT8;
    }
    return H5T_NATIVE_FLOAT;
}

static ag_status write_dataset(hid_t loc, const char *name, hid_t type, const void *data,
                               int32_t ndim, const int64_t *shape)
{
    hsize_t dims[AG_MAX_DIMS];
    for (int32_t i = 0; i < ndim; i++)
        dims[i] = (hsize_t)shape[i];
    hid_t space = ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(ndim, dims, NULL);
    if (space < 0)
        return ag_error(AG_ERR_IO, "%s: cannot create dataspace", name);
    hid_t ds = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = ds < 0 ? -1 : H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (ds >= 0)
        H5Dclose(ds);
    H5Sclose(space);
    if (rc < 0)
        return ag_error(AG_ERR_IO, "%s: cannot write dataset", name);
    return AG_OK;
}

ag_status nn_h5_write_tensor(hid_t loc, const char *name, const ag_tensor *t)
{
    return write_dataset(loc, name, native_type(t->dtype), t->data, t->ndim, t->shape);
}

ag_status nn_h5_write_floats(hid_t loc, const char *name, const float *v, int32_t ndim,
                             const int64_t *shape)
{
    return write_dataset(loc, name, H5T_NATIVE_FLOAT, v, ndim, shape);
}

/* Shape of a dataset; ndim 0 for a scalar. */
typedef struct h5_info {
    int32_t ndim;
    int64_t shape[AG_MAX_DIMS];
    int64_t numel;
    H5T_class_t cls;
} h5_info;

static ag_status dataset_info(hid_t ds, const char *label, const char *name, h5_info *info)
{
    hid_t space = H5Dget_space(ds);
    hid_t type = H5Dget_type(ds);
    int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    info->cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    ag_status st = AG_OK;
    if (nd < 0 || nd > AG_MAX_DIMS) {
        st = ag_error(AG_ERR_FORMAT, "%s: dataset '%s' has %d dims (at most %d)", label, name,
                      nd, AG_MAX_DIMS);
    } else {
        hsize_t dims[AG_MAX_DIMS] = {0};
        H5Sget_simple_extent_dims(space, dims, NULL);
        info->ndim = nd;
        info->numel = 1;
        /* A crafted file may declare any dimensions: a count that does not fit int64
         * saturates, so it matches no tensor and is reported as a size mismatch. */
        for (int i = 0; i < nd; i++) {
            info->shape[i] = dims[i] > (hsize_t)INT64_MAX ? INT64_MAX : (int64_t)dims[i];
            if (__builtin_mul_overflow(info->numel, info->shape[i], &info->numel))
                info->numel = INT64_MAX;
        }
    }
    if (type >= 0)
        H5Tclose(type);
    if (space >= 0)
        H5Sclose(space);
    return st;
}

static const char *shape_text(int32_t ndim, const int64_t *shape, char *buf, size_t size)
{
    size_t off = (size_t)snprintf(buf, size, "[");
    for (int32_t i = 0; i < ndim && off < size; i++)
        off += (size_t)snprintf(buf + off, size - off, i ? ", %" PRId64 : "%" PRId64, shape[i]);
    if (off < size)
        snprintf(buf + off, size - off, "]");
    return buf;
}

/* Same shape, or both hold exactly one value (PyTorch mixes [] and [1] for scalars). */
static bool shape_fits(const h5_info *info, const ag_tensor *t)
{
    if (info->numel == 1 && t->numel == 1)
        return true;
    if (info->ndim != t->ndim)
        return false;
    for (int32_t i = 0; i < t->ndim; i++)
        if (info->shape[i] != t->shape[i])
            return false;
    return true;
}

/* Reads dataset `ds` (already checked to have t's numel) into dst with t's dtype. */
static ag_status read_converted(hid_t ds, const char *label, const char *name,
                                const h5_info *info, ag_dtype dtype, void *dst, int64_t numel)
{
    if (dtype == AG_F32) {
        if (info->cls != H5T_FLOAT)
            return ag_error(AG_ERR_FORMAT, "%s: dataset '%s' is not floating point", label,
                            name);
        if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0)
            return ag_error(AG_ERR_FORMAT, "%s: cannot read dataset '%s'", label, name);
        return AG_OK;
    }
    /* Integer buffers: read as int64 (exact for every integer type we accept; floats
     * must hold whole numbers), then range-check into the buffer's dtype. */
    if (info->cls != H5T_INTEGER && info->cls != H5T_FLOAT)
        return ag_error(AG_ERR_FORMAT, "%s: dataset '%s' is not numeric", label, name);
    int64_t *tmp = malloc((size_t)(numel ? numel : 1) * sizeof *tmp);
    if (!tmp)
        return ag_error(AG_ERR_NOMEM, "%s: out of memory reading '%s'", label, name);
    ag_status st = AG_OK;
    if (info->cls == H5T_FLOAT) {
        double *dv = malloc((size_t)(numel ? numel : 1) * sizeof *dv);
        if (!dv || H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, dv) < 0)
            st = ag_error(AG_ERR_FORMAT, "%s: cannot read dataset '%s'", label, name);
        for (int64_t i = 0; st == AG_OK && i < numel; i++) {
            if (dv[i] != floor(dv[i]) || fabs(dv[i]) > 9.0e18)
                st = ag_error(AG_ERR_FORMAT, "%s: dataset '%s' must hold integers", label,
                              name);
            else
                tmp[i] = (int64_t)dv[i];
        }
        free(dv);
    } else if (H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, tmp) < 0) {
        st = ag_error(AG_ERR_FORMAT, "%s: cannot read dataset '%s'", label, name);
    }
    int64_t lo = INT64_MIN, hi = INT64_MAX;
    if (dtype == AG_I32) {
        lo = INT32_MIN;
        hi = INT32_MAX;
    } else if (dtype == AG_I8) {
        lo = INT8_MIN;
        hi = INT8_MAX;
    } else if (dtype == AG_U8) {
        lo = 0;
        hi = UINT8_MAX;
    }
    for (int64_t i = 0; st == AG_OK && i < numel; i++) {
        if (tmp[i] < lo || tmp[i] > hi) {
            st = ag_error(AG_ERR_FORMAT, "%s: dataset '%s' value %" PRId64
                          " does not fit %s", label, name, tmp[i], ag_dtype_name(dtype));
            break;
        }
        switch (dtype) {
        case AG_I32: ((int32_t *)dst)[i] = (int32_t)tmp[i]; break;
        case AG_I64: ((int64_t *)dst)[i] = tmp[i]; break;
        case AG_I8: ((int8_t *)dst)[i] = (int8_t)tmp[i]; break;
        case AG_U8: ((uint8_t *)dst)[i] = (uint8_t)tmp[i]; break;
        case AG_F32: break;
        }
    }
    free(tmp);
    return st;
}

/* Opens dataset `name` and checks it fits t; on success *ds_out is open. */
static ag_status open_fitting(hid_t loc, const char *label, const char *name, const ag_tensor *t,
                              hid_t *ds_out, h5_info *info)
{
    if (!nn_h5_has_object(loc, name))
        return ag_error(AG_ERR_FORMAT, "%s: no dataset '%s'", label, name);
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0)
        return ag_error(AG_ERR_FORMAT, "%s: '%s' is not a readable dataset", label, name);
    ag_status st = dataset_info(ds, label, name, info);
    if (st == AG_OK && !shape_fits(info, t)) {
        char a[AG_SHAPE_STR_MAX], b[AG_SHAPE_STR_MAX];
        st = ag_error(AG_ERR_SHAPE, "%s: size mismatch for %s: file %s, model %s", label, name,
                      shape_text(info->ndim, info->shape, a, sizeof a),
                      ag_shape_str(t, b, sizeof b));
    }
    if (st != AG_OK) {
        H5Dclose(ds);
        return st;
    }
    *ds_out = ds;
    return AG_OK;
}

ag_status nn_h5_read_tensor(hid_t loc, const char *label, const char *name, ag_tensor *t)
{
    hid_t ds = H5I_INVALID_HID;
    h5_info info = {0};
    ag_status st = open_fitting(loc, label, name, t, &ds, &info);
    if (st != AG_OK)
        return st;
    st = read_converted(ds, label, name, &info, t->dtype, t->data, t->numel);
    H5Dclose(ds);
    return st;
}

ag_status nn_h5_read_floats(hid_t loc, const char *label, const char *name, float *v,
                            int64_t numel)
{
    /* Any shape holding exactly numel values: view the buffer with the file's shape. */
    if (!nn_h5_has_object(loc, name))
        return ag_error(AG_ERR_FORMAT, "%s: no dataset '%s'", label, name);
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0)
        return ag_error(AG_ERR_FORMAT, "%s: '%s' is not a readable dataset", label, name);
    h5_info info = {0};
    ag_status st = dataset_info(ds, label, name, &info);
    if (st == AG_OK && info.numel != numel)
        st = ag_error(AG_ERR_SHAPE, "%s: dataset '%s' holds %" PRId64 " values, expected %" PRId64,
                      label, name, info.numel, numel);
    if (st == AG_OK)
        st = read_converted(ds, label, name, &info, AG_F32, v, numel);
    H5Dclose(ds);
    return st;
}

bool nn_h5_has_object(hid_t loc, const char *name)
{
    return H5Lexists(loc, name, H5P_DEFAULT) > 0 && H5Oexists_by_name(loc, name, H5P_DEFAULT) > 0;
}

/* ---- attributes ---- */

static ag_status write_attr(hid_t loc, const char *name, hid_t type, const void *v)
{
    if (H5Aexists(loc, name) > 0)
        H5Adelete(loc, name);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, type, v);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(space);
    return rc < 0 ? ag_error(AG_ERR_IO, "cannot write attribute '%s'", name) : AG_OK;
}

ag_status nn_h5_write_attr_str(hid_t loc, const char *name, const char *value)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, strlen(value) + 1);
    H5Tset_strpad(type, H5T_STR_NULLTERM);
    ag_status st = write_attr(loc, name, type, value);
    H5Tclose(type);
    return st;
}

ag_status nn_h5_write_attr_i64(hid_t loc, const char *name, int64_t value)
{
    return write_attr(loc, name, H5T_NATIVE_INT64, &value);
}

ag_status nn_h5_write_attr_f64(hid_t loc, const char *name, double value)
{
    return write_attr(loc, name, H5T_NATIVE_DOUBLE, &value);
}

bool nn_h5_has_attr(hid_t loc, const char *name) { return H5Aexists(loc, name) > 0; }

static hid_t open_attr(hid_t loc, const char *label, const char *name)
{
    if (H5Aexists(loc, name) <= 0) {
        ag_error(AG_ERR_FORMAT, "%s: no attribute '%s'", label, name);
        return H5I_INVALID_HID;
    }
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0)
        ag_error(AG_ERR_FORMAT, "%s: cannot open attribute '%s'", label, name);
    return a;
}

ag_status nn_h5_read_attr_str(hid_t loc, const char *label, const char *name, char *buf,
                              size_t size)
{
    hid_t a = open_attr(loc, label, name);
    if (a < 0)
        return AG_ERR_FORMAT;
    ag_status st = AG_OK;
    hid_t ftype = H5Aget_type(a);
    hid_t space = H5Aget_space(a);
    /* One string: H5Aread writes every element of an array, past a buffer made for one. */
    if (H5Tget_class(ftype) != H5T_STRING || H5Sget_simple_extent_npoints(space) != 1) {
        st = ag_error(AG_ERR_FORMAT, "%s: attribute '%s' is not one string", label, name);
    } else if (H5Tis_variable_str(ftype) > 0) {
        /* h5py writes variable-length strings. */
        char *s = NULL;
        hid_t mtype = H5Tcopy(H5T_C_S1);
        H5Tset_size(mtype, H5T_VARIABLE);
        H5Tset_cset(mtype, H5Tget_cset(ftype)); /* h5py writes UTF-8: no conversion */
        if (H5Aread(a, mtype, &s) < 0 || !s) {
            st = ag_error(AG_ERR_FORMAT, "%s: cannot read attribute '%s'", label, name);
        } else {
            snprintf(buf, size, "%s", s);
            H5free_memory(s);
        }
        H5Tclose(mtype);
    } else {
        size_t n = H5Tget_size(ftype);
        char *tmp = calloc(n + 1, 1);
        hid_t mtype = H5Tcopy(H5T_C_S1);
        H5Tset_size(mtype, n + 1);
        H5Tset_strpad(mtype, H5T_STR_NULLTERM);
        H5Tset_cset(mtype, H5Tget_cset(ftype));
        if (!tmp || H5Aread(a, mtype, tmp) < 0)
            st = ag_error(AG_ERR_FORMAT, "%s: cannot read attribute '%s'", label, name);
        else
            snprintf(buf, size, "%s", tmp);
        free(tmp);
        H5Tclose(mtype);
    }
    H5Sclose(space);
    H5Tclose(ftype);
    H5Aclose(a);
    return st;
}

static ag_status read_attr_num(hid_t loc, const char *label, const char *name, hid_t mtype,
                               void *v)
{
    hid_t a = open_attr(loc, label, name);
    if (a < 0)
        return AG_ERR_FORMAT;
    hid_t space = H5Aget_space(a);
    hid_t ftype = H5Aget_type(a);
    H5T_class_t cls = H5Tget_class(ftype);
    ag_status st = AG_OK;
    if (H5Sget_simple_extent_npoints(space) != 1 || (cls != H5T_INTEGER && cls != H5T_FLOAT))
        st = ag_error(AG_ERR_FORMAT, "%s: attribute '%s' is not a single number", label, name);
    else if (H5Aread(a, mtype, v) < 0)
        st = ag_error(AG_ERR_FORMAT, "%s: cannot read attribute '%s'", label, name);
    H5Tclose(ftype);
    H5Sclose(space);
    H5Aclose(a);
    return st;
}

ag_status nn_h5_read_attr_i64(hid_t loc, const char *label, const char *name, int64_t *value)
{
    return read_attr_num(loc, label, name, H5T_NATIVE_INT64, value);
}

ag_status nn_h5_read_attr_f64(hid_t loc, const char *label, const char *name, double *value)
{
    return read_attr_num(loc, label, name, H5T_NATIVE_DOUBLE, value);
}

/* ---- state_dict save ---- */

typedef struct save_ctx {
    hid_t loc;
    ag_status st;
} save_ctx;

static bool save_one(void *ud, const char *key, ag_tensor *t, nn_state_kind kind)
{
    (void)kind;
    save_ctx *c = ud;
    c->st = nn_h5_write_tensor(c->loc, key, t);
    return c->st == AG_OK;
}

ag_status nn_state_save_h5(hid_t loc, nn_module *m)
{
    save_ctx c = {loc, AG_OK};
    nn_state_foreach(m, save_one, &c);
    return c.st;
}

/* ---- state_dict load ---- */

/* Text accumulated for the PyTorch-style report. */
typedef struct report {
    char missing[1024], unexpected[1024], mismatch[1024], other[1024];
    int n_missing, n_unexpected, n_mismatch, n_other;
} report;

static void report_add(char *buf, size_t size, int *count, const char *text)
{
    size_t len = strlen(buf);
    if (len + 8 >= size)
        return;
    if (*count == 4 && len + 8 < size) { /* keep the line readable */
        snprintf(buf + len, size - len, ", ...");
    } else if (*count < 4) {
        snprintf(buf + len, size - len, "%s%s", *count ? ", " : "", text);
    }
    (*count)++;
}

/* One key of the model, its staging buffer and its open dataset. */
typedef struct staged {
    const char *key;
    ag_tensor *t;
    nn_state_kind kind;
    void *buf;
    bool resize;                 /* a resizable buffer taking the file's shape */
    int32_t ndim;
    int64_t shape[AG_MAX_DIMS];
} staged;

typedef struct load_ctx {
    hid_t loc;
    const char *label;
    const nn_load_opts *opts;
    staged *items;
    int32_t n, cap;
    char *keys; /* the keys, back to back (sized once: never moves) */
    size_t keys_len, keys_cap;
    report rep;
    ag_status hard; /* an error other than a key/shape problem */
} load_ctx;

static bool collect_key(void *ud, const char *key, ag_tensor *t, nn_state_kind kind)
{
    load_ctx *c = ud;
    size_t klen = strlen(key) + 1;
    if (c->n == c->cap || c->keys_len + klen > c->keys_cap) {
        c->hard = ag_error(AG_ERR_NOMEM, "%s: out of memory", c->label);
        return false;
    }
    memcpy(c->keys + c->keys_len, key, klen);
    c->items[c->n++] = (staged){.key = c->keys + c->keys_len, .t = t, .kind = kind};
    c->keys_len += klen;
    return true;
}

static bool count_key(void *ud, const char *key, ag_tensor *t, nn_state_kind kind)
{
    (void)t;
    (void)kind;
    size_t *n = ud;
    n[0]++;
    n[1] += strlen(key) + 1;
    return true;
}

static bool is_model_key(const load_ctx *c, const char *name)
{
    for (int32_t i = 0; i < c->n; i++)
        if (strcmp(c->items[i].key, name) == 0)
            return true;
    return false;
}

static herr_t find_unexpected(hid_t g, const char *name, const H5L_info_t *info, void *ud)
{
    (void)info;
    load_ctx *c = ud;
    H5O_info_t oi;
    if (H5Oget_info_by_name2(g, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0 ||
        oi.type != H5O_TYPE_DATASET)
        return 0; /* groups (optimizer state, ...) are not state_dict keys */
    if (!is_model_key(c, name))
        report_add(c->rep.unexpected, sizeof c->rep.unexpected, &c->rep.n_unexpected, name);
    return 0;
}

/* Parameters must be finite; buffers may hold +-inf (an observer that saw nothing has
 * min_val = +inf) but never NaN. */
static bool values_ok(const float *v, int64_t n, bool allow_inf)
{
    for (int64_t i = 0; i < n; i++)
        if (isnan(v[i]) || (!allow_inf && isinf(v[i])))
            return false;
    return true;
}

static void stage_one(load_ctx *c, staged *s)
{
    hid_t ds = H5I_INVALID_HID;
    h5_info info = {0};
    ag_error_clear();
    if (!nn_h5_has_object(c->loc, s->key)) {
        report_add(c->rep.missing, sizeof c->rep.missing, &c->rep.n_missing, s->key);
        return;
    }
    ag_tensor *target = s->t;
    ag_tensor reshaped;
    if (s->t->flags & AG_F_RESIZABLE) {
        /* Lazily sized statistics (observers' min_val/max_val): take the file's shape. */
        hid_t probe = H5Dopen2(c->loc, s->key, H5P_DEFAULT);
        if (probe >= 0 && dataset_info(probe, c->label, s->key, &info) == AG_OK &&
            info.numel <= ((int64_t)1 << 24)) {
            reshaped = *s->t;
            reshaped.ndim = info.ndim;
            memcpy(reshaped.shape, info.shape, sizeof reshaped.shape);
            reshaped.numel = info.numel;
            target = &reshaped;
            s->resize = true;
            s->ndim = info.ndim;
            memcpy(s->shape, info.shape, sizeof s->shape);
        }
        if (probe >= 0)
            H5Dclose(probe);
    }
    ag_status st = open_fitting(c->loc, c->label, s->key, target, &ds, &info);
    if (st == AG_ERR_SHAPE) {
        char a[AG_SHAPE_STR_MAX], b[AG_SHAPE_STR_MAX], line[256];
        snprintf(line, sizeof line, "%s: file %s, model %s", s->key,
                 shape_text(info.ndim, info.shape, a, sizeof a), ag_shape_str(s->t, b, sizeof b));
        report_add(c->rep.mismatch, sizeof c->rep.mismatch, &c->rep.n_mismatch, line);
        return;
    }
    if (st != AG_OK) {
        report_add(c->rep.other, sizeof c->rep.other, &c->rep.n_other, ag_last_error());
        return;
    }
    s->buf = malloc((size_t)(target->numel ? target->numel : 1) * ag_dtype_size(target->dtype));
    if (!s->buf)
        st = ag_error(AG_ERR_NOMEM, "%s: out of memory reading '%s'", c->label, s->key);
    else
        st = read_converted(ds, c->label, s->key, &info, target->dtype, s->buf, target->numel);
    H5Dclose(ds);
    if (st == AG_OK && s->t->dtype == AG_F32 && !c->opts->allow_nonfinite &&
        !values_ok(s->buf, target->numel, s->kind == NN_STATE_BUFFER)) {
        st = ag_error(AG_ERR_NUMERIC, "%s: '%s' holds %s values", c->label, s->key,
                      s->kind == NN_STATE_BUFFER ? "NaN" : "NaN or Inf");
    }
    if (st == AG_OK && s->t->dtype == AG_F32 && strstr(s->key, "running_var")) {
        const float *v = s->buf;
        for (int64_t i = 0; i < s->t->numel && st == AG_OK; i++)
            if (v[i] < 0.0f)
                st = ag_error(AG_ERR_NUMERIC, "%s: '%s' has a negative variance (%g at %" PRId64
                              ")", c->label, s->key, (double)v[i], i);
    }
    if (st != AG_OK)
        report_add(c->rep.other, sizeof c->rep.other, &c->rep.n_other, ag_last_error());
}

static ag_status report_error(const load_ctx *c)
{
    const report *r = &c->rep;
    bool strict = c->opts->strict;
    if (!r->n_mismatch && !r->n_other && (!strict || (!r->n_missing && !r->n_unexpected)))
        return AG_OK;
    char msg[4200];
    size_t off = 0;
    off += (size_t)snprintf(msg + off, sizeof msg - off, "error(s) loading state_dict:");
    if (strict && r->n_missing)
        off += (size_t)snprintf(msg + off, sizeof msg - off, " missing key(s) (%d): %s;",
                                r->n_missing, r->missing);
    if (strict && r->n_unexpected && off < sizeof msg)
        off += (size_t)snprintf(msg + off, sizeof msg - off, " unexpected key(s) (%d): %s;",
                                r->n_unexpected, r->unexpected);
    if (r->n_mismatch && off < sizeof msg)
        off += (size_t)snprintf(msg + off, sizeof msg - off, " size mismatch for %s;",
                                r->mismatch);
    if (r->n_other && off < sizeof msg)
        snprintf(msg + off, sizeof msg - off, " %s", r->other);
    ag_status code = r->n_mismatch ? AG_ERR_SHAPE : r->n_other ? AG_ERR_FORMAT : AG_ERR_FORMAT;
    return ag_error(code, "%s: %s", c->label, msg);
}

ag_status nn_state_load_h5(hid_t loc, const char *label, nn_module *m, const nn_load_opts *opts)
{
    static const nn_load_opts strict = {.strict = true, .allow_nonfinite = false};
    load_ctx c = {.loc = loc, .label = label, .opts = opts ? opts : &strict};
    size_t counts[2] = {0, 0};
    nn_state_foreach(m, count_key, counts);
    c.cap = (int32_t)counts[0];
    c.keys_cap = counts[1];
    c.items = calloc(counts[0] ? counts[0] : 1, sizeof *c.items);
    c.keys = malloc(counts[1] ? counts[1] : 1);
    ag_status st = AG_OK;
    if (!c.items || !c.keys) {
        st = ag_error(AG_ERR_NOMEM, "%s: out of memory", label);
        goto done;
    }
    nn_state_foreach(m, collect_key, &c);
    if (c.hard != AG_OK) {
        st = c.hard;
        goto done;
    }
    for (int32_t i = 0; i < c.n; i++) {
        stage_one(&c, &c.items[i]);
        /* Out of memory is not something wrong with the file: say that alone. */
        if (ag_last_status() == AG_ERR_NOMEM) {
            st = AG_ERR_NOMEM;
            goto done;
        }
    }
    H5Literate(loc, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, find_unexpected, &c);
    st = report_error(&c);
    if (st != AG_OK)
        goto done;
    /* Everything read and checked: only now touch the model. */
    for (int32_t i = 0; i < c.n && st == AG_OK; i++) {
        staged *s = &c.items[i];
        if (s->buf && s->resize)
            st = ag_tensor_resize(s->t, s->ndim, s->shape);
        if (s->buf && st == AG_OK)
            memcpy(s->t->data, s->buf, (size_t)s->t->numel * ag_dtype_size(s->t->dtype));
    }
done:
    for (int32_t i = 0; c.items && i < c.n; i++)
        free(c.items[i].buf);
    free(c.items);
    free(c.keys);
    return st;
}

ag_status nn_state_load_file(const char *path, nn_module *m, const nn_load_opts *opts)
{
    hid_t f = nn_h5_open_read(path);
    if (f < 0)
        return ag_last_status();
    ag_status st = nn_state_load_h5(f, path, m, opts);
    H5Fclose(f);
    return st;
}
