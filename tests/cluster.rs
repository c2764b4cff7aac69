//! berth as users run it: its image (built by `charts/build-image`, no Docker) installed with the
//! Helm chart onto a real node, with the chart's bundled Distribution 3 registry, and every promise
//! that ends at a running pod checked through pods: the kubelet pulls with the pull secrets berth
//! writes (and is refused without them), rollouts start pods on the pushed digest and roll back
//! to the previous one, rotated and revoked credentials, the lifecycle sparing the digest a pod
//! runs, nodes pulling by another name than berth uses, and signing keys rotating while pulls and
//! pushes go on.
//!
//! The tests share one installation and take turns (`turn()`): they run pods on one 2-core node.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{Pod, Secret},
};
use kube::{Api, ResourceExt, api::ListParams};
use serde_json::{Value, json};
use support::{
    NodeCluster, OciLayout, control_plane_with_node, eventually,
    node::{busybox_image, netns::NODE_IP},
    repo_path,
};
use tokio::sync::{Mutex, MutexGuard, OnceCell};

/// Node ports: the registry, and berth's token endpoint (the realm nodes are sent to).
const REGISTRY_PORT: u16 = 30500;
const BERTH_PORT: u16 = 30080;
const WAIT: Duration = Duration::from_secs(180);
/// berth's own pods (not the registry's).
const BERTH_PODS: &str = "app.kubernetes.io/name=berth,app.kubernetes.io/component!=registry";

fn node_host() -> String {
    format!("{NODE_IP}:{REGISTRY_PORT}")
}

/// The chart as installed for this binary.
struct Installed {
    /// The release's namespace.
    ns: String,
    /// The Registry object's name (the release's full name).
    registry: String,
    /// The berth image: reference, size of its layer in bytes.
    berth_image: (String, u64),
    /// From `helm install` to both replicas Ready and the Registry Ready.
    install_took: Duration,
    /// berth's pods' memory 20 s after the install, before any test ran.
    idle_memory: Vec<String>,
}

static INSTALLED: OnceCell<Installed> = OnceCell::const_new();
static TURN: Mutex<()> = Mutex::const_new(());

/// The node and the installed chart, and this test's turn on them; `None` where the machine
/// cannot run a node.
async fn setup() -> Option<(&'static NodeCluster, &'static Installed, MutexGuard<'static, ()>)> {
    let cluster = control_plane_with_node().await?;
    let turn = TURN.lock().await;
    let installed = INSTALLED.get_or_init(|| install(cluster)).await;
    Some((cluster, installed, turn))
}

/// `charts/build-image <what> --out DIR`: the OCI layout and the tag it wrote.
fn build_image(what: &str, dir: &Path) -> String {
    let out = Command::new(repo_path("charts/build-image"))
        .args([what, "--out"])
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running charts/build-image {what}: {e}"));
    assert!(out.status.success(), "charts/build-image {what} failed: {}", String::from_utf8_lossy(&out.stdout));
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or_else(|| panic!("{}/index.json names no tag: {index}", dir.display()))
        .to_string()
}

fn layer_bytes(dir: &Path) -> u64 {
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(digest)).unwrap()).unwrap();
    manifest["layers"].as_array().unwrap().iter().map(|l| l["size"].as_u64().unwrap()).sum()
}

