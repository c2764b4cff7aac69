//! A real worker node for the tests that need pods: kubelet, kube-scheduler and kube-proxy built
//! from the same pinned `k8s.io/kubernetes` module as the control plane, Debian's containerd,
//! runc and CNI plugins, and CoreDNS as the cluster DNS, all in a private network and mount
//! namespace ([`netns`]). The control plane of such a test binary runs in that namespace too, so
//! that pods reach the API server through the `kubernetes` Service as they do in any cluster.
//!
//! Opt-in: only test binaries that call [`control_plane_with_node`] pay for it (about 5 s more at
//! start, about 300 MiB more memory). Where the machine cannot run a node (not root, no overlay,
//! no network namespaces) the call prints one line saying why and returns `None`; the test then
//! returns early. Everything started here goes away when the test process exits, however it
//! exits (see [`netns`]).
//!
//! Machine quirks solved here (found in `../shared/reference/real-node/`): no `CAP_SYS_RESOURCE`
//! in the bounding set (containerd's `restrict_oom_score_adj`), cgroup v1 (`failCgroupV1: false`),
//! a locally built pause image, FlexVolume directories kept off the host's disk.

pub mod netns;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::sync::OnceCell;

use super::{
    control_plane::{ControlPlane, NODE_NAME, launch},
    oci::{Entry, OciLayout},
    repo_path,
};
use netns::{NODE_IP, NetNs, POD_CIDR};

/// The control plane with one Ready node, shared by the tests of one binary.
pub struct NodeCluster {
    pub cp: ControlPlane,
    pub ns: NetNs,
    /// From the first call to the node being Ready, DNS and Services working.
    pub started_in: Duration,
}

static NODE_CLUSTER: OnceCell<Result<NodeCluster, String>> = OnceCell::const_new();

/// The control plane with a node, started on first use; `None` (after one line on stderr saying
/// why) on a machine that cannot run a node. If it cannot start on a machine that should, every
/// test fails with the first attempt's message.
pub async fn control_plane_with_node() -> Option<&'static NodeCluster> {
    if let Some(why) = netns::unsupported() {
        eprintln!("skipping: this machine cannot run a test node: {why}");
        return None;
    }
    use futures::FutureExt;
    let started = NODE_CLUSTER
        .get_or_init(|| async {
            std::panic::AssertUnwindSafe(NodeCluster::start()).catch_unwind().await.map_err(super::panic_message)
        })
        .await;
    match started {
        Ok(cluster) => Some(cluster),
        Err(message) => panic!("the node did not start: {message}"),
    }
}

/// `name:port` hosts whose registries containerd reaches over plain HTTP.
const CERTS_D: &str = "containerd/certs.d";

