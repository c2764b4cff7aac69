//! Scanning in the operator: images pushed to a real registry (Distribution 2.8 and 3) are
//! scanned by berth into ImageScan objects, with the same findings `berth scan` gives for the
//! same image and data; the SBOM is attached where standard tools look; Continuous scans follow
//! the data; manual requests; bad images and missing data fail with a reason.

mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use berth::{
    api::ImageScan,
    registry::{Backend, Distribution, DistributionConfig},
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use support::{
    eventually,
    scenario::{Env, WAIT},
    skopeo::describe,
};

fn data() -> PathBuf {
    support::scanning_data()
}

fn fixture(name: &str) -> PathBuf {
    data().join("fixtures").join(name)
}

/// `berth scan` on a fixture layout, with the same data: the reference for the operator.
fn cli_scan(fixture_name: &str, db: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["scan", "--image-layout"])
        .arg(fixture(fixture_name))
        .arg("--db")
        .arg(db)
        .output()
        .unwrap();
    assert!(out.status.success(), "berth scan: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn push_fixture(env: &Env, name: &str, path: &str, tag: &str) -> String {
    let dest = format!("{}:{tag}", env.registry.image(path));
    let out = env.skopeo.push_layout(&fixture(name), &dest).await;
    assert!(out.status.success(), "push {dest}: {}", describe(&out));
    env.skopeo.digest(&dest, &support::skopeo::Creds::Anonymous).await.unwrap()
}

fn scans(env: &Env) -> Api<ImageScan> {
    Api::namespaced(env.ns.client.clone(), &env.ns.name)
}

/// The ImageScan of `digest` once `check` holds for it (status as JSON).
async fn wait_scan(env: &Env, digest: &str, what: &str, check: impl Fn(&Value) -> bool) -> ImageScan {
    wait_scan_in(env, None, digest, what, check).await
}

/// The same, in one Repository (an image pushed to two has two scans).
async fn wait_scan_in(
    env: &Env,
    repository: Option<&str>,
    digest: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> ImageScan {
    let api = scans(env);
    eventually(Duration::from_secs(120), &format!("ImageScan of {digest}: {what}"), || {
        let api = api.clone();
        let check = &check;
        async move {
            let list = api.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            let scan = list
                .items
                .into_iter()
                .find(|s| s.spec.digest == digest && repository.is_none_or(|r| s.spec.repository_ref.name == r))
                .ok_or("no ImageScan yet")?;
            let status = serde_json::to_value(&scan.status).unwrap();
            if check(&status) { Ok(scan) } else { Err(status.to_string().chars().take(1500).collect()) }
        }
    })
    .await
}

fn phase(status: &Value) -> &str {
    status["phase"].as_str().unwrap_or("")
}

fn backend(env: &Env) -> Distribution {
    Distribution::new(DistributionConfig { url: env.registry.url(), ..Default::default() }).unwrap()
}

/// Every finding id the scan lists (all of them: the fixtures have fewer than 100).
fn scan_ids(scan: &ImageScan) -> BTreeSet<String> {
    scan_ids_of(scan.status.as_ref().unwrap())
}

fn cli_ids(report: &Value) -> BTreeSet<String> {
    report["vulnerabilities"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_string()).collect()
}

/// The SBOM referrer of `subject`, found as a client would: the referrers API when the registry
/// serves it, else the tag scheme's index. Returns the SBOM document.
async fn find_sbom(registry: &Distribution, path: &str, subject: &str) -> Value {
    let index = match registry.referrers(path, subject).await.unwrap() {
        Some(index) => index,
        None => registry.manifest(path, &subject.replacen(':', "-", 1)).await.expect("the referrers tag").body,
    };
    let index: Value = serde_json::from_slice(&index).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["artifactType"] == "application/vnd.cyclonedx+json")
        .unwrap_or_else(|| panic!("no CycloneDX referrer in {index}"))
        .clone();
    let manifest = registry.manifest(path, entry["digest"].as_str().unwrap()).await.unwrap();
    let manifest: Value = serde_json::from_slice(&manifest.body).unwrap();
    assert_eq!(manifest["subject"]["digest"], subject, "{manifest}");
    assert_eq!(manifest["artifactType"], "application/vnd.cyclonedx+json");
    let blob = registry.blob(path, manifest["layers"][0]["digest"].as_str().unwrap()).await.unwrap();
    serde_json::from_slice(&blob).unwrap()
}

/// Pushed images are scanned on push with the CLI's findings, summarised on the Repository,
/// their SBOM attached; an image's scan goes with the image.
async fn scans_on_push(distribution3: bool) {
    let db = data().join("osv-db");
    let test = if distribution3 { "scan-push-v3" } else { "scan-push" };
    let env = Env::with_registry(
        test,
        true,
        &["--repository-poll-interval", "1h", "--vulnerability-data", db.to_str().unwrap()],
        distribution3,
    )
    .await;
    env.create_repository("app", json!({"scanOnPush": true})).await;
    let path = format!("{}/app", env.ns.name);
    let go = push_fixture(&env, "go-binary", &path, "go").await;
    let npm = push_fixture(&env, "npm-node-modules", &path, "npm").await;
    let registry = backend(&env);

    for (name, digest) in [("go-binary", &go), ("npm-node-modules", &npm)] {
        let scan = wait_scan(&env, digest, "Complete", |s| phase(s) == "Complete").await;
        let status = scan.status.clone().unwrap();
        let reference = cli_scan(name, &db);
        assert_eq!(scan_ids(&scan), cli_ids(&reference), "{name}: the operator finds what berth scan finds");
        let total: i64 = status.finding_severity_counts.values().sum();
        assert_eq!(total as usize, reference["vulnerabilities"].as_array().unwrap().len(), "{name}");
        assert_eq!(
            status.package_count,
            Some(reference["packages"].as_array().unwrap().len() as i64),
            "{name}: {status:?}"
        );
        assert!(status.ecosystems_without_data.is_empty(), "{name}: {status:?}");
        assert_eq!(status.scanned_manifest.as_deref(), Some(digest.as_str()));
        let data_ref = status.vulnerability_data.clone().unwrap();
        assert!(data_ref.version.starts_with("sha256:"), "{data_ref:?}");
        assert!(data_ref.updated_at.is_some(), "the data's age is in status");
        assert_eq!(scan.owner_references()[0].name, "app", "owned by its Repository");
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Complete"));
        // The SBOM is where clients look for it, and lists the packages.
        let sbom_ref = status.sbom.clone().expect("an SBOM was attached");
        let sbom = find_sbom(&registry, &path, digest).await;
        assert_eq!(sbom["bomFormat"], "CycloneDX");
        let purls: BTreeSet<&str> =
            sbom["components"].as_array().unwrap().iter().filter_map(|c| c["purl"].as_str()).collect();
        for p in reference["packages"].as_array().unwrap() {
            let name = p["name"].as_str().unwrap();
            assert!(purls.iter().any(|u| u.contains(name)), "{name} missing from the SBOM: {purls:?}");
        }
        assert!(sbom_ref.digest.starts_with("sha256:"));
        let events = env.events_for(&scan.name_any()).await;
        assert!(events.iter().any(|e| e.1 == "ScanComplete"), "{events:?}");
    }

    // The Repository sums its tagged images' scans; the referrers tag is not an image to scan.
    let go_high = |s: &Value| s["scans"]["complete"] == 2;
    let status = env.wait_repo("app", "both scans summarised", go_high).await;
    let listed: i64 = scans(&env)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.status.as_ref().unwrap().finding_severity_counts.values().sum::<i64>())
        .sum();
    let summarised: i64 =
        status["scans"]["findingSeverityCounts"].as_object().unwrap().values().map(|v| v.as_i64().unwrap()).sum();
    assert_eq!(summarised, listed, "{status}");
    assert_eq!(status["scans"]["frequency"], "OnPush");
    assert_eq!(scans(&env).list(&ListParams::default()).await.unwrap().items.len(), 2, "the SBOM index is not scanned");

    // The SBOMs and their referrers indexes are not images to a lifecycle rule: two images,
    // kept by `imageCountMoreThan: 2` (counted with the indexes and SBOMs, there would be six).
    let policy: berth::api::LifecyclePolicy = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "LifecyclePolicy", "metadata": {"name": "keep-two"},
        "spec": {"dryRun": true, "interval": "1s", "rules": [{"rulePriority": 1,
            "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 2},
            "action": {"type": "expire"}}]},
    }))
    .unwrap();
    let policies = Api::<berth::api::LifecyclePolicy>::namespaced(env.ns.client.clone(), &env.ns.name);
    policies.create(&Default::default(), &policy).await.unwrap();
    env.repos()
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"lifecyclePolicyRef": {"name": "keep-two"}}})),
        )
        .await
        .unwrap();
    let ran = eventually(WAIT, "the lifecycle policy ran", || {
        let policies = policies.clone();
        async move {
            let p = policies.get("keep-two").await.map_err(|e| e.to_string())?;
            let status = serde_json::to_value(&p.status).unwrap();
            if status.get("lastRunAt").is_some() { Ok(status) } else { Err(status.to_string()) }
        }
    })
    .await;
    assert_eq!(ran["expiredCount"], 0, "{ran}");
    assert_eq!(ran["keptCount"], 2, "{ran}");

    // The image goes; its scan follows at the next reconcile.
    env.registry.delete_manifest(&path, &npm).await;
    let name = wait_scan(&env, &npm, "exists", |_| true).await.name_any();
    env.repos()
        .patch("app", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"test/nudge": "1"}}})))
        .await
        .unwrap();
    let api = scans(&env);
    eventually(WAIT, "the deleted image's ImageScan is gone", || {
        let api = api.clone();
        let name = name.clone();
        async move {
            match api.get_opt(&name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            }
        }
    })
    .await;
    assert!(scans(&env).get_opt(&scan_name_of(&env, &go).await).await.unwrap().is_some());
}

