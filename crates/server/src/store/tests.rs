//! Tests of the store's rules, over an in-memory sink: deduplication behind the store, the
//! index updated only once a batch is durable, and a sink's own unique key.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

use super::*;

/// What the fake sink was given and how it answers.
#[derive(Debug, Default)]
struct Log {
    /// Each committed batch's rows (the marked_at of each).
    batches: Vec<Vec<String>>,
    /// Fail the next commits.
    fail: bool,
    /// Rows the sink already holds (a database's unique key): roll → marked_at.
    held: Vec<(String, Timestamp)>,
}

/// An in-memory sink whose commits wait for a permit, so a test can queue marks while the
/// writer is held up in a commit, and then let a whole batch through at once.
#[derive(Debug, Clone)]
struct Memory {
    log: Arc<Mutex<Log>>,
    gate: Arc<Semaphore>,
    /// Told each time a commit begins.
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    /// Batches it commits at once (above 1: through [`Pipeline`]).
    depth: usize,
}

/// (roll, marked_at).
type Row = (String, Timestamp);

impl Memory {
    async fn commit_rows(&self, rows: &[Row]) -> Result<Held, StorageError> {
        let _ = self.entered.send(());
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.fail {
            return Err(StorageError::Refusing {
                path: "memory".into(),
                reason: "failing".into(),
            });
        }
        let mut held = Vec::new();
        let mut kept = Vec::new();
        for (i, (roll, at)) in rows.iter().enumerate() {
            match log.held.iter().find(|(r, _)| r == roll) {
                Some(&(_, first)) => held.push((i, first)),
                None => kept.push(at.to_wire().to_string()),
            }
        }
        log.batches.push(kept);
        Ok(held)
    }
}

impl Pipeline<Row> for Memory {
    fn depth(&self) -> usize {
        self.depth
    }

    fn commit(&self, rows: Vec<Row>) -> BoxFuture<'static, Committed> {
        let sink = self.clone();
        Box::pin(async move {
            Committed {
                result: sink.commit_rows(&rows).await,
                took: None,
            }
        })
    }
}

impl BatchSink for Memory {
    type Row = Row;

    fn encode(mark: &Mark) -> Self::Row {
        (mark.id.roll.to_string(), mark.marked_at)
    }

    async fn commit(&mut self, rows: &[Self::Row]) -> Result<Held, StorageError> {
        self.commit_rows(rows).await
    }

    fn pipeline(&self) -> Option<Arc<dyn Pipeline<Row>>> {
        (self.depth > 1).then(|| Arc::new(self.clone()) as Arc<dyn Pipeline<Row>>)
    }

    async fn reopen(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    async fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    fn last_sync(&self) -> Option<Duration> {
        None
    }

    fn commit_delay(&self) -> bool {
        false
    }
}

fn mark(roll: &str, at: &str) -> Mark {
    let at = at.parse().expect("ts");
    Mark::present(
        StudentId::from_parts("CN", "D1", "Ann", roll).expect("valid id"),
        at,
        at,
        None,
    )
}

fn ts(s: &str) -> Timestamp {
    s.parse().expect("ts")
}

struct Fixture {
    store: Store<Memory>,
    task: tokio::task::JoinHandle<()>,
    log: Arc<Mutex<Log>>,
    gate: Arc<Semaphore>,
    entered: tokio::sync::mpsc::UnboundedReceiver<()>,
}

fn start() -> Fixture {
    start_with_depth(1)
}

fn start_with_depth(depth: usize) -> Fixture {
    let log = Arc::new(Mutex::new(Log::default()));
    let gate = Arc::new(Semaphore::new(0));
    let (tell, entered) = tokio::sync::mpsc::unbounded_channel();
    let sink = Memory {
        log: Arc::clone(&log),
        gate: Arc::clone(&gate),
        entered: tell,
        depth,
    };
    let (store, task) = spawn(
        sink,
        Index::new(jiff::tz::TimeZone::UTC),
        Arc::new(Metrics::new()),
    );
    Fixture {
        store,
        task,
        log,
        gate,
        entered,
    }
}

impl Fixture {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the writer is in a commit (held there until the gate opens).
    async fn in_commit(&mut self) {
        tokio::time::timeout(Duration::from_secs(10), self.entered.recv())
            .await
            .expect("a commit began within 10 s")
            .expect("the writer entered a commit");
    }

