/* clue_from_json(): strict JSON (RFC 8259) read into protobuf-c messages by descriptor.
 *
 * Two passes: the text is parsed into a small tree that remembers where each value and key
 * began, then the tree is mapped onto the message. Keeping the positions lets a mistake in
 * the second pass (an unknown field, a string where a number belongs) be reported at the
 * line and column the user has to fix, as a syntax error is. */

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clue/client.h"
#include "mem.h"
#include "net/utf8.h"

#define MAX_DEPTH 64

typedef enum jtype { J_NULL, J_BOOL, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT } jtype_t;

typedef struct jnode jnode_t;

struct jnode {
  jtype_t type;
  int line, col; /* where the value begins */
  int boolean;   /* J_BOOL */
  char *text;    /* J_STRING: decoded UTF-8; J_NUMBER: the literal as written */
  size_t len;    /* of text, in bytes (a string may hold U+0000) */
  jnode_t *kids; /* J_ARRAY elements, J_OBJECT member values */
  char **keys;   /* J_OBJECT: member names, decoded */
  int *key_pos;  /* J_OBJECT: line and column of each name, two ints per member */
  size_t n, cap; /* kids in use and allocated */
};

typedef struct parser {
  const unsigned char *p, *end;
  int line, col;
  clue_json_error_t *err;
  int failed; /* an error has been recorded; the first one wins */
  int oom;
} parser_t;

static void set_error(clue_json_error_t *err, int line, int col, const char *fmt, va_list ap) {
  if (err == NULL)
    return;
  err->line = line;
  err->column = col;
  vsnprintf(err->message, sizeof(err->message), fmt, ap);
}

