/* Reading the migrations for clued's functions and triggers (db/schema_check.h): every
 * CREATE FUNCTION of the built-in migrations found with its body, replacements and drops
 * followed, the triggers' tables, events and states; and the comparison with catalog rows. */

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "audit/sha256.h"
#include "db/migrate.h"
#include "db/schema_check.h"

static schema_expect_t *embedded(void) {
  schema_expect_t *e = schema_expect_new();
  char err[400] = "";

  assert_non_null(e);
  for (size_t i = 0; i < db_embedded_nmigrations; i++) {
    const db_embedded_migration_t *m = &db_embedded_migrations[i];
    int rc = schema_expect_add(e, m->name, m->sql, m->len, err, sizeof(err));
    if (rc != 0)
      fail_msg("%s: %s", m->name, err);
  }
  return e;
}

static int find_fn(const schema_expect_t *e, const char *name, const char *args) {
  for (size_t i = 0; i < schema_expect_nfunctions(e); i++) {
    const char *n, *a;
    schema_expect_function(e, i, &n, &a, NULL, NULL, NULL);
    if (strcmp(n, name) == 0 && strcmp(a, args) == 0)
      return (int)i;
  }
  return -1;
}

static int find_trg(const schema_expect_t *e, const char *table, const char *name) {
  for (size_t i = 0; i < schema_expect_ntriggers(e); i++) {
    const char *n, *t;
    schema_expect_trigger(e, i, &n, &t, NULL, NULL, NULL);
    if (strcmp(n, name) == 0 && strcmp(t, table) == 0)
      return (int)i;
  }
  return -1;
}

/* A crude count, independent of the lexer: lines that begin a CREATE [OR REPLACE] FUNCTION. */
static size_t count_creates(void) {
  size_t n = 0;

  for (size_t i = 0; i < db_embedded_nmigrations; i++)
    for (const char *p = db_embedded_migrations[i].sql; p && *p; p = strchr(p, '\n')) {
      if (*p == '\n')
        p++;
      if (strncasecmp(p, "CREATE FUNCTION", 15) == 0 ||
          strncasecmp(p, "CREATE OR REPLACE FUNCTION", 26) == 0)
        n++;
      if (!strchr(p, '\n'))
        break;
    }
  return n;
}

static const db_embedded_migration_t *migration_named(const char *name) {
  for (size_t i = 0; i < db_embedded_nmigrations; i++)
    if (strcmp(db_embedded_migrations[i].name, name) == 0)
      return &db_embedded_migrations[i];
  return NULL;
}

static void test_every_function_of_the_migrations_has_its_body(void **state) {
  schema_expect_t *e = embedded();
  size_t creates = count_creates();
  (void)state;

  assert_true(creates > 150);
  assert_int_equal(schema_expect_creates(e), creates);
  assert_true(schema_expect_nfunctions(e) > 50);
  for (size_t i = 0; i < schema_expect_nfunctions(e); i++) {
    const char *name, *args, *body, *file;
    size_t len;
    const db_embedded_migration_t *m;
    const char *at;

    schema_expect_function(e, i, &name, &args, &body, &len, &file);
    assert_true(len > 0);
    assert_int_equal(strlen(body), len);
    /* The body is the text between two dollar quotes of the file that defined it last. */
    m = migration_named(file);
    assert_non_null(m);
    for (at = strstr(m->sql, body); at && !(at > m->sql && at[-1] == '$' && at[len] == '$');
         at = strstr(at + 1, body))
      ;
    if (!at)
      fail_msg("%s(%s): body not found between dollar quotes in %s", name, args, file);
    /* The key is the input argument types, never a parameter's name. */
    assert_null(strstr(args, "p_"));
    for (size_t j = i + 1; j < schema_expect_nfunctions(e); j++) {
      const char *n2, *a2;
      schema_expect_function(e, j, &n2, &a2, NULL, NULL, NULL);
      assert_false(strcmp(name, n2) == 0 && strcmp(args, a2) == 0);
    }
  }
  /* The functions the probe replaced, with the types oidvectortypes() prints. */
  assert_true(find_fn(e, "joint_case_has_unit", "bigint, bigint") >= 0);
  assert_true(find_fn(e, "joint_cases_of_unit", "bigint") >= 0);
  assert_true(find_fn(e, "clue_read_reporter", "bigint, bigint, bigint") >= 0);
  assert_true(find_fn(e, "audit_events_refuse_change", "") >= 0);
  /* Dropped, or replaced by another argument list. */
  assert_int_equal(find_fn(e, "case_check_participant", "joint_cases, bigint, text"), -1);
  assert_int_equal(find_fn(e, "clue_lock_seen_owner", "bigint, bigint"), -1);
  {
    /* The last definition wins: joint_case_has_unit's body is its last file's. */
    int i = find_fn(e, "joint_case_has_unit", "bigint, bigint");
    const char *file;
    schema_expect_function(e, (size_t)i, NULL, NULL, NULL, NULL, &file);
    for (size_t k = 0; k < db_embedded_nmigrations; k++)
      if (strcmp(db_embedded_migrations[k].name, file) > 0)
        assert_null(strstr(db_embedded_migrations[k].sql, "FUNCTION joint_case_has_unit("));
  }
  schema_expect_free(e);
}

