//! `/healthz` for load balancers and `/metrics` for Prometheus (which replaces the daemon's
//! former hand-written responder). `/metrics` is served only on `metrics_listen`, which an
//! administrator binds to loopback or an internal interface, never on the public web port.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::routes::WebState;

/// The content type of prometheus-client's text encoding.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `/healthz`.
pub fn routes() -> Router<WebState> {
    Router::new().route("/healthz", get(healthz))
}

/// `/healthz` and `/metrics`, for `metrics_listen`.
pub fn metrics_routes() -> Router<WebState> {
    routes().route("/metrics", get(metrics))
}

/// 200 with the live numbers while the daemon serves; 503 once it is shutting down (so a load
/// balancer stops sending students here).
async fn healthz(State(state): State<WebState>) -> impl IntoResponse {
    let engine = state.engine();
    let snap = engine.snapshot();
    let stopping = engine.shutdown_token().is_cancelled();
    // A store that is down does not take the node out of the balancer (its students still
    // check in, chat and are told ERR STORAGE for marks): 200, "degraded".
    let mut degraded = false;
    let dependencies: serde_json::Map<String, serde_json::Value> = engine
        .dependencies()
        .iter()
        .map(|d| {
            degraded |= !d.is_up();
            let value = serde_json::json!({
                "up": d.is_up(),
                "latency_ms": d.latency().as_secs_f64() * 1000.0,
                "error": d.last_error(),
            });
            (d.name().to_owned(), value)
        })
        .collect();
    let body = serde_json::json!({
        "status": if stopping { "stopping" } else if degraded { "degraded" } else { "ok" },
        "dependencies": dependencies,
        "connections": snap.connections,
        "joined": snap.joined(),
        "classes": snap.classes.len(),
        "marks_today": snap.marks_today,
        "store_queue": snap.store_queue,
        "last_fsync_ms": snap.last_fsync.map(|d| d.as_secs_f64() * 1000.0),
        "uptime_s": snap.uptime.as_secs(),
    });
    let status = if stopping {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
}

async fn metrics(State(state): State<WebState>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, OPENMETRICS),
            (header::CACHE_CONTROL, "no-store"),
        ],
        state.engine().metrics_text(),
    )
}
