//! The Repository controller: reads the repository's state from the registry into status,
//! records push times in the ledger, keeps immutable tags immutable, and honours
//! `deletionPolicy` through a finalizer.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};
use serde_json::json;

use super::{
    Context, Error, NotReady, publish,
    target::{Target, list_tags, target},
};
use crate::{
    api::{DeletionPolicy, Repository, RepositoryStatus, TagMutability},
    conditions,
    metrics::{ControllerLabels, ErrorLabels},
    registry::{Backend, Deleted, Descriptor, RegistryError},
    repository::{ledger, observed, tags},
    workloads,
};

mod ecr;

pub const CONTROLLER: &str = "repository";
/// Present only on Repositories with `deletionPolicy: Delete`: the images go before the object.
pub const FINALIZER: &str = "berth.dev/delete-images";
/// `"true"` releases a Repository being deleted without touching the registry.
pub const ABANDON_ANNOTATION: &str = "berth.dev/abandon";
const RETRY_UNREACHABLE: Duration = Duration::from_secs(15);
const RETRY_BLOCKED: Duration = Duration::from_secs(60);
/// Digests asked about per reconcile when a ledger shard is full.
const PRUNE_PER_RECONCILE: usize = 1000;

/// What berth found in the registry for one Repository.
#[derive(Debug, Clone, Default)]
struct Observed {
    uri: String,
    tags: BTreeMap<String, Descriptor>,
    last_pushed_at: Option<i64>,
    /// Restores over the repository's life, from the ledger.
    restores: i64,
    /// Moved immutable tags that could not be put back yet.
    unrestored: Vec<String>,
    /// Digests the ledger knows exist (tagged or not).
    known: BTreeSet<String>,
    /// The ECR repository, on an `ecr` Registry.
    ecr: Option<crate::api::RepositoryEcrStatus>,
    /// A setting the registry cannot take as declared (ECR's encryption).
    mismatch: Option<NotReady>,
}

pub async fn reconcile(repo: Arc<Repository>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.leader.is_leader() {
        // A follower keeps its caches warm; the leader reconciles (all at once when it takes over).
        return Ok(Action::await_change());
    }
    let started = std::time::Instant::now();
    let labels = ControllerLabels { controller: CONTROLLER };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    // Who may pull and push depends on the Repository's visibility, labels and existence.
    ctx.tokens.rebuild.notify_one();
    let result =
        if repo.metadata.deletion_timestamp.is_some() { finalize(&repo, &ctx).await } else { apply(&repo, &ctx).await };
    ctx.metrics.reconcile_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.clear_failures(&key(&repo));
    }
    result
}

fn key(repo: &Repository) -> String {
    format!("repository/{}/{}", repo.namespace().unwrap_or_default(), repo.name_any())
}

fn api(ctx: &Context, repo: &Repository) -> Api<Repository> {
    Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default())
}