async fn scan_name_of(env: &Env, digest: &str) -> String {
    wait_scan(env, digest, "exists", |_| true).await.name_any()
}

#[tokio::test]
async fn pushed_images_are_scanned_with_the_cli_findings_and_get_an_sbom() {
    scans_on_push(false).await;
}

#[tokio::test]
async fn pushed_images_are_scanned_on_distribution_3() {
    scans_on_push(true).await;
}

/// `Continuous` re-matches kept inventories when the data changes (no layer read again);
/// `OnPush` keeps its findings; `Manual` scans only when asked, on the Repository or the scan.
#[tokio::test]
async fn continuous_scans_follow_the_data_and_manual_scans_wait_to_be_asked() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("db");
    let copy = |eco: &str| {
        std::fs::create_dir_all(db.join(eco)).unwrap();
        std::fs::copy(data().join("osv-db").join(eco).join("all.zip"), db.join(eco).join("all.zip")).unwrap();
    };
    copy("npm");
    let mut env = Env::with_args(
        "scan-continuous",
        true,
        &[
            "--repository-poll-interval",
            "1h",
            "--vulnerability-data",
            db.to_str().unwrap(),
            "--vulnerability-data-refresh",
            "1s",
        ],
    )
    .await;
    let rules = json!({"scanning": {"rules": [
        {"scanFrequency": "Continuous", "repositoryFilters": [format!("{}/live", env.ns.name)]},
        {"scanFrequency": "OnPush", "repositoryFilters": [format!("{}/once", env.ns.name)]},
        {"scanFrequency": "Manual", "repositoryFilters": [format!("{}/ask*", env.ns.name)]},
    ]}});
    support::scenario::patch_registry_spec(&env.ns.client, &env.name, rules).await;
    for repo in ["live", "once", "ask"] {
        env.create_repository(repo, json!({})).await;
    }
    let live = push_fixture(&env, "go-binary", &format!("{}/live", env.ns.name), "v1").await;
    // OnPush: one image the data covers (npm), one it does not (Go).
    let once = push_fixture(&env, "npm-node-modules", &format!("{}/once", env.ns.name), "npm").await;
    let once_go = push_fixture(&env, "go-binary", &format!("{}/once", env.ns.name), "go").await;
    env.wait_repo("live", "one scan", |s| s["scans"]["complete"] == 1).await;
    env.wait_repo("once", "two scans", |s| s["scans"]["complete"] == 2).await;
    let once_first = wait_scan(&env, &once, "Complete", |s| phase(s) == "Complete").await.status.unwrap();
    assert!(!once_first.findings.is_empty());
    // Only npm data: the Go packages are named as not checked, not reported clean.
    let first = wait_scan_in(&env, Some("live"), &live, "Complete", |s| phase(s) == "Complete").await;
    let status = first.status.clone().unwrap();
    assert!(status.findings.is_empty());
    assert_eq!(status.ecosystems_without_data, vec!["Go".to_string()]);
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("no vulnerability data for Go"), "{}", ready.message);

    let requests = "berth_registry_requests_total{controller=\"imagescan\"}";
    let before = env.berth.metric(requests).await;
    copy("Go");
    let api = scans(&env);
    let rematched = eventually(Duration::from_secs(60), "the Continuous scan re-matched with Go data", || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            let live = list.items.into_iter().find(|s| s.spec.repository_ref.name == "live").ok_or("no scan")?;
            let status = live.status.clone().unwrap_or_default();
            if !status.findings.is_empty() { Ok(live) } else { Err(format!("{status:?}")) }
        }
    })
    .await;
    let status = rematched.status.clone().unwrap();
    assert!(status.ecosystems_without_data.is_empty());
    assert_ne!(status.vulnerability_data, first.status.clone().unwrap().vulnerability_data);
    let reference = cli_scan("go-binary", &data().join("osv-db"));
    assert_eq!(scan_ids(&rematched), cli_ids(&reference));
    assert_eq!(env.berth.metric(requests).await, before, "a re-match reads no layer");
    let events = env.events_for(&rematched.name_any()).await;
    assert!(events.iter().any(|e| e.1 == "FindingsChanged"), "{events:?}");
    // OnPush scanned once: an image the data covered keeps the findings of the data it was
    // scanned with; one whose Go packages could not be checked is checked now that Go is there.
    let once_go = wait_scan_in(&env, Some("once"), &once_go, "OnPush, its Go packages checked now", |s| {
        phase(s) == "Complete" && s["ecosystemsWithoutData"].is_null() && !s["findings"].is_null()
    })
    .await;
    assert_eq!(scan_ids(&once_go), cli_ids(&reference));
    let once_now = wait_scan(&env, &once, "Complete", |s| phase(s) == "Complete").await.status.unwrap();
    assert_eq!(once_now.vulnerability_data, once_first.vulnerability_data, "OnPush does not follow the data");

    // Manual: nothing until asked.
    let ask = push_fixture(&env, "npm-node-modules", &format!("{}/ask", env.ns.name), "v1").await;
    env.wait_repo("ask", "the tag is seen", |s| s["tagCount"] == 1).await;
    let ask_scans = |items: Vec<ImageScan>| items.into_iter().filter(|s| s.spec.repository_ref.name == "ask").count();
    assert_eq!(ask_scans(scans(&env).list(&ListParams::default()).await.unwrap().items), 0, "Manual waits");
    env.repos()
        .patch(
            "ask",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"berth.dev/scan": "first"}}})),
        )
        .await
        .unwrap();
    let asked = wait_scan(&env, &ask, "answered", |s| phase(s) == "Complete" && s["requested"] == "first").await;
    let completed = asked.status.clone().unwrap().completed_at.unwrap();
    scans(&env)
        .patch(
            &asked.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"berth.dev/scan": "again"}}})),
        )
        .await
        .unwrap();
    let again = wait_scan(&env, &ask, "asked again", |s| phase(s) == "Complete" && s["requested"] == "again").await;
    assert!(again.status.unwrap().completed_at.unwrap().0 >= completed.0);
    env.berth.stop();
}

