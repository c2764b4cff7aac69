use std::{collections::BTreeSet, time::Duration};

use super::*;
use crate::{api::RegistrySpec, conditions};

const JOINED: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const DEADLINE: i64 = JOINED + 40; // 2026-01-01T00:00:40Z

fn waiting(key: &str) -> Option<Waiting> {
    Some(Waiting { key_sha256: key.repeat(64 / key.len()), joined: JOINED, deadline: DEADLINE })
}

fn input(waiting: Option<Waiting>, roll: Roll) -> Input {
    Input {
        bundle_secret: "berth-system/berth-token-signing-bundle".into(),
        bundle_sha256: "b".repeat(64),
        waiting,
        roll,
    }
}

fn rolled(patched: bool) -> Roll {
    Roll::Rolled { deployment: "berth-system/berth-registry".into(), patched }
}

fn reasons(r: &Report) -> Vec<(EventType, &'static str)> {
    r.events.iter().map(|(t, reason, _)| (*t, *reason)).collect()
}

#[test]
fn without_a_deployment_a_waiting_key_is_a_restart_deadline_announced_once() {
    let first = report(&input(waiting("a"), Roll::NotSet), None, None);
    assert!(!first.ok);
    assert_eq!(first.reason, RESTART_NEEDED);
    for part in [
        "Restart the registry between 2026-01-01T00:00:00Z and 2026-01-01T00:00:40Z",
        "Secret berth-system/berth-token-signing-bundle",
        "sha256 aaaaaaaaaaaaaaaa)",
        "signs tokens from 2026-01-01T00:00:40Z",
    ] {
        assert!(first.message.contains(part), "{part:?} in {}", first.message);
    }
    assert_eq!(reasons(&first), [(EventType::Warning, RESTART_NEEDED)]);
    assert_eq!(first.events[0].2, format!("{}.", first.message), "the Event says what the condition says");
    assert_eq!(first.status.handled_key_sha256, Some("a".repeat(64)));
    assert_eq!(first.status.bundle_sha256, Some("b".repeat(64)));

    // Every later pass: the same condition, no second Event.
    let again = report(&input(waiting("a"), Roll::NotSet), Some(&first.status), Some(RESTART_NEEDED));
    assert_eq!((again.reason, &again.message), (RESTART_NEEDED, &first.message));
    assert!(again.events.is_empty());
    assert_eq!(again.status, first.status);

    // The next key is announced again.
    let next = report(&input(waiting("c"), Roll::NotSet), Some(&first.status), Some(RESTART_NEEDED));
    assert_eq!(reasons(&next), [(EventType::Warning, RESTART_NEEDED)]);
    assert_eq!(next.status.handled_key_sha256, Some("c".repeat(64)));

    // Once it signs, nothing waits and nothing needs doing.
    let done = report(&input(None, Roll::NotSet), Some(&next.status), Some(RESTART_NEEDED));
    assert!(done.ok);
    assert_eq!(done.reason, NO_KEY_WAITING);
    assert!(done.message.contains("berth-system/berth-token-signing-bundle"), "{}", done.message);
    assert!(done.events.is_empty());
    assert_eq!(done.status.handled_key_sha256, next.status.handled_key_sha256, "remembered");
}

#[test]
fn with_a_deployment_berth_rolls_it_and_says_so_with_the_hash() {
    let r = report(&input(waiting("a"), rolled(true)), None, None);
    assert!(r.ok);
    assert_eq!(r.reason, ROLLED);
    assert!(
        r.message
            .starts_with(&format!("Deployment berth-system/berth-registry rolled to bundle sha256 {}", "b".repeat(64)))
    );
    assert!(r.message.contains("signs from 2026-01-01T00:00:40Z"), "{}", r.message);
    assert_eq!(reasons(&r), [(EventType::Normal, ROLLED)], "a roll, never a restart warning");
    assert_eq!(r.status.registry_deployment_bundle_sha256, Some("b".repeat(64)));
    assert_eq!(r.status.handled_key_sha256, Some("a".repeat(64)), "the roll loaded the new key");

    let unchanged = report(&input(waiting("a"), rolled(false)), Some(&r.status), Some(ROLLED));
    assert!(unchanged.events.is_empty(), "already rolled: no Event");
    assert_eq!(unchanged.status, r.status);

    // registryDeployment removed while the rolled key still waits: nobody is told to restart.
    let unset = report(&input(waiting("a"), Roll::NotSet), Some(&r.status), Some(ROLLED));
    assert_eq!(unset.reason, RESTART_NEEDED);
    assert!(unset.events.is_empty());

    let quiet = report(&input(None, rolled(false)), None, None);
    assert_eq!(
        quiet.message,
        format!("Deployment berth-system/berth-registry rolled to bundle sha256 {}", "b".repeat(64))
    );
    assert!(quiet.events.is_empty());
}

