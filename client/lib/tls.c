#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "net.h"
#include "status.h"

static const unsigned char alpn_h2[] = "\x02h2";

/* The most useful line of OpenSSL's error queue, which is then emptied. */
static void ssl_reason(char *buf, size_t n) {
  unsigned long e = ERR_peek_last_error();

  if (e == 0)
    snprintf(buf, n, "%s", "unknown TLS error");
  else
    ERR_error_string_n(e, buf, n);
  ERR_clear_error();
}

/* ---- a socket BIO that never raises SIGPIPE -------------------------------------------- */

static int sock_write(BIO *b, const char *data, size_t len, size_t *done) {
  int fd = (int)(intptr_t)BIO_get_data(b);
  ssize_t n;

  BIO_clear_retry_flags(b);
  n = send(fd, data, len, MSG_NOSIGNAL);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      BIO_set_retry_write(b);
    return 0;
  }
  *done = (size_t)n;
  return 1;
}

static int sock_read(BIO *b, char *data, size_t len, size_t *done) {
  int fd = (int)(intptr_t)BIO_get_data(b);
  ssize_t n;

  BIO_clear_retry_flags(b);
  n = recv(fd, data, len, 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      BIO_set_retry_read(b);
    return 0;
  }
  if (n == 0)
    return 0; /* end of file: no retry flag */
  *done = (size_t)n;
  return 1;
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)b;
  (void)num;
  (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int sock_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

/* ---- the context ----------------------------------------------------------------------- */

static int no_password(char *buf, int size, int rwflag, void *u) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return 0; /* an encrypted key fails to load instead of prompting */
}

/* OpenSSL's words for a missing file are "system lib"; say what the system said. */
static int unreadable(const char *path, clue_status_t *st) {
  FILE *f;

  if (path == NULL)
    return 0;
  f = fopen(path, "r");
  if (f != NULL) {
    fclose(f);
    return 0;
  }
  clue__status_setf(st, CLUE_STATUS_INVALID_ARGUMENT, "cannot read %s: %s", path, strerror(errno));
  return 1;
}

int clue__tls_init(clue_tls_t *t, const char *ca_file, const char *cert_file, const char *key_file,
                   clue_status_t *st) {
  char why[256];
  const char *what;

  memset(t, 0, sizeof(*t));
  if (unreadable(ca_file, st) || unreadable(cert_file, st) || unreadable(key_file, st))
    return CLUE_EINVAL;
  ERR_clear_error();
  t->sock = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "libclue socket");
  if (t->sock == NULL || !BIO_meth_set_write_ex(t->sock, sock_write) ||
      !BIO_meth_set_read_ex(t->sock, sock_read) || !BIO_meth_set_ctrl(t->sock, sock_ctrl) ||
      !BIO_meth_set_create(t->sock, sock_create))
    goto nomem;
  t->ctx = SSL_CTX_new(TLS_client_method());
  if (t->ctx == NULL)
    goto nomem;
  SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_default_passwd_cb(t->ctx, no_password);
  SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
  if (SSL_CTX_set_alpn_protos(t->ctx, alpn_h2, sizeof(alpn_h2) - 1) != 0)
    goto nomem;
  what = ca_file;
  if (ca_file != NULL ? SSL_CTX_load_verify_locations(t->ctx, ca_file, NULL) != 1
                      : SSL_CTX_set_default_verify_paths(t->ctx) != 1)
    goto fail;
  if (cert_file != NULL) {
    what = cert_file;
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cert_file) != 1)
      goto fail;
    what = key_file != NULL ? key_file : cert_file;
    if (SSL_CTX_use_PrivateKey_file(t->ctx, what, SSL_FILETYPE_PEM) != 1)
      goto fail;
    if (SSL_CTX_check_private_key(t->ctx) != 1)
      goto fail;
  } else if (key_file != NULL) {
    clue__tls_clear(t);
    clue__status_set(st, CLUE_STATUS_INVALID_ARGUMENT, "a client key needs its certificate");
    return CLUE_EINVAL;
  }
  return 0;

fail:
  ssl_reason(why, sizeof(why));
  clue__tls_clear(t);
  clue__status_setf(st, CLUE_STATUS_INVALID_ARGUMENT, "cannot load %s: %s",
                    what != NULL ? what : "the system's CA certificates", why);
  return CLUE_EINVAL;
nomem:
  ERR_clear_error();
  clue__tls_clear(t);
  return clue__status_local(st, CLUE_ENOMEM);
}

void clue__tls_clear(clue_tls_t *t) {
  SSL_CTX_free(t->ctx);
  BIO_meth_free(t->sock);
  t->ctx = NULL;
  t->sock = NULL;
}

/* ---- handshake ------------------------------------------------------------------------- */

