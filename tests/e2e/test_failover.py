"""Failover to a synchronous standby: a primary and a standby by streaming replication
(scripts/pg-test start-replicated), clued on a URL naming both (target_session_attrs=
read-write), retrying clients submitting and moving clues, the primary's postmaster killed
with SIGKILL and the standby promoted. Afterwards every acknowledged write is on the new
primary exactly once, the audit chains and the latest checkpoint verify, and a watcher that
reconnects has seen every event once, in order. Then --require-sync-replica: refused
without a synchronous standby, NOT_SERVING while the standby is away. Then reads from the
replica: how stale they may be, and the primary answering a read the replica could not finish
(the standby stopped mid-read, or a recovery conflict)."""

import glob
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import grpc

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import rawh2  # noqa: E402
from harness import new_request_id  # noqa: E402
import world  # noqa: E402
from test_metrics import MetricsClued, scrape, value  # noqa: E402

S = harness.stubs()
H = S.health_pb2
AU = S.audit_pb2
pb = S.clue_pb2
PRELIM = S.common_pb2.CLUE_STATE_PRELIMINARY_CHECK
SERVING, NOT_SERVING = H.HealthCheckResponse.SERVING, H.HealthCheckResponse.NOT_SERVING
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
TMP = tempfile.mkdtemp(prefix="clued-failover-")
KEY = os.path.join(TMP, "audit.key")
assert harness.subprocess.run([harness.CLUED, "keygen", "--out", KEY], capture_output=True).returncode == 0


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.submits = {}  # request_id -> clue id, acknowledged
        self.moves = {}    # clue id -> request_id, acknowledged
        self.attempts = 0
        self.retried = 0   # calls that needed more than one attempt
        self.failures = []


def retrying(tally, call, give_up):
    """call() until it answers; UNAVAILABLE and DEADLINE_EXCEEDED are retried with the same
    request (its request_id makes the retry safe), anything else is a failure."""
    tries = 0
    while True:
        tries += 1
        with tally.lock:
            tally.attempts += 1
        try:
            r = call()
            if tries > 1:
                with tally.lock:
                    tally.retried += 1
            return r
        except grpc.RpcError as e:
            if e.code() not in RETRYABLE or time.time() > give_up:
                raise
            time.sleep(random.uniform(0.05, 0.2))


def worker(unit, tally, stop, give_up):
    """Submit as the unit's member, move to PRELIMINARY_CHECK as its leader, until stop."""
    try:
        while not stop.is_set():
            rid = new_request_id()
            req = pb.SubmitClueRequest(request_id=rid, title="故障切换线索", summary="主库失效之下的提交",
                                       source=pb.SOURCE_CHANNEL_AUDIT, subject=pb.SubjectPerson(name="张三"),
                                       host_unit="市发展改革委")
            cl = retrying(tally, lambda: unit.member.clue.SubmitClue(req, timeout=5), give_up)
            with tally.lock:
                tally.submits[rid] = cl.id
            mrid = new_request_id()
            mreq = pb.RequestTransitionRequest(clue_id=cl.id, expected_version=cl.version, target=PRELIM,
                                               reason="依据初步核实情况", request_id=mrid)
            r = retrying(tally, lambda: unit.leader.clue.RequestTransition(mreq, timeout=5), give_up)
            assert r.clue.state == PRELIM and not r.pending, r
            with tally.lock:
                tally.moves[cl.id] = mrid
    except BaseException as e:  # reported by the test, not lost in the thread
        tally.failures.append(repr(e))


class Watcher:
    """WatchEvents as the auditor from seq 0; when the stream breaks, it resumes after the
    last seq it received, as a client would."""

    def __init__(self, user):
        self.user, self.seqs, self.breaks = user, [], 0
        self.stop, self.go = threading.Event(), threading.Event()
        self.go.set()
        self.call = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def pause(self):
        """The client goes away: its stream ends."""
        self.go.clear()
        if self.call:
            self.call.cancel()

    def resume(self):
        self.go.set()

    def _run(self):
        while not self.stop.is_set():
            self.go.wait()
            after = self.seqs[-1] if self.seqs else 0
            try:
                self.call = self.user.audit.WatchEvents(AU.WatchEventsRequest(after_seq=after))
                for e in self.call:
                    self.seqs.append(e.seq)
            except grpc.RpcError:
                if not self.stop.is_set():
                    self.breaks += 1
                    time.sleep(0.2)

    def close(self):
        self.stop.set()
        self.go.set()
        if self.call:
            self.call.cancel()
        self.thread.join(10)


def health(ch):
    try:
        return S.health_pb2_grpc.HealthStub(ch).Check(H.HealthCheckRequest(), timeout=2).status
    except grpc.RpcError:
        return None


