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

#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)

#include <cpuid.h>
#include <immintrin.h>

#include "quantized/rq_avx2.h"

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

/* ---- the column GEMM (conv2d) ---- */

/* The weight pair (w[2t], w[2t+1]) of one channel in every 32-bit lane. */
Q8_AVX2 static inline __m256i wpair(const int16_t *w)
{
    int32_t v;
    memcpy(&v, w, sizeof v);
    return _mm256_set1_epi32(v);
}

Q8_AVX2 static inline void store_row3(int32_t *c, int32_t bias, __m256i s0, __m256i s1, __m256i s2)
{
    __m256i b = _mm256_set1_epi32(bias);
    _mm256_storeu_si256((__m256i *)c, _mm256_add_epi32(s0, b));
    _mm256_storeu_si256((__m256i *)(c + 8), _mm256_add_epi32(s1, b));
    _mm256_storeu_si256((__m256i *)(c + 16), _mm256_add_epi32(s2, b));
}

/* 4 channels x 24 positions: 12 accumulators; per pair of K, 3 operand loads and 4
 * weight broadcasts feed 12 vpmaddwd. */
Q8_AVX2 static void cols_4x24(int64_t kpairs, const int16_t *w, int64_t kp, const int16_t *a,
                              int64_t np, const int32_t *bias, int32_t *c, int64_t ldc)
{
    __m256i s00 = _mm256_setzero_si256(), s01 = s00, s02 = s00, s10 = s00, s11 = s00, s12 = s00;
    __m256i s20 = s00, s21 = s00, s22 = s00, s30 = s00, s31 = s00, s32 = s00;
    for (int64_t t = 0; t < kpairs; t++) {
        const int16_t *ap = a + t * np * 2;
        __m256i x0 = load_b(ap), x1 = load_b(ap + 16), x2 = load_b(ap + 32);
        __m256i w0 = wpair(w + 2 * t);
        s00 = madd_acc(s00, x0, w0);
        s01 = madd_acc(s01, x1, w0);
        s02 = madd_acc(s02, x2, w0);
        __m256i w1 = wpair(w + kp + 2 * t);
        s10 = madd_acc(s10, x0, w1);
        s11 = madd_acc(s11, x1, w1);
        s12 = madd_acc(s12, x2, w1);
        __m256i w2 = wpair(w + 2 * kp + 2 * t);
        s20 = madd_acc(s20, x0, w2);
        s21 = madd_acc(s21, x1, w2);
        s22 = madd_acc(s22, x2, w2);
        __m256i w3 = wpair(w + 3 * kp + 2 * t);
        s30 = madd_acc(s30, x0, w3);
        s31 = madd_acc(s31, x1, w3);
        s32 = madd_acc(s32, x2, w3);
    }
    store_row3(c, bias ? bias[0] : 0, s00, s01, s02);
    store_row3(c + ldc, bias ? bias[1] : 0, s10, s11, s12);
    store_row3(c + 2 * ldc, bias ? bias[2] : 0, s20, s21, s22);
    store_row3(c + 3 * ldc, bias ? bias[3] : 0, s30, s31, s32);
}

Q8_AVX2 static void cols_1x24(int64_t kpairs, const int16_t *w, const int16_t *a, int64_t np,
                              int32_t bias, int32_t *c)
{
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0;
    for (int64_t t = 0; t < kpairs; t++) {
        const int16_t *ap = a + t * np * 2;
        __m256i w0 = wpair(w + 2 * t);
        s0 = madd_acc(s0, load_b(ap), w0);
        s1 = madd_acc(s1, load_b(ap + 16), w0);
        s2 = madd_acc(s2, load_b(ap + 32), w0);
    }
    store_row3(c, bias, s0, s1, s2);
}

/* The tail tiles: 4 (or 1) channels x 8 positions. */
Q8_AVX2 static void cols_4x8(int64_t kpairs, const int16_t *w, int64_t kp, const int16_t *a,
                             int64_t np, const int32_t *bias, int32_t *c, int64_t ldc)
{
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t t = 0; t < kpairs; t++) {
        __m256i x = load_b(a + t * np * 2);
        s0 = madd_acc(s0, x, wpair(w + 2 * t));
        s1 = madd_acc(s1, x, wpair(w + kp + 2 * t));
        s2 = madd_acc(s2, x, wpair(w + 2 * kp + 2 * t));
        s3 = madd_acc(s3, x, wpair(w + 3 * kp + 2 * t));
    }
    __m256i acc[4] = {s0, s1, s2, s3};
    for (int r = 0; r < 4; r++)
        _mm256_storeu_si256((__m256i *)(c + r * ldc),
                            _mm256_add_epi32(acc[r], _mm256_set1_epi32(bias ? bias[r] : 0)));
}

Q8_AVX2 static void cols_1x8(int64_t kpairs, const int16_t *w, const int16_t *a, int64_t np,
                             int32_t bias, int32_t *c)
{
    __m256i s = _mm256_setzero_si256();
    for (int64_t t = 0; t < kpairs; t++)
        s = madd_acc(s, load_b(a + t * np * 2), wpair(w + 2 * t));
    _mm256_storeu_si256((__m256i *)c, _mm256_add_epi32(s, _mm256_set1_epi32(bias)));
}

