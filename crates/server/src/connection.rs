//! One task per connection: reads commands, answers them, and forwards the class's
//! announcements and the heartbeat. It is the only writer to its socket, so lines never
//! interleave.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use attendance_protocol::{
    ADMIN_HELP_TEXT, Command, CommandError, ErrorCode, Event, HELP_TEXT, LineError, Reply,
    ServerLine, StudentId, Text, Timestamp, Token,
};
use bytes::Bytes;
use bytes::BytesMut;
use governor::clock::{Clock as _, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::classes::{Announcement, ConnId, Membership};
use crate::lines::{LineItem, LineSource};
use crate::server::{Shared, Signal};
use crate::store::{Mark, Recorded, StoreError};

/// The connection must close (the peer is gone or stuck).
#[derive(Debug)]
struct Closed;

/// What to do after a command.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

type Step = Result<Flow, Closed>;

struct Joined {
    membership: Membership,
    since: Instant,
    at: Timestamp,
    /// Marked present (today, or on the day it was marked): the connection may take the next
    /// student. Kept here so the hand-over needs no look-up.
    marked: bool,
}

/// Who is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// A student (or anyone) over TCP.
    Tcp(SocketAddr),
    /// The local administrator over the admin Unix socket: trusted, needs no token, and cannot
    /// check in as a student.
    Admin,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => addr.fmt(f),
            Self::Admin => f.write_str("admin-socket"),
        }
    }
}

struct Connection<W> {
    shared: Arc<Shared>,
    conn: ConnId,
    peer: Peer,
    accepted: Instant,
    /// The socket's write half. Lines are written straight from their shared `Bytes`; no
    /// per-connection write buffer is kept.
    writer: W,
    joined: Option<Joined>,
    errors_in_row: u32,
    lines: Limiter,
    chat: Limiter,
    /// While answering lines that arrived before the greeting went out: everything sent is
    /// gathered here and written at once. Boxed: `None` for almost every connection.
    corked: Option<Box<BytesMut>>,
}

/// Waits (on tokio's clock) until `limiter` allows one more cell, and takes it.
async fn wait_turn(limiter: &Limiter) {
    // Bounded: each failed check names the instant a cell frees up.
    for _ in 0..1000 {
        match limiter.check() {
            Ok(()) => return,
            Err(not_until) => {
                let wait = not_until.wait_time_from(MonotonicClock.now());
                tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
            }
        }
    }
}

/// A rate limiter on the monotonic std clock: smaller per connection than governor's default
/// (quanta) clock, and precise enough for lines per second.
type Limiter =
    RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<std::time::Instant>>;

fn limiter(per_second: u32, burst: u32) -> Limiter {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct_with_clock(
        Quota::per_second(per_second).allow_burst(burst),
        MonotonicClock,
    )
}

/// Most announcement lines gathered into one write.
const MAX_GATHER: usize = 64;

/// Most lines whose replies are gathered into one write (see `Connection::answer_corked`).
const MAX_CORKED_LINES: usize = 8;

/// Room a gathered write starts with: the usual replies (`OK JOIN …`, `OK PRESENT …`) fit
/// without the buffer growing (it grew twice per kiosk mark, a reallocation each time).
const CORK_ROOM: usize = 256;

/// Serves one client until it quits, drops, misbehaves too often or the server shuts down.
pub(crate) async fn serve<L, W>(
    shared: Arc<Shared>,
    mut reader: L,
    write: W,
    peer: Peer,
    conn: ConnId,
) where
    L: LineSource,
    W: AsyncWrite + Unpin + Send,
{
    debug!("accepted");
    let signals = shared.signals.subscribe();
    let mut c = Connection {
        accepted: Instant::now(),
        writer: write,
        joined: None,
        errors_in_row: 0,
        lines: limiter(
            shared.config.load().rate_limit,
            shared.config.load().rate_burst,
        ),
        chat: limiter(
            shared.config.load().chat_rate,
            shared.config.load().chat_burst,
        ),
        shared,
        conn,
        peer,
        corked: None,
    };
    let _ = c.run(&mut reader, signals).await;
    if let Some(joined) = c.joined.take() {
        c.shared.classes.leave(joined.membership);
    }
    debug!("closed");
}

