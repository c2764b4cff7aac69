//! Matching against the real OSV archives in `../shared/scanning/osv-db` (see its README), with
//! the test version order of `tests` (semver for Go and npm, dpkg for Debian, dotted numbers
//! for PyPI). The data is found through `BERTH_SCANNING_DATA`, else `../shared/scanning` beside
//! the crate, else `/work/shared/scanning`; missing data fails these tests, it does not skip
//! them.

use std::{sync::OnceLock, time::Instant};

use super::tests::compare;
use super::*;
use crate::scanning::SourcePackage;

use crate::scanning::test_data_dir as data_dir;

fn db() -> &'static Database {
    static DB: OnceLock<Database> = OnceLock::new();
    DB.get_or_init(|| {
        let dir = data_dir().join("osv-db");
        assert!(
            dir.is_dir(),
            "the OSV test data is not at {} (set BERTH_SCANNING_DATA to the folder holding osv-db/)",
            dir.display()
        );
        let started = Instant::now();
        let db = Database::load_dir(&dir).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
        eprintln!("loaded {} in {:?}: {:#?}", dir.display(), started.elapsed(), db.info());
        db
    })
}

fn package(ecosystem: &str, name: &str, version: &str) -> Package {
    Package {
        name: name.into(),
        version: version.into(),
        ecosystem: ecosystem.into(),
        source: None,
        location: "/test".into(),
    }
}

fn found(packages: Vec<Package>) -> Matches {
    matches_with(&Inventory { os: None, packages, unreadable: Vec::new() }, db(), compare)
}

/// (id, fixed version, severity) of each finding.
fn summary(m: &Matches) -> Vec<(&str, Option<&str>, Severity)> {
    m.findings.iter().map(|f| (f.id.as_str(), f.fixed_version.as_deref(), f.severity)).collect()
}

#[test]
fn every_archive_loads() {
    let info = db().info();
    assert_eq!(info.keys().collect::<Vec<_>>(), ["Debian", "Go", "PyPI", "npm"]);
    // Counts from the data's README.
    for (ecosystem, records) in [("Go", 4291), ("PyPI", 2661), ("npm", 5), ("Debian", 277)] {
        let i = &info[ecosystem];
        assert_eq!((i.records, i.skipped), (records, 0), "{ecosystem}: {i:?}");
        assert!(i.newest_modified.is_some() && i.memory_bytes > 0, "{ecosystem}: {i:?}");
    }
    assert_eq!(info["Go"].withdrawn, 17);
    assert_eq!(info["PyPI"].withdrawn, 10);
    assert_eq!(info["npm"].newest_modified.as_deref(), Some("2023-09-05T22:58:25Z"));
    // vulndb's repository files carry Go's zero time; the published data has real times.
    assert_eq!(info["Go"].newest_modified.as_deref(), Some("0001-01-01T00:00:00Z"));
}

#[test]
fn lodash_4_17_15() {
    let m = found(vec![package("npm", "lodash", "4.17.15")]);
    assert_eq!(
        summary(&m),
        [
            // CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H = 7.2
            ("GHSA-35jh-r3h4-6jhm", Some("4.17.21"), Severity::High),
            // CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:H/A:H = 7.4; the prose says 4.17.19, the
            // range says 4.17.20: the range is trusted.
            ("GHSA-p6mc-m468-83gw", Some("4.17.20"), Severity::High),
            // CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L = 5.3
            ("GHSA-29mw-wpgm-hmr9", Some("4.17.21"), Severity::Medium),
        ]
    );
    assert_eq!(m.findings[0].aliases, ["CVE-2021-23337"]);
    assert_eq!(m.findings[0].summary.as_deref(), Some("Command Injection in lodash"));
    assert!(found(vec![package("npm", "lodash", "4.17.21")]).findings.is_empty());
    // 4.17.20 is fixed for the prototype pollution only.
    let m = found(vec![package("npm", "lodash", "4.17.20")]);
    let ids: Vec<&str> = m.findings.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["GHSA-35jh-r3h4-6jhm", "GHSA-29mw-wpgm-hmr9"]);
}

#[test]
fn minimist_1_2_0_matches_the_second_range_of_each_record() {
    let m = found(vec![package("npm", "minimist", "1.2.0")]);
    assert_eq!(
        summary(&m),
        [
            // CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H = 9.8
            ("GHSA-xvch-5gv4-984h", Some("1.2.6"), Severity::Critical),
            // CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:L/A:L = 5.6
            ("GHSA-vh95-rmgr-6w4m", Some("1.2.3"), Severity::Medium),
        ]
    );
    // The first range of each record.
    assert_eq!(
        summary(&found(vec![package("npm", "minimist", "0.2.1")])),
        [("GHSA-xvch-5gv4-984h", Some("0.2.4"), Severity::Critical)]
    );
    assert_eq!(summary(&found(vec![package("npm", "minimist", "1.2.6")])), []);
}

