use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use proptest::prelude::*;

use super::*;
use crate::api::{AccessPolicySpec, RepositorySelector, Subject};
use Action::{Delete, Pull, Push};

// ---- builders ----

fn repo(namespace: &str, name: &str, visibility: Visibility, labels: &[(&str, &str)]) -> RepoInput {
    RepoInput {
        path: format!("{namespace}/{name}"),
        namespace: namespace.into(),
        name: name.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        visibility,
    }
}

fn subject(kind: SubjectKind, name: Option<&str>, namespace: Option<&str>) -> Subject {
    Subject { kind, name: name.map(String::from), namespace: namespace.map(String::from) }
}

fn sa(name: &str) -> Subject {
    subject(SubjectKind::ServiceAccount, Some(name), None)
}

fn sa_in(namespace: &str, name: &str) -> Subject {
    subject(SubjectKind::ServiceAccount, Some(name), Some(namespace))
}

fn ns_subject(namespace: &str) -> Subject {
    subject(SubjectKind::Namespace, Some(namespace), None)
}

fn robot_subject(name: &str) -> Subject {
    subject(SubjectKind::Robot, Some(name), None)
}

fn anonymous() -> Subject {
    subject(SubjectKind::Anonymous, None, None)
}

fn aws(name: &str) -> Subject {
    subject(SubjectKind::AwsPrincipal, Some(name), None)
}

fn grant(subjects: Vec<Subject>, actions: &[Action]) -> Grant {
    Grant { subjects, actions: actions.to_vec() }
}

fn policy(namespace: &str, name: &str, repositories: RepositorySelector, grants: Vec<Grant>) -> AccessPolicy {
    let mut p = AccessPolicy::new(name, AccessPolicySpec { repositories, grants, pull_secrets: None });
    p.metadata.namespace = Some(namespace.into());
    p
}

fn names(names: &[&str]) -> RepositorySelector {
    RepositorySelector { names: Some(names.iter().map(|n| n.to_string()).collect()), selector: None }
}

fn labels(match_labels: &[(&str, &str)]) -> RepositorySelector {
    RepositorySelector {
        names: None,
        selector: Some(LabelSelector {
            match_labels: Some(match_labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            match_expressions: None,
        }),
    }
}

fn expression(key: &str, operator: &str, values: Option<&[&str]>) -> RepositorySelector {
    RepositorySelector {
        names: None,
        selector: Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: operator.into(),
                values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
            }]),
        }),
    }
}

fn sa_principal(namespace: &str, name: &str) -> Principal {
    Principal::ServiceAccount { namespace: namespace.into(), name: name.into() }
}

fn robot_principal(namespace: &str, name: &str) -> Principal {
    Principal::Robot { namespace: namespace.into(), name: name.into() }
}

fn pull_secret(namespace: &str, policy: &str) -> Principal {
    Principal::PullSecret { namespace: namespace.into(), policy: policy.into() }
}

fn all(path: &str) -> Scope {
    Scope::repository(path, [Pull, Push, Delete])
}

