/* idx.c — IDX files (MNIST family), plain or gzip, and Fashion-MNIST by directory.
 *
 * IDX (LeCun, http://yann.lecun.com/exdb/mnist/): a 4-byte magic 00 00 tt dd (tt the
 * element type, 0x08 = unsigned byte; dd the number of dimensions), dd big-endian
 * uint32 sizes, then the elements in row-major order. A declared size is trusted
 * only as far as the file can back it: for a plain file it must match the bytes on
 * disk before anything is allocated; for gzip it must be possible at deflate's
 * maximal ratio, and the buffer grows only as decompressed data actually arrives.
 */
#include "data/data_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum {
    IDX_UBYTE = 0x08,
    IDX_MAX_DIMS = 3,
    DEFLATE_MAX_RATIO = 1032, /* the most deflate can compress: 258-byte matches in ~2 bits */
};

/* An open IDX file: exactly one of f (plain) and gz (gzip) is set. */
typedef struct idx_file {
    const char *path;
    FILE *f;
    gzFile gz;
    int64_t file_size; /* bytes on disk */
    int zerr;          /* zlib error number after a failed read, 0 if none */
    char zmsg[128];    /* zlib's message for it */
} idx_file;

/* What an IDX header declares. */
typedef struct idx_header {
    int32_t ndim;
    int64_t dims[IDX_MAX_DIMS];
    int64_t header_bytes;  /* 4 + 4 * ndim */
    int64_t payload_bytes; /* product of dims (one byte each) */
} idx_header;

static void idx_close(idx_file *r)
{
    if (r->f)
        fclose(r->f);
    if (r->gz)
        gzclose(r->gz);
    r->f = NULL;
    r->gz = NULL;
}

static ag_status idx_open(idx_file *r, const char *path)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    r->f = fopen(path, "rb");
    if (!r->f)
        return ag_error(AG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    ag_status st = data_file_size(r->f, path, &r->file_size);
    if (st != AG_OK) {
        idx_close(r);
        return st;
    }
    unsigned char magic[2] = {0, 0};
    size_t got = fread(magic, 1, 2, r->f);
    if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
        fclose(r->f);
        r->f = NULL;
        r->gz = gzopen(path, "rb");
        if (!r->gz)
            return ag_error(AG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        gzbuffer(r->gz, 1u << 17);
        return AG_OK;
    }
    if (fseek(r->f, 0, SEEK_SET) != 0) {
        idx_close(r);
        return ag_error(AG_ERR_IO, "%s: cannot seek: %s", path, strerror(errno));
    }
    return AG_OK;
}

/* Reads up to n bytes; returns how many were read. Fewer than n means the end of the
 * data, or an error (r->zerr / ferror): the caller words the message. */
static int64_t idx_read(idx_file *r, void *buf, int64_t n)
{
    unsigned char *p = buf;
    int64_t done = 0;
    while (done < n) {
        int64_t chunk = n - done < (1 << 30) ? n - done : (1 << 30);
        int64_t got;
        if (r->f) {
            got = (int64_t)fread(p + done, 1, (size_t)chunk, r->f);
        } else {
            got = gzread(r->gz, p + done, (unsigned)chunk);
            /* A truncated stream delivers what it has, then 0 with Z_BUF_ERROR set;
             * a corrupt one returns -1: either way gzerror() says which. */
            if (got < chunk) {
                int err = Z_OK;
                const char *msg = gzerror(r->gz, &err);
                if (err != Z_OK) {
                    /* gzerror() says "path: what"; the path is in our message already. */
                    size_t plen = strlen(r->path);
                    if (strncmp(msg, r->path, plen) == 0 && strncmp(msg + plen, ": ", 2) == 0)
                        msg += plen + 2;
                    r->zerr = err;
                    snprintf(r->zmsg, sizeof r->zmsg, "%s",
                             err == Z_ERRNO ? strerror(errno) : msg);
                }
                got = got < 0 ? 0 : got;
            }
        }
        done += got;
        if (got < chunk)
            break;
    }
    return done;
}

/* The message for a short read: an I/O error, a broken gzip stream, or plain EOF.
 * `declared` says what was expected ("header says 10 images of 28x28 (7840 bytes)"),
 * `got` how many bytes arrived, `after` where they were counted from. */
