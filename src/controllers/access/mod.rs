//! AccessPolicies: the access index the token service decides with, the stored credential hashes
//! it checks passwords against, and each policy's robot and pull-secret credentials and status.
//!
//! - `run_indexes` rebuilds the `AccessIndex` of every token or `ecr` Registry from the
//!   Repositories that own their path and the AccessPolicies, whenever something asks (a policy or Repository changed,
//!   a Registry was reconciled) and every few seconds as a safety net.
//! - `run_credentials` keeps the username -> hashes map from a metadata-only watch of berth's
//!   credential Secrets: the token service never holds a password.
//! - `reconcile` writes robot Secrets, pull secrets (rotated at two thirds of their lifetime,
//!   removed with their policy; for `ecr` Registries, with ECR's authorization token, refreshed
//!   at two thirds of its life) and the policy's status.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::{
    ByteString,
    api::core::v1::{Secret, ServiceAccount},
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        controller::Action,
        reflector::{self, Store},
        watcher,
    },
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{Context, Error, NotReady, apis, claim_of, stopped};
use crate::{
    api::{AccessPolicy, AccessPolicyStatus, Registry, RegistrySpec, RegistryType, SubjectKind},
    auth::{AccessIndex, RepoInput, StoredCredential, keys::now_unix, robot},
    conditions, duration,
    metrics::{ControllerLabels, ErrorLabels},
    repository::tenancy,
};

pub const CONTROLLER: &str = "accesspolicy";
/// Marks berth's credential Secrets: `robot` or `pull`. Only these are watched (metadata only).
pub const CREDENTIAL_LABEL: &str = "berth.dev/credential";
/// The username a credential Secret's hashes belong to.
pub const USERNAME_ANNOTATION: &str = "berth.dev/username";
/// JSON list of `{"hash", "expiresAtUnix"}`: salted hashes, never a password.
pub const HASHES_ANNOTATION: &str = "berth.dev/credential-hashes";
/// Unix seconds when the current password was made.
pub const ISSUED_ANNOTATION: &str = "berth.dev/issued-at";
/// `namespace/name` of the AccessPolicy a pull secret belongs to.
pub const OWNER_ANNOTATION: &str = "berth.dev/owner";
/// The policy's `berth.dev/rotate` value the current password was made for.
pub const ROTATED_FOR_ANNOTATION: &str = "berth.dev/rotated-for";
/// The hosts of berth's token registries the Secret's docker config names with berth's own
/// pull credential.
pub const HOSTS_ANNOTATION: &str = "berth.dev/hosts";
/// Unix seconds when the ECR credentials in a pull secret expire, as ECR said (or 12 hours after
/// they were fetched, when ECR did not say or said a time already past).
pub const ECR_EXPIRES_ANNOTATION: &str = "berth.dev/ecr-expires-at";
/// Unix seconds when the ECR credentials in a pull secret were fetched.
pub const ECR_FETCHED_ANNOTATION: &str = "berth.dev/ecr-fetched-at";
/// A digest of the ecr Registries, pull roles and repositories the ECR credentials in a pull
/// secret were fetched for: when they change, the credentials are fetched again.
pub const ECR_SCOPE_ANNOTATION: &str = "berth.dev/ecr-scope";
/// Finds a policy's pull secrets in every namespace (a hash: names can be longer than a label).
pub const PULL_OF_LABEL: &str = "berth.dev/pull-secret-of";
/// On an AccessPolicy: change the value to rotate its pull secrets now; the previous passwords
/// keep working until they expire, so running kubelets are not cut off.
pub const ROTATE_ANNOTATION: &str = "berth.dev/rotate";
/// On an AccessPolicy: change the value to replace its pull secrets' passwords and stop every
/// previous one at once (a leak).
pub const REVOKE_ANNOTATION: &str = "berth.dev/revoke";
/// The policy's `berth.dev/revoke` value the current password was made for.
pub const REVOKED_FOR_ANNOTATION: &str = "berth.dev/revoked-for";
pub const FINALIZER: &str = "berth.dev/pull-secrets";
/// On a Namespace: which namespaces' AccessPolicies may write pull secrets into it (and attach
/// them to its ServiceAccounts), comma-separated, or `*`. A policy always may in its own.
pub const ACCEPT_ANNOTATION: &str = "berth.dev/accept-pull-secrets-from";
pub const DEFAULT_PULL_SECRET: &str = "berth-pull";
pub const DEFAULT_PULL_LIFETIME: Duration = Duration::from_secs(12 * 3600);
pub const MIN_PULL_LIFETIME: Duration = Duration::from_secs(600);

mod credentials;
mod ecr;
mod index;
mod pull_secrets;

pub use credentials::*;
pub use ecr::*;
pub use index::*;
pub use pull_secrets::*;

