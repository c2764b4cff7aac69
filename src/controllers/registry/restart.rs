//! Getting the registry to load a new bundle. Distribution reads `auth.token.rootcertbundle`
//! only when it starts, so a new signing key is trusted only after a restart, which must happen
//! within the key's `activationDelay`. With `tokenAuth.registryDeployment` berth rolls that
//! Deployment whenever the bundle changes, by setting a pod-template annotation to the bundle's
//! hash; without it berth says by when a person must restart the registry, in the
//! `SigningKeyRotation` condition and once per new key in a Warning Event.

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::ObjectReference},
    apimachinery::pkg::apis::meta::v1::Condition,
    jiff::Timestamp,
};
use kube::{
    Api, Resource,
    api::{ListParams, Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::json;

use super::{Context, signing::Keys};
use crate::{
    api::{CONDITION_SIGNING_KEY_ROTATION, DeploymentReference, Registry, RegistryStatus, TokenAuthStatus},
    auth::bundle_sha256,
    namespaces::{NOT_MANAGED, Namespaces},
};

/// The pod-template annotation that holds the bundle's SHA-256: changing it rolls the registry.
pub const BUNDLE_ANNOTATION: &str = "berth.dev/token-bundle-sha256";
/// The field manager of that annotation, the only field berth writes on the Deployment.
const FIELD_MANAGER: &str = "berth";

pub const RESTART_NEEDED: &str = "RegistryRestartNeeded";
pub const ROLLED: &str = "RegistryRolled";
pub const NO_KEY_WAITING: &str = "NoKeyWaiting";
pub const DEPLOYMENT_NOT_FOUND: &str = "RegistryDeploymentNotFound";
pub const ROLL_FAILED: &str = "RegistryRollFailed";

/// What became of `registryDeployment` this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roll {
    /// No `registryDeployment`: people restart the registry.
    NotSet,
    /// Its pod template carries the bundle's hash; `patched` when berth set it this pass.
    Rolled {
        deployment: String,
        patched: bool,
    },
    NotFound {
        deployment: String,
    },
    /// Outside the namespaces berth may write in.
    NotManaged {
        message: String,
    },
    Failed {
        deployment: String,
        error: String,
    },
}

/// A key that waits for registries to load the bundle, as people are told about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Fingerprint of the newest waiting key: each new key is announced once.
    pub key_sha256: String,
    /// When it joined the bundle and when the first waiting key signs: the window to restart in.
    pub joined: i64,
    pub deadline: i64,
}

/// What the decision needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// `<namespace>/<name>` of the bundle Secret.
    pub bundle_secret: String,
    pub bundle_sha256: String,
    pub waiting: Option<Waiting>,
    pub roll: Roll,
}

impl Input {
    pub fn new(keys: &Keys, roll: Roll) -> Input {
        let waiting = keys.waiting();
        let waiting = waiting.last().map(|newest| Waiting {
            key_sha256: keys.fingerprints[newest.index].clone(),
            joined: newest.joined,
            deadline: waiting.iter().map(|w| w.signs_from).min().unwrap_or(newest.signs_from),
        });
        Input { bundle_secret: keys.bundle_secret.clone(), bundle_sha256: bundle_sha256(&keys.bundle), waiting, roll }
    }
}

/// What to show: the `SigningKeyRotation` condition, Events, and `status.tokenAuth`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
    pub events: Vec<(EventType, &'static str, String)>,
    pub status: TokenAuthStatus,
}

fn rfc3339(unix: i64) -> String {
    Timestamp::from_second(unix).map_or_else(|_| unix.to_string(), |t| t.to_string())
}

