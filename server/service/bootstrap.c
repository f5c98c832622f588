#include "service/bootstrap.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db/migrate.h"
#include "log.h"
#include "rpc/auth.h"

/* The key admin_bootstrap (0045_administration_never_locked_out.sql) locks first: the demo
 * takes it too, so that of two bootstraps at once the second waits and finds the first's
 * work done. */
#define BOOTSTRAP_LOCK_SQL "SELECT pg_advisory_xact_lock(hashtext('clued.bootstrap'))"

/* libpq's messages run over several lines (DETAIL, CONTEXT with the SQL, a caret line): the
 * log gets the first line alone, as one line. */
static void log_first_line(const char *what, const char *msg) {
  int n = (int)strcspn(msg ? msg : "", "\n");
  log_error("%s: %.*s", what, n > 400 ? 400 : n, msg ? msg : "");
}

/* What to do about an error of SQLSTATE state, "" when there is nothing to say. */
static const char *hint(const char *state) {
  if (state == NULL)
    return "";
  if (strcmp(state, "42501") == 0)
    return "; bootstrap runs as the role owning the schema, as migrate does (README \"Database "
           "roles\")";
  return "";
}

/* Run one statement; returns its result on success, NULL (error logged: the primary message
 * and SQLSTATE, never the statement) otherwise. */
static PGresult *exec(PGconn *db, const char *sql, int n, const char *const *params) {
  PGresult *r = PQexecParams(db, sql, n, NULL, params, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (msg == NULL)
      log_first_line("bootstrap", PQerrorMessage(db));
    else if (state && (strcmp(state, "42883") == 0 || strcmp(state, "42P01") == 0))
      /* undefined_function, undefined_table: what bootstrap calls is not there yet. */
      log_error("bootstrap: the database is not migrated (SQLSTATE %s); run `clued migrate` first",
                state);
    else
      log_error("bootstrap: %s (SQLSTATE %s)%s", msg, state ? state : "?", hint(state));
    PQclear(r);
    return NULL;
  }
  return r;
}

int bootstrap_admin(const char *conninfo, int new_admin, FILE *out) {
  PGconn *db = db_session_connect(conninfo, "clued-bootstrap");
  char token[AUTH_TOKEN_LEN + 1], hash[65];
  const char *params[1] = {hash};
  PGresult *r;
  int rc = -1;

  if (db == NULL)
    return -1;
  if (auth_token_new(token, hash) != 0) {
    log_error("cannot read random bytes for the token");
    goto done;
  }
  /* Whether other ADMIN users existed: the statement's snapshot, taken before
   * admin_bootstrap() ran, holds the earlier ones and not the one it made. --new-admin's
   * admin_bootstrap_new() (0049_bootstrap_new_admin.sql) makes one whatever works. */
  if (new_admin)
    r = exec(db, "SELECT b.id, b.name, false FROM admin_bootstrap_new($1) b", 1, params);
  else
    r = exec(db,
             "SELECT b.id, b.name, EXISTS (SELECT 1 FROM users u WHERE u.role = 'ADMIN'"
             " AND u.id <> b.id) FROM admin_bootstrap($1) b",
             1, params);
  if (r == NULL)
    goto done;
  if (PQntuples(r) == 0) {
    fprintf(out, "already bootstrapped: an enabled ADMIN user holds a live token; nothing "
                 "changed (--new-admin makes another all the same)\n");
  } else {
    /* None of the ADMIN users there are can administer (disabled, or no live token):
     * admin_bootstrap (0045_administration_never_locked_out.sql) made another. */
    if (strcmp(PQgetvalue(r, 0, 2), "t") == 0)
      fprintf(out, "no enabled ADMIN user held a live token: administration restored.\n");
    fprintf(out, "created ADMIN user \"%s\" (id %s). Its token, shown only this once:\n%s\n",
            PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 0), token);
    if (new_admin)
      fprintf(out, "with it, revoke the lost token (cluectl admin revoke-token --token-id ID) or "
                   "disable its user (cluectl admin disable-user --user ID)\n");
  }
  PQclear(r);
  rc = 0;
done:
  OPENSSL_cleanse(token, sizeof(token));
  PQfinish(db);
  return rc;
}

typedef struct demo_unit {
  const char *kind, *code, *name, *liaison, *hosts;
} demo_unit_t;

