use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use Action::{Delete, Pull, Push};

const ROLE: &str = "arn:aws:iam::123456789012:role/deployer";
const ACCOUNT: &str = "210987654321";

fn grant(namespace: &str, policy: &str, principal: &str, actions: &[Action]) -> AwsGrant {
    AwsGrant {
        namespace: namespace.into(),
        policy: policy.into(),
        principal: principal.into(),
        actions: actions.to_vec(),
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn set(merged: Merged) -> Value {
    match merged {
        Merged::Set(text) => parse(&text),
        other => panic!("expected Set, got {other:?}"),
    }
}

fn foreign(sid: &str) -> Value {
    json!({"Sid": sid, "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:root"}, "Action": "ecr:*"})
}

fn policy(statements: Vec<Value>) -> String {
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

// ---- statements ----

#[test]
fn sids_are_berth_sixteen_hex_digits_of_the_policy_and_the_action() {
    assert_eq!(sid("team-a", "readers", Pull), "Berthe999e1fa474333b2Pull");
    assert_eq!(sid("team-a", "readers", Push), "Berthe999e1fa474333b2Push");
    assert_eq!(sid("team-a", "readers", Delete), "Berthe999e1fa474333b2Delete");
    assert_ne!(sid("team-a", "readers", Pull), sid("team-a", "writers", Pull));
    assert_ne!(sid("team-a", "b-c", Pull), sid("team-a-b", "c", Pull));
    for s in [sid("x", "y", Pull), sid(&"n".repeat(63), &"p".repeat(253), Delete)] {
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()), "{s}");
        assert!(s.len() <= 5 + 16 + 6);
    }
}

#[test]
fn one_statement_per_policy_and_action_with_its_principals_sorted() {
    let grants = [
        grant("team-a", "readers", ROLE, &[Pull, Push]),
        grant("team-a", "readers", ACCOUNT, &[Pull]),
        grant("team-a", "gc", ROLE, &[Delete]),
    ];
    let statements = berth_statements(&grants);
    let readers = |a| sid("team-a", "readers", a);
    let gc = sid("team-a", "gc", Delete);
    let mut want = vec![
        json!({
            "Sid": readers(Pull), "Effect": "Allow", "Principal": {"AWS": [ACCOUNT, ROLE]},
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
        }),
        json!({
            "Sid": readers(Push), "Effect": "Allow", "Principal": {"AWS": [ROLE]},
            "Action": ["ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload",
                       "ecr:BatchCheckLayerAvailability"],
        }),
        json!({
            "Sid": gc, "Effect": "Allow", "Principal": {"AWS": [ROLE]},
            "Action": ["ecr:BatchDeleteImage", "ecr:DescribeImages", "ecr:ListImages"],
        }),
    ];
    want.sort_by(|a, b| a["Sid"].as_str().cmp(&b["Sid"].as_str()));
    assert_eq!(statements, want);
    // The order of the grants does not matter.
    let mut reversed = grants.to_vec();
    reversed.reverse();
    assert_eq!(berth_statements(&reversed), statements);
    assert!(berth_statements(&[]).is_empty());
}

// ---- merging ----

#[test]
fn a_repository_without_a_policy_gets_berths_statements() {
    let ours = berth_statements(&[grant("team-a", "readers", ROLE, &[Pull])]);
    let written = set(merge(None, &ours).unwrap());
    assert_eq!(written, json!({"Version": "2012-10-17", "Statement": ours}));
    assert_eq!(merge(None, &[]).unwrap(), Merged::Unchanged, "nothing to write, nothing to delete");
}

#[test]
fn other_statements_are_kept_in_their_order_and_berths_replaced() {
    let old = berth_statements(&[grant("team-a", "old", ROLE, &[Pull]), grant("team-a", "readers", ACCOUNT, &[Pull])]);
    let existing = json!({
        "Version": "2008-10-17",
        "Id": "kept",
        "Statement": [foreign("Zeta"), old[0].clone(), foreign("Alpha"), old[1].clone(), json!({"Effect": "Deny"})],
    })
    .to_string();
    let new = berth_statements(&[grant("team-a", "readers", ROLE, &[Pull, Delete])]);
    let written = set(merge(Some(&existing), &new).unwrap());
    let mut statements = vec![foreign("Zeta"), foreign("Alpha"), json!({"Effect": "Deny"})];
    statements.extend(new.clone());
    assert_eq!(written, json!({"Version": "2008-10-17", "Id": "kept", "Statement": statements}));
    assert_eq!(
        berth_sids(Some(&written.to_string())),
        [sid("team-a", "readers", Delete), sid("team-a", "readers", Pull)]
    );
}

