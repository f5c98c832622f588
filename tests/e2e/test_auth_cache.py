"""The principal cache of rpc/auth.c on two clued instances sharing one database, both with a
cache life (--auth-cache-ttl) of 60 s, far beyond any wait here, so that every refusal below
comes from an invalidation, never from an entry's age:

- The cache is real: a token revoked with the triggers off (no notification) still
  authenticates on an instance that had it cached, and not on one that had not.
- Revoking a token on instance A refuses it on A's very next call, and on B within 1 s of the
  revocation (the `audit_events` notification); the user's other token goes on.
- Disabling a user likewise refuses all their tokens on both instances.
- A keyed IssueMyToken or IssueToken drops the principal of the token it revoked (a retry):
  a first call drops nothing.
- Only what a revocation or disabling names is dropped: another user revoking their own
  tokens in a loop leaves B's cached principals, and has no call looked up again.
- Losing the LISTEN connection drops the cache: a token revoked with the triggers off is
  refused on B once B's listener backends are terminated, long before the 60 s.
- A call authenticated on its headers runs only on a principal still current when its body
  has come: a revocation (on either instance) or the cache life passed meanwhile has the
  token looked up again, and the call is refused, nothing written.
- A revoked token is a stranger's from its revocation on (here at once, elsewhere on the
  notification, and after a lost listener whatever happened meanwhile): while its user's
  share of the pool is taken, it is refused as unknown, as a made-up token is, not as "too
  many of your calls"."""

import os
import sys
import signal
import time

import grpc

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import world  # noqa: E402
from rawh2 import RawH2, grpc_frame  # noqa: E402
from test_metrics import MetricsClued, scrape, value  # noqa: E402

S = harness.stubs()
A = S.admin_pb2
AU = S.audit_pb2
C = S.common_pb2
CL = S.clue_pb2

TTL_MS = 60000
WITHIN = 1.0  # seconds from a revocation on A to its refusal on B


class Ctx:
    pass


def setup():
    c = Ctx()
    c.pg = harness.Postgres.get()
    c.dbname = c.pg.new_database()
    c.url = c.pg.url(c.dbname)
    c.db = c.pg.connect(c.dbname)
    # Users here issue and revoke tokens in loops: no hourly limit on their issues.
    args = ["--auth-cache-ttl", str(TTL_MS), "--token-issues-per-hour", "0"]
    c.a = harness.Clued(c.url, args=args).start()
    c.b = MetricsClued(c.url, args=args + ["--metrics-listen", "127.0.0.1:0"]).start(migrate=False)
    c.a.wait_listening()
    c.b.wait_listening()
    c.w = world.build(c.a)
    c.chans = []
    c.stubs = {}
    return c


def teardown(c):
    for ch in c.chans:
        ch.close()
    c.w.close()
    c.db.close()
    c.b.stop()
    c.a.stop()


def sql(c, q, *args):
    with c.db.cursor() as cur:
        cur.execute(q, args)
        return cur.fetchall() if cur.description else None


def stub(c, srv):
    if srv.addr not in c.stubs:
        ch = grpc.insecure_channel(srv.addr)
        c.chans.append(ch)
        c.stubs[srv.addr] = S.audit_pb2_grpc.AuditServiceStub(ch)
    return c.stubs[srv.addr]


def call(c, srv, token):
    """The status of an authenticated call on srv with token."""
    try:
        stub(c, srv).ListAuditEvents(AU.ListAuditEventsRequest(page_size=1),
                                      metadata=[("authorization", "Bearer " + token)], timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def new_auditor(c, name):
    u = c.w.admin.admin.CreateUser(A.CreateUserRequest(unit_id=c.w.admin_unit.id, name=name, role=C.ROLE_AUDITOR),
                                   timeout=10)
    t = [c.w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=u.id, note="cache test"), timeout=10)
         for _ in range(2)]
    return u.id, t[0], t[1]


