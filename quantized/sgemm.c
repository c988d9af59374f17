/* sgemm.c — the float GEMM of conv2d_f32 and linear_f32: packing, the portable
 * micro-kernel and the OpenMP tiling (no BLAS: quantized/ builds alone).
 *
 * The layout is BLIS's: A in panels of MR = 6 rows stored k-major, B in panels of
 * NR = 16 columns stored k-major, so that the micro-kernel streams both with unit stride
 * and keeps the 6 x 16 tile of C in registers for the whole k. Edges are zero-padded
 * panels; the tile stores only its valid rows and columns. The bias and the fused
 * activation are applied once, as the tile is stored. */
#include "quantized/q8_impl.h"

#include <omp.h>

enum { MR = Q8_SGEMM_MR, NR = Q8_SGEMM_NR };

void q8_sgemm_pack_a(int64_t m, int64_t k, const float *a, int64_t lda, float *ap)
{
    for (int64_t p = 0; p < q8_sgemm_panels(m, MR); p++) {
        float *dst = ap + p * MR * k; // (k, MR)
        for (int64_t i = 0; i < MR; i++) {
            int64_t row = p * MR + i;
            for (int64_t kk = 0; kk < k; kk++)
                dst[kk * MR + i] = row < m ? a[row * lda + kk] : 0.0f;
        }
    }
}

void q8_sgemm_pack_bt(int64_t n, int64_t k, const float *bt, int64_t ldb, float *bp)
{
    for (int64_t p = 0; p < q8_sgemm_panels(n, NR); p++) {
        float *dst = bp + p * NR * k; // (k, NR)
        for (int64_t j = 0; j < NR; j++) {
            int64_t col = p * NR + j;
            for (int64_t kk = 0; kk < k; kk++)
                dst[kk * NR + j] = col < n ? bt[col * ldb + kk] : 0.0f;
        }
    }
}

void q8_sgemm_store_tile(const float *tile, float *c, int64_t ldc, int64_t rows, int64_t cols,
                         const float *bias_row, const float *bias_col, int32_t act)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            float v = tile[i * NR + j];
            if (bias_row)
                v += bias_row[i];
            if (bias_col)
                v += bias_col[j];
            c[i * ldc + j] = q8_act_f32(v, act);
        }
}

void q8_sgemm_tile_reference(int64_t k, const float *ap, const float *bp, float *c, int64_t ldc,
                             int64_t rows, int64_t cols, const float *bias_row,
                             const float *bias_col, int32_t act)
{
    /* One row of the tile at a time: its 16 sums fit in the 16 SSE registers of any
     * x86-64 (the whole 6 x 16 tile would spill), and the B panel stays in L1 across
     * the rows. The compiler vectorizes the j loop. */
    float acc[MR * NR]; // (MR, NR)
    for (int64_t i = 0; i < rows; i++) {
        float row[NR] = {0};
        for (int64_t kk = 0; kk < k; kk++) {
            float a = ap[kk * MR + i];
            const float *b = bp + kk * NR;
            for (int64_t j = 0; j < NR; j++)
                row[j] += a * b[j];
        }
        memcpy(acc + i * NR, row, sizeof row);
    }
    q8_sgemm_store_tile(acc, c, ldc, rows, cols, bias_row, bias_col, act);
}

#if !(defined(__x86_64__) || defined(__i386__))
bool q8_sgemm_avx2_available(void) { return false; }

void q8_sgemm_tile_avx2(int64_t k, const float *ap, const float *bp, float *c, int64_t ldc,
                        int64_t rows, int64_t cols, const float *bias_row, const float *bias_col,
                        int32_t act)
{
    q8_sgemm_tile_reference(k, ap, bp, c, ldc, rows, cols, bias_row, bias_col, act);
}
#endif

void q8_sgemm(q8_gemm_kernel kernel, int64_t m, int64_t n, int64_t k, const float *ap,
              const float *bp, float *c, int64_t ldc, const float *bias_row,
              const float *bias_col, int32_t act)
{
    /* __builtin_cpu_supports only reads a word that libgcc filled at startup */
    q8_sgemm_tile_fn tile = kernel == Q8_GEMM_AVX2 && q8_sgemm_avx2_available()
                                ? q8_sgemm_tile_avx2
                                : q8_sgemm_tile_reference;
    int64_t mp = q8_sgemm_panels(m, MR), np = q8_sgemm_panels(n, NR);
    /* B panel outermost: consecutive tiles of a thread reuse the B panel from L1, and
     * the A panels (a weight of a few dozen KB) stay in L2. A parallel region costs a
     * few microseconds, a million multiply-adds about 25: smaller products stay serial. */
    bool parallel = mp * np > 1 && m * n * k > (1 << 20) && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t t = 0; t < mp * np; t++) {
        int64_t jp = t / mp, ip = t % mp;
        int64_t i0 = ip * MR, j0 = jp * NR;
        int64_t rows = m - i0 < MR ? m - i0 : MR, cols = n - j0 < NR ? n - j0 : NR;
        tile(k, ap + ip * MR * k, bp + jp * NR * k, c + i0 * ldc + j0, ldc, rows, cols,
             bias_row ? bias_row + i0 : NULL, bias_col ? bias_col + j0 : NULL, act);
    }
}
