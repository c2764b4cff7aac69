//! What berth remembers on a workload (its own annotations), the rollback decision, and the
//! server-side apply body that touches only the image fields and those annotations.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Container, HELD_ANNOTATION, Pin, parse_image, valid_tag};

/// `container=digest,...`: the digest each followed container is pinned to.
pub const DIGEST_ANNOTATION: &str = "berth.dev/digest";
/// `container=digest,...`: the digest each container ran before its last pin (rollback target).
pub const PREVIOUS_DIGEST_ANNOTATION: &str = "berth.dev/previous-digest";
/// `container=tag,...`: the tag a container named before a version policy moved it to another
/// tag (a rollback goes back to it, not only to its digest).
pub const PREVIOUS_TAG_ANNOTATION: &str = "berth.dev/previous-tag";
/// RFC 3339 time of the last pin or rollback.
pub const PINNED_AT_ANNOTATION: &str = "berth.dev/pinned-at";
/// Comma-separated digests rolled back from: not applied again to this workload.
pub const BAD_DIGESTS_ANNOTATION: &str = "berth.dev/bad-digests";
/// The generation of the workload that berth's last pin produced: only a rollout berth started
/// is rolled back. Kept on the workload so a restarted or new leader decides the same way.
pub const PINNED_GENERATION_ANNOTATION: &str = "berth.dev/pinned-generation";
/// At most this many bad digests are remembered (oldest forgotten first).
pub const MAX_BAD_DIGESTS: usize = 16;

/// berth's own annotations on a workload, parsed. Malformed values read as empty: berth wrote
/// them, and a person editing them should not be able to wedge the controller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub digests: BTreeMap<String, String>,
    pub previous: BTreeMap<String, String>,
    pub previous_tags: BTreeMap<String, String>,
    pub pinned_at: Option<String>,
    pub bad: Vec<String>,
    pub pinned_generation: Option<i64>,
    /// What the scan gate holds (`berth.dev/rollout-held`), as written: berth only compares it
    /// with what it would write now, and writes that.
    pub held: Option<String>,
}

fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn parse_map(text: Option<&String>) -> BTreeMap<String, String> {
    text.map(|t| {
        t.split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(c, d)| (c.trim().to_string(), d.trim().to_string()))
            .filter(|(c, d)| !c.is_empty() && is_digest(d))
            .collect()
    })
    .unwrap_or_default()
}

/// `container=tag,...`, keeping only valid tags.
fn parse_tags(text: Option<&String>) -> BTreeMap<String, String> {
    text.map(|t| {
        t.split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(c, t)| (c.trim().to_string(), t.trim().to_string()))
            .filter(|(c, t)| !c.is_empty() && valid_tag(t))
            .collect()
    })
    .unwrap_or_default()
}

fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter().map(|(c, d)| format!("{c}={d}")).collect::<Vec<_>>().join(",")
}

impl Record {
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Record {
        Record {
            digests: parse_map(annotations.get(DIGEST_ANNOTATION)),
            previous: parse_map(annotations.get(PREVIOUS_DIGEST_ANNOTATION)),
            previous_tags: parse_tags(annotations.get(PREVIOUS_TAG_ANNOTATION)),
            pinned_at: annotations.get(PINNED_AT_ANNOTATION).cloned(),
            bad: annotations
                .get(BAD_DIGESTS_ANNOTATION)
                .map(|t| t.split(',').map(str::trim).filter(|d| is_digest(d)).map(String::from).collect())
                .unwrap_or_default(),
            pinned_generation: annotations.get(PINNED_GENERATION_ANNOTATION).and_then(|g| g.trim().parse().ok()),
            held: annotations.get(HELD_ANNOTATION).cloned(),
        }
    }

    /// The annotations as berth applies them (every one it owns, so none is dropped by the apply).
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        if !self.digests.is_empty() {
            a.insert(DIGEST_ANNOTATION.to_string(), format_map(&self.digests));
        }
        if !self.previous.is_empty() {
            a.insert(PREVIOUS_DIGEST_ANNOTATION.to_string(), format_map(&self.previous));
        }
        if !self.previous_tags.is_empty() {
            a.insert(PREVIOUS_TAG_ANNOTATION.to_string(), format_map(&self.previous_tags));
        }
        if let Some(t) = &self.pinned_at {
            a.insert(PINNED_AT_ANNOTATION.to_string(), t.clone());
        }
        if !self.bad.is_empty() {
            a.insert(BAD_DIGESTS_ANNOTATION.to_string(), self.bad.join(","));
        }
        if let Some(g) = self.pinned_generation {
            a.insert(PINNED_GENERATION_ANNOTATION.to_string(), g.to_string());
        }
        if let Some(h) = &self.held {
            a.insert(HELD_ANNOTATION.to_string(), h.clone());
        }
        a
    }

    /// The record after applying `pins` at time `now` to a workload at `generation` (the pin
    /// changes the pod template, so the workload's next generation is berth's rollout).
    pub fn pinned(&self, pins: &[Pin], now: &str, generation: Option<i64>) -> Record {
        let mut next = self.clone();
        next.pinned_generation = generation.map(|g| g + 1);
        for p in pins {
            next.digests.insert(p.container.clone(), p.digest.clone());
            match &p.previous_digest {
                Some(prev) => next.previous.insert(p.container.clone(), prev.clone()),
                None => next.previous.remove(&p.container),
            };
            match &p.previous_tag {
                Some(tag) => next.previous_tags.insert(p.container.clone(), tag.clone()),
                None => next.previous_tags.remove(&p.container),
            };
        }
        next.pinned_at = Some(now.to_string());
        next
    }
}

