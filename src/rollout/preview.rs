//! `berth rollout preview`: which tag a version policy chooses from a list of tags, offline, with
//! the code the controller uses ([`super::policy::select`]). JSON with a fixed shape for scripts,
//! a table for people.

use serde::{Deserialize, Serialize};

use super::policy::{self, Candidate, Policy};

/// One entry of the `--tags` file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputTag {
    pub tag: String,
    #[serde(default)]
    pub digest: Option<String>,
    /// RFC 3339; needed by `newest-pushed` only.
    #[serde(default)]
    pub pushed_at: Option<String>,
}

/// The JSON output: `{"tag": "..." | null, "digest": "..." | null, "reason": "..."}`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Preview {
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub reason: String,
}

/// What a preview computed: the selection, and for the table the tags the policy considers in
/// its order (the chosen one first when it is not among them).
pub struct Outcome {
    pub preview: Preview,
    pub ranked: Vec<Candidate>,
    pub current: Option<String>,
}

/// Reads the `--tags` file's text into candidates; errors are messages for stderr.
pub fn candidates(tags_text: &str, policy: &Policy) -> Result<Vec<Candidate>, String> {
    let input: Vec<InputTag> = serde_json::from_str(tags_text)
        .map_err(|e| format!("invalid tags file (a JSON array of {{\"tag\", \"digest\", \"pushedAt\"}}): {e}"))?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(input.len());
    for (i, t) in input.into_iter().enumerate() {
        let bad = |why: String| format!("invalid tags file: entry {i} ({:?}): {why}", t.tag);
        if t.tag.is_empty() {
            return Err(bad("empty tag".into()));
        }
        if !seen.insert(t.tag.clone()) {
            return Err(bad("the tag is listed twice".into()));
        }
        if let Some(d) = &t.digest
            && !crate::registry::is_sha256_digest(d)
        {
            return Err(bad(format!("digest {d:?} is not sha256:<64 lower-case hex>")));
        }
        let pushed_at = match &t.pushed_at {
            Some(p) => Some(
                p.parse::<k8s_openapi::jiff::Timestamp>()
                    .map_err(|e| bad(format!("pushedAt {p:?} is not an RFC 3339 time: {e}")))?
                    .as_millisecond(),
            ),
            None if matches!(policy, Policy::NewestPushed(_)) => {
                return Err(bad("newest-pushed needs pushedAt on every tag".into()));
            }
            None => None,
        };
        out.push(Candidate { tag: t.tag, digest: t.digest, pushed_at_ms: pushed_at });
    }
    Ok(out)
}

/// Runs a preview from the policy text and the tags file's text.
pub fn preview(policy_text: &str, tags_text: &str, current: Option<&str>) -> Result<Outcome, String> {
    let policy = policy::parse(policy_text).map_err(|e| format!("invalid policy: {e}"))?;
    let candidates = candidates(tags_text, &policy)?;
    let selection = policy::select(&policy, &candidates, current);
    let mut ranked: Vec<Candidate> = policy::ranked(&policy, &candidates).into_iter().cloned().collect();
    // `digest` ranks nothing, and a running tag kept is not always a candidate: the chosen tag
    // is still worth the first row.
    if let Some(tag) = &selection.tag
        && !ranked.iter().any(|c| &c.tag == tag)
    {
        let chosen = candidates.iter().find(|c| &c.tag == tag).cloned();
        ranked.insert(
            0,
            chosen.unwrap_or(Candidate { tag: tag.clone(), digest: selection.digest.clone(), pushed_at_ms: None }),
        );
    }
    Ok(Outcome {
        preview: Preview { tag: selection.tag, digest: selection.digest, reason: selection.reason },
        ranked,
        current: current.map(String::from),
    })
}

/// The table for people: the tags the policy considers, newest first in its order, the chosen
/// and the running one marked, then the reason.
pub fn table(outcome: &Outcome) -> String {
    let p = &outcome.preview;
    let short = |d: &Option<String>| d.as_deref().map_or("-".to_string(), |d| d.chars().take(19).collect());
    let mut out = format!("{:<10} {:<40} {:<20} PUSHED\n", "", "TAG", "DIGEST");
    for c in &outcome.ranked {
        let mark = if p.tag.as_deref() == Some(c.tag.as_str()) {
            "selected"
        } else if outcome.current.as_deref() == Some(c.tag.as_str()) {
            "running"
        } else {
            ""
        };
        let pushed = c.pushed_at_ms.map(policy::rfc3339).unwrap_or_else(|| "-".into());
        out.push_str(&format!("{mark:<10} {:<40} {:<20} {pushed}\n", c.tag, short(&c.digest)));
    }
    out.push_str(&format!("{}\n", p.reason));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u32) -> String {
        format!("sha256:{n:064x}")
    }

    #[test]
    fn previews_in_the_documented_shape() {
        let tags = serde_json::json!([
            {"tag": "v1.4.2", "digest": digest(1), "pushedAt": "2026-01-01T00:00:00Z"},
            {"tag": "v1.4.10", "digest": digest(2)},
            {"tag": "v1.5.0", "digest": digest(3)},
            {"tag": "latest", "digest": digest(3)},
        ])
        .to_string();
        let out = preview("semver:~1.4", &tags, Some("v1.4.2")).unwrap();
        assert_eq!(
            serde_json::to_value(&out.preview).unwrap(),
            serde_json::json!({"tag": "v1.4.10", "digest": digest(2), "reason": "v1.4.10 is the highest of 2 tags matching ~1.4"})
        );
        let t = table(&out);
        assert!(t.contains("selected") && t.contains("running") && t.contains("v1.4.10"), "{t}");
        assert!(!t.contains("v1.5.0") && !t.contains("latest"), "only what the policy considers: {t}");

        let none = preview("semver:>=2", &tags, None).unwrap();
        assert_eq!(
            serde_json::to_value(&none.preview).unwrap(),
            serde_json::json!({"tag": null, "digest": null, "reason": "no tag of 4 matches >=2"})
        );
        let digest_policy = preview("digest", &tags, Some("latest")).unwrap();
        assert_eq!(digest_policy.preview.tag.as_deref(), Some("latest"));
        assert!(table(&digest_policy).contains("latest"));
    }

    #[test]
    fn bad_inputs_are_messages() {
        let err = |policy: &str, tags: &str| match preview(policy, tags, None) {
            Ok(_) => panic!("{policy} with {tags} must fail"),
            Err(e) => e,
        };
        assert!(err("semver:~1.x.3", "[]").starts_with("invalid policy: semver range"));
        assert!(err("semver:~1.4", "{}").starts_with("invalid tags file"));
        assert!(err("semver:~1.4", r#"[{"tag": "a", "tags": []}]"#).contains("unknown field"));
        assert!(err("semver:~1.4", r#"[{"tag": "a", "digest": "md5:x"}]"#).contains("sha256"));
        assert!(err("semver:~1.4", r#"[{"tag": "a", "pushedAt": "yesterday"}]"#).contains("pushedAt"));
        assert!(err("semver:~1.4", r#"[{"tag": "a"}, {"tag": "a"}]"#).contains("twice"));
        assert!(err("newest-pushed:.", r#"[{"tag": "a"}]"#).contains("newest-pushed needs pushedAt"));
    }
}
