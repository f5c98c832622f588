#include "net/tls.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* HTTP/2 over TLS forbids the TLS 1.2 suites RFC 9113 appendix A lists; these are all allowed
 * and every current client has one. TLS 1.3 suites are OpenSSL's defaults. */
#define TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"

/* Server preference: h2, then http/1.1 (gRPC-Web from browsers, the console's files). */
static const unsigned char alpn_protos[] = "\x02h2\x08http/1.1";

/* Ciphertext buffers up to this size stay with the connection between writes. */
#define TLS_OBUF_KEEP (16 * 1024)

/* Records of its own (answers to KeyUpdate, session tickets, alerts) a connection may have
 * waiting behind a write the peer does not take. Past it the peer is not reading: a TLS 1.3
 * client that sends KeyUpdate(update_requested) and never reads made the server queue a
 * KeyUpdate of its own for each, without bound. A write of the connection above is at most
 * 64 KiB (H2_WRITE_CHUNK), so what it seals stays well below. */
#define TLS_MAX_PENDING (256 * 1024)

/* A certificate closer than this to its notAfter is warned of, once a day; an expired one
 * (which every client refuses, while nothing fails on the server's side) is an error once an
 * hour. */
#define TLS_EXPIRY_WARN_MS (7 * 24 * 3600 * 1000LL)
#define TLS_EXPIRY_WARN_EVERY_MS (24 * 3600 * 1000LL)
#define TLS_EXPIRED_EVERY_MS (3600 * 1000LL)

struct tls_server {
  SSL_CTX *ctx; /* for new connections */
  char *cert, *key, *client_ca;
  int64_t not_after;        /* ctx's leaf certificate's notAfter, s since the epoch; 0: unknown */
  int64_t expiry_logged_ms; /* when its expiry was last logged; 0: not since it was loaded */
  unsigned expired_logged : 1; /* that line said it had expired */
};

typedef enum tls_state {
  TLS_HANDSHAKE, /* reading the peer's handshake; writes wait */
  TLS_OPEN,      /* records flow both ways */
  TLS_FAILED,    /* handshake or record error reported to the reader; nothing more happens */
} tls_state_t;

/* The one write the connection above may have outstanding. */
typedef enum tls_uwrite {
  UW_NONE,
  UW_WAITING, /* given before the handshake finished: plaintext kept, not yet encrypted */
  UW_SEALED,  /* encrypted into wbio, not yet on the socket */
  UW_SENDING, /* its ciphertext is in the uv_write in flight */
} tls_uwrite_t;

struct tls_conn {
  tls_state_t state;
  tls_uwrite_t uw;
  SSL *ssl;
  BIO *rbio, *wbio; /* memory BIOs, owned by ssl: ciphertext in from and out to the socket */
  uv_stream_t *stream;
  uv_read_cb read_cb;
  uv_write_t *ureq; /* the write of the connection above, and what it wants sent */
  uv_write_cb ucb;
  const char *ubase;
  size_t ulen;
  uv_write_t wreq;      /* our one write of ciphertext */
  unsigned sending : 1; /* wreq is in flight */
  unsigned got_any : 1; /* the peer has sent something */
  uint8_t *obuf;        /* ciphertext being written, owned */
  size_t ocap;
  size_t olen; /* bytes of obuf in the write in flight */
  char label[96];
};

/* ---- errors --------------------------------------------------------------------- */

/* The most useful line of OpenSSL's error queue, which is then emptied. */
static void ssl_reason(char *buf, size_t n) {
  unsigned long e = ERR_peek_last_error();

  if (e == 0)
    snprintf(buf, n, "%s", "unknown error");
  else
    ERR_error_string_n(e, buf, n);
  ERR_clear_error();
}

/* ---- the server context ------------------------------------------------------------ */

