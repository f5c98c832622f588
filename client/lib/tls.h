#ifndef CLUE_LIB_TLS_H
#define CLUE_LIB_TLS_H

/* TLS for libclue: a client context (CAs, client certificate, ALPN h2) and a blocking
 * handshake with a deadline over the connection's non-blocking socket. Records are sent
 * with MSG_NOSIGNAL like everything else libclue writes. */

#include <signal.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "clue/client.h"

/** A connection's TLS settings, built once by clue__tls_init(). */
typedef struct clue_tls {
  SSL_CTX *ctx;
  BIO_METHOD *sock; /* reads and writes the socket, writes with MSG_NOSIGNAL */
} clue_tls_t;

/**
 * Build the context: verify the server against ca_file (NULL: the system's CAs) and, when
 * cert_file is set, present that client certificate with key_file (NULL: the same file).
 * Returns 0; CLUE_EINVAL with the reason in *st when a file does not load; CLUE_ENOMEM.
 */
int clue__tls_init(clue_tls_t *t, const char *ca_file, const char *cert_file, const char *key_file,
                   clue_status_t *st) __attribute__((warn_unused_result));

/** Free what clue__tls_init() built; safe on a zeroed or cleared one. */
void clue__tls_clear(clue_tls_t *t);

/**
 * Handshake on the connected socket fd, checking the certificate against host (a name or
 * an IP address), until deadline (clue__net_now_ms() time) or *cancel. On success returns
 * 0 and *out owns the SSL (the socket stays the caller's). Otherwise returns a status code
 * with *st filled (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED) or CLUE_ENOMEM; target names
 * the server in messages.
 */
int clue__tls_handshake(const clue_tls_t *t, int fd, const char *host, const char *target,
                        int64_t deadline, const volatile sig_atomic_t *cancel, SSL **out,
                        clue_status_t *st) __attribute__((warn_unused_result));

/** Results of clue__tls_send()/clue__tls_recv() besides byte counts. */
enum {
  CLUE_TLS_AGAIN = -1, /* would block: wait for the socket */
  CLUE_TLS_ERROR = -2, /* the connection failed; a description is in the caller's buffer */
};

/** Send up to len bytes: the count sent, CLUE_TLS_AGAIN or CLUE_TLS_ERROR (why filled). */
ssize_t clue__tls_send(SSL *ssl, const void *data, size_t len, char *why, size_t whylen);

/** Receive: bytes (> 0), 0 at the server's close, CLUE_TLS_AGAIN or CLUE_TLS_ERROR. */
ssize_t clue__tls_recv(SSL *ssl, void *buf, size_t len, char *why, size_t whylen);

/** Say goodbye (close_notify) without waiting, and free the SSL. NULL is a no-op. */
void clue__tls_close(SSL *ssl);

#endif
