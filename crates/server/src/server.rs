//! The listener: opens storage, accepts connections under a connection limit, runs the heartbeat,
//! and shuts everything down in order.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use attendance_protocol::{ErrorCode, Event, Hello, ServerLine, Text, Timestamp, Token};
use bytes::Bytes;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, debug_span, error, info, warn};

use crate::admin::{AdminError, AdminToken, TokenSource};
use crate::classes::Classes;
use crate::config::Config;
use crate::connection::Peer;
use crate::lines::Lines;
use crate::marks::Marks;
use crate::storage::{CsvLog, MarkRecord, StorageError};
use crate::writer::{self, WriterHandle};

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The CSV could not be opened or is not ours.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The admin token could not be loaded.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The admin socket could not be created.
    #[error("admin socket {path}: {source}")]
    AdminSocket {
        /// The socket's path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
}

impl ServerError {
    /// True if the error is in the configuration or its files (exit code 78, EX_CONFIG), so a
    /// supervisor should not restart the daemon until someone fixes it.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Storage(StorageError::Header { .. })
                | Self::Admin(AdminError::Permissions { .. } | AdminError::Empty(_))
                | Self::Tls(_)
        )
    }
}

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) classes: Classes,
    pub(crate) marks: Marks,
    pub(crate) writer: WriterHandle,
    pub(crate) admin: AdminToken,
    /// Server-wide signals to every connection: heartbeats and shutdown.
    pub(crate) signals: broadcast::Sender<Signal>,
    pub(crate) hello: Bytes,
    per_address: AddressSlots,
    pub(crate) shutdown: CancellationToken,
    connections: Arc<Semaphore>,
}

impl Shared {
    /// Connections open now.
    pub(crate) fn open_connections(&self) -> usize {
        self.config.max_connections - self.connections.available_permits()
    }
}

/// Runs the daemon on an already-bound `listener` until `shutdown` completes or an administrator
/// sends `SHUTDOWN`; then stops accepting, tells every client, lets the writer drain and sync,
/// and returns.
///
/// # Errors
/// [`ServerError`] if the CSV, the admin token or the admin socket cannot be opened.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let (log, existing) = CsvLog::open(&config.csv, config.fsync).await?;
    run_with_log(listener, config, log, existing, shutdown).await
}

/// [`run`] on a CSV log that is already open, with the records it held (tests use this to
/// inject storage faults).
///
/// # Errors
/// [`ServerError`] if the admin token or the admin socket cannot be opened.
pub async fn run_with_log(
    listener: TcpListener,
    mut config: Config,
    log: CsvLog,
    existing: Vec<MarkRecord>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    crate::limits::fit_connections_to_fd_limit(&mut config);
    let marks = Marks::from_records(&existing, config.time_zone());
    info!(path = %log.path().display(), rows = existing.len(), "attendance csv open");
    drop(existing);

    let token_path = config.admin_token_path();
    let (admin, source) =
        AdminToken::load_or_create(&token_path, config.admin_token_file.is_none())?;
    match source {
        TokenSource::Created => info!(path = %token_path.display(), "created a new admin token"),
        TokenSource::Loaded => info!(path = %token_path.display(), "admin token loaded"),
    }
    let admin_listener = crate::admin_socket::bind(&config.admin_socket_path())?;
    let tls = crate::tls::acceptor(&config)?;

    let (writer, writer_task) = writer::spawn(log);
    let cancel = CancellationToken::new();
    let (signals, _) = broadcast::channel(4);
    let heartbeat_task = tokio::spawn(heartbeat_loop(
        config.heartbeat,
        signals.clone(),
        cancel.clone(),
    ));

    let shared = Arc::new(Shared {
        connections: Arc::new(Semaphore::new(config.max_connections)),
        per_address: AddressSlots::new(config.max_per_address),
        classes: Classes::new(config.outbound_queue),
        marks,
        writer,
        admin,
        signals,
        hello: hello_line(),
        shutdown: cancel.clone(),
        config,
    });

    let local = listener.local_addr()?;
    info!(addr = %local, tls = tls.is_some(), "listening on {local}");

    let tracker = TaskTracker::new();
    tokio::select! {
        () = accept_loop(&listener, &shared, &tracker, tls.as_ref()) => {}
        () = crate::admin_socket::serve(&admin_listener, &shared, &tracker) => {}
        () = shutdown => info!("shutdown signal received"),
        () = cancel.cancelled() => {}
    }
    info!("shutting down: no new connections, telling clients");
    cancel.cancel();
    let _ = shared.signals.send(Signal::Shutdown);
    drop(listener);
    drop(admin_listener);
    tracker.close();
    tracker.wait().await;
    let _ = heartbeat_task.await;
    // The last handle to the writer goes with `shared`; the writer then drains and syncs.
    drop(shared);
    if let Err(e) = writer_task.await {
        error!(error = %e, "writer task failed");
    }
    info!("shutdown complete");
    Ok(())
}