/// The short label value naming a policy.
pub fn policy_label(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

fn secret_api(ctx: &Context, ns: &str) -> Api<Secret> {
    Api::namespaced(ctx.client.clone(), ns)
}

/// What the access indexes say about one policy.
#[derive(Default)]
struct Summary {
    /// Every host (the url's and the aliases) of the token registries in which the policy
    /// selects Repositories, since the kubelet looks a pull secret up by the name the image uses:
    /// where berth's own pull credential goes.
    token_hosts: BTreeSet<String>,
    /// The `ecr` Registries in which it selects Repositories, with those Repositories' names.
    ecr: Vec<(Arc<Registry>, BTreeSet<String>)>,
    /// Repositories it selects, summed over the registries.
    count: usize,
    /// `repositories.names` that matched nothing anywhere.
    unmatched: BTreeSet<String>,
    warnings: Vec<String>,
}

fn summarize(ctx: &Context, ns: &str, name: &str) -> Summary {
    let mut out = Summary::default();
    let mut unmatched: Option<BTreeSet<String>> = None;
    for registry in ctx.registries.state().iter().filter(|r| indexed(&r.spec)) {
        let Some(index) = ctx.tokens.index(&registry.name_any()) else { continue };
        if let Some(summary) = index.policy(ns, name) {
            out.count += summary.repository_count;
            if summary.repository_count > 0 {
                if registry.spec.token_auth.is_some() {
                    out.token_hosts.extend(crate::hosts::of_registry(&registry.spec));
                } else {
                    out.ecr.push((registry.clone(), summary.repositories.clone()));
                }
            }
            unmatched = Some(match unmatched {
                None => summary.unmatched_names.clone(),
                Some(u) => u.intersection(&summary.unmatched_names).cloned().collect(),
            });
        }
        if out.warnings.is_empty() {
            out.warnings = index
                .warnings()
                .iter()
                .filter(|w| w.namespace == ns && w.name == name)
                .map(|w| w.message.clone())
                .collect();
        }
    }
    out.unmatched = unmatched.unwrap_or_default();
    out
}

/// Robot Secrets `berth-robot-<name>` in the policy's namespace: made once (delete one to get
/// a new password), never overwriting a Secret that is not berth's.
async fn ensure_robots(policy: &AccessPolicy, ctx: &Context, hosts: &BTreeSet<String>) -> Result<(), NotReady> {
    let ns = policy.namespace().unwrap_or_default();
    let robots: BTreeSet<&str> = policy
        .spec
        .grants
        .iter()
        .flat_map(|g| &g.subjects)
        .filter(|s| s.kind == SubjectKind::Robot)
        .filter_map(|s| s.name.as_deref())
        .collect();
    let api = secret_api(ctx, &ns);
    for robot_name in robots {
        let secret_name = format!("berth-robot-{robot_name}");
        let existing = api.get_opt(&secret_name).await.map_err(kube_not_ready)?;
        if let Some(s) = existing {
            if s.labels().get(CREDENTIAL_LABEL).map(String::as_str) != Some("robot") {
                return Err(NotReady {
                    reason: "SecretConflict",
                    message: format!("Secret {ns}/{secret_name} exists and is not berth's robot Secret"),
                });
            }
            continue;
        }
        let username = robot::robot_username(&ns, robot_name);
        let (password, records) = robot::rotate(&[], None, now_unix());
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {
                "name": secret_name,
                "labels": {CREDENTIAL_LABEL: "robot"},
                "annotations": {
                    USERNAME_ANNOTATION: username,
                    HASHES_ANNOTATION: serde_json::to_string(&records).unwrap_or_default(),
                    ISSUED_ANNOTATION: now_unix().to_string(),
                },
            },
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {
                "username": username,
                "password": password,
                ".dockerconfigjson": docker_config(&same_for_all(hosts, &username, &password)),
            },
        }))
        .map_err(|e| NotReady { reason: "InternalError", message: e.to_string() })?;
        api.create(&PostParams::default(), &secret).await.map_err(kube_not_ready)?;
        tracing::info!(namespace = %ns, robot = robot_name, "robot credentials created");
    }
    Ok(())
}

fn kube_not_ready(e: kube::Error) -> NotReady {
    NotReady { reason: "KubernetesAPIError", message: e.to_string() }
}

/// Asks the Repository controller to reconcile the namespace's Repositories on `ecr`
/// Registries (whose repository policies carry AccessPolicies' AWS principals).
fn reconcile_ecr_repositories(ctx: &Context, ns: &str) {
    let ecr: BTreeSet<String> = ctx
        .registries
        .state()
        .iter()
        .filter(|r| r.spec.type_ == crate::api::RegistryType::Ecr)
        .map(|r| r.name_any())
        .collect();
    for repo in ctx.repositories.state() {
        if repo.namespace().as_deref() == Some(ns) && ecr.contains(&repo.spec.registry_ref.name) {
            let _ = ctx.triggers.repositories.try_send(kube::runtime::reflector::ObjectRef::from_obj(repo.as_ref()));
        }
    }
}