Q8_AVX2 void q8_gemm_cols_avx2(int64_t m, int64_t kpairs, const int16_t *w, int64_t kp,
                               const int16_t *a, int64_t np, const int32_t *bias, int32_t *c,
                               int64_t ldc)
{
    int64_t p = 0;
    for (; p + Q8_COLS_NR <= np; p += Q8_COLS_NR) {
        int64_t o = 0;
        for (; o + 4 <= m; o += 4)
            cols_4x24(kpairs, w + o * kp, kp, a + p * 2, np, bias ? bias + o : NULL,
                      c + o * ldc + p, ldc);
        for (; o < m; o++)
            cols_1x24(kpairs, w + o * kp, a + p * 2, np, bias ? bias[o] : 0, c + o * ldc + p);
    }
    for (; p < np; p += Q8_COLS_STEP) {
        int64_t o = 0;
        for (; o + 4 <= m; o += 4)
            cols_4x8(kpairs, w + o * kp, kp, a + p * 2, np, bias ? bias + o : NULL,
                     c + o * ldc + p, ldc);
        for (; o < m; o++)
            cols_1x8(kpairs, w + o * kp, a + p * 2, np, bias ? bias[o] : 0, c + o * ldc + p);
    }
}

Q8_AVX2 void q8_interleave_pairs_avx2(const uint8_t *r0, const uint8_t *r1, int64_t n, int16_t *dst)
{
    int64_t p = 0;
    for (; p + 16 <= n; p += 16) {
        __m128i x0 = _mm_loadu_si128((const __m128i *)(r0 + p));
        __m128i x1 = _mm_loadu_si128((const __m128i *)(r1 + p));
        __m256i lo = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(x0, x1));
        __m256i hi = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(x0, x1));
        _mm256_storeu_si256((__m256i *)(dst + 2 * p), lo);
        _mm256_storeu_si256((__m256i *)(dst + 2 * p + 16), hi);
    }
    q8_interleave_pairs_reference(r0 + p, r1 + p, n - p, dst + 2 * p);
}

/* 16 positions of four rows into 64 bytes. */
Q8_AVX2 static inline void quads16(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2,
                                   const uint8_t *r3, uint8_t *dst)
{
    __m128i x0 = _mm_loadu_si128((const __m128i *)r0), x1 = _mm_loadu_si128((const __m128i *)r1);
    __m128i x2 = _mm_loadu_si128((const __m128i *)r2), x3 = _mm_loadu_si128((const __m128i *)r3);
    __m128i a0 = _mm_unpacklo_epi8(x0, x1), a1 = _mm_unpackhi_epi8(x0, x1);
    __m128i b0 = _mm_unpacklo_epi8(x2, x3), b1 = _mm_unpackhi_epi8(x2, x3);
    _mm_storeu_si128((__m128i *)dst, _mm_unpacklo_epi16(a0, b0));
    _mm_storeu_si128((__m128i *)(dst + 16), _mm_unpackhi_epi16(a0, b0));
    _mm_storeu_si128((__m128i *)(dst + 32), _mm_unpacklo_epi16(a1, b1));
    _mm_storeu_si128((__m128i *)(dst + 48), _mm_unpackhi_epi16(a1, b1));
}

/* 8 positions of four rows into 32 bytes. */
Q8_AVX2 static inline void quads8(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2,
                                  const uint8_t *r3, uint8_t *dst)
{
    __m128i x0 = _mm_loadl_epi64((const __m128i *)r0), x1 = _mm_loadl_epi64((const __m128i *)r1);
    __m128i x2 = _mm_loadl_epi64((const __m128i *)r2), x3 = _mm_loadl_epi64((const __m128i *)r3);
    __m128i a0 = _mm_unpacklo_epi8(x0, x1), b0 = _mm_unpacklo_epi8(x2, x3);
    _mm_storeu_si128((__m128i *)dst, _mm_unpacklo_epi16(a0, b0));
    _mm_storeu_si128((__m128i *)(dst + 16), _mm_unpackhi_epi16(a0, b0));
}

Q8_AVX2 void q8_interleave_quads_avx2(const uint8_t *const r[4], int64_t n, uint8_t *dst)
{
    int64_t p = 0;
    for (; p + 16 <= n; p += 16)
        quads16(r[0] + p, r[1] + p, r[2] + p, r[3] + p, dst + 4 * p);
    for (; p + 8 <= n; p += 8)
        quads8(r[0] + p, r[1] + p, r[2] + p, r[3] + p, dst + 4 * p);
    if (p == n)
        return;
    if (n >= 8) {
        /* the last 8 positions again (rows of 14 here): the overlap gets the same bytes,
         * and nothing is read or written beyond n */
        p = n - 8;
        quads8(r[0] + p, r[1] + p, r[2] + p, r[3] + p, dst + 4 * p);
        return;
    }
    uint8_t t[4][16] = {{0}}, out[64];
    for (int s = 0; s < 4; s++)
        memcpy(t[s], r[s] + p, (size_t)(n - p));
    quads16(t[0], t[1], t[2], t[3], out);
    memcpy(dst + 4 * p, out, (size_t)(4 * (n - p)));
}

