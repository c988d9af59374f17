/* test_data.c — data/: IDX (plain, gzip), CIFAR-10 and HDF5 readers with every kind of
 * broken file, the loader's batching, reproducibility, normalization and augmentation,
 * and the real Fashion-MNIST from the Debian package.
 *
 * Test files are written at run time into a mkdtemp() directory made before the tests
 * fork and removed after them (so a failing test leaves nothing behind). */
#include "test_util.h"

#include <dirent.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "data/data.h"

/* ---- Temporary files ----------------------------------------------------------- */

static char tmp_dir[256];

static void tmp_setup(void)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/cqat_test_data_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
}

static void tmp_teardown(void)
{
    DIR *d = opendir(tmp_dir);
    if (!d)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", tmp_dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(tmp_dir);
}

/* tmp_dir/name, in one of a few rotating buffers (enough for one call's arguments). */
static const char *tmp_path(const char *name)
{
    static char bufs[4][512];
    static int next = 0;
    char *p = bufs[next++ % 4];
    snprintf(p, 512, "%s/%s", tmp_dir, name);
    return p;
}

static const char *write_file(const char *name, const void *bytes, size_t n)
{
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(bytes, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
    return path;
}

static const char *write_gz(const char *name, const void *bytes, size_t n)
{
    const char *path = tmp_path(name);
    gzFile gz = gzopen(path, "wb");
    ck_assert_ptr_nonnull(gz);
    ck_assert_int_eq(gzwrite(gz, bytes, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(gz), Z_OK);
    return path;
}

/* The bytes of a file (malloc'd), its size in *n. */
static uint8_t *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n);
    ck_assert_uint_eq(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

/* ---- IDX bytes ------------------------------------------------------------------ */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An IDX file in memory: magic, ndim sizes, then `payload` bytes of `data` (may be
 * shorter or longer than the sizes say, to make broken files). */
static uint8_t *idx_bytes(uint32_t magic, int ndim, const uint32_t *dims, const uint8_t *data,
                          size_t payload, size_t *len)
{
    *len = 4 + 4 * (size_t)ndim + payload;
    uint8_t *b = malloc(*len);
    put_be32(b, magic);
    for (int d = 0; d < ndim; d++)
        put_be32(b + 4 + 4 * d, dims[d]);
    if (payload)
        memcpy(b + 4 + 4 * ndim, data, payload);
    return b;
}

/* Three 2x3 images: pixel (i, y, x) = 40 * i + 10 * y + x; labels 9, 0, 4. */
static const uint8_t SMALL_LABELS[3] = {9, 0, 4};

static uint8_t small_pixel(int i, int y, int x)
{
    return (uint8_t)(40 * i + 10 * y + x);
}

static const char *write_small_images(const char *name, bool gz)
{
    uint8_t px[3 * 2 * 3];
    for (int i = 0; i < 3; i++)
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 3; x++)
                px[i * 6 + y * 3 + x] = small_pixel(i, y, x);
    size_t len;
    uint8_t *b = idx_bytes(0x803, 3, (const uint32_t[]){3, 2, 3}, px, sizeof px, &len);
    const char *path = gz ? write_gz(name, b, len) : write_file(name, b, len);
    free(b);
    return path;
}

static const char *write_labels(const char *name, const uint8_t *labels, uint32_t n, bool gz)
{
    size_t len;
    uint8_t *b = idx_bytes(0x801, 1, &n, labels, n, &len);
    const char *path = gz ? write_gz(name, b, len) : write_file(name, b, len);
    free(b);
    return path;
}

static void check_small_dataset(const data_dataset *ds)
{
    ck_assert_int_eq(ds->n, 3);
    ck_assert_int_eq(ds->c, 1);
    ck_assert_int_eq(ds->h, 2);
    ck_assert_int_eq(ds->w, 3);
    ck_assert_int_eq(ds->n_classes, 10);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(ds->labels[i], SMALL_LABELS[i]);
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 3; x++)
                ck_assert_int_eq(ds->images[i * 6 + y * 3 + x], small_pixel(i, y, x));
    }
}

/* The load failed with `status`, its message names `file` and says `detail`, and the
 * dataset was left empty. */
static void expect_error(ag_status st, ag_status status, const data_dataset *ds,
                         const char *file, const char *detail)
{
    const char *msg = ag_last_error();
    ck_assert_msg(st == status, "status %s, expected %s; message: %s", ag_status_name(st),
                  ag_status_name(status), msg);
    ck_assert_msg(strstr(msg, file) != NULL, "message does not name %s: %s", file, msg);
    ck_assert_msg(strstr(msg, detail) != NULL, "message does not say '%s': %s", detail, msg);
    if (ds) {
        ck_assert_ptr_null(ds->images);
        ck_assert_ptr_null(ds->labels);
        ck_assert_int_eq(ds->n, 0);
    }
}

/* Loads `images` bytes (written plain as `name`) with the small labels; expects failure. */
static void expect_images_error(const uint8_t *bytes, size_t len, const char *detail)
{
    const char *img = write_file("bad-images", bytes, len);
    char img_copy[512];
    snprintf(img_copy, sizeof img_copy, "%s", img);
    const char *lab = write_labels("labels", SMALL_LABELS, 3, false);
    data_dataset ds;
    ag_status st = data_idx_load(img_copy, lab, &ds);
    expect_error(st, AG_ERR_FORMAT, &ds, img_copy, detail);
    data_dataset_deinit(&ds);
}

/* ---- IDX: good files --------------------------------------------------------------- */

START_TEST(idx_plain_files_load_as_written)
{
    const char *img = write_small_images("img", false);
    const char *lab = write_labels("lab", SMALL_LABELS, 3, false);
    data_dataset ds;
    ck_assert_msg(data_idx_load(img, lab, &ds) == AG_OK, "%s", ag_last_error());
    check_small_dataset(&ds);
    ck_assert_str_eq(ds.source, img);
    data_dataset_deinit(&ds);
    ck_assert_ptr_null(ds.images);
    ck_assert_int_eq(ds.n, 0);
}
END_TEST

START_TEST(idx_gzip_files_load_as_written)
{
    const char *img = write_small_images("img.gz", true);
    const char *lab = write_labels("lab.gz", SMALL_LABELS, 3, true);
    data_dataset ds;
    ck_assert_msg(data_idx_load(img, lab, &ds) == AG_OK, "%s", ag_last_error());
    check_small_dataset(&ds);
    data_dataset_deinit(&ds);
}
END_TEST

START_TEST(idx_gzip_is_detected_by_magic_not_by_name)
{
    const char *img = write_small_images("plain-named.gz", false);
    const char *lab = write_labels("gzip-named-plain", SMALL_LABELS, 3, true);
    data_dataset ds;
    ck_assert_msg(data_idx_load(img, lab, &ds) == AG_OK, "%s", ag_last_error());
    check_small_dataset(&ds);
    data_dataset_deinit(&ds);
}
END_TEST

