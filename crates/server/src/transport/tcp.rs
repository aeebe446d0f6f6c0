//! The student port: accepts TCP connections (plain or TLS) under the connection limits, and
//! runs each on the shared connection driver. A client over a limit is told why (`ERR FULL`)
//! and closed. A connection from a trusted load balancer first gives its PROXY header (in its
//! own task, see [`serve_proxied`]), and is then served as the client it names.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use attendance_protocol::{ErrorCode, ServerLine};
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, debug_span, warn};

use super::lines::{self, Lines};
use crate::engine::Engine;
use crate::ops::limits::configure_listener;
use crate::session::Peer;

/// The socket options a listener hands every socket it accepts, as set by [`prepare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketOptions(Duration, usize);

/// Gives `listener` the live socket options. Called before the port is announced: the kernel
/// copies a listener's options into a connection when its handshake completes, which can be
/// before the accept loop first runs, so a client that connects the moment the port is logged
/// must already get them.
pub(crate) fn prepare(listener: &TcpListener, engine: &Engine) -> SocketOptions {
    let options = socket_options(engine);
    configure_listener(listener, options.0, options.1);
    options
}

/// Accepts connections until shutdown. `options` are those [`prepare`] gave the listener.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    options: SocketOptions,
    engine: Arc<Engine>,
    tracker: TaskTracker,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let (engine, tracker, tls) = (&engine, &tracker, tls.as_ref());
    let per_address = AddressSlots::new(engine.startup.max_per_address);
    let mut backoff = Duration::from_millis(10);
    // Re-applied when a reload changes them, so they hold for connections accepted from then on.
    let mut options = options;
    // Made once: re-creating it for every accept would register and unregister a waiter on
    // the token each time.
    let cancelled = engine.shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        // Biased: a cancellation is seen before another connection is taken.
        let accepted = tokio::select! {
            biased;
            () = &mut cancelled => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(e) => {
                // Out of descriptors or memory: wait a little instead of spinning.
                warn!(error = %e, "accept failed; backing off {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        follow_socket_options(&listener, &stream, &mut options, socket_options(engine));
        let conn = engine.next_conn_id();
        // A debug span: at the default level an idle connection carries no span data (about
        // 250 bytes each in the registry); warnings name the peer themselves.
        let span = debug_span!("conn", %peer, id = conn);
        let refuse_timeout = engine.live().write_timeout.min(Duration::from_secs(5));
        let Ok(permit) = engine.connections.clone().try_acquire_owned() else {
            let why = "the server is at its connection limit; try again later";
            engine.metrics.refused(ErrorCode::Full);
            tracker.spawn(refuse(stream, why, refuse_timeout).instrument(span));
            continue;
        };
        if engine.proxy.as_ref().is_some_and(|p| p.trusts(peer.ip())) {
            // The header is read in the connection's own task (a slow balancer connection
            // must not hold up accepts), and the per-address slot is the client's, taken there.
            let proxied = Proxied {
                engine: Arc::clone(engine),
                balancer: peer,
                conn,
                permit,
                per_address: per_address.clone(),
                tls: tls.cloned(),
            };
            tracker.spawn(serve_proxied(proxied, stream).instrument(span));
            continue;
        }
        let Some(slot) = per_address.take(peer.ip()) else {
            let why = "too many connections from your address";
            engine.metrics.refused(ErrorCode::Full);
            tracker.spawn(refuse(stream, why, refuse_timeout).instrument(span));
            continue;
        };
        let engine = Arc::clone(engine);
        match tls {
            None => tracker.spawn(
                async move {
                    let (lines, write) = split_early(stream, engine.live().max_line);
                    super::conn::serve(engine, lines, write, Peer::Tcp(peer), conn).await;
                    drop((permit, slot));
                }
                .instrument(span),
            ),
            // A separate task body: the TLS handshake's large state must not enlarge every
            // plain connection's task.
            Some(acceptor) => tracker.spawn(
                serve_tls(engine, acceptor.clone(), stream, peer, conn, (permit, slot))
                    .instrument(span),
            ),
        };
    }
}

/// The live socket options: TCP keepalive and the send buffer.
fn socket_options(engine: &Engine) -> SocketOptions {
    let live = engine.live();
    SocketOptions(live.tcp_keepalive, live.send_buffer)
}

/// After a reload changed the socket options (`now` differs from `applied`): `stream`, just
/// accepted with the old ones, gets the new ones, and so does the listener, which hands them to
/// every socket it accepts from then on.
fn follow_socket_options(
    listener: &TcpListener,
    stream: &TcpStream,
    applied: &mut SocketOptions,
    now: SocketOptions,
) {
    if now == *applied {
        return;
    }
    *applied = now;
    configure_listener(listener, now.0, now.1);
    if let Err(e) = crate::ops::limits::configure_socket(stream, now.0, now.1) {
        debug!(error = %e, "cannot set socket options");
    }
}

/// Splits a plain TCP connection into its line source, holding whatever the client has already
/// sent (see [`lines::read_early`]), and its write half. Not async: the read chunk lives on the
/// stack only here, never in the connection's task.
fn split_early(stream: TcpStream, max_line: usize) -> (Lines<OwnedReadHalf>, OwnedWriteHalf) {
    let mut chunk = [0u8; lines::CHUNK];
    let n = lines::read_early(&stream, &mut chunk);
    let (read, write) = stream.into_split();
    (Lines::with_early(read, max_line, &chunk[..n]), write)
}

/// What a connection from a trusted load balancer is served with once its header is read.
struct Proxied {
    engine: Arc<Engine>,
    /// The balancer's end of the connection (the socket's peer).
    balancer: std::net::SocketAddr,
    conn: u64,
    permit: OwnedSemaphorePermit,
    per_address: AddressSlots,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// A connection from a trusted load balancer: its PROXY header first (before TLS, within the
/// header timeout; a bad or missing one closes it), then the per-address slot of the client it
/// names, then the protocol as for any other connection, with that client as the peer.
async fn serve_proxied(p: Proxied, mut stream: TcpStream) {
    let Some(proxy) = p.engine.proxy.as_ref() else {
        return;
    };
    let Some(peer) = proxy
        .client_of(&mut stream, p.balancer, &p.engine.metrics)
        .await
    else {
        return;
    };
    let span = debug_span!("client", %peer);
    let Some(slot) = p.per_address.take(peer.ip()) else {
        let why = "too many connections from your address";
        p.engine.metrics.refused(ErrorCode::Full);
        let refuse_timeout = p.engine.live().write_timeout.min(Duration::from_secs(5));
        refuse(stream, why, refuse_timeout).instrument(span).await;
        return;
    };
    let guards = (p.permit, slot);
    match p.tls {
        None => {
            let (lines, write) = split_early(stream, p.engine.live().max_line);
            super::conn::serve(p.engine, lines, write, Peer::Tcp(peer), p.conn)
                .instrument(span)
                .await;
            drop(guards);
        }
        // Boxed: the TLS handshake's large state must not enlarge every plain proxied task.
        Some(acceptor) => {
            Box::pin(serve_tls(p.engine, acceptor, stream, peer, p.conn, guards))
                .instrument(span)
                .await;
        }
    }
}

/// Serves one TLS connection: handshake (bounded by `login_timeout`), then the protocol.
async fn serve_tls<G>(
    engine: Arc<Engine>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    conn: u64,
    guards: G,
) {
    let handshake = tokio::time::timeout(engine.live().login_timeout, acceptor.accept(stream));
    match handshake.await {
        Ok(Ok(tls)) => {
            let (read, write) = tokio::io::split(tls);
            let lines = Lines::new(read, engine.live().max_line);
            super::conn::serve(engine, lines, write, Peer::Tcp(peer), conn).await;
        }
        Ok(Err(e)) => debug!(error = %e, "tls handshake failed"),
        Err(_) => debug!("tls handshake timed out"),
    }
    drop(guards);
}

/// Per-address connection counts, when `max_per_address` is set. A clone shares the counts.
#[derive(Debug, Clone)]
struct AddressSlots {
    limit: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in [`AddressSlots`], given back on drop.
#[derive(Debug)]
struct AddressSlot {
    ip: IpAddr,
    counts: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
}

impl AddressSlots {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            counts: Arc::default(),
        }
    }

    /// A slot for `ip`, or `None` if that address has `limit` connections already.
    fn take(&self, ip: IpAddr) -> Option<AddressSlot> {
        if self.limit == 0 {
            return Some(AddressSlot { ip, counts: None });
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            ip,
            counts: Some(Arc::clone(&self.counts)),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some(counts) = &self.counts {
            let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = counts.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&self.ip);
                }
            }
        }
    }
}