def warm(c, *tokens):
    for srv in (c.a, c.b):
        for t in tokens:
            assert call(c, srv, t.token) == grpc.StatusCode.OK


def silent_revoke(c, token_id):
    """Revoke with every trigger off: no notification, as if it were lost."""
    with c.db.cursor() as cur:
        cur.execute("BEGIN; SET LOCAL session_replication_role = replica;"
                    " UPDATE tokens SET revoked_at = now() WHERE id = %s; COMMIT", (token_id,))


def test_cached_principal_outlives_a_silent_revocation(c):
    _, t1, _ = new_auditor(c, "auditor-cached")
    assert call(c, c.b, t1.token) == grpc.StatusCode.OK  # cached on B only
    silent_revoke(c, t1.token_id)
    assert call(c, c.b, t1.token) == grpc.StatusCode.OK  # served from B's cache
    assert call(c, c.a, t1.token) == grpc.StatusCode.UNAUTHENTICATED  # A looks it up


def test_revoke_on_a_is_refused_on_b_within_1s(c):
    _, t1, t2 = new_auditor(c, "auditor-revoked")
    warm(c, t1, t2)
    t0 = time.monotonic()
    c.w.admin.admin.RevokeToken(A.RevokeTokenRequest(token_id=t1.token_id), timeout=10)
    assert call(c, c.a, t1.token) == grpc.StatusCode.UNAUTHENTICATED  # the next call on A
    time.sleep(max(0.0, t0 + WITHIN - time.monotonic()))
    assert call(c, c.b, t1.token) == grpc.StatusCode.UNAUTHENTICATED
    assert call(c, c.b, t2.token) == grpc.StatusCode.OK
    assert call(c, c.a, t2.token) == grpc.StatusCode.OK


def test_disable_on_a_is_refused_on_b_within_1s(c):
    uid, t1, t2 = new_auditor(c, "auditor-disabled")
    warm(c, t1, t2)
    t0 = time.monotonic()
    c.w.admin.admin.DisableUser(A.DisableUserRequest(user_id=uid, reason="cache test"), timeout=10)
    assert call(c, c.a, t1.token) == grpc.StatusCode.UNAUTHENTICATED
    assert call(c, c.a, t2.token) == grpc.StatusCode.UNAUTHENTICATED
    time.sleep(max(0.0, t0 + WITHIN - time.monotonic()))
    assert call(c, c.b, t1.token) == grpc.StatusCode.UNAUTHENTICATED
    assert call(c, c.b, t2.token) == grpc.StatusCode.UNAUTHENTICATED


def test_losing_the_listener_drops_the_cache(c):
    _, t1, t2 = new_auditor(c, "auditor-listener")
    warm(c, t1, t2)
    silent_revoke(c, t1.token_id)
    assert call(c, c.b, t1.token) == grpc.StatusCode.OK  # still cached: nothing told B
    pids = sql(c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                  " WHERE datname = current_database() AND application_name = 'clued-listen'")
    assert pids, "no LISTEN backend found"
    # B notices the lost connection asynchronously; the bound here is far below the 60 s life.
    deadline = time.monotonic() + 15
    while call(c, c.b, t1.token) == grpc.StatusCode.OK:
        assert time.monotonic() < deadline, "the cache outlived its invalidation listener"
        time.sleep(0.05)
    assert call(c, c.b, t1.token) == grpc.StatusCode.UNAUTHENTICATED
    assert call(c, c.b, t2.token) == grpc.StatusCode.OK  # looked up again, and cached again


