//! The command line: `attendance-bench <scenario> [options]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load generator for attendanced: holds, storms, fan-out and durable marks, optionally run
/// against Redis in the same invocation. Prints a table and one JSON line per run.
#[derive(Debug, Parser)]
#[command(name = "attendance-bench", version, about)]
pub(crate) struct Cli {
    /// What to measure.
    #[command(subcommand)]
    pub(crate) scenario: Scenario,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub(crate) enum Scenario {
    /// N clients connect and JOIN, and stay connected: success count, connect+JOIN rate, daemon
    /// RSS per held connection.
    Hold(HoldArgs),
    /// N connected clients JOIN one class at the same moment: time until the last join is
    /// acknowledged and until every announcement is delivered.
    Storm(StormArgs),
    /// N clients in one class, one of them says M timestamped messages: time until the last
    /// client received each (p50/p99/max), deliveries per second, lost messages.
    Fanout(FanoutArgs),
    /// C concurrent clients JOIN (class length 0 s) and PRESENT over fresh identities: acknowledged
    /// marks per second, ack latency, and CSV rows = acknowledged marks.
    Marks(MarksArgs),
    /// The disk's raw append + fdatasync rate on a temporary file beside where the CSV would be.
    Fsync(FsyncArgs),
    /// The daemon started on a generated CSV of `--rows` rows over past days: time from spawn
    /// to its `listening on` line, and its RSS (and peak RSS) right after.
    Startup(StartupArgs),
    /// Internal: holds a share of a `hold` run's clients in a child process.
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// What every load scenario takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct Common {
    /// The attendanced binary to start [default: attendanced beside this executable, else
    /// target/release/attendanced].
    #[arg(long, value_name = "PATH")]
    pub(crate) daemon_bin: Option<PathBuf>,

    /// Load an attendanced already listening here (127.0.0.0/8 only) instead of starting one;
    /// daemon RSS and the CSV check are then not measured.
    #[arg(long, conflicts_with = "daemon_bin")]
    pub(crate) addr: Option<SocketAddr>,

    /// With `--addr` and `--transport ws`: that daemon's web port (`web_listen`), where `/ws`
    /// is served.
    #[arg(long, value_name = "HOST:PORT", requires = "addr")]
    pub(crate) web_addr: Option<SocketAddr>,

    /// Also run the same shape of load against another server, and print the ratios.
    #[arg(long, value_enum)]
    pub(crate) compare: Option<CompareWith>,

    /// The redis-server binary (a name is looked up in PATH).
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    pub(crate) redis_bin: PathBuf,

    /// A daemon setting for the generated config file, as KEY=VALUE (e.g. outbound_queue=1024,
    /// fsync=never); may be repeated, and overrides the scenario's own settings.
    #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "addr")]
    pub(crate) settings: Vec<String>,

    /// The daemon's log filter (RUST_LOG).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub(crate) daemon_log: String,

    /// Directory for the run's temporary directories (the daemon's CSV, Redis's AOF, the fsync
    /// probe) [default: the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    pub(crate) tmp_dir: Option<PathBuf>,

    /// Bound on each measured phase; a phase that does not finish reports partial results.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,

    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) connect_concurrency: usize,

    /// With `--compare` (or `fanout --transport ws`, whose reference is the same fan-out over
    /// TCP, or `fanout --nodes N`, whose reference is one node): run the daemon and the
    /// references alternately this many times each, and end with the median, lowest and highest
    /// ratio of every figure (one round can be off by ±15 % on a shared machine).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub(crate) rounds: u32,

    /// Daemon clients read the greeting before they send JOIN (as a person at netcat does).
    /// By default a client sends JOIN as soon as it is connected, as a program may (Redis
    /// clients, too, send SUBSCRIBE at once); the daemon then answers with the greeting and
    /// `OK JOIN` in one write.
    #[arg(long)]
    pub(crate) wait_hello: bool,
}

