//! The attendance CSV: its record format, opening and checking an existing file, and appending
//! a batch of records durably.
//!
//! Only the writer task ([`crate::writer`]) touches the file after start-up.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::config::FsyncPolicy;

/// The header row. The first five columns are exactly the original project's.
pub const HEADER: [&str; 8] = [
    "course",
    "division",
    "name",
    "roll",
    "status",
    "marked_at",
    "joined_at",
    "client_addr",
];

/// One row of the CSV: a student marked present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkRecord {
    /// Course.
    pub course: String,
    /// Division.
    pub division: String,
    /// Student's name.
    pub name: String,
    /// Roll number.
    pub roll: String,
    /// Always `Present`.
    pub status: String,
    /// When the mark was made (RFC 3339, UTC).
    pub marked_at: String,
    /// When the student joined (RFC 3339, UTC).
    pub joined_at: String,
    /// The client's IP address.
    pub client_addr: String,
}

/// Whether a spreadsheet would run `cell` as a formula (OWASP "CSV injection").
fn is_formula(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// Appends the CSV row of `cells` to `out`, with its `\n`: each cell neutralised as
/// [`MarkRecord::neutralised`] does, and quoted where CSV needs it, exactly as csv-async's
/// serializer writes a record (its csv_core writer, `QuoteStyle::Necessary`; a test checks).
///
/// Called by the connection that makes the mark, so the single writer task only concatenates
/// rows and syncs: none of a row's encoding (nor a `String` per cell) is on its path.
pub fn encode_row(cells: [&str; 8], out: &mut Vec<u8>) {
    // The usual row (letters, digits, timestamps, an address) needs no quoting anywhere: its
    // cells joined by commas are what csv_core writes for it, without the state machine. The
    // joined row is checked in one pass: exactly the seven delimiting commas, and no quote or
    // line break; otherwise it is taken back and written field by field.
    // Room for the plain row at once: one allocation for a fresh `out`.
    out.reserve(cells.iter().map(|cell| cell.len() + 1).sum());
    if cells
        .iter()
        .all(|cell| !cell.is_empty() && !is_formula(cell))
    {
        let start = out.len();
        for (i, cell) in cells.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(cell.as_bytes());
        }
        let row = &out[start..];
        if memchr::memchr3(b'"', b'\r', b'\n', row).is_none()
            && memchr::memchr_iter(b',', row).count() == cells.len() - 1
        {
            out.push(b'\n');
            return;
        }
        out.truncate(start);
    }
    let mut w = csv_core::Writer::new();
    for (i, cell) in cells.into_iter().enumerate() {
        if i > 0 {
            // A closing quote of the previous field, and the comma.
            put(out, 2, |o| w.delimiter(o));
        }
        let prefixed;
        let input = if is_formula(cell) {
            prefixed = format!("'{cell}");
            prefixed.as_bytes()
        } else {
            cell.as_bytes()
        };
        // Room for the worst case (an opening quote and every byte a doubled quote), so the
        // whole field is written in one call.
        put(out, 2 * input.len() + 1, |o| {
            let (result, _, written) = w.field(input, o);
            (result, written)
        });
    }
    // A closing quote, or `""` for a lone empty field, and the line ending.
    put(out, 3, |o| w.terminator(o));
}

/// Lets a csv_core step fill up to `room` bytes at the end of `out`; keeps what it wrote. The
/// callers' `room` is the step's worst case, so it always finishes.
fn put(
    out: &mut Vec<u8>,
    room: usize,
    step: impl FnOnce(&mut [u8]) -> (csv_core::WriteResult, usize),
) {
    let at = out.len();
    out.resize(at + room, 0);
    let (result, written) = step(&mut out[at..]);
    debug_assert_eq!(result, csv_core::WriteResult::InputEmpty, "room too small");
    out.truncate(at + written);
}

impl MarkRecord {
    /// The cells in column order.
    pub fn cells(&self) -> [&str; 8] {
        [
            &self.course,
            &self.division,
            &self.name,
            &self.roll,
            &self.status,
            &self.marked_at,
            &self.joined_at,
            &self.client_addr,
        ]
    }

    /// The record's CSV row (see [`encode_row`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        encode_row(self.cells(), &mut out);
        out
    }

    /// Neutralises every cell a spreadsheet would run as a formula (OWASP "CSV injection"): a
    /// cell starting with `=`, `+`, `-`, `@`, TAB or CR gets a leading `'`.
    pub fn neutralised(mut self) -> Self {
        for cell in [
            &mut self.course,
            &mut self.division,
            &mut self.name,
            &mut self.roll,
            &mut self.status,
            &mut self.marked_at,
            &mut self.joined_at,
            &mut self.client_addr,
        ] {
            if is_formula(cell) {
                cell.insert(0, '\'');
            }
        }
        self
    }
}

