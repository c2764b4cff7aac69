//! The push-time ledger: when each digest of a repository was first pushed (from a push event),
//! or first seen by berth (for digests found by listing), and the first digest of each tag of an
//! immutable repository. Lifecycle policies read it: the registry API has no push time, and an
//! image config's `created` is a build time (1970 in reproducible builds).
//!
//! Stored in the cluster so it survives restarts: ConfigMaps in the Repository's namespace, owned
//! by the Repository (garbage-collected with it), split into fixed shards by a hash of the key so
//! that a repository with 100,000 digests stays well under the 1 MiB object limit, and only
//! shards that changed are written. Each shard is capped; the oldest entries go first.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams},
};

use crate::api::Repository;

/// Shards per repository.
pub const SHARDS: usize = 16;
/// Entries a shard holds at most (~80 bytes each: 16 shards x 10,000 entries stay under 1 MiB
/// per object and cover 160,000 digests).
pub const MAX_ENTRIES_PER_SHARD: usize = 10_000;
/// Label that ties a shard to its Repository (value: the Repository's uid).
pub const LEDGER_LABEL: &str = "berth.dev/ledger-of";

const FIELD_MANAGER: &str = "berth-ledger";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    /// digest -> unix milliseconds of the first push (or first sight).
    pub pushed: BTreeMap<String, i64>,
    /// tag -> first digest (immutable repositories only).
    pub pins: BTreeMap<String, String>,
}

impl Ledger {
    /// Records a push at `at`; an earlier time wins (events can arrive after a listing).
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

    pub fn forget(&mut self, digest: &str) -> bool {
        self.pushed.remove(digest).is_some()
    }

    /// Encodes into `SHARDS` text blobs (`pushed` and `pins` per shard), each capped.
    pub fn to_shards(&self) -> Vec<Shard> {
        let mut shards = vec![Shard::default(); SHARDS];
        for (digest, at) in &self.pushed {
            shards[shard_of(digest)].pushed.push((digest.clone(), *at));
        }
        for (tag, digest) in &self.pins {
            shards[shard_of(tag)].pins.push((tag.clone(), digest.clone()));
        }
        for shard in &mut shards {
            if shard.pushed.len() > MAX_ENTRIES_PER_SHARD {
                // Keep the newest: the oldest digests are the likeliest to be gone already.
                shard.pushed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                shard.pushed.truncate(MAX_ENTRIES_PER_SHARD);
                shard.pushed.sort();
            }
            shard.pins.truncate(MAX_ENTRIES_PER_SHARD);
        }
        shards
    }

    pub fn from_shards<'a>(shards: impl IntoIterator<Item = &'a Shard>) -> Ledger {
        let mut ledger = Ledger::default();
        for shard in shards {
            for (d, at) in &shard.pushed {
                ledger.record_push(d, *at);
            }
            for (t, d) in &shard.pins {
                ledger.pins.insert(t.clone(), d.clone());
            }
        }
        ledger
    }
}

/// One shard's entries, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shard {
    pub pushed: Vec<(String, i64)>,
    pub pins: Vec<(String, String)>,
}

impl Shard {
    pub fn encode(&self) -> BTreeMap<String, String> {
        let mut data = BTreeMap::new();
        let pushed: String = self.pushed.iter().map(|(d, t)| format!("{d} {t}\n")).collect();
        let pins: String = self.pins.iter().map(|(t, d)| format!("{t} {d}\n")).collect();
        data.insert("pushed".to_string(), pushed);
        data.insert("pins".to_string(), pins);
        data
    }

    /// Lenient: a malformed line is skipped, never a panic.
    pub fn decode(data: &BTreeMap<String, String>) -> Shard {
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
            pushed: lines("pushed").into_iter().filter_map(|(d, t)| t.parse().ok().map(|t| (d, t))).collect(),
            pins: lines("pins"),
        }
    }
}

/// FNV-1a: stable across processes and versions, unlike `DefaultHasher`.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

fn shard_of(key: &str) -> usize {
    (fnv(key) % SHARDS as u64) as usize
}

/// Name of shard `i` of a repository's ledger (Repository names are unique in a namespace).
pub fn shard_name(repository: &str, i: usize) -> String {
    let base: String = repository.chars().take(200).collect();
    format!("berth-ledger-{}-{i:x}", base.trim_end_matches(['-', '.']))
}

/// The ledger as stored, and the shards as they were, to write back only what changed.
pub struct Stored {
    pub ledger: Ledger,
    shards: Vec<Shard>,
}