def one(db, sql, *args):
    with db.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def test_failover_loses_no_acknowledged_write():
    rep = harness.Replicated()
    dbname = rep.primary.new_database()
    srv = harness.Clued(rep.url(dbname), args=["--audit-signing-key", KEY, "--checkpoint-every", "100",
                                               "--checkpoint-interval", "200ms"]).start()
    w = world.build(srv)
    # A second instance, whose principals stay cached for a minute unless it is told of a
    # revocation: after the failover its LISTEN must have followed the new primary.
    other = harness.Clued(rep.url(dbname), args=["--auth-cache-ttl", "60000"]).start(migrate=False)
    ch, och = grpc.insecure_channel(srv.addr), grpc.insecure_channel(other.addr)
    watcher = Watcher(w.auditor)
    # Another watcher, on the second instance, that its client stops at the kill and resumes
    # after the promotion from the last seq it had.
    au = w.auditor
    auditor_b = world.User(other.addr, au.id, au.name, au.role, au.unit, au.token)
    resumed = Watcher(auditor_b)
    tally, stop = Tally(), threading.Event()
    give_up = time.time() + 90
    threads = [threading.Thread(target=worker, args=(getattr(w, u), tally, stop, give_up)) for u in ("G1", "G2", "G3") * 2]
    for t in threads:
        t.start()
    harness.wait_for(lambda: len(tally.moves) >= 30, timeout=30, what="moves before the failover")
    time.sleep(random.uniform(0, 0.3))  # the kill lands anywhere in a call
    before = len(tally.submits)

    rep.kill_primary()
    t_kill = time.time()
    resumed.pause()
    harness.wait_for(lambda: health(ch) == NOT_SERVING, timeout=15, what="NOT_SERVING without a primary")
    time.sleep(0.5)  # clients keep retrying against no primary at all
    rep.promote()
    t_promote = time.time()
    harness.wait_for(lambda: health(ch) == SERVING, timeout=20, what="SERVING after the promotion")
    serving_after = time.time() - t_promote
    resumed.resume()
    n_at_promote = len(tally.submits)
    harness.wait_for(lambda: len(tally.submits) >= n_at_promote + 20, timeout=30, what="writes on the new primary")
    stop.set()
    for t in threads:
        t.join(120)
    assert not tally.failures, tally.failures
    assert srv.alive()

    db = rep.standby.connect(dbname)  # the new primary
    assert one(db, "SELECT pg_is_in_recovery()") == [(False,)]
    # Every acknowledged submission is there, once, as the clue acknowledged.
    found = dict(one(db, "SELECT request_id::text, clue_id FROM clue_requests WHERE method = 'SubmitClue'"))
    missing = [rid for rid, cid in tally.submits.items() if found.get(rid) != cid]
    assert not missing, f"{len(missing)} acknowledged submissions are not on the new primary"
    assert set(found) == set(tally.submits), "a submission nobody was answered for"
    clues = one(db, "SELECT count(*) FROM clues")[0][0]
    assert clues == len(tally.submits), (clues, len(tally.submits))
    # Every acknowledged move happened exactly once.
    moved = dict(one(db, "SELECT subject_id, count(*) FROM audit_events"
                         " WHERE action = 'clue.move' AND subject_type = 'clue' GROUP BY subject_id"))
    assert all(moved.get(cid) == 1 for cid in tally.moves), {c: moved.get(c) for c in tally.moves if moved.get(c) != 1}
    assert set(moved) == set(tally.moves)
    states = dict(one(db, "SELECT state, count(*) FROM clues GROUP BY state"))
    assert states.get("PRELIMINARY_CHECK", 0) == len(tally.moves), states
    # The audit tail waited for the standby before it handed events out (migration 0027).
    assert one(db, "SELECT sum(n) FROM audit_tail_sync")[0][0] > 0

    # The chains verify on the new primary, and so does a checkpoint of the whole log.
    env = {"CLUED_SERVER": srv.addr, "CLUED_TOKEN": w.auditor.token}
    r = harness.cluectl("audit", "verify", env=env, check=None)
    assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr
    n = one(db, "SELECT count(*) FROM audit_events")[0][0]
    a = S.audit_pb2_grpc.AuditServiceStub(w.auditor.channel)
    harness.wait_for(lambda: a.GetCheckpoint(AU.GetCheckpointRequest()).tree_size == n, timeout=60,
                     what="a checkpoint of the whole log")
    cp = os.path.join(TMP, "latest.cp")
    harness.cluectl("audit", "checkpoint", "--out", cp, env=env, check=0)
    r = harness.cluectl("audit", "verify", "--checkpoint", cp, "--key", KEY + ".pub", env=env, check=None)
    assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr

    # The watcher saw every event once, in order, across the failover.
    seqs = [s for (s,) in one(db, "SELECT seq FROM audit_events ORDER BY seq")]
    for wt in (watcher, resumed):
        harness.wait_for(lambda: wt.seqs and wt.seqs[-1] == seqs[-1], timeout=30, what="the watchers at the end")
        wt.close()
        assert wt.seqs == seqs, (len(wt.seqs), len(seqs), wt.breaks)
    assert resumed.breaks >= 1

    # Revoking on the first instance reaches the second within a second: its invalidation
    # LISTEN follows the new primary too.
    A = S.admin_pb2
    u = w.admin.admin.CreateUser(A.CreateUserRequest(unit_id=w.admin_unit.id, name="审计员-切换后",
                                                     role=S.common_pb2.ROLE_AUDITOR), timeout=10)
    tok = w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=u.id, note="failover"), timeout=10)
    assert token_works(och, tok.token)  # now cached on the second instance
    t0 = time.monotonic()
    w.admin.admin.RevokeToken(A.RevokeTokenRequest(token_id=tok.token_id), timeout=10)
    assert not token_works(ch, tok.token)
    time.sleep(max(0.0, t0 + 1.0 - time.monotonic()))
    assert not token_works(och, tok.token), "the second instance still accepts a token revoked 1 s ago"
    print(f"  {len(tally.submits)} submissions and {len(tally.moves)} moves acknowledged "
          f"({before} submissions before the kill), {tally.retried} calls retried "
          f"({tally.attempts} attempts); all found exactly once on the new primary; "
          f"SERVING {serving_after:.1f} s after the promotion ({time.time() - t_kill:.0f} s since the kill); "
          f"both watchers saw {len(seqs)} events in order, one resuming after the promotion")
    db.close()
    w.close()
    auditor_b.close()
    ch.close()
    och.close()
    other.stop()
    srv.stop()
    rep.destroy()


def token_works(ch, token):
    try:
        S.audit_pb2_grpc.AuditServiceStub(ch).ListAuditEvents(
            AU.ListAuditEventsRequest(page_size=1), metadata=[("authorization", "Bearer " + token)], timeout=10)
        return True
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED, (e.code(), e.details())
        return False


def test_require_sync_replica():
    # A single server with no standby: refused, and the reason says why.
    pg = harness.Postgres.get()
    lone = harness.Clued(pg.url(pg.new_database()))
    lone.run("migrate")
    r = lone.run("serve", "--require-sync-replica", "--listen", "127.0.0.1:0", check=False)
    assert r.returncode == 1, r
    assert "synchronous_standby_names is empty" in r.stderr, r.stderr

    rep = harness.Replicated()
    dbname = rep.primary.new_database()
    srv = harness.Clued(rep.url(dbname), args=["--require-sync-replica"])
    srv.run("migrate")
    # The runtime role cannot see which standbys are synchronous until granted.
    r = srv.run("serve", "--require-sync-replica", "--listen", "127.0.0.1:0", check=False)
    assert r.returncode == 1 and "pg_read_all_stats" in r.stderr, r.stderr
    pdb = rep.primary.connect()
    one_exec(pdb, "GRANT pg_read_all_stats TO clued")
    srv.start(migrate=False)
    ch = grpc.insecure_channel(srv.addr)
    assert health(ch) == SERVING
    # The standby goes away: commits would wait for it, and Health says so.
    rep.stop_standby()
    harness.wait_for(lambda: health(ch) == NOT_SERVING, timeout=10, what="NOT_SERVING without the standby")
    rep.start_standby()
    harness.wait_for(lambda: health(ch) == SERVING, timeout=20, what="SERVING with the standby back")
    # Writes are refused, not acknowledged, while a commit would not wait for a standby: an
    # operator clears synchronous_standby_names, then sets it again.
    w = world.build(srv)

    def submit(title, timeout=10):
        return w.G1.member.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title=title, summary="同步备库", source=pb.SOURCE_CHANNEL_AUDIT,
            subject=pb.SubjectPerson(name="张三"), host_unit="市发展改革委"), timeout=timeout)

    acked, told_no = [], []  # titles answered OK, and refused for want of a standby

    def refused(label):
        title = f"{label}{len(acked) + len(told_no)}"
        try:
            submit(title, timeout=5)
            acked.append(title)
            return False
        except grpc.RpcError as e:
            assert e.code() in RETRYABLE, (e.code(), e.details())
            if e.code() == grpc.StatusCode.UNAVAILABLE and "--require-sync-replica" in e.details():
                told_no.append(title)
                return True
            return False
    acked.append("有备库")
    submit("有备库")
    one_exec(pdb, "ALTER SYSTEM SET synchronous_standby_names = ''")
    one_exec(pdb, "SELECT pg_reload_conf()")
    harness.wait_for(lambda: refused("无备库"), timeout=10, what="a write refused without a synchronous standby")
    one_exec(pdb, "ALTER SYSTEM SET synchronous_standby_names = '*'")
    one_exec(pdb, "SELECT pg_reload_conf()")
    harness.wait_for(lambda: not refused("备库回来"), timeout=10, what="writes taken again")
    # Failover: the promoted standby has no synchronous standby of its own.
    pdb.close()
    rep.kill_primary()
    rep.promote()
    # Never SERVING on the new primary, which has no synchronous standby: sampled for 3 s.
    seen = set()
    end = time.time() + 3
    while time.time() < end:
        seen.add(health(ch))
        time.sleep(0.02)
    assert SERVING not in seen, seen
    # And no write is acknowledged there: once clued reaches it, each is refused.
    harness.wait_for(lambda: refused("切换之后"), timeout=20, what="a write refused on the promoted standby")
    for _ in range(5):
        assert refused("切换之后")
    sdb = rep.standby.connect(dbname)
    on_it = {t for (t,) in one(sdb, "SELECT title FROM clues")}
    sdb.close()
    assert len(told_no) >= 7 and not on_it & set(told_no), (told_no, on_it)
    assert set(acked) <= on_it, (acked, on_it)
    assert any(t.startswith("备库回来") for t in acked), acked
    w.close()
    out = srv.stop()
    assert "no synchronous standby is connected" in out or "synchronous_standby_names is empty" in out, out
    ch.close()
    rep.destroy()


