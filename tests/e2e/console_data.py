"""The data the console's tests show (tests/e2e/test_console.py, test_console_csv.py): world.py
and, on top of it, clues in every stage, a handover, an overdue clue, a joint case and a
rectification item; and what they need beside it."""

import datetime
import os
import subprocess
import time

import harness
from harness import new_request_id

S = harness.stubs()
C, CL, CS, RE = S.common_pb2, S.clue_pb2, S.case_pb2, S.rectification_pb2

CONSOLE_DIR = os.environ.get("CLUED_CONSOLE_DIR", os.path.join(harness.BUILD, "console"))
DAY_MS = 86400000


def keygen(d):
    key = os.path.join(d, "audit.key")
    r = subprocess.run([harness.CLUED, "keygen", "--name", "clued.test/console", "--out", key],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return key


def submit(user, title, host="市发展改革委"):
    return user.clue.SubmitClue(CL.SubmitClueRequest(
        request_id=new_request_id(), title=title, summary=f"{title}：反映某某问题",
        source=CL.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=CL.SubjectPerson(name="王某某", position="处长"),
        host_unit=host), timeout=10)


def move(user, clue, target, reason="依规处置", **details):
    return user.clue.RequestTransition(CL.RequestTransitionRequest(
        clue_id=clue.id, expected_version=clue.version, target=target, reason=reason,
        details=CL.TransitionDetails(**details), request_id=new_request_id()), timeout=10)


def build_dataset(c):
    """Clues in every stage for the statistics and the queues, a handover to G1, an overdue
    clue with G1's member as its handler, a joint case and a rectification item. Returns the per-unit figures expected from
    GetStatistics for the period, by unit code."""
    w = c.w
    want = {code: dict(received=0, preliminary_checks_started=0, filed=0, closed=0, transferred_to_judicial=0)
            for code in ("R1", "R2", "G1", "G2", "G3", "X1")}
    g1 = [submit(w.G1.member, f"G1 线索 {i}") for i in range(5)]
    want["G1"]["received"] += 5
    p1 = move(w.G1.leader, g1[0], C.CLUE_STATE_PRELIMINARY_CHECK).clue
    p2 = move(w.G1.leader, g1[1], C.CLUE_STATE_PRELIMINARY_CHECK).clue
    want["G1"]["preliminary_checks_started"] += 2
    prop = move(w.G1.leader, p1, C.CLUE_STATE_FILED)
    assert prop.pending
    w.R1.leader.clue.ReviewProposal(CL.ReviewProposalRequest(proposal_id=prop.proposal.id, approve=True,
                                                             request_id=new_request_id()), timeout=10)
    want["G1"]["filed"] += 1
    move(w.G1.leader, g1[2], C.CLUE_STATE_CLOSED, disposal=CL.DISPOSAL_TALK_OR_LETTER_INQUIRY)
    want["G1"]["closed"] += 1
    g2 = [submit(w.G2.member, f"G2 线索 {i}", host="市交通运输局") for i in range(3)]
    want["G2"]["received"] += 3
    q = move(w.G2.leader, g2[0], C.CLUE_STATE_PRELIMINARY_CHECK).clue
    move(w.G2.leader, q, C.CLUE_STATE_CLOSED, finding="经初核，反映问题不属实")
    want["G2"]["preliminary_checks_started"] += 1
    want["G2"]["closed"] += 1
    # A handover from G2 to G1: it arrives in G1's queue.
    c.handed = w.G2.leader.clue.HandOver(CL.HandOverRequest(
        clue_id=g2[1].id, expected_version=g2[1].version, to_unit_id=w.G1.id, reason="属 G1 驻在单位管辖",
        request_id=new_request_id()), timeout=10)
    submit(w.G3.member, "G3 线索", host="市卫生健康委")
    want["G3"]["received"] += 1
    submit(w.X1.member, "X1 线索", host="某区")
    want["X1"]["received"] += 1
    # One of G1's clues past its deadline (red); the others are ACCEPTED with the five days
    # clued was started with (amber).
    cur = c.db.cursor()
    cur.execute("UPDATE clues SET stage_deadline = now() - interval '3 days' WHERE id = %s", (p2.id,))
    c.overdue_clue = p2.id
    # A joint case led by R1 (G1's liaison room) with G1 taking part and one of G1's clues.
    c.case = w.R1.leader.case.CreateJointCase(CS.CreateJointCaseRequest(
        title="某国企工程腐败窝案联合办案", basis="室组地联合", participant_unit_ids=[w.G1.id, w.X1.id],
        clue_ids=[g1[3].id], request_id=new_request_id()), timeout=10)
    c.item = w.G1.leader.rect.CreateItem(RE.CreateItemRequest(
        host_unit="市发展改革委", description="公务接待超标准", category="财务管理",
        source=RE.RECTIFICATION_SOURCE_SUPERVISION, deadline_ms=end_of_day_cst(60),
        request_id=new_request_id()), timeout=10)
    # G1's member is an assigned handler (承办人) of a clue in preliminary check.
    w.G1.leader.clue.AssignHandler(CL.AssignHandlerRequest(clue_id=p2.id, user_id=w.G1.member.id, reason="派员参与",
                                                           request_id=new_request_id()), timeout=10)
    c.assigned_clue = p2.id
    c.g1_clues = g1
    return want


def end_of_day_cst(days):
    """The midnight that ends the day `days` from today in Asia/Shanghai (UTC+08:00), in ms: a
    deadline given as a day, as `cluectl rect create --deadline` sends it."""
    cst = datetime.timezone(datetime.timedelta(hours=8))
    day = datetime.datetime.now(cst).date() + datetime.timedelta(days=days + 1)
    return int(datetime.datetime(day.year, day.month, day.day, tzinfo=cst).timestamp() * 1000)


def cluectl_bytes(*args, server, token, tz=None):
    """What cluectl prints, as bytes (CSV lines end in CRLF)."""
    env = dict(os.environ, CLUED_SERVER=server, CLUED_TOKEN=token, ASAN_OPTIONS="detect_leaks=1")
    if tz:
        env["TZ"] = tz
    r = subprocess.run([harness.CLUECTL, *args], env=env, capture_output=True, timeout=120)
    assert r.returncode == 0 and b"Sanitizer" not in r.stderr, r.stderr.decode(errors="replace")
    return r.stdout


def period(tz):
    """This calendar year in the time zone tz (the browser's and cluectl's), as dates; this
    process keeps tz as its local time."""
    os.environ["TZ"] = tz
    time.tzset()
    y = time.localtime().tm_year
    return f"{y}-01-01", f"{y}-12-31"


def period_ms(frm, to):
    def local_midnight(d, plus_days=0):
        y, m, dd = map(int, d.split("-"))
        return int(time.mktime((y, m, dd + plus_days, 0, 0, 0, 0, 0, -1))) * 1000
    return local_midnight(frm), local_midnight(to, 1)
