/* Option access, value checks and error reporting shared by all commands. */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/evp.h>

#include "cli.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "net/grpc_wire.h"

const char *cli_arg(const cli_args_t *a, const char *name) {
  const char *v = NULL;

  for (size_t i = 0; i < a->n; i++)
    if (strcmp(a->v[i].opt->name, name) == 0)
      v = a->v[i].value;
  return v;
}

void cli_arg_str(const cli_args_t *a, const char *name, char **field) {
  const char *v = cli_arg(a, name);

  if (v != NULL)
    *field = (char *)v;
}

int cli_flag(const cli_args_t *a, const char *name) {
  for (size_t i = 0; i < a->n; i++)
    if (strcmp(a->v[i].opt->name, name) == 0)
      return 1;
  return 0;
}

const char *cli_arg_nth(const cli_args_t *a, const char *name, size_t nth) {
  for (size_t i = 0; i < a->n; i++)
    if (strcmp(a->v[i].opt->name, name) == 0 && nth-- == 0)
      return a->v[i].value;
  return NULL;
}

size_t cli_arg_count(const cli_args_t *a, const char *name) {
  size_t n = 0;

  for (size_t i = 0; i < a->n; i++)
    if (strcmp(a->v[i].opt->name, name) == 0)
      n++;
  return n;
}

/* s as a positive 64-bit id into *out; -1 (*out untouched) if it is not one. */
static int parse_id(const char *s, int64_t *out) {
  char *end;
  long long v;

  errno = 0;
  v = strtoll(s, &end, 10);
  if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v <= 0)
    return -1;
  *out = v;
  return 0;
}

/* The value s of --name as an id, or a usage error. */
static int id_value(cli_t *cli, const char *name, const char *s, int64_t *out) {
  if (parse_id(s, out) != 0)
    return cli_usage_error(cli, "--%s: '%s' is not a valid id (a positive integer)", name, s);
  return 0;
}

int cli_arg_version(cli_t *cli, const cli_args_t *a, int64_t *out) {
  const char *s = cli_arg(a, "version");

  if (s != NULL && parse_id(s, out) != 0)
    return cli_usage_error(cli, "--version: '%s' is not a version (a positive integer)", s);
  return 0;
}

int cli_arg_id(cli_t *cli, const cli_args_t *a, const char *name, int64_t *out) {
  const char *s = cli_arg(a, name);

  return s != NULL ? id_value(cli, name, s, out) : 0;
}

/* The value s of --name as a value of enum ed, or a usage error. */
static int enum_value(cli_t *cli, const char *name, const char *s,
                      const ProtobufCEnumDescriptor *ed, int *out) {
  char choices[256];
  int v;

  /* UNSPECIFIED is what leaving the option out means, not a value to name. */
  if (clue_enum_from_name(ed, s, &v) == 0 &&
      !(v == 0 && strstr(cli_enum_short(ed, v), "UNSPECIFIED") != NULL)) {
    *out = v;
    return 0;
  }
  return cli_usage_error(cli, "--%s: '%s' is not one of %s", name, s,
                         clue_enum_choices(ed, "|", choices, sizeof(choices)));
}

int cli_arg_enum(cli_t *cli, const cli_args_t *a, const char *name,
                 const ProtobufCEnumDescriptor *ed, int *out) {
  const char *s = cli_arg(a, name);

  return s != NULL ? enum_value(cli, name, s, ed, out) : 0;
}

int cli_usage_error(cli_t *cli, const char *fmt, ...) {
  va_list ap;

  fprintf(stderr, "cluectl%s%s: ", cli->cmd != NULL ? " " : "", cli->cmd != NULL ? cli->cmd : "");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nRun 'cluectl%s%s --help' for usage.\n", cli->cmd != NULL ? " " : "",
          cli->cmd != NULL ? cli->cmd : "");
  return CLI_USAGE;
}

/* One google.rpc detail for people, one line each: the bad fields, the unmet preconditions,
 * the reason and its facts. ResourceInfo says no more than the message. Every text in it is
 * the server's, written as cli_put_text() writes it. */
