use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretReference;

/// The condition that says whether the registry will trust new signing keys in time.
pub const CONDITION_SIGNING_KEY_ROTATION: &str = "SigningKeyRotation";

/// A backing container registry and how berth reaches it. Cluster-scoped: platform teams declare
/// registries once and application namespaces declare Repositories in them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Registry",
    plural = "registries",
    status = "RegistryStatus",
    shortname = "reg",
    category = "berth",
    doc = "Registry is a backing container registry (CNCF Distribution today, AWS ECR later) and how berth reaches it.",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Reachable", type_ = "boolean", json_path = ".status.reachable"),
    printcolumn(name = "Repositories", type_ = "integer", json_path = ".status.repositoryCount"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!(has(self.insecureSkipTLSVerify) && self.insecureSkipTLSVerify && has(self.caBundle))").message("set either insecureSkipTLSVerify or caBundle, not both"))]
#[x_kube(validation = Rule::new("!has(self.credentialsSecretRef) || has(self.credentialsSecretRef.namespace)").message("credentialsSecretRef.namespace is required: a Registry is cluster-scoped"))]
#[x_kube(validation = Rule::new("!has(self.tokenAuth) || has(self.tokenAuth.signingKeySecretRef.namespace)").message("tokenAuth.signingKeySecretRef.namespace is required: a Registry is cluster-scoped"))]
#[x_kube(validation = Rule::new("has(self.ecr) == (has(self.type) && self.type == 'ecr')").message("ecr settings go with type: ecr, and type: ecr needs them (region at least)"))]
#[x_kube(validation = Rule::new("!has(self.type) || self.type != 'ecr' || (!has(self.tokenAuth) && !has(self.notifications) && !has(self.insecureSkipTLSVerify))").message("an ecr Registry takes no tokenAuth, notifications or insecureSkipTLSVerify: ECR authenticates with IAM and sends no registry events"))]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// Base URL of the registry's HTTP API, without the `/v2/` suffix, for example
    /// `https://registry.example.com` or `http://127.0.0.1:5000`. Repository URIs are built from
    /// its host and port; `aliases` names the registry's other hosts.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+(/[^?#\\\\s]*)?$')").message("url must be an http:// or https:// URL with a host, and no query or fragment"))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,

    /// Other host names workloads and nodes pull this registry by, as `host[:port]` (no scheme,
    /// no path), when they differ from the host of `url`, which is how berth reaches it: for
    /// example a node port (`127.0.0.1:30500`) or an Ingress host (`registry.example.com`).
    /// Pull secrets name each of them, and images referenced under any of them are followed by
    /// rollouts (a pin keeps the name the workload used) and protected from expiry while in
    /// use. Lower case; the port is part of the name (`registry.example.com:443` is not
    /// `registry.example.com`), and a name without a `.` or a port must be `localhost`, because
    /// an image reference reads any other such first component as a Docker Hub path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[x_kube(validation = Rule::new("self.all(a, !a.contains('/'))").message("aliases are host[:port] names, without a scheme or a path, for example 127.0.0.1:30500 or registry.example.com"))]
    #[x_kube(validation = Rule::new("self.all(a, a.matches('^(\\\\[[0-9a-f.]*:[0-9a-f:.]*\\\\]|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*)(:[0-9]{1,5})?$'))").message("each alias must be a lower-case host name, an IPv4 address or a bracketed IPv6 address, with an optional :port"))]
    #[x_kube(validation = Rule::new("self.all(a, a == 'localhost' || a.contains('.') || a.contains(':'))").message("an alias needs a '.' or a :port (or is localhost): an image reference reads any other first component as a Docker Hub path"))]
    #[x_kube(validation = Rule::new("self.all(a, !a.matches(':[0-9]{1,5}$') || (int(a.substring(a.lastIndexOf(':') + 1)) >= 1 && int(a.substring(a.lastIndexOf(':') + 1)) <= 65535))").message("an alias's port must be from 1 to 65535"))]
    #[schemars(length(max = 32), inner(length(min = 1, max = 259)))]
    pub aliases: Vec<String>,

    /// Which API berth speaks to this registry: `distribution` (the OCI Distribution API, served by
    /// CNCF Distribution, Zot, Harbor and others) or `ecr` (AWS Elastic Container Registry through
    /// the ECR API; set `ecr` too, and `url` to the registry's host,
    /// `https://<account>.dkr.ecr.<region>.amazonaws.com`).
    #[serde(rename = "type", default)]
    pub type_: RegistryType,

    /// Where berth reaches an `ecr` Registry's API and which account's registry it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecr: Option<EcrSettings>,

    /// Secret holding the credentials berth uses for its own calls to the registry: keys
    /// `username` and `password` (basic auth). Not used when `tokenAuth` is set, because berth then
    /// signs its own tokens. For an `ecr` Registry: keys `accessKeyId`, `secretAccessKey` and
    /// optionally `sessionToken`; without it berth uses the AWS default chain (web identity for
    /// IRSA, EKS Pod Identity, the environment, the instance profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,

    /// Skip verification of the registry's TLS certificate. Only for tests and labs: anyone on the
    /// path can impersonate the registry. Mutually exclusive with `caBundle`.
    #[serde(default, rename = "insecureSkipTLSVerify", skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,

    /// PEM-encoded CA certificates that sign the registry's TLS certificate, when it is not
    /// signed by a public CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,

    /// Makes berth the registry's token service (the Docker registry token protocol): the registry
    /// is configured with `auth.token` pointing at berth, and berth decides every pull and push
    /// from Repository visibility and AccessPolicy grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_auth: Option<TokenAuth>,

    /// Registry notifications (push and delete events) sent to berth's events endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Notifications>,

    /// Namespaces that may declare Repositories outside their own `<namespace>/` path prefix.
    /// Without an entry here a Repository's path must start with its own namespace, so that one
    /// team cannot claim (and grant itself push to) another team's images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Each namespace appears at most once (the API server enforces it: a list keyed by namespace).
    #[x_kube(merge_strategy = ListMerge::Map(vec!["namespace".into()]))]
    #[schemars(length(max = 256))]
    pub path_prefixes: Vec<NamespacePathPrefixes>,

    /// How often berth re-checks that the registry is reachable and recounts its repositories,
    /// as a Go-style duration (`30s`, `5m`, `1h`). Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$')").message("checkInterval must be a duration such as 30s, 5m or 1h"))]
    #[schemars(length(max = 32))]
    pub check_interval: Option<String>,

    /// Image scanning, as ECR's registry scanning configuration: which repositories are scanned
    /// and when. A Repository with `scanOnPush: true` is scanned on push whatever the rules say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanning: Option<ScanningConfiguration>,
}

