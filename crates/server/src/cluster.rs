//! Several daemons as one service: the interface between this node and a cluster link (the
//! Redis bus and presence of `attendance-cluster`), so this crate needs no Redis client.
//!
//! The link is told, without waiting, of what the hub does ([`Relay`]: a line announced to a
//! class, a class formed or emptied, a seat given back), and is asked, awaited, what only the
//! cluster knows ([`ClusterLink`]: whether a roll is held on another node, a seat by its resume
//! token, whether this node still holds a seat, the service's client count). It acts on this
//! node through a [`ClusterHost`]: lines from other nodes for a class's members, seats this
//! node lost, the seats to renew.
//!
//! When the link cannot reach its store, every question is answered locally (the session
//! falls back to the hub alone): the link logs it and tells admins `EVENT DEGRADED`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use attendance_protocol::{ClassKey, Event, Field, ServerLine, StudentId, Text, Token};
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::engine::{Engine, Signal};
use crate::ops::health::Dependency;

/// The cluster could not answer (its store is unreachable or timed out): the caller decides
/// locally.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cluster unavailable: {0}")]
pub struct ClusterError(pub String);

/// A seat a JOIN asks the cluster for.
#[derive(Debug, Clone)]
pub struct SeatClaim {
    /// The student.
    pub id: StudentId,
    /// The seat's resume token (0: none).
    pub token: u128,
    /// Time it served already (earlier today).
    pub served: Duration,
    /// The class length it must serve.
    pub length: Duration,
    /// How long a dropped seat waits for a resume.
    pub grace: Duration,
}

/// The cluster's answer to a [`SeatClaim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The seat is this node's now (it was free, or already this node's).
    Granted,
    /// Another node holds the roll.
    Taken,
}

/// A seat another node held, taken over by a `RESUME` on this one.
#[derive(Debug, Clone)]
pub struct RemoteSeat {
    /// The student.
    pub id: StudentId,
    /// Time already served.
    pub served: Duration,
    /// The class length it must serve.
    pub length: Duration,
}

/// A seat this node holds, as the lease renewal sends it.
#[derive(Debug, Clone)]
pub struct LeaseSeat {
    /// The student.
    pub id: StudentId,
    /// Its resume token (0: none).
    pub token: u128,
    /// Time served so far (until the drop, for a parked seat).
    pub served: Duration,
    /// The class length.
    pub length: Duration,
    /// Parked after a drop (no connection holds it).
    pub parked: bool,
    /// How long a dropped seat of its class waits for a resume.
    pub grace: Duration,
}

/// What the hub tells the link as it happens. Called under the hub's lock or on a session's
/// path: implementations only queue (never block, never wait).
pub trait Relay: Send + Sync + 'static {
    /// `line` (encoded, `\n` included) was announced to `class`'s members here; the members on
    /// other nodes are to hear it too.
    fn sent(&self, class: &ClassKey, line: &Bytes);
    /// `class` has its first member on this node.
    fn opened(&self, class: &ClassKey);
    /// `class` has no member left on this node.
    fn closed(&self, class: &ClassKey);
    /// The seat of `roll` in `class` with `token` was given back here.
    fn released(&self, class: &ClassKey, roll: &Field, token: u128);
}

/// The questions only the cluster can answer, and the link's own state.
pub trait ClusterLink: Relay {
    /// The link's work (the bus, the lease renewal), acting on this node through `host`; it
    /// ends after the node's shutdown, having given back what it could.
    fn run(&self, host: ClusterHost) -> BoxFuture<'static, ()>;
    /// Claims `seat` for this node.
    fn claim<'a>(&'a self, seat: &'a SeatClaim) -> BoxFuture<'a, Result<Claim, ClusterError>>;
    /// Takes over the seat of `token` held (or left) by another node; `None` if no seat has
    /// that token (never issued, its grace ran out, or the roll was taken since).
    fn resume(&self, token: u128) -> BoxFuture<'_, Result<Option<RemoteSeat>, ClusterError>>;
    /// Whether this node still holds the seat of `id` (and renews it): `false` once it was
    /// lost (this node's lease ran out and another node took the roll).
    fn confirm<'a>(&'a self, seat: &'a LeaseSeat) -> BoxFuture<'a, Result<bool, ClusterError>>;
    /// Connections open on every node, with this node's `local` count as it is now.
    fn clients(&self, local: u64) -> BoxFuture<'_, Result<u64, ClusterError>>;
    /// What it is, for logs (`redis://host:port`, without a password), and this node's id.
    fn describe(&self) -> String;
    /// Its state for `/healthz` and the metrics.
    fn health(&self) -> Arc<Dependency>;
}