static int perr(parser_t *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int perr(parser_t *ps, const char *fmt, ...) {
  va_list ap;

  if (!ps->failed) {
    va_start(ap, fmt);
    set_error(ps->err, ps->line, ps->col, fmt, ap);
    va_end(ap);
    ps->failed = 1;
  }
  return -1;
}

static int poom(parser_t *ps) {
  if (!ps->failed && ps->err != NULL) {
    ps->err->line = ps->err->column = 0;
    snprintf(ps->err->message, sizeof(ps->err->message), "out of memory");
  }
  ps->failed = ps->oom = 1;
  return -1;
}

/* Advance one byte; a column is one character, so UTF-8 continuation bytes do not count. */
static void adv(parser_t *ps) {
  if (*ps->p == '\n') {
    ps->line++;
    ps->col = 1;
  } else if ((*ps->p & 0xC0) != 0x80) {
    ps->col++;
  }
  ps->p++;
}

static void skip_ws(parser_t *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    adv(ps);
}

/* A printable description of the byte at the cursor, for "unexpected ..." messages. */
static const char *describe(parser_t *ps, char *buf, size_t len) {
  if (ps->p >= ps->end)
    return "end of input";
  if (*ps->p >= 0x21 && *ps->p < 0x7F)
    snprintf(buf, len, "'%c'", *ps->p);
  else
    snprintf(buf, len, "byte 0x%02x", *ps->p);
  return buf;
}

static void node_free(jnode_t *n) {
  for (size_t i = 0; i < n->n; i++) {
    node_free(&n->kids[i]);
    if (n->keys != NULL)
      free(n->keys[i]);
  }
  free(n->kids);
  free(n->keys);
  free(n->key_pos);
  free(n->text);
}

/* Room for one more child (and key) in an array or object node. */
static int grow(parser_t *ps, jnode_t *n) {
  size_t cap;
  jnode_t *kids;

  if (n->n < n->cap)
    return 0;
  cap = n->cap ? n->cap * 2 : 4;
  kids = clue__realloc(n->kids, cap * sizeof(*kids));
  if (kids == NULL)
    return poom(ps);
  n->kids = kids;
  if (n->type == J_OBJECT) {
    char **keys = clue__realloc(n->keys, cap * sizeof(*keys));
    int *pos;
    if (keys == NULL)
      return poom(ps);
    n->keys = keys;
    pos = clue__realloc(n->key_pos, cap * 2 * sizeof(*pos));
    if (pos == NULL)
      return poom(ps);
    n->key_pos = pos;
  }
  n->cap = cap;
  return 0;
}

static int hex4(parser_t *ps, uint32_t *out) {
  uint32_t v = 0;

  for (int i = 0; i < 4; i++) {
    unsigned char c = ps->p < ps->end ? *ps->p : 0;
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= (uint32_t)(c - 'A' + 10);
    else
      return perr(ps, "\\u must be followed by four hexadecimal digits");
    adv(ps);
  }
  *out = v;
  return 0;
}

/* A string at the cursor (on its opening quote); *out owns the decoded bytes. */
static int parse_string(parser_t *ps, char **out, size_t *outlen) {
  const unsigned char *start;
  unsigned char *buf, *d;
  int sline = ps->line, scol = ps->col;

  adv(ps); /* the opening quote */
  start = ps->p;
  /* Decoding never makes a string longer, so its raw length bounds the buffer. */
  while (ps->p < ps->end && *ps->p != '"') {
    if (*ps->p == '\\' && ps->p + 1 < ps->end)
      ps->p++;
    ps->p++;
  }
  buf = clue__malloc((size_t)(ps->p - start) + 1);
  ps->p = start;
  if (buf == NULL)
    return poom(ps);
  d = buf;
  for (;;) {
    unsigned char c;
    if (ps->p >= ps->end) {
      free(buf);
      return perr(ps, "unterminated string (it begins at line %d, column %d)", sline, scol);
    }
    c = *ps->p;
    if (c == '"') {
      adv(ps);
      break;
    }
    if (c < 0x20) {
      free(buf);
      return perr(ps, "control character 0x%02x in a string must be escaped", c);
    }
    if (c == '\\') {
      uint32_t cp;
      adv(ps);
      c = ps->p < ps->end ? *ps->p : 0;
      switch (c) {
      case '"':
      case '\\':
      case '/':
        *d++ = c;
        break;
      case 'b':
        *d++ = '\b';
        break;
      case 'f':
        *d++ = '\f';
        break;
      case 'n':
        *d++ = '\n';
        break;
      case 'r':
        *d++ = '\r';
        break;
      case 't':
        *d++ = '\t';
        break;
      case 'u':
        adv(ps);
        if (hex4(ps, &cp) != 0) {
          free(buf);
          return -1;
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
          free(buf);
          return perr(ps, "\\u%04X is a low surrogate without a high one before it", cp);
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          uint32_t lo;
          if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') {
            free(buf);
            return perr(ps, "\\u%04X (a high surrogate) must be followed by \\u and a low one", cp);
          }
          adv(ps);
          adv(ps);
          if (hex4(ps, &lo) != 0) {
            free(buf);
            return -1;
          }
          if (lo < 0xDC00 || lo > 0xDFFF) {
            free(buf);
            return perr(ps, "\\u%04X is not a low surrogate", lo);
          }
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        /* six or twelve input bytes always hold the at most four output bytes */
        d += clue__utf8_put(d, cp);
        continue;
      default:
        free(buf);
        if (ps->p >= ps->end)
          return perr(ps, "unterminated string (it begins at line %d, column %d)", sline, scol);
        return perr(ps, "invalid escape '\\%c'", c >= 0x20 && c < 0x7F ? c : '?');
      }
      adv(ps);
      continue;
    }
    if (c < 0x80) {
      *d++ = c;
      adv(ps);
    } else {
      size_t n = clue__utf8_len(ps->p, (size_t)(ps->end - ps->p));
      if (n == 0) {
        free(buf);
        return perr(ps, "invalid UTF-8 (byte 0x%02x)", c);
      }
      while (n-- > 0) {
        *d++ = *ps->p;
        adv(ps);
      }
    }
  }
  *d = '\0';
  *out = (char *)buf;
  *outlen = (size_t)(d - buf);
  return 0;
}

static int is_digit(const parser_t *ps) {
  return ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9';
}

/* A number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, kept as written. */
static int parse_number(parser_t *ps, jnode_t *n) {
  const unsigned char *start = ps->p;

  if (*ps->p == '-')
    adv(ps);
  if (!is_digit(ps))
    return perr(ps, "a number needs a digit here");
  if (*ps->p == '0') {
    adv(ps);
    if (is_digit(ps))
      return perr(ps, "numbers may not have leading zeros");
  } else {
    while (is_digit(ps))
      adv(ps);
  }
  if (ps->p < ps->end && *ps->p == '.') {
    adv(ps);
    if (!is_digit(ps))
      return perr(ps, "a digit must follow the decimal point");
    while (is_digit(ps))
      adv(ps);
  }
  if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
    adv(ps);
    if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
      adv(ps);
    if (!is_digit(ps))
      return perr(ps, "a digit must follow the exponent");
    while (is_digit(ps))
      adv(ps);
  }
  n->type = J_NUMBER;
  n->len = (size_t)(ps->p - start);
  n->text = clue__strndup((const char *)start, n->len);
  return n->text == NULL ? poom(ps) : 0;
}

