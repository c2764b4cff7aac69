//! The rollout controller: workloads annotated `berth.dev/rollout: digest` follow their tags;
//! workloads annotated with a version policy (`semver:~1.4`, ...) follow the versions published
//! in their repositories.
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
//! that disagrees with the registry is repaired.
//!
//! Version policies follow repositories, not tags: one tags listing per repository per interval
//! (however many workloads follow it, at the shortest interval any asked for), and one HEAD for
//! each tag a policy picks whose digest berth does not know yet (for `newest-pushed`, each
//! matching tag: push times are kept by digest). A push event for a tag some follower's policy
//! considers is confirmed with one HEAD and then counts as listed, so a new version is pinned
//! without waiting for the next listing. What a decision needs beyond the registry is
//! stored, not remembered: berth's record on the workload (its annotations) and the push times
//! in the repository's ledger, so a restarted or new leader decides the same way. A pin that
//! fails is tried again with backoff. Decisions are the pure functions of `crate::rollout`;
//! this file reads, calls them and applies.
//!
//! The task that owns the state decides and never waits on the API server or the registry:
//! HEADs, ledger reads and patches (with their Events) run as tasks that report back. So when
//! many tags move at once, their followers are pinned side by side instead of each tag waiting
//! for the reads and patches of the tags before it. Ledger reads and patches are bounded
//! (`LEDGER_READ_CONCURRENCY`, `APPLY_CONCURRENCY`), and a workload has at most one read or
//! patch under way: what asks for it meanwhile is decided once that is done.
//!
//! The scan gate (`berth.dev/max-severity`, see `rollout::gate`) comes last: a pin the plan
//! chose goes through only once the digest's ImageScan (in the Repository that declares the
//! image's path) is Complete with no finding above the threshold. berth creates a missing
//! ImageScan itself (once per digest until it appears, is deleted, or the create is tried again
//! after a failure), so the gate works whatever the repository's scanning frequency. What holds
//! is written on the workload (`berth.dev/rollout-held`, with berth's other annotations) and
//! told once per digest. ImageScans are read from the store the scan controller shares (no
//! second watch of them); a held workload is decided again when its ImageScan changes.

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
    api::{Patch, PatchParams, PostParams},
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
    sync::{Semaphore, mpsc, watch},
    task::JoinSet,
};
use tokio_stream::StreamMap;

use super::Context;
use crate::{
    api::{ImageScan, Registry, Repository},
    hosts,
    metrics::{ControllerLabels, RolloutLabels},
    namespaces::Namespaces,
    registry::{RegistryError, count_requests},
    repository::ledger,
    rollout::{
        self, Candidate, Container, Digests, ImageRef, Kind, Policy, PollOutcome, Record, RepoKey, Schedule, Settings,
        TagKey,
        gate::{self, Verdict},
        repo_key, tag_key,
    },
    scanning::plan::new_image_scan,
};

/// The field manager of every rollout patch: it owns the pinned image fields and berth's
/// annotations, nothing else.
pub const FIELD_MANAGER: &str = "berth-rollout";
/// Patches in flight at once, over every workload and tag: a burst of moved tags is pinned in
/// parallel without flooding an API server that the cluster shares.
const APPLY_CONCURRENCY: usize = 8;
/// Events (`Pinned`, `PinFailed`, ...) being published at once. Apart from the patches, so
/// that in a burst the pins go first and the Events that tell of them follow.
const EVENT_CONCURRENCY: usize = 4;
/// Ledger reads in flight at once. A moved tag whose followers would replace a digest needs its
/// repository's push times (never back to an older image): one read per tag move, shared by
/// every follower, and a read may wait up to 100 ms for the API server's cache to catch up.
const LEDGER_READ_CONCURRENCY: usize = 4;
/// A failed pin is tried again after 2 s, doubling to 5 min.
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// How often the ImageScans that held pins wait on are looked at again. The shared ImageScan
/// store tells no one of a change, and a second watch of every ImageScan (with its findings)
/// would cost far more than looking up the few held ones.
const SCAN_CHECK_INTERVAL: Duration = Duration::from_secs(2);

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
    /// The tags it follows (`digest`).
    follows: Vec<TagKey>,
    /// The repositories it follows (a version policy).
    repos: Vec<RepoKey>,
    /// The digest a "paused" event was last published for, so it is said once.
    paused_noted: Option<String>,
    /// The scan gate's last word on each digest it holds: each is told once, and a refusal
    /// stands while the digest is scanned again.
    gate_noted: HashMap<String, Verdict>,
    /// The ImageScans its held pins wait on.
    waits_on: Vec<ScanKey>,
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
    /// A push time for `digest` from a push event the registry confirmed (unix ms, never later
    /// than when it was heard): what the repository's ledger records too, used for
    /// `newest-pushed` until the ledger has it.
    pushed: Option<(String, i64)>,
    /// When the registry last answered for this tag: a version policy pins a digest only if it
    /// was read within [`FRESH_FOR`] (a listing names tags, not digests, so a tag pushed again
    /// in place is seen this way, at the cost of one HEAD per pin).
    resolved_at: Option<Instant>,
    /// A decision asked for this digest: its answer decides the repository's followers again.
    requested: bool,
    /// Lookups that failed in a row, and when to ask again (backoff, per tag).
    failures: u32,
    retry_at: Option<Instant>,
}

/// A failed lookup of a tag a version policy needs is asked again after 5 s, doubling to an
/// hour at most (a listing decides again meanwhile).
fn lookup_backoff(failures: u32) -> Duration {
    Duration::from_secs(5u64 << failures.min(10)).min(Duration::from_secs(3600))
}

/// How recent a tag's digest must be for a version policy to pin it: the followers decided on
/// one answer are decided within milliseconds of it; a later pin (an edit, a retry) asks again.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// Most tags a repository listing is read with; past it, the rest are left out (with a
/// warning), so a hostile registry cannot grow berth's memory without bound.
const MAX_LISTED_TAGS: usize = 100_000;

/// A repository followed by version policies.
#[derive(Default)]
struct Listing {
    /// Its tags as last listed, and those push events made berth confirm since; `None` until
    /// the first listing.
    tags: Option<BTreeSet<String>>,
    /// Tags a push event made berth confirm, and when the registry confirmed them: a listing
    /// sent before keeps them.
    confirmed: Vec<(String, Instant)>,
    /// A listing is under way; `true` when another must follow it.
    in_flight: Option<bool>,
    /// A lookup answered something new while others of the repository were under way: its
    /// followers are decided when the last is back (with the push time of the event, if any).
    decide_after: bool,
    decide_pushed_at: Option<i64>,
    /// When the listing whose tags are known was sent.
    listed_at: Option<Instant>,
    /// Listed tags the registry then answered 404 for, and when: left out of listings sent
    /// before that answer.
    missing: HashMap<String, Instant>,
}

#[derive(Default)]
struct Tags(HashMap<TagKey, TagState>);

/// An ImageScan: (namespace, name).
type ScanKey = (String, String);

/// An ImageScan held pins wait on.
#[derive(Default)]
struct Waited {
    /// The scan as the gate last read it: a change decides the workloads again.
    seen: Option<gate::Scan>,
    workloads: HashSet<WorkloadKey>,
}

/// An ImageScan berth created (or is creating) for a held pin. Kept until the store shows the
/// scan, so it is created once, and tried again after a failure with backoff.
struct Create {
    failures: u32,
    /// When to try again; `None` while under way or done.
    retry_at: Option<Instant>,
    repository: Arc<Repository>,
    digest: String,
}

