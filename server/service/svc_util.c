/* PostgreSQL array literals and joined lists for the service files. */

#include "service/svc_util.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "domain/validate.h"

const char *svc_id_array(rpc_call_t *call, const int64_t *ids, size_t n) {
  char *out = rpc_call_alloc(call, n * 21 + 3), *p = out;

  if (out == NULL)
    return NULL;
  *p++ = '{';
  for (size_t i = 0; i < n; i++)
    p += sprintf(p, "%s%lld", i ? "," : "", (long long)ids[i]);
  *p++ = '}';
  *p = '\0';
  return out;
}

/* Items are stored as validated: without the white space around them (validate.h). */
const char *svc_text_array_trimmed(rpc_call_t *call, char *const *items, size_t n) {
  size_t len = 3;
  char *out, *p;

  for (size_t i = 0; i < n; i++)
    len += strlen(items[i]) * 2 + 3;
  if ((out = p = rpc_call_alloc(call, len)) == NULL)
    return NULL;
  *p++ = '{';
  for (size_t i = 0; i < n; i++) {
    size_t tl;
    const char *t = validate_trim(items[i], &tl);
    if (i)
      *p++ = ',';
    *p++ = '"';
    for (size_t j = 0; j < tl; j++) {
      if (t[j] == '"' || t[j] == '\\')
        *p++ = '\\';
      *p++ = t[j];
    }
    *p++ = '"';
  }
  *p++ = '}';
  *p = '\0';
  return out;
}

int svc_split_list(rpc_call_t *call, char *joined, char ***items, size_t *n) {
  size_t count = 1;

  *n = 0;
  if (joined[0] == '\0')
    return 0;
  for (char *p = joined; *p; p++)
    count += *p == '\x1f';
  if ((*items = rpc_call_alloc(call, count * sizeof(char *))) == NULL)
    return -ENOMEM;
  for (char *p = joined, *sep; p; p = sep ? sep + 1 : NULL) {
    sep = strchr(p, '\x1f');
    if (sep)
      *sep = '\0';
    (*items)[(*n)++] = p;
  }
  return 0;
}

bool svc_all_set(const char *const *params, int n) {
  for (int i = 0; i < n; i++)
    if (params[i] == NULL)
      return false;
  return true;
}

int svc_name_index(const char *const *names, size_t n, const char *s) {
  if (s == NULL)
    return 0;
  for (size_t i = 1; i < n; i++)
    if (strcmp(names[i], s) == 0)
      return (int)i;
  return 0;
}

/* ---- pages ------------------------------------------------------------------------------ */

bool svc_page_fits(size_t *bytes, const ProtobufCMessage *item) {
  /* As a repeated field packs it: a tag, the length, the message. */
  size_t size = protobuf_c_message_get_packed_size(item) + 11;

  if (*bytes > 0 && *bytes + size > SVC_PAGE_BYTES)
    return false;
  *bytes += size;
  return true;
}

#define TOKEN_VERSION 1
#define TOKEN_CHECK 3 /* bytes of check after the key */
/* version, the key's values (8 bytes each, big-endian), check */
#define TOKEN_BYTES(nkey) (1 + 8 * (nkey) + TOKEN_CHECK)
#define TOKEN_BYTES_MAX TOKEN_BYTES(SVC_PAGE_KEY_MAX)
/* base64url of TOKEN_BYTES(nkey), no padding */
#define TOKEN_CHARS(nkey)                                                                          \
  (TOKEN_BYTES(nkey) / 3 * 4 + (TOKEN_BYTES(nkey) % 3 ? TOKEN_BYTES(nkey) % 3 + 1 : 0))
#define TOKEN_CHARS_MAX TOKEN_CHARS(SVC_PAGE_KEY_MAX)

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#define FNV_BASIS 2166136261u

/* FNV-1a over n more bytes, from h. */
static uint32_t fnv1a(uint32_t h, const uint8_t *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= 16777619u;
  }
  return h;
}

/* FNV-1a over v's 8 bytes, big-endian, from h. */
static uint32_t fnv1a_i64(uint32_t h, int64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++)
    b[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
  return fnv1a(h, b, sizeof(b));
}