#[test]
fn the_same_policy_written_otherwise_is_unchanged() {
    let ours =
        berth_statements(&[grant("team-a", "readers", ROLE, &[Pull]), grant("team-a", "readers", ACCOUNT, &[Pull])]);
    let text = match merge(Some(&policy(vec![foreign("Mine")])), &ours).unwrap() {
        Merged::Set(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(merge(Some(&text), &ours).unwrap(), Merged::Unchanged);
    // Pretty-printed with other key order, as ECR answers.
    let pretty = serde_json::to_string_pretty(&parse(&text)).unwrap();
    assert_eq!(merge(Some(&pretty), &ours).unwrap(), Merged::Unchanged);
    // The account id stored as its root ARN, lists in another order, a lone action as a string.
    let mut stored = parse(&text);
    let statement = &mut stored["Statement"][1];
    statement["Principal"]["AWS"] = json!([ROLE, "arn:aws:iam::210987654321:root"]);
    statement["Action"] = json!(["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]);
    assert_eq!(merge(Some(&stored.to_string()), &ours).unwrap(), Merged::Unchanged);
    // A lone principal as a string.
    let single = berth_statements(&[grant("team-a", "readers", ROLE, &[Pull])]);
    let mut stored = json!({"Version": "2012-10-17", "Statement": single.clone()});
    stored["Statement"][0]["Principal"]["AWS"] = json!(ROLE);
    assert_eq!(merge(Some(&stored.to_string()), &single).unwrap(), Merged::Unchanged);
    // But another principal is a change.
    stored["Statement"][0]["Principal"]["AWS"] = json!("arn:aws:iam::210987654321:role/other");
    assert!(matches!(merge(Some(&stored.to_string()), &single).unwrap(), Merged::Set(_)));
    // And so is an account's user in place of the account.
    stored["Statement"][0]["Principal"]["AWS"] = json!("arn:aws:iam::123456789012:user/root");
    assert!(matches!(merge(Some(&stored.to_string()), &single).unwrap(), Merged::Set(_)));
}

#[test]
fn a_policy_of_only_berths_statements_is_deleted_when_none_remain() {
    let ours = berth_statements(&[grant("team-a", "readers", ROLE, &[Pull, Push])]);
    assert_eq!(merge(Some(&policy(ours.clone())), &[]).unwrap(), Merged::Delete);
    // With somebody else's statement, only berth's go.
    let mixed = policy(vec![ours[0].clone(), foreign("Theirs"), ours[1].clone()]);
    assert_eq!(set(merge(Some(&mixed), &[]).unwrap()), parse(&policy(vec![foreign("Theirs")])));
}

#[test]
fn a_policy_berth_has_nothing_to_do_with_is_left_alone() {
    // No Version, a lone statement, an empty list: not berth's to tidy up.
    for text in [
        json!({"Statement": [foreign("A")]}).to_string(),
        json!({"Version": "2012-10-17", "Statement": foreign("A")}).to_string(),
        json!({"Version": "2012-10-17", "Statement": []}).to_string(),
    ] {
        assert_eq!(merge(Some(&text), &[]).unwrap(), Merged::Unchanged, "{text}");
        assert!(berth_sids(Some(&text)).is_empty());
    }
}

#[test]
fn a_lone_statement_object_is_read_as_a_list_of_one() {
    let text = json!({"Version": "2012-10-17", "Statement": foreign("A")}).to_string();
    let ours = berth_statements(&[grant("team-a", "readers", ROLE, &[Pull])]);
    let written = set(merge(Some(&text), &ours).unwrap());
    assert_eq!(written["Statement"], json!([foreign("A"), ours[0].clone()]));
    assert_eq!(merge(Some(&written.to_string()), &ours).unwrap(), Merged::Unchanged);
}

#[test]
fn a_policy_berth_cannot_read_is_an_error_never_overwritten() {
    let ours = berth_statements(&[grant("team-a", "readers", ROLE, &[Pull])]);
    for (text, why) in [
        ("not json", "is not JSON"),
        ("", "is not JSON"),
        ("[]", "is not a JSON object"),
        ("\"policy\"", "is not a JSON object"),
        ("{\"Version\": \"2012-10-17\"}", "has no Statement list"),
        ("{\"Statement\": 3}", "Statement is not a list"),
        ("{\"Statement\": \"Allow\"}", "Statement is not a list"),
    ] {
        for berth in [&ours[..], &[]] {
            let e = merge(Some(text), berth).unwrap_err();
            assert!(e.contains(why) && e.contains("cannot read"), "{text:?}: {e}");
        }
        assert!(berth_sids(Some(text)).is_empty());
    }
}

#[test]
fn only_statements_with_berths_sid_may_be_written_as_berths() {
    let e = merge(None, &[foreign("Mine")]).unwrap_err();
    assert!(e.contains("Sid starting with Berth"), "{e}");
    assert!(merge(None, &[json!({"Effect": "Allow"})]).is_err());
}

#[test]
fn berth_sids_are_listed_in_the_policys_order() {
    assert!(berth_sids(None).is_empty());
    let text = policy(vec![
        json!({"Sid": "BerthB"}),
        foreign("NotBerth"),
        json!({"Sid": "berthLowerCase"}),
        json!({"Sid": "BerthA"}),
        json!({"Sid": 5}),
    ]);
    assert_eq!(berth_sids(Some(&text)), ["BerthB", "BerthA"]);
}

#[test]
fn roots_of_every_partition_are_their_accounts() {
    assert_eq!(account_of_root("arn:aws:iam::123456789012:root"), "123456789012");
    assert_eq!(account_of_root("arn:aws-cn:iam::123456789012:root"), "123456789012");
    assert_eq!(account_of_root("arn:aws-us-gov:iam::123456789012:root"), "123456789012");
    for other in ["arn:aws:iam::123456789012:role/root", "arn:aws:iam::12345:root", "arn:x:iam::123456789012:root", "*"]
    {
        assert_eq!(account_of_root(other), other);
    }
}

// ---- properties ----

fn arb_grants() -> impl Strategy<Value = Vec<AwsGrant>> {
    let one = (
        prop::sample::select(vec!["team-a", "team-b"]),
        prop::sample::select(vec!["p", "q", "r"]),
        prop::sample::select(vec![ROLE, ACCOUNT, "arn:aws:iam::123456789012:user/u"]),
        prop::sample::subsequence(vec![Pull, Push, Delete], 1..=3),
    )
        .prop_map(|(ns, p, principal, actions)| grant(ns, p, principal, &actions));
    prop::collection::vec(one, 0..6)
}

/// Statements somebody else wrote: some without a Sid, some whose Sid looks a little like
/// berth's, some not objects at all.
fn arb_foreign() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec!["Alpha", "berth", "BERTHx", "Bert", "Zed", "Ber"]).prop_map(foreign),
        Just(json!({"Effect": "Deny", "Principal": "*", "Action": "ecr:DeleteRepository"})),
        Just(json!("not a statement")),
        Just(json!({"Sid": 42, "Effect": "Allow"})),
    ]
}

/// An existing policy: foreign statements and (stale) statements of berth, interleaved,
/// possibly without a Version, compact or pretty; or no policy.
fn arb_existing() -> impl Strategy<Value = Option<String>> {
    let statements = (prop::collection::vec(arb_foreign(), 0..4), arb_grants(), prop::collection::vec(any::<u8>(), 8))
        .prop_map(|(foreign, grants, shuffle)| {
            let mut all: Vec<(u8, Value)> = foreign.into_iter().map(|s| (0, s)).collect();
            for (i, s) in berth_statements(&grants).into_iter().enumerate() {
                all.insert(usize::from(shuffle[i % shuffle.len()]) % (all.len() + 1), (1, s));
            }
            all.into_iter().map(|(_, s)| s).collect::<Vec<Value>>()
        });
    prop::option::weighted(0.8, (statements, any::<bool>(), any::<bool>(), any::<bool>())).prop_map(|p| {
        p.map(|(statements, version, id, pretty)| {
            let mut doc = json!({"Statement": statements});
            if version {
                doc["Version"] = json!("2012-10-17");
            }
            if id {
                doc["Id"] = json!("someone's");
            }
            if pretty { serde_json::to_string_pretty(&doc).unwrap() } else { doc.to_string() }
        })
    })
}

fn foreign_statements(policy: Option<&str>) -> Vec<Value> {
    let Some(text) = policy else { return vec![] };
    let doc = parse(text);
    let statements = match &doc["Statement"] {
        Value::Array(list) => list.clone(),
        one => vec![one.clone()],
    };
    statements.into_iter().filter(|s| !is_berth(s)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn merging_is_idempotent_keeps_every_foreign_statement_and_leaves_exactly_berths(
        existing in arb_existing(),
        grants in arb_grants(),
    ) {
        let ours = berth_statements(&grants);
        let merged = merge(existing.as_deref(), &ours).unwrap();
        let after: Option<String> = match &merged {
            Merged::Unchanged => existing.clone(),
            Merged::Set(text) => Some(text.clone()),
            Merged::Delete => None,
        };
        // Applied once, there is nothing more to do.
        prop_assert_eq!(merge(after.as_deref(), &ours).unwrap(), Merged::Unchanged, "after {:?}", merged);
        // Every foreign statement stays, in its order.
        prop_assert_eq!(foreign_statements(after.as_deref()), foreign_statements(existing.as_deref()));
        // berth's statements are exactly the wanted ones.
        let mut want: Vec<String> = ours.iter().map(|s| s["Sid"].as_str().unwrap().to_string()).collect();
        let mut got = berth_sids(after.as_deref());
        want.sort();
        got.sort();
        prop_assert_eq!(&got, &want);
        if let Merged::Set(text) = &merged {
            let doc = parse(text);
            prop_assert!(doc["Version"].is_string());
            let written: Vec<Value> =
                doc["Statement"].as_array().unwrap().iter().filter(|s| is_berth(s)).cloned().collect();
            prop_assert_eq!(written, ours.clone(), "berth's statements as berth_statements made them, sorted");
        }
        if merged == Merged::Delete {
            prop_assert!(foreign_statements(existing.as_deref()).is_empty() && ours.is_empty());
        }
    }
}