Q8_AVX2 void q8_taps_quads_avx2(const uint8_t *p, int64_t n, int64_t kw, int64_t dw, uint8_t *q)
{
    if (kw < 1 || kw > 4 || dw < 1 || 7 + (kw - 1) * dw > 15) {
        q8_taps_quads_reference(p, n, kw, dw, q);
        return;
    }
    /* 8 positions per step from 16 bytes of the plane (in both lanes): byte 4*pos + j of
     * lane L is plane byte 4L + pos + j*dw, or zero for j >= kw */
    int8_t idx[32];
    for (int b = 0; b < 32; b++) {
        int lane = b / 16, pos = b % 16 / 4, j = b % 4;
        idx[b] = (int8_t)(j < kw ? 4 * lane + pos + j * dw : -1);
    }
    const __m256i shuf = _mm256_loadu_si256((const __m256i *)idx);
    int64_t x = 0;
    for (; x + 8 <= n; x += 8) {
        __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p + x)));
        _mm256_storeu_si256((__m256i *)(q + 4 * x), _mm256_shuffle_epi8(v, shuf));
    }
    q8_taps_quads_reference(p + x, n - x, kw, dw, q + 4 * x);
}

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 || defined(__clang__) && __clang_major__ >= 12
#define Q8_HAVE_VNNI 1
#define Q8_VNNI __attribute__((target("avx2,avxvnni")))

/* AVX-VNNI is CPUID leaf 7, sub-leaf 1, EAX bit 4; read it directly, since clang 14's
 * __builtin_cpu_supports does not know "avxvnni". (The AVX2 check also covers the OS
 * saving the YMM registers.) */
static bool cpu_has_avxvnni(void)
{
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 4) & 1u);
}

bool q8_gemm_vnni_available(void)
{
    const char *env = getenv("CQAT_Q8_GEMM");
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && cpu_has_avxvnni() &&
           !(env && strcmp(env, "avx2") == 0);
}

/* Four weight bytes of one channel in every 32-bit lane. */
Q8_VNNI static inline __m256i wquad(const int8_t *w)
{
    int32_t v;
    memcpy(&v, w, sizeof v);
    return _mm256_set1_epi32(v);
}

/* acc += the four-byte dot products of a (uint8) and w (int8) per lane. As inline asm:
 * GCC 12 copies the accumulator around the intrinsic (it does not tie the operand), which
 * spills the 12 accumulators of the 4x24 tile to the stack. */
Q8_VNNI static inline __m256i dp(__m256i acc, __m256i a, __m256i w)
{
    __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(w));
    return acc;
}

/* Where quad t of the operand starts (see q8_gemm_quads_reference). */
static inline int64_t quad_at(const int64_t *off, int64_t t, int64_t np)
{
    return off ? off[t] : t * np * 4;
}

/* Channel r's bias (or 0) in every lane: where its accumulators start. */
Q8_VNNI static inline __m256i bias8(const int32_t *bias, int r)
{
    return _mm256_set1_epi32(bias ? bias[r] : 0);
}

/* The accumulators of 4 channels x 24 positions, as cols_4x24 with one vpdpbusd per 32
 * products: s[3r + j] holds channel r's positions 8j..8j+7, from bias[r] (bias may be
 * NULL). Always inlined, so that s lives in registers. */
Q8_VNNI static inline __attribute__((always_inline)) void
quads_acc_4x24(int64_t kquads, const int8_t *w, int64_t kq4, const uint8_t *a, const int64_t *off,
               int64_t np, const int32_t *bias, __m256i s[12])
{
    __m256i s00 = bias8(bias, 0), s01 = s00, s02 = s00, s10 = bias8(bias, 1), s11 = s10, s12 = s10;
    __m256i s20 = bias8(bias, 2), s21 = s20, s22 = s20, s30 = bias8(bias, 3), s31 = s30, s32 = s30;
    for (int64_t t = 0; t < kquads; t++) {
        const uint8_t *ap = a + quad_at(off, t, np);
        __m256i x0 = _mm256_loadu_si256((const __m256i *)ap);
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(ap + 32));
        __m256i x2 = _mm256_loadu_si256((const __m256i *)(ap + 64));
        __m256i w0 = wquad(w + 4 * t);
        s00 = dp(s00, x0, w0);
        s01 = dp(s01, x1, w0);
        s02 = dp(s02, x2, w0);
        __m256i w1 = wquad(w + kq4 + 4 * t);
        s10 = dp(s10, x0, w1);
        s11 = dp(s11, x1, w1);
        s12 = dp(s12, x2, w1);
        __m256i w2 = wquad(w + 2 * kq4 + 4 * t);
        s20 = dp(s20, x0, w2);
        s21 = dp(s21, x1, w2);
        s22 = dp(s22, x2, w2);
        __m256i w3 = wquad(w + 3 * kq4 + 4 * t);
        s30 = dp(s30, x0, w3);
        s31 = dp(s31, x1, w3);
        s32 = dp(s32, x2, w3);
    }
    s[0] = s00, s[1] = s01, s[2] = s02, s[3] = s10, s[4] = s11, s[5] = s12;
    s[6] = s20, s[7] = s21, s[8] = s22, s[9] = s30, s[10] = s31, s[11] = s32;
}

