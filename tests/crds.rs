//! The CRDs as users meet them: generated YAML committed in `crds/`, installed on a real API
//! server, CEL rules enforced at admission, examples accepted, `kubectl explain` documented.

mod support;

use kube::{
    Api, CustomResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, PostParams},
    core::Status,
};
use serde_json::{Value, json};
use support::{control_plane, repo_path};

#[test]
fn committed_crds_match_berth_crds() {
    for crd in berth::api::crds() {
        let file = repo_path("crds").join(berth::api::crd_file_name(&crd));
        let committed = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (run `cargo run -- crds --split crds/`)", file.display()));
        let generated = berth::api::crd_yaml(&crd).unwrap();
        assert!(
            committed == generated,
            "{} is stale: regenerate it with `cargo run -- crds --split crds/`",
            file.display()
        );
    }
    let files = std::fs::read_dir(repo_path("crds")).unwrap().count();
    assert_eq!(files, berth::api::crds().len(), "crds/ holds a file that is not a berth CRD");
}

#[test]
fn every_crd_has_status_printer_columns_short_names_and_category() {
    for crd in berth::api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        assert_eq!(crd.spec.group, "berth.dev");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1", "{name}");
        assert!(
            version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{name}: no status subresource"
        );
        let columns = version.additional_printer_columns.as_ref().map(|c| c.len()).unwrap_or(0);
        assert!(columns >= 3, "{name}: only {columns} printer columns");
        assert!(crd.spec.names.short_names.as_ref().is_some_and(|s| !s.is_empty()), "{name}: no short name");
        assert_eq!(crd.spec.names.categories.as_deref(), Some(&["berth".to_string()][..]), "{name}");
    }
    assert_eq!(berth::api::Registry::crd().spec.scope, "Cluster");
    assert_eq!(berth::api::Repository::crd().spec.scope, "Namespaced");
}

/// Every property in every schema has a description: they are what `kubectl explain` shows.
#[test]
fn every_crd_field_is_documented() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                let p = format!("{path}.{name}");
                // metadata and Kubernetes' own types (Condition, LabelSelector) document themselves
                // upstream; apiVersion/kind/metadata are standard.
                if matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if sub.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
                    missing.push(p.clone());
                }
                walk(&p, sub, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in berth::api::crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema).unwrap();
        walk(&crd.spec.names.kind, &schema, &mut missing);
    }
    assert!(missing.is_empty(), "fields without a doc comment: {missing:#?}");
}

#[tokio::test]
async fn crds_install_and_become_established() {
    let cp = control_plane().await;
    cp.install_crds().await;
    let api = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(
        cp.client().await,
    );
    for crd in berth::api::crds() {
        let name = crd.metadata.name.unwrap();
        let live = api.get(&name).await.unwrap();
        let established = live
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is not Established");
    }
}

fn api_for(client: kube::Client, namespace: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = match kind {
        "Deployment" => GroupVersionKind::gvk("apps", "v1", kind),
        _ => GroupVersionKind::gvk("berth.dev", "v1alpha1", kind),
    };
    let ar = ApiResource::from_gvk(&gvk);
    if kind == "Registry" { Api::all_with(client, &ar) } else { Api::namespaced_with(client, namespace, &ar) }
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

#[tokio::test]
async fn every_example_is_accepted_by_the_api_server() {
    let cp = control_plane().await;
    cp.install_crds().await;
    let ns = cp.namespace("examples").await;
    let mut kinds = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo_path("examples")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files.iter().filter(|p| p.extension().is_some_and(|x| x == "yaml")) {
        let text = std::fs::read_to_string(path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut value: Value = serde::Deserialize::deserialize(doc).unwrap();
            let kind = value["kind"].as_str().unwrap().to_string();
            // Examples name their own namespaces; each test runs in its own.
            if kind == "Registry" {
                value["metadata"]["name"] =
                    json!(format!("{}-{}", value["metadata"]["name"].as_str().unwrap(), ns.name));
            } else {
                value["metadata"]["namespace"] = json!(ns.name);
            }
            let api = api_for(ns.client.clone(), &ns.name, &kind);
            let created = api
                .create(&PostParams::default(), &object(value.clone()))
                .await
                .unwrap_or_else(|e| panic!("{} ({kind}) rejected: {e}", path.display()));
            // Defaults and pruning must not lose what the example says (of berth's kinds: the
            // API server fills a pod template with its own defaults).
            let ours = value["apiVersion"].as_str().is_some_and(|v| v.starts_with("berth.dev/"));
            for (field, v) in value["spec"].as_object().unwrap().iter().filter(|_| ours) {
                assert_eq!(&created.data["spec"][field], v, "{}: spec.{field} changed on the way in", path.display());
            }
            kinds.push(kind);
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["AccessPolicy", "Deployment", "LifecyclePolicy", "Registry", "Registry", "Repository"],
        "one example per kind (a Registry of each type), and a workload that berth rolls out"
    );
}

fn rule(priority: i64, selection: Value) -> Value {
    json!({"rulePriority": priority, "selection": selection, "action": {"type": "expire"}})
}

fn keep(n: i64, prefixes: &[&str]) -> Value {
    json!({"tagStatus": "tagged", "tagPrefixList": prefixes, "countType": "imageCountMoreThan", "countNumber": n})
}

fn policy(name: &str, rules: Vec<Value>) -> DynamicObject {
    object(json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "LifecyclePolicy",
        "metadata": {"name": name},
        "spec": {"rules": rules},
    }))
}