/// Servers the same load can be compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CompareWith {
    /// redis-server from the machine's package, started by the bench on a free loopback port.
    Redis,
}

/// How daemon clients reach the daemon.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Transport {
    /// The line protocol on the student port.
    #[default]
    Tcp,
    /// The same protocol over WebSocket, `ws://<web_listen>/ws`, one text frame per line (the
    /// bench starts the daemon with its web port on 127.0.0.1).
    Ws,
}

impl Transport {
    /// The name in reports, JSON and the command line (`"tcp"`, `"ws"`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Ws => "ws",
        }
    }
}

/// `hold`.
#[derive(Debug, Clone, Args)]
pub(crate) struct HoldArgs {
    /// Clients to connect and hold.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub(crate) clients: usize,

    /// How the daemon's clients (and the PING probe) connect: `ws` upgrades at `/ws` on the web
    /// port and reads `HELLO` as a text frame. Redis clients (`--compare redis`) speak RESP
    /// over TCP either way.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub(crate) transport: Transport,

    /// Students per class (Redis: subscribers per channel).
    #[arg(long, default_value_t = 100)]
    pub(crate) class_size: usize,

    /// Spread the clients over this many bench processes [default: as few as the descriptor
    /// limit allows].
    #[arg(long)]
    pub(crate) processes: Option<usize>,

    /// How long to keep holding every client before reading the server's RSS.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) settle: Duration,

    /// While holding, one more client sends PING this often and the reply latency is reported
    /// (with `--set heartbeat=…` shorter than `--settle`, it shows whether the heartbeat to every
    /// held client delays replies). Keep it under the daemon's rate limit (20 lines/s).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub(crate) ping_every: Duration,

    /// While holding, read the server's RSS this often (e.g. 10s), from once every client is
    /// established to the end of `--settle`, and report the number of samples, the first, last
    /// and peak RSS, and the growth first → last and first → peak in percent. At most
    /// settle/interval + 1 and at most 10 000 samples (a longer settle is sampled less often).
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub(crate) rss_every: Option<Duration>,

    /// With `--rss-every`: report a problem (exit 1) when the daemon's RSS grew by more than
    /// this many percent from the first to the last sample (a soak's leak check, e.g. 5), or
    /// could not be sampled. Redis's growth under `--compare redis` is reported, not checked.
    #[arg(
        long,
        value_name = "PERCENT",
        value_parser = parse_percent,
        requires = "rss_every",
        conflicts_with = "addr"
    )]
    pub(crate) max_rss_growth: Option<f64>,

    #[command(flatten)]
    pub(crate) common: Common,
}

/// A humantime duration greater than zero.
fn parse_interval(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d >= Duration::from_millis(1) => Ok(d),
        Ok(_) => Err("must be at least 1ms".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// A finite, non-negative number of percent.
fn parse_percent(text: &str) -> Result<f64, String> {
    let pct: f64 = text
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))?;
    if pct.is_finite() && pct >= 0.0 {
        Ok(pct)
    } else {
        Err("must be a non-negative number of percent".to_owned())
    }
}

/// `storm`.
#[derive(Debug, Clone, Args)]
pub(crate) struct StormArgs {
    /// Clients joining one class at once.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub(crate) clients: usize,

    /// Once every join is answered, the storm is over when no announcement has arrived for this
    /// long (it must exceed the daemon's coalescing window); the time reported is the last
    /// announcement's.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) quiet: Duration,

    #[command(flatten)]
    pub(crate) common: Common,
}

/// `fanout`.
#[derive(Debug, Clone, Args)]
pub(crate) struct FanoutArgs {
    /// Clients in the class (one of them is the speaker).
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub(crate) clients: usize,

    /// Messages the speaker sends.
    #[arg(long, short = 'm', default_value_t = 100)]
    pub(crate) messages: usize,

    /// Messages per second.
    #[arg(long, default_value_t = 50.0)]
    pub(crate) rate: f64,

