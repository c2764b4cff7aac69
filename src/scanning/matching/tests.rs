//! Matching on records made here, with a version order written here (the real one lives in
//! `version`, built separately).

use std::cmp::Ordering;

use proptest::prelude::*;

use super::*;
use crate::scanning::{
    SourcePackage,
    osv::{Affected, PackageRef, Range, SeverityScore},
};

/// A small version order for tests: semver precedence for `SEMVER`, `npm` and `Go`; dpkg's
/// rules (epoch, `~`, letters before other symbols) for Debian; dotted numbers elsewhere.
/// `None` when a version does not parse.
pub(super) fn compare(ecosystem: &str, a: &str, b: &str) -> Option<Ordering> {
    match base_ecosystem(ecosystem) {
        "SEMVER" | "npm" | "Go" => {
            let (a, b) = (semver::Version::parse(a).ok()?, semver::Version::parse(b).ok()?);
            Some(a.cmp_precedence(&b))
        }
        "Debian" => dpkg(a, b),
        _ => dotted(a, b),
    }
}

fn dotted(a: &str, b: &str) -> Option<Ordering> {
    let parse = |v: &str| v.split('.').map(|p| p.parse::<u64>().ok()).collect::<Option<Vec<u64>>>();
    let (mut a, mut b) = (parse(a)?, parse(b)?);
    let len = a.len().max(b.len());
    a.resize(len, 0);
    b.resize(len, 0);
    Some(a.cmp(&b))
}

fn dpkg(a: &str, b: &str) -> Option<Ordering> {
    fn split(v: &str) -> Option<(u64, &str, &str)> {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) => (e.parse().ok()?, r),
            None => (0, v),
        };
        let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
        upstream.starts_with(|c: char| c.is_ascii_digit()).then_some((epoch, upstream, revision))
    }
    fn weight(c: Option<&u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(*c),
            Some(c) => i32::from(*c) + 256,
        }
    }
    fn part(a: &str, b: &str) -> Ordering {
        let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
        while !a.is_empty() || !b.is_empty() {
            while a.first().is_some_and(|c| !c.is_ascii_digit()) || b.first().is_some_and(|c| !c.is_ascii_digit()) {
                let (wa, wb) = (weight(a.first()), weight(b.first()));
                if wa != wb {
                    return wa.cmp(&wb);
                }
                a = a.get(1..).unwrap_or_default();
                b = b.get(1..).unwrap_or_default();
            }
            let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
            let (da, db) = (digits(a), digits(b));
            let trim = |s: &[u8]| s.iter().skip_while(|c| **c == b'0').copied().collect::<Vec<u8>>();
            let (na, nb) = (trim(&a[..da]), trim(&b[..db]));
            let by = na.len().cmp(&nb.len()).then(na.cmp(&nb));
            if by != Ordering::Equal {
                return by;
            }
            a = &a[da..];
            b = &b[db..];
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a)?;
    let (eb, ub, rb) = split(b)?;
    Some(ea.cmp(&eb).then_with(|| part(ua, ub)).then_with(|| part(ra, rb)))
}

#[test]
fn test_order_is_dpkg_enough() {
    let lt = |a, b| assert_eq!(dpkg(a, b), Some(Ordering::Less), "{a} < {b}");
    lt("3.0.20-1~deb12u2", "3.0.20-1");
    lt("1.5.2-6+deb12u2", "1.5.2-6+deb12u3");
    lt("1.2.13.dfsg-1", "1:1.2.11.dfsg-4");
    lt("5.2.15-2", "5.2.15-2+b13");
    lt("1.0~rc1", "1.0");
    lt("2.36-9+deb12u9", "2.36-9+deb12u14");
    assert_eq!(dpkg("1:2.66-4", "1:2.66-4"), Some(Ordering::Equal));
    assert_eq!(dpkg("x1", "1"), None);
}

// Records and packages -------------------------------------------------------------------------

