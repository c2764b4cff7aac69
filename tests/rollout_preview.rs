//! `berth rollout preview`: the contract scripts depend on, through the binary. No cluster and no
//! registry: the tags come from `examples/rollout-preview-tags.json`.

use std::{path::Path, process::Command};

use serde_json::{Value, json};

const TAGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rollout-preview-tags.json");

fn preview_with(policy: &str, tags: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["rollout", "preview", "--policy", policy, "--tags"])
        .arg(tags)
        .args(extra)
        .output()
        .unwrap()
}

fn describe(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a preview that must succeed and returns its JSON.
fn preview(policy: &str, extra: &[&str]) -> Value {
    let out = preview_with(policy, Path::new(TAGS), extra);
    assert!(out.status.success(), "{policy}: {}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{policy}: {e}: {}", describe(&out)))
}

fn digest_of(tag: &str) -> Value {
    let tags: Value = serde_json::from_str(&std::fs::read_to_string(TAGS).unwrap()).unwrap();
    tags.as_array().unwrap().iter().find(|t| t["tag"] == tag).unwrap()["digest"].clone()
}

#[test]
fn preview_prints_the_documented_json() {
    assert_eq!(
        preview("semver:~1.4", &[]),
        json!({"tag": "v1.4.10", "digest": digest_of("v1.4.10"), "reason": "v1.4.10 is the highest of 3 tags matching ~1.4"})
    );
    assert_eq!(preview("semver:^1.0.0", &[])["tag"], "v1.5.0", "no pre-release without one in the range");
    assert_eq!(preview("semver:>=1.5.0-0 <2.0.0-0", &[])["tag"], "v1.5.0");
    assert_eq!(preview("semver:>=2.0.0-rc.0", &[])["tag"], "v2.0.0-rc.1");
    assert_eq!(
        preview("pattern:^main-[0-9a-f]+-(?P<n>[0-9]+)$ numerical:n", &[]),
        json!({
            "tag": "main-9b1e0d4-120",
            "digest": digest_of("main-9b1e0d4-120"),
            "reason": "main-9b1e0d4-120 is the highest number (120) of 3 tags matching ^main-[0-9a-f]+-(?P<n>[0-9]+)$",
        })
    );
    assert_eq!(preview("pattern:^nightly- alphabetical desc", &[])["tag"], "nightly-20260512");
    assert_eq!(
        preview("newest-pushed:^nightly-", &[]),
        json!({
            "tag": "nightly-20260513",
            "digest": digest_of("nightly-20260513"),
            "reason": "nightly-20260513 is the newest pushed (2026-05-13T02:00:00Z) of 2 tags matching ^nightly-",
        })
    );
    assert_eq!(preview("digest", &["--current", "latest"])["digest"], digest_of("latest"));
    assert_eq!(
        preview("semver:>=3", &[]),
        json!({"tag": null, "digest": null, "reason": "no tag of 13 matches >=3"}),
        "nothing to choose is not an error"
    );
}

#[test]
fn preview_never_goes_below_the_current_tag() {
    // v1.6.0 runs (deleted from the registry since): the policy keeps it.
    let kept = preview("semver:^1.0.0", &["--current", "v1.6.0"]);
    assert_eq!(kept["tag"], "v1.6.0");
    assert_eq!(kept["digest"], Value::Null);
    assert!(kept["reason"].as_str().unwrap().contains("never moves a workload back"), "{kept}");
    // Below it, the policy moves forward.
    assert_eq!(preview("semver:^1.0.0", &["--current", "v1.4.2"])["tag"], "v1.5.0");
    // Outside the policy (the range changed): the policy's choice stands.
    assert_eq!(preview("semver:~1.4", &["--current", "v1.5.0"])["tag"], "v1.4.10");
}

#[test]
fn preview_prints_a_table_for_people() {
    let out = preview_with("semver:~1.4", Path::new(TAGS), &["--current", "v1.4.2", "--output", "table"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("selected") && lines[1].contains("v1.4.10"), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("running") && l.contains("v1.4.2")), "{text}");
    assert!(!text.contains("v1.5.0") && !text.contains("latest"), "only the tags the policy considers: {text}");
    assert_eq!(lines.last().unwrap(), &"v1.4.10 is the highest of 3 tags matching ~1.4");
}

#[test]
fn preview_of_an_invalid_policy_or_file_exits_non_zero_with_the_reason() {
    let failing = |policy: &str, tags: &Path| {
        let out = preview_with(policy, tags, &[]);
        assert!(!out.status.success(), "{policy}: {}", describe(&out));
        assert!(out.stdout.is_empty(), "{}", describe(&out));
        String::from_utf8(out.stderr).unwrap()
    };
    let stderr = failing("semver:~1.x.3", Path::new(TAGS));
    assert!(stderr.starts_with("berth rollout preview: invalid policy: semver range \"~1.x.3\""), "{stderr}");
    assert!(stderr.contains("a wildcard must be the last component"), "{stderr}");
    assert!(failing("latest", Path::new(TAGS)).contains("unknown rollout policy \"latest\""));
    assert!(failing("pattern:^main-(?P<n>[0-9]+) numerical:m", Path::new(TAGS)).contains("no group named \"m\""));

    let dir = tempfile::tempdir().unwrap();
    assert!(failing("semver:~1.4", &dir.path().join("missing.json")).contains("reading"));
    let no_times = dir.path().join("tags.json");
    std::fs::write(&no_times, r#"[{"tag": "nightly-1", "digest": null}]"#).unwrap();
    assert!(failing("newest-pushed:^nightly-", &no_times).contains("newest-pushed needs pushedAt"));
    std::fs::write(&no_times, "not json").unwrap();
    assert!(failing("semver:~1.4", &no_times).contains("invalid tags file"));
}
