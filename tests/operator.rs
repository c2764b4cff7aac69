//! `berth run` as a process: health, readiness and metrics over HTTP, clean exit on SIGTERM.

mod support;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::{control_plane, free_port};

#[tokio::test]
async fn berth_run_serves_health_readiness_metrics_and_stops_on_sigterm() {
    let cp = control_plane().await;
    cp.install_crds().await;
    let port = free_port();
    let mut berth = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--log-format", "json", "run", "--http-addr", &format!("127.0.0.1:{port}")])
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting berth");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(berth.try_wait().unwrap().is_none(), "berth exited early");
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "berth never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert!(health.status().is_success());
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("berth_ready 1"), "metrics:\n{metrics}");
    assert!(metrics.contains("# EOF"), "OpenMetrics text ends with # EOF:\n{metrics}");
    assert_eq!(http.get(format!("{base}/nope")).send().await.unwrap().status(), 404);

    let term = Command::new("kill").args(["-TERM", &berth.id().to_string()]).status().unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = berth.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "berth did not stop within 10s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut berth.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(status.success(), "berth exited with {status}:\n{logs}");
    // JSON logs: every line parses, and the shutdown was logged.
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    assert!(logs.contains("shutting down") && logs.contains("stopped"), "logs:\n{logs}");
}

#[tokio::test]
async fn berth_run_without_a_cluster_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["run", "--http-addr", "127.0.0.1:0", "--kubeconfig"])
        .arg(dir.path().join("missing.kubeconfig"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reading kubeconfig"), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
}

#[test]
fn berth_crds_prints_every_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_berth")).arg("crds").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<String> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            v["metadata"]["name"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "registries.berth.dev",
            "repositories.berth.dev",
            "lifecyclepolicies.berth.dev",
            "accesspolicies.berth.dev",
            "imagescans.berth.dev"
        ]
    );
}
