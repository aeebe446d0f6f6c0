//! attendanced as one of several nodes: the live bus and the presence of the cluster, on Redis
//! (`cluster.redis = "redis://host:6379"`).
//!
//! - **Bus** ([`bus`]): each node subscribes to a class's channel only while it has members of
//!   that class, and publishes each line its members are told once, pre-encoded, with a
//!   sequence number per class; a node that sees a number skipped tells its members
//!   `EVENT LAGGED n` (Redis pub/sub delivers at most once: a gap is told, never silent). A node
//!   proves its subscription alive with a probe through its own channel every second, and
//!   reconnects and resubscribes when the probe does not come back.
//! - **Presence** ([`presence`]): each start of a node is a fresh owner `<node>#<incarnation>`
//!   (the incarnation from one `INCR`), so a restarted node never inherits its previous life's
//!   seats. A seat is a key `"<owner> <token>"` that expires after the lease unless its owner
//!   renews it; claims, renewals, releases and resumes are Lua scripts ([`scripts`]), each one
//!   atomic step. A node that comes back after its lease ran out (paused, cut off) keeps only
//!   the seats nobody else took, and gives up the others (`EVENT REPLACED`).
//! - **Down**: while Redis cannot be reached every question is answered by the node alone
//!   (announcements stay local, ALREADY is local), the node logs it loudly and tells the admin
//!   socket `EVENT DEGRADED`; when the probe comes back, every local seat is reconciled at once.

mod bus;
mod keys;
mod presence;
mod scripts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use attendance_protocol::{ClassKey, Field, FieldKind, StudentId};
use attendance_server::cluster::{
    Claim, ClusterError, ClusterHost, ClusterLink, LeaseSeat, Relay, RemoteSeat, SeatClaim,
};
use attendance_server::hub::format_token;
use attendance_server::ops::health::Dependency;
use bytes::Bytes;
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Notify, mpsc};
use tracing::{info, warn};

use crate::bus::Out;
use crate::scripts::Scripts;

/// Longest wait for one Redis command; past it the node answers alone.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Lines queued for publishing before further ones are dropped (and told as a gap).
const OUT_QUEUE: usize = 16_384;

/// The cluster's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Redis URL.
    pub url: String,
    /// This node's name (`host:port`).
    pub node: String,
    /// How long a seat is held without its owner renewing it.
    pub lease: Duration,
}

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The URL is not a Redis URL.
    #[error("cluster.redis {0}: {1}")]
    Url(String, String),
}

/// The link to the other nodes.
pub struct RedisCluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("owner", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    /// This start of this node: `<node>#<incarnation>`.
    pub(crate) owner: String,
    pub(crate) client: redis::Client,
    pub(crate) conn: ConnectionManager,
    pub(crate) scripts: Scripts,
    pub(crate) lease: Duration,
    shown: String,
    /// Lines, evictions and releases for the publisher task.
    pub(crate) out: mpsc::Sender<Out>,
    pub(crate) out_rx: Mutex<Option<mpsc::Receiver<Out>>>,
    /// Lines of each class dropped because the queue was full (added to its sequence).
    pub(crate) dropped: Mutex<HashMap<ClassKey, u64>>,
    /// The class channels the node wants (channel → class), and a wake-up when they change.
    pub(crate) desired: Mutex<HashMap<String, ClassKey>>,
    pub(crate) desired_changed: Notify,
    pub(crate) health: Arc<Dependency>,
    down: AtomicBool,
    /// Woken when Redis comes back: the seats are reconciled at once.
    pub(crate) reconcile: Notify,
    pub(crate) host: OnceLock<ClusterHost>,
}

