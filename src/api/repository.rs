use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LocalObjectReference;

/// A container repository declared as code: its path in a Registry, who may see it, how its tags
/// behave and what happens to its images over time.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Repository",
    plural = "repositories",
    namespaced,
    status = "RepositoryStatus",
    shortname = "repo",
    category = "berth",
    doc = "Repository is a container repository in a Registry, declared as code: its path, visibility, tag mutability, lifecycle policy and deletion policy.",
    printcolumn(name = "URI", type_ = "string", json_path = ".status.uri"),
    printcolumn(name = "Visibility", type_ = "string", json_path = ".spec.visibility"),
    printcolumn(name = "Images", type_ = "integer", json_path = ".status.imageCount"),
    printcolumn(name = "Tags", type_ = "integer", json_path = ".status.tagCount"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!has(self.immutableTagExclusions) || self.imageTagMutability == 'Immutable'").message("immutableTagExclusions is only allowed with imageTagMutability: Immutable"))]
#[x_kube(validation = Rule::new("has(self.name) == has(oldSelf.name)").message("name cannot be added or removed after creation: the path is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct RepositorySpec {
    /// Name of the cluster-scoped Registry that holds this repository. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("registryRef is immutable: create a new Repository to move images to another registry"))]
    pub registry_ref: LocalObjectReference,

    /// Path of the repository in the registry, for example `team-a/api`. Defaults to
    /// `<namespace>/<metadata.name>`. It must start with the Repository's own namespace unless the
    /// Registry allows that namespace other prefixes. Lower-case path components separated by `/`,
    /// as the OCI Distribution specification requires. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]+((\\\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\\\.|_|__|-+)[a-z0-9]+)*)*$')").message("name must be lower-case path components ([a-z0-9] separated by '.', '_', '__' or '-') joined by '/'"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("name is immutable: create a new Repository for another path"))]
    #[schemars(length(min = 1, max = 255))]
    pub name: Option<String>,

    /// Who may pull: `Public` repositories can be pulled anonymously by anyone who reaches the
    /// registry; `Private` ones (the default) only by subjects an AccessPolicy grants `pull`.
    /// Pushing always needs a grant, whatever the visibility.
    #[serde(default)]
    pub visibility: Visibility,

    /// `Mutable` (the default) lets a tag move to another image. `Immutable` makes berth restore a
    /// moved tag to its first digest (except tags matched by `immutableTagExclusions`).
    #[serde(default)]
    pub image_tag_mutability: TagMutability,

    /// Tags that stay mutable on an `Immutable` repository, as ECR filters: `*` matches any run
    /// of characters (`latest`, `dev-*`). At most 5 filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(f, f.matches('^[a-zA-Z0-9._*-]{1,128}$'))").message("each exclusion filter is 1 to 128 characters of letters, digits, '.', '_', '-' and '*'"))]
    #[schemars(length(max = 5), inner(length(max = 128)))]
    pub immutable_tag_exclusions: Option<Vec<String>>,

    /// LifecyclePolicy (in this namespace) that expires this repository's old images.
    /// Without one, berth never deletes an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_policy_ref: Option<LocalObjectReference>,

    /// Scan images for known vulnerabilities when they are pushed (see ImageScan), whatever
    /// the Registry's scanning rules say; they may ask for more (`Continuous`).
    #[serde(default)]
    pub scan_on_push: bool,

    /// What happens to the images when this Repository object is deleted: `Retain` (the default)
    /// leaves them in the registry; `Delete` removes every manifest of the repository first.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Settings only an `ecr` Registry has. On a Distribution Registry the Repository is not
    /// Ready (`NotSupportedByRegistry`) while they are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecr: Option<RepositoryEcr>,
}

