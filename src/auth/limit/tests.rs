use proptest::prelude::*;

use super::*;

const MINUTE: Duration = Duration::from_secs(60);

fn limited(verdict: Verdict) -> Option<Duration> {
    match verdict {
        Verdict::Allowed => None,
        Verdict::Limited { retry_after } => Some(retry_after),
    }
}

#[test]
fn ten_failures_at_once_then_one_every_six_seconds() {
    let t0 = Instant::now();
    let mut logins = FailedLogins::new(10, MINUTE, 100);
    for i in 1..10 {
        assert_eq!(logins.record_failure("10.0.0.1", t0), Verdict::Allowed, "failure {i}");
    }
    assert_eq!(logins.check("10.0.0.1", t0), Verdict::Allowed);
    let six = Duration::from_secs(6);
    assert_eq!(limited(logins.record_failure("10.0.0.1", t0)), Some(six), "the tenth");
    assert_eq!(limited(logins.check("10.0.0.1", t0)), Some(six));
    assert_eq!(limited(logins.check("10.0.0.1", t0 + Duration::from_secs(2))), Some(Duration::from_secs(4)));
    assert_eq!(logins.check("10.0.0.1", t0 + six), Verdict::Allowed, "one more after six seconds");
    assert_eq!(limited(logins.record_failure("10.0.0.1", t0 + six)), Some(six));
    assert_eq!(logins.check("10.0.0.1", t0 + 2 * MINUTE), Verdict::Allowed);
}

#[test]
fn keys_are_independent() {
    let t0 = Instant::now();
    let mut logins = FailedLogins::new(2, MINUTE, 100);
    logins.record_failure("a", t0);
    logins.record_failure("a", t0);
    assert!(limited(logins.check("a", t0)).is_some());
    assert_eq!(logins.check("b", t0), Verdict::Allowed);
    assert_eq!(logins.check("", t0), Verdict::Allowed);
}

#[test]
fn a_steady_trickle_below_the_rate_is_never_limited() {
    let t0 = Instant::now();
    let mut logins = FailedLogins::new(10, MINUTE, 100);
    for i in 0..1_000 {
        let now = t0 + Duration::from_secs(6 * i);
        assert_eq!(logins.check("slow", now), Verdict::Allowed, "attempt {i}");
        logins.record_failure("slow", now);
    }
}

#[test]
fn no_double_burst_across_a_window_boundary() {
    // With fixed windows, 10 failures at 0:59 and 10 at 1:00 would both pass.
    let t0 = Instant::now();
    let mut logins = FailedLogins::new(10, MINUTE, 100);
    let late = t0 + Duration::from_secs(59);
    for _ in 0..10 {
        logins.record_failure("k", late);
    }
    assert!(limited(logins.check("k", t0 + MINUTE)).is_some());
}

#[test]
fn memory_stays_bounded_and_the_worst_offenders_are_kept() {
    let t0 = Instant::now();
    let mut logins = FailedLogins::new(3, MINUTE, 100);
    for _ in 0..3 {
        logins.record_failure("attacker", t0);
    }
    for i in 0..10_000 {
        logins.record_failure(&format!("spray-{i}"), t0);
        assert!(logins.len() <= 100);
    }
    assert!(limited(logins.check("attacker", t0)).is_some(), "three failures outrank one");
}

#[test]
fn expired_keys_are_forgotten_first() {
    let t0 = Instant::now();
    let mut logins = FailedLogins::new(3, MINUTE, 2);
    logins.record_failure("old", t0);
    for _ in 0..3 {
        logins.record_failure("bad", t0 + MINUTE);
    }
    logins.record_failure("new", t0 + MINUTE);
    assert_eq!(logins.len(), 2);
    assert_eq!(logins.check("old", t0 + MINUTE), Verdict::Allowed);
    assert!(limited(logins.check("bad", t0 + MINUTE)).is_some());
}

#[test]
fn long_keys_are_cut_which_only_merges_them() {
    let t0 = Instant::now();
    let mut logins = FailedLogins::new(1, MINUTE, 10);
    let long = "é".repeat(1_000);
    logins.record_failure(&long, t0);
    assert!(limited(logins.check(&format!("{long}x"), t0)).is_some(), "same first 256 bytes");
    assert_eq!(cut(&long).len(), 256);
    assert_eq!(cut(&format!("a{long}")).len(), 255, "cut at a character boundary");
}

