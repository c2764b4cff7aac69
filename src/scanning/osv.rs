//! OSV vulnerability records, loaded from a folder laid out like the OSV bucket
//! (`<Ecosystem>/all.zip`) and indexed by ecosystem and package name.

use std::{collections::HashMap, sync::Arc};

use serde::Deserialize;

/// One OSV record, the fields matching reads (<https://ossf.github.io/osv-schema/>).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Record {
    pub id: String,
    pub modified: Option<String>,
    pub withdrawn: Option<String>,
    pub aliases: Vec<String>,
    /// Debian's and Ubuntu's records name the upstream CVE here.
    pub upstream: Vec<String>,
    pub summary: Option<String>,
    pub details: Option<String>,
    pub severity: Vec<SeverityScore>,
    pub affected: Vec<Affected>,
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SeverityScore {
    /// `CVSS_V2`, `CVSS_V3`, `CVSS_V4`, `Ubuntu`.
    #[serde(rename = "type")]
    pub type_: String,
    /// A vector (`CVSS:3.1/AV:N/...`) or a word.
    pub score: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Affected {
    pub package: Option<PackageRef>,
    pub severity: Vec<SeverityScore>,
    pub ranges: Vec<Range>,
    pub versions: Vec<String>,
    pub ecosystem_specific: Option<serde_json::Value>,
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PackageRef {
    pub ecosystem: String,
    pub name: String,
    pub purl: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Range {
    /// `ECOSYSTEM`, `SEMVER` or `GIT` (commits: not used for installed packages).
    #[serde(rename = "type")]
    pub type_: String,
    pub events: Vec<Event>,
}

/// One event of a range; exactly one field is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Event {
    pub introduced: Option<String>,
    pub fixed: Option<String>,
    pub last_affected: Option<String>,
    pub limit: Option<String>,
}

/// The loaded records, indexed by (ecosystem without its release, normalized package name).
#[derive(Debug, Default)]
pub struct Database {
    pub(crate) by_package: HashMap<(String, String), Vec<Arc<Record>>>,
}

impl Database {
    /// The records that name `name` in `ecosystem` (`Debian:12` finds those of `Debian:12` and
    /// of other releases: matching checks the release). Names are normalized as the ecosystem
    /// does (PyPI: PEP 503).
    pub fn candidates(&self, ecosystem: &str, name: &str) -> &[Arc<Record>] {
        let base = ecosystem.split(':').next().unwrap_or(ecosystem);
        self.by_package.get(&(base.to_string(), normalize(base, name))).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// A package name as the ecosystem compares names: PEP 503 for PyPI (lower case, runs of
/// `-`, `_`, `.` as one `-`), as written elsewhere.
pub fn normalize(ecosystem: &str, name: &str) -> String {
    if ecosystem == "PyPI" {
        let mut out = String::with_capacity(name.len());
        let mut dash = false;
        for c in name.chars() {
            if matches!(c, '-' | '_' | '.') {
                dash = true;
            } else {
                if dash && !out.is_empty() {
                    out.push('-');
                }
                dash = false;
                out.push(c.to_ascii_lowercase());
            }
        }
        out
    } else {
        name.to_string()
    }
}
