use proptest::prelude::*;

use super::*;

fn d(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

#[test]
fn image_references_parse_like_the_distribution_library() {
    let r = parse_image("registry.example:5000/team/app:v1").unwrap();
    assert_eq!(
        (r.host.as_str(), r.path.as_str(), r.tag.as_deref(), r.digest),
        ("registry.example:5000", "team/app", Some("v1"), None)
    );
    let r = parse_image(&format!("127.0.0.1:5000/a/b:stable@{}", d('a'))).unwrap();
    assert_eq!((r.tag.as_deref(), r.digest.as_deref()), (Some("stable"), Some(d('a').as_str())));
    let r = parse_image("nginx").unwrap();
    assert_eq!((r.host.as_str(), r.path.as_str(), r.tag_or_latest()), ("docker.io", "library/nginx", "latest"));
    let r = parse_image("team/app:1.2").unwrap();
    assert_eq!((r.host.as_str(), r.path.as_str()), ("docker.io", "team/app"));
    let r = parse_image("localhost/app").unwrap();
    assert_eq!(r.host, "localhost");
    assert_eq!(parse_image("r:5000/a:v1").unwrap().pinned(&d('b')), format!("r:5000/a:v1@{}", d('b')));
    assert_eq!(parse_image("r:5000/a").unwrap().pinned(&d('b')), format!("r:5000/a:latest@{}", d('b')));
}

#[test]
fn malformed_references_are_errors() {
    for bad in
        ["", "UPPER/app", "r:5000/a:", "r:5000/a@sha256:xyz", "a b", "r:5000//a", "r:5000/a:-x", "r:5000/a@md5:00"]
    {
        assert!(parse_image(bad).is_err(), "{bad:?} must be refused");
    }
}

fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn settings_come_from_annotations() {
    assert_eq!(parse_settings(&ann(&[])).unwrap(), None, "not opted in");
    let s = parse_settings(&ann(&[(ROLLOUT_ANNOTATION, "digest")])).unwrap().unwrap();
    assert_eq!(s, Settings { containers: None, poll_interval: DEFAULT_POLL_INTERVAL, auto_rollback: false });
    let s = parse_settings(&ann(&[
        (ROLLOUT_ANNOTATION, "digest"),
        (CONTAINERS_ANNOTATION, "app, worker"),
        (POLL_INTERVAL_ANNOTATION, "30s"),
        (ROLLBACK_ANNOTATION, "auto"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(s.containers, Some(vec!["app".to_string(), "worker".to_string()]));
    assert_eq!(s.poll_interval, Duration::from_secs(30));
    assert!(s.auto_rollback);
}

#[test]
fn malformed_annotations_say_what_is_wrong() {
    let cases = [
        (vec![(ROLLOUT_ANNOTATION, "tag")], "must be \"digest\""),
        (vec![(ROLLOUT_ANNOTATION, "digest"), (CONTAINERS_ANNOTATION, "app,,worker")], "comma-separated list"),
        (vec![(ROLLOUT_ANNOTATION, "digest"), (CONTAINERS_ANNOTATION, "App")], "comma-separated list"),
        (vec![(ROLLOUT_ANNOTATION, "digest"), (POLL_INTERVAL_ANNOTATION, "soon")], "poll-interval"),
        (vec![(ROLLOUT_ANNOTATION, "digest"), (POLL_INTERVAL_ANNOTATION, "1s")], "at least"),
        (vec![(ROLLOUT_ANNOTATION, "digest"), (ROLLBACK_ANNOTATION, "yes")], "\"auto\" or \"off\""),
    ];
    for (pairs, expected) in cases {
        let err = parse_settings(&ann(&pairs)).unwrap_err();
        assert!(err.contains(expected), "{err:?} should contain {expected:?}");
    }
}

struct Known(BTreeMap<String, String>, BTreeMap<String, i64>);

impl Digests for Known {
    fn current(&self, image: &ImageRef) -> Option<&str> {
        self.0.get(&format!("{}/{}:{}", image.host, image.path, image.tag_or_latest())).map(String::as_str)
    }
    fn pushed_at(&self, _: &ImageRef, digest: &str) -> Option<i64> {
        self.1.get(digest).copied()
    }
}

fn container(name: &str, image: &str, init: bool) -> Container {
    Container { name: name.into(), image: image.into(), init }
}

#[test]
fn plans_pin_followed_containers_to_the_new_digest_only() {
    let known = Known(
        [("r:5000/t/app:stable".to_string(), d('b')), ("r:5000/t/init:v1".to_string(), d('c'))].into(),
        [(d('a'), 1), (d('b'), 2), (d('c'), 3)].into(),
    );
    let settings = Settings { containers: None, poll_interval: DEFAULT_POLL_INTERVAL, auto_rollback: false };
    let containers = vec![
        container("app", &format!("r:5000/t/app:stable@{}", d('a')), false),
        container("migrate", "r:5000/t/init:v1", true),
        container("sidecar", "docker.io/library/envoy:v1", false),
        container("same", &format!("r:5000/t/init:v1@{}", d('c')), false),
    ];
    let pins = plan(&containers, &settings, |h| h == "r:5000", &known, &[]);
    assert_eq!(
        pins,
        vec![
            Pin {
                container: "app".into(),
                init: false,
                image: format!("r:5000/t/app:stable@{}", d('b')),
                digest: d('b'),
                previous_digest: Some(d('a')),
            },
            Pin {
                container: "migrate".into(),
                init: true,
                image: format!("r:5000/t/init:v1@{}", d('c')),
                digest: d('c'),
                previous_digest: None,
            },
        ]
    );
    let only_app = Settings { containers: Some(vec!["app".into()]), ..settings.clone() };
    assert_eq!(plan(&containers, &only_app, |h| h == "r:5000", &known, &[]).len(), 1);
    assert!(
        plan(&containers, &only_app, |h| h == "r:5000", &known, &[d('b')]).is_empty(),
        "a bad digest is not applied again"
    );
}

#[test]
fn never_back_to_an_older_digest() {
    let known = Known([("r:5000/t/app:stable".to_string(), d('a'))].into(), [(d('a'), 1), (d('b'), 2)].into());
    let settings = Settings { containers: None, poll_interval: DEFAULT_POLL_INTERVAL, auto_rollback: false };
    let running_newer = vec![container("app", &format!("r:5000/t/app:stable@{}", d('b')), false)];
    assert!(plan(&running_newer, &settings, |_| true, &known, &[]).is_empty());
}

proptest! {
    #[test]
    fn parsing_never_panics(s in ".{0,120}") {
        let _ = parse_image(&s);
        let _ = parse_settings(&ann(&[(ROLLOUT_ANNOTATION, "digest"), (CONTAINERS_ANNOTATION, &s), (POLL_INTERVAL_ANNOTATION, &s)]));
    }

    #[test]
    fn pinned_references_parse_back(host in "[a-z]{1,8}\\.[a-z]{2,3}(:[0-9]{2,5})?", path in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}", tag in "[a-z0-9][a-z0-9._-]{0,20}") {
        let r = parse_image(&format!("{host}/{path}:{tag}")).unwrap();
        let digest = d('e');
        let back = parse_image(&r.pinned(&digest)).unwrap();
        prop_assert_eq!(back.host, host);
        prop_assert_eq!(back.path, path);
        prop_assert_eq!(back.tag.as_deref(), Some(tag.as_str()));
        prop_assert_eq!(back.digest, Some(digest));
    }
}
