//! The OCI Distribution API (CNCF Distribution 2.8 and 3.x, Zot, Harbor) over reqwest.
//!
//! Written on reqwest rather than oci-client because berth needs what that crate leaves out:
//! catalog pagination, delete by digest, HEAD with every manifest type, exact request counts
//! for metrics and benchmarks, and its own retry and concurrency bounds.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use prometheus_client::metrics::{family::Family, histogram::Histogram};
use reqwest::{Method, StatusCode, Url, header};
use tokio::sync::Semaphore;

use crate::metrics::RequestLabels;

use super::{
    Backend, Deleted, Descriptor, MANIFEST_MEDIA_TYPES, Manifest, RegistryError, next_link, parse_bearer_challenge,
    sha256_digest,
};

/// How berth reaches one Distribution registry.
#[derive(Clone, Default)]
pub struct DistributionConfig {
    /// Base URL, e.g. `https://registry.example.com` (no `/v2/`).
    pub url: String,
    /// Basic credentials, also used to obtain bearer tokens from the registry's token service.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Accept any TLS certificate (tests and labs only).
    pub insecure_skip_tls_verify: bool,
    /// PEM CA certificates that sign the registry's certificate.
    pub ca_bundle: Option<String>,
    /// Requests in flight at once (default 8).
    pub max_concurrency: usize,
    /// Per-request timeout (default 30 s).
    pub timeout: Option<Duration>,
    /// Attempts for a request that failed with a connection error, 429 or 5xx (default 4).
    pub attempts: u32,
    /// Where to record how long each registry request took (response headers received).
    pub latency: Option<Family<RequestLabels, Histogram>>,
    /// Signs berth's own bearer tokens for a scope, for a registry whose token service is berth:
    /// no credential that could be read elsewhere is needed.
    pub mint: Option<Mint>,
}

impl std::fmt::Debug for DistributionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.debug_struct("DistributionConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("mint", &self.mint.is_some())
            .finish_non_exhaustive()
    }
}

/// Makes a bearer token (and its lifetime) for a scope.
pub type Mint = std::sync::Arc<dyn Fn(&str) -> Result<(String, Duration), String> + Send + Sync>;

pub struct Distribution {
    base: Url,
    http: reqwest::Client,
    username: Option<String>,
    password: Option<String>,
    permits: Semaphore,
    attempts: u32,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    mint: Option<Mint>,
    latency: Option<Family<RequestLabels, Histogram>>,
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::POST => "POST",
        _ => "OTHER",
    }
}

impl std::fmt::Debug for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials or tokens.
        f.debug_struct("Distribution").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

const CATALOG_PAGE: u32 = 1000;
const TAGS_PAGE: u32 = 1000;
/// Most entries a paginated listing (catalog, tags) is read to.
const MAX_LISTED: usize = 1_000_000;
const MAX_ERROR_BODY: usize = 300;
/// Distribution refuses manifests over 4 MiB; berth reads no more than that.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Blobs berth reads (image configs) are small; a bigger one is refused, not buffered.
pub const MAX_BLOB_BYTES: usize = 16 << 20;
/// How long streaming one blob into a file (a layer, a data archive) may take in all; a stall
/// fails sooner (the client's read timeout).
const BLOB_STREAM_TIMEOUT: Duration = Duration::from_secs(3600);

