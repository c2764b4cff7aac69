//! Which records affect which installed packages: a pure function of an inventory and the
//! database, with each ecosystem's version order.
//!
//! How a package is matched:
//! - Records are looked up by the package's source package when it has one (Debian's records
//!   name source packages; a binNMU's source version differs from the binary's) and compared
//!   with the source version; the finding names the binary package and its installed version.
//! - A record's `affected[].package` must name the same ecosystem with the same release
//!   (`Debian:12` is not `Debian:7`); a record without a release (`Debian`) applies to every
//!   release, as the OSV schema defines the suffix as a scope.
//! - Affected when the version is listed in `versions` (as written: the schema's `v ==
//!   version`), or lies in an `ECOSYSTEM` range (the ecosystem's order) or a `SEMVER` range
//!   (semver order), evaluated as the schema's pseudocode does: events sorted, `introduced:
//!   "0"` below everything, `fixed` exclusive, `last_affected` inclusive, `limit` (`*` is
//!   infinity) bounding the range. `GIT` ranges name commits, not installed versions: ignored.
//!   Every `affected` entry for the package counts (npm's minimist has two).
//! - A range with a version that does not parse (either side) decides nothing; when no other
//!   entry of the record matches, the pair is reported in [`Matches::undecided`], never as a
//!   finding and never as a panic.
//! - Go: build info writes `v0.3.0`, vulndb `0.3.0`; the `v` is dropped before comparing. The
//!   `stdlib` and `toolchain` packages take Go's own spelling too (`go1.21rc2` is
//!   `1.21.0-rc.2`, `go1.20` is `1.20.0`). The main module's `(devel)` is not matched.
//! - `fixed_version` is the lowest `fixed` above the installed version in the ranges that
//!   matched. Versions are reported as written: the installed one as the inventory has it, the
//!   fixed one as the record has it.
//! - One finding per package and issue: records that are aliases of each other (an id in the
//!   other's `aliases`, or a shared alias, transitively; a record's `upstream` only when it
//!   names a single upstream issue, since a distribution advisory bundling several CVEs is not
//!   any one of them) are one finding. It keeps the most informative record: a defined
//!   severity (the most severe) over none, then one with a fixed version, then one with a
//!   summary, then the smallest id; the other ids go to `aliases`.
//! - Findings sorted by severity (Critical first), then id, then package.

use std::{borrow::Cow, cmp::Ordering, collections::HashMap, sync::Arc};

use serde::Serialize;

use super::{
    Finding, Inventory, Package, Severity,
    osv::{Database, Event, Record, base_ecosystem, normalize},
    severity, version,
};

/// Every finding for the inventory, sorted by severity then id, with each ecosystem's version
/// order.
pub fn findings(inventory: &Inventory, db: &Database) -> Vec<Finding> {
    findings_with(inventory, db, version::compare)
}

/// The same, with the version order given: `compare(ecosystem, a, b)`.
pub fn findings_with(
    inventory: &Inventory,
    db: &Database,
    compare: impl Fn(&str, &str, &str) -> Option<Ordering>,
) -> Vec<Finding> {
    matches_with(inventory, db, compare).findings
}

/// What matching found, and what it could not decide.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Matches {
    pub findings: Vec<Finding>,
    /// Package and record pairs left undecided because a version did not parse in the
    /// ecosystem's order; sorted, one per pair.
    pub undecided: Vec<Undecided>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Undecided {
    pub package: String,
    pub ecosystem: String,
    pub installed_version: String,
    /// The record whose ranges could not be compared with the installed version.
    pub id: String,
}

/// [`findings`], with the pairs matching could not decide.
pub fn matches(inventory: &Inventory, db: &Database) -> Matches {
    matches_with(inventory, db, version::compare)
}