def test_a_stalled_listener_drops_the_cache(c):
    """A listener's backend that stops answering while its connection stays open (stopped
    here with SIGSTOP) is noticed by the listener's heartbeat, as a lost connection is: the
    cache goes, and a token revoked without a word is refused long before the cache's life
    ends."""
    def listeners():
        return [r[0] for r in sql(c, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                                     " AND application_name = 'clued-listen' AND state = 'idle'")]
    # Both instances listening (again, after the test that terminated their listeners), so
    # that B caches again.
    harness.wait_for(lambda: len(listeners()) >= 2, timeout=15, what="both instances' listeners")
    time.sleep(0.5)
    _, t1, t2 = new_auditor(c, "auditor-stalled")
    warm(c, t1, t2)
    pids = listeners()
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        silent_revoke(c, t1.token_id)
        assert call(c, c.b, t1.token) == grpc.StatusCode.OK  # still cached: nothing told B
        while call(c, c.b, t1.token) == grpc.StatusCode.OK:
            assert time.monotonic() - t0 < 10, "the cache outlived its stalled invalidation listener"
            time.sleep(0.05)
        print(f"  stalled listener noticed, revoked token refused on B after {time.monotonic() - t0:.2f} s")
        assert call(c, c.b, t2.token) == grpc.StatusCode.OK
        assert "heartbeat" in c.b.output()
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def new_member(c, name):
    """A MEMBER of G1 with a token (its id known, to revoke it)."""
    u = c.w.admin.admin.CreateUser(A.CreateUserRequest(unit_id=c.w.G1.id, name=name, role=C.ROLE_MEMBER), timeout=10)
    return c.w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=u.id, note="late body"), timeout=10)


def late_body(c, srv, token, meanwhile):
    """A SubmitClue on srv whose headers come first, authenticated from the cache (warmed by
    a call of its own); meanwhile() runs, then the body comes. Returns the call's grpc-status
    and how many clues of its title were written."""
    assert call(c, srv, token) == grpc.StatusCode.OK
    title = "迟到的请求体 " + harness.new_request_id()
    req = CL.SubmitClueRequest(
        request_id=harness.new_request_id(), title=title, summary="s", source=CL.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=CL.SubjectPerson(name="张三", position="处长", rank_level="正处"), host_unit="市发展改革委",
        violation_categories=["违反廉洁纪律"])
    h = RawH2(srv.addr, timeout=30)
    try:
        sid = h.request("/clue.v1.ClueService/SubmitClue", b"", headers=[("authorization", "Bearer " + token)],
                        end=False)
        time.sleep(0.2)  # the headers authenticated
        meanwhile()
        h.conn.send_data(sid, grpc_frame(req.SerializeToString()), end_stream=True)
        h.flush()
        r = h.wait(sid)
    finally:
        h.close()
    status = r.trailers.get("grpc-status", r.headers.get("grpc-status"))
    return status, sql(c, "SELECT count(*) FROM clues WHERE title = %s", title)[0][0]


def test_a_body_sent_after_a_revocation_is_refused(c):
    for revoking, running in ((c.a, c.a), (c.a, c.b)):
        t = new_member(c, f"member-late-{revoking.addr}-{running.addr}")

        def revoke():
            stub_a = S.admin_pb2_grpc.AdminServiceStub(grpc.intercept_channel(
                grpc.insecure_channel(revoking.addr), world._Auth(c.w.admin.token)))
            stub_a.RevokeToken(A.RevokeTokenRequest(token_id=t.token_id), timeout=10)
            time.sleep(WITHIN)  # the notification reaches the other instance
        got = late_body(c, running, t.token, revoke)
        assert got == ("16", 0), (got, revoking.addr, running.addr)
    # Not revoked: the late body runs.
    t = new_member(c, "member-late-kept")
    assert late_body(c, c.b, t.token, lambda: time.sleep(WITHIN)) == ("0", 1)


def test_a_body_later_than_the_cache_life_is_looked_up_again(c):
    # A revocation nobody is told of (the triggers off): an instance whose principals live
    # 300 ms looks the token up again for a body that comes later than that.
    short = harness.Clued(c.url, args=["--auth-cache-ttl", "300"]).start(migrate=False)
    try:
        t = new_member(c, "member-late-silent")

        def revoke():
            silent_revoke(c, t.token_id)
            time.sleep(0.5)
        assert late_body(c, short, t.token, revoke) == ("16", 0)
    finally:
        short.stop()