static int parse_literal(parser_t *ps, const char *word) {
  size_t k = strlen(word);

  if ((size_t)(ps->end - ps->p) < k || memcmp(ps->p, word, k) != 0)
    return perr(ps, "invalid literal (expected %s)", word);
  for (size_t i = 0; i < k; i++)
    adv(ps);
  return 0;
}

static int parse_value(parser_t *ps, jnode_t *n, int depth);

static int parse_array(parser_t *ps, jnode_t *n, int depth) {
  char what[32];

  n->type = J_ARRAY;
  adv(ps);
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == ']') {
    adv(ps);
    return 0;
  }
  for (;;) {
    if (grow(ps, n) != 0)
      return -1;
    memset(&n->kids[n->n], 0, sizeof(n->kids[0]));
    n->n++;
    if (parse_value(ps, &n->kids[n->n - 1], depth + 1) != 0)
      return -1;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      adv(ps);
      skip_ws(ps);
      if (ps->p < ps->end && *ps->p == ']')
        return perr(ps, "trailing comma before ']'");
      continue;
    }
    if (ps->p < ps->end && *ps->p == ']') {
      adv(ps);
      return 0;
    }
    return perr(ps, "expected ',' or ']' in an array, found %s", describe(ps, what, sizeof(what)));
  }
}

static int parse_object(parser_t *ps, jnode_t *n, int depth) {
  char what[32];

  n->type = J_OBJECT;
  adv(ps);
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == '}') {
    adv(ps);
    return 0;
  }
  for (;;) {
    size_t i, klen;
    if (ps->p >= ps->end || *ps->p != '"')
      return perr(ps, "expected a member name in double quotes, found %s",
                  describe(ps, what, sizeof(what)));
    if (grow(ps, n) != 0)
      return -1;
    i = n->n;
    memset(&n->kids[i], 0, sizeof(n->kids[0]));
    n->key_pos[2 * i] = ps->line;
    n->key_pos[2 * i + 1] = ps->col;
    n->keys[i] = NULL;
    n->n++;
    if (parse_string(ps, &n->keys[i], &klen) != 0)
      return -1;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':')
      return perr(ps, "expected ':' after the member name, found %s",
                  describe(ps, what, sizeof(what)));
    adv(ps);
    if (parse_value(ps, &n->kids[i], depth + 1) != 0)
      return -1;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ',') {
      adv(ps);
      skip_ws(ps);
      if (ps->p < ps->end && *ps->p == '}')
        return perr(ps, "trailing comma before '}'");
      continue;
    }
    if (ps->p < ps->end && *ps->p == '}') {
      adv(ps);
      return 0;
    }
    return perr(ps, "expected ',' or '}' in an object, found %s", describe(ps, what, sizeof(what)));
  }
}