static void test_the_triggers_of_the_migrations(void **state) {
  schema_expect_t *e = embedded();
  const char *func;
  int type, i;
  char en;
  (void)state;

  assert_int_equal(schema_expect_ntriggers(e), 12);
  i = find_trg(e, "audit_events", "audit_events_append_only");
  assert_true(i >= 0);
  schema_expect_trigger(e, (size_t)i, NULL, NULL, &func, &type, &en);
  assert_string_equal(func, "audit_events_refuse_change");
  assert_int_equal(type, 2 | 8 | 16 | 32); /* BEFORE UPDATE OR DELETE OR TRUNCATE, statement */
  assert_int_equal(en, 'O');
  i = find_trg(e, "tokens", "tokens_revocation_notify");
  assert_true(i >= 0);
  schema_expect_trigger(e, (size_t)i, NULL, NULL, &func, &type, &en);
  assert_string_equal(func, "auth_revocation_notify");
  assert_int_equal(type, 1 | 16); /* AFTER UPDATE OF revoked_at, row */
  i = find_trg(e, "recusals", "recusals_mark");
  assert_true(i >= 0);
  schema_expect_trigger(e, (size_t)i, NULL, NULL, &func, &type, &en);
  assert_string_equal(func, "clue_mark_cooperation");
  assert_int_equal(type, 1 | 4);
  i = find_trg(e, "audit_events", "audit_events_require_sync");
  assert_true(i >= 0);
  schema_expect_trigger(e, (size_t)i, NULL, NULL, &func, &type, &en);
  assert_int_equal(type, 4); /* AFTER INSERT, statement, WHEN (...) */
  schema_expect_free(e);
}

/* ---- synthetic migrations -------------------------------------------------------------- */

static const char m1[] =
    "-- CREATE FUNCTION in_a_comment() RETURNS int AS $$ x $$;\n"
    "/* CREATE FUNCTION in_a_block_comment() /* nested */ AS $$ y $$; */\n"
    "CREATE TABLE t (id int, note text DEFAULT 'CREATE FUNCTION in_a_string() AS $$ z $$;');\n"
    "CREATE FUNCTION f(p_a bigint, p_b int DEFAULT 3, OUT p_c text) RETURNS text\n"
    "  LANGUAGE sql STABLE AS $$ SELECT 'one; two' $$;\n"
    "CREATE FUNCTION g(integer[], \"Quoted\" boolean) RETURNS int LANGUAGE plpgsql AS $body$\n"
    "BEGIN RETURN $$ inner $$; END $body$;\n"
    "CREATE FUNCTION t_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;\n"
    "CREATE TRIGGER t_keep BEFORE UPDATE OR DELETE ON t FOR EACH ROW EXECUTE FUNCTION t_refuse();\n"
    "CREATE TRIGGER t_gone AFTER INSERT ON t EXECUTE PROCEDURE t_refuse();\n"
    "CREATE FUNCTION other.h() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql;\n"
    "DO $$ BEGIN EXECUTE 'CREATE FUNCTION dynamic() RETURNS int AS $q$ SELECT 1 $q$ LANGUAGE sql'; "
    "END $$;\n";

static const char m2[] =
    "CREATE OR REPLACE FUNCTION f(p_a int8, p_b integer) RETURNS text LANGUAGE sql AS $$ two $$;\n"
    "ALTER FUNCTION f SET search_path = public, pg_temp;\n"
    "REVOKE EXECUTE ON FUNCTION f(bigint, int) FROM PUBLIC;\n"
    "DROP FUNCTION g(int[], boolean);\n"
    "CREATE FUNCTION g(text) RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;\n"
    "DROP TRIGGER t_gone ON t;\n"
    "ALTER TABLE ONLY t DISABLE TRIGGER t_keep";

