//! `POST /events/registry/{registry}`: Distribution notifications (push and delete events).
//!
//! Authenticated by the shared token in the Registry's `notifications.secretRef` (constant-time
//! compare), body bounded, idempotent by event id (delivery is at-least-once). A manifest push
//! records its time and reconciles the Repository at once; polling stays the fallback.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
};
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{Api, runtime::reflector::ObjectRef};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::{
    api::Registry,
    controllers::{Context, rollout::TagMoved},
    metrics::EventLabels,
    registry::MANIFEST_MEDIA_TYPES,
};

/// Largest notification body accepted (Distribution sends one event per request).
pub const MAX_BODY: usize = 1024 * 1024;
const RECENT_IDS: usize = 50_000;
const SECRET_TTL: Duration = Duration::from_secs(10);
/// Above this many Repositories with pending events, forget those of deleted Repositories.
const PENDING_SWEEP_AT: usize = 1024;
/// An event's own time is believed only this close before its arrival: a forged or replayed
/// event from 2001 must not make an image look 25 years old to `sinceImagePushed` rules.
/// (The registry retries undelivered events; one that arrives later counts as pushed on
/// arrival, which can only make an image look newer, never older.)
pub const EVENT_TIME_WINDOW_MS: i64 = 5 * 60 * 1000;

/// What one registry event means to berth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryEvent {
    ManifestPushed {
        id: String,
        repository: String,
        digest: String,
        tag: Option<String>,
        at: i64,
    },
    ManifestDeleted {
        id: String,
        repository: String,
        digest: Option<String>,
        tag: Option<String>,
    },
    /// Blob uploads, pulls, mounts: nothing to do.
    Ignored {
        id: String,
    },
}

impl RegistryEvent {
    pub fn id(&self) -> &str {
        match self {
            RegistryEvent::ManifestPushed { id, .. }
            | RegistryEvent::ManifestDeleted { id, .. }
            | RegistryEvent::Ignored { id } => id,
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
struct RawEvent {
    id: String,
    timestamp: Option<String>,
    action: String,
    target: RawTarget,
}

#[derive(Deserialize)]
struct RawTarget {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    repository: String,
    #[serde(default)]
    tag: Option<String>,
}

/// Parses a notification envelope; `now` and push times are unix milliseconds. Errors say what
/// is wrong, for a 400.
pub fn parse_envelope(body: &[u8], now: i64) -> Result<Vec<RegistryEvent>, String> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| format!("not a notification envelope: {e}"))?;
    envelope
        .events
        .into_iter()
        .map(|e| {
            if e.id.is_empty() {
                return Err("an event without an id".to_string());
            }
            let is_manifest = e.target.media_type.as_deref().is_some_and(|m| MANIFEST_MEDIA_TYPES.contains(&m));
            Ok(match e.action.as_str() {
                "push" if is_manifest => {
                    let digest = e
                        .target
                        .digest
                        .filter(|d| d.starts_with("sha256:"))
                        .ok_or("a manifest push without a digest")?;
                    // The registry's clock, never in the future of ours, and believed only
                    // close to the event's arrival.
                    let at = e
                        .timestamp
                        .as_deref()
                        .and_then(|t| t.parse::<Timestamp>().ok())
                        .map(|t| t.as_millisecond().min(now))
                        .filter(|t| *t >= now - EVENT_TIME_WINDOW_MS)
                        .unwrap_or(now);
                    RegistryEvent::ManifestPushed {
                        id: e.id,
                        repository: e.target.repository,
                        digest,
                        tag: e.target.tag,
                        at,
                    }
                }
                "delete" => RegistryEvent::ManifestDeleted {
                    id: e.id,
                    repository: e.target.repository,
                    digest: e.target.digest,
                    tag: e.target.tag,
                },
                _ => RegistryEvent::Ignored { id: e.id },
            })
        })
        .collect()
}

/// Event ids already handled, bounded (oldest forgotten first).
#[derive(Default)]
pub struct RecentIds {
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    /// True the first time an id is offered.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() >= RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

pub struct EventsState {
    pub ctx: Arc<Context>,
    recent: Mutex<RecentIds>,
    secrets: Mutex<std::collections::HashMap<String, (Vec<u8>, Instant)>>,
    /// Forwards events that reach a follower to the leader.
    forward: reqwest::Client,
}

impl EventsState {
    pub fn new(ctx: Arc<Context>) -> EventsState {
        let forward = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        EventsState { ctx, recent: Mutex::default(), secrets: Mutex::default(), forward }
    }

