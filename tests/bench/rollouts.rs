//! Benchmarks of the rollout controller on the real control plane (with kube-controller-manager)
//! and registry. `cargo bench --bench rollouts` prints the figures; nothing here asserts timings.
//!
//! - push-to-patch latency over 50 pushes of a watched tag (polling hourly, so events only);
//! - a burst: 50 tags (one declared Repository each) with 10 Deployments following each, all
//!   pushed at once, push to all of a tag's followers pinned, beside one follower's latency in
//!   the same berth between the bursts; then the same with no Repository declared (no ledger to
//!   read before a pin), as tools that only know the registry run;
//! - berth's resident memory with 5,000 Deployments in its namespace, 500 of them annotated;
//! - version policies: a push of a new matching version to the Deployment pinned, over 50
//!   pushes, beside a `digest` follower's latency in the same berth; and by polling alone (10 s)
//!   over 10 repositories whose first polls came at the same instant;
//! - version policies at scale: 500 Deployments over 50 repositories of 1,000 tags each, the
//!   registry requests per poll interval, idle and with a new version in 10 repositories.
//!
//! `cargo bench --bench rollouts -- burst` (or `push_to_patch`, `memory_5k`,
//! `burst_without_repositories`, `versions`, `versions_by_polling`, `versions_at_scale`) runs
//! only those whose name contains one of the words given.

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
    if wanted("versions") {
        versions().await;
    }
    if wanted("versions_by_polling") {
        versions_by_polling().await;
    }
    if wanted("versions_at_scale") {
        versions_at_scale().await;
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
    deployment_with(name, image, annotations)
}

