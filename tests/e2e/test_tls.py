"""TLS and mutual TLS against the real clued: grpcio with ssl_channel_credentials, cluectl
with --ca/--cert/--key, Python's ssl module for what the handshake negotiates, and raw
sockets for clients that get the handshake wrong. Certificates are made at test time with
the openssl command-line tool: a CA, another CA nobody trusts, and their leaves."""

import os
import random
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import warnings

import grpc

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import world  # noqa: E402
from harness import expect_status  # noqa: E402

S = harness.stubs()
warnings.filterwarnings("ignore", category=DeprecationWarning)  # ssl.TLSVersion.TLSv1_1, on purpose


# ---- certificates ---------------------------------------------------------------------------


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


class Certs:
    """Throwaway PKI in a temporary folder: ca (trusted), other_ca (not), and leaves."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="clued-tls-")
        self.ca = self._ca("ca", "clued test CA")
        self.other_ca = self._ca("other_ca", "somebody else's CA")
        self.server = self._leaf("server", self.ca, "localhost", server=True)
        self.server2 = self._leaf("server2", self.ca, "reloaded", server=True)
        self.client = self._leaf("client", self.ca, "test client", server=False)
        self.stranger = self._leaf("stranger", self.other_ca, "test client", server=False)

    def path(self, name):
        return os.path.join(self.dir, name)

    def _ca(self, name, cn):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-days", "2", "-subj", f"/CN={cn}", "-keyout", self.path(name + ".key"),
                 "-out", self.path(name + ".pem"))
        return name

    def _leaf(self, name, ca, cn, server):
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            if server:
                f.write("subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n")
            else:
                f.write("extendedKeyUsage=clientAuth\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={cn}",
                 "-keyout", self.path(name + ".key"), "-out", self.path(name + ".csr"))
        _openssl("x509", "-req", "-in", self.path(name + ".csr"), "-CA", self.path(ca + ".pem"),
                 "-CAkey", self.path(ca + ".key"), "-CAcreateserial", "-days", "2",
                 "-extfile", ext, "-out", self.path(name + ".pem"))
        return name

    def read(self, name):
        with open(self.path(name), "rb") as f:
            return f.read()

    def creds(self, client=None):
        """grpcio credentials trusting our CA, presenting client's certificate if given."""
        if client is None:
            return grpc.ssl_channel_credentials(root_certificates=self.read("ca.pem"))
        return grpc.ssl_channel_credentials(root_certificates=self.read("ca.pem"),
                                            private_key=self.read(client + ".key"),
                                            certificate_chain=self.read(client + ".pem"))

    def destroy(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class TlsClued(harness.Clued):
    """clued serving TLS: waits for SERVING over TLS (with a client certificate for mTLS)."""

    def __init__(self, certs, database_url, args=(), client=None, files=None, env=None):
        self.certs, self.client = certs, client
        cert, key = files or (certs.path("server.pem"), certs.path("server.key"))
        tls = ["--tls-cert", cert, "--tls-key", key]
        super().__init__(database_url, args=tls + list(args), env=env)

    def start(self, *args, **kw):
        try:
            return super().start(*args, **kw)
        except BaseException:  # not serving over TLS: leave no clued behind
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            raise

    def channel(self, client=None):
        return grpc.secure_channel(self.addr, self.certs.creds(client if client is not None else self.client))

    def wait_serving(self, timeout=30):
        if self.addr.startswith("0.0.0.0:"):  # listening everywhere: reach it on loopback
            self.addr = "127.0.0.1:" + self.addr.split(":")[1]
        with self.channel() as ch:
            h = S.health_pb2_grpc.HealthStub(ch)
            harness.wait_for(lambda: h.Check(S.health_pb2.HealthCheckRequest(), timeout=5).status
                             == S.health_pb2.HealthCheckResponse.SERVING, timeout=timeout, what="SERVING over TLS")


def serving(srv, client=None):
    with srv.channel(client) as ch:
        r = S.health_pb2_grpc.HealthStub(ch).Check(S.health_pb2.HealthCheckRequest(), timeout=5)
        return r.status == S.health_pb2.HealthCheckResponse.SERVING


def port_of(srv):
    return int(srv.addr.rsplit(":", 1)[1])


# ---- fixtures --------------------------------------------------------------------------------


class Ctx:
    pass


def setup():
    c = Ctx()
    c.certs = Certs()
    c.url = harness.test_database_url()
    c.tls = TlsClued(c.certs, c.url).start()
    c.token = world.bootstrap_token(c.tls)
    c.mtls = TlsClued(c.certs, c.url, args=["--tls-client-ca", c.certs.path("ca.pem")], client="client").start()
    return c


def teardown(c):
    try:
        c.tls.stop()
        c.mtls.stop()
    finally:
        c.certs.destroy()


def list_units(ch, token):
    stub = S.admin_pb2_grpc.AdminServiceStub(ch)
    return stub.ListUnits(S.admin_pb2.ListUnitsRequest(), metadata=[("authorization", "Bearer " + token)],
                          timeout=10)


# ---- grpcio ----------------------------------------------------------------------------------


def test_grpcio_health_and_authenticated_call(c):
    with c.tls.channel() as ch:
        r = S.health_pb2_grpc.HealthStub(ch).Check(S.health_pb2.HealthCheckRequest(), timeout=5)
        assert r.status == S.health_pb2.HealthCheckResponse.SERVING
        units = list_units(ch, c.token)
        assert len(units.units) >= 1, units  # bootstrap's ADMIN unit
        expect_status(grpc.StatusCode.UNAUTHENTICATED, S.admin_pb2_grpc.AdminServiceStub(ch).ListUnits,
                      S.admin_pb2.ListUnitsRequest(), timeout=5)


def test_grpcio_rejects_an_untrusted_server(c):
    """The client side of verification: a channel trusting only the other CA fails."""
    creds = grpc.ssl_channel_credentials(root_certificates=c.certs.read("other_ca.pem"))
    with grpc.secure_channel(c.tls.addr, creds) as ch:
        expect_status(grpc.StatusCode.UNAVAILABLE, S.health_pb2_grpc.HealthStub(ch).Check,
                      S.health_pb2.HealthCheckRequest(), timeout=5)
    assert serving(c.tls)


def _handshake(addr, **kw):
    """A Python ssl handshake; returns the connected SSLSocket (caller closes it)."""
    host, port = addr.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(kw.pop("cafile"))
    if "alpn" in kw:
        ctx.set_alpn_protocols(kw.pop("alpn"))
    if "max_version" in kw:
        ctx.maximum_version = kw.pop("max_version")
    if "ciphers" in kw:
        ctx.set_ciphers(kw.pop("ciphers"))
    if "client" in kw:
        ctx.load_cert_chain(kw["client"][0], kw["client"][1])
        kw.pop("client")
    assert not kw, kw
    raw = socket.create_connection((host, int(port)), timeout=10)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


def test_negotiation_tls12_or_later_and_alpn_h2(c):
    ca = c.certs.path("ca.pem")
    with _handshake(c.tls.addr, cafile=ca, alpn=["h2"]) as s:
        assert s.selected_alpn_protocol() == "h2"
        assert s.version() == "TLSv1.3", s.version()
        assert s.getpeercert()["subject"] == ((("commonName", "localhost"),),)
    with _handshake(c.tls.addr, cafile=ca, alpn=["h2"], max_version=ssl.TLSVersion.TLSv1_2) as s:
        assert s.version() == "TLSv1.2" and s.selected_alpn_protocol() == "h2"
    with _handshake(c.tls.addr, cafile=ca) as s:  # no ALPN at all: h2 with prior knowledge
        assert s.selected_alpn_protocol() is None
    # http/1.1 is the browser's gRPC-Web and the console's files; h2 is preferred.
    with _handshake(c.tls.addr, cafile=ca, alpn=["http/1.1", "h2"]) as s:
        assert s.selected_alpn_protocol() == "h2"
    with _handshake(c.tls.addr, cafile=ca, alpn=["http/1.1"]) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        body = struct.pack(">BI", 0, 0)
        s.sendall(b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/grpc-web+proto\r\nContent-Length: 5\r\n\r\n" + body)
        data = b""
        while b"grpc-status: " not in data:
            d = s.recv(65536)
            assert d, data
            data += d
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"grpc-status: 0\r\n" in data, data
    # A client that offers ALPN without h2 or http/1.1 is refused (no_application_protocol).
    try:
        _handshake(c.tls.addr, cafile=ca, alpn=["spdy/3.1"]).close()
        raise AssertionError("ALPN without h2 or http/1.1 was accepted")
    except ssl.SSLError as e:
        assert "NO_APPLICATION_PROTOCOL" in str(e).upper() or "ALERT" in str(e).upper(), e
    # TLS 1.1 and older are refused, even by a client willing to speak them.
    try:
        _handshake(c.tls.addr, cafile=ca, max_version=ssl.TLSVersion.TLSv1_1, ciphers="DEFAULT:@SECLEVEL=0").close()
        raise AssertionError("TLS 1.1 was accepted")
    except ssl.SSLError as e:
        assert "VERSION" in str(e).upper() or "NO_PROTOCOLS" in str(e).upper(), e
    assert serving(c.tls)


# ---- mutual TLS -------------------------------------------------------------------------------


def test_mtls_accepts_a_good_client_certificate(c):
    with c.mtls.channel("client") as ch:
        r = S.health_pb2_grpc.HealthStub(ch).Check(S.health_pb2.HealthCheckRequest(), timeout=5)
        assert r.status == S.health_pb2.HealthCheckResponse.SERVING
        assert list_units(ch, c.token).units


def test_mtls_refuses_no_certificate_and_another_cas(c):
    before = c.mtls.output().count("TLS handshake failed")
    for creds in (c.certs.creds(), c.certs.creds("stranger")):
        with grpc.secure_channel(c.mtls.addr, creds) as ch:
            expect_status(grpc.StatusCode.UNAVAILABLE, S.health_pb2_grpc.HealthStub(ch).Check,
                          S.health_pb2.HealthCheckRequest(), timeout=5)
    out = c.mtls.output()
    harness.wait_for(lambda: c.mtls.output().count("TLS handshake failed") >= before + 2, what="handshake failures logged")
    out = c.mtls.output()
    assert "peer did not return a certificate" in out, out[-3000:]
    assert "client certificate rejected" in out, out[-3000:]
    # The same refusals seen from a client that reports the handshake itself.
    ca = c.certs.path("ca.pem")
    for kw in ({}, {"client": (c.certs.path("stranger.pem"), c.certs.path("stranger.key"))}):
        try:
            with _handshake(c.mtls.addr, cafile=ca, alpn=["h2"], **kw) as s:
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                got = s.recv(100)  # TLS 1.3: the server's verdict arrives after our Finished
                assert got == b"", got
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
    assert serving(c.mtls, "client")


# ---- cluectl ------------------------------------------------------------------------------------


def test_cluectl_over_tls(c):
    ca = c.certs.path("ca.pem")
    for server in (c.tls.addr, f"localhost:{port_of(c.tls)}"):
        r = harness.cluectl("--server", server, "--ca", ca, "health", check=0)
        assert r.stdout.strip() == "SERVING", r.stdout
    r = harness.cluectl("--server", c.tls.addr, "--ca", ca, "--token", c.token, "--json", "admin", "units", check=0)
    assert "ADMIN" in r.stdout, r.stdout
    # The environment does the same as the flags.
    r = harness.cluectl("health", env={"CLUED_SERVER": c.tls.addr, "CLUED_CA": ca}, check=0)
    assert r.stdout.strip() == "SERVING", r.stdout
    # --tls alone trusts the system's CAs, which do not include ours.
    r = harness.cluectl("--server", c.tls.addr, "--tls", "health", check=1)
    assert "certificate verify failed" in r.stderr, r.stderr
    r = harness.cluectl("--server", c.tls.addr, "--ca", c.certs.path("other_ca.pem"), "health", check=1)
    assert "UNAVAILABLE" in r.stderr and "certificate verify failed" in r.stderr, r.stderr
    # A name the certificate does not carry.
    hostname = socket.gethostname()
    try:
        socket.getaddrinfo(hostname, None)
        if hostname != "localhost":
            r = harness.cluectl("--server", f"{hostname}:{port_of(c.tls)}", "--ca", ca, "health")
            assert r.returncode == 1 and ("verify failed" in r.stderr or "UNAVAILABLE" in r.stderr), r.stderr
    except socket.gaierror:
        pass
    # Files that do not load are usage errors: nothing is sent.
    r = harness.cluectl("--server", c.tls.addr, "--ca", c.certs.path("missing.pem"), "health", check=2)
    assert "cannot read" in r.stderr and "missing.pem" in r.stderr, r.stderr
    r = harness.cluectl("--server", c.tls.addr, "--ca", c.certs.path("ca.key"), "health", check=2)
    assert "TLS" in r.stderr, r.stderr
    r = harness.cluectl("--server", c.tls.addr, "--ca", ca, "--key", c.certs.path("client.key"), "health", check=2)
    assert "--key (or CLUED_KEY) needs --cert" in r.stderr, r.stderr
    # After audit verify, --key is a verifier key: the certificate alone does not load, and
    # the message says where the TLS key goes.
    r = harness.cluectl("--server", c.tls.addr, "--ca", ca, "audit", "verify", "--cert", c.certs.path("client.pem"),
                        "--key", c.certs.path("client.key"), check=2)
    assert "give the TLS key before the command" in r.stderr, r.stderr
    r = harness.cluectl("--server", c.tls.addr, "--ca", ca, "--cert", c.certs.path("client.pem"),
                        "--key", c.certs.path("stranger.key"), "health", check=2)
    assert "TLS" in r.stderr, r.stderr


def test_cluectl_mtls(c):
    ca = c.certs.path("ca.pem")
    r = harness.cluectl("--server", c.mtls.addr, "--ca", ca, "--cert", c.certs.path("client.pem"),
                        "--key", c.certs.path("client.key"), "health", check=0)
    assert r.stdout.strip() == "SERVING", r.stdout
    r = harness.cluectl("--server", c.mtls.addr, "--token", c.token, "admin", "units", check=0,
                        env={"CLUED_CA": ca, "CLUED_CERT": c.certs.path("client.pem"),
                             "CLUED_KEY": c.certs.path("client.key")})
    assert "ADMIN" in r.stdout, r.stdout
    for extra in ((), ("--cert", c.certs.path("stranger.pem"), "--key", c.certs.path("stranger.key"))):
        r = harness.cluectl("--server", c.mtls.addr, "--ca", ca, *extra, "health", check=1)
        assert "UNAVAILABLE" in r.stderr, r.stderr


# ---- many records each way ----------------------------------------------------------------------


def test_large_messages_both_ways(c):
    """Messages of many TLS records, and many calls at once on one TLS connection."""
    # 20 groups of 100 host units (the most a unit has), 2000 × 292 bytes in all.
    host_units = [f"{i:04d}" + "驻" * 96 for i in range(2000)]
    with c.tls.channel() as ch:
        md = [("authorization", "Bearer " + c.token)]
        admin = S.admin_pb2_grpc.AdminServiceStub(ch)
        room = admin.CreateUnit(S.admin_pb2.CreateUnitRequest(
            kind=S.common_pb2.UnitKind.Value("UNIT_KIND_ROOM"), code="TLSR", name="TLS 室"), metadata=md, timeout=10)
        for g in range(20):
            admin.CreateUnit(S.admin_pb2.CreateUnitRequest(
                kind=S.common_pb2.UnitKind.Value("UNIT_KIND_GROUP"), code=f"TLSG{g:02d}", name=f"TLS 组 {g}",
                liaison_room_id=room.id, host_units=host_units[g * 100:(g + 1) * 100]), metadata=md, timeout=30)
        units = {u.code: u for u in list_units(ch, c.token).units}
        assert [h for g in range(20) for h in units[f"TLSG{g:02d}"].host_units] == host_units
        # A 3 MiB request (a ListUnitsRequest with an unknown field 15 of 3 MiB) read through
        # ~200 records, twenty at a time.
        raw = ch.unary_unary("/clue.v1.AdminService/ListUnits", request_serializer=lambda b: b,
                             response_deserializer=S.admin_pb2.ListUnitsResponse.FromString)
        pad = 3 << 20
        big = b"\x7a" + bytes([0x80 | (pad & 127), 0x80 | ((pad >> 7) & 127), 0x80 | ((pad >> 14) & 127),
                               pad >> 21]) + b"s" * pad
        futures = [raw.future(big, metadata=md, timeout=30) for _ in range(20)]
        futures += [admin.ListUnits.future(S.admin_pb2.ListUnitsRequest(), metadata=md, timeout=30) for _ in range(20)]
        for f in futures:
            assert len(f.result().units) == len(units)
    # libclue reads the large reply (many records, some left inside TLS between polls) ...
    r = harness.cluectl("--server", c.tls.addr, "--ca", c.certs.path("ca.pem"), "--token", c.token, "--json",
                        "admin", "units", check=0)
    assert r.stdout.count("驻" * 96) == 2000, len(r.stdout)
    # ... and sends a large request (more than the socket takes at once).
    r = harness.cluectl("--server", c.tls.addr, "--ca", c.certs.path("ca.pem"), "--token", c.token,
                        "clue", "note", "999999", "--kind", "OTHER", "--text-file", "-", input="笔" * (1 << 20))
    assert r.returncode == 1 and "UNAVAILABLE" not in r.stderr, r.stderr
    assert serving(c.tls)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_key_update_flood_from_a_client_that_never_reads(c):
    """A TLS 1.3 client that never reads and sends KeyUpdate(update_requested) again and
    again made the server queue a KeyUpdate of its own for each, in memory, without bound
    and unseen by --write-timeout (about 1 MiB every 2 s). Past 256 KiB of records waiting
    for such a peer the connection is closed."""
    from hostile import ASAN_SMALL_QUARANTINE

    exe = os.path.join(harness.BUILD, "tls-keyupdate")
    srv = TlsClued(c.certs, c.url, env={"ASAN_OPTIONS": ASAN_SMALL_QUARANTINE}).start()
    try:
        assert serving(srv)
        pid = srv.proc.pid
        before = rss_mib(pid)
        t0 = time.time()
        # The client floods for at most 40 s: on a loaded machine it sends fewer updates a
        # second, and the server's records take longer to pass the bound.
        p = subprocess.Popen([exe, "127.0.0.1", str(port_of(srv)), "40"], stdout=subprocess.PIPE, text=True)
        try:
            harness.wait_for(lambda: "TLS output not read" in srv.output() or p.poll() is not None, timeout=50,
                             what="the flood's end")
            took = time.time() - t0
            out, _ = p.communicate(timeout=15)
            after = rss_mib(pid)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        print(f"  {out.strip()} key updates sent in {took:.1f} s; RSS {before:.1f} -> {after:.1f} MiB", flush=True)
        assert "TLS output not read" in srv.output(), "the connection outlived its client's flood"
        assert took < 40, took
        # Mostly the sanitizer's quarantine of OpenSSL's freed record buffers (8 MiB here).
        assert after - before < 16, (before, after)
        assert serving(srv)
    finally:
        srv.stop()


# ---- cleartext on the TLS port ------------------------------------------------------------------


def test_cleartext_client_on_the_tls_port(c):
    before = c.tls.output().count("cleartext HTTP/2 on the TLS port")
    with grpc.insecure_channel(c.tls.addr) as ch:
        expect_status(grpc.StatusCode.UNAVAILABLE, S.health_pb2_grpc.HealthStub(ch).Check,
                      S.health_pb2.HealthCheckRequest(), timeout=5)
    # Told in HTTP/2: a GOAWAY that says why (and no SETTINGS, which would invite a retry).
    host, port = c.tls.addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0\0\0\x04\0\0\0\0\0")
        got = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            got += d
    length, ftype = struct.unpack(">I", b"\0" + got[:3])[0], got[3]
    assert ftype == 7, got  # GOAWAY
    last, code = struct.unpack(">II", got[9:17])
    assert code == 1 and b"requires TLS" in got[17:9 + length], got
    r = harness.cluectl("--server", c.tls.addr, "health", check=1)
    assert "UNAVAILABLE" in r.stderr and "--tls" in r.stderr, r.stderr
    # grpcio gave up rather than reconnecting in a loop.
    assert c.tls.output().count("cleartext HTTP/2 on the TLS port") - before < 20
    assert serving(c.tls)


# ---- broken handshakes --------------------------------------------------------------------------


def client_hello():
    """The bytes of a real ClientHello (with ALPN h2), from Python's ssl over memory BIOs."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def _connect(addr):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_garbage_and_truncated_handshakes(c):
    rnd = random.Random(7)
    hello = client_hello()
    assert hello[0] == 0x16 and len(hello) > 100, hello[:10]
    # Random bytes: some end at once, some get the alert and a closed connection.
    for n in (1, 5, 6, 100, 4096, 70000):
        s = _connect(c.tls.addr)
        try:
            s.sendall(bytes(rnd.randrange(256) for _ in range(n)))
            s.shutdown(socket.SHUT_WR)  # a short record waits for more; our end of file ends it
            s.settimeout(5)
            while s.recv(4096):
                pass
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            pass
        except OSError as e:  # shutdown() after the server has already reset the connection
            assert e.errno == 107, e
        finally:
            s.close()
    # A handshake record header announcing more than it brings, and one that lies about its size.
    for data in (hello[:len(hello) // 2], hello[:5], b"\x16\x03\x01\xff\xff" + b"\x01" * 100,
                 b"\x16\x03\x01\x00\x04\x01\x00\xff\xff"):
        s = _connect(c.tls.addr)
        s.sendall(data)
        time.sleep(0.01)
        s.close()
    # Many connections dropped at every step of the handshake, closed and reset.
    socks = []
    for i in range(300):
        s = _connect(c.tls.addr)
        step = i % 4
        if step == 1:
            s.sendall(hello[:rnd.randrange(1, len(hello))])
        elif step >= 2:
            s.sendall(hello)
        socks.append((s, step))
    for s, step in socks:
        if step == 3:
            s.settimeout(5)
            try:
                s.recv(100)  # the ServerHello has started: the server holds a live handshake
            except OSError:
                pass
        (_reset if step % 2 else socket.socket.close)(s)
    # A finished handshake followed by bytes that are not a TLS record.
    with _connect(c.tls.addr) as raw:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(c.certs.path("ca.pem"))
        ctx.set_alpn_protocols(["h2"])
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(out.read())
                d = raw.recv(65536)
                assert d, "server closed during the handshake"
                inc.write(d)
        raw.sendall(out.read())
        raw.sendall(b"\x17\x03\x03\x00\x20" + bytes(32) + b"garbage")
        raw.settimeout(5)
        try:
            while raw.recv(4096):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
    harness.wait_for(lambda: "TLS record error" in c.tls.output(), what="the bad record logged")
    assert serving(c.tls)
    assert c.tls.alive()


# ---- reload -------------------------------------------------------------------------------------


def test_sighup_reloads_the_certificate(c):
    work = tempfile.mkdtemp(prefix="clued-tls-reload-", dir=c.certs.dir)
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    shutil.copy(c.certs.path("server.pem"), cert)
    shutil.copy(c.certs.path("server.key"), key)
    srv = TlsClued(c.certs, c.url, files=(cert, key)).start()
    ca = c.certs.path("ca.pem")

    def subject():
        with _handshake(srv.addr, cafile=ca, alpn=["h2"]) as s:
            return dict(x[0] for x in s.getpeercert()["subject"])["commonName"]

    try:
        assert subject() == "localhost"
        old = srv.channel()
        health = S.health_pb2_grpc.HealthStub(old)
        assert health.Check(S.health_pb2.HealthCheckRequest(), timeout=5).status == S.health_pb2.HealthCheckResponse.SERVING
        shutil.copy(c.certs.path("server2.pem"), cert)
        shutil.copy(c.certs.path("server2.key"), key)
        srv.proc.send_signal(signal.SIGHUP)
        harness.wait_for(lambda: "TLS: reloaded" in srv.output(), what="reload logged")
        assert subject() == "reloaded"
        # The connection made before the reload goes on.
        assert health.Check(S.health_pb2.HealthCheckRequest(), timeout=5).status == S.health_pb2.HealthCheckResponse.SERVING
        # A bad new certificate is logged and the old one kept.
        with open(cert, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        srv.proc.send_signal(signal.SIGHUP)
        harness.wait_for(lambda: "reload failed" in srv.output(), what="failed reload logged")
        assert subject() == "reloaded"
        # A key that belongs to another certificate is refused the same way.
        shutil.copy(c.certs.path("server.pem"), cert)
        srv.proc.send_signal(signal.SIGHUP)
        harness.wait_for(lambda: srv.output().count("reload failed") >= 2, what="second failed reload logged")
        assert "key values mismatch" in srv.output(), srv.output()[-2000:]
        assert subject() == "reloaded"
        assert serving(srv)
        old.close()
    finally:
        srv.stop()


def test_sighup_reloads_the_client_cas(c):
    """Mutual TLS: after the CA file changes and SIGHUP, certificates of the new CA are
    accepted and those of the old one refused."""
    work = tempfile.mkdtemp(prefix="clued-tls-reload-ca-", dir=c.certs.dir)
    cas = os.path.join(work, "clients.pem")
    shutil.copy(c.certs.path("ca.pem"), cas)
    srv = TlsClued(c.certs, c.url, args=["--tls-client-ca", cas], client="client").start()
    try:
        assert serving(srv, "client")
        shutil.copy(c.certs.path("other_ca.pem"), cas)
        srv.proc.send_signal(signal.SIGHUP)
        harness.wait_for(lambda: "TLS: reloaded" in srv.output(), what="reload logged")
        assert serving(srv, "stranger")
        with srv.channel("client") as ch:
            expect_status(grpc.StatusCode.UNAVAILABLE, S.health_pb2_grpc.HealthStub(ch).Check,
                          S.health_pb2.HealthCheckRequest(), timeout=5)
        srv.client = "stranger"
    finally:
        srv.stop()


# ---- cleartext only on loopback ----------------------------------------------------------------


def test_cleartext_refused_on_a_non_loopback_address(c):
    srv = harness.Clued(c.url)
    for addr in ("0.0.0.0:0", ":0", "[::]:0"):
        r = srv.run("serve", "--listen", addr, check=False)
        assert r.returncode != 0, (addr, r.stderr)
        assert "refusing to serve cleartext" in r.stderr and "--insecure-cleartext" in r.stderr, r.stderr
    # Loopback addresses need no flag (the rest of the suite relies on it).
    for addr in ("127.0.0.2:0",):
        s = harness.Clued(c.url).start(listen=addr)
        s.stop()
    # --insecure-cleartext says the operator knows.
    s = harness.Clued(c.url, args=["--insecure-cleartext"]).start(listen="0.0.0.0:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port_of(s)}") as ch:
            r = S.health_pb2_grpc.HealthStub(ch).Check(S.health_pb2.HealthCheckRequest(), timeout=5)
            assert r.status == S.health_pb2.HealthCheckResponse.SERVING
    finally:
        s.stop()
    # TLS may listen anywhere.
    s = TlsClued(c.certs, c.url).start(listen="0.0.0.0:0")
    try:
        assert serving(s)
    finally:
        s.stop()


def test_orderly_close_sends_close_notify(c):
    """A connection the server ends in order (the client sent GOAWAY, so the HTTP/2 session
    is finished) ends with TLS close_notify: the client can tell the end of the data from a
    cut connection. Without it Python's ssl reports an EOF in violation of the protocol."""
    host, port = c.tls.addr.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(c.certs.path("ca.pem"))
    ctx.set_alpn_protocols(["h2"])
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF  # set by default: it would hide a missing one
    before = c.tls.output().count("session finished")
    raw = socket.create_connection((host, int(port)), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as s:
        def frame(t, flags, sid, payload=b""):
            return struct.pack(">I", len(payload))[1:] + bytes([t, flags]) + struct.pack(">I", sid) + payload
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0) +
                  frame(7, 0, 0, struct.pack(">II", 0, 0)))  # GOAWAY NO_ERROR, no streams
        data = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break  # close_notify
                data += d
        except ssl.SSLError as e:  # SSLEOFError, or UNEXPECTED_EOF_WHILE_READING
            raise AssertionError(f"the server closed without close_notify: {e}")
        assert data[3:4] == b"\x04", data[:16]  # its SETTINGS came first
    harness.wait_for(lambda: c.tls.output().count("session finished") > before, timeout=10,
                     what="the close logged")
    assert serving(c.tls)


def test_bad_tls_settings_refused_at_start(c):
    srv = harness.Clued(c.url)
    p = c.certs.path
    cases = (
        (["--tls-cert", p("server.pem")], "both --tls-cert and --tls-key"),
        (["--tls-client-ca", p("ca.pem")], "--tls-client-ca needs --tls-cert"),
        (["--tls-cert", p("missing.pem"), "--tls-key", p("server.key")], "cannot read"),
        (["--tls-cert", p("server.pem"), "--tls-key", p("client.key")], "key values mismatch"),
        (["--tls-cert", p("server.key"), "--tls-key", p("server.key")], "cannot load"),
        (["--tls-cert", p("server.pem"), "--tls-key", p("server.key"), "--tls-client-ca", p("nope.pem")],
         "cannot read"),
    )
    for args, want in cases:
        r = srv.run("serve", "--listen", "127.0.0.1:0", *args, check=False)
        assert r.returncode != 0, (args, r.stderr)
        assert want in r.stderr, (args, r.stderr)
    h = subprocess.run([harness.CLUED, "help"], capture_output=True, text=True).stdout
    for flag in ("--tls-cert", "--tls-key", "--tls-client-ca", "--insecure-cleartext"):
        assert flag in h, flag
    h = harness.cluectl("--help", check=0).stdout
    for flag in ("--tls", "--ca FILE", "--cert FILE", "--key FILE"):
        assert flag in h, flag


def _leaf_valid(certs, name, not_before, not_after):
    """A server certificate of our CA valid only from not_before to not_after (datetimes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    with open(certs.path("ca.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    ca = x509.load_pem_x509_certificate(certs.read("ca.pem"))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    with open(certs.path(name + ".pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(certs.path(name + ".key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return certs.path(name + ".pem"), certs.path(name + ".key")


def test_expired_or_future_certificate_refused_at_start_and_on_reload(c):
    """Every client refuses an expired or not yet valid certificate: serve refuses it at start,
    and a reload keeps the old certificate instead of swapping one in."""
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    expired = _leaf_valid(c.certs, "expired", now - 3 * day, now - day)
    future = _leaf_valid(c.certs, "future", now + day, now + 3 * day)
    srv = harness.Clued(c.url)
    for (cert, key), want in ((expired, "expired on"), (future, "is not valid before")):
        r = srv.run("serve", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key, check=False)
        assert r.returncode != 0, r.stderr
        assert want in r.stderr and cert in r.stderr, r.stderr

    work = tempfile.mkdtemp(prefix="clued-tls-expired-", dir=c.certs.dir)
    wcert, wkey = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    shutil.copy(c.certs.path("server.pem"), wcert)
    shutil.copy(c.certs.path("server.key"), wkey)
    srv = TlsClued(c.certs, c.url, files=(wcert, wkey)).start()
    try:
        for (cert, key), n in ((expired, 1), (future, 2)):
            shutil.copy(cert, wcert)
            shutil.copy(key, wkey)
            srv.proc.send_signal(signal.SIGHUP)
            harness.wait_for(lambda: srv.output().count("reload failed") >= n, what="failed reload logged")
            assert serving(srv)  # still the good certificate: the handshake verifies
        assert "expired on" in srv.output() and "is not valid before" in srv.output()
    finally:
        srv.stop()


def test_expiry_warned_and_exposed(c):
    """A certificate that expires while clued serves fails every new handshake with nothing
    failing on the server's side: from 7 days before its notAfter a warning says so (once a
    day), once expired an error (once an hour), and clued_tls_cert_not_after_seconds carries
    the notAfter. The server's clock is moved here (--test-clock-offset-ms) past the test
    leaf's 2 days: 1 day on, it expires in about a day; 3 days on, it has expired. Before,
    there was no such line and no such metric."""
    import datetime
    import re
    import urllib.request
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(c.certs.read("server.pem"))
    not_after = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp()
    day_ms = 24 * 3600 * 1000
    for offset, level, want in ((day_ms, "warn", "expires on"), (3 * day_ms, "error", "expired on")):
        srv = TlsClued(c.certs, c.url, args=["--metrics-listen", "127.0.0.1:0", "--test-clock-offset-ms", str(offset)]).start()
        try:
            harness.wait_for(lambda: want in srv.output(), timeout=10, what=f"{want!r} logged")
            time.sleep(1.5)  # several sweeps: still one line
            lines = [ln for ln in srv.output().splitlines() if "TLS: the certificate served" in ln]
            assert len(lines) == 1, lines
            assert level in lines[0] and want in lines[0] and c.certs.path("server.pem") in lines[0], lines
            assert "SIGHUP" in lines[0], lines
            maddr = re.search(r"metrics on http://(\S+)/metrics", srv.output()).group(1)
            text = urllib.request.urlopen(f"http://{maddr}/metrics", timeout=10).read().decode()
            got = re.search(r"^clued_tls_cert_not_after_seconds (\S+)$", text, re.M)
            assert got and float(got.group(1)) == not_after, (got and got.group(0), not_after)
        finally:
            srv.stop()


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
