//! Which workloads in the cluster reference which images. The matching is pure; the listing
//! reads Pods and every controller kind that stamps Pods out.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
    batch::v1::{CronJob, Job},
    core::v1::{Pod, PodSpec},
};
use kube::{Api, Client, ResourceExt, api::ListParams};

use crate::{
    hosts,
    rollout::{CONTAINERS_ANNOTATION, ROLLOUT_ANNOTATION, Record},
};

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
    /// The workload's `berth.dev/rollout` annotation, on the images it rolls out: a version
    /// policy makes the tag it selects in use too. `None` for Pods, ReplicaSets and Jobs (their
    /// owner carries it) and for containers `berth.dev/containers` leaves out.
    pub rollout: Option<String>,
    /// With `rollout`: the digests the workload was rolled back from (`berth.dev/bad-digests`),
    /// which its policy no longer selects.
    pub bad_digests: Vec<String>,
}

/// The images of a Deployment's, StatefulSet's, DaemonSet's or CronJob's pod template, with its
/// `berth.dev/rollout` annotation on those the annotation rolls out: containers and
/// initContainers, only those `berth.dev/containers` names when it is set; with it the digests
/// the workload was rolled back from. Pure.
pub fn template_uses(workload: &str, annotations: &BTreeMap<String, String>, spec: &PodSpec) -> Vec<ImageUse> {
    let rollout = annotations.get(ROLLOUT_ANNOTATION);
    let bad = rollout.map(|_| Record::from_annotations(annotations).bad).unwrap_or_default();
    let only: Option<Vec<&str>> = annotations.get(CONTAINERS_ANNOTATION).map(|l| l.split(',').map(str::trim).collect());
    let follows = |name: &str| rollout.filter(|_| only.as_ref().is_none_or(|names| names.contains(&name)));
    let containers = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    let followed = containers.filter_map(|c| Some((c.image.as_deref()?, follows(&c.name))));
    let ephemeral = spec.ephemeral_containers.iter().flatten().filter_map(|c| Some((c.image.as_deref()?, None)));
    followed
        .chain(ephemeral)
        .map(|(image, rollout)| ImageUse {
            workload: workload.to_string(),
            image: image.to_string(),
            rollout: rollout.cloned(),
            bad_digests: if rollout.is_some() { bad.clone() } else { Vec::new() },
        })
        .collect()
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

/// Every object of a kind with a pod template. `rolls_out`: the kind takes `berth.dev/rollout`
/// (Deployment, StatefulSet, DaemonSet, CronJob; not the ReplicaSets and Jobs they stamp out).
async fn collect<K>(
    client: &Client,
    kind: &'static str,
    rolls_out: bool,
    spec: impl Fn(&K) -> Option<&PodSpec>,
) -> Result<Vec<ImageUse>, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + ResourceExt + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let none = BTreeMap::new();
    list_paged(Api::<K>::all(client.clone()), |item: &K, out: &mut Vec<ImageUse>| {
        if let Some(s) = spec(item) {
            let workload = format!("{kind} {}/{}", item.namespace().unwrap_or_default(), item.name_any());
            out.extend(template_uses(&workload, if rolls_out { item.annotations() } else { &none }, s));
        }
    })
    .await
}

/// Every image referenced by a Pod (in its spec or running, by digest), Deployment,
/// StatefulSet, DaemonSet, ReplicaSet, Job or CronJob in the cluster, read page by page, with
/// the version policy that rolls it out (see [`template_uses`]).
pub async fn images_in_use(client: &Client) -> Result<Vec<ImageUse>, kube::Error> {
    let mut uses = list_paged(Api::<Pod>::all(client.clone()), |p: &Pod, out: &mut Vec<ImageUse>| {
        let workload = format!("Pod {}/{}", p.namespace().unwrap_or_default(), p.name_any());
        let spec = p.spec.iter().flat_map(pod_spec_images).map(String::from);
        let images = spec.chain(pod_running_images(p));
        out.extend(images.map(|image| ImageUse {
            workload: workload.clone(),
            image,
            rollout: None,
            bad_digests: Vec::new(),
        }));
    })
    .await?;
    uses.extend(
        collect::<Deployment>(client, "Deployment", true, |d| d.spec.as_ref().and_then(|s| s.template.spec.as_ref()))
            .await?,
    );
    uses.extend(
        collect::<StatefulSet>(client, "StatefulSet", true, |d| d.spec.as_ref().and_then(|s| s.template.spec.as_ref()))
            .await?,
    );
    uses.extend(
        collect::<DaemonSet>(client, "DaemonSet", true, |d| d.spec.as_ref().and_then(|s| s.template.spec.as_ref()))
            .await?,
    );
    uses.extend(
        collect::<ReplicaSet>(client, "ReplicaSet", false, |d| {
            d.spec.as_ref().and_then(|s| s.template.as_ref()).and_then(|t| t.spec.as_ref())
        })
        .await?,
    );
    uses.extend(
        collect::<Job>(client, "Job", false, |d| d.spec.as_ref().and_then(|s| s.template.spec.as_ref())).await?,
    );
    uses.extend(
        collect::<CronJob>(client, "CronJob", true, |d| {
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
    fn the_rollout_annotation_goes_with_the_images_it_rolls_out() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "app", "image": "r:5000/team/app:v1.4.2"}, {"name": "proxy", "image": "r:5000/team/proxy:v2"}],
            "initContainers": [{"name": "migrate", "image": "r:5000/team/app:v1.4.2"}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
        }))
        .unwrap();
        let uses = |annotations: &[(&str, &str)]| -> Vec<(String, Option<String>)> {
            let a = annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let uses = template_uses("Deployment team/api", &a, &spec);
            assert!(uses.iter().all(|u| u.workload == "Deployment team/api"));
            uses.into_iter().map(|u| (u.image, u.rollout)).collect()
        };
        let semver = Some("semver:~1.4".to_string());
        let at = |image: &str, rollout: &Option<String>| (image.to_string(), rollout.clone());
        assert_eq!(
            uses(&[(ROLLOUT_ANNOTATION, "semver:~1.4")]),
            [
                at("r:5000/team/app:v1.4.2", &semver),
                at("r:5000/team/proxy:v2", &semver),
                at("r:5000/team/app:v1.4.2", &semver),
                at("busybox", &None),
            ]
        );
        assert_eq!(
            uses(&[(ROLLOUT_ANNOTATION, "semver:~1.4"), (CONTAINERS_ANNOTATION, "app, migrate")]),
            [
                at("r:5000/team/app:v1.4.2", &semver),
                at("r:5000/team/proxy:v2", &None),
                at("r:5000/team/app:v1.4.2", &semver),
                at("busybox", &None),
            ],
            "only the containers berth.dev/containers names follow the policy"
        );
        assert!(uses(&[]).iter().all(|(_, r)| r.is_none()));

        // The digests it was rolled back from go with the policy, on the images it rolls out.
        let bad = format!("sha256:{}", "b".repeat(64));
        let a: BTreeMap<String, String> = [
            (ROLLOUT_ANNOTATION.to_string(), "semver:~1.4".to_string()),
            (CONTAINERS_ANNOTATION.to_string(), "app".to_string()),
            (crate::rollout::BAD_DIGESTS_ANNOTATION.to_string(), format!("{bad},not-a-digest")),
        ]
        .into();
        let with_bad: Vec<Vec<String>> =
            template_uses("Deployment team/api", &a, &spec).into_iter().map(|u| u.bad_digests).collect();
        assert_eq!(with_bad, [vec![bad], vec![], vec![], vec![]]);
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
