"""Call lifetimes under stress while database work is in flight.

Clients cancel (grpcio future.cancel(), raw RST_STREAM) at random moments, deadlines expire,
connections are dropped with dozens of streams open, SIGTERM arrives with hundreds of calls
mid-query (finishing within the grace period, and cut off by a 100 ms one while the pool still
has work), and a pool of two connections with a queue of four is saturated while calls are
cancelled. Through all of it, SubmitClue must commit fully or not at all: a retry with each
request_id sent returns exactly one clue, and registration numbers stay gapless.

Every scenario ends with Health SERVING and a normal call succeeding; every clued started here
must exit 0 on SIGTERM with no ASan/LSan/UBSan report (harness.Clued.stop checks). Randomness
is seeded per scenario.

    CLUED_BIN=build-stress/clued python3 tests/e2e/test_stress.py
"""

import collections
import heapq
import os
import random
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
import uuid

import grpc
import h2.exceptions

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import world  # noqa: E402
from rawh2 import RawH2, grpc_frame  # noqa: E402

S = harness.stubs()
H = S.health_pb2
pb = S.clue_pb2
Code = grpc.StatusCode
SERVING = H.HealthCheckResponse.SERVING

SLEEP = "/clued.test.Debug/Sleep"
LIST = "/clue.v1.ClueService/ListClues"
SUBMIT = "/clue.v1.ClueService/SubmitClue"
NAP = "0.3"  # seconds each Debug/Sleep holds a pool connection
POOL = 16  # the shared server's pool: the backlog of abandoned sleeps drains quickly
GRPC_CODE = {c.value[0]: c for c in Code}
# Every random choice derives from these seeds; CLUED_STRESS_SEED shifts them all, to explore.
SEED = int(os.environ.get("CLUED_STRESS_SEED", "0"))


def seeded(n):
    return random.Random(SEED * 1000 + n)


# ---- clients --------------------------------------------------------------------------------


class Client:
    """A grpcio channel with a connection of its own (no subchannel sharing between channels)."""

    def __init__(self, addr):
        self.ch = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
        self.sleep = self.ch.unary_unary(SLEEP, request_serializer=H.HealthCheckRequest.SerializeToString,
                                         response_deserializer=H.HealthCheckResponse.FromString)
        self.clue = S.clue_pb2_grpc.ClueServiceStub(self.ch)
        self.health = S.health_pb2_grpc.HealthStub(self.ch)

    def close(self):
        self.ch.close()


def new_rid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def submit_req(rid):
    return pb.SubmitClueRequest(request_id=rid, title="压力测试线索", summary="取消与超时之下的提交",
                                source=pb.SOURCE_CHANNEL_AUDIT, subject=pb.SubjectPerson(name="张三"),
                                host_unit="市发展改革委", violation_categories=["违反廉洁纪律"])


class Mix:
    """Draws call kinds and builds them for grpcio or raw HTTP/2; remembers every SubmitClue
    request_id it hands out (ctx.sent: request_id -> user).

    sleep: Debug/Sleep(0.3); nap: Debug/Sleep of 0 to 0.3 s, so completions race the cancels;
    list: a short ListClues; biglist: ListClues of up to 500 clues (tens of kilobytes once the
    storms have submitted theirs, so more of the response is in flight when a reset or a drop
    arrives); submit: SubmitClue with a fresh request_id."""

    KINDS = ("sleep", "sleep", "nap", "list", "biglist", "submit", "submit")

    def __init__(self, ctx, rng):
        self.ctx, self.rng = ctx, rng

    def kind(self):
        return self.rng.choice(self.KINDS)

    def _submitter(self):
        user = self.rng.choice(self.ctx.submitters)
        rid = new_rid(self.rng)
        self.ctx.sent[rid] = user
        return user, rid

    def _build(self, kind):
        """(path, request, user or None)"""
        if kind in ("sleep", "nap"):
            secs = NAP if kind == "sleep" else self.rng.choice(("0", "0.001", "0.01", "0.05", "0.1", "0.3"))
            return SLEEP, H.HealthCheckRequest(service=secs), None
        if kind in ("list", "biglist"):
            return LIST, pb.ListCluesRequest(page_size=5 if kind == "list" else 500), self.ctx.reader
        user, rid = self._submitter()
        return SUBMIT, submit_req(rid), user

    def future(self, cl, kind, timeout=30.0):
        path, req, user = self._build(kind)
        if path == SLEEP:
            return cl.sleep.future(req, timeout=timeout)
        method = cl.clue.ListClues if path == LIST else cl.clue.SubmitClue
        return method.future(req, timeout=timeout, metadata=user.metadata)

    def raw(self, kind):
        """(path, message, headers) for a raw request."""
        path, req, user = self._build(kind)
        return path, req, [("authorization", "Bearer " + user.token)] if user else []


