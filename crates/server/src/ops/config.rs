//! Daemon settings: defaults < TOML file < `ATTENDANCE_*` environment < command-line flags.
//!
//! Every key is documented, with its default, in `config/attendanced.toml`. Besides the
//! [`Config`] itself, loading can report where each effective value came from ([`Setting`],
//! [`Origin`]) — for `attendanced check-config` and for errors that name the file and line.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
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
    /// How long a dropped student's seat waits for `RESUME <token>` with the time served; 0
    /// gives the seat back at once.
    #[serde(with = "humantime_serde")]
    pub resume_grace: Duration,
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
    /// (the class's broadcast ring, shared by its members, made when the second arrives).
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
    /// Address to serve Prometheus metrics on, at `/metrics` over HTTP; unset means no metrics
    /// listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Log filter when `RUST_LOG` is not set, e.g. `info`, `debug`,
    /// `attendance_server=trace`; reloadable with SIGHUP.
    pub log_level: String,
    /// Whether `EVENT JOIN` tells the class the student's IP address. Off by default: a
    /// classmate has no need of it; the CSV and the admin views keep it either way.
    pub announce_addresses: bool,
    /// Address of the web server (student page, teacher dashboard, `/ws`, `/healthz`), or
    /// `off`. Served over HTTPS with the student port's certificate when TLS is
    /// configured.
    pub web_listen: WebListen,
    /// Origins (`scheme://host[:port]`) besides the page's own host whose pages may open `/ws`;
    /// a WebSocket upgrade from any other origin gets HTTP 403.
    pub web_allowed_origins: Vec<String>,
    /// Interval of the WebSocket ping that keeps idle phones' connections open through NATs; a
    /// connection that answers nothing (no pong, no frame) for two intervals is closed.
    #[serde(with = "humantime_serde")]
    pub web_ping_interval: Duration,
    /// How long a teacher's dashboard sign-in lasts.
    #[serde(with = "humantime_serde")]
    pub web_session_ttl: Duration,
    /// The PROXY protocol from a load balancer (`[proxy_protocol]`); off by default.
    pub proxy_protocol: ProxyProtocolConfig,
    /// The system of record for marks instead of the CSV: a PostgreSQL URL
    /// (`postgres://user:password@host:5432/db`). Unset means the CSV (the default).
    pub store: Option<String>,
    /// Several nodes as one service (`[cluster]`): the Redis that carries their announcements
    /// and presence. Unset: this node is on its own (the default).
    pub cluster: ClusterConfig,
    /// Per-class viewer tokens for the teacher dashboard (`[[viewer]]` tables); the admin token
    /// sees every class.
    pub viewer: Vec<Viewer>,
    /// Classes with rules of their own (`[[class]]` tables): a timetable, a roster, a
    /// rotating code, a subnet allow-list. Any other class runs ad hoc.
    pub class: Vec<ClassConfig>,
}

/// One `[[class]]` table: the rules of a class. With `start`, the class is scheduled (it
/// accepts JOIN from `opens_before` its start until its end on its `weekdays`, and its
/// records say Present, Late, Left or Absent); without, it runs ad hoc as any other class, but
/// still with its roster, code and subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// The course, as students give it.
    pub course: String,
    /// The division.
    pub division: String,
    /// Weekdays it meets on: `mon` … `sun` (or full names).
    #[serde(default)]
    pub weekdays: Vec<String>,
    /// Local start time, `HH:MM` in `timezone`; unset: ad hoc.
    #[serde(default)]
    pub start: Option<String>,
    /// How long a session lasts.
    #[serde(default = "default_length", with = "humantime_serde")]
    pub length: Duration,
    /// Connected time a student must serve to be Present (or Late); unset: the whole length.
    /// Set it below the length to leave room for a dropped connection.
    #[serde(default, with = "humantime_serde")]
    pub required: Option<Duration>,
    /// How long after the start a first JOIN is still on time.
    #[serde(default = "default_late_after", with = "humantime_serde")]
    pub late_after: Duration,
    /// How long a dropped seat waits for RESUME in this class; unset: `resume_grace`.
    #[serde(default, with = "humantime_serde")]
    pub grace: Option<Duration>,
    /// How long before the start JOIN is accepted.
    #[serde(default = "default_opens_before", with = "humantime_serde")]
    pub opens_before: Duration,
    /// A CSV of the enrolled students (`name,roll`).
    #[serde(default)]
    pub roster: Option<PathBuf>,
    /// Whether JOIN must carry the class's rotating 6-digit code.
    #[serde(default)]
    pub code: bool,
    /// Networks (CIDR) JOIN is accepted from; empty: anywhere.
    #[serde(default)]
    pub subnet: Vec<String>,
}

