//! The attendance CSV as a [`BatchSink`]: its row format, opening, locking and checking a file,
//! streaming the rows the dedupe index needs, and appending a batch of rows durably.
//!
//! Only the writer task ([`crate::store::spawn`]) touches the file after start-up.

use std::io::Write as _;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use attendance_protocol::{StudentId, Timestamp};
use compact_str::{CompactString, ToCompactString as _};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::io::AsyncReadExt as _;
use tracing::{error, info, warn};

use super::chain::{ChainKey, CheckpointReason};
use super::index::{DaySpan, Index, jiff_timestamp};
use super::{BatchSink, Held, Mark};
use crate::config::FsyncPolicy;

/// The header row. The first five columns are exactly the original project's; `row_hash` is
/// the keyed hash chain (see [`super::chain`]).
pub const HEADER: [&str; 12] = [
    "course",
    "division",
    "name",
    "roll",
    "status",
    "marked_at",
    "joined_at",
    "client_addr",
    "minutes_late",
    "minutes_attended",
    "session_start",
    "row_hash",
];

/// The previous version's header (no minutes, no chain): refused, `attendanced migrate`
/// converts it.
pub const V1_HEADER: [&str; 8] = [
    HEADER[0], HEADER[1], HEADER[2], HEADER[3], HEADER[4], HEADER[5], HEADER[6], HEADER[7],
];

/// The `status` cell of every row.
pub const PRESENT: &str = "Present";