static int parse_value(parser_t *ps, jnode_t *n, int depth) {
  char what[32];

  skip_ws(ps);
  n->line = ps->line;
  n->col = ps->col;
  if (depth > MAX_DEPTH)
    return perr(ps, "nested more than %d levels deep", MAX_DEPTH);
  if (ps->p >= ps->end)
    return perr(ps, "unexpected end of input, expected a value");
  switch (*ps->p) {
  case '{':
    return parse_object(ps, n, depth);
  case '[':
    return parse_array(ps, n, depth);
  case '"':
    n->type = J_STRING;
    return parse_string(ps, &n->text, &n->len);
  case 't':
    n->type = J_BOOL;
    n->boolean = 1;
    return parse_literal(ps, "true");
  case 'f':
    n->type = J_BOOL;
    return parse_literal(ps, "false");
  case 'n':
    n->type = J_NULL;
    return parse_literal(ps, "null");
  default:
    if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
      return parse_number(ps, n);
    if (*ps->p == '\'')
      return perr(ps, "strings must be in double quotes");
    if (*ps->p == '/')
      return perr(ps, "comments are not allowed in JSON");
    return perr(ps, "unexpected %s, expected a value", describe(ps, what, sizeof(what)));
  }
}

/* Parse a whole document into *root. */
static int parse_document(const char *text, size_t len, jnode_t *root, clue_json_error_t *err) {
  parser_t ps = {(const unsigned char *)text, (const unsigned char *)text + len, 1, 1, err, 0, 0};
  char what[32];

  /* A byte order mark is no part of the text (RFC 8259 §8.1 lets parsers ignore it). */
  if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
    ps.p += 3;
  memset(root, 0, sizeof(*root));
  if (parse_value(&ps, root, 0) != 0)
    return ps.oom ? CLUE_ENOMEM : CLUE_EJSON;
  skip_ws(&ps);
  if (ps.p < ps.end) {
    perr(&ps, "unexpected %s after the end of the JSON value", describe(&ps, what, sizeof(what)));
    return CLUE_EJSON;
  }
  return 0;
}

/* ---- mapping onto messages ---------------------------------------------------------------- */

typedef struct mapper {
  clue_json_error_t *err;
  int oom;
  int failed;
  const char *where; /* "element 3: " when reading an array, else "" */
} mapper_t;

static int merr(mapper_t *m, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int merr(mapper_t *m, int line, int col, const char *fmt, ...) {
  char msg[sizeof(((clue_json_error_t *)0)->message)];
  va_list ap;

  if (!m->failed) {
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (m->err != NULL) {
      m->err->line = line;
      m->err->column = col;
      snprintf(m->err->message, sizeof(m->err->message), "%s%s", m->where, msg);
    }
    m->failed = 1;
  }
  return -1;
}

static int moom(mapper_t *m) {
  if (!m->failed && m->err != NULL) {
    m->err->line = m->err->column = 0;
    snprintf(m->err->message, sizeof(m->err->message), "out of memory");
  }
  m->failed = m->oom = 1;
  return -1;
}

static const char *type_name(jtype_t t) {
  static const char *const names[] = {"null",     "a boolean", "a number",
                                      "a string", "an array",  "an object"};
  return names[t];
}

/* The field named key, by its .proto name or its lowerCamelCase JSON name. */
static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d,
                                                  const char *key) {
  for (unsigned i = 0; i < d->n_fields; i++) {
    const char *a = d->fields[i].name, *b = key;
    if (strcmp(a, b) == 0)
      return &d->fields[i];
    while (*a != '\0' && *b != '\0') {
      if (*a == '_' && a[1] >= 'a' && a[1] <= 'z') {
        if (*b != a[1] - 'a' + 'A')
          break;
        a += 2;
      } else if (*a == *b) {
        a++;
      } else {
        break;
      }
      b++;
    }
    if (*a == '\0' && *b == '\0')
      return &d->fields[i];
  }
  return NULL;
}