static int no_password(char *buf, int size, int rwflag, void *u) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return 0; /* an encrypted key fails to load instead of prompting on a terminal */
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
  unsigned char *sel;
  (void)ssl;
  (void)arg;

  if (SSL_select_next_proto(&sel, outlen, alpn_protos, sizeof(alpn_protos) - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol: h2 and http/1.1 only */
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

/* "CN=clued; expires Jan  1 00:00:00 2030 GMT" for the log. */
static void cert_summary(SSL_CTX *ctx, char *buf, size_t n) {
  X509 *x = SSL_CTX_get0_certificate(ctx);
  char subject[160] = "?", expiry[64] = "?";
  BIO *m;

  if (x == NULL) {
    snprintf(buf, n, "no certificate");
    return;
  }
  X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
  m = BIO_new(BIO_s_mem());
  if (m != NULL && ASN1_TIME_print(m, X509_get0_notAfter(x))) {
    int len = BIO_read(m, expiry, sizeof(expiry) - 1);
    expiry[len > 0 ? len : 0] = '\0';
  }
  BIO_free(m);
  snprintf(buf, n, "%s, expires %s", subject, expiry);
}

/* A time as OpenSSL prints it ("Jan  1 00:00:00 2030 GMT"). */
static void time_text(const ASN1_TIME *t, char *buf, size_t n) {
  BIO *m = BIO_new(BIO_s_mem());
  int len = 0;

  if (m != NULL && ASN1_TIME_print(m, t))
    len = BIO_read(m, buf, (int)n - 1);
  buf[len > 0 ? len : 0] = '\0';
  BIO_free(m);
}

/* 0 when the leaf certificate is valid now; otherwise logs why not and returns -EINVAL.
 * Clients refuse an expired or not yet valid certificate, so serving one would fail every
 * handshake, silently on the server's side: better refused where the operator looks. */
static int cert_valid_now(SSL_CTX *ctx, const char *path) {
  X509 *x = SSL_CTX_get0_certificate(ctx);
  char when[64];

  if (x == NULL)
    return 0;
  if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
    time_text(X509_get0_notAfter(x), when, sizeof(when));
    log_error("TLS: the certificate in %s expired on %s", path, when);
    return -EINVAL;
  }
  if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
    time_text(X509_get0_notBefore(x), when, sizeof(when));
    log_error("TLS: the certificate in %s is not valid before %s", path, when);
    return -EINVAL;
  }
  return 0;
}

/* The leaf certificate's notAfter in seconds since the epoch; 0 when there is none. */
static int64_t cert_not_after(SSL_CTX *ctx) {
  X509 *x = SSL_CTX_get0_certificate(ctx);
  struct tm tm;

  if (x == NULL || ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1)
    return 0;
  return (int64_t)timegm(&tm);
}

/* The context new connections get is ctx from now on: its expiry is to be watched anew. */
static void ctx_use(tls_server_t *t, SSL_CTX *ctx) {
  t->ctx = ctx;
  t->not_after = cert_not_after(ctx);
  t->expiry_logged_ms = 0;
  t->expired_logged = 0;
}

int64_t tls_server_not_after(const tls_server_t *t) {
  return t ? t->not_after : 0;
}

void tls_server_check_expiry(tls_server_t *t, int64_t now_ms) {
  int64_t left_ms;
  int expired;
  char when[64];

  if (t == NULL || t->not_after == 0)
    return;
  left_ms = t->not_after * 1000 - now_ms;
  if (left_ms > TLS_EXPIRY_WARN_MS)
    return;
  expired = left_ms <= 0;
  if (t->expiry_logged_ms != 0 && expired == t->expired_logged &&
      now_ms - t->expiry_logged_ms < (expired ? TLS_EXPIRED_EVERY_MS : TLS_EXPIRY_WARN_EVERY_MS))
    return;
  t->expiry_logged_ms = now_ms;
  t->expired_logged = (unsigned)expired;
  time_text(X509_get0_notAfter(SSL_CTX_get0_certificate(t->ctx)), when, sizeof(when));
  if (expired)
    log_error("TLS: the certificate served (%s) expired on %s: clients refuse every new "
              "handshake; renew it and send clued SIGHUP",
              t->cert, when);
  else
    log_warn("TLS: the certificate served (%s) expires on %s, in %lld h: from then clients "
             "refuse every new handshake; renew it and send clued SIGHUP",
             t->cert, when, (long long)(left_ms / 3600000));
}

