//! The demo: berth on a local control plane with a real registry, doing what it is for, in a few
//! minutes and without a cluster of your own. Run it with `tests/demo/run` (which installs what
//! it needs first); `--keep` leaves everything running until Ctrl-C.
//!
//! It reuses the test environment: kube-apiserver, etcd and kube-controller-manager on loopback,
//! Debian's Distribution registry in token mode with berth as its token service and events
//! receiver, skopeo as the client.

#[path = "../support/mod.rs"]
mod support;

use std::{collections::BTreeMap, time::Duration};

use berth::api::{LifecyclePolicy, Repository};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Resource,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{control_plane, eventually, skopeo::Creds, token::TokenEnv};

const WAIT: Duration = Duration::from_secs(120);

fn say(step: &str) {
    println!("\n\x1b[1m== {step}\x1b[0m");
}

fn show(manifest: &Value) {
    let yaml = serde_yaml::to_string(manifest).unwrap_or_default();
    for line in yaml.lines() {
        println!("    {line}");
    }
}

async fn apply<K>(env: &TokenEnv, manifest: Value) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    show(&manifest);
    let obj: K = serde_json::from_value(manifest).expect("a valid manifest");
    Api::<K>::namespaced(env.ns.client.clone(), &env.ns.name)
        .create(&PostParams::default(), &obj)
        .await
        .expect("applied")
}

fn kubectl(cp: &support::ControlPlane, ns: &str, args: &[&str]) {
    let out = cp.kubectl().args(args).arg("-n").arg(ns).output().expect("kubectl");
    for line in String::from_utf8_lossy(&out.stdout).lines().chain(String::from_utf8_lossy(&out.stderr).lines()) {
        println!("    {line}");
    }
}

fn outcome(what: &str, ok: bool, expected: bool) {
    let mark = if ok == expected { "\x1b[32m✔\x1b[0m" } else { "\x1b[31m✘ unexpected\x1b[0m" };
    println!("    {mark} {what}: {}", if ok { "allowed" } else { "refused" });
}

