//! AWS ECR as a backend, at the wire level against moto (the stand-in for the ECR API, on
//! loopback): a real kube-apiserver, berth as the user runs it, and the AWS SDK as the user's
//! own tools. Each test has its own moto server and registry (account) id.
//!
//! `real_aws_scenario` runs the repository scenario against real ECR when
//! `BERTH_ECR_TEST_REGION` and AWS credentials are in the environment (opt-in; it creates and
//! deletes a repository named `berth-test/<random>`).

mod support;

use std::time::Duration;

use berth::api::Registry;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::{
    control_plane, eventually,
    moto::{self, EcrEnv, Moto},
    scenario::{WAIT, is_ready, ready},
};

fn reason(status: &Value) -> String {
    ready(status).map(|(s, r)| format!("{s}/{r}")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn repositories_are_created_adopted_kept_to_spec_and_deleted_in_ecr() {
    let env = EcrEnv::new("ecr-repos", &["--repository-poll-interval", "2s"], json!({})).await;
    let ns = env.ns.name.clone();
    let (app, adopted) = (format!("{ns}/app"), format!("{ns}/legacy"));
    // A repository made by hand before berth, with a tag of its owner's, and one nobody declares.
    let made = env
        .ecr
        .create_repository()
        .registry_id(&env.registry_id)
        .repository_name(&adopted)
        .tags(aws_sdk_ecr::types::Tag::builder().key("owner").value("them").build().unwrap())
        .send()
        .await
        .unwrap();
    let legacy_arn = made.repository().unwrap().repository_arn().unwrap().to_string();
    env.ecr.create_repository().registry_id(&env.registry_id).repository_name("other/x").send().await.unwrap();
    let s = env
        .wait_registry("the ecr Registry is Ready with its catalog", |s| {
            reason(s) == "True/Reachable" && s["repositoryCount"] == 2 && s["undeclaredRepositoryCount"] == 2
        })
        .await;
    assert_eq!(s["reachable"], true);

    env.create_repository(
        "app",
        json!({
            "imageTagMutability": "Immutable", "immutableTagExclusions": ["dev-*"], "scanOnPush": true,
            "deletionPolicy": "Delete",
            "ecr": {"encryption": {"type": "KMS", "kmsKey": "alias/team-a"}, "tags": {"team": "a", "cost-centre": "42"}},
        }),
    )
    .await;
    let status = env.wait_repo("app", "created and Ready", |s| is_ready(s) && s["ecr"]["arn"].is_string()).await;
    assert_eq!(status["ecr"]["adopted"], false, "{status}");
    assert_eq!(status["uri"], format!("{}/{app}", moto::host(&env.registry_id)));
    let r = env.describe(&app).await.expect("berth created the repository");
    assert_eq!(r.image_tag_mutability().unwrap().as_str(), "IMMUTABLE_WITH_EXCLUSION");
    let filters: Vec<&str> = r.image_tag_mutability_exclusion_filters().iter().map(|f| f.filter()).collect();
    assert_eq!(filters, ["dev-*"]);
    assert!(r.image_scanning_configuration().unwrap().scan_on_push());
    assert_eq!(r.encryption_configuration().unwrap().encryption_type().as_str(), "KMS");
    let tags = env.resource_tags(r.repository_arn().unwrap()).await;
    assert_eq!(tags.get("team").map(String::as_str), Some("a"));
    assert_eq!(tags.get("berth.dev/repository"), Some(&format!("{ns}/app")), "berth marks what it made: {tags:?}");
    assert!(env.events_for("app").await.iter().any(|(_, r, _)| r == "RepositoryCreated"));

    // ECR itself enforces immutability: a tag cannot move, an excluded one can.
    let first = moto::put_image(&env.ecr, &env.registry_id, &app, Some("v1"), "one").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (body, digest) = moto::manifest("two");
    let refused = env
        .ecr
        .put_image()
        .registry_id(&env.registry_id)
        .repository_name(&app)
        .image_manifest(body)
        .image_digest(&digest)
        .image_tag("v1")
        .send()
        .await;
    assert!(refused.is_err(), "an immutable tag moved");
    moto::put_image(&env.ecr, &env.registry_id, &app, Some("dev-1"), "two").await;
    let pushed = moto::images(&env.ecr, &env.registry_id, &app).await;
    let newest = pushed.iter().map(|(_, _, at)| *at).max().unwrap();
    let status = env
        .wait_repo("app", "lists its images with ECR's push times", |s| s["imageCount"] == 2 && s["tagCount"] == 2)
        .await;
    let last: k8s_openapi::jiff::Timestamp = status["lastPushedAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(last.as_millisecond() / 1000, newest / 1000, "lastPushedAt is ECR's imagePushedAt: {status}");
    assert!(pushed.iter().any(|(d, t, _)| *d == first && t == &["v1".to_string()]));

    // Declaring the existing repository adopts it, and says so.
    env.create_repository("legacy", json!({"ecr": {"tags": {"team": "a"}}})).await;
    let status = env.wait_repo("legacy", "adopted", |s| is_ready(s) && s["ecr"]["adopted"] == true).await;
    assert!(status["conditions"][0]["message"].as_str().unwrap().contains("adopted"), "{status}");
    assert_eq!(status["ecr"]["arn"], legacy_arn.as_str());
    assert!(env.events_for("legacy").await.iter().any(|(_, r, n)| r == "RepositoryAdopted" && n.contains(&legacy_arn)));
    let tags = env.resource_tags(&legacy_arn).await;
    assert_eq!((tags.get("team"), tags.get("owner")), (Some(&"a".to_string()), Some(&"them".to_string())));

    // Changes in the spec reach ECR; berth's own tag keys follow it, others' stay.
    env.patch_repository(
        "app",
        json!({"spec": {"imageTagMutability": "Mutable", "immutableTagExclusions": null, "ecr": {"tags": {"team": "b", "cost-centre": null}}}}),
    )
    .await;
    env.patch_repository("legacy", json!({"spec": {"ecr": {"tags": {"team": null}}}})).await;
    // (Turning scan on push off is not checked here: the SDK leaves `scanOnPush: false` out, as
    // a default, and moto keeps the old value for an empty configuration; ECR reads it as false.)
    eventually(WAIT, "app is MUTABLE, tagged team=b only", || async {
        let r = env.describe(&app).await.ok_or("gone")?;
        let tags = env.resource_tags(r.repository_arn().unwrap()).await;
        let got = (
            r.image_tag_mutability().unwrap().as_str().to_string(),
            r.image_tag_mutability_exclusion_filters().len(),
            tags.get("team").cloned(),
            tags.contains_key("cost-centre"),
        );
        if got == ("MUTABLE".into(), 0, Some("b".into()), false) { Ok(()) } else { Err(format!("{got:?}")) }
    })
    .await;
    eventually(WAIT, "legacy loses berth's tag and keeps its owner's", || async {
        let tags = env.resource_tags(&legacy_arn).await;
        if !tags.contains_key("team") && tags.get("owner").map(String::as_str) == Some("them") {
            Ok(())
        } else {
            Err(format!("{tags:?}"))
        }
    })
    .await;

    // Encryption is fixed at creation: asking for another is reported, not attempted.
    env.patch_repository("app", json!({"spec": {"ecr": {"encryption": {"type": "AES256", "kmsKey": null}}}})).await;
    let status =
        env.wait_repo("app", "reports the encryption mismatch", |s| reason(s) == "False/EncryptionMismatch").await;
    assert!(status["conditions"][0]["message"].as_str().unwrap().contains("recreate"), "{status}");
    env.patch_repository("app", json!({"spec": {"ecr": {"encryption": null}}})).await;
    env.wait_repo("app", "Ready again", is_ready).await;

    // A Distribution-only spec on ECR is refused clearly: ECR repositories are private.
    env.create_repository("open", json!({"visibility": "Public"})).await;
    env.wait_repo("open", "a Public repository on ECR is refused", |s| reason(s) == "False/NotSupportedByRegistry")
        .await;
    assert!(env.describe(&format!("{ns}/open")).await.is_none(), "nothing was created for it");

    // deletionPolicy: Delete removes the repository with its images (force); Retain and abandon
    // leave it.
    env.repos().delete("app", &Default::default()).await.unwrap();
    env.repos()
        .patch(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"berth.dev/abandon": "true"}}, "spec": {"deletionPolicy": "Delete"}})),
        )
        .await
        .unwrap();
    eventually(WAIT, "legacy carries berth's finalizer", || async {
        let r = env.repos().get("legacy").await.map_err(|e| e.to_string())?;
        if r.metadata.finalizers.iter().flatten().any(|f| f == "berth.dev/delete-images") {
            Ok(())
        } else {
            Err("none".into())
        }
    })
    .await;
    env.repos().delete("legacy", &Default::default()).await.unwrap();
    eventually(WAIT, "app's ECR repository is deleted with its images", || async {
        match env.describe(&app).await {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    eventually(WAIT, "both Repository objects are gone", || async {
        let left = env.repos().list(&Default::default()).await.map_err(|e| e.to_string())?;
        let names: Vec<String> =
            left.items.iter().filter_map(|r| r.metadata.name.clone()).filter(|n| n != "open").collect();
        if names.is_empty() { Ok(()) } else { Err(format!("{names:?}")) }
    })
    .await;
    assert!(env.describe(&adopted).await.is_some(), "an abandoned repository stays in ECR");
    drop(env.berth);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_refuses_berths_credentials_says_unauthorized() {
    let cp = control_plane().await;
    cp.install_crds().await;
    let ns = cp.namespace("ecr-unauthorized").await;
    let moto = Moto::start_with(true).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "aws"},
        "stringData": {"accessKeyId": "AKIAUNKNOWNUNKNOWN00", "secretAccessKey": "not-a-key"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name).create(&PostParams::default(), &secret).await.unwrap();
    let reg: Registry = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": ns.name, "labels": {"berth.dev/test": ns.name}},
        "spec": {
            "type": "ecr", "url": format!("https://{}", moto::host("123456789012")),
            "ecr": {"endpoint": moto.endpoint()},
            "credentialsSecretRef": {"name": "aws", "namespace": ns.name}, "checkInterval": "2s",
        },
    }))
    .unwrap();
    let registries = Api::<Registry>::all(ns.client.clone());
    registries.create(&PostParams::default(), &reg).await.unwrap();
    let _berth = support::berth::Berth::start(cp, support::free_port(), &ns.name, &[]).await;
    let status = eventually(WAIT, "Unauthorized", || async {
        let r = registries.get(&ns.name).await.map_err(|e| e.to_string())?;
        let s = serde_json::to_value(&r.status).unwrap();
        if reason(&s) == "False/Unauthorized" { Ok(s) } else { Err(s.to_string()) }
    })
    .await;
    assert_eq!(status["reachable"], false);
    let message = status["conditions"][0]["message"].as_str().unwrap();
    assert!(message.contains("DescribeRepositories"), "{message}");
    assert!(!message.contains("not-a-key"), "the secret key never shows: {message}");

    // Admission refuses what an ecr Registry cannot take.
    let bad: Registry = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Registry", "metadata": {"name": format!("{}-bad", ns.name)},
        "spec": {"type": "ecr", "url": "https://123456789012.dkr.ecr.us-east-1.amazonaws.com", "ecr": {"region": "us-east-1"},
                 "insecureSkipTLSVerify": true},
    }))
    .unwrap();
    let e = registries.create(&PostParams::default(), &bad).await.unwrap_err().to_string();
    assert!(e.contains("ECR authenticates with IAM"), "{e}");
    let bad: Registry = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Registry", "metadata": {"name": format!("{}-bad", ns.name)},
        "spec": {"type": "ecr", "url": "https://r.example", "ecr": {"region": "nowhere"}},
    }))
    .unwrap();
    let e = registries.create(&PostParams::default(), &bad).await.unwrap_err().to_string();
    assert!(e.contains("AWS region"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_on_ecr_deletes_in_berth_mode_and_hands_rules_to_ecr_in_native_mode() {
    let env = EcrEnv::new("ecr-lifecycle", &["--repository-poll-interval", "2s"], json!({})).await;
    let ns = env.ns.name.clone();
    let path = format!("{ns}/api");
    env.create_repository("api", json!({})).await;
    env.wait_repo("api", "Ready", |s| is_ready(s) && s["ecr"]["arn"].is_string()).await;
    // Push times are whole seconds in moto: space the pushes out.
    let mut builds = Vec::new();
    for i in 1..=4 {
        builds.push(
            moto::put_image(&env.ecr, &env.registry_id, &path, Some(&format!("build-{i}")), &format!("b{i}")).await,
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let old_untagged = moto::put_image(&env.ecr, &env.registry_id, &path, None, "u1").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new_untagged = moto::put_image(&env.ecr, &env.registry_id, &path, None, "u2").await;
    // A workload runs build-1, by the name nodes pull it by.
    let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.ns.client.clone(), &ns);
    let image = format!("{}/{path}:build-1", moto::host(&env.registry_id));
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {"metadata": {"labels": {"app": "api"}},
                 "spec": {"containers": [{"name": "api", "image": image}]}}},
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &deployment).await.unwrap();
    let rules = json!([
        {"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}},
        {"rulePriority": 2, "selection": {"tagStatus": "tagged", "tagPrefixList": ["build"], "countType": "imageCountMoreThan", "countNumber": 2}, "action": {"type": "expire"}},
    ]);
    let policies = Api::<berth::api::LifecyclePolicy>::namespaced(env.ns.client.clone(), &ns);
    let policy: berth::api::LifecyclePolicy = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "LifecyclePolicy", "metadata": {"name": "keep-two"},
        "spec": {"rules": rules, "interval": "1h"},
    }))
    .unwrap();
    policies.create(&PostParams::default(), &policy).await.unwrap();
    let before = env.berth.metric("berth_registry_requests_total{controller=\"lifecycle\"}").await;
    let runs_before = env.berth.metric("berth_reconciles_total{controller=\"lifecycle\"}").await;
    env.patch_repository("api", json!({"spec": {"lifecyclePolicyRef": {"name": "keep-two"}}})).await;
    let status = eventually(WAIT, "the policy ran", || async {
        let p = policies.get("keep-two").await.map_err(|e| e.to_string())?;
        let s = serde_json::to_value(&p.status).unwrap();
        if s["lastRunAt"].is_string() && reason(&s) == "True/Succeeded" { Ok(s) } else { Err(s.to_string()) }
    })
    .await;
    let left: Vec<String> =
        moto::images(&env.ecr, &env.registry_id, &path).await.into_iter().map(|(d, _, _)| d).collect();
    let expect_gone = [&builds[1], &old_untagged];
    for d in expect_gone {
        assert!(!left.contains(d), "{d} should have expired: {status}");
    }
    for d in [&builds[0], &builds[2], &builds[3], &new_untagged] {
        assert!(left.contains(d), "{d} should be kept (build-1 because a workload runs it): {status}");
    }
    assert_eq!(status["expiredCount"], 2, "{status}");
    assert_eq!(status["protectedCount"], 1, "{status}");
    let sent = env.berth.metric("berth_registry_requests_total{controller=\"lifecycle\"}").await - before;
    let runs = env.berth.metric("berth_reconciles_total{controller=\"lifecycle\"}").await - runs_before;
    // A run that deletes is two listings, one last look and one BatchDeleteImage (a run with
    // nothing to delete, one listing): never a call per image or per tag.
    assert!(runs >= 1.0 && sent <= 4.0 * runs, "{runs} runs sent {sent} ECR requests for 6 images");

    // Native: the rules go onto the repository, ECR applies them, and in-use images are at risk.
    policies
        .patch("keep-two", &PatchParams::default(), &Patch::Merge(json!({"spec": {"mode": "Native"}})))
        .await
        .unwrap();
    let stored = eventually(WAIT, "ECR holds the rules as its lifecycle policy", || async {
        match env.ecr.get_lifecycle_policy().registry_id(&env.registry_id).repository_name(&path).send().await {
            Ok(out) => Ok(out.lifecycle_policy_text().unwrap_or_default().to_string()),
            Err(e) => Err(aws_sdk_ecr::error::DisplayErrorContext(&e).to_string()),
        }
    })
    .await;
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["rules"], rules, "the same rules, in ECR's shape");
    let status = eventually(WAIT, "the policy says ECR applies it and what is at risk", || async {
        let p = policies.get("keep-two").await.map_err(|e| e.to_string())?;
        let s = serde_json::to_value(&p.status).unwrap();
        if reason(&s) == "True/Native" { Ok(s) } else { Err(s.to_string()) }
    })
    .await;
    let message = status["conditions"][0]["message"].as_str().unwrap();
    assert!(message.contains("NOT protected") && message.contains("1 of them in use"), "{message}");
    assert!(
        env.events_for("api")
            .await
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == "InUseImagesAtRisk" && n.contains(&builds[0])),
        "a Warning names the in-use image ECR will expire"
    );
    let after: Vec<String> =
        moto::images(&env.ecr, &env.registry_id, &path).await.into_iter().map(|(d, _, _)| d).collect();
    assert!(after.contains(&builds[0]), "berth itself deletes nothing in Native mode");

    // Unreferenced, berth takes off the policy it put there (and only that).
    env.patch_repository("api", json!({"spec": {"lifecyclePolicyRef": null}})).await;
    eventually(WAIT, "the lifecycle policy is gone from ECR", || async {
        match env.ecr.get_lifecycle_policy().registry_id(&env.registry_id).repository_name(&path).send().await {
            Err(e)
                if aws_sdk_ecr::error::ProvideErrorMetadata::code(&e) == Some("LifecyclePolicyNotFoundException") =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // One someone else put there is left alone.
    let theirs = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":50},"action":{"type":"expire"}}]}"#;
    env.ecr
        .put_lifecycle_policy()
        .registry_id(&env.registry_id)
        .repository_name(&path)
        .lifecycle_policy_text(theirs)
        .send()
        .await
        .unwrap();
    env.patch_repository("api", json!({"metadata": {"annotations": {"touch": "1"}}})).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kept =
        env.ecr.get_lifecycle_policy().registry_id(&env.registry_id).repository_name(&path).send().await.unwrap();
    assert_eq!(kept.lifecycle_policy_text(), Some(theirs), "a policy berth did not write stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn access_policies_write_repository_policy_statements_and_pull_only_ecr_pull_secrets() {
    // berth's own calls run as moto's default account; the pull role lives in another, so the
    // token in the pull secret says which identity fetched it.
    let role = "arn:aws:iam::210987654321:role/berth-pull";
    let env =
        EcrEnv::new("ecr-access", &["--repository-poll-interval", "2s"], json!({"ecr": {"pullSecretRoleArn": role}}))
            .await;
    let ns = env.ns.name.clone();
    let path = format!("{ns}/app");
    env.create_repository("app", json!({})).await;
    env.wait_repo("app", "Ready", |s| is_ready(s) && s["ecr"]["arn"].is_string()).await;
    // Someone else's statement, which berth must keep.
    let theirs = json!({"Sid": "TheirsReadOnly", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": ["ecr:BatchGetImage"]});
    let text = json!({"Version": "2012-10-17", "Statement": [theirs]}).to_string();
    env.ecr
        .set_repository_policy()
        .registry_id(&env.registry_id)
        .repository_name(&path)
        .policy_text(text)
        .send()
        .await
        .unwrap();

    let ci = "arn:aws:iam::111122223333:role/ci";
    let policies = Api::<berth::api::AccessPolicy>::namespaced(env.ns.client.clone(), &ns);
    let policy: berth::api::AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "app"},
        "spec": {
            "repositories": {"names": ["app"]},
            "grants": [
                {"subjects": [{"kind": "AWSPrincipal", "name": ci}], "actions": ["pull", "push"]},
                {"subjects": [{"kind": "ServiceAccount", "name": "default"}], "actions": ["pull"]},
            ],
            "pullSecrets": {"serviceAccounts": ["default"]},
        },
    }))
    .unwrap();
    policies.create(&PostParams::default(), &policy).await.unwrap();
    let repository_policy = || async {
        let out = env.ecr.get_repository_policy().registry_id(&env.registry_id).repository_name(&path).send().await;
        out.ok().and_then(|o| o.policy_text().map(|t| serde_json::from_str::<Value>(t).unwrap()))
    };
    let written = eventually(WAIT, "berth's statements beside theirs", || async {
        let p = repository_policy().await.ok_or("no policy")?;
        let sids: Vec<String> =
            p["Statement"].as_array().unwrap().iter().map(|s| s["Sid"].as_str().unwrap_or("").to_string()).collect();
        if sids.len() == 3 { Ok(p) } else { Err(p.to_string()) }
    })
    .await;
    let statements = written["Statement"].as_array().unwrap();
    assert_eq!(statements[0], theirs, "theirs kept, first, untouched: {written}");
    let pull = statements.iter().find(|s| s["Sid"].as_str().unwrap().ends_with("Pull")).unwrap();
    let push = statements.iter().find(|s| s["Sid"].as_str().unwrap().ends_with("Push")).unwrap();
    assert!(pull["Sid"].as_str().unwrap().starts_with("Berth"));
    assert_eq!(pull["Principal"]["AWS"], json!([ci]));
    let actions =
        |s: &Value| s["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert!(
        actions(pull).contains(&"ecr:BatchGetImage".to_string())
            && !actions(pull).contains(&"ecr:PutImage".to_string())
    );
    assert!(
        actions(push).contains(&"ecr:PutImage".to_string())
            && !actions(push).contains(&"ecr:BatchDeleteImage".to_string())
    );
    let status = env
        .wait_repo("app", "lists berth's statements", |s| {
            s["ecr"]["policyStatements"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    assert!(
        status["ecr"]["policyStatements"].as_array().unwrap().iter().all(|s| s.as_str().unwrap().starts_with("Berth"))
    );

    // The pull secret: for the registry's host, a token fetched under the pull role.
    let secrets = Api::<Secret>::namespaced(env.ns.client.clone(), &ns);
    let host = moto::host(&env.registry_id);
    let secret = eventually(WAIT, "the pull secret carries an ECR token", || async {
        let s = secrets.get_opt("berth-pull").await.map_err(|e| e.to_string())?.ok_or("no Secret yet")?;
        let config: Value = serde_json::from_slice(&s.data.as_ref().unwrap()[".dockerconfigjson"].0).unwrap();
        if config["auths"][&host].is_object() { Ok((s, config)) } else { Err(config.to_string()) }
    })
    .await;
    let (secret, config) = secret;
    assert_eq!(config["auths"][&host]["username"], "AWS");
    assert_eq!(
        config["auths"][&host]["password"], "210987654321-auth-token",
        "fetched as the pull role, not as berth: {config}"
    );
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let expires: i64 = annotations["berth.dev/ecr-expires-at"].parse().unwrap();
    let fetched: i64 = annotations["berth.dev/ecr-fetched-at"].parse().unwrap();
    // moto's token expiry is in 2015; the token cannot outlive the one-hour session it was
    // fetched as, so that is its life (refreshed after two thirds of it).
    assert!((3500..=3600).contains(&(expires - fetched)), "expires {} s after it was fetched", expires - fetched);
    let sa = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(env.ns.client.clone(), &ns);
    eventually(WAIT, "default carries the pull secret", || async {
        let a = sa.get("default").await.map_err(|e| e.to_string())?;
        if a.image_pull_secrets.iter().flatten().any(|r| r.name == "berth-pull") {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    // No refresh loop on moto's past expiry: the Secret is written once.
    let version = secret.metadata.resource_version.clone();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let again = secrets.get("berth-pull").await.unwrap();
    assert_eq!(again.metadata.resource_version, version, "the ECR token was fetched again within its life");

    // Grants removed: berth's statements go, theirs stay.
    policies
        .patch("app", &PatchParams::default(), &Patch::Merge(json!({"spec": {"grants": [{"subjects": [{"kind": "ServiceAccount", "name": "default"}], "actions": ["pull"]}]}})))
        .await
        .unwrap();
    eventually(WAIT, "only theirs left", || async {
        let p = repository_policy().await.ok_or("no policy")?;
        if p["Statement"].as_array().unwrap() == &vec![theirs.clone()] { Ok(()) } else { Err(p.to_string()) }
    })
    .await;

    // Without a pull role berth writes no ECR token, and says why.
    let registries = Api::<Registry>::all(env.ns.client.clone());
    registries
        .patch(&env.name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"ecr": {"pullSecretRoleArn": null}}})))
        .await
        .unwrap();
    policies
        .patch("app", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"touch": "1"}}})))
        .await
        .unwrap();
    eventually(WAIT, "the policy says it needs a pull role", || async {
        let p = policies.get("app").await.map_err(|e| e.to_string())?;
        let s = serde_json::to_value(&p.status).unwrap();
        if reason(&s) == "False/NoPullSecretRole" { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollouts_follow_ecr_tags_with_one_listing_per_repository() {
    let env = EcrEnv::new("ecr-rollouts", &["--repository-poll-interval", "1h"], json!({})).await;
    env.ns.enable_rollouts(true).await;
    let ns = env.ns.name.clone();
    let path = format!("{ns}/web");
    env.create_repository("web", json!({})).await;
    env.wait_repo("web", "Ready", |s| is_ready(s) && s["ecr"]["arn"].is_string()).await;
    let tags = ["stable", "canary", "edge"];
    for t in tags {
        moto::put_image(&env.ecr, &env.registry_id, &path, Some(t), &format!("{t}-1")).await;
    }
    let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.ns.client.clone(), &ns);
    for (i, t) in tags.iter().enumerate() {
        let image = format!("{}/{path}:{t}", moto::host(&env.registry_id));
        let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
            "metadata": {"name": format!("web-{i}"), "annotations": {"berth.dev/rollout": "digest", "berth.dev/poll-interval": "10s"}},
            "spec": {"selector": {"matchLabels": {"app": format!("web-{i}")}}, "template": {"metadata": {"labels": {"app": format!("web-{i}")}},
                     "spec": {"containers": [{"name": "web", "image": image}]}}},
        }))
        .unwrap();
        deployments.create(&PostParams::default(), &d).await.unwrap();
    }
    let pinned = |d: &k8s_openapi::api::apps::v1::Deployment| {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].image.clone().unwrap_or_default()
    };
    // A new push of `stable` rolls web-0 to its digest.
    let new = moto::put_image(&env.ecr, &env.registry_id, &path, Some("stable"), "stable-2").await;
    eventually(WAIT, "web-0 pinned to stable's new digest", || async {
        let d = deployments.get("web-0").await.map_err(|e| e.to_string())?;
        let image = pinned(&d);
        if image.ends_with(&format!(":stable@{new}")) { Ok(()) } else { Err(image) }
    })
    .await;
    // Three followed tags of one repository: polls share one listing.
    let before = env.berth.metric("berth_registry_requests_total{controller=\"rollout\"}").await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    let sent = env.berth.metric("berth_registry_requests_total{controller=\"rollout\"}").await - before;
    // 40 s at a 10 s interval is 4 rounds (±1 for the jitter): one DescribeImages each, where
    // a poll per tag would send 12.
    assert!((3.0..=6.0).contains(&sent), "{sent} ECR requests in 40 s for 3 tags of one repository polled every 10 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn scans_on_ecr_report_ecrs_findings_through_image_scans() {
    let scanning = json!({"rules": [{"scanFrequency": "OnPush", "repositoryFilters": ["*"]}]});
    let env = EcrEnv::new("ecr-scans", &["--repository-poll-interval", "2s"], json!({"scanning": scanning})).await;
    let ns = env.ns.name.clone();
    let path = format!("{ns}/svc");
    env.create_repository("svc", json!({})).await;
    env.wait_repo("svc", "Ready", |s| is_ready(s) && s["ecr"]["arn"].is_string()).await;
    let r = env.describe(&path).await.unwrap();
    assert!(r.image_scanning_configuration().unwrap().scan_on_push(), "the Registry's OnPush rule reaches ECR");
    let digest = moto::put_image(&env.ecr, &env.registry_id, &path, Some("v1"), "svc-1").await;
    let scans = Api::<berth::api::ImageScan>::namespaced(env.ns.client.clone(), &ns);
    let status = eventually(WAIT, "the image's scan is Complete with ECR's findings", || async {
        let list = scans.list(&Default::default()).await.map_err(|e| e.to_string())?;
        let scan = list.items.into_iter().find(|s| s.spec.digest == digest).ok_or("no ImageScan yet")?;
        let s = serde_json::to_value(&scan.status).unwrap();
        if s["phase"] == "Complete" { Ok(s) } else { Err(s.to_string()) }
    })
    .await;
    // moto's basic scan finds its one fixed finding; the counts are ECR's own.
    assert_eq!(status["scanner"], "Amazon ECR basic scanning");
    assert_eq!(status["findingSeverityCounts"], json!({"HIGH": 1}), "{status}");
    assert_eq!(status["findings"][0]["id"], "CVE-9999-9999", "{status}");
    let ecr_view = env
        .ecr
        .describe_image_scan_findings()
        .registry_id(&env.registry_id)
        .repository_name(&path)
        .image_id(moto::by_digest(&digest))
        .send()
        .await
        .unwrap();
    let counts = ecr_view.image_scan_findings().unwrap().finding_severity_counts().unwrap();
    assert_eq!(counts.values().sum::<i32>(), 1, "berth reports what ECR holds");
    env.wait_repo("svc", "the Repository sums the scans", |s| s["scans"]["findingSeverityCounts"]["HIGH"] == 1).await;
}

