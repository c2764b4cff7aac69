//! The Helm chart and the kustomize base as users install them: helm (built from its pinned
//! module) lints and renders them, the real API server accepts what they render, and berth,
//! running with nothing but the chart's ServiceAccount and RBAC, does its whole job against a real
//! Distribution registry configured from the chart's own registry config.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use berth::api::{AccessPolicy, LifecyclePolicy, Registry, Repository};
use k8s_openapi::api::{
    apps::v1::Deployment,
    authentication::v1::{TokenRequest, TokenRequestSpec},
    coordination::v1::Lease,
    core::v1::{Secret, ServiceAccount},
};
use kube::{Api, api::PostParams};
use serde_json::{Value, json};
use support::{
    ControlPlane, OciLayout, control_plane, eventually, free_port,
    process::Server,
    repo_path,
    scenario::{WAIT, is_ready, ready},
    skopeo::{Creds, Skopeo, describe},
};

const CHART: &str = "charts/berth";
const KUSTOMIZE: &str = "charts/kustomize";
/// How `charts/kustomize/berth.yaml` is made (also printed when it is stale).
const KUSTOMIZE_ARGS: [&str; 6] =
    ["template", "berth", "charts/berth", "--namespace", "berth-system", "--include-crds"];
const KUSTOMIZE_HEADER: &str = "# Generated from the chart with its default values: do not edit. Regenerate with\n\
#   helm template berth charts/berth --namespace berth-system --include-crds\n\
# (tests/chart.rs fails when this file is stale and prints the command).\n";

