//! The bench's daemon client, on the protocol crate: connect from a spread source address, read
//! `HELLO`, send [`Command`]s, and read what the daemon sends as [`ServerLine`]s, framed by
//! [`LineCodec`] — the same codec and parser the daemon and `attend` use, so the bench measures
//! the protocol as it is. An `EVENT` line the parser does not know is skipped, so a daemon that
//! adds event kinds does not break the bench.

use std::io::Write as _;
use std::net::SocketAddr;

use attendance_protocol::{Command, LineCodec, Reply, ServerLine, StudentId};
use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;

use crate::net;

/// Longest line accepted from the daemon (its own `max_line` is far below).
const MAX_LINE: usize = 64 * 1024;

/// Read buffer per client: small, since thousands are open at once.
const READ_BUFFER: usize = 2048;

/// A failure talking to the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LineError {
    /// The socket failed.
    #[error("daemon connection: {0}")]
    Io(#[from] std::io::Error),
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

/// The reading half of a daemon connection, one parsed line at a time.
#[derive(Debug)]
pub(crate) struct LineReader {
    read: FramedRead<OwnedReadHalf, LineCodec>,
}

impl LineReader {
    fn new(read: OwnedReadHalf) -> Self {
        Self {
            read: FramedRead::with_capacity(read, LineCodec::new(MAX_LINE), READ_BUFFER),
        }
    }

    /// The next line, or `None` when the daemon closed the connection. `EVENT` lines that do
    /// not parse are skipped (a newer daemon's event kinds).
    ///
    /// # Errors
    /// On I/O failure, an unreadable line, or a reply that does not parse.
    pub(crate) async fn next(&mut self) -> Result<Option<ServerLine>, LineError> {
        // Each turn consumes a line the daemon sent; the callers bound the wait in time.
        loop {
            let Some(item) = self.read.next().await else {
                return Ok(None);
            };
            let text = item??;
            match text.parse::<ServerLine>() {
                Ok(line) => return Ok(Some(line)),
                Err(_) if text.starts_with("EVENT ") => {}
                Err(_) => return Err(LineError::Unexpected(text)),
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

/// A daemon connection that has read its `HELLO`.
#[derive(Debug)]
pub(crate) struct LineConn {
    /// What the daemon sends.
    pub(crate) reader: LineReader,
    /// Where lines go.
    pub(crate) writer: OwnedWriteHalf,
    /// The lines being sent, kept between sends (no allocation per mark).
    out: Vec<u8>,
}

impl LineConn {
    /// Connects client number `index` (see [`net::source_ip`]) and reads the greeting.
    ///
    /// # Errors
    /// If the connection fails or the first line is not `HELLO`.
    pub(crate) async fn connect(index: usize, addr: SocketAddr) -> Result<Self, LineError> {
        Self::open(index, addr, None).await
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
        addr: SocketAddr,
        id: &str,
        pipelined: bool,
    ) -> Result<Self, LineError> {
        let join = join(id)?;
        let mut conn = Self::open(index, addr, pipelined.then_some(&join)).await?;
        if !pipelined {
            conn.send(&join).await?;
        }
        expect_ok(conn.reader.reply().await?, is_join)?;
        Ok(conn)
    }

    /// Connects, sends `first` (if any) before reading anything, then reads the greeting.
    async fn open(
        index: usize,
        addr: SocketAddr,
        first: Option<&Command>,
    ) -> Result<Self, LineError> {
        let stream = net::connect_from(index, addr).await?;
        let (read, writer) = stream.into_split();
        let mut conn = Self {
            reader: LineReader::new(read),
            writer,
            out: Vec::new(),
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
        self.writer.write_all(&self.out).await?;
        Ok(())
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
        .map(Command::Join)
        .map_err(|e| LineError::BadId(id.to_owned(), e))
}

/// Appends the lines of `commands` to `out`, each with its line ending.
fn encode(commands: &[Command], out: &mut Vec<u8>) {
    for command in commands {
        // Writing to a Vec cannot fail.
        let _ = writeln!(out, "{command}");
    }
}

/// Sends `command` with a line ending on `writer` (a writer split off its [`LineConn`]).
///
/// # Errors
/// If the write fails.
pub(crate) async fn send(writer: &mut OwnedWriteHalf, command: &Command) -> Result<(), LineError> {
    let mut out = Vec::with_capacity(64);
    encode(std::slice::from_ref(command), &mut out);
    writer.write_all(&out).await?;
    Ok(())
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
        let mut kiosk = Vec::new();
        encode(&[join("Bench_C1_S1_R1")?, Command::Present], &mut kiosk);
        assert_eq!(kiosk, b"JOIN Bench_C1_S1_R1\nPRESENT\n");
        assert!(matches!(join("not-an-id"), Err(LineError::BadId(..))));
        Ok(())
    }
}
