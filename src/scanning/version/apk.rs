//! Alpine version order, as apk-tools (`src/version.c`): `digit{.digit}...{letter}{_suffix{#}}...
//! {~hash}{-r#}`, read as a sequence of typed tokens and compared token by token.

use std::cmp::Ordering;

/// Token types in apk-tools' order: where two versions first differ in the type of token,
/// the one whose token comes later in this list is the smaller (a longer version is greater),
/// except that a pre-release suffix is smaller than anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    InitialDigit,
    Digit,
    Letter,
    Suffix,
    SuffixNo,
    CommitHash,
    RevisionNo,
    End,
}

/// Suffix values in apk-tools' order; `_alpha` to `_rc` are before the release, the rest after.
const SUFFIXES: [&[u8]; 9] = [b"alpha", b"beta", b"pre", b"rc", b"cvs", b"svn", b"git", b"hg", b"p"];
const RELEASE: usize = 4;

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    kind: Kind,
    /// The token's text: digits without their dot, the letter, the suffix word, the hash.
    value: &'a [u8],
    /// For `Suffix`: its index in `SUFFIXES`.
    suffix: usize,
}

pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (tokens(a)?, tokens(b)?);
    for (ta, tb) in a.iter().zip(&b) {
        if ta.kind != tb.kind {
            // The leading tokens are equal; the first difference is in kind.
            let a_pre = ta.kind == Kind::Suffix && ta.suffix < RELEASE;
            let b_pre = tb.kind == Kind::Suffix && tb.suffix < RELEASE;
            return Some(if a_pre {
                Ordering::Less
            } else if b_pre {
                Ordering::Greater
            } else {
                tb.kind.cmp(&ta.kind)
            });
        }
        let order = compare_token(ta, tb);
        if order != Ordering::Equal {
            return Some(order);
        }
    }
    // Both end with `End`, so a length difference shows as a kind difference above.
    Some(Ordering::Equal)
}

fn compare_token(a: &Token, b: &Token) -> Ordering {
    match a.kind {
        // A dotted number with a leading zero compares as text (`1.01 < 1.1`, Gentoo's rule).
        Kind::Digit if a.value[0] == b'0' || b.value[0] == b'0' => a.value.cmp(b.value),
        Kind::Digit | Kind::InitialDigit | Kind::SuffixNo | Kind::RevisionNo => super::cmp_digits(a.value, b.value),
        Kind::Letter => a.value.cmp(b.value),
        Kind::Suffix => a.suffix.cmp(&b.suffix),
        Kind::CommitHash | Kind::End => a.value.cmp(b.value),
    }
}

/// The version's tokens, ending with `End`; `None` where apk-tools' `apk_version_validate`
/// refuses it.
fn tokens(version: &str) -> Option<Vec<Token<'_>>> {
    let mut s = version.as_bytes();
    let mut out = Vec::new();
    let n = super::digits_len(s);
    if n == 0 {
        return None;
    }
    let mut kind = Kind::InitialDigit;
    out.push(Token { kind, value: &s[..n], suffix: 0 });
    s = &s[n..];
    while let Some(&c) = s.first() {
        let token = match c {
            b'a'..=b'z' if kind <= Kind::Digit => {
                let value = &s[..1];
                s = &s[1..];
                Token { kind: Kind::Letter, value, suffix: 0 }
            }
            b'.' if kind <= Kind::Digit => {
                let n = super::digits_len(&s[1..]);
                if n == 0 {
                    return None;
                }
                let value = &s[1..=n];
                s = &s[n + 1..];
                Token { kind: Kind::Digit, value, suffix: 0 }
            }
            // Digits straight after a letter (`1.0a1`) are invalid; after a suffix, its number.
            b'0'..=b'9' if kind == Kind::Suffix => {
                let n = super::digits_len(s);
                let value = &s[..n];
                s = &s[n..];
                Token { kind: Kind::SuffixNo, value, suffix: 0 }
            }
            b'_' if kind <= Kind::SuffixNo => {
                let n = s[1..].iter().position(|c| !c.is_ascii_lowercase()).unwrap_or(s.len() - 1);
                let value = &s[1..=n];
                let suffix = SUFFIXES.iter().position(|&w| w == value)?;
                s = &s[n + 1..];
                Token { kind: Kind::Suffix, value, suffix }
            }
            b'~' if kind < Kind::CommitHash => {
                let n = s[1..].iter().position(|c| !matches!(c, b'0'..=b'9' | b'a'..=b'f')).unwrap_or(s.len() - 1);
                if n == 0 {
                    return None;
                }
                let value = &s[1..=n];
                s = &s[n + 1..];
                Token { kind: Kind::CommitHash, value, suffix: 0 }
            }
            b'-' if kind < Kind::RevisionNo && s.get(1) == Some(&b'r') => {
                let n = super::digits_len(&s[2..]);
                if n == 0 {
                    return None;
                }
                let value = &s[2..2 + n];
                s = &s[2 + n..];
                Token { kind: Kind::RevisionNo, value, suffix: 0 }
            }
            _ => return None,
        };
        kind = token.kind;
        out.push(token);
    }
    out.push(Token { kind: Kind::End, value: b"", suffix: 0 });
    Some(out)
}
