"""cluectl's newer command groups against a gRPC server nobody here wrote: Python grpcio.

test_cluectl.py runs these commands against the real clued, but skips those whose methods
clued does not have yet. Here an in-process grpcio server answers them with fixed data,
so that what cluectl sends (fields, dates, page tokens) and how it prints the answers
(tables, CSV quoting, exit codes, the resume line of a watch) are checked today.
Times are shown and read in the zone TZ=CST-8 (UTC+8, no tzdata needed).
"""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import unittest
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import grpc  # noqa: E402

S = harness.stubs()
pb, au, cs, st, cm = S.clue_pb2, S.audit_pb2, S.case_pb2, S.stats_pb2, S.common_pb2
TZ = "CST-8"
JAN1 = 1767196800000  # 2026-01-01 00:00 at UTC+8
DAY = 86400000


def event(seq, action="clue.move", **kw):
    return cm.AuditEvent(seq=seq, at_ms=JAN1 + seq * 60000, actor_user_id=7, actor_unit_id=3, action=action,
                         subject_type="clue", subject_id=42, **kw)


class Clue(S.clue_pb2_grpc.ClueServiceServicer):
    def __init__(self):
        self.seen = []

    def _clue(self, **kw):
        base = dict(id=42, registration_number="G1-2026-0042", title="t", state=cm.CLUE_STATE_ACCEPTED,
                    version=2, owner_unit_id=3)
        base.update(kw)
        return pb.Clue(**base)

    def HandOver(self, request, context):
        self.seen.append(request)
        return self._clue(owner_unit_id=request.to_unit_id, version=request.expected_version + 1)

    def ExtendDeadline(self, request, context):
        self.seen.append(request)
        return self._clue(stage_deadline_ms=JAN1 + 40 * DAY, deadline_extended=True, version=3)

    def AddNote(self, request, context):
        self.seen.append(request)
        return pb.Note(id=5, clue_id=request.clue_id, kind=request.kind, text=request.text, author_user_id=7,
                       author_unit_id=3, created_at_ms=JAN1)

    def ListNotes(self, request, context):
        return pb.ListNotesResponse(notes=[
            pb.Note(id=1, clue_id=42, kind=pb.NOTE_KIND_EVIDENCE_SUMMARY, text="一行\x1b[2J\r", author_user_id=7,
                    author_unit_id=3, created_at_ms=JAN1),
            pb.Note(id=2, clue_id=42, kind=pb.NOTE_KIND_MEETING_MINUTES, text="第一项\n第二项", author_user_id=8,
                    author_unit_id=2, created_at_ms=JAN1 + 3600000),
        ])


class Case(S.case_pb2_grpc.CaseServiceServicer):
    def __init__(self):
        self.seen = []
        self.case = cs.JointCase(id=9, title="某系统窝案", basis="线索关联", lead_unit_id=2, participant_unit_ids=[3, 4],
                                 clues=[cs.CaseClue(clue_id=42, registration_number="G1-2026-0042", title="甲",
                                                    state=cm.CLUE_STATE_FILED, owner_unit_id=3,
                                                    stage_deadline_ms=JAN1 + 90 * DAY, added_at_ms=JAN1)],
                                 created_by=11, created_at_ms=JAN1)

    def CreateJointCase(self, request, context):
        self.seen.append(request)
        return self.case

    def GetJointCase(self, request, context):
        if request.case_id != 9:
            context.abort(grpc.StatusCode.NOT_FOUND, "joint case not found")
        return self.case

    def ListJointCases(self, request, context):
        return cs.ListJointCasesResponse(cases=[self.case])

    def AddParticipant(self, request, context):
        self.seen.append(request)
        c = cs.JointCase()
        c.CopyFrom(self.case)
        c.participant_unit_ids.append(request.unit_id)
        return c

    def RemoveClueFromCase(self, request, context):
        self.seen.append(request)
        c = cs.JointCase()
        c.CopyFrom(self.case)
        del c.clues[:]
        return c


