//! The bench's daemon client: connect from a spread source address, read `HELLO`, send lines,
//! read lines with a bound, and classify what the daemon sends — replies, and the events the
//! scenarios count (`EVENT JOIN`, the coalesced `EVENT JOINS <course> <div> <count>`,
//! `EVENT SAY`, `EVENT LAGGED <n>`). It parses only what it needs, so a daemon that adds event
//! kinds does not break the bench.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::net;

/// Longest line accepted from the daemon (its own `max_line` is far below).
const MAX_LINE: u64 = 64 * 1024;

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
    #[error("the daemon sent an unreadable line")]
    BadLine,
    /// A line other than the one the protocol calls for.
    #[error("unexpected line from the daemon: {0:?}")]
    Unexpected(String),
}

/// The reading half of a daemon connection, one line at a time.
#[derive(Debug)]
pub(crate) struct LineReader {
    read: BufReader<OwnedReadHalf>,
    buf: Vec<u8>,
}

impl LineReader {
    /// The next line without its line ending, or `None` when the daemon closed the connection.
    ///
    /// # Errors
    /// On I/O failure or an unreadable line.
    pub(crate) async fn next(&mut self) -> Result<Option<&str>, LineError> {
        self.buf.clear();
        let n = (&mut self.read)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut self.buf)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        if self.buf.last() != Some(&b'\n') {
            return Err(if n as u64 > MAX_LINE {
                LineError::BadLine
            } else {
                LineError::Closed
            });
        }
        let line = std::str::from_utf8(&self.buf).map_err(|_| LineError::BadLine)?;
        Ok(Some(line.trim_end_matches(['\n', '\r'])))
    }

    /// The next line; a close is an error.
    ///
    /// # Errors
    /// As [`LineReader::next`], and on close.
    pub(crate) async fn expect(&mut self) -> Result<&str, LineError> {
        self.next().await?.ok_or(LineError::Closed)
    }

    /// The next reply (`OK …` or `ERR …`), skipping events.
    ///
    /// # Errors
    /// As [`LineReader::expect`].
    pub(crate) async fn reply(&mut self) -> Result<&str, LineError> {
        loop {
            // Re-borrowing per iteration keeps the borrow checker happy about the loop.
            let is_event = self.expect().await?.starts_with("EVENT ");
            if !is_event {
                let line = std::str::from_utf8(&self.buf).map_err(|_| LineError::BadLine)?;
                return Ok(line.trim_end_matches(['\n', '\r']));
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
    /// If the connection fails, the first line is not `HELLO` or the reply is not `OK JOIN`.
    pub(crate) async fn connect_and_join(
        index: usize,
        addr: SocketAddr,
        id: &str,
        pipelined: bool,
    ) -> Result<Self, LineError> {
        let join = format!("JOIN {id}");
        let mut conn = Self::open(index, addr, pipelined.then_some(join.as_str())).await?;
        if !pipelined {
            conn.send(&join).await?;
        }
        expect_ok(conn.reader.reply().await?, "JOIN")?;
        Ok(conn)
    }

    /// Connects, sends `first` (if any) before reading anything, then reads the greeting.
    async fn open(index: usize, addr: SocketAddr, first: Option<&str>) -> Result<Self, LineError> {
        let stream = net::connect_from(index, addr).await?;
        let (read, mut writer) = stream.into_split();
        if let Some(line) = first {
            send(&mut writer, line).await?;
        }
        let mut reader = LineReader {
            read: BufReader::with_capacity(READ_BUFFER, read),
            buf: Vec::new(),
        };
        let hello = reader.expect().await?;
        if !hello.starts_with("HELLO ") {
            return Err(LineError::Unexpected(hello.to_owned()));
        }
        Ok(Self { reader, writer })
    }

    /// Sends `line` (a line ending is added).
    ///
    /// # Errors
    /// If the write fails.
    pub(crate) async fn send(&mut self, line: &str) -> Result<(), LineError> {
        send(&mut self.writer, line).await
    }

    /// Sends `JOIN <id>` and waits for `OK JOIN`.
    ///
    /// # Errors
    /// On failure or any other reply.
    pub(crate) async fn join(&mut self, id: &str) -> Result<(), LineError> {
        self.send(&format!("JOIN {id}")).await?;
        expect_ok(self.reader.reply().await?, "JOIN")
    }
}

/// Sends `line` with a line ending on `writer`.
///
/// # Errors
/// If the write fails.
pub(crate) async fn send(writer: &mut OwnedWriteHalf, line: &str) -> Result<(), LineError> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    writer.write_all(&bytes).await?;
    Ok(())
}

/// Checks that `reply` is `OK <command> …`.
///
/// # Errors
/// [`LineError::Unexpected`] otherwise.
pub(crate) fn expect_ok(reply: &str, command: &str) -> Result<(), LineError> {
    match classify(reply) {
        Incoming::Ok { command: c, .. } if c == command => Ok(()),
        _ => Err(LineError::Unexpected(reply.to_owned())),
    }
}

/// What one line from the daemon means to the bench.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    /// `OK <command> <rest>`
    Ok {
        /// The command word.
        command: &'a str,
        /// The fields after it.
        rest: &'a str,
    },
    /// `ERR <code> <message>`
    Err {
        /// The code.
        code: &'a str,
    },
    /// `EVENT JOIN …`: one student joined.
    Join,
    /// `EVENT JOINS <course> <div> <count>`: `count` students joined in a burst.
    Joins(u64),
    /// `EVENT SAY <name> <text>`
    Say {
        /// The chat text.
        text: &'a str,
    },
    /// `EVENT LAGGED <n>`: `n` announcements were skipped.
    Lagged(u64),
    /// Anything else (heartbeats, other events).
    Other,
}

