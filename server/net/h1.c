#include "net/h1.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "net/grpc_status.h"
#include "net/grpc_wire.h"
#include "net/h2_conn.h"
#include "net/h2_stream.h"
#include "server.h"

#define H1_SCRATCH (16 * 1024) /* body bytes per chunk written */
#define H1_CHUNK_LINE 64       /* longest chunk-size line accepted */
#define H1_TRAILER_MAX 8192    /* request trailer section (chunked) accepted, then ignored */
/* A request answered before its body was read (refused) has the rest of its body read and
 * dropped, so the reply is not lost to a reset and the connection serves on, if it has at
 * most this much more than a valid request could have; a longer one closes the connection. */
#define H1_DISCARD_MAX (1u << 20)

/* Where the request being read stands. HEAD -> BODY -> DONE -> HEAD (the next request, once
 * the reply is out); any -> CLOSED (nothing more is read: the connection closes after the
 * reply in progress). */
typedef enum h1_in {
  H1_IN_HEAD,
  H1_IN_BODY,
  H1_IN_DONE,
  H1_IN_CLOSED,
} h1_in_t;

/* Where the reply stands. NONE -> HEAD -> BODY -> NONE (exchange done). */
typedef enum h1_out {
  H1_OUT_NONE, /* no reply yet */
  H1_OUT_HEAD, /* the head is built, not yet handed to the writer */
  H1_OUT_BODY, /* the stream's body is pulled as the socket takes it */
} h1_out_t;

typedef enum h1_chunk {
  CH_SIZE,  /* a chunk-size line */
  CH_DATA,  /* chunk data */
  CH_CRLF,  /* the CRLF after chunk data */
  CH_TRAIL, /* trailer lines until an empty one */
} h1_chunk_t;

struct h1 {
  h1_in_t in;
  h1_out_t out;
  h2_stream_t *cur; /* the current request's stream; NULL once its reply is out */
  int32_t next_id;  /* odd, as HTTP/2 client streams: calls are named conn#id */
  uint8_t *ibuf;    /* input not yet consumed: ibuf[ioff..ilen) */
  size_t ioff, ilen, icap;
  size_t in_limit;       /* reading stops while this much input waits */
  size_t scan;           /* bytes of the head already searched for its end */
  uint64_t head_started; /* loop time the current head's first byte came; 0: none */
  uint64_t remaining;    /* body bytes still to come (content-length, or this chunk) */
  uint64_t body_total;   /* chunked: body bytes so far */
  uint64_t body_limit;   /* the largest body accepted for the current request */
  size_t trail_bytes;
  size_t trail_scan; /* bytes of the current trailer line already checked */
  h1_chunk_t chunk;
  unsigned chunked : 1;      /* the request body is chunked */
  unsigned close_after : 1;  /* close once the current reply is out */
  unsigned http10 : 1;       /* the request was HTTP/1.0: no chunked reply */
  unsigned out_chunked : 1;  /* the reply body is chunked */
  unsigned cont_pending : 1; /* "100 Continue" to send before anything else */
  unsigned paused : 1;       /* reading stopped (input buffer full) */
  unsigned run_pending : 1;  /* h1_run has input to parse again */
  unsigned peer_eof : 1;     /* the peer half-closed: nothing more is read */
  char *head;                /* the reply head (or a whole refusal), owned */
  size_t headlen;
  uint8_t *scratch; /* chunk framing around pulled body bytes */
};

/* The one place the request side changes state. */
static void in_set(h1_t *h, h1_in_t to) {
  switch (to) {
  case H1_IN_HEAD: /* the exchange is over (the reply went out, the body was read) */
    assert(h->in == H1_IN_DONE || h->in == H1_IN_BODY);
    assert(h->cur == NULL && h->out == H1_OUT_NONE);
    break;
  case H1_IN_BODY:
    assert(h->in == H1_IN_HEAD);
    break;
  case H1_IN_DONE:
    assert(h->in == H1_IN_HEAD || h->in == H1_IN_BODY);
    break;
  case H1_IN_CLOSED:
    break; /* from anywhere: a refusal, a drain, the end of a closing exchange */
  }
  h->in = to;
}

/* The one place the reply side changes state. */
static void out_set(h1_t *h, h1_out_t to) {
  switch (to) {
  case H1_OUT_HEAD:
    assert(h->out == H1_OUT_NONE);
    break;
  case H1_OUT_BODY:
    assert(h->out == H1_OUT_HEAD && h->cur != NULL);
    break;
  case H1_OUT_NONE: /* a refusal of our own written, or a stream's reply all pulled */
    assert(h->out == H1_OUT_HEAD || h->out == H1_OUT_BODY);
    break;
  }
  h->out = to;
}

/* The reason phrase of each status the server sends (RFC 9110 15). */
static const char *reason(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 204:
    return "No Content";
  case 304:
    return "Not Modified";
  case 400:
    return "Bad Request";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 505:
    return "HTTP Version Not Supported";
  default: /* a status not listed: the phrase may be empty (RFC 9112 4), not made up */
    return "";
  }
}

int h1_start(h2_conn_t *c) {
  h1_t *h = calloc(1, sizeof(*h));
  size_t head_max = c->srv->cfg.max_header_list_bytes + H1_MAX_REQUEST_LINE + 4;

  if (h == NULL)
    return -ENOMEM;
  h->in = H1_IN_HEAD;
  h->out = H1_OUT_NONE;
  h->next_id = 1;
  h->in_limit = head_max > H1_INPUT_BUFFER ? head_max : H1_INPUT_BUFFER;
  c->h1 = h;
  c->proto = H2_PROTO_H1;
  /* HTTP/2 is not spoken here: its session (and the SETTINGS it queued) go. */
  nghttp2_session_del(c->session);
  c->session = NULL;
  return 0;
}

void h1_free(h1_t *h) {
  if (h == NULL)
    return;
  free(h->ibuf);
  free(h->head);
  free(h->scratch);
  free(h);
}

/* ---- refusals ----------------------------------------------------------------------------- */

