//! Daemon settings: defaults < TOML file < `ATTENDANCE_*` environment < command-line flags.
//!
//! Every key is documented, with its default, in `config/attendanced.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Whether each batch of marks is `fdatasync`ed before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Sync every batch before acknowledging it (the default: an acknowledged mark survives a
    /// power cut).
    Always,
    /// Never sync; acknowledged marks can be lost on a crash of the machine. For benchmarks only.
    Never,
}

/// All settings of the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The attendance CSV file.
    pub csv: PathBuf,
    /// How long a student must stay connected after JOIN before PRESENT is accepted.
    #[serde(with = "humantime_serde")]
    pub class_length: Duration,
    /// Interval of the `EVENT HEARTBEAT` sent to every client.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Longest accepted line in bytes, excluding the line ending.
    pub max_line: usize,
    /// File holding the admin token; by default `attendanced.token` next to the CSV, created
    /// with a random token if missing.
    pub admin_token_file: Option<PathBuf>,
    /// Most connections open at once; further clients get `ERR FULL` and are closed.
    pub max_connections: usize,
    /// Time a connection has to send a valid JOIN before it gets `ERR TIMEOUT` and is closed.
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
    /// Time a write to a client may take before the client is considered stuck and closed.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Consecutive protocol errors after which the connection is closed.
    pub max_errors: u32,
    /// Announcement lines a connection may be behind its class before it gets `EVENT LAGGED`
    /// (the class's broadcast ring, shared by its members).
    pub outbound_queue: usize,
    /// Whether marks are synced to disk before they are acknowledged.
    pub fsync: FsyncPolicy,
    /// Most connections from one IP address; 0 means no limit (a class behind one NAT address
    /// is normal).
    pub max_per_address: usize,
    /// Idle time before TCP keepalive probes find a vanished peer; 0 turns keepalive off.
    #[serde(with = "humantime_serde")]
    pub tcp_keepalive: Duration,
    /// Kernel send buffer per client socket, in bytes; 0 keeps the kernel's autotuning (up to
    /// `net.ipv4.tcp_wmem`, often 4 MiB). A smaller value bounds kernel memory per slow client
    /// and makes a stuck client lag (and be told so) sooner.
    pub send_buffer: usize,
    /// Lines per second a connection may send (sustained); faster lines wait their turn.
    pub rate_limit: u32,
    /// Lines a connection may send in a burst before `rate_limit` applies.
    pub rate_burst: u32,
    /// `SAY` messages per second a student may send; more get `ERR RATE` and are dropped.
    pub chat_rate: u32,
    /// `SAY` messages a student may send in a burst before `chat_rate` applies.
    pub chat_burst: u32,
    /// IANA time zone that decides which day a mark belongs to (one mark per class per day);
    /// unset means the system's time zone.
    pub timezone: Option<String>,
    /// Unix socket for local administration (no token needed; mode 0600). Unset means
    /// `attendanced.sock` in `$STATE_DIRECTORY` if set, else beside the CSV.
    pub admin_socket: Option<PathBuf>,
    /// PEM certificate chain for TLS on the student port; with `tls_key`, turns TLS on.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], attendance_protocol::DEFAULT_PORT)),
            csv: PathBuf::from("attendance.csv"),
            class_length: Duration::from_secs(3600),
            heartbeat: Duration::from_secs(60),
            max_line: attendance_protocol::DEFAULT_MAX_LINE,
            admin_token_file: None,
            max_connections: 50_000,
            login_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_errors: 10,
            outbound_queue: 256,
            fsync: FsyncPolicy::Always,
            max_per_address: 0,
            tcp_keepalive: Duration::from_secs(60),
            send_buffer: 0,
            rate_limit: 20,
            rate_burst: 50,
            chat_rate: 2,
            chat_burst: 10,
            timezone: None,
            admin_socket: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file, the environment or a flag held a bad or unknown key or value.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// The named config file does not exist.
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    /// A value is out of its allowed range.
    #[error("invalid configuration: {0}")]
    Range(String),
}

