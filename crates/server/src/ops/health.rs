//! The state of an outside service the daemon depends on (PostgreSQL), as last seen: shown in
//! `/healthz` and the metrics. Updated by whoever uses the service; read at scrape time.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// One dependency's state.
#[derive(Debug)]
pub struct Dependency {
    name: &'static str,
    up: AtomicBool,
    latency_us: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Dependency {
    /// A dependency called `name` (`postgres`), up until told otherwise.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            up: AtomicBool::new(true),
            latency_us: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Its name, the metrics' `dependency` label.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the last use succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// How long the last successful use took.
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::Relaxed))
    }

    /// Why the last use failed, while it is down.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A use succeeded in `took`. Returns whether it was down before.
    pub fn ok(&self, took: Duration) -> bool {
        self.latency_us.store(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let was_up = self.up.swap(true, Ordering::Relaxed);
        if !was_up {
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
        }
        !was_up
    }

    /// A use failed with `why`. Returns whether it was up before.
    pub fn failed(&self, why: String) -> bool {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why);
        self.up.swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_and_a_recovery_are_each_reported_once() {
        let d = Dependency::new("postgres");
        assert!(d.is_up());
        assert!(d.failed("down".to_owned()));
        assert!(!d.failed("still down".to_owned()));
        assert_eq!(d.last_error().as_deref(), Some("still down"));
        assert!(d.ok(Duration::from_millis(3)));
        assert!(!d.ok(Duration::from_millis(2)));
        assert_eq!(d.last_error(), None);
        assert_eq!(d.latency(), Duration::from_millis(2));
    }
}
