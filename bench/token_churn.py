#!/usr/bin/env python3
"""What one user issuing and revoking their own tokens in a loop costs everyone else.

usage: bench/token_churn.py [-d SECONDS] [--churners N] [--callers K] [--token-issues-per-hour N]
                           [--clued PATH]

Starts a throwaway PostgreSQL (scripts/pg-test) and two instances A and B of the given clued
(default: the release build in build/, made with `cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
&& cmake --build build -j2`) on one database, with the units and users of tests/e2e/world.py.
K callers (other users, alternating instances) call ListAuditEvents in a loop, first alone for
SECONDS, then for SECONDS more while N threads of one MEMBER each issue a token and revoke it
through A (TokenService.IssueMyToken, RevokeMyToken), which every instance hears of through
PostgreSQL NOTIFY. Prints, for each phase: revocations a second, the churner's issues refused
a second (RESOURCE_EXHAUSTED: clued's --token-issues-per-hour, default 600, passed on when
given; 0 lifts it), the callers' calls a second, their failures by status, and the share of
both instances' token lookups answered from the principal cache (clued_auth_lookups_total, the
churner's own calls included).
"""

import argparse
import collections
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchenv  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-d", type=float, default=8.0, help="seconds of each phase (default 8)")
    ap.add_argument("--churners", type=int, default=2, help="threads revoking tokens (default 2)")
    ap.add_argument("--callers", type=int, default=4, help="other users calling (default 4)")
    ap.add_argument("--token-issues-per-hour", type=int, metavar="N",
                    help="clued's --token-issues-per-hour (default: clued's own, 600; 0: no limit)")
    benchenv.add_clued_arg(ap)
    args = ap.parse_args()
    benchenv.use_clued(args.clued)
    import grpc
    import harness
    import world
    from test_metrics import MetricsClued, scrape, value

    S = harness.stubs()
    T, AU = S.token_pb2, S.audit_pb2
    pg = harness.Postgres.get()
    url = pg.url(pg.new_database("bench"))
    metrics = ["--metrics-listen", "127.0.0.1:0"]
    if args.token_issues_per_hour is not None:
        metrics += ["--token-issues-per-hour", str(args.token_issues_per_hour)]
    a = MetricsClued(url, args=metrics).start()
    b = MetricsClued(url, args=metrics).start(migrate=False)
    w = world.build(a)
    chans = []
    try:
        def stub(srv, token, service):
            ch = grpc.insecure_channel(srv.addr)
            chans.append(ch)
            return service(grpc.intercept_channel(ch, world._Auth(token)))

        stop, churning = threading.Event(), threading.Event()
        revoked, refused = [0], [0]
        calls = collections.Counter()

        def churn():
            tokens = stub(a, w.G2.member.token, S.token_pb2_grpc.TokenServiceStub)
            churning.wait()
            while not stop.is_set():
                try:
                    t = tokens.IssueMyToken(T.IssueMyTokenRequest(note="churn"), timeout=10)
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    refused[0] += 1  # the hour's issues are used up: try again at once
                    continue
                tokens.RevokeMyToken(T.RevokeMyTokenRequest(token_id=t.token_id), timeout=10)
                revoked[0] += 1

        def call(srv, user):
            audit = stub(srv, user.token, S.audit_pb2_grpc.AuditServiceStub)
            while not stop.is_set():
                try:
                    audit.ListAuditEvents(AU.ListAuditEventsRequest(page_size=1), timeout=10)
                    calls["OK"] += 1
                except grpc.RpcError as e:
                    calls[e.code().name] += 1

        def lookups():
            got = [0.0, 0.0]
            for srv in (a, b):
                m = scrape(srv.metrics_addr)
                for i, f in enumerate(("cache", "database")):
                    got[i] += value(m, "clued_auth_lookups_total", **{"from": f}) or 0
            return got

        users = [w.G1.member, w.G1.leader, w.G3.member, w.R1.leader, w.X1.member, w.R2.member, w.G3.leader,
                 w.auditor]
        threads = [threading.Thread(target=call, args=((a, b)[i % 2], users[i % len(users)]))
                   for i in range(args.callers)]
        threads += [threading.Thread(target=churn) for _ in range(args.churners)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        print(f"{'phase':<8} {'revoked/s':>10} {'refused/s':>10} {'calls/s':>9} {'from cache':>11}  failures")
        for phase in ("quiet", "churn"):
            if phase == "churn":
                churning.set()
                time.sleep(1.0)
            l0, c0, r0, x0, t0 = lookups(), dict(calls), revoked[0], refused[0], time.monotonic()
            time.sleep(args.d)
            l1, c1, r1, x1, t1 = lookups(), dict(calls), revoked[0], refused[0], time.monotonic()
            cache, db = l1[0] - l0[0], l1[1] - l0[1]
            failed = {k: v - c0.get(k, 0) for k, v in c1.items() if k != "OK" and v > c0.get(k, 0)}
            print(f"{phase:<8} {(r1 - r0) / (t1 - t0):>10.0f} {(x1 - x0) / (t1 - t0):>10.0f}"
                  f" {(c1.get('OK', 0) - c0.get('OK', 0)) / (t1 - t0):>9.0f}"
                  f" {100 * cache / max(1, cache + db):>10.1f}%  {failed or 'none'}")
        stop.set()
        for t in threads:
            t.join()
    finally:
        for ch in chans:
            ch.close()
        w.close()
        b.stop()
        a.stop()


if __name__ == "__main__":
    main()