fn event(kind: &str, v: &str) -> Event {
    let v = Some(v.to_string());
    match kind {
        "introduced" => Event { introduced: v, ..Event::default() },
        "fixed" => Event { fixed: v, ..Event::default() },
        "last_affected" => Event { last_affected: v, ..Event::default() },
        "limit" => Event { limit: v, ..Event::default() },
        _ => unreachable!("{kind}"),
    }
}

fn range(type_: &str, events: &[(&str, &str)]) -> Range {
    Range { type_: type_.to_string(), events: events.iter().map(|(k, v)| event(k, v)).collect() }
}

fn affected(ecosystem: &str, name: &str, ranges: Vec<Range>) -> Affected {
    Affected {
        package: Some(PackageRef { ecosystem: ecosystem.to_string(), name: name.to_string(), purl: None }),
        ranges,
        ..Affected::default()
    }
}

fn record(id: &str, affected: Vec<Affected>) -> Record {
    Record { id: id.to_string(), modified: Some("2024-01-01T00:00:00Z".into()), affected, ..Record::default() }
}

fn with_aliases(mut r: Record, aliases: &[&str]) -> Record {
    r.aliases = aliases.iter().map(|s| s.to_string()).collect();
    r
}

fn with_word(mut r: Record, word: &str) -> Record {
    r.database_specific = Some(serde_json::json!({ "severity": word }));
    r
}

fn package(ecosystem: &str, name: &str, version: &str) -> Package {
    Package {
        name: name.to_string(),
        version: version.to_string(),
        ecosystem: ecosystem.to_string(),
        source: None,
        location: "/test".to_string(),
    }
}

fn deb(name: &str, version: &str, source: Option<(&str, &str)>) -> Package {
    Package {
        source: source.map(|(name, version)| SourcePackage { name: name.to_string(), version: version.to_string() }),
        ..package("Debian:12", name, version)
    }
}

fn inventory(packages: Vec<Package>) -> Inventory {
    Inventory { os: None, packages, unreadable: Vec::new() }
}

fn run(records: Vec<Record>, packages: Vec<Package>) -> Matches {
    matches_with(&inventory(packages), &Database::from_records(records), compare)
}

fn ids(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.id.as_str()).collect()
}

fn simple(id: &str, ecosystem: &str, name: &str, events: &[(&str, &str)]) -> Record {
    record(id, vec![affected(ecosystem, name, vec![range("ECOSYSTEM", events)])])
}

// Ranges ---------------------------------------------------------------------------------------

fn eval<'a>(version: &str, events: &'a [Event]) -> RangeVerdict<'a> {
    evaluate_range(version, events, &|a, b| dotted(a, b))
}

fn events(list: &[(&str, &str)]) -> Vec<Event> {
    list.iter().map(|(k, v)| event(k, v)).collect()
}

#[test]
fn introduced_inclusive_fixed_exclusive() {
    let e = events(&[("introduced", "1.2"), ("fixed", "1.5")]);
    assert_eq!(eval("1.1", &e), RangeVerdict::NotAffected);
    assert_eq!(eval("1.2", &e), RangeVerdict::Affected { fixed: Some("1.5") });
    assert_eq!(eval("1.4.9", &e), RangeVerdict::Affected { fixed: Some("1.5") });
    assert_eq!(eval("1.5", &e), RangeVerdict::NotAffected);
    assert_eq!(eval("2", &e), RangeVerdict::NotAffected);
}

#[test]
fn last_affected_is_inclusive_and_has_no_fix() {
    let e = events(&[("introduced", "0"), ("last_affected", "4.5.1")]);
    assert_eq!(eval("4.5.1", &e), RangeVerdict::Affected { fixed: None });
    assert_eq!(eval("4.5.2", &e), RangeVerdict::NotAffected);
}

#[test]
fn zero_is_below_everything_and_open_ranges_have_no_fix() {
    let e = events(&[("introduced", "0")]);
    assert_eq!(eval("0", &e), RangeVerdict::Affected { fixed: None });
    assert_eq!(eval("999.1", &e), RangeVerdict::Affected { fixed: None });
}

