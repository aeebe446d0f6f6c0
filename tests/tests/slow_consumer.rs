//! One stuck client — joined, then never reading again — must not delay anyone else: while a
//! speaker streams chat to a class of 500 that includes it, every other member gets every
//! message in order and promptly, the heartbeat keeps coming, replies stay prompt, and the stuck
//! client is disconnected by the server after `write_timeout`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use attendance_tests::{Client, Daemon};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Members of the class besides the speaker and the stuck client; each is read by its own task.
const READERS: usize = 500;
/// Chat messages the speaker sends.
const MESSAGES: usize = 300;
/// Bytes of padding per message (a line stays under the default `max_line` of 1024).
const PADDING: usize = 900;
/// The speaker runs at most this many messages ahead of the slowest reader, well inside the
/// class's outbound queue (256 announcements), so no reader can lag.
const WINDOW: usize = 64;
const HEARTBEAT: Duration = Duration::from_millis(500);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// What "prompt" means for a heartbeat gap, a reply, or a chat line reaching a reader. Anything
/// that waited for the stuck client would wait for `WRITE_TIMEOUT`.
const HEARTBEAT_GAP_LIMIT: Duration = Duration::from_millis(3_000);
const LATENCY_LIMIT: Duration = Duration::from_millis(2_500);
/// Longest any phase may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(40);

const STUCK: &str = "Stuck";

fn say_text(k: usize) -> String {
    let fill = char::from(b'a' + u8::try_from(k % 26).unwrap_or(0));
    format!("msg-{k} {}", fill.to_string().repeat(PADDING))
}

/// What the readers and the speaker share.
struct Shared {
    /// Readers joined to the class.
    joined: watch::Sender<usize>,
    /// Readers that have seen the speaker's `SAY go` (so they are past every announcement of
    /// the setup).
    ready: watch::Sender<usize>,
    /// For each message, how many readers have it.
    seen: Vec<AtomicUsize>,
    /// Woken when a message has reached every reader.
    all_seen: Notify,
    /// When the speaker sent each message.
    sent_at: Vec<OnceLock<Instant>>,
}

#[derive(Debug, Default)]
struct Report {
    heartbeats: usize,
    max_heartbeat_gap: Duration,
    pings: usize,
    max_ping: Duration,
    max_say_latency: Duration,
    /// When the stuck client's `EVENT LEAVE` arrived.
    stuck_left: Option<Instant>,
    /// Late summaries of the setup's joins (`EVENT JOINS`), if the daemon sums up bursts.
    join_summaries: usize,
}

/// Returns the reader's report and its connection, which must stay open until every reader is
/// done: hundreds of `EVENT LEAVE`s at once would make the slower readers lag.
async fn reader(addr: SocketAddr, i: usize, shared: Arc<Shared>) -> Result<(Report, Client)> {
    let mut c = Client::connect(addr).await?;
    let joined = c.cmd(&format!("JOIN Slow_D1_S{i}_R{i}")).await?;
    ensure!(
        joined.starts_with(&format!("OK JOIN Slow D1 S{i} R{i} ")),
        "reader {i}: {joined}"
    );
    shared.joined.send_modify(|n| *n += 1);
    // The speaker says "go" once everyone, the stuck client last, has joined: past it, every
    // announcement of the setup is too. (Catching up with 500 JOINs may lag; that is before the
    // part under test.)
    tokio::time::timeout(PHASE_TIMEOUT, c.event("EVENT SAY Speaker go"))
        .await
        .with_context(|| format!("reader {i}: the speaker's \"go\" did not come"))??;
    shared.ready.send_modify(|n| *n += 1);
    let ready = Instant::now();

    let mut report = Report::default();
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut last_heartbeat = ready;
    let mut ping: Option<(u64, Instant)> = None;
    let mut next_ping = 0u64;
    let mut next = 0usize;
    while next < MESSAGES || report.stuck_left.is_none() {
        let line = tokio::time::timeout_at(deadline, c.recv_raw())
            .await
            .with_context(|| {
                format!(
                    "reader {i}: had {next} of {MESSAGES} messages, stuck client left: {}",
                    report.stuck_left.is_some()
                )
            })??;
        let now = Instant::now();
        let mut send_ping = false;
        if let Some(text) = line.strip_prefix("EVENT SAY Speaker ") {
            ensure!(
                next < MESSAGES && text == say_text(next),
                "reader {i}: expected message {next}, got {:.40}…",
                text
            );
            let sent = shared.sent_at[next]
                .get()
                .context("a message arrived before it was sent")?;
            report.max_say_latency = report.max_say_latency.max(now - *sent);
            if shared.seen[next].fetch_add(1, Ordering::AcqRel) + 1 == READERS {
                shared.all_seen.notify_one();
            }
            next += 1;
            send_ping = next % 50 == 25;
        } else if line.starts_with("EVENT HEARTBEAT ") {
            report.heartbeats += 1;
            report.max_heartbeat_gap = report.max_heartbeat_gap.max(now - last_heartbeat);
            last_heartbeat = now;
            send_ping = true;
        } else if line == format!("EVENT LEAVE {STUCK}")
            // Nobody else leaves before the end, so a summed-up leave is the stuck client's.
            || line == "EVENT LEAVES Slow D1 1"
        {
            ensure!(
                report.stuck_left.is_none(),
                "reader {i}: two LEAVEs of {STUCK}"
            );
            report.stuck_left = Some(now);
        } else if line.starts_with("EVENT JOINS Slow D1 ") {
            // A daemon that sums up bursts sends the sum of the setup's joins at the end of its
            // window, which may be after "go".
            report.join_summaries += 1;
            ensure!(
                report.join_summaries <= 2,
                "reader {i}: more join summaries than the setup explains: {line}"
            );
        } else if let Some(token) = line.strip_prefix("OK PONG ") {
            let Some((n, at)) = ping.take() else {
                bail!("reader {i}: a PONG nobody asked for: {line}");
            };
            ensure!(token == format!("r{i}-{n}"), "reader {i}: {line}");
            report.pings += 1;
            report.max_ping = report.max_ping.max(now - at);
        } else {
            // Including EVENT LAGGED: nobody but the stuck client may fall behind.
            bail!(
                "reader {i}: unexpected line {line:.80} after {next} messages ({:?} after it was \
                 ready; stuck client gone: {})",
                now - ready,
                report.stuck_left.is_some()
            );
        }
        if send_ping && ping.is_none() {
            c.send(&format!("PING r{i}-{next_ping}")).await?;
            ping = Some((next_ping, Instant::now()));
            next_ping += 1;
        }
    }
    // The gap since the last heartbeat counts too.
    report.max_heartbeat_gap = report.max_heartbeat_gap.max(last_heartbeat.elapsed());
    if let Some((_, at)) = ping {
        let pong = tokio::time::timeout(LATENCY_LIMIT * 2, c.reply())
            .await
            .with_context(|| format!("reader {i}: no PONG"))??;
        ensure!(pong.starts_with("OK PONG "), "reader {i}: {pong}");
        report.pings += 1;
        report.max_ping = report.max_ping.max(at.elapsed());
    }
    Ok((report, c))
}

