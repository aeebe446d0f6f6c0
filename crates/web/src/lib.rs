//! attendanced's web server: the student page (`/`), the teacher dashboard (`/teacher`), the
//! line protocol over WebSocket (`/ws`) and `/healthz` on `web_listen`; `/metrics` (and
//! `/healthz`) on `metrics_listen`.
//!
//! It runs in the daemon's process and runtime as a [`Frontend`] of the engine: `/ws` is one
//! more transport over the session core (the same `HELLO`, commands, limits and class hubs as
//! the TCP port), and the dashboard reads only the engine's snapshot API and event stream.
//!
//! - [`http`]: the accept loop (connection limit shared with `max_connections`, TLS, the
//!   header read timeout) and the hardening every response gets;
//! - [`routes`]: the router;
//! - [`ws`]: `/ws`, frames to lines and back;
//! - [`student`]: the student page and its assets;
//! - [`teacher`]: sign-in, the dashboard, its Server-Sent Events and the CSV download;
//! - [`health`]: `/healthz` and `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use attendance_server::{Frontend, FrontendContext};
use tokio::net::TcpListener;
use tracing::info;

pub mod health;
pub mod http;
pub mod routes;
pub mod student;
pub mod teacher;
pub mod ws;

pub use routes::WebState;

/// The web server's listeners, bound by the binary before the daemon starts.
#[derive(Debug, Default)]
pub struct WebFrontend {
    /// `web_listen`: pages, `/ws`, `/healthz`.
    pub web: Option<TcpListener>,
    /// `metrics_listen`: `/metrics` (and `/healthz`) only, never TLS.
    pub metrics: Option<TcpListener>,
}

impl Frontend for WebFrontend {
    fn start(self: Box<Self>, ctx: FrontendContext) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let state = WebState::new(ctx.engine.clone(), ctx.tls.is_some(), ctx.tracker.clone());
            // The dashboard follows the classes from before anyone can connect (and only if it
            // is served: with the web port off, no one could look, and the board would cost
            // every student who joins).
            if self.web.is_some() {
                teacher::start(&state);
                let sweep = Arc::clone(state.pings()).sweep(Arc::clone(&ctx.engine));
                ctx.tracker.spawn(sweep);
            }
            let mut tasks = Vec::new();
            if let Some(listener) = self.web {
                if let Ok(addr) = listener.local_addr() {
                    let scheme = if ctx.tls.is_some() { "https" } else { "http" };
                    info!(%addr, %scheme, "web listening on {addr}");
                }
                let router = routes::router(state.clone());
                tasks.push(tokio::spawn(http::serve(
                    listener,
                    router,
                    ctx.tls.clone(),
                    state.clone(),
                    ctx.tracker.clone(),
                    true,
                )));
            }
            if let Some(listener) = self.metrics {
                if let Ok(addr) = listener.local_addr() {
                    info!(%addr, "metrics listening on {addr}");
                }
                let router = routes::metrics_router(state.clone());
                tasks.push(tokio::spawn(http::serve(
                    listener,
                    router,
                    None,
                    state,
                    ctx.tracker.clone(),
                    false,
                )));
            }
            for task in tasks {
                let _ = task.await;
            }
        })
    }
}
