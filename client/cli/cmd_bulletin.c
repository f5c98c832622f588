/* cluectl stats bulletin: the monthly bulletin (通报, StatsService.GetBulletin) as a table,
 * CSV, JSON or Markdown ready to paste into a circular. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "clue/v1/stats.pb-c.h"
#include "table.h"

/* The columns, in order: header, CSV name. The six disposal kinds sit between disposed and
 * filed, in the answer's order. */
static const char *const kind_heads[6] = {"初核", "谈话函询", "予以了结", "暂存待查", "核查了结", "审查了结"};

static int64_t kind_count(const Clue__V1__BulletinUnit *u, size_t i) {
  return i < u->n_disposed_by_kind ? u->disposed_by_kind[i]->count : 0;
}

static const char *kind_name(const Clue__V1__GetBulletinResponse *r, size_t i) {
  static const char *const fallback[6] = {"PRELIMINARY_CHECK", "TALK_OR_LETTER_INQUIRY",
                                          "NO_FURTHER_ACTION", "SHELVED", "FINDING", "SANCTION"};
  if (r->n_units > 0 && i < r->units[0]->n_disposed_by_kind)
    return r->units[0]->disposed_by_kind[i]->disposal;
  return fallback[i];
}

static int print_csv(const Clue__V1__GetBulletinResponse *r) {
  static const char *const head[] = {"month", "unit_id", "unit_code", "unit_name", "unit_kind",
                                     "received", "disposed"};
  static const char *const tail[] = {"filed", "transferred_to_judicial", "overdue_now",
                                     "rectification_found", "rectification_verified",
                                     "rectification_overdue", "zero_disposal",
                                     "zero_disposal_months"};
  char buf[64];

  for (size_t i = 0; i < 7; i++)
    table_csv_field(stdout, head[i], i == 0);
  for (size_t i = 0; i < 6; i++) {
    snprintf(buf, sizeof(buf), "disposed_%s", kind_name(r, i));
    table_csv_field(stdout, buf, 0);
  }
  for (size_t i = 0; i < 8; i++)
    table_csv_field(stdout, tail[i], 0);
  fputs("\r\n", stdout);
  for (size_t k = 0; k < r->n_units; k++) {
    const Clue__V1__BulletinUnit *u = r->units[k];
    const char *kind;
    table_csv_field(stdout, r->month, 1);
    printf(",%lld", (long long)u->unit_id);
    table_csv_field(stdout, u->unit_code, 0);
    table_csv_field(stdout, u->unit_name, 0);
    kind = cli_enum_short(&clue__v1__unit_kind__descriptor, u->unit_kind);
    table_csv_field(stdout, kind != NULL ? kind : "", 0); /* a kind this cluectl does not know */
    printf(",%lld,%lld", (long long)u->received, (long long)u->disposed);
    for (size_t i = 0; i < 6; i++)
      printf(",%lld", (long long)kind_count(u, i));
    printf(",%lld,%lld,%lld,%lld,%lld,%lld,%s,%d\r\n", (long long)u->filed,
           (long long)u->transferred_to_judicial, (long long)u->overdue_now,
           (long long)u->rectification_found, (long long)u->rectification_verified,
           (long long)u->rectification_overdue, u->zero_disposal ? "yes" : "no",
           (int)u->zero_disposal_months);
  }
  return fflush(stdout) == 0 ? CLI_OK : CLI_FAILED;
}

/* Text in Markdown, shown as written: '|' and line breaks would end the cell, HTML would be
 * rendered (<img onerror=...>), and punctuation would start markup ([x](javascript:...),
 * emphasis, code), so HTML's characters become entities and Markdown's are escaped. The text
 * is the server's: it is first made what cli_put_text() writes (no control characters, line
 * breaks included, reach the terminal). Returns 0, or -1 on out of memory. */
static int md_text(const char *text) {
  char *clean = text_safe(text, 0);

  if (clean == NULL)
    return -1;
  for (const char *s = clean; *s; s++) {
    if (*s == '&')
      fputs("&amp;", stdout);
    else if (*s == '<')
      fputs("&lt;", stdout);
    else if (*s == '>')
      fputs("&gt;", stdout);
    else if (strchr("\\`*_[]()#!|~", *s) != NULL)
      printf("\\%c", *s);
    else
      fputc(*s, stdout);
  }
  free(clean);
  return 0;
}

static int print_markdown(const Clue__V1__GetBulletinResponse *r) {
  size_t zeros = 0;
  int bad = 0;

  fputs("## ", stdout);
  bad |= md_text(r->month);
  printf(" 线索处置情况通报\n\n");
  static const char *const tail_heads[] = {"立案",     "移送司法", "超期未办", "发现问题",
                                           "整改到位", "整改超期", "零处置"};
  const size_t tail = sizeof(tail_heads) / sizeof(tail_heads[0]);

  /* The delimiter row has as many cells as the header, or it is not a table (GFM). */
  printf("| 单位 | 受理线索 | 处置 |");
  for (size_t i = 0; i < 6; i++)
    printf(" %s |", kind_heads[i]);
  for (size_t i = 0; i < tail; i++)
    printf(" %s |", tail_heads[i]);
  printf("\n|---|");
  for (size_t i = 0; i < 2 + 6 + tail; i++)
    printf("---:|");
  putchar('\n');
  for (size_t k = 0; k < r->n_units; k++) {
    const Clue__V1__BulletinUnit *u = r->units[k];
    fputs("| ", stdout);
    bad |= md_text(u->unit_name[0] ? u->unit_name : u->unit_code);
    printf(" (");
    bad |= md_text(u->unit_code);
    printf(") | %lld | %lld |", (long long)u->received, (long long)u->disposed);
    for (size_t i = 0; i < 6; i++)
      printf(" %lld |", (long long)kind_count(u, i));
    printf(" %lld | %lld | %lld | %lld | %lld | %lld | %s |\n", (long long)u->filed,
           (long long)u->transferred_to_judicial, (long long)u->overdue_now,
           (long long)u->rectification_found, (long long)u->rectification_verified,
           (long long)u->rectification_overdue, u->zero_disposal ? "**是**" : "否");
    zeros += u->zero_disposal;
  }
  if (zeros > 0) {
    printf("\n**零通报单位**（本月未处置线索）：\n\n");
    for (size_t k = 0; k < r->n_units; k++) {
      const Clue__V1__BulletinUnit *u = r->units[k];
      if (!u->zero_disposal)
        continue;
      fputs("- ", stdout);
      bad |= md_text(u->unit_name[0] ? u->unit_name : u->unit_code);
      printf("，连续 %d 个月\n", (int)u->zero_disposal_months);
    }
  }
  if (bad)
    fputs("cluectl: out of memory\n", stderr);
  return fflush(stdout) == 0 && !bad ? CLI_OK : CLI_FAILED;
}

