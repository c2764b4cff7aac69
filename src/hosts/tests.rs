use proptest::prelude::*;

use super::*;

fn spec(url: &str, aliases: &[&str]) -> RegistrySpec {
    serde_json::from_value(serde_json::json!({"url": url, "aliases": aliases})).unwrap()
}

fn hosts(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_url_gives_its_host_and_port_in_lower_case() {
    assert_eq!(url_host("http://berth-registry.berth.svc:5000").as_deref(), Some("berth-registry.berth.svc:5000"));
    assert_eq!(url_host("https://Registry.Example.com/prefix").as_deref(), Some("registry.example.com"));
    // The scheme's default port is no part of the name, as `r.example` is how people write it.
    assert_eq!(url_host("https://r.example:443").as_deref(), Some("r.example"));
    assert_eq!(url_host("http://r.example:443").as_deref(), Some("r.example:443"));
    assert_eq!(url_host("http://[::1]:5000").as_deref(), Some("[::1]:5000"));
    assert_eq!(url_host("registry.example.com"), None, "no scheme: not a URL");
}

#[test]
fn aliases_are_host_and_port_only() {
    for good in [
        "127.0.0.1:30500",
        "10.88.0.1:30500",
        "registry.example.com",
        "registry.example.com:443",
        "localhost",
        "localhost:5000",
        "[::1]:5000",
        "[fd00::1]",
        "[::ffff:10.0.0.1]:30500",
        "a-b.c",
        "r.example:1",
        "r.example:65535",
    ] {
        assert_eq!(check_alias(good), Ok(()), "{good}");
    }
    for (bad, why) in [
        ("", "characters"),
        ("http://r.example", "no scheme and no path"),
        ("r.example/v2", "no scheme and no path"),
        ("r.example:", "port"),
        ("r.example:0", "port"),
        ("r.example:65536", "port"),
        ("r.example:123456", "port"),
        ("r.example:80:1", "port"),
        ("r.example:https", "port"),
        ("Registry.example.com", "lower-case"),
        ("r_x.example", "lower-case"),
        ("r.example ", "lower-case"),
        ("-a.b", "lower-case"),
        ("a..b", "lower-case"),
        ("a.b.", "lower-case"),
        (":5000", "lower-case"),
        ("myregistry", "Docker Hub path"),
        ("[::1", "unclosed"),
        ("[::1]x", "only :port"),
        ("[]", "IPv6"),
        ("[G::1]", "IPv6"),
        ("[::1]:0", "port"),
    ] {
        let e = check_alias(bad).expect_err(bad);
        assert!(e.contains(why), "{bad:?}: {e}");
    }
    assert!(check_alias(&format!("{}.example", "a".repeat(64))).is_err(), "a label is at most 63");
    assert!(check_alias(&format!("{}.example", "a".repeat(63))).is_ok());
    let long = format!("{}.e:5000", vec!["a".repeat(63); 4].join("."));
    assert!(long.len() > MAX_ALIAS_LEN && check_alias(&long).is_err());
}

#[test]
fn a_registry_is_pulled_by_its_url_host_and_its_valid_aliases_each_once() {
    let s = spec("http://berth-registry.berth.svc:5000", &["127.0.0.1:30500", "registry.example.com"]);
    assert_eq!(of_registry(&s), hosts(&["berth-registry.berth.svc:5000", "127.0.0.1:30500", "registry.example.com"]));
    let s = spec("https://r.example", &["r.example", "bad/alias", "10.0.0.1:30500", "10.0.0.1:30500"]);
    assert_eq!(of_registry(&s), hosts(&["r.example", "10.0.0.1:30500"]), "duplicates once, invalid ones never");
    assert_eq!(of_registry(&spec("not a url", &["r.example"])), hosts(&["r.example"]));
    // Written as the kubelet will compare them; berth's matching compares canonically.
    let hub = of_registry(&spec("https://Index.Docker.io", &[]));
    assert_eq!(hub, hosts(&["index.docker.io"]));
    assert_eq!(repository_suffix("nginx:1", &hub, "library/nginx"), Some(":1"));
}

#[test]
fn references_split_their_host_as_the_reference_grammar_does() {
    assert_eq!(split_reference("r.example:5000/team/app:v1"), ("r.example:5000", "team/app:v1"));
    assert_eq!(split_reference("localhost/app"), ("localhost", "app"));
    assert_eq!(split_reference("MyHost/app"), ("MyHost", "app"), "upper case marks a host");
    assert_eq!(split_reference("team/app:v1"), ("docker.io", "team/app:v1"));
    assert_eq!(split_reference("nginx"), ("docker.io", "nginx"));
    assert_eq!(split_reference("nginx:1.27"), ("docker.io", "nginx:1.27"));
    assert_eq!(split_reference("[::1]:5000/app"), ("[::1]:5000", "app"));
}

#[test]
fn a_reference_is_in_a_repository_under_any_of_its_names() {
    let h = hosts(&["berth-registry.berth.svc:5000", "127.0.0.1:30500", "registry.example.com"]);
    let d = format!("sha256:{}", "a".repeat(64));
    let at = |r: &str| repository_suffix(r, &h, "team-a/app").map(str::to_string);
    assert_eq!(at("berth-registry.berth.svc:5000/team-a/app:v1").as_deref(), Some(":v1"));
    assert_eq!(at("127.0.0.1:30500/team-a/app").as_deref(), Some(""));
    assert_eq!(at(&format!("registry.example.com/team-a/app@{d}")), Some(format!("@{d}")));
    assert_eq!(at(&format!("127.0.0.1:30500/team-a/app:v1@{d}")), Some(format!(":v1@{d}")));
    assert_eq!(
        at("Registry.Example.COM/team-a/app:v1").as_deref(),
        Some(":v1"),
        "host names compare case-insensitively"
    );
    // Ports are part of the name.
    assert_eq!(at("127.0.0.1:30501/team-a/app:v1"), None);
    assert_eq!(at("127.0.0.1/team-a/app:v1"), None);
    assert_eq!(at("registry.example.com:443/team-a/app:v1"), None);
    assert_eq!(at("berth-registry.berth.svc/team-a/app:v1"), None);
    // Other hosts, other repositories, look-alikes.
    assert_eq!(at("other.example/team-a/app:v1"), None);
    assert_eq!(at("127.0.0.1:30500/team-a/app2:v1"), None);
    assert_eq!(at("127.0.0.1:30500/team-a/app/sub:v1"), None);
    assert_eq!(at("127.0.0.1:30500/team-a/ap"), None);
    assert_eq!(at("team-a/app:v1"), None, "no host: Docker Hub");
    // Paths compare exactly: the reference grammar allows no upper case there.
    assert_eq!(at("127.0.0.1:30500/Team-A/app:v1"), None);
}

#[test]
fn docker_hub_names_are_normalised_as_the_reference_grammar_does() {
    let h = hosts(&["docker.io"]);
    let d = format!("sha256:{}", "b".repeat(64));
    for (r, suffix) in [
        ("nginx", ""),
        ("nginx:1.27", ":1.27"),
        ("docker.io/nginx:1.27", ":1.27"),
        ("library/nginx:1.27", ":1.27"),
        ("docker.io/library/nginx", ""),
        ("index.docker.io/library/nginx:1.27", ":1.27"),
        ("index.docker.io/nginx:1.27", ":1.27"),
        ("Docker.IO/library/nginx:1.27", ":1.27"),
    ] {
        assert_eq!(repository_suffix(r, &h, "library/nginx"), Some(suffix), "{r}");
    }
    assert_eq!(repository_suffix(&format!("nginx@{d}"), &h, "library/nginx"), Some(format!("@{d}").as_str()));
    for r in ["nginx2", "nginx/sub", "team/nginx", "quay.io/nginx", "localhost/nginx"] {
        assert_eq!(repository_suffix(r, &h, "library/nginx"), None, "{r}");
    }
    assert_eq!(repository_suffix("team/app:v1", &h, "team/app"), Some(":v1"));
    assert_eq!(repository_suffix("docker.io/team/app", &h, "team/app"), Some(""));
    assert_eq!(repository_suffix("app", &h, "team/app"), None);
    // Only a registry pulled as docker.io sees host-less references.
    assert_eq!(repository_suffix("nginx", &hosts(&["r.example"]), "library/nginx"), None);
    assert_eq!(repository_suffix("nginx", &hosts(&["r.example"]), "nginx"), None);
}

#[test]
fn every_name_belongs_to_one_registry_and_a_url_beats_an_alias() {
    let a = spec("http://a.example:5000", &["shared.example", "127.0.0.1:30500"]);
    let b = spec("http://shared.example", &["127.0.0.1:30500", "b.example"]);
    let c = spec("http://c.example", &["b.example", "Bad"]);
    for order in [vec![("a", &a), ("b", &b), ("c", &c)], vec![("c", &c), ("b", &b), ("a", &a)]] {
        let index = Index::new(order);
        assert_eq!(index.registry("a.example:5000"), Some("a"));
        assert_eq!(index.registry("shared.example"), Some("b"), "b's url beats a's alias");
        assert_eq!(index.registry("127.0.0.1:30500"), Some("a"), "alias against alias: the first name");
        assert_eq!(index.registry("b.example"), Some("b"));
        assert_eq!(index.registry("C.Example"), Some("c"), "canonical lookups");
        assert_eq!(index.registry("bad"), None, "an invalid alias names nothing");
        assert_eq!(index.registry("a.example"), None, "the port is part of the name");
    }
}

/// The CEL pattern the CRD checks `aliases` with, from the generated CRD.
fn admission_pattern() -> &'static regex::Regex {
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    PATTERN.get_or_init(compile_admission_pattern)
}