def test_a_body_after_a_revocation_elsewhere_is_refused_without_a_cache(c):
    # An instance that caches nothing (--auth-cache-size 0) listens for nothing either: a
    # body that comes after another instance revoked its token is looked up again, and
    # refused, as on an instance that caches.
    bare = harness.Clued(c.url, args=["--auth-cache-size", "0", "--auth-cache-ttl", str(TTL_MS)]).start(migrate=False)
    try:
        t = new_member(c, "member-late-uncached")

        def revoke():
            c.w.admin.admin.RevokeToken(A.RevokeTokenRequest(token_id=t.token_id), timeout=10)
            time.sleep(0.5)
        assert late_body(c, bare, t.token, revoke) == ("16", 0)
        kept = new_member(c, "member-late-uncached-kept")
        assert late_body(c, bare, kept.token, lambda: time.sleep(0.5)) == ("0", 1)
    finally:
        bare.stop()


def test_a_principal_lives_from_its_lookup_not_from_its_last_use(c):
    # --auth-cache-ttl counts from the database's answer: headers served from the cache late
    # in an entry's life do not give the body a life of its own. A revocation nobody is told
    # of (the triggers off) at 0.1 s; headers at 1.5 s, from the cache (looked up at 0 s);
    # the body at 2.7 s, past the 2 s life of what authenticated them: looked up again, and
    # refused. The body used to run, 1.2 s after the headers' cache hit.
    short = harness.Clued(c.url, args=["--auth-cache-ttl", "2000"]).start(migrate=False)
    try:
        short.wait_listening(15)
        t = new_member(c, "member-late-life")
        assert call(c, short, t.token) == grpc.StatusCode.OK  # looked up: cached from now
        t0 = time.monotonic()
        silent_revoke(c, t.token_id)
        time.sleep(max(0.0, t0 + 1.5 - time.monotonic()))
        assert late_body(c, short, t.token, lambda: time.sleep(1.0)) == ("16", 0)
        assert time.monotonic() - t0 < 3.4, "too slow to tell: the headers' hit would be past its life too"
    finally:
        short.stop()


