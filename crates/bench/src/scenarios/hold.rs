//! `hold`: N clients connect and JOIN (Redis: SUBSCRIBE), in classes of `--class-size`, and stay
//! connected. Reports how many succeeded, the time to establish them all, connects+joins per
//! second, and the server's RSS before, after, and per held connection. When one process cannot
//! hold N sockets, the clients are spread over worker processes.

use anyhow::Context as _;

use crate::cli::HoldArgs;
use crate::daemon::Settings;
use crate::holders::{self, Plan};
use crate::net;
use crate::report::{Report, Value};
use crate::stats::rate;
use crate::target::Target;
use crate::workers;

/// The daemon's settings for `hold`: its defaults (hour-long classes, default rate limits).
pub(crate) fn settings() -> Settings {
    super::base_settings()
}

/// Runs `hold` against `target`.
///
/// # Errors
/// If worker processes cannot be started or do not report.
pub(crate) async fn run(args: &HoldArgs, target: &mut Target) -> anyhow::Result<Report> {
    let per_process = net::connections_per_process();
    let processes = args
        .processes
        .unwrap_or_else(|| args.clients.div_ceil(per_process))
        .max(1);
    let plan = Plan {
        kind: target.kind,
        addr: target.addr,
        first: 0,
        count: args.clients,
        class_size: args.class_size,
        concurrency: args.common.connect_concurrency,
        run_id: super::run_id(),
        timeout: args.common.timeout,
    };
    let rss_before = target.rss_bytes();

    let (established, rss_after, dropped) = if processes == 1 {
        let (established, held) = holders::establish(&plan).await;
        tokio::time::sleep(args.settle).await;
        let rss_after = target.rss_bytes();
        (established, rss_after, held.release().await)
    } else {
        let (established, workers) = workers::establish(&plan, processes)
            .await
            .context("holding clients in worker processes")?;
        tokio::time::sleep(args.settle).await;
        let rss_after = target.rss_bytes();
        (established, rss_after, workers.release().await?)
    };

    let mut report = Report::new("hold", target.kind.name(), target.detail());
    report.info(
        "clients",
        "clients requested",
        Value::Count(args.clients as u64),
    );
    report.info(
        "processes",
        "bench processes",
        Value::Count(processes as u64),
    );
    report.info("held", "clients held", Value::Count(established.ok as u64));
    report.info(
        "failed",
        "clients failed",
        Value::Count(established.failed as u64),
    );
    report.figure(
        "establish_s",
        "time to establish",
        Value::Secs(established.elapsed),
    );
    report.figure(
        "rate_per_s",
        "connects+joins per second",
        Value::Rate(rate(established.ok as u64, established.elapsed)),
    );
    report.info(
        "rss_before_bytes",
        "server RSS before",
        Value::bytes(rss_before),
    );
    report.figure(
        "rss_after_bytes",
        "server RSS holding all",
        Value::bytes(rss_after),
    );
    let per_conn = match (rss_before, rss_after) {
        (Some(before), Some(after)) if established.ok > 0 => {
            Some(after.saturating_sub(before) / established.ok as u64)
        }
        _ => None,
    };
    report.figure(
        "rss_per_conn_bytes",
        "RSS per held connection",
        Value::bytes(per_conn),
    );
    report.info(
        "dropped",
        "closed by the server while held",
        Value::Count(dropped as u64),
    );
    if established.failed > 0 {
        report.problem(format!(
            "{} of {} clients not established; first error: {}",
            established.failed,
            args.clients,
            established.first_error.as_deref().unwrap_or("unknown")
        ));
    }
    if dropped > 0 {
        report.problem(format!("{dropped} held clients were closed by the server"));
    }
    Ok(report)
}
