#!/usr/bin/env python3
"""clued's memory with many idle HTTP/2 connections.

Starts a throwaway PostgreSQL and a release clued (build/, or --clued BIN), opens N
connections that each complete the HTTP/2 handshake (preface, SETTINGS, SETTINGS ACK) and
then stay idle, and prints clued's RSS before and after, and per connection. A Health/Check
on one more connection must still answer. Raises this process's descriptor limit as far as
the hard limit allows.

    /usr/bin/python3 bench/idle_conns.py [-n 10000] [--clued build/clued] [--call]

With --call each connection first makes one Health/Check, so what an idle connection that
has served a call keeps (HPACK tables, nghttp2's stream map) is counted too. With --http1 the
connections speak HTTP/1.1 instead: each makes one gRPC-Web Health/Check (keep-alive), reads
its reply, and stays open.
"""

import argparse
import os
import re
import resource
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(t, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([t, flags]) + struct.pack(">I", sid) + payload


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def check(addr):
    """One Health/Check by hand: True once its trailers arrive."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    # :method POST, :scheme http, :path, :authority, content-type (literal, no indexing)
    def lit(idx, v):
        return bytes([idx]) + bytes([len(v)]) + v
    block = b"\x83\x86" + lit(4, b"/grpc.health.v1.Health/Check") + lit(1, b"b") + b"\x0f\x10" + bytes(
        [len(b"application/grpc")]) + b"application/grpc"
    s.sendall(PREFACE + frame(4, 0, 0) + frame(1, 4, 1, block) + frame(0, 1, 1, b"\0\0\0\0\0"))
    data, done = b"", False
    end = time.time() + 10
    while not done and time.time() < end:
        d = s.recv(65536)
        if not d:
            break
        data += d
        while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
            n, t, fl, sid = int.from_bytes(data[:3], "big"), data[3], data[4], int.from_bytes(data[5:9], "big")
            if t == 1 and sid == 1 and fl & 1:  # the trailers: HEADERS with END_STREAM
                done = True
            data = data[9 + n:]
    s.close()
    return done


def _lit(idx, v):
    return bytes([idx]) + bytes([len(v)]) + v


# One Health/Check on stream 1: :method POST, :scheme http, :path, :authority, content-type.
CALL = frame(1, 4, 1, b"\x83\x86" + _lit(4, b"/grpc.health.v1.Health/Check") + _lit(1, b"b") + b"\x0f\x10"
             + bytes([len(b"application/grpc")]) + b"application/grpc") + frame(0, 1, 1, b"\0\0\0\0\0")


# One gRPC-Web Health/Check over HTTP/1.1, the connection kept alive.
H1_CALL = (b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: b\r\n"
           b"Content-Type: application/grpc-web+proto\r\nContent-Length: 5\r\n\r\n\0\0\0\0\0")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--clued", default=os.path.join(ROOT, "build", "clued"))
    ap.add_argument("--call", action="store_true",
                    help="make one Health/Check on each connection before it goes idle")
    ap.add_argument("--http1", action="store_true",
                    help="HTTP/1.1 connections, each after one gRPC-Web Health/Check")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, a.n + 1000)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < a.n + 100:
        sys.exit(f"descriptor limit {hard} is too low for {a.n} connections")

    pgdir = tempfile.mkdtemp(prefix="clued-bench-pg.")
    host, port = subprocess.check_output([os.path.join(ROOT, "scripts", "pg-test"), "start", pgdir], text=True).split()
    url = f"postgresql:///postgres?host={host}&port={port}&user=postgres"
    proc = None
    try:
        subprocess.run([a.clued, "migrate", "--database-url", url], capture_output=True)
        extra = ["--allow-superuser"] if "--allow-superuser" in subprocess.run(
            [a.clued, "help"], capture_output=True, text=True).stdout else []
        if "--max-connections" in subprocess.run([a.clued, "help"], capture_output=True, text=True).stdout:
            extra += ["--max-connections", str(a.n + 100)]
        log = tempfile.NamedTemporaryFile(prefix="clued-bench-log.", delete=False)
        proc = subprocess.Popen([a.clued, "serve", "--listen", "127.0.0.1:0", "--database-url", url, *extra],
                                stdout=log, stderr=subprocess.STDOUT)
        addr = None
        for _ in range(200):
            m = re.search(r"listening on (\S+)", open(log.name).read())
            if m:
                addr = m.group(1)
                break
            time.sleep(0.05)
        assert addr, open(log.name).read()
        time.sleep(1)
        assert check(addr), "Health/Check failed before"
        base = rss_kb(proc.pid)
        host_, port_ = addr.rsplit(":", 1)
        sel = selectors.DefaultSelector()
        socks = []
        t0 = time.time()
        for i in range(a.n):
            s = socket.create_connection((host_, int(port_)), timeout=30)
            s.sendall(H1_CALL if a.http1 else PREFACE + frame(4, 0, 0) + (CALL if a.call else b""))
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_READ, [b""])
            if i % 500 == 499:  # read the servers' SETTINGS and acknowledge them as we go
                for key, _ in sel.select(timeout=0):
                    try:
                        d = key.fileobj.recv(65536)
                    except BlockingIOError:
                        continue
                    if d:
                        if not a.http1:
                            key.fileobj.sendall(frame(4, 1, 0))
                        sel.unregister(key.fileobj)
        end = time.time() + 60
        while len(sel.get_map()) and time.time() < end:
            for key, _ in sel.select(timeout=1):
                try:
                    d = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                if d and not a.http1:
                    key.fileobj.sendall(frame(4, 1, 0))
                sel.unregister(key.fileobj)
        opened = time.time() - t0
        time.sleep(2)
        held = rss_kb(proc.pid)
        ok = check(addr)
        alive = sum(1 for s in socks if s.fileno() >= 0)
        print(f"clued {a.clued}")
        kind = "HTTP/1.1 connections (one gRPC-Web call each)" if a.http1 else "HTTP/2 connections"
        print(f"{a.n} idle {kind}{' (one call each)' if a.call else ''} opened in {opened:.1f} s; Health/Check meanwhile: {'OK' if ok else 'FAILED'}")
        print(f"RSS {base / 1024:.1f} MiB -> {held / 1024:.1f} MiB: +{(held - base) / 1024:.1f} MiB, "
              f"{(held - base) * 1024 / a.n / 1000:.1f} kB per connection ({alive} open)")
        for s in socks:
            s.close()
    finally:
        if proc:
            proc.terminate()
            proc.wait(30)
        subprocess.call([os.path.join(ROOT, "scripts", "pg-test"), "stop", pgdir], stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
