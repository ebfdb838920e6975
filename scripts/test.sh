#!/usr/bin/env bash
# Runs every Bowline test. The end-to-end tests build network namespaces with iproute2
# and install capture rules with iptables; this installs them first when they are
# missing (Debian/Ubuntu packages). Namespace tests need root: without it they say
# SKIPPED loudly, and with BOWLINE_REQUIRE_ROOT=1 (as in CI) they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables-restore >/dev/null 2>&1 || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} for the end-to-end tests"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

exec cargo test --workspace "$@"
