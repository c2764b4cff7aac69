//! berth itself, run as the user runs it: the `berth run` binary against the test control plane.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use super::{ControlPlane, process::Server};

pub struct Berth {
    pub port: u16,
    args: Vec<String>,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
    server: Option<Server>,
    starts: u32,
}

impl Berth {
    /// Starts `berth run` on `port` (reserve it with `free_port()` first when the registry must
    /// know where to send events), scoped to `namespace` and to Registry objects labelled
    /// `berth.dev/test=<namespace>`, plus `extra` arguments.
    pub async fn start(cp: &ControlPlane, port: u16, namespace: &str, extra: &[&str]) -> Berth {
        Self::start_as(cp, port, namespace, extra, cp.kubeconfig.clone()).await
    }

    /// Like `start`, with another identity: a kubeconfig for a ServiceAccount, say, to prove
    /// that its RBAC is enough.
    pub async fn start_as(
        _cp: &ControlPlane,
        port: u16,
        namespace: &str,
        extra: &[&str],
        kubeconfig: PathBuf,
    ) -> Berth {
        let mut args = vec![
            "run".to_string(),
            "--http-addr".into(),
            format!("127.0.0.1:{port}"),
            "--namespace".into(),
            namespace.to_string(),
            "--registry-selector".into(),
            format!("berth.dev/test={namespace}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut berth = Berth {
            port,
            args,
            kubeconfig,
            dir: tempfile::Builder::new().prefix("berth-operator-").tempdir().unwrap(),
            server: None,
            starts: 0,
        };
        berth.launch().await;
        berth
    }

    async fn launch(&mut self) {
        self.starts += 1;
        let mut args = self.args.clone();
        args.push("--kubeconfig".into());
        args.push(self.kubeconfig.display().to_string());
        // BERTH_TEST_LOGS=<dir> keeps berth's logs after the test (with RUST_LOG, which berth
        // inherits, for debugging).
        let dir =
            std::env::var_os("BERTH_TEST_LOGS").map(PathBuf::from).unwrap_or_else(|| self.dir.path().to_path_buf());
        let log = dir.join(format!("berth-{}-{}-{}.log", self.port, std::process::id(), self.starts));
        // Tests and benches get the binary from cargo; the demo (an example) names it in BERTH_BIN.
        let bin = std::env::var_os("BERTH_BIN")
            .map(PathBuf::from)
            .or_else(|| option_env!("CARGO_BIN_EXE_berth").map(PathBuf::from))
            .expect("set BERTH_BIN to the berth binary");
        let server = Server::start("berth", &bin, &args, &log);
        self.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        loop {
            assert!(self.server.as_mut().unwrap().running(), "berth exited:\n{}", self.log_tail());
            if let Ok(r) = http.get(format!("{}/readyz", self.url())).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "berth not ready after 30s:\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops berth (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }

    /// Kills berth with SIGKILL: no clean shutdown, no Lease released.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
        self.stop();
    }

    /// Whether berth is still running.
    pub fn running(&mut self) -> bool {
        self.server.as_mut().is_some_and(|s| s.running())
    }

    /// Stops berth (SIGTERM) and starts it again with the same arguments.
    pub async fn restart(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
        self.launch().await;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where a registry sends its notifications for Registry object `registry`.
    pub fn events_url(&self, registry: &str) -> String {
        format!("{}/events/registry/{registry}", self.url())
    }

    /// berth's resident memory in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.server.as_ref()?.rss_kib()
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref()?.pid()
    }

    /// CPU time berth has used so far (user + system, seconds), from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    /// One sample from berth's /metrics: the value of the first line starting with `prefix`.
    pub async fn metric(&self, prefix: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url())).await.unwrap().text().await.unwrap();
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn log_tail(&self) -> String {
        self.server.as_ref().map(|s| s.log_tail(6000)).unwrap_or_default()
    }
}
