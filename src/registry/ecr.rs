//! AWS ECR as a backend, through the official AWS SDK for Rust. The image operations of
//! [`Backend`] map onto the ECR API (DescribeImages, BatchGetImage, PutImage, BatchDeleteImage,
//! the layer upload API); what only ECR has (repositories with settings, lifecycle and
//! repository policies, authorization tokens, its own scans) are methods of [`Ecr`], which the
//! controllers reach through [`Backend::ecr`].
//!
//! ECR records push times itself (`imagePushedAt`), so berth keeps no ledger for it, and one
//! DescribeImages call lists up to 1,000 images with their tags, digests and push times.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use aws_sdk_ecr::{
    Client,
    config::{BehaviorVersion, Credentials, Region},
    error::{ProvideErrorMetadata, SdkError},
    primitives::Blob,
    types::{
        EncryptionConfiguration, EncryptionType, ImageFailureCode, ImageIdentifier, ImageScanningConfiguration,
        ImageTagMutability, ImageTagMutabilityExclusionFilter, ImageTagMutabilityExclusionFilterType, Tag,
    },
};

use super::{Backend, Deleted, Descriptor, MANIFEST_MEDIA_TYPES, Manifest, RegistryError, is_sha256_digest};

/// Static AWS keys from a Secret (otherwise the SDK's default chain: environment, web identity
/// (IRSA), EKS Pod Identity, instance profile).
#[derive(Clone)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// How berth reaches one ECR registry.
#[derive(Clone, Default)]
pub struct EcrConfig {
    pub region: String,
    /// The account whose registry this is; `None` is the caller's own.
    pub registry_id: Option<String>,
    /// The ECR API endpoint, when not AWS's own (a VPC endpoint, or moto in the tests).
    pub endpoint: Option<String>,
    pub keys: Option<StaticKeys>,
    /// PEM CA certificates for the endpoint (validated before use: the SDK panics on bad PEM).
    pub ca_bundle: Option<String>,
    /// How long a listing made for polling may answer later polls of the same repository.
    pub poll_listing_ttl: Duration,
    /// ECR calls in flight at once.
    pub max_concurrency: usize,
}

impl std::fmt::Debug for EcrConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrConfig")
            .field("region", &self.region)
            .field("registry_id", &self.registry_id)
            .field("endpoint", &self.endpoint)
            .field("keys", &self.keys.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One image as DescribeImages lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub digest: String,
    pub media_type: String,
    pub tags: Vec<String>,
    /// `imagePushedAt`, unix milliseconds.
    pub pushed_at_ms: i64,
}

/// Every tag of a listing and the manifest it points at. Pure.
pub fn tag_map(images: &[ImageInfo]) -> BTreeMap<String, Descriptor> {
    images
        .iter()
        .flat_map(|i| {
            i.tags.iter().map(|t| {
                (t.clone(), Descriptor { digest: i.digest.clone(), media_type: i.media_type.clone(), size: 0 })
            })
        })
        .collect()
}

/// An ECR repository as DescribeRepositories shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepositoryInfo {
    pub arn: String,
    pub uri: String,
    pub registry_id: String,
    /// unix seconds
    pub created_at: Option<i64>,
    /// `MUTABLE`, `IMMUTABLE`, `IMMUTABLE_WITH_EXCLUSION`, ...
    pub tag_mutability: String,
    pub exclusion_filters: Vec<String>,
    pub scan_on_push: bool,
    /// `AES256`, `KMS`, `KMS_DSSE`
    pub encryption_type: String,
    pub kms_key: Option<String>,
}

/// What a new repository is created with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewRepository {
    pub tag_mutability: String,
    pub exclusion_filters: Vec<String>,
    pub scan_on_push: bool,
    pub encryption_type: Option<String>,
    pub kms_key: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// A registry authorization token: Basic credentials for the registry's `/v2` API.
#[derive(Clone)]
pub struct AuthorizationToken {
    pub username: String,
    pub password: String,
    /// unix seconds, as ECR says (moto always says 2015).
    pub expires_at: Option<i64>,
    /// `https://<account>.dkr.ecr.<region>.amazonaws.com`
    pub proxy_endpoint: String,
}

/// An ECR scan's result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanFindings {
    /// `IN_PROGRESS`, `COMPLETE`, `FAILED`, `UNSUPPORTED_IMAGE`, ... (`None`: no scan yet).
    pub status: Option<String>,
    pub description: Option<String>,
    pub completed_at: Option<i64>,
    pub severity_counts: BTreeMap<String, i64>,
    /// (id, severity, package name, installed version)
    pub findings: Vec<(String, String, Option<String>, Option<String>)>,
}

type Listing = (Instant, Arc<Vec<ImageInfo>>);

pub struct Ecr {
    client: Client,
    /// The configuration the client was built from (endpoint, region, HTTP client, credentials),
    /// for the STS client and the pull-only ECR clients derived from it.
    shared: aws_config::SdkConfig,
    registry_id: Option<String>,
    region: String,
    http: reqwest::Client,
    poll_ttl: Duration,
    /// Listings made for polling, per repository, with one listing in flight per repository.
    polled: Mutex<HashMap<String, Listing>>,
    listing: tokio::sync::Mutex<()>,
    /// Calls in flight at once (`--registry-concurrency`), as for Distribution: a thousand
    /// Repositories reconciled together would otherwise open a connection each, and meet ECR's
    /// request rate limits.
    slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Ecr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ecr").field("region", &self.region).field("registry_id", &self.registry_id).finish()
    }
}

/// Counts every attempt (retries included) as a registry request, like Distribution's.
#[derive(Debug)]
struct CountAttempts;

