/* oom_inject.c — allocation-failure injection for test_oom (linked with
 * -Wl,--wrap=malloc,...; see tests/meson.build).
 *
 * --wrap redirects only the calls made from objects linked statically into the test
 * program: cqat's own libraries (and Check's). libc, libhdf5 and OpenBLAS keep the real
 * allocator, so the test exercises exactly cqat's handling of a NULL from malloc. When
 * armed with k, the k-th allocation from then on fails (once) with ENOMEM. */
#include "oom_inject.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
int __real_posix_memalign(void **p, size_t align, size_t size);
void *__real_aligned_alloc(size_t align, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
int __wrap_posix_memalign(void **p, size_t align, size_t size);
void *__wrap_aligned_alloc(size_t align, size_t size);

static atomic_long countdown; /* 0: disarmed */
static atomic_bool fired;
static atomic_long seen;
static atomic_long armed_k;

void oom_arm(long k)
{
    atomic_store(&fired, false);
    atomic_store(&seen, 0);
    atomic_store(&armed_k, k);
    atomic_store(&countdown, k);
}

bool oom_disarm(void)
{
    atomic_store(&countdown, 0);
    return atomic_load(&fired);
}

long oom_allocations_seen(void) { return atomic_load(&seen); }

/* True if this allocation is the one to fail. */
static bool should_fail(void)
{
    if (atomic_load(&countdown) <= 0)
        return false;
    atomic_fetch_add(&seen, 1);
    if (atomic_fetch_sub(&countdown, 1) != 1)
        return false;
    atomic_store(&fired, true);
    /* Debugging a finding: CQAT_OOM_TRAP=k stops (SIGTRAP) at the k-th allocation's
     * failure, e.g. under gdb, to see which call it was. */
    const char *trap = getenv("CQAT_OOM_TRAP");
    if (trap && atol(trap) == atomic_load(&armed_k))
        __builtin_trap();
    errno = ENOMEM;
    return true;
}

void *__wrap_malloc(size_t size) { return should_fail() ? NULL : __real_malloc(size); }

void *__wrap_calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size)
{
    return should_fail() ? NULL : __real_realloc(p, size);
}

int __wrap_posix_memalign(void **p, size_t align, size_t size)
{
    return should_fail() ? ENOMEM : __real_posix_memalign(p, align, size);
}

void *__wrap_aligned_alloc(size_t align, size_t size)
{
    return should_fail() ? NULL : __real_aligned_alloc(align, size);
}