static int map_int(mapper_t *m, const jnode_t *v, const ProtobufCFieldDescriptor *f, int64_t lo,
                   uint64_t hi, int is_unsigned, void *out) {
  const char *s = v->text;
  char *end;

  /* proto3's JSON mapping writes 64-bit integers as strings; both forms are accepted. */
  if (v->type != J_NUMBER && v->type != J_STRING)
    return merr(m, v->line, v->col, "field '%s' must be an integer, not %s", f->name,
                type_name(v->type));
  if (v->type == J_STRING && (v->len == 0 || strlen(s) != v->len))
    return merr(m, v->line, v->col, "field '%s' must be an integer", f->name);
  errno = 0;
  if (is_unsigned) {
    unsigned long long u;
    if (s[0] == '-' || s[0] < '0' || s[0] > '9')
      goto bad;
    u = strtoull(s, &end, 10);
    if (*end != '\0')
      goto bad;
    if (errno == ERANGE || u > hi)
      goto range;
    if (hi > UINT32_MAX)
      *(uint64_t *)out = u;
    else
      *(uint32_t *)out = (uint32_t)u;
  } else {
    long long x;
    if (s[0] != '-' && (s[0] < '0' || s[0] > '9'))
      goto bad;
    x = strtoll(s, &end, 10);
    if (*end != '\0')
      goto bad;
    if (errno == ERANGE || x < lo || (x > 0 && (uint64_t)x > hi))
      goto range;
    if (hi > INT32_MAX)
      *(int64_t *)out = x;
    else
      *(int32_t *)out = (int32_t)x;
  }
  return 0;
bad:
  return merr(m, v->line, v->col, "field '%s' must be an integer, not '%s'", f->name, s);
range:
  return merr(m, v->line, v->col, "field '%s': %s is out of range", f->name, s);
}

static int map_enum(mapper_t *m, const jnode_t *v, const ProtobufCFieldDescriptor *f, int *out) {
  const ProtobufCEnumDescriptor *ed = f->descriptor;
  char choices[200];

  if (v->type == J_STRING) {
    if (clue_enum_from_name(ed, v->text, out) == 0)
      return 0;
  } else if (v->type == J_NUMBER) {
    char *end;
    long x;
    errno = 0;
    x = strtol(v->text, &end, 10);
    if (*end == '\0' && errno == 0 && x >= INT32_MIN && x <= INT32_MAX &&
        protobuf_c_enum_descriptor_get_value(ed, (int)x) != NULL) {
      *out = (int)x;
      return 0;
    }
  } else {
    return merr(m, v->line, v->col, "field '%s' must be a string naming a %s, not %s", f->name,
                ed->short_name, type_name(v->type));
  }
  return merr(m, v->line, v->col, "field '%s': '%s' is not a %s (one of %s)", f->name, v->text,
              ed->short_name, clue_enum_choices(ed, ", ", choices, sizeof(choices)));
}

static int map_message(mapper_t *m, const jnode_t *obj, const ProtobufCMessageDescriptor *d,
                       ProtobufCMessage **out);

/* One value of field f into the storage at p (the member, or an element of a repeated one). */
static int map_value(mapper_t *m, const jnode_t *v, const ProtobufCFieldDescriptor *f, void *p) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    return map_int(m, v, f, INT32_MIN, INT32_MAX, 0, p);
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    return map_int(m, v, f, 0, UINT32_MAX, 1, p);
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    return map_int(m, v, f, INT64_MIN, INT64_MAX, 0, p);
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    return map_int(m, v, f, 0, UINT64_MAX, 1, p);
  case PROTOBUF_C_TYPE_FLOAT:
  case PROTOBUF_C_TYPE_DOUBLE: {
    double x;
    if (v->type != J_NUMBER)
      return merr(m, v->line, v->col, "field '%s' must be a number, not %s", f->name,
                  type_name(v->type));
    x = strtod(v->text, NULL);
    if (!isfinite(x) || (f->type == PROTOBUF_C_TYPE_FLOAT && fabs(x) > 3.4028234663852886e38))
      return merr(m, v->line, v->col, "field '%s': %s is out of range", f->name, v->text);
    if (f->type == PROTOBUF_C_TYPE_FLOAT)
      *(float *)p = (float)x;
    else
      *(double *)p = x;
    return 0;
  }
  case PROTOBUF_C_TYPE_BOOL:
    if (v->type != J_BOOL)
      return merr(m, v->line, v->col, "field '%s' must be true or false, not %s", f->name,
                  type_name(v->type));
    *(protobuf_c_boolean *)p = v->boolean;
    return 0;
  case PROTOBUF_C_TYPE_ENUM:
    return map_enum(m, v, f, p);
  case PROTOBUF_C_TYPE_STRING: {
    char *s;
    if (v->type != J_STRING)
      return merr(m, v->line, v->col, "field '%s' must be a string, not %s", f->name,
                  type_name(v->type));
    if (strlen(v->text) != v->len)
      return merr(m, v->line, v->col, "field '%s' may not contain U+0000", f->name);
    s = clue__strdup(v->text);
    if (s == NULL)
      return moom(m);
    *(char **)p = s;
    return 0;
  }
  case PROTOBUF_C_TYPE_BYTES:
    return merr(m, v->line, v->col, "field '%s': bytes fields cannot be read from JSON here",
                f->name);
  case PROTOBUF_C_TYPE_MESSAGE:
    if (v->type != J_OBJECT)
      return merr(m, v->line, v->col, "field '%s' must be an object, not %s", f->name,
                  type_name(v->type));
    return map_message(m, v, f->descriptor, (ProtobufCMessage **)p);
  }
  return merr(m, v->line, v->col, "field '%s' has a type this reader does not know", f->name);
}

