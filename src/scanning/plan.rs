//! What the operator decides about scans, as pure functions: how a repository is scanned (the
//! Registry's rules and `scanOnPush`), which ImageScans a repository should have, whether an
//! ImageScan needs work, and what its status says.

use std::collections::{BTreeMap, BTreeSet};

use kube::{Resource, ResourceExt, api::ObjectMeta};

use crate::{
    api::{
        ImageScan, ImageScanSpec, ImageScanStatus, LocalObjectReference, Repository, SCAN_ANNOTATION,
        SCAN_REPOSITORY_LABEL, ScanFinding, ScanFrequency, ScanPhase, ScanSummary, ScanningConfiguration,
        VulnerabilityDataRef,
    },
    repository::tags::Filter,
};

use super::{Finding, Inventory, Severity};

/// Findings listed in an ImageScan's status; the rest are counted.
pub const MAX_LISTED_FINDINGS: usize = 100;
/// Skipped files listed in status.
const MAX_LISTED_SKIPPED: usize = 10;

/// How the repository at `path` is scanned: the most frequent of the rules that match it, and
/// at least `OnPush` when the Repository says `scanOnPush`. `None`: not scanned (a manual
/// request still scans).
pub fn frequency(config: Option<&ScanningConfiguration>, path: &str, scan_on_push: bool) -> Option<ScanFrequency> {
    let from_rules = config
        .into_iter()
        .flat_map(|c| &c.rules)
        .filter(|rule| rule.repository_filters.iter().any(|f| Filter::new(f).matches(path)))
        .map(|rule| rule.scan_frequency)
        .max();
    let on_push = scan_on_push.then_some(ScanFrequency::OnPush);
    from_rules.max(on_push)
}

/// Whether scans attach an SBOM (default yes).
pub fn sbom_enabled(config: Option<&ScanningConfiguration>) -> bool {
    config.and_then(|c| c.sbom).unwrap_or(true)
}

/// The ImageScan of `digest` in Repository `repository`: `<repository>-<first 16 hex digits>`,
/// cut so the name stays a valid object name.
pub fn scan_name(repository: &str, digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let short = &hex[..hex.len().min(16)];
    let mut base = repository.to_string();
    base.truncate(253 - 1 - short.len());
    format!("{}-{short}", base.trim_end_matches(['-', '.']))
}

/// A new ImageScan for `digest` of `repo`, owned by the Repository (it goes with it) and
/// labelled with its name.
pub fn new_image_scan(repo: &Repository, digest: &str) -> ImageScan {
    let name = repo.name_any();
    ImageScan {
        metadata: ObjectMeta {
            name: Some(scan_name(&name, digest)),
            namespace: repo.namespace(),
            labels: Some(BTreeMap::from([(SCAN_REPOSITORY_LABEL.to_string(), label_value(&name))])),
            owner_references: repo.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: ImageScanSpec { repository_ref: LocalObjectReference { name }, digest: digest.to_string() },
        status: None,
    }
}

/// A label value holds at most 63 characters; longer Repository names are cut (the spec's
/// `repositoryRef` is what counts, the label only narrows a list).
pub fn label_value(name: &str) -> String {
    let mut v = name.to_string();
    v.truncate(63);
    v.trim_end_matches(['-', '.', '_']).to_string()
}

/// Which ImageScans a repository's reconcile creates and deletes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanSync {
    /// Digests to create an ImageScan for.
    pub create: Vec<String>,
    /// ImageScans (by name) whose image is gone from the registry.
    pub delete: Vec<String>,
}

