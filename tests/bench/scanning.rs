//! The offline scanner on the real fixture images and OSV archives (`shared/scanning`), beside
//! Google's osv-scanner on the same data: `cargo bench --bench scanning` prints the figures;
//! nothing here asserts timings.
//!
//! - each fixture scanned by `berth scan` (this build) and by osv-scanner (`--offline`, from an
//!   image archive), wall time, median of 5 runs each;
//! - the OSV data set: load time and memory estimate per ecosystem;
//! - matching 1,000 packages against the whole data set;
//! - the operator: a ~100 MiB image pushed to the local registry, push done to its ImageScan
//!   Complete (median of 5 pushes of distinct images), beside `berth scan` on the same image
//!   offline and the push itself.
//!
//! `cargo bench --bench scanning -- operator` (or `offline`) runs only that part.

#[path = "../support/mod.rs"]
mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use berth::scanning::{Inventory, Package, matching, osv};

const RUNS: usize = 5;

fn data() -> PathBuf {
    support::scanning_data()
}

fn median(mut d: Vec<Duration>) -> f64 {
    d.sort();
    d[d.len() / 2].as_secs_f64() * 1000.0
}

fn timed(mut cmd: Command) -> Duration {
    let start = Instant::now();
    let out = cmd.output().unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    start.elapsed()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with: cargo bench --bench scanning");
        return;
    }
    let words: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| words.is_empty() || words.iter().any(|w| name.contains(w.as_str()));
    let berth = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/berth");
    let built = Command::new("cargo").args(["build", "--release", "--bin", "berth"]).status().unwrap();
    assert!(built.success() && berth.exists());
    if wanted("offline") {
        offline(&berth);
    }
    if wanted("operator") {
        tokio::runtime::Runtime::new().unwrap().block_on(operator(&berth));
    }
}

fn offline(berth: &Path) {
    let d = data();
    let osv_scanner = std::env::var_os("BERTH_OSV_SCANNER_BIN_DIR")
        .map(|p| PathBuf::from(p).join("osv-scanner"))
        .expect("BERTH_OSV_SCANNER_BIN_DIR (source tests/tools/prepare.sh)");
    let work = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(d.join("osv-db")).unwrap() {
        let entry = entry.unwrap();
        let to = work.path().join("db/osv-scalibr").join(entry.file_name());
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(entry.path().join("all.zip"), to.join("all.zip")).unwrap();
    }
    for fixture in ["debian-bookworm", "go-binary", "python-site-packages", "npm-node-modules"] {
        let layout = d.join("fixtures").join(fixture);
        let archive = work.path().join(format!("{fixture}.tar"));
        let ok = Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci:{}", layout.display()))
            .arg(format!("docker-archive:{}:{fixture}:fixture", archive.display()))
            .status()
            .unwrap();
        assert!(ok.success());
        let ours: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let mut c = Command::new(berth);
                c.args(["scan", "--image-layout"]).arg(&layout).arg("--db").arg(d.join("osv-db"));
                timed(c)
            })
            .collect();
        let theirs: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let mut c = Command::new(&osv_scanner);
                c.args(["scan", "image", "--archive"]).arg(&archive).args(["--offline", "--local-db-path"]);
                c.arg(work.path().join("db")).args([
                    "--experimental-plugins",
                    "javascript/packagejson",
                    "--format",
                    "json",
                ]);
                timed(c)
            })
            .collect();
        println!(
            "scan {fixture}: berth scan {:.0} ms, osv-scanner {:.0} ms (median of {RUNS}; each loads only the data it needs: berth every archive, osv-scanner the ecosystems found)",
            median(ours),
            median(theirs)
        );
    }

    let start = Instant::now();
    let db = osv::Database::load_dir(&d.join("osv-db")).unwrap();
    let load = start.elapsed();
    for (ecosystem, info) in db.info() {
        println!("data {ecosystem}: {info:?}");
    }
    println!("data: all archives loaded in {:.0} ms", load.as_secs_f64() * 1000.0);

    // 1,000 packages: 400 versions of well-known Go modules, 400 of PyPI projects, 200 of lodash.
    let mut packages = Vec::new();
    let go = ["golang.org/x/net", "golang.org/x/text", "golang.org/x/crypto", "github.com/gin-gonic/gin"];
    let py = ["requests", "urllib3", "django", "flask", "jinja2", "pillow", "numpy", "pyyaml"];
    for i in 0..400 {
        packages.push(Package {
            name: go[i % go.len()].into(),
            version: format!("0.{}.{}", i / 40, i % 40),
            ecosystem: "Go".into(),
            source: None,
            location: "/app".into(),
        });
        packages.push(Package {
            name: py[i % py.len()].into(),
            version: format!("{}.{}.{}", i % 4, i / 40, i % 10),
            ecosystem: "PyPI".into(),
            source: None,
            location: "/site-packages".into(),
        });
    }
    for i in 0..200 {
        packages.push(Package {
            name: "lodash".into(),
            version: format!("4.17.{i}"),
            ecosystem: "npm".into(),
            source: None,
            location: "/node_modules".into(),
        });
    }
    let inventory = Inventory { os: None, packages, unreadable: Vec::new() };
    let times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let found = matching::findings(&inventory, &db);
            std::hint::black_box(found);
            start.elapsed()
        })
        .collect();
    let found = matching::findings(&inventory, &db).len();
    println!(
        "matching: {} packages against every archive, {found} findings: {:.1} ms (median of {RUNS})",
        inventory.packages.len(),
        median(times)
    );
}

