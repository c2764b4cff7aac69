use proptest::prelude::*;

use super::*;

#[test]
fn usernames_round_trip() {
    assert_eq!(robot_username("team-a", "ci"), "robot$team-a+ci");
    assert_eq!(parse_robot_username("robot$team-a+ci"), Some(("team-a", "ci")));
    assert_eq!(parse_robot_username("robot$team-a+ci.builder-1"), Some(("team-a", "ci.builder-1")));
    assert_eq!(pull_username("team-a", "web"), "pull$team-a+web");
    assert_eq!(parse_pull_username("pull$team-a+web"), Some(("team-a", "web")));
}

#[test]
fn usernames_of_another_shape_are_refused() {
    for bad in [
        "",
        "robot$",
        "robot$team-a",
        "robot$team-a+",
        "robot$+ci",
        "robot$team-a+ci+x",
        "robot$Team-a+ci",
        "robot$team-a+CI",
        "robot$team_a+ci",
        "robot$-team+ci",
        "robot$team-a+ci.",
        "robot$team-a+.ci",
        "robot$team-a+c..i",
        "Robot$team-a+ci",
        "pull$team-a+ci",
        "team-a+ci",
        "robot$tëam+ci",
        "robot$team-a+ci ",
    ] {
        assert_eq!(parse_robot_username(bad), None, "{bad:?}");
    }
    assert_eq!(parse_robot_username(&format!("robot${}+ci", "a".repeat(64))), None, "namespace over 63");
    assert!(parse_robot_username(&format!("robot${}+ci", "a".repeat(63))).is_some());
    assert_eq!(parse_robot_username(&format!("robot$a+{}", "b".repeat(254))), None, "name over 253");
    assert_eq!(parse_pull_username("robot$team-a+web"), None, "a robot is not a pull secret");
}

#[test]
fn passwords_are_32_random_bytes_in_base64url() {
    let a = generate_password();
    let b = generate_password();
    assert_ne!(a, b);
    assert_eq!(a.len(), 43);
    assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{a}");
    assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&a).map(|v| v.len()), Ok(32));
}

#[test]
fn hashes_have_the_documented_format() {
    let stored = hash("secret", &[0xab, 0x01]);
    // sha256(0xab 0x01 "secret")
    let mut hasher = Sha256::new();
    hasher.update([0xab, 0x01]);
    hasher.update(b"secret");
    let expected: [u8; 32] = hasher.finalize().into();
    assert_eq!(stored, format!("sha256$ab01${}", to_hex(&expected)));
    assert_eq!(stored.split('$').nth(2).map(str::len), Some(64));
}

#[test]
fn verify_accepts_the_password_and_nothing_else() {
    let password = generate_password();
    let stored = hash_new(&password);
    assert!(verify(&password, &stored));
    assert!(!verify("", &stored));
    assert!(!verify(&format!("{password}x"), &stored));
    assert!(!verify(&password[1..], &stored));
    assert_ne!(hash_new(&password), stored, "a fresh salt each time");
    assert!(verify(&password, &stored.to_uppercase().replacen("SHA256", "sha256", 1)), "hex case does not matter");
}

#[test]
fn malformed_stored_hashes_match_nothing() {
    let good = hash("pw", b"salt");
    let digest = good.rsplit('$').next().unwrap_or_default().to_string();
    for stored in [
        String::new(),
        "sha256".into(),
        "sha256$".into(),
        "sha256$$".into(),
        format!("sha256$${digest}"),
        format!("sha256$73616c74${}", &digest[..62]),
        format!("sha256$73616c74${digest}00"),
        format!("sha256$73616c7${digest}"),
        format!("sha256$73616c7g${digest}"),
        format!("sha512$73616c74${digest}"),
        format!("sha256$73616c74${digest}$"),
        format!("bcrypt${good}"),
        "$2b$12$abcdefghijklmnopqrstuv".into(),
        "sha256$ä$ö".into(),
    ] {
        assert!(!verify("pw", &stored), "{stored:?}");
    }
    assert!(verify("pw", &good));
}

