//! The access indexes: rebuilt for every Registry berth decides access for from the
//! Repositories that own their path and the AccessPolicies, whenever something asks and every
//! few seconds as a safety net. The token service decides with those of token Registries; the
//! Repository controller writes ECR repository policies from those of `ecr` Registries.

use super::*;

/// The index is rebuilt at least this often even when nobody asks.
const INDEX_REFRESH: Duration = Duration::from_secs(10);

/// Whether berth decides who may do what in a Registry, and so keeps an access index for it:
/// as its token service (`tokenAuth`), or through repository policies (`ecr`).
pub fn indexed(spec: &RegistrySpec) -> bool {
    spec.token_auth.is_some() || spec.type_ == RegistryType::Ecr
}

/// Rebuilds the access index of every Registry berth decides access for.
pub(super) fn rebuild(ctx: &Context, policies: &Store<AccessPolicy>) {
    let policies = policies.state();
    let repositories = ctx.repositories.state();
    let registries = ctx.registries.state();
    for registry in registries.iter().filter(|r| indexed(&r.spec)) {
        let name = registry.name_any();
        let claims: Vec<_> = repositories
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .map(|r| (claim_of(r), r))
            .filter(|(c, _)| c.registry == name)
            // A claim its namespace may not make cannot hold (or block) a path.
            .filter(|(c, _)| tenancy::check_path(&c.namespace, &c.path, &registry.spec.path_prefixes).is_ok())
            .collect();
        let inputs: Vec<RepoInput> = claims
            .iter()
            .filter(|(c, _)| tenancy::path_owner(claims.iter().map(|(c, _)| c), &name, &c.path) == Some(c))
            .map(|(c, r)| RepoInput {
                path: c.path.clone(),
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                labels: r.labels().clone(),
                visibility: r.spec.visibility,
            })
            .collect();
        ctx.tokens.set_index(&name, AccessIndex::build(inputs, policies.iter().map(|p| p.as_ref())));
    }
}

/// Counts rebuilds of the access indexes, so that a reconcile can wait for one that began after
/// it asked (and so saw the policy it reconciles) instead of sleeping and hoping.
#[derive(Default)]
pub struct Rebuilds {
    /// (rebuilds begun, the highest rebuild finished)
    counts: std::sync::Mutex<(u64, u64)>,
    finished: tokio::sync::Notify,
}

impl Rebuilds {
    fn counts(&self) -> std::sync::MutexGuard<'_, (u64, u64)> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A rebuild begins; its number.
    fn begin(&self) -> u64 {
        let mut c = self.counts();
        c.0 += 1;
        c.0
    }

    fn end(&self, n: u64) {
        let mut c = self.counts();
        c.1 = c.1.max(n);
        drop(c);
        self.finished.notify_waiters();
    }

    /// How many rebuilds have begun so far.
    pub fn begun(&self) -> u64 {
        self.counts().0
    }

    /// Waits until a rebuild numbered above `n` finished (one that began after `begun()`
    /// returned `n`).
    pub async fn wait_past(&self, n: u64) {
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.counts().1 > n {
                return;
            }
            notified.await;
        }
    }
}

/// Keeps the access indexes current until shutdown.
pub async fn run_indexes(ctx: Arc<Context>, policies: Store<AccessPolicy>, shutdown: watch::Receiver<bool>) {
    let _ = policies.wait_until_ready().await;
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        let n = ctx.index_rebuilds.begin();
        rebuild(&ctx, &policies);
        ctx.index_rebuilds.end(n);
        tokio::select! {
            _ = ctx.tokens.rebuild.notified() => {
                // Changes come in bursts (a policy and its Repositories applied together).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(INDEX_REFRESH) => {}
            _ = &mut stop => return,
        }
    }
}