/// Reads a body of at most `max` bytes: a larger one (by Content-Length, or as it streams in)
/// is an error, so a hostile or broken registry cannot make berth buffer without bound.
pub(super) async fn read_capped(mut resp: reqwest::Response, max: usize, what: &str) -> Result<Vec<u8>, RegistryError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(RegistryError::Protocol(format!("{what} larger than {max} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e))? {
        if body.len() + chunk.len() > max {
            return Err(RegistryError::Protocol(format!("{what} larger than {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Distribution {
    pub fn new(config: DistributionConfig) -> Result<Distribution, RegistryError> {
        let base = Url::parse(config.url.trim_end_matches('/'))
            .map_err(|e| RegistryError::Config(format!("url {:?}: {e}", config.url)))?;
        if base.scheme() != "http" && base.scheme() != "https" {
            return Err(RegistryError::Config(format!("url {:?} must be http or https", config.url)));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout.unwrap_or(Duration::from_secs(30)))
            .connect_timeout(Duration::from_secs(5))
            // A stalled answer fails after this, however long the whole exchange may take.
            .read_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(config.max_concurrency.max(1))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if config.insecure_skip_tls_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let Some(pem) = &config.ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| RegistryError::Config(format!("caBundle is not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(RegistryError::Config("caBundle holds no certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| RegistryError::Config(format!("building the HTTP client: {e}")))?;
        Ok(Distribution {
            base,
            http,
            username: config.username,
            password: config.password,
            permits: Semaphore::new(if config.max_concurrency == 0 { 8 } else { config.max_concurrency }),
            attempts: if config.attempts == 0 { 4 } else { config.attempts },
            tokens: Mutex::new(HashMap::new()),
            mint: config.mint,
            latency: config.latency,
        })
    }

    /// Our own API paths (`/v2/...`) go under the base URL (which may carry a path prefix);
    /// `Link` targets are resolved against it as a browser would (absolute path or full URL).
    /// The URL of `path` on this registry. A path from the registry (a `Link` to the next page)
    /// that points to another origin is refused: berth's credentials go to this registry only.
    fn url(&self, path: &str) -> Result<Url, RegistryError> {
        let resolved = if path.starts_with("/v2/") && !path.contains("://") {
            Url::parse(&format!("{}{path}", self.base.as_str().trim_end_matches('/')))
        } else {
            self.base.join(path)
        };
        let url = resolved.map_err(|e| RegistryError::Protocol(format!("bad URL {path:?}: {e}")))?;
        if url.origin() != self.base.origin() {
            return Err(RegistryError::Protocol(format!("the registry pointed to another host: {path:?}")));
        }
        Ok(url)
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(scope).filter(|(_, exp)| *exp > Instant::now()).map(|(t, _)| t.clone())
    }

    /// Sends one request with auth, bounded concurrency and retries. `scope` is the token
    /// scope the request needs if the registry asks for a bearer token.
    async fn send(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        headers: &[(header::HeaderName, String)],
        body: Option<&[u8]>,
    ) -> Result<reqwest::Response, RegistryError> {
        self.send_within(method, path, scope, headers, body, None).await
    }

    /// [`Self::send`] with a time limit other than the client's for the whole exchange (a large
    /// blob takes longer than a manifest).
    async fn send_within(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        headers: &[(header::HeaderName, String)],
        body: Option<&[u8]>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = self.url(path)?;
        let _permit = self.permits.acquire().await.map_err(|_| RegistryError::Protocol("client closed".into()))?;
        let mut attempt = 0;
        let mut refreshed_token = false;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), url.clone());
            for (name, value) in headers {
                req = req.header(name, value);
            }
            if let Some(token) = self.cached_token(scope) {
                req = req.bearer_auth(token);
            } else if let Some(user) = &self.username {
                req = req.basic_auth(user, self.password.as_deref());
            }
            if let Some(body) = body {
                req = req.body(body.to_vec());
            }
            if let Some(timeout) = timeout {
                req = req.timeout(timeout);
            }
            super::note_request();
            let sent = Instant::now();
            let result = req.send().await;
            if let Some(h) = &self.latency {
                h.get_or_create(&RequestLabels { method: method_label(&method) }).observe(sent.elapsed().as_secs_f64());
            }
            let resp = match result {
                Ok(resp) => resp,
                Err(e) => {
                    let err = classify(&e);
                    if attempt < self.attempts && matches!(err, RegistryError::Unreachable(_)) {
                        tokio::time::sleep(backoff(attempt, None)).await;
                        continue;
                    }
                    return Err(err);
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !refreshed_token {
                let challenge = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_bearer_challenge);
                if let Some(challenge) = challenge {
                    refreshed_token = true;
                    let token_scope = challenge.scope.clone().unwrap_or_else(|| scope.to_string());
                    let (token, ttl) = match &self.mint {
                        Some(mint) => mint(&token_scope).map_err(RegistryError::Unauthorized)?,
                        None => self.fetch_token(&challenge.realm, challenge.service.as_deref(), &token_scope).await?,
                    };
                    let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
                    tokens.insert(scope.to_string(), (token, Instant::now() + ttl));
                    attempt -= 1;
                    continue;
                }
            }
            if status == StatusCode::UNAUTHORIZED {
                return Err(RegistryError::Unauthorized(format!("{method} {} answered 401", url.path())));
            }
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if retryable && attempt < self.attempts {
                let retry_after = resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                tokio::time::sleep(backoff(attempt, retry_after)).await;
                continue;
            }
            return Ok(resp);
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), RegistryError> {
        let mut url = Url::parse(realm).map_err(|e| RegistryError::Protocol(format!("token realm {realm:?}: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if !scope.is_empty() {
                q.append_pair("scope", scope);
            }
        }
        let mut req = self.http.get(url);
        if let Some(user) = &self.username {
            req = req.basic_auth(user, self.password.as_deref());
        }
        super::note_request();
        let resp = req.send().await.map_err(|e| classify(&e))?;
        if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized("the token service refused berth's credentials".into()));
        }
        if !resp.status().is_success() {
            return Err(RegistryError::Status { status: resp.status().as_u16(), message: "token service".into() });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body: TokenResponse =
            resp.json().await.map_err(|e| RegistryError::Protocol(format!("token response: {e}")))?;
        let token = body
            .token
            .or(body.access_token)
            .ok_or_else(|| RegistryError::Protocol("token response without a token".into()))?;
        // Refresh a little early; the spec's default lifetime is 60 s.
        let ttl = Duration::from_secs(body.expires_in.unwrap_or(60).saturating_sub(10).max(5));
        Ok((token, ttl))
    }

    async fn get_json_paginated(&self, first: String, scope: &str, field: &str) -> Result<Vec<String>, RegistryError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(path) = next.take() {
            pages += 1;
            if pages > 100_000 {
                return Err(RegistryError::Protocol("pagination does not end".into()));
            }
            let resp = self.send(Method::GET, &path, scope, &[], None).await?;
            if resp.status() == StatusCode::NOT_FOUND && field == "tags" {
                return Ok(Vec::new()); // NAME_UNKNOWN: a repository with no image yet
            }
            let resp = check_status(resp).await?;
            next = resp.headers().get(header::LINK).and_then(|v| v.to_str().ok()).and_then(next_link);
            let v: serde_json::Value =
                resp.json().await.map_err(|e| RegistryError::Protocol(format!("listing {path}: {e}")))?;
            // 2.8 answers `"tags": null` for a repository whose tags are all gone.
            if let Some(items) = v.get(field).and_then(|x| x.as_array()) {
                out.extend(items.iter().filter_map(|t| t.as_str().map(String::from)));
            }
            if out.len() > MAX_LISTED {
                return Err(RegistryError::Protocol(format!("listing {path}: more than {MAX_LISTED} entries")));
            }
        }
        Ok(out)
    }
}

fn repo_scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(d) = retry_after {
        return d.min(Duration::from_secs(10));
    }
    let base = Duration::from_millis(100 * 2u64.pow(attempt.min(6)));
    // Up to 50% jitter so that retries from many reconciles do not align.
    let jitter = rand::random::<u64>() % (base.as_millis() as u64 / 2 + 1);
    base + Duration::from_millis(jitter)
}

fn classify(e: &reqwest::Error) -> RegistryError {
    let mut chain = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        chain.push_str(&s.to_string());
        chain.push_str(": ");
        source = s.source();
    }
    let lower = chain.to_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        RegistryError::Tls(chain.trim_end_matches(": ").to_string())
    } else {
        RegistryError::Unreachable(chain.trim_end_matches(": ").to_string())
    }
}

async fn check_status(resp: reqwest::Response) -> Result<reqwest::Response, RegistryError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let url = resp.url().path().to_string();
    let mut message = resp.text().await.unwrap_or_default();
    message.truncate(MAX_ERROR_BODY);
    Err(match status {
        StatusCode::FORBIDDEN => RegistryError::Denied(url),
        StatusCode::NOT_FOUND => RegistryError::NotFound(url),
        StatusCode::METHOD_NOT_ALLOWED => RegistryError::DeleteDisabled,
        _ => RegistryError::Status { status: status.as_u16(), message: message.trim().to_string() },
    })
}

fn accept_manifests() -> (header::HeaderName, String) {
    (header::ACCEPT, MANIFEST_MEDIA_TYPES.join(", "))
}

fn descriptor_from(headers: &header::HeaderMap, body: Option<&[u8]>) -> Result<Descriptor, RegistryError> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .unwrap_or_default();
    let digest = match headers.get("docker-content-digest").and_then(|v| v.to_str().ok()) {
        Some(d) => d.to_string(),
        None => match body {
            Some(b) => sha256_digest(b),
            None => {
                return Err(RegistryError::Protocol("HEAD without Docker-Content-Digest".into()));
            }
        },
    };
    let size = match body {
        Some(b) => b.len() as u64,
        None => {
            headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
        }
    };
    Ok(Descriptor { digest, media_type, size })
}

