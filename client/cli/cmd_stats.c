/* cluectl stats: figures per unit and joint case for a period (clue.v1.StatsService), as a
 * table, JSON or CSV for spreadsheets. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "clue/v1/stats.pb-c.h"
#include "table.h"

static const cli_opt_t stats_opts[] = {
    {"from", "DATE", 0,
     "first day of the period (YYYY-MM-DD or RFC 3339; default: 1 January of this year, or of "
     "--to's year if earlier)"},
    {"to", "DATE", 0,
     "last day of the period, a date taking in that whole day (default: 31 December of this year, "
     "or of --from's year if later)"},
    {"unit", "ID", CLI_OPT_REPEAT, "only this unit"},
    {"csv", NULL, 0, "print CSV (RFC 4180, with a header row) instead of a table"},
    {"cases", NULL, 0, "with --csv: the joint-case figures instead of the unit figures"},
    CLI_OPT_CONSISTENT,
    CLI_OPT_MIN_READ_LSN,
    {NULL, NULL, 0, NULL},
};

/* ---- CSV ------------------------------------------------------------------------------------ */

static void csv_i64(FILE *o, int64_t v) {
  fprintf(o, ",%lld", (long long)v);
}

/* A median, or an empty cell where there is none (0: no clue left the stage; the table's "-"). */
static void csv_median(FILE *o, double d) {
  if (d > 0)
    fprintf(o, ",%g", d);
  else
    fputc(',', o);
}

static void csv_end(FILE *o) {
  fputs("\r\n", o);
}

/* The most disposal kinds a CSV has columns for: the API names six. Each is a column of every
 * row, so a server that named a new one per unit would grow the output with the square of
 * its answer. */
#define DISPOSAL_KINDS_MAX 64

/* The disposal kinds named in any unit's figures, in order of first appearance: 0, -1 out of
 * memory, -2 more than DISPOSAL_KINDS_MAX. */
static int disposal_kinds(const Clue__V1__GetStatisticsResponse *r, const char ***out, size_t *n) {
  const char **kinds = NULL;
  size_t count = 0;

  for (size_t u = 0; u < r->n_units; u++) {
    for (size_t d = 0; d < r->units[u]->n_closed_by_disposal; d++) {
      const char *k = r->units[u]->closed_by_disposal[d]->disposal;
      const char **grown;
      int known = 0;
      for (size_t i = 0; i < count && !known; i++)
        known = strcmp(kinds[i], k) == 0;
      if (known)
        continue;
      if (count == DISPOSAL_KINDS_MAX) {
        free(kinds);
        return -2;
      }
      grown = realloc(kinds, (count + 1) * sizeof(*kinds));
      if (grown == NULL) {
        free(kinds);
        return -1;
      }
      kinds = grown;
      kinds[count++] = k;
    }
  }
  *out = kinds;
  *n = count;
  return 0;
}

static int64_t disposal_count(const Clue__V1__UnitStats *u, const char *kind) {
  for (size_t d = 0; d < u->n_closed_by_disposal; d++)
    if (strcmp(u->closed_by_disposal[d]->disposal, kind) == 0)
      return u->closed_by_disposal[d]->count;
  return 0;
}

static int is_zero_disposal(const Clue__V1__GetStatisticsResponse *r, int64_t unit_id) {
  for (size_t i = 0; i < r->n_zero_disposal_units; i++)
    if (r->zero_disposal_units[i]->unit_id == unit_id)
      return 1;
  return 0;
}

static int has_unit(const Clue__V1__GetStatisticsResponse *r, int64_t unit_id) {
  for (size_t i = 0; i < r->n_units; i++)
    if (r->units[i]->unit_id == unit_id)
      return 1;
  return 0;
}

