//! Version policies: which tag of a repository a workload should run, chosen from the
//! repository's tags. The grammar (the value of `berth.dev/rollout`) follows what Flux's
//! ImagePolicy and Argo CD Image Updater offer, on one line:
//!
//! - `digest`: follow the tag the workload names (today's behaviour; no choice among tags).
//! - `semver:<range>`: the highest version in the range, in Flux's constraint syntax
//!   (see [`Range`]): `semver:~1.4`, `semver:^1.0.0`, `semver:1.x`, `semver:>=2.0.0 <3`,
//!   `semver:>=2.0.0-rc.0, <3`. Tags are versions with or without a leading `v`; other tags
//!   are ignored. Pre-releases only when the range names one; build metadata never counts for
//!   the range and only breaks ties. Tags cannot hold `+`: build metadata is written after `_`
//!   (`1.4.3_build.7`), as Helm does for charts in OCI registries.
//! - `pattern:<regex> numerical[:<group>] [asc|desc]`: tags the regular expression matches
//!   (anywhere: anchor it with `^` and `$`), ordered by the number in the named or numbered
//!   capture group (the whole tag without one); `asc` (the default) picks the highest, `desc`
//!   the lowest, as Flux's `numerical.order`. Numbers are decimals (`42`, `-1`, `3.14`); a tag
//!   whose value is not one is ignored (Flux fails the whole policy instead).
//! - `pattern:<regex> alphabetical[:<group>] [asc|desc]`: the same, ordered by the text
//!   (byte-wise, as Flux); `asc` (the default) picks the last, `desc` the first.
//! - `newest-pushed:<regex>`: the matching tag pushed last (Argo CD's `newest-build`), by the
//!   push times the caller knows; tags without one are ignored.
//!
//! Ties are broken so that the choice never depends on the order tags are listed in: versions
//! equal but for build metadata are ordered by it (numeric identifiers as numbers, as the semver
//! crate does), then by the tag's text, so of `1.2.3+build.9`, `1.2.3+build.10` and `v1.2.3`
//! the pick is `1.2.3+build.10`; equal numbers, texts or push times by the tag's text (the last
//! wins).
//!
//! Never backwards: [`select`] does not move a workload to a tag below the one it runs in the
//! policy's order. A running tag outside the policy (not in the range, not matching the
//! pattern) has no place in that order, so the policy's pick stands: that is how a user moves a
//! workload back, by changing the policy. A running tag that matches but cannot be placed
//! (`newest-pushed` without its push time: not listed, or the ledger unread) is kept: the pick
//! could be older.

mod range;

use std::{cmp::Ordering, cmp::Reverse, fmt};

use regex::{Regex, RegexBuilder};
use semver::Version;

pub use range::Range;

/// Longest policy text accepted.
pub const MAX_POLICY_LEN: usize = 1024;
/// Compiled size limit for a policy's regular expression (it comes from an annotation).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

const GRAMMAR: &str = "digest, semver:<range>, pattern:<regex> numerical[:<group>] [asc|desc], \
                       pattern:<regex> alphabetical[:<group>] [asc|desc], or newest-pushed:<regex>";

/// A parsed version policy.
#[derive(Clone, Debug)]
pub enum Policy {
    /// Follow the workload's own tag.
    Digest,
    /// The highest version in a range.
    Semver(Range),
    /// Tags matching a pattern, ordered by a capture group (or the whole tag).
    Pattern { regex: Regex, group: Option<String>, order: Order },
    /// The matching tag pushed last.
    NewestPushed(Regex),
}

/// How a pattern policy orders the matching tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Numerical(Direction),
    Alphabetical(Direction),
}

/// Flux's sort order: `Asc` picks the highest number or the last text, `Desc` the lowest or
/// the first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    #[default]
    Asc,
    Desc,
}

/// A tag of the repository, with what is known about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub tag: String,
    pub digest: Option<String>,
    /// Push time, unix milliseconds (the ledger's unit: two pushes in one second stay ordered).
    pub pushed_at_ms: Option<i64>,
}

