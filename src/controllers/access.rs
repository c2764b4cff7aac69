//! AccessPolicies: the access index the token service decides with, the stored credential hashes
//! it checks passwords against, and each policy's robot and pull-secret credentials and status.
//!
//! - `run_indexes` rebuilds every token Registry's `AccessIndex` from the Repositories that own
//!   their path and the AccessPolicies, whenever something asks (a policy or Repository changed,
//!   a Registry was reconciled) and every few seconds as a safety net.
//! - `run_credentials` keeps the username -> hashes map from a metadata-only watch of berth's
//!   credential Secrets: the token service never holds a password.
//! - `reconcile` writes robot Secrets, pull secrets (rotated at two thirds of their lifetime,
//!   removed with their policy) and the policy's status.

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

use super::{Context, Error, claim_of, registry_host};
use crate::{
    api::{AccessPolicy, AccessPolicyStatus, SubjectKind},
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
/// Registry hosts the Secret's docker config names.
pub const HOSTS_ANNOTATION: &str = "berth.dev/hosts";
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
/// The index is rebuilt at least this often even when nobody asks.
const INDEX_REFRESH: Duration = Duration::from_secs(10);

/// The short label value naming a policy.
pub fn policy_label(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// A `.dockerconfigjson` for `hosts`.
pub fn docker_config(hosts: &BTreeSet<String>, username: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let auths: serde_json::Map<String, serde_json::Value> =
        hosts.iter().map(|h| (h.clone(), json!({"username": username, "password": password, "auth": auth}))).collect();
    json!({"auths": auths}).to_string()
}

/// What is recorded on a pull secret, read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    pub records: Vec<StoredCredential>,
    pub issued_at: Option<i64>,
    pub rotated_for: Option<String>,
    pub revoked_for: Option<String>,
    pub hosts: BTreeSet<String>,
}

impl Recorded {
    pub fn from_annotations(a: &BTreeMap<String, String>) -> Recorded {
        Recorded {
            records: a.get(HASHES_ANNOTATION).and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default(),
            issued_at: a.get(ISSUED_ANNOTATION).and_then(|t| t.parse().ok()),
            rotated_for: a.get(ROTATED_FOR_ANNOTATION).cloned(),
            revoked_for: a.get(REVOKED_FOR_ANNOTATION).cloned(),
            hosts: a
                .get(HOSTS_ANNOTATION)
                .map(|h| h.split(',').filter(|s| !s.is_empty()).map(String::from).collect())
                .unwrap_or_default(),
        }
    }
}

/// Whether a Namespace with annotations `annotations` accepts pull secrets from policies of
/// `from`.
pub fn accepts_pull_secrets(annotations: &BTreeMap<String, String>, from: &str) -> bool {
    annotations.get(ACCEPT_ANNOTATION).is_some_and(|list| list.split(',').map(str::trim).any(|n| n == "*" || n == from))
}

/// Whether a pull secret needs a new password now: none yet, two thirds of its life gone, the
/// policy asked for a rotation or a revocation, or it must name other registries.
pub fn needs_new_password(
    recorded: Option<&Recorded>,
    lifetime: Duration,
    (rotate, revoke): (Option<&str>, Option<&str>),
    hosts: &BTreeSet<String>,
    now: i64,
) -> bool {
    let Some(r) = recorded else { return true };
    match r.issued_at {
        None => true,
        Some(issued) => {
            robot::needs_rotation(issued, lifetime, now)
                || r.rotated_for.as_deref() != rotate
                || r.revoked_for.as_deref() != revoke
                || &r.hosts != hosts
                || !r.records.iter().any(|c| c.is_current(now))
        }
    }
}

/// When a pull secret issued at `issued` needs its next password.
pub fn next_rotation(issued: i64, lifetime: Duration) -> i64 {
    issued.saturating_add(i64::try_from(lifetime.as_secs() * 2 / 3).unwrap_or(i64::MAX))
}

/// Rebuilds the access index of every Registry with `tokenAuth`.
fn rebuild(ctx: &Context, policies: &Store<AccessPolicy>) {
    let policies = policies.state();
    let repositories = ctx.repositories.state();
    let registries = ctx.registries.state();
    for registry in registries.iter().filter(|r| r.spec.token_auth.is_some()) {
        let name = registry.name_any();
        let claims: Vec<_> = repositories
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .map(|r| (claim_of(r), r))
            .filter(|(c, _)| c.registry == name)
            // A claim its namespace may not make cannot hold (or block) a path.
            .filter(|(c, _)| tenancy::check_path(&c.namespace, &c.path, &registry.spec.path_prefixes).is_ok())
            .collect();
        let inputs: Vec<RepoInput> = claims
            .iter()
            .filter(|(c, _)| tenancy::path_owner(claims.iter().map(|(c, _)| c), &name, &c.path) == Some(c))
            .map(|(c, r)| RepoInput {
                path: c.path.clone(),
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                labels: r.labels().clone(),
                visibility: r.spec.visibility,
            })
            .collect();
        ctx.tokens.set_index(&name, AccessIndex::build(inputs, policies.iter().map(|p| p.as_ref())));
    }
}

/// Counts rebuilds of the access indexes, so that a reconcile can wait for one that began after
/// it asked (and so saw the policy it reconciles) instead of sleeping and hoping.
#[derive(Default)]
pub struct Rebuilds {
    /// (rebuilds begun, the highest rebuild finished)
    counts: std::sync::Mutex<(u64, u64)>,
    finished: tokio::sync::Notify,
}

impl Rebuilds {
    fn counts(&self) -> std::sync::MutexGuard<'_, (u64, u64)> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A rebuild begins; its number.
    fn begin(&self) -> u64 {
        let mut c = self.counts();
        c.0 += 1;
        c.0
    }

    fn end(&self, n: u64) {
        let mut c = self.counts();
        c.1 = c.1.max(n);
        drop(c);
        self.finished.notify_waiters();
    }

    /// How many rebuilds have begun so far.
    pub fn begun(&self) -> u64 {
        self.counts().0
    }

    /// Waits until a rebuild numbered above `n` finished (one that began after `begun()`
    /// returned `n`).
    pub async fn wait_past(&self, n: u64) {
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.counts().1 > n {
                return;
            }
            notified.await;
        }
    }
}

