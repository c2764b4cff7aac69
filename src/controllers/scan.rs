//! The ImageScan controller: reads an image's layers through the registry backend (capped,
//! streamed to a file, digest-checked), takes its inventory, matches it against the
//! vulnerability data in use and writes the findings to status; attaches the inventory to the
//! image as a CycloneDX SBOM referrer. Decisions are `scanning::plan`'s; `Continuous` scans are
//! matched again from a kept inventory when the data changes, without reading layers again.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};
use serde::Deserialize;
use serde_json::json;

use super::{Context, Error, NotReady, publish_about, target::target};
use crate::{
    api::{
        ImageScan, ImageScanStatus, Repository, SCAN_ANNOTATION, SbomRef, ScanFrequency, ScanPhase, ScanSummary,
        ScannerAdapter, VulnerabilityDataRef,
    },
    conditions,
    metrics::{ControllerLabels, ErrorLabels, ScanLabels},
    registry::{Backend, Descriptor, RegistryError, is_index},
    scanning::{
        Inventory,
        data::{Loaded, State},
        harbor, inventory, layers, matching,
        plan::{self, DataAt, Work},
        report, sbom,
    },
};

pub const CONTROLLER: &str = "imagescan";
/// Scans running at once: reading layers and matching are CPU-bound.
pub const CONCURRENCY: u16 = 2;
/// Layers in one image berth reads (Docker's limit is 127).
const MAX_LAYERS: usize = 256;
/// A scan that failed for want of data or a registry answer is tried again after this.
const RETRY: Duration = Duration::from_secs(30);
/// Bytes of inventories kept for re-matching (an estimate: their strings).
const KEPT_INVENTORY_BYTES: usize = 64 << 20;

/// Inventories of scanned images by manifest digest, so a `Continuous` re-match needs no
/// layers. Bounded in bytes; the least recently used goes first. An inventory is a pure function
/// of the image, so an entry never goes stale.
#[derive(Default)]
pub struct Inventories {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    by_digest: HashMap<String, (Arc<Inventory>, usize)>,
    /// Digests, least recently used first.
    order: VecDeque<String>,
    bytes: usize,
}

impl Kept {
    fn touch(&mut self, digest: &str) {
        if let Some(i) = self.order.iter().position(|d| d == digest)
            && let Some(d) = self.order.remove(i)
        {
            self.order.push_back(d);
        }
    }
}

/// What an inventory takes, roughly: its strings and a little per package.
fn inventory_bytes(inventory: &Inventory) -> usize {
    inventory
        .packages
        .iter()
        .map(|p| 64 + p.name.len() + p.version.len() + p.ecosystem.len() + p.location.len())
        .sum::<usize>()
        + 256
}

impl Inventories {
    pub fn get(&self, digest: &str) -> Option<Arc<Inventory>> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let found = kept.by_digest.get(digest).map(|(i, _)| i.clone());
        if found.is_some() {
            kept.touch(digest);
        }
        found
    }

    pub fn put(&self, digest: &str, inventory: Arc<Inventory>) {
        let size = inventory_bytes(&inventory);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        match kept.by_digest.insert(digest.to_string(), (inventory, size)) {
            Some((_, old)) => {
                kept.bytes = kept.bytes - old + size;
                kept.touch(digest);
            }
            None => {
                kept.bytes += size;
                kept.order.push_back(digest.to_string());
            }
        }
        while kept.bytes > KEPT_INVENTORY_BYTES && kept.order.len() > 1 {
            if let Some(old) = kept.order.pop_front()
                && let Some((_, n)) = kept.by_digest.remove(&old)
            {
                kept.bytes -= n;
            }
        }
    }
}