impl NodeCluster {
    async fn start() -> NodeCluster {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-control-plane-{}-", std::process::id()))
            .tempdir()
            .expect("creating the node's temp dir")
            .keep();
        let ns = NetNs::create(&dir).unwrap_or_else(|e| panic!("{e}"));
        let cp = ControlPlane::start_in(dir.clone(), Some(&ns)).await;
        let bins = cp.bin_dir.clone();
        let client = cp.client().await;

        // The kubelet's identity, system:node:<name> in system:nodes: the API server authorizes
        // with RBAC only (no Node authorizer), so bind the built-in role to the group.
        run(cp
            .kubectl()
            .args(["create", "clusterrolebinding", "berth-test-nodes", "--clusterrole=system:node"])
            .args(["--group=system:nodes"]));
        let inner = cp.inner_kubeconfig.display().to_string();
        cp.adopt(launch(
            Some(&ns),
            "kube-scheduler",
            &bins.join("kube-scheduler"),
            &[
                format!("--kubeconfig={inner}"),
                format!("--authentication-kubeconfig={inner}"),
                format!("--authorization-kubeconfig={inner}"),
                "--leader-elect=false".into(),
                "--secure-port=10259".into(),
                "--bind-address=127.0.0.1".into(),
                "--v=1".into(),
            ],
            &dir.join("kube-scheduler.log"),
        ));

        let pause = build_pause(&dir);
        write_containerd_config(&dir);
        cp.adopt(launch(
            Some(&ns),
            "containerd",
            Path::new("/usr/bin/containerd"),
            &["--config".into(), dir.join("containerd/config.toml").display().to_string()],
            &dir.join("containerd.log"),
        ));
        let cluster = NodeCluster { cp, ns, started_in: Duration::ZERO };
        cluster
            .wait_for("containerd", Duration::from_secs(30), || {
                cluster.ctr(&["version"]).status().is_ok_and(|s| s.success())
            })
            .await;
        cluster.import_image(&pause, "1", "localhost/berth-pause:1");

        write_kubelet_config(&dir);
        cluster.cp.adopt(launch(
            Some(&cluster.ns),
            "kubelet",
            &bins.join("kubelet"),
            &[
                format!("--config={}", dir.join("kubelet.yaml").display()),
                format!("--kubeconfig={}", dir.join("node.kubeconfig").display()),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={NODE_IP}"),
                "--v=1".into(),
            ],
            &dir.join("kubelet.log"),
        ));
        std::fs::write(
            dir.join("kube-proxy.yaml"),
            format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                 clientConnection: {{kubeconfig: {inner}}}\nmode: iptables\nhostnameOverride: {NODE_NAME}\n\
                 clusterCIDR: {POD_CIDR}\n\
                 # sysctls of the host's conntrack table are not ours to change\n\
                 conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}\n\
                 metricsBindAddress: 127.0.0.1:10249\nhealthzBindAddress: 127.0.0.1:10256\n"
            ),
        )
        .unwrap();
        cluster.cp.adopt(launch(
            Some(&cluster.ns),
            "kube-proxy",
            &bins.join("kube-proxy"),
            &[format!("--config={}", dir.join("kube-proxy.yaml").display()), "--v=1".into()],
            &dir.join("kube-proxy.log"),
        ));
        std::fs::write(
            dir.join("Corefile"),
            format!(
                ".:53 {{\n  errors\n  ready 127.0.0.1:8181\n  kubernetes cluster.local in-addr.arpa ip6.arpa {{\n    \
                 kubeconfig {inner} berth-test\n    pods insecure\n    fallthrough in-addr.arpa ip6.arpa\n  }}\n  cache 5\n}}\n"
            ),
        )
        .unwrap();
        cluster.cp.adopt(launch(
            Some(&cluster.ns),
            "coredns",
            &coredns_binary(),
            &["-conf".into(), dir.join("Corefile").display().to_string()],
            &dir.join("coredns.log"),
        ));

        let nodes = Api::<Node>::all(client);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            cluster.cp.assert_running();
            let ready = nodes.get_opt(NODE_NAME).await.ok().flatten().is_some_and(|n| {
                let conditions = n.status.and_then(|s| s.conditions).unwrap_or_default();
                let ready = conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
                let tainted =
                    n.spec.and_then(|s| s.taints).unwrap_or_default().iter().any(|t| t.effect == "NoSchedule");
                ready && !tainted
            });
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {NODE_NAME} not Ready in 120 s; kubelet log:\n{}",
                super::process::log_tail(&dir.join("kubelet.log"), 4000)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        cluster
            .wait_for("CoreDNS ready", Duration::from_secs(60), || {
                cluster.ns.net_command("bash").args(["-c", "exec 3<>/dev/tcp/127.0.0.1/8181 && printf 'GET /ready HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]).status().is_ok_and(|s| s.success())
            })
            .await;
        let started_in = started.elapsed();
        eprintln!(
            "node {NODE_NAME} Ready with DNS and Services in {:.1}s (files in {})",
            started_in.as_secs_f64(),
            dir.display()
        );
        NodeCluster { started_in, ..cluster }
    }

    async fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !check() {
            self.cp.assert_running();
            assert!(Instant::now() < deadline, "{what}: not reached in {timeout:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `ctr` against the node's containerd, in its `k8s.io` namespace.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut cmd = self.ns.command("ctr");
        cmd.args(["--address", "/run/containerd/containerd.sock", "-n", "k8s.io"]).args(args);
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        cmd
    }

    /// Loads the image tagged `tag` in an OCI layout into the node's containerd as `name`, as if
    /// it had been pulled (what `ctr images import` does for images a node is given).
    pub fn import_image(&self, layout: &Path, tag: &str, name: &str) {
        let archive = self.ns.dir.join(format!("image-{}.tar", name.replace(['/', ':'], "_")));
        let _ = std::fs::remove_file(&archive);
        run(Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker-archive:{}:{name}", archive.display())));
        run(self
            .ns
            .command("ctr")
            .args(["--address", "/run/containerd/containerd.sock", "-n", "k8s.io", "images", "import"])
            .arg(&archive));
    }

    /// Lets containerd reach the registry at `host` (`name:port`, as image references name it)
    /// over plain HTTP. containerd reads these files on every pull.
    pub fn allow_http_registry(&self, host: &str) {
        let dir = self.ns.dir.join(CERTS_D).join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("hosts.toml"),
            format!("server = \"http://{host}\"\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        )
        .unwrap();
    }

    /// skopeo in the node's network (it reaches node ports and Service addresses as a node does).
    pub fn skopeo(&self) -> Command {
        self.ns.net_command("skopeo")
    }

    /// Memory of a pod: charged to its cgroup now and at its peak (cgroup v1
    /// `memory.usage_in_bytes`, `memory.max_usage_in_bytes`, page cache included), and the resident
    /// set of its processes now (`VmRSS`), in bytes.
    pub fn pod_memory(&self, pod_uid: &str) -> Option<PodMemory> {
        let pod = format!("pod{pod_uid}");
        for qos in ["", "burstable/", "besteffort/"] {
            let dir = PathBuf::from(format!("/sys/fs/cgroup/memory/kubepods/{qos}{pod}"));
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok()?.trim().parse().ok();
            if let (Some(now), Some(peak)) = (read("memory.usage_in_bytes"), read("memory.max_usage_in_bytes")) {
                let mut rss = 0;
                for procs in
                    std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.path().join("cgroup.procs"))
                {
                    for pid in std::fs::read_to_string(procs).unwrap_or_default().lines() {
                        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                        let kib: u64 = status
                            .lines()
                            .find(|l| l.starts_with("VmRSS:"))
                            .and_then(|l| l.split_whitespace().nth(1))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        rss += kib * 1024;
                    }
                }
                return Some(PodMemory { cgroup: now, cgroup_peak: peak, rss });
            }
        }
        None
    }

    /// The last `max` bytes of a node component's log (`kubelet`, `containerd`, ...).
    pub fn log_tail(&self, component: &str, max: usize) -> String {
        super::process::log_tail(&self.ns.dir.join(format!("{component}.log")), max)
    }
}

/// See [`NodeCluster::pod_memory`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PodMemory {
    pub cgroup: u64,
    pub cgroup_peak: u64,
    pub rss: u64,
}

impl std::fmt::Display for PodMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / 1048576.0;
        write!(
            f,
            "cgroup {:.1} MiB (peak {:.1} MiB), RSS {:.1} MiB",
            mib(self.cgroup),
            mib(self.cgroup_peak),
            mib(self.rss)
        )
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sandbox image: `pause.c` built static, in a one-layer OCI layout (tag `1`).
fn build_pause(dir: &Path) -> PathBuf {
    let binary = dir.join("pause");
    run(Command::new("gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&binary)
        .arg(repo_path("tests/support/node/pause.c")));
    let mut layout = OciLayout::default();
    let content = std::fs::read(&binary).unwrap();
    layout.add_runnable(
        "1",
        &[Entry::File { path: "pause".into(), mode: 0o755, content }],
        &["/pause"],
        Some("65535:65535"),
    );
    // The layout's temp dir would go with `layout`; keep a copy where the node's files are.
    let kept = dir.join("pause-oci");
    run(Command::new("cp").arg("-r").arg(layout.path()).arg(&kept));
    kept
}

fn write_containerd_config(dir: &Path) {
    std::fs::create_dir_all(dir.join(CERTS_D)).unwrap();
    std::fs::create_dir_all(dir.join("cni/net.d")).unwrap();
    std::fs::write(
        dir.join("containerd/config.toml"),
        format!(
            r#"version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/berth-pause:1"
  # Machines whose bounding set lacks CAP_SYS_RESOURCE cannot lower oom_score_adj below 0:
  # the sandbox's -998 made runc fail ("can't get final child's PID from pipe: EOF"). Clamp
  # scores to containerd's own; harmless where the capability exists.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
"#,
            cni = dir.join("cni/net.d").display(),
            certs = dir.join(CERTS_D).display(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("cni/net.d/10-berth.conflist"),
        format!(
            r#"{{"cniVersion": "0.4.0", "name": "berth-test", "plugins": [
  {{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{POD_CIDR}", "rangeStart": "10.88.1.0", "gateway": "{NODE_IP}"}}]],
            "routes": [{{"dst": "0.0.0.0/0"}}], "dataDir": "/var/lib/cni/networks"}}}},
  {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
]}}"#
        ),
    )
    .unwrap();
}

