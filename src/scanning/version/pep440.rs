//! PyPI version order: PEP 440, as `packaging.version.Version` parses and orders it.
//!
//! `[v][N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]` with the spellings PEP 440 normalizes:
//! any case, a leading `v`, surrounding whitespace, `alpha`/`beta`/`c`/`pre`/`preview` for
//! `a`/`b`/`rc`/`rc`/`rc`, `rev`/`r` and `-N` for `.postN`, `.`/`-`/`_` separators (or none)
//! around the letters, and an implicit `0` for a missing number.
//!
//! Order: epoch, then the release (trailing zeros ignored: `1.0 == 1.0.0`), then
//! `.devN` alone < `aN` < `bN` < `rcN` < release, `.postN` after its base and `.devN` before
//! it (`1.0.dev1 < 1.0a1.dev1 < 1.0a1 < 1.0 < 1.0.post1.dev1 < 1.0.post1`), then a local
//! version after the public one it extends, segment by segment, text before numbers.

use std::cmp::Ordering;

use super::{cmp_digits, digits_len};

struct Version<'a> {
    epoch: &'a [u8],
    /// Trailing zeros removed.
    release: Vec<&'a [u8]>,
    /// `a` = 0, `b` = 1, `rc` = 2, with its number.
    pre: Option<(i8, &'a [u8])>,
    post: Option<&'a [u8]>,
    dev: Option<&'a [u8]>,
    local: Option<Vec<&'a [u8]>>,
}

pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (parse(a)?, parse(b)?);
    Some(
        cmp_digits(a.epoch, b.epoch)
            .then_with(|| cmp_release(&a.release, &b.release))
            .then_with(|| cmp_suffix(&a, &b))
            .then_with(|| cmp_local(a.local.as_deref(), b.local.as_deref())),
    )
}

fn cmp_release(a: &[&[u8]], b: &[&[u8]]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = cmp_digits(x, y);
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// packaging's `_cmpkey` suffix: `(pre rank, pre number, has post, post number, no dev, dev
/// number)`, where the pre rank of a release with only `.devN` is below `a`, and of a release
/// without a pre-release above `rc`.
fn cmp_suffix(a: &Version, b: &Version) -> Ordering {
    let pre_rank = |v: &Version| match (v.pre, v.post, v.dev) {
        (Some((rank, _)), _, _) => rank,
        (None, None, Some(_)) => -1,
        (None, _, _) => 3,
    };
    pre_rank(a)
        .cmp(&pre_rank(b))
        .then_with(|| cmp_digits(number(a.pre.map(|p| p.1)), number(b.pre.map(|p| p.1))))
        .then_with(|| a.post.is_some().cmp(&b.post.is_some()))
        .then_with(|| cmp_digits(number(a.post), number(b.post)))
        .then_with(|| a.dev.is_none().cmp(&b.dev.is_none()))
        .then_with(|| cmp_digits(number(a.dev), number(b.dev)))
}

/// A missing number is 0.
fn number(n: Option<&[u8]>) -> &[u8] {
    n.unwrap_or(b"")
}

/// No local version before any; segments compared in turn, a text segment (case-insensitive)
/// before a number, numbers as numbers; a shorter local version before a longer one it starts.
fn cmp_local(a: Option<&[&[u8]]>, b: Option<&[&[u8]]>) -> Ordering {
    let (a, b) = match (a, b) {
        (Some(a), Some(b)) => (a, b),
        (a, b) => return a.is_some().cmp(&b.is_some()),
    };
    for (x, y) in a.iter().zip(b) {
        let numeric = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
        let order = match (numeric(x), numeric(y)) {
            (true, true) => cmp_digits(x, y),
            (false, true) => Ordering::Less,
            (true, false) => Ordering::Greater,
            (false, false) => x.iter().map(u8::to_ascii_lowercase).cmp(y.iter().map(u8::to_ascii_lowercase)),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// Python's `\s` (which packaging trims): Unicode whitespace and the ASCII separators
/// `\x1c`-`\x1f`.
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

const PRE: [(&[u8], i8); 8] =
    [(b"alpha", 0), (b"a", 0), (b"beta", 1), (b"b", 1), (b"preview", 2), (b"pre", 2), (b"c", 2), (b"rc", 2)];
const POST: [&[u8]; 3] = [b"post", b"rev", b"r"];

/// A cursor over the version, matching packaging's `VERSION_PATTERN` piece by piece. Its
/// optional groups are possessive, so taking each greedily (and giving it back whole when it
/// does not match) is exactly what the regular expression does.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.s[self.pos..]
    }

    fn eat(&mut self, word: &[u8]) -> bool {
        let rest = self.rest();
        let found = rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word);
        if found {
            self.pos += word.len();
        }
        found
    }

    fn eat_separator(&mut self) {
        if matches!(self.rest().first(), Some(b'.' | b'_' | b'-')) {
            self.pos += 1;
        }
    }

    /// A run of digits, possibly empty.
    fn digits(&mut self) -> &'a [u8] {
        let rest = self.rest();
        let n = digits_len(rest);
        self.pos += n;
        &rest[..n]
    }

    /// `[._-]?` letters `[._-]?` digits?, or nothing (the position unchanged).
    fn letter_group<T: Copy>(&mut self, words: &[(&[u8], T)]) -> Option<(T, &'a [u8])> {
        let start = self.pos;
        self.eat_separator();
        match words.iter().find(|(word, _)| self.eat(word)) {
            Some(&(_, value)) => {
                self.eat_separator();
                Some((value, self.digits()))
            }
            None => {
                self.pos = start;
                None
            }
        }
    }
}

fn parse(version: &str) -> Option<Version<'_>> {
    let s = version.trim_matches(is_space).as_bytes();
    let mut c = Cursor { s, pos: 0 };
    c.eat(b"v");

    let n = digits_len(c.rest());
    let epoch = if n > 0 && c.rest().get(n) == Some(&b'!') {
        let epoch = &c.rest()[..n];
        c.pos += n + 1;
        epoch
    } else {
        b""
    };

    let mut release = vec![c.digits()];
    if release[0].is_empty() {
        return None;
    }
    while c.rest().first() == Some(&b'.') && digits_len(&c.rest()[1..]) > 0 {
        c.pos += 1;
        release.push(c.digits());
    }
    while release.last().is_some_and(|n| n.iter().all(|&d| d == b'0')) {
        release.pop();
    }

    let pre = c.letter_group(&PRE);

    // `-N`, or `[._-]?(post|rev|r)[._-]?N?`.
    let post = if c.rest().first() == Some(&b'-') && digits_len(&c.rest()[1..]) > 0 {
        c.pos += 1;
        Some(c.digits())
    } else {
        let words = POST.map(|w| (w, ()));
        c.letter_group(&words).map(|(_, n)| n)
    };

    let dev = c.letter_group(&[(&b"dev"[..], ())]).map(|(_, n)| n);

    let local = if c.eat(b"+") {
        let mut segments = Vec::new();
        loop {
            let rest = c.rest();
            let n = rest.iter().position(|b| !b.is_ascii_alphanumeric()).unwrap_or(rest.len());
            if n == 0 {
                return None;
            }
            segments.push(&rest[..n]);
            c.pos += n;
            let rest = c.rest();
            if matches!(rest.first(), Some(b'.' | b'_' | b'-')) && rest.get(1).is_some_and(u8::is_ascii_alphanumeric) {
                c.pos += 1;
            } else {
                break;
            }
        }
        Some(segments)
    } else {
        None
    };

    (c.pos == s.len()).then_some(Version { epoch, release, pre, post, dev, local })
}
