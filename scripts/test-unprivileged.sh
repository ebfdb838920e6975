#!/usr/bin/env bash
# Runs ztunnel's end-to-end tests as an unprivileged user, the way a contributor without
# sudo runs them: each namespace test re-runs itself as root of its own user namespace
# (test_support::root_or_skip). Fails if any test skipped instead of running there.
# Usage: scripts/test-unprivileged.sh [UID]   (default 65534, run as root to switch)
set -euo pipefail
cd "$(dirname "$0")/.."
uid="${1:-65534}"

fail=0
for suite in inpod abuse takeover; do
  bin=$(cargo test -p ztunnel --test "$suite" --no-run 2>&1 \
    | grep -o "target/debug/deps/${suite}-[0-9a-f]*" | tail -1)
  echo "==> $suite as uid $uid ($bin)"
  out=$(setpriv --reuid "$uid" --regid "$uid" --clear-groups \
    env HOME=/tmp BOWLINE_REQUIRE_ROOT=1 "$bin" --nocapture 2>&1) || { echo "$out"; fail=1; continue; }
  tests=$(grep -c '^test .* ok$' <<<"$out" || true)
  in_userns=$(grep -c 'ran as root of its own user namespace' <<<"$out" || true)
  echo "$tests passed, $in_userns of them in their own user namespace"
  if [ "$tests" -eq 0 ] || [ "$tests" -ne "$in_userns" ]; then
    echo "$out" | tail -40
    fail=1
  fi
done
exit "$fail"