/// An ECR registry's API.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EcrSettings {
    /// The AWS region (`eu-west-1`). Default: the region in `url`'s host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]{2}(-[a-z]+)+-[0-9]+$')").message("region must be an AWS region such as eu-west-1"))]
    #[schemars(length(max = 32))]
    pub region: Option<String>,
    /// The 12-digit account id whose registry this is. Default: the account in `url`'s host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{12}$')").message("registryId must be a 12-digit AWS account id"))]
    #[schemars(length(max = 12))]
    pub registry_id: Option<String>,
    /// The ECR API endpoint, when not AWS's own: a VPC interface endpoint, a FIPS endpoint, or
    /// a stand-in in tests (`http://127.0.0.1:5077`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+/?$')").message("endpoint must be an http:// or https:// URL with a host and no path"))]
    #[schemars(length(max = 2048))]
    pub endpoint: Option<String>,
    /// The IAM role berth assumes to fetch the tokens of AccessPolicies' pull secrets, with a
    /// session policy that lets the token pull only from the policy's repositories. It must
    /// trust berth's own identity and allow `ecr:GetAuthorizationToken` and ECR's pull actions.
    /// Without it berth writes no pull secret for this registry (a token from berth's own
    /// credentials could push and delete as berth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$')").message("pullSecretRoleArn must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)"))]
    #[schemars(length(max = 600))]
    pub pull_secret_role_arn: Option<String>,
}

