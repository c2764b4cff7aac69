//! The rollout controller against a real API server (with kube-controller-manager running the
//! real deployment controller) and a real Distribution registry, skopeo pushing.

mod support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, StatefulSet},
    batch::v1::CronJob,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::{eventually, scenario::Env, skopeo::Creds, skopeo::describe};

const PINNED_WAIT: Duration = Duration::from_secs(90);

fn pod_template(containers: Value, init: Value) -> Value {
    json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": containers, "initContainers": init, "restartPolicy": "Always"},
    })
}

fn deployment(name: &str, annotations: Value, containers: Value, init: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": pod_template(containers, init),
        },
    })
}

async fn create<K>(env: &Env, object: Value) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let obj: K = serde_json::from_value(object).unwrap();
    Api::<K>::namespaced(env.ns.client.clone(), &env.ns.name).create(&PostParams::default(), &obj).await.unwrap()
}

/// The images of a workload's pod template, main containers then init containers, by name.
async fn images(env: &Env, kind: &str, name: &str) -> Vec<(String, String)> {
    let client = env.ns.client.clone();
    let ns = &env.ns.name;
    let value = match kind {
        "Deployment" => serde_json::to_value(Api::<Deployment>::namespaced(client, ns).get(name).await.unwrap()),
        "StatefulSet" => serde_json::to_value(Api::<StatefulSet>::namespaced(client, ns).get(name).await.unwrap()),
        "DaemonSet" => serde_json::to_value(Api::<DaemonSet>::namespaced(client, ns).get(name).await.unwrap()),
        _ => serde_json::to_value(Api::<CronJob>::namespaced(client, ns).get(name).await.unwrap()),
    }
    .unwrap();
    let spec = if kind == "CronJob" {
        &value["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    } else {
        &value["spec"]["template"]["spec"]
    };
    ["containers", "initContainers"]
        .iter()
        .flat_map(|k| spec[k].as_array().cloned().unwrap_or_default())
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["image"].as_str().unwrap().to_string()))
        .collect()
}

async fn wait_images(env: &Env, kind: &str, name: &str, expected: &[(&str, String)]) {
    let expected: Vec<(String, String)> = expected.iter().map(|(c, i)| (c.to_string(), i.clone())).collect();
    eventually(PINNED_WAIT, &format!("{kind} {name} pinned"), || {
        let expected = expected.clone();
        async move {
            let now = images(env, kind, name).await;
            if expected.iter().all(|e| now.contains(e)) {
                Ok(())
            } else {
                Err(format!("{now:?}\nberth:\n{}", env.berth.log_tail()))
            }
        }
    })
    .await;
}

/// berth's events about one object (the deployment controller reports on the same objects).
async fn events_for(env: &Env, name: &str) -> Vec<(String, String, String)> {
    env.events_for(name).await
}

async fn wait_event(env: &Env, name: &str, reason: &str) -> String {
    eventually(PINNED_WAIT, &format!("event {reason} on {name}"), || async move {
        let events = events_for(env, name).await;
        events.iter().find(|e| e.1 == reason).map(|e| e.2.clone()).ok_or_else(|| format!("{events:?}"))
    })
    .await
}

fn annotations(obj: &impl Resource) -> std::collections::BTreeMap<String, String> {
    obj.meta().annotations.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_push_event_pins_followers_at_once_and_nothing_else_is_touched() {
    let mut env = Env::new("rollout-events", true, "1h").await;
    env.ns.enable_rollouts(true).await;
    let path = format!("{}/app", env.ns.name);
    let image = format!("{}:stable", env.registry.image(&path));
    let d1 = env.push(&path, "stable", "one").await;

    let follow = json!({"berth.dev/rollout": "digest", "berth.dev/poll-interval": "1h"});
    let c = json!([{"name": "app", "image": image}, {"name": "sidecar", "image": "docker.io/library/busybox:1.36"}]);
    let init = json!([{"name": "migrate", "image": image}]);
    create::<Deployment>(&env, deployment("web", follow, c.clone(), init.clone())).await;
    create::<Deployment>(&env, deployment("bystander", json!({}), c, init)).await;

    // Adopted: pinned to the digest the tag has now (one poll at start).
    let pinned1 = format!("{image}@{d1}");
    wait_images(&env, "Deployment", "web", &[("app", pinned1.clone()), ("migrate", pinned1.clone())]).await;

    // Polling is hourly: only the push event can move it now.
    let d2 = env.push(&path, "stable", "two").await;
    let pinned2 = format!("{image}@{d2}");
    wait_images(&env, "Deployment", "web", &[("app", pinned2.clone()), ("migrate", pinned2.clone())]).await;

    let deployments = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    let web = deployments.get("web").await.unwrap();
    let a = annotations(&web);
    assert_eq!(a["berth.dev/digest"], format!("app={d2},migrate={d2}"));
    assert_eq!(a["berth.dev/previous-digest"], format!("app={d1},migrate={d1}"));
    assert!(a.contains_key("berth.dev/pinned-at"));
    let sidecar = images(&env, "Deployment", "web").await;
    assert!(sidecar.contains(&("sidecar".into(), "docker.io/library/busybox:1.36".into())), "{sidecar:?}");
    // berth's field manager owns the pinned images and nothing of the rest of the template.
    let managers: Vec<String> = web.meta().managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.contains(&"berth-rollout".to_string()), "{managers:?}");
    let owned = web
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("berth-rollout"))
        .and_then(|m| m.fields_v1.as_ref())
        .map(|f| f.0.to_string())
        .unwrap();
    assert!(!owned.contains("f:replicas") && !owned.contains("f:selector"), "{owned}");
    assert!(!owned.contains("k:{\\\"name\\\":\\\"sidecar\\\"}"), "berth must not own the sidecar: {owned}");

    let note = wait_event(&env, "web", "Pinned").await;
    assert!(note.contains(&d2) || note.contains(&d1), "{note}");
    // The workload without the annotation is never touched.
    let bystander = images(&env, "Deployment", "bystander").await;
    assert!(bystander.iter().all(|(_, i)| !i.contains('@')), "{bystander:?}");
    assert!(annotations(&deployments.get("bystander").await.unwrap()).keys().all(|k| !k.starts_with("berth.dev/")));
    assert!(env.berth.metric("berth_rollouts_total{result=\"pinned\"}").await >= 2.0);
    assert!(env.berth.metric("berth_rollout_push_to_patch_seconds_count").await >= 1.0);
}

