#ifndef CLUE_LIB_STATUS_H
#define CLUE_LIB_STATUS_H

/* Building clue_status_t values inside libclue. */

#include "clue/client.h"

/**
 * Replace *st with code and a printf-formatted message. If the message cannot be allocated
 * the status keeps the code and a NULL message.
 */
void clue__status_setf(clue_status_t *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** Replace *st with code and a copy of msg (NULL: no message). */
void clue__status_set(clue_status_t *st, int code, const char *msg);

/**
 * Fill *st for a local error (CLUE_ENOMEM, CLUE_EINVAL) and return err, so that
 * "return clue__status_local(st, CLUE_ENOMEM);" reads as what it does.
 */
int clue__status_local(clue_status_t *st, int err);

/** printf into a new malloc'd string; NULL on out of memory. */
char *clue__str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
