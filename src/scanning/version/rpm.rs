//! RPM version order, as rpm (`rpmio/rpmver.cc`'s `rpmverCmp` over `parseEVR`, and
//! `rpmio/rpmvercmp.cc`): `[epoch:]version[-release]`, compared epoch (missing = 0), version,
//! then release (a missing release sorts before any release), each with `rpmvercmp`.

use std::cmp::Ordering;

struct Evr<'a> {
    epoch: &'a [u8],
    version: &'a [u8],
    release: Option<&'a [u8]>,
}

pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (parse(a)?, parse(b)?);
    Some(rpmvercmp(a.epoch, b.epoch).then_with(|| rpmvercmp(a.version, b.version)).then_with(|| {
        match (a.release, b.release) {
            (Some(a), Some(b)) => rpmvercmp(a, b),
            (a, b) => a.is_some().cmp(&b.is_some()),
        }
    }))
}

/// rpm's `parseEVR`: the epoch is a leading run of digits ended by `:`, the release follows
/// the last `-`. rpm itself parses anything; an empty version, whitespace or control
/// characters (which rpmbuild never lets into a version) are refused here.
fn parse(evr: &str) -> Option<Evr<'_>> {
    let s = evr.as_bytes();
    if s.iter().any(|c| c.is_ascii_whitespace() || c.is_ascii_control()) {
        return None;
    }
    let n = super::digits_len(s);
    let (epoch, rest) = match s.get(n) {
        Some(b':') if n == 0 => (&b"0"[..], &s[1..]),
        Some(b':') => (&s[..n], &s[n + 1..]),
        _ => (&b"0"[..], s),
    };
    let (version, release) = match rest.iter().rposition(|&c| c == b'-') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    (!version.is_empty()).then_some(Evr { epoch, version, release })
}

/// rpm's `rpmvercmp`: the strings are read as runs of digits and runs of letters, other
/// characters only separating them, plus `~` (before everything, even the end) and `^` (after
/// the end, before anything else). Kinds order `~` < end < `^` < letters < digits; runs of the
/// same kind compare as text (letters) or numbers (digits).
pub(super) fn rpmvercmp(a: &[u8], b: &[u8]) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut one, mut two) = (a, b);
    loop {
        one = skip_separators(one);
        two = skip_separators(two);
        let (c1, c2) = (one.first().copied(), two.first().copied());
        if c1 == Some(b'~') || c2 == Some(b'~') {
            if c1 != Some(b'~') {
                return Ordering::Greater;
            }
            if c2 != Some(b'~') {
                return Ordering::Less;
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }
        if c1 == Some(b'^') || c2 == Some(b'^') {
            match (c1, c2) {
                (None, _) => return Ordering::Less,
                (_, None) => return Ordering::Greater,
                (Some(b'^'), Some(b'^')) => {}
                (Some(b'^'), _) => return Ordering::Less,
                _ => return Ordering::Greater,
            }
            one = &one[1..];
            two = &two[1..];
            continue;
        }
        let (Some(c1), Some(_)) = (c1, c2) else { break };
        let numeric = c1.is_ascii_digit();
        let run = |s: &[u8]| {
            s.iter()
                .position(|c| if numeric { !c.is_ascii_digit() } else { !c.is_ascii_alphabetic() })
                .unwrap_or(s.len())
        };
        let (n1, n2) = (run(one), run(two));
        // The second string has a run of the other kind here: digits beat letters.
        if n2 == 0 {
            return if numeric { Ordering::Greater } else { Ordering::Less };
        }
        let order = if numeric { super::cmp_digits(&one[..n1], &two[..n2]) } else { one[..n1].cmp(&two[..n2]) };
        if order != Ordering::Equal {
            return order;
        }
        one = &one[n1..];
        two = &two[n2..];
    }
    // Whichever still has a run left is the greater.
    (!one.is_empty()).cmp(&!two.is_empty())
}

fn skip_separators(s: &[u8]) -> &[u8] {
    let n = s.iter().position(|&c| c.is_ascii_alphanumeric() || c == b'~' || c == b'^').unwrap_or(s.len());
    &s[n..]
}