/// Nodes often pull a registry by another name than the url berth uses (a node port, an
/// Ingress host): a container that names the registry by one of the Registry's aliases is
/// followed like the others, one tag whatever the name (the push event names the Registry, not a
/// host), and its pin keeps the name it used. A name the Registry does not list is not followed.
#[tokio::test]
async fn containers_that_pull_by_an_alias_are_followed_and_keep_their_name() {
    let mut env = Env::new("rollout-aliases", true, "1h").await;
    env.ns.enable_rollouts(true).await;
    let alias = env.alias();
    env.set_aliases(std::slice::from_ref(&alias)).await;
    let path = format!("{}/app", env.ns.name);
    let by_url = format!("{}:stable", env.registry.image(&path));
    let by_alias = format!("{alias}/{path}:stable");
    let unlisted = by_url.replace("127.0.0.1", "127.0.0.2");
    let d1 = env.push(&path, "stable", "one").await;

    let follow = json!({"berth.dev/rollout": "digest", "berth.dev/poll-interval": "1h"});
    let c = json!([
        {"name": "by-alias", "image": by_alias},
        {"name": "by-url", "image": by_url},
        {"name": "unlisted", "image": unlisted},
    ]);
    create::<Deployment>(&env, deployment("web", follow, c, json!([]))).await;
    let pinned = |d: &str| [("by-alias", format!("{by_alias}@{d}")), ("by-url", format!("{by_url}@{d}"))];
    wait_images(&env, "Deployment", "web", &pinned(&d1)).await;

    // Polling is hourly: only the push event can move them now.
    let d2 = env.push(&path, "stable", "two").await;
    wait_images(&env, "Deployment", "web", &pinned(&d2)).await;
    let now = images(&env, "Deployment", "web").await;
    assert!(now.contains(&("unlisted".to_string(), unlisted.clone())), "{now:?}");
}

/// Rollouts are opt-in per namespace too: an annotated workload in a namespace without the label
/// is left alone; the label pins it at once, and without it again berth stops following.
#[tokio::test]
async fn only_workloads_in_namespaces_that_opt_in_are_rolled_out() {
    let mut env = Env::new("rollout-namespace", true, "1h").await;
    let path = format!("{}/app", env.ns.name);
    let image = format!("{}:stable", env.registry.image(&path));
    let d1 = env.push(&path, "stable", "one").await;
    let follow = json!({"berth.dev/rollout": "digest", "berth.dev/poll-interval": "1h"});
    create::<Deployment>(&env, deployment("web", follow, json!([{"name": "app", "image": image}]), json!([]))).await;
    let unpinned = vec![("app".to_string(), image.clone())];
    // In a namespace that opted in, this takes well under a second (the tests above).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(images(&env, "Deployment", "web").await, unpinned, "pinned in a namespace that did not opt in");
    assert!(events_for(&env, "web").await.is_empty(), "berth wrote events there");

    env.ns.enable_rollouts(true).await;
    let pinned1 = format!("{image}@{d1}");
    wait_images(&env, "Deployment", "web", &[("app", pinned1.clone())]).await;

    // Opted out: a push (its event reaches berth at once) moves nothing.
    env.ns.enable_rollouts(false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d2 = env.push(&path, "stable", "two").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        images(&env, "Deployment", "web").await,
        vec![("app".to_string(), pinned1)],
        "rolled out after the namespace opted out"
    );

    // In again: followed from where the tag is now.
    env.ns.enable_rollouts(true).await;
    wait_images(&env, "Deployment", "web", &[("app", format!("{image}@{d2}"))]).await;
}