static int map_field(mapper_t *m, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                     const jnode_t *v) {
  char *base = (char *)msg;
  void *member = base + f->offset;

  if (v->type == J_NULL) /* proto3 JSON: null leaves the field at its default */
    return 0;
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    size_t sz = clue_type_size(f->type);
    char *arr;
    if (v->type != J_ARRAY)
      return merr(m, v->line, v->col, "field '%s' must be an array, not %s", f->name,
                  type_name(v->type));
    if (v->n == 0)
      return 0;
    /* Zeroed, and counted as it fills, so that a failure part-way frees what was read. */
    arr = clue__calloc(v->n, sz);
    if (arr == NULL)
      return moom(m);
    *(void **)member = arr;
    for (size_t i = 0; i < v->n; i++) {
      if (v->kids[i].type == J_NULL)
        return merr(m, v->kids[i].line, v->kids[i].col, "field '%s': null in an array", f->name);
      if (map_value(m, &v->kids[i], f, arr + i * sz) != 0)
        return -1;
      (*(size_t *)(base + f->quantifier_offset))++;
    }
    return 0;
  }
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
    uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
    if (*which != 0 && *which != f->id)
      return merr(m, v->line, v->col, "field '%s' is one of a set of which another is set",
                  f->name);
    if (map_value(m, v, f, member) != 0)
      return -1;
    *which = f->id;
    return 0;
  }
  if (f->type == PROTOBUF_C_TYPE_STRING) {
    /* replaces the default (a static empty string), which must not be freed */
    return map_value(m, v, f, member);
  }
  if (map_value(m, v, f, member) != 0)
    return -1;
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
      f->quantifier_offset != 0)
    *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
  return 0;
}