pub async fn reconcile(policy: Arc<AccessPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.leader.is_leader() {
        // A follower keeps its caches warm; the leader reconciles (all at once when it takes over).
        return Ok(Action::await_change());
    }
    let started = std::time::Instant::now();
    let labels = ControllerLabels { controller: CONTROLLER };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let has_finalizer = policy.finalizers().iter().any(|f| f == FINALIZER);

    if policy.metadata.deletion_timestamp.is_some() {
        if has_finalizer {
            remove_pull_secrets(&policy, &ctx, &BTreeSet::new()).await?;
            super::set_finalizer(&ctx.client, policy.as_ref(), FINALIZER, false).await?;
        }
        let begun = ctx.index_rebuilds.begun();
        ctx.tokens.rebuild.notify_one();
        // Its statements leave the ECR repository policies once the index no longer has it.
        if tokio::time::timeout(Duration::from_secs(10), ctx.index_rebuilds.wait_past(begun)).await.is_ok() {
            reconcile_ecr_repositories(&ctx, &ns);
        }
        return Ok(Action::await_change());
    }
    if policy.spec.pull_secrets.is_some() && !has_finalizer {
        // Pull secrets live in other namespaces: only a finalizer can clean them up.
        super::set_finalizer(&ctx.client, policy.as_ref(), FINALIZER, true).await?;
        return Ok(Action::await_change());
    }
    // Decide only on complete information: after a start, the stores fill and the indexes are
    // built before any status or pull secret is written.
    let _ = ctx.repositories.wait_until_ready().await;
    let _ = ctx.registries.wait_until_ready().await;
    let unindexed =
        ctx.registries.state().iter().any(|r| indexed(&r.spec) && ctx.tokens.index(&r.name_any()).is_none());
    // The index must already include this generation of the policy: wait for a rebuild that
    // began after this reconcile did (bounded: the index loop may be stopping).
    let begun = ctx.index_rebuilds.begun();
    ctx.tokens.rebuild.notify_one();
    if tokio::time::timeout(Duration::from_secs(10), ctx.index_rebuilds.wait_past(begun)).await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if unindexed {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // The Repository controller writes ECR repository policies (one writer per repository):
    // the namespace's ECR Repositories reconcile now, with the index that has this policy.
    reconcile_ecr_repositories(&ctx, &ns);

    let Summary { token_hosts: hosts, ecr, count, unmatched, warnings } = summarize(&ctx, &ns, &name);
    let notes = ecr_notes(&policy.spec, !ecr.is_empty(), !hosts.is_empty());
    // ECR tokens for the pull secrets, fetched at most once in this reconcile.
    let (mut ecr, ecr_problems) = EcrCredentials::new(&ctx, &ns, &ecr);
    let mut problem: Option<NotReady> = None;
    let mut requeue = Duration::from_secs(300);
    if let Err(e) = ensure_robots(&policy, &ctx, &hosts).await {
        problem = Some(e);
    }
    let mut written = Vec::new();
    let mut missing_accounts = false;
    match &policy.spec.pull_secrets {
        Some(p) => {
            let lifetime = duration::parse_or(p.lifetime.as_deref(), DEFAULT_PULL_LIFETIME);
            match lifetime {
                Ok(l) if l >= MIN_PULL_LIFETIME => {
                    let secret_name = p.secret_name.clone().unwrap_or_else(|| DEFAULT_PULL_SECRET.into());
                    let targets: BTreeSet<String> = if p.namespaces.is_empty() {
                        [ns.clone()].into()
                    } else {
                        p.namespaces.iter().cloned().collect()
                    };
                    let mut earliest = i64::MAX;
                    // Another namespace must have asked for them: a policy author cannot
                    // otherwise place Secrets (or take names) in namespaces they do not own.
                    let mut accepted = BTreeSet::new();
                    for target in &targets {
                        if let Some(message) = ctx.settings.namespaces.refusal(target, "a pull secret target") {
                            problem = problem.or(Some(NotReady { reason: crate::namespaces::NOT_MANAGED, message }));
                            continue;
                        }
                        if target == &ns {
                            accepted.insert(target.clone());
                            continue;
                        }
                        let namespace = Api::<k8s_openapi::api::core::v1::Namespace>::all(ctx.client.clone())
                            .get_opt(target)
                            .await?;
                        match namespace {
                            Some(n) if accepts_pull_secrets(n.annotations(), &ns) => {
                                accepted.insert(target.clone());
                            }
                            _ => {
                                problem = problem.or(Some(NotReady {
                                    reason: "NamespaceNotAccepting",
                                    message: format!(
                                        "namespace {target} does not accept pull secrets from {ns}: annotate it {ACCEPT_ANNOTATION}={ns}"
                                    ),
                                }))
                            }
                        }
                    }
                    let targets = accepted;
                    // What the pull secrets cannot carry for ecr Registries, they say.
                    problem = problem.or(ecr_problems.into_iter().next());
                    for target in &targets {
                        match ensure_pull_secret(&policy, &ctx, target, &secret_name, l, &hosts, &mut ecr).await {
                            Ok(next) => {
                                earliest = earliest.min(next);
                                written.push(target.clone());
                                for sa in &p.service_accounts {
                                    if !service_account_reference(&ctx, target, sa, &secret_name, true).await? {
                                        // Not created yet (a namespace's `default` comes a moment
                                        // after the namespace): look again soon.
                                        missing_accounts = true;
                                    }
                                }
                            }
                            Err(e) => problem = problem.or(Some(e)),
                        }
                    }
                    remove_pull_secrets(&policy, &ctx, &targets).await?;
                    let wait = earliest.saturating_sub(now_unix()).max(1);
                    requeue = requeue.min(Duration::from_secs(u64::try_from(wait).unwrap_or(1)));
                }
                Ok(_) => {
                    problem = problem.or(Some(NotReady {
                        reason: "InvalidSpec",
                        message: format!("pullSecrets.lifetime must be at least {}m", MIN_PULL_LIFETIME.as_secs() / 60),
                    }))
                }
                Err(e) => {
                    problem = problem
                        .or(Some(NotReady { reason: "InvalidSpec", message: format!("pullSecrets.lifetime: {e}") }))
                }
            }
        }
        None => {
            if has_finalizer {
                remove_pull_secrets(&policy, &ctx, &BTreeSet::new()).await?;
                super::set_finalizer(&ctx.client, policy.as_ref(), FINALIZER, false).await?;
            }
        }
    }

    let (ok, reason, message) = match (problem, warnings.first(), unmatched.is_empty(), count) {
        (Some(p), _, _, _) => (false, p.reason, p.message),
        (None, Some(w), _, _) => (false, "InvalidPolicy", w.clone()),
        (None, None, false, _) => (
            false,
            "RepositoriesNotFound",
            format!(
                "no Repository in a registry served by berth's token service or of type ecr is named {}",
                unmatched.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ),
        (None, None, true, 0) => (
            false,
            "NoRepositories",
            "the policy selects no Repository in a registry whose token service is berth or of type ecr".to_string(),
        ),
        (None, None, true, n) => {
            let mut message = format!("{n} repositories, {} grants", policy.spec.grants.len());
            for note in &notes {
                message.push_str("; ");
                message.push_str(note);
            }
            (true, "Applied", message)
        }
    };
    let previous = policy.status.clone().unwrap_or_default();
    written.sort();
    let status = AccessPolicyStatus {
        conditions: conditions::merge(
            &previous.conditions,
            conditions::ready(ok, reason, message, policy.metadata.generation),
        ),
        observed_generation: policy.metadata.generation,
        repository_count: Some(i32::try_from(count).unwrap_or(i32::MAX)),
        grant_count: Some(i32::try_from(policy.spec.grants.len()).unwrap_or(i32::MAX)),
        pull_secret_namespaces: written,
    };
    if status != previous {
        let patch = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "AccessPolicy", "status": status});
        Api::<AccessPolicy>::namespaced(ctx.client.clone(), &ns)
            .patch_status(&name, &PatchParams::apply("berth-status").force(), &Patch::Apply(patch))
            .await?;
    }
    if !ok {
        ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { controller: CONTROLLER, reason }).inc();
        requeue = requeue.min(Duration::from_secs(10));
    }
    if missing_accounts {
        requeue = requeue.min(Duration::from_secs(5));
    }
    // ECR may be throttling: back off per policy, whatever else asks for a quick retry.
    let ecr_key = format!("accesspolicy-ecr/{ns}/{name}");
    if ecr.failed() {
        requeue = requeue.max(ctx.failure_backoff(&ecr_key));
    } else if ecr.fetched() {
        ctx.clear_failures(&ecr_key);
    }
    ctx.metrics.reconcile_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    Ok(Action::requeue(requeue))
}