#[test]
fn limits_bound_the_range() {
    let e = events(&[("introduced", "1"), ("limit", "2")]);
    assert_eq!(eval("1.5", &e), RangeVerdict::Affected { fixed: None });
    assert_eq!(eval("2", &e), RangeVerdict::NotAffected);
    assert_eq!(eval("3", &e), RangeVerdict::NotAffected);
    let star = events(&[("introduced", "1"), ("limit", "*")]);
    assert_eq!(eval("300", &star), RangeVerdict::Affected { fixed: None });
}

#[test]
fn unsorted_events_are_sorted_first() {
    // PYSEC-2023-192's shape: the 2.x branch first, then the 1.x one.
    let e = events(&[("introduced", "2.0.0"), ("fixed", "2.0.6"), ("introduced", "0"), ("fixed", "1.26.17")]);
    assert_eq!(eval("1.24.1", &e), RangeVerdict::Affected { fixed: Some("1.26.17") });
    assert_eq!(eval("1.26.17", &e), RangeVerdict::NotAffected);
    assert_eq!(eval("1.30", &e), RangeVerdict::NotAffected);
    assert_eq!(eval("2.0.1", &e), RangeVerdict::Affected { fixed: Some("2.0.6") });
    assert_eq!(eval("2.0.6", &e), RangeVerdict::NotAffected);
}

#[test]
fn fixed_version_is_the_lowest_above_the_installed_one() {
    // stdlib's shape: one fix per release branch.
    let e = events(&[("introduced", "0"), ("fixed", "1.20.12"), ("introduced", "1.21.0"), ("fixed", "1.21.5")]);
    assert_eq!(eval("1.20.3", &e), RangeVerdict::Affected { fixed: Some("1.20.12") });
    assert_eq!(eval("1.21.2", &e), RangeVerdict::Affected { fixed: Some("1.21.5") });
    assert_eq!(eval("1.20.12", &e), RangeVerdict::NotAffected);
}

#[test]
fn same_version_introduced_and_fixed_is_empty() {
    let e = events(&[("fixed", "1.0"), ("introduced", "1.0")]);
    assert_eq!(eval("1.0", &e), RangeVerdict::NotAffected);
}

#[test]
fn unparsable_versions_are_unordered() {
    let e = events(&[("introduced", "0"), ("fixed", "1.5")]);
    assert_eq!(eval("1.x", &e), RangeVerdict::Unordered);
    let bad_event = events(&[("introduced", "1.0"), ("fixed", "1.5-beta")]);
    assert_eq!(eval("1.2", &bad_event), RangeVerdict::Unordered);
    // With no introduced at all nothing is affected, but the installed version must parse.
    assert_eq!(eval("1.2", &[]), RangeVerdict::NotAffected);
}

fn version_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(0u64..6, 1..4)
        .prop_map(|parts| parts.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
}

/// Three parts always, so two versions are equal only when written the same.
fn canonical_version() -> impl Strategy<Value = String> {
    (0u64..4, 0u64..4, 0u64..4).prop_map(|(a, b, c)| format!("{a}.{b}.{c}"))
}

fn event_strategy() -> impl Strategy<Value = Event> {
    let version = prop_oneof![version_strategy(), Just("0".to_string()), Just("*".to_string()), "[a-z0-9.~*-]{0,6}"];
    (0..5usize, version, version_strategy()).prop_map(|(kind, v, w)| match kind {
        0 => event("introduced", &v),
        1 => event("fixed", &v),
        2 => event("last_affected", &v),
        3 => event("limit", &v),
        // Two fields in one event: invalid, must not panic.
        _ => Event { introduced: Some(v), fixed: Some(w), ..Event::default() },
    })
}

