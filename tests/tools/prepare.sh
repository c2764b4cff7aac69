# Sourced by tests/run and the demo: installs the Debian packages the tests use when missing
# (docker-registry, skopeo; for the node tests containerd, runc, the CNI plugins, busybox-static,
# iptables and gcc for the pause binary) and builds the pinned Kubernetes binaries and CoreDNS
# once per machine, osv-scanner (the scanner's reference) and a Harbor scanner adapter with
# trivy (tests/tools/harbor-scanner), and moto (the AWS ECR API's stand-in) in a virtualenv;
# exports BERTH_K8S_BIN_DIR, BERTH_COREDNS_BIN_DIR, BERTH_OSV_SCANNER_BIN_DIR and
# BERTH_MOTO_BIN_DIR.
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
# The Harbor scanner adapter (tests/image_scans.rs) keeps its job queue in Redis.
[ -x /usr/bin/redis-server ] || need_apt+=(redis-server)
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
# Likewise Debian's redis-server starts a system Redis on :6379; the test starts its own.
if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
  systemctl stop redis-server || true
fi
BERTH_K8S_BIN_DIR=$(bash tests/tools/build-control-plane.sh)
export BERTH_K8S_BIN_DIR
BERTH_COREDNS_BIN_DIR=$(bash tests/tools/build-coredns.sh)
export BERTH_COREDNS_BIN_DIR
BERTH_OSV_SCANNER_BIN_DIR=$(bash tests/tools/build-osv-scanner.sh)
export BERTH_OSV_SCANNER_BIN_DIR
# harbor-scanner-trivy, trivy and trivy-db (cold: trivy takes 3-4 minutes); the test asks
# build.sh again for their folders, which is then instant.
bash tests/tools/harbor-scanner/build.sh >/dev/null
# moto, the stand-in for the AWS ECR API (tests/ecr.rs), in a cached virtualenv.
BERTH_MOTO_BIN_DIR=$(bash tests/tools/install-moto.sh)
export BERTH_MOTO_BIN_DIR
