#!/usr/bin/env bash
# Builds Google's osv-scanner from the pinned module (tests/tools/osv-scanner/go.mod) into a
# cache outside the work tree, once per machine and version: the independent scanner berth's
# findings are compared with. Prints the directory holding `osv-scanner`. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")/osv-scanner" && pwd)
version=$(awk '$1 == "github.com/google/osv-scanner/v2" {print $2} $1 == "require" && $2 == "github.com/google/osv-scanner/v2" {print $3}' "$here/go.mod")
[ -n "$version" ] || { echo "cannot read the osv-scanner version from $here/go.mod" >&2; exit 1; }
cache=${BERTH_TOOLS_CACHE:-$HOME/.cache/berth-tools}
out="$cache/osv-scanner-$version"
if [ ! -x "$out/osv-scanner" ]; then
  echo "building osv-scanner $version (cold: a few minutes)" >&2
  mkdir -p "$out"
  (cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" \
    -o "$out/osv-scanner.tmp" github.com/google/osv-scanner/v2/cmd/osv-scanner)
  mv "$out/osv-scanner.tmp" "$out/osv-scanner"
fi
echo "$out"
