"""The oversight console (issue 15) in a real browser, against the real clued and PostgreSQL.

clued serves the built console (`--console-dir`, scripts/console-build) and gRPC-Web on its
gRPC port; tests/browser/console.mjs drives Debian's Chromium (headless, through
playwright-core from npm) as the people of world.py would, and prints one PASS or FAIL line
per scenario; this file builds the data, runs it, and then checks on the server's side what
the browser did and saw:

- sign-in keeps the bearer token in sessionStorage, never in a URL, localStorage or a log, and
  a bad token is refused with a message;
- a group leader submits a clue and moves it to preliminary check; the group proposes filing,
  the liaison room's leader sees the proposal in their queue and approves it;
- a move sent with a stale version shows "changed meanwhile, reload" (ABORTED) and changes
  nothing; reload shows the new version;
- a member sees no move, handover or extend form, and the server refuses the move anyway when
  the member's page sends it (PERMISSION_DENIED, nothing changed); the member's queue lists
  the clue they are an assigned handler of, and its page names them;
- the auditor's live feed shows new events as they happen, resumes after the server ends the
  stream (--max-stream-age) from the last seq with nothing twice, and shows the chain
  verification and the latest signed checkpoint;
- the statistics page shows the generated dataset's counts (checked first against
  GetStatistics), highlights the zero-disposal units, and its CSV download is byte for byte
  what `cluectl stats --csv` prints for the same period;
- the queue shows overdue (red) and soon-due (amber) deadlines and a handover arrival; joint
  cases and the rectification ledger show what was made; English is one click away;
- a note or a move whose answer was lost on the way back, sent again, is the same request
  (its request id): one note stored, one move made, and the page shows their success;
- a page of another origin that frames the console gets no console in its frame (the
  headers forbid framing: clickjacking), though framing its own page works;
- every page passes axe-core's WCAG 2 A/AA checks (contrast included), every control has a
  label, and the pages are usable from the keyboard (skip link, navigation, forms).

Screenshots of every page go to build-test/console-screenshots/ (CLUED_SCREENSHOT_DIR).
"""

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import world  # noqa: E402
from console_data import CONSOLE_DIR, DAY_MS, build_dataset, cluectl_bytes, keygen, period, period_ms  # noqa: E402
from rawh1 import H1  # noqa: E402
from rawh2 import RawH2  # noqa: E402

S = harness.stubs()
C, CL, CS, RE, ST = S.common_pb2, S.clue_pb2, S.case_pb2, S.rectification_pb2, S.stats_pb2

BROWSER_DIR = os.path.join(harness.SRC, "tests", "browser")
CHROMIUM = "/usr/bin/chromium"
SHOTS = os.environ.get("CLUED_SCREENSHOT_DIR", os.path.join(harness.BUILD, "console-screenshots"))
TZ = "Asia/Shanghai"  # the browser's time zone and cluectl's, for the statistics period
SCENARIOS = 15  # what console.mjs runs; fewer PASS lines is a failure


class Ctx:
    pass


class JsonClued(harness.Clued):
    """clued with --log-format json: the bound address is in the msg of a JSON line."""

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


