/* gemm.c — kernel choice, OpenMP tiling and weight packing for the int8 GEMM. */
#include "quantized/q8_impl.h"

#include <inttypes.h>
#include <omp.h>
#include <stdlib.h>

q8_gemm_kernel q8_gemm_choose(void)
{
    const char *env = getenv("CQAT_Q8_GEMM");
    if (env && strcmp(env, "reference") == 0)
        return Q8_GEMM_REFERENCE;
    return q8_gemm_avx2_available() ? Q8_GEMM_AVX2 : Q8_GEMM_REFERENCE;
}

/* Tiles of 64 x 64 outputs: with K up to a few thousand, a tile's A rows and B columns
 * stay in L2, and a 256-row chunk of a conv gives enough tiles for every core. */
enum { TILE_M = 64, TILE_N = 64 };

void q8_gemm(q8_gemm_kernel kernel, int64_t m, int64_t n, int64_t kp, const uint8_t *a,
             int64_t lda, const int16_t *b, const int32_t *bias, int32_t *c, int64_t rs,
             int64_t cs)
{
    q8_gemm_fn fn = kernel == Q8_GEMM_AVX2 ? q8_gemm_avx2 : q8_gemm_reference;
    int64_t tiles_n = (n + TILE_N - 1) / TILE_N;
    int64_t tiles = (m + TILE_M - 1) / TILE_M * tiles_n;
#pragma omp parallel for schedule(static) if (tiles > 1 && m * n * kp > 65536 && !omp_in_parallel())
    for (int64_t t = 0; t < tiles; t++) {
        int64_t i0 = t / tiles_n * TILE_M, j0 = t % tiles_n * TILE_N;
        int64_t mm = m - i0 < TILE_M ? m - i0 : TILE_M;
        int64_t nn = n - j0 < TILE_N ? n - j0 : TILE_N;
        fn(mm, nn, kp, a + i0 * lda, lda, b + j0 * kp, bias ? bias + j0 : NULL,
           c + i0 * rs + j0 * cs, rs, cs);
    }
}

void q8_packed_free(q8_packed *p)
{
    if (!p)
        return;
    q8_free(p->w);
    q8_free(p->bias);
    q8_free(p->wsum);
    memset(p, 0, sizeof *p);
}

q8_status q8_pack_weights(const q8_node *node, const int8_t *w, int64_t n, int64_t k,
                          const int32_t *bias, int32_t zp_u8, q8_packed *out)
{
    memset(out, 0, sizeof *out);
    int64_t kp = q8_gemm_kp(k);
    out->n = n;
    out->k = k;
    out->kp = kp;
    out->w = q8_alloc((size_t)(n * kp) * sizeof(int16_t));
    out->bias = q8_alloc((size_t)n * sizeof(int32_t));
    out->wsum = q8_alloc((size_t)n * sizeof(int32_t));
    if (!out->w || !out->bias || !out->wsum) {
        q8_packed_free(out);
        return q8_node_error(node, Q8_ERR_NOMEM, "cannot allocate the packed weights (%" PRId64
                             " x %" PRId64 ")", n, kp);
    }
    for (int64_t j = 0; j < n; j++) {
        const int8_t *wr = w + j * k; // (k)
        int16_t *pr = out->w + j * kp; // (kp)
        int64_t sum = 0, abs_sum = 0;
        for (int64_t i = 0; i < k; i++) {
            pr[i] = wr[i];
            sum += wr[i];
            abs_sum += wr[i] < 0 ? -wr[i] : wr[i];
        }
        for (int64_t i = k; i < kp; i++)
            pr[i] = 0;
        int64_t b = bias ? bias[j] : 0, folded = b - (int64_t)zp_u8 * sum;
        if (q8_acc_overflows(abs_sum, b, folded)) {
            q8_packed_free(out);
            return q8_node_error(node, Q8_ERR_NUMERIC,
                                 "output channel %" PRId64 ": the int32 accumulator could "
                                 "overflow (255 * sum|W| = %" PRId64 " with K = %" PRId64
                                 ", bias with the input zero point folded in = %" PRId64 ")",
                                 j, 255 * abs_sum, k, folded);
        }
        out->bias[j] = (int32_t)folded;
        out->wsum[j] = (int32_t)sum;
    }
    return Q8_OK;
}
