//! Digest-pinned rollouts, the pure part: which workloads opted in and how, what their images
//! refer to, which container images to pin to which digest, when to roll back, what the
//! server-side apply body is, and when to poll a tag or list a repository; which tag a version
//! policy chooses (`policy`) and its offline preview, and whether a pin passes the scan gate
//! (`gate`). No I/O;
//! `controllers::rollout` reads workloads and digests, calls these, and applies the result.

pub mod gate;
mod namespaces;
pub mod policy;
pub mod preview;
mod record;
mod schedule;

pub use gate::{HELD_ANNOTATION, MAX_SEVERITY_ANNOTATION, MaxSeverity};
pub use namespaces::{WatchChanges, WatchKey, watch_changes};
pub use policy::{Candidate, Policy};
pub use record::{
    BAD_DIGESTS_ANNOTATION, DIGEST_ANNOTATION, Kind, PINNED_AT_ANNOTATION, PINNED_GENERATION_ANNOTATION,
    PREVIOUS_DIGEST_ANNOTATION, PREVIOUS_TAG_ANNOTATION, Record, apply_body, rollback,
};
pub use schedule::{PollOutcome, Schedule, recheck_delay};

use std::{collections::BTreeMap, time::Duration};

use crate::hosts;

/// `berth.dev/rollout: "digest"` (or a version policy, see [`policy`]) opts a Deployment,
/// StatefulSet, DaemonSet or CronJob in.
pub const ROLLOUT_ANNOTATION: &str = "berth.dev/rollout";
/// A namespace opts in first: berth rolls out workloads only in namespaces labelled
/// `berth.dev/rollouts: enabled`, so whoever may annotate a workload cannot alone make berth
/// write to it.
pub const NAMESPACE_LABEL: &str = "berth.dev/rollouts";
pub const NAMESPACE_ENABLED: &str = "enabled";
/// Comma-separated container names to follow (default: every container and initContainer whose
/// image is in a registry berth knows).
pub const CONTAINERS_ANNOTATION: &str = "berth.dev/containers";
/// How often to poll the watched tags when no registry event arrives (default 5m, at least 10s).
pub const POLL_INTERVAL_ANNOTATION: &str = "berth.dev/poll-interval";
/// `auto`: roll back to the previous digest when a Deployment's rollout exceeds its progress deadline.
pub const ROLLBACK_ANNOTATION: &str = "berth.dev/rollback";

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(300);
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// A container image reference as a pod spec writes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageRef {
    /// `host[:port]`; `docker.io` when the reference names none.
    pub host: String,
    /// Repository path, e.g. `team-a/app` (`library/nginx` for `nginx` on docker.io).
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// The tag followed: the named one, or `latest`.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// `host/path:tag@digest`, keeping the tag for people.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}/{}:{}@{digest}", self.host, self.path, self.tag_or_latest())
    }

    /// The same repository under another tag, without a digest.
    pub fn with_tag(&self, tag: &str) -> ImageRef {
        ImageRef { host: self.host.clone(), path: self.path.clone(), tag: Some(tag.to_string()), digest: None }
    }
}

/// A repository followed by version policies: (Registry name, path).
pub type RepoKey = (String, String);

/// The repository `image` is in, when berth knows its registry under the host the image names.
pub fn repo_key(registries: &hosts::Index, image: &ImageRef) -> Option<RepoKey> {
    let registry = registries.registry(&image.host)?;
    Some((registry.to_string(), image.path.clone()))
}

/// A followed tag: (Registry name, path, tag). Keyed by the Registry, not by the host an image
/// names, so workloads that pull one tag by different names (the in-cluster url, a node port,
/// an Ingress) share one poll, and a registry event (which knows its Registry, not the name a
/// node pulls by) reaches them all.
pub type TagKey = (String, String, String);

/// The tag `image` follows, when berth knows its registry under the host the image names.
pub fn tag_key(registries: &hosts::Index, image: &ImageRef) -> Option<TagKey> {
    let registry = registries.registry(&image.host)?;
    Some((registry.to_string(), image.path.clone(), image.tag_or_latest().to_string()))
}