/// Decides what to show, without I/O. `previous` is the last status, `previous_reason` the last
/// `SigningKeyRotation` reason: an Event is written when something new happens (a key to
/// announce, a roll, a problem starting), never again on every pass.
pub fn report(input: &Input, previous: Option<&TokenAuthStatus>, previous_reason: Option<&str>) -> Report {
    let previous = previous.cloned().unwrap_or_default();
    let mut status = TokenAuthStatus { bundle_sha256: Some(input.bundle_sha256.clone()), ..previous.clone() };
    let mut events = Vec::new();
    let secret = &input.bundle_secret;
    // The restart a person must make, if a key waits and berth has not rolled the registry for it.
    let restart = input.waiting.as_ref().map(|w| {
        format!(
            "restart the registry between {} and {}: Secret {secret} has a new signing key (sha256 {}) that signs \
             tokens from {}, and Distribution reads auth.token.rootcertbundle only when it starts",
            rfc3339(w.joined),
            rfc3339(w.deadline),
            short(&w.key_sha256),
            rfc3339(w.deadline),
        )
    });
    let announce = |status: &mut TokenAuthStatus, events: &mut Vec<_>| {
        if let (Some(w), Some(restart)) = (&input.waiting, &restart)
            && previous.handled_key_sha256.as_ref() != Some(&w.key_sha256)
        {
            status.handled_key_sha256 = Some(w.key_sha256.clone());
            events.push((EventType::Warning, RESTART_NEEDED, format!("{}.", upper_first(restart))));
        }
    };
    let began = |reason: &str| previous_reason != Some(reason);
    let (ok, reason, message) = match &input.roll {
        Roll::NotSet => {
            announce(&mut status, &mut events);
            match &restart {
                Some(restart) => (false, RESTART_NEEDED, upper_first(restart)),
                None => (true, NO_KEY_WAITING, format!("every signing key in Secret {secret} signs or has signed")),
            }
        }
        Roll::Rolled { deployment, patched } => {
            status.registry_deployment_bundle_sha256 = Some(input.bundle_sha256.clone());
            if let Some(w) = &input.waiting {
                // The roll loaded the new key: nobody need be told to restart for it.
                status.handled_key_sha256 = Some(w.key_sha256.clone());
            }
            let mut message = format!("Deployment {deployment} rolled to bundle sha256 {}", input.bundle_sha256);
            if *patched {
                events.push((
                    EventType::Normal,
                    ROLLED,
                    format!("{message}, so that the registry loads the new signing-key bundle"),
                ));
            }
            if let Some(w) = &input.waiting {
                message.push_str(&format!("; the new signing key signs from {}", rfc3339(w.deadline)));
            }
            (true, ROLLED, message)
        }
        Roll::NotFound { deployment } => {
            let message = format!(
                "registryDeployment {deployment} does not exist: berth cannot roll the registry when the \
                 signing-key bundle changes{}",
                restart.as_ref().map(|r| format!("; {r}")).unwrap_or_default()
            );
            if began(DEPLOYMENT_NOT_FOUND) {
                events.push((EventType::Warning, DEPLOYMENT_NOT_FOUND, message.clone()));
            }
            announce(&mut status, &mut events);
            (false, DEPLOYMENT_NOT_FOUND, message)
        }
        Roll::Failed { deployment, error } => {
            let message = format!(
                "cannot roll registryDeployment {deployment}: {error}{}",
                restart.as_ref().map(|r| format!("; {r}")).unwrap_or_default()
            );
            if began(ROLL_FAILED) {
                events.push((EventType::Warning, ROLL_FAILED, message.clone()));
            }
            announce(&mut status, &mut events);
            (false, ROLL_FAILED, message)
        }
        Roll::NotManaged { message } => {
            announce(&mut status, &mut events);
            let message = format!("{message}{}", restart.as_ref().map(|r| format!("; {r}")).unwrap_or_default());
            (false, NOT_MANAGED, message)
        }
    };
    Report { ok, reason, message, events, status }
}

/// The first 16 hex digits of a fingerprint: enough to tell keys apart in a sentence.
fn short(sha256: &str) -> &str {
    &sha256[..sha256.len().min(16)]
}

fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// What this pass knows about key rotation, for the status.
pub enum Outcome {
    /// No `tokenAuth`: no condition, no `status.tokenAuth`.
    NotConfigured,
    /// The keys could not be read or written (Ready says why): the last report stands.
    Unknown,
    Decided(Report),
}