/// Classifies one line.
pub(crate) fn classify(line: &str) -> Incoming<'_> {
    let mut words = line.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("OK"), Some(command), rest) => Incoming::Ok {
            command,
            rest: rest.unwrap_or(""),
        },
        (Some("ERR"), Some(code), _) => Incoming::Err { code },
        (Some("EVENT"), Some("JOIN"), _) => Incoming::Join,
        (Some("EVENT"), Some("JOINS"), Some(rest)) => rest
            .split(' ')
            .nth(2)
            .and_then(|n| n.parse().ok())
            .map_or(Incoming::Other, Incoming::Joins),
        (Some("EVENT"), Some("SAY"), Some(rest)) => match rest.split_once(' ') {
            Some((_name, text)) => Incoming::Say { text },
            None => Incoming::Other,
        },
        (Some("EVENT"), Some("LAGGED"), Some(n)) => {
            n.parse().map_or(Incoming::Other, Incoming::Lagged)
        }
        _ => Incoming::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_counted_events_are_classified() {
        assert_eq!(
            classify("OK JOIN Bench C1 S1 R1 3600"),
            Incoming::Ok {
                command: "JOIN",
                rest: "Bench C1 S1 R1 3600"
            }
        );
        assert_eq!(
            classify("OK SAY"),
            Incoming::Ok {
                command: "SAY",
                rest: ""
            }
        );
        assert_eq!(
            classify("ERR EARLY 5 seconds"),
            Incoming::Err { code: "EARLY" }
        );
        assert_eq!(classify("EVENT JOIN Bench C1 S2 127.0.0.3"), Incoming::Join);
        assert_eq!(classify("EVENT JOINS Bench C1 37"), Incoming::Joins(37));
        assert_eq!(
            classify("EVENT SAY S1 12 123456789"),
            Incoming::Say {
                text: "12 123456789"
            }
        );
        assert_eq!(classify("EVENT LAGGED 9"), Incoming::Lagged(9));
        assert_eq!(
            classify("EVENT HEARTBEAT 2026-01-01T00:00:00.000Z"),
            Incoming::Other
        );
        assert_eq!(classify("EVENT JOINS Bench C1 many"), Incoming::Other);
    }

    #[test]
    fn expect_ok_wants_the_right_command() {
        assert!(expect_ok("OK JOIN a b c d 0", "JOIN").is_ok());
        assert!(expect_ok("OK PRESENT 2026", "JOIN").is_err());
        assert!(expect_ok("ERR ALREADY x", "JOIN").is_err());
    }
}
