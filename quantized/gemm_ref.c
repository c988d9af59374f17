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
