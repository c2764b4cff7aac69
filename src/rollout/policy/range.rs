//! Semver ranges in the constraint syntax Flux's ImagePolicy documents, which is that of the Go
//! library Flux uses (Masterminds/semver v3.4): `||` between alternatives, a comma or spaces
//! between the comparators of one alternative (all must hold), the operators `=` (or none), `!=`,
//! `>`, `>=` (`=>`), `<`, `<=` (`=<`), `~` (`~>`) and `^`, partial versions and `x`/`X`/`*`
//! wildcards (`1.4`, `1.x`, `*`), hyphen ranges (`1.2 - 1.4.5`, spaces required) and an optional
//! leading `v`. The semver crate's `VersionReq` is Cargo's syntax (a bare `1.2` means `^1.2`
//! there, `~1.2` here), so the parser and the checks are written here, each comparator following
//! the Go library's rules, with its table of cases in the tests.
//!
//! Pre-releases (Masterminds v3.4, Flux today): a pre-release version can match an alternative
//! only if one of that alternative's comparators names a pre-release, of any version:
//! `>=2.0.0-rc.0, <3` matches `2.0.0-rc.1` and `2.1.0-beta.1`; `>=2.0.0, <3` matches neither.
//! This is wider than npm's and Cargo's rule (a pre-release only on the same major.minor.patch as
//! the comparator that names one). `>=1.0.0-0` is the way to say "pre-releases too".
//!
//! Stricter than the Go library: a wildcard must be the last component given (`1.x.3` is an
//! error, Go reads it as `1.x`), and a lone `*` takes only `=`, `>=` or `~` (Go gives `^*`, `<=*`
//! or `!=*` odd meanings such as "0.0.0 only").

use std::{cmp::Ordering, fmt};

use semver::{BuildMetadata, Prerelease, Version};

/// A parsed range; shown as written.
#[derive(Clone, Debug)]
pub struct Range {
    text: String,
    alternatives: Vec<Alternative>,
}

#[derive(Clone, Debug)]
struct Alternative {
    all: Vec<Comparator>,
    /// Some comparator names a pre-release, so pre-release versions may match.
    prereleases: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Comparator {
    op: Op,
    /// Missing and wildcard components are 0; build metadata is dropped (it never counts).
    version: Version,
    wild: Wild,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Tilde,
    Caret,
}

/// The components a comparator leaves open: `1.2.3` none, `1.2` or `1.2.x` the patch, `1` or
/// `1.x` the minor and the patch, `*` all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wild {
    None,
    Patch,
    Minor,
    All,
}

/// Longest operators first, so `>=` is not read as `>` then `=1.2`.
const OPERATORS: [(&str, Op); 11] = [
    ("!=", Op::Ne),
    (">=", Op::Ge),
    ("=>", Op::Ge),
    ("<=", Op::Le),
    ("=<", Op::Le),
    ("~>", Op::Tilde),
    (">", Op::Gt),
    ("<", Op::Lt),
    ("=", Op::Eq),
    ("~", Op::Tilde),
    ("^", Op::Caret),
];

impl Range {
    /// Parses a range; the error says which part is wrong and how ranges are written.
    pub fn parse(text: &str) -> Result<Range, String> {
        let bad = |why: String| format!("semver range {text:?}: {why}");
        if text.trim().is_empty() {
            return Err(bad("empty; write for example ~1.4, ^1.0.0, 1.x or >=2.0.0 <3".into()));
        }
        let mut alternatives = Vec::new();
        for part in text.split("||") {
            let all = parse_alternative(part).map_err(bad)?;
            let prereleases = all.iter().any(|c| !c.version.pre.is_empty());
            alternatives.push(Alternative { all, prereleases });
        }
        Ok(Range { text: text.trim().to_string(), alternatives })
    }

    /// Whether `v` is in the range (build metadata ignored).
    pub fn matches(&self, v: &Version) -> bool {
        self.alternatives.iter().any(|a| (v.pre.is_empty() || a.prereleases) && a.all.iter().all(|c| c.matches(v)))
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_alternative(part: &str) -> Result<Vec<Comparator>, String> {
    let mut rest = part.trim_start();
    if rest.is_empty() {
        return Err("an empty alternative beside ||".into());
    }
    let mut all = Vec::new();
    loop {
        let (op, op_text, after_op) = match OPERATORS.iter().find(|(s, _)| rest.starts_with(s)) {
            Some((s, op)) => (*op, *s, rest[s.len()..].trim_start()),
            None => (Op::Eq, "", rest),
        };
        let (word, after) = take_word(after_op);
        if word.is_empty() {
            return Err(if op_text.is_empty() {
                format!("expected a comparator at {rest:?}")
            } else {
                format!("{op_text:?} has no version after it")
            });
        }
        if word == "-" {
            return Err("a hyphen range (1.2 - 1.4.5) takes two versions without operators".into());
        }
        let (version, wild) = parse_partial(word)?;
        if wild == Wild::All && !matches!(op, Op::Eq | Op::Ge | Op::Tilde) {
            return Err(format!("{op_text}{word}: a lone wildcard takes no operator but = or >= or ~"));
        }
        rest = after.trim_start();
        // `1.2 - 1.4.5`: the spaces around `-` are what makes it a range (`1.2-1.4.5` is the
        // version 1.2 with the pre-release 1.4.5).
        let hyphen = op_text.is_empty() && rest.strip_prefix('-').is_some_and(|r| r.starts_with(char::is_whitespace));
        if hyphen {
            let (upper, after) = take_word(rest[1..].trim_start());
            if upper.is_empty() || OPERATORS.iter().any(|(s, _)| upper.starts_with(s)) {
                return Err(format!("{word} - {upper}: a hyphen range takes two versions without operators"));
            }
            let (upper_version, upper_wild) = parse_partial(upper)?;
            all.push(Comparator { op: Op::Ge, version, wild });
            all.push(Comparator { op: Op::Le, version: upper_version, wild: upper_wild });
            rest = after.trim_start();
        } else {
            all.push(Comparator { op, version, wild });
        }
        if rest.is_empty() {
            return Ok(all);
        }
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
            if rest.is_empty() {
                return Err("a comma with no comparator after it".into());
            }
        }
    }
}

/// The text up to the next space or comma, and what follows.
fn take_word(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| c.is_whitespace() || c == ',').unwrap_or(s.len());
    s.split_at(end)
}

