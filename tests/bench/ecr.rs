//! Benchmarks of the ECR backend against moto (the ECR API's stand-in, on loopback) with the
//! real control plane. `cargo bench --bench ecr` prints the figures; nothing here asserts them.
//!
//! - a repository with 1,000 images: ECR requests and wall time per Repository reconcile, beside
//!   one bare DescribeImages of the same repository by the SDK (the reference); and a lifecycle
//!   run that expires 200 of them;
//! - polling: 500 Deployments following 50 tags in 10 repositories, ECR requests per poll
//!   interval (the target is one per repository);
//! - berth's resident memory with 1,000 ECR repositories declared, beside the same berth with
//!   none.
//!
//! `cargo bench --bench ecr -- images` (or `polling`, `memory`) runs only those whose name
//! contains one of the words given.

#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::{
    eventually,
    moto::{self, EcrEnv},
    scenario::ready,
};

const IMAGES: usize = 1_000;
const EXPIRED: usize = 200;
const WORKLOADS: usize = 500;
const TAGS: usize = 50;
const REPOS: usize = 10;
const REPOSITORIES: usize = 1_000;

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with: cargo bench --bench ecr");
        return;
    }
    let words: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| words.is_empty() || words.iter().any(|w| name.contains(w.as_str()));
    if wanted("images") {
        images_1k().await;
    }
    if wanted("polling") {
        polling().await;
    }
    if wanted("memory") {
        memory_1k_repositories().await;
    }
}

async fn metric(env: &EcrEnv, name: &str) -> f64 {
    env.berth.metric(name).await
}

async fn images_1k() {
    let env = EcrEnv::new("bench-ecr-images", &["--repository-poll-interval", "3s"], json!({})).await;
    let path = format!("{}/big", env.ns.name);
    env.create_repository("big", json!({})).await;
    env.wait_repo("big", "Ready", |s| ready(s) == Some(("True", "Reconciled"))).await;
    let started = Instant::now();
    let ecr = &env.ecr;
    let registry_id = env.registry_id.as_str();
    let path_ref = path.as_str();
    stream::iter(0..IMAGES)
        .for_each_concurrent(8, |i| async move {
            moto::put_image(ecr, registry_id, path_ref, Some(&format!("build-{i:04}")), &format!("img-{i}")).await;
        })
        .await;
    println!("images_1k: {IMAGES} images put in {:.1} s", started.elapsed().as_secs_f64());
    env.wait_repo("big", "lists 1,000 images", |s| s["imageCount"] == IMAGES).await;

    // The reference: one DescribeImages of the repository (every image, one page).
    let mut bare = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let n = moto::images(ecr, registry_id, &path).await.len();
        assert_eq!(n, IMAGES);
        bare.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    bare.sort_by(f64::total_cmp);

    let requests = "berth_registry_requests_total{controller=\"repository\"}";
    let reconciles = "berth_reconciles_total{controller=\"repository\"}";
    let (r0, n0) = (metric(&env, requests).await, metric(&env, reconciles).await);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (r1, n1) = (metric(&env, requests).await, metric(&env, reconciles).await);
    let per = (r1 - r0) / (n1 - n0).max(1.0);
    let duration_sum = metric(&env, "berth_reconcile_duration_seconds_sum{controller=\"repository\"}").await;
    let duration_count = metric(&env, "berth_reconcile_duration_seconds_count{controller=\"repository\"}").await;
    println!(
        "images_1k: {per:.2} ECR requests per Repository reconcile over {} reconciles ({IMAGES} images); \
         mean reconcile {:.0} ms over the run beside a bare DescribeImages of the repository: median {:.0} ms (5 calls)",
        n1 - n0,
        duration_sum / duration_count.max(1.0) * 1000.0,
        bare[2]
    );

    // A lifecycle run that expires the 200 oldest.
    let policies = Api::<berth::api::LifecyclePolicy>::namespaced(env.ns.client.clone(), &env.ns.name);
    let policy: berth::api::LifecyclePolicy = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "LifecyclePolicy", "metadata": {"name": "keep-800"},
        "spec": {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": IMAGES - EXPIRED}, "action": {"type": "expire"}}], "interval": "24h"},
    }))
    .unwrap();
    policies.create(&PostParams::default(), &policy).await.unwrap();
    let lifecycle = "berth_registry_requests_total{controller=\"lifecycle\"}";
    let before = metric(&env, lifecycle).await;
    let started = Instant::now();
    env.patch_repository("big", json!({"spec": {"lifecyclePolicyRef": {"name": "keep-800"}}})).await;
    let status = eventually(Duration::from_secs(300), "the lifecycle run", || async {
        let p = policies.get("keep-800").await.map_err(|e| e.to_string())?;
        let s = serde_json::to_value(&p.status).unwrap();
        if s["lastRunAt"].is_string() { Ok(s) } else { Err(s.to_string()) }
    })
    .await;
    println!(
        "images_1k: lifecycle run expired {} of {IMAGES} images with {} ECR requests in {:.2} s",
        status["expiredCount"],
        metric(&env, lifecycle).await - before,
        started.elapsed().as_secs_f64()
    );
}

