/* Thread-local error message and leveled logging (see include/cnnb/error.h). */
#include "cnnb/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char err_msg[1024];
static int log_level = CNNB_LOG_INFO;

int cnnb_error(int code, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err_msg, sizeof err_msg, fmt, ap);
  va_end(ap);
  return code;
}

int cnnb_error_prefix(int code, const char *fmt, ...)
{
  char head[512], old[sizeof err_msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(head, sizeof head, fmt, ap);
  va_end(ap);
  memcpy(old, err_msg, sizeof old);
  /* Truncation is acceptable: the head names the context, the tail may be cut. */
  size_t h = strlen(head);
  memcpy(err_msg, head, h + 1);
  strncat(err_msg, old, sizeof err_msg - h - 1);
  return code;
}

const char *cnnb_error_message(void) { return err_msg[0] ? err_msg : "no error"; }
void cnnb_error_clear(void) { err_msg[0] = 0; }

const char *cnnb_strerror(int code)
{
  switch (code) {
  case CNNB_OK: return "success";
  case CNNB_EINVAL: return "invalid argument";
  case CNNB_ENOMEM: return "out of memory";
  case CNNB_EIO: return "input/output error";
  case CNNB_ECFG: return "malformed model file";
  case CNNB_ESHAPE: return "shape mismatch";
  case CNNB_EMPI: return "MPI failure";
  case CNNB_ENUM: return "non-finite numbers";
  case CNNB_EINTR: return "interrupted";
  default: return "unknown error";
  }
}

void cnnb_log_set_level(int level) { log_level = level; }

void cnnb_log(int level, const char *fmt, ...)
{
  static const char *tag[] = {"error", "warning", "info", "debug"};
  if (level > log_level) return;
  va_list ap;
  va_start(ap, fmt);
  FILE *f = level <= CNNB_LOG_WARN ? stderr : stdout;
  if (level <= CNNB_LOG_WARN) fprintf(f, "cnn-batch: %s: ", tag[level]);
  vfprintf(f, fmt, ap);
  fputc('\n', f);
  va_end(ap);
}