/// Which repositories berth scans, and when.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanningConfiguration {
    /// Each rule gives a frequency to the repositories (paths) its filters match. A repository
    /// matched by several rules gets the most frequent: `Continuous`, then `OnPush`, then
    /// `Manual`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub rules: Vec<ScanningRule>,
    /// Attach each scan's CycloneDX SBOM to its image as an OCI referrer (artifact type
    /// `application/vnd.cyclonedx+json`), where `oras discover` and other tools find it.
    /// Default true. (Scans by an external `scanner` attach none.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<bool>,
    /// Scan with an existing scanner adapter speaking the Harbor Pluggable Scanner API v1.2
    /// (harbor-scanner-trivy, say) instead of berth's own scanner. The adapter pulls the image
    /// from this Registry's `url` with a pull-only credential berth gives it per scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner: Option<ScannerAdapter>,
}

/// A Harbor Pluggable Scanner API v1.2 adapter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScannerAdapter {
    /// The adapter's base URL, without `/api/v1` (`http://harbor-scanner-trivy.security:8080`).
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+(/[^?#\\\\s]*)?$')").message("url must be an http:// or https:// URL with a host"))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// A Secret whose key (default `authorization`) holds the `Authorization` header value the
    /// adapter expects (`Bearer <token>`), if it asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_secret_ref: Option<SecretReference>,
}

/// One scanning rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanningRule {
    /// `OnPush`: each image is scanned once, when berth first sees it tagged. `Continuous`: as
    /// OnPush, and scanned again (re-matched) whenever the vulnerability data changes. `Manual`:
    /// only when asked with the `berth.dev/scan` annotation.
    pub scan_frequency: ScanFrequency,
    /// Repository paths the rule applies to; `*` matches any run of characters (`team-a/*`,
    /// `*`), as ECR's repository filters.
    #[x_kube(validation = Rule::new("self.all(f, f.matches('^[a-z0-9._/*-]{1,256}$'))").message("each filter is 1 to 256 characters of lower-case letters, digits, '.', '_', '-', '/' and '*'"))]
    #[schemars(length(min = 1, max = 100), inner(length(max = 256)))]
    pub repository_filters: Vec<String>,
}

/// How often images are scanned.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum ScanFrequency {
    Manual,
    OnPush,
    Continuous,
}

/// The API berth speaks to a registry.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RegistryType {
    #[default]
    Distribution,
    Ecr,
}

/// Token service settings: the values the registry's `auth.token` section must match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.keyRotation) || duration(has(self.tokenLifetime) ? self.tokenLifetime : '5m') < duration(has(self.keyRotation.renewBefore) ? self.keyRotation.renewBefore : '720h') - duration(has(self.keyRotation.activationDelay) ? self.keyRotation.activationDelay : '696h')").message("tokenLifetime must be shorter than keyRotation.renewBefore - activationDelay: a token signed by the old key just before its successor takes over would outlive the old key's place in the bundle"))]
#[serde(rename_all = "camelCase")]
pub struct TokenAuth {
    /// The `iss` claim of the tokens berth signs; the registry's `auth.token.issuer`.
    #[x_kube(validation = Rule::new("self.size() > 0").message("issuer must not be empty"))]
    #[schemars(length(max = 1024))]
    pub issuer: String,
    /// The `aud` claim and the `service` parameter; the registry's `auth.token.service`.
    #[x_kube(validation = Rule::new("self.size() > 0").message("service must not be empty"))]
    #[schemars(length(max = 1024))]
    pub service: String,
    /// Secret holding berth's signing keys; berth creates it when missing and rotates the keys in
    /// it. It publishes the certificate bundle the registry trusts (`auth.token.rootcertbundle`)
    /// beside them.
    pub signing_key_secret_ref: SecretReference,
    /// Lifetime of the tokens berth issues, as a duration (`5m` by default). Short lifetimes make
    /// revoked grants take effect quickly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h))+$')").message("tokenLifetime must be a duration such as 300s or 5m"))]
    #[schemars(length(max = 32))]
    pub token_lifetime: Option<String>,
    /// When berth makes, uses and drops signing keys. Unset: keys live 90 days, a successor
    /// joins the bundle 30 days before the newest expires and signs 29 days later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation: Option<KeyRotation>,
    /// The Deployment that runs this registry. Distribution reads its `rootcertbundle` only when
    /// it starts, so whenever the bundle changes (a key joins or leaves) berth sets the pod
    /// template annotation `berth.dev/token-bundle-sha256` to the bundle's SHA-256 and Kubernetes
    /// rolls the registry. Unset: berth only reports, in the `SigningKeyRotation` condition and a
    /// Warning Event `RegistryRestartNeeded`, by when the registry must be restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_deployment: Option<DeploymentReference>,
}

