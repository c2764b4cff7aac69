//! berth as the registry's token service: the real Distribution registry in token mode, skopeo
//! as the client, ServiceAccount tokens from the real API server, AccessPolicies and pull
//! secrets reconciled by berth running as a process.

mod support;

use std::time::Duration;

use base64::Engine;
use berth::api::AccessPolicy;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use support::{
    eventually,
    scenario::{WAIT, ready},
    skopeo::Creds,
    token::{SIGNING_SECRET, TokenEnv},
};

fn jwt_token(body: &Value) -> String {
    body["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn public_private_and_undeclared_repositories_behave_like_ecr() {
    let mut env = TokenEnv::new("access-visibility").await;
    env.repository("public", "Public").await;
    env.repository("private", "Private").await;
    let ci = env.service_account("ci").await;
    let other = env.service_account("other").await;
    let ns = env.ns.name.clone();
    env.policy(
        "ci",
        json!({
            "repositories": {"names": ["public", "private"]},
            "grants": [
                {"subjects": [{"kind": "ServiceAccount", "name": "ci"}], "actions": ["pull", "push"]},
                {"subjects": [{"kind": "Robot", "name": "deployer"}], "actions": ["pull", "push"]},
            ],
        }),
    )
    .await;

    // A granted ServiceAccount token pushes (the grant may take a moment to reach the index).
    env.push_eventually("public", "v1", "pub", &ci).await;
    env.push("private", "v1", "priv", &ci).await.expect("ci pushes to private");

    // Public: anyone pulls, nobody pushes anonymously.
    env.pull("public", "v1", &Creds::Anonymous).await.expect("anonymous pull of a public repository");
    let refused = env.push("public", "v2", "anon", &Creds::Anonymous).await;
    assert!(refused.is_err(), "anonymous push must fail");
    // Private: only granted subjects.
    assert!(env.pull("private", "v1", &Creds::Anonymous).await.is_err(), "anonymous pull of a private repository");
    assert!(env.pull("private", "v1", &other).await.is_err(), "an ungranted ServiceAccount pulls a private repository");
    env.pull("private", "v1", &ci).await.expect("the granted ServiceAccount pulls");
    // Undeclared: nothing, not even for the ServiceAccount that may push elsewhere.
    let undeclared = env.skopeo.push(env.layout.path(), "v1", &env.image("undeclared", "v1"), &ci, false).await;
    assert!(!undeclared.status.success(), "push to an undeclared repository must fail");
    // A robot berth generated: its Secret holds the credentials, berth only their hash.
    let robot =
        Api::<Secret>::namespaced(env.ns.client.clone(), &env.ns.name).get("berth-robot-deployer").await.unwrap();
    let data = robot.data.clone().unwrap();
    let field = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    let (username, password) = (field("username"), field("password"));
    assert_eq!(username, format!("robot${ns}+deployer"));
    assert!(!serde_json::to_string(&robot.metadata.annotations).unwrap().contains(&password));
    let robot_creds = Creds::Basic { username, password };
    env.push("private", "robot", "by-robot", &robot_creds).await.expect("the robot pushes");
    let wrong = Creds::Basic { username: format!("robot${ns}+deployer"), password: "guess".into() };
    assert!(env.pull("private", "v1", &wrong).await.is_err(), "a wrong robot password pulls nothing");
    // Anyone can label a Secret: hashes count only where berth writes them. A forged robot
    // record for another namespace, and one for a robot of this namespace under the wrong
    // Secret name, both log in as nobody.
    for (name, user) in [("forged-a", "robot$kube-system+ci".to_string()), ("forged-b", format!("robot${ns}+deployer"))]
    {
        let forged: Secret = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": {"berth.dev/credential": "robot"},
                "annotations": {
                    "berth.dev/username": user,
                    "berth.dev/credential-hashes": serde_json::to_string(&[berth::auth::StoredCredential {
                        hash: berth::auth::robot::hash_new("chosen-by-attacker"),
                        expires_at_unix: None,
                    }]).unwrap(),
                },
            },
        }))
        .unwrap();
        Api::<Secret>::namespaced(env.ns.client.clone(), &ns).create(&Default::default(), &forged).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let attacker = Creds::Basic { username: user, password: "chosen-by-attacker".into() };
        assert_eq!(env.token(&format!("repository:{ns}/private:pull"), &attacker).await.status(), 401, "{name}");
    }
    // Wrong password: 401 from berth, nothing issued.
    let bad = Creds::Basic { username: "ci".into(), password: "not-a-token".into() };
    let r = env.token(&format!("repository:{ns}/public:pull"), &bad).await;
    assert_eq!(r.status(), 401);
    assert!(env.berth.metric("berth_token_requests_total{result=\"issued\"}").await >= 1.0);
}

