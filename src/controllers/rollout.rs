//! The rollout controller: workloads annotated `berth.dev/rollout: digest` follow their tags.
//!
//! A namespace opts in first (label `berth.dev/rollouts: enabled`): workloads elsewhere are never
//! touched, and are watched only by a cluster-wide install (which keeps nothing of them).
//!
//! One task owns the state: the opted-in workloads (only those are kept in memory; the watches
//! see every workload but keep nothing of the others), the tags they follow with where each
//! points now, and the poll schedule. A push event from the registry events endpoint is a hint:
//! it makes berth ask the registry at once (one HEAD), and only the registry's answer moves a
//! tag, so a forged or replayed event cannot pin anything. Polling is the fallback, one request
//! per distinct tag per interval, and every answer is checked against every follower, so a pin
//! that disagrees with the registry is repaired. What a decision needs beyond the registry is
//! stored, not remembered: berth's record on the workload (its annotations) and the push times
//! in the repository's ledger, so a restarted or new leader decides the same way. A pin that
//! fails is tried again with backoff. Decisions are the pure functions of `crate::rollout`;
//! this file reads, calls them and applies.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, StatefulSet},
        batch::v1::CronJob,
        core::v1::{Namespace, ObjectReference, PodSpec},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::{NamespaceResourceScope, PartialObjectMeta},
    runtime::{
        WatchStreamExt,
        events::EventType,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use rand::Rng;
use serde::de::DeserializeOwned;
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use tokio_stream::StreamMap;

use super::Context;
use crate::{
    api::Registry,
    hosts,
    metrics::{ControllerLabels, RolloutLabels},
    namespaces::Namespaces,
    registry::{RegistryError, count_requests},
    repository::ledger,
    rollout::{self, Container, Digests, ImageRef, Kind, PollOutcome, Record, Schedule, Settings, TagKey, tag_key},
};

/// The field manager of every rollout patch: it owns the pinned image fields and berth's
/// annotations, nothing else.
pub const FIELD_MANAGER: &str = "berth-rollout";
const APPLY_CONCURRENCY: usize = 8;
/// A failed pin is tried again after 2 s, doubling to 5 min.
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// A registry event's claim: `path:tag` in the Registry named `registry` now points at
/// `digest`, pushed at `at` (unix ms). berth asks the registry before it believes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagMoved {
    pub registry: String,
    pub path: String,
    pub tag: String,
    pub digest: String,
    pub at: i64,
}

type WorkloadKey = (Kind, String, String);

/// A workload as the watch delivered it, reduced to what rollouts need.
struct View {
    key: WorkloadKey,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    annotations: BTreeMap<String, String>,
    containers: Vec<Container>,
    paused: bool,
    /// A Deployment whose current rollout exceeded its progress deadline.
    stuck: bool,
    /// The generation the Deployment's status describes.
    observed_generation: Option<i64>,
}

fn containers_of(spec: Option<&PodSpec>) -> Vec<Container> {
    let Some(spec) = spec else { return Vec::new() };
    let main = spec.containers.iter().map(|c| (c, false));
    let init = spec.init_containers.iter().flatten().map(|c| (c, true));
    main.chain(init)
        .filter_map(|(c, init)| Some(Container { name: c.name.clone(), image: c.image.clone()?, init }))
        .collect()
}

fn view<K: Resource>(kind: Kind, obj: &K, spec: Option<&PodSpec>) -> View {
    let meta = obj.meta();
    View {
        key: (kind, meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default()),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        generation: meta.generation,
        annotations: meta.annotations.clone().unwrap_or_default(),
        containers: containers_of(spec),
        paused: false,
        stuck: false,
        observed_generation: None,
    }
}

fn deployment_view(d: &Deployment) -> View {
    let spec = d.spec.as_ref();
    let mut v = view(Kind::Deployment, d, spec.and_then(|s| s.template.spec.as_ref()));
    v.paused = spec.and_then(|s| s.paused).unwrap_or(false);
    let status = d.status.as_ref();
    v.observed_generation = status.and_then(|s| s.observed_generation);
    let current = status.and_then(|s| s.observed_generation) >= d.metadata.generation;
    v.stuck = current
        && status.and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
        });
    v
}

