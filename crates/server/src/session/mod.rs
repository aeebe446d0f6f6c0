//! The session core: one state machine per connection that decides what a line means.
//!
//! It is given a decoded line (or the reason the codec refused one) with the instant its first
//! byte arrived, and writes its replies into an [`Outbox`]; it knows nothing of sockets, so
//! every transport (TCP, TLS, the admin socket, later WebSocket) shares it, and every rule is
//! a unit test with a paused clock (`session/tests.rs`).
//!
//! - this file: the session's state, the dispatch of commands, the queries, the error streak;
//! - [`student`](self::student): JOIN, PRESENT, SAY and the kiosk hand-over;
//! - [`admin`](self::admin): SHUTDOWN and the admin socket's reports;
//! - [`limits`]: the line and chat rate limits.

mod admin;
mod admission;
pub mod limits;
mod outbox;
mod student;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use attendance_protocol::{
    ADMIN_HELP_TEXT, Command, CommandError, ErrorCode, Event, HELP_TEXT, Hello, LineError, Reply,
    ServerLine, Text, Timestamp, Token, Transport,
};
use bytes::Bytes;
use tokio::time::Instant;

use self::limits::{Limiter, limiter, wait_turn};
pub use self::outbox::Outbox;
use crate::attendance::Seat;
use crate::engine::Engine;
use crate::hub::Membership;

/// Identifies one connection (the hub uses it so a member skips its own announcements).
pub type ConnId = u64;

/// One decoded line, or the reason the codec refused it.
pub type LineItem = Result<String, LineError>;

/// Who is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Peer {
    /// A student (or anyone) over TCP, plain or TLS.
    Tcp(SocketAddr),
    /// A student (or anyone) over the web server's `/ws` WebSocket.
    Ws(SocketAddr),
    /// The local administrator over the admin Unix socket: trusted, needs no token, and cannot
    /// check in as a student.
    Admin,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) | Self::Ws(addr) => addr.fmt(f),
            Self::Admin => f.write_str("admin-socket"),
        }
    }
}

impl Peer {
    /// The remote address of a network peer; `None` for the admin socket.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(addr) | Self::Ws(addr) => Some(*addr),
            Self::Admin => None,
        }
    }

    /// The transport of a network peer, as the admin `WHO` list shows it; `None` for the admin
    /// socket.
    pub fn transport(&self) -> Option<Transport> {
        match self {
            Self::Tcp(_) => Some(Transport::Tcp),
            Self::Ws(_) => Some(Transport::Ws),
            Self::Admin => None,
        }
    }
}

/// What the transport does after the session answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep the connection.
    Continue,
    /// Write what is in the outbox, then close.
    Close,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    engine: Arc<Engine>,
    peer: Peer,
    conn: ConnId,
    accepted: Instant,
    seat: Option<Seat>,
    /// The client said QUIT: its seat is given back, not kept for a resume.
    quit: bool,
    errors_in_row: u32,
    lines: Limiter,
    chat: Limiter,
}

impl Session {
    /// A session for a connection from `peer`, accepted at `accepted`.
    pub fn new(engine: Arc<Engine>, peer: Peer, conn: ConnId, accepted: Instant) -> Self {
        let live = engine.live();
        let lines = limiter(live.rate_limit, live.rate_burst);
        let chat = limiter(live.chat_rate, live.chat_burst);
        drop(live);
        Self {
            engine,
            peer,
            conn,
            accepted,
            seat: None,
            quit: false,
            errors_in_row: 0,
            lines,
            chat,
        }
    }

    /// The engine this session runs on.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The peer.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// The greeting, encoded once for every connection.
    pub fn hello(&self) -> Bytes {
        self.engine.hello.clone()
    }

    /// When the connection must have joined by, if it must (never on the admin socket, and no
    /// longer once joined).
    pub fn login_deadline(&self) -> Option<Instant> {
        (self.peer != Peer::Admin && self.seat.is_none())
            .then(|| self.accepted + self.engine.live().login_timeout)
    }

    /// The login deadline passed without a JOIN: `ERR TIMEOUT`, close.
    pub fn on_login_timeout(&mut self, out: &mut Outbox) -> Flow {
        let secs = self.engine.live().login_timeout.as_secs();
        self.send(
            out,
            &ServerLine::err(
                ErrorCode::Timeout,
                format!("no JOIN within {secs} seconds; closing"),
            ),
        );
        Flow::Close
    }

    /// The class membership, while seated: the transport waits on its receiver.
    pub fn membership_mut(&mut self) -> Option<&mut Membership> {
        self.seat.as_mut().map(|s| &mut s.membership)
    }

    /// The connection's own id.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// The connection is gone. A seat not yet served, that the client did not give up with
    /// QUIT, waits `resume_grace` for a `RESUME`; any other seat is given back now, and the
    /// class hears the student leave. When the server is shutting down, a seat is kept only on
    /// a node of a cluster: the student resumes on another node (through the balancer) with
    /// the time served, as after a crash; a single node's seats die with it.
    pub fn end(mut self) {
        let Some(seat) = self.seat.take() else {
            return;
        };
        let grace = self.grace_for(&seat.membership.id.class);
        let today = Timestamp::now();
        let keep = !self.quit
            && !grace.is_zero()
            && (!self.engine.shutdown.is_cancelled() || self.engine.cluster.is_some())
            && !seat.recorded()
            && self.marked_today(&seat.membership.id, today).is_none();
        if keep {
            let day = self.engine.store.local_date(today);
            seat.membership.park(grace, day);
        }
    }

