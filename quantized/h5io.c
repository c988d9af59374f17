/* h5io.c — the model file (docs/FORMAT.md): load through the builder (so a file is
 * validated exactly like a model built in memory) and atomic save.
 *
 * Reading trusts nothing: every HDF5 call is checked, every attribute's type class,
 * size and extent is checked before it is read, counts are bounded before loops, and a
 * constant's size is bounded (and compared with the bytes the file stores) before it is
 * allocated. Attributes or links the format does not define are refused. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "quantized/builder.h"
#include "common/atomic_file.h"

#include <errno.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

enum { PATH_MAX_Q8 = 4096 };

/* ---- reading attributes ---- */

/* Opens attribute `name` of `loc`; Q8_ERR_FORMAT naming `where` if absent. */
static hid_t open_attr(hid_t loc, const char *where, const char *name)
{
    htri_t exists = H5Aexists(loc, name);
    if (exists <= 0) {
        q8_error(Q8_ERR_FORMAT, "%s: attribute '%s' is missing", where, name);
        return H5I_INVALID_HID;
    }
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0)
        q8_error(Q8_ERR_FORMAT, "%s: attribute '%s' cannot be opened", where, name);
    return a;
}

/* Number of elements of an attribute: 1 for a scalar, n for a rank-1 extent of n;
 * -1 (message set) for anything else or more than `max`. */
static int64_t attr_extent(hid_t a, const char *where, const char *name, int64_t max)
{
    hid_t space = H5Aget_space(a);
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    hsize_t dims[1] = {0};
    int64_t n = -1;
    if (rank == 0)
        n = 1;
    else if (rank == 1 && H5Sget_simple_extent_dims(space, dims, NULL) == 1)
        n = (int64_t)dims[0];
    if (space >= 0)
        H5Sclose(space);
    if (n < 1 || n > max) {
        q8_error(Q8_ERR_FORMAT, "%s: attribute '%s' must be a scalar or a 1-D array of 1 to %" PRId64
                 " elements",
                 where, name, max);
        return -1;
    }
    return n;
}

static q8_status read_text(hid_t loc, const char *where, const char *name, char *buf, size_t size)
{
    hid_t a = open_attr(loc, where, name);
    if (a < 0)
        return Q8_ERR_FORMAT;
    q8_status st = Q8_OK;
    hid_t ft = H5Aget_type(a), mt = H5I_INVALID_HID;
    if (ft < 0 || H5Tget_class(ft) != H5T_STRING || attr_extent(a, where, name, 1) != 1) {
        st = q8_error(Q8_ERR_FORMAT, "%s: attribute '%s' must be a string", where, name);
    } else if (H5Tis_variable_str(ft) > 0) {
        char *s = NULL;
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft));
        if (H5Aread(a, mt, &s) < 0 || !s)
            st = q8_error(Q8_ERR_FORMAT, "%s: attribute '%s' cannot be read", where, name);
        else if (strlen(s) >= size)
            st = q8_error(Q8_ERR_FORMAT, "%s: attribute '%s' is longer than %zu bytes", where, name,
                          size - 1);
        else
            snprintf(buf, size, "%s", s);
        if (s)
            H5free_memory(s);
    } else {
        size_t len = H5Tget_size(ft);
        if (len == 0 || len >= size) {
            st = q8_error(Q8_ERR_FORMAT, "%s: attribute '%s' is longer than %zu bytes", where, name,
                          size - 1);
        } else {
            mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, len + 1);
            H5Tset_strpad(mt, H5T_STR_NULLTERM);
            memset(buf, 0, size);
            if (H5Aread(a, mt, buf) < 0)
                st = q8_error(Q8_ERR_FORMAT, "%s: attribute '%s' cannot be read", where, name);
        }
    }
    if (mt >= 0)
        H5Tclose(mt);
    if (ft >= 0)
        H5Tclose(ft);
    H5Aclose(a);
    return st;
}

