#ifndef CLUECTL_CLI_H
#define CLUECTL_CLI_H

/*
 * cluectl's shared pieces: the run context, the command tables every command group
 * file exports, option access and the helpers that give all commands the same exit codes
 * and the same output conventions.
 *
 * Adding a command group: write cmd_<group>.c defining `const cli_group_t cli_group_<group>`
 * (a table of cli_command_t), declare it below, and list it in main.c's `groups[]`.
 */

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <protobuf-c/protobuf-c.h>

#include "clue/client.h"
#include "clue/v1/common.pb-c.h"

/** The deadline of a unary call when --timeout is not given (--timeout 0: none). A stream
 * (health --watch, audit watch) has none unless --timeout is given. */
#define CLI_DEFAULT_TIMEOUT_MS 60000

/** Exit codes. */
enum {
  CLI_OK = 0,
  CLI_FAILED = 1, /* an RPC failed, or the answer was a negative one (health: NOT_SERVING) */
  CLI_USAGE = 2,  /* bad command line */
};

/** One command-line option of a command: --name [METAVAR]. */
typedef struct cli_opt {
  const char *name;    /* long name without "--"; NULL ends a table */
  const char *metavar; /* NULL: a flag taking no value */
  unsigned flags;      /* CLI_OPT_* */
  const char *help;
} cli_opt_t;

#define CLI_OPT_REQUIRED 1u
#define CLI_OPT_REPEAT 2u /* may be given more than once */

/** --request-id of a mutating command, read by cli_request_id(). */
#define CLI_OPT_REQUEST_ID                                                                         \
  { "request-id", "UUID", 0, "idempotency key (default: a new random UUID)" }
/** --page-token and --all of a paged list (cli_call_pages()). */
#define CLI_OPT_PAGE_TOKEN                                                                         \
  { "page-token", "TOKEN", 0, "continue a listing (as printed after a page)" }
#define CLI_OPT_ALL_PAGES                                                                          \
  { "all", NULL, 0, "follow page tokens and list every match (at most 100000 rows)" }
/** What --all collects before it gives up (cli_call_pages()): all of it is held in memory
 * until the last page, for the table's widths and the one JSON answer. */
/* The most rows one page of a list may hold: clued's pages hold at most 1,000 (a server
 * that sends more is refused, so that one answer of tiny rows cannot make cluectl print
 * millions of them). */
#define CLI_PAGE_MAX_ROWS 5000
#define CLI_ALL_MAX_ROWS 100000
#define CLI_ALL_MAX_PAGES 10000
#define CLI_ALL_MAX_BYTES (64 << 20) /* of the pages as they came over the wire */
/** --consistent and --min-read-lsn of a read a server may answer from a replica
 * (cli_read_args()). */
#define CLI_OPT_CONSISTENT                                                                         \
  { "consistent", NULL, 0, "read the primary, not a replica: every acknowledged write shows" }
#define CLI_OPT_MIN_READ_LSN                                                                       \
  { "min-read-lsn", "LSN", 0, "a replica answers only once it has replayed this far (16/B374D848)" }
/** An optional --reason that the server keeps in the audit trail. */
#define CLI_OPT_REASON                                                                             \
  { "reason", "TEXT", 0, "why (kept in the audit trail)" }

/** One option occurrence, in command-line order. */
typedef struct cli_optval {
  const cli_opt_t *opt;
  const char *value; /* NULL for flags */
} cli_optval_t;

/** The parsed options of a command. */
typedef struct cli_args {
  cli_optval_t *v;
  size_t n;
  const char *operand; /* the word after the command (an ID), for commands that take one */
} cli_args_t;

/** The run context handed to every command. */
typedef struct cli {
  const char *server;                 /* HOST:PORT */
  uint64_t timeout_ms;                /* a unary call's deadline (--timeout); 0: none */
  uint64_t stream_timeout_ms;         /* a stream's: --timeout if given, else 0 (none) */
  int json;                           /* --json */
  clue_conn_t *conn;                  /* created before the command runs; connects on first call */
  const char *cmd;                    /* "admin units": for messages */
  volatile sig_atomic_t *interrupted; /* set by SIGINT / SIGTERM */
  int last_code;                      /* the gRPC status of the last call (CLUE_STATUS_*) */
  int last_unknown;                   /* the last call failed and may have made its change */
  int no_token;                       /* neither --token nor CLUED_TOKEN gave one */
} cli_t;

