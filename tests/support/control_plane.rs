//! One real control plane per test binary: etcd (from `etcd-bin-vendored`), kube-apiserver and
//! kube-controller-manager (built from the pinned `k8s.io/kubernetes` module by
//! `tests/tools/build-control-plane.sh`). Each test gets its own namespace.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config,
    api::{ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::sync::OnceCell;

use super::{
    free_port,
    node::netns::{NODE_IP, NetNs},
    process::Server,
    repo_path, unique_name,
};

/// The shared control plane. Its servers stop when the test process exits.
pub struct ControlPlane {
    /// Holds certificates, kubeconfig, etcd data and the servers' logs. Left in place after the
    /// run (a static is never dropped) so that a failure can be inspected.
    pub dir: PathBuf,
    /// Admin kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// PEM of the CA that signs the API server's serving certificate and the client certificates.
    pub ca_file: PathBuf,
    /// The ServiceAccount token issuer (`--service-account-issuer`).
    pub service_account_issuer: String,
    /// The Kubernetes version the binaries were built from, e.g. `v1.36.3`.
    pub version: String,
    /// Where kube-apiserver, kube-controller-manager and kubectl are.
    pub bin_dir: PathBuf,
    /// With a node: an admin kubeconfig for the node's components, which reach the API server
    /// inside the node's network namespace (`https://127.0.0.1:6443` there).
    pub inner_kubeconfig: PathBuf,
    servers: Mutex<Vec<Server>>,
    crds: OnceCell<()>,
}

static CONTROL_PLANE: OnceCell<Result<ControlPlane, String>> = OnceCell::const_new();

/// The control plane of this test binary, started on first use (about 15 s). If it cannot start,
/// every test fails with the first attempt's message instead of trying again.
pub async fn control_plane() -> &'static ControlPlane {
    use futures::FutureExt;
    let started = CONTROL_PLANE
        .get_or_init(|| async {
            std::panic::AssertUnwindSafe(ControlPlane::start()).catch_unwind().await.map_err(super::panic_message)
        })
        .await;
    match started {
        Ok(cp) => cp,
        Err(message) => panic!("the control plane did not start: {message}"),
    }
}

/// A namespace made for one test.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    /// Opts the namespace in to berth's rollouts (label `berth.dev/rollouts: enabled`), or out.
    pub async fn enable_rollouts(&self, enabled: bool) {
        let value = if enabled { serde_json::json!("enabled") } else { serde_json::Value::Null };
        let patch = serde_json::json!({"metadata": {"labels": {"berth.dev/rollouts": value}}});
        Api::<Namespace>::all(self.client.clone())
            .patch(&self.name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(patch))
            .await
            .unwrap_or_else(|e| panic!("labelling namespace {}: {e}", self.name));
    }
}

/// Starts `bin args...` on the host, or inside the node's namespaces.
pub(crate) fn launch(netns: Option<&NetNs>, name: &str, bin: &Path, args: &[String], log: &Path) -> Server {
    match netns {
        None => Server::start(name, bin, args, log),
        Some(ns) => {
            let (bin, args) = ns.wrap(bin, args);
            Server::start(name, &bin, &args, log)
        }
    }
}

