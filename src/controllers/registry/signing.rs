//! The Registry's signing keys: made, rotated and published for the registry, and loaded into
//! the token service.

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::Context;
use crate::{api::Registry, duration};

/// The label on Secrets holding berth's signing keys: the Registry they sign for.
pub const SIGNING_LABEL: &str = "berth.dev/signing-keys-of";

/// For a Registry with `tokenAuth`: makes sure its signing keys exist and are rotated on time,
/// publishes the certificate bundle (in the signing Secret and, without the keys, in
/// `<secret>-bundle` for the registry to mount), and loads the signing key into the token
/// service. A Registry without `tokenAuth` has nothing to do here.
pub(super) async fn signing(registry: &Registry, ctx: &Context, write: bool) -> Result<(), (&'static str, String)> {
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