#[test]
fn a_missing_deployment_warns_once_and_falls_back_to_the_restart_deadline() {
    let before = TokenAuthStatus { registry_deployment_bundle_sha256: Some("0".repeat(64)), ..Default::default() };
    let roll = || Roll::NotFound { deployment: "berth-system/gone".into() };
    let r = report(&input(waiting("a"), roll()), Some(&before), Some(ROLLED));
    assert!(!r.ok);
    assert_eq!(r.reason, DEPLOYMENT_NOT_FOUND);
    assert!(r.message.starts_with("registryDeployment berth-system/gone does not exist"), "{}", r.message);
    assert!(r.message.contains("restart the registry between"), "{}", r.message);
    assert_eq!(reasons(&r), [(EventType::Warning, DEPLOYMENT_NOT_FOUND), (EventType::Warning, RESTART_NEEDED)]);
    assert_eq!(r.status.registry_deployment_bundle_sha256, before.registry_deployment_bundle_sha256, "kept");

    let again = report(&input(waiting("a"), roll()), Some(&r.status), Some(DEPLOYMENT_NOT_FOUND));
    assert!(again.events.is_empty(), "{:?}", again.events);

    let nothing_waits = report(&input(None, roll()), None, Some(NO_KEY_WAITING));
    assert_eq!(reasons(&nothing_waits), [(EventType::Warning, DEPLOYMENT_NOT_FOUND)]);
    assert!(!nothing_waits.message.contains("restart"), "{}", nothing_waits.message);
}

#[test]
fn a_failed_roll_and_a_namespace_berth_does_not_manage_are_reported() {
    let failed = Roll::Failed { deployment: "berth-system/berth-registry".into(), error: "409 Conflict".into() };
    let r = report(&input(None, failed.clone()), None, Some(ROLLED));
    assert_eq!((r.ok, r.reason), (false, ROLL_FAILED));
    assert!(r.message.contains("cannot roll registryDeployment berth-system/berth-registry: 409 Conflict"));
    assert_eq!(reasons(&r), [(EventType::Warning, ROLL_FAILED)]);
    assert!(report(&input(None, failed), Some(&r.status), Some(ROLL_FAILED)).events.is_empty());

    let refused = Roll::NotManaged { message: "the registryDeployment is in namespace x, which ...".into() };
    let r = report(&input(waiting("a"), refused), None, None);
    assert_eq!((r.ok, r.reason), (false, NOT_MANAGED));
    assert!(r.message.starts_with("the registryDeployment is in namespace x"), "{}", r.message);
    assert_eq!(reasons(&r), [(EventType::Warning, RESTART_NEEDED)], "a person must restart it");
}

fn registry() -> Registry {
    let spec: RegistrySpec = serde_json::from_value(json!({"url": "http://r:5000"})).unwrap();
    let mut r = Registry::new("main", spec);
    r.metadata.uid = Some("u1".into());
    r
}

#[test]
fn the_status_gains_loses_or_keeps_the_rotation_condition() {
    let previous = RegistryStatus::default();
    let mut status =
        RegistryStatus { conditions: vec![conditions::ready(true, "Reachable", "ok", Some(2))], ..Default::default() };
    let decided = report(&input(waiting("a"), Roll::NotSet), None, None);
    apply(&mut status, &previous, Outcome::Decided(decided.clone()), Some(2));
    let types: BTreeSet<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", CONDITION_SIGNING_KEY_ROTATION].into());
    let c = status.conditions.iter().find(|c| c.type_ == CONDITION_SIGNING_KEY_ROTATION).unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str(), c.observed_generation), ("False", RESTART_NEEDED, Some(2)));
    assert_eq!(status.token_auth, Some(decided.status.clone()));
    assert_eq!(previous_reason(&status), Some(RESTART_NEEDED));

    // A pass that could not read the keys keeps what the last one said.
    let last = status.clone();
    let mut unknown = RegistryStatus { conditions: last.conditions.clone(), ..Default::default() };
    apply(&mut unknown, &last, Outcome::Unknown, Some(3));
    assert_eq!(unknown.token_auth, last.token_auth);
    assert_eq!(previous_reason(&unknown), Some(RESTART_NEEDED));

    // The same decision again is the same status: no write, no loop.
    let mut same = RegistryStatus { conditions: last.conditions.clone(), ..Default::default() };
    apply(&mut same, &last, Outcome::Decided(decided), Some(2));
    assert_eq!(same, last);

    // tokenAuth removed: the condition and the status go.
    apply(&mut status, &last, Outcome::NotConfigured, Some(4));
    assert_eq!(status.conditions.len(), 1);
    assert_eq!(status.token_auth, None);
}