fn kubectl(cluster: &NodeCluster, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = cluster.cp.kubectl();
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running kubectl");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// `kubectl apply -f -` of YAML or JSON; fails the test when kubectl refuses it.
fn apply(cluster: &NodeCluster, ns: &str, manifest: &str) {
    let out = kubectl(cluster, &["apply", "-n", ns, "-f", "-"], Some(manifest));
    assert!(out.status.success(), "kubectl apply failed: {}\n{manifest}", String::from_utf8_lossy(&out.stderr));
}

fn helm() -> PathBuf {
    std::env::var_os("BERTH_HELM").map(PathBuf::from).unwrap_or_else(|| {
        let out = Command::new("bash").arg(repo_path("tests/tools/build-helm.sh")).output().unwrap();
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("helm")
    })
}

async fn install(cluster: &'static NodeCluster) -> Installed {
    let images = cluster.ns.dir.join("images");
    let berth_dir = images.join("berth");
    let registry_dir = images.join("registry");
    let berth_tag = build_image("berth", &berth_dir);
    let registry_tag = build_image("registry", &registry_dir);
    let berth_image = format!("localhost/berth:{berth_tag}");
    cluster.import_image(&berth_dir, &berth_tag, &berth_image);
    cluster.import_image(&registry_dir, &registry_tag, &format!("localhost/berth-registry:{registry_tag}"));
    cluster.allow_http_registry(&node_host());

    let ns = cluster.cp.namespace("berth-system").await;
    let release = "berth";
    // Static provisioning: a hostPath volume on the node for the registry's claim (the node has no
    // storage provisioner). Owned by the registry's user, as a provisioner with fsGroup would.
    let data = cluster.ns.dir.join("var/lib/berth-registry-data");
    std::fs::create_dir_all(&data).unwrap();
    Command::new("chown").arg("1000:1000").arg(&data).status().unwrap();
    apply(
        cluster,
        &ns.name,
        &json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": format!("{}-registry", ns.name)},
            "spec": {
                "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": "/var/lib/berth-registry-data", "type": "Directory"},
                "claimRef": {"namespace": ns.name, "name": format!("{release}-registry")},
            },
        })
        .to_string(),
    );
    let registry = release.to_string();
    let values = json!({
        "image": {"repository": "localhost/berth", "tag": berth_tag},
        "logFormat": "text",
        "logLevel": "info,berth=debug",
        "service": {"type": "NodePort", "nodePort": BERTH_PORT},
        "registry": {
            "enabled": true,
            "image": {"repository": "localhost/berth-registry", "tag": registry_tag},
            "service": {"type": "NodePort", "nodePort": REGISTRY_PORT},
            // One node: the old and the new pod share the volume, and a roll never leaves the
            // registry without a Ready pod.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            // berth reaches the registry at its Service name (the chart's default url); nodes,
            // which do not resolve cluster names, pull by the node port.
            "aliases": [node_host()],
            "auth": {
                "realm": format!("http://{NODE_IP}:{BERTH_PORT}/token/{registry}"),
                "tokenLifetime": "20s",
                // Short key periods: during this binary's run berth adds keys, rolls the registry
                // to the new bundle and signs with them.
                "keyRotation": {"keyLifetime": "4m", "renewBefore": "150s", "activationDelay": "60s"},
            },
        },
    });
    let values_file = cluster.ns.dir.join("values.json");
    std::fs::write(&values_file, values.to_string()).unwrap();
    let started = Instant::now();
    let out = Command::new(helm())
        .args(["install", release, &repo_path("charts/berth").display().to_string(), "-n", &ns.name, "-f"])
        .arg(&values_file)
        .args(["--wait", "--timeout", "5m", "--kubeconfig"])
        .arg(&cluster.cp.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install failed: {}{}\nkubelet: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        cluster.log_tail("kubelet", 3000)
    );
    wait_registry_ready(cluster, &registry).await;
    let install_took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let mut installed = Installed {
        ns: ns.name,
        registry,
        berth_image: (berth_image, layer_bytes(&berth_dir)),
        install_took,
        idle_memory: Vec::new(),
    };
    installed.idle_memory = berth_memory(cluster, &installed).await;
    installed
}

async fn wait_registry_ready(cluster: &NodeCluster, name: &str) {
    let client = cluster.cp.client().await;
    let api = Api::<berth::api::Registry>::all(client);
    eventually(WAIT, &format!("Registry {name} Ready"), || async {
        let r = api.get(name).await.map_err(|e| e.to_string())?;
        let s = serde_json::to_value(&r.status).unwrap();
        let ready =
            s["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Image IDs (`repo@sha256:...`) the pods matching `selector` run, when all `n` of them are
/// Ready and no other pod of the selector is left.
async fn running_digests(pods: &Api<Pod>, selector: &str) -> Result<Vec<String>, String> {
    let list = pods.list(&ListParams::default().labels(selector)).await.map_err(|e| e.to_string())?;
    if list.items.is_empty() {
        return Err(format!("no pod matches {selector}"));
    }
    let mut ids = Vec::new();
    for p in &list.items {
        if p.metadata.deletion_timestamp.is_some() || !pod_ready(p) {
            return Err(format!("pod {} not Ready (or terminating)", p.name_any()));
        }
        for c in p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).into_iter().flatten() {
            ids.push(c.image_id.clone());
        }
    }
    Ok(ids)
}

/// Ok when exactly `n` Ready pods match `selector`, all running `want`.
async fn all_on(pods: &Api<Pod>, selector: &str, n: usize, want: &str) -> Result<(), String> {
    let ids = running_digests(pods, selector).await?;
    if ids.len() == n && ids.iter().all(|id| digest_of(id) == want) { Ok(()) } else { Err(format!("{ids:?}")) }
}

fn digest_of(image_id: &str) -> &str {
    image_id.rsplit_once('@').map_or(image_id, |(_, d)| d)
}

/// Pushes the busybox image tagged `tag` in `layout` to `repo:tag` on the registry, as a node
/// client does (by the node port), with `user:password`. Returns skopeo's output.
fn push(cluster: &NodeCluster, layout: &Path, tag: &str, repo: &str, creds: &str) -> Output {
    cluster
        .skopeo()
        .args(["copy", "-q", "--retry-times", "0", "--dest-tls-verify=false", "--dest-creds", creds])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{}/{repo}:{tag}", node_host()))
        .output()
        .unwrap()
}

fn must(out: Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A namespace for one scenario, with a robot that may push to its repositories.
struct Team {
    name: String,
    client: kube::Client,
    robot: String,
}

async fn team(cluster: &NodeCluster, installed: &Installed, name: &str, repositories: &[(&str, &str)]) -> Team {
    let ns = cluster.cp.namespace(name).await;
    for (repo, visibility) in repositories {
        apply(
            cluster,
            &ns.name,
            &json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Repository", "metadata": {"name": repo},
                    "spec": {"registryRef": {"name": installed.registry}, "visibility": visibility}})
            .to_string(),
        );
    }
    let names: Vec<&str> = repositories.iter().map(|(r, _)| *r).collect();
    apply(
        cluster,
        &ns.name,
        &json!({"apiVersion": "berth.dev/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "ci"},
                "spec": {"repositories": {"names": names},
                         "grants": [{"subjects": [{"kind": "Robot", "name": "ci"}], "actions": ["pull", "push"]}]}})
        .to_string(),
    );
    let secrets = Api::<Secret>::namespaced(ns.client.clone(), &ns.name);
    let robot = eventually(WAIT, "the robot's Secret", || async {
        let s = secrets.get("berth-robot-ci").await.map_err(|e| e.to_string())?;
        let data = s.data.unwrap_or_default();
        let get = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(&v.0).into_owned());
        match (get("username"), get("password")) {
            (Some(u), Some(p)) => Ok(format!("{u}:{p}")),
            _ => Err(format!("{:?}", data.keys().collect::<Vec<_>>())),
        }
    })
    .await;
    let team = Team { name: ns.name, client: ns.client, robot };
    // Both replicas serve tokens (the Service picks one per connection): wait until a few in a
    // row are issued for the robot, so the first push does not race berth learning of it.
    let deadline = Instant::now() + WAIT;
    let mut in_a_row = 0;
    while in_a_row < 4 {
        match token_header(cluster, installed, &team.robot).await {
            Ok(_) => in_a_row += 1,
            Err(e) => {
                assert!(Instant::now() < deadline, "no tokens for the robot: {e}");
                in_a_row = 0;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    team
}

fn app_deployment(name: &str, image: &str, replicas: u32, annotations: Value, extra_pod: Value) -> String {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": image}],
                },
            },
        },
    });
    if let Value::Object(extra) = extra_pod {
        for (k, v) in extra {
            d["spec"]["template"]["spec"][k] = v;
        }
    }
    d.to_string()
}

