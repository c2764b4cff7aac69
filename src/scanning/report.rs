//! What a scan tells people and tools: the JSON of `berth scan` (a fixed shape scripts rely on),
//! a table, and a CycloneDX SBOM (the document berth attaches to an image as a referrer). Pure.

use serde::Serialize;
use serde_json::{Value, json};

use super::{Finding, Inventory, Package, Severity};

/// `{"packages": [...], "vulnerabilities": [...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub packages: Vec<ReportPackage>,
    pub vulnerabilities: Vec<ReportVulnerability>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReportPackage {
    pub name: String,
    pub version: String,
    pub ecosystem: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportVulnerability {
    pub id: String,
    pub package: String,
    pub installed_version: String,
    pub fixed_version: Option<String>,
    pub severity: Severity,
}

impl Report {
    /// Packages in inventory order (sorted), findings as matching sorted them.
    pub fn new(inventory: &Inventory, findings: &[Finding]) -> Report {
        let mut packages: Vec<ReportPackage> = inventory
            .packages
            .iter()
            .map(|p| ReportPackage { name: p.name.clone(), version: p.version.clone(), ecosystem: p.ecosystem.clone() })
            .collect();
        packages.dedup();
        let vulnerabilities = findings
            .iter()
            .map(|f| ReportVulnerability {
                id: f.id.clone(),
                package: f.package.clone(),
                installed_version: f.installed_version.clone(),
                fixed_version: f.fixed_version.clone(),
                severity: f.severity,
            })
            .collect();
        Report { packages, vulnerabilities }
    }

    /// Findings per severity, most severe first, as ECR's `findingSeverityCounts`.
    pub fn severity_counts(&self) -> Vec<(Severity, usize)> {
        let mut counts: std::collections::BTreeMap<Severity, usize> = Default::default();
        for v in &self.vulnerabilities {
            *counts.entry(v.severity).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}

/// The table for people: the findings, then a summary line.
pub fn table(report: &Report) -> String {
    let mut out = format!("{:<26} {:<14} {:<40} {:<28} FIXED\n", "ID", "SEVERITY", "PACKAGE", "INSTALLED");
    for v in &report.vulnerabilities {
        out.push_str(&format!(
            "{:<26} {:<14} {:<40} {:<28} {}\n",
            v.id,
            v.severity.as_str(),
            v.package,
            v.installed_version,
            v.fixed_version.as_deref().unwrap_or("-")
        ));
    }
    let counts: Vec<String> =
        report.severity_counts().iter().map(|(s, n)| format!("{n} {}", s.as_str().to_lowercase())).collect();
    out.push_str(&format!(
        "{} packages, {} vulnerabilities{}\n",
        report.packages.len(),
        report.vulnerabilities.len(),
        if counts.is_empty() { String::new() } else { format!(" ({})", counts.join(", ")) }
    ));
    out
}

/// The package URL (purl) of a package, as SBOM tools and OSV name packages.
pub fn purl(p: &Package, os: Option<&super::Os>) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' | b'+' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let base = p.ecosystem.split(':').next().unwrap_or(&p.ecosystem);
    let distro = os.map(|o| match &o.version_id {
        Some(v) => format!("{}-{v}", o.id),
        None => o.id.clone(),
    });
    let qualifiers = |mut q: Vec<String>| {
        if let Some(d) = &distro {
            q.push(format!("distro={}", enc(d)));
        }
        if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) }
    };
    let source = |q: &mut Vec<String>| {
        if let Some(s) = &p.source {
            q.push(format!("upstream={}", enc(&format!("{}@{}", s.name, s.version))));
        }
    };
    match base {
        "Go" => {
            let version = if p.version.starts_with('v') || p.version == "(devel)" {
                p.version.clone()
            } else {
                format!("v{}", p.version)
            };
            let path: Vec<String> = p.name.split('/').map(enc).collect();
            format!("pkg:golang/{}@{}", path.join("/"), enc(&version))
        }
        "PyPI" => format!("pkg:pypi/{}@{}", enc(&super::osv::normalize("PyPI", &p.name)), enc(&p.version)),
        "npm" => match p.name.strip_prefix('@').and_then(|n| n.split_once('/')) {
            Some((scope, name)) => format!("pkg:npm/%40{}/{}@{}", enc(scope), enc(name), enc(&p.version)),
            None => format!("pkg:npm/{}@{}", enc(&p.name), enc(&p.version)),
        },
        "crates.io" => format!("pkg:cargo/{}@{}", enc(&p.name), enc(&p.version)),
        "Debian" | "Ubuntu" => {
            let mut q = Vec::new();
            source(&mut q);
            let vendor = if base == "Debian" { "debian" } else { "ubuntu" };
            format!("pkg:deb/{vendor}/{}@{}{}", enc(&p.name), enc(&p.version), qualifiers(q))
        }
        "Alpine" => format!("pkg:apk/alpine/{}@{}{}", enc(&p.name), enc(&p.version), qualifiers(Vec::new())),
        _ => {
            let mut q = Vec::new();
            source(&mut q);
            let vendor = os.map(|o| o.id.as_str()).unwrap_or("unknown");
            format!("pkg:rpm/{}/{}@{}{}", enc(vendor), enc(&p.name), enc(&p.version), qualifiers(q))
        }
    }
}

