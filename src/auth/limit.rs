//! Slowing down password guessing: failed logins per key (client address or username) are
//! limited to a rate, with a burst.
//!
//! Robot and pull-secret passwords are 256 random bits and cannot be guessed; the limit is there
//! so a misconfigured client or a scanner cannot make the token endpoint spend its CPU on failed
//! logins (and fill logs), and to dampen guessing of anything weaker added later.
//!
//! The algorithm is GCRA, a token bucket kept as one instant per key: `limit` failures may come
//! at once, then one more per `window / limit` (so a key's first minute can hold up to
//! `2 * limit - 1`, every later minute `limit`). Unlike fixed windows it allows no second burst
//! at a window boundary, and it needs one instant per key rather than a log of failures. Time is
//! a parameter, so tests need no sleeps.
//!
//! Success does not reset a key: an attacker holding one valid credential could otherwise
//! interleave it to keep guessing others from the same address.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// Longest key kept; longer ones are cut (at a character boundary). Cutting can only merge keys,
/// which limits more, never less.
const MAX_KEY_LEN: usize = 256;

/// Whether a login may be attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refuse without checking the password (HTTP 429 with `Retry-After`).
    Limited {
        retry_after: Duration,
    },
}

/// Failed-login counts in bounded memory. Not thread-safe by itself: the token endpoint keeps
/// it behind a `Mutex` (each call is a hash lookup, so the lock is held only briefly).
#[derive(Debug)]
pub struct FailedLogins {
    /// Time between failures allowed at the sustained rate (`window / limit`).
    interval: Duration,
    /// How far ahead of now a key's theoretical arrival time may run before it is limited.
    window: Duration,
    max_keys: usize,
    /// Per key: the time at which its bucket is full again ("theoretical arrival time").
    keys: HashMap<String, Instant>,
}

impl FailedLogins {
    /// A burst of `limit` failures, then `limit` per `window` per key, tracking at most
    /// `max_keys` keys. `limit` and `max_keys` of 0 are taken as 1.
    pub fn new(limit: u32, window: Duration, max_keys: usize) -> FailedLogins {
        let limit = limit.max(1);
        FailedLogins { interval: window / limit, window, max_keys: max_keys.max(1), keys: HashMap::new() }
    }

    /// A burst of 10 failures, then 10 a minute, per key; 10,000 keys.
    pub fn default_limits() -> FailedLogins {
        FailedLogins::new(10, Duration::from_secs(60), 10_000)
    }

    /// Whether `key` may try to log in at `now`. Call before checking credentials.
    pub fn check(&self, key: &str, now: Instant) -> Verdict {
        match self.keys.get(cut(key)) {
            Some(&full_at) => self.verdict(full_at, now),
            None => Verdict::Allowed,
        }
    }

    /// Records a failed login of `key` at `now` and returns whether the next attempt is allowed.
    pub fn record_failure(&mut self, key: &str, now: Instant) -> Verdict {
        let key = cut(key);
        if !self.keys.contains_key(key) && self.keys.len() >= self.max_keys {
            self.evict(now);
        }
        let full_at = self.keys.entry(key.to_string()).or_insert(now);
        let base = (*full_at).max(now);
        *full_at = base.checked_add(self.interval).unwrap_or(base);
        let full_at = *full_at;
        self.verdict(full_at, now)
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn verdict(&self, full_at: Instant, now: Instant) -> Verdict {
        // Limited once another failure would need more than the whole window to drain.
        let next = full_at.saturating_duration_since(now).saturating_add(self.interval);
        if next > self.window { Verdict::Limited { retry_after: next - self.window } } else { Verdict::Allowed }
    }

    /// Makes room: first forget keys whose bucket is full again (as if never seen); if that frees
    /// too little, forget the quarter with the fewest recent failures. Dropping a quarter at once
    /// keeps eviction amortized O(1) under a flood of new keys; the keys that failed most stay.
    fn evict(&mut self, now: Instant) {
        self.keys.retain(|_, full_at| *full_at > now);
        if self.keys.len() < self.max_keys {
            return;
        }
        let mut times: Vec<Instant> = self.keys.values().copied().collect();
        let quarter = (times.len() / 4).max(1);
        let (_, cutoff, _) = times.select_nth_unstable(quarter - 1);
        let cutoff = *cutoff;
        let mut budget = quarter;
        self.keys.retain(|_, full_at| {
            let drop = *full_at <= cutoff && budget > 0;
            if drop {
                budget -= 1;
            }
            !drop
        });
    }
}

fn cut(key: &str) -> &str {
    if key.len() <= MAX_KEY_LEN {
        return key;
    }
    let mut end = MAX_KEY_LEN;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

#[cfg(test)]
mod tests;