/* OpenSSL's words for a missing file are "system lib"; say what the system said. */
static int unreadable(const char *path) {
  FILE *f;

  if (path == NULL)
    return 0;
  f = fopen(path, "r");
  if (f != NULL) {
    fclose(f);
    return 0;
  }
  log_error("TLS: cannot read %s: %s", path, strerror(errno));
  return 1;
}

static int ctx_build(const tls_server_t *t, SSL_CTX **out) {
  char why[256];
  const char *what;
  SSL_CTX *ctx;

  if (unreadable(t->cert) || unreadable(t->key) || unreadable(t->client_ca))
    return -EINVAL;
  ERR_clear_error();
  ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == NULL) {
    log_error("TLS: cannot create a context: out of memory");
    return -ENOMEM;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_NO_COMPRESSION);
  /* Idle connections give their 32 KiB of record buffers back. */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_default_passwd_cb(ctx, no_password);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
  SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"clued", 5);
  what = "cipher list";
  if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1)
    goto fail;
  what = t->cert;
  if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1)
    goto fail;
  what = t->key;
  if (SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1)
    goto fail;
  what = "the private key against the certificate";
  if (SSL_CTX_check_private_key(ctx) != 1)
    goto fail;
  if (cert_valid_now(ctx, t->cert) != 0) {
    SSL_CTX_free(ctx);
    return -EINVAL;
  }
  if (t->client_ca != NULL) {
    STACK_OF(X509_NAME) * names;
    what = t->client_ca;
    if (SSL_CTX_load_verify_locations(ctx, t->client_ca, NULL) != 1)
      goto fail;
    names = SSL_load_client_CA_file(t->client_ca);
    if (names == NULL)
      goto fail;
    SSL_CTX_set_client_CA_list(ctx, names); /* ctx owns names */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  }
  *out = ctx;
  return 0;

fail:
  ssl_reason(why, sizeof(why));
  log_error("TLS: cannot load %s: %s", what, why);
  SSL_CTX_free(ctx);
  return -EINVAL;
}

int tls_server_new(const tls_files_t *files, tls_server_t **out) {
  tls_server_t *t = calloc(1, sizeof(*t));
  SSL_CTX *ctx;
  char desc[256];
  int rc = -ENOMEM;

  if (t == NULL)
    return -ENOMEM;
  t->cert = strdup(files->cert);
  t->key = strdup(files->key);
  if (t->cert == NULL || t->key == NULL)
    goto fail;
  if (files->client_ca != NULL && (t->client_ca = strdup(files->client_ca)) == NULL)
    goto fail;
  rc = ctx_build(t, &ctx);
  if (rc != 0)
    goto fail;
  ctx_use(t, ctx);
  cert_summary(t->ctx, desc, sizeof(desc));
  log_info("TLS: serving certificate %s%s", desc,
           t->client_ca ? "; client certificates required" : "");
  *out = t;
  return 0;

fail:
  free(t->client_ca);
  free(t->key);
  free(t->cert);
  free(t);
  return rc;
}

int tls_server_reload(tls_server_t *t) {
  SSL_CTX *ctx;
  char desc[256];

  if (ctx_build(t, &ctx) != 0) {
    log_error("TLS: reload failed; still serving the previous certificate");
    return -EINVAL;
  }
  SSL_CTX_free(t->ctx); /* connections made with it hold their own reference */
  ctx_use(t, ctx);
  cert_summary(ctx, desc, sizeof(desc));
  log_info("TLS: reloaded; new connections get certificate %s", desc);
  return 0;
}

void tls_server_free(tls_server_t *t) {
  if (t == NULL)
    return;
  SSL_CTX_free(t->ctx);
  free(t->client_ca);
  free(t->key);
  free(t->cert);
  free(t);
}

