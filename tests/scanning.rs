//! `berth scan`, the offline scanner, through the binary, on the real fixture images and OSV
//! archives in `shared/scanning` — compared with Google's osv-scanner on the same data — and on
//! bad input. No cluster and no registry.

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

fn data() -> PathBuf {
    support::scanning_data()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).chars().take(2000).collect::<String>(),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn scan(layout: &Path, db: &Path, output: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["scan", "--image-layout"])
        .arg(layout)
        .arg("--db")
        .arg(db)
        .args(["--output", output])
        .output()
        .unwrap()
}

fn scan_json(fixture: &str) -> Value {
    let d = data();
    let out = scan(&d.join("fixtures").join(fixture), &d.join("osv-db"), "json");
    assert!(out.status.success(), "{fixture}: {}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{fixture}: {e}: {}", describe(&out)))
}

fn ids(report: &Value) -> BTreeSet<String> {
    report["vulnerabilities"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn the_json_has_the_documented_shape_and_the_fixtures_facts() {
    let npm = scan_json("npm-node-modules");
    let packages: Vec<(String, String, String)> = npm["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_string();
            assert_eq!(p.as_object().unwrap().len(), 3, "{p}");
            (s("name"), s("version"), s("ecosystem"))
        })
        .collect();
    assert_eq!(
        packages,
        [("lodash".into(), "4.17.15".into(), "npm".into()), ("minimist".into(), "1.2.0".into(), "npm".into())]
    );
    let lodash = npm["vulnerabilities"].as_array().unwrap().iter().find(|v| v["id"] == "GHSA-p6mc-m468-83gw").unwrap();
    assert_eq!(lodash["package"], "lodash");
    assert_eq!(lodash["installedVersion"], "4.17.15");
    // The range says 4.17.20, whatever the advisory's prose says.
    assert_eq!(lodash["fixedVersion"], "4.17.20");
    assert_eq!(lodash["severity"], "HIGH");
    let critical =
        npm["vulnerabilities"].as_array().unwrap().iter().find(|v| v["id"] == "GHSA-xvch-5gv4-984h").unwrap();
    assert_eq!((critical["package"].as_str(), critical["severity"].as_str()), (Some("minimist"), Some("CRITICAL")));

    let debian = scan_json("debian-bookworm");
    assert_eq!(debian["packages"].as_array().unwrap().len(), 65);
    let ssl: Vec<&Value> =
        debian["vulnerabilities"].as_array().unwrap().iter().filter(|v| v["package"] == "libssl3").collect();
    assert!(!ssl.is_empty() && ssl.iter().all(|v| v["installedVersion"] == "3.0.20-1~deb12u2"), "{ssl:?}");
    // One CVE of the pam source package reaches each of its four binary packages.
    let pam: BTreeSet<&str> = debian["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["id"] == "DEBIAN-CVE-2024-22365")
        .map(|v| v["package"].as_str().unwrap())
        .collect();
    assert_eq!(pam.len(), 4, "{pam:?}");
}

/// osv-scanner needs an image archive and its local data under `osv-scalibr/<Ecosystem>/`.
fn osv_scanner(fixture: &str, work: &Path) -> BTreeSet<String> {
    let bin = std::env::var_os("BERTH_OSV_SCANNER_BIN_DIR")
        .map(|d| PathBuf::from(d).join("osv-scanner"))
        .expect("BERTH_OSV_SCANNER_BIN_DIR (tests/tools/build-osv-scanner.sh; tests/run sets it)");
    let d = data();
    let db = work.join("db/osv-scalibr");
    if !db.is_dir() {
        for entry in std::fs::read_dir(d.join("osv-db")).unwrap() {
            let entry = entry.unwrap();
            std::fs::create_dir_all(db.join(entry.file_name())).unwrap();
            std::fs::copy(entry.path().join("all.zip"), db.join(entry.file_name()).join("all.zip")).unwrap();
        }
    }
    let archive = work.join(format!("{fixture}.tar"));
    let out = Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("oci:{}", d.join("fixtures").join(fixture).display()))
        .arg(format!("docker-archive:{}:{fixture}:fixture", archive.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", describe(&out));
    let out = Command::new(bin)
        .args(["scan", "image", "--archive"])
        .arg(&archive)
        .args(["--offline", "--local-db-path"])
        .arg(work.join("db"))
        // Its image scan reads node_modules only from lockfiles unless asked.
        .args(["--experimental-plugins", "javascript/packagejson", "--format", "json"])
        .output()
        .unwrap();
    // 1: vulnerabilities found.
    assert!(matches!(out.status.code(), Some(0 | 1)), "osv-scanner: {}", describe(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids = BTreeSet::new();
    for result in report["results"].as_array().into_iter().flatten() {
        for p in result["packages"].as_array().into_iter().flatten() {
            for v in p["vulnerabilities"].as_array().into_iter().flatten() {
                ids.insert(v["id"].as_str().unwrap().to_string());
            }
        }
    }
    ids
}

/// The same vulnerabilities as osv-scanner finds on the same images and data. (osv-scanner
/// groups Debian findings by source package, berth reports each binary package: compared by
/// id.)
#[test]
fn findings_agree_with_osv_scanner_on_every_fixture() {
    let work = tempfile::tempdir().unwrap();
    let mut total = 0;
    for fixture in ["debian-bookworm", "go-binary", "python-site-packages", "npm-node-modules"] {
        let ours = ids(&scan_json(fixture));
        let theirs = osv_scanner(fixture, work.path());
        assert!(!ours.is_empty(), "{fixture}: nothing found");
        assert_eq!(
            ours,
            theirs,
            "{fixture}: only berth: {:?}; only osv-scanner: {:?}",
            ours.difference(&theirs).collect::<Vec<_>>(),
            theirs.difference(&ours).collect::<Vec<_>>()
        );
        total += ours.len();
    }
    assert!(total > 90, "{total} findings in all");
}

#[test]
fn the_sbom_is_cyclonedx_with_package_urls_and_the_findings() {
    let d = data();
    let out = scan(&d.join("fixtures/go-binary"), &d.join("osv-db"), "cyclonedx");
    assert!(out.status.success(), "{}", describe(&out));
    let bom: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((bom["bomFormat"].as_str(), bom["specVersion"].as_str()), (Some("CycloneDX"), Some("1.5")));
    assert!(bom["metadata"]["component"]["name"].as_str().unwrap().contains("@sha256:"), "{}", bom["metadata"]);
    let purls: BTreeSet<&str> =
        bom["components"].as_array().unwrap().iter().filter_map(|c| c["purl"].as_str()).collect();
    assert!(purls.contains("pkg:golang/golang.org/x/text@v0.3.0"), "{purls:?}");
    assert!(purls.contains("pkg:golang/stdlib@v1.26.8"), "{purls:?}");
    let text = bom["vulnerabilities"].as_array().unwrap().iter().find(|v| v["id"] == "GO-2020-0015").unwrap();
    assert_eq!(text["affects"][0]["ref"], "pkg:golang/golang.org/x/text@v0.3.0");
}

#[test]
fn a_table_for_people() {
    let d = data();
    let out = scan(&d.join("fixtures/npm-node-modules"), &d.join("osv-db"), "table");
    assert!(out.status.success(), "{}", describe(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("GHSA-xvch-5gv4-984h") && table.contains("CRITICAL"), "{table}");
    assert!(table.trim_end().ends_with("2 packages, 5 vulnerabilities (1 critical, 2 high, 2 medium)"), "{table}");
}

/// Copies a fixture layout, then lets `spoil` change it.
fn spoiled(fixture: &str, work: &Path, spoil: impl FnOnce(&Path)) -> PathBuf {
    let to = work.join(format!("{fixture}-spoiled"));
    let from = data().join("fixtures").join(fixture);
    let out = Command::new("cp").arg("-r").arg(&from).arg(&to).output().unwrap();
    assert!(out.status.success());
    let _ = Command::new("chmod").args(["-R", "u+w"]).arg(&to).status();
    spoil(&to);
    to
}

fn layer_of(layout: &Path) -> PathBuf {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    blob(manifest["layers"][0]["digest"].as_str().unwrap())
}

#[test]
fn bad_input_exits_non_zero_with_the_reason() {
    let work = tempfile::tempdir().unwrap();
    let d = data();
    let db = d.join("osv-db");
    let cases: Vec<(PathBuf, PathBuf, &str)> = vec![
        (work.path().join("nothing-here"), db.clone(), "image layout"),
        (d.join("fixtures/npm-node-modules"), work.path().join("no-data"), "vulnerability data"),
        // A layer damaged in the middle: its gzip stream no longer gives a tar (and its bytes
        // no longer match its digest): whichever is seen first is the reason.
        (
            spoiled("npm-node-modules", work.path(), |l| {
                let layer = layer_of(l);
                let mut bytes = std::fs::read(&layer).unwrap();
                let n = bytes.len();
                bytes[n / 2] ^= 0xff;
                std::fs::write(&layer, bytes).unwrap();
            }),
            db.clone(),
            "layer",
        ),
    ];
    std::fs::create_dir_all(work.path().join("no-data")).unwrap();
    for (layout, db, reason) in cases {
        let out = scan(&layout, &db, "json");
        assert!(!out.status.success(), "{}: {}", layout.display(), describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("berth scan: ") && err.contains(reason), "{}: {err}", layout.display());
        assert!(!err.contains("panicked"), "{err}");
    }
}