enum Input {
    Applied(View),
    Deleted(WorkloadKey),
}

fn workload_stream<K>(api: Api<K>, to_view: fn(&K) -> View) -> BoxStream<'static, Input>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .filter_map(move |event| async move {
            match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => Some(Input::Applied(to_view(&o))),
                Ok(watcher::Event::Delete(o)) => Some(Input::Deleted(to_view(&o).key)),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "workload watch failed; retrying");
                    None
                }
            }
        })
        .boxed()
}

/// An opted-in workload.
struct Tracked {
    uid: Option<String>,
    /// The version berth decided on: a patch applies only to it, so a change someone made in
    /// between (`kubectl set image`) is never overwritten with a stale image.
    resource_version: Option<String>,
    settings: Settings,
    containers: Vec<Container>,
    /// berth's record, from the workload's annotations (with the generation its last pin made:
    /// only a rollout berth started is rolled back).
    record: Record,
    generation: Option<i64>,
    paused: bool,
    stuck: bool,
    observed_generation: Option<i64>,
    follows: Vec<TagKey>,
    /// The digest a "paused" event was last published for, so it is said once.
    paused_noted: Option<String>,
}

#[derive(Default)]
struct TagState {
    /// Where the registry last said the tag points.
    digest: Option<String>,
    /// The last push event, so a poll sent before it cannot move the tag back.
    heard_at: Option<Instant>,
    /// The last event's claim (digest, push time): when the registry confirms it, its time
    /// measures push-to-patch latency.
    hint: Option<(String, i64)>,
    /// How many times the registry was asked again because it did not point the tag at the
    /// last event's digest yet.
    rechecks: u32,
    /// A poll is under way; `true` when another must follow it (an event came meanwhile).
    in_flight: Option<bool>,
}

#[derive(Default)]
struct Tags(HashMap<TagKey, TagState>);

/// What `rollout::plan` reads: the registry's answers, and push times from the ledgers of the
/// repositories berth declares (Registry name, `path` -> digest -> unix ms).
struct Known<'a> {
    registries: &'a hosts::Index,
    tags: &'a Tags,
    pushed: &'a HashMap<(String, String), BTreeMap<String, i64>>,
}

impl Digests for Known<'_> {
    fn current(&self, image: &ImageRef) -> Option<&str> {
        self.tags.0.get(&tag_key(self.registries, image)?).and_then(|t| t.digest.as_deref())
    }

    fn pushed_at(&self, image: &ImageRef, digest: &str) -> Option<i64> {
        let registry = self.registries.registry(&image.host)?;
        self.pushed.get(&(registry.to_string(), image.path.clone())).and_then(|m| m.get(digest).copied())
    }
}

/// One patch to send.
struct Apply {
    key: WorkloadKey,
    uid: Option<String>,
    body: serde_json::Value,
    record: Record,
    pins: Vec<rollout::Pin>,
    rollback: bool,
    /// When the push that caused it happened (unix ms), for the latency histogram.
    pushed_at: Option<i64>,
}

struct PollResult {
    key: TagKey,
    started: Instant,
    result: Result<Option<String>, RegistryError>,
}

struct Rollouts {
    ctx: Arc<Context>,
    tracked: HashMap<WorkloadKey, Tracked>,
    followers: HashMap<TagKey, HashSet<WorkloadKey>>,
    tags: Tags,
    schedule: Schedule<TagKey>,
    /// Workload generations a Warning about malformed annotations was published for.
    warned: HashMap<WorkloadKey, Option<i64>>,
    /// Workloads whose pin failed: when to try again, and how many times it failed.
    retries: HashMap<WorkloadKey, (Instant, u32)>,
}

