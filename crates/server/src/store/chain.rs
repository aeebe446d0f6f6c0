//! The keyed hash chain of the attendance CSV: each row's last cell, `row_hash`, is
//!
//! ```text
//! row_hash = hex(HMAC-SHA-256(key, previous row's hash (32 bytes) || the row's bytes))
//! ```
//!
//! where "the row's bytes" are the line exactly as written, without the `,` before the hash,
//! the hash and the line ending; the first row's previous hash is 32 zero bytes. The key is
//! 32 random bytes in `attendanced.key` in the state directory (mode 0600), never in the file.
//!
//! What it proves: whoever edits a cell, deletes, moves or inserts a row breaks the chain at
//! that row, and cannot mend it without the key (a bare SHA-256 chain anyone could recompute).
//! What it does not: deleting the *last* rows leaves a valid, shorter chain, so the daemon also
//! writes checkpoints — the row count and head hash — to `<csv>.checkpoints` at every shutdown,
//! rotation and session close, and logs them; `verify` compares the file with the last one.
//! Whoever holds the key can rewrite the whole file: keep the key where the CSV's editors
//! cannot read it.

use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The previous hash of the first row.
pub const GENESIS: [u8; 32] = [0; 32];
/// Bytes of a chain key.
pub const KEY_BYTES: usize = 32;
/// Hex digits of a row hash.
pub const HASH_HEX: usize = 64;

/// A chain key (32 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct ChainKey([u8; KEY_BYTES]);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(<hidden>)")
    }
}

impl ChainKey {
    /// A key of these bytes.
    pub fn new(bytes: [u8; KEY_BYTES]) -> Self {
        Self(bytes)
    }

    /// The hash of a row of `bytes` after a row hashed `prev`.
    pub fn row_hash(&self, prev: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
        // HMAC takes a key of any length: this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return GENESIS;
        };
        mac.update(prev);
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// The key in `path`, created with 32 random bytes (mode 0600) if missing.
    ///
    /// # Errors
    /// [`ChainError`] if it cannot be read or created, is not 32 bytes, or others may read it.
    pub fn load_or_create(path: &Path) -> Result<Self, ChainError> {
        let bytes =
            crate::ops::private_file::load_or_create(path, KEY_BYTES).map_err(ChainError::Key)?;
        let key: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| ChainError::KeyLength {
            path: path.to_owned(),
        })?;
        Ok(Self(key))
    }

    /// The key in `path`, which must exist.
    ///
    /// # Errors
    /// [`ChainError`] if it cannot be read or is not a key.
    pub fn load(path: &Path) -> Result<Self, ChainError> {
        let bytes = crate::ops::private_file::load(path).map_err(ChainError::Key)?;
        let key: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| ChainError::KeyLength {
            path: path.to_owned(),
        })?;
        Ok(Self(key))
    }
}

/// `hash` as 64 lowercase hex digits.
pub fn hex(hash: &[u8; 32]) -> String {
    let mut out = [0u8; HASH_HEX];
    hex_into(hash, &mut out);
    out.iter().map(|&b| char::from(b)).collect()
}

/// `hash` as 64 lowercase hex digits into `out`, without an allocation (once per row).
pub fn hex_into(hash: &[u8; 32], out: &mut [u8; HASH_HEX]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in hash.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// 64 hex digits as a hash.
pub fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != HASH_HEX {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| char::from(c).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// A line of the file split into the hashed bytes and its hash cell.
pub fn split_row(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = memchr::memrchr(b',', line)?;
    Some((&line[..at], &line[at + 1..]))
}

/// Why the chain could not be checked, or its key had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The key file could not be read or made.
    #[error(transparent)]
    Key(crate::ops::private_file::PrivateFileError),
    /// The key file does not hold a key.
    #[error("{path} does not hold a 32-byte chain key")]
    KeyLength {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an attendance CSV of this version.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Why a session's record set was checkpointed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointReason {
    /// The daemon shut down.
    Shutdown,
    /// The file was reopened (rotation).
    Rotate,
    /// A scheduled session closed.
    SessionClose,
    /// `attendanced migrate` wrote the file.
    Migrate,
}

impl CheckpointReason {
    /// The word in the checkpoint file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::Rotate => "rotate",
            Self::SessionClose => "session-close",
            Self::Migrate => "migrate",
        }
    }
}

