//! `marks`: C concurrent clients mark M new identities present, with a class length of 0 s.
//! Reports acknowledged marks per second, the ack latency (from sending `PRESENT` to
//! `OK PRESENT`), the disk's raw fdatasync rate in the same directory (marks/s ÷ syncs/s is the
//! average group-commit batch), and checks after stopping the daemon with SIGTERM that the CSV
//! holds exactly one row per acknowledged mark.
//!
//! A roll is marked once per day, so every mark is for a new identity. `--shape kiosk` (the
//! default) gives each client one connection, in a class of its own, on which it checks in
//! identity after identity: `JOIN` and `PRESENT` sent together, answered together once the mark
//! is on disk (a connection may JOIN the next student once its student is marked). `--shape
//! fresh` times a new connection, `JOIN` and `PRESENT` per mark, each client in a class of its
//! own so no announcements interfere: what a student's own check-in costs. `--shape prejoined`
//! connects and joins the identities first, untimed, in rounds (each identity in a class of its
//! own), then C clients send `PRESENT` on them and only that phase is timed.
//!
//! Redis (`appendonly yes`, `appendfsync always`): C persistent connections, one `RPUSH` of a
//! CSV-like row per mark; checked with `LLEN`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use attendance_protocol::Command;
use tokio::task::JoinSet;

use super::fsync;
use super::open_many;
use crate::cli::{MarksArgs, MarksShape, TargetKind};
use crate::daemon::Settings;
use crate::line::{self, LineConn};
use crate::net;
use crate::redis;
use crate::report::{Report, Value};
use crate::resp::{self, Value as Resp};
use crate::stats::{Samples, rate};
use crate::target::Target;

/// Longest wait for one mark (connect, JOIN, PRESENT) or one RPUSH.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// The fdatasync probe run after the marks: at most this many syncs, for at most this long.
const PROBE_SYNCS: usize = 1000;
const PROBE_TIME: Duration = Duration::from_secs(2);

/// The daemon's settings for `marks`: PRESENT is accepted at once after JOIN, and a kiosk
/// connection may send lines as fast as its marks are acknowledged (the per-connection line
/// rate limit, 20/s by default, is meant for people, not for a check-in machine).
pub(crate) fn settings() -> Settings {
    let mut s = super::base_settings();
    s.set("class_length", "\"0s\"")
        .set("rate_limit", "1000000")
        .set("rate_burst", "1000000")
        // For the writer's batch count (WRITER_BATCHES) around the marks.
        .set("metrics_listen", "\"127.0.0.1:0\"");
    s
}

/// The daemon's count of writer batches: each one write and, with `fsync = "always"`, one
/// `fdatasync`.
const WRITER_BATCHES: &str = "attendanced_writer_batch_size_count";

/// The writer's batch count now, if `target` is a daemon the bench started with metrics.
/// Of a service, its nodes' together; `None` if a node's could not be read.
async fn writer_batches(target: &Target) -> Option<f64> {
    let addrs = target.all_metrics_addrs();
    if addrs.is_empty() {
        return None;
    }
    let mut sum = 0.0;
    for addr in addrs {
        sum += crate::scrape::sample(addr, WRITER_BATCHES).await?;
    }
    Some(sum)
}

/// What one client did.
#[derive(Debug, Default)]
struct Tally {
    acked: usize,
    failed: usize,
    first_error: Option<String>,
    latencies: Samples,
}

impl Tally {
    /// A client that could not start: its share is taken by the others, and `why` is named
    /// if marks go missing.
    fn gave_up(why: String) -> Self {
        Self {
            first_error: Some(why),
            ..Self::default()
        }
    }

