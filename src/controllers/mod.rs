//! The controllers and what they share. Each controller is thin: read, decide with the pure
//! functions of `tenancy`, `tags` and `ledger`, apply, write status.

pub mod access;
pub mod lifecycle;
pub mod registry;
pub mod repository;
pub mod rollout;
pub mod scan;
pub mod target;
pub mod unmanaged;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        events::{Event, EventType, Recorder, Reporter},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::mpsc;

use crate::{
    api::{ImageScan, Registry, RegistryType, Repository},
    auth::TokenService,
    hosts,
    http::client::TrustedProxies,
    metrics::Metrics,
    namespaces::{NOT_MANAGED, Namespaces},
    registry::{Backend, Distribution, DistributionConfig, RegistryError},
    repository::tenancy,
    runtime::leader::Leadership,
    scanning::data::VulnerabilityData,
};

/// Operator settings from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often a Repository is re-read from the registry when no event arrives.
    pub repository_poll_interval: Duration,
    /// Concurrent requests per registry.
    pub registry_concurrency: usize,
    /// The one namespace this instance manages, if it was limited to one.
    pub namespace: Option<String>,
    /// Proxies whose `X-Forwarded-For` names the token endpoint's client.
    pub trusted_proxies: TrustedProxies,
    /// Where berth may read Secrets and write (`--namespaces`; default every namespace).
    pub namespaces: Namespaces,
    /// Caps on what reading one image's layers may cost.
    pub scan_limits: crate::scanning::layers::Limits,
    /// Where layers are written while they are read (one at a time per scan).
    pub scan_work_dir: std::path::PathBuf,
}

impl Settings {
    /// The namespaces whose Secrets and workloads berth watches: those it manages and may
    /// write in.
    pub fn watched(&self) -> Namespaces {
        Namespaces::one(self.namespace.as_deref()).intersect(&self.namespaces)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            repository_poll_interval: Duration::from_secs(300),
            registry_concurrency: 8,
            namespace: None,
            trusted_proxies: TrustedProxies::default(),
            namespaces: Namespaces::All,
            scan_limits: Default::default(),
            scan_work_dir: std::env::temp_dir(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Credentials(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    InvalidSpec(String),
    #[error("{0}")]
    NotManaged(String),
}

impl Error {
    /// The condition reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesAPIError",
            Error::Registry(e) => e.reason(),
            Error::Credentials(_) => "InvalidCredentials",
            Error::Unsupported(_) => "UnsupportedRegistryType",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::NotManaged(_) => NOT_MANAGED,
        }
    }
}

/// Whether a failure with this reason may pass by itself (the registry is down, slow or
/// refusing for now): worth trying again soon, with backoff.
pub fn transient(reason: &str) -> bool {
    matches!(reason, "RegistryUnreachable" | "TLSError" | "RegistryError" | "Unauthorized")
}

/// Why an object is not Ready: a reason for the condition (and metric label) and a message a
/// person can act on. Every controller reports its problems in this shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub reason: &'static str,
    pub message: String,
}

impl NotReady {
    pub fn new(reason: &'static str, message: impl Into<String>) -> NotReady {
        NotReady { reason, message: message.into() }
    }
}

impl From<&Error> for NotReady {
    fn from(e: &Error) -> NotReady {
        NotReady::new(e.reason(), e.to_string())
    }
}

/// Publishes an Event about `object` with its note cut to the API's limit (see
/// [`event_note`]); a failure to publish is logged, never an error of the caller.
pub async fn publish_about(
    ctx: &Context,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    (type_, reason, action): (EventType, &str, &str),
    note: String,
) {
    publish_with(&ctx.recorder, object, (type_, reason, action), note).await;
}