/* An integer attribute of 1..max elements, any integer type, read as int64. */
static q8_status read_ints(hid_t loc, const char *where, const char *name, int64_t *out,
                           int64_t max, int64_t *count)
{
    hid_t a = open_attr(loc, where, name);
    if (a < 0)
        return Q8_ERR_FORMAT;
    q8_status st = Q8_OK;
    hid_t ft = H5Aget_type(a);
    int64_t n = attr_extent(a, where, name, max);
    if (n < 0)
        st = Q8_ERR_FORMAT;
    else if (ft < 0 || H5Tget_class(ft) != H5T_INTEGER)
        st = q8_error(Q8_ERR_FORMAT, "%s: attribute '%s' must be an integer", where, name);
    else if (H5Aread(a, H5T_NATIVE_INT64, out) < 0)
        st = q8_error(Q8_ERR_FORMAT, "%s: attribute '%s' cannot be read", where, name);
    if (ft >= 0)
        H5Tclose(ft);
    H5Aclose(a);
    if (count)
        *count = n;
    return st;
}

static q8_status read_int(hid_t loc, const char *where, const char *name, int64_t *out)
{
    int64_t n = 0;
    q8_status st = read_ints(loc, where, name, out, 1, &n);
    return st;
}

/* A float32 scalar: the scales are float32 values, so a float64 attribute (which would
 * silently round) is refused. */
static q8_status read_f32(hid_t loc, const char *where, const char *name, float *out)
{
    hid_t a = open_attr(loc, where, name);
    if (a < 0)
        return Q8_ERR_FORMAT;
    q8_status st = Q8_OK;
    hid_t ft = H5Aget_type(a);
    if (ft < 0 || H5Tget_class(ft) != H5T_FLOAT || H5Tget_size(ft) != 4 ||
        attr_extent(a, where, name, 1) != 1)
        st = q8_error(Q8_ERR_FORMAT, "%s: attribute '%s' must be a float32 scalar", where, name);
    else if (H5Aread(a, H5T_NATIVE_FLOAT, out) < 0)
        st = q8_error(Q8_ERR_FORMAT, "%s: attribute '%s' cannot be read", where, name);
    if (ft >= 0)
        H5Tclose(ft);
    H5Aclose(a);
    return st;
}

/* Refuses attributes outside `allowed` (NULL-terminated). */
typedef struct attr_names {
    const char *const *allowed;
    char bad[Q8_MAX_NAME];
} attr_names;

static herr_t check_attr_name(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
    (void)loc;
    (void)info;
    attr_names *an = data;
    for (const char *const *p = an->allowed; *p; p++)
        if (strcmp(*p, name) == 0)
            return 0;
    snprintf(an->bad, sizeof an->bad, "%s", name);
    return 1;
}

static q8_status check_attr_names(hid_t loc, const char *where, const char *const *allowed)
{
    attr_names an = {allowed, ""};
    hsize_t idx = 0;
    herr_t rc = H5Aiterate2(loc, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, check_attr_name, &an);
    if (rc < 0)
        return q8_error(Q8_ERR_FORMAT, "%s: cannot list the attributes", where);
    if (rc > 0)
        return q8_error(Q8_ERR_FORMAT, "%s: unknown attribute '%s'", where, an.bad);
    return Q8_OK;
}

/* ---- reading the model ---- */

/* Opens member `name` of `loc` if it is an object of `type` (H5I_GROUP, H5I_DATASET);
 * H5Oopen + H5Iget_type work alike in HDF5 1.10 and 1.12+. */
static hid_t open_member(hid_t loc, const char *name, H5I_type_t type)
{
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0)
        return H5I_INVALID_HID;
    hid_t obj = H5Oopen(loc, name, H5P_DEFAULT);
    if (obj >= 0 && H5Iget_type(obj) != type) {
        H5Oclose(obj);
        return H5I_INVALID_HID;
    }
    return obj;
}

static hid_t open_group(hid_t loc, const char *where, const char *name)
{
    hid_t g = open_member(loc, name, H5I_GROUP);
    if (g < 0)
        q8_error(Q8_ERR_FORMAT, "%s: group '%s' is missing", where, name);
    return g;
}

