//! Latency samples and their summary. Runs are bounded (at most a few million samples), so the
//! samples are simply kept and sorted: exact percentiles, no histogram resolution to explain.

use std::time::Duration;

/// Latencies collected during a run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples(Vec<Duration>);

/// The figures a table shows for a set of samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    /// How many samples.
    pub(crate) count: usize,
    /// Median (nearest rank).
    pub(crate) p50: Duration,
    /// 99th percentile (nearest rank).
    pub(crate) p99: Duration,
    /// Largest.
    pub(crate) max: Duration,
}

impl Samples {
    /// Adds one sample.
    pub(crate) fn push(&mut self, sample: Duration) {
        self.0.push(sample);
    }

    /// Adds all of `other`.
    pub(crate) fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// The summary, or `None` without samples.
    pub(crate) fn summary(&mut self) -> Option<Summary> {
        self.0.sort_unstable();
        let max = *self.0.last()?;
        Some(Summary {
            count: self.0.len(),
            p50: percentile(&self.0, 50.0),
            p99: percentile(&self.0, 99.0),
            max,
        })
    }
}

/// Nearest-rank percentile of sorted, non-empty `sorted`.
fn percentile(sorted: &[Duration], pct: f64) -> Duration {
    // rank = ceil(pct/100 · n), 1-based
    let n = sorted.len();
    let rank = ((pct / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// `count` events per second over `elapsed` (0 when nothing elapsed).
pub(crate) fn rate(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut s = Samples::default();
        for i in (1..=100).rev() {
            s.push(ms(i));
        }
        let sum = s.summary().expect("samples");
        assert_eq!(sum.count, 100);
        assert_eq!(sum.p50, ms(50));
        assert_eq!(sum.p99, ms(99));
        assert_eq!(sum.max, ms(100));
    }

    #[test]
    fn one_sample_is_every_percentile_and_none_is_none() {
        let mut s = Samples::default();
        assert_eq!(s.summary(), None);
        s.push(ms(7));
        let sum = s.summary().expect("samples");
        assert_eq!((sum.p50, sum.p99, sum.max), (ms(7), ms(7), ms(7)));
    }

    #[test]
    fn rate_is_per_second() {
        assert!((rate(500, ms(250)) - 2000.0).abs() < 1e-9);
        assert!(rate(5, Duration::ZERO).abs() < f64::EPSILON);
    }
}
