//! The lifecycle evaluator alone: 10 rules against 10,000 to 200,000 images, to check the time
//! (target: 100,000 images under 100 ms) and that it grows linearly. `cargo bench --bench lifecycle`.

use std::time::{Duration, Instant};

use berth::lifecycle::{Image, evaluate, parse_ecr_json};

const DAY_MS: i64 = 86_400_000;
const NOW: i64 = 1_800_000_000_000;

fn policy() -> berth::lifecycle::Policy {
    let tagged = |p: u32, kind: &str, list: &str, count: &str| {
        format!(
            r#"{{"rulePriority":{p},"selection":{{"tagStatus":"tagged","{kind}":{list},{count}}},"action":{{"type":"expire"}}}}"#
        )
    };
    let keep = |n: u32| format!(r#""countType":"imageCountMoreThan","countNumber":{n}"#);
    let days = |n: u32| format!(r#""countType":"sinceImagePushed","countUnit":"days","countNumber":{n}"#);
    let rules = [
        tagged(1, "tagPatternList", r#"["v*.*.*"]"#, &keep(9999)),
        tagged(2, "tagPrefixList", r#"["release-"]"#, &keep(50)),
        tagged(3, "tagPrefixList", r#"["main-"]"#, &keep(100)),
        tagged(4, "tagPatternList", r#"["pr-*-build"]"#, &days(14)),
        tagged(5, "tagPrefixList", r#"["feature-","ci-"]"#, &keep(20)),
        tagged(6, "tagPatternList", r#"["*-rc*"]"#, &days(30)),
        tagged(7, "tagPrefixList", r#"["nightly"]"#, &days(7)),
        tagged(8, "tagPatternList", r#"["sha-*"]"#, &keep(500)),
        r#"{"rulePriority":9,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":3},"action":{"type":"expire"}}"#.to_string(),
        r#"{"rulePriority":10,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":5000},"action":{"type":"expire"}}"#.to_string(),
    ];
    parse_ecr_json(&format!(r#"{{"rules":[{}]}}"#, rules.join(","))).unwrap()
}

fn images(n: usize) -> Vec<Image> {
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let kinds =
        ["v1.{}.0", "release-{}", "main-{}", "pr-{}-build", "feature-{}", "ci-{}", "2.{}-rc1", "nightly-{}", "sha-{}"];
    (0..n)
        .map(|i| {
            let r = next();
            let tags = match r % 10 {
                9 => vec![],
                k => {
                    let mut t = vec![kinds[k as usize % kinds.len()].replace("{}", &i.to_string())];
                    if r % 7 == 0 {
                        t.push(format!("sha-{i:x}"));
                    }
                    t
                }
            };
            Image {
                digest: format!("sha256:{:064x}", r),
                tags,
                pushed_at_ms: NOW - (next() % (120 * DAY_MS as u64)) as i64,
            }
        })
        .collect()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with: cargo bench --bench lifecycle");
        return;
    }
    let policy = policy();
    let mut per_image = Vec::new();
    for n in [10_000, 50_000, 100_000, 200_000] {
        let imgs = images(n);
        let mut times: Vec<Duration> = (0..7)
            .map(|_| {
                let t = Instant::now();
                let d = evaluate(&policy, &imgs, NOW);
                let elapsed = t.elapsed();
                assert_eq!(d.len(), n);
                elapsed
            })
            .collect();
        times.sort();
        let median = times[times.len() / 2];
        let expired =
            evaluate(&policy, &imgs, NOW).iter().filter(|d| !matches!(d, berth::lifecycle::Decision::Kept)).count();
        per_image.push(median.as_secs_f64() * 1e9 / n as f64);
        println!(
            "lifecycle_eval: {n:>7} images x 10 rules: median {:>7.2} ms (min {:.2}, max {:.2}), {:.0} ns/image, {expired} expired",
            median.as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e9 / n as f64
        );
    }
    println!(
        "lifecycle_eval: ns/image from 10k to 200k: {:.0} -> {:.0} (linear if close; sorting adds a log factor)",
        per_image[0],
        per_image[per_image.len() - 1]
    );
}
