use proptest::prelude::*;

use super::*;

fn set(actions: &[Action]) -> BTreeSet<Action> {
    actions.iter().copied().collect()
}

fn repo(path: &str, actions: &[Action]) -> Scope {
    Scope::repository(path, actions.iter().copied())
}

use Action::{Delete, Pull, Push};

#[test]
fn one_scope_per_kind_of_request() {
    let table: &[(&str, Scope)] = &[
        ("repository:team-a/app:pull", repo("team-a/app", &[Pull])),
        ("repository:a:pull,push", repo("a", &[Pull, Push])),
        ("repository:a:push,pull", repo("a", &[Pull, Push])),
        ("repository:a:delete", repo("a", &[Delete])),
        ("repository:a:*", repo("a", &[Pull, Push, Delete])),
        ("repository:a:pull,*", repo("a", &[Pull, Push, Delete])),
        ("repository:a:pull,shout", repo("a", &[Pull])),
        ("repository:a:pull,,push", repo("a", &[Pull, Push])),
        ("repository:a/b/c.d_e__f-g--h:pull", repo("a/b/c.d_e__f-g--h", &[Pull])),
        ("repository(plugin):a:pull", repo("a", &[Pull])),
        ("repository(Image2):a:push", repo("a", &[Push])),
        ("registry:catalog:*", Scope::catalog()),
        ("registry:catalog:pull,*", Scope::catalog()),
    ];
    for (input, want) in table {
        assert_eq!(parse_scope(input).as_ref(), Ok(want), "{input}");
    }
}

#[test]
fn malformed_or_unknown_scopes_are_dropped_with_the_reason() {
    let table: &[(&str, ScopeError)] = &[
        ("", ScopeError::Length),
        ("repository", ScopeError::Shape),
        ("repository:a", ScopeError::Shape),
        // A host:port prefix splits correctly (the name keeps its ':') and is then refused as a
        // path: it cannot be a Repository berth declares.
        ("repository:localhost:5000/a/b:pull", ScopeError::BadName("localhost:5000/a/b".into())),
        ("repository:A:pull", ScopeError::BadName("A".into())),
        ("repository:Team/app:pull", ScopeError::BadName("Team/app".into())),
        ("repository::pull", ScopeError::BadName("".into())),
        ("repository:a//b:pull", ScopeError::BadName("a//b".into())),
        ("repository:/a:pull", ScopeError::BadName("/a".into())),
        ("repository:a/:pull", ScopeError::BadName("a/".into())),
        ("repository:a..b:pull", ScopeError::BadName("a..b".into())),
        ("repository:a___b:pull", ScopeError::BadName("a___b".into())),
        ("repository:a.-b:pull", ScopeError::BadName("a.-b".into())),
        ("repository:-a:pull", ScopeError::BadName("-a".into())),
        ("repository:a-:pull", ScopeError::BadName("a-".into())),
        ("repository:_a:pull", ScopeError::BadName("_a".into())),
        ("repository:tëam/app:pull", ScopeError::BadName("tëam/app".into())),
        ("repository:a:", ScopeError::NoActions("".into())),
        ("repository:a:shout", ScopeError::NoActions("shout".into())),
        ("repository:a:PULL", ScopeError::NoActions("PULL".into())),
        ("repository:a:pull push", ScopeError::NoActions("pull push".into())),
        ("registry:catalog:pull", ScopeError::NoActions("pull".into())),
        ("registry:other:*", ScopeError::UnknownRegistryResource("other".into())),
        ("registry(x):catalog:*", ScopeError::BadClass("x".into())),
        ("repository():a:pull", ScopeError::BadClass(")".into())),
        ("repository(plugin:a:pull", ScopeError::BadClass("plugin".into())),
        ("repository(plu-gin):a:pull", ScopeError::BadClass("plu-gin)".into())),
        ("Repository:a:pull", ScopeError::UnknownType("Repository".into())),
        ("repo:a:pull", ScopeError::UnknownType("repo".into())),
        ("🦀:a:pull", ScopeError::UnknownType("🦀".into())),
    ];
    for (input, want) in table {
        assert_eq!(parse_scope(input).as_ref(), Err(want), "{input}");
    }
}

#[test]
fn repository_paths_follow_the_distribution_grammar() {
    for ok in ["a", "0", "a/b", "a.b", "a_b", "a__b", "a-b", "a---b", "a1/b2.c3/d_4"] {
        assert!(valid_repository_path(ok), "{ok}");
    }
    let longest = format!("{}/{}", "a".repeat(127), "b".repeat(127));
    assert_eq!(longest.len(), 255);
    assert!(valid_repository_path(&longest));
    assert!(!valid_repository_path(&format!("{longest}c")), "256 bytes is too long");
    for bad in ["", "A", "a b", "a:b", "a@b", "a..b", "a__.b", "a_.b", ".a", "a.", "a//b"] {
        assert!(!valid_repository_path(bad), "{bad}");
    }
}