/// Scanned repositories get an ImageScan for each tagged image that has none. An ImageScan
/// goes when its image is neither tagged nor known to exist (`present`: the ledger's digests,
/// which berth forgets only when the registry says the image is gone), whatever the frequency.
/// A referrer berth attached (tag `sha256-<hex>`) is an artifact, not an image: never scanned.
pub fn sync_scans(
    frequency: Option<ScanFrequency>,
    tagged: &BTreeMap<String, String>,
    present: &BTreeSet<String>,
    existing: &[(String, String)],
) -> ScanSync {
    let have: BTreeSet<&str> = existing.iter().map(|(_, d)| d.as_str()).collect();
    let images: BTreeSet<&str> =
        tagged.iter().filter(|(tag, _)| !is_referrer_tag(tag)).map(|(_, digest)| digest.as_str()).collect();
    let create = match frequency {
        Some(ScanFrequency::OnPush | ScanFrequency::Continuous) => {
            images.iter().filter(|d| !have.contains(**d)).map(|d| d.to_string()).collect()
        }
        Some(ScanFrequency::Manual) | None => Vec::new(),
    };
    let tagged_digests: BTreeSet<&str> = tagged.values().map(String::as_str).collect();
    let delete = existing
        .iter()
        .filter(|(_, d)| !tagged_digests.contains(d.as_str()) && !present.contains(d))
        .map(|(name, _)| name.clone())
        .collect();
    ScanSync { create, delete }
}

pub use crate::repository::tags::is_referrer_tag;

/// What an ImageScan needs now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Up to date.
    Nothing,
    /// Read the image and match it (no scan yet, a manual request, or the last one failed).
    Scan,
    /// Match the image's known packages with newer data (`Continuous`).
    Rematch,
}

/// The reason of a scan given up after [`MAX_ATTEMPTS`] interrupted attempts.
pub const INTERRUPTED: &str = "ScanInterrupted";
/// Attempts at one scan that may be interrupted (berth stopped, or was killed: out of memory,
/// out of disk) before it is given up: the image that kills berth is not read again and again.
pub const MAX_ATTEMPTS: i64 = 3;

/// The vulnerability data at hand, as a scan's work depends on it.
#[derive(Clone, Copy, Debug)]
pub struct DataAt<'a> {
    pub version: &'a str,
    /// The ecosystems it has records for.
    pub ecosystems: &'a BTreeSet<String>,
}

/// Decides an ImageScan's work from its status, the annotation's request, the repository's
/// frequency and the data at hand (`None`: none loaded).
pub fn work(scan: &ImageScan, frequency: Option<ScanFrequency>, data: Option<DataAt<'_>>) -> Work {
    let status = scan.status.clone().unwrap_or_default();
    let requested = scan.annotations().get(SCAN_ANNOTATION);
    if requested.is_some() && requested != status.requested.as_ref() {
        return Work::Scan;
    }
    match status.phase {
        ScanPhase::Pending | ScanPhase::InProgress => Work::Scan,
        // Interrupted too often: only a new request tries again.
        ScanPhase::Failed if status.reason.as_deref() == Some(INTERRUPTED) => Work::Nothing,
        // A failure is tried again (with backoff by the controller): the data may arrive, the
        // registry come back.
        ScanPhase::Failed => Work::Scan,
        ScanPhase::UnsupportedImage => Work::Nothing,
        ScanPhase::Complete => {
            let Some(data) = data else { return Work::Nothing };
            let scanned_with = status.vulnerability_data.as_ref().map(|d| d.version.as_str());
            let newer = scanned_with != Some(data.version);
            // Packages that could not be checked are checked as soon as the data covers them,
            // whatever the frequency: the scan was never complete for them.
            let now_covered = status.ecosystems_without_data.iter().any(|e| data.ecosystems.contains(e));
            if newer && (frequency == Some(ScanFrequency::Continuous) || now_covered) {
                Work::Rematch
            } else {
                Work::Nothing
            }
        }
    }
}

