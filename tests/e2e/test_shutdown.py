"""SIGINT/SIGTERM: stop accepting, GOAWAY, let calls in flight finish within the grace period,
exit 0."""

import os
import re
import signal
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from rawh2 import RawH2, grpc_frame  # noqa: E402

S = harness.stubs()
CHECK = "/grpc.health.v1.Health/Check"


def test_sigterm_ends_watchers_and_exits_zero():
    srv = harness.Clued(harness.test_database_url()).start()
    ch = grpc.insecure_channel(srv.addr)
    it = S.health_pb2_grpc.HealthStub(ch).Watch(S.health_pb2.HealthCheckRequest(), timeout=30)
    assert next(it).status == S.health_pb2.HealthCheckResponse.SERVING
    h = RawH2(srv.addr)
    # The server's SETTINGS: it has read the preface, so this is an HTTP/2 connection, which
    # gets a GOAWAY (a connection that has not said a word yet is closed at once).
    assert h.pump()
    t0 = time.time()
    srv.send_signal(signal.SIGTERM)
    rest, code = [], None
    try:
        for m in it:
            rest.append(m.status)
    except grpc.RpcError as e:
        code = e.code()
    assert code == grpc.StatusCode.UNAVAILABLE, code
    assert rest in ([], [S.health_pb2.HealthCheckResponse.NOT_SERVING]), rest
    # The idle raw connection is told to go away.
    while h.goaway is None and h.pump():
        pass
    assert h.goaway is not None and h.goaway.error_code == 0
    out = srv.stop(timeout=10)
    assert time.time() - t0 < 5
    assert "received SIGTERM" in out and "stopped" in out
    ch.close()


def test_sigterm_ends_an_idle_reflection_stream():
    """A reflection stream waiting for its client's next request is ended at once with
    UNAVAILABLE, as the watches are: it used to hold the exit for the whole grace period."""
    import queue
    srv = harness.Clued(harness.test_database_url(), args=["--grace-ms", "30000"]).start()
    ch = grpc.insecure_channel(srv.addr)
    q = queue.Queue()
    call = ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                            request_serializer=lambda b: b, response_deserializer=lambda b: b)
    replies = call(iter(q.get, None), timeout=60)
    q.put(b"\x3a\x01*")  # list_services; the stream stays open for the next request
    assert b"clue.v1.ClueService" in next(replies)
    t0 = time.time()
    srv.send_signal(signal.SIGTERM)
    try:
        rest = list(replies)
        raise AssertionError(f"the stream ended OK: {rest}")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in e.details(), (e.code(), e.details())
    out = srv.stop(timeout=40)
    assert time.time() - t0 < 15, "the exit waited for the grace period"
    assert "grace period over" not in out, out[-2000:]
    q.put(None)
    ch.close()


def test_grace_period_bounds_stalled_calls():
    srv = harness.Clued(harness.test_database_url(), args=["--grace-ms", "400"]).start()
    h = RawH2(srv.addr)
    sid = h.request(CHECK, end=False)  # headers only: the call never completes
    h.conn.send_data(sid, b"\x00\x00\x00")
    h.flush()
    time.sleep(0.1)
    t0 = time.time()
    out = srv.stop(sig=signal.SIGINT, timeout=10)
    took = time.time() - t0
    assert 0.35 < took < 5, took
    assert "received SIGINT" in out and "grace period over" in out, out


def test_calls_in_flight_complete_during_drain():
    srv = harness.Clued(harness.test_database_url(), args=["--grace-ms", "5000"]).start()
    h = RawH2(srv.addr)
    sid = h.request(CHECK, end=False)
    h.conn.send_data(sid, grpc_frame(b"")[:3])
    h.flush()
    time.sleep(0.1)
    srv.send_signal(signal.SIGTERM)
    while h.goaway is None and h.pump():
        pass
    assert h.goaway is not None
    # The call already open finishes normally after GOAWAY.
    h.conn.send_data(sid, grpc_frame(b"")[3:], end_stream=True)
    h.flush()
    r = h.wait(sid)
    assert r.grpc_status == 0, (r.headers, r.trailers)
    assert h.goaway is not None
    h.close()
    srv.stop(timeout=10)


def test_sighup_without_tls_changes_nothing():
    # SIGHUP reloads the TLS files; a cleartext server has none, but must not die of the
    # signal's default action, cutting the calls in flight.
    srv = harness.Clued(harness.test_database_url()).start()
    ch = grpc.insecure_channel(srv.addr)
    sleep = ch.unary_unary("/clued.test.Debug/Sleep",
                           request_serializer=S.health_pb2.HealthCheckRequest.SerializeToString,
                           response_deserializer=S.health_pb2.HealthCheckResponse.FromString)
    fut = sleep.future(S.health_pb2.HealthCheckRequest(service="1"), timeout=10)
    time.sleep(0.3)
    srv.proc.send_signal(signal.SIGHUP)  # not send_signal(): stop() still sends SIGTERM
    harness.wait_for(lambda: "nothing to do" in srv.output(), timeout=5, what="the SIGHUP logged")
    assert srv.alive()
    assert fut.result().status == S.health_pb2.HealthCheckResponse.SERVING
    health = S.health_pb2_grpc.HealthStub(ch)
    assert health.Check(S.health_pb2.HealthCheckRequest(), timeout=5).status == \
        S.health_pb2.HealthCheckResponse.SERVING
    ch.close()
    out = srv.stop(timeout=10)
    assert "received SIGHUP: cleartext" in out, out