fn deployment_with(name: &str, image: &str, annotations: serde_json::Value) -> Deployment {
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

/// Waits until the Deployment runs an image that contains `part`; how long that took.
async fn wait_pinned(env: &Env, api: &Api<Deployment>, name: &str, part: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while !image_of(api, name).await.contains(part) {
        assert!(start.elapsed() < limit, "{name} never ran *{part}*:\n{}", env.berth.log_tail());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// A push of a new version that a `semver` policy picks, to the Deployment pinned to
/// `repo:<version>@<digest>`, events on and polling hourly; beside it in the same berth, the
/// reference: a `digest` follower of another repository's `stable` tag, pushed alternately.
async fn versions() {
    let mut env = Env::new("bench-rollout-versions", true, "1h").await;
    env.ns.enable_rollouts(true).await;
    let (versioned, fixed) = (format!("{}/versioned", env.ns.name), format!("{}/fixed", env.ns.name));
    env.push(&versioned, "1.0.0", "v-seed").await;
    let first = env.push(&fixed, "stable", "f-seed").await;
    let api = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    let semver = json!({"berth.dev/rollout": "semver:^1.0", "berth.dev/poll-interval": "1h"});
    let image = env.registry.image(&versioned);
    api.create(&PostParams::default(), &deployment_with("semver", &format!("{image}:1.0.0"), semver)).await.unwrap();
    let stable = format!("{}:stable", env.registry.image(&fixed));
    api.create(&PostParams::default(), &deployment("digest", &stable, true)).await.unwrap();
    wait_pinned(&env, &api, "digest", &first, Duration::from_secs(60)).await;
    wait_pinned(&env, &api, "semver", ":1.0.0@", Duration::from_secs(60)).await;
    let mut layout = OciLayout::default();
    let (mut by_version, mut by_digest) = (Vec::new(), Vec::new());
    for i in 1..=PUSHES {
        let tag = format!("1.0.{i}");
        let d = layout.add_image(&tag, &format!("version-{i}"));
        let out = env.skopeo.push(layout.path(), &tag, &format!("{image}:{tag}"), &Creds::Anonymous, false).await;
        assert!(out.status.success());
        by_version
            .push(wait_pinned(&env, &api, "semver", &format!(":{tag}@{}", d.digest), Duration::from_secs(60)).await);
        let d = layout.add_image("stable", &format!("fixed-{i}"));
        let out = env.skopeo.push(layout.path(), "stable", &stable, &Creds::Anonymous, false).await;
        assert!(out.status.success());
        by_digest.push(wait_pinned(&env, &api, "digest", &d.digest, Duration::from_secs(60)).await);
    }
    let requests = env.berth.metric("berth_registry_requests_total{controller=\"rollout\"}").await;
    println!(
        "versions: {PUSHES} pushes of a new version (semver:^1.0, events on, polling hourly), skopeo done to \
         Deployment pinned to repo:<version>@<digest>: {}; reference, {PUSHES} pushes of a followed tag (digest) \
         in the same berth: {}; rollout registry requests in all: {requests} ({} pushes)",
        summary(&by_version),
        summary(&by_digest),
        2 * PUSHES
    );
}

/// Version policies by polling alone (events off, 10 s): 10 repositories, each with a follower,
/// all first polled at the same instant; one new version pushed to one of them at a time, at a
/// random moment to a repository drawn at random, to the follower pinned. Evenly spread polls
/// give about half an interval.
async fn versions_by_polling() {
    const REPOS: usize = 10;
    const POLLED_PUSHES: usize = 40;
    let mut env = Env::new("bench-rollout-versions-polling", false, "1h").await;
    env.ns.enable_rollouts(true).await;
    let api = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    let polled = json!({"berth.dev/rollout": "semver:^1.0", "berth.dev/poll-interval": "10s"});
    for r in 0..REPOS {
        let path = format!("{}/r{r}", env.ns.name);
        env.push(&path, "1.0.0", &format!("seed-{r}")).await;
        let image = format!("{}:1.0.0", env.registry.image(&path));
        api.create(&PostParams::default(), &deployment_with(&format!("r{r}"), &image, polled.clone())).await.unwrap();
    }
    for r in 0..REPOS {
        wait_pinned(&env, &api, &format!("r{r}"), ":1.0.0@", Duration::from_secs(60)).await;
    }
    let mut layout = OciLayout::default();
    let mut latencies = Vec::new();
    let mut random = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(15);
    for i in 1..=POLLED_PUSHES {
        tokio::time::sleep(Duration::from_millis(rand::Rng::random_range(&mut random, 0..3000))).await;
        // A repository drawn at random: in turn, successive pushes would keep meeting the same
        // phase differences between repositories, and 30 pushes would measure about 10.
        let r = rand::Rng::random_range(&mut random, 0..REPOS);
        let path = format!("{}/r{r}", env.ns.name);
        let tag = format!("1.0.{i}");
        let d = layout.add_image(&tag, &format!("polled-{i}"));
        let dest = format!("{}:{tag}", env.registry.image(&path));
        let out = env.skopeo.push(layout.path(), &tag, &dest, &Creds::Anonymous, false).await;
        assert!(out.status.success());
        let suffix = format!(":{tag}@{}", d.digest);
        latencies.push(wait_pinned(&env, &api, &format!("r{r}"), &suffix, Duration::from_secs(60)).await);
    }
    println!(
        "versions_by_polling: {POLLED_PUSHES} pushes of a new version over {REPOS} repositories polled every 10 s \
         (events off), skopeo done to pinned: {}",
        summary(&latencies)
    );
}

/// 500 Deployments with version policies over 50 repositories of 1,000 tags each, polling every
/// 10 s (events off): the rollout controller's registry requests per interval once all are
/// pinned, then in the interval after a new version lands in 10 repositories. The target: one
/// tags listing per repository per interval, plus one HEAD per changed pick.
async fn versions_at_scale() {
    const REPOS: usize = 50;
    const TAGS_PER_REPO: usize = 1000;
    const PER_REPO: usize = 10;
    const CHANGED: usize = 10;
    let mut env = Env::new("bench-rollout-versions-scale", false, "1h").await;
    env.ns.enable_rollouts(true).await;
    let versions: Vec<String> = (0..TAGS_PER_REPO).map(|i| format!("1.{}.{}", i / 100, i % 100)).collect();
    let fill = Instant::now();
    for r in 0..REPOS {
        let path = format!("{}/r{r}", env.ns.name);
        env.push(&path, "base", &format!("base-{r}")).await;
        env.registry.put_tags(&path, "base", &versions).await;
    }
    let fill = fill.elapsed();
    let api = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    let policies = ["semver:^1.0", "semver:~1.3", "pattern:^1\\.([0-9]+)\\.0$ numerical:1", "semver:>=1.5.0 <1.7"];
    let expected = ["1.9.99", "1.3.99", "1.9.0", "1.6.99"];
    let created = Instant::now();
    stream::iter(0..REPOS * PER_REPO)
        .map(|i| {
            let api = api.clone();
            let image = format!("{}:1.0.0", env.registry.image(&format!("{}/r{}", env.ns.name, i / PER_REPO)));
            let annotations = json!({"berth.dev/rollout": policies[i % policies.len()], "berth.dev/poll-interval": "10s"});
            async move { api.create(&PostParams::default(), &deployment_with(&format!("w{i}"), &image, annotations)).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let all_pinned = |want: Box<dyn Fn(usize) -> String>| {
        let api = api.clone();
        async move {
            let start = Instant::now();
            loop {
                let list = api.list(&ListParams::default()).await.unwrap();
                let done = list
                    .items
                    .iter()
                    .filter(|d| {
                        let i: usize = d.metadata.name.as_deref().unwrap()[1..].parse().unwrap();
                        let image =
                            d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].image.clone();
                        image.unwrap_or_default().contains(&format!(":{}@sha256:", want(i)))
                    })
                    .count();
                if done == REPOS * PER_REPO {
                    return start.elapsed();
                }
                assert!(start.elapsed() < Duration::from_secs(600), "{done} of {} pinned", REPOS * PER_REPO);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    all_pinned(Box::new(move |i| expected[i % expected.len()].to_string())).await;
    let pinned = created.elapsed();
    let requests = "berth_registry_requests_total{controller=\"rollout\"}";
    let to_pin = env.berth.metric(requests).await;
    // Idle: three intervals with nothing pushed.
    let (before, cpu_before, idle_start) = (to_pin, env.berth.cpu_seconds().unwrap_or(0.0), Instant::now());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let idle = env.berth.metric(requests).await - before;
    let idle_intervals = idle_start.elapsed().as_secs_f64() / 10.0;
    let idle_cpu = env.berth.cpu_seconds().unwrap_or(0.0) - cpu_before;
    // A new highest version in 10 repositories: semver:^1.0 and the numerical pattern pick it.
    let before = env.berth.metric(requests).await;
    let changed_start = Instant::now();
    for r in 0..CHANGED {
        env.registry.put_tags(&format!("{}/r{r}", env.ns.name), "base", &["1.10.0".to_string()]).await;
    }
    let moved = all_pinned(Box::new(move |i| {
        if i / PER_REPO < CHANGED && i % 2 == 0 { "1.10.0".into() } else { expected[i % expected.len()].into() }
    }))
    .await;
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(changed_start.elapsed())).await;
    let changed = env.berth.metric(requests).await - before;
    let changed_intervals = changed_start.elapsed().as_secs_f64() / 10.0;
    println!(
        "versions_at_scale: {REPOS} repositories x {TAGS_PER_REPO} tags (filled in {:.0} s), {} Deployments with \
         version policies (4 kinds), polling every 10 s, events off: all pinned {:.1} s after creation began, \
         {to_pin} registry requests to get there; idle: {idle} requests in {idle_intervals:.1} intervals = \
         {:.1} per interval (target {REPOS}: one listing per repository), berth CPU {:.2} s per interval; \
         a new version in {CHANGED} repositories: all {} followers there pinned {:.1} s after the pushes, \
         {changed} requests in {changed_intervals:.1} intervals (target {REPOS} per interval + {CHANGED} HEADs = {:.0})",
        fill.as_secs_f64(),
        REPOS * PER_REPO,
        pinned.as_secs_f64(),
        idle / idle_intervals,
        idle_cpu / idle_intervals,
        (0..CHANGED * PER_REPO).filter(|i| i % 2 == 0).count(),
        moved.as_secs_f64(),
        REPOS as f64 * changed_intervals + CHANGED as f64,
    );
}
