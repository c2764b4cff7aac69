//! A test scenario: a registry, a Registry object for it, and berth scoped to the test's own
//! namespace, with helpers to declare Repositories, push images and wait for status.

use std::time::Duration;

use berth::api::{Registry, Repository};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use super::{
    OciLayout, RegistryOptions, TestNamespace, TestRegistry,
    berth::Berth,
    control_plane, eventually, free_port,
    registry::NotificationsConfig,
    skopeo::{Creds, Skopeo, describe},
};

pub const WAIT: Duration = Duration::from_secs(60);

/// Sets a Registry object's `spec.aliases` (the names nodes pull it by) and waits until berth has
/// reconciled that generation, so every controller's view of the Registry has them.
pub async fn set_aliases(client: &kube::Client, name: &str, aliases: &[String]) {
    patch_registry_spec(client, name, json!({"aliases": aliases})).await;
}

/// Merges `spec` into a Registry object's spec and waits until berth has reconciled that
/// generation, so every controller's view of the Registry has it.
pub async fn patch_registry_spec(client: &kube::Client, name: &str, spec: Value) {
    let api = Api::<Registry>::all(client.clone());
    let patch = json!({"spec": spec});
    let generation = api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap().metadata.generation;
    eventually(WAIT, &format!("Registry {name} reconciled with {spec}"), || {
        let api = api.clone();
        async move {
            let r = api.get(name).await.map_err(|e| e.to_string())?;
            let observed = r.status.as_ref().and_then(|s| s.observed_generation);
            if observed == generation { Ok(()) } else { Err(format!("observed {observed:?} of {generation:?}")) }
        }
    })
    .await;
}

pub struct Env {
    pub ns: TestNamespace,
    pub registry: TestRegistry,
    pub berth: Berth,
    /// Name of the Registry object (cluster-scoped, unique per test).
    pub name: String,
    pub token: String,
    pub skopeo: Skopeo,
    pub layout: OciLayout,
}

impl Env {
    /// A registry, a Registry object for it, and berth scoped to this test. `events` points the
    /// registry's notifications at berth; `poll` is berth's Repository poll interval.
    pub async fn new(test: &str, events: bool, poll: &str) -> Env {
        Self::with_args(test, events, &["--repository-poll-interval", poll]).await
    }

    /// Like `new`, with berth's arguments given whole (`{ns}` stands for the test's namespace).
    pub async fn with_args(test: &str, events: bool, args: &[&str]) -> Env {
        Self::with_registry(test, events, args, false).await
    }

    /// Like `with_args`, on Distribution 3 when `distribution3`.
    pub async fn with_registry(test: &str, events: bool, args: &[&str], distribution3: bool) -> Env {
        let cp = control_plane().await;
        cp.install_crds().await;
        let ns = cp.namespace(test).await;
        let port = free_port();
        let name = ns.name.clone();
        let token = format!("events-token-{}", super::unique_name("t"));
        let events_url = format!("http://127.0.0.1:{port}/events/registry/{name}");
        let registry = TestRegistry::start_with(RegistryOptions {
            notifications: events.then(|| NotificationsConfig { url: events_url, token: token.clone() }),
            distribution3,
            ..Default::default()
        })
        .await;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "registry-events"},
            "stringData": {"token": token},
        }))
        .unwrap();
        Api::<Secret>::namespaced(ns.client.clone(), &ns.name).create(&PostParams::default(), &secret).await.unwrap();
        let reg: Registry = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": name, "labels": {"berth.dev/test": ns.name}},
            "spec": {
                "url": registry.url(),
                "checkInterval": "1s",
                "notifications": {"secretRef": {"name": "registry-events", "namespace": ns.name, "key": "token"}},
            },
        }))
        .unwrap();
        Api::<Registry>::all(ns.client.clone()).create(&PostParams::default(), &reg).await.unwrap();
        let args: Vec<String> = args.iter().map(|a| a.replace("{ns}", &ns.name)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let berth = Berth::start(cp, port, &ns.name, &args).await;
        Env { ns, registry, berth, name, token, skopeo: Skopeo::default(), layout: OciLayout::default() }
    }

    /// `localhost:<port>`: another name of the test registry (`127.0.0.1:<port>`), as a node
    /// port or an Ingress host is in a real cluster.
    pub fn alias(&self) -> String {
        self.registry.host.replace("127.0.0.1", "localhost")
    }

    pub async fn set_aliases(&self, aliases: &[String]) {
        set_aliases(&self.ns.client, &self.name, aliases).await;
    }

    pub fn repos(&self) -> Api<Repository> {
        Api::namespaced(self.ns.client.clone(), &self.ns.name)
    }

    pub async fn create_repository(&self, name: &str, spec: Value) {
        let mut spec = spec;
        spec["registryRef"] = json!({"name": self.name});
        let repo: Repository = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Repository",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.repos().create(&PostParams::default(), &repo).await.unwrap();
    }

    /// Waits until the Repository's status satisfies `check` (which explains itself on failure).
    pub async fn wait_repo(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_status(&self.repos(), name, &format!("{name}: {what}"), check).await
    }

    /// Waits until the Repository object is gone (its finalizer done or released).
    pub async fn wait_repo_gone(&self, name: &str) {
        let repos = self.repos();
        eventually(WAIT, &format!("{name} is gone"), || {
            let repos = repos.clone();
            async move {
                match repos.get_opt(name).await.map_err(|e| e.to_string())? {
                    None => Ok(()),
                    Some(r) => Err(format!("still there: {:?}", r.status)),
                }
            }
        })
        .await
    }

    /// Pushes an image with content `seed` as `path:tag`; returns its digest.
    pub async fn push(&mut self, path: &str, tag: &str, seed: &str) -> String {
        let d = self.layout.add_image(tag, seed);
        let dest = format!("{}:{tag}", self.registry.image(path));
        let out = self.skopeo.push(self.layout.path(), tag, &dest, &Creds::Anonymous, false).await;
        assert!(out.status.success(), "push {dest}: {}", describe(&out));
        d.digest
    }

    /// berth's Events about one object of the test's namespace: (type, reason, note).
    pub async fn events_for(&self, name: &str) -> Vec<(String, String, String)> {
        use k8s_openapi::api::core::v1::Event;
        let events =
            Api::<Event>::namespaced(self.ns.client.clone(), &self.ns.name).list(&Default::default()).await.unwrap();
        events
            .items
            .into_iter()
            .filter(|e| {
                e.involved_object.name.as_deref() == Some(name) && e.reporting_component.as_deref() == Some("berth")
            })
            .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }

    pub async fn tags(&self, path: &str) -> Vec<String> {
        self.skopeo.list_tags(&self.registry.image(path), &Creds::Anonymous).await.unwrap_or_default()
    }
}

/// Waits until the status of object `name` satisfies `check`; returns that status (`null`
/// while it has none).
pub async fn wait_status<K>(api: &Api<K>, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    eventually(WAIT, what, || {
        let api = api.clone();
        let check = &check;
        async move {
            let object = api.get(name).await.map_err(|e| e.to_string())?;
            let status = serde_json::to_value(&object).unwrap()["status"].take();
            if check(&status) { Ok(status) } else { Err(status.to_string()) }
        }
    })
    .await
}

pub fn ready(status: &Value) -> Option<(&str, &str)> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| (c["status"].as_str().unwrap_or(""), c["reason"].as_str().unwrap_or("")))
}

pub fn is_ready(status: &Value) -> bool {
    ready(status) == Some(("True", "Reconciled"))
}