/// What a policy chose, and why in a short sentence for people (Events, the preview).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// `None`: nothing to run (no tag matches, or `digest` without a current tag).
    pub tag: Option<String>,
    /// The chosen tag's digest, when its candidate carried one.
    pub digest: Option<String>,
    pub reason: String,
}

/// Parses a policy; the error names the part that is wrong and says how policies are written.
pub fn parse(text: &str) -> Result<Policy, String> {
    let text = text.trim();
    if text.len() > MAX_POLICY_LEN {
        return Err(format!("rollout policy longer than {MAX_POLICY_LEN} characters"));
    }
    if text == "digest" {
        return Ok(Policy::Digest);
    }
    if let Some(range) = text.strip_prefix("semver:") {
        return Range::parse(range).map(Policy::Semver);
    }
    if let Some(rest) = text.strip_prefix("pattern:") {
        return parse_pattern(rest);
    }
    if let Some(pattern) = text.strip_prefix("newest-pushed:") {
        let pattern = pattern.trim();
        if pattern.is_empty() || pattern.contains(char::is_whitespace) {
            return Err(format!(
                "newest-pushed takes one pattern without spaces (newest-pushed:^nightly-, or newest-pushed:. for any tag), got {pattern:?}"
            ));
        }
        return compile(pattern).map(Policy::NewestPushed);
    }
    let hint = match text {
        "semver" => " (semver needs a range, e.g. semver:~1.4)",
        "newest-pushed" => " (newest-pushed needs a pattern, e.g. newest-pushed:^nightly-)",
        _ if text.starts_with("pattern") => " (pattern:<regex> then numerical or alphabetical)",
        _ => "",
    };
    Err(format!("unknown rollout policy {text:?}{hint}: expected {GRAMMAR}"))
}

fn parse_pattern(rest: &str) -> Result<Policy, String> {
    let mut words = rest.split_whitespace();
    let (Some(pattern), Some(order_word)) = (words.next(), words.next()) else {
        return Err(format!(
            "pattern:{} needs an order after the pattern: numerical[:<group>] or alphabetical[:<group>]",
            rest.trim()
        ));
    };
    let (kind, group) = match order_word.split_once(':') {
        Some((k, g)) => (k, Some(g)),
        None => (order_word, None),
    };
    let order: fn(Direction) -> Order = match kind {
        "numerical" => Order::Numerical,
        "alphabetical" => Order::Alphabetical,
        _ => {
            return Err(format!(
                "pattern policy: expected numerical[:<group>] or alphabetical[:<group>] after the pattern, got {order_word:?} (a pattern has no spaces; use \\s)"
            ));
        }
    };
    let direction = match words.next() {
        None | Some("asc") => Direction::Asc,
        Some("desc") => Direction::Desc,
        Some(other) => return Err(format!("pattern policy: expected asc or desc after {order_word}, got {other:?}")),
    };
    if let Some(extra) = words.next() {
        return Err(format!("pattern policy: unexpected {extra:?} at the end"));
    }
    let order = order(direction);
    let regex = compile(pattern)?;
    if let Some(g) = group {
        check_group(&regex, g)?;
    }
    Ok(Policy::Pattern { regex, group: group.map(String::from), order })
}

fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| {
        let text = e.to_string();
        // A syntax error is several lines (the pattern, a caret, "error: ..."): keep the last.
        let why = text.lines().rev().find_map(|l| l.strip_prefix("error: ")).unwrap_or(&text).to_string();
        format!("pattern {pattern:?}: {why}")
    })
}

fn check_group(regex: &Regex, group: &str) -> Result<(), String> {
    let pattern = regex.as_str();
    if group.is_empty() {
        return Err(format!("pattern {pattern:?}: empty group name after ':'"));
    }
    if let Ok(i) = group.parse::<usize>() {
        if i >= regex.captures_len() {
            return Err(format!("pattern {pattern:?}: there is no group {i} (it has {})", regex.captures_len() - 1));
        }
    } else if !regex.capture_names().flatten().any(|n| n == group) {
        return Err(format!("pattern {pattern:?}: there is no group named {group:?} (write (?P<{group}>...))"));
    }
    Ok(())
}