/// `helm`: `$BERTH_HELM`, or what `tests/tools/build-helm.sh` builds (once per machine). Its
/// config, cache and data stay in a directory of this test process, not in `$HOME`.
fn helm() -> Command {
    let bin = match std::env::var_os("BERTH_HELM") {
        Some(path) => PathBuf::from(path),
        None => {
            let script = repo_path("tests/tools/build-helm.sh");
            let out = Command::new("bash")
                .arg(&script)
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
            assert!(out.status.success(), "{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("helm")
        }
    };
    let home = std::env::temp_dir().join(format!("berth-helm-home-{}", std::process::id()));
    let mut cmd = Command::new(bin);
    cmd.current_dir(repo_path("."))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

/// Runs a command and returns its output; fails the test only when it cannot start.
fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs a command that must succeed and returns its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `cmd` with `input` on stdin.
fn with_stdin(cmd: &mut Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}")))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// Values that switch on everything the chart can render on a plain cluster.
fn everything_on() -> Vec<&'static str> {
    vec!["--set", "registry.enabled=true", "--set", "networkPolicy.enabled=true"]
}

#[test]
fn the_charts_crds_are_the_generated_crds() {
    let names = |dir: &Path| {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    let (generated, chart) = (repo_path("crds"), repo_path("charts/berth/crds"));
    assert_eq!(names(&chart), names(&generated), "charts/berth/crds/ must hold exactly the files of crds/");
    for name in names(&generated) {
        let a = std::fs::read(generated.join(&name)).unwrap();
        let b = std::fs::read(chart.join(&name)).unwrap();
        assert!(a == b, "charts/berth/crds/{name} differs from crds/{name}: run `cp crds/*.yaml charts/berth/crds/`");
    }
}

#[test]
fn the_charts_app_version_is_berths_version() {
    let chart: Value = serde_yaml::from_str(&std::fs::read_to_string(repo_path("charts/berth/Chart.yaml")).unwrap())
        .expect("Chart.yaml parses");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"), "Chart.yaml appVersion must follow Cargo.toml");
}

#[test]
fn helm_lint_passes_and_the_values_schema_rejects_bad_values() {
    for extra in [vec![], everything_on()] {
        let out = ok(helm().args(["lint", "--strict", CHART]).args(&extra));
        assert!(out.contains("0 chart(s) failed"), "helm lint {extra:?}:\n{out}");
    }
    let cases: [(&[&str], &str); 6] = [
        (&["--set-string", "replicas=two"], "at '/replicas': got string, want integer"),
        (&["--set", "logFormat=xml"], "at '/logFormat'"),
        (&["--set", "repositoryPollInterval=5 minutes"], "at '/repositoryPollInterval'"),
        (&["--set", "registry.storage.type=nfs"], "at '/registry/storage/type'"),
        (&["--set", "replicaCount=2"], "additional properties 'replicaCount' not allowed"),
        (&["--set", "tokenService.trustedProxies={ingress}"], "at '/tokenService/trustedProxies/0'"),
    ];
    for (args, message) in cases {
        let lint = run(helm().args(["lint", CHART]).args(args));
        assert!(!lint.status.success() && text(&lint).contains(message), "helm lint {args:?}:\n{}", text(&lint));
        let template = run(helm().args(["template", "x", CHART]).args(args));
        assert!(
            !template.status.success() && text(&template).contains(message),
            "helm template {args:?}:\n{}",
            text(&template)
        );
    }
    // The packaged chart carries the CRDs and the schema.
    let packaged = tempfile::tempdir().unwrap();
    ok(helm().args(["package", CHART, "--destination"]).arg(packaged.path()));
    let archive = packaged.path().join(format!("berth-{}.tgz", env!("CARGO_PKG_VERSION")));
    let file = std::fs::File::open(&archive).unwrap_or_else(|e| panic!("{}: {e}", archive.display()));
    let mut entries: Vec<String> = tar::Archive::new(flate2::read::GzDecoder::new(file))
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    entries.sort();
    for crd in std::fs::read_dir(repo_path("crds")).unwrap() {
        let name = format!("berth/crds/{}", crd.unwrap().file_name().to_string_lossy());
        assert!(entries.contains(&name), "{name} not in the package: {entries:?}");
    }
    assert!(entries.iter().any(|e| e == "berth/values.schema.json"), "{entries:?}");

    // What the schema cannot say, the templates refuse with the reason.
    let fights = run(helm().args(["template", "x", CHART, "--set", "leaderElection.enabled=false"]));
    assert!(
        !fights.status.success() && text(&fights).contains("replicas > 1 needs leaderElection.enabled"),
        "{}",
        text(&fights)
    );
    let no_bucket = run(helm().args([
        "template",
        "x",
        CHART,
        "--set",
        "registry.enabled=true",
        "--set",
        "registry.storage.type=s3",
    ]));
    assert!(
        !no_bucket.status.success() && text(&no_bucket).contains("registry.storage.s3.bucket is required"),
        "{}",
        text(&no_bucket)
    );
}

/// What the Deployment runs, and that the RBAC grants nothing that escalates.
#[test]
fn the_rendered_deployment_and_rbac_are_what_berth_needs() {
    let docs = documents(&ok(helm().args(["template", "rel", CHART, "--namespace", "ops"])));
    let deployment = find(&docs, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let expected_start = [
        "--log-format",
        "json",
        "run",
        "--http-addr",
        "0.0.0.0:8080",
        "--repository-poll-interval",
        "5m",
        "--registry-concurrency",
        "8",
        "--leader-elect",
        "--leader-elect-namespace",
        "$(POD_NAMESPACE)",
        "--leader-elect-lease",
        "berth",
    ];
    assert_eq!(args, expected_start);
    let proxied = documents(&ok(helm().args([
        "template",
        "rel",
        CHART,
        "--set",
        "tokenService.trustedProxies={10.0.0.0/8,fd00::/8}",
    ])));
    let proxied_args = &find(&proxied, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        proxied_args
            .as_array()
            .unwrap()
            .windows(2)
            .any(|w| w[0] == "--trusted-proxies" && w[1] == "10.0.0.0/8,fd00::/8"),
        "{proxied_args}"
    );
    let env: Vec<(&str, &str)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?)))
        .collect();
    assert_eq!(
        env,
        [("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"), ("POD_IP", "status.podIP")]
    );
    assert_eq!(container["image"], format!("berth:{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http"}));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "http"}));
    assert_eq!(container["ports"][0], json!({"name": "http", "containerPort": 8080, "protocol": "TCP"}));
    assert_eq!(container["resources"]["requests"], json!({"cpu": "50m", "memory": "64Mi"}));
    assert_eq!(container["resources"]["limits"], json!({"memory": "256Mi"}));
    assert_eq!(
        container["securityContext"],
        json!({"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
    );
    let psc = &pod["securityContext"];
    assert_eq!((psc["runAsNonRoot"].as_bool(), psc["runAsUser"].as_i64()), (Some(true), Some(65532)));
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(psc["fsGroup"].is_i64());
    assert_eq!(find(&docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"], 1);
    let one = documents(&ok(helm().args(["template", "rel", CHART, "--set", "replicas=1"])));
    assert!(find(&one, "PodDisruptionBudget").is_empty(), "no PodDisruptionBudget for a single replica");

    let mut rules = Vec::new();
    for kind in ["ClusterRole", "Role"] {
        for role in find(&docs, kind) {
            rules.extend(role["rules"].as_array().unwrap().iter().map(|r| (kind, r.clone())));
        }
    }
    assert!(!rules.is_empty());
    for (kind, rule) in &rules {
        let strings = |field: &str| -> Vec<String> {
            rule[field].as_array().into_iter().flatten().map(|s| s.as_str().unwrap().to_string()).collect()
        };
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(!strings(field).iter().any(|s| s.contains('*')), "{kind}: a wildcard in {rule}");
        }
        for verb in ["escalate", "bind", "impersonate", "deletecollection"] {
            assert!(!strings("verbs").iter().any(|v| v == verb), "{kind}: {verb} in {rule}");
        }
        assert!(rule.get("nonResourceURLs").is_none(), "{kind}: nonResourceURLs in {rule}");
        if strings("resources").iter().any(|r| r == "leases") {
            assert_eq!(*kind, "Role", "Leases only in the release namespace");
        }
    }
    // Exactly these: a change to berth's API calls must change this list on purpose.
    let granted: Vec<String> = find(&docs, "ClusterRole")[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let group = r["apiGroups"][0].as_str().unwrap().to_string();
            let verbs: Vec<&str> = r["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            let verbs = verbs.join(",");
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |res| format!("{group}/{}: {verbs}", res.as_str().unwrap()))
        })
        .collect();
    let expected = [
        "berth.dev/registries: list,watch",
        "berth.dev/registries/status: patch",
        "berth.dev/repositories: list,watch,patch",
        "berth.dev/accesspolicies: list,watch,patch",
        "berth.dev/lifecyclepolicies: list,watch",
        "berth.dev/repositories/status: patch",
        "berth.dev/lifecyclepolicies/status: patch",
        "berth.dev/accesspolicies/status: patch",
        "berth.dev/repositories/finalizers: update",
        "/configmaps: list,create,patch",
        "/secrets: get,list,watch,create,update,patch,delete",
        "/namespaces: get",
        "/serviceaccounts: get,list,patch",
        "authentication.k8s.io/tokenreviews: create",
        "events.k8s.io/events: create,patch",
        "/pods: list",
        "apps/replicasets: list",
        "batch/jobs: list",
        "apps/deployments: list,watch,patch",
        "apps/statefulsets: list,watch,patch",
        "apps/daemonsets: list,watch,patch",
        "batch/cronjobs: list,watch,patch",
    ];
    assert_eq!(granted, expected);
    let lease_role = find(&docs, "Role")[0];
    assert_eq!(lease_role["metadata"]["namespace"], "ops");

    let monitored =
        documents(&ok(helm().args(["template", "rel", CHART, "--set", "metrics.serviceMonitor.enabled=true"])));
    let monitor = find(&monitored, "ServiceMonitor");
    assert_eq!(monitor.len(), 1, "metrics.serviceMonitor.enabled renders a ServiceMonitor");
    assert_eq!(monitor[0]["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(monitor[0]["spec"]["endpoints"][0]["path"], "/metrics");
    let selector = monitor[0]["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let service = &find(&monitored, "Service")[0]["metadata"]["labels"];
    assert!(!selector.is_empty() && selector.iter().all(|(k, v)| &service[k] == v), "{selector:?} vs {service}");
}

#[test]
fn the_kustomize_base_is_the_chart_with_default_values() {
    let rendered = ok(helm().args(KUSTOMIZE_ARGS));
    let committed = std::fs::read_to_string(repo_path("charts/kustomize/berth.yaml")).unwrap();
    assert!(
        committed == format!("{KUSTOMIZE_HEADER}{rendered}"),
        "charts/kustomize/berth.yaml is stale: regenerate it with\n  {{ printf '{}'; helm {}; }} > charts/kustomize/berth.yaml",
        KUSTOMIZE_HEADER.replace('\n', "\\n"),
        KUSTOMIZE_ARGS.join(" ")
    );
}

/// `target` as a path relative to `from` (kustomize refuses absolute paths to bases), through `/`.
fn relative_to_root(from: &Path, target: &Path) -> String {
    let up = from.components().filter(|c| matches!(c, std::path::Component::Normal(_))).count();
    let target = target.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", target.display()));
    format!("{}{}", "../".repeat(up), target.strip_prefix("/").unwrap().display())
}

/// `kubectl apply --dry-run=server` of a manifest stream into `namespace`; the API server runs
/// admission, schema validation and RBAC escalation checks but stores nothing.
fn server_dry_run(cp: &ControlPlane, namespace: &str, manifests: &str) -> String {
    let out = with_stdin(cp.kubectl().args(["apply", "--dry-run=server", "-n", namespace, "-f", "-"]), manifests);
    assert!(out.status.success(), "the API server refused:\n{}\n--- manifests ---\n{manifests}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_api_server_accepts_what_the_chart_and_the_kustomize_base_render() {
    let cp = control_plane().await;
    cp.install_crds().await;
    let ns = cp.namespace("chart-render").await;
    for extra in [vec![], everything_on()] {
        let manifests = ok(helm().args(["template", "rel", CHART, "--namespace", &ns.name]).args(&extra));
        let applied = server_dry_run(cp, &ns.name, &manifests);
        let kinds = find(&documents(&manifests), "Deployment").len();
        assert_eq!(applied.matches("deployment.apps/").count(), kinds, "{applied}");
        assert!(
            applied.contains("clusterrole.rbac.authorization.k8s.io/rel-berth created (server dry run)"),
            "{applied}"
        );
        if !extra.is_empty() {
            assert!(applied.contains("registry.berth.dev/rel-berth created (server dry run)"), "{applied}");
            assert!(applied.contains("networkpolicy.networking.k8s.io/rel-berth created"), "{applied}");
        }
    }

    // The base, through an overlay that moves it into the test's namespace (as users patch it).
    let overlay = tempfile::tempdir().unwrap();
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {}\nresources:\n  - {}\n",
            ns.name,
            relative_to_root(overlay.path(), &repo_path(KUSTOMIZE))
        ),
    )
    .unwrap();
    let base = ok(cp.kubectl().args(["kustomize"]).arg(repo_path(KUSTOMIZE)));
    let docs = documents(&base);
    assert_eq!(find(&docs, "CustomResourceDefinition").len(), 4, "the base installs the CRDs too");
    assert!(docs.iter().filter(|d| d["kind"] == "Deployment").all(|d| d["metadata"]["namespace"] == "berth-system"));
    let overlaid = ok(cp.kubectl().args(["kustomize"]).arg(overlay.path()));
    let applied = server_dry_run(cp, &ns.name, &overlaid);
    assert!(applied.contains("deployment.apps/berth created (server dry run)"), "{applied}");
    assert!(applied.contains("customresourcedefinition.apiextensions.k8s.io/repositories.berth.dev"), "{applied}");
}

/// A kubeconfig that authenticates as `namespace/account` with a token from the TokenRequest API.
async fn service_account_kubeconfig(
    cp: &ControlPlane,
    client: kube::Client,
    namespace: &str,
    account: &str,
    dir: &Path,
) -> PathBuf {
    let request = TokenRequest {
        spec: TokenRequestSpec { audiences: vec![], expiration_seconds: Some(3600), ..Default::default() },
        ..Default::default()
    };
    let issued = Api::<ServiceAccount>::namespaced(client, namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{account}: {e}"));
    let token = issued.status.expect("TokenRequest without status").token;
    let path = dir.join(format!("{account}.kubeconfig"));
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": cp.server, "certificate-authority": cp.ca_file}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": account, "namespace": namespace}}],
        "current-context": "test",
    });
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

