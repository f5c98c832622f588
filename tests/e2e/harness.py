"""End-to-end test fixtures: a throwaway PostgreSQL, the real clued binary on a free port,
and Python grpcio stubs generated from proto/ at test time.

Environment (set by CTest): CLUED_BIN, CLUECTL_BIN, CLUED_SOURCE_DIR, CLUED_BUILD_DIR.
CLUED_TEST_PGHOST / CLUED_TEST_PGPORT point at a running cluster (scripts/test starts
one); without them each test process starts its own through scripts/pg-test.
"""

import atexit
import importlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

SRC = os.environ.get("CLUED_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.environ.get("CLUED_BUILD_DIR", os.path.join(SRC, "build-test"))
CLUED = os.environ.get("CLUED_BIN", os.path.join(BUILD, "clued"))
CLUECTL = os.environ.get("CLUECTL_BIN", os.path.join(BUILD, "cluectl"))

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


class Postgres:
    """A PostgreSQL cluster reachable over a unix socket; one database per test."""

    _shared = None

    def __init__(self, host, port, owned_dir=None):
        self.host, self.port, self.owned_dir = host, port, owned_dir

    @classmethod
    def get(cls):
        if cls._shared is None:
            host = os.environ.get("CLUED_TEST_PGHOST")
            if host:
                cls._shared = cls(host, os.environ.get("CLUED_TEST_PGPORT", "5432"))
            else:
                d = tempfile.mkdtemp(prefix="clued-pg-")
                out = subprocess.check_output([os.path.join(SRC, "scripts", "pg-test"), "start", d], text=True)
                host, port = out.split()
                cls._shared = cls(host, port, d)
                atexit.register(cls._shared.destroy)
        return cls._shared

    def destroy(self):
        if self.owned_dir:
            subprocess.call([os.path.join(SRC, "scripts", "pg-test"), "stop", self.owned_dir])
            self.owned_dir = None

    def url(self, dbname="postgres", user="postgres"):
        return f"postgresql:///{dbname}?host={self.host}&port={self.port}&user={user}"

    def connect(self, dbname="postgres"):
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user="postgres", dbname=dbname)
        conn.autocommit = True
        return conn

    def ensure_roles(self):
        """The roles clued runs as (migrations/0009_runtime_role.sql), made once per cluster:
        clued_owner owns each test database and migrates it; clued, a member of clued_runtime
        that owns nothing, serves."""
        if getattr(self, "_roles", False):
            return
        import psycopg2

        conn = self.connect()
        with conn.cursor() as cur:
            for stmt in ("CREATE ROLE clued_owner LOGIN", "CREATE ROLE clued_runtime NOLOGIN",
                         "CREATE ROLE clued LOGIN IN ROLE clued_runtime"):
                try:
                    cur.execute(stmt)
                except (psycopg2.errors.DuplicateObject, psycopg2.errors.UniqueViolation):
                    pass  # made already, perhaps by a test running beside this one
        conn.close()
        self._roles = True

    def new_database(self, prefix="t"):
        """A new database owned by clued_owner; its name."""
        self.ensure_roles()
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = self.connect()
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" OWNER clued_owner')
        conn.close()
        return name

    def stop_cluster(self):
        """Stop the server (fault tests); only for clusters this process owns."""
        assert self.owned_dir, "only an owned cluster can be stopped"
        _pg_ctl(self.owned_dir, "stop", "-m", "fast")

    def start_cluster(self):
        assert self.owned_dir
        _pg_ctl(self.owned_dir, "start", "-l", os.path.join(self.owned_dir, "postgres.log"), "-o",
                f"-k {self.owned_dir} -c listen_addresses='' -p {self.port} -c fsync=off")


def _pg_ctl(d, *args, data="data"):
    import glob

    pgbin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    cmd = [os.path.join(pgbin, "pg_ctl"), "-D", os.path.join(d, data), "-w", *args]
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.check_call(cmd, stdout=subprocess.DEVNULL)


def private_postgres():
    """A cluster owned by this test alone (for tests that stop and start it)."""
    d = tempfile.mkdtemp(prefix="clued-pg-")
    out = subprocess.check_output([os.path.join(SRC, "scripts", "pg-test"), "start", d], text=True)
    host, port = out.split()
    pg = Postgres(host, port, d)
    atexit.register(pg.destroy)
    return pg


