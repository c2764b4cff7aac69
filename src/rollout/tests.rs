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
    // An upper-case first component is a host (as in the distribution library), kept as written.
    let r = parse_image("LocalHost/app").unwrap();
    assert_eq!((r.host.as_str(), r.path.as_str()), ("LocalHost", "app"));
    let r = parse_image("index.docker.io/nginx").unwrap();
    assert_eq!((r.host.as_str(), r.path.as_str()), ("index.docker.io", "library/nginx"));
    assert_eq!(parse_image("r:5000/a:v1").unwrap().pinned(&d('b')), format!("r:5000/a:v1@{}", d('b')));
    assert_eq!(parse_image("r:5000/a").unwrap().pinned(&d('b')), format!("r:5000/a:latest@{}", d('b')));
}

#[test]
fn malformed_references_are_errors() {
    for bad in [
        "",
        "team/App",
        "r:5000/a:",
        "r:5000/a@sha256:xyz",
        "a b",
        "r:5000//a",
        "r:5000/a:-x",
        "r:5000/a@md5:00",
        "r:5000/",
    ] {
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
    assert_eq!(
        s,
        Settings {
            policy: Policy::Digest,
            containers: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            auto_rollback: false,
            max_severity: None,
        }
    );
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
        (vec![(ROLLOUT_ANNOTATION, "tag")], "unknown rollout policy"),
        (vec![(ROLLOUT_ANNOTATION, "semver:~x.4")], "berth.dev/rollout: "),
        (vec![(ROLLOUT_ANNOTATION, "digest"), (CONTAINERS_ANNOTATION, "app,,worker")], "comma-separated list"),
        (vec![(ROLLOUT_ANNOTATION, "digest"), (CONTAINERS_ANNOTATION, "App")], "comma-separated list"),
        (vec![(ROLLOUT_ANNOTATION, "digest"), (POLL_INTERVAL_ANNOTATION, "soon")], "poll-interval"),
        (vec![(ROLLOUT_ANNOTATION, "digest"), (POLL_INTERVAL_ANNOTATION, "1s")], "at least"),
        (vec![(ROLLOUT_ANNOTATION, "digest"), (ROLLBACK_ANNOTATION, "yes")], "\"auto\" or \"off\""),
        (vec![(ROLLOUT_ANNOTATION, "digest"), (MAX_SEVERITY_ANNOTATION, "severe")], "berth.dev/max-severity: "),
        (vec![(ROLLOUT_ANNOTATION, "semver:~1.4"), (MAX_SEVERITY_ANNOTATION, "")], "is not a severity"),
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
    fn candidates(&self, _: &ImageRef) -> Option<Vec<Candidate>> {
        None
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
    let settings = Settings {
        policy: Policy::Digest,
        containers: None,
        poll_interval: DEFAULT_POLL_INTERVAL,
        auto_rollback: false,
        max_severity: None,
    };
    let containers = vec![
        container("app", &format!("r:5000/t/app:stable@{}", d('a')), false),
        container("migrate", "r:5000/t/init:v1", true),
        container("sidecar", "docker.io/library/envoy:v1", false),
        container("same", &format!("r:5000/t/init:v1@{}", d('c')), false),
    ];
    let pins = plan(&containers, &settings, |h| h == "r:5000", &known, &[]).pins;
    assert_eq!(
        pins,
        vec![
            Pin {
                container: "app".into(),
                init: false,
                image: format!("r:5000/t/app:stable@{}", d('b')),
                digest: d('b'),
                previous_digest: Some(d('a')),
                ..Pin::default()
            },
            Pin {
                container: "migrate".into(),
                init: true,
                image: format!("r:5000/t/init:v1@{}", d('c')),
                digest: d('c'),
                previous_digest: None,
                ..Pin::default()
            },
        ]
    );
    let only_app = Settings { containers: Some(vec!["app".into()]), ..settings.clone() };
    assert_eq!(plan(&containers, &only_app, |h| h == "r:5000", &known, &[]).pins.len(), 1);
    assert!(
        plan(&containers, &only_app, |h| h == "r:5000", &known, &[d('b')]).pins.is_empty(),
        "a bad digest is not applied again"
    );
}

/// What the rollout controller knows, keyed as it keys tags: by Registry, whatever name the
/// image uses.
struct ByRegistry(crate::hosts::Index, BTreeMap<TagKey, String>);

impl Digests for ByRegistry {
    fn current(&self, image: &ImageRef) -> Option<&str> {
        self.1.get(&tag_key(&self.0, image)?).map(String::as_str)
    }
    fn pushed_at(&self, _: &ImageRef, _: &str) -> Option<i64> {
        None
    }
    fn candidates(&self, _: &ImageRef) -> Option<Vec<Candidate>> {
        None
    }
}

fn registry_spec(url: &str, aliases: &[&str]) -> crate::api::RegistrySpec {
    serde_json::from_value(serde_json::json!({"url": url, "aliases": aliases})).unwrap()
}

#[test]
fn a_tag_pulled_by_several_names_is_one_tag_and_each_pin_keeps_its_name() {
    let main = registry_spec("http://berth-registry.berth.svc:5000", &["127.0.0.1:30500", "registry.example.com"]);
    let index = crate::hosts::Index::new([("main", &main)]);
    let key = |image: &str| tag_key(&index, &parse_image(image).unwrap());
    let stable = Some(("main".to_string(), "team/app".to_string(), "stable".to_string()));
    assert_eq!(key("berth-registry.berth.svc:5000/team/app:stable"), stable);
    assert_eq!(key("127.0.0.1:30500/team/app:stable"), stable);
    assert_eq!(key(&format!("Registry.Example.com/team/app:stable@{}", d('a'))), stable);
    assert_eq!(key("127.0.0.1:30501/team/app:stable"), None, "another port is another registry");
    assert_eq!(key("registry.example.com:443/team/app:stable"), None);
    assert_eq!(key("team/app:stable"), None, "Docker Hub");

    let known = ByRegistry(index.clone(), [(stable.clone().unwrap(), d('b'))].into());
    let settings = Settings {
        policy: Policy::Digest,
        containers: None,
        poll_interval: DEFAULT_POLL_INTERVAL,
        auto_rollback: false,
        max_severity: None,
    };
    let containers = vec![
        container("by-port", &format!("127.0.0.1:30500/team/app:stable@{}", d('a')), false),
        container("by-ingress", "Registry.Example.com/team/app:stable", false),
        container("in-cluster", "berth-registry.berth.svc:5000/team/app:stable", true),
        container("elsewhere", "127.0.0.1:30501/team/app:stable", false),
    ];
    let known_host = |h: &str| index.registry(h).is_some();
    let pins: Vec<(String, String)> = plan(&containers, &settings, known_host, &known, &[])
        .pins
        .into_iter()
        .map(|p| (p.container, p.image))
        .collect();
    assert_eq!(
        pins,
        vec![
            ("by-port".to_string(), format!("127.0.0.1:30500/team/app:stable@{}", d('b'))),
            ("by-ingress".to_string(), format!("Registry.Example.com/team/app:stable@{}", d('b'))),
            ("in-cluster".to_string(), format!("berth-registry.berth.svc:5000/team/app:stable@{}", d('b'))),
        ]
    );
}

#[test]
fn never_back_to_an_older_digest() {
    let known = Known([("r:5000/t/app:stable".to_string(), d('a'))].into(), [(d('a'), 1), (d('b'), 2)].into());
    let settings = Settings {
        policy: Policy::Digest,
        containers: None,
        poll_interval: DEFAULT_POLL_INTERVAL,
        auto_rollback: false,
        max_severity: None,
    };
    let running_newer = vec![container("app", &format!("r:5000/t/app:stable@{}", d('b')), false)];
    assert!(plan(&running_newer, &settings, |_| true, &known, &[]).pins.is_empty());
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

fn pin(container: &str, digest: &str, previous: Option<&str>) -> Pin {
    Pin {
        container: container.into(),
        init: false,
        image: format!("r:5000/team/app:stable@{digest}"),
        digest: digest.into(),
        previous_digest: previous.map(String::from),
        ..Pin::default()
    }
}

#[test]
fn the_record_round_trips_through_annotations_and_ignores_garbage() {
    let r = Record::default().pinned(&[pin("app", &d('b'), Some(&d('a'))), pin("side", &d('c'), None)], "T1", None);
    assert_eq!(r.digests.get("app"), Some(&d('b')));
    assert_eq!(r.previous.get("app"), Some(&d('a')));
    assert!(!r.previous.contains_key("side"));
    assert_eq!(Record::from_annotations(&r.to_annotations()), r);
    let garbage = ann(&[
        (DIGEST_ANNOTATION, "app=notadigest,=x,side"),
        (BAD_DIGESTS_ANNOTATION, "sha256:zz, ,"),
        (PREVIOUS_DIGEST_ANNOTATION, "===="),
    ]);
    assert_eq!(Record::from_annotations(&garbage), Record::default());
}

#[test]
fn the_scan_gate_is_opt_in_for_every_policy() {
    let s = parse_settings(&ann(&[(ROLLOUT_ANNOTATION, "digest")])).unwrap().unwrap();
    assert_eq!(s.max_severity, None, "not gated unless asked");
    for policy in ["digest", "semver:~1.4", "newest-pushed:^v"] {
        let s =
            parse_settings(&ann(&[(ROLLOUT_ANNOTATION, policy), (MAX_SEVERITY_ANNOTATION, "High")])).unwrap().unwrap();
        assert_eq!(s.max_severity, Some(MaxSeverity(Some(crate::scanning::Severity::High))), "{policy}");
    }
    let s =
        parse_settings(&ann(&[(ROLLOUT_ANNOTATION, "digest"), (MAX_SEVERITY_ANNOTATION, "none")])).unwrap().unwrap();
    assert_eq!(s.max_severity, Some(MaxSeverity(None)), "None: no finding allowed, not \"no gate\"");
    // Without the rollout annotation berth does not roll the workload out at all.
    assert_eq!(parse_settings(&ann(&[(MAX_SEVERITY_ANNOTATION, "High")])).unwrap(), None);
}

#[test]
fn the_hold_is_kept_with_berths_other_annotations_and_goes_when_cleared() {
    let mut r = Record::default().pinned(&[pin("app", &d('b'), Some(&d('a')))], "T1", None);
    r.held = Some(format!("app={}: waiting for ImageScan a/b", d('c')));
    let annotations = r.to_annotations();
    assert_eq!(annotations.get(HELD_ANNOTATION), r.held.as_ref());
    assert_eq!(Record::from_annotations(&annotations), r);
    let body = apply_body(Kind::Deployment, "ns", "web", &[], &[], &r);
    assert_eq!(body["metadata"]["annotations"][HELD_ANNOTATION], serde_json::json!(r.held));
    r.held = None;
    let body = apply_body(Kind::Deployment, "ns", "web", &[], &[], &r);
    assert!(body["metadata"]["annotations"].get(HELD_ANNOTATION).is_none(), "left out: the apply removes it");
    assert_eq!(body["metadata"]["annotations"][DIGEST_ANNOTATION], serde_json::json!(format!("app={}", d('b'))));
}

#[test]
fn rollback_returns_to_the_previous_digest_and_marks_the_bad_one() {
    let running = vec![
        container("app", &format!("r:5000/team/app:stable@{}", d('b')), false),
        container("side", "r:5000/team/side:v1", false),
    ];
    let record = Record::default().pinned(&[pin("app", &d('b'), Some(&d('a')))], "T1", None);
    let (pins, next) = rollback(&running, &record, "T2").expect("a rollback");
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].image, format!("r:5000/team/app:stable@{}", d('a')));
    assert_eq!(next.bad, vec![d('b')]);
    assert_eq!(next.digests.get("app"), Some(&d('a')));
    assert!(next.previous.is_empty(), "no second rollback from the rolled-back digest");
    assert_eq!(next.pinned_at.as_deref(), Some("T2"));
    // After the rollback: nothing more to roll back, and the plan skips the bad digest.
    let rolled = vec![container("app", &pins[0].image, false)];
    assert!(rollback(&rolled, &next, "T3").is_none());
    let s = Settings {
        policy: Policy::Digest,
        containers: None,
        poll_interval: DEFAULT_POLL_INTERVAL,
        auto_rollback: true,
        max_severity: None,
    };
    let tags = Known([("r:5000/team/app:stable".to_string(), d('b'))].into(), BTreeMap::new());
    assert!(plan(&rolled, &s, |_| true, &tags, &next.bad).pins.is_empty());
    assert_eq!(plan(&rolled, &s, |_| true, &tags, &[]).pins.len(), 1, "only the bad mark keeps it off");
}

#[test]
fn no_rollback_without_a_previous_digest_or_when_someone_else_changed_the_image() {
    let record = Record::default().pinned(&[pin("app", &d('b'), None)], "T1", None);
    let running = vec![container("app", &format!("r:5000/team/app:stable@{}", d('b')), false)];
    assert!(rollback(&running, &record, "T2").is_none(), "adopted at b: nothing earlier to go back to");
    let record = Record::default().pinned(&[pin("app", &d('b'), Some(&d('a')))], "T1", None);
    let changed = vec![container("app", "r:5000/team/app:v9", false)];
    assert!(rollback(&changed, &record, "T2").is_none(), "a person changed the image: leave it");
}

#[test]
fn bad_digests_stay_bounded() {
    let mut record = Record::default();
    for i in 0..40u32 {
        let cur = format!("sha256:{:064x}", i + 1);
        let prev = format!("sha256:{:064x}", i + 1000);
        record = record.pinned(&[pin("app", &cur, Some(&prev))], "T", None);
        let running = vec![container("app", &format!("r:5000/team/app:stable@{cur}"), false)];
        record = rollback(&running, &record, "T").unwrap().1;
    }
    assert_eq!(record.bad.len(), record::MAX_BAD_DIGESTS);
    assert_eq!(record.bad.last().unwrap(), &format!("sha256:{:064x}", 40));
}

#[test]
fn the_apply_body_touches_only_followed_images_and_berths_annotations() {
    let containers = vec![
        container("app", "r:5000/team/app:stable", false),
        container("sidecar", "docker.io/library/envoy:v1", false),
        container("migrate", "r:5000/team/migrate:stable", true),
    ];
    let pins = vec![Pin { init: true, ..pin("migrate", &d('c'), None) }];
    // app was pinned before: it stays in the body so the apply does not drop berth's ownership.
    let record = Record::default().pinned(&[pin("app", &d('b'), Some(&d('a')))], "T1", None).pinned(&pins, "T2", None);
    let body = apply_body(Kind::Deployment, "ns", "web", &containers, &pins, &record);
    assert_eq!(body["apiVersion"], "apps/v1");
    assert_eq!(body["kind"], "Deployment");
    assert_eq!(body["metadata"]["namespace"], "ns");
    let spec = &body["spec"]["template"]["spec"];
    assert_eq!(spec["containers"], serde_json::json!([{"name": "app", "image": "r:5000/team/app:stable"}]));
    assert_eq!(spec["initContainers"][0]["image"], format!("r:5000/team/app:stable@{}", d('c')));
    assert_eq!(spec.as_object().unwrap().len(), 2, "nothing but the image lists");
    let annotations = body["metadata"]["annotations"].as_object().unwrap();
    assert!(annotations.keys().all(|k| k.starts_with("berth.dev/")));
    assert_eq!(annotations[PINNED_AT_ANNOTATION], "T2");

    let cron = apply_body(Kind::CronJob, "ns", "nightly", &containers, &pins, &record);
    assert_eq!(cron["apiVersion"], "batch/v1");
    assert!(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"].is_array());
}

#[test]
fn the_generation_of_berths_rollout_is_kept_on_the_workload() {
    let r = Record::default().pinned(&[pin("app", &d('b'), Some(&d('a')))], "T1", Some(7));
    assert_eq!(r.pinned_generation, Some(8), "the pin changes the template: the next generation is berth's");
    let read = Record::from_annotations(&r.to_annotations());
    assert_eq!(read, r, "a restarted berth reads the same record");
    let running = vec![container("app", &format!("r:5000/team/app:stable@{}", d('b')), false)];
    let (_, after) = rollback(&running, &read, "T2").expect("a rollback");
    assert_eq!(after.pinned_generation, None, "a rollback is not a rollout to roll back");
    let garbage = ann(&[(PINNED_GENERATION_ANNOTATION, "x")]);
    assert_eq!(Record::from_annotations(&garbage).pinned_generation, None);
}

/// A repository as a version policy sees it: tag -> (digest if resolved, push time in ms); the
/// tags whose digest was read before the last listing, and those whose lookup fails.
struct Listed(Vec<(&'static str, Option<String>, Option<i64>)>, Vec<&'static str>, Vec<&'static str>);

fn listed(tags: Vec<(&'static str, Option<String>, Option<i64>)>) -> Listed {
    Listed(tags, Vec::new(), Vec::new())
}

impl Digests for Listed {
    fn fresh(&self, image: &ImageRef) -> bool {
        !self.1.contains(&image.tag_or_latest())
    }
    fn lookup_failing(&self, image: &ImageRef) -> bool {
        self.2.contains(&image.tag_or_latest())
    }
    fn current(&self, _: &ImageRef) -> Option<&str> {
        None
    }
    fn pushed_at(&self, _: &ImageRef, _: &str) -> Option<i64> {
        None
    }
    fn candidates(&self, _: &ImageRef) -> Option<Vec<Candidate>> {
        Some(
            self.0
                .iter()
                .map(|(t, d, at)| Candidate { tag: t.to_string(), digest: d.clone(), pushed_at_ms: *at })
                .collect(),
        )
    }
}

fn versioned(policy: &str) -> Settings {
    Settings {
        policy: policy::parse(policy).unwrap(),
        containers: None,
        poll_interval: DEFAULT_POLL_INTERVAL,
        auto_rollback: false,
        max_severity: None,
    }
}

#[test]
fn a_version_policy_pins_the_picked_tag_with_its_digest_and_remembers_the_tag_it_left() {
    let repo = listed(vec![
        ("v1.4.2", Some(d('a')), None),
        ("v1.4.3", Some(d('b')), None),
        ("v1.5.0", Some(d('c')), None),
        ("v1.4.4-rc.1", Some(d('e')), None),
    ]);
    let running = vec![container("app", &format!("r:5000/t/app:v1.4.2@{}", d('a')), false)];
    let plan = plan(&running, &versioned("semver:~1.4"), |_| true, &repo, &[]);
    assert!(plan.resolve.is_empty());
    assert_eq!(plan.pins.len(), 1);
    let p = &plan.pins[0];
    assert_eq!(p.image, format!("r:5000/t/app:v1.4.3@{}", d('b')));
    assert_eq!((p.previous_digest.as_deref(), p.previous_tag.as_deref()), (Some(d('a').as_str()), Some("v1.4.2")));
    assert!(p.reason.as_deref().unwrap().contains("v1.4.3 is the highest"), "{:?}", p.reason);

    // Pinned already: nothing to do.
    let pinned = vec![container("app", &p.image, false)];
    assert_eq!(plan_of(&pinned, "semver:~1.4", &repo, &[]), Plan::default());
    // The picked tag's digest is not known yet: ask for it, pin nothing.
    let unresolved = listed(vec![("v1.4.2", Some(d('a')), None), ("v1.4.3", None, None)]);
    let plan = plan_of(&running, "semver:~1.4", &unresolved, &[]);
    assert!(plan.pins.is_empty());
    assert_eq!(plan.resolve, vec![parse_image("r:5000/t/app:v1.4.3").unwrap()]);
    // A digest marked bad is left out: the next best stands, here the running one.
    assert_eq!(plan_of(&running, "semver:~1.4", &repo, &[d('b')]), Plan::default());
}

#[test]
fn plans_name_the_containers_they_cannot_decide_for_yet() {
    // `digest`: a tag whose digest berth has not read yet is undecided; one it has read is
    // decided, pinned or not.
    let known = Known([("r:5000/t/app:stable".to_string(), d('b'))].into(), BTreeMap::new());
    let containers = vec![
        container("app", &format!("r:5000/t/app:stable@{}", d('b')), false),
        container("side", "r:5000/t/side:v1", false),
        container("other", "elsewhere.example/x:v1", false),
    ];
    let first = plan(&containers, &versioned("digest"), |h| h == "r:5000", &known, &[]);
    assert_eq!(first.undecided, vec!["side".to_string()], "a host berth does not know is not followed");
    assert!(first.pins.is_empty());
    let moved = Known([("r:5000/t/app:stable".to_string(), d('c'))].into(), BTreeMap::new());
    let pinned = plan(&containers[..1], &versioned("digest"), |_| true, &moved, &[]);
    assert_eq!((pinned.pins.len(), pinned.undecided.len()), (1, 0));

    // A version policy: a lookup it asks for (once named, however many) leaves it undecided;
    // a listing with nothing to move to decides it.
    let running = vec![container("app", &format!("r:5000/t/app:v1.4.2@{}", d('a')), false)];
    let unresolved = listed(vec![("v1.4.2", Some(d('a')), None), ("v1.4.3", None, None)]);
    assert_eq!(plan_of(&running, "semver:~1.4", &unresolved, &[]).undecided, vec!["app".to_string()]);
    let half = listed(vec![("nightly-1", None, None), ("nightly-2", None, None)]);
    let nightly = vec![container("app", "r:5000/t/app:nightly-1", false)];
    let asking = plan_of(&nightly, "newest-pushed:^nightly-", &half, &[]);
    assert_eq!((asking.resolve.len(), asking.undecided), (2, vec!["app".to_string()]));
    let not_listed = plan(&running, &versioned("semver:~1.4"), |_| true, &known, &[]);
    assert_eq!(not_listed.undecided, vec!["app".to_string()], "the repository is not listed yet");
    let stale = Listed(vec![("v1.4.3", Some(d('b')), None)], vec!["v1.4.3"], vec![]);
    assert_eq!(plan_of(&running, "semver:~1.4", &stale, &[]).undecided, vec!["app".to_string()], "asked again first");
    let same = listed(vec![("v1.4.2", Some(d('a')), None)]);
    assert!(plan_of(&running, "semver:~1.4", &same, &[]).undecided.is_empty());
}

fn plan_of(containers: &[Container], policy: &str, repo: &Listed, bad: &[String]) -> Plan {
    plan(containers, &versioned(policy), |_| true, repo, bad)
}

#[test]
fn a_version_policy_never_moves_back_and_keeps_a_running_tag_no_longer_listed() {
    let repo = listed(vec![("v1.4.2", Some(d('a')), None), ("v1.4.3", Some(d('b')), None)]);
    let ahead = vec![container("app", &format!("r:5000/t/app:v1.4.9@{}", d('f')), false)];
    assert_eq!(plan_of(&ahead, "semver:~1.4", &repo, &[]), Plan::default(), "v1.4.9 is not listed, nothing is above");
    let listed_ahead = listed(vec![("v1.4.2", Some(d('a')), None), ("v1.4.9", Some(d('f')), None)]);
    let older = vec![container("app", &format!("r:5000/t/app:v1.4.9@{}", d('f')), false)];
    assert_eq!(plan_of(&older, "semver:~1.4", &listed_ahead, &[]), Plan::default());
    // Outside the policy (the user changed it): the policy's pick stands, even if lower.
    let outside = vec![container("app", &format!("r:5000/t/app:v2.0.0@{}", d('f')), false)];
    let plan = plan_of(&outside, "semver:~1.4", &repo, &[]);
    assert_eq!(plan.pins[0].image, format!("r:5000/t/app:v1.4.3@{}", d('b')));
    // A tag re-pushed in place: same tag, new digest.
    let moved = listed(vec![("v1.4.3", Some(d('c')), None)]);
    let on_old = vec![container("app", &format!("r:5000/t/app:v1.4.3@{}", d('b')), false)];
    let plan = plan_of(&on_old, "semver:~1.4", &moved, &[]);
    assert_eq!((plan.pins[0].digest.as_str(), plan.pins[0].previous_tag.as_deref()), (d('c').as_str(), None));
}

#[test]
fn newest_pushed_first_learns_every_matching_digest_then_picks_by_push_time() {
    let running = vec![container("app", "r:5000/t/app:nightly-1", false)];
    let half = listed(vec![
        ("nightly-1", Some(d('a')), Some(1_000)),
        ("nightly-2", None, None),
        ("nightly-3", None, None),
        ("stable", None, None),
    ]);
    let plan = plan_of(&running, "newest-pushed:^nightly-", &half, &[]);
    assert!(plan.pins.is_empty());
    let asked: Vec<_> = plan.resolve.iter().map(|i| i.tag.clone().unwrap()).collect();
    assert_eq!(asked, ["nightly-2", "nightly-3"]);
    let known = listed(vec![
        ("nightly-1", Some(d('a')), Some(1_000)),
        ("nightly-2", Some(d('b')), Some(1_002)),
        ("nightly-3", Some(d('c')), Some(1_001)),
    ]);
    let plan = plan_of(&running, "newest-pushed:^nightly-", &known, &[]);
    assert_eq!(plan.pins[0].image, format!("r:5000/t/app:nightly-2@{}", d('b')), "2 ms later is newer");
}

#[test]
fn a_rollback_goes_back_to_the_tag_a_version_policy_left() {
    let p = Pin {
        container: "app".into(),
        image: format!("r:5000/t/app:v1.4.3@{}", d('b')),
        digest: d('b'),
        previous_digest: Some(d('a')),
        previous_tag: Some("v1.4.2".into()),
        ..Pin::default()
    };
    let record = Record::default().pinned(std::slice::from_ref(&p), "T1", Some(1));
    assert_eq!(Record::from_annotations(&record.to_annotations()), record);
    let (pins, next) = rollback(&[container("app", &p.image, false)], &record, "T2").unwrap();
    assert_eq!(pins[0].image, format!("r:5000/t/app:v1.4.2@{}", d('a')));
    assert_eq!(next.bad, vec![d('b')]);
    assert!(next.previous_tags.is_empty());
    // Then the policy leaves the bad digest out and keeps v1.4.2.
    let repo = listed(vec![("v1.4.2", Some(d('a')), None), ("v1.4.3", Some(d('b')), None)]);
    let back = vec![container("app", &pins[0].image, false)];
    assert_eq!(plan_of(&back, "semver:~1.4", &repo, &next.bad), Plan::default());
}

#[test]
fn a_version_policy_asks_again_before_pinning_a_digest_read_before_the_last_listing() {
    let running = vec![container("app", "r:5000/t/app:1.4.2", false)];
    let mut repo = listed(vec![("1.4.2", Some(d('a')), None), ("1.4.3", Some(d('b')), None)]);
    repo.1 = vec!["1.4.3"];
    let plan = plan_of(&running, "semver:~1.4", &repo, &[]);
    assert!(plan.pins.is_empty());
    assert_eq!(plan.resolve, vec![parse_image("r:5000/t/app:1.4.3").unwrap()]);
    // Read since: pinned.
    repo.1.clear();
    assert_eq!(plan_of(&running, "semver:~1.4", &repo, &[]).pins[0].digest, d('b'));
}

#[test]
fn newest_pushed_decides_without_tags_whose_lookup_keeps_failing() {
    let running = vec![container("app", "r:5000/t/app:nightly-1", false)];
    let mut repo = listed(vec![
        ("nightly-1", Some(d('a')), Some(1_000)),
        ("nightly-2", Some(d('b')), Some(2_000)),
        ("nightly-3", None, None),
    ]);
    assert_eq!(plan_of(&running, "newest-pushed:^nightly-", &repo, &[]).resolve.len(), 1, "waits for nightly-3");
    repo.2 = vec!["nightly-3"];
    let plan = plan_of(&running, "newest-pushed:^nightly-", &repo, &[]);
    assert_eq!(plan.pins[0].image, format!("r:5000/t/app:nightly-2@{}", d('b')));
}

#[test]
fn tags_from_outside_are_checked_against_the_reference_grammar() {
    for good in ["v1.4.2", "1.4.3_build.7", "main-abc-12", "_x", &"a".repeat(128)] {
        assert!(valid_tag(good), "{good}");
    }
    for bad in ["", ".x", "-x", "a/b", "a:b", "x?y", "../../v2", "a b", &"a".repeat(129), "é"] {
        assert!(!valid_tag(bad), "{bad}");
    }
}

#[test]
fn newest_pushed_places_a_running_tag_it_cannot_time_at_its_last_pin() {
    let running = vec![container("app", &format!("r:5000/t/app:nightly-0@{}", d('e')), false)];
    let repo = listed(vec![("nightly-a", Some(d('a')), Some(1_000)), ("nightly-1", Some(d('b')), Some(5_000))]);
    let settings = versioned("newest-pushed:^nightly-");
    // Pinned at 3 s: nightly-1, pushed at 5 s, is newer than what runs; nightly-a may not be.
    let plan = plan_since(&running, &settings, |_| true, &repo, &[], Some(3_000));
    assert_eq!(plan.pins[0].image, format!("r:5000/t/app:nightly-1@{}", d('b')));
    // Pinned at 6 s: nothing listed is known to be newer.
    assert_eq!(plan_since(&running, &settings, |_| true, &repo, &[], Some(6_000)), Plan::default());
    // Never pinned by berth: kept, as nothing places it.
    assert_eq!(plan_since(&running, &settings, |_| true, &repo, &[], None), Plan::default());
}
