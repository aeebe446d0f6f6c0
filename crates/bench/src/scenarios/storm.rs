//! `storm`: N clients connect first, then all JOIN one class at the same moment. Reports the
//! time until the last join is acknowledged and until every announcement has been delivered.
//!
//! Counting announcements: `EVENT JOIN` counts 1 and a coalesced `EVENT JOINS <course> <div>
//! <count>` counts `count`. A member cannot know how many it is owed — it hears of those who join
//! after it, and a burst's summary goes to every member at the window's end, so it may count
//! students who joined before it, and itself — but the class as a whole can: for every pair of
//! students the earlier one hears of the later one, individually or summed, so the announcements
//! delivered to all members together must reach n(n-1)/2.
//!
//! The end of the storm: once every join is answered, the storm is over when no announcement
//! has arrived for `--quiet` (longer than the daemon's coalescing window); the time reported is
//! that of the last announcement received. Then the total is checked against n(n-1)/2. A member
//! that got `EVENT LAGGED <n>` counts as lagging, and the total is not checked when one did.
//!
//! Redis: each client pipelines `SUBSCRIBE` and `PUBLISH` of its own number on one RESP3
//! connection (a join is a subscription plus an announcement); the join is acknowledged by the
//! `PUBLISH` reply, which says how many subscribers received it, so the owed total is exactly the
//! sum of those counts less each publisher itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use attendance_protocol::{BurstKind, Event, Reply, ServerLine};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{nanos_since, open_many};
use crate::cli::{StormArgs, TargetKind};
use crate::daemon::Settings;
use crate::line::{self, LineConn};
use crate::net;
use crate::redis;
use crate::report::{Report, Value};
use crate::resp::{self, PubSub, Value as Resp};
use crate::target::Target;

/// How often the totals are checked.
const POLL: Duration = Duration::from_millis(2);

/// The daemon's settings for `storm`: the defaults.
pub(crate) fn settings() -> Settings {
    super::base_settings()
}

/// Counters shared by the clients of a storm; times are nanoseconds since the burst began.
#[derive(Debug, Default)]
struct Shared {
    acks: AtomicUsize,
    failed: AtomicUsize,
    closed: AtomicUsize,
    /// Announcements (students) heard of, in all.
    learned: AtomicU64,
    /// Announcement lines received, in all.
    lines: AtomicU64,
    lagged_lines: AtomicU64,
    lagging: AtomicUsize,
    /// Redis: announcements owed, from the `PUBLISH` replies.
    owed: AtomicU64,
    last_ack_ns: AtomicU64,
    last_event_ns: AtomicU64,
    /// Per client: students heard of.
    per_client: Vec<AtomicU64>,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn new(clients: usize) -> Self {
        Self {
            per_client: (0..clients).map(|_| AtomicU64::new(0)).collect(),
            ..Self::default()
        }
    }

    fn ack(&self, t0: Instant) {
        self.last_ack_ns
            .fetch_max(nanos_since(t0), Ordering::Relaxed);
        // Release: whoever sees this ack also sees the `owed` added before it.
        self.acks.fetch_add(1, Ordering::Release);
    }