#[tokio::main]
async fn main() {
    let keep = std::env::args().any(|a| a == "--keep");
    say("1. A local control plane and a registry in token mode, berth running");
    let cp = control_plane().await;
    cp.install_crds().await;
    let mut env = TokenEnv::with_options("demo", &[], true).await;
    let ns = env.ns.name.clone();
    println!("    kube-apiserver  {}", cp.server);
    println!("    registry        {} (auth.token realm: berth, notifications: berth)", env.registry.url());
    println!(
        "    berth           {} (token endpoint /token/{}, events /events/registry/{})",
        env.berth.url(),
        env.name,
        env.name
    );
    println!("    namespace       {ns}");

    say("2. Declare two repositories (public and private) and who may push");
    for (name, visibility) in [("web", "Public"), ("api", "Private")] {
        apply::<Repository>(
            &env,
            json!({
                "apiVersion": "berth.dev/v1alpha1", "kind": "Repository",
                "metadata": {"name": name, "namespace": ns, "labels": {"team": "demo"}},
                "spec": {"registryRef": {"name": env.name}, "visibility": visibility},
            }),
        )
        .await;
    }
    let ci = env.service_account("ci").await;
    apply::<berth::api::AccessPolicy>(
        &env,
        json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "demo", "namespace": ns},
            "spec": {
                "repositories": {"selector": {"matchLabels": {"team": "demo"}}},
                "grants": [{"subjects": [{"kind": "ServiceAccount", "name": "ci"}], "actions": ["pull", "push"]}],
                "pullSecrets": {"serviceAccounts": ["default"]},
            },
        }),
    )
    .await;

    say("3. CI pushes five releases of each with its ServiceAccount token (skopeo)");
    for i in 1..=5 {
        for path in ["web", "api"] {
            let tag = format!("v{i}");
            env.push_eventually(path, &tag, &format!("{path}-{i}"), &ci).await;
            print!("    pushed {path}:{tag}  ");
        }
        println!();
    }
    let stable = env.push_eventually("web", "stable", "web-5", &ci).await;
    println!("    pushed web:stable = {stable}");

    say("4. What the registry allows now");
    outcome("anonymous pull of web (Public)", env.pull("web", "v1", &Creds::Anonymous).await.is_ok(), true);
    outcome("anonymous pull of api (Private)", env.pull("api", "v1", &Creds::Anonymous).await.is_ok(), false);
    outcome("anonymous push to web", env.push("web", "evil", "evil", &Creds::Anonymous).await.is_ok(), false);
    outcome("CI pull of api", env.pull("api", "v1", &ci).await.is_ok(), true);
    let pull_secret = env.pull_secret("berth-pull").await;
    outcome("the rotating pull secret berth wrote pulls api", env.pull("api", "v1", &pull_secret).await.is_ok(), true);
    outcome("the same pull secret pushes", env.push("api", "x", "x", &pull_secret).await.is_ok(), false);
    outcome("push to a repository nobody declared", env.push("undeclared", "v1", "u", &ci).await.is_ok(), false);

    say("5. A Deployment that follows web:stable, pinned by digest");
    // Rollouts are opt-in per namespace as well as per workload.
    env.ns.enable_rollouts(true).await;
    println!("    namespace {ns} labelled berth.dev/rollouts=enabled");
    let image = format!("{}:stable", env.registry.image(&format!("{ns}/web")));
    apply::<Deployment>(
        &env,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns, "annotations": {"berth.dev/rollout": "digest"}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}},
            },
        }),
    )
    .await;
    let deployments = Api::<Deployment>::namespaced(env.ns.client.clone(), &ns);
    let image_now = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|s| s.containers[0].image.clone().unwrap_or_default())
    };
    let pinned = wait_image(&deployments, &stable, &image_now).await;
    println!("    pinned: {pinned}");
    let newer = env.push_eventually("web", "stable", "web-6", &ci).await;
    println!("    CI pushes a new web:stable = {newer}");
    let pinned = wait_image(&deployments, &newer, &image_now).await;
    let d = deployments.get("web").await.unwrap();
    let annotations: BTreeMap<String, String> = d.metadata.annotations.clone().unwrap_or_default();
    println!("    pinned: {pinned}");
    println!(
        "    berth.dev/previous-digest: {}",
        annotations.get("berth.dev/previous-digest").cloned().unwrap_or_default()
    );

    say("6. A lifecycle policy: keep the three newest v* images of api");
    apply::<LifecyclePolicy>(
        &env,
        json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": "keep-three", "namespace": ns},
            "spec": {"rules": [{
                "rulePriority": 1, "description": "keep the 3 newest releases",
                "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan", "countNumber": 3},
                "action": {"type": "expire"},
            }]},
        }),
    )
    .await;
    Api::<Repository>::namespaced(env.ns.client.clone(), &ns)
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"lifecyclePolicyRef": {"name": "keep-three"}}})),
        )
        .await
        .unwrap();
    let policies = Api::<LifecyclePolicy>::namespaced(env.ns.client.clone(), &ns);
    let status = eventually(WAIT, "the lifecycle policy ran", || {
        let policies = policies.clone();
        async move {
            let p = policies.get("keep-three").await.map_err(|e| e.to_string())?;
            let s = serde_json::to_value(&p.status).unwrap_or(Value::Null);
            if s["expiredCount"].as_i64().unwrap_or(0) > 0 { Ok(s) } else { Err(s.to_string()) }
        }
    })
    .await;
    println!("    expired {} images:", status["expiredCount"]);
    for image in status["expiredImages"].as_array().into_iter().flatten() {
        println!("      {}", image.as_str().unwrap_or_default());
    }
    let tags = env.skopeo.list_tags(&env.registry.image(&format!("{ns}/api")), &ci).await.unwrap_or_default();
    println!("    api tags now: {}", tags.join(", "));

    say("7. The berth objects, as kubectl shows them");
    kubectl(cp, &ns, &["get", "berth"]);
    kubectl(
        cp,
        &ns,
        &[
            "get",
            "deployment",
            "web",
            "-o",
            "custom-columns=NAME:.metadata.name,IMAGE:.spec.template.spec.containers[0].image",
        ],
    );

    if keep {
        say("Everything keeps running; Ctrl-C ends the demo");
        println!("    export KUBECONFIG={}", cp.kubeconfig.display());
        let _ = tokio::signal::ctrl_c().await;
    }
    println!(
        "\ndone: berth declared repositories, decided every pull and push, pinned a rollout and expired old images."
    );
}

async fn wait_image(
    deployments: &Api<Deployment>,
    digest: &str,
    image_now: &impl Fn(&Deployment) -> Option<String>,
) -> String {
    eventually(WAIT, "the Deployment pinned", || async move {
        let d = deployments.get("web").await.map_err(|e| e.to_string())?;
        let image = image_now(&d).unwrap_or_default();
        if image.ends_with(digest) { Ok(image) } else { Err(image) }
    })
    .await
}
