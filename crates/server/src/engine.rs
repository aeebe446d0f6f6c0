//! The engine: the state every transport and session shares, and the one narrow read API
//! observers (the admin reports, the metrics, the systemd status, the coming dashboard) use.
//!
//! Observers never reach into the hub or the store: they read a [`Snapshot`] or the member list
//! through [`Engine`]'s methods, and follow what happens in the classes through one stream,
//! [`Engine::subscribe`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use attendance_protocol::{ClassKey, StudentId, Text, Timestamp, Transport};
use bytes::Bytes;
use tokio::sync::{Semaphore, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin::AdminToken;
use crate::attendance::seconds_left;
use crate::hub::Classes;
use crate::ops::config::{Live, Startup};
use crate::ops::metrics::Metrics;
use crate::store::Store;
use crate::transport::proxy::ProxyProtocol;

/// What every connection is told at once.
#[derive(Debug, Clone)]
pub(crate) enum Signal {
    /// `EVENT HEARTBEAT`, encoded once for everyone.
    Heartbeat(Bytes),
    /// The server is shutting down.
    Shutdown,
    /// A line for the admin socket's connections only (`EVENT DEGRADED`).
    Admin(Bytes),
}

/// The cluster link, if this node is one of several.
#[derive(Clone)]
pub(crate) struct Cluster(pub(crate) Arc<dyn crate::cluster::ClusterLink>);

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Cluster").field(&self.0.describe()).finish()
    }
}

/// Something that happened in a class, for observers (the one event stream).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClassEvent {
    /// A student took a seat.
    Joined {
        /// Who.
        id: StudentId,
        /// From where.
        addr: Option<IpAddr>,
        /// Over which transport.
        transport: Transport,
        /// When.
        at: Timestamp,
        /// Whole seconds the student must stay (what `OK JOIN` told them); 0 if marked today.
        seconds_left: u64,
        /// The student's mark of today, if already made (on an earlier connection).
        marked_at: Option<Timestamp>,
    },
    /// A student left a seat (quit, dropped, or the connection moved on to the next student).
    Left {
        /// Who.
        id: StudentId,
    },
    /// A student's mark is on disk (first mark of the day).
    Marked {
        /// Who.
        id: StudentId,
        /// When the mark was made.
        at: Timestamp,
    },
    /// A student said something to the class (`SAY`).
    Said {
        /// Who.
        id: StudentId,
        /// What.
        text: Text,
    },
    /// A student's connection fell behind the class's announcements (`EVENT LAGGED`).
    Lagged {
        /// Who.
        id: StudentId,
        /// Announcements it missed.
        skipped: u64,
    },
    /// A check-in was flagged for the teacher (several rolls from one address, one roll from
    /// two).
    Flagged {
        /// What was seen.
        flag: crate::attendance::flags::Flag,
        /// The student whose check-in it was: the others the flag names are found by roll.
        id: StudentId,
    },
}

/// Events an observer may fall behind by before it is told it lagged.
const EVENTS: usize = 1024;

/// The daemon's live numbers, read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Connections open now (every transport).
    pub connections: usize,
    /// Every class with members, and how many (unsorted).
    pub classes: Vec<(ClassKey, usize)>,
    /// Marks on disk for today (in the configured zone).
    pub marks_today: usize,
    /// Marks waiting for the store.
    pub store_queue: usize,
    /// How long the last sync of a batch took.
    pub last_fsync: Option<Duration>,
    /// Time since the daemon started.
    pub uptime: Duration,
}

impl Snapshot {
    /// Students seated, over all classes.
    pub fn joined(&self) -> usize {
        self.classes.iter().map(|(_, n)| n).sum()
    }
}

/// A seated student, as the admin `WHO` and the dashboard list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatView {
    /// The student.
    pub id: StudentId,
    /// Whole seconds the student must still stay; 0 once marked.
    pub seconds_left: u64,
    /// How the student is connected.
    pub transport: Transport,
    /// The student's mark of today, if made.
    pub marked_at: Option<Timestamp>,
}