static q8_status check_link_count(hid_t g, const char *where, int64_t expected)
{
    H5G_info_t info;
    if (H5Gget_info(g, &info) < 0)
        return q8_error(Q8_ERR_FORMAT, "%s: cannot be listed", where);
    if ((int64_t)info.nlinks != expected)
        return q8_error(Q8_ERR_FORMAT, "%s holds %" PRIu64 " members, the root attributes say %" PRId64,
                        where, (uint64_t)info.nlinks, expected);
    return Q8_OK;
}

static q8_status parse_dtype(const char *where, const char *s, q8_dtype *dt)
{
    static const q8_dtype all[] = {Q8_U8, Q8_I8, Q8_I32, Q8_F32};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(s, q8_dtype_name(all[i])) == 0) {
            *dt = all[i];
            return Q8_OK;
        }
    return q8_error(Q8_ERR_FORMAT, "%s: dtype '%s' is not one of u8, i8, i32, f32", where, s);
}

static q8_status read_value(hid_t values, q8_builder *b, int32_t id)
{
    static const char *const allowed[] = {"name", "dtype", "shape", "scale", "zero_point", NULL};
    char key[32], where[64], name[Q8_MAX_NAME], dts[16];
    snprintf(key, sizeof key, "%d", (int)id);
    snprintf(where, sizeof where, "value %d", (int)id);
    hid_t g = open_group(values, "values", key);
    if (g < 0)
        return Q8_ERR_FORMAT;
    int64_t shape[Q8_MAX_DIMS] = {0}, ndim = 0, zp = 0;
    float scale = 0.0f;
    q8_dtype dt = Q8_F32;
    q8_status st = check_attr_names(g, where, allowed);
    if (st == Q8_OK)
        st = read_text(g, where, "name", name, sizeof name);
    if (st == Q8_OK)
        st = read_text(g, where, "dtype", dts, sizeof dts);
    if (st == Q8_OK)
        st = parse_dtype(where, dts, &dt);
    if (st == Q8_OK)
        st = read_ints(g, where, "shape", shape, Q8_MAX_DIMS, &ndim);
    bool quantized = dt == Q8_U8 || dt == Q8_I8;
    if (st == Q8_OK && quantized)
        st = read_f32(g, where, "scale", &scale);
    if (st == Q8_OK && quantized)
        st = read_int(g, where, "zero_point", &zp);
    if (st == Q8_OK && !quantized && (H5Aexists(g, "scale") > 0 || H5Aexists(g, "zero_point") > 0))
        st = q8_error(Q8_ERR_FORMAT, "%s: a %s value has no scale or zero_point", where,
                      q8_dtype_name(dt));
    if (st == Q8_OK && (zp < INT32_MIN || zp > INT32_MAX))
        st = q8_error(Q8_ERR_FORMAT, "%s: zero_point %" PRId64 " is out of range", where, zp);
    H5Gclose(g);
    if (st != Q8_OK)
        return q8_builder_fail(b, st);
    if (q8_builder_add_value(b, name, dt, (int32_t)ndim, shape, scale, (int32_t)zp) != id)
        return q8_builder_status(b);
    return Q8_OK;
}

static q8_status node_where(char *where, size_t size, int32_t k, const char *op, const char *name)
{
    snprintf(where, size, "node %d (%s '%s')", (int)k, op, name);
    return Q8_OK;
}

/* Every attribute of a node other than op/name/inputs/outputs is an int attribute. */
typedef struct node_ctx {
    q8_builder *b;
    int32_t node;
    const char *where;
    q8_status st;
} node_ctx;

static herr_t read_node_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
    (void)info;
    node_ctx *c = data;
    if (!strcmp(name, "op") || !strcmp(name, "name") || !strcmp(name, "inputs") ||
        !strcmp(name, "outputs"))
        return 0;
    int64_t v = 0;
    c->st = read_int(loc, c->where, name, &v);
    if (c->st == Q8_OK)
        c->st = q8_builder_set_attr(c->b, c->node, name, v);
    else
        q8_builder_fail(c->b, c->st);
    return c->st == Q8_OK ? 0 : 1;
}

static q8_status dtype_of_h5(hid_t t, q8_dtype *dt)
{
    H5T_class_t cls = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    if (cls == H5T_INTEGER && size == 1)
        *dt = H5Tget_sign(t) == H5T_SGN_2 ? Q8_I8 : Q8_U8;
    else if (cls == H5T_INTEGER && size == 4 && H5Tget_sign(t) == H5T_SGN_2)
        *dt = Q8_I32;
    else if (cls == H5T_FLOAT && size == 4)
        *dt = Q8_F32;
    else
        return Q8_ERR_FORMAT;
    return Q8_OK;
}