class Replicated:
    """A primary and a synchronous standby by streaming replication (scripts/pg-test
    start-replicated), on one socket directory, for failover tests. url() names both hosts,
    read-write: libpq connects to whichever is the primary."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="clued-pgrep-")
        out = subprocess.check_output([os.path.join(SRC, "scripts", "pg-test"), "start-replicated", self.dir],
                                      text=True)
        host, p1, p2 = out.split()
        self.primary, self.standby = Postgres(host, p1), Postgres(host, p2)
        atexit.register(self.destroy)

    def destroy(self):
        if self.dir:
            subprocess.call([os.path.join(SRC, "scripts", "pg-test"), "stop", self.dir])
            self.dir = None

    def url(self, dbname, user="postgres", attrs="read-write"):
        h, p = self.primary.host, self.primary.port
        url = f"postgresql:///{dbname}?host={h},{h}&port={p},{self.standby.port}&user={user}"
        return url + (f"&target_session_attrs={attrs}" if attrs else "")

    def kill_primary(self):
        """kill -9 the primary's postmaster; its backends end when they notice."""
        with open(os.path.join(self.dir, "data", "postmaster.pid")) as f:
            os.kill(int(f.readline()), signal.SIGKILL)

    def promote(self):
        self._standby_ctl("promote")

    def stop_standby(self):
        self._standby_ctl("stop", "-m", "fast")

    def start_standby(self):
        self._standby_ctl("start", "-l", os.path.join(self.dir, "standby.log"), "-o",
                          f"-k {self.dir} -c listen_addresses='' -p {self.standby.port} -c fsync=off -c max_connections=400")

    def _standby_ctl(self, *args):
        _pg_ctl(self.dir, *args, data="standby")


def as_role(database_url, user):
    """database_url with the superuser postgres replaced by user; other URLs unchanged."""
    if database_url and "user=postgres" in database_url:
        return database_url.replace("user=postgres", f"user={user}")
    return database_url


class Clued:
    """The real clued binary. start() waits until it logs the address it bound.

    As in production, one-shot commands (migrate, bootstrap) run as the schema's owner and
    serve runs as the runtime role: a database_url naming user=postgres is rewritten to
    clued_owner and clued respectively."""

    def __init__(self, database_url=None, args=(), env=None):
        self.database_url = as_role(database_url, "clued_owner")
        self.serve_url = as_role(database_url, "clued")
        self.args = list(args)
        self.env = dict(os.environ)
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=66")
        self.env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        if env:
            self.env.update(env)
        self.proc = None
        self.signalled = False
        self.lines = []
        self.addr = None
        self._bound = threading.Event()

    def run(self, *args, check=True, input=None):
        """Run a one-shot clued command (migrate, bootstrap) and return CompletedProcess."""
        cmd = [CLUED, *args]
        url = self.serve_url if args and args[0] == "serve" else self.database_url
        if url:
            cmd += ["--database-url", url]
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, input=input, timeout=120)
        _assert_clean(r.stderr)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr}")
        return r

    def start(self, listen="127.0.0.1:0", migrate=True):
        if migrate and self.database_url:
            self.run("migrate")
        cmd = [CLUED, "serve", "--listen", listen, *self.args]
        if self.serve_url:
            cmd += ["--database-url", self.serve_url]
        self.signalled = False
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="backslashreplace")
        threading.Thread(target=self._read, daemon=True).start()
        if not self._bound.wait(30):
            self.proc.kill()
            raise AssertionError("clued did not start:\n" + self.output())
        if self.database_url:
            self.wait_serving()
        return self

    def wait_serving(self, timeout=30):
        """Listening comes first; wait until Health reports the database answering too."""
        import grpc

        s = stubs()
        with grpc.insecure_channel(self.addr) as ch:
            h = s.health_pb2_grpc.HealthStub(ch)
            wait_for(lambda: h.Check(s.health_pb2.HealthCheckRequest(), timeout=5).status
                     == s.health_pb2.HealthCheckResponse.SERVING, timeout=timeout, what="SERVING")

    def listening(self):
        """Whether the invalidation listener listens: "ready" and "lost" alternate in the log,
        and it listens when it said ready last. Until it does, no principal is cached: a call
        made before it is looked up again next time."""
        out = self.output()
        return out.count("the invalidation listener is ready") > out.count("lost the invalidation listener")

    def wait_listening(self, timeout=30):
        """For a test that needs its callers' principals cached: the listener connects on its
        own, after the server serves."""
        wait_for(self.listening, timeout=timeout, what="the invalidation listener ready")
        return self

    def _read(self):
        for line in self.proc.stdout:
            self._take(line)

    def _take(self, line):
        self.lines.append(line)
        m = re.search(r"listening on ([^\s\"]+)", line)  # text, or a JSON line's msg
        if m and not self._bound.is_set():
            self.addr = m.group(1)
            self._bound.set()

    def output(self):
        return "".join(self.lines)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.signalled = True
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Stop clued; assert it exited 0 with no sanitizer report. Returns the output."""
        if self.proc is None:
            return ""
        if self.proc.poll() is None and not self.signalled:
            self.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("clued did not exit after signal:\n" + self.output())
        time.sleep(0.05)
        out = self.output()
        self.proc = None
        _assert_clean(out)
        assert rc == 0, f"clued exited {rc}:\n{out}"
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.stop()
        elif self.proc is not None:
            self.proc.kill()
            sys.stderr.write(self.output())


class RawLogClued(Clued):
    """Clued that also keeps each line of the server's output as the bytes it wrote
    (raw_lines), read from the byte stream: a line that is not UTF-8 must not stop the
    reader, or the pipe fills up and the server blocks writing its log."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.raw_lines = []

    def _read(self):
        for raw in self.proc.stdout.buffer:
            self.raw_lines.append(raw)
            self._take(raw.decode("utf-8", "backslashreplace"))