/// Why the CSV could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O error on the file or its directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file exists but its header is not ours; it is never appended to.
    #[error(
        "{path}: header is {found:?}, expected {expected:?}; refusing to append to a file of another format"
    )]
    Header {
        /// The file.
        path: PathBuf,
        /// Its first line.
        found: String,
        /// Ours.
        expected: String,
    },
    /// A record could not be encoded or parsed.
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The error.
        source: csv_async::Error,
    },
}

impl StorageError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// What the writer needs of the file: appending, syncing, and cutting back a failed append.
/// Implemented for [`std::fs::File`]; tests wrap it to inject write and sync failures.
pub trait LogFile: Send + std::fmt::Debug + 'static {
    /// Appends all of `bytes`.
    ///
    /// # Errors
    /// Any I/O error (disk full, I/O error).
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes appended data durable (`fdatasync`).
    ///
    /// # Errors
    /// Any I/O error.
    fn sync_data(&mut self) -> std::io::Result<()>;
    /// Makes data and metadata durable (`fsync`).
    ///
    /// # Errors
    /// Any I/O error.
    fn sync_all(&mut self) -> std::io::Result<()>;
    /// Cuts the file back to `len` bytes.
    ///
    /// # Errors
    /// Any I/O error.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl LogFile for std::fs::File {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_all(bytes)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        std::fs::File::sync_data(self)
    }
    fn sync_all(&mut self) -> std::io::Result<()> {
        std::fs::File::sync_all(self)
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }
}

/// The open CSV file, positioned for appending.
#[derive(Debug)]
pub struct CsvLog {
    path: PathBuf,
    file: Option<Box<dyn LogFile>>,
    /// Length of the file known to be on disk; a failed append is cut back to it.
    synced_len: u64,
    fsync: FsyncPolicy,
    /// How long the last successful `fdatasync` of an append took (for metrics).
    last_sync: Option<std::time::Duration>,
    /// Whether the last append's write and sync succeeded in less than `inline_io_max`, so the
    /// next may run on the calling tokio worker (see [`CsvLog::append`]).
    fast_io: bool,
    /// [`INLINE_IO_MAX`] unless changed with [`CsvLog::with_inline_io_max`].
    inline_io_max: std::time::Duration,
    /// The buffer the last batch was encoded into, reused by the next so a steady stream of
    /// batches does not allocate one each time; one grown past [`KEEP_BUF_BYTES`] is dropped.
    buf: Vec<u8>,
}

/// Largest encoding buffer kept between appends (about 600 typical rows); a larger batch's
/// buffer is freed after its write rather than held for the life of the daemon.
const KEEP_BUF_BYTES: usize = 64 * 1024;

/// A batch whose write and sync took less than this lets the next batch's run on the calling
/// tokio worker instead of a blocking-pool thread. A fast disk syncs a batch in about 0.1 ms;
/// handing that to the pool and back costs two thread wake-ups per batch, which were a third of
/// the daemon's context switches and 5–10 % of its CPU per mark under load. A slow disk (or
/// a fast one stalling) must not hold a worker: once a batch takes this long or longer, the
/// following ones go to the pool until one is fast again, so a stall blocks a worker at most
/// once.
pub const INLINE_IO_MAX: std::time::Duration = std::time::Duration::from_millis(1);

/// Whether the caller runs on a multi-threaded tokio runtime, where blocking one worker briefly
/// leaves the others serving. On a current-thread runtime it would stop everything.
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

fn header_line() -> String {
    HEADER.join(",")
}

