//! Storage faults, in-process: a CSV whose writes or syncs fail (disk full, I/O error). Nothing
//! unsynced is acknowledged, the file is cut back to its last good length, the daemon keeps
//! serving, and marks succeed again once the storage recovers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use attendance_protocol::LineCodec;
use attendance_server::store::{self, BatchSink as _, CsvSink, Index, LogFile, Mark, Recorded};
use attendance_server::{Config, FsyncPolicy};
use futures::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const HEALTHY: u8 = 0;
/// Half the batch reaches the file, then ENOSPC (a disk filling up mid-write).
const DISK_FULL: u8 = 1;
/// The write succeeds, the sync fails with EIO.
const SYNC_FAILS: u8 = 2;
/// Half the batch reaches the file, then ENOSPC, and cutting it back fails too (EIO).
const CUT_FAILS: u8 = 3;

/// What a test changes about the CSV file; everything not overridden goes to the real file.
trait Fault: Send + std::fmt::Debug + 'static {
    fn append(&mut self, file: &mut dyn LogFile, bytes: &[u8]) -> std::io::Result<()> {
        file.append(bytes)
    }
    fn sync_data(&mut self, file: &mut dyn LogFile) -> std::io::Result<()> {
        file.sync_data()
    }
    fn truncate(&mut self, file: &mut dyn LogFile, len: u64) -> std::io::Result<()> {
        file.truncate(len)
    }
}

/// The real file with a [`Fault`] in front of it.
#[derive(Debug)]
struct Hooked<F> {
    inner: Box<dyn LogFile>,
    fault: F,
}

impl<F: Fault> LogFile for Hooked<F> {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.fault.append(self.inner.as_mut(), bytes)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.fault.sync_data(self.inner.as_mut())
    }
    fn sync_all(&mut self) -> std::io::Result<()> {
        self.inner.sync_all()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.fault.truncate(self.inner.as_mut(), len)
    }
}

/// Opens the CSV at `csv` with `fault` in front of the file.
async fn open_with(csv: &std::path::Path, fault: impl Fault) -> ((CsvSink, Index), u64) {
    let (log, index) = store::open_csv(csv, FsyncPolicy::Always, jiff::tz::TimeZone::UTC)
        .await
        .expect("open csv");
    assert!(index.is_empty(), "a fresh file");
    let header_len = log.synced_len();
    (
        (
            log.wrap_file(move |inner| Box::new(Hooked { inner, fault })),
            index,
        ),
        header_len,
    )
}

/// Switchable faults: healthy, disk full mid-write, or failing syncs.
#[derive(Debug)]
struct Switch(Arc<AtomicU8>);

impl Fault for Switch {
    fn append(&mut self, file: &mut dyn LogFile, bytes: &[u8]) -> std::io::Result<()> {
        if matches!(self.0.load(Ordering::SeqCst), DISK_FULL | CUT_FAILS) {
            file.append(&bytes[..bytes.len() / 2])?;
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        file.append(bytes)
    }
    fn sync_data(&mut self, file: &mut dyn LogFile) -> std::io::Result<()> {
        if self.0.load(Ordering::SeqCst) == SYNC_FAILS {
            return Err(std::io::Error::from_raw_os_error(5)); // EIO
        }
        file.sync_data()
    }
    fn truncate(&mut self, file: &mut dyn LogFile, len: u64) -> std::io::Result<()> {
        if self.0.load(Ordering::SeqCst) == CUT_FAILS {
            return Err(std::io::Error::from_raw_os_error(5)); // EIO
        }
        file.truncate(len)
    }
}

/// The daemon, in-process on 127.0.0.1:0 with 0-second classes, over a prepared CSV log.
struct Running {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), attendance_server::ServerError>>,
}

