//! Lifecycle policies with the semantics of AWS ECR, evaluated without I/O: images in,
//! decisions out.
//!
//! - Rules apply in priority order (lowest number first); each image is expired by at most one.
//! - An image whose tags match a rule is claimed by it: no rule of lower priority can expire it,
//!   even if the claiming rule keeps it (this is how "protect" rules work).
//! - Lower-priority rules still count and order claimed images as if they had not expired.
//! - Order is by push time, newest first; older images expire before newer ones. Equal push
//!   times are ordered by digest, so the result never depends on input order.
//! - Several prefixes (or patterns) in one rule are ANDed: each must match one of the tags.
//!
//! Which images workloads use (and so are never expired with `protectInUse`) is [`in_use`].

pub mod in_use;
mod policy;
pub mod preview;

pub use policy::{
    Count, MAX_POLICY_TEXT, Policy, PolicyError, Rule, Selection, parse_ecr_json, parse_policy_document,
    policy_from_spec,
};

use crate::repository::tags::Filter;

/// One image as the evaluator sees it. A multi-arch index is one image.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    pub digest: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Push time in unix milliseconds (the preview's JSON takes RFC 3339 instead).
    #[serde(skip)]
    pub pushed_at_ms: i64,
}

/// What the policy decided for one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Expired by the rule with this priority.
    Expired {
        rule_priority: i64,
    },
    Kept,
}

const DAY_MS: i64 = 86_400_000;

/// A rule's tag filter prepared once: patterns split, nothing allocated per image.
enum Matcher<'a> {
    Any,
    Untagged,
    Prefixes(&'a [String]),
    Patterns(Vec<Filter>),
}

impl Matcher<'_> {
    fn new(rule: &Rule) -> Matcher<'_> {
        match &rule.selection {
            Selection::Any => Matcher::Any,
            Selection::Untagged => Matcher::Untagged,
            Selection::TaggedPrefixes(p) => Matcher::Prefixes(p),
            Selection::TaggedPatterns(p) => Matcher::Patterns(p.iter().map(|p| Filter::new(p)).collect()),
        }
    }

    fn matches(&self, image: &Image) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Untagged => image.tags.is_empty(),
            Matcher::Prefixes(prefixes) => {
                !image.tags.is_empty() && prefixes.iter().all(|p| image.tags.iter().any(|t| t.starts_with(p.as_str())))
            }
            Matcher::Patterns(filters) => {
                !image.tags.is_empty() && filters.iter().all(|f| image.tags.iter().any(|t| f.matches(t)))
            }
        }
    }
}

/// Whether a rule's tag requirements select an image.
pub fn rule_matches(rule: &Rule, image: &Image) -> bool {
    Matcher::new(rule).matches(image)
}

/// Decides every image; the result is aligned with `images`. `now_ms` is unix milliseconds.
///
/// Linear in images per rule plus one sort: each rule's matches are computed in one sequential
/// pass, then the rules walk the images newest first over those small arrays.
pub fn evaluate(policy: &Policy, images: &[Image], now_ms: i64) -> Vec<Decision> {
    let mut order: Vec<u32> = (0..images.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (&images[a as usize], &images[b as usize]);
        b.pushed_at_ms.cmp(&a.pushed_at_ms).then_with(|| a.digest.cmp(&b.digest))
    });
    let mut claimed = vec![false; images.len()];
    let mut decisions = vec![Decision::Kept; images.len()];
    let mut matching = vec![false; images.len()];
    for rule in &policy.rules {
        let matcher = Matcher::new(rule);
        for (m, image) in matching.iter_mut().zip(images) {
            *m = matcher.matches(image);
        }
        let mut rank: u64 = 0;
        for &i in &order {
            let i = i as usize;
            if !matching[i] {
                continue;
            }
            rank += 1;
            if claimed[i] {
                continue; // counted, but never expired by a lower-priority rule
            }
            claimed[i] = true;
            let expire = match rule.count {
                Count::MoreThan(n) => rank > n,
                Count::SinceDays(days) => {
                    now_ms.saturating_sub(images[i].pushed_at_ms) > (days as i64).saturating_mul(DAY_MS)
                }
            };
            if expire {
                decisions[i] = Decision::Expired { rule_priority: rule.priority };
            }
        }
    }
    decisions
}

#[cfg(test)]
mod tests;
