//! The lifecycle controller: applies a LifecyclePolicy to every Repository that references it,
//! every `interval` and at once after a change. The decision is `lifecycle::evaluate`; this file
//! gathers its inputs (tags, ledger, workloads) and carries out what it decided, safely:
//!
//! - a run that could not list everything (tags, index manifests, workloads) deletes nothing;
//! - an image a workload references, by digest or through a tag that resolves to it now, or
//!   whose tag the workload's version policy (`berth.dev/rollout`) selects, is never expired
//!   (`protectInUse`, default true);
//! - a multi-arch index and its children are one image: children of a kept index are never
//!   expired as untagged, and an expired index takes its children with it;
//! - at most `maxDeletionsPerRun` deletions per repository per run, oldest first; 404 is done.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};
use serde_json::json;

use super::{
    Context, Error, NotReady, publish,
    target::{self, Target},
};
use crate::{
    api::{LifecyclePolicy, LifecyclePolicyStatus, Repository},
    conditions, duration, hosts,
    lifecycle::{
        self, Decision, Image,
        in_use::{self, InUse, Reference},
    },
    metrics::{ControllerLabels, ErrorLabels, ExpiredLabels},
    registry::{Backend, Deleted, Descriptor, is_index},
    repository::{ledger, tags::is_referrer_tag},
    workloads,
};

pub const CONTROLLER: &str = "lifecycle";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
const DEFAULT_MAX_DELETIONS: usize = 1000;
const SHOWN: usize = 20;

/// What one run did to one repository.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepositoryRun {
    /// `<path>@<digest>` of what expired (or would, in a dry run), oldest first.
    pub expired: Vec<String>,
    /// Images the rules expired but a workload uses.
    pub protected: usize,
    /// Of those, images a version policy selects (and maybe also runs).
    pub selected: usize,
    /// `<path>@<digest> (why)` of the first protected images, oldest first.
    pub protected_images: Vec<String>,
    pub kept: usize,
    /// Expired images left for the next run (over `maxDeletionsPerRun`).
    pub deferred: usize,
    /// Expired images not deleted because they changed after the listing (a tag pushed onto
    /// them, a tag moved away, a workload started using them): the next run decides again.
    pub changed: usize,
    /// The repository is on ECR with `mode: Native`: ECR applies the rules, berth only reports
    /// (`protected` images are then at risk, not protected).
    pub native: bool,
}

/// Which digests workloads use in repository `path` of the registry pulled by `hosts` (under
/// any of its names), and why: by digest, through a tag resolved now, or as the tag their
/// version policy selects among `tags` (newest-pushed by the ledger's `pushed`, digest -> unix
/// ms); see [`in_use::in_use`]. A child of an index in use makes the index in use too. Pure.
pub fn protected_digests(
    uses: &[workloads::ImageUse],
    hosts: &[String],
    path: &str,
    tags: &BTreeMap<String, Descriptor>,
    pushed: &BTreeMap<String, i64>,
    children: &HashMap<String, Vec<String>>,
) -> InUse {
    let references: Vec<Reference<'_>> = uses
        .iter()
        .filter_map(|u| {
            // The same component boundary as deletion uses: `app2` and `app/sub` are not `app`.
            let rest = hosts::repository_suffix(&u.image, hosts, path)?;
            let (name, digest) = match rest.split_once('@') {
                Some((name, digest)) => (name, Some(digest)),
                None => (rest, None),
            };
            let tag = name.strip_prefix(':');
            Some(Reference { workload: &u.workload, tag, digest, rollout: u.rollout.as_deref(), bad: &u.bad_digests })
        })
        .collect();
    let by_tag: BTreeMap<&str, &str> = tags.iter().map(|(t, d)| (t.as_str(), d.digest.as_str())).collect();
    let mut out = in_use::in_use(&references, &by_tag, pushed);
    let parents: Vec<(String, Vec<in_use::Use>)> = children
        .iter()
        .filter_map(|(index, kids)| {
            let why: Vec<in_use::Use> = kids.iter().filter_map(|k| out.get(k)).flatten().cloned().collect();
            (!why.is_empty()).then(|| (index.clone(), why))
        })
        .collect();
    for (index, why) in parents {
        out.entry(index).or_default().extend(why);
    }
    out
}

/// The tags of the repository that point at `digest`.
fn tags_of(tags: &BTreeMap<String, Descriptor>, digest: &str) -> BTreeSet<String> {
    tags.iter().filter(|(_, d)| d.digest == digest).map(|(t, _)| t.clone()).collect()
}

/// Whether an expiry candidate is still what the run evaluated: the same tags point at it in
/// the fresh listing as in the first, no workload uses it now, and no push of it was heard
/// since the run began. Pure.
pub fn unchanged(
    digest: &str,
    listed: &BTreeMap<String, Descriptor>,
    fresh: &BTreeMap<String, Descriptor>,
    in_use_now: &InUse,
    pushed_since: impl Fn(&str) -> bool,
) -> bool {
    tags_of(listed, digest) == tags_of(fresh, digest) && !in_use_now.contains_key(digest) && !pushed_since(digest)
}

