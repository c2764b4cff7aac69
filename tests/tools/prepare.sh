# Sourced by tests/run and the demo: installs Debian's docker-registry and skopeo when missing
# and builds the pinned control plane once per machine; exports BERTH_K8S_BIN_DIR.
need_apt=()
[ -x /usr/bin/docker-registry ] || need_apt+=(docker-registry)
command -v skopeo >/dev/null || need_apt+=(skopeo)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${need_apt[*]} from Debian" >&2
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Debian's docker-registry package starts a system registry on :5000; the tests start their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi
BERTH_K8S_BIN_DIR=$(bash tests/tools/build-control-plane.sh)
export BERTH_K8S_BIN_DIR
