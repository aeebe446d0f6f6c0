//! The server's RSS over a run (`hold --rss-every`): readings at a fixed interval while the
//! clients are held, and how much it grew from the first reading (taken once every client was
//! established) to the last and to the peak. A soak is `hold --settle 600s --rss-every 10s
//! --max-rss-growth 5`.

use std::time::Duration;

use crate::report::{Report, Value};

/// Most readings one run takes, whatever `--settle` and `--rss-every` are; a longer settle is
/// sampled at a correspondingly longer interval.
pub(crate) const MAX_SAMPLES: usize = 10_000;

/// When to read: every `interval`, `count` times, the first at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// Between two readings.
    pub(crate) interval: Duration,
    /// Readings in all (≥ 1).
    pub(crate) count: usize,
}

/// The schedule for sampling every `every` during `during`: readings at 0, `every`, 2 × `every`,
/// … up to `during`, so at most `during / every + 1` and at most [`MAX_SAMPLES`]; when that cap
/// applies, the interval is stretched so the readings still span `during`.
pub(crate) fn schedule(during: Duration, every: Duration) -> Schedule {
    let every = every.max(Duration::from_millis(1));
    let steps = during.as_nanos() / every.as_nanos();
    let wanted = usize::try_from(steps).map_or(usize::MAX, |s| s.saturating_add(1));
    if wanted <= MAX_SAMPLES {
        return Schedule {
            interval: every,
            count: wanted,
        };
    }
    let last_step = u32::try_from(MAX_SAMPLES - 1).unwrap_or(u32::MAX);
    Schedule {
        interval: (during / last_step).max(every),
        count: MAX_SAMPLES,
    }
}

/// What sampling found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Trace {
    /// Between two readings.
    pub(crate) interval: Duration,
    /// Readings that gave a value, in order (`read` gives none for a server the bench did not
    /// start, or one that has exited).
    pub(crate) readings: Vec<u64>,
}

/// Calls `read` on `schedule`: at once, then at fixed offsets from the start (no drift; a late
/// reading does not push back the next). Takes at most `schedule.count` readings and finishes
/// by `schedule.interval × (count − 1)` after the start (plus one late reading).
pub(crate) async fn sample(schedule: Schedule, read: impl Fn() -> Option<u64>) -> Trace {
    let start = tokio::time::Instant::now();
    let mut readings = Vec::with_capacity(schedule.count.min(MAX_SAMPLES));
    for k in 0..schedule.count.min(MAX_SAMPLES) {
        if k > 0 {
            let offset = u32::try_from(k)
                .ok()
                .and_then(|k| schedule.interval.checked_mul(k));
            let Some(at) = offset.and_then(|o| start.checked_add(o)) else {
                break;
            };
            tokio::time::sleep_until(at).await;
        }
        if let Some(rss) = read() {
            readings.push(rss);
        }
    }
    Trace {
        interval: schedule.interval,
        readings,
    }
}

/// The figures of a [`Trace`] with at least one reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Growth {
    /// Readings.
    pub(crate) samples: usize,
    /// The first reading, in bytes.
    pub(crate) first: u64,
    /// The last reading.
    pub(crate) last: u64,
    /// The largest reading.
    pub(crate) max: u64,
    /// (last − first) / first × 100 (negative when it shrank); `None` when first is 0.
    pub(crate) growth_pct: Option<f64>,
    /// (max − first) / first × 100; `None` when first is 0.
    pub(crate) max_growth_pct: Option<f64>,
}

/// Growth over `readings` (in order), or `None` without readings.
pub(crate) fn growth(readings: &[u64]) -> Option<Growth> {
    let (&first, &last) = (readings.first()?, readings.last()?);
    let max = readings.iter().copied().max().unwrap_or(last);
    let pct = |to: u64| (first > 0).then(|| (to as f64 - first as f64) / first as f64 * 100.0);
    Some(Growth {
        samples: readings.len(),
        first,
        last,
        max,
        growth_pct: pct(last),
        max_growth_pct: pct(max),
    })
}

/// The problem to report when the growth first → last exceeds `limit_pct`, else `None`.
pub(crate) fn check(growth: &Growth, limit_pct: f64) -> Option<String> {
    let pct = growth.growth_pct?;
    (pct > limit_pct).then(|| {
        format!(
            "server RSS grew {pct:.2} % while holding ({} KiB → {} KiB over {} samples), more \
             than --max-rss-growth {limit_pct} %",
            growth.first / 1024,
            growth.last / 1024,
            growth.samples
        )
    })
}