#[tokio::test]
async fn tokens_are_scoped_signed_and_short_lived() {
    let mut env = TokenEnv::new("access-tokens").await;
    env.repository("a", "Private").await;
    env.repository("b", "Private").await;
    let ci = env.service_account("ci").await;
    env.policy(
        "ci",
        json!({
            "repositories": {"selector": {"matchLabels": {"team": "a"}}},
            "grants": [{"subjects": [{"kind": "ServiceAccount", "name": "ci"}], "actions": ["pull", "push"]}],
        }),
    )
    .await;
    env.push_eventually("a", "v1", "a", &ci).await;
    env.push("b", "v1", "b", &ci).await.unwrap();
    let ns = env.ns.name.clone();

    let r = env.token(&format!("repository:{ns}/a:pull"), &ci).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let token = jwt_token(&body);
    assert!(body["expires_in"].as_u64().unwrap() <= 300, "{body}");
    assert_eq!(env.registry_with("a", &token).await, 200, "the token works where it was issued for");
    assert_eq!(env.registry_with("b", &token).await, 401, "a token for repository a is refused on b");

    // Header and claims: x5c, audience = service, a jti, the granted scope only.
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert!(header["x5c"].as_array().is_some_and(|c| !c.is_empty()));
    assert_eq!(claims["aud"], env.service);
    assert_eq!(claims["iss"], "berth-test");
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    assert_eq!(claims["access"], json!([{"type": "repository", "name": format!("{ns}/a"), "actions": ["pull"]}]));

    // Tampered payload (widened to b): the signature no longer matches.
    claims["access"][0]["name"] = json!(format!("{ns}/b"));
    let tampered = format!("{}.{}.{}", parts[0], b64.encode(serde_json::to_vec(&claims).unwrap()), parts[2]);
    assert_eq!(env.registry_with("b", &tampered).await, 401);

    // Signed by a key the registry does not trust.
    let stranger = berth::auth::SigningKey::generate("stranger", Duration::from_secs(3600)).unwrap();
    let forged = sign_with(&stranger, &env, &format!("{ns}/b"), 300);
    assert_eq!(env.registry_with("b", &forged).await, 401);

    // Signed by berth's own key but expired (beyond the registry's 60 s leeway).
    let secret = Api::<Secret>::namespaced(env.ns.client.clone(), &env.ns.name).get(SIGNING_SECRET).await.unwrap();
    let key = berth::auth::keys_from_secret(&secret).unwrap().pop().unwrap();
    assert_eq!(env.registry_with("b", &sign_with(&key, &env, &format!("{ns}/b"), 300)).await, 200, "control");
    assert_eq!(env.registry_with("b", &sign_with(&key, &env, &format!("{ns}/b"), -300)).await, 401, "expired");
}