/// Whether a pull failure is the registry's refusal (a 401 or 403, or the token service's
/// `insufficient_scope` as containerd words it), not a network or a missing-image error.
fn refused_by_registry(message: &str) -> bool {
    ["401 Unauthorized", "403 Forbidden", "insufficient_scope", "pull access denied"]
        .iter()
        .any(|m| message.contains(m))
        && !message.contains("not found")
}

async fn waiting_reason(pods: &Api<Pod>, selector: &str) -> Result<String, String> {
    let list = pods.list(&ListParams::default().labels(selector)).await.map_err(|e| e.to_string())?;
    for p in &list.items {
        for c in p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).into_iter().flatten() {
            if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
                let reason = w.reason.clone().unwrap_or_default();
                if reason == "ErrImagePull" || reason == "ImagePullBackOff" {
                    return Ok(format!("{reason}: {}", w.message.clone().unwrap_or_default()));
                }
            }
        }
    }
    Err(format!("{} pods, none failing to pull", list.items.len()))
}

#[tokio::test]
async fn the_chart_runs_berth_and_its_registry_on_the_node() {
    let Some((cluster, installed, _turn)) = setup().await else { return };
    let client = cluster.cp.client().await;
    let pods = Api::<Pod>::namespaced(client.clone(), &installed.ns);
    let berth = pods.list(&ListParams::default().labels(BERTH_PODS)).await.unwrap();
    let names: Vec<String> = berth.items.iter().map(|p| p.name_any()).collect();
    assert_eq!(berth.items.len(), 2, "two berth replicas: {names:?}");
    assert!(berth.items.iter().all(pod_ready), "both replicas Ready through their probes");
    for p in &berth.items {
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some(installed.berth_image.0.as_str()));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
    }
    let lease = Api::<Lease>::namespaced(client.clone(), &installed.ns).get("berth").await.unwrap();
    let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    assert!(names.iter().any(|n| holder.starts_with(n.as_str())), "the Lease holder {holder} is one of {names:?}");
    // Exactly one replica says it leads (`berth_leader`), read from each pod's /metrics.
    let mut leading = Vec::new();
    for p in &berth.items {
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
        let port = cluster.ns.forward(format!("{ip}:8080").parse().unwrap());
        let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap();
        let line = metrics.lines().find(|l| l.starts_with("berth_leader ")).unwrap_or_default().to_string();
        leading.push(line.ends_with(" 1"));
    }
    assert_eq!(leading.iter().filter(|l| **l).count(), 1, "one leader: {leading:?}");
    let registry = pods.list(&ListParams::default().labels("app.kubernetes.io/component=registry")).await.unwrap();
    assert!(registry.items.iter().any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")));
    eprintln!(
        "figures: node start {:.1}s; helm install to Ready {:.1}s; berth image layer {:.1} MiB",
        cluster.started_in.as_secs_f64(),
        installed.install_took.as_secs_f64(),
        installed.berth_image.1 as f64 / 1048576.0
    );
    eprintln!("figures: berth pods idle, 20 s after the install: {:?}", installed.idle_memory);
    eprintln!("figures: berth pods now: {:?}", berth_memory(cluster, installed).await);
    assert_berth_logs_clean(cluster, installed).await;
}