static int print_table(cli_t *cli, const Clue__V1__GetBulletinResponse *r) {
  static const char *const heads[] = {
      "UNIT",     "KIND",         "RECEIVED", "DISPOSED", "CHECK",   "TALK",    "NO-ACTION",
      "SHELVED",  "FINDING",      "SANCTION", "FILED",    "TRANSF",  "OVERDUE", "RECT-FOUND",
      "RECT-OK",  "RECT-OVERDUE", "ZERO"};
  table_t *t = table_new(sizeof(heads) / sizeof(heads[0]), heads);
  int rc;

  if (t == NULL)
    return cli_oom(cli);
  fputs("Bulletin ", stdout);
  cli_put_text(stdout, r->month, 0);
  fputs(" (UTC+08:00)\n", stdout);
  for (size_t k = 0; k < r->n_units; k++) {
    const Clue__V1__BulletinUnit *u = r->units[k];
    table_add(t, table_fmt("%s", u->unit_code));
    table_add(t, table_fmt("%s", cli_enum_text(&clue__v1__unit_kind__descriptor, u->unit_kind)));
    table_add(t, table_fmt("%lld", (long long)u->received));
    table_add(t, table_fmt("%lld", (long long)u->disposed));
    for (size_t i = 0; i < 6; i++)
      table_add(t, table_fmt("%lld", (long long)kind_count(u, i)));
    table_add(t, table_fmt("%lld", (long long)u->filed));
    table_add(t, table_fmt("%lld", (long long)u->transferred_to_judicial));
    table_add(t, table_fmt("%lld", (long long)u->overdue_now));
    table_add(t, table_fmt("%lld", (long long)u->rectification_found));
    table_add(t, table_fmt("%lld", (long long)u->rectification_verified));
    table_add(t, table_fmt("%lld", (long long)u->rectification_overdue));
    if (u->zero_disposal)
      table_add(t, table_fmt("yes (%d mo)", (int)u->zero_disposal_months));
    else
      table_add(t, table_fmt("no"));
  }
  rc = table_print(t, stdout) == 0 ? CLI_OK : cli_oom(cli);
  table_free(t);
  if (rc == CLI_OK && r->n_units == 0)
    puts("(no groups or regions in scope)");
  return rc;
}

/* The months the server takes (bulletin_month_parse()); whether one has begun is the server's
 * to say, by its clock. */
#define BULLETIN_YEAR_MIN 2000

static int month_ok(const char *s) {
  int y = 0, m = 0;

  if (strlen(s) != 7 || s[4] != '-')
    return 0;
  for (int i = 0; i < 7; i++) {
    if (i == 4)
      continue;
    if (s[i] < '0' || s[i] > '9')
      return 0;
    if (i < 4)
      y = y * 10 + (s[i] - '0');
    else
      m = m * 10 + (s[i] - '0');
  }
  return y >= BULLETIN_YEAR_MIN && m >= 1 && m <= 12;
}

int cli_run_bulletin(cli_t *cli, const cli_args_t *args) {
  Clue__V1__GetBulletinRequest req = CLUE__V1__GET_BULLETIN_REQUEST__INIT;
  Clue__V1__GetBulletinResponse *resp = NULL;
  Clue__V1__ReadConsistency read;
  int csv = cli_flag(args, "csv"), md = cli_flag(args, "markdown"), rc;

  if (csv + md + (cli->json != 0) > 1)
    return cli_usage_error(cli, "--csv, --markdown and --json exclude each other");
  cli_arg_str(args, "month", &req.month);
  if (!month_ok(req.month))
    return cli_usage_error(cli, "--month: '%s' is not a month YYYY-MM (from %d-01)", req.month,
                           BULLETIN_YEAR_MIN);
  if ((rc = cli_read_args(cli, args, &read, &req.read)) != 0 ||
      (rc = cli_arg_idv(cli, args, "unit", &req.unit_ids, &req.n_unit_ids)) != 0)
    return rc;
  rc = cli_call(cli, &clue__v1__stats_service__descriptor, "GetBulletin", &req.base,
                (ProtobufCMessage **)&resp);
  free(req.unit_ids);
  if (rc != 0)
    return rc;
  cli_fresh_hint(cli, &resp->base);
  if (cli->json)
    rc = cli_print_json(cli, &resp->base, 0);
  else if (csv)
    rc = print_csv(resp);
  else if (md)
    rc = print_markdown(resp);
  else
    rc = print_table(cli, resp);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}
