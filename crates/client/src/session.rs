//! One attendance session: connect, join, wait out the class, mark present, leave.
//!
//! [`run`] drives the whole session and returns [`Marked`] or a [`ClientError`] whose
//! [`ClientError::exit_code`] is what `attend` exits with. All waiting happens on the tokio clock,
//! so tests can run a class of any length with paused time. Replies come in the order of the
//! commands sent, so the session keeps a queue of what it is waiting for.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::time::Duration;

use attendance_protocol::{
    Command, DEFAULT_MAX_LINE, ErrorCode, Event, Hello, IdError, LineCodec, Reply, ServerLine,
    StudentId, Text, Timestamp,
};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep_until, timeout};
use tokio_util::codec::Framed;
use tokio_util::either::Either;

use crate::countdown::{Countdown, format_hms};
use crate::render::Output;
use crate::tls::{Stream, Trust};

/// How often `attend` asks for a class code before giving up.
const MAX_CODE_TRIES: u32 = 3;

/// The prompt of the original client, shown when no ID was given and stdin is a terminal.
pub const PROMPT: &str = "Enter your Name, Class and Roll no. [COURSE_DIV_NAME_NUMBER]";

/// An example of a valid ID, for error messages.
pub const ID_EXAMPLE: &str = "ComputerNetworks_Div1_JayPatel_18BCP043";

/// Longest chat message the client sends, in bytes: the server's line limit minus `SAY `.
pub const MAX_SAY_BYTES: usize = DEFAULT_MAX_LINE - "SAY ".len();

/// Process exit codes of `attend`.
pub mod exit {
    /// Attendance marked.
    pub const MARKED: i32 = 0;
    /// Storage error on the server, a refusal the client cannot act on, or a protocol failure.
    pub const FAILURE: i32 = 1;
    /// Bad command line (clap's own code), or TLS settings that cannot be used (an unreadable
    /// `--ca` file, no trusted roots, a `--server` host that cannot name a certificate).
    pub const USAGE: i32 = 2;
    /// The server could not be reached.
    pub const UNREACHABLE: i32 = 3;
    /// The ID is invalid, or the server refused it.
    pub const ID_REFUSED: i32 = 4;
    /// The connection ended (or the server shut down) before the attendance was marked.
    pub const DISCONNECTED: i32 = 5;
    /// With TLS: the server's certificate was not trusted (unknown issuer, wrong name, expired…).
    pub const CERTIFICATE: i32 = 6;
    /// Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: i32 = 130;
}