fn sign_with(key: &berth::auth::SigningKey, env: &TokenEnv, repo: &str, expires_in: i64) -> String {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let claims = berth::auth::Claims {
        iss: "berth-test".into(),
        sub: "test".into(),
        aud: env.service.clone(),
        exp: now + expires_in,
        nbf: now - 600,
        iat: now - 600,
        jti: format!("{:032x}", rand::random::<u128>()),
        access: vec![berth::auth::Access::repository(repo, &[berth::api::Action::Pull].into())],
    };
    berth::auth::Signer::new(key).unwrap().sign(&claims).unwrap()
}

#[tokio::test]
async fn removing_a_grant_takes_effect_for_the_next_token() {
    let mut env = TokenEnv::new("access-revoke").await;
    env.repository("app", "Private").await;
    let ci = env.service_account("ci").await;
    env.policy(
        "ci",
        json!({
            "repositories": {"names": ["app"]},
            "grants": [{"subjects": [{"kind": "ServiceAccount", "name": "ci"}], "actions": ["pull", "push"]}],
        }),
    )
    .await;
    env.push_eventually("app", "v1", "one", &ci).await;
    let policies = Api::<AccessPolicy>::namespaced(env.ns.client.clone(), &env.ns.name);
    let status = eventually(WAIT, "policy Ready with counts", || {
        let policies = policies.clone();
        async move {
            let p = policies.get("ci").await.map_err(|e| e.to_string())?;
            let s = serde_json::to_value(&p.status).unwrap();
            if ready(&s) == Some(("True", "Applied")) && s["repositoryCount"] == 1 { Ok(s) } else { Err(s.to_string()) }
        }
    })
    .await;
    assert_eq!(status["grantCount"], 1);

    let started = std::time::Instant::now();
    policies.delete("ci", &DeleteParams::default()).await.unwrap();
    let scope = format!("repository:{}/app:pull,push", env.ns.name);
    eventually(Duration::from_secs(10), "no access after the grant is gone", || {
        let scope = scope.clone();
        let (env, ci) = (&env, &ci);
        async move {
            let body: Value = env.token(&scope, ci).await.json().await.map_err(|e| e.to_string())?;
            let claims = decode_claims(&jwt_token(&body));
            if claims["access"].as_array().is_none_or(|a| a.is_empty()) { Ok(()) } else { Err(claims.to_string()) }
        }
    })
    .await;
    println!("grant removal effective after {:?}", started.elapsed());
    assert!(env.pull("app", "v1", &ci).await.is_err());
}

