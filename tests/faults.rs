//! Nothing lost, nothing wrongly deleted, under injected faults: one long scenario against the
//! real API server (with kube-controller-manager), a real Distribution registry and two berth
//! replicas with leader election, while faults are injected, then invariants checked.
//!
//! Faults: the registry SIGKILLed and restarted (mid lifecycle run, right after an immutable
//! tag was pushed over, so mid restore); the leading berth SIGKILLed and restarted (a leader
//! change); skopeo pushing new tags onto digests the lifecycle policy is expiring; second writers
//! on the ledger ConfigMaps and the followed Deployment (real 409s for berth's compare-and-swap
//! and its resourceVersion-guarded apply); forged registry events (an older digest of a followed
//! tag, a digest the registry does not have, a push time of 2001).
//!
//! Invariants: every `keep-*` tag (pushed onto expiring images while runs were under way)
//! still resolves to its digest; every image a workload uses still exists; every immutable tag
//! resolves to its first digest and its pin is stored; no push time in the ledger ever moves
//! later, and none is from 2001; no digest the registry does not have is recorded; the followed
//! Deployment was never pinned to a forged digest and ends pinned to its tag's last digest.
//!
//! Size: `BERTH_FAULT_ROUNDS` rounds (default 8, about two minutes here).

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use berth::api::{LifecyclePolicy, Registry};
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::ConfigMap},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{berth::Berth, control_plane, eventually, free_port, proxy::SlowProxy, scenario::Env, skopeo::Creds};

const CONVERGE: Duration = Duration::from_secs(120);

struct Checks {
    faults: usize,
    checks: usize,
    violations: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            let v = what();
            eprintln!("VIOLATION: {v}");
            self.violations.push(v);
        }
    }
}

/// Every push time in the ledger of the namespace: digest -> unix ms.
/// Why the push time of `digest` moving from `before` to `now` is a violation, if it is. It may
/// move later only for an image berth deleted (a lifecycle run expired it) that the test then
/// pushed again (a `keep-*` tag onto the same content, landing just after the delete): that is
/// a new push, as ECR would date it too.
fn moved_later(
    proxy: &SlowProxy,
    keeps: &BTreeMap<String, String>,
    stable_history: &[String],
    digest: &str,
    before: i64,
    now: i64,
) -> Option<String> {
    if now <= before {
        return None;
    }
    let (deleted, kept) = (proxy.deleted(digest), keeps.values().any(|d| d == digest));
    if deleted && kept {
        println!("{digest} was expired, then pushed again (a keep-* tag): its new push time is later");
        return None;
    }
    Some(format!(
        "push time of {digest} moved later: {before} -> {now} (berth deleted it: {deleted}; a keep-* digest: {kept}; a web:stable digest: {})",
        stable_history.iter().any(|d| d == digest)
    ))
}

async fn ledger_times(env: &Env) -> BTreeMap<String, i64> {
    let cms = Api::<ConfigMap>::namespaced(env.ns.client.clone(), &env.ns.name)
        .list(&ListParams::default().labels("berth.dev/ledger-of"))
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for cm in cms.items {
        let data = cm.data.unwrap_or_default();
        for line in data.get("pushed").map(String::as_str).unwrap_or("").lines() {
            if let Some((d, t)) = line.split_once(' ')
                && let Ok(t) = t.parse::<i64>()
            {
                out.insert(d.to_string(), t);
            }
        }
    }
    out
}

/// Every pin of the namespace's pin shards: tag -> digest.
async fn ledger_pins(env: &Env) -> BTreeMap<String, String> {
    let cms = Api::<ConfigMap>::namespaced(env.ns.client.clone(), &env.ns.name)
        .list(&ListParams::default().labels("berth.dev/pins-of"))
        .await
        .unwrap();
    cms.items
        .into_iter()
        .flat_map(|cm| {
            cm.data
                .unwrap_or_default()
                .get("pins")
                .cloned()
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| l.split_once(' ').map(|(t, d)| (t.to_string(), d.to_string())))
        .collect()
}

async fn resolve(env: &Env, path: &str, reference: &str) -> Option<String> {
    let sep = if reference.starts_with("sha256:") { "@" } else { ":" };
    env.skopeo.digest(&format!("{}{sep}{reference}", env.registry.image(path)), &Creds::Anonymous).await.ok()
}

async fn deployment_image(env: &Env, name: &str) -> String {
    let d = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name).get(name).await.unwrap();
    d.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap_or_default()
}

fn deployment(name: &str, annotations: Value, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": image}]}},
        },
    }))
    .unwrap()
}

