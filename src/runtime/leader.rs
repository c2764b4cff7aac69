//! Leader election on a Lease (kube-lease-manager): only the holder reconciles; every replica
//! keeps its caches warm and serves the token and events endpoints. The holder identity is
//! `<name>@<host:port>` so that a follower can forward registry events to the leader.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::sync::watch;

/// How long a Lease is held without renewal; a killed leader is replaced within this.
pub const LEASE_DURATION: u64 = 15;
/// Renewal starts this long before the Lease runs out.
pub const LEASE_GRACE: u64 = 5;
const LEADER_CACHE: Duration = Duration::from_secs(2);

/// Whether this replica leads, and where the leader is.
pub struct Leadership {
    leader: AtomicBool,
    changes: watch::Sender<bool>,
    lease: Option<(Api<Lease>, String)>,
    identity: String,
    cached: Mutex<Option<(Option<String>, Instant)>>,
}

/// The address part of a holder identity `<name>@<host:port>`.
pub fn address_of(identity: &str) -> Option<&str> {
    identity.rsplit_once('@').map(|(_, addr)| addr).filter(|a| !a.is_empty())
}

impl Leadership {
    /// A replica that always leads (no election: one replica, or tests).
    pub fn always() -> Arc<Leadership> {
        let (changes, _) = watch::channel(true);
        Arc::new(Leadership {
            leader: AtomicBool::new(true),
            changes,
            lease: None,
            identity: String::new(),
            cached: Mutex::new(None),
        })
    }

    /// A replica that leads only while it holds the Lease `name` in `namespace`.
    pub fn elected(client: Client, namespace: &str, name: &str, identity: String) -> Arc<Leadership> {
        let (changes, _) = watch::channel(false);
        Arc::new(Leadership {
            leader: AtomicBool::new(false),
            changes,
            lease: Some((Api::namespaced(client, namespace), name.to_string())),
            identity,
            cached: Mutex::new(None),
        })
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn set(&self, leading: bool) {
        self.leader.store(leading, Ordering::Release);
        self.changes.send_replace(leading);
    }

    /// Follows leadership changes.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changes.subscribe()
    }

    /// `host:port` of the current leader's HTTP server, if another replica leads (cached
    /// briefly; read from the Lease's holder identity).
    pub async fn leader_address(&self) -> Option<String> {
        let (api, name) = self.lease.as_ref()?;
        if let Some((addr, at)) = self.cached.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && at.elapsed() < LEADER_CACHE
        {
            return addr.clone();
        }
        let holder = api.get_opt(name).await.ok().flatten().and_then(|l| l.spec).and_then(|s| s.holder_identity);
        let addr = holder.filter(|h| h != &self.identity).and_then(|h| address_of(&h).map(String::from));
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((addr.clone(), Instant::now()));
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_identities_carry_the_address() {
        assert_eq!(address_of("berth-7d9f-x2@10.0.0.7:8080"), Some("10.0.0.7:8080"));
        assert_eq!(address_of("a@b@127.0.0.1:1"), Some("127.0.0.1:1"));
        assert_eq!(address_of("no-address"), None);
        assert_eq!(address_of("trailing@"), None);
    }

    #[test]
    fn a_single_replica_always_leads_and_changes_are_seen() {
        assert!(Leadership::always().is_leader());
        let (changes, _) = watch::channel(false);
        let l = Leadership {
            leader: AtomicBool::new(false),
            changes,
            lease: None,
            identity: "x".into(),
            cached: Mutex::new(None),
        };
        let rx = l.subscribe();
        l.set(true);
        assert!(l.is_leader() && *rx.borrow());
    }
}