/// Why a session ended without a mark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection could not be made (refused, timed out, name not resolved).
    #[error("cannot reach the attendance server at {addr}: {source}")]
    Unreachable {
        /// The address as given.
        addr: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// TLS could not be set up on this side (CA file, trusted roots, server name).
    #[error("cannot set up TLS: {0}")]
    TlsSetup(String),
    /// The server's TLS certificate was not trusted: nothing was sent to it.
    #[error(
        "the TLS certificate of the attendance server at {addr} was not accepted: {source} \
         (trusting {trusted})"
    )]
    Certificate {
        /// The address as given.
        addr: String,
        /// What was trusted (the `--ca` file or the system's roots).
        trusted: String,
        /// Why the certificate was refused.
        #[source]
        source: rustls::Error,
    },
    /// The TLS handshake failed for another reason than the certificate.
    #[error(
        "TLS handshake with the attendance server at {addr} failed: {source} \
         (does the server have TLS turned on?)"
    )]
    TlsHandshake {
        /// The address as given.
        addr: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// The ID does not have the form `COURSE_DIV_NAME_ROLL`.
    #[error(
        "{input:?} is not a valid ID: {source} (expected COURSE_DIV_NAME_ROLL, e.g. {ID_EXAMPLE})"
    )]
    InvalidId {
        /// What the student gave.
        input: String,
        /// What is wrong with it.
        #[source]
        source: IdError,
    },
    /// Standard input ended before an ID was read.
    #[error(
        "no ID given: standard input ended before a line was read (pass COURSE_DIV_NAME_ROLL as an argument)"
    )]
    NoId,
    /// The server refused the `JOIN`.
    #[error("the server refused the ID ({code}): {message}")]
    IdRefused {
        /// The server's error code (`BADFORMAT`, `ALREADY`, `JOINED`, …).
        code: ErrorCode,
        /// The server's explanation.
        message: Text,
    },
    /// The server closed the connection before the mark.
    #[error("the server closed the connection; your attendance was NOT marked")]
    Disconnected,
    /// The connection failed before the mark.
    #[error("lost the connection to the server: {0}; your attendance was NOT marked")]
    ConnectionLost(#[source] io::Error),
    /// The server announced its shutdown (or refused with `SHUTTINGDOWN`) before the mark.
    #[error("the server is shutting down; your attendance was NOT marked")]
    ServerShutdown,
    /// The server did not answer a `JOIN` or `PRESENT` in time.
    #[error("the server did not answer {command} within {} s; your attendance was NOT marked", .waited.as_secs())]
    NoReply {
        /// The command that went unanswered.
        command: &'static str,
        /// How long the client waited.
        waited: Duration,
    },
    /// The server could not write the mark to disk.
    #[error(
        "the server could not record your attendance ({0}); it was NOT marked, run attend again"
    )]
    Storage(Text),
    /// The server still said `EARLY` after the client retried as often as it will.
    #[error(
        "the server still says it is too early after {0} retries; your attendance was NOT marked"
    )]
    StillEarly(u32),
    /// Any other refusal.
    #[error("the server refused ({code}): {message}")]
    Refused {
        /// The server's error code.
        code: ErrorCode,
        /// The server's explanation.
        message: Text,
    },
    /// The server sent something this client does not understand where it matters.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Another device took the seat over with its resume token; this one stops (and does not
    /// take it back, or the two would take it from each other forever).
    #[error("your seat was taken over by another device that checked in with your resume token")]
    Replaced,
    /// The connection dropped and the server could not be reached again in time.
    #[error("lost the connection to the server and could not get back within {} s; your attendance was NOT marked", .0.as_secs())]
    GaveUp(Duration),
    /// Ctrl-C: the client left the class.
    #[error("interrupted: you left the class; your attendance was NOT marked")]
    Interrupted,
}

impl ClientError {
    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Unreachable { .. } | Self::TlsHandshake { .. } => exit::UNREACHABLE,
            Self::TlsSetup(_) => exit::USAGE,
            Self::Certificate { .. } => exit::CERTIFICATE,
            Self::InvalidId { .. } | Self::NoId | Self::IdRefused { .. } => exit::ID_REFUSED,
            Self::Disconnected
            | Self::ConnectionLost(_)
            | Self::ServerShutdown
            | Self::Replaced
            | Self::GaveUp(_)
            | Self::NoReply { .. } => exit::DISCONNECTED,
            Self::Storage(_) | Self::StillEarly(_) | Self::Refused { .. } | Self::Protocol(_) => {
                exit::FAILURE
            }
            Self::Interrupted => exit::INTERRUPTED,
        }
    }
}

/// A successful session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    /// Who was marked, as the server confirmed it.
    pub id: StudentId,
    /// When the server recorded the mark.
    pub at: Timestamp,
    /// How many `ERR EARLY` answers came before the mark.
    pub early_retries: u32,
}

/// Where the student's ID comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    /// Given on the command line.
    Given(String),
    /// The first line of input; `prompt` says whether to show [`PROMPT`] first (only when
    /// stdin is a terminal).
    Ask {
        /// Show the prompt.
        prompt: bool,
    },
}

/// Timeouts and limits of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Longest wait for the TCP connection and for the greeting.
    pub connect_timeout: Duration,
    /// Longest wait for the answer to `JOIN` or `PRESENT`.
    pub reply_timeout: Duration,
    /// Longest wait for `OK BYE` after `QUIT`.
    pub quit_timeout: Duration,
    /// How many `ERR EARLY` answers are waited out before giving up.
    pub max_early_retries: u32,
    /// `Some`: connect with TLS, trusting these certificate authorities; `None`: plain TCP.
    pub tls: Option<Trust>,
    /// After a drop, how long the client keeps reconnecting (with backoff and jitter) to
    /// `RESUME` its seat; zero gives up at once. The server's default grace is 5 minutes.
    pub reconnect_for: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(30),
            quit_timeout: Duration::from_secs(2),
            max_early_retries: 5,
            tls: None,
            reconnect_for: Duration::from_secs(300),
        }
    }
}