impl Running {
    async fn start(csv: &std::path::Path, log: (CsvSink, Index)) -> Self {
        let config = Config {
            csv: csv.to_owned(),
            class_length: Duration::ZERO,
            ..Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(attendance_server::run_with_log(
            listener,
            config,
            log,
            async move {
                let _ = stopped.await;
            },
        ));
        Self { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("server task")
            .expect("clean shutdown");
    }
}

struct Student(Framed<TcpStream, LineCodec>);

impl Student {
    async fn connect(addr: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut s = Self(Framed::new(stream, LineCodec::default()));
        assert!(s.line().await.starts_with("HELLO "));
        s
    }

    async fn line(&mut self) -> String {
        let item = tokio::time::timeout(Duration::from_secs(15), self.0.next()).await;
        item.expect("a line in time")
            .expect("open")
            .expect("io")
            .expect("utf-8")
    }

    /// Sends a command and returns its reply, skipping events.
    async fn cmd(&mut self, line: &str) -> String {
        self.0
            .send(bytes::Bytes::from(format!("{line}\n")))
            .await
            .expect("send");
        loop {
            let l = self.line().await;
            if !l.starts_with("EVENT ") {
                return l;
            }
        }
    }
}

#[tokio::test]
async fn failed_writes_and_syncs_acknowledge_nothing_and_the_daemon_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("attendance.csv");
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let (log, header_len) = open_with(&csv, Switch(Arc::clone(&mode))).await;
    let server = Running::start(&csv, log).await;
    let addr = server.addr;

    let mut ann = Student::connect(addr).await;
    assert!(ann.cmd("JOIN CN_D1_Ann_1").await.starts_with("OK JOIN"));

    for fault in [DISK_FULL, SYNC_FAILS] {
        mode.store(fault, Ordering::SeqCst);
        let reply = ann.cmd("PRESENT").await;
        assert!(reply.starts_with("ERR STORAGE "), "fault {fault}: {reply}");
        let len = std::fs::metadata(&csv).expect("meta").len();
        assert_eq!(
            len, header_len,
            "fault {fault}: the failed batch was cut back off the file"
        );
        // The daemon keeps serving everything else.
        assert_eq!(ann.cmd("PING").await, "OK PONG");
    }

    mode.store(HEALTHY, Ordering::SeqCst);
    let ok = ann.cmd("PRESENT").await;
    assert!(ok.starts_with("OK PRESENT "), "{ok}");
    let mut bob = Student::connect(addr).await;
    assert!(bob.cmd("JOIN CN_D1_Bob_2").await.starts_with("OK JOIN"));
    assert!(bob.cmd("PRESENT").await.starts_with("OK PRESENT "));

    server.stop().await;
    let text = std::fs::read_to_string(&csv).expect("read csv");
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "exactly the two acknowledged marks:\n{text}");
    assert!(rows[0].starts_with("CN,D1,Ann,1,Present,"));
    assert!(rows[1].starts_with("CN,D1,Bob,2,Present,"));
}

/// Counts syncs and makes each one slow, as a real disk's flush is.
#[derive(Debug)]
struct CountingSlowSync(Arc<std::sync::atomic::AtomicUsize>);

impl Fault for CountingSlowSync {
    fn sync_data(&mut self, file: &mut dyn LogFile) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        file.sync_data()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_arriving_together_share_one_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("attendance.csv");
    let syncs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (log, _) = open_with(&csv, CountingSlowSync(Arc::clone(&syncs))).await;
    let server = Running::start(&csv, log).await;
    let addr = server.addr;
    let mut students = Vec::new();
    for i in 0..100 {
        let mut s = Student::connect(addr).await;
        assert!(
            s.cmd(&format!("JOIN CN_D1_S{i}_{i}"))
                .await
                .starts_with("OK JOIN")
        );
        students.push(s);
    }
    let marks = students
        .into_iter()
        .map(|mut s| tokio::spawn(async move { s.cmd("PRESENT").await }));
    for reply in futures::future::join_all(marks).await {
        assert!(reply.expect("task").starts_with("OK PRESENT"));
    }
    let n = syncs.load(Ordering::SeqCst);
    // 100 marks at once against a 20 ms sync: the writer batches what queued meanwhile.
    assert!(n < 50, "100 marks took {n} syncs: no group commit");
    server.stop().await;
    let text = std::fs::read_to_string(&csv).expect("read csv");
    assert_eq!(text.lines().count(), 101);
}