fn decode_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn pull_secrets_pull_but_never_push_and_survive_rotation() {
    let mut env = TokenEnv::new("access-pullsecret").await;
    env.repository("app", "Private").await;
    let ci = env.service_account("ci").await;
    let runtime = env.service_account("runtime").await;
    let _ = runtime;
    env.policy(
        "runtime",
        json!({
            "repositories": {"names": ["app"]},
            "grants": [{"subjects": [{"kind": "ServiceAccount", "name": "ci"}], "actions": ["pull", "push"]}],
            "pullSecrets": {"secretName": "app-pull", "serviceAccounts": ["runtime"]},
        }),
    )
    .await;
    env.push_eventually("app", "v1", "one", &ci).await;
    let creds = env.pull_secret("app-pull").await;
    env.pull("app", "v1", &creds).await.expect("the pull secret pulls");
    assert!(env.push("app", "v2", "two", &creds).await.is_err(), "a pull secret never pushes");
    // Wired into the ServiceAccount.
    let sa = Api::<ServiceAccount>::namespaced(env.ns.client.clone(), &env.ns.name).get("runtime").await.unwrap();
    assert!(sa.image_pull_secrets.iter().flatten().any(|r| r.name == "app-pull"), "{sa:?}");
    // The Secret holds credentials, never berth's hash; berth's own record is a hash.
    let secret = Api::<Secret>::namespaced(env.ns.client.clone(), &env.ns.name).get("app-pull").await.unwrap();
    let Creds::Basic { password: first_password, .. } = &creds else { unreachable!() };
    let annotations = serde_json::to_string(&secret.metadata.annotations).unwrap();
    assert!(!annotations.contains(first_password.as_str()), "the password must not be in annotations");

    // Rotate now (what happens on its own at two thirds of the lifetime): both keep working.
    Api::<AccessPolicy>::namespaced(env.ns.client.clone(), &env.ns.name)
        .patch(
            "runtime",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"berth.dev/rotate": "now-1"}}})),
        )
        .await
        .unwrap();
    let rotated = eventually(WAIT, "a rotated pull secret", || {
        let env = &env;
        let creds = creds.clone();
        async move {
            let now = env.pull_secret("app-pull").await;
            if now != creds { Ok(now) } else { Err("not rotated yet".to_string()) }
        }
    })
    .await;
    env.pull("app", "v1", &rotated).await.expect("the new credentials pull");
    env.pull("app", "v1", &creds).await.expect("the old credentials keep working during the overlap");

    // Revoke (a leak): new credentials, and every earlier password stops at once.
    Api::<AccessPolicy>::namespaced(env.ns.client.clone(), &env.ns.name)
        .patch(
            "runtime",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"berth.dev/revoke": "leak-1"}}})),
        )
        .await
        .unwrap();
    let revoked = eventually(WAIT, "pull secret replaced on revocation", || {
        let env = &env;
        let rotated = rotated.clone();
        async move {
            let now = env.pull_secret("app-pull").await;
            if now != rotated { Ok(now) } else { Err("not replaced yet".to_string()) }
        }
    })
    .await;
    env.pull("app", "v1", &revoked).await.expect("the credentials after the revocation pull");
    eventually(Duration::from_secs(20), "revoked passwords refused", || {
        let (env, creds, rotated) = (&env, creds.clone(), rotated.clone());
        async move {
            match (env.pull("app", "v1", &creds).await, env.pull("app", "v1", &rotated).await) {
                (Err(_), Err(_)) => Ok(()),
                other => Err(format!("still pulling: {other:?}")),
            }
        }
    })
    .await;
    let rotated = revoked;

    // Policy gone: the Secret and the ServiceAccount reference go too.
    Api::<AccessPolicy>::namespaced(env.ns.client.clone(), &env.ns.name)
        .delete("runtime", &DeleteParams::default())
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(env.ns.client.clone(), &env.ns.name);
    eventually(WAIT, "pull secret removed", || {
        let secrets = secrets.clone();
        async move {
            match secrets.get_opt("app-pull").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            }
        }
    })
    .await;
    assert!(env.pull("app", "v1", &rotated).await.is_err(), "credentials of a deleted policy stop working");
}

