//! The stored credential hashes the token service checks passwords against, from a metadata-only
//! watch of berth's credential Secrets (the token service never holds a password), and when a
//! credential needs a new password.

use super::*;

/// What is recorded on a pull secret, read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    pub records: Vec<StoredCredential>,
    pub issued_at: Option<i64>,
    pub rotated_for: Option<String>,
    pub revoked_for: Option<String>,
    /// The token registries' hosts berth's own pull credential was written for.
    pub hosts: BTreeSet<String>,
    /// When the ECR credentials were fetched and when berth takes them to expire.
    pub ecr_fetched_at: Option<i64>,
    pub ecr_expires_at: Option<i64>,
    /// The [`ecr_scope`] they were fetched for.
    pub ecr_scope: Option<String>,
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
            ecr_fetched_at: a.get(ECR_FETCHED_ANNOTATION).and_then(|t| t.parse().ok()),
            ecr_expires_at: a.get(ECR_EXPIRES_ANNOTATION).and_then(|t| t.parse().ok()),
            ecr_scope: a.get(ECR_SCOPE_ANNOTATION).cloned(),
        }
    }
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
pub(super) fn credentials_map(
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
    for api in apis::<PartialObjectMeta<Secret>>(&ctx.client, &namespaces) {
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
    let stop = stopped(shutdown);
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