static hid_t native_type(q8_dtype dt)
{
    switch (dt) {
    case Q8_U8: return H5T_NATIVE_UINT8;
    case Q8_I8: return H5T_NATIVE_INT8;
    case Q8_I32: return H5T_NATIVE_INT32;
    case Q8_F32: return H5T_NATIVE_FLOAT;
    }
    return H5T_NATIVE_UINT8;
}

/* Reads constant `name` of node `k`: type and extent checked, size bounded and compared
 * with the stored bytes (a deflated chunked dataset may hold up to 1032x fewer) before
 * the buffer is allocated. */
static q8_status read_constant(hid_t ds, q8_builder *b, int32_t k, const char *name)
{
    const q8_node *n = &b->m->nodes[k];
    hid_t ft = H5Dget_type(ds), space = H5Dget_space(ds), plist = H5Dget_create_plist(ds);
    q8_dtype dt = Q8_U8;
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    hsize_t dims[Q8_MAX_DIMS] = {0};
    int64_t shape[Q8_MAX_DIMS] = {0};
    size_t bytes = 0;
    void *data = NULL;
    q8_status st = Q8_OK;
    if (ft < 0 || dtype_of_h5(ft, &dt) != Q8_OK)
        st = q8_node_error(n, Q8_ERR_FORMAT, "constant '%s' has an HDF5 type that is not u8, i8, "
                           "i32 or f32", name);
    else if (rank < 1 || rank > Q8_MAX_DIMS)
        st = q8_node_error(n, Q8_ERR_FORMAT, "constant '%s' has rank %d (1 to %d)", name, rank,
                           Q8_MAX_DIMS);
    if (st == Q8_OK) {
        H5Sget_simple_extent_dims(space, dims, NULL);
        for (int d = 0; d < rank; d++)
            shape[d] = dims[d] > (hsize_t)INT64_MAX ? -1 : (int64_t)dims[d];
        st = q8_constant_bytes(n, name, dt, rank, shape, &bytes);
    }
    if (st == Q8_OK) {
        hsize_t stored = H5Dget_storage_size(ds);
        bool chunked = plist >= 0 && H5Pget_layout(plist) == H5D_CHUNKED;
        if (chunked ? (double)bytes > 1032.0 * (double)stored : stored != bytes)
            st = q8_node_error(n, Q8_ERR_FORMAT,
                               "constant '%s' should hold %zu bytes, the file stores %" PRIu64
                               " (truncated or corrupt)",
                               name, bytes, (uint64_t)stored);
    }
    if (st == Q8_OK && !(data = malloc(bytes)))
        st = q8_node_error(n, Q8_ERR_NOMEM, "constant '%s': out of memory (%zu bytes)", name,
                           bytes);
    if (st == Q8_OK && H5Dread(ds, native_type(dt), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        st = q8_node_error(n, Q8_ERR_FORMAT, "constant '%s' cannot be read", name);
    if (plist >= 0)
        H5Pclose(plist);
    if (space >= 0)
        H5Sclose(space);
    if (ft >= 0)
        H5Tclose(ft);
    if (st != Q8_OK) {
        free(data);
        return q8_builder_fail(b, st);
    }
    return q8_builder_adopt_constant(b, k, name, dt, rank, shape, data);
}

static herr_t read_node_link(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)info;
    node_ctx *c = data;
    hid_t ds = open_member(g, name, H5I_DATASET);
    if (ds < 0) {
        c->st = q8_builder_fail(c->b, q8_error(Q8_ERR_FORMAT, "%s: member '%s' is not a dataset",
                                               c->where, name));
        return 1;
    }
    c->st = read_constant(ds, c->b, c->node, name);
    H5Dclose(ds);
    return c->st == Q8_OK ? 0 : 1;
}

_Static_assert(Q8_MAX_GRAPH_IO <= Q8_MAX_NODE_INPUTS, "read_ids buffer");

/* An id list of 1..max (<= Q8_MAX_NODE_INPUTS) entries, each a valid int32. */
static q8_status read_ids(hid_t g, const char *where, const char *name, int32_t *ids, int64_t max,
                          int32_t *n)
{
    int64_t v[Q8_MAX_NODE_INPUTS] = {0}, count = 0;
    Q8_ASSERT(max <= Q8_MAX_NODE_INPUTS);
    q8_status st = read_ints(g, where, name, v, max, &count);
    for (int64_t i = 0; st == Q8_OK && i < count; i++) {
        if (v[i] < 0 || v[i] > INT32_MAX)
            return q8_error(Q8_ERR_FORMAT, "%s: %s[%" PRId64 "] = %" PRId64 " is not a value id",
                            where, name, i, v[i]);
        ids[i] = (int32_t)v[i];
    }
    *n = (int32_t)count;
    return st;
}

static q8_status read_node(hid_t nodes, q8_builder *b, int32_t k)
{
    char key[32], where[Q8_MAX_NAME + 128], op[64], name[Q8_MAX_NAME];
    snprintf(key, sizeof key, "%d", (int)k);
    snprintf(where, sizeof where, "node %d", (int)k);
    hid_t g = open_group(nodes, "nodes", key);
    if (g < 0)
        return q8_builder_fail(b, Q8_ERR_FORMAT);
    int32_t in[Q8_MAX_NODE_INPUTS], out[Q8_MAX_NODE_INPUTS], n_in = 0, n_out = 0;
    q8_status st = read_text(g, where, "op", op, sizeof op);
    if (st == Q8_OK)
        st = read_text(g, where, "name", name, sizeof name);
    if (st == Q8_OK)
        node_where(where, sizeof where, k, op, name);
    if (st == Q8_OK)
        st = read_ids(g, where, "inputs", in, Q8_MAX_NODE_INPUTS, &n_in);
    if (st == Q8_OK)
        st = read_ids(g, where, "outputs", out, Q8_MAX_NODE_INPUTS, &n_out);
    if (st != Q8_OK) {
        H5Gclose(g);
        return q8_builder_fail(b, st);
    }
    node_ctx c = {b, k, where, Q8_OK};
    if (q8_builder_add_node(b, op, name, in, n_in, out, n_out) == k) {
        hsize_t idx = 0;
        if (H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, read_node_attr, &c) < 0 &&
            c.st == Q8_OK)
            c.st = q8_builder_fail(b, q8_error(Q8_ERR_FORMAT, "%s: cannot list attributes", where));
        idx = 0;
        if (c.st == Q8_OK &&
            H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, read_node_link, &c) < 0 &&
            c.st == Q8_OK)
            c.st = q8_builder_fail(b, q8_error(Q8_ERR_FORMAT, "%s: cannot list members", where));
    }
    H5Gclose(g);
    return q8_builder_status(b);
}

