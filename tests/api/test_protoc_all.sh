#!/usr/bin/env bash
# Every .proto under proto/ through protoc for C++ (with grpc_cpp_plugin), Java (with
# grpc-java's plugin) and Python (with grpc_python_plugin), warnings fatal; javac compiles the
# Java, messages and service stubs, against Debian's protobuf-java and grpc-java; then Python
# imports every generated module, so its descriptor pool accepts the files as a whole (names,
# JSON names, imports). The C++ is compiled by the build itself (CMake target clue_api_cpp,
# g++ against libprotobuf and libgrpc++). Any error fails the test.
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

protoc --fatal_warnings --proto_path=. --java_out="$out/java" \
  --grpc-java_out="$out/java" --plugin=protoc-gen-grpc-java="$(command -v grpc_java_plugin)" "${files[@]}"
# grpc-java 1.41's stubs carry @javax.annotation.Generated, which JDK 11+ no longer has:
# Debian's javax.annotation API jar (geronimo) provides it.
jars=/usr/share/java
cp=""
for j in protobuf grpc-api grpc-stub grpc-protobuf grpc-protobuf-lite grpc-context guava jsr305 \
         error_prone_annotations geronimo-annotation-1.3-spec; do
  [ -f "$jars/$j.jar" ] || { echo "FAIL: $jars/$j.jar missing (scripts/deps --test installs it)" >&2; exit 1; }
  cp+="$jars/$j.jar:"
done
mkdir -p "$out/classes"
mapfile -t java < <(find "$out/java" -name '*.java')
javac -nowarn -Xlint:none -d "$out/classes" -cp "$cp" "${java[@]}"
echo "PASS Java: ${#java[@]} sources, $(find "$out/classes" -name '*.class' | wc -l) classes (javac, grpc-java stubs)"

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
