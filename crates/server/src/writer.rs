//! The writer task: the only owner of the CSV file after start-up.
//!
//! Connections send [`WriteRequest`]s over a bounded channel, each with a oneshot for its
//! acknowledgement. The task takes everything queued (group commit), appends it in one write,
//! syncs once and then acknowledges the whole batch, so an `OK PRESENT` always means "on disk",
//! and a thousand marks in the same moment cost one `fdatasync`. It ends when the last sender is
//! dropped, after a final sync.

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use crate::storage::{CsvLog, MarkRecord, StorageError};

/// Most requests written and synced as one batch.
const MAX_BATCH: usize = 4096;
/// Requests that may wait for the writer; further senders wait for room (backpressure).
const QUEUE: usize = 8192;

/// The acknowledgement of one mark: `Ok` once it is on disk.
pub type Ack = Result<(), String>;

/// A mark to append, with the channel its acknowledgement goes back on.
#[derive(Debug)]
pub struct WriteRequest {
    /// The row.
    pub record: MarkRecord,
    /// Where the acknowledgement goes.
    pub ack: oneshot::Sender<Ack>,
}

/// The sending side, cloned into every connection.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<WriteRequest>,
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
    /// Queues `record` and waits until it is on disk.
    ///
    /// # Errors
    /// [`WriteError::Storage`] if the batch could not be written, [`WriteError::Closed`] if the
    /// writer is gone.
    pub async fn write(&self, record: MarkRecord) -> Result<(), WriteError> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(WriteRequest { record, ack })
            .await
            .map_err(|_| WriteError::Closed)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WriteError::Storage(e)),
            Err(_) => Err(WriteError::Closed),
        }
    }

    /// Requests queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Starts the writer task on `log`. It runs until every [`WriterHandle`] is dropped.
pub fn spawn(log: CsvLog) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(log, rx));
    (WriterHandle { tx }, task)
}

async fn run(mut log: CsvLog, mut rx: mpsc::Receiver<WriteRequest>) {
    // Grown on demand: a quiet daemon does not hold room for a 4096-mark batch.
    let mut batch: Vec<WriteRequest> = Vec::new();
    let mut records: Vec<MarkRecord> = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        records.clear();
        records.extend(batch.iter().map(|r| r.record.clone()));
        let result = log.append(&records).await;
        match &result {
            Ok(()) => debug!(batch = batch.len(), "batch on disk"),
            Err(e) => {
                error!(error = %e, batch = batch.len(), "could not write marks; none acknowledged")
            }
        }
        let ack: Ack = result.map_err(|e: StorageError| e.to_string());
        for req in batch.drain(..) {
            // The connection may have gone; its mark is on disk all the same.
            let _ = req.ack.send(ack.clone());
        }
    }
    if let Err(e) = log.sync().await {
        error!(error = %e, "final sync of the csv failed");
    }
    debug!(path = %log.path().display(), "writer finished");
}
