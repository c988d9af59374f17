/* q8_status.h — status codes and the last-error message of the integer runtime.
 *
 * quantized/ builds and embeds without the rest of cqat, so it carries its own copy of
 * the error convention of autograd/ag_status.h: functions that can fail because of user
 * input, files or memory return a q8_status (or NULL, or -1 for an id) and leave a
 * readable message in a thread-local slot:
 *
 *     q8_model *m = q8_model_load("lenet.h5");
 *     if (!m)
 *         fprintf(stderr, "q8: %s\n", q8_last_error());
 *
 * The message names the file, the node ("node 3 (conv2d 'features.0')") and the field
 * at fault. Nothing in the runtime calls exit(); Q8_ASSERT is only for bugs.
 */
#ifndef CQAT_Q8_STATUS_H
#define CQAT_Q8_STATUS_H

#include <stdio.h>
#include <stdlib.h>

typedef enum q8_status {
    Q8_OK = 0,
    Q8_ERR_NOMEM,       /* an allocation failed */
    Q8_ERR_SHAPE,       /* shapes do not chain or do not fit the op */
    Q8_ERR_ARG,         /* a bad argument value (unknown op or key, id out of range...) */
    Q8_ERR_IO,          /* a file could not be opened, read or written */
    Q8_ERR_FORMAT,      /* a model file is malformed, truncated or of the wrong kind */
    Q8_ERR_STATE,       /* called in the wrong state (e.g. reading a value before a run) */
    Q8_ERR_NUMERIC,     /* a bad number: non-finite scale or input, int32 overflow */
    Q8_ERR_UNSUPPORTED, /* a valid request that the runtime does not implement */
} q8_status;

/* Sets the thread's last error (printf-style) and returns `status`. */
q8_status q8_error(q8_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prepends "context: " to the current message (the file being read, say). */
void q8_error_context(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

const char *q8_last_error(void); /* "" when no error is set; owned by the library */
q8_status q8_last_status(void);
void q8_error_clear(void);
const char *q8_status_name(q8_status status);

/* Always-on check for programmer errors: prints file, line and the condition, aborts. */
#define Q8_ASSERT(cond)                                                                \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "cqat q8: internal error at %s:%d: %s\n", __FILE__, __LINE__, \
                    #cond);                                                            \
            abort();                                                                   \
        }                                                                              \
    } while (0)

#endif
