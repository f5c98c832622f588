"""clued checks that the database's functions and triggers are those its migrations define.

A superuser replaces one of clued's functions (tamper3 F2: joint_case_has_unit widened,
clue_read_reporter without its audit event), adds an overload of one, drops a trigger and
disables another, alters a function's attributes (SET search_path, SECURITY DEFINER, STRICT),
adds a WHEN to a trigger or changes one, adds a rule to a table, or grants EXECUTE on a SECURITY
DEFINER function to PUBLIC or another role. A running clued finds each within --schema-check-interval: an ERROR line
naming it and what differs, clued_schema_drift counts them, Health says NOT_SERVING and every
call that needs a token is refused with UNAVAILABLE. `clued migrate --repair` (the schema's
owner) restores them from the migrations, and the server serves again on its own. serve
refuses to start on such a database, unless --allow-schema-drift. A freshly migrated database
has no difference at all.
"""

import os
import re
import subprocess
import sys

import grpc
import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402
from test_metrics import MetricsClued, scrape, value  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
Code = grpc.StatusCode


def metric(srv, name):
    return value(scrape(srv.metrics_addr), name)


def health(srv):
    with grpc.insecure_channel(srv.addr) as ch:
        h = S.health_pb2_grpc.HealthStub(ch)
        return h.Check(S.health_pb2.HealthCheckRequest(), timeout=5).status


SERVING = S.health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = S.health_pb2.HealthCheckResponse.NOT_SERVING

WIDENED = """CREATE OR REPLACE FUNCTION joint_case_has_unit(p_case bigint, p_unit bigint) RETURNS boolean
             LANGUAGE sql STABLE AS $$ SELECT true $$"""
UNLOGGED_READ = """CREATE OR REPLACE FUNCTION clue_read_reporter(p_actor_user bigint, p_actor_unit bigint,
                   p_clue bigint) RETURNS SETOF clue_reporters LANGUAGE sql AS $$
                   SELECT rp.* FROM clue_reporters rp JOIN clues c ON c.id = rp.clue_id WHERE rp.clue_id = p_clue $$"""
OVERLOAD = """CREATE FUNCTION joint_case_has_unit(p_case integer, p_unit integer) RETURNS boolean
              LANGUAGE sql STABLE AS $$ SELECT true $$"""


def setup():
    ctx = world.served(args=["--metrics-listen", "127.0.0.1:0", "--schema-check-interval", "200ms"],
                       clued=MetricsClued)
    ctx.clue = ctx.w.G1.member.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="线索", summary="反映某某违规收受礼金",
        source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="张三"),
        host_unit="市发展改革委", reporter=pb.ReporterContact(name="举报人", phone="13700000000")),
        timeout=20)
    return ctx


def teardown(ctx):
    world.unserve(ctx)


def sql(ctx, *stmts):
    with ctx.db.cursor() as cur:
        for s in stmts:
            cur.execute(s)
        return cur.fetchall() if cur.description else None


def prosrc(ctx, fn):
    return sql(ctx, f"SELECT prosrc FROM pg_proc WHERE oid = '{fn}'::regprocedure")[0][0]


def lines_since(srv, mark):
    return srv.output()[mark:]


def refused(ctx):
    """A call that needs a token is refused, saying how the schema is restored; Health says
    NOT_SERVING and still answers."""
    harness.expect_status(Code.UNAVAILABLE, ctx.w.G1.leader.clue.ListClues, pb.ListCluesRequest(), timeout=10,
                          details_has=("clued migrate --repair",))
    assert health(ctx.srv) == NOT_SERVING


def detected(ctx, mark, *messages, drift):
    for m in messages:
        harness.wait_for(lambda: f"schema check: {m}" in lines_since(ctx.srv, mark), timeout=15,
                         what=m)
    # The server's lines reach the test through a pipe and a reader thread: wait for each.
    harness.wait_for(lambda: "refusing calls (UNAVAILABLE, Health NOT_SERVING)" in lines_since(ctx.srv, mark),
                     timeout=15, what="refusing calls")
    harness.wait_for(lambda: health(ctx.srv) == NOT_SERVING, timeout=15, what="NOT_SERVING")
    assert metric(ctx.srv, "clued_schema_drift") == drift
    refused(ctx)