/* base64url of b[0..n), no padding, into out (room for (n + 2) / 3 * 4 + 1). */
static void b64url_encode(const uint8_t *b, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)b[i] << 16 | (uint32_t)(i + 1 < n ? b[i + 1] : 0) << 8 |
                 (i + 2 < n ? b[i + 2] : 0);
    out[o++] = b64url[v >> 18 & 63];
    out[o++] = b64url[v >> 12 & 63];
    if (i + 1 < n)
      out[o++] = b64url[v >> 6 & 63];
    if (i + 2 < n)
      out[o++] = b64url[v & 63];
  }
  out[o] = '\0';
}

/* The bytes of s (base64url, no padding, chars long) into b (room for chars / 4 * 3 + 2):
 * their count, or -1 if s is not such text (a group of one character, a character outside the
 * alphabet, bits set past the last byte of a short group: one text per bytes). */
static long b64url_decode(const char *s, size_t chars, uint8_t *b) {
  size_t n = 0;

  if (chars % 4 == 1)
    return -1;
  for (size_t i = 0; i < chars; i += 4) {
    size_t m = chars - i < 4 ? chars - i : 4;
    uint32_t v = 0;

    for (size_t j = 0; j < 4; j++) {
      const char *p = j < m ? strchr(b64url, s[i + j]) : b64url;
      if (p == NULL || *p == '\0')
        return -1;
      v = v << 6 | (uint32_t)(p - b64url);
    }
    if ((m == 2 && (v & 0xffff)) || (m == 3 && (v & 0xff)))
      return -1;
    b[n++] = (uint8_t)(v >> 16);
    if (m > 2)
      b[n++] = (uint8_t)(v >> 8);
    if (m > 3)
      b[n++] = (uint8_t)v;
  }
  return (long)n;
}

/* FNV-1a over the version and the key's nkey values, then the 8 bytes of each of the scope's
 * nscope values (svc_page_token_of() gives none for its scope 0, so that a token of no scope
 * reads as before scopes were): catches damaged tokens, and tokens given for another scope;
 * not meant as a secret. */
static uint32_t token_check(const uint8_t *b, size_t nkey, const int64_t *scope, size_t nscope) {
  uint32_t h = fnv1a(FNV_BASIS, b, 1 + 8 * nkey);

  for (size_t i = 0; i < nscope; i++)
    h = fnv1a_i64(h, scope[i]);
  return h;
}

const char *svc_page_token(rpc_call_t *call, int64_t last_id) {
  return svc_page_token_in(call, NULL, 0, last_id);
}

int64_t svc_page_after(const char *s) {
  return svc_page_after_in(s, NULL, 0);
}

const char *svc_page_token_of(rpc_call_t *call, int64_t scope, int64_t last_id) {
  return svc_page_token_in(call, &scope, scope != 0, last_id);
}

int64_t svc_page_after_of(const char *s, int64_t scope) {
  return svc_page_after_in(s, &scope, scope != 0);
}

const char *svc_page_token_in(rpc_call_t *call, const int64_t *scope, size_t nscope,
                              int64_t last_id) {
  return svc_page_token_keys(call, scope, nscope, &last_id, 1);
}

int64_t svc_page_after_in(const char *s, const int64_t *scope, size_t nscope) {
  int64_t id;

  if (svc_page_after_keys(s, scope, nscope, &id, 1) != 0)
    return 0;
  return id > 0 ? id : 0;
}

/* A one-value key reads as the tokens of one id always did: the same bytes, the same check. */
const char *svc_page_token_keys(rpc_call_t *call, const int64_t *scope, size_t nscope,
                                const int64_t *key, size_t nkey) {
  size_t nb = TOKEN_BYTES(nkey);
  char *out;
  uint8_t b[TOKEN_BYTES_MAX];
  uint32_t check;

  assert(nkey >= 1 && nkey <= SVC_PAGE_KEY_MAX);
  if ((out = rpc_call_alloc(call, TOKEN_CHARS(nkey) + 1)) == NULL)
    return NULL;
  b[0] = TOKEN_VERSION;
  for (size_t k = 0; k < nkey; k++)
    for (int i = 0; i < 8; i++)
      b[1 + 8 * k + i] = (uint8_t)((uint64_t)key[k] >> (56 - 8 * i));
  check = token_check(b, nkey, scope, nscope);
  b[nb - 3] = (uint8_t)(check >> 16);
  b[nb - 2] = (uint8_t)(check >> 8);
  b[nb - 1] = (uint8_t)check;
  b64url_encode(b, nb, out);
  return out;
}