/// A tag as the distribution reference grammar allows it: 1 to 128 of `[A-Za-z0-9_.-]`, not
/// starting with `.` or `-`. Tags from listings and events are checked with it before they go
/// into a URL or an image reference.
pub fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !t.starts_with(['.', '-'])
}

fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

/// Parses an image reference with the grammar of the distribution reference library: the first
/// component is a host if it has a `.` or `:`, is `localhost` or has an upper-case letter (see
/// [`hosts::split_reference`]). The host stays as written, so a pin keeps the name the workload
/// pulls by.
pub fn parse_image(reference: &str) -> Result<ImageRef, String> {
    let bad = |why: &str| format!("image {reference:?}: {why}");
    if reference.is_empty() || reference.len() > 4096 || reference.chars().any(char::is_whitespace) {
        return Err(bad("empty, too long or contains whitespace"));
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => {
            let hex = d.strip_prefix("sha256:").ok_or_else(|| bad("digest must be sha256:<64 hex>"))?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                return Err(bad("digest must be sha256:<64 lower-case hex>"));
            }
            (n, Some(d.to_string()))
        }
        None => (reference, None),
    };
    let last_slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (&name_tag[..last_slash + i], Some(&name_tag[last_slash + i + 1..])),
        None => (name_tag, None),
    };
    if let Some(t) = tag
        && !valid_tag(t)
    {
        return Err(bad("tag must be 1 to 128 of [A-Za-z0-9_.-], not starting with . or -"));
    }
    let (host, rest) = hosts::split_reference(name);
    let parts: Vec<&str> = rest.split('/').collect();
    if host.is_empty() || !parts.iter().all(|c| valid_component(c)) {
        return Err(bad("repository path must be lower-case components joined by '/'"));
    }
    let mut path = parts.join("/");
    if hosts::canonical(host) == hosts::DOCKER_HUB && parts.len() == 1 {
        path = format!("library/{path}");
    }
    let host = host.to_string();
    Ok(ImageRef { host, path, tag: tag.map(String::from), digest })
}

/// How a workload asked to be rolled out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `digest`: follow the workload's own tags; any other policy chooses among the tags of
    /// each followed container's repository.
    pub policy: Policy,
    /// Only these containers; `None`: every container in a known registry.
    pub containers: Option<Vec<String>>,
    pub poll_interval: Duration,
    pub auto_rollback: bool,
    /// `berth.dev/max-severity`: a new digest is pinned only once its scan is complete with no
    /// finding above this (see [`gate`]); `None`: not gated.
    pub max_severity: Option<MaxSeverity>,
}

/// Reads a workload's annotations: `Ok(None)` when it did not opt in, `Err` with a message for a
/// Warning event when an annotation is malformed (the workload is then left alone).
pub fn parse_settings(annotations: &BTreeMap<String, String>) -> Result<Option<Settings>, String> {
    let policy = match annotations.get(ROLLOUT_ANNOTATION) {
        None => return Ok(None),
        Some(text) => policy::parse(text).map_err(|e| format!("{ROLLOUT_ANNOTATION}: {e}"))?,
    };
    let containers = match annotations.get(CONTAINERS_ANNOTATION) {
        None => None,
        Some(list) => {
            let names: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
            if let Some(bad) = names.iter().find(|n| n.is_empty() || n.len() > 63 || !valid_container_name(n)) {
                return Err(format!(
                    "{CONTAINERS_ANNOTATION} must be a comma-separated list of container names, got {bad:?} in {list:?}"
                ));
            }
            Some(names)
        }
    };
    let poll_interval = match annotations.get(POLL_INTERVAL_ANNOTATION) {
        None => DEFAULT_POLL_INTERVAL,
        Some(text) => {
            let d = crate::duration::parse(text.trim()).map_err(|e| format!("{POLL_INTERVAL_ANNOTATION}: {e}"))?;
            if d < MIN_POLL_INTERVAL {
                return Err(format!("{POLL_INTERVAL_ANNOTATION} must be at least {MIN_POLL_INTERVAL:?}, got {text:?}"));
            }
            d
        }
    };
    let auto_rollback = match annotations.get(ROLLBACK_ANNOTATION).map(|v| v.trim()) {
        None | Some("off") => false,
        Some("auto") => true,
        Some(other) => return Err(format!("{ROLLBACK_ANNOTATION} must be \"auto\" or \"off\", got {other:?}")),
    };
    // Malformed, the workload is left alone rather than rolled out ungated.
    let max_severity = match annotations.get(MAX_SEVERITY_ANNOTATION) {
        None => None,
        Some(text) => Some(MaxSeverity::parse(text).map_err(|e| format!("{MAX_SEVERITY_ANNOTATION}: {e}"))?),
    };
    Ok(Some(Settings { policy, containers, poll_interval, auto_rollback, max_severity }))
}