/// Keeps the access indexes current until shutdown.
pub async fn run_indexes(ctx: Arc<Context>, policies: Store<AccessPolicy>, shutdown: watch::Receiver<bool>) {
    let _ = policies.wait_until_ready().await;
    let stop = super::stopped(shutdown);
    tokio::pin!(stop);
    loop {
        let n = ctx.index_rebuilds.begin();
        rebuild(&ctx, &policies);
        ctx.index_rebuilds.end(n);
        tokio::select! {
            _ = ctx.tokens.rebuild.notified() => {
                // Changes come in bursts (a policy and its Repositories applied together).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(INDEX_REFRESH) => {}
            _ = &mut stop => return,
        }
    }
}

/// Where berth itself writes a credential Secret for `username`, and so the only Secrets whose
/// hashes count for it: a robot's in its own namespace under `berth-robot-<name>`; a pull
/// credential's in the namespaces its policy writes pull secrets to, under the policy's secret
/// name. Anyone can label a Secret; nobody but the policy's authors decides these places.
pub fn credential_source_ok(username: &str, namespace: &str, name: &str, policies: &[Arc<AccessPolicy>]) -> bool {
    if let Some((ns, robot_name)) = robot::parse_robot_username(username) {
        return ns == namespace && name == format!("berth-robot-{robot_name}");
    }
    if let Some((ns, policy_name)) = robot::parse_pull_username(username) {
        let Some(policy) = policies
            .iter()
            .find(|p| p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(policy_name))
        else {
            return false;
        };
        let Some(p) = &policy.spec.pull_secrets else { return false };
        let secret_name = p.secret_name.as_deref().unwrap_or(DEFAULT_PULL_SECRET);
        let targeted =
            if p.namespaces.is_empty() { namespace == ns } else { p.namespaces.iter().any(|t| t == namespace) };
        return targeted && name == secret_name;
    }
    false
}

/// username -> stored hashes, from the credential Secrets that are where berth writes them.
fn credentials_map(
    secrets: &[Arc<PartialObjectMeta<Secret>>],
    policies: &[Arc<AccessPolicy>],
) -> HashMap<String, Vec<StoredCredential>> {
    let mut map: HashMap<String, Vec<StoredCredential>> = HashMap::new();
    for s in secrets {
        let a = s.annotations();
        let (Some(user), Some(hashes)) = (a.get(USERNAME_ANNOTATION), a.get(HASHES_ANNOTATION)) else { continue };
        let namespace = s.namespace().unwrap_or_default();
        if !credential_source_ok(user, &namespace, &s.name_any(), policies) {
            continue;
        }
        if let Ok(records) = serde_json::from_str::<Vec<StoredCredential>>(hashes) {
            map.entry(user.clone()).or_default().extend(records);
        }
    }
    map
}

/// Keeps the username -> stored hashes map from a metadata-only watch of credential Secrets in
/// `namespaces` (one watch and store per namespace when they are listed: a reflector's relist
/// replaces its whole store), rebuilt when they or the AccessPolicies change.
pub async fn run_credentials(
    ctx: Arc<Context>,
    namespaces: crate::namespaces::Namespaces,
    policies: Store<AccessPolicy>,
    shutdown: watch::Receiver<bool>,
) {
    let mut readers = Vec::new();
    let mut watches = Vec::new();
    for api in super::apis::<PartialObjectMeta<Secret>>(&ctx.client, &namespaces) {
        let (reader, writer) = reflector::store::<PartialObjectMeta<Secret>>();
        readers.push(reader);
        watches.push(
            watcher(api, watcher::Config::default().labels(CREDENTIAL_LABEL))
                .default_backoff()
                .modify(|s| s.managed_fields_mut().clear())
                .reflect(writer)
                .touched_objects()
                .boxed(),
        );
    }
    let secrets = || readers.iter().flat_map(Store::state).collect::<Vec<_>>();
    let mut events = futures::stream::select_all(watches);
    let stop = super::stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(_)) => ctx.tokens.set_credentials(credentials_map(&secrets(), &policies.state())),
                Some(Err(e)) => tracing::warn!(error = %e, "credential Secret watch failed; retrying"),
                None => return,
            },
            // Policies decide where pull credentials may come from.
            _ = ctx.tokens.credentials_changed.notified() => {
                ctx.tokens.set_credentials(credentials_map(&secrets(), &policies.state()));
            }
            _ = &mut stop => return,
        }
    }
}

