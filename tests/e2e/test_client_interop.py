"""libclue and cluectl against a gRPC server nobody here wrote: Python grpcio.

An in-process grpcio server implements grpc.health.v1.Health and clue.v1.AdminService
(stubs generated from proto/ by harness.stubs()); the real cluectl binary is run against it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import grpc  # noqa: E402

S = harness.stubs()
TOKEN = "t0k3n-for-tests"
SERVING = S.health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = S.health_pb2.HealthCheckResponse.NOT_SERVING
CHINESE = "单位代码已存在：G03（100% 重复）"


def unit(i, kind=None, name=None):
    return S.admin_pb2.Unit(
        id=i,
        kind=kind if kind is not None else S.common_pb2.UNIT_KIND_GROUP,
        code=f"G{i:05d}",
        name=name or f"第{i}派驻纪检监察组",
        liaison_room_id=1,
        host_units=[f"驻在单位{i}", "财政局"],
        created_at_ms=1767225600000 + i,
    )


class Health(S.health_pb2_grpc.HealthServicer):
    def Check(self, request, context):
        if request.service in ("", "clue.v1.AdminService"):
            return S.health_pb2.HealthCheckResponse(status=SERVING)
        context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service}")

    def Watch(self, request, context):
        yield S.health_pb2.HealthCheckResponse(status=SERVING)
        time.sleep(0.3)
        yield S.health_pb2.HealthCheckResponse(status=NOT_SERVING)
        while context.is_active():  # no more changes: hold the stream until the client leaves
            time.sleep(0.05)


class Admin(S.admin_pb2_grpc.AdminServiceServicer):
    """Stubs with just enough behaviour to exercise the client. RevokeToken is left
    unimplemented on purpose (grpcio answers UNIMPLEMENTED)."""

    def __init__(self):
        self.units = [
            unit(1, S.common_pb2.UNIT_KIND_ROOM, "第一监督检查室"),
            unit(2, S.common_pb2.UNIT_KIND_GROUP, "第三派驻纪检监察组"),
        ]
        self.seen_timeout = None
        self.seen = []
        self.page = None  # rows a ListUnits page holds whatever page_size asks (None: as it asks)

    def _auth(self, context):
        md = dict(context.invocation_metadata())
        if md.get("authorization") != f"Bearer {TOKEN}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown token")

    def ListUnits(self, request, context):
        self._auth(context)
        units = [u for u in self.units if request.kind in (0, u.kind)]
        # Pages as clued's: page_size rows (500 by default) from the token's place.
        start, size = int(request.page_token or 0), self.page or request.page_size or 500
        more = start + size < len(units)
        return S.admin_pb2.ListUnitsResponse(units=units[start:start + size],
                                             next_page_token=str(start + size) if more else "")

    def CreateUnit(self, request, context):
        self._auth(context)
        self.seen.append(request)
        if request.code == "DUP":
            context.abort(grpc.StatusCode.ALREADY_EXISTS, CHINESE)
        return S.admin_pb2.Unit(id=42, kind=request.kind, code=request.code, name=request.name,
                                liaison_room_id=request.liaison_room_id,
                                host_units=list(request.host_units), created_at_ms=1767225600000)

    def ListUsers(self, request, context):
        self._auth(context)
        self.seen_timeout = context.time_remaining()
        if request.unit_id == 999:  # slow: lets the client's deadline pass
            time.sleep(3)
        return S.admin_pb2.ListUsersResponse(users=[
            S.admin_pb2.User(id=5, unit_id=2, name="张三", role=S.common_pb2.ROLE_LEADER,
                             unit_code="G00002", unit_name="第三派驻纪检监察组"),
            S.admin_pb2.User(id=6, unit_id=2, name="Li Si", role=S.common_pb2.ROLE_MEMBER,
                             disabled=True, created_at_ms=1767225600000),
        ])

    def CreateUser(self, request, context):
        self._auth(context)
        return S.admin_pb2.User(id=7, unit_id=request.unit_id, name=request.name, role=request.role)

    def DisableUser(self, request, context):
        self._auth(context)
        self.seen.append(request)
        return S.admin_pb2.User(id=request.user_id, unit_id=2, name="张三",
                                role=S.common_pb2.ROLE_MEMBER, disabled=True)

    def IssueToken(self, request, context):
        self._auth(context)
        return S.admin_pb2.IssueTokenResponse(token_id=9, token=f"issued-for-{request.user_id}")


class ClientInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        cls.admin = Admin()
        S.health_pb2_grpc.add_HealthServicer_to_server(Health(), cls.server)
        S.admin_pb2_grpc.add_AdminServiceServicer_to_server(cls.admin, cls.server)
        cls.port = cls.server.add_insecure_port("127.0.0.1:0")
        cls.server.start()
        cls.addr = f"127.0.0.1:{cls.port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.stop(0).wait()

    def ctl(self, *args, check=None, token=TOKEN, **kw):
        env = {"CLUED_SERVER": self.addr, "CLUED_TOKEN": token or ""}
        return harness.cluectl(*args, env=env, check=check, **kw)

    # ---- health ------------------------------------------------------------------------

    def test_health_serving(self):
        r = self.ctl("health", check=0)
        self.assertEqual(r.stdout, "SERVING\n")
        r = self.ctl("health", "--service", "clue.v1.AdminService", "--json", check=0)
        self.assertEqual(json.loads(r.stdout), {"status": "SERVING"})

    def test_health_unknown_service(self):
        r = self.ctl("health", "--service", "nope", check=1)
        self.assertEqual(r.stdout, "")
        self.assertEqual(r.stderr, "NOT_FOUND: unknown service nope\n")

    def test_health_watch(self):
        t0 = time.time()
        r = self.ctl("health", "--watch", "--timeout", "1", check=0)
        self.assertEqual(r.stdout.split(), ["SERVING", "NOT_SERVING"])
        self.assertLess(time.time() - t0, 10)
        r = self.ctl("--json", "health", "--watch", "--timeout", "1", check=0)
        self.assertEqual([json.loads(x)["status"] for x in r.stdout.splitlines()],
                         ["SERVING", "NOT_SERVING"])

    def test_health_watch_interrupted(self):
        """Ctrl-C ends a watch cleanly: exit 0, what was seen printed, no sanitizer report."""
        env = dict(os.environ, CLUED_SERVER=self.addr, ASAN_OPTIONS="detect_leaks=1")
        p = subprocess.Popen([harness.CLUECTL, "health", "--watch"], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(p.stdout.readline(), "SERVING\n")
        self.assertEqual(p.stdout.readline(), "NOT_SERVING\n")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        harness._assert_clean(err)
        self.assertEqual((p.returncode, out, err), (0, "", ""))

    def test_server_option_and_ipv6_syntax(self):
        r = harness.cluectl("--server", self.addr, "health", env={"CLUED_SERVER": "bad:1:2:3"},
                            check=0)
        self.assertEqual(r.stdout, "SERVING\n")
        # [::1] is not served here: must be refused (or unreachable without IPv6), never a crash
        r = harness.cluectl("--server", f"[::1]:{self.port}", "health", check=1)
        self.assertTrue(r.stderr.startswith("UNAVAILABLE: "), r.stderr)

    # ---- admin ---------------------------------------------------------------------------

    def test_units_table(self):
        r = self.ctl("admin", "units", check=0)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 3, r.stdout)
        self.assertEqual(lines[0].split()[:4], ["ID", "KIND", "CODE", "NAME"])
        self.assertEqual(lines[1].split()[:4], ["1", "ROOM", "G00001", "第一监督检查室"])
        self.assertIn("驻在单位2, 财政局", lines[2])
        # columns line up on display width (CJK characters take two columns)
        col = lines[0].index("LIAISON")
        w = lambda s: sum(2 if ord(ch) >= 0x1100 else 1 for ch in s)  # noqa: E731
        for line in lines[1:]:
            cut = 0
            while w(line[:cut]) < col:
                cut += 1
            self.assertEqual(line[cut - 2:cut], "  ", line)
            self.assertEqual(line[cut], "1", line)

    def test_units_json_and_filter(self):
        r = self.ctl("admin", "units", "--json", check=0)
        doc = json.loads(r.stdout)
        self.assertEqual(len(doc["units"]), 2)
        u = doc["units"][1]
        self.assertEqual(u["id"], 2)  # int64 as a JSON number
        self.assertEqual(u["kind"], "UNIT_KIND_GROUP")
        self.assertEqual(u["name"], "第三派驻纪检监察组")
        self.assertEqual(u["host_units"], ["驻在单位2", "财政局"])
        self.assertEqual(u["created_at_ms"], 1767225600002)
        r = self.ctl("admin", "units", "--kind", "room", "--json", check=0)
        self.assertEqual([x["id"] for x in json.loads(r.stdout)["units"]], [1])

    def test_create_unit(self):
        r = self.ctl("admin", "create-unit", "--kind", "GROUP", "--code", "G03", "--name",
                     "第三组", "--liaison-room", "1", "--host-unit", "住建局",
                     "--host-unit=交通局", check=0)
        req = self.admin.seen[-1]
        self.assertEqual(req.kind, S.common_pb2.UNIT_KIND_GROUP)
        self.assertEqual(list(req.host_units), ["住建局", "交通局"])
        self.assertEqual(req.liaison_room_id, 1)
        self.assertRegex(req.request_id, r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
        rec = dict(line.split(":", 1) for line in r.stdout.splitlines())
        self.assertEqual(rec["id"].strip(), "42")
        self.assertEqual(rec["kind"].strip(), "GROUP")
        self.assertEqual(rec["host_units"].strip(), "住建局, 交通局")
        self.assertIn("created_at", rec)
        r = self.ctl("admin", "create-unit", "--kind", "ROOM", "--code", "R1", "--name", "室",
                     "--json", check=0)
        self.assertEqual(json.loads(r.stdout)["kind"], "UNIT_KIND_ROOM")

    def test_users_and_user_commands(self):
        r = self.ctl("admin", "users", "--unit", "2", check=0)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0].split(),
                         ["ID", "UNIT", "UNIT", "NAME", "NAME", "ROLE", "DISABLED", "CREATED"])
        self.assertEqual(lines[1].split(), ["5", "G00002", "第三派驻纪检监察组", "张三", "LEADER", "no", "-"])
        # A server that sends no unit code: the unit's id stands in.
        self.assertEqual(lines[2].split()[:6], ["6", "2", "-", "Li", "Si", "MEMBER"])
        r = self.ctl("admin", "create-user", "--unit", "2", "--name", "王五", "--role", "auditor",
                     "--json", check=0)
        self.assertEqual(json.loads(r.stdout)["role"], "ROLE_AUDITOR")
        r = self.ctl("admin", "disable-user", "--user", "5", "--reason", "离职", check=0)
        self.assertEqual(self.admin.seen[-1].reason, "离职")
        self.assertRegex(r.stdout, r"disabled:\s+yes")

    def test_issue_token(self):
        r = self.ctl("admin", "issue-token", "--user", "5", "--note", "laptop", check=0)
        self.assertEqual(r.stdout, "issued-for-5\n")
        r = self.ctl("admin", "issue-token", "--user", "5", "--json", "--request-id",
                     "0b5e3c4e-4f1a-4c55-9c55-6c0e0b6a1f00", check=0)
        # The request id sent, first, so that a script can retry with it.
        self.assertEqual(json.loads(r.stdout), {"request_id": "0b5e3c4e-4f1a-4c55-9c55-6c0e0b6a1f00",
                                                "token_id": 9, "token": "issued-for-5"})

    def test_wrong_or_missing_token(self):
        r = self.ctl("admin", "units", token="wrong", check=1)
        self.assertEqual(r.stderr, "UNAUTHENTICATED: missing or unknown token\n")
        r = self.ctl("admin", "units", token=None, check=1)
        self.assertEqual(r.stderr, "UNAUTHENTICATED: missing or unknown token\n"
                                   "cluectl: no token was given: set CLUED_TOKEN, or pass --token-file FILE "
                                   "(or --token)\n")
        # --token overrides the environment
        r = self.ctl("--token", TOKEN, "admin", "units", token="wrong", check=0)

    def test_non_ascii_status_message(self):
        r = self.ctl("admin", "create-unit", "--kind", "GROUP", "--code", "DUP", "--name", "x",
                     check=1)
        self.assertEqual(r.stderr, f"ALREADY_EXISTS: {CHINESE}\n")

    def test_unimplemented_method(self):
        r = self.ctl("admin", "revoke-token", "--token-id", "3", check=1)
        self.assertTrue(r.stderr.startswith("UNIMPLEMENTED"), r.stderr)

    def test_timeout(self):
        r = self.ctl("admin", "users", "--timeout", "5", check=0)
        self.assertIsNotNone(self.admin.seen_timeout)  # grpc-timeout reached the server
        self.assertLessEqual(self.admin.seen_timeout, 5.0)
        self.assertGreater(self.admin.seen_timeout, 3.0)
        t0 = time.time()
        r = self.ctl("admin", "users", "--unit", "999", "--timeout", "0.3", check=1)
        self.assertTrue(r.stderr.startswith("DEADLINE_EXCEEDED"), r.stderr)
        self.assertLess(time.time() - t0, 2.5)

    def test_large_response(self):
        saved = self.admin.units
        try:
            self.admin.units = [unit(i) for i in range(1, 20001)]
            r = self.ctl("admin", "units", "--all", "--json", check=0)
            units = json.loads(r.stdout)["units"]
            self.assertEqual(len(units), 20000)
            self.assertEqual(units[-1]["code"], "G20000")
            self.assertEqual(units[-1]["name"], "第20000派驻纪检监察组")
            r = self.ctl("admin", "units", "--all", check=0)
            self.assertEqual(len(r.stdout.splitlines()), 20001)
            r = self.ctl("admin", "units", check=0)
            self.assertEqual(len(r.stdout.splitlines()), 501)
            self.assertIn("--page-token 500 ", r.stderr)
            # One page of more than 1 MiB is received whole.
            self.admin.page = 5000
            self.admin.units = [unit(i, name="很长的名字" * 15) for i in range(1, 20001)]
            size = S.admin_pb2.ListUnitsResponse(units=self.admin.units[:5000]).ByteSize()
            self.assertGreater(size, 1 << 20)
            r = self.ctl("admin", "units", "--json", check=0)
            self.assertEqual(len(json.loads(r.stdout)["units"]), 5000)
            # over the 4 MiB receive limit: refused cleanly, not a crash
            self.admin.units = [unit(i, name="很长的名字" * 60) for i in range(1, 20001)]
            r = self.ctl("admin", "units", check=1)
            self.assertTrue(r.stderr.startswith("RESOURCE_EXHAUSTED: "), r.stderr)
        finally:
            self.admin.units = saved
            self.admin.page = None

    # ---- transport failures and usage ----------------------------------------------------

    def test_connection_refused(self):
        port = harness.free_port()
        r = harness.cluectl("--server", f"127.0.0.1:{port}", "health", check=1)
        self.assertEqual(r.stderr, f"UNAVAILABLE: connection refused to 127.0.0.1:{port}\n")
        r = harness.cluectl("admin", "units", env={"CLUED_SERVER": f"127.0.0.1:{port}"}, check=1)
        self.assertIn(f"UNAVAILABLE: connection refused to 127.0.0.1:{port}", r.stderr)

    def test_not_http2_server(self):
        """A server that answers HTTP/1.1 and hangs up: UNAVAILABLE with a reason."""
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)

        def serve():
            c, _ = ls.accept()
            c.recv(1024)
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            time.sleep(0.2)
            c.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        r = harness.cluectl("--server", f"127.0.0.1:{ls.getsockname()[1]}", "--timeout", "10",
                            "health", check=1)
        t.join(5)
        ls.close()
        self.assertTrue(r.stderr.startswith("UNAVAILABLE: "), r.stderr)

    def test_usage_errors(self):
        cases = [
            (["bogus"], "unknown command 'bogus'"),
            ([], "missing command"),
            (["admin"], "missing command"),
            (["admin", "frobnicate"], "unknown command 'frobnicate'"),
            (["admin", "create-unit", "--kind", "ROOM", "--name", "x"], "--code is required"),
            (["admin", "create-unit", "--kind", "HALL", "--code", "c", "--name", "n"],
             "'HALL' is not one of ROOM|GROUP|REGION|ADMIN"),
            (["admin", "users", "--unit", "abc"], "not a valid id"),
            (["admin", "users", "--unit", "-3"], "not a valid id"),
            (["admin", "units", "--bogus"], "unknown option '--bogus'"),
            (["admin", "units", "--kind"], "--kind needs a value"),
            (["--timeout", "soon", "health"], "--timeout"),
            (["--timeout", "-1", "health"], "--timeout"),
            (["--server", "host:notaport", "health"], "--server"),
            (["health", "extra"], "unexpected argument 'extra'"),
            (["health", "--json=yes"], "takes no value"),
        ]
        for args, want in cases:
            with self.subTest(args=args):
                r = self.ctl(*args, check=2)
                self.assertIn(want, r.stderr)
                self.assertEqual(r.stdout, "")

    def test_help(self):
        for args in (["--help"], ["help"], ["-h"]):
            r = self.ctl(*args, check=0)
            self.assertIn("Usage: cluectl", r.stdout)
            self.assertIn("admin", r.stdout)
        for args in (["admin", "--help"], ["help", "admin"], ["admin", "help"]):
            r = self.ctl(*args, check=0)
            self.assertIn("create-unit", r.stdout)
        for args in (["admin", "create-unit", "--help"], ["help", "admin", "create-unit"]):
            r = self.ctl(*args, check=0)
            self.assertIn("--host-unit NAME", r.stdout)
        r = self.ctl("health", "--help", check=0)
        self.assertIn("--watch", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