def _assert_clean(out):
    for m in SANITIZER_MARKERS:
        assert m not in out, f"sanitizer report:\n{out}"


def cluectl(*args, env=None, check=None, input=None):
    """Run cluectl; returns CompletedProcess (text). check=int asserts the exit code."""
    e = dict(os.environ)
    e.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    if env:
        e.update(env)
    r = subprocess.run([CLUECTL, *args], env=e, capture_output=True, text=True, timeout=120, input=input)
    _assert_clean(r.stderr)
    if check is not None:
        assert r.returncode == check, f"cluectl {' '.join(args)} exited {r.returncode}, wanted {check}:\n{r.stdout}{r.stderr}"
    return r


_stubs = None


def stubs():
    """Generate and import grpcio stubs for every file under proto/. Returns a namespace
    with clue_pb2, clue_pb2_grpc, admin_pb2, ... and health_pb2, health_pb2_grpc."""
    global _stubs
    if _stubs is not None:
        return _stubs
    from grpc_tools import protoc
    import types

    out = tempfile.mkdtemp(prefix="clued-stubs-")
    atexit.register(lambda: subprocess.call(["rm", "-rf", out]))
    proto = os.path.join(SRC, "proto")
    files = sorted(os.path.relpath(os.path.join(d, f), proto)
                   for d, _, fs in os.walk(os.path.join(proto, "clue")) for f in fs if f.endswith(".proto"))
    rc = protoc.main(["protoc", f"-I{proto}", f"--python_out={out}", f"--grpc_python_out={out}", *files])
    assert rc == 0, "protoc failed for clue protos"
    # health.proto lives under grpc/ which would shadow the grpc package: compile it flat.
    hdir = os.path.join(proto, "grpc", "health", "v1")
    rc = protoc.main(["protoc", f"-I{hdir}", f"--python_out={out}", f"--grpc_python_out={out}", "health.proto"])
    assert rc == 0, "protoc failed for health.proto"
    sys.path.insert(0, out)
    ns = types.SimpleNamespace()
    for f in files:
        mod = f[:-len(".proto")].replace("/", ".")
        short = os.path.basename(f)[:-len(".proto")]
        setattr(ns, short + "_pb2", importlib.import_module(mod + "_pb2"))
        if os.path.exists(os.path.join(out, f[:-len(".proto")] + "_pb2_grpc.py")):
            setattr(ns, short + "_pb2_grpc", importlib.import_module(mod + "_pb2_grpc"))
    ns.health_pb2 = importlib.import_module("health_pb2")
    ns.health_pb2_grpc = importlib.import_module("health_pb2_grpc")
    _stubs = ns
    return ns