async fn apply(repo: &Repository, ctx: &Context) -> Result<Action, Error> {
    let has_finalizer = repo.finalizers().iter().any(|f| f == FINALIZER);
    match (repo.spec.deletion_policy, has_finalizer) {
        (DeletionPolicy::Delete, false) => super::set_finalizer(&ctx.client, repo, FINALIZER, true).await?,
        (DeletionPolicy::Retain, true) => super::set_finalizer(&ctx.client, repo, FINALIZER, false).await?,
        _ => {}
    }
    let previous = repo.status.clone().unwrap_or_default();
    let generation = repo.metadata.generation;
    let (status, requeue) = match observe(repo, ctx).await {
        Ok(o) => {
            let images: BTreeSet<&str> = o.tags.values().map(|d| d.digest.as_str()).collect();
            let tagged: BTreeMap<String, String> = o.tags.iter().map(|(t, d)| (t.clone(), d.digest.clone())).collect();
            let scan_problem = match target(repo, ctx) {
                Ok(t) => super::scan::sync(repo, ctx, &t, &tagged, &o.known).await.err(),
                Err(e) => Some(e),
            };
            let ready = match (o.unrestored.first(), scan_problem) {
                (Some(first), _) => conditions::ready(false, "TagRestoreFailed", first.clone(), generation),
                (None, _) if o.mismatch.is_some() => {
                    let m = o.mismatch.clone().unwrap_or_else(|| NotReady::new("Mismatch", ""));
                    conditions::ready(false, m.reason, m.message, generation)
                }
                (None, Some(problem)) => conditions::ready(
                    false,
                    problem.reason,
                    format!("cannot keep its image scans: {}", problem.message),
                    generation,
                ),
                (None, None) => conditions::ready(
                    true,
                    "Reconciled",
                    match &o.ecr {
                        Some(e) if e.adopted => format!(
                            "{} images, {} tags; adopted the existing ECR repository {}",
                            images.len(),
                            o.tags.len(),
                            e.arn.as_deref().unwrap_or_default()
                        ),
                        _ => format!("{} images, {} tags", images.len(), o.tags.len()),
                    },
                    generation,
                ),
            };
            let status = RepositoryStatus {
                conditions: conditions::merge(&previous.conditions, ready),
                observed_generation: generation,
                uri: Some(o.uri),
                image_count: Some(images.len() as i64),
                tag_count: Some(o.tags.len() as i64),
                last_pushed_at: o.last_pushed_at.and_then(|ms| Timestamp::from_millisecond(ms).ok()).map(Time),
                // From the ledger, the source of truth, not added to a cached status.
                immutable_tag_restores: (o.restores > 0).then_some(o.restores),
                // Written by the scans' own path (see write_status).
                scans: previous.scans.clone(),
                ecr: o.ecr.clone(),
            };
            let requeue = if o.unrestored.is_empty() {
                ctx.settings.repository_poll_interval
            } else {
                RETRY_UNREACHABLE.min(ctx.settings.repository_poll_interval)
            };
            (status, requeue)
        }
        Err(not_ready) => {
            ctx.metrics
                .reconcile_errors
                .get_or_create(&ErrorLabels { controller: CONTROLLER, reason: not_ready.reason })
                .inc();
            let requeue = match not_ready.reason {
                "RegistryUnreachable" | "TLSError" | "RegistryError" => {
                    RETRY_UNREACHABLE.min(ctx.settings.repository_poll_interval)
                }
                "KubernetesAPIError" => ctx.failure_backoff(&key(repo)),
                _ => RETRY_BLOCKED.min(ctx.settings.repository_poll_interval),
            };
            let status = RepositoryStatus {
                conditions: conditions::merge(
                    &previous.conditions,
                    conditions::ready(false, not_ready.reason, not_ready.message, generation),
                ),
                observed_generation: generation,
                ..previous.clone()
            };
            (status, requeue)
        }
    };
    write_status(repo, ctx, &previous, status).await?;
    Ok(Action::requeue(requeue))
}

async fn write_status(
    repo: &Repository,
    ctx: &Context,
    previous: &RepositoryStatus,
    status: RepositoryStatus,
) -> Result<(), Error> {
    if &status == previous {
        return Ok(());
    }
    // `status.scans` has its own field manager (the scan summary, written as scans finish):
    // left out here, so a reconcile that read an older summary cannot put it back.
    let mut status = serde_json::to_value(&status).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    if let Some(fields) = status.as_object_mut() {
        fields.remove("scans");
    }
    let patch = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Repository", "status": status});
    api(ctx, repo)
        .patch_status(&repo.name_any(), &PatchParams::apply("berth-status").force(), &Patch::Apply(patch))
        .await?;
    Ok(())
}

async fn observe(repo: &Repository, ctx: &Context) -> Result<Observed, NotReady> {
    let target = target(repo, ctx)?;
    let backend = ctx.backend(&target.registry).await.map_err(|e| NotReady::from(&e))?;
    let (result, sent) = match backend.ecr() {
        Some(e) => crate::registry::count_requests(ecr::observe(repo, ctx, &target, e)).await,
        None if repo.spec.ecr.is_some() => {
            return Err(NotReady::new(
                "NotSupportedByRegistry",
                format!("spec.ecr is set but Registry {:?} is not of type ecr", target.registry.name_any()),
            ));
        }
        None => crate::registry::count_requests(observe_in(repo, ctx, &target, backend.as_ref())).await,
    };
    ctx.metrics.registry_requests.get_or_create(&ControllerLabels { controller: CONTROLLER }).inc_by(sent);
    result
}

/// Reads the repository (one step each: read, put moved immutable tags back, make room in a
/// full ledger, write the ledger), so that status shows what the registry has.
async fn observe_in(
    repo: &Repository,
    ctx: &Context,
    target: &Target,
    backend: &dyn Backend,
) -> Result<Observed, NotReady> {
    let mut read = read(repo, ctx, target, backend).await?;
    let restored = restore_moved_tags(repo, ctx, target, backend, &mut read).await?;
    let pruned = prune_at_cap(target, backend, &read).await?;
    let (book, left_out) = write_ledger(repo, ctx, &read, &restored, pruned).await?;
    if left_out > 0 {
        let note =
            format!("the ledger is full: {left_out} new digests or tags were not recorded (they count as pushed now)");
        publish(ctx, repo, EventType::Warning, "LedgerFull", note).await;
    }
    let last_pushed_at = read.current.values().filter_map(|d| book.pushed.get(&d.digest).copied()).max();
    let unrestored = restored.unrestored;
    let known = book.pushed.keys().cloned().collect();
    Ok(Observed {
        uri: target.uri.clone(),
        tags: read.current,
        last_pushed_at,
        restores: book.restores,
        unrestored,
        known,
        ecr: None,
        mismatch: None,
    })
}