int svc_page_after_keys(const char *s, const int64_t *scope, size_t nscope, int64_t *key,
                        size_t nkey) {
  size_t nb = TOKEN_BYTES(nkey);
  uint8_t b[TOKEN_BYTES_MAX + 2];
  int64_t v[SVC_PAGE_KEY_MAX];
  uint32_t check;

  assert(nkey >= 1 && nkey <= SVC_PAGE_KEY_MAX);
  if (strlen(s) != TOKEN_CHARS(nkey) || b64url_decode(s, TOKEN_CHARS(nkey), b) != (long)nb)
    return -EINVAL;
  check = token_check(b, nkey, scope, nscope);
  if (b[0] != TOKEN_VERSION || b[nb - 3] != (uint8_t)(check >> 16) ||
      b[nb - 2] != (uint8_t)(check >> 8) || b[nb - 1] != (uint8_t)check)
    return -EINVAL;
  for (size_t k = 0; k < nkey; k++) {
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
      u = u << 8 | b[1 + 8 * k + i];
    /* Two's complement back, without the implementation-defined conversion. */
    v[k] = u <= INT64_MAX ? (int64_t)u : -(int64_t)(UINT64_MAX - u) - 1;
  }
  memcpy(key, v, nkey * sizeof(*key));
  return 0;
}

/* Tokens of a text key: version, check (3 bytes), the key's bytes; base64url, no padding. */
#define KEY_TOKEN_VERSION 2
#define KEY_TOKEN_HEAD 4

/* FNV-1a over the version, the key and the scope's values; as token_check(), not a secret. */
static uint32_t key_token_check(const uint8_t *key, size_t len, const int64_t *scope,
                                size_t nscope) {
  uint8_t version = KEY_TOKEN_VERSION;
  uint32_t h = fnv1a(fnv1a(FNV_BASIS, &version, 1), key, len);

  for (size_t s = 0; s < nscope; s++)
    h = fnv1a_i64(h, scope[s]);
  return h;
}

const char *svc_page_token_key(rpc_call_t *call, const int64_t *scope, size_t nscope,
                               const char *key) {
  size_t len = strlen(key), n = KEY_TOKEN_HEAD + len;
  uint8_t *b = rpc_call_alloc(call, n);
  char *out = rpc_call_alloc(call, (n + 2) / 3 * 4 + 1);
  uint32_t check;

  if (len == 0 || b == NULL || out == NULL)
    return NULL;
  check = key_token_check((const uint8_t *)key, len, scope, nscope);
  b[0] = KEY_TOKEN_VERSION;
  b[1] = (uint8_t)(check >> 16);
  b[2] = (uint8_t)(check >> 8);
  b[3] = (uint8_t)check;
  memcpy(b + KEY_TOKEN_HEAD, key, len);
  b64url_encode(b, n, out);
  return out;
}

int svc_page_after_key(rpc_call_t *call, const char *s, const int64_t *scope, size_t nscope,
                       const char **key) {
  size_t chars = strlen(s), len;
  uint8_t *b;
  uint32_t check;
  long n;

  /* At least the head and one byte of key. */
  if (chars < 7)
    return -EINVAL;
  if ((b = rpc_call_alloc(call, chars / 4 * 3 + 3)) == NULL)
    return -ENOMEM;
  if ((n = b64url_decode(s, chars, b)) < 0)
    return -EINVAL;
  len = (size_t)n - KEY_TOKEN_HEAD;
  check = key_token_check(b + KEY_TOKEN_HEAD, len, scope, nscope);
  if (b[0] != KEY_TOKEN_VERSION || b[1] != (uint8_t)(check >> 16) ||
      b[2] != (uint8_t)(check >> 8) || b[3] != (uint8_t)check ||
      memchr(b + KEY_TOKEN_HEAD, '\0', len) != NULL ||
      !validate_utf8((const char *)b + KEY_TOKEN_HEAD, len))
    return -EINVAL;
  /* The key in place, NUL-terminated (the buffer has room past the last byte). */
  memmove(b, b + KEY_TOKEN_HEAD, len);
  b[len] = '\0';
  *key = (const char *)b;
  return 0;
}