static const demo_unit_t demo_units[] = {
    {"ROOM", "R01", "第一监督检查室", NULL, NULL},
    {"ROOM", "R02", "第二监督检查室", NULL, NULL},
    {"GROUP", "G01", "驻市发展改革委纪检监察组", "R01", "{市发展改革委,市统计局}"},
    {"GROUP", "G02", "驻市交通运输局纪检监察组", "R01", "{市交通运输局}"},
    {"GROUP", "G03", "驻市卫生健康委纪检监察组", "R02", "{市卫生健康委,市医保局}"},
    {"REGION", "X01", "某区纪委监委", NULL, NULL},
};

/* The demo's rectification items: problems the groups found in their host units in their own
 * supervision, recorded by each group's leader through rect_create (so audited as any other). */
static const char demo_items_sql[] =
    "SELECT count(*) FROM (SELECT rect_create(l.id, l.unit_id, gen_random_uuid(), now_ms,"
    " d.host, d.descr, d.cat, 'SUPERVISION', NULL, NULL, now_ms + d.days::bigint * 86400000)"
    " FROM (VALUES ('G01', '市发展改革委', '政府采购项目未按规定公开招标信息', '财务管理', 60),"
    " ('G01', '市统计局', '公务接待超标准列支', '作风建设', 30),"
    " ('G03', '市医保局', '医保基金专项检查发现的违规结算问题', '监督检查', 90))"
    " AS d(code, host, descr, cat, days)"
    " JOIN units u ON u.code = d.code"
    " JOIN LATERAL (SELECT id, unit_id FROM users WHERE unit_id = u.id AND role = 'LEADER'"
    " ORDER BY id LIMIT 1) l ON true"
    " CROSS JOIN (SELECT (extract(epoch FROM now()) * 1000)::bigint AS now_ms) t) x";

/* The demo's clues, submitted by the members of G01 and G03 through clue_submit (so numbered
 * and audited as any other), with a deadline 30 days on (the default for ACCEPTED) and no
 * acting token (the bootstrap acts with none). */
static const char demo_clues_sql[] =
    "SELECT count(*) FROM (SELECT clue_submit(m.id, m.unit_id, gen_random_uuid(), t.now_ms,"
    " t.now_ms + 30::bigint * 86400000,"
    " extract(year FROM now() AT TIME ZONE INTERVAL '+08:00')::int, d.title, d.summary,"
    " 'LETTER_VISIT_REPORT', d.subject, d.pos, '', false, d.host, ARRAY[d.cat], NULL, NULL, NULL,"
    " NULL, NULL::bigint)"
    " FROM (VALUES ('G01', '反映某处长违规接受宴请', "
    "'群众来信反映某处长多次接受管理服务对象宴请。',"
    " '王某', '处长', '市发展改革委', '违反中央八项规定精神'),"
    " ('G03', '反映某医院院长在设备采购中收受回扣', "
    "'举报人反映某医院院长在医疗设备采购中收受供应商回扣。',"
    " '赵某', '院长', '市卫生健康委', '受贿'))"
    " AS d(code, title, summary, subject, pos, host, cat)"
    " JOIN units u ON u.code = d.code"
    " JOIN LATERAL (SELECT id, unit_id FROM users WHERE unit_id = u.id AND role = 'MEMBER'"
    " ORDER BY id LIMIT 1) m ON true"
    " CROSS JOIN (SELECT (extract(epoch FROM now()) * 1000)::bigint AS now_ms) t) x";

/* The demo's assignments (docs/COOPERATION.md), made by the owner groups' leaders through
 * clue_set_handler (audited as clue.assign): R01's member seconded to G01's clue with G01's
 * member, and R02's member seconded to G03's clue. */
static const char demo_handlers_sql[] =
    "SELECT count(*) FROM (SELECT clue_set_handler(l.id, l.unit_id, gen_random_uuid(), t.now_ms,"
    " c.id, c.owner_unit, c.state, h.id, true, d.why)"
    " FROM (VALUES ('G01', 'G01', '承办'), ('G01', 'R01', '派员参与初核'),"
    " ('G03', 'R02', '派员参与初核')) AS d(code, hcode, why)"
    " JOIN units u ON u.code = d.code"
    " JOIN clues c ON c.owner_unit = u.id"
    " JOIN LATERAL (SELECT id, unit_id FROM users WHERE unit_id = u.id AND role = 'LEADER'"
    " ORDER BY id LIMIT 1) l ON true"
    " JOIN units hu ON hu.code = d.hcode"
    " JOIN LATERAL (SELECT id FROM users WHERE unit_id = hu.id AND role = 'MEMBER'"
    " ORDER BY id LIMIT 1) h ON true"
    " CROSS JOIN (SELECT (extract(epoch FROM now()) * 1000)::bigint AS now_ms) t) x";

