//! The test environment every berth integration test shares: a real kube-apiserver with etcd and
//! kube-controller-manager (one per test binary), a real Distribution registry (one per test),
//! skopeo as the client, and OCI image layouts to push.
//!
//! Use from a test binary with `mod support;`.
#![allow(dead_code, unused_imports)]

pub mod berth;
pub mod control_plane;
pub mod moto;
pub mod node;
pub mod oci;
pub mod process;
pub mod proxy;
pub mod registry;
pub mod scenario;
pub mod skopeo;
pub mod token;

pub use control_plane::{ControlPlane, TestNamespace, control_plane};
pub use node::{NodeCluster, control_plane_with_node};
pub use oci::OciLayout;
pub use registry::{RegistryOptions, TestRegistry};

use std::net::TcpListener;

/// A free TCP port on 127.0.0.1 (the OS picks it; it is released before it is returned). Never
/// the same port twice in one test process: tests running side by side reserve ports a while
/// before their servers bind them, and the OS may hand a just-released port out again.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port on 127.0.0.1");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A name unique within this machine for the life of the test run: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Polls `check` every 200 ms until it returns `Some`, or fails the test after `timeout` with
/// `what` and the last value seen.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if std::time::Instant::now() > deadline => {
                panic!("{what}: not true after {timeout:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// Path of a file or folder in the repository.
/// The shared scanning data (`osv-db/`, `fixtures/`): `BERTH_SCANNING_DATA`, else
/// `../shared/scanning` beside the checkout, else `/work/shared/scanning`. Missing, the test
/// fails and says so.
pub fn scanning_data() -> std::path::PathBuf {
    use std::path::{Path, PathBuf};
    let candidates = [
        std::env::var_os("BERTH_SCANNING_DATA").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/scanning")),
        Some(PathBuf::from("/work/shared/scanning")),
    ];
    candidates.into_iter().flatten().find(|p| p.join("osv-db").is_dir()).unwrap_or_else(|| {
        panic!("the scanning data (osv-db/, fixtures/) is not here: set BERTH_SCANNING_DATA to its folder")
    })
}

pub fn repo_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The message of a caught panic (`catch_unwind`), for a shared fixture that failed to start.
pub fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
