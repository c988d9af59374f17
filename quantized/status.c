/* status.c — the thread-local last-error slot of the integer runtime. */
#include "quantized/q8_status.h"

#include <stdarg.h>
#include <string.h>

enum { Q8_ERROR_MAX = 1024 };

static _Thread_local char q8_error_msg[Q8_ERROR_MAX];
static _Thread_local q8_status q8_error_code = Q8_OK;

q8_status q8_error(q8_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q8_error_msg, sizeof q8_error_msg, fmt, ap);
    va_end(ap);
    q8_error_code = status;
    return status;
}

void q8_error_context(const char *fmt, ...)
{
    char prefix[Q8_ERROR_MAX / 2];
    char old[Q8_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, q8_error_msg, sizeof old);
    snprintf(q8_error_msg, sizeof q8_error_msg, "%s: %.*s", prefix, Q8_ERROR_MAX / 2 - 4, old);
}

const char *q8_last_error(void) { return q8_error_msg; }

q8_status q8_last_status(void) { return q8_error_code; }

void q8_error_clear(void)
{
    q8_error_msg[0] = '\0';
    q8_error_code = Q8_OK;
}

const char *q8_status_name(q8_status status)
{
    switch (status) {
    case Q8_OK: return "ok";
    case Q8_ERR_NOMEM: return "out of memory";
    case Q8_ERR_SHAPE: return "shape error";
    case Q8_ERR_ARG: return "bad argument";
    case Q8_ERR_IO: return "I/O error";
    case Q8_ERR_FORMAT: return "bad file format";
    case Q8_ERR_STATE: return "bad state";
    case Q8_ERR_NUMERIC: return "bad number";
    case Q8_ERR_UNSUPPORTED: return "unsupported";
    }
    return "unknown status";
}