static int map_message(mapper_t *m, const jnode_t *obj, const ProtobufCMessageDescriptor *d,
                       ProtobufCMessage **out) {
  ProtobufCMessage *msg;
  size_t *first; /* per field: 1 + the member that set it, or 0 */

  if (obj->type != J_OBJECT)
    return merr(m, obj->line, obj->col, "expected an object (a %s), not %s", d->short_name,
                type_name(obj->type));
  msg = clue__malloc(d->sizeof_message);
  if (msg == NULL)
    return moom(m);
  d->message_init(msg);
  *out = msg; /* from here on the caller frees it, whatever happens */
  first = clue__calloc(d->n_fields ? d->n_fields : 1, sizeof(*first));
  if (first == NULL)
    return moom(m);
  for (size_t i = 0; i < obj->n; i++) {
    const char *key = obj->keys[i];
    const ProtobufCFieldDescriptor *f = find_field(d, key);
    int kl = obj->key_pos[2 * i], kc = obj->key_pos[2 * i + 1];
    size_t fi;
    if (f == NULL) {
      char names[160];
      size_t used = 0;
      names[0] = '\0';
      for (unsigned k = 0; k < d->n_fields; k++) {
        int w =
            snprintf(names + used, sizeof(names) - used, "%s%s", k ? ", " : "", d->fields[k].name);
        if (w < 0 || (size_t)w >= sizeof(names) - used)
          break;
        used += (size_t)w;
      }
      free(first);
      return merr(m, kl, kc, "unknown field '%s' in %s (fields: %s)", key, d->short_name, names);
    }
    fi = (size_t)(f - d->fields);
    if (first[fi] != 0) {
      size_t j = first[fi] - 1;
      free(first);
      return merr(m, kl, kc, "field '%s' given twice (first at line %d, column %d)", f->name,
                  obj->key_pos[2 * j], obj->key_pos[2 * j + 1]);
    }
    first[fi] = i + 1;
    if (map_field(m, msg, f, &obj->kids[i]) != 0) {
      free(first);
      return -1;
    }
  }
  free(first);
  return 0;
}

static int check_args(const char *text, const ProtobufCMessageDescriptor *d, const void *out,
                      clue_json_error_t *err) {
  if (err != NULL) {
    err->line = err->column = 0;
    err->message[0] = '\0';
  }
  if (text == NULL || out == NULL || d == NULL ||
      d->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
    if (err != NULL)
      snprintf(err->message, sizeof(err->message), "invalid argument");
    return CLUE_EINVAL;
  }
  return 0;
}

static int map_result(const mapper_t *m) {
  return m->oom ? CLUE_ENOMEM : CLUE_EJSON;
}

int clue_from_json(const char *text, size_t len, const ProtobufCMessageDescriptor *d,
                   ProtobufCMessage **out, clue_json_error_t *err) {
  mapper_t m = {err, 0, 0, ""};
  ProtobufCMessage *msg = NULL;
  jnode_t root;
  int rv;

  if ((rv = check_args(text, d, out, err)) != 0)
    return rv;
  rv = parse_document(text, len, &root, err);
  if (rv == 0 && map_message(&m, &root, d, &msg) != 0)
    rv = map_result(&m);
  node_free(&root);
  if (rv != 0) {
    if (msg != NULL)
      protobuf_c_message_free_unpacked(msg, NULL);
    return rv;
  }
  *out = msg;
  return 0;
}

void clue_messages_free(ProtobufCMessage **msgs, size_t n) {
  if (msgs == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    if (msgs[i] != NULL)
      protobuf_c_message_free_unpacked(msgs[i], NULL);
  free(msgs);
}

int clue_from_json_array(const char *text, size_t len, const ProtobufCMessageDescriptor *d,
                         ProtobufCMessage ***out, size_t *n, clue_json_error_t *err) {
  mapper_t m = {err, 0, 0, ""};
  ProtobufCMessage **msgs = NULL;
  char where[48];
  jnode_t root;
  size_t done = 0, count;
  int rv;

  if ((rv = check_args(text, d, n != NULL ? out : NULL, err)) != 0)
    return rv;
  rv = parse_document(text, len, &root, err);
  if (rv != 0) {
    node_free(&root);
    return rv;
  }
  if (root.type != J_ARRAY) {
    merr(&m, root.line, root.col, "expected an array of objects, not %s", type_name(root.type));
    node_free(&root);
    return CLUE_EJSON;
  }
  count = root.n;
  msgs = clue__calloc(count ? count : 1, sizeof(*msgs));
  if (msgs == NULL) {
    moom(&m);
    node_free(&root);
    return CLUE_ENOMEM;
  }
  for (; done < count; done++) {
    snprintf(where, sizeof(where), "element %zu: ", done + 1);
    m.where = where;
    if (map_message(&m, &root.kids[done], d, &msgs[done]) != 0) {
      rv = map_result(&m);
      break;
    }
  }
  node_free(&root);
  if (rv != 0) {
    clue_messages_free(msgs, count);
    return rv;
  }
  *out = msgs;
  *n = count;
  return 0;
}
