//! Who may do what: the token endpoint's authorization, as a pure function over an index built
//! from the cluster's Repositories and AccessPolicies.
//!
//! The rules, in the words of the CRDs:
//! - A Repository berth does not know (no entry in the index) gives nothing to anyone but berth
//!   itself: a registry path nobody declared is nobody's.
//! - A `Public` Repository can be pulled by anyone, without credentials.
//! - Everything else needs a grant of that very action: `push` does not imply `pull`, so docker,
//!   which asks for both when pushing, gets exactly what is granted.
//! - An AccessPolicy applies only to Repositories of its own namespace (a team cannot grant
//!   itself another team's images), chosen by name or by label selector.
//! - `Anonymous` grants apply to every principal, and only ever as `pull`.
//! - The catalog (`registry:catalog:*`) lists every team's repositories: berth only.
//! - `AWSPrincipal` subjects are not principals of the token service: they grant nothing here.
//!   On `ecr` Registries, [`AccessIndex::aws_grants`] lists them for the repository policy
//!   berth writes, since ECR authorizes by IAM.
//!
//! The index is rebuilt when Repositories or AccessPolicies change and read on every token
//! request, so the work is done at build time: a hash lookup of the path, then one lookup per
//! policy that selects the repository.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    sync::Arc,
};

use kube::{
    ResourceExt,
    core::{Selector, SelectorExt},
};

use super::scope::{Access, Resource, Scope, valid_repository_path};
use crate::api::{AccessPolicy, Action, Grant, SubjectKind, Visibility};

/// Who is asking, as the token endpoint authenticated them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// A Kubernetes ServiceAccount, authenticated by its token.
    ServiceAccount { namespace: String, name: String },
    /// A robot account berth generated for a policy's `Robot` subject.
    Robot { namespace: String, name: String },
    /// The short-lived credential of an AccessPolicy's `pullSecrets`: pull, only on the
    /// Repositories that policy selects.
    PullSecret { namespace: String, policy: String },
    /// The operator itself (lifecycle expiry, tag restores, catalog listing).
    Berth,
}

/// A Repository that owns its path in the registry the index is for. The caller has already
/// resolved tenancy (the path is allowed for the namespace) and conflicts (one owner per path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoInput {
    pub path: String,
    pub namespace: String,
    /// `metadata.name`, which a policy's `repositories.names` refers to.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub visibility: Visibility,
}

/// Something wrong with one AccessPolicy, worded for its `Ready=False` condition message. The
/// policy still applies as far as it can: a problem only ever makes it grant less.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyWarning {
    pub namespace: String,
    pub name: String,
    pub message: String,
}

impl fmt::Display for PolicyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessPolicy {}/{}: {}", self.namespace, self.name, self.message)
    }
}

/// A small set of actions, so a grant lookup is a bit operation rather than a set merge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Actions(u8);

impl Actions {
    const PULL: Actions = Actions(1);
    const ALL: Actions = Actions(7);

    fn of(action: Action) -> Actions {
        match action {
            Action::Pull => Actions(1),
            Action::Push => Actions(2),
            Action::Delete => Actions(4),
        }
    }

    fn contains(self, action: Action) -> bool {
        self.0 & Actions::of(action).0 != 0
    }

    fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }
}

impl FromIterator<Action> for Actions {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Actions {
        iter.into_iter().fold(Actions::default(), |acc, a| acc.union(Actions::of(a)))
    }
}

/// One policy's grants, flattened per subject key once when the index is built.
#[derive(Debug, Default)]
struct PolicyGrants {
    namespace: String,
    name: String,
    anonymous: Actions,
    /// ServiceAccount namespace -> name -> actions.
    service_accounts: HashMap<String, HashMap<String, Actions>>,
    /// Namespace subjects: every ServiceAccount of the namespace.
    namespaces: HashMap<String, Actions>,
    /// Robots, which always belong to the policy's namespace.
    robots: HashMap<String, Actions>,
    /// AWS account ids and IAM ARNs, for ECR repository policies only.
    aws: BTreeMap<String, Actions>,
}

impl PolicyGrants {
    /// What this policy grants `principal` on a Repository it selects.
    fn for_principal(&self, principal: &Principal) -> Actions {
        let own = match principal {
            Principal::Anonymous | Principal::Berth => Actions::default(),
            Principal::ServiceAccount { namespace, name } => {
                let one = self.service_accounts.get(namespace).and_then(|m| m.get(name)).copied().unwrap_or_default();
                one.union(self.namespaces.get(namespace).copied().unwrap_or_default())
            }
            Principal::Robot { namespace, name } if *namespace == self.namespace => {
                self.robots.get(name).copied().unwrap_or_default()
            }
            Principal::Robot { .. } => Actions::default(),
            Principal::PullSecret { namespace, policy } if *namespace == self.namespace && *policy == self.name => {
                Actions::PULL
            }
            Principal::PullSecret { .. } => Actions::default(),
        };
        own.union(self.anonymous)
    }
}