fn compile_admission_pattern() -> regex::Regex {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(crate::api::Registry::crd()).unwrap();
    let aliases =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["aliases"];
    let rules = aliases["x-kubernetes-validations"].as_array().expect("aliases has CEL rules");
    let rule = rules.iter().filter_map(|r| r["rule"].as_str()).find(|r| r.contains(".matches('^")).unwrap();
    let start = rule.find(".matches('").unwrap() + ".matches('".len();
    let end = start + rule[start..].find("')").unwrap();
    // A CEL single-quoted string: `\\` is one backslash.
    regex::Regex::new(&rule[start..end].replace("\\\\", "\\")).unwrap()
}

/// What the admission rules accept, the pattern taken from the CRD and the CEL around it
/// written out in Rust.
fn admitted(pattern: &regex::Regex, a: &str) -> bool {
    // `!a.matches(':[0-9]{1,5}$') || int(a.substring(a.lastIndexOf(':') + 1)) in [1, 65535]`
    let port_ok = match a.rfind(':').map(|i| &a[i + 1..]) {
        Some(p) if (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p))
        }
        _ => true,
    };
    !a.contains('/') && pattern.is_match(a) && (a == "localhost" || a.contains('.') || a.contains(':')) && port_ok
}

#[test]
fn the_admission_rules_and_the_controller_agree_on_the_table() {
    let pattern = admission_pattern();
    for a in [
        "127.0.0.1:30500",
        "registry.example.com",
        "localhost",
        "[::1]:5000",
        "[fd00::1]",
        "r.example:0",
        "r.example:65536",
        "R.example",
        "myregistry",
        "http://r.example",
        "r.example/x",
        "[::1",
        "a..b",
        "-a.b",
        "r.example:",
        "",
        "[::1]:99999",
        "[a]",
        "[1.2]",
    ] {
        assert_eq!(admitted(pattern, a), check_alias(a).is_ok(), "{a:?}");
    }
}