/// Connects to the cluster as a new start of `options.node`: a fresh incarnation, so nothing
/// of a previous life is inherited. Redis being down is not fatal: the node starts alone
/// (degraded) and joins the cluster when Redis is back.
///
/// # Errors
/// [`SetupError`] if the URL is not a Redis URL.
pub async fn connect(options: Options) -> Result<RedisCluster, SetupError> {
    let shown = redact(&options.url);
    let client = redis::Client::open(options.url.as_str())
        .map_err(|e| SetupError::Url(shown.clone(), e.to_string()))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|e| SetupError::Url(shown.clone(), e.to_string()))?;
    let mut c = conn.clone();
    let incarnation: Result<Result<u64, _>, _> = tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("INCR")
            .arg(keys::INCARNATION)
            .query_async::<u64>(&mut c),
    )
    .await;
    let owner = match incarnation {
        Ok(Ok(n)) => format!("{}#{n}", options.node),
        other => {
            // Unique all the same: the owner only has to differ from every other start.
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "no answer".to_owned(),
            };
            warn!(redis = %shown, error = %why, "CLUSTER DEGRADED at start: Redis unreachable; this node runs alone until it is back");
            format!("{}#r{:016x}", options.node, random_u64())
        }
    };
    info!(redis = %shown, owner = %owner, lease = ?options.lease, "cluster node");
    let (out, out_rx) = mpsc::channel(OUT_QUEUE);
    Ok(RedisCluster {
        inner: Arc::new(Inner {
            owner,
            client,
            conn,
            scripts: Scripts::new(),
            lease: options.lease,
            shown,
            out,
            out_rx: Mutex::new(Some(out_rx)),
            dropped: Mutex::new(HashMap::new()),
            desired: Mutex::new(HashMap::new()),
            desired_changed: Notify::new(),
            health: Arc::new(Dependency::new("redis")),
            down: AtomicBool::new(false),
            reconcile: Notify::new(),
            host: OnceLock::new(),
        }),
    })
}

/// `check-config`'s look at the Redis URL: it answers, and with which version.
///
/// # Errors
/// A message saying why not.
pub async fn check(url: &str) -> Result<String, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let work = async {
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("INFO")
            .arg("server")
            .query_async::<String>(&mut c)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(5), work).await {
        Ok(Ok(info)) => Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5s".to_owned()),
    }
}

