/* gemm_ref.c — the portable int8 GEMM: uint8 activations x int16-widened int8 weights ->
 * int32, the specification the AVX2 kernel is tested against (see q8_impl.h). */
#include "quantized/q8_impl.h"

void q8_gemm_reference(int64_t m, int64_t n, int64_t kp, const uint8_t *a, int64_t lda,
                       const int16_t *b, const int32_t *bias, int32_t *c, int64_t rs,
                       int64_t cs)
{
    for (int64_t i = 0; i < m; i++) {
        const uint8_t *ar = a + i * lda; // (kp)
        for (int64_t j = 0; j < n; j++) {
            const int16_t *br = b + j * kp; // (kp)
            int32_t acc = bias ? bias[j] : 0;
            for (int64_t k = 0; k < kp; k++)
                acc += (int32_t)ar[k] * (int32_t)br[k];
            c[i * rs + j * cs] = acc;
        }
    }
}

void q8_gemm_cols_reference(int64_t m, int64_t kpairs, const int16_t *w, int64_t kp,
                            const int16_t *a, int64_t np, const int32_t *bias, int32_t *c,
                            int64_t ldc)
{
    for (int64_t o = 0; o < m; o++) {
        const int16_t *wr = w + o * kp; // (kp)
        for (int64_t p = 0; p < np; p++) {
            int32_t acc = bias ? bias[o] : 0;
            for (int64_t t = 0; t < kpairs; t++) {
                const int16_t *ap = a + (t * np + p) * 2; // (2)
                acc += (int32_t)wr[2 * t] * ap[0] + (int32_t)wr[2 * t + 1] * ap[1];
            }
            c[o * ldc + p] = acc;
        }
    }
}

void q8_interleave_pairs_reference(const uint8_t *r0, const uint8_t *r1, int64_t n, int16_t *dst)
{
    for (int64_t p = 0; p < n; p++) {
        dst[2 * p] = r0[p];
        dst[2 * p + 1] = r1[p];
    }
}

void q8_gemm_quads_reference(int64_t m, int64_t kquads, const int8_t *w, int64_t kq4,
                             const uint8_t *a, const int64_t *off, int64_t np,
                             const int32_t *bias, int32_t *c, int64_t ldc)
{
    for (int64_t o = 0; o < m; o++) {
        const int8_t *wr = w + o * kq4; // (kq4)
        for (int64_t p = 0; p < np; p++) {
            int32_t acc = bias ? bias[o] : 0;
            for (int64_t t = 0; t < kquads; t++)
                for (int64_t s = 0; s < 4; s++)
                    acc += (int32_t)wr[4 * t + s] * a[(off ? off[t] : t * np * 4) + p * 4 + s];
            c[o * ldc + p] = acc;
        }
    }
}

void q8_gemm_quads_rq_reference(int64_t m, int64_t kquads, const int8_t *w, int64_t kq4,
                                const uint8_t *a, const int64_t *off, int64_t np,
                                const int32_t *bias, const q8_rq_rows *d)
{
    for (int64_t o = 0; o < m; o++) {
        const int8_t *wr = w + o * kq4; // (kq4)
        uint8_t *out = d->out + o * d->ldo;
        for (int64_t p = 0; p < np; p++) {
            int64_t r = p / d->wp, col = p % d->wp;
            if (r >= d->rows || col >= d->ow)
                continue;
            int32_t acc = bias ? bias[o] : 0;
            for (int64_t t = 0; t < kquads; t++)
                for (int64_t s = 0; s < 4; s++)
                    acc += (int32_t)wr[4 * t + s] * a[(off ? off[t] : t * np * 4) + p * 4 + s];
            out[r * d->ow + col] = q8_rq_byte(acc, d->chan[o].m0, d->chan[o].shift, d->zp, d->lo,
                                              d->hi);
        }
    }
}

void q8_interleave_quads_reference(const uint8_t *const r[4], int64_t n, uint8_t *dst)
{
    for (int64_t p = 0; p < n; p++)
        for (int64_t s = 0; s < 4; s++)
            dst[4 * p + s] = r[s][p];
}

void q8_taps_quads_reference(const uint8_t *p, int64_t n, int64_t kw, int64_t dw, uint8_t *q)
{
    for (int64_t x = 0; x < n; x++)
        for (int64_t j = 0; j < 4; j++)
            q[4 * x + j] = j < kw ? p[x + j * dw] : 0;
}
