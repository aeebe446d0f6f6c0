//! The connection driver every byte-stream transport shares: one task per connection reads
//! lines, hands them to its [`Session`], and writes what the session answered, the class's
//! announcements and the heartbeat. It is the only writer to its socket, so lines never
//! interleave. It decides nothing about what a line means.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use attendance_protocol::{Event, ServerLine};
use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::lines::{Line, LineSource};
use crate::engine::{ClassEvent, Engine, Signal};
use crate::hub::Announcement;
use crate::session::{ConnId, Flow, Outbox, Peer, Session};

/// The connection must close (the peer is gone or stuck).
#[derive(Debug)]
struct Closed;

type Step = Result<Flow, Closed>;

/// Most lines whose replies are gathered into one write (a program pipelining `JOIN` and
/// `PRESENT`, a paste into netcat).
const MAX_CORKED_LINES: usize = 8;

/// Longest wait to tell a client `EVENT SHUTDOWN`: a client that does not read must not hold
/// the shutdown for `write_timeout` (as long as systemd's stop timeout).
pub const FAREWELL_TIMEOUT: Duration = Duration::from_secs(2);

struct Connection<W> {
    session: Session,
    /// The socket's write half. Lines are written straight from their shared `Bytes`; no
    /// per-connection write buffer is kept.
    writer: W,
}

