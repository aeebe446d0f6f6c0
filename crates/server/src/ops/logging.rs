//! Logging to standard error: text (colour only on a terminal without `NO_COLOR`, no timestamp
//! when standard error is the journal) or JSON lines, with a filter that a reload can change.

use std::io::IsTerminal as _;

use tracing::error;
use tracing_subscriber::EnvFilter;

use crate::ops::cli::{Cli, LogFormat};

/// Changes the log filter of the running subscriber (`log_level`), unless `RUST_LOG` rules.
pub struct LogFilter {
    set: Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>,
}

impl std::fmt::Debug for LogFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFilter").finish_non_exhaustive()
    }
}

impl LogFilter {
    /// Applies `level` (the config's `log_level`), unless `RUST_LOG` is set.
    pub fn apply(&self, level: &str) {
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        match EnvFilter::try_new(level) {
            Ok(filter) => {
                if let Err(e) = (self.set)(filter) {
                    error!(error = %e, "cannot change the log filter");
                }
            }
            Err(e) => error!(error = %e, level, "invalid log filter; keeping the old one"),
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG` or else `--log-level` (then the config's
/// `log_level`, applied once loaded), as text or JSON lines. Text has colour only on a terminal
/// without `NO_COLOR`, and no timestamp when standard error is the journal (which stamps every
/// line itself).
pub fn init_logging(cli: &Cli) -> LogFilter {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(cli.log_level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    // The filter goes on last: its reload handle's type depends on the formatter.
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder.with_env_filter(filter).with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            LogFilter {
                set: Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())),
            }
        }};
    }
    match cli.log_format {
        LogFormat::Json => install!(builder.json()),
        LogFormat::Text if stderr_is_journal() => {
            install!(builder.with_ansi(false).without_time())
        }
        LogFormat::Text => {
            install!(builder.with_ansi(
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            ))
        }
    }
}

/// Whether standard error is connected to the systemd journal: `$JOURNAL_STREAM` names its
/// device and inode (systemd.exec(5)), which must match standard error's, since a child of the
/// service may have inherited the variable with another stderr.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", stderr.dev(), stderr.ino())
}
