"""Settings an operator may legitimately give the database, the roles or the connection string
change nothing clued does, and those that would switch off what it relies on are refused.

Every session clued opens, the pool's and those of migrate, bootstrap and serve's start-up
checks, pins at its start how it reads and writes (db.h's DB_SESSION_PINS): the schema search,
UTF-8, standard strings, unquoted names, the output forms. So quote_all_identifiers (which the
runtime role may set for itself), a search_path or a client_encoding set on the role or the
database neither look like changed functions to the schema check (which compares names as
text) nor garble text, nor send migrate's tables into a schema named after its role. A
database whose encoding cannot hold UTF-8 text is refused by name; session_replication_role
set to replica for clued's sessions (its triggers would not fire) is a difference of the
schema check; a check that keeps failing while the database answers refuses calls as a
difference does; a NOINHERIT member of clued_runtime is told what is wrong.
"""

import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402
from test_metrics import MetricsClued, scrape, value  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
Code = grpc.StatusCode
SERVING = S.health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = S.health_pb2.HealthCheckResponse.NOT_SERVING
CHECKED = ["--metrics-listen", "127.0.0.1:0", "--schema-check-interval", "200ms"]
TITLE = "关于某局长违规收受礼金的问题线索"


def health(srv):
    with grpc.insecure_channel(srv.addr) as ch:
        h = S.health_pb2_grpc.HealthStub(ch)
        return h.Check(S.health_pb2.HealthCheckRequest(), timeout=5).status


def sql(pg, dbname, *stmts):
    db = pg.connect(dbname)
    try:
        with db.cursor() as cur:
            for s in stmts:
                cur.execute(s)
    finally:
        db.close()


def submit(w, title=TITLE):
    return w.G1.member.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title=title, summary="反映某某违规收受礼金",
        source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="张三"),
        host_unit="市发展改革委"), timeout=20)


def listed(w):
    """The titles G1's leader lists; None while the pool reconnects."""
    try:
        return [x.title for x in w.G1.leader.clue.ListClues(pb.ListCluesRequest(), timeout=10).clues]
    except grpc.RpcError as e:
        if e.code() != Code.UNAVAILABLE:
            raise
        return None


def checked_clean(srv, checks=3):
    """A few more checks ran, and none found a difference."""
    first = value(scrape(srv.metrics_addr), "clued_schema_checks_total") or 0
    harness.wait_for(lambda: (value(scrape(srv.metrics_addr), "clued_schema_checks_total") or 0) >= first + checks,
                     timeout=20, what=f"{checks} more schema checks")
    assert value(scrape(srv.metrics_addr), "clued_schema_drift") == 0
    assert "schema check" not in srv.output(), srv.output()
    assert health(srv) == SERVING


def terminate(pg, dbname, role):
    """End every session of role on dbname (a failover or a restart of PostgreSQL would)."""
    sql(pg, dbname, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'"
                    f" AND usename = '{role}' AND pid <> pg_backend_pid()")


def test_settings_of_the_roles_and_the_database_change_nothing():
    pg = harness.Postgres.get()
    dbname = pg.new_database()
    # Set before anything runs: every session of clued's roles on this database starts with them.
    sql(pg, dbname, "CREATE SCHEMA ops", "CREATE TABLE ops.users (id int)",
        f"ALTER DATABASE \"{dbname}\" SET client_encoding = 'GBK'",
        f"ALTER ROLE clued IN DATABASE \"{dbname}\" SET quote_all_identifiers = on",
        f"ALTER ROLE clued IN DATABASE \"{dbname}\" SET search_path = ops, public",
        f"ALTER ROLE clued_owner IN DATABASE \"{dbname}\" SET quote_all_identifiers = on",
        f"ALTER ROLE clued_owner IN DATABASE \"{dbname}\" SET search_path = ops, pg_catalog")
    url = pg.url(dbname)
    with MetricsClued(url, args=CHECKED).start() as srv:
        w = world.build(srv)
        try:
            c = submit(w)
            got = w.G1.member.clue.GetClue(pb.GetClueRequest(clue_id=c.id), timeout=10)
            assert got.title == TITLE and got.subject.name == "张三", got
            checked_clean(srv)
            r = srv.run("migrate")
            assert "differ" not in r.stderr and "warn" not in r.stderr, r.stderr
            r = srv.run("migrate", "--repair")
            assert "nothing to repair" in r.stderr, r.stderr
            # The same once the pool's sessions were made anew under the settings.
            terminate(pg, dbname, "clued")
            harness.wait_for(lambda: listed(w) == [TITLE], timeout=20, what="ListClues after the reconnect")
            checked_clean(srv)
        finally:
            w.close()
    # Stored as UTF-8, whatever the database told the sessions to speak.
    db = pg.connect(dbname)
    with db.cursor() as cur:
        cur.execute("SELECT title FROM clues")
        assert cur.fetchall() == [(TITLE,)]
    db.close()