#[async_trait]
impl Backend for Distribution {
    async fn check(&self) -> Result<(), RegistryError> {
        let resp = self.send(Method::GET, "/v2/", "", &[], None).await?;
        check_status(resp).await.map(|_| ())
    }

    async fn catalog(&self) -> Result<Vec<String>, RegistryError> {
        self.get_json_paginated(format!("/v2/_catalog?n={CATALOG_PAGE}"), "registry:catalog:*", "repositories").await
    }

    async fn tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        self.get_json_paginated(
            format!("/v2/{repository}/tags/list?n={TAGS_PAGE}"),
            &repo_scope(repository, "pull"),
            "tags",
        )
        .await
    }

    async fn resolve(&self, repository: &str, reference: &str) -> Result<Option<Descriptor>, RegistryError> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let resp = self.send(Method::HEAD, &path, &repo_scope(repository, "pull"), &[accept_manifests()], None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = check_status(resp).await?;
        match descriptor_from(resp.headers(), None) {
            Ok(d) => Ok(Some(d)),
            // Some registries omit the digest on HEAD: read the manifest instead.
            Err(_) => Ok(Some(self.manifest(repository, reference).await?.descriptor)),
        }
    }

    async fn manifest(&self, repository: &str, reference: &str) -> Result<Manifest, RegistryError> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let resp = self.send(Method::GET, &path, &repo_scope(repository, "pull"), &[accept_manifests()], None).await?;
        let resp = check_status(resp).await?;
        let headers = resp.headers().clone();
        let body = read_capped(resp, MAX_MANIFEST_BYTES, "manifest").await?;
        let mut descriptor = descriptor_from(&headers, Some(&body))?;
        let computed = sha256_digest(&body);
        if reference.starts_with("sha256:") && computed != reference {
            return Err(RegistryError::Protocol(format!("manifest {reference} has digest {computed}")));
        }
        descriptor.digest = computed;
        Ok(Manifest { descriptor, body })
    }

    async fn blob(&self, repository: &str, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let path = format!("/v2/{repository}/blobs/{digest}");
        let resp = self.send(Method::GET, &path, &repo_scope(repository, "pull"), &[], None).await?;
        let resp = check_status(resp).await?;
        let body = read_capped(resp, MAX_BLOB_BYTES, "blob").await?;
        if digest.starts_with("sha256:") && sha256_digest(&body) != digest {
            return Err(RegistryError::Protocol(format!("blob {digest} does not match its digest")));
        }
        Ok(body)
    }

    async fn blob_to_file(
        &self,
        repository: &str,
        digest: &str,
        dest: &std::path::Path,
        max_bytes: u64,
    ) -> Result<u64, RegistryError> {
        let path = format!("/v2/{repository}/blobs/{digest}");
        let resp = self
            .send_within(Method::GET, &path, &repo_scope(repository, "pull"), &[], None, Some(BLOB_STREAM_TIMEOUT))
            .await?;
        let resp = check_status(resp).await?;
        super::blob_into_file(resp, digest, dest, max_bytes, |e| classify(&e)).await
    }

    async fn put_blob(&self, repository: &str, body: &[u8]) -> Result<String, RegistryError> {
        let digest = sha256_digest(body);
        let scope = repo_scope(repository, "pull,push");
        let head = self.send(Method::HEAD, &format!("/v2/{repository}/blobs/{digest}"), &scope, &[], None).await?;
        if head.status().is_success() {
            return Ok(digest);
        }
        let start = self.send(Method::POST, &format!("/v2/{repository}/blobs/uploads/"), &scope, &[], None).await?;
        let start = check_status(start).await?;
        let location = start
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Protocol("blob upload answered without a Location".into()))?
            .to_string();
        // The Location may carry a query (Distribution's `_state`); `url` keeps it on this registry.
        let separator = if location.contains('?') { '&' } else { '?' };
        let target = format!("{location}{separator}digest={digest}");
        let headers = [(header::CONTENT_TYPE, "application/octet-stream".to_string())];
        let put = self.send(Method::PUT, &target, &scope, &headers, Some(body)).await?;
        check_status(put).await?;
        Ok(digest)
    }

    async fn referrers(&self, repository: &str, digest: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let path = format!("/v2/{repository}/referrers/{digest}");
        let resp = self.send(Method::GET, &path, &repo_scope(repository, "pull"), &[], None).await?;
        // The OCI spec: a registry without the API answers 404 here; clients fall back to the
        // tag scheme. A registry with it answers an image index, also for a manifest without
        // referrers.
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = check_status(resp).await?;
        let is_index = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/vnd.oci.image.index.v1+json"));
        let body = read_capped(resp, MAX_MANIFEST_BYTES, "referrers").await?;
        Ok(is_index.then_some(body))
    }

    async fn delete_manifest(&self, repository: &str, digest: &str) -> Result<Deleted, RegistryError> {
        let path = format!("/v2/{repository}/manifests/{digest}");
        let resp = self.send(Method::DELETE, &path, &repo_scope(repository, "delete"), &[], None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(Deleted::NotFound);
        }
        check_status(resp).await.map(|_| Deleted::Deleted)
    }

    async fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String, RegistryError> {
        let path = format!("/v2/{repository}/manifests/{tag}");
        let headers = [(header::CONTENT_TYPE, media_type.to_string())];
        let resp = self.send(Method::PUT, &path, &repo_scope(repository, "pull,push"), &headers, Some(body)).await?;
        let resp = check_status(resp).await?;
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .unwrap_or_else(|| sha256_digest(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_on_the_registry_and_links_to_other_hosts_are_refused() {
        let config = DistributionConfig { url: "https://registry.example:5000/prefix".into(), ..Default::default() };
        let d = Distribution::new(config).unwrap();
        assert_eq!(d.url("/v2/a/tags/list").unwrap().as_str(), "https://registry.example:5000/prefix/v2/a/tags/list");
        assert_eq!(
            d.url("/v2/a/tags/list?last=x&n=1000").unwrap().as_str(),
            "https://registry.example:5000/prefix/v2/a/tags/list?last=x&n=1000"
        );
        assert!(d.url("https://registry.example:5000/v2/a/tags/list?last=x").is_ok());
        for elsewhere in [
            "https://attacker.example/v2/a/tags/list?last=x",
            "http://registry.example:5000/v2/a/tags/list",
            "https://registry.example:5001/v2/",
            "//attacker.example/v2/",
        ] {
            let err = d.url(elsewhere).unwrap_err().to_string();
            assert!(err.contains("another host"), "{elsewhere}: {err}");
        }
    }
}