fn write_kubelet_config(dir: &Path) {
    std::fs::write(
        dir.join("kubelet.yaml"),
        format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 machines: kubelet 1.35+ refuses v1 unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication: {{anonymous: {{enabled: false}}, webhook: {{enabled: false}}, x509: {{clientCAFile: {ca}}}}}
authorization: {{mode: AlwaysAllow}}
clusterDNS: [{NODE_IP}]
clusterDomain: cluster.local
failSwapOn: false
resolvConf: /etc/resolv.conf
serializeImagePulls: false
evictionHard: {{memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 2s
syncFrequency: 5s
# Its default, /usr/libexec/kubernetes/..., would be created on the host's disk.
volumePluginDir: {plugins}
"#,
            ca = dir.join("ca.pem").display(),
            plugins = dir.join("kubelet-plugins").display(),
        ),
    )
    .unwrap();
}

/// CoreDNS: `$BERTH_COREDNS_BIN_DIR/coredns`, or what `tests/tools/build-coredns.sh` builds.
fn coredns_binary() -> PathBuf {
    if let Ok(dir) = std::env::var("BERTH_COREDNS_BIN_DIR") {
        return PathBuf::from(dir).join("coredns");
    }
    let script = repo_path("tests/tools/build-coredns.sh");
    let out =
        Command::new("bash").arg(&script).output().unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("coredns")
}

/// A runnable image for workloads: the static busybox from Debian's busybox-static (sh, sleep,
/// cat, wget, nslookup...) and `/etc/version` holding `version`, running `cmd`. The same
/// arguments give the same digest.
pub fn busybox_image(layout: &mut OciLayout, tag: &str, version: &str, cmd: &[&str]) -> super::oci::Descriptor {
    let busybox = std::fs::read("/bin/busybox").expect("reading /bin/busybox (Debian's busybox-static)");
    let mut entries = vec![
        Entry::Dir { path: "bin".into(), mode: 0o755 },
        Entry::File { path: "bin/busybox".into(), mode: 0o755, content: busybox },
        Entry::Dir { path: "etc".into(), mode: 0o755 },
        Entry::File { path: "etc/version".into(), mode: 0o644, content: format!("{version}\n").into_bytes() },
        Entry::Dir { path: "tmp".into(), mode: 0o1777 },
    ];
    for applet in ["sh", "sleep", "cat", "wget", "nslookup", "echo", "ls", "id", "nc", "httpd", "true", "false"] {
        entries.push(Entry::Symlink { path: format!("bin/{applet}"), target: "busybox".into() });
    }
    layout.add_runnable(tag, &entries, cmd, None)
}
