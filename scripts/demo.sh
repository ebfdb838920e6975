#!/usr/bin/env bash
# Brings up the demo mesh of examples/demo on this host (root: it builds network
# namespaces), installing iproute2 and iptables first when they are missing
# (Debian/Ubuntu packages). Extra arguments go to `bowline up` (e.g. --detach, --name).
# Stays in the foreground until Ctrl-C, which tears the lab down.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables-restore >/dev/null 2>&1 || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} for the lab"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo build --release -p bowline
exec $sudo ./target/release/bowline up -f examples/demo "$@"
