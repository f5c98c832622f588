"""bench/load's two load generators, clue-load (bench/load.c, on nghttp2) and grpcpp-load
(bench/grpcpp_load.cc, on grpc++), against a real clued: each phase does what it says (the
clues submitted exist, those moved and closed are in their states, once each), and a reply
that is not OK is counted as an error, never as a success.
"""

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import world  # noqa: E402

CLIENTS = {"clue-load": os.path.join(harness.BUILD, "clue-load"),
           "grpcpp-load": os.path.join(harness.BUILD, "grpcpp-load")}


def setup():
    c = world.served()
    c.tmp = tempfile.mkdtemp(prefix="load-clients-")
    c.users = os.path.join(c.tmp, "users")
    with open(c.users, "w") as f:
        for code in ("G1", "G2"):
            u = getattr(c.w, code)
            f.write(f"{c.w.units[code].id} LEADER {u.leader.token}\n{c.w.units[code].id} MEMBER {u.member.token}\n")
    return c


teardown = world.unserve


def run(c, client, phase, n, seconds, users=None, ids_in=None, name=None, server=None, extra=()):
    """One phase; its JSON and the clues it left in its target state."""
    out = os.path.join(c.tmp, f"{client}-{name or phase}")
    cmd = [CLIENTS[client], "--server", server or c.srv.addr, "--phase", phase, "--concurrency", str(n),
           "--duration", str(seconds), "--users", users or c.users, "--ids-out", out, *extra]
    if ids_in:
        cmd += ["--ids-in", ids_in]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    res = json.loads(r.stdout)
    with open(out) as f:
        left = [tuple(int(x) for x in line.split()) for line in f if line.strip()]
    return res, out, left


def states(c, ids):
    with c.db.cursor() as cur:
        cur.execute("SELECT state, count(*) FROM clues WHERE id = ANY(%s) GROUP BY state", ([i for i, _ in ids],))
        return dict(cur.fetchall())


def test_phases_do_what_they_count(c):
    for client in CLIENTS:
        res, ids, made = run(c, client, "submit", 4, 1)
        assert res["errors"] == 0 and res["ok"] == len(made) > 0, res
        assert states(c, made) == {"ACCEPTED": len(made)}, (client, res)
        res, moved_file, moved = run(c, client, "move", 4, 30, ids_in=ids)
        # Every clue dealt once, each moved: the phase ends when the clues run out.
        assert res["errors"] == 0 and res["ok"] == len(moved) == len(made), (client, res, len(made))
        assert states(c, moved) == {"PRELIMINARY_CHECK": len(made)}, client
        res, _, closed = run(c, client, "close", 4, 30, ids_in=moved_file)
        assert res["errors"] == 0 and res["ok"] == len(closed) == len(made), (client, res)
        assert states(c, closed) == {"CLOSED": len(made)}, client
        res, _, _ = run(c, client, "get", 4, 1, ids_in=ids)
        assert res["errors"] == 0 and res["ok"] > 0 and res["calls"] == res["ok"], (client, res)


def test_refusals_are_errors(c):
    # A move of clues already moved (ABORTED: stale version) and calls with a token clued does
    # not know (UNAUTHENTICATED): every call an error, none a success.
    bad = os.path.join(c.tmp, "bad-users")
    with open(bad, "w") as f:
        f.write(f"{c.w.units['G1'].id} LEADER ct_{'0' * 64}\n{c.w.units['G1'].id} MEMBER ct_{'0' * 64}\n")
    for client in CLIENTS:
        _, ids, made = run(c, client, "submit", 2, 1, name="submit-again")
        _, moved_file, _ = run(c, client, "move", 2, 30, ids_in=ids, name="move-again")
        res, _, left = run(c, client, "move", 2, 30, ids_in=moved_file, name="move-stale")
        assert res["ok"] == 0 and res["errors"] == len(made) and left == [], (client, res)
        assert "ABORTED" in res["first_error"] or res["first_error"].startswith("10:"), (client, res)
        res, _, left = run(c, client, "submit", 2, 1, users=bad, name="submit-bad")
        assert res["ok"] == 0 and res["errors"] > 0 and left == [], (client, res)
        assert "UNAUTHENTICATED" in res["first_error"] or res["first_error"].startswith("16:"), (client, res)


def test_streams_past_the_servers_limit_are_sent_again(c):
    """More calls in flight on one connection than the server's SETTINGS_MAX_CONCURRENT_STREAMS:
    the streams a client opened before it had the server's SETTINGS are refused unprocessed
    (REFUSED_STREAM), and a gRPC client sends them again; so does clue-load, which counts them
    neither as errors nor twice (every clue dealt is moved once)."""
    srv = harness.Clued(c.url, args=["--max-concurrent-streams", "4"]).start(migrate=False)
    try:
        for client in CLIENTS:
            one = ["--connections", "1"]
            res, ids, made = run(c, client, "submit", 24, 1, name="submit-limit", server=srv.addr, extra=one)
            assert res["errors"] == 0 and res["ok"] == len(made) > 0, (client, res)
            res, _, moved = run(c, client, "move", 24, 30, ids_in=ids, name="move-limit", server=srv.addr,
                                extra=one)
            assert res["errors"] == 0 and res["ok"] == len(moved) == len(made), (client, res, len(made))
            assert states(c, moved) == {"PRELIMINARY_CHECK": len(made)}, client
    finally:
        srv.stop()


def test_revocation_bench_wants_a_stream_on_each_instance(c):
    """bench/revocation.py alternates a round's streams between its two instances, so with
    --streams 1 instance B would time none: refused as a usage error before anything starts."""
    for args, want in ((["--streams", "1"], "--streams must be at least 2"), (["-n", "0"], "-n must be at least 1")):
        r = subprocess.run([sys.executable, os.path.join(harness.SRC, "bench", "revocation.py"), *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and want in r.stderr and r.stdout == "", r.stdout + r.stderr


if __name__ == "__main__":
    harness.run_tests(dict(globals()), setup, teardown)