Q8_VNNI static inline __attribute__((always_inline)) void
quads_acc_1x24(int64_t kquads, const int8_t *w, const uint8_t *a, const int64_t *off, int64_t np,
               const int32_t *bias, __m256i s[3])
{
    __m256i s0 = bias8(bias, 0), s1 = s0, s2 = s0;
    for (int64_t t = 0; t < kquads; t++) {
        const uint8_t *ap = a + quad_at(off, t, np);
        __m256i w0 = wquad(w + 4 * t);
        s0 = dp(s0, _mm256_loadu_si256((const __m256i *)ap), w0);
        s1 = dp(s1, _mm256_loadu_si256((const __m256i *)(ap + 32)), w0);
        s2 = dp(s2, _mm256_loadu_si256((const __m256i *)(ap + 64)), w0);
    }
    s[0] = s0, s[1] = s1, s[2] = s2;
}

Q8_VNNI static void quads_4x24(int64_t kquads, const int8_t *w, int64_t kq4, const uint8_t *a,
                               const int64_t *off, int64_t np, const int32_t *bias, int32_t *c,
                               int64_t ldc)
{
    __m256i s[12];
    quads_acc_4x24(kquads, w, kq4, a, off, np, NULL, s);
    for (int r = 0; r < 4; r++)
        store_row3(c + r * ldc, bias ? bias[r] : 0, s[3 * r], s[3 * r + 1], s[3 * r + 2]);
}

Q8_VNNI static void quads_1x24(int64_t kquads, const int8_t *w, const uint8_t *a,
                               const int64_t *off, int64_t np, int32_t bias, int32_t *c)
{
    __m256i s[3];
    quads_acc_1x24(kquads, w, a, off, np, NULL, s);
    store_row3(c, bias, s[0], s[1], s[2]);
}

/* 32 bytes of K at k (16 when only 16 are left, the upper half zero). */
Q8_VNNI static inline __m256i load32(const void *p, int64_t k, int64_t kp)
{
    const uint8_t *b = (const uint8_t *)p + k;
    if (k + 32 <= kp)
        return _mm256_loadu_si256((const __m256i *)b);
    return _mm256_inserti128_si256(_mm256_setzero_si256(), _mm_loadu_si128((const __m128i *)b), 0);
}

/* Rows a0, a1 against 4 weight rows (kp apart): 8 accumulators of lane sums. */
Q8_VNNI static void dot_2x4(int64_t kp, const uint8_t *a0, const uint8_t *a1, const int8_t *w,
                            const int32_t *bias, int32_t *c0, int32_t *c1, int64_t cs)
{
    const int8_t *w0 = w, *w1 = w + kp, *w2 = w + 2 * kp, *w3 = w + 3 * kp;
    __m256i s00 = _mm256_setzero_si256(), s01 = s00, s02 = s00, s03 = s00;
    __m256i s10 = s00, s11 = s00, s12 = s00, s13 = s00;
    for (int64_t k = 0; k < kp; k += 32) {
        __m256i x0 = load32(a0, k, kp), x1 = load32(a1, k, kp);
        __m256i v = load32(w0, k, kp);
        s00 = dp(s00, x0, v);
        s10 = dp(s10, x1, v);
        v = load32(w1, k, kp);
        s01 = dp(s01, x0, v);
        s11 = dp(s11, x1, v);
        v = load32(w2, k, kp);
        s02 = dp(s02, x0, v);
        s12 = dp(s12, x1, v);
        v = load32(w3, k, kp);
        s03 = dp(s03, x0, v);
        s13 = dp(s13, x1, v);
    }
    store4(c0, cs, add_bias(hsum4(s00, s01, s02, s03), bias));
    store4(c1, cs, add_bias(hsum4(s10, s11, s12, s13), bias));
}

Q8_VNNI static int32_t dot_1x1_vnni(int64_t kp, const uint8_t *a0, const int8_t *w0)
{
    __m256i s = _mm256_setzero_si256();
    for (int64_t k = 0; k < kp; k += 32)
        s = dp(s, load32(a0, k, kp), load32(w0, k, kp));
    return hsum1(s);
}