/// The images to evaluate: one per tagged digest (an index stands for its children), plus the
/// untagged digests the ledger knows that are not children of a tagged index. A referrers index
/// (tag `sha256-<hex>`: the SBOMs and signatures of an image) and what it lists are not images:
/// never counted, never expired. Pure.
pub fn images_for_evaluation(
    tags: &BTreeMap<String, Descriptor>,
    children: &HashMap<String, Vec<String>>,
    pushed: &BTreeMap<String, i64>,
    now_ms: i64,
) -> Vec<Image> {
    let mut by_digest: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut referrer_indexes: BTreeSet<&str> = BTreeSet::new();
    for (tag, d) in tags {
        if is_referrer_tag(tag) {
            referrer_indexes.insert(d.digest.as_str());
            continue;
        }
        by_digest.entry(d.digest.as_str()).or_default().push(tag.clone());
    }
    let child_digests: BTreeSet<&str> = children.values().flatten().map(String::as_str).collect();
    let time = |d: &str| pushed.get(d).copied().unwrap_or(now_ms);
    let mut images: Vec<Image> =
        by_digest.into_iter().map(|(d, tags)| Image { digest: d.to_string(), tags, pushed_at_ms: time(d) }).collect();
    let tagged: BTreeSet<String> = images.iter().map(|i| i.digest.clone()).collect();
    for d in pushed.keys() {
        if !tagged.contains(d) && !child_digests.contains(d.as_str()) && !referrer_indexes.contains(d.as_str()) {
            images.push(Image { digest: d.clone(), tags: vec![], pushed_at_ms: time(d) });
        }
    }
    images
}