START_TEST(idx_gzip_payload_larger_than_first_buffer_loads)
{
    /* 3000 zero images compress ~1000:1, so the reader's buffer has to grow. */
    enum { N = 3000 };
    uint8_t *px = calloc((size_t)N * 784, 1);
    px[(size_t)N * 784 - 1] = 7; /* the very last byte must arrive too */
    size_t len;
    uint8_t *b = idx_bytes(0x803, 3, (const uint32_t[]){N, 28, 28}, px, (size_t)N * 784, &len);
    const char *img = write_gz("zeros.gz", b, len);
    uint8_t *labels = calloc(N, 1);
    const char *lab = write_labels("zeros-labels", labels, N, false);
    data_dataset ds;
    ck_assert_msg(data_idx_load(img, lab, &ds) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(ds.n, N);
    ck_assert_int_eq(ds.images[(size_t)N * 784 - 1], 7);
    ck_assert_int_eq(ds.images[0], 0);
    data_dataset_deinit(&ds);
    free(px);
    free(b);
    free(labels);
}
END_TEST

START_TEST(idx_labels_above_nine_load_when_classes_are_contiguous)
{
    const uint8_t labels[14] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 11};
    uint8_t px[14] = {0};
    size_t len;
    uint8_t *b = idx_bytes(0x803, 3, (const uint32_t[]){14, 1, 1}, px, 14, &len);
    const char *img = write_file("img14", b, len);
    const char *lab = write_labels("lab14", labels, 14, false);
    data_dataset ds;
    ck_assert_msg(data_idx_load(img, lab, &ds) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(ds.n_classes, 13);
    ck_assert_int_eq(ds.labels[12], 12);
    data_dataset_deinit(&ds);
    free(b);
}
END_TEST

/* ---- IDX: broken files ---------------------------------------------------------- */

START_TEST(idx_wrong_magic_is_refused)
{
    size_t len;
    uint8_t px[6] = {0};
    uint8_t *b = idx_bytes(0x12345678, 3, (const uint32_t[]){1, 2, 3}, px, 6, &len);
    expect_images_error(b, len, "not an IDX file: magic 0x12345678");
    free(b);
}
END_TEST

START_TEST(idx_wrong_dimension_count_is_refused)
{
    size_t len;
    uint8_t px[6] = {0};
    uint8_t *b = idx_bytes(0x802, 2, (const uint32_t[]){1, 6}, px, 6, &len);
    expect_images_error(b, len, "has 2 dimensions");
    free(b);
}
END_TEST

START_TEST(idx_labels_file_given_as_images_is_named_as_such)
{
    const char *lab = write_labels("labels-as-images", SMALL_LABELS, 3, false);
    char lab_copy[512];
    snprintf(lab_copy, sizeof lab_copy, "%s", lab);
    const char *lab2 = write_labels("labels", SMALL_LABELS, 3, false);
    data_dataset ds;
    expect_error(data_idx_load(lab_copy, lab2, &ds), AG_ERR_FORMAT, &ds, lab_copy,
                 "is this a labels file?");
}
END_TEST

START_TEST(idx_non_byte_element_type_is_refused)
{
    size_t len;
    uint8_t px[24] = {0};
    uint8_t *b = idx_bytes(0xD03, 3, (const uint32_t[]){1, 2, 3}, px, 24, &len);
    expect_images_error(b, len, "element type 0x0d is not supported");
    free(b);
}
END_TEST

START_TEST(idx_overflowing_sizes_are_refused_before_allocating)
{
    size_t len;
    uint8_t *b = idx_bytes(0x803, 3, (const uint32_t[]){0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu},
                           NULL, 0, &len);
    expect_images_error(b, len,
                        "header says 4294967295 images of 4294967295x4294967295: "
                        "the size overflows");
    free(b);
}
END_TEST

START_TEST(idx_sizes_beyond_the_limit_are_refused_before_allocating)
{
    size_t len;
    uint8_t *b = idx_bytes(0x803, 3, (const uint32_t[]){0x80000000u, 256, 256}, NULL, 0, &len);
    expect_images_error(b, len, "byte limit");
    free(b);
}
END_TEST

START_TEST(idx_zero_images_are_refused)
{
    size_t len;
    uint8_t *b = idx_bytes(0x803, 3, (const uint32_t[]){0, 28, 28}, NULL, 0, &len);
    expect_images_error(b, len, "header says 0 images of 28x28: an empty dataset");
    free(b);
}
END_TEST

START_TEST(idx_truncated_plain_payload_says_declared_and_held_sizes)
{
    uint8_t px[1000] = {0};
    size_t len;
    uint8_t *b = idx_bytes(0x803, 3, (const uint32_t[]){60000, 28, 28}, px, 1000, &len);
    expect_images_error(b, len,
                        "truncated: header says 60000 images of 28x28 (47040000 "
                        "bytes), file holds 1000 bytes after its 16-byte header");
    free(b);
}
END_TEST

START_TEST(idx_truncated_header_is_refused)
{
    const uint8_t b[7] = {0, 0, 8, 3, 0, 0, 0};
    expect_images_error(b, 3, "truncated: an IDX header needs at least 4 bytes, file holds 3");
    expect_images_error(b, 7, "truncated: its IDX header needs 16 bytes, file holds 7");
}
END_TEST

START_TEST(idx_trailing_bytes_are_refused)
{
    uint8_t px[7] = {0};
    size_t len;
    uint8_t *b = idx_bytes(0x803, 3, (const uint32_t[]){1, 2, 3}, px, 7, &len);
    expect_images_error(b, len, "header says 1 images of 2x3 (6 bytes), but the file holds 7");
    free(b);
}
END_TEST

START_TEST(idx_truncated_gzip_stream_is_refused)
{
    /* Random pixels do not compress: cutting the .gz in half cuts the payload. */
    enum { N = 20 };
    uint8_t px[N * 784];
    ag_rng rng;
    ag_rng_seed(&rng, 5, 0);
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)ag_rng_u32(&rng);
    size_t len, gz_len;
    uint8_t *b = idx_bytes(0x803, 3, (const uint32_t[]){N, 28, 28}, px, sizeof px, &len);
    uint8_t *gz = read_all(write_gz("full.gz", b, len), &gz_len);
    const char *img = write_file("cut.gz", gz, gz_len / 2);
    char img_copy[512];
    snprintf(img_copy, sizeof img_copy, "%s", img);
    uint8_t labels[N] = {0};
    const char *lab = write_labels("labels", labels, N, false);
    data_dataset ds;
    expect_error(data_idx_load(img_copy, lab, &ds), AG_ERR_FORMAT, &ds, img_copy,
                 "truncated gzip stream: header says 20 images of 28x28 (15680 bytes)");
    free(b);
    free(gz);
}
END_TEST

START_TEST(idx_gzip_stream_shorter_than_its_header_is_refused)
{
    /* A complete gzip stream whose header promises 10000 random images and delivers 10:
     * plausible for the file size only by deflate's ratio, so the reader must grow
     * and stop at the end of the data. */
    uint8_t px[10 * 784];
    ag_rng rng;
    ag_rng_seed(&rng, 6, 0);
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)ag_rng_u32(&rng);
    size_t len;
    uint8_t *b = idx_bytes(0x803, 3, (const uint32_t[]){10000, 28, 28}, px, sizeof px, &len);
    const char *img = write_gz("short.gz", b, len);
    char img_copy[512];
    snprintf(img_copy, sizeof img_copy, "%s", img);
    const char *lab = write_labels("labels", SMALL_LABELS, 3, false);
    data_dataset ds;
    expect_error(data_idx_load(img_copy, lab, &ds), AG_ERR_FORMAT, &ds, img_copy,
                 "truncated: header says 10000 images of 28x28 (7840000 bytes), file holds "
                 "7840 bytes after its 16-byte header");
    free(b);
}
END_TEST

START_TEST(idx_gzip_too_small_for_its_header_is_refused_before_reading)
{
    size_t len;
    uint8_t px[4] = {0};
    uint8_t *b = idx_bytes(0x803, 3, (const uint32_t[]){1000000, 28, 28}, px, 4, &len);
    const char *img = write_gz("tiny.gz", b, len);
    char img_copy[512];
    snprintf(img_copy, sizeof img_copy, "%s", img);
    const char *lab = write_labels("labels", SMALL_LABELS, 3, false);
    data_dataset ds;
    expect_error(data_idx_load(img_copy, lab, &ds), AG_ERR_FORMAT, &ds, img_copy,
                 "more than a gzip file of");
    free(b);
}
END_TEST

START_TEST(idx_gzip_longer_than_its_header_is_refused)
{
    uint8_t px[7] = {0};
    size_t len;
    uint8_t *b = idx_bytes(0x803, 3, (const uint32_t[]){1, 2, 3}, px, 7, &len);
    const char *img = write_gz("long.gz", b, len);
    char img_copy[512];
    snprintf(img_copy, sizeof img_copy, "%s", img);
    const char *lab = write_labels("labels", SMALL_LABELS, 1, false);
    data_dataset ds;
    expect_error(data_idx_load(img_copy, lab, &ds), AG_ERR_FORMAT, &ds, img_copy,
                 "longer than the 22 bytes its header declares");
    free(b);
}
END_TEST

START_TEST(idx_label_count_must_match_image_count)
{
    const char *img = write_small_images("img", false);
    const uint8_t labels[4] = {1, 2, 3, 4};
    const char *lab = write_labels("four-labels", labels, 4, false);
    data_dataset ds;
    expect_error(data_idx_load(img, lab, &ds), AG_ERR_FORMAT, &ds, "four-labels",
                 "holds 4 labels but");
    ck_assert_msg(strstr(ag_last_error(), "holds 3 images"), "%s", ag_last_error());
}
END_TEST