def test_migrate_creates_its_tables_in_public_whatever_the_search_path():
    # A schema named after the owner (the "$user" of the default search_path) would have taken
    # migrate's first tables, and a later migration then found none of them.
    pg = harness.Postgres.get()
    dbname = pg.new_database()
    sql(pg, dbname, "CREATE SCHEMA clued_owner AUTHORIZATION clued_owner")
    with harness.Clued(pg.url(dbname)).start() as srv:
        w = world.build(srv)
        try:
            submit(w)
        finally:
            w.close()
    db = pg.connect(dbname)
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'clued_owner'::regnamespace")
        assert cur.fetchone()[0] == 0
    db.close()


def test_a_database_that_cannot_hold_utf8_text_is_refused():
    pg = harness.Postgres.get()
    pg.ensure_roles()
    for enc in ("LATIN1", "EUC_CN"):
        dbname = f"enc_{enc.lower()}_{new_request_id()[:8]}"
        sql(pg, "postgres", f"CREATE DATABASE \"{dbname}\" OWNER clued_owner ENCODING '{enc}'"
                            " LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
        r = harness.Clued(pg.url(dbname)).run("migrate", check=False)
        assert r.returncode != 0, r.stderr
        assert f"the database's encoding is {enc}: clued keeps text in UTF-8" in r.stderr, r.stderr
        db = pg.connect(dbname)
        with db.cursor() as cur:
            cur.execute("SELECT to_regclass('schema_migrations')")
            assert cur.fetchone()[0] is None
        db.close()


def test_triggers_switched_off_for_clueds_sessions_are_a_difference():
    pg = harness.Postgres.get()
    dbname = pg.new_database()
    url = pg.url(dbname)
    srr = f"ALTER ROLE clued IN DATABASE \"{dbname}\" SET session_replication_role = replica"
    said = "session_replication_role = replica (set for the role, the database or the server), so none of clued's"
    with MetricsClued(url, args=CHECKED).start() as srv:
        w = world.build(srv)
        try:
            submit(w)
            mark = len(srv.output())
            sql(pg, dbname, srr)
            terminate(pg, dbname, "clued")
            harness.wait_for(lambda: said in srv.output()[mark:], timeout=20, what="the setting found")
            harness.wait_for(lambda: health(srv) == NOT_SERVING, timeout=15, what="NOT_SERVING")
            harness.expect_status(Code.UNAVAILABLE, w.G1.leader.clue.ListClues, pb.ListCluesRequest(), timeout=10,
                                  details_has=("functions or triggers",))
            # The owner's sessions are not affected: there is nothing it could repair.
            r = srv.run("migrate", "--repair")
            assert "nothing to repair" in r.stderr, r.stderr
            sql(pg, dbname, f"ALTER ROLE clued IN DATABASE \"{dbname}\" RESET session_replication_role")
            terminate(pg, dbname, "clued")
            harness.wait_for(lambda: health(srv) == SERVING, timeout=20, what="SERVING again")
            w.G1.leader.clue.ListClues(pb.ListCluesRequest(), timeout=10)
        finally:
            w.close()
    sql(pg, dbname, srr)
    r = harness.Clued(url).run("serve", "--listen", "127.0.0.1:0", check=False)
    assert r.returncode == 1 and said in r.stderr and "refusing to serve" in r.stderr, r.stderr
    sql(pg, dbname, f"ALTER ROLE clued IN DATABASE \"{dbname}\" RESET session_replication_role")


def test_a_check_that_keeps_failing_refuses_calls():
    # The schema's owner can keep the check from reading schema_migrations; what it changes
    # meanwhile must not be served unchecked.
    ctx = world.served(args=CHECKED, clued=MetricsClued)
    try:
        srv, w = ctx.srv, ctx.w
        mark = len(srv.output())
        ctx.db.cursor().execute("REVOKE SELECT ON schema_migrations FROM clued_runtime")
        harness.wait_for(lambda: "schema check failed 3 times in a row" in srv.output()[mark:], timeout=20,
                         what="three failed checks")
        assert "refusing calls (UNAVAILABLE, Health NOT_SERVING) until a check runs" in srv.output()[mark:]
        assert health(srv) == NOT_SERVING
        harness.expect_status(Code.UNAVAILABLE, w.G1.leader.clue.ListClues, pb.ListCluesRequest(), timeout=10,
                              details_has=("cannot check the database's functions and triggers",))
        ctx.db.cursor().execute("GRANT SELECT ON schema_migrations TO clued_runtime")
        harness.wait_for(lambda: health(srv) == SERVING, timeout=20, what="SERVING again")
        assert "schema check: it runs again" in srv.output()[mark:]
        w.G1.leader.clue.ListClues(pb.ListCluesRequest(), timeout=10)
    finally:
        world.unserve(ctx)


def test_no_statement_is_compiled_just_in_time():
    # PostgreSQL's JIT compiles a statement whose estimated cost passes jit_above_cost: a few
    # hundred milliseconds of a core for statements that run in one, such as ListJointCases'
    # (its set-returning helper is estimated at 1,000 rows a case). clued's sessions switch it
    # off at their start, whatever the database or the role set. auto_explain, loaded into the
    # runtime role's new sessions at WARNING, shows each statement's plan in clued's log, and
    # jit_above_cost 0 would compile every one of them.
    ctx = world.served()
    try:
        srv, w = ctx.srv, ctx.w
        sql(harness.Postgres.get(), ctx.dbname,
            *(f'ALTER ROLE clued IN DATABASE "{ctx.dbname}" SET {s}' for s in (
                "session_preload_libraries = 'auto_explain'", "auto_explain.log_min_duration = 0",
                "auto_explain.log_level = 'warning'", "auto_explain.log_nested_statements = on",
                "jit = on", "jit_above_cost = 0")))
        terminate(harness.Postgres.get(), ctx.dbname, "clued")
        mark = len(srv.output())
        harness.wait_for(lambda: listed(w) is not None, timeout=20, what="ListClues after the reconnect")
        submit(w)
        for who in (w.R1.leader, w.auditor):
            who.case.ListJointCases(S.case_pb2.ListJointCasesRequest(), timeout=10)
        out = srv.output()[mark:]
        assert "Query Text" in out and "joint_case" in out, out[-4000:]
        assert "JIT" not in out, out[-4000:]
    finally:
        world.unserve(ctx)


def test_a_member_that_does_not_inherit_clued_runtime_is_told_so():
    pg = harness.Postgres.get()
    dbname = pg.new_database()
    sql(pg, "postgres", "DO $$ BEGIN CREATE ROLE clued_noinherit LOGIN NOINHERIT IN ROLE clued_runtime;"
                        " EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    c = harness.Clued(pg.url(dbname))
    c.run("migrate")
    c.serve_url = harness.as_role(pg.url(dbname), "clued_noinherit")
    r = c.run("serve", "--listen", "127.0.0.1:0", check=False)
    assert r.returncode == 1, r.stderr
    # CONNECT is clued_runtime's (0063), which the role does not inherit either.
    assert f'role "clued_noinherit" may not connect to database "{dbname}"' in r.stderr, r.stderr
    assert "member of clued_runtime that inherits its privileges (not NOINHERIT)" in r.stderr, r.stderr
    # On a database every role may still connect to, what it lacks is the schema's grants.
    sql(pg, dbname, f'GRANT CONNECT ON DATABASE "{dbname}" TO clued_noinherit')
    r = c.run("serve", "--listen", "127.0.0.1:0", check=False)
    assert r.returncode == 1, r.stderr
    assert 'role "clued_noinherit" is a member of clued_runtime' in r.stderr, r.stderr
    assert "does not inherit its privileges (NOINHERIT)" in r.stderr, r.stderr
    sql(pg, dbname, f'REVOKE CONNECT ON DATABASE "{dbname}" FROM clued_noinherit')


if __name__ == "__main__":
    harness.run_tests(dict(globals()))
