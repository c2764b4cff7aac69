//! Immutable tags: ECR-style exclusion filters and which moved tags to restore. Pure functions.

use std::collections::BTreeMap;

/// Whether an ECR filter matches a whole tag; `*` matches any run of characters (also none).
pub fn filter_matches(filter: &str, tag: &str) -> bool {
    Filter::new(filter).matches(tag)
}

/// An ECR wildcard filter split once, so that matching many tags allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    parts: Vec<String>,
}

impl Filter {
    pub fn new(filter: &str) -> Filter {
        Filter { parts: filter.split('*').map(String::from).collect() }
    }

    pub fn matches(&self, tag: &str) -> bool {
        let parts = &self.parts;
        if parts.len() == 1 {
            return parts[0] == tag;
        }
        let (first, last) = (parts[0].as_str(), parts[parts.len() - 1].as_str());
        if !tag.starts_with(first) || tag.len() < first.len() + last.len() || !tag.ends_with(last) {
            return false;
        }
        let mut rest = &tag[first.len()..tag.len() - last.len()];
        for part in &parts[1..parts.len() - 1] {
            match rest.find(part.as_str()) {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        true
    }
}

/// The tag of the OCI referrers tag scheme (`sha256-<64 hex>`): an index of the artifacts
/// (SBOMs, signatures) that refer to an image, on registries without the referrers API.
pub fn is_referrer_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A tag that moved away from the digest it was first pushed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    pub tag: String,
    /// The first digest: what the tag is restored to.
    pub pinned: String,
    /// Where the tag points now.
    pub current: String,
}

/// The plan for an immutable repository: tags to restore, and the pins to keep afterwards.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ImmutablePlan {
    pub restore: Vec<Moved>,
    pub pins: BTreeMap<String, String>,
}

/// Compares the tags seen now with the first digest of each tag. Tags matched by an exclusion
/// stay mutable and are not pinned; a new tag is pinned to what it points at; a tag that is gone
/// (its image was deleted) loses its pin, so it can be pushed again, as in ECR.
pub fn plan_immutable(
    pins: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
    exclusions: &[String],
) -> ImmutablePlan {
    let mut plan = ImmutablePlan::default();
    for (tag, digest) in current {
        // A referrers tag is an index that grows as referrers (SBOMs, signatures) are attached
        // to an image: it moves by design.
        if is_referrer_tag(tag) || exclusions.iter().any(|f| filter_matches(f, tag)) {
            continue;
        }
        match pins.get(tag) {
            Some(pinned) if pinned != digest => {
                plan.restore.push(Moved { tag: tag.clone(), pinned: pinned.clone(), current: digest.clone() });
                plan.pins.insert(tag.clone(), pinned.clone());
            }
            _ => {
                plan.pins.insert(tag.clone(), digest.clone());
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn referrers_tags_move_freely_on_immutable_repositories() {
        let tag = format!("sha256-{}", "a".repeat(64));
        assert!(is_referrer_tag(&tag));
        assert!(!is_referrer_tag("sha256-abc"));
        assert!(!is_referrer_tag(&format!("sha256-{}", "g".repeat(64))));
        let pins = map(&[(tag.as_str(), "d1"), ("v1", "d1")]);
        let plan = plan_immutable(&pins, &map(&[(tag.as_str(), "d2"), ("v1", "d2")]), &[]);
        assert_eq!(plan.restore.len(), 1);
        assert_eq!(plan.restore[0].tag, "v1");
        assert!(!plan.pins.contains_key(&tag), "never pinned");
    }

    #[test]
    fn filters_match_whole_tags_with_wildcards() {
        assert!(filter_matches("latest", "latest"));
        assert!(!filter_matches("latest", "latest2"));
        assert!(filter_matches("dev-*", "dev-1"));
        assert!(filter_matches("dev-*", "dev-"));
        assert!(!filter_matches("dev-*", "xdev-1"));
        assert!(filter_matches("*-rc", "1.0-rc"));
        assert!(!filter_matches("*-rc", "1.0-rc1"));
        assert!(filter_matches("a*b*c", "aXXbYYc"));
        assert!(filter_matches("a*b*c", "abc"));
        assert!(!filter_matches("a*b*c", "acb"));
        assert!(!filter_matches("ab*ba", "aba"), "prefix and suffix may not overlap");
        assert!(filter_matches("*", "anything"));
    }

    #[test]
    fn a_moved_tag_is_restored_to_its_first_digest() {
        let plan = plan_immutable(&map(&[("v1", "d1")]), &map(&[("v1", "d2")]), &[]);
        assert_eq!(plan.restore, vec![Moved { tag: "v1".into(), pinned: "d1".into(), current: "d2".into() }]);
        assert_eq!(plan.pins, map(&[("v1", "d1")]));
    }

    #[test]
    fn new_tags_are_pinned_and_unchanged_tags_stay() {
        let plan = plan_immutable(&map(&[("v1", "d1")]), &map(&[("v1", "d1"), ("v2", "d2")]), &[]);
        assert!(plan.restore.is_empty());
        assert_eq!(plan.pins, map(&[("v1", "d1"), ("v2", "d2")]));
    }

    #[test]
    fn excluded_tags_move_freely_and_gone_tags_lose_their_pin() {
        let excl = vec!["latest".to_string(), "dev-*".to_string()];
        let plan = plan_immutable(
            &map(&[("latest", "d1"), ("dev-3", "d1"), ("gone", "d9")]),
            &map(&[("latest", "d2"), ("dev-3", "d2")]),
            &excl,
        );
        assert!(plan.restore.is_empty());
        assert!(plan.pins.is_empty(), "{:?}", plan.pins);
    }
}