/// Bad images fail with a reason, artifacts are not scanned, and nothing else breaks.
#[tokio::test]
async fn bad_images_fail_with_a_reason_and_artifacts_are_unsupported() {
    let db = data().join("osv-db");
    let env = Env::with_args(
        "scan-bad",
        true,
        &["--repository-poll-interval", "1h", "--vulnerability-data", db.to_str().unwrap()],
    )
    .await;
    env.create_repository("bad", json!({"scanOnPush": true})).await;
    let path = format!("{}/bad", env.ns.name);
    let registry = backend(&env);
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = registry.put_blob(&path, config).await.unwrap();
    let image = |layer_type: &str, layer: &str, size: usize| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": layer, "size": size}],
        }))
        .unwrap()
    };
    // A "gzip" layer that is not gzip.
    let junk = b"this is not a gzip stream".repeat(10);
    let junk_digest = registry.put_blob(&path, &junk).await.unwrap();
    let not_gzip = registry
        .put_manifest(
            &path,
            "not-gzip",
            "application/vnd.oci.image.manifest.v1+json",
            &image("application/vnd.oci.image.layer.v1.tar+gzip", &junk_digest, junk.len()),
        )
        .await
        .unwrap();
    // A tar layer that is not a tar.
    let not_tar = registry
        .put_manifest(
            &path,
            "not-tar",
            "application/vnd.oci.image.manifest.v1+json",
            &image("application/vnd.oci.image.layer.v1.tar", &junk_digest, junk.len()),
        )
        .await
        .unwrap();
    // An artifact (a Helm chart's shape): not a container image.
    let artifact = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.thing",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": registry.put_blob(&path, b"{}").await.unwrap(), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": junk_digest, "size": junk.len()}],
    }))
    .unwrap();
    let artifact = registry
        .put_manifest(&path, "artifact", "application/vnd.oci.image.manifest.v1+json", &artifact)
        .await
        .unwrap();
    // A good image beside them is still scanned.
    let good = push_fixture(&env, "npm-node-modules", &path, "good").await;

    let failed = wait_scan(&env, &not_gzip, "Failed", |s| phase(s) == "Failed").await.status.unwrap();
    assert_eq!(failed.reason.as_deref(), Some("InvalidCompression"), "{failed:?}");
    assert!(failed.findings.is_empty() && failed.finding_severity_counts.is_empty());
    let failed = wait_scan(&env, &not_tar, "Failed", |s| phase(s) == "Failed").await.status.unwrap();
    assert_eq!(failed.reason.as_deref(), Some("InvalidLayer"), "{failed:?}");
    let unsupported = wait_scan(&env, &artifact, "UnsupportedImage", |s| phase(s) == "UnsupportedImage").await;
    let message = unsupported.status.clone().unwrap().message.unwrap();
    assert!(message.contains("application/vnd.example.thing"), "{message}");
    wait_scan(&env, &good, "Complete", |s| phase(s) == "Complete").await;
    let events = env.events_for(&wait_scan(&env, &not_gzip, "exists", |_| true).await.name_any()).await;
    assert!(events.iter().any(|e| e.0 == "Warning" && e.1 == "ScanFailed"), "{events:?}");
    let status = env.wait_repo("bad", "summary", |s| s["scans"]["failed"] == 3 && s["scans"]["complete"] == 1).await;
    assert_eq!(status["conditions"][0]["status"], "True", "the Repository itself is fine: {status}");
}

