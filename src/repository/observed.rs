//! What one Repository reconcile learned, applied to the ledger: a pure function, so the rules
//! that keep push times and pins right under concurrency are table-tested without servers.

use std::collections::{BTreeMap, BTreeSet};

use super::{ledger::Ledger, tags};

/// What a reconcile read from the registry, each claim already confirmed with it.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// tag -> digest, as listed (after any restore berth made).
    pub tags: BTreeMap<String, String>,
    /// Push events whose digest the registry has: digest -> push time (unix ms).
    pub pushes: Vec<(String, i64)>,
    /// Digests the registry said are gone (delete events, or pruning at a full shard).
    pub gone: Vec<String>,
    /// Push times the ledger held before the listing: a digest among them that the ledger lacks
    /// now was forgotten meanwhile (the lifecycle deleted it) and is not new.
    pub known_before: BTreeMap<String, i64>,
    /// Immutable tags whose first image the registry answered 404 for: they start again.
    pub released: BTreeSet<String>,
    /// Whether the repository's tags are immutable, and its exclusion filters.
    pub immutable: bool,
    pub exclusions: Vec<String>,
    /// When the listing was made (unix ms): the time of a digest seen for the first time.
    pub now: i64,
}

/// Applies `seen` to `book` (the ledger as stored now; this may run again on a fresher one after
/// a conflict). Returns how many new entries a full shard left out.
pub fn record(book: &mut Ledger, seen: &Observed) -> usize {
    let before = book.clone();
    for (digest, at) in &seen.pushes {
        book.record_push(digest, *at);
    }
    for digest in &seen.gone {
        book.forget(digest);
    }
    for digest in seen.tags.values() {
        if seen.known_before.contains_key(digest) && !book.pushed.contains_key(digest) {
            continue; // forgotten since the listing: deleted, not new
        }
        book.record_seen(digest, seen.now);
    }
    if seen.immutable {
        let mut plan = tags::plan_immutable(&book.pins, &seen.tags, &seen.exclusions);
        for tag in &seen.released {
            if let Some(digest) = seen.tags.get(tag) {
                plan.pins.insert(tag.clone(), digest.clone());
            }
        }
        // A restore under way is done when its tag is back on its pin (put back now, or by a
        // replica that stopped before it could count it); released tags are not restores.
        for (tag, moved) in std::mem::take(&mut book.restoring) {
            let pin = plan.pins.get(&tag);
            if seen.released.contains(&tag) || pin.is_none() {
                continue;
            }
            if seen.tags.get(&tag) == pin {
                book.restores += 1;
            } else {
                book.restoring.insert(tag, moved);
            }
        }
        book.pins = plan.pins;
    } else {
        book.pins.clear();
        book.restoring.clear();
    }
    book.fit(&before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map<V: Clone>(pairs: &[(&str, V)]) -> BTreeMap<String, V> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn seen(tags: &[(&str, &str)]) -> Observed {
        Observed {
            tags: map(&tags.iter().map(|(t, d)| (*t, d.to_string())).collect::<Vec<_>>()),
            now: 100,
            ..Default::default()
        }
    }

    #[test]
    fn confirmed_pushes_and_sightings_are_recorded_earliest_first() {
        let mut book = Ledger { pushed: map(&[("d1", 50)]), ..Default::default() };
        let mut s = seen(&[("v1", "d1"), ("v2", "d2")]);
        s.pushes = vec![("d2".into(), 90), ("d1".into(), 70)];
        assert_eq!(record(&mut book, &s), 0);
        assert_eq!(book.pushed, map(&[("d1", 50), ("d2", 90)]), "an event never moves a push time later");
    }

    #[test]
    fn a_digest_forgotten_since_the_listing_is_not_brought_back() {
        // The listing saw d1; the lifecycle deleted it and forgot it before this write.
        let mut book = Ledger::default();
        let mut s = seen(&[("v1", "d1"), ("v2", "d2")]);
        s.known_before = map(&[("d1", 10)]);
        record(&mut book, &s);
        assert!(!book.pushed.contains_key("d1"), "a deleted digest came back as first seen now");
        assert_eq!(book.pushed.get("d2"), Some(&100), "a digest new to the ledger is seen now");
    }

    #[test]
    fn gone_digests_are_forgotten() {
        let mut book = Ledger { pushed: map(&[("d1", 1), ("d9", 2)]), ..Default::default() };
        let mut s = seen(&[("v1", "d1")]);
        s.gone = vec!["d9".into()];
        record(&mut book, &s);
        assert_eq!(book.pushed, map(&[("d1", 1)]));
    }

    #[test]
    fn pins_hold_released_tags_start_again_and_excluded_tags_are_free() {
        let mut book =
            Ledger { pins: map(&[("v1", "d1".to_string()), ("v2", "d2".to_string())]), ..Default::default() };
        // v1 was pushed over and could not be put back (not a 404): its pin stays. v2's first
        // image is gone (404): v2 starts again on its new digest. latest is excluded.
        let mut s = seen(&[("v1", "x1"), ("v2", "x2"), ("latest", "x3"), ("v3", "d3")]);
        s.immutable = true;
        s.exclusions = vec!["latest".into()];
        s.released = ["v2".to_string()].into();
        record(&mut book, &s);
        assert_eq!(book.pins, map(&[("v1", "d1".to_string()), ("v2", "x2".to_string()), ("v3", "d3".to_string())]));
    }

    #[test]
    fn a_restore_under_way_is_counted_once_when_its_tag_is_back() {
        let pins = map(&[("v1", "d1".to_string()), ("v2", "d2".to_string())]);
        let restoring = map(&[("v1", "x1".to_string()), ("v2", "x2".to_string())]);
        let mut book = Ledger { pins, restoring, restores: 4, ..Default::default() };
        // v1 is back on its pin (restored now, or by a replica that died before counting);
        // v2 still points at the overwrite: still under way.
        let mut s = seen(&[("v1", "d1"), ("v2", "x2")]);
        s.immutable = true;
        record(&mut book, &s);
        assert_eq!(book.restores, 5);
        assert_eq!(book.restoring, map(&[("v2", "x2".to_string())]));
        // Applied again (after a conflict, or the next reconcile): nothing counted twice.
        record(&mut book, &s);
        assert_eq!(book.restores, 5);
        // v2's first image is gone: released, not a restore.
        s.released = ["v2".to_string()].into();
        record(&mut book, &s);
        assert_eq!((book.restores, book.restoring.len()), (5, 0));
    }

    #[test]
    fn a_mutable_repository_keeps_no_pins() {
        let mut book = Ledger {
            pins: map(&[("v1", "d1".to_string())]),
            restoring: map(&[("v1", "x".to_string())]),
            ..Default::default()
        };
        record(&mut book, &seen(&[("v1", "d2")]));
        assert!(book.pins.is_empty() && book.restoring.is_empty());
    }
}