#[tokio::test]
async fn polling_alone_pins_every_workload_kind_and_multi_arch_indexes() {
    let mut env = Env::new("rollout-polling", false, "1h").await;
    env.ns.enable_rollouts(true).await;
    let path = format!("{}/svc", env.ns.name);
    let image = format!("{}:stable", env.registry.image(&path));
    let d1 = env.push(&path, "stable", "one").await;
    let follow = json!({"berth.dev/rollout": "digest", "berth.dev/poll-interval": "10s"});
    let c = json!([{"name": "svc", "image": image}]);
    let init = json!([{"name": "init", "image": image}]);

    create::<StatefulSet>(
        &env,
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "annotations": follow},
            "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "web"}}, "template": pod_template(c.clone(), init.clone())},
        }),
    )
    .await;
    create::<DaemonSet>(
        &env,
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "annotations": follow},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": pod_template(c.clone(), init.clone())},
        }),
    )
    .await;
    let mut job_template = pod_template(c.clone(), init.clone());
    job_template["spec"]["restartPolicy"] = json!("Never");
    create::<CronJob>(
        &env,
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "nightly", "annotations": follow},
            "spec": {"schedule": "0 3 * * *", "suspend": true, "jobTemplate": {"spec": {"template": job_template}}},
        }),
    )
    .await;
    // A multi-arch image: the index digest is pinned, not one platform's manifest.
    let (index, children) = env.layout.add_index("multi", "multi-arch", &["amd64", "arm64"]);
    let multi = format!("{}:multi", env.registry.image(&path));
    let out = env.skopeo.push(env.layout.path(), "multi", &multi, &Creds::Anonymous, true).await;
    assert!(out.status.success(), "{}", describe(&out));
    create::<Deployment>(
        &env,
        deployment("multi", follow.clone(), json!([{"name": "svc", "image": multi}]), json!([])),
    )
    .await;

    let p1 = format!("{image}@{d1}");
    for kind in [("StatefulSet", "db"), ("DaemonSet", "agent"), ("CronJob", "nightly")] {
        wait_images(&env, kind.0, kind.1, &[("svc", p1.clone()), ("init", p1.clone())]).await;
    }
    wait_images(&env, "Deployment", "multi", &[("svc", format!("{multi}@{}", index.digest))]).await;
    assert!(children.iter().all(|c| c.digest != index.digest));

    let d2 = env.push(&path, "stable", "two").await;
    let p2 = format!("{image}@{d2}");
    for kind in [("StatefulSet", "db"), ("DaemonSet", "agent"), ("CronJob", "nightly")] {
        wait_images(&env, kind.0, kind.1, &[("svc", p2.clone()), ("init", p2.clone())]).await;
    }
}

#[tokio::test]
async fn paused_deployments_wait_and_malformed_annotations_only_warn() {
    let mut env = Env::new("rollout-paused", true, "1h").await;
    env.ns.enable_rollouts(true).await;
    let path = format!("{}/app", env.ns.name);
    let image = format!("{}:stable", env.registry.image(&path));
    let d1 = env.push(&path, "stable", "one").await;
    let follow = json!({"berth.dev/rollout": "digest"});
    let mut paused = deployment("paused", follow.clone(), json!([{"name": "app", "image": image}]), json!([]));
    paused["spec"]["paused"] = json!(true);
    create::<Deployment>(&env, paused).await;
    let bad = json!({"berth.dev/rollout": "yes please", "berth.dev/poll-interval": "1s"});
    create::<Deployment>(&env, deployment("typo", bad, json!([{"name": "app", "image": image}]), json!([]))).await;
    let wrong_container = json!({"berth.dev/rollout": "digest", "berth.dev/containers": "nosuch"});
    create::<Deployment>(
        &env,
        deployment("wrong", wrong_container, json!([{"name": "app", "image": image}]), json!([])),
    )
    .await;

    let note = wait_event(&env, "paused", "RolloutPaused").await;
    assert!(note.contains(&d1), "{note}");
    let warning = wait_event(&env, "typo", "InvalidRolloutAnnotation").await;
    assert!(
        warning.contains("berth.dev/rollout: unknown rollout policy \"yes please\": expected digest, semver:"),
        "{warning}"
    );
    let warning = wait_event(&env, "wrong", "InvalidRolloutAnnotation").await;
    assert!(warning.contains("nosuch"), "{warning}");

    // Still alive and still rolling out after the bad input: a good one gets pinned.
    create::<Deployment>(&env, deployment("good", follow, json!([{"name": "app", "image": image}]), json!([]))).await;
    wait_images(&env, "Deployment", "good", &[("app", format!("{image}@{d1}"))]).await;
    for name in ["paused", "typo", "wrong"] {
        let now = images(&env, "Deployment", name).await;
        assert_eq!(now, vec![("app".to_string(), image.clone())], "{name} must be untouched");
    }
    let types: Vec<String> = events_for(&env, "typo").await.into_iter().map(|e| e.0).collect();
    assert!(types.iter().all(|t| t == "Warning"));

    // Resumed: pinned.
    Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name)
        .patch("paused", &PatchParams::default(), &Patch::Merge(json!({"spec": {"paused": false}})))
        .await
        .unwrap();
    wait_images(&env, "Deployment", "paused", &[("app", format!("{image}@{d1}"))]).await;
}