#[tokio::test]
async fn nodes_pull_private_images_with_the_pull_secrets_berth_writes_and_public_ones_without() {
    let Some((cluster, installed, _turn)) = setup().await else { return };
    let team = team(cluster, installed, "pulls", &[("private", "Private"), ("public", "Public")]).await;
    let mut layout = OciLayout::default();
    busybox_image(&mut layout, "v1", "v1", &["/bin/sh", "-c", "cat /etc/version; exec sleep 3600"]);
    must(push(cluster, layout.path(), "v1", &format!("{}/private", team.name), &team.robot), "push private");
    must(push(cluster, layout.path(), "v1", &format!("{}/public", team.name), &team.robot), "push public");
    let private = format!("{}/{}/private:v1", node_host(), team.name);
    let public = format!("{}/{}/public:v1", node_host(), team.name);

    // The grant: pull for every ServiceAccount of this namespace, and the pull secret berth writes
    // and attaches to its default ServiceAccount.
    apply(
        cluster,
        &team.name,
        &json!({"apiVersion": "berth.dev/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "pull"},
                "spec": {"repositories": {"names": ["private"]},
                         "grants": [{"subjects": [{"kind": "Namespace", "name": team.name}], "actions": ["pull"]}],
                         "pullSecrets": {"namespaces": [team.name], "serviceAccounts": ["default"]}}})
        .to_string(),
    );
    wait_pull_secret_attached(&team).await;
    let pods = Api::<Pod>::namespaced(team.client.clone(), &team.name);
    apply(cluster, &team.name, &app_deployment("granted", &private, 1, json!({}), json!({})));
    let ids =
        eventually(WAIT, "the granted Deployment runs the private image", || running_digests(&pods, "app=granted"))
            .await;
    assert_eq!(ids.len(), 1);
    // The pull secret has a key for each name of the registry: the Service name berth uses and
    // the node port nodes pull by.
    let secret = Api::<Secret>::namespaced(team.client.clone(), &team.name).get("berth-pull").await.unwrap();
    let config: Value = serde_json::from_slice(&secret.data.unwrap()[".dockerconfigjson"].0).unwrap();
    let keys: Vec<&String> = config["auths"].as_object().unwrap().keys().collect();
    assert_eq!(keys, [&node_host(), &format!("berth-registry.{}.svc:5000", installed.ns)], "{keys:?}");
    // What breaks when nodes pull by a name the Registry does not list (here the same node port
    // on the node's loopback): the kubelet picks credentials by the image's host, has none for
    // it, and the registry refuses the anonymous pull. That is what `aliases` is for.
    let unlisted_host = format!("127.0.0.1:{REGISTRY_PORT}");
    cluster.allow_http_registry(&unlisted_host);
    let unlisted = format!("{unlisted_host}/{}/private:v1", team.name);
    apply(cluster, &team.name, &app_deployment("unlisted", &unlisted, 1, json!({}), json!({})));
    let refused =
        eventually(WAIT, "an unlisted name gets no credentials", || waiting_reason(&pods, "app=unlisted")).await;
    assert!(refused_by_registry(&refused), "{refused}");

    // The same Deployment where nothing grants pull: the registry refuses the node.
    let other = cluster.cp.namespace("no-grant").await;
    let other_pods = Api::<Pod>::namespaced(other.client.clone(), &other.name);
    apply(cluster, &other.name, &app_deployment("granted", &private, 1, json!({}), json!({})));
    let refused =
        eventually(WAIT, "the node is refused the private image", || waiting_reason(&other_pods, "app=granted")).await;
    assert!(refused_by_registry(&refused), "{refused}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(running_digests(&other_pods, "app=granted").await.map_or(true, |ids| ids.is_empty()), "never runs");

    // A Public repository: no secret at all.
    apply(cluster, &other.name, &app_deployment("public", &public, 1, json!({}), json!({})));
    eventually(WAIT, "the public image runs without a secret", || running_digests(&other_pods, "app=public")).await;
    assert_berth_logs_clean(cluster, installed).await;
}

/// Waits until berth attached its pull secret to the namespace's default ServiceAccount: pods
/// get a ServiceAccount's pull secrets when they are created, not later.
async fn wait_pull_secret_attached(team: &Team) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sas = Api::<ServiceAccount>::namespaced(team.client.clone(), &team.name);
    eventually(WAIT, "berth-pull attached to the default ServiceAccount", || async {
        let sa = sas.get("default").await.map_err(|e| e.to_string())?;
        let names: Vec<String> = sa.image_pull_secrets.unwrap_or_default().into_iter().map(|r| r.name).collect();
        if names.iter().any(|n| n == "berth-pull") { Ok(()) } else { Err(format!("{names:?}")) }
    })
    .await;
}

/// A team whose default ServiceAccount pulls its repositories through berth's pull secret.
async fn pulling_team(cluster: &NodeCluster, installed: &Installed, name: &str) -> Team {
    let team = team(cluster, installed, name, &[("app", "Private")]).await;
    apply(
        cluster,
        &team.name,
        &json!({"apiVersion": "berth.dev/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "pull"},
                "spec": {"repositories": {"names": ["app"]},
                         "grants": [{"subjects": [{"kind": "Namespace", "name": team.name}], "actions": ["pull"]}],
                         "pullSecrets": {"namespaces": [team.name], "serviceAccounts": ["default"]}}})
        .to_string(),
    );
    wait_pull_secret_attached(&team).await;
    team
}