/// Why an image was not scanned.
#[derive(Debug)]
enum Failure {
    /// Not something berth scans: `UnsupportedImage`.
    Unsupported(String),
    /// A reason (CamelCase) and a message: `Failed`.
    Failed(&'static str, String),
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Failure {
        Failure::Failed(e.reason(), e.to_string())
    }
}

impl From<layers::LayerError> for Failure {
    fn from(e: layers::LayerError) -> Failure {
        match e {
            layers::LayerError::UnsupportedMediaType(_) => Failure::Unsupported(e.to_string()),
            e => Failure::Failed(e.reason(), e.to_string()),
        }
    }
}

pub async fn reconcile(scan: Arc<ImageScan>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.leader.is_leader() {
        return Ok(Action::await_change());
    }
    // A scan decided before the Registries and Repositories are listed would take a missing
    // Registry for a deleted one.
    let _ = ctx.registries.wait_until_ready().await;
    let _ = ctx.repositories.wait_until_ready().await;
    let labels = ControllerLabels { controller: CONTROLLER };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let started = Instant::now();
    let result = apply(&scan, &ctx).await;
    ctx.metrics.reconcile_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    result
}

fn key(scan: &ImageScan) -> String {
    format!("imagescan/{}/{}", scan.namespace().unwrap_or_default(), scan.name_any())
}

async fn apply(scan: &ImageScan, ctx: &Context) -> Result<Action, Error> {
    let namespace = scan.namespace().unwrap_or_default();
    let Some(repo) = ctx.repositories.get(&ObjectRef::new(&scan.spec.repository_ref.name).within(&namespace)) else {
        // Its Repository is gone: the garbage collector takes the ImageScan with it.
        return Ok(Action::await_change());
    };
    if repo.metadata.deletion_timestamp.is_some() {
        // Its images are being deleted: nothing is read from, or written to, the repository.
        return Ok(Action::await_change());
    }
    let previous = scan.status.clone().unwrap_or_default();
    let requested = scan.annotations().get(SCAN_ANNOTATION).cloned();
    let target = match target(&repo, ctx) {
        Ok(t) => t,
        // A finished scan keeps its findings while the Repository cannot be reached (its
        // Registry is being replaced, say); only a scan that is to run says why it cannot.
        Err(_) if previous.phase == ScanPhase::Complete => return Ok(Action::requeue(RETRY)),
        Err(not_ready) => {
            let status = failed(&previous, requested, not_ready.reason, not_ready.message, scan);
            write_status(scan, ctx, &previous, status).await?;
            return Ok(Action::requeue(RETRY));
        }
    };
    let frequency = plan::frequency(target.registry.spec.scanning.as_ref(), &target.path, repo.spec.scan_on_push);
    if target.registry.spec.type_ == crate::api::RegistryType::Ecr {
        // ECR scans its own images: berth asks for the scan and reports ECR's findings.
        if plan::work(scan, frequency, None) == Work::Nothing {
            return Ok(Action::await_change());
        }
        return ecr_scan(scan, ctx, &repo, &target, previous, requested).await;
    }
    if let Some(adapter) = target.registry.spec.scanning.as_ref().and_then(|s| s.scanner.as_ref()) {
        // An external scanner keeps its own data: berth's data version plays no part.
        if plan::work(scan, frequency, None) == Work::Nothing {
            return Ok(Action::await_change());
        }
        return adapter_scan(scan, ctx, &repo, &target, adapter, previous, requested).await;
    }
    let data = ctx.vulnerabilities.current();
    let covered: BTreeSet<String> = data.as_ref().map(|d| d.db.info().keys().cloned().collect()).unwrap_or_default();
    let at = data.as_ref().ok().map(|d| DataAt { version: d.version.as_str(), ecosystems: &covered });
    let work = plan::work(scan, frequency, at);
    if work == Work::Nothing {
        return Ok(Action::await_change());
    }
    let data = match data {
        Ok(data) => data,
        Err(message) => {
            let state = ctx.vulnerabilities.state();
            // During the first load the scan waits; otherwise it fails and says why: never
            // "no findings" for want of data. A change of the data reconciles every scan.
            let (status, action) = match state {
                State::Loading => {
                    let status = ImageScanStatus {
                        phase: ScanPhase::Pending,
                        reason: None,
                        message: None,
                        conditions: conditions::merge(
                            &previous.conditions,
                            conditions::ready(false, "WaitingForVulnerabilityData", message, scan.metadata.generation),
                        ),
                        observed_generation: scan.metadata.generation,
                        ..previous.clone()
                    };
                    (status, Action::requeue(RETRY))
                }
                // Only a restart with --vulnerability-data changes this.
                State::NotConfigured => {
                    (failed(&previous, requested, "NoVulnerabilityData", message, scan), Action::await_change())
                }
                _ => (failed(&previous, requested, "NoVulnerabilityData", message, scan), Action::requeue(RETRY)),
            };
            if status.phase == ScanPhase::Failed && previous.phase != ScanPhase::Failed {
                ctx.metrics.scans.get_or_create(&ScanLabels { result: "failed" }).inc();
            }
            write_status(scan, ctx, &previous, status).await?;
            return Ok(action);
        }
    };
    let started = Instant::now();
    // A re-match needs the image's packages; kept ones do, else the layers are read again.
    let kept = previous.scanned_manifest.as_deref().and_then(|m| ctx.inventories.get(m));
    if let (Work::Rematch, Some(inventory)) = (&work, kept) {
        let manifest = previous.scanned_manifest.clone().unwrap_or_default();
        let status = ImageScanStatus {
            sbom: previous.sbom.clone(),
            requested: previous.requested.clone(),
            skipped: previous.skipped.clone(),
            ..matched(&inventory, &manifest, &data, &previous, scan, &Default::default())
        };
        let before = severity_line(&previous);
        let after = severity_line(&status);
        write_status(scan, ctx, &previous, status.clone()).await?;
        ctx.metrics.scans.get_or_create(&ScanLabels { result: "rematched" }).inc();
        if before != after {
            let note = format!("matched again with newer vulnerability data: {after} (was {before})");
            publish_about(ctx, &scan.object_ref(&()), (EventType::Normal, "FindingsChanged", "Scan"), note).await;
        }
        summarise(ctx, &repo, &target, scan, status).await;
        return Ok(Action::await_change());
    }

    // An attempt that never finished (berth stopped, or was killed by the image: out of memory,
    // out of disk) is counted; after a few the image is given up until asked again.
    let attempts = match previous.phase {
        ScanPhase::InProgress => previous.attempts.unwrap_or(1) + 1,
        _ => 1,
    };
    if attempts > plan::MAX_ATTEMPTS {
        let message = format!(
            "{} attempts to scan this image were interrupted (berth stopped or was killed while reading it: \
             see its memory and --scan-work-dir space); annotate {SCAN_ANNOTATION} to try again",
            plan::MAX_ATTEMPTS
        );
        let status = ImageScanStatus {
            attempts: Some(plan::MAX_ATTEMPTS),
            ..failed(&previous, requested, plan::INTERRUPTED, message.clone(), scan)
        };
        conclude(ctx, &repo, &target, scan, &previous, status).await?;
        return Ok(Action::await_change());
    }
    let in_progress = ImageScanStatus {
        phase: ScanPhase::InProgress,
        attempts: Some(attempts),
        conditions: conditions::merge(
            &previous.conditions,
            conditions::ready(false, "InProgress", "reading the image's layers", scan.metadata.generation),
        ),
        ..previous.clone()
    };
    write_status(scan, ctx, &previous, in_progress.clone()).await?;
    let backend = match ctx.backend(&target.registry).await {
        Ok(b) => b,
        Err(e) => {
            let status = failed(&in_progress, requested, e.reason(), e.to_string(), scan);
            write_status(scan, ctx, &in_progress, status).await?;
            return Ok(Action::requeue(RETRY));
        }
    };
    let (read, sent) = crate::registry::count_requests(read_image(
        backend.as_ref(),
        &target.path,
        &scan.spec.digest,
        &ctx.settings.scan_limits,
        &ctx.settings.scan_work_dir,
    ))
    .await;
    let requests = ctx.metrics.registry_requests.get_or_create(&ControllerLabels { controller: CONTROLLER }).clone();
    requests.inc_by(sent);
    let (status, action) = match read {
        Ok((subject, files)) => {
            let inventory = Arc::new(inventory::inventory(&files));
            if !inventory.unreadable.is_empty() {
                let message =
                    format!("the image's package database does not parse: {}", inventory.unreadable.join("; "));
                (failed(&in_progress, requested, "UnreadablePackageDatabase", message, scan), Action::await_change())
            } else {
                ctx.inventories.put(&subject.digest, inventory.clone());
                let mut status = ImageScanStatus {
                    requested,
                    ..matched(&inventory, &subject.digest, &data, &previous, scan, &files.skipped)
                };
                if plan::sbom_enabled(target.registry.spec.scanning.as_ref()) {
                    let (attached, sent) = crate::registry::count_requests(attach_sbom(
                        backend.as_ref(),
                        &target.path,
                        &target.uri,
                        &subject,
                        &inventory,
                    ))
                    .await;
                    requests.inc_by(sent);
                    match attached {
                        Ok(sbom) => status.sbom = Some(sbom),
                        Err(e) => {
                            status.sbom = None;
                            let note = format!("the SBOM could not be attached to {}: {e}", subject.digest);
                            publish_about(
                                ctx,
                                &scan.object_ref(&()),
                                (EventType::Warning, "SbomNotAttached", "Scan"),
                                note,
                            )
                            .await;
                        }
                    }
                }
                (status, Action::await_change())
            }
        }
        Err(Failure::Unsupported(message)) => {
            (unsupported(&previous, requested, message, scan), Action::await_change())
        }
        Err(Failure::Failed(reason, message)) => {
            let action = if super::transient(reason) {
                Action::requeue(ctx.failure_backoff(&key(scan)))
            } else {
                Action::await_change()
            };
            (failed(&in_progress, requested, reason, message, scan), action)
        }
    };
    ctx.metrics.scan_duration.observe(started.elapsed().as_secs_f64());
    conclude(ctx, &repo, &target, scan, &in_progress, status).await?;
    Ok(action)
}

/// A scan's outcome, told everywhere it goes: its status, the scans metric, an Event, the
/// Repository's summary (and a finished scan's backoff forgotten).
async fn conclude(
    ctx: &Context,
    repo: &Repository,
    target: &super::target::Target,
    scan: &ImageScan,
    previous: &ImageScanStatus,
    status: ImageScanStatus,
) -> Result<(), Error> {
    let message = status.message.clone().unwrap_or_default();
    let (result, type_, reason, note) = match status.phase {
        ScanPhase::Complete => {
            let note = match status.package_count {
                Some(n) => format!("{n} packages: {}", severity_line(&status)),
                None => severity_line(&status),
            };
            ("complete", EventType::Normal, "ScanComplete", note)
        }
        ScanPhase::UnsupportedImage => ("unsupported", EventType::Normal, "UnsupportedImage", message),
        _ => ("failed", EventType::Warning, "ScanFailed", message),
    };
    ctx.metrics.scans.get_or_create(&ScanLabels { result }).inc();
    if status.phase == ScanPhase::Complete {
        ctx.clear_failures(&key(scan));
    }
    write_status(scan, ctx, previous, status.clone()).await?;
    publish_about(ctx, &scan.object_ref(&()), (type_, reason, "Scan"), note).await;
    summarise(ctx, repo, target, scan, status).await;
    Ok(())
}

/// Writes the Repository's scan summary with this scan's new status (the store may not have it
/// yet). A failure is logged: the next scan or reconcile writes it again.
async fn summarise(
    ctx: &Context,
    repo: &Repository,
    target: &super::target::Target,
    scan: &ImageScan,
    status: ImageScanStatus,
) {
    let mut scans = scans_of(ctx, repo);
    let this = ImageScan { status: Some(status), ..scan.clone() };
    match scans.iter_mut().find(|s| s.name_any() == this.name_any()) {
        Some(slot) => *slot = this,
        None => scans.push(this),
    }
    let frequency = plan::frequency(target.registry.spec.scanning.as_ref(), &target.path, repo.spec.scan_on_push);
    let requested = repo.status.as_ref().and_then(|s| s.scans.as_ref()).and_then(|s| s.requested.clone());
    let summary = plan::summary(frequency, requested, scans.iter());
    if let Err(e) = write_summary(ctx, repo, summary).await {
        tracing::warn!(repository = %repo.name_any(), error = %e, "cannot write the scan summary");
    }
}

/// The ImageScans of a Repository, from the store.
fn scans_of(ctx: &Context, repo: &Repository) -> Vec<ImageScan> {
    let namespace = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    ctx.scans
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()) && s.spec.repository_ref.name == name)
        .map(|s| s.as_ref().clone())
        .collect()
}

