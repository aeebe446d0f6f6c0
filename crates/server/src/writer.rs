//! The writer task: the only owner of the CSV file after start-up.
//!
//! Connections send [`WriteRequest`]s over a bounded channel, each with a oneshot for its
//! acknowledgement. The task takes everything queued (group commit), appends it in one write,
//! syncs once and then acknowledges the whole batch, so an `OK PRESENT` always means "on disk",
//! and a thousand marks in the same moment cost one `fdatasync`. It ends when the last sender is
//! dropped, after a final sync.
//!
//! Besides marks, the queue carries two control requests in order with the marks: `Reopen`
//! (SIGHUP: finish the current file and open the configured path afresh, for log rotation) and
//! `Ping` (the systemd watchdog: answered only when the writer gets to it, so a writer stuck in
//! a write or sync stops the watchdog pings).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info};

use crate::config::FsyncPolicy;
use crate::metrics::Metrics;
use crate::storage::{CsvLog, StorageError};

/// Most requests written and synced as one batch.
const MAX_BATCH: usize = 4096;
/// Most scheduler passes the writer waits for more marks before a sync.
const GATHER_PASSES: usize = 32;
/// Requests that may wait for the writer; further senders wait for room (backpressure).
const QUEUE: usize = 8192;

/// The acknowledgement of one mark: `Ok` once it is on disk.
pub type Ack = Result<(), String>;

/// A mark to append, with the channel its acknowledgement goes back on.
#[derive(Debug)]
pub struct WriteRequest {
    /// The row, encoded by [`crate::storage::encode_row`] (the connection's work, not the
    /// writer's).
    pub row: Vec<u8>,
    /// Where the acknowledgement goes.
    pub ack: oneshot::Sender<Ack>,
}

/// What the writer task is asked to do, in queue order.
#[derive(Debug)]
enum Request {
    Mark(WriteRequest),
    Reopen(oneshot::Sender<Result<(), String>>),
    Ping(oneshot::Sender<()>),
}

/// The sending side, cloned into every connection.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Request>,
}

/// Why a mark was not acknowledged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The write or sync failed; nothing of the mark was kept.
    #[error("{0}")]
    Storage(String),
    /// The writer has stopped (the daemon is shutting down).
    #[error("the writer has stopped")]
    Closed,
}

impl WriterHandle {
    /// Queues `row` (one CSV row, see [`crate::storage::encode_row`]) and waits until it is
    /// on disk.
    ///
    /// # Errors
    /// [`WriteError::Storage`] if the batch could not be written, [`WriteError::Closed`] if the
    /// writer is gone.
    pub async fn write(&self, row: Vec<u8>) -> Result<(), WriteError> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Request::Mark(WriteRequest { row, ack }))
            .await
            .map_err(|_| WriteError::Closed)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WriteError::Storage(e)),
            Err(_) => Err(WriteError::Closed),
        }
    }

    /// Finishes the current file (synced) and opens the configured path afresh: after a rename
    /// (log rotation) a new file with a header begins. Marks queued before this request go to
    /// the old file, marks after it to the new one.
    ///
    /// # Errors
    /// Why the new file could not be opened (the writer then keeps writing the old one).
    pub async fn reopen(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Reopen(tx))
            .await
            .map_err(|_| "the writer has stopped".to_owned())?;
        rx.await.map_err(|_| "the writer has stopped".to_owned())?
    }

    /// Completes when the writer has worked through everything queued before it: proof that
    /// it is alive and not stuck in a write or sync.
    ///
    /// # Errors
    /// [`WriteError::Closed`] if the writer is gone.
    pub async fn ping(&self) -> Result<(), WriteError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Ping(tx))
            .await
            .map_err(|_| WriteError::Closed)?;
        rx.await.map_err(|_| WriteError::Closed)
    }

    /// Requests queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Starts the writer task on `log`. It runs until every [`WriterHandle`] is dropped, recording
/// each batch's size and sync time in `metrics`.
pub fn spawn(log: CsvLog, metrics: Arc<Metrics>) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(log, rx, metrics));
    (WriterHandle { tx }, task)
}

async fn run(mut log: CsvLog, mut rx: mpsc::Receiver<Request>, metrics: Arc<Metrics>) {
    // Grown on demand: a quiet daemon does not hold room for a 4096-mark batch.
    let mut queue: Vec<Request> = Vec::new();
    let mut marks: Vec<WriteRequest> = Vec::new();
    while rx.recv_many(&mut queue, MAX_BATCH).await > 0 {
        if log.fsync_policy() == FsyncPolicy::Always {
            gather_more(&mut rx, &mut queue).await;
        }
        for request in queue.drain(..) {
            match request {
                Request::Mark(m) => marks.push(m),
                Request::Ping(done) => {
                    commit(&mut log, &mut marks, &metrics).await;
                    let _ = done.send(());
                }
                Request::Reopen(done) => {
                    commit(&mut log, &mut marks, &metrics).await;
                    let _ = done.send(reopen(&mut log).await);
                }
            }
        }
        commit(&mut log, &mut marks, &metrics).await;
    }
    if let Err(e) = log.sync().await {
        error!(error = %e, "final sync of the csv failed");
    }
    debug!(path = %log.path().display(), "writer finished");
}

/// Commit delay (PostgreSQL's `commit_delay`): before paying for a sync, let the connections
/// that are about to send their marks run, and take what they queue, until a pass brings
/// nothing new. Without it the writer syncs the first few requests after each sync while the
/// rest, a moment later, wait for the sync after that. Bounded by [`GATHER_PASSES`].
async fn gather_more(rx: &mut mpsc::Receiver<Request>, queue: &mut Vec<Request>) {
    for _ in 0..GATHER_PASSES {
        tokio::task::yield_now().await;
        let before = queue.len();
        while queue.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => queue.push(r),
                Err(_) => break,
            }
        }
        if queue.len() == before {
            break;
        }
    }
}

/// Writes and syncs `marks` as one batch, then acknowledges each (group commit).
async fn commit(log: &mut CsvLog, marks: &mut Vec<WriteRequest>, metrics: &Metrics) {
    if marks.is_empty() {
        return;
    }
    // References, not clones: the rows are copied straight from the requests into one write.
    let rows: Vec<&[u8]> = marks.iter().map(|r| &r.row[..]).collect();
    let result = log.append(&rows).await;
    drop(rows);
    metrics.batch(marks.len(), result.as_ref().ok().and(log.last_sync()));
    match &result {
        Ok(()) => debug!(batch = marks.len(), "batch on disk"),
        Err(e) => {
            error!(error = %e, batch = marks.len(), "could not write marks; none acknowledged")
        }
    }
    let ack: Ack = result.map_err(|e: StorageError| e.to_string());
    for req in marks.drain(..) {
        // The connection may have gone; its mark is on disk all the same.
        let _ = req.ack.send(ack.clone());
    }
}

/// Syncs the current file and opens its path afresh; keeps the old file on failure.
async fn reopen(log: &mut CsvLog) -> Result<(), String> {
    log.sync().await.map_err(|e| e.to_string())?;
    let path = log.path().to_owned();
    match CsvLog::open(&path, log.fsync_policy()).await {
        Ok((new, existing)) => {
            info!(path = %path.display(), rows = existing.len(), "csv reopened");
            *log = new;
            Ok(())
        }
        Err(e) => {
            error!(error = %e, "cannot reopen the csv; still writing the old file");
            Err(e.to_string())
        }
    }
}
