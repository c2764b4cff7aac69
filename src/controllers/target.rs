//! The registry path a Repository may act on (tenancy and conflicts checked) and its listing:
//! what the Repository and lifecycle controllers both start from.

use std::{collections::BTreeMap, sync::Arc};

use futures::{StreamExt, TryStreamExt, stream};
use kube::{ResourceExt, runtime::reflector::ObjectRef};

use super::{Context, Error, NotReady, claim_of};
use crate::{
    api::{Registry, Repository},
    hosts,
    registry::{Backend, Descriptor},
    repository::tenancy,
};

/// The registry and path a Repository may act on, once tenancy and conflicts are checked.
pub struct Target {
    pub registry: Arc<Registry>,
    pub path: String,
    /// `<url host>/<path>`, the name berth reaches it by.
    pub uri: String,
    /// Every host the registry is pulled by (its url's, then its aliases): workloads
    /// may reference the repository under any of them.
    pub hosts: Vec<String>,
}

/// Checks tenancy and conflicts; the registry, path and URI this Repository may act on.
pub fn target(repo: &Repository, ctx: &Context) -> Result<Target, NotReady> {
    let claim = claim_of(repo);
    let registry = ctx
        .registries
        .get(&ObjectRef::new(&claim.registry))
        .ok_or_else(|| NotReady::new("RegistryNotFound", format!("Registry {:?} does not exist", claim.registry)))?;
    tenancy::check_path(&claim.namespace, &claim.path, &registry.spec.path_prefixes)
        .map_err(|m| NotReady::new("PathNotAllowed", m))?;
    match ctx.repository_for_path(&claim.registry, &claim.path) {
        Some(owner) if claim_of(&owner) != claim => {
            return Err(NotReady::new(
                "Conflict",
                format!(
                    "path {:?} in Registry {:?} is already declared by Repository {}/{}",
                    claim.path,
                    claim.registry,
                    owner.namespace().unwrap_or_default(),
                    owner.name_any()
                ),
            ));
        }
        _ => {}
    }
    let host = hosts::url_host(&registry.spec.url)
        .ok_or_else(|| NotReady::new("InvalidSpec", format!("Registry url {:?} has no host", registry.spec.url)))?;
    let hosts = hosts::of_registry(&registry.spec);
    Ok(Target { uri: format!("{host}/{}", claim.path), path: claim.path, registry, hosts })
}

/// Every tag of the repository resolved to its manifest, `concurrency` HEAD requests at a time.
pub async fn list_tags(
    backend: &dyn Backend,
    path: &str,
    concurrency: usize,
) -> Result<BTreeMap<String, Descriptor>, Error> {
    let tags = backend.tags(path).await?;
    let resolved: Vec<Option<(String, Descriptor)>> = stream::iter(tags)
        .map(|tag| async move { backend.resolve(path, &tag).await.map(|d| d.map(|d| (tag, d))) })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    // A tag deleted between the listing and its HEAD is simply gone.
    Ok(resolved.into_iter().flatten().collect())
}
