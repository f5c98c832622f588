/* Output shared by every command: JSON, "field: value" records and tables, all driven by
 * protobuf-c descriptors so a new command only names the fields it wants. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "clue/v1/common.pb-c.h"
#include "table.h"

const char *cli_enum_short(const ProtobufCEnumDescriptor *ed, int value) {
  const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(ed, value);

  return ev != NULL ? ev->name + clue_enum_prefix_len(ed) : NULL;
}

const char *cli_enum_text(const ProtobufCEnumDescriptor *ed, int value) {
  const char *s = cli_enum_short(ed, value);

  return s != NULL ? s : "-";
}

const char *cli_state_text(int state) {
  const char *s = state != 0 ? cli_enum_short(&clue__v1__clue_state__descriptor, state) : NULL;

  return s != NULL ? s : "-";
}

void cli_put_text(FILE *o, const char *s, int keep_newlines) {
  text_put(o, s, keep_newlines);
}

char *cli_memstream_text(FILE *o, char **buf) {
  int bad = ferror(o);

  if (fclose(o) != 0 || bad) {
    free(*buf);
    return NULL;
  }
  return *buf;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);

  return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int is_time_field(const ProtobufCFieldDescriptor *f) {
  return ends_with(f->name, "_ms") && f->type == PROTOBUF_C_TYPE_INT64;
}

static int is_id_field(const ProtobufCFieldDescriptor *f) {
  return strcmp(f->name, "id") == 0 || ends_with(f->name, "_id");
}

static void put_time(FILE *o, int64_t ms) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  char buf[64];

  if (localtime_r(&t, &tm) != NULL && strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm) > 0)
    fputs(buf, o);
  else
    fprintf(o, "%lld", (long long)ms);
}

/* One value (a member or an element of a repeated field) as human text. */
static void put_value(FILE *o, const ProtobufCFieldDescriptor *f, const void *p) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32: {
    int32_t v = *(const int32_t *)p;
    if (v == 0 && is_id_field(f))
      fputs("-", o);
    else
      fprintf(o, "%d", (int)v);
    break;
  }
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    fprintf(o, "%u", (unsigned)*(const uint32_t *)p);
    break;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64: {
    int64_t v = *(const int64_t *)p;
    char when[64];
    if (v == 0 && (is_id_field(f) || is_time_field(f)))
      fputs("-", o);
    else if (strcmp(f->name, "deadline_ms") == 0)
      fputs(cli_deadline_text(v, when, sizeof(when)), o);
    else if (is_time_field(f))
      put_time(o, v);
    else
      fprintf(o, "%lld", (long long)v);
    break;
  }
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    fprintf(o, "%llu", (unsigned long long)*(const uint64_t *)p);
    break;
  case PROTOBUF_C_TYPE_FLOAT:
    fprintf(o, "%g", (double)*(const float *)p);
    break;
  case PROTOBUF_C_TYPE_DOUBLE:
    fprintf(o, "%g", *(const double *)p);
    break;
  case PROTOBUF_C_TYPE_BOOL:
    fputs(*(const protobuf_c_boolean *)p ? "yes" : "no", o);
    break;
  case PROTOBUF_C_TYPE_ENUM: {
    int v = *(const int *)p;
    const char *name = cli_enum_short(f->descriptor, v);
    if (name == NULL)
      fprintf(o, "%d", v);
    else if (v == 0 && ends_with(name, "UNSPECIFIED"))
      fputs("-", o);
    else
      fputs(name, o);
    break;
  }
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)p;
    if (s != NULL && s[0] != '\0')
      cli_put_text(o, s, 0);
    else
      fputs("-", o);
    break;
  }
  case PROTOBUF_C_TYPE_BYTES: {
    const ProtobufCBinaryData *b = p;
    if (b->len == 0)
      fputs("-", o);
    for (size_t i = 0; i < b->len; i++)
      fprintf(o, "%02x", b->data[i]);
    break;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
    char *json = NULL;
    if (sub == NULL) {
      fputs("-", o);
    } else if (clue_to_json(sub, CLUE_JSON_COMPACT, &json) == 0) {
      fputs(json, o);
      free(json);
    } else {
      fputs("?", o);
    }
    break;
  }
  }
}