/// Whether a spreadsheet would run `cell` as a formula (OWASP "CSV injection").
fn is_formula(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// `cell` as it is written: with a leading `'` if a spreadsheet would run it as a formula (a
/// cell starting with `=`, `+`, `-`, `@`, TAB or CR; OWASP "CSV injection").
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    if is_formula(cell) {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// Appends the CSV row of `cells` to `out`, with its `\n`: each cell neutralised as
/// [`neutralise`] does, and quoted where CSV needs it, exactly as csv-async's writer writes a
/// record (its csv_core writer, `QuoteStyle::Necessary`; a test checks).
///
/// Called in the task that makes the mark ([`CsvSink::encode`] through
/// [`crate::store::Store::record`]), so the single writer task only concatenates rows and
/// syncs: none of a row's encoding (nor a `String` per cell) is on its path.
pub fn encode_row(cells: &[&str], out: &mut Vec<u8>) {
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
        for (i, cell) in cells.iter().enumerate() {
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
    for (i, &cell) in cells.iter().enumerate() {
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

/// `ip` as text; an IPv4 address without the formatting machinery or an allocation (once per
/// mark, it showed in profiles).
fn ip_string(ip: std::net::IpAddr) -> CompactString {
    match ip {
        std::net::IpAddr::V4(v4) => {
            // "255.255.255.255" at most.
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                let digits = 1 + usize::from(octet >= 10) + usize::from(octet >= 100);
                let mut value = octet;
                for at in (len..len + digits).rev() {
                    text[at] = b'0' + value % 10;
                    value /= 10;
                }
                len += digits;
            }
            // ASCII digits and dots; the fallback cannot happen.
            CompactString::from_utf8(&text[..len]).unwrap_or_else(|_| ip.to_compact_string())
        }
        std::net::IpAddr::V6(_) => ip.to_compact_string(),
    }
}

/// The CSV row of `mark` (see [`encode_row`]) without its `row_hash` cell: the writer, which
/// keeps the chain, appends `,<hash>` before the line ending.
pub fn encode_mark(mark: &Mark) -> Vec<u8> {
    let addr = mark.addr.map(ip_string).unwrap_or_default();
    let status = mark.status.as_str();
    let mut numbers = itoa_pair(mark.minutes_late, mark.minutes_attended);
    let (late, attended) = numbers.split();
    let mut row = Vec::with_capacity(192);
    encode_row(
        &[
            mark.id.course().as_str(),
            mark.id.division().as_str(),
            mark.id.name.as_str(),
            mark.id.roll.as_str(),
            status,
            &mark.marked_at.to_wire(),
            &mark.joined_at.to_wire(),
            &addr,
            late,
            attended,
            &mark.session_start.to_wire(),
        ],
        &mut row,
    );
    row
}

/// Two numbers as decimal text, without an allocation each.
struct Pair {
    buf: [u8; 20],
    split: usize,
    len: usize,
}

impl Pair {
    fn split(&mut self) -> (&str, &str) {
        let (a, b) = self.buf[..self.len].split_at(self.split);
        (
            std::str::from_utf8(a).unwrap_or("0"),
            std::str::from_utf8(b).unwrap_or("0"),
        )
    }
}

fn itoa_pair(a: u32, b: u32) -> Pair {
    let mut p = Pair {
        buf: [0; 20],
        split: 0,
        len: 0,
    };
    for (i, mut v) in [a, b].into_iter().enumerate() {
        let mut digits = [0u8; 10];
        let mut n = 0;
        // Bounded: a u32 has at most 10 digits.
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for d in digits[..n].iter().rev() {
            p.buf[p.len] = *d;
            p.len += 1;
        }
        if i == 0 {
            p.split = p.len;
        }
    }
    p
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
    /// The file could not be opened or created (permissions, a missing directory, …).
    #[error("{path}: cannot open: {source}")]
    Open {
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
    /// The file has the previous version's header: it is never rewritten silently.
    #[error(
        "{path}: this file has the previous header (no minutes, no row hashes); stop the daemon and convert it with `attendanced migrate {path}` (the original is kept beside it as {path}.v1)"
    )]
    V1 {
        /// The file.
        path: DisplayPath,
    },
    /// Another process (or another open of the file) holds its lock: two daemons must not
    /// append to the same CSV.
    #[error("{path}: locked by {}; two daemons must not append to the same csv", holder_text(*.holder))]
    Locked {
        /// The file.
        path: PathBuf,
        /// The process holding the lock, if it could be found (Linux `/proc/locks`).
        holder: Option<u32>,
    },
    /// An earlier failed write could not be cut back off the file, so appending now could join
    /// a new row to the torn one; the file takes no appends until it is reopened (SIGHUP).
    #[error("{path}: refusing appends until the csv is reopened: {reason}")]
    Refusing {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The database did not take the batch (unreachable, timed out, refused); nothing of it
    /// is kept.
    #[error("database: {0}")]
    Database(String),
    /// Reading the rows failed (while building the dedupe index at open).
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The error.
        source: csv_async::Error,
    },
}

fn holder_text(holder: Option<u32>) -> String {
    holder.map_or_else(
        || "another process".to_owned(),
        |pid| format!("another process (pid {pid})"),
    )
}

impl StorageError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn open(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Open {
            path: path.to_owned(),
            source,
        }
    }

    /// True if the error is in the configuration or the file system's set-up rather than a
    /// passing fault (exit code 78, EX_CONFIG): a file of another format, a file locked by
    /// another daemon, or a path the daemon may not open (permission denied, a missing
    /// directory, a read-only file system).
    pub fn is_config(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            Self::Header { .. } | Self::V1 { .. } | Self::Locked { .. } => true,
            Self::Open { source, .. } => matches!(
                source.kind(),
                K::PermissionDenied
                    | K::NotFound
                    | K::NotADirectory
                    | K::IsADirectory
                    | K::ReadOnlyFilesystem
            ),
            _ => false,
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

/// The open CSV file, positioned for appending and locked against other daemons.
#[derive(Debug)]
pub struct CsvSink {
    path: PathBuf,
    file: Option<Box<dyn LogFile>>,
    /// The same open file description as `file` (a `dup`), holding its exclusive lock
    /// (`flock`, released when the sink is dropped or reopened). Kept apart because `file`
    /// may be wrapped by a test double. `None` only if a failed reopen could not take the lock
    /// back.
    lock: Option<Lock>,
    /// Length of the file known to be on disk; a failed append is cut back to it.
    synced_len: u64,
    fsync: FsyncPolicy,
    /// How long the last successful `fdatasync` of an append took (for metrics).
    last_sync: Option<std::time::Duration>,
    /// Whether the last append's write and sync succeeded in less than `inline_io_max`, so the
    /// next may run on the calling tokio worker (see [`CsvSink::append`]).
    fast_io: bool,
    /// [`INLINE_IO_MAX`] unless changed with [`CsvSink::with_inline_io_max`].
    inline_io_max: std::time::Duration,
    /// The buffer the last batch was concatenated into, reused by the next so a steady stream
    /// of batches does not allocate one each time; one grown past [`KEEP_BUF_BYTES`] is dropped.
    buf: Vec<u8>,
    /// Set when a failed append could not be cut back: no append until a clean reopen.
    refusing: Option<String>,
    /// Rows read from the file by the open that built the index (a reopen reads none).
    rows_read: u64,
    /// The key of the row chain.
    key: ChainKey,
    /// The hash of the last row written (the chain's head).
    head: [u8; 32],
    /// Rows in the file (for checkpoints), as far as this sink knows.
    rows: u64,
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

/// Bytes read at a time when looking for the header or the last line ending.
const PROBE: usize = 4096;

/// Read buffer of the start-up scan (one blocking-pool hop per this many bytes).
const SCAN_BUF: usize = 256 * 1024;

/// Whether the caller runs on a multi-threaded tokio runtime, where blocking one worker briefly
/// leaves the others serving. On a current-thread runtime it would stop everything.
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

fn header_line() -> String {
    HEADER.join(",")
}

/// A path shown plainly in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayPath(pub PathBuf);

impl std::fmt::Display for DisplayPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.display().fmt(f)
    }
}

/// An exclusive `flock` on an open file description, released on drop.
type Lock = Flock<std::fs::File>;

/// A freshly opened, locked and checked file.
struct Opened {
    file: std::fs::File,
    lock: Lock,
    len: u64,
    /// The hash of the last row ([`super::chain::GENESIS`] for a file of no rows).
    head: [u8; 32],
}

/// Whether `a` and `b` are the same file.
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Opens `path` for appending (created if missing) and takes its exclusive lock; true if it is
/// the file `previous` locks. With `previous` (a reopen) on the same file, its lock is released
/// first (flock conflicts between two open file descriptions even in one process) and taken
/// back if the new lock fails.
fn open_locked(
    path: &Path,
    previous: &mut Option<Lock>,
) -> Result<(std::fs::File, Lock, bool), StorageError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .create(true)
        .append(true)
        .open(path)
        .map_err(StorageError::open(path))?;
    let meta = file.metadata().map_err(StorageError::io(path))?;
    let dup = file.try_clone().map_err(StorageError::io(path))?;
    let same = match previous {
        Some(old) => same_file(&old.metadata().map_err(StorageError::io(path))?, &meta),
        None => false,
    };
    let mut unlocked = None;
    if let Some(old) = previous.take_if(|_| same) {
        match old.unlock() {
            Ok(file) => unlocked = Some(file),
            Err((old, errno)) => {
                *previous = Some(old);
                return Err(StorageError::io(path)(errno.into()));
            }
        }
    }
    match Flock::lock(dup, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok((file, lock, same)),
        Err((_, errno)) => {
            if let Some(old) = unlocked {
                match Flock::lock(old, FlockArg::LockExclusiveNonblock) {
                    Ok(old) => *previous = Some(old),
                    Err((_, again)) => {
                        error!(path = %path.display(), error = %again, "could not take the csv lock back");
                    }
                }
            }
            if errno == Errno::EWOULDBLOCK {
                Err(StorageError::Locked {
                    path: path.to_owned(),
                    holder: lock_holder(&meta),
                })
            } else {
                Err(StorageError::io(path)(errno.into()))
            }
        }
    }
}

/// The process holding a lock on the file of `meta`, from `/proc/locks` (Linux; best effort).
fn lock_holder(meta: &std::fs::Metadata) -> Option<u32> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let dev = meta.dev();
    let (major, minor) = (
        ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff),
        (dev & 0xff) | ((dev >> 12) & !0xff),
    );
    // `1: FLOCK  ADVISORY  WRITE 1234 08:01:56789 0 EOF`; waiters have a `->` after the number.
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") {
            return None;
        }
        let pid = fields.get(4)?.parse::<u32>().ok()?;
        let mut id = fields.get(5)?.split(':');
        let maj = u64::from_str_radix(id.next()?, 16).ok()?;
        let min = u64::from_str_radix(id.next()?, 16).ok()?;
        let ino = id.next()?.parse::<u64>().ok()?;
        (maj == major && min == minor && ino == meta.ino()).then_some(pid)
    })
}