/* A request that cannot be served: a whole reply of our own, then the connection closes.
 * Nothing more is read. */
static void refuse(h2_conn_t *c, int status, const char *why) {
  h1_t *h = c->h1;
  char buf[512];
  int n;

  log_info("conn %llu (%s): HTTP/1.1 request refused (%d): %s", (unsigned long long)c->id, c->peer,
           status, why);
  in_set(h, H1_IN_CLOSED);
  h->close_after = 1;
  h->cont_pending = 0;
  if (h->cur != NULL && h2_stream_live(h->cur) && !h2_stream_finished(h->cur)) {
    /* Its body cannot be read on: the call ends with a status (and the connection then). A
     * bound passed (413, 431) is not a malformed body. */
    int over = status == 413 || status == 431;
    snprintf(buf, sizeof(buf), "%s%s", over ? "" : "malformed request body: ", why);
    h->cur->ops->input_error(h->cur, over ? GRPC_RESOURCE_EXHAUSTED : GRPC_INVALID_ARGUMENT, buf);
    return;
  }
  if (h->cur != NULL || h->out != H1_OUT_NONE)
    return; /* a reply is under way: the close after it says enough */
  n = snprintf(buf, sizeof(buf),
               "HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
               "%zu\r\nconnection: close\r\n\r\n%s\n",
               status, reason(status), strlen(why) + 1, why);
  free(h->head);
  h->head = strdup(buf);
  if (h->head == NULL) {
    h2_conn_close(c, "out of memory");
    return;
  }
  h->headlen = (size_t)(n < (int)sizeof(buf) ? n : (int)sizeof(buf) - 1);
  out_set(h, H1_OUT_HEAD);
}

/* ---- input ------------------------------------------------------------------------------- */