proptest! {
    #[test]
    fn the_admission_rules_and_the_controller_agree(a in "[a-zA-Z0-9.:/\\[\\]_-]{0,24}") {
        let pattern = admission_pattern();
        prop_assert_eq!(admitted(pattern, &a), check_alias(&a).is_ok(), "{:?}", a);
    }

    #[test]
    fn references_match_under_every_name_and_nothing_else(
        name in prop::sample::select(vec!["127.0.0.1", "10.88.0.1", "registry.example.com", "localhost", "berth-registry.berth.svc"]),
        port in prop::option::of(1u16..),
        other_port in 1u16..,
        upper in any::<u64>(),
        path in "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,2}",
        tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"),
        digest in prop::option::of("[0-9a-f]{64}"),
    ) {
        let host = match port { Some(p) => format!("{name}:{p}"), None => name.to_string() };
        prop_assume!(check_alias(&host).is_ok());
        let registry = spec("http://in-cluster.svc:5000", &[host.as_str()]);
        let names = of_registry(&registry);
        // Written in any case.
        let written: String = host.chars().enumerate()
            .map(|(i, c)| if upper >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c }).collect();
        let suffix = format!(
            "{}{}",
            tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default(),
            digest.as_ref().map(|d| format!("@sha256:{d}")).unwrap_or_default(),
        );
        for h in [written.as_str(), "in-cluster.svc:5000"] {
            let reference = format!("{h}/{path}{suffix}");
            prop_assert_eq!(repository_suffix(&reference, &names, &path), Some(suffix.as_str()), "{}", reference);
            let longer = format!("{h}/{path}x{suffix}");
            let deeper = format!("{h}/{path}/x{suffix}");
            prop_assert_eq!(repository_suffix(&longer, &names, &path), None);
            prop_assert_eq!(repository_suffix(&deeper, &names, &path), None);
        }
        // Another port, or none, is another name.
        if port != Some(other_port) {
            let moved = format!("{name}:{other_port}/{path}{suffix}");
            prop_assert_eq!(repository_suffix(&moved, &names, &path), None, "{}", moved);
        }
        if port.is_some() {
            let portless = format!("{name}/{path}{suffix}");
            prop_assert_eq!(repository_suffix(&portless, &names, &path), None);
        }
        // The pure reference, the rollout grammar's view of it, agrees on the host and path.
        let parsed = crate::rollout::parse_image(&format!("{written}/{path}{suffix}")).unwrap();
        let index = Index::new([("r", &registry)]);
        prop_assert_eq!(index.registry(&parsed.host), Some("r"));
        prop_assert_eq!(parsed.path, path);
    }
}
