#include "net/web.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit/sha256.h"
#include "net/grpc_wire.h"

/* ---- content types ------------------------------------------------------------------- */

/* prefix, then optionally "+proto", then the end or ';'. */
static int type_is(const uint8_t *v, size_t n, const char *prefix) {
  size_t p = strlen(prefix);

  if (n < p || strncasecmp((const char *)v, prefix, p) != 0)
    return 0;
  v += p;
  n -= p;
  if (n >= 6 && strncasecmp((const char *)v, "+proto", 6) == 0) {
    v += 6;
    n -= 6;
  }
  while (n > 0 && (*v == ' ' || *v == '\t')) {
    v++;
    n--;
  }
  return n == 0 || *v == ';';
}

web_proto_t web_content_type(const uint8_t *v, size_t n) {
  if (v == NULL)
    return WEB_PROTO_NONE;
  if (type_is(v, n, "application/grpc-web-text"))
    return WEB_PROTO_TEXT;
  if (type_is(v, n, "application/grpc-web"))
    return WEB_PROTO_WEB;
  if (type_is(v, n, "application/grpc"))
    return WEB_PROTO_GRPC;
  return WEB_PROTO_NONE;
}

/* ---- base64 ------------------------------------------------------------------------------ */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t web_b64_encode(const uint8_t *in, size_t n, char *out) {
  size_t o = 0, i = 0;

  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = b64[v >> 18];
    out[o++] = b64[(v >> 12) & 63];
    out[o++] = b64[(v >> 6) & 63];
    out[o++] = b64[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[o++] = b64[v >> 18];
    out[o++] = b64[(v >> 12) & 63];
    out[o++] = '=';
    out[o++] = '=';
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = b64[v >> 18];
    out[o++] = b64[(v >> 12) & 63];
    out[o++] = b64[(v >> 6) & 63];
    out[o++] = '=';
  }
  return o;
}

static int b64_value(uint8_t c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+' || c == '-')
    return 62;
  if (c == '/' || c == '_')
    return 63;
  return -1;
}

/* One whole quantum: "xxxx", "xxx=" or "xx==". */
static long quantum(const uint8_t q[4], uint8_t *out) {
  int v[4];

  for (int i = 0; i < 4; i++)
    v[i] = q[i] == '=' ? -2 : b64_value(q[i]);
  if (v[0] < 0 || v[1] < 0)
    return -1;
  out[0] = (uint8_t)(v[0] << 2 | v[1] >> 4);
  if (v[2] == -2)
    return v[3] == -2 ? 1 : -1;
  if (v[2] < 0)
    return -1;
  out[1] = (uint8_t)((v[1] & 15) << 4 | v[2] >> 2);
  if (v[3] == -2)
    return 2;
  if (v[3] < 0)
    return -1;
  out[2] = (uint8_t)((v[2] & 3) << 6 | v[3]);
  return 3;
}

long web_b64_decode(web_b64_t *d, const uint8_t *in, size_t n, uint8_t *out) {
  long o = 0;

  for (size_t i = 0; i < n; i++) {
    d->q[d->nq++] = in[i];
    if (d->nq < 4)
      continue;
    d->nq = 0;
    long k = quantum(d->q, out + o);
    if (k < 0)
      return -1;
    o += k;
  }
  return o;
}

int web_b64_partial(const web_b64_t *d) {
  return d->nq != 0;
}

/* ---- the trailer frame ------------------------------------------------------------------ */

int web_trailer_frame(int status, const char *message, const char *details, uint8_t **out,
                      size_t *outlen) {
  size_t mlen = message ? strlen(message) : 0, dlen = details ? strlen(details) : 0;
  size_t cap = 5 + 32 + (mlen ? mlen + 18 : 0) + (dlen ? dlen + 30 : 0);
  uint8_t *b = malloc(cap);
  int n;

  if (b == NULL)
    return -ENOMEM;
  n = snprintf((char *)b + 5, cap - 5, "grpc-status: %d\r\n", status);
  if (mlen)
    n += snprintf((char *)b + 5 + n, cap - 5 - (size_t)n, "grpc-message: %s\r\n", message);
  if (dlen)
    n += snprintf((char *)b + 5 + n, cap - 5 - (size_t)n, "grpc-status-details-bin: %s\r\n",
                  details);
  b[0] = WEB_TRAILER_FLAG;
  b[1] = (uint8_t)((unsigned)n >> 24);
  b[2] = (uint8_t)((unsigned)n >> 16);
  b[3] = (uint8_t)((unsigned)n >> 8);
  b[4] = (uint8_t)n;
  *out = b;
  *outlen = 5 + (size_t)n;
  return 0;
}