def test_rechecks_of_one_call_are_bounded(c):
    # A call whose recheck meets a new invalidation each time is looked up again at most four
    # times, then refused UNAVAILABLE to retry; nothing is written. Each lookup waits behind a
    # lock on units (which it reads) while B drops every principal (a notification it cannot
    # read, as when its listener is lost), so the lookup may predate a revocation; a second
    # session queues for the lock before the first lets go, so the next lookup waits too.
    import threading
    t = new_member(c, "member-rechecks")
    srv = c.b
    title = "反复重新认证 " + harness.new_request_id()
    req = CL.SubmitClueRequest(
        request_id=harness.new_request_id(), title=title, summary="s", source=CL.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
        subject=CL.SubjectPerson(name="张三"), host_unit="市发展改革委")

    def drop_all():
        """A notification B cannot read (the triggers never send it): B drops every principal,
        and counts it."""
        def dropped():
            return value(scrape(srv.metrics_addr), "clued_auth_invalidations_total", of="all")
        n = dropped()
        sql(c, "SELECT pg_notify('audit_events', 'revoked token of nobody')")
        harness.wait_for(lambda: dropped() > n, what="B dropping its cache")

    def locker():
        conn = c.pg.connect(c.dbname)
        conn.autocommit = False
        th = threading.Thread(target=lambda: conn.cursor().execute("LOCK TABLE units IN ACCESS EXCLUSIVE MODE"))
        th.start()
        return conn, th

    def lookups_waiting():
        return sql(c, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                      " AND wait_event_type = 'Lock' AND query LIKE '%%token_sha256%%'")[0][0]

    def lookups():  # B's token lookups so far: (from the cache, from the database)
        m = scrape(srv.metrics_addr)
        return tuple(value(m, "clued_auth_lookups_total", **{"from": f}) for f in ("cache", "database"))

    began = len(srv.output())
    # The headers authenticated from B's cache, while units is locked. A listener still coming
    # back from an earlier test's cut caches nothing, nor does a cache a late notification
    # dropped: the headers' lookup would then be the one waiting below, and the call would
    # run on one lookup fewer. Such a try is reset (the call not begun) and made again.
    for _ in range(5):
        srv.wait_listening()
        assert call(c, srv, t.token) == grpc.StatusCode.OK
        h = RawH2(srv.addr, timeout=30)
        held, th = locker()
        th.join()
        was = lookups()
        sid = h.request("/clue.v1.ClueService/SubmitClue", b"", headers=[("authorization", "Bearer " + t.token)],
                        end=False)
        harness.wait_for(lambda: sum(lookups()) > sum(was), what="the headers authenticated")
        if lookups()[1] == was[1]:
            break
        h.conn.reset_stream(sid)
        h.flush()
        held.rollback()
        held.close()
        h.close()
    else:
        raise AssertionError("B's cache was dropped before each of 5 calls' headers came")
    try:
        drop_all()  # the principal is no longer current when the body comes
        h.conn.send_data(sid, grpc_frame(req.SerializeToString()), end_stream=True)
        h.flush()
        for _ in range(4):  # each lookup sees a new invalidation; a fifth is not made
            harness.wait_for(lambda: lookups_waiting() == 1, what="the recheck waiting for units")
            drop_all()
            nxt, nth = locker()  # queued behind the lookup
            harness.wait_for(lambda: sql(c, "SELECT count(*) FROM pg_locks WHERE relation = 'units'::regclass"
                                            " AND mode = 'AccessExclusiveLock' AND NOT granted"
                                            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")[0][0] == 1,
                             what="the next lock queued")
            held.rollback()
            held.close()
            nth.join()
            held = nxt
        held.rollback()
        r = h.wait(sid)
    finally:
        held.close()
        h.close()
    status = r.trailers.get("grpc-status", r.headers.get("grpc-status"))
    message = r.trailers.get("grpc-message", r.headers.get("grpc-message", ""))
    assert status == "14" and "4 times" in message, (status, message, lookups(), srv.output()[began:][-3000:])
    assert sql(c, "SELECT count(*) FROM clues WHERE title = %s", title)[0][0] == 0


class ShareScene:
    """A server whose users each hold at most 4 requests (2 a connection), principals cached
    for TTL_MS; each call on a connection of its own."""

    def __init__(self, c):
        self.c = c
        self.srv = harness.Clued(c.url, args=["--auth-cache-ttl", str(TTL_MS), "--db-queue-per-conn", "2",
                                              "--db-queue-per-user", "4"]).start(migrate=False).wait_listening()
        self.chans = []

    def channel(self):
        ch = grpc.insecure_channel(self.srv.addr, options=[("grpc.use_local_subchannel_pool", 1)])
        self.chans.append(ch)
        return ch

    def lookup(self, token):
        """GetCaller's status with token."""
        try:
            S.token_pb2_grpc.TokenServiceStub(self.channel()).GetCaller(
                S.token_pb2.GetCallerRequest(), metadata=[("authorization", "Bearer " + token)], timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    def while_busy(self, token, check, taken=True):
        """check() while token's user's share is taken: 4 ListClues with token, on 2
        connections, waiting on a locked table. With taken, also that the user's own next call
        is refused at once."""
        import threading
        hold = self.c.pg.connect(self.c.dbname)
        hold.autocommit = False
        hold.cursor().execute("LOCK TABLE clues IN ACCESS EXCLUSIVE MODE")
        busy = []
        for _ in range(2):
            ch = self.channel()
            for _ in range(2):
                t = threading.Thread(target=lambda ch=ch: S.clue_pb2_grpc.ClueServiceStub(ch).ListClues.future(
                    CL.ListCluesRequest(), metadata=[("authorization", "Bearer " + token)], timeout=10).exception())
                t.start()
                busy.append(t)
        try:
            time.sleep(0.5)
            check()
            if taken:
                try:
                    S.clue_pb2_grpc.ClueServiceStub(self.channel()).ListClues(
                        CL.ListCluesRequest(), metadata=[("authorization", "Bearer " + token)], timeout=10)
                    raise AssertionError("the user's share was not taken")
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        finally:
            hold.rollback()
            hold.close()
            for t in busy:
                t.join()

    def close(self):
        for ch in self.chans:
            ch.close()
        self.srv.stop()


def test_a_revoked_token_is_a_strangers_once_refused(c):
    # A token that authenticated lately renews against its user's share of the pool. Revoked,
    # its first lookup is refused, and from then on it is a stranger's: while the user's share
    # is taken, it is refused as unknown, not as "too many of your calls", which would tell a
    # revoked token from a made-up one and let its holder use up the user's share.
    sc = ShareScene(c)
    try:
        u = c.w.admin.admin.CreateUser(A.CreateUserRequest(unit_id=c.w.G1.id, name="member-share", role=C.ROLE_MEMBER),
                                       timeout=10)
        r, kept = [c.w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=u.id, note="share"), timeout=10)
                   for _ in range(2)]
        assert sc.lookup(r.token) == sc.lookup(kept.token) == grpc.StatusCode.OK
        c.w.admin.admin.RevokeToken(A.RevokeTokenRequest(token_id=r.token_id), timeout=10)
        harness.wait_for(lambda: sc.lookup(r.token) == grpc.StatusCode.UNAUTHENTICATED, what="the revocation on srv")

        def refused_as_unknown():
            assert sc.lookup(r.token) == grpc.StatusCode.UNAUTHENTICATED
        sc.while_busy(kept.token, refused_as_unknown, taken=False)
    finally:
        sc.close()


