"""--log-format json: every line clued writes, from start to stop, is one JSON object with
the stable keys time, level and msg; each finished call is a line with call, peer, method,
code, duration_ms and (for calls that carry a well-formed one) request_id; and no line carries a
token, a reporter's contact or a database password, whatever the calls or the command line
sent, failures and hostile text included.
"""

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
cm = S.common_pb2
CALL_KEYS = {"time", "level", "msg", "call", "peer", "method", "code", "duration_ms"}
SECRET_PHONE = "13912345678"
SECRET_EMAIL = "whistle@example.org"


class JsonClued(harness.Clued):
    """The harness finds the bound address in the msg of the JSON line."""

    def _take(self, line):
        self.lines.append(line)
        if not self._bound.is_set():
            try:
                m = re.search(r"listening on (\S+)", json.loads(line).get("msg", ""))
            except ValueError:
                m = None
            if m:
                self.addr = m.group(1)
                self._bound.set()


def parse(lines):
    out = []
    for i, line in enumerate(lines):
        assert line.endswith("\n"), f"line {i} is not whole: {line!r}"
        obj = json.loads(line)
        assert isinstance(obj, dict), line
        assert {"time", "level", "msg"} <= obj.keys(), line
        assert obj["level"] in ("info", "warn", "error"), line
        datetime.datetime.strptime(obj["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        out.append(obj)
    return out


def test_every_line_is_json():
    srv = JsonClued(harness.test_database_url(), args=["--log-format", "json"]).start()
    try:
        w = world.build(srv)
        tokens = [u.token for u in w.users] + [u.enrollment_token for u in w.users if u.enrollment_token]
        m = w.G1.member
        rid = new_request_id()
        clue = m.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=rid, title="线索", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
            subject=pb.SubjectPerson(name="张三"), host_unit="市发展改革委",
            reporter=pb.ReporterContact(name="李四", phone=SECRET_PHONE, email=SECRET_EMAIL)), timeout=20)
        w.G1.leader.clue.GetClue(pb.GetClueRequest(clue_id=clue.id), timeout=20)  # reads the contact
        # A failure with hostile text in the field that is echoed back.
        try:
            m.clue.SubmitClue(pb.SubmitClueRequest(request_id="\"}\n{\u0001\xff", title="t"), timeout=20)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A bad token and an unknown method.
        with grpc.insecure_channel(srv.addr) as ch:
            bad = ch.unary_unary("/clue.v1.ClueService/GetClue")
            try:
                bad(pb.GetClueRequest(clue_id=1).SerializeToString(), timeout=10,
                    metadata=[("authorization", "Bearer " + "x" * 43)])
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED
            try:
                ch.unary_unary("/clue.v1.Nope/Nothing")(b"", timeout=10)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNIMPLEMENTED
        w.close()
    finally:
        out = srv.stop()
    objs = parse(out.splitlines(keepends=True))
    calls = [o for o in objs if "method" in o]
    for o in calls:
        assert CALL_KEYS <= o.keys(), o
        assert isinstance(o["duration_ms"], int) and o["duration_ms"] >= 0, o
        assert re.fullmatch(r"\d+#\d+", o["call"]), o
        assert o["peer"].startswith("127.0.0.1:"), o
    submit = [o for o in calls if o.get("request_id") == rid]
    assert len(submit) == 1, calls
    assert submit[0]["method"] == "/clue.v1.ClueService/SubmitClue" and submit[0]["code"] == "OK", submit
    codes = {(o["method"], o["code"]) for o in calls}
    assert ("/clue.v1.ClueService/GetClue", "OK") in codes, codes
    assert ("/clue.v1.ClueService/SubmitClue", "INVALID_ARGUMENT") in codes, codes
    assert ("/clue.v1.ClueService/GetClue", "UNAUTHENTICATED") in codes, codes
    assert ("/clue.v1.Nope/Nothing", "UNIMPLEMENTED") in codes, codes
    assert any("listening on" in o["msg"] for o in objs) and objs[-1]["msg"] == "stopped", objs[-1]
    for secret in tokens + [SECRET_PHONE, SECRET_EMAIL, "x" * 43]:
        assert secret not in out, f"a secret is in the log: {secret[:6]}…"