typedef struct cli_command {
  const char *name;    /* "units"; NULL for a group that is itself one command */
  const char *operand; /* metavariable of the one required word after the name ("ID"), or NULL */
  const char *summary; /* one line */
  const cli_opt_t *opts;
  const char *help; /* further text for --help, or NULL */
  int (*run)(cli_t *cli, const cli_args_t *args);
} cli_command_t;

typedef struct cli_group {
  const char *name; /* first word on the command line */
  const char *summary;
  const cli_command_t *commands; /* ends with an entry whose run is NULL */
} cli_group_t;

/* The command groups. */
extern const cli_group_t cli_group_health;
extern const cli_group_t cli_group_admin;
extern const cli_group_t cli_group_clue;
extern const cli_group_t cli_group_case;
extern const cli_group_t cli_group_audit;
extern const cli_group_t cli_group_stats;
extern const cli_group_t cli_group_token;
extern const cli_group_t cli_group_rect;

/** cluectl stats bulletin (cmd_bulletin.c). */
int cli_run_bulletin(cli_t *cli, const cli_args_t *args);

/* ---- options ---- */

/** Last value given for --name, or NULL. */
const char *cli_arg(const cli_args_t *a, const char *name);

/**
 * Set the message's string member *field to the value of --name if it was given; otherwise
 * leave it (protobuf-c's default empty string).
 */
void cli_arg_str(const cli_args_t *a, const char *name, char **field);

/** Whether the flag --name was given. */
int cli_flag(const cli_args_t *a, const char *name);

/** The i-th value (0-based) given for a repeatable --name, or NULL past the last. */
const char *cli_arg_nth(const cli_args_t *a, const char *name, size_t i);

/** Number of values given for --name. */
size_t cli_arg_count(const cli_args_t *a, const char *name);

/**
 * Parse the value of --name as a positive 64-bit id into *out. Absent: returns 0 and leaves
 * *out alone. Bad: prints a usage error and returns CLI_USAGE.
 */
int cli_arg_id(cli_t *cli, const cli_args_t *a, const char *name, int64_t *out);

/**
 * Parse the value of --version (the version of a clue or item as last read) as a positive
 * integer into *out. Absent: 0, *out untouched. Bad: usage error, CLI_USAGE.
 */
int cli_arg_version(cli_t *cli, const cli_args_t *a, int64_t *out);

/**
 * Parse the value of --name as a value of enum ed, by its name with or without the common
 * prefix, in any case ("group", "GROUP", "UNIT_KIND_GROUP"). Absent: 0, *out untouched.
 * Bad: prints a usage error listing the choices and returns CLI_USAGE.
 */
int cli_arg_enum(cli_t *cli, const cli_args_t *a, const char *name,
                 const ProtobufCEnumDescriptor *ed, int *out);

/** Parse the operand (the word after the command) as a positive id into *out, or CLI_USAGE. */
int cli_operand_id(cli_t *cli, const cli_args_t *a, int64_t *out);

/**
 * Parse the value of --name as an integer in [min, max] into *out. Absent: 0, *out untouched.
 * Bad: prints a usage error and returns CLI_USAGE.
 */
int cli_arg_int(cli_t *cli, const cli_args_t *a, const char *name, int64_t min, int64_t max,
                int64_t *out);

/** Like cli_arg_int() for an int32_t field. */
int cli_arg_i32(cli_t *cli, const cli_args_t *a, const char *name, int32_t min, int32_t max,
                int32_t *out);

/**
 * Parse the value of --name as a time into *ms (milliseconds since the epoch): RFC 3339
 * ("2026-03-01T08:30:00+08:00", "...Z", optional fraction) or a date (YYYY-MM-DD) meaning
 * local midnight at its start, or with end_of_day the midnight that ends it (for exclusive
 * upper bounds: "--to 2026-03-31" takes in the whole of March 31). Absent: 0, *ms untouched.
 * Bad: usage error, CLI_USAGE.
 */