/// The SBOM referrers berth attached to a Repository's images: artifacts, not images, which a
/// lifecycle policy must not count or expire on their own.
pub fn sboms_of(ctx: &Context, repo: &Repository) -> BTreeSet<String> {
    scans_of(ctx, repo).into_iter().filter_map(|s| s.status.and_then(|s| s.sbom).map(|s| s.digest)).collect()
}

/// The field manager of `status.scans`: apart from the rest of the Repository's status, which
/// the Repository controller writes, so neither write loses the other's.
const SUMMARY_MANAGER: &str = "berth-scan-summary";

/// Applies `status.scans` when it changed.
async fn write_summary(ctx: &Context, repo: &Repository, summary: Option<ScanSummary>) -> Result<(), kube::Error> {
    let current =
        ctx.repositories.get(&ObjectRef::from_obj(repo)).and_then(|r| r.status.as_ref().and_then(|s| s.scans.clone()));
    if current == summary {
        return Ok(());
    }
    let patch = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Repository", "status": {"scans": summary}});
    Api::<Repository>::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default())
        .patch_status(&repo.name_any(), &PatchParams::apply(SUMMARY_MANAGER).force(), &Patch::Apply(patch))
        .await?;
    Ok(())
}

/// How often a scan under way in an adapter is asked for its report.
const ADAPTER_POLL: Duration = Duration::from_secs(1);