#[test]
fn check_accepts_any_unexpired_record() {
    let old = "old-password";
    let new = "new-password";
    let records = vec![
        StoredCredential { hash: hash_new(old), expires_at_unix: Some(1_000) },
        StoredCredential { hash: hash_new(new), expires_at_unix: Some(2_000) },
    ];
    assert!(check(old, &records, 999), "overlap: old still works");
    assert!(check(new, &records, 999));
    assert!(!check(old, &records, 1_000), "expired at its expiry");
    assert!(check(new, &records, 1_500));
    assert!(!check(new, &records, 2_000));
    assert!(!check("guess", &records, 0));
    assert!(!check(old, &[], 0));
    let forever = [StoredCredential { hash: hash_new(old), expires_at_unix: None }];
    assert!(check(old, &forever, i64::MAX));
}

#[test]
fn stored_credentials_are_json_in_kubernetes_style() {
    let record = StoredCredential { hash: "sha256$00$11".into(), expires_at_unix: Some(42) };
    let json = serde_json::to_string(&record).unwrap_or_default();
    assert_eq!(json, r#"{"hash":"sha256$00$11","expiresAtUnix":42}"#);
    let robot = StoredCredential { hash: "h".into(), expires_at_unix: None };
    assert_eq!(serde_json::to_string(&robot).unwrap_or_default(), r#"{"hash":"h"}"#);
    let back: Vec<StoredCredential> = serde_json::from_str(r#"[{"hash":"h"},{"hash":"g","expiresAtUnix":7}]"#).unwrap();
    assert_eq!(back, vec![robot, StoredCredential { hash: "g".into(), expires_at_unix: Some(7) }]);
}

#[test]
fn rotation_adds_a_password_and_drops_expired_ones() {
    let lifetime = Duration::from_secs(3_600);
    let (first, records) = rotate(&[], Some(lifetime), 1_000);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].expires_at_unix, Some(4_600));
    let (second, records) = rotate(&records, Some(lifetime), 3_400);
    assert_eq!(records.len(), 2);
    assert!(check(&first, &records, 3_400) && check(&second, &records, 3_400), "both during the overlap");
    let (third, records) = rotate(&records, Some(lifetime), 5_000);
    assert_eq!(records.len(), 2, "the first expired at 4600 and is gone");
    assert!(!check(&first, &records, 5_000));
    assert!(check(&second, &records, 5_000) && check(&third, &records, 5_000));
    let (_, robot) = rotate(&[], None, 0);
    assert_eq!(robot[0].expires_at_unix, None);
}

#[test]
fn rotation_is_due_at_two_thirds_of_the_lifetime() {
    let twelve_hours = Duration::from_secs(12 * 3_600);
    let issued = 1_000_000;
    assert!(!needs_rotation(issued, twelve_hours, issued));
    assert!(!needs_rotation(issued, twelve_hours, issued + 8 * 3_600 - 1));
    assert!(needs_rotation(issued, twelve_hours, issued + 8 * 3_600));
    assert!(needs_rotation(issued, twelve_hours, issued + 13 * 3_600), "expired");
    assert!(!needs_rotation(issued + 60, twelve_hours, issued), "a little clock skew is tolerated");
    assert!(needs_rotation(issued + 13 * 3_600, twelve_hours, issued), "issued absurdly in the future");
    assert!(needs_rotation(i64::MIN, Duration::MAX, i64::MAX), "no overflow");
    assert!(!needs_rotation(0, Duration::MAX, 0));
}

proptest! {
    #[test]
    fn verify_never_panics(password in ".{0,40}", stored in ".{0,120}") {
        let _ = verify(&password, &stored);
        // Whatever follows, only the sha256 scheme verifies.
        let prefixed = format!("x{stored}");
        prop_assert!(!verify(&password, &prefixed));
    }

    #[test]
    fn hash_then_verify_round_trips(password in ".{0,64}", salt in prop::collection::vec(any::<u8>(), 1..32)) {
        let stored = hash(&password, &salt);
        prop_assert!(verify(&password, &stored));
        let longer = format!("{password}\0");
        prop_assert!(!verify(&longer, &stored));
    }

    #[test]
    fn usernames_round_trip_for_valid_names(ns in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", name in "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z0-9]{1,5}){0,2}") {
        let robot = robot_username(&ns, &name);
        let pull = pull_username(&ns, &name);
        prop_assert_eq!(parse_robot_username(&robot), Some((ns.as_str(), name.as_str())));
        prop_assert_eq!(parse_pull_username(&pull), Some((ns.as_str(), name.as_str())));
    }

    #[test]
    fn username_parsing_never_panics(username in ".{0,80}") {
        if let Some((ns, name)) = parse_robot_username(&username) {
            prop_assert_eq!(robot_username(ns, name), username);
        }
    }
}