/// Runs a whole session against the server at `server` (`HOST:PORT`).
///
/// Connects, shows the greeting, gets the ID (see [`IdSource`]; asking reads the first line of
/// `input`), validates it, joins, counts down the seconds the server requires while printing
/// events and sending each further non-empty `input` line as `SAY`, then sends `PRESENT` (waiting
/// out `ERR EARLY` up to [`Options::max_early_retries`] times) and leaves with `QUIT`. When
/// `interrupt` completes, the session sends `QUIT`, waits at most [`Options::quit_timeout`] for
/// `OK BYE`, and returns [`ClientError::Interrupted`].
///
/// # Errors
/// A [`ClientError`] saying why the attendance was not marked.
pub async fn run(
    server: &str,
    id: IdSource,
    input: &mut mpsc::Receiver<String>,
    interrupt: impl Future<Output = ()>,
    out: &mut Output,
    options: &Options,
) -> Result<Marked, ClientError> {
    tokio::pin!(interrupt);
    let mut session = tokio::select! {
        () = &mut interrupt => return Err(ClientError::Interrupted),
        s = Session::connect(server, options.clone()) => s?,
    };
    out.greeting(session.hello());

    let raw = match id {
        IdSource::Given(raw) => raw,
        IdSource::Ask { prompt } => {
            if prompt {
                out.prompt(PROMPT);
            }
            tokio::select! {
                () = &mut interrupt => {
                    session.leave().await;
                    return Err(ClientError::Interrupted);
                }
                line = input.recv() => line.ok_or(ClientError::NoId)?,
            }
        }
    };
    let raw = raw.trim();
    let id = match raw.parse::<StudentId>() {
        Ok(id) => id,
        Err(source) => {
            session.leave().await;
            return Err(ClientError::InvalidId {
                input: raw.to_owned(),
                source,
            });
        }
    };
    let mut opening = Opening::Join;
    let mut after_shutdown = false;
    // Bounded: each turn follows a drop, and reconnecting gives up after `reconnect_for`; a
    // shutdown is tried past once.
    loop {
        let result = session
            .attend(id.clone(), opening, input, &mut interrupt, out)
            .await;
        let resumable = session.token.is_some() && !options.reconnect_for.is_zero();
        let budget = match result {
            Err(ClientError::Disconnected | ClientError::ConnectionLost(_)) if resumable => {
                out.line("The connection to the server dropped; reconnecting to keep your seat");
                options.reconnect_for
            }
            // Behind a balancer another node of the service keeps the seat for a RESUME; a
            // single server that is gone is given up on after a moment.
            Err(ClientError::ServerShutdown) if resumable && !after_shutdown => {
                after_shutdown = true;
                out.line(
                    "The server is shutting down; trying the service once more to keep your seat",
                );
                AFTER_SHUTDOWN.min(options.reconnect_for)
            }
            other => return other,
        };
        let Some(token) = session.token.take() else {
            return Err(ClientError::Disconnected);
        };
        session = tokio::select! {
            () = &mut interrupt => return Err(ClientError::Interrupted),
            s = reconnect(server, options, budget, out) => match s {
                Err(ClientError::GaveUp(_)) if after_shutdown => {
                    return Err(ClientError::ServerShutdown);
                }
                s => s?,
            },
        };
        opening = Opening::Resume(token);
    }
}

/// After `EVENT SHUTDOWN`, how long the client tries to reach the service again.
const AFTER_SHUTDOWN: Duration = Duration::from_secs(3);

/// Connects again after a drop, with exponential backoff (0.5 s doubling to 10 s) and ±30 %
/// jitter, so a room of students whose Wi-Fi came back does not knock all at once; gives up
/// after `budget` ([`Options::reconnect_for`], or [`AFTER_SHUTDOWN`]).
async fn reconnect(
    server: &str,
    options: &Options,
    budget: Duration,
    out: &mut Output,
) -> Result<Session, ClientError> {
    let started = Instant::now();
    let give_up = started + budget;
    let mut delay = Duration::from_millis(500);
    // Bounded by time, and by count as a second guard.
    for attempt in 1..=10_000u32 {
        let wait = jittered(delay);
        if Instant::now() + wait >= give_up {
            break;
        }
        tokio::time::sleep(wait).await;
        match Session::connect(server, options.clone()).await {
            Ok(session) => {
                out.line(&format!("Reconnected (attempt {attempt})"));
                return Ok(session);
            }
            // A server that refuses us outright (TLS, a bad certificate) will not change its mind.
            Err(e @ (ClientError::TlsSetup(_) | ClientError::Certificate { .. })) => return Err(e),
            Err(e) => {
                out.clear_progress();
                out.line(&format!("* reconnecting, attempt {attempt}: {e}"));
            }
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    Err(ClientError::GaveUp(budget))
}

/// `delay` moved by up to 30 % either way, at random.
fn jittered(delay: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A hasher seeded afresh by the OS: random enough to spread reconnects, and no new crate.
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let per_mille = 700 + r % 601;
    delay * u32::try_from(per_mille).unwrap_or(1000) / 1000
}

/// How [`Session::attend`] takes its seat.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Opening {
    /// `JOIN` the class.
    Join,
    /// `RESUME` the seat this token was issued with (after a drop); `JOIN` if it is gone.
    Resume(String),
}

/// What the session is waiting for an answer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Join,
    Resume,
    Say,
    Present,
}

