//! Line sources for connections: where the bytes of a line wait until the line is complete.
//!
//! An idle connection must not pin a read buffer: tens of thousands of students sit silent for
//! an hour. [`Lines`] polls its stream with a stack chunk, keeps heap memory only for a partial
//! line and releases it once the line is complete. Waiting is poll-based (the socket's own
//! waker slot), so a waiting `next_line` future is a single pointer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use attendance_protocol::LineCodec;
use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;
use tokio_util::codec::Decoder as _;

use crate::session::LineItem;

/// One line (or the reason it was refused), with the instant its first byte arrived: a JOIN
/// is timed from there (the seed client sends its identifier, waits, and ends the line later).
#[derive(Debug)]
pub struct Line {
    /// The line, or why it was refused.
    pub item: LineItem,
    /// When its first byte arrived.
    pub arrived: Instant,
}

/// A source of lines; `None` at end of stream.
pub trait LineSource: Send {
    /// The next line.
    fn next_line(&mut self) -> impl Future<Output = Option<io::Result<Line>>> + Send;

    /// A whole line that is already buffered, decoded without any I/O; `None` if there is none.
    fn buffered_line(&mut self) -> Option<io::Result<Line>> {
        None
    }
}

/// An instant as nanoseconds (plus one) since the first one taken: half the size of an
/// `Instant`, and good for 584 years.
#[derive(Debug, Clone, Copy)]
struct Arrival(std::num::NonZeroU64);

impl Arrival {
    fn epoch() -> Instant {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    fn of(at: Instant) -> Option<Self> {
        let nanos = at.saturating_duration_since(Self::epoch()).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX - 1);
        std::num::NonZeroU64::new(nanos + 1).map(Self)
    }

    fn now() -> Option<Self> {
        Self::of(Instant::now())
    }

    fn instant(self) -> Instant {
        Self::epoch() + std::time::Duration::from_nanos(self.0.get() - 1)
    }
}

/// Bytes read per poll. Lives on the stack only while reading.
pub(crate) const CHUNK: usize = 2048;

/// Lines from a byte stream, with no buffer held while idle.
#[derive(Debug)]
pub struct Lines<R> {
    read: R,
    codec: LineCodec,
    /// A partial line; empty (and unallocated) between lines.
    partial: BytesMut,
    /// When the first byte in `partial` arrived ([`Arrival`]: 8 bytes in every connection's
    /// task rather than 16).
    since: Option<Arrival>,
    eof: bool,
}

impl<R: AsyncRead + Unpin + Send> Lines<R> {
    pub(crate) fn new(read: R, max_line: usize) -> Self {
        Self {
            read,
            codec: LineCodec::new(max_line),
            partial: BytesMut::new(),
            since: None,
            eof: false,
        }
    }

    /// Lines whose first bytes were already read from the socket (see [`read_early`]).
    pub(crate) fn with_early(read: R, max_line: usize, early: &[u8]) -> Self {
        let mut lines = Self::new(read, max_line);
        if !early.is_empty() {
            lines.partial.extend_from_slice(early);
            lines.since = Arrival::now();
        }
        lines
    }

    /// The next whole line in `partial`. `read_at` is when the last read (in this poll) brought
    /// bytes: whatever follows the line came then.
    fn decode(&mut self, read_at: Option<Instant>) -> io::Result<Option<Line>> {
        let item = if self.eof {
            self.codec.decode_eof(&mut self.partial)?
        } else {
            self.codec.decode(&mut self.partial)?
        };
        let arrived = self.since.map_or_else(Instant::now, Arrival::instant);
        if self.partial.is_empty() {
            // Give the memory back between lines. (Even at capacity 0 an emptied BytesMut can
            // still own the buffer it was split from.)
            self.partial = BytesMut::new();
            self.since = None;
        } else if item.is_some() {
            if let Some(at) = read_at {
                self.since = Arrival::of(at);
            }
        }
        Ok(item.map(|item| Line { item, arrived }))
    }

