/* Wire-level checks of a request's strings (see msg_check.h). The walk reads tags and
 * lengths only; what it cannot read it leaves to protobuf-c's decoder. */

#include "rpc/msg_check.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "domain/validate.h"

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_I32 = 5 };

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

static walk_t walk(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
                   int depth, char *path, size_t path_size, const char **what) {
  size_t at = strnlen(path, path_size);

  if (depth > RPC_MSG_MAX_DEPTH)
    return WALK_TOO_DEEP;
  while (p < end) {
    uint64_t key, n;
    const ProtobufCFieldDescriptor *f;

    if (!read_varint(&p, end, &key) || key >> 3 == 0 || key >> 3 > UINT32_MAX)
      return WALK_UNREADABLE;
    switch (key & 7) {
    case WIRE_VARINT:
      if (!read_varint(&p, end, &n))
        return WALK_UNREADABLE;
      continue;
    case WIRE_I64:
      if ((size_t)(end - p) < 8)
        return WALK_UNREADABLE;
      p += 8;
      continue;
    case WIRE_I32:
      if ((size_t)(end - p) < 4)
        return WALK_UNREADABLE;
      p += 4;
      continue;
    case WIRE_LEN:
      break;
    default: /* groups: not in proto3; the decoder refuses them */
      return WALK_UNREADABLE;
    }
    if (!read_varint(&p, end, &n) || n > (uint64_t)(end - p))
      return WALK_UNREADABLE;
    f = protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3));
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
  }
  return WALK_OK;
}

int rpc_msg_check_strings(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                          char *why, size_t why_size) {
  char path[128] = "";
  const char *what = NULL;

  if (len == 0)
    return 0;
  switch (walk(d, data, data + len, 0, path, sizeof(path), &what)) {
  case WALK_OK:
  case WALK_UNREADABLE:
    return 0;
  case WALK_TOO_DEEP:
    snprintf(why, why_size, "request messages nest more than %d deep", RPC_MSG_MAX_DEPTH);
    return -1;
  case WALK_BAD_STRING:
    snprintf(why, why_size, "field %s %s", path, what);
    return -1;
  }
  return 0;
}
