use proptest::prelude::*;

use super::*;

fn digest(i: usize) -> String {
    format!("sha256:{:064x}", i)
}

fn round_trip(l: &Ledger) -> Ledger {
    let (pushed, pins) = l.to_shards();
    let pushed: Vec<Shard> = pushed.iter().map(|s| Shard::decode(&s.encode("pushed"), "pushed")).collect();
    let pins: Vec<Shard> = pins.iter().map(|s| Shard::decode(&s.encode("pins"), "pins")).collect();
    Ledger::from_shards(&pushed, &pins)
}

#[test]
fn earliest_push_wins_and_sightings_never_override() {
    let mut l = Ledger::default();
    assert!(l.record_seen("d", 100));
    assert!(l.record_push("d", 50), "an event older than the sighting corrects it");
    assert!(!l.record_push("d", 70));
    assert!(!l.record_seen("d", 10), "a sighting never rewrites a known time");
    assert_eq!(l.pushed["d"], 50);
    assert!(l.forget("d") && !l.forget("d"));
}

#[test]
fn shards_round_trip_with_pins_and_restores_apart() {
    let mut l = Ledger::default();
    for i in 0..500 {
        l.record_push(&digest(i), 1_700_000_000 + i as i64);
    }
    l.pins.insert("v1".into(), digest(1));
    l.pins.insert("v2".into(), digest(2));
    l.restores = 3;
    l.restoring.insert("v3".into(), digest(9));
    let (pushed, pins) = l.to_shards();
    assert_eq!((pushed.len(), pins.len()), (SHARDS, SHARDS));
    assert!(pushed.iter().filter(|s| !s.lines.is_empty()).count() > SHARDS / 2, "keys spread over shards");
    assert!(pushed.iter().all(|s| !s.encode("pushed").contains_key("pins")), "pins are not in push-time objects");
    assert_eq!(round_trip(&l), l);
}

#[test]
fn pins_written_by_an_earlier_berth_are_read_from_the_push_time_objects() {
    let data: BTreeMap<String, String> =
        [("pushed".to_string(), format!("{} 5\n", digest(1))), ("pins".to_string(), format!("v1 {}\n", digest(1)))]
            .into();
    let shard = Shard::decode(&data, "pushed");
    let l = Ledger::from_shards([&shard], []);
    assert_eq!(l.pins.get("v1"), Some(&digest(1)));
    assert_eq!(l.pushed.get(&digest(1)), Some(&5));
}

/// The longest keys there are: a 128-character tag, a sha256 digest, the largest times.
#[test]
fn a_full_shard_stays_under_900_kib_with_the_longest_keys() {
    let mut l = Ledger::default();
    let mut i = 0usize;
    let mut per_shard = [0usize; SHARDS];
    while per_shard.iter().any(|n| *n < MAX_PUSHED_PER_SHARD) {
        let d = digest(i);
        let s = shard_of(&d);
        if per_shard[s] < MAX_PUSHED_PER_SHARD {
            per_shard[s] += 1;
            l.pushed.insert(d, i64::MIN);
        }
        i += 1;
    }
    let mut per_shard = [0usize; SHARDS];
    let mut i = 0usize;
    while per_shard.iter().any(|n| *n < MAX_PINS_PER_SHARD) {
        let tag = format!("{i:0>128}");
        let s = shard_of(&tag);
        if per_shard[s] < MAX_PINS_PER_SHARD {
            per_shard[s] += 1;
            l.pins.insert(tag, digest(i));
        }
        i += 1;
    }
    l.restores = i64::MAX;
    let before = l.clone();
    assert_eq!(l.fit(&before), 0, "exactly at the cap nothing is left out");
    let (pushed, pins) = l.to_shards();
    for s in &pushed {
        assert_eq!(s.lines.len(), MAX_PUSHED_PER_SHARD);
        assert!(s.bytes("pushed") < 950 * 1024, "a push-time shard of {} bytes", s.bytes("pushed"));
    }
    for s in &pins {
        assert_eq!(s.lines.len(), MAX_PINS_PER_SHARD);
        assert!(s.bytes("pins") < 950 * 1024, "a pin shard of {} bytes", s.bytes("pins"));
    }
    assert_eq!(round_trip(&l), l, "nothing dropped at the cap");
}