/// What the ledger, the registry and the pending registry events say, every event's claim
/// confirmed with the registry.
struct Read {
    stored: ledger::Stored,
    /// Push times before the listing (see `observed::Observed::known_before`).
    known_before: BTreeMap<String, i64>,
    current: BTreeMap<String, Descriptor>,
    /// The pending events taken into this reconcile (they stay pending until written).
    pending: super::PendingEvents,
    pushes: Vec<(String, i64)>,
    gone: Vec<String>,
}

async fn read(repo: &Repository, ctx: &Context, target: &Target, backend: &dyn Backend) -> Result<Read, NotReady> {
    let registry_err = |e: RegistryError| NotReady::from(&Error::Registry(e));
    // The ledger is read before the listing: a digest it held then and lacks when berth writes
    // was forgotten meanwhile (the lifecycle deleted it), and a listing from before that delete
    // must not bring it back as first seen now.
    let stored = ledger::load(&ctx.client, repo).await.map_err(|e| NotReady::from(&Error::Kube(e)))?;
    let known_before = stored.ledger.pushed.clone();
    let current =
        list_tags(backend, &target.path, ctx.settings.registry_concurrency).await.map_err(|e| NotReady::from(&e))?;
    let key = ObjectRef::from_obj(repo);
    let pending = ctx.pending.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned().unwrap_or_default();
    // An event is a claim: the registry says whether the digest exists (one HEAD each).
    let tagged: BTreeSet<&str> = current.values().map(|d| d.digest.as_str()).collect();
    let mut pushes = Vec::new();
    for (digest, at) in &pending.pushed {
        if tagged.contains(digest.as_str())
            || backend.resolve(&target.path, digest).await.map_err(registry_err)?.is_some()
        {
            pushes.push((digest.clone(), *at));
        }
    }
    let mut gone = Vec::new();
    for digest in &pending.deleted {
        if !tagged.contains(digest.as_str())
            && backend.resolve(&target.path, digest).await.map_err(registry_err)?.is_none()
        {
            gone.push(digest.clone());
        }
    }
    Ok(Read { stored, known_before, current, pending, pushes, gone })
}

/// What putting moved immutable tags back came to.
#[derive(Default)]
struct Restored {
    /// Tags whose first image the registry answered 404 for: they start again.
    released: BTreeSet<String>,
    /// Messages for tags that could not be put back yet.
    unrestored: Vec<String>,
}

/// Puts every moved immutable tag back to its first digest, recording the restores under way in
/// the ledger first so that one a crash interrupts is still counted, once.
async fn restore_moved_tags(
    repo: &Repository,
    ctx: &Context,
    target: &Target,
    backend: &dyn Backend,
    read: &mut Read,
) -> Result<Restored, NotReady> {
    let mut out = Restored::default();
    if repo.spec.image_tag_mutability != TagMutability::Immutable {
        return Ok(out);
    }
    let exclusions = repo.spec.immutable_tag_exclusions.clone().unwrap_or_default();
    let by_tag: BTreeMap<String, String> = read.current.iter().map(|(t, d)| (t.clone(), d.digest.clone())).collect();
    let restore = tags::plan_immutable(&read.stored.ledger.pins, &by_tag, &exclusions).restore;
    if restore.iter().any(|m| !read.stored.ledger.restoring.contains_key(&m.tag)) {
        ledger::update(&ctx.client, repo, read.stored.clone(), |book| {
            for m in &restore {
                book.restoring.insert(m.tag.clone(), m.current.clone());
            }
        })
        .await
        .map_err(|e| NotReady::new(e.reason(), e.to_string()))?;
        read.stored = ledger::load(&ctx.client, repo).await.map_err(|e| NotReady::from(&Error::Kube(e)))?;
    }
    for moved in restore {
        let (type_, reason, note) = match restore_tag(backend, &target.path, &moved).await {
            Ok(descriptor) => {
                read.current.insert(moved.tag.clone(), descriptor);
                let note = format!(
                    "tag {:?} was pushed over with {}; restored to {} (imageTagMutability: Immutable)",
                    moved.tag, moved.current, moved.pinned
                );
                (EventType::Warning, "TagRestored", note)
            }
            // Only the registry's word that the first image is gone lets the tag start again, as
            // in ECR; anything else (5xx, timeout, 403) keeps the pin and retries.
            Err(Unrestored::Gone) => {
                out.released.insert(moved.tag.clone());
                let note = format!(
                    "tag {:?} now points at {}: its first image {} was deleted, so the tag starts again",
                    moved.tag, moved.current, moved.pinned
                );
                (EventType::Normal, "TagReleased", note)
            }
            Err(Unrestored::Failed(e)) => {
                let note = format!(
                    "tag {:?} was pushed over with {} and could not be restored to {} yet (retrying): {e}",
                    moved.tag, moved.current, moved.pinned
                );
                out.unrestored.push(note.clone());
                (EventType::Warning, "TagRestoreFailed", note)
            }
        };
        publish(ctx, repo, type_, reason, note).await;
    }
    Ok(out)
}