/// How signing keys rotate. Durations are Go-style, in hours, minutes and seconds (`2160h` is 90
/// days). A key is made, joins the bundle, waits `activationDelay` for registries to load the
/// bundle, signs until its successor takes over, and leaves the bundle when it expires.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("duration(has(self.renewBefore) ? self.renewBefore : '720h') < duration(has(self.keyLifetime) ? self.keyLifetime : '2160h')").message("renewBefore must be shorter than keyLifetime: every new key would be due for renewal at once"))]
#[x_kube(validation = Rule::new("duration(has(self.activationDelay) ? self.activationDelay : '696h') < duration(has(self.renewBefore) ? self.renewBefore : '720h')").message("activationDelay must be shorter than renewBefore: a new key must start signing before the key it replaces expires"))]
#[serde(rename_all = "camelCase")]
pub struct KeyRotation {
    /// How long each signing key's certificate is valid. Default `2160h` (90 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h))+$')").message("keyLifetime must be a duration such as 2160h or 3m"))]
    #[schemars(length(max = 32))]
    pub key_lifetime: Option<String>,
    /// A successor joins the bundle when the newest key has less than this left. Shorter than
    /// `keyLifetime`. Default `720h` (30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h))+$')").message("renewBefore must be a duration such as 720h or 2m"))]
    #[schemars(length(max = 32))]
    pub renew_before: Option<String>,
    /// How long a new key is only in the bundle before it signs: the time the registry has to be
    /// restarted with the new bundle (by berth through `registryDeployment`, or by a person).
    /// Shorter than `renewBefore`, by more than `tokenLifetime`. Default `696h` (29 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h))+$')").message("activationDelay must be a duration such as 696h or 40s"))]
    #[schemars(length(max = 32))]
    pub activation_delay: Option<String>,
}

/// A Deployment in a named namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentReference {
    /// Namespace of the Deployment (required: a Registry is cluster-scoped).
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Deployment.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Where registry events come from and how berth authenticates them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    /// Secret with the shared token that the registry sends in the `Authorization: Bearer`
    /// header of every notification (key `token` unless `key` is set). Events without it are
    /// refused.
    pub secret_ref: SecretReference,
}

/// Extra path prefixes one namespace may use for its Repositories.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacePathPrefixes {
    /// The namespace given the extra prefixes.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Path prefixes (for example `shared/` or `library/`) that Repositories in that namespace may
    /// use besides `<namespace>/`.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 255)))]
    pub prefixes: Vec<String>,
}

/// Observed state of a Registry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatus {
    /// Current state: `Ready` is True when berth reaches the registry with the configured
    /// credentials; its reason says why not otherwise. With `tokenAuth`, `SigningKeyRotation`
    /// says whether the registry will trust new signing keys in time: True with `RegistryRolled`
    /// or `NoKeyWaiting`; False with `RegistryRestartNeeded` (its message names the deadline),
    /// `RegistryDeploymentNotFound`, `RegistryRollFailed` or `NamespaceNotManaged`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Whether the last check reached the registry's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// Repositories the registry holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_count: Option<i64>,
    /// Repository objects that point at this registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_repository_count: Option<i64>,
    /// Repositories in the registry that no Repository object declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undeclared_repository_count: Option<i64>,
    /// The first undeclared repositories, in name order (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undeclared_repositories: Vec<String>,
    /// The token service's signing keys, with `tokenAuth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_auth: Option<TokenAuthStatus>,
}

/// What berth published for the registry to trust, and what it did about it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenAuthStatus {
    /// SHA-256 (hex) of `bundle.pem` in the `<signing Secret>-bundle` Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_sha256: Option<String>,
    /// The bundle SHA-256 that `registryDeployment`'s pod template was last set to (its
    /// `berth.dev/token-bundle-sha256` annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_deployment_bundle_sha256: Option<String>,
    /// SHA-256 fingerprint (hex) of the certificate of the newest signing key berth has handled:
    /// rolled `registryDeployment` for, or announced with a Warning Event
    /// `RegistryRestartNeeded`. Each new key is handled once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_key_sha256: Option<String>,
}