/// Puts the outcome into `status` (built from this pass, with `previous` the last status).
pub fn apply(status: &mut RegistryStatus, previous: &RegistryStatus, outcome: Outcome, generation: Option<i64>) {
    match outcome {
        Outcome::NotConfigured => {
            status.conditions.retain(|c| c.type_ != CONDITION_SIGNING_KEY_ROTATION);
            status.token_auth = None;
        }
        Outcome::Unknown => status.token_auth = previous.token_auth.clone(),
        Outcome::Decided(report) => {
            let condition = Condition {
                type_: CONDITION_SIGNING_KEY_ROTATION.to_string(),
                status: if report.ok { "True" } else { "False" }.to_string(),
                reason: report.reason.to_string(),
                message: report.message,
                observed_generation: generation,
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
            };
            status.conditions = crate::conditions::merge(&status.conditions, condition);
            status.token_auth = Some(report.status);
        }
    }
}

/// The last `SigningKeyRotation` reason.
pub fn previous_reason(previous: &RegistryStatus) -> Option<&str> {
    previous.conditions.iter().find(|c| c.type_ == CONDITION_SIGNING_KEY_ROTATION).map(|c| c.reason.as_str())
}

/// What Events about a Registry regard. A cluster-scoped object's Events live in `default`;
/// where berth may not write there (`--namespaces` without it), they regard the bundle Secret,
/// in a namespace berth manages, so that they are written at all.
pub fn event_subject(registry: &Registry, bundle_secret: &str, scope: &Namespaces) -> ObjectReference {
    if scope.allows("default") {
        return registry.object_ref(&());
    }
    let (namespace, name) = bundle_secret.split_once('/').unwrap_or(("", bundle_secret));
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// The server-side apply body that sets the bundle hash on a Deployment's pod template, and
/// nothing else.
pub fn apply_body(target: &DeploymentReference, hash: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": target.name, "namespace": target.namespace},
        "spec": {"template": {"metadata": {"annotations": {BUNDLE_ANNOTATION: hash}}}},
    })
}

/// The bundle hash a Deployment's pod template carries.
pub fn rolled_to(deployment: &Deployment) -> Option<&str> {
    let template = deployment.spec.as_ref()?.template.metadata.as_ref()?;
    template.annotations.as_ref()?.get(BUNDLE_ANNOTATION).map(String::as_str)
}

/// Sets the bundle hash on `target`'s pod template when it differs: Kubernetes then replaces
/// the registry's pods, which load the new bundle.
pub(super) async fn roll(ctx: &Context, target: Option<&DeploymentReference>, hash: &str) -> Roll {
    let Some(target) = target else {
        return Roll::NotSet;
    };
    if let Some(message) = ctx.settings.namespaces.refusal(&target.namespace, "the registryDeployment") {
        return Roll::NotManaged { message };
    }
    let deployment = format!("{}/{}", target.namespace, target.name);
    let api = Api::<Deployment>::namespaced(ctx.client.clone(), &target.namespace);
    // A list by name, not a get: berth lists Deployments wherever it may patch them (rollouts),
    // so this needs no right it does not have already.
    let found = match api.list(&ListParams::default().fields(&format!("metadata.name={}", target.name))).await {
        Ok(list) => list.items.into_iter().next(),
        Err(e) => return Roll::Failed { deployment, error: e.to_string() },
    };
    let Some(current) = found else {
        return Roll::NotFound { deployment };
    };
    if rolled_to(&current) == Some(hash) {
        return Roll::Rolled { deployment, patched: false };
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&target.name, &params, &Patch::Apply(apply_body(target, hash))).await {
        Ok(_) => {
            tracing::info!(deployment, hash, "registry Deployment rolled to a new signing-key bundle");
            Roll::Rolled { deployment, patched: true }
        }
        Err(e) => Roll::Failed { deployment, error: e.to_string() },
    }
}

#[cfg(test)]
mod tests;
