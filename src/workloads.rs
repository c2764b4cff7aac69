//! Which workloads in the cluster reference which images. The matching is pure; the listing
//! reads Pods and every controller kind that stamps Pods out.

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    batch::v1::{CronJob, Job},
    core::v1::{Pod, PodSpec},
};
use kube::{Api, Client, ResourceExt, api::ListParams};

/// Whether `image` (as written in a pod spec) is in repository `uri` (`host[:port]/path`):
/// `uri`, `uri:tag`, `uri@digest` or `uri:tag@digest`.
pub fn in_repository(image: &str, uri: &str) -> bool {
    image.strip_prefix(uri).is_some_and(|rest| rest.is_empty() || rest.starts_with(':') || rest.starts_with('@'))
}

/// Every image of a pod spec: containers, initContainers and ephemeral containers.
pub fn pod_spec_images(spec: &PodSpec) -> impl Iterator<Item = &str> {
    let containers = spec.containers.iter().filter_map(|c| c.image.as_deref());
    let init = spec.init_containers.iter().flatten().filter_map(|c| c.image.as_deref());
    let ephemeral = spec.ephemeral_containers.iter().flatten().filter_map(|c| c.image.as_deref());
    containers.chain(init).chain(ephemeral)
}

/// A workload and one image it references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageUse {
    /// `Kind namespace/name`.
    pub workload: String,
    pub image: String,
}

/// Every image referenced by a Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or
/// CronJob in the cluster.
pub async fn images_in_use(client: &Client) -> Result<Vec<ImageUse>, kube::Error> {
    let mut uses = Vec::new();
    let lp = ListParams::default();
    fn collect<K: ResourceExt>(
        kind: &str,
        items: Vec<K>,
        spec: impl Fn(&K) -> Option<&PodSpec>,
        out: &mut Vec<ImageUse>,
    ) {
        for item in &items {
            if let Some(s) = spec(item) {
                let workload = format!("{kind} {}/{}", item.namespace().unwrap_or_default(), item.name_any());
                out.extend(pod_spec_images(s).map(|i| ImageUse { workload: workload.clone(), image: i.to_string() }));
            }
        }
    }
    collect("Pod", Api::<Pod>::all(client.clone()).list(&lp).await?.items, |p| p.spec.as_ref(), &mut uses);
    collect(
        "Deployment",
        Api::<Deployment>::all(client.clone()).list(&lp).await?.items,
        |d| d.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        &mut uses,
    );
    collect(
        "StatefulSet",
        Api::<StatefulSet>::all(client.clone()).list(&lp).await?.items,
        |d| d.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        &mut uses,
    );
    collect(
        "DaemonSet",
        Api::<DaemonSet>::all(client.clone()).list(&lp).await?.items,
        |d| d.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        &mut uses,
    );
    collect(
        "ReplicaSet",
        Api::<ReplicaSet>::all(client.clone()).list(&lp).await?.items,
        |d| d.spec.as_ref().and_then(|s| s.template.as_ref()).and_then(|t| t.spec.as_ref()),
        &mut uses,
    );
    collect(
        "Job",
        Api::<Job>::all(client.clone()).list(&lp).await?.items,
        |d| d.spec.as_ref().and_then(|s| s.template.spec.as_ref()),
        &mut uses,
    );
    collect(
        "CronJob",
        Api::<CronJob>::all(client.clone()).list(&lp).await?.items,
        |d| d.spec.as_ref().and_then(|s| s.job_template.spec.as_ref()).and_then(|s| s.template.spec.as_ref()),
        &mut uses,
    );
    Ok(uses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_match_their_repository_only() {
        let uri = "registry.example:5000/team-a/app";
        assert!(in_repository("registry.example:5000/team-a/app", uri));
        assert!(in_repository("registry.example:5000/team-a/app:v1", uri));
        assert!(in_repository("registry.example:5000/team-a/app@sha256:abc", uri));
        assert!(in_repository("registry.example:5000/team-a/app:v1@sha256:abc", uri));
        assert!(!in_repository("registry.example:5000/team-a/app2:v1", uri));
        assert!(!in_repository("registry.example:5000/team-a/app/sub:v1", uri));
        assert!(!in_repository("other:5000/team-a/app:v1", uri));
    }
}