static ag_status idx_short_read(const idx_file *r, const char *declared, int64_t got,
                                const char *after)
{
    if ((r->f && ferror(r->f)) || r->zerr == Z_ERRNO)
        return ag_error(AG_ERR_IO, "%s: read error: %s", r->path,
                        r->f ? strerror(errno) : r->zmsg);
    if (r->zerr == Z_BUF_ERROR) /* zlib: "unexpected end of file" */
        return ag_error(AG_ERR_FORMAT,
                        "%s: truncated gzip stream: %s, the stream holds %lld bytes%s", r->path,
                        declared, (long long)got, after);
    if (r->zerr != 0)
        return ag_error(AG_ERR_FORMAT,
                        "%s: corrupt gzip stream (zlib: %s): %s, %lld bytes decompressed "
                        "before the error%s",
                        r->path, r->zmsg, declared, (long long)got, after);
    return ag_error(AG_ERR_FORMAT, "%s: truncated: %s, file holds %lld bytes%s", r->path,
                    declared, (long long)got, after);
}

/* "60000 images of 28x28" or "60000 labels": what a header declares, for messages. */
static void idx_describe(const idx_header *h, char *out, size_t cap)
{
    if (h->ndim == 3)
        snprintf(out, cap, "%lld images of %lldx%lld", (long long)h->dims[0],
                 (long long)h->dims[1], (long long)h->dims[2]);
    else
        snprintf(out, cap, "%lld labels", (long long)h->dims[0]);
}

static uint32_t idx_be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static ag_status idx_check_magic(const idx_file *r, const unsigned char *m, int32_t ndim)
{
    const char *kind = ndim == 3 ? "images" : "labels";
    const char *layout = ndim == 3 ? "(N, rows, cols)" : "(N)";
    uint32_t magic = idx_be32(m);
    if (m[0] != 0 || m[1] != 0)
        return ag_error(AG_ERR_FORMAT,
                        "%s: not an IDX file: magic 0x%08x, an IDX %s file starts with "
                        "0x0000080%d",
                        r->path, magic, kind, ndim);
    if (m[2] != IDX_UBYTE)
        return ag_error(AG_ERR_FORMAT,
                        "%s: IDX element type 0x%02x is not supported: %s must be unsigned "
                        "bytes (0x08)",
                        r->path, m[2], kind);
    if (m[3] != ndim)
        return ag_error(AG_ERR_FORMAT,
                        "%s: has %d dimension%s (magic 0x%08x), IDX %s have %d %s%s", r->path,
                        m[3], m[3] == 1 ? "" : "s", magic, kind, ndim, layout,
                        m[3] == 1   ? ": is this a labels file?"
                        : m[3] == 3 ? ": is this an images file?"
                                    : "");
    return AG_OK;
}

/* Reads and checks the header: magic, sizes >= 1, no overflow, within the limit. */
static ag_status idx_read_header(idx_file *r, int32_t ndim, idx_header *h)
{
    unsigned char buf[4 + 4 * IDX_MAX_DIMS];
    memset(h, 0, sizeof *h);
    h->ndim = ndim;
    h->header_bytes = 4 + 4 * ndim;
    int64_t got = idx_read(r, buf, 4);
    if (got < 4)
        return idx_short_read(r, "an IDX header needs at least 4 bytes", got, "");
    ag_status st = idx_check_magic(r, buf, ndim);
    if (st != AG_OK)
        return st;
    got = idx_read(r, buf + 4, 4 * ndim);
    if (got < 4 * ndim) {
        char declared[64];
        snprintf(declared, sizeof declared, "its IDX header needs %lld bytes",
                 (long long)h->header_bytes);
        return idx_short_read(r, declared, 4 + got, "");
    }

    char desc[128];
    h->payload_bytes = 1;
    bool overflow = false;
    for (int32_t d = 0; d < ndim; d++) {
        h->dims[d] = idx_be32(buf + 4 + 4 * d);
        overflow |= !data_mul_ok(h->payload_bytes, h->dims[d], &h->payload_bytes);
    }
    idx_describe(h, desc, sizeof desc);
    for (int32_t d = 0; d < ndim; d++)
        if (h->dims[d] == 0)
            return ag_error(AG_ERR_FORMAT, "%s: header says %s: an empty %s", r->path, desc,
                            d == 0 ? "dataset" : "image");
    if (overflow)
        return ag_error(AG_ERR_FORMAT, "%s: header says %s: the size overflows", r->path, desc);
    if (ndim == 3 && h->dims[1] * h->dims[2] > INT32_MAX)
        return ag_error(AG_ERR_FORMAT, "%s: header says %s: images too large", r->path, desc);
    if (h->payload_bytes > DATA_MAX_IMAGE_BYTES)
        return ag_error(
            AG_ERR_FORMAT, "%s: header says %s (%lld bytes), more than the %lld-byte limit",
            r->path, desc, (long long)h->payload_bytes, (long long)DATA_MAX_IMAGE_BYTES);
    return AG_OK;
}

