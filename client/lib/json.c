/* clue_to_json(): protobuf-c messages as JSON, driven by their descriptors. */

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clue/client.h"
#include "mem.h"
#include "net/utf8.h"

typedef struct jbuf {
  char *p;
  size_t len, cap;
  int oom;     /* sticky: once set, nothing more is written */
  int compact; /* CLUE_JSON_COMPACT */
} jbuf_t;

static void jb_put(jbuf_t *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    char *p;
    while (cap < b->len + n + 1)
      cap *= 2;
    p = clue__realloc(b->p, cap);
    if (p == NULL) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void jb_puts(jbuf_t *b, const char *s) {
  jb_put(b, s, strlen(s));
}

static void jb_printf(jbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void jb_printf(jbuf_t *b, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  if (n > 0)
    jb_put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void jb_newline(jbuf_t *b, int depth) {
  if (b->compact)
    return;
  jb_put(b, "\n", 1);
  for (int i = 0; i < depth; i++)
    jb_put(b, "  ", 2);
}

/* Written as \uXXXX though JSON allows them raw, so that JSON printed to a terminal neither
 * sends it a control (DEL, and what clue__utf8_unsafe_to_show() names) nor reorders the line,
 * and so that it stays valid JavaScript (U+2028, U+2029). A JSON reader gets the same
 * string. */
static int escaped(uint32_t cp) {
  return cp == 0x7F || clue__utf8_unsafe_to_show(cp);
}

static void jb_string(jbuf_t *b, const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;

  jb_put(b, "\"", 1);
  while (i < n) {
    unsigned char ch = s[i];
    size_t run = i;
    /* copy the longest stretch that needs no escaping in one go */
    while (run < n && s[run] >= 0x20 && s[run] < 0x7F && s[run] != '"' && s[run] != '\\')
      run++;
    if (run > i) {
      jb_put(b, (const char *)s + i, run - i);
      i = run;
      continue;
    }
    if (ch == '"' || ch == '\\') {
      jb_put(b, "\\", 1);
      jb_put(b, (const char *)&ch, 1);
      i++;
    } else if (ch < 0x20) {
      switch (ch) {
      case '\n':
        jb_puts(b, "\\n");
        break;
      case '\r':
        jb_puts(b, "\\r");
        break;
      case '\t':
        jb_puts(b, "\\t");
        break;
      case '\b':
        jb_puts(b, "\\b");
        break;
      case '\f':
        jb_puts(b, "\\f");
        break;
      default:
        jb_printf(b, "\\u%04x", ch);
      }
      i++;
    } else {
      size_t len = clue__utf8_len(s + i, n - i);
      uint32_t cp = len != 0 ? clue__utf8_value(s + i, len) : 0;
      if (len == 0) {
        jb_puts(b, "\\ufffd");
        i++;
      } else if (escaped(cp)) {
        jb_printf(b, "\\u%04x", (unsigned)cp);
        i += len;
      } else {
        jb_put(b, (const char *)s + i, len);
        i += len;
      }
    }
  }
  jb_put(b, "\"", 1);
}

static void jb_base64(jbuf_t *b, const uint8_t *d, size_t n) {
  static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char q[4];

  jb_put(b, "\"", 1);
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)d[i] << 16;
    if (i + 1 < n)
      v |= (uint32_t)d[i + 1] << 8;
    if (i + 2 < n)
      v |= d[i + 2];
    q[0] = tbl[v >> 18 & 63];
    q[1] = tbl[v >> 12 & 63];
    q[2] = i + 1 < n ? tbl[v >> 6 & 63] : '=';
    q[3] = i + 2 < n ? tbl[v & 63] : '=';
    jb_put(b, q, 4);
  }
  jb_put(b, "\"", 1);
}

static void jb_double(jbuf_t *b, double v, int digits) {
  if (isnan(v))
    jb_puts(b, "\"NaN\"");
  else if (isinf(v))
    jb_puts(b, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
  else
    jb_printf(b, "%.*g", digits, v);
}

static void write_message(jbuf_t *b, const ProtobufCMessage *m, int depth);

/* One value of field f stored at p (an element of a repeated field, or the member). */
static void write_value(jbuf_t *b, const ProtobufCFieldDescriptor *f, const void *p, int depth) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    jb_printf(b, "%d", (int)*(const int32_t *)p);
    break;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    jb_printf(b, "%u", (unsigned)*(const uint32_t *)p);
    break;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    jb_printf(b, "%lld", (long long)*(const int64_t *)p);
    break;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    jb_printf(b, "%llu", (unsigned long long)*(const uint64_t *)p);
    break;
  case PROTOBUF_C_TYPE_FLOAT:
    jb_double(b, *(const float *)p, 9);
    break;
  case PROTOBUF_C_TYPE_DOUBLE:
    jb_double(b, *(const double *)p, 17);
    break;
  case PROTOBUF_C_TYPE_BOOL:
    jb_puts(b, *(const protobuf_c_boolean *)p ? "true" : "false");
    break;
  case PROTOBUF_C_TYPE_ENUM: {
    int v = *(const int *)p;
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
    if (ev != NULL)
      jb_string(b, ev->name, strlen(ev->name));
    else
      jb_printf(b, "%d", v);
    break;
  }
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)p;
    jb_string(b, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
    break;
  }
  case PROTOBUF_C_TYPE_BYTES: {
    const ProtobufCBinaryData *bd = p;
    jb_base64(b, bd->data, bd->len);
    break;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
    if (sub == NULL)
      jb_puts(b, "null");
    else
      write_message(b, sub, depth);
    break;
  }
  }
}

static void write_message(jbuf_t *b, const ProtobufCMessage *m, int depth) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const char *base = (const char *)m;
  int first = 1;

  jb_put(b, "{", 1);
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const void *member = base + f->offset;

    if (f->label != PROTOBUF_C_LABEL_REPEATED && !clue_field_present(m, f))
      continue;
    if (!first)
      jb_put(b, ",", 1);
    first = 0;
    jb_newline(b, depth + 1);
    jb_string(b, f->name, strlen(f->name));
    jb_puts(b, b->compact ? ":" : ": ");
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)(base + f->quantifier_offset);
      const char *arr = *(const char *const *)member;
      size_t sz = clue_type_size(f->type);
      jb_put(b, "[", 1);
      for (size_t k = 0; k < n; k++) {
        if (k > 0)
          jb_put(b, ",", 1);
        jb_newline(b, depth + 2);
        write_value(b, f, arr + k * sz, depth + 2);
      }
      if (n > 0)
        jb_newline(b, depth + 1);
      jb_put(b, "]", 1);
    } else {
      write_value(b, f, member, depth + 1);
    }
  }
  if (!first)
    jb_newline(b, depth);
  jb_put(b, "}", 1);
}

int clue_to_json(const ProtobufCMessage *m, int flags, char **out) {
  jbuf_t b = {NULL, 0, 0, 0, (flags & CLUE_JSON_COMPACT) != 0};

  if (m == NULL || out == NULL || m->descriptor == NULL ||
      m->descriptor->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
    return CLUE_EINVAL;
  write_message(&b, m, 0);
  if (b.oom) {
    free(b.p);
    return CLUE_ENOMEM;
  }
  *out = b.p;
  return 0;
}
