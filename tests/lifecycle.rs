//! Lifecycle policies: the offline preview command's contract, and expiry in the real registry
//! with in-use protection, multi-arch indexes, dry runs and the per-run deletion cap.

mod support;

use std::{collections::BTreeMap, process::Command};

use berth::api::LifecyclePolicy;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    eventually,
    scenario::{Env, WAIT},
    skopeo::{Creds, describe},
};

fn preview(policy: &str, images: &str, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let (p, i) = (dir.path().join("policy"), dir.path().join("images.json"));
    std::fs::write(&p, policy).unwrap();
    std::fs::write(&i, images).unwrap();
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["lifecycle", "preview", "--policy"])
        .arg(&p)
        .arg("--images")
        .arg(&i)
        .args(extra)
        .output()
        .unwrap()
}

fn digest(n: u32) -> String {
    format!("sha256:{n:064x}")
}

#[test]
fn preview_prints_the_documented_json_and_a_table() {
    let policy = r#"{"rules":[
        {"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},
        {"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":7},"action":{"type":"expire"}}]}"#;
    let images = json!([
        {"digest": digest(1), "tags": ["prod-1"], "pushedAt": "2026-11-01T00:00:00Z"},
        {"digest": digest(2), "tags": ["prod-2"], "pushedAt": "2026-11-10T00:00:00Z"},
        {"digest": digest(3), "tags": [], "pushedAt": "2026-11-02T00:00:00Z"},
        {"digest": digest(4), "tags": [], "pushedAt": "2026-11-25T00:00:00Z"},
    ])
    .to_string();
    let out = preview(policy, &images, &["--now", "2026-11-26T00:00:00Z"]);
    assert!(out.status.success(), "{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        json!({
            "expired": [
                {"digest": digest(1), "tags": ["prod-1"], "rulePriority": 1},
                {"digest": digest(3), "tags": [], "rulePriority": 2},
            ],
            "kept": [{"digest": digest(2), "tags": ["prod-2"]}, {"digest": digest(4), "tags": []}],
        })
    );
    let table = preview(policy, &images, &["--now", "2026-11-26T00:00:00Z", "--output", "table"]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("2 expired, 2 kept") && text.contains("prod-1"), "{text}");

    // A LifecyclePolicy manifest in YAML works the same.
    let manifest = std::fs::read_to_string(support::repo_path("examples/lifecycle-policy.yaml")).unwrap();
    let out = preview(&manifest, &images, &["--now", "2026-11-26T00:00:00Z"]);
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn preview_of_an_invalid_policy_exits_non_zero_with_the_reason() {
    let bad = r#"{"rules":[{"rulePriority":4,"selection":{"tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
    let out = preview(bad, "[]", &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rule 4") && stderr.contains("tagPrefixList"), "{stderr}");
    assert!(out.stdout.is_empty());
    let out = preview(r#"{"rules":[]}"#, "not json", &[]);
    assert!(!out.status.success());
    let out = preview(bad, "[]", &["--now", "tomorrow"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--now"));
}

#[test]
fn preview_keeps_what_workloads_run_and_what_their_version_policy_selects() {
    let example = |f: &str| support::repo_path(&format!("examples/{f}")).to_str().unwrap().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["lifecycle", "preview", "--now", "2026-05-20T00:00:00Z"];
        args.extend(extra);
        Command::new(env!("CARGO_BIN_EXE_berth")).args(&args).output().unwrap()
    };
    let (policy, images, workloads) = (
        example("lifecycle-preview-policy.json"),
        example("lifecycle-preview-images.json"),
        example("lifecycle-preview-workloads.json"),
    );
    let files = ["--policy", &policy, "--images", &images];
    let out = run(&[&files[..], &["--workloads", &workloads]].concat());
    assert!(out.status.success(), "{}", describe(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tags_of = |list: &str| -> Vec<String> {
        v[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(tags_of("expired"), ["v1.4.0", ""], "{v}");
    assert_eq!(tags_of("kept"), ["v1.3.9", "v1.4.2", "v1.4.10", "v1.5.0", "v1.5.1", "v1.6.0"], "{v}");
    let in_use: Vec<&Value> = v["kept"].as_array().unwrap().iter().map(|k| &k["inUse"]).collect();
    assert_eq!(
        in_use,
        [
            &json!(["StatefulSet payments/ledger runs it by digest"]),
            &json!(["Deployment payments/api runs v1.4.2"]),
            &json!(["Deployment payments/api: semver:~1.4 selects v1.4.10"]),
            &Value::Null,
            &json!(["Deployment payments/web runs it by digest"]),
            &json!(["Deployment payments/web: semver:^1.5.0 selects v1.6.0"]),
        ]
    );
    let table = run(&[&files[..], &["--workloads", &workloads, "--output", "table"]].concat());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("protect  1      sha256:ed4b27501c91  v1.4.10\n"), "{text}");
    assert!(text.contains("Deployment payments/api: semver:~1.4 selects v1.4.10\n"), "{text}");
    assert!(text.ends_with("2 expired, 6 kept (3 protected: a rule expires them, but workloads use them)\n"), "{text}");

    // Without --workloads the rules alone decide, and no entry has inUse.
    let out = run(&files);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["expired"].as_array().unwrap().len(), 5, "{v}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("inUse"));

    // A workloads file that is wrong says where.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("workloads.json");
    std::fs::write(&bad, r#"[{"workload": "Deployment payments/api", "rollout": "semver:~1.x.3"}]"#).unwrap();
    let out = run(&[&files[..], &["--workloads", bad.to_str().unwrap()]].concat());
    assert!(!out.status.success() && out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid workloads file: entry 0 (\"Deployment payments/api\"): rollout \"semver:~1.x.3\""),
        "{stderr}"
    );
    let out = run(&[&files[..], &["--workloads", "/nonexistent/workloads.json"]].concat());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent/workloads.json"));
}

fn rule(priority: u32, selection: Value) -> Value {
    json!({"rulePriority": priority, "selection": selection, "action": {"type": "expire"}})
}

async fn apply_policy(env: &Env, name: &str, spec: Value) {
    let p: LifecyclePolicy = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "LifecyclePolicy", "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    Api::<LifecyclePolicy>::namespaced(env.ns.client.clone(), &env.ns.name)
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
}

async fn policy_status(env: &Env, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let api = Api::<LifecyclePolicy>::namespaced(env.ns.client.clone(), &env.ns.name);
    eventually(WAIT, &format!("policy {name}: {what}"), || {
        let api = api.clone();
        let check = &check;
        async move {
            let s = serde_json::to_value(api.get(name).await.map_err(|e| e.to_string())?.status).unwrap();
            if check(&s) { Ok(s) } else { Err(s.to_string()) }
        }
    })
    .await
}

/// A Deployment `name` with one container running `image`.
async fn create_deployment(env: &Env, name: &str, annotations: Value, image: &str) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": image}]}}},
    }))
    .unwrap();
    Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

async fn exists(env: &Env, path: &str, digest: &str) -> bool {
    env.skopeo.digest(&format!("{}@{digest}", env.registry.image(path)), &Creds::Anonymous).await.is_ok()
}

/// 30 images with assorted tags; the policy expires exactly the expected digests, the two that
/// workloads use stay, and a kept multi-arch index keeps its children.
#[tokio::test]
async fn a_policy_expires_exactly_the_expected_images_and_spares_those_in_use() {
    let mut env = Env::new("lifecycle-e2e", true, "1h").await;
    let path = format!("{}/app", env.ns.name);
    env.create_repository("app", json!({})).await;
    let mut digests: BTreeMap<String, String> = BTreeMap::new();
    let mut tags = Vec::new();
    tags.extend((1..=15).map(|i| format!("main-{i}")));
    tags.extend((0..4).map(|i| format!("v1.0.{i}")));
    tags.extend((1..=10).map(|i| format!("feature-{i}")));
    let mut children = Vec::new();
    for tag in &tags {
        digests.insert(tag.clone(), env.push(&path, tag, &format!("lifecycle-{tag}")).await);
        // Each push is in the ledger before the next: push order is time order.
        let n = digests.len();
        env.wait_repo("app", &format!("{tag} recorded"), |s| s["tagCount"] == n).await;
        if tag == "v1.0.3" {
            let (index, kids) = env.layout.add_index("v1.0.4", "lifecycle-multi", &["amd64", "arm64"]);
            let dest = format!("{}:v1.0.4", env.registry.image(&path));
            let out = env.skopeo.push(env.layout.path(), "v1.0.4", &dest, &Creds::Anonymous, true).await;
            assert!(out.status.success(), "{}", describe(&out));
            digests.insert("v1.0.4".into(), index.digest);
            children = kids.into_iter().map(|k| k.digest).collect::<Vec<_>>();
            let n = digests.len();
            env.wait_repo("app", "v1.0.4 recorded", |s| s["tagCount"] == n).await;
        }
    }
    assert_eq!(digests.len(), 30);

    // main-3 is used by tag, feature-2 by digest under the registry's other name (as nodes
    // that pull by a node port or an Ingress host name it).
    let alias = env.alias();
    env.set_aliases(std::slice::from_ref(&alias)).await;
    for (name, image) in [
        ("uses-tag", format!("{}:main-3", env.registry.image(&path))),
        ("uses-digest", format!("{alias}/{path}@{}", digests["feature-2"])),
    ] {
        create_deployment(&env, name, json!({}), &image).await;
    }

    apply_policy(
        &env,
        "cleanup",
        json!({"rules": [
            rule(1, json!({"tagStatus": "tagged", "tagPatternList": ["v*.*.*"], "countType": "imageCountMoreThan", "countNumber": 9999})),
            rule(2, json!({"tagStatus": "tagged", "tagPrefixList": ["main-"], "countType": "imageCountMoreThan", "countNumber": 5})),
            rule(3, json!({"tagStatus": "tagged", "tagPrefixList": ["feature-"], "countType": "imageCountMoreThan", "countNumber": 4})),
            rule(4, json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1})),
        ]}),
    )
    .await;
    let patch = json!({"spec": {"lifecyclePolicyRef": {"name": "cleanup"}}});
    env.repos().patch("app", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();

    let status =
        policy_status(&env, "cleanup", "a run over the repository", |s| s["keptCount"].as_i64() > Some(0)).await;
    // The policy and the Repository's reference changed together: one (debounced) run did it all.
    let deleted = env.berth.metric("berth_lifecycle_expired_images_total{outcome=\"deleted\"}").await;
    assert_eq!(deleted, 14.0, "{status}");
    assert_eq!(status["expiredCount"], 14, "{status}");
    assert_eq!(status["protectedCount"], 2, "{status}");
    assert_eq!(status["keptCount"], 14, "{status}");
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("True"), Some("Succeeded")), "{status}");

    let expired: Vec<&str> = vec![
        "main-1",
        "main-2",
        "main-4",
        "main-5",
        "main-6",
        "main-7",
        "main-8",
        "main-9",
        "main-10",
        "feature-1",
        "feature-3",
        "feature-4",
        "feature-5",
        "feature-6",
    ];
    for (tag, digest) in &digests {
        let should_exist = !expired.contains(&tag.as_str());
        assert_eq!(exists(&env, &path, digest).await, should_exist, "{tag} ({digest}) should exist: {should_exist}");
    }
    for child in &children {
        assert!(exists(&env, &path, child).await, "a child of the kept index {child} was expired");
    }
    let mut left = env.tags(&path).await;
    left.sort();
    let mut expected: Vec<String> = digests.keys().filter(|t| !expired.contains(&t.as_str())).cloned().collect();
    expected.sort();
    assert_eq!(left, expected);
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.ns.client.clone(), &env.ns.name)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        events.items.iter().any(|e| e.reason.as_deref() == Some("ImagesExpired")
            && e.note.as_deref().is_some_and(|n| n.contains("14 images"))),
        "an event reports the 14 expired images"
    );
}

