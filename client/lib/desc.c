/* Descriptor helpers for walking protobuf-c messages: libclue's JSON and cluectl's output. */

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "clue/client.h"

size_t clue_type_size(ProtobufCType type) {
  switch (type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    return 4;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    return 8;
  case PROTOBUF_C_TYPE_FLOAT:
    return sizeof(float);
  case PROTOBUF_C_TYPE_DOUBLE:
    return sizeof(double);
  case PROTOBUF_C_TYPE_BOOL:
    return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_ENUM:
    return sizeof(int);
  case PROTOBUF_C_TYPE_STRING:
    return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES:
    return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE:
    return sizeof(ProtobufCMessage *);
  }
  return 4;
}

int clue_field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  const char *base = (const char *)m;

  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
    if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE)
      return *(void *const *)(base + f->offset) != NULL;
    return *(const protobuf_c_boolean *)(base + f->quantifier_offset);
  }
  return 1; /* proto3 singular and proto2 required fields always hold a value */
}

size_t clue_enum_prefix_len(const ProtobufCEnumDescriptor *ed) {
  const char *first;
  size_t n;

  if (ed == NULL || ed->n_values < 2)
    return 0;
  first = ed->values[0].name;
  n = strlen(first);
  for (unsigned i = 1; i < ed->n_values; i++) {
    const char *name = ed->values[i].name;
    size_t k = 0;
    while (k < n && name[k] == first[k])
      k++;
    n = k;
  }
  while (n > 0 && first[n - 1] != '_') /* whole words only: UNIT_KIND_, not UNIT_KIND_R */
    n--;
  for (unsigned i = 0; i < ed->n_values; i++)
    if (strlen(ed->values[i].name) == n)
      return 0;
  return n;
}

int clue_enum_from_name(const ProtobufCEnumDescriptor *ed, const char *name, int *value) {
  size_t plen = clue_enum_prefix_len(ed);

  for (unsigned i = 0; i < ed->n_values; i++) {
    const char *full = ed->values[i].name;
    if (strcasecmp(name, full) == 0 || strcasecmp(name, full + plen) == 0) {
      *value = ed->values[i].value;
      return 0;
    }
  }
  return CLUE_EINVAL;
}

const char *clue_enum_choices(const ProtobufCEnumDescriptor *ed, const char *sep, char *buf,
                              size_t len) {
  size_t plen = clue_enum_prefix_len(ed), used = 0;

  buf[0] = '\0';
  for (unsigned i = 0; i < ed->n_values; i++) {
    int k;
    if (ed->values[i].value == 0 && strstr(ed->values[i].name, "UNSPECIFIED") != NULL)
      continue;
    k = snprintf(buf + used, len - used, "%s%s", used > 0 ? sep : "", ed->values[i].name + plen);
    if (k < 0 || (size_t)k >= len - used)
      break;
    used += (size_t)k;
  }
  return buf;
}