impl aws_sdk_ecr::config::Intercept for CountAttempts {
    fn name(&self) -> &'static str {
        "berth-count-attempts"
    }

    fn read_before_attempt(
        &self,
        _: &aws_sdk_ecr::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_ecr::config::RuntimeComponents,
        _: &mut aws_sdk_ecr::config::ConfigBag,
    ) -> Result<(), aws_sdk_ecr::error::BoxError> {
        super::note_request();
        Ok(())
    }
}

/// Whether a region name looks like one (`us-east-1`, `eu-central-2`, `us-gov-west-1`).
pub fn valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// The account and region of an ECR registry host: `<account>.dkr.ecr.<region>.amazonaws.com`
/// (or `.amazonaws.com.cn`). Pure.
pub fn parse_registry_host(host: &str) -> Option<(String, String)> {
    let host = host.split(':').next()?;
    let mut parts = host.split('.');
    let account = parts.next()?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if parts.next()? != "dkr" {
        return None;
    }
    let ecr = parts.next()?;
    if ecr != "ecr" && ecr != "ecr-fips" {
        return None;
    }
    let region = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    (valid_region(region) && (rest == ["amazonaws", "com"] || rest == ["amazonaws", "com", "cn"]))
        .then(|| (account.to_string(), region.to_string()))
}

/// Maps an SDK error onto berth's registry errors, keeping AWS's error code in the message.
fn map_err<E>(what: &str, e: SdkError<E, aws_sdk_ecr::config::http::HttpResponse>) -> RegistryError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().map(str::to_string);
    let message = e.message().map(str::to_string);
    match &e {
        SdkError::DispatchFailure(d) => {
            let text = format!("{what}: {}", aws_sdk_ecr::error::DisplayErrorContext(&e));
            if d.as_connector_error().is_some_and(|c| format!("{c:?}").to_ascii_lowercase().contains("certificate")) {
                RegistryError::Tls(text)
            } else {
                RegistryError::Unreachable(text)
            }
        }
        SdkError::TimeoutError(_) => RegistryError::Unreachable(format!("{what}: timed out")),
        SdkError::ConstructionFailure(_) => {
            RegistryError::Config(format!("{what}: {}", aws_sdk_ecr::error::DisplayErrorContext(&e)))
        }
        SdkError::ResponseError(_) => {
            RegistryError::Protocol(format!("{what}: {}", aws_sdk_ecr::error::DisplayErrorContext(&e)))
        }
        _ => classify(what, code.as_deref(), message.as_deref(), status),
    }
}

