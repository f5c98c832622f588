"""Least privilege in PostgreSQL: `clued migrate` runs as the schema's owner, `clued serve` as
a runtime role that owns nothing and cannot disable the audit triggers or rewrite audit events,
chain heads or notes; serve refuses a superuser or owner connection, or any role that could become
one or write past the audit triggers, unless --allow-superuser; migrate says whom it waits for."""

import select
import subprocess
import uuid

import psycopg2
import psycopg2.errors

import harness
import world

# Statements a compromised server (connected as the runtime role) might try, each of which
# the database must refuse for lack of privilege.
REFUSED = [
    "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
    "ALTER TABLE audit_events DISABLE TRIGGER ALL",
    "ALTER TABLE notes DISABLE TRIGGER notes_append_only",
    "ALTER TABLE audit_heads DISABLE TRIGGER audit_heads_keep",
    "UPDATE audit_events SET reason = 'rewritten' WHERE seq = (SELECT max(seq) FROM audit_events)",
    "DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)",
    "INSERT INTO audit_events (action, subject_type, subject_id, hash) VALUES ('forged', 'clue', 1, '\\x00')",
    "TRUNCATE audit_events",
    "UPDATE audit_heads SET last_seq = last_seq - 1",
    "DELETE FROM audit_heads",
    "INSERT INTO audit_heads (subject_type, subject_id) VALUES ('clue', 999999)",
    "UPDATE notes SET text = 'rewritten'",
    "DELETE FROM notes",
    "TRUNCATE notes",
    "ALTER FUNCTION audit_events_refuse_change() RENAME TO gone",
    "CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$",
    "DROP TRIGGER audit_events_append_only ON audit_events",
    "CREATE TABLE public.x (i int)",
    "ALTER TABLE clues OWNER TO clued",
    "SET session_replication_role = replica",
]


def setup():
    c = type("C", (), {})()
    c.pg = harness.Postgres.get()
    c.dbname = c.pg.new_database("roles")
    c.srv = harness.Clued(c.pg.url(c.dbname)).start()  # migrates as clued_owner, serves as clued
    c.w = world.build(c.srv)
    # Something in every protected table: a clue with a note.
    m = c.w.G1.member
    pb = harness.stubs().clue_pb2
    clue = m.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=harness.new_request_id(), title="权限", summary="s", subject=pb.SubjectPerson(name="某某"),
        host_unit="市发展改革委", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT), timeout=20)
    m.clue.AddNote(pb.AddNoteRequest(request_id=harness.new_request_id(), clue_id=clue.id,
                                     kind=pb.NOTE_KIND_EVIDENCE_SUMMARY, text="证据"), timeout=20)
    return c


def teardown(c):
    c.w.close()
    c.srv.stop()


def runtime_conn(c):
    conn = psycopg2.connect(host=c.pg.host, port=c.pg.port, user="clued", dbname=c.dbname)
    conn.autocommit = True
    return conn


def assert_refused(conn, stmts, who):
    """Each of stmts, run on conn, fails for lack of privilege."""
    for stmt in stmts:
        with conn.cursor() as cur:
            try:
                cur.execute(stmt)
            except psycopg2.errors.InsufficientPrivilege:
                continue
            raise AssertionError(f"{who} was allowed: {stmt}")


def test_runtime_role_is_refused_every_rewrite(c):
    admin = c.pg.connect(c.dbname)
    with admin.cursor() as cur:
        cur.execute("SELECT count(*), max(seq) FROM audit_events")
        before_events = cur.fetchone()
        cur.execute("SELECT count(*), string_agg(text, '|' ORDER BY id) FROM notes")
        before_notes = cur.fetchone()
        cur.execute("SELECT string_agg(subject_type || subject_id || ':' || last_seq, ',' ORDER BY 1) FROM audit_heads")
        before_heads = cur.fetchone()
    assert before_events[0] > 0 and before_notes[0] > 0
    conn = runtime_conn(c)
    assert_refused(conn, REFUSED, "the runtime role")
    conn.close()
    with admin.cursor() as cur:
        cur.execute("SELECT count(*), max(seq) FROM audit_events")
        assert cur.fetchone() == before_events
        cur.execute("SELECT count(*), string_agg(text, '|' ORDER BY id) FROM notes")
        assert cur.fetchone() == before_notes
        cur.execute("SELECT string_agg(subject_type || subject_id || ':' || last_seq, ',' ORDER BY 1) FROM audit_heads")
        assert cur.fetchone() == before_heads
    admin.close()