/// Adds `trace`'s figures to `report`; with `limit_pct`, a problem when the growth exceeds it or
/// cannot be measured (no reading).
pub(crate) fn add_to(report: &mut Report, trace: &Trace, limit_pct: Option<f64>) {
    let growth = growth(&trace.readings);
    let bytes = |f: fn(&Growth) -> u64| Value::bytes(growth.as_ref().map(f));
    let pct = |f: fn(&Growth) -> Option<f64>| {
        growth
            .as_ref()
            .and_then(f)
            .map_or(Value::Missing, Value::Percent)
    };
    report.info(
        "rss_every_s",
        "RSS sample interval",
        Value::Secs(trace.interval),
    );
    report.info(
        "rss_samples",
        "RSS samples while holding",
        Value::Count(trace.readings.len() as u64),
    );
    report.info("rss_first_bytes", "RSS at first sample", bytes(|g| g.first));
    report.info("rss_last_bytes", "RSS at last sample", bytes(|g| g.last));
    report.figure("rss_max_bytes", "RSS peak while holding", bytes(|g| g.max));
    report.info(
        "rss_growth_pct",
        "RSS growth first → last",
        pct(|g| g.growth_pct),
    );
    report.info(
        "rss_max_growth_pct",
        "RSS growth first → peak",
        pct(|g| g.max_growth_pct),
    );
    let Some(limit) = limit_pct else {
        return;
    };
    report.info(
        "rss_growth_limit_pct",
        "RSS growth allowed",
        Value::Percent(limit),
    );
    let problem = match growth.as_ref().filter(|g| g.growth_pct.is_some()) {
        Some(g) => check(g, limit),
        None => Some(format!(
            "--max-rss-growth {limit} % given, but the server's RSS could not be sampled"
        )),
    };
    if let Some(problem) = problem {
        report.problem(problem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn growth_is_last_and_peak_over_first_in_percent() {
        let g = growth(&[1000, 1030, 1080, 1020]).expect("readings");
        assert_eq!((g.samples, g.first, g.last, g.max), (4, 1000, 1020, 1080));
        let pct = g.growth_pct.expect("first > 0");
        let max_pct = g.max_growth_pct.expect("first > 0");
        assert!((pct - 2.0).abs() < 1e-9, "{pct}");
        assert!((max_pct - 8.0).abs() < 1e-9, "{max_pct}");
    }

    #[test]
    fn shrinking_is_negative_growth_and_edge_cases_have_no_percent() {
        let g = growth(&[2000, 1500]).expect("readings");
        assert!((g.growth_pct.expect("pct") + 25.0).abs() < 1e-9);
        assert!(g.max_growth_pct.expect("pct").abs() < 1e-9);
        let one = growth(&[4096]).expect("one reading");
        assert_eq!((one.first, one.last, one.max), (4096, 4096, 4096));
        assert_eq!(one.growth_pct, Some(0.0));
        assert_eq!(growth(&[]), None);
        assert_eq!(growth(&[0, 10]).and_then(|g| g.growth_pct), None);
    }

    #[test]
    fn only_growth_beyond_the_limit_is_a_problem() {
        let within = growth(&[1000, 1200, 1050]).expect("readings"); // +5 %, peak +20 %
        assert_eq!(check(&within, 5.0), None);
        let beyond = growth(&[1000, 1051]).expect("readings");
        let problem = check(&beyond, 5.0).expect("5.1 % > 5 %");
        assert!(problem.contains("5.10 %"), "{problem}");
        let kib = growth(&[40 << 20, 43 << 20]).expect("readings");
        let problem = check(&kib, 5.0).expect("7.5 % > 5 %");
        assert!(problem.contains("40960 KiB → 44032 KiB"), "{problem}");
        let shrunk = growth(&[1000, 900]).expect("readings");
        assert_eq!(check(&shrunk, 0.0), None);
    }

    #[test]
    fn the_schedule_is_bounded_and_spans_the_settle() {
        let s = |d, e| schedule(Duration::from_secs(d), Duration::from_secs(e));
        assert_eq!(s(600, 10).count, 61);
        assert_eq!(s(600, 10).interval, Duration::from_secs(10));
        assert_eq!(s(20, 3).count, 7); // 0, 3, … 18
        assert_eq!(s(1, 5).count, 1); // only the first reading
        let long = s(1_000_000, 1);
        assert_eq!(long.count, MAX_SAMPLES);
        assert!(long.interval * (MAX_SAMPLES as u32 - 1) <= Duration::from_secs(1_000_000));
        assert!(long.interval > Duration::from_secs(99));
        let zero = schedule(Duration::from_secs(1), Duration::ZERO);
        assert!(zero.count <= MAX_SAMPLES && zero.interval > Duration::ZERO);
    }

    #[tokio::test]
    async fn sampling_takes_the_scheduled_readings_and_skips_unknown_ones() {
        let calls = Cell::new(0u64);
        let schedule = Schedule {
            interval: Duration::from_millis(5),
            count: 4,
        };
        let trace = sample(schedule, || {
            calls.set(calls.get() + 1);
            (calls.get() != 2).then_some(calls.get() * 100)
        })
        .await;
        assert_eq!(calls.get(), 4);
        assert_eq!(trace.readings, [100, 300, 400]);
        assert_eq!(trace.interval, Duration::from_millis(5));
    }

    #[test]
    fn the_report_gets_the_figures_and_a_problem_only_beyond_a_given_limit()
    -> Result<(), serde_json::Error> {
        let trace = Trace {
            interval: Duration::from_secs(10),
            readings: vec![1000, 1100],
        };
        let mut r = Report::new("hold", "attendanced", "x".into());
        add_to(&mut r, &trace, None);
        assert!(r.ok());
        let v: serde_json::Value = serde_json::from_str(&r.json())?;
        assert_eq!(v["rss_samples"], 2);
        assert_eq!(v["rss_first_bytes"], 1000);
        assert_eq!(v["rss_max_bytes"], 1100);
        assert_eq!(v["rss_growth_pct"], 10.0);
        assert!(v.get("rss_growth_limit_pct").is_none());

        let mut r = Report::new("hold", "attendanced", "x".into());
        add_to(&mut r, &trace, Some(5.0));
        assert!(!r.ok());
        let mut r = Report::new("hold", "attendanced", "x".into());
        add_to(&mut r, &trace, Some(10.0));
        assert!(r.ok());

        let mut r = Report::new("hold", "attendanced", "x".into());
        add_to(&mut r, &Trace::default(), None);
        assert!(r.ok(), "no limit, nothing fails");
        let v: serde_json::Value = serde_json::from_str(&r.json())?;
        assert_eq!(v["rss_samples"], 0);
        assert!(v["rss_growth_pct"].is_null());
        let mut r = Report::new("hold", "attendanced", "x".into());
        add_to(&mut r, &Trace::default(), Some(5.0));
        assert!(!r.ok(), "a limit that cannot be checked is not passed");
        Ok(())
    }
}
