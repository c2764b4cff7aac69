use proptest::prelude::*;

use super::*;

fn range(text: &str) -> Range {
    Range::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn in_range(r: &str, v: &str) -> bool {
    range(r).matches(&Version::parse(v).unwrap())
}

/// Cases from the Go library Flux uses (Masterminds/semver v3.4's constraint tests), with its
/// short versions (`1`, `1.4`) written out in full, since tags must be full versions.
#[test]
fn ranges_match_as_in_flux() {
    let cases: &[(&str, &str, bool)] = &[
        ("=2.0.0", "1.2.3", false),
        ("=2.0.0", "2.0.0", true),
        ("=2.0", "1.2.3", false),
        ("=2.0", "2.0.0", true),
        ("=2.0", "2.0.1", true),
        ("4.1", "4.1.0", true),
        ("!=4.1.0", "4.1.0", false),
        ("!=4.1.0", "4.1.1", true),
        ("!=4.1", "4.1.0", false),
        ("!=4.1", "4.1.1", false),
        ("!=4.1", "5.1.0-alpha.1", false),
        ("!=4.1.0", "5.1.0-alpha.1", false),
        ("!=4.1-alpha", "4.1.0", true),
        ("!=4.1", "5.1.0", true),
        ("<11", "0.1.0", true),
        ("<11", "11.1.0", false),
        ("<1.1", "0.1.0", true),
        ("<1.1", "1.1.0", false),
        ("<1.1", "1.1.1", false),
        ("<=11", "1.2.3", true),
        ("<=11", "12.2.3", false),
        ("<=11", "11.2.3", true),
        ("<=1.1", "1.2.3", false),
        ("<=1.1", "0.1.0", true),
        ("<=1.1", "1.1.0", true),
        ("<=1.1", "1.1.1", true),
        (">1.1", "4.1.0", true),
        (">1.1", "1.1.0", false),
        (">0", "0.0.0", false),
        (">0", "1.0.0", true),
        (">0", "0.0.1-alpha", false),
        (">0.0", "0.0.1-alpha", false),
        (">0-0", "0.0.1-alpha", false),
        (">0.0-0", "0.0.1-alpha", false),
        (">0", "0.0.0-alpha", false),
        (">0-0", "0.0.0-alpha", false),
        (">0.0.0-0", "0.0.0-alpha", true),
        (">1.2.3-alpha.1", "1.2.3-alpha.2", true),
        (">1.2.3-alpha.1", "1.3.3-alpha.2", true),
        (">11", "11.1.0", false),
        (">11.1", "11.1.0", false),
        (">11.1", "11.1.1", false),
        (">11.1", "11.2.1", true),
        (">=11", "11.1.2", true),
        (">=11.1", "11.1.2", true),
        (">=11.1", "11.0.2", false),
        (">=1.1", "4.1.0", true),
        (">=1.1", "1.1.0", true),
        (">=1.1", "0.0.9", false),
        (">=0", "0.0.1-alpha", false),
        (">=0.0", "0.0.1-alpha", false),
        (">=0-0", "0.0.1-alpha", true),
        (">=0.0-0", "0.0.1-alpha", true),
        (">=0", "0.0.0-alpha", false),
        (">=0-0", "0.0.0-alpha", true),
        (">=0.0.0-0", "0.0.0-alpha", true),
        (">=0.0.0-0", "1.2.3", true),
        (">=0.0.0-0", "3.4.5-beta.1", true),
        ("<0", "0.0.0-alpha", false),
        ("<0-z", "0.0.0-alpha", true),
        (">=0", "0.0.0", true),
        ("=0", "1.0.0", false),
        ("*", "1.0.0", true),
        ("*", "4.5.6", true),
        ("*", "1.2.3-alpha.1", false),
        ("*-0", "1.2.3-alpha.1", true),
        ("2.*", "1.0.0", false),
        ("2.*", "3.4.5", false),
        ("2.*", "2.1.1", true),
        ("2.1.*", "2.1.1", true),
        ("2.1.*", "2.2.1", false),
        ("2", "1.0.0", false),
        ("2", "3.4.5", false),
        ("2", "2.1.1", true),
        ("2.1", "2.1.1", true),
        ("2.1", "2.2.1", false),
        (">= 1.0.0  <= 2.0.0-beta || > 3", "3.0.1-beta", false),
        (">= 1.0.0  <= 2.0.0-beta != 1.0.1 || > 3", "1.0.1-beta", true),
        (">= 1.0.0  <= 2.0.0-beta != 1.0.1-beta || > 3", "1.0.1-beta", false),
        (">= 1.0.0-0  <= 2.0.0", "1.0.1-beta", true),
        ("1.1 - 2", "1.1.1", true),
        ("1.5.0 - 4.5", "3.7.0", true),
        ("1.1-3", "4.3.2", false),
        ("^1.1", "1.1.1", true),
        ("^1.1", "4.3.2", false),
        ("^1.x", "1.1.1", true),
        ("^2.x", "1.1.1", false),
        ("^1.x", "2.1.1", false),
        ("^1.x", "1.1.1-beta1", false),
        ("^1.1.2-alpha", "1.2.1-beta1", true),
        ("^1.2.x-alpha", "1.1.1-beta1", false),
        ("^0.0.1", "0.0.1", true),
        ("^0.0.1", "0.3.1", false),
        ("~*", "2.1.1", true),
        ("~1", "2.1.1", false),
        ("~1", "1.3.5", true),
        ("~1", "1.4.0", true),
        ("~1.x", "2.1.1", false),
        ("~1.x", "1.3.5", true),
        ("~1.x", "1.4.0", true),
        ("~1.1", "1.1.1", true),
        ("~1.1", "1.1.1-alpha", false),
        ("~1.1-alpha", "1.1.1-beta", true),
        ("~1.1.1-beta", "1.1.1-alpha", false),
        ("~1.1.1-beta", "1.1.1", true),
        ("~1.2.3", "1.2.5", true),
        ("~1.2.3", "1.2.2", false),
        ("~1.2.3", "1.3.2", false),
        ("~1.1", "1.2.3", false),
        ("~1.3", "2.4.5", false),
        ("1.0.0 - 2.0.0 <=2.0.0", "1.5.0", true),
        ("1.0.0 - 2.0.0, <=2.0.0", "1.5.0", true),
        ("~1.2.3-beta.2", "1.2.3-beta.4", true),
        ("~1.2.3-beta.2", "1.2.4-beta.2", true),
        ("~1.2.3-beta.2", "1.3.4-beta.2", false),
        ("^1.2.3", "1.8.9", true),
        ("^1.2.3", "2.8.9", false),
        ("^1.2.3", "1.2.1", false),
        ("^1.1.0", "2.1.0", false),
        ("^1.2.0", "2.2.1", false),
        ("^1.2.0", "1.2.1-alpha.1", false),
        ("^1.2.0-alpha.0", "1.2.1-alpha.1", true),
        ("^1.2.0-alpha.0", "1.2.1-alpha.0", true),
        ("^1.2.0-alpha.2", "1.2.0-alpha.1", false),
        ("^1.2", "1.8.9", true),
        ("^1.2", "2.8.9", false),
        ("^1", "1.8.9", true),
        ("^1", "2.8.9", false),
        ("^0.2.3", "0.2.5", true),
        ("^0.2.3", "0.5.6", false),
        ("^0.2", "0.2.5", true),
        ("^0.2", "0.5.6", false),
        ("^0.0.3", "0.0.3", true),
        ("^0.0.3", "0.0.4", false),
        ("^0.0", "0.0.3", true),
        ("^0.0", "0.1.4", false),
        ("^0.0", "1.0.4", false),
        ("^0", "0.2.3", true),
        ("^0", "1.1.4", false),
        ("^0.2.3-beta.2", "0.2.3-beta.4", true),
        ("^0.2.3-beta.2", "0.2.4-beta.2", true),
        ("^0.2.3-beta.2", "0.3.4-beta.2", false),
        ("^0.2.3-beta.2", "0.2.3-beta.2", true),
        ("~0.0.0", "1.2.3", true),
        ("0.x.x", "1.2.3", false),
        ("0.0.x", "1.2.3", false),
        ("0.0.0", "1.2.3", false),
        ("^0.0.0", "1.2.3", false),
        ("= 2.0", "1.2.3", false),
        ("= 2.0", "2.0.0", true),
        ("4.1.x", "4.1.3", true),
        ("1.x", "1.4.0", true),
        ("!=4.1-alpha", "4.1.0-alpha", false),
        // Spellings: a leading v, operators apart from their versions, `=>`, `=<`, `~>`.
        (">= v1.2", "1.2.0", true),
        ("=> 1.2", "1.2.0", true),
        ("=< 1.2", "1.2.9", true),
        ("~>1.2.3", "1.2.9", true),
        ("~>1.2.3", "1.3.0", false),
        (">=1.0.0 <2.0.0 || >=3.0.0", "3.1.0", true),
        (">=1.0.0 <2.0.0 || >=3.0.0", "2.1.0", false),
        // Build metadata in a range is ignored.
        ("=1.2.3+build.1", "1.2.3+build.2", true),
    ];
    let mut wrong = Vec::new();
    for &(r, v, expected) in cases {
        if in_range(r, v) != expected {
            wrong.push(format!("{r:?} with {v}: expected {expected}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The issue's examples, and pre-releases: only in an alternative (between `||`) that names one,
/// then of any version (Flux's rule, not npm's same-major.minor.patch rule).
#[test]
fn the_documented_examples() {
    assert!(in_range("~1.4", "1.4.7") && !in_range("~1.4", "1.5.0") && !in_range("~1.4", "1.4.8-rc.1"));
    assert!(in_range(">=2.0.0 <3", "2.9.9") && !in_range(">=2.0.0 <3", "3.0.0"));
    assert!(!in_range(">=2.0.0 <3", "2.1.0-beta.1"), "no pre-release named: none match");
    assert!(in_range("^1.0.0", "1.99.0") && !in_range("^1.0.0", "2.0.0"));
    assert!(in_range("1.x", "1.0.0") && in_range("1.x", "1.9.3") && !in_range("1.x", "2.0.0"));
    assert!(in_range(">=2.0.0-rc.0, <3", "2.0.0-rc.1"));
    assert!(in_range(">=2.0.0-rc.0, <3", "2.1.0-beta.1"), "Flux: a pre-release of another version too");
    assert!(in_range(">=2.0.0-rc.0, <3", "2.0.0"));
    // `<3` is below 3.0.0, and 3.0.0's pre-releases are (as in Flux): `<3.0.0-0` keeps them out.
    assert!(in_range(">=2.0.0-rc.0, <3", "3.0.0-rc.1"));
    assert!(!in_range(">=2.0.0-rc.0, <3.0.0-0", "3.0.0-rc.1") && in_range(">=2.0.0-rc.0, <3.0.0-0", "2.9.0"));
    assert!(!in_range(">=2.0.0-rc.0, <3", "2.0.0-beta.9"), "below rc.0");
    assert!(!in_range("~2.0.0-rc.0 || >=3", "3.1.0-rc.1"), "only the alternative that names one");
    assert!(in_range("~2.0.0-rc.0 || >=3", "2.0.0-rc.1") && in_range("~2.0.0-rc.0 || >=3", "3.1.0"));
    assert!(in_range(">=1.0.0-0", "1.2.0-alpha"), "-0: every pre-release");
}

#[test]
fn malformed_ranges_say_what_is_wrong() {
    let cases = [
        ("", "empty"),
        ("   ", "empty"),
        ("~1.x.3", "a wildcard must be the last component"),
        ("1.2.3.4", "more than three components"),
        (">=", "\">=\" has no version"),
        (">= 1.0,", "a comma with no comparator"),
        (">=1.0 ||", "an empty alternative"),
        ("|| 1.0", "an empty alternative"),
        ("foo", "\"foo\" is not a version"),
        (">= bar", "\"bar\" is not a version"),
        ("BAR >= 1.2.3", "\"BAR\" is not a version"),
        ("12.3.34~ 1.2.3", "is not a version"),
        (">=1.0<2", "is not a version"),
        (">=1 - 2", "hyphen range"),
        ("1 - >=2", "hyphen range"),
        ("1.0.0-", "empty pre-release"),
        ("1.0.0-01", "pre-release"),
        ("1.0.0+", "build metadata"),
        ("^*", "a lone wildcard"),
        ("<=*", "a lone wildcard"),
        ("!=x", "a lone wildcard"),
        ("99999999999999999999999", "too large"),
    ];
    for (text, expected) in cases {
        match Range::parse(text) {
            Ok(r) => panic!("{text:?} must be refused, parsed as {r:?}"),
            Err(e) => {
                assert!(e.starts_with("semver range"), "{e}");
                assert!(e.contains(expected), "{text:?}: {e:?} should say {expected:?}");
            }
        }
    }
    for ok in ["*", "x", ">=*", "=*", "~*", "1.0.0 - 2", "1.2 - 1.4.5, !=1.3.0", "v1.2.3", "1.2.3-rc.1+b.7"] {
        assert!(Range::parse(ok).is_ok(), "{ok}");
    }
}

#[test]
fn policies_parse_and_show_as_written() {
    for text in [
        "digest",
        "semver:~1.4",
        "semver:>=2.0.0 <3",
        "semver:^1.0.0",
        "semver:1.x",
        "semver:>=2.0.0-rc.0, <3",
        "semver:1.2 - 1.4.5 || >=2",
        "pattern:^main-[0-9a-f]+-(?P<n>[0-9]+)$ numerical:n",
        "pattern:^build-([0-9]+)$ numerical:1 desc",
        "pattern:^release-.* alphabetical",
        "pattern:^release-(?P<date>.*)$ alphabetical:date desc",
        "pattern:^[0-9]+$ numerical",
        "newest-pushed:^nightly-",
    ] {
        let p = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(p.to_string(), text);
    }
    // Defaults and surrounding space.
    assert_eq!(
        parse("  pattern:^a-([0-9]+)$ numerical:1 asc ").unwrap().to_string(),
        "pattern:^a-([0-9]+)$ numerical:1"
    );
    assert_eq!(parse("semver: ~1.4 ").unwrap().to_string(), "semver:~1.4");
    assert!(matches!(parse(" digest ").unwrap(), Policy::Digest));
    assert!(matches!(
        parse("pattern:x alphabetical desc").unwrap(),
        Policy::Pattern { order: Order::Alphabetical(Direction::Desc), group: None, .. }
    ));
}

#[test]
fn malformed_policies_say_what_is_wrong() {
    let cases = [
        ("", "unknown rollout policy"),
        ("Digest", "expected digest, semver:<range>"),
        ("latest", "unknown rollout policy \"latest\""),
        ("semver", "semver needs a range"),
        ("semver:", "semver range \"\": empty"),
        ("semver:~1.x.3", "a wildcard must be the last component"),
        ("pattern:^main-", "needs an order after the pattern"),
        ("pattern:", "needs an order"),
        ("pattern:^main- newest", "expected numerical[:<group>] or alphabetical[:<group>]"),
        ("pattern:^main-(?P<n>[0-9]+) numerical:m", "no group named \"m\""),
        ("pattern:^main-([0-9]+) numerical:2", "there is no group 2 (it has 1)"),
        ("pattern:^main-([0-9]+) numerical:", "empty group name"),
        ("pattern:^main-([0-9]+ numerical", "pattern \"^main-([0-9]+\": unclosed group"),
        ("pattern:^a numerical up", "expected asc or desc"),
        ("pattern:^a b numerical", "expected numerical"),
        ("pattern:^a numerical desc more", "unexpected \"more\""),
        ("newest-pushed", "newest-pushed needs a pattern"),
        ("newest-pushed:", "newest-pushed takes one pattern"),
        ("newest-pushed:a b", "newest-pushed takes one pattern"),
        ("newest-pushed:(", "unclosed group"),
        ("newest-pushed:a{1000}{1000}", "pattern \"a{1000}{1000}\""),
    ];
    for (text, expected) in cases {
        match parse(text) {
            Ok(p) => panic!("{text:?} must be refused, parsed as {p}"),
            Err(e) => {
                assert!(e.contains(expected), "{text:?}: {e:?} should say {expected:?}");
                assert!(!e.contains('\n'), "one line for an Event: {e:?}");
            }
        }
    }
    assert!(parse(&format!("newest-pushed:{}", "a".repeat(MAX_POLICY_LEN))).unwrap_err().contains("longer than"));
}

fn cand(tag: &str) -> Candidate {
    Candidate { tag: tag.into(), digest: Some(format!("sha256:{:0>64}", tag.len())), pushed_at_ms: None }
}

fn cands(tags: &[&str]) -> Vec<Candidate> {
    tags.iter().map(|t| cand(t)).collect()
}

fn pick(policy: &str, tags: &[&str], current: Option<&str>) -> Option<String> {
    select(&parse(policy).unwrap(), &cands(tags), current).tag
}

#[test]
fn semver_picks_the_highest_version_in_range_with_or_without_v() {
    let tags = ["v1.4.2", "1.4.10", "v1.4.9", "1.5.0", "latest", "1.4", "v1.4.11-rc.1", "main-abc", "01.4.12"];
    let s = select(&parse("semver:~1.4").unwrap(), &cands(&tags), None);
    assert_eq!(
        s.tag.as_deref(),
        Some("1.4.10"),
        "numeric, not text, order; v optional; 1.4 and 01.4.12 are not semver"
    );
    assert_eq!(s.reason, "1.4.10 is the highest of 3 tags matching ~1.4");
    assert_eq!(s.digest, cand("1.4.10").digest);
    assert_eq!(pick("semver:>=1.0.0", &tags, None).as_deref(), Some("1.5.0"));
    assert_eq!(pick("semver:>=1.4.11-0 <1.5", &tags, None).as_deref(), Some("v1.4.11-rc.1"));
    assert_eq!(pick("semver:>=2", &tags, None), None);
    // Upper-case V is not a version prefix (as in Flux).
    assert_eq!(pick("semver:*", &["V9.0.0", "1.0.0"], None).as_deref(), Some("1.0.0"));
}

#[test]
fn semver_pre_releases_only_when_the_range_names_one() {
    let tags = ["2.0.0-rc.1", "2.0.0-rc.2", "1.9.0", "2.1.0-beta.1", "3.0.0-rc.1"];
    assert_eq!(pick("semver:>=1.0.0 <3", &tags, None).as_deref(), Some("1.9.0"));
    assert_eq!(pick("semver:>=2.0.0-rc.0, <3", &tags, None).as_deref(), Some("3.0.0-rc.1"));
    assert_eq!(pick("semver:>=2.0.0-rc.0, <3.0.0-0", &tags, None).as_deref(), Some("2.1.0-beta.1"));
    assert_eq!(pick("semver:~2.0.0-rc.0", &tags, None).as_deref(), Some("2.0.0-rc.2"));
    // The release beats its pre-releases.
    let with_release = ["2.0.0-rc.1", "2.0.0", "2.0.0-rc.2"];
    assert_eq!(pick("semver:>=2.0.0-rc.0, <3", &with_release, None).as_deref(), Some("2.0.0"));
    // Pre-release identifiers: numeric ones as numbers, below alphanumeric ones.
    let rcs = ["1.0.0-rc.9", "1.0.0-rc.10", "1.0.0-alpha", "1.0.0-rc"];
    assert_eq!(pick("semver:>=1.0.0-0", &rcs, None).as_deref(), Some("1.0.0-rc.10"));
}

#[test]
fn semver_ties_are_broken_by_build_metadata_then_tag_text() {
    let tags = ["1.2.3+build.9", "v1.2.3", "1.2.3+build.10", "1.2.3"];
    for order in [tags, [tags[3], tags[2], tags[1], tags[0]], [tags[1], tags[3], tags[0], tags[2]]] {
        assert_eq!(pick("semver:1.2.x", &order, None).as_deref(), Some("1.2.3+build.10"), "{order:?}");
    }
    assert_eq!(pick("semver:*", &["1.2.3", "v1.2.3"], None).as_deref(), Some("v1.2.3"), "then the text");
    // Build metadata never lifts a version over a higher one.
    assert_eq!(pick("semver:*", &["1.2.3+zzz", "1.2.4+aaa"], None).as_deref(), Some("1.2.4+aaa"));
    // A workload on the newest build of a version stays there.
    let p = parse("semver:*").unwrap();
    assert!(is_backwards(&p, "1.2.3+build.10", "1.2.3+build.9", &[]));
}

#[test]
fn registry_tags_write_build_metadata_after_an_underscore() {
    assert_eq!(semver_of("1.4.3_build.7"), Some(Version::parse("1.4.3+build.7").unwrap()));
    assert_eq!(semver_of("v1.4.3-rc.1_ci.12"), Some(Version::parse("1.4.3-rc.1+ci.12").unwrap()));
    for not_a_version in ["1.4.3_", "1.4.3_a_b", "1.4.3+x_y", "1.4_3", "_1.4.3"] {
        assert_eq!(semver_of(not_a_version), None, "{not_a_version}");
    }
    let tags = ["1.4.3_build.9", "1.4.3_build.10", "1.4.2_build.99", "1.5.0-rc.1_b.1"];
    assert_eq!(pick("semver:~1.4", &tags, None).as_deref(), Some("1.4.3_build.10"));
    assert_eq!(pick("semver:>=1.5.0-rc.0", &tags, None).as_deref(), Some("1.5.0-rc.1_b.1"));
}

#[test]
fn never_backwards_keeps_the_running_tag() {
    let tags = ["1.4.2", "1.4.3", "1.4.9"];
    let p = parse("semver:>=1.0.0").unwrap();
    // 1.5.0 runs but was deleted from the registry: it stays.
    let s = select(&p, &cands(&tags), Some("1.5.0"));
    assert_eq!(s.tag.as_deref(), Some("1.5.0"));
    assert_eq!(s.digest, None, "not among the candidates");
    assert_eq!(
        s.reason,
        "keeping the running 1.5.0: 1.4.9, the highest of 3 tags matching >=1.0.0, is below it and a policy never moves a workload back"
    );
    let s = select(&p, &cands(&["1.4.2", "1.5.0"]), Some("1.5.0"));
    assert_eq!((s.tag.as_deref(), s.digest), (Some("1.5.0"), cand("1.5.0").digest));
    assert_eq!(s.reason, "1.5.0 is the highest of 2 tags matching >=1.0.0, and runs already");
    // Forward moves are fine.
    assert_eq!(select(&p, &cands(&tags), Some("1.4.2")).tag.as_deref(), Some("1.4.9"));
    // Nothing matches but the running tag does: keep it.
    let s = select(&p, &cands(&["latest"]), Some("v1.2.0"));
    assert_eq!(s.tag.as_deref(), Some("v1.2.0"));
    assert_eq!(s.reason, "no tag of 1 matches >=1.0.0; keeping the running v1.2.0");
    assert!(is_backwards(&p, "1.5.0", "1.4.9", &[]));
    assert!(!is_backwards(&p, "1.4.9", "1.5.0", &[]));
    assert!(!is_backwards(&p, "1.4.9", "1.4.9", &[]));
}

#[test]
fn a_changed_policy_may_move_a_workload_back() {
    // The range was ^1 and is now ~1.4: the running 1.5.0 is outside it, so the policy's pick
    // (lower) stands. This is how a user rolls back on purpose.
    let tags = ["1.4.2", "1.4.9", "1.5.0", "2.0.0"];
    let s = select(&parse("semver:~1.4").unwrap(), &cands(&tags), Some("1.5.0"));
    assert_eq!(s.tag.as_deref(), Some("1.4.9"));
    assert_eq!(s.reason, "1.4.9 is the highest of 2 tags matching ~1.4 (the running 1.5.0 is outside this policy)");
    assert!(!is_backwards(&parse("semver:~1.4").unwrap(), "1.5.0", "1.4.9", &[]));
    // A range that excludes the next major does not take it.
    assert_eq!(pick("semver:^1.4", &tags, Some("1.5.0")).as_deref(), Some("1.5.0"));
    // A workload on a non-semver tag (latest) moves onto the policy.
    assert_eq!(pick("semver:^1.4", &tags, Some("latest")).as_deref(), Some("1.5.0"));
}

#[test]
fn numerical_over_a_few_hundred_tags() {
    let mut tags: Vec<String> = (1..=300).map(|n| format!("main-{:07x}-{n}", n * 7919)).collect();
    tags.extend(["main-zzz-x".to_string(), "feature-abc-999".to_string(), "latest".to_string()]);
    // A deterministic shuffle: the choice never depends on the listing order.
    let mut shuffled = tags.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, (i * 2654435761) % (i + 1));
    }
    let p = parse("pattern:^main-[0-9a-f]+-(?P<n>[0-9]+)$ numerical:n").unwrap();
    for list in [&tags, &shuffled] {
        let c: Vec<Candidate> = list.iter().map(|t| cand(t)).collect();
        let s = select(&p, &c, None);
        assert_eq!(s.tag.as_deref(), Some(format!("main-{:07x}-300", 300 * 7919).as_str()));
        assert_eq!(
            s.reason,
            format!(
                "main-{:07x}-300 is the highest number (300) of 300 tags matching ^main-[0-9a-f]+-(?P<n>[0-9]+)$",
                300 * 7919
            )
        );
        let r = ranked(&p, &c);
        assert_eq!(r.len(), 300);
        assert!(r.first().unwrap().tag.ends_with("-300") && r.last().unwrap().tag.ends_with("-1"));
        // Not text order: -99 is below -100.
        let pos = |suffix: &str| r.iter().position(|c| c.tag.ends_with(suffix)).unwrap();
        assert!(pos("-100") < pos("-99"));
    }
    let desc = parse("pattern:^main-[0-9a-f]+-(?P<n>[0-9]+)$ numerical:n desc").unwrap();
    let c: Vec<Candidate> = shuffled.iter().map(|t| cand(t)).collect();
    assert!(select(&desc, &c, None).tag.unwrap().ends_with("-1"));
}

#[test]
fn numbers_compare_exactly() {
    let p = parse("pattern:^b-(.*)$ numerical:1").unwrap();
    let order = |a: &str, b: &str| is_backwards(&p, &format!("b-{b}"), &format!("b-{a}"), &[]);
    assert!(order("9", "10"));
    assert!(order("-2", "-1") && order("-1", "0") && order("0", "0.5") && order("0.45", "0.5"));
    assert!(order("20260514093000123", "20260514093000124"), "beyond f64's exact integers");
    assert!(order("1.5", "2") && order("2", "2.05"));
    // Equal numbers: the tag text decides, so the order stays total.
    assert!(order("007", "7") && order("-0", "0") && order("1.5", "1.50"));
    // Not numbers: ignored.
    let c = cands(&["b-1e3", "b-inf", "b-NaN", "b-+4", "b-.5", "b-5.", "b-0x10", "b-", "b-3"]);
    assert_eq!(select(&p, &c, None).tag.as_deref(), Some("b-3"));
    assert_eq!(ranked(&p, &c).len(), 1);
    // Without a group, the whole tag is the number.
    assert_eq!(pick("pattern:^[0-9]+$ numerical", &["9", "10", "x11"], None).as_deref(), Some("10"));
}

#[test]
fn alphabetical_orders_by_bytes() {
    let tags = ["release-2026-05-01", "release-2026-04-30", "release-2026-05-01-hotfix", "Release-2027", "other"];
    let s = select(&parse("pattern:^release-.* alphabetical").unwrap(), &cands(&tags), None);
    assert_eq!(s.tag.as_deref(), Some("release-2026-05-01-hotfix"));
    assert_eq!(s.reason, "release-2026-05-01-hotfix is the last alphabetically of 3 tags matching ^release-.*");
    assert_eq!(pick("pattern:^release-.* alphabetical desc", &tags, None).as_deref(), Some("release-2026-04-30"));
    let s = select(&parse("pattern:^(?i)release-(?P<d>.*)$ alphabetical:d").unwrap(), &cands(&tags), None);
    assert_eq!(s.tag.as_deref(), Some("Release-2027"));
    assert_eq!(s.reason, "Release-2027 is the last alphabetically (2027) of 4 tags matching ^(?i)release-(?P<d>.*)$");
    // An optional group that did not take part: the tag is ignored.
    assert_eq!(pick("pattern:^r(-(?P<d>[0-9]+))?$ alphabetical:d", &["r", "r-1"], None).as_deref(), Some("r-1"));
}

fn pushed(tag: &str, at: Option<i64>) -> Candidate {
    Candidate { tag: tag.into(), digest: None, pushed_at_ms: at.map(|s| s * 1000) }
}

#[test]
fn newest_pushed_uses_push_times() {
    let c = vec![
        pushed("nightly-0513", Some(1_778_630_400)),
        pushed("nightly-0514", Some(1_778_716_800)),
        pushed("nightly-old-but-late", Some(1_778_716_801)),
        pushed("nightly-unknown", None),
        pushed("stable", Some(1_778_800_000)),
    ];
    let p = parse("newest-pushed:^nightly-[0-9]+$").unwrap();
    let s = select(&p, &c, None);
    assert_eq!(s.tag.as_deref(), Some("nightly-0514"));
    assert_eq!(
        s.reason,
        "nightly-0514 is the newest pushed (2026-05-14T00:00:00Z) of 2 tags matching ^nightly-[0-9]+$"
    );
    assert!(is_backwards(&p, "nightly-0514", "nightly-0513", &c));
    // The running tag's push time comes from its candidate; unknown, it has no place.
    assert!(!is_backwards(&p, "nightly-0599", "nightly-0513", &c));
    // It matches the pattern though: kept rather than moved to a tag that may be older.
    let s = select(&parse("newest-pushed:^nightly-").unwrap(), &c, Some("nightly-unknown"));
    assert_eq!(s.tag.as_deref(), Some("nightly-unknown"), "{}", s.reason);
    assert!(s.reason.contains("its push time is not known"), "{}", s.reason);
    // Outside the pattern, the policy's pick stands.
    let s = select(&p, &c, Some("nightly-unknown"));
    assert_eq!(s.tag.as_deref(), Some("nightly-0514"));
    assert!(s.reason.ends_with("(the running nightly-unknown is outside this policy)"), "{}", s.reason);
    // Equal push times: the tag text decides.
    let tie = vec![pushed("n-b", Some(5)), pushed("n-a", Some(5))];
    assert_eq!(select(&parse("newest-pushed:^n-").unwrap(), &tie, None).tag.as_deref(), Some("n-b"));
}

#[test]
fn digest_follows_the_workloads_own_tag() {
    let p = parse("digest").unwrap();
    let c = cands(&["stable", "1.0.0"]);
    let s = select(&p, &c, Some("stable"));
    assert_eq!((s.tag.as_deref(), s.digest.clone()), (Some("stable"), cand("stable").digest));
    assert_eq!(s.reason, format!("digest follows the tag stable, now at {}", cand("stable").digest.unwrap()));
    assert_eq!(select(&p, &c, Some("gone")).tag, None);
    assert_eq!(select(&p, &c, None).tag, None);
    assert!(ranked(&p, &c).is_empty());
    assert!(!is_backwards(&p, "1.0.0", "stable", &c));
}

#[test]
fn empty_and_single_lists() {
    let s = select(&parse("semver:*").unwrap(), &[], None);
    assert_eq!((s.tag, s.reason.as_str()), (None, "no tag of 0 matches *"));
    let s = select(&parse("semver:*").unwrap(), &cands(&["1.0.0"]), None);
    assert_eq!(s.reason, "1.0.0 is the highest of 1 tag matching *");
}

/// A version as a tag: random numbers, pre-release and build, with or without `v`.
fn version_tag() -> impl Strategy<Value = String> {
    (
        0u64..4,
        0u64..4,
        0u64..4,
        prop::option::of(prop::sample::select(vec!["alpha", "alpha.1", "beta", "rc.1", "rc.2", "rc.10", "0", "1"])),
        prop::option::of(prop::sample::select(vec!["b.1", "b.2", "b.10", "x", "001"])),
        any::<bool>(),
    )
        .prop_map(|(ma, mi, pa, pre, build, v)| {
            let mut t = format!("{}{ma}.{mi}.{pa}", if v { "v" } else { "" });
            if let Some(p) = pre {
                t.push('-');
                t.push_str(p);
            }
            if let Some(b) = build {
                t.push('+');
                t.push_str(b);
            }
            t
        })
}

/// Tags that the non-semver policies below consider or skip.
fn any_tag() -> impl Strategy<Value = String> {
    prop_oneof![version_tag(), "[a-c]-(-?[0-9]{1,3}(\\.[0-9]{1,2})?|[a-z]{1,2})", "[a-c]{1,3}"]
}

fn policies() -> Vec<Policy> {
    [
        "semver:*",
        "semver:>=0.0.0-0",
        "semver:~1.2",
        "semver:>=1.0.0-rc.1, <3",
        "semver:^0.1 || >=2.1.0-0",
        "pattern:^[a-c]-(?P<n>.*)$ numerical:n",
        "pattern:^[a-c]-(.*)$ numerical:1 desc",
        "pattern:^[a-c]-(?P<t>.*)$ alphabetical:t",
        "pattern:. alphabetical desc",
        "newest-pushed:.",
    ]
    .iter()
    .map(|p| parse(p).unwrap())
    .collect()
}

fn with_times(tags: &[String], times: &[i64]) -> Vec<Candidate> {
    let mut seen = std::collections::HashSet::new();
    tags.iter()
        .zip(times.iter().cycle())
        .filter(|(t, _)| seen.insert(t.to_string()))
        .map(|(t, at)| Candidate { tag: t.clone(), digest: None, pushed_at_ms: Some(*at) })
        .collect()
}

proptest! {
    #[test]
    fn parsing_never_panics(s in ".{0,60}", r in "[ <>=!~^v0-9.xX*|,+-]{0,30}") {
        let _ = parse(&s);
        let _ = parse(&format!("semver:{r}"));
        let _ = parse(&format!("pattern:{s} numerical"));
    }

    /// Version order is the semver crate's precedence; equal precedence is ordered by build
    /// metadata (the crate's `Ord`), then by the text.
    #[test]
    fn semver_order_agrees_with_the_semver_crate(a in version_tag(), b in version_tag()) {
        let p = parse("semver:>=0.0.0-0").unwrap();
        let (va, vb) = (semver_of(&a).unwrap(), semver_of(&b).unwrap());
        let backwards = is_backwards(&p, &a, &b, &[]);
        match va.cmp_precedence(&vb) {
            Ordering::Equal => prop_assert_eq!(backwards, (&vb, &b) < (&va, &a)),
            o => prop_assert_eq!(backwards, o == Ordering::Greater),
        }
    }

    /// On versions without pre-releases, ranges whose meaning is the same in Cargo's syntax (so
    /// not bare versions, `!=`, lone wildcards or `~0.0.0`) agree with the semver crate.
    #[test]
    fn ranges_agree_with_cargo_where_the_syntaxes_mean_the_same(
        ops in prop::collection::vec(prop::sample::select(vec![">=", ">", "<", "<=", "=", "~", "^"]), 1..3),
        parts in prop::collection::vec((0u64..3, prop::option::of(0u64..3), prop::option::of(0u64..3)), 2),
        v in (0u64..4, 0u64..4, 0u64..4),
    ) {
        let comparators: Vec<String> = ops.iter().zip(&parts).map(|(op, (ma, mi, pa))| {
            let mut s = format!("{op}{ma}");
            if let Some(mi) = mi {
                s.push_str(&format!(".{mi}"));
                if let Some(pa) = pa {
                    s.push_str(&format!(".{pa}"));
                }
            }
            s
        }).collect();
        prop_assume!(!comparators.iter().any(|c| c == "~0.0.0"));
        let ours = Range::parse(&comparators.join(" ")).unwrap();
        let cargo = semver::VersionReq::parse(&comparators.join(", ")).unwrap();
        let v = Version::new(v.0, v.1, v.2);
        prop_assert_eq!(ours.matches(&v), cargo.matches(&v), "{:?} with {}", comparators, v);
    }

    /// Each policy's order is total over the tags it considers: a strict ranking, the same
    /// whatever the listing order, that `is_backwards` agrees with pair by pair.
    #[test]
    fn orders_are_total(tags in prop::collection::vec(any_tag(), 0..14), times in prop::collection::vec(0i64..5, 1..4), seed in any::<u64>()) {
        let candidates = with_times(&tags, &times);
        let mut reversed = candidates.clone();
        reversed.reverse();
        let rotated = {
            let mut r = candidates.clone();
            if !r.is_empty() { let k = (seed as usize) % r.len(); r.rotate_left(k); }
            r
        };
        for p in policies() {
            let ranked_tags = |c: &[Candidate]| ranked(&p, c).iter().map(|c| c.tag.clone()).collect::<Vec<_>>();
            let r = ranked_tags(&candidates);
            prop_assert_eq!(&r, &ranked_tags(&reversed), "{}", p);
            prop_assert_eq!(&r, &ranked_tags(&rotated), "{}", p);
            for (i, a) in r.iter().enumerate() {
                prop_assert!(!is_backwards(&p, a, a, &candidates));
                for b in &r[i + 1..] {
                    // a ranks above b: going from a to b is backwards, from b to a is not.
                    prop_assert!(is_backwards(&p, a, b, &candidates), "{} {} -> {}", p, a, b);
                    prop_assert!(!is_backwards(&p, b, a, &candidates), "{} {} -> {}", p, b, a);
                }
            }
            // The selection without a running tag is the first of the ranking.
            prop_assert_eq!(select(&p, &candidates, None).tag, r.first().cloned(), "{}", p);
        }
    }

    /// Whatever runs, the selection is never below it in the policy's order; and it is the
    /// best candidate unless the running tag is better.
    #[test]
    fn selection_is_never_backwards(tags in prop::collection::vec(any_tag(), 0..14), times in prop::collection::vec(0i64..5, 1..4), current in any_tag()) {
        let candidates = with_times(&tags, &times);
        for p in policies() {
            let s = select(&p, &candidates, Some(&current));
            let best = ranked(&p, &candidates).first().map(|c| c.tag.clone());
            match &s.tag {
                Some(t) => {
                    prop_assert!(!is_backwards(&p, &current, t, &candidates), "{}: {} -> {}: {}", p, current, t, s.reason);
                    prop_assert!(Some(t) == best.as_ref() || t == &current, "{}: {:?}", p, s);
                    if let Some(b) = &best
                        && t == &current
                        && b != &current
                    {
                        // Or newest-pushed keeps a running tag it matches but cannot place.
                        let unplaceable = matches!(p, Policy::NewestPushed(_))
                            && p.considers(&current)
                            && !candidates.iter().any(|c| c.tag == current && c.pushed_at_ms.is_some());
                        prop_assert!(unplaceable || is_backwards(&p, &current, b, &candidates), "{}: kept {} over {}", p, current, b);
                    }
                }
                None => prop_assert!(best.is_none(), "{}: {:?}", p, s),
            }
            prop_assert!(!s.reason.is_empty());
        }
    }
}

#[test]
fn newest_pushed_keeps_a_running_tag_it_cannot_place() {
    let p = parse("newest-pushed:^nightly-").unwrap();
    let c = vec![pushed("nightly-1", Some(1_000)), pushed("nightly-2", Some(2_000))];
    // nightly-9 was pushed after both, but it is no longer listed (or its push time is unknown):
    // kept, not moved to an older tag on a guess.
    let s = select(&p, &c, Some("nightly-9"));
    assert_eq!(s.tag.as_deref(), Some("nightly-9"), "{}", s.reason);
    assert!(s.reason.contains("push time is not known"), "{}", s.reason);
    let unknown_time = vec![pushed("nightly-1", Some(1_000)), pushed("nightly-9", None)];
    assert_eq!(select(&p, &unknown_time, Some("nightly-9")).tag.as_deref(), Some("nightly-9"));
    // A running tag outside the pattern: the user changed the policy, its pick stands.
    assert_eq!(select(&p, &c, Some("stable")).tag.as_deref(), Some("nightly-2"));
    // Nothing placeable at all: still kept.
    assert_eq!(select(&p, &[pushed("nightly-1", None)], Some("nightly-9")).tag.as_deref(), Some("nightly-9"));
}

#[test]
fn a_referrers_index_tag_is_never_a_candidate() {
    let referrers = format!("sha256-{}", "f".repeat(64));
    assert_eq!(pick("pattern:. alphabetical", &["v1", &referrers], None).as_deref(), Some("v1"));
    let mut candidates = cands(&["nightly-1", &referrers]);
    for (i, c) in candidates.iter_mut().enumerate() {
        c.pushed_at_ms = Some(i as i64);
    }
    let policy = parse("newest-pushed:.").unwrap();
    assert_eq!(
        select(&policy, &candidates, None).tag.as_deref(),
        Some("nightly-1"),
        "pushed later, still not a version"
    );
}
