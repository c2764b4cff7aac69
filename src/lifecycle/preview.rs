//! `berth lifecycle preview`: evaluate a policy against a list of images offline, for people
//! (a table) and for scripts (JSON with a fixed shape). With workloads, the images they use are
//! kept as the controller keeps them (`protectInUse`), decided by the same [`in_use`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    Decision, Image, evaluate,
    in_use::{self, Reference},
    parse_policy_document,
};
use crate::rollout::policy;

/// One entry of the `--images` file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputImage {
    pub digest: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub pushed_at: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExpiredImage {
    pub digest: String,
    pub tags: Vec<String>,
    pub rule_priority: i64,
}

/// One entry of the `--workloads` file: a workload that uses the repository, and how.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputWorkload {
    /// `Kind namespace/name`, for the reasons.
    pub workload: String,
    /// Its `berth.dev/rollout` annotation.
    #[serde(default)]
    pub rollout: Option<String>,
    /// The tag it runs now (its version policy never selects below it); without `tag` and
    /// `digest` it runs `latest`, as an image reference that names neither.
    #[serde(default)]
    pub tag: Option<String>,
    /// The digest it runs now, when it runs one by digest.
    #[serde(default)]
    pub digest: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeptImage {
    pub digest: String,
    pub tags: Vec<String>,
    /// Why workloads use it (`--workloads`); left out when none does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub in_use: Vec<String>,
    /// The rule that expires it, were no workload using it (the table shows it).
    #[serde(skip)]
    pub protected_from: Option<i64>,
}

/// The JSON output: `{"expired": [...], "kept": [...]}`, oldest push first in each list.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Preview {
    pub expired: Vec<ExpiredImage>,
    pub kept: Vec<KeptImage>,
}

/// Reads the `--workloads` file's text (errors are messages for stderr).
pub fn workloads(text: &str) -> Result<Vec<InputWorkload>, String> {
    let input: Vec<InputWorkload> = serde_json::from_str(text).map_err(|e| {
        format!("invalid workloads file (a JSON array of {{\"workload\", \"rollout\", \"tag\", \"digest\"}}): {e}")
    })?;
    for (i, w) in input.iter().enumerate() {
        let bad = |why: String| format!("invalid workloads file: entry {i} ({:?}): {why}", w.workload);
        if w.workload.trim().is_empty() {
            return Err(bad("workload is empty (write \"Kind namespace/name\")".into()));
        }
        if let Some(r) = &w.rollout {
            policy::parse(r).map_err(|e| bad(format!("rollout {r:?}: {e}")))?;
        }
        if w.tag.as_deref().is_some_and(str::is_empty) {
            return Err(bad("empty tag".into()));
        }
        if let Some(d) = &w.digest
            && !d.starts_with("sha256:")
        {
            return Err(bad(format!("digest {d:?} is not sha256:<hex>")));
        }
        if w.rollout.is_none() && w.tag.is_none() && w.digest.is_none() {
            return Err(bad("nothing to keep: give its rollout, tag or digest".into()));
        }
    }
    Ok(input)
}

/// Runs a preview from the files' text; `workloads_text` keeps what they use. Errors are
/// messages for stderr.
pub fn preview(
    policy_text: &str,
    images_text: &str,
    workloads_text: Option<&str>,
    now_ms: i64,
) -> Result<Preview, String> {
    let policy = parse_policy_document(policy_text).map_err(|e| format!("invalid policy: {e}"))?;
    let input: Vec<InputImage> = serde_json::from_str(images_text)
        .map_err(|e| format!("invalid images file (a JSON array of {{\"digest\", \"tags\", \"pushedAt\"}}): {e}"))?;
    let mut images = Vec::with_capacity(input.len());
    for (i, image) in input.into_iter().enumerate() {
        let pushed: k8s_openapi::jiff::Timestamp = image.pushed_at.parse().map_err(|e| {
            format!("invalid images file: image {i} ({}): pushedAt {:?}: {e}", image.digest, image.pushed_at)
        })?;
        if !image.digest.starts_with("sha256:") {
            return Err(format!("invalid images file: image {i}: digest {:?} is not sha256:<hex>", image.digest));
        }
        images.push(Image { digest: image.digest, tags: image.tags, pushed_at_ms: pushed.as_millisecond() });
    }
    let uses = match workloads_text {
        Some(text) => used(&workloads(text)?, &images)?,
        None => in_use::InUse::new(),
    };
    let decisions = evaluate(&policy, &images, now_ms);
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.sort_by(|&a, &b| {
        images[a].pushed_at_ms.cmp(&images[b].pushed_at_ms).then(images[a].digest.cmp(&images[b].digest))
    });
    let mut out = Preview { expired: Vec::new(), kept: Vec::new() };
    for i in order {
        let image = &images[i];
        let why: Vec<String> = uses.get(&image.digest).into_iter().flatten().map(ToString::to_string).collect();
        let kept = |protected_from| KeptImage {
            digest: image.digest.clone(),
            tags: image.tags.clone(),
            in_use: why.clone(),
            protected_from,
        };
        match decisions[i] {
            Decision::Expired { rule_priority } if !why.is_empty() => out.kept.push(kept(Some(rule_priority))),
            Decision::Expired { rule_priority } => {
                out.expired.push(ExpiredImage { digest: image.digest.clone(), tags: image.tags.clone(), rule_priority })
            }
            Decision::Kept => out.kept.push(kept(None)),
        }
    }
    Ok(out)
}

