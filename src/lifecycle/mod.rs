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

mod policy;
pub mod preview;

pub use policy::{
    Count, MAX_POLICY_TEXT, Policy, PolicyError, Rule, Selection, parse_ecr_json, parse_policy_document,
    policy_from_spec,
};

use crate::tags::filter_matches;

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

fn rule_matches(rule: &Rule, image: &Image) -> bool {
    match &rule.selection {
        Selection::Any => true,
        Selection::Untagged => image.tags.is_empty(),
        Selection::TaggedPrefixes(prefixes) => {
            !image.tags.is_empty() && prefixes.iter().all(|p| image.tags.iter().any(|t| t.starts_with(p.as_str())))
        }
        Selection::TaggedPatterns(patterns) => {
            !image.tags.is_empty() && patterns.iter().all(|p| image.tags.iter().any(|t| filter_matches(p, t)))
        }
    }
}

/// Decides every image; the result is aligned with `images`. `now_ms` is unix milliseconds.
pub fn evaluate(policy: &Policy, images: &[Image], now_ms: i64) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.sort_by(|&a, &b| {
        images[b].pushed_at_ms.cmp(&images[a].pushed_at_ms).then_with(|| images[a].digest.cmp(&images[b].digest))
    });
    let mut claimed = vec![false; images.len()];
    let mut decisions = vec![Decision::Kept; images.len()];
    for rule in &policy.rules {
        let mut rank: u64 = 0;
        for &i in &order {
            let image = &images[i];
            if !rule_matches(rule, image) {
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
                    now_ms.saturating_sub(image.pushed_at_ms) > (days as i64).saturating_mul(DAY_MS)
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