    fn fail(&self, why: String) {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(why);
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn learned(&self, slot: usize, count: u64, t0: Instant) {
        if let Some(mine) = self.per_client.get(slot) {
            mine.fetch_add(count, Ordering::Relaxed);
        }
        self.lines.fetch_add(1, Ordering::Relaxed);
        self.last_event_ns
            .fetch_max(nanos_since(t0), Ordering::Relaxed);
        self.learned.fetch_add(count, Ordering::Relaxed);
    }

    fn lagged(&self, skipped: u64, lagging: &mut bool, t0: Instant) {
        if !*lagging {
            *lagging = true;
            self.lagging.fetch_add(1, Ordering::Relaxed);
        }
        self.last_event_ns
            .fetch_max(nanos_since(t0), Ordering::Relaxed);
        self.lagged_lines.fetch_add(skipped, Ordering::Relaxed);
    }
}

enum Conn {
    Daemon(LineConn),
    Redis(redis::Conn),
}

/// One storm client's identity.
struct Who {
    /// Its place in [`Shared::per_client`].
    slot: usize,
    /// Its number (Redis: the payload it publishes).
    index: usize,
    /// Its daemon identifier.
    id: String,
    /// Its Redis channel.
    channel: String,
}

/// How the wait for the storm ended.
enum Outcome {
    /// Every join answered, then quiet; the last announcement came at this time.
    Settled(Duration),
    /// The run's timeout passed first.
    TimedOut,
}

/// Runs `storm` against `target`.
///
/// # Errors
/// If the clients do not fit the descriptor limit; failures during the run are problems in the
/// report.
pub(crate) async fn run(args: &StormArgs, target: &mut Target) -> anyhow::Result<Report> {
    net::ensure_fits(args.clients)?;
    let run_id = super::run_id();
    let (kind, addr) = (target.kind, target.addr);
    let opened = open_many(
        args.clients,
        args.common.connect_concurrency,
        args.common.timeout,
        |i| async move { connect(kind, addr, i).await },
    )
    .await;
    let n = opened.conns.len();

    let shared = Arc::new(Shared::new(n));
    let stop = CancellationToken::new();
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let mut tasks = JoinSet::new();
    for (slot, (index, conn)) in opened.conns.into_iter().enumerate() {
        let (shared, stop, go) = (shared.clone(), stop.clone(), go_rx.clone());
        let who = Who {
            slot,
            index,
            id: format!("Storm{run_id}_A_S{index}_R{index}"),
            channel: format!("storm:{run_id}"),
        };
        tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = client(conn, who, go, &shared) => {}
            }
        });
    }
    // Let every client reach the starting line before the gun.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    let _ = go_tx.send(Some(t0));

    let deadline = t0 + args.common.timeout;
    let outcome = loop {
        tokio::time::sleep(POLL).await;
        let resolved = shared.acks.load(Ordering::Acquire) + shared.failed.load(Ordering::Relaxed);
        let last = shared
            .last_event_ns
            .load(Ordering::Relaxed)
            .max(shared.last_ack_ns.load(Ordering::Relaxed));
        let quiet = Duration::from_nanos(nanos_since(t0).saturating_sub(last));
        if resolved >= n && quiet >= args.quiet {
            break Outcome::Settled(Duration::from_nanos(last));
        }
        if Instant::now() >= deadline {
            break Outcome::TimedOut;
        }
    };
    stop.cancel();
    while tasks.join_next().await.is_some() {}

    let owed = match kind {
        TargetKind::Daemon => (n as u64) * (n as u64).saturating_sub(1) / 2,
        TargetKind::Redis => shared.owed.load(Ordering::Acquire),
    };
    let acks = shared.acks.load(Ordering::Acquire);
    let failed = shared.failed.load(Ordering::Relaxed) + opened.failed;
    let learned = shared.learned.load(Ordering::Relaxed);
    let lagging = shared.lagging.load(Ordering::Relaxed);
    let closed = shared.closed.load(Ordering::Relaxed);
    let per_client: Vec<u64> = shared
        .per_client
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let fewest = per_client.iter().copied().min().unwrap_or(0);
    let most = per_client.iter().copied().max().unwrap_or(0);

    let mut report = Report::new("storm", kind.name(), target.detail());
    report.info("clients", "clients", Value::Count(args.clients as u64));
    report.info("joined", "joins acknowledged", Value::Count(acks as u64));
    report.info("failed", "joins failed", Value::Count(failed as u64));
    report.figure(
        "last_ack_s",
        "last join acknowledged",
        Value::Secs(Duration::from_nanos(
            shared.last_ack_ns.load(Ordering::Relaxed),
        )),
    );
    report.figure(
        "settled_s",
        "every announcement delivered",
        match outcome {
            Outcome::Settled(at) => Value::Secs(at),
            Outcome::TimedOut => Value::Missing,
        },
    );
    report.info("owed", "announcements owed (at least)", Value::Count(owed));
    report.info(
        "delivered",
        "announcements delivered",
        Value::Count(learned),
    );
    report.figure(
        "lines",
        "announcement lines received",
        Value::Count(shared.lines.load(Ordering::Relaxed)),
    );
    report.info(
        "fewest_by_one",
        "fewest heard by one client",
        Value::Count(fewest),
    );
    report.info(
        "most_by_one",
        "most heard by one client",
        Value::Count(most),
    );
    report.info("lagging", "lagging clients", Value::Count(lagging as u64));
    report.info(
        "lagged_lines",
        "lines skipped (LAGGED)",
        Value::Count(shared.lagged_lines.load(Ordering::Relaxed)),
    );
    report.info(
        "closed",
        "closed by the server",
        Value::Count(closed as u64),
    );

    if failed > 0 {
        let first = opened.first_error.or_else(|| {
            shared
                .first_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        });
        report.problem(format!(
            "{failed} of {} clients did not join; first error: {}",
            args.clients,
            first.as_deref().unwrap_or("unknown")
        ));
    }
    match outcome {
        Outcome::Settled(_) if lagging == 0 && learned < owed => report.problem(format!(
            "{} of {owed} announcements never arrived",
            owed - learned
        )),
        Outcome::Settled(_) => {}
        Outcome::TimedOut => report.problem(format!(
            "not settled within {:?}: {acks} of {n} joins acknowledged, {learned} of {owed} announcements delivered",
            args.common.timeout
        )),
    }
    if kind == TargetKind::Redis && learned > owed {
        report.problem(format!("{learned} messages delivered but {owed} published"));
    }
    if most > n as u64 {
        report.problem(format!(
            "a client heard of {most} joins, but only {n} students joined"
        ));
    }
    if closed > 0 {
        report.problem(format!("{closed} clients were closed by the server"));
    }
    Ok(report)
}