def test_runtime_role_owns_nothing_and_is_no_superuser(c):
    conn = c.pg.connect(c.dbname)
    with conn.cursor() as cur:
        cur.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = 'clued'")
        assert cur.fetchone() == (False, False, False, False)
        cur.execute("""SELECT count(*) FROM pg_class WHERE pg_has_role('clued', relowner, 'MEMBER')
                       AND relnamespace = 'public'::regnamespace""")
        assert cur.fetchone()[0] == 0
        cur.execute("""SELECT count(*) FROM pg_proc WHERE pg_has_role('clued', proowner, 'MEMBER')
                       AND pronamespace = 'public'::regnamespace""")
        assert cur.fetchone()[0] == 0
        # The schema is owned by the role that migrated it.
        cur.execute("SELECT relowner::regrole::text FROM pg_class WHERE oid = 'audit_events'::regclass")
        assert cur.fetchone()[0] == "clued_owner"
    conn.close()


def test_no_other_role_runs_the_audit_writers(c):
    """The SECURITY DEFINER functions (audit_append and its kin, with the owner's rights, past
    the append-only rules) run for the owner and the runtime role alone: any role that could
    log in appended events as anyone, or a checkpoint row, through PUBLIC's default EXECUTE.
    Every such function of the schema, present and future, is checked; the runtime role still
    appends through them (every write of setup())."""
    admin = c.pg.connect(c.dbname)
    with admin.cursor() as cur:
        cur.execute("SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace"
                    " AND p.prosecdef ORDER BY 1")
        secdef = [r[0] for r in cur.fetchall()]
        assert {f.split("(")[0] for f in secdef} >= {"audit_append", "audit_append_many", "audit_tree_append"}, secdef
        cur.execute("DROP ROLE IF EXISTS reporting")
        cur.execute("CREATE ROLE reporting LOGIN")
        # A reporting user an operator lets connect (test_only_clueds_roles_connect).
        cur.execute(f'GRANT CONNECT ON DATABASE "{c.dbname}" TO reporting')
        for f in secdef:
            cur.execute("SELECT has_function_privilege('reporting', %s, 'EXECUTE'),"
                        " has_function_privilege('clued', %s, 'EXECUTE')", (f, f))
            assert cur.fetchone() == (False, True), f
        cur.execute("SELECT count(*) FROM audit_events")
        before = cur.fetchone()[0]
    conn = psycopg2.connect(host=c.pg.host, port=c.pg.port, user="reporting", dbname=c.dbname)
    conn.autocommit = True
    try:
        assert_refused(conn, ["SELECT audit_append(NULL, NULL, 'clue.reporter_read', 'clue', 1, NULL, NULL, NULL, NULL, '{}')",
                              "SELECT audit_tree_append(0, '{}', '{}', 999, '\\x00', 'forged')"],
                       "a role with no grant")
    finally:
        conn.close()
    with admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM audit_events")
        assert cur.fetchone()[0] == before
        cur.execute(f'REVOKE CONNECT ON DATABASE "{c.dbname}" FROM reporting')
        cur.execute("DROP ROLE reporting")
    admin.close()


def test_only_clueds_roles_connect(c):
    """PostgreSQL lets every role connect to a new database; migrate takes CONNECT and
    TEMPORARY from PUBLIC and gives them to clued_runtime, so that a role nobody let in can
    take none of the advisory locks that order clued's writes (nor hold a connection slot)."""
    admin = c.pg.connect(c.dbname)
    with admin.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS stranger")
        cur.execute("CREATE ROLE stranger LOGIN")
        for role, want in (("stranger", False), ("clued", True), ("clued_owner", True), ("public", False)):
            cur.execute("SELECT has_database_privilege(%s, current_database(), 'CONNECT'),"
                        " has_database_privilege(%s, current_database(), 'TEMPORARY')", (role, role))
            assert cur.fetchone() == (want, want), role
    try:
        psycopg2.connect(host=c.pg.host, port=c.pg.port, user="stranger", dbname=c.dbname).close()
        raise AssertionError("a role with no grant connected")
    except psycopg2.OperationalError as e:
        assert "permission denied for database" in str(e), e
    with admin.cursor() as cur:
        cur.execute("DROP ROLE stranger")
    admin.close()
    runtime_conn(c).close()


