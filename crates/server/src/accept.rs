//! Accepting clients: the first bytes are read before the socket joins tokio's reactor.
//!
//! A program sends its first line (`JOIN …`) right after connecting, and under load that line is
//! already waiting when the connection is accepted. Reading it at once lets the greeting and the
//! reply go out in one write. If the socket were registered with the reactor first (as
//! `tokio::net::TcpListener::accept` does), epoll would report those bytes as well, and the
//! connection task would be woken only to find them gone: one wasted wake-up and one `recv`
//! returning `EAGAIN` per connection. So the listener accepts plain non-blocking sockets (mio's
//! `accept4`), [`Accepted::open`] reads what is there and only then registers the socket, and
//! epoll reports only what arrives after the read.

use std::io::{self, Read as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use crate::lines::CHUNK;

/// The student listener.
#[derive(Debug)]
pub(crate) struct Acceptor {
    listener: AsyncFd<mio::net::TcpListener>,
}

/// A connection accepted and not yet registered with the reactor.
#[derive(Debug)]
pub(crate) struct Accepted {
    stream: std::net::TcpStream,
}

impl Acceptor {
    /// Takes over `listener` (the socket and its options stay as they are).
    ///
    /// # Errors
    /// If the listener cannot be registered with the reactor.
    pub(crate) fn new(listener: tokio::net::TcpListener) -> io::Result<Self> {
        // `into_std` leaves the socket non-blocking, as the reactor needs it.
        let listener = mio::net::TcpListener::from_std(listener.into_std()?);
        // The deprecation is about I/O safety for types whose descriptor could change or be
        // closed behind the reactor's back; mio's listener owns its descriptor for its whole
        // life, and the safe replacement needs `unsafe`, which this workspace forbids.
        #[allow(deprecated)]
        let listener = AsyncFd::new(listener)?;
        Ok(Self { listener })
    }

    /// The next client (non-blocking, close-on-exec, not yet registered).
    ///
    /// # Errors
    /// What `accept` failed with (out of descriptors or memory, a connection reset before it
    /// was taken), or a reactor failure.
    pub(crate) async fn accept(&self) -> io::Result<(Accepted, SocketAddr)> {
        loop {
            let mut ready = self.listener.readable().await?;
            // `try_io` clears the readiness only on `WouldBlock`: after a success the next
            // call accepts again without waiting for epoll.
            if let Ok(accepted) = ready.try_io(|l| l.get_ref().accept()) {
                return accepted.map(|(stream, peer)| {
                    (
                        Accepted {
                            stream: stream.into(),
                        },
                        peer,
                    )
                });
            }
        }
    }
}

impl Accepted {
    /// Registers the socket with the reactor, without reading.
    ///
    /// # Errors
    /// If the reactor refuses it.
    pub(crate) fn register(self) -> io::Result<TcpStream> {
        TcpStream::from_std(self.stream)
    }

    /// Reads whatever the client has already sent into `chunk` (without waiting; `0` if
    /// nothing), then registers the socket. A client that waits for the greeting costs one
    /// `recv` that finds nothing.
    ///
    /// # Errors
    /// If the reactor refuses the socket.
    pub(crate) fn open(self, chunk: &mut [u8; CHUNK]) -> io::Result<(TcpStream, usize)> {
        // Non-blocking: nothing there is `WouldBlock`. End of stream (0) and errors are left
        // for the connection's own reads to find again.
        let n = (&self.stream).read(chunk).unwrap_or(0);
        Ok((self.register()?, n))
    }
}

/// The write half of a plain TCP connection, writing to the socket at once.
///
/// Tokio writes only once its reactor has reported the socket writable. A socket registered a
/// moment ago has no report yet, so the greeting (and the replies gathered with it) would wait
/// for the next turn of the reactor and a second poll of the connection's task. The kernel
/// knows better: this writer sends straight away and falls back to tokio's readiness (and its
/// wake-up) only when the socket's buffer is full. Writes are the same `send` calls either way.
#[derive(Debug)]
pub(crate) struct DirectWrite(OwnedWriteHalf);

impl DirectWrite {
    pub(crate) fn new(half: OwnedWriteHalf) -> Self {
        Self(half)
    }
}

impl AsyncWrite for DirectWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let sent = socket2::SockRef::from(self.0.as_ref()).send(buf);
        match sent {
            Ok(n) => Poll::Ready(Ok(n)),
            // Full (or interrupted): tokio tries again, and waits for room if there is none.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Pin::new(&mut self.0).poll_write(cx, buf)
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn early_bytes_are_read_before_registration_and_later_ones_after() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = Acceptor::new(listener).expect("acceptor");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client.write_all(b"JOIN x\n").await.expect("write");
        let (accepted, peer) = acceptor.accept().await.expect("accept");
        assert_eq!(peer, client.local_addr().expect("local"));
        // The line may not have crossed loopback yet when the connection is taken: whatever
        // `open` did not see, the registered stream reads.
        let mut chunk = [0u8; CHUNK];
        let (mut stream, n) = accepted.open(&mut chunk).expect("open");
        let mut got = chunk[..n].to_vec();
        // Bounded: each read brings at least one byte.
        for _ in 0..7 {
            if got.len() >= 7 {
                break;
            }
            let mut more = [0u8; 16];
            let m = stream.read(&mut more).await.expect("read");
            assert!(m > 0, "early end of stream");
            got.extend_from_slice(&more[..m]);
        }
        assert_eq!(got, b"JOIN x\n");
        client.write_all(b"PING\n").await.expect("write");
        let mut more = [0u8; 16];
        let m = stream.read(&mut more).await.expect("read");
        assert_eq!(&more[..m], b"PING\n");
        stream.write_all(b"OK\n").await.expect("reply");
        let m = client.read(&mut more).await.expect("read reply");
        assert_eq!(&more[..m], b"OK\n");
    }

    #[tokio::test]
    async fn a_full_socket_makes_the_direct_writer_wait_and_nothing_is_lost() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = Acceptor::new(listener).expect("acceptor");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = acceptor.accept().await.expect("accept");
        let stream = accepted.register().expect("register");
        let (_read, write) = stream.into_split();
        let mut writer = DirectWrite::new(write);
        // Far more than loopback buffers hold: on this single-threaded test runtime the sender
        // runs until the socket is full before the reader is first polled, so the writer must
        // wait for room (tokio's readiness), not fail or drop bytes.
        const TOTAL: usize = 8 << 20;
        let sender = tokio::spawn(async move {
            let block: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
            for _ in 0..TOTAL / block.len() {
                writer.write_all(&block).await.expect("write");
            }
            writer.shutdown().await.expect("shutdown");
        });
        let mut got = Vec::with_capacity(TOTAL);
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            client.read_to_end(&mut got),
        )
        .await
        .expect("in time")
        .expect("read");
        assert_eq!(read, TOTAL);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 256) as u8));
        sender.await.expect("sender");
    }
}