#[test]
fn lodash_trim_last_affected_is_inclusive() {
    // GHSA-29mw-wpgm-hmr9 names lodash.trim up to last_affected 4.5.1, with no fix.
    assert_eq!(
        summary(&found(vec![package("npm", "lodash.trim", "4.5.1")])),
        [("GHSA-29mw-wpgm-hmr9", None, Severity::Medium)]
    );
    assert_eq!(summary(&found(vec![package("npm", "lodash.trim", "4.5.2")])), []);
}

#[test]
fn golang_x_text_v0_3_0() {
    let m = found(vec![package("Go", "golang.org/x/text", "v0.3.0")]);
    assert_eq!(
        summary(&m),
        [
            ("GO-2020-0015", Some("0.3.3"), Severity::Undefined),
            ("GO-2021-0113", Some("0.3.7"), Severity::Undefined),
            ("GO-2022-1059", Some("0.3.8"), Severity::Undefined),
            ("GO-2026-5970", Some("0.39.0"), Severity::Undefined),
        ]
    );
    assert_eq!(m.findings[0].installed_version, "v0.3.0");
    assert_eq!(m.findings[0].aliases, ["CVE-2020-14040", "GHSA-5rcv-m4m3-hfh7"]);
    assert!(m.undecided.is_empty());
}

#[test]
fn golang_x_net_pseudo_version() {
    let m = found(vec![package("Go", "golang.org/x/net", "v0.0.0-20190311183353-d8887717615a")]);
    let ids: Vec<&str> = m.findings.iter().map(|f| f.id.as_str()).collect();
    // Fixed before the pseudo-version's date, so not found: GO-2020-0014 (20190125091013),
    // GO-2021-0078, GO-2022-0192, GO-2022-0193, GO-2022-0197 (20190125002852).
    // Introduced after it: GO-2023-1495 (20220524220425), GO-2026-4559 (0.50.0).
    for not in
        ["GO-2020-0014", "GO-2021-0078", "GO-2022-0192", "GO-2022-0193", "GO-2022-0197", "GO-2023-1495", "GO-2026-4559"]
    {
        assert!(!ids.contains(&not), "{not} in {ids:?}");
    }
    // 30 x/net records, less those 7.
    assert_eq!(ids.len(), 23, "{ids:?}");
    let fixed = |id: &str| m.findings.iter().find(|f| f.id == id).and_then(|f| f.fixed_version.as_deref());
    // The first fix after 2019-03-11: HTTP/2 flood fixes of August 2019.
    assert_eq!(fixed("GO-2022-0536"), Some("0.0.0-20190813141303-74dc4d7220e7"));
    assert_eq!(fixed("GO-2021-0238"), Some("0.0.0-20210520170846-37e1c6afe023"));
    assert_eq!(fixed("GO-2023-2102"), Some("0.17.0"));
    assert!(m.undecided.is_empty());
}

#[test]
fn go_main_module_devel_is_not_matched() {
    let m = found(vec![package("Go", "example.com/berth-fixture/vulnapp", "(devel)")]);
    assert!(m.findings.is_empty() && m.undecided.is_empty());
}

#[test]
fn go_stdlib_from_the_toolchain_version() {
    // go1.26.8 built the fixture binary; an old toolchain has many stdlib findings.
    let old = found(vec![package("Go", "stdlib", "go1.20.1")]);
    assert!(old.findings.len() > 50, "{}", old.findings.len());
    assert!(old.undecided.is_empty(), "{:?}", &old.undecided[..3.min(old.undecided.len())]);
    // Every fixed version offered for 1.20.1 is above it.
    for f in &old.findings {
        if let Some(fixed) = &f.fixed_version {
            assert_eq!(compare("SEMVER", "1.20.1", fixed), Some(Ordering::Less), "{}: {fixed}", f.id);
        }
    }
}

#[test]
fn go_withdrawn_records_are_ignored() {
    // Every lib/pq record of August 2026 is withdrawn.
    let withdrawn = ["GO-2026-6166", "GO-2026-6168", "GO-2026-6173"];
    let m = found(vec![package("Go", "github.com/lib/pq", "v1.0.0")]);
    for id in withdrawn {
        assert!(m.findings.iter().all(|f| f.id != id), "{id}");
        assert!(db().candidates("Go", "github.com/lib/pq").iter().all(|r| r.id != id));
    }
}