def outcome(f, wait=60):
    """The status a grpcio future ended with: (code, details). A future still pending after
    wait seconds is a hang."""
    try:
        f.result(timeout=wait)
        return Code.OK, ""
    except grpc.FutureCancelledError:
        return Code.CANCELLED, "cancelled by the test"
    except grpc.FutureTimeoutError:
        raise AssertionError(f"a call did not finish within {wait} s")
    except grpc.RpcError as e:
        return e.code(), e.details()


def cancel_on_schedule(plan):
    """plan: [(seconds from now, future)]; cancel each at its moment."""
    t0 = time.monotonic()
    for at, f in sorted(plan, key=lambda p: p[0]):
        d = t0 + at - time.monotonic()
        if d > 0:
            time.sleep(d)
        f.cancel()


def check_codes(results, allowed, what):
    """results: [(code, details)]. Every code must be in allowed. Returns a Counter of codes."""
    tally = collections.Counter(code for code, _ in results)
    bad = [(code, details) for code, details in results if code not in allowed]
    assert not bad, f"{what}: unexpected statuses {bad[:5]} (tally {dict(tally)})"
    return tally


# UNAVAILABLE messages of clued itself; any other UNAVAILABLE a grpcio call reports comes from
# its connection ending ("Socket closed", "Connection reset by peer").
SERVER_UNAVAILABLE = re.compile(r"busy|database|shutting down")
# nghttp2 refusing an RST_STREAM for a stream the client never opened.
IDLE_RST = re.compile(r"invalid frame type 3 on stream \d+: Protocol error")


def settle(srv, mark, calls):
    """calls: [(client, future, tag)] -> [(tag, (code, details))], leaving out the calls lost
    with a connection the server had to end because the client broke the protocol.

    grpcio (grpc-core) can send RST_STREAM for a call it cancelled before the call's HEADERS
    went out (grpc/grpc#38758; a deadline of a millisecond or a cancel right after the send
    does it under load). RST_STREAM on an idle stream is a connection error (RFC 9113 5.1),
    so nghttp2 ends that connection and its other calls fail with UNAVAILABLE. Such losses are
    accepted on no more connections than the server logged the frame for (since output mark)."""
    results = [(cl, tag, outcome(f)) for cl, f, tag in calls]

    def lost(res):
        return res[0] == Code.UNAVAILABLE and not SERVER_UNAVAILABLE.search(res[1] or "")

    torn = {id(cl) for cl, _, res in results if lost(res)}
    if torn:
        n = len(IDLE_RST.findall(srv.output()[mark:]))
        assert len(torn) <= n, (f"{len(torn)} connection(s) lost calls with UNAVAILABLE, the server logged {n} "
                                f"RST_STREAM on an idle stream: {[r for _, _, r in results if lost(r)][:3]}")
        print(f"  note: {len(torn)} grpcio connection(s) ended after the client reset a stream it never opened")
    return [(tag, res) for cl, tag, res in results if not (id(cl) in torn and lost(res))]