pub fn error_policy(policy: Arc<AccessPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(policy = %policy.name_any(), error = %error, "access policy reconcile failed");
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { controller: CONTROLLER, reason: error.reason() }).inc();
    Action::requeue(ctx.failure_backoff(&format!(
        "accesspolicy/{}/{}",
        policy.namespace().unwrap_or_default(),
        policy.name_any()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(h: &[&str]) -> BTreeSet<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn docker_config_names_every_host_with_basic_auth() {
        let config: serde_json::Value =
            serde_json::from_str(&docker_config(&same_for_all(&hosts(&["r:5000", "s"]), "pull$a+b", "pw"))).unwrap();
        assert_eq!(config["auths"]["r:5000"]["username"], "pull$a+b");
        let auth = config["auths"]["s"]["auth"].as_str().unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(auth).unwrap(), b"pull$a+b:pw");
    }

    #[test]
    fn docker_config_names_the_registry_under_its_url_host_and_every_alias() {
        let spec: crate::api::RegistrySpec = serde_json::from_value(json!({
            "url": "http://berth-registry.berth.svc:5000",
            "aliases": ["127.0.0.1:30500", "registry.example.com"],
        }))
        .unwrap();
        let names: BTreeSet<String> = crate::hosts::of_registry(&spec).into_iter().collect();
        let config: serde_json::Value =
            serde_json::from_str(&docker_config(&same_for_all(&names, "pull$a+b", "pw"))).unwrap();
        let keys: Vec<&String> = config["auths"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["127.0.0.1:30500", "berth-registry.berth.svc:5000", "registry.example.com"]);
        assert!(keys.iter().all(|k| config["auths"][k.as_str()] == config["auths"]["127.0.0.1:30500"]));
    }

    #[test]
    fn docker_configs_carry_each_hosts_own_credentials_and_read_back() {
        let auths = BTreeMap::from([
            ("r:5000".to_string(), ("pull$a+b".to_string(), "pw".to_string())),
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com".to_string(), ("AWS".to_string(), "ey:J=".to_string())),
        ]);
        let text = docker_config(&auths);
        let config: serde_json::Value = serde_json::from_str(&text).unwrap();
        let ecr = &config["auths"]["123456789012.dkr.ecr.eu-west-1.amazonaws.com"];
        assert_eq!((ecr["username"].as_str(), ecr["password"].as_str()), (Some("AWS"), Some("ey:J=")));
        let auth = base64::engine::general_purpose::STANDARD.decode(ecr["auth"].as_str().unwrap()).unwrap();
        assert_eq!(auth, b"AWS:ey:J=");
        assert_eq!(docker_config_auths(text.as_bytes()), auths);
        // Only `auth`, as other tools write them; what cannot be read is left out.
        let other = json!({"auths": {
            "a.example": {"auth": base64::engine::general_purpose::STANDARD.encode("u:p:q")},
            "b.example": {"auth": "!!"},
            "c.example": {"username": "u"},
        }});
        let read = docker_config_auths(other.to_string().as_bytes());
        assert_eq!(read, BTreeMap::from([("a.example".to_string(), ("u".to_string(), "p:q".to_string()))]));
        assert!(docker_config_auths(b"not json").is_empty());
        assert!(docker_config_auths(b"{}").is_empty());
    }

    fn ecr_recorded(fetched: i64, expires: i64, scope: &str) -> Recorded {
        Recorded {
            ecr_fetched_at: Some(fetched),
            ecr_expires_at: Some(expires),
            ecr_scope: Some(scope.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn ecr_tokens_are_taken_at_their_word_unless_missing_or_past() {
        let now = 1_700_000_000;
        assert_eq!(ecr_expiry(Some(now + 3600), now), (now + 3600, false));
        assert_eq!(ecr_expiry(None, now), (now + 12 * 3600, true));
        assert_eq!(ecr_expiry(Some(1_420_070_400), now), (now + 12 * 3600, true), "moto says 2015");
        assert_eq!(ecr_expiry(Some(now), now), (now + 12 * 3600, true), "expiring now is not a life");
    }

    #[test]
    fn ecr_credentials_are_refreshed_at_two_thirds_of_their_life_and_never_within_ten_minutes() {
        assert_eq!(ecr_refresh_at(1_000, 1_000 + 12 * 3600), 1_000 + 8 * 3600);
        assert_eq!(ecr_refresh_at(1_000, 1_060), 1_000 + 600, "a one-minute token: the floor");
        assert_eq!(ecr_refresh_at(1_000, 0), 1_000 + 600, "an expiry before the fetch: the floor");
        assert_eq!(ecr_refresh_at(0, i64::MAX), 6_148_914_691_236_517_204, "no overflow");
        let r = ecr_recorded(1_000, 1_000 + 12 * 3600, "s1");
        assert!(needs_ecr_refresh(None, Some("s1"), 1_000), "none yet");
        assert!(!needs_ecr_refresh(None, None, 1_000), "no ecr Registry: nothing to fetch");
        assert!(!needs_ecr_refresh(Some(&r), Some("s1"), 1_000 + 8 * 3600 - 1));
        assert!(needs_ecr_refresh(Some(&r), Some("s1"), 1_000 + 8 * 3600), "two thirds");
        assert!(needs_ecr_refresh(Some(&r), Some("s2"), 1_001), "other registries, roles or repositories");
        let unrecorded = Recorded { ecr_scope: Some("s1".into()), ..Default::default() };
        assert!(needs_ecr_refresh(Some(&unrecorded), Some("s1"), 1_001), "no times recorded");
    }

    #[test]
    fn berths_password_and_ecrs_credentials_each_keep_their_own_schedule() {
        let lifetime = Duration::from_secs(3 * 3600);
        let (t, e, none) = (hosts(&["r:5000"]), Some("s1"), BTreeSet::new());
        let records = vec![StoredCredential { hash: robot::hash_new("x"), expires_at_unix: Some(1_000 + 3 * 3600) }];
        let token = Recorded { records, issued_at: Some(1_000), hosts: t.clone(), ..Default::default() };
        let both = Recorded {
            records: token.records.clone(),
            issued_at: Some(1_000),
            hosts: t.clone(),
            ..ecr_recorded(1_000, 1_000 + 12 * 3600, "s1")
        };
        let plan = |r: Option<&Recorded>, token_hosts: &BTreeSet<String>, scope: Option<&str>, now| {
            let p = plan_pull_secret(r, lifetime, (None, None), token_hosts, scope, now);
            (p.new_password, p.fetch_ecr, p.write)
        };
        // Token registries only: exactly as before ECR.
        assert_eq!(plan(None, &t, None, 1_000), (true, false, true));
        assert_eq!(plan(Some(&token), &t, None, 1_001), (false, false, false));
        assert_eq!(plan(Some(&token), &t, None, 1_000 + 2 * 3600), (true, false, true));
        // ECR only: no password of berth's at all.
        assert_eq!(plan(None, &none, e, 1_000), (false, true, true));
        // Both: each on its own clock.
        assert_eq!(plan(None, &t, e, 1_000), (true, true, true));
        assert_eq!(plan(Some(&both), &t, e, 1_001), (false, false, false));
        assert_eq!(plan(Some(&both), &t, e, 1_000 + 2 * 3600), (true, false, true), "berth's at 2h");
        // berth's password renewed at 7h (due at 9h), ECR's due at 8h.
        let renewed = vec![StoredCredential { hash: robot::hash_new("y"), expires_at_unix: Some(1_000 + 10 * 3600) }];
        let later = Recorded { records: renewed, issued_at: Some(1_000 + 7 * 3600), ..both.clone() };
        let at = 1_000 + 8 * 3600;
        assert_eq!(plan(Some(&later), &t, e, at), (false, true, true), "ECR's at 8h, berth's not due");
        // Registries gone: the Secret is rewritten without their credentials.
        assert_eq!(plan(Some(&both), &none, e, 1_001), (false, false, true), "no token registry left");
        assert_eq!(plan(Some(&both), &t, None, 1_001), (false, false, true), "no ecr Registry left");
        assert_eq!(plan(Some(&token), &t, e, 1_001), (false, true, true), "an ecr Registry joins");
        assert_eq!(plan(Some(&both), &t, Some("s2"), 1_001), (false, true, true), "another repository joins");
    }

    #[test]
    fn the_next_pass_comes_at_the_earlier_due_time_and_ecrs_not_within_ten_minutes() {
        let lifetime = Duration::from_secs(3 * 3600);
        let token = Recorded { issued_at: Some(1_000), ..Default::default() };
        assert_eq!(next_due(&token, lifetime, (true, false), 1_001), 1_000 + 2 * 3600);
        let both = Recorded { issued_at: Some(1_000), ..ecr_recorded(1_000, 1_000 + 12 * 3600, "s") };
        assert_eq!(next_due(&both, lifetime, (true, true), 1_001), 1_000 + 2 * 3600);
        assert_eq!(next_due(&both, lifetime, (false, true), 1_001), 1_000 + 8 * 3600);
        let short = ecr_recorded(1_000, 1_030, "s");
        assert_eq!(next_due(&short, lifetime, (false, true), 1_000), 1_600);
        assert_eq!(next_due(&Recorded::default(), lifetime, (false, true), 5_000), 5_600, "nothing recorded");
        assert_eq!(next_due(&Recorded::default(), lifetime, (false, false), 5_000), i64::MAX);
    }

    proptest::proptest! {
        /// Whatever ECR says of a token's expiry, once it is fetched nothing asks for another
        /// within ten minutes, and one is asked for by the time two thirds of its life are gone.
        #[test]
        fn ecr_refreshes_never_loop_and_never_run_late(
            fetched in 0i64..2_000_000_000,
            said in proptest::option::of(-10_000_000i64..10_000_000),
            elapsed in 0i64..100_000,
        ) {
            let (expires, _) = ecr_expiry(said.map(|d| fetched + d), fetched);
            proptest::prop_assert!(expires > fetched);
            let r = ecr_recorded(fetched, expires, "s");
            let now = fetched + elapsed;
            let due = needs_ecr_refresh(Some(&r), Some("s"), now);
            if elapsed < 600 {
                proptest::prop_assert!(!due);
            }
            if elapsed >= ((expires - fetched) * 2 / 3).max(600) {
                proptest::prop_assert!(due);
            }
            if !due {
                proptest::prop_assert!(next_due(&r, Duration::from_secs(600), (false, true), now) >= now + 600);
            }
        }
    }

    fn spec_of(grants: serde_json::Value, pull_secrets: bool) -> crate::api::AccessPolicySpec {
        let mut spec = json!({"repositories": {"names": ["a"]}, "grants": grants});
        if pull_secrets {
            spec["pullSecrets"] = json!({});
        }
        serde_json::from_value(spec).unwrap()
    }

    #[test]
    fn on_ecr_push_and_delete_need_aws_principals_and_pulls_need_pull_secrets() {
        let sa = json!({"kind": "ServiceAccount", "name": "ci"});
        let role = json!({"kind": "AWSPrincipal", "name": "arn:aws:iam::123456789012:role/ci"});
        let mixed = json!([
            {"subjects": [role], "actions": ["pull", "push", "delete"]},
            {"subjects": [sa, role], "actions": ["pull", "push"]},
            {"subjects": [{"kind": "Namespace", "name": "ops"}], "actions": ["delete"]},
            {"subjects": [sa], "actions": ["pull"]},
        ]);
        let notes = ecr_notes(&spec_of(mixed.clone(), false), true, false);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].starts_with(
                "on ECR, push and delete need an AWSPrincipal subject (an IRSA or Pod Identity role): grants[1], grants[2] "
            ),
            "{}",
            notes[0]
        );
        assert!(notes[1].contains("pullSecrets") && notes[1].contains("grants[1], grants[3]"), "{}", notes[1]);
        // With pull secrets, pulls are taken care of.
        assert_eq!(ecr_notes(&spec_of(mixed.clone(), true), true, false).len(), 1);
        // Not on ECR: nothing to say about ECR.
        assert!(ecr_notes(&spec_of(mixed.clone(), false), false, true).iter().all(|n| !n.contains("on ECR")));
        // AWSPrincipal grants alone need no pull secret.
        assert!(
            ecr_notes(&spec_of(json!([{"subjects": [role], "actions": ["pull", "push"]}]), false), true, false)
                .is_empty()
        );
        // Pull by a ServiceAccount through the policy's pull secrets: nothing to say.
        assert!(ecr_notes(&spec_of(json!([{"subjects": [sa], "actions": ["pull"]}]), true), true, true).is_empty());
        // AWSPrincipal subjects where there is no ECR.
        let aws_only = ecr_notes(&spec_of(json!([{"subjects": [role], "actions": ["pull"]}]), false), false, true);
        assert_eq!(
            aws_only,
            ["AWSPrincipal subjects take effect on ecr Registries only, and the policy selects no Repository in one"]
        );
        assert!(
            ecr_notes(&spec_of(json!([{"subjects": [role], "actions": ["pull"]}]), false), false, false).is_empty()
        );
    }

    fn ecr_spec(role: Option<&str>) -> crate::api::RegistrySpec {
        let mut ecr = json!({"region": "eu-west-1"});
        if let Some(r) = role {
            ecr["pullSecretRoleArn"] = json!(r);
        }
        serde_json::from_value(json!({
            "url": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", "type": "ecr", "ecr": ecr,
            "aliases": ["ecr.example.com"],
        }))
        .unwrap()
    }

    const ROLE: &str = "arn:aws:iam::123456789012:role/berth-pull";

    fn arn(name: &str) -> String {
        format!("arn:aws:ecr:eu-west-1:123456789012:repository/team-a/{name}")
    }

    #[test]
    fn ecr_tokens_come_only_from_the_pull_role_and_only_for_repositories_in_ecr() {
        let (with_role, without) = (ecr_spec(Some(ROLE)), ecr_spec(None));
        let selection = |registry: &str, spec, repos: &[(&str, bool)]| EcrSelection {
            registry: registry.to_string(),
            spec,
            repositories: repos.iter().map(|(n, made)| (n.to_string(), made.then(|| arn(n)))).collect(),
        };
        let (sources, problems) = ecr_sources(&[
            selection("prod", &with_role, &[("web", true), ("api", true), ("new", false)]),
            selection("legacy", &without, &[("old", true)]),
            selection("empty", &with_role, &[("later", false)]),
        ]);
        assert_eq!(
            sources,
            vec![EcrSource {
                registry: "prod".into(),
                hosts: hosts(&["123456789012.dkr.ecr.eu-west-1.amazonaws.com", "ecr.example.com"]),
                role_arn: ROLE.into(),
                repository_arns: vec![arn("api"), arn("web")],
            }],
            "no role: no token; nothing in ECR yet: nothing to ask a token for"
        );
        let reasons: Vec<&str> = problems.iter().map(|p| p.reason).collect();
        assert_eq!(reasons, ["NoPullSecretRole", "RepositoriesNotReady"]);
        assert!(
            problems[0].message.starts_with("ecr Registry legacy has no ecr.pullSecretRoleArn"),
            "{}",
            problems[0].message
        );
        assert!(problems[0].message.contains("could push and delete"), "{}", problems[0].message);
        assert!(problems[1].message.starts_with("Repository later, new is not in ECR yet"), "{}", problems[1].message);
        let (none, fine) = ecr_sources(&[selection("prod", &with_role, &[("web", true)])]);
        assert_eq!((none.len(), fine), (1, vec![]));
    }

    #[test]
    fn the_ecr_scope_changes_with_any_registry_role_host_or_repository() {
        let source = EcrSource {
            registry: "prod".into(),
            hosts: hosts(&["h.example"]),
            role_arn: ROLE.into(),
            repository_arns: vec![arn("a")],
        };
        assert_eq!(ecr_scope(&[]), None);
        let scope = ecr_scope(std::slice::from_ref(&source)).unwrap();
        assert_eq!(scope.len(), 32);
        assert_eq!(ecr_scope(std::slice::from_ref(&source)), Some(scope.clone()), "stable");
        for changed in [
            EcrSource { registry: "other".into(), ..source.clone() },
            EcrSource { hosts: hosts(&["h.example", "i.example"]), ..source.clone() },
            EcrSource { role_arn: format!("{ROLE}2"), ..source.clone() },
            EcrSource { repository_arns: vec![arn("a"), arn("b")], ..source.clone() },
        ] {
            assert_ne!(ecr_scope(std::slice::from_ref(&changed)), Some(scope.clone()), "{changed:?}");
        }
    }

    #[test]
    fn an_ecr_registrys_hosts_are_its_names_and_the_proxy_endpoints() {
        let spec: crate::api::RegistrySpec = serde_json::from_value(json!({
            "url": "http://127.0.0.1:5077", "type": "ecr", "ecr": {"region": "eu-west-1"},
            "aliases": ["ecr.example.com"],
        }))
        .unwrap();
        assert_eq!(
            ecr_hosts(&spec, "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            hosts(&["123456789012.dkr.ecr.eu-west-1.amazonaws.com", "127.0.0.1:5077", "ecr.example.com"])
        );
        assert_eq!(ecr_hosts(&spec, "http://127.0.0.1:5077"), hosts(&["127.0.0.1:5077", "ecr.example.com"]));
        assert_eq!(ecr_hosts(&spec, ""), hosts(&["127.0.0.1:5077", "ecr.example.com"]));
    }

    #[test]
    fn a_pull_secret_rotates_at_two_thirds_on_request_or_when_its_registries_change() {
        let lifetime = Duration::from_secs(3 * 3600);
        let h = hosts(&["r:5000"]);
        let records = vec![StoredCredential { hash: robot::hash_new("x"), expires_at_unix: Some(1_000 + 3 * 3600) }];
        let recorded = Recorded { records, issued_at: Some(1_000), hosts: h.clone(), ..Default::default() };
        assert!(needs_new_password(None, lifetime, (None, None), &h, 1_000), "none yet");
        assert!(!needs_new_password(Some(&recorded), lifetime, (None, None), &h, 1_000 + 3600));
        assert!(needs_new_password(Some(&recorded), lifetime, (None, None), &h, 1_000 + 2 * 3600), "two thirds");
        assert!(needs_new_password(Some(&recorded), lifetime, (Some("now"), None), &h, 1_001), "asked to rotate");
        assert!(
            needs_new_password(Some(&recorded), lifetime, (None, None), &hosts(&["other"]), 1_001),
            "registries moved"
        );
        assert!(needs_new_password(Some(&recorded), lifetime, (None, Some("leak")), &h, 1_001), "asked to revoke");
        assert_eq!(next_rotation(1_000, lifetime), 1_000 + 2 * 3600);
    }

    #[test]
    fn recorded_annotations_read_back_and_garbage_reads_as_nothing() {
        let records = vec![StoredCredential { hash: "sha256$00$11".into(), expires_at_unix: Some(5) }];
        let a = BTreeMap::from([
            (HASHES_ANNOTATION.to_string(), serde_json::to_string(&records).unwrap()),
            (ISSUED_ANNOTATION.to_string(), "42".to_string()),
            (HOSTS_ANNOTATION.to_string(), "a,b".to_string()),
        ]);
        let r = Recorded::from_annotations(&a);
        assert_eq!((r.records, r.issued_at, r.hosts.len()), (records, Some(42), 2));
        let ecr = BTreeMap::from([
            (ECR_FETCHED_ANNOTATION.to_string(), "100".to_string()),
            (ECR_EXPIRES_ANNOTATION.to_string(), "43300".to_string()),
            (ECR_SCOPE_ANNOTATION.to_string(), "0123abcd".to_string()),
        ]);
        let r = Recorded::from_annotations(&ecr);
        assert_eq!(
            (r.ecr_fetched_at, r.ecr_expires_at, r.ecr_scope.as_deref(), r.issued_at),
            (Some(100), Some(43300), Some("0123abcd"), None)
        );
        let junk = BTreeMap::from([(HASHES_ANNOTATION.to_string(), "{".to_string())]);
        assert_eq!(Recorded::from_annotations(&junk), Recorded::default());
    }

    fn policy(ns: &str, name: &str, pull: serde_json::Value) -> Arc<AccessPolicy> {
        let mut spec = json!({"repositories": {"names": ["a"]}, "grants": [{"subjects": [{"kind": "Anonymous"}], "actions": ["pull"]}]});
        if !pull.is_null() {
            spec["pullSecrets"] = pull;
        }
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "berth.dev/v1alpha1", "kind": "AccessPolicy",
                "metadata": {"name": name, "namespace": ns}, "spec": spec,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn credentials_count_only_where_berth_writes_them() {
        let policies = vec![
            policy("team-a", "p", json!({"namespaces": ["team-a", "runtime"], "secretName": "pull"})),
            policy("team-a", "nopull", serde_json::Value::Null),
            policy("team-b", "q", json!({})),
        ];
        // Robots: their own namespace, their own Secret name.
        assert!(credential_source_ok("robot$team-a+ci", "team-a", "berth-robot-ci", &policies));
        assert!(!credential_source_ok("robot$team-a+ci", "evil", "berth-robot-ci", &policies), "forged elsewhere");
        assert!(!credential_source_ok("robot$team-a+ci", "team-a", "other", &policies));
        // Pull credentials: the policy's target namespaces and secret name only.
        assert!(credential_source_ok("pull$team-a+p", "runtime", "pull", &policies));
        assert!(credential_source_ok("pull$team-a+p", "team-a", "pull", &policies));
        assert!(!credential_source_ok("pull$team-a+p", "evil", "pull", &policies), "not a target");
        assert!(!credential_source_ok("pull$team-a+p", "runtime", "berth-pull", &policies), "wrong name");
        assert!(!credential_source_ok("pull$team-a+nopull", "team-a", "berth-pull", &policies), "no pullSecrets");
        assert!(!credential_source_ok("pull$team-a+gone", "team-a", "berth-pull", &policies), "no such policy");
        assert!(credential_source_ok("pull$team-b+q", "team-b", DEFAULT_PULL_SECRET, &policies), "default target");
        assert!(!credential_source_ok("pull$team-b+q", "team-a", DEFAULT_PULL_SECRET, &policies));
        assert!(!credential_source_ok("admin", "team-a", "x", &policies));
    }

    #[test]
    fn namespaces_accept_pull_secrets_only_when_they_say_so() {
        let a = |v: &str| BTreeMap::from([(ACCEPT_ANNOTATION.to_string(), v.to_string())]);
        assert!(accepts_pull_secrets(&a("team-a, team-b"), "team-b"));
        assert!(accepts_pull_secrets(&a("*"), "anyone"));
        assert!(!accepts_pull_secrets(&a("team-a"), "team-ab"));
        assert!(!accepts_pull_secrets(&a(""), "team-a"));
        assert!(!accepts_pull_secrets(&BTreeMap::new(), "team-a"));
    }

    #[test]
    fn token_and_ecr_registries_are_indexed_and_no_other() {
        let spec = |v: serde_json::Value| serde_json::from_value::<RegistrySpec>(v).unwrap();
        assert!(!indexed(&spec(json!({"url": "http://r:5000"}))), "berth decides nothing there");
        let token = json!({"url": "http://r:5000", "tokenAuth": {
            "issuer": "berth", "service": "r", "signingKeySecretRef": {"name": "k", "namespace": "berth"}}});
        assert!(indexed(&spec(token)));
        let ecr = json!({"url": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", "type": "ecr", "ecr": {}});
        assert!(indexed(&spec(ecr)));
    }

    #[test]
    fn policy_labels_are_short_stable_and_distinct() {
        let a = policy_label("team", "x");
        assert_eq!(a.len(), 24);
        assert_eq!(a, policy_label("team", "x"));
        assert_ne!(a, policy_label("tea", "mx"));
        assert!(policy_label(&"n".repeat(63), &"p".repeat(253)).len() <= 63);
    }
}