START_TEST(idx_stray_large_label_is_out_of_range)
{
    const char *img = write_small_images("img", false);
    const uint8_t labels[3] = {0, 200, 3};
    const char *lab = write_labels("labels-200", labels, 3, false);
    data_dataset ds;
    expect_error(data_idx_load(img, lab, &ds), AG_ERR_FORMAT, &ds, "labels-200",
                 "label 200 at index 1 is out of range");
}
END_TEST

START_TEST(idx_label_with_a_missing_class_below_it_is_out_of_range)
{
    const uint8_t labels[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12}; /* no class 11 */
    uint8_t px[12] = {0};
    size_t len;
    uint8_t *b = idx_bytes(0x803, 3, (const uint32_t[]){12, 1, 1}, px, 12, &len);
    const char *img = write_file("img12", b, len);
    const char *lab = write_labels("lab12", labels, 12, false);
    data_dataset ds;
    expect_error(data_idx_load(img, lab, &ds), AG_ERR_FORMAT, &ds, "lab12",
                 "class 11 never occurs");
    free(b);
}
END_TEST

START_TEST(idx_missing_file_is_an_io_error_naming_it)
{
    const char *lab = write_labels("labels", SMALL_LABELS, 3, false);
    data_dataset ds;
    expect_error(data_idx_load(tmp_path("no-such-images"), lab, &ds), AG_ERR_IO, &ds,
                 "no-such-images", "cannot open");
    const char *img = write_small_images("img", false);
    expect_error(data_idx_load(img, tmp_path("no-such-labels"), &ds), AG_ERR_IO, &ds,
                 "no-such-labels", "cannot open");
}
END_TEST

START_TEST(idx_directory_is_not_a_file)
{
    const char *lab = write_labels("labels", SMALL_LABELS, 3, false);
    data_dataset ds;
    expect_error(data_idx_load(tmp_dir, lab, &ds), AG_ERR_IO, &ds, tmp_dir,
                 "not a regular file");
}
END_TEST

/* ---- CIFAR-10 ------------------------------------------------------------------------ */

enum { REC = 3073 };

/* Records whose pixel (ch, y, x) of record r is (r * 7 + ch * 50 + y * 3 + x) & 255. */
static uint8_t cifar_pixel(int r, int ch, int y, int x)
{
    return (uint8_t)((r * 7 + ch * 50 + y * 3 + x) & 255);
}

static const char *write_cifar(const char *name, int first, int n, const uint8_t *labels)
{
    uint8_t *b = malloc((size_t)n * REC);
    for (int r = 0; r < n; r++) {
        uint8_t *rec = b + (size_t)r * REC;
        rec[0] = labels[r];
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    rec[1 + ch * 1024 + y * 32 + x] = cifar_pixel(first + r, ch, y, x);
    }
    const char *path = write_file(name, b, (size_t)n * REC);
    free(b);
    return path;
}

START_TEST(cifar_batches_concatenate_in_the_order_given)
{
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s",
             write_cifar("data_batch_1.bin", 0, 2, (const uint8_t[]){6, 9}));
    snprintf(p2, sizeof p2, "%s", write_cifar("data_batch_2.bin", 2, 1, (const uint8_t[]){3}));
    const char *paths[2] = {p1, p2};
    data_dataset ds;
    ck_assert_msg(data_cifar10_load(paths, 2, &ds) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(ds.n, 3);
    ck_assert_int_eq(ds.c, 3);
    ck_assert_int_eq(ds.h, 32);
    ck_assert_int_eq(ds.w, 32);
    ck_assert_int_eq(ds.n_classes, 10);
    ck_assert_int_eq(ds.labels[0], 6);
    ck_assert_int_eq(ds.labels[1], 9);
    ck_assert_int_eq(ds.labels[2], 3);
    for (int r = 0; r < 3; r++)
        for (int ch = 0; ch < 3; ch++)
            for (int y = 0; y < 32; y += 5)
                for (int x = 0; x < 32; x += 3)
                    ck_assert_int_eq(ds.images[((r * 3 + ch) * 32 + y) * 32 + x],
                                     cifar_pixel(r, ch, y, x));
    ck_assert_msg(strstr(ds.source, "data_batch_1.bin (+1 more)"), "%s", ds.source);
    data_dataset_deinit(&ds);
}
END_TEST

START_TEST(cifar_size_must_be_whole_records)
{
    uint8_t b[REC + 5] = {0};
    const char *p = write_file("odd.bin", b, sizeof b);
    const char *paths[1] = {p};
    data_dataset ds;
    expect_error(data_cifar10_load(paths, 1, &ds), AG_ERR_FORMAT, &ds, "odd.bin",
                 "3078 bytes is not a whole number of CIFAR-10 records (3073 bytes each");
    p = write_file("empty.bin", b, 0);
    paths[0] = p;
    expect_error(data_cifar10_load(paths, 1, &ds), AG_ERR_FORMAT, &ds, "empty.bin",
                 "0 bytes is not a whole number");
}
END_TEST

START_TEST(cifar_label_above_nine_is_refused)
{
    const char *p = write_cifar("bad_label.bin", 0, 2, (const uint8_t[]){1, 10});
    const char *paths[1] = {p};
    data_dataset ds;
    expect_error(data_cifar10_load(paths, 1, &ds), AG_ERR_FORMAT, &ds, "bad_label.bin",
                 "record 1 has label 10");
}
END_TEST

START_TEST(cifar_missing_file_is_an_io_error_naming_it)
{
    char p1[512];
    snprintf(p1, sizeof p1, "%s", write_cifar("ok.bin", 0, 1, (const uint8_t[]){1}));
    const char *paths[2] = {p1, tmp_path("missing.bin")};
    data_dataset ds;
    expect_error(data_cifar10_load(paths, 2, &ds), AG_ERR_IO, &ds, "missing.bin",
                 "cannot open");
    ck_assert_int_eq(data_cifar10_load(paths, 0, &ds), AG_ERR_ARG);
}
END_TEST

/* ---- HDF5 ---------------------------------------------------------------------------- */

/* Creates dataset `name` (intermediate groups too) of `type` and shape dims[rank];
 * data NULL leaves it unwritten. chunk > 0 makes it chunked by `chunk` rows. */
static void h5_put(hid_t file, const char *name, hid_t type, int rank, const hsize_t *dims,
                   const void *data, hsize_t chunk)
{
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    ck_assert_int_ge(H5Pset_create_intermediate_group(lcpl, 1), 0);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunk > 0) {
        hsize_t cdims[4];
        for (int d = 0; d < rank; d++)
            cdims[d] = d == 0 ? chunk : dims[d];
        ck_assert_int_ge(H5Pset_chunk(dcpl, rank, cdims), 0);
    }
    hid_t space = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims, NULL);
    ck_assert_int_ge(space, 0);
    hid_t d = H5Dcreate2(file, name, type, space, lcpl, dcpl, H5P_DEFAULT);
    ck_assert_int_ge(d, 0);
    if (data)
        ck_assert_int_ge(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
    H5Dclose(d);
    H5Sclose(space);
    H5Pclose(dcpl);
    H5Pclose(lcpl);
}