/* ---- CORS ------------------------------------------------------------------------------- */

int web_origin_find(const char *const *origins, unsigned n, const uint8_t *v, size_t len) {
  for (unsigned i = 0; i < n; i++)
    if (strlen(origins[i]) == len && memcmp(origins[i], v, len) == 0)
      return (int)i;
  return -1;
}

static int tchar(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

int web_token_list_ok(const uint8_t *v, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (!tchar(v[i]) && v[i] != ',' && v[i] != ' ')
      return 0;
  return 1;
}

/* ---- paths -------------------------------------------------------------------------------- */

int web_hidden(const char *path) {
  static const char known[] = ".well-known";

  for (const char *seg = path; *seg; seg++) {
    if (*seg == '.' && (strncmp(seg, known, sizeof(known) - 1) != 0 ||
                        (seg[sizeof(known) - 1] != '/' && seg[sizeof(known) - 1] != '\0')))
      return 1;
    seg = strchr(seg, '/');
    if (seg == NULL)
      break;
  }
  return 0;
}

int web_path_clean(const char *target, char *out, size_t outlen) {
  size_t o = 0, seg = 0;
  const char *p;

  if (target[0] != '/')
    return -1;
  for (p = target + 1; *p && *p != '?' && *p != '#'; p++) {
    char c = *p;
    if (c == '%') {
      int hi = grpc_hex_digit(p[1]), lo = hi < 0 ? -1 : grpc_hex_digit(p[2]);
      if (lo < 0)
        return -1;
      c = (char)(hi << 4 | lo);
      p += 2;
      if (c == '/' || c == '\\' || c == '\0')
        return -1; /* an encoded separator or NUL names no file */
    } else if (c == '\\') {
      return -1;
    }
    if ((unsigned char)c < 0x20 || c == 0x7f)
      return -1;
    if (o + 1 >= outlen)
      return -1;
    if (c == '/') {
      /* the segment just ended: not empty, not "." nor ".." */
      if (o == seg || (o - seg == 1 && out[seg] == '.') ||
          (o - seg == 2 && out[seg] == '.' && out[seg + 1] == '.'))
        return -1;
      out[o++] = '/';
      seg = o;
      continue;
    }
    out[o++] = c;
  }
  if ((o - seg == 1 && out[seg] == '.') || (o - seg == 2 && out[seg] == '.' && out[seg + 1] == '.'))
    return -1;
  if (o > 0 && o == seg)
    return -1; /* a trailing '/' */
  out[o] = '\0';
  return 0;
}

static const char *extension(const char *path) {
  const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
  const char *dot = strrchr(base, '.');
  return dot && dot != base ? dot + 1 : NULL;
}

int web_has_extension(const char *path) {
  return extension(path) != NULL;
}

const char *web_mime(const char *path) {
  static const struct {
    const char *ext, *type;
  } types[] = {
      {"html", "text/html; charset=utf-8"},
      {"htm", "text/html; charset=utf-8"},
      {"js", "text/javascript; charset=utf-8"},
      {"mjs", "text/javascript; charset=utf-8"},
      {"css", "text/css; charset=utf-8"},
      {"json", "application/json"},
      {"map", "application/json"},
      {"webmanifest", "application/manifest+json"},
      {"svg", "image/svg+xml"},
      {"png", "image/png"},
      {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},
      {"webp", "image/webp"},
      {"ico", "image/x-icon"},
      {"woff2", "font/woff2"},
      {"woff", "font/woff"},
      {"ttf", "font/ttf"},
      {"txt", "text/plain; charset=utf-8"},
      {"csv", "text/csv; charset=utf-8"},
      {"wasm", "application/wasm"},
  };
  const char *ext = extension(path);

  if (ext != NULL)
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
      if (strcasecmp(ext, types[i].ext) == 0)
        return types[i].type;
  return "application/octet-stream";
}

/* "name-HASH.ext" or "name.HASH.ext" with HASH 8 or more of [A-Za-z0-9_], at least one a
 * digit or an upper-case letter (so "index-settings.js" is not taken for a hash). */
int web_hashed_asset(const char *path) {
  const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
  const char *ext = strrchr(base, '.'), *p;
  int mixed = 0;

  if (ext == NULL || ext == base)
    return 0;
  for (p = ext; p > base && p[-1] != '-' && p[-1] != '.'; p--) {
    char c = p[-1];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
      return 0;
    if ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'))
      mixed = 1;
  }
  return p > base + 1 && ext - p >= 8 && mixed;
}

int web_etag_match(const char *inm, const char *etag) {
  size_t n = strlen(etag);
  const char *p = inm;

  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    if (*p == '*')
      return 1;
    if (p[0] == 'W' && p[1] == '/') /* weak comparison, as RFC 9110 13.1.2 asks */
      p += 2;
    if (strncmp(p, etag, n) == 0 && (p[n] == '\0' || p[n] == ',' || p[n] == ' ' || p[n] == '\t'))
      return 1;
    while (*p && *p != ',')
      p++;
  }
  return 0;
}