/// An ECR repository's own settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryEcr {
    /// How ECR encrypts the images at rest. Set when the repository is created, and fixed from
    /// then on: a different value afterwards makes the Repository not Ready
    /// (`EncryptionMismatch`). Default: AES256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EcrEncryption>,
    /// AWS resource tags on the repository. berth owns the keys it set: it changes and removes
    /// those, and leaves tags others set alone.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k.size() >= 1 && k.size() <= 128 && !k.startsWith('aws:') && self[k].size() <= 256)").message("tag keys are 1 to 128 characters, not starting with aws:, and values at most 256"))]
    #[schemars(length(max = 40))]
    pub tags: std::collections::BTreeMap<String, String>,
}

/// Encryption at rest of an ECR repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'AES256' || !has(self.kmsKey)").message("kmsKey goes with type KMS or KMS_DSSE"))]
pub struct EcrEncryption {
    /// `AES256`, `KMS` or `KMS_DSSE`.
    #[serde(rename = "type")]
    pub type_: EcrEncryptionType,
    /// The KMS key (ARN, id or alias) for `KMS` and `KMS_DSSE`; default: the AWS managed key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key: Option<String>,
}

/// ECR's encryption types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EcrEncryptionType {
    #[serde(rename = "AES256")]
    Aes256,
    #[serde(rename = "KMS")]
    Kms,
    #[serde(rename = "KMS_DSSE")]
    KmsDsse,
}

impl EcrEncryptionType {
    pub fn as_str(self) -> &'static str {
        match self {
            EcrEncryptionType::Aes256 => "AES256",
            EcrEncryptionType::Kms => "KMS",
            EcrEncryptionType::KmsDsse => "KMS_DSSE",
        }
    }
}

/// Who may pull from a repository.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Visibility {
    Public,
    #[default]
    Private,
}

/// Whether tags may move to another image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TagMutability {
    #[default]
    Mutable,
    Immutable,
}

/// What deleting a Repository object does to its images.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// Observed state of a Repository, read from the registry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryStatus {
    /// Current state: `Ready` is True when the repository is declared and reconciled with the
    /// registry; its reason (`Conflict`, `RegistryUnreachable`, ...) says why not otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where to pull and push: `<registry host>/<path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Distinct image manifests (by digest) that carry at least one tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_count: Option<i64>,
    /// Tags in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_count: Option<i64>,
    /// When the newest image was pushed, from registry events, or when berth first saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pushed_at: Option<Time>,
    /// Times berth restored a tag that was pushed over on this Immutable repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable_tag_restores: Option<i64>,
    /// The latest scans of the repository's images (those the registry still has), when it is
    /// scanned. Written apart from the rest of status, as scans finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scans: Option<ScanSummary>,
    /// The ECR repository, on an `ecr` Registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecr: Option<RepositoryEcrStatus>,
}

/// What berth knows of the ECR repository behind a Repository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryEcrStatus {
    /// The repository's ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// When ECR created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// True when the repository existed before this Repository declared it, and berth took it
    /// over (its images, settings and berth's tag keys are now managed).
    #[serde(default)]
    pub adopted: bool,
    /// Encryption as ECR reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_type: Option<String>,
    /// Resource tag keys berth set (and so owns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_tag_keys: Vec<String>,
    /// The Sids of the repository policy statements berth wrote (from AccessPolicies' AWS
    /// principals); other statements are left alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_statements: Vec<String>,
    /// SHA-256 of the lifecycle policy text berth put on the repository (`mode: Native`), so
    /// that berth removes only a policy it wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_policy_sha256: Option<String>,
}

/// What the latest scans of a repository's images found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanSummary {
    /// How this repository is scanned (`OnPush`, `Continuous`, `Manual`), from the Registry's
    /// rules and `scanOnPush`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<String>,
    /// Images with a Complete scan.
    pub complete: i64,
    /// Images waiting for, or in, a scan.
    pub pending: i64,
    /// Images whose scan failed or that cannot be scanned.
    pub failed: i64,
    /// The Repository's `berth.dev/scan` request last passed on to its images' scans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// Findings per severity over the images' scans (a finding in two images counts twice).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub finding_severity_counts: std::collections::BTreeMap<String, i64>,
}
