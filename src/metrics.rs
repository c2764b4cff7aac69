//! Prometheus metrics with stable names. Labels are static strings, never error text.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub reason: &'static str,
}

/// The operator's metrics, shared by every controller through the context.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub ready: Gauge,
    pub leader: Gauge,
    pub registry_requests: Family<ControllerLabels, Counter>,
    pub registry_request_duration: Family<RequestLabels, Histogram>,
    pub registry_events: Family<EventLabels, Counter>,
    pub lifecycle_expired: Family<ExpiredLabels, Counter>,
    pub rollouts: Family<RolloutLabels, Counter>,
    pub token_requests: Family<TokenLabels, Counter>,
    pub rollout_latency: Histogram,
    pub scans: Family<ScanLabels, Counter>,
    pub scan_duration: Histogram,
    pub vulnerability_data_loads: Family<ScanLabels, Counter>,
    /// Unix time of the newest record of the vulnerability data in use (0: none loaded).
    pub vulnerability_data_updated: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScanLabels {
    /// Scans: `complete`, `rematched`, `failed` or `unsupported`. Data loads: `loaded`,
    /// `unchanged` or `failed`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP method sent to the registry.
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// `issued`, `unauthorized`, `rate_limited`, `bad_request`, `unknown_registry`, `unavailable`
    /// or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    /// `pinned`, `rolled_back`, `paused` (skipped: the Deployment is paused), `failed`, or for
    /// the scan gate `held` (waiting for a scan) and `refused` (findings above the threshold).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExpiredLabels {
    /// `deleted`, `dry_run` (would have been deleted) or `protected` (kept: a workload uses it).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `accepted`, `unauthorized`, `malformed`, `duplicate`, ...
    pub result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let ready = Gauge::default();
        let registry_requests = Family::<ControllerLabels, Counter>::default();
        let registry_events = Family::<EventLabels, Counter>::default();
        let registry_request_duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        registry.register(
            "registry_request_duration_seconds",
            "Time until a registry answered one request, by method",
            registry_request_duration.clone(),
        );
        let lifecycle_expired = Family::<ExpiredLabels, Counter>::default();
        let rollouts = Family::<RolloutLabels, Counter>::default();
        let token_requests = Family::<TokenLabels, Counter>::default();
        registry.register("token_requests", "Registry token requests, by result", token_requests.clone());
        let rollout_latency = Histogram::new([0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        registry.register("rollouts", "Workload image pins and rollbacks, by result", rollouts.clone());
        registry.register(
            "rollout_push_to_patch_seconds",
            "Time from a registry push event to the workload patched with the new digest",
            rollout_latency.clone(),
        );
        registry.register(
            "lifecycle_expired_images",
            "Images lifecycle policies expired, by outcome",
            lifecycle_expired.clone(),
        );
        registry.register(
            "registry_requests",
            "HTTP requests sent to registries, per controller",
            registry_requests.clone(),
        );
        registry.register(
            "registry_events",
            "Registry notification requests received, by result",
            registry_events.clone(),
        );
        registry.register("reconciles", "Reconciliations run, per controller", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, per controller and error category",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconciliation took, per controller",
            reconcile_duration.clone(),
        );
        registry.register("ready", "1 when the operator reaches the Kubernetes API", ready.clone());
        let scans = Family::<ScanLabels, Counter>::default();
        registry.register("image_scans", "Image scans finished, by result", scans.clone());
        let scan_duration = Histogram::new([0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]);
        registry.register(
            "image_scan_duration_seconds",
            "Time one image scan took, layers read and matched",
            scan_duration.clone(),
        );
        let vulnerability_data_loads = Family::<ScanLabels, Counter>::default();
        registry.register(
            "vulnerability_data_loads",
            "Loads of the vulnerability data, by result",
            vulnerability_data_loads.clone(),
        );
        let vulnerability_data_updated = Gauge::default();
        registry.register(
            "vulnerability_data_updated_timestamp_seconds",
            "Newest modification time among the records of the vulnerability data in use",
            vulnerability_data_updated.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica reconciles (it holds the Lease)", leader.clone());
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            ready,
            leader,
            registry_requests,
            registry_request_duration,
            registry_events,
            lifecycle_expired,
            rollouts,
            token_requests,
            rollout_latency,
            scans,
            scan_duration,
            vulnerability_data_loads,
            vulnerability_data_updated,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
