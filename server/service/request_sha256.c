/* A request's fingerprint: see request_sha256.h. The encoding needs no delimiters to be
 * unambiguous: every field is always written, in the order the message type fixes, and every
 * variable part (a string, bytes, a repeated field) carries its length first. */

#include "service/request_sha256.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "audit/sha256.h"
#include "domain/validate.h"

typedef struct fp_buf {
  uint8_t *p;
  size_t len, cap;
  unsigned absent_depth; /* put_absent() calls open: a type that holds itself stops there */
  bool oom;
} fp_buf_t;

static void put(fp_buf_t *b, const void *data, size_t n) {
  if (b->oom)
    return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    uint8_t *p;

    while (cap < b->len + n)
      cap *= 2;
    if ((p = realloc(b->p, cap)) == NULL) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
}

static void put_u64(fp_buf_t *b, uint64_t v) {
  uint8_t be[8];

  for (int i = 7; i >= 0; i--, v >>= 8)
    be[i] = (uint8_t)v;
  put(b, be, sizeof(be));
}

/* A text as the server keeps it: without what shows nothing at either end (validate_trim(),
 * the span every text is checked and stored as), so that a retry whose text gained a trailing
 * newline or lost a space, and would store the same, is the same request. A type's name (no
 * white space) is unchanged by it. */
static void put_str(fp_buf_t *b, const char *s) {
  size_t n;
  const char *t = validate_trim(s, &n);

  put_u64(b, n);
  put(b, t, n);
}

static void put_message(fp_buf_t *b, const ProtobufCMessage *m, bool top);

/* An absent message as the empty one (every field its default): the server reads both alike
 * (a TransitionDetails left out, or sent with nothing set), and clients differ in which they
 * send. */
static void put_absent(fp_buf_t *b, const ProtobufCMessageDescriptor *d) {
  ProtobufCMessage *m;

  if (b->oom || b->absent_depth >= 8)
    return;
  if ((m = malloc(d->sizeof_message)) == NULL) {
    b->oom = true;
    return;
  }
  d->message_init(m);
  b->absent_depth++;
  put_message(b, m, false);
  b->absent_depth--;
  free(m);
}

/* One value of field f at v. */
static void put_value(fp_buf_t *b, const ProtobufCFieldDescriptor *f, const void *v) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_ENUM:
    put_u64(b, (uint64_t)(int64_t) * (const int32_t *)v);
    break;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    put_u64(b, *(const uint32_t *)v);
    break;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    put_u64(b, *(const uint64_t *)v);
    break;
  case PROTOBUF_C_TYPE_FLOAT: {
    uint32_t bits;

    memcpy(&bits, v, sizeof(bits));
    put_u64(b, bits);
    break;
  }
  case PROTOBUF_C_TYPE_DOUBLE: {
    uint64_t bits;

    memcpy(&bits, v, sizeof(bits));
    put_u64(b, bits);
    break;
  }
  case PROTOBUF_C_TYPE_BOOL:
    put_u64(b, *(const protobuf_c_boolean *)v ? 1 : 0);
    break;
  case PROTOBUF_C_TYPE_STRING:
    put_str(b, *(char *const *)v);
    break;
  case PROTOBUF_C_TYPE_BYTES: {
    const ProtobufCBinaryData *d = v;

    put_u64(b, d->len);
    put(b, d->data, d->len);
    break;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *m = *(const ProtobufCMessage *const *)v;

    if (m)
      put_message(b, m, false);
    else
      put_absent(b, f->descriptor);
    break;
  }
  }
}

static size_t value_size(const ProtobufCFieldDescriptor *f) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE:
    return 8;
  case PROTOBUF_C_TYPE_BOOL:
    return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_STRING:
    return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES:
    return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE:
    return sizeof(ProtobufCMessage *);
  default:
    return 4;
  }
}

/* Whether an optional (or oneof) field f of m is set. */
static bool field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  const char *base = (const char *)m;

  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
  if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE)
    return *(const void *const *)(base + f->offset) != NULL;
  return *(const protobuf_c_boolean *)(base + f->quantifier_offset);
}

/* protobuf-c keeps a descriptor's fields in field-number order. */
static void put_message(fp_buf_t *b, const ProtobufCMessage *m, bool top) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const char *base = (const char *)m;

  put_str(b, d->name);
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];

    if (top && strcmp(f->name, "request_id") == 0)
      continue;
    put_u64(b, f->id);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
      /* A oneof's members share one slot: only the one its case names holds a value, and
       * reading another (a string's pointer as a message) is reading garbage. */
      if (!field_present(m, f)) {
        put_u64(b, 0);
      } else {
        put_u64(b, 1);
        put_value(b, f, base + f->offset);
      }
    } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)(base + f->quantifier_offset);
      const char *arr = *(const char *const *)(base + f->offset);

      put_u64(b, n);
      for (size_t j = 0; j < n; j++)
        put_value(b, f, arr + j * value_size(f));
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE || f->label != PROTOBUF_C_LABEL_OPTIONAL) {
      put_value(b, f, base + f->offset);
    } else if (!field_present(m, f)) {
      put_u64(b, 0);
    } else {
      put_u64(b, 1);
      put_value(b, f, base + f->offset);
    }
  }
}

/* The SHA-256 of msg's encoding into digest. Returns 0, or -ENOMEM. */
static int digest_of(const ProtobufCMessage *msg, uint8_t digest[SHA256_LEN]) {
  fp_buf_t b = {0};
  int rc = -ENOMEM;

  put_message(&b, msg, true);
  if (!b.oom && sha256_digest(b.p, b.len, digest) == 0)
    rc = 0;
  free(b.p);
  return rc;
}

const char *request_sha256(rpc_call_t *call, const ProtobufCMessage *msg) {
  static const char hex[] = "0123456789abcdef";
  uint8_t digest[SHA256_LEN];
  char *out;

  if (digest_of(msg, digest) != 0 ||
      (out = rpc_call_alloc(call, REQUEST_SHA256_TEXT_LEN + 1)) == NULL)
    return NULL;
  out[0] = '\\';
  out[1] = 'x';
  for (int i = 0; i < SHA256_LEN; i++) {
    out[2 + 2 * i] = hex[digest[i] >> 4];
    out[3 + 2 * i] = hex[digest[i] & 15];
  }
  out[REQUEST_SHA256_TEXT_LEN] = '\0';
  return out;
}

int request_sha256_bits(const ProtobufCMessage *msg, int64_t *bits) {
  uint8_t digest[SHA256_LEN];
  uint64_t h = 0;

  if (digest_of(msg, digest) != 0)
    return -ENOMEM;
  for (int i = 0; i < 8; i++)
    h = h << 8 | digest[i];
  *bits = (int64_t)h;
  return 0;
}