/// The actions granted on `path` when asking for all three.
fn granted(index: &AccessIndex, principal: &Principal, path: &str) -> Vec<Action> {
    let access = authorize(index, principal, &[all(path)]);
    assert!(access.len() <= 1);
    access
        .first()
        .map(|a| {
            assert_eq!((a.kind.as_str(), a.name.as_str()), ("repository", path));
            a.actions
                .iter()
                .map(|s| match s.as_str() {
                    "pull" => Pull,
                    "push" => Push,
                    "delete" => Delete,
                    other => panic!("unexpected action {other}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---- every subject kind x principal x visibility x action x declared ----

/// A subject and, for each principal, whether it names it.
type SubjectRow = (&'static str, Subject, Vec<(Principal, bool)>);

/// Which principals each kind of subject (in a policy of `team-a`) names. Written out by hand:
/// this table is the specification the index is checked against.
fn subject_table() -> Vec<SubjectRow> {
    let everyone = |matches: [bool; 9]| -> Vec<(Principal, bool)> {
        let principals = [
            Principal::Anonymous,
            sa_principal("team-a", "builder"),
            sa_principal("team-b", "builder"),
            sa_principal("ci", "runner"),
            sa_principal("ci", "other"),
            robot_principal("team-a", "builder"),
            robot_principal("team-b", "builder"),
            pull_secret("team-a", "other-policy"),
            Principal::Berth,
        ];
        principals.into_iter().zip(matches).collect()
    };
    vec![
        // anon, sa a/builder, sa b/builder, sa ci/runner, sa ci/other, robot a/builder, robot b/builder, pull, berth
        (
            "ServiceAccount builder",
            sa("builder"),
            everyone([false, true, false, false, false, false, false, false, true]),
        ),
        (
            "ServiceAccount ci/runner",
            sa_in("ci", "runner"),
            everyone([false, false, false, true, false, false, false, false, true]),
        ),
        ("Namespace ci", ns_subject("ci"), everyone([false, false, false, true, true, false, false, false, true])),
        (
            "Robot builder",
            robot_subject("builder"),
            everyone([false, false, false, false, false, true, false, false, true]),
        ),
        ("Anonymous", anonymous(), everyone([true, true, true, true, true, true, true, true, true])),
        // Not a principal of the token service: only its repository policy on ECR grants to it.
        (
            "AWSPrincipal role",
            aws("arn:aws:iam::123456789012:role/builder"),
            everyone([false, false, false, false, false, false, false, false, true]),
        ),
    ]
}

#[test]
fn every_subject_kind_principal_visibility_action_and_declaration() {
    let mut checked = 0;
    for (label, subject, principals) in subject_table() {
        for action in [Pull, Push, Delete] {
            if subject.kind == SubjectKind::Anonymous && action != Pull {
                continue; // refused by the CRD; covered by anonymous_grants_are_cut_to_pull
            }
            for visibility in [Visibility::Private, Visibility::Public] {
                let repos = [repo("team-a", "app", visibility, &[])];
                let p = policy("team-a", "grants", names(&["app"]), vec![grant(vec![subject.clone()], &[action])]);
                let index = AccessIndex::build(repos.clone(), [&p]);
                assert!(index.warnings().is_empty(), "{:?}", index.warnings());
                for (principal, matches) in &principals {
                    for declared in [true, false] {
                        let path = if declared { "team-a/app" } else { "team-a/undeclared" };
                        let got = granted(&index, principal, path);
                        let want: Vec<Action> = if *principal == Principal::Berth {
                            vec![Pull, Push, Delete]
                        } else if !declared {
                            vec![]
                        } else {
                            let pull = visibility == Visibility::Public || (*matches && action == Pull);
                            let other = *matches && action != Pull;
                            [Pull, Push, Delete]
                                .into_iter()
                                .filter(|a| if *a == Pull { pull } else { other && *a == action })
                                .collect()
                        };
                        assert_eq!(
                            got, want,
                            "{label} granted {action:?} on {visibility:?} repo, principal {principal:?}, declared {declared}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 5 * 3 * 2 * 9 * 2 + 2 * 9 * 2);
}

// ---- the rules one at a time ----

#[test]
fn push_does_not_imply_pull_and_docker_gets_only_what_is_granted() {
    let repos = [repo("team-a", "app", Visibility::Private, &[])];
    let p = policy("team-a", "p", names(&["app"]), vec![grant(vec![sa("ci")], &[Push])]);
    let index = AccessIndex::build(repos, [&p]);
    let docker_push = [Scope::repository("team-a/app", [Pull, Push])];
    let access = authorize(&index, &sa_principal("team-a", "ci"), &docker_push);
    assert_eq!(access, vec![Access::repository("team-a/app", &[Push].into())]);
}

#[test]
fn public_repositories_are_pulled_by_anyone_but_pushed_only_with_a_grant() {
    let repos = [repo("team-a", "pub", Visibility::Public, &[])];
    let index = AccessIndex::build(repos, []);
    for principal in
        [Principal::Anonymous, sa_principal("x", "y"), robot_principal("team-a", "r"), pull_secret("q", "p")]
    {
        assert_eq!(granted(&index, &principal, "team-a/pub"), [Pull], "{principal:?}");
    }
}

#[test]
fn a_private_repository_without_policies_is_closed_to_all_but_berth() {
    let index = AccessIndex::build([repo("team-a", "app", Visibility::Private, &[])], []);
    assert!(granted(&index, &Principal::Anonymous, "team-a/app").is_empty());
    assert!(granted(&index, &sa_principal("team-a", "default"), "team-a/app").is_empty());
    assert_eq!(granted(&index, &Principal::Berth, "team-a/app"), [Pull, Push, Delete]);
}

#[test]
fn anonymous_grants_apply_to_every_principal() {
    let repos = [repo("team-a", "app", Visibility::Private, &[])];
    let p = policy("team-a", "p", names(&["app"]), vec![grant(vec![anonymous()], &[Pull])]);
    let index = AccessIndex::build(repos, [&p]);
    for principal in [Principal::Anonymous, sa_principal("z", "z"), robot_principal("b", "r"), pull_secret("c", "d")] {
        assert_eq!(granted(&index, &principal, "team-a/app"), [Pull], "{principal:?}");
    }
}

#[test]
fn anonymous_grants_are_cut_to_pull_with_a_warning() {
    // The CRD refuses this; an index built from an object that slipped past it must not widen.
    let repos = [repo("team-a", "app", Visibility::Private, &[])];
    let p = policy("team-a", "p", names(&["app"]), vec![grant(vec![anonymous()], &[Pull, Push, Delete])]);
    let index = AccessIndex::build(repos, [&p]);
    assert_eq!(granted(&index, &Principal::Anonymous, "team-a/app"), [Pull]);
    assert_eq!(granted(&index, &sa_principal("team-a", "x"), "team-a/app"), [Pull]);
    assert_eq!(index.warnings().len(), 1);
    assert!(index.warnings()[0].message.contains("Anonymous may only be granted pull"), "{:?}", index.warnings());
}

#[test]
fn a_policy_applies_only_to_repositories_of_its_own_namespace() {
    let repos = [repo("team-a", "app", Visibility::Private, &[("tier", "web")])];
    let by_name = policy("team-b", "steal", names(&["app"]), vec![grant(vec![sa("thief")], &[Pull, Push])]);
    let by_label = policy("team-b", "steal2", labels(&[]), vec![grant(vec![sa("thief")], &[Pull, Push])]);
    let index = AccessIndex::build(repos, [&by_name, &by_label]);
    assert!(granted(&index, &sa_principal("team-b", "thief"), "team-a/app").is_empty());
    assert_eq!(index.policy("team-b", "steal").map(|s| s.repository_count), Some(0));
    assert_eq!(index.policy("team-b", "steal2").map(|s| s.repository_count), Some(0));
}

#[test]
fn but_its_subjects_may_come_from_other_namespaces() {
    let repos = [repo("team-a", "app", Visibility::Private, &[])];
    let p = policy(
        "team-a",
        "p",
        names(&["app"]),
        vec![grant(vec![sa_in("ci", "deployer")], &[Pull]), grant(vec![ns_subject("monitoring")], &[Pull])],
    );
    let index = AccessIndex::build(repos, [&p]);
    assert_eq!(granted(&index, &sa_principal("ci", "deployer"), "team-a/app"), [Pull]);
    assert_eq!(granted(&index, &sa_principal("monitoring", "anything"), "team-a/app"), [Pull]);
    assert!(granted(&index, &sa_principal("team-a", "deployer"), "team-a/app").is_empty());
    assert!(granted(&index, &robot_principal("monitoring", "anything"), "team-a/app").is_empty(), "robots are not SAs");
}

#[test]
fn grants_of_several_policies_and_grants_add_up() {
    let repos = [repo("team-a", "app", Visibility::Private, &[("tier", "web")])];
    let readers = policy("team-a", "readers", names(&["app"]), vec![grant(vec![sa("ci")], &[Pull])]);
    let writers = policy(
        "team-a",
        "writers",
        labels(&[("tier", "web")]),
        vec![grant(vec![sa("ci")], &[Push]), grant(vec![sa("ci"), sa("gc")], &[Delete])],
    );
    let index = AccessIndex::build(repos, [&readers, &writers]);
    assert_eq!(granted(&index, &sa_principal("team-a", "ci"), "team-a/app"), [Pull, Push, Delete]);
    assert_eq!(granted(&index, &sa_principal("team-a", "gc"), "team-a/app"), [Delete]);
}

#[test]
fn robots_belong_to_the_policy_namespace() {
    let repos = [repo("team-a", "app", Visibility::Private, &[])];
    let p = policy("team-a", "p", names(&["app"]), vec![grant(vec![robot_subject("ci")], &[Pull, Push])]);
    let index = AccessIndex::build(repos, [&p]);
    assert_eq!(granted(&index, &robot_principal("team-a", "ci"), "team-a/app"), [Pull, Push]);
    assert!(granted(&index, &robot_principal("team-b", "ci"), "team-a/app").is_empty());
    assert!(granted(&index, &sa_principal("team-a", "ci"), "team-a/app").is_empty(), "a robot is not a ServiceAccount");
}

#[test]
fn pull_secrets_pull_what_their_policy_selects_and_nothing_else() {
    let repos = [
        repo("team-a", "app", Visibility::Private, &[("tier", "web")]),
        repo("team-a", "db", Visibility::Private, &[("tier", "data")]),
        repo("team-a", "docs", Visibility::Public, &[]),
    ];
    // The grants do not matter for the pull secret: it pulls what the policy selects.
    let p = policy("team-a", "web", labels(&[("tier", "web")]), vec![grant(vec![sa("ci")], &[Push])]);
    let index = AccessIndex::build(repos, [&p]);
    let secret = pull_secret("team-a", "web");
    assert_eq!(granted(&index, &secret, "team-a/app"), [Pull]);
    assert!(granted(&index, &secret, "team-a/db").is_empty(), "not selected");
    assert_eq!(granted(&index, &secret, "team-a/docs"), [Pull], "public");
    assert!(granted(&index, &pull_secret("team-a", "other"), "team-a/app").is_empty());
    assert!(granted(&index, &pull_secret("team-b", "web"), "team-a/app").is_empty());
}

#[test]
fn pull_secrets_never_push_even_when_their_policy_grants_anonymous_everything() {
    let repos = [repo("team-a", "app", Visibility::Private, &[])];
    let p = policy("team-a", "p", names(&["app"]), vec![grant(vec![anonymous()], &[Pull, Push])]);
    let index = AccessIndex::build(repos, [&p]);
    assert_eq!(granted(&index, &pull_secret("team-a", "p"), "team-a/app"), [Pull]);
}

#[test]
fn only_berth_lists_the_catalog() {
    let index = AccessIndex::build([repo("team-a", "app", Visibility::Public, &[])], []);
    let catalog = [Scope::catalog()];
    assert_eq!(authorize(&index, &Principal::Berth, &catalog), vec![Access::catalog()]);
    for principal in
        [Principal::Anonymous, sa_principal("kube-system", "admin"), robot_principal("a", "b"), pull_secret("a", "b")]
    {
        assert!(authorize(&index, &principal, &catalog).is_empty(), "{principal:?}");
    }
}

#[test]
fn berth_gets_any_valid_path_but_not_a_malformed_one() {
    let index = AccessIndex::default();
    assert_eq!(granted(&index, &Principal::Berth, "never/declared"), [Pull, Push, Delete]);
    let bad = [Scope::repository("Not A Path", [Pull])];
    assert!(authorize(&index, &Principal::Berth, &bad).is_empty());
}

#[test]
fn only_scopes_with_a_granted_action_are_returned_in_request_order() {
    let repos = [
        repo("team-a", "one", Visibility::Public, &[]),
        repo("team-a", "two", Visibility::Private, &[]),
        repo("team-a", "three", Visibility::Public, &[]),
    ];
    let index = AccessIndex::build(repos, []);
    let requested = [
        Scope::repository("team-a/three", [Pull, Push]),
        Scope::repository("team-a/two", [Pull]),
        Scope::catalog(),
        Scope::repository("team-a/one", [Pull]),
    ];
    let access = authorize(&index, &Principal::Anonymous, &requested);
    assert_eq!(
        access,
        vec![Access::repository("team-a/three", &[Pull].into()), Access::repository("team-a/one", &[Pull].into())]
    );
}

// ---- AWS principals (ECR repository policies) ----

fn aws_grant(namespace: &str, policy: &str, principal: &str, actions: &[Action]) -> AwsGrant {
    AwsGrant {
        namespace: namespace.into(),
        policy: policy.into(),
        principal: principal.into(),
        actions: actions.to_vec(),
    }
}

#[test]
fn aws_principals_are_listed_per_policy_and_principal_with_their_actions_added_up() {
    let repos = [
        repo("team-a", "app", Visibility::Private, &[("tier", "web")]),
        repo("team-a", "db", Visibility::Private, &[]),
        repo("team-b", "app", Visibility::Private, &[("tier", "web")]),
    ];
    let role = "arn:aws:iam::123456789012:role/deployer";
    let readers = policy(
        "team-a",
        "readers",
        labels(&[("tier", "web")]),
        vec![grant(vec![aws("210987654321"), aws(role), sa("ci")], &[Pull]), grant(vec![aws(role)], &[Delete, Push])],
    );
    let writers = policy("team-a", "b-writers", names(&["app"]), vec![grant(vec![aws(role)], &[Push])]);
    let index = AccessIndex::build(repos, [&readers, &writers]);
    assert!(index.warnings().is_empty(), "{:?}", index.warnings());
    assert_eq!(
        index.aws_grants("team-a/app"),
        vec![
            aws_grant("team-a", "b-writers", role, &[Push]),
            aws_grant("team-a", "readers", "210987654321", &[Pull]),
            aws_grant("team-a", "readers", role, &[Pull, Push, Delete]),
        ]
    );
    assert!(index.aws_grants("team-a/db").is_empty(), "not selected");
    assert!(index.aws_grants("team-b/app").is_empty(), "another namespace's Repository");
    assert!(index.aws_grants("team-a/undeclared").is_empty());
    // The same index, whatever the order of the policies.
    let reversed =
        AccessIndex::build([repo("team-a", "app", Visibility::Private, &[("tier", "web")])], [&writers, &readers]);
    assert_eq!(reversed.aws_grants("team-a/app"), index.aws_grants("team-a/app"));
}

#[test]
fn aws_principals_grant_nothing_through_the_token_service() {
    let repos = [repo("team-a", "app", Visibility::Private, &[])];
    let p = policy("team-a", "p", names(&["app"]), vec![grant(vec![aws("123456789012")], &[Pull, Push, Delete])]);
    let index = AccessIndex::build(repos, [&p]);
    for principal in [
        Principal::Anonymous,
        sa_principal("team-a", "123456789012"),
        robot_principal("team-a", "123456789012"),
        sa_principal("123456789012", "default"),
    ] {
        assert!(granted(&index, &principal, "team-a/app").is_empty(), "{principal:?}");
    }
    // Its pull secret still pulls what the policy selects, as on any registry.
    assert_eq!(granted(&index, &pull_secret("team-a", "p"), "team-a/app"), [Pull]);
    assert_eq!(index.policy("team-a", "p").map(|s| s.repository_count), Some(1));
}

#[test]
fn malformed_aws_principals_are_ignored_with_a_warning() {
    let repos = [repo("team-a", "app", Visibility::Private, &[])];
    let p = policy(
        "team-a",
        "p",
        names(&["app"]),
        vec![grant(
            vec![
                subject(SubjectKind::AwsPrincipal, None, None),
                subject(SubjectKind::AwsPrincipal, Some(""), None),
                subject(SubjectKind::AwsPrincipal, Some("123456789012"), Some("team-a")),
                aws("12345678901"),
                aws("arn:aws:iam::123456789012:group/admins"),
                aws("*"),
                aws("arn:aws:iam::123456789012:role/fine"),
            ],
            &[Pull],
        )],
    );
    let index = AccessIndex::build(repos, [&p]);
    let warnings = index.warnings();
    assert_eq!(warnings.len(), 6, "{warnings:?}");
    assert!(
        warnings[3].message.contains("AWSPrincipal \"12345678901\" is not a 12-digit account id"),
        "{}",
        warnings[3]
    );
    assert!(warnings[2].message.contains("malformed"), "a namespace is refused: {}", warnings[2]);
    assert_eq!(
        index.aws_grants("team-a/app"),
        vec![aws_grant("team-a", "p", "arn:aws:iam::123456789012:role/fine", &[Pull])]
    );
}

#[test]
fn aws_principal_names_follow_the_documented_rule() {
    for good in [
        "123456789012",
        "arn:aws:iam::123456789012:root",
        "arn:aws-cn:iam::123456789012:role/ci",
        "arn:aws-us-gov:iam::123456789012:user/a+b=c,d.e@f_g-h",
        "arn:aws:iam::123456789012:role/path/to/role",
        "arn:aws:iam::123456789012:role//",
    ] {
        assert!(valid_aws_principal(good), "{good}");
        assert!(documented_aws_pattern().is_match(good), "{good}");
    }
    for bad in [
        "",
        "12345678901",
        "1234567890123",
        "12345678901a",
        "arn:aws:iam::123456789012:",
        "arn:aws:iam::123456789012:root/",
        "arn:aws:iam::123456789012:role/",
        "arn:aws:iam::123456789012:role/a b",
        "arn:aws:iam::123456789012:role/a:b",
        "arn:aws:iam::123456789012:group/g",
        "arn:aws:iam::123456789012:assumed-role/r/s",
        "arn:aws:sts::123456789012:role/r",
        "arn:aws-eu:iam::123456789012:root",
        "arn:aws:iam:us-east-1:123456789012:root",
        "arn:aws:iam::12345678901:root",
        "arn:aws:iam::123456789012:root\n",
        " 123456789012",
        "*",
    ] {
        assert!(!valid_aws_principal(bad), "{bad:?}");
        assert!(!documented_aws_pattern().is_match(bad), "{bad:?}");
    }
}

/// The pattern the CRD's AWSPrincipal message describes (the admission rule no longer matches
/// it, which leaves the controller the only check), as a regular expression.
fn documented_aws_pattern() -> &'static regex::Regex {
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| {
        regex::Regex::new(
            r"^([0-9]{12}|arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:(root|role/[A-Za-z0-9+=,.@_/-]+|user/[A-Za-z0-9+=,.@_/-]+))$",
        )
        .unwrap()
    })
}

proptest! {
    #[test]
    fn aws_principal_names_agree_with_the_documented_pattern(
        name in prop_oneof![
            "[0-9]{10,13}",
            "arn:aws(-cn|-us-gov|-eu)?:(iam|sts)::[0-9]{11,13}:(root|role/|user/|group/)[A-Za-z0-9+=,.@_/: -]{0,6}",
            ".{0,40}",
        ],
    ) {
        prop_assert_eq!(valid_aws_principal(&name), documented_aws_pattern().is_match(&name), "{:?}", name);
    }
}

// ---- selection ----

#[test]
fn repositories_are_selected_by_name_or_label() {
    let repos = [
        repo("team-a", "web", Visibility::Private, &[("tier", "web"), ("env", "prod")]),
        repo("team-a", "api", Visibility::Private, &[("tier", "api"), ("env", "prod")]),
        repo("team-a", "tool", Visibility::Private, &[]),
    ];
    let cases: Vec<(&str, RepositorySelector, Vec<&str>)> = vec![
        ("names", names(&["web", "tool"]), vec!["tool", "web"]),
        ("matchLabels", labels(&[("tier", "web")]), vec!["web"]),
        ("matchLabels with two labels", labels(&[("tier", "api"), ("env", "prod")]), vec!["api"]),
        ("empty selector: every Repository", labels(&[]), vec!["api", "tool", "web"]),
        ("In", expression("tier", "In", Some(&["web", "api"])), vec!["api", "web"]),
        ("NotIn includes unlabeled", expression("tier", "NotIn", Some(&["web"])), vec!["api", "tool"]),
        ("Exists", expression("env", "Exists", None), vec!["api", "web"]),
        ("DoesNotExist", expression("env", "DoesNotExist", None), vec!["tool"]),
        (
            "names or selector",
            RepositorySelector { names: Some(vec!["tool".into()]), ..labels(&[("tier", "web")]) },
            vec!["tool", "web"],
        ),
    ];
    for (label, selector, want) in cases {
        let p = policy("team-a", "p", selector, vec![grant(vec![sa("ci")], &[Pull])]);
        let index = AccessIndex::build(repos.clone(), [&p]);
        let got: Vec<&str> = ["api", "tool", "web"]
            .into_iter()
            .filter(|n| !granted(&index, &sa_principal("team-a", "ci"), &format!("team-a/{n}")).is_empty())
            .collect();
        assert_eq!(got, want, "{label}");
        assert_eq!(index.policy("team-a", "p").map(|s| s.repository_count), Some(want.len()), "{label}");
        let selected = index.policy("team-a", "p").map(|s| s.repositories.iter().map(String::as_str).collect());
        assert_eq!(selected, Some(want.clone()), "{label}");
        assert!(index.warnings().is_empty(), "{label}: {:?}", index.warnings());
    }
}

#[test]
fn an_invalid_selector_selects_nothing_and_says_why_but_names_still_apply() {
    let repos = [
        repo("team-a", "web", Visibility::Private, &[("tier", "web")]),
        repo("team-a", "api", Visibility::Private, &[]),
    ];
    let cases: Vec<(RepositorySelector, &str)> = vec![
        (expression("tier", "In", None), "needs at least one value"),
        (expression("tier", "In", Some(&[])), "needs at least one value"),
        (expression("tier", "NotIn", None), "needs at least one value"),
        (expression("tier", "Exists", Some(&["web"])), "takes no values"),
        (expression("tier", "Equals", Some(&["web"])), "is not In, NotIn, Exists or DoesNotExist"),
    ];
    for (mut selector, why) in cases {
        selector.names = Some(vec!["api".into()]);
        let p = policy("team-a", "p", selector, vec![grant(vec![sa("ci")], &[Pull])]);
        let index = AccessIndex::build(repos.clone(), [&p]);
        assert!(granted(&index, &sa_principal("team-a", "ci"), "team-a/web").is_empty(), "{why}");
        assert_eq!(granted(&index, &sa_principal("team-a", "ci"), "team-a/api"), [Pull], "{why}");
        assert_eq!(index.policy("team-a", "p").map(|s| s.repository_count), Some(1));
        let warnings = index.warnings();
        assert_eq!(warnings.len(), 1, "{why}");
        assert_eq!((warnings[0].namespace.as_str(), warnings[0].name.as_str()), ("team-a", "p"));
        assert!(
            warnings[0].message.contains("selector is invalid") && warnings[0].message.contains(why),
            "{}",
            warnings[0]
        );
    }
}

#[test]
fn names_that_match_no_repository_are_reported_per_policy() {
    let repos = [repo("team-a", "web", Visibility::Private, &[]), repo("team-b", "typo", Visibility::Private, &[])];
    let p = policy("team-a", "p", names(&["web", "typo", "later"]), vec![grant(vec![sa("ci")], &[Pull])]);
    let index = AccessIndex::build(repos, [&p]);
    let summary = index.policy("team-a", "p").cloned().unwrap_or_default();
    assert_eq!(summary.repository_count, 1);
    assert_eq!(summary.unmatched_names, ["later".to_string(), "typo".to_string()].into());
    assert!(index.policy("team-a", "other").is_none());
}

#[test]
fn malformed_subjects_are_ignored_with_a_warning() {
    let repos = [repo("team-a", "app", Visibility::Private, &[])];
    let p = policy(
        "team-a",
        "p",
        names(&["app"]),
        vec![grant(
            vec![
                subject(SubjectKind::ServiceAccount, None, None),
                subject(SubjectKind::ServiceAccount, Some(""), None),
                subject(SubjectKind::Robot, Some("ci"), Some("team-b")),
                subject(SubjectKind::Robot, Some("Not_A_Name"), None),
                subject(SubjectKind::Namespace, Some("ci"), Some("team-a")),
                subject(SubjectKind::Anonymous, Some("someone"), None),
                sa("fine"),
            ],
            &[Pull, Push],
        )],
    );
    let index = AccessIndex::build(repos, [&p]);
    assert_eq!(index.warnings().len(), 6, "{:?}", index.warnings());
    assert!(index.warnings().iter().all(|w| w.message.starts_with("grants[0]:")));
    assert_eq!(granted(&index, &sa_principal("team-a", "fine"), "team-a/app"), [Pull, Push]);
    for principal in [
        robot_principal("team-b", "ci"),
        robot_principal("team-a", "ci"),
        robot_principal("team-a", "Not_A_Name"),
        sa_principal("ci", "x"),
        Principal::Anonymous,
        sa_principal("team-a", ""),
    ] {
        assert!(granted(&index, &principal, "team-a/app").is_empty(), "{principal:?}");
    }
}

#[test]
fn a_service_account_subject_defaults_to_the_policy_namespace() {
    let repos = [repo("team-a", "app", Visibility::Private, &[])];
    let p = policy(
        "team-a",
        "p",
        names(&["app"]),
        vec![grant(vec![subject(SubjectKind::ServiceAccount, Some("ci"), Some(""))], &[Pull])],
    );
    let index = AccessIndex::build(repos, [&p]);
    assert_eq!(granted(&index, &sa_principal("team-a", "ci"), "team-a/app"), [Pull]);
}

#[test]
fn a_shared_path_goes_to_the_smallest_namespace_and_name_whatever_the_order() {
    let mut first = repo("team-b", "app", Visibility::Public, &[]);
    first.path = "shared/app".into();
    let mut second = repo("team-a", "app", Visibility::Private, &[]);
    second.path = "shared/app".into();
    let p = policy("team-b", "p", names(&["app"]), vec![grant(vec![sa("ci")], &[Push])]);
    for repos in [[first.clone(), second.clone()], [second.clone(), first.clone()]] {
        let index = AccessIndex::build(repos, [&p]);
        assert_eq!(index.len(), 1);
        assert!(granted(&index, &Principal::Anonymous, "shared/app").is_empty(), "team-a's private one owns it");
        assert!(granted(&index, &sa_principal("team-b", "ci"), "shared/app").is_empty());
        assert_eq!(index.policy("team-b", "p").map(|s| s.repository_count), Some(0));
    }
}

#[test]
fn the_index_answers_containment_and_size() {
    let index =
        AccessIndex::build([repo("a", "x", Visibility::Private, &[]), repo("a", "y", Visibility::Private, &[])], []);
    assert_eq!(index.len(), 2);
    assert!(!index.is_empty());
    assert!(index.contains("a/x") && !index.contains("a/z"));
    assert!(AccessIndex::default().is_empty());
}

#[test]
fn warnings_name_their_policy() {
    let w = PolicyWarning { namespace: "team-a".into(), name: "p".into(), message: "bad".into() };
    assert_eq!(w.to_string(), "AccessPolicy team-a/p: bad");
}

// ---- properties, against a naive reading of the CRDs ----

const NAMESPACES: [&str; 2] = ["a", "b"];
const AWS_ACCOUNT: &str = "123456789012";
const AWS_ROLE: &str = "arn:aws:iam::123456789012:role/ci";
const NAMES: [&str; 3] = ["r1", "r2", "r3"];

fn arb_action_set() -> impl Strategy<Value = Vec<Action>> {
    prop::sample::subsequence(vec![Pull, Push, Delete], 1..=3)
}

fn arb_subject() -> impl Strategy<Value = Subject> {
    let kind = prop::sample::select(vec![
        SubjectKind::ServiceAccount,
        SubjectKind::Namespace,
        SubjectKind::Robot,
        SubjectKind::Anonymous,
        SubjectKind::AwsPrincipal,
    ]);
    let name = prop::option::weighted(0.8, prop::sample::select(vec!["ci", "gc", "a", "b", AWS_ACCOUNT, AWS_ROLE]));
    let namespace = prop::option::weighted(0.3, prop::sample::select(NAMESPACES.to_vec()));
    (kind, name, namespace).prop_map(|(kind, name, namespace)| subject(kind, name, namespace))
}

fn arb_selector() -> impl Strategy<Value = RepositorySelector> {
    let names = prop::option::of(prop::sample::subsequence(NAMES.to_vec(), 0..=3));
    let operator = prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist", "Bogus"]);
    let values = prop::option::of(prop::sample::subsequence(vec!["x", "y"], 0..=2));
    let requirement = (operator, values).prop_map(|(operator, values)| LabelSelectorRequirement {
        key: "env".into(),
        operator: operator.into(),
        values: values.map(|v| v.into_iter().map(String::from).collect()),
    });
    let match_labels = prop::option::of(prop::sample::select(vec!["x", "y"]));
    let selector = prop::option::of((match_labels, prop::option::of(prop::collection::vec(requirement, 0..2))))
        .prop_map(|s| {
            s.map(|(l, e)| LabelSelector {
                match_labels: l.map(|v| [("env".to_string(), v.to_string())].into()),
                match_expressions: e,
            })
        });
    (names, selector).prop_map(|(names, selector)| RepositorySelector {
        names: names.map(|n| n.into_iter().map(String::from).collect()),
        selector,
    })
}

fn arb_policy() -> impl Strategy<Value = AccessPolicy> {
    let grants = prop::collection::vec((prop::collection::vec(arb_subject(), 1..3), arb_action_set()), 1..3);
    (prop::sample::select(NAMESPACES.to_vec()), prop::sample::select(vec!["p", "q"]), arb_selector(), grants).prop_map(
        |(ns, name, selector, grants)| {
            policy(ns, name, selector, grants.into_iter().map(|(s, a)| grant(s, &a)).collect())
        },
    )
}

fn arb_repos() -> impl Strategy<Value = Vec<RepoInput>> {
    let one = (
        prop::sample::select(NAMESPACES.to_vec()),
        prop::sample::select(NAMES.to_vec()),
        prop::bool::ANY,
        prop::option::of(prop::sample::select(vec!["x", "y"])),
    )
        .prop_map(|(ns, name, public, env)| {
            let visibility = if public { Visibility::Public } else { Visibility::Private };
            let labels: Vec<(&str, &str)> = env.map(|e| ("env", e)).into_iter().collect();
            repo(ns, name, visibility, &labels)
        });
    prop::collection::vec(one, 0..6).prop_map(|mut repos| {
        repos.sort_by(|a, b| a.path.cmp(&b.path));
        repos.dedup_by(|a, b| a.path == b.path);
        repos
    })
}

/// Principals a set of policies is about (so the properties exercise grants that apply, not
/// only misses), plus a few that no policy names.
fn principals_for(policies: &[AccessPolicy]) -> Vec<Principal> {
    let mut out = vec![Principal::Anonymous, Principal::Berth, sa_principal("a", "nobody"), robot_principal("b", "ci")];
    for p in policies {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        out.push(pull_secret(&ns, p.metadata.name.as_deref().unwrap_or_default()));
        for s in p.spec.grants.iter().flat_map(|g| &g.subjects) {
            let name = s.name.clone().unwrap_or_default();
            match s.kind {
                SubjectKind::ServiceAccount => out.push(sa_principal(s.namespace.as_deref().unwrap_or(&ns), &name)),
                SubjectKind::Namespace => out.push(sa_principal(&name, "any")),
                SubjectKind::Robot => out.push(robot_principal(&ns, &name)),
                SubjectKind::Anonymous | SubjectKind::AwsPrincipal => {}
            }
        }
    }
    out
}

/// Repositories, policies, a principal and requested scopes, mostly on declared paths.
fn arb_case() -> impl Strategy<Value = (Vec<RepoInput>, Vec<AccessPolicy>, Principal, Vec<Scope>)> {
    (arb_repos(), prop::collection::vec(arb_policy(), 0..4)).prop_flat_map(|(repos, policies)| {
        // `c` never has Repositories.
        let mut paths: Vec<String> = repos.iter().map(|r| r.path.clone()).collect();
        paths.extend(["c/r1".to_string(), "a/r1".to_string()]);
        let scope = prop_oneof![
            8 => (prop::sample::select(paths), arb_action_set()).prop_map(|(p, a)| Scope::repository(p, a)),
            1 => Just(Scope::catalog()),
        ];
        let principal = prop::sample::select(principals_for(&policies));
        (Just(repos), Just(policies), principal, prop::collection::vec(scope, 0..6))
    })
}

/// The label selector semantics of Kubernetes, written out independently of kube's `Selector`;
/// `None` for a selector the API server would refuse.
fn naive_selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Option<bool> {
    let mut ok = true;
    for (k, v) in selector.match_labels.iter().flatten() {
        ok &= labels.get(k) == Some(v);
    }
    for r in selector.match_expressions.iter().flatten() {
        let values: Vec<&String> = r.values.iter().flatten().collect();
        let label = labels.get(&r.key);
        ok &= match r.operator.as_str() {
            "In" if !values.is_empty() => label.is_some_and(|l| values.contains(&l)),
            "NotIn" if !values.is_empty() => label.is_none_or(|l| !values.contains(&l)),
            "Exists" if values.is_empty() => label.is_some(),
            "DoesNotExist" if values.is_empty() => label.is_none(),
            _ => return None,
        };
    }
    Some(ok)
}

fn naive_subject_matches(s: &Subject, policy_ns: &str, principal: &Principal) -> bool {
    let name = s.name.as_deref().filter(|n| !n.is_empty());
    let namespace = s.namespace.as_deref().filter(|n| !n.is_empty());
    match (s.kind, principal) {
        (SubjectKind::Anonymous, _) => name.is_none() && s.namespace.is_none(),
        (SubjectKind::ServiceAccount, Principal::ServiceAccount { namespace: pn, name: pname }) => {
            name == Some(pname.as_str()) && namespace.unwrap_or(policy_ns) == pn
        }
        (SubjectKind::Namespace, Principal::ServiceAccount { namespace: pn, .. }) => {
            s.namespace.is_none() && name == Some(pn.as_str())
        }
        (SubjectKind::Robot, Principal::Robot { namespace: pn, name: pname }) => {
            // Of the names generated, only the ARN is not a DNS subdomain name.
            s.namespace.is_none() && name == Some(pname.as_str()) && pn == policy_ns && !pname.starts_with("arn:")
        }
        _ => false,
    }
}

/// Whether a policy applies to a Repository: same namespace, chosen by name or by label.
fn naive_policy_selects(p: &AccessPolicy, repo: &RepoInput) -> bool {
    let by_name = p.spec.repositories.names.iter().flatten().any(|n| *n == repo.name);
    let by_label = p.spec.repositories.selector.as_ref().and_then(|s| naive_selects(s, &repo.labels)).unwrap_or(false);
    p.metadata.namespace.as_deref() == Some(repo.namespace.as_str()) && (by_name || by_label)
}

/// The AWS grants on `path`, the slow way: one per (policy, principal) with the union of the
/// actions of every grant naming it, in (namespace, policy, principal) order.
fn naive_aws_grants(repos: &[RepoInput], policies: &[AccessPolicy], path: &str) -> Vec<AwsGrant> {
    let Some(repo) = repos.iter().find(|r| r.path == path) else { return vec![] };
    let mut out: BTreeMap<(String, String, String), BTreeSet<Action>> = BTreeMap::new();
    for p in policies.iter().filter(|p| naive_policy_selects(p, repo)) {
        for g in &p.spec.grants {
            for s in g.subjects.iter().filter(|s| s.kind == SubjectKind::AwsPrincipal && s.namespace.is_none()) {
                let Some(name) = s.name.as_deref().filter(|n| [AWS_ACCOUNT, AWS_ROLE].contains(n)) else { continue };
                let key = (repo.namespace.clone(), p.metadata.name.clone().unwrap_or_default(), name.to_string());
                out.entry(key).or_default().extend(g.actions.iter().copied());
            }
        }
    }
    out.into_iter()
        .map(|((namespace, policy, principal), actions)| AwsGrant {
            namespace,
            policy,
            principal,
            actions: actions.into_iter().collect(),
        })
        .collect()
}

/// What the CRDs' documentation says `principal` may do on `path`, evaluated the slow way.
fn naive_allowed(
    repos: &[RepoInput],
    policies: &[AccessPolicy],
    principal: &Principal,
    path: &str,
) -> BTreeSet<Action> {
    if *principal == Principal::Berth {
        return [Pull, Push, Delete].into();
    }
    let Some(repo) = repos.iter().find(|r| r.path == path) else {
        return BTreeSet::new();
    };
    let mut allowed = BTreeSet::new();
    if repo.visibility == Visibility::Public {
        allowed.insert(Pull);
    }
    for p in policies.iter().filter(|p| naive_policy_selects(p, repo)) {
        if *principal
            == (Principal::PullSecret {
                namespace: repo.namespace.clone(),
                policy: p.metadata.name.clone().unwrap_or_default(),
            })
        {
            allowed.insert(Pull);
        }
        for g in &p.spec.grants {
            for s in &g.subjects {
                if naive_subject_matches(s, &repo.namespace, principal) {
                    let anonymous = s.kind == SubjectKind::Anonymous;
                    allowed.extend(g.actions.iter().filter(|a| !anonymous || **a == Pull));
                }
            }
        }
    }
    if matches!(principal, Principal::Anonymous | Principal::PullSecret { .. }) {
        allowed.retain(|a| *a == Pull);
    }
    allowed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn authorize_agrees_with_a_naive_reading_and_keeps_its_invariants(
        (repos, policies, principal, requested) in arb_case(),
    ) {
        let index = AccessIndex::build(repos.clone(), &policies);
        let access = authorize(&index, &principal, &requested);

        // The same answer as reading the CRDs naively, scope by scope.
        let mut want = Vec::new();
        for scope in &requested {
            match &scope.resource {
                Resource::Catalog if principal == Principal::Berth => want.push(Access::catalog()),
                Resource::Catalog => {}
                Resource::Repository(path) => {
                    let allowed = naive_allowed(&repos, &policies, &principal, path);
                    let actions: BTreeSet<Action> = scope.actions.intersection(&allowed).copied().collect();
                    if !actions.is_empty() {
                        want.push(Access::repository(path, &actions));
                    }
                }
            }
        }
        prop_assert_eq!(&access, &want);

        // AWS principals: listed for the repository policy, whatever the principal asking.
        for path in repos.iter().map(|r| r.path.as_str()).chain(["c/r1"]) {
            prop_assert_eq!(index.aws_grants(path), naive_aws_grants(&repos, &policies, path), "{}", path);
        }

        for a in &access {
            prop_assert!(!a.actions.is_empty());
            if a.kind == "registry" {
                prop_assert_eq!(&principal, &Principal::Berth, "catalog for berth only");
                continue;
            }
            // Granted is a subset of requested, for a repository that was requested (scopes may
            // repeat a repository when built by hand rather than by parse_scopes).
            let asked: Vec<&str> = requested
                .iter()
                .filter(|s| s.resource == Resource::Repository(a.name.clone()))
                .flat_map(|s| s.actions.iter().map(|x| super::super::scope::action_name(*x)))
                .collect();
            prop_assert!(!asked.is_empty(), "{} was not requested", a.name);
            prop_assert!(a.actions.iter().all(|x| asked.contains(&x.as_str())), "{:?} beyond {:?}", a.actions, asked);
            if matches!(principal, Principal::Anonymous | Principal::PullSecret { .. }) {
                prop_assert_eq!(&a.actions, &vec!["pull".to_string()]);
            }
            if principal != Principal::Berth {
                prop_assert!(index.contains(&a.name), "undeclared {} granted", a.name);
            }
        }
    }

    #[test]
    fn another_policy_never_takes_access_away(
        (repos, policies, principal, requested) in arb_case(),
        extra in arb_policy(),
    ) {
        let before = authorize(&AccessIndex::build(repos.clone(), &policies), &principal, &requested);
        let mut more = policies.clone();
        more.push(extra);
        let after = authorize(&AccessIndex::build(repos, &more), &principal, &requested);
        for a in before {
            let mut kept = after.iter().filter(|b| b.kind == a.kind && b.name == a.name).flat_map(|b| &b.actions);
            prop_assert!(a.actions.iter().all(|x| kept.clone().any(|y| y == x)), "{:?} lost", a);
            prop_assert!(kept.next().is_some());
        }
    }

    #[test]
    fn the_input_order_does_not_matter((repos, policies, principal, requested) in arb_case()) {
        let forward = authorize(&AccessIndex::build(repos.clone(), &policies), &principal, &requested);
        let mut reversed_repos = repos.clone();
        reversed_repos.reverse();
        let reversed: Vec<&AccessPolicy> = policies.iter().rev().collect();
        let backward_index = AccessIndex::build(reversed_repos, reversed);
        let backward = authorize(&backward_index, &principal, &requested);
        prop_assert_eq!(forward, backward);
        let forward_index = AccessIndex::build(repos.clone(), &policies);
        for r in &repos {
            prop_assert_eq!(forward_index.aws_grants(&r.path), backward_index.aws_grants(&r.path));
        }
    }
}
