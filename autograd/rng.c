/* rng.c — PCG32; see ag_rng.h for the algorithm and why it is saved in checkpoints. */
#include "autograd/ag_rng.h"

#include <math.h>

static const uint64_t PCG_MULT = 6364136223846793005ULL;

uint32_t ag_rng_u32(ag_rng *rng)
{
    uint64_t old = rng->state;
    rng->state = old * PCG_MULT + rng->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31u));
}

void ag_rng_seed(ag_rng *rng, uint64_t seed, uint64_t stream)
{
    rng->state = 0;
    rng->inc = (stream << 1u) | 1u;
    ag_rng_u32(rng);
    rng->state += seed;
    ag_rng_u32(rng);
}

uint32_t ag_rng_below(ag_rng *rng, uint32_t n)
{
    /* Lemire: multiply-shift with rejection of the biased low zone. */
    uint64_t m = (uint64_t)ag_rng_u32(rng) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (uint64_t)ag_rng_u32(rng) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

float ag_rng_uniform(ag_rng *rng) { return (float)(ag_rng_u32(rng) >> 8) * 0x1.0p-24f; }

float ag_rng_uniform_range(ag_rng *rng, float lo, float hi)
{
    return lo + (hi - lo) * ag_rng_uniform(rng);
}

float ag_rng_normal(ag_rng *rng)
{
    /* Box-Muller; 1 - u keeps the log argument in (0, 1]. */
    double u1 = 1.0 - (double)ag_rng_uniform(rng);
    double u2 = (double)ag_rng_uniform(rng);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

void ag_rng_shuffle(ag_rng *rng, uint32_t *idx, uint32_t n)
{
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = ag_rng_below(rng, i);
        uint32_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}
