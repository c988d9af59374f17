/* fuzz_util.c — scratch files and the h5spec encoding; see fuzz_util.h. */
#include "fuzz_util.h"

#include <fcntl.h>
#include <hdf5.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- scratch files ---- */

static char scratch[FUZZ_SLOTS][64];

static void scratch_remove(void)
{
    for (int i = 0; i < FUZZ_SLOTS; i++)
        if (scratch[i][0])
            unlink(scratch[i]);
}

const char *fuzz_scratch_path(int slot)
{
    if (scratch[slot][0])
        return scratch[slot];
    /* tmpfs when there is one: every execution rewrites the file. */
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(scratch[slot], sizeof scratch[slot], "%s/cqat-fuzz-%d-XXXXXX", dir, slot);
    int fd = mkstemp(scratch[slot]);
    if (fd < 0) {
        perror("fuzz: mkstemp");
        abort();
    }
    close(fd);
    static bool registered;
    if (!registered)
        atexit(scratch_remove);
    registered = true;
    return scratch[slot];
}

void fuzz_write_file(int slot, const uint8_t *data, size_t size)
{
    const char *path = fuzz_scratch_path(slot);
    int fd = open(path, O_WRONLY | O_TRUNC);
    if (fd < 0) {
        perror("fuzz: open scratch file");
        abort();
    }
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n <= 0) {
            perror("fuzz: write scratch file");
            abort();
        }
        done += (size_t)n;
    }
    close(fd);
}

void fuzz_report(const char *who, const char *error)
{
    static int verbose = -1;
    if (verbose < 0) {
        const char *v = getenv("FUZZ_VERBOSE");
        verbose = v && *v && strcmp(v, "0") != 0;
    }
    if (verbose)
        fprintf(stderr, "%s: %s\n", who, error ? error : "ok");
}

/* ---- HDF5 identifiers ---- */

static const H5I_type_t tracked[] = {H5I_FILE,    H5I_GROUP, H5I_DATATYPE,   H5I_DATASPACE,
                                     H5I_DATASET, H5I_ATTR,  H5I_GENPROP_LST};
enum { N_TRACKED = sizeof tracked / sizeof tracked[0] };
static hsize_t baseline[N_TRACKED];

void fuzz_h5_init(void)
{
    H5open();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void fuzz_h5_mark(void)
{
    for (int i = 0; i < N_TRACKED; i++)
        if (H5Inmembers(tracked[i], &baseline[i]) < 0)
            baseline[i] = 0;
}

void fuzz_h5_check_closed(const char *who)
{
    for (int i = 0; i < N_TRACKED; i++) {
        hsize_t n = 0;
        if (H5Inmembers(tracked[i], &n) >= 0 && n > baseline[i]) {
            fprintf(stderr, "fuzz: %s left %llu HDF5 identifier(s) of type %d open\n", who,
                    (unsigned long long)(n - baseline[i]), (int)tracked[i]);
            abort();
        }
    }
}

/* ---- h5spec ---- */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static uint8_t rd_u8(reader *r)
{
    if (!r->n)
        return 0;
    r->n--;
    return *r->p++;
}

static uint64_t rd_varint(reader *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && r->n; shift += 7) {
        uint8_t b = rd_u8(r);
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
    }
    return v;
}

/* A length byte and that many bytes, NUL-terminated into buf (an inner NUL ends it). */
static void rd_str(reader *r, char *buf, size_t cap)
{
    size_t len = rd_u8(r), i = 0;
    for (size_t k = 0; k < len; k++) {
        uint8_t c = rd_u8(r);
        if (i + 1 < cap)
            buf[i++] = (char)c;
    }
    buf[i] = '\0';
}

/* Copies n bytes from the input into dst, zeros once it ends. */
static void rd_bytes(reader *r, void *dst, size_t n)
{
    size_t take = n < r->n ? n : r->n;
    memcpy(dst, r->p, take);
    memset((uint8_t *)dst + take, 0, n - take);
    r->p += take;
    r->n -= take;
}

enum { T_FIXED_STR = 10, T_VLEN_STR = 11, N_TYPES = 12 };

/* File type and memory type of type code t (fixed strings of `len` bytes). The caller
 * closes both. */