/// The `[proxy_protocol]` table: which peers are load balancers whose connections begin with
/// a PROXY header (v1 or v2) naming the real client, and how long they have to send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyProtocolConfig {
    /// Networks (CIDR, or bare addresses) of the balancers; empty: off. Only these may name a
    /// client address, and every connection from them must.
    pub from: Vec<String>,
    /// Time a connection from a balancer has to send its whole header before it is closed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// The `[cluster]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The Redis URL (`redis://host:6379`, `redis://:password@host/0`); unset: no cluster.
    pub redis: Option<String>,
    /// How long a seat stays held without its node renewing it (renewed every third of it):
    /// the bound on how long a dead node's seats stay taken.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis: None,
            lease: Duration::from_secs(10),
        }
    }
}

impl Default for ProxyProtocolConfig {
    fn default() -> Self {
        Self {
            from: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }
}

fn default_length() -> Duration {
    Duration::from_secs(3600)
}

fn default_late_after() -> Duration {
    Duration::from_secs(600)
}

fn default_opens_before() -> Duration {
    Duration::from_secs(600)
}

impl ClassConfig {
    /// The class's key, if course and division are valid fields.
    pub fn key(&self) -> Option<attendance_protocol::ClassKey> {
        format!("{}_{}_X_0", self.course, self.division)
            .parse::<attendance_protocol::StudentId>()
            .ok()
            .map(|id| id.class)
    }

    /// The timetable, if the class is scheduled.
    ///
    /// # Errors
    /// What is wrong with the weekdays or the start.
    pub fn schedule(&self) -> Result<Option<crate::attendance::schedule::ClassSchedule>, String> {
        let Some(start) = &self.start else {
            return Ok(None);
        };
        let start: jiff::civil::Time = start
            .parse()
            .map_err(|_| format!("start {start:?} is not a time like \"09:00\""))?;
        if self.weekdays.is_empty() {
            return Err("a class with a start needs weekdays, e.g. [\"mon\", \"wed\"]".to_owned());
        }
        let weekdays = self
            .weekdays
            .iter()
            .map(|d| {
                crate::attendance::schedule::parse_weekday(d)
                    .ok_or_else(|| format!("{d:?} is not a weekday (mon … sun)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(crate::attendance::schedule::ClassSchedule {
            weekdays,
            start,
            length: self.length,
            opens_before: self.opens_before,
        }))
    }

    /// What the status rule needs: the required time, lateness and length.
    pub fn timing(&self) -> crate::attendance::status::Timing {
        crate::attendance::status::Timing {
            required: self.required.unwrap_or(self.length).min(self.length),
            late_after: self.late_after,
            length: self.length,
        }
    }

    /// The class's checks, as an error naming it.
    fn check(&self) -> Result<(), String> {
        let name = format!("[[class]] {}_{}", self.course, self.division);
        if self.key().is_none() {
            return Err(format!(
                "{name}: course and division must be letters and digits (no spaces or _)"
            ));
        }
        self.schedule().map_err(|e| format!("{name}: {e}"))?;
        crate::attendance::subnet::Subnets::parse(&self.subnet)
            .map_err(|e| format!("{name}: subnet {e}"))?;
        if self.length.is_zero() {
            return Err(format!("{name}: length must be more than 0s"));
        }
        Ok(())
    }
}

/// A dashboard viewer: a token that may see only some classes (`[[viewer]]` in the file).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Viewer {
    /// A name for the logs (the token itself is never logged).
    #[serde(default)]
    pub name: String,
    /// The secret the teacher signs in with (at least 16 characters).
    #[serde(serialize_with = "hidden")]
    pub token: String,
    /// The classes it may see, as `COURSE_DIV` (e.g. `ComputerNetworks_Div1`).
    pub classes: Vec<String>,
}

impl fmt::Debug for Viewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Viewer")
            .field("name", &self.name)
            .field("token", &"<hidden>")
            .field("classes", &self.classes)
            .finish()
    }
}

/// Serialises a secret as a placeholder: settings are printed by `check-config` and compared
/// (and logged) by a reload.
fn hidden<S: serde::Serializer>(_: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<hidden>")
}

/// Where the web server listens: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebListen {
    /// No web server.
    Off,
    /// Listen here.
    On(SocketAddr),
}

impl WebListen {
    /// The address, unless off.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Self::Off => None,
            Self::On(addr) => Some(addr),
        }
    }
}

