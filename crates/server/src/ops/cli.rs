//! The command line of `attendanced`, in the library so that `xtask` can render its man page and
//! shell completions from the same definition the binary parses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::FsyncPolicy;

/// Version shown by `--version`: the crate version and the git commit it was built from
/// (`unknown` when built outside a git checkout, e.g. from a crate tarball).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("ATTENDANCED_GIT_COMMIT"),
    ")"
);

/// The config file read when neither `--config` nor `$ATTENDANCE_CONFIG` names one, if it
/// exists (the Debian package installs it).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/attendanced/attendanced.toml";

/// The network attendance daemon.
///
/// Settings come from defaults, then the config file, then ATTENDANCE_* environment variables
/// (e.g. ATTENDANCE_CLASS_LENGTH=45m), then these flags. The config file is --config,
/// $ATTENDANCE_CONFIG, or /etc/attendanced/attendanced.toml if it exists.
///
/// Exit codes: 0 after a graceful shutdown (SIGINT, SIGTERM or SHUTDOWN); 78 for a configuration
/// problem (do not restart until it is fixed); 1 for any other failure.
//
// (The doc comment above is the --help text and the man page.) The fields are the flags; those
// that are settings serialize, when given, into the last and highest layer of the configuration.
#[derive(Debug, Parser, Serialize)]
#[command(name = "attendanced", version = VERSION)]
pub struct Cli {
    /// What to do instead of serving.
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<Command>,

    /// TOML config file (see /etc/attendanced/attendanced.toml or config/attendanced.toml for
    /// every key) [default: /etc/attendanced/attendanced.toml if it exists].
    #[arg(long, env = "ATTENDANCE_CONFIG", global = true, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 0.0.0.0:65001].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,

    /// Attendance CSV file [default: ./attendance.csv].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csv: Option<PathBuf>,

    /// Keep marks in PostgreSQL instead of the CSV, e.g. postgres://attendanced@db/attendance
    /// [default: the CSV].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,

    /// Run as one node of several, on this Redis (`cluster.redis`), e.g. redis://127.0.0.1:6379
    /// [default: on its own].
    #[arg(long = "cluster-redis", value_name = "URL")]
    #[serde(
        rename = "cluster",
        skip_serializing_if = "Option::is_none",
        serialize_with = "cluster_redis"
    )]
    pub cluster_redis: Option<String>,

    /// Time a student must stay before PRESENT is accepted, e.g. 1h, 45m, 90s [default: 1h].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    pub class_length: Option<Duration>,

    /// How long a dropped student's seat waits for RESUME, e.g. 5m; 0s gives it back at once
    /// [default: 5m].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    pub resume_grace: Option<Duration>,

    /// Interval of EVENT HEARTBEAT [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    pub heartbeat: Option<Duration>,

    /// Longest accepted line in bytes, excluding the line ending [default: 1024].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_line: Option<usize>,

    /// File holding the admin token [default: attendanced.token beside the CSV, created if missing].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,

    /// Most connections open at once [default: 50000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,

    /// Time a new connection has to JOIN [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    pub login_timeout: Option<Duration>,

    /// Time a client may take to read what it is sent before it is closed [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    pub write_timeout: Option<Duration>,

    /// Sync marks to disk before acknowledging them: always (default) or never (unsafe).
    #[arg(long, value_parser = parse_fsync)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync: Option<FsyncPolicy>,

    /// PEM certificate chain: serve the student port over TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 [default: off].
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,

    /// Serve the web pages, /ws and /metrics on ADDR, or `off` [default: 0.0.0.0:8000].
    #[arg(long, value_name = "ADDR|off")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_listen: Option<crate::ops::config::WebListen>,

    /// Log filter when RUST_LOG is not set, e.g. info, debug, attendance_server=trace
    /// [default: info].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,

    /// Log format on standard error: human-readable text, or one JSON object per line for log
    /// shippers.
    #[arg(long, env = "ATTENDANCE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    #[serde(skip)]
    pub log_format: LogFormat,
}