/* ---- a connection: output -------------------------------------------------------- */

static void on_written(uv_write_t *req, int status);

/* Move what OpenSSL has written into wbio onto the socket, one uv_write at a time. */
static int send_out(tls_conn_t *tc) {
  size_t n;
  uv_buf_t b;
  int rc;

  if (tc->sending || uv_is_closing((uv_handle_t *)tc->stream))
    return 0;
  n = BIO_ctrl_pending(tc->wbio);
  if (n == 0)
    return 0;
  if (n > tc->ocap) {
    uint8_t *nb = realloc(tc->obuf, n);
    if (nb == NULL)
      return UV_ENOMEM;
    tc->obuf = nb;
    tc->ocap = n;
  }
  if (BIO_read(tc->wbio, tc->obuf, (int)n) != (int)n)
    return UV_EPROTO;
  b = uv_buf_init((char *)tc->obuf, (unsigned)n);
  rc = uv_write(&tc->wreq, tc->stream, &b, 1, on_written);
  if (rc < 0)
    return rc;
  tc->sending = 1;
  tc->olen = n;
  if (tc->uw == UW_SEALED)
    tc->uw = UW_SENDING;
  return 0;
}

static void on_written(uv_write_t *req, int status) {
  tls_conn_t *tc = container_of(req, tls_conn_t, wreq);

  tc->sending = 0;
  tc->olen = 0;
  if (tc->ocap > TLS_OBUF_KEEP) { /* one large reply must not pin its size for good */
    free(tc->obuf);
    tc->obuf = NULL;
    tc->ocap = 0;
  }
  if (tc->uw == UW_SENDING) {
    tc->uw = UW_NONE;
    tc->ucb(tc->ureq, status); /* may write again at once */
  }
  /* A failed write of our own (handshake, alert) shows up on the read side as well. */
  if (status == 0 && send_out(tc) < 0 && tc->uw == UW_SEALED) {
    tc->uw = UW_NONE;
    tc->ucb(tc->ureq, UV_EPROTO);
  }
}

/* Encrypt the waiting write into wbio and send. */
static int seal(tls_conn_t *tc) {
  int rc;

  ERR_clear_error();
  if (SSL_write(tc->ssl, tc->ubase, (int)tc->ulen) != (int)tc->ulen) {
    char why[256];
    ssl_reason(why, sizeof(why));
    log_warn("%s: TLS write failed: %s", tc->label, why);
    tc->uw = UW_NONE;
    return UV_EPROTO;
  }
  tc->uw = UW_SEALED;
  rc = send_out(tc);
  if (rc < 0)
    tc->uw = UW_NONE;
  return rc;
}

int tls_write(tls_conn_t *tc, uv_write_t *req, const uv_buf_t *buf, uv_write_cb cb) {
  if (tc->uw != UW_NONE)
    return UV_EBUSY;
  if (tc->state == TLS_FAILED)
    return UV_EPROTO;
  if (buf->len == 0 || buf->len > INT32_MAX)
    return UV_EINVAL;
  tc->ureq = req;
  tc->ucb = cb;
  tc->ubase = buf->base;
  tc->ulen = buf->len;
  tc->uw = UW_WAITING;
  if (tc->state == TLS_HANDSHAKE)
    return 0;
  return seal(tc);
}

/* ---- a connection: input ------------------------------------------------------------ */

/* Report a failure to the reader once, after a best-effort attempt to send the alert
 * OpenSSL has queued (the connection is about to close, so no callback can wait for it). */
static void fail(tls_conn_t *tc, const uv_buf_t *buf, const char *what, const char *detail) {
  size_t n = BIO_ctrl_pending(tc->wbio);

  log_info("%s: %s: %s", tc->label, what, detail);
  tc->state = TLS_FAILED;
  if (n > 0 && n <= 4096 && !tc->sending) {
    char alert[4096];
    if (BIO_read(tc->wbio, alert, (int)n) == (int)n) {
      uv_buf_t b = uv_buf_init(alert, (unsigned)n);
      (void)uv_try_write(tc->stream, &b, 1);
    }
  }
  tc->read_cb(tc->stream, UV_EPROTO, buf);
}

