//! Tests of the CSV sink: the row format, opening and checking files, locking, and the scan
//! that builds the dedupe index.

use std::io::Write as _;

use super::*;
use crate::store::Recorded;

fn mark(name: &str, roll: &str, at: &str) -> Mark {
    Mark::present(
        StudentId::from_parts("CN", "D1", name, roll).expect("valid id"),
        "2026-11-23T09:00:00.000Z".parse().expect("ts"),
        at.parse().expect("ts"),
        Some([127, 0, 0, 1].into()),
    )
}

/// A row as the writer is handed it: every cell but the hash.
fn row(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    super::encode_row(
        &[
            "CN",
            "D1",
            name,
            "1",
            PRESENT,
            "2026-11-23T10:00:00.000Z",
            "2026-11-23T09:00:00.000Z",
            "127.0.0.1",
            "0",
            "60",
            "2026-11-23T09:00:00.000Z",
        ],
        &mut out,
    );
    out
}

fn encode_row(cells: [&str; 8], out: &mut Vec<u8>) -> Vec<u8> {
    super::encode_row(&cells, out);
    std::mem::take(out)
}

/// The rows of `path` after its header, as text lines without their hash cell.
fn rows_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .skip(1)
        .map(|l| l.rsplit_once(',').map_or(l, |(row, _)| row).to_owned())
        .collect()
}

/// `rows` (without hashes) chained with the tests' key of zeros, as the writer writes them.
fn chained(rows: &[Vec<u8>]) -> Vec<u8> {
    let key = crate::store::chain::ChainKey::new([0; 32]);
    let mut prev = crate::store::chain::GENESIS;
    let mut out = Vec::new();
    for r in rows {
        let r = r.strip_suffix(b"\n").unwrap_or(r);
        prev = key.row_hash(&prev, r);
        out.extend_from_slice(r);
        out.push(b',');
        out.extend_from_slice(crate::store::chain::hex(&prev).as_bytes());
        out.push(b'\n');
    }
    out
}

#[tokio::test]
async fn new_file_gets_one_header_and_reopening_keeps_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    let mut sink = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect("open");
    sink.append(&[row("Ann"), row("Bob, Jr")])
        .await
        .expect("append");
    drop(sink);
    let _sink = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect("reopen");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.matches("course,division").count(), 1);
    assert!(text.contains("\"Bob, Jr\""));
    assert_eq!(rows_of(&path).len(), 2);
}

#[tokio::test]
async fn batches_after_a_larger_one_hold_only_their_own_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    let mut sink = CsvSink::open(&path, FsyncPolicy::Never)
        .await
        .expect("open");
    sink.append(&[row("Ann"), row("Bob, Jr")])
        .await
        .expect("append");
    sink.append(&[row("Cat")]).await.expect("append");
    sink.append::<Vec<u8>>(&[]).await.expect("append nothing");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(sink.synced_len(), text.len() as u64);
    let expected: Vec<String> = [row("Ann"), row("Bob, Jr"), row("Cat")]
        .iter()
        .map(|r| String::from_utf8_lossy(r).trim_end().to_owned())
        .collect();
    assert_eq!(rows_of(&path), expected);
}

#[tokio::test]
async fn a_torn_last_line_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    let mut sink = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect("open");
    sink.append(&[row("Ann")]).await.expect("append");
    drop(sink);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    f.write_all(b"CN,D1,Torn,2,Pres").expect("write");
    drop(f);
    let _sink = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect("reopen");
    assert_eq!(rows_of(&path).len(), 1);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.ends_with('\n') && !text.contains("Torn"), "{text}");
}

#[tokio::test]
async fn a_torn_line_longer_than_a_probe_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    let sink = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect("open");
    drop(sink);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    f.write_all(&row("Ann")).expect("write");
    f.write_all(&vec![b'x'; 3 * PROBE + 7]).expect("write");
    drop(f);
    let sink = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect("reopen");
    assert_eq!(rows_of(&path).len(), 1);
    assert_eq!(
        sink.synced_len(),
        std::fs::metadata(&path).expect("meta").len()
    );
}

#[tokio::test]
async fn a_torn_header_is_rewritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    std::fs::write(&path, "course,divi").expect("write");
    let _sink = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect("open");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        format!("{}\n", header_line())
    );
}

