//! When to ask the registry where a watched tag points: one request per distinct image reference
//! (or repository listing) per interval however many workloads follow it, spread over the
//! interval so that keys watched at the same instant (at start-up, say) do not poll in lockstep,
//! backing off when the registry rate-limits or fails.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// Longest wait between two polls of a tag whose registry keeps refusing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The shortest wait after a key's first answer.
pub const MIN_FIRST_WAIT: Duration = Duration::from_secs(1);
/// How many times to ask again when the registry does not point a tag at a push event's
/// digest yet: 50 ms doubling to 1.6 s, about 3 s in all.
pub const RECHECKS: u32 = 6;

/// How long to wait before asking the registry again (`attempt` from 0) when it does not point
/// a tag at a push event's digest. Distribution sends the event once the manifest is stored
/// and writes the tag just after, so an answer right after the event can still be the old
/// digest (or none, for a new tag). `None`: stop asking; polling catches up, and a forged
/// event costs a few HEADs.
pub fn recheck_delay(attempt: u32) -> Option<Duration> {
    (attempt < RECHECKS).then(|| Duration::from_millis(50 << attempt))
}

/// What one poll of a tag gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// The registry answered (the tag exists or not).
    Answered,
    /// 429: wait longer before asking again.
    RateLimited,
    /// Unreachable, 5xx, ...: try again sooner than a rate limit, later than the interval.
    Failed,
}

#[derive(Clone, Debug)]
struct Entry {
    interval: Duration,
    next: Instant,
    in_flight: bool,
    failures: u32,
    /// Not answered yet: the first answer places the next poll anywhere in the interval.
    fresh: bool,
}

/// Poll times of the watched tags, keyed by `K` (host, path, tag).
#[derive(Debug)]
pub struct Schedule<K> {
    entries: HashMap<K, Entry>,
}

impl<K> Default for Schedule<K> {
    fn default() -> Self {
        Schedule { entries: HashMap::new() }
    }
}

/// `d` scaled by a factor in [0.9, 1.1) drawn from `jitter` (in [0, 1)).
fn jittered(d: Duration, jitter: f64) -> Duration {
    d.mul_f64(0.9 + 0.2 * jitter.clamp(0.0, 1.0))
}

impl<K: Eq + Hash + Clone> Schedule<K> {
    /// Starts watching `key` (polled at once when new) or changes its interval (the shortest
    /// interval any follower asked for is the caller's to compute).
    pub fn watch(&mut self, key: K, interval: Duration, now: Instant) {
        self.entries
            .entry(key)
            .and_modify(|e| {
                if interval < e.interval && !e.in_flight {
                    e.next = e.next.min(now + interval);
                }
                e.interval = interval;
            })
            .or_insert(Entry { interval, next: now, in_flight: false, failures: 0, fresh: true });
    }

    pub fn unwatch(&mut self, key: &K) {
        self.entries.remove(key);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys due now; they are marked in flight until `done` is called for them.
    pub fn due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        for (k, e) in self.entries.iter_mut() {
            if !e.in_flight && e.next <= now {
                e.in_flight = true;
                due.push(k.clone());
            }
        }
        due
    }

    /// Records a poll's outcome and schedules the next one. `jitter` is a number in [0, 1).
    /// After a key's first answer the next poll is `jitter` of an interval away (at least
    /// [`MIN_FIRST_WAIT`]): keys watched together spread evenly over the interval, and keep
    /// their phase afterwards (each later wait is the interval, jittered by 10%).
    pub fn done(&mut self, key: &K, outcome: PollOutcome, now: Instant, jitter: f64) {
        let Some(e) = self.entries.get_mut(key) else { return };
        e.in_flight = false;
        let wait = match outcome {
            PollOutcome::Answered if e.fresh => {
                e.failures = 0;
                e.fresh = false;
                e.next = now + e.interval.mul_f64(jitter.clamp(0.0, 1.0)).max(MIN_FIRST_WAIT);
                return;
            }
            PollOutcome::Answered => {
                e.failures = 0;
                e.interval
            }
            PollOutcome::RateLimited => {
                e.failures = (e.failures + 1).min(16);
                e.interval.saturating_mul(1 << e.failures.min(6)).min(MAX_BACKOFF).max(e.interval)
            }
            PollOutcome::Failed => {
                e.failures = (e.failures + 1).min(16);
                Duration::from_secs(5u64 << e.failures.min(6)).min(e.interval)
            }
        };
        e.next = now + jittered(wait, jitter);
    }

    /// A push event told where the tag points: the next poll can wait a whole interval.
    pub fn heard(&mut self, key: &K, now: Instant, jitter: f64) {
        if let Some(e) = self.entries.get_mut(key)
            && !e.in_flight
        {
            e.next = now + jittered(e.interval, jitter);
        }
    }

    /// Every tag is due now (a replica that just became the leader checks everything).
    pub fn all_due(&mut self, now: Instant) {
        for e in self.entries.values_mut().filter(|e| !e.in_flight) {
            e.next = now;
        }
    }