/// Opens client `i`: the daemon's greeting read, or a RESP3 Redis connection.
async fn connect(kind: TargetKind, addr: SocketAddr, i: usize) -> Result<Conn, String> {
    match kind {
        TargetKind::Daemon => LineConn::connect(i, addr)
            .await
            .map(Conn::Daemon)
            .map_err(|e| e.to_string()),
        TargetKind::Redis => {
            let (mut reader, mut writer) =
                redis::connect(i, addr).await.map_err(|e| e.to_string())?;
            resp::send(&mut writer, &[b"HELLO", b"3"])
                .await
                .map_err(|e| e.to_string())?;
            match reader.expect().await.map_err(|e| e.to_string())? {
                Resp::Error(e) => Err(format!("HELLO 3 refused: {e}")),
                _ => Ok(Conn::Redis((reader, writer))),
            }
        }
    }
}

/// Waits for the start, joins, and counts what arrives until cancelled or closed.
async fn client(conn: Conn, who: Who, mut go: watch::Receiver<Option<Instant>>, shared: &Shared) {
    // Copy the start time out at once: the watch's guard must not live across an await.
    let start = match go.wait_for(Option::is_some).await {
        Ok(start) => *start,
        Err(_) => return,
    };
    let Some(t0) = start else { return };
    let mut lagging = false;
    let mut acked = false;
    let closed = |acked: bool, what: &str| {
        if acked {
            shared.closed.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.fail(format!("closed before {what}"));
        }
    };
    match conn {
        Conn::Daemon(mut conn) => {
            let sent = match line::join(&who.id) {
                Ok(join) => conn.send(&join).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                shared.fail(e.to_string());
                return;
            }
            loop {
                let Ok(Some(line)) = conn.reader.next().await else {
                    return closed(acked, "OK JOIN");
                };
                match line {
                    ServerLine::Ok(Reply::Join { .. }) if !acked => {
                        acked = true;
                        shared.ack(t0);
                    }
                    ServerLine::Ok(_) | ServerLine::Err { .. } if !acked => {
                        return shared.fail(line.to_string());
                    }
                    ServerLine::Event(Event::Join { .. }) => shared.learned(who.slot, 1, t0),
                    ServerLine::Event(Event::Burst {
                        kind: BurstKind::Joins,
                        count,
                        ..
                    }) => shared.learned(who.slot, count, t0),
                    ServerLine::Event(Event::Lagged(skipped)) => {
                        shared.lagged(skipped, &mut lagging, t0);
                    }
                    _ => {}
                }
            }
        }
        Conn::Redis((mut reader, mut writer)) => {
            let me = who.index.to_string();
            let mut out = Vec::with_capacity(96);
            resp::encode(&[b"SUBSCRIBE", who.channel.as_bytes()], &mut out);
            resp::encode(
                &[b"PUBLISH", who.channel.as_bytes(), me.as_bytes()],
                &mut out,
            );
            if let Err(e) = writer.write_all(&out).await {
                return shared.fail(e.to_string());
            }
            loop {
                let Ok(Some(value)) = reader.next().await else {
                    return closed(acked, "the PUBLISH reply");
                };
                match value.pubsub() {
                    Some(PubSub::Message { payload }) => {
                        if payload != me.as_bytes() {
                            shared.learned(who.slot, 1, t0);
                        }
                    }
                    Some(PubSub::Subscribed) => {}
                    None => match value {
                        Resp::Int(receivers) if !acked => {
                            acked = true;
                            let others = u64::try_from(receivers).unwrap_or(0).saturating_sub(1);
                            shared.owed.fetch_add(others, Ordering::Relaxed);
                            shared.ack(t0);
                        }
                        Resp::Error(e) if !acked => return shared.fail(e),
                        _ => {}
                    },
                }
            }
        }
    }
}
