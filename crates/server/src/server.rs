//! The listener: opens storage, accepts connections under a connection limit, runs the heartbeat,
//! and shuts everything down in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use attendance_protocol::{ErrorCode, Event, Hello, ServerLine, Text, Timestamp, Token};
use bytes::Bytes;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use crate::admin::{AdminError, AdminToken, TokenSource};
use crate::classes::Classes;
use crate::config::Config;
use crate::marks::Marks;
use crate::storage::{CsvLog, StorageError};
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
}

impl ServerError {
    /// True if the error is in the configuration or its files (exit code 78, EX_CONFIG), so a
    /// supervisor should not restart the daemon until someone fixes it.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Storage(StorageError::Header { .. })
                | Self::Admin(AdminError::Permissions { .. } | AdminError::Empty(_))
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
    pub(crate) heartbeat: watch::Receiver<Bytes>,
    pub(crate) hello: Bytes,
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
/// [`ServerError`] if the CSV or the admin token cannot be opened.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let (log, existing) = CsvLog::open(&config.csv, config.fsync).await?;
    let marks = Marks::from_records(&existing);
    info!(path = %log.path().display(), rows = existing.len(), "attendance csv open");
    drop(existing);

    let token_path = config.admin_token_path();
    let (admin, source) =
        AdminToken::load_or_create(&token_path, config.admin_token_file.is_none())?;
    match source {
        TokenSource::Created => info!(path = %token_path.display(), "created a new admin token"),
        TokenSource::Loaded => info!(path = %token_path.display(), "admin token loaded"),
    }

    let (writer, writer_task) = writer::spawn(log);
    let cancel = CancellationToken::new();
    let (heartbeat_tx, heartbeat) = watch::channel(Bytes::new());
    let heartbeat_task = tokio::spawn(heartbeat_loop(
        config.heartbeat,
        heartbeat_tx,
        cancel.clone(),
    ));

    let shared = Arc::new(Shared {
        connections: Arc::new(Semaphore::new(config.max_connections)),
        classes: Classes::new(config.class_backlog),
        marks,
        writer,
        admin,
        heartbeat,
        hello: hello_line(),
        shutdown: cancel.clone(),
        config,
    });

    let local = listener.local_addr()?;
    info!(addr = %local, "listening on {local}");

    let tracker = TaskTracker::new();
    tokio::select! {
        () = accept_loop(&listener, &shared, &tracker) => {}
        () = shutdown => info!("shutdown signal received"),
        () = cancel.cancelled() => {}
    }
    info!("shutting down: no new connections, telling clients");
    cancel.cancel();
    drop(listener);
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

async fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, tracker: &TaskTracker) {
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
        let _ = stream.set_nodelay(true);
        let conn = next_id.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("conn", %peer, id = conn);
        match shared.connections.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = Arc::clone(shared);
                tracker.spawn(
                    async move {
                        crate::connection::serve(shared, stream, peer, conn).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            Err(_) => {
                let timeout = shared.config.write_timeout.min(Duration::from_secs(5));
                tracker.spawn(refuse_full(stream, peer, timeout).instrument(span));
            }
        }
    }
}

/// Tells a client over the connection limit so, at once, and closes.
async fn refuse_full(mut stream: TcpStream, peer: SocketAddr, timeout: Duration) {
    debug!(%peer, "connection limit reached; refusing");
    let line = ServerLine::err(
        ErrorCode::Full,
        "the server is at its connection limit; try again later",
    )
    .encode();
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

async fn heartbeat_loop(period: Duration, tx: watch::Sender<Bytes>, cancel: CancellationToken) {
    let start = tokio::time::Instant::now() + period;
    let mut interval = tokio::time::interval_at(start, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                tx.send_replace(ServerLine::Event(Event::Heartbeat(Timestamp::now())).encode());
            }
            () = cancel.cancelled() => break,
        }
    }
}