proptest! {
    #[test]
    fn between_introduced_and_fixed_is_affected(a in version_strategy(), b in version_strategy(), v in version_strategy()) {
        let (lo, hi) = match dotted(&a, &b).unwrap() {
            Ordering::Less => (a, b),
            Ordering::Greater => (b, a),
            Ordering::Equal => return Ok(()),
        };
        let e = events(&[("introduced", &lo), ("fixed", &hi)]);
        let inside = dotted(&v, &lo) != Some(Ordering::Less) && dotted(&v, &hi) == Some(Ordering::Less);
        let expected = if inside { RangeVerdict::Affected { fixed: Some(hi.as_str()) } } else { RangeVerdict::NotAffected };
        prop_assert_eq!(eval(&v, &e), expected);
        prop_assert_eq!(eval(&hi, &e), RangeVerdict::NotAffected);
        prop_assert_eq!(eval(&lo, &e), RangeVerdict::Affected { fixed: Some(hi.as_str()) });
    }

    #[test]
    fn event_order_does_not_matter(
        list in prop::collection::vec((0..3usize, canonical_version()), 0..8),
        v in canonical_version(),
        seed in any::<u64>(),
    ) {
        let kinds = ["introduced", "fixed", "last_affected"];
        let e: Vec<Event> = list.iter().map(|(k, ver)| event(kinds[*k], ver)).collect();
        let mut shuffled = e.clone();
        // A deterministic shuffle from the seed.
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(eval(&v, &e), eval(&v, &shuffled));
    }

    #[test]
    fn arbitrary_events_never_panic(evs in prop::collection::vec(event_strategy(), 0..10), v in "[a-z0-9.~*-]{0,6}") {
        let _ = eval(&v, &evs);
        // Nor with an order that is not an order at all.
        let _ = evaluate_range(&v, &evs, &|a: &str, b: &str| {
            Some(if (a.len() + b.len()).is_multiple_of(3) { Ordering::Less } else { Ordering::Greater })
        });
        let _ = evaluate_range(&v, &evs, &|a: &str, b: &str| a.len().is_multiple_of(2).then(|| a.cmp(b)));
    }

    #[test]
    fn matching_never_panics(evs in prop::collection::vec(event_strategy(), 0..8), v in "[a-z0-9.~*-]{0,6}", versions in prop::collection::vec("[0-9.]{1,4}", 0..3)) {
        let mut a = affected("PyPI", "pkg", vec![Range { type_: "ECOSYSTEM".into(), events: evs.clone() }, Range { type_: "SEMVER".into(), events: evs }]);
        a.versions = versions;
        let m = run(vec![record("PYSEC-1", vec![a])], vec![package("PyPI", "pkg", &v)]);
        prop_assert!(m.findings.len() <= 1);
    }
}

// Records against packages ----------------------------------------------------------------------

#[test]
fn several_entries_for_one_package_all_count() {
    let r = record(
        "GHSA-minimist",
        vec![
            affected("npm", "minimist", vec![range("ECOSYSTEM", &[("introduced", "0"), ("fixed", "0.2.4")])]),
            affected("npm", "minimist", vec![range("ECOSYSTEM", &[("introduced", "1.0.0"), ("fixed", "1.2.6")])]),
        ],
    );
    for (version, fixed) in [("0.1.0", Some("0.2.4")), ("1.2.0", Some("1.2.6")), ("1.2.6", None), ("0.2.4", None)] {
        let m = run(vec![r.clone()], vec![package("npm", "minimist", version)]);
        assert_eq!(m.findings.iter().map(|f| f.fixed_version.as_deref()).next(), fixed.map(Some), "{version}");
        assert_eq!(m.findings.len(), usize::from(fixed.is_some()), "{version}");
    }
}

#[test]
fn versions_list_matches_as_written() {
    let mut a = affected("PyPI", "pkg", vec![]);
    a.versions = vec!["1.0".into(), "1.1rc1".into()];
    let r = record("PYSEC-1", vec![a]);
    let m = run(vec![r.clone()], vec![package("PyPI", "pkg", "1.1rc1")]);
    assert_eq!(ids(&m.findings), ["PYSEC-1"]);
    assert_eq!(m.findings[0].fixed_version, None);
    assert!(run(vec![r], vec![package("PyPI", "pkg", "1.2")]).findings.is_empty());
}

#[test]
fn git_ranges_are_ignored() {
    let r = record(
        "OSV-1",
        vec![affected("PyPI", "pkg", vec![range("GIT", &[("introduced", "0"), ("fixed", "abcdef0123")])])],
    );
    let m = run(vec![r], vec![package("PyPI", "pkg", "1.0")]);
    assert!(m.findings.is_empty());
    assert!(m.undecided.is_empty());
}

