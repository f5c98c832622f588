#!/usr/bin/env python3
"""Time sequential SubmitClue calls through grpcio against a real clued and PostgreSQL.

usage: bench/submit.py [-n CALLS] [--clued PATH]

Starts a throwaway PostgreSQL (scripts/pg-test) and the given clued (default: the release
build in build/, made with `cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build
build -j2`), creates the units and users of tests/e2e/world.py, then submits CALLS clues
one after another as one group member over one connection, each with its own request_id,
and prints calls/s, wall time and latency percentiles. Every call is a full round trip:
client -> clued -> one PostgreSQL statement (clue_submit) -> reply.
"""

import argparse
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchenv  # noqa: E402

ROOT = benchenv.ROOT


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="number of calls (default 1000)")
    benchenv.add_clued_arg(ap)
    ap.add_argument("--warmup", type=int, default=50, help="untimed calls first (default 50)")
    args = ap.parse_args()
    benchenv.use_clued(args.clued)
    import harness
    import world

    S = harness.stubs()
    pb = S.clue_pb2
    pg = harness.Postgres.get()
    srv = harness.Clued(pg.url(pg.new_database("bench"))).start()
    try:
        w = world.build(srv)
        stub = w.G1.member.clue

        def submit(i):
            stub.SubmitClue(pb.SubmitClueRequest(
                request_id=str(uuid.uuid4()), title=f"基准测试线索 {i}", summary="反映某处长违规收受礼金，涉及多次宴请。",
                source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
                subject=pb.SubjectPerson(name="张三", position="处长", rank_level="正处"),
                host_unit="市发展改革委", violation_categories=["违反廉洁纪律"],
                reporter=pb.ReporterContact(name="李四", phone="13800000000")), timeout=30)

        for i in range(args.warmup):
            submit(-i)
        lat = []
        t0 = time.perf_counter()
        for i in range(args.n):
            t = time.perf_counter()
            submit(i)
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
        lat.sort()
        pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000  # noqa: E731
        print(f"SubmitClue x {args.n} sequential ({os.path.relpath(args.clued, ROOT)}): "
              f"{args.n / wall:.0f} calls/s, wall {wall:.2f} s; "
              f"latency p50 {pct(0.50):.2f} ms, p99 {pct(0.99):.2f} ms, max {lat[-1] * 1000:.2f} ms")
        w.close()
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
