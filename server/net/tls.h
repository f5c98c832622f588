#ifndef CLUED_NET_TLS_H
#define CLUED_NET_TLS_H

/*
 * TLS for the server's connections: OpenSSL 3 over a libuv stream through memory BIOs, so
 * nothing ever blocks. Reads drive the handshake; plaintext reaches the connection through
 * the same uv_read_cb it uses for a cleartext socket, and tls_write() takes the place of
 * uv_write(). HTTP/2 code above sees no difference but these two calls.
 *
 * tls_server_t holds the configured files and the current SSL_CTX. Reloading (SIGHUP) builds
 * a new SSL_CTX and swaps it in only if the new files load: new connections use it, live
 * ones keep the one they started with (each SSL holds a reference to its SSL_CTX).
 */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct tls_server tls_server_t;
typedef struct tls_conn tls_conn_t;

/** The files a TLS listener serves from (PEM). client_ca NULL: no client certificates. */
typedef struct tls_files {
  const char *cert;      /* certificate chain, leaf first */
  const char *key;       /* private key, unencrypted */
  const char *client_ca; /* when set: require a client certificate issued by these CAs */
} tls_files_t;

/**
 * Load the files and build the server context (TLS 1.2 or later, ALPN "h2" or "http/1.1"). The
 * paths are copied. On success *out owns the new context (free with tls_server_free). On failure
 * the reason is logged. Errors: -EINVAL (a file does not load, or key and certificate disagree),
 * -ENOMEM.
 */
int tls_server_new(const tls_files_t *files, tls_server_t **out)
    __attribute__((warn_unused_result));

/**
 * Load the files again and use them for new connections. If they do not load, the reason
 * is logged and the context in use stays. Returns 0 or -EINVAL.
 */
int tls_server_reload(tls_server_t *t);

/** The notAfter of the certificate new connections get, in seconds since the epoch; 0 when
 * unknown or for NULL. */
int64_t tls_server_not_after(const tls_server_t *t);

/**
 * Log that the certificate new connections get expires soon (a warning, from 7 days before,
 * once a day) or has expired (an error, at once and then once an hour): clients then refuse
 * every handshake while nothing fails on the server's side. now_ms: the server's clock, in
 * ms since the epoch. Cheap when nothing is due: call it often. NULL is a no-op.
 */
void tls_server_check_expiry(tls_server_t *t, int64_t now_ms);

/** Free the server context (live connections keep their own reference). NULL is a no-op. */
void tls_server_free(tls_server_t *t);

/**
 * Start TLS on an accepted stream. label names the connection in log lines ("conn 7
 * (127.0.0.1:5000)"; copied). stream->data belongs to TLS from here on. On success *out is
 * owned by the caller, to be freed with tls_conn_free() once the stream is closed.
 * Errors: -ENOMEM.
 */
int tls_conn_new(tls_server_t *t, uv_stream_t *stream, const char *label, tls_conn_t **out)
    __attribute__((warn_unused_result));

/**
 * Before an orderly close: send close_notify, so the peer can tell the end of the data from
 * a truncation. Best effort and without a callback (the stream is about to close): nothing
 * is sent while a write is in flight or before the handshake completed. NULL is a no-op.
 */
void tls_close_notify(tls_conn_t *tc);

/**
 * Ciphertext of the connection not yet on the socket: records sealed in memory and the
 * write in flight. It counts as the connection's pending output (--write-timeout). 0 for
 * NULL.
 */
size_t tls_pending(const tls_conn_t *tc);

/** Free a connection's TLS state; only after its stream's close callback. NULL is a no-op. */
void tls_conn_free(tls_conn_t *tc);

/**
 * Like uv_read_start(): read_cb receives plaintext, UV_EOF when the peer closes (with or
 * without close_notify) and UV_EPROTO when the handshake or a record fails (the reason is
 * logged). alloc_cb provides the buffer ciphertext is read into; plaintext comes back in
 * the same buffer, so read_cb must be done with it when it returns.
 */
int tls_read_start(tls_conn_t *tc, uv_alloc_cb alloc_cb, uv_read_cb read_cb)
    __attribute__((warn_unused_result));

/**
 * Like uv_write() with one buffer, one write at a time: encrypt buf and send it; cb runs
 * once the ciphertext has been handed to the socket (or failed). buf must stay valid until
 * then: before the handshake completes it is kept, not copied. A write still waiting for
 * the handshake when the stream closes gets no callback. Errors: UV_EBUSY (a write is
 * pending), UV_EPROTO, UV_ENOMEM and uv_write()'s.
 */
int tls_write(tls_conn_t *tc, uv_write_t *req, const uv_buf_t *buf, uv_write_cb cb)
    __attribute__((warn_unused_result));

#endif