/// The checkpoint file of the CSV at `csv`.
pub fn checkpoints_path(csv: &Path) -> PathBuf {
    let mut name = csv.file_name().unwrap_or_default().to_os_string();
    name.push(".checkpoints");
    csv.with_file_name(name)
}

/// Appends the checkpoint `rows,head` to `csv`'s checkpoint file, synced.
///
/// # Errors
/// [`ChainError::Io`] if it could not be written.
pub fn write_checkpoint(
    csv: &Path,
    reason: CheckpointReason,
    rows: u64,
    head: &[u8; 32],
) -> Result<(), ChainError> {
    let path = checkpoints_path(csv);
    let io = |source| ChainError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    let at = attendance_protocol::Timestamp::now();
    writeln!(file, "{at},{},{rows},{}", reason.as_str(), hex(head)).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(())
}

/// One checkpoint read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// When (RFC 3339).
    pub at: String,
    /// Rows the file had.
    pub rows: u64,
    /// The hash of its last row then.
    pub head: [u8; 32],
}

/// The last well-formed checkpoint of `csv`, if it has any.
fn last_checkpoint(csv: &Path) -> Option<Checkpoint> {
    let text = std::fs::read_to_string(checkpoints_path(csv)).ok()?;
    text.lines().rev().find_map(|line| {
        let mut parts = line.split(',');
        let at = parts.next()?.to_owned();
        let _reason = parts.next()?;
        let rows = parts.next()?.parse().ok()?;
        let head = unhex(parts.next()?)?;
        Some(Checkpoint { at, rows, head })
    })
}

/// What `verify` found in a sound file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Rows checked.
    pub rows: u64,
    /// The last row's hash (the genesis for an empty file).
    pub head: [u8; 32],
    /// The last checkpoint, which the file agrees with, if there is one.
    pub checkpoint: Option<Checkpoint>,
}

/// Where a file's chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The 1-based line of the file (the header is line 1), or of the end of the file.
    pub line: u64,
    /// What is wrong.
    pub what: String,
}

/// A whole attendance CSV of `rows` (each a mark's row without its hash, as
/// [`super::encode_mark`] makes it and an external store keeps it): the header, then each row
/// with its hash chained from [`GENESIS`] under `key`, exactly as the daemon appends them, so
/// [`verify`] accepts the file (`attendanced export`).
pub fn chained_csv<R: AsRef<str>>(key: &ChainKey, rows: &[R]) -> String {
    let mut out = super::HEADER.join(",");
    out.push('\n');
    let mut head = GENESIS;
    for row in rows {
        let row = row.as_ref();
        let row = row.strip_suffix('\n').unwrap_or(row);
        head = key.row_hash(&head, row.as_bytes());
        out.push_str(row);
        out.push(',');
        out.push_str(&hex(&head));
        out.push('\n');
    }
    out
}

/// Checks every row of the CSV at `path` with `key`, and the file against its last checkpoint.
///
/// # Errors
/// [`ChainError`] if the file cannot be read or is not of this version; `Ok(Err(broken))` for
/// the first broken row.
pub fn verify(path: &Path, key: &ChainKey) -> Result<Result<Verified, Broken>, ChainError> {
    let io = |source| ChainError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    // Bounded: each pass reads a line or ends.
    let n = reader.read_until(b'\n', &mut line).map_err(io)?;
    let header = String::from_utf8_lossy(&line).trim_end().to_owned();
    if n == 0 || header != super::csv::HEADER.join(",") {
        let message = if header == super::csv::V1_HEADER.join(",") {
            format!(
                "this file has the previous header (no row hashes); convert it with attendanced migrate {}",
                path.display()
            )
        } else {
            format!("not an attendance CSV of this version (header {header:?})")
        };
        return Err(ChainError::Format {
            path: path.to_owned(),
            message,
        });
    }
    let checkpoint = last_checkpoint(path);
    let mut prev = GENESIS;
    let mut rows = 0u64;
    let mut at_checkpoint = None;
    let mut number = 1u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 {
            break;
        }
        number += 1;
        if line.last() != Some(&b'\n') {
            return Ok(Err(Broken {
                line: number,
                what: "the last line is cut short (no line ending)".to_owned(),
            }));
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let Some((bytes, cell)) = split_row(text) else {
            return Ok(Err(Broken {
                line: number,
                what: "no row_hash cell".to_owned(),
            }));
        };
        let Some(given) = std::str::from_utf8(cell).ok().and_then(unhex) else {
            return Ok(Err(Broken {
                line: number,
                what: "the row_hash cell is not 64 hex digits (a row added by hand?)".to_owned(),
            }));
        };
        let want = key.row_hash(&prev, bytes);
        if want != given {
            let what = if key.row_hash(&GENESIS, bytes) == given && rows > 0 {
                "the row's hash chains from no row before it: rows were deleted or moved before this line, or it was moved here".to_owned()
            } else {
                "the row's hash does not match: a cell of this row was edited, a row before it was deleted or moved, or the row was written without the key".to_owned()
            };
            return Ok(Err(Broken { line: number, what }));
        }
        prev = given;
        rows += 1;
        if checkpoint.as_ref().is_some_and(|c| c.rows == rows) {
            at_checkpoint = Some(prev);
        }
    }
    if let Some(c) = &checkpoint {
        if rows < c.rows {
            return Ok(Err(Broken {
                line: number + 1,
                what: format!(
                    "{} row(s) missing at the end: the checkpoint of {} counted {} rows, the file has {rows}",
                    c.rows - rows,
                    c.at,
                    c.rows
                ),
            }));
        }
        let matches = if c.rows == 0 {
            c.head == GENESIS
        } else {
            at_checkpoint == Some(c.head)
        };
        if !matches {
            return Ok(Err(Broken {
                line: c.rows + 1,
                what: format!(
                    "row {} does not end where the checkpoint of {} says it did (head {})",
                    c.rows,
                    c.at,
                    hex(&c.head)
                ),
            }));
        }
    }
    Ok(Ok(Verified {
        rows,
        head: prev,
        checkpoint,
    }))
}

