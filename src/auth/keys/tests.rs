use std::collections::HashSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};

use super::*;
use crate::api::Action;

const DAY: i64 = 86_400;

fn key() -> SigningKey {
    SigningKey::generate("berth token signer", Duration::from_secs(90 * DAY as u64)).unwrap()
}

fn claims(now: i64, ttl: u64) -> Claims {
    let access = vec![Access::repository("team/app", &[Action::Pull, Action::Push].into())];
    Claims::new("berth", "system:serviceaccount:team:ci", "registry.berth", access, now, Duration::from_secs(ttl))
}

/// What the registry does: take the certificate from `x5c` (after checking it against its bundle)
/// and verify the token with its public key, issuer and audience.
fn verify_with_cert(token: &str, cert_der: &[u8]) -> Result<Claims, jsonwebtoken::errors::Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
    let key = DecodingKey::from_ec_der(&cert.public_key().subject_public_key.data);
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&["berth"]);
    validation.set_audience(&["registry.berth"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Claims>(token, &key, &validation).map(|data| data.claims)
}

fn x5c(token: &str) -> Vec<u8> {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let chain = header.x5c_der().unwrap().unwrap();
    assert_eq!(chain.len(), 1, "a single self-signed certificate");
    chain.into_iter().next().unwrap()
}

#[test]
fn a_signed_token_verifies_with_the_certificate_in_its_header() {
    let key = key();
    let signer = Signer::new(&key).unwrap();
    let claims = claims(now_unix(), 300);
    let token = signer.sign(&claims).unwrap();

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.kid, None);
    assert_eq!(x5c(&token), key.cert_der());

    let decoded = verify_with_cert(&token, &x5c(&token)).unwrap();
    assert_eq!(decoded, claims);
}

#[test]
fn claims_have_the_shape_distribution_reads() {
    let c = claims(1_700_000_000, 300);
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["aud"], serde_json::json!("registry.berth"), "a string, not an array");
    assert_eq!(
        (json["iat"].as_i64(), json["nbf"].as_i64(), json["exp"].as_i64()),
        (Some(1_700_000_000), Some(1_700_000_000), Some(1_700_000_300))
    );
    assert_eq!(
        json["access"],
        serde_json::json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}])
    );
    let jti = c.jti.clone();
    assert_eq!(jti.len(), 32);
    assert!(jti.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_ne!(claims(0, 1).jti, claims(0, 1).jti);
    let anonymous = Claims::new("berth", "", "registry.berth", vec![], 0, Duration::from_secs(60));
    assert_eq!(serde_json::to_value(&anonymous).unwrap()["access"], serde_json::json!([]));
}

#[test]
fn a_tampered_payload_fails() {
    let key = key();
    let token = Signer::new(&key).unwrap().sign(&claims(now_unix(), 300)).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims(now_unix(), 300);
    forged.access = vec![Access::repository("team/app", &[Action::Pull, Action::Push, Action::Delete].into())];
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
    let err = verify_with_cert(&tampered, key.cert_der()).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidSignature);
}

#[test]
fn a_token_of_another_key_fails() {
    let ours = key();
    let theirs = key();
    let token = Signer::new(&theirs).unwrap().sign(&claims(now_unix(), 300)).unwrap();
    assert!(verify_with_cert(&token, theirs.cert_der()).is_ok());
    let err = verify_with_cert(&token, ours.cert_der()).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidSignature);
}

#[test]
fn an_expired_token_fails() {
    let key = key();
    let token = Signer::new(&key).unwrap().sign(&claims(now_unix() - 3_600, 300)).unwrap();
    let err = verify_with_cert(&token, key.cert_der()).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::ExpiredSignature);
}

#[test]
fn a_thousand_tokens_sign_and_verify() {
    let key = key();
    let signer = Signer::new(&key).unwrap();
    let now = now_unix();
    let mut ids = HashSet::new();
    for _ in 0..1_000 {
        let claims = claims(now, 300);
        let token = signer.sign(&claims).unwrap();
        assert_eq!(verify_with_cert(&token, key.cert_der()).unwrap(), claims);
        ids.insert(claims.jti);
    }
    assert_eq!(ids.len(), 1_000, "every token id is distinct");
}

#[test]
fn signers_are_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Signer>();
    shareable::<SigningKey>();
}

