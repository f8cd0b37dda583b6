/* Errors: every library function that can fail returns 0 on success or a negative
 * cnnb_status, and leaves a one-line message with context (file, dataset, line, key, layer)
 * that cnnb_error_message() returns. The message lives in thread-local storage, like errno,
 * so that no context object has to be threaded through every call. The library never exits:
 * only the program's main decides how to end. */
#ifndef CNNB_ERROR_H
#define CNNB_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cnnb_status {
  CNNB_OK = 0,
  CNNB_EINVAL = -1,   /* bad argument or value */
  CNNB_ENOMEM = -2,   /* allocation failed */
  CNNB_EIO = -3,      /* file missing, unreadable, not the expected format */
  CNNB_ECFG = -4,     /* malformed model file */
  CNNB_ESHAPE = -5,   /* shapes that do not fit */
  CNNB_EMPI = -6,     /* an MPI call failed or a rank reported failure */
  CNNB_ENUM = -7,     /* NaN or infinite numbers */
  CNNB_EINTR = -8,    /* stopped by a signal after a clean checkpoint */
} cnnb_status;

/* Sets the message (printf format) and returns code, so that `return cnnb_error(...)` reads well. */
int cnnb_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends context ("while loading X: ") to the current message; returns code. */
int cnnb_error_prefix(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *cnnb_error_message(void);
const char *cnnb_strerror(int code);
void cnnb_error_clear(void);

/* Logging through one function: level 0 error, 1 warning, 2 info, 3 debug. */
enum { CNNB_LOG_ERROR = 0, CNNB_LOG_WARN = 1, CNNB_LOG_INFO = 2, CNNB_LOG_DEBUG = 3 };
void cnnb_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cnnb_log_set_level(int level);

#ifdef __cplusplus
}
#endif
#endif
