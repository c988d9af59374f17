/* sgemm_avx2.c — the AVX2 + FMA micro-kernel of the float GEMM, selected at run time.
 *
 * One 6 x 16 tile of C lives in 12 ymm registers for the whole k; each step loads the 16
 * floats of the B panel's row (2 ymm), broadcasts the 6 floats of the A panel's column
 * and issues 12 FMAs (BLIS's Haswell sgemm shape: 12 accumulators + 2 B + 1 broadcast
 * of the 16 registers). Full tiles are stored with the bias and activation applied in
 * registers; edge tiles go through q8_sgemm_store_tile. */
#include "quantized/q8_impl.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#define Q8_FMA __attribute__((target("avx2,fma")))

enum { MR = Q8_SGEMM_MR, NR = Q8_SGEMM_NR };

bool q8_sgemm_avx2_available(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* relu: max(0, v) returns v when v is NaN (maxps gives its second operand then), and
 * keeps -0.0 (0 > -0.0 is false): q8_act_f32's x < 0 ? 0 : x. relu6 likewise. */
Q8_FMA static inline __m256 act8(__m256 v, int32_t act)
{
    if (act != Q8_ACT_NONE)
        v = _mm256_max_ps(_mm256_setzero_ps(), v);
    if (act == Q8_ACT_RELU6)
        v = _mm256_min_ps(_mm256_set1_ps(6.0f), v);
    return v;
}

Q8_FMA void q8_sgemm_tile_avx2(int64_t k, const float *ap, const float *bp, float *c, int64_t ldc,
                               int64_t rows, int64_t cols, const float *bias_row,
                               const float *bias_col, int32_t act)
{
    /* Named accumulators, not an array: GCC mirrors an array's registers to the stack
     * on every step (12 stores per 12 FMAs, half the speed). */
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t kk = 0; kk < k; kk++, ap += MR, bp += NR) {
        __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8), a;
        a = _mm256_broadcast_ss(ap + 0);
        c00 = _mm256_fmadd_ps(a, b0, c00);
        c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(ap + 1);
        c10 = _mm256_fmadd_ps(a, b0, c10);
        c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(ap + 2);
        c20 = _mm256_fmadd_ps(a, b0, c20);
        c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(ap + 3);
        c30 = _mm256_fmadd_ps(a, b0, c30);
        c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(ap + 4);
        c40 = _mm256_fmadd_ps(a, b0, c40);
        c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(ap + 5);
        c50 = _mm256_fmadd_ps(a, b0, c50);
        c51 = _mm256_fmadd_ps(a, b1, c51);
    }
    const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                               {c30, c31}, {c40, c41}, {c50, c51}};
    if (rows < MR || cols < NR) {
        float tile[MR * NR]; // (MR, NR)
        for (int i = 0; i < MR; i++) {
            _mm256_storeu_ps(tile + i * NR, acc[i][0]);
            _mm256_storeu_ps(tile + i * NR + 8, acc[i][1]);
        }
        q8_sgemm_store_tile(tile, c, ldc, rows, cols, bias_row, bias_col, act);
        return;
    }
    for (int i = 0; i < MR; i++) {
        __m256 v0 = acc[i][0], v1 = acc[i][1];
        if (bias_row) {
            __m256 br = _mm256_broadcast_ss(bias_row + i);
            v0 = _mm256_add_ps(v0, br);
            v1 = _mm256_add_ps(v1, br);
        }
        if (bias_col) {
            v0 = _mm256_add_ps(v0, _mm256_loadu_ps(bias_col));
            v1 = _mm256_add_ps(v1, _mm256_loadu_ps(bias_col + 8));
        }
        _mm256_storeu_ps(c + i * ldc, act8(v0, act));
        _mm256_storeu_ps(c + i * ldc + 8, act8(v1, act));
    }
}

#endif