    /// Hands a notification to the leader as it came (the leader checks the token). 503 when
    /// the leader is unknown or does not answer, so that the registry retries.
    async fn to_leader(&self, registry: &str, headers: &HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
        let count =
            |result: &'static str| self.ctx.metrics.registry_events.get_or_create(&EventLabels { result }).inc();
        let Some(addr) = self.ctx.leader.leader_address().await else {
            count("no_leader");
            return (StatusCode::SERVICE_UNAVAILABLE, "no leader to hand the event to; retry\n");
        };
        let mut req = self.forward.post(format!("http://{addr}/events/registry/{registry}")).body(body);
        for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
            if let Some(v) = headers.get(&name) {
                req = req.header(name, v.clone());
            }
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                count("forwarded");
                (StatusCode::OK, "ok\n")
            }
            Ok(r) => {
                count("forward_refused");
                match r.status().as_u16() {
                    401 => (StatusCode::UNAUTHORIZED, "wrong or missing notification token\n"),
                    400 => (StatusCode::BAD_REQUEST, "malformed notification envelope\n"),
                    _ => (StatusCode::SERVICE_UNAVAILABLE, "the leader did not take the event; retry\n"),
                }
            }
            Err(e) => {
                count("forward_failed");
                tracing::warn!(error = %e, leader = %addr, "cannot hand an event to the leader");
                (StatusCode::SERVICE_UNAVAILABLE, "the leader does not answer; retry\n")
            }
        }
    }

    /// The shared token for a registry's notifications, cached briefly.
    async fn token(&self, registry: &Registry) -> Result<Option<Vec<u8>>, kube::Error> {
        let Some(n) = &registry.spec.notifications else {
            return Ok(None);
        };
        let ns = n.secret_ref.namespace.clone().unwrap_or_default();
        let key = n.secret_ref.key.clone().unwrap_or_else(|| "token".into());
        let cache_key = format!("{ns}/{}/{key}", n.secret_ref.name);
        if let Some((token, at)) = self.secrets.lock().unwrap_or_else(|e| e.into_inner()).get(&cache_key)
            && at.elapsed() < SECRET_TTL
        {
            return Ok(Some(token.clone()));
        }
        let secret = Api::<Secret>::namespaced(self.ctx.client.clone(), &ns).get_opt(&n.secret_ref.name).await?;
        let token = secret.and_then(|s| s.data).and_then(|d| d.get(&key).map(|v| v.0.clone()));
        if let Some(t) = &token {
            self.secrets.lock().unwrap_or_else(|e| e.into_inner()).insert(cache_key, (t.clone(), Instant::now()));
        }
        Ok(token)
    }
}

fn accepted_content_type(headers: &HeaderMap) -> bool {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ct = ct.split(';').next().unwrap_or("").trim();
    matches!(
        ct,
        "application/vnd.docker.distribution.events.v1+json"
            | "application/vnd.docker.distribution.events.v2+json"
            | "application/json"
    )
}

