//! The Registry controller: is the registry reachable with berth's credentials, how many
//! repositories does it hold, and which of them no Repository object declares.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;

use super::{Context, Error, claim_of, publish_about};
use crate::{
    api::{Registry, RegistrySpec, RegistryStatus},
    auth::{bundle_sha256, keys::now_unix},
    conditions, duration, hosts,
    metrics::{ControllerLabels, ErrorLabels},
    namespaces::{NOT_MANAGED, Namespaces},
};

pub mod restart;
pub mod signing;

pub use signing::SIGNING_LABEL;
use signing::signing;

pub const CONTROLLER: &str = "registry";
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(300);
/// How soon an unreachable registry is checked again (capped by its checkInterval).
const RETRY_UNREACHABLE: Duration = Duration::from_secs(15);
const UNDECLARED_SHOWN: usize = 20;

/// What one check found, decided without I/O into a status.
pub fn status_from(
    generation: Option<i64>,
    previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    check: Result<Option<Vec<String>>, (&'static str, String)>,
    declared: &BTreeSet<String>,
) -> RegistryStatus {
    match check {
        Ok(catalog) => {
            let undeclared: Vec<String> = catalog
                .iter()
                .flatten()
                .filter(|r| !declared.contains(*r))
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let message = match &catalog {
                Some(c) => format!("reachable; {} repositories, {} undeclared", c.len(), undeclared.len()),
                None => "reachable; the catalog is not readable with berth's credentials".to_string(),
            };
            RegistryStatus {
                conditions: conditions::merge(previous, conditions::ready(true, "Reachable", message, generation)),
                observed_generation: generation,
                reachable: Some(true),
                repository_count: catalog.as_ref().map(|c| c.len() as i64),
                declared_repository_count: Some(declared.len() as i64),
                undeclared_repository_count: catalog.as_ref().map(|_| undeclared.len() as i64),
                undeclared_repositories: undeclared.into_iter().take(UNDECLARED_SHOWN).collect(),
                token_auth: None,
            }
        }
        Err((reason, message)) => RegistryStatus {
            conditions: conditions::merge(previous, conditions::ready(false, reason, message, generation)),
            observed_generation: generation,
            reachable: Some(false),
            declared_repository_count: Some(declared.len() as i64),
            ..Default::default()
        },
    }
}

pub async fn reconcile(registry: Arc<Registry>, ctx: Arc<Context>) -> Result<Action, Error> {
    const FOLLOWER_RELOAD: Duration = Duration::from_secs(60);
    if !ctx.leader.is_leader() {
        // A follower serves tokens too: it loads the keys the leader keeps, and writes nothing.
        let loaded = match refused(&registry, &ctx.settings.namespaces) {
            Ok(()) => signing(&registry, &ctx, false).await,
            Err(e) => Err(e),
        };
        return Ok(Action::requeue(match loaded {
            Err((reason, message)) => {
                tracing::debug!(registry = %registry.name_any(), reason, message, "signing keys not loaded");
                // Until the leader has made them: look again soon, tokens wait on it.
                if reason == "SigningKeyPending" { Duration::from_secs(1) } else { Duration::from_secs(5) }
            }
            // It switches keys when the leader's plan does.
            Ok(keys) => requeue_after(FOLLOWER_RELOAD, keys.and_then(|k| k.next_event()), now_unix()),
        }));
    }
    let started = std::time::Instant::now();
    let labels = ControllerLabels { controller: CONTROLLER };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let name = registry.name_any();
    let generation = registry.metadata.generation;
    let previous = registry.status.clone().unwrap_or_default();

    let interval = duration::parse_or(registry.spec.check_interval.as_deref(), DEFAULT_CHECK_INTERVAL)
        .unwrap_or(DEFAULT_CHECK_INTERVAL);
    let signed = match invalid(&registry.spec).and_then(|()| refused(&registry, &ctx.settings.namespaces)) {
        Ok(()) => signing(&registry, &ctx, true).await,
        Err(e) => Err(e),
    };
    let token_auth = registry.spec.token_auth.as_ref();
    let (outcome, subject) = match (&signed, token_auth) {
        (_, None) => (restart::Outcome::NotConfigured, None),
        (Ok(Some(keys)), Some(t)) => {
            let roll = restart::roll(&ctx, t.registry_deployment.as_ref(), &bundle_sha256(&keys.bundle)).await;
            let input = restart::Input::new(keys, roll);
            let report = restart::report(&input, previous.token_auth.as_ref(), restart::previous_reason(&previous));
            let subject = restart::event_subject(&registry, &keys.bundle_secret, &ctx.settings.namespaces);
            (restart::Outcome::Decided(report), Some(subject))
        }
        _ => (restart::Outcome::Unknown, None),
    };
    let next_key_event = signed.as_ref().ok().and_then(Option::as_ref).and_then(|k| k.next_event());
    let check = match signed {
        Ok(_) => check(&registry, &ctx).await,
        Err(e) => Err(e),
    };
    // Repositories and grants of this registry may have changed with it.
    ctx.tokens.rebuild.notify_one();
    let reachable = check.is_ok();
    if let Err((reason, message)) = &check {
        tracing::info!(registry = %name, reason, message, "registry not ready");
        ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { controller: CONTROLLER, reason }).inc();
    }
    let declared: BTreeSet<String> =
        ctx.repositories.state().iter().map(|r| claim_of(r)).filter(|c| c.registry == name).map(|c| c.path).collect();
    let mut status = status_from(generation, &previous.conditions, check, &declared);
    let (events, roll_retry) = match &outcome {
        restart::Outcome::Decided(r) => {
            (r.events.clone(), matches!(r.reason, restart::DEPLOYMENT_NOT_FOUND | restart::ROLL_FAILED))
        }
        _ => (Vec::new(), false),
    };
    restart::apply(&mut status, &previous, outcome, generation);
    if status != previous {
        let patch = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Registry", "status": status});
        Api::<Registry>::all(ctx.client.clone())
            .patch_status(&name, &PatchParams::apply("berth-status").force(), &Patch::Apply(patch))
            .await?;
    }
    // After the status that remembers them, so that a failed status write does not announce twice.
    if let Some(subject) = subject {
        for (type_, reason, note) in events {
            publish_about(&ctx, &subject, (type_, reason, "RotateSigningKeys"), note).await;
        }
    }
    ctx.metrics.reconcile_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    // Sooner while the registry is unreachable or its Deployment could not be rolled, and at
    // the next key event, so that short key lifetimes need no short checkInterval.
    let base = if reachable && !roll_retry { interval } else { interval.min(RETRY_UNREACHABLE) };
    Ok(Action::requeue(requeue_after(base, next_key_event, now_unix())))
}