/// At a ledger shard's cap, the digests the registry no longer has (one HEAD each, a bounded
/// number per reconcile): they make room, never a stored push time.
async fn prune_at_cap(target: &Target, backend: &dyn Backend, read: &Read) -> Result<Vec<String>, NotReady> {
    let tagged: BTreeSet<String> = read.current.values().map(|d| d.digest.clone()).collect();
    let mut provisional = read.stored.ledger.clone();
    for d in &tagged {
        provisional.record_seen(d, 0);
    }
    for (d, at) in &read.pushes {
        provisional.record_push(d, *at);
    }
    let mut pruned = Vec::new();
    for digest in provisional.over_cap(&tagged).into_iter().take(PRUNE_PER_RECONCILE) {
        let found = backend.resolve(&target.path, &digest).await.map_err(|e| NotReady::from(&Error::Registry(e)))?;
        if found.is_none() {
            pruned.push(digest);
        }
    }
    Ok(pruned)
}

/// Writes what this reconcile learned (`observed::record`, with compare-and-swap and retry),
/// then lets go of the pending events it wrote. Returns the ledger written and how many new
/// entries a full shard left out.
async fn write_ledger(
    repo: &Repository,
    ctx: &Context,
    read: &Read,
    restored: &Restored,
    pruned: Vec<String>,
) -> Result<(ledger::Ledger, usize), NotReady> {
    let seen = observed::Observed {
        tags: read.current.iter().map(|(t, d)| (t.clone(), d.digest.clone())).collect(),
        pushes: read.pushes.clone(),
        gone: read.gone.iter().cloned().chain(pruned).collect(),
        known_before: read.known_before.clone(),
        released: restored.released.clone(),
        immutable: repo.spec.image_tag_mutability == TagMutability::Immutable,
        exclusions: repo.spec.immutable_tag_exclusions.clone().unwrap_or_default(),
        now: Timestamp::now().as_millisecond(),
    };
    let mut left_out = 0;
    let (book, _) =
        ledger::update(&ctx.client, repo, read.stored.clone(), |book| left_out = observed::record(book, &seen))
            .await
            .map_err(|e| NotReady::new(e.reason(), e.to_string()))?;
    // Only what was written leaves the pending events.
    let key = ObjectRef::from_obj(repo);
    let mut all = ctx.pending.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(entry) = all.get_mut(&key) {
        for (digest, at) in &read.pending.pushed {
            if entry.pushed.get(digest) == Some(at) {
                entry.pushed.remove(digest);
            }
        }
        entry.deleted.retain(|d| !read.pending.deleted.contains(d));
        if entry.pushed.is_empty() && entry.deleted.is_empty() {
            all.remove(&key);
        }
    }
    Ok((book, left_out))
}

/// Why a moved tag was not put back.
enum Unrestored {
    /// The registry answered that the first image does not exist.
    Gone,
    Failed(RegistryError),
}

async fn restore_tag(backend: &dyn Backend, path: &str, moved: &tags::Moved) -> Result<Descriptor, Unrestored> {
    let manifest = match backend.manifest(path, &moved.pinned).await {
        Ok(m) => m,
        Err(RegistryError::NotFound(_)) => return Err(Unrestored::Gone),
        Err(e) => return Err(Unrestored::Failed(e)),
    };
    let digest = backend
        .put_manifest(path, &moved.tag, &manifest.descriptor.media_type, &manifest.body)
        .await
        .map_err(Unrestored::Failed)?;
    Ok(Descriptor { digest, ..manifest.descriptor })
}

