//! Token service benchmark: berth (release build) issuing tokens to a robot with 100
//! AccessPolicies in the cluster, 50 concurrent clients on loopback, load generator included.
//! `cargo bench --bench tokens` prints the figures; nothing here asserts timings.

#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use berth::auth::{Access, Claims, Signer, SigningKey};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use support::{eventually, scenario::WAIT, token::TokenEnv};

const POLICIES: usize = 100;
const CLIENTS: usize = 50;
const RUN: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with: cargo bench --bench tokens");
        return;
    }
    signing_alone();
    issuance().await;
}

/// One core, no HTTP: what the signature itself costs.
fn signing_alone() {
    let key = SigningKey::generate("bench", Duration::from_secs(3600)).unwrap();
    let signer = Signer::new(&key).unwrap();
    let access = vec![Access::repository("team/app", &[berth::api::Action::Pull, berth::api::Action::Push].into())];
    let n = 20_000;
    let started = Instant::now();
    for _ in 0..n {
        let claims =
            Claims::new("berth", "robot$team+ci", "registry", access.clone(), 1_800_000_000, Duration::from_secs(300));
        std::hint::black_box(signer.sign(&claims).unwrap());
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!("signing_alone: ES256 claims + signature on one core: {rate:.0} tokens/s");
}

async fn issuance() {
    let env = TokenEnv::new("bench-tokens").await;
    let ns = env.ns.name.clone();
    for i in 0..POLICIES {
        env.repository(&format!("app{i}"), if i % 2 == 0 { "Private" } else { "Public" }).await;
    }
    stream::iter(0..POLICIES)
        .for_each_concurrent(8, |i| {
            let env = &env;
            async move {
                env.policy(
                    &format!("p{i}"),
                    json!({
                        "repositories": {"names": [format!("app{i}"), "app0"]},
                        "grants": [
                            {"subjects": [{"kind": "Robot", "name": format!("r{i}")}], "actions": ["pull", "push"]},
                            {"subjects": [{"kind": "ServiceAccount", "name": format!("sa{i}")}], "actions": ["pull"]},
                        ],
                    }),
                )
                .await
            }
        })
        .await;
    let secrets = Api::<Secret>::namespaced(env.ns.client.clone(), &ns);
    let (user, password) = eventually(WAIT, "robot r7's Secret", || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get_opt("berth-robot-r7").await.map_err(|e| e.to_string())?.ok_or("not yet")?;
            let d = s.data.unwrap_or_default();
            let f = |k: &str| String::from_utf8_lossy(&d[k].0).into_owned();
            Ok::<_, String>((f("username"), f("password")))
        }
    })
    .await;
    let url = format!("{}/token/{}", env.berth.url(), env.name);
    let scope = format!("repository:{ns}/app7:pull,push");
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let request = {
        let (http, url, scope, service, user, password) =
            (http.clone(), url.clone(), scope.clone(), env.service.clone(), user.clone(), password.clone());
        move || {
            http.get(&url)
                .query(&[("service", service.as_str()), ("scope", scope.as_str())])
                .basic_auth(&user, Some(&password))
                .send()
        }
    };
    // Wait until the grant is in the index: both actions granted.
    eventually(WAIT, "the robot's grant", || {
        let request = request.clone();
        async move {
            let body: Value = request().await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
            let token = body["token"].as_str().ok_or("no token")?;
            let payload = token.split('.').nth(1).ok_or("not a JWT")?;
            use base64::Engine;
            let claims: Value =
                serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
                    .unwrap();
            if claims["access"][0]["actions"] == json!(["pull", "push"]) { Ok(()) } else { Err(claims.to_string()) }
        }
    })
    .await;

    // The load generator: one keep-alive HTTP/1 connection per client (hyper, no pool), so
    // that it takes as little of the shared 2 cores as it can.
    let addr = env.berth.url().trim_start_matches("http://").to_string();
    let auth = {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    };
    let path = format!(
        "/token/{}?service={}&scope={}",
        env.name,
        env.service,
        form_urlencoded::byte_serialize(scope.as_bytes()).collect::<String>()
    );
    println!("load: starting ({CLIENTS} clients for {RUN:?}; berth pid {:?})", env.berth.pid());
    let deadline = Instant::now() + RUN;
    let started = Instant::now();
    let cpu_before = env.berth.cpu_seconds();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (addr, auth, path) = (addr.clone(), auth.clone(), path.clone());
            tokio::spawn(async move {
                use http_body_util::BodyExt;
                let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                let mut latencies = Vec::with_capacity(100_000);
                let mut failures = 0u64;
                while Instant::now() < deadline {
                    let req = hyper::Request::get(&path)
                        .header("host", &addr)
                        .header("authorization", &auth)
                        .body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap();
                    let t = Instant::now();
                    match sender.send_request(req).await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.into_body().collect().await;
                            latencies.push(t.elapsed());
                        }
                        _ => failures += 1,
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for w in workers {
        let (l, f) = w.await.unwrap();
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = env.berth.cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "issuance: {POLICIES} AccessPolicies, {CLIENTS} concurrent clients, robot credentials, {:.0}s: {:.0} tokens/s, \
         p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {failures} failures; berth used {} of CPU; RSS {:.1} MiB",
        elapsed,
        latencies.len() as f64 / elapsed,
        p(0.5),
        p(0.99),
        p(1.0),
        cpu.map(|c| format!("{:.2} cores", c / elapsed)).unwrap_or_else(|| "?".into()),
        env.berth.rss_kib().unwrap_or(0) as f64 / 1024.0
    );
}
