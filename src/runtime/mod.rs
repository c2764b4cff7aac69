//! `berth run`: connect to the cluster, start the controllers and the HTTP server, run until
//! SIGTERM or SIGINT.

mod args;
pub mod leader;

pub use args::RunArgs;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use futures::StreamExt;
use kube::{
    Api, Client, Config, ResourceExt,
    config::{KubeConfigOptions, Kubeconfig},
    core::DeserializeGuard,
    runtime::{
        Controller, Predicate, WatchStreamExt,
        events::Reporter,
        predicates,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    api::{AccessPolicy, ImageScan, LifecyclePolicy, Registry, Repository},
    controllers::{self, Context, Settings},
    http,
    metrics::Metrics,
    namespaces::Namespaces,
    runtime::leader::Leadership,
    scanning::data::VulnerabilityData,
};

/// How often readiness re-checks that the Kubernetes API answers.
const API_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// How long running reconciles may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => Config::infer()
            .await
            .context("no in-cluster configuration and no kubeconfig (set --kubeconfig or KUBECONFIG)")?,
    };
    let client = Client::try_from(config).context("building the Kubernetes client")?;

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let settings = Settings {
        repository_poll_interval: args.repository_poll_interval,
        registry_concurrency: args.registry_concurrency.max(1),
        namespace: args.namespace.clone(),
        trusted_proxies: http::client::TrustedProxies::new(args.trusted_proxies.clone()),
        namespaces: args.namespaces.clone().unwrap_or_default(),
        scan_limits: crate::scanning::layers::Limits {
            download_bytes: args.scan_max_layer_bytes,
            ..Default::default()
        },
        scan_work_dir: args.scan_work_dir.clone().unwrap_or_else(std::env::temp_dir),
    };
    if let Some(ns) = &args.namespace
        && !settings.namespaces.allows(ns)
    {
        tracing::warn!(namespace = %ns, namespaces = %settings.namespaces, "--namespace is not among --namespaces: every berth object there is reported NamespaceNotManaged");
    }

    let leader = match &args.leader_elect_namespace {
        Some(ns) if args.leader_elect => {
            let identity = identity(&args);
            tracing::info!(lease = %format!("{ns}/{}", args.leader_elect_lease), identity, "leader election");
            Leadership::elected(client.clone(), ns, &args.leader_elect_lease, identity)
        }
        _ => Leadership::always(),
    };
    metrics.leader.set(i64::from(leader.is_leader()));
    let scope = Scope {
        namespace: args.namespace.clone(),
        registry_selector: args.registry_selector.clone(),
        leader: leader.clone(),
    };
    let data_source = args
        .vulnerability_data
        .as_deref()
        .map(|s| crate::scanning::source::parse(s, &args.vulnerability_data_ecosystems))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--vulnerability-data: {e}"))?;
    let vulnerabilities = Arc::new(VulnerabilityData::new(data_source.is_some()));
    let (controllers, ctx) =
        controllers(client.clone(), metrics.clone(), settings, &scope, vulnerabilities.clone(), shutdown_rx.clone());
    let data_loader =
        tokio::spawn(load_vulnerability_data(data_source, args.clone(), ctx.clone(), shutdown_rx.clone()));
    // Losing the Lease after holding it ends the process: another replica reconciles now, and a
    // fresh start is the simplest way never to run two reconciles at once.
    let (lost_tx, mut lost_rx) = mpsc::unbounded_channel::<()>();
    // The Lease is released only after the controllers stopped, never while one still runs.
    let (release_tx, release_rx) = watch::channel(false);
    let election = match (&args.leader_elect_namespace, args.leader_elect) {
        (Some(ns), true) => Some(tokio::spawn(elect(
            client.clone(),
            ns.clone(),
            args.leader_elect_lease.clone(),
            leader.clone(),
            metrics.clone(),
            lost_tx,
            release_rx,
        ))),
        _ => None,
    };

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding the HTTP server to {}", args.http_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz, /metrics and /events/registry/{{registry}}");
    let app = http::router(
        http::HttpState { metrics: metrics.clone(), ready: ready.clone() },
        Some(Arc::new(http::events::EventsState::new(ctx))),
    );
    let mut server_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = server_shutdown.wait_for(|stop| *stop).await;
            })
            .await
    });

    let checker = tokio::spawn(watch_api(client.clone(), ready, metrics.clone(), shutdown_rx));
    let controllers = tokio::spawn(controllers);

    let lost = tokio::select! {
        r = shutdown_signal() => { r?; false }
        _ = lost_rx.recv() => true,
    };
    tracing::info!(lost_leadership = lost, "shutting down");
    let _ = shutdown_tx.send(true);
    checker.await.context("API checker task")?;
    data_loader.abort();
    // Running reconciles get a moment to finish; a watch stuck in backoff does not hold us up.
    if tokio::time::timeout(SHUTDOWN_GRACE, controllers).await.is_err() {
        tracing::warn!("controllers did not stop within {SHUTDOWN_GRACE:?}; leaving them");
    }
    server.await.context("HTTP server task")?.context("HTTP server")?;
    let _ = release_tx.send(true);
    if let Some(election) = election {
        // The Lease is released on the way out, so a successor need not wait for it to expire.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, election).await;
    }
    tracing::info!("stopped");
    if lost {
        anyhow::bail!("lost the leader Lease; exiting so that a fresh start follows the new leader");
    }
    Ok(())
}

