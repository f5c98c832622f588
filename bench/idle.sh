#!/usr/bin/env bash
# clued's RSS with 10,000 idle HTTP/2 connections (issue 11's memory bound: at most 100 MiB).
# Raises the descriptor limit for itself and the clued it starts (both ends of every
# connection are on this machine), builds the release flavour, then runs bench/idle_conns.py:
# first with handshakes only, then with one call on every connection.
#   bench/idle.sh [-n N]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=10000
if [ "${1:-}" = "-n" ]; then n=$2; fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
need=$((n + 256)) # per process: the client and clued each hold one end
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  echo "bench/idle.sh: the descriptor limit is $(ulimit -n), $need needed; raise the hard limit (ulimit -Hn) or use -n" >&2
  exit 1
fi
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$root/build" -j "$(nproc)" --target clued >/dev/null
/usr/bin/python3 "$root/bench/idle_conns.py" -n "$n" --clued "$root/build/clued"
/usr/bin/python3 "$root/bench/idle_conns.py" -n "$n" --clued "$root/build/clued" --call
