//! Benchmarks of the Registry and Repository controllers on the real control plane and registry.
//! `cargo bench --bench repositories` prints the figures; nothing here asserts timings.
//!
//! - a repository with 10,000 tags: reconcile wall time and registry requests;
//! - push event to updated status: median and p99 over 50 pushes;
//! - berth's resident memory with 1,000 Repository objects;
//! - a lifecycle run over the 10,000-tag repository that expires 1,000 images.

#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use berth::api::{LifecyclePolicy, Repository};
use futures::{StreamExt, TryStreamExt, stream};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    OciLayout, control_plane,
    scenario::Env,
    skopeo::{Creds, Skopeo},
};

const TAGS: usize = 10_000;
const PUSHES: usize = 50;
const REPOSITORIES: usize = 1_000;

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and must stay fast.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with: cargo bench --bench repositories");
        return;
    }
    let cp = control_plane().await;
    cp.install_crds().await;
    tags_10k(cp).await;
    event_latency(cp).await;
    memory_1k(cp).await;
}

fn repository(name: &str, registry: &str) -> Repository {
    serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Repository",
        "metadata": {"name": name}, "spec": {"registryRef": {"name": registry}},
    }))
    .unwrap()
}

async fn status(api: &Api<Repository>, name: &str) -> Value {
    serde_json::to_value(api.get(name).await.unwrap().status).unwrap_or(Value::Null)
}

