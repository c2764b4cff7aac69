//! The registry backend: what berth's controllers need from a container registry, behind a
//! trait so that a backend (Distribution now, ECR later) is a new file, not a rewrite.

mod distribution;
pub mod ecr;

pub use distribution::{Distribution, DistributionConfig, Mint};
pub use ecr::{Ecr, EcrConfig};

use async_trait::async_trait;

/// Media types of the manifests berth accepts (HEAD and GET send them all in `Accept`).
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Whether a media type is an image index (OCI) or manifest list (Docker).
pub fn is_index(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// A manifest as the registry describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// A manifest's bytes and what the registry said about them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub descriptor: Descriptor,
    pub body: Vec<u8>,
}

/// What a delete found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// Already gone: deletion is idempotent.
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach the registry: {0}")]
    Unreachable(String),
    #[error("TLS error talking to the registry: {0}")]
    Tls(String),
    #[error("the registry refused berth's credentials ({0})")]
    Unauthorized(String),
    #[error("the registry denied the request ({0})")]
    Denied(String),
    #[error("not found in the registry: {0}")]
    NotFound(String),
    #[error("the registry does not allow deletes (set storage.delete.enabled: true)")]
    DeleteDisabled,
    #[error("the registry answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("unexpected answer from the registry: {0}")]
    Protocol(String),
    #[error("invalid registry configuration: {0}")]
    Config(String),
}

impl RegistryError {
    /// The condition reason (and metric label) for this error: a static, CamelCase word.
    pub fn reason(&self) -> &'static str {
        match self {
            RegistryError::Unreachable(_) => "RegistryUnreachable",
            RegistryError::Tls(_) => "TLSError",
            RegistryError::Unauthorized(_) => "Unauthorized",
            RegistryError::Denied(_) => "Denied",
            RegistryError::NotFound(_) => "NotFound",
            RegistryError::DeleteDisabled => "DeleteDisabled",
            RegistryError::Status { .. } => "RegistryError",
            RegistryError::Protocol(_) => "RegistryProtocolError",
            RegistryError::Config(_) => "InvalidRegistryConfig",
        }
    }
}

/// What the controllers need from a registry.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Checks that the API answers and accepts berth's credentials (`GET /v2/`).
    async fn check(&self) -> Result<(), RegistryError>;
    /// Every repository in the registry, following pagination.
    async fn catalog(&self) -> Result<Vec<String>, RegistryError>;
    /// Every tag of a repository, following pagination; empty for an unknown repository.
    async fn tags(&self, repository: &str) -> Result<Vec<String>, RegistryError>;
    /// Resolves a tag or digest to its manifest descriptor with `HEAD`; `None` when absent.
    async fn resolve(&self, repository: &str, reference: &str) -> Result<Option<Descriptor>, RegistryError>;
    /// Reads a manifest by tag or digest.
    async fn manifest(&self, repository: &str, reference: &str) -> Result<Manifest, RegistryError>;
    /// Reads a blob (an image config, say) by digest.
    async fn blob(&self, repository: &str, digest: &str) -> Result<Vec<u8>, RegistryError>;
    /// Deletes a manifest by digest (every tag pointing at it goes too).
    async fn delete_manifest(&self, repository: &str, digest: &str) -> Result<Deleted, RegistryError>;
    /// Streams a blob into the file `dest` (created or truncated), refusing one over
    /// `max_bytes`, and checks it against its digest; returns its size. For layers and data
    /// archives, which are too big to hold in memory.
    async fn blob_to_file(
        &self,
        repository: &str,
        digest: &str,
        dest: &std::path::Path,
        max_bytes: u64,
    ) -> Result<u64, RegistryError>;
    /// Uploads a blob unless the repository has it already; returns its digest.
    async fn put_blob(&self, repository: &str, body: &[u8]) -> Result<String, RegistryError>;
    /// The referrers of a manifest from the OCI referrers API, as the image index it answers;
    /// `None` when the registry does not serve that API (clients then use the tag scheme).
    async fn referrers(&self, repository: &str, digest: &str) -> Result<Option<Vec<u8>>, RegistryError>;
    /// Puts a manifest under a tag (or its digest); returns the digest the registry stored.
    async fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String, RegistryError>;

    /// Where a followed tag points, for polling: a registry whose listing gives digests (ECR)
    /// answers every tag of a repository polled within a short while from one listing.
    async fn poll_tag(&self, repository: &str, tag: &str) -> Result<Option<Descriptor>, RegistryError> {
        self.resolve(repository, tag).await
    }

    /// Every tag of a repository, for polling (see [`Backend::poll_tag`]).
    async fn poll_tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        self.tags(repository).await
    }

    /// Every image with its tags and push time, when the registry records push times (ECR);
    /// `None` when it does not (Distribution: berth keeps its own ledger).
    async fn listing(&self, _repository: &str) -> Result<Option<Vec<ecr::ImageInfo>>, RegistryError> {
        Ok(None)
    }

    /// The ECR-only operations (repositories with settings, policies, tokens, ECR's scans).
    fn ecr(&self) -> Option<&Ecr> {
        None
    }
}

tokio::task_local! {
    static REQUESTS: std::cell::Cell<u64>;
}