    /// Counts one mark's outcome (its latency, its error, or the time-out). Returns what the
    /// client does next: `after_error` if it failed, [`AfterError::GoOn`] otherwise.
    fn record(
        &mut self,
        outcome: Result<Result<Duration, String>, tokio::time::error::Elapsed>,
        after_error: AfterError,
    ) -> AfterError {
        match outcome {
            Ok(Ok(latency)) => {
                self.acked += 1;
                self.latencies.push(latency);
                return AfterError::GoOn;
            }
            Ok(Err(e)) => self.fail(e),
            Err(_) => self.fail(format!("no acknowledgement within {OP_TIMEOUT:?}")),
        }
        after_error
    }

    fn fail(&mut self, why: String) {
        self.failed += 1;
        self.first_error.get_or_insert(why);
    }

    fn add(&mut self, other: Tally) {
        self.acked += other.acked;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
    }
}

/// Runs `marks` against `target`.
///
/// # Errors
/// If the arguments are unusable, or the daemon cannot be stopped or its CSV read.
pub(crate) async fn run(args: &MarksArgs, target: &mut Target) -> anyhow::Result<Report> {
    if args.clients == 0 || args.marks == 0 {
        bail!("marks needs at least 1 client and 1 mark");
    }
    net::ensure_fits(args.clients)?;
    let kind = target.kind;
    // One per node (the first node's first); client `i` uses node `i mod N`.
    let addrs: Arc<[SocketAddr]> = target
        .endpoints(crate::cli::Transport::Tcp)?
        .iter()
        .map(|e| e.addr)
        .collect();
    let run_id = super::run_id();
    let deadline = Instant::now() + args.common.timeout;
    // The server's CPU time over the timed marks (prejoined joins first, untimed, inside its
    // run: no CPU figure for that shape, on either server).
    let batches_before = writer_batches(target).await;
    let store_before = match (&args.store, kind) {
        (Some(url), TargetKind::Daemon) => Some(store_rows(url).await?),
        _ => None,
    };
    let timed_cpu = args.shape != MarksShape::Prejoined;
    let cpu_before = timed_cpu.then(|| target.cpu()).flatten();
    // The load generator's own CPU in the same window: the two share the machine's cores, so
    // a cheaper client leaves more for the server.
    let own_before = timed_cpu
        .then(|| crate::process::cpu_time(std::process::id()))
        .flatten();
    // And how much of the machine nobody used meanwhile: a server held by waits (for its
    // syncs, for its clients) leaves cores idle that a CPU-bound one would fill.
    let machine_before = crate::process::machine_cpu();
    let (mut tally, elapsed) = match (kind, args.shape) {
        (TargetKind::Daemon, MarksShape::Prejoined) => {
            prejoined(args, &addrs, &run_id, deadline).await
        }
        (TargetKind::Daemon, MarksShape::Fresh | MarksShape::Kiosk) | (TargetKind::Redis, _) => {
            concurrently(args, kind, &addrs, &run_id, deadline).await
        }
    };
    let cpu = cpu_before.zip(target.cpu()).map(|(b, a)| b.until(a));
    let machine_idle = machine_before
        .zip(crate::process::machine_cpu())
        .and_then(|(b, a)| b.idle_share_until(a));
    let own = own_before
        .zip(crate::process::cpu_time(std::process::id()))
        .map(|(b, a)| b.until(a));
    let marks_per_s = rate(tally.acked as u64, elapsed);
    // Counted over the whole run: prejoined's untimed joins write nothing.
    let batches = match (batches_before, writer_batches(target).await) {
        (Some(before), Some(after)) if after >= before => Some((after - before) as u64),
        _ => None,
    };

    // The disk's own rate, in the server's directory (same filesystem as its CSV or AOF).
    let probe = match target.dir() {
        Some(dir) => Some(fsync::probe(dir, PROBE_SYNCS, PROBE_TIME).context("fdatasync probe")?),
        None => None,
    };
    let stored = match (&args.store, store_before) {
        (Some(url), Some(before)) => {
            target.stop_nodes()?;
            Some(store_rows(url).await?.saturating_sub(before))
        }
        _ => stored_count(target, &run_id).await?,
    };

    let mut report = Report::new("marks", kind.name(), target.detail());
    if kind == TargetKind::Daemon {
        report.nodes(addrs.len());
    }
    report.info(
        "clients",
        "concurrent clients",
        Value::Count(args.clients as u64),
    );
    report.info("marks", "marks requested", Value::Count(args.marks as u64));
    report.info(
        "shape",
        "what is timed",
        Value::Text(match (kind, args.shape) {
            (TargetKind::Daemon, MarksShape::Kiosk) => "JOIN+PRESENT on open connections",
            (TargetKind::Daemon, MarksShape::Fresh) => "connect+JOIN+PRESENT per mark",
            (TargetKind::Daemon, MarksShape::Prejoined) => "PRESENT on joined connections",
            (TargetKind::Redis, _) => "RPUSH on open connections",
        }),
    );
    report.info(
        "acked",
        "marks acknowledged",
        Value::Count(tally.acked as u64),
    );
    report.info("failed", "marks failed", Value::Count(tally.failed as u64));
    report.figure("elapsed_s", "time for all marks", Value::Secs(elapsed));
    report.figure(
        "marks_per_s",
        "acknowledged marks per second",
        Value::Rate(marks_per_s),
    );
    let summary = tally.latencies.summary();
    report.latency(
        ["ack_p50_ms", "ack_p99_ms", "ack_max_ms"],
        ["ack latency p50", "ack latency p99", "ack latency max"],
        summary,
    );
    // Per acknowledged mark; /proc counts in 10 ms ticks, so runs under a second or two
    // give coarse figures.
    let per_mark = |d: std::time::Duration| {
        u32::try_from(tally.acked)
            .ok()
            .filter(|&n| n > 0)
            .map_or(Value::Missing, |n| Value::Micros(d / n))
    };
    report.figure(
        "cpu_us_per_mark",
        "server CPU per mark",
        cpu.map_or(Value::Missing, |c| per_mark(c.user + c.system)),
    );
    report.figure(
        "cpu_user_us_per_mark",
        "  of which in user space",
        cpu.map_or(Value::Missing, |c| per_mark(c.user)),
    );
    report.figure(
        "cpu_system_us_per_mark",
        "  of which in the kernel",
        cpu.map_or(Value::Missing, |c| per_mark(c.system)),
    );
    report.figure(
        "bench_cpu_us_per_mark",
        "load generator CPU per mark",
        own.map_or(Value::Missing, |c| per_mark(c.user + c.system)),
    );
    report.figure(
        "machine_idle_share",
        "machine's cores idle meanwhile",
        machine_idle.map_or(Value::Missing, Value::Ratio),
    );
    let syncs_per_s = probe.as_ref().map(fsync::Probe::syncs_per_s);
    report.info(
        "fsyncs_per_s",
        "raw append+fdatasync rate here",
        syncs_per_s.map_or(Value::Missing, Value::Rate),
    );
    report.info(
        "marks_per_fsync",
        "marks/s ÷ fdatasyncs/s",
        syncs_per_s
            .filter(|s| *s > 0.0)
            .map_or(Value::Missing, |s| Value::Ratio(marks_per_s / s)),
    );
    report.info(
        "writer_batches",
        "the daemon's writer batches",
        batches.map_or(Value::Missing, Value::Count),
    );
    report.info(
        "marks_per_batch",
        "acknowledged marks per batch",
        batches.filter(|&b| b > 0).map_or(Value::Missing, |b| {
            Value::Ratio(tally.acked as f64 / b as f64)
        }),
    );
    report.info(
        "stored",
        match kind {
            TargetKind::Daemon if args.store.is_some() => "new PostgreSQL rows after SIGTERM",
            TargetKind::Daemon => "CSV rows after SIGTERM",
            TargetKind::Redis => "list length (LLEN)",
        },
        stored.map_or(Value::Missing, |n| Value::Count(n as u64)),
    );

    if tally.failed > 0 {
        report.problem(format!(
            "{} of {} marks not acknowledged; first error: {}",
            tally.failed,
            args.marks,
            tally.first_error.as_deref().unwrap_or("unknown")
        ));
    }
    if tally.acked + tally.failed < args.marks {
        let why = match (tally.failed, &tally.first_error) {
            (0, Some(e)) => format!("; a client gave up: {e}"),
            _ => String::new(),
        };
        report.problem(format!(
            "only {} of {} marks attempted within {:?}{why}",
            tally.acked + tally.failed,
            args.marks,
            args.common.timeout
        ));
    }
    if let Some(stored) = stored {
        if stored != tally.acked {
            report.problem(format!("{stored} stored but {} acknowledged", tally.acked));
        }
    }
    Ok(report)
}