/// State shared by every connection.
#[derive(Debug)]
pub struct Engine {
    /// The settings fixed at start.
    pub(crate) startup: Startup,
    /// The settings a reload replaces, read without locking.
    live: ArcSwap<Live>,
    pub(crate) hub: Classes,
    pub(crate) store: Store,
    /// Prometheus counters.
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) admin: AdminToken,
    /// The configured classes' rules.
    pub(crate) rules: crate::attendance::rules::ClassRules,
    /// Outside services the daemon depends on (the PostgreSQL store).
    dependencies: Vec<Arc<crate::ops::health::Dependency>>,
    /// The PROXY protocol's trusted balancers, if it is on.
    pub(crate) proxy: Option<ProxyProtocol>,
    /// The other nodes, through Redis, if this node is one of several.
    pub(crate) cluster: Option<Cluster>,
    /// Check-ins flagged for the teacher.
    pub(crate) flags: crate::attendance::flags::Flags,
    /// Server-wide signals to every connection: heartbeats and shutdown.
    pub(crate) signals: broadcast::Sender<Signal>,
    /// The greeting, encoded once.
    pub(crate) hello: Bytes,
    pub(crate) shutdown: CancellationToken,
    /// One permit per open connection, over every transport.
    pub(crate) connections: Arc<Semaphore>,
    events: broadcast::Sender<ClassEvent>,
    /// The next connection id, shared by every transport (the hub tells seats apart by it).
    next_conn: std::sync::atomic::AtomicU64,
}

/// What [`Engine::new`] is built from.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) startup: Startup,
    pub(crate) live: Live,
    pub(crate) store: Store,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) admin: AdminToken,
    pub(crate) rules: crate::attendance::rules::ClassRules,
    pub(crate) proxy: Option<ProxyProtocol>,
    pub(crate) shutdown: CancellationToken,
    /// Outside services the daemon depends on (the PostgreSQL store), for `/healthz`.
    pub(crate) dependencies: Vec<Arc<crate::ops::health::Dependency>>,
    /// The cluster link, if any.
    pub(crate) cluster: Option<Cluster>,
}