/// Uses the real deployment controller of kube-controller-manager: the test cluster has no
/// nodes, so no pod ever becomes available and a short progress deadline is exceeded for real.
#[tokio::test]
async fn a_rollout_that_exceeds_its_progress_deadline_is_rolled_back_and_the_digest_marked_bad() {
    let mut env = Env::new("rollout-rollback", true, "1h").await;
    env.ns.enable_rollouts(true).await;
    let path = format!("{}/app", env.ns.name);
    let image = format!("{}:stable", env.registry.image(&path));
    let d1 = env.push(&path, "stable", "good").await;
    let follow = json!({"berth.dev/rollout": "digest", "berth.dev/rollback": "auto", "berth.dev/poll-interval": "10s"});
    let mut d = deployment("web", follow, json!([{"name": "app", "image": image}]), json!([]));
    d["spec"]["progressDeadlineSeconds"] = json!(3);
    create::<Deployment>(&env, d).await;
    wait_images(&env, "Deployment", "web", &[("app", format!("{image}@{d1}"))]).await;

    let d2 = env.push(&path, "stable", "bad").await;
    wait_event(&env, "web", "RolledBack").await;
    let deployments = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    let web = deployments.get("web").await.unwrap();
    assert_eq!(images(&env, "Deployment", "web").await, vec![("app".to_string(), format!("{image}@{d1}"))]);
    assert_eq!(annotations(&web)["berth.dev/bad-digests"], d2);
    // Polled every 10 s and still at the bad digest: not applied again.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(images(&env, "Deployment", "web").await, vec![("app".to_string(), format!("{image}@{d1}"))]);
    assert_eq!(env.berth.metric("berth_rollouts_total{result=\"rolled_back\"}").await, 1.0);

    // The tag moves on: the new digest is followed again.
    let d3 = env.push(&path, "stable", "fixed").await;
    wait_images(&env, "Deployment", "web", &[("app", format!("{image}@{d3}"))]).await;
}

/// What decides a rollback is stored on the workload, not in berth's memory: a berth that
/// pinned and died before the deadline passed is replaced by one that rolls back the same way.
#[tokio::test]
async fn a_restarted_berth_rolls_back_the_rollout_its_predecessor_started() {
    let mut env = Env::new("rollout-rollback-restart", true, "1h").await;
    env.ns.enable_rollouts(true).await;
    let path = format!("{}/app", env.ns.name);
    let image = format!("{}:stable", env.registry.image(&path));
    let d1 = env.push(&path, "stable", "good").await;
    let follow = json!({"berth.dev/rollout": "digest", "berth.dev/rollback": "auto", "berth.dev/poll-interval": "1h"});
    let mut d = deployment("web", follow, json!([{"name": "app", "image": image}]), json!([]));
    d["spec"]["progressDeadlineSeconds"] = json!(8);
    create::<Deployment>(&env, d).await;
    wait_images(&env, "Deployment", "web", &[("app", format!("{image}@{d1}"))]).await;

    let d2 = env.push(&path, "stable", "bad").await;
    wait_images(&env, "Deployment", "web", &[("app", format!("{image}@{d2}"))]).await;
    env.berth.kill();
    let deployments = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    let web = deployments.get("web").await.unwrap();
    assert_eq!(
        annotations(&web).get("berth.dev/pinned-generation").map(String::as_str),
        web.metadata.generation.map(|g| g.to_string()).as_deref(),
        "the pin records the generation it made"
    );
    let deployments_ref = &deployments;
    eventually(PINNED_WAIT, "the rollout exceeds its progress deadline", || async move {
        let d = deployments_ref.get("web").await.map_err(|e| e.to_string())?;
        let stuck = d.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
            cs.iter().any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
        });
        if stuck { Ok(()) } else { Err(format!("{:?}", d.status)) }
    })
    .await;
    env.berth.restart().await;
    wait_event(&env, "web", "RolledBack").await;
    assert_eq!(images(&env, "Deployment", "web").await, vec![("app".to_string(), format!("{image}@{d1}"))]);
    assert_eq!(annotations(&deployments.get("web").await.unwrap())["berth.dev/bad-digests"], d2);
}