#[test]
fn over_the_cap_new_entries_are_left_out_and_old_ones_never_dropped() {
    let mut before = Ledger::default();
    let n = SHARDS * MAX_PUSHED_PER_SHARD + 5_000;
    for i in 0..n {
        before.record_push(&digest(i), i as i64);
    }
    // An earlier berth could have stored more than the cap: it stays.
    let mut l = before.clone();
    for i in n..n + 100 {
        l.record_seen(&digest(i), 1_000_000_000);
    }
    let dropped = l.fit(&before);
    assert_eq!(dropped, 100, "every new entry of a full shard is left out");
    for (d, t) in &before.pushed {
        assert_eq!(l.pushed.get(d), Some(t), "an existing push time was dropped or changed");
    }
}

#[test]
fn the_candidates_for_pruning_are_untagged_digests_of_full_shards_oldest_first() {
    let mut l = Ledger::default();
    for i in 0..SHARDS * MAX_PUSHED_PER_SHARD * 2 {
        l.record_push(&digest(i), (SHARDS * MAX_PUSHED_PER_SHARD * 2 - i) as i64);
    }
    let tagged: BTreeSet<String> = (0..10).map(digest).collect();
    let c = l.over_cap(&tagged);
    assert!(!c.iter().any(|d| tagged.contains(d)), "a tagged digest exists: never a candidate");
    let times: Vec<i64> = c.iter().map(|d| l.pushed[d]).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    let small: Ledger = Ledger { pushed: [(digest(1), 1)].into(), ..Default::default() };
    assert!(small.over_cap(&BTreeSet::new()).is_empty(), "under the cap nothing is asked");
}

#[test]
fn malformed_shards_decode_leniently() {
    let data: BTreeMap<String, String> =
        [("pushed".to_string(), "good 5\nbad\nworse x\n".to_string()), ("restores".to_string(), "many".to_string())]
            .into_iter()
            .collect();
    let shard = Shard::decode(&data, "pushed");
    let l = Ledger::from_shards([&shard], []);
    assert_eq!(l.pushed, [("good".to_string(), 5)].into());
    assert_eq!(l.restores, 0);
}

#[test]
fn shard_names_are_valid_object_names() {
    let name = shard_name(&"a".repeat(253), 15);
    assert!(name.len() <= 253 && name.ends_with("-f"), "{name}");
    assert_eq!(shard_name("api", 0), "berth-ledger-api-0");
    assert_eq!(pins_shard_name("api", 10), "berth-pins-api-a");
    assert_eq!(shard_index("berth-pins-api-a"), Some(10));
    assert_eq!(shard_index("berth-pins-api-zz"), None);
}

#[derive(Clone, Debug)]
enum Op {
    Push(u8, i64),
    Seen(u8, i64),
    Forget(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..20, 0i64..1000).prop_map(|(d, t)| Op::Push(d, t)),
        (0u8..20, 0i64..1000).prop_map(|(d, t)| Op::Seen(d, t)),
        (0u8..20).prop_map(Op::Forget),
    ]
}

proptest! {
    /// Whatever events, sightings and lifecycle deletions arrive, a digest's push time can only
    /// move earlier while the digest is known, and the stored form reads back the same.
    #[test]
    fn push_times_never_move_later(ops in proptest::collection::vec(op(), 0..200)) {
        let mut l = Ledger::default();
        for op in ops {
            let before = l.clone();
            match op {
                Op::Push(d, t) => { l.record_push(&digest(d as usize), t); }
                Op::Seen(d, t) => { l.record_seen(&digest(d as usize), t); }
                Op::Forget(d) => { l.forget(&digest(d as usize)); }
            }
            for (d, t) in &before.pushed {
                if let Some(now) = l.pushed.get(d) {
                    prop_assert!(now <= t, "{d} moved from {t} to {now}");
                }
            }
        }
        prop_assert_eq!(round_trip(&l), l);
    }

    /// `fit` keeps everything that was there before, and ends within the cap when it started there.
    #[test]
    fn fit_keeps_what_was_stored(old in 0usize..50, new in 0usize..50) {
        let mut before = Ledger::default();
        for i in 0..old {
            before.record_push(&digest(i), i as i64);
        }
        let mut l = before.clone();
        for i in old..old + new {
            l.record_seen(&digest(i), 5);
        }
        prop_assert_eq!(l.fit(&before), 0);
        prop_assert_eq!(l.pushed.len(), old + new);
        for (d, t) in &before.pushed {
            prop_assert_eq!(l.pushed.get(d), Some(t));
        }
    }
}