def every_page(fn, req, field, max_pages=1000, **kw):
    """Every row of a paged list, in order: fn(req, **kw), then again with each page's
    next_page_token as page_token until a page has none (at most max_pages pages, each token
    once). req is left as it was."""
    page = type(req)()
    page.CopyFrom(req)
    rows, seen = [], set()
    for _ in range(max_pages):
        r = fn(page, **kw)
        rows.extend(getattr(r, field))
        if not r.next_page_token:
            return rows
        assert r.next_page_token not in seen, f"page token {r.next_page_token!r} given twice"
        seen.add(r.next_page_token)
        page.page_token = r.next_page_token
    raise AssertionError(f"more than {max_pages} pages")


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def vacuums(db, table):
    """How many times table has been vacuumed, by hand or by autovacuum, and whether a vacuum
    of it runs now. A vacuum that summarizes a BRIN index (audit_events_at_brin) reads the
    table's new rows, and PostgreSQL counts them as read by a sequential scan: a count of the
    rows some calls read means nothing if a vacuum ran meanwhile."""
    with db.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT t.vacuum_count + t.autovacuum_count,"
                    " EXISTS (SELECT 1 FROM pg_stat_progress_vacuum p WHERE p.relid = t.relid)"
                    " FROM pg_stat_all_tables t WHERE t.relid = %s::regclass", (table,))
        return tuple(cur.fetchone())


def unvacuumed(db, table, measure, tries=5):
    """measure(), taken again while a vacuum of table ran before it ended (vacuums())."""
    for _ in range(tries):
        wait_for(lambda: not vacuums(db, table)[1], timeout=120, interval=0.2, what=f"the vacuum of {table}")
        done = vacuums(db, table)[0]
        got = measure()
        if vacuums(db, table) == (done, False):
            return got
    raise AssertionError(f"{table} was vacuumed during each of {tries} measures")


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def new_request_id():
    """A fresh request id (a UUID string) for the calls that take one."""
    return str(uuid.uuid4())


def expect_status(code, fn, *args, details_has=(), **kw):
    """Call fn(*args, **kw); assert it fails with the gRPC status `code` and that its details
    contain each string of details_has; return the details."""
    import grpc

    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        assert e.code() == code, f"wanted {code}, got {e.code()}: {e.details()}"
        msg = e.details()
    else:
        raise AssertionError(f"wanted {code}, the call succeeded")
    for w in details_has:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def stalled_by_its_key(dbname, user_id, fn, req, during):
    """Call fn(req) while a superuser session holds the lock of its request key, the first lock
    every write takes: the call is decided and sent, and waits there. Run during() meanwhile,
    release the lock, and return the call's (code, message) and what during() returned."""
    import grpc

    pg = Postgres.get()
    lk, db = pg.connect(dbname), pg.connect(dbname)
    lk.autocommit = False
    lk.cursor().execute("SELECT pg_advisory_xact_lock(hashtextextended('clue_requests/' || %s || '/' || %s::uuid, 0))",
                        (user_id, req.request_id))
    out = {}

    def run():
        try:
            fn(req, timeout=30)
            out["r"] = (grpc.StatusCode.OK, "")
        except grpc.RpcError as e:
            out["r"] = (e.code(), e.details())

    def waiting():
        with db.cursor() as q:
            q.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                      " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
            return q.fetchone()[0] > 0

    t = threading.Thread(target=run)
    t.start()
    try:
        wait_for(waiting, what="the call waiting on its request key")
        d = during()
    finally:
        lk.rollback()
        lk.close()
        db.close()
        t.join()
    return out["r"], d


class Skip(Exception):
    """Raised by a test that cannot run here yet (say, the server does not have the method it
    tests); run_tests reports it as SKIP with the reason, and it does not fail the run."""


def run_tests(namespace, setup=None, teardown=None):
    """Run every test_* function of a module in order; exit 1 if any failed."""
    import traceback

    tests = [(n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f)]
    failed = skipped = 0
    ctx = setup() if setup else None
    try:
        for name, fn in tests:
            t0 = time.time()
            try:
                fn(ctx) if setup else fn()
                print(f"PASS {name} ({time.time() - t0:.2f}s)", flush=True)
            except Skip as e:
                skipped += 1
                print(f"SKIP {name}: {e}", flush=True)
            except Exception:
                failed += 1
                print(f"FAIL {name}", flush=True)
                traceback.print_exc()
    finally:
        if teardown:
            teardown(ctx)
    print(f"{len(tests) - failed - skipped}/{len(tests)} passed"
          + (f", {skipped} skipped" if skipped else ""), flush=True)
    sys.exit(1 if failed else 0)


def test_database_url():
    """A fresh, migrated-on-start database for one test module, or None while clued runs
    without one (CLUED_TEST_NO_DB=1)."""
    if os.environ.get("CLUED_TEST_NO_DB"):
        return None
    pg = Postgres.get()
    return pg.url(pg.new_database())