class RawConn:
    """One raw HTTP/2 connection carrying many streams, some reset at planned moments."""

    def __init__(self, addr):
        self.h = RawH2(addr)
        self.ours = set()  # streams this side reset
        self.t_start, self.t_end = {}, {}

    def start(self, path, msg, headers, timeout_ms=None):
        hs = list(headers) + ([("grpc-timeout", f"{timeout_ms}m")] if timeout_ms else [])
        sid = self.h.request(path, grpc_frame(msg.SerializeToString()), headers=hs)
        self.t_start[sid] = time.monotonic()
        return sid

    def _reset(self, sid):
        if self.h.responses[sid].ended:
            return
        try:
            self.h.conn.reset_stream(sid, error_code=8)  # CANCEL
        except h2.exceptions.StreamClosedError:
            return
        self.h.flush()
        self.ours.add(sid)
        self.h.responses[sid].ended = True

    def run(self, resets=None, limit=60.0, server_may_close=False, starts=()):
        """Reset the streams of resets ({sid: seconds from now}) still open at their moment,
        open those of starts ([(seconds from now, (path, message, headers), reset after or
        None)]) at theirs, and read until every stream ended. Returns False if the server
        closed the connection. self.planned holds the streams given a reset time."""
        t0 = time.monotonic()
        plan = [(t0 + at, 0, i, sid) for i, (sid, at) in enumerate((resets or {}).items())]
        plan += [(t0 + at, 1, i, (req, after)) for i, (at, req, after) in enumerate(starts)]
        heapq.heapify(plan)
        self.planned = set(resets or ())
        n = len(plan)
        while True:
            now = time.monotonic()
            while plan and plan[0][0] <= now:
                at, what, _, arg = heapq.heappop(plan)
                if what == 0:
                    self._reset(arg)
                    continue
                sid = self.start(*arg[0])
                if arg[1] is not None:
                    self.planned.add(sid)
                    n += 1
                    heapq.heappush(plan, (at + arg[1], 0, n, sid))
            if not plan and all(r.ended for r in self.h.responses.values()):
                return True
            assert now < t0 + limit, "raw streams did not finish"
            wait = max(0.0, min(plan[0][0] - now if plan else 1.0, t0 + limit - now))
            if not select.select([self.h.sock], [], [], wait)[0]:
                continue
            try:
                alive = self.h.pump()
            except OSError:
                alive = False
            now = time.monotonic()
            for sid, r in self.h.responses.items():
                if r.ended and sid not in self.t_end:
                    self.t_end[sid] = now
            if not alive:
                assert server_may_close, "the server closed a connection it should have kept"
                return False

    def status(self, sid):
        r = self.h.responses[sid]
        if sid in self.ours:
            return Code.CANCELLED
        if r.reset is not None:
            return ("RST_STREAM", r.reset)
        return GRPC_CODE.get(r.grpc_status, ("no status", r.headers, r.trailers))

    def drop(self, rst):
        """Close the socket abruptly: with rst, an RST instead of a FIN."""
        if rst:
            self.h.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.h.sock.close()

    def close(self):
        self.h.close()


def in_thread(fn, *args):
    """Run fn in a thread; join() re-raises what it raised."""
    box = {}

    def body():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: B902 - handed back to the joining thread
            box["error"] = e

    t = threading.Thread(target=body, daemon=True)
    t.start()

    def join(timeout=90):
        t.join(timeout)
        assert not t.is_alive(), f"{fn.__name__} hung"
        if "error" in box:
            raise box["error"]
        return box.get("value")

    return join


# ---- the server and its database ---------------------------------------------------------------


class Ctx:
    pass


def setup():
    c = Ctx()
    c.url = harness.test_database_url()
    c.dbname = re.search(r"postgresql:///([^?]+)", c.url).group(1)
    c.db = harness.Postgres.get().connect(c.dbname)
    # The tests count log lines (a dropped connection's "closed"): with the default
    # --log-rate, a burst of hundreds of "ended with its connection" lines in one second drops
    # some of the info lines counted, and the count never comes.
    c.srv = harness.Clued(c.url, args=["--db-pool", str(POOL), "--log-rate", "0"]).start()
    c.w = world.build(c.srv)
    c.submitters = [c.w.G1.leader, c.w.G2.member, c.w.G3.leader, c.w.R1.member, c.w.X1.leader]
    c.reader = c.w.G1.leader
    c.sent = {}
    return c


def teardown(c):
    c.w.close()
    c.db.close()
    stop_clean(c.srv)


