use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::LocalObjectReference;

/// The scan of one image (one manifest digest) of a Repository: what berth found in it, shaped
/// like ECR's image scan findings. berth creates one per tagged image of a Repository whose
/// Registry's scanning rules (or `scanOnPush`) ask for it, owned by the Repository; annotate it
/// with `berth.dev/scan: "<any new value>"` to scan it again now.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "ImageScan",
    plural = "imagescans",
    namespaced,
    status = "ImageScanStatus",
    shortname = "scan",
    category = "berth",
    doc = "ImageScan is the vulnerability scan of one image (manifest digest) of a Repository, with its findings.",
    printcolumn(name = "Repository", type_ = "string", json_path = ".spec.repositoryRef.name"),
    printcolumn(name = "Digest", type_ = "string", json_path = ".spec.digest", priority = 1),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Critical", type_ = "integer", json_path = ".status.findingSeverityCounts.CRITICAL"),
    printcolumn(name = "High", type_ = "integer", json_path = ".status.findingSeverityCounts.HIGH"),
    printcolumn(name = "Medium", type_ = "integer", json_path = ".status.findingSeverityCounts.MEDIUM"),
    printcolumn(name = "Packages", type_ = "integer", json_path = ".status.packageCount", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ImageScanSpec {
    /// The Repository (in this namespace) whose image this is. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("repositoryRef is immutable"))]
    pub repository_ref: LocalObjectReference,
    /// The image's manifest digest (`sha256:<64 hex>`). For an image index, berth scans its
    /// linux/amd64 image. Immutable.
    #[x_kube(validation = Rule::new("self.matches('^sha256:[a-f0-9]{64}$')").message("digest must be sha256:<64 lower-case hex digits>"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("digest is immutable"))]
    #[schemars(length(max = 71))]
    pub digest: String,
}

/// Where a scan is, as ECR names it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ScanPhase {
    /// Waiting to be scanned.
    #[default]
    Pending,
    InProgress,
    /// Scanned: the findings are those of the vulnerability data named in status.
    Complete,
    /// Could not be scanned; `reason` and `message` say why.
    Failed,
    /// Not a container image berth can scan (an artifact, a platform other than linux/amd64).
    UnsupportedImage,
}

/// What a scan found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageScanStatus {
    /// `Ready` is True once the scan is Complete; False with the reason while it is pending,
    /// in progress or failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the scan is: `Pending`, `InProgress`, `Complete`, `Failed` or `UnsupportedImage`.
    #[serde(default)]
    pub phase: ScanPhase,
    /// Why the scan failed or is unsupported (`InvalidLayer`, `NoVulnerabilityData`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What went wrong, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The image manifest scanned: the digest itself, or the linux/amd64 image of an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_manifest: Option<String>,
    /// The operating system, from os-release (`debian 12`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Packages found (OS and language packages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_count: Option<i64>,
    /// Findings per severity (`CRITICAL`, `HIGH`, `MEDIUM`, `LOW`, `INFORMATIONAL`,
    /// `UNDEFINED`), as ECR's `findingSeverityCounts`; only severities with findings appear.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub finding_severity_counts: BTreeMap<String, i64>,
    /// The most severe findings, at most 100; `findingsNotListed` counts the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<ScanFinding>,
    /// Findings left out of `findings` to keep the object small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings_not_listed: Option<i64>,
    /// When the last scan (or re-match) completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// The vulnerability data the findings come from: its version (a digest of its archives)
    /// and the newest `modified` time of its records, i.e. how current it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vulnerability_data: Option<VulnerabilityDataRef>,
    /// The value of the `berth.dev/scan` annotation this scan answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// The CycloneDX SBOM berth attached to the image as an OCI referrer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<SbomRef>,
    /// Ecosystems of packages the image holds for which the vulnerability data has no records:
    /// those packages were not checked (`Go` when only Debian data is loaded, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecosystems_without_data: Vec<String>,
    /// The external scanner that made the findings (`Trivy 0.54.1 (Aqua Security)`), when the
    /// Registry names a scanner adapter; absent for berth's own scanner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanner: Option<String>,
    /// The adapter's id for the scan under way (`POST /api/v1/scan` answered it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_scan_id: Option<String>,
    /// Attempts at the scan under way or last interrupted: a scan interrupted this many times
    /// (berth stopped or was killed while reading the image) fails with `ScanInterrupted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    /// Files the scan did not read because they were over a size cap (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// One vulnerability in one package.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanFinding {
    /// The OSV record's id (`GHSA-...`, `GO-2024-...`, `DEBIAN-CVE-...`).
    pub id: String,
    /// Other ids of the same issue (CVE ids among them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The affected package, as its ecosystem names it.
    pub package: String,
    /// Its OSV ecosystem (`Go`, `npm`, `Debian:12`, ...).
    pub ecosystem: String,
    /// The version in the image.
    pub installed_version: String,
    /// The lowest version that fixes it on the installed version's branch, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_version: Option<String>,
    /// `CRITICAL`, `HIGH`, `MEDIUM`, `LOW`, `INFORMATIONAL` or `UNDEFINED`.
    pub severity: String,
}

/// Which vulnerability data a scan used.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VulnerabilityDataRef {
    /// A digest over the data's archives: the same data, the same version.
    pub version: String,
    /// The newest `modified` time of its records (RFC 3339): how current it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// An SBOM attached to the image.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SbomRef {
    /// The referrer manifest's digest.
    pub digest: String,
    /// Its `artifactType` (`application/vnd.cyclonedx+json`).
    pub artifact_type: String,
}

/// The annotation that asks for a scan now (on an ImageScan: that image; on a Repository: every
/// tagged image). Any new value is a new request; the value answered is kept in status.
pub const SCAN_ANNOTATION: &str = "berth.dev/scan";
/// The label on every ImageScan naming its Repository.
pub const SCAN_REPOSITORY_LABEL: &str = "berth.dev/repository";
