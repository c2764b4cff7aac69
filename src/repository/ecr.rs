//! What an ECR repository should look like for a Repository, and what to change to get there.
//! Pure: the controller reads the repository (DescribeRepositories, ListTagsForResource), asks
//! [`plan`], and makes the calls it lists.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    api::{LifecycleRule, RepositorySpec, TagMutability},
    registry::ecr::{NewRepository, RepositoryInfo},
};

/// The resource tag berth puts on repositories it creates: `<namespace>/<name>` of the
/// Repository. A repository that lacks it was made by someone else, and berth adopted it.
pub const OWNER_TAG: &str = "berth.dev/repository";

/// The settings ECR should have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub tag_mutability: &'static str,
    pub exclusion_filters: Vec<String>,
    pub scan_on_push: bool,
    /// `None`: whatever ECR chose (AES256 unless the registry has a creation template).
    pub encryption_type: Option<String>,
    pub kms_key: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// ECR's tag mutability for berth's: `Immutable` with exclusions is `IMMUTABLE_WITH_EXCLUSION`.
pub fn mutability(spec: &RepositorySpec) -> (&'static str, Vec<String>) {
    let exclusions = spec.immutable_tag_exclusions.clone().unwrap_or_default();
    match spec.image_tag_mutability {
        TagMutability::Mutable => ("MUTABLE", Vec::new()),
        TagMutability::Immutable if exclusions.is_empty() => ("IMMUTABLE", Vec::new()),
        TagMutability::Immutable => ("IMMUTABLE_WITH_EXCLUSION", exclusions),
    }
}

/// What the spec asks of ECR; `scan_on_push` is the repository's scan frequency being OnPush
/// or more (the Registry's rules or the Repository's own flag).
pub fn desired(spec: &RepositorySpec, scan_on_push: bool) -> Desired {
    let (tag_mutability, exclusion_filters) = mutability(spec);
    let ecr = spec.ecr.clone().unwrap_or_default();
    Desired {
        tag_mutability,
        exclusion_filters,
        scan_on_push,
        encryption_type: ecr.encryption.as_ref().map(|e| e.type_.as_str().to_string()),
        kms_key: ecr.encryption.and_then(|e| e.kms_key),
        tags: ecr.tags,
    }
}

/// One call to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create(NewRepository),
    Mutability { mutability: &'static str, filters: Vec<String> },
    ScanOnPush(bool),
    Tag(BTreeMap<String, String>),
    Untag(Vec<String>),
}

/// The calls, and what cannot be changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Encryption differs from the spec: ECR cannot change it after creation.
    pub mismatch: Option<String>,
    /// The tag keys berth owns once the changes are made.
    pub managed_tag_keys: Vec<String>,
}