fn is_wildcard(part: &str) -> bool {
    matches!(part, "x" | "X" | "*")
}

/// `[v]MAJOR[.MINOR[.PATCH]][-PRE][+BUILD]`, with `x`, `X` or `*` for a trailing component.
fn parse_partial(word: &str) -> Result<(Version, Wild), String> {
    let bad = |why: &str| format!("{word:?} is not a version: {why}");
    let w = word.strip_prefix('v').unwrap_or(word);
    let (w, build) = match w.split_once('+') {
        Some((w, b)) => (w, Some(b)),
        None => (w, None),
    };
    if let Some(b) = build {
        if b.is_empty() {
            return Err(bad("empty build metadata after +"));
        }
        BuildMetadata::new(b).map_err(|e| bad(&format!("build metadata: {e}")))?;
    }
    let (core, pre) = match w.split_once('-') {
        Some((c, p)) => (c, Prerelease::new(p).map_err(|e| bad(&format!("pre-release: {e}")))?),
        None => (w, Prerelease::EMPTY),
    };
    if pre.as_str().is_empty() && w.contains('-') {
        return Err(bad("empty pre-release after -"));
    }
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 3 {
        return Err(bad("more than three components"));
    }
    let mut numbers = [0u64; 3];
    let mut given = 0;
    for (i, part) in parts.iter().enumerate() {
        if is_wildcard(part) {
            if parts[i + 1..].iter().any(|p| !is_wildcard(p)) {
                return Err(bad("a wildcard must be the last component (write 1.x, not 1.x.3)"));
            }
            break;
        }
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("components are numbers, x, X or *"));
        }
        numbers[i] = part.parse().map_err(|_| bad("a component is too large"))?;
        given += 1;
    }
    let wild = match given {
        0 => Wild::All,
        1 => Wild::Minor,
        2 => Wild::Patch,
        _ => Wild::None,
    };
    let mut version = Version::new(numbers[0], numbers[1], numbers[2]);
    version.pre = pre;
    Ok((version, wild))
}

impl Comparator {
    /// One comparator, as the Go library checks it (pre-releases are gated per alternative).
    fn matches(&self, v: &Version) -> bool {
        let c = &self.version;
        let order = v.cmp_precedence(c);
        match (self.op, self.wild) {
            (Op::Eq, Wild::None) => order == Ordering::Equal,
            (Op::Eq, _) | (Op::Tilde, _) => self.tilde(v),
            (Op::Ne, Wild::None) => order != Ordering::Equal,
            (Op::Ne, Wild::Minor) => v.major != c.major,
            (Op::Ne, _) => v.major != c.major || v.minor != c.minor || v.pre != c.pre,
            (Op::Gt, Wild::None | Wild::All) => order == Ordering::Greater,
            // `>1` is 2.0.0 and above, `>1.2` 1.3.0 and above (pre-releases of those included).
            (Op::Gt, Wild::Minor) => v.major > c.major,
            (Op::Gt, Wild::Patch) => v.major > c.major || (v.major == c.major && v.minor > c.minor),
            (Op::Ge, _) => order != Ordering::Less,
            (Op::Lt, _) => order == Ordering::Less,
            (Op::Le, Wild::None) => order != Ordering::Greater,
            // `<=1` is below 2.0.0, `<=1.2` below 1.3.0.
            (Op::Le, Wild::Minor) => v.major <= c.major,
            (Op::Le, _) => v.major < c.major || (v.major == c.major && v.minor <= c.minor),
            (Op::Caret, _) => self.caret(v),
        }
    }

    /// `~1.2.3`: at least 1.2.3 and below 1.3.0; `~1` or `~1.x`: below 2.0.0; `~0.0.0` and `~*`:
    /// anything.
    fn tilde(&self, v: &Version) -> bool {
        let c = &self.version;
        if v.cmp_precedence(c) == Ordering::Less {
            return false;
        }
        if (c.major, c.minor, c.patch) == (0, 0, 0) && matches!(self.wild, Wild::None | Wild::All) {
            return true;
        }
        v.major == c.major && (v.minor == c.minor || self.wild == Wild::Minor)
    }

    /// `^1.2.3`: below 2.0.0; `^0.2.3`: below 0.3.0; `^0.0.3`: 0.0.3 only; `^0`: below 1.0.0;
    /// `^0.0`: below 0.1.0.
    fn caret(&self, v: &Version) -> bool {
        let c = &self.version;
        if v.cmp_precedence(c) == Ordering::Less {
            return false;
        }
        if c.major > 0 || self.wild == Wild::Minor {
            return v.major == c.major;
        }
        if v.major > 0 {
            return false;
        }
        if c.minor > 0 || self.wild == Wild::Patch {
            return v.minor == c.minor;
        }
        v.minor == 0 && v.patch == c.patch
    }
}
