"""What the Python benchmarks share: the clued binary to run (`--clued`, default the release
build in build/), and the end-to-end harness (tests/e2e) to start it and PostgreSQL with."""

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def add_clued_arg(ap):
    ap.add_argument("--clued", default=os.path.join(ROOT, "build", "clued"), help="clued binary")


def use_clued(path):
    """Run clued from path (exit with how to build it if it is not there), and make the
    harness importable."""
    if not os.access(path, os.X_OK):
        sys.exit(f"{path} not found; build it: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release"
                 " && cmake --build build -j2")
    os.environ["CLUED_BIN"] = os.path.abspath(path)
    os.environ.setdefault("CLUED_SOURCE_DIR", ROOT)
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
