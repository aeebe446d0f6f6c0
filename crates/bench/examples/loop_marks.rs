//! A second reference point for `attendance-bench marks`: Redis's execution model, in Rust.
//!
//! One thread and one `mio` event loop own every socket, as `redis-server` does with
//! `appendfsync always`: each turn reads every readable client, answers `JOIN` and queues each
//! `PRESENT`'s fixed row, then (Redis's `beforeSleep`) writes the turn's rows to the file, syncs
//! once, and writes every client's replies. No tasks, no channels, no wake-ups between threads.
//! Same protocol subset and rows as `bare_marks`: `HELLO` on connect, `JOIN <id>` answered with
//! `OK JOIN <id> 0`, `PRESENT` with `OK PRESENT <fixed time>` once its row is on disk.
//!
//! `bare_marks` is the daemon's shape without its logic; this is the shape the README's "what
//! 1.0× would take" points at. Comparing the two against Redis tells how much a task per
//! connection costs on this shape:
//!
//! ```sh
//! cargo run --release -p attendance-bench --example loop_marks -- 127.0.0.1:7003 &
//! target/release/attendance-bench marks -c 256 -m 100000 --addr 127.0.0.1:7003 --compare redis --rounds 5
//! ```
//!
//! `--sync-thread`: the write and `fdatasync` go to one helper thread instead, so the loop keeps
//! reading (and gathers the next batch) while a batch syncs; a batch's replies go out when the
//! helper reports it on disk, through a `mio::Waker`. One batch at a time is on its way to disk.
//!
//! Loopback only; the rows go to an unnamed temporary file, gone when the process ends (stop it
//! with Ctrl-C or SIGTERM). Not for anything but measuring.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::SocketAddr;

use anyhow::Context as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

mod kiosk;
use kiosk::{MAX_LINE, REPLY_PRESENT, Request};

const LISTENER: Token = Token(usize::MAX);
const SYNCED: Token = Token(usize::MAX - 1);

struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read and not yet a whole line.
    input: Vec<u8>,
    /// Replies not yet written.
    output: Vec<u8>,
    /// The identity of the last `JOIN`.
    who: Vec<u8>,
    /// `PRESENT`s whose rows are in the batch being gathered, answered after its sync.
    waiting: usize,
    /// `PRESENT`s whose rows are in the batch on its way to disk (`--sync-thread`).
    in_flight: usize,
    /// Registered for writable events because a write did not go out whole.
    want_write: bool,
}