    /// When the earliest poll is due (None when nothing is watched or everything is in flight).
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.values().filter(|e| !e.in_flight).map(|e| e.next).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_new_tag_is_polled_at_once_then_once_per_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.watch("a", MIN, t0);
        assert_eq!(s.due(t0), vec!["a"]);
        assert!(s.due(t0).is_empty(), "in flight: not handed out twice");
        s.done(&"a", PollOutcome::Answered, t0, 0.5);
        // The first answer places the next poll half an interval away (jitter 0.5) ...
        assert!(s.due(t0 + MIN / 2 - Duration::from_secs(1)).is_empty());
        let t1 = t0 + MIN / 2;
        assert_eq!(s.due(t1), vec!["a"]);
        // ... and from then on, one interval.
        s.done(&"a", PollOutcome::Answered, t1, 0.5);
        assert!(s.due(t1 + MIN - Duration::from_secs(1)).is_empty());
        assert_eq!(s.due(t1 + MIN + Duration::from_secs(1)), vec!["a"]);
    }

    #[test]
    fn keys_watched_at_the_same_instant_spread_over_the_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        let n = 100;
        for k in 0..n {
            s.watch(k, MIN, t0);
        }
        assert_eq!(s.due(t0).len(), n, "every new key is polled at once");
        for k in 0..n {
            s.done(&k, PollOutcome::Answered, t0, (k as f64 + 0.5) / n as f64);
        }
        // Each tenth of the interval holds a tenth of the next polls, not all at its end.
        for tenth in 1..=10 {
            let due = s.due(t0 + MIN.mul_f64(tenth as f64 / 10.0)).len();
            assert_eq!(due, 10, "tenth {tenth}");
        }
    }

    #[test]
    fn an_unconfirmed_event_is_checked_again_a_few_times_then_left_to_polling() {
        let delays: Vec<Duration> = (0..).map_while(recheck_delay).collect();
        assert_eq!(delays.len(), RECHECKS as usize);
        assert_eq!(delays[0], Duration::from_millis(50));
        assert!(delays.windows(2).all(|w| w[1] == w[0] * 2));
        let total: Duration = delays.iter().sum();
        assert!(total > Duration::from_secs(2) && total < Duration::from_secs(5), "{total:?}");
    }

    #[test]
    fn many_followers_are_one_key() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        for _ in 0..1000 {
            s.watch(("host", "team/app", "stable"), MIN, t0);
        }
        assert_eq!(s.len(), 1);
        assert_eq!(s.due(t0).len(), 1);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let t0 = Instant::now();
        for j in [0.0, 0.25, 0.999, 5.0, -1.0] {
            let mut s = Schedule::default();
            s.watch("a", MIN, t0);
            s.due(t0);
            s.done(&"a", PollOutcome::Answered, t0, 0.0);
            s.due(t0 + MIN);
            s.done(&"a", PollOutcome::Answered, t0, j);
            let next = s.next_due().unwrap() - t0;
            assert!(next >= MIN.mul_f64(0.9) && next <= MIN.mul_f64(1.1), "{j}: {next:?}");
        }
    }

    #[test]
    fn rate_limits_back_off_and_recover() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.watch("a", MIN, t0);
        let mut waits = Vec::new();
        let mut now = t0;
        for _ in 0..8 {
            s.due(now);
            s.done(&"a", PollOutcome::RateLimited, now, 0.5);
            let next = s.next_due().unwrap();
            waits.push(next - now);
            now = next;
        }
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert!(waits[0] > MIN && *waits.last().unwrap() <= MAX_BACKOFF.mul_f64(1.1), "{waits:?}");
        s.due(now);
        s.done(&"a", PollOutcome::Answered, now, 1.0);
        assert_eq!(s.next_due().unwrap() - now, MIN, "the first answer, at jitter 1: one interval");
    }

    #[test]
    fn failures_retry_sooner_than_the_interval_but_not_in_a_loop() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.watch("a", Duration::from_secs(3600), t0);
        s.due(t0);
        s.done(&"a", PollOutcome::Failed, t0, 0.5);
        let wait = s.next_due().unwrap() - t0;
        assert!(wait >= Duration::from_secs(5) && wait < Duration::from_secs(60), "{wait:?}");
    }

    #[test]
    fn an_event_postpones_the_poll_and_a_shorter_interval_brings_it_forward() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.watch("a", Duration::from_secs(3600), t0);
        s.due(t0);
        s.done(&"a", PollOutcome::Answered, t0, 0.5);
        s.heard(&"a", t0 + MIN, 0.5);
        assert!(s.next_due().unwrap() > t0 + Duration::from_secs(3600));
        s.watch("a", Duration::from_secs(10), t0 + MIN);
        assert!(s.next_due().unwrap() <= t0 + MIN + Duration::from_secs(10));
        s.all_due(t0 + MIN);
        assert_eq!(s.next_due(), Some(t0 + MIN));
        s.unwatch(&"a");
        assert!(s.is_empty() && s.next_due().is_none());
    }
}
