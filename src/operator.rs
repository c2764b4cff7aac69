//! `berth run`: connect to the cluster, serve HTTP, run until SIGTERM or SIGINT.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::sync::watch;

use crate::{cli::RunArgs, http, metrics::Metrics};

/// How often readiness re-checks that the Kubernetes API answers.
const API_CHECK_INTERVAL: Duration = Duration::from_secs(10);

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => Config::infer().await.context(
            "no in-cluster configuration and no kubeconfig (set --kubeconfig or KUBECONFIG)",
        )?,
    };
    let client = Client::try_from(config).context("building the Kubernetes client")?;

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding the HTTP server to {}", args.http_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    let app = http::router(http::HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    let mut server_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_shutdown.wait_for(|stop| *stop).await;
            })
            .await
    });

    let checker = tokio::spawn(watch_api(
        client.clone(),
        ready,
        metrics.clone(),
        shutdown_rx,
    ));

    shutdown_signal().await?;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    checker.await.context("API checker task")?;
    server
        .await
        .context("HTTP server task")?
        .context("HTTP server")?;
    tracing::info!("stopped");
    Ok(())
}

/// Keeps readiness in step with whether the Kubernetes API answers.
async fn watch_api(
    client: Client,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
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
