//! The test environment itself: a real Distribution registry, skopeo pushing and pulling OCI
//! layouts that the harness writes.

mod support;

use support::{
    OciLayout, TestRegistry,
    oci::{INDEX, MANIFEST},
    skopeo::{Creds, Skopeo, describe},
};

#[tokio::test]
async fn skopeo_pushes_to_the_test_registry_and_the_tags_list_back() {
    let registry = TestRegistry::start().await;
    let skopeo = Skopeo::default();
    let mut layout = OciLayout::default();
    let v1 = layout.add_image("v1", "first");
    let v2 = layout.add_image("v2", "second");
    let v1_again = OciLayout::default().add_image("other", "first");
    assert_ne!(v1.digest, v2.digest, "distinct content gives distinct digests");
    assert_eq!(v1.digest, v1_again.digest, "the same content gives the same digest");
    assert_eq!(v1.media_type, MANIFEST);

    let repo = registry.image("team-a/app");
    for tag in ["v1", "v2"] {
        let out = skopeo.push(layout.path(), tag, &format!("{repo}:{tag}"), &Creds::Anonymous, false).await;
        assert!(out.status.success(), "push {tag}: {}\n{}", describe(&out), registry.log_tail());
    }
    let tags = skopeo.list_tags(&repo, &Creds::Anonymous).await.expect("list-tags");
    assert_eq!(tags, ["v1", "v2"]);
    // The registry stores exactly the manifest we wrote.
    assert_eq!(skopeo.digest(&format!("{repo}:v1"), &Creds::Anonymous).await.unwrap(), v1.digest);
    assert_eq!(skopeo.digest(&format!("{repo}:v2"), &Creds::Anonymous).await.unwrap(), v2.digest);

    // And it pulls back.
    let pulled = tempfile::tempdir().unwrap();
    let out = skopeo.pull(&format!("{repo}:v2"), pulled.path(), &Creds::Anonymous).await;
    assert!(out.status.success(), "pull: {}", describe(&out));
    assert!(pulled.path().join("blobs/sha256").join(v2.digest.trim_start_matches("sha256:")).exists());

    // A tag that was never pushed is not there.
    assert!(skopeo.digest(&format!("{repo}:v3"), &Creds::Anonymous).await.is_err());
}

#[tokio::test]
async fn a_multi_arch_index_pushes_with_its_children() {
    let registry = TestRegistry::start().await;
    let skopeo = Skopeo::default();
    let mut layout = OciLayout::default();
    let (index, children) = layout.add_index("multi", "multi-arch", &["amd64", "arm64"]);
    assert_eq!(index.media_type, INDEX);
    assert_eq!(children.len(), 2);
    assert_ne!(children[0].digest, children[1].digest);

    let reference = format!("{}:multi", registry.image("team-a/multi"));
    let out = skopeo.push(layout.path(), "multi", &reference, &Creds::Anonymous, true).await;
    assert!(out.status.success(), "push --all: {}\n{}", describe(&out), registry.log_tail());
    assert_eq!(skopeo.digest(&reference, &Creds::Anonymous).await.unwrap(), index.digest);
    for child in &children {
        let by_digest = format!("{}@{}", registry.image("team-a/multi"), child.digest);
        assert_eq!(skopeo.digest(&by_digest, &Creds::Anonymous).await.unwrap(), child.digest);
    }
}

#[tokio::test]
async fn registries_are_isolated_from_each_other() {
    let a = TestRegistry::start().await;
    let b = TestRegistry::start().await;
    assert_ne!(a.host, b.host);
    let skopeo = Skopeo::default();
    let mut layout = OciLayout::default();
    layout.add_image("only-a", "isolated");
    let out =
        skopeo.push(layout.path(), "only-a", &format!("{}:only-a", a.image("x/y")), &Creds::Anonymous, false).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(skopeo.list_tags(&a.image("x/y"), &Creds::Anonymous).await.unwrap(), ["only-a"]);
    assert!(skopeo.list_tags(&b.image("x/y"), &Creds::Anonymous).await.is_err(), "b never saw the push");
}

#[test]
fn registry_config_switches_notifications_and_token_auth() {
    use support::registry::{NotificationsConfig, RegistryOptions, TokenAuthConfig, render_config};
    let plain: serde_json::Value = serde_json::from_str(&render_config(
        "127.0.0.1:5000",
        std::path::Path::new("/tmp/s"),
        &RegistryOptions::default(),
    ))
    .unwrap();
    assert_eq!(plain["storage"]["delete"]["enabled"], true);
    assert!(plain.get("auth").is_none() && plain.get("notifications").is_none());
    let full: serde_json::Value = serde_json::from_str(&render_config(
        "127.0.0.1:5000",
        std::path::Path::new("/tmp/s"),
        &RegistryOptions {
            notifications: Some(NotificationsConfig { url: "http://127.0.0.1:1/events".into(), token: "t0k".into() }),
            token_auth: Some(TokenAuthConfig {
                realm: "http://127.0.0.1:1/token".into(),
                service: "svc".into(),
                issuer: "berth".into(),
                root_cert_bundle: "/tmp/bundle.pem".into(),
            }),
            ..Default::default()
        },
    ))
    .unwrap();
    assert_eq!(full["notifications"]["endpoints"][0]["headers"]["Authorization"][0], "Bearer t0k");
    assert_eq!(full["auth"]["token"]["issuer"], "berth");
    assert_eq!(full["auth"]["token"]["rootcertbundle"], "/tmp/bundle.pem");
}

/// What later tests rely on the control plane for: kube-controller-manager creates each
/// namespace's `default` ServiceAccount, and ServiceAccount tokens pass TokenReview (berth's
/// token service authenticates workloads that way).
#[tokio::test]
async fn service_account_tokens_pass_token_review() {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::{Api, PostParams};

    let cp = support::control_plane().await;
    let ns = cp.namespace("token-review").await;
    let accounts = Api::<ServiceAccount>::namespaced(ns.client.clone(), &ns.name);

    // The controller manager's serviceaccount controller creates `default` shortly after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while accounts.get_opt("default").await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "no default ServiceAccount: is kube-controller-manager running?");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let request = TokenRequest {
        spec: TokenRequestSpec { audiences: vec![], expiration_seconds: Some(600), ..Default::default() },
        ..Default::default()
    };
    let issued =
        accounts.create_token_request("default", &PostParams::default(), &request).await.expect("TokenRequest");
    let token = issued.status.expect("token status").token;

    let review = |token: String| TokenReview {
        spec: TokenReviewSpec { token: Some(token), audiences: None },
        ..Default::default()
    };
    let reviews = Api::<TokenReview>::all(ns.client.clone());
    let ok = reviews.create(&PostParams::default(), &review(token.clone())).await.unwrap();
    let status = ok.status.expect("review status");
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    assert_eq!(
        status.user.and_then(|u| u.username).as_deref(),
        Some(format!("system:serviceaccount:{}:default", ns.name).as_str())
    );

    let mut tampered = token.into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let bad = reviews.create(&PostParams::default(), &review(String::from_utf8(tampered).unwrap())).await.unwrap();
    assert_ne!(bad.status.and_then(|s| s.authenticated), Some(true), "a tampered token must not authenticate");
}
