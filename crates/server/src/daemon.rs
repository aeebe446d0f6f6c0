//! The composition root: opens the store, binds the admin socket and metrics listener, builds
//! the engine, starts the transports, the heartbeat, the reload and watchdog loops, and shuts
//! everything down in order (transports, then the store after its final commit).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use attendance_protocol::{Event, ServerLine, Timestamp};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::admin::{AdminError, AdminToken, TokenSource};
use crate::engine::{Engine, Parts, Signal};
use crate::ops::config::Config;
use crate::ops::metrics::Metrics;
use crate::ops::reload::ReloadReport;
use crate::store::{self, CsvSink, DaemonSink, ExternalSink, Index, StorageError};

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
    /// The row chain's key could not be loaded.
    #[error(transparent)]
    Chain(#[from] store::chain::ChainError),
    /// A class's roster or code secret could not be loaded.
    #[error(transparent)]
    Rules(#[from] crate::attendance::rules::RulesError),
    /// `[proxy_protocol]` names something that is not a network.
    #[error("{0}")]
    ProxyProtocol(String),
}

/// Another way in besides the student port (the web server), started by the daemon once the
/// student port is announced and stopped with it.
pub trait Frontend: Send + 'static {
    /// Serves until `ctx.engine`'s shutdown is cancelled. Connection tasks go on
    /// `ctx.tracker`, which the daemon waits for before the store's final commit.
    fn start(self: Box<Self>, ctx: FrontendContext) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// What a [`Frontend`] is started with.
#[derive(Clone)]
#[non_exhaustive]
pub struct FrontendContext {
    /// The running engine.
    pub engine: Arc<Engine>,
    /// The student port's TLS acceptor, if TLS is configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Where connection tasks are spawned.
    pub tracker: TaskTracker,
}

impl std::fmt::Debug for FrontendContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontendContext")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerError {
    /// True if the error is in the configuration or its files (exit code 78, EX_CONFIG), so a
    /// supervisor should not restart the daemon until someone fixes it.
    pub fn is_config(&self) -> bool {
        match self {
            Self::Storage(e) => e.is_config(),
            Self::Admin(AdminError::Permissions { .. } | AdminError::Empty(_))
            | Self::Tls(_)
            | Self::Chain(_)
            | Self::Rules(_)
            | Self::ProxyProtocol(_) => true,
            _ => false,
        }
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
    let csv = open(&config).await?;
    run_with_log(listener, config, csv, shutdown).await
}

/// A request to a running server (sent by the binary on SIGHUP).
#[derive(Debug)]
#[non_exhaustive]
pub enum Control {
    /// Apply new settings where they can change live, and reopen the CSV (for rotation). The
    /// reply lists what was applied and what needs a restart, or why the CSV was not reopened.
    Reload(Box<Config>, oneshot::Sender<Result<ReloadReport, String>>),
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
    let csv = open(&config).await?;
    serve(
        listener,
        config,
        csv_sink(csv),
        shutdown,
        controls,
        Vec::new(),
        None,
    )
    .await
}

/// [`run_controlled`] with more ways in ([`Frontend`]s, e.g. the web server), as the daemon
/// binary runs it.
///
/// # Errors
/// [`ServerError`] if the CSV, the admin token or the admin socket cannot be opened.
pub async fn run_with_frontends(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
    controls: mpsc::Receiver<Control>,
    frontends: Vec<Box<dyn Frontend>>,
) -> Result<(), ServerError> {
    run_with_store(listener, config, shutdown, controls, frontends, None).await
}

/// [`run_with_frontends`] with the marks in an external store (a database) instead of the
/// CSV: `store` is its sink and the dedupe index built from its recent marks. `None` opens the
/// configured CSV.
///
/// # Errors
/// [`ServerError`] if the CSV, the admin token or the admin socket cannot be opened.
pub async fn run_with_store(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
    controls: mpsc::Receiver<Control>,
    frontends: Vec<Box<dyn Frontend>>,
    store: Option<(Box<dyn ExternalSink>, Index)>,
) -> Result<(), ServerError> {
    run_with_services(listener, config, shutdown, controls, frontends, store, None).await
}

/// [`run_with_store`] as one node of several: `cluster` links it to the others (the Redis bus
/// and presence of `attendance-cluster`). `None` is a node on its own.
///
/// # Errors
/// As [`run_with_store`].
pub async fn run_with_services(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
    controls: mpsc::Receiver<Control>,
    frontends: Vec<Box<dyn Frontend>>,
    store: Option<(Box<dyn ExternalSink>, Index)>,
    cluster: Option<Arc<dyn crate::cluster::ClusterLink>>,
) -> Result<(), ServerError> {
    let sink = match store {
        Some((sink, index)) => (DaemonSink::External(sink), index),
        None => csv_sink(open(&config).await?),
    };
    serve(
        listener, config, sink, shutdown, controls, frontends, cluster,
    )
    .await
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
    serve(
        listener,
        config,
        csv_sink(csv),
        shutdown,
        controls,
        Vec::new(),
        None,
    )
    .await
}

/// The opened CSV as the daemon's sink.
fn csv_sink((sink, index): (CsvSink, Index)) -> (DaemonSink, Index) {
    (DaemonSink::Csv(sink), index)
}

/// Opens (and locks) the configured CSV, building the dedupe index from its recent rows, and
/// chains its rows with the state directory's key (`attendanced.key`, created if missing).
async fn open(config: &Config) -> Result<(CsvSink, Index), ServerError> {
    let (startup, _) = config.split();
    let key_path = startup.state_dir().join("attendanced.key");
    let key = store::chain::ChainKey::load_or_create(&key_path)?;
    let (sink, index) = store::open_csv(&startup.csv, startup.fsync, startup.time_zone()).await?;
    let (head, rows) = sink.head();
    info!(
        key = %key_path.display(),
        rows,
        head = %store::chain::hex(&head),
        "row chain open"
    );
    Ok((sink.with_key(key), index))
}

async fn serve(
    listener: TcpListener,
    config: Config,
    (sink, index): (DaemonSink, Index),
    shutdown: impl Future<Output = ()>,
    controls: mpsc::Receiver<Control>,
    frontends: Vec<Box<dyn Frontend>>,
    cluster: Option<Arc<dyn crate::cluster::ClusterLink>>,
) -> Result<(), ServerError> {
    for warning in config.warnings() {
        warn!("{warning}");
    }
    let (startup, live) = config.split();
    let dependencies: Vec<_> = match &sink {
        DaemonSink::External(db) => db.health().into_iter().collect(),
        DaemonSink::Csv(_) => Vec::new(),
    };
    match &sink {
        DaemonSink::Csv(csv) => {
            info!(path = %csv.path().display(), marks_held = index.len(), "attendance csv open");
        }
        DaemonSink::External(db) => {
            info!(store = %db.describe(), marks_held = index.len(), "attendance store open");
        }
    }

    let token_path = startup.admin_token_path();
    let (admin, source) =
        AdminToken::load_or_create(&token_path, startup.admin_token_file.is_none())?;
    match source {
        TokenSource::Created => info!(path = %token_path.display(), "created a new admin token"),
        TokenSource::Loaded => info!(path = %token_path.display(), "admin token loaded"),
    }
    let admin_listener = crate::transport::admin_socket::bind(&startup.admin_socket_path())?;
    let tls = crate::transport::tls::acceptor(&startup)?;

    let rules = crate::attendance::rules::ClassRules::load(&startup.class, &startup.state_dir())?;
    for rule in rules.iter() {
        info!(
            class = %rule.key,
            scheduled = rule.schedule.is_some(),
            roster = rule.roster.as_ref().map_or(0, |r| r.len()),
            code = rule.secret.is_some(),
            subnets = rule.subnets.is_some(),
            "class rules loaded"
        );
    }

    let proxy = crate::transport::proxy::ProxyProtocol::from_config(&startup.proxy_protocol)
        .map_err(ServerError::ProxyProtocol)?;
    if let Some(proxy) = &proxy {
        info!(
            from = %proxy.describe(),
            timeout = ?startup.proxy_protocol.timeout,
            "proxy protocol on: connections from these balancers begin with a header naming the client"
        );
    }

    let metrics = Arc::new(Metrics::new());
    let (store, writer_task) = store::spawn(sink, index, Arc::clone(&metrics));
    let cancel = CancellationToken::new();
    let engine = Arc::new(Engine::new(Parts {
        startup,
        live,
        store,
        metrics,
        admin,
        rules,
        proxy,
        shutdown: cancel.clone(),
        dependencies,
        cluster: cluster.map(crate::engine::Cluster),
    }));
    let cluster_task = engine.cluster.as_ref().map(|c| {
        info!(cluster = %c.0.describe(), "one node of a cluster");
        tokio::spawn(c.0.run(crate::cluster::ClusterHost::new(&engine)))
    });
    let heartbeat_task = tokio::spawn(heartbeat_loop(Arc::clone(&engine)));
    // Each scheduled class's sessions close at their end (records for all, EVENT ENDED).
    let closer_tasks: Vec<_> = engine
        .rules
        .iter()
        .filter(|r| r.schedule.is_some())
        .map(|r| {
            tokio::spawn(crate::attendance::closer::close_sessions(
                Arc::clone(&engine),
                r.key.clone(),
            ))
        })
        .collect();
    let control_task = tokio::spawn(control_loop(Arc::clone(&engine), controls));
    let watchdog_task = tokio::spawn(crate::ops::notify::watchdog_loop(Arc::clone(&engine)));

    let socket_options = crate::transport::tcp::prepare(&listener, &engine);
    let local = listener.local_addr()?;
    info!(addr = %local, tls = tls.is_some(), "listening on {local}");
    let tracker = TaskTracker::new();
    // Started after the line above: their own "… listening on" lines come later, and tools
    // (the test harness) take the first such line for the student port.
    let frontend_tasks: Vec<_> = frontends
        .into_iter()
        .map(|f| {
            tokio::spawn(f.start(FrontendContext {
                engine: Arc::clone(&engine),
                tls: tls.clone(),
                tracker: tracker.clone(),
            }))
        })
        .collect();
    // Listener bound, CSV open and checked, token loaded: ready for systemd.
    crate::ops::notify::ready(&engine);

    // On a worker thread, not the caller's (block_on's) thread: spawned connection tasks then
    // go to the worker's local queue instead of waking another thread through the shared one.
    let accepting = tokio::spawn(crate::transport::tcp::accept_loop(
        listener,
        socket_options,
        Arc::clone(&engine),
        tracker.clone(),
        tls,
    ));
    tokio::select! {
        _ = accepting => {}
        () = crate::transport::admin_socket::serve(&admin_listener, &engine, &tracker) => {}
        () = shutdown => info!("shutdown signal received"),
        () = cancel.cancelled() => {}
    }
    info!("shutting down: no new connections, telling clients");
    crate::ops::notify::stopping();
    cancel.cancel();
    // The accept loop ends on the cancellation and drops the listener.
    let _ = engine.signals.send(Signal::Shutdown);
    drop(admin_listener);
    tracker.close();
    tracker.wait().await;
    let _ = heartbeat_task.await;
    if let Some(task) = cluster_task {
        let _ = task.await;
    }
    // A close under way finishes its records before the store's last commit.
    for task in closer_tasks {
        let _ = task.await;
    }
    let _ = control_task.await;
    let _ = watchdog_task.await;
    for task in frontend_tasks {
        let _ = task.await;
    }
    // The last handle to the store goes with the engine; the writer then drains and syncs.
    drop(engine);
    if let Err(e) = writer_task.await {
        error!(error = %e, "writer task failed");
    }
    info!("shutdown complete");
    Ok(())
}

/// Sends `EVENT HEARTBEAT` to every connection every `heartbeat` (read afresh each time, so a
/// reload takes effect from the next beat).
async fn heartbeat_loop(engine: Arc<Engine>) {
    loop {
        let period = engine.live().heartbeat;
        tokio::select! {
            () = tokio::time::sleep(period) => {
                let line = ServerLine::Event(Event::Heartbeat(Timestamp::now())).encode();
                // No receivers (no connections) is fine.
                let _ = engine.signals.send(Signal::Heartbeat(line));
            }
            () = engine.shutdown.cancelled() => break,
        }
    }
}

/// Applies [`Control`] requests until shutdown.
async fn control_loop(engine: Arc<Engine>, mut controls: mpsc::Receiver<Control>) {
    loop {
        let control = tokio::select! {
            c = controls.recv() => c,
            () = engine.shutdown.cancelled() => None,
        };
        let Some(Control::Reload(new, reply)) = control else {
            break;
        };
        crate::ops::notify::reloading();
        let result = crate::ops::reload::apply(&engine, &new).await;
        crate::ops::notify::ready(&engine);
        let _ = reply.send(result);
    }
}