static schema_expect_t *synthetic(void) {
  schema_expect_t *e = schema_expect_new();
  char err[400] = "";

  assert_non_null(e);
  if (schema_expect_add(e, "0001_a.sql", m1, strlen(m1), err, sizeof(err)) != 0 ||
      schema_expect_add(e, "0002_b.sql", m2, strlen(m2), err, sizeof(err)) != 0)
    fail_msg("%s", err);
  return e;
}

static void sha_hex(const char *s, char out[65]) {
  uint8_t md[SHA256_LEN];
  assert_int_equal(sha256_digest(s, strlen(s), md), 0);
  for (int i = 0; i < SHA256_LEN; i++)
    snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void test_statements_are_followed(void **state) {
  schema_expect_t *e = synthetic();
  const char *body, *file, *func;
  int type;
  char en;
  (void)state;

  assert_int_equal(schema_expect_creates(e), 5); /* other.h is not public's */
  assert_int_equal(schema_expect_nfunctions(e), 3);
  assert_int_equal(schema_expect_version(e), 2);
  assert_true(find_fn(e, "f", "bigint, integer") >= 0);
  schema_expect_function(e, (size_t)find_fn(e, "f", "bigint, integer"), NULL, NULL, &body, NULL,
                         &file);
  assert_string_equal(body, " two ");
  assert_string_equal(file, "0002_b.sql");
  assert_int_equal(find_fn(e, "g", "integer[], boolean"), -1);
  assert_true(find_fn(e, "g", "text") >= 0);
  assert_true(find_fn(e, "t_refuse", "") >= 0);
  assert_int_equal(find_fn(e, "h", ""), -1);
  assert_int_equal(find_fn(e, "dynamic", ""), -1);
  assert_int_equal(schema_expect_ntriggers(e), 1);
  schema_expect_trigger(e, 0, NULL, NULL, &func, &type, &en);
  assert_string_equal(func, "t_refuse");
  assert_int_equal(type, 1 | 2 | 8 | 16);
  assert_int_equal(en, 'D');
  schema_expect_free(e);
}

static void test_what_cannot_be_followed_is_an_error(void **state) {
  static const char *const bad[] = {
      "CREATE FUNCTION q() RETURNS int LANGUAGE sql AS 'SELECT 1';",
      "CREATE FUNCTION q() RETURNS int LANGUAGE sql RETURN 1;",
      "CREATE FUNCTION q() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql;"
      " ALTER FUNCTION q() RENAME TO r;",
      "DROP FUNCTION never_made(bigint);",
      "CREATE FUNCTION q() RETURNS int AS $$ SELECT 1 LANGUAGE sql;",
      "CREATE FUNCTION q() RETURNS int LANGUAGE sql SET search_path FROM CURRENT AS $$ SELECT 1 "
      "$$;",
      "CREATE FUNCTION q() RETURNS int AS $$ SELECT 1 $$;",
      "CREATE FUNCTION q() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;"
      " ALTER FUNCTION q() SET search_path = a.b;",
      /* Two RETURNS or two LANGUAGE clauses: PostgreSQL refuses them ("conflicting or
       * redundant options"), and the second must not be taken over the first (nor leak it). */
      "CREATE FUNCTION f() RETURNS int RETURNS text LANGUAGE sql AS $$ SELECT 1 $$;",
      "CREATE FUNCTION f() RETURNS int LANGUAGE sql LANGUAGE plpgsql AS $$ SELECT 1 $$;",
      "CREATE FUNCTION f() RETURNS TABLE (a int) RETURNS SETOF int LANGUAGE sql AS $$ SELECT 1 $$;",
      /* A trigger's name that is not a name. */
      "CREATE TRIGGER t1 AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION f();\n"
      "ALTER TABLE x DISABLE TRIGGER 42;",
      "CREATE TRIGGER t1 AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION f();\n"
      "ALTER TABLE x ENABLE ALWAYS TRIGGER 'x';",
      /* A rule on a table of public: the check reports every one. */
      "CREATE TABLE x (id int);\n"
      "CREATE RULE x_quiet AS ON UPDATE TO x DO INSTEAD NOTHING;",
      "CREATE OR REPLACE RULE x_quiet AS ON DELETE TO public.x DO INSTEAD NOTHING;",
  };
  (void)state;

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    schema_expect_t *e = schema_expect_new();
    char err[400] = "";
    assert_int_equal(schema_expect_add(e, "0009_bad.sql", bad[i], strlen(bad[i]), err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "0009_bad.sql"));
    schema_expect_free(e);
  }
  /* A rule on another schema's table is not clued's concern. */
  {
    static const char other[] = "CREATE RULE y_quiet AS ON UPDATE TO other.y DO INSTEAD NOTHING;";
    schema_expect_t *e = schema_expect_new();
    char err[400] = "";
    assert_int_equal(schema_expect_add(e, "0009_ok.sql", other, strlen(other), err, sizeof(err)),
                     0);
    schema_expect_free(e);
  }
}