/// The memory of every berth pod, one line each.
async fn berth_memory(cluster: &NodeCluster, installed: &Installed) -> Vec<String> {
    let pods = Api::<Pod>::namespaced(cluster.cp.client().await, &installed.ns)
        .list(&ListParams::default().labels(BERTH_PODS))
        .await
        .unwrap();
    pods.items
        .iter()
        .map(|p| {
            format!("{}: {}", p.name_any(), cluster.pod_memory(p.metadata.uid.as_deref().unwrap()).unwrap_or_default())
        })
        .collect()
}

/// berth's logs from its pods hold no `forbidden` (the chart's RBAC is enough for everything
/// the scenario made berth do) and no panic.
async fn assert_berth_logs_clean(cluster: &NodeCluster, installed: &Installed) {
    let pods = Api::<Pod>::namespaced(cluster.cp.client().await, &installed.ns);
    for p in pods.list(&ListParams::default().labels(BERTH_PODS)).await.unwrap().items {
        let logs = pods.logs(&p.name_any(), &Default::default()).await.unwrap();
        let bad: Vec<&str> =
            logs.lines().filter(|l| l.to_lowercase().contains("forbidden") || l.contains("panicked")).take(5).collect();
        assert!(bad.is_empty(), "berth pod {} logged: {bad:#?}", p.name_any());
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

#[tokio::test]
async fn a_push_to_a_watched_tag_rolls_every_pod_onto_the_pushed_digest() {
    let Some((cluster, installed, _turn)) = setup().await else { return };
    let team = pulling_team(cluster, installed, "rollout").await;
    kubectl(cluster, &["label", "namespace", &team.name, "berth.dev/rollouts=enabled"], None);
    let repo = format!("{}/app", team.name);
    let image = format!("{}/{repo}:stable", node_host());
    let mut layout = OciLayout::default();
    busybox_image(&mut layout, "stable", "v0", &["/bin/sh", "-c", "cat /etc/version; exec sleep 3600"]);
    must(push(cluster, layout.path(), "stable", &repo, &team.robot), "push v0");
    apply(
        cluster,
        &team.name,
        &app_deployment(
            "web",
            &image,
            3,
            json!({"berth.dev/rollout": "digest", "berth.dev/poll-interval": "1h"}),
            json!({}),
        ),
    );
    let pods = Api::<Pod>::namespaced(team.client.clone(), &team.name);
    eventually(WAIT, "three pods of the first digest", || async {
        let ids = running_digests(&pods, "app=web").await?;
        if ids.len() == 3 { Ok(()) } else { Err(format!("{ids:?}")) }
    })
    .await;

    // Ten pushes of a new digest to the watched tag: each one is heard (registry event), pinned
    // by berth, and rolled by the Deployment controller until every pod runs it.
    let mut took = Vec::new();
    for i in 1..=10 {
        let mut layout = OciLayout::default();
        let pushed = busybox_image(
            &mut layout,
            "stable",
            &format!("v{i}"),
            &["/bin/sh", "-c", "cat /etc/version; exec sleep 3600"],
        );
        let started = Instant::now();
        must(push(cluster, layout.path(), "stable", &repo, &team.robot), "push");
        let pods = &pods;
        let want = &pushed.digest;
        eventually(WAIT, &format!("push {i}: every pod runs {want}"), || async move {
            all_on(pods, "app=web", 3, want).await
        })
        .await;
        took.push(started.elapsed().as_secs_f64());
    }
    let deployments = Api::<Deployment>::namespaced(team.client.clone(), &team.name);
    let web = deployments.get("web").await.unwrap();
    let spec_image = web.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap();
    assert!(
        spec_image.starts_with(&format!("{image}@sha256:")),
        "pinned by digest under the name the node pulls by: {spec_image}"
    );

    // The reference, measured the same way in the same run: the same push followed at once by
    // `kubectl set image` to its digest, with berth not following the Deployment. The difference
    // is what berth adds (hearing the push, checking it, pinning).
    kubectl(cluster, &["annotate", "-n", &team.name, "deployment", "web", "berth.dev/rollout-"], None);
    let mut reference = Vec::new();
    for i in 1..=5 {
        let tag = format!("ref-{i}");
        let mut layout = OciLayout::default();
        let pushed = busybox_image(&mut layout, &tag, &tag, &["/bin/sh", "-c", "cat /etc/version; exec sleep 3600"]);
        let started = Instant::now();
        must(push(cluster, layout.path(), &tag, &repo, &team.robot), "push");
        let pinned = format!("{}/{repo}:{tag}@{}", node_host(), pushed.digest);
        let out =
            kubectl(cluster, &["set", "image", "-n", &team.name, "deployment/web", &format!("app={pinned}")], None);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let pods = &pods;
        let want = &pushed.digest;
        eventually(WAIT, &format!("reference {i}: every pod runs {want}"), || async move {
            all_on(pods, "app=web", 3, want).await
        })
        .await;
        reference.push(started.elapsed().as_secs_f64());
    }
    eprintln!(
        "figures: reference, push then kubectl set image by hand: median {:.1}s over {} (min {:.1}s, max {:.1}s)",
        median(reference.clone()),
        reference.len(),
        reference.iter().cloned().fold(f64::MAX, f64::min),
        reference.iter().cloned().fold(0.0, f64::max)
    );
    eprintln!(
        "figures: push -> all 3 pods on the new digest: median {:.1}s over {} pushes (min {:.1}s, max {:.1}s)",
        median(took.clone()),
        took.len(),
        took.iter().cloned().fold(f64::MAX, f64::min),
        took.iter().cloned().fold(0.0, f64::max)
    );
    eprintln!("figures: berth pods after the pushes: {:?}", berth_memory(cluster, installed).await);
    assert_berth_logs_clean(cluster, installed).await;
}

#[tokio::test]
async fn a_digest_whose_pods_never_become_ready_is_rolled_back_and_the_pods_run_the_previous_one() {
    let Some((cluster, installed, _turn)) = setup().await else { return };
    let team = pulling_team(cluster, installed, "rollback").await;
    kubectl(cluster, &["label", "namespace", &team.name, "berth.dev/rollouts=enabled"], None);
    let repo = format!("{}/app", team.name);
    let image = format!("{}/{repo}:stable", node_host());
    // Ready once it wrote /tmp/ready: the good image does, the bad one never.
    let mut layout = OciLayout::default();
    let good = busybox_image(&mut layout, "good", "good", &["/bin/sh", "-c", "echo ok > /tmp/ready; exec sleep 3600"]);
    let bad = busybox_image(&mut layout, "bad", "bad", &["/bin/sh", "-c", "exec sleep 3600"]);
    let copy = |from: &str| {
        cluster
            .skopeo()
            .args(["copy", "-q", "--dest-tls-verify=false", "--dest-creds", &team.robot])
            .arg(format!("oci:{}:{from}", layout.path().display()))
            .arg(format!("docker://{}/{repo}:stable", node_host()))
            .output()
            .unwrap()
    };
    must(copy("good"), "push good");
    let probe = json!({"containers": [{"name": "app", "image": image,
        "readinessProbe": {"exec": {"command": ["/bin/cat", "/tmp/ready"]}, "periodSeconds": 1}}]});
    let mut d: Value = serde_json::from_str(&app_deployment(
        "web",
        &image,
        2,
        json!({"berth.dev/rollout": "digest", "berth.dev/rollback": "auto", "berth.dev/poll-interval": "1h"}),
        probe,
    ))
    .unwrap();
    d["spec"]["progressDeadlineSeconds"] = json!(15);
    d["spec"]["strategy"] = json!({"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}});
    apply(cluster, &team.name, &d.to_string());
    let pods = Api::<Pod>::namespaced(team.client.clone(), &team.name);
    let on = |want: String| {
        let pods = &pods;
        move || {
            let want = want.clone();
            async move { all_on(pods, "app=web", 2, &want).await }
        }
    };
    eventually(WAIT, "two pods on the good digest", on(good.digest.clone())).await;

    must(copy("bad"), "push bad");
    let deployments = Api::<Deployment>::namespaced(team.client.clone(), &team.name);
    let deployments = &deployments;
    let bad_digest = bad.digest.clone();
    eventually(WAIT, "berth rolls back and marks the digest bad", || {
        let bad_digest = bad_digest.clone();
        async move {
            let d = deployments.get("web").await.map_err(|e| e.to_string())?;
            let bad = d.annotations().get("berth.dev/bad-digests").cloned().unwrap_or_default();
            if bad.contains(&bad_digest) { Ok(()) } else { Err(format!("{:?}", d.annotations())) }
        }
    })
    .await;
    eventually(WAIT, "the pods run the good digest again, and only it", on(good.digest.clone())).await;
    let web = deployments.get("web").await.unwrap();
    let spec_image = web.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap();
    assert_eq!(spec_image, format!("{image}@{}", good.digest));
    assert_berth_logs_clean(cluster, installed).await;
}

#[tokio::test]
async fn rotated_pull_secrets_keep_pulling_and_revoked_ones_stop() {
    let Some((cluster, installed, _turn)) = setup().await else { return };
    let team = pulling_team(cluster, installed, "rotation").await;
    let repo = format!("{}/app", team.name);
    let image = format!("{}/{repo}:v1", node_host());
    let mut layout = OciLayout::default();
    busybox_image(&mut layout, "v1", "v1", &["/bin/sh", "-c", "exec sleep 3600"]);
    must(push(cluster, layout.path(), "v1", &repo, &team.robot), "push");
    let secrets = Api::<Secret>::namespaced(team.client.clone(), &team.name);
    let pods = Api::<Pod>::namespaced(team.client.clone(), &team.name);
    let config =
        |s: Secret| s.data.unwrap_or_default().get(".dockerconfigjson").map(|b| b.0.clone()).unwrap_or_default();
    let first = config(secrets.get("berth-pull").await.unwrap());
    // Pods pull every time they start (imagePullPolicy Always): each start is a check of the
    // credentials the pod has now.
    let pod = |name: &str, secret: Option<&str>| {
        let mut spec = json!({"terminationGracePeriodSeconds": 1, "restartPolicy": "Never",
            "containers": [{"name": "app", "image": image, "imagePullPolicy": "Always"}]});
        if let Some(secret) = secret {
            spec["imagePullSecrets"] = json!([{"name": secret}]);
            spec["automountServiceAccountToken"] = json!(false);
            spec["serviceAccountName"] = json!("none");
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}}, "spec": spec})
            .to_string()
    };
    let runs = |name: &'static str| {
        let pods = &pods;
        move || async move {
            let ids = running_digests(pods, &format!("app={name}")).await?;
            if ids.len() == 1 { Ok(()) } else { Err(format!("{ids:?}")) }
        }
    };
    apply(cluster, &team.name, &pod("before", None));
    eventually(WAIT, "a pod pulls with the first password", runs("before")).await;
    // Keep the first credentials as a leaked copy would be kept.
    let leaked: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "leaked"}, "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": k8s_openapi::ByteString(first.clone())}}))
    .unwrap();
    secrets.create(&Default::default(), &leaked).await.unwrap();
    kubectl(cluster, &["create", "serviceaccount", "none", "-n", &team.name], None);

    kubectl(cluster, &["annotate", "-n", &team.name, "accesspolicy", "pull", "berth.dev/rotate=now-1"], None);
    let secrets_ref = &secrets;
    let first_ref = &first;
    eventually(WAIT, "the pull secret rotated", || async move {
        let now = config(secrets_ref.get("berth-pull").await.map_err(|e| e.to_string())?);
        if &now != first_ref { Ok(()) } else { Err("unchanged".to_string()) }
    })
    .await;
    apply(cluster, &team.name, &pod("after-rotation", None));
    eventually(WAIT, "a pod created after the rotation pulls", runs("after-rotation")).await;
    apply(cluster, &team.name, &pod("old-before-revoke", Some("leaked")));
    eventually(WAIT, "until revoked, the previous password still pulls", runs("old-before-revoke")).await;

    kubectl(cluster, &["annotate", "-n", &team.name, "accesspolicy", "pull", "berth.dev/revoke=leak-1"], None);
    let rotated = config(secrets.get("berth-pull").await.unwrap());
    let rotated_ref = &rotated;
    eventually(WAIT, "the pull secret replaced on revocation", || async move {
        let now = config(secrets_ref.get("berth-pull").await.map_err(|e| e.to_string())?);
        if &now != rotated_ref { Ok(()) } else { Err("unchanged".to_string()) }
    })
    .await;
    // berth's index of passwords follows the revocation within its rebuild period.
    tokio::time::sleep(Duration::from_secs(12)).await;
    apply(cluster, &team.name, &pod("old-after-revoke", Some("leaked")));
    let refused =
        eventually(WAIT, "the revoked password pulls nothing", || waiting_reason(&pods, "app=old-after-revoke")).await;
    assert!(refused_by_registry(&refused), "{refused}");
    apply(cluster, &team.name, &pod("after-revoke", None));
    eventually(WAIT, "the new pull secret pulls", runs("after-revoke")).await;
    assert_berth_logs_clean(cluster, installed).await;
}

