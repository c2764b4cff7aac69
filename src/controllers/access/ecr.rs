//! AccessPolicies on `ecr` Registries. ECR authorizes by IAM, not by berth's token service:
//! pull secrets carry ECR authorization tokens fetched under the Registry's pull-only role
//! (`ecr.pullSecretRoleArn`, with a session policy naming the policy's repositories) and
//! refreshed at two thirds of their life, and what ECR cannot be told (push or delete by a
//! ServiceAccount) is said in the policy's Ready message.

use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;

use super::*;
use crate::api::{AccessPolicySpec, Action as Verb};

/// How long berth takes an ECR token to live when ECR does not say, or says a time already
/// past (moto always says 2015): ECR's documented 12 hours.
pub const ECR_ASSUMED_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// ECR credentials are fetched again no sooner than this after the last fetch, whatever ECR
/// says of their life: a short or odd answer must not make berth call ECR in a loop.
pub const ECR_MIN_REFRESH: Duration = Duration::from_secs(600);

/// The expiry berth records for a token fetched at `now` (unix seconds) that ECR says expires
/// at `expires_at`; `true` when that is an assumption because ECR's answer was missing or past.
pub fn ecr_expiry(expires_at: Option<i64>, now: i64) -> (i64, bool) {
    match expires_at {
        Some(e) if e > now => (e, false),
        _ => (now.saturating_add(secs(ECR_ASSUMED_LIFETIME)), true),
    }
}

/// When ECR credentials fetched at `fetched` that expire at `expires` are fetched again: after
/// two thirds of their life, and no sooner than [`ECR_MIN_REFRESH`] after fetching.
pub fn ecr_refresh_at(fetched: i64, expires: i64) -> i64 {
    let life = i128::from(expires.saturating_sub(fetched).max(0));
    let two_thirds = i64::try_from(life * 2 / 3).unwrap_or(i64::MAX);
    fetched.saturating_add(two_thirds.max(secs(ECR_MIN_REFRESH)))
}

/// Whether a pull secret's ECR credentials must be fetched (again) for the sources summed up
/// as `scope` ([`ecr_scope`]; `None`: no ecr Registry): none yet, for other registries, roles
/// or repositories than now, or two thirds of their life gone.
pub fn needs_ecr_refresh(recorded: Option<&Recorded>, scope: Option<&str>, now: i64) -> bool {
    let Some(scope) = scope else { return false };
    let Some(r) = recorded else { return true };
    match (r.ecr_fetched_at, r.ecr_expires_at) {
        (Some(fetched), Some(expires)) => {
            r.ecr_scope.as_deref() != Some(scope) || now >= ecr_refresh_at(fetched, expires)
        }
        _ => true,
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The hosts an ECR Registry's pull secret entries are for: its url's and aliases, and the
/// `proxyEndpoint` ECR answered with when it is another.
pub fn ecr_hosts(spec: &RegistrySpec, proxy_endpoint: &str) -> BTreeSet<String> {
    let mut hosts: BTreeSet<String> = crate::hosts::of_registry(spec).into_iter().collect();
    hosts.extend(crate::hosts::url_host(proxy_endpoint));
    hosts
}

/// One ecr Registry a policy's pull secrets carry a token for: the role berth assumes for it
/// and the repositories the token may pull from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EcrSource {
    pub registry: String,
    /// Its url's host and aliases.
    pub hosts: BTreeSet<String>,
    pub role_arn: String,
    /// Sorted, never empty.
    pub repository_arns: Vec<String>,
}

/// The Repositories a policy selects in one ecr Registry: (name, ARN from its status, if the
/// Repository controller has created or adopted the ECR repository yet).
pub struct EcrSelection<'a> {
    pub registry: String,
    pub spec: &'a RegistrySpec,
    pub repositories: Vec<(String, Option<String>)>,
}

