//! The attendance rules of a seat: the class length a student must stay, fixed when the seat is
//! taken, and what is left of it. The server, never the client, decides what has been served,
//! from connected time only.

pub mod closer;
pub mod code;
pub mod flags;
pub mod roster;
pub mod rules;
pub mod schedule;
pub mod status;
pub mod subnet;

use std::time::Duration;

use attendance_protocol::Timestamp;
use tokio::time::Instant;

use crate::hub::Membership;

/// A student's seat on one connection. Small on purpose: it sits in every joined connection's
/// task, tens of thousands of them.
#[derive(Debug)]
pub struct Seat {
    /// The place in the class (given back when the seat drops).
    pub membership: Membership,
    /// When the JOIN line's first byte arrived.
    since: Instant,
    /// The class length fixed at the JOIN, in milliseconds: a reload that changes
    /// `class_length` later does not move it, so the `required_seconds` sent stays true.
    length_ms: u32,
    /// Whether the store answered this seat's PRESENT with a mark (new or already held): the
    /// kiosk rule frees the connection for the next student then. This is what the store said
    /// about this seat, not "marked today", which only the store answers.
    recorded: bool,
    /// The session of a scheduled class the seat belongs to (boxed: most seats have none).
    scheduled: Option<Box<Scheduled>>,
}

/// What a seat of a scheduled class needs for its record: the session's start, when the
/// student first joined, and the class's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// When the session started.
    pub session_start: Timestamp,
    /// How long after the start the first JOIN came (zero if before).
    pub joined_after: Duration,
    /// The class's required time, lateness and length.
    pub timing: status::Timing,
}

impl Seat {
    /// A seat taken at `since` (the arrival of the JOIN line) for `class_length` (at most
    /// `u32::MAX` ms, 49 days).
    pub fn new(membership: Membership, since: Instant, class_length: Duration) -> Self {
        Self {
            membership,
            since,
            length_ms: u32::try_from(class_length.as_millis()).unwrap_or(u32::MAX),
            recorded: false,
            scheduled: None,
        }
    }

    /// The seat, in a session of a scheduled class.
    pub fn in_session(mut self, scheduled: Option<Scheduled>) -> Self {
        self.scheduled = scheduled.map(Box::new);
        self
    }

    /// The session of a scheduled class the seat belongs to.
    pub fn scheduled(&self) -> Option<&Scheduled> {
        self.scheduled.as_deref()
    }

    /// The store answered this seat's PRESENT with a mark.
    pub fn set_recorded(&mut self) {
        self.recorded = true;
    }

    /// Whether the store answered this seat's PRESENT with a mark.
    pub fn recorded(&self) -> bool {
        self.recorded
    }

    /// When the seat was taken.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// The class length fixed when the seat was taken.
    pub fn length(&self) -> Duration {
        Duration::from_millis(u64::from(self.length_ms))
    }

    /// When the class length is served.
    pub fn due(&self) -> Instant {
        self.since + self.length()
    }

    /// Whether the class length has been served at `now`.
    pub fn served(&self, now: Instant) -> bool {
        now >= self.due()
    }

    /// When the student joined, on the wall clock (as the CSV records it), given the wall
    /// clock and the monotonic clock read at one moment.
    pub fn joined_at(&self, wall: Timestamp, now: Instant) -> Timestamp {
        Timestamp::from_datetime(wall.datetime() - now.saturating_duration_since(self.since))
    }
}

/// Whole seconds (rounded up) from `now` until `due`; zero once it has passed.
pub fn seconds_left(due: Instant, now: Instant) -> u64 {
    ceil_secs(due.saturating_duration_since(now))
}

/// `d` in whole seconds, rounded up.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_left_is_rounded_up_to_whole_seconds() {
        let now = Instant::now();
        assert_eq!(seconds_left(now + Duration::from_millis(1), now), 1);
        assert_eq!(seconds_left(now + Duration::from_secs(60), now), 60);
        assert_eq!(seconds_left(now, now), 0);
        assert_eq!(seconds_left(now, now + Duration::from_secs(5)), 0);
    }
}
