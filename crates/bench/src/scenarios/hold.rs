//! `hold`: N clients connect and JOIN (Redis: SUBSCRIBE), in classes of `--class-size`, and stay
//! connected. Reports how many succeeded, the time to establish them all, connects+joins per
//! second, and the server's RSS before, after, and per held connection; with `--rss-every`, the
//! RSS sampled throughout `--settle` and its growth (see [`crate::rss`]). When one process cannot
//! hold N sockets, the clients are spread over worker processes.

use anyhow::Context as _;
use attendance_protocol::{Command, Event, Reply, ServerLine};

use crate::cli::{HoldArgs, TargetKind, Transport};
use crate::daemon::Settings;
use crate::holders::{self, Plan};
use crate::line::{Endpoint, LineConn, LineError, expect_ok};
use crate::net;
use crate::report::{Report, Value};
use crate::rss::{self, Trace};
use crate::stats::{Samples, rate};
use crate::target::Target;
use crate::workers;
use std::time::{Duration, Instant};

/// The daemon's settings for `hold`: its defaults (hour-long classes, default rate limits), and
/// the web port for `--transport ws`.
pub(crate) fn settings(args: &HoldArgs) -> Settings {
    let mut s = super::base_settings();
    if args.transport == Transport::Ws {
        s.web_on();
    }
    s
}

/// The PING probe's outcome: reply latencies and heartbeats seen.
type Probe = Result<(Samples, u64), LineError>;

/// Waits `--settle` while (against the daemon) one more client PINGs every `--ping-every` and
/// (with `--rss-every`) the server's RSS is sampled, all at once. Returns the probe's outcome
/// (`None` for Redis) and the RSS trace (`None` without `--rss-every`). Every part ends within
/// the settle (the probe and the sampler stop by its end themselves).
async fn settle_and_probe(
    args: &HoldArgs,
    target: &Target,
    to: Endpoint,
    index: usize,
) -> (Option<Probe>, Option<Trace>) {
    let probe = async {
        if target.kind == TargetKind::Daemon {
            Some(ping_probe(to, index, args.settle, args.ping_every).await)
        } else {
            None
        }
    };
    let sampler = async {
        match args.rss_every {
            Some(every) => {
                Some(rss::sample(rss::schedule(args.settle, every), || target.rss_bytes()).await)
            }
            None => None,
        }
    };
    let ((), probe, trace) = tokio::join!(tokio::time::sleep(args.settle), probe, sampler);
    (probe, trace)
}

/// One joined client sending `PING` every `every` for `during`: reply latencies, heartbeats.
async fn ping_probe(
    to: Endpoint,
    index: usize,
    during: Duration,
    every: Duration,
) -> Result<(Samples, u64), LineError> {
    let mut conn = LineConn::connect(index, to).await?;
    conn.join(&format!("Probe{}_P_Probe_1", super::run_id()))
        .await?;
    let end = Instant::now() + during;
    let mut samples = Samples::default();
    let mut heartbeats = 0u64;
    while Instant::now() + every < end {
        let sent = Instant::now();
        conn.send(&Command::Ping(None)).await?;
        loop {
            match conn.reader.expect().await? {
                ServerLine::Event(Event::Heartbeat(_)) => heartbeats += 1,
                ServerLine::Event(_) => {}
                line => {
                    expect_ok(line, |r| matches!(r, Reply::Pong(_)))?;
                    break;
                }
            }
        }
        samples.push(sent.elapsed());
        tokio::time::sleep(every).await;
    }
    Ok((samples, heartbeats))
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
    let to = target.endpoint(args.transport)?;
    let plan = Plan {
        kind: target.kind,
        transport: to.transport,
        addr: to.addr,
        first: 0,
        count: args.clients,
        class_size: args.class_size,
        concurrency: args.common.connect_concurrency,
        pipelined: !args.common.wait_hello,
        run_id: super::run_id(),
        timeout: args.common.timeout,
    };
    let rss_before = target.rss_bytes();

    let probe_index = args.clients;
    let (established, rss_after, dropped, (probe, trace)) = if processes == 1 {
        let (established, held) = holders::establish(&plan).await;
        let settled = settle_and_probe(args, target, to, probe_index).await;
        let rss_after = target.rss_bytes();
        (established, rss_after, held.release().await, settled)
    } else {
        let (established, workers) = workers::establish(&plan, processes)
            .await
            .context("holding clients in worker processes")?;
        let settled = settle_and_probe(args, target, to, probe_index).await;
        let rss_after = target.rss_bytes();
        (established, rss_after, workers.release().await?, settled)
    };

    let mut report = Report::new("hold", target.kind.name(), target.detail());
    if target.kind == TargetKind::Daemon {
        report.transport(to.transport);
    }
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
    if let Some(trace) = &trace {
        // The limit is the daemon's soak target; Redis's growth is shown for comparison only.
        let limit = args
            .max_rss_growth
            .filter(|_| target.kind == TargetKind::Daemon);
        rss::add_to(&mut report, trace, limit);
    }
    report.info(
        "dropped",
        "closed by the server while held",
        Value::Count(dropped as u64),
    );
    match probe {
        Some(Ok((mut samples, heartbeats))) => {
            let summary = samples.summary();
            let pings = summary.as_ref().map_or(0, |s| s.count);
            report.info("pings", "PINGs while holding", Value::Count(pings as u64));
            report.info(
                "heartbeats_seen",
                "heartbeats seen meanwhile",
                Value::Count(heartbeats),
            );
            report.latency(
                ["ping_p50_ms", "ping_p99_ms", "ping_max_ms"],
                ["PING reply p50", "PING reply p99", "PING reply max"],
                summary,
            );
        }
        Some(Err(e)) => report.problem(format!("the PING probe failed: {e}")),
        None => {}
    }
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