impl ControlPlane {
    async fn start() -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-control-plane-{}-", std::process::id()))
            .tempdir()
            .expect("creating the control plane's temp dir")
            .keep();
        ControlPlane::start_in(dir, None).await
    }

    /// The control plane in `dir`; with `netns`, its servers run inside the node's namespaces
    /// (the API server on every address there, advertised at the node's address, so that pods
    /// reach it through the `kubernetes` Service), reached from the test process through a
    /// forwarded port.
    pub(crate) async fn start_in(dir: PathBuf, netns: Option<&NetNs>) -> ControlPlane {
        let started = Instant::now();
        let bins = control_plane_binaries();
        let version = bins
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("kubernetes-"))
            .unwrap_or("unknown")
            .to_string();
        remove_stale_dirs();
        let pki = write_pki(&dir, netns.is_some());

        let mut servers = Vec::new();
        let etcd_port = free_port();
        let etcd_peer_port = free_port();
        let etcd_bin = etcd_bin_vendored::etcd_bin_path().expect("etcd-bin-vendored has no etcd for this platform");
        let etcd = launch(
            netns,
            "etcd",
            etcd_bin,
            &[
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            &dir.join("etcd.log"),
        );
        servers.push(etcd);

        let api_port = if netns.is_some() { 6443 } else { free_port() };
        let inner_url = format!("https://127.0.0.1:{api_port}");
        let server_url = match netns {
            None => inner_url.clone(),
            Some(ns) => format!("https://127.0.0.1:{}", ns.forward(format!("127.0.0.1:{api_port}").parse().unwrap())),
        };
        let issuer = server_url.clone();
        let (bind, advertise) = if netns.is_some() { ("0.0.0.0", NODE_IP) } else { ("127.0.0.1", "127.0.0.1") };
        let mut node_flags = Vec::new();
        if netns.is_some() {
            node_flags = vec![
                format!("--kubelet-client-certificate={}", pki.admin_cert.display()),
                format!("--kubelet-client-key={}", pki.admin_key.display()),
                "--kubelet-preferred-address-types=InternalIP".to_string(),
            ];
        }
        let apiserver = launch(
            netns,
            "kube-apiserver",
            &bins.join("kube-apiserver"),
            &[
                format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
                format!("--secure-port={api_port}"),
                format!("--bind-address={bind}"),
                format!("--advertise-address={advertise}"),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", pki.serving_cert.display()),
                format!("--tls-private-key-file={}", pki.serving_key.display()),
                format!("--client-ca-file={}", pki.ca_cert.display()),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=RBAC".into(),
                "--allow-privileged=true".into(),
                format!("--service-account-issuer={issuer}"),
                format!("--service-account-key-file={}", pki.sa_public_key.display()),
                format!("--service-account-signing-key-file={}", pki.sa_key.display()),
                "--enable-priority-and-fairness=false".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ]
            .into_iter()
            .chain(node_flags)
            .collect::<Vec<_>>(),
            &dir.join("kube-apiserver.log"),
        );
        servers.push(apiserver);

        let kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&kubeconfig, &server_url, &pki.ca_cert, &pki.admin_cert, &pki.admin_key);
        let inner_kubeconfig = dir.join("admin-inner.kubeconfig");
        write_kubeconfig(&inner_kubeconfig, &inner_url, &pki.ca_cert, &pki.admin_cert, &pki.admin_key);
        if let Some((cert, key)) = &pki.node {
            write_kubeconfig(&dir.join("node.kubeconfig"), &inner_url, &pki.ca_cert, cert, key);
        }

        let cp = ControlPlane {
            dir: dir.clone(),
            kubeconfig: kubeconfig.clone(),
            server: server_url,
            ca_file: pki.ca_cert.clone(),
            service_account_issuer: issuer,
            version,
            bin_dir: bins.clone(),
            inner_kubeconfig: inner_kubeconfig.clone(),
            servers: Mutex::new(servers),
            crds: OnceCell::new(),
        };
        cp.wait_ready("kube-apiserver", Duration::from_secs(120)).await;

        let kcm_port = free_port();
        let kcm = launch(
            netns,
            "kube-controller-manager",
            &bins.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", inner_kubeconfig.display()),
                format!("--authentication-kubeconfig={}", inner_kubeconfig.display()),
                format!("--authorization-kubeconfig={}", inner_kubeconfig.display()),
                // Its default, /usr/libexec/kubernetes/..., would be created on the host's disk.
                format!("--flex-volume-plugin-dir={}", dir.join("flexvolume").display()),
                format!("--service-account-private-key-file={}", pki.sa_key.display()),
                format!("--root-ca-file={}", pki.ca_cert.display()),
                "--use-service-account-credentials=true".into(),
                "--leader-elect=false".into(),
                "--controllers=*".into(),
                format!("--secure-port={kcm_port}"),
                "--bind-address=127.0.0.1".into(),
                format!("--cert-dir={}", dir.join("kcm-certs").display()),
                "--v=1".into(),
            ],
            &dir.join("kube-controller-manager.log"),
        );
        cp.servers.lock().unwrap().push(kcm);
        eprintln!(
            "control plane {} ready at {} in {:.1}s (files in {})",
            cp.version,
            cp.server,
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        cp
    }

    /// Polls `/readyz` until it answers `ok`, failing with the servers' logs if it never does.
    async fn wait_ready(&self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            let last = match self.client().await.request_text(http::Request::get("/readyz").body(vec![]).unwrap()).await
            {
                Ok(body) if body.trim() == "ok" => return,
                Ok(body) => body,
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                panic!("{what} not ready after {timeout:?}: {last}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Adds a server whose life is the control plane's (a node's components).
    pub(crate) fn adopt(&self, server: Server) {
        self.servers.lock().unwrap().push(server);
    }

    /// Fails the test with the server's log if one of the servers exited.
    pub fn assert_running(&self) {
        let mut servers = self.servers.lock().unwrap();
        for s in servers.iter_mut() {
            if !s.running() {
                panic!("{} exited during the test run:\n{}", s.name(), s.log_tail(4000));
            }
        }
    }

    fn logs(&self) -> String {
        let servers = self.servers.lock().unwrap();
        servers.iter().map(|s| format!("--- {} ---\n{}\n", s.name(), s.log_tail(3000))).collect()
    }

    /// An admin client. Build one per test: a client belongs to the test's own runtime.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("reading the admin kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("loading the admin kubeconfig");
        Client::try_from(config).expect("building the admin client")
    }

    /// A fresh namespace for one test, named after it.
    pub async fn namespace(&self, test: &str) -> TestNamespace {
        let client = self.client().await;
        let name = unique_name(&format!("t-{}", test.replace('_', "-")));
        let ns =
            Namespace { metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() }, ..Default::default() };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        TestNamespace { name, client }
    }

    /// `kubectl` (built from the same Kubernetes version as the server) with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Applies the committed `crds/*.yaml` (what users apply) once per test binary and waits
    /// until every CRD is Established.
    pub async fn install_crds(&self) {
        self.crds.get_or_init(|| async { install_crd_files(self.client().await, &repo_path("crds")).await }).await;
    }
}

