#!/usr/bin/env bash
# Installs moto (PyPI `moto[ecr,server]`, pinned), the wire-level stand-in for the AWS ECR API
# that the ECR backend's tests run against, into a virtualenv cached outside the work tree, once
# per machine and version. Prints the directory holding `moto_server`. Idempotent.
set -euo pipefail
version=5.2.5
cache=${BERTH_TOOLS_CACHE:-$HOME/.cache/berth-tools}
out="$cache/moto-$version"
if [ ! -e "$out/.installed" ]; then
  echo "installing moto $version into $out (about a minute)" >&2
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  # A venv records its own path, so it is made where it lives; .installed marks it whole.
  rm -rf "$out"
  python3 -m venv "$out"
  "$out/bin/pip" install -q --disable-pip-version-check "moto[ecr,server]==$version" >&2
  touch "$out/.installed"
fi
echo "$out/bin"
