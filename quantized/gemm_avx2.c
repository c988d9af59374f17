/* gemm_avx2.c — the AVX2 int8 GEMM, selected at run time.
 *
 * Why not vpmaddubsw (u8 x s8 -> s16 pairs): it saturates at int16, so 255*127 + 255*127
 * becomes 32767 and the result silently differs from the reference (PyTorch issues
 * #44939/#50720, FBGEMM #125). Here both operands are widened to 16 bits first — A with
 * vpmovzxbw at load, B once at pack time — and vpmaddwd sums pairs into int32 exactly
 * (|255 * 128 * 2| < 2^31; vpmaddwd only saturates for (-32768)^2 * 2, which 8-bit
 * inputs never reach). Partial sums stay in int32 because q8_pack_weights refuses
 * weights whose sum could leave it.
 *
 * Tiles of 2 rows x 4 columns keep 8 accumulators in registers; each step of 16 k
 * loads 2 A vectors and 4 B vectors for 8 vpmaddwd. Edges use 1x4 and 1x1 tiles.
 */
#include "quantized/q8_impl.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#define Q8_AVX2 __attribute__((target("avx2")))

bool q8_gemm_avx2_available(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

/* Lane sums of four accumulators: {sum(a), sum(b), sum(c), sum(d)} (phaddd wraps, it
 * does not saturate). */
Q8_AVX2 static inline __m128i hsum4(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i ab = _mm256_hadd_epi32(a, b);
    __m256i cd = _mm256_hadd_epi32(c, d);
    __m256i abcd = _mm256_hadd_epi32(ab, cd);
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

Q8_AVX2 static inline int32_t hsum1(__m256i a)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    s = _mm_hadd_epi32(s, s);
    s = _mm_hadd_epi32(s, s);
    return _mm_cvtsi128_si32(s);
}

Q8_AVX2 static inline __m256i load_a(const uint8_t *p)
{
    return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p));
}

Q8_AVX2 static inline __m256i load_b(const int16_t *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

Q8_AVX2 static inline __m256i madd_acc(__m256i acc, __m256i x, __m256i w)
{
    return _mm256_add_epi32(acc, _mm256_madd_epi16(x, w));
}

Q8_AVX2 static inline __m128i add_bias(__m128i s, const int32_t *bias)
{
    return bias ? _mm_add_epi32(s, _mm_loadu_si128((const __m128i *)bias)) : s;
}

/* Four results of one row at columns j..j+3: contiguous, or cs apart (transposed C). */
Q8_AVX2 static inline void store4(int32_t *c, int64_t cs, __m128i v)
{
    if (cs == 1) {
        _mm_storeu_si128((__m128i *)c, v);
        return;
    }
    c[0] = _mm_cvtsi128_si32(v);
    c[cs] = _mm_extract_epi32(v, 1);
    c[2 * cs] = _mm_extract_epi32(v, 2);
    c[3 * cs] = _mm_extract_epi32(v, 3);
}

/* c0[0..4), c1[0..4) (cs apart) for rows a0, a1 and the 4 packed columns at b. */
Q8_AVX2 static void tile_2x4(int64_t kp, const uint8_t *a0, const uint8_t *a1, const int16_t *b,
                             const int32_t *bias, int32_t *c0, int32_t *c1, int64_t cs)
{
    const int16_t *b0 = b, *b1 = b + kp, *b2 = b + 2 * kp, *b3 = b + 3 * kp;
    __m256i s00 = _mm256_setzero_si256(), s01 = s00, s02 = s00, s03 = s00;
    __m256i s10 = s00, s11 = s00, s12 = s00, s13 = s00;
    for (int64_t k = 0; k < kp; k += 16) {
        __m256i x0 = load_a(a0 + k), x1 = load_a(a1 + k);
        __m256i w = load_b(b0 + k);
        s00 = madd_acc(s00, x0, w);
        s10 = madd_acc(s10, x1, w);
        w = load_b(b1 + k);
        s01 = madd_acc(s01, x0, w);
        s11 = madd_acc(s11, x1, w);
        w = load_b(b2 + k);
        s02 = madd_acc(s02, x0, w);
        s12 = madd_acc(s12, x1, w);
        w = load_b(b3 + k);
        s03 = madd_acc(s03, x0, w);
        s13 = madd_acc(s13, x1, w);
    }
    store4(c0, cs, add_bias(hsum4(s00, s01, s02, s03), bias));
    store4(c1, cs, add_bias(hsum4(s10, s11, s12, s13), bias));
}

Q8_AVX2 static void tile_1x4(int64_t kp, const uint8_t *a0, const int16_t *b, const int32_t *bias,
                             int32_t *c0, int64_t cs)
{
    const int16_t *b0 = b, *b1 = b + kp, *b2 = b + 2 * kp, *b3 = b + 3 * kp;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t k = 0; k < kp; k += 16) {
        __m256i x0 = load_a(a0 + k);
        s0 = madd_acc(s0, x0, load_b(b0 + k));
        s1 = madd_acc(s1, x0, load_b(b1 + k));
        s2 = madd_acc(s2, x0, load_b(b2 + k));
        s3 = madd_acc(s3, x0, load_b(b3 + k));
    }
    store4(c0, cs, add_bias(hsum4(s0, s1, s2, s3), bias));
}

Q8_AVX2 static int32_t dot_1x1(int64_t kp, const uint8_t *a0, const int16_t *b0)
{
    __m256i s = _mm256_setzero_si256();
    for (int64_t k = 0; k < kp; k += 16)
        s = madd_acc(s, load_a(a0 + k), load_b(b0 + k));
    return hsum1(s);
}

Q8_AVX2 static void row_tail(int64_t n, int64_t j, int64_t kp, const uint8_t *ar,
                             const int16_t *b, const int32_t *bias, int32_t *cr, int64_t cs)
{
    for (; j < n; j++)
        cr[j * cs] = (bias ? bias[j] : 0) + dot_1x1(kp, ar, b + j * kp);
}

Q8_AVX2 void q8_gemm_avx2(int64_t m, int64_t n, int64_t kp, const uint8_t *a, int64_t lda,
                          const int16_t *b, const int32_t *bias, int32_t *c, int64_t rs,
                          int64_t cs)
{
    int64_t i = 0;
    for (; i + 2 <= m; i += 2) {
        const uint8_t *a0 = a + i * lda, *a1 = a0 + lda;
        int32_t *c0 = c + i * rs, *c1 = c0 + rs;
        int64_t j = 0;
        for (; j + 4 <= n; j += 4)
            tile_2x4(kp, a0, a1, b + j * kp, bias ? bias + j : NULL, c0 + j * cs, c1 + j * cs,
                     cs);
        row_tail(n, j, kp, a0, b, bias, c0, cs);
        row_tail(n, j, kp, a1, b, bias, c1, cs);
    }
    for (; i < m; i++) {
        const uint8_t *a0 = a + i * lda;
        int32_t *c0 = c + i * rs;
        int64_t j = 0;
        for (; j + 4 <= n; j += 4)
            tile_1x4(kp, a0, b + j * kp, bias ? bias + j : NULL, c0 + j * cs, cs);
        row_tail(n, j, kp, a0, b, bias, c0, cs);
    }
}

#else /* not x86: the reference kernel stands in */

bool q8_gemm_avx2_available(void) { return false; }

void q8_gemm_avx2(int64_t m, int64_t n, int64_t kp, const uint8_t *a, int64_t lda,
                  const int16_t *b, const int32_t *bias, int32_t *c, int64_t rs, int64_t cs)
{
    q8_gemm_reference(m, n, kp, a, lda, b, bias, c, rs, cs);
}

#endif
