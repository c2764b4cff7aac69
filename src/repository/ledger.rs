//! The push-time ledger: when each digest of a repository was first pushed (from a push event the
//! registry confirmed), or first seen by berth (for digests found by listing); the first digest
//! of each tag of an immutable repository (its pin); and how many moved tags berth restored.
//! Lifecycle policies read push times: the registry API has no push time, and an image config's
//! `created` is a build time (1970 in reproducible builds).
//!
//! Stored in the cluster so it survives restarts and failovers: ConfigMaps in the Repository's
//! namespace, owned by the Repository (garbage-collected with it). Push times and pins live in
//! separate objects (`berth-ledger-<repo>-<i>`, `berth-pins-<repo>-<i>`), each split into fixed
//! shards by a hash of the key, so a push rewrites one shard of about 1/16 of the push times and
//! never the pins. Two controllers write push times (the Repository controller records, the
//! lifecycle controller forgets what it deleted), so every write is a compare-and-swap on the
//! shard's resourceVersion and a conflict re-applies the change to what is stored now
//! ([`update`]). ConfigMaps rather than a CRD status or one object per digest: a push changes one
//! ~80-byte line in one shard, the number of objects stays fixed (32 per repository), and the
//! objects are readable with `kubectl get cm`.
//!
//! Bounded: a shard holds at most [`MAX_PUSHED_PER_SHARD`] push times and [`MAX_PINS_PER_SHARD`]
//! pins, which keeps every object under 900 KiB (the API limit is 1 MiB) whatever the keys
//! (proved in the tests with keys of the longest length). At the cap, entries of digests the
//! registry no longer has are pruned first ([`Ledger::over_cap`] names the candidates, the
//! controller asks the registry); if a shard is still full, new entries are not recorded
//! ([`Ledger::fit`]). An entry that exists is never dropped: a digest that lost its push time
//! would be re-recorded as first seen *now*, and an old image would look new.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::api::Repository;

/// Shards per repository, for push times and for pins alike.
pub const SHARDS: usize = 16;
/// Push times a shard holds at most: a line is at most 71 (digest) + 1 + 20 (i64) + 1 bytes,
/// so 10,000 lines stay under 950 KiB (about 850 KiB with real times); 16 shards cover 160,000
/// digests.
pub const MAX_PUSHED_PER_SHARD: usize = 10_000;
/// Pins a shard holds at most: a line is at most 128 (tag) + 1 + 71 (digest) + 1 bytes, so
/// 4,000 lines stay under 800 KiB; 16 shards cover 64,000 tags.
pub const MAX_PINS_PER_SHARD: usize = 4_000;
/// Label that ties a push-time shard to its Repository (value: the Repository's uid).
pub const LEDGER_LABEL: &str = "berth.dev/ledger-of";
/// Label that ties a pin shard to its Repository (value: the Repository's uid).
pub const PINS_LABEL: &str = "berth.dev/pins-of";
/// Attempts of a compare-and-swap write before giving up (the next reconcile tries again).
const ATTEMPTS: usize = 8;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    /// digest -> unix milliseconds of the first push (or first sight).
    pub pushed: BTreeMap<String, i64>,
    /// tag -> first digest (immutable repositories only).
    pub pins: BTreeMap<String, String>,
    /// Moved immutable tags berth put back, over the repository's life.
    pub restores: i64,
    /// Restores under way: tag -> the digest it was pushed over with. Written before the
    /// registry is touched, so a restore that a crash interrupts is still counted exactly once.
    pub restoring: BTreeMap<String, String>,
}

impl Ledger {
    /// Records a push at `at`; an earlier time wins (events can arrive after a listing), so a
    /// push time never moves later.
    pub fn record_push(&mut self, digest: &str, at: i64) -> bool {
        match self.pushed.get_mut(digest) {
            Some(t) if *t <= at => false,
            Some(t) => {
                *t = at;
                true
            }
            None => {
                self.pushed.insert(digest.to_string(), at);
                true
            }
        }
    }

    /// Records that berth saw `digest` at `now` unless it is already known.
    pub fn record_seen(&mut self, digest: &str, now: i64) -> bool {
        if self.pushed.contains_key(digest) {
            return false;
        }
        self.pushed.insert(digest.to_string(), now);
        true
    }

    /// Forgets a digest the registry no longer has.
    pub fn forget(&mut self, digest: &str) -> bool {
        self.pushed.remove(digest).is_some()
    }

