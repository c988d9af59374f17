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

#include "quantized/rq_avx2.h"

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

/* One channel (step 0) with 32 <= shift <= 62, the usual case (multipliers below 1): the
 * 32-bit path of rq_avx2.h. */
Q8_AVX2 static int64_t requant_high(const int32_t *acc, int64_t n, int32_t m0, int32_t shift,
                                    int32_t zp, int32_t lo, int32_t hi, uint8_t *out)
{
    q8_rq_high k;
    q8_rq_high_init(&k, m0, shift, zp, lo, hi);
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, -1, -1);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i r0 = q8_rq_high8(&k, _mm256_loadu_si256((const __m256i *)(acc + i)));
        __m256i r1 = q8_rq_high8(&k, _mm256_loadu_si256((const __m256i *)(acc + i + 8)));
        __m256i r2 = q8_rq_high8(&k, _mm256_loadu_si256((const __m256i *)(acc + i + 16)));
        __m256i r3 = q8_rq_high8(&k, _mm256_loadu_si256((const __m256i *)(acc + i + 24)));
        _mm256_storeu_si256((__m256i *)(out + i), q8_rq_pack32(r0, r1, r2, r3, lo >= 0));
    }
    for (; i + 8 <= n; i += 8) {
        __m256i r = q8_rq_high8(&k, _mm256_loadu_si256((const __m256i *)(acc + i)));
        r = _mm256_shuffle_epi8(r, pick);
        uint32_t w0 = (uint32_t)_mm256_extract_epi32(r, 0), w1 = (uint32_t)_mm256_extract_epi32(r, 4);
        memcpy(out + i, &w0, 4);
        memcpy(out + i + 4, &w1, 4);
    }
    return i;
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
    if (!step && q8_rq_high_shift(shift[0]))
        i = requant_high(acc, n, m0[0], shift[0], zp, lo, hi, out);
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

Q8_AVX2 void q8_quantize_row_avx2(const float *x, int64_t n, float inv, int32_t zp,
                                  int32_t qmin, int32_t qmax, uint8_t *out)
{
    const __m256 inv_v = _mm256_set1_ps(inv), zero = _mm256_setzero_ps();
    const __m256 lo = _mm256_set1_ps((float)(qmin - zp)), hi = _mm256_set1_ps((float)(qmax - zp));
    const __m256i zp_v = _mm256_set1_epi32(zp);
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, -1, -1);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv_v),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm256_blendv_ps(r, zero, _mm256_cmp_ps(r, r, _CMP_UNORD_Q)); /* NaN: zp */
        r = _mm256_min_ps(_mm256_max_ps(r, lo), hi); /* integers: the clamp is exact */
        __m256i q = _mm256_add_epi32(_mm256_cvttps_epi32(r), zp_v);
        q = _mm256_shuffle_epi8(q, pick);
        uint32_t w0 = (uint32_t)_mm256_extract_epi32(q, 0), w1 = (uint32_t)_mm256_extract_epi32(q, 4);
        memcpy(out + i, &w0, 4);
        memcpy(out + i + 4, &w1, 4);
    }
    q8_quantize_row_reference(x + i, n - i, inv, zp, qmin, qmax, out + i);
}

Q8_AVX2 void q8_lookup2_avx2(const uint8_t *table, const uint8_t *a, const uint8_t *b, int64_t n,
                             uint8_t *out)
{
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, -1, -1);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i ia = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(a + i)));
        __m256i ib = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + i)));
        __m256i idx = _mm256_add_epi32(_mm256_slli_epi32(ia, 8), ib);
        __m256i v = _mm256_i32gather_epi32((const int *)(const void *)table, idx, 1);
        v = _mm256_shuffle_epi8(v, pick);
        uint32_t w0 = (uint32_t)_mm256_extract_epi32(v, 0), w1 = (uint32_t)_mm256_extract_epi32(v, 4);
        memcpy(out + i, &w0, 4);
        memcpy(out + i + 4, &w1, 4);
    }
    q8_lookup2_reference(table, a + i, b + i, n - i, out + i);
}