static size_t diffs(const schema_expect_t *e, const schema_row_t *rows, size_t n,
                    schema_diff_t **d) {
  size_t nd = 0;
  long long newer;
  assert_int_equal(schema_compare(e, rows, n, d, &nd, &newer), 0);
  assert_int_equal(newer, 0);
  return nd;
}

static void test_compare(void **state) {
  schema_expect_t *e = synthetic();
  char sf[65], sg[65], st[65], bad[65];
  schema_diff_t *d = NULL;
  size_t n;
  (void)state;

  sha_hex(" two ", sf);
  sha_hex(" SELECT 2 ", sg);
  sha_hex(" BEGIN RETURN NULL; END ", st);
  sha_hex(" SELECT true ", bad);
  {
    schema_row_t rows[] = {
        {'f', "f", "bigint, integer", "f(bigint,integer)", sf, 0, 0, "vuffff sql text",
         "search_path=public, pg_temp"},
        {'f', "g", "text", "g(text)", sg, 0, 0, "vuffff sql integer", NULL},
        {'f', "t_refuse", "", "t_refuse()", st, 0, 0, "vuffff plpgsql trigger", NULL},
        {'f', "an_extension_function", "bigint", "an_extension_function(bigint)", bad, 0, 0,
         "itttts c void", "work_mem=1GB"},
        {'t', "t_keep", "t", NULL, "t_refuse", 1 | 2 | 8 | 16, 'D', NULL, NULL},
        {'t', "someone_elses", "t", NULL, "an_extension_function", 4, 'O', "id", "(new.id > 0)"},
        {'v', NULL, "2", NULL, NULL, 0, 0, NULL, NULL},
    };
    assert_int_equal(diffs(e, rows, 7, &d), 0);
    schema_diffs_free(d, 0);

    /* Replaced, overloaded, trigger enabled again (the migrations disabled it). */
    rows[0].hash = bad;
    rows[3].name = "g";
    rows[3].args = "integer";
    rows[3].ident = "g(integer)";
    rows[4].enabled = 'O';
    n = diffs(e, rows, 7, &d);
    assert_int_equal(n, 3);
    assert_string_equal(d[0].message,
                        "function g(integer) is not defined by the migrations, but has the name "
                        "of clued's g(text) of 0002_b.sql: an overload that may capture its calls");
    assert_string_equal(d[0].repair, "DROP FUNCTION g(integer);\n");
    assert_string_equal(d[1].message, "function f(bigint, integer) differs from its definition "
                                      "in 0002_b.sql: it was replaced outside migrations");
    assert_non_null(strstr(d[1].repair, "CREATE OR REPLACE FUNCTION f(p_a int8"));
    assert_non_null(strstr(d[1].repair, "ALTER FUNCTION f SET search_path"));
    assert_non_null(strstr(d[1].repair, "REVOKE EXECUTE ON FUNCTION f(bigint, int)"));
    assert_string_equal(d[2].message, "trigger t_keep on t of 0001_a.sql is enabled, but its "
                                      "migrations leave it disabled");
    assert_string_equal(d[2].repair, "ALTER TABLE t DISABLE TRIGGER t_keep;\n");
    schema_diffs_free(d, n);

    /* Missing function, trigger calling another function on other events. */
    rows[0].hash = sf;
    rows[3].name = "unrelated";
    rows[1].kind = 'x';
    rows[4].hash = "evil.t_refuse()";
    rows[4].tgtype = 1 | 4;
    rows[4].enabled = 'D';
    rows[6].args = "3";
    {
      long long newer;
      assert_int_equal(schema_compare(e, rows, 7, &d, &n, &newer), 0);
      assert_int_equal(newer, 3);
    }
    assert_int_equal(n, 2);
    assert_string_equal(d[0].message, "function g(text) of 0002_b.sql is missing: it was dropped "
                                      "outside migrations");
    assert_string_equal(d[1].message,
                        "trigger t_keep on t differs from its definition in 0001_a.sql: it calls "
                        "evil.t_refuse() instead of t_refuse, and fires AFTER INSERT FOR EACH ROW "
                        "instead of BEFORE UPDATE OR DELETE FOR EACH ROW: it was replaced outside "
                        "migrations");
    assert_non_null(strstr(d[1].repair, "DROP TRIGGER t_keep ON t;\nCREATE TRIGGER t_keep"));
    assert_non_null(strstr(d[1].repair, "ALTER TABLE t DISABLE TRIGGER t_keep;"));
    schema_diffs_free(d, n);

    /* A trigger gone. */
    rows[4].kind = 'x';
    rows[1].kind = 'f';
    n = diffs(e, rows, 6, &d);
    assert_int_equal(n, 1);
    assert_string_equal(d[0].message, "trigger t_keep on t of 0001_a.sql is missing: it was "
                                      "dropped outside migrations");
    schema_diffs_free(d, n);
  }
  schema_expect_free(e);
}

