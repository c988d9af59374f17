/* rq_avx2.h — the 32-bit AVX2 requantization of one channel (32 <= shift <= 62), shared by
 * the row kernel (requant_avx2.c) and conv2d's fused GEMM epilogue (gemm_avx2.c). x86
 * only; include after immintrin.h. Not installed.
 *
 * With t = acc*M0 + 2^(shift-1) (never overflows: |acc*M0| < 2^62), floor(t / 2^shift)
 * is the high dword of t shifted right by shift - 32 in 32 bits; the half-even correction
 * (an exact tie, t's low shift bits all zero, and an odd quotient: one less) and the
 * clamp are 32-bit operations as well. The same integers as q8_rq_byte. */
#ifndef CQAT_Q8_RQ_AVX2_H
#define CQAT_Q8_RQ_AVX2_H

#include "quantized/q8_impl.h"

#include <immintrin.h>

#define Q8_RQ_AVX2 __attribute__((target("avx2")))

static inline bool q8_rq_high_shift(int32_t shift) { return shift >= 32 && shift <= 62; }

typedef struct q8_rq_high {
    __m256i m, half, mask, one, zero, zp, lo, hi;
    __m128i cnt;
} q8_rq_high;

Q8_RQ_AVX2 static inline void q8_rq_high_init(q8_rq_high *k, int32_t m0, int32_t shift,
                                               int32_t zp, int32_t lo, int32_t hi)
{
    k->m = _mm256_set1_epi64x(m0);
    k->half = _mm256_set1_epi64x(INT64_C(1) << (shift - 1));
    k->cnt = _mm_cvtsi32_si128(shift - 32);
    k->mask = _mm256_set1_epi32((int32_t)((UINT32_C(1) << (shift - 32)) - 1));
    k->one = _mm256_set1_epi32(1);
    k->zero = _mm256_setzero_si256();
    k->zp = _mm256_set1_epi32(zp);
    k->lo = _mm256_set1_epi32(lo);
    k->hi = _mm256_set1_epi32(hi);
}

/* clamp(zp + rq(a), lo, hi) for 8 int32 lanes. */
Q8_RQ_AVX2 static inline __m256i q8_rq_high8(const q8_rq_high *k, __m256i a)
{
    __m256i te = _mm256_add_epi64(_mm256_mul_epi32(a, k->m), k->half);
    __m256i to = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(a, 32), k->m), k->half);
    __m256i th = _mm256_blend_epi32(_mm256_srli_epi64(te, 32), to, 0xAA); /* high dwords */
    __m256i tl = _mm256_blend_epi32(te, _mm256_slli_epi64(to, 32), 0xAA); /* low dwords */
    __m256i r = _mm256_sra_epi32(th, k->cnt);
    __m256i tie = _mm256_and_si256(_mm256_cmpeq_epi32(tl, k->zero),
                                   _mm256_cmpeq_epi32(_mm256_and_si256(th, k->mask), k->zero));
    r = _mm256_sub_epi32(r, _mm256_and_si256(tie, _mm256_and_si256(r, k->one)));
    return _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(r, k->zp), k->lo), k->hi);
}

/* zp + rq(a) unclamped, for a channel whose products never tie (q8_rq_chan): t = a*m0 +
 * add, with add = 2^(shift-1) + zp*2^shift, and floor(t / 2^shift) is t's high dword
 * shifted right by shift - 32 (|t| < 2^63). */
Q8_RQ_AVX2 static inline __m256i q8_rq_no_ties8(__m256i a, __m256i m, __m256i add, __m128i cnt)
{
    __m256i te = _mm256_add_epi64(_mm256_mul_epi32(a, m), add);
    __m256i to = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(a, 32), m), add);
    return _mm256_sra_epi32(_mm256_blend_epi32(_mm256_srli_epi64(te, 32), to, 0xAA), cnt);
}

/* Four rows of 8 results (each in [lo, hi]) as 32 bytes in order: saturating packs keep
 * every value, with unsigned saturation for a u8 range (lo >= 0), signed for an i8 one. */
Q8_RQ_AVX2 static inline __m256i q8_rq_pack32(__m256i r0, __m256i r1, __m256i r2, __m256i r3,
                                              bool u8)
{
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i w01 = _mm256_packs_epi32(r0, r1), w23 = _mm256_packs_epi32(r2, r3);
    __m256i b = u8 ? _mm256_packus_epi16(w01, w23) : _mm256_packs_epi16(w01, w23);
    return _mm256_permutevar8x32_epi32(b, order);
}

#endif
