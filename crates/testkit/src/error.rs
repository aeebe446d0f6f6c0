//! What can go wrong starting, watching or stopping a child process.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// A failure of the kit; the messages name the program and end with its log's last lines where
/// those explain it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KitError {
    /// The program could not be started (missing, not executable, …).
    #[error("cannot start {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The error from `exec`.
        #[source]
        source: io::Error,
    },
    /// A descriptor could not be passed to the child.
    #[error("cannot pass a descriptor to the child: {0}")]
    Descriptor(String),
    /// No line containing `needle` came within `waited` (or the output ended first).
    #[error("no line containing {needle:?} within {waited:?}; the output ends with:\n{tail}")]
    NoLine {
        /// What was looked for.
        needle: String,
        /// How long it was waited for.
        waited: Duration,
        /// The last lines the process wrote.
        tail: String,
    },
    /// A `listening on` line without a socket address after it.
    #[error("no address in {0:?}")]
    NoAddress(String),
    /// The process did not exit in time; it has been killed.
    #[error("the process did not exit within {0:?} (killed)")]
    NoExit(Duration),
    /// Waiting for the process failed.
    #[error("waiting for the process")]
    Wait(#[from] io::Error),
    /// A signal could not be sent.
    #[error("cannot signal the process")]
    Signal(#[from] nix::errno::Errno),
    /// `cargo build` for the binaries under test failed or could not run.
    #[error("building {what}: {why}")]
    Build {
        /// The packages.
        what: String,
        /// What went wrong.
        why: String,
    },
    /// The binary is not where cargo puts it.
    #[error("{} was not built (run the tests through cargo)", .0.display())]
    NotBuilt(PathBuf),
}
