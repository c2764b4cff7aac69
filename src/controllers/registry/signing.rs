//! The Registry's signing keys: made, rotated and published for the registry, and loaded into
//! the token service.

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::Context;
use crate::{
    api::{Registry, TokenAuth},
    auth::{KeyValidity, RotationPolicy, WaitingKey, next_key_event, service, waiting_keys},
    duration,
};

/// The label on Secrets holding berth's signing keys: the Registry they sign for.
pub const SIGNING_LABEL: &str = "berth.dev/signing-keys-of";

/// The rotation policy and token lifetime `tokenAuth` asks for, checked together: the API
/// server's CEL rules refuse most bad combinations, but not in objects stored before them.
pub fn rotation_settings(t: &TokenAuth) -> Result<(RotationPolicy, std::time::Duration), String> {
    let d = RotationPolicy::default();
    let rotation = t.key_rotation.clone().unwrap_or_default();
    let parse = |field: &str, text: Option<&str>, default| {
        duration::parse_or(text, default).map_err(|e| format!("tokenAuth.{field}: {e}"))
    };
    let token_lifetime = parse("tokenLifetime", t.token_lifetime.as_deref(), service::DEFAULT_TOKEN_LIFETIME)?;
    let policy = RotationPolicy::new(
        parse("keyRotation.keyLifetime", rotation.key_lifetime.as_deref(), d.key_lifetime)?,
        parse("keyRotation.renewBefore", rotation.renew_before.as_deref(), d.renew_before)?,
        parse("keyRotation.activationDelay", rotation.activation_delay.as_deref(), d.activation_delay)?,
    )
    .map_err(|e| format!("tokenAuth.{e}"))?;
    policy.check_token_lifetime(token_lifetime).map_err(|e| format!("tokenAuth.{e}"))?;
    Ok((policy, token_lifetime))
}

/// The signing keys of a Registry as this pass left them.
#[derive(Clone, Debug)]
pub struct Keys {
    pub policy: RotationPolicy,
    /// Each stored key's validity and certificate fingerprint, in storage order.
    pub validities: Vec<KeyValidity>,
    pub fingerprints: Vec<String>,
    /// `bundle.pem` as published, and the Secret it is published in (`<namespace>/<name>`).
    pub bundle: String,
    pub bundle_secret: String,
    /// When this pass decided.
    pub now: i64,
}

impl Keys {
    /// When the rotation plan next changes (see [`next_key_event`]).
    pub fn next_event(&self) -> Option<i64> {
        next_key_event(&self.validities, self.now, &self.policy)
    }

    /// Keys in the bundle that do not sign yet, oldest first.
    pub fn waiting(&self) -> Vec<WaitingKey> {
        waiting_keys(&self.validities, self.now, &self.policy)
    }
}