def json_lines(stderr):
    """Every line of a one-shot command's stderr, parsed; at least one."""
    lines = stderr.splitlines(keepends=True)
    assert lines, "nothing logged"
    return parse(lines)


def test_one_shot_commands_and_bad_value():
    # The one-shot commands and serve's start-up refusals log as serve does: JSON on stderr,
    # nothing on stdout but a command's own answer (bootstrap's token), and no SQL text.
    pg = harness.Postgres.get()
    srv = harness.Clued(pg.url(pg.new_database()), args=["--log-format", "json"])
    r = srv.run("bootstrap", "--log-format", "json", check=False)
    assert r.returncode == 1 and r.stdout == "", r
    msgs = [o["msg"] for o in json_lines(r.stderr)]
    assert any("the database is not migrated" in m and "run `clued migrate` first" in m for m in msgs), msgs
    assert "SELECT" not in r.stderr and "admin_bootstrap" not in r.stderr, r.stderr
    r = srv.run("serve", "--log-format", "json", "--listen", "127.0.0.1:0", check=False)
    assert r.returncode == 1 and r.stdout == "", r
    objs = json_lines(r.stderr)
    assert any(o["level"] == "error" and "run `clued migrate` first" in o["msg"] for o in objs), objs
    r = srv.run("migrate", "--log-format", "json")
    assert r.stdout == "", r.stdout
    msgs = [o["msg"] for o in json_lines(r.stderr)]
    # Both name the schema as `clued version` does (a number left out makes the count differ).
    schema = re.search(r"schema (\d+)", subprocess.run([harness.CLUED, "version"], capture_output=True,
                                                       text=True, check=True).stdout).group(1)
    assert any(m.startswith("applied 0001_") for m in msgs), msgs
    assert msgs[-1].endswith(f"migration(s) applied: schema {schema}"), msgs
    r = srv.run("migrate", "--log-format", "json")
    assert r.stdout == "" and json_lines(r.stderr)[-1]["msg"].startswith(f"up to date: schema {schema} ("), r
    r = srv.run("bootstrap", "--log-format", "json")
    assert re.search(r"ct_[0-9a-f]{64}", r.stdout) and r.stderr == "", r
    # In text too, migrate's lines are log lines on stderr.
    r = srv.run("migrate")
    assert r.stdout == "" and re.search(r"^\S+Z clued: info: up to date", r.stderr), r
    # A database that cannot be reached: one JSON error line, for migrate and for serve.
    gone = harness.Clued("postgresql:///x?host=/nonexistent/clued")
    for cmd in ("migrate", "serve"):
        r = gone.run(cmd, "--log-format", "json", check=False)
        assert r.returncode == 1 and r.stdout == "", r
        objs = json_lines(r.stderr)
        assert objs[-1]["level"] == "error" and "cannot connect" in objs[-1]["msg"], objs
    r = srv.run("serve", "--log-format", "yaml", check=False)
    assert r.returncode != 0 and "--log-format must be text or json" in r.stderr, r.stderr