#[derive(Debug)]
struct RepoEntry {
    public: bool,
    /// The policies that select this Repository, shared with every other Repository they select.
    policies: Vec<Arc<PolicyGrants>>,
}

/// What one policy grants one AWS principal on a Repository it selects: the makings of a
/// statement of the ECR repository policy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AwsGrant {
    /// The AccessPolicy's namespace and name.
    pub namespace: String,
    pub policy: String,
    /// A 12-digit account id or an IAM ARN, as the subject wrote it.
    pub principal: String,
    /// In `Action`'s order (pull, push, delete), never empty.
    pub actions: Vec<Action>,
}

/// Per-policy facts for its status. An index covers one Registry: with several, add up the
/// counts, and a name is missing only if no index matched it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySummary {
    /// Repositories the policy selects in this registry (`status.repositoryCount`).
    pub repository_count: usize,
    /// `repositories.names` that match no Repository of the policy's namespace owning its path in
    /// this registry (a typo, a Repository not created yet, or one that lost its path).
    pub unmatched_names: BTreeSet<String>,
    /// `metadata.name`s of the Repositories it selects in this registry (all in the policy's
    /// namespace): an ECR pull secret's token may pull from these alone.
    pub repositories: BTreeSet<String>,
}

/// Everything [`authorize`] needs about one Registry, precomputed.
#[derive(Debug, Default)]
pub struct AccessIndex {
    repositories: HashMap<String, RepoEntry>,
    policies: BTreeMap<(String, String), PolicySummary>,
    warnings: Vec<PolicyWarning>,
}

impl AccessIndex {
    /// Builds the index of one Registry from the Repositories that own their path in it and the
    /// cluster's AccessPolicies (policies of namespaces without such Repositories select nothing).
    ///
    /// Should two inputs share a path anyway, the one with the smallest (namespace, name) keeps it,
    /// so the result does not depend on input order; the other gets no entry and no grants.
    pub fn build<'a>(
        repositories: impl IntoIterator<Item = RepoInput>,
        policies: impl IntoIterator<Item = &'a AccessPolicy>,
    ) -> AccessIndex {
        let mut by_path: HashMap<String, RepoInput> = HashMap::new();
        for repo in repositories {
            match by_path.get(&repo.path) {
                Some(kept) if (&kept.namespace, &kept.name) <= (&repo.namespace, &repo.name) => {}
                _ => {
                    by_path.insert(repo.path.clone(), repo);
                }
            }
        }
        let mut by_namespace: HashMap<&str, Vec<&RepoInput>> = HashMap::new();
        for repo in by_path.values() {
            by_namespace.entry(repo.namespace.as_str()).or_default().push(repo);
        }

        let mut selected: HashMap<&str, Vec<Arc<PolicyGrants>>> = HashMap::new();
        let mut summaries = BTreeMap::new();
        let mut warnings = Vec::new();
        for policy in policies {
            let namespace = policy.namespace().unwrap_or_default();
            let name = policy.name_any();
            let mut warn = |message: String| {
                warnings.push(PolicyWarning { namespace: namespace.clone(), name: name.clone(), message })
            };
            let candidates = by_namespace.get(namespace.as_str()).map(Vec::as_slice).unwrap_or_default();
            let (chosen, unmatched_names) = select(policy, candidates, &mut warn);
            let grants = Arc::new(flatten(&namespace, &name, &policy.spec.grants, &mut warn));
            let summary = PolicySummary {
                repository_count: chosen.len(),
                unmatched_names,
                repositories: chosen.iter().map(|r| r.name.clone()).collect(),
            };
            summaries.insert((namespace.clone(), name.clone()), summary);
            for repo in chosen {
                selected.entry(repo.path.as_str()).or_default().push(grants.clone());
            }
        }

        let repositories = by_path
            .iter()
            .map(|(path, repo)| {
                let entry = RepoEntry {
                    public: repo.visibility == Visibility::Public,
                    policies: selected.remove(path.as_str()).unwrap_or_default(),
                };
                (path.clone(), entry)
            })
            .collect();
        AccessIndex { repositories, policies: summaries, warnings }
    }

    /// Problems in the policies themselves, in input order. They do not depend on the registry:
    /// every index reports the same ones.
    pub fn warnings(&self) -> &[PolicyWarning] {
        &self.warnings
    }

    /// The summary of one policy, if it was part of the build.
    pub fn policy(&self, namespace: &str, name: &str) -> Option<&PolicySummary> {
        self.policies.get(&(namespace.to_string(), name.to_string()))
    }

    /// The AWS principals the policies selecting `path` grant, by (namespace, policy,
    /// principal); empty for a path no Repository owns.
    pub fn aws_grants(&self, path: &str) -> Vec<AwsGrant> {
        let Some(entry) = self.repositories.get(path) else { return Vec::new() };
        let mut merged: BTreeMap<(&str, &str, &str), Actions> = BTreeMap::new();
        for p in &entry.policies {
            for (principal, actions) in &p.aws {
                let key = (p.namespace.as_str(), p.name.as_str(), principal.as_str());
                let entry = merged.entry(key).or_default();
                *entry = entry.union(*actions);
            }
        }
        merged
            .into_iter()
            .map(|((namespace, policy, principal), actions)| AwsGrant {
                namespace: namespace.to_string(),
                policy: policy.to_string(),
                principal: principal.to_string(),
                actions: [Action::Pull, Action::Push, Action::Delete]
                    .into_iter()
                    .filter(|a| actions.contains(*a))
                    .collect(),
            })
            .filter(|g| !g.actions.is_empty())
            .collect()
    }

    /// Whether a Repository owns `path` in this registry.
    pub fn contains(&self, path: &str) -> bool {
        self.repositories.contains_key(path)
    }

    /// Repositories in the index.
    pub fn len(&self) -> usize {
        self.repositories.len()
    }

    pub fn is_empty(&self) -> bool {
        self.repositories.is_empty()
    }
}

