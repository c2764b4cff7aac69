//! The operator's HTTP surface: health, readiness, metrics, registry events and the registry
//! token service. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the
//! token endpoint limits failed logins per client address ([`client`] decides which).

pub mod client;
pub mod events;
pub mod token;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    http::header,
    response::IntoResponse,
    routing::{get, post},
};

use crate::metrics::Metrics;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Set once the operator reaches the Kubernetes API; cleared while it cannot.
    pub ready: Arc<AtomicBool>,
}

/// The whole HTTP surface. Registry events are served when `events` is given.
pub fn router(state: HttpState, events: Option<Arc<events::EventsState>>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    if let Some(events) = events {
        router = router.merge(
            Router::new()
                .route("/events/registry/{registry}", post(events::registry_events))
                .layer(DefaultBodyLimit::max(events::MAX_BODY))
                .with_state(events.clone()),
        );
        router = router.merge(
            Router::new()
                .route("/token/{registry}", get(token::get_token).post(token::post_token))
                .layer(DefaultBodyLimit::max(token::MAX_FORM))
                .with_state(events.ctx.clone()),
        );
    }
    router
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the Kubernetes API has not been reached\n")
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}