async fn publish_with(
    recorder: &Recorder,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    (type_, reason, action): (EventType, &str, &str),
    note: String,
) {
    let event =
        Event { type_, reason: reason.into(), note: Some(event_note(note)), action: action.into(), secondary: None };
    if let Err(e) = recorder.publish(&event, object).await {
        tracing::warn!(error = %e, reason, "cannot publish event");
    }
}

/// Publishes an Event that tells something new each time (a pin and what it pinned): a new
/// Event object, never a repeat of an earlier one. The shared recorder folds Events of the same
/// reason about the same object into a series that keeps the first one's note, so a workload
/// pinned five times would show the first pin's image five times.
pub async fn publish_distinct(
    ctx: &Context,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    (type_, reason, action): (EventType, &str, &str),
    note: String,
) {
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    publish_with(&recorder, object, (type_, reason, action), note).await;
}

/// Publishes an Event about a Repository.
pub async fn publish(ctx: &Context, repo: &Repository, type_: EventType, reason: &str, note: String) {
    publish_about(ctx, &repo.object_ref(&()), (type_, reason, "Reconcile"), note).await;
}

/// What a registry event told berth about one repository, waiting for its next reconcile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingEvents {
    /// digest -> push time (unix milliseconds) from push events.
    pub pushed: HashMap<String, i64>,
    /// digests deleted from the registry.
    pub deleted: Vec<String>,
}

/// Channels from the registry events endpoint to the controllers. Bounded: when a burst fills
/// one, the event is dropped there (counted) and polling catches up, instead of memory growing.
pub struct Triggers {
    /// Reconciles a Repository at once.
    pub repositories: mpsc::Sender<ObjectRef<Repository>>,
    /// Asks the rollout controller to check a watched tag at once.
    pub tags: mpsc::Sender<rollout::TagMoved>,
}

/// Room in each trigger channel.
pub const TRIGGER_CAPACITY: usize = 4096;

/// Which digests registry events said were pushed, and when the events arrived, per registry
/// and repository path: a lifecycle run leaves alone a candidate pushed (or tagged again) after
/// it listed the repository. Bounded in size and age.
#[derive(Default)]
pub struct PushJournal {
    heard: Mutex<HashMap<(String, String, String), std::time::Instant>>,
}

impl PushJournal {
    const MAX_ENTRIES: usize = 100_000;
    const KEEP: Duration = Duration::from_secs(6 * 3600);

    pub fn note(&self, registry: &str, path: &str, digest: &str) {
        let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if heard.len() >= Self::MAX_ENTRIES {
            heard.retain(|_, at| now.duration_since(*at) < Self::KEEP);
            if heard.len() >= Self::MAX_ENTRIES {
                // Still full of recent pushes: forget the older half.
                let mut times: Vec<std::time::Instant> = heard.values().copied().collect();
                times.sort();
                let cut = times[times.len() / 2];
                heard.retain(|_, at| *at > cut);
            }
        }
        heard.insert((registry.to_string(), path.to_string(), digest.to_string()), now);
    }

    /// Whether a push of `digest` was heard at or after `since`.
    pub fn pushed_since(&self, registry: &str, path: &str, digest: &str, since: std::time::Instant) -> bool {
        let heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        heard.get(&(registry.to_string(), path.to_string(), digest.to_string())).is_some_and(|at| *at >= since)
    }
}

/// A Registry's credentials Secret, read.
struct CredentialsSecret {
    /// `<namespace>/<name>`, for messages.
    named: String,
    data: std::collections::BTreeMap<String, k8s_openapi::ByteString>,
}

impl CredentialsSecret {
    fn field(&self, key: &str) -> Option<String> {
        self.data.get(key).map(|v| String::from_utf8_lossy(&v.0).into_owned())
    }

    /// A key that must be there, as `read` makes it.
    fn need(&self, key: &str, read: impl Fn(&str) -> String) -> Result<String, Error> {
        self.field(key)
            .map(|v| read(&v))
            .ok_or_else(|| Error::Credentials(format!("credentials Secret {} has no key {key:?}", self.named)))
    }
}