/// The Repositories of the policy's namespace it selects by name or by label, and the names
/// that matched none.
fn select<'r>(
    policy: &AccessPolicy,
    candidates: &[&'r RepoInput],
    warn: &mut impl FnMut(String),
) -> (Vec<&'r RepoInput>, BTreeSet<String>) {
    let spec = &policy.spec.repositories;
    let names: BTreeSet<&str> = spec.names.iter().flatten().map(String::as_str).collect();
    let selector = match &spec.selector {
        None => None,
        Some(selector) => match parse_selector(selector) {
            Ok(s) => Some(s),
            Err(why) => {
                warn(format!("repositories.selector is invalid and selects nothing: {why}"));
                None
            }
        },
    };
    let mut chosen: Vec<&RepoInput> = candidates
        .iter()
        .copied()
        .filter(|r| names.contains(r.name.as_str()) || selector.as_ref().is_some_and(|s| s.matches(&r.labels)))
        .collect();
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    let unmatched =
        names.iter().filter(|n| !chosen.iter().any(|r| r.name.as_str() == **n)).map(|n| n.to_string()).collect();
    (chosen, unmatched)
}

/// kube's conversion, plus the two rules the API server applies to label selectors of built-in
/// objects but not to a CRD's: `In`/`NotIn` need values, `Exists`/`DoesNotExist` take none.
fn parse_selector(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> Result<Selector, String> {
    for requirement in selector.match_expressions.iter().flatten() {
        let has_values = requirement.values.as_ref().is_some_and(|v| !v.is_empty());
        match requirement.operator.as_str() {
            "In" | "NotIn" if !has_values => {
                return Err(format!("{} {} needs at least one value", requirement.key, requirement.operator));
            }
            "Exists" | "DoesNotExist" if has_values => {
                return Err(format!("{} {} takes no values", requirement.key, requirement.operator));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(format!(
                    "{}: operator {other:?} is not In, NotIn, Exists or DoesNotExist",
                    requirement.key
                ));
            }
        }
    }
    Selector::try_from(selector.clone()).map_err(|e| e.to_string())
}

/// A policy's grants as lookups per subject. Subjects the CRD's rules should have refused are
/// skipped (or, for Anonymous, cut down to pull) with a warning, never guessed at.
fn flatten(namespace: &str, name: &str, grants: &[Grant], warn: &mut impl FnMut(String)) -> PolicyGrants {
    let mut out = PolicyGrants { namespace: namespace.to_string(), name: name.to_string(), ..Default::default() };
    for (i, grant) in grants.iter().enumerate() {
        let actions: Actions = grant.actions.iter().copied().collect();
        for subject in &grant.subjects {
            let subject_name = subject.name.as_deref().filter(|n| !n.is_empty());
            match (subject.kind, subject_name, subject.namespace.as_deref()) {
                (SubjectKind::Anonymous, None, None) => {
                    if actions != actions.intersect(Actions::PULL) {
                        warn(format!("grants[{i}]: Anonymous may only be granted pull; push and delete are ignored"));
                    }
                    out.anonymous = out.anonymous.union(actions.intersect(Actions::PULL));
                }
                (SubjectKind::ServiceAccount, Some(sa), ns) => {
                    let ns = ns.filter(|n| !n.is_empty()).unwrap_or(namespace);
                    let entry =
                        out.service_accounts.entry(ns.to_string()).or_default().entry(sa.to_string()).or_default();
                    *entry = entry.union(actions);
                }
                (SubjectKind::Namespace, Some(ns), None) => {
                    let entry = out.namespaces.entry(ns.to_string()).or_default();
                    *entry = entry.union(actions);
                }
                (SubjectKind::Robot, Some(robot), None) if super::robot::valid_name(robot) => {
                    let entry = out.robots.entry(robot.to_string()).or_default();
                    *entry = entry.union(actions);
                }
                (SubjectKind::Robot, Some(robot), None) => warn(format!(
                    "grants[{i}]: robot name {robot:?} must be a lower-case DNS subdomain name; subject ignored"
                )),
                (SubjectKind::AwsPrincipal, Some(aws), None) if valid_aws_principal(aws) => {
                    let entry = out.aws.entry(aws.to_string()).or_default();
                    *entry = entry.union(actions);
                }
                (SubjectKind::AwsPrincipal, Some(aws), None) => warn(format!(
                    "grants[{i}]: AWSPrincipal {aws:?} is not a 12-digit account id or an IAM ARN (arn:aws:iam::<account>:root, role/<name> or user/<name>); subject ignored"
                )),
                (kind, _, _) => warn(format!(
                    "grants[{i}]: a {kind:?} subject with name {:?} and namespace {:?} is malformed; subject ignored",
                    subject.name, subject.namespace
                )),
            }
        }
    }
    out
}

/// Whether `name` is an AWS principal an `AWSPrincipal` subject may name, as the CRD documents
/// it: `^([0-9]{12}|arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:(root|role/[A-Za-z0-9+=,.@_/-]+|user/[A-Za-z0-9+=,.@_/-]+))$`.
/// The admission rule checks only that there is a name, so this is the check.
pub fn valid_aws_principal(name: &str) -> bool {
    let account = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit());
    if account(name) {
        return true;
    }
    let Some(rest) =
        ["arn:aws:iam::", "arn:aws-cn:iam::", "arn:aws-us-gov:iam::"].iter().find_map(|p| name.strip_prefix(p))
    else {
        return false;
    };
    let Some((id, resource)) = rest.split_once(':') else { return false };
    let path = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_/-".contains(&b));
    account(id)
        && (resource == "root"
            || resource.strip_prefix("role/").is_some_and(path)
            || resource.strip_prefix("user/").is_some_and(path))
}