static void spec_types(int t, size_t len, hid_t *file_type, hid_t *mem_type)
{
    static const hid_t *const file_types[] = {
        &H5T_STD_U8LE_g,   &H5T_STD_I8LE_g,  &H5T_STD_U16LE_g, &H5T_STD_I16LE_g,
        &H5T_STD_U32LE_g,  &H5T_STD_I32LE_g, &H5T_STD_U64LE_g, &H5T_STD_I64LE_g,
        &H5T_IEEE_F32LE_g, &H5T_IEEE_F64LE_g};
    static const hid_t *const mem_types[] = {
        &H5T_NATIVE_UCHAR_g,  &H5T_NATIVE_SCHAR_g, &H5T_NATIVE_USHORT_g, &H5T_NATIVE_SHORT_g,
        &H5T_NATIVE_UINT32_g, &H5T_NATIVE_INT32_g, &H5T_NATIVE_UINT64_g, &H5T_NATIVE_INT64_g,
        &H5T_NATIVE_FLOAT_g,  &H5T_NATIVE_DOUBLE_g};
    if (t < T_FIXED_STR) {
        *file_type = H5Tcopy(*file_types[t]);
        *mem_type = H5Tcopy(*mem_types[t]);
        return;
    }
    hid_t s = H5Tcopy(H5T_C_S1);
    if (t == T_FIXED_STR) {
        H5Tset_size(s, len ? len : 1);
        H5Tset_strpad(s, H5T_STR_NULLPAD);
    } else {
        H5Tset_size(s, H5T_VARIABLE);
        H5Tset_cset(s, H5T_CSET_UTF8);
    }
    *file_type = s;
    *mem_type = H5Tcopy(s);
}

static size_t spec_type_size(int t)
{
    static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 8, 8, 4, 8};
    return t < T_FIXED_STR ? sizes[t] : 8;
}

static hid_t link_create_plist(void)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    return lcpl;
}