def test_serve_refuses_a_superuser(c):
    srv = harness.Clued(c.pg.url(c.dbname))
    srv.serve_url = c.pg.url(c.dbname, user="postgres")
    r = srv.run("serve", "--listen", "127.0.0.1:0", check=False)
    assert r.returncode == 1, r.stderr
    assert 'role "postgres" is a superuser' in r.stderr and "--allow-superuser" in r.stderr, r.stderr
    assert "listening" not in r.stderr


def test_serve_refuses_the_schema_owner(c):
    srv = harness.Clued(c.pg.url(c.dbname))
    srv.serve_url = c.pg.url(c.dbname, user="clued_owner")
    r = srv.run("serve", "--listen", "127.0.0.1:0", check=False)
    assert r.returncode == 1, r.stderr
    assert 'role "clued_owner" owns the audit tables' in r.stderr, r.stderr


def test_allow_superuser_serves_and_says_why(c):
    srv = harness.Clued(c.pg.url(c.dbname), args=["--allow-superuser"])
    srv.serve_url = c.pg.url(c.dbname, user="postgres")
    srv.start(migrate=False)
    try:
        assert "--allow-superuser" in srv.output() and "is a superuser" in srv.output(), srv.output()
    finally:
        srv.stop()


def serve_briefly(c, user):
    """`clued serve` as user: its CompletedProcess once it exits, or, if it is still serving
    after a few seconds, returncode None (stopped) and what it logged."""
    cmd = [harness.CLUED, "serve", "--listen", "127.0.0.1:0", "--database-url", c.pg.url(c.dbname, user=user)]
    try:
        r = subprocess.run(cmd, env=c.srv.env, capture_output=True, text=True, timeout=8)
    except subprocess.TimeoutExpired as e:
        out = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        r = subprocess.CompletedProcess(cmd, None, "", "still serving after 8 s:\n" + out)
    harness._assert_clean(r.stderr)
    return r


def test_serve_refuses_roles_that_reach_past_the_audit_triggers(c):
    """Not only a superuser or the owner: a runtime role that may make itself one, run programs
    or write files on the server, or write every table, served before without a word (in
    PostgreSQL 15 a CREATEROLE role may GRANT itself clued_owner and disable the triggers).
    Each is refused, naming what it has and the ALTER ROLE or REVOKE that takes it away."""
    tag = uuid.uuid4().hex[:8]
    grp = f"rg_{tag}"
    cases = [
        ("CREATEROLE", 'has CREATEROLE, with which it may grant itself other roles', "ALTER ROLE {r} NOCREATEROLE"),
        ("IN ROLE pg_execute_server_program", "is a member of pg_execute_server_program, which runs programs",
         "REVOKE pg_execute_server_program FROM {r}"),
        ("IN ROLE pg_write_server_files", "is a member of pg_write_server_files, which writes files",
         "REVOKE pg_write_server_files FROM {r}"),
        ("IN ROLE pg_read_server_files", "is a member of pg_read_server_files, which reads files",
         "REVOKE pg_read_server_files FROM {r}"),
        ("IN ROLE pg_write_all_data", "is a member of pg_write_all_data, which may INSERT, UPDATE and DELETE",
         "REVOKE pg_write_all_data FROM {r}"),
        # Through a group: the REVOKE names the group's grant.
        (f"IN ROLE {grp}", 'is a member of "clued_owner", which owns the audit tables', f"REVOKE clued_owner FROM {grp}"),
        # A superuser it may SET ROLE to.
        ("IN ROLE postgres", 'is a member of "postgres", a superuser it may SET ROLE to', "REVOKE postgres FROM {r}"),
    ]
    admin = c.pg.connect()
    roles = []
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE ROLE {grp} NOLOGIN IN ROLE clued_owner")
            for i, (attrs, _, _) in enumerate(cases):
                r = f"rr{i}_{tag}"
                roles.append(r)
                cur.execute(f"CREATE ROLE {r} LOGIN {attrs}")
                cur.execute(f"GRANT clued_runtime TO {r}")
        for r, (attrs, what, fix) in zip(roles, cases):
            res = serve_briefly(c, r)
            assert res.returncode == 1, (attrs, res.stderr)
            assert f'refusing to serve: the database role "{r}" {what}' in res.stderr, (attrs, res.stderr)
            assert fix.format(r=r) in res.stderr and "--allow-superuser" in res.stderr, (attrs, res.stderr)
            assert "listening" not in res.stderr, res.stderr
        # The owner of the database owns the schema public (PostgreSQL 15), and may drop the
        # audit tables from it.
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{c.dbname}" OWNER TO {roles[2]}')
        try:
            res = serve_briefly(c, roles[2])
            assert res.returncode == 1 and 'owns the database (or is a member of its owner), and so the schema ' \
                '"public", from which it may drop the audit tables' in res.stderr, res.stderr
        finally:
            with admin.cursor() as cur:
                cur.execute(f'ALTER DATABASE "{c.dbname}" OWNER TO clued_owner')
        # --allow-superuser serves past it, saying why.
        srv = harness.Clued(c.pg.url(c.dbname), args=["--allow-superuser"])
        srv.serve_url = c.pg.url(c.dbname, user=roles[0])
        srv.start(migrate=False)
        try:
            assert "(--allow-superuser)" in srv.output() and "has CREATEROLE" in srv.output(), srv.output()
        finally:
            srv.stop()
    finally:
        with admin.cursor() as cur:
            for r in roles + [grp]:
                cur.execute(f"DROP ROLE IF EXISTS {r}")
        admin.close()


