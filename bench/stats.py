#!/usr/bin/env python3
"""Time GetStatistics through grpcio over 100,000 clues with realistic histories.

usage: bench/stats.py [-n CLUES] [--runs N] [--clued PATH]

Starts a throwaway PostgreSQL (scripts/pg-test) and the given clued (default: the release
build in build/, made with `cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build
build -j2`), creates the units and users of tests/e2e/world.py, then writes CLUES clues with
their audit histories straight into the database (bench/stats_seed.sql: 72 more units, clues
submitted over the last 420 days and moved along the state machine with random stage
durations, hash chains intact), runs VACUUM ANALYZE, and times GetStatistics for the last
365 days: as the AUDITOR over every unit, and as one GROUP's leader over its own unit. One
untimed call each first; prints the median and the spread of RUNS timed calls (ms).
"""

import argparse
import datetime
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchenv  # noqa: E402

ROOT = benchenv.ROOT
DAY_MS = 86400000


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100000, help="number of clues (default 100000)")
    ap.add_argument("--runs", type=int, default=5, help="timed calls per caller (default 5)")
    benchenv.add_clued_arg(ap)
    args = ap.parse_args()
    benchenv.use_clued(args.clued)
    import grpc
    import harness
    import world

    S = harness.stubs()
    pg = harness.Postgres.get()
    dbname = pg.new_database("bench")
    srv = harness.Clued(pg.url(dbname)).start()
    try:
        w = world.build(srv)
        db = pg.connect(dbname)
        # A minute ahead, so that the units the seed creates exist before the period ends.
        end = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
        t = time.perf_counter()
        with db.cursor() as cur:
            cur.execute(open(os.path.join(ROOT, "bench", "stats_seed.sql")).read())
            cur.execute("SELECT pg_temp.stats_seed(%s, %s, 8, 48, 16)", (args.n, end))
            events = cur.fetchone()[0]
            cur.execute("VACUUM ANALYZE")
            cur.execute("SELECT u.id, s.id FROM units u JOIN users s ON s.unit_id = u.id WHERE u.code = 'BG1'")
            group_id, leader_id = cur.fetchone()
            cur.execute("SELECT count(*) FROM clues")
            clues = cur.fetchone()[0]
        db.close()
        print(f"seeded {clues} clues, {events} audit events in {time.perf_counter() - t:.1f} s")

        token = w.admin.admin.IssueToken(S.admin_pb2.IssueTokenRequest(user_id=leader_id, note="bench"),
                                         timeout=10).token
        raw = grpc.insecure_channel(srv.addr)
        leader = S.stats_pb2_grpc.StatsServiceStub(grpc.intercept_channel(raw, world._Auth(token)))
        to = int(end.timestamp() * 1000)
        req = S.stats_pb2.GetStatisticsRequest(from_ms=to - 365 * DAY_MS, to_ms=to)
        for name, stub in (("AUDITOR, every unit", w.auditor.stats), ("GROUP leader, own unit", leader)):
            r = stub.GetStatistics(req, timeout=120)
            lat = []
            for _ in range(args.runs):
                t = time.perf_counter()
                stub.GetStatistics(req, timeout=120)
                lat.append((time.perf_counter() - t) * 1000)
            print(f"GetStatistics, one year, {name} ({len(r.units)} units, "
                  f"{sum(u.received for u in r.units)} received, {sum(u.closed for u in r.units)} closed): "
                  f"median {statistics.median(lat):.0f} ms of {args.runs} (min {min(lat):.0f}, max {max(lat):.0f})")
        assert group_id
        raw.close()
        w.close()
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