pub async fn registry_events(
    State(state): State<Arc<EventsState>>,
    Path(registry_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let ctx = &state.ctx;
    if !ctx.leader.is_leader() {
        return state.to_leader(&registry_name, &headers, body).await;
    }
    let count = |result: &'static str| ctx.metrics.registry_events.get_or_create(&EventLabels { result }).inc();
    let Some(registry) = ctx.registries.get(&ObjectRef::new(&registry_name)) else {
        count("unknown_registry");
        return (StatusCode::NOT_FOUND, "no such Registry\n");
    };
    let expected = match state.token(&registry).await {
        Ok(Some(t)) if !t.is_empty() => t,
        Ok(_) => {
            return (StatusCode::NOT_FOUND, "this Registry has no notifications secret\n");
        }
        Err(e) => {
            tracing::warn!(registry = %registry_name, error = %e, "cannot read the notifications secret");
            return (StatusCode::SERVICE_UNAVAILABLE, "cannot read the notifications secret\n");
        }
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .as_bytes();
    if !bool::from(presented.ct_eq(expected.as_slice())) {
        count("unauthorized");
        return (StatusCode::UNAUTHORIZED, "wrong or missing notification token\n");
    }
    if !accepted_content_type(&headers) {
        count("unsupported_media_type");
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected application/vnd.docker.distribution.events.v1+json or v2+json\n",
        );
    }
    let events = match parse_envelope(&body, Timestamp::now().as_millisecond()) {
        Ok(e) => e,
        Err(message) => {
            count("malformed");
            tracing::debug!(registry = %registry_name, message, "malformed notification");
            return (StatusCode::BAD_REQUEST, "malformed notification envelope\n");
        }
    };
    for event in events {
        if !state.recent.lock().unwrap_or_else(|e| e.into_inner()).first_time(event.id()) {
            count("duplicate");
            continue;
        }
        count("accepted");
        if let RegistryEvent::ManifestPushed { repository, digest, tag: Some(tag), at, .. } = &event {
            let moved = TagMoved {
                registry: registry_name.clone(),
                path: repository.clone(),
                tag: tag.clone(),
                digest: digest.clone(),
                at: *at,
            };
            if ctx.triggers.tags.try_send(moved).is_err() {
                count("trigger_dropped"); // polling catches up
            }
        }
        let (repository, push, deleted) = match &event {
            RegistryEvent::ManifestPushed { repository, digest, at, .. } => {
                ctx.pushes.note(&registry_name, repository, digest);
                (repository, Some((digest.clone(), *at)), None)
            }
            RegistryEvent::ManifestDeleted { repository, digest, .. } => (repository, None, digest.clone()),
            RegistryEvent::Ignored { .. } => continue,
        };
        let Some(repo) = ctx.repository_for_path(&registry_name, repository) else {
            continue;
        };
        let obj = ObjectRef::from_obj(repo.as_ref());
        {
            let mut pending = ctx.pending.lock().unwrap_or_else(|e| e.into_inner());
            let entry = pending.entry(obj.clone()).or_default();
            if let Some((digest, at)) = push {
                let t = entry.pushed.entry(digest).or_insert(at);
                *t = (*t).min(at);
            }
            if let Some(digest) = deleted {
                entry.deleted.push(digest);
            }
            // Entries of Repositories deleted before their next reconcile would stay forever.
            if pending.len() > PENDING_SWEEP_AT {
                pending.retain(|r, _| ctx.repositories.get(r).is_some());
            }
        }
        if ctx.triggers.repositories.try_send(obj).is_err() {
            count("trigger_dropped"); // the pending entry stays; the next reconcile takes it
        }
    }
    (StatusCode::OK, "ok\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn envelope(action: &str, media_type: &str, extra: &str) -> String {
        format!(
            r#"{{"events":[{{"id":"e1","timestamp":"2026-11-26T10:00:00.123456789Z","action":"{action}",
               "target":{{"mediaType":"{media_type}","digest":"sha256:{}","size":10,"repository":"team/app"{extra}}},
               "request":{{"id":"r","addr":"127.0.0.1","host":"h","method":"PUT","useragent":"skopeo"}},
               "actor":{{"name":""}},"source":{{"addr":"x","instanceID":"i"}}}}]}}"#,
            "a".repeat(64)
        )
    }

    #[test]
    fn a_manifest_push_carries_its_digest_tag_and_time() {
        let expected_at = "2026-11-26T10:00:00.123Z".parse::<Timestamp>().unwrap().as_millisecond();
        let events = parse_envelope(
            envelope("push", "application/vnd.oci.image.manifest.v1+json", r#","tag":"v1""#).as_bytes(),
            expected_at + 2_000,
        )
        .unwrap();
        assert_eq!(
            events,
            vec![RegistryEvent::ManifestPushed {
                id: "e1".into(),
                repository: "team/app".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
                tag: Some("v1".into()),
                at: expected_at,
            }]
        );
    }

    #[test]
    fn blob_pushes_and_pulls_are_ignored_and_deletes_kept() {
        let blob = parse_envelope(envelope("push", "application/octet-stream", "").as_bytes(), NOW).unwrap();
        assert_eq!(blob, vec![RegistryEvent::Ignored { id: "e1".into() }]);
        let pull =
            parse_envelope(envelope("pull", "application/vnd.oci.image.manifest.v1+json", "").as_bytes(), NOW).unwrap();
        assert_eq!(pull, vec![RegistryEvent::Ignored { id: "e1".into() }]);
        let delete = parse_envelope(envelope("delete", "", "").as_bytes(), NOW).unwrap();
        assert!(matches!(&delete[0], RegistryEvent::ManifestDeleted { digest: Some(_), .. }));
    }

    #[test]
    fn a_timestamp_in_the_future_is_clamped_to_now() {
        let body = envelope("push", "application/vnd.docker.distribution.manifest.v2+json", "")
            .replace("2026-11-26T10:00:00.123456789Z", "2099-01-01T00:00:00Z");
        match &parse_envelope(body.as_bytes(), NOW).unwrap()[0] {
            RegistryEvent::ManifestPushed { at, .. } => assert_eq!(*at, NOW),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_timestamp_long_before_its_arrival_is_not_believed() {
        for old in ["2001-01-01T00:00:00Z", "2026-11-26T09:54:00Z"] {
            let body = envelope("push", "application/vnd.oci.image.manifest.v1+json", "")
                .replace("2026-11-26T10:00:00.123456789Z", old);
            let now = "2026-11-26T10:00:00Z".parse::<Timestamp>().unwrap().as_millisecond();
            match &parse_envelope(body.as_bytes(), now).unwrap()[0] {
                RegistryEvent::ManifestPushed { at, .. } => assert_eq!(*at, now, "{old}"),
                other => panic!("{other:?}"),
            }
        }
        let recent = envelope("push", "application/vnd.oci.image.manifest.v1+json", "")
            .replace("2026-11-26T10:00:00.123456789Z", "2026-11-26T09:56:00Z");
        let now = "2026-11-26T10:00:00Z".parse::<Timestamp>().unwrap().as_millisecond();
        match &parse_envelope(recent.as_bytes(), now).unwrap()[0] {
            RegistryEvent::ManifestPushed { at, .. } => assert_eq!(*at, now - 4 * 60 * 1000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_envelopes_are_errors_not_panics() {
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"events":[{"id":"x"}]}"#,
            br#"{"events":[{"id":"","action":"push","target":{"repository":"r"}}]}"#,
        ] {
            assert!(parse_envelope(bad, NOW).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let no_digest = envelope("push", "application/vnd.oci.image.manifest.v1+json", "")
            .replace(&format!(r#""digest":"sha256:{}","#, "a".repeat(64)), "");
        assert!(parse_envelope(no_digest.as_bytes(), NOW).is_err());
    }

    #[test]
    fn recent_ids_dedupe_and_stay_bounded() {
        let mut r = RecentIds::default();
        assert!(r.first_time("a"));
        assert!(!r.first_time("a"));
        for i in 0..RECENT_IDS + 10 {
            r.first_time(&i.to_string());
        }
        assert!(r.seen.len() <= RECENT_IDS && r.order.len() <= RECENT_IDS);
        assert!(r.first_time("a"), "the oldest ids are forgotten");
    }

    #[test]
    fn content_types_of_both_distribution_versions_are_accepted() {
        let mut h = HeaderMap::new();
        for ct in [
            "application/vnd.docker.distribution.events.v1+json",
            "application/vnd.docker.distribution.events.v2+json",
            "application/json; charset=utf-8",
        ] {
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            assert!(accepted_content_type(&h), "{ct}");
        }
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!accepted_content_type(&h));
    }
}
