"""The console's files (--console-dir) against clients that do not read them.

A GET is answered as its headers arrive, so nothing makes a file stream wait the way a gRPC
call waits for a congested connection. Its body is therefore served by reference from one
shared read-only copy of the file: however many streams ask for it, and however little of
it their windows take, the file is in memory once. --write-timeout closes a connection
that owes its peer output and got less than 16 KiB of it taken in that long, so a peer
that opens a byte of window now and then does not hold it for ever; a slow reader that
keeps taking is served to the end.

Each attack measures clued's RSS before and after, with a Health/Check probe beside it."""

import http.client
import os
import shutil
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from hostile import (ASAN_SMALL_QUARANTINE, WINDOW_UPDATE, HealthProbe, Raw, frame, headers_frames,  # noqa: E402
                     indexed, lit_idx_name, report, rss_kb)

BUNDLE = "/assets/main-AbCd1234.js"
BUNDLE_SIZE = 355_000  # about the console's bundle
SMALL = "/assets/small-XyZ98765.js"
SMALL_SIZE = 64 * 1024
LARGE = "/assets/large-Qw12Er34.bin"
LARGE_SIZE = 4 * 1024 * 1024


class Ctx:
    pass


def setup():
    c = Ctx()
    c.dir = tempfile.mkdtemp(prefix="clued-console-")
    os.makedirs(os.path.join(c.dir, "assets"))
    c.files = {BUNDLE: os.urandom(BUNDLE_SIZE), SMALL: os.urandom(SMALL_SIZE), LARGE: os.urandom(LARGE_SIZE)}
    for path, data in c.files.items():
        with open(c.dir + path, "wb") as f:
            f.write(data)
    with open(os.path.join(c.dir, "index.html"), "wb") as f:
        f.write(b"<!doctype html><title>console</title>")
    c.srv = harness.Clued(harness.test_database_url(),
                          args=["--console-dir", c.dir, "--write-timeout", "2s"],
                          env={"ASAN_OPTIONS": ASAN_SMALL_QUARANTINE}).start()
    c.pid = c.srv.proc.pid
    return c


def teardown(c):
    c.srv.stop()
    shutil.rmtree(c.dir, ignore_errors=True)


def get_block(path):  # :method GET, :scheme http, :path, :authority
    return indexed(2) + indexed(6) + lit_idx_name(4, path) + lit_idx_name(1, "t")


def test_streams_that_take_nothing_share_one_copy(c):
    """4 connections x 100 streams GET a 355 KB file with SETTINGS_INITIAL_WINDOW_SIZE 0: a
    copy per stream was 140 MiB; now the file is held once. A byte of window every second
    is not progress: --write-timeout (2 s) closes them all."""
    before = rss_kb(c.pid)
    conns = []
    with HealthProbe(c.srv.addr) as probe:
        for _ in range(4):
            r = Raw(c.srv.addr, settings_pairs=[(4, 0)])
            r.auto_window = False
            r.until(lambda: r.server_settings is not None, 5, "SETTINGS")
            r.send(b"".join(headers_frames(sid, get_block(BUNDLE), end_stream=True) for sid in range(1, 200, 2)))
            conns.append(r)
        time.sleep(1.5)
        for r in conns:
            r.read(0.2)
        assert all(len(r.hdrs) == 100 for r in conns), [len(r.hdrs) for r in conns]
        held = rss_kb(c.pid)
        t0 = time.time()
        while time.time() - t0 < 12 and not all(r.closed for r in conns):
            for r in conns:
                if not r.closed:
                    try:
                        r.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1)))
                    except OSError:
                        pass
                    r.read(0.05)
            time.sleep(1)
        took = time.time() - t0
    report("4 x 100 file streams with no window", before, held, 12)
    assert all(r.closed for r in conns), "a trickle of WINDOW_UPDATE kept the connection past --write-timeout"
    print(f"  closed by the write timeout after {took:.1f} s", flush=True)
    assert took < 8, took
    assert "less than 16384 (--write-timeout)" in c.srv.output()
    probe.assert_prompt()
    for r in conns:
        r.close()


def test_concurrent_streams_get_the_whole_file(c):
    """Streams reading one shared copy each get all of it, whatever order they are served in."""
    r = Raw(c.srv.addr)
    r.until(lambda: r.server_settings is not None, 5, "SETTINGS")
    sids = list(range(1, 41, 2))
    r.send(b"".join(headers_frames(sid, get_block(BUNDLE if sid % 4 == 1 else SMALL), end_stream=True)
                    for sid in sids))
    r.until(lambda: all(s in r.ended for s in sids), 30, "the replies")
    for sid in sids:
        want = c.files[BUNDLE if sid % 4 == 1 else SMALL]
        assert r.hdrs[sid][0][":status"] == "200"
        assert int(r.hdrs[sid][0]["content-length"]) == len(want)
        assert r.data[sid] == want, (sid, len(r.data.get(sid, b"")))
    r.close()


def bytes_read(pid):
    """What the process has read so far (rchar of /proc/PID/io: files and sockets)."""
    with open(f"/proc/{pid}/io") as f:
        return int(next(ln for ln in f if ln.startswith("rchar:")).split()[1])


def test_head_and_revalidation_do_not_read_the_file(c):
    """A HEAD, and a GET whose If-None-Match names the current copy (304), send no body: they
    cost the file's size and etag, not a read of it. One keep-alive connection asking them of
    a 4 MiB file 50 times each made clued read 400 MiB."""
    conn = http.client.HTTPConnection(*c.srv.addr.rsplit(":", 1), timeout=30)
    conn.request("GET", LARGE)
    r = conn.getresponse()
    assert r.status == 200 and r.read() == c.files[LARGE]
    etag = r.getheader("etag")
    before = bytes_read(c.pid)
    for _ in range(50):
        conn.request("HEAD", LARGE)
        r = conn.getresponse()
        r.read()
        assert r.status == 200 and int(r.getheader("content-length")) == LARGE_SIZE and r.getheader("etag") == etag
        conn.request("GET", LARGE, headers={"If-None-Match": etag})
        r = conn.getresponse()
        assert r.status == 304 and r.read() == b"" and r.getheader("etag") == etag
    read = bytes_read(c.pid) - before
    # A GET that does not match still gets the whole file.
    conn.request("GET", LARGE, headers={"If-None-Match": '"other"'})
    r = conn.getresponse()
    assert r.status == 200 and r.read() == c.files[LARGE]
    conn.close()
    print(f"100 HEADs and revalidations of a {LARGE_SIZE >> 20} MiB file: clued read {read} bytes")
    assert read < LARGE_SIZE, f"clued read {read} bytes for 100 replies without a body"


def test_slow_reader_is_served_to_the_end(c):
    """A reader taking 8 KiB every half second (more than 16 KiB per --write-timeout) is not
    closed: it gets the whole 64 KiB file."""
    r = Raw(c.srv.addr, settings_pairs=[(4, 0)])
    r.auto_window = False
    r.until(lambda: r.server_settings is not None, 5, "SETTINGS")
    r.send(headers_frames(1, get_block(SMALL), end_stream=True))
    t0 = time.time()
    while 1 not in r.ended and time.time() - t0 < 20:
        r.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 8192)) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 8192)))
        time.sleep(0.5)
        r.read(0.1)
        assert not r.closed, "a slow but steady reader was closed"
    took = time.time() - t0
    assert r.data.get(1) == c.files[SMALL]
    assert took > 3, took  # it was slow: longer than the write timeout
    r.close()


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