/// How long one ECR listing made for polling answers the polls of other tags of the same
/// repository: the rollout controller polls tags on their own schedules, and the tags of one
/// repository due within this window share one DescribeImages call.
pub const ECR_POLL_LISTING_TTL: Duration = Duration::from_secs(5);

/// A built backend and the fingerprint (generation and Secret version) it was built from.
type CachedBackend = (String, Arc<dyn Backend>);

/// Backends built from Registry objects, rebuilt when the spec or its Secret changes.
#[derive(Default)]
pub struct Backends {
    cache: Mutex<HashMap<String, CachedBackend>>,
    /// One ECR backend is built at a time: a thousand Repositories reconciled at once after a
    /// start would otherwise each build an SDK client (its own HTTPS connector, root store and
    /// connection pool) before the first was cached.
    building: tokio::sync::Mutex<()>,
}

pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Who reports berth's Events, for those that must not fold into an earlier one's series.
    pub reporter: Reporter,
    pub repositories: Store<Repository>,
    pub registries: Store<Registry>,
    pub settings: Settings,
    pub backends: Backends,
    pub pending: Mutex<HashMap<ObjectRef<Repository>, PendingEvents>>,
    /// Pushes heard from registry events, for the lifecycle's last look before deleting.
    pub pushes: PushJournal,
    /// Rebuilds of the access indexes, to wait for one that includes a policy.
    pub index_rebuilds: access::Rebuilds,
    /// What registry events set in motion at once.
    pub triggers: Triggers,
    /// berth as the token service of the Registries that use `tokenAuth`.
    pub tokens: Arc<TokenService>,
    /// Whether this replica reconciles (it holds the Lease, or there is no election).
    pub leader: Arc<Leadership>,
    /// The ImageScans berth watches.
    pub scans: Store<ImageScan>,
    /// The vulnerability data scans match against.
    pub vulnerabilities: Arc<VulnerabilityData>,
    /// Inventories of scanned images, for re-matching.
    pub inventories: scan::Inventories,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        reporter: Reporter,
        (repositories, registries, scans): (Store<Repository>, Store<Registry>, Store<ImageScan>),
        settings: Settings,
        triggers: Triggers,
        leader: Arc<Leadership>,
    ) -> Context {
        Context {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            metrics,
            repositories,
            registries,
            settings,
            backends: Backends::default(),
            pending: Mutex::new(HashMap::new()),
            pushes: PushJournal::default(),
            index_rebuilds: access::Rebuilds::default(),
            triggers,
            tokens: Arc::new(TokenService::new()),
            leader,
            scans,
            vulnerabilities: Arc::new(VulnerabilityData::new(false)),
            inventories: scan::Inventories::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Scans match against `data` (without it, they say there is no data).
    pub fn with_vulnerabilities(mut self, data: Arc<VulnerabilityData>) -> Context {
        self.vulnerabilities = data;
        self
    }

    /// The backend for a Registry, reading its credentials Secret.
    pub async fn backend(&self, registry: &Registry) -> Result<Arc<dyn Backend>, Error> {
        if registry.spec.type_ == RegistryType::Ecr {
            return self.ecr_backend(registry).await;
        }
        let mut username = None;
        let mut password = None;
        let (credentials, secret_version) = self.credentials(registry).await?;
        if let Some(c) = &credentials {
            username = Some(c.need("username", |v| v.to_string())?);
            password = Some(c.need("password", |v| v.to_string())?);
        }
        // With berth as the registry's token service, berth signs its own tokens: no stored
        // credential is needed, or used.
        let mint: Option<crate::registry::Mint> = registry.spec.token_auth.as_ref().map(|_| {
            let tokens = self.tokens.clone();
            let name = registry.name_any();
            Arc::new(move |scope: &str| tokens.mint(&name, scope)) as crate::registry::Mint
        });
        if mint.is_some() {
            (username, password) = (None, None);
        }
        let fingerprint = format!("{:?}/{secret_version}", registry.metadata.generation);
        let name = registry.name_any();
        if let Some(backend) = self.cached_backend(&name, &fingerprint) {
            return Ok(backend);
        }
        let backend: Arc<dyn Backend> = Arc::new(Distribution::new(DistributionConfig {
            url: registry.spec.url.clone(),
            username,
            password,
            insecure_skip_tls_verify: registry.spec.insecure_skip_tls_verify.unwrap_or(false),
            ca_bundle: registry.spec.ca_bundle.clone(),
            max_concurrency: self.settings.registry_concurrency,
            mint,
            latency: Some(self.metrics.registry_request_duration.clone()),
            ..Default::default()
        })?);
        let mut cache = self.backends.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(name, (fingerprint, backend.clone()));
        Ok(backend)
    }

    /// The Registry's credentials Secret (`credentialsSecretRef`) and its resourceVersion, which
    /// a cached backend is rebuilt on; `None` without one.
    async fn credentials(&self, registry: &Registry) -> Result<(Option<CredentialsSecret>, String), Error> {
        let Some(r) = &registry.spec.credentials_secret_ref else { return Ok((None, String::new())) };
        let ns = r.namespace.as_deref().unwrap_or_default();
        if let Some(message) = self.settings.namespaces.refusal(ns, "the credentials Secret") {
            return Err(Error::NotManaged(message));
        }
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(&r.name)
            .await?
            .ok_or_else(|| Error::Credentials(format!("credentials Secret {ns}/{} does not exist", r.name)))?;
        let version = secret.resource_version().unwrap_or_default();
        let named = format!("{ns}/{}", r.name);
        Ok((Some(CredentialsSecret { named, data: secret.data.unwrap_or_default() }), version))
    }

    /// The cached backend built from this fingerprint, if there is one.
    fn cached_backend(&self, name: &str, fingerprint: &str) -> Option<Arc<dyn Backend>> {
        let cache = self.backends.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(name).filter(|(fp, _)| fp == fingerprint).map(|(_, b)| b.clone())
    }

    /// An `ecr` Registry's backend: the ECR API with keys from the credentials Secret, or the
    /// AWS default chain without one.
    async fn ecr_backend(&self, registry: &Registry) -> Result<Arc<dyn Backend>, Error> {
        let spec = &registry.spec;
        let settings = spec.ecr.clone().unwrap_or_default();
        let from_url = hosts::url_host(&spec.url).and_then(|h| crate::registry::ecr::parse_registry_host(&h));
        let region = settings.region.clone().or_else(|| from_url.as_ref().map(|(_, r)| r.clone())).ok_or_else(|| {
            Error::InvalidSpec(format!(
                "ecr.region is not set and url {:?} is not an ECR registry host (<account>.dkr.ecr.<region>.amazonaws.com)",
                spec.url
            ))
        })?;
        let registry_id = settings.registry_id.clone().or_else(|| from_url.map(|(a, _)| a));
        let (credentials, secret_version) = self.credentials(registry).await?;
        let mut keys = None;
        if let Some(c) = &credentials {
            let trim = |v: &str| v.trim().to_string();
            keys = Some(crate::registry::ecr::StaticKeys {
                access_key_id: c.need("accessKeyId", trim)?,
                secret_access_key: c.need("secretAccessKey", trim)?,
                session_token: c.field("sessionToken").map(|v| trim(&v)),
            });
        }
        let name = registry.name_any();
        let fingerprint = format!("{:?}/{secret_version}", registry.metadata.generation);
        if let Some(backend) = self.cached_backend(&name, &fingerprint) {
            return Ok(backend);
        }
        let _one = self.backends.building.lock().await;
        if let Some(backend) = self.cached_backend(&name, &fingerprint) {
            return Ok(backend);
        }
        let backend: Arc<dyn Backend> = Arc::new(
            crate::registry::Ecr::new(crate::registry::EcrConfig {
                region,
                registry_id,
                endpoint: settings.endpoint.clone(),
                keys,
                ca_bundle: spec.ca_bundle.clone(),
                poll_listing_ttl: ECR_POLL_LISTING_TTL,
                max_concurrency: self.settings.registry_concurrency,
            })
            .await?,
        );
        let mut cache = self.backends.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(name, (fingerprint, backend.clone()));
        Ok(backend)
    }

    /// The Repository that owns `path` in `registry`, if one declares it.
    pub fn repository_for_path(&self, registry: &str, path: &str) -> Option<Arc<Repository>> {
        let repos = self.repositories.state();
        let allowed = self.registries.get(&ObjectRef::new(registry)).map(|r| r.spec.path_prefixes.clone());
        // A claim its namespace may not make (wrong path prefix) cannot hold, or block, a path.
        let claims: Vec<(tenancy::Claim, &Arc<Repository>)> = repos
            .iter()
            .map(|r| (claim_of(r), r))
            .filter(|(c, _)| {
                allowed.as_ref().is_none_or(|prefixes| tenancy::check_path(&c.namespace, &c.path, prefixes).is_ok())
            })
            .collect();
        let owner = tenancy::path_owner(claims.iter().map(|(c, _)| c), registry, path)?;
        claims.iter().find(|(c, _)| c == owner).map(|(_, r)| (*r).clone())
    }

    /// Backoff for an object that keeps failing: 5 s doubling to 5 min.
    pub fn failure_backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = (*n + 1).min(10);
        Duration::from_secs((5u64 << (*n - 1)).min(300))
    }

    pub fn clear_failures(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// An Api over every namespace, or over the one this instance is limited to.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One Api over every namespace, or one per namespace of a list (a watch each, merged).
pub fn apis<K>(client: &Client, namespaces: &Namespaces) -> Vec<Api<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespaces {
        Namespaces::All => vec![Api::all(client.clone())],
        Namespaces::Only(names) => names.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect(),
    }
}

/// A watch-stream filter: keeps the events of objects whose namespace `keep` accepts, and the
/// list markers (so a reflector behind it still starts and finishes its lists).
pub fn events_in<K: Resource>(
    keep: impl Fn(&str) -> bool,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) -> std::future::Ready<bool> {
    move |event| {
        std::future::ready(match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o)) => {
                keep(o.meta().namespace.as_deref().unwrap_or_default())
            }
            _ => true,
        })
    }
}