/// Decides the calls. `observed` is the repository (`None`: it does not exist), `tags_now` its
/// resource tags (read only when berth has tags to manage), `managed_before` the keys berth set
/// earlier, `owner` the value of [`OWNER_TAG`] for this Repository.
pub fn plan(
    desired: &Desired,
    observed: Option<&RepositoryInfo>,
    tags_now: &BTreeMap<String, String>,
    managed_before: &[String],
    owner: &str,
) -> Plan {
    let managed_tag_keys: Vec<String> = desired.tags.keys().cloned().collect();
    let Some(observed) = observed else {
        let mut tags = desired.tags.clone();
        tags.insert(OWNER_TAG.to_string(), owner.to_string());
        return Plan {
            changes: vec![Change::Create(NewRepository {
                tag_mutability: desired.tag_mutability.to_string(),
                exclusion_filters: desired.exclusion_filters.clone(),
                scan_on_push: desired.scan_on_push,
                encryption_type: desired.encryption_type.clone(),
                kms_key: desired.kms_key.clone(),
                tags,
            })],
            mismatch: None,
            managed_tag_keys,
        };
    };
    let mut changes = Vec::new();
    let filters_now: BTreeSet<&String> = observed.exclusion_filters.iter().collect();
    let filters_wanted: BTreeSet<&String> = desired.exclusion_filters.iter().collect();
    if observed.tag_mutability != desired.tag_mutability || filters_now != filters_wanted {
        changes.push(Change::Mutability {
            mutability: desired.tag_mutability,
            filters: desired.exclusion_filters.clone(),
        });
    }
    if observed.scan_on_push != desired.scan_on_push {
        changes.push(Change::ScanOnPush(desired.scan_on_push));
    }
    let set: BTreeMap<String, String> = desired
        .tags
        .iter()
        .filter(|(k, v)| tags_now.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !set.is_empty() {
        changes.push(Change::Tag(set));
    }
    let unset: Vec<String> = managed_before
        .iter()
        .filter(|k| !desired.tags.contains_key(*k) && tags_now.contains_key(*k) && k.as_str() != OWNER_TAG)
        .cloned()
        .collect();
    if !unset.is_empty() {
        changes.push(Change::Untag(unset));
    }
    let mismatch = match (&desired.encryption_type, &desired.kms_key) {
        (Some(t), _) if *t != observed.encryption_type => Some(format!(
            "the repository is encrypted with {} and the spec asks for {t}: ECR fixes encryption when a repository is created (delete and recreate it to change it)",
            observed.encryption_type
        )),
        // A key given as an ARN can be compared; an alias or id is taken as matching.
        (Some(_), Some(key)) if key.starts_with("arn:") && observed.kms_key.as_deref().is_some_and(|k| k != key) => {
            Some(format!(
                "the repository is encrypted with KMS key {} and the spec asks for {key}: ECR fixes encryption when a repository is created",
                observed.kms_key.as_deref().unwrap_or_default()
            ))
        }
        _ => None,
    };
    Plan { changes, mismatch, managed_tag_keys }
}

/// Whether berth made this repository (it carries berth's owner tag for this Repository).
pub fn made_by(tags: &BTreeMap<String, String>, owner: &str) -> bool {
    tags.get(OWNER_TAG).is_some_and(|v| v == owner)
}

/// The lifecycle policy text ECR gets for `mode: Native`: the rules as ECR's JSON (the CRD has
/// ECR's shape, so this is the rules themselves). Deterministic.
pub fn lifecycle_policy_text(rules: &[LifecycleRule]) -> String {
    let mut rules: Vec<&LifecycleRule> = rules.iter().collect();
    rules.sort_by_key(|r| r.rule_priority);
    serde_json::json!({ "rules": rules }).to_string()
}

/// Whether two lifecycle policy texts say the same (as JSON, whatever the spacing).
pub fn same_policy(a: &str, b: &str) -> bool {
    match (serde_json::from_str::<serde_json::Value>(a), serde_json::from_str::<serde_json::Value>(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> RepositorySpec {
        serde_json::from_value(v).unwrap()
    }

    fn info(mutability: &str, filters: &[&str], scan: bool) -> RepositoryInfo {
        RepositoryInfo {
            arn: "arn:aws:ecr:eu-west-1:123456789012:repository/team-a/app".into(),
            tag_mutability: mutability.into(),
            exclusion_filters: filters.iter().map(|s| s.to_string()).collect(),
            scan_on_push: scan,
            encryption_type: "AES256".into(),
            ..Default::default()
        }
    }

    #[test]
    fn mutability_maps_onto_ecr() {
        let m = |v| mutability(&spec(v));
        assert_eq!(m(serde_json::json!({"registryRef": {"name": "r"}})), ("MUTABLE", vec![]));
        assert_eq!(
            m(serde_json::json!({"registryRef": {"name": "r"}, "imageTagMutability": "Immutable"})),
            ("IMMUTABLE", vec![])
        );
        assert_eq!(
            m(
                serde_json::json!({"registryRef": {"name": "r"}, "imageTagMutability": "Immutable", "immutableTagExclusions": ["dev-*", "latest"]})
            ),
            ("IMMUTABLE_WITH_EXCLUSION", vec!["dev-*".to_string(), "latest".to_string()])
        );
    }

    #[test]
    fn a_missing_repository_is_created_with_everything_and_berths_owner_tag() {
        let s = spec(serde_json::json!({
            "registryRef": {"name": "r"}, "imageTagMutability": "Immutable", "immutableTagExclusions": ["dev-*"],
            "ecr": {"encryption": {"type": "KMS", "kmsKey": "alias/team"}, "tags": {"team": "a"}},
        }));
        let p = plan(&desired(&s, true), None, &BTreeMap::new(), &[], "team-a/app");
        let Change::Create(new) = &p.changes[0] else { panic!("{p:?}") };
        assert_eq!(new.tag_mutability, "IMMUTABLE_WITH_EXCLUSION");
        assert_eq!(new.exclusion_filters, ["dev-*"]);
        assert!(new.scan_on_push);
        assert_eq!((new.encryption_type.as_deref(), new.kms_key.as_deref()), (Some("KMS"), Some("alias/team")));
        assert_eq!(new.tags.get("team").map(String::as_str), Some("a"));
        assert!(made_by(&new.tags, "team-a/app") && !made_by(&new.tags, "team-b/app"));
        assert_eq!(p.managed_tag_keys, ["team"]);
    }

    #[test]
    fn an_existing_repository_gets_only_the_calls_that_change_something() {
        let s = spec(serde_json::json!({"registryRef": {"name": "r"}, "imageTagMutability": "Immutable"}));
        let d = desired(&s, false);
        assert_eq!(plan(&d, Some(&info("IMMUTABLE", &[], false)), &BTreeMap::new(), &[], "o").changes, vec![]);
        let p = plan(&d, Some(&info("MUTABLE", &[], true)), &BTreeMap::new(), &[], "o");
        assert_eq!(
            p.changes,
            vec![Change::Mutability { mutability: "IMMUTABLE", filters: vec![] }, Change::ScanOnPush(false)]
        );
        // Filters compared as a set.
        let s = spec(
            serde_json::json!({"registryRef": {"name": "r"}, "imageTagMutability": "Immutable", "immutableTagExclusions": ["a*", "b*"]}),
        );
        let d = desired(&s, false);
        assert!(
            plan(&d, Some(&info("IMMUTABLE_WITH_EXCLUSION", &["b*", "a*"], false)), &BTreeMap::new(), &[], "o")
                .changes
                .is_empty()
        );
    }

    #[test]
    fn berth_changes_and_removes_only_the_tag_keys_it_owns() {
        let s = spec(serde_json::json!({"registryRef": {"name": "r"}, "ecr": {"tags": {"team": "b", "cost": "1"}}}));
        let d = desired(&s, false);
        let now: BTreeMap<String, String> =
            [("team", "a"), ("cost", "1"), ("old", "x"), ("theirs", "y"), (OWNER_TAG, "o")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let before = ["team".to_string(), "old".to_string(), OWNER_TAG.to_string(), "gone".to_string()];
        let p = plan(&d, Some(&info("MUTABLE", &[], false)), &now, &before, "o");
        assert_eq!(
            p.changes,
            vec![Change::Tag([("team".to_string(), "b".to_string())].into()), Change::Untag(vec!["old".to_string()])]
        );
        assert_eq!(p.managed_tag_keys, ["cost", "team"]);
    }

    #[test]
    fn encryption_cannot_change_and_says_why() {
        let s = spec(serde_json::json!({"registryRef": {"name": "r"}, "ecr": {"encryption": {"type": "KMS"}}}));
        let p = plan(&desired(&s, false), Some(&info("MUTABLE", &[], false)), &BTreeMap::new(), &[], "o");
        assert!(
            p.mismatch.as_deref().is_some_and(|m| m.contains("AES256") && m.contains("KMS") && m.contains("recreate"))
        );
        let unset = spec(serde_json::json!({"registryRef": {"name": "r"}}));
        assert_eq!(
            plan(&desired(&unset, false), Some(&info("MUTABLE", &[], false)), &BTreeMap::new(), &[], "o").mismatch,
            None
        );
        let mut kms = info("MUTABLE", &[], false);
        kms.encryption_type = "KMS".into();
        kms.kms_key = Some("arn:aws:kms:eu-west-1:123456789012:key/one".into());
        let alias = spec(
            serde_json::json!({"registryRef": {"name": "r"}, "ecr": {"encryption": {"type": "KMS", "kmsKey": "alias/x"}}}),
        );
        assert_eq!(plan(&desired(&alias, false), Some(&kms), &BTreeMap::new(), &[], "o").mismatch, None);
        let other = spec(
            serde_json::json!({"registryRef": {"name": "r"}, "ecr": {"encryption": {"type": "KMS", "kmsKey": "arn:aws:kms:eu-west-1:123456789012:key/two"}}}),
        );
        assert!(plan(&desired(&other, false), Some(&kms), &BTreeMap::new(), &[], "o").mismatch.is_some());
    }

    #[test]
    fn native_lifecycle_text_is_ecrs_shape_in_priority_order() {
        let rules: Vec<LifecycleRule> = serde_json::from_value(serde_json::json!([
            {"rulePriority": 2, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5}, "action": {"type": "expire"}},
            {"rulePriority": 1, "description": "old dev", "selection": {"tagStatus": "tagged", "tagPatternList": ["dev-*"], "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7}, "action": {"type": "expire"}},
        ]))
        .unwrap();
        let text = lifecycle_policy_text(&rules);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["rules"][0]["rulePriority"], 1);
        assert_eq!(v["rules"][0]["selection"]["countUnit"], "days");
        assert_eq!(v["rules"][0]["selection"]["tagPatternList"][0], "dev-*");
        assert_eq!(v["rules"][1]["action"]["type"], "expire");
        assert!(v["rules"][1]["selection"].get("tagPrefixList").is_none(), "no nulls: ECR refuses them");
        assert!(same_policy(&text, &serde_json::to_string_pretty(&v).unwrap()));
        assert!(!same_policy(&text, r#"{"rules":[]}"#));
    }
}