static int print_units_csv(cli_t *cli, const Clue__V1__GetStatisticsResponse *r) {
  static const char *const cols[] = {"unit_id",
                                     "unit_code",
                                     "unit_name",
                                     "received",
                                     "preliminary_checks_started",
                                     "filed",
                                     "closed",
                                     "transferred_to_judicial",
                                     "overdue_now",
                                     "median_days_accepted",
                                     "median_days_preliminary_check",
                                     "median_days_filed",
                                     "zero_disposal",
                                     NULL};
  const char **kinds = NULL;
  size_t nkinds = 0;
  FILE *o = stdout;
  int rc = disposal_kinds(r, &kinds, &nkinds);

  if (rc == -2) {
    fprintf(stderr,
            "cluectl %s: the server's figures name more than %d disposal kinds; not shown\n",
            cli->cmd, DISPOSAL_KINDS_MAX);
    return CLI_FAILED;
  }
  if (rc != 0)
    return cli_oom(cli);
  for (size_t i = 0; cols[i] != NULL; i++)
    table_csv_field(o, cols[i], i == 0);
  for (size_t k = 0; k < nkinds; k++) {
    char *name = table_fmt("closed_%s", kinds[k]);
    if (name == NULL) {
      free(kinds);
      return cli_oom(cli);
    }
    table_csv_field(o, name, 0);
    free(name);
  }
  csv_end(o);
  for (size_t i = 0; i < r->n_units; i++) {
    const Clue__V1__UnitStats *u = r->units[i];
    fprintf(o, "%lld", (long long)u->unit_id);
    table_csv_field(o, u->unit_code, 0);
    table_csv_field(o, u->unit_name, 0);
    csv_i64(o, u->received);
    csv_i64(o, u->preliminary_checks_started);
    csv_i64(o, u->filed);
    csv_i64(o, u->closed);
    csv_i64(o, u->transferred_to_judicial);
    csv_i64(o, u->overdue_now);
    csv_median(o, u->median_days_accepted);
    csv_median(o, u->median_days_preliminary_check);
    csv_median(o, u->median_days_filed);
    fputs(is_zero_disposal(r, u->unit_id) ? ",yes" : ",no", o);
    for (size_t k = 0; k < nkinds; k++)
      csv_i64(o, disposal_count(u, kinds[k]));
    csv_end(o);
  }
  /* A zero-disposal unit without figures of its own still gets its row. */
  for (size_t i = 0; i < r->n_zero_disposal_units; i++) {
    const Clue__V1__ZeroDisposalUnit *z = r->zero_disposal_units[i];
    if (has_unit(r, z->unit_id))
      continue;
    fprintf(o, "%lld", (long long)z->unit_id);
    table_csv_field(o, z->unit_code, 0);
    table_csv_field(o, z->unit_name, 0);
    fputs(",,,,,,,,,,yes", o);
    for (size_t k = 0; k < nkinds; k++)
      fputc(',', o);
    csv_end(o);
  }
  free(kinds);
  return CLI_OK;
}

static int print_cases_csv(const Clue__V1__GetStatisticsResponse *r) {
  FILE *o = stdout;

  fputs("case_id,title,clues,closed,transferred_to_judicial,overdue_now", o);
  csv_end(o);
  for (size_t i = 0; i < r->n_cases; i++) {
    const Clue__V1__CaseStats *c = r->cases[i];
    fprintf(o, "%lld", (long long)c->case_id);
    table_csv_field(o, c->title, 0);
    csv_i64(o, c->clues);
    csv_i64(o, c->closed);
    csv_i64(o, c->transferred_to_judicial);
    csv_i64(o, c->overdue_now);
    csv_end(o);
  }
  return CLI_OK;
}

/* ---- tables --------------------------------------------------------------------------------- */

static char *disposals_text(const Clue__V1__UnitStats *u) {
  char *buf = NULL;
  size_t len = 0;
  FILE *o = open_memstream(&buf, &len);

  if (o == NULL)
    return NULL;
  if (u->n_closed_by_disposal == 0)
    fputs("-", o);
  for (size_t d = 0; d < u->n_closed_by_disposal; d++)
    fprintf(o, "%s%s %lld", d ? ", " : "", u->closed_by_disposal[d]->disposal,
            (long long)u->closed_by_disposal[d]->count);
  return cli_memstream_text(o, &buf);
}

static char *median_text(double d) {
  return d > 0 ? table_fmt("%.1f", d) : table_fmt("-");
}

