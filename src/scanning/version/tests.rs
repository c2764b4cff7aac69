use std::cmp::Ordering::{self, Equal, Greater, Less};

use proptest::prelude::*;

use super::*;

// ---- helpers ----

fn op(symbol: &str) -> Ordering {
    match symbol {
        "<" => Less,
        "=" => Equal,
        ">" => Greater,
        _ => panic!("unknown operator {symbol}"),
    }
}

/// `a op b` and its mirror `b op' a` both hold in `ecosystem`.
#[track_caller]
fn check(ecosystem: &str, a: &str, symbol: &str, b: &str) {
    let expected = op(symbol);
    assert_eq!(compare(ecosystem, a, b), Some(expected), "{ecosystem}: {a} {symbol} {b}");
    assert_eq!(compare(ecosystem, b, a), Some(expected.reverse()), "{ecosystem}: {b} (reverse of {symbol}) {a}");
}

/// Each table line is `a op b`.
#[track_caller]
fn check_table(ecosystem: &str, table: &[(&str, &str, &str)]) {
    for (a, symbol, b) in table {
        check(ecosystem, a, symbol, b);
    }
}

/// The versions are listed in strictly increasing order: every pair compares accordingly.
#[track_caller]
fn check_sorted(ecosystem: &str, versions: &[&str]) {
    for (i, a) in versions.iter().enumerate() {
        for (j, b) in versions.iter().enumerate() {
            assert_eq!(compare(ecosystem, a, b), Some(i.cmp(&j)), "{ecosystem}: {a} vs {b}");
        }
    }
}

#[track_caller]
fn check_invalid(ecosystem: &str, versions: &[&str]) {
    for v in versions {
        assert_eq!(compare(ecosystem, v, v), None, "{ecosystem}: {v:?} should not parse");
        assert_eq!(compare(ecosystem, v, "1.0"), None, "{ecosystem}: {v:?} should not parse");
        assert_eq!(compare(ecosystem, "1.0", v), None, "{ecosystem}: {v:?} should not parse");
    }
}

#[track_caller]
fn check_valid(ecosystem: &str, versions: &[&str]) {
    for v in versions {
        assert_eq!(compare(ecosystem, v, v), Some(Equal), "{ecosystem}: {v:?} should parse");
    }
}

// ---- dispatch ----

#[test]
fn ecosystems_dispatch_with_or_without_a_release() {
    assert_eq!(Scheme::of("Debian"), Some(Scheme::Dpkg));
    assert_eq!(Scheme::of("Debian:12"), Some(Scheme::Dpkg));
    assert_eq!(Scheme::of("Ubuntu:22.04:LTS"), Some(Scheme::Dpkg));
    assert_eq!(Scheme::of("Ubuntu:Pro:18.04:LTS"), Some(Scheme::Dpkg));
    assert_eq!(Scheme::of("Alpine:v3.20"), Some(Scheme::Apk));
    assert_eq!(Scheme::of("Wolfi"), Some(Scheme::Apk));
    assert_eq!(Scheme::of("Red Hat:enterprise_linux:9::appstream"), Some(Scheme::Rpm));
    assert_eq!(Scheme::of("Rocky Linux:9"), Some(Scheme::Rpm));
    assert_eq!(Scheme::of("AlmaLinux:8"), Some(Scheme::Rpm));
    assert_eq!(Scheme::of("openSUSE:Leap 15.5"), Some(Scheme::Rpm));
    assert_eq!(Scheme::of("SUSE:Linux Enterprise Server 15 SP5"), Some(Scheme::Rpm));
    assert_eq!(Scheme::of("Mageia:9"), Some(Scheme::Rpm));
    assert_eq!(Scheme::of("Go"), Some(Scheme::Go));
    assert_eq!(Scheme::of("npm"), Some(Scheme::Semver));
    assert_eq!(Scheme::of("crates.io"), Some(Scheme::Semver));
    assert_eq!(Scheme::of("SEMVER"), Some(Scheme::Semver));
    assert_eq!(Scheme::of("PyPI"), Some(Scheme::Pep440));
    // OSV names are case-sensitive; unknown ecosystems have no order.
    for unknown in ["debian", "pypi", "Maven", "NuGet", "RubyGems", "Packagist", "GIT", "", ":12"] {
        assert_eq!(Scheme::of(unknown), None, "{unknown}");
        assert_eq!(compare(unknown, "1.0", "1.0"), None, "{unknown}");
    }
}

#[test]
fn the_release_suffix_does_not_change_the_order() {
    check("Debian:12", "3.0.20-1~deb12u2", "<", "3.0.20-1");
    check("Debian:7", "1:1.2.13.dfsg-1", ">", "2.0");
    check("Alpine:v3.20", "1.2.3_rc1-r0", "<", "1.2.3-r0");
    check("Red Hat:enterprise_linux:9::appstream", "0:1.0-1.el9", "<", "1:0.5-1.el9");
}

// ---- dpkg ----

#[test]
fn dpkg_examples_from_the_fixtures() {
    check_table(
        "Debian",
        &[
            ("3.0.20-1~deb12u2", "<", "3.0.20-1"),
            ("1:1.2.13.dfsg-1", ">", "2.0"),
            ("5.2.15-2+b13", ">", "5.2.15-2"),
            ("1.0~rc1", "<", "1.0"),
            ("1.0", "<", "1.0+b1"),
            ("2.36-9+deb12u14", ">", "2.36-9+deb12u4"),
            ("2.5.0-1+deb12u2", ">", "2.5.0-1+deb12u1"),
            ("2.5.0-1+deb12u2", "<", "2.5.0-1+deb12u10"),
            ("5.36.0-7+deb12u3", "<", "5.36.0-7+deb13u1"),
            ("1.5.4+dfsg2-5", ">", "1.5.4-5"),
            ("1.5.4+dfsg2-5", "<", "1.5.5-1"),
            ("10.42-1", ">", "10.9-9"),
            ("1:1.2.13.dfsg-1", ">", "1:1.2.12.dfsg-1"),
            ("1:2.38.1-5+deb12u3", ">", "2.39-1"),
            ("7u1", "<", "7u2"),
            ("0", ">", "0~~"),
        ],
    );
    check_table(
        "Ubuntu",
        &[
            ("1.1.1f-1ubuntu2.20", ">", "1.1.1f-1ubuntu2.3"),
            ("2.31-0ubuntu9.14", "<", "2.31-0ubuntu9.16"),
            ("1:9.18.18-0ubuntu0.22.04.1", "<", "1:9.18.18-0ubuntu0.22.04.2"),
        ],
    );
}