/// [`findings_with`], with the pairs matching could not decide.
pub fn matches_with(
    inventory: &Inventory,
    db: &Database,
    compare: impl Fn(&str, &str, &str) -> Option<Ordering>,
) -> Matches {
    let mut out = Matches::default();
    for package in &inventory.packages {
        let Some(query) = Query::of(package) else { continue };
        let mut hits = Vec::new();
        for record in db.candidates(&package.ecosystem, query.name) {
            if record.withdrawn.is_some() {
                continue;
            }
            match evaluate_record(record, &query, &compare) {
                Verdict::Affected { severity, fixed } => hits.push(Hit { record: Arc::clone(record), severity, fixed }),
                Verdict::NotAffected => {}
                Verdict::Undecided => out.undecided.push(Undecided {
                    package: package.name.clone(),
                    ecosystem: package.ecosystem.clone(),
                    installed_version: package.version.clone(),
                    id: record.id.clone(),
                }),
            }
        }
        out.findings.extend(group(hits).into_iter().map(|group| finding(package, group)));
    }
    out.findings.sort_by(|a, b| {
        (a.severity, &a.id, &a.package, &a.ecosystem, &a.installed_version).cmp(&(
            b.severity,
            &b.id,
            &b.package,
            &b.ecosystem,
            &b.installed_version,
        ))
    });
    // The same package at two places in the image (two copies of lodash) is one finding.
    out.findings.dedup();
    out.undecided.sort();
    out.undecided.dedup();
    out
}

/// What a package is looked up and compared as.
struct Query<'a> {
    ecosystem: &'a str,
    name: &'a str,
    version: Cow<'a, str>,
}

impl<'a> Query<'a> {
    /// `None` for a package that cannot be matched by version (Go's `(devel)` main module).
    fn of(package: &'a Package) -> Option<Query<'a>> {
        let (name, version) = match &package.source {
            Some(source) if !source.version.is_empty() => (source.name.as_str(), source.version.as_str()),
            Some(source) => (source.name.as_str(), package.version.as_str()),
            None => (package.name.as_str(), package.version.as_str()),
        };
        let version = if base_ecosystem(&package.ecosystem) == "Go" {
            if version == "(devel)" || version.is_empty() {
                return None;
            }
            if name == "stdlib" || name == "toolchain" {
                Cow::Owned(go_toolchain_semver(version))
            } else {
                Cow::Borrowed(version.strip_prefix('v').unwrap_or(version))
            }
        } else {
            Cow::Borrowed(version)
        };
        Some(Query { ecosystem: &package.ecosystem, name, version })
    }
}

/// Go's release names as semver, as vulndb writes the `stdlib` module's versions: `go1.20` ->
/// `1.20.0`, `go1.21.3` -> `1.21.3`, `go1.21rc2` -> `1.21.0-rc.2`.
fn go_toolchain_semver(version: &str) -> String {
    let v = version.strip_prefix("go").or_else(|| version.strip_prefix('v')).unwrap_or(version);
    if v.contains('-') {
        return v.to_string();
    }
    let (numbers, pre) = match v.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => v.split_at(at),
        None => (v, ""),
    };
    let mut parts: Vec<&str> = numbers.split('.').collect();
    while parts.len() < 3 {
        parts.push("0");
    }
    let mut out = parts.join(".");
    if !pre.is_empty() {
        let digits = pre.find(|c: char| c.is_ascii_digit()).unwrap_or(pre.len());
        out.push('-');
        out.push_str(&pre[..digits]);
        if digits < pre.len() {
            out.push('.');
            out.push_str(&pre[digits..]);
        }
    }
    out
}

/// A record's ecosystem names the package's: the same, or the same without a release.
fn same_ecosystem(record: &str, package: &str) -> bool {
    record == package || (!record.contains(':') && base_ecosystem(package) == record)
}

enum Verdict {
    Affected { severity: Severity, fixed: Option<String> },
    NotAffected,
    Undecided,
}

