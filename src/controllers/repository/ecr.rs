//! A Repository on an `ecr` Registry: the ECR repository is created (or adopted) and kept to
//! the spec (tag mutability, scan on push, berth's resource tags, a `Native` lifecycle policy),
//! and read with one DescribeImages per 1,000 images. ECR enforces immutability and records
//! push times itself: no ledger, no restores.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{Api, ResourceExt, runtime::events::EventType};

use super::{Observed, publish};
use crate::{
    api::{LifecycleMode, LifecyclePolicy, Repository, RepositoryEcrStatus, Visibility},
    controllers::{Context, Error, NotReady, target::Target},
    registry::{Ecr, RegistryError, sha256_digest},
    repository::ecr::{self as plan, Change},
    scanning,
};

fn registry_err(e: RegistryError) -> NotReady {
    NotReady::from(&Error::Registry(e))
}

/// Creates or adopts the repository, makes the changes the spec asks for, and lists its images.
pub(super) async fn observe(
    repo: &Repository,
    ctx: &Context,
    target: &Target,
    ecr: &Ecr,
) -> Result<Observed, NotReady> {
    if repo.spec.visibility == Visibility::Public {
        return Err(NotReady::new(
            "NotSupportedByRegistry",
            "ECR private repositories cannot be pulled anonymously: set visibility: Private and grant pull with an AccessPolicy",
        ));
    }
    let owner = format!("{}/{}", repo.namespace().unwrap_or_default(), repo.name_any());
    let previous = repo.status.as_ref().and_then(|s| s.ecr.clone()).unwrap_or_default();
    let frequency =
        scanning::plan::frequency(target.registry.spec.scanning.as_ref(), &target.path, repo.spec.scan_on_push);
    let desired = plan::desired(&repo.spec, frequency.is_some_and(|f| f >= crate::api::ScanFrequency::OnPush));

    let mut info = ecr.describe_repository(&target.path).await.map_err(registry_err)?;
    let mut status = RepositoryEcrStatus { adopted: previous.adopted, ..previous.clone() };
    let mut tags_now = BTreeMap::new();
    if let Some(i) = &info
        && (previous.arn.as_deref() != Some(i.arn.as_str())
            || !desired.tags.is_empty()
            || !previous.managed_tag_keys.is_empty())
    {
        tags_now = ecr.resource_tags(&i.arn).await.map_err(registry_err)?;
    }
    if let Some(i) = &info
        && previous.arn.as_deref() != Some(i.arn.as_str())
    {
        // First sight of a repository berth did not create (it lacks berth's owner tag).
        status.adopted = !plan::made_by(&tags_now, &owner);
        if status.adopted {
            let created = i.created_at.map(|s| format!(", created {}", fmt_time(s))).unwrap_or_default();
            let note =
                format!("adopted the existing ECR repository {}{created}: berth now manages its settings", i.arn);
            publish(ctx, repo, EventType::Normal, "RepositoryAdopted", note).await;
        }
    }
    let decided = plan::plan(&desired, info.as_ref(), &tags_now, &previous.managed_tag_keys, &owner);
    for change in &decided.changes {
        match change {
            Change::Create(new) => match ecr.create_repository(&target.path, new).await.map_err(registry_err)? {
                Some(created) => {
                    publish(ctx, repo, EventType::Normal, "RepositoryCreated", format!("created {}", created.arn))
                        .await;
                    status.adopted = false;
                    info = Some(created);
                }
                // Someone made it between the read and the create: adopted on the next pass.
                None => return Err(NotReady::new("RegistryError", "the repository appeared while berth created it")),
            },
            Change::Mutability { mutability, filters } => {
                ecr.put_tag_mutability(&target.path, mutability, filters).await.map_err(registry_err)?
            }
            Change::ScanOnPush(on) => ecr.put_scan_on_push(&target.path, *on).await.map_err(registry_err)?,
            Change::Tag(tags) => {
                let arn = info.as_ref().map(|i| i.arn.clone()).unwrap_or_default();
                ecr.tag_resource(&arn, tags).await.map_err(registry_err)?
            }
            Change::Untag(keys) => {
                let arn = info.as_ref().map(|i| i.arn.clone()).unwrap_or_default();
                ecr.untag_resource(&arn, keys).await.map_err(registry_err)?
            }
        }
    }
    let info = info.ok_or_else(|| NotReady::new("RegistryError", "the repository is missing after it was created"))?;
    status.arn = Some(info.arn.clone());
    status.created_at = info.created_at.and_then(|s| Timestamp::from_second(s).ok()).map(Time);
    status.encryption_type = Some(info.encryption_type.clone());
    status.managed_tag_keys = decided.managed_tag_keys.clone();
    status.lifecycle_policy_sha256 = native_lifecycle(repo, ctx, target, ecr, previous.lifecycle_policy_sha256).await?;
    status.policy_statements = repository_policy(ctx, target, ecr, previous.policy_statements).await?;

    let images = ecr.images(&target.path).await.map_err(registry_err)?;
    let tags = crate::registry::ecr::tag_map(&images);
    let tagged: BTreeSet<&str> = tags.values().map(|d| d.digest.as_str()).collect();
    let last_pushed_at = images.iter().filter(|i| tagged.contains(i.digest.as_str())).map(|i| i.pushed_at_ms).max();
    Ok(Observed {
        uri: if info.uri.is_empty() { target.uri.clone() } else { info.uri.clone() },
        tags,
        last_pushed_at,
        restores: 0,
        unrestored: Vec::new(),
        known: images.iter().map(|i| i.digest.clone()).collect(),
        ecr: Some(status),
        mismatch: decided.mismatch.map(|m| NotReady::new("EncryptionMismatch", m)),
    })
}