/// Cases of dpkg's own `scripts/t/Dpkg_Version.t`.
#[test]
fn dpkg_own_cases() {
    check_table(
        "Debian",
        &[
            ("1.0-1", "<", "2.0-2"),
            ("2.2~rc-4", "<", "2.2-1"),
            ("2.2-1", ">", "2.2~rc-4"),
            ("1.0000-1", "=", "1.0-1"),
            ("1", "=", "0:1"),
            ("0", "=", "0:0-0"),
            ("2:2.5", ">", "1:7.5"),
            ("1:0foo", ">", "0foo"),
            ("0:0foo", "=", "0foo"),
            ("0foo", "=", "0foo"),
            ("0foo-0", "=", "0foo"),
            ("0foo", "=", "0foo-0"),
            ("0foo", ">", "0fo"),
            ("0foo-0", "<", "0foo+"),
            ("0foo~1", "<", "0foo"),
            ("0foo~foo+Bar", "<", "0foo~foo+bar"),
            ("0foo~~", "<", "0foo~"),
            ("1~", "<", "1"),
            ("12345+that-really-is-some-ver-0", "<", "12345+that-really-is-some-ver-10"),
            ("0foo-0", "<", "0foo-01"),
            ("0foo.bar", ">", "0foobar"),
            ("0foo.bar", ">", "0foo1bar"),
            ("0foo.bar", ">", "0foo0bar"),
            ("0foo1bar-1", "<", "0foobar-1"),
            ("0foo2.0", ">", "0foo2"),
            ("0foo2.0.0", "<", "0foo2.10.0"),
            ("0foo2.0", "<", "0foo2.0.0"),
            ("0foo2.0", "<", "0foo2.10"),
            ("0foo2.1", "<", "0foo2.10"),
            ("1.09", "=", "1.9"),
            ("1.0.8+nmu1", ">", "1.0.8"),
            ("3.11", ">", "3.10+nmu1"),
            ("0.9j-20080306-4", ">", "0.9i-20070324-2"),
            ("1.2.0~b7-1", ">", "1.2.0~b6-1"),
            ("1.011-1", ">", "1.06-2"),
            ("0.0.9+dfsg1-1", ">", "0.0.8+dfsg1-3"),
            ("4.6.99+svn6582-1", ">", "4.6.99+svn6496-1"),
            ("53", ">", "52"),
            ("0.9.9~pre122-1", ">", "0.9.9~pre111-1"),
            ("2:2.3.2-2+lenny2", ">", "2:2.3.2-2"),
            ("1:3.8.1-1", ">", "3.8.GA-1"),
            ("1.0.1+gpl-1", ">", "1.0.1-2"),
            ("1a", "<", "1000a"),
        ],
    );
}

/// Parsing as dpkg's `lib/dpkg/t/t-version.c` tests it.
#[test]
fn dpkg_parsing() {
    check_table(
        "Debian",
        &[
            ("0:0", "=", "0"),
            ("0:0-0", "=", "0-0"),
            ("0:0.0-0.0", "=", "0.0-0.0"),
            ("0-00", "=", "00-0"),
            ("1:0", ">", "0"),
            ("5:1", ">", "4:9"),
            // Hyphens: the revision follows the last one.
            ("0:0-0-0", "=", "0-0-0"),
            ("0:0-0-0", "<", "0:0-1-0"),
            ("0:0-0-0-0", ">", "0:0-0-0"),
            // Colons: the epoch ends at the first one.
            ("0:0:0-0", "=", "0:0:0-0"),
            ("0:0:0-0", "<", "1:0-0"),
            ("0:0:0:0-0", ">", "0:0:0-0"),
            ("0:0:0-0-0", "=", "0:0:0-0-0"),
            ("0:0-0:0-0", "=", "0:0-0:0-0"),
            // All characters allowed in upstream version and revision.
            ("0:09azAZ.-+~:-0", "=", "0:09azAZ.-+~:-0"),
            ("0:0-azAZ09.+~", "=", "0:0-azAZ09.+~"),
            // Surrounding blanks are ignored.
            ("  \t0:0-1", "=", "0:0-1"),
            ("0:0-1\t  ", "=", "0:0-1"),
            ("\t  0:0-1  \t", "=", "0:0-1"),
            // Epochs up to INT_MAX.
            ("2147483647:0", ">", "2147483646:9"),
        ],
    );
    let mut invalid = vec![
        "",
        "  ",
        "0:",
        ":1.0",
        "1.0-",
        "0:0 0-1",
        "-1:0-1",
        "+1:0-1",
        "2147483648:0",
        "999999999999999999999999:0-1",
        "a:0-0",
        "A:0-0",
        "-0",
        "0:-0",
        // Warnings in dpkg, refused here.
        "0:abc3-0",
        "0:0-0:0",
        "v1.0",
        "1.0\n",
        "1.0é",
    ];
    let upstream: Vec<String> = "!#@$%&/|\\<>()[]{};,_=*^'".chars().map(|c| format!("0:0{c}a-0")).collect();
    let revision: Vec<String> = "!#@$%&/|\\<>()[]{}:;,_=*^'".chars().map(|c| format!("0:0-0{c}")).collect();
    invalid.extend(upstream.iter().chain(&revision).map(String::as_str));
    check_invalid("Debian", &invalid);
}

#[test]
fn dpkg_tilde_sorts_before_everything_even_the_end() {
    check_sorted(
        "Debian",
        &[
            "1.0~~",
            "1.0~~a",
            "1.0~",
            "1.0~rc1",
            "1.0",
            "1.0-1~bpo1",
            "1.0-1",
            "1.0-1+b1",
            "1.0a",
            "1.0+b1",
            "1.0.1",
            "1:0.1",
        ],
    );
}

// ---- apk ----

