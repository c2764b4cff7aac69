//! Pull secrets: written into the namespaces that accept them, attached to ServiceAccounts,
//! rotated, and removed with their policy.

use super::*;

/// A `.dockerconfigjson` with basic auth per host: host -> (username, password).
pub fn docker_config(auths: &BTreeMap<String, (String, String)>) -> String {
    let auths: serde_json::Map<String, serde_json::Value> = auths
        .iter()
        .map(|(host, (username, password))| {
            let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            (host.clone(), json!({"username": username, "password": password, "auth": auth}))
        })
        .collect();
    json!({"auths": auths}).to_string()
}

/// The same credentials for every host.
pub fn same_for_all(hosts: &BTreeSet<String>, username: &str, password: &str) -> BTreeMap<String, (String, String)> {
    hosts.iter().map(|h| (h.clone(), (username.to_string(), password.to_string()))).collect()
}

/// host -> (username, password) of a `.dockerconfigjson` (from `username` and `password`, or
/// from `auth`); what cannot be read is left out.
pub fn docker_config_auths(config: &[u8]) -> BTreeMap<String, (String, String)> {
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(config) else { return BTreeMap::new() };
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else { return BTreeMap::new() };
    auths
        .iter()
        .filter_map(|(host, entry)| {
            let field = |k: &str| entry.get(k).and_then(|v| v.as_str()).map(String::from);
            let pair = match (field("username"), field("password")) {
                (Some(u), Some(p)) => (u, p),
                _ => {
                    let decoded = base64::engine::general_purpose::STANDARD.decode(field("auth")?).ok()?;
                    let (u, p) = String::from_utf8(decoded).ok()?.split_once(':').map(|(u, p)| (u.into(), p.into()))?;
                    (u, p)
                }
            };
            Some((host.clone(), pair))
        })
        .collect()
}

/// Whether a Namespace with annotations `annotations` accepts pull secrets from policies of
/// `from`.
pub fn accepts_pull_secrets(annotations: &BTreeMap<String, String>, from: &str) -> bool {
    annotations.get(ACCEPT_ANNOTATION).is_some_and(|list| list.split(',').map(str::trim).any(|n| n == "*" || n == from))
}

/// Writes (or rotates, or refreshes) the pull secret in one namespace: berth's own pull
/// credential for the token registries' `token_hosts`, ECR's credentials for the `ecr`
/// Registries. Returns when it next needs rotating or refreshing.
pub(super) async fn ensure_pull_secret(
    policy: &AccessPolicy,
    ctx: &Context,
    target_ns: &str,
    secret_name: &str,
    lifetime: Duration,
    token_hosts: &BTreeSet<String>,
    ecr: &mut EcrCredentials,
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
    if token_hosts.is_empty() && ecr.is_empty() {
        // No registry (yet) to write credentials for: a docker config without one would break
        // the Secret kubelets use now (berth starting, its stores not filled yet).
        return Err(NotReady {
            reason: "NoRepositories",
            message: "the policy selects no Repository in a registry whose token service is berth or of type ecr"
                .into(),
        });
    }
    let recorded = existing.as_ref().map(|s| Recorded::from_annotations(s.annotations()));
    let rotate = policy.annotations().get(ROTATE_ANNOTATION).map(String::as_str);
    let revoke = policy.annotations().get(REVOKE_ANNOTATION).map(String::as_str);
    let now = now_unix();
    let (token, on_ecr) = (!token_hosts.is_empty(), !ecr.is_empty());
    let scope = ecr.scope.clone();
    let plan = plan_pull_secret(recorded.as_ref(), lifetime, (rotate, revoke), token_hosts, scope.as_deref(), now);
    if !plan.write {
        return Ok(recorded.map(|r| next_due(&r, lifetime, (token, on_ecr), now)).unwrap_or(now));
    }
    let written: BTreeMap<String, (String, String)> = existing
        .as_ref()
        .and_then(|s| s.data.as_ref()?.get(".dockerconfigjson"))
        .map(|c| docker_config_auths(&c.0))
        .unwrap_or_default();
    let mut annotations = BTreeMap::from([(OWNER_ANNOTATION.to_string(), owner)]);
    let mut auths = BTreeMap::new();
    let mut problem = None;

    // ECR's credentials, which berth cannot rotate: fetched again when due; otherwise, or when
    // ECR fails (until they expire), kept as written, with what was recorded about them.
    if on_ecr {
        let fresh = if plan.fetch_ecr { ecr.get(ctx).await.map_err(|e| problem = Some(e)).ok() } else { None };
        match (fresh, recorded.as_ref()) {
            (Some(f), _) => {
                auths.extend(f.auths.clone());
                annotations.insert(ECR_FETCHED_ANNOTATION.into(), f.fetched_at.to_string());
                annotations.insert(ECR_EXPIRES_ANNOTATION.into(), f.expires_at.to_string());
                annotations.extend(scope.map(|s| (ECR_SCOPE_ANNOTATION.to_string(), s)));
            }
            (None, Some(r)) => {
                // Everything but berth's own entries is ECR's.
                auths
                    .extend(written.iter().filter(|(h, _)| !r.hosts.contains(*h)).map(|(h, c)| (h.clone(), c.clone())));
                annotations.extend(r.ecr_fetched_at.map(|t| (ECR_FETCHED_ANNOTATION.to_string(), t.to_string())));
                annotations.extend(r.ecr_expires_at.map(|t| (ECR_EXPIRES_ANNOTATION.to_string(), t.to_string())));
                annotations.extend(r.ecr_scope.clone().map(|s| (ECR_SCOPE_ANNOTATION.to_string(), s)));
            }
            (None, None) => {}
        }
    }

    // berth's own pull credential: a new password when due, otherwise the one written.
    if token {
        let username = robot::pull_username(&ns, &name);
        let current = recorded
            .as_ref()
            .filter(|r| !plan.new_password && r.issued_at.is_some())
            .and_then(|r| Some((r, written.get(token_hosts.first()?)?)))
            .filter(|(_, (u, p))| {
                *u == username && token_hosts.iter().all(|h| written.get(h) == Some(&(u.clone(), p.clone())))
            });
        let (password, records, issued) = match current {
            Some((r, (_, password))) => (password.clone(), r.records.clone(), r.issued_at.unwrap_or(now)),
            None => {
                // A revocation drops every earlier password; any other rotation keeps them
                // until they expire.
                let revoked = recorded.as_ref().is_some_and(|r| r.revoked_for.as_deref() != revoke);
                let previous =
                    if revoked { Vec::new() } else { recorded.as_ref().map(|r| r.records.clone()).unwrap_or_default() };
                let (password, records) = robot::rotate(&previous, Some(lifetime), now);
                (password, records, now)
            }
        };
        annotations.extend([
            (USERNAME_ANNOTATION.to_string(), username.clone()),
            (HASHES_ANNOTATION.to_string(), serde_json::to_string(&records).unwrap_or_default()),
            (ISSUED_ANNOTATION.to_string(), issued.to_string()),
            (HOSTS_ANNOTATION.to_string(), join(token_hosts)),
        ]);
        if let Some(r) = rotate {
            annotations.insert(ROTATED_FOR_ANNOTATION.to_string(), r.to_string());
        }
        if let Some(r) = revoke {
            annotations.insert(REVOKED_FOR_ANNOTATION.to_string(), r.to_string());
        }
        // A host that is both gets berth's own credential.
        auths.extend(same_for_all(token_hosts, &username, &password));
    }

    let next = next_due(&Recorded::from_annotations(&annotations), lifetime, (token, on_ecr), now);
    let unchanged = existing.as_ref().is_some_and(|s| s.annotations() == &annotations) && auths == written;
    if !unchanged && !auths.is_empty() {
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
        secret.data =
            Some(BTreeMap::from([(".dockerconfigjson".to_string(), ByteString(docker_config(&auths).into_bytes()))]));
        match existing {
            Some(_) => api.replace(secret_name, &PostParams::default(), &secret).await,
            None => api.create(&PostParams::default(), &secret).await,
        }
        .map_err(kube_not_ready)?;
        tracing::info!(namespace = %target_ns, secret = secret_name, policy = %name, "pull secret written");
    }
    match problem {
        Some(p) => Err(p),
        None => Ok(next),
    }
}

