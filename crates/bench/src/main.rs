//! `attendance-bench`: a load generator for `attendanced`, with the same loads run against Redis
//! for comparison.
//!
//! ```text
//! attendance-bench hold   --clients 5000 [--class-size 100] [--processes K] [--compare redis]
//! attendance-bench hold   --clients 19000 --settle 600s --rss-every 10s --max-rss-growth 5
//! attendance-bench storm  --clients 1000 [--compare redis]
//! attendance-bench fanout --clients 2000 --messages 100 [--rate 50] [--compare redis]
//! attendance-bench fanout --clients 2000 --messages 100 --nodes 3 [--compare redis]
//! attendance-bench marks  --clients 256 --marks 20000 [--compare redis]
//! attendance-bench fsync  [--count 2000] [--tmp-dir DIR]
//! attendance-bench startup [--rows 1000000] [--days 365]
//! ```
//!
//! Each run starts its own daemon (`--daemon-bin`, default `attendanced` beside this binary) on
//! `127.0.0.1:0` in a temporary directory with a generated config file, or loads one already
//! running (`--addr`); prints a table and one JSON line per target; and exits 0 when every
//! correctness check passed, 1 when one failed (lost deliveries, failed clients, CSV rows ≠
//! acknowledgements), 2 when the run could not be carried out. See `crates/bench/README.md`.

mod cli;
mod daemon;
mod holders;
mod line;
mod net;
mod process;
mod redis;
mod report;
mod resp;
mod rss;
mod scenarios;
mod scrape;
mod stats;
mod target;
mod workers;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Err(e) = net::raise_fd_limit() {
        eprintln!("attendance-bench: warning: cannot raise the open-file limit: {e}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("attendance-bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(scenarios::run(cli.scenario));
    // Blocking tasks (a worker's stdin reader) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("attendance-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