    /// Digests worth asking the registry about because their shard is over the cap: those not
    /// in `tagged` (a tagged digest exists), oldest first. Pure.
    pub fn over_cap(&self, tagged: &BTreeSet<String>) -> Vec<String> {
        let mut counts = [0usize; SHARDS];
        for d in self.pushed.keys() {
            counts[shard_of(d)] += 1;
        }
        let mut out: Vec<(&String, i64)> = self
            .pushed
            .iter()
            .filter(|(d, _)| counts[shard_of(d)] > MAX_PUSHED_PER_SHARD && !tagged.contains(*d))
            .map(|(d, t)| (d, *t))
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
        out.into_iter().map(|(d, _)| d.clone()).collect()
    }

    /// Brings every shard within its cap by leaving out entries that `before` did not have (new
    /// push times and new pins), the last keys first; what `before` held stays. Returns how
    /// many entries were left out. Pure.
    pub fn fit(&mut self, before: &Ledger) -> usize {
        leave_out_new(&mut self.pushed, &before.pushed, MAX_PUSHED_PER_SHARD)
            + leave_out_new(&mut self.pins, &before.pins, MAX_PINS_PER_SHARD)
    }

    /// Encodes into `SHARDS` push-time shards and `SHARDS` pin shards. Nothing is cut here: a
    /// caller that may exceed the cap calls [`Ledger::fit`] first.
    pub fn to_shards(&self) -> (Vec<Shard>, Vec<Shard>) {
        let mut pushed = vec![Shard::default(); SHARDS];
        let mut pins = vec![Shard::default(); SHARDS];
        for (digest, at) in &self.pushed {
            pushed[shard_of(digest)].lines.push((digest.clone(), at.to_string()));
        }
        for (tag, digest) in &self.pins {
            pins[shard_of(tag)].lines.push((tag.clone(), digest.clone()));
        }
        if self.restores > 0 {
            pins[0].restores = Some(self.restores);
        }
        pins[0].restoring = self.restoring.iter().map(|(t, d)| (t.clone(), d.clone())).collect();
        (pushed, pins)
    }

    pub fn from_shards<'a>(
        pushed: impl IntoIterator<Item = &'a Shard>,
        pins: impl IntoIterator<Item = &'a Shard>,
    ) -> Ledger {
        let mut ledger = Ledger::default();
        for shard in pushed {
            for (d, at) in &shard.lines {
                if let Ok(at) = at.parse() {
                    ledger.record_push(d, at);
                }
            }
            // Before pins had objects of their own they shared these.
            for (t, d) in &shard.legacy_pins {
                ledger.pins.insert(t.clone(), d.clone());
            }
        }
        for shard in pins {
            for (t, d) in &shard.lines {
                ledger.pins.insert(t.clone(), d.clone());
            }
            ledger.restores = ledger.restores.max(shard.restores.unwrap_or(0));
            for (t, d) in &shard.restoring {
                ledger.restoring.insert(t.clone(), d.clone());
            }
        }
        ledger
    }
}

/// Removes keys of `map` that `before` lacks from every shard over `cap`; how many went.
fn leave_out_new<V>(map: &mut BTreeMap<String, V>, before: &BTreeMap<String, V>, cap: usize) -> usize {
    let mut counts = [0usize; SHARDS];
    for k in map.keys() {
        counts[shard_of(k)] += 1;
    }
    let new: Vec<String> = map.keys().filter(|k| !before.contains_key(*k)).cloned().collect();
    let mut dropped = 0;
    for k in new.iter().rev() {
        let s = shard_of(k);
        if counts[s] > cap {
            map.remove(k);
            counts[s] -= 1;
            dropped += 1;
        }
    }
    dropped
}

/// One shard's lines (`key value`), sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shard {
    pub lines: Vec<(String, String)>,
    /// Pin shard 0 only: the restore count.
    pub restores: Option<i64>,
    /// Pin shard 0 only: restores under way (`tag digest` lines).
    pub restoring: Vec<(String, String)>,
    /// Pins found in a push-time shard written by an earlier berth: moved out on the next write.
    pub legacy_pins: Vec<(String, String)>,
}

