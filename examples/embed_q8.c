/* embed_q8.c — embedding cqat's integer runtime: load a frozen int8 model, run a batch
 * of images from an IDX file, print the predicted classes.
 *
 *   embed_q8 MODEL.h5 IMAGES.idx [LABELS.idx] [--count N] [--mean M --std S]
 *
 * The model's input must be float (N, 1, H, W) matching the images (MNIST / Fashion-
 * MNIST style, uncompressed: gunzip first). Pixels become ((p / 255) - mean) / std, the
 * normalization the model was trained with (cqat's defaults: mean 0, std 1). With a
 * labels file the accuracy is printed too. Links only quantized/ (q8_dep).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quantized/q8.h"

enum { BATCH = 64 };

/* A big-endian uint32 of the IDX header. */
static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads an IDX file of unsigned bytes with `ndim` dimensions; returns the payload
 * (malloc'ed) and the dimensions, or NULL with a message on stderr. */
static unsigned char *read_idx(const char *path, int ndim, uint32_t dims[3])
{
    FILE *f = fopen(path, "rb");
    unsigned char head[16], *data = NULL;
    if (!f) {
        perror(path);
        return NULL;
    }
    size_t head_len = 4 + 4 * (size_t)ndim, total = 1;
    if (fread(head, 1, head_len, f) != head_len || head[0] || head[1] || head[2] != 0x08 ||
        head[3] != ndim) {
        fprintf(stderr, "%s: not an IDX file of unsigned bytes with %d dimensions\n", path, ndim);
        goto done;
    }
    for (int d = 0; d < ndim; d++) {
        dims[d] = be32(head + 4 + 4 * d);
        if (dims[d] == 0 || dims[d] > (1u << 24)) {
            fprintf(stderr, "%s: dimension %d = %u is out of range\n", path, d, dims[d]);
            goto done;
        }
        total *= dims[d];
    }
    if (total > ((size_t)1 << 32) || !(data = malloc(total)) || fread(data, 1, total, f) != total) {
        fprintf(stderr, "%s: truncated (or too large)\n", path);
        free(data);
        data = NULL;
    }
done:
    fclose(f);
    return data;
}

static int argmax(const float *v, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return (int)best;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *images_path = NULL, *labels_path = NULL;
    long count = -1;
    float mean = 0.0f, std = 1.0f;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--count") && i + 1 < argc)
            count = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--mean") && i + 1 < argc)
            mean = strtof(argv[++i], NULL);
        else if (!strcmp(argv[i], "--std") && i + 1 < argc)
            std = strtof(argv[++i], NULL);
        else if (!model_path)
            model_path = argv[i];
        else if (!images_path)
            images_path = argv[i];
        else
            labels_path = argv[i];
    }
    if (!model_path || !images_path || !(std > 0)) {
        fprintf(stderr, "usage: %s MODEL.h5 IMAGES.idx [LABELS.idx] [--count N] "
                        "[--mean M --std S]\n", argv[0]);
        return 2;
    }

    q8_model *m = q8_model_load(model_path);
    if (!m) {
        fprintf(stderr, "embed_q8: %s\n", q8_last_error());
        return 1;
    }
    int64_t in_shape[Q8_MAX_DIMS], out_shape[Q8_MAX_DIMS];
    int32_t in_rank = q8_model_input_shape(m, in_shape);
    int32_t out_rank = q8_model_output_shape(m, out_shape);

    uint32_t dims[3] = {0}, ldims[3] = {0};
    unsigned char *pixels = read_idx(images_path, 3, dims);
    unsigned char *labels = labels_path ? read_idx(labels_path, 1, ldims) : NULL;
    int status = 1;
    if (!pixels || (labels_path && !labels))
        goto done;
    if (in_rank != 4 || in_shape[1] != 1 || in_shape[2] != dims[1] || in_shape[3] != dims[2] ||
        out_rank != 2) {
        fprintf(stderr, "embed_q8: the model takes (N, %lld, %lld, %lld) and gives rank %d; the "
                        "images are %ux%u\n", (long long)in_shape[1], (long long)in_shape[2],
                (long long)in_shape[3], (int)out_rank, dims[1], dims[2]);
        goto done;
    }
    int64_t n = count >= 0 && count < (long)dims[0] ? count : (int64_t)dims[0];
    int64_t pix = (int64_t)dims[1] * dims[2], classes = out_shape[1], correct = 0;
    float *x = malloc((size_t)(BATCH * pix) * sizeof *x);           // (BATCH, 1, H, W)
    float *logits = malloc((size_t)(BATCH * classes) * sizeof *logits); // (BATCH, classes)
    if (!x || !logits) {
        fprintf(stderr, "embed_q8: out of memory\n");
        free(x);
        free(logits);
        goto done;
    }
    status = 0;
    for (int64_t b0 = 0; b0 < n; b0 += BATCH) {
        int64_t batch = n - b0 < BATCH ? n - b0 : BATCH;
        for (int64_t i = 0; i < batch * pix; i++)
            x[i] = ((float)pixels[b0 * pix + i] / 255.0f - mean) / std;
        if (q8_model_run(m, x, batch, logits) != Q8_OK) {
            fprintf(stderr, "embed_q8: %s\n", q8_last_error());
            status = 1;
            break;
        }
        for (int64_t i = 0; i < batch; i++) {
            int pred = argmax(logits + i * classes, classes);
            if (labels && i + b0 < ldims[0])
                correct += pred == labels[b0 + i];
            printf("%lld %d\n", (long long)(b0 + i), pred);
        }
    }
    if (labels && status == 0)
        printf("accuracy %.4f (%lld of %lld)\n", n ? (double)correct / (double)n : 0.0,
               (long long)correct, (long long)n);
    free(x);
    free(logits);
done:
    free(pixels);
    free(labels);
    q8_model_free(m);
    return status;
}