/// Nodes pull a registry by names other than the url berth uses (a node port, an Ingress host):
/// the kubelet picks a pull secret's credentials by the host the image names, so the Secret has a
/// key for every name of the Registry, and the credentials pull under each.
#[tokio::test]
async fn a_pull_secret_names_every_host_the_registry_is_pulled_by() {
    let mut env = TokenEnv::new("access-aliases").await;
    let alias = env.alias();
    env.set_aliases(&[alias.clone(), "registry.example.com".into()]).await;
    env.repository("app", "Private").await;
    let ci = env.service_account("ci").await;
    env.policy(
        "runtime",
        json!({
            "repositories": {"names": ["app"]},
            "grants": [{"subjects": [{"kind": "ServiceAccount", "name": "ci"}], "actions": ["pull", "push"]}],
            "pullSecrets": {"secretName": "app-pull"},
        }),
    )
    .await;
    env.push_eventually("app", "v1", "one", &ci).await;
    let secrets = Api::<Secret>::namespaced(env.ns.client.clone(), &env.ns.name);
    let mut expected = vec![alias.clone(), env.registry.host.clone(), "registry.example.com".to_string()];
    expected.sort();
    let auths = eventually(WAIT, "a pull secret with a key for every name", || {
        let (secrets, expected) = (secrets.clone(), expected.clone());
        async move {
            let s = secrets.get_opt("app-pull").await.map_err(|e| e.to_string())?.ok_or("no Secret yet")?;
            let data = s.data.unwrap_or_default();
            let config: Value = serde_json::from_slice(&data.get(".dockerconfigjson").ok_or("no data")?.0)
                .map_err(|e| e.to_string())?;
            let mut keys: Vec<String> =
                config["auths"].as_object().map(|a| a.keys().cloned().collect()).unwrap_or_default();
            keys.sort();
            if keys == expected { Ok(config["auths"].clone()) } else { Err(format!("keys {keys:?}")) }
        }
    })
    .await;
    assert!(expected.iter().all(|h| auths[h] == auths[&alias]), "one credential under every name: {auths}");
    let creds = Creds::Basic {
        username: auths[&alias]["username"].as_str().unwrap().into(),
        password: auths[&alias]["password"].as_str().unwrap().into(),
    };
    // The registry's token challenge names berth's realm and the fixed service, whatever name the
    // client used: pulling by the alias works with the alias's credentials.
    let into = tempfile::tempdir().unwrap();
    let image = format!("{alias}/{}/app:v1", env.ns.name);
    let out = env.skopeo.pull(&image, &into.path().join("image"), &creds).await;
    assert!(out.status.success(), "pull {image}: {}", support::skopeo::describe(&out));
    env.pull("app", "v1", &creds).await.expect("and by the url's name");
}

