//! `startup`: how long the daemon takes to open a large CSV, and what it costs in memory. The
//! bench writes a valid attendance CSV of `--rows` rows, spread over the `--days` days before
//! today, into a new directory, starts the daemon on it (through `attendance-testkit`, as every
//! scenario does), and reports the time from spawning it to its `listening on` line and its
//! memory right after (`VmRSS` and the peak `VmHWM`, from `/proc/<pid>/status`). Then it connects
//! once and reads the greeting (the daemon serves; its SIGTERM handler is in place only once its
//! main loop runs, just after the `listening on` line), stops the daemon with SIGTERM and checks
//! that the CSV still holds every row.

use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::cli::StartupArgs;
use crate::daemon::{self, DaemonProcess, Settings};
use crate::line::LineConn;
use crate::report::{Report, Value};

/// The CSV's header, as the daemon writes it.
const HEADER: &str = "course,division,name,roll,status,marked_at,joined_at,client_addr,minutes_late,minutes_attended,session_start,row_hash";

/// The `row_hash` of every generated row: a placeholder (the daemon reads only the last row's
/// hash at start-up, as its chain's head, and verifies nothing; `attendanced verify` would
/// reject this file, which is not the bench's concern).
const HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Divisions the rows are spread over (classes `CN D1` … `CN D8`).
const DIVISIONS: usize = 8;

/// The daemon's settings for the run: the base settings (the CSV is only read at start-up).
pub(crate) fn settings() -> Settings {
    super::base_settings()
}

/// Writes `rows` rows to `path`, oldest first, spread evenly over the `days` days before
/// `today`: `CN,D<k>,Name<i>,<i>,Present,<day>T10:00:00.000Z,<day>T09:00:00.000Z,127.0.0.1,0,60,<day>T09:00:00.000Z,<hash>`
/// (every roll unique, so no row repeats another's mark). Returns the rows written.
///
/// # Errors
/// If the file cannot be written.
pub(crate) fn write_csv(
    path: &Path,
    rows: usize,
    days: u16,
    today: time::Date,
) -> io::Result<usize> {
    let days = usize::from(days.max(1));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    writeln!(out, "{HEADER}")?;
    let mut day = None;
    let mut date_text = String::new();
    for i in 0..rows {
        // Row i falls on day `days - i * days / rows` before today: the oldest first.
        let back = days - i * days / rows.max(1);
        if day != Some(back) {
            let date = today
                .checked_sub(time::Duration::days(
                    i64::try_from(back).unwrap_or(i64::MAX),
                ))
                .unwrap_or(time::Date::MIN);
            date_text = date.to_string();
            day = Some(back);
        }
        let division = 1 + i % DIVISIONS;
        writeln!(
            out,
            "CN,D{division},Name{i},{i},Present,{date_text}T10:00:00.000Z,{date_text}T09:00:00.000Z,127.0.0.1,0,60,{date_text}T09:00:00.000Z,{HASH}"
        )?;
    }
    out.into_inner()
        .map_err(io::IntoInnerError::into_error)?
        .sync_all()?;
    Ok(rows)
}

/// Longest wait for the greeting once the daemon listens.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `startup`.
///
/// # Errors
/// If the CSV cannot be written or the daemon does not start, greet or stop.
pub(crate) async fn run(args: &StartupArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    if common.addr.is_some() || common.compare.is_some() {
        bail!("startup starts its own daemon: --addr and --compare do not apply");
    }
    let mut settings = settings();
    settings.apply_overrides(&common.settings)?;
    let bin = common
        .daemon_bin
        .clone()
        .unwrap_or_else(daemon::default_binary);
    let dir = daemon::run_dir(common.tmp_dir.as_deref())?;
    let csv = dir.path().join(daemon::CSV_NAME);
    let generated = Instant::now();
    let today = time::OffsetDateTime::now_utc().date();
    let rows = write_csv(&csv, args.rows, args.days, today)
        .with_context(|| format!("writing {}", csv.display()))?;
    let generated = generated.elapsed();
    let csv_bytes = std::fs::metadata(&csv).map(|m| m.len()).ok();

    let mut daemon =
        DaemonProcess::start_in(dir, &bin, &settings, &common.daemon_log, common.timeout)?;
    let startup = daemon.startup();
    let memory = daemon.memory();
    let detail = format!("{}, pid {}", daemon.addr(), daemon.pid());
    let greeting = Instant::now();
    tokio::time::timeout(HELLO_TIMEOUT, LineConn::connect(0, daemon.addr()))
        .await
        .with_context(|| format!("no greeting within {HELLO_TIMEOUT:?}"))?
        .context("connecting to the daemon after start-up")?;
    let first_hello = startup + greeting.elapsed();

    let status = daemon.stop().context("stopping the daemon")?;
    if !status.success() {
        bail!("the daemon exited with {status} on SIGTERM");
    }
    let kept = super::marks::csv_rows(&daemon.csv_path())?;

    let mut report = Report::new("startup", "attendanced", detail);
    report.info("rows", "rows in the CSV", Value::Count(rows as u64));
    report.info("days", "days they span", Value::Count(u64::from(args.days)));
    report.info("csv_bytes", "CSV size", Value::bytes(csv_bytes));
    report.info(
        "generate_s",
        "time to write the CSV",
        Value::Secs(generated),
    );
    report.figure("startup_s", "spawn to `listening on`", Value::Secs(startup));
    report.figure(
        "first_hello_s",
        "spawn to the first greeting",
        Value::Secs(first_hello),
    );
    report.figure(
        "rss_bytes",
        "daemon RSS right after",
        Value::bytes(memory.map(|m| m.rss)),
    );
    report.figure(
        "peak_rss_bytes",
        "daemon peak RSS (VmHWM)",
        Value::bytes(memory.map(|m| m.peak)),
    );
    report.info(
        "rows_after",
        "CSV rows after SIGTERM",
        Value::Count(kept as u64),
    );
    if memory.is_none() {
        report.problem("the daemon's memory could not be read from /proc".to_owned());
    }
    if kept != rows {
        report.problem(format!(
            "the CSV holds {kept} rows after the daemon stopped, {rows} were written"
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_has_a_header_and_rows_spread_over_past_days() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a.csv");
        let today = time::macros::date!(2026 - 11 - 23);
        assert_eq!(write_csv(&path, 10, 5, today)?, 10);
        let text = std::fs::read_to_string(&path)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11);
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            lines[1],
            format!(
                "CN,D1,Name0,0,Present,2026-11-18T10:00:00.000Z,2026-11-18T09:00:00.000Z,127.0.0.1,0,60,2026-11-18T09:00:00.000Z,{HASH}"
            )
        );
        assert_eq!(
            lines[10],
            format!(
                "CN,D2,Name9,9,Present,2026-11-22T10:00:00.000Z,2026-11-22T09:00:00.000Z,127.0.0.1,0,60,2026-11-22T09:00:00.000Z,{HASH}"
            )
        );
        assert!(lines.iter().skip(1).all(|l| l.split(',').count() == 12));
        assert!(!text.contains("2026-11-23"), "no row is today's");
        Ok(())
    }
}
