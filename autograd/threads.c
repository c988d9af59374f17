/* threads.c — the one thread-count knob shared by OpenMP loops and OpenBLAS. */
#include "autograd/ag.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

static int ag_threads = 0; /* 0 until first set */

int ag_set_num_threads(int n)
{
    if (n <= 0) {
        const char *env = getenv("CQAT_NUM_THREADS");
        n = env ? atoi(env) : 0;
        if (n <= 0)
            n = omp_get_num_procs();
    }
    ag_threads = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    return n;
}

int ag_num_threads(void)
{
    if (ag_threads == 0)
        ag_set_num_threads(0);
    return ag_threads;
}
