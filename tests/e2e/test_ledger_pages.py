"""GetLedgerStats in pages (docs/LEDGER.md, "Ledger statistics"), end to end: grpcio and cluectl
against the real clued and PostgreSQL.

A ROOM leader records items in 1,001 host units through the API (a ledger used to stop at
1,000 lines without a word); read in small pages, every line comes exactly once, in the
database's order of names, with its own figures, and every page carries the same total, the
sum of all the lines; the default and largest page is 1,000 lines; items recorded while the
pages are read neither repeat nor skip a line; `cluectl rect stats` shows every line and the
total. Bad page sizes and tokens are INVALID_ARGUMENT naming their fields (BadRequest), and a
token only serves the caller and the supervising_unit_id it was issued for, so that another
caller or filter gets nothing through it. The total counts what the lines count: a unit
outside the caller's view adds nothing, and a caller who sees no item gets a zero total that
is not cleared.

ListItems' pages last: items with texts at their limits come in pages that end early, each
item once, and PostgreSQL sends clued about one page of them, not page_size + 1 items (bytes
counted by a proxy in front of it); a ListItems token, too, serves only its caller and its
filters.
"""

import concurrent.futures
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
from test_rectification import now_ms, teardown  # noqa: E402
import world  # noqa: E402
from test_rich_errors import failure, status_of  # noqa: E402

S = harness.stubs()
rp = S.rectification_pb2
Code = grpc.StatusCode
DAY_MS = 86400000
HOSTS = 1001  # one more than a page of the largest size
PREFIX = "被监督单位"


class Ctx:
    pass


def setup():
    c = Ctx()
    pg = harness.Postgres.get()
    c.dbname = pg.new_database("ledgerpages")
    c.url = pg.url(c.dbname)
    c.srv = harness.Clued(c.url).start()
    c.w = world.build(c.srv)
    c.db = pg.connect(c.dbname)
    c.expected = {}  # host unit -> [found, rectified, overdue 40 days on] for R2's leader
    build(c)
    return c



def create(user, host, days):
    return user.rect.CreateItem(rp.CreateItemRequest(
        host_unit=host, description="问题", category="财务管理", source=rp.RECTIFICATION_SOURCE_SUPERVISION,
        deadline_ms=now_ms() + days * DAY_MS, request_id=new_request_id()), timeout=30)


def verified(user, it):
    """The item planned, submitted and verified by user (a LEADER of its unit)."""
    for fn, req in ((user.rect.RecordPlan, rp.RecordPlanRequest(plan="方案")),
                    (user.rect.Submit, rp.SubmitRequest(evidence="证据")),
                    (user.rect.Verify, rp.VerifyRequest(comment="到位"))):
        req.item_id, req.expected_version, req.request_id = it.id, it.version, new_request_id()
        it = fn(req, timeout=30)
    return it


def build(c):
    """R2's leader records one item in each of HOSTS host units, a second one in every tenth;
    every third host unit's items are due in 10 days (the others in 60), every fiftieth's are
    verified. G3 (liaised by R2) and G1 (not) record items of their own."""
    w = c.w
    L = w.R2.leader

    def one(i):
        host = f"{PREFIX}{i:04d}"
        days = 10 if i % 3 == 0 else 60
        items = [create(L, host, days) for _ in range(2 if i % 10 == 0 else 1)]
        if i % 50 == 0:
            items = [verified(L, it) for it in items]
        ok = i % 50 == 0
        return host, [len(items), len(items) if ok else 0, 0 if ok or days == 60 else len(items)]

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        c.expected = dict(ex.map(one, range(HOSTS)))
    create(w.G3.leader, "市卫生健康委", 10)
    verified(w.G3.leader, create(w.G3.leader, "市医保局", 60))
    c.expected["市卫生健康委"] = [1, 0, 1]
    c.expected["市医保局"] = [1, 1, 0]
    create(w.G1.leader, "市发展改革委", 10)  # R1's and G1's: R2 never sees it
    print(f"  recorded {sum(f for f, _, _ in c.expected.values()) + 1} items in {time.time() - t0:.1f}s", flush=True)