#[tokio::test]
async fn the_token_endpoint_speaks_get_and_oauth2_post_and_refuses_bad_input() {
    // 127.0.0.2 plays the ingress in front of berth; the test's own 127.0.0.1 is not trusted.
    let env = TokenEnv::with_options("access-endpoint", &["--trusted-proxies", "127.0.0.2"], false).await;
    env.repository("app", "Public").await;
    let ci = env.service_account("ci").await;
    let Creds::Basic { username, password } = &ci else { unreachable!() };
    let ns = env.ns.name.clone();
    let url = format!("{}/token/{}", env.berth.url(), env.name);
    let http = reqwest::Client::new();

    // OAuth2 password grant, as docker sends it.
    let form = [
        ("grant_type", "password"),
        ("service", env.service.as_str()),
        ("client_id", "docker"),
        ("username", username.as_str()),
        ("password", password.as_str()),
        ("scope", &format!("repository:{ns}/app:pull repository:{ns}/app:push")),
    ];
    let r = http.post(&url).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token"], body["access_token"]);
    let claims = decode_claims(&jwt_token(&body));
    assert_eq!(claims["sub"], format!("system:serviceaccount:{ns}:ci"));
    assert_eq!(claims["access"][0]["actions"], json!(["pull"]), "public pull only: no grant to push");

    // Refresh tokens are not issued: clients fall back to credentials.
    let refresh = [("grant_type", "refresh_token"), ("refresh_token", "x"), ("service", env.service.as_str())];
    assert_eq!(http.post(&url).form(&refresh).send().await.unwrap().status(), 400);
    assert_eq!(http.post(&url).body("grant_type=password").send().await.unwrap().status(), 415);
    // Anonymous GET without scope (what `docker login` sends first) gets an empty grant.
    let r = http.get(&url).query(&[("service", env.service.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(decode_claims(&jwt_token(&r.json().await.unwrap()))["access"], json!([]));
    // Malformed scopes are dropped, never an error and never widened.
    let r = http
        .get(&url)
        .query(&[
            ("service", env.service.as_str()),
            ("scope", "repository:UPPER:pull"),
            ("scope", "registry:catalog:*"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(decode_claims(&jwt_token(&r.json().await.unwrap()))["access"], json!([]));
    // Wrong service, unknown registry, a Bearer header: 4xx with a reason.
    let r = http.get(&url).query(&[("service", "other")]).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = http.get(format!("{}/token/no-such-registry", env.berth.url())).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http.get(&url).bearer_auth("abc").send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Failed logins from one client are limited: 429 with Retry-After, before any check.
    let mut limited = None;
    for _ in 0..30 {
        let r = http.get(&url).basic_auth("robot$x+y", Some("wrong")).send().await.unwrap();
        if r.status() == 429 {
            limited = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            break;
        }
        assert_eq!(r.status(), 401);
    }
    let retry: u64 = limited.expect("no 429 after 30 failed logins").parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert!(env.berth.metric("berth_token_requests_total{result=\"rate_limited\"}").await >= 1.0);
    // X-Forwarded-For from a peer that is not a trusted proxy is ignored: still the same client.
    let r = http.get(&url).header("x-forwarded-for", "198.51.100.9").basic_auth("robot$x+y", Some("wrong"));
    assert_eq!(r.send().await.unwrap().status(), 429, "an untrusted peer cannot pick its client address");

    // Behind the trusted proxy, each forwarded client has its own limit per username.
    let proxy = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 2])).build().unwrap();
    let fail = |client: &'static str, user: &'static str| {
        let r = proxy.get(&url).header("x-forwarded-for", format!("203.0.113.66, {client}"));
        async move { r.basic_auth(user, Some("wrong")).send().await.unwrap().status() }
    };
    let mut statuses = Vec::new();
    while statuses.len() < 30 && statuses.last() != Some(&429) {
        statuses.push(fail("198.51.100.1", "robot$x+y").await.as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(statuses[..statuses.len() - 1].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(fail("198.51.100.1", "robot$x+y").await, 429);
    assert_eq!(fail("198.51.100.1", "robot$x+z").await, 401, "the same client's other usernames are not limited");
    assert_eq!(fail("198.51.100.2", "robot$x+y").await, 401, "nor other clients behind the proxy");
    // Secrets never reach the log.
    assert!(!env.berth.log_tail().contains(password.as_str()));
}

#[tokio::test]
async fn pull_secrets_reach_other_namespaces_only_when_those_accept_them() {
    let env = TokenEnv::new("access-accept").await;
    env.repository("app", "Private").await;
    let cp = support::control_plane().await;
    let other = cp.namespace("access-accept-other").await;
    env.policy(
        "share",
        json!({
            "repositories": {"names": ["app"]},
            "grants": [{"subjects": [{"kind": "Anonymous"}], "actions": ["pull"]}],
            "pullSecrets": {"namespaces": [other.name]},
        }),
    )
    .await;
    let policies = Api::<AccessPolicy>::namespaced(env.ns.client.clone(), &env.ns.name);
    let status = eventually(WAIT, "refused: the namespace did not accept", || {
        let policies = policies.clone();
        async move {
            let s = serde_json::to_value(policies.get("share").await.map_err(|e| e.to_string())?.status).unwrap();
            if ready(&s).is_some_and(|r| r.1 == "NamespaceNotAccepting") { Ok(s) } else { Err(s.to_string()) }
        }
    })
    .await;
    assert!(status.to_string().contains("berth.dev/accept-pull-secrets-from"), "{status}");
    let secrets = Api::<Secret>::namespaced(other.client.clone(), &other.name);
    assert!(secrets.get_opt("berth-pull").await.unwrap().is_none(), "nothing written uninvited");

    // The other namespace accepts: the Secret arrives.
    Api::<k8s_openapi::api::core::v1::Namespace>::all(other.client.clone())
        .patch(
            &other.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"berth.dev/accept-pull-secrets-from": env.ns.name}}})),
        )
        .await
        .unwrap();
    eventually(WAIT, "pull secret written once accepted", || {
        let secrets = secrets.clone();
        async move {
            secrets.get_opt("berth-pull").await.map_err(|e| e.to_string())?.map(|_| ()).ok_or("not yet".to_string())
        }
    })
    .await;
}

/// A registry berth does not run reads a new signing key's certificate only when someone
/// restarts it: berth says so, with the deadline, in a condition and in one Warning Event per new
/// key (not one per reconcile). Short key periods make a new key every 15 s.
#[tokio::test]
async fn a_registry_berth_does_not_run_is_told_when_it_must_load_a_new_key() {
    use berth::api::Registry;
    use k8s_openapi::api::core::v1::Event;
    use kube::api::ListParams;
    let cp = support::control_plane().await;
    cp.install_crds().await;
    let ns = cp.namespace("key-deadline").await;
    let registry: Registry = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": ns.name, "labels": {"berth.dev/test": ns.name}},
        "spec": {
            "url": format!("http://127.0.0.1:{}", support::free_port()),
            "checkInterval": "1h",
            "tokenAuth": {
                "issuer": "berth-test", "service": "r", "tokenLifetime": "10s",
                "signingKeySecretRef": {"name": SIGNING_SECRET, "namespace": ns.name},
                "keyRotation": {"keyLifetime": "60s", "renewBefore": "45s", "activationDelay": "30s"},
            },
        },
    }))
    .unwrap();
    Api::<Registry>::all(ns.client.clone()).create(&Default::default(), &registry).await.unwrap();
    let _berth = support::berth::Berth::start(cp, support::free_port(), &ns.name, &[]).await;

    let registries = Api::<Registry>::all(ns.client.clone());
    let name = ns.name.clone();
    let condition = eventually(Duration::from_secs(60), "SigningKeyRotation: RegistryRestartNeeded", || {
        let registries = registries.clone();
        let name = name.clone();
        async move {
            let s = serde_json::to_value(registries.get(&name).await.map_err(|e| e.to_string())?.status).unwrap();
            let c =
                s["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "SigningKeyRotation").cloned();
            match c {
                Some(c) if c["reason"] == "RegistryRestartNeeded" && c["status"] == "False" => Ok(c),
                _ => Err(s.to_string()),
            }
        }
    })
    .await;
    let message = condition["message"].as_str().unwrap();
    assert!(message.contains(&format!("{SIGNING_SECRET}-bundle")), "names the bundle Secret: {message}");
    assert!(message.contains(&chrono_like_year()), "names the deadline as a time: {message}");

    // A few reconciles later (followers every second, the leader at each key event): still one
    // Event per key that waited, not one per pass.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut events = Vec::new();
    for namespace in [ns.name.as_str(), "default"] {
        let list = Api::<Event>::namespaced(ns.client.clone(), namespace).list(&ListParams::default()).await.unwrap();
        events.extend(list.items.into_iter().filter(|e| {
            e.reason.as_deref() == Some("RegistryRestartNeeded")
                && [ns.name.as_str(), &format!("{SIGNING_SECRET}-bundle")]
                    .contains(&e.involved_object.name.as_deref().unwrap_or(""))
        }));
    }
    let count: i32 =
        events.iter().map(|e| e.count.unwrap_or(1) + e.series.as_ref().map_or(0, |s| s.count.unwrap_or(0))).sum();
    let secret = Api::<Secret>::namespaced(ns.client.clone(), &ns.name).get(SIGNING_SECRET).await.unwrap();
    let keys = secret.data.unwrap_or_default().keys().filter(|k| k.ends_with(".key")).count();
    assert!(count >= 1, "a Warning Event names the deadline: {events:?}");
    assert!(
        (count as usize) < keys.max(2),
        "one Event per new key ({keys} stored keys), not per reconcile: {count} {events:#?}"
    );
    assert!(events.iter().all(|e| e.type_.as_deref() == Some("Warning")));
}

/// This year as written in RFC 3339 times ("2026-").
fn chrono_like_year() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    k8s_openapi::jiff::Timestamp::from_second(secs).unwrap().to_string()[..5].to_string()
}