/// Adds or removes `finalizer` on a namespaced object of ours. The resourceVersion makes this a
/// compare-and-swap with other writers of the list.
pub(crate) async fn set_finalizer<K>(client: &Client, obj: &K, finalizer: &str, present: bool) -> Result<(), Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let mut finalizers: Vec<String> = obj.finalizers().iter().filter(|f| *f != finalizer).cloned().collect();
    if present {
        finalizers.push(finalizer.to_string());
    }
    let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    Api::<K>::namespaced(client.clone(), &obj.namespace().unwrap_or_default())
        .patch(&obj.name_any(), &kube::api::PatchParams::default(), &kube::api::Patch::Merge(patch))
        .await?;
    Ok(())
}

/// One watch event with each object decoded on its own (`DeserializeGuard`): an object that does
/// not decode (written under another version of a CRD, say) is left out with a warning, instead
/// of failing the whole list and stalling its controller. Pure.
pub fn decoded<K>(
    event: kube::runtime::watcher::Event<kube::core::DeserializeGuard<K>>,
) -> Option<kube::runtime::watcher::Event<K>>
where
    K: kube::Resource,
    K::DynamicType: Default,
{
    use kube::{core::DeserializeGuard, runtime::watcher::Event};
    let skip = |e: kube::core::error_boundary::InvalidObject| {
        tracing::warn!(
            kind = %K::kind(&Default::default()),
            namespace = e.metadata.namespace.as_deref().unwrap_or_default(),
            name = e.metadata.name.as_deref().unwrap_or_default(),
            error = %e.error,
            "an object that does not decode is left out"
        );
        None
    };
    match event {
        Event::Apply(DeserializeGuard(Ok(o))) => Some(Event::Apply(o)),
        Event::InitApply(DeserializeGuard(Ok(o))) => Some(Event::InitApply(o)),
        Event::Delete(DeserializeGuard(Ok(o))) => Some(Event::Delete(o)),
        Event::Apply(DeserializeGuard(Err(e)))
        | Event::InitApply(DeserializeGuard(Err(e)))
        | Event::Delete(DeserializeGuard(Err(e))) => skip(e),
        Event::Init => Some(Event::Init),
        Event::InitDone => Some(Event::InitDone),
    }
}