def stats(user, **kw):
    return user.rect.GetLedgerStats(rp.GetLedgerStatsRequest(**kw), timeout=60)


def pages(user, **kw):
    """Every page of the ledger, first to last."""
    out, token = [], ""
    while True:
        r = stats(user, page_token=token, **kw)
        out.append(r)
        if not r.next_page_token:
            return out
        assert len(out) < 100, "the pages do not end"
        token = r.next_page_token


def names_in_db_order(c, where="TRUE"):
    """The host units of the items matching where, distinct, in PostgreSQL's order of names."""
    with c.db.cursor() as cur:
        cur.execute(f"SELECT DISTINCT host_unit FROM rect_items i JOIN units u ON u.id = i.supervising_unit"
                    f" WHERE {where} ORDER BY host_unit")
        return [r[0] for r in cur.fetchall()]


def figures(h):
    return (h.found, h.rectified, h.overdue, h.cleared)


def test_small_pages_hold_every_line_once_and_the_total(c):
    w = c.w
    want = names_in_db_order(c, f"i.supervising_unit = {w.R2.id} OR u.liaison_room_id = {w.R2.id}")
    assert len(want) == HOSTS + 2, len(want)
    for size in (97, 1, 1000):
        if size == 1:  # one line a page: the first 30 pages are enough to follow
            got = []
            r = stats(w.R2.leader, page_size=1)
            for _ in range(30):
                assert len(r.host_units) == 1 and r.next_page_token, r
                got += [h.host_unit for h in r.host_units]
                r = stats(w.R2.leader, page_size=1, page_token=r.next_page_token)
            assert got == want[:30], got
            continue
        ps = pages(w.R2.leader, page_size=size)
        lines = [h for p in ps for h in p.host_units]
        assert [h.host_unit for h in lines] == want, "a line is missing, repeated or out of order"
        assert [len(p.host_units) for p in ps[:-1]] == [size] * (len(ps) - 1), [len(p.host_units) for p in ps]
        assert len(ps) == -(-len(want) // size), (len(ps), size)
        for h in lines:
            f, r, _ = c.expected[h.host_unit]
            assert (h.found, h.rectified, h.overdue, h.cleared) == (f, r, 0, f == r), h
        total = (sum(h.found for h in lines), sum(h.rectified for h in lines), 0, False)
        for p in ps:
            assert p.total.host_unit == "" and figures(p.total) == total, (p.total, total)
    exp = [sum(x[k] for x in c.expected.values()) for k in range(3)]
    assert (total[0], total[1]) == (exp[0], exp[1]), (total, exp)
    # The default page and the largest are 1,000 lines, both followed by a token.
    for size in (0, 1000, 1001, 2**31 - 1):
        r = stats(w.R2.leader, page_size=size)
        assert len(r.host_units) == 1000 and r.next_page_token, (size, len(r.host_units))
        assert [h.host_unit for h in r.host_units] == want[:1000]
    # One unit's items only: its own lines and total.
    ps = pages(w.R2.leader, supervising_unit_id=w.G3.id, page_size=1)
    assert [h.host_unit for p in ps for h in p.host_units] == names_in_db_order(c, f"i.supervising_unit = {w.G3.id}")
    assert figures(ps[0].total) == (2, 1, 0, False), ps[0].total


def test_total_counts_overdue_and_cleared_as_the_lines(c):
    # Forty days on, the items due in 10 days and not verified are overdue, in the lines and
    # in the total alike; a ledger of verified items only is cleared, one with none is not.
    w = c.w
    later = harness.Clued(c.url, args=["--test-clock-offset-ms", str(40 * DAY_MS)]).start(migrate=False)
    try:
        ch = grpc.intercept_channel(grpc.insecure_channel(later.addr), world._Auth(w.R2.leader.token))
        stub = S.rectification_pb2_grpc.RectificationServiceStub(ch)
        ps, token = [], ""
        while True:
            r = stub.GetLedgerStats(rp.GetLedgerStatsRequest(page_size=400, page_token=token), timeout=60)
            ps.append(r)
            token = r.next_page_token
            if not token:
                break
        ch.close()
    finally:
        later.stop()
    lines = {h.host_unit: h for p in ps for h in p.host_units}
    assert len(lines) == HOSTS + 2
    for name, (f, r, o) in c.expected.items():
        assert figures(lines[name]) == (f, r, o, f == r), (name, lines[name])
    exp = tuple(sum(x[k] for x in c.expected.values()) for k in range(3))
    assert exp[2] > 0
    for p in ps:
        assert figures(p.total) == (*exp, False), (p.total, exp)
    # G1's leader sees G1's one open item; verified, its ledger is cleared.
    it = w.G1.leader.rect.ListItems(rp.ListItemsRequest(), timeout=30).items
    assert len(it) == 1
    assert figures(stats(w.G1.leader).total) == (1, 0, 0, False)
    verified(w.G1.leader, it[0])
    r = stats(w.G1.leader)
    assert figures(r.total) == (1, 1, 0, True) and figures(r.host_units[0]) == (1, 1, 0, True), r
    # Nothing seen, nothing cleared: the ADMIN sees no item, G2's leader none of G2 (none).
    for user, kw in ((w.admin, {}), (w.G2.leader, {}), (w.R2.leader, {"supervising_unit_id": w.G2.id})):
        r = stats(user, **kw)
        assert not r.host_units and not r.next_page_token and r.HasField("total"), r
        assert figures(r.total) == (0, 0, 0, False) and r.total.host_unit == "", r.total


def test_items_recorded_meanwhile_neither_repeat_nor_skip_a_line(c):
    # While R2's leader reads its ledger 150 lines at a time, items are recorded in a host
    # unit already passed, in a new one before the page's last name and in a new one after it:
    # every line there was is read exactly once, the new one ahead is read, the one behind is
    # not (it is in the total).
    w = c.w
    L = w.R2.leader
    before = [h.host_unit for p in pages(L, page_size=1000) for h in p.host_units]
    first = stats(L, page_size=150)
    got = [h.host_unit for h in first.host_units]
    passed, last = got[10], got[-1]
    create(L, passed, 60)
    create(L, last[:-1] + "0" + last[-1], 60)  # before last: a page already read
    create(L, f"{PREFIX}9999", 60)
    token = first.next_page_token
    while token:
        r = stats(L, page_size=150, page_token=token)
        got += [h.host_unit for h in r.host_units]
        token = r.next_page_token
    assert len(got) == len(set(got)), "a line came twice"
    assert [n for n in got if n != f"{PREFIX}9999"] == before, "a line was skipped"
    assert f"{PREFIX}9999" in got
    assert r.total.found == first.total.found + 3, (r.total.found, first.total.found)
    c.expected[passed][0] += 1
    c.expected[last[:-1] + "0" + last[-1]] = [1, 0, 0]
    c.expected[f"{PREFIX}9999"] = [1, 0, 0]


def test_cluectl_shows_every_line_and_the_total(c):
    w = c.w
    env = {"CLUED_SERVER": c.srv.addr, "CLUED_TOKEN": w.R2.leader.token}
    want = [h.host_unit for p in pages(w.R2.leader) for h in p.host_units]
    total = stats(w.R2.leader).total
    assert len(want) > 1000
    for extra in ((), ("--page-size", "300")):
        r = harness.cluectl("--json", "rect", "stats", *extra, env=env, check=0)
        j = json.loads(r.stdout)
        lines = j.get("hostUnits", j.get("host_units"))
        assert [x.get("hostUnit", x.get("host_unit")) for x in lines] == want, extra
        assert not j.get("nextPageToken", j.get("next_page_token")), j.keys()
        t = j["total"]
        assert (int(t["found"]), int(t["rectified"])) == (total.found, total.rectified), (t, total)
        r = harness.cluectl("rect", "stats", *extra, env=env, check=0)
        rows = [ln.split()[0] for ln in r.stdout.splitlines()[1:-1]]
        assert rows == want, (extra, len(rows))
        assert r.stdout.splitlines()[-1] == (
            f"total of {len(want)} host units: found {total.found}, rectified {total.rectified}, "
            f"overdue {total.overdue}, cleared no"), r.stdout.splitlines()[-1]
    r = harness.cluectl("rect", "stats", "--page-size", "0", env=env, check=2)
    r = harness.cluectl("rect", "stats", "--unit", str(w.G3.id), env=env, check=0)
    assert r.stdout.splitlines()[-1] == "total of 2 host units: found 2, rectified 1, overdue 0, cleared no", r.stdout


def test_bad_page_size_and_token_are_invalid_argument(c):
    w = c.w
    L = w.R2.leader
    real = stats(L, page_size=3).next_page_token
    items_token = L.rect.ListItems(rp.ListItemsRequest(page_size=1), timeout=30).next_page_token
    clues_token = "AQAAAAAAAAABxxxx"
    assert real and items_token

    def bad(want, **kw):
        code, msg, raw = failure(L.rect.GetLedgerStats, rp.GetLedgerStatsRequest(**kw), timeout=30)
        assert code == Code.INVALID_ARGUMENT, (code, msg, kw)
        (br,) = status_of(code, msg, raw)["google.rpc.BadRequest"]
        assert [v.field for v in br.field_violations] == want, (br, kw)
        return msg

    assert bad(["page_size"], page_size=-1) == "page_size must not be negative"
    bad(["page_size"], page_size=-(2**31))
    flip = real[:5] + ("A" if real[5] != "A" else "B") + real[6:]
    for tok in ("zzz", "r5", items_token, clues_token, flip, real[:-1], real + "A", real + "AA", "=" + real,
                real.replace("-", "+"), "A" * 5000, "\u00e9" * 8):
        if tok == real:
            continue
        msg = bad(["page_token"], page_token=tok)
        assert msg == "page_token is malformed or was issued for another caller or supervising_unit_id", msg
    msg = bad(["supervising_unit_id", "page_size", "page_token"], supervising_unit_id=-1, page_size=-1,
              page_token="x")
    assert msg == "supervising_unit_id must not be negative", msg
    # The real token still serves, and the server still answers.
    assert stats(L, page_size=3, page_token=real).host_units


def test_a_token_serves_only_its_caller_and_filter(c):
    # A token names a place in one caller's ledger of one filter: with another filter, or in
    # another caller's hands, it is refused, so nobody reads past what they see through it.
    w = c.w
    r2 = stats(w.R2.leader, page_size=2).next_page_token
    r2_g3 = stats(w.R2.leader, supervising_unit_id=w.G3.id, page_size=1).next_page_token
    aud = stats(w.auditor, page_size=2).next_page_token
    assert r2 and r2_g3 and aud
    msg = "page_token is malformed or was issued for another caller or supervising_unit_id"
    for user, kw in ((w.R2.leader, dict(page_token=r2, supervising_unit_id=w.G3.id)),
                     (w.R2.leader, dict(page_token=r2, supervising_unit_id=w.R2.id)),
                     (w.R2.leader, dict(page_token=r2_g3)),
                     (w.R2.leader, dict(page_token=aud)),
                     (w.G1.leader, dict(page_token=r2)),
                     (w.G1.leader, dict(page_token=aud)),
                     (w.G3.leader, dict(page_token=r2_g3, supervising_unit_id=w.G3.id)),
                     (w.R1.leader, dict(page_token=aud, supervising_unit_id=w.R2.id)),
                     (w.admin, dict(page_token=aud))):
        got = harness.expect_status(Code.INVALID_ARGUMENT, user.rect.GetLedgerStats,
                                    rp.GetLedgerStatsRequest(**kw), timeout=30)
        assert got == msg, (user.name, got)
    # Each caller's own pages hold only what it sees: G1 its one host unit, R1 (G1's liaison
    # room) the same, G3 its two; the auditor every one.
    assert [h.host_unit for p in pages(w.G1.leader, page_size=1) for h in p.host_units] == ["市发展改革委"]
    assert [h.host_unit for p in pages(w.R1.leader, page_size=1) for h in p.host_units] == ["市发展改革委"]
    assert sorted(h.host_unit for p in pages(w.G3.leader, page_size=1) for h in p.host_units) == sorted(
        ["市卫生健康委", "市医保局"])
    every = [h.host_unit for p in pages(w.auditor, page_size=500) for h in p.host_units]
    assert every == names_in_db_order(c), "the auditor's pages"
    assert stats(w.auditor).total.found == stats(w.R2.leader).total.found + 1  # G1's item


# ---- ListItems' pages ---------------------------------------------------------------------------

BIG = "反" * 6666  # 19,998 bytes: a description, plan or evidence at its 20,000-byte limit
BIG_ITEMS = 150  # about 9 MB of texts: more than four pages of about 2 MiB


class CountingProxy:
    """A unix socket in front of PostgreSQL's that counts the bytes the server sends through
    it: what a clued given url() receives from its database."""

    def __init__(self, host, port):
        self.dir = tempfile.mkdtemp(prefix="clued-pgproxy-")
        self.port, self.target = port, os.path.join(host, f".s.PGSQL.{port}")
        self.lock = threading.Lock()
        self.received = 0
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(os.path.join(self.dir, f".s.PGSQL.{port}"))
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, dbname):
        return f"postgresql:///{dbname}?host={self.dir}&port={self.port}&user=postgres"

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.target)
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src, dst, count):
        try:
            while True:
                b = src.recv(1 << 16)
                if not b:
                    break
                if count:
                    with self.lock:
                        self.received += len(b)
                dst.sendall(b)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def big_items(c):
    """G2's leader records BIG_ITEMS items whose description, plan and evidence are at their
    limits (once: the ids, newest first)."""
    if getattr(c, "big", None):
        return c.big
    L = c.w.G2.leader

    def one(i):
        it = L.rect.CreateItem(rp.CreateItemRequest(
            host_unit="市交通运输局", description=BIG, category="财务管理", source=rp.RECTIFICATION_SOURCE_SUPERVISION,
            deadline_ms=now_ms() + 30 * DAY_MS, request_id=new_request_id()), timeout=60)
        it = L.rect.RecordPlan(rp.RecordPlanRequest(item_id=it.id, expected_version=it.version, plan=BIG,
                                                    request_id=new_request_id()), timeout=60)
        return L.rect.Submit(rp.SubmitRequest(item_id=it.id, expected_version=it.version, evidence=BIG,
                                              request_id=new_request_id()), timeout=60).id

    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        c.big = sorted(ex.map(one, range(BIG_ITEMS)), reverse=True)
    return c.big