fn main() -> anyhow::Result<()> {
    let mut addr = None;
    let mut sync_thread = false;
    for arg in std::env::args().skip(1) {
        if arg == "--sync-thread" {
            sync_thread = true;
        } else {
            addr = Some(arg);
        }
    }
    let addr = kiosk::loopback_addr(addr.as_deref(), 7003)?;
    let mut file = tempfile::tempfile().context("temporary file")?;
    let mut poll = Poll::new().context("epoll")?;
    let disk = if sync_thread {
        let waker = Waker::new(poll.registry(), SYNCED).context("waker")?;
        Some(Disk::start(file.try_clone().context("file")?, waker))
    } else {
        None
    };
    let mut listener = TcpListener::bind(addr).context("bind")?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("loop_marks: listening on {addr} (sync thread: {sync_thread})");

    // A slab: a client's token is its index.
    let mut clients: Vec<Option<Client>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut rows: Vec<u8> = Vec::new();
    // Clients with replies to write after this turn's sync.
    let mut touched: Vec<usize> = Vec::new();
    // Clients with marks in the batch being gathered, and in the one being synced.
    let mut batch: Vec<usize> = Vec::new();
    let mut syncing: Option<Vec<usize>> = None;
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("poll"),
        }
        for event in &events {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut clients, &mut free, &mut touched)?;
                continue;
            }
            if event.token() == SYNCED {
                continue;
            }
            let id = event.token().0;
            let Some(Some(client)) = clients.get_mut(id) else {
                continue;
            };
            let before = client.waiting;
            let open = (!event.is_readable() || read_lines(client, &mut rows))
                && (!event.is_writable() || flush(client));
            if client.waiting > before {
                batch.push(id);
            }
            if open {
                touched.push(id);
            } else {
                close(&poll, &mut clients, &mut free, id);
            }
        }
        match &disk {
            // Redis's beforeSleep: the turn's rows on disk, then every reply.
            None => {
                if !rows.is_empty() {
                    file.write_all(&rows).context("write")?;
                    file.sync_data().context("fdatasync")?;
                    rows.clear();
                }
                batch.clear();
            }
            Some(disk) => {
                if syncing.is_some() && disk.synced()? {
                    for id in syncing.take().into_iter().flatten() {
                        if let Some(Some(client)) = clients.get_mut(id) {
                            for _ in 0..std::mem::take(&mut client.in_flight) {
                                client.output.extend_from_slice(REPLY_PRESENT);
                            }
                            touched.push(id);
                        }
                    }
                }
                if syncing.is_none() && !rows.is_empty() {
                    batch.sort_unstable();
                    batch.dedup();
                    for &id in &batch {
                        if let Some(Some(client)) = clients.get_mut(id) {
                            client.in_flight = std::mem::take(&mut client.waiting);
                        }
                    }
                    disk.submit(std::mem::take(&mut rows))?;
                    syncing = Some(std::mem::take(&mut batch));
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched.drain(..) {
            let Some(Some(client)) = clients.get_mut(id) else {
                continue;
            };
            if disk.is_none() {
                for _ in 0..std::mem::take(&mut client.waiting) {
                    client.output.extend_from_slice(REPLY_PRESENT);
                }
            } else if client.waiting + client.in_flight > 0 {
                // Its `OK JOIN` goes out with its `OK PRESENT`, in one write, as the daemon
                // and the inline loop send them.
                continue;
            }
            if !flush(client) || !want_write(&poll, client, id) {
                close(&poll, &mut clients, &mut free, id);
            }
        }
    }
}

/// The helper thread that writes and syncs batches for `--sync-thread`.
struct Disk {
    batches: std::sync::mpsc::Sender<Vec<u8>>,
    done: std::sync::mpsc::Receiver<std::io::Result<()>>,
}

impl Disk {
    fn start(mut file: std::fs::File, waker: Waker) -> Self {
        let (batches, todo) = std::sync::mpsc::channel::<Vec<u8>>();
        let (report, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for rows in todo {
                let result = file.write_all(&rows).and_then(|()| file.sync_data());
                if report.send(result).is_err() || waker.wake().is_err() {
                    return;
                }
            }
        });
        Self { batches, done }
    }

    fn submit(&self, rows: Vec<u8>) -> anyhow::Result<()> {
        self.batches.send(rows).context("the sync thread stopped")
    }

    /// Whether the batch submitted last is on disk.
    fn synced(&self) -> anyhow::Result<bool> {
        match self.done.try_recv() {
            Ok(result) => result.map(|()| true).context("write or fdatasync"),
            Err(std::sync::mpsc::TryRecvError::Empty) => Ok(false),
            Err(e) => Err(e).context("the sync thread stopped"),
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    clients: &mut Vec<Option<Client>>,
    free: &mut Vec<usize>,
    touched: &mut Vec<usize>,
) -> anyhow::Result<()> {
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            // Out of descriptors and the like: the next event tries again.
            Err(_) => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let id = free.pop().unwrap_or(clients.len());
        poll.registry()
            .register(&mut stream, Token(id), Interest::READABLE)?;
        let client = Client {
            stream,
            peer,
            input: Vec::new(),
            output: b"HELLO loop_marks\n".to_vec(),
            who: Vec::new(),
            waiting: 0,
            in_flight: 0,
            want_write: false,
        };
        if id == clients.len() {
            clients.push(Some(client));
        } else {
            clients[id] = Some(client);
        }
        touched.push(id);
    }
}

/// Reads until the socket is drained (edge-triggered) and handles every whole line. False when
/// the client is gone or broke the protocol.
fn read_lines(client: &mut Client, rows: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match client.stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => client.input.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    let mut start = 0;
    while let Some(len) = client.input[start..].iter().position(|&b| b == b'\n') {
        let request = Request::parse(&client.input[start..start + len]);
        kiosk::answer(&request, &mut client.output);
        match request {
            Request::Join(id) => client.who = id.to_vec(),
            Request::Present => {
                kiosk::row(rows, &client.who, client.peer.ip());
                client.waiting += 1;
            }
            Request::Other => {}
        }
        start += len + 1;
    }
    client.input.drain(..start);
    client.input.len() <= MAX_LINE
}

/// Writes what it can of the client's replies. False when the client is gone.
fn flush(client: &mut Client) -> bool {
    while !client.output.is_empty() {
        match client.stream.write(&client.output) {
            Ok(0) => return false,
            Ok(n) => {
                client.output.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Asks for writable events while replies are left over, and stops asking once they are out.
fn want_write(poll: &Poll, client: &mut Client, id: usize) -> bool {
    let want = !client.output.is_empty();
    if want == client.want_write {
        return true;
    }
    client.want_write = want;
    let interest = if want {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    poll.registry()
        .reregister(&mut client.stream, Token(id), interest)
        .is_ok()
}

fn close(poll: &Poll, clients: &mut [Option<Client>], free: &mut Vec<usize>, id: usize) {
    if let Some(mut client) = clients[id].take() {
        let _ = poll.registry().deregister(&mut client.stream);
        free.push(id);
    }
}