impl fmt::Display for Policy {
    /// The policy as it would be written, with defaults left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Digest => f.write_str("digest"),
            Policy::Semver(range) => write!(f, "semver:{range}"),
            Policy::Pattern { regex, group, order } => {
                let (kind, direction) = match order {
                    Order::Numerical(d) => ("numerical", d),
                    Order::Alphabetical(d) => ("alphabetical", d),
                };
                write!(f, "pattern:{} {kind}", regex.as_str())?;
                if let Some(g) = group {
                    write!(f, ":{g}")?;
                }
                if *direction == Direction::Desc {
                    f.write_str(" desc")?;
                }
                Ok(())
            }
            Policy::NewestPushed(regex) => write!(f, "newest-pushed:{}", regex.as_str()),
        }
    }
}

/// The version a tag names, with or without a leading `v` (strict semver otherwise: three
/// numbers without leading zeros, optional pre-release and build metadata). A tag cannot hold a
/// `+`, so build metadata is written after a `_` (`1.4.3_build.7` is `1.4.3+build.7`), as Helm
/// writes chart versions into OCI tags.
pub fn semver_of(tag: &str) -> Option<Version> {
    let text = tag.strip_prefix('v').unwrap_or(tag);
    match text.split_once('_') {
        Some((version, build)) if !version.contains('+') => Version::parse(&format!("{version}+{build}")).ok(),
        Some(_) => None,
        None => Version::parse(text).ok(),
    }
}

/// A decimal number as written in a tag, compared exactly (timestamps of 17 digits and more stay
/// distinct, which they would not as floats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Number<'a> {
    negative: bool,
    /// Without leading zeros.
    int: &'a str,
    /// Without trailing zeros.
    frac: &'a str,
}

fn parse_number(s: &str) -> Option<Number<'_>> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) if digits(f) => (i, f),
        Some(_) => return None,
        None => (body, ""),
    };
    if !digits(int) {
        return None;
    }
    let (int, frac) = (int.trim_start_matches('0'), frac.trim_end_matches('0'));
    Some(Number { negative: negative && !(int.is_empty() && frac.is_empty()), int, frac })
}

impl Ord for Number<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (negative, _) => {
                let magnitude = (self.int.len(), self.int, self.frac).cmp(&(other.int.len(), other.int, other.frac));
                if negative { magnitude.reverse() } else { magnitude }
            }
        }
    }
}