/// The status of a completed scan: severity counts, the most severe findings (at most
/// [`MAX_LISTED_FINDINGS`]) and the count of the rest.
pub fn complete_status(
    inventory: &Inventory,
    findings: &[Finding],
    scanned_manifest: &str,
    data: VulnerabilityDataRef,
    skipped: &BTreeMap<String, &'static str>,
) -> ImageScanStatus {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for f in findings {
        *counts.entry(f.severity.as_str().to_string()).or_default() += 1;
    }
    let mut sorted: Vec<&Finding> = findings.iter().collect();
    sorted.sort_by(|a, b| a.severity.cmp(&b.severity).then_with(|| a.package.cmp(&b.package)).then(a.id.cmp(&b.id)));
    let listed: Vec<ScanFinding> = sorted
        .iter()
        .take(MAX_LISTED_FINDINGS)
        .map(|f| ScanFinding {
            id: f.id.clone(),
            aliases: f.aliases.clone(),
            package: f.package.clone(),
            ecosystem: f.ecosystem.clone(),
            installed_version: f.installed_version.clone(),
            fixed_version: f.fixed_version.clone(),
            severity: f.severity.as_str().to_string(),
        })
        .collect();
    let not_listed = findings.len().saturating_sub(listed.len());
    let packages: BTreeSet<(&str, &str, &str)> =
        inventory.packages.iter().map(|p| (p.name.as_str(), p.version.as_str(), p.ecosystem.as_str())).collect();
    ImageScanStatus {
        phase: ScanPhase::Complete,
        scanned_manifest: Some(scanned_manifest.to_string()),
        os: inventory.os.as_ref().map(|o| match &o.version_id {
            Some(v) => format!("{} {v}", o.id),
            None => o.id.clone(),
        }),
        package_count: Some(packages.len() as i64),
        finding_severity_counts: counts,
        findings: listed,
        findings_not_listed: (not_listed > 0).then_some(not_listed as i64),
        vulnerability_data: Some(data),
        skipped: skipped.iter().take(MAX_LISTED_SKIPPED).map(|(path, cap)| format!("{path} (over {cap})")).collect(),
        ..Default::default()
    }
}

/// The ecosystems (without release) of the inventory's packages that `covered` (the data's
/// ecosystems) lacks, sorted.
pub fn not_covered<'a>(inventory: &Inventory, covered: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let covered: BTreeSet<&str> = covered.into_iter().map(String::as_str).collect();
    let found: BTreeSet<&str> = inventory.packages.iter().map(|p| super::osv::base_ecosystem(&p.ecosystem)).collect();
    found.into_iter().filter(|e| !covered.contains(e)).map(String::from).collect()
}

/// The Repository's summary of its images' scans (an ImageScan goes with its image, so these
/// are the images the registry still has), and the Repository's scan request last passed on.
pub fn summary<'a>(
    frequency: Option<ScanFrequency>,
    requested: Option<String>,
    scans: impl IntoIterator<Item = &'a ImageScan>,
) -> Option<ScanSummary> {
    let mut out = ScanSummary { frequency: frequency.map(|f| format!("{f:?}")), requested, ..Default::default() };
    let mut any = false;
    for scan in scans {
        any = true;
        let status = scan.status.clone().unwrap_or_default();
        match status.phase {
            ScanPhase::Complete => {
                out.complete += 1;
                for (severity, n) in &status.finding_severity_counts {
                    *out.finding_severity_counts.entry(severity.clone()).or_default() += n;
                }
            }
            ScanPhase::Pending | ScanPhase::InProgress => out.pending += 1,
            ScanPhase::Failed | ScanPhase::UnsupportedImage => out.failed += 1,
        }
    }
    (any || frequency.is_some() || out.requested.is_some()).then_some(out)
}

/// Parses a severity threshold as written in an annotation (`High`, `critical`, `None`):
/// `None` allows no finding at all. Case-insensitive.
pub fn parse_threshold(value: &str) -> Result<Option<Severity>, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "none" => Ok(None),
        "critical" => Ok(Some(Severity::Critical)),
        "high" => Ok(Some(Severity::High)),
        "medium" => Ok(Some(Severity::Medium)),
        "low" => Ok(Some(Severity::Low)),
        "informational" => Ok(Some(Severity::Informational)),
        "undefined" => Ok(Some(Severity::Undefined)),
        _ => Err(format!(
            "{value:?} is not a severity: use None, Undefined, Informational, Low, Medium, High or Critical"
        )),
    }
}