#[tokio::test]
async fn a_thousand_followers_of_one_tag_cost_one_registry_request_per_interval() {
    let mut env = Env::new("rollout-fanout", false, "1h").await;
    env.ns.enable_rollouts(true).await;
    let path = format!("{}/job", env.ns.name);
    let image = format!("{}:stable", env.registry.image(&path));
    let d1 = env.push(&path, "stable", "one").await;
    // Suspended CronJobs: real workloads that berth pins like any other, without making
    // kube-controller-manager start 1,000 ReplicaSets on a 2-core CI machine.
    let api = Api::<CronJob>::namespaced(env.ns.client.clone(), &env.ns.name);
    futures::stream::iter(0..1000)
        .for_each_concurrent(16, |i| {
            let api = api.clone();
            let image = image.clone();
            async move {
                let cj: CronJob = serde_json::from_value(json!({
                    "metadata": {"name": format!("job-{i}"), "annotations": {"berth.dev/rollout": "digest", "berth.dev/poll-interval": "10s"}},
                    "spec": {"schedule": "0 3 * * *", "suspend": true, "jobTemplate": {"spec": {"template": {"spec": {
                        "restartPolicy": "Never", "containers": [{"name": "job", "image": image}]}}}}},
                }))
                .unwrap();
                api.create(&PostParams::default(), &cj).await.unwrap();
            }
        })
        .await;
    let pinned = format!("{image}@{d1}");
    let started = std::time::Instant::now();
    eventually(Duration::from_secs(180), "1,000 CronJobs pinned", || {
        let api = api.clone();
        let pinned = pinned.clone();
        async move {
            let list = api.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            let done =
                list.items.iter().filter(|cj| serde_json::to_string(&cj.spec).unwrap().contains(&pinned)).count();
            if done == 1000 { Ok(()) } else { Err(format!("{done} of 1000")) }
        }
    })
    .await;
    let requests = ROLLOUT_REQUESTS;
    let before = env.berth.metric(requests).await;
    tokio::time::sleep(Duration::from_secs(35)).await;
    let during = env.berth.metric(requests).await - before;
    // Every 9-11 s (jitter) over 35 s: 3 or 4 polls, each one HEAD, for all 1,000 followers.
    assert!((3.0..=4.0).contains(&during), "{during} requests in 35 s");
    let polls_while_pinning = started.elapsed().as_secs_f64() / 9.0 + 2.0;
    assert!(before <= polls_while_pinning, "{before} requests while 1,000 followers were pinned");
    let names: Vec<String> =
        api.list(&ListParams::default()).await.unwrap().items.iter().map(|c| c.name_any()).collect();
    assert_eq!(names.len(), 1000);
}

/// A pin the API server refuses is tried again with backoff: once the refusal stops, the
/// workload is pinned with no new push, no poll (hourly here) and no change to the workload.
#[tokio::test]
async fn a_refused_pin_is_tried_again_until_it_lands() {
    let mut env = Env::new("rollout-retry", true, "1h").await;
    env.ns.enable_rollouts(true).await;
    let cp = support::control_plane().await;
    let path = format!("{}/app", env.ns.name);
    let image = format!("{}:stable", env.registry.image(&path));
    let d1 = env.push(&path, "stable", "one").await;
    let follow = json!({"berth.dev/rollout": "digest", "berth.dev/poll-interval": "1h"});
    create::<Deployment>(&env, deployment("web", follow, json!([{"name": "app", "image": image}]), json!([]))).await;
    wait_images(&env, "Deployment", "web", &[("app", format!("{image}@{d1}"))]).await;

    // An admission policy refuses any change of the Deployment's images.
    let name = format!("freeze-{}", env.ns.name);
    let manifest = format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {{apiGroups: [apps], apiVersions: [v1], operations: [UPDATE], resources: [deployments]}}
  validations:
    - expression: "object.spec.template.spec.containers.all(c, oldObject.spec.template.spec.containers.exists(o, o.name == c.name && o.image == c.image))"
      message: images are frozen
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
"#,
        ns = env.ns.name
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), manifest).unwrap();
    let out = cp.kubectl().args(["apply", "-f"]).arg(file.path()).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    // In force once a server-side dry run of an image change is refused.
    eventually(PINNED_WAIT, "the admission policy refuses image changes", || async {
        let out = cp
            .kubectl()
            .args(["set", "image", "deployment/web", "app=example.com/x:y", "--dry-run=server", "-n", &env.ns.name])
            .output()
            .unwrap();
        if out.status.success() { Err("still allowed".to_string()) } else { Ok(()) }
    })
    .await;

    let d2 = env.push(&path, "stable", "two").await;
    let note = wait_event(&env, "web", "PinFailed").await;
    assert!(note.contains("frozen") || note.contains(&d2), "{note}");
    assert_eq!(images(&env, "Deployment", "web").await, vec![("app".to_string(), format!("{image}@{d1}"))]);

    let out = cp.kubectl().args(["delete", "-f"]).arg(file.path()).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    wait_images(&env, "Deployment", "web", &[("app", format!("{image}@{d2}"))]).await;
}

