//! `attendanced`: parse settings, start logging, bind, serve until SIGINT/SIGTERM or `SHUTDOWN`;
//! or, with `check-config`, only load and report the settings.

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use attendance_server::Config;
use attendance_server::cli::{Cli, Command, LogFormat};
use attendance_server::config::Setting;
use clap::Parser;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// jemalloc: for tens of thousands of idle connections it keeps about 200 bytes less per
/// connection resident than glibc's malloc (measured with attendance-bench hold), and it does
/// not shrink and regrow the heap under bursts of marks.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit code for a configuration problem (sysexits EX_CONFIG): do not restart until fixed.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_file = cli.config_file();
    if cli.command == Some(Command::CheckConfig) {
        return check_config(config_file.as_deref(), &cli);
    }
    let log_filter = init_logging(&cli);

    let config = match Config::load(config_file.as_deref(), &cli) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    log_filter.apply(&config.log_level);
    if let Some(file) = &config_file {
        info!(file = %file.display(), "configuration loaded");
    }
    // systemd socket activation: take the passed listener now, before any thread starts
    // (reading LISTEN_FDS also clears it, which is only sound single-threaded).
    let passed = match listenfd::ListenFd::from_env().take_tcp_listener(0) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "LISTEN_FDS is set but fd 3 is not a TCP listener");
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
    let reload = Reload {
        file: config_file,
        cli,
        log_filter,
    };
    match runtime.block_on(serve(config, passed, reload)) {
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

/// Changes the log filter of the running subscriber (`log_level`), unless `RUST_LOG` rules.
struct LogFilter {
    set: Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>,
}

impl LogFilter {
    fn apply(&self, level: &str) {
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
fn init_logging(cli: &Cli) -> LogFilter {
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

/// `attendanced check-config`: loads the settings exactly as the daemon would and prints them as
/// TOML, each with its origin; exit 0, or 78 with the error naming the key (and file line).
fn check_config(file: Option<&Path>, cli: &Cli) -> ExitCode {
    match Config::load_with_origins(file, cli) {
        Ok((_, settings)) => {
            print!("{}", render_settings(file, &settings));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("attendanced: {e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// The report of `check-config`: a valid TOML config with the effective values, unset keys
/// commented out, and each key's origin as a trailing comment.
fn render_settings(file: Option<&Path>, settings: &[Setting]) -> String {
    let mut out = match file {
        Some(path) => format!("# {} is valid.\n", path.display()),
        None => format!(
            "# No config file ({} does not exist); the settings are valid.\n",
            attendance_server::cli::DEFAULT_CONFIG_FILE
        ),
    };
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

/// What a SIGHUP needs to load the settings again.
struct Reload {
    file: Option<std::path::PathBuf>,
    cli: Cli,
    log_filter: LogFilter,
}

async fn serve(
    config: Config,
    passed: Option<std::net::TcpListener>,
    reload: Reload,
) -> anyhow::Result<()> {
    let listener = match passed {
        Some(std_listener) => {
            std_listener
                .set_nonblocking(true)
                .context("socket passed by systemd")?;
            info!("using the listening socket passed by systemd");
            tokio::net::TcpListener::from_std(std_listener).context("socket passed by systemd")?
        }
        None => attendance_server::limits::bind_listener(config.listen)
            .with_context(|| format!("cannot listen on {}", config.listen))?,
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        class_length = %humantime::format_duration(config.class_length),
        "attendanced starting"
    );
    let (controls, control_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(reload_on_sighup(reload, controls));
    attendance_server::run_controlled(listener, config, shutdown_signal(), control_rx).await?;
    Ok(())
}

/// On SIGHUP: load the settings again (refusing an invalid file, keeping the old settings),
/// apply the log level, and hand the rest to the server, which also reopens the CSV.
async fn reload_on_sighup(
    reload: Reload,
    controls: tokio::sync::mpsc::Sender<attendance_server::Control>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot watch SIGHUP; reload needs a restart");
            return;
        }
    };
    while hup.recv().await.is_some() {
        info!("SIGHUP: reloading the settings and reopening the csv");
        let config = match Config::load(reload.file.as_deref(), &reload.cli) {
            Ok(c) => c,
            Err(e) => {
                error!("refusing the new configuration, keeping the running one: {e}");
                continue;
            }
        };
        reload.log_filter.apply(&config.log_level);
        let (tx, rx) = tokio::sync::oneshot::channel();
        if controls
            .send(attendance_server::Control::Reload(Box::new(config), tx))
            .await
            .is_err()
        {
            return;
        }
        match rx.await {
            Ok(Ok(changed)) if changed.is_empty() => info!("reload done; no setting changed"),
            Ok(Ok(changed)) => info!(changed = %changed.join("; "), "reload done"),
            Ok(Err(e)) => error!(error = %e, "reload: the csv could not be reopened"),
            Err(_) => return,
        }
    }
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