/// Severities above `max`, ranked as ECR ranks them: CRITICAL > HIGH > MEDIUM > LOW >
/// INFORMATIONAL > UNDEFINED. With `max` None, every severity is above.
pub fn above(severity: Severity, max: Option<Severity>) -> bool {
    match max {
        None => true,
        // `Severity` orders most severe first.
        Some(max) => severity < max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ScanningRule;

    fn rules(rules: &[(ScanFrequency, &[&str])]) -> ScanningConfiguration {
        ScanningConfiguration {
            rules: rules
                .iter()
                .map(|(f, filters)| ScanningRule {
                    scan_frequency: *f,
                    repository_filters: filters.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
            sbom: None,
            scanner: None,
        }
    }

    #[test]
    fn the_most_frequent_matching_rule_wins_and_scan_on_push_is_a_floor() {
        let config = rules(&[
            (ScanFrequency::OnPush, &["*"]),
            (ScanFrequency::Continuous, &["team-a/*", "prod"]),
            (ScanFrequency::Manual, &["team-b/*"]),
        ]);
        assert_eq!(frequency(Some(&config), "team-a/api", false), Some(ScanFrequency::Continuous));
        assert_eq!(frequency(Some(&config), "prod", false), Some(ScanFrequency::Continuous));
        assert_eq!(frequency(Some(&config), "production", false), Some(ScanFrequency::OnPush));
        assert_eq!(frequency(Some(&config), "team-b/x", false), Some(ScanFrequency::OnPush), "the * rule also matches");
        let manual = rules(&[(ScanFrequency::Manual, &["team-b/*"])]);
        assert_eq!(frequency(Some(&manual), "team-b/x", false), Some(ScanFrequency::Manual));
        assert_eq!(frequency(Some(&manual), "team-b/x", true), Some(ScanFrequency::OnPush));
        assert_eq!(frequency(Some(&manual), "team-c/x", false), None);
        assert_eq!(frequency(None, "x", true), Some(ScanFrequency::OnPush));
        assert_eq!(frequency(None, "x", false), None);
    }

    #[test]
    fn scan_names_are_valid_and_distinct_per_digest() {
        let d1 = format!("sha256:{}", "ab".repeat(32));
        let d2 = format!("sha256:{}", "cd".repeat(32));
        assert_eq!(scan_name("api", &d1), "api-abababababababab");
        assert_ne!(scan_name("api", &d1), scan_name("api", &d2));
        let long = "a".repeat(253);
        let name = scan_name(&long, &d1);
        assert!(name.len() <= 253, "{}", name.len());
        assert!(name.ends_with("-abababababababab"));
        assert_eq!(label_value(&format!("{}-b", "a".repeat(62))), "a".repeat(62), "cut, and no trailing dash");
    }

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn scans_are_created_for_tagged_images_and_removed_with_their_image() {
        let tagged = BTreeMap::from([
            ("v1".to_string(), digest('a')),
            ("v2".to_string(), digest('b')),
            ("latest".to_string(), digest('b')),
            (format!("sha256-{}", "a".repeat(64)), digest('c')),
        ]);
        let present = BTreeSet::from([digest('d')]);
        let existing =
            vec![("r-a".to_string(), digest('a')), ("r-d".to_string(), digest('d')), ("r-e".to_string(), digest('e'))];
        let sync = sync_scans(Some(ScanFrequency::OnPush), &tagged, &present, &existing);
        assert_eq!(sync.create, vec![digest('b')], "the referrer's index is not scanned");
        assert_eq!(sync.delete, vec!["r-e".to_string()], "an untagged image berth still knows keeps its scan");
        let manual = sync_scans(Some(ScanFrequency::Manual), &tagged, &present, &existing);
        assert!(manual.create.is_empty());
        assert_eq!(manual.delete, vec!["r-e".to_string()]);
        assert!(sync_scans(None, &tagged, &present, &existing).create.is_empty());
    }

    fn scan(phase: ScanPhase, version: Option<&str>, requested: Option<&str>, annotation: Option<&str>) -> ImageScan {
        let mut s = ImageScan::new(
            "r-a",
            ImageScanSpec { repository_ref: LocalObjectReference { name: "r".into() }, digest: digest('a') },
        );
        if let Some(a) = annotation {
            s.metadata.annotations = Some(BTreeMap::from([(SCAN_ANNOTATION.to_string(), a.to_string())]));
        }
        s.status = Some(ImageScanStatus {
            phase,
            vulnerability_data: version.map(|v| VulnerabilityDataRef { version: v.into(), updated_at: None }),
            requested: requested.map(String::from),
            ..Default::default()
        });
        s
    }

    #[test]
    fn work_follows_phase_requests_and_continuous_data() {
        use ScanFrequency::*;
        let ecosystems = BTreeSet::from(["Go".to_string(), "npm".to_string()]);
        let at = |version| Some(DataAt { version, ecosystems: &ecosystems });
        assert_eq!(work(&scan(ScanPhase::Pending, None, None, None), Some(OnPush), at("v1")), Work::Scan);
        assert_eq!(work(&scan(ScanPhase::Failed, None, None, None), Some(OnPush), None), Work::Scan);
        assert_eq!(work(&scan(ScanPhase::UnsupportedImage, None, None, None), Some(OnPush), None), Work::Nothing);
        let done = scan(ScanPhase::Complete, Some("v1"), None, None);
        assert_eq!(work(&done, Some(OnPush), at("v2")), Work::Nothing, "OnPush scans once");
        assert_eq!(work(&done, Some(Continuous), at("v2")), Work::Rematch);
        assert_eq!(work(&done, Some(Continuous), at("v1")), Work::Nothing);
        assert_eq!(work(&done, Some(Continuous), None), Work::Nothing, "no data: keep the findings");
        let asked = scan(ScanPhase::Complete, Some("v1"), Some("t1"), Some("t2"));
        assert_eq!(work(&asked, Some(Manual), at("v1")), Work::Scan);
        let answered = scan(ScanPhase::Complete, Some("v1"), Some("t2"), Some("t2"));
        assert_eq!(work(&answered, Some(Manual), at("v2")), Work::Nothing);
        let unsupported_asked = scan(ScanPhase::UnsupportedImage, None, None, Some("t1"));
        assert_eq!(work(&unsupported_asked, None, None), Work::Scan);
    }

    #[test]
    fn unchecked_packages_are_matched_once_the_data_covers_them_whatever_the_frequency() {
        let mut partial = scan(ScanPhase::Complete, Some("v1"), None, None);
        partial.status.as_mut().unwrap().ecosystems_without_data = vec!["Go".into()];
        let without_go = BTreeSet::from(["npm".to_string()]);
        let with_go = BTreeSet::from(["Go".to_string(), "npm".to_string()]);
        let at = |version, ecosystems| Some(DataAt { version, ecosystems });
        assert_eq!(work(&partial, Some(ScanFrequency::OnPush), at("v2", &without_go)), Work::Nothing);
        assert_eq!(work(&partial, Some(ScanFrequency::OnPush), at("v3", &with_go)), Work::Rematch);
        assert_eq!(work(&partial, None, at("v3", &with_go)), Work::Rematch, "a manual scan too");
    }

    #[test]
    fn a_scan_interrupted_too_often_waits_for_a_new_request() {
        let mut interrupted = scan(ScanPhase::Failed, None, Some("t1"), Some("t1"));
        interrupted.status.as_mut().unwrap().reason = Some(INTERRUPTED.into());
        assert_eq!(work(&interrupted, Some(ScanFrequency::Continuous), None), Work::Nothing);
        let asked = scan(ScanPhase::Failed, None, Some("t1"), Some("t2"));
        let mut asked = asked;
        asked.status.as_mut().unwrap().reason = Some(INTERRUPTED.into());
        assert_eq!(work(&asked, None, None), Work::Scan);
    }

    fn finding(id: &str, package: &str, severity: Severity) -> Finding {
        Finding {
            id: id.into(),
            aliases: vec![],
            package: package.into(),
            ecosystem: "Go".into(),
            installed_version: "1.0.0".into(),
            fixed_version: Some("1.0.1".into()),
            severity,
            summary: None,
        }
    }

    #[test]
    fn status_lists_the_most_severe_findings_and_counts_the_rest() {
        let mut findings: Vec<Finding> = (0..150).map(|i| finding(&format!("GO-{i:03}"), "p", Severity::Low)).collect();
        findings.push(finding("GO-CRIT", "z", Severity::Critical));
        findings.push(finding("GO-UND", "a", Severity::Undefined));
        let data = VulnerabilityDataRef { version: "v1".into(), updated_at: None };
        let status = complete_status(&Inventory::default(), &findings, &digest('a'), data, &BTreeMap::new());
        assert_eq!(status.findings.len(), MAX_LISTED_FINDINGS);
        assert_eq!(status.findings_not_listed, Some(52));
        assert_eq!(status.findings[0].id, "GO-CRIT");
        assert_eq!(status.finding_severity_counts.get("LOW"), Some(&150));
        assert_eq!(status.finding_severity_counts.get("CRITICAL"), Some(&1));
        assert_eq!(status.finding_severity_counts.get("UNDEFINED"), Some(&1));
        assert!(!status.findings.iter().any(|f| f.id == "GO-UND"), "UNDEFINED ranks last");
    }

    #[test]
    fn summary_counts_each_image_once_by_outcome() {
        let mut a = scan(ScanPhase::Complete, Some("v1"), None, None);
        a.status.as_mut().unwrap().finding_severity_counts = BTreeMap::from([("HIGH".into(), 2)]);
        let mut b = a.clone();
        b.spec.digest = digest('b');
        let mut c = scan(ScanPhase::Failed, None, None, None);
        c.spec.digest = digest('c');
        let d = scan(ScanPhase::InProgress, None, None, None);
        let s = summary(Some(ScanFrequency::OnPush), None, [&a, &b, &c, &d]).unwrap();
        assert_eq!((s.complete, s.pending, s.failed), (2, 1, 1));
        assert_eq!(s.finding_severity_counts.get("HIGH"), Some(&4));
        assert_eq!(s.frequency.as_deref(), Some("OnPush"));
        assert!(summary(None, None, []).is_none());
        assert_eq!(summary(None, Some("now".into()), []).unwrap().requested.as_deref(), Some("now"));
    }

    #[test]
    fn ecosystems_without_data_are_named() {
        let package = |name: &str, ecosystem: &str| crate::scanning::Package {
            name: name.into(),
            version: "1".into(),
            ecosystem: ecosystem.into(),
            source: None,
            location: "/x".into(),
        };
        let inventory = Inventory {
            os: None,
            packages: vec![package("libc6", "Debian:12"), package("golang.org/x/net", "Go"), package("a", "Go")],
            unreadable: vec![],
        };
        assert_eq!(not_covered(&inventory, &["Debian".to_string()]), vec!["Go".to_string()]);
        assert!(not_covered(&inventory, &["Debian".to_string(), "Go".to_string()]).is_empty());
        assert_eq!(not_covered(&inventory, &[]), vec!["Debian".to_string(), "Go".to_string()]);
    }

    #[test]
    fn thresholds_parse_and_rank_as_ecr() {
        assert_eq!(parse_threshold("High"), Ok(Some(Severity::High)));
        assert_eq!(parse_threshold(" CRITICAL "), Ok(Some(Severity::Critical)));
        assert_eq!(parse_threshold("none"), Ok(None));
        assert!(parse_threshold("severe").is_err());
        assert!(above(Severity::Critical, Some(Severity::High)));
        assert!(!above(Severity::High, Some(Severity::High)));
        assert!(!above(Severity::Undefined, Some(Severity::Low)));
        assert!(above(Severity::Undefined, None));
    }
}