static int print_tables(cli_t *cli, const Clue__V1__GetStatisticsResponse *r, const char *from,
                        const char *to) {
  static const char *const uh[] = {"UNIT",
                                   "NAME",
                                   "RECEIVED",
                                   "CHECKS",
                                   "FILED",
                                   "CLOSED",
                                   "TRANSFERRED",
                                   "OVERDUE",
                                   "MEDIAN DAYS A/P/F",
                                   "CLOSED BY DISPOSAL"};
  static const char *const ch[] = {"CASE", "TITLE", "CLUES", "CLOSED", "TRANSFERRED", "OVERDUE"};
  table_t *t;
  int rc;

  printf("Period: %s to %s\n\n", from, to);
  t = table_new(10, uh);
  if (t == NULL)
    return cli_oom(cli);
  for (size_t i = 0; i < r->n_units; i++) {
    const Clue__V1__UnitStats *u = r->units[i];
    char *a = median_text(u->median_days_accepted),
         *p = median_text(u->median_days_preliminary_check), *f = median_text(u->median_days_filed);
    table_add(t, table_fmt("%s", u->unit_code[0] ? u->unit_code : "-"));
    table_add(t, table_fmt("%s", u->unit_name[0] ? u->unit_name : "-"));
    table_add(t, table_fmt("%lld", (long long)u->received));
    table_add(t, table_fmt("%lld", (long long)u->preliminary_checks_started));
    table_add(t, table_fmt("%lld", (long long)u->filed));
    table_add(t, table_fmt("%lld", (long long)u->closed));
    table_add(t, table_fmt("%lld", (long long)u->transferred_to_judicial));
    table_add(t, table_fmt("%lld", (long long)u->overdue_now));
    table_add(t, a && p && f ? table_fmt("%s / %s / %s", a, p, f) : NULL);
    table_add(t, disposals_text(u));
    free(a);
    free(p);
    free(f);
  }
  rc = table_print(t, stdout) == 0 ? CLI_OK : cli_oom(cli);
  table_free(t);
  if (rc != CLI_OK)
    return rc;
  if (r->n_units == 0)
    puts("(no units)");
  if (r->n_cases > 0) {
    puts("\nJoint cases:");
    t = table_new(6, ch);
    if (t == NULL)
      return cli_oom(cli);
    for (size_t i = 0; i < r->n_cases; i++) {
      const Clue__V1__CaseStats *c = r->cases[i];
      table_add(t, table_fmt("%lld", (long long)c->case_id));
      table_add(t, table_fmt("%s", c->title));
      table_add(t, table_fmt("%lld", (long long)c->clues));
      table_add(t, table_fmt("%lld", (long long)c->closed));
      table_add(t, table_fmt("%lld", (long long)c->transferred_to_judicial));
      table_add(t, table_fmt("%lld", (long long)c->overdue_now));
    }
    rc = table_print(t, stdout) == 0 ? CLI_OK : cli_oom(cli);
    table_free(t);
  }
  fputs("\nUnits that disposed of no clue in the period:", stdout);
  if (r->n_zero_disposal_units == 0)
    fputs(" none", stdout);
  for (size_t i = 0; i < r->n_zero_disposal_units; i++) {
    fputs(i ? ", " : " ", stdout);
    cli_put_text(stdout, r->zero_disposal_units[i]->unit_code, 0);
  }
  putchar('\n');
  return rc;
}