/* Create the demo user CODE-suffix (or plain suffix in the ADMIN unit) of role in unit_id and
 * write "CODE ROLE NAME TOKEN" to tf. 0 on success, -1 (printed) otherwise. */
static int demo_user(PGconn *db, const char *admin_id, const char *admin_unit, const char *unit_id,
                     const char *code, const char *role, const char *suffix, FILE *tf) {
  char name[64], token[AUTH_TOKEN_LEN + 1], hash[65], user_id[32];
  const char *up[5] = {admin_id, admin_unit, unit_id, name, role};
  /* The user issues its own token: a personal token, not an enrollment token (one the admin
   * issued could not read reporter contacts). */
  const char *tp[5] = {user_id, unit_id, user_id, hash, "demo"};
  PGresult *r;

  if (strcmp(unit_id, admin_unit) == 0)
    snprintf(name, sizeof(name), "%s", suffix);
  else
    snprintf(name, sizeof(name), "%s-%s", code, suffix);
  if ((r = exec(db, "SELECT id FROM admin_create_user($1, $2, $3, $4, $5)", 5, up)) == NULL)
    return -1;
  snprintf(user_id, sizeof(user_id), "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  if (auth_token_new(token, hash) != 0) {
    log_error("cannot read random bytes for a token");
    return -1;
  }
  if ((r = exec(db, "SELECT id FROM admin_issue_token($1, $2, $3, $4, $5)", 5, tp)) == NULL)
    return -1;
  PQclear(r);
  fprintf(tf, "%s %s %s %s\n", code, role, name, token);
  return 0;
}

/* Write len bytes of text to a new file at path, mode 0600: never an existing file, never
 * through a symlink (O_EXCL refuses both; O_NOFOLLOW says so). 0, or -1 having logged why; a
 * file it created but could not fill is removed. */
static int write_new_file(const char *path, const char *text, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  size_t done = 0;

  if (fd < 0) {
    log_error("--demo-tokens %s: cannot create it: %s%s", path, strerror(errno),
              errno == EEXIST ? " (the demo tokens go only to a new file: remove it or name "
                                "another)"
                              : "");
    return -1;
  }
  while (done < len) {
    ssize_t w = write(fd, text + done, len - done);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      break;
    done += (size_t)w;
  }
  if (done < len || fsync(fd) != 0) {
    log_error("--demo-tokens %s: cannot write it: %s", path, strerror(errno));
    close(fd);
    unlink(path);
    return -1;
  }
  if (close(fd) != 0) {
    log_error("--demo-tokens %s: cannot write it: %s", path, strerror(errno));
    unlink(path);
    return -1;
  }
  return 0;
}

int bootstrap_demo_path_free(const char *tokens_path) {
  struct stat st;

  if (lstat(tokens_path, &st) != 0)
    return 0;
  log_error("--demo-tokens %s exists: the demo tokens go only to a new file (never an existing "
            "file or a symlink), so that no one else may already read it; remove it or name "
            "another",
            tokens_path);
  return -1;
}