def test_start_up_past_a_host_that_never_answers():
    """A connection string's first host accepts connections and then never answers (the
    failed primary of a failover). The start-up's blocking sessions (migrate, bootstrap,
    serve's checks) waited on it for ever; they now give each host 10 s, as the pool does,
    and go on to the next. While serve's checks wait, SIGHUP is ignored (it killed the
    process) and SIGTERM ends it (with no handler, clued as PID 1 in a container ignored it)."""
    import socket
    import subprocess

    pg = harness.Postgres.get()
    db = pg.new_database("silent")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepted by the kernel, never answered
    port = silent.getsockname()[1]
    url = f"postgresql:///{db}?host=127.0.0.1,{pg.host}&port={port},{pg.port}"
    clued = harness.Clued(pg.url(db))
    try:
        t0 = time.time()
        r = subprocess.run([harness.CLUED, "migrate", "--database-url", url + "&user=clued_owner"],
                           env=clued.env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert time.time() - t0 >= 9, "the first host was not waited on"
        proc = subprocess.Popen([harness.CLUED, "serve", "--listen", "127.0.0.1:0", "--database-url",
                                 url + "&user=clued"], env=clued.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(1.0)
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            assert proc.poll() is None, proc.communicate()[0]
            proc.send_signal(signal.SIGTERM)
            out = proc.communicate(timeout=5)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, out)
        assert "stopped by a signal before serving" in out, out
    finally:
        silent.close()


def hang(pg):
    """Stop every process of the private cluster pg (SIGSTOP), as a hung database host; returns
    their pids for resume()."""
    import subprocess

    with open(os.path.join(pg.owned_dir, "data", "postmaster.pid")) as f:
        pm = int(f.readline())
    # The postmaster first, so that it starts no backend after its children were listed.
    os.kill(pm, signal.SIGSTOP)
    pids = [pm]
    for k in subprocess.run(["pgrep", "-P", str(pm)], capture_output=True, text=True).stdout.split():
        pids.append(int(k))
        os.kill(int(k), signal.SIGSTOP)
    return pids


def resume(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGCONT)
        except ProcessLookupError:
            pass  # a backend that was on its way out when it was stopped


def calls_that_give_up(ch, token, n):
    """n calls that read the database, each giving up at its deadline while it hangs: clued
    sends each statement a cancel request, which the stopped server never answers."""
    stub = S.admin_pb2_grpc.AdminServiceStub(ch)
    futures = [stub.ListUnits.future(S.admin_pb2.ListUnitsRequest(), timeout=0.5,
                                     metadata=[("authorization", "Bearer " + token)])
               for _ in range(n)]
    for fu in futures:
        assert fu.exception() is not None and fu.code() == grpc.StatusCode.DEADLINE_EXCEEDED, fu


def test_sigterm_exits_while_the_database_hangs():
    """A database host that stops answering (every PostgreSQL process stopped, SIGSTOP): calls
    that gave up have cancel requests on their way, which libpq sends blocking, with no
    timeout. SIGTERM still ends clued within the grace period: those requests wait on
    threads of their own, which the exit does not wait for."""
    import subprocess

    pg = harness.private_postgres()
    db = pg.new_database("hang")
    srv = harness.Clued(pg.url(db), args=["--grace-ms", "1000"]).start()
    token = re.search(r"ct_[0-9a-f]{64}", srv.run("bootstrap").stdout).group(0)
    ch = grpc.insecure_channel(srv.addr)
    pids = hang(pg)
    try:
        calls_that_give_up(ch, token, 4)
        time.sleep(1.0)
        t0 = time.time()
        srv.send_signal(signal.SIGTERM)
        try:
            rc = srv.proc.wait(8)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.time() - t0
    finally:
        resume(pids)
        ch.close()
    assert rc is not None, "clued did not exit while the database hung:\n" + srv.output()[-3000:]
    out = srv.stop()
    assert took < 4, took
    assert "received SIGTERM" in out and "stopped" in out, out[-2000:]


def test_cancel_threads_are_bounded():
    """At most 64 cancel requests wait on threads at once: with a pool of 80 connections whose
    80 statements all give up while the database hangs, 64 cancels go out and the other 16
    connections are dropped instead (their statements roll back when the server ends them).
    Once the database answers again, clued serves as before."""
    pg = harness.private_postgres()
    db = pg.new_database("hang")
    srv = harness.Clued(pg.url(db), args=["--db-pool", "80", "--db-conns-per-user", "80"]).start()
    token = re.search(r"ct_[0-9a-f]{64}", srv.run("bootstrap").stdout).group(0)
    md = [("authorization", "Bearer " + token)]
    admin_db = pg.connect(db)

    def clued_backends():
        with admin_db.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND usename = 'clued' AND application_name <> 'clued-listen'")
            return cur.fetchone()[0]

    with grpc.insecure_channel(srv.addr) as ch:
        stub = S.admin_pb2_grpc.AdminServiceStub(ch)
        stub.ListUnits(S.admin_pb2.ListUnitsRequest(), metadata=md, timeout=10)  # the token cached
        harness.wait_for(lambda: clued_backends() >= 80, timeout=30, what="80 pool connections")
        pids = hang(pg)
        try:
            calls_that_give_up(ch, token, 80)
            harness.wait_for(lambda: srv.output().count("cannot send a cancel request") >= 16, timeout=10,
                             what="the cancels past 64 dropping their connections")
        finally:
            resume(pids)
        assert srv.output().count("cannot send a cancel request") == 16, srv.output()[-3000:]
        harness.wait_for(lambda: stub.ListUnits(S.admin_pb2.ListUnitsRequest(), metadata=md, timeout=5),
                         timeout=30, what="a call served again")
    admin_db.close()
    srv.stop()


if __name__ == "__main__":
    harness.run_tests(globals())