/// This node, as the link acts on it. Holds the engine weakly: the link lives in the engine.
#[derive(Debug, Clone)]
pub struct ClusterHost {
    engine: Weak<Engine>,
    shutdown: CancellationToken,
}

impl ClusterHost {
    pub(crate) fn new(engine: &Arc<Engine>) -> Self {
        Self {
            engine: Arc::downgrade(engine),
            shutdown: engine.shutdown.clone(),
        }
    }

    /// Cancelled when the daemon shuts down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Gives `class`'s members on this node `line` from another node (nothing if it has none).
    pub fn deliver(&self, class: &ClassKey, line: Bytes) {
        if let Some(engine) = self.engine.upgrade() {
            engine.hub.deliver(class, line);
        }
    }

    /// Tells `class`'s members on this node that they missed `n` lines from other nodes.
    pub fn lagged(&self, class: &ClassKey, n: u64) {
        if let Some(engine) = self.engine.upgrade() {
            engine.metrics.lagged(n);
            engine
                .hub
                .deliver(class, ServerLine::Event(Event::Lagged(n)).encode());
        }
    }

    /// This node lost the seat of `roll` in `class` to another node: the connection holding
    /// it (if any) is told `EVENT REPLACED` and closed, and nothing more is done for it here;
    /// `token` (if not 0) must be the seat's. Whether a seat was given up.
    pub fn evict(&self, class: &ClassKey, roll: &Field, token: u128) -> bool {
        self.engine
            .upgrade()
            .is_some_and(|e| e.hub.evict(class, roll, token))
    }

    /// Every seat this node holds (live or parked), for the lease renewal.
    pub fn lease_seats(&self) -> Vec<LeaseSeat> {
        self.engine
            .upgrade()
            .map(|e| lease_seats(&e, None))
            .unwrap_or_default()
    }

    /// Every class with members on this node (for a resubscribe).
    pub fn classes(&self) -> Vec<ClassKey> {
        self.engine
            .upgrade()
            .map(|e| e.hub.snapshot().into_iter().map(|(k, _)| k).collect())
            .unwrap_or_default()
    }

    /// Connections open on this node now.
    pub fn open_connections(&self) -> usize {
        self.engine.upgrade().map_or(0, |e| e.open_connections())
    }

    /// The heartbeat period (live setting).
    pub fn heartbeat(&self) -> Duration {
        self.engine
            .upgrade()
            .map_or(Duration::from_secs(60), |e| e.live().heartbeat)
    }

    /// The cluster went down (`Some(why)`: answers are local only) or came back (`None`): told
    /// to the connections of the admin socket as `EVENT DEGRADED`.
    pub fn degraded(&self, why: Option<&str>) {
        let Some(engine) = self.engine.upgrade() else {
            return;
        };
        let text = match why {
            Some(why) => {
                warn!(
                    reason = why,
                    "CLUSTER DEGRADED: Redis unreachable; announcements stay on this node and ALREADY is checked on this node only"
                );
                format!("down: {why}; announcements and ALREADY are local to this node")
            }
            None => "up: Redis is back; seats reconciled".to_owned(),
        };
        let Ok(dependency) = Token::new("redis") else {
            return;
        };
        let text = Text::lossy(&text);
        let event = match why {
            Some(_) => Event::Degraded { dependency, text },
            None => Event::Recovered { dependency, text },
        };
        let line = ServerLine::Event(event).encode();
        let _ = engine.signals.send(Signal::Admin(line));
    }
}

/// `link` as the hub's relay.
pub(crate) fn as_relay(link: Arc<dyn ClusterLink>) -> Arc<dyn Relay> {
    link
}

/// The seats of `engine`'s hub (only `id`'s, if given), with each class's resume grace.
pub(crate) fn lease_seats(engine: &Engine, id: Option<&StudentId>) -> Vec<LeaseSeat> {
    let default_grace = engine.live().resume_grace;
    let mut seats = engine.hub.lease_seats(id);
    for s in &mut seats {
        s.grace = engine
            .rules
            .get(&s.id.class)
            .and_then(|r| r.grace)
            .unwrap_or(default_grace);
    }
    seats
}
