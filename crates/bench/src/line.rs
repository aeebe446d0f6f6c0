//! The bench's daemon client, on the protocol crate: connect from a spread source address, read
//! `HELLO`, send [`Command`]s, and read what the daemon sends as [`ServerLine`]s, framed by
//! [`LineCodec`] — the same codec and parser the daemon and `attend` use, so the bench measures
//! the protocol as it is. An `EVENT` line the parser does not know is skipped, so a daemon that
//! adds event kinds does not break the bench.
//!
//! Over WebSocket ([`Transport::Ws`]) the same protocol goes one text frame per line each way
//! (`ws://<web>/ws`): the client upgrades on its own socket, with small buffers (thousands are
//! open at once), and answers the server's pings as it reads (the library queues the pong and
//! sends it on the next read or write).

use std::fmt::Write as _;
use std::net::SocketAddr;

use attendance_protocol::{Command, LineCodec, Reply, ServerLine, StudentId};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::codec::FramedRead;

use crate::cli::Transport;
use crate::net;

/// Longest line accepted from the daemon (its own `max_line` is far below).
const MAX_LINE: usize = 64 * 1024;

/// Read buffer per client: small, since thousands are open at once.
const READ_BUFFER: usize = 2048;

/// Frames queued before the WebSocket writes them out without a flush (the bench flushes after
/// each batch of lines, so a batch goes out in one write).
const WS_WRITE_BUFFER: usize = 4096;

/// A WebSocket client connection.
type Ws = WebSocketStream<TcpStream>;

/// Where a daemon client connects: the student port, or the web port's `/ws`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// How.
    pub(crate) transport: Transport,
    /// The student port for TCP, the web port for WebSocket.
    pub(crate) addr: SocketAddr,
}

impl From<SocketAddr> for Endpoint {
    /// The student port.
    fn from(addr: SocketAddr) -> Self {
        Self {
            transport: Transport::Tcp,
            addr,
        }
    }
}

/// A failure talking to the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LineError {
    /// The socket failed.
    #[error("daemon connection: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket upgrade or a frame failed (boxed: the library's error is large).
    #[error("daemon WebSocket: {0}")]
    Ws(Box<tungstenite::Error>),
    /// The daemon closed the connection.
    #[error("the daemon closed the connection")]
    Closed,
    /// A line longer than [`MAX_LINE`], or not UTF-8.
    #[error("the daemon sent an unreadable line: {0}")]
    BadLine(#[from] attendance_protocol::LineError),
    /// A line other than the one the protocol calls for (or one that does not parse).
    #[error("unexpected line from the daemon: {0:?}")]
    Unexpected(String),
    /// An identity the bench made up is not a valid `COURSE_DIV_NAME_ROLL`.
    #[error("bad identity {0:?}: {1}")]
    BadId(String, attendance_protocol::IdError),
}

impl From<tungstenite::Error> for LineError {
    fn from(e: tungstenite::Error) -> Self {
        match e {
            tungstenite::Error::Io(e) => Self::Io(e),
            e => Self::Ws(Box::new(e)),
        }
    }
}

/// What one WebSocket message is to a line reader.
#[derive(Debug, PartialEq, Eq)]
enum Frame<'a> {
    /// A line (its optional trailing LF or CRLF removed).
    Line(&'a str),
    /// A control frame (ping, pong): nothing for the protocol.
    Skip,
    /// The server's close frame: the end of the connection.
    End,
}

/// A message as a protocol line. The daemon sends one line per text frame, without its line
/// ending; one trailing LF or CRLF is tolerated, a line break inside a frame or a binary frame
/// is not the protocol.
///
/// # Errors
/// [`LineError::Unexpected`] for a binary frame or a frame holding more than one line.
fn frame(message: &Message) -> Result<Frame<'_>, LineError> {
    match message {
        Message::Text(text) => {
            let text = text.as_str();
            let text = text.strip_suffix('\n').unwrap_or(text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            if text.contains('\n') {
                Err(LineError::Unexpected(format!(
                    "a frame with a line break: {text:?}"
                )))
            } else {
                Ok(Frame::Line(text))
            }
        }
        Message::Binary(_) => Err(LineError::Unexpected("a binary frame".to_owned())),
        Message::Close(_) => Ok(Frame::End),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(Frame::Skip),
    }
}