impl Shard {
    /// The ConfigMap data of a shard: `key` holds the lines.
    pub fn encode(&self, key: &str) -> BTreeMap<String, String> {
        let mut data = BTreeMap::new();
        data.insert(key.to_string(), self.lines.iter().map(|(k, v)| format!("{k} {v}\n")).collect());
        if let Some(n) = self.restores {
            data.insert("restores".to_string(), n.to_string());
        }
        if !self.restoring.is_empty() {
            data.insert("restoring".to_string(), self.restoring.iter().map(|(k, v)| format!("{k} {v}\n")).collect());
        }
        data
    }

    /// Lenient: a malformed line is skipped, never a panic.
    pub fn decode(data: &BTreeMap<String, String>, key: &str) -> Shard {
        let lines = |key: &str| -> Vec<(String, String)> {
            data.get(key)
                .map(|text| {
                    text.lines()
                        .filter_map(|l| l.split_once(' '))
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .collect()
                })
                .unwrap_or_default()
        };
        Shard {
            lines: lines(key),
            restores: data.get("restores").and_then(|n| n.trim().parse().ok()),
            restoring: if key == "pins" { lines("restoring") } else { Vec::new() },
            legacy_pins: if key == "pushed" { lines("pins") } else { Vec::new() },
        }
    }

    #[cfg(test)]
    fn bytes(&self, key: &str) -> usize {
        self.encode(key).values().map(String::len).sum()
    }
}

/// FNV-1a: stable across processes and versions, unlike `DefaultHasher`.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

fn shard_of(key: &str) -> usize {
    (fnv(key) % SHARDS as u64) as usize
}

fn base_name(repository: &str) -> String {
    let base: String = repository.chars().take(200).collect();
    base.trim_end_matches(['-', '.']).to_string()
}

/// Name of push-time shard `i` of a repository's ledger (Repository names are unique in a
/// namespace).
pub fn shard_name(repository: &str, i: usize) -> String {
    format!("berth-ledger-{}-{i:x}", base_name(repository))
}

/// Name of pin shard `i` of a repository.
pub fn pins_shard_name(repository: &str, i: usize) -> String {
    format!("berth-pins-{}-{i:x}", base_name(repository))
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the ledger kept changing under berth ({0} attempts); trying again later")]
    Contended(usize),
}

impl LedgerError {
    pub fn reason(&self) -> &'static str {
        match self {
            LedgerError::Kube(_) => "KubernetesAPIError",
            LedgerError::Contended(_) => "LedgerContended",
        }
    }
}

/// The ledger as stored, with each shard as it was and its resourceVersion (`None`: no object).
#[derive(Clone, Debug, Default)]
pub struct Stored {
    pub ledger: Ledger,
    pushed: Vec<(Shard, Option<String>)>,
    pins: Vec<(Shard, Option<String>)>,
}

fn shard_index(name: &str) -> Option<usize> {
    name.rsplit('-').next().and_then(|s| usize::from_str_radix(s, 16).ok()).filter(|i| *i < SHARDS)
}

async fn load_kind(
    api: &Api<ConfigMap>,
    label: &str,
    uid: &str,
    key: &str,
) -> Result<Vec<(Shard, Option<String>)>, kube::Error> {
    let list = api.list(&ListParams::default().labels(&format!("{label}={uid}"))).await?;
    let mut shards = vec![(Shard::default(), None); SHARDS];
    for cm in list.items {
        let Some(i) = shard_index(&cm.name_any()) else { continue };
        let rv = cm.resource_version();
        shards[i] = (Shard::decode(&cm.data.unwrap_or_default(), key), rv);
    }
    Ok(shards)
}

/// Reads a Repository's ledger: two LISTs by label.
pub async fn load(client: &Client, repo: &Repository) -> Result<Stored, kube::Error> {
    let ns = repo.namespace().unwrap_or_default();
    let uid = repo.uid().unwrap_or_default();
    let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let pushed = load_kind(&api, LEDGER_LABEL, &uid, "pushed").await?;
    let pins = load_kind(&api, PINS_LABEL, &uid, "pins").await?;
    let ledger = Ledger::from_shards(pushed.iter().map(|(s, _)| s), pins.iter().map(|(s, _)| s));
    Ok(Stored { ledger, pushed, pins })
}

/// Reads only a Repository's push times (one LIST): all a rollout needs to never go back.
pub async fn load_pushed(client: &Client, repo: &Repository) -> Result<BTreeMap<String, i64>, kube::Error> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), &repo.namespace().unwrap_or_default());
    let pushed = load_kind(&api, LEDGER_LABEL, &repo.uid().unwrap_or_default(), "pushed").await?;
    Ok(Ledger::from_shards(pushed.iter().map(|(s, _)| s), []).pushed)
}