/// A Deployment that follows `semver:~1.4` and runs 1.4.2: the rule keeps only the newest
/// release, yet 1.4.2 (it runs) and 1.4.3 (its policy selects it) stay; 1.4.1 and 1.3.0, which
/// nothing runs or selects, go.
#[tokio::test]
async fn the_tag_a_version_policy_selects_is_kept_as_in_use() {
    let mut env = Env::new("lifecycle-semver", true, "1h").await;
    let path = format!("{}/app", env.ns.name);
    env.create_repository("app", json!({})).await;
    let mut digests: BTreeMap<&str, String> = BTreeMap::new();
    for tag in ["1.3.0", "1.4.1", "1.4.2", "1.4.3", "1.5.0"] {
        digests.insert(tag, env.push(&path, tag, &format!("semver-{tag}")).await);
        // Each push is in the ledger before the next: push order is time order.
        let n = digests.len();
        env.wait_repo("app", &format!("{tag} recorded"), |s| s["tagCount"] == n).await;
    }
    let image = format!("{}:1.4.2", env.registry.image(&path));
    create_deployment(&env, "api", json!({"berth.dev/rollout": "semver:~1.4"}), &image).await;

    apply_policy(
        &env,
        "newest-release",
        json!({"rules": [
            rule(1, json!({"tagStatus": "tagged", "tagPrefixList": ["1."], "countType": "imageCountMoreThan", "countNumber": 1})),
        ]}),
    )
    .await;
    let patch = json!({"spec": {"lifecyclePolicyRef": {"name": "newest-release"}}});
    env.repos().patch("app", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();

    let status =
        policy_status(&env, "newest-release", "a run over the repository", |s| s["keptCount"].as_i64() > Some(0)).await;
    assert_eq!(status["expiredCount"], 2, "{status}");
    assert_eq!(status["protectedCount"], 2, "1.4.2 runs and ~1.4 selects 1.4.3: {status}");
    assert_eq!(status["keptCount"], 1, "{status}");
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["reason"], "Succeeded", "{status}");
    assert!(ready["message"].as_str().unwrap().contains("2 protected (1 selected by a version policy)"), "{status}");

    for (tag, digest) in &digests {
        let kept = ["1.4.2", "1.4.3", "1.5.0"].contains(tag);
        assert_eq!(exists(&env, &path, digest).await, kept, "{tag} ({digest}) should exist: {kept}");
    }
    let mut left = env.tags(&path).await;
    left.sort();
    assert_eq!(left, ["1.4.2", "1.4.3", "1.5.0"]);
    let why = format!("{path}@{} (Deployment {}/api: semver:~1.4 selects 1.4.3)", digests["1.4.3"], env.ns.name);
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.ns.client.clone(), &env.ns.name);
    eventually(WAIT, "the Repository's ImagesExpired event says what was kept and why", || {
        let (events, why) = (events.clone(), why.clone());
        async move {
            let notes: Vec<String> = events
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("ImagesExpired"))
                .filter_map(|e| e.note)
                .collect();
            if notes.iter().any(|n| n.contains("expired 2 images; kept 2 that workloads use") && n.contains(&why)) {
                Ok(())
            } else {
                Err(format!("{notes:?}"))
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_dry_run_deletes_nothing_and_the_deletion_cap_spreads_work_over_runs() {
    let mut env = Env::new("lifecycle-dry", false, "1s").await;
    let path = format!("{}/app", env.ns.name);
    env.create_repository("app", json!({"lifecyclePolicyRef": {"name": "keep-one"}})).await;
    for (n, tag) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        env.push(&path, tag, &format!("dry-{tag}")).await;
        env.wait_repo("app", &format!("{tag} recorded"), |s| s["tagCount"] == n + 1).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    apply_policy(
        &env,
        "keep-one",
        json!({"dryRun": true, "interval": "1s", "rules": [
            rule(1, json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1})),
        ]}),
    )
    .await;
    let status = policy_status(&env, "keep-one", "a dry run", |s| s.get("lastRunAt").is_some()).await;
    assert_eq!(status["expiredCount"], 4, "{status}");
    assert_eq!(status["expiredImages"].as_array().unwrap().len(), 4);
    assert!(status.to_string().contains("DryRun"), "{status}");
    assert_eq!(env.tags(&path).await.len(), 5, "a dry run deletes nothing");

    let patch = json!({"spec": {"dryRun": false, "maxDeletionsPerRun": 2}});
    Api::<LifecyclePolicy>::namespaced(env.ns.client.clone(), &env.ns.name)
        .patch("keep-one", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let status = policy_status(&env, "keep-one", "a capped run", |s| {
        s["observedGeneration"] == 2 && s["expiredCount"].as_i64().is_some_and(|n| n > 0)
    })
    .await;
    assert_eq!(status["expiredCount"], 2, "at most maxDeletionsPerRun per run: {status}");
    assert!(status.to_string().contains("left for the next run"), "{status}");
    let tags = eventually(WAIT, "the next runs finish the job", || {
        let env = &env;
        let path = path.clone();
        async move {
            let tags = env.tags(&path).await;
            if tags.len() == 1 { Ok(tags) } else { Err(format!("{tags:?}")) }
        }
    })
    .await;
    assert_eq!(tags, ["e"], "the newest stays");
}
