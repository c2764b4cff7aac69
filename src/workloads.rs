//! Which workloads in the cluster reference which images. The matching is pure; the listing
//! reads Pods and every controller kind that stamps Pods out.

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    batch::v1::{CronJob, Job},
    core::v1::{Pod, PodSpec},
};
use kube::{Api, Client, ResourceExt, api::ListParams};

use crate::hosts;

/// Whether `image` (as written in a pod spec, or a running image) is in repository `path` of
/// the registry pulled by `hosts` (see [`hosts::of_registry`]), under any of its
/// names: `host/path`, `host/path:tag`, `host/path@digest` or `host/path:tag@digest`.
pub fn in_repository(image: &str, hosts: &[String], path: &str) -> bool {
    hosts::repository_suffix(image, hosts, path).is_some()
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

/// The images a Pod runs, as its status reports them (`imageID`, by digest): what runs may differ
/// from the spec (a tag moved since the pull). `docker-pullable://` and similar prefixes go.
pub fn pod_running_images(pod: &Pod) -> impl Iterator<Item = String> + '_ {
    let status = pod.status.as_ref();
    let statuses = status.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten();
    let init = status.and_then(|s| s.init_container_statuses.as_ref()).into_iter().flatten();
    let ephemeral = status.and_then(|s| s.ephemeral_container_statuses.as_ref()).into_iter().flatten();
    statuses.chain(init).chain(ephemeral).filter_map(|c| running_image(&c.image_id))
}

/// `host/path@sha256:...` from a container status's `imageID`, if it names a digest.
pub fn running_image(image_id: &str) -> Option<String> {
    let id = image_id.split_once("://").map(|(_, rest)| rest).unwrap_or(image_id);
    (id.contains("@sha256:") && !id.starts_with("sha256:")).then(|| id.to_string())
}

/// Objects listed per page: a cluster with 100,000 Pods is read in pieces, not one response.
const PAGE: u32 = 500;

/// Every object of a kind, page by page, reduced by `keep` as each page arrives.
async fn list_paged<K, T>(api: Api<K>, mut keep: impl FnMut(&K, &mut Vec<T>)) -> Result<Vec<T>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&lp).await?;
        for item in &page.items {
            keep(item, &mut out);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(out),
        }
    }
}

async fn collect<K>(
    client: &Client,
    kind: &'static str,
    spec: impl Fn(&K) -> Option<&PodSpec>,
) -> Result<Vec<ImageUse>, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + ResourceExt + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    list_paged(Api::<K>::all(client.clone()), |item: &K, out: &mut Vec<ImageUse>| {
        if let Some(s) = spec(item) {
            let workload = format!("{kind} {}/{}", item.namespace().unwrap_or_default(), item.name_any());
            out.extend(pod_spec_images(s).map(|i| ImageUse { workload: workload.clone(), image: i.to_string() }));
        }
    })
    .await
}

/// Every image referenced by a Pod (in its spec or running, by digest), Deployment,
/// StatefulSet, DaemonSet, ReplicaSet, Job or CronJob in the cluster, read page by page.
pub async fn images_in_use(client: &Client) -> Result<Vec<ImageUse>, kube::Error> {
    let mut uses = list_paged(Api::<Pod>::all(client.clone()), |p: &Pod, out: &mut Vec<ImageUse>| {
        let workload = format!("Pod {}/{}", p.namespace().unwrap_or_default(), p.name_any());
        let spec = p.spec.iter().flat_map(pod_spec_images).map(String::from);
        out.extend(spec.chain(pod_running_images(p)).map(|image| ImageUse { workload: workload.clone(), image }));
    })
    .await?;
    uses.extend(
        collect::<Deployment>(client, "Deployment", |d| d.spec.as_ref().and_then(|s| s.template.spec.as_ref())).await?,
    );
    uses.extend(
        collect::<StatefulSet>(client, "StatefulSet", |d| d.spec.as_ref().and_then(|s| s.template.spec.as_ref()))
            .await?,
    );
    uses.extend(
        collect::<DaemonSet>(client, "DaemonSet", |d| d.spec.as_ref().and_then(|s| s.template.spec.as_ref())).await?,
    );
    uses.extend(
        collect::<ReplicaSet>(client, "ReplicaSet", |d| {
            d.spec.as_ref().and_then(|s| s.template.as_ref()).and_then(|t| t.spec.as_ref())
        })
        .await?,
    );
    uses.extend(collect::<Job>(client, "Job", |d| d.spec.as_ref().and_then(|s| s.template.spec.as_ref())).await?);
    uses.extend(
        collect::<CronJob>(client, "CronJob", |d| {
            d.spec.as_ref().and_then(|s| s.job_template.spec.as_ref()).and_then(|s| s.template.spec.as_ref())
        })
        .await?,
    );
    Ok(uses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_match_their_repository_only() {
        let hosts = vec!["registry.example:5000".to_string()];
        let is = |image: &str| in_repository(image, &hosts, "team-a/app");
        assert!(is("registry.example:5000/team-a/app"));
        assert!(is("registry.example:5000/team-a/app:v1"));
        assert!(is("registry.example:5000/team-a/app@sha256:abc"));
        assert!(is("registry.example:5000/team-a/app:v1@sha256:abc"));
        assert!(!is("registry.example:5000/team-a/app2:v1"));
        assert!(!is("registry.example:5000/team-a/app/sub:v1"));
        assert!(!is("other:5000/team-a/app:v1"));
    }

    #[test]
    fn images_match_under_every_name_of_the_registry_and_so_do_running_images() {
        let hosts = vec!["berth-registry.berth.svc:5000".to_string(), "127.0.0.1:30500".to_string()];
        let d = format!("sha256:{}", "c".repeat(64));
        assert!(in_repository("127.0.0.1:30500/team-a/app:v1", &hosts, "team-a/app"));
        assert!(in_repository("berth-registry.berth.svc:5000/team-a/app:v1", &hosts, "team-a/app"));
        // The kubelet reports the name the pod pulled by.
        let running = running_image(&format!("docker-pullable://127.0.0.1:30500/team-a/app@{d}")).unwrap();
        assert!(in_repository(&running, &hosts, "team-a/app"));
        assert!(!in_repository("127.0.0.1:30501/team-a/app:v1", &hosts, "team-a/app"));
    }

    #[test]
    fn running_images_come_from_image_ids_with_a_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(running_image(&format!("r:5000/team/app@{d}")), Some(format!("r:5000/team/app@{d}")));
        assert_eq!(
            running_image(&format!("docker-pullable://r:5000/team/app@{d}")),
            Some(format!("r:5000/team/app@{d}"))
        );
        assert_eq!(running_image(&d), None, "an image id alone names no repository");
        assert_eq!(running_image(""), None);
        assert_eq!(running_image("r:5000/team/app:v1"), None);
    }
}
