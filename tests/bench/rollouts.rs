//! Benchmarks of the rollout controller on the real control plane (with kube-controller-manager)
//! and registry. `cargo bench --bench rollouts` prints the figures; nothing here asserts timings.
//!
//! - push-to-patch latency over 50 pushes of a watched tag (polling hourly, so events only);
//! - a burst: 50 tags (one declared Repository each) with 10 Deployments following each, all
//!   pushed at once, push to all of a tag's followers pinned, beside one follower's latency in
//!   the same berth between the bursts; then the same with no Repository declared (no ledger to
//!   read before a pin), as tools that only know the registry run;
//! - berth's resident memory with 5,000 Deployments in its namespace, 500 of them annotated.
//!
//! `cargo bench --bench rollouts -- burst` (or `push_to_patch`, `memory_5k`,
//! `burst_without_repositories`) runs only those whose name contains one of the words given.

#[path = "../support/mod.rs"]
mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use support::{OciLayout, control_plane, scenario::Env, skopeo::Creds};

const PUSHES: usize = 50;
const DEPLOYMENTS: usize = 5_000;
const ANNOTATED: usize = 500;
const TAGS: usize = 50;
const BURST_TAGS: usize = 50;
const BURST_FOLLOWERS: usize = 10;
const BURST_ROUNDS: usize = 3;
/// skopeo copies in flight during a burst: on two cores more only slows each push down.
const BURST_PUSHES_IN_FLIGHT: usize = 4;
/// Pushes of the single-follower reference, before each burst.
const REFERENCE_PUSHES: usize = 10;

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with: cargo bench --bench rollouts");
        return;
    }
    let words: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| words.is_empty() || words.iter().any(|w| name.contains(w.as_str()));
    let cp = control_plane().await;
    cp.install_crds().await;
    if wanted("push_to_patch") {
        push_to_patch().await;
    }
    if wanted("burst") {
        burst(true).await;
    }
    if wanted("burst_without_repositories") {
        burst(false).await;
    }
    if wanted("memory_5k") {
        memory_5k().await;
    }
}

/// The `q` quantile of sorted durations, in milliseconds.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
}

fn summary(durations: &[Duration]) -> String {
    let mut sorted = durations.to_vec();
    sorted.sort();
    format!(
        "p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        quantile(&sorted, 0.5),
        quantile(&sorted, 0.9),
        quantile(&sorted, 1.0)
    )
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
    let p = |q: f64| quantile(&latencies, q);
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

/// Every image each Deployment of the namespace had, and when the watch delivered it.
type Seen = Arc<Mutex<HashMap<String, Vec<(Instant, String)>>>>;

fn watch_images(api: Api<Deployment>) -> Seen {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
        while let Some(event) = events.next().await {
            let Ok(d) = event else { continue };
            let image = d
                .spec
                .and_then(|s| s.template.spec)
                .and_then(|s| s.containers.into_iter().next())
                .and_then(|c| c.image)
                .unwrap_or_default();
            let name = d.metadata.name.unwrap_or_default();
            log.lock().unwrap().entry(name).or_default().push((Instant::now(), image));
        }
    });
    seen
}

/// When the watch first showed `name` with an image pinned to `digest`.
fn pinned_at(seen: &Seen, name: &str, digest: &str) -> Option<Instant> {
    let seen = seen.lock().unwrap();
    seen.get(name)?.iter().find(|(_, image)| image.ends_with(&format!("@{digest}"))).map(|(at, _)| *at)
}

