#!/usr/bin/env bash
# Every .proto under proto/ through protoc for C++ (with grpc_cpp_plugin), Java and Python
# (with grpc_python_plugin), warnings fatal; then Python imports every generated module, so
# its descriptor pool accepts the files as a whole (names, JSON names, imports). The C++ is
# compiled by the build itself (CMake target clue_api_cpp, g++ against libprotobuf and
# libgrpc++). Any error fails the test.
set -euo pipefail

src=${CLUED_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
out=$(mktemp -d /tmp/clued-protoc.XXXXXX)
trap 'rm -rf "$out"' EXIT
cd "$src/proto"
mapfile -t files < <(find . -name '*.proto' | sed 's|^\./||' | sort)
[ ${#files[@]} -gt 0 ] || { echo "FAIL: no .proto under $src/proto" >&2; exit 1; }
mkdir -p "$out/cpp" "$out/java" "$out/python"

protoc --fatal_warnings --proto_path=. \
  --cpp_out="$out/cpp" --grpc_out="$out/cpp" --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" \
  "${files[@]}"
echo "PASS C++: ${#files[@]} files, $(find "$out/cpp" -name '*.cc' | wc -l) sources"

protoc --fatal_warnings --proto_path=. --java_out="$out/java" "${files[@]}"
echo "PASS Java: $(find "$out/java" -name '*.java' | wc -l) sources"

protoc --fatal_warnings --proto_path=. \
  --python_out="$out/python" --grpc_out="$out/python" \
  --plugin=protoc-gen-grpc="$(command -v grpc_python_plugin)" "${files[@]}"
# grpc/health/v1 would shadow the grpcio package named grpc: import through a renamed root.
mv "$out/python/grpc" "$out/python/grpc_protos"
mods=()
for f in "${files[@]}"; do
  m=${f%.proto}
  m=${m/#grpc\//grpc_protos/}
  mods+=("${m//\//.}_pb2")
done
/usr/bin/python3 - "$out/python" "${mods[@]}" <<'PY'
import importlib, sys
sys.path.insert(0, sys.argv[1])
for m in sys.argv[2:]:
    importlib.import_module(m)
print(f"PASS Python: {len(sys.argv) - 2} modules import")
PY
echo "3 passed, 0 failed"