/// Which images the workloads use, and why: [`in_use::in_use`] over the images' tags and push
/// times, as the controller decides it over the registry's tags and the ledger.
fn used(workloads: &[InputWorkload], images: &[Image]) -> Result<in_use::InUse, String> {
    let mut tags: BTreeMap<&str, &str> = BTreeMap::new();
    for image in images {
        for tag in &image.tags {
            if let Some(other) = tags.insert(tag.as_str(), image.digest.as_str())
                && other != image.digest
            {
                return Err(format!("invalid images file: tag {tag:?} is on two images, {other} and {}", image.digest));
            }
        }
    }
    let pushed: BTreeMap<String, i64> = images.iter().map(|i| (i.digest.clone(), i.pushed_at_ms)).collect();
    let references: Vec<Reference<'_>> = workloads
        .iter()
        .map(|w| Reference {
            workload: &w.workload,
            tag: w.tag.as_deref(),
            digest: w.digest.as_deref(),
            rollout: w.rollout.as_deref(),
            bad: &[],
        })
        .collect();
    Ok(in_use::in_use(&references, &tags, &pushed))
}

/// The table for people; with workloads, why each image they use is in use, under it.
pub fn table(preview: &Preview) -> String {
    let mut out = format!("{:<8} {:<6} {:<20} TAGS\n", "RESULT", "RULE", "DIGEST");
    let short = |d: &str| d.chars().take(19).collect::<String>();
    for e in &preview.expired {
        out.push_str(&format!(
            "{:<8} {:<6} {:<20} {}\n",
            "expire",
            e.rule_priority,
            short(&e.digest),
            e.tags.join(",")
        ));
    }
    for k in &preview.kept {
        let (result, rule) = match k.protected_from {
            Some(rule) => ("protect", rule.to_string()),
            None => ("keep", "-".to_string()),
        };
        out.push_str(&format!("{result:<8} {rule:<6} {:<20} {}\n", short(&k.digest), k.tags.join(",")));
        for why in &k.in_use {
            out.push_str(&format!("{:37}{why}\n", ""));
        }
    }
    out.push_str(&format!("{} expired, {} kept", preview.expired.len(), preview.kept.len()));
    match preview.kept.iter().filter(|k| k.protected_from.is_some()).count() {
        0 => out.push('\n'),
        n => out.push_str(&format!(" ({n} protected: a rule expires them, but workloads use them)\n")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn previews_in_the_documented_shape() {
        let images = format!(
            r#"[{{"digest":"{}","tags":["prod-2"],"pushedAt":"2026-01-02T00:00:00Z"}},
                {{"digest":"{}","tags":["prod-1"],"pushedAt":"2026-01-01T00:00:00Z"}},
                {{"digest":"{}","tags":[],"pushedAt":"2026-01-03T00:00:00Z"}}]"#,
            digest('b'),
            digest('a'),
            digest('c')
        );
        let p = preview(POLICY, &images, None, 0).unwrap();
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "expired": [{"digest": digest('a'), "tags": ["prod-1"], "rulePriority": 1}],
                "kept": [{"digest": digest('b'), "tags": ["prod-2"]}, {"digest": digest('c'), "tags": []}],
            })
        );
        let t = table(&p);
        assert!(t.contains("expire") && t.contains("1 expired, 2 kept"), "{t}");
    }

    #[test]
    fn bad_inputs_are_messages() {
        assert!(preview("{", "[]", None, 0).unwrap_err().starts_with("invalid policy"));
        assert!(preview(POLICY, "{}", None, 0).unwrap_err().starts_with("invalid images file"));
        let bad_time = format!(r#"[{{"digest":"{}","tags":[],"pushedAt":"yesterday"}}]"#, digest('a'));
        assert!(preview(POLICY, &bad_time, None, 0).unwrap_err().contains("pushedAt"));
        let bad_digest = r#"[{"digest":"md5:x","tags":[],"pushedAt":"2026-01-01T00:00:00Z"}]"#;
        assert!(preview(POLICY, bad_digest, None, 0).unwrap_err().contains("sha256"));
    }

    /// prod-1 to prod-4, pushed in that order: the policy keeps only prod-4.
    fn releases() -> String {
        let images: Vec<serde_json::Value> = (1..=4)
            .map(|n| {
                serde_json::json!({
                    "digest": digest(char::from_digit(n, 10).unwrap()),
                    "tags": [format!("prod-{n}")],
                    "pushedAt": format!("2026-01-0{n}T00:00:00Z"),
                })
            })
            .collect();
        serde_json::Value::from(images).to_string()
    }

    #[test]
    fn workloads_keep_what_they_run_and_what_their_policy_selects() {
        let workloads = serde_json::json!([
            // Runs prod-2; its policy selects prod-3, which the rule expires.
            {"workload": "Deployment prod/api", "rollout": "pattern:^prod-(?P<n>[0-3])$ numerical:n", "tag": "prod-2"},
            // `digest` follows its own tag and selects nothing more.
            {"workload": "CronJob prod/report", "rollout": "digest", "tag": "prod-4"},
            // By push time: prod-2 was pushed after prod-1.
            {"workload": "Deployment prod/web", "rollout": "newest-pushed:^prod-[12]$"},
            {"workload": "Pod prod/debug", "digest": digest('4')},
        ])
        .to_string();
        let p = preview(POLICY, &releases(), Some(&workloads), 0).unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({
                "expired": [{"digest": digest('1'), "tags": ["prod-1"], "rulePriority": 1}],
                "kept": [
                    {"digest": digest('2'), "tags": ["prod-2"], "inUse": [
                        "Deployment prod/api runs prod-2",
                        "Deployment prod/web: newest-pushed:^prod-[12]$ selects prod-2",
                    ]},
                    {"digest": digest('3'), "tags": ["prod-3"], "inUse": [
                        "Deployment prod/api: pattern:^prod-(?P<n>[0-3])$ numerical:n selects prod-3",
                    ]},
                    {"digest": digest('4'), "tags": ["prod-4"], "inUse": [
                        "CronJob prod/report runs prod-4",
                        "Pod prod/debug runs it by digest",
                    ]},
                ],
            })
        );
        let t = table(&p);
        assert!(t.contains("\nprotect  1      sha256:333333333333  prod-3\n"), "{t}");
        assert!(t.contains("\nkeep     -      sha256:444444444444  prod-4\n"), "{t}");
        assert!(t.contains("\n                                     CronJob prod/report runs prod-4\n"), "{t}");
        assert!(t.ends_with("\n1 expired, 3 kept (2 protected: a rule expires them, but workloads use them)\n"), "{t}");

        // Without workloads, or with none that use these images, the output is what it was.
        let plain = preview(POLICY, &releases(), None, 0).unwrap();
        let none = preview(POLICY, &releases(), Some("[]"), 0).unwrap();
        assert_eq!(plain, none);
        assert!(!serde_json::to_string(&plain).unwrap().contains("inUse"));
        assert!(table(&plain).ends_with("3 expired, 1 kept\n"));
    }

    #[test]
    fn bad_workloads_are_messages() {
        let err = |workloads: &str| preview(POLICY, &releases(), Some(workloads), 0).unwrap_err();
        assert!(err("{}").starts_with("invalid workloads file (a JSON array of"));
        assert!(err(r#"[{"workload": "Deployment a/b", "image": "x"}]"#).contains("unknown field `image`"));
        assert!(err(r#"[{"rollout": "digest"}]"#).contains("missing field `workload`"));
        assert_eq!(
            err(r#"[{"workload": "Deployment a/b", "rollout": "semver:~1.x.3"}]"#),
            format!(
                "invalid workloads file: entry 0 (\"Deployment a/b\"): rollout \"semver:~1.x.3\": {}",
                policy::parse("semver:~1.x.3").unwrap_err()
            )
        );
        assert!(err(r#"[{"workload": "Deployment a/b", "digest": "md5:x"}]"#).contains("sha256"));
        assert!(err(r#"[{"workload": "Deployment a/b", "tag": ""}]"#).contains("empty tag"));
        assert!(err(r#"[{"workload": " ", "tag": "prod-1"}]"#).contains("workload is empty"));
        assert!(err(r#"[{"workload": "Deployment a/b"}]"#).contains("give its rollout, tag or digest"));
        let twice = format!(
            r#"[{{"digest":"{}","tags":["x"],"pushedAt":"2026-01-01T00:00:00Z"}},{{"digest":"{}","tags":["x"],"pushedAt":"2026-01-01T00:00:00Z"}}]"#,
            digest('a'),
            digest('b')
        );
        let e = preview(POLICY, &twice, Some("[]"), 0).unwrap_err();
        assert!(e.contains("tag \"x\" is on two images"), "{e}");
    }
}
