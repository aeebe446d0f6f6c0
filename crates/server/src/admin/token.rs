//! The administrator's token: loaded from a private file (or created there at first start) and
//! compared in constant time.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq as _;

/// Why the admin token could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The file could not be read or created.
    #[error("admin token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file can be read by others than its owner.
    #[error(
        "admin token file {path} is readable by group or others (mode {mode:o}); run: chmod 600 {path}"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds no usable token.
    #[error(
        "admin token file {0} holds no token (one line of at least 16 visible characters expected)"
    )]
    Empty(PathBuf),
    /// No randomness was available to create a token.
    #[error("cannot generate an admin token: {0}")]
    Random(String),
}

/// The secret that `SHUTDOWN <token>` must present.
pub struct AdminToken(Vec<u8>);

/// Never shows the secret.
impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// How the token was obtained, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// Read from an existing file.
    Loaded,
    /// Generated and written to a new file.
    Created,
}

impl AdminToken {
    /// Reads the token from `path`; if the file does not exist and `create` is true, writes a new
    /// random token there with mode 0600.
    ///
    /// # Errors
    /// [`AdminError`]; a file readable by group or others is refused.
    pub fn load_or_create(path: &Path, create: bool) -> Result<(Self, TokenSource), AdminError> {
        let io = |source| AdminError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(AdminError::Permissions {
                        path: path.to_owned(),
                        mode,
                    });
                }
                let text = std::fs::read_to_string(path).map_err(io)?;
                let token = text.trim();
                if token.chars().count() < 16 || token.chars().any(char::is_whitespace) {
                    return Err(AdminError::Empty(path.to_owned()));
                }
                Ok((Self(token.as_bytes().to_vec()), TokenSource::Loaded))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).map_err(|e| AdminError::Random(e.to_string()))?;
                let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(format!("{token}\n").as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(io)?;
                Ok((Self(token.into_bytes()), TokenSource::Created))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A token from a known value (tests, and tokens handed in by other means).
    pub fn from_secret(secret: &str) -> Self {
        Self(secret.as_bytes().to_vec())
    }

    /// True if `candidate` is the token. The comparison takes the same time wherever the first
    /// difference is.
    pub fn verify(&self, candidate: &str) -> bool {
        let candidate = candidate.as_bytes();
        candidate.len() == self.0.len() && bool::from(self.0.ct_eq(candidate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_token_then_loads_the_same_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t");
        let (a, source) = AdminToken::load_or_create(&path, true).expect("create");
        assert_eq!(source, TokenSource::Created);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, source) = AdminToken::load_or_create(&path, true).expect("load");
        assert_eq!(source, TokenSource::Loaded);
        let secret = std::fs::read_to_string(&path).expect("read");
        assert!(a.verify(secret.trim()) && b.verify(secret.trim()));
        assert!(!a.verify("wrong") && !a.verify(""));
    }

    #[test]
    fn refuses_a_token_file_others_can_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t");
        std::fs::write(&path, "0123456789abcdef0123\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            AdminToken::load_or_create(&path, true),
            Err(AdminError::Permissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn a_missing_named_file_is_an_error_when_not_creating() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(AdminToken::load_or_create(&dir.path().join("nope"), false).is_err());
    }
}