/* f's entity tag, from what fstat says of it, so that a HEAD or a revalidation needs no read:
 * its length, and a digest of its device, inode and times. The status change time is in it
 * because a deploy may keep the modification time and the length (rsync -a, cp -p, a build
 * with fixed times: the console's index.html has the same length in every build), and
 * nothing sets the ctime back: any write or rename of the file moves it on. */
static void file_etag(web_file_t *f) {
  uint64_t key[7] = {(uint64_t)f->dev,           (uint64_t)f->ino,
                     (uint64_t)f->size,          (uint64_t)f->mtime.tv_sec,
                     (uint64_t)f->mtime.tv_nsec, (uint64_t)f->ctime.tv_sec,
                     (uint64_t)f->ctime.tv_nsec};
  uint8_t d[SHA256_LEN];
  char *p;

  (void)sha256_digest(key, sizeof(key), d);
  p = f->etag + snprintf(f->etag, WEB_ETAG_LEN, "\"%llx-", (unsigned long long)f->len);
  for (int i = 0; i < 10; i++)
    p += sprintf(p, "%02x", d[i]);
  strcpy(p, "\"");
}

int web_file_get(web_file_t **list, const char *root, const char *rel, size_t max, int with_data,
                 web_file_t **out) {
  char path[PATH_MAX], real[PATH_MAX];
  size_t rlen = strlen(root), have = 0;
  struct stat st;
  web_file_t *f;
  int fd;

  if ((size_t)snprintf(path, sizeof(path), "%s/%s", root, rel) >= sizeof(path))
    return -ENOENT;
  /* Symlinks inside the directory may point anywhere inside it, never out of it. */
  if (realpath(path, real) == NULL)
    return -ENOENT;
  if (strncmp(real, root, rlen) != 0 || real[rlen] != '/')
    return -ENOENT;
  /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below anyway). */
  fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0)
    return -ENOENT;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return -ENOENT;
  }
  if ((uint64_t)st.st_size > max) {
    close(fd);
    return -EFBIG;
  }
  for (f = *list; f != NULL; f = f->next) {
    if (f->dev == st.st_dev && f->ino == st.st_ino && f->size == st.st_size &&
        f->mtime.tv_sec == st.st_mtim.tv_sec && f->mtime.tv_nsec == st.st_mtim.tv_nsec &&
        f->ctime.tv_sec == st.st_ctim.tv_sec && f->ctime.tv_nsec == st.st_ctim.tv_nsec) {
      close(fd);
      f->refs++;
      *out = f;
      return 0;
    }
  }
  f = malloc(sizeof(*f) + (with_data ? (size_t)st.st_size : 0));
  if (f == NULL) {
    close(fd);
    return -ENOMEM;
  }
  if (!with_data)
    have = (size_t)st.st_size;
  while (with_data && have < (size_t)st.st_size) {
    ssize_t n = read(fd, f->data + have, (size_t)st.st_size - have);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; /* shrank meanwhile: serve what is there */
    have += (size_t)n;
  }
  close(fd);
  f->refs = 1;
  f->dev = st.st_dev;
  f->ino = st.st_ino;
  f->size = st.st_size;
  f->mtime = st.st_mtim;
  f->ctime = st.st_ctim;
  f->len = have;
  f->has_data = with_data;
  file_etag(f);
  if (!with_data) { /* its own: never handed to a reply that sends the file */
    f->next = NULL;
    f->pprev = NULL;
    *out = f;
    return 0;
  }
  f->next = *list;
  f->pprev = list;
  if (*list)
    (*list)->pprev = &f->next;
  *list = f;
  *out = f;
  return 0;
}

void web_file_release(web_file_t *f) {
  if (f == NULL || --f->refs > 0)
    return;
  if (f->pprev != NULL) {
    *f->pprev = f->next;
    if (f->next)
      f->next->pprev = f->pprev;
  }
  free(f);
}