char *cli_field_text(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  const char *base = (const char *)m;
  char *buf = NULL;
  size_t len = 0;
  FILE *o = open_memstream(&buf, &len);

  if (o == NULL)
    return NULL;
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    const char *arr = *(const char *const *)(base + f->offset);
    if (n == 0)
      fputs("-", o);
    for (size_t i = 0; i < n; i++) {
      if (i > 0)
        fputs(", ", o);
      put_value(o, f, arr + i * clue_type_size(f->type));
    }
  } else if (!clue_field_present(m, f)) {
    fputs("-", o);
  } else {
    put_value(o, f, base + f->offset);
  }
  return cli_memstream_text(o, &buf);
}

int cli_print_json(cli_t *cli, const ProtobufCMessage *m, int compact) {
  char *json = NULL;

  if (clue_to_json(m, compact ? CLUE_JSON_COMPACT : 0, &json) != 0)
    return cli_oom(cli);
  puts(json);
  free(json);
  return CLI_OK;
}

int cli_print_json_with(cli_t *cli, const ProtobufCMessage *m, const char *key, const char *value,
                        int compact) {
  char *json = NULL;
  FILE *o;
  int empty;

  if (clue_to_json(m, compact ? CLUE_JSON_COMPACT : 0, &json) != 0)
    return cli_oom(cli);
  /* The object's opening brace, then the extra member, then the rest of the object. */
  empty = strcmp(json, "{}") == 0;
  o = stdout;
  fputs(compact ? "{\"" : "{\n  \"", o);
  fputs(key, o); /* a fixed name such as request_id: nothing to escape */
  fputs(compact ? "\":\"" : "\": \"", o);
  for (const char *p = value; *p; p++) { /* a UUID as given: escape what JSON needs */
    if (*p == '"' || *p == '\\')
      fputc('\\', o);
    if ((unsigned char)*p < 0x20)
      fprintf(o, "\\u%04x", *p);
    else
      fputc(*p, o);
  }
  fputs(empty ? (compact ? "\"}" : "\"\n}") : "\",", o);
  if (!empty)
    fputs(json + 1, o);
  fputc('\n', o);
  free(json);
  return CLI_OK;
}

/* Width of the longest name in a record, with nested messages' fields as "a.b". */
static size_t record_width(const ProtobufCMessage *m, size_t prefix) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  size_t width = 0;

  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const ProtobufCMessage *sub = NULL;
    size_t w = prefix + strlen(f->name);
    if (f->type == PROTOBUF_C_TYPE_MESSAGE && f->label != PROTOBUF_C_LABEL_REPEATED)
      sub = *(ProtobufCMessage *const *)((const char *)m + f->offset);
    if (sub != NULL)
      w = record_width(sub, w + 1);
    else if (is_time_field(f))
      w -= 3;
    if (w > width)
      width = w;
  }
  return width;
}

static int print_record_at(cli_t *cli, const ProtobufCMessage *m, const char *prefix,
                           size_t width) {
  const ProtobufCMessageDescriptor *d = m->descriptor;

  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const ProtobufCMessage *sub = NULL;
    char name[160];
    char *text;
    int n;

    n = snprintf(name, sizeof(name), "%s%s", prefix, f->name);
    if (n < 0 || (size_t)n + 1 >= sizeof(name)) /* room for a '.' after it */
      continue;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE && f->label != PROTOBUF_C_LABEL_REPEATED)
      sub = *(ProtobufCMessage *const *)((const char *)m + f->offset);
    if (sub != NULL) {
      int rc;
      name[n] = '.';
      name[n + 1] = '\0';
      rc = print_record_at(cli, sub, name, width);
      if (rc != CLI_OK)
        return rc;
      continue;
    }
    text = cli_field_text(m, f);
    if (text == NULL)
      return cli_oom(cli);
    if (is_time_field(f)) /* "created_at", with the value shown as a date */
      n -= 3;
    printf("%.*s:%*s%s\n", n, name, (int)(width - (size_t)n) + 2, "", text);
    free(text);
  }
  return CLI_OK;
}

int cli_print_record(cli_t *cli, const ProtobufCMessage *m) {
  return print_record_at(cli, m, "", record_width(m, 0));
}

