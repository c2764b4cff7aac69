//! The Registry controller: is the registry reachable with berth's credentials, how many
//! repositories does it hold, and which of them no Repository object declares.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;

use super::{Context, Error, claim_of};
use crate::{
    api::{Registry, RegistrySpec, RegistryStatus},
    conditions, duration, hosts,
    metrics::{ControllerLabels, ErrorLabels},
    namespaces::{NOT_MANAGED, Namespaces},
};

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
    if !ctx.leader.is_leader() {
        // A follower serves tokens too: it loads the keys the leader keeps, and writes nothing.
        let loaded = match refused(&registry, &ctx.settings.namespaces) {
            Ok(()) => signing(&registry, &ctx, false).await,
            Err(e) => Err(e),
        };
        if let Err((reason, message)) = loaded {
            tracing::debug!(registry = %registry.name_any(), reason, message, "signing keys not loaded");
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    let started = std::time::Instant::now();
    let labels = ControllerLabels { controller: CONTROLLER };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let name = registry.name_any();
    let generation = registry.metadata.generation;
    let previous = registry.status.clone().unwrap_or_default();

    let interval = duration::parse_or(registry.spec.check_interval.as_deref(), DEFAULT_CHECK_INTERVAL)
        .unwrap_or(DEFAULT_CHECK_INTERVAL);
    let check = match invalid(&registry.spec).and_then(|()| refused(&registry, &ctx.settings.namespaces)) {
        Ok(()) => match signing(&registry, &ctx, true).await {
            Ok(()) => check(&registry, &ctx).await,
            Err(e) => Err(e),
        },
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
    let status = status_from(generation, &previous.conditions, check, &declared);
    if status != previous {
        let patch = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Registry", "status": status});
        Api::<Registry>::all(ctx.client.clone())
            .patch_status(&name, &PatchParams::apply("berth-status").force(), &Patch::Apply(patch))
            .await?;
    }
    ctx.metrics.reconcile_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    Ok(Action::requeue(if reachable { interval } else { interval.min(RETRY_UNREACHABLE) }))
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

/// The label on Secrets holding berth's signing keys: the Registry they sign for.
pub const SIGNING_LABEL: &str = "berth.dev/signing-keys-of";

/// For a Registry with `tokenAuth`: makes sure its signing keys exist and are rotated on time,
/// publishes the certificate bundle (in the signing Secret and, without the keys, in
/// `<secret>-bundle` for the registry to mount), and loads the signing key into the token
/// service. A Registry without `tokenAuth` has nothing to do here.
async fn signing(registry: &Registry, ctx: &Context, write: bool) -> Result<(), (&'static str, String)> {
    use k8s_openapi::api::core::v1::Secret;

    use crate::auth::{RotationPolicy, Signer, SigningKey, keys::now_unix, keystore, rotation_plan, service};

    let name = registry.name_any();
    let Some(t) = &registry.spec.token_auth else {
        ctx.tokens.remove_registry(&name);
        return Ok(());
    };
    let r = &t.signing_key_secret_ref;
    let Some(ns) = r.namespace.as_deref() else {
        return Err(("InvalidSpec", "tokenAuth.signingKeySecretRef.namespace is required".into()));
    };
    let lifetime = duration::parse_or(t.token_lifetime.as_deref(), service::DEFAULT_TOKEN_LIFETIME)
        .map_err(|e| ("InvalidSpec", format!("tokenAuth.tokenLifetime: {e}")))?;
    let kube = |e: kube::Error| ("KubernetesAPIError", format!("signing Secret {ns}/{}: {e}", r.name));
    let keygen = |e: crate::auth::Error| ("SigningKeyError", e.to_string());
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let existing = secrets.get_opt(&r.name).await.map_err(kube)?;
    let ours = |s: &Secret| s.labels().get(SIGNING_LABEL).is_some_and(|v| v == &name);
    let mut keys = match &existing {
        Some(s) => keystore::keys_from_secret(s).map_err(|e| ("SigningKeyInvalid", format!("{ns}/{}: {e}", r.name)))?,
        None => Vec::new(),
    };
    if let Some(s) = &existing
        && keys.is_empty()
        && !ours(s)
    {
        return Err((
            "SigningSecretConflict",
            format!("Secret {ns}/{} exists, holds no signing keys and is not berth's: name another Secret", r.name),
        ));
    }
    let policy = RotationPolicy::default();
    let now = now_unix();
    let plan = rotation_plan(&keys.iter().map(SigningKey::validity).collect::<Vec<_>>(), now, &policy);
    let changed = plan.generate || plan.keep.len() != keys.len();
    if changed && !write {
        if keys.is_empty() {
            return Err(("SigningKeyPending", "the leader has not created the signing keys yet".into()));
        }
    } else if changed {
        let mut kept: Vec<SigningKey> = plan.keep.iter().map(|&i| keys[i].clone()).collect();
        if plan.generate {
            kept.push(
                SigningKey::generate(&format!("berth token signing for {name}"), policy.key_lifetime)
                    .map_err(keygen)?,
            );
        }
        keys = kept;
        let mut secret = existing.clone().unwrap_or_default();
        secret.metadata.name = Some(r.name.clone());
        secret.metadata.namespace = Some(ns.to_string());
        secret.metadata.labels.get_or_insert_default().insert(SIGNING_LABEL.into(), name.clone());
        secret.metadata.managed_fields = None;
        secret.data = Some(keystore::secret_data(&keys));
        secret.type_ = Some("Opaque".into());
        match &existing {
            Some(_) => secrets.replace(&r.name, &Default::default(), &secret).await.map_err(kube)?,
            None => secrets.create(&Default::default(), &secret).await.map_err(kube)?,
        };
        tracing::info!(registry = %name, keys = keys.len(), "signing keys written");
    }
    let plan = rotation_plan(&keys.iter().map(SigningKey::validity).collect::<Vec<_>>(), now, &policy);
    let Some(index) = plan.sign_with else {
        return Err(("SigningKeyInvalid", "no signing key is valid now".into()));
    };
    // The bundle alone, for the registry to mount without seeing the keys.
    if !write {
        let signer = Signer::new(&keys[index]).map_err(keygen)?;
        ctx.tokens.set_registry(
            &name,
            service::RegistryTokens { issuer: t.issuer.clone(), service: t.service.clone(), lifetime, signer },
        );
        return Ok(());
    }
    let bundle_name = format!("{}-bundle", r.name);
    let bundle = crate::auth::bundle(&keys);
    let current = secrets.get_opt(&bundle_name).await.map_err(kube)?;
    let stored = current.as_ref().and_then(|s| s.data.as_ref()).and_then(|d| d.get(keystore::BUNDLE_KEY));
    if stored.map(|b| b.0.as_slice()) != Some(bundle.as_bytes()) {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": bundle_name, "namespace": ns, "labels": {SIGNING_LABEL: name}},
            "type": "Opaque",
            "stringData": {keystore::BUNDLE_KEY: bundle},
        }))
        .map_err(|e| ("SigningKeyError", e.to_string()))?;
        secrets.patch(&bundle_name, &PatchParams::apply("berth").force(), &Patch::Apply(secret)).await.map_err(kube)?;
    }
    let signer = Signer::new(&keys[index]).map_err(keygen)?;
    let tokens = service::RegistryTokens { issuer: t.issuer.clone(), service: t.service.clone(), lifetime, signer };
    ctx.tokens.set_registry(&name, tokens);
    Ok(())
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
