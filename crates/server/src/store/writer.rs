//! The writer task: the only owner of the sink after start-up, and the only one to add to the
//! dedupe index.
//!
//! [`crate::store::Store`] handles send requests over a bounded channel, each with a oneshot
//! for its answer. The task takes everything queued (group commit); a mark whose student is
//! already durably marked that day is answered `Existing` at once, a second mark of a student
//! in the same batch waits for the first's commit and is answered `Existing` with its time; the
//! rest is committed in one durable write, then added to the index, then acknowledged, so a
//! `New` always means "on disk", and a thousand marks in the same moment cost one `fdatasync`.
//! It ends when the last sender is dropped, after a final sync.
//!
//! Besides marks, the queue carries two control requests in order with the marks: `Reopen`
//! (SIGHUP: finish the current file and open the configured path afresh, for log rotation) and
//! `Ping` (the systemd watchdog: answered only when the writer gets to it, so a writer stuck in
//! a write or sync stops the watchdog pings).

use std::sync::Arc;

use attendance_protocol::{ClassKey, Field, StudentId, Timestamp};
use jiff::civil::Date;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use tokio::task::JoinSet;

use super::{BatchSink, Index, Mark, Pipeline, Recorded, StoreError};
use crate::hashing::Map;
use crate::metrics::Metrics;

/// Most requests taken as one batch.
const MAX_BATCH: usize = 4096;
/// Most scheduler passes the writer waits for more marks before a sync.
const GATHER_PASSES: usize = 32;
/// Requests that may wait for the writer; further senders wait for room (backpressure).
pub(super) const QUEUE: usize = 8192;

/// The answer to one mark.
type Ack = oneshot::Sender<Result<Recorded, StoreError>>;

/// A mark to record, encoded by its sender, with the channel its answer goes back on.
pub(super) struct Pending<R> {
    pub(super) mark: Mark,
    pub(super) row: R,
    pub(super) ack: Ack,
}

/// What the writer task is asked to do, in queue order.
pub(super) enum Request<R> {
    Mark(Pending<R>),
    /// Done once every mark queued before it is committed.
    Control(Control),
}

/// A request besides a mark: handled after everything before it is committed.
pub(super) enum Control {
    Reopen(oneshot::Sender<Result<(), String>>),
    Ping(oneshot::Sender<()>),
    Checkpoint(
        super::chain::CheckpointReason,
        oneshot::Sender<Result<(), StoreError>>,
    ),
}

impl<R> std::fmt::Debug for Request<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mark(p) => f.debug_tuple("Mark").field(&p.mark).finish(),
            Self::Control(Control::Reopen(_)) => f.write_str("Reopen"),
            Self::Control(Control::Ping(_)) => f.write_str("Ping"),
            Self::Control(Control::Checkpoint(reason, _)) => {
                write!(f, "Checkpoint({})", reason.as_str())
            }
        }
    }
}

/// A mark of the batch that is to be written.
struct New {
    id: StudentId,
    date: Date,
    at: Timestamp,
    ack: Ack,
}

/// A mark of the batch whose student is already in it: answered after the commit.
struct Repeat {
    id: StudentId,
    /// The first mark's time.
    first: Timestamp,
    ack: Ack,
}

/// The batch being gathered: rows in the sink's type, and who waits for them.
struct Batch<R> {
    rows: Vec<R>,
    news: Vec<New>,
    repeats: Vec<Repeat>,
    /// (class, roll, day) of every mark in `news`, with its time.
    keys: Map<(ClassKey, Field, Date), Timestamp>,
}

impl<R: Send + 'static> Batch<R> {
    fn new() -> Self {
        Self {
            rows: Vec::new(),
            news: Vec::new(),
            repeats: Vec::new(),
            keys: Map::default(),
        }
    }

    /// Sorts `p` into the batch, or answers it at once if its student is durably marked.
    fn add(&mut self, p: Pending<R>, index: &Index) {
        let Pending { mark, row, ack } = p;
        let id = mark.id;
        let (date, durable) = index.classify(&id.class, &id.roll, mark.marked_at);
        if let Some(at) = durable {
            let _ = ack.send(Ok(Recorded::Existing(at)));
            return;
        }
        // One hash of the key: found, a repeat within the batch; vacant, taken by this mark.
        match self.keys.entry((id.class.clone(), id.roll.clone(), date)) {
            std::collections::hash_map::Entry::Occupied(first) => {
                let first = *first.get();
                self.repeats.push(Repeat { id, first, ack });
                return;
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(mark.marked_at);
            }
        }
        self.rows.push(row);
        self.news.push(New {
            id,
            date,
            at: mark.marked_at,
            ack,
        });
    }
}