/// Reads up to `len` bytes at `at`.
fn read_at(file: &std::fs::File, at: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut filled = 0;
    // Bounded: each pass reads at least one byte or ends.
    while filled < len {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// The length of the file up to and including its last `\n` (0 if none), reading backwards
/// from `len` a [`PROBE`] at a time: only the tail, however long the file.
fn complete_len(file: &std::fs::File, len: u64) -> std::io::Result<u64> {
    let mut end = len;
    // Bounded: `end` shrinks by up to a probe each pass.
    while end > 0 {
        let start = end.saturating_sub(PROBE as u64);
        let chunk = read_at(file, start, (end - start) as usize)?;
        if let Some(i) = memchr::memrchr(b'\n', &chunk) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The `row_hash` of the last line of the first `len` bytes (complete lines): the chain's
/// head; the genesis if the last line is the header, or has no hash (a warning: the chain
/// then restarts, and `verify` names the line).
fn last_row_hash(file: &std::fs::File, len: u64) -> std::io::Result<[u8; 32]> {
    let start = len.saturating_sub(PROBE as u64);
    let tail = read_at(file, start, (len - start) as usize)?;
    let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
    let line = match memchr::memrchr(b'\n', body) {
        Some(i) => &body[i + 1..],
        None if start == 0 => body,
        None => return Ok(super::chain::GENESIS),
    };
    if line.starts_with(b"course,") {
        return Ok(super::chain::GENESIS);
    }
    let hash = super::chain::split_row(line)
        .and_then(|(_, cell)| std::str::from_utf8(cell).ok())
        .and_then(super::chain::unhex);
    Ok(hash.unwrap_or_else(|| {
        warn!("the csv's last row has no row_hash; the chain starts over after it (verify will name the row)");
        super::chain::GENESIS
    }))
}

impl Opened {
    /// Opens, locks and checks `path`: an existing file must start with our header; a torn last
    /// line (a crash mid-write) is cut off with a warning; a new or empty file gets the header.
    /// Reads only the first line and the tail, never the rows.
    ///
    /// With `previous` (a reopen) and `cut_to`, the file is first cut back to `cut_to` if it is
    /// still the file `previous` locks (the sink was refusing appends after a failed cut).
    fn open(
        path: &Path,
        previous: &mut Option<Lock>,
        cut_to: Option<u64>,
    ) -> Result<Self, StorageError> {
        let (file, lock, same) = open_locked(path, previous)?;
        let mut opened = Self {
            file,
            lock,
            len: 0,
            head: super::chain::GENESIS,
        };
        match opened.check(path, same.then_some(cut_to).flatten()) {
            Ok(()) => Ok(opened),
            Err(e) => {
                // Reopening the same file released the old lock: keep this one in its place
                // (a lock on the same file, so other daemons stay out).
                if same {
                    *previous = Some(opened.lock);
                }
                Err(e)
            }
        }
    }

    /// The checks of [`Opened::open`] on the freshly locked file, after cutting it back to
    /// `cut_to` if given.
    fn check(&mut self, path: &Path, cut_to: Option<u64>) -> Result<(), StorageError> {
        let io = StorageError::io(path);
        let mut len = self.file.metadata().map_err(io)?.len();
        if let Some(cut) = cut_to.filter(|&cut| len > cut) {
            warn!(path = %path.display(), dropped_bytes = len - cut, "cutting off what a failed write left");
            self.truncate_to(path, cut)?;
            len = cut;
        }
        let header = header_line();
        let head =
            read_at(&self.file, 0, PROBE.min(len as usize)).map_err(StorageError::io(path))?;
        let torn_header = len > 0
            && !head.contains(&b'\n')
            && header.as_bytes().starts_with(&head)
            && len == head.len() as u64;
        if len == 0 || torn_header {
            // New, or a crash cut the header itself short: start the file afresh.
            if torn_header {
                warn!(path = %path.display(), "csv holds only part of its header; rewriting it");
                self.truncate_to(path, 0)?;
            }
            return self.create_header(path);
        }
        let first_line_end = memchr::memchr(b'\n', &head).unwrap_or(head.len());
        let first = String::from_utf8_lossy(&head[..first_line_end]);
        let first = first.trim_end_matches('\r');
        if first == V1_HEADER.join(",") {
            return Err(StorageError::V1 {
                path: DisplayPath(path.to_owned()),
            });
        }
        if first != header {
            return Err(StorageError::Header {
                path: path.to_owned(),
                found: first.chars().take(200).collect(),
                expected: header,
            });
        }
        self.len = len;
        let keep = complete_len(&self.file, len).map_err(StorageError::io(path))?;
        if keep < len {
            warn!(
                path = %path.display(),
                dropped_bytes = len - keep,
                "csv ends with a torn line (crash during a write?); cutting it off"
            );
            self.truncate_to(path, keep)?;
            if keep == 0 {
                self.create_header(path)?;
            }
        }
        self.head = last_row_hash(&self.file, self.len).map_err(StorageError::io(path))?;
        Ok(())
    }

    fn create_header(&mut self, path: &Path) -> Result<(), StorageError> {
        let line = format!("{}\n", header_line());
        self.file
            .write_all(line.as_bytes())
            .map_err(StorageError::io(path))?;
        self.file.sync_all().map_err(StorageError::io(path))?;
        self.len = line.len() as u64;
        sync_parent_dir(path)?;
        info!(path = %path.display(), "created attendance csv with header");
        Ok(())
    }

    fn truncate_to(&mut self, path: &Path, len: u64) -> Result<(), StorageError> {
        self.file.set_len(len).map_err(StorageError::io(path))?;
        self.file.sync_all().map_err(StorageError::io(path))?;
        self.len = len;
        Ok(())
    }
}

fn join_error(path: &Path) -> impl FnOnce(tokio::task::JoinError) -> StorageError + '_ {
    move |e| StorageError::io(path)(std::io::Error::other(e))
}

impl CsvSink {
    /// Opens `path` for appending, creating it with a header if it is missing or empty, and
    /// takes an exclusive lock on it (released when the sink is dropped or reopened).
    ///
    /// An existing file must start with our header. A torn last line (a crash mid-write) is cut
    /// off with a warning. Only the header and the tail are read; [`open_csv`] also builds the
    /// dedupe index from the rows.
    ///
    /// # Errors
    /// [`StorageError::Header`] for a file of another format, [`StorageError::Locked`] if
    /// another daemon holds the file, [`StorageError::Open`] if it cannot be opened,
    /// [`StorageError::Io`] otherwise.
    pub async fn open(path: &Path, fsync: FsyncPolicy) -> Result<Self, StorageError> {
        let owned = path.to_owned();
        let opened = tokio::task::spawn_blocking(move || Opened::open(&owned, &mut None, None))
            .await
            .map_err(join_error(path))??;
        Ok(Self {
            path: path.to_owned(),
            file: Some(Box::new(opened.file)),
            lock: Some(opened.lock),
            synced_len: opened.len,
            fsync,
            last_sync: None,
            fast_io: false,
            inline_io_max: INLINE_IO_MAX,
            buf: Vec::new(),
            refusing: None,
            rows_read: 0,
            key: ChainKey::new([0; 32]),
            head: opened.head,
            rows: 0,
        })
    }

    /// Chains the rows with `key` (the state directory's `attendanced.key`; without, a key of
    /// zeros, which only tests use).
    #[must_use]
    pub fn with_key(mut self, key: ChainKey) -> Self {
        self.key = key;
        self
    }

    /// The chain's head: the hash of the last row, and the number of rows.
    pub fn head(&self) -> ([u8; 32], u64) {
        (self.head, self.rows)
    }

    /// Writes a checkpoint (row count and head) beside the file, and logs it.
    ///
    /// # Errors
    /// [`StorageError::Io`] if it could not be written.
    pub async fn checkpoint(&mut self, reason: CheckpointReason) -> Result<(), StorageError> {
        let (path, rows, head) = (self.path.clone(), self.rows, self.head);
        tokio::task::spawn_blocking(move || {
            super::chain::write_checkpoint(&path, reason, rows, &head)
        })
        .await
        .map_err(join_error(&self.path))?
        .map_err(|e| StorageError::io(&self.path)(std::io::Error::other(e.to_string())))?;
        info!(
            path = %self.path.display(),
            reason = reason.as_str(),
            rows,
            head = %super::chain::hex(&head),
            "csv checkpoint"
        );
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

    /// The sync policy this sink was opened with.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.fsync
    }

    /// Length of the file known to be durable.
    pub fn synced_len(&self) -> u64 {
        self.synced_len
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows read from the file to build the dedupe index ([`open_csv`]); a reopen reads none.
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// Why appends are refused (a failed write could not be cut back), until a clean reopen.
    pub fn refusing(&self) -> Option<&str> {
        self.refusing.as_deref()
    }

    fn lost(&self) -> StorageError {
        StorageError::io(&self.path)(std::io::Error::other("file lost after a failed write"))
    }

    /// Appends `rows` (encoded by [`encode_row`]) as one write, then syncs once (per the fsync
    /// policy). On failure, the file is cut back to its last synced length so no
    /// unacknowledged bytes stay behind; if that cut fails too, every later append is refused
    /// ([`StorageError::Refusing`]) until a successful [`CsvSink::reopen`].
    ///
    /// The write and sync run on a blocking-pool thread, or, on a multi-threaded runtime while
    /// the previous append took less than [`INLINE_IO_MAX`] (see
    /// [`CsvSink::with_inline_io_max`]), right here on the calling worker.
    ///
    /// # Errors
    /// [`StorageError`] if writing or syncing failed; nothing of the batch is kept.
    pub async fn append<R: AsRef<[u8]>>(&mut self, rows: &[R]) -> Result<(), StorageError> {
        if let Some(reason) = &self.refusing {
            return Err(StorageError::Refusing {
                path: self.path.clone(),
                reason: reason.clone(),
            });
        }
        let mut bytes = std::mem::take(&mut self.buf);
        bytes.clear();
        let (head_before, rows_before) = (self.head, self.rows);
        let mut hex = [0u8; super::chain::HASH_HEX];
        for row in rows {
            // Each row comes without its hash: chained here, in the one writer, in file order.
            let row = row.as_ref();
            let row = row.strip_suffix(b"\n").unwrap_or(row);
            self.head = self.key.row_hash(&self.head, row);
            bytes.extend_from_slice(row);
            bytes.push(b',');
            super::chain::hex_into(&self.head, &mut hex);
            bytes.extend_from_slice(&hex);
            bytes.push(b'\n');
        }
        self.rows += rows.len() as u64;
        let mut file = self.file.take().ok_or_else(|| self.lost())?;
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
            let mut cut_failed = None;
            if let Err(e) = &result {
                // Do not trust the page cache after a failed write or sync (a retried fsync can
                // falsely succeed once the kernel dropped the dirty pages): cut off everything
                // since the last good sync, so the batch is rewritten whole or not at all.
                if let Err(cut) = file.truncate(synced_len).and_then(|()| file.sync_all()) {
                    error!(error = %e, truncate_error = %cut, "could not cut the csv back after a failed write; refusing appends until it is reopened");
                    cut_failed = Some(format!("{e}; cutting it back failed: {cut}"));
                }
            }
            let took = started.elapsed();
            (file, bytes, result.map(|()| synced_in), cut_failed, took)
        };
        let (file, bytes, result, cut_failed, took) = if self.fast_io && on_multi_thread_runtime() {
            work()
        } else {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(join_error(&self.path))?
        };
        self.fast_io = result.is_ok() && took < self.inline_io_max;
        self.file = Some(file);
        self.refusing = cut_failed;
        let written = bytes.len() as u64;
        if bytes.capacity() <= KEEP_BUF_BYTES {
            self.buf = bytes;
        }
        let synced_in = match result {
            Ok(s) => s,
            Err(e) => {
                // Nothing of the batch is kept: neither is its part of the chain.
                self.head = head_before;
                self.rows = rows_before;
                return Err(StorageError::io(&self.path)(e));
            }
        };
        self.synced_len += written;
        self.last_sync = synced_in;
        Ok(())
    }

    /// Syncs everything written so far (the final step of a shutdown).
    ///
    /// # Errors
    /// [`StorageError::Io`] if the sync failed.
    pub async fn sync(&mut self) -> Result<(), StorageError> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        let (file, result) = tokio::task::spawn_blocking(move || {
            let r = file.sync_all();
            (file, r)
        })
        .await
        .map_err(join_error(&self.path))?;
        self.file = Some(file);
        result.map_err(StorageError::io(&self.path))
    }

    /// Finishes the current file (synced) and opens the path afresh: after a rename (log
    /// rotation) a new file with a header begins, locked in place of the old one, whose lock
    /// is released. Only the new file's header and tail are read. A successful reopen also
    /// ends a refusal after a failed cut (the same file is first cut back to its last synced
    /// length). On failure the old file stays in use.
    ///
    /// # Errors
    /// Why the old file could not be synced or the new one opened.
    pub async fn reopen(&mut self) -> Result<(), StorageError> {
        match self.sync().await {
            Ok(()) => {}
            // A refusing sink's file is cut back below if it is still the same file.
            Err(e) if self.refusing.is_some() => {
                warn!(error = %e, "sync of the refused csv failed; reopening anyway");
            }
            Err(e) => return Err(e),
        }
        let mut previous = self.lock.take();
        let cut_to = self.refusing.is_some().then_some(self.synced_len);
        let path = self.path.clone();
        let (opened, previous) = tokio::task::spawn_blocking(move || {
            let opened = Opened::open(&path, &mut previous, cut_to);
            (opened, previous)
        })
        .await
        .map_err(join_error(&self.path))?;
        let opened = match opened {
            Ok(opened) => opened,
            Err(e) => {
                self.lock = previous;
                return Err(e);
            }
        };
        // The old file's lock goes now (dropping it unlocks), even if a test double keeps
        // its descriptor open.
        drop(previous);
        self.file = Some(Box::new(opened.file));
        self.lock = Some(opened.lock);
        self.synced_len = opened.len;
        self.fast_io = false;
        self.refusing = None;
        self.head = opened.head;
        self.rows = count_rows(&self.path).await.unwrap_or(0);
        info!(path = %self.path.display(), "csv reopened");
        Ok(())
    }
}

impl BatchSink for CsvSink {
    type Row = Vec<u8>;

    fn encode(mark: &Mark) -> Vec<u8> {
        encode_mark(mark)
    }

    async fn commit(&mut self, rows: &[Vec<u8>]) -> Result<Held, StorageError> {
        // A CSV has no unique key: every row is new (the writer's index found no earlier one).
        self.append(rows).await.map(|()| Vec::new())
    }

    async fn reopen(&mut self) -> Result<(), StorageError> {
        CsvSink::reopen(self).await
    }

    async fn sync(&mut self) -> Result<(), StorageError> {
        CsvSink::sync(self).await
    }

    fn last_sync(&self) -> Option<std::time::Duration> {
        self.last_sync
    }

    fn commit_delay(&self) -> bool {
        self.fsync == FsyncPolicy::Always
    }

    async fn checkpoint(&mut self, reason: CheckpointReason) -> Result<(), StorageError> {
        CsvSink::checkpoint(self, reason).await
    }

    fn head(&self) -> Option<([u8; 32], u64)> {
        Some(CsvSink::head(self))
    }
}

/// Rows in the file at `path` (its lines but the header), read a buffer at a time.
async fn count_rows(path: &Path) -> std::io::Result<u64> {
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path).await?;
    let mut buf = vec![0u8; SCAN_BUF];
    let mut lines = 0u64;
    // Bounded by the file's length.
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
    }
    Ok(lines.saturating_sub(1))
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

/// Opens the CSV at `path` ([`CsvSink::open`]) and builds the dedupe index from its rows of the
/// local days (in `tz`) the index holds: today and the day before.
///
/// The rows are streamed through csv-async a buffer at a time, never read whole; rows of other
/// days are skipped after a look at their `marked_at` cell, so a file of a million old rows
/// opens in little memory. Rows that do not parse are skipped with a warning (a hand-edited
/// file should not stop the daemon).
///
/// # Errors
/// As [`CsvSink::open`]; [`StorageError::Csv`] if reading the rows failed.
pub async fn open_csv(
    path: &Path,
    fsync: FsyncPolicy,
    tz: jiff::tz::TimeZone,
) -> Result<(CsvSink, Index), StorageError> {
    let mut sink = CsvSink::open(path, fsync).await?;
    let index = Index::new(tz);
    sink.rows_read = scan(&sink.path, sink.synced_len, &index, Timestamp::now()).await?;
    sink.rows = sink.rows_read;
    info!(path = %path.display(), rows = sink.rows_read, marks_held = index.len(), "attendance csv open");
    Ok((sink, index))
}

/// Streams the rows of the first `len` bytes of `path` into `index`: those whose mark falls on
/// the local day of `now` or the day before. Returns the number of rows read.
async fn scan(path: &Path, len: u64, index: &Index, now: Timestamp) -> Result<u64, StorageError> {
    let tz = index.time_zone();
    let today = DaySpan::of(jiff_timestamp(now), tz);
    let window = today.and_then(|t| {
        let eve = DaySpan::of_date(t.date.yesterday().ok()?, tz)?;
        Some((eve.start, t.end))
    });
    let Some((from, to)) = window else {
        return Ok(0);
    };
    let from_wire = from_millis(from).map(Timestamp::to_wire);
    let file = tokio::fs::File::open(path)
        .await
        .map_err(StorageError::io(path))?;
    let reader = tokio::io::BufReader::with_capacity(SCAN_BUF, file.take(len));
    let mut rows = csv_async::AsyncReaderBuilder::new()
        .has_headers(true)
        .create_reader(reader);
    let mut record = csv_async::ByteRecord::new();
    let (mut read, mut bad) = (0u64, 0u64);
    // Bounded: every record takes at least one byte of the file.
    for _ in 0..=len {
        match rows.read_byte_record(&mut record).await {
            Ok(false) => break,
            Ok(true) => {
                read += 1;
                if !keep_row(&record, from_wire.as_deref(), (from, to), index) {
                    continue;
                }
            }
            Err(e) if matches!(e.kind(), csv_async::ErrorKind::Io(_)) => {
                return Err(StorageError::Csv {
                    path: path.to_owned(),
                    source: e,
                });
            }
            Err(e) => {
                read += 1;
                bad += 1;
                if bad <= 5 {
                    warn!(path = %path.display(), error = %e, "skipping unreadable csv row");
                }
            }
        }
    }
    if bad > 5 {
        warn!(path = %path.display(), bad, "skipped unreadable csv rows");
    }
    Ok(read)
}

fn from_millis(ms: i64) -> Option<Timestamp> {
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    Some(Timestamp::from_datetime(dt))
}

/// Adds `record` to `index` if its mark falls in [from, to) (Unix milliseconds); false if the
/// row is of another day or not a mark.
fn keep_row(
    record: &csv_async::ByteRecord,
    from_wire: Option<&str>,
    (from, to): (i64, i64),
    index: &Index,
) -> bool {
    let Some(marked_at) = record.get(5) else {
        return false;
    };
    // Our own rows hold fixed-width UTC times, which sort as text: an old row is skipped
    // without parsing its time (most of a large file is old rows).
    if from_wire.is_some_and(|from_wire| {
        marked_at.len() == from_wire.len()
            && marked_at.last() == Some(&b'Z')
            && marked_at < from_wire.as_bytes()
    }) {
        return false;
    }
    let text = |i| record.get(i).and_then(|b| std::str::from_utf8(b).ok());
    let Some(at) = text(5).and_then(|s| s.parse::<Timestamp>().ok()) else {
        return false;
    };
    let ms = i64::try_from(at.unix_millis()).unwrap_or(i64::MAX);
    if !(from..to).contains(&ms) {
        return false;
    }
    let (Some(course), Some(division), Some(name), Some(roll)) =
        (text(0), text(1), text(2), text(3))
    else {
        return false;
    };
    match StudentId::from_parts(course, division, name, roll) {
        Ok(id) => {
            index.insert(&id.class, &id.roll, at);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