    /// Records `roll` at `at` in a task of its own.
    fn record(
        &self,
        roll: &str,
        at: &str,
    ) -> tokio::task::JoinHandle<Result<Recorded, StoreError>> {
        let store = self.store.clone();
        let m = mark(roll, at);
        tokio::spawn(async move { store.record(m).await })
    }

    /// Waits (bounded) until `n` requests wait for the writer.
    async fn queued(&self, n: usize) {
        for _ in 0..10_000 {
            if self.store.queued() == n {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(self.store.queued(), n);
    }

    async fn stop(self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
        drop(self.store);
        self.task.await.expect("writer ends");
    }
}

#[tokio::test]
async fn a_mark_already_durable_is_existing_and_not_written_again() {
    let f = start();
    f.gate.add_permits(1);
    let first = f.store.record(mark("1", "2026-11-23T08:00:00.000Z")).await;
    assert_eq!(first, Ok(Recorded::New(ts("2026-11-23T08:00:00.000Z"))));
    let again = f.store.record(mark("1", "2026-11-23T09:00:00.000Z")).await;
    assert_eq!(
        again,
        Ok(Recorded::Existing(ts("2026-11-23T08:00:00.000Z")))
    );
    // Another day is a new mark.
    f.gate.add_permits(1);
    let next_day = f.store.record(mark("1", "2026-11-24T09:00:00.000Z")).await;
    assert_eq!(next_day, Ok(Recorded::New(ts("2026-11-24T09:00:00.000Z"))));
    assert_eq!(f.log().batches.len(), 2, "the repeat was not written");
    assert_eq!(f.store.marks_today(ts("2026-11-24T12:00:00.000Z")), 1);
    f.stop().await;
}

#[tokio::test]
async fn two_marks_of_a_student_in_one_batch_write_the_first_and_answer_the_second_after_it() {
    let mut f = start();
    // The writer is held in the commit of a first mark while the next ones queue up.
    let held = tokio::spawn({
        let store = f.store.clone();
        async move { store.record(mark("9", "2026-11-23T07:00:00.000Z")).await }
    });
    f.in_commit().await;
    let a = tokio::spawn({
        let store = f.store.clone();
        async move { store.record(mark("1", "2026-11-23T08:00:00.000Z")).await }
    });
    let b = tokio::spawn({
        let store = f.store.clone();
        async move { store.record(mark("1", "2026-11-23T08:00:05.000Z")).await }
    });
    // Bounded: both marks queue within a few passes.
    for _ in 0..10_000 {
        if f.store.queued() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(f.store.queued(), 2);
    let id = mark("1", "2026-11-23T08:00:00.000Z").id;
    let noon = ts("2026-11-23T12:00:00.000Z");
    assert_eq!(f.store.marked_at(&id.class, &id.roll, noon), None);
    f.gate.add_permits(2);
    assert!(matches!(held.await.expect("task"), Ok(Recorded::New(_))));
    assert_eq!(
        a.await.expect("task"),
        Ok(Recorded::New(ts("2026-11-23T08:00:00.000Z")))
    );
    assert_eq!(
        b.await.expect("task"),
        Ok(Recorded::Existing(ts("2026-11-23T08:00:00.000Z")))
    );
    assert_eq!(
        f.log().batches,
        vec![
            vec!["2026-11-23T07:00:00.000Z".to_owned()],
            vec!["2026-11-23T08:00:00.000Z".to_owned()]
        ],
        "one row for the two marks"
    );
    f.stop().await;
}

#[tokio::test]
async fn the_index_changes_only_once_the_batch_is_durable() {
    let mut f = start();
    f.log().fail = true;
    let pending = tokio::spawn({
        let store = f.store.clone();
        async move { store.record(mark("1", "2026-11-23T08:00:00.000Z")).await }
    });
    f.in_commit().await;
    let id = mark("1", "2026-11-23T08:00:00.000Z").id;
    let noon = ts("2026-11-23T12:00:00.000Z");
    assert_eq!(
        f.store.marked_at(&id.class, &id.roll, noon),
        None,
        "not durable yet"
    );
    f.gate.add_permits(1);
    assert!(matches!(
        pending.await.expect("task"),
        Err(StoreError::Storage(_))
    ));
    assert_eq!(
        f.store.marked_at(&id.class, &id.roll, noon),
        None,
        "never durable"
    );
    assert_eq!(f.store.marks_today(noon), 0);
    f.log().fail = false;
    f.gate.add_permits(1);
    let ok = f.store.record(mark("1", "2026-11-23T08:30:00.000Z")).await;
    assert_eq!(ok, Ok(Recorded::New(ts("2026-11-23T08:30:00.000Z"))));
    assert_eq!(
        f.store.marked_at(&id.class, &id.roll, noon),
        Some(ts("2026-11-23T08:30:00.000Z"))
    );
    assert_eq!(f.store.marks_today(noon), 1);
    f.stop().await;
}

#[tokio::test]
async fn a_row_the_sink_already_holds_is_existing_with_the_sinks_time() {
    let f = start();
    f.log()
        .held
        .push(("1".into(), ts("2026-11-23T06:00:00.000Z")));
    f.gate.add_permits(2);
    let r = f.store.record(mark("1", "2026-11-23T08:00:00.000Z")).await;
    assert_eq!(r, Ok(Recorded::Existing(ts("2026-11-23T06:00:00.000Z"))));
    let id = mark("1", "2026-11-23T08:00:00.000Z").id;
    assert_eq!(
        f.store
            .marked_at(&id.class, &id.roll, ts("2026-11-23T12:00:00.000Z")),
        Some(ts("2026-11-23T06:00:00.000Z"))
    );
    f.stop().await;
}

#[tokio::test]
async fn a_closed_store_says_so() {
    let f = start();
    f.gate.add_permits(1);
    f.store.ping().await.expect("ping");
    f.store.reopen().await.expect("reopen");
    f.task.abort();
    let _ = f.task.await;
    assert_eq!(
        f.store.record(mark("1", "2026-11-23T08:00:00.000Z")).await,
        Err(StoreError::Closed)
    );
}

#[tokio::test]
async fn a_pipelined_sink_commits_the_next_batch_while_earlier_ones_are_in_flight() {
    let mut f = start_with_depth(2);
    let first = f.record("1", "2026-11-23T08:00:00.000Z");
    f.in_commit().await;
    // A second batch goes out while the first is still held in its commit.
    let second = f.record("2", "2026-11-23T08:00:01.000Z");
    f.in_commit().await;
    // Both slots busy: the next marks wait in the queue, to go out together.
    let rest: Vec<_> = ["3", "4", "5"]
        .iter()
        .map(|r| f.record(r, "2026-11-23T08:00:02.000Z"))
        .collect();
    f.queued(3).await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "not durable yet"
    );
    // The first commit lands: its mark is answered, and the waiting three go as one batch.
    f.gate.add_permits(1);
    assert_eq!(
        first.await.expect("task"),
        Ok(Recorded::New(ts("2026-11-23T08:00:00.000Z")))
    );
    f.in_commit().await;
    assert!(!second.is_finished(), "its commit is still held");
    // A ping waits for every commit in flight.
    let ping = tokio::spawn({
        let store = f.store.clone();
        async move { store.ping().await }
    });
    for _ in 0..1_000 {
        tokio::task::yield_now().await;
    }
    assert!(!ping.is_finished(), "commits are still in flight");
    f.gate.add_permits(2);
    assert!(matches!(second.await.expect("task"), Ok(Recorded::New(_))));
    for r in rest {
        assert!(matches!(r.await.expect("task"), Ok(Recorded::New(_))));
    }
    ping.await.expect("task").expect("ping");
    let sizes: Vec<usize> = f.log().batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [1, 1, 3]);
    assert_eq!(f.store.marks_today(ts("2026-11-23T12:00:00.000Z")), 5);
    f.stop().await;
}

#[test]
fn whole_minutes_round_down_and_never_go_negative() {
    let at = |ms: i64| Timestamp::from_unix_millis(ms).expect("in range");
    assert_eq!(whole_minutes(at(0), at(59_999)), 0);
    assert_eq!(whole_minutes(at(0), at(60_000)), 1);
    assert_eq!(whole_minutes(at(1_000), at(50 * 60_000 + 999)), 49);
    assert_eq!(whole_minutes(at(60_000), at(0)), 0);
}