/// A copy of the Debian fixture with one more layer: a file of `extra` random bytes (seeded, so
/// each seed is a distinct image), stored uncompressed so the image is as large as it says.
fn big_image(dir: &Path, seed: u64, extra: usize) -> PathBuf {
    use sha2::{Digest, Sha256};
    let layout = dir.join(format!("big-{seed}"));
    let fixture = data().join("fixtures/debian-bookworm");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    for entry in std::fs::read_dir(fixture.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), layout.join("blobs/sha256").join(entry.file_name())).unwrap();
    }
    std::fs::copy(fixture.join("oci-layout"), layout.join("oci-layout")).unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let put = |bytes: &[u8]| -> String {
        let digest = hex(&Sha256::digest(bytes));
        std::fs::write(layout.join("blobs/sha256").join(&digest), bytes).unwrap();
        format!("sha256:{digest}")
    };
    // The random file, in a tar.
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut content = vec![0u8; extra];
    for chunk in content.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, "opt/data.bin", content.as_slice()).unwrap();
    let layer = builder.into_inner().unwrap();
    let layer_digest = put(&layer);
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("blobs/sha256").join(&manifest_digest)).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("blobs/sha256").join(&config_digest)).unwrap()).unwrap();
    config["rootfs"]["diff_ids"].as_array_mut().unwrap().push(serde_json::json!(layer_digest));
    let config = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = serde_json::json!(put(&config));
    manifest["config"]["size"] = serde_json::json!(config.len());
    manifest["layers"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len(),
    }));
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest.len()}]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    layout
}

/// Push of a ~100 MiB image to its ImageScan Complete, through the operator (a release build of
/// berth, the test control plane and a Distribution registry), beside the offline scan of the
/// same image and the push itself.
async fn operator(berth: &Path) {
    use berth::api::{ImageScan, ScanPhase};
    use kube::{Api, api::ListParams};
    use support::scenario::Env;

    const PUSHES: usize = 5;
    // The Debian fixture is ~23 MiB; with this layer the image is ~100 MiB.
    const EXTRA: usize = 77 << 20;
    let cp = support::control_plane().await;
    cp.install_crds().await;
    let db = data().join("osv-db");
    let env = Env::with_args(
        "bench-scan",
        true,
        &["--repository-poll-interval", "1h", "--vulnerability-data", db.to_str().unwrap()],
    )
    .await;
    env.create_repository("big", serde_json::json!({"scanOnPush": true})).await;
    let scans: Api<ImageScan> = Api::namespaced(env.ns.client.clone(), &env.ns.name);
    // Wait for the data to load, with a first image.
    let work = tempfile::tempdir().unwrap();
    let path = format!("{}/big", env.ns.name);
    let mut to_complete = Vec::new();
    let mut pushes = Vec::new();
    let mut offline = Vec::new();
    for round in 0..=PUSHES {
        let layout = big_image(work.path(), round as u64, EXTRA);
        let size: u64 =
            std::fs::read_dir(layout.join("blobs/sha256")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        let dest = format!("{}:v{round}", env.registry.image(&path));
        let start = Instant::now();
        let out = env.skopeo.push_layout(&layout, &dest).await;
        assert!(out.status.success(), "{}", support::skopeo::describe(&out));
        let pushed = Instant::now();
        let digest = env.skopeo.digest(&dest, &support::skopeo::Creds::Anonymous).await.unwrap();
        loop {
            let list = scans.list(&ListParams::default()).await.unwrap();
            let done =
                list.items.iter().find(|s| s.spec.digest == digest).and_then(|s| s.status.as_ref()).map(|s| s.phase);
            if done == Some(ScanPhase::Complete) {
                break;
            }
            assert!(done != Some(ScanPhase::Failed), "the scan failed: {list:?}");
            assert!(pushed.elapsed() < Duration::from_secs(300), "no Complete scan after 5 min");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let complete = pushed.elapsed();
        let mut c = Command::new(berth);
        c.args(["scan", "--image-layout"]).arg(&layout).arg("--db").arg(&db);
        let cli = timed(c);
        println!(
            "operator round {round}: image {:.1} MiB, push {:.0} ms, push done -> ImageScan Complete {:.0} ms, berth scan of the same layout offline {:.0} ms{}",
            size as f64 / 1048576.0,
            (pushed - start).as_secs_f64() * 1000.0,
            complete.as_secs_f64() * 1000.0,
            cli.as_secs_f64() * 1000.0,
            if round == 0 { " (warm-up: includes the data's first load; not counted)" } else { "" }
        );
        if round > 0 {
            to_complete.push(complete);
            pushes.push(pushed - start);
            offline.push(cli);
        }
        std::fs::remove_dir_all(&layout).unwrap();
    }
    println!(
        "operator: push of a ~100 MiB image -> ImageScan Complete {:.0} ms (median of {PUSHES}); the push itself {:.0} ms; berth scan offline on the same image {:.0} ms (includes loading every archive, as each run does)",
        median(to_complete),
        median(pushes),
        median(offline)
    );
}