#[test]
fn zero_limits_are_taken_as_one() {
    let t0 = Instant::now();
    let mut logins = FailedLogins::new(0, MINUTE, 0);
    assert!(limited(logins.record_failure("a", t0)).is_some());
    logins.record_failure("b", t0);
    assert_eq!(logins.len(), 1);
    assert!(!logins.is_empty());
    assert!(FailedLogins::default_limits().is_empty());
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn one_client_failing_with_one_name_locks_out_neither_other_clients_nor_its_other_names() {
    let t0 = Instant::now();
    let mut logins = LoginLimits::new(3, MINUTE, 100);
    let (bad, good) = (ip("10.0.0.1"), ip("10.0.0.2"));
    for _ in 0..3 {
        logins.record_failure("robot$ns+ci", bad, t0);
    }
    assert!(limited(logins.check("robot$ns+ci", bad, t0)).is_some());
    assert_eq!(logins.check("robot$ns+ci", good, t0), Verdict::Allowed, "another client, the same name");
    assert_eq!(logins.check("robot$ns+deploy", bad, t0), Verdict::Allowed, "the same client, another name");
    assert_eq!(logins.tracked(), (1, 1));
}

#[test]
fn one_client_spraying_names_is_limited_at_five_times_the_budget() {
    let t0 = Instant::now();
    let mut logins = LoginLimits::new(3, MINUTE, 100);
    let sprayer = ip("2001:db8::1");
    for i in 0..14 {
        assert_eq!(logins.record_failure(&format!("user-{i}"), sprayer, t0), Verdict::Allowed, "failure {i}");
    }
    // The fifteenth failure empties the client's budget of 15: every name is refused now.
    assert_eq!(limited(logins.record_failure("user-14", sprayer, t0)), Some(MINUTE / 15));
    assert!(limited(logins.check("never-tried", sprayer, t0)).is_some());
    assert_eq!(logins.check("never-tried", ip("2001:db8::2"), t0), Verdict::Allowed, "others are not");
    assert_eq!(logins.check("never-tried", sprayer, t0 + MINUTE / 15), Verdict::Allowed, "then one per 4 s");
}

#[test]
fn both_limits_give_the_longer_wait() {
    let t0 = Instant::now();
    let mut logins = LoginLimits::new(1, MINUTE, 100);
    let client = ip("10.0.0.1");
    for i in 0..4 {
        logins.record_failure(&format!("user-{i}"), client, t0);
    }
    // Per name: one a minute; per client: five a minute, the fifth just spent.
    assert_eq!(limited(logins.record_failure("user-4", client, t0)), Some(MINUTE));
    assert_eq!(limited(logins.check("user-5", client, t0)), Some(MINUTE / 5));
    assert_eq!(both(Verdict::Allowed, Verdict::Allowed), Verdict::Allowed);
}

#[test]
fn a_name_cannot_reach_into_another_clients_key() {
    // An address has no space: "10.0.0.1" + " x" is never "10.0.0.1 x" of another pair.
    assert_eq!(name_key(ip("10.0.0.1"), "x"), "10.0.0.1 x");
    assert_ne!(name_key(ip("10.0.0.1"), "1 x"), name_key(ip("10.0.0.11"), "x"));
    let long = "n".repeat(1_000);
    assert!(cut(&name_key(ip("2001:db8::1"), &long)).starts_with("2001:db8::1 "), "the client survives a cut");
}

proptest! {
    #[test]
    fn never_more_than_the_burst_plus_the_rate(gaps in prop::collection::vec(0u64..20_000, 1..200)) {
        let t0 = Instant::now();
        let mut logins = FailedLogins::new(5, MINUTE, 10);
        let mut now = t0;
        let mut accepted: Vec<Instant> = Vec::new();
        for gap in gaps {
            now += Duration::from_millis(gap);
            if logins.check("k", now) == Verdict::Allowed {
                accepted.push(now);
                logins.record_failure("k", now);
            }
        }
        // However the attempts are spread, between any two accepted failures there are at most
        // the burst (5) plus one per interval (12 s) elapsed.
        let interval = MINUTE / 5;
        for (i, start) in accepted.iter().enumerate() {
            for (j, end) in accepted.iter().enumerate().skip(i) {
                let elapsed = end.duration_since(*start);
                let allowed = 5 + (elapsed.as_millis() / interval.as_millis()) as usize;
                let failures = j - i + 1;
                prop_assert!(failures <= allowed, "{failures} failures in {elapsed:?}");
            }
        }
        // And a flood is held to the sustained rate: over 200 attempts 0-20 s apart, far fewer.
        let span = now.duration_since(t0);
        prop_assert!(accepted.len() <= 5 + (span.as_millis() / interval.as_millis()) as usize);
    }

    #[test]
    fn never_panics(limit in 0u32..100, window_ms in 0u64..10_000_000, keys in prop::collection::vec(".{0,300}", 1..50), steps in prop::collection::vec(0u64..100_000, 1..50)) {
        let t0 = Instant::now();
        let mut logins = FailedLogins::new(limit, Duration::from_millis(window_ms), 7);
        let mut now = t0;
        for (key, step) in keys.iter().cycle().zip(steps) {
            now += Duration::from_millis(step);
            let before = logins.check(key, now);
            let after = logins.record_failure(key, now);
            // A failure that was allowed leaves at most one interval to wait.
            if let (Verdict::Allowed, Verdict::Limited { retry_after }) = (before, after) {
                prop_assert!(retry_after <= Duration::from_millis(window_ms) / limit.max(1));
            }
            prop_assert!(logins.len() <= 7);
        }
    }

    /// Keyed by (client, name), one client's failures never limit another client.
    #[test]
    fn clients_never_limit_each_other(attempts in prop::collection::vec((0u8..4, 0u8..6, 0u64..5_000), 1..200)) {
        let t0 = Instant::now();
        let mut logins = LoginLimits::new(2, MINUTE, 1_000);
        let mut alone: Vec<LoginLimits> = (0..4).map(|_| LoginLimits::new(2, MINUTE, 1_000)).collect();
        let mut now = t0;
        for (client, name, gap) in attempts {
            now += Duration::from_millis(gap);
            let (address, name) = (IpAddr::from([10, 0, 0, client]), format!("user-{name}"));
            let together = logins.check(&name, address, now);
            prop_assert_eq!(together, alone[client as usize].check(&name, address, now));
            if together == Verdict::Allowed {
                logins.record_failure(&name, address, now);
                alone[client as usize].record_failure(&name, address, now);
            }
        }
        prop_assert!(logins.tracked().1 <= 4);
    }
}
