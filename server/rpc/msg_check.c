/* Wire-level checks of a request (see msg_check.h). The walk reads tags and lengths only, and
 * refuses what it cannot read before protobuf-c decodes the request. */

#include "rpc/msg_check.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "domain/validate.h"

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

/* The largest field number protobuf allows (2^29 - 1). */
#define FIELD_NUMBER_MAX 536870911u

typedef enum { WALK_OK, WALK_BAD_STRING, WALK_TOO_DEEP, WALK_UNREADABLE } walk_t;

/* Reads a varint at *p (below end); returns false if it is cut short or longer than 10 bytes. */
static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 70 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return true;
    }
  }
  return false;
}

/* Appends ".name" (or "name" at the start) to the path; a path too long to hold is cut. */
static void path_push(char *path, size_t size, size_t at, const char *name) {
  if (at < size)
    snprintf(path + at, size - at, "%s%s", at ? "." : "", name);
}

/* The wire type a field of f's type is written with (a repeated number may also come packed,
 * length-delimited). */
static int wire_of(const ProtobufCFieldDescriptor *f) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE:
    return WIRE_I64;
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_FLOAT:
    return WIRE_I32;
  case PROTOBUF_C_TYPE_STRING:
  case PROTOBUF_C_TYPE_BYTES:
  case PROTOBUF_C_TYPE_MESSAGE:
    return WIRE_LEN;
  default: /* the varints: int32, sint32, uint32, int64, sint64, uint64, bool, enum */
    return WIRE_VARINT;
  }
}

/* Walks the message d in [p, end). What it cannot read (a field number 0 or past the largest,
 * a group, a field cut short, a known field in another wire type than its type's) is
 * refused here rather than left to protobuf-c, which decodes some such wire all the same:
 * a two-byte tag of field 0 as an unknown field, any wire type as a bool. *what says why;
 * path names the field where there is one. */
static walk_t walk(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
                   int depth, char *path, size_t path_size, const char **what) {
  size_t at = strnlen(path, path_size);

  if (depth > RPC_MSG_MAX_DEPTH)
    return WALK_TOO_DEEP;
  while (p < end) {
    uint64_t key, n;
    const ProtobufCFieldDescriptor *f;
    int wire;

    if (!read_varint(&p, end, &key)) {
      *what = "a field's tag is cut short";
      return WALK_UNREADABLE;
    }
    if (key >> 3 == 0 || key >> 3 > FIELD_NUMBER_MAX) {
      *what = key >> 3 == 0 ? "a field numbered 0" : "a field number past 536870911";
      return WALK_UNREADABLE;
    }
    wire = (int)(key & 7);
    if (wire != WIRE_VARINT && wire != WIRE_I64 && wire != WIRE_LEN && wire != WIRE_I32) {
      /* Groups (3, 4): not in proto3; 6 and 7 are no wire type. */
      *what = wire == 3 || wire == 4 ? "a group (proto3 has none)" : "an unknown wire type";
      return WALK_UNREADABLE;
    }
    f = protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3));
    if (f != NULL && wire != wire_of(f) &&
        !(wire == WIRE_LEN && f->label == PROTOBUF_C_LABEL_REPEATED)) {
      path_push(path, path_size, at, f->name);
      *what = wire_of(f) == WIRE_VARINT ? "not a varint"
              : wire_of(f) == WIRE_LEN  ? "not length-delimited"
                                        : "not in its fixed size";
      return WALK_UNREADABLE;
    }
    switch (wire) {
    case WIRE_VARINT:
      if (!read_varint(&p, end, &n))
        goto cut;
      continue;
    case WIRE_I64:
      if ((size_t)(end - p) < 8)
        goto cut;
      p += 8;
      continue;
    case WIRE_I32:
      if ((size_t)(end - p) < 4)
        goto cut;
      p += 4;
      continue;
    default: /* WIRE_LEN */
      break;
    }
    if (!read_varint(&p, end, &n) || n > (uint64_t)(end - p))
      goto cut;
    if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING) {
      const char *bad = memchr(p, 0, n) ? "contains a NUL byte"
                        : !validate_utf8((const char *)p, n) ? "is not valid UTF-8"
                                                             : NULL;
      if (bad) {
        path_push(path, path_size, at, f->name);
        *what = bad;
        return WALK_BAD_STRING;
      }
    } else if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE) {
      walk_t w;
      path_push(path, path_size, at, f->name);
      w = walk(f->descriptor, p, p + n, depth + 1, path, path_size, what);
      if (w != WALK_OK)
        return w;
      path[at < path_size ? at : path_size - 1] = '\0';
    }
    p += n;
    continue;
  cut:
    if (f != NULL)
      path_push(path, path_size, at, f->name);
    *what = "cut short";
    return WALK_UNREADABLE;
  }
  return WALK_OK;
}

int rpc_msg_check(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len, char *why,
                  size_t why_size) {
  char path[128] = "";
  const char *what = NULL;

  if (len == 0)
    return 0;
  switch (walk(d, data, data + len, 0, path, sizeof(path), &what)) {
  case WALK_OK:
    return 0;
  case WALK_UNREADABLE:
    if (path[0])
      snprintf(why, why_size, "request is not a valid %s message: field %s is %s", d->name, path,
               what);
    else
      snprintf(why, why_size, "request is not a valid %s message: %s", d->name, what);
    return -1;
  case WALK_TOO_DEEP:
    snprintf(why, why_size, "request messages nest more than %d deep", RPC_MSG_MAX_DEPTH);
    return -1;
  case WALK_BAD_STRING:
    snprintf(why, why_size, "field %s %s", path, what);
    return -1;
  }
  return 0;
}