/// A failed ImageScan create is tried again after 5 s, doubling to 5 min.
fn create_backoff(failures: u32) -> Duration {
    Duration::from_secs(5u64 << failures.saturating_sub(1).min(6)).min(RETRY_MAX)
}

/// What a create came to; `None` when this replica stopped leading before sending it.
type CreateResult = (ScanKey, Option<Result<(), kube::Error>>);

/// What `rollout::plan` reads: the registry's answers, and push times from the ledgers of the
/// repositories berth declares (Registry name, `path` -> digest -> unix ms).
struct Known<'a> {
    registries: &'a hosts::Index,
    tags: &'a Tags,
    listings: &'a HashMap<RepoKey, Listing>,
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

    fn fresh(&self, image: &ImageRef) -> bool {
        let (Some(tag), Some(repo)) = (tag_key(self.registries, image), repo_key(self.registries, image)) else {
            return false;
        };
        let listed_at = self.listings.get(&repo).and_then(|l| l.listed_at);
        let resolved_at = self.tags.0.get(&tag).and_then(|t| t.resolved_at);
        resolved_at.is_some_and(|r| r.elapsed() <= FRESH_FOR && listed_at.is_none_or(|l| r >= l))
    }

    fn lookup_failing(&self, image: &ImageRef) -> bool {
        let now = Instant::now();
        tag_key(self.registries, image)
            .and_then(|k| self.tags.0.get(&k))
            .is_some_and(|t| t.retry_at.is_some_and(|at| at > now))
    }

    fn candidates(&self, image: &ImageRef) -> Option<Vec<Candidate>> {
        let (registry, path) = repo_key(self.registries, image)?;
        let listed = self.listings.get(&(registry.clone(), path.clone()))?.tags.as_ref()?;
        let ledger = self.pushed.get(&(registry.clone(), path.clone()));
        let mut key = (registry, path, String::new());
        Some(
            listed
                .iter()
                .map(|tag| {
                    key.2.clone_from(tag);
                    let state = self.tags.0.get(&key);
                    let digest = state.and_then(|s| s.digest.clone());
                    let pushed_at_ms = digest.as_ref().and_then(|d| {
                        let heard = state.and_then(|s| s.pushed.as_ref()).filter(|(pd, _)| pd == d).map(|(_, at)| *at);
                        ledger.and_then(|m| m.get(d).copied()).or(heard)
                    });
                    Candidate { tag: tag.clone(), digest, pushed_at_ms }
                })
                .collect(),
        )
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

struct ListResult {
    repo: RepoKey,
    started: Instant,
    result: Result<Vec<String>, RegistryError>,
}
/// Push times (digest -> unix ms) of the repositories a decision needed.
type PushTimes = HashMap<RepoKey, BTreeMap<String, i64>>;

/// Push times read for the workloads that wait on them, each with the push time of the tag
/// move that made it wait.
struct ReadResult {
    pushed: PushTimes,
    /// Repositories whose ledger could not be read.
    failed: Vec<RepoKey>,
    waiting: Vec<(WorkloadKey, Option<i64>)>,
}

/// A patch's outcome; `None` when this replica stopped leading before sending it.
type ApplyResult = (Apply, Option<Result<Applied, kube::Error>>);

/// Why a workload is decided (again).
#[derive(Clone, Copy, Debug, Default)]
struct Why {
    /// The workload itself changed: a stuck rollout may need rolling back.
    changed: bool,
    /// The push time of the tag move, for the latency histogram.
    pushed_at: Option<i64>,
}

impl Why {
    fn and(self, other: Why) -> Why {
        Why { changed: self.changed || other.changed, pushed_at: self.pushed_at.or(other.pushed_at) }
    }
}

struct Rollouts {
    ctx: Arc<Context>,
    tracked: HashMap<WorkloadKey, Tracked>,
    followers: HashMap<TagKey, HashSet<WorkloadKey>>,
    tags: Tags,
    schedule: Schedule<TagKey>,
    /// Workloads following each repository with a version policy, its listing and when to list
    /// it next.
    repo_followers: HashMap<RepoKey, HashSet<WorkloadKey>>,
    listings: HashMap<RepoKey, Listing>,
    list_schedule: Schedule<RepoKey>,
    /// HEADs under way per repository (the followers of a repository are decided once its
    /// last is back).
    lookups: HashMap<RepoKey, usize>,
    /// Push times read for `newest-pushed`, per repository, kept until its tags change: a
    /// workload's every status change would otherwise read the ledger again.
    ledgers: PushTimes,
    /// Workload generations a Warning about malformed annotations was published for.
    warned: HashMap<WorkloadKey, Option<i64>>,
    /// Workloads whose pin failed: when to try again, and how many times it failed.
    retries: HashMap<WorkloadKey, (Instant, u32)>,
    /// Workloads with a ledger read or a patch under way, and why they must be decided again
    /// once it is done (something asked meanwhile).
    busy: HashMap<WorkloadKey, Option<Why>>,
    /// Workloads that need these repositories' push times, gathered over one turn of the loop
    /// so that the followers of a moved tag share one read.
    to_read: BTreeMap<Vec<RepoKey>, Vec<(WorkloadKey, Option<i64>)>>,
    polls: JoinSet<PollResult>,
    lists: JoinSet<ListResult>,
    reads: JoinSet<ReadResult>,
    applies: JoinSet<ApplyResult>,
    read_permits: Arc<Semaphore>,
    apply_permits: Arc<Semaphore>,
    event_permits: Arc<Semaphore>,
    /// Tracked workloads with a scan gate (`berth.dev/max-severity`).
    gated: HashSet<WorkloadKey>,
    /// The shared ImageScan store has listed: before that, a missing scan may only be unread.
    scans_listed: bool,
    /// The ImageScans held pins wait on, and when to look at them again.
    waiting: HashMap<ScanKey, Waited>,
    next_scan_check: Instant,
    creates: HashMap<ScanKey, Create>,
    creating: JoinSet<CreateResult>,
    /// The scan gate's Events being published.
    events: JoinSet<()>,
}

/// What the pins of an apply did, for Events and logs.
fn describe(pins: &[rollout::Pin]) -> String {
    pins.iter()
        .map(|p| {
            let was = match (&p.previous_tag, &p.previous_digest) {
                (Some(tag), Some(prev)) => format!(" (was {tag}@{prev})"),
                (None, Some(prev)) => format!(" (was {prev})"),
                _ => String::new(),
            };
            let why = p.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default();
            format!("{} to {}{was}{why}", p.container, p.image)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn workload_name(key: &WorkloadKey) -> String {
    format!("{} {}/{}", key.0.as_str(), key.1, key.2)
}

/// When berth last pinned or rolled back the workload, as an upper bound of when what it runs
/// was pushed (unix ms; the record keeps seconds, rounded).
fn pinned_before(record: &Record) -> Option<i64> {
    let at: Timestamp = record.pinned_at.as_deref()?.parse().ok()?;
    Some(at.as_millisecond() + 1000)
}

/// What a registry answer means for the next poll of a tag or listing of a repository.
fn outcome<T>(result: &Result<T, RegistryError>) -> PollOutcome {
    match result {
        Ok(_) => PollOutcome::Answered,
        Err(RegistryError::Status { status: 429, .. }) => PollOutcome::RateLimited,
        Err(_) => PollOutcome::Failed,
    }
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
        self.gated.remove(key);
        if let Some(t) = self.tracked.remove(key) {
            for tag in t.follows {
                self.unfollow(&tag, key);
            }
            for repo in t.repos {
                self.unfollow_repo(&repo, key);
            }
            self.unwait(key, t.waits_on);
        }
    }

    fn unwait(&mut self, key: &WorkloadKey, scans: Vec<ScanKey>) {
        for scan in scans {
            if let Some(w) = self.waiting.get_mut(&scan) {
                w.workloads.remove(key);
                if w.workloads.is_empty() {
                    self.waiting.remove(&scan);
                }
            }
        }
    }

    /// The ImageScans a workload's held pins wait on are now `scans`, each as the gate read it.
    fn set_waits(&mut self, key: &WorkloadKey, scans: Vec<(ScanKey, Option<gate::Scan>)>) {
        let Some(t) = self.tracked.get_mut(key) else { return };
        let keys: Vec<ScanKey> = scans.iter().map(|(k, _)| k.clone()).collect();
        let old = std::mem::replace(&mut t.waits_on, keys);
        let gone: Vec<ScanKey> = old.into_iter().filter(|k| !scans.iter().any(|(s, _)| s == k)).collect();
        self.unwait(key, gone);
        for (scan, seen) in scans {
            let w = self.waiting.entry(scan).or_default();
            w.seen = seen;
            w.workloads.insert(key.clone());
        }
    }

    /// An ImageScan as the gate reads it, from the shared store.
    fn scan(&self, key: &ScanKey) -> Option<gate::Scan> {
        self.ctx.scans.get(&ObjectRef::new(&key.1).within(&key.0)).map(|s| gate::Scan::of(&s))
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
                if !self.repo_followers.contains_key(&(tag.0.clone(), tag.1.clone())) {
                    self.tags.0.remove(tag);
                }
            } else {
                self.reschedule(tag);
            }
        }
    }

    /// A workload stops following a repository; the last one takes its listing and the digests
    /// learnt for its tags along.
    fn unfollow_repo(&mut self, repo: &RepoKey, key: &WorkloadKey) {
        if let Some(set) = self.repo_followers.get_mut(repo) {
            set.remove(key);
            if set.is_empty() {
                self.repo_followers.remove(repo);
                self.list_schedule.unwatch(repo);
                self.listings.remove(repo);
                self.ledgers.remove(repo);
                let followers = &self.followers;
                self.tags.0.retain(|k, _| (&k.0, &k.1) != (&repo.0, &repo.1) || followers.contains_key(k));
            } else {
                self.reschedule_repo(repo);
            }
        }
    }

    /// The shortest poll interval any of `followers` asked for.
    fn shortest_interval(&self, followers: Option<&HashSet<WorkloadKey>>) -> Duration {
        followers
            .into_iter()
            .flatten()
            .filter_map(|k| self.tracked.get(k))
            .fold(rollout::DEFAULT_POLL_INTERVAL.max(Duration::from_secs(3600 * 24)), |min, t| {
                min.min(t.settings.poll_interval)
            })
    }

    /// Lists a repository at the shortest interval any of its followers asked for.
    fn reschedule_repo(&mut self, repo: &RepoKey) {
        let interval = self.shortest_interval(self.repo_followers.get(repo));
        self.list_schedule.watch(repo.clone(), interval, Instant::now());
    }

    /// Polls a tag at the shortest interval any of its followers asked for.
    fn reschedule(&mut self, tag: &TagKey) {
        let interval = self.shortest_interval(self.followers.get(tag));
        self.schedule.watch(tag.clone(), interval, Instant::now());
    }

    /// A workload appeared or changed: track it (or stop), then roll back or pin as needed.
    async fn on_workload(&mut self, v: View) {
        let settings = match rollout::parse_settings(&v.annotations) {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.untrack(&v.key);
                self.warned.remove(&v.key);
                return;
            }
            Err(message) => {
                self.untrack(&v.key);
                if self.warned.get(&v.key) != Some(&v.generation) {
                    self.warned.insert(v.key.clone(), v.generation);
                    self.publish(&v.key, v.uid.clone(), EventType::Warning, "InvalidRolloutAnnotation", message).await;
                }
                return;
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
        let images: Vec<ImageRef> = v
            .containers
            .iter()
            .filter(|c| settings.containers.as_ref().is_none_or(|names| names.contains(&c.name)))
            .filter_map(|c| rollout::parse_image(&c.image).ok())
            .collect();
        let (mut follows, mut repos): (Vec<TagKey>, Vec<RepoKey>) = if settings.policy.is_version() {
            (Vec::new(), images.iter().filter_map(|i| repo_key(&registries, i)).collect())
        } else {
            (images.iter().filter_map(|i| tag_key(&registries, i)).collect(), Vec::new())
        };
        follows.sort();
        follows.dedup();
        repos.sort();
        repos.dedup();
        if let Policy::NewestPushed(_) = settings.policy
            && let Some((registry, path)) = repos.iter().find(|(r, p)| self.ctx.repository_for_path(r, p).is_none())
            && self.warned.get(&v.key) != Some(&v.generation)
        {
            self.warned.insert(v.key.clone(), v.generation);
            let note = format!(
                "newest-pushed orders tags by push time, which berth records only for repositories it \
                 declares: declare a Repository for {path} in Registry {registry}, or use another policy"
            );
            self.publish(&v.key, v.uid.clone(), EventType::Warning, "InvalidRolloutAnnotation", note).await;
        }
        let previous = self.tracked.get_mut(&v.key).map(|t| {
            let noted = (t.paused_noted.clone(), std::mem::take(&mut t.gate_noted), std::mem::take(&mut t.waits_on));
            (t.follows.clone(), t.repos.clone(), noted)
        });
        let (old_follows, old_repos, (paused_noted, gate_noted, waits_on)) = previous.unwrap_or_default();
        if settings.max_severity.is_some() {
            self.gated.insert(v.key.clone());
        } else {
            self.gated.remove(&v.key);
        }
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
                repos: repos.clone(),
                paused_noted,
                gate_noted,
                waits_on,
            },
        );
        for tag in old_follows.iter().filter(|t| !follows.contains(t)) {
            self.unfollow(tag, &v.key);
        }
        for tag in &follows {
            self.followers.entry(tag.clone()).or_default().insert(v.key.clone());
            self.reschedule(tag);
        }
        for repo in old_repos.iter().filter(|r| !repos.contains(r)) {
            self.unfollow_repo(repo, &v.key);
        }
        for repo in &repos {
            self.repo_followers.entry(repo.clone()).or_default().insert(v.key.clone());
            self.reschedule_repo(repo);
        }
        self.decide(&v.key, Why { changed: true, pushed_at: None }, None).await;
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

    /// Decides what a workload needs now and starts it: a rollback, a pin, or nothing. A pin
    /// that replaces a digest first needs the push times of its repository (never back to an
    /// older image): the workload then waits for a ledger read made after this decision, and
    /// is decided again with it. A workload with a read or a patch under way is decided again
    /// once that is done, so its patches never race each other. Only the leader decides: a
    /// follower writes nothing, Events included.
    async fn decide(&mut self, key: &WorkloadKey, why: Why, pushed: Option<&PushTimes>) {
        if !self.ctx.leader.is_leader() || !self.tracked.contains_key(key) {
            return;
        }
        if let Some(again) = self.busy.get_mut(key) {
            *again = Some(again.map_or(why, |a| a.and(why)));
            return;
        }
        if why.changed
            && let Some(apply) = self.rollback(key)
        {
            self.start_apply(apply);
            return;
        }
        let registries = self.registries();
        let known_host = |h: &str| registries.registry(h).is_some();
        let Some(t) = self.tracked.get(key) else { return };
        // `newest-pushed` orders by push time: it reads its repositories' ledgers first.
        let newest = matches!(t.settings.policy, Policy::NewestPushed(_));
        if newest {
            let needed: Vec<RepoKey> = t
                .repos
                .iter()
                .filter(|repo| !self.ledgers.contains_key(*repo))
                .filter(|(registry, path)| self.ctx.repository_for_path(registry, path).is_some())
                .cloned()
                .collect();
            if !needed.is_empty() {
                self.busy.insert(key.clone(), None);
                self.to_read.entry(needed).or_default().push((key.clone(), why.pushed_at));
                return;
            }
        }
        let none = HashMap::new();
        let known = Known {
            registries: &registries,
            tags: &self.tags,
            listings: &self.listings,
            pushed: if newest { &self.ledgers } else { pushed.unwrap_or(&none) },
        };
        let rollout::Plan { pins, resolve, undecided } = rollout::plan_since(
            &t.containers,
            &t.settings,
            known_host,
            &known,
            &t.record.bad,
            pinned_before(&t.record),
        );
        // Digests a version policy needs: asked once each (a HEAD under way is not asked
        // again); the answer decides the repository's followers again.
        let now = Instant::now();
        for image in resolve {
            let Some(tag) = tag_key(&registries, &image) else { continue };
            let state = self.tags.0.entry(tag.clone()).or_default();
            if state.in_flight.is_none() && state.retry_at.is_none_or(|at| at <= now) {
                state.requested = true;
                let registry = self.registry(&tag.0);
                self.spawn_poll(tag, registry, Duration::ZERO);
            }
        }
        let Some(t) = self.tracked.get(key) else { return };
        if pins.is_empty() {
            self.retries.remove(key);
            // Nothing to pin: nothing is held either, but for containers the plan cannot
            // decide for yet (a restart that has not asked the registry yet lifts no hold).
            let gated = t.settings.max_severity.is_some();
            let kept = if gated { gate::kept(t.record.held.as_deref(), &undecided) } else { Vec::new() };
            if kept.is_empty() {
                self.set_waits(key, Vec::new());
                if let Some(t) = self.tracked.get_mut(key) {
                    t.gate_noted.clear();
                }
            }
            self.record_held(key, gate::held_annotation(kept));
            return;
        }
        // The repositories whose push times these pins need and this decision has not read
        // (repositories berth does not declare have no ledger: the registry's tag decides).
        let needed: BTreeSet<RepoKey> = pins
            .iter()
            .filter(|p| p.previous_digest.is_some() && !t.settings.policy.is_version())
            .filter_map(|p| rollout::parse_image(&p.image).ok())
            .filter_map(|i| Some((registries.registry(&i.host)?.to_string(), i.path)))
            .filter(|repo| pushed.is_none_or(|read| !read.contains_key(repo)))
            .filter(|(registry, path)| self.ctx.repository_for_path(registry, path).is_some())
            .collect();
        if !needed.is_empty() {
            self.busy.insert(key.clone(), None);
            self.to_read.entry(needed.into_iter().collect()).or_default().push((key.clone(), why.pushed_at));
            return;
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
            self.retries.remove(key);
            return;
        }
        let Some((pins, held)) = self.gate(key, pins, &undecided) else { return };
        let Some(t) = self.tracked.get(key) else { return };
        if pins.is_empty() {
            self.retries.remove(key);
            self.record_held(key, held);
            return;
        }
        let mut record = t.record.pinned(&pins, &now_rfc3339(), t.generation);
        record.held = held;
        let mut body = rollout::apply_body(key.0, &key.1, &key.2, &t.containers, &pins, &record);
        body["metadata"]["resourceVersion"] = serde_json::json!(t.resource_version);
        let apply = Apply {
            key: key.clone(),
            uid: t.uid.clone(),
            body,
            record,
            pins,
            rollback: false,
            pushed_at: why.pushed_at,
        };
        self.start_apply(apply);
    }

    /// The scan gate (`berth.dev/max-severity`): which of `pins` go through, and what to
    /// record as held for the others. Says what holds once per digest, and creates the
    /// ImageScans missing. `None` while the ImageScans are not listed yet (a missing one may
    /// only not be read yet): every gated workload is decided again once they are.
    fn gate(
        &mut self,
        key: &WorkloadKey,
        pins: Vec<rollout::Pin>,
        undecided: &[String],
    ) -> Option<(Vec<rollout::Pin>, Option<String>)> {
        let t = self.tracked.get(key)?;
        let Some(max) = t.settings.max_severity else {
            self.set_waits(key, Vec::new());
            if let Some(t) = self.tracked.get_mut(key) {
                t.gate_noted.clear();
            }
            return Some((pins, None));
        };
        if !self.scans_listed {
            return None;
        }
        let registries = self.registries();
        let mut allowed = Vec::new();
        let mut held = Vec::new();
        let mut waits = Vec::new();
        let mut missing = Vec::new();
        for pin in pins {
            // Planned pins are of images in a known registry.
            let image = rollout::parse_image(&pin.image).ok();
            let (registry, path) = image.as_ref().and_then(|i| repo_key(&registries, i)).unwrap_or_default();
            let verdict = match self.ctx.repository_for_path(&registry, &path) {
                None => gate::undeclared(&registry, &path),
                Some(repository) => {
                    let (namespace, name) = (repository.namespace().unwrap_or_default(), repository.name_any());
                    let target = gate::Target { namespace: &namespace, repository: &name, digest: &pin.digest };
                    let scan_key = (namespace.clone(), target.scan_name());
                    let scan = self.scan(&scan_key);
                    let verdict = gate::verdict(max, target, scan.as_ref());
                    if scan.is_some() {
                        self.creates.remove(&scan_key);
                    }
                    if verdict != Verdict::Allow {
                        if scan.is_none() {
                            missing.push((scan_key.clone(), repository.clone(), pin.digest.clone()));
                        }
                        waits.push((scan_key, scan));
                    }
                    verdict
                }
            };
            match verdict {
                Verdict::Allow => allowed.push(pin),
                verdict => held.push((pin, verdict)),
            }
        }
        let now = Instant::now();
        for (scan, repository, digest) in missing {
            if self.creates.get(&scan).is_none_or(|c| c.retry_at.is_some_and(|at| at <= now)) {
                self.start_create(scan, repository, digest);
            }
        }
        waits.sort_by(|a, b| a.0.cmp(&b.0));
        waits.dedup_by(|a, b| a.0 == b.0);
        self.set_waits(key, waits);
        let t = self.tracked.get(key)?;
        let uid = t.uid.clone();
        let mut entries = gate::kept(t.record.held.as_deref(), undecided);
        let mut noted: HashMap<String, Verdict> = HashMap::new();
        let mut tell = Vec::new();
        for (pin, verdict) in held {
            let verdict = gate::settle(t.gate_noted.get(&pin.digest), verdict);
            let (Some((reason, _)), Some(entry)) =
                (verdict.hold(), gate::held_entry(&pin.container, &pin.digest, &verdict))
            else {
                continue;
            };
            // Said before: by this replica (in this decision, for another container, or in an
            // earlier one), or (as the workload records it) by one before it.
            let reason_of = |v: Option<&Verdict>| v.and_then(Verdict::hold).map(|(r, _)| r);
            let said = reason_of(t.gate_noted.get(&pin.digest)) == Some(reason)
                || reason_of(noted.get(&pin.digest)) == Some(reason)
                || gate::was_held(t.record.held.as_deref(), &entry);
            if !said && let Some(note) = gate::note(&pin.container, &pin.image, &verdict) {
                let type_ = if verdict.is_warning() { EventType::Warning } else { EventType::Normal };
                tell.push((type_, reason, note, verdict.result()));
            }
            noted.insert(pin.digest.clone(), verdict);
            entries.push(entry);
        }
        if let Some(t) = self.tracked.get_mut(key) {
            t.gate_noted = noted;
        }
        for (type_, reason, note, result) in tell {
            if let Some(result) = result {
                self.ctx.metrics.rollouts.get_or_create(&RolloutLabels { result }).inc();
            }
            tracing::info!(workload = %workload_name(key), "{note}");
            // Each tells of another digest: its own Event, not a repeat of the last one's note.
            self.spawn_event(key, uid.clone(), (type_, reason), note, true);
        }
        Some((allowed, gate::held_annotation(entries)))
    }

    /// Writes what the scan gate holds (`berth.dev/rollout-held`) when it differs from what the
    /// workload records, with berth's other annotations and pinned images as they are.
    fn record_held(&mut self, key: &WorkloadKey, held: Option<String>) {
        let Some(t) = self.tracked.get(key) else { return };
        if t.record.held == held {
            return;
        }
        let mut record = t.record.clone();
        record.held = held;
        let mut body = rollout::apply_body(key.0, &key.1, &key.2, &t.containers, &[], &record);
        body["metadata"]["resourceVersion"] = serde_json::json!(t.resource_version);
        let apply = Apply {
            key: key.clone(),
            uid: t.uid.clone(),
            body,
            record,
            pins: Vec::new(),
            rollback: false,
            pushed_at: None,
        };
        self.start_apply(apply);
    }

    /// Creates the ImageScan of `digest` in `repository` for a held pin (at most
    /// `APPLY_CONCURRENCY` writes at a time, with the patches); the result comes back to
    /// `on_created`.
    fn start_create(&mut self, scan: ScanKey, repository: Arc<Repository>, digest: String) {
        let object = new_image_scan(&repository, &digest);
        let failures = self.creates.get(&scan).map_or(0, |c| c.failures);
        self.creates.insert(scan.clone(), Create { failures, retry_at: None, repository, digest });
        let ctx = self.ctx.clone();
        let permits = self.apply_permits.clone();
        self.creating.spawn(async move {
            let _permit = permits.acquire_owned().await;
            if !ctx.leader.is_leader() {
                return (scan, None);
            }
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
            let result = Api::<ImageScan>::namespaced(ctx.client.clone(), &scan.0).create(&params, &object).await;
            (scan, Some(result.map(|_| ())))
        });
    }

    /// An ImageScan create is done. Created (or there already): the store shows it shortly,
    /// and its waiting workloads are decided then. Failed: tried again with backoff, and the
    /// workloads waiting on it are told the first time.
    fn on_created(&mut self, (scan, result): CreateResult) {
        let Some(c) = self.creates.get_mut(&scan) else { return };
        let e = match result {
            None => {
                self.creates.remove(&scan);
                return;
            }
            Some(Ok(())) => {
                c.failures = 0;
                return;
            }
            Some(Err(kube::Error::Api(s))) if s.code == 409 => {
                c.failures = 0;
                return;
            }
            Some(Err(e)) => e,
        };
        c.failures += 1;
        c.retry_at = Some(Instant::now() + create_backoff(c.failures));
        let first = c.failures == 1;
        tracing::warn!(namespace = %scan.0, name = %scan.1, error = %e, "cannot create the ImageScan a rollout waits on");
        if first {
            let waiting: Vec<WorkloadKey> =
                self.waiting.get(&scan).into_iter().flat_map(|w| w.workloads.iter().cloned()).collect();
            for key in waiting {
                let uid = self.tracked.get(&key).and_then(|t| t.uid.clone());
                let note =
                    format!("cannot create ImageScan {}/{} to scan the image a pin waits on: {e}", scan.0, scan.1);
                self.spawn_event(&key, uid, (EventType::Warning, gate::SCAN_GATE_UNAVAILABLE), note, false);
            }
        }
    }

    /// Publishes an Event (at most `EVENT_CONCURRENCY` at a time) without waiting for it;
    /// `distinct`: a new Event, not folded into the series of the last one of that reason.
    fn spawn_event(
        &mut self,
        key: &WorkloadKey,
        uid: Option<String>,
        (type_, reason): (EventType, &'static str),
        note: String,
        distinct: bool,
    ) {
        let ctx = self.ctx.clone();
        let permits = self.event_permits.clone();
        let object = Self::object_ref(key, uid);
        self.events.spawn(async move {
            let _permit = permits.acquire_owned().await;
            if distinct {
                super::publish_distinct(&ctx, &object, (type_, reason, "Rollout"), note).await;
            } else {
                super::publish_about(&ctx, &object, (type_, reason, "Rollout"), note).await;
            }
        });
    }

    /// Creates tried again once their backoff is over, while a pin still waits on them and
    /// their Repository is still the one they were for.
    fn create_due(&mut self) {
        if !self.ctx.leader.is_leader() {
            return;
        }
        let now = Instant::now();
        let due: Vec<ScanKey> = self
            .creates
            .iter()
            .filter(|(_, c)| c.retry_at.is_some_and(|at| at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for scan in due {
            let Some(c) = self.creates.get(&scan) else { continue };
            let current = self
                .ctx
                .repositories
                .get(&ObjectRef::from_obj(c.repository.as_ref()))
                .filter(|r| r.uid() == c.repository.uid());
            match current {
                Some(repository) if self.waiting.contains_key(&scan) => {
                    let digest = c.digest.clone();
                    self.start_create(scan, repository, digest);
                }
                _ => {
                    self.creates.remove(&scan);
                }
            }
        }
    }

    /// The ImageScans held pins wait on, looked at again: the workloads of each that changed
    /// (as the gate reads it: phase, counts, failure) are decided again. A scan seen is no
    /// longer created; one gone is created again by the next decision.
    async fn check_scans(&mut self) {
        let now = Instant::now();
        if now < self.next_scan_check {
            return;
        }
        self.next_scan_check = now + SCAN_CHECK_INTERVAL;
        if !self.scans_listed || !self.ctx.leader.is_leader() {
            return;
        }
        let keys: Vec<ScanKey> = self.waiting.keys().cloned().collect();
        let mut decide = HashSet::new();
        for scan in keys {
            let current = self.scan(&scan);
            if current.is_some() {
                self.creates.remove(&scan);
            }
            if let Some(w) = self.waiting.get_mut(&scan)
                && w.seen != current
            {
                w.seen = current;
                decide.extend(w.workloads.iter().cloned());
            }
        }
        for key in decide {
            self.decide(&key, Why::default(), None).await;
        }
    }

    /// The shared ImageScan store has listed: the gated workloads, held until then, are decided.
    async fn on_scans_listed(&mut self) {
        self.scans_listed = true;
        let keys: Vec<WorkloadKey> = self.gated.iter().cloned().collect();
        for key in keys {
            self.decide(&key, Why::default(), None).await;
        }
    }

    /// A tag moved: every follower is decided.
    async fn on_tag(&mut self, tag: &TagKey, pushed_at: Option<i64>) {
        let keys: Vec<WorkloadKey> = self.followers.get(tag).into_iter().flatten().cloned().collect();
        for key in keys {
            self.decide(&key, Why { changed: false, pushed_at }, None).await;
        }
    }

    /// A followed repository's tags changed (listed, or a pushed tag confirmed): every
    /// follower is decided.
    async fn on_repo(&mut self, repo: &RepoKey, pushed_at: Option<i64>) {
        let keys: Vec<WorkloadKey> = self.repo_followers.get(repo).into_iter().flatten().cloned().collect();
        for key in keys {
            self.decide(&key, Why { changed: false, pushed_at }, None).await;
        }
    }

    /// Starts the ledger reads the decisions of this turn asked for: one per set of
    /// repositories, each read started after the decisions that wait on it.
    fn start_reads(&mut self) {
        for (needed, waiting) in std::mem::take(&mut self.to_read) {
            let repos: Vec<(RepoKey, Option<Arc<Repository>>)> =
                needed.into_iter().map(|r| (r.clone(), self.ctx.repository_for_path(&r.0, &r.1))).collect();
            let ctx = self.ctx.clone();
            let permits = self.read_permits.clone();
            self.reads.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let mut pushed = PushTimes::new();
                let mut failed = Vec::new();
                for ((registry, path), repo) in repos {
                    // Unreadable (or no longer declared): the registry's tag alone decides a
                    // `digest` pin; `newest-pushed` waits and asks again.
                    let times = match repo {
                        Some(repo) => ledger::load_pushed(&ctx.client, &repo).await.unwrap_or_else(|e| {
                            tracing::warn!(%registry, repository = %path, error = %e, "cannot read the ledger");
                            failed.push((registry.clone(), path.clone()));
                            BTreeMap::new()
                        }),
                        None => BTreeMap::new(),
                    };
                    pushed.insert((registry, path), times);
                }
                ReadResult { pushed, failed, waiting }
            });
        }
    }

    /// Push times arrived: the workloads that waited on them are decided with them.
    async fn on_read(&mut self, r: ReadResult) {
        for (repo, times) in &r.pushed {
            if !r.failed.contains(repo) && self.repo_followers.contains_key(repo) {
                self.ledgers.insert(repo.clone(), times.clone());
            }
        }
        for (key, pushed_at) in r.waiting {
            let asked = self.busy.remove(&key).flatten().unwrap_or_default();
            let newest = self.tracked.get(&key).filter(|t| matches!(t.settings.policy, Policy::NewestPushed(_)));
            if newest.is_some_and(|t| t.repos.iter().any(|repo| r.failed.contains(repo))) {
                self.retry_later(&key);
                continue;
            }
            self.decide(&key, asked.and(Why { changed: false, pushed_at }), Some(&r.pushed)).await;
        }
    }

    /// Sends one patch (at most `APPLY_CONCURRENCY` at a time), then publishes the Event that
    /// says what it did (at most `EVENT_CONCURRENCY` at a time); the result comes back to
    /// `on_applied`.
    fn start_apply(&mut self, a: Apply) {
        self.busy.insert(a.key.clone(), None);
        let ctx = self.ctx.clone();
        let permits = self.apply_permits.clone();
        let event_permits = self.event_permits.clone();
        self.applies.spawn(async move {
            let permit = permits.acquire_owned().await;
            if !ctx.leader.is_leader() {
                return (a, None);
            }
            let result = patch(&ctx.client, &a.key, &a.body).await;
            drop(permit);
            let what = describe(&a.pins);
            let object = Rollouts::object_ref(&a.key, a.uid.clone());
            let event = match &result {
                // Only the scan gate's record: nothing pinned, nothing to tell.
                Ok(_) if a.pins.is_empty() => None,
                Ok(_) => {
                    if let Some(at) = a.pushed_at {
                        let secs = (Timestamp::now().as_millisecond() - at).max(0) as f64 / 1000.0;
                        ctx.metrics.rollout_latency.observe(secs);
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
                    tracing::info!(workload = %workload_name(&a.key), "{note}");
                    ctx.metrics.rollouts.get_or_create(&RolloutLabels { result }).inc();
                    Some((type_, reason, note))
                }
                // Gone: nothing to say. Changed meanwhile: decided again on the new version.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => None,
                Err(e) if a.pins.is_empty() => {
                    tracing::warn!(workload = %workload_name(&a.key), error = %e, "cannot record what the scan gate holds");
                    None
                }
                Err(e) => {
                    ctx.metrics.rollouts.get_or_create(&RolloutLabels { result: "failed" }).inc();
                    tracing::warn!(workload = %workload_name(&a.key), error = %e, "cannot pin");
                    Some((EventType::Warning, "PinFailed", format!("cannot pin {what}: {e}")))
                }
            };
            if let Some((type_, reason, note)) = event {
                let _permit = event_permits.acquire_owned().await;
                // Each pin says what it pinned: its own Event. Failures repeat: a series.
                if type_ == EventType::Normal || reason == "RolledBack" {
                    super::publish_distinct(&ctx, &object, (type_, reason, "Rollout"), note).await;
                } else {
                    super::publish_about(&ctx, &object, (type_, reason, "Rollout"), note).await;
                }
            }
            (a, Some(result))
        });
    }

    /// A patch is done: record what it changed, or try again later; then decide again what
    /// asked meanwhile.
    async fn on_applied(&mut self, (a, result): ApplyResult) {
        let again = self.busy.remove(&a.key).flatten();
        // The watch delivered the workload while the patch was under way: a patch that
        // succeeded had the version berth last saw, so what came after is this patch's result
        // or newer (kube-controller-manager's status, someone's edit), and it is what berth
        // keeps. Putting this patch's version back would make every later patch a 409.
        let seen_since = again.is_some_and(|why| why.changed);
        match result {
            None => {}
            Some(Ok(_)) if seen_since => {
                self.retries.remove(&a.key);
            }
            Some(Ok((generation, resource_version))) => {
                self.retries.remove(&a.key);
                if let Some(t) = self.tracked.get_mut(&a.key) {
                    t.resource_version = resource_version;
                    t.generation = generation;
                    for p in &a.pins {
                        if let Some(c) = t.containers.iter_mut().find(|c| c.name == p.container && c.init == p.init) {
                            c.image = p.image.clone();
                        }
                    }
                    t.record = a.record.clone();
                }
            }
            Some(Err(kube::Error::Api(s))) if s.code == 404 => {
                self.retries.remove(&a.key);
                self.untrack(&a.key);
            }
            // Someone changed the workload since berth read it: the watch brings the new
            // version, and berth decides again on that (and once more shortly, in case the
            // new version arrived before this answer).
            Some(Err(kube::Error::Api(s))) if s.code == 409 => {
                tracing::debug!(workload = %workload_name(&a.key), "changed meanwhile; deciding again");
                self.retry_later(&a.key);
            }
            Some(Err(_)) => self.retry_later(&a.key),
        }
        if let Some(why) = again {
            self.decide(&a.key, why, None).await;
        }
    }

    /// A failed pin is decided again later, with backoff.
    fn retry_later(&mut self, key: &WorkloadKey) {
        let failures = self.retries.get(key).map(|(_, n)| *n).unwrap_or(0) + 1;
        let delay = RETRY_FIRST.saturating_mul(1 << (failures - 1).min(8)).min(RETRY_MAX);
        self.retries.insert(key.clone(), (Instant::now() + delay, failures));
    }

    /// The workloads whose retry is due, decided again.
    async fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<WorkloadKey> =
            self.retries.iter().filter(|(_, (at, _))| *at <= now).map(|(k, _)| k.clone()).collect();
        for key in due {
            // Stays in `retries` (for its count) until a pin succeeds or none is needed;
            // pushed out meanwhile.
            if let Some((at, _)) = self.retries.get_mut(&key) {
                *at = now + RETRY_MAX;
            }
            self.decide(&key, Why::default(), None).await;
        }
    }

    /// Starts the polls that are due (only the leader polls: followers keep their state warm).
    fn poll_due(&mut self) {
        if !self.ctx.leader.is_leader() {
            return;
        }
        for key in self.schedule.due(Instant::now()) {
            let registry = self.registry(&key.0);
            self.spawn_poll(key, registry, Duration::ZERO);
        }
        for repo in self.list_schedule.due(Instant::now()) {
            self.spawn_list(repo);
        }
    }

    /// Lists a repository's tags (every page). One listing per repository at a time: a request
    /// for another while one is under way runs once that one is done.
    fn spawn_list(&mut self, repo: RepoKey) {
        let listing = self.listings.entry(repo.clone()).or_default();
        if listing.in_flight.is_some() {
            listing.in_flight = Some(true);
            return;
        }
        listing.in_flight = Some(false);
        let registry = self.registry(&repo.0);
        let ctx = self.ctx.clone();
        self.lists.spawn(async move {
            let started = Instant::now();
            let work = async {
                let Some(registry) = registry else {
                    return Err(RegistryError::Config(format!("no Registry {:?}", repo.0)));
                };
                let backend = ctx.backend(&registry).await.map_err(|e| RegistryError::Config(e.to_string()))?;
                backend.poll_tags(&repo.1).await
            };
            let (result, requests) = count_requests(work).await;
            ctx.metrics.registry_requests.get_or_create(&ControllerLabels { controller: "rollout" }).inc_by(requests);
            ListResult { repo, started, result }
        });
    }

    /// A listing came back: it replaces the tags known (keeping those a push event confirmed
    /// after it was sent), the digests of tags no longer listed are forgotten, and the
    /// repository's followers are decided.
    async fn on_list(&mut self, l: ListResult) {
        self.list_schedule.done(&l.repo, outcome(&l.result), Instant::now(), rand::rng().random::<f64>());
        if !self.repo_followers.contains_key(&l.repo) {
            return;
        }
        let again = self.listings.get_mut(&l.repo).and_then(|x| x.in_flight.take()).unwrap_or(false);
        if again {
            self.spawn_list(l.repo.clone());
        }
        let tags = match l.result {
            Ok(tags) => tags,
            Err(e) => {
                tracing::debug!(registry = %l.repo.0, repository = %l.repo.1, error = %e, "listing tags failed");
                return;
            }
        };
        let listed = tags.len();
        let mut now: BTreeSet<String> =
            tags.into_iter().filter(|t| rollout::valid_tag(t)).take(MAX_LISTED_TAGS).collect();
        if now.len() < listed {
            tracing::warn!(registry = %l.repo.0, repository = %l.repo.1, listed, kept = now.len(),
                "the registry listed tags that are not valid tag names, or more than {MAX_LISTED_TAGS}: left out");
        }
        let listing = self.listings.entry(l.repo.clone()).or_default();
        listing.confirmed.retain(|(_, at)| *at > l.started);
        listing.missing.retain(|_, at| *at > l.started);
        now.extend(listing.confirmed.iter().map(|(t, _)| t.clone()));
        now.retain(|t| !listing.missing.contains_key(t));
        let gone: Vec<String> =
            listing.tags.as_ref().map(|old| old.difference(&now).cloned().collect()).unwrap_or_default();
        if listing.tags.as_ref() != Some(&now) {
            self.ledgers.remove(&l.repo);
        }
        listing.tags = Some(now);
        listing.listed_at = Some(l.started);
        for tag in gone {
            let key = (l.repo.0.clone(), l.repo.1.clone(), tag);
            if !self.followers.contains_key(&key) && self.tags.0.get(&key).is_none_or(|s| s.in_flight.is_none()) {
                self.tags.0.remove(&key);
            }
        }
        self.on_repo(&l.repo, None).await;
    }

    /// Where in its interval a tag's next poll goes: at random, except on a registry whose
    /// polls share one listing per repository (ECR), where every tag of a repository gets the
    /// same place, so that their polls fall due together and one DescribeImages answers them.
    fn jitter(&self, key: &TagKey) -> f64 {
        let shared = self.registry(&key.0).is_some_and(|r| r.spec.type_ == crate::api::RegistryType::Ecr);
        if !shared {
            return rand::rng().random::<f64>();
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&key.0, &key.1).hash(&mut h);
        (h.finish() % 10_000) as f64 / 10_000.0
    }

    /// The Registry object of that name, if berth knows it.
    fn registry(&self, name: &str) -> Option<Arc<Registry>> {
        self.ctx.registries.get(&ObjectRef::new(name))
    }

    /// Asks the registry where a tag points (one HEAD), `after` a while. One poll per tag at a
    /// time: a request for another while one is under way runs once that one is done.
    fn spawn_poll(&mut self, key: TagKey, registry: Option<Arc<Registry>>, after: Duration) {
        let state = self.tags.0.entry(key.clone()).or_default();
        if state.in_flight.is_some() {
            state.in_flight = Some(true);
            return;
        }
        state.in_flight = Some(false);
        *self.lookups.entry((key.0.clone(), key.1.clone())).or_default() += 1;
        let ctx = self.ctx.clone();
        self.polls.spawn(async move {
            tokio::time::sleep(after).await;
            let started = Instant::now();
            let work = async {
                let Some(registry) = registry else {
                    return Err(RegistryError::Config(format!("no Registry {:?}", key.0)));
                };
                let backend = ctx.backend(&registry).await.map_err(|e| RegistryError::Config(e.to_string()))?;
                Ok(backend.poll_tag(&key.1, &key.2).await?.map(|d| d.digest))
            };
            let (result, requests) = count_requests(work).await;
            ctx.metrics.registry_requests.get_or_create(&ControllerLabels { controller: "rollout" }).inc_by(requests);
            PollResult { key, started, result }
        });
    }

    /// A HEAD came back. A repository's followers are decided once the last of its lookups is
    /// back: `newest-pushed` first asks for every matching tag, and each answer would otherwise
    /// decide every follower again.
    async fn on_poll(&mut self, p: PollResult) {
        let repo: RepoKey = (p.key.0.clone(), p.key.1.clone());
        if let Some(n) = self.lookups.get_mut(&repo) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.lookups.remove(&repo);
            }
        }
        self.handle_poll(p).await;
        if !self.lookups.contains_key(&repo)
            && let Some(listing) = self.listings.get_mut(&repo)
            && std::mem::take(&mut listing.decide_after)
        {
            let pushed_at = listing.decide_pushed_at.take();
            self.on_repo(&repo, pushed_at).await;
        }
    }

    async fn handle_poll(&mut self, p: PollResult) {
        let jitter = self.jitter(&p.key);
        self.schedule.done(&p.key, outcome(&p.result), Instant::now(), jitter);
        let repo: RepoKey = (p.key.0.clone(), p.key.1.clone());
        let tag_followed = self.followers.contains_key(&p.key);
        let repo_followed = self.repo_followers.contains_key(&repo);
        let again = self.tags.0.get_mut(&p.key).and_then(|t| t.in_flight.take()).unwrap_or(false);
        if again && (tag_followed || repo_followed) {
            self.spawn_poll(p.key.clone(), self.registry(&p.key.0), Duration::ZERO);
        }
        match p.result {
            Ok(answer) => {
                if !tag_followed && !repo_followed {
                    self.tags.0.remove(&p.key);
                    return;
                }
                let t = self.tags.0.entry(p.key.clone()).or_default();
                // A push event heard after this poll's request was sent: its own poll answers.
                if t.heard_at.is_some_and(|h| h > p.started) {
                    return;
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
                let requested = std::mem::take(&mut t.requested);
                t.resolved_at = Some(Instant::now());
                t.failures = 0;
                t.retry_at = None;
                if let Some(digest) = answer {
                    if let Some(at) = pushed_at {
                        // The event's time, bounded by when it was heard.
                        t.pushed = Some((digest.clone(), at.min(Timestamp::now().as_millisecond())));
                    }
                    let moved = t.digest.as_ref() != Some(&digest);
                    t.digest = Some(digest);
                    // Every answer is checked against every follower: a pin that disagrees with
                    // the registry (a failed patch, an edit, an old forged event) is repaired.
                    if tag_followed {
                        self.on_tag(&p.key, pushed_at).await;
                    }
                    if repo_followed {
                        let listing = self.listings.entry(repo.clone()).or_default();
                        let listed = listing.tags.as_ref().is_some_and(|t| t.contains(&p.key.2));
                        listing.missing.remove(&p.key.2);
                        // Only a push event the registry confirmed adds a tag the listing lacks (a
                        // lookup for a tag a listing just dropped does not bring it back).
                        let added = !listed && pushed_at.is_some();
                        if added {
                            listing.confirmed.retain(|(t, _)| *t != p.key.2);
                            listing.confirmed.push((p.key.2.clone(), Instant::now()));
                            if let Some(tags) = &mut listing.tags {
                                tags.insert(p.key.2.clone());
                            }
                        }
                        if moved || added || requested {
                            listing.decide_after = true;
                            listing.decide_pushed_at = listing.decide_pushed_at.or(pushed_at);
                        }
                    }
                } else if repo_followed && !tag_followed {
                    // Gone (or not written yet): not a candidate until a listing sent after this
                    // answer, or a push event, names it again; its followers choose again.
                    t.digest = None;
                    let forget = t.hint.is_none() && recheck.is_none();
                    let listing = self.listings.entry(repo.clone()).or_default();
                    if let Some(tags) = listing.tags.as_mut()
                        && tags.remove(&p.key.2)
                    {
                        listing.decide_after = true;
                    }
                    listing.confirmed.retain(|(t, _)| *t != p.key.2);
                    listing.missing.insert(p.key.2.clone(), Instant::now());
                    listing.decide_after |= requested;
                    if forget && self.tags.0.get(&p.key).is_some_and(|t| t.in_flight.is_none()) {
                        self.tags.0.remove(&p.key);
                    }
                }
                if let Some(delay) = recheck {
                    self.spawn_poll(p.key.clone(), self.registry(&p.key.0), delay);
                }
            }
            Err(e) => {
                tracing::debug!(registry = %p.key.0, tag = %format!("{}:{}", p.key.1, p.key.2), error = %e, "poll failed");
                // A version policy's lookup: asked again after a backoff, not on every decision.
                if repo_followed && let Some(t) = self.tags.0.get_mut(&p.key) {
                    t.requested = false;
                    t.failures += 1;
                    t.retry_at = Some(Instant::now() + lookup_backoff(t.failures - 1));
                }
            }
        }
    }

    /// A registry event says a followed tag moved: ask the registry now.
    fn on_moved(&mut self, m: TagMoved) {
        if !rollout::valid_tag(&m.tag) {
            return;
        }
        let key = (m.registry, m.path, m.tag);
        let tag_followed = self.followers.contains_key(&key);
        // A version policy cares about a tag it would consider (or one it follows now, moved).
        let considered = self.repo_followers.get(&(key.0.clone(), key.1.clone())).is_some_and(|workloads| {
            let tracked = &self.tracked;
            let follows_now = self.tags.0.get(&key).is_some_and(|t| t.digest.is_some());
            follows_now || workloads.iter().any(|w| tracked.get(w).is_some_and(|t| t.settings.policy.considers(&key.2)))
        });
        if !tag_followed && !considered {
            return;
        }
        self.schedule.heard(&key, Instant::now(), rand::rng().random::<f64>());
        let t = self.tags.0.entry(key.clone()).or_default();
        t.heard_at = Some(Instant::now());
        t.hint = Some((m.digest, m.at));
        t.rechecks = 0;
        if self.ctx.leader.is_leader() {
            let registry = self.registry(&key.0);
            self.spawn_poll(key, registry, Duration::ZERO);
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
        repo_followers: HashMap::new(),
        listings: HashMap::new(),
        list_schedule: Schedule::default(),
        lookups: HashMap::new(),
        ledgers: HashMap::new(),
        warned: HashMap::new(),
        retries: HashMap::new(),
        busy: HashMap::new(),
        to_read: BTreeMap::new(),
        polls: JoinSet::new(),
        lists: JoinSet::new(),
        reads: JoinSet::new(),
        applies: JoinSet::new(),
        read_permits: Arc::new(Semaphore::new(LEDGER_READ_CONCURRENCY)),
        apply_permits: Arc::new(Semaphore::new(APPLY_CONCURRENCY)),
        event_permits: Arc::new(Semaphore::new(EVENT_CONCURRENCY)),
        gated: HashSet::new(),
        scans_listed: false,
        waiting: HashMap::new(),
        next_scan_check: Instant::now(),
        creates: HashMap::new(),
        creating: JoinSet::new(),
        events: JoinSet::new(),
    };
    let mut leadership = state.ctx.leader.subscribe();
    let stop = super::stopped(shutdown);
    tokio::pin!(stop);
    let scan_store = state.ctx.scans.clone();
    let scans_listed = async move { scan_store.wait_until_ready().await.is_ok() };
    tokio::pin!(scans_listed);
    let mut scans_waited = false;
    loop {
        // Followers do not poll: their due tags would otherwise wake this loop at once, forever.
        let idle = Instant::now() + Duration::from_secs(60);
        let wake = if state.ctx.leader.is_leader() {
            let retry = state.retries.values().map(|(at, _)| *at).min();
            let create = state.creates.values().filter_map(|c| c.retry_at).min();
            let check = (!state.waiting.is_empty()).then_some(state.next_scan_check);
            let list = state.list_schedule.next_due();
            let due = state.schedule.next_due().into_iter().chain(list).chain(retry).chain(create).chain(check);
            due.min().unwrap_or(idle)
        } else {
            idle
        };
        tokio::select! {
            Some(()) = namespaces.next() => {
                let now = opted_in.state().iter().map(|n| n.name_any()).collect();
                for ns in inputs.follow(&client, now, &state.ctx.settings.namespaces) {
                    state.untrack_namespace(&ns);
                }
            }
            Some((_, input)) = inputs.streams.next() => match input {
                Input::Applied(v) if !inputs.enabled.contains(&v.key.1) => {
                    state.untrack(&v.key);
                    state.warned.remove(&v.key);
                }
                Input::Applied(v) => state.on_workload(v).await,
                Input::Deleted(key) => {
                    state.untrack(&key);
                    state.warned.remove(&key);
                }
            },
            Some(m) = moved.recv() => state.on_moved(m),
            listed = &mut scans_listed, if !scans_waited => {
                scans_waited = true;
                if listed {
                    state.on_scans_listed().await;
                }
            }
            Some(Ok(c)) = state.creating.join_next(), if !state.creating.is_empty() => state.on_created(c),
            Some(_) = state.events.join_next(), if !state.events.is_empty() => {}
            Some(Ok(p)) = state.polls.join_next(), if !state.polls.is_empty() => state.on_poll(p).await,
            Some(Ok(l)) = state.lists.join_next(), if !state.lists.is_empty() => state.on_list(l).await,
            Some(Ok(r)) = state.reads.join_next(), if !state.reads.is_empty() => state.on_read(r).await,
            Some(Ok(a)) = state.applies.join_next(), if !state.applies.is_empty() => state.on_applied(a).await,
            Ok(()) = leadership.changed() => {
                let leading = *leadership.borrow_and_update();
                if leading {
                    // Taking over: check every tag, then every follower against what is known.
                    state.schedule.all_due(Instant::now());
                    state.list_schedule.all_due(Instant::now());
                    let keys: Vec<WorkloadKey> = state.tracked.keys().cloned().collect();
                    for key in keys {
                        state.decide(&key, Why::default(), None).await;
                    }
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                state.poll_due();
                state.retry_due().await;
                state.create_due();
                state.check_scans().await;
            }
            _ = &mut stop => return,
        }
        state.start_reads();
    }
}
