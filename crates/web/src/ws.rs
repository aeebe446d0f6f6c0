//! `/ws`: the line protocol over WebSocket, one text frame per line each way.
//!
//! The connection runs on the same driver as a TCP connection ([`conn::serve`]): [`WsLines`]
//! turns frames into lines and [`WsWriter`] turns the driver's lines into frames, so the
//! greeting, commands, limits, class hubs, `EVENT LAGGED` and the login timeout are the TCP
//! port's own. Both halves share the socket behind a mutex that is only ever held inside one
//! poll (never across an await), by the one task that serves the connection.
//!
//! Pings come from one sweep ([`Pings::sweep`]) over every WebSocket each `web_ping_interval`,
//! not a timer per connection: it marks each connection that is due a ping (or silent for two
//! intervals) and wakes its reader, which sends the ping (or ends the connection) itself.
//!
//! What differs from TCP, because a WebSocket library cannot skip the rest of a frame: a frame
//! longer than the limit (or a text frame that is not UTF-8) ends the connection after its
//! `ERR`, with close code 1009 (1007). A binary frame is `ERR ENCODING` and the connection goes
//! on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker, ready};

use attendance_protocol::LineError;
use attendance_server::session::{LineItem, Peer};
use attendance_server::transport::conn;
use attendance_server::transport::lines::{Line, LineSource};
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{Sink, Stream};
use tokio::io::AsyncWrite;
use tokio::time::Instant;
use tracing::{Instrument as _, debug, debug_span};

use crate::http::ConnPermit;
use crate::routes::WebState;

/// Bytes the WebSocket library reads at a time and keeps between frames. Small: tens of
/// thousands of phones sit idle for an hour (its default is 128 KiB per connection).
const READ_BUFFER: usize = 256;
/// Bytes of frames gathered before they are written: the lines the driver hands over in one
/// batch (a burst of announcements) leave in one write, as on TCP, instead of one system call a
/// frame. Small, as the library keeps the buffer's capacity after a burst.
const WRITE_BUFFER: usize = 1024;
/// Most bytes queued for a client that does not read, beyond the socket's own buffer (one
/// frame at a time is queued; this only caps a pathological one).
const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// Close codes (RFC 6455 §7.4.1).
const CLOSE_INVALID_DATA: u16 = 1007;
const CLOSE_TOO_BIG: u16 = 1009;

/// `/ws`.
pub fn routes() -> Router<WebState> {
    Router::new().route("/ws", get(upgrade))
}

async fn upgrade(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    permit: Option<axum::Extension<ConnPermit>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let engine = Arc::clone(state.engine());
    if let Err(why) = origin_allowed(&headers, &engine.live().web_allowed_origins) {
        debug!(%peer, "websocket refused: {why}");
        return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    }
    let live = engine.live();
    // A line plus its CRLF is the largest frame; anything larger is refused by the library
    // before it is buffered.
    let limit = live.max_line.saturating_add(2);
    drop(live);
    let pings = Arc::clone(state.pings());
    // Keeps the daemon's shutdown waiting for this connection, as it waits for TCP ones.
    let token = state.tracker().token();
    let permit = permit.map(|axum::Extension(p)| p);
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_frame_size(limit)
        .max_message_size(limit)
        .on_upgrade(move |socket| {
            let conn = engine.next_conn_id();
            let span = debug_span!("ws", %peer, id = conn);
            async move {
                let shared = Arc::new(Mutex::new(Shared {
                    socket,
                    closing: None,
                    heard: Instant::now(),
                    reader: None,
                    ping_due: false,
                    silent: false,
                }));
                let _swept = pings.watch(conn, &shared);
                let lines = WsLines::new(Arc::clone(&shared), engine.live().max_line);
                let writer = WsWriter {
                    shared: Arc::clone(&shared),
                };
                conn::serve(engine, lines, writer, Peer::Ws(peer), conn).await;
                close(&shared).await;
                drop((permit, token));
            }
            .instrument(span)
        })
}

/// Whether a WebSocket upgrade with these headers may proceed: no `Origin` (not a browser,
/// so not a cross-site page), an `Origin` naming the host the request was sent to, or one on
/// the allow-list.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> Result<(), &'static str> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| "unreadable Origin")?;
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return Ok(());
    }
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .ok_or("cross-origin WebSocket refused")?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or("cross-origin WebSocket refused")?;
    if authority.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err("cross-origin WebSocket refused")
    }
}