#[tokio::test]
async fn a_foreign_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    std::fs::write(&path, "id,score\n1,2\n").expect("write");
    let err = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect_err("refused");
    assert!(matches!(err, StorageError::Header { .. }), "{err}");
    assert!(err.is_config());
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        "id,score\n1,2\n"
    );
}

/// Defect 5 (issue 16): a path the daemon cannot open used to be a plain `Io` error, which
/// `ServerError::is_config` did not count, so the daemon exited 1 and systemd restarted it in
/// a loop. A missing directory and a file it may not write are configuration (exit 78).
#[tokio::test]
async fn a_path_that_cannot_be_opened_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-dir").join("a.csv");
    let err = CsvSink::open(&missing, FsyncPolicy::Always)
        .await
        .expect_err("missing directory");
    assert!(matches!(err, StorageError::Open { .. }), "{err}");
    assert!(err.is_config(), "{err}");

    let denied = StorageError::Open {
        path: "/x".into(),
        source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    };
    assert!(denied.is_config());
    // A file that is a directory is a mistake in the configuration too.
    let err = CsvSink::open(dir.path(), FsyncPolicy::Always)
        .await
        .expect_err("a directory");
    assert!(err.is_config(), "{err}");
    // A failure while writing is not.
    let io = StorageError::Io {
        path: "/x".into(),
        source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    };
    assert!(!io.is_config());
}

/// Defect 3 (issue 16): the old `CsvLog::open` took no lock, so a second daemon on the same
/// CSV opened it and both appended. Two opens of the same file in one process are two open
/// file descriptions, so the `flock` conflicts as it would between two daemons.
#[tokio::test]
async fn a_second_open_of_a_locked_file_is_refused_and_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    let first = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect("open");
    let err = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect_err("locked");
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
    assert!(err.is_config());
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    if std::path::Path::new("/proc/locks").exists() {
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "the holder is this process: {text}"
        );
    }
    drop(first);
    CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect("free once the first is closed");
}

#[tokio::test]
async fn a_reopen_locks_the_new_file_and_releases_the_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    let rotated = dir.path().join("a.csv.1");
    let mut sink = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect("open");
    // Reopening the same file (no rotation) must not conflict with its own lock.
    sink.reopen().await.expect("reopen in place");
    std::fs::rename(&path, &rotated).expect("rotate");
    sink.reopen().await.expect("reopen after rotation");
    sink.append(&[row("Ann")]).await.expect("append");
    assert_eq!(rows_of(&path).len(), 1, "the new file gets the row");
    assert!(rows_of(&rotated).is_empty());
    let err = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect_err("the new file is locked");
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
    CsvSink::open(&rotated, FsyncPolicy::Always)
        .await
        .expect("the old file is released");
}

#[tokio::test]
async fn a_failed_reopen_of_the_same_file_keeps_it_locked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    let mut sink = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect("open");
    // Rewritten in place (the same inode): the reopen releases the old lock, takes a new one,
    // then refuses the header.
    std::fs::write(&path, "id,score\n").expect("write");
    let err = sink.reopen().await.expect_err("foreign header");
    assert!(matches!(err, StorageError::Header { .. }), "{err}");
    let err = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect_err("still locked");
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
}

/// A file whose every operation can be made to fail, over the real file.
#[derive(Debug)]
struct Failing {
    inner: Box<dyn LogFile>,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Failing {
    fn check(&self) -> std::io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        Ok(())
    }
}

impl LogFile for Failing {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            // Half the batch reaches the file before the error.
            self.inner.append(&bytes[..bytes.len() / 2])?;
            return Err(std::io::Error::from_raw_os_error(5));
        }
        self.inner.append(bytes)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.check()?;
        self.inner.sync_data()
    }
    fn sync_all(&mut self) -> std::io::Result<()> {
        self.check()?;
        self.inner.sync_all()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.inner.truncate(len)
    }
}