/// `<pod or host name>-<random>@<address>`: unique per process, and tells followers where to
/// forward registry events.
fn identity(args: &RunArgs) -> String {
    let name = std::env::var("POD_NAME").unwrap_or_else(|_| "berth".to_string());
    let suffix: u32 = rand::random();
    let address = args.advertise_addr.clone().unwrap_or_else(|| match std::env::var("POD_IP") {
        Ok(ip) if !ip.is_empty() => format!("{ip}:{}", args.http_addr.port()),
        _ => args.http_addr.to_string(),
    });
    format!("{name}-{suffix:08x}@{address}")
}

/// Holds the Lease while it can; reports leadership to `leader` and a loss to `lost`. Besides
/// the lease manager's own view, a watchdog reads the Lease while leading: when the Lease names
/// another holder, or cannot be read for longer than it would take to expire, this replica stops
/// leading, even if the API server is unreachable and the manager never learns it lost.
async fn elect(
    client: Client,
    namespace: String,
    lease: String,
    leader: Arc<Leadership>,
    metrics: Arc<Metrics>,
    lost: mpsc::UnboundedSender<()>,
    shutdown: watch::Receiver<bool>,
) {
    use kube_lease_manager::LeaseManagerBuilder;
    let released = controllers::stopped(shutdown);
    tokio::pin!(released);
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &lease)
            .with_namespace(&namespace)
            .with_identity(leader.identity())
            .with_duration(crate::runtime::leader::LEASE_DURATION)
            .with_grace(crate::runtime::leader::LEASE_GRACE)
            .with_field_manager("berth-leader-election")
            .build()
            .await;
        match built {
            Ok(m) => break m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot set up leader election; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = &mut released => return,
                }
            }
        }
    };
    let (mut changes, task) = manager.watch().await;
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &namespace);
    let mut watchdog = tokio::time::interval(Duration::from_secs(crate::runtime::leader::LEASE_GRACE));
    let deadline = Duration::from_secs(crate::runtime::leader::LEASE_DURATION - crate::runtime::leader::LEASE_GRACE);
    let mut confirmed = std::time::Instant::now();
    let mut led = false;
    loop {
        let leading = *changes.borrow_and_update();
        if leading != led {
            tracing::info!(leading, "leadership changed");
            leader.set(leading);
            metrics.leader.set(i64::from(leading));
            if led && !leading {
                let _ = lost.send(());
            }
            led = leading;
            confirmed = std::time::Instant::now();
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            _ = watchdog.tick(), if led => {
                let holder = leases.get_opt(&lease).await.map(|l| l.and_then(|l| l.spec).and_then(|s| s.holder_identity));
                let still = match holder {
                    Ok(Some(h)) if h == leader.identity() => { confirmed = std::time::Instant::now(); true }
                    Ok(_) => false,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the leader Lease");
                        confirmed.elapsed() < deadline
                    }
                };
                if !still {
                    tracing::warn!("the leader Lease is not ours any more; stopping");
                    leader.set(false);
                    metrics.leader.set(0);
                    let _ = lost.send(());
                    led = false;
                }
            }
            _ = &mut released => break,
        }
    }
    drop(changes);
    leader.set(false);
    if let Ok(Ok(manager)) = task.await {
        let _ = manager.release().await;
    }
}