Q8_VNNI void q8_gemm_dot_vnni(int64_t m, int64_t n, int64_t kp, const uint8_t *a, int64_t lda,
                              const int8_t *w, const int32_t *bias, int32_t *c, int64_t rs,
                              int64_t cs)
{
    for (int64_t i = 0; i < m; i += 2) {
        /* a last odd row runs as both rows of the tile (the same results, stored twice) */
        const uint8_t *a0 = a + i * lda, *a1 = i + 1 < m ? a0 + lda : a0;
        int32_t *c0 = c + i * rs, *c1 = i + 1 < m ? c0 + rs : c0;
        int64_t j = 0;
        for (; j + 4 <= n; j += 4)
            dot_2x4(kp, a0, a1, w + j * kp, bias ? bias + j : NULL, c0 + j * cs, c1 + j * cs, cs);
        for (int64_t r = 0; r < 2 && i + r < m; r++)
            for (int64_t jj = j; jj < n; jj++)
                c[(i + r) * rs + jj * cs] = (bias ? bias[jj] : 0) +
                                            dot_1x1_vnni(kp, a + (i + r) * lda, w + jj * kp);
    }
}

Q8_VNNI static inline __attribute__((always_inline)) void
quads_acc_4x8(int64_t kquads, const int8_t *w, int64_t kq4, const uint8_t *a, const int64_t *off,
              int64_t np, const int32_t *bias, __m256i s[4])
{
    __m256i s0 = bias8(bias, 0), s1 = bias8(bias, 1), s2 = bias8(bias, 2), s3 = bias8(bias, 3);
    for (int64_t t = 0; t < kquads; t++) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(a + quad_at(off, t, np)));
        s0 = dp(s0, x, wquad(w + 4 * t));
        s1 = dp(s1, x, wquad(w + kq4 + 4 * t));
        s2 = dp(s2, x, wquad(w + 2 * kq4 + 4 * t));
        s3 = dp(s3, x, wquad(w + 3 * kq4 + 4 * t));
    }
    s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3;
}

Q8_VNNI static inline __m256i quads_acc_1x8(int64_t kquads, const int8_t *w, const uint8_t *a,
                                            const int64_t *off, int64_t np, const int32_t *bias)
{
    __m256i s = bias8(bias, 0);
    for (int64_t t = 0; t < kquads; t++) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(a + quad_at(off, t, np)));
        s = dp(s, x, wquad(w + 4 * t));
    }
    return s;
}

Q8_VNNI static void quads_4x8(int64_t kquads, const int8_t *w, int64_t kq4, const uint8_t *a,
                              const int64_t *off, int64_t np, const int32_t *bias, int32_t *c,
                              int64_t ldc)
{
    __m256i s[4];
    quads_acc_4x8(kquads, w, kq4, a, off, np, NULL, s);
    for (int r = 0; r < 4; r++)
        _mm256_storeu_si256((__m256i *)(c + r * ldc),
                            _mm256_add_epi32(s[r], _mm256_set1_epi32(bias ? bias[r] : 0)));
}

Q8_VNNI static void quads_1x8(int64_t kquads, const int8_t *w, const uint8_t *a,
                              const int64_t *off, int64_t np, int32_t bias, int32_t *c)
{
    __m256i s = quads_acc_1x8(kquads, w, a, off, np, NULL);
    _mm256_storeu_si256((__m256i *)c, _mm256_add_epi32(s, _mm256_set1_epi32(bias)));
}

Q8_VNNI void q8_gemm_quads_vnni(int64_t m, int64_t kquads, const int8_t *w, int64_t kq4,
                                const uint8_t *a, const int64_t *off, int64_t np,
                                const int32_t *bias, int32_t *c, int64_t ldc)
{
    int64_t p = 0;
    for (; p + Q8_COLS_NR <= np; p += Q8_COLS_NR) {
        int64_t o = 0;
        for (; o + 4 <= m; o += 4)
            quads_4x24(kquads, w + o * kq4, kq4, a + p * 4, off, np, bias ? bias + o : NULL,
                       c + o * ldc + p, ldc);
        for (; o < m; o++)
            quads_1x24(kquads, w + o * kq4, a + p * 4, off, np, bias ? bias[o] : 0,
                       c + o * ldc + p);
    }
    for (; p < np; p += Q8_COLS_STEP) {
        int64_t o = 0;
        for (; o + 4 <= m; o += 4)
            quads_4x8(kquads, w + o * kq4, kq4, a + p * 4, off, np, bias ? bias + o : NULL,
                      c + o * ldc + p, ldc);
        for (; o < m; o++)
            quads_1x8(kquads, w + o * kq4, a + p * 4, off, np, bias ? bias[o] : 0,
                      c + o * ldc + p);
    }
}

/* ---- the fused requantization epilogue (q8_gemm_quads_rq_vnni) ---- */

/* Where the 8 result bytes of grid positions q..q+7 go: bytes [0, n0) to d0 (row r, from
 * column c), and when the octet runs past the grid row (wp >= 8: into one more row at
 * most), bytes [sh, sh + n1) to d1 (row r + 1, from column 0). */
typedef struct octet_dst {
    int64_t d0, d1;
    int32_t n0, n1, sh;
} octet_dst;

