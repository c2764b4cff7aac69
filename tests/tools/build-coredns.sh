#!/usr/bin/env bash
# Builds CoreDNS from the pinned github.com/coredns/coredns module (tests/tools/coredns/go.mod)
# into a cache outside the work tree, once per machine and version. Prints the directory holding
# `coredns`. Idempotent: a second run with the binary present only prints the directory.
set -euo pipefail
here=$(cd "$(dirname "$0")/coredns" && pwd)
version=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" {print $3}' "$here/go.mod")
[ -n "$version" ] || { echo "cannot read the coredns version from $here/go.mod" >&2; exit 1; }
cache=${BERTH_TOOLS_CACHE:-$HOME/.cache/berth-tools}
out="$cache/coredns-$version"
if [ ! -x "$out/coredns" ]; then
  echo "building coredns $version (cold: a few minutes)" >&2
  mkdir -p "$out"
  (cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" \
    -o "$out/coredns.tmp" github.com/coredns/coredns)
  mv "$out/coredns.tmp" "$out/coredns"
fi
echo "$out"