/// Where the session stands.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// `JOIN` sent, no answer yet.
    Joining,
    /// Joined; counting down to `PRESENT`.
    Waiting(Countdown),
    /// `PRESENT` sent, no answer yet.
    Presenting,
}

/// What one server line means for the session loop.
enum Step {
    Continue,
    /// The class needs its rotating code: ask the student for it and JOIN again with it.
    AskCode,
    /// The seat could not be resumed: join afresh (the server continues the time served).
    Rejoin,
    Marked(Timestamp),
}

/// An open connection to the server that has greeted us.
#[derive(Debug)]
pub struct Session {
    framed: Framed<Stream, LineCodec>,
    hello: Hello,
    options: Options,
    /// Commands sent and not yet answered, oldest first.
    pending: VecDeque<Sent>,
    /// The ID sent with `JOIN`, once sent.
    id: Option<StudentId>,
    early_retries: u32,
    /// When the answer to the outstanding `JOIN` or `PRESENT` is overdue.
    reply_deadline: Option<Instant>,
    /// The seat's resume token, from `OK JOIN` (or `OK RESUME`).
    token: Option<String>,
}

impl Session {
    /// Connects to `server` (`HOST:PORT`), runs the TLS handshake if [`Options::tls`] asks for
    /// it, and reads the greeting, each within [`Options::connect_timeout`]. With TLS the
    /// certificate must be valid for the host part of `server`.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] if no connection could be made; [`ClientError::TlsSetup`],
    /// [`ClientError::Certificate`] or [`ClientError::TlsHandshake`] if TLS could not be set up,
    /// the server's certificate was not trusted, or the handshake failed; [`ClientError::Refused`]
    /// if the server answered with `ERR` (e.g. `FULL`); [`ClientError::Disconnected`] or
    /// [`ClientError::Protocol`] if no greeting came.
    pub async fn connect(server: &str, options: Options) -> Result<Self, ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            addr: server.to_owned(),
            source,
        };
        // Settle the TLS settings first: a bad CA file is reported before any connection.
        let tls = match &options.tls {
            Some(trust) => Some((
                crate::tls::client_config(trust)?,
                crate::tls::server_name(server)?,
                trust,
            )),
            None => None,
        };
        let stream = timeout(options.connect_timeout, TcpStream::connect(server))
            .await
            .map_err(|_| {
                unreachable(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection timed out",
                ))
            })?
            .map_err(unreachable)?;
        // Lines are small and interactive: do not wait to fill a segment.
        let _ = stream.set_nodelay(true);
        let stream = match tls {
            None => Either::Left(stream),
            Some((config, name, trust)) => {
                let handshake = crate::tls::handshake(config, name, stream, server, trust);
                let tls = timeout(options.connect_timeout, handshake)
                    .await
                    .map_err(|_| ClientError::TlsHandshake {
                        addr: server.to_owned(),
                        source: io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"),
                    })??;
                Either::Right(Box::new(tls))
            }
        };
        let mut framed = Framed::new(stream, LineCodec::default());
        let waited = options.connect_timeout;
        let first = timeout(waited, framed.next()).await.map_err(|_| {
            ClientError::Protocol(format!("no greeting within {} s", waited.as_secs()))
        })?;
        let hello = match parse_item(first)? {
            Ok(ServerLine::Hello(hello)) => hello,
            Ok(ServerLine::Err { code, message }) => {
                return Err(ClientError::Refused { code, message });
            }
            Ok(other) => {
                return Err(ClientError::Protocol(format!(
                    "expected a greeting, got {other}"
                )));
            }
            Err(bad) => {
                return Err(ClientError::Protocol(format!(
                    "expected a greeting, got {bad:?}"
                )));
            }
        };
        Ok(Self {
            framed,
            hello,
            options,
            pending: VecDeque::new(),
            id: None,
            early_retries: 0,
            reply_deadline: None,
            token: None,
        })
    }

    /// The server's greeting.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Joins as `id` and stays until marked, as [`run`] describes.
    ///
    /// # Errors
    /// A [`ClientError`] saying why the attendance was not marked.
    async fn attend(
        &mut self,
        id: StudentId,
        opening: Opening,
        input: &mut mpsc::Receiver<String>,
        interrupt: impl Future<Output = ()> + Unpin,
        out: &mut Output,
    ) -> Result<Marked, ClientError> {
        let result = self.attend_inner(id, opening, input, interrupt, out).await;
        out.clear_progress();
        match result {
            Ok(marked) => {
                out.line(&format!("Your Attendance has been marked at {}", marked.at));
                self.leave().await;
                Ok(marked)
            }
            // The connection is gone, or the server closes it itself: nothing to say goodbye to.
            Err(
                e @ (ClientError::Disconnected
                | ClientError::ConnectionLost(_)
                | ClientError::ServerShutdown
                | ClientError::Replaced),
            ) => Err(e),
            Err(e) => {
                self.leave().await;
                Err(e)
            }
        }
    }

    async fn attend_inner(
        &mut self,
        id: StudentId,
        opening: Opening,
        input: &mut mpsc::Receiver<String>,
        mut interrupt: impl Future<Output = ()> + Unpin,
        out: &mut Output,
    ) -> Result<Marked, ClientError> {
        match opening.resume_token() {
            Some(token) => self.send(Command::Resume(token), Sent::Resume).await?,
            None => {
                self.send(Command::Join(id.clone(), None), Sent::Join)
                    .await?;
            }
        }
        self.id = Some(id.clone());
        let mut phase = Phase::Joining;
        let mut ticker = interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut input_open = true;
        let mut codes_asked = 0u32;
        loop {
            let countdown = match phase {
                Phase::Waiting(c) => Some(c),
                _ => None,
            };
            let now = Instant::now();
            let end = countdown.map_or(now, |c| c.deadline());
            let overdue = self.reply_deadline.unwrap_or(now);
            let joined = !matches!(phase, Phase::Joining);
            tokio::select! {
                biased;
                () = &mut interrupt => return Err(ClientError::Interrupted),
                item = self.framed.next() => {
                    let line = match parse_item(item)? {
                        Ok(line) => line,
                        Err(bad) => {
                            self.unparsed(&bad, out)?;
                            continue;
                        }
                    };
                    match self.on_line(line, &mut phase, out)? {
                        Step::Continue => {
                            if matches!(phase, Phase::Waiting(_)) && countdown.is_none() {
                                // A countdown just started: draw it now, not a second later.
                                ticker.reset_immediately();
                            }
                        }
                        Step::AskCode => {
                            codes_asked += 1;
                            if codes_asked > MAX_CODE_TRIES {
                                return Err(ClientError::IdRefused {
                                    code: ErrorCode::BadCode,
                                    message: Text::lossy("no valid class code given"),
                                });
                            }
                            out.prompt("Class code (6 digits, on the teacher's screen):");
                            let line = tokio::select! {
                                () = &mut interrupt => return Err(ClientError::Interrupted),
                                line = input.recv() => line,
                            };
                            let code = line
                                .as_deref()
                                .map(str::trim)
                                .and_then(|c| attendance_protocol::Token::new(c).ok());
                            let Some(code) = code else {
                                return Err(ClientError::IdRefused {
                                    code: ErrorCode::BadCode,
                                    message: Text::lossy("no class code given"),
                                });
                            };
                            self.send(Command::Join(id.clone(), Some(code)), Sent::Join).await?;
                        }
                        Step::Rejoin => {
                            out.line("The seat was no longer held for you; checking in again");
                            self.send(Command::Join(id.clone(), None), Sent::Join).await?;
                        }
                        Step::Marked(at) => {
                            let id = self.id.clone().ok_or_else(|| {
                                ClientError::Protocol("marked before joining".into())
                            })?;
                            return Ok(Marked { id, at, early_retries: self.early_retries });
                        }
                    }
                }
                () = sleep_until(end), if countdown.is_some() => {
                    out.clear_progress();
                    out.line("Class time is over: asking the server to mark you present");
                    self.send(Command::Present, Sent::Present).await?;
                    phase = Phase::Presenting;
                }
                _ = ticker.tick(), if countdown.is_some() => {
                    if let Some(c) = countdown {
                        out.progress(c.remaining(Instant::now()), c.total());
                    }
                }
                line = input.recv(), if joined && input_open => match line {
                    Some(line) => self.say(&line, out).await?,
                    None => input_open = false,
                },
                () = sleep_until(overdue), if self.reply_deadline.is_some() => {
                    let command = if matches!(phase, Phase::Joining) { "JOIN or RESUME" } else { "PRESENT" };
                    return Err(ClientError::NoReply { command, waited: self.options.reply_timeout });
                }
            }
        }
    }

    /// Handles one parsed server line.
    fn on_line(
        &mut self,
        line: ServerLine,
        phase: &mut Phase,
        out: &mut Output,
    ) -> Result<Step, ClientError> {
        let answer = match line {
            ServerLine::Hello(_) => return Ok(Step::Continue),
            ServerLine::Event(Event::Shutdown) => return Err(ClientError::ServerShutdown),
            ServerLine::Event(Event::Replaced) => return Err(ClientError::Replaced),
            ServerLine::Event(event) => {
                out.event(&event);
                return Ok(Step::Continue);
            }
            ServerLine::Ok(reply) => Ok(reply),
            ServerLine::Err { code, message } => Err((code, message)),
        };
        let Some(sent) = self.pending.pop_front() else {
            return Err(ClientError::Protocol(
                "a reply arrived with no command outstanding".into(),
            ));
        };
        if sent != Sent::Say {
            self.reply_deadline = None;
        }
        match (sent, answer) {
            (Sent::Say, Ok(_)) => Ok(Step::Continue),
            (Sent::Say, Err((code, message))) => {
                out.line(&format!("* your message was not sent ({code}): {message}"));
                Ok(Step::Continue)
            }
            (
                Sent::Resume,
                Ok(Reply::Resume {
                    id,
                    required_seconds,
                    resume,
                }),
            ) => {
                if self.id.as_ref() != Some(&id) {
                    return Err(ClientError::Protocol(format!(
                        "resumed as {id}, which is not the ID sent"
                    )));
                }
                self.token = Some(resume.as_str().to_owned());
                out.line(&format!(
                    "Back in class: your seat was kept; {} left",
                    format_hms(required_seconds)
                ));
                *phase = Phase::Waiting(Countdown::new(Instant::now(), required_seconds));
                Ok(Step::Continue)
            }
            (Sent::Resume, Err((ErrorCode::BadToken, _))) => Ok(Step::Rejoin),
            (Sent::Join, Err((ErrorCode::BadCode, message))) => {
                out.line(&format!("* {message}"));
                Ok(Step::AskCode)
            }
            (
                Sent::Join,
                Ok(Reply::Join {
                    id,
                    required_seconds,
                    resume,
                }),
            ) => {
                self.token = resume.map(|t| t.as_str().to_owned());
                if self.id.as_ref() != Some(&id) {
                    return Err(ClientError::Protocol(format!(
                        "joined as {id}, which is not the ID sent"
                    )));
                }
                out.line(&format!(
                    "Joined {} {} as {} (roll {}). Stay {} to be marked present; \
                     lines you type are sent to the class.",
                    id.course(),
                    id.division(),
                    id.name,
                    id.roll,
                    format_hms(required_seconds)
                ));
                *phase = Phase::Waiting(Countdown::new(Instant::now(), required_seconds));
                Ok(Step::Continue)
            }
            (Sent::Present, Ok(Reply::Present { marked_at, .. })) => Ok(Step::Marked(marked_at)),
            (sent, Ok(reply)) => Err(ClientError::Protocol(format!(
                "unexpected reply OK {reply} to {sent:?}"
            ))),
            (sent, Err((code, message))) => self.refused(sent, code, message, phase, out),
        }
    }

    /// Handles `ERR` in answer to `JOIN` or `PRESENT`.
    fn refused(
        &mut self,
        sent: Sent,
        code: ErrorCode,
        message: Text,
        phase: &mut Phase,
        out: &mut Output,
    ) -> Result<Step, ClientError> {
        match (sent, code) {
            (_, ErrorCode::ShuttingDown) => Err(ClientError::ServerShutdown),
            (Sent::Join, ErrorCode::BadFormat | ErrorCode::Already | ErrorCode::Joined) => {
                Err(ClientError::IdRefused { code, message })
            }
            (Sent::Present, ErrorCode::Early) => {
                self.early_retries += 1;
                if self.early_retries > self.options.max_early_retries {
                    return Err(ClientError::StillEarly(self.options.max_early_retries));
                }
                let line = ServerLine::Err { code, message };
                // A malformed count still gets a short, bounded wait rather than a busy retry.
                let seconds = line.early_remaining().unwrap_or(1);
                out.line(&format!(
                    "The server says {seconds} s of class remain; waiting and trying again"
                ));
                *phase = Phase::Waiting(Countdown::new(Instant::now(), seconds));
                Ok(Step::Continue)
            }
            (Sent::Present, ErrorCode::Storage) => Err(ClientError::Storage(message)),
            _ => Err(ClientError::Refused { code, message }),
        }
    }

    /// A line that did not parse. A stray `OK`/`ERR` still answers the oldest command; if that
    /// command mattered, the session cannot know the outcome and gives up.
    fn unparsed(&mut self, bad: &str, out: &mut Output) -> Result<(), ClientError> {
        let shown = Text::lossy(bad);
        let is_reply = bad.starts_with("OK") || bad.starts_with("ERR");
        if is_reply {
            match self.pending.pop_front() {
                // An unanswered chat line or a stray reply changes nothing.
                Some(Sent::Say) | None => {}
                Some(Sent::Join | Sent::Resume | Sent::Present) => {
                    return Err(ClientError::Protocol(format!(
                        "unreadable reply from the server: {shown}"
                    )));
                }
            }
        }
        out.line(&format!("* (unreadable line from the server: {shown})"));
        Ok(())
    }

    /// Sends a typed line as `SAY`; empty lines are ignored, unsendable ones explained.
    async fn say(&mut self, line: &str, out: &mut Output) -> Result<(), ClientError> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(());
        }
        if line.len() > MAX_SAY_BYTES {
            out.line(&format!(
                "* not sent: messages are limited to {MAX_SAY_BYTES} bytes"
            ));
            return Ok(());
        }
        match Text::new(line) {
            Ok(text) => self.send(Command::Say(text), Sent::Say).await,
            Err(e) => {
                out.line(&format!("* not sent: the message {e}"));
                Ok(())
            }
        }
    }

    async fn send(&mut self, command: Command, sent: Sent) -> Result<(), ClientError> {
        self.framed
            .send(&command)
            .await
            .map_err(ClientError::ConnectionLost)?;
        if sent != Sent::Say {
            self.reply_deadline = Some(Instant::now() + self.options.reply_timeout);
        }
        self.pending.push_back(sent);
        Ok(())
    }

    /// Best-effort goodbye: `QUIT`, then wait (bounded) for `OK BYE` or the end of the stream,
    /// then close our side (with TLS, this sends `close_notify`).
    pub async fn leave(&mut self) {
        if self.framed.send(&Command::Quit).await.is_err() {
            return;
        }
        let _ = timeout(self.options.quit_timeout, async {
            while let Some(Ok(Ok(line))) = self.framed.next().await {
                if matches!(line.parse(), Ok(ServerLine::Ok(Reply::Bye))) {
                    break;
                }
            }
            let _ = SinkExt::<&Command>::close(&mut self.framed).await;
        })
        .await;
    }
}

/// Turns one item of the framed stream into a parsed line, or the raw text of a line that did
/// not parse.
fn parse_item(
    item: Option<Result<Result<String, attendance_protocol::LineError>, io::Error>>,
) -> Result<Result<ServerLine, String>, ClientError> {
    match item {
        None => Err(ClientError::Disconnected),
        Some(Err(e)) => Err(ClientError::ConnectionLost(e)),
        Some(Ok(Err(e))) => Ok(Err(format!("<{e}>"))),
        Some(Ok(Ok(line))) => Ok(line.parse::<ServerLine>().map_err(|_| line)),
    }
}

impl Opening {
    fn resume_token(&self) -> Option<attendance_protocol::Token> {
        match self {
            Self::Join => None,
            Self::Resume(t) => attendance_protocol::Token::new(t).ok(),
        }
    }
}
