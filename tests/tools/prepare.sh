# Sourced by tests/run and the demo: installs the Debian packages the tests use when missing
# (docker-registry, skopeo; for the node tests containerd, runc, the CNI plugins, busybox-static,
# iptables and gcc for the pause binary) and builds the pinned Kubernetes binaries and CoreDNS
# once per machine, and osv-scanner (the scanner's reference); exports BERTH_K8S_BIN_DIR,
# BERTH_COREDNS_BIN_DIR and BERTH_OSV_SCANNER_BIN_DIR.
need_apt=()
[ -x /usr/bin/docker-registry ] || need_apt+=(docker-registry)
command -v skopeo >/dev/null || need_apt+=(skopeo)
[ -x /usr/bin/containerd ] || need_apt+=(containerd)
[ -x /usr/sbin/runc ] || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
# charts/build-image checks that berth's binary is static with file(1).
command -v file >/dev/null || need_apt+=(file)
# The scanner's version order is cross-checked against rpm and Python's packaging (dpkg is there).
command -v rpm >/dev/null || need_apt+=(rpm)
dpkg -s python3-packaging >/dev/null 2>&1 || need_apt+=(python3-packaging)
export BERTH_REQUIRE_TOOLS=1
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
BERTH_COREDNS_BIN_DIR=$(bash tests/tools/build-coredns.sh)
export BERTH_COREDNS_BIN_DIR
BERTH_OSV_SCANNER_BIN_DIR=$(bash tests/tools/build-osv-scanner.sh)
export BERTH_OSV_SCANNER_BIN_DIR
