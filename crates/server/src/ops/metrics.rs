//! Prometheus metrics: counters that the connections and the writer bump (each bump is one
//! atomic add, except the two histograms the writer feeds once per batch), gauges read from the
//! live state at scrape time, and their text exposition for `/metrics` (served by `crates/web`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use attendance_protocol::ErrorCode;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// The git commit the daemon was built from (see `build.rs`).
const COMMIT: &str = env!("ATTENDANCED_GIT_COMMIT");

/// `last_fsync_micros` before the first sync.
const NO_SYNC_YET: u64 = u64::MAX;

type CodeLabel = [(&'static str, &'static str); 1];

/// A float gauge (seconds).
type Seconds = Gauge<f64, AtomicU64>;

/// Every metric of the daemon, registered under the prefix `attendanced_`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    started: Instant,
    connections: Gauge,
    joined: Gauge,
    classes: Gauge,
    writer_queue: Gauge,
    joins: Counter,
    marks: Counter,
    /// One counter per [`ErrorCode::ALL`] entry, in that order: handles into the
    /// `errors_total{code}` family, so counting an error takes no lock.
    errors: Vec<Counter>,
    lags: Counter,
    lagged_lines: Counter,
    dependency_up: Family<CodeLabel, Gauge>,
    dependency_latency: Family<CodeLabel, Seconds>,
    proxy_header_errors: Counter,
    batch_size: Histogram,
    fsync_seconds: Histogram,
    last_fsync_micros: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, every counter at zero; uptime counts from now.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("attendanced");
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Student connections open now (joined or not)",
            connections.clone(),
        );
        let joined = Gauge::default();
        registry.register(
            "joined_students",
            "Students checked in to a class now",
            joined.clone(),
        );
        let classes = Gauge::default();
        registry.register(
            "classes",
            "Classes with at least one student checked in",
            classes.clone(),
        );
        let writer_queue = Gauge::default();
        registry.register(
            "writer_queue",
            "Marks waiting for the CSV writer",
            writer_queue.clone(),
        );
        let joins = Counter::default();
        registry.register(
            "joins",
            "Students checked in (successful first JOINs)",
            joins.clone(),
        );
        let marks = Counter::default();
        registry.register(
            "marks",
            "Marks written to the CSV and synced (new rows)",
            marks.clone(),
        );
        let family = Family::<CodeLabel, Counter>::default();
        let errors = ErrorCode::ALL
            .iter()
            .map(|code| family.get_or_create(&[("code", code.as_str())]).clone())
            .collect();
        registry.register("errors", "ERR lines sent, by code", family);
        let lags = Counter::default();
        registry.register(
            "broadcast_lags",
            "Times a connection fell more than outbound_queue announcements behind (EVENT LAGGED)",
            lags.clone(),
        );
        let lagged_lines = Counter::default();
        registry.register(
            "broadcast_skipped",
            "Announcements skipped by connections that lagged",
            lagged_lines.clone(),
        );
        let proxy_header_errors = Counter::default();
        registry.register(
            "proxy_header_errors",
            "Connections from a trusted load balancer closed for a bad, incomplete or late PROXY \
             protocol header",
            proxy_header_errors.clone(),
        );
        let dependency_up = Family::<CodeLabel, Gauge>::default();
        registry.register(
            "dependency_up",
            "Whether the last use of an outside service (the PostgreSQL store) succeeded",
            dependency_up.clone(),
        );
        let dependency_latency = Family::<CodeLabel, Seconds>::default();
        registry.register_with_unit(
            "dependency_latency",
            "How long the last successful use of an outside service took",
            Unit::Seconds,
            dependency_latency.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 4.0, 7));
        registry.register(
            "writer_batch_size",
            "Marks written and synced together (group commit)",
            batch_size.clone(),
        );
        let fsync_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register_with_unit(
            "fsync_duration",
            "Time of each durable commit: the fdatasync of the CSV, or the transaction of a PostgreSQL store",
            Unit::Seconds,
            fsync_seconds.clone(),
        );
        registry.register(
            "build",
            "Version and git commit of the running daemon",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", COMMIT),
            ]),
        );
        Self {
            registry,
            started: Instant::now(),
            connections,
            joined,
            classes,
            writer_queue,
            joins,
            marks,
            errors,
            lags,
            lagged_lines,
            proxy_header_errors,
            dependency_up,
            dependency_latency,
            batch_size,
            fsync_seconds,
            last_fsync_micros: AtomicU64::new(NO_SYNC_YET),
        }
    }

    /// A student checked in.
    pub fn joined(&self) {
        self.joins.inc();
    }

    /// A new mark is on disk.
    pub fn marked(&self) {
        self.marks.inc();
    }

    /// An `ERR <code>` line was sent.
    pub fn refused(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            if let Some(counter) = self.errors.get(i) {
                counter.inc();
            }
        }
    }

    /// A connection from a trusted load balancer was closed for its PROXY header.
    pub fn bad_proxy_header(&self) {
        self.proxy_header_errors.inc();
    }

    /// A connection lagged and `skipped` announcements were dropped for it.
    pub fn lagged(&self, skipped: u64) {
        self.lags.inc();
        self.lagged_lines.inc_by(skipped);
    }

    /// The writer wrote a batch of `size` marks; `sync` is how long its `fdatasync` took, if it
    /// ran and succeeded.
    pub fn batch(&self, size: usize, sync: Option<Duration>) {
        self.batch_size.observe(size as f64);
        if let Some(d) = sync {
            self.fsync_seconds.observe(d.as_secs_f64());
            let micros = u64::try_from(d.as_micros()).unwrap_or(NO_SYNC_YET - 1);
            self.last_fsync_micros
                .store(micros.min(NO_SYNC_YET - 1), Ordering::Relaxed);
        }
    }

    /// How long the last `fdatasync` took, if there was one.
    pub fn last_fsync(&self) -> Option<Duration> {
        match self.last_fsync_micros.load(Ordering::Relaxed) {
            NO_SYNC_YET => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Time since the daemon started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Sets the gauges of an outside service from its last seen state, just before a scrape.
    pub fn set_dependency(&self, d: &crate::ops::health::Dependency) {
        let label = [("dependency", d.name())];
        self.dependency_up
            .get_or_create(&label)
            .set(i64::from(d.is_up()));
        self.dependency_latency
            .get_or_create(&label)
            .set(d.latency().as_secs_f64());
    }

    /// Sets the gauges that mirror the live state, just before a scrape.
    pub fn set_gauges(&self, connections: usize, joined: usize, classes: usize, queue: usize) {
        let set = |g: &Gauge, v: usize| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        set(&self.connections, connections);
        set(&self.joined, joined);
        set(&self.classes, classes);
        set(&self.writer_queue, queue);
    }

    /// The OpenMetrics text exposition of every metric, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric_and_counts_by_error_code() {
        let m = Metrics::new();
        m.joined();
        m.marked();
        m.refused(ErrorCode::Early);
        m.refused(ErrorCode::Early);
        m.lagged(7);
        m.bad_proxy_header();
        m.batch(3, Some(Duration::from_micros(1500)));
        m.set_gauges(5, 4, 2, 1);
        let text = m.encode();
        for line in [
            "attendanced_connections 5",
            "attendanced_joined_students 4",
            "attendanced_classes 2",
            "attendanced_writer_queue 1",
            "attendanced_joins_total 1",
            "attendanced_marks_total 1",
            "attendanced_errors_total{code=\"EARLY\"} 2",
            "attendanced_errors_total{code=\"DENIED\"} 0",
            "attendanced_broadcast_lags_total 1",
            "attendanced_broadcast_skipped_total 7",
            "attendanced_proxy_header_errors_total 1",
            "attendanced_writer_batch_size_count 1",
            "attendanced_fsync_duration_seconds_count 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        assert!(text.contains("attendanced_build_info{version=\""), "{text}");
        assert_eq!(m.last_fsync(), Some(Duration::from_micros(1500)));
    }

    #[test]
    fn there_is_no_last_fsync_before_the_first() {
        let m = Metrics::new();
        m.batch(1, None);
        assert_eq!(m.last_fsync(), None);
    }
}