/* Why the handshake failed: the certificate check when it was the cause, else OpenSSL's. */
static void handshake_reason(tls_conn_t *tc, int err, char *buf, size_t n) {
  long v = SSL_get_verify_result(tc->ssl);

  if (v != X509_V_OK) {
    snprintf(buf, n, "client certificate rejected: %s", X509_verify_cert_error_string(v));
    ERR_clear_error();
  } else if (err == SSL_ERROR_SSL) {
    ssl_reason(buf, n);
  } else {
    snprintf(buf, n, "SSL error %d", err);
    ERR_clear_error();
  }
}

/* A cleartext HTTP/2 client on the TLS port: tell it in its own language (GOAWAY
 * PROTOCOL_ERROR with a reason), since it cannot read a TLS alert. No SETTINGS: a client
 * that saw the connection come up would retry at once, again and again. */
static void refuse_cleartext(tls_conn_t *tc, const uv_buf_t *buf) {
  static const char why[] = "this server requires TLS";
  uint8_t frames[9 + 8 + sizeof(why) - 1] = {
      0, 0, 8 + sizeof(why) - 1,
      7, 0, 0,
      0, 0, 0, /* GOAWAY on stream 0 */
      0, 0, 0,
      0, 0, 0,
      0, 1, /* last stream 0, PROTOCOL_ERROR */
  };
  uv_buf_t b = uv_buf_init((char *)frames, sizeof(frames));

  memcpy(frames + 17, why, sizeof(why) - 1);
  (void)uv_try_write(tc->stream, &b, 1);
  fail(tc, buf, "cleartext HTTP/2 on the TLS port", "GOAWAY sent");
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  tls_conn_t *tc = st->data;
  char why[256];
  int rc, err;

  if (tc->state == TLS_FAILED)
    return;
  if (nread <= 0) {
    tc->read_cb(st, nread, buf);
    return;
  }
  if (!tc->got_any && nread >= 4 && memcmp(buf->base, "PRI ", 4) == 0) {
    refuse_cleartext(tc, buf); /* a TLS record never starts with 'P' */
    return;
  }
  tc->got_any = 1;
  if (BIO_write(tc->rbio, buf->base, (int)nread) != (int)nread) {
    fail(tc, buf, "TLS", "out of memory");
    return;
  }
  if (tc->state == TLS_HANDSHAKE) {
    ERR_clear_error();
    rc = SSL_do_handshake(tc->ssl);
    if (rc != 1) {
      err = SSL_get_error(tc->ssl, rc);
      if (err == SSL_ERROR_WANT_READ) {
        if ((rc = send_out(tc)) < 0)
          tc->read_cb(st, rc, buf);
        return;
      }
      handshake_reason(tc, err, why, sizeof(why));
      fail(tc, buf, "TLS handshake failed", why);
      return;
    }
    tc->state = TLS_OPEN;
    if (tc->uw == UW_WAITING && (rc = seal(tc)) < 0) {
      tc->read_cb(st, rc, buf);
      return;
    }
  }
  /* The ciphertext is in rbio now, so the read buffer can take the plaintext. Read only
   * while input waits: an SSL_read that finds nothing leaves a 16 KiB record buffer
   * allocated on every idle connection (SSL_MODE_RELEASE_BUFFERS frees it only after a
   * record). */
  while (BIO_ctrl_pending(tc->rbio) > 0 || SSL_has_pending(tc->ssl)) {
    ERR_clear_error();
    rc = SSL_read(tc->ssl, buf->base, (int)(buf->len > INT32_MAX ? INT32_MAX : buf->len));
    if (rc > 0) {
      uv_buf_t plain = uv_buf_init(buf->base, (unsigned)rc);
      tc->read_cb(st, rc, &plain);
      if (uv_is_closing((uv_handle_t *)st) || tc->state == TLS_FAILED)
        return;
      continue;
    }
    err = SSL_get_error(tc->ssl, rc);
    if (err == SSL_ERROR_WANT_READ)
      break;
    if (err == SSL_ERROR_ZERO_RETURN) { /* close_notify */
      tc->read_cb(st, UV_EOF, buf);
      return;
    }
    ssl_reason(why, sizeof(why));
    fail(tc, buf, "TLS record error", why);
    return;
  }
  /* Reading may have produced output too (TLS 1.3 key updates, session tickets). */
  if (BIO_ctrl_pending(tc->wbio) > TLS_MAX_PENDING) {
    snprintf(why, sizeof(why),
             "%zu bytes of TLS records wait for a peer that does not read (over %u): closing",
             (size_t)BIO_ctrl_pending(tc->wbio), TLS_MAX_PENDING);
    fail(tc, buf, "TLS output not read", why);
    return;
  }
  if ((rc = send_out(tc)) < 0)
    tc->read_cb(st, rc, buf);
}

