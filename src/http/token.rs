//! `GET|POST /token/{registry}`: the Docker registry token protocol (the registry's
//! `auth.token.realm`). GET takes Basic credentials and repeated `scope` parameters; POST is the
//! OAuth2 password grant (form-encoded `username`, `password`, `scope`, `service`). An empty or
//! partial grant is not an error; only bad credentials are (401), and too many of those from
//! one client, with one username or over all, are refused without checking (429). The client is
//! the TCP peer, or the address a trusted proxy forwarded ([`super::client`]).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use crate::{
    auth::service::{Issued, Refusal, parse_basic},
    controllers::Context,
    metrics::TokenLabels,
};

/// Largest OAuth2 form accepted.
pub const MAX_FORM: usize = 64 * 1024;

fn pairs(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = Json(json!({"errors": [{"code": code, "message": message}]}));
    let mut response = (status, body).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"berth\""));
    }
    response
}

struct TokenRequest {
    service: Option<String>,
    scopes: Vec<String>,
    credentials: Option<(String, String)>,
}

async fn answer(ctx: &Context, registry: &str, request: TokenRequest, client: IpAddr) -> Response {
    let count = |result: &'static str| {
        ctx.metrics.token_requests.get_or_create(&TokenLabels { result }).inc();
    };
    let Some(tokens) = ctx.tokens.registry(registry) else {
        return not_loaded(ctx, registry, count);
    };
    if request.service.as_deref().is_some_and(|s| s != tokens.service) {
        count("bad_request");
        return error(StatusCode::BAD_REQUEST, "DENIED", "unknown service");
    }
    let principal = match ctx.tokens.authenticate(&ctx.client, request.credentials, client).await {
        Ok(p) => p,
        Err(Refusal::BadCredentials) => {
            count("unauthorized");
            return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required");
        }
        Err(Refusal::Limited(retry)) => {
            count("rate_limited");
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", "too many failed logins");
            if let Ok(v) = HeaderValue::from_str(&retry.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        Err(Refusal::ReviewUnavailable) => {
            count("unavailable");
            return error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "cannot review the token now; retry");
        }
    };
    match ctx.tokens.issue(registry, &principal, request.scopes.iter().flat_map(|s| s.split(' '))) {
        Some(Ok(Issued { token, expires_in, issued_at, .. })) => {
            count("issued");
            let issued_at = Timestamp::from_second(issued_at).map(|t| t.to_string()).unwrap_or_default();
            let body = json!({"token": token, "access_token": token, "expires_in": expires_in, "issued_at": issued_at});
            let mut r = (StatusCode::OK, Json(body)).into_response();
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Some(Err(e)) => {
            count("error");
            tracing::error!(registry, error = %e, "cannot sign a token");
            error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", "cannot sign a token")
        }
        None => not_loaded(ctx, registry, count),
    }
}

/// No signer for `registry` here. A Registry that exists with `tokenAuth` is one whose keys this
/// replica has not loaded yet (a follower learns of keys the leader just made within a second):
/// 503 with Retry-After, which clients retry, not a 404 that says it does not exist.
fn not_loaded(ctx: &Context, registry: &str, count: impl Fn(&'static str)) -> Response {
    let exists = ctx
        .registries
        .get(&kube::runtime::reflector::ObjectRef::new(registry))
        .is_some_and(|r| r.spec.token_auth.is_some());
    if !exists {
        count("unknown_registry");
        return error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "no token service for this registry");
    }
    count("keys_not_loaded");
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "the signing keys are not loaded yet; retry");
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub async fn get_token(
    State(ctx): State<Arc<Context>>,
    Path(registry): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = pairs(query.as_deref().unwrap_or(""));
    let credentials = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(h) => match h.to_str().ok().and_then(parse_basic) {
            Some(c) => Some(c),
            None => return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "only Basic credentials are accepted"),
        },
    };
    let request = TokenRequest {
        service: params.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone()),
        scopes: params.into_iter().filter(|(k, _)| k == "scope").map(|(_, v)| v).collect(),
        credentials,
    };
    let client = ctx.settings.trusted_proxies.client(peer.ip(), &headers);
    answer(&ctx, &registry, request, client).await
}

pub async fn post_token(
    State(ctx): State<Arc<Context>>,
    Path(registry): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !form_type.starts_with("application/x-www-form-urlencoded") {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED", "expected a form-encoded body");
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "UNSUPPORTED", "the form is not UTF-8");
    };
    let form = pairs(text);
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let credentials = match field("grant_type").as_deref() {
        Some("password") => match (field("username"), field("password")) {
            (Some(u), Some(p)) => Some((u, p)),
            _ => return error(StatusCode::BAD_REQUEST, "UNSUPPORTED", "password grant needs username and password"),
        },
        // berth issues no refresh tokens; clients fall back to asking with credentials again.
        Some(other) => {
            let message = format!("unsupported grant_type {other:?}: use password");
            return error(StatusCode::BAD_REQUEST, "UNSUPPORTED", &message);
        }
        None => None,
    };
    let request = TokenRequest {
        service: field("service"),
        scopes: form.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect(),
        credentials,
    };
    let client = ctx.settings.trusted_proxies.client(peer.ip(), &headers);
    answer(&ctx, &registry, request, client).await
}