/// The answer, or `None` when ECR says the repository or image is not there.
fn found<T, E>(
    what: &str,
    r: Result<T, SdkError<E, aws_sdk_ecr::config::http::HttpResponse>>,
) -> Result<Option<T>, RegistryError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match r.map_err(|e| map_err(what, e)) {
        Ok(out) => Ok(Some(out)),
        Err(RegistryError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An AWS error code (and HTTP status when the body had no code) as a berth error. Pure.
pub fn classify(what: &str, code: Option<&str>, message: Option<&str>, status: Option<u16>) -> RegistryError {
    let text = match (code, message) {
        (Some(c), Some(m)) => format!("{what}: {c}: {m}"),
        (Some(c), None) => format!("{what}: {c}"),
        (None, Some(m)) => format!("{what}: {m}"),
        (None, None) => format!("{what}: HTTP {}", status.map(|s| s.to_string()).unwrap_or_else(|| "error".into())),
    };
    match code {
        Some(
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "InvalidClientTokenId"
            | "MissingAuthenticationTokenException"
            | "IncompleteSignature",
        ) => RegistryError::Unauthorized(text),
        Some("AccessDeniedException") => RegistryError::Denied(text),
        Some("RepositoryNotFoundException" | "ImageNotFoundException" | "LayersNotFoundException") => {
            RegistryError::NotFound(text)
        }
        Some("ThrottlingException" | "ServerException" | "ServiceUnavailableException") => {
            RegistryError::Status { status: status.unwrap_or(500), message: text }
        }
        Some(
            "InvalidParameterException"
            | "KmsException"
            | "InvalidTagParameterException"
            | "TooManyTagsException"
            | "LimitExceededException",
        ) => RegistryError::Config(text),
        // moto (and proxies) answer auth failures with an XML body the JSON protocol has no code for.
        None if matches!(status, Some(401 | 403)) => RegistryError::Unauthorized(text),
        _ => match status {
            Some(s) if s >= 500 => RegistryError::Status { status: s, message: text },
            Some(s) => RegistryError::Status { status: s, message: text },
            None => RegistryError::Protocol(text),
        },
    }
}

fn millis(t: Option<&aws_sdk_ecr::primitives::DateTime>) -> Option<i64> {
    t.and_then(|t| t.to_millis().ok())
}

fn by_reference(reference: &str) -> ImageIdentifier {
    if reference.starts_with("sha256:") {
        ImageIdentifier::builder().image_digest(reference).build()
    } else {
        ImageIdentifier::builder().image_tag(reference).build()
    }
}

fn build_err(e: aws_sdk_ecr::error::BuildError) -> RegistryError {
    RegistryError::Config(e.to_string())
}

impl Ecr {
    pub async fn new(config: EcrConfig) -> Result<Ecr, RegistryError> {
        use aws_smithy_http_client::{
            Builder,
            tls::{self, rustls_provider::CryptoMode},
        };
        if !valid_region(&config.region) {
            return Err(RegistryError::Config(format!("{:?} is not an AWS region", config.region)));
        }
        let mut trust = tls::TrustStore::default();
        if let Some(pem) = &config.ca_bundle {
            // The SDK's TLS setup panics on PEM it cannot read: check it here first.
            let certs: Vec<_> = rustls_pemfile_certs(pem)?;
            if certs.is_empty() {
                return Err(RegistryError::Config("caBundle holds no PEM certificate".into()));
            }
            trust = trust.with_pem_certificate(pem.as_bytes().to_vec());
        }
        let context = tls::TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| RegistryError::Config(format!("TLS settings: {e}")))?;
        let http =
            Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).tls_context(context).build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::v2026_01_12())
            .http_client(http)
            .region(Region::new(config.region.clone()))
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(4));
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(keys) = &config.keys {
            loader = loader.credentials_provider(Credentials::new(
                keys.access_key_id.clone(),
                keys.secret_access_key.clone(),
                keys.session_token.clone(),
                None,
                "berth-credentials-secret",
            ));
        }
        let shared = loader.load().await;
        let conf = aws_sdk_ecr::config::Builder::from(&shared).interceptor(CountAttempts).build();
        Ok(Ecr {
            client: Client::from_conf(conf),
            shared,
            registry_id: config.registry_id,
            region: config.region,
            http: reqwest::Client::builder()
                .use_rustls_tls()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| RegistryError::Config(e.to_string()))?,
            poll_ttl: config.poll_listing_ttl,
            polled: Mutex::new(HashMap::new()),
            listing: tokio::sync::Mutex::new(()),
            slots: tokio::sync::Semaphore::new(config.max_concurrency.max(1)),
        })
    }

    /// A place among the calls in flight. Taken by the methods that call ECR themselves, never
    /// by one that calls another of these methods while holding it.
    async fn slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.slots.acquire().await.ok()
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn registry_id(&self) -> Option<&str> {
        self.registry_id.as_deref()
    }

    /// Every image of a repository (every page of 1,000); empty when the repository does not
    /// exist.
    pub async fn images(&self, repository: &str) -> Result<Vec<ImageInfo>, RegistryError> {
        let _slot = self.slot().await;
        let mut pages = self
            .client
            .describe_images()
            .set_registry_id(self.registry_id.clone())
            .repository_name(repository)
            .max_results(1000)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let Some(page) = found("DescribeImages", page)? else { return Ok(Vec::new()) };
            for d in page.image_details() {
                let Some(digest) = d.image_digest() else { continue };
                out.push(ImageInfo {
                    digest: digest.to_string(),
                    media_type: d.image_manifest_media_type().unwrap_or_default().to_string(),
                    tags: d.image_tags().to_vec(),
                    pushed_at_ms: millis(d.image_pushed_at()).unwrap_or(0),
                });
            }
        }
        Ok(out)
    }

    /// A listing for polling: one no older than the poll TTL serves every tag of the repository
    /// asked about meanwhile (one DescribeImages per repository per interval, not one per tag).
    async fn polled_images(&self, repository: &str) -> Result<Arc<Vec<ImageInfo>>, RegistryError> {
        let fresh = |polled: &HashMap<String, Listing>| {
            polled.get(repository).filter(|(at, _)| at.elapsed() < self.poll_ttl).map(|(_, l)| l.clone())
        };
        if let Some(l) = fresh(&self.polled.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(l);
        }
        let _one = self.listing.lock().await;
        if let Some(l) = fresh(&self.polled.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(l);
        }
        let listing = Arc::new(self.images(repository).await?);
        let mut polled = self.polled.lock().unwrap_or_else(|e| e.into_inner());
        polled.retain(|_, (at, _)| at.elapsed() < self.poll_ttl);
        polled.insert(repository.to_string(), (Instant::now(), listing.clone()));
        Ok(listing)
    }

    /// The repository, `None` when it does not exist.
    pub async fn describe_repository(&self, name: &str) -> Result<Option<RepositoryInfo>, RegistryError> {
        let _slot = self.slot().await;
        let out = self
            .client
            .describe_repositories()
            .set_registry_id(self.registry_id.clone())
            .repository_names(name)
            .send()
            .await;
        Ok(found("DescribeRepositories", out)?.and_then(|out| out.repositories().first().map(repository_info)))
    }

    /// Creates the repository; `Ok(None)` when it exists already.
    pub async fn create_repository(
        &self,
        name: &str,
        new: &NewRepository,
    ) -> Result<Option<RepositoryInfo>, RegistryError> {
        let _slot = self.slot().await;
        let mut call = self
            .client
            .create_repository()
            .set_registry_id(self.registry_id.clone())
            .repository_name(name)
            .image_tag_mutability(ImageTagMutability::from(new.tag_mutability.as_str()))
            .set_image_tag_mutability_exclusion_filters(exclusion_filters(&new.exclusion_filters)?)
            .image_scanning_configuration(ImageScanningConfiguration::builder().scan_on_push(new.scan_on_push).build());
        if let Some(t) = &new.encryption_type {
            call = call.encryption_configuration(
                EncryptionConfiguration::builder()
                    .encryption_type(EncryptionType::from(t.as_str()))
                    .set_kms_key(new.kms_key.clone())
                    .build()
                    .map_err(build_err)?,
            );
        }
        for (k, v) in &new.tags {
            call = call.tags(Tag::builder().key(k).value(v).build().map_err(build_err)?);
        }
        match call.send().await {
            Ok(out) => Ok(out.repository().map(repository_info)),
            Err(e) if e.code() == Some("RepositoryAlreadyExistsException") => Ok(None),
            Err(e) => Err(map_err("CreateRepository", e)),
        }
    }

    pub async fn put_tag_mutability(
        &self,
        name: &str,
        mutability: &str,
        filters: &[String],
    ) -> Result<(), RegistryError> {
        let _slot = self.slot().await;
        self.client
            .put_image_tag_mutability()
            .set_registry_id(self.registry_id.clone())
            .repository_name(name)
            .image_tag_mutability(ImageTagMutability::from(mutability))
            .set_image_tag_mutability_exclusion_filters(exclusion_filters(filters)?)
            .send()
            .await
            .map_err(|e| map_err("PutImageTagMutability", e))?;
        Ok(())
    }

    pub async fn put_scan_on_push(&self, name: &str, scan_on_push: bool) -> Result<(), RegistryError> {
        let _slot = self.slot().await;
        self.client
            .put_image_scanning_configuration()
            .set_registry_id(self.registry_id.clone())
            .repository_name(name)
            .image_scanning_configuration(ImageScanningConfiguration::builder().scan_on_push(scan_on_push).build())
            .send()
            .await
            .map_err(|e| map_err("PutImageScanningConfiguration", e))?;
        Ok(())
    }

    pub async fn resource_tags(&self, arn: &str) -> Result<BTreeMap<String, String>, RegistryError> {
        let _slot = self.slot().await;
        let out = self
            .client
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(|e| map_err("ListTagsForResource", e))?;
        Ok(out.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect())
    }

    pub async fn tag_resource(&self, arn: &str, tags: &BTreeMap<String, String>) -> Result<(), RegistryError> {
        let _slot = self.slot().await;
        let tags: Vec<Tag> = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<_, _>>()
            .map_err(build_err)?;
        self.client
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| map_err("TagResource", e))?;
        Ok(())
    }

    pub async fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<(), RegistryError> {
        let _slot = self.slot().await;
        self.client
            .untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(keys.to_vec()))
            .send()
            .await
            .map_err(|e| map_err("UntagResource", e))?;
        Ok(())
    }

    /// Deletes the repository and every image in it; `false` when it did not exist.
    pub async fn delete_repository(&self, name: &str) -> Result<bool, RegistryError> {
        let _slot = self.slot().await;
        let out = self
            .client
            .delete_repository()
            .set_registry_id(self.registry_id.clone())
            .repository_name(name)
            .force(true)
            .send()
            .await;
        Ok(found("DeleteRepository", out)?.is_some())
    }

    /// The repository's lifecycle policy text, `None` when it has none.
    pub async fn lifecycle_policy(&self, name: &str) -> Result<Option<String>, RegistryError> {
        let _slot = self.slot().await;
        match self
            .client
            .get_lifecycle_policy()
            .set_registry_id(self.registry_id.clone())
            .repository_name(name)
            .send()
            .await
        {
            Ok(out) => Ok(out.lifecycle_policy_text().map(str::to_string)),
            Err(e) if e.code() == Some("LifecyclePolicyNotFoundException") => Ok(None),
            Err(e) => Err(map_err("GetLifecyclePolicy", e)),
        }
    }

    pub async fn put_lifecycle_policy(&self, name: &str, text: &str) -> Result<(), RegistryError> {
        let _slot = self.slot().await;
        self.client
            .put_lifecycle_policy()
            .set_registry_id(self.registry_id.clone())
            .repository_name(name)
            .lifecycle_policy_text(text)
            .send()
            .await
            .map_err(|e| map_err("PutLifecyclePolicy", e))?;
        Ok(())
    }

    pub async fn delete_lifecycle_policy(&self, name: &str) -> Result<(), RegistryError> {
        let _slot = self.slot().await;
        match self
            .client
            .delete_lifecycle_policy()
            .set_registry_id(self.registry_id.clone())
            .repository_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("LifecyclePolicyNotFoundException") => Ok(()),
            Err(e) => Err(map_err("DeleteLifecyclePolicy", e)),
        }
    }

    /// The repository policy text, `None` when it has none.
    pub async fn repository_policy(&self, name: &str) -> Result<Option<String>, RegistryError> {
        let _slot = self.slot().await;
        match self
            .client
            .get_repository_policy()
            .set_registry_id(self.registry_id.clone())
            .repository_name(name)
            .send()
            .await
        {
            Ok(out) => Ok(out.policy_text().map(str::to_string)),
            Err(e) if e.code() == Some("RepositoryPolicyNotFoundException") => Ok(None),
            Err(e) => Err(map_err("GetRepositoryPolicy", e)),
        }
    }

    /// Sets the repository policy, or deletes it when `text` is `None`.
    pub async fn set_repository_policy(&self, name: &str, text: Option<&str>) -> Result<(), RegistryError> {
        let _slot = self.slot().await;
        match text {
            Some(text) => {
                self.client
                    .set_repository_policy()
                    .set_registry_id(self.registry_id.clone())
                    .repository_name(name)
                    .policy_text(text)
                    .send()
                    .await
                    .map_err(|e| map_err("SetRepositoryPolicy", e))?;
            }
            None => match self
                .client
                .delete_repository_policy()
                .set_registry_id(self.registry_id.clone())
                .repository_name(name)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some("RepositoryPolicyNotFoundException") => {}
                Err(e) => return Err(map_err("DeleteRepositoryPolicy", e)),
            },
        }
        Ok(())
    }

    /// A token for the registry's `/v2` API, with the permissions of berth's own credentials.
    pub async fn authorization_token(&self) -> Result<AuthorizationToken, RegistryError> {
        let _slot = self.slot().await;
        token_from(&self.client).await
    }

    /// A registry token that can only pull from `repository_arns`: berth assumes `role_arn`
    /// for an hour with a session policy that allows ECR's pull actions on those repositories
    /// alone (and GetAuthorizationToken), and asks for the token as that session; its expiry
    /// is the earlier of ECR's and the session's. A pull secret made from
    /// berth's own credentials would carry everything berth may do, push and delete included.
    pub async fn pull_token(
        &self,
        role_arn: &str,
        repository_arns: &[String],
    ) -> Result<AuthorizationToken, RegistryError> {
        let _slot = self.slot().await;
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&self.shared).interceptor(CountAttempts).build(),
        );
        let session = sts
            .assume_role()
            .role_arn(role_arn)
            .role_session_name("berth-pull-secret")
            .policy(pull_session_policy(repository_arns).to_string())
            // One hour: every role allows it (longer needs the role's MaxSessionDuration raised).
            .duration_seconds(3600)
            .send()
            .await
            .map_err(|e| {
                let code = e.code().map(str::to_string);
                let message = e.message().map(str::to_string);
                let status = e.raw_response().map(|r| r.status().as_u16());
                classify("AssumeRole", code.as_deref(), message.as_deref(), status)
            })?;
        let c = session
            .credentials()
            .ok_or_else(|| RegistryError::Protocol("AssumeRole answered no credentials".into()))?;
        let conf = aws_sdk_ecr::config::Builder::from(&self.shared)
            .credentials_provider(Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_string()),
                None,
                "berth-pull-session",
            ))
            .interceptor(CountAttempts)
            .build();
        let mut token = token_from(&Client::from_conf(conf)).await?;
        // The token cannot outlive the session it was fetched as.
        let session_ends = c.expiration().to_millis().ok().map(|ms| ms / 1000);
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        token.expires_at = match (token.expires_at.filter(|t| *t > now), session_ends) {
            (Some(t), Some(s)) => Some(t.min(s)),
            (t, s) => t.or(s),
        };
        Ok(token)
    }

    /// Starts an ECR scan of an image; `Ok(false)` when ECR refuses another today (its quota is
    /// one scan per image per day).
    pub async fn start_scan(&self, repository: &str, digest: &str) -> Result<bool, RegistryError> {
        let _slot = self.slot().await;
        match self
            .client
            .start_image_scan()
            .set_registry_id(self.registry_id.clone())
            .repository_name(repository)
            .image_id(by_reference(digest))
            .customize()
            .config_override(
                aws_sdk_ecr::config::Config::builder()
                    .retry_config(aws_sdk_ecr::config::retry::RetryConfig::standard().with_max_attempts(1)),
            )
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("LimitExceededException") => Ok(false),
            Err(e) => Err(map_err("StartImageScan", e)),
        }
    }

    /// ECR's scan of an image (every page of findings); `status: None` when it has none.
    pub async fn scan_findings(&self, repository: &str, digest: &str) -> Result<ScanFindings, RegistryError> {
        let _slot = self.slot().await;
        let mut pages = self
            .client
            .describe_image_scan_findings()
            .set_registry_id(self.registry_id.clone())
            .repository_name(repository)
            .image_id(by_reference(digest))
            .max_results(1000)
            .into_paginator()
            .send();
        let mut out = ScanFindings::default();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                Err(e) if e.code() == Some("ScanNotFoundException") => return Ok(ScanFindings::default()),
                Err(e) => return Err(map_err("DescribeImageScanFindings", e)),
            };
            if let Some(s) = page.image_scan_status() {
                out.status = s.status().map(|s| s.as_str().to_string());
                out.description = s.description().map(str::to_string);
            }
            if let Some(f) = page.image_scan_findings() {
                out.completed_at = millis(f.image_scan_completed_at()).map(|ms| ms / 1000);
                if let Some(counts) = f.finding_severity_counts() {
                    out.severity_counts = counts.iter().map(|(k, v)| (k.as_str().to_string(), i64::from(*v))).collect();
                }
                for finding in f.findings() {
                    let attr = |key: &str| {
                        finding.attributes().iter().find(|a| a.key() == key).and_then(|a| a.value()).map(str::to_string)
                    };
                    out.findings.push((
                        finding.name().unwrap_or_default().to_string(),
                        finding.severity().map(|s| s.as_str().to_string()).unwrap_or_else(|| "UNDEFINED".into()),
                        attr("package_name"),
                        attr("package_version"),
                    ));
                }
                for finding in f.enhanced_findings() {
                    let package = finding.package_vulnerability_details();
                    let vulnerable = package.and_then(|p| p.vulnerable_packages().first());
                    out.findings.push((
                        package.and_then(|p| p.vulnerability_id()).unwrap_or_default().to_string(),
                        finding.severity().unwrap_or("UNDEFINED").to_string(),
                        vulnerable.and_then(|v| v.name()).map(str::to_string),
                        vulnerable.and_then(|v| v.version()).map(str::to_string),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Deletes images by digest, 100 per call; what happened to each.
    pub async fn batch_delete(
        &self,
        repository: &str,
        digests: &[String],
    ) -> Result<Vec<(String, Result<Deleted, RegistryError>)>, RegistryError> {
        let _slot = self.slot().await;
        let mut out = Vec::new();
        for chunk in digests.chunks(100) {
            let ids: Vec<ImageIdentifier> = chunk.iter().map(|d| by_reference(d)).collect();
            let answer = self
                .client
                .batch_delete_image()
                .set_registry_id(self.registry_id.clone())
                .repository_name(repository)
                .set_image_ids(Some(ids))
                .send()
                .await;
            let Some(answer) = found("BatchDeleteImage", answer)? else {
                out.extend(chunk.iter().map(|d| (d.clone(), Ok(Deleted::NotFound))));
                continue;
            };
            for d in chunk {
                let failure = answer.failures().iter().find(|f| f.image_id().and_then(|i| i.image_digest()) == Some(d));
                let result = match failure {
                    None => Ok(Deleted::Deleted),
                    Some(f) if f.failure_code() == Some(&ImageFailureCode::ImageNotFound) => Ok(Deleted::NotFound),
                    Some(f) => Err(RegistryError::Denied(format!(
                        "BatchDeleteImage {d}: {}: {}",
                        f.failure_code().map(|c| c.as_str()).unwrap_or("failure"),
                        f.failure_reason().unwrap_or_default()
                    ))),
                };
                out.push((d.clone(), result));
            }
        }
        Ok(out)
    }

    async fn batch_get(&self, repository: &str, reference: &str) -> Result<Option<Manifest>, RegistryError> {
        let _slot = self.slot().await;
        let out = self
            .client
            .batch_get_image()
            .set_registry_id(self.registry_id.clone())
            .repository_name(repository)
            .image_ids(by_reference(reference))
            .set_accepted_media_types(Some(MANIFEST_MEDIA_TYPES.iter().map(|s| s.to_string()).collect()))
            .send()
            .await;
        let Some(out) = found("BatchGetImage", out)? else { return Ok(None) };
        let Some(image) = out.images().first() else { return Ok(None) };
        let body = image.image_manifest().unwrap_or_default().as_bytes().to_vec();
        let digest = image.image_id().and_then(|i| i.image_digest()).map(str::to_string).unwrap_or_default();
        let media_type = image
            .image_manifest_media_type()
            .map(str::to_string)
            .or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string))
            })
            .unwrap_or_default();
        Ok(Some(Manifest { descriptor: Descriptor { digest, media_type, size: body.len() as u64 }, body }))
    }

    /// A blob's response from the presigned URL ECR gives for it (real ECR only; moto has none).
    async fn layer(&self, repository: &str, digest: &str) -> Result<reqwest::Response, RegistryError> {
        if !is_sha256_digest(digest) {
            return Err(RegistryError::Protocol(format!("not a sha256 digest: {digest:?}")));
        }
        let url = self.download_url(repository, digest).await?;
        super::note_request();
        let resp = self.http.get(url).send().await.map_err(|e| RegistryError::Unreachable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(RegistryError::Status { status: resp.status().as_u16(), message: format!("layer {digest}") });
        }
        Ok(resp)
    }

    async fn download_url(&self, repository: &str, digest: &str) -> Result<String, RegistryError> {
        let _slot = self.slot().await;
        let out = self
            .client
            .get_download_url_for_layer()
            .set_registry_id(self.registry_id.clone())
            .repository_name(repository)
            .layer_digest(digest)
            .send()
            .await
            .map_err(|e| map_err("GetDownloadUrlForLayer", e))?;
        out.download_url()
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Protocol("GetDownloadUrlForLayer answered no URL".into()))
    }
}