#[test]
fn generated_certificates_are_backdated_and_self_signed() {
    let now = 1_800_000_000;
    let key = SigningKey::generate_at("berth", Duration::from_secs(90 * DAY as u64), now).unwrap();
    assert_eq!(key.validity(), KeyValidity { not_before: now - 3_600, not_after: now + 90 * DAY });
    assert_eq!(key.not_after(), now + 90 * DAY);
    let (_, cert) = x509_parser::parse_x509_certificate(key.cert_der()).unwrap();
    assert_eq!(cert.subject().to_string(), "CN=berth");
    assert_eq!(cert.issuer(), cert.subject());
    assert!(!cert.is_ca());
    assert!(key.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(key.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(!format!("{key:?}").contains("PRIVATE"), "Debug never shows the key");
    assert_ne!(key.cert_der(), SigningKey::generate_at("berth", Duration::from_secs(60), now).unwrap().cert_der());
}

#[test]
fn an_impossible_validity_is_an_error_not_a_panic() {
    let err = SigningKey::generate_at("berth", Duration::MAX, now_unix()).unwrap_err();
    assert_eq!(err.category(), "KeyGeneration");
    assert!(SigningKey::generate_at("berth", Duration::from_secs(1), i64::MIN).is_err());
}

#[test]
fn keys_read_back_from_pem_sign_the_same() {
    let key = key();
    let again = SigningKey::from_pem(key.key_pem(), key.cert_pem()).unwrap();
    assert_eq!(again.validity(), key.validity());
    assert_eq!(again.cert_der(), key.cert_der());
    let token = Signer::new(&again).unwrap().sign(&claims(now_unix(), 60)).unwrap();
    assert!(verify_with_cert(&token, key.cert_der()).is_ok());
}

#[test]
fn mismatched_or_malformed_pem_is_an_error() {
    let a = key();
    let b = key();
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let two_certs = format!("{}{}", a.cert_pem(), b.cert_pem());
    let cases: Vec<(&str, String, String, &str)> = vec![
        ("key of another certificate", a.key_pem().into(), b.cert_pem().into(), "KeyMismatch"),
        ("empty key", String::new(), a.cert_pem().into(), "InvalidKey"),
        ("garbage key", "not pem at all".into(), a.cert_pem().into(), "InvalidKey"),
        ("a certificate as the key", a.cert_pem().into(), a.cert_pem().into(), "InvalidKey"),
        ("a P-384 key", p384.serialize_pem(), a.cert_pem().into(), "InvalidKey"),
        (
            "a corrupted key",
            a.key_pem().replace("-----BEGIN PRIVATE KEY-----\n", "-----BEGIN PRIVATE KEY-----\nAAAA"),
            a.cert_pem().into(),
            "InvalidKey",
        ),
        ("empty certificate", a.key_pem().into(), String::new(), "InvalidCertificate"),
        ("the key as the certificate", a.key_pem().into(), a.key_pem().into(), "InvalidCertificate"),
        ("two certificates", a.key_pem().into(), two_certs, "InvalidCertificate"),
        (
            "a truncated certificate",
            a.key_pem().into(),
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                STANDARD.encode(&a.cert_der()[..a.cert_der().len() / 2])
            ),
            "InvalidCertificate",
        ),
        (
            "a certificate with trailing bytes",
            a.key_pem().into(),
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                STANDARD.encode([a.cert_der(), b"x"].concat())
            ),
            "InvalidCertificate",
        ),
    ];
    for (label, key_pem, cert_pem, category) in cases {
        match SigningKey::from_pem(&key_pem, &cert_pem) {
            Ok(_) => panic!("{label}: accepted"),
            Err(e) => assert_eq!(e.category(), category, "{label}: {e}"),
        }
    }
}