int bootstrap_demo(const char *conninfo, const char *tokens_path, FILE *out) {
  PGconn *db = db_session_connect(conninfo, "clued-bootstrap");
  PGresult *r;
  FILE *tf = NULL;
  char *tokens = NULL, admin_id[32], admin_unit[32];
  size_t tokens_len = 0;
  int rc = -1, written = 0;

  if (db == NULL)
    return -1;
  /* One transaction from the check to the last write, under the lock admin_bootstrap takes: a
   * second bootstrap running at once waits for it, then finds the demo made. */
  if ((r = exec(db, "BEGIN", 0, NULL)) == NULL)
    goto done;
  PQclear(r);
  if ((r = exec(db, BOOTSTRAP_LOCK_SQL, 0, NULL)) == NULL)
    goto rollback;
  PQclear(r);
  if ((r = exec(db, "SELECT count(*) FROM units WHERE kind <> 'ADMIN'", 0, NULL)) == NULL)
    goto rollback;
  if (strcmp(PQgetvalue(r, 0, 0), "0") != 0) {
    PQclear(r);
    fprintf(out, "demo units already exist; nothing changed\n");
    rc = 0;
    goto rollback;
  }
  PQclear(r);
  /* The demo's records name an enabled ADMIN where there is one (bootstrap may have restored
   * administration after the first was disabled). */
  r = exec(db, "SELECT id, unit_id FROM users WHERE role = 'ADMIN' ORDER BY disabled, id LIMIT 1",
           0, NULL);
  if (r == NULL)
    goto rollback;
  if (PQntuples(r) == 0) {
    PQclear(r);
    log_error("run `clued bootstrap` first: no ADMIN user exists");
    goto rollback;
  }
  snprintf(admin_id, sizeof(admin_id), "%s", PQgetvalue(r, 0, 0));
  snprintf(admin_unit, sizeof(admin_unit), "%s", PQgetvalue(r, 0, 1));
  PQclear(r);
  /* Said before anything is made; write_new_file() refuses it again if one appears meanwhile. */
  if (bootstrap_demo_path_free(tokens_path) != 0)
    goto rollback;
  /* The tokens stay in memory until the demo is made, then go to the file before COMMIT: the
   * file exists, whole, only if the demo was made (or is removed again if COMMIT fails). */
  if ((tf = open_memstream(&tokens, &tokens_len)) == NULL) {
    log_error("out of memory");
    goto rollback;
  }
  for (size_t i = 0; i < sizeof(demo_units) / sizeof(demo_units[0]); i++) {
    const demo_unit_t *u = &demo_units[i];
    const char *p[7] = {admin_id, admin_unit, u->kind, u->code, u->name, u->liaison, u->hosts};
    char unit_id[32];
    r = exec(db,
             "SELECT id FROM admin_create_unit($1, $2, $3, $4, $5,"
             " (SELECT id FROM units WHERE code = $6), $7::text[])",
             7, p);
    if (r == NULL)
      goto rollback;
    snprintf(unit_id, sizeof(unit_id), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    if (demo_user(db, admin_id, admin_unit, unit_id, u->code, "LEADER", "leader", tf) != 0 ||
        demo_user(db, admin_id, admin_unit, unit_id, u->code, "MEMBER", "member", tf) != 0)
      goto rollback;
  }
  /* Auditing is one of the service's three jobs: the demo has an auditor, in the ADMIN unit. */
  if (demo_user(db, admin_id, admin_unit, admin_unit, "ADM", "AUDITOR", "auditor", tf) != 0)
    goto rollback;
  /* A few rectification items (docs/LEDGER.md), recorded by the groups' leaders. */
  if ((r = exec(db, demo_items_sql, 0, NULL)) == NULL)
    goto rollback;
  PQclear(r);
  /* Two clues, and a few handlers on them, one seconded from a room to each group. */
  if ((r = exec(db, demo_clues_sql, 0, NULL)) == NULL)
    goto rollback;
  PQclear(r);
  if ((r = exec(db, demo_handlers_sql, 0, NULL)) == NULL)
    goto rollback;
  PQclear(r);
  if (fflush(tf) != 0 || ferror(tf)) {
    log_error("out of memory");
    goto rollback;
  }
  if (write_new_file(tokens_path, tokens, tokens_len) != 0)
    goto rollback;
  written = 1;
  if ((r = exec(db, "COMMIT", 0, NULL)) == NULL) {
    unlink(tokens_path);
    goto done;
  }
  PQclear(r);
  fprintf(out, "created demo units R01 R02 G01 G02 G03 X01 with a leader and a member each,\n"
               "an auditor, three rectification items, and two clues with three assigned\n"
               "handlers; their tokens are in %s\n",
          tokens_path);
  rc = 0;
  goto done;
rollback:
  PQclear(PQexec(db, "ROLLBACK"));
  if (written)
    unlink(tokens_path);
done:
  if (tf)
    fclose(tf);
  if (tokens) {
    OPENSSL_cleanse(tokens, tokens_len);
    free(tokens);
  }
  PQfinish(db);
  return rc;
}