def stop_clean(srv, timeout=30):
    """SIGTERM; exit 0 with no sanitizer report (the harness checks) and every handle closed."""
    out = srv.stop(timeout=timeout)
    assert "handles still open" not in out, out[-3000:]
    assert "stopped" in out
    return out


def busy_backends(c):
    """Statements clued's pool connections are running in the test database."""
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'active'"
                    " AND application_name = 'clued' AND pid <> pg_backend_pid()", (c.dbname,))
        return cur.fetchone()[0]


def wait_quiet(c, timeout=30):
    """Wait until no clued statement runs, on two samples 0.1 s apart: a finished statement
    hands its connection to the next waiting request at once, but that request is briefly in
    transit before PostgreSQL shows it active."""
    for _ in range(2):
        harness.wait_for(lambda: busy_backends(c) == 0, timeout=timeout, interval=0.05, what="idle pool")
        time.sleep(0.1)


def still_serving(c, srv, user=None):
    """Health SERVING, a Debug/Sleep through the pool, and an authenticated ListClues."""
    assert srv.alive(), "clued died:\n" + srv.output()[-4000:]
    cl = Client(srv.addr)
    try:
        assert cl.health.Check(H.HealthCheckRequest(), timeout=10).status == SERVING
        assert cl.sleep(H.HealthCheckRequest(service="0"), timeout=30).status == SERVING
        u = user or c.reader
        cl.clue.ListClues(pb.ListCluesRequest(page_size=1), timeout=30, metadata=u.metadata)
    finally:
        cl.close()


def cancelled_logged(srv):
    return srv.output().count("cancelled by the peer")


def conn_closes_logged(srv):
    return len(re.findall(r"conn \d+ \(.*?\): closed: ", srv.output()))


def refused(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, int(port)))
        return False
    except ConnectionRefusedError:
        return True
    finally:
        s.close()


# ---- 1. cancellation while the handler's query runs -------------------------------------------


def raw_cancel_storm(addr, mix, n, seed):
    rng = seeded(seed)
    rc = RawConn(addr)
    resets = {}
    for _ in range(n):
        sid = rc.start(*mix.raw(mix.kind()))
        if rng.random() < 0.7:
            resets[sid] = rng.uniform(0, 0.3)
    rc.run(resets)
    results = [(rc.status(sid), "") for sid in rc.h.responses]
    kept = [(rc.status(sid), "") for sid in rc.h.responses if sid not in resets]
    rc.close()
    return results, kept


def test_cancel_mid_query(c):
    rng = seeded(101)
    mix = Mix(c, rng)
    before = cancelled_logged(c.srv)
    clients = [Client(c.srv.addr) for _ in range(4)]
    for cl in clients:  # connected before the burst, so cancel times are measured from the send
        cl.health.Check(H.HealthCheckRequest(), timeout=10)
    raw = [in_thread(raw_cancel_storm, c.srv.addr, Mix(c, seeded(110 + i)), 60, 120 + i)
           for i in range(3)]
    mark = len(c.srv.output())
    calls, plan = [], []
    for i in range(320):
        cl = clients[i % 4]
        f = mix.future(cl, mix.kind())
        cancel = rng.random() < 0.8
        calls.append((cl, f, cancel))
        if cancel:
            plan.append((rng.uniform(0, 0.3), f))
    watchers = [clients[i % 4].health.Watch(H.HealthCheckRequest(), timeout=30) for i in range(12)]
    cancel_on_schedule(plan + [(rng.uniform(0, 0.3), w) for w in watchers])
    assert all(w.code() == Code.CANCELLED for w in watchers)
    settled = settle(c.srv, mark, calls)
    results = [res for _, res in settled]
    kept = [res for cancel, res in settled if not cancel]
    tally = check_codes(results, {Code.OK, Code.CANCELLED}, "grpcio calls cancelled at random")
    check_codes(kept, {Code.OK}, "grpcio calls left alone")
    for join in raw:
        r_all, r_kept = join()
        check_codes(r_all, {Code.OK, Code.CANCELLED}, "raw streams reset at random")
        check_codes(r_kept, {Code.OK}, "raw streams left alone")
    assert tally[Code.CANCELLED] > 100, tally
    # The server saw the resets while the calls were in flight, not only after they finished.
    harness.wait_for(lambda: cancelled_logged(c.srv) - before >= 100, what="cancellations logged")
    for cl in clients:
        cl.close()
    still_serving(c, c.srv)