/// The repository scenario against real ECR, opt-in: set `BERTH_ECR_TEST_REGION` and AWS
/// credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optionally `AWS_SESSION_TOKEN`).
#[tokio::test(flavor = "multi_thread")]
async fn real_aws_scenario() {
    let (Ok(region), Ok(key), Ok(secret)) = (
        std::env::var("BERTH_ECR_TEST_REGION"),
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) else {
        eprintln!(
            "real_aws_scenario: not run (set BERTH_ECR_TEST_REGION and AWS credentials to run it against real ECR)"
        );
        return;
    };
    let cp = control_plane().await;
    cp.install_crds().await;
    let ns = cp.namespace("ecr-real").await;
    let mut data = json!({"accessKeyId": key, "secretAccessKey": secret});
    if let Ok(token) = std::env::var("AWS_SESSION_TOKEN") {
        data["sessionToken"] = json!(token);
    }
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "aws"}, "stringData": data})).unwrap();
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name).create(&PostParams::default(), &s).await.unwrap();
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.clone()))
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .load()
        .await;
    let sts_free = aws_sdk_ecr::Client::new(&shared);
    let token =
        sts_free.get_authorization_token().send().await.expect("GetAuthorizationToken with the test's credentials");
    let endpoint = token.authorization_data()[0].proxy_endpoint().unwrap().to_string();
    let reg: Registry = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": ns.name, "labels": {"berth.dev/test": ns.name}},
        "spec": {"type": "ecr", "url": endpoint, "ecr": {"region": region},
                 "credentialsSecretRef": {"name": "aws", "namespace": ns.name}, "checkInterval": "10s"},
    }))
    .unwrap();
    Api::<Registry>::all(ns.client.clone()).create(&PostParams::default(), &reg).await.unwrap();
    let _berth =
        support::berth::Berth::start(cp, support::free_port(), &ns.name, &["--repository-poll-interval", "5s"]).await;
    let repos = Api::<berth::api::Repository>::namespaced(ns.client.clone(), &ns.name);
    let name = support::unique_name("r");
    let path = format!("berth-test/{name}");
    let repo: berth::api::Repository = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "real"},
        "spec": {"registryRef": {"name": ns.name}, "name": path, "imageTagMutability": "Immutable", "deletionPolicy": "Delete",
                 "ecr": {"tags": {"berth-test": "true"}}},
    }))
    .unwrap();
    // The path must be allowed for the namespace.
    Api::<Registry>::all(ns.client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pathPrefixes": [{"namespace": ns.name, "prefixes": ["berth-test/"]}]}})),
        )
        .await
        .unwrap();
    repos.create(&PostParams::default(), &repo).await.unwrap();
    eventually(Duration::from_secs(120), "the real repository is Ready", || async {
        let r = repos.get("real").await.map_err(|e| e.to_string())?;
        let s = serde_json::to_value(&r.status).unwrap();
        if is_ready(&s) && s["ecr"]["arn"].is_string() { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    let described = sts_free.describe_repositories().repository_names(&path).send().await.unwrap();
    assert_eq!(described.repositories()[0].image_tag_mutability().unwrap().as_str(), "IMMUTABLE");
    repos.delete("real", &Default::default()).await.unwrap();
    eventually(Duration::from_secs(120), "the real repository is deleted", || async {
        match sts_free.describe_repositories().repository_names(&path).send().await {
            Err(_) => Ok(()),
            Ok(_) => Err("still there".to_string()),
        }
    })
    .await;
}