/// Many tags moving at once: 50 tags (each the `stable` tag of its own repository, declared as
/// a Repository when `declared`, so the never-backwards check reads a ledger as it does for
/// users), 10 Deployments following each, registry events on (polling hourly). Each round
/// pushes a new image to every tag, `BURST_PUSHES_IN_FLIGHT` skopeo copies at a time, and
/// measures, per tag, from its push done to the last of its followers pinned (seen by a watch).
/// Before each burst, the reference: one tag with one follower in the same berth, pushed
/// `REFERENCE_PUSHES` times.
async fn burst(declared: bool) {
    let label = if declared { "burst" } else { "burst_without_repositories" };
    let mut env =
        Env::new(&format!("bench-rollout-{}", if declared { "burst" } else { "burst-norepo" }), true, "1h").await;
    env.ns.enable_rollouts(true).await;
    let api = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    let seen = watch_images(api.clone());
    let names: Vec<String> = (0..BURST_TAGS).map(|t| format!("burst{t}")).collect();
    for name in names.iter().map(String::as_str).chain(["single"]).filter(|_| declared) {
        env.create_repository(name, json!({})).await;
    }
    let mut first = HashMap::new();
    for name in names.iter().chain([&"single".to_string()]) {
        let path = format!("{}/{name}", env.ns.name);
        first.insert(name.clone(), env.push(&path, "stable", &format!("{name}-seed")).await);
    }
    let image = |name: &str| format!("{}:stable", env.registry.image(&format!("{}/{name}", env.ns.name)));
    let followers = |t: usize| (0..BURST_FOLLOWERS).map(move |f| format!("burst{t}-{f}"));
    let mut workloads = vec![("single".to_string(), image("single"))];
    for (t, name) in names.iter().enumerate() {
        workloads.extend(followers(t).map(|d| (d, image(name))));
    }
    stream::iter(workloads.iter())
        .map(|(d, image)| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &deployment(d, image, true)).await.map(|_| ()) }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let all_pinned = |expected: &HashMap<String, String>| {
        workloads.iter().all(|(d, _)| {
            let repo = d.split('-').next().unwrap_or(d);
            pinned_at(&seen, d, &expected[repo]).is_some()
        })
    };
    let started = Instant::now();
    while !all_pinned(&first) {
        assert!(started.elapsed() < Duration::from_secs(300), "the first pins never landed:\n{}", env.berth.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut reference = Vec::new();
    let mut per_tag = Vec::new();
    let mut spreads = Vec::new();
    for round in 0..BURST_ROUNDS {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut layout = OciLayout::default();
        for i in 0..REFERENCE_PUSHES {
            let d = layout.add_image("single", &format!("single-{round}-{i}"));
            let out = env.skopeo.push(layout.path(), "single", &image("single"), &Creds::Anonymous, false).await;
            assert!(out.status.success());
            let pushed = Instant::now();
            while !image_of(&api, "single").await.ends_with(&d.digest) {
                assert!(
                    pushed.elapsed() < Duration::from_secs(60),
                    "reference never pinned:\n{}",
                    env.berth.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reference.push(pushed.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let digests: Vec<String> =
            (0..BURST_TAGS).map(|t| layout.add_image(&format!("b{t}"), &format!("burst-{round}-{t}")).digest).collect();
        let skopeo = &env.skopeo;
        let layout_path = layout.path();
        let image = &image;
        let names = &names;
        let burst_started = Instant::now();
        let pushed: HashMap<usize, Instant> = stream::iter(0..BURST_TAGS)
            .map(|t| async move {
                let out = skopeo.push(layout_path, &format!("b{t}"), &image(&names[t]), &Creds::Anonymous, false).await;
                assert!(out.status.success());
                (t, Instant::now())
            })
            .buffer_unordered(BURST_PUSHES_IN_FLIGHT)
            .collect()
            .await;
        let spread = pushed.values().max().unwrap().duration_since(burst_started);
        let waiting = Instant::now();
        let mut round_latencies = Vec::new();
        for t in 0..BURST_TAGS {
            loop {
                let times: Option<Vec<Instant>> = followers(t).map(|d| pinned_at(&seen, &d, &digests[t])).collect();
                if let Some(times) = times {
                    let last = times.into_iter().max().unwrap();
                    round_latencies.push(last.saturating_duration_since(pushed[&t]));
                    break;
                }
                assert!(
                    waiting.elapsed() < Duration::from_secs(300),
                    "round {round}: burst{t} not pinned after 5 min:\n{}",
                    env.berth.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        println!(
            "{label} round {}: {BURST_TAGS} pushes done within {:.1} s; push to all {BURST_FOLLOWERS} followers pinned: {}",
            round + 1,
            spread.as_secs_f64(),
            summary(&round_latencies)
        );
        per_tag.extend(round_latencies);
        spreads.push(spread);
    }
    let count = env.berth.metric("berth_rollout_push_to_patch_seconds_count").await;
    let sum = env.berth.metric("berth_rollout_push_to_patch_seconds_sum").await;
    println!(
        "{label}: {BURST_TAGS} tags ({}), {BURST_FOLLOWERS} Deployments following each, events on, \
         pushes {BURST_PUSHES_IN_FLIGHT} at a time (each burst within {:.1} s); {BURST_ROUNDS} rounds, {} tags: push done to all followers pinned {}; \
         single follower, same berth between bursts ({} pushes): {}; berth's histogram: {count} patches, mean {:.0} ms",
        if declared { "one Repository each" } else { "no Repository declared" },
        spreads.iter().max().unwrap().as_secs_f64(),
        per_tag.len(),
        summary(&per_tag),
        reference.len(),
        summary(&reference),
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