static void h5_put_attr(hid_t file, const char *dset, const char *name, int64_t value)
{
    hid_t d = H5Dopen2(file, dset, H5P_DEFAULT);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(d, name, H5T_NATIVE_INT64, space, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(H5Awrite(a, H5T_NATIVE_INT64, &value), 0);
    H5Aclose(a);
    H5Sclose(space);
    H5Dclose(d);
}

static hid_t h5_new(const char *name)
{
    hid_t f = H5Fcreate(tmp_path(name), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    return f;
}

/* A file with images [3, 2, 5] uint8 (pixel = index) named "images" and labels
 * "labels" [3] of `label_type` holding `labels` (given as that type's bytes). */
static const char *h5_small(const char *name, hid_t label_type, const void *labels)
{
    uint8_t px[30];
    for (int i = 0; i < 30; i++)
        px[i] = (uint8_t)i;
    hid_t f = h5_new(name);
    h5_put(f, "images", H5T_NATIVE_UINT8, 3, (const hsize_t[]){3, 2, 5}, px, 0);
    h5_put(f, "labels", label_type, 1, (const hsize_t[]){3}, labels, 0);
    H5Fclose(f);
    return tmp_path(name);
}

START_TEST(h5_nhw_images_load_with_one_channel)
{
    const char *p = h5_small("nhw.h5", H5T_NATIVE_INT64, (const int64_t[]){2, 0, 9});
    data_dataset ds;
    ck_assert_msg(data_h5_load(p, "images", "labels", &ds) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(ds.n, 3);
    ck_assert_int_eq(ds.c, 1);
    ck_assert_int_eq(ds.h, 2);
    ck_assert_int_eq(ds.w, 5);
    ck_assert_int_eq(ds.n_classes, 10);
    for (int i = 0; i < 30; i++)
        ck_assert_int_eq(ds.images[i], i);
    ck_assert_int_eq(ds.labels[0], 2);
    ck_assert_int_eq(ds.labels[2], 9);
    ck_assert_str_eq(ds.source, p);
    data_dataset_deinit(&ds);
}
END_TEST

START_TEST(h5_nchw_images_in_groups_load)
{
    uint8_t px[2 * 3 * 4 * 2];
    for (int i = 0; i < 48; i++)
        px[i] = (uint8_t)(255 - i);
    hid_t f = h5_new("nchw.h5");
    h5_put(f, "train/x", H5T_NATIVE_UINT8, 4, (const hsize_t[]){2, 3, 4, 2}, px, 1);
    h5_put(f, "train/y", H5T_NATIVE_UINT16, 1, (const hsize_t[]){2}, (const uint16_t[]){4, 1},
           0);
    H5Fclose(f);
    data_dataset ds;
    ck_assert_msg(data_h5_load(tmp_path("nchw.h5"), "train/x", "train/y", &ds) == AG_OK, "%s",
                  ag_last_error());
    ck_assert_int_eq(ds.n, 2);
    ck_assert_int_eq(ds.c, 3);
    ck_assert_int_eq(ds.h, 4);
    ck_assert_int_eq(ds.w, 2);
    ck_assert_int_eq(ds.images[47], 255 - 47);
    ck_assert_int_eq(ds.labels[0], 4);
    ck_assert_int_eq(ds.labels[1], 1);
    data_dataset_deinit(&ds);
}
END_TEST

START_TEST(h5_labels_of_any_integer_type_convert_to_int32)
{
    struct {
        hid_t type;
        const void *labels;
    } cases[] = {
        {H5T_NATIVE_INT8, (const int8_t[]){7, 0, 3}},
        {H5T_NATIVE_UINT8, (const uint8_t[]){7, 0, 3}},
        {H5T_NATIVE_INT32, (const int32_t[]){7, 0, 3}},
        {H5T_NATIVE_UINT32, (const uint32_t[]){7, 0, 3}},
        {H5T_NATIVE_UINT64, (const uint64_t[]){7, 0, 3}},
        {H5T_STD_I16BE, (const int16_t[]){7, 0, 3}}, /* converted from native on write */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[32];
        snprintf(name, sizeof name, "type%zu.h5", k);
        hid_t f = h5_new(name);
        uint8_t px[3] = {1, 2, 3};
        h5_put(f, "images", H5T_NATIVE_UINT8, 3, (const hsize_t[]){3, 1, 1}, px, 0);
        if (k == 5) { /* big-endian on disk, written from native int16 */
            hid_t space = H5Screate_simple(1, (const hsize_t[]){3}, NULL);
            hid_t d = H5Dcreate2(f, "labels", H5T_STD_I16BE, space, H5P_DEFAULT, H5P_DEFAULT,
                                 H5P_DEFAULT);
            ck_assert_int_ge(
                H5Dwrite(d, H5T_NATIVE_INT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, cases[k].labels),
                0);
            H5Dclose(d);
            H5Sclose(space);
        } else {
            h5_put(f, "labels", cases[k].type, 1, (const hsize_t[]){3}, cases[k].labels, 0);
        }
        H5Fclose(f);
        data_dataset ds;
        ck_assert_msg(data_h5_load(tmp_path(name), "images", "labels", &ds) == AG_OK,
                      "case %zu: %s", k, ag_last_error());
        ck_assert_int_eq(ds.labels[0], 7);
        ck_assert_int_eq(ds.labels[1], 0);
        ck_assert_int_eq(ds.labels[2], 3);
        data_dataset_deinit(&ds);
    }
}
END_TEST

START_TEST(h5_n_classes_attribute_sets_and_bounds_the_classes)
{
    const char *p = h5_small("attr.h5", H5T_NATIVE_INT32, (const int32_t[]){0, 1, 2});
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    h5_put_attr(f, "labels", "n_classes", 3);
    H5Fclose(f);
    data_dataset ds;
    ck_assert_msg(data_h5_load(p, "images", "labels", &ds) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(ds.n_classes, 3);
    data_dataset_deinit(&ds);

    p = h5_small("attr-low.h5", H5T_NATIVE_INT32, (const int32_t[]){0, 5, 2});
    f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    h5_put_attr(f, "labels", "n_classes", 3);
    H5Fclose(f);
    expect_error(data_h5_load(p, "images", "labels", &ds), AG_ERR_FORMAT, &ds, "attr-low.h5",
                 "label 5 at index 1 is outside [0, 3)");
}
END_TEST

START_TEST(h5_missing_dataset_names_file_and_dataset)
{
    const char *p = h5_small("missing.h5", H5T_NATIVE_INT64, (const int64_t[]){0, 0, 0});
    data_dataset ds;
    expect_error(data_h5_load(p, "imgs", "labels", &ds), AG_ERR_FORMAT, &ds, "missing.h5",
                 "no dataset 'imgs' (the images)");
    expect_error(data_h5_load(p, "images", "no/such/labels", &ds), AG_ERR_FORMAT, &ds,
                 "missing.h5", "no dataset 'no/such/labels' (the labels)");
}
END_TEST

START_TEST(h5_group_is_not_a_dataset)
{
    hid_t f = h5_new("group.h5");
    h5_put(f, "g/labels", H5T_NATIVE_INT32, 1, (const hsize_t[]){1}, (const int32_t[]){0}, 0);
    H5Fclose(f);
    data_dataset ds;
    expect_error(data_h5_load(tmp_path("group.h5"), "g", "g/labels", &ds), AG_ERR_FORMAT, &ds,
                 "group.h5", "'g' (the images) is not a dataset");
}
END_TEST

START_TEST(h5_images_must_be_uint8)
{
    hid_t f = h5_new("float.h5");
    float px[6] = {0};
    h5_put(f, "images", H5T_NATIVE_FLOAT, 3, (const hsize_t[]){1, 2, 3}, px, 0);
    h5_put(f, "labels", H5T_NATIVE_INT32, 1, (const hsize_t[]){1}, (const int32_t[]){0}, 0);
    H5Fclose(f);
    data_dataset ds;
    expect_error(data_h5_load(tmp_path("float.h5"), "images", "labels", &ds), AG_ERR_FORMAT,
                 &ds, "float.h5", "images 'images' are float32, expected uint8");
}
END_TEST

START_TEST(h5_images_must_have_rank_three_or_four)
{
    hid_t f = h5_new("rank2.h5");
    uint8_t px[30] = {0};
    h5_put(f, "images", H5T_NATIVE_UINT8, 2, (const hsize_t[]){3, 10}, px, 0);
    h5_put(f, "scalar", H5T_NATIVE_UINT8, 0, NULL, px, 0);
    h5_put(f, "labels", H5T_NATIVE_INT32, 1, (const hsize_t[]){3}, (const int32_t[]){0, 0, 0},
           0);
    H5Fclose(f);
    data_dataset ds;
    expect_error(data_h5_load(tmp_path("rank2.h5"), "images", "labels", &ds), AG_ERR_FORMAT,
                 &ds, "rank2.h5", "have shape [3, 10], expected [N, H, W] or [N, C, H, W]");
    expect_error(data_h5_load(tmp_path("rank2.h5"), "scalar", "labels", &ds), AG_ERR_FORMAT,
                 &ds, "rank2.h5", "have shape [], expected");
}
END_TEST

START_TEST(h5_empty_images_are_refused)
{
    hid_t f = h5_new("empty.h5");
    h5_put(f, "images", H5T_NATIVE_UINT8, 3, (const hsize_t[]){0, 28, 28}, NULL, 0);
    h5_put(f, "labels", H5T_NATIVE_INT32, 1, (const hsize_t[]){0}, NULL, 0);
    H5Fclose(f);
    data_dataset ds;
    expect_error(data_h5_load(tmp_path("empty.h5"), "images", "labels", &ds), AG_ERR_FORMAT,
                 &ds, "empty.h5", "have shape [0, 28, 28]: empty");
}
END_TEST

START_TEST(h5_unwritten_huge_images_are_refused_before_allocating)
{
    hid_t f = h5_new("huge.h5");
    h5_put(f, "images", H5T_NATIVE_UINT8, 3, (const hsize_t[]){10000000, 28, 28}, NULL, 1000);
    h5_put(f, "labels", H5T_NATIVE_INT32, 1, (const hsize_t[]){10000000}, NULL, 1000);
    H5Fclose(f);
    data_dataset ds;
    expect_error(data_h5_load(tmp_path("huge.h5"), "images", "labels", &ds), AG_ERR_FORMAT, &ds,
                 "huge.h5", "declares 7840000000 bytes but the file stores only 0");
}
END_TEST

START_TEST(h5_labels_must_be_integers_of_rank_one_and_count_n)
{
    uint8_t px[30] = {0};
    hid_t f = h5_new("labels.h5");
    h5_put(f, "images", H5T_NATIVE_UINT8, 3, (const hsize_t[]){3, 2, 5}, px, 0);
    h5_put(f, "float", H5T_NATIVE_DOUBLE, 1, (const hsize_t[]){3}, (const double[]){0, 1, 2},
           0);
    h5_put(f, "col", H5T_NATIVE_INT32, 2, (const hsize_t[]){3, 1}, (const int32_t[]){0, 1, 2},
           0);
    h5_put(f, "four", H5T_NATIVE_INT32, 1, (const hsize_t[]){4}, (const int32_t[]){0, 1, 2, 3},
           0);
    H5Fclose(f);
    const char *p = tmp_path("labels.h5");
    data_dataset ds;
    expect_error(data_h5_load(p, "images", "float", &ds), AG_ERR_FORMAT, &ds, "labels.h5",
                 "labels 'float' are float64, expected an integer type");
    expect_error(data_h5_load(p, "images", "col", &ds), AG_ERR_FORMAT, &ds, "labels.h5",
                 "labels 'col' have shape [3, 1], expected [N]");
    expect_error(data_h5_load(p, "images", "four", &ds), AG_ERR_FORMAT, &ds, "labels.h5",
                 "labels 'four' have shape [4] but images 'images' hold 3 images");
}
END_TEST

START_TEST(h5_labels_outside_int32_or_negative_are_refused)
{
    const char *p = h5_small("neg.h5", H5T_NATIVE_INT64, (const int64_t[]){0, -1, 2});
    data_dataset ds;
    expect_error(data_h5_load(p, "images", "labels", &ds), AG_ERR_FORMAT, &ds, "neg.h5",
                 "label -1 at index 1 is outside [0, 2147483647)");
    p = h5_small("big.h5", H5T_NATIVE_INT64, (const int64_t[]){0, 1, (int64_t)1 << 40});
    expect_error(data_h5_load(p, "images", "labels", &ds), AG_ERR_FORMAT, &ds, "big.h5",
                 "label 1099511627776 at index 2 is outside");
    p = h5_small("u64.h5", H5T_NATIVE_UINT64, (const uint64_t[]){UINT64_MAX, 1, 2});
    expect_error(data_h5_load(p, "images", "labels", &ds), AG_ERR_FORMAT, &ds, "u64.h5",
                 "at index 0 is outside");
    p = h5_small("stray.h5", H5T_NATIVE_INT32, (const int32_t[]){0, 1000, 2});
    expect_error(data_h5_load(p, "images", "labels", &ds), AG_ERR_FORMAT, &ds, "stray.h5",
                 "label 1000 at index 1 is out of range");
}
END_TEST

START_TEST(h5_missing_or_foreign_file_is_refused)
{
    data_dataset ds;
    expect_error(data_h5_load(tmp_path("nope.h5"), "images", "labels", &ds), AG_ERR_IO, &ds,
                 "nope.h5", "cannot open");
    const char *p = write_file("text.h5", "hello", 5);
    expect_error(data_h5_load(p, "images", "labels", &ds), AG_ERR_FORMAT, &ds, "text.h5",
                 "not an HDF5 file");
}
END_TEST

START_TEST(h5_load_restores_the_callers_error_printing)
{
    H5E_auto2_t before = NULL;
    void *before_data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &before, &before_data);
    ck_assert(before != NULL); /* HDF5's default printer */
    data_dataset ds;
    const char *p = h5_small("restore.h5", H5T_NATIVE_INT32, (const int32_t[]){0, 1, 2});
    ck_assert_int_ne(data_h5_load(p, "absent", "labels", &ds), AG_OK);
    H5E_auto2_t after = NULL;
    void *after_data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &after, &after_data);
    ck_assert(after == before);
    ck_assert_ptr_eq(after_data, before_data);
}
END_TEST

/* ---- Loader ----------------------------------------------------------------------------- */

/* A heap dataset of n images (c, h, w) with pixels in [1, 255] from `seed` and label i
 * for image i (so a batch's labels say which images it holds). */
static data_dataset make_ds(int64_t n, int32_t c, int32_t h, int32_t w, uint64_t seed)
{
    data_dataset ds = {.n = n, .c = c, .h = h, .w = w, .n_classes = (int32_t)n};
    ds.images = malloc((size_t)(n * c * h * w));
    ds.labels = malloc((size_t)n * sizeof *ds.labels);
    ag_rng rng;
    ag_rng_seed(&rng, seed, 1);
    for (int64_t i = 0; i < n * c * h * w; i++)
        ds.images[i] = (uint8_t)(1 + ag_rng_below(&rng, 255));
    for (int64_t i = 0; i < n; i++)
        ds.labels[i] = (int32_t)i;
    return ds;
}

static float norm(uint8_t v, float mean, float std)
{
    return ((float)v / 255.0f - mean) / std;
}

/* Every batch of the loader's current epoch, concatenated: images and labels. */
static void run_epoch(const data_loader *ld, float *images, int32_t *labels, int64_t *seen)
{
    const data_dataset *ds = ld->ds;
    int64_t chw = (int64_t)ds->c * ds->h * ds->w;
    *seen = 0;
    for (int64_t b = 0; b < data_loader_num_batches(ld); b++) {
        int32_t count = -1;
        ck_assert_msg(data_loader_batch(ld, b, images + *seen * chw, labels + *seen, &count) ==
                          AG_OK,
                      "%s", ag_last_error());
        ck_assert_int_gt(count, 0);
        *seen += count;
    }
}

START_TEST(loader_batch_count_with_and_without_drop_last)
{
    data_dataset ds = make_ds(10, 1, 2, 2, 1);
    data_loader ld;
    float images[4 * 4];
    int32_t labels[4], count = 0;
    ck_assert_int_eq(data_loader_init(&ld, &ds, 4, false, false, 0, NULL), AG_OK);
    ck_assert_int_eq(data_loader_num_batches(&ld), 3);
    ck_assert_int_eq(data_loader_batch(&ld, 2, images, labels, &count), AG_OK);
    ck_assert_int_eq(count, 2); /* the short last batch */
    ck_assert_int_eq(labels[0], 8);
    ck_assert_int_eq(labels[1], 9);
    data_loader_deinit(&ld);

    ck_assert_int_eq(data_loader_init(&ld, &ds, 4, false, true, 0, NULL), AG_OK);
    ck_assert_int_eq(data_loader_num_batches(&ld), 2);
    ck_assert_int_eq(data_loader_batch(&ld, 2, images, labels, &count), AG_ERR_ARG);
    ck_assert_msg(strstr(ag_last_error(), "batch 2 outside [0, 2)"), "%s", ag_last_error());
    data_loader_deinit(&ld);

    ck_assert_int_eq(data_loader_init(&ld, &ds, 5, false, true, 0, NULL), AG_OK);
    ck_assert_int_eq(data_loader_num_batches(&ld), 2); /* exact: nothing dropped */
    data_loader_deinit(&ld);
    ck_assert_int_eq(data_loader_init(&ld, &ds, 11, true, true, 0, NULL), AG_OK);
    ck_assert_int_eq(data_loader_num_batches(&ld), 0);
    data_loader_deinit(&ld);
    data_dataset_deinit(&ds);
}
END_TEST

START_TEST(loader_without_shuffle_keeps_file_order)
{
    data_dataset ds = make_ds(7, 1, 1, 3, 2);
    data_loader ld;
    float images[7 * 3];
    int32_t labels[7];
    int64_t seen;
    ck_assert_int_eq(data_loader_init(&ld, &ds, 3, false, false, 99, NULL), AG_OK);
    for (int64_t e = 0; e < 2; e++) {
        ck_assert_int_eq(data_loader_epoch_begin(&ld, e), AG_OK);
        run_epoch(&ld, images, labels, &seen);
        ck_assert_int_eq(seen, 7);
        for (int i = 0; i < 7; i++)
            ck_assert_int_eq(labels[i], i);
    }
    data_loader_deinit(&ld);
    data_dataset_deinit(&ds);
}
END_TEST

START_TEST(loader_visits_every_index_once_per_epoch)
{
    enum { N = 103, B = 8 };
    data_dataset ds = make_ds(N, 1, 1, 1, 3);
    static float images[N];
    int32_t labels[N];
    int64_t seen;
    data_loader ld;
    for (int drop = 0; drop < 2; drop++) {
        ck_assert_int_eq(data_loader_init(&ld, &ds, B, true, drop, 7, NULL), AG_OK);
        for (int64_t e = 0; e < 3; e++) {
            ck_assert_int_eq(data_loader_epoch_begin(&ld, e), AG_OK);
            run_epoch(&ld, images, labels, &seen);
            ck_assert_int_eq(seen, drop ? N - N % B : N);
            int hits[N] = {0};
            for (int64_t i = 0; i < seen; i++)
                hits[labels[i]]++;
            for (int i = 0; i < N; i++)
                ck_assert_int_le(hits[i], 1);
            /* each image travels with its label */
            for (int64_t i = 0; i < seen; i++)
                ck_assert_float_eq(images[i], norm(ds.images[labels[i]], 0, 1));
        }
        data_loader_deinit(&ld);
    }
    data_dataset_deinit(&ds);
}
END_TEST

START_TEST(loader_order_depends_on_seed_and_epoch_only)
{
    enum { N = 50 };
    data_dataset ds = make_ds(N, 1, 1, 1, 4);
    static float im[4][N];
    int32_t lab[4][N];
    int64_t seen;
    data_loader a, b;
    ck_assert_int_eq(data_loader_init(&a, &ds, 6, true, false, 1234, NULL), AG_OK);
    ck_assert_int_eq(data_loader_init(&b, &ds, 6, true, false, 1234, NULL), AG_OK);
    run_epoch(&a, im[0], lab[0], &seen);
    run_epoch(&b, im[1], lab[1], &seen);
    ck_assert_mem_eq(lab[0], lab[1], sizeof lab[0]); /* same seed, same epoch */
    bool shuffled = false;
    for (int i = 0; i < N; i++)
        shuffled |= lab[0][i] != i;
    ck_assert(shuffled);

    ck_assert_int_eq(data_loader_epoch_begin(&a, 1), AG_OK);
    run_epoch(&a, im[2], lab[2], &seen);
    ck_assert(memcmp(lab[0], lab[2], sizeof lab[0]) != 0); /* another epoch, another order */

    data_loader c;
    ck_assert_int_eq(data_loader_init(&c, &ds, 6, true, false, 1235, NULL), AG_OK);
    run_epoch(&c, im[3], lab[3], &seen);
    ck_assert(memcmp(lab[0], lab[3], sizeof lab[0]) != 0); /* another seed, another order */

    /* Back to epoch 0 after epoch 1: the same order as the first time. */
    ck_assert_int_eq(data_loader_epoch_begin(&a, 0), AG_OK);
    run_epoch(&a, im[2], lab[2], &seen);
    ck_assert_mem_eq(lab[0], lab[2], sizeof lab[0]);
    data_loader_deinit(&a);
    data_loader_deinit(&b);
    data_loader_deinit(&c);
    data_dataset_deinit(&ds);
}
END_TEST

START_TEST(loader_any_batch_regenerates_alone_with_augmentation)
{
    /* Resume mid-epoch: a fresh loader jumping straight to (epoch 3, batch 5) yields
     * what a loader that walked epochs 0..3 and batches 0..4 yielded. */
    enum { N = 64, B = 8, HW = 36 };
    data_dataset ds = make_ds(N, 1, 6, 6, 5);
    data_transform tf = data_transform_fashion_mnist();
    tf.crop_padding = 2;
    tf.hflip = true;
    data_loader walked, fresh;
    static float x1[B * HW], x2[B * HW];
    int32_t y1[B], y2[B], count;
    ck_assert_int_eq(data_loader_init(&walked, &ds, B, true, false, 77, &tf), AG_OK);
    for (int64_t e = 0; e <= 3; e++) {
        ck_assert_int_eq(data_loader_epoch_begin(&walked, e), AG_OK);
        for (int64_t b = 0; b <= (e == 3 ? 5 : 7); b++)
            ck_assert_int_eq(data_loader_batch(&walked, b, x1, y1, &count), AG_OK);
    }
    ck_assert_int_eq(data_loader_init(&fresh, &ds, B, true, false, 77, &tf), AG_OK);
    ck_assert_int_eq(data_loader_epoch_begin(&fresh, 3), AG_OK);
    ck_assert_int_eq(data_loader_batch(&fresh, 5, x2, y2, &count), AG_OK);
    ck_assert_mem_eq(y1, y2, sizeof y1);
    ck_assert_mem_eq(x1, x2, sizeof x1);

    /* The same batch in another epoch is augmented differently. */
    ck_assert_int_eq(data_loader_epoch_begin(&fresh, 4), AG_OK);
    ck_assert_int_eq(data_loader_batch(&fresh, 5, x2, y2, &count), AG_OK);
    ck_assert(memcmp(x1, x2, sizeof x1) != 0);
    data_loader_deinit(&walked);
    data_loader_deinit(&fresh);
    data_dataset_deinit(&ds);
}
END_TEST

START_TEST(loader_batches_do_not_depend_on_thread_count)
{
    /* Big enough (> 2^20 floats) for the loader to split the batch over threads. */
    enum { N = 48, HW = 3 * 96 * 80 };
    data_dataset ds = make_ds(N, 3, 96, 80, 6);
    data_transform tf = {.mean = {0.4914f, 0.4822f, 0.4465f},
                         .std = {0.2470f, 0.2435f, 0.2616f}};
    tf.crop_padding = 3;
    tf.hflip = true;
    data_loader ld;
    float *x1 = malloc(sizeof(float) * N * HW), *x2 = malloc(sizeof(float) * N * HW);
    int32_t y1[N], y2[N], count;
    ck_assert_int_eq(data_loader_init(&ld, &ds, N, true, false, 8, &tf), AG_OK);
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    ck_assert_int_eq(data_loader_batch(&ld, 0, x1, y1, &count), AG_OK);
#ifdef _OPENMP
    omp_set_num_threads(2);
#endif
    ck_assert_int_eq(data_loader_batch(&ld, 0, x2, y2, &count), AG_OK);
    ck_assert_mem_eq(y1, y2, sizeof y1);
    ck_assert_mem_eq(x1, x2, sizeof(float) * N * HW);
    free(x1);
    free(x2);
    data_loader_deinit(&ld);
    data_dataset_deinit(&ds);
}
END_TEST

START_TEST(loader_normalizes_pixels_like_to_tensor_then_normalize)
{
    /* x = (pixel / 255 - 0.2860) / 0.3530, by hand. */
    data_dataset ds = {.n = 1, .c = 1, .h = 2, .w = 2, .n_classes = 10};
    uint8_t px[4] = {0, 51, 128, 255};
    int32_t lab[1] = {3};
    ds.images = px;
    ds.labels = lab;
    data_transform tf = data_transform_fashion_mnist();
    data_loader ld;
    float x[4];
    int32_t y, count;
    ck_assert_int_eq(data_loader_init(&ld, &ds, 1, false, false, 0, &tf), AG_OK);
    ck_assert_int_eq(data_loader_batch(&ld, 0, x, &y, &count), AG_OK);
    ck_assert_int_eq(count, 1);
    ck_assert_int_eq(y, 3);
    ck_assert_float_eq_tol(x[0], -0.81019830f, 1e-6f);
    ck_assert_float_eq_tol(x[1], -0.24362606f, 1e-6f);
    ck_assert_float_eq_tol(x[2], 0.61178691f, 1e-6f);
    ck_assert_float_eq_tol(x[3], 2.02266289f, 1e-6f);
    data_loader_deinit(&ld);

    /* No transform: pixel / 255. */
    ck_assert_int_eq(data_loader_init(&ld, &ds, 1, false, false, 0, NULL), AG_OK);
    ck_assert_int_eq(data_loader_batch(&ld, 0, x, &y, &count), AG_OK);
    ck_assert_float_eq(x[0], 0.0f);
    ck_assert_float_eq_tol(x[1], 0.2f, 1e-7f);
    ck_assert_float_eq(x[3], 1.0f);
    data_loader_deinit(&ld);
}
END_TEST

START_TEST(loader_normalizes_each_channel_with_its_own_mean_and_std)
{
    data_dataset ds = make_ds(2, 3, 3, 2, 7);
    data_transform tf = {.mean = {0.4914f, 0.4822f, 0.4465f},
                         .std = {0.2470f, 0.2435f, 0.2616f}};
    data_loader ld;
    float x[2 * 18];
    int32_t y[2], count;
    ck_assert_int_eq(data_loader_init(&ld, &ds, 2, false, false, 0, &tf), AG_OK);
    ck_assert_int_eq(data_loader_batch(&ld, 0, x, y, &count), AG_OK);
    for (int i = 0; i < 2; i++)
        for (int ch = 0; ch < 3; ch++)
            for (int k = 0; k < 6; k++) {
                int at = (i * 3 + ch) * 6 + k;
                ck_assert_float_eq(x[at], norm(ds.images[at], tf.mean[ch], tf.std[ch]));
            }
    data_loader_deinit(&ld);
    data_dataset_deinit(&ds);
}
END_TEST

/* Does out (h, w) equal src shifted by (dy, dx), maybe mirrored, with pixel-0 padding? */
static bool is_shift_of(const uint8_t *src, const float *out, int h, int w, int dy, int dx,
                        bool flip, float mean, float std)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int sy = y + dy, sx = (flip ? w - 1 - x : x) + dx;
            uint8_t v = sy >= 0 && sy < h && sx >= 0 && sx < w ? src[sy * w + sx] : 0;
            if (out[y * w + x] != norm(v, mean, std))
                return false;
        }
    return true;
}

