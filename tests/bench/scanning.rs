//! The offline scanner on the real fixture images and OSV archives (`shared/scanning`), beside
//! Google's osv-scanner on the same data: `cargo bench --bench scanning` prints the figures;
//! nothing here asserts timings.
//!
//! - each fixture scanned by `berth scan` (this build) and by osv-scanner (`--offline`, from an
//!   image archive), wall time, median of 5 runs each;
//! - the OSV data set: load time and memory estimate per ecosystem;
//! - matching 1,000 packages against the whole data set.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use berth::scanning::{Inventory, Package, matching, osv};

const RUNS: usize = 5;

fn data() -> PathBuf {
    [
        std::env::var_os("BERTH_SCANNING_DATA").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/scanning")),
        Some(PathBuf::from("/work/shared/scanning")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("osv-db").is_dir())
    .expect("the scanning data: set BERTH_SCANNING_DATA")
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
    let d = data();
    let berth = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/berth");
    let built = Command::new("cargo").args(["build", "--release", "--bin", "berth"]).status().unwrap();
    assert!(built.success() && berth.exists());
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
                let mut c = Command::new(&berth);
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