impl Engine {
    pub(crate) fn new(parts: Parts) -> Self {
        let Parts {
            startup,
            live,
            store,
            metrics,
            admin,
            rules,
            proxy,
            shutdown,
            mut dependencies,
            cluster,
        } = parts;
        let events = broadcast::channel(EVENTS).0;
        let hub = Classes::new(live.outbound_queue, events.clone());
        if let Some(Cluster(link)) = &cluster {
            dependencies.push(link.health());
            hub.set_relay(crate::cluster::as_relay(Arc::clone(link)));
        }
        Self {
            connections: Arc::new(Semaphore::new(startup.max_connections)),
            hub,
            cluster,
            store,
            metrics,
            admin,
            rules,
            proxy,
            dependencies,
            flags: crate::attendance::flags::Flags::default(),
            signals: broadcast::channel(4).0,
            hello: crate::session::hello_line(),
            shutdown,
            live: ArcSwap::from_pointee(live),
            startup,
            events,
            next_conn: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// A connection id no other connection of any transport has.
    pub fn next_conn_id(&self) -> crate::session::ConnId {
        self.next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The rotating check-in code of `class` now, and the seconds until it changes, if the
    /// class has one (computed from the server's clock only).
    pub fn class_code(&self, class: &ClassKey) -> Option<(String, i64)> {
        let secret = self.rules.get(class)?.secret.as_ref()?;
        let now = crate::attendance::rules::jiff_now(Timestamp::now()).as_second();
        let code = crate::attendance::code::code_at(secret, now);
        Some((
            crate::attendance::code::format_code(code),
            crate::attendance::code::seconds_to_next(now),
        ))
    }

    /// The roster of `class` as (roll, name), sorted by roll; empty if it has none.
    pub fn class_roster(&self, class: &ClassKey) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .rules
            .get(class)
            .and_then(|r| r.roster.as_ref())
            .map(|r| {
                r.students()
                    .map(|(roll, name)| (roll.to_owned(), name.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        all.sort();
        all
    }

    /// The row chain's head (the hash of the CSV's last row, as hex) and the number of rows.
    pub fn chain_head(&self) -> Option<(String, u64)> {
        self.store
            .head()
            .map(|(h, rows)| (crate::store::chain::hex(&h), rows))
    }

    /// The live settings as they are now.
    pub fn live(&self) -> arc_swap::Guard<Arc<Live>> {
        self.live.load()
    }

    /// Replaces the live settings (a reload); the hub reads its ring size from them.
    pub(crate) fn set_live(&self, live: Live) {
        self.hub.set_backlog(live.outbound_queue);
        self.live.store(Arc::new(live));
    }

    /// The settings fixed at start.
    pub fn startup(&self) -> &Startup {
        &self.startup
    }

    /// The PROXY protocol as configured, or `None` when it is off (the default).
    pub fn proxy_protocol(&self) -> Option<&ProxyProtocol> {
        self.proxy.as_ref()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.startup.max_connections - self.connections.available_permits()
    }

    /// The live numbers.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            connections: self.open_connections(),
            classes: self.hub.snapshot(),
            marks_today: self.store.marks_today(Timestamp::now()),
            store_queue: self.store.queued(),
            last_fsync: self.metrics.last_fsync(),
            uptime: self.metrics.uptime(),
        }
    }

    /// Durable marks of today (in the configured zone), per class, sorted by class.
    pub fn class_marks_today(&self) -> Vec<(ClassKey, usize)> {
        let mut marks = self.store.class_marks_today(Timestamp::now());
        marks.sort();
        marks
    }

    /// The local day (in the configured zone) that `at` belongs to, as marks count it.
    pub fn local_date(&self, at: Timestamp) -> jiff::civil::Date {
        self.store.local_date(at)
    }

    /// Every seated student (of `class` only, if given), sorted by class, name and roll, with
    /// the seconds each must still stay.
    pub fn seats(&self, class: Option<&ClassKey>) -> Vec<SeatView> {
        let now = Instant::now();
        let today = Timestamp::now();
        self.hub
            .members(class)
            .into_iter()
            .map(|m| {
                let marked_at = self.store.marked_at(&m.id.class, &m.id.roll, today);
                SeatView {
                    seconds_left: if marked_at.is_some() {
                        0
                    } else {
                        seconds_left(m.due, now)
                    },
                    id: m.id,
                    transport: m.transport,
                    marked_at,
                }
            })
            .collect()
    }

    /// The outside services the daemon depends on, with their last seen state.
    pub fn dependencies(&self) -> &[Arc<crate::ops::health::Dependency>] {
        &self.dependencies
    }

    /// The metrics in the OpenMetrics text format, with the gauges read from the live state
    /// (what `/metrics` serves).
    pub fn metrics_text(&self) -> String {
        for d in &self.dependencies {
            self.metrics.set_dependency(d);
        }
        let snap = self.snapshot();
        self.metrics.set_gauges(
            snap.connections,
            snap.joined(),
            snap.classes.len(),
            snap.store_queue,
        );
        self.metrics.encode()
    }

    /// Whether `candidate` is the admin token (compared in constant time).
    pub fn is_admin_token(&self, candidate: &str) -> bool {
        self.admin.verify(candidate)
    }

    /// The token cancelled when the daemon shuts down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// A permit for one more connection under `max_connections` (every transport shares the
    /// limit), or `None` at the limit. Held for as long as the connection is open.
    pub fn try_admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.connections).try_acquire_owned().ok()
    }

    /// The metrics, for transports that count refusals.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The stream of class events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClassEvent> {
        self.events.subscribe()
    }

    /// Tells observers, if any listen.
    pub(crate) fn publish(&self, make: impl FnOnce() -> ClassEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(make());
        }
    }
}

/// An engine for unit tests: the given settings, the admin token `secret`, and a store over a
/// CSV in a private temporary directory (kept as long as the returned guard); `wrap` may wrap
/// the CSV (to inject faults).
#[cfg(test)]
pub(crate) async fn for_tests(
    config: crate::Config,
    wrap: impl FnOnce(crate::store::CsvSink) -> crate::store::CsvSink,
) -> (Arc<Engine>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (startup, live) = config.split();
    let (csv, index) = crate::store::open_csv(
        &dir.path().join("a.csv"),
        startup.fsync,
        startup.time_zone(),
    )
    .await
    .expect("csv");
    let metrics = Arc::new(Metrics::new());
    let (store, _task) = crate::store::spawn(
        crate::store::DaemonSink::Csv(wrap(csv)),
        index,
        Arc::clone(&metrics),
    );
    let startup_class = startup.class.clone();
    let engine = Engine::new(Parts {
        startup,
        live,
        store,
        metrics,
        rules: crate::attendance::rules::ClassRules::load(&startup_class, dir.path())
            .expect("class rules"),
        admin: AdminToken::from_secret("secret"),
        proxy: None,
        shutdown: CancellationToken::new(),
        dependencies: Vec::new(),
        cluster: None,
    });
    (Arc::new(engine), dir)
}