static void print_detail(const Google__Protobuf__Any *any) {
  const char *type = strrchr(any->type_url ? any->type_url : "", '/');
  ProtobufCMessage *m;

  type = type ? type + 1 : "";
  if (strcmp(type, "google.rpc.BadRequest") == 0) {
    Google__Rpc__BadRequest *b = google__rpc__bad_request__unpack(NULL, any->value.len, any->value.data);
    for (size_t i = 0; b && i < b->n_field_violations; i++) {
      fputs("  field ", stderr);
      cli_put_text(stderr, b->field_violations[i]->field[0] ? b->field_violations[i]->field : "?",
                   0);
      fputs(": ", stderr);
      cli_put_text(stderr, b->field_violations[i]->description, 0);
      fputc('\n', stderr);
    }
    m = b ? &b->base : NULL;
  } else if (strcmp(type, "google.rpc.PreconditionFailure") == 0) {
    Google__Rpc__PreconditionFailure *p =
        google__rpc__precondition_failure__unpack(NULL, any->value.len, any->value.data);
    for (size_t i = 0; p && i < p->n_violations; i++) {
      fputs("  precondition ", stderr);
      cli_put_text(stderr, p->violations[i]->type, 0);
      if (p->violations[i]->subject[0]) {
        fputc(' ', stderr);
        cli_put_text(stderr, p->violations[i]->subject, 0);
      }
      fputs(": ", stderr);
      cli_put_text(stderr, p->violations[i]->description, 0);
      fputc('\n', stderr);
    }
    m = p ? &p->base : NULL;
  } else if (strcmp(type, "google.rpc.ErrorInfo") == 0) {
    Google__Rpc__ErrorInfo *e = google__rpc__error_info__unpack(NULL, any->value.len, any->value.data);
    if (e) {
      fputs("  reason ", stderr);
      cli_put_text(stderr, e->reason, 0);
      for (size_t i = 0; i < e->n_metadata; i++) {
        fputc(' ', stderr);
        cli_put_text(stderr, e->metadata[i]->key, 0);
        fputc('=', stderr);
        cli_put_text(stderr, e->metadata[i]->value, 0);
      }
      fputc('\n', stderr);
    }
    m = e ? &e->base : NULL;
  } else {
    return;
  }
  if (m)
    protobuf_c_message_free_unpacked(m, NULL);
}

int cli_rpc_error(cli_t *cli, int rv, const clue_status_t *st) {
  Google__Rpc__Status *rs;

  if (rv < 0 && (st == NULL || st->message == NULL)) {
    fprintf(stderr, "%s: %s\n", clue_status_name(CLUE_STATUS_INTERNAL), clue_strerror(rv));
    return CLI_FAILED;
  }
  fputs(clue_status_name(st->code), stderr);
  if (st->message != NULL && st->message[0] != '\0') {
    /* The server's grpc-message, or a transport error quoting the server (GOAWAY). */
    fputs(": ", stderr);
    cli_put_text(stderr, st->message, 0);
  }
  fputc('\n', stderr);
  if (st->details != NULL &&
      (rs = google__rpc__status__unpack(NULL, st->details_len, st->details)) != NULL) {
    for (size_t i = 0; i < rs->n_details; i++)
      print_detail(rs->details[i]);
    google__rpc__status__free_unpacked(rs, NULL);
  }
  if (st->code == CLUE_STATUS_UNAUTHENTICATED && cli->no_token)
    fputs("cluectl: no token was given: set CLUED_TOKEN, or pass --token-file FILE (or --token)\n",
          stderr);
  return CLI_FAILED;
}

int cli_oom(cli_t *cli) {
  (void)cli;
  fputs("cluectl: out of memory\n", stderr);
  return CLI_FAILED;
}

/* What a libclue call returned (rv) as cluectl reports it: a failure is reported (0 or
 * CLI_FAILED is returned); st is released either way. */
static int reported(cli_t *cli, int rv, clue_status_t *st) {
  cli->last_code = rv != 0 ? st->code : 0;
  cli->last_unknown = rv != 0 && cli_outcome_unknown(st->code, st->message);
  if (rv != 0)
    rv = cli_rpc_error(cli, rv, st);
  clue_status_clear(st);
  return rv;
}

int cli_call(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
             const ProtobufCMessage *req, ProtobufCMessage **resp) {
  clue_status_t st = CLUE_STATUS_INIT;
  int rv = clue_call_method(cli->conn, service, method, req, resp, &st);

  return reported(cli, rv, &st);
}