#[test]
fn pypi_urllib3_with_unsorted_branch_ranges() {
    let m = found(vec![package("PyPI", "urllib3", "1.24.1")]);
    let got = summary(&m);
    // PYSEC-2023-192 lists the 2.x branch before the 1.x one.
    assert!(got.contains(&("PYSEC-2023-192", Some("1.26.17"), Severity::High)), "{got:?}");
    // CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N = 6.1
    assert!(got.contains(&("PYSEC-2023-207", Some("1.24.2"), Severity::Medium)), "{got:?}");
    assert!(got.contains(&("PYSEC-2019-132", Some("1.24.3"), Severity::Undefined)), "{got:?}");
    // Introduced in 1.25.2 / 1.26.0 / 2.0.0: not this one.
    for not in ["PYSEC-2020-149", "PYSEC-2021-59"] {
        assert!(got.iter().all(|(id, ..)| *id != not), "{not}");
    }
    // PEP 503: the record names urllib3; the dist-info may say otherwise.
    assert_eq!(found(vec![package("PyPI", "URLLib3", "1.24.1")]).findings.len(), m.findings.len());
}

fn deb(name: &str, version: &str, source: &str, source_version: &str) -> Package {
    Package {
        source: Some(SourcePackage { name: source.into(), version: source_version.into() }),
        ..package("Debian:12", name, version)
    }
}

#[test]
fn debian_pam_binaries_share_their_source_findings() {
    let packages = vec![
        deb("libpam0g", "1.5.2-6+deb12u2", "pam", "1.5.2-6+deb12u2"),
        deb("libpam-modules", "1.5.2-6+deb12u2", "pam", "1.5.2-6+deb12u2"),
    ];
    let m = found(packages);
    let got: Vec<(&str, &str, Option<&str>)> =
        m.findings.iter().map(|f| (f.id.as_str(), f.package.as_str(), f.fixed_version.as_deref())).collect();
    // DEBIAN-CVE-2025-6020 was fixed in +deb12u2, the installed version.
    assert_eq!(
        got,
        [
            ("DEBIAN-CVE-2024-22365", "libpam-modules", Some("1.5.2-6+deb12u3")),
            ("DEBIAN-CVE-2024-22365", "libpam0g", Some("1.5.2-6+deb12u3")),
        ]
    );
    assert_eq!(m.findings[0].aliases, ["CVE-2024-22365"]);
}

#[test]
fn debian_7_records_do_not_reach_debian_12() {
    let m = found(vec![package("Debian:12", "nginx", "1.2.1-2.2")]);
    assert!(m.findings.is_empty());
    let m = found(vec![package("Debian:7", "nginx", "1.2.1-2.2")]);
    assert_eq!(summary(&m), [("DSA-3029-1", Some("1.2.1-2.2+wheezy3"), Severity::Undefined)]);
}

#[test]
fn debian_openssl_tilde_versions() {
    // libssl3 3.0.20-1~deb12u2: DEBIAN-CVE-2026-9076 is fixed in exactly that version.
    let m = found(vec![deb("libssl3", "3.0.20-1~deb12u2", "openssl", "3.0.20-1~deb12u2")]);
    let ids: Vec<&str> = m.findings.iter().map(|f| f.id.as_str()).collect();
    assert!(!ids.contains(&"DEBIAN-CVE-2026-9076"));
    assert!(ids.contains(&"DEBIAN-CVE-2026-77696"), "{ids:?}");
    assert!(m.findings.iter().all(|f| f.package == "libssl3" && f.severity == Severity::Undefined));
    assert!(m.undecided.is_empty());
}

#[test]
fn a_thousand_packages_match_quickly() {
    // Not a benchmark: a bound that catches accidental quadratic work.
    let mut packages = Vec::new();
    for i in 0..250 {
        packages.push(package("npm", "lodash", &format!("4.17.{}", i % 22)));
        packages.push(package("Go", "golang.org/x/net", &format!("v0.{}.0", i % 40)));
        packages.push(package("PyPI", "urllib3", &format!("1.{}.0", i % 27)));
        packages.push(deb("libssl3", &format!("3.0.{}-1", i % 22), "openssl", &format!("3.0.{}-1", i % 22)));
    }
    let _ = db();
    let started = Instant::now();
    let m = found(packages);
    let took = started.elapsed();
    eprintln!("1000 packages: {} findings in {took:?}", m.findings.len());
    assert!(!m.findings.is_empty());
    assert!(took.as_secs() < 5, "{took:?}");
}