/* Runs an augmenting loader over n images (h, w) and counts, for each sample, which
 * shift/flip reproduces it: hits[flip][dy + pad][dx + pad]. Fails if none does. */
static void count_augmentations(int pad, bool hflip, int hits[2][7][7])
{
    enum { N = 400, H = 5, W = 7 };
    data_dataset ds = make_ds(N, 1, H, W, 9);
    data_transform tf = data_transform_fashion_mnist();
    tf.crop_padding = pad;
    tf.hflip = hflip;
    data_loader ld;
    static float x[N * H * W];
    int32_t y[N];
    int64_t seen;
    memset(hits, 0, sizeof(int[2][7][7]));
    ck_assert_int_eq(data_loader_init(&ld, &ds, 32, true, false, 3, &tf), AG_OK);
    run_epoch(&ld, x, y, &seen);
    for (int64_t i = 0; i < seen; i++) {
        const uint8_t *src = ds.images + (int64_t)y[i] * H * W;
        int found = 0;
        for (int f = 0; f < 2; f++)
            for (int dy = -pad; dy <= pad; dy++)
                for (int dx = -pad; dx <= pad; dx++)
                    if (is_shift_of(src, x + i * H * W, H, W, dy, dx, f, tf.mean[0],
                                    tf.std[0])) {
                        hits[f][dy + pad][dx + pad]++;
                        found++;
                    }
        ck_assert_msg(found == 1, "sample %lld matches %d shifts/flips", (long long)i, found);
    }
    data_loader_deinit(&ld);
    data_dataset_deinit(&ds);
}