def test_a_revoked_token_is_a_strangers_before_any_lookup_of_it(c):
    # The hint of whose a token was goes with the revocation itself, not with the first lookup
    # that finds it revoked: while its user's share is taken, no such lookup completes, and the
    # token would go on answering "too many of your calls" (its user's refusal), unlike a
    # made-up token. Revoked on the instance itself (at once), on another (the notification),
    # and with no word while the listener was lost (which forgets every hint): each is refused
    # as unknown while the user is busy, without a lookup of it after the revocation.
    sc = ShareScene(c)
    srv, lookup = sc.srv, sc.lookup
    try:
        srv.wait_listening(15)
        u = c.w.admin.admin.CreateUser(A.CreateUserRequest(unit_id=c.w.G1.id, name="member-share-at-once",
                                                           role=C.ROLE_MEMBER), timeout=10)
        here, there, unheard, kept = [
            c.w.admin.admin.IssueToken(A.IssueTokenRequest(user_id=u.id, note="share"), timeout=10)
            for _ in range(4)]
        made_up = "ct_" + "cd" * 32
        for t in (here, there, unheard, kept):
            assert lookup(t.token) == grpc.StatusCode.OK  # known on srv as the user's
        admin_on_srv = S.admin_pb2_grpc.AdminServiceStub(grpc.intercept_channel(sc.channel(),
                                                                                world._Auth(c.w.admin.token)))
        admin_on_srv.RevokeToken(A.RevokeTokenRequest(token_id=here.token_id), timeout=10)
        c.w.admin.admin.RevokeToken(A.RevokeTokenRequest(token_id=there.token_id), timeout=10)
        time.sleep(WITHIN)  # the notification reaches srv

        def revoked_ones_are_strangers():
            got = {"here": lookup(here.token), "there": lookup(there.token), "made up": lookup(made_up)}
            assert set(got.values()) == {grpc.StatusCode.UNAUTHENTICATED}, got
        sc.while_busy(kept.token, revoked_ones_are_strangers)
        # The listener lost, a revocation no notification tells: srv knows no token any more.
        assert sql(c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE datname = current_database() AND application_name = 'clued-listen'")
        silent_revoke(c, unheard.token_id)
        harness.wait_for(lambda: "lost the invalidation listener" in srv.output(), what="srv losing its listener")

        def unheard_is_a_strangers():
            got = lookup(unheard.token)
            assert got == grpc.StatusCode.UNAUTHENTICATED, got
        sc.while_busy(kept.token, unheard_is_a_strangers)
    finally:
        sc.close()


def test_a_keyed_issue_that_revoked_drops_that_token_alone(c):
    # A keyed IssueMyToken or IssueToken whose retry revokes the token its key issued drops
    # that token's principal from A's cache before it replies, as RevokeToken does: the token
    # is refused on A's very next call. A first call revokes nothing and drops nothing, and
    # neither drops another token's principal: t1, revoked with the triggers off, is still
    # served from A's cache after both.
    TK = S.token_pb2
    _, t1, _ = new_auditor(c, "auditor-keyed-issues")
    assert call(c, c.a, t1.token) == grpc.StatusCode.OK  # cached on A
    silent_revoke(c, t1.token_id)
    u = c.w.G1.member
    mine = TK.IssueMyTokenRequest(note="keyed", request_id=harness.new_request_id())
    theirs = A.IssueTokenRequest(user_id=u.id, note="keyed", request_id=harness.new_request_id())
    issued = [u.tokens.IssueMyToken(mine, timeout=10), c.w.admin.admin.IssueToken(theirs, timeout=10)]
    assert call(c, c.a, t1.token) == grpc.StatusCode.OK  # still A's cached principal
    for t in issued:
        assert call(c, c.a, t.token) == grpc.StatusCode.OK  # cached on A
    u.tokens.IssueMyToken(mine, timeout=10)
    assert call(c, c.a, issued[0].token) == grpc.StatusCode.UNAUTHENTICATED
    c.w.admin.admin.IssueToken(theirs, timeout=10)
    assert call(c, c.a, issued[1].token) == grpc.StatusCode.UNAUTHENTICATED
    assert call(c, c.a, t1.token) == grpc.StatusCode.OK


def test_others_revocations_leave_a_principal_cached(c):
    """B is told of every revocation and disabling, and drops only the principals they name:
    t1, revoked with the triggers off, is still served from B's cache after another user
    issued and revoked their own tokens on A in a loop, and after a third user was disabled;
    B looked no token up for t1 and t2 meanwhile, nor for a body that came after another's
    revocation. What was named is refused on B: the revoked token B had cached, the disabled
    user's token."""
    def lookups():  # B's token lookups from the database so far
        return value(scrape(c.b.metrics_addr), "clued_auth_lookups_total", **{"from": "database"})

    c.b.wait_listening(15)
    _, t1, t2 = new_auditor(c, "auditor-others")
    other = new_member(c, "member-revoking")
    gone_uid, gone, _ = new_auditor(c, "auditor-gone")
    kept = new_member(c, "member-late-kept-others")
    cached_then_revoked = S.token_pb2_grpc.TokenServiceStub(grpc.intercept_channel(
        grpc.insecure_channel(c.a.addr), world._Auth(other.token))).IssueMyToken(
            S.token_pb2.IssueMyTokenRequest(note="cached on B"), timeout=10)
    warm(c, t1, t2, gone, cached_then_revoked)
    assert call(c, c.b, kept.token) == grpc.StatusCode.OK
    silent_revoke(c, t1.token_id)
    was = lookups()
    ch = grpc.insecure_channel(c.a.addr)
    c.chans.append(ch)
    tokens = S.token_pb2_grpc.TokenServiceStub(grpc.intercept_channel(ch, world._Auth(other.token)))
    revoked, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 2.0:
        t = tokens.IssueMyToken(S.token_pb2.IssueMyTokenRequest(note="loop"), timeout=10)
        tokens.RevokeMyToken(S.token_pb2.RevokeMyTokenRequest(token_id=t.token_id), timeout=10)
        revoked += 1
        assert call(c, c.b, t1.token) == grpc.StatusCode.OK
    tokens.RevokeMyToken(S.token_pb2.RevokeMyTokenRequest(token_id=cached_then_revoked.token_id), timeout=10)
    c.w.admin.admin.DisableUser(A.DisableUserRequest(user_id=gone_uid, reason="cache test"), timeout=10)

    def revoke_anothers():
        t = tokens.IssueMyToken(S.token_pb2.IssueMyTokenRequest(note="late"), timeout=10)
        tokens.RevokeMyToken(S.token_pb2.RevokeMyTokenRequest(token_id=t.token_id), timeout=10)
        time.sleep(WITHIN)  # the notifications reach B
    assert late_body(c, c.b, kept.token, revoke_anothers) == ("0", 1)
    assert call(c, c.b, t1.token) == grpc.StatusCode.OK
    assert call(c, c.b, t2.token) == grpc.StatusCode.OK
    assert lookups() == was, f"B looked tokens up {lookups() - was} times over {revoked} others' revocations"
    assert revoked > 5, revoked
    assert call(c, c.b, cached_then_revoked.token) == grpc.StatusCode.UNAUTHENTICATED
    assert call(c, c.b, gone.token) == grpc.StatusCode.UNAUTHENTICATED


def test_notifications_clued_never_sends_drop_the_cache_five_times_a_second_at_most(c):
    """A role let in to the database may NOTIFY clued's channel (it needs no privilege). A
    stream of payloads that name no id ("revoked token x") dropped every principal each time:
    calls were looked up again, and some refused as busy. They now drop them at most five
    times a second; a user's calls meanwhile are served, mostly from the cache."""
    import threading

    import psycopg2

    t = new_member(c, "member-notify-flood")
    srv = c.b
    role = "notifier_" + harness.new_request_id()[:8]
    sql(c, f"CREATE ROLE {role} LOGIN")
    sql(c, f'GRANT CONNECT ON DATABASE "{c.dbname}" TO {role}')
    conn = psycopg2.connect(host=c.pg.host, port=c.pg.port, user=role, dbname=c.dbname)
    conn.autocommit = True
    stop = threading.Event()
    sent = [0]

    def flood():
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("SELECT pg_notify('audit_events', 'revoked token x' || g) FROM generate_series(1, 200) g")
                sent[0] += 200

    try:
        srv.wait_listening()
        assert call(c, srv, t.token) == grpc.StatusCode.OK
        m = scrape(srv.metrics_addr)
        dropped0 = value(m, "clued_auth_invalidations_total", of="all")
        th = threading.Thread(target=flood)
        t0 = time.monotonic()
        th.start()
        got = [call(c, srv, t.token) for _ in range(200)]
        stop.set()
        th.join()
        took = time.monotonic() - t0
        srv.wait_listening()
        dropped = value(scrape(srv.metrics_addr), "clued_auth_invalidations_total", of="all") - dropped0
    finally:
        stop.set()
        conn.close()
        sql(c, f'REVOKE CONNECT ON DATABASE "{c.dbname}" FROM {role}')
        sql(c, f"DROP ROLE {role}")
    assert sent[0] >= 1000, sent[0]
    assert got == [grpc.StatusCode.OK] * len(got), [g for g in got if g != grpc.StatusCode.OK][:5]
    assert dropped <= 5 * (took + 2), (dropped, took, sent[0])
    assert "revoked token x" not in srv.output(), srv.output()[-2000:]


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