/// For a Registry with `tokenAuth`: makes sure its signing keys exist and are rotated on time,
/// publishes the certificate bundle (in the signing Secret and, without the keys, in
/// `<secret>-bundle` for the registry to mount), and loads the signing key into the token
/// service. A Registry without `tokenAuth` has nothing to do here (`None`).
pub(super) async fn signing(
    registry: &Registry,
    ctx: &Context,
    write: bool,
) -> Result<Option<Keys>, (&'static str, String)> {
    use k8s_openapi::api::core::v1::Secret;

    use crate::auth::{Signer, SigningKey, keys::now_unix, keystore, rotation_plan};

    let name = registry.name_any();
    let Some(t) = &registry.spec.token_auth else {
        ctx.tokens.remove_registry(&name);
        return Ok(None);
    };
    let r = &t.signing_key_secret_ref;
    let Some(ns) = r.namespace.as_deref() else {
        return Err(("InvalidSpec", "tokenAuth.signingKeySecretRef.namespace is required".into()));
    };
    let (policy, lifetime) = rotation_settings(t).map_err(|e| ("InvalidSpec", e))?;
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
    let bundle_name = format!("{}-bundle", r.name);
    let bundle = crate::auth::bundle(&keys);
    let found = Keys {
        policy,
        validities: keys.iter().map(SigningKey::validity).collect(),
        fingerprints: keys.iter().map(SigningKey::sha256).collect(),
        bundle: bundle.clone(),
        bundle_secret: format!("{ns}/{bundle_name}"),
        now,
    };
    if !write {
        let signer = Signer::new(&keys[index]).map_err(keygen)?;
        ctx.tokens.set_registry(
            &name,
            service::RegistryTokens { issuer: t.issuer.clone(), service: t.service.clone(), lifetime, signer },
        );
        return Ok(Some(found));
    }
    // The bundle alone, for the registry to mount without seeing the keys.
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
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn token_auth(extra: serde_json::Value) -> TokenAuth {
        let mut t = json!({"issuer": "berth", "service": "r", "signingKeySecretRef": {"name": "k", "namespace": "ns"}});
        t.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(t).unwrap()
    }

    #[test]
    fn rotation_settings_default_to_todays_policy_and_take_short_periods() {
        assert_eq!(
            rotation_settings(&token_auth(json!({}))),
            Ok((RotationPolicy::default(), Duration::from_secs(300)))
        );
        let short = token_auth(json!({
            "tokenLifetime": "1m",
            "keyRotation": {"keyLifetime": "3m", "renewBefore": "2m", "activationDelay": "40s"},
        }));
        let (policy, tokens) = rotation_settings(&short).unwrap();
        assert_eq!(
            (policy.key_lifetime, policy.renew_before, policy.activation_delay, tokens),
            (Duration::from_secs(180), Duration::from_secs(120), Duration::from_secs(40), Duration::from_secs(60))
        );
        // A field left out takes its default: 60-day keys renewed 30 days before they expire.
        let (policy, _) = rotation_settings(&token_auth(json!({"keyRotation": {"keyLifetime": "1440h"}}))).unwrap();
        assert_eq!(policy.renew_before, RotationPolicy::default().renew_before);
    }

    #[test]
    fn rotation_settings_refuse_what_cannot_work_naming_the_field() {
        let cases = [
            (
                json!({"keyRotation": {"keyLifetime": "90d"}}),
                "tokenAuth.keyRotation.keyLifetime: \"90d\" is not a duration",
            ),
            (
                json!({"keyRotation": {"keyLifetime": "3m"}}),
                "tokenAuth.keyRotation.renewBefore (720h) must be shorter than keyLifetime (3m)",
            ),
            (
                json!({"keyRotation": {"renewBefore": "1h", "activationDelay": "1h"}}),
                "tokenAuth.keyRotation.activationDelay (1h) must be shorter than renewBefore (1h)",
            ),
            (
                json!({"keyRotation": {"keyLifetime": "3m", "renewBefore": "2m", "activationDelay": "40s"}}),
                "tokenAuth.tokenLifetime (5m) must be shorter than keyRotation.renewBefore - activationDelay (1m20s)",
            ),
            (json!({"tokenLifetime": "soon"}), "tokenAuth.tokenLifetime: \"soon\" is not a duration"),
        ];
        for (extra, message) in cases {
            let err = rotation_settings(&token_auth(extra.clone())).unwrap_err();
            assert!(err.starts_with(message), "{extra}: {err}");
        }
    }

    /// The CEL rules fill in unset fields with literals: they must be berth's defaults.
    #[test]
    fn the_admission_rules_assume_berths_defaults() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_string(&Registry::crd()).unwrap();
        let d = RotationPolicy::default();
        let defaults = [
            ("keyLifetime", d.key_lifetime),
            ("renewBefore", d.renew_before),
            ("activationDelay", d.activation_delay),
            ("tokenLifetime", service::DEFAULT_TOKEN_LIFETIME),
        ];
        for (field, default) in defaults {
            let marker = format!("{field} : '");
            let literals: Vec<&str> =
                crd.split(&marker).skip(1).map(|rest| rest.split('\'').next().unwrap_or_default()).collect();
            assert!(!literals.is_empty(), "no rule fills in {field}");
            for literal in literals {
                assert_eq!(duration::parse(literal), Ok(default), "{field} defaults to {literal:?} in a rule");
            }
        }
    }
}