fn evaluate_record(record: &Record, query: &Query, compare: &impl Fn(&str, &str, &str) -> Option<Ordering>) -> Verdict {
    let base = base_ecosystem(query.ecosystem);
    let name = normalize(base, query.name);
    let version = query.version.as_ref();
    let mut affected = false;
    let mut undecided = false;
    let mut most_severe = Severity::Undefined;
    // (fixed version, the order it compares in)
    let mut fixes: Vec<(&str, &str)> = Vec::new();
    for entry in &record.affected {
        let Some(package) = &entry.package else { continue };
        if !same_ecosystem(&package.ecosystem, query.ecosystem) || normalize(base, &package.name) != name {
            continue;
        }
        let mut hit = entry.versions.iter().any(|v| v == version);
        for range in &entry.ranges {
            let order = match range.type_.as_str() {
                "ECOSYSTEM" => query.ecosystem,
                "SEMVER" => "SEMVER",
                _ => continue,
            };
            match evaluate_range(version, &range.events, &|a, b| compare(order, a, b)) {
                RangeVerdict::Affected { fixed } => {
                    hit = true;
                    fixes.extend(fixed.map(|f| (f, order)));
                }
                RangeVerdict::NotAffected => {}
                RangeVerdict::Unordered => undecided = true,
            }
        }
        if hit {
            affected = true;
            most_severe = most_severe.min(severity::of(record, entry));
        }
    }
    if affected {
        let fixed = fixes
            .iter()
            .copied()
            .reduce(|low, next| if compare(next.1, next.0, low.0) == Some(Ordering::Less) { next } else { low })
            .map(|(f, _)| f.to_string());
        Verdict::Affected { severity: most_severe, fixed }
    } else if undecided {
        Verdict::Undecided
    } else {
        Verdict::NotAffected
    }
}

/// One range's answer for one version.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeVerdict<'a> {
    NotAffected,
    /// With the lowest `fixed` above the version, if the range has one.
    Affected {
        fixed: Option<&'a str>,
    },
    /// A version (installed or an event's) did not compare.
    Unordered,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    // The order breaks ties between events at the same version: `introduced: X` with
    // `fixed: X` is an empty range.
    Introduced,
    LastAffected,
    Fixed,
    Limit,
}

#[derive(Clone, Copy, Debug)]
struct Point<'a> {
    kind: Kind,
    version: &'a str,
}

impl Point<'_> {
    /// `introduced: "0"` is below every version, a `limit` with `*` above every one.
    fn rank(&self) -> i8 {
        match self.kind {
            Kind::Introduced if self.version == "0" => -1,
            Kind::Limit if self.version.contains('*') => 1,
            _ => 0,
        }
    }
}

/// `version` against `point`.
fn versus(version: &str, point: &Point, compare: &dyn Fn(&str, &str) -> Option<Ordering>) -> Option<Ordering> {
    match point.rank() {
        -1 => Some(Ordering::Greater),
        1 => Some(Ordering::Less),
        _ => compare(version, point.version),
    }
}

fn order(a: &Point, b: &Point, compare: &dyn Fn(&str, &str) -> Option<Ordering>) -> Option<Ordering> {
    let by_version = match (a.rank(), b.rank()) {
        (0, 0) => compare(a.version, b.version)?,
        (x, y) => x.cmp(&y),
    };
    Some(by_version.then(a.kind.cmp(&b.kind)))
}