/// When a pull secret recorded as `r` next needs a new password (for token registries) or
/// fresh ECR credentials (`on_ecr`): the earlier of the two, the ECR one no sooner than
/// [`ECR_MIN_REFRESH`] from `now`.
pub fn next_due(r: &Recorded, lifetime: Duration, (token, on_ecr): (bool, bool), now: i64) -> i64 {
    let mut next = i64::MAX;
    if token {
        next = next_rotation(r.issued_at.unwrap_or(now), lifetime);
    }
    if on_ecr {
        let refresh = match (r.ecr_fetched_at, r.ecr_expires_at) {
            (Some(fetched), Some(expires)) => ecr_refresh_at(fetched, expires),
            _ => now,
        };
        let floor = now.saturating_add(i64::try_from(ECR_MIN_REFRESH.as_secs()).unwrap_or(i64::MAX));
        next = next.min(refresh.max(floor));
    }
    next
}

fn join(hosts: &BTreeSet<String>) -> String {
    hosts.iter().cloned().collect::<Vec<_>>().join(",")
}

/// What a pull secret needs now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullPlan {
    /// A new password for berth's own pull credential (token registries).
    pub new_password: bool,
    /// Fresh ECR credentials (ecr Registries).
    pub fetch_ecr: bool,
    /// Write the Secret: for one of those, or to drop the credentials of registries the policy
    /// no longer selects Repositories in.
    pub write: bool,
}

/// What the pull secret recorded as `recorded` needs for the token registries' `token_hosts`
/// and the ecr Registries' sources summed up as `ecr_scope` ([`ecr_scope`]; `None`: no ecr
/// Registry): berth's password rotates on its own schedule
/// ([`needs_new_password`]), ECR's credentials are refreshed on theirs ([`needs_ecr_refresh`]),
/// and neither makes the other change.
pub fn plan_pull_secret(
    recorded: Option<&Recorded>,
    lifetime: Duration,
    asked: (Option<&str>, Option<&str>),
    token_hosts: &BTreeSet<String>,
    ecr_scope: Option<&str>,
    now: i64,
) -> PullPlan {
    let new_password = !token_hosts.is_empty() && needs_new_password(recorded, lifetime, asked, token_hosts, now);
    let fetch_ecr = needs_ecr_refresh(recorded, ecr_scope, now);
    let stale = recorded.is_some_and(|r| {
        (token_hosts.is_empty() && (!r.hosts.is_empty() || r.issued_at.is_some()))
            || (ecr_scope.is_none() && (r.ecr_scope.is_some() || r.ecr_fetched_at.is_some()))
    });
    PullPlan { new_password, fetch_ecr, write: new_password || fetch_ecr || stale }
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
