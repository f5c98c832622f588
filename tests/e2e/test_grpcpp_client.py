"""gRPC C++ against the real clued: tests/cpp/grpcpp_client.cc, built with stubs that protoc's
grpc_cpp_plugin generates from proto/ (CMake builds it as grpcpp_client), calls Health,
SubmitClue and GetClue; grpcio then reads back what it made.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import world  # noqa: E402

S = harness.stubs()
CLIENT = os.environ.get("GRPCPP_CLIENT_BIN", os.path.join(harness.BUILD, "grpcpp_client"))


def setup():
    srv = harness.Clued(harness.test_database_url()).start()
    return srv, world.build(srv)


def teardown(ctx):
    srv, w = ctx
    w.close()
    srv.stop()


def run_client(srv, *tokens):
    r = subprocess.run([CLIENT, srv.addr, *tokens], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
    harness._assert_clean(r.stderr)
    return r


def test_grpcpp_client_submits_and_reads(ctx):
    srv, w = ctx
    r = run_client(srv, w.G1.member.token, w.G1.leader.token)
    assert r.returncode == 0, f"grpcpp_client exited {r.returncode}:\n{r.stdout}{r.stderr}"
    _, cid, regno = r.stdout.split()
    got = w.G1.member.clue.GetClue(S.clue_pb2.GetClueRequest(clue_id=int(cid)), timeout=10)
    assert got.registration_number == regno and got.title == "C++ 客户端提交的线索", got
    assert got.reporter_on_file and not got.HasField("reporter")
    # The retry inside the client made nothing new: G1 has exactly that one clue.
    listed = w.G1.member.clue.ListClues(S.clue_pb2.ListCluesRequest(), timeout=10).clues
    assert [c.id for c in listed] == [int(cid)], listed


def test_grpcpp_client_fails_when_a_check_fails(ctx):
    """The client is not a test that cannot fail: a token of another unit's member cannot read
    the reporter as leader, and the client reports it and exits 1."""
    srv, w = ctx
    r = run_client(srv, w.G2.member.token, w.G2.member.token)
    assert r.returncode == 1 and "GetClue as leader" in r.stderr, f"{r.returncode}:\n{r.stdout}{r.stderr}"


if __name__ == "__main__":
    harness.run_tests(globals(), setup, teardown)