impl fmt::Display for WebListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::On(addr) => addr.fmt(f),
        }
    }
}

impl std::str::FromStr for WebListen {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            Ok(Self::Off)
        } else {
            s.parse().map(Self::On)
        }
    }
}

impl Serialize for WebListen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WebListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is neither an address like 0.0.0.0:8000 nor \"off\""
            ))
        })
    }
}

/// The settings fixed at start-up (sockets, files, sizes). A reload that changes one reports it
/// as needing a restart and keeps the running value: the type holds nothing a reload replaces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Startup {
    /// See [`Config::listen`].
    pub listen: SocketAddr,
    /// See [`Config::csv`].
    pub csv: PathBuf,
    /// See [`Config::admin_token_file`].
    pub admin_token_file: Option<PathBuf>,
    /// See [`Config::max_connections`].
    pub max_connections: usize,
    /// See [`Config::fsync`].
    pub fsync: FsyncPolicy,
    /// See [`Config::max_per_address`].
    pub max_per_address: usize,
    /// See [`Config::timezone`].
    pub timezone: Option<String>,
    /// See [`Config::class`].
    pub class: Vec<ClassConfig>,
    /// See [`Config::admin_socket`].
    pub admin_socket: Option<PathBuf>,
    /// See [`Config::tls_cert`].
    pub tls_cert: Option<PathBuf>,
    /// See [`Config::tls_key`].
    pub tls_key: Option<PathBuf>,
    /// See [`Config::metrics_listen`].
    pub metrics_listen: Option<SocketAddr>,
    /// See [`Config::web_listen`].
    pub web_listen: WebListen,
    /// See [`Config::proxy_protocol`].
    pub proxy_protocol: ProxyProtocolConfig,
    /// See [`Config::store`].
    pub store: Option<String>,
    /// See [`Config::cluster`].
    pub cluster: ClusterConfig,
}

/// The settings a reload (SIGHUP) applies while students are connected. Each is read where it
/// is used, so a reload takes effect from the next use: per connection at its next line, per
/// seat at its next JOIN, per socket at its next accept, per class when it forms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Live {
    /// See [`Config::class_length`]; fixed per seat at its JOIN.
    #[serde(with = "humantime_serde")]
    pub class_length: Duration,
    /// See [`Config::resume_grace`]; for seats that drop after the reload.
    #[serde(with = "humantime_serde")]
    pub resume_grace: Duration,
    /// See [`Config::heartbeat`]; from the next beat.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// See [`Config::max_line`]; for new connections.
    pub max_line: usize,
    /// See [`Config::login_timeout`]; for new connections.
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
    /// See [`Config::write_timeout`].
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// See [`Config::max_errors`].
    pub max_errors: u32,
    /// See [`Config::outbound_queue`]; for classes that get their full ring after the reload.
    pub outbound_queue: usize,
    /// See [`Config::tcp_keepalive`]; for connections accepted after the reload.
    #[serde(with = "humantime_serde")]
    pub tcp_keepalive: Duration,
    /// See [`Config::send_buffer`]; for connections accepted after the reload.
    pub send_buffer: usize,
    /// See [`Config::rate_limit`]; for new connections.
    pub rate_limit: u32,
    /// See [`Config::rate_burst`]; for new connections.
    pub rate_burst: u32,
    /// See [`Config::chat_rate`]; for new connections.
    pub chat_rate: u32,
    /// See [`Config::chat_burst`]; for new connections.
    pub chat_burst: u32,
    /// See [`Config::log_level`] (applied by the binary's log filter).
    pub log_level: String,
    /// See [`Config::announce_addresses`]; from the next JOIN.
    pub announce_addresses: bool,
    /// See [`Config::web_allowed_origins`]; from the next upgrade.
    pub web_allowed_origins: Vec<String>,
    /// See [`Config::web_ping_interval`]; for new WebSocket connections.
    #[serde(with = "humantime_serde")]
    pub web_ping_interval: Duration,
    /// See [`Config::web_session_ttl`]; for new sign-ins.
    #[serde(with = "humantime_serde")]
    pub web_session_ttl: Duration,
    /// See [`Config::viewer`]; from the next sign-in (and request).
    pub viewer: Vec<Viewer>,
}