fn fmt_time(unix: i64) -> String {
    Timestamp::from_second(unix).map(|t| t.to_string()).unwrap_or_else(|_| unix.to_string())
}

/// The statements AccessPolicies grant AWS principals go into the repository policy, beside
/// everyone else's (berth owns the Sids that start with `Berth`). Without the access index
/// (berth just started) nothing is written: a policy decided on an incomplete view could drop
/// a grant. Returns berth's Sids in the policy now.
async fn repository_policy(
    ctx: &Context,
    target: &Target,
    ecr: &Ecr,
    before: Vec<String>,
) -> Result<Vec<String>, NotReady> {
    use crate::repository::ecr_policy::{Merged, berth_sids, berth_statements, merge};
    let Some(index) = ctx.tokens.index(&target.registry.name_any()) else { return Ok(before) };
    let statements = berth_statements(&index.aws_grants(&target.path));
    if statements.is_empty() && before.is_empty() {
        // Nothing to write and nothing of berth's there: no call.
        return Ok(before);
    }
    let current = ecr.repository_policy(&target.path).await.map_err(registry_err)?;
    match merge(current.as_deref(), &statements) {
        Ok(Merged::Unchanged) => Ok(berth_sids(current.as_deref())),
        Ok(Merged::Set(text)) => {
            ecr.set_repository_policy(&target.path, Some(&text)).await.map_err(|e| match e {
                // ECR checks principals: a role that does not exist is the policy's problem.
                RegistryError::Config(m) => NotReady::new("InvalidRepositoryPolicy", m),
                e => registry_err(e),
            })?;
            Ok(berth_sids(Some(&text)))
        }
        Ok(Merged::Delete) => {
            ecr.set_repository_policy(&target.path, None).await.map_err(registry_err)?;
            Ok(Vec::new())
        }
        Err(m) => Err(NotReady::new("RepositoryPolicyUnreadable", m)),
    }
}

/// A `mode: Native` LifecyclePolicy goes onto the repository as its ECR lifecycle policy; a
/// policy berth put there goes when the Repository no longer asks for one (a policy someone
/// else wrote is left alone). Returns the SHA-256 of the text berth owns now.
async fn native_lifecycle(
    repo: &Repository,
    ctx: &Context,
    target: &Target,
    ecr: &Ecr,
    owned: Option<String>,
) -> Result<Option<String>, NotReady> {
    // Listed by name (berth's RBAC lists and watches LifecyclePolicies; it has no `get`).
    let policy = match &repo.spec.lifecycle_policy_ref {
        Some(r) => Api::<LifecyclePolicy>::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default())
            .list(&kube::api::ListParams::default().fields(&format!("metadata.name={}", r.name)))
            .await
            .map_err(|e| NotReady::from(&Error::Kube(e)))?
            .items
            .into_iter()
            .next(),
        None => None,
    };
    let wanted =
        policy.filter(|p| p.spec.mode == LifecycleMode::Native).map(|p| plan::lifecycle_policy_text(&p.spec.rules));
    if wanted.is_none() && owned.is_none() {
        // Nothing to put there, and nothing of berth's to take off: no call.
        return Ok(None);
    }
    let current = ecr.lifecycle_policy(&target.path).await.map_err(registry_err)?;
    match (wanted, current) {
        (Some(text), current) => {
            if !current.as_deref().is_some_and(|c| plan::same_policy(c, &text)) {
                ecr.put_lifecycle_policy(&target.path, &text).await.map_err(registry_err)?;
            }
            Ok(Some(sha256_digest(text.as_bytes())))
        }
        (None, Some(current)) => {
            let theirs = owned.as_deref().is_none_or(|sha| {
                let ours = serde_json::from_str::<serde_json::Value>(&current)
                    .map(|v| sha256_digest(v.to_string().as_bytes()))
                    .unwrap_or_default();
                ours != sha && sha256_digest(current.as_bytes()) != sha
            });
            if !theirs {
                ecr.delete_lifecycle_policy(&target.path).await.map_err(registry_err)?;
            }
            Ok(None)
        }
        (None, None) => Ok(None),
    }
}