START_TEST(loader_flip_mirrors_half_of_the_images)
{
    int hits[2][7][7];
    count_augmentations(0, true, hits);
    ck_assert_int_gt(hits[1][0][0], 160); /* flipped, about 200 of 400 */
    ck_assert_int_gt(hits[0][0][0], 160);
}
END_TEST

START_TEST(loader_crop_is_a_shift_with_black_padding)
{
    int hits[2][7][7];
    count_augmentations(2, false, hits);
    for (int dy = 0; dy < 5; dy++)
        for (int dx = 0; dx < 5; dx++) {
            ck_assert_msg(hits[0][dy][dx] > 0, "offset (%d, %d) never drawn", dy - 2, dx - 2);
            ck_assert_int_eq(hits[1][dy][dx], 0);
        }
}
END_TEST

START_TEST(loader_crop_and_flip_combine)
{
    int hits[2][7][7];
    count_augmentations(1, true, hits);
    int flipped = 0, kept = 0;
    for (int dy = 0; dy < 3; dy++)
        for (int dx = 0; dx < 3; dx++) {
            flipped += hits[1][dy][dx];
            kept += hits[0][dy][dx];
            ck_assert_int_gt(hits[1][dy][dx], 0);
        }
    ck_assert_int_eq(flipped + kept, 400);
    ck_assert_int_gt(flipped, 160);
}
END_TEST