pub(super) async fn run<S: BatchSink>(
    mut sink: S,
    index: Arc<Index>,
    mut rx: mpsc::Receiver<Request<S::Row>>,
    metrics: Arc<Metrics>,
    head: super::SharedHead,
) {
    if let Some(pipe) = sink.pipeline().filter(|p| p.depth() > 1) {
        return run_pipelined(sink, pipe, index, rx, metrics).await;
    }
    // Grown on demand: a quiet daemon does not hold room for a 4096-mark batch.
    let mut queue: Vec<Request<S::Row>> = Vec::new();
    let mut batch = Batch::<S::Row>::new();
    while rx.recv_many(&mut queue, MAX_BATCH).await > 0 {
        if sink.commit_delay() {
            gather_more(&mut rx, &mut queue).await;
        }
        for request in queue.drain(..) {
            match request {
                Request::Mark(p) => batch.add(p, &index),
                Request::Control(c) => {
                    commit(&mut sink, &mut batch, &index, &metrics).await;
                    control(&mut sink, c).await;
                }
            }
        }
        commit(&mut sink, &mut batch, &index, &metrics).await;
        if let Some(h) = sink.head() {
            *head
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(h);
        }
    }
    finish(&mut sink).await;
}

/// The writer's last steps, after the last sender is gone: a final sync and checkpoint.
async fn finish<S: BatchSink>(sink: &mut S) {
    if let Err(e) = sink.sync().await {
        error!(error = %e, "final sync of the store failed");
    } else if let Err(e) = sink
        .checkpoint(super::chain::CheckpointReason::Shutdown)
        .await
    {
        error!(error = %e, "final checkpoint not written");
    }
    debug!("writer finished");
}

/// Carries out `c`, everything queued before it being committed: answers a `Ping`, writes a
/// checkpoint, or (SIGHUP) checkpoints and reopens the sink.
async fn control<S: BatchSink>(sink: &mut S, c: Control) {
    match c {
        Control::Ping(done) => {
            let _ = done.send(());
        }
        Control::Checkpoint(reason, done) => {
            let result = sink.checkpoint(reason).await.map_err(|e| {
                error!(error = %e, "checkpoint not written");
                StoreError::Storage(e.to_string())
            });
            let _ = done.send(result);
        }
        Control::Reopen(done) => {
            if let Err(e) = sink
                .checkpoint(super::chain::CheckpointReason::Rotate)
                .await
            {
                error!(error = %e, "checkpoint before the reopen not written");
            }
            let reopened = sink.reopen().await.map_err(|e| {
                error!(error = %e, "cannot reopen the csv; still writing the old file");
                e.to_string()
            });
            let _ = done.send(reopened);
        }
    }
}

/// The writer for a sink that commits several batches at once ([`Pipeline`], a database over
/// a pool): a batch goes out as soon as a commit slot is free, each commit in a task of its own
/// that answers its marks when it lands; while every slot is busy, what arrives gathers in the
/// queue for the next batch. A control request waits for every commit in flight first, so a
/// `Ping` still proves that commits land. Marks of the same student in two batches in flight
/// are settled by the sink's unique key (the second gets the first's time).
async fn run_pipelined<S: BatchSink>(
    mut sink: S,
    pipe: Arc<dyn Pipeline<S::Row>>,
    index: Arc<Index>,
    mut rx: mpsc::Receiver<Request<S::Row>>,
    metrics: Arc<Metrics>,
) {
    let depth = pipe.depth();
    let mut flying: JoinSet<()> = JoinSet::new();
    let mut queue: Vec<Request<S::Row>> = Vec::new();
    let mut batch = Batch::<S::Row>::new();
    loop {
        if flying.len() >= depth {
            landed(flying.join_next().await);
            continue;
        }
        tokio::select! {
            biased;
            Some(done) = flying.join_next() => {
                landed(Some(done));
                continue;
            }
            n = rx.recv_many(&mut queue, MAX_BATCH) => if n == 0 {
                break;
            },
        }
        if sink.commit_delay() {
            gather_more(&mut rx, &mut queue).await;
        }
        for request in queue.drain(..) {
            match request {
                Request::Mark(p) => batch.add(p, &index),
                Request::Control(c) => {
                    dispatch(&mut batch, &pipe, &index, &metrics, &mut flying);
                    land_all(&mut flying).await;
                    control(&mut sink, c).await;
                }
            }
        }
        dispatch(&mut batch, &pipe, &index, &metrics, &mut flying);
    }
    land_all(&mut flying).await;
    finish(&mut sink).await;
}

