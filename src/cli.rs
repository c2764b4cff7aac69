//! The `berth` command line: `run` (the operator), `crds` (the CRD manifests), the offline
//! previews (`lifecycle preview`, `rollout preview`) and the offline scanner (`scan`).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

pub use crate::runtime::RunArgs;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// berth: container repositories declared as code, with access and lifecycle policies and
/// digest-pinned rollouts, for any Kubernetes cluster.
#[derive(Parser, Debug)]
#[command(name = "berth", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BERTH_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator: controllers plus the HTTP server (health, readiness, metrics).
    Run(Box<RunArgs>),
    /// Print every CustomResourceDefinition berth serves, as one multi-document YAML stream.
    Crds(CrdsArgs),
    /// Lifecycle policies offline.
    #[command(subcommand)]
    Lifecycle(LifecycleCommand),
    /// Rollout version policies offline.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Scan an image offline: its packages and the OSV vulnerabilities that affect them, with the
    /// scanner the operator uses.
    Scan(ScanArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ScanArgs {
    /// An OCI image layout (a folder with `oci-layout`, `index.json` and `blobs/`) holding one
    /// image.
    #[arg(long, value_name = "DIR")]
    pub image_layout: PathBuf,
    /// OSV vulnerability data: a folder of `<Ecosystem>/all.zip` archives, as the OSV bucket
    /// lays them out.
    #[arg(long, value_name = "DIR")]
    pub db: PathBuf,
    /// `json` for scripts, `table` for people, `cyclonedx` for an SBOM (CycloneDX 1.5 JSON).
    #[arg(long, value_enum, default_value_t = ScanOutput::Json)]
    pub output: ScanOutput,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanOutput {
    Json,
    Table,
    Cyclonedx,
}

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Show which tag a version policy would choose, without a cluster or a registry.
    Preview(RolloutPreviewArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct RolloutPreviewArgs {
    /// The policy, as the `berth.dev/rollout` annotation takes it: `digest`, `semver:<range>`,
    /// `pattern:<regex> numerical|alphabetical[:<group>] [asc|desc]` or `newest-pushed:<regex>`.
    #[arg(long)]
    pub policy: String,
    /// JSON array of {"tag": "...", "digest": "sha256:...", "pushedAt": "RFC3339"} (pushedAt is
    /// needed by newest-pushed only).
    #[arg(long, value_name = "FILE")]
    pub tags: PathBuf,
    /// The tag the workload runs now: the policy never chooses one below it.
    #[arg(long, value_name = "TAG")]
    pub current: Option<String>,
    /// `json` for scripts, `table` for people.
    #[arg(long, value_enum, default_value_t = PreviewOutput::Json)]
    pub output: PreviewOutput,
}

#[derive(Subcommand, Debug)]
pub enum LifecycleCommand {
    /// Show which images a policy would expire, without a cluster or a registry.
    Preview(PreviewArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct PreviewArgs {
    /// ECR lifecycle policy JSON, or a LifecyclePolicy manifest (YAML or JSON).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// JSON array of {"digest": "sha256:...", "tags": [...], "pushedAt": "RFC3339"}.
    #[arg(long, value_name = "FILE")]
    pub images: PathBuf,
    /// JSON array of {"workload": "Kind namespace/name", "rollout": "<berth.dev/rollout>", "tag":
    /// "...", "digest": "sha256:..."} (tag and digest: what it runs now): the images they run or
    /// their version policy selects are kept, as the controller keeps them (protectInUse).
    #[arg(long, value_name = "FILE")]
    pub workloads: Option<PathBuf>,
    /// The time to evaluate at (RFC 3339); default now.
    #[arg(long)]
    pub now: Option<String>,
    /// `json` for scripts, `table` for people.
    #[arg(long, value_enum, default_value_t = PreviewOutput::Json)]
    pub output: PreviewOutput,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreviewOutput {
    Json,
    Table,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CrdsArgs {
    /// Write one file per CRD (`<plural>.berth.dev.yaml`) into this directory instead of printing.
    #[arg(long, value_name = "DIR")]
    pub split: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Cli {
    pub fn run(self) -> ExitCode {
        init_logging(self.log_format);
        match self.command {
            Command::Crds(args) => match write_crds(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("berth crds: {e:#}");
                    ExitCode::FAILURE
                }
            },
            Command::Lifecycle(LifecycleCommand::Preview(args)) => match run_preview(&args) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("berth lifecycle preview: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Rollout(RolloutCommand::Preview(args)) => match run_rollout_preview(&args) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("berth rollout preview: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Scan(args) => match run_scan(&args) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("berth scan: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Run(args) => {
                let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("berth run: cannot start the async runtime: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                match runtime.block_on(crate::runtime::run(*args)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "berth stopped with an error");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

fn run_preview(args: &PreviewArgs) -> Result<String, String> {
    let read = |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()));
    let now = match &args.now {
        Some(t) => t
            .parse::<k8s_openapi::jiff::Timestamp>()
            .map_err(|e| format!("--now {t:?} is not an RFC 3339 time: {e}"))?,
        None => k8s_openapi::jiff::Timestamp::now(),
    };
    let workloads = args.workloads.as_ref().map(read).transpose()?;
    let preview = crate::lifecycle::preview::preview(
        &read(&args.policy)?,
        &read(&args.images)?,
        workloads.as_deref(),
        now.as_millisecond(),
    )?;
    Ok(match args.output {
        PreviewOutput::Json => format!("{}\n", serde_json::to_string_pretty(&preview).map_err(|e| e.to_string())?),
        PreviewOutput::Table => crate::lifecycle::preview::table(&preview),
    })
}

fn run_rollout_preview(args: &RolloutPreviewArgs) -> Result<String, String> {
    let tags = std::fs::read_to_string(&args.tags).map_err(|e| format!("reading {}: {e}", args.tags.display()))?;
    let outcome = crate::rollout::preview::preview(&args.policy, &tags, args.current.as_deref())?;
    Ok(match args.output {
        PreviewOutput::Json => {
            format!("{}\n", serde_json::to_string_pretty(&outcome.preview).map_err(|e| e.to_string())?)
        }
        PreviewOutput::Table => crate::rollout::preview::table(&outcome),
    })
}

fn run_scan(args: &ScanArgs) -> Result<String, String> {
    use crate::scanning::{inventory, layers, matching, osv, report};
    let files = layers::from_oci_layout(&args.image_layout, &layers::Limits::default())
        .map_err(|e| format!("image layout {}: {e}", args.image_layout.display()))?;
    let db = osv::Database::load_dir(&args.db).map_err(|e| format!("vulnerability data {}: {e}", args.db.display()))?;
    let inventory = inventory::inventory(&files);
    if !inventory.unreadable.is_empty() {
        return Err(format!("the image's package database does not parse: {}", inventory.unreadable.join("; ")));
    }
    let findings = matching::findings(&inventory, &db);
    let report = report::Report::new(&inventory, &findings);
    Ok(match args.output {
        ScanOutput::Json => format!("{}\n", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?),
        ScanOutput::Table => report::table(&report),
        ScanOutput::Cyclonedx => {
            let subject = layout_subject(&args.image_layout);
            let now = k8s_openapi::jiff::Timestamp::now()
                .round(k8s_openapi::jiff::Unit::Second)
                .map(|t| t.to_string())
                .unwrap_or_default();
            let bom = report::cyclonedx(&inventory, &findings, &subject, &now);
            format!("{}\n", serde_json::to_string_pretty(&bom).map_err(|e| e.to_string())?)
        }
    })
}

/// `<ref.name>@<manifest digest>` of the layout's image, for the SBOM's subject.
fn layout_subject(dir: &std::path::Path) -> String {
    let index: serde_json::Value =
        std::fs::read(dir.join("index.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let m = &index["manifests"][0];
    let name = m["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap_or("image");
    format!("{name}@{}", m["digest"].as_str().unwrap_or("unknown"))
}

fn write_crds(args: &CrdsArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    match &args.split {
        None => print!("{}", crds_yaml()?),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in crate::api::crds() {
                let path = dir.join(crate::api::crd_file_name(&crd));
                std::fs::write(&path, crate::api::crd_yaml(&crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Every CRD as one YAML stream, documents separated by `---`.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let docs = crate::api::crds().iter().map(crate::api::crd_yaml).collect::<Result<Vec<_>, _>>()?;
    Ok(docs.iter().map(|d| format!("---\n{d}")).collect())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    // Logs go to stderr so that `berth crds` output stays clean YAML on stdout.
    let result = match format {
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init(),
    };
    let _ = result; // Already initialised (tests): keep the first subscriber.
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted_proxies(extra: &[&str]) -> Result<Vec<String>, clap::Error> {
        let cli = Cli::try_parse_from(["berth", "run"].iter().chain(extra))?;
        let Command::Run(args) = cli.command else { unreachable!() };
        Ok(args.trusted_proxies.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn trusted_proxies_are_a_comma_separated_list_of_ranges_or_addresses() {
        assert_eq!(trusted_proxies(&[]).unwrap(), Vec::<String>::new(), "nobody by default");
        assert_eq!(
            trusted_proxies(&["--trusted-proxies", "10.0.0.0/8, 192.0.2.7,fd00::/8"]).unwrap(),
            ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]
        );
        let bad = trusted_proxies(&["--trusted-proxies", "10.0.0.0/8,ingress-nginx"]).unwrap_err();
        assert!(bad.to_string().contains("\"ingress-nginx\" is neither a CIDR range nor an IP address"), "{bad}");
    }
}