/// `base`, or a second after the next key event when that comes first (so that the plan has
/// changed when the pass runs).
pub fn requeue_after(base: Duration, next_key_event: Option<i64>, now_unix: i64) -> Duration {
    match next_key_event {
        Some(at) => base.min(Duration::from_secs(u64::try_from(at.saturating_sub(now_unix)).unwrap_or(0) + 1)),
        None => base,
    }
}

/// What the admission rules refuse, checked again for objects they did not check (written
/// before the CRD had them): an alias that is not `host[:port]` would be a pull-secret key and a
/// host name that no image reference can use. Other controllers skip such aliases.
pub fn invalid(spec: &RegistrySpec) -> Result<(), (&'static str, String)> {
    for (i, alias) in spec.aliases.iter().enumerate() {
        hosts::check_alias(alias).map_err(|m| ("InvalidSpec", format!("aliases[{i}]: {m}")))?;
    }
    Ok(())
}

/// A Registry whose Secrets (credentials, signing keys, notification token) are in a namespace
/// berth is not installed for cannot work: say so instead of being refused by the API server.
pub fn refused(registry: &Registry, scope: &Namespaces) -> Result<(), (&'static str, String)> {
    let spec = &registry.spec;
    let refs = [
        ("the credentialsSecretRef Secret", spec.credentials_secret_ref.as_ref().and_then(|r| r.namespace.as_deref())),
        (
            "the tokenAuth signing Secret",
            spec.token_auth.as_ref().and_then(|t| t.signing_key_secret_ref.namespace.as_deref()),
        ),
        ("the notifications Secret", spec.notifications.as_ref().and_then(|n| n.secret_ref.namespace.as_deref())),
    ];
    match refs.into_iter().find_map(|(what, ns)| scope.refusal(ns?, what)) {
        Some(message) => Err((NOT_MANAGED, message)),
        None => Ok(()),
    }
}