/// Converts the previous version's file at `path` to this one: the original is kept beside it
/// as `<path>.v1`, old rows keep their values (the new cells empty), the chain starts over
/// them, and a checkpoint is written. The number of rows converted.
///
/// # Errors
/// [`ChainError`] if the file is not of the previous version, `<path>.v1` exists already, or
/// it cannot be read or written.
pub fn migrate(path: &Path, key: &ChainKey) -> Result<u64, ChainError> {
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| ChainError::Io { path: p, source }
    };
    let text = std::fs::read(path).map_err(io(path))?;
    let mut lines = text.split_inclusive(|b| *b == b'\n');
    let header = lines
        .next()
        .map(|l| String::from_utf8_lossy(l).trim_end().to_owned());
    if header.as_deref() != Some(super::csv::V1_HEADER.join(",").as_str()) {
        return Err(ChainError::Format {
            path: path.to_owned(),
            message: format!(
                "not a file of the previous version (header {:?}); nothing to migrate",
                header.unwrap_or_default()
            ),
        });
    }
    let mut backup = path.as_os_str().to_owned();
    backup.push(".v1");
    let backup = PathBuf::from(backup);
    if backup.exists() {
        return Err(ChainError::Format {
            path: path.to_owned(),
            message: format!("{} exists already; move it away first", backup.display()),
        });
    }
    let mut out = Vec::with_capacity(text.len() + text.len() / 2);
    out.extend_from_slice(super::csv::HEADER.join(",").as_bytes());
    out.push(b'\n');
    let mut prev = GENESIS;
    let mut rows = 0u64;
    for line in lines {
        let Some(row) = line.strip_suffix(b"\n") else {
            // A torn last line (a crash): the daemon would cut it off too.
            break;
        };
        let row = row.strip_suffix(b"\r").unwrap_or(row);
        if row.is_empty() {
            continue;
        }
        let start = out.len();
        out.extend_from_slice(row);
        // minutes_late, minutes_attended, session_start: unknown for old rows.
        out.extend_from_slice(b",,,");
        let hash = key.row_hash(&prev, &out[start..]);
        out.push(b',');
        out.extend_from_slice(hex(&hash).as_bytes());
        out.push(b'\n');
        prev = hash;
        rows += 1;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(".migrating");
    let temp = PathBuf::from(temp);
    std::fs::copy(path, &backup).map_err(io(&backup))?;
    {
        let mut f = std::fs::File::create(&temp).map_err(io(&temp))?;
        f.write_all(&out).map_err(io(&temp))?;
        f.sync_all().map_err(io(&temp))?;
    }
    std::fs::rename(&temp, path).map_err(io(path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    write_checkpoint(path, CheckpointReason::Migrate, rows, &prev)?;
    Ok(rows)
}

#[cfg(test)]
mod tests;