# ---- 2. grpc-timeout expiring while the query runs ---------------------------------------------


def test_deadline_mid_query(c):
    rng = seeded(202)
    mix = Mix(c, rng)
    clients = [Client(c.srv.addr) for _ in range(3)]
    for cl in clients:
        cl.health.Check(H.HealthCheckRequest(), timeout=10)
    # Raw: the server alone enforces grpc-timeout (no client cancels); a Sleep must get
    # DEADLINE_EXCEEDED from the server close to its deadline, whatever the pool's backlog.
    rc = RawConn(c.srv.addr)
    raw_deadline = {}
    for _ in range(90):
        kind = mix.kind()
        ms = rng.randint(1, 200)
        sid = rc.start(*mix.raw(kind), timeout_ms=ms)
        raw_deadline[sid] = (kind, ms)
    raw = in_thread(rc.run)
    mark = len(c.srv.output())
    calls = []
    for i in range(240):
        kind = mix.kind()
        calls.append((clients[i % 3], mix.future(clients[i % 3], kind, timeout=rng.uniform(0.001, 0.2)), kind))
    settled = settle(c.srv, mark, calls)
    sleeps = [res for kind, res in settled if kind == "sleep"]
    real = [res for kind, res in settled if kind != "sleep"]
    check_codes(sleeps, {Code.DEADLINE_EXCEEDED}, "Sleep(0.3) with a deadline under 200 ms")
    check_codes(real, {Code.OK, Code.DEADLINE_EXCEEDED}, "ListClues/SubmitClue with a deadline")
    raw()
    late = []
    for sid, (kind, ms) in raw_deadline.items():
        code = rc.status(sid)
        if kind == "sleep":
            assert code == Code.DEADLINE_EXCEEDED, (kind, ms, code)
            took = rc.t_end[sid] - rc.t_start[sid]
            if took > ms / 1000 + 1.0:
                late.append((ms, round(took, 3)))
        else:
            assert code in (Code.OK, Code.DEADLINE_EXCEEDED), (kind, ms, code)
    assert not late, f"DEADLINE_EXCEEDED answered late (deadline ms, seconds taken): {late}"
    rc.close()
    # Later calls are fine, once the pool has worked through the abandoned statements.
    for cl in clients:
        assert cl.sleep(H.HealthCheckRequest(service="0"), timeout=30).status == SERVING
        cl.close()
    still_serving(c, c.srv)


# ---- 3. connections dropped with many streams mid-query ----------------------------------------


def raw_drop(addr, mix, n, seed):
    rng = seeded(seed)
    rc = RawConn(addr)
    for _ in range(n):
        rc.start(*mix.raw(mix.kind()))
    time.sleep(rng.uniform(0, 0.3))
    rc.drop(rst=rng.random() < 0.5)


def test_connection_drop_mid_query(c):
    rng = seeded(303)
    mix = Mix(c, rng)
    before = conn_closes_logged(c.srv)
    drops = [in_thread(raw_drop, c.srv.addr, Mix(c, seeded(310 + i)), 50, 320 + i) for i in range(10)]
    clients = [Client(c.srv.addr) for _ in range(3)]
    for cl in clients:
        cl.health.Check(H.HealthCheckRequest(), timeout=10)
    futs = [[mix.future(cl, mix.kind()) for _ in range(40)] + [cl.health.Watch(H.HealthCheckRequest(), timeout=30)]
            for cl in clients]
    t0 = time.monotonic()
    for cl, at in zip(clients, sorted(rng.uniform(0, 0.3) for _ in clients)):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        cl.close()  # the channel's connection goes with its calls still open
    for fs in futs:
        check_codes([outcome(f) for f in fs], {Code.OK, Code.CANCELLED}, "calls on a closed channel")
    for join in drops:
        join()
    # A dropped connection is closed once its calls' statements have ended or been cancelled;
    # on a loaded machine with other suites running beside, that can take more than seconds.
    harness.wait_for(lambda: conn_closes_logged(c.srv) - before >= len(drops) + len(clients), timeout=60,
                     what="drops logged")
    harness.wait_for(lambda: re.search(r"ended with its connection: (peer closed the connection|connection reset"
                                       r" by peer)", c.srv.output()), timeout=60, what="calls ended by the drops logged")
    still_serving(c, c.srv)