#[tokio::test]
async fn the_lifecycle_never_expires_the_digest_a_running_pod_runs() {
    let Some((cluster, installed, _turn)) = setup().await else { return };
    let team = pulling_team(cluster, installed, "in-use").await;
    let repo = format!("{}/app", team.name);
    let image = format!("{}/{repo}:v1", node_host());
    let push_build = |i: u32| {
        let mut layout = OciLayout::default();
        let d = busybox_image(&mut layout, "v1", &format!("build-{i}"), &["/bin/sh", "-c", "exec sleep 3600"]);
        must(push(cluster, layout.path(), "v1", &repo, &team.robot), "push");
        d.digest
    };
    let d1 = push_build(1);
    apply(cluster, &team.name, &app_deployment("web", &image, 1, json!({}), json!({})));
    let pods = Api::<Pod>::namespaced(team.client.clone(), &team.name);
    let ids = eventually(WAIT, "the pod runs", || running_digests(&pods, "app=web")).await;
    assert_eq!(digest_of(&ids[0]), d1);
    // The tag moves on three times. The Deployment still names `v1`, which resolves to d4 now;
    // only the pod's imageID says that d1 is in use.
    let (d2, d3, d4) = (push_build(2), push_build(3), push_build(4));
    // Keep the newest untagged image (d3): d1 and d2 are candidates.
    apply(
        cluster,
        &team.name,
        &json!({"apiVersion": "berth.dev/v1alpha1", "kind": "LifecyclePolicy", "metadata": {"name": "untagged"},
                "spec": {"interval": "5s", "rules": [{"rulePriority": 1, "action": {"type": "expire"},
                    "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}}]}})
        .to_string(),
    );
    let out = kubectl(
        cluster,
        &[
            "patch",
            "-n",
            &team.name,
            "repository",
            "app",
            "--type=merge",
            "-p",
            r#"{"spec":{"lifecyclePolicyRef":{"name":"untagged"}}}"#,
        ],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exists = |digest: &str| {
        cluster
            .skopeo()
            .args(["inspect", "--raw", "--tls-verify=false", "--creds", &team.robot])
            .arg(format!("docker://{}/{repo}@{digest}", node_host()))
            .output()
            .unwrap()
            .status
            .success()
    };
    let exists = &exists;
    let d2_ref = &d2;
    eventually(WAIT, "the lifecycle expires d2", || async move {
        if exists(d2_ref) { Err("d2 still there".to_string()) } else { Ok(()) }
    })
    .await;
    // A few more runs: the running digest stays.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(exists(&d1), "the digest the pod runs is never expired");
    assert!(exists(&d3) && exists(&d4), "the newest untagged image and the tagged one stay");
    let policies = Api::<berth::api::LifecyclePolicy>::namespaced(team.client.clone(), &team.name);
    let status = serde_json::to_value(policies.get("untagged").await.unwrap().status).unwrap();
    assert_eq!(status["protectedCount"], 1, "the running digest counted as protected: {status}");
    assert_berth_logs_clean(cluster, installed).await;
}

/// The JOSE header of a token berth issues now for `user:password` (it names the signing key).
async fn token_header(cluster: &NodeCluster, installed: &Installed, creds: &str) -> Result<String, String> {
    let client = cluster.cp.client().await;
    let registry =
        Api::<berth::api::Registry>::all(client).get(&installed.registry).await.map_err(|e| e.to_string())?;
    let service = registry.spec.token_auth.map(|t| t.service).unwrap_or_default();
    let port = cluster.ns.forward(format!("{NODE_IP}:{BERTH_PORT}").parse().unwrap());
    let (user, password) = creds.split_once(':').unwrap();
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/token/{}", installed.registry))
        .query(&[("service", service.as_str()), ("scope", "repository:nothing/here:pull")])
        .basic_auth(user, Some(password))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    let token = body["token"].as_str().ok_or_else(|| body.to_string())?;
    Ok(token.split('.').next().unwrap_or_default().to_string())
}

#[tokio::test]
async fn signing_keys_rotate_and_the_registry_is_rolled_while_pulls_and_pushes_go_on() {
    let Some((cluster, installed, _turn)) = setup().await else { return };
    let team = team(cluster, installed, "keys", &[("app", "Private")]).await;
    let repo = format!("{}/app", team.name);
    let client = cluster.cp.client().await;
    let pods = Api::<Pod>::namespaced(client.clone(), &installed.ns);
    let registry_pods = || async {
        let list = pods.list(&ListParams::default().labels("app.kubernetes.io/component=registry")).await.unwrap();
        list.items.iter().filter(|p| pod_ready(p)).map(|p| p.metadata.uid.clone().unwrap()).collect::<Vec<_>>()
    };
    let first_pods = registry_pods().await;
    let first_header = eventually(WAIT, "a token", || token_header(cluster, installed, &team.robot)).await;

    // Pushes and pulls, one after another, for the whole test: none may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        let skopeo = move || cluster.skopeo();
        let robot = team.robot.clone();
        let repo = repo.clone();
        tokio::task::spawn_blocking(move || {
            let mut layout = OciLayout::default();
            let (mut ok, mut failed) = (0u32, Vec::new());
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let tag = format!("t{i}");
                busybox_image(&mut layout, &tag, &tag, &["/bin/true"]);
                let pushed = skopeo()
                    .args(["copy", "-q", "--retry-times", "0", "--dest-tls-verify=false", "--dest-creds", &robot])
                    .arg(format!("oci:{}:{tag}", layout.path().display()))
                    .arg(format!("docker://{}/{repo}:{tag}", node_host()))
                    .output()
                    .unwrap();
                let pulled = skopeo()
                    .args(["inspect", "--retry-times", "0", "--tls-verify=false", "--creds", &robot])
                    .arg(format!("docker://{}/{repo}:{tag}", node_host()))
                    .output()
                    .unwrap();
                for (what, out) in [("push", pushed), ("pull", pulled)] {
                    if out.status.success() {
                        ok += 1;
                    } else {
                        failed.push(format!("{what} {tag}: {}", String::from_utf8_lossy(&out.stderr).trim()));
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            (ok, failed)
        })
    };

    // A new key joins the bundle, berth rolls the registry by itself, then signs with the new key.
    let registries = Api::<berth::api::Registry>::all(client.clone());
    let started = Instant::now();
    let rolled = eventually(Duration::from_secs(360), "the registry pod replaced by berth's roll", || async {
        let now = registry_pods().await;
        if !now.is_empty() && now.iter().all(|uid| !first_pods.contains(uid)) {
            Ok(now)
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    let header = eventually(Duration::from_secs(360), "tokens signed with the new key", || async {
        let h = token_header(cluster, installed, &team.robot).await?;
        if h != first_header { Ok(h) } else { Err("the first key still signs".to_string()) }
    })
    .await;
    // A few more operations with the new key in use.
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = worker.await.unwrap();
    let status = serde_json::to_value(registries.get(&installed.registry).await.unwrap().status).unwrap();
    eprintln!(
        "figures: key rotation observed in {:.0}s; registry pods {first_pods:?} -> {rolled:?}; {ok} pushes and pulls, {} failed",
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    assert!(failed.is_empty(), "no pull or push fails across the change: {failed:#?}\\nRegistry status: {status}");
    assert!(ok >= 10, "the worker ran: {ok}");
    assert_ne!(header, first_header);
    assert_berth_logs_clean(cluster, installed).await;
}