    /// How the speaker and every receiver connect. `ws`: over `/ws` on the web port; each round
    /// then also runs the same fan-out over TCP on a daemon of its own, and prints the ratios
    /// WebSocket / TCP (not with `--compare`).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub(crate) transport: Transport,

    /// Daemons the class is spread over (clients round-robin, the speaker on the first), as
    /// one service on a private `redis-server` the bench starts on a free loopback port
    /// (`cluster.redis`). Above 1, each round also runs the same fan-out on one node and prints
    /// the ratios N nodes / one node; with `--compare redis`, then Redis too, and the ratios
    /// one node / Redis (not with `--transport ws`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub(crate) nodes: u8,

    #[command(flatten)]
    pub(crate) common: Common,
}

/// `marks`.
#[derive(Debug, Clone, Args)]
pub(crate) struct MarksArgs {
    /// Concurrent clients.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub(crate) clients: usize,

    /// Marks in total, each for a new identity (Redis: one RPUSH each).
    #[arg(long, short = 'm', default_value_t = 10_000)]
    pub(crate) marks: usize,

    /// How a daemon mark is made: `kiosk` sends JOIN and PRESENT together on each client's one
    /// connection, identity after identity (the match for an RPUSH on an open connection);
    /// `fresh` times a new connection, JOIN and PRESENT per mark (what a student's own check-in
    /// costs); `prejoined` connects and JOINs the identities first, untimed, in rounds of up to
    /// `--round`, and times only PRESENT → OK PRESENT.
    #[arg(long, value_enum, default_value_t = MarksShape::Kiosk)]
    pub(crate) shape: MarksShape,

    /// With `--shape prejoined`: identities connected and joined per round (bounded by the
    /// descriptor limit).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) round: usize,

    /// Marks into PostgreSQL at URL (the daemon's `store`) instead of the CSV; stored marks are
    /// counted in its `attendance_marks` table (before and after the run). Give a database the
    /// bench may write to.
    #[arg(long, value_name = "URL")]
    pub(crate) store: Option<String>,

    /// Daemons the marks are spread over (clients round-robin), as one service on a private
    /// `redis-server` and the `--store` database (needed above 1: a node's CSV is its own).
    /// Above 1, each round also runs the same marks on one node and prints the ratios N nodes
    /// / one node; with `--compare redis`, then Redis too.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub(crate) nodes: u8,

    #[command(flatten)]
    pub(crate) common: Common,
}

/// How `marks` makes a daemon mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum MarksShape {
    /// One connection per client; per mark, JOIN and PRESENT sent together, all timed.
    Kiosk,
    /// A new connection, JOIN and PRESENT per mark, all timed.
    Fresh,
    /// Connections joined beforehand; only PRESENT is timed.
    Prejoined,
}

/// `startup`.
#[derive(Debug, Clone, Args)]
pub(crate) struct StartupArgs {
    /// Rows in the generated CSV.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) rows: usize,

    /// Days before today the rows are spread over (oldest first; none is today's).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) days: u16,

    /// The daemon's options (`--daemon-bin`, `--set`, `--daemon-log`, `--tmp-dir`; `--timeout`
    /// bounds the wait for `listening on`). `--addr` and `--compare` do not apply: the run is
    /// about a daemon the bench starts itself.
    #[command(flatten)]
    pub(crate) common: Common,
}

/// `fsync`.
#[derive(Debug, Clone, Args)]
pub(crate) struct FsyncArgs {
    /// Appends, each followed by fdatasync.
    #[arg(long, default_value_t = 2000)]
    pub(crate) count: usize,

    /// Stop after this long even if `count` is not reached.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) max_time: Duration,

    /// Directory for the temporary file [default: the system's temporary directory, where the
    /// bench puts the daemon's CSV].
    #[arg(long, value_name = "DIR")]
    pub(crate) tmp_dir: Option<PathBuf>,
}