async fn polling() {
    let env = EcrEnv::new("bench-ecr-polling", &["--repository-poll-interval", "1h"], json!({})).await;
    env.ns.enable_rollouts(true).await;
    for r in 0..REPOS {
        let name = format!("r{r}");
        env.create_repository(&name, json!({})).await;
        env.wait_repo(&name, "Ready", |s| ready(s) == Some(("True", "Reconciled"))).await;
        for t in 0..TAGS / REPOS {
            let path = format!("{}/{name}", env.ns.name);
            moto::put_image(&env.ecr, &env.registry_id, &path, Some(&format!("t{t}")), &format!("{r}-{t}")).await;
        }
    }
    let deployments = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    let host = moto::host(&env.registry_id);
    let ns = env.ns.name.clone();
    stream::iter(0..WORKLOADS)
        .for_each_concurrent(8, |i| {
            let deployments = deployments.clone();
            let image = format!("{host}/{ns}/r{}:t{}", i % REPOS, (i / REPOS) % (TAGS / REPOS));
            async move {
                let d: Deployment = serde_json::from_value(json!({
                    "metadata": {"name": format!("w{i}"), "annotations": {"berth.dev/rollout": "digest", "berth.dev/poll-interval": "10s"}},
                    "spec": {"replicas": 0, "selector": {"matchLabels": {"app": format!("w{i}")}}, "template": {"metadata": {"labels": {"app": format!("w{i}")}},
                             "spec": {"containers": [{"name": "c", "image": image}]}}},
                }))
                .unwrap();
                deployments.create(&PostParams::default(), &d).await.unwrap();
            }
        })
        .await;
    // Let the first polls settle, then count over 6 intervals.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let name = "berth_registry_requests_total{controller=\"rollout\"}";
    let before = metric(&env, name).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let sent = metric(&env, name).await - before;
    println!(
        "polling: {WORKLOADS} Deployments following {TAGS} tags in {REPOS} repositories, 10 s interval: \
         {sent} ECR requests in 60 s = {:.2} per repository per interval (a poll per tag would be {:.1})",
        sent / 6.0 / REPOS as f64,
        TAGS as f64 / REPOS as f64
    );
}

async fn memory_1k_repositories() {
    let env = EcrEnv::new("bench-ecr-memory", &["--repository-poll-interval", "5m"], json!({})).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = env.berth.rss_kib().unwrap_or(0);
    let started = Instant::now();
    let env_ref = &env;
    stream::iter(0..REPOSITORIES)
        .for_each_concurrent(16, |i| async move {
            env_ref.create_repository(&format!("r{i:04}"), json!({})).await;
        })
        .await;
    let repos = env.repos();
    eventually(Duration::from_secs(900), "1,000 ECR repositories Ready", || async {
        let list = repos.list(&Default::default()).await.map_err(|e| e.to_string())?;
        let n = list
            .items
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.ecr.as_ref().is_some_and(|e| e.arn.is_some())))
            .count();
        if n == REPOSITORIES { Ok(()) } else { Err(format!("{n} ready")) }
    })
    .await;
    let ready_after = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss = env.berth.rss_kib().unwrap_or(0);
    println!(
        "memory: berth RSS {:.1} MiB with {REPOSITORIES} ECR repositories declared and created ({ready_after:.0} s to all Ready), beside {:.1} MiB with none (same berth, before)",
        rss as f64 / 1024.0,
        idle as f64 / 1024.0
    );
    drop(env);

    // The reference: another berth with as many Repositories on a Distribution registry.
    let dist = support::scenario::Env::new("bench-ecr-memory-ref", false, "5m").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = dist.berth.rss_kib().unwrap_or(0);
    let started = Instant::now();
    let dist_ref = &dist;
    stream::iter(0..REPOSITORIES)
        .for_each_concurrent(16, |i| async move {
            dist_ref.create_repository(&format!("r{i:04}"), json!({})).await;
        })
        .await;
    let repos = dist.repos();
    eventually(Duration::from_secs(900), "1,000 Distribution repositories Ready", || async {
        let list = repos.list(&Default::default()).await.map_err(|e| e.to_string())?;
        let n = list.items.iter().filter(|r| r.status.as_ref().is_some_and(|s| s.uri.is_some())).count();
        if n == REPOSITORIES { Ok(()) } else { Err(format!("{n} ready")) }
    })
    .await;
    let ready_after = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss = dist.berth.rss_kib().unwrap_or(0);
    println!(
        "memory: reference, berth RSS {:.1} MiB with {REPOSITORIES} Repositories on a Distribution registry ({ready_after:.0} s to all Ready), {:.1} MiB with none",
        rss as f64 / 1024.0,
        idle as f64 / 1024.0
    );
}
