//! The web server's accept loop: every HTTP connection takes a permit of the engine's
//! `max_connections` (a WebSocket keeps it for its whole life), TLS when configured, and a
//! header read timeout against slow-loris clients. A connection from a trusted load balancer
//! first gives its PROXY header (before TLS), and its requests carry the client it names as
//! their `ConnectInfo`. On shutdown, connections are asked to close gracefully and given
//! [`DRAIN`] to do so.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{Instrument as _, debug, debug_span, warn};

use crate::routes::WebState;

/// Time a client has to send a request's whole header (first request or the next one on a
/// kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to finish a TLS handshake.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request head (request line and headers) read; longer ones get 431.
const MAX_HEAD: usize = 16 * 1024;
/// Time open connections get to finish once the daemon shuts down.
const DRAIN: Duration = Duration::from_secs(2);
/// Connections the metrics-only listener serves at once (outside `max_connections`, so a full
/// daemon can still be watched).
const METRICS_CONNECTIONS: usize = 8;

/// The permit a connection holds; a WebSocket upgraded from it keeps a clone.
#[derive(Debug, Clone)]
pub struct ConnPermit(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// Serves `router` on `listener` until the daemon shuts down. With `tls`, every connection is
/// HTTPS. The web listener shares the engine's connection limit; the metrics listener
/// (`tls` is `None` and `state` only serves metrics) has its own few slots.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: WebState,
    tracker: TaskTracker,
    shared_limit: bool,
) {
    let engine = state.engine();
    let cancelled = engine.shutdown_token().clone();
    let own = Arc::new(Semaphore::new(METRICS_CONNECTIONS));
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            biased;
            () = cancelled.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                warn!(error = %e, "web accept failed; backing off {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let permit = if shared_limit {
            engine.try_admit()
        } else {
            Arc::clone(&own).try_acquire_owned().ok()
        };
        let Some(permit) = permit else {
            engine
                .metrics()
                .refused(attendance_protocol::ErrorCode::Full);
            tracker.spawn(refuse(stream));
            continue;
        };
        if shared_limit {
            // The student port's socket options (no Nagle, keepalive, `send_buffer`), so a
            // WebSocket member that stops reading falls behind (EVENT LAGGED) as on TCP.
            let live = engine.live();
            if let Err(e) = attendance_server::limits::configure_socket(
                &stream,
                live.tcp_keepalive,
                live.send_buffer,
            ) {
                debug!(error = %e, "cannot set socket options");
            }
        } else {
            let _ = stream.set_nodelay(true);
        }
        let permit = ConnPermit(Arc::new(permit));
        let router = router.clone();
        let tls = tls.clone();
        let cancelled = cancelled.clone();
        let span = debug_span!("web", %peer);
        // From a trusted balancer, the engine to read its header with. (The metrics listener
        // is internal, never behind the balancer.)
        let proxied = (shared_limit
            && engine.proxy_protocol().is_some_and(|p| p.trusts(peer.ip())))
        .then(|| Arc::clone(engine));
        tracker.spawn(
            async move {
                let mut stream = stream;
                let peer = match proxied {
                    None => peer,
                    Some(engine) => match client_behind(&engine, &mut stream, peer).await {
                        Some(client) => client,
                        None => return,
                    },
                };
                match tls {
                    None => connection(stream, peer, router, permit, cancelled).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => connection(tls, peer, router, permit, cancelled).await,
                            Ok(Err(e)) => debug!(error = %e, "tls handshake failed"),
                            Err(_) => debug!("tls handshake timed out"),
                        }
                    }
                }
            }
            .instrument(span),
        );
    }
}

/// The client a trusted balancer's connection carries, from its PROXY header; `None` if it
/// must be closed.
async fn client_behind(
    engine: &attendance_server::engine::Engine,
    stream: &mut TcpStream,
    balancer: SocketAddr,
) -> Option<SocketAddr> {
    engine
        .proxy_protocol()?
        .client_of(stream, balancer, engine.metrics())
        .await
}

/// One HTTP/1.1 connection (and what it upgrades to).
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    permit: ConnPermit,
    cancelled: tokio_util::sync::CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(permit.clone());
        req
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "http connection ended");
            }
        }
        () = cancelled.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn).await;
        }
    }
}

/// A client over the connection limit: 503, and closed.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt as _;
    let body = "the server is at its connection limit; try again later\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 10\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
