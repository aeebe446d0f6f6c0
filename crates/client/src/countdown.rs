//! The class countdown: time left until `PRESENT`, and how it is written (pure, unit-tested).
//!
//! The length always comes from the server (`OK JOIN … <required_seconds>` or `ERR EARLY <n>`);
//! the client never invents one.

use std::time::Duration;

use tokio::time::Instant;

/// Width of the progress bar, in characters between the brackets.
pub const BAR_WIDTH: usize = 20;

/// Longest wait the client will schedule. A server asking for more is clamped to this, so a
/// nonsensical `required_seconds` cannot overflow the clock.
pub const MAX_WAIT: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// A countdown of whole seconds towards a deadline on the tokio clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Countdown {
    deadline: Instant,
    total: u64,
}

impl Countdown {
    /// A countdown of `seconds` starting at `start`.
    pub fn new(start: Instant, seconds: u64) -> Self {
        let wait = Duration::from_secs(seconds).min(MAX_WAIT);
        Self {
            deadline: start + wait,
            total: seconds,
        }
    }

    /// When the countdown ends.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The length of the countdown, in seconds, as the server gave it.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whole seconds left at `now`, rounded up: it shows 1 until the deadline has passed.
    pub fn remaining(&self, now: Instant) -> u64 {
        let left = self.deadline.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        secs.min(self.total)
    }
}

/// `HH:MM:SS`; hours grow past two digits when needed.
pub fn format_hms(seconds: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// `[#####-----]`: the share of `total` already served, `width` characters wide.
pub fn progress_bar(remaining: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        let served = u128::from(total.saturating_sub(remaining));
        // u128: no overflow for any u64 total times any sane width.
        (served * width as u128 / u128::from(total)) as usize
    };
    let filled = filled.min(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// The live line shown on a terminal, e.g. `Class in progress: 00:59:12 left [####----]`.
pub fn progress_line(remaining: u64, total: u64) -> String {
    format!(
        "Class in progress: {} left {}",
        format_hms(remaining),
        progress_bar(remaining, total, BAR_WIDTH)
    )
}

/// The periodic line written when output is not a terminal, e.g. `Class in progress: 00:59:00 left`.
pub fn plain_line(remaining: u64) -> String {
    format!("Class in progress: {} left", format_hms(remaining))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hms_pads_and_carries() {
        assert_eq!(format_hms(0), "00:00:00");
        assert_eq!(format_hms(59), "00:00:59");
        assert_eq!(format_hms(60), "00:01:00");
        assert_eq!(format_hms(3599), "00:59:59");
        assert_eq!(format_hms(3600 + 59 * 60 + 12), "01:59:12");
        assert_eq!(format_hms(100 * 3600), "100:00:00");
    }

    #[test]
    fn bar_fills_with_time_served() {
        assert_eq!(progress_bar(10, 10, 10), "[----------]");
        assert_eq!(progress_bar(5, 10, 10), "[#####-----]");
        assert_eq!(progress_bar(1, 10, 10), "[#########-]");
        assert_eq!(progress_bar(0, 10, 10), "[##########]");
        assert_eq!(progress_bar(0, 0, 4), "[####]");
        assert_eq!(progress_bar(20, 10, 4), "[----]");
        assert_eq!(progress_bar(0, u64::MAX, 4), "[####]");
    }

    #[test]
    fn lines_read_as_documented() {
        assert_eq!(
            progress_line(3552, 3600),
            "Class in progress: 00:59:12 left [--------------------]"
        );
        assert_eq!(plain_line(60), "Class in progress: 00:01:00 left");
    }

    #[test]
    fn remaining_rounds_up_and_stops_at_zero() {
        let start = Instant::now();
        let c = Countdown::new(start, 3);
        assert_eq!(c.total(), 3);
        assert_eq!(c.remaining(start), 3);
        assert_eq!(c.remaining(start + Duration::from_millis(1)), 3);
        assert_eq!(c.remaining(start + Duration::from_millis(2001)), 1);
        assert_eq!(c.remaining(start + Duration::from_secs(3)), 0);
        assert_eq!(c.remaining(start + Duration::from_secs(9)), 0);
        assert_eq!(c.deadline(), start + Duration::from_secs(3));
    }

    #[test]
    fn absurd_lengths_are_clamped_not_overflowed() {
        let start = Instant::now();
        let c = Countdown::new(start, u64::MAX);
        assert_eq!(c.deadline(), start + MAX_WAIT);
        assert_eq!(c.total(), u64::MAX);
    }
}