fn valid_container_name(n: &str) -> bool {
    n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

/// One container of a pod template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub init: bool,
}

/// A container to pin: its new image and the digest it had.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pin {
    pub container: String,
    pub init: bool,
    pub image: String,
    pub digest: String,
    pub previous_digest: Option<String>,
    /// The tag the container named before, when a version policy moves it to another tag (a
    /// rollback goes back to it).
    pub previous_tag: Option<String>,
    /// Why a version policy chose this tag, for Events.
    pub reason: Option<String>,
}

/// What berth knows now about the tags its workloads follow.
pub trait Digests {
    /// The digest `host/path:tag` points at now, if known.
    fn current(&self, image: &ImageRef) -> Option<&str>;
    /// When a digest was pushed (unix ms), if the repository's ledger knows: the same answer
    /// after a restart or a failover.
    fn pushed_at(&self, image: &ImageRef, digest: &str) -> Option<i64>;
    /// The tags of the repository `image` is in, as last listed, each with the digest the
    /// registry gave for it (when berth asked) and its push time (when known); `None` until the
    /// repository has been listed.
    fn candidates(&self, image: &ImageRef) -> Option<Vec<Candidate>>;
    /// Whether the digest known for `host/path:tag` was read just now (after the repository was
    /// last listed, and recently): a version policy asks again before it pins an older answer.
    fn fresh(&self, _image: &ImageRef) -> bool {
        true
    }
    /// Whether asking the registry for `host/path:tag` failed lately (it is asked again after a
    /// backoff): `newest-pushed` decides without it meanwhile.
    fn lookup_failing(&self, _image: &ImageRef) -> bool {
        false
    }
}

/// What a workload needs now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub pins: Vec<Pin>,
    /// Tags (`host/path:tag`) whose digest a version policy needs before it can decide: the tag
    /// it picks, or for `newest-pushed` every matching tag (push times are kept by digest).
    /// Asked of the registry once each, then decided again.
    pub resolve: Vec<ImageRef>,
    /// Followed containers the plan could not decide for yet (their tag's digest, the
    /// repository's listing or a lookup is not known): what berth recorded for them (a hold of
    /// the scan gate) stands until they are decided.
    pub undecided: Vec<String>,
}

/// Which containers to pin. A container is followed when it is selected (or no selection was
/// given) and its image is in a known registry.
///
/// - `digest`: it is pinned when its tag now points at a digest other than the one it runs,
///   that digest is not marked bad for this workload, and it is not older than the running one
///   (by the ledger's push times).
/// - A version policy: the policy picks among the repository's tags, leaving out those whose
///   digest is marked bad, never below the running tag in its order; the container is pinned to
///   `repo:<tag>@<digest>` when that differs from what it runs.
pub fn plan(
    containers: &[Container],
    settings: &Settings,
    known_host: impl Fn(&str) -> bool,
    digests: &impl Digests,
    bad: &[String],
) -> Plan {
    plan_since(containers, settings, known_host, digests, bad, None)
}