int cli_arg_time(cli_t *cli, const cli_args_t *a, const char *name, int end_of_day, int64_t *ms);

/** As cli_arg_time() for the text s of option --name. */
int cli_time(cli_t *cli, const char *name, const char *s, int end_of_day, int64_t *ms);

/**
 * When both bounds of a period are given (not 0), that it is not empty: to_ms after from_ms
 * (--to and --from name them). Returns 0, or CLI_USAGE (reported).
 */
int cli_check_period(cli_t *cli, const char *from, int64_t from_ms, const char *to, int64_t to_ms);

/**
 * The paging options of a list (CLI_OPT_PAGE_TOKEN, CLI_OPT_ALL_PAGES): *all says whether
 * --all was given, and --page-token goes to *token as by cli_arg_str(). Returns 0, or
 * CLI_USAGE (reported) when both are given.
 */
int cli_page_args(cli_t *cli, const cli_args_t *a, int *all, char **token);

/**
 * The read options (CLI_OPT_CONSISTENT, CLI_OPT_MIN_READ_LSN): when either is given, fill rc
 * and point *field at it. Returns 0.
 */
int cli_read_args(cli_t *cli, const cli_args_t *a, Clue__V1__ReadConsistency *rc,
                  Clue__V1__ReadConsistency **field);

/** After a read answered from a replica, say so on stderr (not with --json). */
void cli_fresh_hint(cli_t *cli, const ProtobufCMessage *resp);

/**
 * The values of the repeatable option --name as a malloc'd array in *out (NULL when none),
 * their number in *n. The strings are argv's, not copies. Returns 0 or CLI_FAILED (out of
 * memory, reported).
 */
int cli_arg_strv(cli_t *cli, const cli_args_t *a, const char *name, char ***out, size_t *n);

/** Like cli_arg_strv() for a repeatable option of ids; CLI_USAGE for a bad one. */
int cli_arg_idv(cli_t *cli, const cli_args_t *a, const char *name, int64_t **out, size_t *n);

/** Like cli_arg_strv() for a repeatable option of values of enum ed. */
int cli_arg_enumv(cli_t *cli, const cli_args_t *a, const char *name,
                  const ProtobufCEnumDescriptor *ed, int **out, size_t *n);

/** Size of a request id: a UUID in its 36-character text form and a NUL. */
#define CLI_REQUEST_ID_LEN 37

/**
 * The request id of a mutating command: --request-id if given, else a fresh random UUID
 * (version 4), written into buf. Returns 0, CLI_USAGE (--request-id not a UUID, reported) or
 * CLI_FAILED (no randomness, reported).
 */
int cli_request_id(cli_t *cli, const cli_args_t *a, char buf[CLI_REQUEST_ID_LEN]);

/**
 * The request id of the element at 1-based position pos of an array submitted under request
 * id base: the name-based UUID (version 5, RFC 4122) of pos in decimal in the namespace
 * base, so that the same base and position give the same id on every run. Returns 0, or -1
 * when base is not a UUID.
 */
int cli_derived_request_id(const char *base, size_t pos, char out[CLI_REQUEST_ID_LEN]);

/**
 * Whether a call that failed with status code and the server's message (NULL: none) may or
 * may not have made its change.
 */
int cli_outcome_unknown(int code, const char *message);

/**
 * Read a whole file ("-" is standard input) into *out (NUL-terminated, *len bytes). Returns
 * 0, or CLI_USAGE after printing why the file cannot be read.
 */
int cli_read_file(cli_t *cli, const char *path, char **out, size_t *len);

/* ---- results ---- */