/// Posts a notification envelope to berth as the registry would (with its token).
async fn forge(env: &Env, url: &str, id: &str, path: &str, tag: &str, digest: &str, timestamp: &str) -> u16 {
    let body = json!({"events": [{
        "id": id, "timestamp": timestamp, "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                   "size": 1, "repository": path, "tag": tag},
    }]});
    reqwest::Client::new()
        .post(url)
        .header("Authorization", format!("Bearer {}", env.token))
        .header("Content-Type", "application/vnd.docker.distribution.events.v1+json")
        .body(body.to_string())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn nothing_is_lost_or_wrongly_deleted_under_faults() {
    let rounds: usize = std::env::var("BERTH_FAULT_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(8);
    let cp = control_plane().await;
    let lease = "berth-faults";
    let mut env = Env::with_args(
        "faults",
        true,
        &[
            "--repository-poll-interval",
            "2s",
            "--leader-elect",
            "--leader-elect-lease",
            lease,
            "--leader-elect-namespace",
            "{ns}",
        ],
    )
    .await;
    let ns = env.ns.name.clone();
    env.ns.enable_rollouts(true).await;
    // berth reaches the registry through a proxy that can make its listings slow; skopeo and the
    // registry's events go direct. Workloads name the registry as berth knows it.
    let proxy = SlowProxy::start(&env.registry.host).await;
    let patch = json!({"spec": {"url": proxy.url()}});
    Api::<Registry>::all(env.ns.client.clone())
        .patch(&env.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let as_berth_sees = |path: &str| format!("127.0.0.1:{}/{path}", proxy.port);
    let mut other = Berth::start(
        cp,
        free_port(),
        &ns,
        &[
            "--repository-poll-interval",
            "2s",
            "--leader-elect",
            "--leader-elect-lease",
            lease,
            "--leader-elect-namespace",
            &ns,
        ],
    )
    .await;
    let started_ms = Timestamp::now().as_millisecond();
    let mut c = Checks { faults: 0, checks: 0, violations: Vec::new() };

    let (rel, imm, web) = (format!("{ns}/rel"), format!("{ns}/imm"), format!("{ns}/web"));
    env.create_repository("rel", json!({"lifecyclePolicyRef": {"name": "prune"}})).await;
    env.create_repository("imm", json!({"imageTagMutability": "Immutable"})).await;
    env.create_repository("web", json!({})).await;
    let rule = |priority: u32, prefix: &str, count: u32| {
        json!({"rulePriority": priority, "action": {"type": "expire"}, "selection": {
            "tagStatus": "tagged", "tagPrefixList": [prefix], "countType": "imageCountMoreThan", "countNumber": count}})
    };
    let policy: LifecyclePolicy = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "LifecyclePolicy", "metadata": {"name": "prune"},
        "spec": {"interval": "1s", "rules": [rule(1, "keep-", 1000), rule(2, "build-", 2)]},
    }))
    .unwrap();
    Api::<LifecyclePolicy>::namespaced(env.ns.client.clone(), &ns)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();

    // A workload that uses the first build by digest: it must survive every run.
    let build0 = env.push(&rel, "build-0", "b0").await;
    let deployments = Api::<Deployment>::namespaced(env.ns.client.clone(), &ns);
    let used = format!("{}@{build0}", as_berth_sees(&rel));
    deployments.create(&PostParams::default(), &deployment("user", json!({}), &used)).await.unwrap();
    // A workload following web:stable.
    let mut stable = env.push(&web, "stable", "w0").await;
    let mut stable_history = vec![stable.clone()];
    let follow = json!({"berth.dev/rollout": "digest", "berth.dev/poll-interval": "10s"});
    let web_image = format!("{}:stable", as_berth_sees(&web));
    deployments.create(&PostParams::default(), &deployment("web", follow, &web_image)).await.unwrap();

    let mut builds: Vec<String> = vec![build0.clone()];
    let mut keeps: BTreeMap<String, String> = BTreeMap::new();
    let mut firsts: BTreeMap<String, String> = BTreeMap::new();
    let mut times: BTreeMap<String, i64> = BTreeMap::new();
    let mut forged: BTreeSet<String> = BTreeSet::new();
    // The followed Deployment's image, sampled every 200 ms for the whole scenario.
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sampler = {
        let (deployments, samples) = (deployments.clone(), samples.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(d) = deployments.get("web").await {
                    let image =
                        d.spec.and_then(|s| s.template.spec).map(|s| s.containers[0].image.clone().unwrap_or_default());
                    let mut all = samples.lock().unwrap();
                    if let Some(i) = image
                        && all.last() != Some(&i)
                    {
                        all.push(i);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    for r in 1..=rounds {
        // New builds; the policy keeps the two newest build-* images and expires the rest.
        // In even rounds berth's listings are slow (a big repository), and tags are pushed onto
        // the image that is expiring (same content, same digest) while runs are under way; the
        // images of odd builds get none, so they do expire.
        let race = r >= 2 && r % 2 == 0;
        proxy.set_delay(if race { Duration::from_millis(1000) } else { Duration::ZERO });
        builds.push(env.push(&rel, &format!("build-{r}"), &format!("b{r}")).await);
        if race {
            // berth hears every answer 1 s late, so a run's listing-to-delete window is about
            // 2 s of a 3 s cycle; a tag lands on the expiring image at a random moment of it.
            tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 2500)).await;
            let seed = format!("b{}", r - 2);
            let tag = format!("keep-{r}");
            let d = env.push(&rel, &tag, &seed).await;
            keeps.insert(tag, d);
            c.faults += 1;
            proxy.set_delay(Duration::ZERO);
        }
        // An immutable repository: a new tag, then the previous one pushed over.
        let v = format!("v{r}");
        let first = env.push(&imm, &v, &format!("i{r}")).await;
        firsts.insert(v, first);
        if r >= 2 {
            // berth pins a tag when it first sees it; a tag pushed and pushed over while no
            // replica leads (up to the Lease's 15 s) is pinned to what the leader sees first.
            let tag = format!("v{}", r - 1);
            let first = firsts[&tag].clone();
            let env_ref = &env;
            eventually(CONVERGE, &format!("{tag} pinned before it is pushed over"), || {
                let (tag, first) = (tag.clone(), first.clone());
                async move {
                    let pins = ledger_pins(env_ref).await;
                    if pins.get(&tag) == Some(&first) { Ok(()) } else { Err(format!("{pins:?}")) }
                }
            })
            .await;
            env.push(&imm, &tag, &format!("x{r}")).await;
            c.faults += 1;
        }
        // The followed tag moves.
        stable = env.push(&web, "stable", &format!("w{r}")).await;
        stable_history.push(stable.clone());

        match r % 4 {
            1 => {
                // The registry dies mid-run and mid-restore, and comes back.
                env.registry.kill();
                tokio::time::sleep(Duration::from_secs(3)).await;
                env.registry.start_again().await;
                c.faults += 1;
            }
            2 => {
                // The leader dies; the other replica takes over; the dead one comes back.
                let leader_a = env.berth.metric("berth_leader").await == 1.0;
                if leader_a {
                    env.berth.kill();
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    env.berth.restart().await;
                } else {
                    other.kill();
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    other.restart().await;
                }
                c.faults += 1;
            }
            3 => {
                // Forged events with the notification token: an older digest of the followed tag,
                // a digest the registry does not have, and a push time of 2001.
                let url = env.berth.events_url(&env.name);
                let now = Timestamp::now().to_string();
                let older = stable_history[0].clone();
                let made_up = format!("sha256:{:064x}", 0xf0f0_0000u64 + r as u64);
                forged.insert(older.clone());
                forged.insert(made_up.clone());
                for (i, (digest, at)) in [
                    (older.as_str(), now.as_str()),
                    (made_up.as_str(), now.as_str()),
                    (builds[r].as_str(), "2001-01-01T00:00:00Z"),
                ]
                .into_iter()
                .enumerate()
                {
                    let (path, tag) = if i == 2 {
                        (rel.as_str(), format!("build-{r}"))
                    } else {
                        (web.as_str(), "stable".to_string())
                    };
                    let status = forge(&env, &url, &format!("forged-{r}-{i}"), path, &tag, digest, at).await;
                    c.check(status == 200 || status == 503, || format!("forged event answered {status}"));
                    c.faults += 1;
                }
            }
            _ => {
                // Second writers: the ledger objects and the followed Deployment change under berth.
                let cms = Api::<ConfigMap>::namespaced(env.ns.client.clone(), &ns);
                for i in 0..5 {
                    let list = cms.list(&ListParams::default().labels("berth.dev/ledger-of")).await.unwrap();
                    for cm in list.items {
                        let patch = json!({"metadata": {"annotations": {"faults.test/touched": format!("{r}-{i}")}}});
                        let _ = cms.patch(&cm.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await;
                    }
                    let patch = json!({"metadata": {"annotations": {"faults.test/touched": format!("{r}-{i}")}}});
                    let _ = deployments.patch("web", &PatchParams::default(), &Patch::Merge(patch)).await;
                    c.faults += 1;
                }
            }
        }

        // Sampled every round: push times never move later, none is from 2001, nothing made up.
        let now_times = ledger_times(&env).await;
        for (d, t) in &now_times {
            if let Some(before) = times.get(d) {
                let later = moved_later(&proxy, &keeps, &stable_history, d, *before, *t);
                c.check(later.is_none(), || later.unwrap_or_default());
            }
            c.check(*t >= started_ms - 60_000, || format!("push time of {d} is {t}, before the test began"));
            c.check(!forged.contains(d) || stable_history.contains(d), || format!("made-up digest {d} recorded"));
        }
        times = now_times;
    }

    // Converge, then the invariants.
    let expected_web = format!("{}:stable@{stable}", as_berth_sees(&web));
    let expected = expected_web.clone();
    let env_ref = &env;
    eventually(CONVERGE, "web pinned to the last digest of web:stable", || {
        let expected = expected.clone();
        async move {
            let now = deployment_image(env_ref, "web").await;
            if now == expected { Ok(()) } else { Err(format!("{now}\n{}", env_ref.berth.log_tail())) }
        }
    })
    .await;
    sampler.abort();
    // Every pin was to a digest the tag really had, and never back to an older one.
    let seen = samples.lock().unwrap().clone();
    let mut highest = 0;
    for image in &seen {
        let Some((_, digest)) = image.split_once('@') else { continue };
        let index = stable_history.iter().position(|d| d == digest);
        c.check(index.is_some(), || format!("web was pinned to a digest web:stable never had: {image}"));
        if let Some(i) = index {
            c.check(i >= highest, || format!("web went back from the digest of push {highest} to push {i}: {seen:?}"));
            highest = highest.max(i);
        }
    }
    // The immutable tags settle on their first digests (restores retried after the registry died).
    let firsts_ref = &firsts;
    let imm_ref = imm.as_str();
    eventually(CONVERGE, "every immutable tag on its first digest", || async move {
        for (tag, first) in firsts_ref {
            let now = resolve(env_ref, imm_ref, tag).await;
            if now.as_deref() != Some(first.as_str()) {
                return Err(format!("{tag}: {now:?}, first {first}"));
            }
        }
        Ok(())
    })
    .await;
    // A few more lifecycle runs after the last push.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (tag, first) in &firsts {
        let now = resolve(&env, &imm, tag).await;
        c.check(now.as_deref() == Some(first.as_str()), || format!("immutable {tag}: {now:?}, first {first}"));
    }
    let pins = ledger_pins(&env).await;
    for (tag, first) in &firsts {
        c.check(pins.get(tag) == Some(first), || format!("pin of {tag}: {:?}, first {first}", pins.get(tag)));
    }
    for (tag, digest) in &keeps {
        let now = resolve(&env, &rel, tag).await;
        c.check(now.as_deref() == Some(digest.as_str()), || {
            format!("{tag} (pushed onto an expiring image) is {now:?}")
        });
    }
    c.check(resolve(&env, &rel, &build0).await.is_some(), || format!("{build0}, used by Deployment user, is gone"));
    let expired = {
        let mut n = 0;
        for r in 0..builds.len().saturating_sub(2) {
            if resolve(&env, &rel, &format!("build-{r}")).await.is_none() {
                n += 1;
            }
        }
        n
    };
    c.check(expired > 0, || "the lifecycle policy expired nothing: the scenario did not exercise deletion".into());
    let final_times = ledger_times(&env).await;
    for (d, t) in &final_times {
        if let Some(before) = times.get(d) {
            let later = moved_later(&proxy, &keeps, &stable_history, d, *before, *t);
            c.check(later.is_none(), || later.unwrap_or_default());
        }
    }
    let restores = serde_json::to_value(env.repos().get("imm").await.unwrap().status).unwrap();
    let restored = restores["immutableTagRestores"].as_i64().unwrap_or(0);
    c.check(restored >= (rounds as i64 - 1), || {
        format!("{restored} restores counted for {} overwrites: {restores}", rounds - 1)
    });

    let policy = Api::<LifecyclePolicy>::namespaced(env.ns.client.clone(), &ns).get("prune").await.unwrap();
    println!("lifecycle, last run: {:?}", policy.status.map(|s| s.conditions));
    println!("faults: {} injected, {} invariant checks, {} violations", c.faults, c.checks, c.violations.len());
    assert!(
        c.violations.is_empty(),
        "{} violations:\n{}\nberth A:\n{}\nberth B:\n{}",
        c.violations.len(),
        c.violations.join("\n"),
        env.berth.log_tail(),
        other.log_tail()
    );
    other.stop();
}