/// A line as a [`ServerLine`]; `None` for an `EVENT` the parser does not know.
///
/// # Errors
/// [`LineError::Unexpected`] for any other line that does not parse.
fn parse(text: &str) -> Result<Option<ServerLine>, LineError> {
    match text.parse::<ServerLine>() {
        Ok(line) => Ok(Some(line)),
        Err(_) if text.starts_with("EVENT ") => Ok(None),
        Err(_) => Err(LineError::Unexpected(text.to_owned())),
    }
}

/// The WebSocket settings of a bench client: buffers of a TCP client's size, lines no longer
/// than [`MAX_LINE`].
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_message_size(Some(MAX_LINE))
        .max_frame_size(Some(MAX_LINE))
}

/// Connects client number `index` to `web` and upgrades to `ws://<web>/ws`.
async fn upgrade(index: usize, web: SocketAddr) -> Result<Ws, LineError> {
    let request = format!("ws://{web}/ws").into_client_request()?;
    let stream = net::connect_from(index, web).await?;
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await?;
    Ok(ws)
}

/// Where a reader's lines come from.
#[derive(Debug)]
enum Source {
    Tcp(FramedRead<OwnedReadHalf, LineCodec>),
    Ws(SplitStream<Ws>),
}

/// The reading half of a daemon connection, one parsed line at a time.
#[derive(Debug)]
pub(crate) struct LineReader {
    source: Source,
}

impl LineReader {
    fn tcp(read: OwnedReadHalf) -> Self {
        Self {
            source: Source::Tcp(FramedRead::with_capacity(
                read,
                LineCodec::new(MAX_LINE),
                READ_BUFFER,
            )),
        }
    }

    /// The next line, or `None` when the daemon closed the connection. `EVENT` lines that do
    /// not parse are skipped (a newer daemon's event kinds).
    ///
    /// # Errors
    /// On I/O failure, an unreadable line, or a reply that does not parse.
    pub(crate) async fn next(&mut self) -> Result<Option<ServerLine>, LineError> {
        // Each turn consumes a line (or frame) the daemon sent; the callers bound the wait in
        // time.
        loop {
            let parsed = match &mut self.source {
                Source::Tcp(read) => {
                    let Some(item) = read.next().await else {
                        return Ok(None);
                    };
                    parse(&item??)?
                }
                Source::Ws(read) => {
                    let message = match read.next().await {
                        None
                        | Some(Err(
                            tungstenite::Error::ConnectionClosed
                            | tungstenite::Error::AlreadyClosed,
                        )) => return Ok(None),
                        Some(item) => item?,
                    };
                    match frame(&message)? {
                        Frame::Line(text) => parse(text)?,
                        Frame::Skip => None,
                        Frame::End => return Ok(None),
                    }
                }
            };
            if let Some(line) = parsed {
                return Ok(Some(line));
            }
        }
    }

    /// The next line; a close is an error.
    ///
    /// # Errors
    /// As [`LineReader::next`], and on close.
    pub(crate) async fn expect(&mut self) -> Result<ServerLine, LineError> {
        self.next().await?.ok_or(LineError::Closed)
    }

    /// The next reply (`OK …` or `ERR …`), skipping events.
    ///
    /// # Errors
    /// As [`LineReader::expect`].
    pub(crate) async fn reply(&mut self) -> Result<ServerLine, LineError> {
        loop {
            match self.expect().await? {
                ServerLine::Event(_) => {}
                line => return Ok(line),
            }
        }
    }
}

/// The writing half of a daemon connection.
#[derive(Debug)]
pub(crate) enum LineWriter {
    /// The student port.
    Tcp(OwnedWriteHalf),
    /// `/ws`.
    Ws(SplitSink<Ws, Message>),
}

impl LineWriter {
    /// Sends `lines` (each ending with `\n`) at once: one write on TCP, one frame per line
    /// flushed together on WebSocket.
    async fn write_lines(&mut self, lines: &str) -> Result<(), LineError> {
        match self {
            Self::Tcp(w) => w.write_all(lines.as_bytes()).await?,
            Self::Ws(sink) => {
                for line in lines.split_terminator('\n') {
                    sink.feed(Message::text(line)).await?;
                }
                sink.flush().await?;
            }
        }
        Ok(())
    }

