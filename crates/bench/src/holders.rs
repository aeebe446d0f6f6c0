//! Establishing many clients in this process and holding them open: the body of `hold`, whether
//! it runs in the bench itself or in its worker processes. A daemon client connects (over TCP,
//! or upgrading to WebSocket at `/ws`), reads `HELLO` and JOINs; a Redis client connects and
//! SUBSCRIBEs. Then each keeps reading (and
//! discarding) what the server sends until it is released, as a real client would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::{TargetKind, Transport};
use crate::line::{Endpoint, LineConn};
use crate::redis;
use crate::resp::{self, PubSub};

/// Longest wait for one client's connect and JOIN/SUBSCRIBE.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Which clients to establish, and how.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// What the clients speak.
    pub(crate) kind: TargetKind,
    /// How daemon clients connect (Redis clients: TCP).
    pub(crate) transport: Transport,
    /// The server (the daemon's web port for WebSocket).
    pub(crate) addr: SocketAddr,
    /// Number of the first client (identities, source addresses).
    pub(crate) first: usize,
    /// How many.
    pub(crate) count: usize,
    /// Students per class / subscribers per channel.
    pub(crate) class_size: usize,
    /// Connections being opened at once.
    pub(crate) concurrency: usize,
    /// Daemon clients send JOIN without waiting for the greeting.
    pub(crate) pipelined: bool,
    /// Identity prefix of the run.
    pub(crate) run_id: String,
    /// Bound on establishing them all.
    pub(crate) timeout: Duration,
}

/// How establishing went (also the worker's report line).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Established {
    /// Clients connected and joined/subscribed.
    pub(crate) ok: usize,
    /// Clients that failed or were not done in time.
    pub(crate) failed: usize,
    /// The first failure, for the report.
    pub(crate) first_error: Option<String>,
    /// From the first connect to the last success.
    pub(crate) elapsed: Duration,
}

/// The held clients; dropping this closes them all.
#[derive(Debug)]
pub(crate) struct Held {
    tasks: JoinSet<()>,
    release: CancellationToken,
    dropped: Arc<AtomicUsize>,
}

impl Held {
    /// Held clients the server closed (or that failed) while being held.
    pub(crate) fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Closes every client and waits for their tasks; returns [`Held::dropped`].
    pub(crate) async fn release(mut self) -> usize {
        self.release.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.dropped()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release.cancel();
    }
}

/// An established client.
enum Client {
    Daemon(LineConn),
    Redis(redis::Conn),
}

/// Establishes the clients of `plan`, at most `plan.concurrency` in flight.
pub(crate) async fn establish(plan: &Plan) -> (Established, Held) {
    let permits = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let release = CancellationToken::new();
    let dropped = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<Instant, String>>();
    let mut held = Held {
        tasks: JoinSet::new(),
        release: release.clone(),
        dropped: dropped.clone(),
    };
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + plan.timeout);
    let mut result = Established::default();
    let mut last_ok = start;

    let spawn_and_collect = async {
        for index in plan.first..plan.first + plan.count {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (tx, release, dropped, plan) =
                (tx.clone(), release.clone(), dropped.clone(), plan.clone());
            held.tasks.spawn(async move {
                let opened = tokio::time::timeout(OP_TIMEOUT, open(&plan, index)).await;
                drop(permit);
                match opened {
                    Ok(Ok(client)) => {
                        let _ = tx.send(Ok(Instant::now()));
                        if !hold(client, &release).await {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e));
                    }
                    Err(_) => {
                        let _ = tx.send(Err(format!("not established within {OP_TIMEOUT:?}")));
                    }
                }
            });
        }
        while result.ok + result.failed < plan.count {
            match rx.recv().await {
                Some(Ok(at)) => {
                    result.ok += 1;
                    last_ok = last_ok.max(at);
                }
                Some(Err(e)) => {
                    result.failed += 1;
                    result.first_error.get_or_insert(e);
                }
                None => break,
            }
        }
    };
    if tokio::time::timeout_at(deadline, spawn_and_collect)
        .await
        .is_err()
    {
        let missing = plan.count - result.ok - result.failed;
        result.failed += missing;
        result.first_error.get_or_insert(format!(
            "{missing} clients not established within {:?}",
            plan.timeout
        ));
    }
    result.elapsed = last_ok.duration_since(start);
    (result, held)
}

/// Connects client `index` and JOINs (daemon) or SUBSCRIBEs (Redis).
async fn open(plan: &Plan, index: usize) -> Result<Client, String> {
    let class = index / plan.class_size.max(1);
    match plan.kind {
        TargetKind::Daemon => {
            let id = format!("Hold{}_C{class}_S{index}_R{index}", plan.run_id);
            let to = Endpoint {
                transport: plan.transport,
                addr: plan.addr,
            };
            let conn = LineConn::connect_and_join(index, to, &id, plan.pipelined)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Client::Daemon(conn))
        }
        TargetKind::Redis => {
            let (mut reader, mut writer) = redis::connect(index, plan.addr)
                .await
                .map_err(|e| e.to_string())?;
            let channel = format!("hold:{}:{class}", plan.run_id);
            resp::send(&mut writer, &[b"SUBSCRIBE", channel.as_bytes()])
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let value = reader.expect().await.map_err(|e| e.to_string())?;
                if value.pubsub() == Some(PubSub::Subscribed) {
                    return Ok(Client::Redis((reader, writer)));
                }
            }
        }
    }
}

/// Reads and discards until released (returns `true`) or the connection ends (`false`).
async fn hold(client: Client, release: &CancellationToken) -> bool {
    match client {
        Client::Daemon(mut conn) => loop {
            tokio::select! {
                () = release.cancelled() => return true,
                line = conn.reader.next() => if !matches!(line, Ok(Some(_))) { return false },
            }
        },
        Client::Redis((mut reader, _writer)) => loop {
            tokio::select! {
                () = release.cancelled() => return true,
                value = reader.next() => if !matches!(value, Ok(Some(_))) { return false },
            }
        },
    }
}