impl CsvLog {
    /// Opens `path` for appending, creating it with a header if it is missing or empty.
    ///
    /// An existing file must start with our header. A torn last line (a crash mid-write) is cut
    /// off with a warning. Returns the records already in the file, so the daemon knows who is
    /// marked.
    ///
    /// # Errors
    /// [`StorageError::Header`] for a file of another format, [`StorageError::Io`] otherwise.
    pub async fn open(
        path: &Path,
        fsync: FsyncPolicy,
    ) -> Result<(Self, Vec<MarkRecord>), StorageError> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, fsync))
            .await
            .map_err(|e| StorageError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            })?
    }

    fn open_blocking(
        path: PathBuf,
        fsync: FsyncPolicy,
    ) -> Result<(Self, Vec<MarkRecord>), StorageError> {
        let (log, content) = Self::open_checked(path, fsync)?;
        let records = parse_records(&log.path, &content);
        Ok((log, records))
    }

    fn open_checked(path: PathBuf, fsync: FsyncPolicy) -> Result<(Self, Vec<u8>), StorageError> {
        let mut content = match std::fs::read(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StorageError::io(&path)(e)),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(StorageError::io(&path))?;
        let mut log = Self {
            path,
            file: Some(Box::new(file)),
            synced_len: content.len() as u64,
            fsync,
            last_sync: None,
            fast_io: false,
            inline_io_max: INLINE_IO_MAX,
            buf: Vec::new(),
        };
        let header = header_line();
        let torn_header = !content.is_empty()
            && !content.contains(&b'\n')
            && header.as_bytes().starts_with(&content);
        if content.is_empty() || torn_header {
            // New, or a crash cut the header itself short: start the file afresh.
            if torn_header {
                warn!(path = %log.path.display(), "csv holds only part of its header; rewriting it");
                log.truncate_to(0)?;
                content.clear();
            }
            log.create_header()?;
            return Ok((log, content));
        }
        let first_line_end = memchr_newline(&content).unwrap_or(content.len());
        let first = String::from_utf8_lossy(&content[..first_line_end]);
        let first = first.trim_end_matches('\r');
        if first != header {
            return Err(StorageError::Header {
                path: log.path,
                found: first.chars().take(200).collect(),
                expected: header,
            });
        }
        if content.last() != Some(&b'\n') {
            let keep = content
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            warn!(
                path = %log.path.display(),
                dropped_bytes = content.len() - keep,
                "csv ends with a torn line (crash during a write?); cutting it off"
            );
            log.truncate_to(keep as u64)?;
            content.truncate(keep);
            if keep == 0 {
                log.create_header()?;
            }
        }
        Ok((log, content))
    }

    fn file(&mut self) -> Result<&mut Box<dyn LogFile>, StorageError> {
        let path = self.path.clone();
        self.file.as_mut().ok_or_else(|| {
            StorageError::io(&path)(std::io::Error::other("file lost after a failed write"))
        })
    }

    fn create_header(&mut self) -> Result<(), StorageError> {
        let line = format!("{}\n", header_line());
        let path = self.path.clone();
        let file = self.file()?;
        file.append(line.as_bytes())
            .map_err(StorageError::io(&path))?;
        file.sync_all().map_err(StorageError::io(&path))?;
        self.synced_len = line.len() as u64;
        sync_parent_dir(&path)?;
        info!(path = %path.display(), "created attendance csv with header");
        Ok(())
    }

    fn truncate_to(&mut self, len: u64) -> Result<(), StorageError> {
        let path = self.path.clone();
        let file = self.file()?;
        file.truncate(len).map_err(StorageError::io(&path))?;
        file.sync_all().map_err(StorageError::io(&path))?;
        self.synced_len = len;
        Ok(())
    }

    /// Replaces the file handle by `wrap(handle)`: for tests that inject storage faults.
    #[must_use]
    pub fn wrap_file(mut self, wrap: impl FnOnce(Box<dyn LogFile>) -> Box<dyn LogFile>) -> Self {
        self.file = self.file.take().map(wrap);
        self
    }

    /// Changes how quick a write and sync must be for the next append to run on the calling
    /// worker ([`INLINE_IO_MAX`] by default); `Duration::ZERO` keeps every append on the
    /// blocking pool. Tests use it to tell a fast disk from a slow one with a wide margin.
    #[must_use]
    pub fn with_inline_io_max(mut self, max: std::time::Duration) -> Self {
        self.inline_io_max = max;
        self
    }

    /// The sync policy this log was opened with.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.fsync
    }

    /// How long the `fdatasync` of the last successful append took; `None` before the first, or
    /// with `fsync = "never"`.
    pub fn last_sync(&self) -> Option<std::time::Duration> {
        self.last_sync
    }

    /// Length of the file known to be durable.
    pub fn synced_len(&self) -> u64 {
        self.synced_len
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `rows` (encoded by [`encode_row`]) as one write, then syncs once (per the fsync
    /// policy). On failure, the file is cut back to its last synced length so no
    /// unacknowledged bytes stay behind.
    ///
    /// The write and sync run on a blocking-pool thread, or, on a multi-threaded runtime while
    /// the previous append took less than [`INLINE_IO_MAX`] (see [`CsvLog::with_inline_io_max`]),
    /// right here on the calling worker.
    ///
    /// # Errors
    /// [`StorageError`] if writing or syncing failed; nothing of the batch is kept.
    pub async fn append(&mut self, rows: &[&[u8]]) -> Result<(), StorageError> {
        let mut bytes = std::mem::take(&mut self.buf);
        bytes.clear();
        for row in rows {
            bytes.extend_from_slice(row);
        }
        let mut file = self.file.take().ok_or_else(|| {
            StorageError::io(&self.path)(std::io::Error::other("file lost after a failed write"))
        })?;
        let fsync = self.fsync;
        let synced_len = self.synced_len;
        let work = move || {
            let started = std::time::Instant::now();
            let mut synced_in = None;
            let result = file.append(&bytes).and_then(|()| match fsync {
                FsyncPolicy::Always => {
                    let started = std::time::Instant::now();
                    file.sync_data()?;
                    synced_in = Some(started.elapsed());
                    Ok(())
                }
                FsyncPolicy::Never => Ok(()),
            });
            if let Err(e) = &result {
                // Do not trust the page cache after a failed write or sync (a retried fsync can
                // falsely succeed once the kernel dropped the dirty pages): cut off everything
                // since the last good sync, so the batch is rewritten whole or not at all.
                if let Err(cut) = file.truncate(synced_len).and_then(|()| file.sync_all()) {
                    error!(error = %e, truncate_error = %cut, "could not cut the csv back after a failed write");
                }
            }
            let took = started.elapsed();
            (file, bytes, result.map(|()| synced_in), took)
        };
        let (file, bytes, result, took) = if self.fast_io && on_multi_thread_runtime() {
            work()
        } else {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| StorageError::io(&self.path)(std::io::Error::other(e)))?
        };
        self.fast_io = result.is_ok() && took < self.inline_io_max;
        self.file = Some(file);
        let written = bytes.len() as u64;
        if bytes.capacity() <= KEEP_BUF_BYTES {
            self.buf = bytes;
        }
        let synced_in = result.map_err(StorageError::io(&self.path))?;
        self.synced_len += written;
        self.last_sync = synced_in;
        Ok(())
    }

    /// Syncs everything written so far (the final step of a shutdown).
    ///
    /// # Errors
    /// [`StorageError::Io`] if the sync failed.
    pub async fn sync(&mut self) -> Result<(), StorageError> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let (file, result) = tokio::task::spawn_blocking(move || {
            let mut file = file;
            let r = file.sync_all();
            (file, r)
        })
        .await
        .map_err(|e| StorageError::io(&self.path)(std::io::Error::other(e)))?;
        self.file = Some(file);
        result.map_err(StorageError::io(&self.path))
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

fn sync_parent_dir(path: &Path) -> Result<(), StorageError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io(dir))
}