/// C clients taking marks from a shared counter until all are done: the daemon's `kiosk` and
/// `fresh` shapes, and Redis. Returns the tally and the time taken.
async fn concurrently(
    args: &MarksArgs,
    kind: TargetKind,
    addrs: &[SocketAddr],
    run_id: &str,
    deadline: Instant,
) -> (Tally, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let pipelined = !args.common.wait_hello;
    let shape = args.shape;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for worker in 0..args.clients {
        let (next, run_id, total) = (next.clone(), run_id.to_owned(), args.marks);
        let addr = addrs[worker % addrs.len()];
        tasks.spawn(async move {
            match (kind, shape) {
                (TargetKind::Daemon, MarksShape::Kiosk) => {
                    kiosk_client(addr, worker, &run_id, &next, total, deadline).await
                }
                (TargetKind::Daemon, _) => {
                    let client = Client { worker, pipelined };
                    daemon_client(addr, client, &run_id, &next, total, deadline).await
                }
                (TargetKind::Redis, _) => {
                    redis_client(addr, worker, &run_id, &next, total, deadline).await
                }
            }
        });
    }
    let mut tally = Tally::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(t) => tally.add(t),
            Err(e) => tally.fail(e.to_string()),
        }
    }
    (tally, start.elapsed())
}

/// The daemon's `prejoined` shape: rounds of identities connected and joined (untimed), then C
/// clients sending PRESENT on them (timed). Returns the tally and the timed total.
async fn prejoined(
    args: &MarksArgs,
    addrs: &[SocketAddr],
    run_id: &str,
    deadline: Instant,
) -> (Tally, Duration) {
    let room = net::connections_per_process().saturating_sub(args.clients + 64);
    let round = args.round.min(room).max(1);
    let mut tally = Tally::default();
    let mut timed = Duration::ZERO;
    let mut first = 0;
    let pipelined = !args.common.wait_hello;
    while first < args.marks && Instant::now() < deadline {
        let size = round.min(args.marks - first);
        let left = deadline.saturating_duration_since(Instant::now());
        let opened = open_many(size, args.common.connect_concurrency, left, |k| {
            let (i, run_id) = (first + k, run_id.to_owned());
            let addr = addrs[i % addrs.len()];
            async move {
                let id = format!("Marks{run_id}_C{i}_S{i}_R{i}");
                LineConn::connect_and_join(i, addr, &id, pipelined)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        tally.failed += opened.failed;
        if let Some(e) = opened.first_error {
            tally.first_error.get_or_insert(e);
        }
        let queue: Arc<Mutex<Vec<LineConn>>> = Arc::new(Mutex::new(
            opened.conns.into_iter().map(|(_, c)| c).collect(),
        ));
        let finished: Arc<Mutex<Vec<LineConn>>> = Arc::new(Mutex::new(Vec::with_capacity(size)));

        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for _ in 0..args.clients {
            let (queue, finished) = (queue.clone(), finished.clone());
            tasks.spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
                    let Some(mut conn) = next else { return tally };
                    // Each connection is used once: a failure does not stop the client.
                    let outcome = tokio::time::timeout(OP_TIMEOUT, present(&mut conn)).await;
                    tally.record(outcome, AfterError::GoOn);
                    // Closed after the timed phase: closing is not part of a mark.
                    finished
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(conn);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(t) => tally.add(t),
                Err(e) => tally.fail(e.to_string()),
            }
        }
        timed += start.elapsed();
        drop(finished);
        first += size;
    }
    (tally, timed)
}

/// Sends PRESENT on a joined connection; returns the time until its OK.
async fn present(conn: &mut LineConn) -> Result<Duration, String> {
    let sent = Instant::now();
    conn.send(&Command::Present)
        .await
        .map_err(|e| e.to_string())?;
    let reply = conn.reader.reply().await.map_err(|e| e.to_string())?;
    line::expect_ok(reply, line::is_present).map_err(|e| e.to_string())?;
    Ok(sent.elapsed())
}

/// Which client of the run, and whether it sends JOIN without waiting for the greeting.
#[derive(Debug, Clone, Copy)]
struct Client {
    worker: usize,
    pipelined: bool,
}

/// Whether a client goes on after a mark failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterError {
    /// Each mark has its own connection: take the next.
    GoOn,
    /// The connection's state is unknown now: this client stops (the others take its share).
    Stop,
}

/// The next mark this client takes from the shared counter; `None` once all are taken or the
/// deadline has passed.
fn take(next: &AtomicUsize, total: usize, deadline: Instant) -> Option<usize> {
    let i = next.fetch_add(1, Ordering::Relaxed);
    (i < total && Instant::now() < deadline).then_some(i)
}

/// One daemon client: fresh connection, JOIN, PRESENT, for each mark it takes.
async fn daemon_client(
    addr: SocketAddr,
    Client { worker, pipelined }: Client,
    run_id: &str,
    next: &AtomicUsize,
    total: usize,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    while let Some(i) = take(next, total, deadline) {
        let id = format!("Marks{run_id}_W{worker}_S{i}_R{i}");
        let outcome = tokio::time::timeout(OP_TIMEOUT, daemon_mark(addr, i, &id, pipelined)).await;
        tally.record(outcome, AfterError::GoOn);
    }
    tally
}

/// One mark: returns the time from sending PRESENT to its OK.
async fn daemon_mark(
    addr: SocketAddr,
    index: usize,
    id: &str,
    pipelined: bool,
) -> Result<Duration, String> {
    let mut conn = LineConn::connect_and_join(index, addr, id, pipelined)
        .await
        .map_err(|e| e.to_string())?;
    present(&mut conn).await
}

/// One kiosk client: one connection, and per mark it takes, `JOIN <new identity>` and `PRESENT`
/// in one write. The identities share the client's class, so each JOIN replaces the student
/// just marked.
async fn kiosk_client(
    addr: SocketAddr,
    worker: usize,
    run_id: &str,
    next: &AtomicUsize,
    total: usize,
    deadline: Instant,
) -> Tally {
    let mut conn = match tokio::time::timeout(OP_TIMEOUT, LineConn::connect(worker, addr)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Tally::gave_up(e.to_string()),
        Err(_) => return Tally::gave_up(format!("no greeting within {OP_TIMEOUT:?}")),
    };
    let mut tally = Tally::default();
    while let Some(i) = take(next, total, deadline) {
        let id = format!("Marks{run_id}_W{worker}_S{i}_R{i}");
        let outcome = tokio::time::timeout(OP_TIMEOUT, kiosk_mark(&mut conn, &id)).await;
        if tally.record(outcome, AfterError::Stop) == AfterError::Stop {
            break;
        }
    }
    tally
}

/// One kiosk mark: returns the time from sending `JOIN` and `PRESENT` to `OK PRESENT`.
async fn kiosk_mark(conn: &mut LineConn, id: &str) -> Result<Duration, String> {
    let sent = Instant::now();
    let join = line::join(id).map_err(|e| e.to_string())?;
    conn.send_all(&[join, Command::Present])
        .await
        .map_err(|e| e.to_string())?;
    let join = conn.reader.reply().await.map_err(|e| e.to_string())?;
    line::expect_ok(join, line::is_join).map_err(|e| e.to_string())?;
    let reply = conn.reader.reply().await.map_err(|e| e.to_string())?;
    line::expect_ok(reply, line::is_present).map_err(|e| e.to_string())?;
    Ok(sent.elapsed())
}

/// One Redis client: one connection, one RPUSH per mark it takes.
async fn redis_client(
    addr: SocketAddr,
    worker: usize,
    run_id: &str,
    next: &AtomicUsize,
    total: usize,
    deadline: Instant,
) -> Tally {
    let (mut reader, mut writer) = match redis::connect(worker, addr).await {
        Ok(conn) => conn,
        Err(e) => return Tally::gave_up(e.to_string()),
    };
    let key = format!("marks:{run_id}");
    let mut tally = Tally::default();
    while let Some(i) = take(next, total, deadline) {
        let row = format!(
            "Marks{run_id},W{worker},S{i},R{i},Present,2026-01-01T00:00:00.000Z,2026-01-01T00:00:00.000Z,127.0.0.1"
        );
        let sent = Instant::now();
        let mark = async {
            resp::send(&mut writer, &[b"RPUSH", key.as_bytes(), row.as_bytes()])
                .await
                .map_err(|e| e.to_string())?;
            match reader.expect().await.map_err(|e| e.to_string())? {
                Resp::Int(_) => Ok(sent.elapsed()),
                other => Err(format!("RPUSH answered {other:?}")),
            }
        };
        let outcome = tokio::time::timeout(OP_TIMEOUT, mark).await;
        if tally.record(outcome, AfterError::Stop) == AfterError::Stop {
            break;
        }
    }
    tally
}

/// How many marks the server stored: the daemon's CSV rows after SIGTERM (it drains and syncs
/// first), or Redis's list length. `None` for a daemon the bench did not start.
async fn stored_count(target: &mut Target, run_id: &str) -> anyhow::Result<Option<usize>> {
    match target.kind {
        TargetKind::Daemon => {
            let Some(daemon) = target.daemon_process() else {
                return Ok(None);
            };
            let status = daemon.stop().context("stopping the daemon")?;
            if !status.success() {
                bail!("the daemon exited with {status} on SIGTERM");
            }
            Ok(Some(csv_rows(&daemon.csv_path())?))
        }
        TargetKind::Redis => {
            let (mut reader, mut writer) = redis::connect(0, target.addr).await?;
            let key = format!("marks:{run_id}");
            resp::send(&mut writer, &[b"LLEN", key.as_bytes()]).await?;
            match reader.expect().await? {
                Resp::Int(n) => Ok(Some(usize::try_from(n).unwrap_or(0))),
                other => bail!("LLEN answered {other:?}"),
            }
        }
    }
}

/// Rows in the PostgreSQL store's `attendance_marks` (0 before the daemon first created it).
async fn store_rows(url: &str) -> anyhow::Result<usize> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to --store")?;
    let task = tokio::spawn(connection);
    let exists: bool = client
        .query_one("SELECT to_regclass('attendance_marks') IS NOT NULL", &[])
        .await?
        .get(0);
    let n: i64 = if exists {
        client
            .query_one("SELECT count(*) FROM attendance_marks", &[])
            .await?
            .get(0)
    } else {
        0
    };
    drop(client);
    let _ = task.await;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Data rows of the CSV (lines after the header; no cell can hold a line break).
pub(crate) fn csv_rows(path: &Path) -> anyhow::Result<usize> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .count()
        .saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_do_not_count_the_header() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.csv");
        std::fs::write(&path, "course,division\n")?;
        assert_eq!(csv_rows(&path)?, 0);
        std::fs::write(&path, "course,division\na,b\nc,d\n")?;
        assert_eq!(csv_rows(&path)?, 2);
        Ok(())
    }
}