def item_pages(list_items, page_size, **kw):
    """Every page of ListItems: [(ids, reply size, next_page_token)], first to last."""
    out, token = [], ""
    while True:
        r = list_items(rp.ListItemsRequest(page_size=page_size, page_token=token, **kw), timeout=60)
        out.append(([x.id for x in r.items], r.ByteSize(), r.next_page_token))
        if not r.next_page_token:
            return out
        assert r.items and len(out) < 100, "a page without items, or pages without end"
        token = r.next_page_token


def test_items_of_large_texts_come_once_in_pages_of_about_2_mib(c):
    big = big_items(c)
    for user, kw in ((c.w.G2.member, {}), (c.w.R1.leader, dict(host_unit="市交通运输局")),
                     (c.w.G2.leader, dict(state=rp.RECTIFICATION_STATE_SUBMITTED))):
        pages = item_pages(user.rect.ListItems, 500, **kw)
        ids = [i for p, _, _ in pages for i in p]
        assert ids == big, (user.name, len(ids), len(big))
        assert len(pages) >= 4, [len(p) for p, _, _ in pages]
        for p, size, _ in pages:
            assert len(p) < 40 and size < 2 * 2**20 + 100000, (len(p), size)  # about 2 MiB and one item
    # The page size still counts: pages of 7, then of 50 (a page may change its size).
    first = c.w.G2.member.rect.ListItems(rp.ListItemsRequest(page_size=7), timeout=60)
    rest = item_pages(c.w.G2.member.rect.ListItems, 50)
    assert [x.id for x in first.items] == big[:7] and first.next_page_token
    r = c.w.G2.member.rect.ListItems(rp.ListItemsRequest(page_size=50, page_token=first.next_page_token), timeout=60)
    assert [x.id for x in r.items] == big[7:7 + len(r.items)] and 0 < len(r.items) < 40
    assert [i for p, _, _ in rest for i in p] == big


