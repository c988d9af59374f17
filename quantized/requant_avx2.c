/* requant_avx2.c — the AVX2 requantization of a row of int32 accumulators, selected with
 * the GEMM kernel; identical to q8_requant_reference (tested on random rows, ties and
 * extreme multipliers).
 *
 * 8 accumulators at a time: vpmuldq forms the exact 64-bit products of the even and the
 * odd lanes; the half-even rounding of q8_rq is done on 64-bit lanes (AVX2 has no
 * arithmetic 64-bit shift: sra(t, n) = srl(t ^ s, n) ^ s with s the sign mask); the
 * clamp is a 64-bit compare-and-blend, so no intermediate can wrap. */
#include "quantized/q8_impl.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>

#define Q8_AVX2 __attribute__((target("avx2")))

/* round_half_even(p / 2^s) per 64-bit lane; lanes with s = 0 keep p. */
Q8_AVX2 static inline __m256i round_shift(__m256i p, __m256i s)
{
    const __m256i one = _mm256_set1_epi64x(1), zero = _mm256_setzero_si256();
    __m256i half = _mm256_sllv_epi64(one, _mm256_sub_epi64(s, one)); /* 0 when s = 0 */
    __m256i bit = _mm256_and_si256(_mm256_srlv_epi64(p, s), one);
    __m256i t = _mm256_add_epi64(_mm256_add_epi64(p, _mm256_sub_epi64(half, one)), bit);
    __m256i sign = _mm256_cmpgt_epi64(zero, t);
    __m256i r = _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(t, sign), s), sign);
    return _mm256_blendv_epi8(r, p, _mm256_cmpeq_epi64(s, zero));
}

Q8_AVX2 static inline __m256i clamp64(__m256i v, __m256i lo, __m256i hi)
{
    v = _mm256_blendv_epi8(v, lo, _mm256_cmpgt_epi64(lo, v));
    return _mm256_blendv_epi8(v, hi, _mm256_cmpgt_epi64(v, hi));
}

Q8_AVX2 void q8_requant_avx2(const int32_t *acc, int64_t n, const int32_t *m0,
                             const int32_t *shift, int64_t step, int32_t zp, int32_t lo,
                             int32_t hi, uint8_t *out)
{
    const __m256i lo_v = _mm256_set1_epi64x((int64_t)lo - zp);
    const __m256i hi_v = _mm256_set1_epi64x((int64_t)hi - zp);
    const __m256i zp_v = _mm256_set1_epi32(zp), low32 = _mm256_set1_epi64x(0xffffffff);
    /* byte 0 of every int32, per 128-bit lane */
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, -1, -1);
    __m256i m_v = _mm256_set1_epi32(m0[0]), s_v = _mm256_set1_epi32(shift[0]);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        if (step) {
            m_v = _mm256_loadu_si256((const __m256i *)(m0 + i));
            s_v = _mm256_loadu_si256((const __m256i *)(shift + i));
        }
        __m256i a = _mm256_loadu_si256((const __m256i *)(acc + i));
        __m256i pe = _mm256_mul_epi32(a, m_v); /* lanes 0, 2, 4, 6 */
        __m256i po = _mm256_mul_epi32(_mm256_srli_epi64(a, 32), _mm256_srli_epi64(m_v, 32));
        __m256i re = round_shift(pe, _mm256_and_si256(s_v, low32));
        __m256i ro = round_shift(po, _mm256_srli_epi64(s_v, 32));
        re = clamp64(re, lo_v, hi_v);
        ro = clamp64(ro, lo_v, hi_v);
        __m256i r = _mm256_blend_epi32(re, _mm256_slli_epi64(ro, 32), 0xAA);
        r = _mm256_shuffle_epi8(_mm256_add_epi32(r, zp_v), pick);
        uint32_t w0 = (uint32_t)_mm256_extract_epi32(r, 0), w1 = (uint32_t)_mm256_extract_epi32(r, 4);
        memcpy(out + i, &w0, 4);
        memcpy(out + i + 4, &w1, 4);
    }
    for (; i < n; i++) {
        int64_t k = step ? i : 0;
        out[i] = q8_rq_byte(acc[i], m0[k], shift[k], zp, lo, hi);
    }
}

#else

void q8_requant_avx2(const int32_t *acc, int64_t n, const int32_t *m0, const int32_t *shift,
                     int64_t step, int32_t zp, int32_t lo, int32_t hi, uint8_t *out)
{
    q8_requant_reference(acc, n, m0, shift, step, zp, lo, hi, out);
}

#endif
