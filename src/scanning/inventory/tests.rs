//! The inventory of the real fixture images in `shared/scanning/fixtures` (see its README for
//! what each holds and how it was made).

use std::time::Instant;

use super::inventory;
use crate::scanning::{
    Inventory, Os, Package, SourcePackage,
    layers::{Files, Limits, from_oci_layout},
};

use crate::scanning::test_data_dir as data_dir;

fn fixture(name: &str) -> (Files, Inventory) {
    let dir = data_dir().join("fixtures").join(name);
    let started = Instant::now();
    let files = from_oci_layout(&dir, &Limits::default()).unwrap_or_else(|e| panic!("reading fixture {name}: {e}"));
    let read = started.elapsed();
    let inventory = inventory(&files);
    eprintln!(
        "fixture {name}: layers read in {read:?}, inventory in {:?}; {} files, {} links, {} \
         binaries kept; {} packages",
        started.elapsed() - read,
        files.files.len(),
        files.links.len(),
        files.binaries.len(),
        inventory.packages.len()
    );
    (files, inventory)
}

fn find<'a>(inventory: &'a Inventory, name: &str) -> &'a Package {
    let found: Vec<&Package> = inventory.packages.iter().filter(|p| p.name == name).collect();
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    found[0]
}

fn names_and_versions(inventory: &Inventory) -> Vec<(String, String)> {
    inventory.packages.iter().map(|p| (p.name.clone(), p.version.clone())).collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

#[test]
fn debian_bookworm() {
    let (files, inventory) = fixture("debian-bookworm");
    assert_eq!(files.links.get("/etc/os-release").map(String::as_str), Some("../usr/lib/os-release"));
    assert_eq!(
        inventory.os,
        Some(Os {
            id: "debian".into(),
            version_id: Some("12".into()),
            pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
        })
    );
    assert_eq!(inventory.packages.len(), 65);
    assert!(inventory.packages.iter().all(|p| p.ecosystem == "Debian:12" && p.location == "/var/lib/dpkg/status"));
    let source = |name: &str, version: &str| Some(SourcePackage { name: name.into(), version: version.into() });
    let libssl3 = find(&inventory, "libssl3");
    assert_eq!(libssl3.version, "3.0.20-1~deb12u2");
    assert_eq!(libssl3.source, source("openssl", "3.0.20-1~deb12u2"));
    let bash = find(&inventory, "bash");
    assert_eq!(bash.version, "5.2.15-2+b13");
    assert_eq!(bash.source, source("bash", "5.2.15-2"));
    let zlib = find(&inventory, "zlib1g");
    assert_eq!(zlib.version, "1:1.2.13.dfsg-1");
    assert_eq!(zlib.source, source("zlib", "1:1.2.13.dfsg-1"));
    assert_eq!(find(&inventory, "libexpat1").version, "2.5.0-1+deb12u2");
    assert_eq!(find(&inventory, "libexpat1").source, source("expat", "2.5.0-1+deb12u2"));
    for (name, version) in [
        ("perl-base", "5.36.0-7+deb12u3"),
        ("libpam0g", "1.5.2-6+deb12u2"),
        ("libzstd1", "1.5.4+dfsg2-5"),
        ("libpcre2-8-0", "10.42-1"),
        ("libc6", "2.36-9+deb12u14"),
    ] {
        assert_eq!(find(&inventory, name).version, version, "{name}");
    }
    // pam's CVEs hit its four binaries through their source.
    let pam: Vec<&str> = inventory
        .packages
        .iter()
        .filter(|p| p.source.as_ref().is_some_and(|s| s.name == "pam"))
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(pam.len(), 4, "{pam:?}");
    // Only what the inventory reads was kept: no ELF here carries build info.
    assert!(files.binaries.is_empty(), "{:?}", files.binaries.keys());
    assert_eq!(files.files.keys().collect::<Vec<_>>(), ["/usr/lib/os-release", "/var/lib/dpkg/status"]);
}

#[test]
fn go_binary() {
    let (files, inventory) = fixture("go-binary");
    let binary = &files.binaries["/usr/local/bin/vulnapp"];
    assert_eq!(binary.go.as_ref().unwrap().go_version, "go1.26.8");
    assert_eq!(
        names_and_versions(&inventory),
        pairs(&[
            ("example.com/berth-fixture/vulnapp", "(devel)"),
            ("golang.org/x/net", "0.0.0-20190311183353-d8887717615a"),
            ("golang.org/x/text", "0.3.0"),
            ("stdlib", "1.26.8"),
        ])
    );
    assert!(
        inventory
            .packages
            .iter()
            .all(|p| p.ecosystem == "Go" && p.location == "/usr/local/bin/vulnapp" && p.source.is_none())
    );
}

#[test]
fn python_site_packages() {
    let (_, inventory) = fixture("python-site-packages");
    assert_eq!(
        names_and_versions(&inventory),
        pairs(&[
            ("certifi", "2018.8.24"),
            ("chardet", "3.0.4"),
            ("idna", "2.7"),
            ("requests", "2.19.1"),
            ("urllib3", "1.24.1"),
        ])
    );
    let requests = find(&inventory, "requests");
    assert_eq!(requests.ecosystem, "PyPI");
    assert_eq!(requests.location, "/usr/local/lib/python3.11/site-packages/requests-2.19.1.dist-info/METADATA");
}

#[test]
fn npm_node_modules() {
    let (_, inventory) = fixture("npm-node-modules");
    assert_eq!(names_and_versions(&inventory), pairs(&[("lodash", "4.17.15"), ("minimist", "1.2.0")]));
    let lodash = find(&inventory, "lodash");
    assert_eq!(lodash.ecosystem, "npm");
    assert_eq!(lodash.location, "/app/node_modules/lodash/package.json");
}

#[test]
fn duplicates_are_removed_and_order_is_stable() {
    let mut files = Files::default();
    let metadata = b"Name: six\nVersion: 1.16.0\n".to_vec();
    files.files.insert("/a/six-1.16.0.dist-info/METADATA".into(), metadata.clone());
    files.files.insert("/b/six-1.16.0.dist-info/METADATA".into(), metadata);
    files.files.insert(
        "/var/lib/dpkg/status".into(),
        b"Package: a\nStatus: install ok installed\nVersion: 1\n\n\
          Package: a\nStatus: install ok installed\nVersion: 1\n"
            .to_vec(),
    );
    let inventory = inventory(&files);
    let found: Vec<String> =
        inventory.packages.iter().map(|p| format!("{} {} {} {}", p.name, p.version, p.ecosystem, p.location)).collect();
    // No os-release: dpkg packages keep the family name, with no release.
    assert_eq!(
        found,
        [
            "a 1 Debian /var/lib/dpkg/status",
            "six 1.16.0 PyPI /a/six-1.16.0.dist-info/METADATA",
            "six 1.16.0 PyPI /b/six-1.16.0.dist-info/METADATA",
        ]
    );
    assert_eq!(inventory.os, None);
}

#[test]
fn a_package_database_that_does_not_parse_is_reported_not_taken_for_an_empty_one() {
    let with = |path: &str, bytes: &[u8]| {
        let mut files = Files::default();
        files.files.insert(path.to_string(), bytes.to_vec());
        crate::scanning::inventory::inventory(&files)
    };
    for (path, bytes) in [
        ("/var/lib/dpkg/status", &b"\xff\xfe\x00garbage"[..]),
        ("/var/lib/dpkg/status", &b"this is not a dpkg database\n"[..]),
        ("/var/lib/dpkg/status.d/base", &b"Version: 1.0\n"[..]),
        ("/lib/apk/db/installed", &b"V:1.0\n"[..]),
        ("/var/lib/rpm/rpmdb.sqlite", &b"SQLite format 3\x00 but nothing else"[..]),
    ] {
        let inventory = with(path, bytes);
        assert_eq!(inventory.unreadable.len(), 1, "{path}: {inventory:?}");
        assert!(inventory.unreadable[0].starts_with(path), "{:?}", inventory.unreadable);
    }
    // Empty, or a real one: nothing to say.
    assert!(with("/var/lib/dpkg/status", b"\n").unreadable.is_empty());
    let fine = with("/var/lib/dpkg/status", b"Package: bash\nStatus: install ok installed\nVersion: 5.2\n\n");
    assert!(fine.unreadable.is_empty() && fine.packages.len() == 1, "{fine:?}");
    // A database whose packages are all removed still names them: readable, no package.
    let removed = with("/var/lib/dpkg/status", b"Package: bash\nStatus: deinstall ok config-files\nVersion: 5.2\n\n");
    assert!(removed.unreadable.is_empty() && removed.packages.is_empty(), "{removed:?}");
}