/// Subcommands: tools around the daemon rather than the daemon itself.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Validate the configuration and print every effective setting with where it came from.
    ///
    /// Loads the config file (--config, $ATTENDANCE_CONFIG or the default), the ATTENDANCE_*
    /// environment and the flags given before the subcommand, exactly as the daemon would,
    /// and prints the result as TOML with each value's origin. Exit code 0 when valid; 78 with
    /// the bad key (and its line in the file) when not.
    CheckConfig,
    /// Check the row chain of an attendance CSV: prints OK with the row count and the last
    /// hash, or the first broken row (its line, and what is wrong) and exits 1. With the
    /// file's checkpoints (<FILE>.checkpoints) it also finds rows deleted from the end.
    Verify {
        /// The attendance CSV.
        file: std::path::PathBuf,
        /// The chain key [default: attendanced.key in the state directory].
        #[arg(long, value_name = "KEYFILE")]
        key: Option<std::path::PathBuf>,
    },
    /// Convert a CSV of the previous version (8 columns, no row hashes) to this one: the
    /// original is kept as FILE.v1, old rows keep their values, the chain starts over them.
    /// Stop the daemon first.
    Migrate {
        /// The attendance CSV.
        file: std::path::PathBuf,
        /// The chain key [default: attendanced.key in the state directory, created if missing].
        #[arg(long, value_name = "KEYFILE")]
        key: Option<std::path::PathBuf>,
    },
    /// Write the marks the PostgreSQL store holds for a day as an attendance CSV: the same
    /// columns and the same keyed row hashes as the daemon's own CSV, so `attendanced verify`
    /// checks it.
    Export {
        /// The day, YYYY-MM-DD (local, in the configured timezone).
        #[arg(long, value_name = "YYYY-MM-DD")]
        day: String,
        /// Only this class, COURSE_DIV (e.g. ComputerNetworks_Div1) [default: every class].
        #[arg(long, value_name = "COURSE_DIV")]
        class: Option<String>,
        /// Where to write the CSV [default: standard output].
        #[arg(long, value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        /// The chain key [default: attendanced.key in the state directory, created if missing].
        #[arg(long, value_name = "KEYFILE")]
        key: Option<std::path::PathBuf>,
    },
    /// Print one line per student of a class on a day: status, minutes late and attended.
    ///
    /// Reads the attendance CSV (the configured one, or --file) and counts days in the
    /// configured timezone. Students of --roster (a CSV with `name,roll` columns) without a
    /// record are listed Absent.
    Report {
        /// The class, COURSE_DIV (e.g. ComputerNetworks_Div1).
        #[arg(long, value_name = "COURSE_DIV")]
        class: String,
        /// The day, YYYY-MM-DD (local, in the configured timezone) [default: today].
        #[arg(long, value_name = "YYYY-MM-DD")]
        day: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: crate::store::report::ReportFormat,
        /// The attendance CSV to read [default: the configured `csv`].
        #[arg(long, value_name = "FILE")]
        file: Option<std::path::PathBuf>,
        /// The class's roster (`name,roll` CSV), for the Absent lines.
        #[arg(long, value_name = "FILE")]
        roster: Option<std::path::PathBuf>,
    },
}

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (journald adds the timestamp again; harmless).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields.message`, `target`, spans).
    Json,
}

impl Cli {
    /// The config file to load: `--config` or `$ATTENDANCE_CONFIG` if given, else
    /// [`DEFAULT_CONFIG_FILE`] if it exists, else none (built-in defaults).
    pub fn config_file(&self) -> Option<PathBuf> {
        self.config.clone().or_else(|| {
            let default = PathBuf::from(DEFAULT_CONFIG_FILE);
            default.exists().then_some(default)
        })
    }
}

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    match s {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        _ => Err(format!("expected always or never, got {s:?}")),
    }
}

/// `--cluster-redis URL` as the settings' `cluster.redis`.
fn cluster_redis<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry("redis", url)?;
    map.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn check_config_takes_config_after_the_subcommand() {
        let cli = Cli::try_parse_from(["attendanced", "check-config", "--config", "a.toml"])
            .expect("parses");
        assert_eq!(cli.command, Some(Command::CheckConfig));
        assert_eq!(cli.config_file(), Some(PathBuf::from("a.toml")));
    }

    #[test]
    fn the_version_names_the_commit() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")), "{VERSION}");
        assert!(VERSION.ends_with(')'), "{VERSION}");
    }
}
