#!/usr/bin/env bash
# buf lint (buf.yaml: STANDARD less the commented exceptions) and buf breaking (WIRE_JSON)
# of proto/ against the API it replaces: the tip of main when this checkout has commits on
# top of it (a branch about to land), otherwise the previous commit (a clone of main). A
# checkout with no such commit (a shallow or single-commit clone) skips the breaking check
# and says so. buf comes from scripts/buf (npm's @bufbuild/buf, installed on first use).
set -euo pipefail

src=${CLUED_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$src"
buf=("$src/scripts/buf")
failed=0 passed=0 skipped=0

if "${buf[@]}" lint; then
  echo "PASS buf lint"
  passed=$((passed + 1))
else
  echo "FAIL buf lint"
  failed=$((failed + 1))
fi

base=""
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  head=$(git rev-parse HEAD)
  main=$(git rev-parse --verify -q refs/heads/main || true)
  if [ -n "$main" ] && [ "$main" != "$head" ] && git merge-base --is-ancestor "$main" HEAD; then
    base=$main
  else
    base=$(git rev-parse --verify -q 'HEAD~1^{commit}' || true)
  fi
fi
if [ -z "$base" ]; then
  echo "SKIP buf breaking: no previous commit to compare with (shallow or single-commit clone, or no git)"
  skipped=1
else
  prev=$(mktemp -d /tmp/clued-buf-prev.XXXXXX)
  trap 'rm -rf "$prev"' EXIT
  # The earlier tree laid out as this one (buf.yaml beside proto/), whether or not it had buf.yaml.
  git archive "$base" proto | tar -x -C "$prev"
  cp buf.yaml "$prev/"
  if "${buf[@]}" breaking . --against "$prev"; then
    echo "PASS buf breaking against $(git log -1 --format='%h %s' "$base")"
    passed=$((passed + 1))
  else
    echo "FAIL buf breaking against $(git log -1 --format='%h %s' "$base"): a wire or JSON incompatible change"
    failed=$((failed + 1))
  fi
fi
echo "$passed passed, $failed failed$([ $skipped -eq 0 ] || echo ", $skipped skipped")"
[ $failed -eq 0 ]