/// GetAuthorizationToken with a client's credentials.
async fn token_from(client: &Client) -> Result<AuthorizationToken, RegistryError> {
    let out = client.get_authorization_token().send().await.map_err(|e| map_err("GetAuthorizationToken", e))?;
    let data = out
        .authorization_data()
        .first()
        .ok_or_else(|| RegistryError::Protocol("GetAuthorizationToken answered no authorization data".into()))?;
    use base64::Engine;
    let decoded = data
        .authorization_token()
        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| RegistryError::Protocol("GetAuthorizationToken: the token is not base64 text".into()))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| RegistryError::Protocol("GetAuthorizationToken: the token is not user:password".into()))?;
    Ok(AuthorizationToken {
        username: username.to_string(),
        password: password.to_string(),
        expires_at: millis(data.expires_at()).map(|ms| ms / 1000),
        proxy_endpoint: data.proxy_endpoint().unwrap_or_default().to_string(),
    })
}

/// The session policy of a pull-only session: ECR's pull actions on these repositories, and
/// GetAuthorizationToken (which names no resource). Pure.
pub fn pull_session_policy(repository_arns: &[String]) -> serde_json::Value {
    let mut arns: Vec<&String> = repository_arns.iter().collect();
    arns.sort();
    arns.dedup();
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "BerthToken", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Sid": "BerthPull", "Effect": "Allow",
             "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
             "Resource": arns},
        ],
    })
}