/// Cases of apk-tools' `test/unit/version.data`.
#[test]
fn apk_own_cases() {
    check_table(
        "Alpine",
        &[
            ("2.34", ">", "0.1.0_alpha"),
            ("0.1.0_alpha", "=", "0.1.0_alpha"),
            ("0.1.0_alpha", "<", "0.1.3_alpha"),
            ("0.1.0_alpha2", ">", "0.1.0_alpha"),
            ("0.1.0_alpha", "<", "2.2.39-r1"),
            ("2.2.39-r1", ">", "1.0.4-r3"),
            ("1.0.4-r3", "<", "1.0.4-r4"),
            ("1.1", ">", "1.1_alpha1"),
            ("1.2.1", ">", "1.2"),
            ("1.3_alpha2", "<", "1.3_alpha3"),
            ("0.8_beta1", "<", "0.8_beta2"),
            ("3.10.18-r1", ">", "2.3.0b-r1"),
            ("2.3.0b-r1", "<", "2.3.0b-r2"),
            ("0.12.3", ">", "0.12"),
            ("0.12", "<", "0.13_beta1"),
            ("0.2.0-r1", "=", "0.2.0-r1"),
            ("3.1_p16", "<", "3.1_p17"),
            ("3.1_p17", ">", "1.06-r6"),
            ("1.06-r6", "<", "006"),
            ("006", ">", "1.0.0"),
            ("1.2.2-r1", ">", "1.2.2"),
            ("9.3.4-r2", ">", "9.3.4"),
            ("3.9.8-r5", ">", "2.01.01_alpha10"),
            ("1.02.07", "<", "1.02.10-r1"),
            ("2.6.15.20060110", "<", "2.6.16.20060323"),
            ("3.0.0-r2", "<", "021109-r3"),
            ("3.9_pre20060124", ">", "0.01"),
            ("0.10.0", "<", "0.10.1_rc1"),
            ("2.5.1-r8", "<", "2.5.1a-r1"),
            ("2.10.1", ">", "02.08.01b"),
            ("1.2.07.8", "<", "1.2.12.04"),
            ("1.2.12.04", "<", "1.2.12.05"),
            ("0.20070118", "<", "0.20070207_rc1"),
            ("4.5_p1-r1", ">", "4.5_p1"),
            ("0.9.8c-r1", "<", "0.9.8d"),
            ("1.7", "<", "1.7b"),
            ("1.8.5", "<", "1.8.5_p2"),
            ("0.98", "<", "1.00"),
            ("2.9.11_pre20051101-r3", ">", "2.9.11_pre20051101"),
            ("2.12r-r4", "<", "2.12r-r5"),
            ("1.0_p10-r0", ">", "1.0_p9-r0"),
            ("0.1.0_alpha_pre2", "<", "0.1.0_alpha"),
            ("1.0.0_pre20191002222144-r0", "<", "1.0.0_pre20210530193627-r0"),
            ("6.0_pre1", "<", "6.0"),
            ("6.0_p1", ">", "6.0"),
            ("8.2.0", "<", "8.2.001"),
            ("8.2.0015", "<", "8.2.002"),
            ("1.0~1234", "<", "1.0~2345"),
            ("1.0~1234-r1", "<", "1.0~2345-r0"),
            ("1.0~1234-r1", ">", "1.0~1234-r0"),
        ],
    );
    check_valid(
        "Alpine",
        &["1.2", "0.1_pre2", "0.1_pre2~1234abcd", "0.1_p1_pre2", "0.1_alpha1_pre2", "0.1_git20240101_pre1"],
    );
    check_invalid(
        "Alpine",
        &[
            "",
            "0.1bc",
            "0.1bc1",
            "0.1a1",
            "0.1a.1",
            "0.1_pre2~",
            "0.1_pre2~1234xbcd",
            "0.1_pre2~1234abcd_pre1",
            "0.1_pre2-r1~1234xbcd",
            "0.1_foobar",
            "0.1_foobar1",
            "0.1-pre1.1",
            "0.1-r",
            "0.1-r2_pre1",
            "0.1-r2_p3_pre1",
            "0.1-r2-r3",
            "0.1-r2.1",
            ".1",
            "a",
            "_pre1",
            "-r1",
            "0.1_",
            "0.1_-r0",
            "0.1__alpha",
            "0.1_1_alpha",
            "23_foo",
            "1.0bc",
            "1.0A",
            "1.0_RC1",
            "1.0 ",
            "v1.0",
        ],
    );
}

#[test]
fn apk_suffixes_and_revisions() {
    check_sorted(
        "Alpine",
        &[
            "1.0_alpha",
            "1.0_alpha1",
            "1.0_alpha2_pre1",
            "1.0_alpha2",
            "1.0_beta",
            "1.0_pre3",
            "1.0_rc1",
            "1.0_rc1-r1",
            "1.0",
            "1.0-r1",
            "1.0-r10",
            "1.0_cvs",
            "1.0_svn",
            "1.0_git20240101",
            "1.0_hg",
            "1.0_p1",
            "1.0_p2",
            "1.0a",
            "1.0b",
            "1.0.0",
            "1.1",
        ],
    );
    check_table(
        "Alpine",
        &[
            // The first number compares as a number even with leading zeros; later ones
            // with a leading zero compare as text.
            ("01.2", "=", "1.2"),
            ("1.01", "<", "1.1"),
            ("1.010", "<", "1.1"),
            ("1.001", "<", "1.01"),
            ("1.0", "<", "1.00"),
            ("1.09", "<", "1.1"),
            ("1.9", "<", "1.10"),
            // Commit hashes compare as text, before the revision.
            ("1.0~abc", "<", "1.0~abd"),
            ("1.0~abc", "<", "1.0~abc0"),
            ("1.0~abc-r1", "<", "1.0~abd-r0"),
            ("1.0", "<", "1.0~abc"),
            // After the revision in apk-tools' token order.
            ("1.0~abc", ">", "1.0-r1"),
            // Numbers longer than 64 bits still compare as numbers.
            ("1.123456789012345678901234567890", ">", "1.99999999999999999999999999999"),
        ],
    );
}

// ---- rpm ----