def repaired(ctx, mark, *messages):
    r = ctx.srv.run("migrate", "--repair")
    for m in messages:
        assert f"repairing: {m}" in r.stderr, r.stderr
    assert "repaired: clued's functions and triggers are what the migrations define" in r.stderr, r.stderr
    harness.wait_for(lambda: health(ctx.srv) == SERVING, timeout=15, what="SERVING again")
    harness.wait_for(lambda: "are what its migrations define again: serving" in lines_since(ctx.srv, mark),
                     timeout=15, what="serving again, logged")
    assert metric(ctx.srv, "clued_schema_drift") == 0
    ctx.w.G1.leader.clue.ListClues(pb.ListCluesRequest(), timeout=10)
    # Nothing left to repair.
    r = ctx.srv.run("migrate", "--repair")
    assert "nothing to repair" in r.stderr and "repairing" not in r.stderr, r.stderr


def test_a_fresh_database_matches(ctx):
    assert "schema check" not in ctx.srv.output()
    harness.wait_for(lambda: (metric(ctx.srv, "clued_schema_checks_total") or 0) >= 2, timeout=15,
                     what="two checks")
    assert metric(ctx.srv, "clued_schema_drift") == 0
    assert health(ctx.srv) == SERVING
    r = ctx.srv.run("migrate", "--repair")
    assert "nothing to repair" in r.stderr, r.stderr


def test_a_replaced_function_is_found_and_repaired(ctx):
    before = prosrc(ctx, "joint_case_has_unit(bigint, bigint)")
    mark = len(ctx.srv.output())
    sql(ctx, WIDENED)
    msg = re.escape("function joint_case_has_unit(bigint, bigint) differs from its definition in ")
    detected(ctx, mark, "function joint_case_has_unit(bigint, bigint) differs from its definition in", drift=1)
    assert re.search(msg + r"00\d\d_\w+\.sql: it was replaced outside migrations", ctx.srv.output())
    repaired(ctx, mark, "function joint_case_has_unit(bigint, bigint) differs")
    assert prosrc(ctx, "joint_case_has_unit(bigint, bigint)") == before


def test_an_unlogged_reporter_read_is_found(ctx):
    before = prosrc(ctx, "clue_read_reporter(bigint, bigint, bigint)")
    mark = len(ctx.srv.output())
    sql(ctx, UNLOGGED_READ)
    detected(ctx, mark, "function clue_read_reporter(bigint, bigint, bigint) differs", drift=1)
    repaired(ctx, mark, "function clue_read_reporter(bigint, bigint, bigint) differs")
    assert prosrc(ctx, "clue_read_reporter(bigint, bigint, bigint)") == before
    # The read is logged again.
    n = sql(ctx, "SELECT count(*) FROM audit_events WHERE action = 'clue.reporter_read'")[0][0]
    c = ctx.w.G1.leader.clue.GetClue(pb.GetClueRequest(clue_id=ctx.clue.id), timeout=20)
    assert c.reporter.phone == "13700000000"
    assert sql(ctx, "SELECT count(*) FROM audit_events WHERE action = 'clue.reporter_read'")[0][0] == n + 1


def test_an_overload_is_found_and_dropped(ctx):
    mark = len(ctx.srv.output())
    sql(ctx, OVERLOAD)
    detected(ctx, mark, "function joint_case_has_unit(integer, integer) is not defined by the migrations, "
             "but has the name of clued's joint_case_has_unit(bigint, bigint) of", drift=1)
    repaired(ctx, mark, "function joint_case_has_unit(integer, integer) is not defined")
    assert sql(ctx, "SELECT count(*) FROM pg_proc WHERE proname = 'joint_case_has_unit'")[0][0] == 1