/// What a policy's pull secrets can carry for its ecr Registries, and what they cannot and why:
/// a registry without `ecr.pullSecretRoleArn` gets no token (one from berth's own credentials
/// could push and delete as berth), and a repository not in ECR yet is not in the token's scope.
pub fn ecr_sources(selections: &[EcrSelection<'_>]) -> (Vec<EcrSource>, Vec<NotReady>) {
    let mut sources = Vec::new();
    let (mut roleless, mut pending) = (Vec::new(), Vec::new());
    for s in selections {
        let Some(role) = s.spec.ecr.as_ref().and_then(|e| e.pull_secret_role_arn.clone()) else {
            roleless.push(s.registry.clone());
            continue;
        };
        pending.extend(s.repositories.iter().filter(|(_, arn)| arn.is_none()).map(|(name, _)| name.clone()));
        let mut arns: Vec<String> = s.repositories.iter().filter_map(|(_, arn)| arn.clone()).collect();
        arns.sort();
        arns.dedup();
        if !arns.is_empty() {
            sources.push(EcrSource {
                registry: s.registry.clone(),
                hosts: crate::hosts::of_registry(s.spec).into_iter().collect(),
                role_arn: role,
                repository_arns: arns,
            });
        }
    }
    let mut problems = Vec::new();
    if !roleless.is_empty() {
        problems.push(NotReady {
            reason: "NoPullSecretRole",
            message: format!(
                "ecr Registry {} has no ecr.pullSecretRoleArn, so the pull secrets carry no ECR token for it: a token from berth's own credentials could push and delete as berth",
                roleless.join(", ")
            ),
        });
    }
    if !pending.is_empty() {
        pending.sort();
        problems.push(NotReady {
            reason: "RepositoriesNotReady",
            message: format!(
                "Repository {} is not in ECR yet (no status.ecr.arn): the pull secrets' ECR token cannot pull from it until it is",
                pending.join(", ")
            ),
        });
    }
    (sources, problems)
}

/// A short digest of the sources an ECR token is fetched for, recorded on the pull secret: when
/// it changes (another registry, role or repository), the token is fetched again.
pub fn ecr_scope(sources: &[EcrSource]) -> Option<String> {
    if sources.is_empty() {
        return None;
    }
    let mut hasher = Sha256::new();
    for s in sources {
        let hosts: Vec<&str> = s.hosts.iter().map(String::as_str).collect();
        let line = json!([s.registry, hosts, s.role_arn, s.repository_arns]).to_string();
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    Some(hasher.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect())
}

/// ECR credentials fetched for one reconcile: host -> (user, password), when they were fetched
/// and the earliest expiry among them (as [`ecr_expiry`] records it).
pub(super) struct EcrFetched {
    pub auths: BTreeMap<String, (String, String)>,
    pub fetched_at: i64,
    pub expires_at: i64,
}

/// The ECR tokens of one policy's pull secrets, fetched at most once per reconcile and only
/// when a pull secret needs them.
pub(super) struct EcrCredentials {
    sources: Vec<(Arc<Registry>, EcrSource)>,
    /// [`ecr_scope`] of the sources, known before any token is fetched.
    pub scope: Option<String>,
    fetched: Option<Result<EcrFetched, NotReady>>,
}

/// Registries whose token expiry berth had to assume, so the warning is logged once.
static ASSUMED_EXPIRY: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

impl EcrCredentials {
    /// The sources of a policy of `ns` that selects `selected` (Registry, Repository names) in
    /// ecr Registries, and what keeps the others out (see [`ecr_sources`]).
    pub fn new(
        ctx: &Context,
        ns: &str,
        selected: &[(Arc<Registry>, BTreeSet<String>)],
    ) -> (EcrCredentials, Vec<NotReady>) {
        let selections: Vec<EcrSelection<'_>> = selected
            .iter()
            .map(|(registry, repositories)| EcrSelection {
                registry: registry.name_any(),
                spec: &registry.spec,
                repositories: repositories
                    .iter()
                    .map(|r| {
                        let found = ctx.repositories.get(&ObjectRef::new(r).within(ns));
                        (r.clone(), found.and_then(|f| f.status.as_ref()?.ecr.as_ref()?.arn.clone()))
                    })
                    .collect(),
            })
            .collect();
        let (sources, problems) = ecr_sources(&selections);
        let scope = ecr_scope(&sources);
        let sources = sources
            .into_iter()
            .filter_map(|s| {
                let registry = selected.iter().find(|(r, _)| r.name_any() == s.registry)?.0.clone();
                Some((registry, s))
            })
            .collect();
        (EcrCredentials { sources, scope, fetched: None }, problems)
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The credentials, fetched on first use; an error is kept for the rest of the reconcile.
    pub async fn get(&mut self, ctx: &Context) -> Result<&EcrFetched, NotReady> {
        let fetched = match self.fetched.take() {
            Some(f) => f,
            None => fetch(ctx, &self.sources).await,
        };
        self.fetched.insert(fetched).as_ref().map_err(Clone::clone)
    }

    /// Whether a fetch was tried in this reconcile and failed.
    pub fn failed(&self) -> bool {
        matches!(self.fetched, Some(Err(_)))
    }

    /// Whether a fetch was tried in this reconcile and succeeded.
    pub fn fetched(&self) -> bool {
        matches!(self.fetched, Some(Ok(_)))
    }
}

async fn fetch(ctx: &Context, sources: &[(Arc<Registry>, EcrSource)]) -> Result<EcrFetched, NotReady> {
    let fetched_at = now_unix();
    let mut out = EcrFetched { auths: BTreeMap::new(), fetched_at, expires_at: i64::MAX };
    for (registry, source) in sources {
        let name = &source.registry;
        let failed = |reason: &'static str, e: &dyn std::fmt::Display| NotReady {
            reason,
            message: format!("ecr Registry {name}: getting a pull-only registry token for the pull secrets: {e}"),
        };
        let backend = ctx.backend(registry).await.map_err(|e| failed(e.reason(), &e))?;
        let Some(ecr) = backend.ecr() else {
            return Err(failed("UnsupportedRegistryType", &"the backend is not ECR"));
        };
        // Never logged nor put in a status: only written into the pull secrets.
        let token =
            ecr.pull_token(&source.role_arn, &source.repository_arns).await.map_err(|e| failed(e.reason(), &e))?;
        let (expires_at, assumed) = ecr_expiry(token.expires_at, fetched_at);
        if assumed && ASSUMED_EXPIRY.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone()) {
            tracing::warn!(
                registry = %name,
                expires_at = ?token.expires_at,
                "ECR did not say when its authorization token expires, or said a time already past; berth takes it to live 12h"
            );
        }
        out.expires_at = out.expires_at.min(expires_at);
        for host in ecr_hosts(&registry.spec, &token.proxy_endpoint) {
            out.auths.entry(host).or_insert_with(|| (token.username.clone(), token.password.clone()));
        }
    }
    Ok(out)
}

/// Notes for the Ready message of a policy whose grants cannot all take effect where its
/// Repositories are: on ECR (`on_ecr`), IAM decides, so berth can honour only pulls through
/// the policy's pull secrets and AWSPrincipal grants; on token registries (`on_token`),
/// AWSPrincipal subjects mean nothing. The policy stays Ready for what does take effect.
pub fn ecr_notes(spec: &AccessPolicySpec, on_ecr: bool, on_token: bool) -> Vec<String> {
    let mut notes = Vec::new();
    let not_aws = |g: &crate::api::Grant| g.subjects.iter().any(|s| s.kind != SubjectKind::AwsPrincipal);
    let indices = |f: &dyn Fn(&crate::api::Grant) -> bool| -> Vec<String> {
        spec.grants.iter().enumerate().filter(|(_, g)| f(g)).map(|(i, _)| format!("grants[{i}]")).collect()
    };
    if on_ecr {
        let writes = indices(&|g| not_aws(g) && g.actions.iter().any(|a| matches!(a, Verb::Push | Verb::Delete)));
        if !writes.is_empty() {
            notes.push(format!(
                "on ECR, push and delete need an AWSPrincipal subject (an IRSA or Pod Identity role): {} grant them to other subjects, which ECR does not know",
                writes.join(", ")
            ));
        }
        if spec.pull_secrets.is_none() {
            let pulls = indices(&|g| not_aws(g) && g.actions.contains(&Verb::Pull));
            if !pulls.is_empty() {
                notes.push(format!(
                    "on ECR, subjects other than AWSPrincipal pull only with the policy's pullSecrets, which it does not set: {} grant pull to such subjects",
                    pulls.join(", ")
                ));
            }
        }
    }
    if on_token && !on_ecr && spec.grants.iter().flat_map(|g| &g.subjects).any(|s| s.kind == SubjectKind::AwsPrincipal)
    {
        notes.push(
            "AWSPrincipal subjects take effect on ecr Registries only, and the policy selects no Repository in one"
                .into(),
        );
    }
    notes
}
