/* ag_status.h — status codes and the last-error message shared by every room.
 *
 * Library functions that can fail because of user input, files or memory return
 * an ag_status (or NULL) and leave a readable message in a thread-local slot:
 *
 *     if (data_idx_load(path, &ds) != AG_OK)
 *         fprintf(stderr, "cqat: %s\n", ag_last_error());
 *
 * The message says what failed and where (file, dataset, op, shapes). Nothing in
 * the library calls exit(); AG_ASSERT is only for programmer errors (bugs).
 */
#ifndef CQAT_AG_STATUS_H
#define CQAT_AG_STATUS_H

#include <stdio.h>
#include <stdlib.h>

typedef enum ag_status {
    AG_OK = 0,
    AG_ERR_NOMEM,       /* an allocation failed */
    AG_ERR_SHAPE,       /* shapes do not fit the operation */
    AG_ERR_ARG,         /* a bad argument value (negative size, unknown name...) */
    AG_ERR_IO,          /* a file could not be opened, read or written */
    AG_ERR_FORMAT,      /* a file is malformed, truncated or of the wrong kind */
    AG_ERR_STATE,       /* called in the wrong state (e.g. backward without a tape) */
    AG_ERR_NUMERIC,     /* NaN or Inf where a finite value is required */
    AG_ERR_UNSUPPORTED, /* a valid request that cqat does not implement */
} ag_status;

/* Sets the thread's last error (printf-style) and returns `status`, so that
 * `return ag_error(AG_ERR_SHAPE, "...")` reads naturally. */
ag_status ag_error(ag_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prepends "context: " to the current message (e.g. the file being read), so a
 * low-level message gains the place it happened without losing its detail. */
void ag_error_context(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

const char *ag_last_error(void);   /* "" when no error is set; owned by the library */
ag_status ag_last_status(void);
void ag_error_clear(void);
const char *ag_status_name(ag_status status);

/* Always-on check for programmer errors: prints file, line and the condition, aborts. */
#define AG_ASSERT(cond)                                                              \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "cqat: internal error at %s:%d: %s\n", __FILE__, __LINE__, \
                    #cond);                                                          \
            abort();                                                                 \
        }                                                                            \
    } while (0)

#endif