/// A watch of `K` that one undecodable object cannot stall (see [`decoded`]).
pub fn guarded_watch<K>(
    api: Api<kube::core::DeserializeGuard<K>>,
    config: kube::runtime::watcher::Config,
) -> impl futures::Stream<Item = Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>> + Send + 'static
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    use futures::StreamExt;
    kube::runtime::watcher(api, config).filter_map(|r| {
        futures::future::ready(match r {
            Ok(event) => decoded(event).map(Ok),
            Err(e) => Some(Err(e)),
        })
    })
}

/// The API server refuses an Event whose note is over 1024 bytes (an error from an admission
/// webhook easily is): cut at a character boundary, marked, so the Event is still written.
pub fn event_note(note: String) -> String {
    const MAX: usize = 1024;
    if note.len() <= MAX {
        return note;
    }
    let mut end = MAX - "…".len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &note[..end])
}

/// Resolves once `shutdown` says stop (a future to `select!` on or hand to a controller).
pub async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// A Repository's claim on a registry path.
pub fn claim_of(repo: &Repository) -> tenancy::Claim {
    let namespace = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    tenancy::Claim {
        registry: repo.spec.registry_ref.name.clone(),
        path: tenancy::repository_path(&namespace, &name, repo.spec.name.as_deref()),
        namespace,
        name,
        created: repo.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()),
    }
}

