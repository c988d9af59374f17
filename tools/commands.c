/* commands.c — what the cqat subcommands share: failing with one clear line. */
#include "tools/commands.h"

#include <stdarg.h>
#include <stdio.h>

int cqat_fail(const char *cmd)
{
    const char *msg = ag_last_error();
    fprintf(stderr, "cqat %s: %s\n", cmd, *msg ? msg : "failed");
    return 1;
}

int cqat_fail_msg(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cqat %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