/// Without vulnerability data a scan fails and says so; it never reports an image clean.
#[tokio::test]
async fn a_scan_without_data_says_so() {
    let mut env = Env::new("scan-nodata", true, "1h").await;
    env.create_repository("app", json!({"scanOnPush": true})).await;
    let digest = push_fixture(&env, "go-binary", &format!("{}/app", env.ns.name), "v1").await;
    let status = wait_scan(&env, &digest, "Failed", |s| phase(s) == "Failed").await.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("NoVulnerabilityData"));
    assert!(status.message.unwrap().contains("--vulnerability-data"));
    assert!(status.finding_severity_counts.is_empty() && status.package_count.is_none());
    env.berth.stop();
}

/// Air-gapped sites keep the data as an OCI artifact in their own registry (`oras push REF
/// npm/all.zip Go/all.zip`): berth reads it through the Registry object it names, follows a
/// new push of the tag, and scans with it; the version names the archives' bytes, as for a
/// folder holding the same archives.
#[tokio::test]
async fn an_oci_artifact_in_the_registry_is_the_data_source() {
    // Its own download cache: a cache holding an earlier run's archives is loaded at start.
    let cache = tempfile::tempdir().unwrap();
    let mut env = Env::with_args(
        "scan-oci-data",
        true,
        &[
            "--repository-poll-interval",
            "1h",
            "--vulnerability-data",
            "oci://{ns}/{ns}/osv:latest",
            "--vulnerability-data-refresh",
            "1s",
            "--vulnerability-data-cache",
            cache.path().to_str().unwrap(),
        ],
    )
    .await;
    let registry = backend(&env);
    let data_path = format!("{}/osv", env.ns.name);
    let osv = data().join("osv-db");
    // Pushes an artifact holding `ecosystems`' archives under `latest`, as oras does; returns
    // the version a folder of the same archives has.
    let push_data = |ecosystems: &'static [&'static str]| {
        let registry = &registry;
        let data_path = &data_path;
        let osv = &osv;
        async move {
            let folder = tempfile::tempdir().unwrap();
            let mut layers = Vec::new();
            for eco in ecosystems {
                let bytes = std::fs::read(osv.join(eco).join("all.zip")).unwrap();
                std::fs::create_dir_all(folder.path().join(eco)).unwrap();
                std::fs::write(folder.path().join(eco).join("all.zip"), &bytes).unwrap();
                let digest = registry.put_blob(data_path, &bytes).await.unwrap();
                layers.push(json!({
                    "mediaType": "application/zip", "digest": digest, "size": bytes.len(),
                    "annotations": {"org.opencontainers.image.title": format!("{eco}/all.zip")},
                }));
            }
            let config = registry.put_blob(data_path, b"{}").await.unwrap();
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.berth.osv.v1",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
                "layers": layers,
            }))
            .unwrap();
            registry
                .put_manifest(data_path, "latest", "application/vnd.oci.image.manifest.v1+json", &manifest)
                .await
                .unwrap();
            berth::scanning::source::load_dir(folder.path(), &Default::default()).unwrap().version
        }
    };
    env.create_repository("app", json!({"scanOnPush": true})).await;
    let app = format!("{}/app", env.ns.name);

    // No artifact yet: the scan waits or fails, and says why; never "no findings".
    let first = push_fixture(&env, "npm-node-modules", &app, "v1").await;
    let waiting =
        wait_scan(&env, &first, "no data yet", |s| s["findings"].is_null() && !s["conditions"].is_null()).await;
    assert_ne!(waiting.status.unwrap().phase, berth::api::ScanPhase::Complete);

    let v1 = push_data(&["npm"]).await;
    let scan = wait_scan(&env, &first, "Complete with the artifact's data", |s| phase(s) == "Complete").await;
    let status = scan.status.unwrap();
    assert_eq!(status.vulnerability_data.as_ref().unwrap().version, v1, "the artifact's bytes name the data");
    assert_eq!(scan_ids_of(&status), cli_ids(&cli_scan("npm-node-modules", &osv)));

    // A new push of the tag is followed: a Go image finds Go's findings once Go is in it.
    let v2 = push_data(&["npm", "Go"]).await;
    assert_ne!(v1, v2);
    let loaded = "berth_vulnerability_data_loads_total{result=\"loaded\"}";
    eventually(WAIT, "berth loaded the new artifact", || async {
        let n = env.berth.metric(loaded).await;
        if n >= 2.0 { Ok(()) } else { Err(format!("{n} loads")) }
    })
    .await;
    let go = push_fixture(&env, "go-binary", &app, "go").await;
    let scan = wait_scan(&env, &go, "Complete with Go data", |s| {
        phase(s) == "Complete" && s["vulnerabilityData"]["version"] == v2.as_str()
    })
    .await;
    assert_eq!(scan_ids(&scan), cli_ids(&cli_scan("go-binary", &osv)));
    env.berth.stop();
}