/// A sync that blocks until the test releases it: a disk that hangs.
#[derive(Debug)]
struct Hanging {
    entered: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

impl Fault for Hanging {
    fn sync_data(&mut self, file: &mut dyn LogFile) -> std::io::Result<()> {
        let _ = self.entered.send(());
        let _ = self.release.recv_timeout(Duration::from_secs(30));
        file.sync_data()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_writer_does_not_answer_the_watchdog_ping_until_it_moves_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("attendance.csv");
    let (release_tx, release) = std::sync::mpsc::channel();
    let (entered, entered_rx) = std::sync::mpsc::channel();
    let ((log, index), _) = open_with(&csv, Hanging { entered, release }).await;
    let metrics = std::sync::Arc::new(attendance_server::metrics::Metrics::new());
    let (writer, task) = store::spawn(log, index, metrics);

    // Healthy: a ping with nothing queued is answered at once.
    writer.ping().await.expect("ping");
    // A mark gets stuck in its sync; a ping queued behind it must not be answered.
    let record = mark(1);
    let mark = tokio::spawn({
        let writer = writer.clone();
        async move { writer.record(record).await }
    });
    // Wait until the writer is inside the hanging sync.
    let entered_rx = tokio::task::spawn_blocking(move || {
        entered_rx
            .recv_timeout(Duration::from_secs(15))
            .expect("sync entered");
        entered_rx
    })
    .await
    .expect("wait");
    let stuck = tokio::time::timeout(Duration::from_millis(300), writer.ping()).await;
    assert!(
        stuck.is_err(),
        "a writer stuck in fdatasync must not answer the watchdog ping"
    );
    release_tx.send(()).expect("release");
    writer
        .ping()
        .await
        .expect("answered once the sync completes");
    drop(entered_rx);
    assert!(matches!(
        mark.await.expect("task").expect("mark acknowledged"),
        Recorded::New(_)
    ));
    drop(writer);
    task.await.expect("writer ends");
}

/// How quick a write and sync must be for the next to run inline, in these tests: wide enough
/// that a busy machine's scheduling cannot make a fast sync look slow.
const FAST: Duration = Duration::from_millis(250);

/// Records the thread each sync runs on, and makes syncs slower than [`FAST`] while `slow` is
/// set.
#[derive(Debug, Clone, Default)]
struct Observed {
    threads: Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>,
    slow: Arc<std::sync::atomic::AtomicBool>,
}

impl Fault for Observed {
    fn sync_data(&mut self, file: &mut dyn LogFile) -> std::io::Result<()> {
        self.threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(std::thread::current().id());
        if self.slow.load(Ordering::SeqCst) {
            std::thread::sleep(FAST + FAST / 2);
        }
        file.sync_data()
    }
}

/// Student `i`'s mark.
fn mark(i: usize) -> Mark {
    Mark::present(
        attendance_protocol::StudentId::from_parts("CN", "D1", &format!("S{i}"), &i.to_string())
            .expect("valid id"),
        "2026-11-23T09:00:00.000Z".parse().expect("ts"),
        "2026-11-23T10:00:00.000Z".parse().expect("ts"),
        Some([127, 0, 0, 1].into()),
    )
}

fn row(i: usize) -> Vec<u8> {
    CsvSink::encode(&mark(i))
}

/// Appends one batch per entry of `slow` to a fresh CSV (its sync slow where `true`) and returns,
/// for each, whether its sync ran on the calling thread (inline) rather than on another one (the
/// blocking pool), and then the file's text.
async fn sync_placement(slow: &[bool]) -> (Vec<bool>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("attendance.csv");
    let o = Observed::default();
    let ((log, _), _) = open_with(&csv, o.clone()).await;
    let mut log = log.with_inline_io_max(FAST);
    let mut inline = Vec::new();
    for (i, &s) in slow.iter().enumerate() {
        o.slow.store(s, Ordering::SeqCst);
        let caller = std::thread::current().id();
        let r = row(i);
        log.commit(&[r]).await.expect("append");
        let synced_on = *o
            .threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last()
            .expect("a sync");
        inline.push(synced_on == caller);
    }
    drop(log);
    (inline, std::fs::read_to_string(&csv).expect("read csv"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_sync_on_the_worker_while_the_disk_is_fast_and_on_the_pool_after_a_slow_one() {
    // 1: nothing known about the disk yet, so the pool; 2: fast before, so inline, and slow;
    // 3: slow before, so the pool again; 4: fast again, so inline.
    let (inline, text) = sync_placement(&[false, true, false, false]).await;
    assert_eq!(inline, [false, true, false, true]);
    assert_eq!(text.lines().count(), 5, "header and four rows:\n{text}");
}

#[tokio::test]
async fn on_a_current_thread_runtime_every_sync_goes_to_the_pool() {
    let (inline, text) = sync_placement(&[false, false, false]).await;
    assert_eq!(inline, [false, false, false]);
    assert_eq!(text.lines().count(), 4, "header and three rows:\n{text}");
}

/// Defect 4 (issue 16), end to end: when the failed batch cannot be cut back off, the old
/// writer appended the next mark after the torn bytes and acknowledged it (`OK PRESENT` for a
/// row merged with the torn one). Now every mark is refused with `ERR STORAGE` until the file
/// is reopened, even once the disk works again, and nothing more reaches the file.
#[tokio::test]
async fn after_a_failed_cut_marks_are_refused_with_err_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("attendance.csv");
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let (log, _) = open_with(&csv, Switch(Arc::clone(&mode))).await;
    let server = Running::start(&csv, log).await;
    let mut ann = Student::connect(server.addr).await;
    assert!(ann.cmd("JOIN CN_D1_Ann_1").await.starts_with("OK JOIN"));
    mode.store(CUT_FAILS, Ordering::SeqCst);
    let reply = ann.cmd("PRESENT").await;
    assert!(reply.starts_with("ERR STORAGE "), "{reply}");
    let torn_len = std::fs::metadata(&csv).expect("meta").len();
    mode.store(HEALTHY, Ordering::SeqCst);
    for _ in 0..2 {
        let reply = ann.cmd("PRESENT").await;
        assert!(
            reply.starts_with("ERR STORAGE "),
            "refused until a reopen: {reply}"
        );
    }
    assert_eq!(
        std::fs::metadata(&csv).expect("meta").len(),
        torn_len,
        "nothing appended after the torn bytes"
    );
    assert_eq!(ann.cmd("PING").await, "OK PONG");
    server.stop().await;
}

/// Defects 3 and 5 (issue 16), end to end: a second daemon on the CSV of a running one used
/// to open it and append beside it. Now it stops at start-up with a configuration error (exit
/// 78) that names the file.
#[tokio::test]
async fn a_second_daemon_on_the_same_csv_stops_with_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("attendance.csv");
    let (log, _) = open_with(&csv, Switch(Arc::new(AtomicU8::new(HEALTHY)))).await;
    let server = Running::start(&csv, log).await;
    let config = Config {
        csv: csv.clone(),
        admin_socket: Some(dir.path().join("second.sock")),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let second = tokio::time::timeout(
        Duration::from_secs(15),
        attendance_server::run(listener, config, std::future::pending()),
    )
    .await
    .expect("the second daemon stops at once");
    let err = second.expect_err("refused");
    assert!(err.is_config(), "{err}");
    assert!(
        err.to_string().contains(&csv.display().to_string()),
        "{err}"
    );
    server.stop().await;
}