static octet_dst octet_at(const q8_rq_rows *d, int64_t r, int64_t c)
{
    octet_dst o = {0, 0, 0, 0, 0};
    if (r >= d->rows)
        return o;
    int64_t in_row = d->wp - c < 8 ? d->wp - c : 8;
    int64_t n0 = d->ow - c < 0 ? 0 : d->ow - c;
    o.d0 = r * d->ow + c;
    o.n0 = (int32_t)(n0 < in_row ? n0 : in_row);
    if (in_row < 8 && r + 1 < d->rows) {
        o.d1 = (r + 1) * d->ow;
        o.n1 = (int32_t)(d->ow < 8 - in_row ? d->ow : 8 - in_row);
        o.sh = (int32_t)in_row;
    }
    return o;
}

/* The octets of `count` x 8 positions from grid position p on (r, c advance by 8).
 * Returns whether each is one whole 8-byte store (inside one grid row, some output bytes,
 * inside the plane): the usual case when wp is a multiple of 8. */
static bool octets_at(const q8_rq_rows *d, int64_t p, int count, octet_dst *o)
{
    int64_t r = p / d->wp, c = p % d->wp;
    bool simple = true;
    for (int j = 0; j < count; j++) {
        o[j] = octet_at(d, r, c);
        simple = simple && o[j].n0 > 0 && o[j].n1 == 0 && o[j].d0 + 8 <= d->room;
        c += 8;
        for (; c >= d->wp; c -= d->wp)
            r++;
    }
    return simple;
}

/* n bytes of v (little-endian) at out + at: one 8-byte store while it stays inside the
 * plane (the bytes beyond n are rewritten by the octets that follow), else exactly n. */
static inline void put_bytes(uint8_t *out, int64_t room, int64_t at, int32_t n, uint64_t v)
{
    if (at + 8 <= room)
        memcpy(out + at, &v, 8);
    else
        memcpy(out + at, &v, (size_t)n);
}

static inline void put_octet(uint8_t *out, int64_t room, const octet_dst *o, uint64_t v)
{
    if (o->n0 > 0)
        put_bytes(out, room, o->d0, o->n0, v);
    if (o->n1 > 0)
        put_bytes(out, room, o->d1, o->n1, v >> (8 * o->sh));
}

/* Channel o of a tile: `count` (1..3) accumulator vectors requantized, packed to bytes
 * (the saturating packs then a clamp of the bytes: the same as clamping the int32
 * values, since [lo, hi] lies inside the packs' ranges) and written to the output rows. */
Q8_VNNI static inline void rq_put(const q8_rq_rows *d, int64_t o, const __m256i *s, int count,
                                  const octet_dst *oct, bool simple)
{
    const q8_rq_chan *ch = &d->chan[o];
    __m256i r[3];
    if (ch->no_ties) {
        __m256i m = _mm256_set1_epi64x(ch->m0), add = _mm256_set1_epi64x(ch->add);
        __m128i cnt = _mm_cvtsi32_si128(ch->shift - 32);
        for (int j = 0; j < 3; j++)
            r[j] = j < count ? q8_rq_no_ties8(s[j], m, add, cnt) : r[0];
    } else {
        q8_rq_high k;
        q8_rq_high_init(&k, ch->m0, ch->shift, d->zp, d->lo, d->hi);
        for (int j = 0; j < 3; j++)
            r[j] = j < count ? q8_rq_high8(&k, s[j]) : r[0];
    }
    bool u8 = d->lo >= 0;
    __m256i bytes = q8_rq_pack32(r[0], r[1], r[2], r[2], u8);
    __m256i lo = _mm256_set1_epi8((char)d->lo), hi = _mm256_set1_epi8((char)d->hi);
    bytes = u8 ? _mm256_min_epu8(_mm256_max_epu8(bytes, lo), hi)
               : _mm256_min_epi8(_mm256_max_epi8(bytes, lo), hi);
    uint64_t v[3] = {(uint64_t)_mm256_extract_epi64(bytes, 0),
                     (uint64_t)_mm256_extract_epi64(bytes, 1),
                     (uint64_t)_mm256_extract_epi64(bytes, 2)};
    uint8_t *out = d->out + o * d->ldo;
    for (int j = 0; j < count; j++) {
        if (simple)
            memcpy(out + oct[j].d0, &v[j], 8);
        else
            put_octet(out, d->room, &oct[j], v[j]);
    }
}

/* The tiles of positions [p, end) (a multiple of Q8_COLS_STEP from p): 4 channels x 24
 * positions, then x 8. */
