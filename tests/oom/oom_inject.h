/* oom_inject.h — make the k-th allocation of cqat's code fail (tests/oom/oom_inject.c). */
#ifndef CQAT_TESTS_OOM_INJECT_H
#define CQAT_TESTS_OOM_INJECT_H

#include <stdbool.h>

void oom_arm(long k);          /* the k-th allocation from now on (k >= 1) returns NULL */
bool oom_disarm(void);         /* stop; true if the failure was injected */
long oom_allocations_seen(void); /* allocations made since oom_arm */

#endif