    /// Sends `command` with a line ending (one frame on WebSocket).
    ///
    /// # Errors
    /// If the write fails.
    pub(crate) async fn send(&mut self, command: &Command) -> Result<(), LineError> {
        let mut out = String::with_capacity(64);
        encode(std::slice::from_ref(command), &mut out);
        self.write_lines(&out).await
    }
}

/// A daemon connection that has read its `HELLO`.
#[derive(Debug)]
pub(crate) struct LineConn {
    /// What the daemon sends.
    pub(crate) reader: LineReader,
    /// Where lines go.
    pub(crate) writer: LineWriter,
    /// The lines being sent, kept between sends (no allocation per mark).
    out: String,
}

impl LineConn {
    /// Connects client number `index` (see [`net::source_ip`]) to `to` (an address is the
    /// student port) and reads the greeting.
    ///
    /// # Errors
    /// If the connection (or the upgrade) fails or the first line is not `HELLO`.
    pub(crate) async fn connect(index: usize, to: impl Into<Endpoint>) -> Result<Self, LineError> {
        Self::open(index, to.into(), None).await
    }

    /// Connects client number `index` and JOINs as `id`. `pipelined`: JOIN is sent at once,
    /// without waiting for the greeting (as a program may; the daemon then answers with the
    /// greeting and `OK JOIN` in one write); otherwise the greeting is read first, as a person
    /// at netcat does.
    ///
    /// # Errors
    /// If `id` is not an identity, the connection fails, the first line is not `HELLO` or the
    /// reply is not `OK JOIN`.
    pub(crate) async fn connect_and_join(
        index: usize,
        to: impl Into<Endpoint>,
        id: &str,
        pipelined: bool,
    ) -> Result<Self, LineError> {
        let join = join(id)?;
        let mut conn = Self::open(index, to.into(), pipelined.then_some(&join)).await?;
        if !pipelined {
            conn.send(&join).await?;
        }
        expect_ok(conn.reader.reply().await?, is_join)?;
        Ok(conn)
    }

    /// Connects, sends `first` (if any) before reading anything, then reads the greeting.
    async fn open(index: usize, to: Endpoint, first: Option<&Command>) -> Result<Self, LineError> {
        let (reader, writer) = match to.transport {
            Transport::Tcp => {
                let (read, write) = net::connect_from(index, to.addr).await?.into_split();
                (LineReader::tcp(read), LineWriter::Tcp(write))
            }
            Transport::Ws => {
                let (sink, stream) = upgrade(index, to.addr).await?.split();
                (
                    LineReader {
                        source: Source::Ws(stream),
                    },
                    LineWriter::Ws(sink),
                )
            }
        };
        let mut conn = Self {
            reader,
            writer,
            out: String::new(),
        };
        if let Some(command) = first {
            conn.send(command).await?;
        }
        match conn.reader.expect().await? {
            ServerLine::Hello(_) => Ok(conn),
            other => Err(LineError::Unexpected(other.to_string())),
        }
    }

    /// Sends `command`.
    ///
    /// # Errors
    /// If the write fails.
    pub(crate) async fn send(&mut self, command: &Command) -> Result<(), LineError> {
        self.send_all(std::slice::from_ref(command)).await
    }

    /// Sends `commands` in one write (as a program that pipelines them does).
    ///
    /// # Errors
    /// If the write fails.
    pub(crate) async fn send_all(&mut self, commands: &[Command]) -> Result<(), LineError> {
        self.out.clear();
        encode(commands, &mut self.out);
        self.writer.write_lines(&self.out).await
    }

    /// Sends `JOIN <id>` and waits for `OK JOIN`.
    ///
    /// # Errors
    /// On a bad `id`, failure or any other reply.
    pub(crate) async fn join(&mut self, id: &str) -> Result<(), LineError> {
        self.send(&join(id)?).await?;
        expect_ok(self.reader.reply().await?, is_join).map(drop)
    }
}

/// `JOIN <id>` for an identity the bench made up.
///
/// # Errors
/// [`LineError::BadId`] if `id` is not `COURSE_DIV_NAME_ROLL`.
pub(crate) fn join(id: &str) -> Result<Command, LineError> {
    id.parse::<StudentId>()
        .map(|id| Command::Join(id, None))
        .map_err(|e| LineError::BadId(id.to_owned(), e))
}

