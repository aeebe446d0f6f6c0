//! `attendanced`: parse settings, start logging, fit the descriptor limit, bind the student
//! port and the web port, and serve both until SIGINT/SIGTERM or `SHUTDOWN`; or, with
//! `check-config`, only load and report the settings.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use attendance_server::Config;
use attendance_server::cli::{Cli, Command};
use attendance_server::ops::logging::init_logging;
use attendance_server::ops::reload::{Reload, on_sighup};
use clap::Parser;
use tracing::{error, info};

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
    if let Some(Command::Report { .. }) = &cli.command {
        return report_command(config_file.as_deref(), &cli);
    }
    if let Some(Command::Export { .. }) = &cli.command {
        return export_command(config_file.as_deref(), &cli);
    }
    if let Some(Command::Verify { file, key } | Command::Migrate { file, key }) = &cli.command {
        let migrate = matches!(cli.command, Some(Command::Migrate { .. }));
        return chain_command(config_file.as_deref(), &cli, file, key.as_deref(), migrate);
    }
    let log_filter = init_logging(&cli);
    let mut config = match Config::load(config_file.as_deref(), &cli) {
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
    // The process-wide descriptor limit is the binary's to change, not the library's.
    attendance_server::limits::fit_connections_to_fd_limit(&mut config);
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
            error!("{}", report(&e));
            let config_error = e
                .downcast_ref::<attendance_server::ServerError>()
                .is_some_and(attendance_server::ServerError::is_config)
                || e.downcast_ref::<attendance_stores::PgError>()
                    .is_some_and(attendance_stores::PgError::is_config);
            if config_error {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `e` and its causes, each once: a cause whose text the message before it already ends with
/// (an error that shows its source in its own message) is not repeated.
fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !out.ends_with(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}

/// `attendanced check-config`: loads the settings exactly as the daemon would and prints them as
/// TOML, each with its origin; exit 0 (warnings go to standard error too), or 78 with the error
/// naming the key (and file line).
fn check_config(file: Option<&Path>, cli: &Cli) -> ExitCode {
    match Config::load_with_origins(file, cli) {
        Ok((config, mut settings)) => {
            for s in settings.iter_mut().filter(|s| s.key == "store") {
                s.value = config
                    .store
                    .as_deref()
                    .map(|u| format!("{:?}", attendance_stores::redact(u)));
            }
            if let Some(url) = &config.cluster.redis {
                for s in settings.iter_mut().filter(|s| s.key == "cluster") {
                    if let Some(v) = &mut s.value {
                        *v = v.replace(url.as_str(), &attendance_cluster::redact(url));
                    }
                }
            }
            let warnings = config.warnings();
            for warning in &warnings {
                eprintln!("attendanced: warning: {warning}");
            }
            print!(
                "{}",
                attendance_server::config::render_report(file, &settings, &warnings)
            );
            let store = match &config.store {
                Some(url) => check_store(url),
                None => ExitCode::SUCCESS,
            };
            let cluster = match &config.cluster.redis {
                Some(url) => check_cluster(url),
                None => ExitCode::SUCCESS,
            };
            if store == ExitCode::SUCCESS {
                cluster
            } else {
                store
            }
        }
        Err(e) => {
            eprintln!("attendanced: {e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// The settings for a subcommand, or the exit code 78 with the error said on standard error.
fn load_config(file: Option<&Path>, cli: &Cli) -> Result<Config, ExitCode> {
    Config::load(file, cli).map_err(|e| {
        eprintln!("attendanced: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

/// check-config's look at the store: reachable, and its schema not newer than the binary's.
/// Exit 0, 1 unreachable, 78 a schema too new.
fn check_store(url: &str) -> ExitCode {
    let Some(runtime) = small_runtime() else {
        return ExitCode::FAILURE;
    };
    let checked = runtime.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            attendance_stores::check(url),
        )
        .await
    });
    let shown = attendance_stores::redact(url);
    match checked {
        Ok(Ok(version)) => {
            println!(
                "# store {shown}: reachable, schema version {version} (this binary's: {})",
                attendance_stores::SCHEMA_VERSION
            );
            ExitCode::SUCCESS
        }
        Ok(Err(e)) if e.is_config() => {
            eprintln!("attendanced: store {shown}: {e}");
            ExitCode::from(EX_CONFIG)
        }
        Ok(Err(e)) => {
            eprintln!("attendanced: store {shown}: cannot be reached: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("attendanced: store {shown}: no answer within 10s");
            ExitCode::FAILURE
        }
    }
}

/// check-config's look at the cluster's Redis: it answers (exit 0) or not (1).
fn check_cluster(url: &str) -> ExitCode {
    let Some(runtime) = small_runtime() else {
        return ExitCode::FAILURE;
    };
    let shown = attendance_cluster::redact(url);
    match runtime.block_on(attendance_cluster::check(url)) {
        Ok(version) => {
            println!("# cluster.redis {shown}: reachable, Redis {version}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("attendanced: cluster.redis {shown}: cannot be reached: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A current-thread runtime for a subcommand, or `None` (said on standard error).
fn small_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("attendanced: cannot start the runtime: {e}");
            None
        }
    }
}

/// `attendanced export --day D [--class C] [--file F]`: the store's marks of the day as a
/// chained attendance CSV. Exit 0, 1 the store or the file failed, 2 a bad class or day, 78 a
/// bad configuration (or no store configured).
fn export_command(file: Option<&Path>, cli: &Cli) -> ExitCode {
    use attendance_server::store::chain;
    let Some(Command::Export {
        day,
        class,
        file: out,
        key,
    }) = &cli.command
    else {
        return ExitCode::FAILURE;
    };
    let config = match load_config(file, cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(url) = config.store.clone() else {
        eprintln!(
            "attendanced export: no store is configured (set store or --store); the CSV is the record"
        );
        return ExitCode::from(EX_CONFIG);
    };
    if jiff::civil::Date::strptime("%Y-%m-%d", day).is_err() {
        eprintln!("attendanced export: --day {day:?} is not YYYY-MM-DD");
        return ExitCode::from(2);
    }
    let class = match class.as_deref().map(|c| c.split_once('_')) {
        None => None,
        Some(Some((course, division))) => Some((course, division)),
        Some(None) => {
            eprintln!("attendanced export: --class must be COURSE_DIV");
            return ExitCode::from(2);
        }
    };
    let key_path = key
        .clone()
        .unwrap_or_else(|| config.split().0.state_dir().join("attendanced.key"));
    let key = match chain::ChainKey::load_or_create(&key_path) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("attendanced export: chain key: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = small_runtime() else {
        return ExitCode::FAILURE;
    };
    let rows = match runtime.block_on(attendance_stores::export_rows(&url, day, class)) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("attendanced export: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = attendance_server::store::chain::chained_csv(&key, &rows);
    let written = match out {
        Some(path) => std::fs::write(path, text.as_bytes()),
        None => std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes()),
    };
    match written {
        Ok(()) => {
            eprintln!("attendanced export: {} rows of {day}", rows.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("attendanced export: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `attendanced verify FILE` (exit 0 sound, 1 broken, 2 unreadable or not a chained file) and
/// `attendanced migrate FILE` (exit 0 converted, 1 not).
fn chain_command(
    file: Option<&Path>,
    cli: &Cli,
    csv: &Path,
    key: Option<&Path>,
    migrate: bool,
) -> ExitCode {
    use attendance_server::store::chain;
    let key_path = match key {
        Some(k) => k.to_owned(),
        None => match Config::load(file, cli) {
            Ok(c) => c.split().0.state_dir().join("attendanced.key"),
            Err(e) => {
                eprintln!("attendanced: {e}");
                return ExitCode::from(EX_CONFIG);
            }
        },
    };
    let loaded = if migrate {
        chain::ChainKey::load_or_create(&key_path)
    } else {
        chain::ChainKey::load(&key_path)
    };
    let key = match loaded {
        Ok(k) => k,
        Err(e) => {
            eprintln!("attendanced: chain key: {e}");
            return ExitCode::from(2);
        }
    };
    if migrate {
        return match chain::migrate(csv, &key) {
            Ok(rows) => {
                println!(
                    "migrated {}: {rows} rows, chained; the original is {}.v1",
                    csv.display(),
                    csv.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("attendanced migrate: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match chain::verify(csv, &key) {
        Ok(Ok(v)) => {
            let checkpoint = match &v.checkpoint {
                Some(c) => format!("; agrees with the checkpoint of {} ({} rows)", c.at, c.rows),
                None => "; no checkpoint to compare with".to_owned(),
            };
            println!(
                "OK {} rows, head {}{checkpoint}",
                v.rows,
                chain::hex(&v.head)
            );
            ExitCode::SUCCESS
        }
        Ok(Err(broken)) => {
            println!(
                "BROKEN {}, line {}: {}",
                csv.display(),
                broken.line,
                broken.what
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("attendanced verify: {e}");
            ExitCode::from(2)
        }
    }
}

/// `attendanced report`: the class's lines on the day, on standard output; exit 0, 1 if the
/// file cannot be read, 2 for a bad class or day, 78 for a bad configuration.
fn report_command(file: Option<&Path>, cli: &Cli) -> ExitCode {
    let Some(Command::Report {
        class,
        day,
        format,
        file: csv,
        roster,
    }) = &cli.command
    else {
        return ExitCode::FAILURE;
    };
    let config = match load_config(file, cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(runtime) = small_runtime() else {
        return ExitCode::FAILURE;
    };
    let request = attendance_server::store::report::Request {
        class,
        day: day.as_deref(),
        file: csv.as_deref(),
        roster: roster.as_deref(),
        format: *format,
    };
    match runtime.block_on(attendance_server::store::report::run(&config, request)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("attendanced report: {e}");
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
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
    let web = attendance_web::WebFrontend {
        web: match config.web_listen.addr() {
            Some(addr) => Some(
                attendance_server::limits::bind_listener(addr)
                    .with_context(|| format!("cannot listen on {addr} (web_listen)"))?,
            ),
            None => None,
        },
        metrics: match config.metrics_listen {
            Some(addr) => Some(
                attendance_server::limits::bind_listener(addr)
                    .with_context(|| format!("cannot listen on {addr} (metrics_listen)"))?,
            ),
            None => None,
        },
    };
    let shutdown = shutdown_signal();
    let (controls, control_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(on_sighup(reload, controls));
    let frontends: Vec<Box<dyn attendance_server::Frontend>> = vec![Box::new(web)];
    // This node's name in stored rows and in the cluster: the host and the student port.
    let node = node_name(
        listener
            .local_addr()
            .map_or(config.listen.port(), |a| a.port()),
    );
    let store = match &config.store {
        None => None,
        Some(url) => {
            let (sink, index) =
                attendance_stores::connect(url, config.split().0.time_zone(), node.clone()).await?;
            let sink: Box<dyn attendance_server::store::ExternalSink> = Box::new(sink);
            Some((sink, index))
        }
    };
    let cluster = match &config.cluster.redis {
        None => None,
        Some(url) => {
            let options = attendance_cluster::Options {
                url: url.clone(),
                node,
                lease: config.cluster.lease,
            };
            let link: std::sync::Arc<dyn attendance_server::cluster::ClusterLink> =
                std::sync::Arc::new(attendance_cluster::connect(options).await?);
            Some(link)
        }
    };
    attendance_server::run_with_services(
        listener, config, shutdown, control_rx, frontends, store, cluster,
    )
    .await?;
    Ok(())
}

/// This daemon's name in the rows it stores: the host and the student port.
fn node_name(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{port}", host.trim())
}

/// A future that completes on SIGINT or SIGTERM. The handlers are installed here, before the
/// future is first polled: a SIGTERM sent the moment the daemon logs "listening on" must stop
/// it gracefully, not kill it (the default action).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (int, term) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            (int, term) => {
                let e = int
                    .err()
                    .or(term.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                error!(error = %e, "cannot watch SIGINT/SIGTERM; only SHUTDOWN will stop the daemon");
                std::future::pending::<()>().await;
            }
        }
    }
}