/// rpm's own `tests/rpmvercmp.at`.
#[test]
fn rpmvercmp_own_cases() {
    let table = [
        ("1.0", "1.0", 0),
        ("1.0", "2.0", -1),
        ("2.0", "1.0", 1),
        ("2.0.1", "2.0.1", 0),
        ("2.0", "2.0.1", -1),
        ("2.0.1", "2.0", 1),
        ("2.0.1a", "2.0.1a", 0),
        ("2.0.1a", "2.0.1", 1),
        ("2.0.1", "2.0.1a", -1),
        ("5.5p1", "5.5p1", 0),
        ("5.5p1", "5.5p2", -1),
        ("5.5p2", "5.5p1", 1),
        ("5.5p10", "5.5p10", 0),
        ("5.5p1", "5.5p10", -1),
        ("5.5p10", "5.5p1", 1),
        ("10xyz", "10.1xyz", -1),
        ("10.1xyz", "10xyz", 1),
        ("xyz10", "xyz10", 0),
        ("xyz10", "xyz10.1", -1),
        ("xyz10.1", "xyz10", 1),
        ("xyz.4", "xyz.4", 0),
        ("xyz.4", "8", -1),
        ("8", "xyz.4", 1),
        ("xyz.4", "2", -1),
        ("2", "xyz.4", 1),
        ("5.5p2", "5.6p1", -1),
        ("5.6p1", "5.5p2", 1),
        ("5.6p1", "6.5p1", -1),
        ("6.5p1", "5.6p1", 1),
        ("6.0.rc1", "6.0", 1),
        ("6.0", "6.0.rc1", -1),
        ("10b2", "10a1", 1),
        ("10a2", "10b2", -1),
        ("1.0aa", "1.0aa", 0),
        ("1.0a", "1.0aa", -1),
        ("1.0aa", "1.0a", 1),
        ("10.0001", "10.0001", 0),
        ("10.0001", "10.1", 0),
        ("10.1", "10.0001", 0),
        ("10.0001", "10.0039", -1),
        ("10.0039", "10.0001", 1),
        ("4.999.9", "5.0", -1),
        ("5.0", "4.999.9", 1),
        ("20101121", "20101121", 0),
        ("20101121", "20101122", -1),
        ("20101122", "20101121", 1),
        ("2_0", "2_0", 0),
        ("2.0", "2_0", 0),
        ("2_0", "2.0", 0),
        ("a", "a", 0),
        ("a+", "a+", 0),
        ("a+", "a_", 0),
        ("a_", "a+", 0),
        ("+a", "+a", 0),
        ("+a", "_a", 0),
        ("_a", "+a", 0),
        ("+_", "+_", 0),
        ("_+", "+_", 0),
        ("_+", "_+", 0),
        ("+", "_", 0),
        ("_", "+", 0),
        ("1.0~rc1", "1.0~rc1", 0),
        ("1.0~rc1", "1.0", -1),
        ("1.0", "1.0~rc1", 1),
        ("1.0~rc1", "1.0~rc2", -1),
        ("1.0~rc2", "1.0~rc1", 1),
        ("1.0~rc1~git123", "1.0~rc1~git123", 0),
        ("1.0~rc1~git123", "1.0~rc1", -1),
        ("1.0~rc1", "1.0~rc1~git123", 1),
        ("1.0^", "1.0^", 0),
        ("1.0^", "1.0", 1),
        ("1.0", "1.0^", -1),
        ("1.0^git1", "1.0^git1", 0),
        ("1.0^git1", "1.0", 1),
        ("1.0", "1.0^git1", -1),
        ("1.0^git1", "1.0^git2", -1),
        ("1.0^git2", "1.0^git1", 1),
        ("1.0^git1", "1.01", -1),
        ("1.01", "1.0^git1", 1),
        ("1.0^20160101", "1.0^20160101", 0),
        ("1.0^20160101", "1.0.1", -1),
        ("1.0.1", "1.0^20160101", 1),
        ("1.0^20160101^git1", "1.0^20160101^git1", 0),
        ("1.0^20160102", "1.0^20160101^git1", 1),
        ("1.0^20160101^git1", "1.0^20160102", -1),
        ("1.0~rc1^git1", "1.0~rc1^git1", 0),
        ("1.0~rc1^git1", "1.0~rc1", 1),
        ("1.0~rc1", "1.0~rc1^git1", -1),
        ("1.0^git1~pre", "1.0^git1~pre", 0),
        ("1.0^git1", "1.0^git1~pre", 1),
        ("1.0^git1~pre", "1.0^git1", -1),
    ];
    for (a, b, expected) in table {
        let expected = expected.cmp(&0);
        assert_eq!(rpm::rpmvercmp(a.as_bytes(), b.as_bytes()), expected, "rpmvercmp({a}, {b})");
        // None of these has a hyphen or a leading epoch, so as a whole version it is the same.
        assert_eq!(compare("Red Hat", a, b), Some(expected), "Red Hat: {a} vs {b}");
    }
}

#[test]
fn rpm_epoch_version_release() {
    check_table(
        "Red Hat",
        &[
            ("1:1.0-1", ">", "2.0-1"),
            ("0:1.0-1", "=", "1.0-1"),
            (":1.0-1", "=", "0:1.0-1"),
            ("01:1.0-1", "=", "1:1.0-1"),
            ("1.0-1", "<", "1.0-2"),
            ("1.0-1.el9", "<", "1.0-1.el9_2"),
            ("1.0-1.el9_2", "<", "1.0-2.el9"),
            ("3.0.7-24.el9", "<", "3.0.7-25.el9"),
            ("1:3.0.7-24.el9", ">", "3.0.8-1.el9"),
            ("2.34-60.el9", "<", "2.34-100.el9"),
            ("1.0~rc1-1", "<", "1.0-1"),
            ("1.0^git1-1", ">", "1.0-1"),
            // A missing release sorts before any release (rpm's rpmverCmp).
            ("1.0", "<", "1.0-1"),
            ("1.0", "<", "1.0-0"),
            ("1.0", "=", "0:1.0"),
            // The release follows the last hyphen; the epoch is digits before a colon.
            ("1.0-rc1-2", ">", "1.0-rc1-1"),
            ("a:1.0", "<", "1.0"),
        ],
    );
    check_table("SUSE", &[("1.2.3-150400.1.2", "<", "1.2.3-150400.1.10")]);
    check_table("openSUSE", &[("1.2.3-lp155.2.1", "<", "1.2.4-lp155.1.1")]);
    check_table("Rocky Linux", &[("2.4.57-5.el9", "<", "2.4.57-5.el9_2.1")]);
    check_table("AlmaLinux", &[("1:1.1.1k-7.el8_6", ">", "1:1.1.1k-6.el8_5")]);
    check_table("Mageia", &[("3.0.13-1.mga9", "<", "3.0.14-1.mga9")]);
    check_invalid("Red Hat", &["", "1:", "-1", "1:-1", "1.0 -1", "1.0\t", "1.0\n"]);
}

// ---- semver ----

#[test]
fn semver_precedence_of_the_specification() {
    let chain = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "2.0.0",
        "2.1.0",
        "2.1.1",
    ];
    check_sorted("SEMVER", &chain);
    check_sorted("npm", &chain);
    check_sorted("crates.io", &chain);
    check_sorted("Go", &chain);
    // Build metadata does not count.
    check_table("SEMVER", &[("1.0.0+build.1", "=", "1.0.0+build.2"), ("1.0.0-rc.1+x", "<", "1.0.0")]);
}

#[test]
fn go_modules() {
    check_table(
        "Go",
        &[
            // With or without the `v` that build info and vulndb differ on.
            ("v0.3.0", "=", "0.3.0"),
            ("v0.3.0", "<", "0.3.8"),
            ("0.3.7", "<", "v0.3.8"),
            // Pseudo-versions are pre-releases.
            ("v0.0.0-20190311183353-d8887717615a", "<", "0.0.0-20190404232315-eb5bcb51f2a3"),
            ("0.0.0-20190311183353-d8887717615a", "<", "0.0.0"),
            ("0.0.0-20190311183353-d8887717615a", "<", "0.1.0"),
            ("v0.0.0-20220722155237-a158d28d115b", ">", "0.0.0-20190311183353-d8887717615a"),
            ("v1.2.4-0.20190311183353-d8887717615a", ">", "1.2.3"),
            ("v1.2.4-0.20190311183353-d8887717615a", "<", "1.2.4"),
            ("v1.2.4-pre.0.20190311183353-d8887717615a", ">", "1.2.4-pre"),
            ("v1.2.4-pre.0.20190311183353-d8887717615a", "<", "1.2.4-pre.1"),
            // `+incompatible` is build metadata.
            ("v2.0.0+incompatible", "=", "2.0.0"),
            ("v2.1.0+incompatible", ">", "2.0.9"),
            // Go's shorthand.
            ("v1", "=", "1.0.0"),
            ("v1.2", "=", "1.2.0"),
            // The Go distribution's own tags, as vulndb writes them for stdlib.
            ("go1.21.3", "=", "1.21.3"),
            ("go1.21", "=", "1.21.0"),
            ("go1.21rc2", "=", "1.21.0-rc.2"),
            ("go1.21rc2", "<", "1.21.0"),
            ("go1.9beta1", "=", "1.9.0-beta.1"),
            ("go1.9beta2", "<", "go1.9rc1"),
            ("go1.20.14", "<", "go1.21rc1"),
            ("go1.26.8", ">", "1.26.7"),
        ],
    );
    check_invalid("Go", &["(devel)", "", "v", "go", "go1.21alpha1", "go1.21rc", "go1.21.x", "latest", "1.2.3.4"]);
}

