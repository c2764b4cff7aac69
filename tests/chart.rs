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
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
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
    let cases: [(&[&str], &str); 8] = [
        (&["--set-string", "replicas=two"], "at '/replicas': got string, want integer"),
        (&["--set", "logFormat=xml"], "at '/logFormat'"),
        (&["--set", "rbac.scope=namespace"], "at '/rbac/scope'"),
        (&["--set", "rbac.scope=namespaces", "--set", "rbac.namespaces={Team_A}"], "at '/rbac/namespaces/0'"),
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
    // A list of namespaces without the namespaced scope would silently grant every namespace.
    let unscoped = run(helm().args(["template", "x", CHART, "--set", "rbac.namespaces={team-a}"]));
    assert!(
        !unscoped.status.success() && text(&unscoped).contains("rbac.namespaces needs rbac.scope namespaces"),
        "{}",
        text(&unscoped)
    );
    let elsewhere = run(helm().args([
        "template",
        "x",
        CHART,
        "--set",
        "rbac.scope=namespaces",
        "--set",
        "rbac.namespaces={team-a}",
        "--set",
        "namespace=team-b",
    ]));
    assert!(
        !elsewhere.status.success() && text(&elsewhere).contains("namespace must be the release namespace or one of"),
        "{}",
        text(&elsewhere)
    );
}

/// `group/resource: verbs`, one line per resource, in the order of the role's rules.
fn granted(role: &Value) -> Vec<String> {
    role["rules"]
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
        .collect()
}