/* A rule on a table of public, and EXECUTE on a SECURITY DEFINER function for a role other
 * than its owner and clued_runtime: differences whatever the migrations say, with the SQL
 * that drops or revokes them. */
static void test_rules_and_definer_grants_are_compared(void **state) {
  static const char m5[] =
      "CREATE TABLE u (id bigint);\n"
      "CREATE FUNCTION w(p bigint) RETURNS void LANGUAGE plpgsql SECURITY DEFINER\n"
      "  SET search_path = public, pg_temp AS $$ BEGIN END $$;\n"
      "REVOKE EXECUTE ON FUNCTION w(bigint) FROM PUBLIC;\n"
      "CREATE FUNCTION r(p bigint) RETURNS void LANGUAGE plpgsql AS $$ BEGIN END $$;\n";
  schema_expect_t *e = schema_expect_new();
  char err[400] = "", sb[65];
  schema_diff_t *d = NULL;
  size_t n;
  (void)state;

  if (schema_expect_add(e, "0005_e.sql", m5, strlen(m5), err, sizeof(err)) != 0)
    fail_msg("%s", err);
  sha_hex(" BEGIN END ", sb);
  {
    schema_row_t rows[] = {
        {'f', "w", "bigint", "w(bigint)", sb, 0, 0, "vuftff plpgsql void",
         "search_path=public, pg_temp"},
        {'f', "r", "bigint", "r(bigint)", sb, 0, 0, "vuffff plpgsql void", NULL},
        /* PUBLIC may call r(), which runs with its caller's rights: as PostgreSQL makes it. */
        {'g', "r", "bigint", "r(bigint)", "PUBLIC", 0, 0, NULL, NULL},
        {'g', "someone_elses", "", "someone_elses()", "PUBLIC", 0, 0, NULL, NULL},
        {'r', "u_quiet", "u", "u_quiet ON u", NULL, 0, 0, "ON UPDATE DO INSTEAD", NULL},
        {'g', "w", "bigint", "w(bigint)", "PUBLIC", 0, 0, NULL, NULL},
        {'g', "w", "bigint", "w(bigint)", "\"Odd\"", 0, 0, "reporting", NULL},
    };

    assert_int_equal(diffs(e, rows, 4, &d), 0);
    schema_diffs_free(d, 0);
    n = diffs(e, rows, 7, &d);
    assert_int_equal(n, 3);
    assert_string_equal(d[0].message,
                        "rule u_quiet on u (ON UPDATE DO INSTEAD) is not defined by the "
                        "migrations, which define no rule: it rewrites what clued and its "
                        "triggers do to that table, and was added outside migrations");
    assert_string_equal(d[0].repair, "DROP RULE u_quiet ON u;\n");
    assert_string_equal(d[1].message,
                        "function w(bigint) of 0005_e.sql runs with its owner's rights (SECURITY "
                        "DEFINER) and may be called by PUBLIC: EXECUTE was granted outside "
                        "migrations, which let only its owner and clued_runtime call it");
    assert_string_equal(d[1].repair, "REVOKE EXECUTE ON FUNCTION w(bigint) FROM PUBLIC CASCADE;\n");
    assert_string_equal(d[2].message,
                        "function w(bigint) of 0005_e.sql runs with its owner's rights (SECURITY "
                        "DEFINER) and may be called by \"Odd\" (granted by reporting): EXECUTE "
                        "was granted outside migrations, which let only its owner and "
                        "clued_runtime call it");
    assert_string_equal(d[2].repair,
                        "REVOKE GRANT OPTION FOR EXECUTE ON FUNCTION w(bigint) FROM reporting "
                        "CASCADE;\nREVOKE EXECUTE ON FUNCTION w(bigint) FROM \"Odd\" CASCADE;\n");
    schema_diffs_free(d, n);
  }
  schema_expect_free(e);
}

