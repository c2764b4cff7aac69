//! Debian version order, as `dpkg --compare-versions` (dpkg's `lib/dpkg/version.c` and the
//! parser in `parsehelp.c`): `[epoch:]upstream[-revision]`, compared epoch first (a number),
//! then upstream, then revision, each with `verrevcmp`.

use std::cmp::Ordering;

struct Version<'a> {
    epoch: u32,
    upstream: &'a [u8],
    revision: &'a [u8],
}

pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (parse(a)?, parse(b)?);
    Some(
        a.epoch
            .cmp(&b.epoch)
            .then_with(|| verrevcmp(a.upstream, b.upstream))
            .then_with(|| verrevcmp(a.revision, b.revision)),
    )
}

/// dpkg's `parseversion`. What dpkg reports as an error and also what it only warns about
/// (an upstream not starting with a digit, a character outside the allowed sets) is refused:
/// `dpkg --compare-versions` compares such versions anyway, but no package can carry one.
fn parse(version: &str) -> Option<Version<'_>> {
    // dpkg trims blanks (space, tab) and refuses blanks inside.
    let version = version.trim_matches([' ', '\t']);
    if version.is_empty() || version.contains([' ', '\t']) {
        return None;
    }
    // The epoch ends at the first colon; the upstream version may contain more colons.
    let (epoch, rest) = match version.split_once(':') {
        Some((epoch, rest)) => {
            // dpkg reads it with strtol (which would take a sign); a plain number is all a
            // package can have, up to INT_MAX.
            if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
                return None;
            }
            let epoch: u32 = epoch.parse().ok().filter(|&e| e <= i32::MAX as u32)?;
            (epoch, rest)
        }
        None => (0, version),
    };
    // The revision starts after the last hyphen; the upstream version may contain hyphens.
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((_, "")) => return None,
        Some((upstream, revision)) => (upstream.as_bytes(), revision.as_bytes()),
        None => (rest.as_bytes(), &b""[..]),
    };
    let valid_upstream = upstream.first().is_some_and(u8::is_ascii_digit)
        && upstream.iter().all(|&c| c.is_ascii_alphanumeric() || b".-+~:".contains(&c));
    let valid_revision = revision.iter().all(|&c| c.is_ascii_alphanumeric() || b".+~".contains(&c));
    (valid_upstream && valid_revision).then_some(Version { epoch, upstream, revision })
}

/// The weight of a character in a non-digit run: `~` before the end of the string, the end
/// before letters, letters (ASCII order) before everything else.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternately a non-digit run (by `order`) and a digit run (as a number,
/// however long).
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut a, mut b) = (a, b);
    while !a.is_empty() || !b.is_empty() {
        while a.first().is_some_and(|c| !c.is_ascii_digit()) || b.first().is_some_and(|c| !c.is_ascii_digit()) {
            let (ac, bc) = (order(a.first().copied()), order(b.first().copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            // Equal weights here mean both are the same kind of non-digit, so neither is at
            // its end.
            a = &a[1..];
            b = &b[1..];
        }
        let (an, bn) = (super::digits_len(a), super::digits_len(b));
        let by_number = super::cmp_digits(&a[..an], &b[..bn]);
        if by_number != Ordering::Equal {
            return by_number;
        }
        a = &a[an..];
        b = &b[bn..];
    }
    Ordering::Equal
}