/// Parses the records of a file that starts with our header. Rows that do not parse are skipped
/// with a warning (a hand-edited file should not stop the daemon).
fn parse_records(path: &Path, content: &[u8]) -> Vec<MarkRecord> {
    futures::executor::block_on(async {
        let mut reader = csv_async::AsyncReaderBuilder::new()
            .has_headers(true)
            .create_deserializer(content);
        let mut records = Vec::new();
        let mut rows = reader.deserialize::<MarkRecord>();
        let mut bad = 0usize;
        while let Some(row) = rows.next().await {
            match row {
                Ok(r) => records.push(r),
                Err(e) => {
                    bad += 1;
                    if bad <= 5 {
                        warn!(path = %path.display(), error = %e, "skipping unreadable csv row");
                    }
                }
            }
        }
        records
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> MarkRecord {
        MarkRecord {
            course: "CN".into(),
            division: "D1".into(),
            name: name.into(),
            roll: "1".into(),
            status: "Present".into(),
            marked_at: "2026-11-23T10:00:00.000Z".into(),
            joined_at: "2026-11-23T09:00:00.000Z".into(),
            client_addr: "127.0.0.1".into(),
        }
    }

    #[tokio::test]
    async fn new_file_gets_one_header_and_reopening_keeps_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.csv");
        let (mut log, existing) = CsvLog::open(&path, FsyncPolicy::Always)
            .await
            .expect("open");
        assert!(existing.is_empty());
        log.append(&[&record("Ann").encode(), &record("Bob, Jr").encode()])
            .await
            .expect("append");
        drop(log);
        let (_log, existing) = CsvLog::open(&path, FsyncPolicy::Always)
            .await
            .expect("reopen");
        assert_eq!(existing, vec![record("Ann"), record("Bob, Jr")]);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.matches("course,division").count(), 1);
        assert!(text.contains("\"Bob, Jr\""));
    }

    #[tokio::test]
    async fn batches_after_a_larger_one_hold_only_their_own_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.csv");
        let (mut log, _) = CsvLog::open(&path, FsyncPolicy::Never).await.expect("open");
        let (ann, bob, cat) = (record("Ann"), record("Bob, Jr"), record("Cat"));
        log.append(&[&ann.encode(), &bob.encode()])
            .await
            .expect("append");
        log.append(&[&cat.encode()]).await.expect("append");
        log.append(&[]).await.expect("append nothing");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(log.synced_len(), text.len() as u64);
        drop(log);
        let (_log, existing) = CsvLog::open(&path, FsyncPolicy::Never)
            .await
            .expect("reopen");
        assert_eq!(existing, vec![ann, bob, cat]);
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.csv");
        let (mut log, _) = CsvLog::open(&path, FsyncPolicy::Always)
            .await
            .expect("open");
        log.append(&[&record("Ann").encode()])
            .await
            .expect("append");
        drop(log);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"CN,D1,Torn,2,Pres").expect("write");
        drop(f);
        let (_log, existing) = CsvLog::open(&path, FsyncPolicy::Always)
            .await
            .expect("reopen");
        assert_eq!(existing, vec![record("Ann")]);
        assert!(
            std::fs::read_to_string(&path)
                .expect("read")
                .ends_with("127.0.0.1\n")
        );
    }

    #[tokio::test]
    async fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.csv");
        std::fs::write(&path, "id,score\n1,2\n").expect("write");
        let err = CsvLog::open(&path, FsyncPolicy::Always)
            .await
            .expect_err("refused");
        assert!(matches!(err, StorageError::Header { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "id,score\n1,2\n"
        );
    }

    /// What csv-async's serde serializer writes for `r` (how rows were encoded before
    /// `encode_row`, and what every existing file holds).
    fn serde_row(r: &MarkRecord) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut ser = csv_async::AsyncWriterBuilder::new()
                .has_headers(false)
                .create_serializer(Vec::new());
            ser.serialize(r).await.expect("serialize");
            ser.into_inner().await.expect("flush")
        })
    }

    /// A record of eight cells in column order.
    fn record_of(cells: [String; 8]) -> MarkRecord {
        let [
            course,
            division,
            name,
            roll,
            status,
            marked_at,
            joined_at,
            client_addr,
        ] = cells;
        MarkRecord {
            course,
            division,
            name,
            roll,
            status,
            marked_at,
            joined_at,
            client_addr,
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        /// Rows are byte for byte what csv-async writes for the neutralised record: commas,
        /// quotes, line breaks, formula prefixes, empty and non-ASCII cells included.
        #[test]
        fn encoded_rows_match_csv_async(cells in proptest::array::uniform8(
            proptest::prop_oneof!["[a-zA-Z0-9.'-]{0,12}", "[ -~\t\r\n]{0,12}", "\\PC{0,8}"]
        )) {
            let r = record_of(cells);
            proptest::prop_assert_eq!(r.encode(), serde_row(&r.clone().neutralised()));
        }

        /// The same for rows whose every cell is plain (the fast path a real mark takes),
        /// which the mix above almost never draws: one quoted cell among eight sends a row
        /// down the general path.
        #[test]
        fn plain_rows_match_csv_async(cells in proptest::array::uniform8(
            proptest::prop_oneof!["[a-zA-Z0-9][a-zA-Z0-9.:' +-]{0,20}", "\\PL[\\PL\\PN. ]{0,8}"]
        )) {
            let r = record_of(cells);
            proptest::prop_assert_eq!(r.encode(), serde_row(&r.clone().neutralised()));
        }
    }

    #[test]
    fn a_row_is_quoted_only_where_csv_needs_it() {
        let row = MarkRecord {
            name: "Bob, \"Jr\"".into(),
            roll: "=1+1".into(),
            client_addr: String::new(),
            ..record("x")
        }
        .encode();
        assert_eq!(
            String::from_utf8(row).expect("utf-8"),
            "CN,D1,\"Bob, \"\"Jr\"\"\",'=1+1,Present,2026-11-23T10:00:00.000Z,2026-11-23T09:00:00.000Z,\n"
        );
    }

    #[test]
    fn formula_cells_are_neutralised() {
        let r = MarkRecord {
            name: "=HYPERLINK(1)".into(),
            roll: "-1".into(),
            ..record("x")
        }
        .neutralised();
        assert_eq!(r.name, "'=HYPERLINK(1)");
        assert_eq!(r.roll, "'-1");
        assert_eq!(r.course, "CN");
    }
}