/* ---- attributes and conditions --------------------------------------------------------- */

static const char m3[] =
    "CREATE FUNCTION a(p bigint) RETURNS SETOF bigint LANGUAGE plpgsql STABLE STRICT\n"
    "  SECURITY DEFINER SET search_path = public, pg_temp SET work_mem = '32MB' SET jit = off\n"
    "  AS $$ BEGIN RETURN; END $$;\n"
    "CREATE FUNCTION b() RETURNS TABLE (id bigint) LANGUAGE sql IMMUTABLE PARALLEL SAFE LEAKPROOF\n"
    "  RETURNS NULL ON NULL INPUT COST 10 AS $$ SELECT 1::bigint $$;\n"
    "CREATE FUNCTION c(x int) RETURNS TABLE (id bigint, name text) AS $$ SELECT 1::bigint, "
    "''::text $$\n"
    "  LANGUAGE 'SQL' SET search_path TO \"$user\", 'Odd Schema' SET statement_timeout = 010;\n"
    "CREATE FUNCTION d() RETURNS timestamptz LANGUAGE sql AS $$ SELECT now() $$;\n"
    "ALTER FUNCTION d() STABLE SET search_path = public;\n"
    "ALTER FUNCTION d SECURITY DEFINER SET lock_timeout = 5 SET search_path = pg_catalog;\n"
    "ALTER FUNCTION d() RESET lock_timeout;\n"
    "CREATE FUNCTION e() RETURNS int[] LANGUAGE sql SECURITY DEFINER SET jit = off AS $$ SELECT "
    "'{}'::int[] $$;\n"
    "ALTER FUNCTION e() RESET ALL;\n"
    "CREATE OR REPLACE FUNCTION a(p bigint) RETURNS SETOF bigint LANGUAGE plpgsql\n"
    "  SET search_path = public AS $$ BEGIN RETURN; END $$;\n"
    "ALTER FUNCTION a(bigint) CALLED ON NULL INPUT SET search_path TO DEFAULT OWNER TO someone;\n"
    "CREATE TABLE u (id bigint, revoked_at timestamptz, disabled boolean);\n"
    "CREATE FUNCTION u_note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;\n"
    "CREATE TRIGGER u_revoked AFTER UPDATE OF revoked_at, Disabled ON u FOR EACH ROW\n"
    "  WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL AND NOT OLD.disabled\n"
    "        AND current_setting('x.y', true) != 'on') EXECUTE FUNCTION u_note();\n"
    "CREATE TRIGGER u_any AFTER INSERT ON u EXECUTE FUNCTION u_note();\n";

static void attrs_of(const schema_expect_t *e, const char *name, const char *args,
                     const char *attrs, const char *config) {
  const char *a, *c;
  int i = find_fn(e, name, args);

  if (i < 0)
    fail_msg("%s(%s) not found", name, args);
  schema_expect_function_attrs(e, (size_t)i, &a, &c);
  assert_string_equal(a, attrs);
  assert_string_equal(c, config);
}