Q8_VNNI static void quads_rq_part(int64_t p, int64_t end, int64_t m, int64_t kquads,
                                  const int8_t *w, int64_t kq4, const uint8_t *a,
                                  const int64_t *off, int64_t np, const int32_t *bias,
                                  const q8_rq_rows *d)
{
    octet_dst oct[3];
    __m256i s[12];
    const int32_t *b = NULL;
    for (; p + Q8_COLS_NR <= end; p += Q8_COLS_NR) {
        bool simple = octets_at(d, p, 3, oct);
        int64_t o = 0;
        for (; o + 4 <= m; o += 4) {
            b = bias ? bias + o : NULL;
            quads_acc_4x24(kquads, w + o * kq4, kq4, a + p * 4, off, np, b, s);
            for (int r = 0; r < 4; r++)
                rq_put(d, o + r, s + 3 * r, 3, oct, simple);
        }
        for (; o < m; o++) {
            b = bias ? bias + o : NULL;
            quads_acc_1x24(kquads, w + o * kq4, a + p * 4, off, np, b, s);
            rq_put(d, o, s, 3, oct, simple);
        }
    }
    for (; p < end; p += Q8_COLS_STEP) {
        bool simple = octets_at(d, p, 1, oct);
        int64_t o = 0;
        for (; o + 4 <= m; o += 4) {
            b = bias ? bias + o : NULL;
            quads_acc_4x8(kquads, w + o * kq4, kq4, a + p * 4, off, np, b, s);
            for (int r = 0; r < 4; r++)
                rq_put(d, o + r, s + r, 1, oct, simple);
        }
        for (; o < m; o++) {
            b = bias ? bias + o : NULL;
            s[0] = quads_acc_1x8(kquads, w + o * kq4, a + p * 4, off, np, b);
            rq_put(d, o, s, 1, oct, simple);
        }
    }
}

Q8_VNNI void q8_gemm_quads_rq_vnni(int64_t m, int64_t kquads, const int8_t *w, int64_t kq4,
                                   const uint8_t *a, const int64_t *off, int64_t np,
                                   const int32_t *bias, const q8_rq_rows *d)
{
    quads_rq_part(0, np, m, kquads, w, kq4, a, off, np, bias, d);
}

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 || defined(__clang__) && __clang_major__ >= 12
#define Q8_HAVE_AVX512 1
#define Q8_AVX512 __attribute__((target("avx2,avxvnni,avx512f,avx512bw,avx512vl,avx512vnni")))

/* AVX-512 VNNI (and CQAT_Q8_GEMM neither "avx2" nor "vnni256", which keep the 256-bit
 * kernels). */
bool q8_gemm_avx512_available(void)
{
    const char *env = getenv("CQAT_Q8_GEMM");
    return q8_gemm_vnni_available() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni") && !(env && strcmp(env, "vnni256") == 0);
}

/* dp on 16 lanes (inline asm for the reason given at dp). */
Q8_AVX512 static inline __m512i dp16(__m512i acc, __m512i a, __m512i w)
{
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(w));
    return acc;
}

Q8_AVX512 static inline __m512i wquad16(const int8_t *w)
{
    int32_t v;
    memcpy(&v, w, sizeof v);
    return _mm512_set1_epi32(v);
}

/* 4 channels x 16J positions (J = 1..3, a constant once inlined): s[3r + j] holds channel
 * r's positions 16j..16j+15. */
Q8_AVX512 static inline __attribute__((always_inline)) void
quads_acc_4x16j(int J, int64_t kquads, const int8_t *w, int64_t kq4, const uint8_t *a,
                const int64_t *off, int64_t np, const int32_t *bias, __m512i s[12])
{
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < J; j++)
            s[3 * r + j] = _mm512_set1_epi32(bias ? bias[r] : 0);
    for (int64_t t = 0; t < kquads; t++) {
        const uint8_t *ap = a + quad_at(off, t, np);
        __m512i x[3];
        for (int j = 0; j < J; j++)
            x[j] = _mm512_loadu_si512((const void *)(ap + 64 * j));
        for (int r = 0; r < 4; r++) {
            __m512i wr = wquad16(w + r * kq4 + 4 * t);
            for (int j = 0; j < J; j++)
                s[3 * r + j] = dp16(s[3 * r + j], x[j], wr);
        }
    }
}

/* One tile of 4 channels x 16J positions from p: the sums, then each channel's results
 * through the 256-bit epilogue in groups of 3 octets. */
Q8_AVX512 static inline __attribute__((always_inline)) void
quads_rq_4x16j(int J, int64_t p, int64_t m4, int64_t kquads, const int8_t *w, int64_t kq4,
               const uint8_t *a, const int64_t *off, int64_t np, const int32_t *bias,
               const q8_rq_rows *d)
{
    octet_dst oct[6];
    __m512i s[12];
    bool simple = true;
    for (int g = 0; 3 * g < 2 * J; g++) {
        int n = 2 * J - 3 * g < 3 ? 2 * J - 3 * g : 3;
        simple = octets_at(d, p + 24 * g, n, oct + 3 * g) && simple;
    }
    for (int64_t o = 0; o < m4; o += 4) {
        quads_acc_4x16j(J, kquads, w + o * kq4, kq4, a + p * 4, off, np, bias ? bias + o : NULL,
                        s);
        for (int r = 0; r < 4; r++) {
            __m256i h[6];
            for (int j = 0; j < J; j++) {
                h[2 * j] = _mm512_castsi512_si256(s[3 * r + j]);
                h[2 * j + 1] = _mm512_extracti64x4_epi64(s[3 * r + j], 1);
            }
            for (int g = 0; 3 * g < 2 * J; g++)
                rq_put(d, o + r, h + 3 * g, 2 * J - 3 * g < 3 ? 2 * J - 3 * g : 3, oct + 3 * g,
                       simple);
        }
    }
}