/* Before allocating: can the file hold what the header declares? */
static ag_status idx_check_size(const idx_file *r, const idx_header *h)
{
    char desc[128];
    idx_describe(h, desc, sizeof desc);
    int64_t held = r->file_size - h->header_bytes;
    if (r->f && held < h->payload_bytes)
        return ag_error(AG_ERR_FORMAT,
                        "%s: truncated: header says %s (%lld bytes), file holds %lld bytes "
                        "after its %lld-byte header",
                        r->path, desc, (long long)h->payload_bytes, (long long)held,
                        (long long)h->header_bytes);
    if (r->f && held > h->payload_bytes)
        return ag_error(AG_ERR_FORMAT,
                        "%s: header says %s (%lld bytes), but the file holds %lld bytes "
                        "after its %lld-byte header",
                        r->path, desc, (long long)h->payload_bytes, (long long)held,
                        (long long)h->header_bytes);
    if (r->gz && h->payload_bytes / DEFLATE_MAX_RATIO > r->file_size)
        return ag_error(AG_ERR_FORMAT,
                        "%s: truncated: header says %s (%lld bytes), more than a gzip file "
                        "of %lld bytes can hold",
                        r->path, desc, (long long)h->payload_bytes, (long long)r->file_size);
    return AG_OK;
}

/* Reads the payload into a new buffer (*out, owned by the caller). A gzip payload
 * is read into a buffer that starts at a few times the compressed size and doubles,
 * so a lying header costs no more memory than the data that really arrives. */
static ag_status idx_read_payload(idx_file *r, const idx_header *h, uint8_t **out)
{
    int64_t want = h->payload_bytes;
    int64_t cap = want;
    if (r->gz && cap > 4 * r->file_size + (1 << 20))
        cap = 4 * r->file_size + (1 << 20);
    uint8_t *buf = malloc((size_t)cap);
    if (!buf)
        return ag_error(AG_ERR_NOMEM, "%s: out of memory for %lld bytes", r->path,
                        (long long)cap);
    int64_t got = 0;
    for (;;) {
        int64_t n = idx_read(r, buf + got, cap - got);
        got += n;
        if (got < cap || cap == want)
            break;
        int64_t grown = cap * 2 < want ? cap * 2 : want;
        uint8_t *bigger = realloc(buf, (size_t)grown);
        if (!bigger) {
            free(buf);
            return ag_error(AG_ERR_NOMEM, "%s: out of memory for %lld bytes", r->path,
                            (long long)grown);
        }
        buf = bigger;
        cap = grown;
    }
    if (got < want) {
        char desc[128], declared[192], after[64];
        idx_describe(h, desc, sizeof desc);
        snprintf(declared, sizeof declared, "header says %s (%lld bytes)", desc,
                 (long long)want);
        snprintf(after, sizeof after, " after its %lld-byte header",
                 (long long)h->header_bytes);
        free(buf);
        return idx_short_read(r, declared, got, after);
    }
    unsigned char extra;
    if (r->gz && idx_read(r, &extra, 1) == 1) {
        free(buf);
        return ag_error(AG_ERR_FORMAT,
                        "%s: the decompressed data is longer than the %lld bytes its header "
                        "declares",
                        r->path, (long long)(h->header_bytes + want));
    }
    *out = buf;
    return AG_OK;
}

/* Opens `path`, reads its header and (if `expect_n` > 0, after checking the count)
 * its payload. */