#[test]
fn npm_and_crates() {
    check_table(
        "npm",
        &[
            ("4.17.15", "<", "4.17.20"),
            ("4.17.19", "<", "4.17.20"),
            ("1.2.0", "<", "1.2.6"),
            ("0.2.4", "<", "1.0.0"),
            ("1.2.0", ">", "0.2.4"),
            // node-semver's loose spellings.
            ("v1.2.3", "=", "1.2.3"),
            ("=1.2.3", "=", "1.2.3"),
            (" 1.2.3 ", "=", "1.2.3"),
            ("01.02.03", "=", "1.2.3"),
        ],
    );
    check_table("crates.io", &[("0.10.0", ">", "0.9.9"), ("1.0.0-alpha.1", "<", "1.0.0")]);
    check_invalid(
        "npm",
        &[
            "",
            "latest",
            "1.2.3.4",
            "1.0.0-",
            "1.0.0-01",
            "1.0.0-a..b",
            "1.0.0+",
            "^1.2.3",
            "1.x",
            "~1.2",
            ">=1.0.0",
            "1.2.3-é",
        ],
    );
    check_invalid("SEMVER", &["18446744073709551616.0.0", "1..2", ".1.2"]);
}

#[test]
fn semver_missing_minor_or_patch_reads_as_zero() {
    check_table(
        "SEMVER",
        &[("1", "=", "1.0.0"), ("1.2", "=", "1.2.0"), ("1.2-rc.1", "=", "1.2.0-rc.1"), ("1.2", "<", "1.2.1")],
    );
    assert_eq!(compare_semver("1.2", "1.2.0"), Some(Equal));
}

// ---- PEP 440 ----

/// packaging's own `VERSIONS`, in order.
#[test]
fn pep440_own_order() {
    let mut versions = vec![
        "1.0.dev0",
        "1.0.dev456",
        "1.0.dev456+local",
        "1.0a0",
        "1.0a0.post0.dev0",
        "1.0a0.post0",
        "1.0a1.dev1",
        "1.0a1.dev1+local",
        "1.0a1",
        "1.0a1+local",
        "1.0b0",
        "1.0b1.dev456",
        "1.0b2",
        "1.0b2.post345.dev456",
        "1.0b2.post345",
        "1.0b2-346",
        "1.0rc0",
        "1.0rc1.dev1",
        "1.0c1",
        "1.0rc2",
        "1.0",
        "1.0.post0.dev0",
        "1.0.post0",
        "1.0.post456.dev34",
        "1.0.post456",
        "1.0.post456+local",
        "1.0.1.dev1",
        "1.0.1a1",
        "1.0.1",
        "1.0.1+local",
        "1.0.1.post1",
        "1.1.dev1",
        "1.2+a",
        "1.2+abc",
        "1.2+abcdef",
        "1.2+def",
        "1.2+0",
        "1.2+1",
        "1.2+1.abc",
        "1.2+1.1",
        "1.2+1.1.0",
        "1.2+2",
        "1.2+123",
        "1.2+123456",
        "1.2.r32+123456",
        "1.2.rev33+123456",
    ];
    let epoch_1: Vec<String> = versions.iter().map(|v| format!("1!{v}")).collect();
    versions.extend(epoch_1.iter().map(String::as_str));
    check_sorted("PyPI", &versions);
    // The brief's chain.
    check_sorted("PyPI", &["1.0.dev1", "1.0a1.dev1", "1.0a1", "1.0"]);
}

/// packaging's normalization table: each spelling equals its normal form.
#[test]
fn pep440_normalization() {
    let table = [
        ("1.0dev", "1.0.dev0"),
        ("1.0.dev", "1.0.dev0"),
        ("1.0dev1", "1.0.dev1"),
        ("1.0-dev", "1.0.dev0"),
        ("1.0-dev1", "1.0.dev1"),
        ("1.0DEV", "1.0.dev0"),
        ("1.0.DEV1", "1.0.dev1"),
        ("1.0-DEV", "1.0.dev0"),
        ("1.0a", "1.0a0"),
        ("1.0.a", "1.0a0"),
        ("1.0.a1", "1.0a1"),
        ("1.0-a", "1.0a0"),
        ("1.0-a1", "1.0a1"),
        ("1.0alpha", "1.0a0"),
        ("1.0.alpha", "1.0a0"),
        ("1.0.alpha1", "1.0a1"),
        ("1.0-alpha1", "1.0a1"),
        ("1.0A", "1.0a0"),
        ("1.0.A1", "1.0a1"),
        ("1.0ALPHA", "1.0a0"),
        ("1.0-ALPHA1", "1.0a1"),
        ("1.0b", "1.0b0"),
        ("1.0.b1", "1.0b1"),
        ("1.0-b1", "1.0b1"),
        ("1.0beta", "1.0b0"),
        ("1.0.beta1", "1.0b1"),
        ("1.0-BETA1", "1.0b1"),
        ("1.0c", "1.0rc0"),
        ("1.0.c1", "1.0rc1"),
        ("1.0-c1", "1.0rc1"),
        ("1.0rc", "1.0rc0"),
        ("1.0.rc1", "1.0rc1"),
        ("1.0-rc1", "1.0rc1"),
        ("1.0C1", "1.0rc1"),
        ("1.0RC", "1.0rc0"),
        ("1.0pre", "1.0rc0"),
        ("1.0preview2", "1.0rc2"),
        ("1.0-pre_3", "1.0rc3"),
        ("1.0post", "1.0.post0"),
        ("1.0.post", "1.0.post0"),
        ("1.0post1", "1.0.post1"),
        ("1.0-post", "1.0.post0"),
        ("1.0-post1", "1.0.post1"),
        ("1.0POST1", "1.0.post1"),
        ("1.0r", "1.0.post0"),
        ("1.0rev", "1.0.post0"),
        ("1.0.r1", "1.0.post1"),
        ("1.0.rev1", "1.0.post1"),
        ("1.0-5", "1.0.post5"),
        ("1.0-r5", "1.0.post5"),
        ("1.0-rev5", "1.0.post5"),
        ("1.0+AbC", "1.0+abc"),
        ("1.01", "1.1"),
        ("1.0a05", "1.0a5"),
        ("1.0b07", "1.0b7"),
        ("1.0c056", "1.0rc56"),
        ("1.0rc09", "1.0rc9"),
        ("1.0.post000", "1.0.post0"),
        ("1.1.dev09000", "1.1.dev9000"),
        ("00!1.2", "1.2"),
        ("0100!0.0", "100!0.0"),
        ("v1.0", "1.0"),
        ("V1.0", "1.0"),
        ("   v1.0\t\n", "1.0"),
        ("\u{202f}1.0\t\u{2029}\n ", "1.0"),
        // Implicit zero padding of the release.
        ("1.0", "1.0.0"),
        ("1", "1.0.0.0"),
        ("0!1.0.2", "1.0.2"),
        ("1.0.4+8.0", "1.0.4+8.0"),
        ("1.0+01", "1.0+1"),
        ("1.0+a.b", "1.0+a-b"),
        ("1.0+a_b", "1.0+A.B"),
    ];
    for (spelling, normal) in table {
        check("PyPI", spelling, "=", normal);
    }
}