static void test_function_attributes_are_followed(void **state) {
  schema_expect_t *e = schema_expect_new();
  char err[400] = "";
  const char *cols, *when;
  (void)state;

  if (schema_expect_add(e, "0003_c.sql", m3, strlen(m3), err, sizeof(err)) != 0)
    fail_msg("%s", err);
  /* CREATE OR REPLACE sets every attribute again; ALTER FUNCTION changes what it names. */
  attrs_of(e, "a", "bigint", "vuffft plpgsql bigint", "");
  attrs_of(e, "b", "", "istftt sql bigint", "");
  attrs_of(e, "c", "integer", "vuffft sql record",
           "search_path=\"$user\", \"Odd Schema\"\nstatement_timeout=10");
  attrs_of(e, "d", "", "suftff sql timestamp with time zone", "search_path=pg_catalog");
  attrs_of(e, "e", "", "vuftff sql integer[]", "");
  /* The trigger's UPDATE OF columns, sorted, and its condition as written. */
  schema_expect_trigger_when(e, (size_t)find_trg(e, "u", "u_revoked"), &cols, &when);
  assert_string_equal(cols, "disabled, revoked_at");
  assert_non_null(strstr(when, "OLD.revoked_at IS NULL AND"));
  schema_expect_trigger_when(e, (size_t)find_trg(e, "u", "u_any"), &cols, &when);
  assert_string_equal(cols, "");
  assert_null(when);
  schema_expect_free(e);

  /* The built-in migrations: audit_append() is SECURITY DEFINER with a fixed search_path,
   * audit_append_many() keeps 0026's planner settings, a WHEN of 0007 is found. */
  e = embedded();
  for (size_t i = 0; i < schema_expect_nfunctions(e); i++) {
    const char *name, *a, *c;
    schema_expect_function(e, i, &name, NULL, NULL, NULL, NULL);
    schema_expect_function_attrs(e, i, &a, &c);
    if (strcmp(name, "audit_append") == 0 || strcmp(name, "audit_append_many") == 0) {
      assert_int_equal(a[3], 't');
      assert_non_null(strstr(c, "search_path=public, pg_temp"));
    }
    if (strcmp(name, "audit_append_many") == 0)
      assert_non_null(strstr(c, "enable_seqscan=off"));
  }
  schema_expect_trigger_when(e, (size_t)find_trg(e, "tokens", "tokens_revocation_notify"), &cols,
                             &when);
  assert_string_equal(cols, "revoked_at");
  assert_non_null(when);
  schema_expect_free(e);
}

