#!/usr/bin/env bash
# Builds helm from the pinned helm.sh/helm/v3 module (tests/tools/helm/go.mod) into a cache outside
# the work tree, once per machine and version. Prints the directory holding `helm`.
# Idempotent: a second run with the binary present only prints the directory.
set -euo pipefail
here=$(cd "$(dirname "$0")/helm" && pwd)
version=$(awk '$1 == "require" && $2 == "helm.sh/helm/v3" {print $3}' "$here/go.mod")
[ -n "$version" ] || { echo "cannot read the helm.sh/helm/v3 version from $here/go.mod" >&2; exit 1; }
cache=${BERTH_TOOLS_CACHE:-$HOME/.cache/berth-tools}
out="$cache/helm-$version"
if [ ! -x "$out/helm" ]; then
  # What Helm's Makefile sets: the version, and the Kubernetes version `helm lint` and `template`
  # assume (client-go v0.N.x is Kubernetes 1.N).
  client_go=$(awk '$1 == "k8s.io/client-go" {print $2}' "$here/go.mod")
  minor=${client_go#v0.}; minor=${minor%%.*}
  [ -n "$minor" ] || { echo "cannot read the k8s.io/client-go version from $here/go.mod" >&2; exit 1; }
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version \
 -X helm.sh/helm/v3/internal/version.metadata= -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  echo "building helm $version (cold: a few minutes)" >&2
  mkdir -p "$out"
  (cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" \
    -o "$out/helm.tmp" helm.sh/helm/v3/cmd/helm)
  mv "$out/helm.tmp" "$out/helm"
fi
echo "$out"
