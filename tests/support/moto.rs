//! moto (PyPI `moto[ecr,server]`), the wire-level stand-in for the AWS ECR API: one server per
//! test on a free loopback port, each test in its own 12-digit registry (account) id, plus an
//! AWS SDK client pointed at it that plays the user's own tools (the AWS CLI, a CI job's push).
//!
//! Where moto differs from ECR is listed in the README ("What is checked against moto only").

use std::{path::PathBuf, time::Duration};

use aws_sdk_ecr::{
    Client,
    config::{BehaviorVersion, Credentials, Region},
    types::ImageIdentifier,
};

use berth::api::Registry;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use super::{TestNamespace, control_plane, free_port, process::Server};

pub const REGION: &str = "us-east-1";

pub struct Moto {
    pub port: u16,
    _server: Server,
    _dir: tempfile::TempDir,
}

/// Where moto_server is: `BERTH_MOTO_BIN_DIR` (tests/tools/prepare.sh sets it), else PATH.
fn binary() -> PathBuf {
    match std::env::var_os("BERTH_MOTO_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join("moto_server"),
        None => PathBuf::from("moto_server"),
    }
}

impl Moto {
    pub async fn start() -> Moto {
        Self::start_with(false).await
    }

    /// `enforce_auth`: moto checks credentials (it knows none, so every call is refused).
    pub async fn start_with(enforce_auth: bool) -> Moto {
        let port = free_port();
        let dir = tempfile::Builder::new().prefix("berth-moto-").tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let mut args = vec![
            format!("INITIAL_NO_AUTH_ACTION_COUNT={}", if enforce_auth { "0" } else { "-1" }),
            binary().display().to_string(),
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        if !enforce_auth {
            args.remove(0);
        }
        let server = Server::start("moto", std::path::Path::new("/usr/bin/env"), &args, &log);
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("http://127.0.0.1:{port}/moto-api/")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server ({}) not up after 60 s; set BERTH_MOTO_BIN_DIR (tests/tools/install-moto.sh):\n{}",
                binary().display(),
                super::process::log_tail(&log, 30)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Moto { port, _server: server, _dir: dir }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The user's own ECR client.
    pub async fn client(&self) -> Client {
        let conf = aws_sdk_ecr::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build();
        Client::from_conf(conf)
    }
}

/// A fresh 12-digit account id for one test: moto keeps each registry id's repositories apart.
pub fn registry_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:06}{:06}", std::process::id() % 1_000_000, n)
}

/// `<account>.dkr.ecr.<region>.amazonaws.com`, the registry's host.
pub fn host(registry_id: &str) -> String {
    format!("{registry_id}.dkr.ecr.{REGION}.amazonaws.com")
}

/// An image manifest of its own (distinct by `seed`): its bytes and `sha256:` digest.
pub fn manifest(seed: &str) -> (String, String) {
    use sha2::{Digest, Sha256};
    let hex = |s: &str| format!("sha256:{:x}", Sha256::digest(s.as_bytes()));
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": hex(&format!("config {seed}")), "size": 100},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": hex(&format!("layer {seed}")), "size": 1000}],
    })
    .to_string();
    let digest = hex(&body);
    (body, digest)
}

/// Puts an image (as a CI job's push would) under `tag` (`None`: untagged); returns its digest.
pub async fn put_image(client: &Client, registry_id: &str, repository: &str, tag: Option<&str>, seed: &str) -> String {
    let (body, digest) = manifest(seed);
    client
        .put_image()
        .registry_id(registry_id)
        .repository_name(repository)
        .image_manifest(body)
        .image_manifest_media_type("application/vnd.oci.image.manifest.v1+json")
        .image_digest(&digest)
        .set_image_tag(tag.map(str::to_string))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutImage {repository}:{tag:?}: {}", aws_sdk_ecr::error::DisplayErrorContext(&e)));
    digest
}

/// Every image of a repository: (digest, tags, pushed at unix ms).
pub async fn images(client: &Client, registry_id: &str, repository: &str) -> Vec<(String, Vec<String>, i64)> {
    let out = client
        .describe_images()
        .registry_id(registry_id)
        .repository_name(repository)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DescribeImages {repository}: {}", aws_sdk_ecr::error::DisplayErrorContext(&e)));
    out.image_details()
        .iter()
        .map(|d| {
            (
                d.image_digest().unwrap_or_default().to_string(),
                d.image_tags().to_vec(),
                d.image_pushed_at().and_then(|t| t.to_millis().ok()).unwrap_or(0),
            )
        })
        .collect()
}