static q8_status read_root(hid_t f, q8_builder *b, int64_t *n_values, int64_t *n_nodes,
                           int32_t *ins, int32_t *n_in, int32_t *outs, int32_t *n_out)
{
    static const char *const allowed[] = {"format", "format_version", "rounding", "source_model",
                                          "qconfig", "n_values", "n_nodes", "inputs", "outputs",
                                          NULL};
    char text[Q8_MAX_TEXT];
    int64_t version = 0;
    q8_status st = read_text(f, "root", "format", text, sizeof text);
    if (st != Q8_OK || strcmp(text, Q8_FORMAT_NAME) != 0)
        return q8_error(Q8_ERR_FORMAT, "not a %s model (root attribute 'format' %s)",
                        Q8_FORMAT_NAME, st == Q8_OK ? "has another value" : "is missing");
    st = read_int(f, "root", "format_version", &version);
    if (st == Q8_OK && version != Q8_FORMAT_VERSION)
        return q8_error(Q8_ERR_UNSUPPORTED, "format_version %" PRId64 " (this runtime reads %d)",
                        version, Q8_FORMAT_VERSION);
    if (st == Q8_OK)
        st = check_attr_names(f, "root", allowed);
    if (st == Q8_OK)
        st = read_text(f, "root", "rounding", text, sizeof text);
    if (st == Q8_OK && strcmp(text, Q8_ROUNDING) != 0)
        return q8_error(Q8_ERR_UNSUPPORTED, "rounding rule '%s' (this runtime implements '%s')",
                        text, Q8_ROUNDING);
    if (st == Q8_OK)
        st = read_text(f, "root", "source_model", text, sizeof text);
    if (st == Q8_OK)
        st = q8_builder_set_attr_text(b, "source_model", text);
    if (st == Q8_OK)
        st = read_text(f, "root", "qconfig", text, sizeof text);
    if (st == Q8_OK)
        st = q8_builder_set_attr_text(b, "qconfig", text);
    if (st == Q8_OK)
        st = read_int(f, "root", "n_values", n_values);
    if (st == Q8_OK)
        st = read_int(f, "root", "n_nodes", n_nodes);
    if (st == Q8_OK && (*n_values < 1 || *n_values > Q8_MAX_VALUES || *n_nodes < 1 ||
                        *n_nodes > Q8_MAX_NODES))
        return q8_error(Q8_ERR_FORMAT, "n_values = %" PRId64 " and n_nodes = %" PRId64
                        " must lie in [1, %d]",
                        *n_values, *n_nodes, Q8_MAX_VALUES);
    if (st == Q8_OK)
        st = read_ids(f, "root", "inputs", ins, Q8_MAX_GRAPH_IO, n_in);
    if (st == Q8_OK)
        st = read_ids(f, "root", "outputs", outs, Q8_MAX_GRAPH_IO, n_out);
    return st;
}