/// Defect 4 (issue 16): when cutting a failed batch back off also failed, the old `CsvLog`
/// only logged it and took the next batch, which was appended after the torn half-row and
/// acknowledged: the acknowledged row merged with the torn one. Now the sink refuses appends
/// until a clean reopen, which also cuts the file back to its last synced length.
#[tokio::test]
async fn after_a_failed_cut_appends_are_refused_until_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sink = CsvSink::open(&path, FsyncPolicy::Always)
        .await
        .expect("open");
    let header_len = sink.synced_len();
    let mut sink = sink.wrap_file({
        let fail = std::sync::Arc::clone(&fail);
        move |inner| Box::new(Failing { inner, fail })
    });
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    sink.append(&[row("Ann")]).await.expect_err("write fails");
    assert!(sink.refusing().is_some());
    assert!(
        std::fs::metadata(&path).expect("meta").len() > header_len,
        "the torn half-row is still there"
    );
    // The disk works again, but the torn bytes are still in the file: no append may follow.
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let err = sink.append(&[row("Bob")]).await.expect_err("refused");
    assert!(matches!(err, StorageError::Refusing { .. }), "{err}");
    assert_eq!(
        std::fs::metadata(&path).expect("meta").len(),
        header_len + (row("Ann").len() as u64 + 65) / 2,
        "nothing appended after the torn bytes"
    );
    sink.reopen().await.expect("reopen");
    assert!(sink.refusing().is_none());
    assert_eq!(sink.synced_len(), header_len, "cut back on reopen");
    sink.append(&[row("Bob")])
        .await
        .expect("append after reopen");
    assert_eq!(
        rows_of(&path),
        vec![String::from_utf8_lossy(&row("Bob")).trim_end().to_owned()]
    );
}

/// The marks of `rows` (name, roll, marked_at) in a fresh file at `path`.
fn write_file(path: &Path, rows: &[(&str, &str, Timestamp)]) {
    let mut text = format!("{}\n", header_line()).into_bytes();
    let encoded: Vec<Vec<u8>> = rows
        .iter()
        .map(|&(name, roll, at)| {
            encode_mark(&Mark::present(
                StudentId::from_parts("CN", "D1", name, roll).expect("valid"),
                at,
                at,
                None,
            ))
        })
        .collect();
    text.extend_from_slice(&chained(&encoded));
    std::fs::write(path, text).expect("write");
}

fn hours_ago(h: i64) -> Timestamp {
    Timestamp::from_datetime(time::OffsetDateTime::now_utc() - time::Duration::hours(h))
}

#[tokio::test]
async fn the_index_holds_only_the_rows_of_today_and_the_previous_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    let now = Timestamp::now();
    write_file(
        &path,
        &[
            ("Old", "1", hours_ago(24 * 5)),
            ("Older", "2", hours_ago(24 * 3)),
            ("Eve", "3", hours_ago(24)),
            ("Ann", "4", now),
        ],
    );
    let (sink, index) = open_csv(&path, FsyncPolicy::Never, jiff::tz::TimeZone::UTC)
        .await
        .expect("open");
    assert_eq!(sink.rows_read(), 4);
    assert_eq!(index.len(), 2, "today's and yesterday's");
    assert_eq!(index.marks_today(now), 1);
    let ann = StudentId::from_parts("CN", "D1", "Ann", "4").expect("valid");
    assert_eq!(index.marked_at(&ann.class, &ann.roll, now), Some(now));
}

/// Defect 2 (issue 16): the old reopen (SIGHUP) read the whole file into memory and parsed
/// every row again on the writer's path (`CsvLog::open` → `std::fs::read` + `parse_records`).
/// Now only the open that builds the index reads rows; a reopen reads the header and the
/// tail. The middle of this file is not CSV at all (unbalanced quotes, invalid UTF-8), and the
/// reopen neither reads a row nor cares.
#[tokio::test]
async fn a_reopen_reads_only_the_header_and_the_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    write_file(&path, &[("Ann", "1", Timestamp::now())]);
    let (mut sink, index) = open_csv(&path, FsyncPolicy::Never, jiff::tz::TimeZone::UTC)
        .await
        .expect("open");
    assert_eq!((sink.rows_read(), index.len()), (1, 1));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    for _ in 0..1000 {
        f.write_all(b"\"garbage,\xff\xfe,\"\"\n").expect("write");
    }
    drop(f);
    sink.append(&[row("Bob")]).await.expect("append");
    sink.reopen().await.expect("reopen");
    assert_eq!(sink.rows_read(), 1, "the reopen read no rows");
    sink.append(&[row("Cat")])
        .await
        .expect("append after reopen");
    let text = String::from_utf8_lossy(&std::fs::read(&path).expect("read")).into_owned();
    let last = text.lines().last().unwrap_or_default();
    let cat = String::from_utf8_lossy(&row("Cat")).trim_end().to_owned();
    assert!(last.starts_with(&format!("{cat},")), "{last}");
}