#[test]
fn events_regard_the_registry_where_berth_may_write_in_default_and_the_bundle_secret_elsewhere() {
    let r = registry();
    let all = event_subject(&r, "berth-system/s-bundle", &Namespaces::All);
    assert_eq!(
        (all.kind.as_deref(), all.name.as_deref(), all.namespace.as_deref()),
        (Some("Registry"), Some("main"), None)
    );
    let only = Namespaces::parse("berth-system,team-a").unwrap();
    let secret = event_subject(&r, "berth-system/s-bundle", &only);
    assert_eq!(
        (secret.kind.as_deref(), secret.name.as_deref(), secret.namespace.as_deref()),
        (Some("Secret"), Some("s-bundle"), Some("berth-system"))
    );
    let with_default = Namespaces::parse("berth-system,default").unwrap();
    assert_eq!(event_subject(&r, "berth-system/s-bundle", &with_default).kind.as_deref(), Some("Registry"));
}

#[test]
fn the_apply_body_sets_only_the_pod_template_annotation_and_reads_back() {
    let target = DeploymentReference { namespace: "berth-system".into(), name: "berth-registry".into() };
    let body = apply_body(&target, "abc");
    assert_eq!(
        body,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "berth-registry", "namespace": "berth-system"},
            "spec": {"template": {"metadata": {"annotations": {"berth.dev/token-bundle-sha256": "abc"}}}},
        })
    );
    let applied: Deployment = serde_json::from_value(body).unwrap();
    assert_eq!(rolled_to(&applied), Some("abc"));
    assert_eq!(rolled_to(&Deployment::default()), None);
}

#[test]
fn the_input_names_the_newest_waiting_key_and_the_earliest_deadline() {
    use crate::auth::{KeyValidity, RotationPolicy};
    let policy =
        RotationPolicy::new(Duration::from_secs(180), Duration::from_secs(120), Duration::from_secs(40)).unwrap();
    let now = JOINED;
    let made = |at: i64| KeyValidity { not_before: at - 3_600, not_after: at + 180 };
    let keys = |validities: Vec<KeyValidity>| Keys {
        policy,
        fingerprints: (0..validities.len()).map(|i| format!("{i}").repeat(64)).collect(),
        validities,
        bundle: "PEM".into(),
        bundle_secret: "ns/s-bundle".into(),
        now,
    };
    let alone = Input::new(&keys(vec![made(now)]), Roll::NotSet);
    assert_eq!(alone.waiting, None, "the first key signs at once");
    assert_eq!(alone.bundle_sha256, bundle_sha256("PEM"));
    assert_eq!(alone.bundle_secret, "ns/s-bundle");

    let two = Input::new(&keys(vec![made(now - 100), made(now - 10)]), Roll::NotSet);
    assert_eq!(two.waiting, Some(Waiting { key_sha256: "1".repeat(64), joined: now - 10, deadline: now + 30 }));

    // Three keys, the middle one not signing yet either: the deadline is the earlier activation.
    let policy_long =
        RotationPolicy::new(Duration::from_secs(180), Duration::from_secs(150), Duration::from_secs(100)).unwrap();
    let three = Keys { policy: policy_long, ..keys(vec![made(now - 120), made(now - 60), made(now - 10)]) };
    let w = Input::new(&three, Roll::NotSet).waiting.unwrap();
    assert_eq!((w.key_sha256, w.joined, w.deadline), ("2".repeat(64), now - 10, now + 40));
}