#[test]
fn pep440_more_order() {
    check_table(
        "PyPI",
        &[
            ("2.19.1", "<", "2.20.0"),
            ("1.24.1", "<", "1.24.2"),
            ("2018.8.24", "<", "2018.11.29"),
            ("1!0.1", ">", "2024.1"),
            ("1.0+local", ">", "1.0"),
            ("1.0+local", "<", "1.0.post1"),
            ("1.0+local", "<", "1.0.1"),
            ("1.0+1", ">", "1.0+abc"),
            ("1.0.0+1.0", ">", "1.0+1"),
            ("1.0a1", "<", "1.0b1"),
            ("1.0b1", "<", "1.0rc1"),
            ("1.0rc1", "=", "1.0c1"),
            ("1.0.post1.dev1", "<", "1.0.post1"),
            ("1.0.post1.dev1", ">", "1.0"),
            ("1.0a1.post1", ">", "1.0a1"),
            ("1.0a1.post1", "<", "1.0a2.dev0"),
            ("1.0.dev1", "<", "1.0a0"),
            ("1.0.dev1", ">", "0.9"),
            ("1.0.dev1", ">", "1.0.dev0"),
            ("1.10", ">", "1.9"),
            ("1.0.0.0.1", ">", "1.0"),
            ("1.0-1", "=", "1.0.post1"),
            ("1.0a-1", "=", "1.0a1"),
            ("1.0.99999999999999999999999999", "<", "1.0.100000000000000000000000000"),
        ],
    );
}

#[test]
fn pep440_invalid() {
    check_invalid(
        "PyPI",
        &[
            "french toast",
            "1.0+a+",
            "1.0++",
            "1.0+_foobar",
            "1.0+foo&asd",
            "1.0+1+1",
            "1. 0",
            "1 .0",
            "1. 0a1",
            "1 .0a1",
            "1.0 a1",
            "1.0a 1",
            "\u{660}\u{661}\u{662}.\u{663}\u{664}\u{665}.\u{666}\u{667}\u{668}\u{669}",
            ".",
            "..",
            "1..0",
            "1.0.",
            ".1.0",
            "1..2.3",
            "1.0+\u{130}",
            "",
            "v",
            "1!",
            "!1.0",
            "1.0-",
            "1.0a1a2",
            "1.0.post1.post2",
            "1.0.dev1.dev2",
            "1.0+",
            "1.0+a.",
            "1.0+a..b",
            "1.0-devel",
            "1.0.dev1a1",
            "vv1.0",
            "1.0\u{0}",
        ],
    );
}

// ---- properties ----

/// `cmp` is a total order on the three versions (all of which parse): reflexive,
/// antisymmetric and transitive, for equality and strict order alike.
fn check_total_order(cmp: impl Fn(&str, &str) -> Option<Ordering>, versions: [&str; 3]) -> Result<(), TestCaseError> {
    for a in versions {
        prop_assert_eq!(cmp(a, a), Some(Equal), "{} vs itself", a);
        for b in versions {
            let ab = cmp(a, b).expect("parses");
            prop_assert_eq!(cmp(b, a), Some(ab.reverse()), "{} vs {}", a, b);
            for c in versions {
                let (bc, ac) = (cmp(b, c).expect("parses"), cmp(a, c).expect("parses"));
                if ab != Greater && bc != Greater {
                    let expected = if ab == Equal && bc == Equal { Equal } else { Less };
                    prop_assert_eq!(ac, expected, "{} {:?} {} {:?} {}", a, ab, b, bc, c);
                }
            }
        }
    }
    Ok(())
}

const ECOSYSTEMS: [&str; 8] = ["Debian", "Alpine", "Red Hat", "Go", "npm", "crates.io", "SEMVER", "PyPI"];

fn dpkg_version() -> impl Strategy<Value = String> {
    "([0-2]:)?[0-2][0-2a-cA~.+]{0,5}(-[0-2ab~+.]{1,3})?"
}

fn apk_version() -> impl Strategy<Value = String> {
    "0?[0-2](\\.0?[0-2]){0,2}[a-c]?(_(alpha|beta|pre|rc|cvs|svn|git|hg|p)[0-2]?){0,2}(~[0-9a-c]{1,2})?(-r[0-2])?"
}

fn rpm_version() -> impl Strategy<Value = String> {
    "([0-2]?:)?[0-2a-b][0-2a-b.~^_+]{0,5}(-[0-2a-b.~^_+]{0,3})?"
}

/// Strictly valid semver, small enough that versions often share parts.
fn strict_semver() -> impl Strategy<Value = String> {
    "[0-2]\\.[0-2]\\.(0|1|10)(-(0|1|2|11|a|b|alpha|rc|0a|x-y)(\\.(0|1|2|11|a|b|alpha|rc|0a|x-y)){0,2})?(\\+[0-9A-Za-z-]{1,3})?"
}

fn semver_version() -> impl Strategy<Value = String> {
    "v?[0-2](\\.[0-2]){0,2}(-(0|[1-3]|a|b|alpha|rc|0a)(\\.(0|[1-3]|a|b|x-y)){0,2})?(\\+[a-z0-9]{1,3})?"
}

