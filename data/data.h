/* data.h — datasets on disk, a seeded batch loader and its transforms.
 *
 * A tour:
 *
 *     data_dataset train;                                   // caller-owned struct
 *     if (data_fashion_mnist_load(NULL, true, &train) != AG_OK)   // NULL: default dir
 *         fprintf(stderr, "cqat: %s\n", ag_last_error());
 *     data_transform tf = data_transform_fashion_mnist();    // mean 0.2860, std 0.3530
 *     data_loader ld;
 *     data_loader_init(&ld, &train, 64, true, false, seed, &tf);
 *     for (int64_t e = 0; e < epochs; e++) {
 *         data_loader_epoch_begin(&ld, e);                  // permutation of epoch e
 *         for (int64_t b = 0; b < data_loader_num_batches(&ld); b++)
 *             data_loader_batch(&ld, b, images, labels, &count);  // (B, C, H, W) floats
 *     }
 *     data_loader_deinit(&ld);
 *     data_dataset_deinit(&train);
 *
 * A dataset keeps its images as uint8 (N, C, H, W) and its labels as int32 (N): the
 * loader turns pixels into normalized floats batch by batch, through a lookup table.
 *
 * Reproducibility: the order of epoch e is a pure function of (seed, e), and the
 * random crop / flip of the sample at position p of epoch e a pure function of
 * (seed, e, p). Any batch of any epoch can be regenerated on its own, in any order
 * and with any thread count, so a run resumed mid-epoch sees exactly the batches an
 * uninterrupted run would have seen. docs/DATA.md describes the formats and rules.
 *
 * Errors: every loader returns an ag_status and leaves a message naming the file
 * (and dataset) and what is wrong in ag_last_error(). On failure the output dataset
 * is left empty (zeroed), so data_dataset_deinit() on it is always safe.
 */
#ifndef CQAT_DATA_H
#define CQAT_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "autograd/ag_status.h"

/* Largest image array a loader accepts (bytes): a header that declares more is
 * refused before anything is allocated. */
#define DATA_MAX_IMAGE_BYTES ((int64_t)1 << 36)

/* Fashion-MNIST normalization (BENCHMARK.md): the training-set pixel mean and std. */
#define DATA_FASHION_MNIST_MEAN 0.2860f
#define DATA_FASHION_MNIST_STD 0.3530f

/* ---- Datasets --------------------------------------------------------------- */

typedef struct data_dataset {
    int64_t n;         /* number of samples, >= 1 once loaded */
    int32_t c, h, w;   /* channels, rows, columns of every image */
    uint8_t *images;   /* (n, c, h, w), owned by the dataset */
    int32_t *labels;   /* (n), owned by the dataset; each in [0, n_classes) */
    int32_t n_classes; /* see each loader for how it is decided */
    char source[256];  /* where the data came from (a path), for messages */
} data_dataset;

/* Frees the images and labels and zeroes the struct. Safe on a zeroed or failed one. */
void data_dataset_deinit(data_dataset *ds);

/* IDX files (MNIST, Fashion-MNIST, KMNIST, EMNIST), plain or gzip-compressed (told
 * apart by the gzip magic bytes, not by the name). Images: magic 0x00000803
 * (unsigned bytes, 3 dimensions N x rows x cols) -> c = 1. Labels: magic 0x00000801
 * (unsigned bytes, 1 dimension N). The two counts must agree; a file must hold
 * exactly what its header declares (a truncated or over-long payload is an error).
 * n_classes = max(10, largest label + 1); a label of 10 or more is accepted only if
 * every class from 10 up to it occurs (EMNIST-style label sets load; a stray
 * corrupt byte in a 10-class file does not pass as a 200-class dataset).
 * labels_path NULL loads the images alone (for inference): labels all 0, n_classes 0.
 * Status: AG_ERR_IO (cannot open or read), AG_ERR_FORMAT (anything malformed),
 * AG_ERR_NOMEM, AG_ERR_ARG (NULL argument). */
ag_status data_idx_load(const char *images_path, const char *labels_path, data_dataset *ds);

/* CIFAR-10 binary batches (data_batch_1.bin ... test_batch.bin), concatenated in the
 * order given: each record is 1 label byte (0..9) then 3072 pixel bytes, the 1024
 * red, then green, then blue values of a 32x32 image in row-major order. c = 3,
 * h = w = 32, n_classes = 10. A file's size must be a non-zero multiple of 3073. */