def test_the_database_sends_about_one_page_of_items(c):
    """Before, ListItems fetched page_size + 1 whole items (here all of them, about 9 MB) to
    answer about 2 MiB; the texts are now counted in the query, which stops at the page."""
    big = big_items(c)
    pg = harness.Postgres.get()
    proxy = CountingProxy(pg.host, pg.port)
    srv = harness.Clued(proxy.url(c.dbname)).start(migrate=False)
    try:
        ch = grpc.intercept_channel(grpc.insecure_channel(srv.addr), world._Auth(c.w.G2.member.token))
        stub = S.rectification_pb2_grpc.RectificationServiceStub(ch)
        stub.GetItem(rp.GetItemRequest(item_id=big[0]), timeout=60)  # connections made, statements prepared
        got = []
        for _ in range(2):
            with proxy.lock:
                before = proxy.received
            r = stub.ListItems(rp.ListItemsRequest(page_size=500), timeout=60)
            with proxy.lock:
                got.append(proxy.received - before)
        assert [x.id for x in r.items] == big[:len(r.items)] and r.next_page_token
        texts = 3 * len(BIG.encode())
        # The page, and the one item that ends it, and little more: not the 150 items.
        assert max(got) < (len(r.items) + 3) * (texts + 2000), (got, len(r.items))
        assert max(got) < BIG_ITEMS * texts / 3, got
        ch.close()
    finally:
        srv.stop()
        proxy.close()