/// What `principal` gets of `requested`: for each scope, the requested actions it is allowed,
/// leaving out scopes with none (as distribution's token servers do).
pub fn authorize(index: &AccessIndex, principal: &Principal, requested: &[Scope]) -> Vec<Access> {
    let mut granted = Vec::new();
    for scope in requested {
        match &scope.resource {
            Resource::Catalog => {
                if *principal == Principal::Berth {
                    granted.push(Access::catalog());
                }
            }
            Resource::Repository(path) => {
                let allowed = match principal {
                    Principal::Berth if valid_repository_path(path) => Actions::ALL,
                    Principal::Berth => Actions::default(),
                    _ => index.repositories.get(path).map(|entry| allowed(entry, principal)).unwrap_or_default(),
                };
                let actions: BTreeSet<Action> =
                    scope.actions.iter().copied().filter(|a| allowed.contains(*a)).collect();
                if !actions.is_empty() {
                    granted.push(Access::repository(path, &actions));
                }
            }
        }
    }
    granted
}

fn allowed(entry: &RepoEntry, principal: &Principal) -> Actions {
    let mut allowed = if entry.public { Actions::PULL } else { Actions::default() };
    for policy in &entry.policies {
        allowed = allowed.union(policy.for_principal(principal));
    }
    match principal {
        // Pull secrets and anonymous callers pull; whatever a policy says.
        Principal::PullSecret { .. } | Principal::Anonymous => allowed.intersect(Actions::PULL),
        _ => allowed,
    }
}

#[cfg(test)]
mod tests;