fn now_rfc3339() -> String {
    Timestamp::now().round(k8s_openapi::jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default()
}

impl Rollouts {
    /// Every host name (url hosts and aliases) of the Registries berth knows, and the Registry
    /// each belongs to.
    fn registries(&self) -> hosts::Index {
        let state = self.ctx.registries.state();
        hosts::Index::new(state.iter().map(|r| (r.metadata.name.as_deref().unwrap_or_default(), &r.spec)))
    }

    fn object_ref(key: &WorkloadKey, uid: Option<String>) -> ObjectReference {
        ObjectReference {
            api_version: Some(key.0.api_version().into()),
            kind: Some(key.0.as_str().into()),
            namespace: Some(key.1.clone()),
            name: Some(key.2.clone()),
            uid,
            ..Default::default()
        }
    }

    async fn publish(&self, key: &WorkloadKey, uid: Option<String>, type_: EventType, reason: &str, note: String) {
        super::publish_about(&self.ctx, &Self::object_ref(key, uid), (type_, reason, "Rollout"), note).await;
    }

    fn untrack(&mut self, key: &WorkloadKey) {
        if let Some(t) = self.tracked.remove(key) {
            for tag in t.follows {
                self.unfollow(&tag, key);
            }
        }
    }

    /// A namespace stopped opting in: its workloads are left as they are.
    fn untrack_namespace(&mut self, namespace: &str) {
        let keys: Vec<WorkloadKey> = self.tracked.keys().filter(|k| k.1 == namespace).cloned().collect();
        for key in keys {
            self.untrack(&key);
        }
        self.warned.retain(|k, _| k.1 != namespace);
    }

    fn unfollow(&mut self, tag: &TagKey, key: &WorkloadKey) {
        if let Some(set) = self.followers.get_mut(tag) {
            set.remove(key);
            if set.is_empty() {
                self.followers.remove(tag);
                self.schedule.unwatch(tag);
                self.tags.0.remove(tag);
            } else {
                self.reschedule(tag);
            }
        }
    }

    /// Polls a tag at the shortest interval any of its followers asked for.
    fn reschedule(&mut self, tag: &TagKey) {
        let interval = self
            .followers
            .get(tag)
            .into_iter()
            .flatten()
            .filter_map(|k| self.tracked.get(k))
            .fold(rollout::DEFAULT_POLL_INTERVAL.max(Duration::from_secs(3600 * 24)), |min, t| {
                min.min(t.settings.poll_interval)
            });
        self.schedule.watch(tag.clone(), interval, Instant::now());
    }

    /// A workload appeared or changed: track it (or stop), then roll back or pin as needed.
    async fn on_workload(&mut self, v: View) -> Vec<Apply> {
        let settings = match rollout::parse_settings(&v.annotations) {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.untrack(&v.key);
                self.warned.remove(&v.key);
                return Vec::new();
            }
            Err(message) => {
                self.untrack(&v.key);
                if self.warned.get(&v.key) != Some(&v.generation) {
                    self.warned.insert(v.key.clone(), v.generation);
                    self.publish(&v.key, v.uid.clone(), EventType::Warning, "InvalidRolloutAnnotation", message).await;
                }
                return Vec::new();
            }
        };
        if let Some(names) = &settings.containers
            && let Some(missing) = names.iter().find(|n| !v.containers.iter().any(|c| &c.name == *n))
            && self.warned.get(&v.key) != Some(&v.generation)
        {
            self.warned.insert(v.key.clone(), v.generation);
            let note = format!(
                "{} names container {missing:?}, which this workload does not have",
                rollout::CONTAINERS_ANNOTATION
            );
            self.publish(&v.key, v.uid.clone(), EventType::Warning, "InvalidRolloutAnnotation", note).await;
        }
        let registries = self.registries();
        let mut follows: Vec<TagKey> = v
            .containers
            .iter()
            .filter(|c| settings.containers.as_ref().is_none_or(|names| names.contains(&c.name)))
            .filter_map(|c| rollout::parse_image(&c.image).ok())
            .filter_map(|i| tag_key(&registries, &i))
            .collect();
        follows.sort();
        follows.dedup();
        let previous = self.tracked.get(&v.key).map(|t| (t.follows.clone(), t.paused_noted.clone()));
        let (old_follows, paused_noted) = previous.unwrap_or_default();
        self.tracked.insert(
            v.key.clone(),
            Tracked {
                uid: v.uid,
                resource_version: v.resource_version,
                record: Record::from_annotations(&v.annotations),
                generation: v.generation,
                settings,
                containers: v.containers,
                paused: v.paused,
                stuck: v.stuck,
                observed_generation: v.observed_generation,
                follows: follows.clone(),
                paused_noted,
            },
        );
        for tag in old_follows.iter().filter(|t| !follows.contains(t)) {
            self.unfollow(tag, &v.key);
        }
        for tag in &follows {
            self.followers.entry(tag.clone()).or_default().insert(v.key.clone());
            self.reschedule(tag);
        }
        if let Some(apply) = self.rollback(&v.key) {
            return vec![apply];
        }
        self.plan(&v.key, None).await.into_iter().collect()
    }

    /// The rollback of a stuck Deployment that asked for `berth.dev/rollback: auto`.
    fn rollback(&self, key: &WorkloadKey) -> Option<Apply> {
        let t = self.tracked.get(key)?;
        let ours = t.record.pinned_generation.is_some() && t.record.pinned_generation == t.observed_generation;
        if key.0 != Kind::Deployment || !t.settings.auto_rollback || !t.stuck || !ours {
            return None;
        }
        let (pins, record) = rollout::rollback(&t.containers, &t.record, &now_rfc3339())?;
        let mut body = rollout::apply_body(key.0, &key.1, &key.2, &t.containers, &pins, &record);
        body["metadata"]["resourceVersion"] = serde_json::json!(t.resource_version);
        Some(Apply { key: key.clone(), uid: t.uid.clone(), body, record, pins, rollback: true, pushed_at: None })
    }

    /// Push times of a repository berth declares, from its ledger (empty for others, or when
    /// the ledger cannot be read: then the registry's tag alone decides).
    async fn pushed_times(&self, registry: &str, path: &str) -> BTreeMap<String, i64> {
        let Some(repo) = self.ctx.repository_for_path(registry, path) else {
            return BTreeMap::new();
        };
        match ledger::load(&self.ctx.client, &repo).await {
            Ok(stored) => stored.ledger.pushed,
            Err(e) => {
                tracing::warn!(registry, repository = path, error = %e, "cannot read the ledger");
                BTreeMap::new()
            }
        }
    }

    /// The pins a workload needs now, if any; a paused Deployment gets an event instead.
    async fn plan(&mut self, key: &WorkloadKey, pushed_at: Option<i64>) -> Option<Apply> {
        let registries = self.registries();
        let known_host = |h: &str| registries.registry(h).is_some();
        let t = self.tracked.get(key)?;
        let none = HashMap::new();
        let known = Known { registries: &registries, tags: &self.tags, pushed: &none };
        let mut pins = rollout::plan(&t.containers, &t.settings, known_host, &known, &t.record.bad);
        if pins.iter().any(|p| p.previous_digest.is_some()) {
            // Never back to an older image: the ledgers say which is older (read only when a
            // pin would replace a digest, which is rare).
            let mut pushed = HashMap::new();
            for p in &pins {
                if let Ok(image) = rollout::parse_image(&p.image)
                    && let Some(registry) = registries.registry(&image.host)
                    && !pushed.contains_key(&(registry.to_string(), image.path.clone()))
                {
                    let times = self.pushed_times(registry, &image.path).await;
                    pushed.insert((registry.to_string(), image.path), times);
                }
            }
            let t = self.tracked.get(key)?;
            let known = Known { registries: &registries, tags: &self.tags, pushed: &pushed };
            pins = rollout::plan(&t.containers, &t.settings, known_host, &known, &t.record.bad);
        }
        let t = self.tracked.get(key)?;
        if pins.is_empty() {
            return None;
        }
        if t.paused {
            let target = pins[0].digest.clone();
            if t.paused_noted.as_deref() != Some(target.as_str()) {
                let uid = t.uid.clone();
                if let Some(t) = self.tracked.get_mut(key) {
                    t.paused_noted = Some(target.clone());
                }
                self.ctx.metrics.rollouts.get_or_create(&RolloutLabels { result: "paused" }).inc();
                let note =
                    format!("paused: not pinning {} to {target} until the Deployment is resumed", pins[0].container);
                self.publish(key, uid, EventType::Normal, "RolloutPaused", note).await;
            }
            return None;
        }
        let record = t.record.pinned(&pins, &now_rfc3339(), t.generation);
        let mut body = rollout::apply_body(key.0, &key.1, &key.2, &t.containers, &pins, &record);
        body["metadata"]["resourceVersion"] = serde_json::json!(t.resource_version);
        Some(Apply { key: key.clone(), uid: t.uid.clone(), body, record, pins, rollback: false, pushed_at })
    }

    /// A tag moved: every follower gets its plan.
    async fn on_tag(&mut self, tag: &TagKey, pushed_at: Option<i64>) -> Vec<Apply> {
        let keys: Vec<WorkloadKey> = self.followers.get(tag).into_iter().flatten().cloned().collect();
        let mut applies = Vec::new();
        for key in keys {
            if let Some(a) = self.plan(&key, pushed_at).await {
                applies.push(a);
            }
        }
        applies
    }

    /// Sends the patches (a few at a time) and records what happened.
    async fn apply(&mut self, applies: Vec<Apply>) {
        if applies.is_empty() || !self.ctx.leader.is_leader() {
            return;
        }
        let client = self.ctx.client.clone();
        let results: Vec<(Apply, Result<Applied, kube::Error>)> = futures::stream::iter(applies)
            .map(|a| {
                let client = client.clone();
                async move {
                    let r = patch(&client, &a.key, &a.body).await;
                    (a, r)
                }
            })
            .buffer_unordered(APPLY_CONCURRENCY)
            .collect()
            .await;
        for (a, result) in results {
            let what = a
                .pins
                .iter()
                .map(|p| match &p.previous_digest {
                    Some(prev) => format!("{} to {} (was {prev})", p.container, p.image),
                    None => format!("{} to {}", p.container, p.image),
                })
                .collect::<Vec<_>>()
                .join(", ");
            match result {
                Ok((generation, resource_version)) => {
                    self.retries.remove(&a.key);
                    if let Some(t) = self.tracked.get_mut(&a.key) {
                        t.resource_version = resource_version;
                        t.generation = generation;
                        for p in &a.pins {
                            if let Some(c) = t.containers.iter_mut().find(|c| c.name == p.container && c.init == p.init)
                            {
                                c.image = p.image.clone();
                            }
                        }
                        t.record = a.record.clone();
                    }
                    if let Some(at) = a.pushed_at {
                        let secs = (Timestamp::now().as_millisecond() - at).max(0) as f64 / 1000.0;
                        self.ctx.metrics.rollout_latency.observe(secs);
                    }
                    let (result, type_, reason, note) = if a.rollback {
                        (
                            "rolled_back",
                            EventType::Warning,
                            "RolledBack",
                            format!("progress deadline exceeded: rolled {what}"),
                        )
                    } else {
                        ("pinned", EventType::Normal, "Pinned", format!("pinned {what}"))
                    };
                    tracing::info!(workload = %format!("{} {}/{}", a.key.0.as_str(), a.key.1, a.key.2), "{note}");
                    self.ctx.metrics.rollouts.get_or_create(&RolloutLabels { result }).inc();
                    self.publish(&a.key, a.uid.clone(), type_, reason, note).await;
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    self.retries.remove(&a.key);
                    self.untrack(&a.key);
                }
                // Someone changed the workload since berth read it: the watch brings the new
                // version, and berth decides again on that (and once more shortly, in case the
                // new version arrived before this answer).
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::debug!(workload = %format!("{} {}/{}", a.key.0.as_str(), a.key.1, a.key.2), "changed meanwhile; deciding again");
                    self.retry_later(&a.key);
                }
                Err(e) => {
                    self.retry_later(&a.key);
                    self.ctx.metrics.rollouts.get_or_create(&RolloutLabels { result: "failed" }).inc();
                    tracing::warn!(workload = %format!("{} {}/{}", a.key.0.as_str(), a.key.1, a.key.2), error = %e, "cannot pin");
                    let note = format!("cannot pin {what}: {e}");
                    self.publish(&a.key, a.uid.clone(), EventType::Warning, "PinFailed", note).await;
                }
            }
        }
    }

    /// A failed pin is decided again later, with backoff.
    fn retry_later(&mut self, key: &WorkloadKey) {
        let failures = self.retries.get(key).map(|(_, n)| *n).unwrap_or(0) + 1;
        let delay = RETRY_FIRST.saturating_mul(1 << (failures - 1).min(8)).min(RETRY_MAX);
        self.retries.insert(key.clone(), (Instant::now() + delay, failures));
    }

    /// The workloads whose retry is due, decided again.
    async fn retry_due(&mut self) -> Vec<Apply> {
        let now = Instant::now();
        let due: Vec<WorkloadKey> =
            self.retries.iter().filter(|(_, (at, _))| *at <= now).map(|(k, _)| k.clone()).collect();
        let mut applies = Vec::new();
        for key in due {
            // Stays in `retries` (for its count) until a pin succeeds; pushed out meanwhile.
            if let Some((at, _)) = self.retries.get_mut(&key) {
                *at = now + RETRY_MAX;
            }
            match self.plan(&key, None).await {
                Some(a) => applies.push(a),
                None => {
                    self.retries.remove(&key);
                }
            }
        }
        applies
    }

    /// Starts the polls that are due (only the leader polls: followers keep their state warm).
    fn poll_due(&mut self, polls: &mut JoinSet<PollResult>) {
        if !self.ctx.leader.is_leader() {
            return;
        }
        for key in self.schedule.due(Instant::now()) {
            let registry = self.registry(&key.0);
            self.spawn_poll(key, registry, Duration::ZERO, polls);
        }
    }

    /// The Registry object of that name, if berth knows it.
    fn registry(&self, name: &str) -> Option<Arc<Registry>> {
        self.ctx.registries.get(&ObjectRef::new(name))
    }

    /// Asks the registry where a tag points (one HEAD), `after` a while. One poll per tag at a
    /// time: a request for another while one is under way runs once that one is done.
    fn spawn_poll(
        &mut self,
        key: TagKey,
        registry: Option<Arc<Registry>>,
        after: Duration,
        polls: &mut JoinSet<PollResult>,
    ) {
        let state = self.tags.0.entry(key.clone()).or_default();
        if state.in_flight.is_some() {
            state.in_flight = Some(true);
            return;
        }
        state.in_flight = Some(false);
        let ctx = self.ctx.clone();
        polls.spawn(async move {
            tokio::time::sleep(after).await;
            let started = Instant::now();
            let work = async {
                let Some(registry) = registry else {
                    return Err(RegistryError::Config(format!("no Registry {:?}", key.0)));
                };
                let backend = ctx.backend(&registry).await.map_err(|e| RegistryError::Config(e.to_string()))?;
                Ok(backend.resolve(&key.1, &key.2).await?.map(|d| d.digest))
            };
            let (result, requests) = count_requests(work).await;
            ctx.metrics.registry_requests.get_or_create(&ControllerLabels { controller: "rollout" }).inc_by(requests);
            PollResult { key, started, result }
        });
    }

    async fn on_poll(&mut self, p: PollResult, polls: &mut JoinSet<PollResult>) -> Vec<Apply> {
        let jitter = rand::rng().random::<f64>();
        let outcome = match &p.result {
            Ok(_) => PollOutcome::Answered,
            Err(RegistryError::Status { status: 429, .. }) => PollOutcome::RateLimited,
            Err(_) => PollOutcome::Failed,
        };
        self.schedule.done(&p.key, outcome, Instant::now(), jitter);
        let again = self.tags.0.get_mut(&p.key).and_then(|t| t.in_flight.take()).unwrap_or(false);
        if again && self.followers.contains_key(&p.key) {
            self.spawn_poll(p.key.clone(), self.registry(&p.key.0), Duration::ZERO, polls);
        }
        match p.result {
            Ok(answer) => {
                if !self.followers.contains_key(&p.key) {
                    return Vec::new();
                }
                let t = self.tags.0.entry(p.key.clone()).or_default();
                // A push event heard after this poll's request was sent: its own poll answers.
                if t.heard_at.is_some_and(|h| h > p.started) {
                    return Vec::new();
                }
                let pushed_at = t.hint.take_if(|(d, _)| answer.as_ref() == Some(d)).map(|(_, at)| at);
                // The registry does not point the tag at the event's digest (yet): Distribution
                // sends the event once the manifest is stored and writes the tag just after,
                // so ask again shortly, a few times (a poll already asked for will do).
                let mut recheck = None;
                if t.hint.is_some() && !again {
                    match rollout::recheck_delay(t.rechecks) {
                        Some(delay) => {
                            t.rechecks += 1;
                            recheck = Some(delay);
                        }
                        None => t.hint = None,
                    }
                }
                if let Some(digest) = &answer {
                    t.digest = Some(digest.clone());
                }
                if let Some(delay) = recheck {
                    self.spawn_poll(p.key.clone(), self.registry(&p.key.0), delay, polls);
                }
                if answer.is_none() {
                    return Vec::new();
                }
                // Every answer is checked against every follower: a pin that disagrees with the
                // registry (a failed patch, an edit, an old forged event) is repaired.
                self.on_tag(&p.key, pushed_at).await
            }
            Err(e) => {
                tracing::debug!(registry = %p.key.0, tag = %format!("{}:{}", p.key.1, p.key.2), error = %e, "poll failed");
                Vec::new()
            }
        }
    }

    /// A registry event says a followed tag moved: ask the registry now.
    fn on_moved(&mut self, m: TagMoved, polls: &mut JoinSet<PollResult>) {
        let key = (m.registry, m.path, m.tag);
        if !self.followers.contains_key(&key) {
            return;
        }
        self.schedule.heard(&key, Instant::now(), rand::rng().random::<f64>());
        let t = self.tags.0.entry(key.clone()).or_default();
        t.heard_at = Some(Instant::now());
        t.hint = Some((m.digest, m.at));
        t.rechecks = 0;
        if self.ctx.leader.is_leader() {
            let registry = self.registry(&key.0);
            self.spawn_poll(key, registry, Duration::ZERO, polls);
        }
    }
}