# ---- 4. SIGTERM with hundreds of calls mid-query ------------------------------------------------


def storm_then_sigterm(c, seed, args, nsleep, nreal, grace_s, late_watch=False):
    """Start clued with args on the shared database, put nsleep Sleeps and nreal real calls in
    flight, wait until the pool is busy with them, send SIGTERM. With late_watch, a Watch
    whose request completes after the signal must end at once. Returns (srv output, results,
    raw results, seconds from the signal to exit)."""
    rng = seeded(seed)
    mix = Mix(c, rng)
    srv = harness.Clued(c.url, args=args).start()
    try:
        clients = [Client(srv.addr) for _ in range(4)]
        for cl in clients:
            cl.health.Check(H.HealthCheckRequest(), timeout=10)
        kinds = ["sleep"] * nsleep + [rng.choice(("list", "submit")) for _ in range(nreal)]
        rng.shuffle(kinds)
        futs = [mix.future(clients[i % 4], k, timeout=60) for i, k in enumerate(kinds)]
        rcs = []
        for _ in range(2):
            rc = RawConn(srv.addr)
            for _ in range(30):
                rc.start(*mix.raw(mix.kind()))
            rcs.append((rc, in_thread(rc.run, None, 60.0, True)))
        # A Health/Watch whose request is complete only after the signal (its stream was
        # open before GOAWAY) ends at once with UNAVAILABLE instead of holding up the exit.
        late = RawH2(srv.addr)
        late_sid = late.request("/grpc.health.v1.Health/Watch", end=False)
        late.conn.send_data(late_sid, grpc_frame(b"")[:3])
        late.flush()
        harness.wait_for(lambda: busy_backends(c) >= int(args[args.index("--db-pool") + 1]),
                         timeout=20, interval=0.02, what="the pool busy with the storm")
        time.sleep(0.2)  # every stream has reached the server: none is refused by GOAWAY
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        harness.wait_for(lambda: "received SIGTERM" in srv.output(), what="SIGTERM logged")
        harness.wait_for(lambda: refused(srv.addr) or not srv.alive(), timeout=5, what="listener closed")
        assert refused(srv.addr), "a new connection was accepted after SIGTERM"
        while late.goaway is None and late.pump():
            pass
        assert late.goaway is not None, "no GOAWAY"
        if late_watch:
            t_late = time.monotonic()
            late.conn.send_data(late_sid, grpc_frame(b"")[3:], end_stream=True)
            late.flush()
            r = late.wait(late_sid)
            assert r.ended, "the Watch was still open when its connection closed"
            assert r.grpc_status == 14 and "shutting down" in r.grpc_message, (r.headers, r.trailers, r.data)
            assert time.monotonic() - t_late < 1, time.monotonic() - t_late
        late.close()
        results = [outcome(f) for f in futs]
        raw = []
        for rc, join in rcs:
            join()
            raw += [rc.status(sid) for sid, r in rc.h.responses.items() if r.ended]
            assert rc.h.goaway is not None, "no GOAWAY on a raw connection"
            rc.close()
        out = stop_clean(srv, timeout=grace_s + 20)
        took = time.monotonic() - t0
        for cl in clients:
            cl.close()
        return out, results, raw, took
    except BaseException:
        if srv.proc is not None:
            srv.proc.kill()
            sys.stderr.write(srv.output()[-6000:])
        raise