const ROLLOUT_REQUESTS: &str = "berth_registry_requests_total{controller=\"rollout\"}";
const HEADS: &str = "berth_registry_request_duration_seconds_count{method=\"HEAD\"}";

/// The image a Deployment's container `app` runs now.
async fn app_image(env: &Env, name: &str) -> String {
    images(env, "Deployment", name).await.into_iter().find(|(c, _)| c == "app").map(|(_, i)| i).unwrap()
}

/// Deployments `(name, policy, tag)` following `repo` with a version policy.
async fn follow_versions(env: &Env, repo: &str, interval: &str, workloads: &[(&str, &str, &str)]) {
    for (name, policy, tag) in workloads {
        let follow = json!({"berth.dev/rollout": policy, "berth.dev/poll-interval": interval});
        let c = json!([{"name": "app", "image": format!("{repo}:{tag}")}]);
        create::<Deployment>(env, deployment(name, follow, c, json!([]))).await;
    }
}

/// Semver ranges, on push events alone (polling is hourly): pre-releases only for a range that
/// names one, build metadata (written after `_` in tags) only breaking ties, a caret range that
/// stops before the next major, and every pin `repo:<tag>@<digest>` with berth's records.
#[tokio::test]
async fn semver_policies_follow_pushed_versions_within_their_ranges() {
    let mut env = Env::new("rollout-semver", true, "1h").await;
    env.ns.enable_rollouts(true).await;
    let path = format!("{}/app", env.ns.name);
    let repo = env.registry.image(&path);
    let d142 = env.push(&path, "1.4.2", "1.4.2").await;
    env.push(&path, "latest", "latest").await;
    let workloads = [
        ("patch", "semver:~1.4", "1.4.2"),
        ("rc", "semver:>=1.4.2-rc.0 <1.5", "1.4.2"),
        ("minor", "semver:^1.0", "1.4.2"),
    ];
    follow_versions(&env, &repo, "1h", &workloads).await;
    let on = |tag: &str, digest: &str| vec![("app", format!("{repo}:{tag}@{digest}"))];
    for (name, _, _) in workloads {
        wait_images(&env, "Deployment", name, &on("1.4.2", &d142)).await;
    }

    let rc1 = env.push(&path, "1.4.3-rc.1", "rc1").await;
    wait_images(&env, "Deployment", "rc", &on("1.4.3-rc.1", &rc1)).await;
    let d150 = env.push(&path, "1.5.0", "1.5.0").await;
    wait_images(&env, "Deployment", "minor", &on("1.5.0", &d150)).await;
    env.push(&path, "2.0.0", "2.0.0").await;
    let d143 = env.push(&path, "v1.4.3", "1.4.3").await;
    wait_images(&env, "Deployment", "patch", &on("v1.4.3", &d143)).await;
    wait_images(&env, "Deployment", "rc", &on("v1.4.3", &d143)).await;
    let build = env.push(&path, "1.4.3_build.2", "1.4.3 rebuilt").await;
    wait_images(&env, "Deployment", "patch", &on("1.4.3_build.2", &build)).await;
    let d144 = env.push(&path, "1.4.4_build.1", "1.4.4").await;
    wait_images(&env, "Deployment", "patch", &on("1.4.4_build.1", &d144)).await;
    wait_images(&env, "Deployment", "rc", &on("1.4.4_build.1", &d144)).await;

    // ^1.0 never reached 2.0.0, pushed before 1.4.3 and still the highest tag.
    assert_eq!(app_image(&env, "minor").await, format!("{repo}:1.5.0@{d150}"));
    let deployments = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    let a = annotations(&deployments.get("patch").await.unwrap());
    assert_eq!(a["berth.dev/digest"], format!("app={d144}"));
    assert_eq!(a["berth.dev/previous-digest"], format!("app={build}"));
    assert_eq!(a["berth.dev/previous-tag"], "app=1.4.3_build.2");
    let events = events_for(&env, "patch").await;
    assert!(
        events.iter().any(|(t, r, m)| t == "Normal"
            && r == "Pinned"
            && m.contains("1.4.4_build.1 is the highest of")
            && m.contains("matching ~1.4")),
        "{events:?}"
    );
    assert!(env.berth.metric("berth_rollout_push_to_patch_seconds_count").await >= 5.0);
}

