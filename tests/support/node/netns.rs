//! The private network and mount namespace a test node lives in, and the way in from the test
//! process (which stays in the host's namespaces).
//!
//! A holder process (`unshare -m -n bash HOLDER`) makes the namespaces: inside them it binds a
//! directory of ours over `/var` and a tmpfs over `/run` (the paths kubelet, containerd and the CNI
//! plugins hard-code), creates the `cni0` bridge with the node address, and then waits on a pipe
//! from the test process. When the test process exits, however it exits, the pipe closes and the
//! holder kills every process of the namespace and every container in the `kubepods` cgroups,
//! waits until they are gone and removes those cgroups (cgroup v1 is not namespaced). The mounts
//! and the network namespace die with the last process in them. Nothing is written to the host's
//! network, mount table or `/etc`.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

/// The node's address: the `cni0` bridge inside the namespace, gateway of the pod network.
pub const NODE_IP: &str = "10.88.0.1";
/// The pod network (host-local IPAM on `cni0`).
pub const POD_CIDR: &str = "10.88.0.0/16";

const HOLDER: &str = r#"set -eu
dir=$1
# Ctrl-C reaches the whole process group: the holder outlives the test process to clean up.
trap '' INT TERM HUP
mkdir -p "$dir/var/lib" "$dir/var/log" "$dir/var/tmp"
ln -sfn /run "$dir/var/run"
mount --bind "$dir/var" /var
mount -t tmpfs -o mode=755 berth-node-run /run
mount --make-rshared /
ip link set lo up
ip link add cni0 type bridge
ip addr add 10.88.0.1/16 dev cni0
ip link set cni0 up
# kubelet and the API server need a default route to pick a host address; nothing is behind it.
ip route add default via 10.88.255.254 dev cni0 onlink
sysctl -qw net.ipv4.ip_forward=1
# Bridged pod traffic through iptables, as kube-proxy's Service rules need (per namespace).
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
echo ready
read -r _ignored || true

me=$$
# Every process in our mount namespace, and every container of the node's pods, except this
# script and the helpers it forks (its own process group: it runs under setsid). Builtins only.
ours() {
  for p in /proc/[0-9]*; do
    [ "$p/ns/mnt" -ef "/proc/$me/ns/mnt" ] || continue
    read -r stat < "$p/stat" || continue
    set -- ${stat##*) }
    [ "$3" = "$me" ] || echo "${p#/proc/}"
  done
  for f in /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
    /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs; do
    [ -f "$f" ] && while read -r p; do echo "$p"; done < "$f"
  done
  return 0
}
left=$(ours | sort -u)
[ -z "$left" ] || kill -TERM $left 2>/dev/null || true
for _ in 1 2 3 4 5 6 7 8 9 10; do
  left=$(ours | sort -u)
  [ -z "$left" ] && break
  sleep 0.3
done
for _ in $(seq 50); do
  left=$(ours | sort -u)
  [ -z "$left" ] && break
  kill -KILL $left 2>/dev/null || true
  sleep 0.2
done
for h in /sys/fs/cgroup/*/kubepods; do
  [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true
done
echo "node namespace cleaned up" >&2
"#;

/// The namespaces, held for the life of the test process.
pub struct NetNs {
    /// The holder's pid (`nsenter -t` target).
    pub pid: u32,
    /// The directory bound over `/var` inside, and everything else of the node.
    pub dir: PathBuf,
    _holder: Child,
    _pipe: ChildStdin,
}

impl NetNs {
    /// Makes the namespaces; the node's files live under `dir`.
    pub fn create(dir: &Path) -> Result<NetNs, String> {
        let log = File::create(dir.join("netns-holder.log")).map_err(|e| e.to_string())?;
        // setsid: a process group of its own, which the clean-up tells apart from what it kills.
        let mut holder = Command::new("setsid")
            .args(["unshare", "-m", "-n", "--propagation", "private", "bash", "-c", HOLDER, "holder"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting unshare: {e}"))?;
        let pipe = holder.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            let _ = holder.wait();
            let log = std::fs::read_to_string(dir.join("netns-holder.log")).unwrap_or_default();
            return Err(format!("the node namespace holder failed: {log}"));
        }
        Ok(NetNs { pid: holder.id(), dir: dir.to_path_buf(), _holder: holder, _pipe: pipe })
    }

    /// `program` run inside both namespaces (what node components need).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t").arg(self.pid.to_string()).args(["-m", "-n", "--"]).arg(program);
        cmd
    }

    /// `program` run in the node's network namespace only (clients: skopeo, curl), seeing the
    /// host's files.
    pub fn net_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t").arg(self.pid.to_string()).args(["-n", "--"]).arg(program);
        cmd
    }

    /// The arguments that run `bin args...` inside both namespaces, for `Server::start`.
    pub fn wrap(&self, bin: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
        let mut wrapped = vec!["-t".to_string(), self.pid.to_string(), "-m".into(), "-n".into(), "--".into()];
        wrapped.push(bin.display().to_string());
        wrapped.extend(args.iter().cloned());
        (PathBuf::from("/usr/bin/nsenter"), wrapped)
    }

    /// A port on the host's 127.0.0.1 whose connections are passed to `target` inside the node's
    /// network namespace, for as long as the test process runs. One thread accepts (it moved
    /// itself into the namespace after binding, so the sockets it connects are made there), two
    /// copy each connection.
    pub fn forward(&self, target: SocketAddr) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a forwarding port");
        let port = listener.local_addr().unwrap().port();
        let netns = File::open(format!("/proc/{}/ns/net", self.pid)).expect("opening the node's network namespace");
        std::thread::Builder::new()
            .name(format!("forward-{port}"))
            .spawn(move || {
                // SAFETY: setns on this thread only, with a valid namespace file descriptor.
                let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns into the node's network namespace: {}", std::io::Error::last_os_error());
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                    pipe(upstream, client);
                }
            })
            .expect("starting a forwarding thread");
        port
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// Why this machine cannot run a node, or `None` when it can: root, overlayfs, network
/// namespaces, the Debian packages.
pub fn unsupported() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (a node needs mounts, network namespaces and cgroups)".into());
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.lines().any(|l| l.trim_end().ends_with("overlay")) {
        return Some("the kernel has no overlay filesystem (containerd's snapshotter)".into());
    }
    match Command::new("unshare").args(["-n", "true"]).status() {
        Ok(s) if s.success() => {}
        _ => return Some("cannot make a network namespace (unshare -n)".into()),
    }
    if !Path::new("/sys/fs/cgroup/memory").is_dir() && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return Some("no cgroup hierarchy at /sys/fs/cgroup".into());
    }
    None
}
