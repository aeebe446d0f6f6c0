//! `fsync`: the disk's raw durable-append rate — append one CSV-sized row to a temporary file and
//! `fdatasync` it, again and again — and, for contrast, the cost of an append without the sync.
//! This is the ceiling a server that synced every mark on its own would have; a group commit
//! divides the syncs among the marks that arrive together. `marks` runs the same probe.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cli::FsyncArgs;
use crate::report::{Report, Value};
use crate::stats::{Samples, Summary, rate};

/// A row the size of a typical CSV mark.
const ROW: &[u8] = b"ComputerNetworks,Div1,JayPatel,18BCP043,Present,2026-11-23T10:00:02.417Z,2026-11-23T09:00:02.101Z,10.0.0.12\n";

/// Appends timed without a sync, for the per-append cost.
const PLAIN_APPENDS: usize = 10_000;

/// What the probe measured.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// Appends each followed by `fdatasync`.
    pub(crate) syncs: usize,
    /// Their total time.
    pub(crate) elapsed: Duration,
    /// Each append+sync's time.
    pub(crate) latency: Option<Summary>,
    /// Mean time of an append without a sync.
    pub(crate) plain_append: Duration,
}

impl Probe {
    /// Append+fdatasync operations per second.
    pub(crate) fn syncs_per_s(&self) -> f64 {
        rate(self.syncs as u64, self.elapsed)
    }
}

/// Measures append+fdatasync on a temporary file in `dir`: `count` times, or until `max_time`.
///
/// # Errors
/// If the file cannot be created, written or synced.
pub(crate) fn probe(dir: &Path, count: usize, max_time: Duration) -> io::Result<Probe> {
    let mut file: File = tempfile::tempfile_in(dir)?;
    // Warm up: allocate the first blocks so the loop measures steady appends.
    file.write_all(ROW)?;
    file.sync_all()?;

    let mut samples = Samples::default();
    let start = Instant::now();
    let mut syncs = 0;
    while syncs < count && start.elapsed() < max_time {
        let t = Instant::now();
        file.write_all(ROW)?;
        file.sync_data()?;
        samples.push(t.elapsed());
        syncs += 1;
    }
    let elapsed = start.elapsed();

    let plain = Instant::now();
    for _ in 0..PLAIN_APPENDS {
        file.write_all(ROW)?;
    }
    let plain_append = plain.elapsed() / u32::try_from(PLAIN_APPENDS).unwrap_or(u32::MAX);

    Ok(Probe {
        syncs,
        elapsed,
        latency: samples.summary(),
        plain_append,
    })
}

/// Runs the `fsync` scenario.
///
/// # Errors
/// If the probe's file cannot be written.
pub(crate) fn run(args: &FsyncArgs) -> anyhow::Result<Report> {
    let dir = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let probe = probe(&dir, args.count, args.max_time)?;
    let mut report = Report::new("fsync", "disk", dir.display().to_string());
    report.info(
        "syncs",
        "append+fdatasync done",
        Value::Count(probe.syncs as u64),
    );
    report.figure(
        "syncs_per_s",
        "append+fdatasync per second",
        Value::Rate(probe.syncs_per_s()),
    );
    report.latency(
        ["sync_p50_ms", "sync_p99_ms", "sync_max_ms"],
        [
            "append+fdatasync p50",
            "append+fdatasync p99",
            "append+fdatasync max",
        ],
        probe.latency,
    );
    report.figure(
        "append_us",
        "append without sync (mean)",
        Value::Micros(probe.plain_append),
    );
    if probe.syncs == 0 {
        report.problem("no sync completed".into());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_stops_at_its_count() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = probe(dir.path(), 5, Duration::from_secs(10))?;
        assert_eq!(p.syncs, 5);
        assert!(p.latency.is_some_and(|s| s.count == 5));
        assert!(p.syncs_per_s() > 0.0);
        Ok(())
    }
}