/// A numerical pattern over a few hundred tags, by polling alone (no events): one listing per
/// interval for the repository, a HEAD only when the pick changes.
#[tokio::test]
async fn a_numerical_pattern_over_hundreds_of_tags_is_followed_by_polling() {
    let mut env = Env::new("rollout-pattern", false, "1h").await;
    env.ns.enable_rollouts(true).await;
    let path = format!("{}/app", env.ns.name);
    let repo = env.registry.image(&path);
    env.push(&path, "main-0000000-0", "base").await;
    let build = |n: usize| format!("main-{:07x}-{n}", n * 7919);
    let mut tags: Vec<String> = (1..=300).map(build).collect();
    tags.extend((1..=50).map(|n| format!("pr-{n}")));
    tags.extend(["main-latest".to_string(), "main-abc-x".to_string(), "main-0000000-99999-old".to_string()]);
    let digests = env.registry.put_tags(&path, "main-0000000-0", &tags).await;
    let policy = "pattern:^main-[0-9a-f]+-(?P<n>[0-9]+)$ numerical:n";
    follow_versions(&env, &repo, "10s", &[("web", policy, "main-0000000-0")]).await;
    // 300 beats 99 and 299: numbers, not text.
    wait_images(&env, "Deployment", "web", &[("app", format!("{repo}:{}@{}", build(300), digests[299]))]).await;

    // Only the rollout controller sends HEADs here (no Repository is declared): requests that
    // are not HEADs are its listings, one page each.
    let counts = || async { (env.berth.metric(ROLLOUT_REQUESTS).await, env.berth.metric(HEADS).await) };
    let (requests, heads) = counts().await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let (idle_requests, idle_heads) = counts().await;
    let (listings, heads_idle) = ((idle_requests - requests) - (idle_heads - heads), idle_heads - heads);
    // Every 9-11 s over 25 s: at most 3 listings (at least 1, however slow the machine), and
    // no HEAD: nothing changed.
    assert!(
        (1.0..=3.0).contains(&listings) && heads_idle == 0.0,
        "{listings} listings, {heads_idle} HEADs in 25 s idle"
    );

    let next = env.registry.put_tags(&path, "main-0000000-0", &[build(301)]).await;
    let (requests, heads) = counts().await;
    wait_images(&env, "Deployment", "web", &[("app", format!("{repo}:{}@{}", build(301), next[0]))]).await;
    let (now_requests, now_heads) = counts().await;
    let (listings, heads_moved) = ((now_requests - requests) - (now_heads - heads), now_heads - heads);
    assert!(listings >= 1.0 && heads_moved == 1.0, "{listings} listings and {heads_moved} HEADs to see one new tag");
}

/// `newest-pushed` orders by the push times the repository's ledger keeps (not by tag text),
/// and warns when the repository is not declared (no ledger, no push times).
#[tokio::test]
async fn newest_pushed_follows_the_ledger_of_a_declared_repository() {
    let mut env = Env::new("rollout-newest", true, "1h").await;
    env.ns.enable_rollouts(true).await;
    env.create_repository("app", json!({})).await;
    let path = format!("{}/app", env.ns.name);
    let repo = env.registry.image(&path);
    env.push(&path, "nightly-b", "b").await;
    let a = env.push(&path, "nightly-a", "a").await;
    env.push(&path, "stable", "stable").await;
    env.wait_repo("app", "3 images in the ledger", |s| s["imageCount"] == 3).await;
    follow_versions(&env, &repo, "10s", &[("web", "newest-pushed:^nightly-", "nightly-b")]).await;
    // nightly-a was pushed last of the two: the text order does not matter.
    wait_images(&env, "Deployment", "web", &[("app", format!("{repo}:nightly-a@{a}"))]).await;
    let zero = env.push(&path, "nightly-0", "0").await;
    wait_images(&env, "Deployment", "web", &[("app", format!("{repo}:nightly-0@{zero}"))]).await;
    // The running image is deleted: listed no more, it has no place in the push order, and the
    // workload stays on it rather than go back to nightly-a.
    env.registry.delete_manifest(&path, &zero).await;
    let listings = env.berth.metric(ROLLOUT_REQUESTS).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(env.berth.metric(ROLLOUT_REQUESTS).await > listings, "listed again meanwhile");
    assert_eq!(app_image(&env, "web").await, format!("{repo}:nightly-0@{zero}"));
    // A new nightly moves it on.
    let one = env.push(&path, "nightly-1", "1").await;
    wait_images(&env, "Deployment", "web", &[("app", format!("{repo}:nightly-1@{one}"))]).await;

    // Not declared: no push times, a Warning that says what to do, nothing pinned.
    let other = format!("{}/undeclared", env.ns.name);
    env.push(&other, "nightly-1", "1").await;
    let other_repo = env.registry.image(&other);
    follow_versions(&env, &other_repo, "1h", &[("orphan", "newest-pushed:^nightly-", "nightly-1")]).await;
    let warning = wait_event(&env, "orphan", "InvalidRolloutAnnotation").await;
    assert!(warning.contains("declare a Repository"), "{warning}");
    let other_newer = env.push(&other, "nightly-2", "2").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let image = app_image(&env, "orphan").await;
    assert!(image.starts_with(&format!("{other_repo}:nightly-1")) && !image.contains(&other_newer), "{image}");
}

