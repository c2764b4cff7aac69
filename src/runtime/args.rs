//! The flags of `berth run`.

use std::{net::SocketAddr, path::PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the HTTP server that serves /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080", env = "BERTH_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    /// Kubeconfig to use instead of the in-cluster configuration (or $KUBECONFIG).
    #[arg(long, env = "BERTH_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// How often each Repository is re-read from its registry when no registry event arrives
    /// (events reconcile at once; this is the fallback). Also bounds how long a pushed-over
    /// immutable tag can stay moved when events are off.
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "BERTH_REPOSITORY_POLL_INTERVAL")]
    pub repository_poll_interval: std::time::Duration,
    /// Reconcile only the Repositories of this namespace (default: every namespace).
    #[arg(long, env = "BERTH_NAMESPACE")]
    pub namespace: Option<String>,
    /// The namespaces berth is installed for, comma-separated (default: every namespace): it
    /// reads Secrets, writes and rolls out only there, and reports berth objects and references
    /// elsewhere as `NamespaceNotManaged`. Set by the chart's `rbac.scope: namespaces`, whose
    /// RBAC grants those rights in these namespaces only.
    #[arg(long, value_parser = crate::namespaces::Namespaces::parse, env = "BERTH_NAMESPACES")]
    pub namespaces: Option<crate::namespaces::Namespaces>,
    /// Reconcile only the Registry objects matching this label selector (e.g. `shard=a`), to run
    /// several berth instances side by side.
    #[arg(long, env = "BERTH_REGISTRY_SELECTOR")]
    pub registry_selector: Option<String>,
    /// Requests in flight at once to one registry.
    #[arg(long, default_value_t = 8, env = "BERTH_REGISTRY_CONCURRENCY")]
    pub registry_concurrency: usize,
    /// Run several replicas safely: only the holder of a Lease reconciles; every replica serves
    /// the token and events endpoints (events reaching another replica are forwarded to it).
    #[arg(long, env = "BERTH_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the Lease (the namespace berth runs in).
    #[arg(long, env = "POD_NAMESPACE", required_if_eq("leader_elect", "true"))]
    pub leader_elect_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, default_value = "berth", env = "BERTH_LEADER_ELECT_LEASE")]
    pub leader_elect_lease: String,
    /// `host:port` where other replicas reach this one's HTTP server (default: `$POD_IP` and
    /// the port of `--http-addr`, or `--http-addr` itself when it names an address).
    #[arg(long, env = "BERTH_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Proxies (CIDR ranges or addresses, comma-separated) whose `X-Forwarded-For` header names
    /// the client of the token endpoint, whose failed logins are limited per client: the
    /// addresses of the ingress controller in front of berth. Anyone connecting from these can
    /// claim any client address, so name the proxies only. Default: none, the TCP peer is the
    /// client.
    #[arg(long, value_delimiter = ',', value_parser = crate::http::client::parse_range, env = "BERTH_TRUSTED_PROXIES")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where image scans get their vulnerability data (OSV records, `<Ecosystem>/all.zip`): a
    /// folder (a mounted volume), an `http(s)://` URL in the OSV bucket layout (e.g.
    /// `https://osv-vulnerabilities.storage.googleapis.com`), or `oci://<Registry>/<repository>:<tag>`,
    /// an artifact in a berth-managed registry whose layers are titled `<Ecosystem>/all.zip`
    /// (air-gapped sites). Without it, scans fail with `NoVulnerabilityData`.
    #[arg(long, env = "BERTH_VULNERABILITY_DATA")]
    pub vulnerability_data: Option<String>,
    /// How often the vulnerability data is checked for changes (a URL with ETag and
    /// If-Modified-Since, an artifact by its digest, a folder by its files' sizes and times).
    #[arg(long, default_value = "1h", value_parser = parse_duration, env = "BERTH_VULNERABILITY_DATA_REFRESH")]
    pub vulnerability_data_refresh: std::time::Duration,
    /// The ecosystems fetched from a URL source, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "Debian,Ubuntu,Alpine,Red Hat,Go,PyPI,npm,crates.io",
        env = "BERTH_VULNERABILITY_DATA_ECOSYSTEMS"
    )]
    pub vulnerability_data_ecosystems: Vec<String>,
    /// Where downloaded vulnerability data is kept (a persistent volume spares a download after
    /// a restart). Default: `berth-vulnerability-data` in the temporary folder.
    #[arg(long, env = "BERTH_VULNERABILITY_DATA_CACHE")]
    pub vulnerability_data_cache: Option<PathBuf>,
    /// The most vulnerability data (uncompressed JSON bytes) berth loads: its memory budget.
    /// The data indexed in memory takes about a third to half of this size.
    #[arg(long, default_value_t = 1 << 30, env = "BERTH_VULNERABILITY_DATA_BUDGET")]
    pub vulnerability_data_budget: u64,
    /// Where image layers are written while a scan reads them (default: the temporary folder).
    #[arg(long, env = "BERTH_SCAN_WORK_DIR")]
    pub scan_work_dir: Option<PathBuf>,
    /// The largest layer (compressed, as stored) a scan downloads; a larger one fails the scan
    /// with `LayerTooLarge`. Two scans run at once: keep twice this free in --scan-work-dir.
    #[arg(long, default_value_t = 1 << 30, env = "BERTH_SCAN_MAX_LAYER_BYTES")]
    pub scan_max_layer_bytes: u64,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse(s)
}