pub fn by_digest(digest: &str) -> ImageIdentifier {
    ImageIdentifier::builder().image_digest(digest).build()
}

/// A namespace, moto, a Registry of type ecr pointing at it, and berth.
pub struct EcrEnv {
    pub ns: TestNamespace,
    pub moto: Moto,
    pub berth: super::berth::Berth,
    pub ecr: aws_sdk_ecr::Client,
    /// The Registry object's name.
    pub name: String,
    pub registry_id: String,
}

impl EcrEnv {
    pub async fn new(test: &str, args: &[&str], extra: Value) -> EcrEnv {
        let cp = control_plane().await;
        cp.install_crds().await;
        let ns = cp.namespace(test).await;
        let moto = Moto::start().await;
        let registry_id = registry_id();
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "aws"},
            "stringData": {"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},
        }))
        .unwrap();
        Api::<Secret>::namespaced(ns.client.clone(), &ns.name).create(&PostParams::default(), &secret).await.unwrap();
        let name = ns.name.clone();
        let mut spec = json!({
            "type": "ecr",
            "url": format!("https://{}", host(&registry_id)),
            "ecr": {"endpoint": moto.endpoint()},
            "credentialsSecretRef": {"name": "aws", "namespace": ns.name},
            "checkInterval": "2s",
        });
        // More of the Registry's spec (scanning, pullSecretRoleArn in ecr, ...), merged in.
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                match (spec.get_mut(k), v) {
                    (Some(Value::Object(have)), Value::Object(more)) => have.extend(more.clone()),
                    _ => {
                        spec.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let reg: Registry = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": name, "labels": {"berth.dev/test": ns.name}},
            "spec": spec,
        }))
        .unwrap();
        Api::<Registry>::all(ns.client.clone()).create(&PostParams::default(), &reg).await.unwrap();
        let port = super::free_port();
        let berth = super::berth::Berth::start(cp, port, &ns.name, args).await;
        let ecr = moto.client().await;
        EcrEnv { ns, moto, berth, ecr, name, registry_id }
    }

    pub fn repos(&self) -> Api<berth::api::Repository> {
        Api::namespaced(self.ns.client.clone(), &self.ns.name)
    }

    pub async fn create_repository(&self, name: &str, mut spec: Value) {
        spec["registryRef"] = json!({"name": self.name});
        let repo: berth::api::Repository = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Repository", "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.repos().create(&PostParams::default(), &repo).await.unwrap();
    }

    pub async fn patch_repository(&self, name: &str, patch: Value) {
        self.repos().patch(name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    }

    pub async fn wait_repo(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        super::scenario::wait_status(&self.repos(), name, &format!("{name}: {what}"), check).await
    }

    pub async fn wait_registry(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        super::scenario::wait_status(&Api::<Registry>::all(self.ns.client.clone()), &self.name, what, check).await
    }

    /// The ECR repository as DescribeRepositories shows it, `None` when it does not exist.
    pub async fn describe(&self, path: &str) -> Option<aws_sdk_ecr::types::Repository> {
        match self.ecr.describe_repositories().registry_id(&self.registry_id).repository_names(path).send().await {
            Ok(out) => out.repositories().first().cloned(),
            Err(e) if aws_sdk_ecr::error::ProvideErrorMetadata::code(&e) == Some("RepositoryNotFoundException") => None,
            Err(e) => panic!("DescribeRepositories: {}", aws_sdk_ecr::error::DisplayErrorContext(&e)),
        }
    }

    pub async fn resource_tags(&self, arn: &str) -> std::collections::BTreeMap<String, String> {
        let out = self.ecr.list_tags_for_resource().resource_arn(arn).send().await.unwrap();
        out.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()
    }

    pub async fn events_for(&self, name: &str) -> Vec<(String, String, String)> {
        use k8s_openapi::api::core::v1::Event;
        let events =
            Api::<Event>::namespaced(self.ns.client.clone(), &self.ns.name).list(&Default::default()).await.unwrap();
        events
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }
}
