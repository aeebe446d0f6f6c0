//! A reference point for `attendance-bench marks`: the daemon's shape with none of its logic.
//!
//! It answers the kiosk shape only: `HELLO` on connect, `JOIN <id>` with `OK JOIN <id> 0`, and
//! `PRESENT` with `OK PRESENT <fixed time>` once a fixed row for `<id>` is written and
//! `fdatasync`ed, in batches, exactly as the daemon does it: a task per connection, one writer
//! task that takes everything queued and gives stragglers a few scheduler passes (commit delay),
//! the write and sync on the blocking pool, and a oneshot acknowledgement per mark. No classes,
//! no rate limits, no validation, no metrics. Comparing it with Redis tells how much of the
//! daemon's gap to Redis is the architecture and how much is the daemon's own work:
//!
//! ```sh
//! cargo run --release -p attendance-bench --example bare_marks -- 127.0.0.1:7002 &
//! target/release/attendance-bench marks -c 256 -m 100000 --addr 127.0.0.1:7002 --compare redis --rounds 5
//! ```
//!
//! Variants, to see what each change of the architecture is worth: `--current-thread` (one
//! thread for everything), `--inline-sync` (the write and sync on the writer's own worker, not
//! the blocking pool), `--direct-replies` (the writer writes each `OK PRESENT` to the socket
//! itself, so a mark wakes its connection's task once instead of twice). Loopback only; the
//! rows go to a temporary file removed on exit. Not for anything but measuring.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

mod kiosk;
use kiosk::{MAX_LINE, REPLY_PRESENT, Request};

/// Most marks written and synced as one batch (the daemon's `MAX_BATCH`).
const MAX_BATCH: usize = 4096;
/// Scheduler passes the writer waits for stragglers (the daemon's `GATHER_PASSES`).
const GATHER_PASSES: usize = 32;

#[derive(Debug, Clone, Copy)]
struct Variant {
    current_thread: bool,
    inline_sync: bool,
    direct_replies: bool,
}

/// How a mark is acknowledged once its batch is on disk.
enum Ack {
    /// Wake the connection's task, which writes the reply.
    Wake(oneshot::Sender<()>),
    /// Write the reply to the socket from the writer task.
    Direct(Arc<TcpStream>, Vec<u8>),
}

fn main() -> anyhow::Result<()> {
    let mut addr: Option<String> = None;
    let mut variant = Variant {
        current_thread: false,
        inline_sync: false,
        direct_replies: false,
    };
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--current-thread" => variant.current_thread = true,
            "--inline-sync" => variant.inline_sync = true,
            "--direct-replies" => variant.direct_replies = true,
            other => addr = Some(other.to_owned()),
        }
    }
    let addr = kiosk::loopback_addr(addr.as_deref(), 7002)?;
    let runtime = if variant.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(addr, variant))
}

async fn serve(addr: SocketAddr, variant: Variant) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await.context("bind")?;
    let file = tempfile::tempfile().context("temporary file")?;
    let (tx, rx) = mpsc::channel::<(Vec<u8>, Ack)>(8192);
    let writer = tokio::spawn(write_batches(file, rx, variant.inline_sync));
    eprintln!("bare_marks: listening on {addr} ({variant:?})");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted.context("accept")?;
                tokio::spawn(connection(Arc::new(stream), peer, tx.clone(), variant.direct_replies));
            }
            result = tokio::signal::ctrl_c() => {
                result.context("ctrl-c")?;
                break;
            }
        }
    }
    drop(tx);
    writer.abort();
    Ok(())
}

async fn write_batches(
    mut file: std::fs::File,
    mut rx: mpsc::Receiver<(Vec<u8>, Ack)>,
    inline_sync: bool,
) -> anyhow::Result<()> {
    let mut queue = Vec::new();
    while rx.recv_many(&mut queue, MAX_BATCH).await > 0 {
        for _ in 0..GATHER_PASSES {
            tokio::task::yield_now().await;
            let before = queue.len();
            while let Ok(request) = rx.try_recv() {
                queue.push(request);
            }
            if queue.len() == before {
                break;
            }
        }
        let mut bytes = Vec::new();
        for (row, _) in &queue {
            bytes.extend_from_slice(row);
        }
        let work = move || -> std::io::Result<std::fs::File> {
            file.write_all(&bytes)?;
            file.sync_data()?;
            Ok(file)
        };
        file = if inline_sync {
            work()?
        } else {
            tokio::task::spawn_blocking(work).await??
        };
        for (_, ack) in queue.drain(..) {
            match ack {
                Ack::Wake(done) => {
                    let _ = done.send(());
                }
                Ack::Direct(stream, reply) => {
                    // A full socket buffer loses the reply; the kiosk client reads every reply
                    // before it sends again, so its buffer is never full here.
                    let _ = stream.try_write(&reply);
                }
            }
        }
    }
    Ok(())
}

/// One client: reads lines, answers `JOIN` at once and `PRESENT` once its row is on disk.
async fn connection(
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    tx: mpsc::Sender<(Vec<u8>, Ack)>,
    direct_replies: bool,
) {
    if write_all(&stream, b"HELLO bare_marks\n").await.is_err() {
        return;
    }
    let mut buf = vec![0u8; MAX_LINE];
    let mut have = 0;
    let mut who = Vec::new();
    loop {
        if have == buf.len() {
            return; // a line longer than MAX_LINE
        }
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut buf[have..]) {
            Ok(0) => return,
            Ok(n) => have += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(len) = buf[start..have].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + len];
            start += len + 1;
            let request = Request::parse(line);
            kiosk::answer(&request, &mut out);
            match request {
                Request::Join(id) => who = id.to_vec(),
                Request::Present => {
                    let mut row = Vec::new();
                    kiosk::row(&mut row, &who, peer.ip());
                    out.extend_from_slice(REPLY_PRESENT);
                    if direct_replies {
                        let ack = Ack::Direct(Arc::clone(&stream), std::mem::take(&mut out));
                        if tx.send((row, ack)).await.is_err() {
                            return;
                        }
                    } else {
                        let (done, acked) = oneshot::channel();
                        if tx.send((row, Ack::Wake(done))).await.is_err() || acked.await.is_err() {
                            return;
                        }
                    }
                }
                Request::Other => {}
            }
        }
        buf.copy_within(start..have, 0);
        have -= start;
        if !out.is_empty() && write_all(&stream, &out).await.is_err() {
            return;
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