static void spec_group(hid_t f, reader *r)
{
    char path[256];
    rd_str(r, path, sizeof path);
    hid_t lcpl = link_create_plist();
    hid_t g = H5Gcreate2(f, path, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    if (g >= 0)
        H5Gclose(g);
    H5Pclose(lcpl);
}

static void spec_dataset(hid_t f, reader *r, size_t *budget)
{
    char path[256];
    rd_str(r, path, sizeof path);
    int t = rd_u8(r) % N_TYPES;
    if (t == T_VLEN_STR)
        t = T_FIXED_STR; /* datasets of strings: fixed 8-byte ones */
    int rank = rd_u8(r) % 8;
    hsize_t dims[8], chunk[8];
    uint64_t numel = 1;
    bool overflow = false;
    for (int d = 0; d < rank; d++) {
        dims[d] = rd_varint(r) & (((uint64_t)1 << 62) - 1);
        /* Chunks of at most 64x64 elements (rows of the last two dimensions): HDF5
         * holds a whole chunk in memory while writing it. */
        chunk[d] = d + 2 < rank ? 1 : dims[d] < 64 ? (dims[d] ? dims[d] : 1) : 64;
        overflow |= __builtin_mul_overflow(numel, (uint64_t)dims[d], &numel);
    }
    uint8_t flags = rd_u8(r);
    size_t size = spec_type_size(t);
    uint64_t bytes = 0;
    overflow |= __builtin_mul_overflow(numel, (uint64_t)size, &bytes);
    bool write = (flags & 1) && !overflow && bytes <= *budget;

    hid_t ftype, mtype;
    spec_types(t, 8, &ftype, &mtype);
    hid_t space = rank ? H5Screate_simple(rank, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    bool chunked = (flags & 2) && rank > 0;
    for (int d = 0; d < rank; d++)
        chunked &= dims[d] > 0;
    if (chunked)
        H5Pset_chunk(dcpl, rank, chunk);
    hid_t lcpl = link_create_plist();
    hid_t ds = space >= 0 ? H5Dcreate2(f, path, ftype, space, lcpl, dcpl, H5P_DEFAULT) : -1;
    if (ds >= 0 && write && bytes > 0) {
        void *buf = malloc((size_t)bytes);
        if (buf) {
            rd_bytes(r, buf, (size_t)bytes);
            H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
            *budget -= (size_t)bytes;
            free(buf);
        }
    }
    if (ds >= 0)
        H5Dclose(ds);
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    H5Tclose(ftype);
    H5Tclose(mtype);
}

enum { ATTR_MAX_COUNT = 254, ATTR_NULL = 255 };

/* The values of an attribute of `count` elements of type t, read from the input into a
 * new buffer in memory-type layout (variable strings: an array of char *, each
 * pointing into `strings`). */
static void *attr_values(reader *r, int t, size_t count, size_t fixed_len, char (*strings)[256])
{
    if (t == T_VLEN_STR) {
        char **ptrs = calloc(count, sizeof *ptrs);
        for (size_t i = 0; ptrs && i < count; i++) {
            rd_str(r, strings[i], sizeof strings[i]);
            ptrs[i] = strings[i];
        }
        return ptrs;
    }
    size_t size = t == T_FIXED_STR ? (fixed_len ? fixed_len : 1) : spec_type_size(t);
    void *buf = malloc(count * size);
    if (buf)
        rd_bytes(r, buf, count * size);
    return buf;
}

static void spec_attribute(hid_t f, reader *r)
{
    char path[256], name[256];
    rd_str(r, path, sizeof path);
    rd_str(r, name, sizeof name);
    if (!path[0])
        snprintf(path, sizeof path, ".");
    int t = rd_u8(r) % N_TYPES;
    uint8_t count = rd_u8(r);
    size_t fixed_len = t == T_FIXED_STR ? rd_u8(r) : 0;
    size_t n = count == 0 || count == ATTR_NULL ? 1 : count;
    static char strings[ATTR_MAX_COUNT][256];
    void *values = count == ATTR_NULL ? NULL : attr_values(r, t, n, fixed_len, strings);

    hid_t ftype, mtype;
    spec_types(t, fixed_len, &ftype, &mtype);
    hsize_t dims[1] = {count};
    hid_t space = count == ATTR_NULL ? H5Screate(H5S_NULL)
                  : count == 0       ? H5Screate(H5S_SCALAR)
                                     : H5Screate_simple(1, dims, NULL);
    if (H5Aexists_by_name(f, path, name, H5P_DEFAULT) > 0)
        H5Adelete_by_name(f, path, name, H5P_DEFAULT);
    hid_t a =
        H5Acreate_by_name(f, path, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0 && values)
        H5Awrite(a, mtype, values);
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(space);
    H5Tclose(ftype);
    H5Tclose(mtype);
    free(values);
}

static void spec_link(hid_t f, reader *r)
{
    char target[256], path[256];
    uint8_t kind = rd_u8(r);
    rd_str(r, target, sizeof target);
    rd_str(r, path, sizeof path);
    hid_t lcpl = link_create_plist();
    if (kind % 2 == 0)
        H5Lcreate_hard(f, target, f, path, lcpl, H5P_DEFAULT);
    else
        H5Lcreate_soft(target, f, path, lcpl, H5P_DEFAULT);
    H5Pclose(lcpl);
}

static void spec_write(const char *path, const uint8_t *data, size_t size)
{
    /* Built in memory and written in one piece when closed (many small writes
     * otherwise): HDF5 allocates no space for a dataset that is never written, so a
     * huge declared one costs nothing here either. */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1 << 20, 1);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) {
        fprintf(stderr, "fuzz: cannot create %s with HDF5\n", path);
        abort();
    }
    reader r = {data, size};
    size_t budget = FUZZ_H5_MAX_DATA;
    for (int rec = 0; rec < FUZZ_H5_MAX_RECORDS && r.n; rec++) {
        switch (rd_u8(&r) % 4) {
        case 0:
            spec_group(f, &r);
            break;
        case 1:
            spec_dataset(f, &r, &budget);
            break;
        case 2:
            spec_attribute(f, &r);
            break;
        default:
            spec_link(f, &r);
            break;
        }
    }
    H5Fclose(f);
}

/* FUZZ_SAVE=PATH: also copy the HDF5 file of the (last) input to PATH, for h5dump. */
static void save_copy(const char *path)
{
    const char *to = getenv("FUZZ_SAVE");
    FILE *in = to ? fopen(path, "rb") : NULL;
    FILE *out = in ? fopen(to, "wb") : NULL;
    char buf[1 << 14];
    size_t n;
    while (out && (n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    if (out)
        fclose(out);
    if (in)
        fclose(in);
}

static bool raw_mode(void)
{
    static int raw = -1;
    if (raw < 0) {
        const char *v = getenv("CQAT_FUZZ_RAW");
        raw = v && strcmp(v, "1") == 0;
    }
    return raw;
}

const char *fuzz_write_h5(int slot, const uint8_t *data, size_t size)
{
    const char *path = fuzz_scratch_path(slot);
    if (size > 0 && data[0] == 'R' && raw_mode())
        fuzz_write_file(slot, data + 1, size - 1);
    else
        spec_write(path, size ? data + 1 : data, size ? size - 1 : 0);
    save_copy(path);
    return path;
}