/** Print "cluectl CMD: message" and a hint to stderr; returns CLI_USAGE. */
int cli_usage_error(cli_t *cli, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * Report a failed call: "STATUS_NAME: message" on stderr. rv is what libclue returned.
 * Returns CLI_FAILED.
 */
int cli_rpc_error(cli_t *cli, int rv, const clue_status_t *st);

/** Report that memory ran out; returns CLI_FAILED. */
int cli_oom(cli_t *cli);

/** Prints an answer for the user (see cli_show()); returns CLI_OK or CLI_FAILED. */
typedef int (*cli_show_fn)(cli_t *cli, const ProtobufCMessage *m);

/** Make a unary call to a method of service; on failure it has been reported. */
int cli_call(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
             const ProtobufCMessage *req, ProtobufCMessage **resp)
    __attribute__((warn_unused_result));

/**
 * Like cli_call() for a call that carries request id rid: when the outcome is unknown
 * (the deadline passed, the connection broke, the call was interrupted) the report adds how
 * to retry without doing the change twice.
 */
int cli_call_rid(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
                 const ProtobufCMessage *req, const char *rid, ProtobufCMessage **resp)
    __attribute__((warn_unused_result));

/**
 * Like cli_call_show() for a call that carries request id rid (cli_call_rid()): the JSON
 * answer leads with "request_id": rid, so that a script can retry it.
 */
int cli_call_rid_show(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
                      const ProtobufCMessage *req, const char *rid, cli_show_fn show);

/**
 * Call a list method whose request has a page_token field and whose response has a
 * next_page_token and the repeated field `list`. With all, follow the page tokens and
 * return one response holding every page's rows (its next_page_token empty); otherwise make
 * one call. req's page_token is restored before returning. On failure it has been reported:
 * that includes a page of more than CLI_PAGE_MAX_ROWS rows and, with all, a page token the
 * server gave before (its pages go round in a circle) and a listing past CLI_ALL_MAX_ROWS,
 * CLI_ALL_MAX_PAGES or CLI_ALL_MAX_BYTES.
 */
int cli_call_pages(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
                   ProtobufCMessage *req, const char *list, int all, ProtobufCMessage **resp)
    __attribute__((warn_unused_result));

/**
 * cli_call_pages() with all, for a command that always lists every page and so has no
 * --page-token (clue proposals, rect stats): past the bounds of --all it says to narrow the
 * listing.
 */
int cli_call_every_page(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
                        ProtobufCMessage *req, const char *list, ProtobufCMessage **resp)
    __attribute__((warn_unused_result));

/**
 * cli_call_pages() with all, for a list whose page token fields have other names: the
 * request's token_field, the response's next_field (GetStatistics' case pages:
 * "case_page_token", "next_case_page_token"). The answer is the last page's, holding every
 * page's rows of `list`; its other fields are the last page's.
 */
int cli_call_all_pages(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
                       ProtobufCMessage *req, const char *list, const char *token_field,
                       const char *next_field, ProtobufCMessage **resp)
    __attribute__((warn_unused_result));

/**
 * Start a server-streaming call (clue_stream_start()) to path, with the deadline of a stream
 * (cli_t.stream_timeout_ms); on success *out owns the stream. On failure it has been reported
 * and *out is untouched. Returns 0 or CLI_FAILED.
 */
int cli_stream_start(cli_t *cli, const char *path, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp_desc, clue_stream_t **out)
    __attribute__((warn_unused_result));

/**
 * The exit status of a watch, a stream read until it ended: rv is clue_stream_next()'s last
 * return and st the stream's final status. An OK end and an interrupt are CLI_OK; so is
 * DEADLINE_EXCEEDED once budget (the --timeout in ms the watch started with at started_ms,
 * cli_now_ms(); 0: none) has really passed, if the server answered the watch (answered: the
 * command says what counts). Anything else is reported, CLI_FAILED: a DEADLINE_EXCEEDED
 * before --timeout is up is the server's or a proxy's, not this process's.
 */
int cli_watch_end(cli_t *cli, int rv, const clue_status_t *st, int answered, uint64_t started_ms,
                  uint64_t budget);

/** Milliseconds of the monotonic clock, for a watch's budget (cli_watch_again()). */
uint64_t cli_now_ms(void);

/**
 * A watch whose stream the server ended at its maximum age goes on with a new stream within
 * --timeout: 1 when there is time left (cli->stream_timeout_ms is then what is left of budget,
 * the --timeout in ms the watch started with; 0: none), 0 when budget is spent since
 * started_ms (cli_now_ms()), the watch then ending as at --timeout, or when interrupted. A
 * stream that ended less than a second after it began (stream_ms) waits out the rest of that
 * second first: a server that ends every stream at once is asked at most once a second.
 */
int cli_watch_again(cli_t *cli, uint64_t started_ms, uint64_t budget, uint64_t stream_ms);

/**
 * Print an answer and free it: as JSON with --json, otherwise with show(). When the answer is
 * one page of a list, the way to the next page follows on stderr. Returns what printing did.
 */
int cli_show(cli_t *cli, ProtobufCMessage *resp, cli_show_fn show);

/** Call a method of service (cli_call()) and print its answer (cli_show()). */
int cli_call_show(cli_t *cli, const ProtobufCServiceDescriptor *service, const char *method,
                  const ProtobufCMessage *req, cli_show_fn show);

/* ---- output (render.c) ---- */

/** Print m as JSON on stdout (indented, or one line if compact). Returns CLI_OK or CLI_FAILED. */
int cli_print_json(cli_t *cli, const ProtobufCMessage *m, int compact);

/**
 * Print m as JSON with one more string member first, "key": value (a request id, so that
 * scripts can retry). Returns CLI_OK or CLI_FAILED.
 */
int cli_print_json_with(cli_t *cli, const ProtobufCMessage *m, const char *key, const char *value,
                        int compact);

/**
 * Print m as "field: value" lines, aligned; the fields of a nested message as
 * "field.sub: value". Returns CLI_OK or CLI_FAILED (out of memory).
 */
int cli_print_record(cli_t *cli, const ProtobufCMessage *m);

/**
 * A table column: header text and the field of each row message it shows: a field name,
 * a path into nested messages ("subject.name"), or "#field" for the number of elements of a
 * repeated field.
 */
typedef struct cli_col {
  const char *header;
  const char *field; /* a field path, or "a|b": the first of them that is set */
} cli_col_t;

/**
 * Print the repeated message field `list` of m as an aligned table with the given columns
 * (ends with a {NULL, NULL} entry). Returns CLI_OK or CLI_FAILED.
 */
int cli_print_table(cli_t *cli, const ProtobufCMessage *m, const char *list, const cli_col_t *cols);

/**
 * The human text of the field at path (as in cli_col_t) of m; "-" when a message on the way
 * is unset. Returns a malloc'd string or NULL (out of memory, or no such field).
 */
char *cli_path_text(const ProtobufCMessage *m, const char *path);

/** Local date and time of ms since the epoch ("2026-03-01 08:30"), or "-" for 0, into buf. */
const char *cli_time_text(int64_t ms, char *buf, size_t len);

/** Local date of ms since the epoch ("2026-03-01"), or "-" for 0, into buf. */
const char *cli_date_text(int64_t ms, char *buf, size_t len);

/**
 * A deadline into buf: one at a local midnight as the day it ends ("2026-12-31 (end of
 * day)", as `--deadline 2026-12-31` sets it), any other as local date and time, "-" for 0.
 */
const char *cli_deadline_text(int64_t ms, char *buf, size_t len);

/**
 * The human text of one field of m: enums without their common prefix, *_ms times as local
 * date and time (a deadline_ms as by cli_deadline_text()), unset ids and times as "-",
 * repeated values joined by ", ".
 * Returns a malloc'd string or NULL on out of memory.
 */
char *cli_field_text(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f);

/**
 * Close o, a stream from open_memstream(buf, ...), and return its text (malloc'd), or NULL
 * (the text freed) when writing it failed.
 */
char *cli_memstream_text(FILE *o, char **buf);

/**
 * Write text that came from the server: control characters (line breaks too, unless
 * keep_newlines) as spaces, so that no escape sequence reaches the terminal, and the
 * bidirectional controls as <U+202E>, so none reorders the line (text_put() in table.h).
 */
void cli_put_text(FILE *o, const char *s, int keep_newlines);

/** An enum value's name without the enum's common prefix ("GROUP" for UNIT_KIND_GROUP);
 * NULL for a value the enum does not name (a newer server's). */
const char *cli_enum_short(const ProtobufCEnumDescriptor *ed, int value);

/** cli_enum_short(), or "-" for a value the enum does not name: for text that is printed. */
const char *cli_enum_text(const ProtobufCEnumDescriptor *ed, int value);

/** The short name of a clue state ("PRELIMINARY_CHECK"), or "-" when unset or unknown. */
const char *cli_state_text(int state);

#endif