size_t tls_pending(const tls_conn_t *tc) {
  if (tc == NULL)
    return 0;
  return BIO_ctrl_pending(tc->wbio) + (tc->sending ? tc->olen : 0);
}

int tls_read_start(tls_conn_t *tc, uv_alloc_cb alloc_cb, uv_read_cb read_cb) {
  tc->read_cb = read_cb;
  return uv_read_start(tc->stream, alloc_cb, on_read);
}

/* ---- a connection: life --------------------------------------------------------------- */

int tls_conn_new(tls_server_t *t, uv_stream_t *stream, const char *label, tls_conn_t **out) {
  tls_conn_t *tc = calloc(1, sizeof(*tc));

  if (tc == NULL)
    return -ENOMEM;
  tc->stream = stream;
  tc->state = TLS_HANDSHAKE;
  snprintf(tc->label, sizeof(tc->label), "%s", label);
  ERR_clear_error();
  tc->ssl = SSL_new(t->ctx);
  if (tc->ssl == NULL)
    goto fail;
  tc->rbio = BIO_new(BIO_s_mem());
  if (tc->rbio == NULL)
    goto fail_ssl;
  tc->wbio = BIO_new(BIO_s_mem());
  if (tc->wbio == NULL)
    goto fail_rbio;
  /* An empty rbio means "wait for more", not end of file. */
  BIO_set_mem_eof_return(tc->rbio, -1);
  BIO_set_mem_eof_return(tc->wbio, -1);
  SSL_set_bio(tc->ssl, tc->rbio, tc->wbio); /* ssl owns both from here */
  SSL_set_accept_state(tc->ssl);
  stream->data = tc;
  *out = tc;
  return 0;

fail_rbio:
  BIO_free(tc->rbio);
fail_ssl:
  SSL_free(tc->ssl);
fail:
  ERR_clear_error();
  free(tc);
  return -ENOMEM;
}

void tls_close_notify(tls_conn_t *tc) {
  char alert[256];
  size_t n;

  if (tc == NULL || tc->state != TLS_OPEN || tc->sending ||
      uv_is_closing((uv_handle_t *)tc->stream))
    return;
  ERR_clear_error();
  (void)SSL_shutdown(tc->ssl); /* queues close_notify in wbio; the peer's is not awaited */
  ERR_clear_error();
  n = BIO_ctrl_pending(tc->wbio);
  if (n > 0 && n <= sizeof(alert) && BIO_read(tc->wbio, alert, (int)n) == (int)n) {
    uv_buf_t b = uv_buf_init(alert, (unsigned)n);
    (void)uv_try_write(tc->stream, &b, 1);
  }
}

void tls_conn_free(tls_conn_t *tc) {
  if (tc == NULL)
    return;
  SSL_free(tc->ssl);
  free(tc->obuf);
  free(tc);
}