async fn patch_as<K>(
    client: &kube::Client,
    ns: &str,
    name: &str,
    body: &serde_json::Value,
) -> Result<Applied, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Api::<K>::namespaced(client.clone(), ns)
        .patch(name, &params, &Patch::Apply(body))
        .await
        .map(|o| (o.meta().generation, o.meta().resource_version.clone()))
}

/// The generation and resourceVersion a patch produced.
type Applied = (Option<i64>, Option<String>);

async fn patch(client: &kube::Client, key: &WorkloadKey, body: &serde_json::Value) -> Result<Applied, kube::Error> {
    let (kind, ns, name) = key;
    match kind {
        Kind::Deployment => patch_as::<Deployment>(client, ns, name, body).await,
        Kind::StatefulSet => patch_as::<StatefulSet>(client, ns, name, body).await,
        Kind::DaemonSet => patch_as::<DaemonSet>(client, ns, name, body).await,
        Kind::CronJob => patch_as::<CronJob>(client, ns, name, body).await,
    }
}

/// The four workload watches, over every namespace or one.
fn workload_streams(client: &kube::Client, ns: Option<&str>) -> BoxStream<'static, Input> {
    futures::stream::select_all([
        workload_stream(super::scoped::<Deployment>(client, ns), deployment_view),
        workload_stream(super::scoped::<StatefulSet>(client, ns), |o: &StatefulSet| {
            view(Kind::StatefulSet, o, o.spec.as_ref().and_then(|s| s.template.spec.as_ref()))
        }),
        workload_stream(super::scoped::<DaemonSet>(client, ns), |o: &DaemonSet| {
            view(Kind::DaemonSet, o, o.spec.as_ref().and_then(|s| s.template.spec.as_ref()))
        }),
        workload_stream(super::scoped::<CronJob>(client, ns), |o: &CronJob| {
            let spec =
                o.spec.as_ref().and_then(|s| s.job_template.spec.as_ref()).and_then(|s| s.template.spec.as_ref());
            view(Kind::CronJob, o, spec)
        }),
    ])
    .boxed()
}