pub async fn reconcile(policy: Arc<LifecyclePolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.leader.is_leader() {
        // A follower keeps its caches warm; the leader reconciles (all at once when it takes over).
        return Ok(Action::await_change());
    }
    let started = std::time::Instant::now();
    let labels = ControllerLabels { controller: CONTROLLER };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let generation = policy.metadata.generation;
    let previous = policy.status.clone().unwrap_or_default();
    let interval = duration::parse_or(policy.spec.interval.as_deref(), DEFAULT_INTERVAL).unwrap_or(DEFAULT_INTERVAL);

    let mut status = LifecyclePolicyStatus {
        observed_generation: generation,
        rule_count: Some(policy.spec.rules.len() as i32),
        ..previous.clone()
    };
    let parsed = match lifecycle::policy_from_spec(&policy.spec) {
        Ok(p) => p,
        Err(e) => {
            status.conditions = conditions::merge(
                &previous.conditions,
                conditions::ready(false, "InvalidPolicy", e.to_string(), generation),
            );
            write_status(&ctx, &policy, &previous, status).await?;
            return Ok(Action::requeue(interval));
        }
    };
    // Read from the API, not the shared cache: the change that triggered this run may not have
    // reached the cache yet.
    let repos: Vec<Repository> = Api::<Repository>::namespaced(ctx.client.clone(), &ns)
        .list(&kube::api::ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| {
            r.metadata.deletion_timestamp.is_none()
                && r.spec.lifecycle_policy_ref.as_ref().is_some_and(|p| p.name == name)
        })
        .collect();

    tracing::info!(policy = %format!("{ns}/{name}"), repositories = repos.len(), dry_run = policy.spec.dry_run, "lifecycle run");
    // On ECR the Repository controller puts a Native policy on (or takes it off) the
    // repository: it is the one writer of an ECR repository's settings.
    for repo in &repos {
        if repo.status.as_ref().is_some_and(|s| s.ecr.is_some()) {
            let _ = ctx.triggers.repositories.try_send(kube::runtime::reflector::ObjectRef::from_obj(repo));
        }
    }
    let in_use = if policy.spec.protect_in_use && !repos.is_empty() {
        match workloads::images_in_use(&ctx.client).await {
            Ok(u) => Some(u),
            Err(e) => {
                // Without the workload list nothing is safe to delete.
                let message = format!("cannot list workloads, so nothing was deleted: {e}");
                status.conditions = conditions::merge(
                    &previous.conditions,
                    conditions::ready(false, "WorkloadsUnavailable", message, generation),
                );
                write_status(&ctx, &policy, &previous, status).await?;
                return Ok(Action::requeue(ctx.failure_backoff(&format!("lifecycle/{ns}/{name}"))));
            }
        }
    } else {
        None
    };
    let in_use = in_use.unwrap_or_default();

    let mut totals = RepositoryRun::default();
    let mut failures: Vec<(String, NotReady)> = Vec::new();
    for repo in &repos {
        match run_repository(&policy, &parsed, repo, &ctx, &in_use).await {
            Ok(run) => {
                if run.native {
                    if run.protected > 0 {
                        let note = format!(
                            "ECR applies LifecyclePolicy {name} itself (mode: Native) and will expire {} images that workloads use: {}",
                            run.protected,
                            run.protected_images.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
                        );
                        publish(&ctx, repo, EventType::Warning, "InUseImagesAtRisk", note).await;
                    }
                } else if !run.expired.is_empty() {
                    let verb = if policy.spec.dry_run { "would expire" } else { "expired" };
                    let mut note = format!("LifecyclePolicy {name} {verb} {} images", run.expired.len());
                    if run.protected > 0 {
                        let mut kept: Vec<&str> = run.protected_images.iter().take(3).map(String::as_str).collect();
                        let more = format!("and {} more", run.protected - kept.len());
                        if run.protected > kept.len() {
                            kept.push(&more);
                        }
                        note.push_str(&format!("; kept {} that workloads use: {}", run.protected, kept.join("; ")));
                    }
                    publish(&ctx, repo, EventType::Normal, "ImagesExpired", note).await;
                }
                totals.expired.extend(run.expired);
                totals.protected += run.protected;
                totals.selected += run.selected;
                totals.kept += run.kept;
                totals.deferred += run.deferred;
                totals.changed += run.changed;
                totals.native |= run.native;
            }
            Err(e) => failures.push((repo.name_any(), e)),
        }
    }
    let outcome = if policy.spec.dry_run || totals.native { "dry_run" } else { "deleted" };
    ctx.metrics.lifecycle_expired.get_or_create(&ExpiredLabels { outcome }).inc_by(totals.expired.len() as u64);
    ctx.metrics
        .lifecycle_expired
        .get_or_create(&ExpiredLabels { outcome: "protected" })
        .inc_by(totals.protected as u64);

    status.last_run_at = Some(Time(Timestamp::now()));
    status.expired_count = Some(totals.expired.len() as i64);
    status.protected_count = Some(totals.protected as i64);
    status.kept_count = Some(totals.kept as i64);
    status.expired_images = totals.expired.iter().take(SHOWN).cloned().collect();
    let ready = match failures.first() {
        None if totals.native => conditions::ready(
            true,
            "Native",
            format!(
                "ECR applies the rules itself (mode: Native) to {} repositories: images that workloads use are NOT protected, and dryRun and maxDeletionsPerRun do not apply; by berth's evaluation {} images are due to expire, {} of them in use",
                repos.len(),
                totals.expired.len(),
                totals.protected
            ),
            generation,
        ),
        None => {
            let mode = if policy.spec.dry_run { "dry run: nothing deleted; " } else { "" };
            let mut deferred = if totals.deferred > 0 {
                format!(", {} left for the next run", totals.deferred)
            } else {
                String::new()
            };
            if totals.changed > 0 {
                deferred.push_str(&format!(", {} changed since the listing and kept for now", totals.changed));
            }
            let selected = if totals.selected > 0 {
                format!(" ({} selected by a version policy)", totals.selected)
            } else {
                String::new()
            };
            conditions::ready(
                true,
                if policy.spec.dry_run { "DryRun" } else { "Succeeded" },
                format!(
                    "{mode}{} repositories: {} expired, {} protected{selected}, {} kept{deferred}",
                    repos.len(),
                    totals.expired.len(),
                    totals.protected,
                    totals.kept
                ),
                generation,
            )
        }
        Some((repo, e)) => {
            ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { controller: CONTROLLER, reason: e.reason }).inc();
            conditions::ready(
                false,
                e.reason,
                format!(
                    "Repository {repo}: {} (nothing deleted there); {} of {} repositories failed",
                    e.message,
                    failures.len(),
                    repos.len()
                ),
                generation,
            )
        }
    };
    status.conditions = conditions::merge(&previous.conditions, ready);
    if !totals.expired.is_empty() && !totals.native {
        let reason = if policy.spec.dry_run { "DryRun" } else { "ImagesExpired" };
        let verb = if policy.spec.dry_run { "would expire" } else { "expired" };
        let note = format!("{} images {verb}", totals.expired.len());
        super::publish_about(&ctx, &policy.object_ref(&()), (EventType::Normal, reason, "Expire"), note).await;
    }
    write_status(&ctx, &policy, &previous, status).await?;
    ctx.metrics.reconcile_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    let requeue =
        if totals.deferred > 0 || totals.changed > 0 { interval.min(Duration::from_secs(60)) } else { interval };
    Ok(Action::requeue(requeue))
}

async fn write_status(
    ctx: &Context,
    policy: &LifecyclePolicy,
    previous: &LifecyclePolicyStatus,
    status: LifecyclePolicyStatus,
) -> Result<(), Error> {
    if &status == previous {
        return Ok(());
    }
    let patch = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "LifecyclePolicy", "status": status});
    Api::<LifecyclePolicy>::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default())
        .patch_status(&policy.name_any(), &PatchParams::apply("berth-status").force(), &Patch::Apply(patch))
        .await?;
    Ok(())
}