/// Which objects this instance reconciles.
struct Scope {
    namespace: Option<String>,
    registry_selector: Option<String>,
    leader: Arc<Leadership>,
}

/// Builds the Registry and Repository controllers over shared stores, and their context.
fn controllers(
    client: Client,
    metrics: Arc<Metrics>,
    settings: Settings,
    scope: &Scope,
    vulnerabilities: Arc<VulnerabilityData>,
    shutdown: watch::Receiver<bool>,
) -> (impl std::future::Future<Output = ()> + use<>, Arc<Context>) {
    let repositories: Api<Repository> = controllers::scoped(&client, scope.namespace.as_deref());
    let policies: Api<LifecyclePolicy> = controllers::scoped(&client, scope.namespace.as_deref());
    // berth's own kinds are watched through DeserializeGuard: one object that does not decode
    // is left out, and the rest of the list still reaches the controllers.
    let guarded_repositories: Api<DeserializeGuard<Repository>> =
        controllers::scoped(&client, scope.namespace.as_deref());
    let registry_watch = match &scope.registry_selector {
        Some(s) => watcher::Config::default().any_semantic().labels(s),
        None => watcher::Config::default().any_semantic(),
    };
    // Outside the namespaces berth is installed for, berth objects are only reported (below).
    fn managed_only<K: kube::Resource>(
        managed: &Namespaces,
    ) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) -> std::future::Ready<bool> + use<K> {
        let managed = managed.clone();
        controllers::events_in(move |ns| managed.allows(ns))
    }
    let managed = settings.namespaces.clone();
    let (repo_reader, repo_writer) = reflector::store::<Repository>();
    let (reg_reader, reg_writer) = reflector::store::<Registry>();
    let (trigger_tx, trigger_rx) = mpsc::channel::<ObjectRef<Repository>>(controllers::TRIGGER_CAPACITY);
    let (moved_tx, moved_rx) = mpsc::channel::<controllers::rollout::TagMoved>(controllers::TRIGGER_CAPACITY);
    let (scan_reader, scan_writer) = reflector::store::<ImageScan>();
    let reporter = Reporter { controller: "berth".into(), instance: std::env::var("POD_NAME").ok() };
    let data_changes = tokio_stream::wrappers::WatchStream::from_changes(vulnerabilities.subscribe()).map(|_| ());
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            metrics,
            reporter,
            (repo_reader.clone(), reg_reader.clone(), scan_reader.clone()),
            settings,
            controllers::Triggers { repositories: trigger_tx, tags: moved_tx },
            scope.leader.clone(),
        )
        .with_vulnerabilities(vulnerabilities),
    );
    // Status writes do not change these: a reconcile's own status patch never triggers another.
    let deleting = |r: &Repository| Some(u64::from(r.metadata.deletion_timestamp.is_some()));
    let repo_changes =
        predicates::generation.combine(predicates::annotations).combine(predicates::finalizers).combine(deleting);
    let repo_stream =
        controllers::guarded_watch(guarded_repositories.clone(), watcher::Config::default().any_semantic())
            .default_backoff()
            .filter(managed_only(&managed))
            .modify(|r| r.managed_fields_mut().clear())
            .reflect(repo_writer)
            .inspect(rebuild_access(&ctx))
            .applied_objects()
            .predicate_filter(repo_changes, Default::default());
    let reg_stream =
        controllers::guarded_watch(Api::<DeserializeGuard<Registry>>::all(client.clone()), registry_watch.clone())
            .default_backoff()
            .modify(|r| r.managed_fields_mut().clear())
            .reflect(reg_writer)
            .applied_objects()
            .predicate_filter(predicates::generation, Default::default());
    // Repositories follow their Registry's spec and reachability.
    let reachable = |r: &Registry| Some(r.status.as_ref().and_then(|s| s.reachable).map_or(2, u64::from));
    let reg_for_repos =
        controllers::guarded_watch(Api::<DeserializeGuard<Registry>>::all(client.clone()), registry_watch.clone())
            .default_backoff()
            .applied_objects()
            .predicate_filter(predicates::generation.combine(reachable), Default::default());

    // Lifecycle policies run when they change, when a Repository starts or stops using them,
    // and every interval.
    let (policy_reader, policy_writer) = reflector::store::<LifecyclePolicy>();
    let policy_stream = controllers::guarded_watch(
        controllers::scoped(&client, scope.namespace.as_deref()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .filter(managed_only(&managed))
    .modify(|p: &mut LifecyclePolicy| p.managed_fields_mut().clear())
    .reflect(policy_writer)
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    let repos_for_policies =
        controllers::guarded_watch(guarded_repositories.clone(), watcher::Config::default().any_semantic())
            .default_backoff()
            .filter(managed_only(&managed))
            .applied_objects()
            .predicate_filter(predicates::generation, Default::default());

    // AccessPolicies: reconciled when they change or a Repository of their namespace does.
    let access: Api<AccessPolicy> = controllers::scoped(&client, scope.namespace.as_deref());
    let (access_reader, access_writer) = reflector::store::<AccessPolicy>();
    let access_changes = predicates::generation.combine(predicates::annotations).combine(predicates::finalizers);
    let access_stream = controllers::guarded_watch(
        controllers::scoped(&client, scope.namespace.as_deref()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .filter(managed_only(&managed))
    .modify(|p: &mut AccessPolicy| p.managed_fields_mut().clear())
    .reflect(access_writer)
    .inspect(rebuild_access(&ctx))
    .applied_objects()
    .predicate_filter(access_changes, Default::default());
    let repos_for_access =
        controllers::guarded_watch(guarded_repositories.clone(), watcher::Config::default().any_semantic())
            .default_backoff()
            .filter(managed_only(&managed))
            .applied_objects()
            .predicate_filter(predicates::generation.combine(predicates::labels), Default::default());

    let stop = controllers::stopped;
    // A replica that becomes the leader reconciles everything at once.
    let gained = |leader: &Arc<Leadership>| {
        tokio_stream::wrappers::WatchStream::new(leader.subscribe())
            .filter(|leading| futures::future::ready(*leading))
            .map(|_| ())
    };
    let repos_for_registry = repo_reader.clone();
    let repository_controller = Controller::for_stream(repo_stream, repo_reader)
        .watches_stream(reg_for_repos, move |registry: Registry| {
            let name = registry.metadata.name.clone().unwrap_or_default();
            repos_for_registry
                .state()
                .into_iter()
                .filter(|r| r.spec.registry_ref.name == name)
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_on(ReceiverStream::new(trigger_rx))
        .reconcile_all_on(gained(&scope.leader))
        .graceful_shutdown_on(stop(shutdown.clone()))
        .run(controllers::repository::reconcile, controllers::repository::error_policy, ctx.clone())
        .for_each(|_| async {});
    let registry_controller = Controller::for_stream(reg_stream, reg_reader)
        .reconcile_all_on(gained(&scope.leader))
        .graceful_shutdown_on(stop(shutdown.clone()))
        .run(controllers::registry::reconcile, controllers::registry::error_policy, ctx.clone())
        .for_each(|_| async {});
    // A policy and the Repository that starts using it usually change together: one run, not two.
    let lifecycle_controller = Controller::for_stream(policy_stream, policy_reader)
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(1)))
        .watches_stream(repos_for_policies, |repo: Repository| {
            let ns = repo.metadata.namespace.clone().unwrap_or_default();
            repo.spec.lifecycle_policy_ref.map(|p| ObjectRef::<LifecyclePolicy>::new(&p.name).within(&ns))
        })
        .reconcile_all_on(gained(&scope.leader))
        .graceful_shutdown_on(stop(shutdown.clone()))
        .run(controllers::lifecycle::reconcile, controllers::lifecycle::error_policy, ctx.clone())
        .for_each(|_| async {});
    let policies_for_repos = access_reader.clone();
    let access_controller = Controller::for_stream(access_stream, access_reader.clone())
        .watches_stream(repos_for_access, move |repo: Repository| {
            let ns = repo.metadata.namespace.clone().unwrap_or_default();
            policies_for_repos
                .state()
                .into_iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_all_on(gained(&scope.leader))
        .graceful_shutdown_on(stop(shutdown.clone()))
        .run(controllers::access::reconcile, controllers::access::error_policy, ctx.clone())
        .for_each(|_| async {});
    // ImageScans: scanned when created or asked again (annotation), and re-matched when the
    // vulnerability data changes. Status writes do not trigger a scan.
    let scan_stream = controllers::guarded_watch(
        controllers::scoped::<DeserializeGuard<ImageScan>>(&client, scope.namespace.as_deref()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .filter(managed_only(&managed))
    .modify(|s: &mut ImageScan| s.managed_fields_mut().clear())
    .reflect(scan_writer)
    .applied_objects()
    .predicate_filter(predicates::generation.combine(predicates::annotations), Default::default());
    // A Registry's scanning settings (rules, the adapter) decide its scans too.
    let reg_for_scans =
        controllers::guarded_watch(Api::<DeserializeGuard<Registry>>::all(client.clone()), registry_watch.clone())
            .default_backoff()
            .applied_objects()
            .predicate_filter(predicates::generation, Default::default());
    let (repos_for_scans, scans_for_registry) = (ctx.repositories.clone(), scan_reader.clone());
    let scan_controller = Controller::for_stream(scan_stream, scan_reader)
        .with_config(kube::runtime::controller::Config::default().concurrency(controllers::scan::CONCURRENCY))
        .watches_stream(reg_for_scans, move |registry: Registry| {
            let name = registry.metadata.name.clone().unwrap_or_default();
            let repos: std::collections::HashSet<(String, String)> = repos_for_scans
                .state()
                .iter()
                .filter(|r| r.spec.registry_ref.name == name)
                .map(|r| {
                    (r.metadata.namespace.clone().unwrap_or_default(), r.metadata.name.clone().unwrap_or_default())
                })
                .collect();
            scans_for_registry
                .state()
                .iter()
                .filter(|s| {
                    repos.contains(&(
                        s.metadata.namespace.clone().unwrap_or_default(),
                        s.spec.repository_ref.name.clone(),
                    ))
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_all_on(gained(&scope.leader))
        .reconcile_all_on(data_changes)
        .graceful_shutdown_on(stop(shutdown.clone()))
        .run(controllers::scan::reconcile, controllers::scan::error_policy, ctx.clone())
        .for_each(|_| async {});
    let indexes = controllers::access::run_indexes(ctx.clone(), access_reader.clone(), shutdown.clone());
    let watched = ctx.settings.watched();
    let credentials =
        controllers::access::run_credentials(ctx.clone(), watched.clone(), access_reader.clone(), shutdown.clone());
    let rollout_controller = controllers::rollout::run(ctx.clone(), watched, moved_rx, shutdown.clone());
    // Installed for some namespaces only: the berth objects of the others are told so.
    let unmanaged = (ctx.settings.namespaces != Namespaces::All).then(|| {
        let report = |ctx: &Arc<Context>| (ctx.clone(), gained(&scope.leader), shutdown.clone());
        let (c1, g1, s1) = report(&ctx);
        let (c2, g2, s2) = report(&ctx);
        let (c3, g3, s3) = report(&ctx);
        async move {
            tokio::join!(
                controllers::unmanaged::run(c1, repositories, g1, s1),
                controllers::unmanaged::run(c2, policies, g2, s2),
                controllers::unmanaged::run(c3, access, g3, s3),
            );
        }
    });
    let both = async move {
        tokio::join!(
            repository_controller,
            registry_controller,
            lifecycle_controller,
            access_controller,
            indexes,
            credentials,
            rollout_controller,
            scan_controller,
            async move {
                if let Some(unmanaged) = unmanaged {
                    unmanaged.await;
                }
            }
        );
    };
    (both, ctx)
}

/// Loads the vulnerability data from `--vulnerability-data` and keeps it current, and keeps
/// its metrics.
async fn load_vulnerability_data(
    source: Option<crate::scanning::source::Source>,
    args: RunArgs,
    ctx: Arc<Context>,
    shutdown: watch::Receiver<bool>,
) {
    use crate::{
        metrics::ScanLabels,
        scanning::{data::State, source},
    };
    let Some(source) = source else {
        return;
    };
    let mut changes = ctx.vulnerabilities.subscribe();
    let metrics = ctx.metrics.clone();
    let observe = tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let state = changes.borrow_and_update().clone();
            match state {
                State::Ready(loaded) => {
                    metrics.vulnerability_data_loads.get_or_create(&ScanLabels { result: "loaded" }).inc();
                    let updated = loaded
                        .updated_at
                        .as_deref()
                        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                        .map_or(0, |t| t.as_second());
                    metrics.vulnerability_data_updated.set(updated);
                    tracing::info!(source = %loaded.source, version = %loaded.version, updated_at = ?loaded.updated_at, "vulnerability data loaded");
                }
                State::Failed { message, .. } => {
                    metrics.vulnerability_data_loads.get_or_create(&ScanLabels { result: "failed" }).inc();
                    tracing::warn!(error = %message, "vulnerability data did not load");
                }
                State::Loading | State::NotConfigured => {}
            }
        }
    });
    let limits = crate::scanning::osv::Limits { max_total_bytes: args.vulnerability_data_budget, ..Default::default() };
    let cache =
        args.vulnerability_data_cache.clone().unwrap_or_else(|| std::env::temp_dir().join("berth-vulnerability-data"));
    // An artifact is read through the backend of the Registry object it names.
    let oci_ctx = ctx.clone();
    let oci = source::OciFetcher::new(
        move |name: String| {
            let ctx = oci_ctx.clone();
            async move {
                let registry = ctx
                    .registries
                    .get(&ObjectRef::new(&name))
                    .ok_or_else(|| format!("Registry {name:?} does not exist (or is not watched by this berth)"))?;
                ctx.backend(&registry).await.map_err(|e| e.to_string())
            }
        },
        |r: source::BlobRequest| async move {
            r.backend.blob_to_file(&r.repository, &r.digest, &r.dest, r.max_bytes).await.map_err(|e| e.to_string())
        },
    );
    // A zero interval would spin.
    let refresh = args.vulnerability_data_refresh.max(Duration::from_secs(1));
    source::run(source, ctx.vulnerabilities.clone(), refresh, cache, limits, Some(oci), shutdown).await;
    observe.abort();
}

/// After a watched Repository or AccessPolicy changed (deletions too) and its store has the
/// change: who may pull and push must be decided again.
fn rebuild_access<T>(ctx: &Arc<Context>) -> impl Fn(&T) + use<T> {
    let tokens = ctx.tokens.clone();
    move |_| {
        tokens.rebuild.notify_one();
        tokens.credentials_changed.notify_one();
    }
}

/// Keeps readiness in step with whether the Kubernetes API answers.
async fn watch_api(client: Client, ready: Arc<AtomicBool>, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    loop {
        let ok = match client.apiserver_version().await {
            Ok(info) => {
                if !ready.load(Ordering::Relaxed) {
                    tracing::info!(version = %info.git_version, "reached the Kubernetes API");
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the Kubernetes API does not answer");
                false
            }
        };
        ready.store(ok, Ordering::Relaxed);
        metrics.ready.set(i64::from(ok));
        tokio::select! {
            _ = tokio::time::sleep(API_CHECK_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("installing the SIGINT handler")?,
    }
    Ok(())
}