int cli_operand_id(cli_t *cli, const cli_args_t *a, int64_t *out) {
  const char *s = a->operand;

  if (s == NULL)
    return cli_usage_error(cli, "missing ID");
  if (parse_id(s, out) != 0)
    return cli_usage_error(cli, "'%s' is not a valid id (a positive integer)", s);
  return 0;
}

int cli_arg_int(cli_t *cli, const cli_args_t *a, const char *name, int64_t min, int64_t max,
                int64_t *out) {
  const char *s = cli_arg(a, name);
  char *end;
  long long v;

  if (s == NULL)
    return 0;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (end == s || *end != '\0' || errno != 0 || (s[0] != '-' && (s[0] < '0' || s[0] > '9')))
    return cli_usage_error(cli, "--%s: '%s' is not an integer", name, s);
  if (v < min || v > max)
    return cli_usage_error(cli, "--%s: %lld is out of range (%lld to %lld)", name, v,
                           (long long)min, (long long)max);
  *out = v;
  return 0;
}

int cli_arg_i32(cli_t *cli, const cli_args_t *a, const char *name, int32_t min, int32_t max,
                int32_t *out) {
  int64_t v = 0;
  int rc = cli_arg_int(cli, a, name, min, max, &v);

  if (rc == 0 && cli_arg(a, name) != NULL)
    *out = (int32_t)v;
  return rc;
}

/* ---- times ------------------------------------------------------------------------------ */

/* Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
 * days_from_civil), so that an explicit offset never depends on the TZ of this process. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  int64_t era;
  unsigned yoe, doy, doe;

  y -= m <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = (unsigned)(y - era * 400);
  doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static int days_in_month(int y, int m) {
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

  return m == 2 && leap ? 29 : days[m - 1];
}

/* n decimal digits at s into *v. */
static int digits(const char *s, int n, int *v) {
  *v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    *v = *v * 10 + (s[i] - '0');
  }
  return 0;
}

/* "YYYY-MM-DD" or RFC 3339 into ms; *date_only says which. Returns 0 or -1. */
static int parse_time(const char *s, int end_of_day, int64_t *ms) {
  int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
  int64_t frac_ms = 0, t;
  const char *p;

  if (strlen(s) < 10 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
      digits(s + 8, 2, &d) || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
    return -1;
  if (s[10] == '\0') {
    struct tm tm = {0};
    time_t tt;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d + (end_of_day ? 1 : 0);
    tm.tm_isdst = -1;
    tt = mktime(&tm);
    if (tt == (time_t)-1)
      return -1;
    *ms = (int64_t)tt * 1000;
    return 0;
  }
  if ((s[10] != 'T' && s[10] != 't' && s[10] != ' ') || digits(s + 11, 2, &h) || s[13] != ':' ||
      digits(s + 14, 2, &mi) || s[16] != ':' || digits(s + 17, 2, &sec) || h > 23 || mi > 59 ||
      sec > 60)
    return -1;
  p = s + 19;
  if (*p == '.') {
    int64_t scale = 100;
    p++;
    if (*p < '0' || *p > '9')
      return -1;
    for (; *p >= '0' && *p <= '9'; p++, scale /= 10)
      frac_ms += (*p - '0') * scale; /* digits past milliseconds add 0 */
  }
  if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
    sign = 0;
  } else if ((*p == '+' || *p == '-') && !digits(p + 1, 2, &oh) && p[3] == ':' &&
             !digits(p + 4, 2, &om) && p[6] == '\0' && oh <= 23 && om <= 59) {
    sign = *p == '+' ? 1 : -1;
  } else {
    return -1;
  }
  if (sec == 60) /* a leap second is the last moment of its minute */
    sec = 59, frac_ms = 999;
  t = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec;
  t -= sign * (oh * 3600 + om * 60);
  *ms = t * 1000 + frac_ms;
  return 0;
}

int cli_arg_time(cli_t *cli, const cli_args_t *a, const char *name, int end_of_day, int64_t *ms) {
  const char *s = cli_arg(a, name);

  if (s == NULL)
    return 0;
  return cli_time(cli, name, s, end_of_day, ms);
}

int cli_time(cli_t *cli, const char *name, const char *s, int end_of_day, int64_t *ms) {
  if (parse_time(s, end_of_day, ms) != 0)
    return cli_usage_error(cli,
                           "--%s: '%s' is not a date (YYYY-MM-DD) or an RFC 3339 time "
                           "(YYYY-MM-DDTHH:MM:SSZ or with an offset such as +08:00)",
                           name, s);
  return 0;
}

