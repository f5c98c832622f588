#!/usr/bin/env python3
"""Time how long open WatchEvents streams live on after their token is revoked.

usage: bench/revocation.py [-n ROUNDS] [--streams K] [--bystanders B] [--clued PATH]

Starts a throwaway PostgreSQL (scripts/pg-test) and two instances of the given clued (default:
the release build in build/, made with `cmake -S . -B build -DCMAKE_BUILD_TYPE=Release &&
cmake --build build -j2`) on one database, creates the units and users of tests/e2e/world.py
and B bystander streams (other tokens, spread over both instances) that stay open throughout.
Each round issues a token to an AUDITOR, opens K streams with it (alternating instances),
waits until each has received a fresh event, revokes the token through instance A and times,
for each stream, from just before the RevokeToken call to the moment the client sees the
stream's UNAUTHENTICATED status. Prints percentiles per instance (B hears of the revocation
only through PostgreSQL NOTIFY).
"""

import argparse
import os
import queue
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchenv  # noqa: E402


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50, help="rounds (default 50)")
    ap.add_argument("--streams", type=int, default=4,
                    help="streams of the revoked token per round, alternating between the instances "
                         "(default 4; at least 2)")
    ap.add_argument("--bystanders", type=int, default=100, help="streams that stay open (default 100)")
    benchenv.add_clued_arg(ap)
    args = ap.parse_args()
    # The streams alternate between the instances: with one, instance B would time none.
    if args.streams < 2:
        ap.error("--streams must be at least 2, one stream on each instance")
    if args.n < 1:
        ap.error("-n must be at least 1")
    benchenv.use_clued(args.clued)
    import grpc
    import harness
    import world

    S = harness.stubs()
    A, AU, C = S.admin_pb2, S.audit_pb2, S.common_pb2
    pg = harness.Postgres.get()
    url = pg.url(pg.new_database("bench"))
    a = harness.Clued(url).start()
    b = harness.Clued(url).start(migrate=False)
    chans = [grpc.insecure_channel(s.addr) for s in (a, b)]
    stubs = [S.audit_pb2_grpc.AuditServiceStub(ch) for ch in chans]
    open_calls = []

    def watch(stub, token, seen, ended):
        call = stub.WatchEvents(AU.WatchEventsRequest(after_seq=0), metadata=[("authorization", "Bearer " + token)])
        open_calls.append(call)

        def run():
            try:
                for e in call:
                    seen.put(e.seq)
            except grpc.RpcError as e:
                ended.put((time.perf_counter(), e.code()))
                return
            ended.put((time.perf_counter(), grpc.StatusCode.OK))
        threading.Thread(target=run, daemon=True).start()

    try:
        w = world.build(a)
        admin = w.admin.admin
        db = pg.connect(url.split("/")[3].split("?")[0])

        def poke():
            with db.cursor() as cur:
                cur.execute("SELECT (audit_append(NULL, NULL, 'bench.poke', 'clue', 1, NULL, NULL, NULL, NULL,"
                            " '{}')).seq")
                return cur.fetchone()[0]
        u = admin.CreateUser(A.CreateUserRequest(unit_id=w.admin_unit.id, name="bench-auditor",
                                                 role=C.ROLE_AUDITOR), timeout=10)
        for i in range(args.bystanders):
            t = admin.IssueToken(A.IssueTokenRequest(user_id=u.id, note="bystander"), timeout=10)
            watch(stubs[i % 2], t.token, queue.Queue(), queue.Queue())
        lat = {0: [], 1: []}
        for r in range(args.n):
            t = admin.IssueToken(A.IssueTokenRequest(user_id=u.id, note=f"round {r}"), timeout=10)
            streams = []
            for k in range(args.streams):
                seen, ended = queue.Queue(), queue.Queue()
                watch(stubs[k % 2], t.token, seen, ended)
                streams.append((k % 2, seen, ended))
            s = poke()
            for _, seen, _ in streams:
                while seen.get(timeout=120) < s:
                    pass
            t0 = time.perf_counter()
            admin.RevokeToken(A.RevokeTokenRequest(token_id=t.token_id), timeout=10)
            for inst, _, ended in streams:
                at, code = ended.get(timeout=30)
                assert code == grpc.StatusCode.UNAUTHENTICATED, code
                lat[inst].append((at - t0) * 1000)
        for inst, name in ((0, "A (revoked here)"), (1, "B (hears through NOTIFY)")):
            v = lat[inst]
            print(f"instance {name}: {len(v)} streams, revocation to end ms: p50 {pct(v, 50):.1f}  "
                  f"p90 {pct(v, 90):.1f}  p99 {pct(v, 99):.1f}  max {max(v):.1f}")
        print(f"({args.n} rounds of {args.streams} streams, {args.bystanders} bystander streams open)")
        db.close()
        for call in open_calls:
            call.cancel()
        w.close()
    finally:
        for ch in chans:
            ch.close()
        b.stop()
        a.stop()


if __name__ == "__main__":
    main()