/// Appends the lines of `commands` to `out`, each with its line ending.
fn encode(commands: &[Command], out: &mut String) {
    for command in commands {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{command}");
    }
}

/// Whether `reply` answers `JOIN`.
pub(crate) fn is_join(reply: &Reply) -> bool {
    matches!(reply, Reply::Join { .. })
}

/// Whether `reply` answers `PRESENT`.
pub(crate) fn is_present(reply: &Reply) -> bool {
    matches!(reply, Reply::Present { .. })
}

/// The reply in `line` if it is an `OK` that `wanted` accepts.
///
/// # Errors
/// [`LineError::Unexpected`] otherwise (an `ERR`, another reply, an event).
pub(crate) fn expect_ok(line: ServerLine, wanted: fn(&Reply) -> bool) -> Result<Reply, LineError> {
    match line {
        ServerLine::Ok(reply) if wanted(&reply) => Ok(reply),
        other => Err(LineError::Unexpected(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> ServerLine {
        s.parse().expect("a server line")
    }

    #[test]
    fn expect_ok_wants_the_right_reply() {
        assert!(expect_ok(line("OK JOIN a b c d 0"), is_join).is_ok());
        assert!(expect_ok(line("OK PRESENT 2026-01-01T00:00:00.000Z"), is_present).is_ok());
        assert!(expect_ok(line("OK PRESENT 2026-01-01T00:00:00.000Z"), is_join).is_err());
        assert!(expect_ok(line("ERR ALREADY x"), is_join).is_err());
    }

    #[test]
    fn commands_are_written_one_per_line() -> Result<(), LineError> {
        let mut kiosk = String::new();
        encode(&[join("Bench_C1_S1_R1")?, Command::Present], &mut kiosk);
        assert_eq!(kiosk, "JOIN Bench_C1_S1_R1\nPRESENT\n");
        assert!(matches!(join("not-an-id"), Err(LineError::BadId(..))));
        Ok(())
    }

    #[test]
    fn a_text_frame_is_one_line_with_an_optional_line_ending() -> Result<(), LineError> {
        assert_eq!(frame(&Message::text("HELLO x"))?, Frame::Line("HELLO x"));
        assert_eq!(frame(&Message::text("OK PONG\n"))?, Frame::Line("OK PONG"));
        assert_eq!(
            frame(&Message::text("OK PONG\r\n"))?,
            Frame::Line("OK PONG")
        );
        assert_eq!(frame(&Message::text(""))?, Frame::Line(""));
        assert!(matches!(
            frame(&Message::text("OK PONG\nEVENT X")),
            Err(LineError::Unexpected(_))
        ));
        assert!(matches!(
            frame(&Message::binary(&b"OK PONG"[..])),
            Err(LineError::Unexpected(_))
        ));
        Ok(())
    }

    #[test]
    fn control_frames_are_skipped_and_a_close_ends_the_stream() -> Result<(), LineError> {
        assert_eq!(frame(&Message::Ping(Default::default()))?, Frame::Skip);
        assert_eq!(frame(&Message::Pong(Default::default()))?, Frame::Skip);
        assert_eq!(frame(&Message::Close(None))?, Frame::End);
        Ok(())
    }

    #[test]
    fn unknown_events_are_skipped_and_other_unparsable_lines_refused() -> Result<(), LineError> {
        assert!(matches!(
            parse("OK PONG")?,
            Some(ServerLine::Ok(Reply::Pong(_)))
        ));
        assert!(parse("EVENT SOMETHING_NEW 1 2")?.is_none());
        assert!(matches!(parse("WHAT"), Err(LineError::Unexpected(_))));
        Ok(())
    }

    #[test]
    fn ws_clients_keep_small_buffers_and_the_line_limit() {
        let c = ws_config();
        assert_eq!(c.read_buffer_size, READ_BUFFER);
        assert_eq!(c.write_buffer_size, WS_WRITE_BUFFER);
        assert_eq!(c.max_message_size, Some(MAX_LINE));
        assert_eq!(c.max_frame_size, Some(MAX_LINE));
    }
}