impl Config {
    /// The settings cut into those fixed at start-up and those a reload applies.
    pub fn split(&self) -> (Startup, Live) {
        let c = self.clone();
        (
            Startup {
                listen: c.listen,
                csv: c.csv,
                admin_token_file: c.admin_token_file,
                max_connections: c.max_connections,
                fsync: c.fsync,
                max_per_address: c.max_per_address,
                timezone: c.timezone,
                class: c.class,
                admin_socket: c.admin_socket,
                tls_cert: c.tls_cert,
                tls_key: c.tls_key,
                metrics_listen: c.metrics_listen,
                web_listen: c.web_listen,
                proxy_protocol: c.proxy_protocol,
                store: c.store,
                cluster: c.cluster,
            },
            Live {
                class_length: c.class_length,
                resume_grace: c.resume_grace,
                heartbeat: c.heartbeat,
                max_line: c.max_line,
                login_timeout: c.login_timeout,
                write_timeout: c.write_timeout,
                max_errors: c.max_errors,
                outbound_queue: c.outbound_queue,
                tcp_keepalive: c.tcp_keepalive,
                send_buffer: c.send_buffer,
                rate_limit: c.rate_limit,
                rate_burst: c.rate_burst,
                chat_rate: c.chat_rate,
                chat_burst: c.chat_burst,
                log_level: c.log_level,
                announce_addresses: c.announce_addresses,
                web_allowed_origins: c.web_allowed_origins,
                web_ping_interval: c.web_ping_interval,
                web_session_ttl: c.web_session_ttl,
                viewer: c.viewer,
            },
        )
    }

    /// Warnings about settings that are valid but weaken a promise (printed at start and by
    /// `check-config`).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.fsync == FsyncPolicy::Never {
            out.push(
                "fsync = \"never\": marks are acknowledged before they are on disk; a power cut or \
                 a crash of the machine loses acknowledged marks. For benchmarks only."
                    .to_owned(),
            );
        }
        out
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], attendance_protocol::DEFAULT_PORT)),
            csv: PathBuf::from("attendance.csv"),
            class_length: Duration::from_secs(3600),
            resume_grace: Duration::from_secs(300),
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
            metrics_listen: None,
            log_level: "info".to_owned(),
            announce_addresses: false,
            web_listen: WebListen::On(SocketAddr::from(([0, 0, 0, 0], 8000))),
            web_allowed_origins: Vec::new(),
            web_ping_interval: Duration::from_secs(30),
            web_session_ttl: Duration::from_secs(12 * 3600),
            proxy_protocol: ProxyProtocolConfig::default(),
            store: None,
            cluster: ClusterConfig::default(),
            viewer: Vec::new(),
            class: Vec::new(),
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
    /// A key is unknown or its value is bad, and we know where it was set.
    #[error("invalid configuration: {origin}: {message}")]
    Setting {
        /// The key, e.g. `class_length`.
        key: String,
        /// Where the bad key or value was set: the file and line, the environment variable or
        /// the flag.
        origin: Origin,
        /// What is wrong with it, naming the key.
        message: String,
    },
}

/// Where an effective setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The config file.
    File {
        /// The file as given.
        path: PathBuf,
        /// The 1-based line of the key, when it could be found.
        line: Option<usize>,
    },
    /// An `ATTENDANCE_*` environment variable, by name.
    Env(String),
    /// A command-line flag, e.g. `--class-length`.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{}, line {line}", path.display()),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag(flag) => write!(f, "command-line flag {flag}"),
        }
    }
}

/// One effective setting, as `attendanced check-config` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key, e.g. `class_length`.
    pub key: &'static str,
    /// The effective value in TOML syntax (e.g. `"45m"`, `1024`); `None` when unset.
    pub value: Option<String>,
    /// Where the value came from.
    pub origin: Origin,
}

/// Metadata name of the built-in defaults in the figment.
const DEFAULTS: &str = "default";
/// Metadata name of the command-line flags in the figment.
const FLAGS: &str = "command-line flag";
/// Prefix of the environment variables that are settings.
const ENV_PREFIX: &str = "ATTENDANCE_";

/// A provider under a name of our choosing, so the origin of a value reads "default" or
/// "command-line flag" rather than a Rust type name.
struct Named<P> {
    name: &'static str,
    provider: P,
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.provider.data()
    }

    fn profile(&self) -> Option<Profile> {
        self.provider.profile()
    }
}

/// The layered sources of one load, kept to say where each value came from.
struct Layers {
    figment: Figment,
    file: Option<PathBuf>,
    /// Line of each top-level key of the file.
    lines: HashMap<String, usize>,
}