/// Deletion: with `deletionPolicy: Delete`, remove every manifest first (404 = done), unless
/// a workload still uses an image of the repository or the object is abandoned.
async fn finalize(repo: &Repository, ctx: &Context) -> Result<Action, Error> {
    if !repo.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let abandon = repo.annotations().get(ABANDON_ANNOTATION).is_some_and(|v| v == "true");
    if abandon || repo.spec.deletion_policy == DeletionPolicy::Retain {
        if abandon {
            publish(ctx, repo, EventType::Normal, "Abandoned", "released without touching the registry".into()).await;
        }
        super::set_finalizer(&ctx.client, repo, FINALIZER, false).await?;
        return Ok(Action::await_change());
    }
    match delete_images(repo, ctx).await {
        Ok(deleted) => {
            publish(
                ctx,
                repo,
                EventType::Normal,
                "ImagesDeleted",
                format!("deleted {deleted} manifests (deletionPolicy: Delete)"),
            )
            .await;
            super::set_finalizer(&ctx.client, repo, FINALIZER, false).await?;
            Ok(Action::await_change())
        }
        Err(not_ready) => {
            let previous = repo.status.clone().unwrap_or_default();
            let message = format!(
                "deletion waits: {} (annotate {ABANDON_ANNOTATION}=\"true\" to release the object and keep the images)",
                not_ready.message
            );
            let status = RepositoryStatus {
                conditions: conditions::merge(
                    &previous.conditions,
                    conditions::ready(false, not_ready.reason, message, repo.metadata.generation),
                ),
                ..previous.clone()
            };
            write_status(repo, ctx, &previous, status).await?;
            Ok(Action::requeue(if not_ready.reason == "RegistryUnreachable" {
                RETRY_UNREACHABLE
            } else {
                RETRY_BLOCKED
            }))
        }
    }
}

async fn delete_images(repo: &Repository, ctx: &Context) -> Result<usize, NotReady> {
    let target = target(repo, ctx)?;
    let in_use: Vec<workloads::ImageUse> = workloads::images_in_use(&ctx.client)
        .await
        .map_err(|e| NotReady::from(&Error::Kube(e)))?
        .into_iter()
        .filter(|u| workloads::in_repository(&u.image, &target.hosts, &target.path))
        .collect();
    // Name what a person changes to release the image: the workload, not one of its Pods.
    if let Some(first) = in_use.iter().find(|u| !u.workload.starts_with("Pod ")).or(in_use.first()) {
        return Err(NotReady::new(
            "ImagesInUse",
            format!("{} uses {} ({} references in all)", first.workload, first.image, in_use.len()),
        ));
    }
    let backend = ctx.backend(&target.registry).await.map_err(|e| NotReady::from(&e))?;
    if let Some(ecr) = backend.ecr() {
        // ECR deletes the repository and every image in it in one call (force).
        let images = ecr.images(&target.path).await.map_err(|e| NotReady::from(&Error::Registry(e)))?;
        if repo.status.as_ref().and_then(|s| s.ecr.as_ref()).is_some_and(|e| e.adopted) {
            let note = format!(
                "deleting the adopted ECR repository {} with its {} images (deletionPolicy: Delete)",
                target.path,
                images.len()
            );
            publish(ctx, repo, EventType::Warning, "DeletingAdoptedRepository", note).await;
        }
        ecr.delete_repository(&target.path).await.map_err(|e| NotReady::from(&Error::Registry(e)))?;
        return Ok(images.len());
    }
    let current = list_tags(backend.as_ref(), &target.path, ctx.settings.registry_concurrency)
        .await
        .map_err(|e| NotReady::from(&e))?;
    let stored = ledger::load(&ctx.client, repo).await.map_err(|e| NotReady::from(&Error::Kube(e)))?;
    // Tagged images, and untagged ones berth knows from its ledger.
    let digests: BTreeSet<String> =
        current.values().map(|d| d.digest.clone()).chain(stored.ledger.pushed.keys().cloned()).collect();
    let mut deleted = 0;
    for digest in &digests {
        match backend.delete_manifest(&target.path, digest).await.map_err(|e| NotReady::from(&Error::Registry(e)))? {
            Deleted::Deleted => deleted += 1,
            Deleted::NotFound => {}
        }
    }
    let left = backend.tags(&target.path).await.map_err(|e| NotReady::from(&Error::Registry(e)))?;
    if !left.is_empty() {
        return Err(NotReady::new("DeletionIncomplete", format!("{} tags are still in the registry", left.len())));
    }
    Ok(deleted)
}

pub fn error_policy(repo: Arc<Repository>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(repository = %key(&repo), error = %error, "repository reconcile failed");
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { controller: CONTROLLER, reason: error.reason() }).inc();
    Action::requeue(ctx.failure_backoff(&key(&repo)))
}