/* q8_gemm_quads_rq_vnni with tiles of 4 channels x 48 (then 32, 16) positions on 512-bit
 * vectors (the same sums, so the same bytes); the results go through the 256-bit
 * epilogue. The last positions (< 16) and channels (< 4) take the 256-bit tiles. */
Q8_AVX512 void q8_gemm_quads_rq_avx512(int64_t m, int64_t kquads, const int8_t *w, int64_t kq4,
                                       const uint8_t *a, const int64_t *off, int64_t np,
                                       const int32_t *bias, const q8_rq_rows *d)
{
    int64_t p = 0, m4 = m / 4 * 4;
    for (; m4 > 0 && p + 48 <= np; p += 48)
        quads_rq_4x16j(3, p, m4, kquads, w, kq4, a, off, np, bias, d);
    if (m4 > 0 && p + 32 <= np) {
        quads_rq_4x16j(2, p, m4, kquads, w, kq4, a, off, np, bias, d);
        p += 32;
    }
    if (m4 > 0 && p + 16 <= np) {
        quads_rq_4x16j(1, p, m4, kquads, w, kq4, a, off, np, bias, d);
        p += 16;
    }
    if (m4 < m && p > 0) { /* the last channels over the positions done above */
        q8_rq_rows e = *d;
        e.chan += m4;
        e.out += m4 * d->ldo;
        quads_rq_part(0, p, m - m4, kquads, w + m4 * kq4, kq4, a, off, np,
                      bias ? bias + m4 : NULL, &e);
    }
    quads_rq_part(p, np, m, kquads, w, kq4, a, off, np, bias, d);
}
#endif

#endif

#else /* not x86: the reference kernel stands in */

bool q8_gemm_avx2_available(void) { return false; }

void q8_gemm_avx2(int64_t m, int64_t n, int64_t kp, const uint8_t *a, int64_t lda,
                  const int16_t *b, const int32_t *bias, int32_t *c, int64_t rs, int64_t cs)
{
    q8_gemm_reference(m, n, kp, a, lda, b, bias, c, rs, cs);
}

void q8_gemm_cols_avx2(int64_t m, int64_t kpairs, const int16_t *w, int64_t kp, const int16_t *a,
                       int64_t np, const int32_t *bias, int32_t *c, int64_t ldc)
{
    q8_gemm_cols_reference(m, kpairs, w, kp, a, np, bias, c, ldc);
}

void q8_interleave_pairs_avx2(const uint8_t *r0, const uint8_t *r1, int64_t n, int16_t *dst)
{
    q8_interleave_pairs_reference(r0, r1, n, dst);
}

void q8_interleave_quads_avx2(const uint8_t *const r[4], int64_t n, uint8_t *dst)
{
    q8_interleave_quads_reference(r, n, dst);
}

void q8_taps_quads_avx2(const uint8_t *p, int64_t n, int64_t kw, int64_t dw, uint8_t *q)
{
    q8_taps_quads_reference(p, n, kw, dw, q);
}

#endif

#if !defined(Q8_HAVE_VNNI) /* no AVX-VNNI kernel: never chosen; the reference stands in */
void q8_gemm_dot_vnni(int64_t m, int64_t n, int64_t kp, const uint8_t *a, int64_t lda,
                      const int8_t *w, const int32_t *bias, int32_t *c, int64_t rs, int64_t cs)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            int32_t acc = bias ? bias[j] : 0;
            for (int64_t k = 0; k < kp; k++)
                acc += (int32_t)a[i * lda + k] * w[j * kp + k];
            c[i * rs + j * cs] = acc;
        }
}

bool q8_gemm_vnni_available(void) { return false; }

void q8_gemm_quads_rq_vnni(int64_t m, int64_t kquads, const int8_t *w, int64_t kq4,
                           const uint8_t *a, const int64_t *off, int64_t np, const int32_t *bias,
                           const q8_rq_rows *d)
{
    q8_gemm_quads_rq_reference(m, kquads, w, kq4, a, off, np, bias, d);
}

void q8_gemm_quads_vnni(int64_t m, int64_t kquads, const int8_t *w, int64_t kq4,
                        const uint8_t *a, const int64_t *off, int64_t np, const int32_t *bias,
                        int32_t *c, int64_t ldc)
{
    q8_gemm_quads_reference(m, kquads, w, kq4, a, off, np, bias, c, ldc);
}
#endif

#if !defined(Q8_HAVE_AVX512) /* no AVX-512 kernel: never chosen; the 256-bit one stands in */
bool q8_gemm_avx512_available(void) { return false; }

void q8_gemm_quads_rq_avx512(int64_t m, int64_t kquads, const int8_t *w, int64_t kq4,
                             const uint8_t *a, const int64_t *off, int64_t np,
                             const int32_t *bias, const q8_rq_rows *d)
{
    q8_gemm_quads_rq_vnni(m, kquads, w, kq4, a, off, np, bias, d);
}
#endif
