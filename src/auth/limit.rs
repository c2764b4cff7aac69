//! Slowing down password guessing: failed logins are limited to a rate, with a burst, per
//! credential name and client address, and per client address whatever the name.
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
//! [`LoginLimits`] keeps two such limits. The client is the address the HTTP layer decided on
//! (the TCP peer, or what a trusted proxy forwarded: `crate::http::client`).
//! - Per (client, name), `limit` a window: a client that keeps failing with one name is held
//!   back for that name only. Another client, or the same client with its other credentials
//!   (a CI runner holding several robots), is not affected; keyed by the address alone, one
//!   broken client behind an ingress used to get every client 429s.
//! - Per client, [`CLIENT_BUDGET_FACTOR`] times that: a client trying many names (or many
//!   ServiceAccount tokens, whose username is not checked and can change on every try) is slowed
//!   too, at five times the rate, which no honest client reaches.
//!
//! What an attacker can still do, and why it is accepted:
//! - Lock a name out for others: only from its own address (or one it shares with the victim,
//!   behind a NAT berth does not know about). A global per-name limit would let anyone lock any
//!   robot out from everywhere, which is worse than the guessing it slows.
//! - Use many addresses (a botnet, an IPv6 prefix): each gets its own budgets, so guesses add up
//!   across addresses. IPv6 is not grouped by /64: Kubernetes pod networks give every pod of a
//!   node one /64, and grouping would bring back the shared lockout. The 256-bit passwords are
//!   what defeats guessing; this limit bounds the work per address.
//! - Choose its address by a forged `X-Forwarded-For`: only if it connects from inside
//!   `--trusted-proxies`, which must therefore name only the proxies.
//! - Flood new keys to push others out: memory stays bounded (`max_keys` per map), and eviction
//!   drops the keys with the fewest recent failures first, so the flooding client's own key
//!   stays; a forgotten key starts over with a fresh budget (limits less, never locks out).
//! - Keep guessing between successes: success does not reset a key, so an attacker holding one
//!   valid credential cannot interleave it to keep guessing others from the same address.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

/// How many more failures a client may have over all names than with one name.
pub const CLIENT_BUDGET_FACTOR: u32 = 5;

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

/// Failed logins per (client, name) and per client; see the module doc. Not thread-safe by
/// itself, like [`FailedLogins`].
#[derive(Debug)]
pub struct LoginLimits {
    by_name: FailedLogins,
    by_client: FailedLogins,
}

impl LoginLimits {
    /// A burst of `limit` failures, then `limit` per `window`, per (client, name); the per-client
    /// limit is [`CLIENT_BUDGET_FACTOR`] times that. Each tracks at most `max_keys` keys.
    pub fn new(limit: u32, window: Duration, max_keys: usize) -> LoginLimits {
        let limit = limit.max(1);
        LoginLimits {
            by_name: FailedLogins::new(limit, window, max_keys),
            by_client: FailedLogins::new(limit.saturating_mul(CLIENT_BUDGET_FACTOR), window, max_keys),
        }
    }

    /// 10 failures at once, then 10 a minute, per (client, name); 50 per client; 10,000 keys each.
    pub fn default_limits() -> LoginLimits {
        LoginLimits::new(10, Duration::from_secs(60), 10_000)
    }

    /// Whether `client` may try to log in as `name` at `now`. Call before checking credentials.
    pub fn check(&self, name: &str, client: IpAddr, now: Instant) -> Verdict {
        let by_name = self.by_name.check(&name_key(client, name), now);
        both(by_name, self.by_client.check(&client.to_string(), now))
    }

    /// Records a failed login of `client` as `name` at `now` and returns whether its next
    /// attempt with that name is allowed.
    pub fn record_failure(&mut self, name: &str, client: IpAddr, now: Instant) -> Verdict {
        let by_name = self.by_name.record_failure(&name_key(client, name), now);
        both(by_name, self.by_client.record_failure(&client.to_string(), now))
    }

    /// Keys tracked: (per (client, name), per client).
    pub fn tracked(&self) -> (usize, usize) {
        (self.by_name.len(), self.by_client.len())
    }
}

/// The client first, so that cutting a long name never cuts the client off; an address has no
/// space, so no two (client, name) pairs share a key.
fn name_key(client: IpAddr, name: &str) -> String {
    format!("{client} {name}")
}

/// Limited when either is, for the longer wait.
fn both(a: Verdict, b: Verdict) -> Verdict {
    match (a, b) {
        (Verdict::Allowed, v) | (v, Verdict::Allowed) => v,
        (Verdict::Limited { retry_after: a }, Verdict::Limited { retry_after: b }) => {
            Verdict::Limited { retry_after: a.max(b) }
        }
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
