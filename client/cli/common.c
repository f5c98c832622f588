/* Option access, value checks and error reporting shared by all commands. */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

const char *cli_arg(const cli_args_t *a, const char *name) {
  const char *v = NULL;

  for (size_t i = 0; i < a->n; i++)
    if (strcmp(a->v[i].opt->name, name) == 0)
      v = a->v[i].value;
  return v;
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

int cli_arg_id(cli_t *cli, const cli_args_t *a, const char *name, int64_t *out) {
  const char *s = cli_arg(a, name);
  char *end;
  long long v;

  if (s == NULL)
    return 0;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v <= 0)
    return cli_usage_error(cli, "--%s: '%s' is not a valid id (a positive integer)", name, s);
  *out = v;
  return 0;
}

/* Whether s names value ev of an enum whose names share a prefix of plen bytes. */
static int enum_matches(const char *s, const char *name, size_t plen) {
  return strcasecmp(s, name) == 0 || strcasecmp(s, name + plen) == 0;
}

const char *cli_enum_choices(const ProtobufCEnumDescriptor *ed, char *buf, size_t len) {
  size_t used = 0;

  buf[0] = '\0';
  for (unsigned i = 0; i < ed->n_values; i++) {
    const char *name = cli_enum_short(ed, ed->values[i].value);
    int n;
    if (ed->values[i].value == 0 && strstr(name, "UNSPECIFIED") != NULL)
      continue;
    n = snprintf(buf + used, len - used, "%s%s", used > 0 ? "|" : "", name);
    if (n < 0 || (size_t)n >= len - used)
      break;
    used += (size_t)n;
  }
  return buf;
}

int cli_arg_enum(cli_t *cli, const cli_args_t *a, const char *name,
                 const ProtobufCEnumDescriptor *ed, int *out) {
  const char *s = cli_arg(a, name);
  char choices[256];

  if (s == NULL)
    return 0;
  for (unsigned i = 0; i < ed->n_values; i++) {
    const ProtobufCEnumValue *ev = &ed->values[i];
    const char *shortname = cli_enum_short(ed, ev->value);
    size_t plen = (size_t)(shortname - ev->name);
    if (ev->value == 0 && strstr(shortname, "UNSPECIFIED") != NULL)
      continue;
    if (enum_matches(s, ev->name, plen)) {
      *out = ev->value;
      return 0;
    }
  }
  return cli_usage_error(cli, "--%s: '%s' is not one of %s", name, s,
                         cli_enum_choices(ed, choices, sizeof(choices)));
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

int cli_rpc_error(cli_t *cli, int rv, const clue_status_t *st) {
  (void)cli;
  if (rv < 0 && (st == NULL || st->message == NULL)) {
    fprintf(stderr, "%s: %s\n", clue_status_name(CLUE_STATUS_INTERNAL), clue_strerror(rv));
    return CLI_FAILED;
  }
  if (st->message != NULL && st->message[0] != '\0')
    fprintf(stderr, "%s: %s\n", clue_status_name(st->code), st->message);
  else
    fprintf(stderr, "%s\n", clue_status_name(st->code));
  return CLI_FAILED;
}

int cli_oom(cli_t *cli) {
  (void)cli;
  fputs("cluectl: out of memory\n", stderr);
  return CLI_FAILED;
}

int cli_call(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
             const ProtobufCMessage *req, ProtobufCMessage **resp) {
  clue_status_t st = CLUE_STATUS_INIT;
  int rv = clue_call_method(cli->conn, service, method, req, resp, &st);

  if (rv != 0)
    rv = cli_rpc_error(cli, rv, &st);
  clue_status_clear(&st);
  return rv;
}
