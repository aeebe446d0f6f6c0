//! A TCP proxy on loopback that a test can cut: every connection through it is dropped at once,
//! and new ones are refused until it is healed — a network drop between a browser and the
//! daemon, without touching either.
//!
//! It runs on a thread and runtime of its own, so it keeps forwarding while the test blocks
//! (on a browser scenario's progress line, say).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;

/// Connections the proxy carries at once (more are refused).
const MAX_CONNECTIONS: usize = 256;

/// The proxy; stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct CutProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    cut: broadcast::Sender<()>,
    refusing: Arc<AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
}

impl CutProxy {
    /// A proxy on `127.0.0.1:0` to `upstream`.
    ///
    /// # Errors
    /// If it cannot listen.
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let cut = broadcast::channel(4).0;
        let refusing = Arc::new(AtomicBool::new(false));
        let stop = tokio_util::sync::CancellationToken::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, flag, token) = (cut.clone(), Arc::clone(&refusing), stop.clone());
        std::thread::Builder::new()
            .name("cut-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        () = accept(listener, upstream, tx, flag) => {}
                        () = token.cancelled() => {}
                    }
                });
            })?;
        Ok(Self {
            addr,
            cut,
            refusing,
            stop,
        })
    }

    /// Drops every connection through the proxy now, and refuses new ones until [`heal`].
    ///
    /// [`heal`]: CutProxy::heal
    pub fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        let _ = self.cut.send(());
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    cut: broadcast::Sender<()>,
    refusing: Arc<AtomicBool>,
) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        if refusing.load(Ordering::SeqCst) || conns.len() >= MAX_CONNECTIONS {
            // Dropped unanswered: the client sees the connection closed.
            continue;
        }
        let mut stop = cut.subscribe();
        conns.spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = stop.recv() => {}
            }
        });
    }
}