    /// How long a dropped seat of `class` waits for a resume.
    fn grace_for(&self, class: &attendance_protocol::ClassKey) -> std::time::Duration {
        self.engine
            .rules
            .get(class)
            .and_then(|r| r.grace)
            .unwrap_or(self.engine.live().resume_grace)
    }

    /// Handles what the transport read: a line (whose first byte arrived at `arrived`) or a
    /// line the codec refused. A flood waits its turn here first: past the burst, each line
    /// waits, so a flood costs nothing but the kernel's socket buffer (TCP pushes back).
    pub async fn on_item(&mut self, item: LineItem, arrived: Instant, out: &mut Outbox) -> Flow {
        if self.lines.check().is_err() {
            Box::pin(wait_turn(&self.lines)).await;
        }
        match item {
            Ok(line) => self.on_line(&line, arrived, out).await,
            Err(LineError::TooLong(max)) => {
                let why = format!("line longer than {max} bytes; it was discarded");
                self.refuse(out, ErrorCode::TooLong, why)
            }
            Err(_) => self.refuse(
                out,
                ErrorCode::Encoding,
                "line is not valid UTF-8; it was discarded",
            ),
        }
    }

    /// Counts what the metrics count, and queues `line`.
    fn send(&self, out: &mut Outbox, line: &ServerLine) {
        match line {
            ServerLine::Err { code, .. } => self.engine.metrics.refused(*code),
            ServerLine::Event(Event::Lagged(n)) => self.engine.metrics.lagged(*n),
            _ => {}
        }
        out.push(line);
    }

    fn reply(&mut self, out: &mut Outbox, reply: Reply) -> Flow {
        self.errors_in_row = 0;
        self.send(out, &ServerLine::Ok(reply));
        Flow::Continue
    }

    /// Sends an `ERR` line; too many protocol errors in a row close the connection. Refusals
    /// that are not the client's fault (EARLY, STORAGE, SHUTTINGDOWN) do not count.
    fn refuse(
        &mut self,
        out: &mut Outbox,
        code: ErrorCode,
        message: impl std::fmt::Display,
    ) -> Flow {
        self.send(out, &ServerLine::err(code, message));
        if matches!(
            code,
            ErrorCode::Early | ErrorCode::Storage | ErrorCode::ShuttingDown
        ) {
            return Flow::Continue;
        }
        self.errors_in_row += 1;
        if self.errors_in_row >= self.engine.live().max_errors {
            let n = self.errors_in_row;
            self.send(
                out,
                &ServerLine::err(
                    ErrorCode::TooManyErrors,
                    format!("{n} errors in a row; closing"),
                ),
            );
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn on_line(&mut self, line: &str, arrived: Instant, out: &mut Outbox) -> Flow {
        let command = match Command::parse(line) {
            Ok(c) => c,
            Err(CommandError::Empty) => return Flow::Continue,
            Err(e) => return self.refuse(out, e.code(), &e),
        };
        match command {
            Command::Join(id, code) => self.join(id, code.as_ref(), arrived, out).await.0,
            Command::Resume(token) => self.resume(&token, out).await,
            Command::History | Command::Present | Command::Say(_) if !self.still_holds(out) => {
                Flow::Close
            }
            Command::History => self.history(out),
            Command::JoinPresent(id) => self.join_present(id, arrived, out).await,
            Command::Present => self.present(out).await,
            Command::Time => self.reply(out, Reply::Time(Timestamp::now())),
            Command::Elapsed => {
                let secs = self.accepted.elapsed().as_secs();
                self.reply(out, Reply::Elapsed(secs))
            }
            Command::Clients => {
                let mut n = self.engine.open_connections() as u64;
                if let Some(cluster) = self.engine.cluster.clone() {
                    // Unreachable: this node's own count.
                    n = cluster.0.clients(n).await.unwrap_or(n);
                }
                self.reply(out, Reply::Clients(n))
            }
            Command::Ping(t) => self.reply(out, Reply::Pong(t)),
            Command::Say(text) => self.say(text, out),
            Command::Help if self.peer == Peer::Admin => {
                self.reply(out, Reply::Help(Text::lossy(ADMIN_HELP_TEXT)))
            }
            Command::Help => self.reply(out, Reply::Help(Text::lossy(HELP_TEXT))),
            Command::Quit => {
                self.quit = true;
                self.reply(out, Reply::Bye);
                Flow::Close
            }
            Command::Shutdown(t) => self.shutdown(t, out),
            command if command.is_admin_only() && self.peer != Peer::Admin => {
                let word = command.word();
                self.refuse(
                    out,
                    ErrorCode::Denied,
                    format!("{word} is answered only on the admin socket"),
                )
            }
            command => self.admin_report(command, out),
        }
    }

    fn not_joined(&mut self, out: &mut Outbox, what: &str) -> Flow {
        self.refuse(
            out,
            ErrorCode::NotJoined,
            format!("{what} needs JOIN COURSE_DIV_NAME_ROLL first"),
        )
    }
}

/// The greeting.
pub(crate) fn hello_line() -> Bytes {
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