fn pep440_version() -> impl Strategy<Value = String> {
    concat!(
        "[vV]?([0-1]!)?[0-2](\\.[0-2]){0,2}",
        "([._-]?(a|b|c|rc|alpha|beta|pre|preview|A|RC)[._-]?[0-2]?)?",
        "(-[0-2]|[._-]?(post|rev|r)[._-]?[0-2]?)?",
        "([._-]?dev[0-2]?)?",
        "(\\+[a-c0-2]{1,2}([._-][a-c0-2]{1,2}){0,2})?",
    )
}

fn all_parse(ecosystem: &str, versions: &[String]) -> bool {
    versions.iter().all(|v| compare(ecosystem, v, v).is_some())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn dpkg_is_a_total_order(a in dpkg_version(), b in dpkg_version(), c in dpkg_version()) {
        prop_assume!(all_parse("Debian", &[a.clone(), b.clone(), c.clone()]));
        check_total_order(|x, y| compare("Debian", x, y), [&a, &b, &c])?;
    }

    #[test]
    fn apk_is_a_total_order(a in apk_version(), b in apk_version(), c in apk_version()) {
        prop_assume!(all_parse("Alpine", &[a.clone(), b.clone(), c.clone()]));
        check_total_order(|x, y| compare("Alpine", x, y), [&a, &b, &c])?;
    }

    #[test]
    fn rpm_is_a_total_order(a in rpm_version(), b in rpm_version(), c in rpm_version()) {
        prop_assume!(all_parse("Red Hat", &[a.clone(), b.clone(), c.clone()]));
        check_total_order(|x, y| compare("Red Hat", x, y), [&a, &b, &c])?;
    }

    #[test]
    fn semver_is_a_total_order(a in semver_version(), b in semver_version(), c in semver_version()) {
        prop_assume!(all_parse("SEMVER", &[a.clone(), b.clone(), c.clone()]));
        check_total_order(|x, y| compare("SEMVER", x, y), [&a, &b, &c])?;
        check_total_order(|x, y| compare("Go", x, y), [&a, &b, &c])?;
    }

    #[test]
    fn pep440_is_a_total_order(a in pep440_version(), b in pep440_version(), c in pep440_version()) {
        prop_assume!(all_parse("PyPI", &[a.clone(), b.clone(), c.clone()]));
        check_total_order(|x, y| compare("PyPI", x, y), [&a, &b, &c])?;
    }

    /// On strictly valid semver, the order is the `semver` crate's precedence; a `v` prefix
    /// changes nothing.
    #[test]
    fn semver_agrees_with_the_semver_crate(a in strict_semver(), b in strict_semver()) {
        let (va, vb) = (::semver::Version::parse(&a).unwrap(), ::semver::Version::parse(&b).unwrap());
        let expected = Some(va.cmp_precedence(&vb));
        prop_assert_eq!(compare_semver(&a, &b), expected);
        prop_assert_eq!(compare("npm", &format!("v{a}"), &b), expected);
        prop_assert_eq!(compare("Go", &a, &format!("v{b}")), expected);
        prop_assert_eq!(compare("crates.io", &a, &b), expected);
    }

    #[test]
    fn no_panic_on_arbitrary_strings(a in any::<String>(), b in any::<String>()) {
        for ecosystem in ECOSYSTEMS {
            let _ = compare(ecosystem, &a, &b);
        }
    }

    /// Strings close to versions reach deeper into each parser.
    #[test]
    fn no_panic_on_version_like_strings(a in "[0-9a-zA-Z.:~^+_!-]{0,12}", b in "[0-9a-zA-Z.:~^+_!-]{0,12}") {
        for ecosystem in ECOSYSTEMS {
            if let Some(order) = compare(ecosystem, &a, &b) {
                prop_assert_eq!(compare(ecosystem, &b, &a), Some(order.reverse()));
            }
        }
    }
}

// ---- cross-checks with the real tools, where this machine has them ----

/// A small deterministic generator (xorshift64*), so a failing pair shows up on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn chars(&mut self, alphabet: &str, max: usize) -> String {
        let alphabet: Vec<char> = alphabet.chars().collect();
        (0..self.below(max + 1)).map(|_| alphabet[self.below(alphabet.len())]).collect()
    }
}

/// Pairs of versions: half unrelated, half a version and a small edit of it (which is where
/// orders disagree, if anywhere).
fn pairs(rng: &mut Rng, count: usize, version: impl Fn(&mut Rng) -> String, edit: &str) -> Vec<(String, String)> {
    let edit: Vec<char> = edit.chars().collect();
    (0..count)
        .map(|_| {
            let a = version(rng);
            let b = if rng.chance(50) {
                version(rng)
            } else {
                let mut b: Vec<char> = a.chars().collect();
                for _ in 0..=rng.below(2) {
                    let at = rng.below(b.len() + 1);
                    match rng.below(3) {
                        0 if at < b.len() => {
                            b.remove(at);
                        }
                        1 if at < b.len() => b[at] = edit[rng.below(edit.len())],
                        _ => b.insert(at, edit[rng.below(edit.len())]),
                    }
                }
                b.into_iter().collect()
            };
            (a, b)
        })
        .collect()
}

/// Runs `program args` with `input` on stdin; `None` when the program is not there.
fn run(program: &str, args: &[&str], input: &str) -> Option<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(input.as_bytes()).ok()?;
    let output = child.wait_with_output().ok()?;
    output.status.success().then(|| String::from_utf8(output.stdout).expect("utf-8"))
}

fn has(program: &str, args: &[&str]) -> bool {
    run(program, args, "").is_some()
}

/// A cross-check's tool is missing: `tests/run` installs them all and sets
/// `BERTH_REQUIRE_TOOLS`, so there this fails; elsewhere (a quick `cargo test`) it says so.
fn missing(what: &str) {
    assert!(
        std::env::var_os("BERTH_REQUIRE_TOOLS").is_none(),
        "{what} is not installed here, and BERTH_REQUIRE_TOOLS asks for every cross-check (tests/tools/prepare.sh installs it)"
    );
    eprintln!("{what} is not installed here: cross-check not run (tests/run runs it)");
}

/// The Python that has `packaging` >= 22: the one on PATH, else Debian's.
fn python_with_packaging(script: &str) -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|p| has(p, &["-c", script]))
}

