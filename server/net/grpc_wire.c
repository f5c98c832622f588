#include "net/grpc_wire.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

void grpc_decoder_init(grpc_decoder_t *d, size_t max_len) {
  memset(d, 0, sizeof(*d));
  d->state = GRPC_DEC_PREFIX;
  d->max_len = max_len;
}

void grpc_decoder_free(grpc_decoder_t *d) {
  free(d->buf);
  d->buf = NULL;
}

int grpc_decoder_partial(const grpc_decoder_t *d) {
  return (d->state == GRPC_DEC_PREFIX && d->prefix_have > 0) || d->state == GRPC_DEC_BODY;
}

long grpc_decoder_feed(grpc_decoder_t *d, const uint8_t *in, size_t len, grpc_message_t *out,
                       int *got) {
  size_t used = 0;

  *got = 0;
  if (d->state == GRPC_DEC_FAILED)
    return GRPC_WIRE_EINVAL;
  if (d->state == GRPC_DEC_PREFIX) {
    size_t n = GRPC_FRAME_PREFIX - d->prefix_have;
    if (n > len)
      n = len;
    memcpy(d->prefix + d->prefix_have, in, n);
    d->prefix_have += n;
    used += n;
    if (d->prefix_have < GRPC_FRAME_PREFIX)
      return (long)used;
    if (d->prefix[0] > 1) {
      d->state = GRPC_DEC_FAILED;
      return GRPC_WIRE_EBADFLAG;
    }
    d->compressed = d->prefix[0];
    d->len = ((size_t)d->prefix[1] << 24) | ((size_t)d->prefix[2] << 16) |
             ((size_t)d->prefix[3] << 8) | d->prefix[4];
    if (d->len > d->max_len) {
      d->state = GRPC_DEC_FAILED;
      return GRPC_WIRE_ETOOBIG;
    }
    /* The buffer grows with the bytes that actually arrive, not with the declared length:
     * a peer announcing large messages it never sends must not cost memory. One spare byte
     * keeps malloc(0) out of the picture for empty messages. */
    d->cap = d->len < GRPC_DEC_INITIAL ? d->len + 1 : GRPC_DEC_INITIAL;
    d->buf = malloc(d->cap);
    if (d->buf == NULL) {
      d->state = GRPC_DEC_FAILED;
      return GRPC_WIRE_ENOMEM;
    }
    d->have = 0;
    d->state = GRPC_DEC_BODY;
  }
  {
    size_t n = d->len - d->have;
    if (n > len - used)
      n = len - used;
    if (d->have + n > d->cap) {
      size_t cap = d->cap;
      uint8_t *nb;
      while (cap < d->have + n)
        cap *= 2;
      if (cap > d->len + 1)
        cap = d->len + 1;
      nb = realloc(d->buf, cap);
      if (nb == NULL) {
        d->state = GRPC_DEC_FAILED;
        return GRPC_WIRE_ENOMEM;
      }
      d->buf = nb;
      d->cap = cap;
    }
    memcpy(d->buf + d->have, in + used, n);
    d->have += n;
    used += n;
  }
  if (d->have == d->len) {
    out->data = d->buf;
    out->len = d->len;
    out->compressed = d->compressed;
    *got = 1;
    d->buf = NULL;
    d->prefix_have = 0;
    d->state = GRPC_DEC_PREFIX;
  }
  return (long)used;
}

void grpc_frame_prefix(uint8_t out[GRPC_FRAME_PREFIX], uint32_t len) {
  out[0] = 0;
  out[1] = (uint8_t)(len >> 24);
  out[2] = (uint8_t)(len >> 16);
  out[3] = (uint8_t)(len >> 8);
  out[4] = (uint8_t)len;
}

int grpc_timeout_parse(const char *value, size_t len, uint64_t *ms) {
  uint64_t n = 0;
  size_t digits;

  /* TimeoutValue is 1 to 8 ASCII digits, followed by exactly one unit character. */
  if (len < 2 || len > 9)
    return GRPC_WIRE_EINVAL;
  digits = len - 1;
  for (size_t i = 0; i < digits; i++) {
    if (value[i] < '0' || value[i] > '9')
      return GRPC_WIRE_EINVAL;
    n = n * 10 + (uint64_t)(value[i] - '0');
  }
  switch (value[digits]) {
  case 'H':
    *ms = n * 3600 * 1000;
    break;
  case 'M':
    *ms = n * 60 * 1000;
    break;
  case 'S':
    *ms = n * 1000;
    break;
  case 'm':
    *ms = n;
    break;
  case 'u':
    *ms = (n + 999) / 1000;
    break;
  case 'n':
    *ms = (n + 999999) / 1000000;
    break;
  default:
    return GRPC_WIRE_EINVAL;
  }
  return 0;
}

void grpc_timeout_format(uint64_t ms, char *out, size_t outlen) {
  /* At most 8 digits: pick the finest unit that fits. */
  static const struct {
    char unit;
    uint64_t per;
  } units[] = {{'m', 1}, {'S', 1000}, {'M', 60000}, {'H', 3600000}};
  for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
    uint64_t v = (ms + units[i].per - 1) / units[i].per;
    if (v <= 99999999ULL || i == sizeof(units) / sizeof(units[0]) - 1) {
      if (v > 99999999ULL)
        v = 99999999ULL;
      snprintf(out, outlen, "%llu%c", (unsigned long long)v, units[i].unit);
      return;
    }
  }
}

char *grpc_message_encode(const char *msg, size_t len) {
  static const char hex[] = "0123456789ABCDEF";
  char *out = malloc(len * 3 + 1), *p = out;

  if (out == NULL)
    return NULL;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)msg[i];
    if (c >= 0x20 && c <= 0x7E && c != '%') {
      *p++ = (char)c;
    } else {
      *p++ = '%';
      *p++ = hex[c >> 4];
      *p++ = hex[c & 15];
    }
  }
  *p = '\0';
  return out;
}

int grpc_hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

char *grpc_message_decode(const char *val, size_t len) {
  char *out = malloc(len + 1), *p = out;

  if (out == NULL)
    return NULL;
  for (size_t i = 0; i < len; i++) {
    int hi, lo;
    if (val[i] == '%' && i + 2 < len && (hi = grpc_hex_digit(val[i + 1])) >= 0 &&
        (lo = grpc_hex_digit(val[i + 2])) >= 0) {
      *p++ = (char)(hi << 4 | lo);
      i += 2;
    } else {
      *p++ = val[i];
    }
  }
  *p = '\0';
  return out;
}

int grpc_parse_uint(const uint8_t *v, size_t len, int max) {
  int n = 0;

  if (len == 0 || len > 9)
    return -1;
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9')
      return -1;
    n = n * 10 + (v[i] - '0');
  }
  return n <= max ? n : -1;
}
