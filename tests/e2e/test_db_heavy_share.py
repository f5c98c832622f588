"""The heavy calls' share of the database pool (--db-heavy-conns), against the real clued and
PostgreSQL.

Calls whose database cost grows with the data (GetLedgerStats, GetBulletin, ListClues,
ListAuditEvents, ListJointCases, ...) run at most --db-heavy-conns statements at once over all users (default
half the pool, rounded down), so that two users of different units, each within its own
share (--db-conns-per-user), cannot hold the whole pool with them. A heavy statement beyond
the share waits in the pool's queue while light calls (GetClue, SubmitClue) of a third user
take the connections left, and runs once the share frees.

The server has four connections: two per user, two for heavy statements. The table
rect_items, which GetLedgerStats and GetBulletin read and neither GetClue nor SubmitClue
touches, is locked from outside (ACCESS EXCLUSIVE) so that the heavy statements wait on the
lock for as long as the test holds it; the lock and statement timeouts are far above the
test's length, so that nothing but the release ends the wait (ListJointCases' test locks
joint_cases the same way). No assertion is about time.
"""

import contextlib
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402
from test_metrics import MetricsClued, scrape, value  # noqa: E402

S = harness.stubs()
pb = S.clue_pb2
rp = S.rectification_pb2
st = S.stats_pb2
cs = S.case_pb2

# Heavy statements waiting on the lock: clued's backends blocked on a heavyweight lock.
BLOCKED = ("application_name = 'clued' AND datname = current_database() AND state = 'active'"
           " AND wait_event_type = 'Lock'")


def metric(addr, name, **labels):
    """One sample of clued's /metrics, or None."""
    return value(scrape(addr), name, **labels)


def blocked(c):
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE " + BLOCKED)
        return cur.fetchone()[0]


def submit(user):
    return user.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="线索", summary="反映某某违规收受礼金",
        source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=pb.SubjectPerson(name="张三", position="处长", rank_level="正处"),
        host_unit="市卫生健康委", violation_categories=["违反廉洁纪律"]), timeout=60)


def this_month():
    return datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))).strftime("%Y-%m")


def setup():
    # Four connections: two per user and two for heavy statements (both the defaults).
    # Principals stay cached, so a call's only requests are its own statements.
    c = world.served(args=["--db-pool", "4", "--db-lock-timeout", "600000", "--db-statement-timeout", "600000",
                           "--auth-cache-ttl", "600000", "--metrics-listen", "127.0.0.1:0"],
                     clued=MetricsClued)
    c.srv.wait_listening()
    return c


def teardown(c):
    world.unserve(c)


@contextlib.contextmanager
def table_locked(c, table):
    """table locked ACCESS EXCLUSIVE by a session of its own until the block ends."""
    lock = c.pg.connect(c.dbname)
    lock.autocommit = False
    try:
        with lock.cursor() as cur:
            cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        lock.rollback()
        lock.close()


def all_waiting(c, futures, what):
    """Waits until every call of futures waits, on the lock or for a connection; checks that
    two statements (the heavy share) wait on the lock, and returns that count."""
    maddr = c.srv.metrics_addr
    harness.wait_for(lambda: blocked(c) >= 2 and blocked(c) + metric(maddr, "clued_db_queue_depth") >= len(futures),
                     timeout=60, what=f"every {what} call waiting")
    most = blocked(c)
    assert most == 2, f"{most} {what} statements ran at once, over the share of 2"
    return most


def test_heavy_calls_of_two_users_leave_the_rest_of_the_pool_to_light_calls(c):
    """G1's member keeps eight GetLedgerStats in flight and the auditor eight GetBulletins
    (whose second statement reads the locked table: every statement of a heavy call counts).
    With the table locked, once all sixteen calls wait (on the lock, or in clued's queue),
    two of clued's backends wait on the lock and the rest wait in clued's queue, as the
    metrics say; G3's member, a third user, gets GetClue and SubmitClue answered meanwhile,
    several times, and still no more than two backends ever wait on the lock. Once the lock
    is released every heavy call is answered. Before the share, the two users held all four
    connections, each waiting on the lock, and the third user's calls waited for them."""
    w = c.w
    heavy_a, heavy_b, light = w.G1.member, w.auditor, w.G3.member
    maddr = c.srv.metrics_addr
    month = this_month()
    # Each principal is cached, and each call works, before the lock.
    heavy_a.rect.GetLedgerStats(rp.GetLedgerStatsRequest(), timeout=60)
    heavy_b.stats.GetBulletin(st.GetBulletinRequest(month=month), timeout=60)
    mine = submit(light)
    futures = []
    with table_locked(c, "rect_items"):
        for _ in range(8):
            futures.append(heavy_a.rect.GetLedgerStats.future(rp.GetLedgerStatsRequest(), timeout=600))
            futures.append(heavy_b.stats.GetBulletin.future(st.GetBulletinRequest(month=month), timeout=600))
        most = all_waiting(c, futures, "heavy")
        # The light user's calls are answered while the heavy ones wait.
        for _ in range(5):
            got = light.clue.GetClue(pb.GetClueRequest(clue_id=mine.id), timeout=60)
            assert got.id == mine.id
            most = max(most, blocked(c))
            assert submit(light).id > 0
            most = max(most, blocked(c))
        assert most == 2, f"{most} heavy statements ran at once, over the share of 2"
        assert not any(f.done() for f in futures), "a heavy call ended while the lock was held"
        assert metric(maddr, "clued_db_heavy_connections_max") == 2
        assert metric(maddr, "clued_db_heavy_requests", state="running") == 2
        assert metric(maddr, "clued_db_heavy_requests", state="waiting") == len(futures) - 2
    for f in futures:
        f.result()
    harness.wait_for(lambda: metric(maddr, "clued_db_heavy_requests", state="running") == 0,
                     timeout=60, what="the heavy share given back")
    assert metric(maddr, "clued_db_heavy_requests", state="waiting") == 0


