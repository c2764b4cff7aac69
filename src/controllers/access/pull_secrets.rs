//! Pull secrets: written into the namespaces that accept them, attached to ServiceAccounts,
//! rotated, and removed with their policy.

use super::*;

/// A `.dockerconfigjson` for `hosts`.
pub fn docker_config(hosts: &BTreeSet<String>, username: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let auths: serde_json::Map<String, serde_json::Value> =
        hosts.iter().map(|h| (h.clone(), json!({"username": username, "password": password, "auth": auth}))).collect();
    json!({"auths": auths}).to_string()
}

/// Whether a Namespace with annotations `annotations` accepts pull secrets from policies of
/// `from`.
pub fn accepts_pull_secrets(annotations: &BTreeMap<String, String>, from: &str) -> bool {
    annotations.get(ACCEPT_ANNOTATION).is_some_and(|list| list.split(',').map(str::trim).any(|n| n == "*" || n == from))
}

/// Writes (or rotates) the pull secret in one namespace; returns when it next needs rotating.
pub(super) async fn ensure_pull_secret(
    policy: &AccessPolicy,
    ctx: &Context,
    target_ns: &str,
    secret_name: &str,
    lifetime: Duration,
    hosts: &BTreeSet<String>,
) -> Result<i64, NotReady> {
    let ns = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let owner = format!("{ns}/{name}");
    let api = secret_api(ctx, target_ns);
    let existing = api.get_opt(secret_name).await.map_err(kube_not_ready)?;
    if let Some(s) = &existing
        && s.annotations().get(OWNER_ANNOTATION) != Some(&owner)
    {
        return Err(NotReady {
            reason: "SecretConflict",
            message: format!("Secret {target_ns}/{secret_name} exists and does not belong to this policy"),
        });
    }
    if hosts.is_empty() {
        // No registry (yet) to write credentials for: a docker config without one would break
        // the Secret kubelets use now (berth starting, its stores not filled yet).
        return Err(NotReady {
            reason: "NoRepositories",
            message: "the policy selects no Repository in a registry whose token service is berth".into(),
        });
    }
    let recorded = existing.as_ref().map(|s| Recorded::from_annotations(s.annotations()));
    let rotate = policy.annotations().get(ROTATE_ANNOTATION).map(String::as_str);
    let revoke = policy.annotations().get(REVOKE_ANNOTATION).map(String::as_str);
    let now = now_unix();
    if !needs_new_password(recorded.as_ref(), lifetime, (rotate, revoke), hosts, now) {
        return Ok(next_rotation(recorded.and_then(|r| r.issued_at).unwrap_or(now), lifetime));
    }
    let username = robot::pull_username(&ns, &name);
    // A revocation drops every earlier password; any other rotation keeps them until they expire.
    let revoked = recorded.as_ref().is_some_and(|r| r.revoked_for.as_deref() != revoke);
    let previous = if revoked { Vec::new() } else { recorded.map(|r| r.records).unwrap_or_default() };
    let (password, records) = robot::rotate(&previous, Some(lifetime), now);
    let mut annotations = BTreeMap::from([
        (OWNER_ANNOTATION.to_string(), owner),
        (USERNAME_ANNOTATION.to_string(), username.clone()),
        (HASHES_ANNOTATION.to_string(), serde_json::to_string(&records).unwrap_or_default()),
        (ISSUED_ANNOTATION.to_string(), now.to_string()),
        (HOSTS_ANNOTATION.to_string(), hosts.iter().cloned().collect::<Vec<_>>().join(",")),
    ]);
    if let Some(r) = rotate {
        annotations.insert(ROTATED_FOR_ANNOTATION.to_string(), r.to_string());
    }
    if let Some(r) = revoke {
        annotations.insert(REVOKED_FOR_ANNOTATION.to_string(), r.to_string());
    }
    let mut secret = existing.clone().unwrap_or_default();
    secret.metadata.name = Some(secret_name.to_string());
    secret.metadata.namespace = Some(target_ns.to_string());
    secret.metadata.managed_fields = None;
    let labels = secret.metadata.labels.get_or_insert_default();
    labels.insert(CREDENTIAL_LABEL.into(), "pull".into());
    labels.insert(PULL_OF_LABEL.into(), policy_label(&ns, &name));
    secret.metadata.annotations = Some(annotations);
    secret.type_ = Some("kubernetes.io/dockerconfigjson".into());
    secret.string_data = None;
    secret.data = Some(BTreeMap::from([(
        ".dockerconfigjson".to_string(),
        ByteString(docker_config(hosts, &username, &password).into_bytes()),
    )]));
    match existing {
        Some(_) => api.replace(secret_name, &PostParams::default(), &secret).await,
        None => api.create(&PostParams::default(), &secret).await,
    }
    .map_err(kube_not_ready)?;
    tracing::info!(namespace = %target_ns, secret = secret_name, policy = %name, "pull secret written");
    Ok(next_rotation(now, lifetime))
}

/// Adds (or removes) a Secret in a ServiceAccount's `imagePullSecrets`, compare-and-swap.
/// `Ok(false)` when the ServiceAccount does not exist (yet).
pub(super) async fn service_account_reference(
    ctx: &Context,
    ns: &str,
    account: &str,
    secret: &str,
    present: bool,
) -> Result<bool, kube::Error> {
    let api = Api::<ServiceAccount>::namespaced(ctx.client.clone(), ns);
    let Some(sa) = api.get_opt(account).await? else { return Ok(false) };
    let mut refs: Vec<String> = sa.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect();
    let has = refs.iter().any(|r| r == secret);
    if has == present {
        return Ok(true);
    }
    if present {
        refs.push(secret.to_string());
    } else {
        refs.retain(|r| r != secret);
    }
    let list: Vec<_> = refs.iter().map(|r| json!({"name": r})).collect();
    let patch = json!({"metadata": {"resourceVersion": sa.resource_version()}, "imagePullSecrets": list});
    api.patch(account, &PatchParams::default(), &Patch::Merge(patch)).await?;
    Ok(true)
}

/// Deletes the policy's pull secrets outside `keep` (all of them with an empty `keep`) and the
/// ServiceAccount references to them.
pub(super) async fn remove_pull_secrets(
    policy: &AccessPolicy,
    ctx: &Context,
    keep: &BTreeSet<String>,
) -> Result<(), kube::Error> {
    let ns = policy.namespace().unwrap_or_default();
    let selector = format!("{PULL_OF_LABEL}={}", policy_label(&ns, &policy.name_any()));
    let owner = format!("{ns}/{}", policy.name_any());
    let lp = ListParams::default().labels(&selector);
    let mut found = Vec::new();
    for api in apis::<Secret>(&ctx.client, &ctx.settings.watched()) {
        found.extend(api.list_metadata(&lp).await?.items);
    }
    for s in found {
        let target = s.namespace().unwrap_or_default();
        if keep.contains(&target) || s.annotations().get(OWNER_ANNOTATION) != Some(&owner) {
            continue;
        }
        let secret_name = s.name_any();
        let accounts =
            Api::<ServiceAccount>::namespaced(ctx.client.clone(), &target).list(&ListParams::default()).await?;
        for sa in accounts.items.iter().filter(|a| a.image_pull_secrets.iter().flatten().any(|r| r.name == secret_name))
        {
            service_account_reference(ctx, &target, &sa.name_any(), &secret_name, false).await?;
        }
        match secret_api(ctx, &target).delete(&secret_name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(namespace = %target, secret = %secret_name, "pull secret removed"),
            // Gone already: what deleting wanted.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // 403, 409, 5xx...: the Secret is still there; the caller retries.
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