/// The next server-wide signal, with the receiver handed back for the next wait.
///
/// Kept alive across the connection loop's turns: a `recv` future made afresh on every turn
/// would register and unregister a waiter in the channel that every connection shares, under
/// its lock, for every line a client sends.
async fn next_signal(
    mut rx: broadcast::Receiver<Signal>,
) -> (Result<Signal, RecvError>, broadcast::Receiver<Signal>) {
    let signal = rx.recv().await;
    (signal, rx)
}

async fn next_announcement(joined: &mut Option<Joined>) -> Result<Announcement, RecvError> {
    match joined {
        Some(j) => j.membership.receiver().recv().await,
        None => std::future::pending().await,
    }
}

impl<W: AsyncWrite + Unpin + Send> Connection<W> {
    /// The connection's loop. Memory matters here: tens of thousands of these sit idle for an
    /// hour, so everything awaited only now and then (replies, the login timer, rate-limit
    /// waits, forwarding) is boxed, and the idle state is just three small futures: the next
    /// line, the next announcement and the next server-wide signal.
    async fn run<L: LineSource>(
        &mut self,
        reader: &mut L,
        signals: broadcast::Receiver<Signal>,
    ) -> Step {
        let hello = self.shared.hello.clone();
        if Box::pin(self.answer_early(reader, hello)).await? == Flow::Close {
            return Ok(Flow::Close);
        }
        let mut login_timer = (self.peer != Peer::Admin).then(|| {
            Box::pin(tokio::time::sleep_until(
                self.accepted + self.shared.config.load().login_timeout,
            ))
        });
        let next_signal = next_signal(signals);
        tokio::pin!(next_signal);
        loop {
            if self.joined.is_some() {
                login_timer = None;
            }
            tokio::select! {
                biased;
                (signal, signals) = &mut next_signal => {
                    next_signal.set(self::next_signal(signals));
                    // The flag decides, not the value: a heartbeat racing the shutdown (or a
                    // lag that skipped it) must not hide it.
                    if self.shared.shutdown.is_cancelled() {
                        Box::pin(self.send_line(&ServerLine::Event(Event::Shutdown))).await?;
                        return Ok(Flow::Close);
                    }
                    if let Ok(Signal::Heartbeat(line)) = signal {
                        Box::pin(self.send(line)).await?;
                    }
                }
                item = reader.next_line() => {
                    if Box::pin(self.answer_lines(reader, item)).await? == Flow::Close {
                        return Ok(Flow::Close);
                    }
                }
                received = next_announcement(&mut self.joined) => match received {
                    Ok(a) => Box::pin(self.forward(a)).await?,
                    Err(RecvError::Lagged(n)) => {
                        Box::pin(self.send_line(&ServerLine::Event(Event::Lagged(n)))).await?;
                    }
                    Err(RecvError::Closed) => return Ok(Flow::Close),
                },
                () = async { if let Some(t) = &mut login_timer { t.await } }, if login_timer.is_some() && self.joined.is_none() => {
                    let secs = self.shared.config.load().login_timeout.as_secs();
                    let line = ServerLine::err(ErrorCode::Timeout, format!("no JOIN within {secs} seconds; closing"));
                    Box::pin(self.send_line(&line)).await?;
                    return Ok(Flow::Close);
                }
            }
        }
    }

    /// Greets the client. A client that sent lines without waiting for the greeting (a program
    /// may) has them answered now, and the greeting and the replies go out in one write.
    async fn answer_early<L: LineSource>(&mut self, reader: &mut L, hello: Bytes) -> Step {
        let Some(first) = reader.buffered_line() else {
            self.send(hello).await?;
            return Ok(Flow::Continue);
        };
        let mut head = BytesMut::with_capacity(hello.len() + CORK_ROOM);
        head.extend_from_slice(&hello);
        self.answer_corked(reader, first, head).await
    }

    /// Answers a line that arrived with others behind it (a program pipelining `JOIN` and
    /// `PRESENT`, a paste into netcat): the lines already read are answered in turn and their
    /// replies go out in one write. A lone line is answered straight away.
    async fn answer_lines<L: LineSource>(
        &mut self,
        reader: &mut L,
        item: Option<std::io::Result<LineItem>>,
    ) -> Step {
        match item {
            Some(first) if reader.has_buffered() => {
                self.answer_corked(reader, first, BytesMut::with_capacity(CORK_ROOM))
                    .await
            }
            item => self.take_line(item).await,
        }
    }