def test_list_joint_cases_is_heavy(c):
    """ListJointCases reads the caller's cases up to a page, and their clues: its cost grows
    with the cases, not the request, so it counts against the share. With joint_cases locked,
    G1's member and the auditor keep four each in flight: two backends wait on the lock, the
    rest wait in clued's queue, and G3's member gets GetClue answered meanwhile (SubmitClue
    waits on that lock too). Before, it was a light call: the two users held all four
    connections on the lock."""
    w = c.w
    heavy_a, heavy_b, light = w.G1.member, w.auditor, w.G3.member
    maddr = c.srv.metrics_addr
    for u in (heavy_a, heavy_b):
        u.case.ListJointCases(cs.ListJointCasesRequest(), timeout=60)
    mine = submit(light)
    futures = []
    with table_locked(c, "joint_cases"):
        for _ in range(4):
            for u in (heavy_a, heavy_b):
                futures.append(u.case.ListJointCases.future(cs.ListJointCasesRequest(), timeout=600))
        most = all_waiting(c, futures, "ListJointCases")
        for _ in range(5):
            assert light.clue.GetClue(pb.GetClueRequest(clue_id=mine.id), timeout=60).id == mine.id
            most = max(most, blocked(c))
        assert most == 2, f"{most} ListJointCases statements ran at once, over the share of 2"
        assert not any(f.done() for f in futures), "a ListJointCases ended while the lock was held"
        assert metric(maddr, "clued_db_heavy_requests", state="waiting") == len(futures) - 2
    for f in futures:
        f.result()
    harness.wait_for(lambda: metric(maddr, "clued_db_heavy_requests", state="running") == 0,
                     timeout=60, what="the heavy share given back")


def pool_backends(c):
    """The pids of clued's pool connections (not its LISTEN connection)."""
    with c.db.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'clued'"
                    " AND datname = current_database() AND query NOT LIKE 'LISTEN%%' ORDER BY pid")
        return [r[0] for r in cur.fetchall()]


def test_with_connections_lost_heavy_calls_still_leave_one_to_light_calls(c):
    """Two of the four connections are lost and cannot be made again (the database's
    connection limit): the heavy share is then of the two that work, so heavy calls of two
    users hold one and G3's member still gets GetClue and SubmitClue answered on the other.
    Before, the share stayed two, and the heavy calls held every connection that worked."""
    w = c.w
    heavy_a, heavy_b, light = w.G1.member, w.auditor, w.G3.member
    maddr = c.srv.metrics_addr
    month = this_month()
    mine = submit(light)
    harness.wait_for(lambda: len(pool_backends(c)) == 4, timeout=60, what="four pool connections")
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'clued'"
                    " AND datname = current_database()")
        everyone = cur.fetchone()[0]
        cur.execute(f'ALTER DATABASE "{c.dbname}" CONNECTION LIMIT {everyone - 2}')
        for pid in pool_backends(c)[:2]:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    lock = c.pg.connect(c.dbname)
    lock.autocommit = False
    futures = []
    try:
        harness.wait_for(lambda: len(pool_backends(c)) == 2, timeout=60, what="two pool connections left")
        # ... and clued knows it: a call sent on a connection it has not yet seen end would fail.
        harness.wait_for(lambda: metric(maddr, "clued_db_pool_connections", state="idle") == 2, timeout=60,
                         what="clued's two idle connections")
        with lock.cursor() as cur:
            cur.execute("LOCK TABLE rect_items IN ACCESS EXCLUSIVE MODE")
        for _ in range(4):
            futures.append(heavy_a.rect.GetLedgerStats.future(rp.GetLedgerStatsRequest(), timeout=600))
            futures.append(heavy_b.stats.GetBulletin.future(st.GetBulletinRequest(month=month), timeout=600))
        harness.wait_for(lambda: blocked(c) >= 1 and blocked(c) + metric(maddr, "clued_db_queue_depth") >= len(futures),
                         timeout=60, what="every heavy call waiting")
        for _ in range(3):
            assert light.clue.GetClue(pb.GetClueRequest(clue_id=mine.id), timeout=30).id == mine.id
            assert submit(light).id > 0
            assert blocked(c) == 1, f"{blocked(c)} heavy statements hold the two working connections"
        assert not any(f.done() for f in futures), "a heavy call ended while the lock was held"
    finally:
        lock.rollback()
        lock.close()
        with c.db.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{c.dbname}" CONNECTION LIMIT -1')
    for f in futures:
        f.result()
    harness.wait_for(lambda: metric(maddr, "clued_db_heavy_requests", state="running") == 0,
                     timeout=60, what="the heavy share given back")


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
