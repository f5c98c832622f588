#!/usr/bin/env bash
# h2load against grpc.health.v1.Health/Check on a release build of clued.
# usage: bench/health.sh [-c CLIENTS] [-m STREAMS] [-n REQUESTS] [-t] [-b CLUED]
#   -t  over TLS, with a throwaway certificate made by the openssl tool
#   -b  benchmark this clued binary (say, an older build) instead of building build/
set -euo pipefail
cd "$(dirname "$0")/.."
c=16 m=10 n=200000 tls="" bin=""
while getopts c:m:n:tb: o; do
  case $o in c) c=$OPTARG ;; m) m=$OPTARG ;; n) n=$OPTARG ;; t) tls=1 ;; b) bin=$(realpath "$OPTARG") ;; *) exit 2 ;; esac
done
command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
if [ -z "$bin" ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"$(nproc)" >/dev/null
  bin=build/clued
fi

work=$(mktemp -d)
pgdir=$(mktemp -d /tmp/clued-bench-pg.XXXXXX)
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null; scripts/pg-test stop "$pgdir"; rm -rf "$work"' EXIT
read -r host port < <(scripts/pg-test start "$pgdir")
url="postgresql:///postgres?host=$host&port=$port"
"$bin" migrate --database-url "$url&user=postgres" >/dev/null 2>&1 || true
scheme=http tlsargs=()
if [ -n "$tls" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  scheme=https tlsargs=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")
fi
# A build from before the runtime role (its help has no --allow-superuser) serves as postgres.
user=clued
"$bin" help | grep -- --allow-superuser >/dev/null || user=postgres # (no -q: pipefail)
"$bin" serve --listen 127.0.0.1:0 --database-url "$url&user=$user" "${tlsargs[@]}" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/log" && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$work/log" | head -n 1)
printf '\0\0\0\0\0' >"$work/req" # an empty HealthCheckRequest, length-prefixed
echo "h2load -c $c -m $m -n $n  grpc.health.v1.Health/Check on $addr"
h2load -c "$c" -m "$m" -n "$n" -d "$work/req" -H 'content-type: application/grpc' -H 'te: trailers' \
  "$scheme://$addr/grpc.health.v1.Health/Check" | grep -E 'finished in|requests:|status codes|time for request|TLS Protocol|Cipher|Application protocol'
