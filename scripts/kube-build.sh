#!/usr/bin/env bash
# Builds bowline-kube (kube/: a real kube-apiserver, kube-controller-manager, kubectl and
# etcd from the Kubernetes Go modules pinned in kube/go.mod) once per pinned version, and
# prints the binary's path. The binary is cached under ${XDG_CACHE_HOME:-~/.cache}/bowline,
# keyed by a hash of kube/go.mod, go.sum and main.go; Go's own module and build caches keep
# a rebuild after a version change short. A cold build takes about 4.5 minutes on two cores
# (docs/kubernetes.md). Needs Go 1.25 or newer and the Go module proxy.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
kube="$root/kube"
if ! command -v go >/dev/null 2>&1; then
  echo "kube-build: Go is not installed; the Kubernetes mode needs Go 1.25+ (https://go.dev/doc/install)" >&2
  exit 1
fi
key="$(cat "$kube/go.mod" "$kube/go.sum" "$kube/main.go" | sha256sum | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/bowline/kube/$key"
bin="$cache/bowline-kube"
if [ ! -x "$bin" ]; then
  version="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$kube/go.mod")"
  minor="$(echo "$version" | cut -d. -f2)"
  echo "kube-build: building bowline-kube (Kubernetes $version) into $cache; a cold build takes about 5 minutes" >&2
  mkdir -p "$cache"
  ldflags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  done
  start=$(date +%s)
  (cd "$kube" && go build -trimpath -ldflags "-s -w $ldflags" -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
  echo "kube-build: built in $(( $(date +%s) - start )) s" >&2
fi
echo "$bin"
