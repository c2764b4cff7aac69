//! `berth lifecycle preview`: evaluate a policy against a list of images offline, for people
//! (a table) and for scripts (JSON with a fixed shape).

use serde::{Deserialize, Serialize};

use super::{Decision, Image, evaluate, parse_policy_document};

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

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct KeptImage {
    pub digest: String,
    pub tags: Vec<String>,
}

/// The JSON output: `{"expired": [...], "kept": [...]}`, oldest push first in each list.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Preview {
    pub expired: Vec<ExpiredImage>,
    pub kept: Vec<KeptImage>,
}

/// Runs a preview from the two files' text. Errors are messages for stderr.
pub fn preview(policy_text: &str, images_text: &str, now_ms: i64) -> Result<Preview, String> {
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
    let decisions = evaluate(&policy, &images, now_ms);
    let mut order: Vec<usize> = (0..images.len()).collect();
    order.sort_by(|&a, &b| {
        images[a].pushed_at_ms.cmp(&images[b].pushed_at_ms).then(images[a].digest.cmp(&images[b].digest))
    });
    let mut out = Preview { expired: Vec::new(), kept: Vec::new() };
    for i in order {
        let image = &images[i];
        match decisions[i] {
            Decision::Expired { rule_priority } => {
                out.expired.push(ExpiredImage { digest: image.digest.clone(), tags: image.tags.clone(), rule_priority })
            }
            Decision::Kept => out.kept.push(KeptImage { digest: image.digest.clone(), tags: image.tags.clone() }),
        }
    }
    Ok(out)
}

/// The table for people.
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
        out.push_str(&format!("{:<8} {:<6} {:<20} {}\n", "keep", "-", short(&k.digest), k.tags.join(",")));
    }
    out.push_str(&format!("{} expired, {} kept\n", preview.expired.len(), preview.kept.len()));
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
        let p = preview(POLICY, &images, 0).unwrap();
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
        assert!(preview("{", "[]", 0).unwrap_err().starts_with("invalid policy"));
        assert!(preview(POLICY, "{}", 0).unwrap_err().starts_with("invalid images file"));
        let bad_time = format!(r#"[{{"digest":"{}","tags":[],"pushedAt":"yesterday"}}]"#, digest('a'));
        assert!(preview(POLICY, &bad_time, 0).unwrap_err().contains("pushedAt"));
        let bad_digest = r#"[{"digest":"md5:x","tags":[],"pushedAt":"2026-01-01T00:00:00Z"}]"#;
        assert!(preview(POLICY, bad_digest, 0).unwrap_err().contains("sha256"));
    }
}
