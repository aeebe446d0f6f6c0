//! How attendance is decided: the one rule, for a student's record in a session.
//!
//! - Time served is connected time only, counted by the server: from the first JOIN (or the
//!   class's start, if the JOIN came earlier), without the time away after a drop.
//! - The time a student must serve is the class's `required` time (by default its whole
//!   length), but never more than is left of the session at their first JOIN.
//! - Served it: `Present`, or `Late` (with the whole minutes from the start to the first JOIN)
//!   when the first JOIN came more than `late_after` after the start.
//! - The session ended before it was served (or the student left and never came back): `Left`,
//!   with the whole minutes served.
//! - On the roster, and no record when the session closed: `Absent`.
//! - A class with no schedule runs ad hoc, as before: one session per local day with no start
//!   and no end, so there is no lateness and no close: served means `Present`.
//!
//! The README's "How attendance is decided" gives the worked examples; each is a test below.

use std::time::Duration;

use attendance_protocol::AttendanceStatus;

/// A record's status with its minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    /// The status.
    pub status: AttendanceStatus,
    /// Whole minutes from the start to the first JOIN (0 unless `Late`).
    pub minutes_late: u32,
    /// Whole minutes served.
    pub minutes_attended: u32,
}

/// What the rule needs of a scheduled session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The class's `required` time.
    pub required: Duration,
    /// How long after the start a first JOIN is still on time.
    pub late_after: Duration,
    /// The session's length.
    pub length: Duration,
}

/// Whole minutes in `d`, rounded down.
pub fn whole_minutes(d: Duration) -> u32 {
    u32::try_from(d.as_secs() / 60).unwrap_or(u32::MAX)
}

impl Timing {
    /// The time a student whose first JOIN came `joined_after` after the start (zero if
    /// before it) must serve: `required`, but no more than is left of the session.
    pub fn required_for(&self, joined_after: Duration) -> Duration {
        self.required.min(self.length.saturating_sub(joined_after))
    }

    /// The record of a student who served `served`, whose first JOIN came `joined_after`
    /// after the start; `ended`: the session is over (else the record is made only if served).
    /// `None`: not served yet and the session still runs.
    pub fn decide(&self, joined_after: Duration, served: Duration, ended: bool) -> Option<Decided> {
        let minutes_attended = whole_minutes(served);
        if served >= self.required_for(joined_after) {
            let late = joined_after > self.late_after;
            return Some(Decided {
                status: if late {
                    AttendanceStatus::Late
                } else {
                    AttendanceStatus::Present
                },
                minutes_late: if late { whole_minutes(joined_after) } else { 0 },
                minutes_attended,
            });
        }
        ended.then_some(Decided {
            status: AttendanceStatus::Left,
            minutes_late: 0,
            minutes_attended,
        })
    }
}

/// The record of a roster student with no record when the session closed.
pub const ABSENT: Decided = Decided {
    status: AttendanceStatus::Absent,
    minutes_late: 0,
    minutes_attended: 0,
};

#[cfg(test)]
mod tests {
    //! The worked examples of the README's "How attendance is decided", one test each: a
    //! class at 09:00 for 60 minutes, `required` 50 minutes, `late_after` 10 minutes.
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn class() -> Timing {
        Timing {
            required: 50 * MIN,
            late_after: 10 * MIN,
            length: 60 * MIN,
        }
    }

    fn decided(status: AttendanceStatus, late: u32, attended: u32) -> Option<Decided> {
        Some(Decided {
            status,
            minutes_late: late,
            minutes_attended: attended,
        })
    }

    #[test]
    fn example_1_on_time_and_stays_is_present_after_the_required_time() {
        // Joins at 08:55 (served counts from 09:00); at 09:49:59 not yet, at 09:50 Present.
        let c = class();
        assert_eq!(
            c.decide(Duration::ZERO, 50 * MIN - Duration::from_secs(1), false),
            None
        );
        assert_eq!(
            c.decide(Duration::ZERO, 50 * MIN, false),
            decided(AttendanceStatus::Present, 0, 50)
        );
    }

    #[test]
    fn example_2_joins_within_late_after_is_still_present() {
        // Joins at 09:10 exactly: not late; must serve 50 minutes (50 are left), Present 10:00.
        let c = class();
        assert_eq!(c.required_for(10 * MIN), 50 * MIN);
        assert_eq!(
            c.decide(10 * MIN, 50 * MIN, false),
            decided(AttendanceStatus::Present, 0, 50)
        );
    }

    #[test]
    fn example_3_joins_at_9_25_is_late_25_and_must_stay_to_the_end() {
        // Only 35 minutes are left: those are required. Late, 25 minutes late.
        let c = class();
        assert_eq!(c.required_for(25 * MIN), 35 * MIN);
        assert_eq!(c.decide(25 * MIN, 34 * MIN, false), None);
        assert_eq!(
            c.decide(25 * MIN, 35 * MIN, false),
            decided(AttendanceStatus::Late, 25, 35)
        );
    }

    #[test]
    fn example_4_drops_for_good_after_30_minutes_is_left_30_at_the_close() {
        let c = class();
        assert_eq!(c.decide(Duration::ZERO, 30 * MIN, false), None);
        assert_eq!(
            c.decide(Duration::ZERO, 30 * MIN + 59 * Duration::from_secs(1), true),
            decided(AttendanceStatus::Left, 0, 30)
        );
    }

    #[test]
    fn example_5_a_drop_that_costs_the_slack_only_is_still_present() {
        // On time, away 8 minutes in all (resumed twice): 52 served at the end ≥ 50.
        assert_eq!(
            class().decide(Duration::ZERO, 52 * MIN, true),
            decided(AttendanceStatus::Present, 0, 52)
        );
    }

    #[test]
    fn example_6_late_and_left_is_left() {
        // Joins at 09:40 (20 minutes left, all required), leaves at 09:50.
        assert_eq!(
            class().decide(40 * MIN, 10 * MIN, true),
            decided(AttendanceStatus::Left, 0, 10)
        );
    }

    #[test]
    fn an_ad_hoc_class_has_no_lateness() {
        // No schedule: late_after is the whole length, required the class length.
        let ad_hoc = Timing {
            required: 60 * MIN,
            late_after: Duration::MAX,
            length: Duration::MAX,
        };
        assert_eq!(
            ad_hoc.decide(Duration::ZERO, 60 * MIN, false),
            decided(AttendanceStatus::Present, 0, 60)
        );
    }
}
