//! The listener: opens storage, accepts connections under a connection limit, runs the heartbeat,
//! and shuts everything down in order.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use attendance_protocol::{ErrorCode, Event, Hello, ServerLine, Text, Timestamp, Token};
use bytes::Bytes;
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, debug_span, error, info, warn};

use crate::admin::{AdminError, AdminToken, TokenSource};
use crate::classes::Classes;
use crate::config::Config;
use crate::connection::Peer;
use crate::lines::Lines;
use crate::metrics::Metrics;
use crate::store::{self, CsvSink, Index, StorageError, Store};

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
    /// The metrics listener (`metrics_listen`) could not be bound.
    #[error("metrics listener {addr}: {source}")]
    Metrics {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

impl ServerError {
    /// True if the error is in the configuration or its files (exit code 78, EX_CONFIG), so a
    /// supervisor should not restart the daemon until someone fixes it.
    pub fn is_config(&self) -> bool {
        match self {
            Self::Storage(e) => e.is_config(),
            Self::Admin(AdminError::Permissions { .. } | AdminError::Empty(_)) | Self::Tls(_) => {
                true
            }
            _ => false,
        }
    }
}

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The settings; replaced whole on a reload (SIGHUP), read without locking.
    pub(crate) config: ArcSwap<Config>,
    /// Fixed at start: the size of the connection semaphore.
    max_connections: usize,
    pub(crate) classes: Classes,
    /// The marks: recording them (through the writer task) and looking them up.
    pub(crate) store: Store,
    /// Prometheus counters, also read by the admin `STATUS`.
    pub(crate) metrics: Arc<Metrics>,
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
        self.max_connections - self.connections.available_permits()
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
    let csv = store::open_csv(&config.csv, config.fsync, config.time_zone()).await?;
    run_with_log(listener, config, csv, shutdown).await
}

/// A request to a running server (sent by the binary on SIGHUP).
#[derive(Debug)]
#[non_exhaustive]
pub enum Control {
    /// Apply new settings where they can change live, and reopen the CSV (for rotation). The
    /// reply lists what changed, or why nothing was.
    Reload(Box<Config>, oneshot::Sender<Result<Vec<String>, String>>),
}

/// [`run`] with a channel of [`Control`] requests, as the daemon binary runs it.
///
/// # Errors
/// [`ServerError`] if the CSV, the admin token or the admin socket cannot be opened.
pub async fn run_controlled(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
    controls: mpsc::Receiver<Control>,
) -> Result<(), ServerError> {
    let csv = store::open_csv(&config.csv, config.fsync, config.time_zone()).await?;
    serve(listener, config, csv, shutdown, controls).await
}

/// [`run`] on a CSV that is already open, with the dedupe index built from it
/// ([`store::open_csv`]; tests use this to inject storage faults).
///
/// # Errors
/// [`ServerError`] if the admin token or the admin socket cannot be opened.
pub async fn run_with_log(
    listener: TcpListener,
    config: Config,
    csv: (CsvSink, Index),
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    // Nobody sends controls; the sender lives until the server ends.
    let (_keep, controls) = mpsc::channel(1);
    serve(listener, config, csv, shutdown, controls).await
}