static int tchar(uint8_t ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static uint8_t *find_crlf(uint8_t *p, size_t n) {
  for (size_t i = 0; i + 1 < n; i++)
    if (p[i] == '\r' && p[i + 1] == '\n')
      return p + i;
  return NULL;
}

/* A comma-separated header value holding token tok (case-insensitive). */
static int has_token(const uint8_t *v, size_t n, const char *tok) {
  size_t tl = strlen(tok), i = 0;

  while (i < n) {
    size_t s, e;
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    s = i;
    while (i < n && v[i] != ',')
      i++;
    e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    if (e - s == tl && strncasecmp((const char *)v + s, tok, tl) == 0)
      return 1;
  }
  return 0;
}

/* A Host field value, RFC 9112 3.2: uri-host [ ":" port ] (RFC 3986 3.2.2-3.2.3), empty
 * allowed. An IP-literal's inside is checked by its alphabet only: the value is not used to
 * route, only handed on as :authority, and must not be ambiguous. */
static int host_valid(const uint8_t *v, size_t n) {
  size_t i = 0;

#define UNRESERVED_OR_SUB(ch)                                                                      \
  (((ch) >= 'a' && (ch) <= 'z') || ((ch) >= 'A' && (ch) <= 'Z') || ((ch) >= '0' && (ch) <= '9') || \
   ((ch) != 0 && strchr("-._~!$&'()*+,;=", (ch)) != NULL))
  if (n > 0 && v[0] == '[') {
    for (i = 1; i < n && v[i] != ']'; i++)
      if (!UNRESERVED_OR_SUB(v[i]) && v[i] != ':' && v[i] != '%')
        return 0;
    if (i == n || i == 1)
      return 0;
    i++;
  } else {
    for (; i < n && v[i] != ':'; i++) {
      if (v[i] == '%') {
        if (i + 2 >= n || !isxdigit(v[i + 1]) || !isxdigit(v[i + 2]))
          return 0;
        i += 2;
      } else if (!UNRESERVED_OR_SUB(v[i])) {
        return 0;
      }
    }
  }
#undef UNRESERVED_OR_SUB
  if (i < n && v[i++] != ':')
    return 0;
  for (; i < n; i++) /* the port: digits, perhaps none */
    if (v[i] < '0' || v[i] > '9')
      return 0;
  return 1;
}

typedef struct h1_field {
  uint8_t *name, *value;
  size_t nlen, vlen;
} h1_field_t;

/* The largest request body a request may have: one message of --max-message-bytes (or the
 * smaller bound its method set, h2_stream_expect) with its prefix (as base64 for
 * grpc-web-text). */
static uint64_t body_limit(const h2_conn_t *c, const h2_stream_t *st) {
  uint64_t m = (st != NULL && st->dec.max_len < c->srv->cfg.max_message_bytes
                    ? st->dec.max_len
                    : c->srv->cfg.max_message_bytes) +
               GRPC_FRAME_PREFIX;
  if (st != NULL && st->proto == WEB_PROTO_TEXT)
    return (m + 2) / 3 * 4;
  return m;
}

/* A chunk-size line, RFC 9112 7.1: chunk-size [ chunk-ext ] CRLF, where
 *   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 * with a token for the name and a token or quoted-string for the value. Nothing else: a
 * front end that ends the line at a bare LF, or skips what follows the size, would read the
 * body otherwise, and request smuggling needs exactly such ambiguities. Returns the line's
 * length with its CRLF (the size in *size), 0 if it has not all come yet, -1 if it is
 * malformed (*why says how); a size of more than 15 hex digits is malformed. */
static ssize_t chunk_line(const uint8_t *p, size_t n, uint64_t *size, const char **why) {
  enum {
    L_SIZE,    /* hex digits */
    L_END,     /* after a quoted value: ";", whitespace or CRLF */
    L_WS_SEMI, /* whitespace after the size or a value: only ";" may follow */
    L_NAME_WS, /* after ";": whitespace, then the name */
    L_NAME,    /* the name */
    L_WS_EQ,   /* whitespace after a name: "=" or ";" must follow */
    L_VAL_WS,  /* after "=": whitespace, then the value */
    L_TOKEN,   /* a token value */
    L_QUOTED,  /* a quoted-string value */
    L_QPAIR,   /* after a backslash in it */
    L_CR,      /* the CR: the LF must follow */
  } st = L_SIZE;
  uint64_t v = 0;

  *why = "malformed chunk extension";
  for (size_t i = 0; i < n; i++) {
    uint8_t ch = p[i];
    int ws = ch == ' ' || ch == '\t';
    switch (st) {
    case L_SIZE: {
      int d = ch >= '0' && ch <= '9'   ? ch - '0'
              : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
              : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                       : -1;
      if (d >= 0) {
        if (i >= 15) {
          *why = "malformed chunk size";
          return -1;
        }
        v = v * 16 + (uint64_t)d;
        continue;
      }
      if (i == 0 || (ch != ';' && !ws && ch != '\r')) {
        *why = "malformed chunk size"; /* none, or "7zz", "0x7", "-1" */
        return -1;
      }
      st = ch == ';' ? L_NAME_WS : ws ? L_WS_SEMI : L_CR;
      break;
    }
    case L_END:
      if (ch == ';')
        st = L_NAME_WS;
      else if (ws)
        st = L_WS_SEMI;
      else if (ch == '\r')
        st = L_CR;
      else
        return -1;
      break;
    case L_WS_SEMI:
      if (ch == ';')
        st = L_NAME_WS;
      else if (!ws)
        return -1;
      break;
    case L_NAME_WS:
      if (tchar(ch))
        st = L_NAME;
      else if (!ws)
        return -1;
      break;
    case L_NAME:
      if (ch == '=')
        st = L_VAL_WS;
      else if (ch == ';')
        st = L_NAME_WS;
      else if (ws)
        st = L_WS_EQ;
      else if (ch == '\r')
        st = L_CR;
      else if (!tchar(ch))
        return -1;
      break;
    case L_WS_EQ:
      if (ch == '=')
        st = L_VAL_WS;
      else if (ch == ';')
        st = L_NAME_WS;
      else if (!ws)
        return -1;
      break;
    case L_VAL_WS:
      if (ch == '"')
        st = L_QUOTED;
      else if (tchar(ch))
        st = L_TOKEN;
      else if (!ws)
        return -1;
      break;
    case L_TOKEN:
      if (ch == ';')
        st = L_NAME_WS;
      else if (ws)
        st = L_WS_SEMI;
      else if (ch == '\r')
        st = L_CR;
      else if (!tchar(ch))
        return -1;
      break;
    case L_QUOTED: /* qdtext: HTAB, SP, VCHAR but '"' and '\\', obs-text */
      if (ch == '"')
        st = L_END;
      else if (ch == '\\')
        st = L_QPAIR;
      else if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
        return -1;
      break;
    case L_QPAIR:
      if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
        return -1;
      st = L_QUOTED;
      break;
    case L_CR:
      if (ch != '\n')
        return -1;
      *size = v;
      return (ssize_t)(i + 1);
    }
  }
  return 0;
}

/* One line of the trailer section after the last chunk, RFC 9112 7.1.2: a field line
 * (token ":" value without control bytes but HTAB) and its CRLF, or the empty line that ends
 * the section. The bytes before *scan were checked by an earlier call. Returns the line's
 * length with its CRLF, 0 if it has not all come yet (*scan: where to go on), -1 if it is
 * malformed: a bare CR or LF, a NUL, a folded line, no name. */
static ssize_t trailer_line(const uint8_t *p, size_t n, size_t *scan) {
  int in_value = *scan > 0 && memchr(p, ':', *scan) != NULL;

  for (size_t i = *scan; i < n; i++) {
    uint8_t ch = p[i];
    if (ch == '\r') {
      if (i + 1 == n) {
        *scan = i;
        return 0;
      }
      if (p[i + 1] != '\n' || (i > 0 && !in_value))
        return -1;
      return (ssize_t)(i + 2);
    }
    if (in_value) {
      if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
        return -1;
    } else if (ch == ':') {
      if (i == 0)
        return -1;
      in_value = 1;
    } else if (!tchar(ch)) {
      return -1;
    }
  }
  *scan = n;
  return 0;
}

/* A request target in absolute-form ("http://host:port/path?query", RFC 9112 3.2.2, which a
 * server must accept; proxies send it) is served as its origin-form: *path and *len become
 * its path and query (buf holds "/" and the query when the path is empty), and *authority
 * its authority. Another form is left as it is. Returns 0, or -1 for an absolute-form target
 * without an authority. */
static int absolute_form(const uint8_t **path, size_t *len, const uint8_t **authority,
                         size_t *authlen, char *buf, size_t bufsize) {
  const uint8_t *t = *path, *end = t + *len, *a, *rest;
  size_t skip;

  if (*len >= 7 && strncasecmp((const char *)t, "http://", 7) == 0)
    skip = 7;
  else if (*len >= 8 && strncasecmp((const char *)t, "https://", 8) == 0)
    skip = 8;
  else
    return 0;
  a = t + skip;
  for (rest = a; rest < end && *rest != '/' && *rest != '?'; rest++)
    ;
  if (rest == a)
    return -1;
  *authority = a;
  *authlen = (size_t)(rest - a);
  if (rest < end && *rest == '/') {
    *path = rest;
    *len = (size_t)(end - rest);
  } else if ((size_t)(end - rest) + 2 <= bufsize) {
    buf[0] = '/';
    memcpy(buf + 1, rest, (size_t)(end - rest));
    *path = (const uint8_t *)buf;
    *len = (size_t)(end - rest) + 1;
  } else {
    return -1;
  }
  return 0;
}

/* Parse one request head at ibuf + ioff of len bytes ending with CRLF CRLF at end. Makes the
 * stream and hands it the headers. Returns 0, or -1 when the request was refused. */
static int take_head(h2_conn_t *c, uint8_t *p, size_t len) {
  h1_t *h = c->h1;
  const server_config_t *cfg = &c->srv->cfg;
  uint8_t *end = p + len, *line, *sp1, *sp2, *eol;
  h1_field_t f[256];
  unsigned nf = 0;
  int64_t clen = -1;
  int te_chunked = 0, te_other = 0, keep_alive, conn_close = 0, conn_keep = 0, expect = 0;
  const uint8_t *host = NULL, *path, *authority = NULL;
  size_t hostlen = 0, pathlen, authlen = 0;
  char path_buf[H1_MAX_REQUEST_LINE + 2];
  h2_stream_t *st;
  int32_t id;

  /* The request line: method SP target SP version. */
  eol = find_crlf(p, len);
  for (sp1 = p; sp1 < eol && *sp1 != ' '; sp1++)
    if (!tchar(*sp1)) {
      refuse(c, 400, "malformed request line");
      return -1;
    }
  if (sp1 == p || sp1 == eol) {
    refuse(c, 400, "malformed request line");
    return -1;
  }
  for (sp2 = sp1 + 1; sp2 < eol && *sp2 != ' '; sp2++)
    if (*sp2 <= 0x20 || *sp2 == 0x7f) {
      refuse(c, 400, "malformed request target");
      return -1;
    }
  if (sp2 == sp1 + 1 || sp2 == eol) {
    refuse(c, 400, "malformed request line");
    return -1;
  }
  if (eol - (sp2 + 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
      (sp2[8] != '1' && sp2[8] != '0')) {
    refuse(c, 505, "only HTTP/1.1 and HTTP/1.0 are served (and HTTP/2 with prior knowledge)");
    return -1;
  }
  h->http10 = sp2[8] == '0';
  path = sp1 + 1;
  pathlen = (size_t)(sp2 - sp1 - 1);
  if (absolute_form(&path, &pathlen, &authority, &authlen, path_buf, sizeof(path_buf)) != 0) {
    refuse(c, 400, "malformed request target");
    return -1;
  }
  /* The header fields. */
  for (line = eol + 2; line < end - 2; line = eol + 2) {
    uint8_t *colon, *v, *ve;
    eol = find_crlf(line, (size_t)(end - line));
    if (line[0] == ' ' || line[0] == '\t') {
      refuse(c, 400, "obsolete header line folding");
      return -1;
    }
    for (colon = line; colon < eol && *colon != ':'; colon++)
      if (!tchar(*colon)) {
        refuse(c, 400, "malformed header field name");
        return -1;
      }
    if (colon == line || colon == eol) {
      refuse(c, 400, "malformed header field");
      return -1;
    }
    for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
      ;
    for (ve = eol; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
      ;
    for (uint8_t *q = v; q < ve; q++)
      if ((*q < 0x20 && *q != '\t') || *q == 0x7f) {
        refuse(c, 400, "control character in a header value");
        return -1;
      }
    if (nf == sizeof(f) / sizeof(f[0]) || nf >= cfg->max_header_count) {
      refuse(c, 431, "too many header fields");
      return -1;
    }
    for (uint8_t *q = line; q < colon; q++)
      if (*q >= 'A' && *q <= 'Z')
        *q = (uint8_t)(*q - 'A' + 'a');
    f[nf].name = line;
    f[nf].nlen = (size_t)(colon - line);
    f[nf].value = v;
    f[nf].vlen = (size_t)(ve - v);
#define NAME_IS(lit)                                                                               \
  (f[nf].nlen == sizeof(lit) - 1 && memcmp(f[nf].name, lit, sizeof(lit) - 1) == 0)
    if (NAME_IS("content-length")) {
      int64_t n = 0;
      if (f[nf].vlen == 0 || f[nf].vlen > 15) {
        refuse(c, 400, "malformed content-length");
        return -1;
      }
      for (size_t i = 0; i < f[nf].vlen; i++) {
        if (v[i] < '0' || v[i] > '9') {
          refuse(c, 400, "malformed content-length");
          return -1;
        }
        n = n * 10 + (v[i] - '0');
      }
      if (clen >= 0 && clen != n) {
        refuse(c, 400, "conflicting content-length headers");
        return -1;
      }
      clen = n;
      continue;
    }
    if (NAME_IS("transfer-encoding")) {
      if (f[nf].vlen == 7 && strncasecmp((const char *)v, "chunked", 7) == 0 && !te_chunked)
        te_chunked = 1;
      else
        te_other = 1;
      continue;
    }
    if (NAME_IS("connection")) {
      conn_close |= has_token(v, f[nf].vlen, "close");
      conn_keep |= has_token(v, f[nf].vlen, "keep-alive");
      continue;
    }
    if (NAME_IS("host")) {
      if (host != NULL) {
        refuse(c, 400, "more than one Host header");
        return -1;
      }
      host = v;
      hostlen = f[nf].vlen;
      continue;
    }
    if (NAME_IS("expect")) {
      if (f[nf].vlen == 12 && strncasecmp((const char *)v, "100-continue", 12) == 0)
        expect = 1;
      else {
        refuse(c, 400, "unsupported expectation");
        return -1;
      }
      continue;
    }
    /* Hop-by-hop fields and HTTP/2's own are not the call's metadata. */
    if (NAME_IS("keep-alive") || NAME_IS("upgrade") || NAME_IS("te") ||
        NAME_IS("proxy-connection") || NAME_IS("http2-settings"))
      continue;
#undef NAME_IS
    nf++;
  }
  if (te_other || (te_chunked && h->http10)) {
    refuse(c, 501, "unsupported transfer-encoding (only chunked)");
    return -1;
  }
  if (te_chunked && clen >= 0) {
    refuse(c, 400, "both transfer-encoding and content-length");
    return -1;
  }
  /* RFC 9112 3.2.2: the authority of an absolute-form target stands for Host, which is then
   * ignored. */
  if (authority != NULL) {
    host = authority;
    hostlen = authlen;
  }
  /* RFC 9112 3.2: an HTTP/1.1 request must name its host (HTTP/1.0 predates the field). */
  if (host == NULL && !h->http10) {
    refuse(c, 400, "no Host header (HTTP/1.1 requires one)");
    return -1;
  }
  if (host != NULL && !host_valid(host, hostlen)) {
    refuse(c, 400, "malformed Host header");
    return -1;
  }
  keep_alive = h->http10 ? conn_keep && !conn_close : !conn_close;
  if (!keep_alive)
    h->close_after = 1;
  if (c->state != H2_CONN_OPEN)
    h->close_after = 1;

  /* The request becomes a stream, as an HTTP/2 request would. */
  id = h->next_id;
  h->next_id = h->next_id >= INT32_MAX - 2 ? 1 : h->next_id + 2;
  if (c->srv->stream_accept(c->srv, c->id, id, &st) != 0) {
    refuse(c, 500, "out of memory");
    return -1;
  }
  h2_stream_attach(st, c, id);
  h->cur = st;
  c->handshaken = 1;
  c->last_active = uv_now(c->srv->loop);
  {
    static const uint8_t m[] = ":method", pa[] = ":path", au[] = ":authority", sc[] = ":scheme";
    const char *scheme = c->tls ? "https" : "http";
    int rc = h2_stream_recv_header(st, m, 7, p, (size_t)(sp1 - p));
    if (rc == 0)
      rc = h2_stream_recv_header(st, sc, 7, (const uint8_t *)scheme, strlen(scheme));
    if (rc == 0)
      rc = h2_stream_recv_header(st, pa, 5, path, pathlen);
    if (rc == 0 && host != NULL)
      rc = h2_stream_recv_header(st, au, 10, host, hostlen);
    for (unsigned i = 0; rc == 0 && i < nf; i++)
      rc = h2_stream_recv_header(st, f[i].name, f[i].nlen, f[i].value, f[i].vlen);
    if (rc != 0) {
      h->cur = NULL;
      h2_stream_detach(st, NGHTTP2_REFUSED_STREAM, NULL);
      refuse(c, 431, "request headers refused");
      return -1;
    }
  }
  h->body_limit = body_limit(c, st);
  h->chunked = (unsigned)te_chunked;
  h->chunk = CH_SIZE;
  h->body_total = 0;
  h->trail_bytes = 0;
  h->trail_scan = 0;
  h->remaining = te_chunked ? 0 : (uint64_t)(clen > 0 ? clen : 0);
  in_set(h, te_chunked || clen > 0 ? H1_IN_BODY : H1_IN_DONE);
  if (h->in == H1_IN_BODY && expect)
    h->cont_pending = 1;
  h2_stream_recv_headers_done(st);
  if (c->state == H2_CONN_CLOSING)
    return -1;
  if (h2_stream_live(st))
    h->body_limit = body_limit(c, st); /* the method may take less (a public one) */
  if (!te_chunked && clen > 0 && (uint64_t)clen > h->body_limit) {
    /* Over the limit before a byte of it is read: refused with the call's status at once
     * (h1_reply_start decides whether the body is then read and dropped or the connection
     * closes). */
    char why[160];
    snprintf(why, sizeof(why), "request body of %lld bytes exceeds the limit of %llu bytes%s",
             (long long)clen, (unsigned long long)h->body_limit,
             st->in_public ? " (a method that needs no token takes small requests)"
                           : " (--max-message-bytes)");
    h->cont_pending = 0;
    if (h2_stream_live(st))
      st->ops->input_error(st, GRPC_RESOURCE_EXHAUSTED, why);
    if (h->out == H1_OUT_NONE) /* nobody answered: the transport does */
      refuse(c, 413, why);
    return 0;
  }
  if (h->in == H1_IN_DONE && h2_stream_live(st))
    h2_stream_recv_end(st);
  return 0;
}

/* Read the head of the next request if it is all there. Returns 1 if one was taken, 0 if
 * more input is needed, -1 if the request was refused. */
static int read_head(h2_conn_t *c) {
  h1_t *h = c->h1;
  size_t head_max = c->srv->cfg.max_header_list_bytes;
  uint8_t *p;
  size_t avail, i;
  int rc;

  /* Empty lines before a request are ignored (RFC 9112 2.2). */
  while (h->ilen - h->ioff >= 2 && h->ibuf[h->ioff] == '\r' && h->ibuf[h->ioff + 1] == '\n') {
    h->ioff += 2;
    h->scan = 0;
  }
  p = h->ibuf + h->ioff;
  avail = h->ilen - h->ioff;
  if (avail == 0)
    return 0;
  if (h->head_started == 0)
    h->head_started = uv_now(c->srv->loop);
  for (i = h->scan > 3 ? h->scan - 3 : 0; i + 3 < avail; i++)
    if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n')
      break;
  if (i + 3 >= avail) {
    uint8_t *eol = find_crlf(p, avail < H1_MAX_REQUEST_LINE + 2 ? avail : H1_MAX_REQUEST_LINE + 2);
    /* A head that can never end with CRLF CRLF is refused now, not at the timeout. */
    for (size_t k = h->scan; k < avail; k++)
      if (p[k] == '\0' || (p[k] == '\n' && (k == 0 || p[k - 1] != '\r')) ||
          (k > 0 && p[k - 1] == '\r' && p[k] != '\n')) {
        refuse(c, 400, "bare CR, LF or NUL in the request head");
        return -1;
      }
    h->scan = avail;
    if (eol == NULL && avail > H1_MAX_REQUEST_LINE) {
      refuse(c, 414, "request line longer than 8192 bytes");
      return -1;
    }
    if (eol != NULL && avail - (size_t)(eol - p) > head_max + 4) {
      refuse(c, 431, "request header section larger than --max-header-bytes");
      return -1;
    }
    return 0;
  }
  {
    uint8_t *eol = find_crlf(p, avail);
    if ((size_t)(eol - p) > H1_MAX_REQUEST_LINE) {
      refuse(c, 414, "request line longer than 8192 bytes");
      return -1;
    }
    if (i + 4 - (size_t)(eol - p) > head_max + 4) {
      refuse(c, 431, "request header section larger than --max-header-bytes");
      return -1;
    }
    for (size_t k = 0; k < i; k++)
      if (p[k] == '\0' || (p[k] == '\n' && (k == 0 || p[k - 1] != '\r')) ||
          (p[k] == '\r' && p[k + 1] != '\n')) {
        refuse(c, 400, "bare CR, LF or NUL in the request head");
        return -1;
      }
  }
  h->ioff += i + 4;
  h->scan = 0;
  h->head_started = 0;
  rc = take_head(c, p, i + 4);
  return rc < 0 ? -1 : 1;
}

/* Hand body bytes to the stream while it lives (a stream that answered drops them). */
static void deliver(h2_conn_t *c, const uint8_t *p, size_t n) {
  h2_stream_t *st = c->h1->cur;
  if (n > 0 && st != NULL && h2_stream_live(st))
    h2_stream_recv_data(st, p, n);
}

static void body_done(h2_conn_t *c) {
  h1_t *h = c->h1;
  in_set(h, H1_IN_DONE);
  if (h->cur != NULL && h2_stream_live(h->cur))
    h2_stream_recv_end(h->cur);
  else if (h->cur == NULL && h->out == H1_OUT_NONE)
    in_set(h, H1_IN_HEAD); /* the reply went out before the body ended: on to the next request */
}

/* Feed what there is of the body. Returns 1 if it is complete, 0 if more is needed (or the
 * stream holds its input), -1 if the request was refused. */
static int read_body(h2_conn_t *c) {
  h1_t *h = c->h1;

  for (;;) {
    uint8_t *p = h->ibuf + h->ioff;
    size_t avail = h->ilen - h->ioff, k;

    if (h->cur != NULL && h2_stream_live(h->cur) && h->cur->in == H2_IN_HOLD)
      return 0; /* the caller is not known yet: the body waits (reading stops when full) */
    if (!h->chunked) {
      k = avail < h->remaining ? avail : (size_t)h->remaining;
      h->ioff += k;
      h->remaining -= k;
      deliver(c, p, k);
      /* The stream may have answered at once (an over-limit message), and the connection
       * then closes after the reply: the rest of the body is not read. */
      if (c->state == H2_CONN_CLOSING || h->in != H1_IN_BODY)
        return -1;
      if (h->remaining > 0)
        return 0;
      body_done(c);
      return 1;
    }
    switch (h->chunk) {
    case CH_SIZE: {
      const char *bad;
      uint64_t n = 0;
      ssize_t len = chunk_line(p, avail < H1_CHUNK_LINE ? avail : H1_CHUNK_LINE, &n, &bad);
      if (len < 0 || (len == 0 && avail >= H1_CHUNK_LINE)) {
        refuse(c, 400, len < 0 ? bad : "chunk-size line longer than 64 bytes");
        return -1;
      }
      if (len == 0)
        return 0;
      h->ioff += (size_t)len;
      h->body_total += n;
      if (h->body_total > h->body_limit) {
        char why[160];
        h2_stream_t *st = h->cur;
        snprintf(why, sizeof(why), "request body exceeds the limit of %llu bytes%s",
                 (unsigned long long)h->body_limit,
                 st != NULL && st->in_public
                     ? " (a method that needs no token takes small requests)"
                     : " (--max-message-bytes)");
        in_set(h, H1_IN_CLOSED);
        h->close_after = 1;
        if (st != NULL && h2_stream_live(st))
          st->ops->input_error(st, GRPC_RESOURCE_EXHAUSTED, why);
        else
          refuse(c, 413, why);
        return -1;
      }
      h->remaining = n;
      h->chunk = n == 0 ? CH_TRAIL : CH_DATA;
      break;
    }
    case CH_DATA:
      k = avail < h->remaining ? avail : (size_t)h->remaining;
      h->ioff += k;
      h->remaining -= k;
      deliver(c, p, k);
      /* The stream may have answered at once (an over-limit message), and the connection
       * then closes after the reply: the rest of the body is not read. */
      if (c->state == H2_CONN_CLOSING || h->in != H1_IN_BODY)
        return -1;
      if (h->remaining > 0)
        return 0;
      h->chunk = CH_CRLF;
      break;
    case CH_CRLF:
      if (avail < 2)
        return 0;
      if (p[0] != '\r' || p[1] != '\n') {
        refuse(c, 400, "chunk data not followed by CRLF");
        return -1;
      }
      h->ioff += 2;
      h->chunk = CH_SIZE;
      break;
    case CH_TRAIL: {
      ssize_t len = trailer_line(p, avail, &h->trail_scan);
      if (len < 0) {
        refuse(c, 400, "malformed trailer field");
        return -1;
      }
      if (len == 0) {
        if (h->trail_bytes + avail > H1_TRAILER_MAX) {
          refuse(c, 431, "request trailer section too large");
          return -1;
        }
        return 0;
      }
      h->trail_scan = 0;
      h->trail_bytes += (size_t)len;
      h->ioff += (size_t)len;
      if (h->trail_bytes > H1_TRAILER_MAX) {
        refuse(c, 431, "request trailer section too large");
        return -1;
      }
      if (len == 2) { /* the empty line: the request is complete (its trailers ignored) */
        body_done(c);
        return 1;
      }
      break;
    }
    }
  }
}

/* The peer half-closed, and parsing needs input that can no longer come. A call whose body
 * is cut ends with a status (its reply is the last); bytes of an unfinished head are
 * dropped. Either way nothing more is read: the connection closes once the replies to the
 * requests before are out. */
static void input_ended(h2_conn_t *c) {
  h1_t *h = c->h1;
  h2_stream_t *st = h->cur;
  size_t left = h->ilen - h->ioff;

  if (h->in == H1_IN_BODY && st != NULL && h2_stream_live(st)) {
    if (st->in == H2_IN_HOLD)
      return; /* its caller is not known yet: the body is parsed on once it is */
    if (!h2_stream_finished(st)) {
      in_set(h, H1_IN_CLOSED);
      h->close_after = 1;
      h->cont_pending = 0;
      st->ops->input_error(st, GRPC_INVALID_ARGUMENT,
                           "request body incomplete: the client half-closed the connection");
      return;
    }
  }
  if (h->in == H1_IN_HEAD && left > 0)
    log_info("conn %llu (%s): HTTP/1.1 peer half-closed inside a request: %zu bytes of it "
             "dropped",
             (unsigned long long)c->id, c->peer, left);
  in_set(h, H1_IN_CLOSED);
  h->close_after = 1;
}

/* Parse what the input buffer holds, as far as the exchange in progress lets. */
static void process(h2_conn_t *c) {
  h1_t *h = c->h1;

  while (c->state != H2_CONN_CLOSING) {
    int rc;
    if (h->in == H1_IN_HEAD) {
      if (h->cur != NULL || h->out != H1_OUT_NONE)
        return; /* the reply before it is still going out: pipelined requests wait */
      if (c->state != H2_CONN_OPEN) {
        in_set(h, H1_IN_CLOSED);
        return;
      }
      rc = read_head(c);
    } else if (h->in == H1_IN_BODY) {
      rc = read_body(c);
    } else {
      return;
    }
    if (rc == 0 && h->peer_eof)
      input_ended(c);
    if (rc <= 0)
      return;
  }
}

static void input_compact(h1_t *h) {
  if (h->ioff == h->ilen) {
    h->ioff = h->ilen = 0;
  } else if (h->ioff > 0) {
    memmove(h->ibuf, h->ibuf + h->ioff, h->ilen - h->ioff);
    h->ilen -= h->ioff;
    h->ioff = 0;
  }
}

/* Reading stops while the input buffer is full and goes on when it drains. */
static void input_flow(h2_conn_t *c) {
  h1_t *h = c->h1;
  int full = h->ilen - h->ioff >= h->in_limit || h->peer_eof;

  if (full && !h->paused) {
    h->paused = 1;
    h2_conn_read_pause(c, 1);
  } else if (!full && h->paused) {
    h->paused = 0;
    h2_conn_read_pause(c, 0);
  }
}

int h1_recv(h2_conn_t *c, const uint8_t *p, size_t n) {
  h1_t *h = c->h1;

  c->last_active = uv_now(c->srv->loop);
  if (h->in == H1_IN_CLOSED)
    return 0; /* refused: what follows is not read */
  input_compact(h);
  if (h->ilen + n > h->icap) {
    /* Reading goes on while less than in_limit waits (input_flow()), so a read (one buffer
     * of the loop's) brings it to at most in_limit + sizeof(rbuf): never grown past that. */
    size_t cap = h->icap ? h->icap : 4096, most = h->in_limit + sizeof(c->srv->rbuf);
    uint8_t *nb;
    while (cap < h->ilen + n)
      cap *= 2;
    if (cap > most && h->ilen + n <= most)
      cap = most;
    nb = realloc(h->ibuf, cap);
    if (nb == NULL) {
      h2_conn_close(c, "out of memory");
      return -1;
    }
    h->ibuf = nb;
    h->icap = cap;
  }
  memcpy(h->ibuf + h->ilen, p, n);
  h->ilen += n;
  process(c);
  if (c->state != H2_CONN_CLOSING)
    input_flow(c);
  return 0;
}

void h1_input_resume(h2_conn_t *c) {
  c->h1->run_pending = 1;
  c->flush_pending = 1;
}

void h1_run(h2_conn_t *c) {
  h1_t *h = c->h1;

  if (!h->run_pending)
    return;
  h->run_pending = 0;
  /* After the peer's EOF, with nothing left to read, process() is what tells a request it
   * cut short (input_ended()): a body whose first bytes were read before the EOF came. */
  if (h->in != H1_IN_CLOSED && (h->ilen > h->ioff || h->peer_eof)) {
    c->in_session = 1;
    process(c);
    c->in_session = 0;
  }
  if (c->state != H2_CONN_CLOSING && h->in != H1_IN_CLOSED)
    input_flow(c);
}

/* ---- output ------------------------------------------------------------------------------ */

int h1_reply_start(h2_conn_t *c, h2_stream_t *s, int status, const nghttp2_nv *nv, size_t n,
                   int chunked) {
  h1_t *h = c->h1;
  size_t cap = 128, len;
  char *b;

  assert(s == h->cur && h->out == H1_OUT_NONE);
  /* A streaming reply to a call that still reads its body (a bidi stream, reflection) is
   * no refusal: the body goes on being read, within its bound, until it ends. */
  if (h->in == H1_IN_BODY && !(chunked && s->in != H2_IN_DISCARD) &&
      (h->chunked || h->remaining > h->body_limit + H1_DISCARD_MAX)) {
    /* Answered before its body is read, and the rest is too long to read and drop: the
     * connection closes after the reply. */
    h->close_after = 1;
    in_set(h, H1_IN_CLOSED);
  }
  h->cont_pending = 0;
  if (h->peer_eof && h->in == H1_IN_DONE && h->ilen == h->ioff)
    h->close_after = 1; /* the peer half-closed and nothing of a next request came */
  if (chunked && h->http10) {
    chunked = 0; /* HTTP/1.0 knows no chunks: the body ends with the connection */
    h->close_after = 1;
  }
  for (size_t i = 0; i < n; i++)
    cap += nv[i].namelen + nv[i].valuelen + 4;
  b = malloc(cap);
  if (b == NULL)
    return -ENOMEM;
  len = (size_t)snprintf(b, cap, "HTTP/1.1 %d %s\r\n", status, reason(status));
  for (size_t i = 0; i < n; i++) {
    memcpy(b + len, nv[i].name, nv[i].namelen);
    len += nv[i].namelen;
    b[len++] = ':';
    b[len++] = ' ';
    memcpy(b + len, nv[i].value, nv[i].valuelen);
    len += nv[i].valuelen;
    b[len++] = '\r';
    b[len++] = '\n';
  }
  len += (size_t)snprintf(b + len, cap - len, "%s%s\r\n",
                          chunked ? "transfer-encoding: chunked\r\n" : "",
                          h->close_after ? "connection: close\r\n" : "");
  free(h->head);
  h->head = b;
  h->headlen = len;
  h->out_chunked = (unsigned)chunked;
  out_set(h, H1_OUT_HEAD);
  c->flush_pending = 1;
  return 0;
}

/* The reply is out: the stream goes (its call is told it closed), and the next request,
 * if any, may be read. */
static void exchange_done(h2_conn_t *c) {
  h1_t *h = c->h1;
  h2_stream_t *st = h->cur;

  h->cur = NULL;
  out_set(h, H1_OUT_NONE);
  c->last_active = uv_now(c->srv->loop);
  if (h->ilen == h->ioff && !h->paused) { /* nothing pipelined: the input buffer goes too */
    free(h->ibuf);
    h->ibuf = NULL;
    h->ioff = h->ilen = h->icap = 0;
  }
  if (st != NULL && h2_stream_live(st))
    h2_stream_detach(st, 0, NULL);
  if (h->close_after || c->state != H2_CONN_OPEN) {
    in_set(h, H1_IN_CLOSED);
    return;
  }
  if (h->in == H1_IN_DONE)
    in_set(h, H1_IN_HEAD);
  h->run_pending = 1;
  c->flush_pending = 1;
}

ssize_t h1_send(h2_conn_t *c, const uint8_t **data) {
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  h1_t *h = c->h1;
  h2_stream_t *st = h->cur;
  size_t n, off;
  int end;

  if (h->out == H1_OUT_NONE && h->cur == NULL && (h->scratch || h->head)) {
    /* The last exchange's bytes were copied out when this is called again: its buffers go
     * now, not at the next idle tick, so many short exchanges do not each hold them. */
    free(h->scratch);
    h->scratch = NULL;
    free(h->head);
    h->head = NULL;
  }
  if (h->cont_pending && h->out == H1_OUT_NONE) {
    h->cont_pending = 0;
    *data = (const uint8_t *)cont;
    return (ssize_t)(sizeof(cont) - 1);
  }
  switch (h->out) {
  case H1_OUT_NONE:
    return 0;
  case H1_OUT_HEAD:
    *data = (const uint8_t *)h->head;
    n = h->headlen;
    if (st == NULL) { /* a refusal of our own: head and body in one, and done */
      out_set(h, H1_OUT_NONE);
      in_set(h, H1_IN_CLOSED);
      return (ssize_t)n;
    }
    out_set(h, H1_OUT_BODY);
    return (ssize_t)n;
  case H1_OUT_BODY:
    break;
  }
  if (h->scratch == NULL && (h->scratch = malloc(H1_SCRATCH + 32)) == NULL) {
    h2_conn_close(c, "out of memory");
    return 0;
  }
  off = h->out_chunked ? 18 : 0; /* room for the chunk-size line */
  n = h2_stream_pull(st, h->scratch + off, H1_SCRATCH, &end);
  if (n == 0 && !end)
    return 0; /* nothing yet: the next write to the stream flushes again */
  if (h->out_chunked) {
    size_t start = off, total;
    if (n > 0) {
      char line[20];
      int k = snprintf(line, sizeof(line), "%zx\r\n", n);
      start = off - (size_t)k;
      memcpy(h->scratch + start, line, (size_t)k);
      memcpy(h->scratch + off + n, "\r\n", 2);
      total = off + n + 2;
    } else {
      total = off;
    }
    if (end) {
      memcpy(h->scratch + total, "0\r\n\r\n", 5);
      total += 5;
    }
    *data = h->scratch + start;
    n = total - start;
  } else {
    *data = h->scratch;
  }
  if (end)
    exchange_done(c);
  return (ssize_t)n;
}

int h1_want_read(const h2_conn_t *c) {
  return c->h1->in != H1_IN_CLOSED;
}

int h1_want_write(const h2_conn_t *c) {
  const h1_t *h = c->h1;
  return h->cur != NULL || h->out != H1_OUT_NONE || h->cont_pending;
}

int h1_idle(const h2_conn_t *c) {
  const h1_t *h = c->h1;
  return h->cur == NULL && h->out == H1_OUT_NONE && h->ilen == h->ioff;
}

int h1_peer_eof(h2_conn_t *c) {
  h1_t *h = c->h1;
  h2_stream_t *st = h->cur;

  h->peer_eof = 1;
  if (!h->paused) {
    h->paused = 1;
    h2_conn_read_pause(c, 1);
  }
  /* A reply going out while its call still makes it (a stream) is cancelled with the
   * connection, as a browser that went away expects. */
  if (st != NULL && h2_stream_live(st) && st->out != H2_OUT_IDLE && !h2_stream_finished(st))
    return 0;
  if (!h1_want_write(c) && (h->in == H1_IN_CLOSED || h->ilen == h->ioff))
    return 0; /* nothing to answer */
  /* Every request that came whole before the EOF is answered, in order (HTTP/1.1
   * pipelining), one at a time as ever: process() sees the end when it needs input that can
   * no longer come (input_ended), and the connection closes after the last reply. */
  h->run_pending = 1;
  return 1;
}

void h1_drain(h2_conn_t *c) {
  h1_t *h = c->h1;

  h->close_after = 1;
  if (h->cur == NULL && h->out == H1_OUT_NONE)
    in_set(h, H1_IN_CLOSED); /* between requests (a head begun is dropped): close now */
}

int h1_tick(h2_conn_t *c, uint64_t now) {
  h1_t *h = c->h1;
  uint64_t limit = c->srv->cfg.handshake_timeout_ms;
  char why[160];

  if (h->in != H1_IN_HEAD || h->head_started == 0 || limit == 0 || now - h->head_started < limit)
    return 0;
  snprintf(why, sizeof(why),
           "HTTP/1.1 request head not complete within %llu ms (--handshake-timeout)",
           (unsigned long long)limit);
  h2_conn_close(c, why);
  return 1;
}

void h1_release_idle(h2_conn_t *c) {
  h1_t *h = c->h1;

  if (h->ilen == h->ioff && !h->paused) {
    free(h->ibuf);
    h->ibuf = NULL;
    h->ioff = h->ilen = h->icap = 0;
  }
  if (h->cur == NULL && h->out == H1_OUT_NONE) {
    free(h->scratch);
    h->scratch = NULL;
    free(h->head);
    h->head = NULL;
  }
}