START_TEST(loader_refuses_bad_arguments)
{
    data_dataset ds = make_ds(4, 1, 2, 2, 10);
    data_loader ld;
    data_transform tf = data_transform_identity();
    ck_assert_int_eq(data_loader_init(&ld, &ds, 0, false, false, 0, NULL), AG_ERR_ARG);
    ck_assert_msg(strstr(ag_last_error(), "batch_size 0"), "%s", ag_last_error());
    data_loader_deinit(&ld);

    tf.std[0] = 0;
    ck_assert_int_eq(data_loader_init(&ld, &ds, 2, false, false, 0, &tf), AG_ERR_ARG);
    ck_assert_msg(strstr(ag_last_error(), "channel 0 has mean 0, std 0"), "%s",
                  ag_last_error());
    tf = data_transform_identity();
    tf.crop_padding = -1;
    ck_assert_int_eq(data_loader_init(&ld, &ds, 2, false, false, 0, &tf), AG_ERR_ARG);

    data_dataset empty = {0};
    ck_assert_int_eq(data_loader_init(&ld, &empty, 2, false, false, 0, NULL), AG_ERR_ARG);
    data_dataset four = make_ds(2, 4, 1, 1, 11);
    ck_assert_int_eq(data_loader_init(&ld, &four, 2, false, false, 0, NULL),
                     AG_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(ag_last_error(), "4 channels"), "%s", ag_last_error());

    /* A 3-channel dataset with a grayscale transform: std of channels 1, 2 is 0. */
    data_dataset rgb = make_ds(2, 3, 1, 1, 12);
    data_transform gray = {.mean = {0.5f}, .std = {0.5f}};
    ck_assert_int_eq(data_loader_init(&ld, &rgb, 2, false, false, 0, &gray), AG_ERR_ARG);
    ck_assert_msg(strstr(ag_last_error(), "channel 1"), "%s", ag_last_error());

    ck_assert_int_eq(data_loader_init(&ld, &ds, 2, true, false, 0, NULL), AG_OK);
    ck_assert_int_eq(data_loader_epoch_begin(&ld, -1), AG_ERR_ARG);
    float x[8];
    int32_t y[2], count;
    ck_assert_int_eq(data_loader_batch(&ld, -1, x, y, &count), AG_ERR_ARG);
    ck_assert_int_eq(data_loader_batch(&ld, 0, NULL, y, &count), AG_ERR_ARG);
    data_loader_deinit(&ld);
    ck_assert_int_eq(data_loader_batch(&ld, 0, x, y, &count), AG_ERR_STATE);
    data_dataset_deinit(&ds);
    data_dataset_deinit(&four);
    data_dataset_deinit(&rgb);
}
END_TEST

/* ---- Fashion-MNIST (the Debian package dataset-fashion-mnist) ---------------------------- */