/// [`plan`], knowing when berth last pinned the workload (unix ms, `berth.dev/pinned-at` plus
/// its rounding): what runs was pushed before then. `newest-pushed` places a running tag whose
/// push time it does not know (deleted since, or the ledger does not have it) there, so a tag
/// pushed after that moves it on, and one pushed before cannot move it back.
pub fn plan_since(
    containers: &[Container],
    settings: &Settings,
    known_host: impl Fn(&str) -> bool,
    digests: &impl Digests,
    bad: &[String],
    pinned_before_ms: Option<i64>,
) -> Plan {
    let mut out = Plan::default();
    for c in containers {
        let selected = match &settings.containers {
            Some(names) => names.contains(&c.name),
            None => true,
        };
        if !selected {
            continue;
        }
        let Ok(image) = parse_image(&c.image) else { continue };
        if !known_host(&image.host) {
            continue;
        }
        let pin = if settings.policy.is_version() {
            version_pin(c, &image, &settings.policy, digests, (bad, pinned_before_ms), &mut out)
        } else {
            if digests.current(&image).is_none() {
                out.undecided.push(c.name.clone());
            }
            digest_pin(c, &image, digests, bad)
        };
        out.pins.extend(pin);
    }
    out
}

fn digest_pin(c: &Container, image: &ImageRef, digests: &impl Digests, bad: &[String]) -> Option<Pin> {
    let target = digests.current(image)?;
    if image.digest.as_deref() == Some(target) || bad.iter().any(|b| b == target) {
        return None;
    }
    if let Some(running) = &image.digest
        && let (Some(new), Some(old)) = (digests.pushed_at(image, target), digests.pushed_at(image, running))
        && new < old
    {
        return None; // never back to an older image
    }
    Some(Pin {
        container: c.name.clone(),
        init: c.init,
        image: image.pinned(target),
        digest: target.to_string(),
        previous_digest: image.digest.clone(),
        ..Pin::default()
    })
}

fn version_pin(
    c: &Container,
    image: &ImageRef,
    policy: &Policy,
    digests: &impl Digests,
    (bad, pinned_before_ms): (&[String], Option<i64>),
    out: &mut Plan,
) -> Option<Pin> {
    let Some(mut candidates) = digests.candidates(image) else {
        out.undecided.push(c.name.clone());
        return None;
    };
    let mut resolve = |image: ImageRef| {
        out.resolve.push(image);
        if out.undecided.last() != Some(&c.name) {
            out.undecided.push(c.name.clone());
        }
    };
    candidates.retain(|c| c.digest.as_ref().is_none_or(|d| !bad.contains(d)));
    if let (Policy::NewestPushed(_), Some(running), Some(bound)) = (policy, image.tag.as_deref(), pinned_before_ms) {
        match candidates.iter_mut().find(|c| c.tag == running) {
            Some(c) if c.pushed_at_ms.is_none() => c.pushed_at_ms = Some(bound),
            Some(_) => {}
            None => candidates.push(Candidate {
                tag: running.to_string(),
                digest: image.digest.clone(),
                pushed_at_ms: Some(bound),
            }),
        }
    }
    if let Policy::NewestPushed(_) = policy {
        let unknown: Vec<ImageRef> = candidates
            .iter()
            .filter(|c| c.digest.is_none() && policy.considers(&c.tag))
            .filter(|c| !digests.lookup_failing(&image.with_tag(&c.tag)))
            .map(|c| image.with_tag(&c.tag))
            .collect();
        if !unknown.is_empty() {
            unknown.into_iter().for_each(&mut resolve);
            return None;
        }
    }
    let selection = policy::select(policy, &candidates, image.tag.as_deref());
    let tag = selection.tag?;
    if image.tag.as_deref() == Some(tag.as_str()) && !candidates.iter().any(|c| c.tag == tag) {
        return None; // kept: the running tag is no longer listed, and nothing is above it
    }
    let Some(digest) = selection.digest else {
        resolve(image.with_tag(&tag));
        return None;
    };
    if image.tag.as_deref() == Some(tag.as_str()) && image.digest.as_deref() == Some(digest.as_str()) {
        return None;
    }
    // A pin writes what the registry says now: a digest read before the last listing (the tag
    // may have been pushed again since) is asked for again first.
    if !digests.fresh(&image.with_tag(&tag)) {
        resolve(image.with_tag(&tag));
        return None;
    }
    Some(Pin {
        container: c.name.clone(),
        init: c.init,
        image: image.with_tag(&tag).pinned(&digest),
        previous_digest: image.digest.clone(),
        previous_tag: (image.tag_or_latest() != tag).then(|| image.tag_or_latest().to_string()),
        digest,
        reason: Some(selection.reason),
    })
}

#[cfg(test)]
mod tests;
