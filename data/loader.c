/* loader.c — batches of normalized, optionally augmented images from a dataset.
 *
 * Reproducibility: nothing here carries random state from one call to the next.
 * The order of epoch e is drawn from ag_rng(seed, stream 2e); the crop offsets and
 * flip of the sample at position p of epoch e from ag_rng(seed ^ splitmix64(p),
 * stream 2e + 1). A batch is a pure function of (dataset, settings, epoch, index),
 * the same whichever thread fills which sample.
 *
 * Speed: a pixel becomes a float through one table lookup (lut[ch][pixel], 256
 * entries per channel, built at init); large batches fill samples in parallel.
 */
#include "data/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/ag_rng.h"

enum {
    LOADER_MAX_CHANNELS = 3,
    LOADER_MAX_PADDING = 1 << 20,
    /* Floats per batch below which threads cost more than they save: a batch of 64
     * Fashion-MNIST images (50176 floats) fills in tens of microseconds on one core,
     * while waking a second thread on a machine busy with the training step itself
     * was measured to cost milliseconds. Big batches of big images still split. */
    LOADER_PARALLEL_WORK = 1 << 20,
};

data_transform data_transform_identity(void)
{
    return (data_transform){.mean = {0, 0, 0}, .std = {1, 1, 1}};
}

data_transform data_transform_fashion_mnist(void)
{
    data_transform tf = data_transform_identity();
    tf.mean[0] = DATA_FASHION_MNIST_MEAN;
    tf.std[0] = DATA_FASHION_MNIST_STD;
    return tf;
}

/* SplitMix64 (Steele, Lea, Flood 2014): spreads consecutive positions over the
 * whole seed space, so neighbouring samples get unrelated generators. */
static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static ag_status loader_check(const data_dataset *ds, int32_t batch_size,
                              const data_transform *tf)
{
    if (!ds->images || !ds->labels || ds->n < 1)
        return ag_error(AG_ERR_ARG, "data_loader_init: the dataset is empty");
    if ((uint64_t)ds->n > UINT32_MAX)
        return ag_error(AG_ERR_UNSUPPORTED, "data_loader_init: %lld samples, at most %u",
                        (long long)ds->n, UINT32_MAX);
    if (ds->c < 1 || ds->h < 1 || ds->w < 1)
        return ag_error(AG_ERR_ARG, "data_loader_init: images of %dx%dx%d", ds->c, ds->h,
                        ds->w);
    if (ds->c > LOADER_MAX_CHANNELS)
        return ag_error(AG_ERR_UNSUPPORTED,
                        "data_loader_init: images have %d channels, the transform "
                        "normalizes at most %d",
                        ds->c, LOADER_MAX_CHANNELS);
    if (batch_size < 1)
        return ag_error(AG_ERR_ARG, "data_loader_init: batch_size %d < 1", batch_size);
    if (tf->crop_padding < 0 || tf->crop_padding > LOADER_MAX_PADDING)
        return ag_error(AG_ERR_ARG, "data_loader_init: crop_padding %d outside [0, %d]",
                        tf->crop_padding, LOADER_MAX_PADDING);
    for (int32_t ch = 0; ch < ds->c; ch++)
        if (!isfinite(tf->mean[ch]) || !isfinite(tf->std[ch]) || !(tf->std[ch] > 0))
            return ag_error(AG_ERR_ARG,
                            "data_loader_init: channel %d has mean %g, std %g (std must be "
                            "positive, both finite)",
                            ch, (double)tf->mean[ch], (double)tf->std[ch]);
    return AG_OK;
}

ag_status data_loader_init(data_loader *ld, const data_dataset *ds, int32_t batch_size,
                           bool shuffle, bool drop_last, uint64_t seed,
                           const data_transform *tf)
{
    if (!ld)
        return ag_error(AG_ERR_ARG, "data_loader_init: loader is NULL");
    memset(ld, 0, sizeof *ld);
    if (!ds)
        return ag_error(AG_ERR_ARG, "data_loader_init: dataset is NULL");
    data_transform identity = data_transform_identity();
    if (!tf)
        tf = &identity;
    ag_status st = loader_check(ds, batch_size, tf);
    if (st != AG_OK)
        return st;

    ld->order = malloc((size_t)ds->n * sizeof *ld->order);
    if (!ld->order)
        return ag_error(AG_ERR_NOMEM, "data_loader_init: out of memory for %lld indices",
                        (long long)ds->n);
    ld->ds = ds;
    ld->batch_size = batch_size;
    ld->shuffle = shuffle;
    ld->drop_last = drop_last;
    ld->seed = seed;
    ld->tf = *tf;
    /* torchvision: ToTensor (pixel / 255 in float32), then Normalize ((x - mean) / std). */
    for (int32_t ch = 0; ch < ds->c; ch++)
        for (int v = 0; v < 256; v++)
            ld->lut[ch][v] = ((float)v / 255.0f - tf->mean[ch]) / tf->std[ch];
    return data_loader_epoch_begin(ld, 0);
}

void data_loader_deinit(data_loader *ld)
{
    if (!ld)
        return;
    free(ld->order);
    memset(ld, 0, sizeof *ld);
}