/// Sends the batch's rows to the pipeline in a task of their own, which answers its marks once
/// the commit lands.
fn dispatch<R: Send + 'static>(
    batch: &mut Batch<R>,
    pipe: &Arc<dyn Pipeline<R>>,
    index: &Arc<Index>,
    metrics: &Arc<Metrics>,
    flying: &mut JoinSet<()>,
) {
    if batch.news.is_empty() && batch.repeats.is_empty() {
        return;
    }
    let rows = std::mem::take(&mut batch.rows);
    let mut news = std::mem::take(&mut batch.news);
    let mut repeats = std::mem::take(&mut batch.repeats);
    batch.keys.clear();
    let pipe = Arc::clone(pipe);
    let index = Arc::clone(index);
    let metrics = Arc::clone(metrics);
    flying.spawn(async move {
        let result = if rows.is_empty() {
            Ok(Vec::new())
        } else {
            let n = rows.len();
            let committed = pipe.commit(rows).await;
            metrics.batch(n, committed.result.as_ref().ok().and(committed.took));
            committed.result
        };
        answer(&mut news, &mut repeats, result, &index, &metrics);
    });
}

/// Logs a commit task that failed (its marks' callers see the store as closed).
fn landed(done: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = done {
        error!(error = %e, "a commit task failed; its marks were not acknowledged");
    }
}

/// Waits for every commit in flight.
async fn land_all(flying: &mut JoinSet<()>) {
    while let Some(done) = flying.join_next().await {
        landed(Some(done));
    }
}

/// Commit delay (PostgreSQL's `commit_delay`): before paying for a sync, let the connections
/// that are about to send their marks run, and take what they queue, until a pass brings
/// nothing new. Without it the writer syncs the first few requests after each sync while the
/// rest, a moment later, wait for the sync after that. Bounded by [`GATHER_PASSES`].
async fn gather_more<R>(rx: &mut mpsc::Receiver<Request<R>>, queue: &mut Vec<Request<R>>) {
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

/// Commits the batch's rows as one, then adds them to the index, then answers every mark in
/// it (group commit).
async fn commit<S: BatchSink>(
    sink: &mut S,
    batch: &mut Batch<S::Row>,
    index: &Index,
    metrics: &Metrics,
) {
    if batch.news.is_empty() && batch.repeats.is_empty() {
        return;
    }
    let result = if batch.rows.is_empty() {
        Ok(Vec::new())
    } else {
        let result = sink.commit(&batch.rows).await;
        metrics.batch(batch.rows.len(), result.as_ref().ok().and(sink.last_sync()));
        result
    };
    batch.rows.clear();
    batch.keys.clear();
    answer(&mut batch.news, &mut batch.repeats, result, index, metrics);
}

/// Answers the marks of a batch whose commit ended with `result`: on success, adds them to the
/// index first (so a mark answered `New` is found by the next lookup).
fn answer(
    news: &mut Vec<New>,
    repeats: &mut Vec<Repeat>,
    result: Result<super::Held, super::StorageError>,
    index: &Index,
    metrics: &Metrics,
) {
    match result {
        Ok(held) => {
            debug!(batch = news.len(), held = held.len(), "batch durable");
            let mut answers: Vec<Recorded> = news.iter().map(|n| Recorded::New(n.at)).collect();
            for (i, at) in held {
                if let Some(a) = answers.get_mut(i) {
                    *a = Recorded::Existing(at);
                }
            }
            index.insert_all(
                news.iter()
                    .zip(&answers)
                    .map(|(n, a)| (&n.id.class, &n.id.roll, n.date, a.marked_at())),
            );
            for (n, answer) in news.drain(..).zip(answers) {
                if matches!(answer, Recorded::New(_)) {
                    metrics.marked();
                }
                // The caller may have gone; its mark is durable all the same.
                let _ = n.ack.send(Ok(answer));
            }
            for r in repeats.drain(..) {
                // The first mark's day is `r.date`: what the index holds for it now stands.
                let at = index
                    .classify(&r.id.class, &r.id.roll, r.first)
                    .1
                    .unwrap_or(r.first);
                let _ = r.ack.send(Ok(Recorded::Existing(at)));
            }
        }
        Err(e) => {
            error!(error = %e, batch = news.len(), "could not write marks; none acknowledged");
            let e = StoreError::Storage(e.to_string());
            for n in news.drain(..) {
                let _ = n.ack.send(Err(e.clone()));
            }
            for r in repeats.drain(..) {
                let _ = r.ack.send(Err(e.clone()));
            }
        }
    }
}
