use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_800_000_000_000;

fn img(digest: &str, tags: &[&str], days_ago: i64) -> Image {
    Image {
        digest: digest.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        pushed_at_ms: NOW - days_ago * DAY_MS,
    }
}

fn policy(json: &str) -> Policy {
    parse_ecr_json(json).unwrap_or_else(|e| panic!("{e}\n{json}"))
}

fn expired(policy: &Policy, images: &[Image]) -> Vec<String> {
    let mut out: Vec<String> = evaluate(policy, images, NOW)
        .into_iter()
        .zip(images)
        .filter(|(d, _)| matches!(d, Decision::Expired { .. }))
        .map(|(_, i)| i.digest.clone())
        .collect();
    out.sort();
    out
}

fn keep(priority: i64, prefixes: &str, n: u64) -> String {
    format!(
        r#"{{"rulePriority":{priority},"selection":{{"tagStatus":"tagged","tagPrefixList":{prefixes},"countType":"imageCountMoreThan","countNumber":{n}}},"action":{{"type":"expire"}}}}"#
    )
}

fn rules(rules: &[String]) -> String {
    format!(r#"{{"rules":[{}]}}"#, rules.join(","))
}

// The worked examples of the ECR guide (shared/reference/ecr-lifecycle.md).

fn abc() -> Vec<Image> {
    vec![img("A", &["beta-1", "prod-1"], 10), img("B", &["beta-2", "prod-2"], 9), img("C", &["beta-3"], 8)]
}

#[test]
fn guide_prod_first_then_beta_expires_only_a() {
    let p = policy(&rules(&[keep(1, r#"["prod"]"#, 1), keep(2, r#"["beta"]"#, 1)]));
    assert_eq!(expired(&p, &abc()), ["A"]);
    assert_eq!(evaluate(&p, &abc(), NOW)[0], Decision::Expired { rule_priority: 1 });
}

#[test]
fn guide_beta_first_then_prod_expires_a_and_b() {
    let p = policy(&rules(&[keep(1, r#"["beta"]"#, 1), keep(2, r#"["prod"]"#, 1)]));
    assert_eq!(expired(&p, &abc()), ["A", "B"]);
}

#[test]
fn guide_several_prefixes_with_since_image_pushed_expire_only_c() {
    let images = vec![
        img("A", &["alpha-1"], 12),
        img("B", &["beta-1"], 11),
        img("C", &["alpha-2", "beta-2"], 10),
        img("D", &["alpha-3"], 4),
        img("E", &["beta-3"], 3),
        img("F", &["alpha-4", "beta-4"], 2),
    ];
    let p = policy(
        r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["alpha","beta"],"countType":"sinceImagePushed","countUnit":"days","countNumber":5},"action":{"type":"expire"}}]}"#,
    );
    assert_eq!(expired(&p, &images), ["C"]);
}

#[test]
fn guide_several_prefixes_with_image_count_expire_a_and_b() {
    let images = vec![
        img("A", &["alpha-1", "beta-1", "gamma-1"], 10),
        img("B", &["alpha-2", "beta-2"], 9),
        img("C", &["alpha-3", "beta-3", "gamma-2"], 8),
    ];
    let p = policy(&rules(&[keep(1, r#"["alpha","beta"]"#, 1)]));
    assert_eq!(expired(&p, &images), ["A", "B"]);
}

#[test]
fn patterns_are_anchored_and_anded() {
    let images = vec![img("A", &["prod-1"], 3), img("B", &["preprod-1"], 5), img("C", &["prod-2", "eu-x"], 4)];
    let p = policy(
        r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPatternList":["prod*"],"countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
    );
    assert_eq!(expired(&p, &images), ["C"], "A is the newest prod*; prod* does not match preprod-1");
    let p = policy(
        r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPatternList":["prod*","eu-*"],"countType":"sinceImagePushed","countUnit":"days","countNumber":1},"action":{"type":"expire"}}]}"#,
    );
    assert_eq!(expired(&p, &images), ["C"], "A and B are old enough but only C carries a tag for each pattern");
}

#[test]
fn a_protect_rule_shields_from_lower_rules_and_any_comes_last() {
    let images = vec![
        img("rel-old", &["v1.0.0"], 400),
        img("main-old", &["main-1"], 300),
        img("main-new", &["main-2"], 1),
        img("untagged-old", &[], 100),
        img("untagged-new", &[], 1),
    ];
    let p = policy(
        r#"{"rules":[
            {"rulePriority":1,"selection":{"tagStatus":"tagged","tagPatternList":["v*.*.*"],"countType":"imageCountMoreThan","countNumber":9999},"action":{"type":"expire"}},
            {"rulePriority":5,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}},
            {"rulePriority":9,"selection":{"tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":30},"action":{"type":"expire"}}]}"#,
    );
    assert_eq!(expired(&p, &images), ["main-old", "untagged-old"], "rel-old is claimed by rule 1");
    let decisions = evaluate(&p, &images, NOW);
    assert_eq!(decisions[1], Decision::Expired { rule_priority: 9 });
    assert_eq!(decisions[3], Decision::Expired { rule_priority: 5 });
}

#[test]
fn since_image_pushed_counts_whole_days_against_now() {
    let p = policy(
        r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":7},"action":{"type":"expire"}}]}"#,
    );
    let exactly = Image { digest: "exact".into(), tags: vec![], pushed_at_ms: NOW - 7 * DAY_MS };
    let just_over = Image { digest: "over".into(), tags: vec![], pushed_at_ms: NOW - 7 * DAY_MS - 1 };
    let under = Image { digest: "under".into(), tags: vec![], pushed_at_ms: NOW - 6 * DAY_MS };
    assert_eq!(expired(&p, &[exactly, just_over, under]), ["over"]);
}

#[test]
fn policy_documents_in_every_accepted_form_parse_to_the_same_policy() {
    let ecr = rules(&[keep(1, r#"["prod"]"#, 3)]);
    let from_json = parse_policy_document(&ecr).unwrap();
    let manifest = r#"
apiVersion: berth.dev/v1alpha1
kind: LifecyclePolicy
metadata: {name: p}
spec:
  dryRun: true
  rules:
    - rulePriority: 1
      selection: {tagStatus: tagged, tagPrefixList: [prod], countType: imageCountMoreThan, countNumber: 3}
      action: {type: expire}
"#;
    assert_eq!(parse_policy_document(manifest).unwrap(), from_json);
    let ecr_yaml = "rules:\n  - rulePriority: 1\n    selection: {tagStatus: tagged, tagPrefixList: [prod], countType: imageCountMoreThan, countNumber: 3}\n    action: {type: expire}\n";
    assert_eq!(parse_policy_document(ecr_yaml).unwrap(), from_json);
}

/// Every ECR validation rule, with the priority and field it names.
#[test]
fn every_validation_error_names_the_rule_and_the_field() {
    let sel = |s: &str| format!(r#"{{"rules":[{{"rulePriority":3,"selection":{s},"action":{{"type":"expire"}}}}]}}"#);
    let cases: Vec<(String, &str)> = vec![
        (rules(&[keep(1, r#"["a"]"#, 1), keep(1, r#"["b"]"#, 1)]), "rule 1: rulePriority 1 is used by more than one rule"),
        (
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},
                         {"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#
                .into(),
            "rule 1: selection.tagStatus \"any\" must be on the rule with the highest rulePriority",
        ),
        (sel(r#"{"tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1}"#), "rule 3: selection: tagStatus \"tagged\" needs exactly one"),
        (
            sel(r#"{"tagStatus":"tagged","tagPrefixList":["a"],"tagPatternList":["a*"],"countType":"imageCountMoreThan","countNumber":1}"#),
            "rule 3: selection: tagStatus \"tagged\" needs exactly one",
        ),
        (
            sel(r#"{"tagStatus":"untagged","tagPrefixList":["a"],"countType":"imageCountMoreThan","countNumber":1}"#),
            "rule 3: selection: tagPrefixList and tagPatternList are only allowed with tagStatus \"tagged\"",
        ),
        (sel(r#"{"tagStatus":"any","countType":"sinceImagePushed","countNumber":1}"#), "rule 3: selection.countUnit is required with countType sinceImagePushed"),
        (
            sel(r#"{"tagStatus":"any","countType":"imageCountMoreThan","countUnit":"days","countNumber":1}"#),
            "rule 3: selection.countUnit is not allowed with countType imageCountMoreThan",
        ),
        (sel(r#"{"tagStatus":"any","countType":"sinceImagePushed","countUnit":"hours","countNumber":1}"#), "rule 3: selection.countUnit must be \"days\""),
        (sel(r#"{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":0}"#), "rule 3: selection.countNumber must be a positive integer, got 0"),
        (sel(r#"{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1.5}"#), "rule 3: selection.countNumber must be a positive integer"),
        (sel(r#"{"tagStatus":"any","countType":"imageCountMoreThan"}"#), "rule 3: selection.countNumber is required"),
        (
            sel(r#"{"tagStatus":"tagged","tagPatternList":["a*b*c*d*e*"],"countType":"imageCountMoreThan","countNumber":1}"#),
            "rule 3: selection.tagPatternList: \"a*b*c*d*e*\" has more than 4 '*' wildcards",
        ),
        (
            r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},
                         {"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":1},"action":{"type":"expire"}}]}"#
                .into(),
            "rules [1, 2]: only one rule may select untagged images",
        ),
        (format!(r#"{{"rules":[],"pad":"{}"}}"#, "x".repeat(MAX_POLICY_TEXT)), "ECR allows at most 30720"),
        (sel(r#"{"tagStatus":"tagged","tagPrefixList":[],"countType":"imageCountMoreThan","countNumber":1}"#), "rule 3: selection.tagPrefixList must not be empty"),
        (sel(r#"{"tagStatus":"sometimes","countType":"imageCountMoreThan","countNumber":1}"#), "rule 3: selection.tagStatus must be"),
        (sel(r#"{"countType":"imageCountMoreThan","countNumber":1}"#), "rule 3: selection.tagStatus is required"),
        (sel(r#"{"tagStatus":"any","countType":"sinceImagePulled","countUnit":"days","countNumber":1}"#), "rule 3: selection.countType: \"sinceImagePulled\" belongs to ECR's archive tier"),
        (sel(r#"{"tagStatus":"any","storageClass":"archive","countType":"imageCountMoreThan","countNumber":1}"#), "rule 3: selection.storageClass: ECR's archive tier is not supported"),
        (
            r#"{"rules":[{"rulePriority":3,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"transition"}}]}"#.into(),
            "rule 3: action.type: \"transition\" (ECR's archive tier) is not supported",
        ),
        (r#"{"rules":[{"rulePriority":3,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1}}]}"#.into(), "rule 3: action is required"),
        (r#"{"rules":[{"selection":{},"action":{"type":"expire"}}]}"#.into(), "rules[0]: rulePriority is required"),
        (r#"{"rules":[{"rulePriority":0,"selection":{},"action":{"type":"expire"}}]}"#.into(), "rules[0]: rulePriority must be a positive integer"),
        (r#"{"rules":[]}"#.into(), "at least one rule"),
        ("{not json".into(), "not valid JSON"),
        (r#"{"rulez":[]}"#.into(), "unknown field \"rulez\""),
    ];
    for (text, expected) in cases {
        match parse_ecr_json(&text) {
            Ok(p) => panic!("accepted, expected {expected:?}: {p:?}\n{text}"),
            Err(e) => assert!(e.0.contains(expected), "error {:?} does not contain {expected:?}", e.0),
        }
    }
}

fn arb_images() -> impl Strategy<Value = Vec<Image>> {
    let tag = prop_oneof![
        (0..5u8).prop_map(|i| format!("prod-{i}")),
        (0..5u8).prop_map(|i| format!("beta-{i}")),
        (0..5u8).prop_map(|i| format!("v1.{i}.0")),
        (0..5u8).prop_map(|i| format!("dev{i}")),
    ];
    prop::collection::vec((prop::collection::vec(tag, 0..3), 0..60i64, 0..3_600_000i64), 0..40).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (mut tags, days, jitter))| {
                tags.sort();
                tags.dedup();
                Image { digest: format!("sha256:{i:04}"), tags, pushed_at_ms: NOW - days * DAY_MS - jitter }
            })
            .collect()
    })
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    let selection = prop_oneof![
        prop::sample::subsequence(vec!["prod", "beta", "v1", "dev"], 1..3)
            .prop_map(|p| Selection::TaggedPrefixes(p.into_iter().map(String::from).collect())),
        prop::sample::subsequence(vec!["prod-*", "*-1", "v1.*.0", "dev*"], 1..3)
            .prop_map(|p| Selection::TaggedPatterns(p.into_iter().map(String::from).collect())),
        Just(Selection::Untagged),
    ];
    let count = prop_oneof![(1..6u64).prop_map(Count::MoreThan), (0..40u64).prop_map(Count::SinceDays)];
    (prop::collection::vec((selection, count), 1..5), any::<bool>(), (1..6u64)).prop_map(|(rules, with_any, n)| {
        let mut seen_untagged = false;
        let mut out: Vec<Rule> = Vec::new();
        for (i, (selection, count)) in rules.into_iter().enumerate() {
            if selection == Selection::Untagged {
                if seen_untagged {
                    continue;
                }
                seen_untagged = true;
            }
            out.push(Rule { priority: (i as i64 + 1) * 10, description: None, selection, count });
        }
        if with_any {
            out.push(Rule { priority: 1000, description: None, selection: Selection::Any, count: Count::MoreThan(n) });
        }
        Policy { rules: out }
    })
}

proptest! {
    #[test]
    fn no_rule_expires_an_image_a_higher_rule_matched(policy in arb_policy(), images in arb_images()) {
        let decisions = evaluate(&policy, &images, NOW);
        for (image, decision) in images.iter().zip(&decisions) {
            if let Decision::Expired { rule_priority } = decision {
                let first = policy.rules.iter().find(|r| rule_matches(r, image)).map(|r| r.priority);
                prop_assert_eq!(first, Some(*rule_priority), "{:?} expired by a rule below the first that matched it", image);
            }
        }
    }

    #[test]
    fn image_count_keeps_the_newest_n(policy in arb_policy(), images in arb_images()) {
        let decisions = evaluate(&policy, &images, NOW);
        for rule in &policy.rules {
            let Count::MoreThan(n) = rule.count else { continue };
            let mut matching: Vec<usize> = (0..images.len()).filter(|&i| rule_matches(rule, &images[i])).collect();
            matching.sort_by(|&a, &b| images[b].pushed_at_ms.cmp(&images[a].pushed_at_ms).then(images[a].digest.cmp(&images[b].digest)));
            // The rule never expires one of its N newest matching images...
            for &i in matching.iter().take(n as usize) {
                prop_assert_ne!(decisions[i], Decision::Expired { rule_priority: rule.priority });
            }
            // ...so when no higher rule claimed any of them, at least min(N, matching) survive.
            let claimed_higher = |i: usize| policy.rules.iter().any(|r| r.priority < rule.priority && rule_matches(r, &images[i]));
            if !matching.iter().any(|&i| claimed_higher(i)) {
                let kept = matching.iter().filter(|&&i| decisions[i] == Decision::Kept).count();
                prop_assert!(kept >= matching.len().min(n as usize));
            }
        }
    }

    #[test]
    fn since_image_pushed_never_expires_a_younger_image(policy in arb_policy(), images in arb_images()) {
        let decisions = evaluate(&policy, &images, NOW);
        for (image, decision) in images.iter().zip(&decisions) {
            if let Decision::Expired { rule_priority } = decision {
                let rule = policy.rules.iter().find(|r| r.priority == *rule_priority).unwrap();
                if let Count::SinceDays(days) = rule.count {
                    prop_assert!(NOW - image.pushed_at_ms > days as i64 * DAY_MS);
                }
            }
        }
    }

    #[test]
    fn the_result_does_not_depend_on_input_order(policy in arb_policy(), images in arb_images(), seed in any::<u64>()) {
        let decide = |imgs: &[Image]| {
            let mut v: Vec<(String, Decision)> = imgs.iter().cloned().map(|i| i.digest).zip(evaluate(&policy, imgs, NOW)).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let mut shuffled = images.clone();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(decide(&images), decide(&shuffled));
    }

    #[test]
    fn the_parser_never_panics(text in ".{0,200}") {
        let _ = parse_ecr_json(&text);
        let _ = parse_policy_document(&text);
    }
}