/// Waits until `counter` reaches `target`, failing early with a reader's error if one failed.
async fn wait_count(
    counter: &watch::Sender<usize>,
    target: usize,
    what: &str,
    tasks: &mut JoinSet<Result<(Report, Client)>>,
) -> Result<()> {
    let mut rx = counter.subscribe();
    let deadline = Instant::now() + PHASE_TIMEOUT;
    tokio::select! {
        reached = tokio::time::timeout_at(deadline, rx.wait_for(|&n| n >= target)) => {
            ensure!(
                matches!(reached, Ok(Ok(_))),
                "only {} of {target} readers {what} within {PHASE_TIMEOUT:?}",
                *counter.borrow()
            );
            Ok(())
        }
        Some(done) = tasks.join_next() => {
            done??;
            bail!("a reader finished before it {what}");
        }
    }
}

/// Connects a client that will stop reading: a tiny receive buffer and a small MSS keep the
/// kernel's buffers on both ends (the server's send buffer grows with the MSS, to megabytes on
/// loopback) small, so a few dozen chat lines fill them.
async fn connect_stuck(addr: SocketAddr) -> Result<Client> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(1024)?;
    nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::TcpMaxSeg, &536)?;
    let stream = socket.connect(addr).await?;
    Client::from_stream(stream).await
}

