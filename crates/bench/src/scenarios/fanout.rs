//! `fanout`: N clients in one class; one of them (the speaker) says M timestamped messages,
//! `SAY <seq> <send_time_ns>`, at a bounded rate. Reports, per message, the time until the *last*
//! client received it (p50/p99/max over the messages), deliveries per second, and lost messages
//! (any message a non-lagging receiver did not get; must be zero). `EVENT LAGGED` is counted.
//!
//! Before the measured messages the speaker says a sentinel and the run waits until every
//! receiver has it: announcements are delivered in order, so by then the join announcements of
//! the setup are out of the way and do not delay the first measured message.
//!
//! Redis: N-1 subscribers on one channel and one publisher connection that `PUBLISH`es the same
//! messages at the same rate.
//!
//! `--transport ws`: the speaker and every receiver connect over `/ws` on the web port; each
//! round then also runs over TCP on a daemon of its own (see [`super::run`]) for the ratio.
//!
//! `--nodes N`: N daemons share a private Redis as one service ([`Target::cluster`]); the
//! speaker is on the first, receiver `i` on node `i mod N`, so most receivers hear the speaker
//! through Redis. Each round then also runs on one node (and, with `--compare redis`, on Redis)
//! for the ratios.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use attendance_protocol::{Command, Event, Reply, ServerLine, Text};
use tokio::io::AsyncWriteExt as _;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::{nanos_since, open_many};
use crate::cli::{FanoutArgs, TargetKind, Transport};
use crate::daemon::Settings;
use crate::line::{Endpoint, LineConn, LineReader, LineWriter};
use crate::net;
use crate::redis;
use crate::report::{Report, Value};
use crate::resp::{self, PubSub, RespReader, Value as Resp};
use crate::stats::{Samples, rate};
use crate::target::Target;

/// After the last message is sent, stop waiting once nothing has arrived for this long.
const QUIET: Duration = Duration::from_secs(5);
/// How often the totals are checked.
const POLL: Duration = Duration::from_millis(2);

/// The daemon's settings for `fanout`: no flood or chat limit gets in the way of the speaker;
/// the web port for `--transport ws`.
pub(crate) fn settings(args: &FanoutArgs) -> Settings {
    let mut s = super::base_settings();
    s.set("rate_limit", "1000000")
        .set("rate_burst", "1000000")
        .set("chat_rate", "1000000")
        .set("chat_burst", "1000000");
    if args.transport == Transport::Ws {
        s.web_on();
    }
    s
}

/// State shared by the receivers; times are nanoseconds since `base`.
#[derive(Debug)]
struct Shared {
    base: Instant,
    messages: usize,
    sentinel: String,
    synced: AtomicUsize,
    done: AtomicUsize,
    closed: AtomicUsize,
    lagging: AtomicUsize,
    lagged_lines: AtomicU64,
    setup_lagging: AtomicUsize,
    last_arrival_ns: AtomicU64,
    /// Per message: the latest arrival's latency.
    slowest_ns: Vec<AtomicU64>,
    /// Per message: how many receivers got it.
    arrivals: Vec<AtomicU32>,
}

/// What one receiver saw.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    received: usize,
    lagging: bool,
    closed: bool,
}