impl PartialOrd for Number<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a tag is ordered by under one policy; all positions of one policy have the same variant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Value<'a> {
    Version(Version),
    Number(Number<'a>),
    NumberDesc(Reverse<Number<'a>>),
    Text(&'a str),
    TextDesc(Reverse<&'a str>),
    Pushed(i64),
}

/// A tag's place in a policy's order: greater is newer. The tag's text breaks ties, so the order
/// is total over distinct tags.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Position<'a> {
    value: Value<'a>,
    tag: &'a str,
}

/// Two policies are equal when they are written the same (their canonical text).
impl PartialEq for Policy {
    fn eq(&self, other: &Policy) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Policy {}

impl Policy {
    /// Whether the policy chooses among the repository's tags (every policy but `digest`).
    pub fn is_version(&self) -> bool {
        !matches!(self, Policy::Digest)
    }

    /// Whether the policy would consider `tag` (for `newest-pushed`, given a push time): a push
    /// of any other tag cannot change what it selects.
    pub fn considers(&self, tag: &str) -> bool {
        self.position(tag, Some(0)).is_some()
    }

    /// Where `tag` stands in this policy's order, `None` when the policy does not consider it.
    fn position<'a>(&self, tag: &'a str, pushed_at: Option<i64>) -> Option<Position<'a>> {
        // A referrers index (`sha256-<hex>`: an image's SBOMs and signatures) is no version of
        // anything, whatever a pattern says.
        if crate::repository::tags::is_referrer_tag(tag) {
            return None;
        }
        let value = match self {
            Policy::Digest => return None,
            Policy::Semver(range) => {
                let v = semver_of(tag)?;
                if !range.matches(&v) {
                    return None;
                }
                Value::Version(v)
            }
            Policy::Pattern { regex, group, order } => {
                let key = match group {
                    None => regex.is_match(tag).then_some(tag)?,
                    Some(g) => {
                        let caps = regex.captures(tag)?;
                        let m = match g.parse::<usize>() {
                            Ok(i) => caps.get(i),
                            Err(_) => caps.name(g),
                        };
                        m?.as_str()
                    }
                };
                match order {
                    Order::Numerical(Direction::Asc) => Value::Number(parse_number(key)?),
                    Order::Numerical(Direction::Desc) => Value::NumberDesc(Reverse(parse_number(key)?)),
                    Order::Alphabetical(Direction::Asc) => Value::Text(key),
                    Order::Alphabetical(Direction::Desc) => Value::TextDesc(Reverse(key)),
                }
            }
            Policy::NewestPushed(regex) => {
                if !regex.is_match(tag) {
                    return None;
                }
                Value::Pushed(pushed_at?)
            }
        };
        Some(Position { value, tag })
    }

    /// The position of a tag that may or may not be among the candidates (the running one): its
    /// push time, if needed, comes from its candidate.
    fn position_of<'a>(&self, tag: &'a str, candidates: &[Candidate]) -> Option<Position<'a>> {
        let pushed_at = candidates.iter().find(|c| c.tag == tag).and_then(|c| c.pushed_at_ms);
        self.position(tag, pushed_at)
    }

    /// "the highest", "the last alphabetically", ... for reasons.
    fn superlative(&self) -> &'static str {
        match self {
            Policy::Digest => "",
            Policy::Semver(_) => "the highest",
            Policy::Pattern { order: Order::Numerical(Direction::Asc), .. } => "the highest number",
            Policy::Pattern { order: Order::Numerical(Direction::Desc), .. } => "the lowest number",
            Policy::Pattern { order: Order::Alphabetical(Direction::Asc), .. } => "the last alphabetically",
            Policy::Pattern { order: Order::Alphabetical(Direction::Desc), .. } => "the first alphabetically",
            Policy::NewestPushed(_) => "the newest pushed",
        }
    }

    /// What the candidates are filtered by, for reasons: the range or the pattern.
    fn filter(&self) -> String {
        match self {
            Policy::Digest => String::new(),
            Policy::Semver(range) => range.to_string(),
            Policy::Pattern { regex, .. } | Policy::NewestPushed(regex) => regex.as_str().to_string(),
        }
    }
}

/// The value a position was ordered by, when the tag alone does not show it.
fn shown_value(position: &Position<'_>) -> Option<String> {
    match &position.value {
        Value::Version(_) => None,
        Value::Number(n) | Value::NumberDesc(Reverse(n)) => Some(number_text(n)),
        Value::Text(t) | Value::TextDesc(Reverse(t)) => (*t != position.tag).then(|| t.to_string()),
        Value::Pushed(t) => Some(rfc3339(*t)),
    }
}

fn number_text(n: &Number<'_>) -> String {
    let sign = if n.negative { "-" } else { "" };
    let int = if n.int.is_empty() { "0" } else { n.int };
    if n.frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{}", n.frac) }
}

/// A push time (unix ms) as people read it.
pub(crate) fn rfc3339(unix_ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(unix_ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("unix time {unix_ms} ms"))
}

fn tags(n: usize) -> String {
    if n == 1 { "1 tag".into() } else { format!("{n} tags") }
}

/// The candidates the policy considers, newest first in its order (none for `digest`).
pub fn ranked<'a>(policy: &Policy, candidates: &'a [Candidate]) -> Vec<&'a Candidate> {
    let mut ranked: Vec<(Position<'_>, &Candidate)> =
        candidates.iter().filter_map(|c| Some((policy.position(&c.tag, c.pushed_at_ms)?, c))).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0));
    ranked.into_iter().map(|(_, c)| c).collect()
}