/// Serves one client until it quits, drops, misbehaves too often or the server shuts down.
///
/// `write` gets whole lines only (each `poll_write` buffer ends with a line's `\n`, though a
/// slow peer may take a line in parts); a frame-based transport can send one frame per line.
pub async fn serve<L, W>(engine: Arc<Engine>, mut reader: L, write: W, peer: Peer, conn: ConnId)
where
    L: LineSource,
    W: AsyncWrite + Unpin + Send,
{
    debug!("accepted");
    let signals = engine.signals.subscribe();
    let mut c = Connection {
        session: Session::new(engine, peer, conn, Instant::now()),
        writer: write,
    };
    let _ = c.run(&mut reader, signals).await;
    // The seat is kept for a resume, or given back: the class hears the student leave.
    c.session.end();
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

async fn next_announcement(session: &mut Session) -> Result<Announcement, RecvError> {
    match session.membership_mut() {
        Some(m) => m.receiver().recv().await,
        None => std::future::pending().await,
    }
}

impl<W: AsyncWrite + Unpin + Send> Connection<W> {
    /// The connection's loop. Memory matters here: tens of thousands of these sit idle for an
    /// hour, so everything awaited only now and then (replies, the login timer, rate-limit
    /// waits, forwarding, the login timeout's farewell) is boxed, and the idle state is just
    /// three small futures: the next line, the next announcement and the next server-wide
    /// signal. (An unboxed `await` of a write in one branch once added 176 bytes to every
    /// connection's task, and with the allocator's size classes 256 bytes of RSS per held
    /// connection; `attendance-bench hold` shows it.)
    async fn run<L: LineSource>(
        &mut self,
        reader: &mut L,
        signals: broadcast::Receiver<Signal>,
    ) -> Step {
        if Box::pin(self.answer_early(reader)).await? == Flow::Close {
            return Ok(Flow::Close);
        }
        let mut login_timer = self
            .session
            .login_deadline()
            .map(|at| Box::pin(tokio::time::sleep_until(at)));
        let next_signal = next_signal(signals);
        tokio::pin!(next_signal);
        loop {
            if login_timer.is_some() && self.session.login_deadline().is_none() {
                login_timer = None;
            }
            tokio::select! {
                biased;
                (signal, signals) = &mut next_signal => {
                    next_signal.set(self::next_signal(signals));
                    // The flag decides, not the value: a heartbeat racing the shutdown (or a
                    // lag that skipped it) must not hide it.
                    if self.session.engine().shutdown.is_cancelled() {
                        let line = ServerLine::Event(Event::Shutdown).encode();
                        Box::pin(self.send_within(line, Some(FAREWELL_TIMEOUT))).await?;
                        return Ok(Flow::Close);
                    }
                    match signal {
                        Ok(Signal::Heartbeat(line)) => Box::pin(self.send(line)).await?,
                        Ok(Signal::Admin(line)) if self.session.peer() == Peer::Admin => {
                            Box::pin(self.send(line)).await?;
                        }
                        _ => {}
                    }
                }
                item = reader.next_line() => {
                    if Box::pin(self.answer_lines(reader, item)).await? == Flow::Close {
                        return Ok(Flow::Close);
                    }
                }
                received = next_announcement(&mut self.session) => match received {
                    Ok(a) => Box::pin(self.forward(a)).await?,
                    Err(RecvError::Lagged(n)) => {
                        Box::pin(self.send_event(Event::Lagged(n))).await?;
                        // The lag may have skipped the word that the seat was taken over.
                        Box::pin(self.close_if_replaced()).await?;
                    }
                    Err(RecvError::Closed) => return Ok(Flow::Close),
                },
                () = async { if let Some(t) = &mut login_timer { t.await } }, if login_timer.is_some() => {
                    return Box::pin(self.login_timed_out()).await;
                }
            }
        }
    }

    /// Tells a client that never joined why it is closed.
    async fn login_timed_out(&mut self) -> Step {
        let mut out = Outbox::new();
        let flow = self.session.on_login_timeout(&mut out);
        self.flush(&mut out).await?;
        Ok(flow)
    }

    /// Greets the client. A client that sent lines without waiting for the greeting (a program
    /// may) has them answered now, and the greeting and the replies go out in one write.
    async fn answer_early<L: LineSource>(&mut self, reader: &mut L) -> Step {
        let hello = self.session.hello();
        let Some(first) = reader.buffered_line() else {
            self.send(hello).await?;
            return Ok(Flow::Continue);
        };
        self.answer_corked(reader, first, Outbox::starting_with(&hello))
            .await
    }

    /// Answers a line, and the lines already read behind it, with one write.
    async fn answer_lines<L: LineSource>(
        &mut self,
        reader: &mut L,
        item: Option<std::io::Result<Line>>,
    ) -> Step {
        match item {
            Some(first) => self.answer_corked(reader, first, Outbox::new()).await,
            None => Ok(Flow::Close),
        }
    }

    /// Answers `first` and the lines buffered behind it, gathering every reply into `out` and
    /// writing it at once.
    async fn answer_corked<L: LineSource>(
        &mut self,
        reader: &mut L,
        first: std::io::Result<Line>,
        mut out: Outbox,
    ) -> Step {
        let mut flow = self.take_line(first, &mut out).await;
        // Bounded: only lines already read, and at most a handful per write.
        for _ in 1..MAX_CORKED_LINES {
            if !matches!(flow, Ok(Flow::Continue)) {
                break;
            }
            let Some(item) = reader.buffered_line() else {
                break;
            };
            flow = self.take_line(item, &mut out).await;
        }
        // Whatever happened, what was gathered goes out (a QUIT's BYE, an ERR before closing).
        self.flush(&mut out).await?;
        flow
    }

    async fn take_line(&mut self, item: std::io::Result<Line>, out: &mut Outbox) -> Step {
        match item {
            Ok(line) => Ok(self.session.on_item(line.item, line.arrived, out).await),
            Err(e) => {
                debug!(error = %e, "read failed");
                Err(Closed)
            }
        }
    }

    /// Writes what the session queued, if anything.
    async fn flush(&mut self, out: &mut Outbox) -> Result<(), Closed> {
        match out.take() {
            Some(bytes) => self.send(bytes).await,
            None => Ok(()),
        }
    }

    async fn send_event(&mut self, event: Event) -> Result<(), Closed> {
        if let Event::Lagged(n) = event {
            self.session.engine().metrics.lagged(n);
            if let Some(m) = self.session.membership_mut() {
                let id = m.id.clone();
                self.session
                    .engine()
                    .publish(|| ClassEvent::Lagged { id, skipped: n });
            }
        }
        self.send(ServerLine::Event(event).encode()).await
    }

    /// Writes an announcement, and any others already waiting, in one write.
    async fn forward(&mut self, first: Announcement) -> Result<(), Closed> {
        let Some(m) = self.session.membership_mut() else {
            return Ok(());
        };
        let gathered = m.gather(&first);
        if let Some(lines) = gathered.lines {
            if gathered.ended {
                // The session closed: its EVENT ENDED is the last line.
                let _ = self.send_within(lines, Some(FAREWELL_TIMEOUT)).await;
                return Err(Closed);
            }
            self.send(lines).await?;
        }
        if gathered.replaced {
            return self.replaced().await;
        }
        if let Some(n) = gathered.lagged {
            self.send_event(Event::Lagged(n)).await?;
            self.close_if_replaced().await?;
        }
        Ok(())
    }

    /// Closes the connection with `EVENT REPLACED` if a resume elsewhere took its seat.
    async fn close_if_replaced(&mut self) -> Result<(), Closed> {
        match self.session.membership_mut() {
            Some(m) if !m.holds() => self.replaced().await,
            _ => Ok(()),
        }
    }

    /// The seat was taken over by a resume on another connection: `EVENT REPLACED`, close.
    async fn replaced(&mut self) -> Result<(), Closed> {
        let line = ServerLine::Event(Event::Replaced).encode();
        let _ = self.send_within(line, Some(FAREWELL_TIMEOUT)).await;
        Err(Closed)
    }

    /// Writes `line`, giving up on a peer that does not read for `write_timeout`.
    async fn send(&mut self, line: Bytes) -> Result<(), Closed> {
        self.send_within(line, None).await
    }

    /// Writes `line`, giving up on a peer that does not read for `timeout` (`write_timeout`
    /// if `None`, read only when the write has to wait: one line to a class of thousands is
    /// written by each member's task, and the fast path stays free of the settings).
    async fn send_within(&mut self, line: Bytes, timeout: Option<Duration>) -> Result<(), Closed> {
        // Nearly every line fits in the socket's buffer at once: tried first without a timer,
        // which keeps the timeout's state out of every future that sends.
        let mut sent = 0;
        let now = std::future::poll_fn(|cx| {
            Poll::Ready(write_now(&mut self.writer, cx, &line, &mut sent))
        })
        .await;
        match now {
            Ok(true) => Ok(()),
            Ok(false) => {
                let timeout = timeout.unwrap_or_else(|| self.session.engine().live().write_timeout);
                Box::pin(self.send_rest(line, sent, timeout)).await
            }
            Err(e) => {
                debug!(error = %e, "write failed");
                Err(Closed)
            }
        }
    }

    /// The rest of `line` after its first `sent` bytes, for a peer that reads slowly.
    async fn send_rest(
        &mut self,
        line: Bytes,
        sent: usize,
        timeout: Duration,
    ) -> Result<(), Closed> {
        let writer = &mut self.writer;
        let write = async move {
            writer.write_all(&line[sent..]).await?;
            // A no-op on TCP; pushes out the TLS record.
            writer.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                debug!(error = %e, "write failed");
                Err(Closed)
            }
            Err(_) => {
                warn!(peer = %self.session.peer(), "client has not read for {timeout:?}; closing");
                Err(Closed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use crate::engine::for_tests;

    /// A peer that reads the greeting and then never another byte.
    struct Stuck {
        room: usize,
    }

    impl AsyncWrite for Stuck {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.room == 0 {
                // Never woken: the peer never reads again.
                return Poll::Pending;
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A peer that sends nothing.
    struct Silent;

    impl LineSource for Silent {
        fn next_line(
            &mut self,
        ) -> impl std::future::Future<Output = Option<std::io::Result<Line>>> + Send {
            std::future::pending()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_shutdown_farewell_to_a_client_that_does_not_read_is_brief() {
        let config = Config {
            write_timeout: Duration::from_secs(30),
            ..Config::default()
        };
        let (engine, _dir) = for_tests(config, |l| l).await;
        let hello = engine.hello.len();
        let task = tokio::spawn(serve(
            Arc::clone(&engine),
            Silent,
            Stuck { room: hello },
            Peer::Tcp(([127, 0, 0, 1], 40_000).into()),
            1,
        ));
        // Let it greet and settle into its wait.
        tokio::task::yield_now().await;
        let start = Instant::now();
        engine.shutdown.cancel();
        let _ = engine.signals.send(Signal::Shutdown);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the connection ends well before write_timeout")
            .expect("task");
        let took = Instant::now() - start;
        assert!(
            took >= FAREWELL_TIMEOUT && took < FAREWELL_TIMEOUT * 2,
            "{took:?}"
        );
    }
}