/// The socket, shared by the connection's reading and writing halves (and seen by the ping
/// sweep).
struct Shared {
    socket: WebSocket,
    /// A close frame to send once the last reply is out (why the connection ends).
    closing: Option<CloseFrame>,
    /// When the peer last sent anything (a frame or a pong).
    heard: Instant,
    /// The reader's waker, for the sweep to wake it.
    reader: Option<Waker>,
    /// The sweep asks for a ping.
    ping_due: bool,
    /// The sweep found the peer silent for two intervals: the connection ends.
    silent: bool,
}

/// Every open WebSocket, for the ping sweep: 16 bytes and a map slot per connection, where a
/// timer each would cost a boxed `Sleep` and a timer-wheel entry.
#[derive(Debug, Default)]
pub struct Pings {
    conns: Mutex<HashMap<u64, Weak<Mutex<Shared>>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Takes a connection off the sweep when it ends.
struct Watched<'a> {
    pings: &'a Pings,
    conn: u64,
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        self.pings.lock().remove(&self.conn);
    }
}

impl Pings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Mutex<Shared>>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts connection `conn` on the sweep until the returned guard drops.
    fn watch<'a>(&'a self, conn: u64, shared: &Arc<Mutex<Shared>>) -> Watched<'a> {
        self.lock().insert(conn, Arc::downgrade(shared));
        Watched { pings: self, conn }
    }

    /// WebSockets open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every `web_ping_interval` (read afresh each time, so a reload applies) until the daemon
    /// shuts down: each connection silent for two intervals is marked to end, every other one
    /// to send a ping; their readers are woken to do it.
    pub async fn sweep(self: Arc<Self>, engine: Arc<attendance_server::engine::Engine>) {
        let shutdown = engine.shutdown_token().clone();
        loop {
            let interval = engine.live().web_ping_interval;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let now = Instant::now();
            let conns: Vec<Weak<Mutex<Shared>>> = self.lock().values().cloned().collect();
            for weak in conns {
                let Some(shared) = weak.upgrade() else {
                    continue;
                };
                let waker = {
                    let mut s = lock(&shared);
                    if now.duration_since(s.heard) >= interval * 2 {
                        s.silent = true;
                    } else {
                        s.ping_due = true;
                    }
                    s.reader.clone()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            }
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sends the close frame (with the reason, if the connection ended on a bad frame), briefly:
/// a peer that is gone must not hold the task.
async fn close(shared: &Mutex<Shared>) {
    let frame = lock(shared).closing.take();
    let send = std::future::poll_fn(|cx| {
        let mut s = lock(shared);
        let socket = Pin::new(&mut s.socket);
        let _ = ready!(socket.poll_ready(cx));
        let _ = Pin::new(&mut s.socket).start_send(Message::Close(frame.clone()));
        Poll::Ready(())
    });
    let flush = std::future::poll_fn(|cx| {
        let mut s = lock(shared);
        Pin::new(&mut s.socket).poll_close(cx)
    });
    let _ = tokio::time::timeout(conn::FAREWELL_TIMEOUT, async {
        send.await;
        let _ = flush.await;
    })
    .await;
}

/// Frames in, lines out, and the protocol-level ping that keeps NATs open and finds dead
/// peers: a ping when the sweep asks, and the end of a peer silent (not even a pong) for two
/// intervals.
struct WsLines {
    shared: Arc<Mutex<Shared>>,
    max_line: usize,
    /// A refusal to report before the stream ends (an over-long or undecodable frame).
    last: Option<LineError>,
    ended: bool,
}

impl WsLines {
    fn new(shared: Arc<Mutex<Shared>>, max_line: usize) -> Self {
        Self {
            shared,
            max_line,
            last: None,
            ended: false,
        }
    }

    fn poll_next_line(&mut self, cx: &mut Context<'_>) -> Poll<Option<std::io::Result<Line>>> {
        if let Some(e) = self.last.take() {
            return Poll::Ready(Some(Ok(line(Err(e)))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        // Bounded: each turn consumes a frame or returns.
        loop {
            let mut s = lock(&self.shared);
            if s.silent {
                debug!("no frame or pong for two ping intervals; closing");
                return Poll::Ready(Some(Err(std::io::ErrorKind::TimedOut.into())));
            }
            if std::mem::take(&mut s.ping_due) {
                send_ping(&mut s, cx);
            }
            let item = match Pin::new(&mut s.socket).poll_next(cx) {
                Poll::Ready(item) => item,
                Poll::Pending => {
                    if !s.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        s.reader = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            };
            s.heard = Instant::now();
            match item {
                None | Some(Ok(Message::Close(_))) => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Some(Ok(Message::Text(text))) => {
                    return Poll::Ready(Some(Ok(line(frame_line(&text, self.max_line)))));
                }
                Some(Ok(Message::Binary(_))) => {
                    return Poll::Ready(Some(Ok(line(Err(LineError::Encoding)))));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => {
                    // The library cannot go on after a bad frame: say why, then close.
                    self.ended = true;
                    let (why, code) = match fatal_reason(e, self.max_line) {
                        Some(found) => found,
                        None => return Poll::Ready(None),
                    };
                    s.closing = Some(CloseFrame {
                        code,
                        reason: Utf8Bytes::from_static(match code {
                            CLOSE_TOO_BIG => "line too long",
                            _ => "not UTF-8",
                        }),
                    });
                    return Poll::Ready(Some(Ok(line(Err(why)))));
                }
            }
        }
    }
}

/// Queues a ping; it goes out with the socket's next flush (now, if it can).
fn send_ping(s: &mut Shared, cx: &mut Context<'_>) {
    if let Poll::Ready(Ok(())) = Pin::new(&mut s.socket).poll_ready(cx) {
        let _ = Pin::new(&mut s.socket).start_send(Message::Ping(bytes::Bytes::new()));
        let _ = Pin::new(&mut s.socket).poll_flush(cx);
    }
}

/// The protocol refusal and close code for a frame the library gave up on, if it was one.
fn fatal_reason(e: axum::Error, max_line: usize) -> Option<(LineError, u16)> {
    let inner = e.into_inner();
    let e = inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>()?;
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Capacity(_) => Some((LineError::TooLong(max_line), CLOSE_TOO_BIG)),
        E::Utf8(_) => Some((LineError::Encoding, CLOSE_INVALID_DATA)),
        _ => None,
    }
}

fn line(item: LineItem) -> Line {
    Line {
        item,
        arrived: Instant::now(),
    }
}

/// A text frame as one line: one trailing LF or CRLF is allowed (as TCP clients send them).
fn frame_line(text: &str, max_line: usize) -> LineItem {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.len() > max_line {
        Err(LineError::TooLong(max_line))
    } else {
        Ok(text.to_owned())
    }
}

impl LineSource for WsLines {
    fn next_line(
        &mut self,
    ) -> impl std::future::Future<Output = Option<std::io::Result<Line>>> + Send {
        std::future::poll_fn(|cx| self.poll_next_line(cx))
    }
}

/// Lines in, text frames out. The driver hands it whole lines (each write ends with `\n`); a
/// write is taken a line at a time, each as one frame without its `\n`.
struct WsWriter {
    shared: Arc<Mutex<Shared>>,
}

impl AsyncWrite for WsWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut s = lock(&self.shared);
        ready!(Pin::new(&mut s.socket).poll_ready(cx)).map_err(std::io::Error::other)?;
        let end = memchr::memchr(b'\n', buf).map_or(buf.len(), |i| i + 1);
        let text = buf[..end].strip_suffix(b"\n").unwrap_or(&buf[..end]);
        let text = std::str::from_utf8(text).map_err(std::io::Error::other)?;
        Pin::new(&mut s.socket)
            .start_send(Message::Text(Utf8Bytes::from(text)))
            .map_err(std::io::Error::other)?;
        Poll::Ready(Ok(end))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut s = lock(&self.shared);
        Pin::new(&mut s.socket)
            .poll_flush(cx)
            .map_err(std::io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().expect("host"));
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().expect("origin"));
        }
        h
    }

    #[test]
    fn origins_of_the_same_host_or_the_allow_list_pass_and_others_are_refused() {
        let allow = vec!["https://portal.school.example".to_owned()];
        assert!(origin_allowed(&headers(None, "a:8000"), &allow).is_ok());
        assert!(origin_allowed(&headers(Some("http://a:8000"), "a:8000"), &allow).is_ok());
        assert!(origin_allowed(&headers(Some("https://A:8000"), "a:8000"), &allow).is_ok());
        assert!(
            origin_allowed(
                &headers(Some("https://portal.school.example"), "a:8000"),
                &allow
            )
            .is_ok()
        );
        assert!(origin_allowed(&headers(Some("http://evil.example"), "a:8000"), &allow).is_err());
        assert!(origin_allowed(&headers(Some("http://a:8001"), "a:8000"), &allow).is_err());
        assert!(origin_allowed(&headers(Some("null"), "a:8000"), &allow).is_err());
    }

    #[test]
    fn a_frame_is_one_line_with_an_optional_line_ending() {
        assert_eq!(frame_line("PING 1\r\n", 8), Ok("PING 1".to_owned()));
        assert_eq!(frame_line("PING 1\n", 8), Ok("PING 1".to_owned()));
        assert_eq!(frame_line("TIME", 8), Ok("TIME".to_owned()));
        assert_eq!(frame_line("123456789", 8), Err(LineError::TooLong(8)));
    }
}