ag_status data_cifar10_load(const char *const *paths, int32_t n_paths, data_dataset *ds);

/* An HDF5 file with a uint8 image dataset of shape [N, H, W] (c = 1) or
 * [N, C, H, W], and an integer label dataset of shape [N] (any integer type, each
 * value in [0, 2^31 - 1)). If the label dataset carries an integer attribute
 * "n_classes", labels must be below it and it is n_classes; otherwise n_classes
 * follows the IDX rule above. Dataset names may be paths ("train/images"). labels_name
 * NULL reads images only (for inference): labels all 0, n_classes 0. */
ag_status data_h5_load(const char *path, const char *images_name, const char *labels_name,
                       data_dataset *ds);

/* Fashion-MNIST from `dir` (NULL: data_default_dir()): train = the 60000-image
 * training set (train-*), else the 10000-image test set (t10k-*). Reads
 * {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz, or the same names without .gz. */
ag_status data_fashion_mnist_load(const char *dir, bool train, data_dataset *ds);

/* "/usr/share/datasets/fashion-mnist", where the Debian package dataset-fashion-mnist
 * installs the files. A static string. */
const char *data_default_dir(void);

/* ---- Transforms ------------------------------------------------------------- */

/* What the loader does to each image, in this order (the usual torchvision pipeline
 * RandomCrop(size, padding) -> RandomHorizontalFlip() -> ToTensor() -> Normalize):
 *   - crop_padding > 0: pad every side with crop_padding black pixels (pixel 0) and
 *     take an H x W crop at a random offset, top and left each uniform in
 *     [0, 2 * crop_padding];
 *   - hflip: mirror left-right with probability 0.5;
 *   - x = (pixel / 255 - mean[ch]) / std[ch] for channel ch (at most 3 channels). */
typedef struct data_transform {
    float mean[3], std[3];
    int32_t crop_padding; /* 0 = off */
    bool hflip;           /* p = 0.5 */
} data_transform;

data_transform data_transform_identity(void);      /* mean 0, std 1: x = pixel / 255 */
data_transform data_transform_fashion_mnist(void); /* DATA_FASHION_MNIST_MEAN / _STD */

/* ---- Loader ----------------------------------------------------------------- */

typedef struct data_loader {
    const data_dataset *ds; /* borrowed: must outlive the loader */
    int32_t batch_size;
    bool shuffle, drop_last;
    uint64_t seed;
    data_transform tf;
    int64_t epoch;     /* the epoch whose order is in `order` */
    uint32_t *order;   /* (n) dataset index of each position of the epoch */
    float lut[3][256]; /* pixel -> normalized float, per channel */
} data_loader;

/* Prepares a loader over `ds` and begins epoch 0. tf NULL: data_transform_identity().
 * Fails with AG_ERR_ARG on batch_size < 1, an empty dataset, a std that is not
 * positive and finite, a negative crop_padding; AG_ERR_UNSUPPORTED on images of more
 * than 3 channels or more than 2^32 - 1 samples. The loader owns its order buffer:
 * data_loader_deinit(). */
ag_status data_loader_init(data_loader *ld, const data_dataset *ds, int32_t batch_size,
                           bool shuffle, bool drop_last, uint64_t seed,
                           const data_transform *tf);
void data_loader_deinit(data_loader *ld); /* safe on a zeroed or failed loader */

/* Sets the epoch: with shuffle, the order is the Fisher-Yates shuffle drawn from
 * ag_rng_seed(seed, stream 2e); without, the identity. epoch >= 0. */
ag_status data_loader_epoch_begin(data_loader *ld, int64_t epoch);

/* ceil(n / batch_size), or floor with drop_last. */
int64_t data_loader_num_batches(const data_loader *ld);

/* Fills batch `batch_index` of the current epoch: images (B, C, H, W) floats and
 * labels (B), both caller buffers of at least batch_size samples; *count gets the
 * number of samples (batch_size, or fewer for the last batch without drop_last).
 * The sample at position p has its crop and flip drawn from
 * ag_rng_seed(seed ^ splitmix64(p), stream 2e + 1). */
ag_status data_loader_batch(const data_loader *ld, int64_t batch_index, float *images,
                            int32_t *labels, int32_t *count);

#endif
