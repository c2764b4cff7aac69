//! Semantic Versioning 2.0 precedence, for Go modules, npm, crates.io and OSV `SEMVER` ranges,
//! with the spellings their data really has:
//! - a leading `v` or `=` (Go's `v1.2.3`, npm's loose `=1.2.3`), and surrounding whitespace;
//! - a missing minor or patch (`1`, `1.2`, as Go's `semver` package allows) read as `.0`, and
//!   leading zeros in major, minor and patch (node-semver's loose mode) ignored;
//! - build metadata (`+incompatible`, `+build.5`) ignored, as precedence says.
//!
//! Go pseudo-versions (`0.0.0-20190311183353-d8887717615a`, `v1.2.4-0.20190311183353-…`) are
//! pre-releases and need nothing special. Everything else must be valid semver: leading zeros
//! in numeric pre-release identifiers, empty identifiers or numbers beyond `u64` give `None`.

use std::cmp::Ordering;

use ::semver::{Prerelease, Version};

/// Compares two semantic versions by precedence (build metadata ignored); `None` when either
/// is not one. The order of OSV `SEMVER` ranges, whatever the ecosystem.
pub fn compare_semver(a: &str, b: &str) -> Option<Ordering> {
    Some(parse(a)?.cmp_precedence(&parse(b)?))
}

/// Go: semver as above, plus the Go distribution's own tags (`go1.21.3`, `go1.21`,
/// `go1.21rc2`, `go1.9beta1`) read as vulndb writes them for `stdlib` and `toolchain`
/// (`1.21.3`, `1.21.0`, `1.21.0-rc.2`, `1.9.0-beta.1`).
pub fn compare_go(a: &str, b: &str) -> Option<Ordering> {
    Some(parse_go(a)?.cmp_precedence(&parse_go(b)?))
}

fn parse(version: &str) -> Option<Version> {
    let v = version.trim().trim_start_matches(['v', '=']);
    if let Ok(parsed) = Version::parse(v) {
        return Some(parsed);
    }
    // The lenient reading: the core's numbers with leading zeros dropped, padded to three.
    let core_end = v.find(['-', '+']).unwrap_or(v.len());
    let (core, tail) = v.split_at(core_end);
    let numbers: Vec<&str> = core.split('.').collect();
    if numbers.len() > 3 || numbers.iter().any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let mut normalized: Vec<&str> =
        numbers.iter().map(|n| if n.bytes().all(|b| b == b'0') { "0" } else { n.trim_start_matches('0') }).collect();
    normalized.resize(3, "0");
    Version::parse(&format!("{}{tail}", normalized.join("."))).ok()
}

fn parse_go(version: &str) -> Option<Version> {
    let Some(tag) = version.trim().strip_prefix("go") else { return parse(version) };
    // goX[.Y[.Z]][(beta|rc)N]: the pre-release, if any, follows the numbers directly.
    let numbers_end = tag.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(tag.len());
    let (numbers, pre) = tag.split_at(numbers_end);
    let mut v = parse(numbers)?;
    if !pre.is_empty() {
        let word_end = pre.find(|c: char| c.is_ascii_digit())?;
        let (word, n) = pre.split_at(word_end);
        if !matches!(word, "beta" | "rc") || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.pre = Prerelease::new(&format!("{word}.{}", n.parse::<u64>().ok()?)).ok()?;
    }
    Some(v)
}