char *cli_path_text(const ProtobufCMessage *m, const char *path) {
  const ProtobufCFieldDescriptor *f;
  const char *dot;
  char name[64];
  int count = path[0] == '#';

  if (count)
    path++;
  while ((dot = strchr(path, '.')) != NULL) {
    const ProtobufCMessage *sub;
    if ((size_t)(dot - path) >= sizeof(name))
      return NULL;
    memcpy(name, path, (size_t)(dot - path));
    name[dot - path] = '\0';
    f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    if (f == NULL || f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED)
      return NULL;
    sub = *(ProtobufCMessage *const *)((const char *)m + f->offset);
    if (sub == NULL)
      return strdup("-");
    m = sub;
    path = dot + 1;
  }
  f = protobuf_c_message_descriptor_get_field_by_name(m->descriptor, path);
  if (f == NULL)
    return NULL;
  if (count) {
    char buf[32];
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
      return NULL;
    snprintf(buf, sizeof(buf), "%zu", *(const size_t *)((const char *)m + f->quantifier_offset));
    return strdup(buf);
  }
  return cli_field_text(m, f);
}

/* Local time of ms in strftime's fmt into buf, or "-" for 0 or a time it cannot show. */
static const char *local_text(int64_t ms, const char *fmt, char *buf, size_t len) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;

  if (ms == 0 || localtime_r(&t, &tm) == NULL || strftime(buf, len, fmt, &tm) == 0)
    snprintf(buf, len, "-");
  return buf;
}

const char *cli_time_text(int64_t ms, char *buf, size_t len) {
  return local_text(ms, "%Y-%m-%d %H:%M", buf, len);
}

const char *cli_date_text(int64_t ms, char *buf, size_t len) {
  return local_text(ms, "%Y-%m-%d", buf, len);
}

const char *cli_deadline_text(int64_t ms, char *buf, size_t len) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;

  /* "--deadline 2026-12-31" is sent as the local midnight that ends that day (cli_time());
   * shown as that midnight's date it would read one day later than the one typed. */
  if (ms > 0 && ms % 1000 == 0 && localtime_r(&t, &tm) != NULL && tm.tm_hour == 0 &&
      tm.tm_min == 0 && tm.tm_sec == 0) {
    t -= 1;
    if (localtime_r(&t, &tm) != NULL && strftime(buf, len, "%Y-%m-%d (end of day)", &tm) > 0)
      return buf;
  }
  return cli_time_text(ms, buf, len);
}

/* The text of a column: its field, or of "a|b" the first of a and b that is set (not empty
 * and not 0), else the last one's. A server that sends no code gets its id shown. */
static char *col_text(const ProtobufCMessage *row, const char *spec) {
  char path[128];
  const char *bar;
  char *text;

  while ((bar = strchr(spec, '|')) != NULL) {
    size_t len = (size_t)(bar - spec);
    if (len >= sizeof(path))
      return NULL;
    memcpy(path, spec, len);
    path[len] = '\0';
    text = cli_path_text(row, path);
    if (text == NULL || (text[0] != '\0' && strcmp(text, "0") != 0 && strcmp(text, "-") != 0))
      return text;
    free(text);
    spec = bar + 1;
  }
  return cli_path_text(row, spec);
}

int cli_print_table(cli_t *cli, const ProtobufCMessage *m, const char *list,
                    const cli_col_t *cols) {
  const ProtobufCFieldDescriptor *lf =
      protobuf_c_message_descriptor_get_field_by_name(m->descriptor, list);
  const char *headers[32];
  size_t ncols = 0, n;
  ProtobufCMessage *const *rows;
  table_t *t;
  int rv;

  if (lf == NULL || lf->label != PROTOBUF_C_LABEL_REPEATED ||
      lf->type != PROTOBUF_C_TYPE_MESSAGE) { /* a mistake in a command's table */
    fprintf(stderr, "cluectl: %s has no repeated message field '%s'\n", m->descriptor->name, list);
    return CLI_FAILED;
  }
  while (cols[ncols].header != NULL && ncols < 32) {
    headers[ncols] = cols[ncols].header;
    ncols++;
  }
  t = table_new(ncols, headers);
  if (t == NULL)
    return cli_oom(cli);
  n = *(const size_t *)((const char *)m + lf->quantifier_offset);
  rows = *(ProtobufCMessage *const *const *)((const char *)m + lf->offset);
  for (size_t r = 0; r < n; r++) {
    for (size_t c = 0; c < ncols; c++) {
      char *text = col_text(rows[r], cols[c].field);
      table_add(t, text != NULL ? text : strdup("?"));
    }
  }
  rv = table_print(t, stdout);
  table_free(t);
  return rv == 0 ? CLI_OK : cli_oom(cli);
}