def prerequisites():
    missing = []
    if not os.path.exists(os.path.join(CONSOLE_DIR, "index.html")):
        missing.append(f"the built console in {CONSOLE_DIR} (scripts/console-build {CONSOLE_DIR})")
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        missing.append(f"playwright-core and axe-core (npm ci --prefix {BROWSER_DIR})")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (scripts/deps --test installs Debian's chromium)")
    assert not missing, "scripts/test prepares these; missing: " + "; ".join(missing)


# ---- the data the pages show ------------------------------------------------------------

# ---- fixtures -----------------------------------------------------------------------------

def setup():
    prerequisites()
    c = Ctx()
    c.tmp = tempfile.mkdtemp(prefix="clued-console-")
    c.pg = harness.Postgres.get()
    c.dbname = c.pg.new_database()
    c.db = c.pg.connect(c.dbname)
    c.db.autocommit = True
    c.srv = JsonClued(c.pg.url(c.dbname), args=[
        "--console-dir", CONSOLE_DIR, "--audit-signing-key", keygen(c.tmp), "--checkpoint-interval", "1s",
        "--max-stream-age", "4s", "--accepted-deadline-days", "5", "--log-format", "json"]).start()
    c.w = world.build(c.srv)
    c.base = f"http://{c.srv.addr}/"
    c.want = build_dataset(c)
    c.frm, c.to = period(TZ)
    c.results = None
    return c


def teardown(c):
    if c is None:
        return
    c.w.close()
    c.db.close()
    c.srv.stop()
    shutil.rmtree(c.tmp, ignore_errors=True)


def stats_now(c):
    f, t = period_ms(c.frm, c.to)
    return c.w.auditor.stats.GetStatistics(ST.GetStatisticsRequest(from_ms=f, to_ms=t), timeout=20)


# ---- tests --------------------------------------------------------------------------------

def test_dataset_statistics_are_as_generated(c):
    got = {u.unit_code: u for u in stats_now(c).units}
    for code, fig in c.want.items():
        for k, v in fig.items():
            assert getattr(got[code], k) == v, f"{code} {k}: {getattr(got[code], k)} != {v}"
    zero = {z.unit_code for z in stats_now(c).zero_disposal_units}
    assert zero == {"R1", "R2", "G3", "X1"}, zero


def test_console_is_served(c):
    with urllib.request.urlopen(c.base, timeout=10) as r:
        html = r.read().decode()
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html"), r.headers
    script = html.split('src="', 1)[1].split('"', 1)[0]
    assert script.startswith("/assets/main-") and script.endswith(".js"), script
    with urllib.request.urlopen(urllib.parse.urljoin(c.base, script), timeout=10) as r:
        assert r.status == 200 and "javascript" in r.headers["Content-Type"], r.headers
        assert "immutable" in (r.headers.get("Cache-Control") or ""), r.headers


def meta_csp():
    with open(os.path.join(CONSOLE_DIR, "index.html")) as f:
        return re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', f.read()).group(1)


def test_no_page_may_frame_the_console(c):
    """Every console file says, in headers (frame-ancestors works only there, not in the
    <meta>), that no page may frame it: the <meta> policy plus frame-ancestors 'none', and
    X-Frame-Options: DENY; and that a page of another origin that opens it gets no hold on
    its window (Cross-Origin-Opener-Policy: same-origin); over HTTP/1.1 and HTTP/2, and on a
    304 as well."""
    want = meta_csp() + "; frame-ancestors 'none'"
    with urllib.request.urlopen(c.base, timeout=10) as r:
        script = r.read().decode().split('src="', 1)[1].split('"', 1)[0]
    h = H1(c.srv.addr)
    for path in ("/", script, "/clue/17"):
        r = h.request("GET", path)
        assert r.status == 200, (path, r.status)
        assert r.header("content-security-policy") == want, (path, r.headers)
        assert r.header("x-frame-options") == "DENY", (path, r.headers)
        assert r.header("cross-origin-opener-policy") == "same-origin", (path, r.headers)
        r = h.request("GET", path, headers=[("If-None-Match", r.header("etag"))])
        assert r.status == 304 and r.header("content-security-policy") == want, (path, r.headers)
        assert r.header("x-frame-options") == "DENY", (path, r.headers)
        assert r.header("cross-origin-opener-policy") == "same-origin", (path, r.headers)
    h.close()
    h2c = RawH2(c.srv.addr)
    for path in ("/", script):
        r = h2c.call(path, b"", method="GET", content_type=None)
        assert r.http_status == 200, (path, r.http_status)
        assert r.headers["content-security-policy"] == want, (path, r.headers)
        assert r.headers["x-frame-options"] == "DENY", (path, r.headers)
        assert r.headers["cross-origin-opener-policy"] == "same-origin", (path, r.headers)
    h2c.close()


def test_a_nested_route_loads_its_assets(c):
    """/clue/17 typed into the address bar is answered with index.html, whose assets must be
    found from there too: their URLs are absolute."""
    url = urllib.parse.urljoin(c.base, "/clue/17")
    with urllib.request.urlopen(url, timeout=10) as r:
        html = r.read().decode()
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html"), r.headers
    named = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(named) == 2, named
    for ref in named:
        asset = urllib.parse.urljoin(url, ref)
        assert urllib.parse.urlsplit(asset).path.startswith("/assets/main-"), (ref, asset)
        with urllib.request.urlopen(asset, timeout=10) as r:
            assert r.status == 200 and re.search("javascript|css", r.headers["Content-Type"]), (asset, r.headers)


def run_browser_script(c, script, cfg, scenarios):
    """Run tests/browser/SCRIPT with cfg as its JSON config; every one of its scenarios must
    pass. Its output (PASS or FAIL per scenario) is echoed."""
    path = os.path.join(c.tmp, f"config-{script}.json")
    with open(path, "w") as f:
        json.dump(cfg, f, ensure_ascii=False)
    r = subprocess.run(["node", os.path.join(BROWSER_DIR, script), path], capture_output=True, text=True,
                       timeout=600, cwd=BROWSER_DIR)
    sys.stdout.write(r.stdout + r.stderr)
    passed = [ln for ln in r.stdout.splitlines() if ln.startswith("PASS ")]
    assert r.returncode == 0 and len(passed) == scenarios, f"{script} exited {r.returncode}, {len(passed)} passed"


def browser_cfg(c):
    """What every browser script is given: the console's address, Chromium, the time zone and
    where screenshots go."""
    return {"base": c.base, "chromium": CHROMIUM, "timezone": TZ, "shots": SHOTS}


def test_browser_scenarios(c):
    if os.path.isdir(SHOTS):
        shutil.rmtree(SHOTS)
    os.makedirs(SHOTS)
    w = c.w
    cfg = browser_cfg(c) | {
        "download": os.path.join(c.tmp, "stats.csv"),
        "results": os.path.join(c.tmp, "results.json"),
        "period": [c.frm, c.to],
        "tokens": {"g1_leader": w.G1.leader.token, "g1_member": w.G1.member.token, "r1_leader": w.R1.leader.token,
                   "auditor": w.auditor.token},
        "units": {code: {"id": w.units[code].id} for code in ("R1", "G1", "G2", "G3", "X1")},
        "want": c.want,
        "zero": ["R1", "R2", "G3", "X1"],
        "overdue_clue": c.overdue_clue,
        "handed_clue": c.handed.id,
        "assigned_clue": c.assigned_clue,
        "case": {"id": c.case.id, "title": c.case.title},
        "item": {"id": c.item.id, "category": c.item.category, "deadlineMs": c.item.deadline_ms},
    }
    run_browser_script(c, "console.mjs", cfg, SCENARIOS)
    with open(cfg["results"]) as f:
        c.results = json.load(f)
    c.cfg = cfg


def need_results(c):
    assert c.results is not None, "the browser scenarios did not finish"
    return c.results


def test_browser_moves_are_on_the_record(c):
    res = need_results(c)
    w = c.w
    clue = w.auditor.clue.GetClue(CL.GetClueRequest(clue_id=res["clue_id"]), timeout=10)
    assert clue.state == C.CLUE_STATE_FILED and clue.title == res["clue_title"], clue
    actions = [(e.action, C.ClueState.Name(e.to_state), e.actor_user_id)
               for e in w.auditor.clue.GetHistory(CL.GetHistoryRequest(clue_id=clue.id), timeout=10).events]
    assert actions[:2] == [("clue.submit", "CLUE_STATE_ACCEPTED", w.G1.leader.id),
                           ("clue.move", "CLUE_STATE_PRELIMINARY_CHECK", w.G1.leader.id)], actions
    assert ("proposal.approve", "CLUE_STATE_FILED", w.R1.leader.id) in actions, actions
    assert [a for a in actions if a[0] == "clue.deadline_extend" and a[2] == w.G1.leader.id], actions
    # The stale move and the member's refused one changed nothing: FILED at the version the
    # extension left, and no move out of FILED.
    assert clue.version == res["version_after_extend"], (clue.version, res)
    assert not [a for a in actions if a[1] in ("CLUE_STATE_CLOSED", "CLUE_STATE_TRANSFERRED_TO_JUDICIAL")], actions


def test_csv_download_is_what_cluectl_prints(c):
    need_results(c)
    with open(c.cfg["download"], "rb") as f:
        downloaded = f.read()
    printed = cluectl_bytes("stats", "--from", c.frm, "--to", c.to, "--csv", server=c.srv.addr,
                            token=c.w.auditor.token, tz=TZ)
    assert downloaded == printed, f"browser:\n{downloaded.decode()}\ncluectl:\n{printed.decode()}"
    assert downloaded.count(b"\r\n") == len(stats_now(c).units) + 1


def test_no_token_in_the_server_log(c):
    need_results(c)
    log = c.srv.output()
    for tok in c.cfg["tokens"].values():
        assert tok not in log, "a token reached clued's log"
    # Every call the browser made is logged with its method (JSON log format).
    assert "/clue.v1.TokenService/GetCaller" in log and "/clue.v1.AuditService/WatchEvents" in log


def test_screenshots_of_every_page(c):
    need_results(c)
    names = sorted(os.listdir(SHOTS))
    for page in ("signin", "queue", "queue-en", "clue", "clue-stale", "clue-member", "review", "cases", "stats",
                 "audit", "ledger"):
        assert f"{page}.png" in names, (page, names)
    for n in names:
        with open(os.path.join(SHOTS, n), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", n


def all_pages(method, req, field):
    """The rows of every page of a list, and how many pages the server cut it into."""
    rows, pages = [], 0
    while True:
        resp = method(req, timeout=60)
        rows += list(getattr(resp, field))
        pages += 1
        if not resp.next_page_token:
            return rows, pages
        req.page_token = resp.next_page_token


def test_console_edges(c):
    """tests/browser/console_edges.mjs (docs/CONSOLE.md): the reviewer sees the outcome a
    proposal carries (a transfer's receiving organ); an action's success message shows above
    its own clue only (a handover, after which the clue's page is refused, left it above the
    next clue opened); a statistics period of 36 months
    charts the latest 24 and names the 12 left out; pages whose calls fail say the server is
    unavailable, drop "loading" and retry; texts past the server's UTF-8 byte limits are not
    sent; the state machine's labels fit their boxes in both languages; five of six audit tabs
    in the background free their connections (HTTP/1.1), so a seventh loads, and a tab shown
    again misses nothing; a feed behind a connection gone silent hears no heartbeat, reconnects
    and shows what happened meanwhile once."""
    prerequisites()
    os.makedirs(SHOTS, exist_ok=True)
    w = c.w
    # A transfer to a judicial organ proposed for R1's review: the reviewer must see the organ.
    # And a clue of G1's that the browser hands over to G2.
    filed = w.G1.leader.clue.GetClue(CL.GetClueRequest(clue_id=c.g1_clues[0].id), timeout=10)
    organ = "某某科技有限公司（非司法机关）"
    w.G1.leader.clue.RequestTransition(CL.RequestTransitionRequest(
        clue_id=filed.id, expected_version=filed.version, target=C.CLUE_STATE_TRANSFERRED_TO_JUDICIAL,
        reason="移送市人民检察院", details=CL.TransitionDetails(receiving_organ=organ),
        request_id=harness.new_request_id()), timeout=10)
    handed = w.G1.member.clue.SubmitClue(CL.SubmitClueRequest(
        request_id=harness.new_request_id(), title="待移交", summary="s", source=CL.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=CL.SubjectPerson(name="张某"), host_unit="市发展改革委"), timeout=10)
    cfg = browser_cfg(c) | {
        "tokens": {"g1_leader": w.G1.leader.token, "auditor": w.auditor.token, "r1_leader": w.R1.leader.token},
        "clue": c.overdue_clue,
        "case": c.case.id,
        "transfer": {"clue": filed.id, "organ": organ},
        "handover": {"clue": handed.id, "to": w.G2.id},
    }
    run_browser_script(c, "console_edges.mjs", cfg, 8)


def test_a_retry_after_a_lost_answer_is_the_same_request(c):
    """tests/browser/console_retry.mjs (docs/CONSOLE.md, "Who sees what"): the first AddNote's
    and the first RequestTransition's answers are lost on the way back (a connection reset
    after clued answered); the page says the server is unavailable, and the form sent again
    carries the same request id, so clued answers with what the first call did. On the server's
    side: the note is stored once, and the clue moved once (ACCEPTED to PRELIMINARY_CHECK, one
    version on). A note changed after its lost answer is another request: both are stored."""
    prerequisites()
    w = c.w
    fresh = w.G1.member.clue.SubmitClue(CL.SubmitClueRequest(
        request_id=harness.new_request_id(), title="重试的变更", summary="s",
        source=CL.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=CL.SubjectPerson(name="钱某"),
        host_unit="市发展改革委"), timeout=10)
    stamp = time.time_ns()
    note = {"clue": c.overdue_clue, "text": f"约谈记录：当事人承认收受礼金 {stamp}",
            "first": f"谈话记录（初稿） {stamp}", "changed": f"谈话记录（改稿） {stamp}"}
    cfg = browser_cfg(c) | {
        "tokens": {"g1_leader": w.G1.leader.token},
        "note": note,
        "move": {"clue": fresh.id, "version": fresh.version, "reason": "线索具有可查性，开展初核"},
    }
    run_browser_script(c, "console_retry.mjs", cfg, 3)
    texts, after = [], 0
    while True:
        r = w.G1.leader.clue.ListNotes(CL.ListNotesRequest(clue_id=c.overdue_clue, after_note_id=after,
                                                           page_size=500), timeout=10)
        texts += [n.text for n in r.notes]
        if not r.more:
            break
        after = r.notes[-1].id
    for key in ("text", "first", "changed"):
        assert texts.count(note[key]) == 1, (key, texts.count(note[key]))
    clue = w.G1.leader.clue.GetClue(CL.GetClueRequest(clue_id=fresh.id), timeout=10)
    assert clue.state == C.CLUE_STATE_PRELIMINARY_CHECK and clue.version == fresh.version + 1, clue
    moves = [e for e in w.G1.leader.clue.GetHistory(CL.GetHistoryRequest(clue_id=fresh.id), timeout=10).events
             if e.action == "clue.move"]
    assert len(moves) == 1 and moves[0].actor_user_id == w.G1.leader.id, moves


BIG = "反" * 6666  # 19,998 bytes: a summary at its limit, a hundredth of a 2 MiB page


def test_lists_longer_than_a_page_are_shown_whole(c):
    """Lists past one page of the server (docs/CONSOLE.md, "Long lists"), each checked first to
    be cut into pages by clued: a clue's history of 1,101 events (pages of at most 1,000), its
    1,100 notes (pages of 500) and its 400 decided proposals of 8 KB each (pages of about 2 MiB)
    are shown whole on its page; the auditor's joint cases list
    shows the 1,000 cases R2 opened and the one R1 opened before them, beyond the first page
    (500 cases), and the statistics page the same cases past its first page (1,000 cases);
    G1's queue, 110 clues of 20 KB newer than its overdue clue (a page ends at about 2 MiB),
    still shows that clue first, in red; the ledger shows its newest 500 items and the rest
    after "show more"; the auditor's ledger shows the figures of its 1,001+ host units (two
    pages of GetLedgerStats) and their total. Runs after the other browser scenarios: the data it adds
    would change their figures and pages."""
    prerequisites()
    os.makedirs(SHOTS, exist_ok=True)
    w = c.w
    now_ms = int(time.time() * 1000)
    long_clue = c.g1_clues[4]
    with c.db.cursor() as cur:
        # Through the functions AddNote and CreateJointCase call, audited as they would be.
        cur.execute("SELECT count(*) FROM (SELECT note_add(%s, %s, gen_random_uuid(), %s, %s, %s, 'OTHER', '会商' || g)"
                    " FROM generate_series(1, 1100) g) n", (w.G1.member.id, w.G1.id, now_ms, long_clue.id, w.G1.id))
        # Proposals the liaison room rejected, with a reason and a comment of 4,095 bytes each
        # (planted as rows: neither the list nor the page reads anything else).
        cur.execute("INSERT INTO proposals (clue_id, owner_unit, from_state, target, reason, proposer_user,"
                    " proposer_unit, reviewer_unit, status, clue_version, review_comment, reviewed_by, created_at,"
                    " decided_at) SELECT %s, %s, 'PRELIMINARY_CHECK', 'FILED', %s || g, %s, %s, %s, 'REJECTED', 1,"
                    " %s, %s, now(), now() FROM generate_series(1, 400) g",
                    (long_clue.id, w.G1.id, "理" * 1365, w.G1.leader.id, w.G1.id, w.R1.id, "驳" * 1365,
                     w.R1.leader.id))
        cur.execute("SELECT count(*) FROM generate_series(1, 1000) g, case_create(%s, %s, gen_random_uuid(), %s,"
                    " '填充案件 ' || g, '', '{}', '{}', '{}')", (w.R2.leader.id, w.R2.id, now_ms))
        cur.execute("SELECT count(*) FROM generate_series(1, 510) g, rect_create(%s, %s, gen_random_uuid(), %s,"
                    " '市发展改革委', '填充事项 ' || g, '填充', 'SUPERVISION', NULL, NULL, %s)",
                    (w.G1.leader.id, w.G1.id, now_ms, now_ms + 60 * DAY_MS))
        # R2's supervision of 1,001 host units: the auditor's ledger figures come in two pages.
        cur.execute("SELECT count(*) FROM generate_series(1, 1001) g, rect_create(%s, %s, gen_random_uuid(), %s,"
                    " '被监督单位' || lpad(g::text, 4, '0'), '填充事项', '填充', 'SUPERVISION', NULL, NULL, %s)",
                    (w.R2.leader.id, w.R2.id, now_ms, now_ms + 60 * DAY_MS))

    def big(i):
        w.G1.member.clue.SubmitClue(CL.SubmitClueRequest(
            request_id=harness.new_request_id(), title=f"填充线索 {i}", summary=BIG,
            source=CL.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=CL.SubjectPerson(name="某某"),
            host_unit="市发展改革委"), timeout=60)
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        list(ex.map(big, range(110)))

    events, pages = all_pages(w.G1.leader.clue.GetHistory, CL.GetHistoryRequest(clue_id=long_clue.id), "events")
    assert len(events) > 1100 and pages == 2, (len(events), pages)
    notes = w.G1.leader.clue.ListNotes(CL.ListNotesRequest(clue_id=long_clue.id, page_size=500), timeout=60)
    assert len(notes.notes) == 500 and notes.more, (len(notes.notes), notes.more)
    proposals, pages = all_pages(w.G1.leader.clue.ListProposals, CL.ListProposalsRequest(
        clue_id=long_clue.id, include_decided=True), "proposals")
    assert len(proposals) >= 400 and pages == 2, (len(proposals), pages)
    cases, pages = all_pages(w.auditor.case.ListJointCases, CS.ListJointCasesRequest(), "cases")
    first = w.auditor.case.ListJointCases(CS.ListJointCasesRequest(), timeout=60).cases
    assert len(cases) == 1001 and pages == 3 and c.case.id not in [x.id for x in first], (len(cases), pages)
    f, t = period_ms(c.frm, c.to)
    req = ST.GetStatisticsRequest(from_ms=f, to_ms=t)
    stats_pages = []
    while not stats_pages or stats_pages[-1].next_case_page_token:
        req.case_page_token = stats_pages[-1].next_case_page_token if stats_pages else ""
        stats_pages.append(w.auditor.stats.GetStatistics(req, timeout=60))
    stats_cases = [k.case_id for p in stats_pages for k in p.cases]
    assert len(stats_pages) == 2 and sorted(stats_cases) == sorted(x.id for x in cases), len(stats_pages)
    active = [C.CLUE_STATE_ACCEPTED, C.CLUE_STATE_PRELIMINARY_CHECK, C.CLUE_STATE_FILED]
    queue, pages = all_pages(w.G1.leader.clue.ListClues, CL.ListCluesRequest(
        states=active, owner_unit_id=w.G1.id, page_size=500), "clues")
    first = w.G1.leader.clue.ListClues(CL.ListCluesRequest(states=active, owner_unit_id=w.G1.id, page_size=500),
                                       timeout=60).clues
    assert pages == 2 and c.overdue_clue not in [x.id for x in first], (len(queue), pages)
    items, pages = all_pages(w.G1.leader.rect.ListItems, RE.ListItemsRequest(page_size=500), "items")
    assert len(items) > 510 and pages == 2, (len(items), pages)
    lines, pages = all_pages(w.auditor.rect.GetLedgerStats, RE.GetLedgerStatsRequest(), "host_units")
    total = w.auditor.rect.GetLedgerStats(RE.GetLedgerStatsRequest(), timeout=60).total
    assert len(lines) > 1001 and pages == 2 and total.found == sum(x.found for x in lines), (len(lines), pages)

    cfg = browser_cfg(c) | {
        "tokens": {"g1_leader": w.G1.leader.token, "auditor": w.auditor.token},
        "long_clue": {"id": long_clue.id, "events": len(events), "notes": 1100, "proposals": len(proposals),
                      "oldest_proposal": proposals[-1].id},
        "cases": {"count": len(cases), "oldest": c.case.id, "title": c.case.title},
        "queue": {"count": len(queue), "overdue": c.overdue_clue},
        "items": {"count": len(items), "oldest": c.item.id},
        "ledger": {"lines": len(lines), "last": lines[-1].host_unit, "found": total.found},
        "period": [c.frm, c.to],
        "stats_cases": {"count": len(stats_cases), "last": stats_cases[-1]},
    }
    run_browser_script(c, "console_long.mjs", cfg, 6)


RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: what follows it, to the end of its paragraph, is drawn reversed


def test_server_text_cannot_reorder_the_page(c):
    """Bidirectional controls in the server's text (docs/CONSOLE.md, "Text from the server"):
    a user's, a unit's and a person's name, a clue's and a case's title with an unterminated
    U+202E, written by SQL as rows stored before the server refused them in single-line fields,
    and a note that carries one as free text may. console_bidi.mjs checks, where Chromium draws
    them, that the text after such a name on its line keeps its order (the header, a note's
    and an event's byline, the person's position), that single-line values show the control by
    name (<U+202E>, as cluectl does), and that the note keeps it, in an element of its own that
    isolates it; the statistics CSV keeps the unit's name as stored, byte for byte what
    `cluectl stats --csv` prints. Runs last: it renames people and units that the scenarios
    before it look for."""
    prerequisites()
    os.makedirs(SHOTS, exist_ok=True)
    w = c.w
    with c.db.cursor() as cur:
        cur.execute("UPDATE users SET name = name || %s || '甲乙' WHERE id = %s", (RLO, w.G1.leader.id))
        cur.execute("UPDATE units SET name = name || %s || '丙丁' WHERE id = %s", (RLO, w.X1.id))
        cur.execute("UPDATE joint_cases SET title = title || %s || '戊己' WHERE id = %s", (RLO, c.case.id))
    clue = w.G1.leader.clue.SubmitClue(CL.SubmitClueRequest(
        request_id=harness.new_request_id(), title="双向控制符", summary="摘要" + RLO + "正文",
        source=CL.SOURCE_CHANNEL_LETTER_VISIT_REPORT, subject=CL.SubjectPerson(name="王某", position="副处长"),
        host_unit="市发展改革委"), timeout=10)
    with c.db.cursor() as cur:
        cur.execute("UPDATE clues SET title = title || %s || '庚辛', subject_name = subject_name || %s || '壬癸'"
                    " WHERE id = %s", (RLO, RLO, clue.id))
    w.G1.leader.clue.AddNote(CL.AddNoteRequest(clue_id=clue.id, kind=CL.NOTE_KIND_OTHER, text="会商" + RLO + "子丑\n第二行",
                                               request_id=harness.new_request_id()), timeout=10)
    cfg = browser_cfg(c) | {
        "download": os.path.join(c.tmp, "stats-bidi.csv"),
        "period": [c.frm, c.to],
        "tokens": {"g1_leader": w.G1.leader.token, "r1_leader": w.R1.leader.token, "auditor": w.auditor.token},
        "clue": clue.id,
        "case": c.case.id,
    }
    run_browser_script(c, "console_bidi.mjs", cfg, 3)
    with open(cfg["download"], "rb") as f:
        downloaded = f.read()
    printed = cluectl_bytes("stats", "--from", c.frm, "--to", c.to, "--csv", server=c.srv.addr,
                            token=w.auditor.token, tz=TZ)
    assert downloaded == printed, f"browser:\n{downloaded.decode()}\ncluectl:\n{printed.decode()}"
    assert (RLO + "丙丁").encode() in downloaded, downloaded.decode()


if __name__ == "__main__":
    harness.run_tests(globals(), setup=setup, teardown=teardown)