def test_an_items_token_serves_only_its_caller_and_filters(c):
    big = big_items(c)
    G2 = c.w.G2
    tok = G2.member.rect.ListItems(rp.ListItemsRequest(page_size=2), timeout=60).next_page_token
    assert tok
    # The same caller and filters go on after the page, whatever the page size.
    r = G2.member.rect.ListItems(rp.ListItemsRequest(page_size=3, page_token=tok), timeout=60)
    assert [x.id for x in r.items] == big[2:5]
    ledger_tok = stats(c.w.R2.leader, page_size=3).next_page_token
    r2_tok = c.w.R2.leader.rect.ListItems(rp.ListItemsRequest(page_size=1), timeout=60).next_page_token
    assert ledger_tok and r2_tok
    msg = "page_token is malformed or was issued for another caller or other filters"
    for user, kw in ((G2.member, dict(state=rp.RECTIFICATION_STATE_SUBMITTED)),
                     (G2.member, dict(host_unit="市交通运输局")),
                     (G2.member, dict(overdue_only=True)),
                     (G2.member, dict(source=rp.RECTIFICATION_SOURCE_SUPERVISION)),
                     (G2.leader, {}),
                     (c.w.R1.leader, {}),
                     (c.w.auditor, {}),
                     (c.w.admin, {})):
        code, got, raw = failure(user.rect.ListItems, rp.ListItemsRequest(page_token=tok, **kw), timeout=60)
        assert (code, got) == (Code.INVALID_ARGUMENT, msg), (user.name, kw, code, got)
        (br,) = status_of(code, got, raw)["google.rpc.BadRequest"]
        assert [(v.field, v.description) for v in br.field_violations] == [("page_token", msg)], br
    # Nor another list's token, one made by hand from an id (as tokens were once), or one
    # changed: for R2's leader, whose own token still serves.
    flip = r2_tok[:5] + ("A" if r2_tok[5] != "A" else "B") + r2_tok[6:]
    for bad in (ledger_tok, f"r{big[0]}", "r9223372036854775807", flip, r2_tok + "A"):
        code, got, _ = failure(c.w.R2.leader.rect.ListItems, rp.ListItemsRequest(page_token=bad), timeout=60)
        assert (code, got) == (Code.INVALID_ARGUMENT, msg), (bad, code, got)
    assert c.w.R2.leader.rect.ListItems(rp.ListItemsRequest(page_token=r2_tok), timeout=60).items


if __name__ == "__main__":
    harness.run_tests(globals(), setup=setup, teardown=teardown)