def test_usage_errors_are_json_lines():
    """With --log-format json (wherever it stands among the options) or CLUED_LOG_FORMAT=json, a
    usage error is one JSON line of level error and nothing else, exit status 2 as in text: a
    bad number, an unknown option, an unexpected argument, an option without its value, an
    option of another command, a bad --log-format. The value of an unknown --name=value is not
    repeated. Text stays the default: there the refusals are "clued: ..." lines."""
    cases = [
        (["serve", "--db-pool", "0"], "--db-pool must be a number between 1 and 256"),
        (["serve", "--idle-timeout", "soon"], "--idle-timeout must be a whole number with the unit"),
        (["serve", "--bogus"], "unrecognized option '--bogus'"),
        (["serve", "--databse-url=postgresql://u:S3CRET@db/x"], "unrecognized option '--databse-url'"),
        (["serve", "-x"], "unrecognized option '-x'"),
        (["serve", "--allow-superuser=yes"], "option '--allow-superuser' takes no value"),
        (["serve", "extra"], 'unexpected argument "extra"'),
        (["migrate", "--listen", "127.0.0.1:1"], "--listen is not an option of migrate"),
        (["serve", "--web-origin", "x"], "--web-origin must be an origin"),
        (["keygen"], "keygen: --out FILE is required"),
        (["frob"], 'unknown command "frob"'),
        (["version", "--bogus"], 'version takes no arguments (got "--bogus")'),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUED_")}
    for args, want in cases:
        for how in ("after", "before", "env"):
            cmd = [harness.CLUED, *args]
            e = dict(env)
            if how == "env":
                e["CLUED_LOG_FORMAT"] = "json"
            elif how == "after":
                cmd += ["--log-format", "json"]
            elif args[0] != "version":
                cmd[2:2] = ["--log-format=json"]
            else:
                cmd[2:2] = ["--log-format", "json"]
            r = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=30)
            assert r.returncode == 2 and r.stdout == "", (cmd, how, r)
            lines = r.stderr.splitlines(keepends=True)
            assert len(lines) == 1, (cmd, how, r.stderr)
            obj = parse(lines)[0]
            assert obj["level"] == "error" and want in obj["msg"], (cmd, how, obj)
            assert "S3CRET" not in r.stderr, r.stderr
        r = subprocess.run([harness.CLUED, *args], env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and re.fullmatch(r"clued( keygen)?: [^\n]*\n", r.stderr), (args, r)
        assert want.removeprefix("keygen: ") in r.stderr, (args, r.stderr)
    # A bad value of one is refused in the format the other chose.
    r = subprocess.run([harness.CLUED, "serve", "--log-format", "yaml"], capture_output=True,
                       text=True, timeout=30, env=dict(env, CLUED_LOG_FORMAT="json"))
    assert r.returncode == 2 and "--log-format must be text or json" in parse([r.stderr])[0]["msg"], r
    r = subprocess.run([harness.CLUED, "serve", "--log-format", "json"], capture_output=True,
                       text=True, timeout=30, env=dict(env, CLUED_LOG_FORMAT="yaml"))
    assert r.returncode == 2 and "CLUED_LOG_FORMAT must be text or json" in parse([r.stderr])[0]["msg"], r


def test_stopped_before_serving_is_a_json_line():
    """SIGTERM while serve's start-up checks wait on a database host that never answers: the
    line saying so is JSON too, and the exit status 128 + the signal."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the connection; nothing ever answers it
    url = f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/x?connect_timeout=30"
    try:
        proc = subprocess.Popen([harness.CLUED, "serve", "--listen", "127.0.0.1:0", "--log-format",
                                 "json", "--database-url", url], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, err)
        objs = parse(err.splitlines(keepends=True))
        assert objs[-1]["msg"] == "stopped by a signal before serving", objs
    finally:
        silent.close()


SECRET_PW = "S3cretPassw0rd"
# Strings libpq cannot parse, each with a password: libpq's own error quotes the token or the
# whole string.
UNPARSABLE_URLS = (
    f"postgresql://clued:{SECRET_PW}%zz@127.0.0.1:1/clued",  # a bad percent escape
    f"postgresql://clued:{SECRET_PW}@[::1/clued",  # an unclosed [
    f"host=127.0.0.1 port=1 user=clued password='{SECRET_PW}",  # an unclosed quote
)


def clued_env(**kw):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=66",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    env.pop("CLUED_DATABASE_URL", None)
    env.pop("CLUED_REPLICA_URL", None)
    env.update(kw)
    return env


def run_clued(args, env):
    r = subprocess.run([harness.CLUED, *args], env=env, capture_output=True, text=True, timeout=60)
    harness._assert_clean(r.stderr)
    return r


def test_unparsable_database_url_is_not_logged():
    """A --database-url, CLUED_DATABASE_URL or --replica-url that libpq cannot parse is a usage
    error (exit 2) whose message names the option or variable and never its text: the
    password is in neither format's log, for migrate, bootstrap and serve."""
    db = harness.test_database_url()
    good = harness.Clued(db)
    good.run("migrate")
    for url in UNPARSABLE_URLS:
        for cmd in ("migrate", "bootstrap", "serve"):
            extra = ["--listen", "127.0.0.1:0"] if cmd == "serve" else []
            for fmt in ("text", "json"):
                for via in ("--database-url", "CLUED_DATABASE_URL"):
                    if via == "--database-url":
                        r = run_clued([cmd, *extra, "--log-format", fmt, "--database-url", url], clued_env())
                    else:
                        r = run_clued([cmd, *extra, "--log-format", fmt], clued_env(CLUED_DATABASE_URL=url))
                    what = f"{cmd} {fmt} {via} {url[:20]}"
                    assert r.returncode == 2, (what, r)
                    assert SECRET_PW not in r.stderr + r.stdout, (what, r.stderr)
                    assert f"{via} could not be parsed as a PostgreSQL connection string" in r.stderr, (what, r.stderr)
                    assert "its text is not logged" in r.stderr, (what, r.stderr)
                    if fmt == "json":
                        assert json_lines(r.stderr)[-1]["level"] == "error", (what, r.stderr)
        # A bad replica URL beside a good database URL: serve does not start, and says which.
        for fmt in ("text", "json"):
            for via in ("--replica-url", "CLUED_REPLICA_URL"):
                args = ["serve", "--listen", "127.0.0.1:0", "--log-format", fmt, "--database-url", good.serve_url]
                env = clued_env()
                if via == "--replica-url":
                    args += ["--replica-url", url]
                else:
                    env["CLUED_REPLICA_URL"] = url
                r = run_clued(args, env)
                what = f"serve {fmt} {via} {url[:20]}"
                assert r.returncode == 2, (what, r)
                assert SECRET_PW not in r.stderr + r.stdout, (what, r.stderr)
                assert f"{via} could not be parsed" in r.stderr, (what, r.stderr)
    # Strings that parse but cannot connect: libpq's connection errors name hosts, ports and
    # option values, never the password.
    for url in (f"postgresql://clued:{SECRET_PW}@127.0.0.1:1/clued",
                f"postgresql://clued:{SECRET_PW}@127.0.0.1:1/clued?sslmode=bogus",
                f"host=127.0.0.1 port=99999 user=clued password={SECRET_PW}"):
        for cmd in ("migrate", "serve"):
            r = run_clued([cmd, "--log-format", "json", "--database-url", url], clued_env())
            assert r.returncode == 1 and "cannot connect" in r.stderr, (cmd, url, r)
            assert SECRET_PW not in r.stderr, (cmd, r.stderr)
    # A replica that parses but cannot be reached: serve runs, its pool logs why it cannot
    # connect, and the password is not in that either.
    srv = JsonClued(db, args=["--log-format", "json", "--replica-url",
                              f"postgresql://clued:{SECRET_PW}@127.0.0.1:1/clued"]).start()
    try:
        deadline = time.monotonic() + 20
        while not any("cannot connect" in line for line in list(srv.lines)):
            assert time.monotonic() < deadline, srv.lines
            time.sleep(0.1)
    finally:
        out = srv.stop()
    parse(out.splitlines(keepends=True))
    assert SECRET_PW not in out, out


def test_request_id_logged_only_when_a_uuid():
    """The access log's request_id is the client's own text: it is logged only when it is a
    well-formed UUID (what the services accept), so a secret sent in that field is not."""
    srv = JsonClued(harness.test_database_url(), args=["--log-format", "json"]).start()
    try:
        w = world.build(srv)
        m = w.G1.member
        rid = new_request_id().upper()  # either case is a UUID
        ok = dict(title="线索", summary="摘要", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
                  subject=pb.SubjectPerson(name="张三"), host_unit="市发展改革委")
        m.clue.SubmitClue(pb.SubmitClueRequest(request_id=rid, **ok), timeout=20)
        bad = (m.token, "pw=" + SECRET_PW, new_request_id() + "0", "{" + new_request_id() + "}")
        for b in bad:
            harness.expect_status(grpc.StatusCode.INVALID_ARGUMENT, m.clue.SubmitClue,
                                  pb.SubmitClueRequest(request_id=b, **ok), timeout=20)
        w.close()
    finally:
        out = srv.stop()
    calls = [o for o in parse(out.splitlines(keepends=True))
             if o.get("method") == "/clue.v1.ClueService/SubmitClue"]
    assert [o.get("request_id") for o in calls if o["code"] == "OK"] == [rid], calls
    refused = [o for o in calls if o["code"] == "INVALID_ARGUMENT"]
    assert len(refused) == len(bad) and all("request_id" not in o for o in refused), refused
    for b in bad:
        assert b not in out, f"a request_id that is not a UUID is in the log: {b[:8]}…"


if __name__ == "__main__":
    harness.run_tests(dict(globals()))