START_TEST(fashion_mnist_train_has_60000_images_first_label_9)
{
    data_dataset ds;
    ck_assert_msg(data_fashion_mnist_load(NULL, true, &ds) == AG_OK, "%s", ag_last_error());
    ck_assert_int_eq(ds.n, 60000);
    ck_assert_int_eq(ds.c, 1);
    ck_assert_int_eq(ds.h, 28);
    ck_assert_int_eq(ds.w, 28);
    ck_assert_int_eq(ds.n_classes, 10);
    int per_class[10] = {0};
    for (int64_t i = 0; i < ds.n; i++) {
        ck_assert(ds.labels[i] >= 0 && ds.labels[i] < 10);
        per_class[ds.labels[i]]++;
    }
    for (int k = 0; k < 10; k++)
        ck_assert_int_eq(per_class[k], 6000);
    /* The first labels are 9 (ankle boot), 0, 0, 3; the first image's pixels sum to
     * 76247 (both read with Python's gzip module from the same files). */
    ck_assert_int_eq(ds.labels[0], 9);
    ck_assert_int_eq(ds.labels[1], 0);
    ck_assert_int_eq(ds.labels[3], 3);
    int64_t sum = 0;
    for (int i = 0; i < 784; i++)
        sum += ds.images[i];
    ck_assert_int_eq(sum, 76247);
    /* BENCHMARK.md's normalization: the training set's pixel mean and std. */
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < ds.n * 784; i++) {
        double v = ds.images[i] / 255.0;
        s += v;
        s2 += v * v;
    }
    double mean = s / (double)(ds.n * 784);
    double std = sqrt(s2 / (double)(ds.n * 784) - mean * mean);
    ck_assert_double_eq_tol(mean, DATA_FASHION_MNIST_MEAN, 1e-4);
    ck_assert_double_eq_tol(std, DATA_FASHION_MNIST_STD, 1e-4);
    ck_assert(strstr(ds.source, "train-images-idx3-ubyte"));
    data_dataset_deinit(&ds);
}
END_TEST

START_TEST(fashion_mnist_test_has_10000_images)
{
    data_dataset ds;
    ck_assert_msg(data_fashion_mnist_load(data_default_dir(), false, &ds) == AG_OK, "%s",
                  ag_last_error());
    ck_assert_int_eq(ds.n, 10000);
    ck_assert_int_eq(ds.h, 28);
    ck_assert_int_eq(ds.w, 28);
    ck_assert_int_eq(ds.labels[0], 9);
    ck_assert_int_eq(ds.labels[1], 2);
    for (int64_t i = 0; i < ds.n; i++)
        ck_assert(ds.labels[i] >= 0 && ds.labels[i] < 10);
    data_dataset_deinit(&ds);
}
END_TEST

START_TEST(fashion_mnist_missing_files_say_where_and_how_to_get_them)
{
    data_dataset ds;
    ag_status st = data_fashion_mnist_load(tmp_dir, true, &ds);
    expect_error(st, AG_ERR_IO, &ds, tmp_dir, "train-images-idx3-ubyte.gz");
    ck_assert_msg(strstr(ag_last_error(), "apt-get install dataset-fashion-mnist"), "%s",
                  ag_last_error());
}
END_TEST

START_TEST(fashion_mnist_accepts_uncompressed_files)
{
    write_small_images("t10k-images-idx3-ubyte", false);
    write_labels("t10k-labels-idx1-ubyte.gz", SMALL_LABELS, 3, true);
    data_dataset ds;
    ck_assert_msg(data_fashion_mnist_load(tmp_dir, false, &ds) == AG_OK, "%s", ag_last_error());
    check_small_dataset(&ds);
    data_dataset_deinit(&ds);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("data");

    TCase *idx = tcase_create("idx");
    tcase_add_unchecked_fixture(idx, tmp_setup, tmp_teardown);
    tcase_set_timeout(idx, 60);
    tcase_add_test(idx, idx_plain_files_load_as_written);
    tcase_add_test(idx, idx_gzip_files_load_as_written);
    tcase_add_test(idx, idx_gzip_is_detected_by_magic_not_by_name);
    tcase_add_test(idx, idx_gzip_payload_larger_than_first_buffer_loads);
    tcase_add_test(idx, idx_labels_above_nine_load_when_classes_are_contiguous);
    tcase_add_test(idx, idx_wrong_magic_is_refused);
    tcase_add_test(idx, idx_wrong_dimension_count_is_refused);
    tcase_add_test(idx, idx_labels_file_given_as_images_is_named_as_such);
    tcase_add_test(idx, idx_non_byte_element_type_is_refused);
    tcase_add_test(idx, idx_overflowing_sizes_are_refused_before_allocating);
    tcase_add_test(idx, idx_sizes_beyond_the_limit_are_refused_before_allocating);
    tcase_add_test(idx, idx_zero_images_are_refused);
    tcase_add_test(idx, idx_truncated_plain_payload_says_declared_and_held_sizes);
    tcase_add_test(idx, idx_truncated_header_is_refused);
    tcase_add_test(idx, idx_trailing_bytes_are_refused);
    tcase_add_test(idx, idx_truncated_gzip_stream_is_refused);
    tcase_add_test(idx, idx_gzip_stream_shorter_than_its_header_is_refused);
    tcase_add_test(idx, idx_gzip_too_small_for_its_header_is_refused_before_reading);
    tcase_add_test(idx, idx_gzip_longer_than_its_header_is_refused);
    tcase_add_test(idx, idx_label_count_must_match_image_count);
    tcase_add_test(idx, idx_stray_large_label_is_out_of_range);
    tcase_add_test(idx, idx_label_with_a_missing_class_below_it_is_out_of_range);
    tcase_add_test(idx, idx_missing_file_is_an_io_error_naming_it);
    tcase_add_test(idx, idx_directory_is_not_a_file);
    suite_add_tcase(s, idx);

    TCase *cifar = tcase_create("cifar10");
    tcase_add_unchecked_fixture(cifar, tmp_setup, tmp_teardown);
    tcase_add_test(cifar, cifar_batches_concatenate_in_the_order_given);
    tcase_add_test(cifar, cifar_size_must_be_whole_records);
    tcase_add_test(cifar, cifar_label_above_nine_is_refused);
    tcase_add_test(cifar, cifar_missing_file_is_an_io_error_naming_it);
    suite_add_tcase(s, cifar);

    TCase *h5 = tcase_create("hdf5");
    tcase_add_unchecked_fixture(h5, tmp_setup, tmp_teardown);
    tcase_set_timeout(h5, 60);
    tcase_add_test(h5, h5_nhw_images_load_with_one_channel);
    tcase_add_test(h5, h5_nchw_images_in_groups_load);
    tcase_add_test(h5, h5_labels_of_any_integer_type_convert_to_int32);
    tcase_add_test(h5, h5_n_classes_attribute_sets_and_bounds_the_classes);
    tcase_add_test(h5, h5_missing_dataset_names_file_and_dataset);
    tcase_add_test(h5, h5_group_is_not_a_dataset);
    tcase_add_test(h5, h5_images_must_be_uint8);
    tcase_add_test(h5, h5_images_must_have_rank_three_or_four);
    tcase_add_test(h5, h5_empty_images_are_refused);
    tcase_add_test(h5, h5_unwritten_huge_images_are_refused_before_allocating);
    tcase_add_test(h5, h5_labels_must_be_integers_of_rank_one_and_count_n);
    tcase_add_test(h5, h5_labels_outside_int32_or_negative_are_refused);
    tcase_add_test(h5, h5_missing_or_foreign_file_is_refused);
    tcase_add_test(h5, h5_load_restores_the_callers_error_printing);
    suite_add_tcase(s, h5);

    TCase *loader = tcase_create("loader");
    tcase_set_timeout(loader, 60);
    tcase_add_test(loader, loader_batch_count_with_and_without_drop_last);
    tcase_add_test(loader, loader_without_shuffle_keeps_file_order);
    tcase_add_test(loader, loader_visits_every_index_once_per_epoch);
    tcase_add_test(loader, loader_order_depends_on_seed_and_epoch_only);
    tcase_add_test(loader, loader_any_batch_regenerates_alone_with_augmentation);
    tcase_add_test(loader, loader_batches_do_not_depend_on_thread_count);
    tcase_add_test(loader, loader_normalizes_pixels_like_to_tensor_then_normalize);
    tcase_add_test(loader, loader_normalizes_each_channel_with_its_own_mean_and_std);
    tcase_add_test(loader, loader_flip_mirrors_half_of_the_images);
    tcase_add_test(loader, loader_crop_is_a_shift_with_black_padding);
    tcase_add_test(loader, loader_crop_and_flip_combine);
    tcase_add_test(loader, loader_refuses_bad_arguments);
    suite_add_tcase(s, loader);

    TCase *fashion = tcase_create("fashion_mnist");
    tcase_add_unchecked_fixture(fashion, tmp_setup, tmp_teardown);
    tcase_set_timeout(fashion, 120);
    tcase_add_test(fashion, fashion_mnist_train_has_60000_images_first_label_9);
    tcase_add_test(fashion, fashion_mnist_test_has_10000_images);
    tcase_add_test(fashion, fashion_mnist_missing_files_say_where_and_how_to_get_them);
    tcase_add_test(fashion, fashion_mnist_accepts_uncompressed_files);
    suite_add_tcase(s, fashion);
    return s;
}