#[test]
fn semver_ranges_use_the_semver_order() {
    // Dotted order would call 1.0.0-rc.1 unparsable; semver puts it below 1.0.0.
    let r = record(
        "GO-1",
        vec![affected("Go", "example.com/m", vec![range("SEMVER", &[("introduced", "0"), ("fixed", "1.0.0")])])],
    );
    let m = matches_with(
        &inventory(vec![package("Go", "example.com/m", "v1.0.0-rc.1")]),
        &Database::from_records(vec![r]),
        |ecosystem, a, b| {
            assert_eq!(ecosystem, "SEMVER");
            compare(ecosystem, a, b)
        },
    );
    assert_eq!(ids(&m.findings), ["GO-1"]);
}

#[test]
fn unparsable_installed_version_is_undecided_not_a_finding() {
    let r = simple("PYSEC-1", "PyPI", "pkg", &[("introduced", "0"), ("fixed", "2.0")]);
    let m = run(vec![r], vec![package("PyPI", "pkg", "1.0-weird")]);
    assert!(m.findings.is_empty());
    assert_eq!(
        m.undecided,
        [Undecided {
            package: "pkg".into(),
            ecosystem: "PyPI".into(),
            installed_version: "1.0-weird".into(),
            id: "PYSEC-1".into()
        }]
    );
}

#[test]
fn one_decided_range_is_enough() {
    let r = record(
        "PYSEC-1",
        vec![affected(
            "PyPI",
            "pkg",
            vec![
                range("ECOSYSTEM", &[("introduced", "0"), ("fixed", "1.5-weird")]),
                range("ECOSYSTEM", &[("introduced", "0"), ("fixed", "2.0")]),
            ],
        )],
    );
    let m = run(vec![r], vec![package("PyPI", "pkg", "1.0")]);
    assert_eq!(ids(&m.findings), ["PYSEC-1"]);
    assert!(m.undecided.is_empty());
}

#[test]
fn pypi_names_are_normalized() {
    let r = simple("PYSEC-1", "PyPI", "Zope.Interface", &[("introduced", "0"), ("fixed", "2.0")]);
    let m = run(vec![r], vec![package("PyPI", "zope_interface", "1.0")]);
    assert_eq!(ids(&m.findings), ["PYSEC-1"]);
    assert_eq!(m.findings[0].package, "zope_interface");
}

#[test]
fn other_ecosystems_and_names_do_not_match() {
    let r = simple("GHSA-1", "npm", "zlib", &[("introduced", "0")]);
    let m = run(vec![r], vec![package("PyPI", "zlib", "1.0"), package("npm", "Zlib", "1.0.0")]);
    assert!(m.findings.is_empty());
}

#[test]
fn withdrawn_records_are_not_matched() {
    let mut r = simple("GHSA-1", "npm", "left-pad", &[("introduced", "0")]);
    r.withdrawn = Some("2024-01-01T00:00:00Z".into());
    let db = Database::from_records(vec![r.clone()]);
    assert!(db.candidates("npm", "left-pad").is_empty());
    assert_eq!(db.info()["npm"].withdrawn, 1);
    assert!(run(vec![r], vec![package("npm", "left-pad", "1.0.0")]).findings.is_empty());
}

// Debian -----------------------------------------------------------------------------------------