#[cfg(test)]
mod tests {
    use kube::{core::DeserializeGuard, runtime::watcher::Event};

    use super::*;

    #[test]
    fn event_notes_fit_the_api_limit() {
        assert_eq!(event_note("short".into()), "short");
        for long in ["x".repeat(5000), "é".repeat(3000), format!("a{}", "€".repeat(700))] {
            let cut = event_note(long.clone());
            assert!(cut.len() <= 1024, "{}", cut.len());
            assert!(cut.ends_with('…') && long.starts_with(cut.trim_end_matches('…')));
        }
    }

    #[test]
    fn an_object_that_does_not_decode_is_left_out_and_the_rest_flows() {
        let good: DeserializeGuard<Repository> = serde_json::from_value(serde_json::json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Repository",
            "metadata": {"name": "ok", "namespace": "team-a"},
            "spec": {"registryRef": {"name": "main"}},
        }))
        .unwrap();
        let bad: DeserializeGuard<Repository> = serde_json::from_value(serde_json::json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Repository",
            "metadata": {"name": "bad", "namespace": "team-a"},
            "spec": {"registryRef": "not an object"},
        }))
        .unwrap();
        assert!(bad.0.is_err(), "the guard holds the error instead of failing the list");
        assert!(matches!(decoded(Event::InitApply(good)), Some(Event::InitApply(r)) if r.name_any() == "ok"));
        assert!(decoded(Event::InitApply(bad.clone())).is_none());
        assert!(decoded(Event::Apply(bad)).is_none());
        assert!(matches!(decoded::<Repository>(Event::InitDone), Some(Event::InitDone)));
    }
}