def test_a_member_of_the_owner_migrating_keeps_the_tree_appending(c):
    """A member of the schema's owner may migrate. 0063's audit_tree_lock would then be the
    member's, and audit_tree_append(), which runs as the owner, was refused it: leaves and
    checkpoints stopped with no error from migrate. The table is the function owner's; and
    every migration runs as the owner, so that what it makes (0064's functions) is not the
    member's either (the member's removal then failed on them)."""
    import glob
    import os
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="clued-upto-")
    role = f"ops_{uuid.uuid4().hex[:8]}"
    admin = c.pg.connect()
    try:
        for f in sorted(glob.glob(os.path.join(harness.SRC, "migrations", "*.sql"))):
            if os.path.basename(f) < "0063":
                shutil.copy(f, d)
        dbname = c.pg.new_database("member")
        harness.Clued(c.pg.url(dbname, user="clued_owner")).run("migrate", "--migrations", d)
        with admin.cursor() as cur:
            cur.execute(f"CREATE ROLE {role} LOGIN IN ROLE clued_owner")
        r = subprocess.run([harness.CLUED, "migrate", "--database-url", c.pg.url(dbname, user=role)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        db = c.pg.connect(dbname)
        with db.cursor() as cur:
            cur.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_tree_lock'")
            assert cur.fetchone() == ("clued_owner",)
            # Nothing a later migration made (functions dropped and made again) is the member's.
            cur.execute("SELECT oid::regprocedure::text FROM pg_proc WHERE proowner = %s::regrole"
                        " UNION ALL SELECT relname::text FROM pg_class WHERE relowner = %s::regrole", (role, role))
            assert cur.fetchall() == []
        db.close()
        conn = psycopg2.connect(host=c.pg.host, port=c.pg.port, user="clued", dbname=dbname)
        with conn.cursor() as cur:
            cur.execute("SELECT audit_tree_append(0, '{}', '{}', 0, NULL, NULL)")
            assert cur.fetchone()[0] in ("ok", "moved"), "the builder's append was refused"
        conn.close()
    finally:
        shutil.rmtree(d)
        with admin.cursor() as cur:
            cur.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


def test_migrate_says_whom_it_waits_for(c):
    """migrate waits for another session holding the migration lock (another migrate may be
    running): it said nothing while waiting, for as long as that session liked. Now it says
    once for whom (pid, role, application), goes on when the lock is released, and gives up
    at the lock_timeout of the connection string's options."""
    key = "hashtextextended('clued schema_migrations', 0)"
    role = f"holder_{uuid.uuid4().hex[:8]}"
    admin = c.pg.connect()
    with admin.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN")  # no grant but CONNECT: advisory locks need none
    admin.cursor().execute(f'GRANT CONNECT ON DATABASE "{c.dbname}" TO {role}')  # a reporting user let in (0063)
    holder = psycopg2.connect(host=c.pg.host, port=c.pg.port, user=role, dbname=c.dbname,
                              application_name="lock-holder")
    holder.autocommit = True
    proc = None
    try:
        with holder.cursor() as cur:
            cur.execute(f"SELECT pg_backend_pid(), pg_advisory_lock({key})")
            pid = cur.fetchone()[0]
        srv = harness.Clued(c.pg.url(c.dbname))
        proc = subprocess.Popen([harness.CLUED, "migrate", "--database-url", srv.database_url], env=srv.env,
                                stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([proc.stderr], [], [], 10)  # silent before: no line came
        assert ready, "migrate said nothing while it waited"
        line = proc.stderr.readline()
        assert "waiting for the migration lock" in line and f'pid {pid}, role "{role}", application "lock-holder"' \
            in line, line
        assert proc.poll() is None, "migrate did not wait"
        with holder.cursor() as cur:
            cur.execute(f"SELECT pg_advisory_unlock({key})")
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, rest
        harness._assert_clean(line + rest)
        assert "took the migration lock after waiting" in rest and "up to date" in rest, rest
        # Bounded by lock_timeout: a failure that says what it waited for.
        with holder.cursor() as cur:
            cur.execute(f"SELECT pg_advisory_lock({key})")
        srv.database_url += "&options=-c%20lock_timeout%3D300ms"
        r = srv.run("migrate", check=False)
        assert r.returncode == 1, r.stderr
        assert "waiting for the migration lock" in r.stderr and \
            "gave up waiting for the migration lock after" in r.stderr, r.stderr
    finally:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        holder.close()
        with admin.cursor() as cur:
            cur.execute(f'REVOKE CONNECT ON DATABASE "{c.dbname}" FROM {role}')
            cur.execute(f"DROP ROLE {role}")
        admin.close()


def test_serve_on_an_old_schema_says_migrate(c):
    # Migrated only up to 0005, before 0009 grants clued_runtime the schema: the runtime role
    # may not even read schema_migrations. serve says migrations are pending and what to run
    # ("permission denied for table schema_migrations" before).
    import glob
    import os
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="clued-old-")
    try:
        for f in sorted(glob.glob(os.path.join(harness.SRC, "migrations", "*.sql")))[:5]:
            shutil.copy(f, d)
        dbname = c.pg.new_database("old")
        old = harness.Clued(c.pg.url(dbname, user="clued_owner"))
        old.run("migrate", "--migrations", d)
        srv = harness.Clued(c.pg.url(dbname))
        srv.serve_url = c.pg.url(dbname, user="clued")
        r = srv.run("serve", "--listen", "127.0.0.1:0", check=False)
        assert r.returncode == 1, r.stderr
        assert "migrations are pending" in r.stderr and "`clued migrate`" in r.stderr, r.stderr
        assert "permission denied" not in r.stderr and "listening" not in r.stderr, r.stderr
    finally:
        shutil.rmtree(d)
    # A role outside clued_runtime, on an up-to-date schema, is told that instead.
    admin = c.pg.connect()
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = 'clued_stranger'")
        if cur.fetchone() is None:
            cur.execute("CREATE ROLE clued_stranger LOGIN")
    admin.close()
    srv = harness.Clued(c.pg.url(c.dbname))
    srv.serve_url = c.pg.url(c.dbname, user="clued_stranger")
    r = srv.run("serve", "--listen", "127.0.0.1:0", check=False)
    assert r.returncode == 1, r.stderr
    assert f'role "clued_stranger" may not connect to database "{c.dbname}"' in r.stderr, r.stderr
    # Let in by an operator, it may still not read the schema.
    admin = c.pg.connect(c.dbname)
    admin.cursor().execute(f'GRANT CONNECT ON DATABASE "{c.dbname}" TO clued_stranger')
    try:
        r = srv.run("serve", "--listen", "127.0.0.1:0", check=False)
    finally:
        admin.cursor().execute(f'REVOKE CONNECT ON DATABASE "{c.dbname}" FROM clued_stranger')
        admin.close()
    assert r.returncode == 1, r.stderr
    assert 'role "clued_stranger" may not read schema_migrations: it is not a member of clued_runtime' in r.stderr, \
        r.stderr

def owned_by(c, dbname, role):
    """The functions of the public schema owned by role."""
    conn = c.pg.connect(dbname)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_proc WHERE proowner = %s::regrole"
                    " AND pronamespace = 'public'::regnamespace", (role,))
        n = cur.fetchone()[0]
    conn.close()
    return n


def test_migrate_refuses_a_superuser_that_does_not_own_the_schema(c):
    # Objects a superuser's migrate made would belong to it, and the owner's next migrate
    # could not replace them ("must be owner of function ..."): refused, naming the owner.
    fresh = c.pg.new_database("su")
    for dbname, what in ((fresh, "the database"), (c.dbname, "the schema")):
        srv = harness.Clued(c.pg.url(dbname))
        srv.database_url = c.pg.url(dbname, user="postgres")
        r = srv.run("migrate", check=False)
        assert r.returncode == 1, r
        assert ('refusing to migrate as "postgres", a superuser: %s belongs to "clued_owner"' % what
                in r.stderr and 'migrate as "clued_owner"' in r.stderr
                and "--allow-superuser" in r.stderr), r.stderr
        assert owned_by(c, dbname, "postgres") == 0
    conn = c.pg.connect(fresh)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations')")
        assert cur.fetchone()[0] is None
    conn.close()
    # --allow-superuser: done, with a warning saying what it leaves behind.
    r = srv.run("migrate", "--allow-superuser")
    assert 'migrating as "postgres", a superuser' in r.stderr and "up to date" in r.stderr, r.stderr
    # A superuser that owns the schema (a database made by postgres) migrates it as before.
    legacy = c.pg.new_database("legacy")
    conn = c.pg.connect()
    with conn.cursor() as cur:
        cur.execute(f'ALTER DATABASE "{legacy}" OWNER TO postgres')
    conn.close()
    srv = harness.Clued(c.pg.url(legacy))
    srv.database_url = c.pg.url(legacy, user="postgres")
    r = srv.run("migrate")
    assert "migration(s) applied" in r.stderr and "superuser" not in r.stderr, r.stderr


def test_migrate_as_the_runtime_role_names_the_owner(c):
    # "creating schema_migrations: permission denied for schema public" before, on a migrated
    # database too.
    for dbname, what in ((c.pg.new_database("rt"), "the database"), (c.dbname, "the schema")):
        srv = harness.Clued(c.pg.url(dbname))
        srv.database_url = c.pg.url(dbname, user="clued")
        r = srv.run("migrate", check=False)
        assert r.returncode == 1, r
        assert ('role "clued" may not migrate this database: migrate as "clued_owner", the owner of %s'
                % what in r.stderr), r.stderr
        assert "permission denied" not in r.stderr, r.stderr


def test_bootstrap_as_the_runtime_role_is_refused(c):
    """bootstrap, like migrate, runs as the schema's owner: as the runtime role it is refused
    with the reason, and creates nothing."""
    dbname = c.pg.new_database("rtboot")
    srv = harness.Clued(c.pg.url(dbname))
    srv.run("migrate")
    srv.database_url = c.pg.url(dbname, user="clued")
    for args in (("bootstrap",), ("bootstrap", "--new-admin")):
        r = srv.run(*args, check=False)
        assert r.returncode == 1, r
        assert "bootstrap runs as the role owning the schema" in r.stderr, r.stderr
        assert "ct_" not in r.stdout, r.stdout
    conn = c.pg.connect(dbname)
    with conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM units), (SELECT count(*) FROM tokens)")
        assert cur.fetchone() == (0, 0, 0)
    conn.close()
    srv.database_url = c.pg.url(dbname, user="clued_owner")
    assert "ct_" in srv.run("bootstrap").stdout


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