/// A problem that makes the policy not Ready.
struct NotReady {
    reason: &'static str,
    message: String,
}

fn secret_api(ctx: &Context, ns: &str) -> Api<Secret> {
    Api::namespaced(ctx.client.clone(), ns)
}

/// Registry hosts of the token registries in which the policy selects Repositories; its
/// summed repository count; names that matched nothing anywhere; warnings.
fn summarize(ctx: &Context, ns: &str, name: &str) -> (BTreeSet<String>, usize, BTreeSet<String>, Vec<String>) {
    let mut hosts = BTreeSet::new();
    let mut count = 0;
    let mut unmatched: Option<BTreeSet<String>> = None;
    let mut warnings = Vec::new();
    for registry in ctx.registries.state().iter().filter(|r| r.spec.token_auth.is_some()) {
        let Some(index) = ctx.tokens.index(&registry.name_any()) else { continue };
        if let Some(summary) = index.policy(ns, name) {
            count += summary.repository_count;
            if summary.repository_count > 0
                && let Some(h) = registry_host(&registry.spec.url)
            {
                hosts.insert(h);
            }
            unmatched = Some(match unmatched {
                None => summary.unmatched_names.clone(),
                Some(u) => u.intersection(&summary.unmatched_names).cloned().collect(),
            });
        }
        if warnings.is_empty() {
            warnings = index
                .warnings()
                .iter()
                .filter(|w| w.namespace == ns && w.name == name)
                .map(|w| w.message.clone())
                .collect();
        }
    }
    (hosts, count, unmatched.unwrap_or_default(), warnings)
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
                ".dockerconfigjson": docker_config(hosts, &username, &password),
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

/// Writes (or rotates) the pull secret in one namespace; returns when it next needs rotating.
async fn ensure_pull_secret(
    policy: &AccessPolicy,
    ctx: &Context,
    target_ns: &str,
    secret_name: &str,
    lifetime: Duration,
    hosts: &BTreeSet<String>,
) -> Result<i64, NotReady> {
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let owner = format!("{ns}/{name}");
    let api = secret_api(ctx, target_ns);
    let existing = api.get_opt(secret_name).await.map_err(kube_not_ready)?;
    if let Some(s) = &existing
        && s.annotations().get(OWNER_ANNOTATION) != Some(&owner)
    {
        return Err(NotReady {
            reason: "SecretConflict",
            message: format!("Secret {target_ns}/{secret_name} exists and does not belong to this policy"),
        });
    }
    if hosts.is_empty() {
        // No registry (yet) to write credentials for: a docker config without one would break
        // the Secret kubelets use now (berth starting, its stores not filled yet).
        return Err(NotReady {
            reason: "NoRepositories",
            message: "the policy selects no Repository in a registry whose token service is berth".into(),
        });
    }
    let recorded = existing.as_ref().map(|s| Recorded::from_annotations(s.annotations()));
    let rotate = policy.annotations().get(ROTATE_ANNOTATION).map(String::as_str);
    let revoke = policy.annotations().get(REVOKE_ANNOTATION).map(String::as_str);
    let now = now_unix();
    if !needs_new_password(recorded.as_ref(), lifetime, (rotate, revoke), hosts, now) {
        return Ok(next_rotation(recorded.and_then(|r| r.issued_at).unwrap_or(now), lifetime));
    }
    let username = robot::pull_username(&ns, &name);
    // A revocation drops every earlier password; any other rotation keeps them until they expire.
    let revoked = recorded.as_ref().is_some_and(|r| r.revoked_for.as_deref() != revoke);
    let previous = if revoked { Vec::new() } else { recorded.map(|r| r.records).unwrap_or_default() };
    let (password, records) = robot::rotate(&previous, Some(lifetime), now);
    let mut annotations = BTreeMap::from([
        (OWNER_ANNOTATION.to_string(), owner),
        (USERNAME_ANNOTATION.to_string(), username.clone()),
        (HASHES_ANNOTATION.to_string(), serde_json::to_string(&records).unwrap_or_default()),
        (ISSUED_ANNOTATION.to_string(), now.to_string()),
        (HOSTS_ANNOTATION.to_string(), hosts.iter().cloned().collect::<Vec<_>>().join(",")),
    ]);
    if let Some(r) = rotate {
        annotations.insert(ROTATED_FOR_ANNOTATION.to_string(), r.to_string());
    }
    if let Some(r) = revoke {
        annotations.insert(REVOKED_FOR_ANNOTATION.to_string(), r.to_string());
    }
    let mut secret = existing.clone().unwrap_or_default();
    secret.metadata.name = Some(secret_name.to_string());
    secret.metadata.namespace = Some(target_ns.to_string());
    secret.metadata.managed_fields = None;
    let labels = secret.metadata.labels.get_or_insert_default();
    labels.insert(CREDENTIAL_LABEL.into(), "pull".into());
    labels.insert(PULL_OF_LABEL.into(), policy_label(&ns, &name));
    secret.metadata.annotations = Some(annotations);
    secret.type_ = Some("kubernetes.io/dockerconfigjson".into());
    secret.string_data = None;
    secret.data = Some(BTreeMap::from([(
        ".dockerconfigjson".to_string(),
        ByteString(docker_config(hosts, &username, &password).into_bytes()),
    )]));
    match existing {
        Some(_) => api.replace(secret_name, &PostParams::default(), &secret).await,
        None => api.create(&PostParams::default(), &secret).await,
    }
    .map_err(kube_not_ready)?;
    tracing::info!(namespace = %target_ns, secret = secret_name, policy = %name, "pull secret written");
    Ok(next_rotation(now, lifetime))
}

/// Adds (or removes) a Secret in a ServiceAccount's `imagePullSecrets`, compare-and-swap.
/// `Ok(false)` when the ServiceAccount does not exist (yet).
async fn service_account_reference(
    ctx: &Context,
    ns: &str,
    account: &str,
    secret: &str,
    present: bool,
) -> Result<bool, kube::Error> {
    let api = Api::<ServiceAccount>::namespaced(ctx.client.clone(), ns);
    let Some(sa) = api.get_opt(account).await? else { return Ok(false) };
    let mut refs: Vec<String> = sa.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect();
    let has = refs.iter().any(|r| r == secret);
    if has == present {
        return Ok(true);
    }
    if present {
        refs.push(secret.to_string());
    } else {
        refs.retain(|r| r != secret);
    }
    let list: Vec<_> = refs.iter().map(|r| json!({"name": r})).collect();
    let patch = json!({"metadata": {"resourceVersion": sa.resource_version()}, "imagePullSecrets": list});
    api.patch(account, &PatchParams::default(), &Patch::Merge(patch)).await?;
    Ok(true)
}

/// Deletes the policy's pull secrets outside `keep` (all of them with an empty `keep`) and the
/// ServiceAccount references to them.
async fn remove_pull_secrets(policy: &AccessPolicy, ctx: &Context, keep: &BTreeSet<String>) -> Result<(), kube::Error> {
    let ns = policy.namespace().unwrap_or_default();
    let selector = format!("{PULL_OF_LABEL}={}", policy_label(&ns, &policy.name_any()));
    let owner = format!("{ns}/{}", policy.name_any());
    let lp = ListParams::default().labels(&selector);
    let mut found = Vec::new();
    for api in super::apis::<Secret>(&ctx.client, &ctx.settings.watched()) {
        found.extend(api.list_metadata(&lp).await?.items);
    }
    for s in found {
        let target = s.namespace().unwrap_or_default();
        if keep.contains(&target) || s.annotations().get(OWNER_ANNOTATION) != Some(&owner) {
            continue;
        }
        let secret_name = s.name_any();
        let accounts =
            Api::<ServiceAccount>::namespaced(ctx.client.clone(), &target).list(&ListParams::default()).await?;
        for sa in accounts.items.iter().filter(|a| a.image_pull_secrets.iter().flatten().any(|r| r.name == secret_name))
        {
            service_account_reference(ctx, &target, &sa.name_any(), &secret_name, false).await?;
        }
        match secret_api(ctx, &target).delete(&secret_name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(namespace = %target, secret = %secret_name, "pull secret removed"),
            // Gone already: what deleting wanted.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // 403, 409, 5xx...: the Secret is still there; the caller retries.
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
        ctx.tokens.rebuild.notify_one();
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
        ctx.registries.state().iter().any(|r| r.spec.token_auth.is_some() && ctx.tokens.index(&r.name_any()).is_none());
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

    let (hosts, count, unmatched, warnings) = summarize(&ctx, &ns, &name);
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
                    for target in &targets {
                        match ensure_pull_secret(&policy, &ctx, target, &secret_name, l, &hosts).await {
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
                "no Repository in a registry served by berth's token service is named {}",
                unmatched.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ),
        (None, None, true, 0) => (
            false,
            "NoRepositories",
            "the policy selects no Repository in a registry whose token service is berth".to_string(),
        ),
        (None, None, true, n) => (true, "Applied", format!("{n} repositories, {} grants", policy.spec.grants.len())),
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
            serde_json::from_str(&docker_config(&hosts(&["r:5000", "s"]), "pull$a+b", "pw")).unwrap();
        assert_eq!(config["auths"]["r:5000"]["username"], "pull$a+b");
        let auth = config["auths"]["s"]["auth"].as_str().unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(auth).unwrap(), b"pull$a+b:pw");
    }

    #[test]
    fn a_pull_secret_rotates_at_two_thirds_on_request_or_when_its_registries_change() {
        let lifetime = Duration::from_secs(3 * 3600);
        let h = hosts(&["r:5000"]);
        let records = vec![StoredCredential { hash: robot::hash_new("x"), expires_at_unix: Some(1_000 + 3 * 3600) }];
        let recorded =
            Recorded { records, issued_at: Some(1_000), rotated_for: None, revoked_for: None, hosts: h.clone() };
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
    fn policy_labels_are_short_stable_and_distinct() {
        let a = policy_label("team", "x");
        assert_eq!(a.len(), 24);
        assert_eq!(a, policy_label("team", "x"));
        assert_ne!(a, policy_label("tea", "mx"));
        assert!(policy_label(&"n".repeat(63), &"p".repeat(253)).len() <= 63);
    }
}