/// Runs `work` and counts the registry requests it sends (retries and token requests included),
/// exactly, even while other tasks use the same backend.
pub async fn count_requests<F: std::future::Future>(work: F) -> (F::Output, u64) {
    REQUESTS
        .scope(std::cell::Cell::new(0), async move {
            let out = work.await;
            (out, REQUESTS.with(|c| c.get()))
        })
        .await
}

/// Called by backends for every HTTP request they send.
pub(crate) fn note_request() {
    let _ = REQUESTS.try_with(|c| c.set(c.get() + 1));
}

/// Why a response body could not be streamed into a file.
#[derive(Debug)]
pub enum StreamError {
    /// More than the cap, by Content-Length or as it arrived.
    TooLarge,
    Read(reqwest::Error),
    Write(std::io::Error),
}

/// Streams a response body into `dest` (created or truncated), refusing more than `max` bytes
/// (by Content-Length, and as it arrives); returns its `sha256:<hex>` and size. For bodies too
/// big to hold in memory: layers, vulnerability data archives.
pub async fn stream_to_file(
    mut response: reqwest::Response,
    dest: &std::path::Path,
    max: u64,
) -> Result<(String, u64), StreamError> {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncWriteExt;
    if response.content_length().is_some_and(|n| n > max) {
        return Err(StreamError::TooLarge);
    }
    let file = tokio::fs::File::create(dest).await.map_err(StreamError::Write)?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(StreamError::Read)? {
        written += chunk.len() as u64;
        if written > max {
            return Err(StreamError::TooLarge);
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(StreamError::Write)?;
    }
    out.flush().await.map_err(StreamError::Write)?;
    Ok((format!("sha256:{:x}", hasher.finalize()), written))
}

/// Streams a blob's response into `dest` with [`stream_to_file`] and checks it against its
/// `digest`; returns its size. `read_error` says what a failed read means for this backend.
pub async fn blob_into_file(
    response: reqwest::Response,
    digest: &str,
    dest: &std::path::Path,
    max_bytes: u64,
    read_error: impl FnOnce(reqwest::Error) -> RegistryError,
) -> Result<u64, RegistryError> {
    let (computed, written) = stream_to_file(response, dest, max_bytes).await.map_err(|e| match e {
        StreamError::TooLarge => RegistryError::Protocol(format!("blob {digest} is larger than {max_bytes} bytes")),
        StreamError::Read(e) => read_error(e),
        StreamError::Write(e) => RegistryError::Protocol(format!("writing {}: {e}", dest.display())),
    })?;
    if digest.starts_with("sha256:") && computed != digest {
        return Err(RegistryError::Protocol(format!("blob {digest} does not match its digest ({computed})")));
    }
    Ok(written)
}

/// Whether `digest` is `sha256:` and 64 lower-case hex digits, the only digests berth puts in
/// a URL.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses the `Link: <...>; rel="next"` header of a paginated listing into the next URL path.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        let target = target.trim();
        (is_next && target.starts_with('<') && target.ends_with('>')).then(|| target[1..target.len() - 1].to_string())
    })
}

/// A Bearer challenge from `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

/// Parses `Bearer realm="...",service="...",scope="..."`. `None` for other schemes or no realm.
pub fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let rest = header.trim().strip_prefix("Bearer ").or_else(|| header.trim().strip_prefix("bearer "))?;
    let mut challenge = BearerChallenge::default();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            v.push(n)
                        }
                    }
                    '"' => break,
                    c => v.push(c),
                }
            }
            v
        } else {
            chars.by_ref().take_while(|c| *c != ',').collect()
        };
        match key.trim() {
            "realm" => challenge.realm = value,
            "service" => challenge.service = Some(value),
            "scope" => challenge.scope = Some(value),
            _ => {}
        }
    }
    (!challenge.realm.is_empty()).then_some(challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_reads_relative_and_absolute_links() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=100>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=100")
        );
        assert_eq!(
            next_link(r#"<https://r.example/v2/x/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("https://r.example/v2/x/tags/list?n=2&last=b")
        );
        assert_eq!(next_link(r#"</v2/_catalog?last=b>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn bearer_challenges_parse() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/app:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.example/token");
        assert_eq!(c.service.as_deref(), Some("registry.example"));
        assert_eq!(c.scope.as_deref(), Some("repository:team/app:pull,push"));
        assert_eq!(
            parse_bearer_challenge(r#"Bearer realm="r""#),
            Some(BearerChallenge { realm: "r".into(), ..Default::default() })
        );
        assert_eq!(parse_bearer_challenge(r#"Basic realm="r""#), None);
        assert_eq!(parse_bearer_challenge("Bearer service=\"x\""), None, "no realm");
        assert_eq!(parse_bearer_challenge("Bearer "), None);
    }

    #[test]
    fn only_sha256_digests_go_in_urls() {
        assert!(is_sha256_digest(&format!("sha256:{}", "0a".repeat(32))));
        for bad in ["latest", "sha256:../../x", "sha512:00", &format!("sha256:{}", "A".repeat(64)), "sha256:"] {
            assert!(!is_sha256_digest(bad), "{bad}");
        }
    }

    #[test]
    fn digests_and_index_media_types() {
        assert_eq!(sha256_digest(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert!(is_index("application/vnd.oci.image.index.v1+json"));
        assert!(is_index("application/vnd.docker.distribution.manifest.list.v2+json"));
        assert!(!is_index("application/vnd.oci.image.manifest.v1+json"));
    }
}