ag_status data_loader_epoch_begin(data_loader *ld, int64_t epoch)
{
    if (!ld || !ld->order)
        return ag_error(AG_ERR_STATE, "data_loader_epoch_begin: loader not initialized");
    if (epoch < 0)
        return ag_error(AG_ERR_ARG, "data_loader_epoch_begin: epoch %lld < 0",
                        (long long)epoch);
    uint32_t n = (uint32_t)ld->ds->n;
    for (uint32_t i = 0; i < n; i++)
        ld->order[i] = i;
    if (ld->shuffle) {
        ag_rng rng;
        ag_rng_seed(&rng, ld->seed, 2 * (uint64_t)epoch);
        ag_rng_shuffle(&rng, ld->order, n);
    }
    ld->epoch = epoch;
    return AG_OK;
}

int64_t data_loader_num_batches(const data_loader *ld)
{
    if (!ld || !ld->ds)
        return 0;
    int64_t n = ld->ds->n, b = ld->batch_size;
    return ld->drop_last ? n / b : (n + b - 1) / b;
}

/* One channel plane (H, W) of a sample, shifted by (dy, dx) and maybe mirrored:
 * out(y, x) = src(y + dy, x' + dx), x' = flip ? W - 1 - x : x, `pad` off the image. */
static void fill_plane_shifted(const uint8_t *src, float *out, int32_t h, int32_t w, int32_t dy,
                               int32_t dx, bool flip, const float *lut)
{
    const float pad = lut[0]; /* torchvision pads the image with pixel value 0 */
    /* Columns whose source lies inside the image: [x0, x1). */
    int32_t x0 = flip ? dx : -dx;
    int32_t x1 = flip ? w + dx : w - dx;
    x0 = x0 < 0 ? 0 : x0;
    x1 = x1 > w ? w : x1;
    for (int32_t y = 0; y < h; y++) {
        float *row = out + (int64_t)y * w;
        int32_t sy = y + dy;
        if (sy < 0 || sy >= h || x0 >= x1) {
            for (int32_t x = 0; x < w; x++)
                row[x] = pad;
            continue;
        }
        const uint8_t *srow = src + (int64_t)sy * w;
        for (int32_t x = 0; x < x0; x++)
            row[x] = pad;
        if (flip)
            for (int32_t x = x0; x < x1; x++)
                row[x] = lut[srow[w - 1 - x + dx]];
        else
            for (int32_t x = x0; x < x1; x++)
                row[x] = lut[srow[x + dx]];
        for (int32_t x = x1; x < w; x++)
            row[x] = pad;
    }
}

/* Sample at epoch position p (dataset index idx) into out (C, H, W). */
static void fill_sample(const data_loader *ld, int64_t p, uint32_t idx, float *out)
{
    const data_dataset *ds = ld->ds;
    int64_t plane = (int64_t)ds->h * ds->w;
    const uint8_t *src = ds->images + (int64_t)idx * ds->c * plane; /* (C, H, W) */
    int32_t pad = ld->tf.crop_padding;
    if (pad == 0 && !ld->tf.hflip) {
        for (int32_t ch = 0; ch < ds->c; ch++) {
            const float *lut = ld->lut[ch];
            const uint8_t *s = src + ch * plane;
            float *o = out + ch * plane;
            for (int64_t i = 0; i < plane; i++)
                o[i] = lut[s[i]];
        }
        return;
    }
    /* torchvision order: RandomCrop draws top then left, each in [0, 2 * pad];
     * then RandomHorizontalFlip flips if a uniform draw is < 0.5. */
    ag_rng rng;
    ag_rng_seed(&rng, ld->seed ^ splitmix64((uint64_t)p), 2 * (uint64_t)ld->epoch + 1);
    int32_t dy = 0, dx = 0;
    if (pad > 0) {
        dy = (int32_t)ag_rng_below(&rng, 2 * (uint32_t)pad + 1) - pad;
        dx = (int32_t)ag_rng_below(&rng, 2 * (uint32_t)pad + 1) - pad;
    }
    bool flip = ld->tf.hflip && ag_rng_uniform(&rng) < 0.5f;
    for (int32_t ch = 0; ch < ds->c; ch++)
        fill_plane_shifted(src + ch * plane, out + ch * plane, ds->h, ds->w, dy, dx, flip,
                           ld->lut[ch]);
}

ag_status data_loader_batch(const data_loader *ld, int64_t batch_index, float *images,
                            int32_t *labels, int32_t *count)
{
    if (!ld || !ld->order)
        return ag_error(AG_ERR_STATE, "data_loader_batch: loader not initialized");
    if (!images || !labels || !count)
        return ag_error(AG_ERR_ARG, "data_loader_batch: a NULL output buffer");
    int64_t n_batches = data_loader_num_batches(ld);
    if (batch_index < 0 || batch_index >= n_batches)
        return ag_error(AG_ERR_ARG, "data_loader_batch: batch %lld outside [0, %lld)",
                        (long long)batch_index, (long long)n_batches);
    const data_dataset *ds = ld->ds;
    int64_t start = batch_index * ld->batch_size;
    int64_t b = ds->n - start < ld->batch_size ? ds->n - start : ld->batch_size;
    int64_t chw = (int64_t)ds->c * ds->h * ds->w;

#pragma omp parallel for schedule(static) if (b * chw > LOADER_PARALLEL_WORK)
    for (int64_t i = 0; i < b; i++) {
        uint32_t idx = ld->order[start + i];
        labels[i] = ds->labels[idx];
        fill_sample(ld, start + i, idx, images + i * chw);
    }
    *count = (int32_t)b;
    return AG_OK;
}
