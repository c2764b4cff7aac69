#!/usr/bin/env bash
# Builds a real Harbor Pluggable Scanner API v1.2 adapter and what it needs, from the modules
# pinned in tests/tools/harbor-scanner/<tool>/go.mod, into a cache outside the work tree, once
# per machine and version:
#   scanner-trivy  harbor-scanner-trivy (the adapter; serves /api/v1/{metadata,scan,...})
#   trivy          the trivy CLI the adapter runs as a subprocess (its Dockerfile's TRIVY_VERSION)
#   trivy-db       trivy-db's builder, to make trivy.db offline (ghcr.io, where trivy downloads
#                  its DB from, is not reachable here)
# Usage: build.sh [tool...]   (default: all three). Prints the directory holding each tool's
# binary, one line per tool, in the order asked. Idempotent. Runtime needs besides these:
# redis-server (Debian package), and `go` on PATH for trivy-db (it lists the std packages).
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
cache=${BERTH_TOOLS_CACHE:-$HOME/.cache/berth-tools}

# module path, package, binary name, ldflags -X setting the version (%s = version without v)
spec() {
  case "$1" in
    scanner-trivy) echo "github.com/aquasecurity/harbor-scanner-trivy github.com/aquasecurity/harbor-scanner-trivy/cmd/scanner-trivy scanner-trivy main.version=%s" ;;
    trivy) echo "github.com/aquasecurity/trivy github.com/aquasecurity/trivy/cmd/trivy trivy github.com/aquasecurity/trivy/pkg/version/app.ver=%s" ;;
    trivy-db) echo "github.com/aquasecurity/trivy-db github.com/aquasecurity/trivy-db/cmd/trivy-db trivy-db -" ;;
    *) echo "unknown tool $1 (scanner-trivy, trivy, trivy-db)" >&2; return 1 ;;
  esac
}

build() {
  local tool=$1 module pkg bin xflag here version out ldflags
  spec "$tool" >/dev/null || return 1
  read -r module pkg bin xflag < <(spec "$tool")
  here="$root/$tool"
  version=$(awk -v m="$module" '$1 == m {print $2} $1 == "require" && $2 == m {print $3}' "$here/go.mod")
  [ -n "$version" ] || { echo "cannot read the $module version from $here/go.mod" >&2; return 1; }
  out="$cache/$tool-$version"
  if [ ! -x "$out/$bin" ]; then
    echo "building $tool $version (cold: trivy ~3-4 minutes on 2 cores, the others under 30 s)" >&2
    mkdir -p "$out"
    ldflags="-s -w"
    # shellcheck disable=SC2059
    [ "$xflag" = - ] || ldflags="$ldflags -X $(printf "$xflag" "${version#v}")"
    (cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" \
      -o "$out/$bin.tmp" "$pkg")
    mv "$out/$bin.tmp" "$out/$bin"
  fi
  echo "$out"
}

[ $# -gt 0 ] || set -- scanner-trivy trivy trivy-db
for tool in "$@"; do build "$tool"; done