#[test]
fn several_parameters_and_space_separated_values_merge_per_resource() {
    let parsed = parse_scopes([
        "repository:team/app:pull",
        "repository:team/app:push registry:catalog:* repository:team/base:pull",
        "repository:team/app:pull",
    ]);
    assert_eq!(parsed, vec![repo("team/app", &[Pull, Push]), Scope::catalog(), repo("team/base", &[Pull])]);
}

#[test]
fn invalid_scopes_in_a_list_do_not_hide_valid_ones() {
    let parsed = parse_scopes(["repository:A:pull repository:a:shout  repository:ok:pull\trepository:b:push", ""]);
    assert_eq!(parsed, vec![repo("ok", &[Pull]), repo("b", &[Push])]);
}

#[test]
fn empty_and_blank_input_gives_no_scope() {
    assert!(parse_scopes([]).is_empty());
    assert!(parse_scopes([""]).is_empty());
    assert!(parse_scopes(["   ", "\t"]).is_empty());
}

#[test]
fn many_scopes_are_capped_and_duplicates_do_not_count() {
    let many: Vec<String> = (0..10_000).map(|i| format!("repository:r{i}:pull")).collect();
    let parsed = parse_scopes(many.iter().map(String::as_str));
    assert_eq!(parsed.len(), MAX_SCOPES);
    assert_eq!(parsed[0], repo("r0", &[Pull]));
    assert_eq!(parsed[MAX_SCOPES - 1], repo(&format!("r{}", MAX_SCOPES - 1), &[Pull]));

    // Repeats of one scope are merged before the cap, so they never push out another.
    let mut repeated = vec!["repository:a:pull"; 500];
    repeated.push("repository:b:push");
    assert_eq!(parse_scopes(repeated), vec![repo("a", &[Pull]), repo("b", &[Push])]);
}

#[test]
fn input_beyond_the_byte_budget_is_not_read() {
    let filler = format!("repository:{}:pull", "a".repeat(MAX_REPOSITORY_PATH));
    let count = MAX_SCOPE_INPUT / filler.len() + 1;
    let mut values = vec![filler.as_str(); count];
    values.push("repository:late:pull");
    let parsed = parse_scopes(values);
    assert_eq!(parsed.len(), 1, "all fillers are one scope");
    assert!(!parsed.iter().any(|s| s.resource == Resource::Repository("late".into())));
}

#[test]
fn a_single_huge_value_is_refused_without_panicking() {
    let huge = format!("repository:{}:pull", "a".repeat(1 << 20));
    assert_eq!(parse_scope(&huge), Err(ScopeError::Length));
    assert!(parse_scopes([huge.as_str(), "repository:a:pull"]).is_empty(), "over the budget: nothing after it");
}

#[test]
fn access_claims_have_the_distribution_shape() {
    let access = Access::repository("team/app", &set(&[Push, Pull]));
    assert_eq!(
        serde_json::to_value(&access).unwrap(),
        serde_json::json!({"type": "repository", "name": "team/app", "actions": ["pull", "push"]})
    );
    assert_eq!(
        serde_json::to_value(Access::catalog()).unwrap(),
        serde_json::json!({"type": "registry", "name": "catalog", "actions": ["*"]})
    );
    let all = Access::repository("a", &set(&[Delete, Push, Pull]));
    assert_eq!(all.actions, ["pull", "push", "delete"]);
}

proptest! {
    #[test]
    fn the_parser_never_panics_on_arbitrary_input(values in prop::collection::vec(".{0,300}", 0..8)) {
        let parsed = parse_scopes(values.iter().map(String::as_str));
        prop_assert!(parsed.len() <= MAX_SCOPES);
        for scope in &parsed {
            prop_assert!(!scope.actions.is_empty());
            if let Resource::Repository(path) = &scope.resource {
                prop_assert!(valid_repository_path(path));
            }
        }
    }

    #[test]
    fn the_parser_never_panics_on_scope_like_input(
        kind in "(repository|registry|repo)(\\([a-z:()]{0,4}\\))?",
        name in "[a-zA-Z0-9._/:-]{0,20}",
        actions in "[a-z*,]{0,20}",
    ) {
        let input = format!("{kind}:{name}:{actions}");
        if let Ok(scope) = parse_scope(&input) {
            prop_assert!(!scope.actions.is_empty());
            match &scope.resource {
                Resource::Repository(path) => {
                    prop_assert_eq!(path, &name);
                    // Never widened: each action came from the list, `*` standing for all.
                    for action in &scope.actions {
                        let named = actions.split(',').any(|a| a == "*" || a == action_name(*action));
                        prop_assert!(named, "{action:?} not asked for in {actions:?}");
                    }
                }
                Resource::Catalog => prop_assert_eq!(name.as_str(), "catalog"),
            }
        }
    }

    #[test]
    fn valid_paths_survive_a_round_trip(path in "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,2}(/[a-z0-9]{1,8}){0,3}") {
        let scope = parse_scope(&format!("repository:{path}:pull,push")).unwrap();
        prop_assert_eq!(scope, repo(&path, &[Pull, Push]));
    }
}