def test_a_dropped_and_a_disabled_trigger_are_found_and_restored(ctx):
    mark = len(ctx.srv.output())
    sql(ctx, "DROP TRIGGER recusals_mark ON recusals",
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
    detected(ctx, mark,
             "trigger recusals_mark on recusals of 0020_cooperation_flags.sql is missing: it was dropped "
             "outside migrations",
             "trigger audit_events_append_only on audit_events of 0001_identity.sql is disabled, but its "
             "migrations leave it enabled", drift=2)
    repaired(ctx, mark, "trigger recusals_mark on recusals", "trigger audit_events_append_only on audit_events")
    assert sql(ctx, "SELECT tgenabled FROM pg_trigger WHERE tgname = 'audit_events_append_only'") == [("O",)]
    assert sql(ctx, "SELECT count(*) FROM pg_trigger WHERE tgname = 'recusals_mark'") == [(1,)]
    # The append-only rule holds again.
    try:
        sql(ctx, "DELETE FROM audit_events WHERE seq = 1")
    except psycopg2.Error:
        pass
    else:
        raise AssertionError("an audit event was deleted")


def test_a_trigger_replaced_with_other_events_is_found(ctx):
    mark = len(ctx.srv.output())
    sql(ctx, "DROP TRIGGER notes_append_only ON notes",
        "CREATE TRIGGER notes_append_only AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION notes_refuse_change()")
    detected(ctx, mark, "trigger notes_append_only on notes differs from its definition in 0005_cases.sql: it "
             "fires AFTER INSERT FOR EACH ROW instead of BEFORE UPDATE OR DELETE FOR EACH ROW", drift=1)
    repaired(ctx, mark, "trigger notes_append_only on notes differs")


def signature(ctx, fn):
    """fn's one overload of the most arguments, as the check names it: (regprocedure, "name(args)")."""
    return sql(ctx, "SELECT p.oid::regprocedure::text, p.proname || '(' || oidvectortypes(p.proargtypes) || ')'"
                    " FROM pg_proc p WHERE p.proname = %s AND p.pronamespace = 'public'::regnamespace"
                    " ORDER BY p.pronargs DESC LIMIT 1" % psycopg2.extensions.adapt(fn).getquoted().decode())[0]


def attributes(ctx, ident):
    return sql(ctx, f"SELECT prosecdef, proisstrict, provolatile, proconfig FROM pg_proc"
                    f" WHERE oid = '{ident}'::regprocedure")[0]


def test_a_search_path_set_on_a_function_is_found_and_repaired(ctx):
    # audit_append() runs with its owner's rights and search_path = public, pg_temp: with a
    # schema of the superuser's first, the tables and functions it names resolve there, whatever
    # its unchanged body says.
    ident, named = signature(ctx, "audit_append")
    before = attributes(ctx, ident)
    assert before[0] and before[3] == ["search_path=public, pg_temp"], before
    mark = len(ctx.srv.output())
    sql(ctx, f"ALTER FUNCTION {ident} SET search_path = evil, public")
    detected(ctx, mark, f"function {named} differs from its definition in", drift=1)
    assert re.search(re.escape(f"function {named} differs from its definition in ") + r"00\d\d_\w+\.sql: it runs "
                     r"with SET search_path=evil, public instead of SET search_path=public, pg_temp: it was "
                     r"altered outside migrations", ctx.srv.output()), lines_since(ctx.srv, mark)
    repaired(ctx, mark, f"function {named} differs")
    assert attributes(ctx, ident) == before


def test_security_definer_and_strict_are_found_and_repaired(ctx):
    # joint_case_has_unit() made SECURITY DEFINER runs with its owner's rights; clue_read_reporter()
    # made STRICT returns nothing, without running (and without its audit event), on a NULL
    # argument.
    has_unit = attributes(ctx, "joint_case_has_unit(bigint, bigint)")
    reporter = attributes(ctx, "clue_read_reporter(bigint, bigint, bigint)")
    assert not has_unit[0] and not reporter[1]
    mark = len(ctx.srv.output())
    sql(ctx, "ALTER FUNCTION joint_case_has_unit(bigint, bigint) SECURITY DEFINER",
        "ALTER FUNCTION clue_read_reporter(bigint, bigint, bigint) STRICT")
    detected(ctx, mark,
             "function joint_case_has_unit(bigint, bigint) differs from its definition in",
             "function clue_read_reporter(bigint, bigint, bigint) differs from its definition in", drift=2)
    out = lines_since(ctx.srv, mark)
    assert re.search(r"joint_case_has_unit\(bigint, bigint\) differs from its definition in 00\d\d_\w+\.sql: it is "
                     r"SECURITY DEFINER instead of SECURITY INVOKER: it was altered outside migrations", out), out
    assert re.search(r"clue_read_reporter\(bigint, bigint, bigint\) differs from its definition in 00\d\d_\w+\.sql: "
                     r"it is STRICT instead of CALLED ON NULL INPUT: it was altered outside migrations", out), out
    repaired(ctx, mark, "function joint_case_has_unit(bigint, bigint) differs",
             "function clue_read_reporter(bigint, bigint, bigint) differs")
    assert attributes(ctx, "joint_case_has_unit(bigint, bigint)") == has_unit
    assert attributes(ctx, "clue_read_reporter(bigint, bigint, bigint)") == reporter


def test_a_when_added_or_changed_on_a_trigger_is_found_and_repaired(ctx):
    # notes_append_only with a WHEN that never holds lets notes be changed; the revocation
    # notice with a condition that never holds lets a revoked token's stream go on.
    mark = len(ctx.srv.output())
    sql(ctx, "DROP TRIGGER notes_append_only ON notes",
        "CREATE TRIGGER notes_append_only BEFORE UPDATE OR DELETE ON notes FOR EACH ROW WHEN (OLD.id < 0)"
        " EXECUTE FUNCTION notes_refuse_change()",
        "DROP TRIGGER tokens_revocation_notify ON tokens",
        "CREATE TRIGGER tokens_revocation_notify AFTER UPDATE OF revoked_at ON tokens FOR EACH ROW"
        " WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NULL) EXECUTE FUNCTION auth_revocation_notify()")
    detected(ctx, mark,
             "trigger notes_append_only on notes differs from its definition in 0005_cases.sql: it fires only "
             "WHEN (old.id < 0) instead of always: it was replaced outside migrations",
             "trigger tokens_revocation_notify on tokens differs from its definition in 0007_stream_revocation.sql: "
             "it fires WHEN ((old.revoked_at IS NULL) AND (new.revoked_at IS NULL)) instead of WHEN "
             "(OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL): it was replaced outside migrations", drift=2)
    repaired(ctx, mark, "trigger notes_append_only on notes differs", "trigger tokens_revocation_notify on tokens")
    assert sql(ctx, "SELECT tgqual IS NULL FROM pg_trigger WHERE tgname = 'notes_append_only'") == [(True,)]
    assert "NEW.revoked_at IS NOT NULL" in sql(
        ctx, "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'tokens_revocation_notify'")[0][0].replace(
        "new.", "NEW.")


def test_a_rule_on_a_clue_table_is_found_and_dropped(ctx):
    # The rule swallows recusals_mark's UPDATE of clues.has_recusals without touching the
    # trigger: a recused member would go on reading the clue. No migration makes a rule.
    mark = len(ctx.srv.output())
    sql(ctx, "CREATE RULE keep_unmarked AS ON UPDATE TO clues"
             " WHERE new.has_recusals AND NOT old.has_recusals DO INSTEAD NOTHING")
    detected(ctx, mark, "rule keep_unmarked on clues (ON UPDATE DO INSTEAD) is not defined by the migrations, "
             "which define no rule", drift=1)
    repaired(ctx, mark, "rule keep_unmarked on clues")
    assert sql(ctx, "SELECT count(*) FROM pg_rules WHERE schemaname = 'public'") == [(0,)]


def execute_grantees(ctx, ident):
    return sorted(sql(ctx, f"SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END"
                           f" FROM pg_proc p, aclexplode(p.proacl) a WHERE p.oid = '{ident}'::regprocedure"
                           f" AND a.grantee <> p.proowner"))


def test_execute_granted_on_a_security_definer_function_is_found_and_revoked(ctx):
    # 0058 let only the owner and clued_runtime call the functions that append to the log with
    # the owner's rights. A grant to PUBLIC undoes it for every role that may connect; so does
    # one that clued_runtime, given the grant option, makes to a reporting role.
    append, append_named = signature(ctx, "audit_append")
    tree, tree_named = signature(ctx, "audit_tree_append")
    reader = f"schema_check_reader_{os.getpid()}"
    before = (execute_grantees(ctx, append), execute_grantees(ctx, tree))
    assert before == ([("clued_runtime",)], [("clued_runtime",)]), before
    mark = len(ctx.srv.output())
    try:
        sql(ctx, f"CREATE ROLE {reader} NOLOGIN",
            f"GRANT EXECUTE ON FUNCTION {append} TO PUBLIC",
            f"GRANT EXECUTE ON FUNCTION {tree} TO clued_runtime WITH GRANT OPTION",
            "SET ROLE clued_runtime",
            f"GRANT EXECUTE ON FUNCTION {tree} TO {reader}",
            "RESET ROLE")
        detected(ctx, mark, f"function {append_named} of", f"function {tree_named} of", drift=2)
        out = lines_since(ctx.srv, mark)
        assert re.search(re.escape(f"function {append_named} of ") + r"00\d\d_\w+\.sql runs with its owner's rights "
                         r"\(SECURITY DEFINER\) and may be called by PUBLIC: EXECUTE was granted outside migrations, "
                         r"which let only its owner and clued_runtime call it", out), out
        assert re.search(re.escape(f"function {tree_named} of ") + r"00\d\d_\w+\.sql runs with its owner's rights "
                         rf"\(SECURITY DEFINER\) and may be called by {reader} \(granted by clued_runtime\)", out), out
        repaired(ctx, mark, f"function {append_named} of", f"function {tree_named} of")
        assert (execute_grantees(ctx, append), execute_grantees(ctx, tree)) == before
        assert sql(ctx, f"SELECT has_function_privilege('{reader}', '{tree}', 'EXECUTE')") == [(False,)]
    finally:
        sql(ctx, "RESET ROLE", f"REVOKE EXECUTE ON FUNCTION {append} FROM PUBLIC",
            f"REVOKE GRANT OPTION FOR EXECUTE ON FUNCTION {tree} FROM clued_runtime CASCADE",
            f"DROP ROLE IF EXISTS {reader}")


def test_serve_refuses_to_start_and_allow_schema_drift_serves(ctx):
    sql(ctx, UNLOGGED_READ)
    try:
        # Plain migrate says what differs and how to repair it.
        r = ctx.srv.run("migrate")
        assert "function clue_read_reporter(bigint, bigint, bigint) differs" in r.stderr, r.stderr
        assert "clued migrate --repair" in r.stderr, r.stderr
        other = harness.Clued(ctx.url)
        r = other.run("serve", "--listen", "127.0.0.1:0", check=False)
        assert r.returncode == 1, r.stderr
        assert "function clue_read_reporter(bigint, bigint, bigint) differs from its definition in" in r.stderr
        assert "refusing to serve: 1 of clued's functions or triggers" in r.stderr, r.stderr
        assert "listening" not in r.stderr, r.stderr
        with MetricsClued(ctx.url, args=["--allow-schema-drift", "--metrics-listen", "127.0.0.1:0",
                                         "--schema-check-interval", "0"]).start(migrate=False) as lax:
            harness.wait_for(lambda: "(--allow-schema-drift)" in lax.output(), timeout=15, what="the drift allowed, logged")
            harness.wait_for(lambda: metric(lax, "clued_schema_drift") == 1, timeout=15, what="drift 1")
            assert health(lax) == SERVING
    finally:
        ctx.srv.run("migrate", "--repair")
    harness.wait_for(lambda: health(ctx.srv) == SERVING, timeout=15, what="SERVING")


def test_a_server_left_running_under_a_newer_migrate_refuses_calls(ctx):
    # An upgrade with this server still running: a newer clued applied a migration this
    # binary does not have. Its writes could skip what the newer functions check (a request's
    # fingerprint), so it refuses calls from its next check on, and serves again once the
    # schema is its own (here: the migration taken back).
    mark = len(ctx.srv.output())
    sql(ctx, "INSERT INTO schema_migrations (version, name, checksum)"
             " VALUES (9999, '9999_future_change.sql', 'deadbeef')")
    try:
        harness.wait_for(lambda: "the database has migration 9999 applied, newer than this clued's"
                         in lines_since(ctx.srv, mark), timeout=15, what="the newer migration noticed")
        harness.wait_for(lambda: health(ctx.srv) == NOT_SERVING, timeout=15, what="NOT_SERVING")
        harness.expect_status(Code.UNAVAILABLE, ctx.w.G1.member.clue.SubmitClue, pb.SubmitClueRequest(
            request_id=new_request_id(), title="升级期间", summary="反映某某违规收受礼金",
            source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="张三"),
            host_unit="市发展改革委"), timeout=10, details_has=("migrated by a newer clued",))
    finally:
        sql(ctx, "DELETE FROM schema_migrations WHERE version = 9999")
    harness.wait_for(lambda: health(ctx.srv) == SERVING, timeout=15, what="SERVING again")
    harness.wait_for(lambda: "the database's migrations are this clued's again" in lines_since(ctx.srv, mark),
                     timeout=15, what="serving again, logged")
    ctx.w.G1.leader.clue.ListClues(pb.ListCluesRequest(), timeout=10)


def test_flags_are_documented_and_checked(ctx):
    out = subprocess.run([harness.CLUED, "help"], capture_output=True, text=True, timeout=30).stdout
    readme = open(os.path.join(harness.SRC, "README.md"), encoding="utf-8").read()
    for flag in ("--schema-check-interval", "--allow-schema-drift", "--repair"):
        assert flag in out, f"{flag} missing from clued help"
        assert f"`{flag}`" in readme or f"`clued migrate {flag}`" in readme, f"{flag} missing from the README"
    r = subprocess.run([harness.CLUED, "serve", "--schema-check-interval", "5"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "--schema-check-interval must be a whole number" in r.stderr, r.stderr


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
