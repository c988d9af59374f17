/* ag_rng.h — the seeded random number generator behind init, dropout and shuffling.
 *
 * Algorithm: PCG32 (O'Neill 2014, "PCG-XSH-RR 64/32"): a 64-bit LCG state
 * (multiplier 6364136223846793005) advanced by an odd increment, output by an
 * xorshift-high then a random rotation. Seeding follows pcg32_srandom_r:
 * state = 0, inc = (stream << 1) | 1, step, state += seed, step.
 * The whole state is two uint64 values, saved in checkpoints so that a resumed
 * run draws exactly the numbers an uninterrupted run would have drawn.
 *
 * Floats: uniform = (u32 >> 8) * 2^-24, in [0, 1) with 24 random bits (every value
 * exactly representable in float32). Normal: Box-Muller on two uniforms.
 */
#ifndef CQAT_AG_RNG_H
#define CQAT_AG_RNG_H

#include <stdint.h>

typedef struct ag_rng {
    uint64_t state;
    uint64_t inc; /* always odd */
} ag_rng;

void ag_rng_seed(ag_rng *rng, uint64_t seed, uint64_t stream);
uint32_t ag_rng_u32(ag_rng *rng);
/* Uniform integer in [0, n), n >= 1, without modulo bias (Lemire's method). */
uint32_t ag_rng_below(ag_rng *rng, uint32_t n);
float ag_rng_uniform(ag_rng *rng);                     /* [0, 1) */
float ag_rng_uniform_range(ag_rng *rng, float lo, float hi); /* [lo, hi) */
float ag_rng_normal(ag_rng *rng);                      /* mean 0, std 1 */
/* Fisher-Yates shuffle of idx[0..n). */
void ag_rng_shuffle(ag_rng *rng, uint32_t *idx, uint32_t n);

#endif