/* The max of each 2x2 window of two int32 rows, 8 windows (16 columns): the row max,
 * then each even lane against its odd neighbour (shifted down), the even lanes gathered
 * in order. */
Q8_AVX2 static inline __m256i pool8(const int32_t *r0, const int32_t *r1)
{
    __m256i a = _mm256_max_epi32(_mm256_loadu_si256((const __m256i *)r0),
                                 _mm256_loadu_si256((const __m256i *)r1));
    __m256i b = _mm256_max_epi32(_mm256_loadu_si256((const __m256i *)(r0 + 8)),
                                 _mm256_loadu_si256((const __m256i *)(r1 + 8)));
    a = _mm256_max_epi32(a, _mm256_srli_epi64(a, 32));
    b = _mm256_max_epi32(b, _mm256_srli_epi64(b, 32));
    __m256i v = _mm256_castps_si256(
        _mm256_shuffle_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), 0x88));
    return _mm256_permute4x64_epi64(v, 0xD8);
}

Q8_AVX2 void q8_pool_rq_avx2(const int32_t *acc, int64_t ld, int64_t prows, int64_t pw,
                             const q8_rq_chan *ch, int32_t zp, int32_t lo, int32_t hi,
                             uint8_t *out, int64_t room)
{
    q8_rq_high k;
    q8_rq_high_init(&k, ch->m0, ch->shift, zp, lo, hi);
    const __m256i add = _mm256_set1_epi64x(ch->add);
    const __m256i blo = _mm256_set1_epi8((char)lo), bhi = _mm256_set1_epi8((char)hi);
    const bool u8 = lo >= 0;
    for (int64_t i = 0; i < prows; i++) {
        const int32_t *r0 = acc + 2 * i * ld, *r1 = r0 + ld; // (2 * pw) each
        for (int64_t j = 0; j < pw; j += 8) {
            __m256i v = pool8(r0 + 2 * j, r1 + 2 * j);
            __m256i r = ch->no_ties ? q8_rq_no_ties8(v, k.m, add, k.cnt) : q8_rq_high8(&k, v);
            __m256i b = q8_rq_pack32(r, r, r, r, u8);
            b = u8 ? _mm256_min_epu8(_mm256_max_epu8(b, blo), bhi)
                   : _mm256_min_epi8(_mm256_max_epi8(b, blo), bhi);
            uint64_t bytes = (uint64_t)_mm256_extract_epi64(b, 0);
            int64_t at = i * pw + j;
            memcpy(out + at, &bytes, at + 8 <= room ? 8 : (size_t)(pw - j));
        }
    }
}

#else

void q8_lookup2_avx2(const uint8_t *table, const uint8_t *a, const uint8_t *b, int64_t n,
                     uint8_t *out)
{
    q8_lookup2_reference(table, a, b, n, out);
}

void q8_quantize_row_avx2(const float *x, int64_t n, float inv, int32_t zp, int32_t qmin,
                          int32_t qmax, uint8_t *out)
{
    q8_quantize_row_reference(x, n, inv, zp, qmin, qmax, out);
}

void q8_requant_avx2(const int32_t *acc, int64_t n, const int32_t *m0, const int32_t *shift,
                     int64_t step, int32_t zp, int32_t lo, int32_t hi, uint8_t *out)
{
    q8_requant_reference(acc, n, m0, shift, step, zp, lo, hi, out);
}

void q8_pool_rq_avx2(const int32_t *acc, int64_t ld, int64_t prows, int64_t pw,
                     const q8_rq_chan *ch, int32_t zp, int32_t lo, int32_t hi, uint8_t *out,
                     int64_t room)
{
    (void)room;
    q8_pool_rq_reference(acc, ld, prows, pw, ch->m0, ch->shift, zp, lo, hi, out);
}

#endif
