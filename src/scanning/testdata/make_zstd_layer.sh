#!/usr/bin/env bash
# Makes layer.tar.zst: a zstd-compressed tar layer with an os-release and a dpkg status, for the
# layer reader's zstd test (Debian's zstd CLI; only needed to regenerate it).
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)/layer.tar.zst
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/etc" "$work/var/lib/dpkg"
printf 'ID=debian\nVERSION_ID="12"\n' > "$work/etc/os-release"
printf 'Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13.dfsg-1\nSource: zlib\n\n' > "$work/var/lib/dpkg/status"
tar --sort=name --owner=0 --group=0 --mtime=@1700000000 -C "$work" -cf "$work/layer.tar" etc var
zstd -q -19 -f "$work/layer.tar" -o "$out"