async fn tags_10k(_cp: &support::ControlPlane) {
    let s = Env::new("bench-tags", false, "1h").await;
    let path = format!("{}/big", s.ns.name);
    let mut layout = OciLayout::default();
    layout.add_image("base", "base");
    let skopeo = Skopeo::default();
    let out = skopeo
        .push(layout.path(), "base", &format!("{}:base", s.registry.image(&path)), &Creds::Anonymous, false)
        .await;
    assert!(out.status.success());
    // 10,000 distinct manifests (one annotation apart) sharing the pushed blobs, one tag each.
    let http = reqwest::Client::new();
    let base: Value = http
        .get(format!("{}/v2/{path}/manifests/base", s.registry.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fill = Instant::now();
    stream::iter(0..TAGS)
        .map(|i| {
            let mut m = base.clone();
            m["annotations"] = json!({"dev.berth.bench": i.to_string()});
            let url = format!("{}/v2/{path}/manifests/t{i}", s.registry.url());
            let http = http.clone();
            async move {
                let r = http
                    .put(url)
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    .body(serde_json::to_vec(&m).unwrap())
                    .send()
                    .await?;
                r.error_for_status().map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    eprintln!("filled {TAGS} tags in {:.1}s", fill.elapsed().as_secs_f64());

    let requests_before = s.berth.metric("berth_registry_requests_total{controller=\"repository\"}").await;
    let reconciles_before = s.berth.metric("berth_reconciles_total{controller=\"repository\"}").await;
    let api = Api::<Repository>::namespaced(s.ns.client.clone(), &s.ns.name);
    let started = Instant::now();
    api.create(&PostParams::default(), &repository("big", &s.name)).await.unwrap();
    loop {
        if status(&api, "big").await["tagCount"] == json!(TAGS + 1) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "no status after 10 min:\n{}", s.berth.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = started.elapsed();
    let requests = s.berth.metric("berth_registry_requests_total{controller=\"repository\"}").await - requests_before;
    let reconciles = s.berth.metric("berth_reconciles_total{controller=\"repository\"}").await - reconciles_before;
    let st = status(&api, "big").await;
    println!(
        "tags_10k: {} tags, {} images: first reconcile to status in {:.2}s, {requests} registry requests over {reconciles} reconciles ({:.3} per tag)",
        st["tagCount"],
        st["imageCount"],
        wall.as_secs_f64(),
        requests / (TAGS as f64 + 1.0)
    );

    // Lifecycle over the same repository: keep the newest 9,001, expire 1,000. First a dry run
    // (berth's own work: listing, ledger, evaluation), then the real run (plus the deletions).
    let policy: LifecyclePolicy = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "LifecyclePolicy", "metadata": {"name": "trim"},
        "spec": {"dryRun": true, "rules": [{"rulePriority": 1, "action": {"type": "expire"},
                            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 9001}}]},
    }))
    .unwrap();
    let policies = Api::<LifecyclePolicy>::namespaced(s.ns.client.clone(), &s.ns.name);
    policies.create(&PostParams::default(), &policy).await.unwrap();
    let wait_run = |generation: i64| {
        let policies = policies.clone();
        let started = Instant::now();
        async move {
            loop {
                let st = serde_json::to_value(policies.get("trim").await.unwrap().status).unwrap_or(Value::Null);
                if st["observedGeneration"] == json!(generation) && st["expiredCount"] == json!(1000) {
                    return (st, started.elapsed());
                }
                assert!(started.elapsed() < Duration::from_secs(900), "no lifecycle run after 15 min");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let metric = "berth_registry_requests_total{controller=\"lifecycle\"}";
    let before = s.berth.metric(metric).await;
    let dry = wait_run(1);
    api.patch("big", &PatchParams::default(), &Patch::Merge(json!({"spec": {"lifecyclePolicyRef": {"name": "trim"}}})))
        .await
        .unwrap();
    let (_, dry_wall) = dry.await;
    let dry_requests = s.berth.metric(metric).await - before;
    let before = s.berth.metric(metric).await;
    let real = wait_run(2);
    policies.patch("trim", &PatchParams::default(), &Patch::Merge(json!({"spec": {"dryRun": false}}))).await.unwrap();
    let (status, wall) = real.await;
    let requests = s.berth.metric(metric).await - before;
    println!(
        "lifecycle_10k: dry run over {} tags (1000 would expire) in {:.2}s with {dry_requests} registry requests; \
         real run expired {} and kept {} in {:.2}s with {requests} registry requests (tags + deletions + pages = {})",
        TAGS + 1,
        dry_wall.as_secs_f64(),
        status["expiredCount"],
        status["keptCount"],
        wall.as_secs_f64(),
        TAGS + 1 + 1000 + 1
    );
}

async fn event_latency(_cp: &support::ControlPlane) {
    let s = Env::new("bench-events", true, "1h").await;
    let path = format!("{}/app", s.ns.name);
    let api = Api::<Repository>::namespaced(s.ns.client.clone(), &s.ns.name);
    api.create(&PostParams::default(), &repository("app", &s.name)).await.unwrap();
    while status(&api, "app").await["tagCount"] != json!(0) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let skopeo = Skopeo::default();
    let mut layout = OciLayout::default();
    let mut latencies = Vec::new();
    for i in 0..PUSHES {
        let tag = format!("p{i}");
        layout.add_image(&tag, &format!("push-{i}"));
        let out = skopeo
            .push(layout.path(), &tag, &format!("{}:{tag}", s.registry.image(&path)), &Creds::Anonymous, false)
            .await;
        assert!(out.status.success());
        let pushed = Instant::now();
        loop {
            if status(&api, "app").await["tagCount"] == json!(i + 1) {
                break;
            }
            assert!(
                pushed.elapsed() < Duration::from_secs(60),
                "push {i} never reached status:\n{}",
                s.berth.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(pushed.elapsed());
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "event_latency: {PUSHES} pushes, push completed to status updated: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

async fn memory_1k(_cp: &support::ControlPlane) {
    let s = Env::new("bench-memory", false, "5m").await;
    let idle = s.berth.rss_kib().unwrap_or(0);
    let api = Api::<Repository>::namespaced(s.ns.client.clone(), &s.ns.name);
    let started = Instant::now();
    stream::iter(0..REPOSITORIES)
        .map(|i| {
            let api = api.clone();
            let r = repository(&format!("r{i}"), &s.name);
            async move { api.create(&PostParams::default(), &r).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    loop {
        let list = api.list(&ListParams::default()).await.unwrap();
        let ready = list
            .items
            .iter()
            .filter(|r| {
                r.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready == REPOSITORIES {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "only {ready} Ready after 10 min");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = s.berth.rss_kib().unwrap_or(0);
    println!(
        "memory_1k: {REPOSITORIES} Repositories all Ready in {:.1}s; berth RSS {:.1} MiB (idle before: {:.1} MiB)",
        all_ready.as_secs_f64(),
        rss as f64 / 1024.0,
        idle as f64 / 1024.0
    );
    let _ = &s.registry;
}