static void test_attributes_and_conditions_are_compared(void **state) {
  schema_expect_t *e = schema_expect_new();
  char err[400] = "", sa[65], sn[65];
  schema_diff_t *d = NULL;
  size_t n;
  (void)state;

  sha_hex(" BEGIN RETURN; END ", sa);
  sha_hex(" BEGIN RETURN NULL; END ", sn);
  {
    /* What PostgreSQL 15 has after these statements. */
    static const char when_as_printed[] =
        "((old.revoked_at IS NULL) AND (new.revoked_at IS NOT NULL) AND (NOT old.disabled)) "
        "AND (current_setting('x.y'::text, true) <> 'on'::text)";
    schema_row_t rows[] = {
        {'f', "a", "bigint", "a(bigint)", sa, 0, 0, "vuffft plpgsql bigint", NULL},
        {'f', "u_note", "", "u_note()", sn, 0, 0, "vuffff plpgsql trigger", NULL},
        {'t', "u_revoked", "u", NULL, "u_note", 1 | 16, 'O', "disabled, revoked_at",
         when_as_printed},
        {'t', "u_any", "u", NULL, "u_note", 4, 'O', NULL, NULL},
    };
    static const char m4[] =
        "CREATE FUNCTION a(p bigint) RETURNS SETOF bigint LANGUAGE plpgsql AS $$ BEGIN RETURN; END "
        "$$;\n"
        "CREATE TABLE u (id bigint, revoked_at timestamptz, disabled boolean);\n"
        "CREATE FUNCTION u_note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END "
        "$$;\n"
        "CREATE TRIGGER u_revoked AFTER UPDATE OF revoked_at, Disabled ON u FOR EACH ROW\n"
        "  WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL AND NOT OLD.disabled\n"
        "        AND current_setting('x.y', true) != 'on') EXECUTE FUNCTION u_note();\n"
        "CREATE TRIGGER u_any AFTER INSERT ON u EXECUTE FUNCTION u_note();\n";

    if (schema_expect_add(e, "0004_d.sql", m4, strlen(m4), err, sizeof(err)) != 0)
      fail_msg("%s", err);
    assert_int_equal(diffs(e, rows, 4, &d), 0);
    schema_diffs_free(d, 0);

    /* ALTER FUNCTION a(bigint) SET search_path = evil, public SECURITY DEFINER STRICT */
    rows[0].attrs = "vuttff plpgsql bigint";
    rows[0].config = "search_path=evil, public";
    n = diffs(e, rows, 4, &d);
    assert_int_equal(n, 1);
    assert_string_equal(
        d[0].message, "function a(bigint) differs from its definition in 0004_d.sql: it RETURNS "
                      "bigint instead of SETOF bigint, is STRICT instead of CALLED ON NULL INPUT, "
                      "is SECURITY DEFINER instead of SECURITY INVOKER, and runs with SET "
                      "search_path=evil, public instead of no SET: it was altered outside "
                      "migrations");
    /* Another return type: dropped first, as CREATE OR REPLACE cannot change it. */
    assert_non_null(strstr(d[0].repair, "DROP FUNCTION a(bigint);\nCREATE OR REPLACE FUNCTION a("));
    schema_diffs_free(d, n);
    rows[0].attrs = "sufftt sql bigint";
    rows[0].config = NULL;
    n = diffs(e, rows, 4, &d);
    assert_int_equal(n, 1);
    assert_string_equal(d[0].message,
                        "function a(bigint) differs from its definition in 0004_d.sql: it is "
                        "LANGUAGE sql instead of plpgsql, is STABLE instead of VOLATILE, and is "
                        "LEAKPROOF instead of NOT LEAKPROOF: it was altered outside migrations");
    assert_string_equal(d[0].repair, "CREATE OR REPLACE FUNCTION a(p bigint) RETURNS SETOF bigint "
                                     "LANGUAGE plpgsql AS $$ BEGIN RETURN; END $$;\n");
    schema_diffs_free(d, n);
    rows[0].attrs = "vuffft plpgsql bigint";
    /* Replaced with other attributes but the same return type: not dropped, as a trigger that
     * calls it would refuse the DROP. */
    rows[1].hash = sa;
    rows[1].attrs = "suffff plpgsql trigger";
    n = diffs(e, rows, 4, &d);
    assert_int_equal(n, 1);
    assert_string_equal(d[0].message, "function u_note() differs from its definition in "
                                      "0004_d.sql: it was replaced outside migrations");
    assert_null(strstr(d[0].repair, "DROP"));
    schema_diffs_free(d, n);
    rows[1].hash = sn;
    rows[1].attrs = "vuffff plpgsql trigger";

    /* A WHEN added, one taken away or changed, other UPDATE OF columns. */
    rows[3].config = "(false)";
    rows[2].config = NULL;
    n = diffs(e, rows, 4, &d);
    assert_int_equal(n, 2);
    assert_string_equal(
        d[0].message, "trigger u_revoked on u differs from its definition in 0004_d.sql: it fires "
                      "always instead of WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT "
                      "NULL AND NOT OLD.disabled AND current_setting('x.y', true) != 'on'): it "
                      "was replaced outside migrations");
    assert_string_equal(d[1].message,
                        "trigger u_any on u differs from its definition in 0004_d.sql: it fires "
                        "only WHEN (false) instead of always: it was replaced outside migrations");
    assert_non_null(strstr(d[1].repair, "DROP TRIGGER u_any ON u;\nCREATE TRIGGER u_any"));
    schema_diffs_free(d, n);
    rows[3].config = NULL;
    rows[2].config = "((old.revoked_at IS NULL) AND (new.revoked_at IS NOT NULL))";
    rows[2].attrs = "revoked_at";
    n = diffs(e, rows, 4, &d);
    assert_int_equal(n, 1);
    assert_non_null(strstr(d[0].message,
                           ": it fires on UPDATE OF revoked_at instead of disabled, "
                           "revoked_at, and fires WHEN ((old.revoked_at IS NULL) "
                           "AND (new.revoked_at IS NOT NULL)) instead of WHEN (OLD."));
    schema_diffs_free(d, n);
  }
  schema_expect_free(e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_function_of_the_migrations_has_its_body),
      cmocka_unit_test(test_the_triggers_of_the_migrations),
      cmocka_unit_test(test_statements_are_followed),
      cmocka_unit_test(test_what_cannot_be_followed_is_an_error),
      cmocka_unit_test(test_compare),
      cmocka_unit_test(test_rules_and_definer_grants_are_compared),
      cmocka_unit_test(test_function_attributes_are_followed),
      cmocka_unit_test(test_attributes_and_conditions_are_compared),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
