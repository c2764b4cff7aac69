#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kubectl, and for the node tests kube-scheduler,
# kubelet and kube-proxy, from the pinned k8s.io/kubernetes module into a cache outside the work
# tree, once per machine and version. Prints the directory.
# Idempotent: a second run with the binaries present only prints the directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/go.mod")
[ -n "$version" ] || { echo "cannot read the k8s.io/kubernetes version from $here/go.mod" >&2; exit 1; }
cache=${BERTH_TOOLS_CACHE:-$HOME/.cache/berth-tools}
out="$cache/kubernetes-$version"
minor=${version#v1.}; minor=${minor%%.*}
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/client-go/pkg/version.gitVersion=$version"
mkdir -p "$out"
for bin in kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy; do
  if [ ! -x "$out/$bin" ]; then
    echo "building $bin $version (cold: several minutes)" >&2
    (cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" \
      -o "$out/$bin.tmp" "k8s.io/kubernetes/cmd/$bin")
    mv "$out/$bin.tmp" "$out/$bin"
  fi
done
echo "$out"
