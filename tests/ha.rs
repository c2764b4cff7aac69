//! Two berth replicas with leader election on a Lease, against the real API server and registry:
//! one reconciles, the other keeps its caches warm and serves the endpoints; a killed leader is
//! replaced within the lease duration.

mod support;

use std::time::{Duration, Instant};

use berth::api::{Registry, Repository};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::{Api, api::PostParams};
use serde_json::json;
use support::{
    OciLayout, RegistryOptions, TestRegistry,
    berth::Berth,
    control_plane, eventually, free_port,
    registry::NotificationsConfig,
    scenario::{WAIT, is_ready},
    skopeo::{Creds, Skopeo},
};

const LEASE: &str = "berth-ha";

async fn wait_ready(repos: &Api<Repository>, name: &str, timeout: Duration) {
    eventually(timeout, &format!("{name} Ready"), || async move {
        let r = repos.get(name).await.map_err(|e| e.to_string())?;
        let s = serde_json::to_value(&r.status).unwrap();
        if is_ready(&s) { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
}

fn repository(name: &str, registry: &str) -> Repository {
    serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Repository",
        "metadata": {"name": name}, "spec": {"registryRef": {"name": registry}},
    }))
    .unwrap()
}

#[tokio::test]
async fn one_replica_reconciles_and_a_killed_leader_is_replaced_within_the_lease() {
    let cp = control_plane().await;
    cp.install_crds().await;
    let ns = cp.namespace("ha").await;
    let (port_a, port_b) = (free_port(), free_port());
    // The registry sends its events to replica A, whichever replica leads.
    let token = "ha-events-token".to_string();
    let registry = TestRegistry::start_with(RegistryOptions {
        notifications: Some(NotificationsConfig {
            url: format!("http://127.0.0.1:{port_a}/events/registry/{}", ns.name),
            token: token.clone(),
        }),
        ..Default::default()
    })
    .await;
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "events"}, "stringData": {"token": token}})).unwrap();
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name).create(&PostParams::default(), &secret).await.unwrap();
    let reg: Registry = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": ns.name, "labels": {"berth.dev/test": ns.name}},
        "spec": {
            "url": registry.url(),
            "notifications": {"secretRef": {"name": "events", "namespace": ns.name}},
        },
    }))
    .unwrap();
    Api::<Registry>::all(ns.client.clone()).create(&PostParams::default(), &reg).await.unwrap();

    let args = [
        "--repository-poll-interval",
        "1h",
        "--leader-elect",
        "--leader-elect-namespace",
        ns.name.as_str(),
        "--leader-elect-lease",
        LEASE,
    ];
    let mut a = Berth::start(cp, port_a, &ns.name, &args).await;
    eventually(WAIT, "A leads", || async {
        if a.metric("berth_leader").await == 1.0 { Ok(()) } else { Err(a.log_tail()) }
    })
    .await;
    let mut b = Berth::start(cp, port_b, &ns.name, &args).await;
    let repos = Api::<Repository>::namespaced(ns.client.clone(), &ns.name);
    repos.create(&PostParams::default(), &repository("first", &ns.name)).await.unwrap();
    wait_ready(&repos, "first", WAIT).await;

    let reconciles = "berth_reconciles_total{controller=\"repository\"}";
    assert!(a.metric(reconciles).await >= 1.0);
    assert_eq!(b.metric("berth_leader").await, 0.0);
    assert_eq!(b.metric(reconciles).await, 0.0, "the follower must not reconcile");
    // Every replica serves the endpoints: the follower answers readiness and metrics.
    assert_eq!(reqwest::get(format!("{}/readyz", b.url())).await.unwrap().status(), 200);

    // A workload that follows a tag: the leader pins it; the follower tracks it too but neither
    // polls nor spins (its due polls must not wake it in a loop).
    let mut layout = OciLayout::default();
    layout.add_image("stable", "ha-stable");
    let stable = format!("{}:stable", registry.image(&format!("{}/first", ns.name)));
    let out = Skopeo::default().push(layout.path(), "stable", &stable, &Creds::Anonymous, false).await;
    assert!(out.status.success());
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "annotations": {"berth.dev/rollout": "digest", "berth.dev/poll-interval": "10s"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": stable}]}}},
    }))
    .unwrap();
    let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(ns.client.clone(), &ns.name);
    ns.enable_rollouts(true).await;
    deployments.create(&PostParams::default(), &deployment).await.unwrap();
    eventually(WAIT, "the leader pins web", || async {
        let d = serde_json::to_string(&deployments.get("web").await.map_err(|e| e.to_string())?.spec).unwrap();
        if d.contains("stable@sha256:") { Ok(()) } else { Err(d) }
    })
    .await;
    let before = b.cpu_seconds().expect("berth runs");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let used = b.cpu_seconds().expect("berth runs") - before;
    assert!(used < 1.0, "the follower used {used:.2} s of CPU in 5 s while idle");

    // Kill the leader without a clean shutdown: the Lease is not released.
    a.kill();
    let killed = Instant::now();
    repos.create(&PostParams::default(), &repository("second", &ns.name)).await.unwrap();
    wait_ready(&repos, "second", Duration::from_secs(40)).await;
    let took = killed.elapsed();
    println!("successor reconciled {took:?} after the leader was killed");
    assert!(took <= Duration::from_secs(berth::runtime::leader::LEASE_DURATION + 8), "took {took:?}");
    assert_eq!(b.metric("berth_leader").await, 1.0);
    let lease = Api::<Lease>::namespaced(ns.client.clone(), &ns.name).get(LEASE).await.unwrap();
    let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    assert!(holder.ends_with(&format!("@127.0.0.1:{port_b}")), "{holder}");

    // A comes back as a follower on its old port; the registry's events reach it and are
    // handed to the leader B (polling is hourly, so only that can update the status).
    a.restart().await;
    assert_eq!(a.metric("berth_leader").await, 0.0);
    let mut layout = OciLayout::default();
    layout.add_image("v1", "ha");
    let out = Skopeo::default()
        .push(
            layout.path(),
            "v1",
            &format!("{}:v1", registry.image(&format!("{}/second", ns.name))),
            &Creds::Anonymous,
            false,
        )
        .await;
    assert!(out.status.success());
    eventually(WAIT, "the forwarded push event reaches the leader", || async {
        let r = repos.get("second").await.map_err(|e| e.to_string())?;
        let s = serde_json::to_value(&r.status).unwrap();
        if s["tagCount"] == 1 { Ok(()) } else { Err(format!("{s}\nA:\n{}", a.log_tail())) }
    })
    .await;
    assert!(a.metric("berth_registry_events_total{result=\"forwarded\"}").await >= 1.0);
    assert_eq!(a.metric(reconciles).await, 0.0, "the restarted follower must not reconcile");
    b.stop();
}