impl Layers {
    fn new(file: Option<&Path>, overrides: impl Serialize) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Named {
            name: DEFAULTS,
            provider: Serialized::defaults(Config::default()),
        });
        let mut lines = HashMap::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_owned()));
            }
            // Unreadable or malformed files are reported by figment below, with its own line.
            if let Ok(text) = std::fs::read_to_string(path) {
                lines = key_lines(&text);
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let figment = figment
            // Every other ATTENDANCE_* variable is a setting: a typo is refused (exit 78) rather
            // than silently ignored, as an unknown key in the file is.
            .merge(Env::prefixed(ENV_PREFIX).ignore(&["config", "log_format"]))
            .merge(Named {
                name: FLAGS,
                provider: Serialized::defaults(overrides),
            });
        Ok(Self {
            figment,
            file: file.map(Path::to_owned),
            lines,
        })
    }

    /// Where the effective value of `key` came from.
    fn origin(&self, key: &str) -> Origin {
        let Some(metadata) = self.figment.find_metadata(key) else {
            return Origin::Default;
        };
        if let Some(path) = metadata.source.as_ref().and_then(|s| s.file_path()) {
            return Origin::File {
                path: self.file.clone().unwrap_or_else(|| path.to_owned()),
                line: self.lines.get(key).copied(),
            };
        }
        match &*metadata.name {
            DEFAULTS => Origin::Default,
            FLAGS => Origin::Flag(format!("--{}", key.replace('_', "-"))),
            _ => Origin::Env(format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())),
        }
    }

    /// Extracts and validates the config; errors name the key and where it was set.
    fn extract(&self) -> Result<Config, ConfigError> {
        let config: Config = self.figment.extract().map_err(|e| self.locate(e))?;
        match config.check() {
            Ok(()) => Ok(config),
            Err((key, message)) => Err(match self.origin(key) {
                Origin::Default => ConfigError::Range(message),
                origin => ConfigError::Setting {
                    key: key.to_owned(),
                    origin,
                    message,
                },
            }),
        }
    }

    /// Turns a figment error about one key into [`ConfigError::Setting`].
    fn locate(&self, error: figment::Error) -> ConfigError {
        let (key, message) = match &error.kind {
            figment::error::Kind::UnknownField(key, _) => (
                key.clone(),
                format!(
                    "unknown key `{key}` (the keys are: {})",
                    Config::keys().join(", ")
                ),
            ),
            kind => match error.path.last() {
                Some(key) => (key.clone(), format!("key `{key}`: {kind}")),
                None => return ConfigError::Invalid(Box::new(error)),
            },
        };
        match self.origin(&key) {
            Origin::Default => ConfigError::Invalid(Box::new(error)),
            origin => ConfigError::Setting {
                key,
                origin,
                message,
            },
        }
    }
}

/// A setting's value as one TOML value: a table (`[proxy_protocol]`) as an inline table, so
/// the report stays one line per key.
fn report_value(item: &toml_edit::Item) -> Option<toml_edit::Value> {
    match item {
        toml_edit::Item::Value(v) => Some(v.clone()),
        toml_edit::Item::Table(t) => {
            Some(toml_edit::Value::InlineTable(t.clone().into_inline_table()))
        }
        _ => None,
    }
}

/// The 1-based line of each top-level key (or `[table]` header) in a TOML text.
fn key_lines(text: &str) -> HashMap<String, usize> {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return HashMap::new();
    };
    doc.as_table()
        .iter()
        .filter_map(|(name, _)| {
            let (key, _) = doc.as_table().get_key_value(name)?;
            let start = key.span()?.start;
            let line = text.get(..start)?.matches('\n').count() + 1;
            Some((name.to_owned(), line))
        })
        .collect()
}

impl Config {
    /// Loads defaults, then `file` (if any), then `ATTENDANCE_*` variables, then `overrides`
    /// (the flags that were given), and checks the result.
    ///
    /// # Errors
    /// [`ConfigError`] naming the bad key, and where it was set when known (the file and line,
    /// the environment variable or the flag).
    pub fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Self, ConfigError> {
        Layers::new(file, overrides)?.extract()
    }

    /// Like [`Config::load`], and also reports every key's effective value and origin, in the
    /// order of [`Config::keys`].
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_with_origins(
        file: Option<&Path>,
        overrides: impl Serialize,
    ) -> Result<(Self, Vec<Setting>), ConfigError> {
        let layers = Layers::new(file, overrides)?;
        let config = layers.extract()?;
        let values = toml_edit::ser::to_document(&config).ok();
        let settings = Config::keys()
            .iter()
            .map(|&key| Setting {
                key,
                value: values
                    .as_ref()
                    .and_then(|doc| doc.get(key))
                    .and_then(report_value)
                    .map(|v| v.to_string().trim().to_owned()),
                origin: layers.origin(key),
            })
            .collect();
        Ok((config, settings))
    }

