//! Per-connection rate limits: lines per second (a flood waits its turn) and chat messages per
//! second (excess is refused). On tokio's clock, so a paused clock drives them in tests.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, ReasonablyRealtime};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Tokio's clock for governor: the real monotonic clock, or the paused one of a test.
/// Zero-sized, so a limiter costs what it did on the standard clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

impl ReasonablyRealtime for TokioClock {}

/// A rate limiter of one connection.
pub type Limiter =
    RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// `per_second` sustained with bursts of `burst` (each at least 1).
pub fn limiter(per_second: u32, burst: u32) -> Limiter {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct_with_clock(Quota::per_second(per_second).allow_burst(burst), TokioClock)
}

/// Waits (on tokio's clock) until `limiter` allows one more cell, and takes it.
pub async fn wait_turn(limiter: &Limiter) {
    // Bounded: each failed check names the instant a cell frees up.
    for _ in 0..1000 {
        match limiter.check() {
            Ok(()) => return,
            Err(not_until) => {
                let wait = not_until.wait_time_from(TokioClock.now());
                tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
            }
        }
    }
}