    /// Answers `first` and the lines buffered behind it, gathering everything sent after
    /// `head` into one write.
    async fn answer_corked<L: LineSource>(
        &mut self,
        reader: &mut L,
        first: std::io::Result<LineItem>,
        head: BytesMut,
    ) -> Step {
        self.corked = Some(Box::new(head));
        let mut flow = self.take_line(Some(first)).await;
        // Bounded: only lines already read, and at most a handful per write.
        for _ in 1..MAX_CORKED_LINES {
            if !matches!(flow, Ok(Flow::Continue)) {
                break;
            }
            let Some(item) = reader.buffered_line() else {
                break;
            };
            flow = self.take_line(Some(item)).await;
        }
        // Whatever happened, what was gathered goes out (a QUIT's BYE, an ERR before closing).
        self.uncork().await?;
        flow
    }

    /// Stops gathering and writes what was gathered, if anything.
    async fn uncork(&mut self) -> Result<(), Closed> {
        match self.corked.take().filter(|out| !out.is_empty()) {
            Some(out) => self.send(out.freeze()).await,
            None => Ok(()),
        }
    }

    /// Handles what the line source gave: a line, a refused line, an error or the end.
    async fn take_line(&mut self, item: Option<std::io::Result<LineItem>>) -> Step {
        // Flooding: past the burst, each line waits its turn, so a flood costs the server
        // nothing but the kernel's socket buffer (TCP pushes back).
        if self.lines.check().is_err() {
            Box::pin(wait_turn(&self.lines)).await;
        }
        match item {
            None => Ok(Flow::Close),
            Some(Err(e)) => {
                debug!(error = %e, "read failed");
                Err(Closed)
            }
            Some(Ok(line)) => self.on_item(line).await,
        }
    }

    /// Handles one decoded line or a line the codec refused.
    async fn on_item(&mut self, item: LineItem) -> Step {
        match item {
            Ok(line) => self.on_line(&line).await,
            Err(LineError::TooLong(max)) => {
                let why = format!("line longer than {max} bytes; it was discarded");
                self.refuse(ErrorCode::TooLong, why).await
            }
            Err(_) => {
                self.refuse(
                    ErrorCode::Encoding,
                    "line is not valid UTF-8; it was discarded",
                )
                .await
            }
        }
    }