/// The hidden `worker` mode: connect `count` clients numbered from `first`, report one JSON line
/// on standard output, hold them until standard input closes.
#[derive(Debug, Clone, Args)]
pub(crate) struct WorkerArgs {
    /// What the clients speak.
    #[arg(long, value_enum)]
    pub(crate) kind: TargetKind,
    /// How daemon clients connect.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub(crate) transport: Transport,
    /// The server (for `--transport ws`, its web port).
    #[arg(long)]
    pub(crate) addr: SocketAddr,
    /// Number of this worker's first client (for identities and source addresses).
    #[arg(long)]
    pub(crate) first: usize,
    /// Clients to hold.
    #[arg(long)]
    pub(crate) count: usize,
    /// Students per class.
    #[arg(long)]
    pub(crate) class_size: usize,
    /// Connections being opened at once.
    #[arg(long)]
    pub(crate) connect_concurrency: usize,
    /// Read the greeting before sending JOIN.
    #[arg(long)]
    pub(crate) wait_hello: bool,
    /// Identity prefix shared by the run.
    #[arg(long)]
    pub(crate) run_id: String,
    /// Bound on establishing.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// The kind of server a client talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TargetKind {
    /// attendanced's line protocol.
    Daemon,
    /// RESP.
    Redis,
}

impl TargetKind {
    /// The name in reports and JSON (`"attendanced"`, `"redis"`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Daemon => "attendanced",
            Self::Redis => "redis",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_scenario_parses_with_common_options() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from([
            "attendance-bench",
            "fanout",
            "--clients",
            "20",
            "-m",
            "5",
            "--compare",
            "redis",
            "--set",
            "outbound_queue=1024",
        ])?;
        let Scenario::Fanout(args) = cli.scenario else {
            panic!("expected fanout");
        };
        assert_eq!((args.clients, args.messages), (20, 5));
        assert_eq!(args.common.compare, Some(CompareWith::Redis));
        assert_eq!(args.common.settings, ["outbound_queue=1024"]);
        Ok(())
    }

    #[test]
    fn addr_and_daemon_bin_exclude_each_other() {
        let r = Cli::try_parse_from([
            "attendance-bench",
            "hold",
            "--addr",
            "127.0.0.1:65001",
            "--daemon-bin",
            "x",
        ]);
        assert!(r.is_err());
    }

    fn hold(args: &[&str]) -> Result<HoldArgs, clap::Error> {
        let cli = Cli::try_parse_from(["attendance-bench", "hold"].iter().chain(args))?;
        let Scenario::Hold(args) = cli.scenario else {
            panic!("expected hold");
        };
        Ok(args)
    }

    #[test]
    fn rss_sampling_is_off_by_default_and_the_growth_limit_needs_it() -> Result<(), clap::Error> {
        let plain = hold(&[])?;
        assert_eq!((plain.rss_every, plain.max_rss_growth), (None, None));
        let soak = hold(&["--rss-every", "10s", "--max-rss-growth", "5"])?;
        assert_eq!(soak.rss_every, Some(Duration::from_secs(10)));
        assert_eq!(soak.max_rss_growth, Some(5.0));
        assert_eq!(
            hold(&["--rss-every", "500ms", "--max-rss-growth", "2.5%"])?.max_rss_growth,
            Some(2.5)
        );
        assert!(hold(&["--max-rss-growth", "5"]).is_err());
        assert!(hold(&["--rss-every", "0s"]).is_err());
        assert!(hold(&["--rss-every", "1s", "--max-rss-growth", "-1"]).is_err());
        assert!(hold(&["--rss-every", "1s", "--max-rss-growth", "NaN"]).is_err());
        let addr = ["--addr", "127.0.0.1:65001", "--rss-every", "1s"];
        assert!(hold(&addr).is_ok());
        assert!(hold(&[&addr[..], &["--max-rss-growth", "5"]].concat()).is_err());
        Ok(())
    }
}
