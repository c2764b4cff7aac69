//! A real CNCF Distribution registry (Debian's `docker-registry`), one per test, on a free
//! loopback port with its own storage directory. Deletion is enabled; notifications and token
//! auth are switched on by options.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::json;

use super::{free_port, process::Server};

/// Where registry events go and the shared token they carry (`Authorization: Bearer <token>`).
#[derive(Clone, Debug)]
pub struct NotificationsConfig {
    pub url: String,
    pub token: String,
}

/// The registry's `auth.token` section: berth as its token service.
#[derive(Clone, Debug)]
pub struct TokenAuthConfig {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// PEM bundle of the certificates whose keys sign tokens.
    pub root_cert_bundle: PathBuf,
}

#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    pub notifications: Option<NotificationsConfig>,
    pub token_auth: Option<TokenAuthConfig>,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// Require basic auth against this htpasswd file (bcrypt entries).
    pub htpasswd: Option<PathBuf>,
    /// Listen on this port (reserved with `free_port()`) instead of a fresh one, for a Registry
    /// object that must name the URL before the registry starts.
    pub port: Option<u16>,
    /// Serve with Distribution 3 (the version the chart's registry image pins) instead of
    /// Debian's 2.8.
    pub distribution3: bool,
}

/// The Distribution 3 binary `charts/build-image registry` builds from
/// `charts/registry-image/go.mod` and caches (`BERTH_TOOLS_CACHE`, default
/// `~/.cache/berth-tools`); built here when missing (cold: a few minutes).
pub fn distribution3() -> PathBuf {
    let go_mod = std::fs::read_to_string(super::repo_path("charts/registry-image/go.mod")).unwrap();
    let module = "github.com/distribution/distribution/v3";
    let version = go_mod
        .lines()
        .map(|l| l.trim().trim_start_matches("require").trim())
        .find_map(|l| l.strip_prefix(module).map(|v| v.trim().to_string()))
        .expect("charts/registry-image/go.mod pins Distribution");
    let cache = std::env::var_os("BERTH_TOOLS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/berth-tools"));
    let bin = cache.join(format!("distribution-{version}")).join("registry");
    if !bin.exists() {
        let out_dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(super::repo_path("charts/build-image"))
            .args(["registry", "--out"])
            .arg(out_dir.path().join("layout"))
            .output()
            .expect("running charts/build-image registry");
        assert!(out.status.success(), "charts/build-image registry: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

/// A serving certificate and key (PEM files).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

/// A CA and a serving certificate for 127.0.0.1 signed by it, written under `dir`; returns the
/// CA's PEM (what a Registry's `caBundle` holds) and the serving files.
pub fn tls_for_loopback(dir: &Path) -> (String, TlsFiles) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "berth-test-registry-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut serving = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    serving.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = serving.signed_by(&key, &ca).unwrap();
    let files = TlsFiles { certificate: dir.join("registry.pem"), key: dir.join("registry-key.pem") };
    std::fs::write(&files.certificate, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    (ca.pem(), files)
}

pub struct TestRegistry {
    /// `127.0.0.1:<port>`: the host part of image references.
    pub host: String,
    scheme: &'static str,
    pub storage: PathBuf,
    pub config: PathBuf,
    server: Server,
    dir: tempfile::TempDir,
}

impl TestRegistry {
    /// A plain registry: no auth, no notifications.
    pub async fn start() -> TestRegistry {
        Self::start_with(RegistryOptions::default()).await
    }

    pub async fn start_with(options: RegistryOptions) -> TestRegistry {
        // Storage in memory where the machine has /dev/shm: a registry commits every blob with
        // fsync, and on a busy shared disk one commit was seen taking a minute.
        let shm = std::path::Path::new("/dev/shm");
        let builder = tempfile::Builder::new().prefix("berth-registry-").to_owned();
        let dir = match shm.is_dir() {
            true => builder.tempdir_in(shm).or_else(|_| builder.tempdir()),
            false => builder.tempdir(),
        }
        .expect("registry temp dir");
        let port = options.port.unwrap_or_else(free_port);
        let host = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        let config = dir.path().join("config.yml");
        std::fs::write(&config, render_config(&host, &storage, &options)).expect("writing the registry config");
        // BERTH_TEST_LOGS=<dir> keeps the registry's log after the test, as it does berth's.
        let log = std::env::var_os("BERTH_TEST_LOGS")
            .map(|d| PathBuf::from(d).join(format!("registry-{port}-{}.log", std::process::id())))
            .unwrap_or_else(|| dir.path().join("registry.log"));
        let server = if options.distribution3 {
            // As the chart's image does: no OpenTelemetry exporter to reach.
            let bin = distribution3();
            let args = ["OTEL_TRACES_EXPORTER=none".to_string(), bin.display().to_string(), "serve".into()];
            let args: Vec<String> = args.into_iter().chain([config.display().to_string()]).collect();
            Server::start("registry", Path::new("/usr/bin/env"), &args, &log)
        } else {
            serve(&config, &log)
        };
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        let mut registry = TestRegistry { host, scheme, storage, config, server, dir };
        registry.wait_ready(Duration::from_secs(30)).await;
        registry
    }

    /// Stops the registry; its port and storage stay reserved for `start_again`.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// SIGKILL: the registry dies mid-request, as on a node failure.
    pub fn kill(&mut self) {
        if let Some(pid) = self.server.pid() {
            let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
        self.server.stop();
    }

    /// Starts the registry again on the same port with the same storage.
    pub async fn start_again(&mut self) {
        self.server = serve(&self.config, &self.dir.path().join("registry-again.log"));
        self.wait_ready(Duration::from_secs(30)).await;
    }

    /// `http://127.0.0.1:<port>`: what a Registry object's `url` holds.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }

    /// `127.0.0.1:<port>/<path>`.
    pub fn image(&self, path: &str) -> String {
        format!("{}/{path}", self.host)
    }

    pub fn log_tail(&self) -> String {
        self.server.log_tail(4000)
    }

    /// Tags many images at once over the registry API: for each tag, the manifest of `path:base`
    /// (pushed before, an OCI image manifest) with one annotation more, so each tag is a
    /// distinct image sharing the base's blobs. Registry events are sent as for any push.
    /// Returns each tag's digest, in order.
    pub async fn put_tags(&self, path: &str, base: &str, tags: &[String]) -> Vec<String> {
        use futures::{StreamExt, TryStreamExt};
        const OCI: &str = "application/vnd.oci.image.manifest.v1+json";
        let http = reqwest::Client::new();
        let manifest: serde_json::Value = http
            .get(format!("{}/v2/{path}/manifests/{base}", self.url()))
            .header("Accept", OCI)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("reading the base manifest")
            .json()
            .await
            .expect("the base manifest is JSON");
        futures::stream::iter(tags.iter().cloned())
            .map(|tag| {
                let mut m = manifest.clone();
                m["annotations"] = serde_json::json!({"dev.berth.test.tag": tag});
                let url = format!("{}/v2/{path}/manifests/{tag}", self.url());
                let http = http.clone();
                async move {
                    let r =
                        http.put(url).header("Content-Type", OCI).body(serde_json::to_vec(&m).unwrap()).send().await?;
                    let r = r.error_for_status()?;
                    Ok::<String, reqwest::Error>(
                        r.headers()["Docker-Content-Digest"].to_str().expect("a digest header").to_string(),
                    )
                }
            })
            .buffered(8)
            .try_collect()
            .await
            .expect("tagging over the registry API")
    }

    /// Deletes a manifest (and so every tag pointing at it).
    pub async fn delete_manifest(&self, path: &str, digest: &str) {
        let r = reqwest::Client::new()
            .delete(format!("{}/v2/{path}/manifests/{digest}", self.url()))
            .send()
            .await
            .expect("deleting a manifest");
        assert!(r.status().is_success(), "delete {path}@{digest}: {}", r.status());
    }

    async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        // Readiness only: the tests themselves check certificates.
        let client = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
        loop {
            assert!(self.server.running(), "docker-registry exited:\n{}", self.log_tail());
            // 200 without auth, 401 with token or basic auth: either way the API answers.
            let status = client.get(format!("{}/v2/", self.url())).send().await.map(|r| r.status());
            if let Ok(status) = status
                && (status.is_success() || status == reqwest::StatusCode::UNAUTHORIZED)
            {
                return;
            }
            assert!(Instant::now() < deadline, "docker-registry not ready after {timeout:?}:\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn serve(config: &Path, log: &Path) -> Server {
    let bin = Path::new("/usr/bin/docker-registry");
    assert!(bin.exists(), "{} is missing: install Debian's docker-registry (tests/run does)", bin.display());
    Server::start("docker-registry", bin, &["serve".to_string(), config.display().to_string()], log)
}

/// The registry's YAML configuration (JSON is valid YAML).
pub fn render_config(host: &str, storage: &Path, options: &RegistryOptions) -> String {
    let mut config = json!({
        "version": 0.1,
        "log": { "level": "info", "accesslog": { "disabled": true } },
        "storage": {
            "filesystem": { "rootdirectory": storage },
            "delete": { "enabled": true },
            "cache": { "blobdescriptor": "inmemory" },
        },
        "http": { "addr": host, "secret": "berth-test-registry-secret" },
        "health": { "storagedriver": { "enabled": false } },
    });
    if let Some(n) = &options.notifications {
        config["notifications"] = json!({
            "endpoints": [{
                "name": "berth",
                "url": n.url,
                "headers": { "Authorization": [format!("Bearer {}", n.token)] },
                "timeout": "2s",
                "threshold": 5,
                "backoff": "1s",
            }]
        });
    }
    if let Some(tls) = &options.tls {
        config["http"]["tls"] = json!({"certificate": tls.certificate, "key": tls.key});
    }
    if let Some(path) = &options.htpasswd {
        config["auth"] = json!({"htpasswd": {"realm": "berth-test", "path": path}});
    }
    if let Some(t) = &options.token_auth {
        config["auth"] = json!({
            "token": {
                "realm": t.realm,
                "service": t.service,
                "issuer": t.issuer,
                "rootcertbundle": t.root_cert_bundle,
            }
        });
    }
    serde_json::to_string_pretty(&config).unwrap()
}