int cli_check_period(cli_t *cli, const char *from, int64_t from_ms, const char *to, int64_t to_ms) {
  if (from_ms != 0 && to_ms != 0 && to_ms <= from_ms)
    return cli_usage_error(cli, "the period ends before it begins (--%s is not after --%s)", to,
                           from);
  return 0;
}

int cli_page_args(cli_t *cli, const cli_args_t *a, int *all, char **token) {
  *all = cli_flag(a, "all");
  if (*all && cli_arg(a, "page-token") != NULL)
    return cli_usage_error(cli, "--all starts from the first page; leave out --page-token");
  cli_arg_str(a, "page-token", token);
  return 0;
}

int cli_read_args(cli_t *cli, const cli_args_t *a, Clue__V1__ReadConsistency *rc,
                  Clue__V1__ReadConsistency **field) {
  (void)cli;
  clue__v1__read_consistency__init(rc);
  rc->consistent = cli_flag(a, "consistent");
  cli_arg_str(a, "min-read-lsn", &rc->min_read_lsn);
  if (rc->consistent || rc->min_read_lsn[0])
    *field = rc;
  return 0;
}

/* ---- repeated options ------------------------------------------------------------------- */

int cli_arg_strv(cli_t *cli, const cli_args_t *a, const char *name, char ***out, size_t *n) {
  size_t count = cli_arg_count(a, name);
  char **v;

  *out = NULL;
  *n = 0;
  if (count == 0)
    return 0;
  v = calloc(count, sizeof(*v));
  if (v == NULL)
    return cli_oom(cli);
  for (size_t i = 0; i < count; i++)
    v[i] = (char *)cli_arg_nth(a, name, i);
  *out = v;
  *n = count;
  return 0;
}

int cli_arg_idv(cli_t *cli, const cli_args_t *a, const char *name, int64_t **out, size_t *n) {
  size_t count = cli_arg_count(a, name);
  int64_t *v;

  *out = NULL;
  *n = 0;
  if (count == 0)
    return 0;
  v = calloc(count, sizeof(*v));
  if (v == NULL)
    return cli_oom(cli);
  for (size_t i = 0; i < count; i++) {
    int rc = id_value(cli, name, cli_arg_nth(a, name, i), &v[i]);
    if (rc != 0) {
      free(v);
      return rc;
    }
  }
  *out = v;
  *n = count;
  return 0;
}

int cli_arg_enumv(cli_t *cli, const cli_args_t *a, const char *name,
                  const ProtobufCEnumDescriptor *ed, int **out, size_t *n) {
  size_t count = cli_arg_count(a, name);
  int *v;

  *out = NULL;
  *n = 0;
  if (count == 0)
    return 0;
  v = calloc(count, sizeof(*v));
  if (v == NULL)
    return cli_oom(cli);
  for (size_t i = 0; i < count; i++) {
    int rc = enum_value(cli, name, cli_arg_nth(a, name, i), ed, &v[i]);
    if (rc != 0) {
      free(v);
      return rc;
    }
  }
  *out = v;
  *n = count;
  return 0;
}

/* ---- request ids and files ---------------------------------------------------------------- */