/// The OSV schema's `IncludedInRanges` for one range (its "Evaluation" pseudocode).
pub(crate) fn evaluate_range<'a>(
    version: &str,
    events: &'a [Event],
    compare: &dyn Fn(&str, &str) -> Option<Ordering>,
) -> RangeVerdict<'a> {
    if compare(version, version).is_none() {
        return RangeVerdict::Unordered;
    }
    let mut points: Vec<Point<'a>> = Vec::with_capacity(events.len());
    for event in events {
        // One field per event is the schema's rule; take every field set rather than guess.
        let fields = [
            (Kind::Introduced, &event.introduced),
            (Kind::LastAffected, &event.last_affected),
            (Kind::Fixed, &event.fixed),
            (Kind::Limit, &event.limit),
        ];
        points.extend(fields.into_iter().filter_map(|(kind, v)| v.as_deref().map(|version| Point { kind, version })));
    }
    // BeforeLimits: no limit is an implicit `*`.
    let mut limits = points.iter().filter(|p| p.kind == Kind::Limit).peekable();
    if limits.peek().is_some() {
        let mut below_one = false;
        for limit in limits {
            match versus(version, limit, compare) {
                Some(Ordering::Less) => below_one = true,
                Some(_) => {}
                None => return RangeVerdict::Unordered,
            }
        }
        if !below_one {
            return RangeVerdict::NotAffected;
        }
    }
    points.retain(|p| p.kind != Kind::Limit);
    // Insertion sort: it needs no total order from `compare` (the standard sorts may panic on
    // an inconsistent one) and ranges have a handful of events.
    for i in 1..points.len() {
        let mut j = i;
        while j > 0 {
            match order(&points[j], &points[j - 1], compare) {
                Some(Ordering::Less) => {
                    points.swap(j, j - 1);
                    j -= 1;
                }
                Some(_) => break,
                None => return RangeVerdict::Unordered,
            }
        }
    }
    let mut vulnerable = false;
    for point in &points {
        let Some(v) = versus(version, point, compare) else { return RangeVerdict::Unordered };
        match point.kind {
            Kind::Introduced if v != Ordering::Less => vulnerable = true,
            Kind::Fixed if v != Ordering::Less => vulnerable = false,
            Kind::LastAffected if v == Ordering::Greater => vulnerable = false,
            _ => {}
        }
    }
    if !vulnerable {
        return RangeVerdict::NotAffected;
    }
    // Sorted, so the first `fixed` above the version is the lowest.
    let fixed = points
        .iter()
        .find(|p| p.kind == Kind::Fixed && versus(version, p, compare) == Some(Ordering::Less))
        .map(|p| p.version);
    RangeVerdict::Affected { fixed }
}

struct Hit {
    record: Arc<Record>,
    severity: Severity,
    fixed: Option<String>,
}

impl Hit {
    /// The ids that make two records one issue.
    fn identities(&self) -> impl Iterator<Item = &str> {
        let upstream: &[String] = if self.record.upstream.len() == 1 { &self.record.upstream } else { &[] };
        std::iter::once(self.record.id.as_str()).chain(self.record.aliases.iter().chain(upstream).map(String::as_str))
    }

    /// Smaller is more informative.
    fn rank(&self) -> (Severity, bool, bool, &str) {
        (self.severity, self.fixed.is_none(), self.record.summary.is_none(), &self.record.id)
    }
}

/// Hits that are the same issue, together (union-find over shared ids).
fn group(hits: Vec<Hit>) -> Vec<Vec<Hit>> {
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut parent: Vec<usize> = (0..hits.len()).collect();
    let mut first_with: HashMap<&str, usize> = HashMap::new();
    for (i, hit) in hits.iter().enumerate() {
        for id in hit.identities() {
            match first_with.get(id) {
                Some(&j) => {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a.max(b)] = a.min(b);
                }
                None => {
                    first_with.insert(id, i);
                }
            }
        }
    }
    let roots: Vec<usize> = (0..hits.len()).map(|i| root(&mut parent, i)).collect();
    let mut groups: HashMap<usize, Vec<Hit>> = HashMap::new();
    for (hit, root) in hits.into_iter().zip(roots) {
        groups.entry(root).or_default().push(hit);
    }
    groups.into_values().collect()
}

fn finding(package: &Package, mut group: Vec<Hit>) -> Finding {
    group.sort_by(|a, b| a.rank().cmp(&b.rank()));
    let best = &group[0];
    let mut aliases: Vec<String> = group
        .iter()
        .flat_map(|hit| {
            let r = &hit.record;
            std::iter::once(&r.id).chain(&r.aliases).chain(&r.upstream)
        })
        .filter(|id| **id != best.record.id)
        .cloned()
        .collect();
    aliases.sort();
    aliases.dedup();
    Finding {
        id: best.record.id.clone(),
        aliases,
        package: package.name.clone(),
        ecosystem: package.ecosystem.clone(),
        installed_version: package.version.clone(),
        fixed_version: best.fixed.clone(),
        severity: best.severity,
        summary: best.record.summary.clone(),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod real_data_tests;