static int is_ip(const char *host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Why the handshake failed, in words a user can act on. */
static void handshake_reason(SSL *ssl, int err, char *buf, size_t n) {
  long v = SSL_get_verify_result(ssl);

  if (v != X509_V_OK) {
    snprintf(buf, n, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    ERR_clear_error();
  } else if (err == SSL_ERROR_SSL) {
    ssl_reason(buf, n);
  } else if (err == SSL_ERROR_SYSCALL && errno != 0) {
    snprintf(buf, n, "%s", strerror(errno));
    ERR_clear_error();
  } else {
    snprintf(buf, n, "connection closed during the TLS handshake");
    ERR_clear_error();
  }
}

int clue__tls_handshake(const clue_tls_t *t, int fd, const char *host, const char *target,
                        int64_t deadline, const volatile sig_atomic_t *cancel, SSL **out,
                        clue_status_t *st) {
  char why[256];
  SSL *ssl;
  BIO *bio;

  ERR_clear_error();
  ssl = SSL_new(t->ctx);
  if (ssl == NULL)
    goto nomem;
  bio = BIO_new(t->sock);
  if (bio == NULL) {
    SSL_free(ssl);
    goto nomem;
  }
  BIO_set_data(bio, (void *)(intptr_t)fd);
  SSL_set_bio(ssl, bio, bio); /* ssl owns bio */
  /* SSL_set1_host takes IP addresses too; SNI is for names only. */
  if (SSL_set1_host(ssl, host) != 1 || (!is_ip(host) && SSL_set_tlsext_host_name(ssl, host) != 1)) {
    SSL_free(ssl);
    goto nomem;
  }
  SSL_set_connect_state(ssl);
  for (;;) {
    struct pollfd pfd = {.fd = fd};
    int64_t left;
    int rc, err;

    errno = 0;
    rc = SSL_do_handshake(ssl);
    if (rc == 1)
      break;
    err = SSL_get_error(ssl, rc);
    if (err == SSL_ERROR_WANT_READ) {
      pfd.events = POLLIN;
    } else if (err == SSL_ERROR_WANT_WRITE) {
      pfd.events = POLLOUT;
    } else {
      handshake_reason(ssl, err, why, sizeof(why));
      SSL_free(ssl);
      clue__status_setf(st, CLUE_STATUS_UNAVAILABLE, "TLS handshake with %s failed: %s", target,
                        why);
      return st->code;
    }
    for (;;) {
      if (clue__net_cancelled(cancel)) {
        SSL_free(ssl);
        clue__status_setf(st, CLUE_STATUS_CANCELLED, "cancelled during the TLS handshake with %s",
                          target);
        return st->code;
      }
      left = deadline - clue__net_now_ms();
      if (left <= 0) {
        SSL_free(ssl);
        clue__status_setf(st, CLUE_STATUS_DEADLINE_EXCEEDED,
                          "deadline exceeded during the TLS handshake with %s", target);
        return st->code;
      }
      rc = poll(&pfd, 1, clue__net_poll_timeout(deadline, cancel));
      if (rc > 0 || (rc < 0 && errno != EINTR))
        break;
    }
  }
  *out = ssl;
  return 0;

nomem:
  ERR_clear_error();
  return clue__status_local(st, CLUE_ENOMEM);
}

/* ---- records ------------------------------------------------------------------------------ */

static ssize_t io_error(SSL *ssl, int rc, char *why, size_t whylen) {
  int err = SSL_get_error(ssl, rc);

  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    ERR_clear_error();
    return CLUE_TLS_AGAIN;
  }
  if (err == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    return 0;
  }
  if (err == SSL_ERROR_SYSCALL && ERR_peek_last_error() == 0) {
    if (errno == 0)
      return 0; /* closed without close_notify: still the end of the connection */
    snprintf(why, whylen, "%s", strerror(errno));
    return CLUE_TLS_ERROR;
  }
  ssl_reason(why, whylen);
  return CLUE_TLS_ERROR;
}

/* A write failed because the peer hung up: it may have said why first. A TLS 1.3 server that
 * refuses the client's certificate (or its lack of one) does so after the client's handshake
 * has ended, in an alert the client reads only if it looks. The alert's reason replaces the
 * write's "Broken pipe" in *why when there is one. */
static void peer_alert(SSL *ssl, char *why, size_t whylen) {
  char buf[256];
  int rc;

  ERR_clear_error();
  rc = SSL_read(ssl, buf, sizeof(buf));
  if (rc <= 0 && SSL_get_error(ssl, rc) == SSL_ERROR_SSL && ERR_peek_last_error() != 0)
    ssl_reason(why, whylen);
  ERR_clear_error();
}

ssize_t clue__tls_send(SSL *ssl, const void *data, size_t len, char *why, size_t whylen) {
  int rc;

  if (len == 0)
    return 0;
  ERR_clear_error();
  errno = 0;
  rc = SSL_write(ssl, data, len > INT32_MAX ? INT32_MAX : (int)len);
  if (rc > 0)
    return rc;
  rc = (int)io_error(ssl, rc, why, whylen);
  if (rc == CLUE_TLS_ERROR && (errno == EPIPE || errno == ECONNRESET))
    peer_alert(ssl, why, whylen);
  if (rc == 0) { /* the peer closed: for a writer that is an error */
    snprintf(why, whylen, "connection closed");
    return CLUE_TLS_ERROR;
  }
  return rc;
}

ssize_t clue__tls_recv(SSL *ssl, void *buf, size_t len, char *why, size_t whylen) {
  int rc;

  ERR_clear_error();
  errno = 0;
  rc = SSL_read(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
  if (rc > 0)
    return rc;
  return io_error(ssl, rc, why, whylen);
}

void clue__tls_close(SSL *ssl) {
  if (ssl == NULL)
    return;
  if (SSL_is_init_finished(ssl))
    (void)SSL_shutdown(ssl); /* one try: the socket is non-blocking and about to close */
  ERR_clear_error();
  SSL_free(ssl);
}