/* The form the server takes (validate_is_uuid()): 8-4-4-4-12 hexadecimal digits, any case. */
static int is_uuid(const char *s) {
  for (size_t i = 0; i < CLI_REQUEST_ID_LEN - 1; i++) {
    int hyphen = i == 8 || i == 13 || i == 18 || i == 23;
    char c = s[i];
    if (hyphen ? c != '-'
               : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
      return 0; /* also stops at the NUL of a short string */
  }
  return s[CLI_REQUEST_ID_LEN - 1] == '\0';
}

int cli_request_id(cli_t *cli, const cli_args_t *a, char buf[CLI_REQUEST_ID_LEN]) {
  const char *given = cli_arg(a, "request-id");
  unsigned char r[16];
  size_t got = 0;

  if (given != NULL) {
    if (!is_uuid(given))
      return cli_usage_error(
          cli, "--request-id: '%s' is not a UUID (8-4-4-4-12 hexadecimal digits)", given);
    snprintf(buf, CLI_REQUEST_ID_LEN, "%s", given);
    return 0;
  }
  while (got < sizeof(r)) {
    ssize_t n = getrandom(r + got, sizeof(r) - got, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      fprintf(stderr, "cluectl: cannot make a request id: %s\n", strerror(errno));
      return CLI_FAILED;
    }
    got += (size_t)n;
  }
  r[6] = (unsigned char)((r[6] & 0x0F) | 0x40); /* version 4 */
  r[8] = (unsigned char)((r[8] & 0x3F) | 0x80); /* RFC 4122 variant */
  snprintf(buf, CLI_REQUEST_ID_LEN,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2],
           r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
  return 0;
}

int cli_derived_request_id(const char *base, size_t pos, char out[CLI_REQUEST_ID_LEN]) {
  unsigned char in[16 + 24], md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  size_t n = 0;
  int len;

  if (!is_uuid(base))
    return -1;
  for (size_t i = 0; base[i] != '\0'; i++) {
    int hi, lo;
    if (base[i] == '-')
      continue;
    hi = grpc_hex_digit(base[i]);
    lo = grpc_hex_digit(base[++i]);
    in[n++] = (unsigned char)(hi << 4 | lo);
  }
  len = snprintf((char *)in + 16, sizeof(in) - 16, "%zu", pos);
  if (EVP_Digest(in, 16 + (size_t)len, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen < 16)
    return -1;
  md[6] = (unsigned char)((md[6] & 0x0F) | 0x50); /* version 5: name-based, SHA-1 */
  md[8] = (unsigned char)((md[8] & 0x3F) | 0x80); /* RFC 4122 variant */
  snprintf(out, CLI_REQUEST_ID_LEN,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", md[0], md[1],
           md[2], md[3], md[4], md[5], md[6], md[7], md[8], md[9], md[10], md[11], md[12], md[13],
           md[14], md[15]);
  return 0;
}

#define MAX_FILE (64u * 1024 * 1024)

int cli_read_file(cli_t *cli, const char *path, char **out, size_t *len) {
  int is_stdin = strcmp(path, "-") == 0;
  FILE *f = is_stdin ? stdin : fopen(path, "rb");
  const char *shown = is_stdin ? "standard input" : path;
  char *buf = NULL;
  size_t used = 0, cap = 0;

  if (f == NULL)
    return cli_usage_error(cli, "cannot read %s: %s", shown, strerror(errno));
  for (;;) {
    size_t n;
    if (used + 1 >= cap) {
      char *p;
      cap = cap ? cap * 2 : 8192;
      if (cap > MAX_FILE + 1) {
        free(buf);
        if (!is_stdin)
          fclose(f);
        return cli_usage_error(cli, "%s is larger than %u MiB", shown, MAX_FILE >> 20);
      }
      p = realloc(buf, cap);
      if (p == NULL) {
        free(buf);
        if (!is_stdin)
          fclose(f);
        return cli_oom(cli);
      }
      buf = p;
    }
    n = fread(buf + used, 1, cap - used - 1, f);
    used += n;
    if (n == 0)
      break;
  }
  if (ferror(f)) {
    int e = errno;
    free(buf);
    if (!is_stdin)
      fclose(f);
    return cli_usage_error(cli, "cannot read %s: %s", shown, strerror(e));
  }
  if (!is_stdin)
    fclose(f);
  buf[used] = '\0';
  *out = buf;
  *len = used;
  return 0;
}

/* ---- calls that carry a request id, and lists in pages ------------------------------------ */

int cli_outcome_unknown(int code, const char *message) {
  /* A refusal that wrote nothing says so (a statement timed out and rolled back, a read-only
   * database, --require-sync-replica): its outcome is known although its code is UNAVAILABLE. */
  if (message != NULL && strstr(message, "nothing was changed") != NULL)
    return 0;
  return code == CLUE_STATUS_DEADLINE_EXCEEDED || code == CLUE_STATUS_UNAVAILABLE ||
         code == CLUE_STATUS_CANCELLED || code == CLUE_STATUS_UNKNOWN ||
         code == CLUE_STATUS_INTERNAL;
}

int cli_call_rid(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
                 const ProtobufCMessage *req, const char *rid, ProtobufCMessage **resp) {
  clue_status_t st = CLUE_STATUS_INIT;
  int rv = clue_call_method(cli->conn, service, method, req, resp, &st);

  rv = reported(cli, rv, &st);
  if (rv != 0 && cli->last_unknown)
    fprintf(stderr,
            "The change may or may not have been made. Retrying with --request-id %s\n"
            "does it at most once.\n",
            rid);
  return rv;
}

int cli_stream_start(cli_t *cli, const char *path, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp_desc, clue_stream_t **out) {
  clue_status_t st = CLUE_STATUS_INIT;
  int rv;

  /* A watch runs until interrupted: no deadline unless --timeout gives one. The call takes
   * its deadline when it starts; the unary calls after it keep theirs. */
  clue_conn_set_timeout(cli->conn, cli->stream_timeout_ms);
  rv = clue_stream_start(cli->conn, path, req, resp_desc, out, &st);
  clue_conn_set_timeout(cli->conn, cli->timeout_ms);
  return reported(cli, rv, &st);
}

uint64_t cli_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int cli_watch_again(cli_t *cli, uint64_t started_ms, uint64_t budget, uint64_t stream_ms) {
  uint64_t spent;

  while (cli_now_ms() - stream_ms < 1000 && (budget == 0 || cli_now_ms() - started_ms < budget)) {
    struct timespec ts = {0, 50 * 1000 * 1000};
    if (*cli->interrupted)
      return 0;
    nanosleep(&ts, NULL);
  }
  spent = cli_now_ms() - started_ms;
  if (budget != 0 && spent >= budget)
    return 0;
  if (budget != 0)
    cli->stream_timeout_ms = budget - spent; /* the next stream's deadline */
  return 1;
}

int cli_watch_end(cli_t *cli, int rv, const clue_status_t *st, int answered, uint64_t started_ms,
                  uint64_t budget) {
  /* A watch ends normally when the user interrupts it, or when the time asked for is up on
   * a watch the server answered. A DEADLINE_EXCEEDED before that time is the server's (or a
   * proxy's) own, a failure; and one on a stream the server never answered (a hung process,
   * a listener that never speaks) says nothing about it but that it is not serving. */
  if (rv < 0)
    return cli_rpc_error(cli, rv, st);
  if (st->code == CLUE_STATUS_CANCELLED && *cli->interrupted)
    return CLI_OK;
  if (st->code == CLUE_STATUS_DEADLINE_EXCEEDED && budget != 0 &&
      cli_now_ms() - started_ms >= budget) {
    if (answered)
      return CLI_OK;
    cli_rpc_error(cli, st->code, st);
    fprintf(stderr, "cluectl: %s did not answer the watch within --timeout\n", cli->server);
    return CLI_FAILED;
  }
  if (st->code != CLUE_STATUS_OK)
    return cli_rpc_error(cli, st->code, st);
  return CLI_OK;
}

int cli_call_rid_show(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
                      const ProtobufCMessage *req, const char *rid, cli_show_fn show) {
  ProtobufCMessage *resp = NULL;
  int rc = cli_call_rid(cli, service, method, req, rid, &resp);

  if (rc != 0)
    return rc;
  rc = cli->json ? cli_print_json_with(cli, resp, "request_id", rid, 0) : show(cli, resp);
  protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

static char **str_member(ProtobufCMessage *m, const char *field) {
  const ProtobufCFieldDescriptor *f =
      protobuf_c_message_descriptor_get_field_by_name(m->descriptor, field);

  if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
    return NULL;
  return (char **)((char *)m + f->offset);
}

/* After a page of a list, tell the user (stderr) how to get the next page, if there is one. */
static void more_hint(cli_t *cli, const ProtobufCMessage *resp) {
  char **next = str_member((ProtobufCMessage *)resp, "next_page_token");

  if (cli->json || next == NULL || *next == NULL || (*next)[0] == '\0')
    return;
  fputs("More results: add --page-token ", stderr);
  cli_put_text(stderr, *next, 0);
  fputs(" (or --all for every page).\n", stderr);
}

void cli_fresh_hint(cli_t *cli, const ProtobufCMessage *resp) {
  const ProtobufCFieldDescriptor *f =
      protobuf_c_message_descriptor_get_field_by_name(resp->descriptor, "freshness");
  const Clue__V1__ReadFreshness *fr;

  if (cli->json || f == NULL || f->descriptor != &clue__v1__read_freshness__descriptor)
    return;
  fr = *(const Clue__V1__ReadFreshness *const *)((const char *)resp + f->offset);
  if (fr == NULL || !fr->from_replica)
    return;
  fprintf(stderr, "From a replica, at most %lld ms behind the primary (replayed to ",
          (long long)fr->max_staleness_ms);
  cli_put_text(stderr, fr->read_lsn, 0);
  fputs("); --consistent reads the primary.\n", stderr);
}

int cli_show(cli_t *cli, ProtobufCMessage *resp, cli_show_fn show) {
  int rc = cli->json ? cli_print_json(cli, resp, 0) : show(cli, resp);

  if (rc == CLI_OK) {
    more_hint(cli, resp);
    cli_fresh_hint(cli, resp);
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

int cli_call_show(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
                  const ProtobufCMessage *req, cli_show_fn show) {
  ProtobufCMessage *resp = NULL;
  int rc = cli_call(cli, service, method, req, &resp);

  return rc != 0 ? rc : cli_show(cli, resp, show);
}

/* ---- --all: the page tokens seen, and the bounds of what is collected ---------------------- */

/* Every page token the server gave during one --all listing, each once: a token seen before
 * means the pages go round in a circle. Open addressing over FNV-1a hashes; the set owns the
 * tokens. */
typedef struct token_set {
  char **slot;
  size_t cap, n;
} token_set_t;

static uint64_t token_hash(const char *s) {
  uint64_t h = 14695981039346656037ull;

  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static char **token_slot(char **slot, size_t cap, const char *tok) {
  size_t i = (size_t)token_hash(tok) & (cap - 1);

  while (slot[i] != NULL && strcmp(slot[i], tok) != 0)
    i = (i + 1) & (cap - 1);
  return &slot[i];
}

/* Add tok (copied): 0, 1 when it was there already, -1 on out of memory. On 0 *kept is the
 * set's copy. */
static int token_set_add(token_set_t *set, const char *tok, const char **kept) {
  char **at;

  if ((set->n + 1) * 2 > set->cap) {
    size_t cap = set->cap ? set->cap * 2 : 64;
    char **slot = calloc(cap, sizeof(*slot));
    if (slot == NULL)
      return -1;
    for (size_t i = 0; i < set->cap; i++)
      if (set->slot[i] != NULL)
        *token_slot(slot, cap, set->slot[i]) = set->slot[i];
    free(set->slot);
    set->slot = slot;
    set->cap = cap;
  }
  at = token_slot(set->slot, set->cap, tok);
  if (*at != NULL)
    return 1;
  if ((*at = strdup(tok)) == NULL)
    return -1;
  set->n++;
  *kept = *at;
  return 0;
}

static void token_set_free(token_set_t *set) {
  for (size_t i = 0; i < set->cap; i++)
    free(set->slot[i]);
  free(set->slot);
}

/* Whether a page's rows (field lf of page) are no more than any page clued sends; if more,
 * reported. */
static int page_rows_ok(const ProtobufCMessage *page, const ProtobufCFieldDescriptor *lf) {
  size_t n = *(const size_t *)((const char *)page + lf->quantifier_offset);

  if (n <= CLI_PAGE_MAX_ROWS)
    return 1;
  fprintf(stderr,
          "cluectl: the server's page holds %zu rows, more than any page it may send "
          "(at most %d)\n",
          n, CLI_PAGE_MAX_ROWS);
  return 0;
}

/* cli_call_pages() for a list whose request names its token token_field, and its response
 * the next one next_field; page_option: the command has --page-token and --all. */
static int call_pages(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
                      ProtobufCMessage *req, const char *list, const char *token_field,
                      const char *next_field, int page_option, int all, ProtobufCMessage **resp) {
  const ProtobufCMethodDescriptor *md =
      protobuf_c_service_descriptor_get_method_by_name(service, method);
  const ProtobufCFieldDescriptor *lf;
  char **tok = str_member(req, token_field);
  char *saved;
  token_set_t seen = {NULL, 0, 0};
  ProtobufCMessage *page = NULL, **rows = NULL;
  size_t nrows = 0, npages = 0, bytes = 0;
  int rc = 0;

  lf = md ? protobuf_c_message_descriptor_get_field_by_name(md->output, list) : NULL;
  if (tok == NULL || lf == NULL || lf->label != PROTOBUF_C_LABEL_REPEATED ||
      lf->type != PROTOBUF_C_TYPE_MESSAGE ||
      protobuf_c_message_descriptor_get_field_by_name(md->output, next_field) == NULL) {
    /* a mistake in a command, not the user's */
    fprintf(stderr, "cluectl: %s is not a paged list of '%s'\n", method, list);
    return CLI_FAILED;
  }
  if (!all) {
    if ((rc = cli_call(cli, service, method, req, resp)) == 0 && !page_rows_ok(*resp, lf)) {
      protobuf_c_message_free_unpacked(*resp, NULL);
      *resp = NULL;
      rc = CLI_FAILED;
    }
    return rc;
  }
  saved = *tok;
  for (;;) {
    const char *kept = NULL;
    char **next;
    size_t *n;
    ProtobufCMessage ***arr, **grown;

    rc = cli_call(cli, service, method, req, &page);
    if (rc != 0)
      break;
    if (!page_rows_ok(page, lf)) {
      rc = CLI_FAILED;
      break;
    }
    n = (size_t *)((char *)page + lf->quantifier_offset);
    arr = (ProtobufCMessage ***)((char *)page + lf->offset);
    /* Everything kept is held until the last page: bound it, so that a server whose pages
     * never end cannot make this process grow without limit. */
    npages++;
    bytes += protobuf_c_message_get_packed_size(page);
    if (npages > CLI_ALL_MAX_PAGES || nrows + *n > CLI_ALL_MAX_ROWS || bytes > CLI_ALL_MAX_BYTES) {
      fprintf(stderr,
              "cluectl: %s collects at most %d rows, %d pages or %d MiB, and the listing "
              "goes on; narrow it%s\n",
              page_option ? "--all" : "a listing", CLI_ALL_MAX_ROWS, CLI_ALL_MAX_PAGES,
              CLI_ALL_MAX_BYTES >> 20,
              page_option ? ", or list it page by page with --page-token" : "");
      rc = CLI_FAILED;
      break;
    }
    grown = *n ? realloc(rows, (nrows + *n) * sizeof(*rows)) : rows;
    if (*n && grown == NULL) {
      rc = cli_oom(cli);
      break;
    }
    rows = grown;
    /* The rows move into the merged list; the page keeps only its (then empty) array. */
    if (*n > 0)
      memcpy(rows + nrows, *arr, *n * sizeof(*rows));
    nrows += *n;
    *n = 0;
    next = str_member(page, next_field);
    if (next == NULL || *next == NULL || (*next)[0] == '\0')
      break;
    /* A token given before leads to pages already listed: the server goes round in a
     * circle (A, B, A, ...), and following it would list the same rows for ever. */
    rc = token_set_add(&seen, *next, &kept);
    if (rc != 0) {
      if (rc > 0)
        fputs("cluectl: the server gave a page token it had given before; stopping\n", stderr);
      rc = rc > 0 ? CLI_FAILED : cli_oom(cli);
      break;
    }
    *tok = (char *)kept;
    protobuf_c_message_free_unpacked(page, NULL);
    page = NULL;
  }
  *tok = saved;
  token_set_free(&seen);
  if (rc != 0) {
    for (size_t i = 0; i < nrows; i++)
      protobuf_c_message_free_unpacked(rows[i], NULL);
    free(rows);
    if (page != NULL)
      protobuf_c_message_free_unpacked(page, NULL);
    return rc;
  }
  /* The last page carries the merged rows. */
  free(*(ProtobufCMessage ***)((char *)page + lf->offset));
  *(ProtobufCMessage ***)((char *)page + lf->offset) = rows;
  *(size_t *)((char *)page + lf->quantifier_offset) = nrows;
  *resp = page;
  return 0;
}

int cli_call_pages(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
                   ProtobufCMessage *req, const char *list, int all, ProtobufCMessage **resp) {
  return call_pages(cli, service, method, req, list, "page_token", "next_page_token", 1, all, resp);
}

int cli_call_every_page(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
                        ProtobufCMessage *req, const char *list, ProtobufCMessage **resp) {
  return call_pages(cli, service, method, req, list, "page_token", "next_page_token", 0, 1, resp);
}

int cli_call_all_pages(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
                       ProtobufCMessage *req, const char *list, const char *token_field,
                       const char *next_field, ProtobufCMessage **resp) {
  /* --page-token continues the lists whose request says page_token; others have no option. */
  return call_pages(cli, service, method, req, list, token_field, next_field,
                    strcmp(token_field, "page_token") == 0, 1, resp);
}