/// The children of every index among the tagged manifests (one GET per index).
async fn index_children(
    backend: &dyn Backend,
    path: &str,
    tags: &BTreeMap<String, Descriptor>,
) -> Result<HashMap<String, Vec<String>>, Error> {
    let mut children = HashMap::new();
    let indexes: BTreeSet<&str> =
        tags.values().filter(|d| is_index(&d.media_type)).map(|d| d.digest.as_str()).collect();
    for digest in indexes {
        let manifest = backend.manifest(path, digest).await?;
        let value: serde_json::Value = serde_json::from_slice(&manifest.body)
            .map_err(|e| crate::registry::RegistryError::Protocol(format!("index {digest}: {e}")))?;
        let kids = value["manifests"]
            .as_array()
            .map(|m| m.iter().filter_map(|c| c["digest"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        children.insert(digest.to_string(), kids);
    }
    Ok(children)
}

async fn run_repository(
    policy: &LifecyclePolicy,
    parsed: &lifecycle::Policy,
    repo: &Repository,
    ctx: &Context,
    in_use: &[workloads::ImageUse],
) -> Result<RepositoryRun, NotReady> {
    let target = target::target(repo, ctx)?;
    let backend = ctx.backend(&target.registry).await.map_err(|e| NotReady::from(&e))?;
    let (result, sent) =
        crate::registry::count_requests(run_in(policy, parsed, repo, ctx, in_use, &target, backend.as_ref())).await;
    ctx.metrics.registry_requests.get_or_create(&ControllerLabels { controller: CONTROLLER }).inc_by(sent);
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_in(
    policy: &LifecyclePolicy,
    parsed: &lifecycle::Policy,
    repo: &Repository,
    ctx: &Context,
    in_use: &[workloads::ImageUse],
    target: &Target,
    backend: &dyn Backend,
) -> Result<RepositoryRun, NotReady> {
    let kube_err = |e: kube::Error| NotReady::from(&Error::Kube(e));
    let started = std::time::Instant::now();
    let listed = listing(backend, &target.path, ctx.settings.registry_concurrency).await?;
    let tags = listed.tags.clone();
    let children = index_children(backend, &target.path, &tags)
        .await
        .map_err(|e| NotReady::new("ListFailed", format!("reading an index failed: {e}")))?;
    // A registry that records push times (ECR) is the record; otherwise berth's ledger is.
    let stored = match &listed.pushed {
        Some(_) => ledger::Stored::default(),
        None => ledger::load(&ctx.client, repo).await.map_err(kube_err)?,
    };
    let all_pushed = listed.pushed.clone().unwrap_or_else(|| stored.ledger.pushed.clone());
    let native = policy.spec.mode == crate::api::LifecycleMode::Native && backend.ecr().is_some();
    let now = Timestamp::now().as_millisecond();
    // The SBOMs berth attached are artifacts about images, not images: never expired on their
    // own (on a registry with the referrers API they are untagged manifests).
    let sboms = super::scan::sboms_of(ctx, repo);
    let pushed: BTreeMap<String, i64> =
        all_pushed.iter().filter(|(d, _)| !sboms.contains(*d)).map(|(d, t)| (d.clone(), *t)).collect();
    let images = images_for_evaluation(&tags, &children, &pushed, now);
    let decisions = lifecycle::evaluate(parsed, &images, now);
    let protected = protected_digests(in_use, &target.hosts, &target.path, &tags, &all_pushed, &children);

    let mut run = RepositoryRun { native, ..Default::default() };
    let mut expire: Vec<&Image> = Vec::new();
    let mut kept_in_use: Vec<(&Image, String)> = Vec::new();
    for (image, decision) in images.iter().zip(&decisions) {
        match decision {
            Decision::Expired { .. } => match protected.get(&image.digest) {
                Some(why) => {
                    run.protected += 1;
                    run.selected += usize::from(why.iter().any(in_use::Use::selected));
                    kept_in_use.push((image, in_use::summary(why, 3)));
                }
                None => expire.push(image),
            },
            Decision::Kept => run.kept += 1,
        }
    }
    if !kept_in_use.is_empty() {
        kept_in_use.sort_by(|(a, _), (b, _)| a.pushed_at_ms.cmp(&b.pushed_at_ms).then(a.digest.cmp(&b.digest)));
        let shown: Vec<String> =
            kept_in_use.iter().take(SHOWN).map(|(i, why)| format!("{}@{} ({why})", target.path, i.digest)).collect();
        tracing::info!(
            policy = %format!("{}/{}", policy.namespace().unwrap_or_default(), policy.name_any()),
            repository = %target.path,
            protected = run.protected,
            images = %shown.join("; "),
            "kept images a rule expires because workloads use them"
        );
        run.protected_images = shown;
    }
    expire.sort_by(|a, b| a.pushed_at_ms.cmp(&b.pushed_at_ms).then(a.digest.cmp(&b.digest)));
    let max = policy.spec.max_deletions_per_run.map(|m| m.max(1) as usize).unwrap_or(DEFAULT_MAX_DELETIONS);
    if expire.len() > max {
        run.deferred = expire.len() - max;
        expire.truncate(max);
    }
    if native {
        // ECR expires what its rules say, in use or not: every image the rules expire counts.
        expire.extend(kept_in_use.iter().map(|(i, _)| *i));
        expire.sort_by(|a, b| a.pushed_at_ms.cmp(&b.pushed_at_ms).then(a.digest.cmp(&b.digest)));
        run.deferred = 0;
    }
    if policy.spec.dry_run || native || expire.is_empty() {
        run.expired = expire.iter().map(|i| format!("{}@{}", target.path, i.digest)).collect();
        return Ok(run);
    }
    // Look again right before deleting: Distribution deletes every tag of a digest, so a tag
    // pushed onto an expiring image meanwhile would go with it. A candidate whose tags changed,
    // that a registry event says was pushed since the listing, or that a workload uses now,
    // stays for the next run to decide.
    let fresh = listing(backend, &target.path, ctx.settings.registry_concurrency)
        .await
        .map_err(|e| NotReady::new("ListFailed", format!("listing the repository again failed: {}", e.message)))?
        .tags;
    let fresh_protected = if policy.spec.protect_in_use {
        let uses = workloads::images_in_use(&ctx.client).await.map_err(|e| {
            NotReady::new("WorkloadsUnavailable", format!("cannot list workloads, so nothing was deleted: {e}"))
        })?;
        protected_digests(&uses, &target.hosts, &target.path, &fresh, &all_pushed, &children)
    } else {
        InUse::new()
    };
    let registry = target.registry.name_any();
    let before = expire.len();
    expire.retain(|image| {
        unchanged(&image.digest, &tags, &fresh, &fresh_protected, |d| {
            ctx.pushes.pushed_since(&registry, &target.path, d, started)
        })
    });
    run.changed = before - expire.len();
    run.expired = expire.iter().map(|i| format!("{}@{}", target.path, i.digest)).collect();
    if expire.is_empty() {
        return Ok(run);
    }
    // Children still referenced by a kept index stay.
    let expired_set: BTreeSet<&str> = expire.iter().map(|i| i.digest.as_str()).collect();
    let kept_children: BTreeSet<&str> = children
        .iter()
        .filter(|(index, _)| !expired_set.contains(index.as_str()))
        .flat_map(|(_, kids)| kids.iter().map(String::as_str))
        .collect();
    // Each image (an index first, then its children) is deleted in order; images in parallel,
    // bounded: Distribution's delete walks every tag of the repository, so it is slow on big ones.
    let jobs: Vec<(String, Vec<String>)> = expire
        .iter()
        .map(|image| {
            let kids = children
                .get(&image.digest)
                .into_iter()
                .flatten()
                .filter(|c| !kept_children.contains(c.as_str()) && !protected.contains_key(*c))
                .cloned()
                .collect();
            (image.digest.clone(), kids)
        })
        .collect();
    let path = target.path.as_str();
    if let Some(ecr) = backend.ecr() {
        return delete_on_ecr(ecr, path, jobs, &fresh, run, |d| ctx.pushes.pushed_since(&registry, path, d, started))
            .await;
    }
    let deleted: Vec<Option<Vec<String>>> = stream::iter(jobs)
        .map(|(digest, kids)| {
            let tags = tags_of(&fresh, &digest);
            let registry = registry.as_str();
            async move {
                // The last look, just before the DELETE: the tags still point here and no push
                // of this digest was heard since the run began.
                for tag in &tags {
                    match backend.resolve(path, tag).await {
                        Ok(Some(d)) if d.digest == digest => {}
                        Ok(_) => return Ok(None),
                        Err(e) => return Err(NotReady::new("ListFailed", format!("resolving {path}:{tag}: {e}"))),
                    }
                }
                if ctx.pushes.pushed_since(registry, path, &digest, started) {
                    return Ok(None);
                }
                delete_image(backend, path, digest, kids).await.map(Some)
            }
        })
        .buffer_unordered(ctx.settings.registry_concurrency.max(1))
        .try_collect()
        .await?;
    let skipped = deleted.iter().filter(|d| d.is_none()).count();
    if skipped > 0 {
        run.changed += skipped;
        let gone: BTreeSet<String> =
            deleted.iter().flatten().filter_map(|d| d.first()).map(|d| format!("{path}@{d}")).collect();
        run.expired.retain(|e| gone.contains(e));
    }
    let forgotten: Vec<String> = deleted.into_iter().flatten().flatten().collect();
    if !forgotten.is_empty() {
        ledger::update(&ctx.client, repo, stored, |book| {
            for digest in &forgotten {
                book.forget(digest);
            }
        })
        .await
        .map_err(|e| NotReady::new(e.reason(), e.to_string()))?;
    }
    Ok(run)
}

/// What a listing gave: every tag's manifest, and the push times when the registry records
/// them (ECR: one DescribeImages per 1,000 images; Distribution: a HEAD per tag, no times).
struct Listed {
    tags: BTreeMap<String, Descriptor>,
    pushed: Option<BTreeMap<String, i64>>,
}

async fn listing(backend: &dyn Backend, path: &str, concurrency: usize) -> Result<Listed, NotReady> {
    let failed = |e: String| NotReady::new("ListFailed", format!("listing the repository failed: {e}"));
    match backend.listing(path).await.map_err(|e| failed(e.to_string()))? {
        Some(images) => Ok(Listed {
            tags: crate::registry::ecr::tag_map(&images),
            pushed: Some(images.iter().map(|i| (i.digest.clone(), i.pushed_at_ms)).collect()),
        }),
        None => Ok(Listed {
            tags: target::list_tags(backend, path, concurrency).await.map_err(|e| failed(e.to_string()))?,
            pushed: None,
        }),
    }
}

/// On ECR: one more listing is the last look (a tag moved onto or off a candidate since the
/// first keeps it), then BatchDeleteImage, 100 digests a call, every image before any child.
async fn delete_on_ecr(
    ecr: &crate::registry::Ecr,
    path: &str,
    jobs: Vec<(String, Vec<String>)>,
    fresh: &BTreeMap<String, Descriptor>,
    mut run: RepositoryRun,
    pushed_since: impl Fn(&str) -> bool,
) -> Result<RepositoryRun, NotReady> {
    let last = listing(ecr, path, 1).await?.tags;
    let (go, stay): (Vec<_>, Vec<_>) =
        jobs.into_iter().partition(|(d, _)| tags_of(fresh, d) == tags_of(&last, d) && !pushed_since(d));
    if !stay.is_empty() {
        run.changed += stay.len();
        let stayed: BTreeSet<String> = stay.iter().map(|(d, _)| format!("{path}@{d}")).collect();
        run.expired.retain(|e| !stayed.contains(e));
    }
    let failed = |e: crate::registry::RegistryError| NotReady::new("DeleteFailed", format!("deleting in {path}: {e}"));
    let images: Vec<String> = go.iter().map(|(d, _)| d.clone()).collect();
    let children: Vec<String> = go.iter().flat_map(|(_, kids)| kids.iter().cloned()).collect();
    for batch in [images, children] {
        if batch.is_empty() {
            continue;
        }
        for (digest, result) in ecr.batch_delete(path, &batch).await.map_err(failed)? {
            if let Err(e) = result {
                return Err(NotReady::new("DeleteFailed", format!("deleting {path}@{digest}: {e}")));
            }
        }
    }
    Ok(run)
}

/// Deletes an image: the manifest (an index first), then its children. Returns what went.
async fn delete_image(
    backend: &dyn Backend,
    path: &str,
    digest: String,
    children: Vec<String>,
) -> Result<Vec<String>, NotReady> {
    delete(backend, path, &digest).await?;
    for child in &children {
        delete(backend, path, child).await?;
    }
    Ok(std::iter::once(digest).chain(children).collect())
}

async fn delete(backend: &dyn Backend, path: &str, digest: &str) -> Result<(), NotReady> {
    match backend.delete_manifest(path, digest).await {
        Ok(Deleted::Deleted | Deleted::NotFound) => Ok(()),
        Err(e) => Err(NotReady::new("DeleteFailed", format!("deleting {path}@{digest}: {e}"))),
    }
}

pub fn error_policy(policy: Arc<LifecyclePolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("lifecycle/{}/{}", policy.namespace().unwrap_or_default(), policy.name_any());
    tracing::warn!(policy = %key, error = %error, "lifecycle reconcile failed");
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { controller: CONTROLLER, reason: error.reason() }).inc();
    Action::requeue(ctx.failure_backoff(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(d: &str, media_type: &str) -> Descriptor {
        Descriptor { digest: d.into(), media_type: media_type.into(), size: 1 }
    }

    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";

    /// Uses by workloads without a version policy.
    fn plain(images: &[&str]) -> Vec<workloads::ImageUse> {
        images
            .iter()
            .map(|i| workloads::ImageUse {
                workload: "Pod t/p".into(),
                image: i.to_string(),
                rollout: None,
                bad_digests: vec![],
            })
            .collect()
    }

    fn digests(in_use: &InUse) -> BTreeSet<String> {
        in_use.keys().cloned().collect()
    }

    fn set(digests: &[&str]) -> BTreeSet<String> {
        digests.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn workloads_protect_by_digest_by_tag_and_through_an_index() {
        let hosts = vec!["r:5000".to_string()];
        let tags: BTreeMap<String, Descriptor> = [
            ("v1".to_string(), desc("d1", MANIFEST)),
            ("latest".to_string(), desc("d2", MANIFEST)),
            ("multi".to_string(), desc("idx", INDEX)),
        ]
        .into();
        let children: HashMap<String, Vec<String>> =
            [("idx".to_string(), vec!["c1".to_string(), "c2".to_string()])].into();
        let uses = [
            "r:5000/team/app:v1",
            "r:5000/team/app",
            "r:5000/team/app@c2",
            "r:5000/team/app:v9@d9",
            "r:5000/team/other:v1",
            "r:5000/team/app:gone",
        ];
        let none = BTreeMap::new();
        let p = protected_digests(&plain(&uses), &hosts, "team/app", &tags, &none, &children);
        assert_eq!(digests(&p), set(&["c2", "d1", "d2", "d9", "idx"]));
        assert_eq!(p["idx"], p["c2"], "an index is in use for its child's reasons");
        // Look-alike repositories protect nothing here: `app2` and `app/sub` are not `app`.
        let lookalikes = ["r:5000/team/app2:v1", "r:5000/team/app2", "r:5000/team/app/sub:latest"];
        assert!(protected_digests(&plain(&lookalikes), &hosts, "team/app", &tags, &none, &children).is_empty());
    }

    #[test]
    fn workloads_and_pods_protect_under_every_name_of_the_registry() {
        // berth reaches the registry in the cluster; nodes pull it by a node port or an Ingress,
        // and pods report the name they pulled by.
        let hosts = hosts::of_registry(
            &serde_json::from_value(serde_json::json!({
                "url": "http://berth-registry.berth.svc:5000",
                "aliases": ["127.0.0.1:30500", "registry.example.com"],
            }))
            .unwrap(),
        );
        let tags: BTreeMap<String, Descriptor> =
            [("v1".to_string(), desc("d1", MANIFEST)), ("v2".to_string(), desc("d2", MANIFEST))].into();
        let uses = [
            "127.0.0.1:30500/team/app:v1",
            "Registry.Example.com/team/app@d3",
            "berth-registry.berth.svc:5000/team/app:v2",
            "127.0.0.1:30500/team/app@d4",
        ];
        let (none, no_children) = (BTreeMap::new(), HashMap::new());
        let p = protected_digests(&plain(&uses), &hosts, "team/app", &tags, &none, &no_children);
        assert_eq!(digests(&p), set(&["d1", "d2", "d3", "d4"]));
        // Another port, or a name the Registry does not list, protects nothing.
        let elsewhere = ["127.0.0.1:30501/team/app:v1", "registry.example.com:443/team/app@d3", "other/team/app:v2"];
        assert!(protected_digests(&plain(&elsewhere), &hosts, "team/app", &tags, &none, &no_children).is_empty());
    }

    #[test]
    fn the_tag_a_version_policy_selects_is_in_use() {
        let hosts = vec!["r:5000".to_string()];
        let tags: BTreeMap<String, Descriptor> = [
            ("1.3.9", "d139"),
            ("1.4.2", "d142"),
            ("1.4.3", "d143"),
            ("1.5.0", "d150"),
            ("nightly-1", "dn1"),
            ("nightly-2", "dn2"),
            ("nightly-3", "dn3"),
        ]
        .map(|(t, d)| (t.to_string(), desc(d, MANIFEST)))
        .into();
        // The ledger's push times (unix ms): nightly-1 was pushed last; nightly-3's is not known.
        let pushed: BTreeMap<String, i64> =
            [("dn1", 3_000_500), ("dn2", 2_000_000), ("d142", 1_000_000)].map(|(d, t)| (d.to_string(), t)).into();
        let cases: &[(&str, &str, &[&str], &str)] = &[
            (
                "semver:~1.4",
                "r:5000/team/app:1.4.2",
                &["d142", "d143"],
                "the newer 1.4.3 it selects; not 1.5.0, outside ~1.4",
            ),
            ("semver:^1.0.0", "r:5000/team/app:1.4.2", &["d142", "d150"], "a wider range selects 1.5.0"),
            ("semver:~1.4", "r:5000/team/app:1.4.3@d143", &["d143"], "the running tag is the choice already"),
            ("semver:~1.4", "r:5000/team/app@d142", &["d142", "d143"], "by digest alone: no running tag"),
            ("semver:~1.4", "r:5000/team/app", &["d143"], "it runs latest (no such tag here)"),
            ("semver:~1.3", "r:5000/team/app:1.4.2", &["d139", "d142"], "a running tag outside the range"),
            ("semver:>=2", "r:5000/team/app:1.4.2", &["d142"], "nothing in the range"),
            ("semver:~1.x.3", "r:5000/team/app:1.4.2", &["d142"], "a policy that does not parse adds nothing"),
            ("bogus", "r:5000/team/app:1.4.2", &["d142"], "nor does an unknown one"),
            ("digest", "r:5000/team/app:1.4.2", &["d142"], "digest follows the workload's own tag"),
            ("newest-pushed:^nightly-", "r:5000/team/app:1.4.2", &["d142", "dn1"], "by push time, not by name"),
            ("newest-pushed:^nightly-", "r:5000/team/app:nightly-2", &["dn1", "dn2"], "from the running one up"),
            ("pattern:^nightly-(?P<n>[0-9]+)$ numerical:n", "r:5000/team/app:nightly-2", &["dn2", "dn3"], "numbers"),
            ("semver:~1.4", "r:5000/team/other:1.4.2", &[], "another repository's workload"),
            ("semver:~1.4", "other:5000/team/app:1.4.2", &[], "another registry's workload"),
        ];
        for (rollout, image, expected, why) in cases {
            let uses = [workloads::ImageUse {
                workload: "Deployment team/api".into(),
                image: image.to_string(),
                rollout: Some(rollout.to_string()),
                bad_digests: vec![],
            }];
            let p = protected_digests(&uses, &hosts, "team/app", &tags, &pushed, &HashMap::new());
            assert_eq!(digests(&p), set(expected), "{rollout} on {image}: {why}");
        }

        let uses = |rollout: Option<&str>| {
            vec![workloads::ImageUse {
                workload: "Deployment team/api".into(),
                image: "r:5000/team/app:1.4.2".into(),
                rollout: rollout.map(String::from),
                bad_digests: vec![],
            }]
        };
        // A digest the workload was rolled back from is not selected again, as the rollout
        // controller does not select it: the policy's next choice is in use instead.
        let mut rolled_back = uses(Some("semver:^1.0.0"));
        rolled_back[0].bad_digests = vec!["d150".into()];
        let p = protected_digests(&rolled_back, &hosts, "team/app", &tags, &pushed, &HashMap::new());
        assert_eq!(digests(&p), set(&["d142", "d143"]));
        let p = protected_digests(&uses(Some("semver:~1.4")), &hosts, "team/app", &tags, &pushed, &HashMap::new());
        let why: Vec<String> = p["d143"].iter().map(ToString::to_string).collect();
        assert_eq!(why, ["Deployment team/api: semver:~1.4 selects 1.4.3"]);
        // The look just before deleting sees a policy too: 1.4.3, expired by the first look
        // when nothing selected it, stays when a workload follows ~1.4 by then.
        let before = protected_digests(&uses(None), &hosts, "team/app", &tags, &pushed, &HashMap::new());
        assert!(unchanged("d143", &tags, &tags, &before, |_| false));
        assert!(!unchanged("d143", &tags, &tags, &p, |_| false));
    }

    #[test]
    fn a_candidate_that_changed_since_the_listing_is_not_deleted() {
        let listed: BTreeMap<String, Descriptor> =
            [("build-1".to_string(), desc("d1", MANIFEST)), ("build-2".to_string(), desc("d2", MANIFEST))].into();
        let none = InUse::new();
        assert!(unchanged("d1", &listed, &listed, &none, |_| false), "nothing changed: delete");
        assert!(unchanged("gone", &listed, &listed, &none, |_| false), "an untagged candidate stays untagged");
        // A tag pushed onto the candidate meanwhile.
        let mut tagged = listed.clone();
        tagged.insert("keep-1".into(), desc("d1", MANIFEST));
        assert!(!unchanged("d1", &listed, &tagged, &none, |_| false));
        assert!(unchanged("d2", &listed, &tagged, &none, |_| false), "other candidates are unaffected");
        // Its tag moved away (and so its image is no longer what was evaluated).
        let moved: BTreeMap<String, Descriptor> =
            [("build-1".to_string(), desc("d9", MANIFEST)), ("build-2".to_string(), desc("d2", MANIFEST))].into();
        assert!(!unchanged("d1", &listed, &moved, &none, |_| false));
        // An untagged candidate tagged meanwhile.
        let untagged_then: BTreeMap<String, Descriptor> = BTreeMap::new();
        assert!(!unchanged("d1", &untagged_then, &listed, &none, |_| false));
        // In use now, or pushed again since the run began.
        assert!(!unchanged("d1", &listed, &listed, &[("d1".to_string(), BTreeSet::new())].into(), |_| false));
        assert!(!unchanged("d1", &listed, &listed, &none, |d| d == "d1"));
    }

    #[test]
    fn referrers_indexes_and_what_they_list_are_not_images() {
        let referrers = format!("sha256-{}", "a".repeat(64));
        let tags: BTreeMap<String, Descriptor> =
            [(referrers.clone(), desc("ridx", INDEX)), ("v1".to_string(), desc("d1", MANIFEST))].into();
        let children: HashMap<String, Vec<String>> = [("ridx".to_string(), vec!["sbom".to_string()])].into();
        let pushed: BTreeMap<String, i64> =
            [("ridx".to_string(), 9), ("sbom".to_string(), 9), ("d1".to_string(), 1)].into();
        let images = images_for_evaluation(&tags, &children, &pushed, 100);
        let digests: Vec<&str> = images.iter().map(|i| i.digest.as_str()).collect();
        assert_eq!(digests, vec!["d1"], "neither the index nor the SBOM it lists is an image");
    }

    #[test]
    fn an_index_is_one_image_and_its_children_are_not_untagged_images() {
        let tags: BTreeMap<String, Descriptor> = [
            ("multi".to_string(), desc("idx", INDEX)),
            ("a".to_string(), desc("d1", MANIFEST)),
            ("b".to_string(), desc("d1", MANIFEST)),
        ]
        .into();
        let children: HashMap<String, Vec<String>> = [("idx".to_string(), vec!["c1".to_string()])].into();
        let pushed: BTreeMap<String, i64> =
            [("idx".to_string(), 5), ("c1".to_string(), 5), ("d1".to_string(), 7), ("old".to_string(), 1)].into();
        let images = images_for_evaluation(&tags, &children, &pushed, 100);
        let mut seen: Vec<(String, Vec<String>, i64)> =
            images.into_iter().map(|i| (i.digest, i.tags, i.pushed_at_ms)).collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("d1".to_string(), vec!["a".to_string(), "b".to_string()], 7),
                ("idx".to_string(), vec!["multi".to_string()], 5),
                ("old".to_string(), vec![], 1),
            ]
        );
    }
}