async fn serve(
    listener: TcpListener,
    mut config: Config,
    (sink, index): (CsvSink, Index),
    shutdown: impl Future<Output = ()>,
    controls: mpsc::Receiver<Control>,
) -> Result<(), ServerError> {
    crate::limits::fit_connections_to_fd_limit(&mut config);

    let token_path = config.admin_token_path();
    let (admin, source) =
        AdminToken::load_or_create(&token_path, config.admin_token_file.is_none())?;
    match source {
        TokenSource::Created => info!(path = %token_path.display(), "created a new admin token"),
        TokenSource::Loaded => info!(path = %token_path.display(), "admin token loaded"),
    }
    let admin_listener = crate::admin_socket::bind(&config.admin_socket_path())?;
    let tls = crate::tls::acceptor(&config)?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Metrics { addr, source })?,
        ),
        None => None,
    };

    let metrics = Arc::new(Metrics::new());
    let (store, writer_task) = store::spawn(sink, index, Arc::clone(&metrics));
    let cancel = CancellationToken::new();
    let (signals, _) = broadcast::channel(4);

    let shared = Arc::new(Shared {
        connections: Arc::new(Semaphore::new(config.max_connections)),
        max_connections: config.max_connections,
        per_address: AddressSlots::new(config.max_per_address),
        classes: Classes::new(config.outbound_queue),
        store,
        metrics,
        admin,
        signals,
        hello: hello_line(),
        shutdown: cancel.clone(),
        config: ArcSwap::from_pointee(config),
    });
    let heartbeat_task = tokio::spawn(heartbeat_loop(Arc::clone(&shared)));
    let control_task = tokio::spawn(control_loop(Arc::clone(&shared), controls));
    let watchdog_task = tokio::spawn(crate::notify::watchdog_loop(Arc::clone(&shared)));

    let local = listener.local_addr()?;
    info!(addr = %local, tls = tls.is_some(), "listening on {local}");
    // Logged after the line above: both contain "listening on", and tools (the test harness)
    // take the first such line for the student port.
    let metrics_task = metrics_listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            info!(%addr, "metrics listening on {addr}");
        }
        tokio::spawn(crate::metrics_http::serve(l, Arc::clone(&shared)))
    });
    // Listener bound, CSV open and checked, token loaded: ready for systemd.
    crate::notify::ready(&shared);

    let tracker = TaskTracker::new();
    crate::limits::configure_listener(
        &listener,
        shared.config.load().tcp_keepalive,
        shared.config.load().send_buffer,
    );
    // On a worker thread, not the caller's (block_on's) thread: spawned connection tasks then
    // go to the worker's local queue instead of waking another thread through the shared one.
    let accepting = tokio::spawn(accept_loop(
        listener,
        Arc::clone(&shared),
        tracker.clone(),
        tls,
    ));
    tokio::select! {
        _ = accepting => {}
        () = crate::admin_socket::serve(&admin_listener, &shared, &tracker) => {}
        () = shutdown => info!("shutdown signal received"),
        () = cancel.cancelled() => {}
    }
    info!("shutting down: no new connections, telling clients");
    crate::notify::stopping();
    cancel.cancel();
    // The accept loop ends on the cancellation and drops the listener.
    let _ = shared.signals.send(Signal::Shutdown);
    drop(admin_listener);
    tracker.close();
    tracker.wait().await;
    let _ = heartbeat_task.await;
    let _ = control_task.await;
    let _ = watchdog_task.await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    // The last handle to the writer goes with `shared`; the writer then drains and syncs.
    drop(shared);
    if let Err(e) = writer_task.await {
        error!(error = %e, "writer task failed");
    }
    info!("shutdown complete");
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let (shared, tracker, tls) = (&shared, &tracker, tls.as_ref());
    let next_id = AtomicU64::new(1);
    let mut backoff = Duration::from_millis(10);
    // Made once: re-creating it for every accept would register and unregister a waiter on
    // the token each time.
    let cancelled = shared.shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        // Biased: a cancellation is seen before another connection is taken.
        let accepted = tokio::select! {
            biased;
            () = &mut cancelled => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
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
        let conn = next_id.fetch_add(1, Ordering::Relaxed);
        // A debug span: at the default level an idle connection carries no span data (about
        // 250 bytes each in the registry); warnings name the peer themselves.
        let span = debug_span!("conn", %peer, id = conn);
        let refuse_timeout = shared
            .config
            .load()
            .write_timeout
            .min(Duration::from_secs(5));
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            let why = "the server is at its connection limit; try again later";
            shared.metrics.refused(ErrorCode::Full);
            tracker.spawn(refuse(stream, why, refuse_timeout).instrument(span));
            continue;
        };
        let Some(slot) = shared.per_address.take(peer.ip()) else {
            let why = "too many connections from your address";
            shared.metrics.refused(ErrorCode::Full);
            tracker.spawn(refuse(stream, why, refuse_timeout).instrument(span));
            continue;
        };
        let shared = Arc::clone(shared);
        match tls {
            None => tracker.spawn(
                async move {
                    let (lines, write) = split_early(stream, shared.config.load().max_line);
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

/// Splits a plain TCP connection into its line source, holding whatever the client has already
/// sent (see [`crate::lines::read_early`]), and its write half. Not async: the read chunk lives
/// on the stack only here, never in the connection's task.
fn split_early(stream: TcpStream, max_line: usize) -> (Lines<OwnedReadHalf>, OwnedWriteHalf) {
    let mut chunk = [0u8; crate::lines::CHUNK];
    let n = crate::lines::read_early(&stream, &mut chunk);
    let (read, write) = stream.into_split();
    (Lines::with_early(read, max_line, &chunk[..n]), write)
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
    let handshake =
        tokio::time::timeout(shared.config.load().login_timeout, acceptor.accept(stream));
    match handshake.await {
        Ok(Ok(tls)) => {
            let (read, write) = tokio::io::split(tls);
            let lines = Lines::new(read, shared.config.load().max_line);
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

/// Sends `EVENT HEARTBEAT` to every connection every `heartbeat` (read afresh each time, so a
/// reload takes effect from the next beat).
async fn heartbeat_loop(shared: Arc<Shared>) {
    loop {
        let period = shared.config.load().heartbeat;
        tokio::select! {
            () = tokio::time::sleep(period) => {
                let line = ServerLine::Event(Event::Heartbeat(Timestamp::now())).encode();
                // No receivers (no connections) is fine.
                let _ = shared.signals.send(Signal::Heartbeat(line));
            }
            () = shared.shutdown.cancelled() => break,
        }
    }
}

/// Applies [`Control`] requests until shutdown.
async fn control_loop(shared: Arc<Shared>, mut controls: mpsc::Receiver<Control>) {
    loop {
        let control = tokio::select! {
            c = controls.recv() => c,
            () = shared.shutdown.cancelled() => None,
        };
        let Some(Control::Reload(new, reply)) = control else {
            break;
        };
        crate::notify::reloading();
        let result = crate::reload::apply(&shared, *new).await;
        crate::notify::ready(&shared);
        let _ = reply.send(result);
    }
}
