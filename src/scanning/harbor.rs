//! The Harbor Pluggable Scanner API v1.2, as a client: what berth sends an adapter
//! (harbor-scanner-trivy, say) and how it reads the vulnerability report back. Pure: the
//! controller does the HTTP.
//!
//! `POST /api/v1/scan` with a ScanRequest answers `202 {"id"}`; `GET
//! /api/v1/scan/{id}/report` with the report's media type in `Accept` answers `302` while the
//! scan runs (no `Refresh-After` from harbor-scanner-trivy: the client polls on its own timer),
//! then `200` with the report; `404` when the adapter does not know the id (it forgot it).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Finding, Severity};

/// The vulnerability report berth asks for.
pub const VULNERABILITY_REPORT: &str = "application/vnd.security.vulnerability.report; version=1.1";
/// The largest report berth reads.
pub const MAX_REPORT_BYTES: usize = 32 << 20;

/// The ScanRequest for `repository@digest` (a manifest of `mime_type`) in the registry at
/// `registry_url`, which the adapter pulls with `authorization` (an `Authorization` header value,
/// or empty for none).
pub fn scan_request(registry_url: &str, authorization: &str, repository: &str, digest: &str, mime_type: &str) -> Value {
    json!({
        "registry": {"url": registry_url, "authorization": authorization},
        "artifact": {"repository": repository, "digest": digest, "mime_type": mime_type},
        "enabled_capabilities": [{"type": "vulnerability", "produces_mime_types": [VULNERABILITY_REPORT]}],
    })
}

/// The id a `202` names, checked: it goes into a URL path.
pub fn scan_id(body: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Accepted {
        id: String,
    }
    let accepted: Accepted = serde_json::from_slice(body)
        .map_err(|e| format!("the adapter's answer to a scan request is not {{\"id\"}}: {e}"))?;
    let ok = !accepted.id.is_empty()
        && accepted.id.len() <= 128
        && accepted.id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(accepted.id)
    } else {
        Err(format!("the adapter answered a scan id berth will not use: {:?}", accepted.id))
    }
}

/// What a report says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `Trivy 0.54.1 (Aqua Security)`.
    pub scanner: String,
    /// The digest the report is about, as the adapter says.
    pub digest: String,
    pub findings: Vec<Finding>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    scanner: RawScanner,
    #[serde(default)]
    artifact: RawArtifact,
    #[serde(default)]
    vulnerabilities: Option<Vec<RawVulnerability>>,
}

#[derive(Deserialize, Default)]
struct RawScanner {
    #[serde(default)]
    name: String,
    #[serde(default)]
    vendor: String,
    #[serde(default)]
    version: String,
}

#[derive(Deserialize, Default)]
struct RawArtifact {
    #[serde(default)]
    digest: String,
}

#[derive(Deserialize)]
struct RawVulnerability {
    id: String,
    #[serde(default)]
    package: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    fix_version: Option<String>,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    description: Option<String>,
}

/// Reads a vulnerability report (v1.1). Its severities are Harbor's words (`Critical`, `High`,
/// `Medium`, `Low`, `Negligible`, `None`, `Unknown`), mapped onto ECR's.
pub fn parse_report(body: &[u8]) -> Result<Report, String> {
    let raw: Raw =
        serde_json::from_slice(body).map_err(|e| format!("the adapter's report is not a vulnerability report: {e}"))?;
    let scanner = match (raw.scanner.name.trim(), raw.scanner.version.trim(), raw.scanner.vendor.trim()) {
        ("", _, _) => "an unnamed scanner".to_string(),
        (name, "", "") => name.to_string(),
        (name, version, "") => format!("{name} {version}"),
        (name, version, vendor) => format!("{name} {version} ({vendor})").replace("  ", " "),
    };
    let findings = raw
        .vulnerabilities
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !v.id.trim().is_empty())
        .map(|v| Finding {
            id: v.id,
            aliases: Vec::new(),
            package: v.package,
            ecosystem: String::new(),
            installed_version: v.version,
            fixed_version: v.fix_version.filter(|f| !f.trim().is_empty()),
            severity: severity(&v.severity),
            summary: v.description.map(|d| d.lines().next().unwrap_or_default().chars().take(200).collect()),
        })
        .collect();
    Ok(Report { scanner, digest: raw.artifact.digest, findings })
}

/// Harbor's severity words as ECR's levels.
pub fn severity(word: &str) -> Severity {
    match word.trim().to_ascii_lowercase().as_str() {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        "low" => Severity::Low,
        "negligible" | "none" => Severity::Informational,
        _ => Severity::Undefined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report harbor-scanner-trivy v0.31.4 (trivy 0.54.1) wrote for the npm fixture image.
    const TRIVY_REPORT: &[u8] = include_bytes!("testdata/harbor-trivy-report.json");

    #[test]
    fn a_real_trivy_report_reads_as_findings() {
        let report = parse_report(TRIVY_REPORT).unwrap();
        assert_eq!(report.scanner, "Trivy 0.54.1 (Aqua Security)");
        assert!(report.digest.starts_with("sha256:"));
        let ids: Vec<(&str, &str, Severity)> =
            report.findings.iter().map(|f| (f.id.as_str(), f.package.as_str(), f.severity)).collect();
        assert_eq!(
            ids,
            [
                ("CVE-2020-8203", "lodash", Severity::High),
                ("CVE-2021-23337", "lodash", Severity::High),
                ("CVE-2020-28500", "lodash", Severity::Medium),
                ("CVE-2021-44906", "minimist", Severity::Critical),
                ("CVE-2020-7598", "minimist", Severity::Medium),
            ]
        );
        let minimist = &report.findings[3];
        assert_eq!(minimist.installed_version, "1.2.0");
        assert_eq!(minimist.fixed_version.as_deref(), Some("1.2.6, 0.2.4"), "as the adapter says it");
        assert!(minimist.summary.as_ref().is_some_and(|s| s.len() <= 200));
    }

    #[test]
    fn severities_map_onto_ecr_levels() {
        for (word, level) in [
            ("Critical", Severity::Critical),
            ("HIGH", Severity::High),
            ("Medium", Severity::Medium),
            ("Low", Severity::Low),
            ("Negligible", Severity::Informational),
            ("None", Severity::Informational),
            ("Unknown", Severity::Undefined),
            ("", Severity::Undefined),
        ] {
            assert_eq!(severity(word), level, "{word}");
        }
    }

    #[test]
    fn bad_answers_are_errors_not_findings() {
        assert!(parse_report(b"<html>").is_err());
        let empty = parse_report(br#"{"scanner":{"name":"X"},"vulnerabilities":null}"#).unwrap();
        assert!(empty.findings.is_empty());
        assert_eq!(empty.scanner, "X");
        assert_eq!(scan_id(br#"{"id":"3e138c7408862f999afe8a6c"}"#).unwrap(), "3e138c7408862f999afe8a6c");
        for bad in [&br#"{"id":"../../x"}"#[..], br#"{"id":""}"#, br#"{}"#, b"nope"] {
            assert!(scan_id(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_request_names_the_image_and_asks_for_the_vulnerability_report() {
        let r = scan_request(
            "http://127.0.0.1:5000",
            "Bearer t",
            "team/app",
            "sha256:ab",
            "application/vnd.oci.image.manifest.v1+json",
        );
        assert_eq!(r["registry"]["authorization"], "Bearer t");
        assert_eq!(r["artifact"]["repository"], "team/app");
        assert_eq!(r["enabled_capabilities"][0]["produces_mime_types"][0], VULNERABILITY_REPORT);
    }
}
