//! Image scanning, the pure part: what an image contains (`inventory`: layers in, packages
//! out), which vulnerability records affect it (`matching`: packages x OSV records, with each
//! ecosystem's version order from `version`), and how severe each is (`severity`). No I/O but
//! reading a vulnerability data folder (`osv::Database::load_dir`); the controller fetches
//! layers through the registry backend and calls these.

pub mod data;
pub mod harbor;
pub mod inventory;
pub mod layers;
pub mod matching;
pub mod osv;
pub mod plan;
pub mod report;
pub mod sbom;
pub mod severity;
pub mod source;
pub mod version;

use serde::Serialize;

/// The scanning test data (`fixtures/` and `osv-db/`): `BERTH_SCANNING_DATA`, else
/// `shared/scanning` beside the crate, else `/work/shared/scanning`. Missing data fails the
/// test that asks: these facts must be checked, not skipped.
#[cfg(test)]
pub(crate) fn test_data_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    let complete = |dir: &PathBuf| dir.join("fixtures").is_dir() && dir.join("osv-db").is_dir();
    if let Some(dir) = std::env::var_os("BERTH_SCANNING_DATA") {
        let dir = PathBuf::from(dir);
        assert!(complete(&dir), "BERTH_SCANNING_DATA={} has no fixtures/ and osv-db/ folders", dir.display());
        return dir;
    }
    let candidates = [
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/scanning")),
        PathBuf::from("/work/shared/scanning"),
    ];
    candidates.iter().find(|dir| complete(dir)).cloned().unwrap_or_else(|| {
        panic!(
            "scanning test data not found: set BERTH_SCANNING_DATA to the folder holding fixtures/ and \
             osv-db/ (tried {candidates:?})"
        )
    })
}

/// The operating system an image is built on, from `/etc/os-release` (or
/// `/usr/lib/os-release`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Os {
    /// `ID`: `debian`, `alpine`, `ubuntu`, `rhel`, ...
    pub id: String,
    /// `VERSION_ID`: `12`, `3.20.3`, ...
    pub version_id: Option<String>,
    pub pretty_name: Option<String>,
}

/// The source package a binary package was built from (Debian's `Source:`), which OS
/// advisories name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SourcePackage {
    pub name: String,
    pub version: String,
}

/// One installed package.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    /// As its ecosystem names it (a Go module path, a PyPI project, a Debian binary package).
    pub name: String,
    pub version: String,
    /// The OSV ecosystem: `Go`, `PyPI`, `npm`, `crates.io`, or an OS ecosystem with its release
    /// (`Debian:12`, `Alpine:v3.20`, `Red Hat:9`).
    pub ecosystem: String,
    /// For OS packages, the source package when it differs from the binary one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourcePackage>,
    /// Where it was found in the image (`/var/lib/dpkg/status`, `/usr/local/bin/app`, ...).
    pub location: String,
}

/// What an image contains.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    pub os: Option<Os>,
    pub packages: Vec<Package>,
    /// OS package databases present in the image that do not parse (`<path>: why`): a scan
    /// with any fails with them as its reason rather than report the image clean.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

/// ECR's severity levels (`findingSeverityCounts` keys), most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Informational,
    Undefined,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::High => "HIGH",
            Severity::Medium => "MEDIUM",
            Severity::Low => "LOW",
            Severity::Informational => "INFORMATIONAL",
            Severity::Undefined => "UNDEFINED",
        }
    }
}

/// One vulnerability affecting one installed package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The record's id (`GHSA-...`, `GO-2022-1059`, `DEBIAN-CVE-2024-1234`).
    pub id: String,
    /// The other ids of the same issue (aliases, Debian's `upstream`), sorted.
    pub aliases: Vec<String>,
    pub package: String,
    pub ecosystem: String,
    pub installed_version: String,
    /// The lowest version that fixes it on the installed version's branch, if any.
    pub fixed_version: Option<String>,
    pub severity: Severity,
    pub summary: Option<String>,
}
