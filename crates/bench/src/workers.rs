//! Spreading `hold`'s clients over child processes of the bench when one process cannot hold
//! them all (each process has its own descriptor limit, 20 000 on the reference machine).
//!
//! A worker is `attendance-bench worker …` (hidden): it establishes its share, prints one JSON
//! line ([`Established`]) on standard output, holds its clients until its standard input closes,
//! then prints a second line ([`Released`]) and exits. The parent reads those lines; dropping a
//! [`Workers`] kills any worker still running.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use attendance_testkit::Process;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::cli::WorkerArgs;
use crate::holders::{self, Established, Plan};
use crate::net;

/// A worker's second line: how many held clients the server dropped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Released {
    /// Held clients closed by the server (or failed) before release.
    pub(crate) dropped: usize,
}

/// Running workers.
#[derive(Debug)]
pub(crate) struct Workers {
    // `stdins` first: dropping them is what tells workers to release.
    stdins: Vec<ChildStdin>,
    lines: mpsc::UnboundedReceiver<(usize, String)>,
    children: Vec<Process>,
}

/// Starts `processes` workers sharing `plan`'s clients and waits for each to report.
///
/// # Errors
/// If a worker cannot be started, or does not report within the plan's timeout (plus a margin).
pub(crate) async fn establish(
    plan: &Plan,
    processes: usize,
) -> anyhow::Result<(Established, Workers)> {
    let exe = std::env::current_exe().context("locating the bench executable for its workers")?;
    let (tx, lines) = mpsc::unbounded_channel();
    let mut workers = Workers {
        stdins: Vec::new(),
        lines,
        children: Vec::new(),
    };
    let share = plan.count.div_ceil(processes.max(1));
    let concurrency = (plan.concurrency / processes.max(1)).max(1);
    let start = Instant::now();
    let mut first = plan.first;
    let end = plan.first + plan.count;
    let mut worker = 0;
    while first < end {
        let count = share.min(end - first);
        let mut child = Command::new(&exe)
            .arg("worker")
            .args(["--kind", kind_arg(plan)])
            .args(["--transport", plan.transport.name()])
            .args(["--addr", &plan.addr.to_string()])
            .args(["--first", &first.to_string()])
            .args(["--count", &count.to_string()])
            .args(["--class-size", &plan.class_size.to_string()])
            .args(["--connect-concurrency", &concurrency.to_string()])
            .args(["--run-id", &plan.run_id])
            .args((!plan.pipelined).then_some("--wait-hello"))
            .args([
                "--timeout",
                &humantime::format_duration(plan.timeout).to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a bench worker")?;
        if let Some(stdin) = child.stdin.take() {
            workers.stdins.push(stdin);
        }
        if let Some(stdout) = child.stdout.take() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((worker, line)).is_err() {
                        break;
                    }
                }
            });
        }
        workers.children.push(Process::adopt(child));
        first += count;
        worker += 1;
    }

    let mut total = Established::default();
    let deadline = tokio::time::Instant::from_std(start + plan.timeout + Duration::from_secs(30));
    for _ in 0..workers.children.len() {
        let Ok(Some((_, line))) = tokio::time::timeout_at(deadline, workers.lines.recv()).await
        else {
            bail!("a bench worker did not report within {:?}", plan.timeout);
        };
        let report: Established =
            serde_json::from_str(&line).with_context(|| format!("bench worker said {line:?}"))?;
        total.ok += report.ok;
        total.failed += report.failed;
        if total.first_error.is_none() {
            total.first_error = report.first_error;
        }
    }
    total.elapsed = start.elapsed();
    Ok((total, workers))
}

impl Workers {
    /// Tells every worker to release its clients and waits for their [`Released`] lines;
    /// returns the clients the server dropped while they were held.
    ///
    /// # Errors
    /// If a worker does not answer within 30 s.
    pub(crate) async fn release(mut self) -> anyhow::Result<usize> {
        self.stdins.clear();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut dropped = 0;
        for _ in 0..self.children.len() {
            let Ok(Some((_, line))) = tokio::time::timeout_at(deadline, self.lines.recv()).await
            else {
                bail!("a bench worker did not finish after release");
            };
            let released: Released = serde_json::from_str(&line)
                .with_context(|| format!("bench worker said {line:?}"))?;
            dropped += released.dropped;
        }
        Ok(dropped)
    }
}

fn kind_arg(plan: &Plan) -> &'static str {
    match plan.kind {
        crate::cli::TargetKind::Daemon => "daemon",
        crate::cli::TargetKind::Redis => "redis",
    }
}

/// The worker side: establish, report, hold until standard input closes, report again.
///
/// # Errors
/// If standard output cannot be written.
pub(crate) async fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    let plan = Plan {
        kind: args.kind,
        transport: args.transport,
        addr: args.addr,
        first: args.first,
        count: args.count,
        class_size: args.class_size,
        concurrency: args.connect_concurrency,
        pipelined: !args.wait_hello,
        run_id: args.run_id,
        timeout: args.timeout,
    };
    net::ensure_loopback(plan.addr)?;
    let (established, held) = holders::establish(&plan).await;
    say(&serde_json::to_string(&established)?)?;
    // Standard input is read on a blocking thread that ends at EOF, which is what we wait for.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().lock().read_to_end(&mut sink);
    })
    .await?;
    let dropped = held.release().await;
    say(&serde_json::to_string(&Released { dropped })?)?;
    Ok(())
}

fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}