    /// Writes an announcement, and any others already waiting, in one write.
    async fn forward(&mut self, first: Announcement) -> Result<(), Closed> {
        let me = self.conn;
        let mut lagged = None;
        let mut batch: Option<BytesMut> = None;
        let mut single = None;
        if let Some(j) = &mut self.joined {
            // The class's move to its full ring is followed, not written.
            if !j.membership.follow(&first) && first.from != me {
                single = Some(first.line.clone());
            }
            for _ in 0..MAX_GATHER {
                match j.membership.try_recv() {
                    Ok(a) if a.from == me => {}
                    Ok(a) => {
                        let buf = batch.get_or_insert_with(BytesMut::new);
                        if let Some(line) = single.take() {
                            buf.extend_from_slice(&line);
                        }
                        buf.extend_from_slice(&a.line);
                    }
                    Err(TryRecvError::Lagged(n)) => {
                        lagged = Some(n);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        if let Some(buf) = batch {
            self.send(buf.freeze()).await?;
        } else if let Some(line) = single {
            self.send(line).await?;
        }
        if let Some(n) = lagged {
            self.send_line(&ServerLine::Event(Event::Lagged(n))).await?;
        }
        Ok(())
    }

    /// Writes one pre-encoded line, giving up on a peer that does not read for `write_timeout`.
    async fn send(&mut self, line: Bytes) -> Result<(), Closed> {
        if let Some(out) = &mut self.corked {
            out.extend_from_slice(&line);
            return Ok(());
        }
        // Nearly every line fits in the socket's buffer at once: tried first without a timer,
        // which keeps the timeout's state out of every future that sends.
        let mut sent = 0;
        let now = std::future::poll_fn(|cx| {
            Poll::Ready(write_now(&mut self.writer, cx, &line, &mut sent))
        })
        .await;
        match now {
            Ok(true) => Ok(()),
            Ok(false) => Box::pin(self.send_rest(line, sent)).await,
            Err(e) => {
                debug!(error = %e, "write failed");
                Err(Closed)
            }
        }
    }

    /// The rest of `line` after its first `sent` bytes, for a peer that reads slowly.
    async fn send_rest(&mut self, line: Bytes, sent: usize) -> Result<(), Closed> {
        let writer = &mut self.writer;
        let write = async move {
            writer.write_all(&line[sent..]).await?;
            // A no-op on TCP; pushes out the TLS record.
            writer.flush().await
        };
        match tokio::time::timeout(self.shared.config.load().write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                debug!(error = %e, "write failed");
                Err(Closed)
            }
            Err(_) => {
                warn!(
                    peer = %self.peer,
                    "client has not read for {:?}; closing",
                    self.shared.config.load().write_timeout
                );
                Err(Closed)
            }
        }
    }

    async fn send_line(&mut self, line: &ServerLine) -> Result<(), Closed> {
        match line {
            ServerLine::Err { code, .. } => self.shared.metrics.refused(*code),
            ServerLine::Event(Event::Lagged(n)) => self.shared.metrics.lagged(*n),
            _ => {}
        }
        // Gathering: straight into the gathered write, without a buffer of the line's own.
        if let Some(out) = &mut self.corked {
            line.encode_into(&mut **out);
            return Ok(());
        }
        self.send(line.encode()).await
    }

    async fn reply(&mut self, reply: Reply) -> Step {
        self.errors_in_row = 0;
        self.send_line(&ServerLine::Ok(reply)).await?;
        Ok(Flow::Continue)
    }

    /// Sends an `ERR` line; too many protocol errors in a row close the connection.
    async fn refuse(&mut self, code: ErrorCode, message: impl std::fmt::Display + Send) -> Step {
        self.send_line(&ServerLine::err(code, message)).await?;
        if matches!(
            code,
            ErrorCode::Early | ErrorCode::Storage | ErrorCode::ShuttingDown
        ) {
            return Ok(Flow::Continue);
        }
        self.errors_in_row += 1;
        if self.errors_in_row >= self.shared.config.load().max_errors {
            let n = self.errors_in_row;
            self.send_line(&ServerLine::err(
                ErrorCode::TooManyErrors,
                format!("{n} errors in a row; closing"),
            ))
            .await?;
            return Ok(Flow::Close);
        }
        Ok(Flow::Continue)
    }

    async fn on_line(&mut self, line: &str) -> Step {
        let command = match Command::parse(line) {
            Ok(c) => c,
            Err(CommandError::Empty) => return Ok(Flow::Continue),
            Err(e) => return self.refuse(e.code(), &e).await,
        };
        match command {
            Command::Join(id) => self.join(id).await.map(|(flow, _)| flow),
            Command::JoinPresent(id) => {
                // Two replies to one line: one write, unless already gathering.
                let cork = self.corked.is_none();
                if cork {
                    self.corked = Some(Box::new(BytesMut::with_capacity(CORK_ROOM)));
                }
                let flow = match self.join(id).await {
                    Ok((Flow::Continue, true)) => self.present().await,
                    Ok((flow, _)) => Ok(flow),
                    Err(closed) => Err(closed),
                };
                if cork {
                    self.uncork().await?;
                }
                flow
            }
            Command::Present => self.present().await,
            Command::Time => self.reply(Reply::Time(Timestamp::now())).await,
            Command::Elapsed => {
                let secs = self.accepted.elapsed().as_secs();
                self.reply(Reply::Elapsed(secs)).await
            }
            Command::Clients => {
                let n = self.shared.open_connections() as u64;
                self.reply(Reply::Clients(n)).await
            }
            Command::Ping(t) => self.reply(Reply::Pong(t)).await,
            Command::Say(_) if self.joined.is_some() && self.chat.check().is_err() => {
                let (rate, burst) = (
                    self.shared.config.load().chat_rate,
                    self.shared.config.load().chat_burst,
                );
                self.refuse(ErrorCode::Rate, format!("chat is limited to {rate} messages a second (bursts of {burst}); message not sent")).await
            }
            Command::Say(text) => match &self.joined {
                Some(j) => {
                    let name = j.membership.id.name.clone();
                    j.membership.announce(Event::Say { name, text });
                    self.reply(Reply::Say).await
                }
                None => self.not_joined("SAY").await,
            },
            Command::Help if self.peer == Peer::Admin => {
                self.reply(Reply::Help(Text::lossy(ADMIN_HELP_TEXT))).await
            }
            Command::Help => self.reply(Reply::Help(Text::lossy(HELP_TEXT))).await,
            Command::Quit => {
                self.reply(Reply::Bye).await?;
                Ok(Flow::Close)
            }
            Command::Shutdown(t) => self.shutdown(t).await,
            command if command.is_admin_only() && self.peer != Peer::Admin => {
                let word = command.word();
                self.refuse(
                    ErrorCode::Denied,
                    format!("{word} is answered only on the admin socket"),
                )
                .await
            }
            Command::Status => {
                let status = crate::admin_report::status(&self.shared);
                self.reply(Reply::Status(status)).await
            }
            Command::Classes { offset } => {
                let page = crate::admin_report::classes(&self.shared, offset);
                self.reply(Reply::Classes(page)).await
            }
            Command::Who { class, offset } => {
                let page = crate::admin_report::who(&self.shared, class.as_ref(), offset);
                self.reply(Reply::Who(page)).await
            }
        }
    }

    async fn not_joined(&mut self, what: &str) -> Step {
        self.refuse(
            ErrorCode::NotJoined,
            format!("{what} needs JOIN COURSE_DIV_NAME_ROLL first"),
        )
        .await
    }

    /// Joins a class. Returns the flow and whether this connection is now joined as `id`.
    async fn join(&mut self, id: StudentId) -> Result<(Flow, bool), Closed> {
        let Peer::Tcp(peer) = self.peer else {
            let flow = self
                .refuse(
                    ErrorCode::Denied,
                    "students check in over the network, not the admin socket",
                )
                .await?;
            return Ok((flow, false));
        };
        let class_length = self.shared.config.load().class_length;
        let since = Instant::now();
        let taken = match self.joined.take() {
            Some(mut j) if j.membership.id == id => {
                let marked_today = self.is_marked(&id, Timestamp::now());
                j.marked |= marked_today;
                let remaining = required_seconds(class_length, j.since.elapsed(), marked_today);
                self.joined = Some(j);
                let flow = self
                    .reply(Reply::Join {
                        id,
                        required_seconds: remaining,
                    })
                    .await?;
                return Ok((flow, true));
            }
            Some(j) if !j.marked => {
                let current = j.membership.id.to_string();
                self.joined = Some(j);
                let flow = self
                    .refuse(ErrorCode::Joined, format!("this connection is checked in as {current}, who is not marked present yet; send PRESENT first, or connect again to check in someone else"))
                    .await?;
                return Ok((flow, false));
            }
            // Marked: the connection is free for the next student (a lab kiosk).
            Some(mut j) => match self.shared.classes.rejoin(&mut j.membership, &id, since) {
                Ok(()) => Ok(j.membership),
                Err(e) => {
                    self.joined = Some(j);
                    Err(e)
                }
            },
            None => self.shared.classes.join_at(&id, self.conn, since),
        };
        let membership = match taken {
            Ok(m) => m,
            Err(_) => {
                let flow = self
                    .refuse(
                        ErrorCode::Already,
                        format!(
                            "roll {} is already checked in to {} on another connection",
                            id.roll, id.class
                        ),
                    )
                    .await?;
                return Ok((flow, false));
            }
        };
        debug!(student = %id, "joined");
        self.shared.metrics.joined();
        membership.announce_with(|| Event::Join {
            class: id.class.clone(),
            name: id.name.clone(),
            addr: peer.ip(),
        });
        let now = Timestamp::now();
        let marked = self.is_marked(&id, now);
        // Joined just now: the whole class length remains (no second clock read).
        let remaining = required_seconds(class_length, Duration::ZERO, marked);
        self.joined = Some(Joined {
            membership,
            since,
            at: now,
            marked,
        });
        let flow = self
            .reply(Reply::Join {
                id,
                required_seconds: remaining,
            })
            .await?;
        Ok((flow, true))
    }

    /// Whether `id` is marked present on the day of `now`.
    fn is_marked(&self, id: &StudentId, now: Timestamp) -> bool {
        self.shared
            .store
            .marked_at(&id.class, &id.roll, now)
            .is_some()
    }

    async fn present(&mut self) -> Step {
        let Some(j) = &self.joined else {
            return self.not_joined("PRESENT").await;
        };
        // The identity is borrowed from the membership throughout (no clone per mark).
        let id = &j.membership.id;
        let now = Timestamp::now();
        // Only a student marked before can have a mark today to find: a roll is held by one
        // connection at a time, JOIN looked up the marks made before (`marked`), and a mark
        // made here sets it. A mark of an earlier day leaves it set, hence the look-up then.
        let earlier = if j.marked {
            self.shared.store.marked_at(&id.class, &id.roll, now)
        } else {
            None
        };
        if let Some(at) = earlier {
            return self.reply(Reply::Present { marked_at: at }).await;
        }
        let served = j.since.elapsed();
        let class_length = self.shared.config.load().class_length;
        if served < class_length {
            let line = ServerLine::early(ceil_secs(class_length - served));
            self.send_line(&line).await?;
            return Ok(Flow::Continue);
        }
        let mark = Mark {
            id: id.clone(),
            marked_at: now,
            joined_at: j.at,
            addr: match self.peer {
                Peer::Tcp(addr) => Some(addr.ip()),
                Peer::Admin => None,
            },
        };
        match self.shared.store.record(mark).await {
            Ok(Recorded::Existing(at)) => {
                if let Some(j) = &mut self.joined {
                    j.marked = true;
                }
                self.reply(Reply::Present { marked_at: at }).await
            }
            Ok(Recorded::New(now)) => {
                debug!(student = %id, "marked present");
                j.membership.announce_with(|| Event::Present {
                    name: id.name.clone(),
                });
                if let Some(j) = &mut self.joined {
                    j.marked = true;
                }
                self.reply(Reply::Present { marked_at: now }).await
            }
            Err(StoreError::Storage(e)) => {
                warn!(peer = %self.peer, student = %id, error = %e, "mark not stored");
                self.refuse(ErrorCode::Storage, "the mark could not be written to disk; you are NOT marked yet, send PRESENT again").await
            }
            Err(_) => {
                self.refuse(
                    ErrorCode::ShuttingDown,
                    "the server is shutting down; you are NOT marked, try again when it is back",
                )
                .await
            }
        }
    }

    async fn shutdown(&mut self, token: Option<Token>) -> Step {
        let peer = self.peer;
        let trusted = peer == Peer::Admin;
        match token {
            _ if trusted => {
                warn!(%peer, "shutdown requested over the admin socket");
                self.reply(Reply::Shutdown).await?;
                self.shared.shutdown.cancel();
                Ok(Flow::Continue)
            }
            Some(t) if self.shared.admin.verify(t.as_str()) => {
                warn!(%peer, "shutdown requested by an administrator");
                self.reply(Reply::Shutdown).await?;
                self.shared.shutdown.cancel();
                Ok(Flow::Continue)
            }
            Some(_) => {
                warn!(%peer, "shutdown refused: wrong admin token");
                self.refuse(ErrorCode::Denied, "wrong admin token").await
            }
            None => {
                warn!(%peer, "shutdown refused: no admin token");
                self.refuse(
                    ErrorCode::Denied,
                    "SHUTDOWN needs the admin token: SHUTDOWN <token>",
                )
                .await
            }
        }
    }
}

/// Writes what `writer` takes of `line` (from `sent` on, which it advances) and flushes,
/// without waiting: `Ok(true)` once everything is out, `Ok(false)` if the rest must wait.
fn write_now<W: AsyncWrite + Unpin>(
    writer: &mut W,
    cx: &mut Context<'_>,
    line: &[u8],
    sent: &mut usize,
) -> std::io::Result<bool> {
    // Bounded: every step either advances `sent` or returns.
    while let Some(rest) = line.get(*sent..).filter(|rest| !rest.is_empty()) {
        match Pin::new(&mut *writer).poll_write(cx, rest) {
            Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => *sent += n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(false),
        }
    }
    match Pin::new(writer).poll_flush(cx) {
        Poll::Ready(Ok(())) => Ok(true),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(false),
    }
}

/// Whole seconds (rounded up) a student who has been here for `served` must still stay; zero
/// once marked.
fn required_seconds(class_length: Duration, served: Duration, marked: bool) -> u64 {
    if marked {
        0
    } else {
        ceil_secs(class_length.saturating_sub(served))
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