static int run_stats(cli_t *cli, const cli_args_t *args) {
  Clue__V1__GetStatisticsRequest req = CLUE__V1__GET_STATISTICS_REQUEST__INIT;
  Clue__V1__GetStatisticsResponse *resp = NULL;
  Clue__V1__ReadConsistency read;
  int csv = cli_flag(args, "csv"), rc;
  char year_from[24], year_to[24];
  const char *from = cli_arg(args, "from"), *to = cli_arg(args, "to");
  time_t now = time(NULL);
  struct tm tm;

  /* The period people ask for most: this calendar year, in local time as dates are. A bound
   * given alone keeps its year in the period: --from 2027-03-01 runs to the end of 2027, and
   * --to 2025-06-30 from the start of 2025, when those years are not this one. */
  localtime_r(&now, &tm);
  snprintf(year_from, sizeof(year_from), "%04d-01-01", tm.tm_year + 1900);
  snprintf(year_to, sizeof(year_to), "%04d-12-31", tm.tm_year + 1900);
  if (from != NULL && to == NULL && strlen(from) >= 4 && strncmp(from, year_to, 4) > 0)
    snprintf(year_to, sizeof(year_to), "%.4s-12-31", from);
  if (to != NULL && from == NULL && strlen(to) >= 4 && strncmp(to, year_from, 4) < 0)
    snprintf(year_from, sizeof(year_from), "%.4s-01-01", to);
  if (from == NULL)
    from = year_from;
  if (to == NULL)
    to = year_to;

  if (cli_flag(args, "cases") && !csv)
    return cli_usage_error(cli, "--cases goes with --csv (the table shows both)");
  if (csv && cli->json)
    return cli_usage_error(cli, "--csv and --json exclude each other");
  if ((rc = cli_time(cli, "from", from, 0, &req.from_ms)) != 0 ||
      (rc = cli_time(cli, "to", to, 1, &req.to_ms)) != 0)
    return rc;
  if ((rc = cli_check_period(cli, "from", req.from_ms, "to", req.to_ms)) != 0)
    return rc;
  if ((rc = cli_read_args(cli, args, &read, &req.read)) != 0 ||
      (rc = cli_arg_idv(cli, args, "unit", &req.unit_ids, &req.n_unit_ids)) != 0)
    return rc;
  /* The unit CSV has no case in it: ask for none. Every other output lists every case, so
   * follow the case pages; each page repeats the unit figures whole. */
  req.omit_cases = csv && !cli_flag(args, "cases");
  if (req.omit_cases)
    rc = cli_call(cli, &clue__v1__stats_service__descriptor, "GetStatistics", &req.base,
                  (ProtobufCMessage **)&resp);
  else
    rc = cli_call_all_pages(cli, &clue__v1__stats_service__descriptor, "GetStatistics", &req.base,
                            "cases", "case_page_token", "next_case_page_token",
                            (ProtobufCMessage **)&resp);
  free(req.unit_ids);
  if (rc != 0)
    return rc;
  cli_fresh_hint(cli, &resp->base);
  if (cli->json)
    rc = cli_print_json(cli, &resp->base, 0);
  else if (csv)
    rc = cli_flag(args, "cases") ? print_cases_csv(resp) : print_units_csv(cli, resp);
  else
    rc = print_tables(cli, resp, from, to);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

static const cli_opt_t bulletin_opts[] = {
    {"month", "YYYY-MM", CLI_OPT_REQUIRED, "the month (UTC+08:00), not after the current one"},
    {"unit", "ID", CLI_OPT_REPEAT, "only this group or region"},
    {"csv", NULL, 0, "print CSV (RFC 4180, with a header row)"},
    {"markdown", NULL, 0, "print a Markdown table ready to paste into a circular"},
    CLI_OPT_CONSISTENT,
    CLI_OPT_MIN_READ_LSN,
    {NULL, NULL, 0, NULL},
};

static const cli_command_t stats_commands[] = {
    {NULL, NULL, "Figures per unit and joint case for a period", stats_opts,
     "Without --from and --to: the current calendar year.\n"
     "Per unit: clues received, preliminary checks started, filed, closed (by disposal),\n"
     "transferred to judicial organs, overdue now, and median days spent in each stage;\n"
     "per joint case; and the units that disposed of no clue in the period (零通报).\n"
     "Every joint case is listed: the server answers them in pages of 1,000, and cluectl\n"
     "asks for each (at most 100,000 cases).\n"
     "\n"
     "--csv prints the unit figures as CSV (RFC 4180: CRLF line ends, fields with commas,\n"
     "quotes or line breaks quoted) with a header row; one closed_<DISPOSAL> column per\n"
     "disposal kind in the answer; zero_disposal is yes or no; a median is empty where no\n"
     "clue left the stage (the table's -). --csv --cases prints the\n"
     "joint-case figures instead.\n"
     "\n"
     "The monthly bulletin (通报) is 'cluectl stats bulletin --month YYYY-MM'.\n",
     run_stats},
    {"bulletin", NULL, "The monthly bulletin (通报) per group and region", bulletin_opts,
     "For each GROUP and REGION in your scope, for one calendar month (UTC+08:00): clues\n"
     "received, decisions by kind, filed, transferred, overdue now, rectification items found,\n"
     "verified and overdue, and the zero-disposal flag (零通报) with the number of consecutive\n"
     "months it has held. --csv (RFC 4180; zero_disposal yes or no, as in stats --csv),\n"
     "--markdown (ready for a circular) or --json.\n",
     cli_run_bulletin},
    {NULL, NULL, NULL, NULL, NULL, NULL},
};

const cli_group_t cli_group_stats = {
    "stats",
    "Statistics per unit and joint case",
    stats_commands,
};