#[test]
fn debian_matches_the_source_package_and_its_version() {
    let r = simple("DEBIAN-CVE-2024-1", "Debian:12", "pam", &[("introduced", "0"), ("fixed", "1.5.2-6+deb12u3")]);
    let packages = vec![
        deb("libpam0g", "1.5.2-6+deb12u2", Some(("pam", "1.5.2-6+deb12u2"))),
        deb("libpam-modules", "1.5.2-6+deb12u2", Some(("pam", "1.5.2-6+deb12u2"))),
        // Named like the source, but this one is fixed.
        deb("pam", "1.5.2-6+deb12u3", None),
        // The binary's own name is not looked up when it has a source.
        deb("libpam-runtime", "1.5.2-6+deb12u2", Some(("pam-other", "1.5.2-6+deb12u2"))),
    ];
    let m = run(vec![r], packages);
    let found: Vec<(&str, &str, Option<&str>)> = m
        .findings
        .iter()
        .map(|f| (f.package.as_str(), f.installed_version.as_str(), f.fixed_version.as_deref()))
        .collect();
    assert_eq!(
        found,
        [
            ("libpam-modules", "1.5.2-6+deb12u2", Some("1.5.2-6+deb12u3")),
            ("libpam0g", "1.5.2-6+deb12u2", Some("1.5.2-6+deb12u3"))
        ]
    );
}

#[test]
fn debian_binnmu_compares_the_source_version() {
    // bash 5.2.15-2+b13 is built from source 5.2.15-2; a fix in 5.2.15-2+deb12u1 is above the
    // source version but below the binary's (dpkg: `+b13` > `+deb12u1`).
    let r = simple("DEBIAN-CVE-2024-2", "Debian:12", "bash", &[("introduced", "0"), ("fixed", "5.2.15-2+deb12u1")]);
    let m = run(vec![r], vec![deb("bash", "5.2.15-2+b13", Some(("bash", "5.2.15-2")))]);
    assert_eq!(ids(&m.findings), ["DEBIAN-CVE-2024-2"]);
    assert_eq!(m.findings[0].installed_version, "5.2.15-2+b13");
}

#[test]
fn debian_release_must_match() {
    let r7 = simple("DSA-3029-1", "Debian:7", "nginx", &[("introduced", "0"), ("fixed", "1.2.1-2.2+wheezy3")]);
    let r12 = simple("DEBIAN-CVE-1", "Debian:12", "nginx", &[("introduced", "0"), ("fixed", "1.22.1-9+deb12u1")]);
    let unscoped = simple("DEBIAN-CVE-2", "Debian", "nginx", &[("introduced", "0"), ("fixed", "1.22.1-9+deb12u2")]);
    let m = run(vec![r7, r12, unscoped], vec![deb("nginx", "1.2.1-2.2", None)]);
    assert_eq!(ids(&m.findings), ["DEBIAN-CVE-1", "DEBIAN-CVE-2"]);
    let m = run(
        vec![simple("DSA-3029-1", "Debian:7", "nginx", &[("introduced", "0"), ("fixed", "1.2.1-2.2+wheezy3")])],
        vec![package("Debian:7", "nginx", "1.2.1-2.2")],
    );
    assert_eq!(ids(&m.findings), ["DSA-3029-1"]);
}

// Go ---------------------------------------------------------------------------------------------

#[test]
fn go_versions_lose_their_v_and_devel_is_not_matched() {
    let r = record(
        "GO-2020-0015",
        vec![affected("Go", "golang.org/x/text", vec![range("SEMVER", &[("introduced", "0"), ("fixed", "0.3.3")])])],
    );
    let m =
        run(vec![r], vec![package("Go", "golang.org/x/text", "v0.3.0"), package("Go", "golang.org/x/text", "(devel)")]);
    assert_eq!(ids(&m.findings), ["GO-2020-0015"]);
    assert_eq!(m.findings[0].installed_version, "v0.3.0");
    assert_eq!(m.findings[0].fixed_version.as_deref(), Some("0.3.3"));
    assert!(m.undecided.is_empty());
}

#[test]
fn go_stdlib_uses_the_toolchain_version() {
    let r = record(
        "GO-2023-2185",
        vec![affected(
            "Go",
            "stdlib",
            vec![range(
                "SEMVER",
                &[("introduced", "0"), ("fixed", "1.20.11"), ("introduced", "1.21.0-0"), ("fixed", "1.21.4")],
            )],
        )],
    );
    let found = |v: &str| {
        run(vec![r.clone()], vec![package("Go", "stdlib", v)]).findings.first().and_then(|f| f.fixed_version.clone())
    };
    assert_eq!(found("go1.20.3").as_deref(), Some("1.20.11"));
    assert_eq!(found("go1.21rc2").as_deref(), Some("1.21.4"));
    assert_eq!(found("v1.21.3").as_deref(), Some("1.21.4"));
    assert_eq!(found("go1.21.4"), None);
}