def test_replica_reads():
    rep = harness.Replicated()
    dbname = rep.primary.new_database()
    max_lag = 3.0
    srv = harness.Clued(rep.url(dbname), args=["--replica-url", rep.url(dbname, user="clued", attrs="standby"),
                                               "--replica-max-lag", str(int(max_lag * 1000)),
                                               "--metrics-listen", "127.0.0.1:0"]).start()
    metrics_addr = re.search(r"metrics on http://(\S+)/metrics", srv.output()).group(1)

    def metric(name):
        with urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        r = harness.subprocess.run([shutil.which("promtool"), "check", "metrics"], input=text, capture_output=True,
                                   text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
        return float(m.group(1)) if m else None
    w = world.build(srv)
    leader, auditor = w.G1.leader, w.auditor
    sp, C = S.stats_pb2, S.common_pb2
    month = time.strftime("%Y-%m", time.gmtime(time.time() + 8 * 3600))

    def submit(title):
        return w.G1.member.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title=title, summary="副本读取", source=pb.SOURCE_CHANNEL_AUDIT,
            subject=pb.SubjectPerson(name="李四"), host_unit="市发展改革委"), timeout=10)

    def listed(**read):
        r = leader.clue.ListClues(pb.ListCluesRequest(read=C.ReadConsistency(**read)), timeout=10)
        return {c.id for c in r.clues}, r.freshness

    def all_four(**read):
        rc = C.ReadConsistency(**read)
        now_ms = int(time.time() * 1000)
        return [leader.clue.ListClues(pb.ListCluesRequest(read=rc), timeout=10).freshness,
                auditor.audit.ListAuditEvents(AU.ListAuditEventsRequest(read=rc), timeout=10).freshness,
                auditor.stats.GetStatistics(sp.GetStatisticsRequest(from_ms=1, to_ms=now_ms, read=rc),
                                            timeout=10).freshness,
                auditor.stats.GetBulletin(sp.GetBulletinRequest(month=month, read=rc), timeout=10).freshness]

    a = submit("甲")
    harness.wait_for(lambda: a.id in listed()[0] and listed()[1].from_replica, timeout=15,
                     what="the first clue read from the replica")
    for f in all_four():
        assert f.from_replica and 0 <= f.max_staleness_ms <= max_lag * 1000 and f.read_lsn, f
    assert metric("clued_replica_in_use") == 1 and 0 <= metric("clued_replica_staleness_seconds") <= max_lag
    assert metric('clued_replica_reads_total{to="replica"}') >= 4
    for f in all_four(consistent=True):
        assert not f.from_replica and f.max_staleness_ms == 0, f
    # cluectl says where an answer came from, and --consistent asks for the primary.
    env = {"CLUED_SERVER": srv.addr, "CLUED_TOKEN": leader.token}
    r = harness.cluectl("clue", "list", env=env, check=0)
    assert "From a replica, at most" in r.stderr and "--consistent" in r.stderr, r.stderr
    r = harness.cluectl("clue", "list", "--consistent", env=env, check=0)
    assert "replica" not in r.stderr, r.stderr
    r = harness.cluectl("clue", "list", "--min-read-lsn", "bogus", env=env, check=None)
    assert r.returncode != 0 and "min_read_lsn" in r.stderr, r.stderr

    # Replay paused: the replica falls behind, and says so.
    sdb = rep.standby.connect()
    one_exec(sdb, "SELECT pg_wal_replay_pause()")
    time.sleep(0.3)
    b = submit("乙")
    t_b = time.time()
    ids, f = listed()
    assert f.from_replica and b.id not in ids and a.id in ids, (ids, f)
    time.sleep(0.4)
    ids, f = listed()
    age_ms = (time.time() - t_b) * 1000
    assert f.from_replica and b.id not in ids, (ids, f)
    # The bound covers what the replica lacks: B was acknowledged age_ms ago.
    assert f.max_staleness_ms >= age_ms - 50, (f.max_staleness_ms, age_ms)
    # Fresh data on request: consistent, or a WAL position the replica has not reached.
    ids, f = listed(consistent=True)
    assert b.id in ids and not f.from_replica, f
    pdb = rep.primary.connect()
    lsn = one(pdb, "SELECT pg_current_wal_lsn()::text")[0][0]
    ids, f = listed(min_read_lsn=lsn)
    assert b.id in ids and not f.from_replica, f
    harness.expect_status(grpc.StatusCode.INVALID_ARGUMENT, leader.clue.ListClues,
                          pb.ListCluesRequest(read=C.ReadConsistency(min_read_lsn="not/an-lsn")),
                          details_has=("min_read_lsn",), timeout=10)
    # Past --replica-max-lag the replica is bypassed by every one of the four.
    harness.wait_for(lambda: not listed()[1].from_replica, timeout=10, what="the lagging replica bypassed")
    assert time.time() - t_b >= max_lag - 0.3
    assert b.id in listed()[0]
    for f in all_four():
        assert not f.from_replica and f.max_staleness_ms == 0, f
    assert metric("clued_replica_in_use") == 0 and metric("clued_replica_staleness_seconds") > max_lag
    # Replay resumed: back to the replica, which now has B.
    one_exec(sdb, "SELECT pg_wal_replay_resume()")
    harness.wait_for(lambda: listed()[1].from_replica, timeout=15, what="the replica in use again")
    ids, f = listed(min_read_lsn=lsn)
    assert b.id in ids, (ids, f)
    assert "replica: bypassed (more than --replica-max-lag behind)" in srv.output()
    # A URL of several hosts without target_session_attrs=read-write is warned about. Its first
    # host is the standby: the writing pool's connections leave it for the next host, as
    # read-write would make them, and a write goes to the primary.
    h, p2 = rep.standby.host, rep.standby.port
    loose = harness.Clued(f"postgresql:///{dbname}?host={h},{h}&port={p2},{rep.primary.port}&user=postgres").start(
        migrate=False)
    assert "target_session_attrs=read-write" in loose.output(), loose.output()
    assert "is in recovery (a standby), where writes fail" in loose.output(), loose.output()
    member = world.User(loose.addr, w.G1.member.id, w.G1.member.name, w.G1.member.role, w.G1.member.unit,
                        w.G1.member.token)
    member.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="丙", summary="只读", source=pb.SOURCE_CHANNEL_AUDIT,
        subject=pb.SubjectPerson(name="李四"), host_unit="市发展改革委"), timeout=10)
    member.close()
    loose.stop()
    sdb.close()
    pdb.close()
    w.close()
    srv.stop()
    rep.destroy()