/// The rollback of a Deployment whose rollout berth started and which exceeded its progress
/// deadline: every container pinned by berth that still runs the pinned digest and has a
/// previous digest goes back to it, and the failed digest is marked bad so it is not applied
/// again (until the tag moves, or by a version policy at all). A container a version policy
/// moved to another tag goes back to that tag too. `None` when there is nothing berth can roll
/// back.
pub fn rollback(containers: &[Container], record: &Record, now: &str) -> Option<(Vec<Pin>, Record)> {
    let mut pins = Vec::new();
    let mut next = record.clone();
    for c in containers {
        let (Some(current), Some(previous)) = (record.digests.get(&c.name), record.previous.get(&c.name)) else {
            continue;
        };
        let Ok(image) = parse_image(&c.image) else { continue };
        if image.digest.as_deref() != Some(current.as_str()) || current == previous {
            continue;
        }
        let back = match record.previous_tags.get(&c.name) {
            Some(tag) => image.with_tag(tag),
            None => image.clone(),
        };
        pins.push(Pin {
            container: c.name.clone(),
            init: c.init,
            image: back.pinned(previous),
            digest: previous.clone(),
            previous_digest: Some(current.clone()),
            previous_tag: (back.tag_or_latest() != image.tag_or_latest()).then(|| image.tag_or_latest().to_string()),
            ..Pin::default()
        });
        if !next.bad.contains(current) {
            next.bad.push(current.clone());
        }
        next.digests.insert(c.name.clone(), previous.clone());
        next.previous.remove(&c.name);
        next.previous_tags.remove(&c.name);
    }
    if pins.is_empty() {
        return None;
    }
    let overflow = next.bad.len().saturating_sub(MAX_BAD_DIGESTS);
    next.bad.drain(..overflow);
    // A rollback is not a rollout of berth's to roll back again.
    next.pinned_generation = None;
    next.pinned_at = Some(now.to_string());
    Some((pins, next))
}

/// The kinds of workload berth rolls out, and where each keeps its pod template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
    CronJob,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::CronJob => "CronJob",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::CronJob => "batch/v1",
            _ => "apps/v1",
        }
    }
}

/// The server-side apply body of the `berth-rollout` field manager: the image of every
/// container berth has pinned (now or before: a field an apply leaves out is removed from its
/// manager) and berth's annotations. Containers are matched by name, the list-map key, so no
/// other field of the pod template is touched. Containers berth does not follow are left out.
pub fn apply_body(
    kind: Kind,
    namespace: &str,
    name: &str,
    containers: &[Container],
    pins: &[Pin],
    record: &Record,
) -> Value {
    let image_of = |c: &Container| -> Option<String> {
        if let Some(p) = pins.iter().find(|p| p.container == c.name && p.init == c.init) {
            return Some(p.image.clone());
        }
        record.digests.contains_key(&c.name).then(|| c.image.clone())
    };
    let entries = |init: bool| -> Vec<Value> {
        containers
            .iter()
            .filter(|c| c.init == init)
            .filter_map(|c| image_of(c).map(|image| json!({"name": c.name, "image": image})))
            .collect()
    };
    let mut pod_spec = serde_json::Map::new();
    let (main, init) = (entries(false), entries(true));
    if !main.is_empty() {
        pod_spec.insert("containers".into(), Value::Array(main));
    }
    if !init.is_empty() {
        pod_spec.insert("initContainers".into(), Value::Array(init));
    }
    let template = json!({"spec": pod_spec});
    let spec = match kind {
        Kind::CronJob => json!({"jobTemplate": {"spec": {"template": template}}}),
        _ => json!({"template": template}),
    };
    json!({
        "apiVersion": kind.api_version(),
        "kind": kind.as_str(),
        "metadata": {"name": name, "namespace": namespace, "annotations": record.to_annotations()},
        "spec": spec,
    })
}
