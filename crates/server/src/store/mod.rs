//! The mark store: the one source of truth for who is marked present.
//!
//! A connection hands a typed [`Mark`] to [`Store::record`] and gets back [`Recorded::New`]
//! once the mark is durable, or [`Recorded::Existing`] with the original time if the student
//! (class, local day, roll) was already marked. Behind the handle one writer task
//! ([`spawn`]) owns a [`BatchSink`] (the CSV file, [`CsvSink`]) and the dedupe [`Index`]: it
//! takes everything queued (group commit), drops what is already marked, commits the rest in
//! one durable write, and only then updates the index and answers. The row encoding runs in the
//! caller's task ([`BatchSink::encode`]), off the single writer.

pub mod chain;
mod csv;
mod external;
mod index;
pub mod report;
mod writer;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use attendance_protocol::{AttendanceStatus, ClassKey, Field, StudentId, Timestamp};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

pub use self::csv::{
    CsvSink, HEADER, INLINE_IO_MAX, LogFile, PRESENT, StorageError, V1_HEADER, encode_mark,
    encode_row, neutralise, open_csv,
};
pub use self::external::{DaemonSink, ExternalSink};

pub use self::index::Index;
use self::writer::{Control, Pending, Request};
use crate::metrics::Metrics;

/// A student to mark present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Who.
    pub id: StudentId,
    /// When the mark was made.
    pub marked_at: Timestamp,
    /// When the student joined the class.
    pub joined_at: Timestamp,
    /// The client's address (`None` over the admin socket).
    pub addr: Option<IpAddr>,
    /// What the mark says: present, late, left early or absent.
    pub status: AttendanceStatus,
    /// Minutes after the session's start the student arrived (0 when on time).
    pub minutes_late: u32,
    /// Whole minutes the student attended.
    pub minutes_attended: u32,
    /// When the session (the attendance window) started.
    pub session_start: Timestamp,
}

impl Mark {
    /// A `Present` mark of `id`, who joined at `joined_at` (the session's start for an ad hoc
    /// class) and is marked at `marked_at`, from `addr`.
    pub fn present(
        id: StudentId,
        joined_at: Timestamp,
        marked_at: Timestamp,
        addr: Option<IpAddr>,
    ) -> Self {
        Self {
            id,
            marked_at,
            joined_at,
            addr,
            status: AttendanceStatus::Present,
            minutes_late: 0,
            minutes_attended: whole_minutes(joined_at, marked_at),
            session_start: joined_at,
        }
    }
}

/// Whole minutes from `from` to `to` (0 if `to` is not after `from`; saturating).
pub fn whole_minutes(from: Timestamp, to: Timestamp) -> u32 {
    let millis = to.unix_millis() - from.unix_millis();
    u32::try_from((millis / 60_000).max(0)).unwrap_or(u32::MAX)
}

/// What [`Store::record`] did with a mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The mark is durable now; its time.
    New(Timestamp),
    /// The student already had a durable mark on that local day; the original mark's time.
    /// Nothing was written.
    Existing(Timestamp),
}

impl Recorded {
    /// The time of the mark that stands.
    pub fn marked_at(self) -> Timestamp {
        match self {
            Self::New(at) | Self::Existing(at) => at,
        }
    }
}

/// Why a mark was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The write or sync failed, or the store is refusing appends; nothing of the mark was
    /// kept.
    #[error("{0}")]
    Storage(String),
    /// The writer has stopped (the daemon is shutting down).
    #[error("the store has stopped")]
    Closed,
}

/// Already-held rows a [`BatchSink::commit`] reports: (index into the batch, the time of the
/// mark the sink holds).
pub type Held = Vec<(usize, Timestamp)>;

/// Where the writer commits batches of marks: the CSV file ([`CsvSink`]), or a database.
///
/// The writer task owns the sink; [`BatchSink::encode`] runs in each caller's task, so the
/// writer only hands rows over and waits for them to be durable.
pub trait BatchSink: Send + 'static {
    /// A mark encoded for this sink (a CSV row; a database's parameters).
    type Row: Send + 'static;

    /// Encodes `mark`; called in the task recording it, not the writer's.
    fn encode(mark: &Mark) -> Self::Row;

    /// Makes `rows` durable, all or none (write and `fdatasync`; one transaction). Returns the
    /// rows the sink already held (a database's unique key), with the time of the mark it
    /// holds; every other row is durable now.
    ///
    /// # Errors
    /// Why the batch was not kept; nothing of it is.
    fn commit(
        &mut self,
        rows: &[Self::Row],
    ) -> impl Future<Output = Result<Held, StorageError>> + Send;

    /// Finishes the current target and opens it afresh (SIGHUP: log rotation).
    ///
    /// # Errors
    /// Why it could not be reopened; the old target stays in use.
    fn reopen(&mut self) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Makes everything committed durable (the last step before the writer ends).
    ///
    /// # Errors
    /// Why the sync failed.
    fn sync(&mut self) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// How long the last commit's sync took, if it synced (for metrics).
    fn last_sync(&self) -> Option<Duration>;

    /// Whether a commit costs a sync, so the writer should wait a moment to gather more marks
    /// into it (PostgreSQL's `commit_delay`).
    fn commit_delay(&self) -> bool;

    /// Records what is committed so far (a CSV's row count and chain head) as a checkpoint;
    /// nothing for a sink without one.
    ///
    /// # Errors
    /// Why the checkpoint could not be written.
    fn checkpoint(
        &mut self,
        reason: chain::CheckpointReason,
    ) -> impl Future<Output = Result<(), StorageError>> + Send {
        let _ = reason;
        std::future::ready(Ok(()))
    }

    /// The hash of the last row committed and the number of rows, for a sink with a chain.
    fn head(&self) -> Option<([u8; 32], u64)> {
        None
    }

    /// How to commit several batches at once, for a sink that can (a database over a pool of
    /// connections); `None`, the default, commits one batch at a time through
    /// [`BatchSink::commit`] (a file: one `fdatasync` covers everything written before it).
    fn pipeline(&self) -> Option<Arc<dyn Pipeline<Self::Row>>> {
        None
    }
}