#[test]
fn go_release_names_as_semver() {
    for (go, semver) in [
        ("go1.20", "1.20.0"),
        ("go1.21.3", "1.21.3"),
        ("go1.21rc2", "1.21.0-rc.2"),
        ("go1.19beta1", "1.19.0-beta.1"),
        ("go1", "1.0.0"),
        ("v1.22.1", "1.22.1"),
        ("1.22.1", "1.22.1"),
        ("1.21.0-rc.2", "1.21.0-rc.2"),
    ] {
        assert_eq!(go_toolchain_semver(go), semver, "{go}");
    }
}

// Aliases, severity, order -----------------------------------------------------------------------

fn go_and_ghsa() -> (Record, Record) {
    let go = with_aliases(
        record(
            "GO-2021-0113",
            vec![affected(
                "Go",
                "golang.org/x/text",
                vec![range("SEMVER", &[("introduced", "0"), ("fixed", "0.3.7")])],
            )],
        ),
        &["CVE-2021-38561", "GHSA-ppp9-7jff-5vj2"],
    );
    let ghsa = with_word(
        with_aliases(
            record(
                "GHSA-ppp9-7jff-5vj2",
                vec![affected(
                    "Go",
                    "golang.org/x/text",
                    vec![range("ECOSYSTEM", &[("introduced", "0"), ("fixed", "0.3.7")])],
                )],
            ),
            &["CVE-2021-38561"],
        ),
        "HIGH",
    );
    (go, ghsa)
}

#[test]
fn aliases_are_one_finding_keeping_the_one_with_a_severity() {
    let (go, ghsa) = go_and_ghsa();
    let m = run(vec![go, ghsa], vec![package("Go", "golang.org/x/text", "v0.3.0")]);
    assert_eq!(m.findings.len(), 1);
    let f = &m.findings[0];
    assert_eq!(f.id, "GHSA-ppp9-7jff-5vj2");
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.aliases, ["CVE-2021-38561", "GO-2021-0113"]);
}

#[test]
fn without_severities_the_smallest_id_is_kept() {
    let (go, mut ghsa) = go_and_ghsa();
    ghsa.database_specific = None;
    let m = run(vec![go, ghsa], vec![package("Go", "golang.org/x/text", "v0.3.0")]);
    assert_eq!(ids(&m.findings), ["GHSA-ppp9-7jff-5vj2"]);
    assert_eq!(m.findings[0].severity, Severity::Undefined);
}

#[test]
fn aliases_are_transitive_through_a_shared_id() {
    // A and C never name each other; both name CVE-1 (through B for C).
    let a = with_aliases(simple("A-1", "npm", "p", &[("introduced", "0")]), &["CVE-1"]);
    let b = with_aliases(simple("B-1", "npm", "p", &[("introduced", "0")]), &["CVE-1", "C-1"]);
    let c = simple("C-1", "npm", "p", &[("introduced", "0")]);
    let unrelated = with_aliases(simple("D-1", "npm", "p", &[("introduced", "0")]), &["CVE-2"]);
    let m = run(vec![a, b, c, unrelated], vec![package("npm", "p", "1.0.0")]);
    assert_eq!(ids(&m.findings), ["A-1", "D-1"]);
    assert_eq!(m.findings[0].aliases, ["B-1", "C-1", "CVE-1"]);
}