def test_sigterm_mid_query_drains(c):
    out, results, raw, took = storm_then_sigterm(c, 404, ["--db-pool", "64", "--grace-ms", "6000"], 320, 60, 6,
                                                late_watch=True)
    # Within the grace period every call already at the server finishes normally.
    tally = check_codes(results, {Code.OK}, "calls in flight at SIGTERM, ample grace period")
    check_codes([(s, "") for s in raw], {Code.OK}, "raw streams in flight at SIGTERM")
    assert "grace period over" not in out
    assert took < 6 + 3, took
    print(f"  {len(results)} calls drained after SIGTERM: {dict(tally)}; exit {took:.2f} s after the signal")
    still_serving(c, c.srv)


def test_sigterm_grace_expires_mid_query(c):
    out, results, raw, took = storm_then_sigterm(c, 405, ["--db-pool", "32", "--grace-ms", "100"], 320, 60, 0.1)
    tally = check_codes(results, {Code.OK, Code.UNAVAILABLE, Code.CANCELLED}, "calls cut by the grace period")
    check_codes([(s, "") for s in raw], {Code.OK, Code.UNAVAILABLE, Code.CANCELLED}, "raw streams at grace")
    # 380 calls on 32 connections need seconds: the 100 ms grace period cut most of them off
    # while the pool still had statements running and waiting.
    assert "grace period over" in out, out[-3000:]
    # The calls it cut are logged as ended by the server closing their connection.
    assert "ended with its connection: grace period over" in out, out[-3000:]
    assert tally[Code.UNAVAILABLE] + tally[Code.CANCELLED] > 200, tally
    assert took < 5, took
    print(f"  grace 100 ms: {dict(tally)}; exit {took:.2f} s after the signal")
    wait_quiet(c)
    still_serving(c, c.srv)


# ---- 5. pool saturation mixed with cancellation -------------------------------------------------


def run_timeline(events):
    """events: [(seconds from now, fn)]; call each at its moment, in time order."""
    t0 = time.monotonic()
    for at, fn in sorted(events, key=lambda e: e[0]):
        d = t0 + at - time.monotonic()
        if d > 0:
            time.sleep(d)
        fn()


def test_pool_saturation_with_cancel(c):
    rng = seeded(505)
    mix = Mix(c, rng)
    srv = harness.Clued(c.url, args=["--db-pool", "2", "--db-queue", "4"]).start()
    with srv:
        before = cancelled_logged(srv)
        clients = [Client(srv.addr) for _ in range(3)]
        for cl in clients:
            cl.health.Check(H.HealthCheckRequest(), timeout=10)
        # Calls arrive at about 60 a second for 2.5 s, several times what two connections
        # serve: the queue stays full while calls in it and on the connections are cancelled
        # or time out.
        rcs = []
        for i in range(2):
            rc = RawConn(srv.addr)
            starts = [(j * 0.05 + rng.uniform(0, 0.05), mix.raw(mix.kind()),
                       rng.uniform(0, 0.3) if rng.random() < 0.5 else None) for j in range(50)]
            rcs.append((rc, in_thread(rc.run, None, 60.0, False, starts)))
        mark = len(srv.output())
        calls, events = [], []
        for i in range(100):
            at = i * 0.025
            kind = mix.kind()
            r = rng.random()
            call = {"kind": kind, "cl": clients[i % 3], "deadline": rng.uniform(0.001, 0.2) if r < 0.25 else None,
                    "cancel": rng.uniform(0, 0.3) if 0.25 <= r < 0.65 else None}
            calls.append(call)

            def send(call=call):
                call["f"] = mix.future(call["cl"], call["kind"], timeout=call["deadline"] or 30)

            events.append((at, send))
            if call["cancel"] is not None:
                events.append((at + call["cancel"], lambda call=call: call["f"].cancel()))
        run_timeline(events)
        settled = settle(srv, mark, [(call["cl"], call["f"], call) for call in calls])
        results = [res for _, res in settled]
        plain = [res for call, res in settled if call["deadline"] is None and call["cancel"] is None]
        tally = check_codes(results, {Code.OK, Code.CANCELLED, Code.DEADLINE_EXCEEDED, Code.UNAVAILABLE},
                            "saturated pool")
        # A call nobody cancelled either ran or was refused because the queue was full, and
        # then it says so (the token lookup as much as the handler's query).
        check_codes(plain, {Code.OK, Code.UNAVAILABLE}, "saturated pool, calls left alone")
        for code, details in plain:
            if code == Code.UNAVAILABLE:
                assert "busy" in details, details
        for rc, join in rcs:
            join()
            check_codes([(rc.status(s), "") for s in rc.h.responses],
                        {Code.OK, Code.CANCELLED, Code.UNAVAILABLE}, "raw streams, saturated pool")
            check_codes([(rc.status(s), "") for s in rc.h.responses if s not in rc.planned],
                        {Code.OK, Code.UNAVAILABLE}, "raw streams left alone, saturated pool")
            for s in rc.h.responses:
                if s not in rc.planned and rc.status(s) == Code.UNAVAILABLE:
                    assert "busy" in rc.h.responses[s].grpc_message, rc.h.responses[s].grpc_message
            rc.close()
        assert all(tally[k] > 0 for k in (Code.OK, Code.UNAVAILABLE, Code.CANCELLED, Code.DEADLINE_EXCEEDED)), tally
        assert cancelled_logged(srv) - before > 10
        print(f"  pool 2 / queue 4: {dict(tally)}")
        for cl in clients:
            cl.close()
        wait_quiet(c)
        still_serving(c, srv)
    still_serving(c, c.srv)