/// A CycloneDX 1.5 JSON SBOM of the inventory, with the findings as its `vulnerabilities`.
/// `subject` names the image (`repo@sha256:...`); `timestamp` is RFC 3339, or empty for none
/// (the SBOM berth attaches to an image: its inventory alone). Deterministic for the
/// same inputs (serial number derived from them), so the same image gets the same document.
pub fn cyclonedx(inventory: &Inventory, findings: &[Finding], subject: &str, timestamp: &str) -> Value {
    let os = inventory.os.as_ref();
    let mut components: Vec<Value> = Vec::new();
    let mut refs = std::collections::BTreeMap::new();
    for p in &inventory.packages {
        let purl = purl(p, os);
        if refs.contains_key(&(p.name.clone(), p.version.clone(), p.ecosystem.clone())) {
            continue;
        }
        refs.insert((p.name.clone(), p.version.clone(), p.ecosystem.clone()), purl.clone());
        components.push(json!({
            "type": "library",
            "bom-ref": purl,
            "name": p.name,
            "version": p.version,
            "purl": purl,
            "properties": [{"name": "berth:location", "value": p.location}, {"name": "berth:ecosystem", "value": p.ecosystem}],
        }));
    }
    if let Some(o) = os {
        components.push(json!({
            "type": "operating-system",
            "bom-ref": format!("os:{}", o.id),
            "name": o.id,
            "version": o.version_id,
            "description": o.pretty_name,
        }));
    }
    let vulnerabilities: Vec<Value> = findings
        .iter()
        .map(|f| {
            let affects: Vec<Value> = refs
                .iter()
                .filter(|((name, version, eco), _)| {
                    *version == f.installed_version && *eco == f.ecosystem && (*name == f.package)
                })
                .map(|(_, r)| json!({"ref": r}))
                .collect();
            let mut v = json!({
                "id": f.id,
                "ratings": [{"severity": f.severity.as_str().to_lowercase(), "method": "other"}],
                "affects": affects,
            });
            if !f.aliases.is_empty() {
                v["references"] =
                    Value::Array(f.aliases.iter().map(|a| json!({"id": a, "source": {"name": "OSV"}})).collect());
            }
            if let Some(fixed) = &f.fixed_version {
                v["recommendation"] = json!(format!("upgrade {} to {fixed}", f.package));
            }
            if let Some(s) = &f.summary {
                v["description"] = json!(s);
            }
            v
        })
        .collect();
    let serial = {
        let digest = crate::registry::sha256_digest(format!("{subject}\n{timestamp}").as_bytes());
        let h = digest.trim_start_matches("sha256:");
        format!("urn:uuid:{}-{}-4{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
    };
    let mut bom = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {"components": [{"type": "application", "name": "berth", "version": env!("CARGO_PKG_VERSION")}]},
            "component": {"type": "container", "bom-ref": subject, "name": subject},
        },
        "components": components,
        "vulnerabilities": vulnerabilities,
    });
    // Without a time the document depends on the image alone: the same image, the same bytes.
    if timestamp.is_empty() {
        bom["metadata"].as_object_mut().map(|m| m.remove("timestamp"));
    }
    if findings.is_empty() {
        bom.as_object_mut().map(|m| m.remove("vulnerabilities"));
    }
    bom
}