#[tokio::test]
async fn unreadable_rows_are_skipped_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.csv");
    let now = Timestamp::now();
    write_file(&path, &[("Ann", "1", now)]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    f.write_all(b"too,few\n\xff,\xfe,x,y,Present,z,w,\n")
        .expect("write");
    drop(f);
    let m = mark("Bob", "2", &now.to_wire());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    f.write_all(&chained(&[encode_mark(&m)])).expect("write");
    drop(f);
    let (_sink, index) = open_csv(&path, FsyncPolicy::Never, jiff::tz::TimeZone::UTC)
        .await
        .expect("open");
    assert_eq!(index.len(), 2);
}

#[test]
fn a_mark_is_encoded_in_the_csv_columns() {
    let mut m = mark("Ann", "1", "2026-11-23T10:00:00.000Z");
    assert_eq!(
        String::from_utf8(encode_mark(&m)).expect("utf-8"),
        "CN,D1,Ann,1,Present,2026-11-23T10:00:00.000Z,2026-11-23T09:00:00.000Z,127.0.0.1,0,60,2026-11-23T09:00:00.000Z\n"
    );
    m.addr = None;
    assert!(
        String::from_utf8(encode_mark(&m))
            .expect("utf-8")
            .ends_with("2026-11-23T09:00:00.000Z,,0,60,2026-11-23T09:00:00.000Z\n")
    );
    let _ = Recorded::New(m.marked_at);
}

#[test]
fn addresses_are_written_as_display_writes_them() {
    for ip in [
        "127.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "10.20.3.4",
        "100.99.9.199",
        "::1",
        "fe80::1",
    ] {
        let ip: std::net::IpAddr = ip.parse().expect("valid");
        assert_eq!(ip_string(ip), ip.to_string());
    }
}

/// What csv-async's writer writes for `cells` once neutralised (how rows were encoded before
/// `encode_row`, and what every existing file holds).
fn csv_async_row(cells: &[String; 8]) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut w = csv_async::AsyncWriterBuilder::new()
            .has_headers(false)
            .create_writer(Vec::new());
        let neutralised: Vec<String> = cells.iter().map(|c| neutralise(c).into_owned()).collect();
        w.write_record(&neutralised).await.expect("write");
        w.into_inner().await.expect("flush")
    })
}

fn encoded(cells: &[String; 8]) -> Vec<u8> {
    let mut out = Vec::new();
    super::encode_row(
        &[
            &cells[0], &cells[1], &cells[2], &cells[3], &cells[4], &cells[5], &cells[6], &cells[7],
        ],
        &mut out,
    );
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
    /// Rows are byte for byte what csv-async writes for the neutralised cells: commas,
    /// quotes, line breaks, formula prefixes, empty and non-ASCII cells included.
    #[test]
    fn encoded_rows_match_csv_async(cells in proptest::array::uniform8(
        proptest::prop_oneof!["[a-zA-Z0-9.'-]{0,12}", "[ -~\t\r\n]{0,12}", "\\PC{0,8}"]
    )) {
        proptest::prop_assert_eq!(encoded(&cells), csv_async_row(&cells));
    }

    /// The same for rows whose every cell is plain (the fast path a real mark takes),
    /// which the mix above almost never draws: one quoted cell among eight sends a row
    /// down the general path.
    #[test]
    fn plain_rows_match_csv_async(cells in proptest::array::uniform8(
        proptest::prop_oneof!["[a-zA-Z0-9][a-zA-Z0-9.:' +-]{0,20}", "\\PL[\\PL\\PN. ]{0,8}"]
    )) {
        proptest::prop_assert_eq!(encoded(&cells), csv_async_row(&cells));
    }
}

#[test]
fn a_row_is_quoted_only_where_csv_needs_it() {
    let row = encode_row(
        [
            "CN",
            "D1",
            "Bob, \"Jr\"",
            "=1+1",
            PRESENT,
            "2026-11-23T10:00:00.000Z",
            "2026-11-23T09:00:00.000Z",
            "",
        ],
        &mut Vec::new(),
    );
    assert_eq!(
        String::from_utf8(row).expect("utf-8"),
        "CN,D1,\"Bob, \"\"Jr\"\"\",'=1+1,Present,2026-11-23T10:00:00.000Z,2026-11-23T09:00:00.000Z,\n"
    );
}

#[test]
fn formula_cells_are_neutralised() {
    assert_eq!(neutralise("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    assert_eq!(neutralise("-1"), "'-1");
    assert_eq!(neutralise("CN"), "CN");
}
