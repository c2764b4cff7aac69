//! Version order per ecosystem, as each ecosystem's own tools order versions: dpkg for Debian
//! and Ubuntu, apk for Alpine, rpm for Red Hat family distributions, semver for Go (with
//! pseudo-versions), npm and crates.io, PEP 440 for PyPI.
//!
//! Every order here is total on the versions it accepts (equal, less or greater, consistently),
//! so a range check never depends on which side a comparison was written from. A version that
//! its ecosystem's tool would reject gives `None` rather than a guess.
//!
//! OSV's `introduced: "0"` means "from the very first version"; that is the matcher's sentinel,
//! not a version: here `"0"` is an ordinary version (in semver `0` reads as `0.0.0`, which is
//! *after* the pseudo-version `0.0.0-20190311183353-d8887717615a`).

mod apk;
mod dpkg;
mod pep440;
mod rpm;
mod semver;

#[cfg(test)]
mod tests;

use std::cmp::Ordering;

pub use self::semver::compare_semver;

/// How an ecosystem orders its versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `dpkg --compare-versions`.
    Dpkg,
    /// apk-tools' `apk version -t`.
    Apk,
    /// rpm's `rpmvercmp` on `epoch:version-release`.
    Rpm,
    /// Semantic Versioning 2.0 precedence, with Go's spellings (`v1.2.3`, `go1.21rc2`).
    Go,
    /// Semantic Versioning 2.0 precedence (npm, crates.io, OSV `SEMVER` ranges).
    Semver,
    /// PEP 440.
    Pep440,
}

impl Scheme {
    /// The scheme of an OSV ecosystem name; a release suffix is ignored (`Debian:12`,
    /// `Alpine:v3.20`, `Red Hat:enterprise_linux:9::appstream`). The names are OSV's, exactly.
    pub fn of(ecosystem: &str) -> Option<Scheme> {
        let family = ecosystem.split_once(':').map_or(ecosystem, |(family, _release)| family);
        Some(match family {
            "Debian" | "Ubuntu" => Scheme::Dpkg,
            // Chainguard, Wolfi and MinimOS build with apk-tools too (OSV orders them as Alpine).
            "Alpine" | "Chainguard" | "Wolfi" | "MinimOS" => Scheme::Apk,
            "Red Hat" | "Rocky Linux" | "AlmaLinux" | "openSUSE" | "SUSE" | "Mageia" | "openEuler" => Scheme::Rpm,
            "Go" => Scheme::Go,
            "npm" | "crates.io" | "SEMVER" => Scheme::Semver,
            "PyPI" => Scheme::Pep440,
            _ => return None,
        })
    }

    /// Compares two versions under this scheme; `None` when either does not parse.
    pub fn compare(self, a: &str, b: &str) -> Option<Ordering> {
        match self {
            Scheme::Dpkg => dpkg::compare(a, b),
            Scheme::Apk => apk::compare(a, b),
            Scheme::Rpm => rpm::compare(a, b),
            Scheme::Go => semver::compare_go(a, b),
            Scheme::Semver => semver::compare_semver(a, b),
            Scheme::Pep440 => pep440::compare(a, b),
        }
    }
}

/// Compares two versions of a package of `ecosystem` (an OSV ecosystem name, with or without
/// a release suffix: `Debian:12` orders like `Debian`). `None` when either version does not
/// parse in that ecosystem, or the ecosystem is unknown.
pub fn compare(ecosystem: &str, a: &str, b: &str) -> Option<Ordering> {
    Scheme::of(ecosystem)?.compare(a, b)
}

/// Compares two runs of ASCII digits as the numbers they spell, whatever their length
/// (leading zeros ignored), so no version number overflows.
fn cmp_digits(a: &[u8], b: &[u8]) -> Ordering {
    let a = trim_zeros(a);
    let b = trim_zeros(b);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let start = digits.iter().position(|&d| d != b'0').unwrap_or(digits.len());
    &digits[start..]
}

/// The length of the run of ASCII digits at the start of `s`.
fn digits_len(s: &[u8]) -> usize {
    s.iter().position(|b| !b.is_ascii_digit()).unwrap_or(s.len())
}