def test_a_replica_of_another_history_is_never_read():
    """WAL positions compare only within one cluster's timeline. A standby of another cluster
    (another deployment's, with a database of the same name), and a standby left on the old
    timeline after a failover that has replayed past the new primary's position (its old
    primary went on writing), both look fresh by position alone; clued reads from neither."""
    rep = harness.Replicated()
    s2 = harness.Postgres(rep.primary.host, "5434")
    s2dir = os.path.join(rep.dir, "standby2")
    pgbin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    srv = w = None

    def as_pg(*cmd):
        r = subprocess.run(["runuser", "-u", "postgres", "--", *cmd] if os.getuid() == 0 else list(cmd),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr

    def never_from_replica(who, seconds=2.0):
        end = time.time() + seconds
        while time.time() < end:
            f = who.clue.ListClues(pb.ListCluesRequest(), timeout=10).freshness
            assert not f.from_replica, f
            time.sleep(0.1)
    try:
        # 1. Another cluster's standby (Y's), with a database of the same name and schema, whose
        # primary has written more than ours: by position alone it looks fresh.
        y = harness.Replicated()
        try:
            dbname = rep.primary.new_database()
            y.primary.ensure_roles()
            ydb = y.primary.connect()
            one_exec(ydb, f'CREATE DATABASE "{dbname}" OWNER clued_owner')
            harness.Clued(y.url(dbname)).start().stop()  # migrated there too
            one_exec(ydb, "CREATE TABLE bulk AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 40000) g")
            ydb.close()
            srv = harness.Clued(rep.url(dbname), args=["--replica-url", y.url(dbname, user="clued", attrs="standby")]
                                ).start()
            w = world.build(srv)
            pdb = rep.primary.connect()
            ours = one(pdb, "SELECT pg_current_wal_lsn()")[0][0]
            harness.wait_for(lambda: one(y.standby.connect(), "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                         ours)[0][0], timeout=30, what="the other cluster's standby past our position")
            time.sleep(1.0)  # the monitor has sampled both many times
            never_from_replica(w.G1.leader)
            assert "a standby of another cluster" in srv.output(), srv.output()[-3000:]
            w.close()
            srv.stop()
            w = srv = None
        finally:
            y.destroy()

        # 2. A standby on the old timeline. S2 follows P; S is promoted and becomes clued's
        # primary; P keeps writing, so S2 replays past S's position on a timeline S left.
        dbname = rep.primary.new_database()
        harness.Clued(rep.url(dbname)).start().stop()
        as_pg(os.path.join(pgbin, "pg_basebackup"), "-h", rep.dir, "-p", str(rep.primary.port), "-U", "postgres",
              "-D", s2dir, "-R", "--no-sync", "-c", "fast", "-X", "stream")
        as_pg(os.path.join(pgbin, "pg_ctl"), "-D", s2dir, "-l", os.path.join(rep.dir, "standby2.log"), "-w", "-o",
              f"-k {rep.dir} -c listen_addresses='' -p 5434 -c fsync=off -c max_connections=400", "start")
        one_exec(pdb, "ALTER SYSTEM SET synchronous_standby_names = ''")
        one_exec(pdb, "SELECT pg_reload_conf()")
        rep.promote()
        new_primary = f"postgresql:///{dbname}?host={rep.dir}&port={rep.standby.port}&user=postgres"
        srv = harness.Clued(new_primary, args=[
            "--replica-url", f"postgresql:///{dbname}?host={rep.dir}&port=5434&user=clued&target_session_attrs=standby"]
        ).start(migrate=False)
        w = world.build(srv)
        one_exec(pdb, "CREATE TABLE bulk AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 40000) g")
        ahead = one(pdb, "SELECT pg_current_wal_lsn()")[0][0]
        harness.wait_for(lambda: one(s2.connect(), "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", ahead)[0][0],
                         timeout=30, what="the old timeline's standby to replay past the new primary")
        time.sleep(1.0)
        never_from_replica(w.G1.leader)
        assert "not on the primary's timeline" in srv.output(), srv.output()[-3000:]
        pdb.close()
    finally:
        if w:
            w.close()
        if srv:
            srv.stop()
        if os.path.isdir(s2dir):
            subprocess.call(["runuser", "-u", "postgres", "--", os.path.join(pgbin, "pg_ctl"), "-D", s2dir, "-m",
                             "immediate", "stop"] if os.getuid() == 0 else
                            [os.path.join(pgbin, "pg_ctl"), "-D", s2dir, "-m", "immediate", "stop"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rep.destroy()


def test_another_database_of_the_standbys_cluster_is_never_read():
    """Another database of the standby's cluster has the primary's system identifier and
    timeline: a copy of clued's database (CREATE DATABASE ... TEMPLATE), taken before the
    clue below, and an empty database. The monitor compares the database's oid, which a
    standby keeps and a copy does not; reads go to the primary, which has the clue."""
    rep = harness.Replicated()
    srv = w = None
    try:
        for kind in ("copy", "empty"):
            dbname = rep.primary.new_database()
            harness.Clued(rep.url(dbname)).start().stop()  # migrated
            other = f"{dbname}_{kind}"
            pdb = rep.primary.connect()
            one_exec(pdb, f'CREATE DATABASE "{other}" OWNER clued_owner'
                          + (f' TEMPLATE "{dbname}"' if kind == "copy" else ""))
            pdb.close()
            srv = harness.Clued(rep.url(dbname), args=["--replica-url", rep.url(other, user="clued", attrs="standby"),
                                                       "--replica-max-lag", "60000"]).start(migrate=False)
            w = world.build(srv)
            a = w.G1.member.clue.SubmitClue(pb.SubmitClueRequest(
                request_id=new_request_id(), title="甲", summary="另一个数据库", source=pb.SOURCE_CHANNEL_AUDIT,
                subject=pb.SubjectPerson(name="李四"), host_unit="市发展改革委"), timeout=10)
            time.sleep(1.0)  # the monitor has asked both many times
            end = time.time() + 2.0
            while time.time() < end:
                r = w.G1.leader.clue.ListClues(pb.ListCluesRequest(), timeout=10)
                assert a.id in {c.id for c in r.clues} and not r.freshness.from_replica, (kind, r.freshness)
                assert r.freshness.max_staleness_ms == 0, (kind, r.freshness)
                time.sleep(0.1)
            assert "another database than the primary's" in srv.output(), srv.output()[-3000:]
            assert "replica: in use" not in srv.output(), srv.output()[-3000:]
            w.close()
            srv.stop()
            w = srv = None
    finally:
        if w:
            w.close()
        if srv:
            srv.stop()
        rep.destroy()


def test_a_replica_that_stops_answering_is_bypassed_while_the_primary_is_idle():
    """A standby that stops answering (SIGSTOP: its sockets stay open) while the primary writes
    nothing: every new sample of the primary's position is one the standby had replayed, yet
    the replica's bound grows from the monitor's last answered query, so it is bypassed within
    --replica-max-lag and reads go to the primary at once, instead of waiting on the standby."""
    rep, dbname, srv, w, metric, a, listed = reading_from_a_replica(["--replica-max-lag", "2000"])
    pids = []
    try:
        pdb = rep.primary.connect()
        one_exec(pdb, "ALTER SYSTEM SET synchronous_standby_names = ''")  # commits need no standby
        one_exec(pdb, "SELECT pg_reload_conf()")
        # The primary idle: its WAL position unchanged for 16 s, past the standby snapshot
        # PostgreSQL logs every 15 s after other WAL (which would move it once more).
        last, since, end = None, time.time(), time.time() + 90
        while time.time() - since < 16:
            assert time.time() < end, "the primary never went idle"
            cur = one(pdb, "SELECT pg_current_wal_lsn()::text")[0][0]
            if cur != last:
                last, since = cur, time.time()
            time.sleep(0.2)
        assert metric("clued_replica_in_use") == 1
        with open(os.path.join(rep.dir, "standby", "postmaster.pid")) as f:
            postmaster = int(f.readline())
        kids = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
        pids = [postmaster] + [int(k) for k in kids]
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        harness.wait_for(lambda: metric("clued_replica_in_use") == 0, timeout=15,
                         what="the silent replica bypassed")
        assert metric("clued_replica_staleness_seconds") > 2.0
        # Had the primary written meanwhile (autovacuum, a checkpoint), its new position alone
        # would have bypassed the replica, as before: only the reason then proves nothing.
        idle = one(pdb, "SELECT pg_current_wal_lsn()::text")[0][0] == last
        for _ in range(4):
            ids, f = listed()
            assert a.id in ids and not f.from_replica and f.max_staleness_ms == 0, f
        assert not idle or "replica: bypassed (it has not answered the monitor for more than --replica-max-lag)" \
            in srv.output(), srv.output()[-3000:]
        for p in pids:
            os.kill(p, signal.SIGCONT)
        pids = []
        harness.wait_for(lambda: listed()[1].from_replica, timeout=15, what="the replica in use again")
        pdb.close()
    finally:
        for p in pids:
            try:
                os.kill(p, signal.SIGCONT)
            except OSError:
                pass
        w.close()
        srv.stop()
        rep.destroy()


def reading_from_a_replica(args=()):
    """A primary and standby, clued reading from the standby (--replica-url; and args), the
    world, and a clue listed from the replica. Returns (rep, dbname, srv, w, metric, clue,
    listed), where metric(name) is a sample's value on /metrics and listed() the ids and
    freshness of ListClues for G1's leader."""
    rep = harness.Replicated()
    dbname = rep.primary.new_database()
    srv = harness.Clued(rep.url(dbname), args=["--replica-url", rep.url(dbname, user="clued", attrs="standby"),
                                               "--metrics-listen", "127.0.0.1:0", *args]).start()
    metrics_addr = re.search(r"metrics on http://(\S+)/metrics", srv.output()).group(1)

    def metric(name):
        with urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=10) as resp:
            m = re.search(r"^" + re.escape(name) + r" (\S+)$", resp.read().decode(), re.M)
        return float(m.group(1)) if m else None
    w = world.build(srv)
    a = w.G1.member.clue.SubmitClue(pb.SubmitClueRequest(
        request_id=new_request_id(), title="甲", summary="副本读取", source=pb.SOURCE_CHANNEL_AUDIT,
        subject=pb.SubjectPerson(name="李四"), host_unit="市发展改革委"), timeout=10)

    def listed():
        r = w.G1.leader.clue.ListClues(pb.ListCluesRequest(), timeout=10)
        return {c.id for c in r.clues}, r.freshness
    harness.wait_for(lambda: a.id in listed()[0] and listed()[1].from_replica, timeout=15,
                     what="the clue read from the replica")
    return rep, dbname, srv, w, metric, a, listed


def lock_on_the_standby(rep, dbname, pdb, sdb, tables):
    """An ACCESS EXCLUSIVE lock on tables taken on the primary (pdb, its transaction left
    open) and replayed on the standby (sdb), where it holds every read of them."""
    one_exec(pdb, "BEGIN")
    one_exec(pdb, f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
    other = rep.primary.connect(dbname)
    one_exec(other, "CREATE TEMP TABLE nudge AS SELECT 1")  # a commit: the WAL up to the lock is flushed
    other.close()
    harness.wait_for(lambda: one(sdb, "SELECT count(*) FROM pg_locks WHERE relation = 'clues'::regclass"
                                      " AND mode = 'AccessExclusiveLock'")[0][0] == 1,
                     timeout=15, what="the lock replayed on the standby")


def test_a_connection_that_reads_nothing_holds_no_replica_reads():
    """A connection whose client reads none of its replies pulls no more rows meanwhile: its
    reads waiting for a pool connection stay waiting, on the replica's pool too. Before, only
    the primary's pool paused them, and every read routed to the replica ran, its reply held
    in the server's memory (about 60 MB a connection, 16 pages of 2 MB).

    G1's leader sends 16 ListClues on one connection while the standby holds every read of
    clues (a lock replayed from the primary): four run there (the heavy calls' share of the
    replica's pool), twelve wait. Reflection replies the client does not read then fill the
    connection's output past --max-conn-buffer. The four running are cut (their backends
    terminated; they go on on the primary, where the lock holds them too): the twelve
    waiting must stay waiting, and none reaches the standby's lock."""
    rep, dbname, srv, w, metric, a, listed = reading_from_a_replica(["--max-conn-buffer", "16384"])
    pdb = rep.primary.connect(dbname)
    sdb = rep.standby.connect(dbname)
    h = None
    try:
        def on_standby_waiting():
            return one(sdb, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                            " AND wait_event_type = 'Lock'")[0][0]

        lock_on_the_standby(rep, dbname, pdb, sdb, "clues")
        h = rawh2.RawH2(srv.addr, timeout=30)
        body = rawh2.grpc_frame(pb.ListCluesRequest().SerializeToString())
        for _ in range(16):
            h.request("/clue.v1.ClueService/ListClues", body, headers=[("authorization", "Bearer " + w.G1.leader.token)])
        harness.wait_for(lambda: on_standby_waiting() == 4, what="four reads held on the standby")
        time.sleep(0.3)
        assert on_standby_waiting() == 4  # the others wait in clued, for the heavy calls' share
        ask = rawh2.grpc_frame(b"\x22\x13clue.v1.ClueService")  # file_containing_symbol, unread
        refl = h.request("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", ask * 40, end=False)
        assert refl
        harness.wait_for(lambda: "over --max-conn-buffer" in srv.output(), what="the connection congested")
        one(sdb, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                 " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
        time.sleep(2.0)  # the replica's pool connects again within 100 ms: a read not paused runs
        assert on_standby_waiting() == 0, "reads of a connection that reads nothing ran on the replica"
    finally:
        if h is not None:
            h.close()
        one_exec(pdb, "ROLLBACK")
        pdb.close()
        sdb.close()
        w.close()
        srv.stop()
        rep.destroy()


def test_replica_lost_during_a_read():
    """A read running on the replica when the replica goes away is answered by the primary, not
    failed: ListClues, whose one read was the replica's, says it came from the primary;
    GetStatistics, whose first read the replica had answered, keeps the replica's bound."""
    rep, dbname, srv, w, metric, a, listed = reading_from_a_replica()
    leader, auditor = w.G1.leader, w.auditor
    # An ACCESS EXCLUSIVE lock taken on the primary is replayed on the standby, where it holds
    # every read of those tables: the reads wait there, on the replica, until it goes away.
    pdb, sdb = rep.primary.connect(dbname), rep.standby.connect(dbname)
    lock_on_the_standby(rep, dbname, pdb, sdb, "clues, audit_events")
    sdb.close()
    now_ms = int(time.time() * 1000)
    lists = leader.clue.ListClues.future(pb.ListCluesRequest(), timeout=60)
    stats = auditor.stats.GetStatistics.future(S.stats_pb2.GetStatisticsRequest(from_ms=1, to_ms=now_ms), timeout=60)
    time.sleep(1)
    assert not lists.done() and not stats.done()
    rep.stop_standby()  # its backends end, and with them the reads on the replica
    time.sleep(1)
    # Now they wait for the lock on the primary.
    assert not lists.done() and not stats.done()
    one_exec(pdb, "ROLLBACK")
    r = lists.result()
    assert a.id in {c.id for c in r.clues} and not r.freshness.from_replica, r.freshness
    assert r.freshness.max_staleness_ms == 0, r.freshness
    st = stats.result()
    assert st.freshness.from_replica and st.freshness.max_staleness_ms > 0, st.freshness
    assert metric('clued_replica_fallbacks_total{why="lost"}') == 2
    assert metric('clued_replica_fallbacks_total{why="conflict"}') == 0
    assert metric('clued_replica_reads_total{to="primary"}') >= 1
    assert srv.output().count("replica: lost during a read") == 1, srv.output()
    # Later reads go to the primary while the replica is away.
    ids, f = listed()
    assert a.id in ids and not f.from_replica, f
    pdb.close()
    w.close()
    srv.stop()
    rep.destroy()


def test_read_cancelled_by_recovery_is_answered_by_the_primary():
    """A read that the standby cancels to replay WAL (a recovery conflict) runs again on the
    primary: the caller gets an answer, not ABORTED."""
    rep, dbname, srv, w, metric, a, listed = reading_from_a_replica()
    leader = w.G1.leader
    sdb = rep.standby.connect(dbname)

    def replayed(table):
        return one(sdb, "SELECT count(*) FROM pg_locks WHERE relation = %s::regclass"
                        " AND mode = 'AccessExclusiveLock'", table)[0][0] == 1

    def nudge():  # a commit, which flushes the WAL up to the lock before it
        other = rep.primary.connect(dbname)
        one_exec(other, "CREATE TEMP TABLE nudge AS SELECT 1")
        other.close()
    # The list reads clues and units, then users (the author's name): with users locked on the
    # standby by replay, the replica's read holds clues and waits.
    p1, p2 = rep.primary.connect(dbname), rep.primary.connect(dbname)
    one_exec(p1, "BEGIN")
    one_exec(p1, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
    nudge()
    harness.wait_for(lambda: replayed("users"), timeout=15, what="the lock on users replayed")
    lists = leader.clue.ListClues.future(pb.ListCluesRequest(), timeout=60)
    harness.wait_for(lambda: one(sdb, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'clued'"
                                      " AND wait_event_type = 'Lock'")[0][0] == 1,
                     timeout=15, what="the replica's read waiting")
    # Replaying a lock on clues now needs the read gone: the standby cancels it.
    one_exec(p2, "BEGIN")
    one_exec(p2, "LOCK TABLE clues IN ACCESS EXCLUSIVE MODE")
    nudge()
    harness.wait_for(lambda: metric('clued_replica_fallbacks_total{why="conflict"}') == 1, timeout=60,
                     what="the cancelled read run again on the primary")
    assert not lists.done()  # it waits for the locks on the primary now
    one_exec(p2, "ROLLBACK")
    one_exec(p1, "ROLLBACK")
    r = lists.result()
    assert a.id in {c.id for c in r.clues} and not r.freshness.from_replica, r.freshness
    assert metric('clued_replica_fallbacks_total{why="lost"}') == 0
    for db in (p1, p2, sdb):
        db.close()
    w.close()
    srv.stop()
    rep.destroy()


def test_a_primary_answer_s_read_lsn_covers_what_it_read():
    """An answer from the primary gives as read_lsn a position that covers what it read, not
    the monitor's last sample (taken every 200 ms): a later read with that min_read_lsn never
    comes from a replica that lacks it."""
    rep, dbname, srv, w, metric, a, _ = reading_from_a_replica()
    C = S.common_pb2
    sdb = rep.standby.connect()
    try:
        def listed(**read):
            r = w.G1.leader.clue.ListClues(pb.ListCluesRequest(read=C.ReadConsistency(**read)), timeout=10)
            return {c.id for c in r.clues}, r.freshness
        for i in range(3):
            one_exec(sdb, "SELECT pg_wal_replay_resume()")
            time.sleep(0.5)
            one_exec(sdb, "SELECT pg_wal_replay_pause()")
            time.sleep(0.6)  # the monitor samples the primary at the replica's paused position
            x = w.G1.member.clue.SubmitClue(pb.SubmitClueRequest(
                request_id=new_request_id(), title=f"乙{i}", summary="副本读取", source=pb.SOURCE_CHANNEL_AUDIT,
                subject=pb.SubjectPerson(name="李四"), host_unit="市发展改革委"), timeout=10)
            ids, f = listed(consistent=True)
            assert x.id in ids and not f.from_replica and f.read_lsn, f
            later, f2 = listed(min_read_lsn=f.read_lsn)
            assert x.id in later, (i, f, f2)
    finally:
        one_exec(sdb, "SELECT pg_wal_replay_resume()")
        sdb.close()
        w.close()
        srv.stop()
        rep.destroy()


def test_primary_read_after_batch_and_error():
    """A read on the primary that reports its WAL position begins with SET TRANSACTION; on a
    pool connection whose session settings had to change first (it last ran a batch, or a
    request that failed) it answered INTERNAL (25001, "SET TRANSACTION ISOLATION LEVEL must be
    called before any query"). One pool connection, so every read follows what ran before."""
    rep = harness.Replicated()
    dbname = rep.primary.new_database()
    srv = MetricsClued(rep.url(dbname), args=["--replica-url", rep.url(dbname, user="clued", attrs="standby"),
                                              "--db-pool", "1", "--db-conns-per-user", "1",
                                              "--metrics-listen", "127.0.0.1:0"]).start()
    w = world.build(srv)
    C = S.common_pb2
    try:
        def submit(u):
            return u.clue.SubmitClue(pb.SubmitClueRequest(
                request_id=new_request_id(), title="调优", summary="批处理之后", source=pb.SOURCE_CHANNEL_AUDIT,
                subject=pb.SubjectPerson(name="王五"), host_unit="市发展改革委"), timeout=10)

        def consistent_reads():
            r = w.G1.leader.clue.ListClues(pb.ListCluesRequest(read=C.ReadConsistency(consistent=True)), timeout=10)
            assert not r.freshness.from_replica and r.freshness.read_lsn, r.freshness
            w.auditor.audit.ListAuditEvents(AU.ListAuditEventsRequest(
                page_size=3, read=C.ReadConsistency(consistent=True)), timeout=10)
            return {c.id for c in r.clues}
        c = submit(w.G1.member)
        assert c.id in consistent_reads()
        # A refusal the database raised (a stale version): the request failed.
        for _ in range(2):
            try:
                w.G1.leader.clue.RequestTransition(pb.RequestTransitionRequest(
                    clue_id=c.id, expected_version=c.version + 7, target=PRELIM, reason="r",
                    request_id=new_request_id()), timeout=10)
                assert False, "a stale version was accepted"
            except grpc.RpcError as e:
                assert e.code() != grpc.StatusCode.INTERNAL, (e.code(), e.details())
            assert c.id in consistent_reads()
        # Concurrent submissions on one connection: batches, on a tuned session.
        batches = value(scrape(srv.metrics_addr), "clued_db_batches_total", kind="submit")
        users = [w.G1.member, w.G2.member, w.G3.member, w.G1.leader, w.G2.leader, w.G3.leader] * 2
        for _ in range(3):
            th = [threading.Thread(target=submit, args=(u,)) for u in users]
            [t.start() for t in th]
            [t.join() for t in th]
            assert len(consistent_reads()) >= 2
        assert value(scrape(srv.metrics_addr), "clued_db_batches_total", kind="submit") >= batches + 3
    finally:
        w.close()
        out = srv.stop()
        rep.destroy()
    assert "25001" not in out, [ln for ln in out.splitlines() if "25001" in ln][:3]


def test_a_retry_after_a_cancelled_commit_wait_is_answered_once_durable():
    """A call whose deadline ends its commit's wait for the synchronous standby leaves the
    change committed on the primary alone. Its retry (same request_id) is answered from that
    record only once the standby has it too: while the standby is away the retry waits like a
    write, and what it then acknowledges survives the primary's loss. So is a refusal the
    database raises from such a change ("already revoked")."""
    rep = harness.Replicated()
    dbname = rep.primary.new_database()
    srv = harness.Clued(rep.url(dbname)).start()
    w = world.build(srv)
    try:
        m, lead = w.G1.member, w.G1.leader
        sub = pb.SubmitClueRequest(request_id=new_request_id(), title="取消等待", summary="同步",
                                   source=pb.SOURCE_CHANNEL_AUDIT, subject=pb.SubjectPerson(name="孙七"),
                                   host_unit="市发展改革委")
        moved = m.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title="待移动", summary="同步", source=pb.SOURCE_CHANNEL_AUDIT,
            subject=pb.SubjectPerson(name="孙七"), host_unit="市发展改革委"), timeout=10)
        mv = pb.RequestTransitionRequest(clue_id=moved.id, expected_version=moved.version,
                                         target=S.common_pb2.CLUE_STATE_PRELIMINARY_CHECK, reason="初核",
                                         request_id=new_request_id())
        A = S.admin_pb2
        u = w.admin.admin.CreateUser(A.CreateUserRequest(unit_id=w.admin_unit.id, name="审计员-撤销",
                                                         role=S.common_pb2.ROLE_AUDITOR), timeout=10)
        tok = w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=u.id, note="撤销"), timeout=10)
        revoke = A.RevokeTokenRequest(token_id=tok.token_id)
        rep.stop_standby()
        for call, req in ((m.clue.SubmitClue, sub), (lead.clue.RequestTransition, mv),
                          (w.admin.admin.RevokeToken, revoke)):
            harness.expect_status(grpc.StatusCode.DEADLINE_EXCEEDED, call, req, timeout=1)
        pdb = rep.primary.connect(dbname)
        # Committed on the primary alone, as PostgreSQL leaves a cancelled wait (visible once
        # clued's cancel, sent at its own deadline, has ended the wait).
        harness.wait_for(lambda: one(pdb, "SELECT count(*) FROM clue_requests WHERE request_id IN (%s, %s)",
                                     sub.request_id, mv.request_id)[0][0] == 2, timeout=10,
                         what="both calls committed on the primary alone")
        # The retries, and the refusal that reads the revocation ("already revoked"), wait.
        for call, req in ((m.clue.SubmitClue, sub), (lead.clue.RequestTransition, mv),
                          (w.admin.admin.RevokeToken, revoke)):
            harness.expect_status(grpc.StatusCode.DEADLINE_EXCEEDED, call, req, timeout=2)
        rep.start_standby()
        got = m.clue.SubmitClue(sub, timeout=30)
        lead.clue.RequestTransition(mv, timeout=30)
        harness.expect_status(grpc.StatusCode.FAILED_PRECONDITION, w.admin.admin.RevokeToken, revoke, timeout=30)
        pdb.close()
        rep.kill_primary()
        rep.promote()
        sdb = rep.standby.connect(dbname)
        harness.wait_for(lambda: one(sdb, "SELECT count(*) FROM clue_requests WHERE request_id IN (%s, %s)",
                                     sub.request_id, mv.request_id)[0][0] == 2, timeout=10,
                         what="both acknowledged retries on the promoted standby")
        assert one(sdb, "SELECT registration_number FROM clues WHERE id = %s", got.id)[0][0] == got.registration_number
        assert one(sdb, "SELECT revoked_at IS NOT NULL FROM tokens WHERE id = %s", tok.token_id)[0][0]
        sdb.close()
    finally:
        w.close()
        srv.stop()
        rep.destroy()


def one_exec(db, sql):
    with db.cursor() as cur:
        cur.execute(sql)


def pump_for(h, seconds):
    """Read what clued sends on h for seconds: the answers of its streams, if any."""
    end = time.time() + seconds
    try:
        while (left := end - time.time()) > 0:
            h.sock.settimeout(left)
            if not h.pump():
                break
    except socket.timeout:
        pass
    h.sock.settimeout(60)


def test_a_batch_whose_call_leaves_waits_for_the_standby():
    """A call of a batch that ends (its deadline) does not cut the batch's commit wait short:
    stopped, that wait would leave the batch committed on the primary alone and answer success,
    which the batch's other calls would be told as OK, and a failover would lose them
    (docs/SCALEOUT.md, "Cancelled waits"). Four submissions in one write on one connection, so
    that they go as one batch statement (test_batching), one with a 1 s deadline and three
    with a minute's, while the synchronous standby is stopped: the first ends with
    DEADLINE_EXCEEDED, the others answer nothing while the standby is away, and OK once it is
    back; the batch is one transaction, and every acknowledged write is on the standby when
    it is promoted."""
    rep = harness.Replicated()
    dbname = rep.primary.new_database()
    srv = MetricsClued(rep.url(dbname), args=["--metrics-listen", "127.0.0.1:0"]).start()
    w = world.build(srv)
    h = None
    try:
        m = w.G1.member
        reqs = [pb.SubmitClueRequest(request_id=new_request_id(), title="分批等待", summary="同步",
                                     source=pb.SOURCE_CHANNEL_AUDIT, subject=pb.SubjectPerson(name="周八"),
                                     host_unit="市发展改革委") for _ in range(5)]
        path = "/clue.v1.ClueService/SubmitClue"

        def cached():
            """The member's token is served from the principal cache: the streams below reach
            the batch queue together, not each when its own token lookup ends."""
            was = value(scrape(srv.metrics_addr), "clued_auth_lookups_total", **{"from": "cache"})
            assert rawh2.RawH2(srv.addr).call(path, rawh2.grpc_frame(reqs[0].SerializeToString()), headers=[
                ("authorization", "Bearer " + m.token)]).grpc_status == 0
            return value(scrape(srv.metrics_addr), "clued_auth_lookups_total", **{"from": "cache"}) > was

        harness.wait_for(cached, timeout=20, what="the token served from the principal cache")
        before = scrape(srv.metrics_addr)
        rep.stop_standby()
        h = rawh2.RawH2(srv.addr, timeout=60)
        sids = []
        for i, req in enumerate(reqs[1:]):
            sid = h.conn.get_next_available_stream_id()
            h.conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                      (":authority", "test"), ("content-type", "application/grpc"),
                                      ("te", "trailers"), ("authorization", "Bearer " + m.token),
                                      ("grpc-timeout", "1S" if i == 0 else "60S")])
            h.conn.send_data(sid, rawh2.grpc_frame(req.SerializeToString()), end_stream=True)
            h.responses[sid] = rawh2.Response()
            sids.append(sid)
        h.flush()
        short, waiting = sids[0], sids[1:]
        assert h.wait(short).grpc_status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0], h.responses[short].trailers
        pump_for(h, 2)
        told = {sid: (h.responses[sid].grpc_status, h.responses[sid].grpc_message) for sid in waiting
                if h.responses[sid].ended}
        assert not told, f"answered while the synchronous standby was stopped: {told}"
        pdb = rep.primary.connect(dbname)
        assert one(pdb, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")[0][0] == 1
        pdb.close()
        rep.start_standby()
        for sid in waiting:
            r = h.wait(sid)
            assert r.grpc_status == 0, (r.grpc_status, r.grpc_message)
        after = scrape(srv.metrics_addr)
        for name, n in (("clued_db_batches_total", 1), ("clued_db_batched_calls_total", 4)):
            assert value(after, name, kind="submit") - value(before, name, kind="submit") == n, name
        rep.kill_primary()
        rep.promote()
        sdb = rep.standby.connect(dbname)
        rids = [r.request_id for r in reqs[1:]]
        harness.wait_for(lambda: one(sdb, "SELECT count(*), count(DISTINCT e.txid) FROM clue_requests k"
                                          " JOIN audit_events e ON e.subject_type = 'clue' AND e.subject_id = k.clue_id"
                                          " AND e.action = 'clue.submit' WHERE k.request_id = ANY(%s::uuid[])",
                                     rids)[0] == (4, 1), timeout=10,
                         what="the batch's four submissions, one transaction, on the promoted standby")
        sdb.close()
    finally:
        if h:
            h.close()
        w.close()
        srv.stop()
        rep.destroy()


def test_only_a_standby_reachable():
    """serve on a URL whose only host is a standby (the server fenced by rebuilding it as one).
    Every connection of the writing pool, the listeners' included, sees at connect that the
    server is in recovery and counts that as a failed attempt: the reconnects back off as for a
    refused connect, instead of a new backend every 100 ms (before, a listener connected, failed
    its LISTEN and started over at once). The pool says so once, and Health is NOT_SERVING;
    once the standby is promoted, Health is SERVING and a write succeeds."""
    rep = harness.Replicated()
    dbname = rep.primary.new_database()
    prim = harness.Clued(rep.url(dbname)).start()
    w = world.build(prim)
    w.close()
    prim.stop()
    # The standby logs each connection it accepts, and to whom: clued's listeners connect as
    # application_name clued-listen.
    sdb = rep.standby.connect()
    one_exec(sdb, "ALTER SYSTEM SET log_connections = on")
    one_exec(sdb, "SELECT pg_reload_conf()")
    sdb.close()
    slog = os.path.join(rep.dir, "standby.log")

    def listen_connections():
        with open(slog, errors="replace") as f:
            return f.read().count("application_name=clued-listen")
    url = f"postgresql:///{dbname}?host={rep.standby.host}&port={rep.standby.port}&user=postgres"
    srv = harness.Clued(url)
    srv.database_url = None  # serve only: start() would wait for SERVING, which does not come
    srv.start()
    ch = grpc.insecure_channel(srv.addr)
    # Let the backoff grow, then watch a window: every 100 ms would be 30 connections in 3 s
    # for each listener.
    harness.wait_for(lambda: listen_connections() >= 2, timeout=10, what="the listeners tried the standby")
    time.sleep(3)
    n0, lines0 = listen_connections(), len(srv.output().splitlines())
    time.sleep(3)
    n1, lines1 = listen_connections(), len(srv.output().splitlines())
    assert n1 - n0 <= 8, f"{n1 - n0} listener connections in 3 s:\n{srv.output()[-3000:]}"
    assert lines1 - lines0 <= 8, srv.output()[-3000:]
    assert health(ch) == NOT_SERVING
    out = srv.output()
    assert out.count("is in recovery (a standby), where writes fail") == 1, out
    assert "reconnected" not in out, out
    member = world.User(srv.addr, w.G1.member.id, w.G1.member.name, w.G1.member.role, w.G1.member.unit,
                        w.G1.member.token)

    def submit():
        return member.clue.SubmitClue(pb.SubmitClueRequest(
            request_id=new_request_id(), title="只有备库", summary="备库提升之后", source=pb.SOURCE_CHANNEL_AUDIT,
            subject=pb.SubjectPerson(name="李四"), host_unit="市发展改革委"), timeout=10)
    harness.expect_status(grpc.StatusCode.UNAVAILABLE, submit)
    # Promoted: the next attempt of each connection reaches a primary.
    rep.promote()
    harness.wait_for(lambda: health(ch) == SERVING, timeout=20, what="SERVING after the promotion")
    assert "is a primary" in srv.output(), srv.output()
    assert submit().id
    srv.wait_listening(timeout=20)
    member.close()
    ch.close()
    srv.stop()
    rep.destroy()


if __name__ == "__main__":
    harness.run_tests(globals())
