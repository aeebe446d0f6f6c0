//! `attendanced`: parse settings, start logging, bind, serve until SIGINT/SIGTERM or `SHUTDOWN`.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use attendance_server::{Config, FsyncPolicy};
use clap::Parser;
use serde::Serialize;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// Exit code for a configuration problem (sysexits EX_CONFIG): do not restart until fixed.
const EX_CONFIG: u8 = 78;

/// The network attendance daemon.
///
/// Settings come from defaults, then the --config file, then ATTENDANCE_* environment variables
/// (e.g. ATTENDANCE_CLASS_LENGTH=45m), then these flags.
#[derive(Debug, Parser, Serialize)]
#[command(version, about)]
struct Cli {
    /// TOML config file (see config/attendanced.toml for every key).
    #[arg(long, env = "ATTENDANCE_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,

    /// Address to listen on [default: 0.0.0.0:65001].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,

    /// Attendance CSV file [default: ./attendance.csv].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    csv: Option<PathBuf>,

    /// Time a student must stay before PRESENT is accepted, e.g. 1h, 45m, 90s [default: 1h].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    class_length: Option<Duration>,

    /// Interval of EVENT HEARTBEAT [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    heartbeat: Option<Duration>,

    /// Longest accepted line in bytes, excluding the line ending [default: 1024].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_line: Option<usize>,

    /// File holding the admin token [default: attendanced.token beside the CSV, created if missing].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_token_file: Option<PathBuf>,

    /// Most connections open at once [default: 50000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<usize>,

    /// Time a new connection has to JOIN [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    login_timeout: Option<Duration>,

    /// Time a client may take to read what it is sent before it is closed [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    #[serde(skip_serializing_if = "Option::is_none", with = "humantime_serde")]
    write_timeout: Option<Duration>,

    /// Sync marks to disk before acknowledging them: always (default) or never (unsafe).
    #[arg(long, value_parser = parse_fsync)]
    #[serde(skip_serializing_if = "Option::is_none")]
    fsync: Option<FsyncPolicy>,

    /// PEM certificate chain: serve the student port over TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<PathBuf>,

    /// Log filter when RUST_LOG is not set, e.g. info, debug, attendance_server=trace.
    #[arg(long, env = "ATTENDANCE_LOG_LEVEL", default_value = "info")]
    #[serde(skip)]
    log_level: String,
}

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    match s {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        _ => Err(format!("expected always or never, got {s:?}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cli.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();

    let config = match Config::load(cli.config.as_deref(), &cli) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            let config_error = e
                .downcast_ref::<attendance_server::ServerError>()
                .is_some_and(attendance_server::ServerError::is_config);
            if config_error {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = attendance_server::limits::bind_listener(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        class_length = %humantime::format_duration(config.class_length),
        "attendanced starting"
    );
    attendance_server::run(listener, config, shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    error!(error = %e, "cannot watch SIGTERM; only SIGINT will stop the daemon");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