/// Reachability and the catalog (`None` when the credentials may not read it).
async fn check(registry: &Registry, ctx: &Context) -> Result<Option<Vec<String>>, (&'static str, String)> {
    let backend = ctx.backend(registry).await.map_err(|e| (e.reason(), e.to_string()))?;
    backend.check().await.map_err(|e| (e.reason(), e.to_string()))?;
    match backend.catalog().await {
        Ok(c) => Ok(Some(c)),
        Err(crate::registry::RegistryError::Unauthorized(_) | crate::registry::RegistryError::Denied(_)) => Ok(None),
        Err(e) => Err((e.reason(), e.to_string())),
    }
}

pub fn error_policy(registry: Arc<Registry>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(registry = %registry.name_any(), error = %error, "registry reconcile failed");
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { controller: CONTROLLER, reason: error.reason() }).inc();
    Action::requeue(ctx.failure_backoff(&format!("registry/{}", registry.name_any())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undeclared_repositories_are_counted_sorted_and_capped() {
        let catalog: Vec<String> = (0..30).rev().map(|i| format!("team/r{i:02}")).collect();
        let declared: BTreeSet<String> = ["team/r00".to_string(), "team/r01".to_string(), "gone/x".to_string()].into();
        let s = status_from(Some(3), &[], Ok(Some(catalog)), &declared);
        assert_eq!(s.repository_count, Some(30));
        assert_eq!(s.declared_repository_count, Some(3));
        assert_eq!(s.undeclared_repository_count, Some(28));
        assert_eq!(s.undeclared_repositories.len(), UNDECLARED_SHOWN);
        assert_eq!(s.undeclared_repositories[0], "team/r02");
        assert_eq!(s.reachable, Some(true));
        assert_eq!(conditions::find_ready(&s.conditions).unwrap().status, "True");
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn an_unreadable_catalog_still_means_reachable() {
        let s = status_from(None, &[], Ok(None), &BTreeSet::new());
        assert_eq!(s.reachable, Some(true));
        assert_eq!(s.repository_count, None);
        assert_eq!(s.undeclared_repository_count, None);
    }

    #[test]
    fn the_next_key_event_brings_the_next_pass_forward_never_back() {
        let five_minutes = Duration::from_secs(300);
        let now = 1_000_000;
        assert_eq!(requeue_after(five_minutes, None, now), five_minutes);
        assert_eq!(requeue_after(five_minutes, Some(now + 40), now), Duration::from_secs(41), "just after it");
        assert_eq!(requeue_after(five_minutes, Some(now + 86_400), now), five_minutes);
        assert_eq!(requeue_after(five_minutes, Some(now), now), Duration::from_secs(1), "due now: at once");
        assert_eq!(requeue_after(five_minutes, Some(now - 5), now), Duration::from_secs(1), "overdue");
        assert_eq!(requeue_after(Duration::from_secs(15), Some(now + 40), now), Duration::from_secs(15));
    }

    #[test]
    fn an_alias_that_is_not_host_and_port_makes_the_spec_invalid() {
        let spec = |aliases: &[&str]| -> RegistrySpec {
            serde_json::from_value(json!({"url": "http://berth-registry.berth.svc:5000", "aliases": aliases})).unwrap()
        };
        assert_eq!(invalid(&spec(&[])), Ok(()));
        assert_eq!(invalid(&spec(&["127.0.0.1:30500", "registry.example.com"])), Ok(()));
        let (reason, message) = invalid(&spec(&["127.0.0.1:30500", "https://registry.example.com"])).unwrap_err();
        assert_eq!(reason, "InvalidSpec");
        assert!(message.starts_with("aliases[1]: ") && message.contains("no scheme"), "{message}");
        let (_, message) = invalid(&spec(&["registry"])).unwrap_err();
        assert!(message.contains("aliases[0]") && message.contains("Docker Hub"), "{message}");
        let s = status_from(Some(2), &[], invalid(&spec(&["r.example:99999"])).map(|()| None), &BTreeSet::new());
        let ready = conditions::find_ready(&s.conditions).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
    }

    #[test]
    fn failures_carry_their_reason() {
        let s = status_from(Some(1), &[], Err(("RegistryUnreachable", "connection refused".into())), &BTreeSet::new());
        let ready = conditions::find_ready(&s.conditions).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "RegistryUnreachable"));
        assert_eq!(s.reachable, Some(false));
    }
}
