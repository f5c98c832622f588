#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "net/grpc_status.h"

void clue_status_clear(clue_status_t *st) {
  if (st == NULL)
    return;
  free(st->message);
  st->message = NULL;
  free(st->details);
  st->details = NULL;
  st->details_len = 0;
  st->code = CLUE_STATUS_OK;
}

const char *clue_status_name(int code) {
  return grpc_status_name(code);
}

const char *clue_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
  case CLUE_ENOMEM:
    return "out of memory";
  case CLUE_EINVAL:
    return "invalid argument";
  case CLUE_EJSON:
    return "malformed JSON input";
  default:
    return "unknown error";
  }
}

static char *str_vprintf(const char *fmt, va_list ap) {
  va_list again;
  char *s;
  int n;

  va_copy(again, ap);
  n = vsnprintf(NULL, 0, fmt, again);
  va_end(again);
  if (n < 0 || (s = clue__malloc((size_t)n + 1)) == NULL)
    return NULL;
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  return s;
}

char *clue__str_printf(const char *fmt, ...) {
  va_list ap;
  char *s;

  va_start(ap, fmt);
  s = str_vprintf(fmt, ap);
  va_end(ap);
  return s;
}

void clue__status_setf(clue_status_t *st, int code, const char *fmt, ...) {
  va_list ap;

  clue_status_clear(st);
  st->code = code;
  va_start(ap, fmt);
  st->message = str_vprintf(fmt, ap);
  va_end(ap);
}

void clue__status_set(clue_status_t *st, int code, const char *msg) {
  clue_status_clear(st);
  st->code = code;
  st->message = msg != NULL ? clue__strdup(msg) : NULL;
}

int clue__status_local(clue_status_t *st, int err) {
  if (st != NULL)
    clue__status_set(
        st, err == CLUE_ENOMEM ? CLUE_STATUS_RESOURCE_EXHAUSTED : CLUE_STATUS_INVALID_ARGUMENT,
        clue_strerror(err));
  return err;
}