/// `url` without its password, for logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Inner {
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Redis failed us: the first failure makes the node degraded (logged, told to admins).
    pub(crate) fn failed(&self, why: &str) {
        self.health.failed(why.to_owned());
        if !self.down.swap(true, Ordering::Relaxed) {
            if let Some(host) = self.host.get() {
                host.degraded(Some(why));
            }
        }
    }

    /// The probe came back in `took`: the first success after a failure reconciles the seats.
    pub(crate) fn probed(&self, took: Duration) {
        self.health.ok(took);
        if self.down.swap(false, Ordering::Relaxed) {
            info!("cluster: Redis is back; reconciling this node's seats");
            self.reconcile.notify_one();
        }
    }

    /// `f` within [`COMMAND_TIMEOUT`]; a failure marks Redis down.
    pub(crate) async fn within<T>(
        &self,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ClusterError> {
        match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let why = e.to_string();
                self.failed(&why);
                Err(ClusterError(why))
            }
            Err(_) => {
                let why = "no answer within 1s".to_owned();
                self.failed(&why);
                Err(ClusterError(why))
            }
        }
    }

    fn unavailable(&self) -> Result<(), ClusterError> {
        if self.is_down() {
            Err(ClusterError("Redis is down".to_owned()))
        } else {
            Ok(())
        }
    }

    fn ttl(&self, grace: Duration) -> Duration {
        self.lease + grace
    }

    async fn claim(&self, seat: &SeatClaim) -> Result<Claim, ClusterError> {
        self.unavailable()?;
        let token = token_arg(seat.token);
        let mut c = self.conn.clone();
        let mut call = self.scripts.claim.prepare_invoke();
        call.key(keys::seat(&seat.id.class, &seat.id.roll))
            .key(keys::token(&token))
            .arg(&self.owner)
            .arg(&token)
            .arg(ms(self.lease))
            .arg(ms(self.ttl(seat.grace)))
            .arg(seat.id.class.course.as_str())
            .arg(seat.id.class.division.as_str())
            .arg(seat.id.name.as_str())
            .arg(seat.id.roll.as_str())
            .arg(ms(seat.served))
            .arg(ms(seat.length));
        let answer: i64 = self.within(call.invoke_async(&mut c)).await?;
        Ok(if answer == 0 {
            Claim::Taken
        } else {
            Claim::Granted
        })
    }

    async fn resume(&self, token: u128) -> Result<Option<RemoteSeat>, ClusterError> {
        self.unavailable()?;
        let token = token_arg(token);
        let mut c = self.conn.clone();
        let mut call = self.scripts.resume.prepare_invoke();
        call.key(keys::token(&token))
            .arg(&self.owner)
            .arg(ms(self.lease))
            .arg(keys::SEAT)
            .arg(&token);
        let got: Option<Vec<String>> = self.within(call.invoke_async(&mut c)).await?;
        let Some(f) = got else {
            return Ok(None);
        };
        let [course, division, name, roll, served, length, previous] = f.as_slice() else {
            return Ok(None);
        };
        let field = |kind, s: &str| Field::new(kind, s).ok();
        let (Some(course), Some(division), Some(name), Some(roll)) = (
            field(FieldKind::Course, course),
            field(FieldKind::Division, division),
            field(FieldKind::Name, name),
            field(FieldKind::Roll, roll),
        ) else {
            return Ok(None);
        };
        let id = StudentId {
            class: ClassKey { course, division },
            name,
            roll,
        };
        let millis = |s: &str| Duration::from_millis(s.parse().unwrap_or(0));
        info!(student = %id, from = %previous, "seat resumed from another node");
        // The node that held it gives it up when it hears this (or at its next renewal).
        self.enqueue(Out::Evict {
            class: id.class.clone(),
            roll: id.roll.clone(),
            token,
        });
        Ok(Some(RemoteSeat {
            id,
            served: millis(served),
            length: millis(length),
        }))
    }

    /// Renews `seats` (in chunks), returning those lost to another owner.
    pub(crate) async fn renew(&self, seats: &[LeaseSeat]) -> Result<Vec<LeaseSeat>, ClusterError> {
        let mut lost = Vec::new();
        for chunk in seats.chunks(256) {
            let mut c = self.conn.clone();
            let mut call = self.scripts.renew.prepare_invoke();
            call.arg(&self.owner).arg(ms(self.lease));
            for s in chunk {
                let token = token_arg(s.token);
                call.key(keys::seat(&s.id.class, &s.id.roll))
                    .key(keys::token(&token))
                    .arg(&token)
                    .arg(ms(self.ttl(s.grace)))
                    .arg(ms(s.served));
            }
            let answers: Vec<i64> = self.within(call.invoke_async(&mut c)).await?;
            lost.extend(
                chunk
                    .iter()
                    .zip(answers)
                    .filter(|(_, ok)| *ok == 0)
                    .map(|(s, _)| s.clone()),
            );
        }
        Ok(lost)
    }

    async fn clients(&self, local: u64) -> Result<u64, ClusterError> {
        self.unavailable()?;
        let mut c = self.conn.clone();
        let mut call = self.scripts.clients.prepare_invoke();
        call.key(keys::NODES).arg(keys::NODE).arg(&self.owner);
        let others: u64 = self.within(call.invoke_async(&mut c)).await?;
        Ok(local + others)
    }

    /// Queues `out` for the publisher; a full queue drops it (a line dropped is told to the
    /// other nodes' members as a gap).
    pub(crate) fn enqueue(&self, out: Out) {
        if let Err(mpsc::error::TrySendError::Full(Out::Line { class, .. })) =
            self.out.try_send(out)
        {
            *lock(&self.dropped).entry(class).or_insert(0) += 1;
        }
    }
}