# ---- 6. SubmitClue committed fully or not at all ------------------------------------------------


def gapless(c):
    """Registration numbers per (unit, year) are 1..n with no gap, and the counter says n."""
    with c.db.cursor() as cur:
        cur.execute("SELECT reg_unit, reg_year, count(*), min(reg_seq), max(reg_seq),"
                    "       (SELECT last_seq FROM clue_counters k WHERE k.unit_id = reg_unit AND k.year = reg_year)"
                    "  FROM clues GROUP BY reg_unit, reg_year")
        rows = cur.fetchall()
    for unit, year, n, lo, hi, counter in rows:
        assert (lo, hi, counter) == (1, n, n), f"unit {unit} year {year}: {n} clues numbered {lo}..{hi}, counter {counter}"
    return sum(r[2] for r in rows)


def test_submit_all_or_nothing(c):
    assert len(c.sent) > 200, len(c.sent)
    wait_quiet(c)
    with c.db.cursor() as cur:
        cur.execute("SELECT request_id::text, clue_id FROM clue_requests WHERE method = 'SubmitClue'")
        committed = dict(cur.fetchall())
        cur.execute("SELECT count(*), count(DISTINCT registration_number) FROM clues")
        nclues, nregs = cur.fetchone()
    assert set(committed) <= set(c.sent), set(committed) - set(c.sent)
    # Every clue belongs to exactly one committed request_id, and no request left half a clue.
    assert nclues == nregs == len(committed) == len(set(committed.values())), (nclues, nregs, len(committed))
    assert gapless(c) == nclues
    # A retry of each request_id returns its one clue: the committed one, or a new one now.
    cl = Client(c.srv.addr)
    rids = sorted(c.sent)
    futs = [(rid, cl.clue.SubmitClue.future(submit_req(rid), timeout=30, metadata=c.sent[rid].metadata))
            for rid in rids]
    got = {}
    for rid, f in futs:
        got[rid] = f.result(timeout=60).id
        if rid in committed:
            assert got[rid] == committed[rid], (rid, got[rid], committed[rid])
    again = {rid: cl.clue.SubmitClue(submit_req(rid), timeout=30, metadata=c.sent[rid].metadata).id
             for rid in rids[:50]}
    assert all(again[rid] == got[rid] for rid in again)
    cl.close()
    assert len(set(got.values())) == len(rids)
    with c.db.cursor() as cur:
        cur.execute("SELECT count(*) FROM clues")
        assert cur.fetchone()[0] == len(rids)
    assert gapless(c) == len(rids)
    print(f"  {len(rids)} request_ids: {len(committed)} had committed through the storms, "
          f"{len(rids) - len(committed)} committed on retry")
    still_serving(c, c.srv)


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