/// Reads a Repository's ledger: one LIST by label.
pub async fn load(client: &Client, repo: &Repository) -> Result<Stored, kube::Error> {
    let ns = repo.namespace().unwrap_or_default();
    let uid = repo.uid().unwrap_or_default();
    let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let list = api.list(&ListParams::default().labels(&format!("{LEDGER_LABEL}={uid}"))).await?;
    let mut shards = vec![Shard::default(); SHARDS];
    for cm in list.items {
        let name = cm.name_any();
        let Some(i) = name.rsplit('-').next().and_then(|s| usize::from_str_radix(s, 16).ok()) else {
            continue;
        };
        if i < SHARDS {
            shards[i] = Shard::decode(&cm.data.unwrap_or_default());
        }
    }
    Ok(Stored { ledger: Ledger::from_shards(&shards), shards })
}

/// Writes the shards that changed; returns how many were written.
pub async fn save(
    client: &Client,
    repo: &Repository,
    stored: &mut Stored,
    ledger: &Ledger,
) -> Result<usize, kube::Error> {
    let ns = repo.namespace().unwrap_or_default();
    let uid = repo.uid().unwrap_or_default();
    let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let owner = repo.controller_owner_ref(&()).into_iter().collect::<Vec<_>>();
    let new = ledger.to_shards();
    let mut written = 0;
    for (i, shard) in new.iter().enumerate() {
        if stored.shards.get(i) == Some(shard) {
            continue;
        }
        let name = shard_name(&repo.name_any(), i);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(
                    [(LEDGER_LABEL.to_string(), uid.clone()), ("app.kubernetes.io/managed-by".into(), "berth".into())]
                        .into(),
                ),
                owner_references: Some(owner.clone()),
                ..Default::default()
            },
            data: Some(shard.encode()),
            ..Default::default()
        };
        let mut value = serde_json::to_value(&cm).map_err(kube::Error::SerdeError)?;
        value["apiVersion"] = "v1".into();
        value["kind"] = "ConfigMap".into();
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(value)).await?;
        written += 1;
    }
    stored.shards = new;
    stored.ledger = ledger.clone();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(i: usize) -> String {
        format!("sha256:{:064x}", i)
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
    fn shards_round_trip() {
        let mut l = Ledger::default();
        for i in 0..500 {
            l.record_push(&digest(i), 1_700_000_000 + i as i64);
        }
        l.pins.insert("v1".into(), digest(1));
        l.pins.insert("v2".into(), digest(2));
        let shards = l.to_shards();
        assert_eq!(shards.len(), SHARDS);
        assert!(shards.iter().filter(|s| !s.pushed.is_empty()).count() > SHARDS / 2, "keys spread over shards");
        let decoded: Vec<Shard> = shards.iter().map(|s| Shard::decode(&s.encode())).collect();
        assert_eq!(Ledger::from_shards(&decoded), l);
    }

    #[test]
    fn one_hundred_thousand_digests_fit_in_bounded_shards() {
        let mut l = Ledger::default();
        for i in 0..100_000 {
            l.record_push(&digest(i), 1_700_000_000 + i as i64);
        }
        for shard in l.to_shards() {
            let bytes: usize = shard.encode().values().map(String::len).sum();
            assert!(bytes < 900 * 1024, "a shard of {bytes} bytes is too close to the 1 MiB object limit");
        }
        assert_eq!(Ledger::from_shards(&l.to_shards()).pushed.len(), 100_000, "nothing dropped below the cap");
    }

    #[test]
    fn over_the_cap_the_oldest_entries_go() {
        let mut l = Ledger::default();
        let n = SHARDS * MAX_ENTRIES_PER_SHARD + 5_000;
        for i in 0..n {
            l.record_push(&digest(i), i as i64);
        }
        let kept = Ledger::from_shards(&l.to_shards());
        assert!(kept.pushed.len() <= SHARDS * MAX_ENTRIES_PER_SHARD);
        assert!(kept.pushed.contains_key(&digest(n - 1)), "the newest survives");
        assert!(!kept.pushed.contains_key(&digest(0)), "the oldest goes first");
    }

    #[test]
    fn malformed_shards_decode_leniently() {
        let data: BTreeMap<String, String> =
            [("pushed".to_string(), "good 5\nbad\nworse x\n".to_string())].into_iter().collect();
        let shard = Shard::decode(&data);
        assert_eq!(shard.pushed, vec![("good".to_string(), 5)]);
        assert!(shard.pins.is_empty());
    }

    #[test]
    fn shard_names_are_valid_object_names() {
        let name = shard_name(&"a".repeat(253), 15);
        assert!(name.len() <= 253 && name.ends_with("-f"), "{name}");
        assert_eq!(shard_name("api", 0), "berth-ledger-api-0");
    }
}