/// A scan by a Harbor Pluggable Scanner API adapter: start it (the image manifest and a
/// pull-only credential for the adapter), then ask for its report until it is there.
async fn adapter_scan(
    scan: &ImageScan,
    ctx: &Context,
    repo: &Repository,
    target: &super::target::Target,
    adapter: &ScannerAdapter,
    previous: ImageScanStatus,
    requested: Option<String>,
) -> Result<Action, Error> {
    let trouble =
        |message: String| adapter_trouble(scan, ctx, repo, target, adapter, &previous, requested.clone(), message);
    let fail = |reason: &'static str, message: String| ImageScanStatus {
        scanner: Some(adapter.url.clone()),
        ..failed(&previous, requested.clone(), reason, message, scan)
    };
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(http) => http,
        Err(e) => return trouble(format!("building the HTTP client: {e}")).await,
    };
    let base = adapter.url.trim_end_matches('/');
    let adapter_auth = match adapter_authorization(ctx, adapter).await {
        Ok(a) => a,
        Err(message) => return trouble(message).await,
    };
    let with_auth = |req: reqwest::RequestBuilder| match &adapter_auth {
        Some(value) => req.header(reqwest::header::AUTHORIZATION, value),
        None => req,
    };

    // A scan under way (for the request answered now): ask for its report.
    if let (ScanPhase::InProgress, Some(id)) = (previous.phase, previous.adapter_scan_id.as_deref())
        && previous.requested == requested
    {
        let url = format!("{base}/api/v1/scan/{id}/report");
        let answer =
            with_auth(http.get(&url).header(reqwest::header::ACCEPT, harbor::VULNERABILITY_REPORT)).send().await;
        match answer {
            Ok(r) if r.status() == reqwest::StatusCode::FOUND => return Ok(Action::requeue(ADAPTER_POLL)),
            Ok(r) if r.status().is_success() => {
                let body = match read_body(r, harbor::MAX_REPORT_BYTES).await {
                    Ok(b) => b,
                    Err(e) => return trouble(e).await,
                };
                let manifest = previous.scanned_manifest.clone().unwrap_or_default();
                let status = match harbor::parse_report(&body) {
                    Ok(report) if report.digest.is_empty() || report.digest == manifest => {
                        let mut status = plan::complete_status(
                            &Inventory::default(),
                            &report.findings,
                            &manifest,
                            Default::default(),
                            &Default::default(),
                        );
                        status.package_count = None;
                        status.vulnerability_data = None;
                        status.scanner = Some(report.scanner.clone());
                        status.requested = requested.clone();
                        status.observed_generation = scan.metadata.generation;
                        status.completed_at = Some(Time(Timestamp::now()));
                        let message = format!("{} by {}", severity_line(&status), report.scanner);
                        status.conditions = conditions::merge(
                            &previous.conditions,
                            conditions::ready(true, "Complete", message, scan.metadata.generation),
                        );
                        status
                    }
                    Ok(report) => {
                        return trouble(format!("the adapter's report is about {}, not {manifest}", report.digest))
                            .await;
                    }
                    Err(e) => return trouble(e).await,
                };
                conclude(ctx, repo, target, scan, &previous, status).await?;
                return Ok(Action::await_change());
            }
            // It does not know the scan (restarted, or expired it): start again below.
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {}
            Ok(r) => return trouble(format!("GET {url} answered {}", r.status())).await,
            Err(e) => return trouble(format!("GET {url}: {e}")).await,
        }
    }

    // Start a scan: the image manifest the adapter reads, and a pull-only credential for it.
    let backend = match ctx.backend(&target.registry).await {
        Ok(b) => b,
        Err(e) => {
            write_status(scan, ctx, &previous, fail(e.reason(), e.to_string())).await?;
            return Ok(Action::requeue(RETRY));
        }
    };
    let manifest = match image_manifest(backend.as_ref(), &target.path, &scan.spec.digest).await {
        Ok((manifest, _)) => manifest.descriptor,
        Err(Failure::Unsupported(message)) => {
            conclude(ctx, repo, target, scan, &previous, unsupported(&previous, requested, message, scan)).await?;
            return Ok(Action::await_change());
        }
        Err(Failure::Failed(reason, message)) => {
            write_status(scan, ctx, &previous, fail(reason, message)).await?;
            return Ok(Action::requeue(ctx.failure_backoff(&key(scan))));
        }
    };
    let pull = match registry_authorization(ctx, target) {
        Ok(p) => p,
        Err(message) => return trouble(message).await,
    };
    let request =
        harbor::scan_request(&target.registry.spec.url, &pull, &target.path, &manifest.digest, &manifest.media_type);
    let url = format!("{base}/api/v1/scan");
    let id = match with_auth(http.post(&url).json(&request)).send().await {
        Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {
            match read_body(r, 64 << 10).await.and_then(|b| harbor::scan_id(&b)) {
                Ok(id) => id,
                Err(message) => return trouble(message).await,
            }
        }
        Ok(r) => {
            let code = r.status();
            let body = read_body(r, 2048).await.unwrap_or_default();
            return trouble(format!("POST {url} answered {code}: {}", String::from_utf8_lossy(&body).trim())).await;
        }
        Err(e) => return trouble(format!("POST {url}: {e}")).await,
    };
    let in_progress = ImageScanStatus {
        phase: ScanPhase::InProgress,
        adapter_scan_id: Some(id),
        scanned_manifest: Some(manifest.digest.clone()),
        scanner: Some(adapter.url.clone()),
        requested,
        conditions: conditions::merge(
            &previous.conditions,
            conditions::ready(false, "InProgress", format!("scanning with {}", adapter.url), scan.metadata.generation),
        ),
        observed_generation: scan.metadata.generation,
        ..Default::default()
    };
    write_status(scan, ctx, &previous, in_progress).await?;
    Ok(Action::requeue(ADAPTER_POLL))
}

/// How `status.scanner` names ECR's own scanning.
pub const ECR_SCANNER: &str = "Amazon ECR basic scanning";
/// How often an ECR scan under way is asked for its findings.
const ECR_POLL: Duration = Duration::from_secs(5);
/// How long to wait when ECR refuses another scan of an image today (its quota).
const ECR_QUOTA_RETRY: Duration = Duration::from_secs(3600);