    fn poll_next_line(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Line>>> {
        let mut read_at = None;
        loop {
            match self.decode(read_at) {
                Ok(Some(item)) => return Poll::Ready(Some(Ok(item))),
                Ok(None) if self.eof => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            // Not zeroed: the read fills what it reports, and zeroing 2 KiB per read showed in
            // profiles.
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            if let Err(e) = ready!(Pin::new(&mut self.read).poll_read(cx, &mut buf)) {
                return Poll::Ready(Some(Err(e)));
            }
            if buf.filled().is_empty() {
                self.eof = true;
            } else {
                let now = Instant::now();
                if self.partial.is_empty() {
                    self.since = Arrival::of(now);
                }
                read_at = Some(now);
                self.partial.extend_from_slice(buf.filled());
            }
        }
    }
}

impl<R: AsyncRead + Unpin + Send> LineSource for Lines<R> {
    fn next_line(&mut self) -> impl Future<Output = Option<io::Result<Line>>> + Send {
        std::future::poll_fn(|cx| self.poll_next_line(cx))
    }

    fn buffered_line(&mut self) -> Option<io::Result<Line>> {
        if self.partial.is_empty() {
            return None;
        }
        self.decode(None).transpose()
    }
}

/// Whatever a just-accepted client has already sent, read without waiting (empty if nothing).
///
/// A program may send its first line without waiting for the greeting; reading it now lets the
/// connection answer with the greeting and the reply in one write (one segment instead of two).
/// Tokio takes a just-accepted socket to be readable until a read says otherwise, so this is
/// one `recv`; for a client that waits for the greeting it finds nothing.
///
/// A read that did not fill `chunk` drained the socket, and the readiness is cleared here as
/// tokio's own reads do: otherwise the connection's first wait for its next line would begin
/// with a `recv` that can only find nothing.
pub(crate) fn read_early(stream: &tokio::net::TcpStream, chunk: &mut [u8; CHUNK]) -> usize {
    // Nothing there is `WouldBlock` (which clears the readiness itself). End of stream (0) and
    // errors are left for the connection's own reads to find again.
    let n = stream.try_read(chunk).unwrap_or(0);
    if 0 < n && n < chunk.len() {
        let drained = || Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock));
        let _ = stream.try_io(tokio::io::Interest::READABLE, drained);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn early_bytes_are_whole_lines_without_io_and_a_partial_one_is_completed_by_reads() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut lines = Lines::with_early(server, 64, b"PING 1\nTIME\nJO");
        assert_eq!(
            lines.buffered_line().map(|r| r.ok().map(|l| l.item)),
            Some(Some(Ok("PING 1".into())))
        );
        assert_eq!(
            lines.buffered_line().map(|r| r.ok().map(|l| l.item)),
            Some(Some(Ok("TIME".into())))
        );
        // "JO" is not a line yet, and nothing is read to complete it.
        assert!(lines.buffered_line().is_none());
        client.write_all(b"IN x\n").await.expect("write");
        assert_eq!(
            lines.next_line().await.map(|r| r.ok().map(|l| l.item)),
            Some(Some(Ok("JOIN x".into())))
        );
        assert!(lines.buffered_line().is_none());
        assert_eq!(lines.partial.capacity(), 0);
    }

    /// A client and the server's side of its connection, over loopback.
    async fn connected() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn an_early_read_loses_nothing_and_later_lines_still_wake_the_reader() {
        let (mut client, server) = connected().await;
        client.write_all(b"JOIN x\n").await.expect("write");
        // The line may or may not have crossed loopback yet: either way it is read once.
        let mut chunk = [0u8; CHUNK];
        let n = read_early(&server, &mut chunk);
        assert!(n == 0 || &chunk[..n] == b"JOIN x\n", "{:?}", &chunk[..n]);
        let (read, _write) = server.into_split();
        let mut lines = Lines::with_early(read, 64, &chunk[..n]);
        let within = std::time::Duration::from_secs(10);
        let first = tokio::time::timeout(within, lines.next_line()).await;
        assert_eq!(
            first.expect("in time").map(|r| r.ok().map(|l| l.item)),
            Some(Some(Ok("JOIN x".into())))
        );
        // After a read that drained the socket, a line sent later must still wake the reader.
        client.write_all(b"PING\n").await.expect("write");
        let second = tokio::time::timeout(within, lines.next_line()).await;
        assert_eq!(
            second.expect("in time").map(|r| r.ok().map(|l| l.item)),
            Some(Some(Ok("PING".into())))
        );
    }

    #[tokio::test]
    async fn lines_split_across_reads_are_joined_and_memory_is_released_between_lines() {
        let (mut client, server) = connected().await;
        let (read, _write) = server.into_split();
        let mut lines = Lines::new(read, 64);
        client.write_all(b"PI").await.expect("write");
        client.flush().await.expect("flush");
        let reader = tokio::spawn(async move {
            let first = lines.next_line().await;
            let cap = lines.partial.capacity();
            let second = lines.next_line().await;
            let third = lines.next_line().await;
            (first, cap, second, third, lines.partial.capacity())
        });
        tokio::task::yield_now().await;
        client.write_all(b"NG\r\nTIME\n").await.expect("write");
        client.shutdown().await.expect("shutdown");
        let (first, cap, second, third, cap_after) = reader.await.expect("task");
        assert_eq!(
            first.map(|r| r.ok().map(|l| l.item)),
            Some(Some(Ok("PING".into())))
        );
        assert_eq!(
            second.map(|r| r.ok().map(|l| l.item)),
            Some(Some(Ok("TIME".into())))
        );
        assert!(third.is_none());
        // After PING the rest ("TIME\n") was still buffered; at the end nothing is held.
        assert!(cap > 0);
        assert_eq!(cap_after, 0);
    }
}