    /// Every key, in the order they are declared (and documented in `config/attendanced.toml`).
    pub fn keys() -> &'static [&'static str] {
        static KEYS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
        KEYS.get_or_init(field_names::<Config>)
    }

    /// Checks ranges that serde cannot.
    ///
    /// # Errors
    /// [`ConfigError::Range`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check()
            .map_err(|(_, message)| ConfigError::Range(message))
    }

    /// Checks ranges that serde cannot; on failure, the key to blame and the message.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let range = |ok: bool, key: &'static str, msg: &str| {
            if ok {
                Ok(())
            } else {
                Err((key, msg.to_owned()))
            }
        };
        range(
            tracing_subscriber::EnvFilter::try_new(&self.log_level).is_ok(),
            "log_level",
            "log_level is not a valid filter (e.g. info, debug, attendance_server=trace)",
        )?;
        range(
            (64..=1 << 20).contains(&self.max_line),
            "max_line",
            "max_line must be between 64 and 1048576 bytes",
        )?;
        range(
            self.heartbeat >= Duration::from_millis(10),
            "heartbeat",
            "heartbeat must be at least 10ms",
        )?;
        range(
            self.max_connections >= 1,
            "max_connections",
            "max_connections must be at least 1",
        )?;
        range(
            self.max_errors >= 1,
            "max_errors",
            "max_errors must be at least 1",
        )?;
        range(
            (1..=1 << 16).contains(&self.outbound_queue),
            "outbound_queue",
            "outbound_queue must be between 1 and 65536",
        )?;
        range(
            self.rate_limit >= 1,
            "rate_limit",
            "rate_limit and rate_burst must be at least 1",
        )?;
        range(
            self.rate_burst >= 1,
            "rate_burst",
            "rate_limit and rate_burst must be at least 1",
        )?;
        range(
            self.chat_rate >= 1,
            "chat_rate",
            "chat_rate and chat_burst must be at least 1",
        )?;
        range(
            self.chat_burst >= 1,
            "chat_burst",
            "chat_rate and chat_burst must be at least 1",
        )?;
        range(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            if self.tls_cert.is_some() {
                "tls_cert"
            } else {
                "tls_key"
            },
            "tls_cert and tls_key must be set together",
        )?;
        range(
            self.web_ping_interval >= Duration::from_secs(1),
            "web_ping_interval",
            "web_ping_interval must be at least 1s",
        )?;
        range(
            self.web_session_ttl >= Duration::from_secs(60),
            "web_session_ttl",
            "web_session_ttl must be at least 1m",
        )?;
        for origin in &self.web_allowed_origins {
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/');
            if !ok {
                return Err((
                    "web_allowed_origins",
                    format!(
                        "web_allowed_origins: {origin:?} is not an origin like https://host[:port]"
                    ),
                ));
            }
        }
        if let Some(url) = &self.store {
            range(
                url.starts_with("postgres://") || url.starts_with("postgresql://"),
                "store",
                "store must be a postgres:// or postgresql:// URL",
            )?;
        }
        if let Some(url) = &self.cluster.redis {
            range(
                url.starts_with("redis://")
                    || url.starts_with("rediss://")
                    || url.starts_with("redis+unix://")
                    || url.starts_with("unix://"),
                "cluster",
                "cluster.redis must be a redis:// (or rediss://, unix://) URL",
            )?;
        }
        range(
            self.cluster.lease >= Duration::from_millis(300),
            "cluster",
            "cluster.lease must be at least 300ms",
        )?;
        crate::attendance::subnet::Subnets::parse(&self.proxy_protocol.from)
            .map_err(|e| ("proxy_protocol", format!("proxy_protocol.from: {e}")))?;
        range(
            self.proxy_protocol.timeout >= Duration::from_millis(10),
            "proxy_protocol",
            "proxy_protocol.timeout must be at least 10ms",
        )?;
        for viewer in &self.viewer {
            if viewer.token.chars().count() < 16 {
                let who = if viewer.name.is_empty() {
                    "a [[viewer]]"
                } else {
                    &viewer.name
                };
                return Err((
                    "viewer",
                    format!("viewer token of {who} must be at least 16 characters"),
                ));
            }
            if viewer.classes.is_empty() {
                return Err((
                    "viewer",
                    "every [[viewer]] needs at least one class".to_owned(),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for class in &self.class {
            class.check().map_err(|e| ("class", e))?;
            if !seen.insert((class.course.clone(), class.division.clone())) {
                return Err((
                    "class",
                    format!(
                        "[[class]] {}_{} is listed twice",
                        class.course, class.division
                    ),
                ));
            }
        }
        if let Some(name) = &self.timezone {
            if jiff::tz::TimeZone::get(name).is_err() {
                return Err((
                    "timezone",
                    format!("timezone {name:?} is not a known IANA time zone"),
                ));
            }
        }
        range(
            self.write_timeout >= Duration::from_millis(10),
            "write_timeout",
            "write_timeout must be at least 10ms",
        )
    }
}

/// The report of `check-config`: a valid TOML config with the effective values, unset keys
/// commented out, each key's origin as a trailing comment, and a `# WARNING:` line at the top
/// for each setting that weakens a promise (see [`Config::warnings`]).
pub fn render_report(file: Option<&Path>, settings: &[Setting], warnings: &[String]) -> String {
    let mut out = match file {
        Some(path) => format!("# {} is valid.\n", path.display()),
        None => format!(
            "# No config file ({} does not exist); the settings are valid.\n",
            crate::ops::cli::DEFAULT_CONFIG_FILE
        ),
    };
    for warning in warnings {
        out.push_str(&format!("# WARNING: {warning}\n"));
    }
    out.push_str("# Effective settings, each with where it came from:\n");
    let lines: Vec<String> = settings
        .iter()
        .map(|s| match &s.value {
            Some(value) => format!("{} = {value}", s.key),
            None => format!("# {} (unset)", s.key),
        })
        .collect();
    let width = lines.iter().map(String::len).max().unwrap_or(0);
    for (line, setting) in lines.iter().zip(settings) {
        out.push_str(&format!("{line:<width$}  # {}\n", setting.origin));
    }
    out
}

impl Startup {
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

    /// Where the daemon keeps its private state (class code secrets, the chain key):
    /// `$STATE_DIRECTORY` (set by systemd) if set, else the CSV's directory.
    pub fn state_dir(&self) -> PathBuf {
        match std::env::var_os("STATE_DIRECTORY") {
            Some(dirs) => {
                let dirs = dirs.to_string_lossy().into_owned();
                PathBuf::from(dirs.split(':').next().unwrap_or_default())
            }
            None => self.beside_csv(""),
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

/// The field names of a struct, in declaration order, as serde's derive lists them (the list a
/// deserializer is handed), so [`Config::keys`] cannot drift from the struct.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor, value::Error};

    struct Fields<'a>(&'a mut &'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("only structs have field names"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            *self.0 = fields;
            Err(Error::custom("field names collected"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
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
    fn web_settings_load_and_viewer_tokens_are_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.toml");
        std::fs::write(
            &path,
            "web_listen = \"off\"\nweb_allowed_origins = [\"https://a.example\"]\n\
             [[viewer]]\nname = \"Ms Shah\"\ntoken = \"0123456789abcdef-secret\"\n\
             classes = [\"CN_D1\"]\n",
        )
        .expect("write");
        let (c, settings) = Config::load_with_origins(Some(&path), NoOverrides {}).expect("load");
        assert_eq!(c.web_listen, WebListen::Off);
        assert_eq!(c.viewer.len(), 1);
        assert_eq!(c.viewer[0].token, "0123456789abcdef-secret");
        let report = render_report(Some(&path), &settings, &[]);
        assert!(report.contains("web_listen = \"off\""), "{report}");
        assert!(!report.contains("secret"), "{report}");
        assert!(!format!("{c:?}").contains("secret"));

        std::fs::write(&path, "web_listen = \"8000\"\n").expect("write");
        let err = Config::load(Some(&path), NoOverrides {}).expect_err("not an address");
        assert!(err.to_string().contains("web_listen"), "{err}");
        std::fs::write(
            &path,
            "[[viewer]]\ntoken = \"short\"\nclasses = [\"CN_D1\"]\n",
        )
        .expect("write");
        let err = Config::load(Some(&path), NoOverrides {}).expect_err("short token");
        assert!(err.to_string().contains("at least 16"), "{err}");
        std::fs::write(&path, "web_allowed_origins = [\"a.example\"]\n").expect("write");
        assert!(Config::load(Some(&path), NoOverrides {}).is_err());
    }

    #[test]
    fn the_proxy_protocol_table_loads_is_reported_inline_and_bad_networks_name_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.toml");
        assert!(
            Config::default().proxy_protocol.from.is_empty(),
            "off by default"
        );
        std::fs::write(
            &path,
            "max_line = 100\n\n[proxy_protocol]\nfrom = [\"10.0.0.5/32\", \"127.0.0.1\"]\n\
             timeout = \"2s\"\n",
        )
        .expect("write");
        let (c, settings) = Config::load_with_origins(Some(&path), NoOverrides {}).expect("load");
        assert_eq!(c.proxy_protocol.from, ["10.0.0.5/32", "127.0.0.1"]);
        assert_eq!(c.proxy_protocol.timeout, Duration::from_secs(2));
        let report = render_report(Some(&path), &settings, &[]);
        let line = report
            .lines()
            .find(|l| l.starts_with("proxy_protocol = "))
            .unwrap_or_else(|| panic!("no proxy_protocol line in {report}"));
        assert!(
            line.contains("from = [\"10.0.0.5/32\", \"127.0.0.1\"]"),
            "{line}"
        );
        assert!(line.contains("timeout = \"2s\""), "{line}");
        assert!(line.ends_with(", line 3"), "{line}");

        std::fs::write(&path, "[proxy_protocol]\nfrom = [\"10.0.0.0/33\"]\n").expect("write");
        let err = Config::load(Some(&path), NoOverrides {}).expect_err("bad network");
        let text = err.to_string();
        assert!(
            text.contains("proxy_protocol.from") && text.contains("line 1"),
            "{text}"
        );
        std::fs::write(&path, "[proxy_protocol]\ntimeout = \"1ms\"\n").expect("write");
        let err = Config::load(Some(&path), NoOverrides {}).expect_err("too short");
        assert!(err.to_string().contains("at least 10ms"), "{err}");
        std::fs::write(&path, "[proxy_protocol]\nform = []\n").expect("write");
        assert!(
            Config::load(Some(&path), NoOverrides {}).is_err(),
            "unknown key"
        );
    }

    #[test]
    fn the_example_config_in_the_repo_is_valid_and_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/attendanced.toml");
        let c = Config::load(Some(&path), NoOverrides {}).expect("example config loads");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn keys_are_every_field_in_declaration_order() {
        let keys = Config::keys();
        assert_eq!(keys.first(), Some(&"listen"));
        assert_eq!(keys.get(1), Some(&"csv"));
        let defaults = toml_edit::ser::to_document(&Config::default()).expect("serializes");
        for (key, _) in defaults.iter() {
            assert!(keys.contains(&key), "{key} missing from Config::keys()");
        }
    }

    #[test]
    fn origins_name_the_file_and_line_the_flag_and_the_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.toml");
        std::fs::write(
            &path,
            "# comment\n\nclass_length = \"5m\"\nmax_line = 100\n",
        )
        .expect("write");
        #[derive(Serialize)]
        struct Flags {
            max_line: usize,
        }
        let (config, settings) =
            Config::load_with_origins(Some(&path), Flags { max_line: 200 }).expect("load");
        assert_eq!(config.max_line, 200);
        let find = |key: &str| {
            settings
                .iter()
                .find(|s| s.key == key)
                .cloned()
                .expect("every key is reported")
        };
        let class_length = find("class_length");
        assert_eq!(class_length.value.as_deref(), Some("\"5m\""));
        assert_eq!(
            class_length.origin,
            Origin::File {
                path: path.clone(),
                line: Some(3)
            }
        );
        assert_eq!(find("max_line").origin, Origin::Flag("--max-line".into()));
        assert_eq!(find("max_line").value.as_deref(), Some("200"));
        assert_eq!(find("heartbeat").origin, Origin::Default);
        assert_eq!(find("timezone").value, None);
        assert_eq!(settings.len(), Config::keys().len());
    }

    #[test]
    fn errors_name_the_key_and_its_line_in_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "max_line = 100\n\nclas_length = \"5s\"\n").expect("write");
        let err = Config::load(Some(&path), NoOverrides {}).expect_err("unknown key");
        let ConfigError::Setting { key, origin, .. } = &err else {
            panic!("not located: {err}");
        };
        assert_eq!(key, "clas_length");
        assert_eq!(
            *origin,
            Origin::File {
                path: path.clone(),
                line: Some(3)
            }
        );
        assert!(err.to_string().contains("line 3"), "{err}");

        std::fs::write(&path, "heartbeat = \"1m\"\nmax_line = \"many\"\n").expect("write");
        let err = Config::load(Some(&path), NoOverrides {}).expect_err("bad type");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("max_line"), "{err}");

        std::fs::write(&path, "max_line = 1\n").expect("write");
        let err = Config::load(Some(&path), NoOverrides {}).expect_err("out of range");
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(err.to_string().contains("max_line"), "{err}");
    }
}
