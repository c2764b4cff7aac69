//! A registry in token mode with berth as its token service: the Registry object, berth, the
//! signing Secret berth creates, and the registry started with the bundle berth published.

use std::{path::PathBuf, time::Duration};

use berth::api::{AccessPolicy, Registry, Repository};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Secret, ServiceAccount},
};
use kube::{Api, api::PostParams};
use serde_json::{Value, json};

use super::{
    OciLayout, RegistryOptions, TestNamespace, TestRegistry,
    berth::Berth,
    control_plane, eventually, free_port,
    registry::TokenAuthConfig,
    scenario::{WAIT, is_ready},
    skopeo::{Creds, Skopeo, describe},
};

pub const SIGNING_SECRET: &str = "berth-token-signing";

/// A registry in token mode with berth as its token service, and berth scoped to the test.
pub struct TokenEnv {
    pub ns: TestNamespace,
    pub registry: TestRegistry,
    pub berth: Berth,
    pub name: String,
    pub service: String,
    pub skopeo: Skopeo,
    pub layout: OciLayout,
    _bundle: tempfile::TempDir,
}

impl TokenEnv {
    pub async fn new(test: &str) -> TokenEnv {
        Self::with_options(test, &[], false).await
    }

    /// With extra `berth run` arguments, and registry events sent to berth when `events`.
    pub async fn with_options(test: &str, extra: &[&str], events: bool) -> TokenEnv {
        let cp = control_plane().await;
        cp.install_crds().await;
        let ns = cp.namespace(test).await;
        let (berth_port, registry_port) = (free_port(), free_port());
        let name = ns.name.clone();
        let service = format!("registry-{name}");
        let mut reg: Registry = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": name, "labels": {"berth.dev/test": ns.name}},
            "spec": {
                "url": format!("http://127.0.0.1:{registry_port}"),
                "checkInterval": "2s",
                "tokenAuth": {
                    "issuer": "berth-test",
                    "service": service,
                    "signingKeySecretRef": {"name": SIGNING_SECRET, "namespace": ns.name},
                },
            },
        }))
        .unwrap();
        let notifications = if events {
            let token = super::unique_name("events-token");
            let secret: Secret = serde_json::from_value(
                json!({"metadata": {"name": "registry-events"}, "stringData": {"token": token}}),
            )
            .unwrap();
            Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
                .create(&PostParams::default(), &secret)
                .await
                .unwrap();
            reg.spec.notifications = Some(berth::api::Notifications {
                secret_ref: berth::api::SecretReference {
                    name: "registry-events".into(),
                    namespace: Some(ns.name.clone()),
                    key: Some("token".into()),
                },
            });
            Some(super::registry::NotificationsConfig {
                url: format!("http://127.0.0.1:{berth_port}/events/registry/{name}"),
                token,
            })
        } else {
            None
        };
        Api::<Registry>::all(ns.client.clone()).create(&PostParams::default(), &reg).await.unwrap();
        let mut args = vec!["--repository-poll-interval", "2s"];
        args.extend_from_slice(extra);
        let berth = Berth::start(cp, berth_port, &ns.name, &args).await;
        // berth creates the signing Secret; the registry trusts the bundle published in it.
        let secrets = Api::<Secret>::namespaced(ns.client.clone(), &ns.name);
        let bundle = eventually(WAIT, "the signing Secret with bundle.pem", || {
            let secrets = secrets.clone();
            async move {
                let s = secrets.get_opt(SIGNING_SECRET).await.map_err(|e| e.to_string())?.ok_or("no Secret yet")?;
                let data = s.data.unwrap_or_default();
                data.get("bundle.pem").map(|b| b.0.clone()).ok_or_else(|| "no bundle.pem".to_string())
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let bundle_path: PathBuf = dir.path().join("bundle.pem");
        std::fs::write(&bundle_path, bundle).unwrap();
        let registry = TestRegistry::start_with(RegistryOptions {
            port: Some(registry_port),
            notifications,
            token_auth: Some(TokenAuthConfig {
                realm: format!("http://127.0.0.1:{berth_port}/token/{name}"),
                service: service.clone(),
                issuer: "berth-test".into(),
                root_cert_bundle: bundle_path,
            }),
            ..Default::default()
        })
        .await;
        TokenEnv {
            ns,
            registry,
            berth,
            name,
            service,
            skopeo: Skopeo::default(),
            layout: OciLayout::default(),
            _bundle: dir,
        }
    }

    /// `localhost:<port>`: another name of the test registry (`127.0.0.1:<port>`).
    pub fn alias(&self) -> String {
        self.registry.host.replace("127.0.0.1", "localhost")
    }

    pub async fn set_aliases(&self, aliases: &[String]) {
        super::scenario::set_aliases(&self.ns.client, &self.name, aliases).await;
    }

    pub async fn repository(&self, name: &str, visibility: &str) {
        let repo: Repository = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Repository",
            "metadata": {"name": name, "labels": {"team": "a"}},
            "spec": {"registryRef": {"name": self.name}, "visibility": visibility},
        }))
        .unwrap();
        let api = Api::<Repository>::namespaced(self.ns.client.clone(), &self.ns.name);
        api.create(&PostParams::default(), &repo).await.unwrap();
        eventually(WAIT, &format!("Repository {name} Ready"), || {
            let api = api.clone();
            async move {
                let r = api.get(name).await.map_err(|e| e.to_string())?;
                let status = serde_json::to_value(&r.status).unwrap();
                if is_ready(&status) { Ok(()) } else { Err(format!("{status}\n{}", self.berth.log_tail())) }
            }
        })
        .await;
    }

    pub async fn policy(&self, name: &str, spec: Value) {
        let p: AccessPolicy = serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        Api::<AccessPolicy>::namespaced(self.ns.client.clone(), &self.ns.name)
            .create(&PostParams::default(), &p)
            .await
            .unwrap();
    }

    /// A ServiceAccount's token, as a CI pod would mount it, as basic credentials.
    pub async fn service_account(&self, name: &str) -> Creds {
        let accounts = Api::<ServiceAccount>::namespaced(self.ns.client.clone(), &self.ns.name);
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        accounts.create(&PostParams::default(), &sa).await.unwrap();
        let request = TokenRequest {
            spec: TokenRequestSpec { audiences: vec![], expiration_seconds: Some(3600), ..Default::default() },
            ..Default::default()
        };
        let issued = accounts.create_token_request(name, &PostParams::default(), &request).await.unwrap();
        Creds::Basic { username: name.into(), password: issued.status.unwrap().token }
    }

    pub fn image(&self, path: &str, tag: &str) -> String {
        format!("{}:{tag}", self.registry.image(&format!("{}/{path}", self.ns.name)))
    }

    pub async fn push(&mut self, path: &str, tag: &str, seed: &str, creds: &Creds) -> Result<String, String> {
        let d = self.layout.add_image(tag, seed);
        let out = self.skopeo.push(self.layout.path(), tag, &self.image(path, tag), creds, false).await;
        if out.status.success() { Ok(d.digest) } else { Err(describe(&out)) }
    }

    /// Pushes, retrying while the grant that allows it reaches the token service.
    pub async fn push_eventually(&mut self, path: &str, tag: &str, seed: &str, creds: &Creds) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match self.push(path, tag, seed, creds).await {
                Ok(digest) => return digest,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("push {path}:{tag} never allowed: {e}\nberth:\n{}", self.berth.log_tail())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    pub async fn pull(&self, path: &str, tag: &str, creds: &Creds) -> Result<(), String> {
        let into = tempfile::tempdir().unwrap();
        let out = self.skopeo.pull(&self.image(path, tag), &into.path().join("image"), creds).await;
        if out.status.success() { Ok(()) } else { Err(describe(&out)) }
    }

    /// A token straight from berth's token endpoint.
    pub async fn token(&self, scope: &str, creds: &Creds) -> reqwest::Response {
        let mut req = reqwest::Client::new()
            .get(format!("{}/token/{}", self.berth.url(), self.name))
            .query(&[("service", self.service.as_str()), ("scope", scope)]);
        if let Creds::Basic { username, password } = creds {
            req = req.basic_auth(username, Some(password));
        }
        req.send().await.unwrap()
    }

    /// What the registry answers to a tags listing with this bearer token.
    pub async fn registry_with(&self, path: &str, token: &str) -> u16 {
        let url = format!("{}/v2/{}/{path}/tags/list", self.registry.url(), self.ns.name);
        reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap().status().as_u16()
    }

    pub async fn pull_secret(&self, name: &str) -> Creds {
        let secrets = Api::<Secret>::namespaced(self.ns.client.clone(), &self.ns.name);
        let host = self.registry.host.clone();
        eventually(WAIT, &format!("pull secret {name}"), || {
            let secrets = secrets.clone();
            let host = host.clone();
            async move {
                let s = secrets.get_opt(name).await.map_err(|e| e.to_string())?.ok_or("no Secret yet")?;
                if s.type_.as_deref() != Some("kubernetes.io/dockerconfigjson") {
                    return Err(format!("type {:?}", s.type_));
                }
                let config =
                    s.data.unwrap_or_default().get(".dockerconfigjson").map(|b| b.0.clone()).ok_or("no data")?;
                let config: Value = serde_json::from_slice(&config).map_err(|e| e.to_string())?;
                let auth = &config["auths"][&host];
                let (u, p) = (auth["username"].as_str(), auth["password"].as_str());
                match (u, p) {
                    (Some(u), Some(p)) => Ok(Creds::Basic { username: u.into(), password: p.into() }),
                    _ => Err(format!("no auth for {host}: {config}")),
                }
            }
        })
        .await
    }
}