/// A token as the keys and scripts spell it (`0`: none).
fn token_arg(token: u128) -> String {
    if token == 0 {
        "0".to_owned()
    } else {
        format_token(token)
    }
}

impl Relay for RedisCluster {
    fn sent(&self, class: &ClassKey, line: &Bytes) {
        // Queued even while Redis is down: the publisher spends the line's number without
        // sending it, so the other nodes' members learn of the gap when it is back.
        self.inner.enqueue(Out::Line {
            class: class.clone(),
            line: line.clone(),
        });
    }

    fn opened(&self, class: &ClassKey) {
        lock(&self.inner.desired).insert(keys::class_channel(class), class.clone());
        self.inner.desired_changed.notify_one();
    }

    fn closed(&self, class: &ClassKey) {
        lock(&self.inner.desired).remove(&keys::class_channel(class));
        self.inner.desired_changed.notify_one();
        self.inner.enqueue(Out::Closed(class.clone()));
    }

    fn released(&self, class: &ClassKey, roll: &Field, token: u128) {
        self.inner.enqueue(Out::Release {
            class: class.clone(),
            roll: roll.clone(),
            token: token_arg(token),
        });
    }
}

impl ClusterLink for RedisCluster {
    fn run(&self, host: ClusterHost) -> BoxFuture<'static, ()> {
        let inner = Arc::clone(&self.inner);
        let _ = inner.host.set(host.clone());
        Box::pin(async move {
            let rx = lock(&inner.out_rx).take();
            let publisher = rx.map(|rx| tokio::spawn(bus::publish(Arc::clone(&inner), rx)));
            let subscriber = tokio::spawn(bus::subscribe(Arc::clone(&inner)));
            presence::renew_loop(&inner, &host).await;
            let _ = subscriber.await;
            if let Some(p) = publisher {
                let _ = p.await;
            }
            presence::leave(&inner, &host).await;
        })
    }

    fn claim<'a>(&'a self, seat: &'a SeatClaim) -> BoxFuture<'a, Result<Claim, ClusterError>> {
        Box::pin(self.inner.claim(seat))
    }

    fn resume(&self, token: u128) -> BoxFuture<'_, Result<Option<RemoteSeat>, ClusterError>> {
        Box::pin(self.inner.resume(token))
    }

    fn confirm<'a>(&'a self, seat: &'a LeaseSeat) -> BoxFuture<'a, Result<bool, ClusterError>> {
        Box::pin(async move {
            self.inner.unavailable()?;
            let lost = self.inner.renew(std::slice::from_ref(seat)).await?;
            Ok(lost.is_empty())
        })
    }

    fn clients(&self, local: u64) -> BoxFuture<'_, Result<u64, ClusterError>> {
        Box::pin(self.inner.clients(local))
    }

    fn describe(&self) -> String {
        format!("{} as {}", self.inner.shown, self.inner.owner)
    }

    fn health(&self) -> Arc<Dependency> {
        Arc::clone(&self.inner.health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_never_shown() {
        assert_eq!(
            redact("redis://:hunter2@db:6379/0"),
            "redis://:***@db:6379/0"
        );
        assert_eq!(redact("redis://app:hunter2@db"), "redis://app:***@db");
        assert_eq!(redact("redis://hunter2@db"), "redis://***@db");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn tokens_and_keys_are_spelled_as_the_scripts_expect() {
        assert_eq!(token_arg(0), "0");
        assert_eq!(token_arg(255), format!("{:032x}", 255));
        let class = ClassKey {
            course: Field::new(FieldKind::Course, "Net").expect("course"),
            division: Field::new(FieldKind::Division, "Div1").expect("division"),
        };
        let roll = Field::new(FieldKind::Roll, "R1").expect("roll");
        // The resume script builds the seat key from its prefix and the token's fields.
        assert_eq!(
            keys::seat(&class, &roll),
            format!("{}Net:Div1:R1", keys::SEAT)
        );
        assert_eq!(keys::class_channel(&class), "attendanced:class:Net:Div1");
    }
}