/// Chooses the tag a workload running `current` should run. Never a tag below `current` in the
/// policy's order: when the best candidate is below it, `current` is kept and the reason says so.
/// Tags are expected once each in `candidates`; of duplicates the first counts.
pub fn select(policy: &Policy, candidates: &[Candidate], current: Option<&str>) -> Selection {
    let digest_of = |tag: &str| candidates.iter().find(|c| c.tag == tag).and_then(|c| c.digest.clone());
    if let Policy::Digest = policy {
        return match current {
            None => Selection {
                tag: None,
                digest: None,
                reason: "digest follows the workload's own tag, and no current tag was given".into(),
            },
            Some(tag) => match candidates.iter().find(|c| c.tag == tag) {
                Some(c) => Selection {
                    tag: Some(tag.to_string()),
                    digest: c.digest.clone(),
                    reason: match &c.digest {
                        Some(d) => format!("digest follows the tag {tag}, now at {d}"),
                        None => format!("digest follows the tag {tag}; its digest is not known"),
                    },
                },
                None => Selection {
                    tag: None,
                    digest: None,
                    reason: format!("digest follows the tag {tag}, which is not among the {}", tags(candidates.len())),
                },
            },
        };
    }

    let mut best: Option<(Position<'_>, &Candidate)> = None;
    let mut matching = 0;
    for c in candidates {
        let Some(p) = policy.position(&c.tag, c.pushed_at_ms) else { continue };
        matching += 1;
        if best.as_ref().is_none_or(|(b, _)| p > *b) {
            best = Some((p, c));
        }
    }
    let running = current.map(|t| (t, policy.position_of(t, candidates)));
    let filter = policy.filter();
    match (best, running) {
        (None, Some((cur, position))) if position.is_some() || policy.considers(cur) => Selection {
            tag: Some(cur.to_string()),
            digest: digest_of(cur),
            reason: format!("no tag of {} matches {filter}; keeping the running {cur}", candidates.len()),
        },
        (None, _) => {
            Selection { tag: None, digest: None, reason: format!("no tag of {} matches {filter}", candidates.len()) }
        }
        (Some((b, c)), running) => {
            let value = shown_value(&b).map(|v| format!(" ({v})")).unwrap_or_default();
            let rank = format!("{}{value} of {} matching {filter}", policy.superlative(), tags(matching));
            let why = format!("{} is {rank}", c.tag);
            match running {
                Some((cur, Some(r))) if r > b => Selection {
                    tag: Some(cur.to_string()),
                    digest: digest_of(cur),
                    reason: format!(
                        "keeping the running {cur}: {}, {rank}, is below it and a policy never moves a workload back",
                        c.tag
                    ),
                },
                Some((cur, _)) if cur == c.tag => Selection {
                    tag: Some(cur.to_string()),
                    digest: c.digest.clone(),
                    reason: format!("{why}, and runs already"),
                },
                // Matches the policy's filter but cannot be placed (newest-pushed without its
                // push time): not outside the policy, so never moved from on a guess.
                Some((cur, None)) if policy.considers(cur) && cur != c.tag => Selection {
                    tag: Some(cur.to_string()),
                    digest: digest_of(cur),
                    reason: format!(
                        "keeping the running {cur}: it matches {filter} but its push time is not known, so {} \
                         ({rank}) may be older",
                        c.tag
                    ),
                },
                Some((cur, None)) => Selection {
                    tag: Some(c.tag.clone()),
                    digest: c.digest.clone(),
                    reason: format!("{why} (the running {cur} is outside this policy)"),
                },
                _ => Selection { tag: Some(c.tag.clone()), digest: c.digest.clone(), reason: why },
            }
        }
    }
}

/// Never backwards: whether moving from `current` to `next` goes back in the policy's order.
/// False when either tag is outside the policy (it has no place in the order; see the module
/// notes) and always for `digest`, whose tag does not move (digests are kept from going back by
/// the push times, in [`crate::rollout::plan`]). Push times for `newest-pushed` come from
/// `candidates`.
pub fn is_backwards(policy: &Policy, current: &str, next: &str, candidates: &[Candidate]) -> bool {
    match (policy.position_of(current, candidates), policy.position_of(next, candidates)) {
        (Some(c), Some(n)) => n < c,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