enum Write {
    Done,
    Conflict,
}

/// Writes one shard: a create when it has no object, else a merge patch that carries the
/// resourceVersion read, so the API server refuses it (409) if anyone wrote in between.
async fn write_shard(
    api: &Api<ConfigMap>,
    repo: &Repository,
    (label, name, key): (&str, String, &str),
    shard: &Shard,
    version: Option<&String>,
) -> Result<Write, kube::Error> {
    let data = shard.encode(key);
    let result = match version {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: repo.namespace(),
                    labels: Some(
                        [
                            (label.to_string(), repo.uid().unwrap_or_default()),
                            ("app.kubernetes.io/managed-by".into(), "berth".into()),
                        ]
                        .into(),
                    ),
                    owner_references: Some(repo.controller_owner_ref(&()).into_iter().collect()),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm).await.map(|_| ())
        }
        Some(rv) => {
            let mut values: serde_json::Map<String, serde_json::Value> =
                data.into_iter().map(|(k, v)| (k, json!(v))).collect();
            if shard.restores.is_none() && key == "pins" {
                values.insert("restores".into(), serde_json::Value::Null);
            }
            if shard.restoring.is_empty() && key == "pins" {
                values.insert("restoring".into(), serde_json::Value::Null);
            }
            if key == "pushed" {
                values.insert("pins".into(), serde_json::Value::Null); // moved to the pin shards
            }
            let patch = json!({"metadata": {"resourceVersion": rv}, "data": values});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(Write::Done),
        // 409: written meanwhile (or created meanwhile); 404: deleted meanwhile.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(Write::Conflict),
        Err(e) => Err(e),
    }
}

/// Writes the shards of `ledger` that differ from `stored`; `Conflict` when one was written by
/// someone else since it was read (the shards before it are written: each is correct alone).
async fn save(
    client: &Client,
    repo: &Repository,
    stored: &Stored,
    ledger: &Ledger,
) -> Result<(Write, usize), kube::Error> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), &repo.namespace().unwrap_or_default());
    let name = repo.name_any();
    let (pushed, pins) = ledger.to_shards();
    let mut written = 0;
    for (i, shard) in pushed.iter().enumerate() {
        let (old, rv) = &stored.pushed[i];
        if old == shard && (rv.is_some() || shard.lines.is_empty()) {
            continue;
        }
        if let Write::Conflict =
            write_shard(&api, repo, (LEDGER_LABEL, shard_name(&name, i), "pushed"), shard, rv.as_ref()).await?
        {
            return Ok((Write::Conflict, written));
        }
        written += 1;
    }
    for (i, shard) in pins.iter().enumerate() {
        let (old, rv) = &stored.pins[i];
        let empty = shard.lines.is_empty() && shard.restores.is_none() && shard.restoring.is_empty();
        if old == shard && (rv.is_some() || empty) {
            continue;
        }
        if let Write::Conflict =
            write_shard(&api, repo, (PINS_LABEL, pins_shard_name(&name, i), "pins"), shard, rv.as_ref()).await?
        {
            return Ok((Write::Conflict, written));
        }
        written += 1;
    }
    Ok((Write::Done, written))
}

/// Applies `change` to the stored ledger and writes what changed, with optimistic concurrency:
/// when another writer got there first, the ledger is read again and `change` applied to that,
/// so neither write is lost. `change` must be a function of the ledger it is given (it may run
/// several times). Returns the ledger as written and the shards written.
pub async fn update(
    client: &Client,
    repo: &Repository,
    mut stored: Stored,
    mut change: impl FnMut(&mut Ledger),
) -> Result<(Ledger, usize), LedgerError> {
    let mut written = 0;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            stored = load(client, repo).await?;
        }
        let mut next = stored.ledger.clone();
        change(&mut next);
        let legacy = stored.pushed.iter().any(|(s, _)| !s.legacy_pins.is_empty());
        if next == stored.ledger && !legacy {
            return Ok((next, written));
        }
        match save(client, repo, &stored, &next).await? {
            (Write::Done, n) => return Ok((next, written + n)),
            (Write::Conflict, n) => {
                written += n;
                tracing::debug!(repository = %repo.name_any(), attempt, "ledger written meanwhile; applying again");
            }
        }
    }
    Err(LedgerError::Contended(ATTEMPTS))
}

#[cfg(test)]
mod tests;
