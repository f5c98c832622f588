"""gRPC-Web from a client nobody here wrote: @connectrpc/connect-web's gRPC-Web transport
under Node (npm, installed by scripts/connect-web), against the real clued over HTTP/1.1:
unary, error trailers, (un)authenticated calls, an over-limit message, a deadline and
WatchEvents streaming. The checks themselves are in connect_web.cjs."""

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import world  # noqa: E402


def test_connect_web():
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        raise harness.Skip("node is not installed (scripts/deps --test installs it)")
    tools = subprocess.check_output([os.path.join(harness.SRC, "scripts", "connect-web")], text=True,
                                    timeout=600).strip()
    descriptors = os.path.join(harness.BUILD, "gen", "clue_api.binpb")
    assert os.path.exists(descriptors), descriptors
    with harness.Clued(harness.test_database_url(), args=["--max-message-bytes", "65536"]) as srv:
        srv.start()
        token = world.bootstrap_token(srv)
        env = dict(os.environ, CLUED_ADDR=srv.addr, CLUED_TOKEN=token, CLUED_DESCRIPTORS=descriptors,
                   NODE_PATH=os.path.join(tools, "node_modules"))
        r = subprocess.run([node, os.path.join(os.path.dirname(__file__), "connect_web.cjs")], env=env,
                           capture_output=True, text=True, timeout=120)
        print(r.stdout, end="")
        print(r.stderr, end="", file=sys.stderr)
        assert r.returncode == 0, "connect-web checks failed"
        for name in ("unary", "error_trailers", "unauthenticated", "authenticated", "over_limit",
                     "deadline", "server_streaming", "json_refused"):
            assert f"ok {name}\n" in r.stdout, name


if __name__ == "__main__":
    harness.run_tests(globals())