impl Shared {
    /// Counts message `seq`, stamped `sent_ns`, arriving now; returns whether it was the last one.
    fn arrived(&self, seq: usize, sent_ns: u64, tally: &mut Tally) {
        let now = nanos_since(self.base);
        let (Some(slowest), Some(arrivals)) = (self.slowest_ns.get(seq), self.arrivals.get(seq))
        else {
            return;
        };
        slowest.fetch_max(now.saturating_sub(sent_ns), Ordering::Relaxed);
        arrivals.fetch_add(1, Ordering::Relaxed);
        self.last_arrival_ns.fetch_max(now, Ordering::Relaxed);
        tally.received += 1;
        // In-order delivery: the last message is the end for everyone, lagging or not.
        if seq + 1 == self.messages {
            self.done.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads a `<seq> <send_time_ns>` message text.
    fn message(&self, text: &[u8], tally: &mut Tally, synced: &mut bool) {
        let text = String::from_utf8_lossy(text);
        if text == self.sentinel {
            if !*synced {
                *synced = true;
                self.synced.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let mut words = text.split(' ');
        if let (Some(Ok(seq)), Some(Ok(sent))) = (
            words.next().map(str::parse::<usize>),
            words.next().map(str::parse::<u64>),
        ) {
            self.arrived(seq, sent, tally);
        }
    }

    fn lagged(&self, skipped: u64, tally: &mut Tally, synced: bool) {
        if !synced {
            self.setup_lagging.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !tally.lagging {
            tally.lagging = true;
            self.lagging.fetch_add(1, Ordering::Relaxed);
        }
        self.lagged_lines.fetch_add(skipped, Ordering::Relaxed);
    }
}

/// The speaker's side.
enum Speaker {
    Daemon(LineWriter),
    Redis(tokio::net::tcp::OwnedWriteHalf),
}

/// Replies the speaker got.
#[derive(Debug, Default)]
struct Replies {
    ok: AtomicUsize,
    refused: AtomicUsize,
    first_refusal: Mutex<Option<String>>,
}

impl Replies {
    fn refused(&self, why: String) {
        self.first_refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(why);
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `fanout` against `target`.
///
/// # Errors
/// If the arguments are unusable or the speaker cannot connect.
pub(crate) async fn run(args: &FanoutArgs, target: &mut Target) -> anyhow::Result<Report> {
    if args.clients < 2 || args.messages == 0 {
        bail!("fanout needs at least 2 clients and 1 message");
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of messages per second");
    }
    net::ensure_fits(args.clients)?;
    let kind = target.kind;
    // One endpoint per node: the speaker on the first, receivers round-robin over all.
    let nodes = target.endpoints(args.transport)?;
    let to = *nodes.first().context("no node to connect to")?;
    let nodes_n = nodes.len();
    let run_id = super::run_id();
    let stop = CancellationToken::new();
    let shared = Arc::new(Shared {
        base: Instant::now(),
        messages: args.messages,
        sentinel: format!("sync{run_id}"),
        synced: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        lagging: AtomicUsize::new(0),
        lagged_lines: AtomicU64::new(0),
        setup_lagging: AtomicUsize::new(0),
        last_arrival_ns: AtomicU64::new(0),
        slowest_ns: (0..args.messages).map(|_| AtomicU64::new(0)).collect(),
        arrivals: (0..args.messages).map(|_| AtomicU32::new(0)).collect(),
    });
    let replies = Arc::new(Replies::default());
    let class = format!("Fan{run_id}");
    let channel = format!("fan:{run_id}");

    // The speaker is client 0 and, in the daemon, joins first.
    let (mut speaker, speaker_reader) = match kind {
        TargetKind::Daemon => {
            let mut conn = LineConn::connect(0, to).await.context("speaker connect")?;
            conn.join(&format!("{class}_A_Speaker_R0"))
                .await
                .context("speaker JOIN")?;
            let replies = replies.clone();
            let reader = tokio::spawn(speaker_replies(conn.reader, replies, stop.clone()));
            (Speaker::Daemon(conn.writer), reader)
        }
        TargetKind::Redis => {
            let (reader, writer) = redis::connect(0, to.addr)
                .await
                .context("publisher connect")?;
            let replies = replies.clone();
            let reader = tokio::spawn(publisher_replies(reader, replies, stop.clone()));
            (Speaker::Redis(writer), reader)
        }
    };

    let receivers = args.clients - 1;
    let opened =
        {
            let (shared, stop, class, channel) =
                (shared.clone(), stop.clone(), class.clone(), channel.clone());
            open_many(receivers, args.common.connect_concurrency, args.common.timeout, move |i| {
            let (shared, stop, class, channel) =
                (shared.clone(), stop.clone(), class.clone(), channel.clone());
            let to = nodes[(i + 1) % nodes.len()];
            async move { open_receiver(kind, to, i + 1, &class, &channel, shared, stop).await }
        })
        .await
        };
    let handles: Vec<JoinHandle<Tally>> = opened.conns.into_iter().map(|(_, h)| h).collect();
    let listening = handles.len();

    let mut report = Report::new("fanout", kind.name(), target.detail());
    if kind == TargetKind::Daemon {
        report.transport(to.transport);
        report.nodes(nodes_n);
    }
    if opened.failed > 0 {
        report.problem(format!(
            "{} of {receivers} receivers did not join; first error: {}",
            opened.failed,
            opened.first_error.as_deref().unwrap_or("unknown")
        ));
    }

    // Daemon: flush the setup's announcements with a sentinel everyone must see.
    if let Speaker::Daemon(writer) = &mut speaker {
        let sentinel = Text::new(&shared.sentinel).context("the sentinel as chat text")?;
        writer
            .send(&Command::Say(sentinel))
            .await
            .context("speaker sentinel")?;
        let deadline = Instant::now() + args.common.timeout;
        while shared.synced.load(Ordering::Relaxed) + shared.closed.load(Ordering::Relaxed)
            < listening
        {
            if Instant::now() >= deadline {
                report.problem(format!(
                    "only {} of {listening} receivers heard the sentinel within {:?}",
                    shared.synced.load(Ordering::Relaxed),
                    args.common.timeout
                ));
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let ok_before = replies.ok.load(Ordering::Relaxed);

    // The measured messages, and the server's CPU (of a service, all its nodes') over them.
    let cpu_before = target.cpu();
    let first_send_ns = nanos_since(shared.base);
    let period = Duration::from_secs_f64(1.0 / args.rate).max(Duration::from_micros(1));
    let mut tick = tokio::time::interval(period);
    let send_deadline = Instant::now() + args.common.timeout;
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sent = 0usize;
    let mut send_error = None;
    for seq in 0..args.messages {
        tick.tick().await;
        if Instant::now() >= send_deadline {
            send_error = Some(format!(
                "sending took longer than {:?}",
                args.common.timeout
            ));
            break;
        }
        let text = format!("{seq} {}", nanos_since(shared.base));
        let result = match &mut speaker {
            Speaker::Daemon(w) => match Text::new(&text) {
                Ok(text) => w.send(&Command::Say(text)).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            Speaker::Redis(w) => {
                let mut out = Vec::with_capacity(64);
                resp::encode(&[b"PUBLISH", channel.as_bytes(), text.as_bytes()], &mut out);
                w.write_all(&out).await.map_err(|e| e.to_string())
            }
        };
        if let Err(e) = result {
            send_error = Some(e);
            break;
        }
        sent += 1;
    }
    let last_send = Instant::now();

    // Wait for the last message to reach every receiver still connected.
    let deadline = last_send + args.common.timeout;
    let timed_out = loop {
        let alive = listening.saturating_sub(shared.closed.load(Ordering::Relaxed));
        if shared.done.load(Ordering::Relaxed) >= alive {
            break false;
        }
        let last = shared.last_arrival_ns.load(Ordering::Relaxed);
        let since_last = Duration::from_nanos(nanos_since(shared.base).saturating_sub(last));
        if last_send.elapsed() >= QUIET && since_last >= QUIET {
            break false;
        }
        if Instant::now() >= deadline {
            break true;
        }
        tokio::time::sleep(POLL).await;
    };
    let cpu = cpu_before.zip(target.cpu()).map(|(b, a)| b.until(a));
    // Give the speaker's last replies a moment, then stop everyone.
    let reply_deadline = Instant::now() + Duration::from_secs(5);
    while replies.ok.load(Ordering::Relaxed) + replies.refused.load(Ordering::Relaxed)
        < ok_before + sent
        && Instant::now() < reply_deadline
    {
        tokio::time::sleep(POLL).await;
    }
    stop.cancel();
    let _ = speaker_reader.await;
    let mut tallies = Vec::with_capacity(handles.len());
    for handle in handles {
        tallies.push(handle.await.unwrap_or(Tally {
            closed: true,
            ..Tally::default()
        }));
    }

    let mut slowest = Samples::default();
    let mut deliveries = 0u64;
    for (ns, count) in shared.slowest_ns.iter().zip(&shared.arrivals) {
        let count = count.load(Ordering::Relaxed);
        deliveries += u64::from(count);
        if count > 0 {
            slowest.push(Duration::from_nanos(ns.load(Ordering::Relaxed)));
        }
    }
    let lost: usize = tallies
        .iter()
        .filter(|t| !t.lagging && !t.closed)
        .map(|t| args.messages.saturating_sub(t.received))
        .sum();
    let closed = tallies.iter().filter(|t| t.closed).count();
    let lagging = tallies.iter().filter(|t| t.lagging).count();
    let span = Duration::from_nanos(
        shared
            .last_arrival_ns
            .load(Ordering::Relaxed)
            .saturating_sub(first_send_ns),
    );

    report.info("clients", "clients", Value::Count(args.clients as u64));
    report.info("receivers", "receivers", Value::Count(listening as u64));
    report.info("messages", "messages sent", Value::Count(sent as u64));
    report.info("rate_limit_per_s", "send rate", Value::Rate(args.rate));
    report.latency(
        ["last_p50_ms", "last_p99_ms", "last_max_ms"],
        [
            "last receiver p50",
            "last receiver p99",
            "last receiver max",
        ],
        slowest.summary(),
    );
    report.info("deliveries", "deliveries", Value::Count(deliveries));
    report.figure(
        "deliveries_per_s",
        "deliveries per second",
        Value::Rate(rate(deliveries, span)),
    );
    report.figure(
        "cpu_us_per_delivery",
        "server CPU per delivery",
        match (cpu, u32::try_from(deliveries).ok().filter(|&n| n > 0)) {
            (Some(c), Some(n)) => Value::Micros((c.user + c.system) / n),
            _ => Value::Missing,
        },
    );
    report.info(
        "lost",
        "lost (non-lagging receivers)",
        Value::Count(lost as u64),
    );
    report.info("lagging", "lagging receivers", Value::Count(lagging as u64));
    report.info(
        "lagged_lines",
        "lines skipped (LAGGED)",
        Value::Count(shared.lagged_lines.load(Ordering::Relaxed)),
    );
    report.info(
        "setup_lagging",
        "LAGGED during setup (not counted)",
        Value::Count(shared.setup_lagging.load(Ordering::Relaxed) as u64),
    );
    report.info("closed", "receivers closed", Value::Count(closed as u64));

    if lost > 0 {
        report.problem(format!(
            "{lost} messages lost by receivers that never lagged"
        ));
    }
    if closed > 0 {
        report.problem(format!("{closed} receivers were closed by the server"));
    }
    if let Some(e) = send_error {
        report.problem(format!("the speaker stopped after {sent} messages: {e}"));
    }
    let refused = replies.refused.load(Ordering::Relaxed);
    if refused > 0 {
        let first = replies
            .first_refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        report.problem(format!(
            "{refused} messages refused; first: {}",
            first.as_deref().unwrap_or("unknown")
        ));
    }
    if timed_out {
        report.problem(format!(
            "the last message did not reach every receiver within {:?}",
            args.common.timeout
        ));
    }
    Ok(report)
}

/// Connects receiver `index`, joins/subscribes, and starts its reading task.
async fn open_receiver(
    kind: TargetKind,
    to: Endpoint,
    index: usize,
    class: &str,
    channel: &str,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Result<JoinHandle<Tally>, String> {
    match kind {
        TargetKind::Daemon => {
            let mut conn = LineConn::connect(index, to)
                .await
                .map_err(|e| e.to_string())?;
            conn.join(&format!("{class}_A_S{index}_R{index}"))
                .await
                .map_err(|e| e.to_string())?;
            Ok(tokio::spawn(daemon_receiver(conn, shared, stop)))
        }
        TargetKind::Redis => {
            let (mut reader, mut writer) = redis::connect(index, to.addr)
                .await
                .map_err(|e| e.to_string())?;
            resp::send(&mut writer, &[b"SUBSCRIBE", channel.as_bytes()])
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let value = reader.expect().await.map_err(|e| e.to_string())?;
                if value.pubsub() == Some(PubSub::Subscribed) {
                    break;
                }
            }
            Ok(tokio::spawn(redis_receiver(reader, writer, shared, stop)))
        }
    }
}

async fn daemon_receiver(
    mut conn: LineConn,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Tally {
    let mut tally = Tally::default();
    let mut synced = false;
    loop {
        let line = tokio::select! {
            () = stop.cancelled() => return tally,
            line = conn.reader.next() => line,
        };
        let Ok(Some(line)) = line else {
            shared.closed.fetch_add(1, Ordering::Relaxed);
            tally.closed = true;
            return tally;
        };
        match line {
            ServerLine::Event(Event::Say { text, .. }) => {
                shared.message(text.as_str().as_bytes(), &mut tally, &mut synced);
            }
            ServerLine::Event(Event::Lagged(skipped)) => shared.lagged(skipped, &mut tally, synced),
            _ => {}
        }
    }
}

async fn redis_receiver(
    mut reader: RespReader<tokio::net::tcp::OwnedReadHalf>,
    _writer: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Tally {
    let mut tally = Tally::default();
    // Subscriptions are confirmed before anything is published: no sentinel needed.
    let mut synced = true;
    loop {
        let value = tokio::select! {
            () = stop.cancelled() => return tally,
            value = reader.next() => value,
        };
        let Ok(Some(value)) = value else {
            shared.closed.fetch_add(1, Ordering::Relaxed);
            tally.closed = true;
            return tally;
        };
        if let Some(PubSub::Message { payload }) = value.pubsub() {
            shared.message(payload, &mut tally, &mut synced);
        }
    }
}

async fn speaker_replies(mut reader: LineReader, replies: Arc<Replies>, stop: CancellationToken) {
    loop {
        let line = tokio::select! {
            () = stop.cancelled() => return,
            line = reader.next() => line,
        };
        let Ok(Some(line)) = line else { return };
        match line {
            ServerLine::Ok(Reply::Say) => {
                replies.ok.fetch_add(1, Ordering::Relaxed);
            }
            ServerLine::Err { .. } => replies.refused(line.to_string()),
            _ => {}
        }
    }
}

async fn publisher_replies(
    mut reader: RespReader<tokio::net::tcp::OwnedReadHalf>,
    replies: Arc<Replies>,
    stop: CancellationToken,
) {
    loop {
        let value = tokio::select! {
            () = stop.cancelled() => return,
            value = reader.next() => value,
        };
        match value {
            Ok(Some(Resp::Int(_))) => {
                replies.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(Resp::Error(e))) => replies.refused(e),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}