static q8_status read_model(hid_t f, q8_builder *b)
{
    int64_t n_values = 0, n_nodes = 0;
    int32_t ins[Q8_MAX_GRAPH_IO], outs[Q8_MAX_GRAPH_IO], n_in = 0, n_out = 0;
    q8_status st = read_root(f, b, &n_values, &n_nodes, ins, &n_in, outs, &n_out);
    if (st == Q8_OK)
        st = check_link_count(f, "the root group", 2);
    if (st != Q8_OK)
        return q8_builder_fail(b, st);
    hid_t values = open_group(f, "root", "values"), nodes = open_group(f, "root", "nodes");
    if (values < 0 || nodes < 0)
        st = Q8_ERR_FORMAT;
    if (st == Q8_OK)
        st = check_link_count(values, "group 'values'", n_values);
    if (st == Q8_OK)
        st = check_link_count(nodes, "group 'nodes'", n_nodes);
    if (st != Q8_OK)
        q8_builder_fail(b, st);
    for (int32_t i = 0; st == Q8_OK && i < n_values; i++)
        st = read_value(values, b, i);
    for (int32_t k = 0; st == Q8_OK && k < n_nodes; k++)
        st = read_node(nodes, b, k);
    for (int32_t i = 0; st == Q8_OK && i < n_in; i++)
        st = q8_builder_mark_input(b, ins[i]);
    for (int32_t i = 0; st == Q8_OK && i < n_out; i++)
        st = q8_builder_mark_output(b, outs[i]);
    if (values >= 0)
        H5Gclose(values);
    if (nodes >= 0)
        H5Gclose(nodes);
    return q8_builder_status(b);
}