/// A scan by ECR itself (StartImageScan, DescribeImageScanFindings), reported through the same
/// ImageScan status as berth's own. A scan ECR already finished (scan on push) is taken as it
/// is; a new request starts another, within ECR's quota of one scan per image per day.
async fn ecr_scan(
    scan: &ImageScan,
    ctx: &Context,
    repo: &Repository,
    target: &super::target::Target,
    previous: ImageScanStatus,
    requested: Option<String>,
) -> Result<Action, Error> {
    let fail = |reason: &'static str, message: String| ImageScanStatus {
        scanner: Some(ECR_SCANNER.into()),
        ..failed(&previous, requested.clone(), reason, message, scan)
    };
    let backend = match ctx.backend(&target.registry).await {
        Ok(b) => b,
        Err(e) => {
            write_status(scan, ctx, &previous, fail(e.reason(), e.to_string())).await?;
            return Ok(Action::requeue(ctx.failure_backoff(&key(scan))));
        }
    };
    let Some(ecr) = backend.ecr() else { return Ok(Action::requeue(RETRY)) };
    let digest = scan.spec.digest.as_str();
    let in_progress = || ImageScanStatus {
        phase: ScanPhase::InProgress,
        scanned_manifest: Some(digest.to_string()),
        scanner: Some(ECR_SCANNER.into()),
        requested: requested.clone(),
        conditions: conditions::merge(
            &previous.conditions,
            conditions::ready(false, "InProgress", "ECR is scanning the image", scan.metadata.generation),
        ),
        observed_generation: scan.metadata.generation,
        ..Default::default()
    };
    let found = match ecr.scan_findings(&target.path, digest).await {
        Ok(f) => f,
        Err(e) => {
            write_status(scan, ctx, &previous, fail(e.reason(), e.to_string())).await?;
            return Ok(Action::requeue(ctx.failure_backoff(&key(scan))));
        }
    };
    // A request not yet answered needs a scan started after it, unless one is under way.
    let under_way = previous.phase == ScanPhase::InProgress && previous.requested == requested;
    let fresh_request = requested.is_some() && previous.requested != requested;
    match found.status.as_deref() {
        Some("COMPLETE" | "ACTIVE") if !fresh_request || under_way => {
            let findings: Vec<crate::scanning::Finding> = found
                .findings
                .iter()
                .map(|(id, severity, package, version)| crate::scanning::Finding {
                    id: id.clone(),
                    aliases: Vec::new(),
                    package: package.clone().unwrap_or_default(),
                    ecosystem: String::new(),
                    installed_version: version.clone().unwrap_or_default(),
                    fixed_version: None,
                    severity: ecr_severity(severity),
                    summary: None,
                })
                .collect();
            let mut status = plan::complete_status(
                &Inventory::default(),
                &findings,
                digest,
                Default::default(),
                &Default::default(),
            );
            // ECR's counts are the record (a finding list may be cut short).
            if !found.severity_counts.is_empty() {
                status.finding_severity_counts = found.severity_counts.clone();
            }
            status.package_count = None;
            status.vulnerability_data = None;
            status.scanner = Some(ECR_SCANNER.into());
            status.requested = requested.clone();
            status.observed_generation = scan.metadata.generation;
            status.completed_at = found
                .completed_at
                .and_then(|s| Timestamp::from_second(s).ok())
                .map(Time)
                .or_else(|| Some(Time(Timestamp::now())));
            let message = format!("{} by {ECR_SCANNER}", severity_line(&status));
            status.conditions = conditions::merge(
                &previous.conditions,
                conditions::ready(true, "Complete", message, scan.metadata.generation),
            );
            if previous.phase == ScanPhase::Complete
                && previous.finding_severity_counts == status.finding_severity_counts
                && previous.requested == status.requested
            {
                return Ok(Action::requeue(ECR_QUOTA_RETRY));
            }
            conclude(ctx, repo, target, scan, &previous, status).await?;
            Ok(Action::requeue(ECR_QUOTA_RETRY))
        }
        Some("FAILED") if under_way => {
            let message = found.description.clone().unwrap_or_else(|| "ECR's scan failed".into());
            write_status(scan, ctx, &previous, fail("ScanFailed", message.clone())).await?;
            publish_about(ctx, &scan.object_ref(&()), (EventType::Warning, "ScanFailed", "Scan"), message).await;
            Ok(Action::requeue(ECR_QUOTA_RETRY))
        }
        Some("UNSUPPORTED_IMAGE") => {
            let message = found.description.clone().unwrap_or_else(|| "ECR cannot scan this image".into());
            conclude(ctx, repo, target, scan, &previous, unsupported(&previous, requested, message, scan)).await?;
            Ok(Action::await_change())
        }
        Some("IN_PROGRESS" | "PENDING") => {
            if !under_way {
                write_status(scan, ctx, &previous, in_progress()).await?;
            }
            Ok(Action::requeue(ECR_POLL))
        }
        _ => match ecr.start_scan(&target.path, digest).await {
            Ok(true) => {
                write_status(scan, ctx, &previous, in_progress()).await?;
                Ok(Action::requeue(ECR_POLL))
            }
            Ok(false) => {
                let message = "ECR allows one scan of an image per day: asked again within the hour".to_string();
                write_status(scan, ctx, &previous, fail("ScanQuotaExceeded", message)).await?;
                Ok(Action::requeue(ECR_QUOTA_RETRY))
            }
            Err(e) => {
                write_status(scan, ctx, &previous, fail(e.reason(), e.to_string())).await?;
                Ok(Action::requeue(ctx.failure_backoff(&key(scan))))
            }
        },
    }
}

/// ECR's severity names as berth's.
fn ecr_severity(s: &str) -> crate::scanning::Severity {
    use crate::scanning::Severity;
    match s {
        "CRITICAL" => Severity::Critical,
        "HIGH" => Severity::High,
        "MEDIUM" => Severity::Medium,
        "LOW" => Severity::Low,
        "INFORMATIONAL" => Severity::Informational,
        _ => Severity::Undefined,
    }
}