fn exclusion_filters(filters: &[String]) -> Result<Option<Vec<ImageTagMutabilityExclusionFilter>>, RegistryError> {
    if filters.is_empty() {
        return Ok(None);
    }
    filters
        .iter()
        .map(|f| {
            ImageTagMutabilityExclusionFilter::builder()
                .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                .filter(f)
                .build()
                .map_err(build_err)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn repository_info(r: &aws_sdk_ecr::types::Repository) -> RepositoryInfo {
    RepositoryInfo {
        arn: r.repository_arn().unwrap_or_default().to_string(),
        uri: r.repository_uri().unwrap_or_default().to_string(),
        registry_id: r.registry_id().unwrap_or_default().to_string(),
        created_at: millis(r.created_at()).map(|ms| ms / 1000),
        tag_mutability: r.image_tag_mutability().map(|m| m.as_str().to_string()).unwrap_or_else(|| "MUTABLE".into()),
        exclusion_filters: r.image_tag_mutability_exclusion_filters().iter().map(|f| f.filter().to_string()).collect(),
        scan_on_push: r.image_scanning_configuration().is_some_and(|s| s.scan_on_push()),
        encryption_type: r
            .encryption_configuration()
            .map(|e| e.encryption_type().as_str().to_string())
            .unwrap_or_else(|| "AES256".into()),
        kms_key: r.encryption_configuration().and_then(|e| e.kms_key()).map(str::to_string),
    }
}

/// The certificates in a PEM text (errors for text that is not PEM).
fn rustls_pemfile_certs(pem: &str) -> Result<Vec<Vec<u8>>, RegistryError> {
    let mut out = Vec::new();
    for block in pem.split("-----BEGIN CERTIFICATE-----").skip(1) {
        let body = block
            .split("-----END CERTIFICATE-----")
            .next()
            .filter(|_| block.contains("-----END CERTIFICATE-----"))
            .ok_or_else(|| RegistryError::Config("caBundle: a certificate has no END line".into()))?;
        use base64::Engine;
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| RegistryError::Config(format!("caBundle: a certificate is not base64: {e}")))?;
        x509_parser::parse_x509_certificate(&der)
            .map_err(|e| RegistryError::Config(format!("caBundle: not an X.509 certificate: {e}")))?;
        out.push(der);
    }
    Ok(out)
}

#[async_trait]
impl Backend for Ecr {
    async fn check(&self) -> Result<(), RegistryError> {
        let _slot = self.slot().await;
        self.client
            .describe_repositories()
            .set_registry_id(self.registry_id.clone())
            .max_results(1)
            .send()
            .await
            .map_err(|e| map_err("DescribeRepositories", e))?;
        Ok(())
    }

    async fn catalog(&self) -> Result<Vec<String>, RegistryError> {
        let _slot = self.slot().await;
        let mut pages = self
            .client
            .describe_repositories()
            .set_registry_id(self.registry_id.clone())
            .max_results(1000)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_err("DescribeRepositories", e))?;
            out.extend(page.repositories().iter().filter_map(|r| r.repository_name().map(str::to_string)));
        }
        Ok(out)
    }

    async fn tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        Ok(self.images(repository).await?.into_iter().flat_map(|i| i.tags).collect())
    }

    async fn resolve(&self, repository: &str, reference: &str) -> Result<Option<Descriptor>, RegistryError> {
        let _slot = self.slot().await;
        let out = self
            .client
            .describe_images()
            .set_registry_id(self.registry_id.clone())
            .repository_name(repository)
            .image_ids(by_reference(reference))
            .send()
            .await;
        Ok(found("DescribeImages", out)?.and_then(|out| {
            let d = out.image_details().first()?;
            Some(Descriptor {
                digest: d.image_digest()?.to_string(),
                media_type: d.image_manifest_media_type().unwrap_or_default().to_string(),
                size: 0,
            })
        }))
    }

    async fn manifest(&self, repository: &str, reference: &str) -> Result<Manifest, RegistryError> {
        self.batch_get(repository, reference)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("{repository}:{reference}")))
    }

    async fn blob(&self, repository: &str, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let resp = self.layer(repository, digest).await?;
        let body = super::distribution::read_capped(resp, super::distribution::MAX_BLOB_BYTES, "blob").await?;
        if super::sha256_digest(&body) != digest {
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
        let resp = self.layer(repository, digest).await?;
        super::blob_into_file(resp, digest, dest, max_bytes, |e| RegistryError::Unreachable(e.to_string())).await
    }

    async fn put_blob(&self, repository: &str, body: &[u8]) -> Result<String, RegistryError> {
        let _slot = self.slot().await;
        let digest = super::sha256_digest(body);
        let available = self
            .client
            .batch_check_layer_availability()
            .set_registry_id(self.registry_id.clone())
            .repository_name(repository)
            .layer_digests(&digest)
            .send()
            .await
            .map_err(|e| map_err("BatchCheckLayerAvailability", e))?;
        if available.layers().iter().any(|l| {
            l.layer_digest() == Some(digest.as_str())
                && l.layer_availability() == Some(&aws_sdk_ecr::types::LayerAvailability::Available)
        }) {
            return Ok(digest);
        }
        let upload = self
            .client
            .initiate_layer_upload()
            .set_registry_id(self.registry_id.clone())
            .repository_name(repository)
            .send()
            .await
            .map_err(|e| map_err("InitiateLayerUpload", e))?;
        let id = upload.upload_id().unwrap_or_default().to_string();
        let part = upload.part_size().filter(|p| *p > 0).unwrap_or(10 << 20) as usize;
        for (i, chunk) in body.chunks(part.max(1)).enumerate() {
            let first = (i * part) as i64;
            self.client
                .upload_layer_part()
                .set_registry_id(self.registry_id.clone())
                .repository_name(repository)
                .upload_id(&id)
                .part_first_byte(first)
                .part_last_byte(first + chunk.len() as i64 - 1)
                .layer_part_blob(Blob::new(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| map_err("UploadLayerPart", e))?;
        }
        match self
            .client
            .complete_layer_upload()
            .set_registry_id(self.registry_id.clone())
            .repository_name(repository)
            .upload_id(&id)
            .layer_digests(&digest)
            .send()
            .await
        {
            Ok(_) => Ok(digest),
            Err(e) if e.code() == Some("LayerAlreadyExistsException") => Ok(digest),
            Err(e) => Err(map_err("CompleteLayerUpload", e)),
        }
    }

    async fn referrers(&self, _repository: &str, _digest: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        // The ECR API's ListImageReferrers answers in its own shape; berth uses the tag scheme,
        // which every registry (and ECR's PutImage) supports.
        Ok(None)
    }

    async fn delete_manifest(&self, repository: &str, digest: &str) -> Result<Deleted, RegistryError> {
        let mut out = self.batch_delete(repository, &[digest.to_string()]).await?;
        out.pop().map(|(_, r)| r).unwrap_or(Ok(Deleted::NotFound))
    }

    async fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String, RegistryError> {
        let digest = super::sha256_digest(body);
        let text = std::str::from_utf8(body)
            .map_err(|_| RegistryError::Protocol("a manifest must be UTF-8 JSON for ECR's PutImage".into()))?;
        let mut call = self
            .client
            .put_image()
            .set_registry_id(self.registry_id.clone())
            .repository_name(repository)
            .image_manifest(text)
            .image_manifest_media_type(media_type)
            // ECR checks it; moto would otherwise make up its own.
            .image_digest(&digest);
        if !tag.starts_with("sha256:") {
            call = call.image_tag(tag);
        }
        let sent = {
            let _slot = self.slot().await;
            call.send().await
        };
        match sent {
            Ok(_) => Ok(digest),
            // Already there under that tag: idempotent, if it is this manifest.
            Err(e) if e.code() == Some("ImageAlreadyExistsException") => match self.resolve(repository, tag).await? {
                Some(d) if d.digest == digest => Ok(digest),
                _ => Err(RegistryError::Denied(format!("PutImage {repository}:{tag}: the tag is immutable"))),
            },
            Err(e) if e.code() == Some("ImageTagAlreadyExistsException") => {
                Err(RegistryError::Denied(format!("PutImage {repository}:{tag}: the tag is immutable")))
            }
            Err(e) => Err(map_err("PutImage", e)),
        }
    }

    async fn poll_tag(&self, repository: &str, tag: &str) -> Result<Option<Descriptor>, RegistryError> {
        let listing = self.polled_images(repository).await?;
        Ok(listing.iter().find(|i| i.tags.iter().any(|t| t == tag)).map(|i| Descriptor {
            digest: i.digest.clone(),
            media_type: i.media_type.clone(),
            size: 0,
        }))
    }

    async fn poll_tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        Ok(self.polled_images(repository).await?.iter().flat_map(|i| i.tags.iter().cloned()).collect())
    }

    async fn listing(&self, repository: &str) -> Result<Option<Vec<ImageInfo>>, RegistryError> {
        self.images(repository).await.map(Some)
    }

    fn ecr(&self) -> Option<&Ecr> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts_give_account_and_region() {
        assert_eq!(
            parse_registry_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some(("123456789012".into(), "eu-west-1".into()))
        );
        assert_eq!(
            parse_registry_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn:443"),
            Some(("123456789012".into(), "cn-north-1".into()))
        );
        assert_eq!(
            parse_registry_host("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com"),
            Some(("123456789012".into(), "us-gov-west-1".into()))
        );
        for bad in [
            "12345678901.dkr.ecr.eu-west-1.amazonaws.com",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example",
            "123456789012.dkr.ecr.nowhere.amazonaws.com",
            "registry.example.com",
            "",
        ] {
            assert_eq!(parse_registry_host(bad), None, "{bad}");
        }
    }

    #[test]
    fn regions_are_checked_before_the_sdk_sees_them() {
        for good in ["us-east-1", "eu-central-2", "us-gov-west-1", "ap-southeast-4"] {
            assert!(valid_region(good), "{good}");
        }
        for bad in ["", "us-east", "US-EAST-1", "us_east_1", "us-east-1/", "x-y-1z"] {
            assert!(!valid_region(bad), "{bad}");
        }
    }

    #[test]
    fn aws_errors_become_reasons_a_person_can_act_on() {
        let c = |code: Option<&str>, status| classify("Call", code, Some("m"), status).reason();
        assert_eq!(c(Some("UnrecognizedClientException"), Some(400)), "Unauthorized");
        assert_eq!(c(Some("ExpiredTokenException"), Some(400)), "Unauthorized");
        assert_eq!(c(None, Some(403)), "Unauthorized", "moto's XML auth errors carry no code");
        assert_eq!(c(Some("AccessDeniedException"), Some(400)), "Denied");
        assert_eq!(c(Some("RepositoryNotFoundException"), Some(400)), "NotFound");
        assert_eq!(c(Some("ThrottlingException"), Some(400)), "RegistryError", "transient: retried later");
        assert_eq!(c(Some("KmsException"), Some(400)), "InvalidRegistryConfig");
        assert_eq!(c(None, Some(500)), "RegistryError");
        let text = classify("CreateRepository", Some("InvalidParameterException"), Some("bad name"), Some(400));
        assert_eq!(
            text.to_string(),
            "invalid registry configuration: CreateRepository: InvalidParameterException: bad name"
        );
    }

    #[test]
    fn a_pull_session_may_only_pull_from_its_repositories() {
        let p = pull_session_policy(&[
            "arn:aws:ecr:eu-west-1:123456789012:repository/b".into(),
            "arn:aws:ecr:eu-west-1:123456789012:repository/a".into(),
            "arn:aws:ecr:eu-west-1:123456789012:repository/a".into(),
        ]);
        let statements = p["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 2);
        let actions: Vec<&str> = statements
            .iter()
            .flat_map(|s| match &s["Action"] {
                serde_json::Value::String(a) => vec![a.as_str()],
                serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
                _ => vec![],
            })
            .collect();
        let pull_only = [
            "ecr:GetAuthorizationToken",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
            "ecr:BatchCheckLayerAvailability",
        ];
        assert!(actions.iter().all(|a| pull_only.contains(a)), "{actions:?}");
        assert_eq!(
            statements[1]["Resource"],
            serde_json::json!([
                "arn:aws:ecr:eu-west-1:123456789012:repository/a",
                "arn:aws:ecr:eu-west-1:123456789012:repository/b"
            ])
        );
        assert_eq!(statements[0]["Resource"], "*", "GetAuthorizationToken names no resource");
    }

    #[test]
    fn a_ca_bundle_that_is_not_pem_is_refused_not_a_panic() {
        assert!(rustls_pemfile_certs("garbage").unwrap().is_empty());
        assert!(rustls_pemfile_certs("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err());
        assert!(rustls_pemfile_certs("-----BEGIN CERTIFICATE-----\nAAAA\n").is_err());
        let cert = rcgen::generate_simple_self_signed(vec!["x.example".into()]).unwrap();
        assert_eq!(rustls_pemfile_certs(&cert.cert.pem()).unwrap().len(), 1);
    }
}