#[test]
fn dpkg_agrees_with_dpkg_compare_versions() {
    if !has("dpkg", &["--version"]) {
        missing("dpkg");
        return;
    }
    let version = |rng: &mut Rng| {
        let epoch = rng.chance(25).then(|| format!("{}:", rng.below(3)));
        let revision = rng.chance(60).then(|| format!("-{}{}", rng.below(3), rng.chars("019az.+~", 4)));
        let mut upstream_alphabet = String::from("0129azAZ.+~");
        if epoch.is_some() {
            upstream_alphabet.push(':');
        }
        if revision.is_some() {
            upstream_alphabet.push('-');
        }
        format!(
            "{}{}{}{}",
            epoch.unwrap_or_default(),
            rng.below(3),
            rng.chars(&upstream_alphabet, 6),
            revision.unwrap_or_default()
        )
    };
    let pairs: Vec<_> = pairs(&mut Rng(0x5eed_d9c6), 400, version, "0123456789az.+~-:")
        .into_iter()
        .filter(|(a, b)| compare("Debian", a, b).is_some())
        .collect();
    assert!(pairs.len() > 300, "too few valid pairs: {}", pairs.len());
    let script = r#"while read -r a b; do
        if dpkg --compare-versions "$a" lt "$b"; then echo "<"
        elif dpkg --compare-versions "$a" eq "$b"; then echo "="
        else echo ">"; fi
    done"#;
    let input: String = pairs.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
    let answers = run("sh", &["-c", script], &input).expect("sh runs");
    let answers: Vec<&str> = answers.lines().collect();
    assert_eq!(answers.len(), pairs.len());
    for ((a, b), answer) in pairs.iter().zip(answers) {
        assert_eq!(compare("Debian", a, b), Some(op(answer)), "dpkg says {a} {answer} {b}");
    }
}

#[test]
fn rpm_agrees_with_rpm() {
    // rpm's Lua `rpm.vercmp` parses both as `[epoch:]version[-release]` and compares them with
    // `rpmverCmp`, as this module does.
    let script = r#"%{lua:
        for line in io.lines() do
            local split = string.find(line, "\1", 1, true)
            io.write(rpm.vercmp(string.sub(line, 1, split - 1), string.sub(line, split + 1)), "\n")
        end
    }"#;
    if !has("rpm", &["--eval", "%{lua: io.write(rpm.vercmp('1', '2'))}"]) {
        missing("rpm (with Lua)");
        return;
    }
    let version = |rng: &mut Rng| {
        let epoch = if rng.chance(25) { format!("{}:", rng.pick(&["", "0", "1", "2", "01"])) } else { String::new() };
        let release = if rng.chance(60) { format!("-{}", rng.chars("019ab.~^_+", 4)) } else { String::new() };
        format!("{epoch}{}{}{release}", rng.pick(&["0", "1", "2", "a", "10"]), rng.chars("0129ab.~^_+", 5))
    };
    let pairs = pairs(&mut Rng(0x0bad_cafe), 1_000, version, "0123456789ab.~^_+-:");
    let pairs: Vec<_> = pairs.into_iter().filter(|(a, b)| compare("Red Hat", a, b).is_some()).collect();
    assert!(pairs.len() > 800, "too few valid pairs: {}", pairs.len());
    let input: String = pairs.iter().map(|(a, b)| format!("{a}\x01{b}\n")).collect();
    let answers = run("rpm", &["--eval", script], &input).expect("rpm runs");
    let answers: Vec<&str> = answers.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(answers.len(), pairs.len());
    for ((a, b), answer) in pairs.iter().zip(answers) {
        let expected = answer.parse::<i32>().expect("a number").cmp(&0);
        assert_eq!(compare("Red Hat", a, b), Some(expected), "rpm says {a} vs {b}: {answer}");
    }
}

#[test]
fn pep440_agrees_with_packaging() {
    let script = r#"
import sys
import packaging
from packaging.version import InvalidVersion, Version
if int(packaging.__version__.split(".")[0]) < 22:
    sys.exit(1)  # LegacyVersion era: a different parser
def parse(v):
    try:
        return Version(v)
    except InvalidVersion:
        return None
for line in sys.stdin:
    a, b = line.rstrip("\n").split("\x01")
    a, b = parse(a), parse(b)
    print("none" if a is None or b is None else "<=>"[(a > b) - (a < b) + 1])
"#;
    let Some(python) = python_with_packaging(script) else {
        missing("python3 with packaging >= 22");
        return;
    };
    let version = |rng: &mut Rng| {
        let mut v = String::new();
        if rng.chance(10) {
            v.push_str(rng.pick(&["v", "V", " ", "\t"]));
        }
        if rng.chance(15) {
            v.push_str(&format!("{}!", rng.below(3)));
        }
        let numbers: Vec<String> =
            (0..=rng.below(3)).map(|_| rng.pick(&["0", "1", "2", "00", "01", "10"]).to_string()).collect();
        v.push_str(&numbers.join("."));
        let separator = |rng: &mut Rng| rng.pick(&["", "", ".", "-", "_"]).to_string();
        let number = |rng: &mut Rng| rng.pick(&["", "0", "1", "2", "01"]).to_string();
        if rng.chance(40) {
            let word = rng.pick(&["a", "b", "c", "rc", "alpha", "beta", "pre", "preview", "A", "RC", "Beta"]);
            v.push_str(&format!("{}{word}{}{}", separator(rng), separator(rng), number(rng)));
        }
        if rng.chance(30) {
            if rng.chance(30) {
                v.push_str(&format!("-{}", rng.below(3)));
            } else {
                let word = rng.pick(&["post", "rev", "r", "POST"]);
                v.push_str(&format!("{}{word}{}{}", separator(rng), separator(rng), number(rng)));
            }
        }
        if rng.chance(30) {
            v.push_str(&format!("{}{}{}{}", separator(rng), rng.pick(&["dev", "DEV"]), separator(rng), number(rng)));
        }
        if rng.chance(25) {
            let segments: Vec<String> = (0..=rng.below(2)).map(|_| rng.chars("abAB0129", 3)).collect();
            v.push('+');
            for (i, segment) in segments.iter().enumerate() {
                if i > 0 {
                    v.push_str(rng.pick(&[".", "-", "_"]));
                }
                v.push_str(segment);
            }
        }
        if rng.chance(10) {
            v.push_str(rng.pick(&[" ", "\t", " \t"]));
        }
        v
    };
    let pairs = pairs(&mut Rng(0x9e37_79b9), 3_000, version, "0123456789.-_+!abcdeprvostlhiwABC");
    let input: String = pairs.iter().map(|(a, b)| format!("{a}\x01{b}\n")).collect();
    let answers = run(python, &["-c", script], &input).expect("python3 runs");
    let answers: Vec<&str> = answers.lines().collect();
    assert_eq!(answers.len(), pairs.len());
    let mut compared = 0;
    for ((a, b), answer) in pairs.iter().zip(answers) {
        let expected = (answer != "none").then(|| op(answer));
        assert_eq!(compare("PyPI", a, b), expected, "packaging says {a:?} {answer} {b:?}");
        compared += usize::from(expected.is_some());
    }
    assert!(compared > 1_000, "too few valid pairs: {compared}");
    assert!(pairs.len() - compared > 300, "too few invalid pairs: {}", pairs.len() - compared);
}
