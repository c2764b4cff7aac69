//! Benchmarks of the rollout controller on the real control plane (with kube-controller-manager)
//! and registry. `cargo bench --bench rollouts` prints the figures; nothing here asserts timings.
//!
//! - push-to-patch latency over 50 pushes of a watched tag (polling hourly, so events only);
//! - berth's resident memory with 5,000 Deployments in its namespace, 500 of them annotated.

#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::json;
use support::{OciLayout, control_plane, scenario::Env, skopeo::Creds};

const PUSHES: usize = 50;
const DEPLOYMENTS: usize = 5_000;
const ANNOTATED: usize = 500;
const TAGS: usize = 50;

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with: cargo bench --bench rollouts");
        return;
    }
    let cp = control_plane().await;
    cp.install_crds().await;
    push_to_patch().await;
    memory_5k().await;
}

fn deployment(name: &str, image: &str, annotated: bool) -> Deployment {
    let annotations = if annotated {
        json!({"berth.dev/rollout": "digest", "berth.dev/poll-interval": "1h"})
    } else {
        json!({"team": "bench"})
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }))
    .unwrap()
}

async fn image_of(api: &Api<Deployment>, name: &str) -> String {
    let d = api.get(name).await.unwrap();
    d.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap_or_default()
}

async fn push_to_patch() {
    let mut env = Env::new("bench-rollout-latency", true, "1h").await;
    env.ns.enable_rollouts(true).await;
    let path = format!("{}/app", env.ns.name);
    let image = format!("{}:stable", env.registry.image(&path));
    let first = env.push(&path, "stable", "seed").await;
    let api = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    api.create(&PostParams::default(), &deployment("web", &image, true)).await.unwrap();
    while !image_of(&api, "web").await.ends_with(&first) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut layout = OciLayout::default();
    let mut latencies = Vec::new();
    for i in 0..PUSHES {
        let d = layout.add_image("stable", &format!("push-{i}"));
        let out = env.skopeo.push(layout.path(), "stable", &image, &Creds::Anonymous, false).await;
        assert!(out.status.success());
        let pushed = Instant::now();
        while !image_of(&api, "web").await.ends_with(&d.digest) {
            assert!(pushed.elapsed() < Duration::from_secs(60), "push {i} never pinned:\n{}", env.berth.log_tail());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(pushed.elapsed());
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    let count = env.berth.metric("berth_rollout_push_to_patch_seconds_count").await;
    let sum = env.berth.metric("berth_rollout_push_to_patch_seconds_sum").await;
    println!(
        "push_to_patch: {PUSHES} pushes, skopeo done to Deployment pinned: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
         berth's own histogram (registry event time to patch applied): {count} patches, mean {:.0} ms",
        p(0.5),
        p(0.99),
        p(1.0),
        sum / count.max(1.0) * 1000.0
    );
}

async fn memory_5k() {
    let mut env = Env::new("bench-rollout-memory", false, "1h").await;
    env.ns.enable_rollouts(true).await;
    let mut digests = Vec::new();
    for t in 0..TAGS {
        let path = format!("{}/app{t}", env.ns.name);
        digests.push((env.registry.image(&path), env.push(&path, "stable", &format!("tag-{t}")).await));
    }
    let idle = env.berth.rss_kib().unwrap_or(0);
    let api = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    let started = Instant::now();
    stream::iter(0..DEPLOYMENTS)
        .map(|i| {
            let api = api.clone();
            let annotated = i % (DEPLOYMENTS / ANNOTATED) == 0;
            // Annotated ones spread over every tag, ten followers each.
            let (repo, _) = &digests[(i / (DEPLOYMENTS / ANNOTATED)) % TAGS];
            let d = deployment(&format!("d{i}"), &format!("{repo}:stable"), annotated);
            async move { api.create(&PostParams::default(), &d).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let created = started.elapsed();
    loop {
        let list = api.list(&ListParams::default()).await.unwrap();
        let pinned = list
            .items
            .iter()
            .filter(|d| {
                d.spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .is_some_and(|s| s.containers[0].image.as_deref().is_some_and(|i| i.contains("@sha256:")))
            })
            .count();
        if pinned == ANNOTATED {
            break;
        }
        assert!(pinned <= ANNOTATED, "{pinned} pinned: more than were annotated");
        assert!(started.elapsed() < Duration::from_secs(900), "only {pinned} pinned after 15 min");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_pinned = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = env.berth.rss_kib().unwrap_or(0);
    let requests = env.berth.metric("berth_registry_requests_total{controller=\"rollout\"}").await;
    println!(
        "memory_5k: {DEPLOYMENTS} Deployments created in {:.1}s ({ANNOTATED} annotated, following {TAGS} tags), \
         all {ANNOTATED} pinned after {:.1}s with {requests} registry requests; berth RSS {:.1} MiB (idle before: {:.1} MiB)",
        created.as_secs_f64(),
        all_pinned.as_secs_f64(),
        rss as f64 / 1024.0,
        idle as f64 / 1024.0
    );
}