/// Workloads are watched only while a namespace opts in (`berth.dev/rollouts: enabled`), as
/// `rollout::watch_changes` decides.
struct Watches {
    watched: Namespaces,
    enabled: BTreeSet<String>,
    streams: StreamMap<rollout::WatchKey, BoxStream<'static, Input>>,
}

impl Watches {
    /// The opted-in namespaces are now `now`; returns those that stopped.
    fn follow(&mut self, client: &kube::Client, now: BTreeSet<String>, writable: &Namespaces) -> Vec<String> {
        let changes = rollout::watch_changes(&self.watched, &self.enabled, &now);
        for key in changes.stop {
            self.streams.remove(&key);
        }
        for key in changes.start {
            let streams = workload_streams(client, key.as_deref());
            self.streams.insert(key, streams);
        }
        for ns in now.difference(&self.enabled).filter(|ns| !writable.allows(ns)) {
            tracing::warn!(namespace = %ns, namespaces = %writable, "namespace asks for rollouts, but berth is not installed for it");
        }
        let stopped = self.enabled.difference(&now).cloned().collect();
        self.enabled = now;
        stopped
    }
}

/// Runs the rollout controller until shutdown. `moved` carries push events from the events
/// endpoint; workloads are watched in `watched` only.
pub async fn run(
    ctx: Arc<Context>,
    watched: Namespaces,
    mut moved: mpsc::Receiver<TagMoved>,
    shutdown: watch::Receiver<bool>,
) {
    let client = ctx.client.clone();
    let (opted_in, writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let selector = format!("{}={}", rollout::NAMESPACE_LABEL, rollout::NAMESPACE_ENABLED);
    let mut namespaces =
        watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watcher::Config::default().labels(&selector))
            .default_backoff()
            .reflect(writer)
            .filter_map(|event| async move {
                match event {
                    Ok(_) => Some(()),
                    Err(e) => {
                        tracing::warn!(error = %e, "namespace watch failed; retrying");
                        None
                    }
                }
            })
            .boxed();
    let mut inputs = Watches { watched, enabled: BTreeSet::new(), streams: StreamMap::new() };
    let mut state = Rollouts {
        ctx,
        tracked: HashMap::new(),
        followers: HashMap::new(),
        tags: Tags::default(),
        schedule: Schedule::default(),
        warned: HashMap::new(),
        retries: HashMap::new(),
    };
    let mut polls = JoinSet::new();
    let mut leadership = state.ctx.leader.subscribe();
    let stop = super::stopped(shutdown);
    tokio::pin!(stop);
    loop {
        // Followers do not poll: their due tags would otherwise wake this loop at once, forever.
        let idle = Instant::now() + Duration::from_secs(60);
        let wake = if state.ctx.leader.is_leader() {
            let retry = state.retries.values().map(|(at, _)| *at).min();
            state.schedule.next_due().into_iter().chain(retry).min().unwrap_or(idle)
        } else {
            idle
        };
        let applies = tokio::select! {
            Some(()) = namespaces.next() => {
                let now = opted_in.state().iter().map(|n| n.name_any()).collect();
                for ns in inputs.follow(&client, now, &state.ctx.settings.namespaces) {
                    state.untrack_namespace(&ns);
                }
                Vec::new()
            }
            Some((_, input)) = inputs.streams.next() => match input {
                Input::Applied(v) if !inputs.enabled.contains(&v.key.1) => {
                    state.untrack(&v.key);
                    state.warned.remove(&v.key);
                    Vec::new()
                }
                Input::Applied(v) => state.on_workload(v).await,
                Input::Deleted(key) => {
                    state.untrack(&key);
                    state.warned.remove(&key);
                    Vec::new()
                }
            },
            Some(m) = moved.recv() => {
                state.on_moved(m, &mut polls);
                Vec::new()
            }
            Some(Ok(p)) = polls.join_next(), if !polls.is_empty() => state.on_poll(p, &mut polls).await,
            Ok(()) = leadership.changed() => {
                let leading = *leadership.borrow_and_update();
                if leading {
                    // Taking over: check every tag, then every follower against what is known.
                    state.schedule.all_due(Instant::now());
                    let keys: Vec<WorkloadKey> = state.tracked.keys().cloned().collect();
                    let mut applies = Vec::new();
                    for key in keys {
                        applies.extend(state.plan(&key, None).await);
                    }
                    applies
                } else {
                    Vec::new()
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                state.poll_due(&mut polls);
                state.retry_due().await
            }
            _ = &mut stop => return,
        };
        state.apply(applies).await;
    }
}
