//! Small secret files of the state directory (the chain key, class code secrets): created with
//! random bytes at mode 0600 (never readable by others, even for a moment), refused when their
//! permissions let group or others read them.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Why a private file could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateFileError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read it.
    #[error("{path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// It holds fewer bytes than a secret needs.
    #[error("{path} holds {len} bytes, fewer than a secret needs")]
    Short {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
}

/// The bytes of the private file at `path`, which must exist.
///
/// # Errors
/// [`PrivateFileError`] if it cannot be read, or others may read it.
pub fn load(path: &Path) -> Result<Vec<u8>, PrivateFileError> {
    let io = |source| PrivateFileError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    std::fs::read(path).map_err(io)
}

/// The bytes of the private file at `path`; if it is missing, it is created (mode 0600,
/// synced) with `len` random bytes.
///
/// # Errors
/// [`PrivateFileError`] if it cannot be read or created, others may read it, or it is shorter
/// than 16 bytes.
pub fn load_or_create(path: &Path, len: usize) -> Result<Vec<u8>, PrivateFileError> {
    let io = |source| PrivateFileError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(_) => {
            let bytes = load(path)?;
            if bytes.len() < 16 {
                return Err(PrivateFileError::Short {
                    path: path.to_owned(),
                    len: bytes.len(),
                });
            }
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = vec![0u8; len];
            getrandom::fill(&mut bytes).map_err(|e| io(std::io::Error::other(e.to_string())))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(bytes)
        }
        Err(e) => Err(io(e)),
    }
}