/// What a [`Pipeline`] commit came back with.
#[derive(Debug)]
pub struct Committed {
    /// As [`BatchSink::commit`]'s.
    pub result: Result<Held, StorageError>,
    /// How long the commit took, if it committed (for metrics).
    pub took: Option<Duration>,
}

/// A sink's way to commit several batches at once, each commit borrowing nothing of the sink,
/// so the writer can send the next batch while earlier ones are still on their way (a
/// database commits them on separate connections and flushes its log for all of them at once).
pub trait Pipeline<R>: Send + Sync + 'static {
    /// Most batches in flight at once.
    fn depth(&self) -> usize;

    /// Makes `rows` durable, all or none, as [`BatchSink::commit`] does.
    fn commit(&self, rows: Vec<R>) -> BoxFuture<'static, Committed>;
}

/// The chain's head as the writer last saw it (shown on the teacher's page).
pub type SharedHead = Arc<std::sync::Mutex<Option<([u8; 32], u64)>>>;

/// The handle to the store, cloned into every connection. The writer ends (after a final
/// sync) when the last handle is dropped. Typed by its sink, so a row goes to the writer as
/// the sink's own type, without a box of its own (the daemon's store is `Store<DaemonSink>`:
/// the CSV, or a database).
#[derive(Debug)]
pub struct Store<S: BatchSink = DaemonSink> {
    tx: mpsc::Sender<Request<S::Row>>,
    index: Arc<Index>,
    head: SharedHead,
}

impl<S: BatchSink> Clone for Store<S> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            index: Arc::clone(&self.index),
            head: Arc::clone(&self.head),
        }
    }
}

impl<S: BatchSink> Store<S> {
    /// Records `mark`: `New` once it is durable, or `Existing` with the original time if its
    /// student was already marked on the local day of `mark.marked_at` (also when a mark of
    /// the same student came earlier in the same batch).
    ///
    /// # Errors
    /// [`StoreError::Storage`] if the batch could not be made durable (or the store refuses
    /// appends), [`StoreError::Closed`] if the writer is gone.
    pub async fn record(&self, mark: Mark) -> Result<Recorded, StoreError> {
        let row = S::encode(&mark);
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Request::Mark(Pending { mark, row, ack }))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// When `roll` of `class` was durably marked on the local day of `now`, if it was.
    pub fn marked_at(&self, class: &ClassKey, roll: &Field, now: Timestamp) -> Option<Timestamp> {
        self.index.marked_at(class, roll, now)
    }

    /// Durable marks on the local day of `now`, per class (unsorted).
    pub fn class_marks_today(&self, now: Timestamp) -> Vec<(ClassKey, usize)> {
        self.index.class_marks_today(now)
    }

    /// The local day (in the configured zone) of `at`.
    pub fn local_date(&self, at: Timestamp) -> jiff::civil::Date {
        self.index.day(at)
    }

    /// Durable marks on the local day of `now` (O(1)).
    pub fn marks_today(&self, now: Timestamp) -> usize {
        self.index.marks_today(now)
    }

    /// Finishes the current file (synced) and opens the configured path afresh: after a rename
    /// (log rotation) a new file with a header begins. Marks queued before this request go to
    /// the old file, marks after it to the new one. A successful reopen also ends a refusal of
    /// appends after a failed cut.
    ///
    /// # Errors
    /// Why the new file could not be opened (the writer then keeps writing the old one).
    pub async fn reopen(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Control(Control::Reopen(tx)))
            .await
            .map_err(|_| "the writer has stopped".to_owned())?;
        rx.await.map_err(|_| "the writer has stopped".to_owned())?
    }

    /// Completes when the writer has worked through everything queued before it: proof that
    /// it is alive and not stuck in a write or sync (the systemd watchdog).
    ///
    /// # Errors
    /// [`StoreError::Closed`] if the writer is gone.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Control(Control::Ping(tx)))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Writes a checkpoint of everything committed before it (a scheduled session closed).
    ///
    /// # Errors
    /// [`StoreError::Closed`] if the writer is gone; [`StoreError::Storage`] if it could not be
    /// written.
    pub async fn checkpoint(&self, reason: chain::CheckpointReason) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Control(Control::Checkpoint(reason, tx)))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// The chain's head (hash of the last row, rows) as of the last commit, if the sink has a
    /// chain.
    pub fn head(&self) -> Option<([u8; 32], u64)> {
        *self
            .head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Requests queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Starts the writer task on `sink` with the dedupe `index` built from it. It runs until every
/// [`Store`] handle is dropped, then syncs and ends; each batch's size and sync time go to
/// `metrics`, and each new mark to `metrics.marked()`.
pub fn spawn<S: BatchSink>(
    sink: S,
    index: Index,
    metrics: Arc<Metrics>,
) -> (Store<S>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(writer::QUEUE);
    let index = Arc::new(index);
    let head: SharedHead = Arc::new(std::sync::Mutex::new(sink.head()));
    let task = tokio::spawn(writer::run(
        sink,
        Arc::clone(&index),
        rx,
        metrics,
        Arc::clone(&head),
    ));
    let store = Store { tx, index, head };
    (store, task)
}

#[cfg(test)]
mod tests;
