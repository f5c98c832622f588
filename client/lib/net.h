#ifndef CLUE_LIB_NET_H
#define CLUE_LIB_NET_H

/* Sockets for libclue: target parsing, a monotonic clock and connecting with a deadline. */

#include <signal.h>
#include <stdint.h>

/** Why clue__net_connect() failed. */
typedef enum net_fail {
  NET_FAIL_RESOLVE,   /* name resolution failed; detail is the resolver's text */
  NET_FAIL_REFUSED,   /* every address refused the connection */
  NET_FAIL_TIMEOUT,   /* the deadline passed */
  NET_FAIL_CANCELLED, /* the cancel flag was raised */
  NET_FAIL_NOMEM,
  NET_FAIL_OTHER, /* another socket error; detail is strerror() text */
} net_fail_t;

/**
 * Split a target ("host:port", "host", "[v6]:port", "[v6]", bare IPv6) into a host and a
 * port string, the port defaulting to default_port. On success *host and *port are owned
 * by the caller (free them). Returns 0, CLUE_EINVAL or CLUE_ENOMEM.
 */
int clue__net_parse_target(const char *target, const char *default_port, char **host, char **port)
    __attribute__((warn_unused_result));

/** Milliseconds of a monotonic clock. */
int64_t clue__net_now_ms(void);

/**
 * How often a blocked call re-reads the cancel flag it watches. A signal that interrupts
 * the waiting thread wakes it at once; a flag raised without that (by another thread, by a
 * signal handled on another thread, or just before the wait began) is seen within this.
 */
#define CLUE_CANCEL_CHECK_MS 100

/** Whether the cancel flag (may be NULL) is up; an atomic read, as another thread may set it. */
int clue__net_cancelled(const volatile sig_atomic_t *cancel);

/**
 * The timeout for one poll() of a wait that ends at deadline (clue__net_now_ms() time; 0:
 * none) and watches cancel (may be NULL): what is left of the deadline (at least 1), at most
 * a minute, and at most CLUE_CANCEL_CHECK_MS while there is a flag to watch; -1 (no limit)
 * when there is neither. The caller checks the flag and the deadline itself after each poll.
 */
int clue__net_poll_timeout(int64_t deadline, const volatile sig_atomic_t *cancel);

/**
 * Connect a TCP socket to host:port, trying every address the resolver returns, giving up
 * at deadline (clue__net_now_ms() time) or when *cancel becomes non-zero (cancel may be NULL).
 * On success returns 0 and *fd is a connected non-blocking socket owned by the caller.
 * On failure returns -1, sets *why and points *detail at a static description (may be "").
 */
int clue__net_connect(const char *host, const char *port, int64_t deadline,
                      const volatile sig_atomic_t *cancel, int *fd, net_fail_t *why,
                      const char **detail) __attribute__((warn_unused_result));

#endif