fn scan_ids_of(status: &berth::api::ImageScanStatus) -> BTreeSet<String> {
    status.findings.iter().map(|f| f.id.clone()).collect()
}

/// The rollout gate: a workload annotated `berth.dev/max-severity` moves to a new digest only
/// once its scan is Complete with nothing above the threshold; a refused digest is reported
/// (Warning Event, `berth.dev/rollout-held`) and never pinned; raising the threshold lets it in.
#[tokio::test]
async fn the_rollout_gate_holds_until_scanned_and_refuses_findings_above_the_threshold() {
    use k8s_openapi::api::apps::v1::Deployment;
    let db = data().join("osv-db");
    let mut env = Env::with_args(
        "scan-gate",
        true,
        &["--repository-poll-interval", "1h", "--vulnerability-data", db.to_str().unwrap()],
    )
    .await;
    env.ns.enable_rollouts(true).await;
    // No scanning rule, no scanOnPush: the gate asks for the scans it needs.
    env.create_repository("app", json!({})).await;
    let path = format!("{}/app", env.ns.name);
    let image = format!("{}:stable", env.registry.image(&path));
    // The Go fixture's findings are all UNDEFINED (Go's vulndb gives no severity): under High.
    let clean = push_fixture(&env, "go-binary", &path, "stable").await;
    let deployments = Api::<Deployment>::namespaced(env.ns.client.clone(), &env.ns.name);
    let web: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "annotations": {"berth.dev/rollout": "digest", "berth.dev/max-severity": "High"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": image}]}}},
    }))
    .unwrap();
    deployments.create(&Default::default(), &web).await.unwrap();
    let image_of = |deployments: Api<Deployment>| async move {
        let d = deployments.get("web").await.unwrap();
        let annotations = d.metadata.annotations.clone().unwrap_or_default();
        let image = d.spec.unwrap().template.spec.unwrap().containers[0].image.clone().unwrap();
        (image, annotations.get("berth.dev/rollout-held").cloned())
    };
    let pinned_clean = format!("{image}@{clean}");
    eventually(Duration::from_secs(120), "web pinned to the scanned, clean enough image", || {
        let deployments = deployments.clone();
        let pinned_clean = pinned_clean.clone();
        async move {
            let (image, held) = image_of(deployments).await;
            if image == pinned_clean && held.is_none() { Ok(()) } else { Err(format!("{image} held {held:?}")) }
        }
    })
    .await;
    let scan = wait_scan(&env, &clean, "Complete", |s| phase(s) == "Complete").await;
    assert_eq!(scan.spec.repository_ref.name, "app", "the gate created the scan for the Repository");
    let events = env.events_for("web").await;
    assert!(events.iter().any(|e| e.1 == "WaitingForScan"), "it waited for the scan first: {events:?}");

    // An image with a CRITICAL finding is refused; the workload stays where it is.
    let vulnerable = push_fixture(&env, "npm-node-modules", &path, "stable").await;
    let held = eventually(Duration::from_secs(120), "the vulnerable image refused", || {
        let deployments = deployments.clone();
        let vulnerable = vulnerable.clone();
        async move {
            match image_of(deployments).await {
                (_, Some(held)) if held.contains(&vulnerable) && held.contains("CRITICAL") => Ok(held),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    let events = env.events_for("web").await;
    let refused = events.iter().find(|e| e.1 == "VulnerableImageRefused").unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(refused.0, "Warning");
    assert!(refused.2.contains(&vulnerable) && refused.2.contains("CRITICAL"), "{refused:?} / {held}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(image_of(deployments.clone()).await.0, pinned_clean, "never pinned to the refused digest");

    // Allowing Critical lets it in.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"berth.dev/max-severity": "Critical"}}})),
        )
        .await
        .unwrap();
    let pinned_vulnerable = format!("{image}@{vulnerable}");
    eventually(Duration::from_secs(60), "web pinned once Critical is allowed", || {
        let deployments = deployments.clone();
        let pinned = pinned_vulnerable.clone();
        async move {
            let (image, held) = image_of(deployments).await;
            if image == pinned && held.is_none() { Ok(()) } else { Err(format!("{image} held {held:?}")) }
        }
    })
    .await;
    env.berth.stop();
}

/// A site's own scanner instead of berth's: a real Harbor Pluggable Scanner API v1.2 adapter
/// (harbor-scanner-trivy with trivy, built from their modules by
/// tests/tools/harbor-scanner/build.sh, its DB made offline from the same OSV records by
/// make-trivy-db.sh, Redis for its job queue) scans the pushed image; the ImageScan carries its
/// findings (trivy names them by CVE: the aliases of berth's own findings on the same image).
#[tokio::test]
async fn a_harbor_scanner_adapter_scans_instead_of_berth() {
    use support::{free_port, process::Server};
    let tools = support::repo_path("tests/tools/harbor-scanner");
    let built = Command::new("bash").arg(tools.join("build.sh")).output().unwrap();
    assert!(built.status.success(), "build.sh: {}", String::from_utf8_lossy(&built.stderr));
    let dirs: Vec<PathBuf> = String::from_utf8(built.stdout).unwrap().lines().map(PathBuf::from).collect();
    let (scanner_dir, trivy_dir) = (&dirs[0], &dirs[1]);
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("trivy-cache");
    let made = Command::new("bash").arg(tools.join("make-trivy-db.sh")).arg(&cache).arg(data()).output().unwrap();
    assert!(made.status.success(), "make-trivy-db.sh: {}", String::from_utf8_lossy(&made.stderr));

    let redis_port = free_port();
    let _redis = Server::start(
        "redis-server",
        Path::new("/usr/bin/redis-server"),
        &["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .map(String::from),
        &work.path().join("redis.log"),
    );
    let adapter_port = free_port();
    let path_var = format!("PATH={}:{}", trivy_dir.display(), std::env::var("PATH").unwrap_or_default());
    let reports = work.path().join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    let env_args = [
        path_var,
        "TRIVY_VERSION=0.54.1".into(),
        format!("SCANNER_API_SERVER_ADDR=127.0.0.1:{adapter_port}"),
        format!("SCANNER_REDIS_URL=redis://127.0.0.1:{redis_port}"),
        format!("SCANNER_TRIVY_CACHE_DIR={}", cache.display()),
        format!("SCANNER_TRIVY_REPORTS_DIR={}", reports.display()),
        "SCANNER_TRIVY_SKIP_UPDATE=true".into(),
        "SCANNER_TRIVY_SKIP_JAVA_DB_UPDATE=true".into(),
        "SCANNER_TRIVY_OFFLINE_SCAN=true".into(),
        "SCANNER_API_SERVER_METRICS_ENABLED=false".into(),
        scanner_dir.join("scanner-trivy").display().to_string(),
    ];
    let adapter =
        Server::start("scanner-trivy", Path::new("/usr/bin/env"), &env_args, &work.path().join("scanner.log"));
    let adapter_url = format!("http://127.0.0.1:{adapter_port}");
    eventually(Duration::from_secs(30), "the adapter is ready", || {
        let url = format!("{adapter_url}/probe/ready");
        let log = adapter.log_tail(2000);
        async move {
            match reqwest::get(&url).await {
                Ok(r) if r.status().is_success() => Ok(()),
                other => Err(format!("{other:?}\n{log}")),
            }
        }
    })
    .await;

    let mut env = Env::new("scan-adapter", true, "1h").await;
    let scanning = json!({"scanning": {"scanner": {"url": adapter_url}}});
    support::scenario::patch_registry_spec(&env.ns.client, &env.name, scanning).await;
    env.create_repository("app", json!({"scanOnPush": true})).await;
    let digest = push_fixture(&env, "npm-node-modules", &format!("{}/app", env.ns.name), "v1").await;
    let scan = wait_scan(&env, &digest, "Complete by the adapter", |s| phase(s) == "Complete").await;
    let status = scan.status.clone().unwrap();
    assert_eq!(status.scanner.as_deref(), Some("Trivy 0.54.1 (Aqua Security)"), "{status:?}");
    assert!(status.sbom.is_none() && status.vulnerability_data.is_none(), "no berth data, no berth SBOM");

    // berth's own scanner on the same image and records: trivy's ids are their CVE aliases.
    let files = berth::scanning::layers::from_oci_layout(&fixture("npm-node-modules"), &Default::default()).unwrap();
    let inventory = berth::scanning::inventory::inventory(&files);
    let db = berth::scanning::osv::Database::load_dir(&data().join("osv-db")).unwrap();
    let ours = berth::scanning::matching::findings(&inventory, &db);
    let cves: BTreeSet<String> =
        ours.iter().flat_map(|f| f.aliases.iter().filter(|a| a.starts_with("CVE-")).cloned()).collect();
    assert_eq!(scan_ids(&scan), cves);
    let severities: BTreeSet<(String, String)> =
        status.findings.iter().map(|f| (f.package.clone(), f.severity.clone())).collect();
    assert!(severities.contains(&("minimist".to_string(), "CRITICAL".to_string())), "{severities:?}");
    let events = env.events_for(&scan.name_any()).await;
    assert!(events.iter().any(|e| e.1 == "ScanComplete"), "{events:?}");

    // The adapter goes away: a new scan fails and says so; it is not reported clean.
    drop(adapter);
    scans(&env)
        .patch(
            &scan.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"berth.dev/scan": "again"}}})),
        )
        .await
        .unwrap();
    let failed = wait_scan(&env, &digest, "Failed without the adapter", |s| phase(s) == "Failed").await;
    let failed = failed.status.unwrap();
    assert_eq!(failed.reason.as_deref(), Some("ScannerAdapterError"));
    assert!(failed.findings.is_empty(), "no findings kept from the earlier scan");
    env.berth.stop();
}