/// Whether `berth run` has the leader-election flags yet (they arrive with another change).
fn berth_has_leader_election() -> bool {
    let out = run(Command::new(env!("CARGO_BIN_EXE_berth")).args(["run", "--help"]));
    String::from_utf8_lossy(&out.stdout).contains("--leader-elect")
}

fn can_i(cp: &ControlPlane, user: &str, args: &[&str]) -> String {
    let out = run(cp.kubectl().args(["auth", "can-i", "--as", user]).args(args));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The `status` of a berth object, as JSON.
async fn status<K>(api: &Api<K>, name: &str) -> Result<Value, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    let object = api.get(name).await.map_err(|e| e.to_string())?;
    Ok(serde_json::to_value(&object).map_err(|e| e.to_string())?["status"].clone())
}

/// berth with the chart's identity and nothing else: a Registry in token mode (the chart's own
/// Registry object and registry config), a Repository, an AccessPolicy with pull secrets, a
/// lifecycle policy run, a rollout; no request refused. And the identity is no more than that.
#[tokio::test]
async fn berth_does_its_job_with_the_charts_service_account_and_no_more() {
    let cp = control_plane().await;
    cp.install_crds().await;
    let ns = cp.namespace("chart-install").await;
    let (berth_port, registry_port) = (free_port(), free_port());
    let release = ns.name.clone();
    let fullname = format!("{release}-berth");
    let registry_name = ns.name.clone();
    let dir = tempfile::tempdir().unwrap();

    // The chart with its registry, addressed on loopback: berth and the registry run here as
    // processes, not in pods (the test cluster has no nodes).
    let values = json!({
        "registry": {
            "enabled": true,
            "name": registry_name,
            "labels": {"berth.dev/test": ns.name},
            "url": format!("http://127.0.0.1:{registry_port}"),
            "checkInterval": "2s",
            "auth": {"realm": format!("http://127.0.0.1:{berth_port}/token/{registry_name}")},
            "notifications": {"url": format!("http://127.0.0.1:{berth_port}/events/registry/{registry_name}")},
        },
    });
    let values_file = dir.path().join("values.yaml");
    std::fs::write(&values_file, values.to_string()).unwrap();
    let installed = ok(helm()
        .args(["install", &release, CHART, "--namespace", &ns.name, "--skip-crds", "--kubeconfig"])
        .arg(&cp.kubeconfig)
        .arg("--values")
        .arg(&values_file));
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    assert!(
        installed.contains(&format!("kubectl wait --for=condition=Ready registry/{registry_name}")),
        "NOTES:\n{installed}"
    );

    let kubeconfig = service_account_kubeconfig(cp, ns.client.clone(), &ns.name, &fullname, dir.path()).await;
    let mut extra = vec!["--repository-poll-interval", "2s"];
    // As the chart runs it, when this berth has leader election (older builds lack the flags;
    // then the Lease Role is only checked with can-i below).
    let leader_election = berth_has_leader_election();
    if leader_election {
        extra.extend(["--leader-elect", "--leader-elect-namespace", ns.name.as_str(), "--leader-elect-lease", "berth"]);
    }
    let berth = support::berth::Berth::start_as(cp, berth_port, &ns.name, &extra, kubeconfig).await;
    if leader_election {
        eventually(WAIT, "berth holds the Lease in the release namespace", || {
            let leases = Api::<Lease>::namespaced(ns.client.clone(), &ns.name);
            async move {
                let lease = leases.get_opt("berth").await.map_err(|e| e.to_string())?.ok_or("no Lease yet")?;
                let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
                if holder.is_empty() { Err("no holder".to_string()) } else { Ok(()) }
            }
        })
        .await;
    }

    // berth (as the chart's ServiceAccount) writes the signing keys and the bundle the registry
    // pod mounts.
    let secrets = Api::<Secret>::namespaced(ns.client.clone(), &ns.name);
    let bundle_secret = format!("{fullname}-token-signing-bundle");
    let bundle = eventually(WAIT, &format!("Secret {bundle_secret}"), || {
        let secrets = secrets.clone();
        let name = bundle_secret.clone();
        let log = berth.log_tail();
        async move {
            let s = secrets.get_opt(&name).await.map_err(|e| e.to_string())?.ok_or(format!("not yet\n{log}"))?;
            s.data.unwrap_or_default().get("bundle.pem").map(|b| b.0.clone()).ok_or_else(|| "no bundle.pem".into())
        }
    })
    .await;

    // The registry runs the chart's own configuration; only what a pod gets from its volumes
    // and its listen address are local.
    let config_secret = secrets.get(&format!("{fullname}-registry-config")).await.unwrap();
    let config = config_secret.data.unwrap_or_default().remove("config.yml").expect("config.yml in the config Secret");
    let mut config: Value = serde_yaml::from_slice(&config.0).expect("the registry config is YAML");
    let token =
        secrets.get(&format!("{fullname}-registry-events")).await.unwrap().data.unwrap_or_default()["token"].0.clone();
    let token = String::from_utf8(token).unwrap();
    assert!(token.len() >= 32, "the events token is long and random");
    let endpoint = &config["notifications"]["endpoints"][0];
    assert_eq!(endpoint["headers"]["Authorization"][0], format!("Bearer {token}"));
    let registry_object = Api::<Registry>::all(ns.client.clone()).get(&registry_name).await.unwrap();
    let token_auth = registry_object.spec.token_auth.as_ref().expect("the chart's Registry has tokenAuth");
    assert_eq!(config["auth"]["token"]["service"], token_auth.service.as_str());
    assert_eq!(config["auth"]["token"]["issuer"], token_auth.issuer.as_str());
    assert_eq!(config["auth"]["token"]["service"], format!("{fullname}-registry.{}.svc", ns.name));
    assert_eq!(config["storage"]["delete"]["enabled"], true);
    let bundle_path = dir.path().join("bundle.pem");
    std::fs::write(&bundle_path, &bundle).unwrap();
    config["http"]["addr"] = json!(format!("127.0.0.1:{registry_port}"));
    config["storage"]["filesystem"]["rootdirectory"] = json!(dir.path().join("storage"));
    config["auth"]["token"]["rootcertbundle"] = json!(bundle_path);
    let config_path = dir.path().join("config.yml");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let mut registry = Server::start(
        "docker-registry",
        Path::new("/usr/bin/docker-registry"),
        &["serve".to_string(), config_path.display().to_string()],
        &dir.path().join("registry.log"),
    );
    let http = reqwest::Client::new();
    let registry_url = format!("http://127.0.0.1:{registry_port}");
    eventually(Duration::from_secs(30), "the registry answers 401 (token mode)", || {
        let running = registry.running();
        let log = registry.log_tail(3000);
        let req = http.get(format!("{registry_url}/v2/")).send();
        async move {
            if !running {
                return Err(format!("docker-registry exited:\n{log}"));
            }
            match req.await {
                Ok(r) if r.status() == 401 => Ok(()),
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;

    let registries = Api::<Registry>::all(ns.client.clone());
    eventually(WAIT, "the chart's Registry Ready", || {
        let registries = registries.clone();
        let name = registry_name.clone();
        let log = berth.log_tail();
        async move {
            let status = status(&registries, &name).await?;
            if ready(&status).map(|r| r.0) == Some("True") { Ok(()) } else { Err(format!("{status}\n{log}")) }
        }
    })
    .await;

    // A Repository with a lifecycle policy, a CI ServiceAccount that pushes, pull secrets.
    let create = |kind: &str, name: &str, spec: Value| json!({"apiVersion": "berth.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec});
    let policies = Api::<LifecyclePolicy>::namespaced(ns.client.clone(), &ns.name);
    let repos = Api::<Repository>::namespaced(ns.client.clone(), &ns.name);
    let access = Api::<AccessPolicy>::namespaced(ns.client.clone(), &ns.name);
    let rule = json!({"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}});
    repos
        .create(
            &PostParams::default(),
            &serde_json::from_value(create("Repository", "app", json!({"registryRef": {"name": registry_name}, "visibility": "Private", "lifecyclePolicyRef": {"name": "keep-one"}})))
                .unwrap(),
        )
        .await
        .unwrap();
    eventually(WAIT, "Repository app Ready", || {
        let repos = repos.clone();
        let log = berth.log_tail();
        async move {
            let status = status(&repos, "app").await?;
            if is_ready(&status) { Ok(()) } else { Err(format!("{status}\n{log}")) }
        }
    })
    .await;
    let accounts = Api::<ServiceAccount>::namespaced(ns.client.clone(), &ns.name);
    accounts
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "ci"}})).unwrap())
        .await
        .unwrap();
    let ci_token = accounts
        .create_token_request(
            "ci",
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec { audiences: vec![], expiration_seconds: Some(3600), ..Default::default() },
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let ci = Creds::Basic { username: "ci".into(), password: ci_token };
    // The ServiceAccount the pods run as; it exists before the policy names it (berth attaches
    // pull secrets to the ServiceAccounts that exist when it reconciles the policy).
    accounts
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "runtime"}})).unwrap())
        .await
        .unwrap();
    access
        .create(
            &PostParams::default(),
            &serde_json::from_value(create(
                "AccessPolicy",
                "ci",
                json!({
                    "repositories": {"names": ["app"]},
                    "grants": [{"subjects": [{"kind": "ServiceAccount", "name": "ci"}], "actions": ["pull", "push"]}],
                    "pullSecrets": {"namespaces": [ns.name], "serviceAccounts": ["runtime"]},
                }),
            ))
            .unwrap(),
        )
        .await
        .unwrap();

    // CI pushes with its ServiceAccount token through berth's token service (the grant may take
    // a moment to reach the index); the push event reaches berth with the chart's token.
    let skopeo = Skopeo::default();
    let mut layout = OciLayout::default();
    let image = format!("127.0.0.1:{registry_port}/{}/app", ns.name);
    let d1 = layout.add_image("v1", "one").digest;
    let (path1, dest1) = (layout.path().to_path_buf(), format!("{image}:v1"));
    eventually(WAIT, "ci pushes app:v1", || {
        let (skopeo, path1, dest1, ci) = (&skopeo, &path1, &dest1, &ci);
        async move {
            let out = skopeo.push(path1, "v1", dest1, ci, false).await;
            if out.status.success() { Ok(()) } else { Err(describe(&out)) }
        }
    })
    .await;
    eventually(WAIT, "the push event accepted by berth", || {
        let metric = berth.metric("berth_registry_events_total{result=\"accepted\"}");
        async move {
            let accepted = metric.await;
            if accepted >= 1.0 { Ok(()) } else { Err(format!("{accepted} events accepted")) }
        }
    })
    .await;

    // The push-time ledger: ConfigMaps owned by the Repository, written by server-side apply.
    eventually(WAIT, "the ledger records v1", || {
        let ns = ns.name.clone();
        let d1 = d1.clone();
        let repos = repos.clone();
        async move {
            let out = run(cp.kubectl().args(["get", "configmaps", "-n", &ns, "-o", "json"]));
            let list: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))?;
            let ledger = list["items"].as_array().into_iter().flatten().filter(|c| {
                c["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("berth-ledger-app-"))
                    && c["metadata"]["ownerReferences"][0]["kind"] == "Repository"
            });
            if ledger.map(|c| c["data"].to_string()).any(|d| d.contains(&d1)) {
                Ok(())
            } else {
                Err(format!("no ledger entry for {d1}; Repository status {}", status(&repos, "app").await?))
            }
        }
    })
    .await;

    // Pull secrets: written into the namespace, attached to its ServiceAccount, and
    // they pull.
    let pull = eventually(WAIT, "the pull secret berth-pull", || {
        let secrets = secrets.clone();
        let host = format!("127.0.0.1:{registry_port}");
        async move {
            let s = secrets.get_opt("berth-pull").await.map_err(|e| e.to_string())?.ok_or("no Secret yet")?;
            let config = s.data.unwrap_or_default().get(".dockerconfigjson").map(|b| b.0.clone()).ok_or("no data")?;
            let config: Value = serde_json::from_slice(&config).map_err(|e| e.to_string())?;
            let auth = &config["auths"][&host];
            match (auth["username"].as_str(), auth["password"].as_str()) {
                (Some(u), Some(p)) => Ok(Creds::Basic { username: u.into(), password: p.into() }),
                _ => Err(format!("no auth for {host}: {config}")),
            }
        }
    })
    .await;
    eventually(WAIT, "ServiceAccount runtime has the pull secret", || {
        let accounts = accounts.clone();
        async move {
            let sa = accounts.get("runtime").await.map_err(|e| e.to_string())?;
            let names: Vec<String> = sa.image_pull_secrets.unwrap_or_default().into_iter().map(|r| r.name).collect();
            if names.iter().any(|n| n == "berth-pull") { Ok(()) } else { Err(format!("{names:?}")) }
        }
    })
    .await;
    let into = tempfile::tempdir().unwrap();
    let pulled = skopeo.pull(&format!("{image}:v1"), &into.path().join("image"), &pull).await;
    assert!(pulled.status.success(), "pull with the pull secret: {}", describe(&pulled));
    eventually(WAIT, "AccessPolicy ci Ready", || {
        let access = access.clone();
        async move {
            let status = status(&access, "ci").await?;
            if ready(&status).map(|r| r.0) == Some("True") { Ok(()) } else { Err(status.to_string()) }
        }
    })
    .await;

    // A rollout: the annotated Deployment is pinned to the tag's digest.
    let deployments = Api::<Deployment>::namespaced(ns.client.clone(), &ns.name);
    let web: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "annotations": {"berth.dev/rollout": "digest"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": format!("{image}:v1")}]}}},
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &web).await.unwrap();
    let pinned = format!("{image}:v1@{d1}");
    eventually(WAIT, "web pinned to v1's digest", || {
        let deployments = deployments.clone();
        let pinned = pinned.clone();
        async move {
            let d = deployments.get("web").await.map_err(|e| e.to_string())?;
            let image = d.spec.and_then(|s| s.template.spec).map(|s| s.containers[0].image.clone().unwrap_or_default());
            if image.as_deref() == Some(pinned.as_str()) { Ok(()) } else { Err(format!("{image:?}")) }
        }
    })
    .await;

    // A lifecycle policy run over the repository (images in use read from every workload kind):
    // v1 is protected by the Deployment, v2 is the one kept.
    let d2 = layout.add_image("v2", "two").digest;
    let out = skopeo.push(layout.path(), "v2", &format!("{image}:v2"), &ci, false).await;
    assert!(out.status.success(), "push v2: {}", describe(&out));
    policies
        .create(
            &PostParams::default(),
            &serde_json::from_value(create("LifecyclePolicy", "keep-one", json!({"rules": [rule], "dryRun": true})))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = eventually(WAIT, "LifecyclePolicy keep-one ran", || {
        let policies = policies.clone();
        async move {
            let status = status(&policies, "keep-one").await?;
            if ready(&status) == Some(("True", "DryRun")) { Ok(status) } else { Err(status.to_string()) }
        }
    })
    .await;
    let ledger = ok(cp.kubectl().args(["get", "configmaps", "-o", "yaml", "-n", &ns.name]));
    assert_eq!(status["protectedCount"], 1, "v1 {d1}, v2 {d2}: {status}\n{ledger}");

    // Deleting the policy removes its pull secret and the ServiceAccount's reference to it
    // (its finalizer is berth's to release).
    access.delete("ci", &Default::default()).await.unwrap();
    eventually(WAIT, "the pull secret and the policy gone", || {
        let (secrets, accounts, access) = (secrets.clone(), accounts.clone(), access.clone());
        async move {
            let secret = secrets.get_opt("berth-pull").await.map_err(|e| e.to_string())?;
            let sa = accounts.get("runtime").await.map_err(|e| e.to_string())?;
            let policy = access.get_opt("ci").await.map_err(|e| e.to_string())?;
            match (secret, sa.image_pull_secrets.unwrap_or_default().is_empty(), policy) {
                (None, true, None) => Ok(()),
                (secret, empty, policy) => Err(format!(
                    "Secret left: {}, references left: {}, policy: {:?}",
                    secret.is_some(),
                    !empty,
                    policy.map(|p| (p.metadata.finalizers, p.status))
                )),
            }
        }
    })
    .await;

    // Nothing berth asked for was refused: its whole log (its stderr, through /proc, since the
    // harness keeps only the tail at hand) names no 403.
    let pid = berth.pid().expect("berth is running");
    let log = std::fs::read_to_string(format!("/proc/{pid}/fd/2")).unwrap_or_else(|_| berth.log_tail());
    assert!(!log.is_empty(), "berth's log is empty");
    assert!(!log.to_lowercase().contains("forbidden"), "berth was refused something:\n{log}");
    // berth reports most API errors in status conditions and Events rather than its log.
    let objects = ok(cp.kubectl().args([
        "get",
        "repositories,accesspolicies,lifecyclepolicies,events",
        "-o",
        "json",
        "-n",
        &ns.name,
    ]));
    let registry_object = ok(cp.kubectl().args(["get", "registry", &registry_name, "-o", "json"]));
    for reported in [objects, registry_object] {
        assert!(!reported.to_lowercase().contains("forbidden"), "berth was refused something:\n{reported}");
    }
    drop(berth);

    // And the identity is not more than berth needs.
    let user = format!("system:serviceaccount:{}:{fullname}", ns.name);
    let ns_arg = format!("--namespace={}", ns.name);
    let refused: &[&[&str]] = &[
        &["*", "*"],
        &["create", "clusterrolebindings"],
        &["escalate", "clusterroles"],
        &["bind", "clusterroles"],
        &["impersonate", "users"],
        &["delete", "nodes"],
        &["create", "pods"],
        &["delete", "deployments"],
        &["get", "configmaps", "-n", "kube-system"],
        &["update", "leases", "-n", "kube-system"],
        &["delete", "repositories.berth.dev"],
    ];
    for args in refused {
        assert_eq!(can_i(cp, &user, args), "no", "{user} can {args:?}");
    }
    // Secrets cluster-wide is what berth needs (signing keys, robot and pull secrets in any
    // namespace), so it is granted.
    let allowed: &[&[&str]] = &[
        &["get", "secrets", "-n", "kube-system"],
        &["patch", "deployments"],
        &["create", "tokenreviews.authentication.k8s.io"],
        &["patch", "registries.berth.dev", "--subresource=status"],
        &["update", "leases", ns_arg.as_str()],
    ];
    for args in allowed {
        assert_eq!(can_i(cp, &user, args), "yes", "{user} cannot {args:?}");
    }

    // Uninstall removes the cluster-wide objects and keeps the registry's volume.
    ok(helm().args(["uninstall", &release, "--namespace", &ns.name, "--kubeconfig"]).arg(&cp.kubeconfig));
    let left = run(cp.kubectl().args(["get", "clusterrole", &fullname]));
    assert!(!left.status.success(), "the ClusterRole outlived the release");
    ok(cp.kubectl().args(["get", "pvc", &format!("{fullname}-registry"), "-n", &ns.name]));
    registry.stop();
}