/// Reads the stuck socket to its end; returns the bytes read.
async fn drain(mut stream: TcpStream) -> Result<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => bail!(
                "the stuck client is still connected after {PHASE_TIMEOUT:?} ({} bytes read)",
                all.len()
            ),
            Ok(Ok(0) | Err(_)) => return Ok(all),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_delays_nobody_and_is_disconnected() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("slow.toml");
    // Chat and line rate limits are for students; this speaker is a load generator.
    std::fs::write(
        &config,
        "rate_limit = 100000\nrate_burst = 100000\nchat_rate = 100000\nchat_burst = 100000\n",
    )?;
    let config = config.to_string_lossy().into_owned();
    let heartbeat = format!("{}ms", HEARTBEAT.as_millis());
    let write_timeout = format!("{}ms", WRITE_TIMEOUT.as_millis());
    let d = Daemon::start_in(
        dir,
        &[
            "--config",
            &config,
            "--heartbeat",
            &heartbeat,
            "--write-timeout",
            &write_timeout,
        ],
    )?;
    let addr = d.addr;
    let test_started = Instant::now();

    let shared = Arc::new(Shared {
        joined: watch::channel(0).0,
        ready: watch::channel(0).0,
        seen: (0..MESSAGES).map(|_| AtomicUsize::new(0)).collect(),
        all_seen: Notify::new(),
        sent_at: (0..MESSAGES).map(|_| OnceLock::new()).collect(),
    });
    let mut readers = JoinSet::new();
    for i in 0..READERS {
        let shared = Arc::clone(&shared);
        readers.spawn(reader(addr, i, shared));
    }
    wait_count(&shared.joined, READERS, "joined", &mut readers).await?;

    let mut speaker = d.connect().await?;
    let joined = speaker.cmd("JOIN Slow_D1_Speaker_RSpeaker").await?;
    ensure!(joined.starts_with("OK JOIN "), "speaker: {joined}");
    let mut stuck = connect_stuck(addr).await?;
    let joined = stuck.cmd(&format!("JOIN Slow_D1_{STUCK}_R{STUCK}")).await?;
    ensure!(joined.starts_with("OK JOIN "), "stuck client: {joined}");
    // From here on nothing reads the stuck client's socket.
    let stuck = stuck.into_stream();
    ensure!(speaker.cmd("SAY go").await? == "OK SAY");
    wait_count(&shared.ready, READERS, "heard \"go\"", &mut readers).await?;
    let setup = test_started.elapsed();

    let speaking = Instant::now();
    for k in 0..MESSAGES {
        if k >= WINDOW {
            let behind = &shared.seen[k - WINDOW];
            let deadline = Instant::now() + PHASE_TIMEOUT;
            while behind.load(Ordering::Acquire) < READERS {
                tokio::select! {
                    woken = tokio::time::timeout_at(deadline, shared.all_seen.notified()) => {
                        ensure!(
                            woken.is_ok(),
                            "message {} reached only {} of {READERS} readers",
                            k - WINDOW,
                            behind.load(Ordering::Acquire)
                        );
                    }
                    Some(done) = readers.join_next() => {
                        done??;
                        bail!("a reader finished before message {}", k - WINDOW);
                    }
                }
            }
        }
        let text = say_text(k);
        shared.sent_at[k]
            .set(Instant::now())
            .map_err(|_| anyhow::anyhow!("message {k} sent twice"))?;
        let ok = speaker.cmd(&format!("SAY {text}")).await?;
        ensure!(ok == "OK SAY", "speaker, message {k}: {ok}");
        // Heartbeats and the stuck client's LEAVE; the speaker does not care.
        speaker.events.clear();
    }
    let spoken = speaking.elapsed();

    let mut reports = Vec::with_capacity(READERS);
    let mut connections = Vec::with_capacity(READERS);
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while let Some(done) = tokio::time::timeout_at(deadline, readers.join_next())
        .await
        .context("readers still busy")?
    {
        let (report, connection) = done??;
        reports.push(report);
        connections.push(connection);
    }
    drop(connections);
    let read = speaking.elapsed();
    // The speaker, who never stopped reading, is still served.
    ensure!(speaker.cmd("PING still-here").await? == "OK PONG still-here");

    let stuck_bytes = drain(stuck).await?;
    let stuck_says = stuck_bytes
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"EVENT SAY "))
        .count();

    let max = |f: fn(&Report) -> Duration| reports.iter().map(f).max().unwrap_or_default();
    let max_gap = max(|r| r.max_heartbeat_gap);
    let max_ping = max(|r| r.max_ping);
    let max_say = max(|r| r.max_say_latency);
    let left: Vec<Instant> = reports.iter().filter_map(|r| r.stuck_left).collect();
    let first_left = left.iter().min().copied().context("no LEAVE")?;
    let last_left = left.iter().max().copied().context("no LEAVE")?;
    let min_heartbeats = reports.iter().map(|r| r.heartbeats).min().unwrap_or(0);
    let pings: usize = reports.iter().map(|r| r.pings).sum();
    println!(
        "setup {setup:?}; {MESSAGES} messages to {READERS} readers sent in {spoken:?}, all \
         read in {read:?}; the stuck client was disconnected {:?} after the chat began (its \
         LEAVE reached every reader within {:?}) and then drained {} bytes ({stuck_says} of \
         {MESSAGES} chat lines); max heartbeat gap {max_gap:?} (each reader got at least \
         {min_heartbeats}), max PING round trip {max_ping:?} ({pings} pings), max chat latency \
         {max_say:?}",
        first_left - speaking,
        last_left - first_left,
        stuck_bytes.len(),
    );

    // Everyone else was served promptly the whole time the stuck client was stuck.
    ensure!(
        max_gap <= HEARTBEAT_GAP_LIMIT,
        "a reader waited {max_gap:?} for a heartbeat (every {HEARTBEAT:?})"
    );
    ensure!(
        max_ping <= LATENCY_LIMIT,
        "a PING took {max_ping:?} to be answered"
    );
    ensure!(
        max_say <= LATENCY_LIMIT,
        "a chat line took {max_say:?} to reach a reader"
    );
    // The stuck client was cut off by the write timeout, not before, and not much later.
    ensure!(
        first_left - speaking >= WRITE_TIMEOUT,
        "the stuck client left {:?} after the chat began, before write_timeout ({WRITE_TIMEOUT:?})",
        first_left - speaking
    );
    ensure!(
        first_left - speaking <= spoken + WRITE_TIMEOUT * 3,
        "the stuck client was disconnected only {:?} after the chat began",
        first_left - speaking
    );
    ensure!(
        stuck_says < MESSAGES,
        "the stuck client got all {MESSAGES} messages: its buffers never filled"
    );
    Ok(())
}
