#!/usr/bin/env python3
"""The audit tree's cost, in one run: the write path with checkpointing off and on, and the
time to verify a large log against a checkpoint offline.

usage: bench/audit_tree.py [-n CALLS] [--rounds R] [--events E] [--clued PATH] [--cluectl PATH]
                          [--clued-before PATH] [--skip-verify]

Write path: for each of R rounds, alternating, a fresh database and a clued without a
signing key (off: it follows the tree but never builds or signs) or with one (on: it builds
the tree and publishes a checkpoint every 1,000 events or 10 s, the defaults). Each round
submits CALLS clues as one group member (the submit phase), then moves each to
PRELIMINARY_CHECK as the group's leader (the move phase), one call after another over one
connection, and prints calls/s per phase. With --clued-before PATH (an older build), a third
kind of round runs that binary with the key ("on, before"), so that one run compares a
change of the builder with checkpointing off and with the new builder. Verification: E events appended through
audit_append() (one statement), the tree built and signed, the checkpoint saved with
`cluectl audit checkpoint`, then `cluectl audit verify --checkpoint` timed: it downloads
every event, rehashes it, rebuilds the tree, checks both signed roots, a consistency proof,
the content hashes and the chains. Uses the release builds in build/ by default.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid, children=False):
    """CPU seconds a process used (and, with children, those of its reaped children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    t = int(v[11]) + int(v[12]) + ((int(v[13]) + int(v[14])) if children else 0)
    return t / TICK


def cluster_cpu(postmaster):
    """CPU seconds of a PostgreSQL cluster: the postmaster, its backends, and those gone."""
    total = proc_cpu(postmaster, children=True)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == postmaster:
                total += proc_cpu(int(d))
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="calls per phase (default 1000)")
    ap.add_argument("--rounds", type=int, default=4, help="rounds, alternating off/on (default 4)")
    ap.add_argument("--events", type=int, default=100000, help="events to verify (default 100000)")
    ap.add_argument("--clued", default=os.path.join(ROOT, "build", "clued"))
    ap.add_argument("--cluectl", default=os.path.join(ROOT, "build", "cluectl"))
    ap.add_argument("--clued-before", help="an older clued: also run rounds of it with checkpointing on")
    ap.add_argument("--skip-verify", action="store_true", help="only the write path")
    args = ap.parse_args()
    for b in (args.clued, args.cluectl):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} not found; build it: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release"
                     " && cmake --build build -j2")
    os.environ["CLUED_BIN"] = os.path.abspath(args.clued)
    os.environ["CLUECTL_BIN"] = os.path.abspath(args.cluectl)
    os.environ.setdefault("CLUED_SOURCE_DIR", ROOT)
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    import harness
    import world

    S = harness.stubs()
    pb = S.clue_pb2
    cm = S.common_pb2
    pg = harness.Postgres.get()
    tmp = tempfile.mkdtemp(prefix="clued-bench-tree-")
    key = os.path.join(tmp, "audit.key")
    subprocess.run([args.clued, "keygen", "--out", key], check=True, capture_output=True)

    # CPU time per call (clued and the whole PostgreSQL cluster) is far less sensitive than
    # calls/s to what else the machine runs; it is what a pacing change of the builder moves.
    with pg.connect("postgres") as c0, c0.cursor() as cur:
        cur.execute("SHOW data_directory")
        with open(os.path.join(cur.fetchone()[0], "postmaster.pid")) as f:
            postmaster = int(f.readline())
    modes = ["off", "on"] + (["on, before"] if args.clued_before else [])
    results = {m: {"submit": [], "move": [], "submit_cpu": [], "move_cpu": [], "xacts": []} for m in modes}

    def cpu(srv):
        return proc_cpu(srv.proc.pid) + cluster_cpu(postmaster)

    for r in range(args.rounds):
        mode = modes[r % len(modes)]
        extra = ["--audit-signing-key", key] if mode != "off" else []
        harness.CLUED = os.path.abspath(args.clued_before if mode == "on, before" else args.clued)
        dbname = pg.new_database("bench")
        srv = harness.Clued(pg.url(dbname), args=extra).start()
        try:
            w = world.build(srv)
            member, leader = w.G1.member.clue, w.G1.leader.clue

            def submit(i):
                return member.SubmitClue(pb.SubmitClueRequest(
                    request_id=str(uuid.uuid4()), title=f"基准测试线索 {i}", summary="反映某处长违规收受礼金。",
                    source=pb.SOURCE_CHANNEL_LETTER_VISIT_REPORT,
                    subject=pb.SubjectPerson(name="张三", position="处长", rank_level="正处"),
                    host_unit="市发展改革委", violation_categories=["违反廉洁纪律"],
                    reporter=pb.ReporterContact(name="李四", phone="13800000000")), timeout=30)

            for i in range(20):  # warm-up
                submit(-i)
            t0, c0 = time.perf_counter(), cpu(srv)
            clues = [submit(i) for i in range(args.n)]
            results[mode]["submit"].append(args.n / (time.perf_counter() - t0))
            results[mode]["submit_cpu"].append((cpu(srv) - c0) * 1000 / args.n)
            t0, c0 = time.perf_counter(), cpu(srv)
            for c in clues:
                leader.RequestTransition(pb.RequestTransitionRequest(
                    clue_id=c.id, expected_version=c.version, target=cm.CLUE_STATE_PRELIMINARY_CHECK,
                    reason="依据初步核实情况", request_id=str(uuid.uuid4())), timeout=30)
            results[mode]["move"].append(args.n / (time.perf_counter() - t0))
            results[mode]["move_cpu"].append((cpu(srv) - c0) * 1000 / args.n)
            rr = results[mode]
            print(f"round {r + 1} checkpointing {mode}: submit {rr['submit'][-1]:.0f} calls/s "
                  f"({rr['submit_cpu'][-1]:.2f} ms CPU/call), move {rr['move'][-1]:.0f} calls/s "
                  f"({rr['move_cpu'][-1]:.2f} ms CPU/call)", flush=True)
            w.close()
        finally:
            srv.stop()
        # Every statement clued sent for the round (set-up, calls, building, signing): its
        # backends have exited, so their counts are in.
        time.sleep(1.5)
        with pg.connect("postgres") as c1, c1.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (dbname,))
            results[mode]["xacts"].append(cur.fetchone()[0])
        print(f"    {results[mode]['xacts'][-1]} database transactions in the round", flush=True)
    harness.CLUED = os.path.abspath(args.clued)
    for mode in modes:
        s, m = results[mode]["submit"], results[mode]["move"]
        sc, mc = results[mode]["submit_cpu"], results[mode]["move_cpu"]
        if s:
            print(f"checkpointing {mode}: submit {sum(s) / len(s):.0f} calls/s, {sum(sc) / len(sc):.2f} ms CPU/call; "
                  f"move {sum(m) / len(m):.0f} calls/s, {sum(mc) / len(mc):.2f} ms CPU/call "
                  f"(mean of {len(s)} rounds; CPU: clued and PostgreSQL); "
                  f"{sum(results[mode]['xacts']) / len(s):.0f} database transactions per round")
    if args.skip_verify:
        return

    # Verification of a large log.
    dbname = pg.new_database("bench")
    srv = harness.Clued(pg.url(dbname), args=["--audit-signing-key", key]).start()
    try:
        w = world.build(srv)
        conn = pg.connect(dbname)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM (SELECT audit_append(1, 1, 'bench.event', 'clue', 1000000 + g %% 1000,"
                        " 1, 'ACCEPTED', 'PRELIMINARY_CHECK', '依据初步核实情况', jsonb_build_object('i', g))"
                        " FROM generate_series(1, %s) g) x", (args.events,))
            cur.execute("SELECT count(*) FROM audit_events")
            total = cur.fetchone()[0]
        conn.close()
        audit = S.audit_pb2_grpc.AuditServiceStub(w.auditor.channel)
        t0 = time.perf_counter()
        harness.wait_for(lambda: audit.GetCheckpoint(S.audit_pb2.GetCheckpointRequest(),
                                                     metadata=w.auditor.metadata).tree_size == total,
                         timeout=600, interval=0.2, what="a checkpoint of every event")
        build = time.perf_counter() - t0
        cp = os.path.join(tmp, "cp.txt")
        env = {"CLUED_SERVER": srv.addr, "CLUED_TOKEN": w.auditor.token}
        harness.cluectl("audit", "checkpoint", "--out", cp, env=env, check=0)
        t0 = time.perf_counter()
        r = harness.cluectl("audit", "verify", "--checkpoint", cp, "--key", key + ".pub", env=env, check=0)
        took = time.perf_counter() - t0
        print(f"tree built and signed for {total} events in {build:.1f} s after they committed")
        print(f"cluectl audit verify --checkpoint over {total} events: {took:.1f} s\n  {r.stdout.strip()}")
        w.close()
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