/// Tells a client why it cannot be served (`ERR FULL`), at once, and closes.
async fn refuse(mut stream: TcpStream, why: &'static str, timeout: Duration) {
    debug!(why, "refusing connection");
    let line = ServerLine::err(ErrorCode::Full, why).encode();
    let _ = tokio::time::timeout(timeout, async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options_of(stream: &TcpStream) -> SocketOptions {
        let sock = socket2::SockRef::from(stream);
        SocketOptions(
            sock.tcp_keepalive_time().expect("keepalive"),
            sock.send_buffer_size().expect("sndbuf"),
        )
    }

    #[tokio::test]
    async fn reloaded_socket_options_reach_the_next_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut applied = SocketOptions(Duration::from_secs(60), 0);
        configure_listener(&listener, applied.0, applied.1);
        let _c1 = TcpStream::connect(addr).await.expect("connect");
        let (first, _) = listener.accept().await.expect("accept");
        let same = applied;
        follow_socket_options(&listener, &first, &mut applied, same);
        assert_eq!(options_of(&first).0, Duration::from_secs(60));

        // A reload: keepalive 17 s, send buffer 64 KiB (Linux reports it doubled).
        let reloaded = SocketOptions(Duration::from_secs(17), 65_536);
        let _c2 = TcpStream::connect(addr).await.expect("connect");
        let (second, _) = listener.accept().await.expect("accept");
        follow_socket_options(&listener, &second, &mut applied, reloaded);
        assert_eq!(applied, reloaded);
        let SocketOptions(keepalive, sndbuf) = options_of(&second);
        assert_eq!(keepalive, Duration::from_secs(17));
        assert!(sndbuf >= 65_536, "{sndbuf}");
        // The ones after it inherit them from the listener.
        let _c3 = TcpStream::connect(addr).await.expect("connect");
        let (third, _) = listener.accept().await.expect("accept");
        follow_socket_options(&listener, &third, &mut applied, reloaded);
        assert_eq!(options_of(&third), options_of(&second));
    }
}