impl Config {
    /// Loads defaults, then `file` (if any), then `ATTENDANCE_*` variables, then `overrides`
    /// (the flags that were given), and checks the result.
    ///
    /// # Errors
    /// [`ConfigError`] naming the bad key.
    pub fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let figment = figment
            .merge(Env::prefixed("ATTENDANCE_").ignore(&["config", "log_level", "log_format"]))
            .merge(Serialized::defaults(overrides));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges that serde cannot.
    ///
    /// # Errors
    /// [`ConfigError::Range`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = |ok: bool, msg: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Range(msg.to_owned()))
            }
        };
        range(
            (64..=1 << 20).contains(&self.max_line),
            "max_line must be between 64 and 1048576 bytes",
        )?;
        range(
            self.heartbeat >= Duration::from_millis(10),
            "heartbeat must be at least 10ms",
        )?;
        range(
            self.max_connections >= 1,
            "max_connections must be at least 1",
        )?;
        range(self.max_errors >= 1, "max_errors must be at least 1")?;
        range(
            (1..=1 << 16).contains(&self.outbound_queue),
            "outbound_queue must be between 1 and 65536",
        )?;
        range(
            self.rate_limit >= 1 && self.rate_burst >= 1,
            "rate_limit and rate_burst must be at least 1",
        )?;
        range(
            self.chat_rate >= 1 && self.chat_burst >= 1,
            "chat_rate and chat_burst must be at least 1",
        )?;
        range(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            "tls_cert and tls_key must be set together",
        )?;
        if let Some(name) = &self.timezone {
            if jiff::tz::TimeZone::get(name).is_err() {
                return Err(ConfigError::Range(format!(
                    "timezone {name:?} is not a known IANA time zone"
                )));
            }
        }
        range(
            self.write_timeout >= Duration::from_millis(10),
            "write_timeout must be at least 10ms",
        )
    }

    /// The time zone that decides which day a mark belongs to.
    pub fn time_zone(&self) -> jiff::tz::TimeZone {
        self.timezone
            .as_deref()
            .and_then(|n| jiff::tz::TimeZone::get(n).ok())
            .unwrap_or_else(jiff::tz::TimeZone::system)
    }

    /// The admin socket: the configured one, or `attendanced.sock` in `$STATE_DIRECTORY` (set
    /// by systemd) or beside the CSV.
    pub fn admin_socket_path(&self) -> PathBuf {
        if let Some(p) = &self.admin_socket {
            return p.clone();
        }
        match std::env::var_os("STATE_DIRECTORY") {
            // systemd may pass several, separated by ':'; the first is ours.
            Some(dirs) => {
                let dirs = dirs.to_string_lossy().into_owned();
                let first = dirs.split(':').next().unwrap_or_default().to_owned();
                PathBuf::from(first).join("attendanced.sock")
            }
            None => self.beside_csv("attendanced.sock"),
        }
    }

    fn beside_csv(&self, name: &str) -> PathBuf {
        self.csv
            .parent()
            .unwrap_or_else(|| Path::new(""))
            .join(name)
    }

    /// The admin token file: the configured one, or `attendanced.token` beside the CSV.
    pub fn admin_token_path(&self) -> PathBuf {
        match &self.admin_token_file {
            Some(p) => p.clone(),
            None => self.beside_csv("attendanced.token"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct NoOverrides {}

    #[test]
    fn file_values_override_defaults_and_flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "class_length = \"5s\"\nmax_line = 100\n").expect("write");
        let c = Config::load(Some(&path), NoOverrides {}).expect("load");
        assert_eq!(c.class_length, Duration::from_secs(5));
        assert_eq!(c.max_line, 100);
        assert_eq!(c.heartbeat, Duration::from_secs(60));

        #[derive(Serialize)]
        struct Flags {
            max_line: usize,
        }
        let c = Config::load(Some(&path), Flags { max_line: 200 }).expect("load");
        assert_eq!(c.max_line, 200);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "clas_length = \"5s\"\n").expect("write");
        let err = Config::load(Some(&path), NoOverrides {}).expect_err("unknown key");
        assert!(err.to_string().contains("clas_length"), "{err}");
        std::fs::write(&path, "max_line = 1\n").expect("write");
        assert!(Config::load(Some(&path), NoOverrides {}).is_err());
        assert!(matches!(
            Config::load(Some(&dir.path().join("nope.toml")), NoOverrides {}),
            Err(ConfigError::Missing(_))
        ));
    }

    #[test]
    fn the_example_config_in_the_repo_is_valid_and_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/attendanced.toml");
        let c = Config::load(Some(&path), NoOverrides {}).expect("example config loads");
        assert_eq!(c, Config::default());
    }
}