q8_model *q8_model_load(const char *path)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are reported through q8_last_error */
    if (!path) {
        q8_error(Q8_ERR_ARG, "q8_model_load: path is NULL");
        return NULL;
    }
    if (access(path, R_OK) != 0) {
        q8_error(Q8_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (H5Fis_hdf5(path) <= 0) {
        q8_error(Q8_ERR_FORMAT, "%s: not an HDF5 file (or truncated)", path);
        return NULL;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        q8_error(Q8_ERR_FORMAT, "%s: cannot open as HDF5 (corrupt or truncated?)", path);
        return NULL;
    }
    q8_builder *b = q8_builder_new();
    if (!b) {
        H5Fclose(f);
        q8_error(Q8_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    read_model(f, b);
    H5Fclose(f);
    q8_model *m = q8_builder_finish(b);
    if (!m)
        q8_error_context("%s", path);
    return m;
}

/* ---- writing ---- */

static q8_status write_text(hid_t loc, const char *name, const char *text)
{
    hid_t t = H5Tcopy(H5T_C_S1), space = H5Screate(H5S_SCALAR);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hid_t a = H5Acreate2(loc, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, t, &text);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(space);
    H5Tclose(t);
    return rc < 0 ? q8_error(Q8_ERR_IO, "cannot write attribute '%s'", name) : Q8_OK;
}

/* n < 0: a scalar. */
static q8_status write_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                            const void *data, int64_t n)
{
    hsize_t dims[1] = {(hsize_t)(n < 0 ? 1 : n)};
    hid_t space = n < 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    hid_t a = H5Acreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, mem_type, data);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(space);
    return rc < 0 ? q8_error(Q8_ERR_IO, "cannot write attribute '%s'", name) : Q8_OK;
}

static q8_status write_ids(hid_t loc, const char *name, const int32_t *ids, int32_t n)
{
    return write_attr(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT32, ids, n);
}

static hid_t file_type(q8_dtype dt)
{
    switch (dt) {
    case Q8_U8: return H5T_STD_U8LE;
    case Q8_I8: return H5T_STD_I8LE;
    case Q8_I32: return H5T_STD_I32LE;
    case Q8_F32: return H5T_IEEE_F32LE;
    }
    return H5T_STD_U8LE;
}

static q8_status write_value(hid_t values, const q8_value *v, int32_t id)
{
    char key[32];
    snprintf(key, sizeof key, "%d", (int)id);
    hid_t g = H5Gcreate2(values, key, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        return q8_error(Q8_ERR_IO, "cannot create group values/%s", key);
    q8_status st = write_text(g, "name", v->name);
    if (st == Q8_OK)
        st = write_text(g, "dtype", q8_dtype_name(v->dtype));
    if (st == Q8_OK)
        st = write_attr(g, "shape", H5T_STD_I64LE, H5T_NATIVE_INT64, v->shape, v->ndim);
    if (st == Q8_OK && v->dtype != Q8_F32)
        st = write_attr(g, "scale", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &v->scale, -1);
    if (st == Q8_OK && v->dtype != Q8_F32)
        st = write_attr(g, "zero_point", H5T_STD_I32LE, H5T_NATIVE_INT32, &v->zero_point, -1);
    H5Gclose(g);
    return st;
}

static q8_status write_constant(hid_t g, const char *key, const q8_tensor *t)
{
    hsize_t dims[Q8_MAX_DIMS];
    for (int32_t d = 0; d < t->ndim; d++)
        dims[d] = (hsize_t)t->shape[d];
    hid_t space = H5Screate_simple(t->ndim, dims, NULL);
    hid_t ds = H5Dcreate2(g, key, file_type(t->dtype), space, H5P_DEFAULT, H5P_DEFAULT,
                          H5P_DEFAULT);
    herr_t rc = ds < 0 ? -1 : H5Dwrite(ds, native_type(t->dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                                       t->data);
    if (ds >= 0)
        H5Dclose(ds);
    H5Sclose(space);
    return rc < 0 ? q8_error(Q8_ERR_IO, "cannot write constant '%s'", key) : Q8_OK;
}

/* An optional attribute whose default depends on the output dtype (the clamp range of
 * quantize, cat and the average pools) is left out when it has that default, so that
 * files that do not restrict a range read as they did before the attribute existed. */
static bool omitted(const q8_model *m, const q8_node *n, int32_t a)
{
    const q8_attr_spec *s = &q8_ops[n->op]->attrs[a];
    bool dtype_default = s->def == Q8_DEF_OUT_QMIN || s->def == Q8_DEF_OUT_QMAX;
    return !s->required && dtype_default && n->attr[a] == q8_attr_default(m, n, s);
}

static q8_status write_node(hid_t nodes, const q8_model *m, const q8_node *n)
{
    char key[32];
    snprintf(key, sizeof key, "%d", (int)n->index);
    const q8_op_def *def = q8_ops[n->op];
    hid_t g = H5Gcreate2(nodes, key, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0)
        return q8_error(Q8_ERR_IO, "cannot create group nodes/%s", key);
    q8_status st = write_text(g, "op", def->name);
    if (st == Q8_OK)
        st = write_text(g, "name", n->name);
    if (st == Q8_OK)
        st = write_ids(g, "inputs", n->in, n->n_in);
    if (st == Q8_OK)
        st = write_ids(g, "outputs", n->out, n->n_out);
    for (int32_t a = 0; st == Q8_OK && a < def->n_attrs; a++)
        if (!omitted(m, n, a))
            st = write_attr(g, def->attrs[a].key, H5T_STD_I64LE, H5T_NATIVE_INT64, &n->attr[a],
                            -1);
    for (int32_t c = 0; st == Q8_OK && c < def->n_consts; c++)
        if (n->cst[c].data)
            st = write_constant(g, def->consts[c].key, &n->cst[c]);
    H5Gclose(g);
    if (st != Q8_OK)
        q8_node_error(n, st, "%s", "cannot be written");
    return st;
}

static q8_status write_model(hid_t f, const q8_model *m)
{
    int32_t version = Q8_FORMAT_VERSION, nv = m->n_values, nn = m->n_nodes;
    q8_status st = write_text(f, "format", Q8_FORMAT_NAME);
    if (st == Q8_OK)
        st = write_attr(f, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT32, &version, -1);
    if (st == Q8_OK)
        st = write_text(f, "rounding", Q8_ROUNDING);
    if (st == Q8_OK)
        st = write_text(f, "source_model", m->source_model);
    if (st == Q8_OK)
        st = write_text(f, "qconfig", m->qconfig);
    if (st == Q8_OK)
        st = write_attr(f, "n_values", H5T_STD_I32LE, H5T_NATIVE_INT32, &nv, -1);
    if (st == Q8_OK)
        st = write_attr(f, "n_nodes", H5T_STD_I32LE, H5T_NATIVE_INT32, &nn, -1);
    if (st == Q8_OK)
        st = write_ids(f, "inputs", m->inputs, m->n_inputs);
    if (st == Q8_OK)
        st = write_ids(f, "outputs", m->outputs, m->n_outputs);
    hid_t values = H5Gcreate2(f, "values", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t nodes = H5Gcreate2(f, "nodes", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (st == Q8_OK && (values < 0 || nodes < 0))
        st = q8_error(Q8_ERR_IO, "cannot create the groups");
    for (int32_t i = 0; st == Q8_OK && i < m->n_values; i++)
        st = write_value(values, &m->values[i], i);
    for (int32_t k = 0; st == Q8_OK && k < m->n_nodes; k++)
        st = write_node(nodes, m, &m->nodes[k]);
    if (values >= 0)
        H5Gclose(values);
    if (nodes >= 0)
        H5Gclose(nodes);
    return st;
}

q8_status q8_model_save(const q8_model *m, const char *path)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (!m || !path)
        return q8_error(Q8_ERR_ARG, "q8_model_save: model or path is NULL");
    char tmp[PATH_MAX_Q8 + 32];
    if (strlen(path) >= PATH_MAX_Q8)
        return q8_error(Q8_ERR_ARG, "%s: path too long", path);
    cq_atomic_tmp_path(tmp, sizeof tmp, path);
    cq_atomic_remove_stale(path);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        q8_status st = q8_error(Q8_ERR_IO, "%s: cannot create file for writing (%s)", path,
                                errno ? strerror(errno) : "HDF5 refused");
        unlink(tmp);
        return st;
    }
    q8_status st = write_model(f, m);
    if (H5Fclose(f) < 0 && st == Q8_OK)
        st = q8_error(Q8_ERR_IO, "writing failed (disk full?)");
    int err = st == Q8_OK ? cq_atomic_fsync(tmp) : 0;
    if (err)
        st = q8_error(Q8_ERR_IO, "%s: fsync failed: %s", tmp, strerror(err));
    if (st == Q8_OK && rename(tmp, path) != 0)
        st = q8_error(Q8_ERR_IO, "cannot move the new file into place: %s", strerror(errno));
    if (st != Q8_OK) {
        unlink(tmp);
        q8_error_context("%s", path);
        return st;
    }
    cq_atomic_fsync_dir_of(path);
    return Q8_OK;
}
