/* status.c — the thread-local last-error slot. */
#include "autograd/ag_status.h"

#include <stdarg.h>
#include <string.h>

enum { AG_ERROR_MAX = 1024 };

static _Thread_local char ag_error_msg[AG_ERROR_MAX];
static _Thread_local ag_status ag_error_code = AG_OK;

ag_status ag_error(ag_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ag_error_msg, sizeof ag_error_msg, fmt, ap);
    va_end(ap);
    ag_error_code = status;
    return status;
}

void ag_error_context(const char *fmt, ...)
{
    char prefix[AG_ERROR_MAX / 2];
    char old[AG_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, ag_error_msg, sizeof old);
    snprintf(ag_error_msg, sizeof ag_error_msg, "%s: %.*s", prefix, AG_ERROR_MAX / 2 - 4, old);
}

const char *ag_last_error(void) { return ag_error_msg; }

ag_status ag_last_status(void) { return ag_error_code; }

void ag_error_clear(void)
{
    ag_error_msg[0] = '\0';
    ag_error_code = AG_OK;
}

const char *ag_status_name(ag_status status)
{
    switch (status) {
    case AG_OK: return "ok";
    case AG_ERR_NOMEM: return "out of memory";
    case AG_ERR_SHAPE: return "shape error";
    case AG_ERR_ARG: return "bad argument";
    case AG_ERR_IO: return "I/O error";
    case AG_ERR_FORMAT: return "bad file format";
    case AG_ERR_STATE: return "bad state";
    case AG_ERR_NUMERIC: return "non-finite value";
    case AG_ERR_UNSUPPORTED: return "unsupported";
    }
    return "unknown status";
}