#[test]
fn a_single_upstream_is_the_same_issue_a_bundle_is_not() {
    let mut cve1 = simple("DEBIAN-CVE-2024-1", "Debian:12", "openssl", &[("introduced", "0"), ("fixed", "3.0.20-1")]);
    cve1.upstream = vec!["CVE-2024-1".into()];
    let mut cve2 = simple("DEBIAN-CVE-2024-2", "Debian:12", "openssl", &[("introduced", "0"), ("fixed", "3.0.20-1")]);
    cve2.upstream = vec!["CVE-2024-2".into()];
    let mut dsa = simple("DSA-5000-1", "Debian:12", "openssl", &[("introduced", "0"), ("fixed", "3.0.20-1")]);
    dsa.upstream = vec!["CVE-2024-1".into(), "CVE-2024-2".into()];
    // Another database's record of the same CVE, aliasing it.
    let other = with_aliases(
        simple("OTHER-2024-1", "Debian:12", "openssl", &[("introduced", "0"), ("fixed", "3.0.20-1")]),
        &["CVE-2024-1"],
    );
    let m = run(
        vec![cve1, cve2, dsa, other],
        vec![deb("libssl3", "3.0.11-1~deb12u2", Some(("openssl", "3.0.11-1~deb12u2")))],
    );
    assert_eq!(ids(&m.findings), ["DEBIAN-CVE-2024-1", "DEBIAN-CVE-2024-2", "DSA-5000-1"]);
    assert_eq!(m.findings[0].aliases, ["CVE-2024-1", "OTHER-2024-1"]);
}

#[test]
fn findings_are_sorted_by_severity_then_id() {
    let r = |id: &str, word: &str| with_word(simple(id, "npm", "p", &[("introduced", "0")]), word);
    let m = run(
        vec![
            r("GHSA-b", "LOW"),
            r("GHSA-a", "LOW"),
            r("GHSA-c", "CRITICAL"),
            simple("GHSA-0", "npm", "p", &[("introduced", "0")]),
            r("GHSA-d", "MODERATE"),
        ],
        vec![package("npm", "p", "1.0.0")],
    );
    assert_eq!(ids(&m.findings), ["GHSA-c", "GHSA-d", "GHSA-a", "GHSA-b", "GHSA-0"]);
    let severities: Vec<Severity> = m.findings.iter().map(|f| f.severity).collect();
    assert_eq!(severities, [Severity::Critical, Severity::Medium, Severity::Low, Severity::Low, Severity::Undefined]);
}

#[test]
fn the_same_package_twice_is_one_finding() {
    let r = simple("GHSA-1", "npm", "p", &[("introduced", "0")]);
    let mut second = package("npm", "p", "1.0.0");
    second.location = "/other/node_modules/p".into();
    let m = run(vec![r], vec![package("npm", "p", "1.0.0"), second, package("npm", "p", "2.0.0")]);
    let found: Vec<&str> = m.findings.iter().map(|f| f.installed_version.as_str()).collect();
    assert_eq!(found, ["1.0.0", "2.0.0"]);
}

#[test]
fn package_severity_comes_from_its_own_entry() {
    let mut a = affected("npm", "p", vec![range("ECOSYSTEM", &[("introduced", "0")])]);
    a.severity =
        vec![SeverityScore { type_: "CVSS_V3".into(), score: "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H".into() }];
    let b = affected("npm", "q", vec![range("ECOSYSTEM", &[("introduced", "0")])]);
    let r = record("GHSA-1", vec![a, b]);
    let m = run(vec![r], vec![package("npm", "p", "1.0.0"), package("npm", "q", "1.0.0")]);
    let found: Vec<(&str, Severity)> = m.findings.iter().map(|f| (f.package.as_str(), f.severity)).collect();
    assert_eq!(found, [("p", Severity::Critical), ("q", Severity::Undefined)]);
}

#[test]
fn a_record_naming_several_packages_is_stored_once() {
    let r = record(
        "GHSA-29mw-wpgm-hmr9",
        vec![
            affected("npm", "lodash", vec![range("ECOSYSTEM", &[("introduced", "0"), ("fixed", "4.17.21")])]),
            affected("npm", "lodash-es", vec![range("ECOSYSTEM", &[("introduced", "0"), ("fixed", "4.17.21")])]),
        ],
    );
    let db = Database::from_records(vec![r]);
    let (a, b) = (&db.candidates("npm", "lodash")[0], &db.candidates("npm", "lodash-es")[0]);
    assert!(Arc::ptr_eq(a, b));
}