/// An adapter that does not answer as it should: the scan fails with the reason, and is tried
/// again with backoff.
#[allow(clippy::too_many_arguments)]
async fn adapter_trouble(
    scan: &ImageScan,
    ctx: &Context,
    repo: &Repository,
    target: &super::target::Target,
    adapter: &ScannerAdapter,
    previous: &ImageScanStatus,
    requested: Option<String>,
    message: String,
) -> Result<Action, Error> {
    let status = ImageScanStatus {
        scanner: Some(adapter.url.clone()),
        ..failed(previous, requested, "ScannerAdapterError", message.clone(), scan)
    };
    let changed = previous.phase != ScanPhase::Failed || previous.message.as_deref() != Some(message.as_str());
    write_status(scan, ctx, previous, status.clone()).await?;
    if changed {
        ctx.metrics.scans.get_or_create(&ScanLabels { result: "failed" }).inc();
        publish_about(ctx, &scan.object_ref(&()), (EventType::Warning, "ScanFailed", "Scan"), message).await;
        summarise(ctx, repo, target, scan, status).await;
    }
    Ok(Action::requeue(ctx.failure_backoff(&key(scan))))
}

/// A response body of at most `max` bytes.
async fn read_body(mut r: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| format!("reading the adapter's answer: {e}"))? {
        if body.len() + chunk.len() > max {
            return Err(format!("the adapter's answer is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `Authorization` header the adapter itself wants, from its Secret.
async fn adapter_authorization(ctx: &Context, adapter: &ScannerAdapter) -> Result<Option<String>, String> {
    let Some(r) = &adapter.authorization_secret_ref else { return Ok(None) };
    let namespace = r.namespace.as_deref().unwrap_or_default();
    if let Some(message) = ctx.settings.namespaces.refusal(namespace, "the scanner adapter's Secret") {
        return Err(message);
    }
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&r.name)
        .await
        .map_err(|e| format!("reading Secret {namespace}/{}: {e}", r.name))?
        .ok_or_else(|| format!("the scanner adapter's Secret {namespace}/{} does not exist", r.name))?;
    let key = r.key.as_deref().unwrap_or("authorization");
    let value = secret
        .data
        .unwrap_or_default()
        .get(key)
        .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
        .ok_or_else(|| format!("Secret {namespace}/{} has no key {key:?}", r.name))?;
    Ok(Some(value))
}

/// What the adapter pulls the image with: a token berth signs for pull on this repository only
/// (a Registry with `tokenAuth`), or nothing for a registry that needs no credentials. berth's
/// own credentials (basic, which may push and delete) are never handed to an adapter.
fn registry_authorization(ctx: &Context, target: &super::target::Target) -> Result<String, String> {
    if target.registry.spec.token_auth.is_some() {
        let scope = format!("repository:{}:pull", target.path);
        let (token, _) = ctx.tokens.mint(&target.registry.name_any(), &scope)?;
        return Ok(format!("Bearer {token}"));
    }
    if target.registry.spec.credentials_secret_ref.is_some() {
        return Err("berth gives a scanner adapter pull-only credentials, which it can sign only for a Registry \
                    with tokenAuth; this Registry has basic credentials, which may push and delete"
            .into());
    }
    Ok(String::new())
}

/// `2 CRITICAL, 5 HIGH` or `no findings`.
fn severity_line(status: &ImageScanStatus) -> String {
    if status.finding_severity_counts.is_empty() {
        return "no findings".into();
    }
    let mut counts: Vec<(crate::scanning::Severity, i64)> = status
        .finding_severity_counts
        .iter()
        .filter_map(|(k, n)| serde_json::from_value(json!(k)).ok().map(|s| (s, *n)))
        .collect();
    counts.sort();
    counts.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect::<Vec<_>>().join(", ")
}

/// A Complete status: the inventory matched against `data`.
fn matched(
    inventory: &Inventory,
    manifest: &str,
    data: &Loaded,
    previous: &ImageScanStatus,
    scan: &ImageScan,
    skipped: &std::collections::BTreeMap<String, &'static str>,
) -> ImageScanStatus {
    let findings = matching::findings(inventory, &data.db);
    let data_ref = VulnerabilityDataRef { version: data.version.clone(), updated_at: data.updated_at.clone() };
    let mut status = plan::complete_status(inventory, &findings, manifest, data_ref, skipped);
    status.ecosystems_without_data = plan::not_covered(inventory, data.db.info().keys());
    let mut message = format!("{} packages, {}", status.package_count.unwrap_or(0), severity_line(&status));
    if !status.ecosystems_without_data.is_empty() {
        message.push_str(&format!(
            " (no vulnerability data for {}: not checked)",
            status.ecosystems_without_data.join(", ")
        ));
    }
    status.conditions =
        conditions::merge(&previous.conditions, conditions::ready(true, "Complete", message, scan.metadata.generation));
    status.observed_generation = scan.metadata.generation;
    status.completed_at = Some(Time(Timestamp::now()));
    status
}

/// An UnsupportedImage status: not something berth (or the adapter) scans.
fn unsupported(
    previous: &ImageScanStatus,
    requested: Option<String>,
    message: String,
    scan: &ImageScan,
) -> ImageScanStatus {
    ImageScanStatus {
        phase: ScanPhase::UnsupportedImage,
        reason: Some("UnsupportedImage".into()),
        message: Some(message.clone()),
        requested,
        conditions: conditions::merge(
            &previous.conditions,
            conditions::ready(false, "UnsupportedImage", message, scan.metadata.generation),
        ),
        observed_generation: scan.metadata.generation,
        ..Default::default()
    }
}

/// A Failed status that keeps nothing of an earlier scan's findings: they would be taken for
/// this image's.
fn failed(
    previous: &ImageScanStatus,
    requested: Option<String>,
    reason: &str,
    message: String,
    scan: &ImageScan,
) -> ImageScanStatus {
    ImageScanStatus {
        phase: ScanPhase::Failed,
        reason: Some(reason.to_string()),
        message: Some(message.clone()),
        requested,
        conditions: conditions::merge(
            &previous.conditions,
            conditions::ready(false, reason, message, scan.metadata.generation),
        ),
        observed_generation: scan.metadata.generation,
        ..Default::default()
    }
}

async fn write_status(
    scan: &ImageScan,
    ctx: &Context,
    previous: &ImageScanStatus,
    status: ImageScanStatus,
) -> Result<(), Error> {
    if &status == previous {
        return Ok(());
    }
    let patch = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "ImageScan", "status": status});
    Api::<ImageScan>::namespaced(ctx.client.clone(), &scan.namespace().unwrap_or_default())
        .patch_status(&scan.name_any(), &PatchParams::apply("berth-status").force(), &Patch::Apply(patch))
        .await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Blob>,
    #[serde(default)]
    layers: Vec<Blob>,
    #[serde(default)]
    manifests: Option<Vec<Entry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Blob {
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    os: String,
    architecture: String,
}

const IMAGE_CONFIG_TYPES: &[&str] =
    &["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

/// Reads the image at `digest` (its linux/amd64 image, for an index) into the files an
/// inventory reads. Returns the image manifest's descriptor and the files.
async fn read_image(
    backend: &dyn Backend,
    path: &str,
    digest: &str,
    limits: &layers::Limits,
    work_dir: &Path,
) -> Result<(Descriptor, layers::Files), Failure> {
    let (manifest, doc) = image_manifest(backend, path, digest).await?;
    if doc.layers.len() > MAX_LAYERS {
        return Err(Failure::Failed(
            "TooManyLayers",
            format!("the image has {} layers, more than {MAX_LAYERS}", doc.layers.len()),
        ));
    }
    let mut files = layers::Files::default();
    for layer in &doc.layers {
        if layer.size > limits.download_bytes {
            return Err(layers::LayerError::DownloadTooLarge { size: layer.size, limit: limits.download_bytes }.into());
        }
        let digest = checked_digest(&layer.digest)?;
        let file = TempFile::new(work_dir);
        // The manifest's size is a claim: the download is capped as it streams too.
        backend.blob_to_file(path, digest, &file.0, limits.download_bytes).await?;
        let (media_type, limits, at) = (layer.media_type.clone(), limits.clone(), file.0.clone());
        files = tokio::task::spawn_blocking(move || -> Result<layers::Files, Failure> {
            let reader = std::io::BufReader::new(
                std::fs::File::open(&at)
                    .map_err(|e| Failure::Failed("ScanWorkDir", format!("{}: {e}", at.display())))?,
            );
            layers::apply_blob(&mut files, &media_type, reader, &limits)?;
            Ok(files)
        })
        .await
        .map_err(|e| Failure::Failed("ScanPanicked", e.to_string()))??;
        drop(file);
    }
    Ok((manifest.descriptor, files))
}

/// The image manifest at `digest` (an index: its linux/amd64 image), refused when it is not a
/// container image.
async fn image_manifest(
    backend: &dyn Backend,
    path: &str,
    digest: &str,
) -> Result<(crate::registry::Manifest, ManifestDoc), Failure> {
    let mut manifest = backend.manifest(path, digest).await?;
    for _ in 0..4 {
        let doc: ManifestDoc = serde_json::from_slice(&manifest.body)
            .map_err(|e| Failure::Failed("InvalidManifest", format!("manifest {}: {e}", manifest.descriptor.digest)))?;
        let index = is_index(&manifest.descriptor.media_type)
            || doc.media_type.as_deref().is_some_and(is_index)
            || doc.manifests.is_some();
        if index {
            let entries = doc.manifests.unwrap_or_default();
            let chosen = choose(&entries).ok_or_else(|| {
                let platforms: Vec<String> = entries
                    .iter()
                    .filter_map(|e| e.platform.as_ref().map(|p| format!("{}/{}", p.os, p.architecture)))
                    .collect();
                Failure::Unsupported(format!(
                    "an image index without a linux/amd64 image (it has: {})",
                    if platforms.is_empty() { "no platforms".to_string() } else { platforms.join(", ") }
                ))
            })?;
            let digest = checked_digest(&chosen.digest)?;
            manifest = backend.manifest(path, digest).await?;
            continue;
        }
        let config_type = doc.config.as_ref().map(|c| c.media_type.as_str()).unwrap_or_default();
        if !IMAGE_CONFIG_TYPES.contains(&config_type) {
            let kind = doc.artifact_type.as_deref().unwrap_or(config_type);
            return Err(Failure::Unsupported(format!("not a container image: an artifact of type {kind:?}")));
        }
        return Ok((manifest, doc));
    }
    Err(Failure::Failed("InvalidManifest", "image indexes nested too deep".into()))
}

/// A digest from a manifest, used in a URL: `sha256:<64 hex>` only (anything else could name a
/// tag, or another path).
fn checked_digest(digest: &str) -> Result<&str, Failure> {
    if crate::registry::is_sha256_digest(digest) {
        Ok(digest)
    } else {
        Err(Failure::Failed("InvalidManifest", format!("the manifest names the digest {digest:?}, not sha256:<hex>")))
    }
}

/// The one manifest of an index, or its linux/amd64 one.
fn choose(entries: &[Entry]) -> Option<&Entry> {
    if entries.len() == 1 && entries[0].platform.is_none() {
        return entries.first();
    }
    entries.iter().find(|e| e.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"))
}

/// A file in the work folder, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(dir: &Path) -> TempFile {
        TempFile(dir.join(format!("berth-layer-{:016x}", rand::random::<u64>())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Uploads the image's SBOM and its referrer manifest, and lists it where clients look: the
/// referrers API indexes it by itself; otherwise the tag scheme's index is updated.
async fn attach_sbom(
    backend: &dyn Backend,
    path: &str,
    uri: &str,
    subject: &Descriptor,
    inventory: &Inventory,
) -> Result<SbomRef, RegistryError> {
    let document = report::cyclonedx(inventory, &[], &format!("{uri}@{}", subject.digest), "");
    let body = serde_json::to_vec_pretty(&document).map_err(|e| RegistryError::Protocol(e.to_string()))?;
    backend.put_blob(path, sbom::EMPTY_CONFIG).await?;
    let blob = backend.put_blob(path, &body).await?;
    let manifest = sbom::manifest(&blob, body.len() as u64, subject);
    let digest = crate::registry::sha256_digest(&manifest);
    backend.put_manifest(path, &digest, sbom::MANIFEST_MEDIA_TYPE, &manifest).await?;
    if backend.referrers(path, &subject.digest).await?.is_none() {
        let tag = sbom::referrers_tag(&subject.digest);
        let existing = match backend.manifest(path, &tag).await {
            Ok(m) => Some(m.body),
            Err(RegistryError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        // Another tool may write the same index at the same time (the registry has no
        // conditional PUT): read it back, and add the referrer again when it was lost.
        let mut existing = existing;
        let mut attempts = 0;
        while let Some(index) =
            sbom::add_to_index(existing.as_deref(), &digest, manifest.len() as u64).map_err(RegistryError::Protocol)?
        {
            attempts += 1;
            if attempts > 3 {
                return Err(RegistryError::Protocol(format!("the referrers index {tag} keeps losing the SBOM")));
            }
            backend.put_manifest(path, &tag, sbom::INDEX_MEDIA_TYPE, &index).await?;
            existing = Some(backend.manifest(path, &tag).await?.body);
        }
    }
    Ok(SbomRef { digest, artifact_type: sbom::ARTIFACT_TYPE.to_string() })
}

pub fn error_policy(scan: Arc<ImageScan>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(imagescan = %key(&scan), error = %error, "image scan reconcile failed");
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { controller: CONTROLLER, reason: error.reason() }).inc();
    Action::requeue(ctx.failure_backoff(&key(&scan)))
}

/// What a Repository's reconcile does about its scans: creates the ImageScans its frequency
/// asks for (and, once per new value of its `berth.dev/scan` annotation, asks every tagged
/// image's scan to run), deletes those whose image is gone, and writes the summary.
pub async fn sync(
    repo: &Repository,
    ctx: &Context,
    target: &super::target::Target,
    tagged: &BTreeMap<String, String>,
    present: &BTreeSet<String>,
) -> Result<(), NotReady> {
    let namespace = repo.namespace().unwrap_or_default();
    let frequency: Option<ScanFrequency> =
        plan::frequency(target.registry.spec.scanning.as_ref(), &target.path, repo.spec.scan_on_push);
    let mut scans = scans_of(ctx, repo);
    let existing: Vec<(String, String)> = scans.iter().map(|s| (s.name_any(), s.spec.digest.clone())).collect();
    let mut sync = plan::sync_scans(frequency, tagged, present, &existing);
    let api = Api::<ImageScan>::namespaced(ctx.client.clone(), &namespace);
    let kube_err = |e: kube::Error| NotReady::from(&Error::Kube(e));
    let answered = repo.status.as_ref().and_then(|s| s.scans.as_ref()).and_then(|s| s.requested.clone());
    // A request on the Repository covers the images it has now, once: images pushed later are
    // scanned as the frequency says, and a later request on one ImageScan stands.
    let request = repo.annotations().get(SCAN_ANNOTATION).cloned().filter(|r| Some(r) != answered.as_ref());
    if let Some(request) = &request {
        let images: BTreeSet<&String> =
            tagged.iter().filter(|(t, _)| !plan::is_referrer_tag(t)).map(|(_, d)| d).collect();
        for digest in images {
            match scans.iter().find(|s| &s.spec.digest == digest) {
                Some(s) if s.annotations().get(SCAN_ANNOTATION) != Some(request) => {
                    let patch = json!({"metadata": {"annotations": {SCAN_ANNOTATION: request}}});
                    api.patch(&s.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await.map_err(kube_err)?;
                }
                Some(_) => {}
                None if !sync.create.contains(digest) => sync.create.push(digest.clone()),
                None => {}
            }
        }
    }
    for digest in &sync.create {
        let mut scan = plan::new_image_scan(repo, digest);
        if let Some(request) = &request {
            scan.metadata.annotations = Some([(SCAN_ANNOTATION.to_string(), request.clone())].into());
        }
        match api.create(&Default::default(), &scan).await {
            Ok(created) => scans.push(created),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(kube_err(e)),
        }
    }
    for name in &sync.delete {
        match api.delete(name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(kube_err(e)),
        }
    }
    scans.retain(|s| !sync.delete.contains(&s.name_any()));
    let summary = plan::summary(frequency, request.or(answered), scans.iter());
    write_summary(ctx, repo, summary).await.map_err(kube_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scanning::Package;

    fn inventory(packages: usize) -> Arc<Inventory> {
        let package = |i: usize| Package {
            name: format!("package-{i}"),
            version: "1.0.0".into(),
            ecosystem: "npm".into(),
            source: None,
            location: "/node_modules".into(),
        };
        Arc::new(Inventory { os: None, packages: (0..packages).map(package).collect(), unreadable: vec![] })
    }

    #[test]
    fn kept_inventories_are_bounded_in_bytes_and_the_least_recently_used_goes_first() {
        let kept = Inventories::default();
        let big = inventory(200_000); // ~20 MiB by the estimate
        assert!(inventory_bytes(&big) > KEPT_INVENTORY_BYTES / 4);
        kept.put("a", big.clone());
        kept.put("b", big.clone());
        kept.put("c", big.clone());
        assert!(kept.get("a").is_some(), "a is used: now the most recent");
        kept.put("d", big.clone());
        assert!(kept.get("b").is_none(), "the least recently used went");
        assert!(kept.get("a").is_some() && kept.get("c").is_some() && kept.get("d").is_some());
        let total = kept.kept.lock().unwrap().bytes;
        assert!(total <= KEPT_INVENTORY_BYTES, "{total}");
        // Putting the same image again does not count it twice.
        kept.put("d", big);
        assert_eq!(kept.kept.lock().unwrap().bytes, total);
    }

    #[test]
    fn only_sha256_digests_from_a_manifest_are_fetched() {
        assert!(checked_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
        for bad in ["latest", "sha256:../../other/blobs/x", "md5:abc"] {
            assert!(matches!(checked_digest(bad), Err(Failure::Failed("InvalidManifest", _))), "{bad}");
        }
    }
}