async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    tls: Option<&tokio_rustls::TlsAcceptor>,
) {
    let next_id = AtomicU64::new(1);
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(e) => {
                // Out of descriptors or memory: wait a little instead of spinning.
                warn!(error = %e, "accept failed; backing off {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if let Err(e) = crate::limits::configure_socket(
            &stream,
            shared.config.tcp_keepalive,
            shared.config.send_buffer,
        ) {
            debug!(%peer, error = %e, "cannot set socket options");
        }
        let conn = next_id.fetch_add(1, Ordering::Relaxed);
        // A debug span: at the default level an idle connection carries no span data (about
        // 250 bytes each in the registry); warnings name the peer themselves.
        let span = debug_span!("conn", %peer, id = conn);
        let refuse_timeout = shared.config.write_timeout.min(Duration::from_secs(5));
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            let why = "the server is at its connection limit; try again later";
            tracker.spawn(refuse(stream, why, refuse_timeout).instrument(span));
            continue;
        };
        let Some(slot) = shared.per_address.take(peer.ip()) else {
            let why = "too many connections from your address";
            tracker.spawn(refuse(stream, why, refuse_timeout).instrument(span));
            continue;
        };
        let shared = Arc::clone(shared);
        match tls {
            None => tracker.spawn(
                async move {
                    let (read, write) = stream.into_split();
                    let lines = Lines::new(read, shared.config.max_line);
                    crate::connection::serve(shared, lines, write, Peer::Tcp(peer), conn).await;
                    drop((permit, slot));
                }
                .instrument(span),
            ),
            // A separate task body: the TLS handshake's large state must not enlarge every
            // plain connection's task.
            Some(acceptor) => tracker.spawn(
                serve_tls(shared, acceptor.clone(), stream, peer, conn, (permit, slot))
                    .instrument(span),
            ),
        };
    }
}

/// Serves one TLS connection: handshake (bounded by `login_timeout`), then the protocol.
async fn serve_tls<G>(
    shared: Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    conn: u64,
    guards: G,
) {
    let handshake = tokio::time::timeout(shared.config.login_timeout, acceptor.accept(stream));
    match handshake.await {
        Ok(Ok(tls)) => {
            let (read, write) = tokio::io::split(tls);
            let lines = Lines::new(read, shared.config.max_line);
            crate::connection::serve(shared, lines, write, Peer::Tcp(peer), conn).await;
        }
        Ok(Err(e)) => debug!(error = %e, "tls handshake failed"),
        Err(_) => debug!("tls handshake timed out"),
    }
    drop(guards);
}

/// Per-address connection counts, when `max_per_address` is set.
#[derive(Debug)]
pub(crate) struct AddressSlots {
    limit: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in [`AddressSlots`], given back on drop.
#[derive(Debug)]
pub(crate) struct AddressSlot {
    ip: IpAddr,
    counts: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
}

impl AddressSlots {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            counts: Arc::default(),
        }
    }

    /// A slot for `ip`, or `None` if that address has `limit` connections already.
    fn take(&self, ip: IpAddr) -> Option<AddressSlot> {
        if self.limit == 0 {
            return Some(AddressSlot { ip, counts: None });
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            ip,
            counts: Some(Arc::clone(&self.counts)),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some(counts) = &self.counts {
            let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = counts.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&self.ip);
                }
            }
        }
    }
}

/// Tells a client why it cannot be served (`ERR FULL`), at once, and closes.
async fn refuse(mut stream: TcpStream, why: &'static str, timeout: Duration) {
    debug!(why, "refusing connection");
    let line = ServerLine::err(ErrorCode::Full, why).encode();
    let _ = tokio::time::timeout(timeout, async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    })
    .await;
}

/// The greeting, encoded once.
fn hello_line() -> Bytes {
    let word =
        |s: &str| Token::new(s).unwrap_or_else(|_| Token::new("unknown").expect("valid token"));
    ServerLine::Hello(Hello {
        server: word("attendanced"),
        version: word(env!("CARGO_PKG_VERSION")),
        text: Text::lossy(
            "welcome; send JOIN COURSE_DIV_NAME_ROLL to check in, HELP for all commands",
        ),
    })
    .encode()
}

/// What every connection is told at once.
#[derive(Debug, Clone)]
pub(crate) enum Signal {
    /// `EVENT HEARTBEAT`, encoded once for everyone.
    Heartbeat(Bytes),
    /// The server is shutting down.
    Shutdown,
}

async fn heartbeat_loop(
    period: Duration,
    tx: broadcast::Sender<Signal>,
    cancel: CancellationToken,
) {
    let start = tokio::time::Instant::now() + period;
    let mut interval = tokio::time::interval_at(start, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let line = ServerLine::Event(Event::Heartbeat(Timestamp::now())).encode();
                // No receivers (no connections) is fine.
                let _ = tx.send(Signal::Heartbeat(line));
            }
            () = cancel.cancelled() => break,
        }
    }
}