async fn rejection(api: &Api<DynamicObject>, obj: &DynamicObject) -> Result<Status, String> {
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Err("accepted".into()),
        Err(kube::Error::Api(status)) => Ok(*status),
        Err(e) => Err(e.to_string()),
    }
}

/// Each ECR validation rule that CEL can express rejects a bad LifecyclePolicy at admission,
/// with a message that names the problem.
#[tokio::test]
async fn invalid_lifecycle_policies_are_rejected_with_clear_messages() {
    let cp = control_plane().await;
    cp.install_crds().await;
    let ns = cp.namespace("cel").await;
    let api = api_for(ns.client.clone(), &ns.name, "LifecyclePolicy");

    let valid = policy(
        "valid",
        vec![
            rule(1, keep(5, &["prod"])),
            rule(
                2,
                json!({"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14}),
            ),
            rule(3, json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 100})),
        ],
    );
    api.create(&PostParams::default(), &valid).await.expect("a valid policy must be accepted");

    let cases: Vec<(&str, Vec<Value>, &str)> = vec![
        (
            "duplicate-priority",
            vec![rule(1, keep(1, &["a"])), rule(1, keep(1, &["b"]))],
            "rulePriority values must be unique",
        ),
        (
            "any-not-last",
            vec![
                rule(1, json!({"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 3})),
                rule(2, keep(1, &["a"])),
            ],
            "tagStatus 'any' must have the highest rulePriority",
        ),
        (
            "unit-missing",
            vec![rule(1, json!({"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 3}))],
            "countUnit is required with countType 'sinceImagePushed'",
        ),
        (
            "unit-forbidden",
            vec![rule(
                1,
                json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countUnit": "days", "countNumber": 3}),
            )],
            "countUnit is not allowed with countType 'imageCountMoreThan'",
        ),
        ("count-zero", vec![rule(1, keep(0, &["a"]))], "countNumber must be a positive integer"),
        (
            "tagged-no-list",
            vec![rule(1, json!({"tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": 3}))],
            "tagStatus 'tagged' needs exactly one of tagPrefixList or tagPatternList",
        ),
        (
            "tagged-both-lists",
            vec![rule(
                1,
                json!({"tagStatus": "tagged", "tagPrefixList": ["a"], "tagPatternList": ["a*"], "countType": "imageCountMoreThan", "countNumber": 3}),
            )],
            "tagStatus 'tagged' needs exactly one of tagPrefixList or tagPatternList",
        ),
        (
            "untagged-with-list",
            vec![rule(
                1,
                json!({"tagStatus": "untagged", "tagPrefixList": ["a"], "countType": "imageCountMoreThan", "countNumber": 3}),
            )],
            "tagPrefixList and tagPatternList are only allowed with tagStatus 'tagged'",
        ),
        (
            "any-with-list",
            vec![rule(
                1,
                json!({"tagStatus": "any", "tagPatternList": ["a*"], "countType": "imageCountMoreThan", "countNumber": 3}),
            )],
            "tagPrefixList and tagPatternList are only allowed with tagStatus 'tagged'",
        ),
        (
            "two-untagged",
            vec![
                rule(1, json!({"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 3})),
                rule(
                    2,
                    json!({"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 3}),
                ),
            ],
            "only one rule may select untagged images",
        ),
        (
            "five-wildcards",
            vec![rule(
                1,
                json!({"tagStatus": "tagged", "tagPatternList": ["a*b*c*d*e*"], "countType": "imageCountMoreThan", "countNumber": 3}),
            )],
            "at most 4 '*' wildcards",
        ),
        ("priority-zero", vec![rule(0, keep(1, &["a"]))], "rulePriority must be a positive integer"),
    ];
    let mut failures = Vec::new();
    for (name, rules, expected) in cases {
        match rejection(&api, &policy(name, rules)).await {
            Ok(status) if status.code == 422 && status.message.contains(expected) => {}
            Ok(status) => failures
                .push(format!("{name}: rejected with {} {:?}, expected {expected:?}", status.code, status.message)),
            Err(e) => failures.push(format!("{name}: {e}, expected a rejection with {expected:?}")),
        }
    }
    // Four wildcards are fine.
    let four = policy(
        "four-wildcards",
        vec![rule(
            1,
            json!({"tagStatus": "tagged", "tagPatternList": ["a*b*c*d*"], "countType": "imageCountMoreThan", "countNumber": 3}),
        )],
    );
    if let Err(e) = api.create(&PostParams::default(), &four).await {
        failures.push(format!("four-wildcards: rejected: {e}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The other kinds' CEL rules reject what they promise to, at admission.
#[tokio::test]
async fn invalid_repositories_access_policies_and_registries_are_rejected() {
    let cp = control_plane().await;
    cp.install_crds().await;
    let ns = cp.namespace("cel-other").await;
    let repo = |name: &str, spec: Value| {
        object(
            json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Repository", "metadata": {"name": name}, "spec": spec}),
        )
    };
    let repos = api_for(ns.client.clone(), &ns.name, "Repository");
    let policies = api_for(ns.client.clone(), &ns.name, "AccessPolicy");
    let registries = api_for(ns.client.clone(), &ns.name, "Registry");

    let created = repos
        .create(&PostParams::default(), &repo("defaults", json!({"registryRef": {"name": "main"}})))
        .await
        .expect("a minimal Repository must be accepted");
    assert_eq!(created.data["spec"]["visibility"], "Private", "visibility defaults to Private");
    assert_eq!(created.data["spec"]["deletionPolicy"], "Retain", "deletionPolicy defaults to Retain");
    assert_eq!(created.data["spec"]["imageTagMutability"], "Mutable");

    let mut failures = Vec::new();
    let mut expect = |name: &str, result: Result<Status, String>, expected: &str| match result {
        Ok(s) if s.code == 422 && s.message.contains(expected) => {}
        Ok(s) => failures.push(format!("{name}: {} {:?}, expected {expected:?}", s.code, s.message)),
        Err(e) => failures.push(format!("{name}: {e}, expected {expected:?}")),
    };
    expect(
        "upper-case path",
        rejection(&repos, &repo("bad-path", json!({"registryRef": {"name": "main"}, "name": "Team/App"}))).await,
        "name must be lower-case path components",
    );
    expect(
        "exclusions on a mutable repository",
        rejection(
            &repos,
            &repo("bad-excl", json!({"registryRef": {"name": "main"}, "immutableTagExclusions": ["latest"]})),
        )
        .await,
        "immutableTagExclusions is only allowed with imageTagMutability: Immutable",
    );
    expect(
        "unknown visibility",
        rejection(&repos, &repo("bad-vis", json!({"registryRef": {"name": "main"}, "visibility": "Internal"}))).await,
        "Unsupported value: \"Internal\"",
    );
    let access = |name: &str, spec: Value| {
        object(
            json!({"apiVersion": "berth.dev/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": name}, "spec": spec}),
        )
    };
    expect(
        "anonymous push",
        rejection(
            &policies,
            &access("anon-push", json!({"repositories": {"names": ["a"]}, "grants": [{"subjects": [{"kind": "Anonymous"}], "actions": ["pull", "push"]}]})),
        )
        .await,
        "anonymous subjects may only be granted pull",
    );
    expect(
        "no repositories",
        rejection(
            &policies,
            &access(
                "no-repos",
                json!({"repositories": {}, "grants": [{"subjects": [{"kind": "Anonymous"}], "actions": ["pull"]}]}),
            ),
        )
        .await,
        "repositories needs names, a selector, or both",
    );
    expect(
        "service account without a name",
        rejection(
            &policies,
            &access("sa-no-name", json!({"repositories": {"names": ["a"]}, "grants": [{"subjects": [{"kind": "ServiceAccount"}], "actions": ["pull"]}]})),
        )
        .await,
        "a ServiceAccount subject needs a name",
    );
    let registry = |name: &str, spec: Value| {
        object(
            json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Registry", "metadata": {"name": format!("{name}-{}", ns.name)}, "spec": spec}),
        )
    };
    expect(
        "registry url without scheme",
        rejection(&registries, &registry("no-scheme", json!({"url": "registry.example.com"}))).await,
        "url must be an http:// or https:// URL",
    );
    expect(
        "insecure and caBundle",
        rejection(
            &registries,
            &registry(
                "both-tls",
                json!({"url": "https://r.example.com", "insecureSkipTLSVerify": true, "caBundle": "x"}),
            ),
        )
        .await,
        "set either insecureSkipTLSVerify or caBundle, not both",
    );
    expect(
        "token auth without a signing Secret namespace",
        rejection(
            &registries,
            &registry(
                "token-no-ns",
                json!({"url": "https://r.example.com", "tokenAuth": {"issuer": "b", "service": "r", "signingKeySecretRef": {"name": "k"}}}),
            ),
        )
        .await,
        "tokenAuth.signingKeySecretRef.namespace is required",
    );
    let rotating = |name: &str, token_auth: Value| {
        let mut t = json!({"issuer": "b", "service": "r", "signingKeySecretRef": {"name": "k", "namespace": "n"}});
        t.as_object_mut().unwrap().extend(token_auth.as_object().unwrap().clone());
        registry(name, json!({"url": "https://r.example.com", "tokenAuth": t}))
    };
    expect(
        "key renewal as long as the key",
        rejection(
            &registries,
            &rotating("renew-long", json!({"keyRotation": {"keyLifetime": "3m", "renewBefore": "3m"}})),
        )
        .await,
        "renewBefore must be shorter than keyLifetime",
    );
    expect(
        "key activation not before renewal",
        rejection(
            &registries,
            &rotating("activate-late", json!({"keyRotation": {"renewBefore": "2h", "activationDelay": "2h"}})),
        )
        .await,
        "activationDelay must be shorter than renewBefore",
    );
    expect(
        "tokens outliving the old key",
        rejection(
            &registries,
            &rotating(
                "long-tokens",
                json!({"keyRotation": {"keyLifetime": "3m", "renewBefore": "2m", "activationDelay": "40s"}}),
            ),
        )
        .await,
        "tokenLifetime must be shorter than keyRotation.renewBefore - activationDelay",
    );
    expect(
        "a key lifetime in days",
        rejection(&registries, &rotating("days", json!({"keyRotation": {"keyLifetime": "90d"}}))).await,
        "keyLifetime must be a duration such as 2160h or 3m",
    );
    expect(
        "a registry Deployment without a namespace",
        rejection(&registries, &rotating("no-deploy-ns", json!({"registryDeployment": {"name": "registry"}}))).await,
        "namespace: Required value",
    );
    // Short periods, with tokens shorter than the overlap, are accepted.
    let short = rotating(
        "short-keys",
        json!({"tokenLifetime": "1m", "keyRotation": {"keyLifetime": "3m", "renewBefore": "2m", "activationDelay": "40s"},
               "registryDeployment": {"namespace": "berth-system", "name": "registry"}}),
    );
    registries.create(&PostParams::default(), &short).await.expect("short key rotation accepted");
    for (name, aliases, expected) in [
        (
            "alias-scheme",
            json!(["https://registry.example.com"]),
            "aliases are host[:port] names, without a scheme or a path",
        ),
        ("alias-path", json!(["registry.example.com/v2"]), "aliases are host[:port] names, without a scheme or a path"),
        ("alias-upper", json!(["Registry.example.com"]), "each alias must be a lower-case host name"),
        ("alias-no-dot", json!(["registry"]), "an alias needs a '.' or a :port"),
        ("alias-port", json!(["127.0.0.1:65536"]), "an alias's port must be from 1 to 65535"),
        ("alias-twice", json!(["r.example", "r.example"]), "Duplicate value"),
    ] {
        let spec = json!({"url": "http://berth-registry.berth.svc:5000", "aliases": aliases});
        expect(name, rejection(&registries, &registry(name, spec)).await, expected);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    registries
        .create(
            &PostParams::default(),
            &registry(
                "aliases",
                json!({"url": "http://berth-registry.berth.svc:5000", "aliases": ["127.0.0.1:30500", "localhost", "[::1]:5000", "registry.example.com"]}),
            ),
        )
        .await
        .expect("node ports, localhost, IPv6 and Ingress hosts are aliases");

    // Immutable fields stay immutable.
    let mut changed = repos.get("defaults").await.unwrap();
    changed.data["spec"]["registryRef"] = json!({"name": "other"});
    match repos.replace("defaults", &PostParams::default(), &changed).await {
        Err(kube::Error::Api(s)) => assert!(s.message.contains("registryRef is immutable"), "{}", s.message),
        other => panic!("changing registryRef must be rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn kubectl_explain_shows_field_docs() {
    let cp = control_plane().await;
    cp.install_crds().await;
    // Discovery of a new CRD can lag behind Established for a moment; retry briefly.
    let mut last = String::new();
    for _ in 0..20 {
        let out = cp.kubectl().args(["explain", "repository.spec.visibility"]).output().unwrap();
        last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            assert!(last.contains("`Public` repositories can be pulled anonymously"), "explain output:\n{last}");
            assert!(last.contains("berth.dev"), "explain output:\n{last}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("kubectl explain failed:\n{last}");
}