/// No wildcard, nothing that escalates, Leases only in the release namespace.
fn assert_no_escalation(docs: &[Value]) {
    let mut rules = Vec::new();
    for kind in ["ClusterRole", "Role"] {
        for role in find(docs, kind) {
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
}

/// What berth's own objects, TokenReviews and Namespaces need, in both scopes.
const CLUSTER_RULES_IN_BOTH_SCOPES: [&str; 14] = [
    "berth.dev/registries: list,watch",
    "berth.dev/registries/status: patch",
    "berth.dev/repositories: list,watch,patch",
    "berth.dev/accesspolicies: list,watch,patch",
    "berth.dev/lifecyclepolicies: list,watch",
    "berth.dev/repositories/status: patch",
    "berth.dev/lifecyclepolicies/status: patch",
    "berth.dev/accesspolicies/status: patch",
    "berth.dev/imagescans: list,watch",
    "berth.dev/imagescans/status: patch",
    "berth.dev/repositories/finalizers: update",
    "/namespaces: get,list,watch",
    "authentication.k8s.io/tokenreviews: create",
    "/pods: list",
];

/// Where berth writes: every namespace (scope cluster) or each listed one's Role.
const WRITE_RULES: [&str; 9] = [
    "/configmaps: list,create,patch",
    "/secrets: get,list,watch,create,update,patch,delete",
    "/serviceaccounts: get,list,patch",
    "events.k8s.io/events: create,patch",
    "berth.dev/imagescans: create,patch,delete",
    "apps/deployments: list,watch,patch",
    "apps/statefulsets: list,watch,patch",
    "apps/daemonsets: list,watch,patch",
    "batch/cronjobs: list,watch,patch",
];

fn write_rules() -> Vec<String> {
    WRITE_RULES.map(String::from).to_vec()
}

/// scope namespaces: exactly these rules, cluster-wide and in each listed namespace, and berth
/// told the list.
#[test]
fn the_namespaced_scope_writes_only_in_the_listed_namespaces() {
    let docs = documents(&ok(helm().args([
        "template",
        "rel",
        CHART,
        "--namespace",
        "ops",
        "--set",
        "rbac.scope=namespaces",
        "--set",
        "rbac.namespaces={team-a,ops,team-b}",
    ])));
    assert_no_escalation(&docs);
    let cluster_roles = find(&docs, "ClusterRole");
    assert_eq!(cluster_roles.len(), 1);
    // Cluster-wide: berth's own objects, TokenReviews, and reads (Namespaces; the workloads that
    // keep images in use, wherever they run). No Secret, no write to anything not berth's.
    let mut expected: Vec<String> = CLUSTER_RULES_IN_BOTH_SCOPES.iter().map(|r| r.to_string()).collect();
    expected.extend(
        [
            "apps/replicasets: list",
            "apps/deployments: list",
            "apps/statefulsets: list",
            "apps/daemonsets: list",
            "batch/jobs: list",
            "batch/cronjobs: list",
        ]
        .map(String::from),
    );
    assert_eq!(granted(cluster_roles[0]), expected);
    // Per namespace: the release namespace first, each listed one once.
    let roles: Vec<&Value> = find(&docs, "Role").into_iter().filter(|r| r["metadata"]["name"] == "rel-berth").collect();
    let namespaces: Vec<&str> = roles.iter().map(|r| r["metadata"]["namespace"].as_str().unwrap()).collect();
    assert_eq!(namespaces, ["ops", "team-a", "team-b"]);
    for role in &roles {
        assert_eq!(granted(role), write_rules(), "Role in {}", role["metadata"]["namespace"]);
    }
    let bindings = find(&docs, "RoleBinding");
    for ns in ["ops", "team-a", "team-b"] {
        let binding = bindings
            .iter()
            .find(|b| b["metadata"]["namespace"] == ns && b["roleRef"]["name"] == "rel-berth")
            .unwrap_or_else(|| panic!("no RoleBinding in {ns}"));
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": "rel-berth", "namespace": "ops"}]));
    }
    let leases: Vec<&Value> =
        find(&docs, "Role").into_iter().filter(|r| r["metadata"]["name"] != "rel-berth").collect();
    assert_eq!(leases.len(), 1);
    assert_eq!(granted(leases[0]), ["coordination.k8s.io/leases: get,list,watch,create,update,patch"]);
    assert_eq!(leases[0]["metadata"]["namespace"], "ops");
    let args = &find(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"];
    let args: Vec<&str> = args.as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let at = args.iter().position(|a| *a == "--namespaces").expect("--namespaces passed to berth");
    assert_eq!(args[at + 1], "ops,team-a,team-b");

    // The release namespace alone by default; scope cluster passes no list.
    let alone = documents(&ok(helm().args(["template", "rel", CHART, "-n", "ops", "--set", "rbac.scope=namespaces"])));
    let roles: Vec<String> =
        find(&alone, "Role").iter().map(|r| r["metadata"]["namespace"].as_str().unwrap().to_string()).collect();
    assert_eq!(roles, ["ops", "ops"], "berth's Role and the Lease's, in the release namespace");
    let cluster = ok(helm().args(["template", "rel", CHART, "-n", "ops"]));
    assert!(!cluster.contains("--namespaces"), "scope cluster must not limit berth");
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
        "--scan-work-dir",
        "/var/cache/berth",
        "--scan-max-layer-bytes",
        "1073741824",
        "--vulnerability-data-refresh",
        "1h",
        "--vulnerability-data-ecosystems",
        "Debian,Ubuntu,Alpine,Red Hat,Go,PyPI,npm,crates.io",
    ];
    assert_eq!(args, expected_start);
    // The root filesystem is read-only: scans write layers to an emptyDir. No data by default.
    let pod = &find(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["volumeMounts"][0]["mountPath"], "/var/cache/berth");
    assert_eq!(pod["volumes"][0]["emptyDir"]["sizeLimit"], "4Gi");
    let with_url = documents(&ok(helm().args([
        "template",
        "rel",
        CHART,
        "--set",
        "scanning.vulnerabilityData=https://osv-vulnerabilities.storage.googleapis.com",
    ])));
    let url_args = find(&with_url, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(url_args.contains(r#""--vulnerability-data","https://osv-vulnerabilities.storage.googleapis.com","--vulnerability-data-cache","/var/cache/berth/vulnerability-data""#), "{url_args}");
    let with_volume = documents(&ok(helm().args([
        "template",
        "rel",
        CHART,
        "--set",
        "scanning.dataVolume.persistentVolumeClaim.claimName=osv",
    ])));
    let pod = &find(&with_volume, "Deployment")[0]["spec"]["template"]["spec"];
    assert!(
        pod["containers"][0]["args"]
            .to_string()
            .contains(r#""--vulnerability-data","/var/lib/berth/vulnerability-data""#)
    );
    assert_eq!(pod["containers"][0]["volumeMounts"][1]["readOnly"], true);
    assert_eq!(pod["volumes"][1]["persistentVolumeClaim"]["claimName"], "osv");
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

    assert_no_escalation(&docs);
    // scope cluster (the default), exactly these: a change to berth's API calls must change this
    // list on purpose.
    let mut expected: Vec<String> = CLUSTER_RULES_IN_BOTH_SCOPES.iter().map(|r| r.to_string()).collect();
    expected.extend(["apps/replicasets: list", "batch/jobs: list"].map(String::from));
    expected.extend(write_rules());
    assert_eq!(granted(find(&docs, "ClusterRole")[0]), expected);
    assert_eq!(find(&docs, "Role").len(), 1, "only the Lease's Role");
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

/// The bundled registry is Distribution 3 by default, run without its trace exporter, and a
/// stopping pod leaves the Service and finishes its requests in flight before it is killed.
#[test]
fn the_bundled_registry_is_distribution_3_and_drains_before_it_stops() {
    use base64::Engine;
    let docs =
        documents(&ok(helm().args(["template", "rel", CHART, "--namespace", "ops", "--set", "registry.enabled=true"])));
    let registry =
        find(&docs, "Deployment").into_iter().find(|d| d["metadata"]["name"] == "rel-berth-registry").unwrap();
    let pod = &registry["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry:3.1.2");
    assert_eq!(container["command"], json!(["registry", "serve", "/etc/berth-registry/config/config.yml"]));
    assert!(container["env"].as_array().unwrap().contains(&json!({"name": "OTEL_TRACES_EXPORTER", "value": "none"})));
    assert_eq!(container["lifecycle"], json!({"preStop": {"sleep": {"seconds": 5}}}));
    assert_eq!(pod["securityContext"]["runAsUser"], 1000, "the user charts/build-image registry sets");

    let config =
        find(&docs, "Secret").into_iter().find(|d| d["metadata"]["name"] == "rel-berth-registry-config").unwrap();
    let config =
        base64::engine::general_purpose::STANDARD.decode(config["data"]["config.yml"].as_str().unwrap()).unwrap();
    let config: Value = serde_yaml::from_slice(&config).unwrap();
    assert_eq!(config["http"]["draintimeout"], "10s");
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(grace > 5 + 10, "the grace period ({grace} s) covers the preStop sleep and the drain timeout");

    // The s3 credentials join the same env list.
    let s3 = documents(&ok(helm().args([
        "template",
        "rel",
        CHART,
        "--set",
        "registry.enabled=true,registry.storage.type=s3,registry.storage.s3.bucket=b,registry.storage.s3.region=r",
        "--set",
        "registry.storage.s3.credentialsSecret.name=keys",
    ])));
    let s3 = find(&s3, "Deployment").into_iter().find(|d| d["metadata"]["name"] == "rel-berth-registry").unwrap();
    let names: Vec<&str> = s3["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["OTEL_TRACES_EXPORTER", "REGISTRY_STORAGE_S3_ACCESSKEY", "REGISTRY_STORAGE_S3_SECRETKEY"]);
}

/// charts/build-image and charts/Dockerfile build berth's image two ways; both must run as the
/// chart's user with the same entrypoint, command and port. So must the registry image.
#[test]
fn the_image_script_and_the_dockerfile_agree_with_the_chart() {
    let script = std::fs::read_to_string(repo_path("charts/build-image")).unwrap();
    let dockerfile = std::fs::read_to_string(repo_path("charts/Dockerfile")).unwrap();
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo_path("charts/berth/values.yaml")).unwrap()).unwrap();
    let berth = r#"config_user="65532:65532" entrypoint='["/berth"]' cmd='["run"]' port=8080"#;
    assert!(script.contains(berth), "charts/build-image berth no longer sets {berth}");
    for line in ["USER 65532:65532", "EXPOSE 8080", r#"ENTRYPOINT ["/berth"]"#, r#"CMD ["run"]"#] {
        assert!(dockerfile.lines().any(|l| l == line), "charts/Dockerfile lacks {line}");
    }
    assert_eq!(values["podSecurityContext"]["runAsUser"], 65532);
    assert_eq!(values["podSecurityContext"]["runAsGroup"], 65532);
    assert_eq!(values["service"]["port"], 8080);
    let registry =
        r#"config_user="1000:1000" entrypoint='["registry"]' cmd='["serve","/etc/distribution/config.yml"]' port=5000"#;
    assert!(script.contains(registry), "charts/build-image registry no longer sets {registry}");
    assert_eq!(values["registry"]["podSecurityContext"]["runAsUser"], 1000);
    assert_eq!(values["registry"]["podSecurityContext"]["runAsGroup"], 1000);
    assert_eq!(values["registry"]["service"]["port"], 5000);
    let go_mod = std::fs::read_to_string(repo_path("charts/registry-image/go.mod")).unwrap();
    let tag = values["registry"]["image"]["tag"].as_str().unwrap();
    assert!(
        go_mod.contains(&format!("github.com/distribution/distribution/v3 v{tag}\n")),
        "the chart's registry tag {tag} is the version charts/build-image registry builds (charts/registry-image/go.mod)"
    );
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
    let namespaced = vec!["--set", "rbac.scope=namespaces"];
    for extra in [vec![], everything_on(), namespaced.clone()] {
        let manifests = ok(helm().args(["template", "rel", CHART, "--namespace", &ns.name]).args(&extra));
        let applied = server_dry_run(cp, &ns.name, &manifests);
        let kinds = find(&documents(&manifests), "Deployment").len();
        assert_eq!(applied.matches("deployment.apps/").count(), kinds, "{applied}");
        assert!(
            applied.contains("clusterrole.rbac.authorization.k8s.io/rel-berth created (server dry run)"),
            "{applied}"
        );
        if extra == everything_on() {
            assert!(applied.contains("registry.berth.dev/rel-berth created (server dry run)"), "{applied}");
            assert!(applied.contains("networkpolicy.networking.k8s.io/rel-berth created"), "{applied}");
        }
        if extra == namespaced {
            assert!(applied.contains("role.rbac.authorization.k8s.io/rel-berth created (server dry run)"), "{applied}");
            assert!(applied.contains("rolebinding.rbac.authorization.k8s.io/rel-berth created"), "{applied}");
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
    assert_eq!(find(&docs, "CustomResourceDefinition").len(), 5, "the base installs the CRDs too");
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
    let osv = support::scanning_data().join("osv-db");
    let mut extra = vec!["--repository-poll-interval", "2s", "--vulnerability-data", osv.to_str().unwrap()];
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
            &serde_json::from_value(create("Repository", "app", json!({"registryRef": {"name": registry_name}, "visibility": "Private", "lifecyclePolicyRef": {"name": "keep-one"}, "scanOnPush": true})))
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

    // Scanning: the ImageScan created, scanned (layers read with berth's own token), its status
    // written and its SBOM attached; a manual request passed on to it by patch.
    let scans = Api::<berth::api::ImageScan>::namespaced(ns.client.clone(), &ns.name);
    let scanned = |requested: Option<&'static str>| {
        let scans = scans.clone();
        let d1 = d1.clone();
        async move {
            let list = scans.list(&Default::default()).await.map_err(|e| e.to_string())?;
            let scan = list.items.into_iter().find(|s| s.spec.digest == d1).ok_or("no ImageScan yet")?;
            let status = scan.status.clone().unwrap_or_default();
            let done = status.phase == berth::api::ScanPhase::Complete
                && status.sbom.is_some()
                && (requested.is_none() || status.requested.as_deref() == requested);
            if done { Ok(()) } else { Err(format!("{status:?}")) }
        }
    };
    eventually(WAIT, "v1 scanned, its SBOM attached", || scanned(None)).await;
    repos
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"berth.dev/scan": "now"}}})),
        )
        .await
        .unwrap();
    eventually(WAIT, "v1 scanned again on request", || scanned(Some("now"))).await;

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

    // A rollout: the annotated Deployment, in a namespace that opted in, is pinned to the tag's
    // digest.
    ns.enable_rollouts(true).await;
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

    // The same identity runs an ECR Registry (moto as the ECR API): a Repository created there
    // with a Native lifecycle policy put on it, an AWS principal's repository policy statement,
    // and a pull secret with a token fetched as the pull role.
    let moto = support::moto::Moto::start().await;
    let ecr_client = moto.client().await;
    let ecr_account = support::moto::registry_id();
    let ecr_name = format!("{}-ecr", ns.name);
    let keys: Secret = serde_json::from_value(json!({
        "metadata": {"name": "aws"},
        "stringData": {"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": "example"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name).create(&PostParams::default(), &keys).await.unwrap();
    let ecr_registry: Registry = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": ecr_name, "labels": {"berth.dev/test": ns.name}},
        "spec": {
            "type": "ecr", "url": format!("https://{}", support::moto::host(&ecr_account)),
            "ecr": {"endpoint": moto.endpoint(), "pullSecretRoleArn": "arn:aws:iam::210987654321:role/berth-pull"},
            "credentialsSecretRef": {"name": "aws", "namespace": ns.name}, "checkInterval": "2s",
        },
    }))
    .unwrap();
    Api::<Registry>::all(ns.client.clone()).create(&PostParams::default(), &ecr_registry).await.unwrap();
    let native = json!({"rules": [rule], "mode": "Native"});
    policies
        .create(&PostParams::default(), &serde_json::from_value(create("LifecyclePolicy", "native", native)).unwrap())
        .await
        .unwrap();
    repos
        .create(
            &PostParams::default(),
            &serde_json::from_value(create(
                "Repository",
                "on-ecr",
                json!({"registryRef": {"name": ecr_name}, "lifecyclePolicyRef": {"name": "native"}}),
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let ecr_grants = json!({
        "repositories": {"names": ["on-ecr"]},
        "grants": [{"subjects": [{"kind": "AWSPrincipal", "name": "arn:aws:iam::111122223333:role/ci"}, {"kind": "ServiceAccount", "name": "runtime"}], "actions": ["pull"]}],
        "pullSecrets": {"secretName": "ecr-pull"},
    });
    access
        .create(&PostParams::default(), &serde_json::from_value(create("AccessPolicy", "ecr", ecr_grants)).unwrap())
        .await
        .unwrap();
    let path = format!("{}/on-ecr", ns.name);
    eventually(WAIT, "on ECR: the repository, its Native policy, berth's statement and the pull secret", || {
        let (ecr_client, secrets, path, account) =
            (ecr_client.clone(), secrets.clone(), path.clone(), ecr_account.clone());
        async move {
            let lifecycle = ecr_client.get_lifecycle_policy().registry_id(&account).repository_name(&path).send().await;
            let policy = ecr_client.get_repository_policy().registry_id(&account).repository_name(&path).send().await;
            let secret = secrets.get_opt("ecr-pull").await.map_err(|e| e.to_string())?;
            let has = (
                lifecycle.is_ok(),
                policy.ok().and_then(|p| p.policy_text().map(|t| t.contains("111122223333:role/ci"))).unwrap_or(false),
                secret.is_some_and(|s| {
                    String::from_utf8_lossy(&s.data.unwrap_or_default()[".dockerconfigjson"].0)
                        .contains("210987654321-auth-token")
                }),
            );
            if has == (true, true, true) { Ok(()) } else { Err(format!("{has:?}")) }
        }
    })
    .await;
    let on_ecr = repos.get("on-ecr").await.unwrap();
    let on_ecr = serde_json::to_value(&on_ecr.status).unwrap();
    assert!(is_ready(&on_ecr) && on_ecr["ecr"]["arn"].is_string(), "{on_ecr}");

    // Nothing berth asked for was refused: its whole log (its stderr, through /proc, since the
    // harness keeps only the tail at hand) names no 403.
    let pid = berth.pid().expect("berth is running");
    let log = std::fs::read_to_string(format!("/proc/{pid}/fd/2")).unwrap_or_else(|_| berth.log_tail());
    assert!(!log.is_empty(), "berth's log is empty");
    assert!(!log.to_lowercase().contains("forbidden"), "berth was refused something:\n{log}");
    // berth reports most API errors in status conditions and Events rather than its log.
    let objects = ok(cp.kubectl().args([
        "get",
        "repositories,accesspolicies,lifecyclepolicies,imagescans,events",
        "-o",
        "json",
        "-n",
        &ns.name,
    ]));
    let registry_object = ok(cp.kubectl().args(["get", "registry", &registry_name, "-o", "json"]));
    let ecr_object = ok(cp.kubectl().args(["get", "registry", &ecr_name, "-o", "json"]));
    assert!(ecr_object.contains("\"Reachable\""), "{ecr_object}");
    for reported in [objects, registry_object, ecr_object] {
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

/// `ready` of a berth object's status, owned: (status, reason, message).
fn ready_of(status: &Value) -> Option<(String, String, String)> {
    let c = status["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?;
    let field = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((field("status"), field("reason"), field("message")))
}

/// `rbac.scope: namespaces` as the chart runs it: berth, with nothing but the chart's identity and
/// the `--namespaces` the chart gives it, does its job in the namespaces it is installed for
/// (signing keys in the release namespace; a Repository, its ledger, pull secrets and a rollout
/// in a listed one), still sees images in use everywhere, reports what lies outside instead of
/// trying, and the API server refuses that identity every Secret and every write elsewhere.
#[tokio::test]
async fn in_the_namespaced_scope_berth_works_in_its_namespaces_and_is_refused_elsewhere() {
    let cp = control_plane().await;
    cp.install_crds().await;
    let home = cp.namespace("chart-scoped").await;
    let team = cp.namespace("chart-scoped-team").await;
    let other = cp.namespace("chart-scoped-other").await;
    let (r, t, o) = (home.name.clone(), team.name.clone(), other.name.clone());
    let admin = home.client.clone();
    let fullname = format!("{r}-berth");
    let dir = tempfile::tempdir().unwrap();
    let installed = ok(helm()
        .args(["install", &r, CHART, "--namespace", &r, "--skip-crds", "--set", "rbac.scope=namespaces", "--set"])
        .arg(format!("rbac.namespaces={{{t}}}"))
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig));
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    // berth runs with the list the chart gives its Deployment.
    let deployment = Api::<Deployment>::namespaced(admin.clone(), &r).get(&fullname).await.unwrap();
    let args = deployment.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    let at = args.iter().position(|a| a == "--namespaces").expect("the chart passes --namespaces");
    let managed = args[at + 1].clone();
    assert_eq!(managed, format!("{r},{t}"));

    // A Registry in token mode whose signing keys live in the release namespace, and one whose
    // credentials would have to be read outside.
    let (berth_port, registry_port) = (free_port(), free_port());
    let service = format!("registry-{t}");
    let registries = Api::<Registry>::all(admin.clone());
    let registry_object = |name: &str, spec: Value| -> Registry {
        serde_json::from_value(json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": name, "labels": {"berth.dev/test": t}}, "spec": spec,
        }))
        .unwrap()
    };
    let token_auth = json!({"issuer": "berth-test", "service": service,
        "signingKeySecretRef": {"name": "berth-token-signing", "namespace": r}});
    let spec =
        json!({"url": format!("http://127.0.0.1:{registry_port}"), "checkInterval": "2s", "tokenAuth": token_auth});
    registries.create(&PostParams::default(), &registry_object(&t, spec)).await.unwrap();
    let outside = format!("{t}-outside");
    let spec = json!({"url": format!("http://127.0.0.1:{}", free_port()), "credentialsSecretRef": {"name": "creds", "namespace": o}});
    registries.create(&PostParams::default(), &registry_object(&outside, spec)).await.unwrap();

    let kubeconfig = service_account_kubeconfig(cp, admin.clone(), &r, &fullname, dir.path()).await;
    let extra = [
        "--namespaces",
        managed.as_str(),
        "--repository-poll-interval",
        "2s",
        "--leader-elect",
        "--leader-elect-namespace",
        r.as_str(),
        "--leader-elect-lease",
        "berth",
    ];
    let berth = support::berth::Berth::start_as(cp, berth_port, &t, &extra, kubeconfig.clone()).await;

    let bundle = eventually(WAIT, "the signing Secret in the release namespace", || {
        let secrets = Api::<Secret>::namespaced(admin.clone(), &r);
        let log = berth.log_tail();
        async move {
            let s = secrets.get_opt("berth-token-signing").await.map_err(|e| e.to_string())?;
            let s = s.ok_or(format!("not yet\n{log}"))?;
            s.data.unwrap_or_default().get("bundle.pem").map(|b| b.0.clone()).ok_or_else(|| "no bundle.pem".into())
        }
    })
    .await;
    let bundle_path = dir.path().join("bundle.pem");
    std::fs::write(&bundle_path, bundle).unwrap();
    let _registry = support::TestRegistry::start_with(support::RegistryOptions {
        port: Some(registry_port),
        token_auth: Some(support::registry::TokenAuthConfig {
            realm: format!("http://127.0.0.1:{berth_port}/token/{t}"),
            service: service.clone(),
            issuer: "berth-test".into(),
            root_cert_bundle: bundle_path,
        }),
        ..Default::default()
    })
    .await;
    let registry_says = |name: String, expected: (&'static str, &'static str)| {
        let registries = registries.clone();
        let log = berth.log_tail();
        async move {
            let status = status(&registries, &name).await?;
            match ready_of(&status) {
                Some((s, reason, message)) if (s.as_str(), reason.as_str()) == expected => Ok(message),
                _ => Err(format!("{status}\n{log}")),
            }
        }
    };
    eventually(WAIT, "the Registry Ready", || registry_says(t.clone(), ("True", "Reachable"))).await;
    let told = eventually(WAIT, "the outside Registry told why", || {
        registry_says(outside.clone(), ("False", "NamespaceNotManaged"))
    })
    .await;
    assert!(told.contains(&format!("namespace {o}")) && told.contains("rbac.namespaces"), "{told}");

    // A Repository with its ledger, CI pushing as its ServiceAccount, pull secrets for the listed
    // namespace and for one outside that would accept them.
    let create = |kind: &str, name: &str, spec: Value| json!({"apiVersion": "berth.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec});
    let repos = Api::<Repository>::namespaced(admin.clone(), &t);
    let repo =
        create("Repository", "app", json!({"registryRef": {"name": t}, "lifecyclePolicyRef": {"name": "keep-one"}}));
    repos.create(&PostParams::default(), &serde_json::from_value(repo.clone()).unwrap()).await.unwrap();
    eventually(WAIT, "Repository app Ready", || {
        let repos = repos.clone();
        let log = berth.log_tail();
        async move {
            let status = status(&repos, "app").await?;
            if is_ready(&status) { Ok(()) } else { Err(format!("{status}\n{log}")) }
        }
    })
    .await;
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), &t);
    for name in ["ci", "runtime"] {
        let account = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        accounts.create(&PostParams::default(), &account).await.unwrap();
    }
    let request = TokenRequest {
        spec: TokenRequestSpec { audiences: vec![], expiration_seconds: Some(3600), ..Default::default() },
        ..Default::default()
    };
    let ci_token = accounts.create_token_request("ci", &PostParams::default(), &request).await.unwrap();
    let ci = Creds::Basic { username: "ci".into(), password: ci_token.status.unwrap().token };
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone());
    let accept = json!({"metadata": {"annotations": {"berth.dev/accept-pull-secrets-from": t}}});
    namespaces.patch(&o, &Default::default(), &kube::api::Patch::Merge(accept)).await.unwrap();
    let access = Api::<AccessPolicy>::namespaced(admin.clone(), &t);
    let policy = create(
        "AccessPolicy",
        "ci",
        json!({
            "repositories": {"names": ["app"]},
            "grants": [{"subjects": [{"kind": "ServiceAccount", "name": "ci"}], "actions": ["pull", "push"]}],
            "pullSecrets": {"namespaces": [t, o], "serviceAccounts": ["runtime"]},
        }),
    );
    access.create(&PostParams::default(), &serde_json::from_value(policy).unwrap()).await.unwrap();
    let skopeo = Skopeo::default();
    let mut layout = OciLayout::default();
    let image = format!("127.0.0.1:{registry_port}/{t}/app");
    let d1 = layout.add_image("v1", "one").digest;
    eventually(WAIT, "ci pushes app:v1", || {
        let (skopeo, layout, image, ci) = (&skopeo, &layout, &image, &ci);
        async move {
            let out = skopeo.push(layout.path(), "v1", &format!("{image}:v1"), ci, false).await;
            if out.status.success() { Ok(()) } else { Err(describe(&out)) }
        }
    })
    .await;
    let d2 = layout.add_image("v2", "two").digest;
    let out = skopeo.push(layout.path(), "v2", &format!("{image}:v2"), &ci, false).await;
    assert!(out.status.success(), "push v2: {}", describe(&out));
    eventually(WAIT, "the ledger in the listed namespace", || {
        let configmaps = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), &t);
        let d1 = d1.clone();
        async move {
            let list = configmaps.list(&Default::default()).await.map_err(|e| e.to_string())?;
            let ledger =
                list.items.iter().filter(|c| c.metadata.name.as_deref().unwrap_or("").starts_with("berth-ledger-app-"));
            if ledger.map(|c| format!("{:?}", c.data)).any(|d| d.contains(&d1)) {
                Ok(())
            } else {
                Err("no ledger entry".into())
            }
        }
    })
    .await;
    let told = eventually(WAIT, "the policy: pull secret written here, target outside told", || {
        let (access, secrets) = (access.clone(), Api::<Secret>::namespaced(admin.clone(), &t));
        async move {
            let status = status(&access, "ci").await?;
            let written = secrets.get_opt("berth-pull").await.map_err(|e| e.to_string())?.is_some();
            match ready_of(&status) {
                Some((s, reason, message)) if s == "False" && reason == "NamespaceNotManaged" && written => {
                    Ok((message, status["pullSecretNamespaces"].clone()))
                }
                _ => Err(format!("pull secret written: {written}; {status}")),
            }
        }
    })
    .await;
    assert!(told.0.contains(&format!("namespace {o}")), "{}", told.0);
    assert_eq!(told.1, json!([t]));
    let outside_secret = Api::<Secret>::namespaced(admin.clone(), &o).get_opt("berth-pull").await.unwrap();
    assert!(outside_secret.is_none(), "berth wrote a pull secret outside its namespaces");

    // Rollouts: both namespaces opt in; only the listed one is rolled out. The workload outside
    // still keeps its image in use (read everywhere), so the lifecycle policy protects v1.
    team.enable_rollouts(true).await;
    other.enable_rollouts(true).await;
    let workload = |tag: &str| -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "annotations": {"berth.dev/rollout": "digest"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": format!("{image}:{tag}")}]}}},
        }))
        .unwrap()
    };
    let here = Api::<Deployment>::namespaced(admin.clone(), &t);
    let there = Api::<Deployment>::namespaced(admin.clone(), &o);
    here.create(&PostParams::default(), &workload("v2")).await.unwrap();
    there.create(&PostParams::default(), &workload("v1")).await.unwrap();
    let image_of = |d: Deployment| d.spec.and_then(|s| s.template.spec).and_then(|s| s.containers[0].image.clone());
    let pinned = format!("{image}:v2@{d2}");
    eventually(WAIT, "web pinned in the listed namespace", || {
        let (here, pinned) = (here.clone(), pinned.clone());
        async move {
            let now = image_of(here.get("web").await.map_err(|e| e.to_string())?);
            if now.as_deref() == Some(pinned.as_str()) { Ok(()) } else { Err(format!("{now:?}")) }
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(image_of(there.get("web").await.unwrap()), Some(format!("{image}:v1")), "rolled out outside");
    let policies = Api::<LifecyclePolicy>::namespaced(admin.clone(), &t);
    let rule = json!({"rulePriority": 1, "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}});
    let lifecycle = create("LifecyclePolicy", "keep-one", json!({"rules": [rule], "dryRun": true}));
    policies.create(&PostParams::default(), &serde_json::from_value(lifecycle).unwrap()).await.unwrap();
    let ran = eventually(WAIT, "LifecyclePolicy keep-one ran", || {
        let policies = policies.clone();
        async move {
            let status = status(&policies, "keep-one").await?;
            if ready(&status) == Some(("True", "DryRun")) { Ok(status) } else { Err(status.to_string()) }
        }
    })
    .await;
    assert_eq!(ran["protectedCount"], 1, "v1 {d1} is in use outside the listed namespaces: {ran}");

    // Nothing berth asked for was refused: it never tried outside.
    let pid = berth.pid().expect("berth is running");
    let log = std::fs::read_to_string(format!("/proc/{pid}/fd/2")).unwrap_or_else(|_| berth.log_tail());
    assert!(!log.to_lowercase().contains("forbidden"), "berth was refused something:\n{log}");
    for ns in [&r, &t] {
        let reported = ok(cp.kubectl().args([
            "get",
            "repositories,accesspolicies,lifecyclepolicies,imagescans,events",
            "-o",
            "json",
            "-n",
            ns,
        ]));
        assert!(!reported.to_lowercase().contains("forbidden"), "berth was refused something:\n{reported}");
    }
    drop(berth);

    // berth objects outside are told why nothing happens (a berth that manages that namespace's
    // objects, as `--namespace` shards them, but may not write there).
    let outside_repos = Api::<Repository>::namespaced(admin.clone(), &o);
    outside_repos.create(&PostParams::default(), &serde_json::from_value(repo).unwrap()).await.unwrap();
    let second = support::berth::Berth::start_as(cp, free_port(), &o, &["--namespaces", &managed], kubeconfig).await;
    let told = eventually(WAIT, "the Repository outside told why", || {
        let repos = outside_repos.clone();
        let log = second.log_tail();
        async move {
            let status = status(&repos, "app").await?;
            match ready_of(&status) {
                Some((s, reason, message)) if s == "False" && reason == "NamespaceNotManaged" => Ok(message),
                _ => Err(format!("{status}\n{log}")),
            }
        }
    })
    .await;
    assert!(told.contains(&format!("namespace {o}")), "{told}");
    let uri = status(&outside_repos, "app").await.unwrap()["uri"].clone();
    assert!(uri.is_null(), "nothing reconciled outside: {uri}");
    drop(second);

    // The identity: Secrets and writes only in the listed namespaces; reads everywhere.
    let user = format!("system:serviceaccount:{r}:{fullname}");
    let (in_r, in_t, in_o) = (format!("-n={r}"), format!("-n={t}"), format!("-n={o}"));
    let refused: &[&[&str]] = &[
        &["get", "secrets", &in_o],
        &["list", "secrets", "--all-namespaces"],
        &["get", "secrets", "-n=kube-system"],
        &["create", "secrets", &in_o],
        &["delete", "secrets", &in_o],
        &["patch", "deployments", "-n=kube-system"],
        &["patch", "deployments", &in_o],
        &["patch", "daemonsets", &in_o],
        &["patch", "cronjobs", &in_o],
        &["create", "configmaps", &in_o],
        &["patch", "serviceaccounts", &in_o],
        &["create", "events.events.k8s.io", &in_o],
        &["watch", "deployments", &in_o],
        &["create", "pods", &in_t],
        &["delete", "deployments", &in_t],
        &["update", "leases", &in_t],
        &["escalate", "clusterroles"],
        &["bind", "clusterroles"],
        &["impersonate", "users"],
    ];
    for args in refused {
        assert_eq!(can_i(cp, &user, args), "no", "{user} can {args:?}");
    }
    let allowed: &[&[&str]] = &[
        &["get", "secrets", &in_t],
        &["create", "secrets", &in_r],
        &["patch", "deployments", &in_t],
        &["watch", "deployments", &in_t],
        &["create", "events.events.k8s.io", &in_t],
        &["list", "pods", "--all-namespaces"],
        &["list", "deployments", &in_o],
        &["watch", "namespaces"],
        &["create", "tokenreviews.authentication.k8s.io"],
        &["patch", "repositories.berth.dev", "--subresource=status", &in_o],
        &["update", "leases", &in_r],
    ];
    for args in allowed {
        assert_eq!(can_i(cp, &user, args), "yes", "{user} cannot {args:?}");
    }
    // And for real: the API server refuses berth's token a Secret outside.
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(dir.path().join(format!("{fullname}.kubeconfig"))).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let as_berth = kube::Client::try_from(config).unwrap();
    let probe: Secret = serde_json::from_value(json!({"metadata": {"name": "probe"}})).unwrap();
    match Api::<Secret>::namespaced(as_berth, &o).create(&PostParams::default(), &probe).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("a Secret in {o} as berth: {other:?}"),
    }

    // Uninstall removes the Roles in every listed namespace.
    ok(helm().args(["uninstall", &r, "--namespace", &r, "--kubeconfig"]).arg(&cp.kubeconfig));
    let left = run(cp.kubectl().args(["get", "role", &fullname, "-n", &t]));
    assert!(!left.status.success(), "the Role in {t} outlived the release");
}