/// A policy never moves a workload back: a pinned version whose tag is deleted stays, until the
/// user changes the policy.
#[tokio::test]
async fn a_version_policy_never_moves_back_unless_the_policy_changes() {
    let mut env = Env::new("rollout-backwards", false, "1h").await;
    env.ns.enable_rollouts(true).await;
    let path = format!("{}/app", env.ns.name);
    let repo = env.registry.image(&path);
    env.push(&path, "1.4.2", "1.4.2").await;
    let d143 = env.push(&path, "1.4.3", "1.4.3").await;
    let d149 = env.push(&path, "1.4.9", "1.4.9").await;
    follow_versions(&env, &repo, "10s", &[("web", "semver:~1.4", "1.4.2")]).await;
    wait_images(&env, "Deployment", "web", &[("app", format!("{repo}:1.4.9@{d149}"))]).await;

    env.registry.delete_manifest(&path, &d149).await;
    let requests = ROLLOUT_REQUESTS;
    let before = env.berth.metric(requests).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(env.berth.metric(requests).await > before, "listed again meanwhile");
    assert_eq!(app_image(&env, "web").await, format!("{repo}:1.4.9@{d149}"), "1.4.3 is below the running 1.4.9");

    // The user narrows the policy: 1.4.9 is outside it, and its pick stands.
    let deployments = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    let patch = json!({"metadata": {"annotations": {"berth.dev/rollout": "semver:<=1.4.3"}}});
    deployments.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_images(&env, "Deployment", "web", &[("app", format!("{repo}:1.4.3@{d143}"))]).await;

    // An invalid policy warns and changes nothing.
    let patch = json!({"metadata": {"annotations": {"berth.dev/rollout": "semver:>=banana"}}});
    deployments.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let warning = wait_event(&env, "web", "InvalidRolloutAnnotation").await;
    assert!(warning.contains("berth.dev/rollout"), "{warning}");
    assert_eq!(app_image(&env, "web").await, format!("{repo}:1.4.3@{d143}"));
}

/// A version a policy moved to that exceeds its progress deadline is rolled back to the tag and
/// digest it left, marked bad, and skipped until a newer version is pushed.
#[tokio::test]
async fn a_stuck_version_is_rolled_back_to_the_tag_it_left() {
    let mut env = Env::new("rollout-version-rollback", true, "1h").await;
    env.ns.enable_rollouts(true).await;
    let path = format!("{}/app", env.ns.name);
    let repo = env.registry.image(&path);
    let d1 = env.push(&path, "1.4.2", "good").await;
    let follow =
        json!({"berth.dev/rollout": "semver:~1.4", "berth.dev/rollback": "auto", "berth.dev/poll-interval": "10s"});
    let mut d = deployment("web", follow, json!([{"name": "app", "image": format!("{repo}:1.4.2")}]), json!([]));
    d["spec"]["progressDeadlineSeconds"] = json!(3);
    create::<Deployment>(&env, d).await;
    wait_images(&env, "Deployment", "web", &[("app", format!("{repo}:1.4.2@{d1}"))]).await;

    let d2 = env.push(&path, "1.4.3", "bad").await;
    let note = wait_event(&env, "web", "RolledBack").await;
    assert!(note.contains(&format!("{repo}:1.4.2@{d1}")), "{note}");
    assert_eq!(app_image(&env, "web").await, format!("{repo}:1.4.2@{d1}"));
    let deployments = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    assert_eq!(annotations(&deployments.get("web").await.unwrap())["berth.dev/bad-digests"], d2);
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(app_image(&env, "web").await, format!("{repo}:1.4.2@{d1}"), "1.4.3 is bad: not applied again");

    let d3 = env.push(&path, "1.4.4", "fixed").await;
    wait_images(&env, "Deployment", "web", &[("app", format!("{repo}:1.4.4@{d3}"))]).await;
}

/// Under polling alone (no events), a listing names tags, not digests: a version tag pushed
/// again in place is read again before berth pins it, so a pin never writes a digest the tag
/// has left.
#[tokio::test]
async fn a_version_tag_pushed_again_is_read_again_before_a_pin() {
    let mut env = Env::new("rollout-repushed", false, "1h").await;
    env.ns.enable_rollouts(true).await;
    let path = format!("{}/app", env.ns.name);
    let repo = env.registry.image(&path);
    let d1 = env.push(&path, "1.4.3", "first").await;
    follow_versions(&env, &repo, "10s", &[("web", "semver:~1.4", "1.4.3")]).await;
    wait_images(&env, "Deployment", "web", &[("app", format!("{repo}:1.4.3@{d1}"))]).await;
    let d2 = env.push(&path, "1.4.3", "second").await;
    // berth read 1.4.3's digest more than a second ago: it asks again before a pin.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Someone sets the tag alone again (a `kubectl apply` of the manifest in Git): berth pins
    // it to what the registry says now, not to the digest it read before.
    let deployments = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    let image = format!("{repo}:1.4.3");
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    deployments.patch("web", &PatchParams::default(), &Patch::Strategic(&patch)).await.unwrap();
    wait_images(&env, "Deployment", "web", &[("app", format!("{repo}:1.4.3@{d2}"))]).await;
}