#[test]
fn the_bundle_holds_every_certificate_in_order() {
    let a = key();
    let b = key();
    let bundle = bundle(&[a, b]);
    let ders: Vec<Vec<u8>> = Pem::iter_from_buffer(bundle.as_bytes()).map(|p| p.unwrap().contents).collect();
    assert_eq!(ders.len(), 2);
    assert_eq!(bundle.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    assert!(bundle.ends_with("-----END CERTIFICATE-----\n"));
    assert!(!bundle.contains("PRIVATE"));
    assert_eq!(super::bundle(&[]), "");
}

// ---- rotation ----

/// A key made at `made` (so `not_before` is an hour earlier) living `days`.
fn made(made: i64, days: i64) -> KeyValidity {
    KeyValidity { not_before: made - 3_600, not_after: made + days * DAY }
}

#[test]
fn rotation_plans() {
    let policy = RotationPolicy::default();
    let now = 1_000 * DAY;
    let cases: Vec<(&str, Vec<KeyValidity>, RotationPlan)> = vec![
        ("no key yet", vec![], RotationPlan { generate: true, sign_with: None, keep: vec![] }),
        (
            "a key just made signs alone",
            vec![made(now, 90)],
            RotationPlan { generate: false, sign_with: Some(0), keep: vec![0] },
        ),
        (
            "mid-life",
            vec![made(now - 40 * DAY, 90)],
            RotationPlan { generate: false, sign_with: Some(0), keep: vec![0] },
        ),
        (
            "30 days left: renew",
            vec![made(now - 60 * DAY, 90)],
            RotationPlan { generate: true, sign_with: Some(0), keep: vec![0] },
        ),
        (
            "a successor made a minute ago waits",
            vec![made(now - 60 * DAY, 90), made(now - 60, 90)],
            RotationPlan { generate: false, sign_with: Some(0), keep: vec![0, 1] },
        ),
        (
            "a successor made 28 days ago still waits for registries to restart",
            vec![made(now - 60 * DAY, 90), made(now - 28 * DAY, 90)],
            RotationPlan { generate: false, sign_with: Some(0), keep: vec![0, 1] },
        ),
        (
            "a successor made 29 days ago signs",
            vec![made(now - 61 * DAY, 90), made(now - 29 * DAY, 90)],
            RotationPlan { generate: false, sign_with: Some(1), keep: vec![0, 1] },
        ),
        (
            "the order of storage does not matter",
            vec![made(now - 29 * DAY, 90), made(now - 61 * DAY, 90)],
            RotationPlan { generate: false, sign_with: Some(0), keep: vec![0, 1] },
        ),
        (
            "an expired key is dropped",
            vec![made(now - 91 * DAY, 90), made(now - 31 * DAY, 90)],
            RotationPlan { generate: false, sign_with: Some(1), keep: vec![1] },
        ),
        (
            "only expired keys: start over",
            vec![made(now - 100 * DAY, 90)],
            RotationPlan { generate: true, sign_with: None, keep: vec![] },
        ),
        (
            "two fresh keys: the older signs until the newer has waited",
            vec![made(now - 120, 90), made(now - 60, 90)],
            RotationPlan { generate: false, sign_with: Some(0), keep: vec![0, 1] },
        ),
        (
            "a key not valid yet is kept but does not sign",
            vec![KeyValidity { not_before: now + 60, not_after: now + 90 * DAY }],
            RotationPlan { generate: false, sign_with: None, keep: vec![0] },
        ),
    ];
    for (label, keys, want) in cases {
        assert_eq!(rotation_plan(&keys, now, &policy), want, "{label}");
    }
}

#[test]
fn a_renewal_window_as_long_as_the_lifetime_counts_as_half_of_it() {
    // `RotationPolicy::new` refuses it; a policy built by hand still cannot make a key per pass.
    let policy = RotationPolicy {
        key_lifetime: Duration::from_secs(10 * DAY as u64),
        renew_before: Duration::from_secs(30 * DAY as u64),
        ..RotationPolicy::default()
    };
    let now = 1_000 * DAY;
    assert!(!rotation_plan(&[made(now, 10)], now, &policy).generate, "a new key is not due at once");
    assert!(rotation_plan(&[made(now - 5 * DAY, 10)], now, &policy).generate);
}

#[test]
fn a_renewal_window_over_half_the_lifetime_is_taken_as_given() {
    let policy = short();
    let now = 1_000 * DAY;
    let key = KeyValidity { not_before: now - 3_600, not_after: now + 180 };
    assert!(!rotation_plan(&[key], now + 59, &policy).generate);
    assert!(rotation_plan(&[key], now + 60, &policy).generate, "2m before a 3m key expires");
}

/// The short periods an on-node test uses: 3-minute keys, renewed 2 minutes before they
/// expire, signing 40 seconds after they join the bundle.
fn short() -> RotationPolicy {
    RotationPolicy::new(Duration::from_secs(180), Duration::from_secs(120), Duration::from_secs(40)).unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_policy_is_refused_when_it_cannot_work_and_says_why() {
    let default = RotationPolicy::default();
    assert_eq!(RotationPolicy::new(default.key_lifetime, default.renew_before, default.activation_delay), Ok(default));
    assert!(default.check_token_lifetime(secs(300)).is_ok(), "5-minute tokens, a day of overlap");
    let cases: Vec<(&str, (u64, u64, u64), &str)> = vec![
        ("renewal as long as the key", (180, 180, 40), "renewBefore (3m) must be shorter than keyLifetime (3m)"),
        ("renewal longer than the key", (180, 600, 40), "renewBefore (10m) must be shorter than keyLifetime (3m)"),
        ("activation at renewal", (180, 120, 120), "activationDelay (2m) must be shorter than renewBefore (2m)"),
        (
            "activation after expiry",
            (7200, 3600, 5400),
            "activationDelay (1h30m) must be shorter than renewBefore (1h)",
        ),
        ("no lifetime", (0, 0, 0), "renewBefore (0s) must be shorter than keyLifetime (0s)"),
    ];
    for (label, (lifetime, renew, delay), message) in cases {
        let err = RotationPolicy::new(secs(lifetime), secs(renew), secs(delay)).unwrap_err();
        assert!(err.contains(message), "{label}: {err}");
    }
    assert!(RotationPolicy::new(secs(180), secs(120), secs(0)).is_ok(), "a key may sign as soon as it is made");

    let policy = short();
    assert!(policy.check_token_lifetime(secs(60)).is_ok());
    assert!(policy.check_token_lifetime(secs(79)).is_ok());
    let err = policy.check_token_lifetime(secs(80)).unwrap_err();
    assert!(
        err.contains("tokenLifetime (1m20s) must be shorter than keyRotation.renewBefore - activationDelay (1m20s)"),
        "{err}"
    );
    assert!(policy.check_token_lifetime(secs(300)).is_err(), "the default 5m tokens need a longer overlap");
}

#[test]
fn the_next_key_event_is_the_nearest_renewal_activation_or_expiry() {
    let policy = RotationPolicy::default();
    let now = 1_000 * DAY;
    let cases: Vec<(&str, Vec<KeyValidity>, Option<i64>)> = vec![
        ("no key: nothing to wait for", vec![], None),
        ("only expired keys", vec![made(now - 100 * DAY, 90)], None),
        ("a lone key just made: its activation day", vec![made(now, 90)], Some(now + 29 * DAY)),
        ("a lone key mid-life: its renewal", vec![made(now - 40 * DAY, 90)], Some(now + 20 * DAY)),
        (
            "a successor waiting: its activation",
            vec![made(now - 60 * DAY, 90), made(now - 10 * DAY, 90)],
            Some(now + 19 * DAY),
        ),
        (
            "a successor signing: the predecessor's expiry",
            vec![made(now - 89 * DAY, 90), made(now - 29 * DAY - 1, 90)],
            Some(now + DAY),
        ),
        (
            "a key not valid yet: when it becomes valid",
            vec![made(now - 40 * DAY, 90), KeyValidity { not_before: now + 60, not_after: now + 90 * DAY }],
            Some(now + 60),
        ),
        ("an event now is not next", vec![made(now - 29 * DAY, 90)], Some(now + 31 * DAY)),
    ];
    for (label, keys, want) in cases {
        assert_eq!(next_key_event(&keys, now, &policy), want, "{label}");
    }
    // A lone 3-minute key just made under the short policy: it would start signing after 40 s.
    assert_eq!(next_key_event(&[made_secs(now, 180)], now, &short()), Some(now + 40));
    assert_eq!(next_key_event(&[made_secs(now, 180)], now + 40, &short()), Some(now + 60), "then its renewal");
}

/// A key made at `made` (so `not_before` is an hour earlier) living `seconds`.
fn made_secs(made: i64, seconds: i64) -> KeyValidity {
    KeyValidity { not_before: made - 3_600, not_after: made + seconds }
}

#[test]
fn waiting_keys_are_those_published_that_do_not_sign_yet() {
    let policy = RotationPolicy::default();
    let now = 1_000 * DAY;
    let waiting = |keys: &[KeyValidity]| waiting_keys(keys, now, &policy);
    assert!(waiting(&[]).is_empty());
    assert!(waiting(&[made(now, 90)]).is_empty(), "the first key signs at once");
    assert_eq!(
        waiting(&[made(now - 60 * DAY, 90), made(now - DAY, 90)]),
        [WaitingKey { index: 1, joined: now - DAY, signs_from: now + 28 * DAY }]
    );
    assert!(waiting(&[made(now - 61 * DAY, 90), made(now - 29 * DAY, 90)]).is_empty(), "the successor signs");
    assert_eq!(
        waiting(&[made(now - 120, 90), made(now - 60, 90)]),
        [WaitingKey { index: 1, joined: now - 60, signs_from: now - 60 + 29 * DAY }],
        "two fresh keys: the older signs, the newer waits"
    );
    // Three 3-minute keys at once (renewBefore is over half the lifetime): the middle one signs,
    // the newest waits, the oldest neither signs nor waits.
    let keys = [made_secs(now - 100, 180), made_secs(now - 50, 180), made_secs(now - 10, 180)];
    assert_eq!(rotation_plan(&keys, now, &short()).sign_with, Some(1));
    assert_eq!(waiting_keys(&keys, now, &short()), [WaitingKey { index: 2, joined: now - 10, signs_from: now + 30 }]);
}

/// Rotates as the Registry controller does, waking only at each [`next_key_event`] for `span`
/// seconds, and checks at every wake-up that the key signing is valid, was published
/// `activation_delay` before it signs (but the first key), outlives every token it signs, and
/// that the plan would not have changed at any moment before the next event. Returns how many
/// keys were made and the most held at once.
fn rotate_on_events(policy: RotationPolicy, token_lifetime: i64, span: i64) -> (usize, usize) {
    let lifetime = policy.key_lifetime.as_secs() as i64;
    let delay = policy.activation_delay.as_secs() as i64;
    let start = 1_000 * DAY;
    let (mut keys, mut made_count, mut most) = (Vec::<KeyValidity>::new(), 0, 0);
    let mut now = start;
    while now < start + span {
        let plan = rotation_plan(&keys, now, &policy);
        if plan.generate {
            keys.push(KeyValidity { not_before: now - 3_600, not_after: now + lifetime });
            made_count += 1;
            assert!(!rotation_plan(&keys, now, &policy).generate, "one new key is enough");
        }
        keys = rotation_plan(&keys, now, &policy).keep.iter().map(|&i| keys[i]).collect();
        let plan = rotation_plan(&keys, now, &policy);
        let signer = keys[plan.sign_with.expect("always a key to sign with")];
        assert!(signer.not_before <= now && now < signer.not_after, "signing key valid at {now}");
        assert!(now - signer.made() >= delay || signer.made() == start, "signing key published {delay} s before use");
        assert!(now + token_lifetime < signer.not_after, "a token signed at {now} outlives its key");
        most = most.max(keys.len());

        let next = next_key_event(&keys, now, &policy).expect("keys always have a next event");
        assert!(next > now);
        assert!(next - 1 + token_lifetime < signer.not_after, "a token signed just before {next} outlives its key");
        for t in [now + 1, now + (next - now) / 2, next - 1].into_iter().filter(|&t| t > now && t < next) {
            assert_eq!(rotation_plan(&keys, t, &policy), plan, "the plan changed at {t}, before the next event {next}");
        }
        now = next;
    }
    (made_count, most)
}

#[test]
fn rotation_over_a_year_always_signs_with_a_published_valid_key() {
    let (made, most) = rotate_on_events(RotationPolicy::default(), 300, 400 * DAY);
    assert_eq!(made, 1 + 400 / 60, "a key every 60 days after the first");
    assert_eq!(most, 2, "at most two keys at a time");
}

#[test]
fn short_periods_rotate_on_their_events_with_tokens_shorter_than_the_overlap() {
    // (keyLifetime, renewBefore, activationDelay), the longest token lifetime allowed, and the
    // most keys the bundle holds at once: ceil(lifetime / (lifetime - renewBefore)).
    let cases = [((180, 120, 40), 79, 3), ((180, 60, 40), 19, 2), ((180, 120, 0), 119, 3), ((600, 240, 200), 39, 2)];
    for ((lifetime, renew, delay), token, keys_at_once) in cases {
        let policy = RotationPolicy::new(secs(lifetime), secs(renew), secs(delay)).unwrap();
        assert!(policy.check_token_lifetime(secs(token as u64)).is_ok());
        let (made, most) = rotate_on_events(policy, token, 2 * 3_600);
        let every = (lifetime - renew) as i64;
        assert_eq!(made as i64, (2 * 3_600 + every - 1) / every, "{lifetime}/{renew}/{delay}: a key every {every} s");
        assert_eq!(most, keys_at_once, "{lifetime}/{renew}/{delay}");
    }
}

#[test]
fn fingerprints_and_bundle_hashes_are_hex_sha256() {
    let key = key();
    assert_eq!(key.sha256(), to_hex(&Sha256::digest(key.cert_der())));
    assert_eq!(key.sha256().len(), 64);
    assert_ne!(key.sha256(), self::key().sha256());
    assert_eq!(bundle_sha256(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    let b = bundle(&[key]);
    assert_eq!(bundle_sha256(&b), to_hex(&Sha256::digest(b.as_bytes())));
}