class Audit(S.audit_pb2_grpc.AuditServiceServicer):
    def __init__(self):
        self.seen = []
        self.broken = False
        self.watch_fail_after = None

    def ListAuditEvents(self, request, context):
        self.seen.append(request)
        # Seven events in pages of page_size (default 3); the token is the next start index.
        start = int(request.page_token or "0")
        size = request.page_size or 3
        evs = [event(i) for i in range(1, 8)][start:start + size]
        more = start + size < 7
        return au.ListAuditEventsResponse(events=evs, next_page_token=str(start + size) if more else "")

    def VerifyAuditChain(self, request, context):
        self.seen.append(request)
        if not self.broken:
            return au.VerifyAuditChainResponse(ok=True, subjects_checked=4, events_checked=17)
        return au.VerifyAuditChainResponse(ok=False, subjects_checked=4, events_checked=9, broken=au.BrokenLink(
            subject_type="clue", subject_id=42, seq=12, problem=au.BrokenLink.PROBLEM_CHANGED_CONTENT,
            detail="hash mismatch"))

    def WatchEvents(self, request, context):
        self.seen.append(request)
        for seq in range(request.after_seq + 1, request.after_seq + 4):
            if self.watch_fail_after is not None and seq > request.after_seq + self.watch_fail_after:
                context.abort(grpc.StatusCode.UNAVAILABLE, "database connection lost")
            yield event(seq, from_state=cm.CLUE_STATE_ACCEPTED, to_state=cm.CLUE_STATE_PRELIMINARY_CHECK,
                        reason="初核")
        while context.is_active():  # live: nothing more happens; hold until the client leaves
            time.sleep(0.05)


class Stats(S.stats_pb2_grpc.StatsServiceServicer):
    def __init__(self):
        self.seen = []

    def GetStatistics(self, request, context):
        # The cases in two pages (one case each), every page with the unit figures whole; none
        # with omit_cases.
        self.seen.append(request)
        cases = {"": ([st.CaseStats(case_id=9, title="窝案, 一", clues=3, closed=1, overdue_now=2)], "p2"),
                 "p2": ([st.CaseStats(case_id=12, title="第二页的案件", clues=1)], "")}[request.case_page_token]
        if request.omit_cases:
            cases = ([], "")
        return st.GetStatisticsResponse(
            units=[
                st.UnitStats(unit_id=3, unit_code="G1", unit_name='第一组, "驻发改委"', received=12,
                             preliminary_checks_started=5, filed=2, closed=4, transferred_to_judicial=1,
                             overdue_now=1, median_days_accepted=12.5, median_days_preliminary_check=40,
                             closed_by_disposal=[st.DisposalCount(disposal="TALK_OR_LETTER_INQUIRY", count=3),
                                                 st.DisposalCount(disposal="SANCTION", count=1)]),
                st.UnitStats(unit_id=4, unit_code="G2", unit_name="第二组\n(驻交通局)", received=1,
                             closed_by_disposal=[st.DisposalCount(disposal="SHELVED, later", count=1)]),
            ],
            cases=cases[0],
            zero_disposal_units=[st.ZeroDisposalUnit(unit_id=6, unit_code="X1", unit_name="某区纪委监委")],
            next_case_page_token=cases[1],
        )


class CluectlInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        cls.clue, cls.case, cls.audit, cls.stats = Clue(), Case(), Audit(), Stats()
        S.clue_pb2_grpc.add_ClueServiceServicer_to_server(cls.clue, cls.server)
        S.case_pb2_grpc.add_CaseServiceServicer_to_server(cls.case, cls.server)
        S.audit_pb2_grpc.add_AuditServiceServicer_to_server(cls.audit, cls.server)
        S.stats_pb2_grpc.add_StatsServiceServicer_to_server(cls.stats, cls.server)
        port = cls.server.add_insecure_port("127.0.0.1:0")
        cls.server.start()
        cls.addr = f"127.0.0.1:{port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.stop(0).wait()

    def ctl(self, *args, check=None, **kw):
        return harness.cluectl(*args, env={"CLUED_SERVER": self.addr, "CLUED_TOKEN": "t", "TZ": TZ},
                               check=check, **kw)

    def raw(self, *args):
        """stdout of a successful cluectl as it was written (no newline translation)."""
        env = dict(os.environ, CLUED_SERVER=self.addr, CLUED_TOKEN="t", TZ=TZ, ASAN_OPTIONS="detect_leaks=1")
        r = subprocess.run([harness.CLUECTL, *args], env=env, capture_output=True, timeout=60)
        harness._assert_clean(r.stderr.decode())
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.decode()

    # ---- clue: handover, notes, extend -------------------------------------------------------

    def test_handover(self):
        r = self.ctl("clue", "handover", "42", "--to-unit", "5", "--version", "2", "--reason", "改由二组办理",
                     "--request-id", "0b9a43a5-49b2-4a3c-9d1e-5b1f1c0c7e01", check=0)
        self.assertEqual(r.stdout, "clue 42 handed over to unit 5 (version 3)\n")
        req = self.clue.seen[-1]
        self.assertEqual((req.clue_id, req.to_unit_id, req.expected_version, req.reason, req.request_id),
                         (42, 5, 2, "改由二组办理", "0b9a43a5-49b2-4a3c-9d1e-5b1f1c0c7e01"))

    def test_notes(self):
        r = self.ctl("--json", "clue", "note", "42", "--kind", "interview_record", "--text-file", "-",
                     input="谈话记录\n第二行\n", check=0)
        doc = json.loads(r.stdout)
        req = self.clue.seen[-1]
        self.assertEqual(req.text, "谈话记录\n第二行\n")
        self.assertEqual(req.kind, pb.NOTE_KIND_INTERVIEW_RECORD)
        self.assertEqual(doc["request_id"], req.request_id)
        self.assertEqual(doc["kind"], "NOTE_KIND_INTERVIEW_RECORD")
        r = self.ctl("clue", "note", "42", "--kind", "OTHER", "--text", "x", check=0)
        self.assertEqual(r.stdout, "note 5 added to clue 42\n")
        r = self.ctl("clue", "notes", "42", check=0)
        self.assertEqual(r.stdout,
                         "note 1  EVIDENCE_SUMMARY  2026-01-01 00:00  user 7 (unit 3)\n"
                         "    一行 [2J \n"  # no escape sequence reaches the terminal
                         "\n"
                         "note 2  MEETING_MINUTES  2026-01-01 01:00  user 8 (unit 2)\n"
                         "    第一项\n"
                         "    第二项\n")

    def test_extend(self):
        r = self.ctl("clue", "extend", "42", "--days", "10", "--version", "2", "--reason", "复杂", check=0)
        self.assertEqual(r.stdout, "deadline of clue 42 extended to 2026-02-10 (version 3)\n")
        req = self.clue.seen[-1]
        self.assertEqual((req.days, req.expected_version), (10, 2))
        self.assertRegex(req.request_id, r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

    def test_unimplemented_clue_method(self):
        r = self.ctl("clue", "get", "42", check=1)
        self.assertTrue(r.stderr.startswith("UNIMPLEMENTED"), r.stderr)

    # ---- case --------------------------------------------------------------------------------

    def test_case_commands(self):
        r = self.ctl("case", "create", "--title", "某系统窝案", "--basis", "线索关联", "--participant", "3",
                     "--participant", "4", "--clue", "42", check=0)
        self.assertEqual(r.stdout, "joint case #9 created; lead unit 2, participant units: 3, 4; clues: 42\n")
        req = self.case.seen[-1]
        self.assertEqual((list(req.participant_unit_ids), list(req.clue_ids)), ([3, 4], [42]))
        self.assertTrue(req.request_id)
        r = self.ctl("case", "show", "9", check=0)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[:5], ["Joint case #9: 某系统窝案", "Basis:        线索关联", "Lead unit:    2",
                                     "Participants: 3, 4", "Created:      2026-01-01 00:00 by user 11"])
        self.assertEqual(lines[6].split(), ["CLUE", "NUMBER", "STATE", "OWNER", "DEADLINE", "ADDED", "TITLE"])
        self.assertEqual(lines[7].split(), ["42", "G1-2026-0042", "FILED", "3", "2026-04-01", "2026-01-01", "甲"])
        r = self.ctl("case", "show", "8", check=1)
        self.assertEqual(r.stderr, "NOT_FOUND: joint case not found\n")
        lines = self.ctl("case", "list", check=0).stdout.splitlines()
        self.assertEqual(lines[1].split(), ["9", "某系统窝案", "2", "3,", "4", "1", "2026-01-01", "00:00:00"])
        r = self.ctl("case", "add-participant", "9", "--unit", "6", "--reason", "涉及本区", check=0)
        self.assertEqual(r.stdout, "joint case #9 updated; lead unit 2, participant units: 3, 4, 6; clues: 42\n")
        self.assertEqual((self.case.seen[-1].unit_id, self.case.seen[-1].reason), (6, "涉及本区"))
        r = self.ctl("case", "remove-clue", "9", "--clue", "42", check=0)
        self.assertTrue(r.stdout.endswith("clues: none\n"), r.stdout)
        self.assertEqual(self.case.seen[-1].clue_id, 42)
        r = self.ctl("case", "remove-participant", "9", "--unit", "3", check=1)
        self.assertTrue(r.stderr.startswith("UNIMPLEMENTED"), r.stderr)

    # ---- audit -------------------------------------------------------------------------------

    def test_audit_list_pages(self):
        r = self.ctl("audit", "list", "--subject-type", "clue", "--subject-id", "42", "--actor", "7",
                     "--action", "clue.move", "--from", "2026-01-01", "--to", "2026-01-31", "--after-seq", "0",
                     "--until-seq", "100", check=0)
        req = self.audit.seen[-1]
        self.assertEqual((req.subject_type, req.subject_id, req.actor_user_id, req.action, req.until_seq),
                         ("clue", 42, 7, "clue.move", 100))
        self.assertEqual((req.from_ms, req.to_ms), (JAN1, JAN1 + 31 * DAY))
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 4)
        self.assertEqual(lines[1].split(), ["1", "2026-01-01", "00:01", "clue.move", "clue", "#42", "-", "-", "7",
                                            "3", "-"])
        self.assertEqual(r.stderr, "More results: add --page-token 3 (or --all for every page).\n")
        r = self.ctl("audit", "list", "--page-token", "6", check=0)
        self.assertEqual(len(r.stdout.splitlines()), 2)
        self.assertEqual(r.stderr, "")
        r = self.ctl("--json", "audit", "list", "--all", "--page-size", "2", check=0)
        doc = json.loads(r.stdout)
        self.assertEqual([e["seq"] for e in doc["events"]], list(range(1, 8)))
        self.assertEqual(doc["next_page_token"], "")
        self.assertEqual([x.page_token for x in self.audit.seen[-4:]], ["", "2", "4", "6"])

    def test_audit_verify(self):
        self.audit.broken = False
        r = self.ctl("audit", "verify", check=0)
        self.assertEqual(r.stdout, "OK: 17 events in 4 chains verified\n")
        try:
            self.audit.broken = True
            r = self.ctl("audit", "verify", "--subject-type", "clue", "--subject-id", "42", check=1)
            self.assertEqual(r.stdout, "BROKEN: clue #42 at event 12: CHANGED_CONTENT: hash mismatch\n"
                                       "(checked 9 events in 4 chains)\n")
            self.assertEqual((self.audit.seen[-1].subject_type, self.audit.seen[-1].subject_id), ("clue", 42))
            r = self.ctl("--json", "audit", "verify", check=1)
            doc = json.loads(r.stdout)
            self.assertEqual((doc["ok"], doc["broken"]["problem"]), (False, "PROBLEM_CHANGED_CONTENT"))
        finally:
            self.audit.broken = False

    def test_audit_watch_timeout(self):
        t0 = time.time()
        r = self.ctl("--timeout", "1", "audit", "watch", "--after-seq", "10", "--subject-type", "clue", check=0)
        self.assertLess(time.time() - t0, 10)
        self.assertEqual(r.stdout.splitlines(), [
            f"{s}  2026-01-01 00:{s:02d}  clue.move  clue #42  ACCEPTED -> PRELIMINARY_CHECK  by user 7 (unit 3)  初核"
            for s in (11, 12, 13)])
        self.assertEqual(r.stderr, "last seq 13; resume with: cluectl audit watch --after-seq 13 --subject-type clue\n")
        req = self.audit.seen[-1]
        self.assertEqual((req.after_seq, req.subject_type), (10, "clue"))

    def test_audit_watch_interrupted(self):
        env = dict(os.environ, CLUED_SERVER=self.addr, TZ=TZ, ASAN_OPTIONS="detect_leaks=1")
        p = subprocess.Popen([harness.CLUECTL, "--json", "audit", "watch"], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            seqs = [json.loads(p.stdout.readline())["seq"] for _ in range(3)]
            self.assertEqual(seqs, [1, 2, 3])
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
        harness._assert_clean(err)
        self.assertEqual((p.returncode, out, err),
                         (0, "", "last seq 3; resume with: cluectl audit watch --after-seq 3\n"))

    def test_audit_watch_broken_stream(self):
        self.audit.watch_fail_after = 2
        try:
            r = self.ctl("audit", "watch", "--after-seq", "20", check=1)
        finally:
            self.audit.watch_fail_after = None
        self.assertEqual(len(r.stdout.splitlines()), 2)
        self.assertEqual(r.stderr, "UNAVAILABLE: database connection lost\n"
                                   "last seq 22; resume with: cluectl audit watch --after-seq 22\n")

    # ---- stats -------------------------------------------------------------------------------

    def test_stats_table(self):
        r = self.ctl("stats", "--from", "2026-01-01", "--to", "2026-03-31", "--unit", "3", "--unit", "4", check=0)
        req = self.stats.seen[-1]
        self.assertEqual((req.from_ms, req.to_ms, list(req.unit_ids)), (JAN1, JAN1 + 90 * DAY, [3, 4]))
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "Period: 2026-01-01 to 2026-03-31")
        self.assertEqual(lines[2].split()[:8], ["UNIT", "NAME", "RECEIVED", "CHECKS", "FILED", "CLOSED",
                                                "TRANSFERRED", "OVERDUE"])
        self.assertIn("12.5 / 40.0 / -", lines[3])
        self.assertTrue(lines[3].endswith("TALK_OR_LETTER_INQUIRY 3, SANCTION 1"), lines[3])
        self.assertIn("Joint cases:", lines)
        # Both pages of cases, asked for with the first page's token and the same period.
        cases = lines[lines.index("Joint cases:") + 2:lines.index("Joint cases:") + 4]
        self.assertEqual([ln.split()[0] for ln in cases], ["9", "12"], lines)
        self.assertEqual([(q.case_page_token, q.from_ms, list(q.unit_ids), q.omit_cases)
                          for q in self.stats.seen[-2:]], [("", JAN1, [3, 4], False), ("p2", JAN1, [3, 4], False)])
        self.assertEqual(lines[-1], "Units that disposed of no clue in the period: X1")
        r = self.ctl("--json", "stats", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00+08:00",
                     check=0)
        req = self.stats.seen[-1]
        self.assertEqual((req.from_ms, req.to_ms), (JAN1 + 8 * 3600000, JAN1 + DAY))
        doc = json.loads(r.stdout)
        self.assertEqual(doc["zero_disposal_units"][0]["unit_code"], "X1")
        self.assertEqual([int(k["case_id"]) for k in doc["cases"]], [9, 12])
        self.assertEqual(len(doc["units"]), 2)
        self.assertFalse(doc.get("next_case_page_token"))

    def test_stats_csv(self):
        out = self.raw("stats", "--from", "2026-01-01", "--to", "2026-01-31", "--csv")
        self.assertTrue(self.stats.seen[-1].omit_cases, "the unit CSV asks for no case")
        rows = list(csv.reader(io.StringIO(out, newline="")))
        self.assertEqual(rows[0], ["unit_id", "unit_code", "unit_name", "received", "preliminary_checks_started",
                                   "filed", "closed", "transferred_to_judicial", "overdue_now",
                                   "median_days_accepted", "median_days_preliminary_check", "median_days_filed",
                                   "zero_disposal", "closed_TALK_OR_LETTER_INQUIRY", "closed_SANCTION",
                                   "closed_SHELVED, later"])
        self.assertEqual(rows[1], ["3", "G1", '第一组, "驻发改委"', "12", "5", "2", "4", "1", "1", "12.5", "40", "",
                                   "no", "3", "1", "0"])  # no median: an empty cell
        self.assertEqual(rows[2][:4], ["4", "G2", "第二组\n(驻交通局)", "1"])
        self.assertEqual(rows[2][-3:], ["0", "0", "1"])
        self.assertEqual(rows[3], ["6", "X1", "某区纪委监委", "", "", "", "", "", "", "", "", "", "yes", "", "", ""])
        self.assertEqual(len(rows), 4)
        self.assertIn('"第一组, ""驻发改委"""', out, "quotes are doubled inside a quoted field")
        self.assertIn('"第二组\n(驻交通局)"', out, "a line break inside a field is kept, quoted")
        # RFC 4180: every record ends with CRLF; a bare LF only inside a quoted field.
        self.assertTrue(out.endswith("\r\n"))
        self.assertEqual(out.count("\r\n"), 4)
        out = self.raw("stats", "--from", "2026-01-01", "--to", "2026-01-31", "--csv", "--cases")
        self.assertEqual(out, 'case_id,title,clues,closed,transferred_to_judicial,overdue_now\r\n'
                                   '9,"窝案, 一",3,1,0,2\r\n12,第二页的案件,1,0,0,0\r\n')


if __name__ == "__main__":
    unittest.main(verbosity=2)
