/* init.c — torch.nn.init's uniform_, constant_ and kaiming_uniform_ on heap tensors.
 * Every function fills the tensor in memory order, one draw per element, so the
 * numbers depend only on the rng state and the order of the calls. */
#include "nn/layers.h"

#include <math.h>

void nn_init_uniform(ag_tensor *t, float lo, float hi, ag_rng *rng)
{
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = ag_rng_uniform_range(rng, lo, hi);
}

void nn_init_constant(ag_tensor *t, float value)
{
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = value;
}

int64_t nn_init_fan_in(const ag_tensor *t)
{
    if (t->ndim < 2)
        return t->ndim == 1 ? t->shape[0] : 1;
    return ag_shape_numel(t->ndim - 1, t->shape + 1);
}

void nn_init_kaiming_uniform(ag_tensor *t, double a, ag_rng *rng)
{
    // In double, as PyTorch computes the bound in Python: with a = sqrt(5) it is
    // 1 / sqrt(fan_in) up to the last bit.
    const int64_t fan_in = nn_init_fan_in(t);
    const double gain = sqrt(2.0 / (1.0 + a * a));
    const float bound = fan_in > 0 ? (float)(sqrt(3.0) * gain / sqrt((double)fan_in)) : 0.0f;
    nn_init_uniform(t, -bound, bound, rng);
}
