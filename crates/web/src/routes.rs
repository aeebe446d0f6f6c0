//! The router: every path the web server answers, and the hardening every response gets
//! (security headers, compression, body limits, 404 for anything else).

use std::sync::Arc;

use attendance_server::engine::Engine;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use tower_http::compression::CompressionLayer;
use tower_http::set_header::SetResponseHeaderLayer;

/// Largest request body accepted (sign-in forms); larger ones get 413.
pub const MAX_BODY: usize = 16 * 1024;

/// Scripts and styles only from the daemon itself (no inline script), connections only back to
/// it (`/ws`, SSE), and never inside a frame.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'none'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What every handler shares: a narrow handle on the engine and the web server's own state.
#[derive(Debug, Clone)]
pub struct WebState(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    engine: Arc<Engine>,
    tls: bool,
    tracker: tokio_util::task::TaskTracker,
    teacher: crate::teacher::Teacher,
    pings: Arc<crate::ws::Pings>,
}

impl WebState {
    /// State over `engine`; `tls` when the web port serves HTTPS (cookies are then `Secure`).
    /// Connections that outlive their request (WebSockets) hold a token of `tracker`, so the
    /// daemon's shutdown waits for them.
    pub fn new(engine: Arc<Engine>, tls: bool, tracker: tokio_util::task::TaskTracker) -> Self {
        Self(Arc::new(Inner {
            engine,
            tls,
            tracker,
            teacher: crate::teacher::Teacher::default(),
            pings: Arc::default(),
        }))
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.0.engine
    }

    /// Whether the web port serves HTTPS.
    pub fn tls(&self) -> bool {
        self.0.tls
    }

    /// The daemon's connection tasks.
    pub fn tracker(&self) -> &tokio_util::task::TaskTracker {
        &self.0.tracker
    }

    /// Every open WebSocket, for the ping sweep.
    pub fn pings(&self) -> &Arc<crate::ws::Pings> {
        &self.0.pings
    }

    /// The dashboard's sign-in sessions and limits.
    pub fn teacher(&self) -> &crate::teacher::Teacher {
        &self.0.teacher
    }
}

/// Every page, asset and endpoint of the web port.
pub fn router(state: WebState) -> Router {
    let router = Router::new()
        .merge(crate::student::routes())
        .merge(crate::teacher::routes())
        .merge(crate::ws::routes())
        .merge(crate::health::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(CompressionLayer::new());
    hardened(router).with_state(state)
}

/// `metrics_listen`: `/metrics` and `/healthz` only.
pub fn metrics_router(state: WebState) -> Router {
    let router = Router::new()
        .merge(crate::health::metrics_routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY));
    hardened(router).with_state(state)
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "not found\n")
}

/// The security headers, on every response (set unless a handler set its own).
fn hardened<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    router
        .layer(set(
            header::CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY,
        ))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::REFERRER_POLICY, "no-referrer"))
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
        .layer(set(
            HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=()",
        ))
}