async fn install_crd_files(client: Client, dir: &Path) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    use kube::runtime::wait::{await_condition, conditions};

    let api = Api::<CustomResourceDefinition>::all(client);
    let mut names = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        let name = crd.metadata.name.clone().expect("CRD without a name");
        api.patch(&name, &PatchParams::apply("berth-tests").force(), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("applying {}: {e}", path.display()));
        names.push(name);
    }
    for name in names {
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
        .unwrap_or_else(|e| panic!("watching CRD {name}: {e}"));
    }
}

/// Control-plane directories of test processes that have exited (their servers stopped with them).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("berth-control-plane-").and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The directory holding kube-apiserver, kube-controller-manager and kubectl: `$BERTH_K8S_BIN_DIR`, or
/// what `tests/tools/build-control-plane.sh` prints (it builds them once per machine).
fn control_plane_binaries() -> PathBuf {
    if let Ok(dir) = std::env::var("BERTH_K8S_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let script = repo_path("tests/tools/build-control-plane.sh");
    let out =
        Command::new("bash").arg(&script).output().unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct Pki {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    sa_key: PathBuf,
    sa_public_key: PathBuf,
    /// The kubelet's client certificate and key (`system:node:<name>` in `system:nodes`).
    node: Option<(PathBuf, PathBuf)>,
}

/// The node's name.
pub const NODE_NAME: &str = "berth-node";

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, cert: &Path, key: &Path) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: berth-test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: berth-test\n  context:\n    cluster: berth-test\n    user: admin\ncurrent-context: berth-test\n",
            ca = ca.display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A CA, the API server's serving certificate (127.0.0.1, localhost), an admin client certificate
/// in `system:masters`, and the ServiceAccount signing key. With a node also the names pods reach
/// the API server by (the node address, the `kubernetes` Service) and the kubelet's certificate.
fn write_pki(dir: &Path, node: bool) -> Pki {
    let write = |name: &str, pem: &str| {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "berth-test-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let serving_key = KeyPair::generate().unwrap();
    let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    if node {
        names.extend(
            [NODE_IP, "10.0.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
                .into_iter()
                .chain(["kubernetes.default.svc.cluster.local"])
                .map(String::from),
        );
    }
    let mut serving = CertificateParams::new(names).unwrap();
    serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &ca).unwrap();

    let admin_key = KeyPair::generate().unwrap();
    let mut admin = CertificateParams::new(Vec::<String>::new()).unwrap();
    admin.distinguished_name.push(DnType::CommonName, "berth-test-admin");
    admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &ca).unwrap();

    let node = node.then(|| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("system:node:{NODE_NAME}"));
        params.distinguished_name.push(DnType::OrganizationName, "system:nodes");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca).unwrap();
        (write("node.pem", &cert.pem()), write("node-key.pem", &key.serialize_pem()))
    });
    let sa_key = KeyPair::generate().unwrap();
    Pki {
        node,
        ca_cert: write("ca.pem", &ca.pem()),
        serving_cert: write("apiserver.pem", &serving_cert.pem()),
        serving_key: write("apiserver-key.pem", &serving_key.serialize_pem()),
        admin_cert: write("admin.pem", &admin_cert.pem()),
        admin_key: write("admin-key.pem", &admin_key.serialize_pem()),
        sa_key: write("sa-key.pem", &sa_key.serialize_pem()),
        sa_public_key: write("sa-pub.pem", &sa_key.public_key_pem()),
    }
}