static ag_status idx_read_file(const char *path, int32_t ndim, int64_t expect_n,
                               const char *expect_path, idx_header *h, uint8_t **out)
{
    idx_file r;
    ag_status st = idx_open(&r, path);
    if (st != AG_OK)
        return st;
    st = idx_read_header(&r, ndim, h);
    if (st == AG_OK && expect_n > 0 && h->dims[0] != expect_n)
        st = ag_error(AG_ERR_FORMAT, "%s: holds %lld labels but %s holds %lld images", path,
                      (long long)h->dims[0], expect_path, (long long)expect_n);
    if (st == AG_OK)
        st = idx_check_size(&r, h);
    if (st == AG_OK)
        st = idx_read_payload(&r, h, out);
    idx_close(&r);
    return st;
}

ag_status data_idx_load(const char *images_path, const char *labels_path, data_dataset *ds)
{
    if (!ds)
        return ag_error(AG_ERR_ARG, "data_idx_load: dataset is NULL");
    memset(ds, 0, sizeof *ds);
    if (!images_path)
        return ag_error(AG_ERR_ARG, "data_idx_load: the images path is NULL");

    idx_header hi, hl;
    uint8_t *images = NULL, *raw_labels = NULL;
    int32_t *labels = NULL;
    ag_status st = idx_read_file(images_path, 3, 0, NULL, &hi, &images);
    if (st != AG_OK)
        goto cleanup;
    if (!labels_path) { /* images only (inference): labels 0, classes unknown */
        labels = calloc((size_t)hi.dims[0], sizeof *labels);
        if (!labels) {
            st = ag_error(AG_ERR_NOMEM, "%s: out of memory", images_path);
            goto cleanup;
        }
        goto fill;
    }
    st = idx_read_file(labels_path, 1, hi.dims[0], images_path, &hl, &raw_labels);
    if (st != AG_OK)
        goto cleanup;
    labels = malloc((size_t)hi.dims[0] * sizeof *labels);
    if (!labels) {
        st = ag_error(AG_ERR_NOMEM, "%s: out of memory for %lld labels", labels_path,
                      (long long)hi.dims[0]);
        goto cleanup;
    }
    for (int64_t i = 0; i < hi.dims[0]; i++)
        labels[i] = raw_labels[i];
    st = data_classes_infer(labels, hi.dims[0], labels_path, &ds->n_classes);
    if (st != AG_OK)
        goto cleanup;
fill:
    ds->n = hi.dims[0];
    ds->c = 1;
    ds->h = (int32_t)hi.dims[1];
    ds->w = (int32_t)hi.dims[2];
    ds->images = images;
    ds->labels = labels;
    data_source_set(ds, images_path);
    images = NULL;
    labels = NULL;
cleanup:
    free(images);
    free(raw_labels);
    free(labels);
    return st;
}

/* ---- Fashion-MNIST ----------------------------------------------------------- */

const char *data_default_dir(void)
{
    return "/usr/share/datasets/fashion-mnist";
}

/* Finds `dir/name.gz`, else `dir/name`; on neither, an error saying where it looked. */
static ag_status fashion_find(const char *dir, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s.gz", dir, name);
    FILE *f = fopen(out, "rb");
    if (!f) {
        snprintf(out, cap, "%s/%s", dir, name);
        f = fopen(out, "rb");
    }
    if (f) {
        fclose(f);
        return AG_OK;
    }
    return ag_error(AG_ERR_IO,
                    "fashion-mnist: %s.gz (or %s) not found in %s; `apt-get install "
                    "dataset-fashion-mnist` provides them in %s",
                    name, name, dir, data_default_dir());
}

ag_status data_fashion_mnist_load(const char *dir, bool train, data_dataset *ds)
{
    if (!ds)
        return ag_error(AG_ERR_ARG, "data_fashion_mnist_load: dataset is NULL");
    memset(ds, 0, sizeof *ds);
    if (!dir)
        dir = data_default_dir();
    const char *split = train ? "train" : "t10k";
    char name[64], images[4096], labels[4096];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", split);
    ag_status st = fashion_find(dir, name, images, sizeof images);
    if (st != AG_OK)
        return st;
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", split);
    st = fashion_find(dir, name, labels, sizeof labels);
    if (st != AG_OK)
        return st;
    return data_idx_load(images, labels, ds);
}
