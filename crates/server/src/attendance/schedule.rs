//! A class's timetable: on which weekdays it meets, when (local wall time in the configured
//! zone) and for how long; whether a JOIN at a given moment falls in a session, and when the
//! next one opens.
//!
//! Everything is computed in the zone, from the wall clock: a 09:00 class starts at 09:00 local
//! time on both sides of a daylight-saving change. A start that falls in a gap (02:30 on the
//! day the clocks spring forward in Europe) is moved forward by the gap's length, and one that
//! falls in a fold (02:30 on the day they fall back) is the earlier of the two, as RFC 5545 and
//! jiff's "compatible" rule have it. Lengths are exact durations: a 60-minute class across a
//! change still lasts 60 minutes.

use std::time::Duration;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// Days searched for the next opening: a weekly timetable opens within a week.
const SEARCH_DAYS: i32 = 8;

/// When a class meets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSchedule {
    /// The weekdays it meets on (none: never).
    pub weekdays: Vec<Weekday>,
    /// Local start time.
    pub start: Time,
    /// How long a session lasts.
    pub length: Duration,
    /// How long before the start JOIN is accepted.
    pub opens_before: Duration,
}

/// One session of a class: its start and end, in the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// When the class starts (the time lateness counts from).
    pub start: Zoned,
    /// When it ends (JOIN is refused from then, and the session closes).
    pub end: Zoned,
    /// When JOIN is accepted from (`start - opens_before`).
    pub opens: Zoned,
}

/// Whether a JOIN at some moment falls in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// In a session (or in its `opens_before`).
    Open(Session),
    /// Between sessions; the next one opens then (`None`: no weekdays at all).
    Closed {
        /// When the next session opens for JOIN.
        next_opening: Option<Zoned>,
    },
}

impl ClassSchedule {
    /// The session on `date` (in `tz`), if the class meets that day.
    pub fn session_on(&self, date: Date, tz: &TimeZone) -> Option<Session> {
        if !self.weekdays.contains(&date.weekday()) {
            return None;
        }
        let start = date.to_datetime(self.start).to_zoned(tz.clone()).ok()?;
        let end = start.checked_add(span(self.length)?).ok()?;
        let opens = start.checked_sub(span(self.opens_before)?).ok()?;
        Some(Session { start, end, opens })
    }

    /// The window at `now` in `tz`: the session a JOIN now belongs to, or the next opening.
    pub fn window_at(&self, now: Timestamp, tz: &TimeZone) -> Window {
        let today = now.to_zoned(tz.clone()).date();
        let mut next_opening: Option<Zoned> = None;
        // Bounded: a session that began yesterday may still run; the next one is within a week.
        for offset in -1..=SEARCH_DAYS {
            let Ok(date) = today.checked_add(jiff::Span::new().days(offset)) else {
                continue;
            };
            let Some(session) = self.session_on(date, tz) else {
                continue;
            };
            let (opens, end) = (session.opens.timestamp(), session.end.timestamp());
            if opens <= now && now < end {
                return Window::Open(session);
            }
            if opens > now && next_opening.as_ref().is_none_or(|n| session.opens < *n) {
                next_opening = Some(session.opens);
            }
        }
        Window::Closed { next_opening }
    }

    /// The end of the session that runs at `now` or the next one after it: when the closer
    /// wakes next.
    pub fn next_end(&self, now: Timestamp, tz: &TimeZone) -> Option<Zoned> {
        let today = now.to_zoned(tz.clone()).date();
        (-1..=SEARCH_DAYS)
            .filter_map(|offset| today.checked_add(jiff::Span::new().days(offset)).ok())
            .filter_map(|date| self.session_on(date, tz))
            .map(|s| s.end)
            .find(|end| end.timestamp() > now)
    }
}

/// `d` as a span of exact time (seconds and nanoseconds), if it fits.
fn span(d: Duration) -> Option<jiff::Span> {
    let signed = jiff::SignedDuration::try_from(d).ok()?;
    jiff::Span::try_from(signed).ok()
}

/// The local day of `now` in `tz`: an ad hoc class's "session" (one record per day).
pub fn local_day(now: Timestamp, tz: &TimeZone) -> Date {
    now.to_zoned(tz.clone()).date()
}

/// A weekday from its English name or three-letter abbreviation, any case.
pub fn parse_weekday(s: &str) -> Option<Weekday> {
    let s = s.to_ascii_lowercase();
    let day = match s.get(..3)? {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    };
    let full = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    (s.len() == 3 || full.contains(&s.as_str())).then_some(day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").expect("tz")
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn sunday(start: &str) -> ClassSchedule {
        ClassSchedule {
            weekdays: vec![Weekday::Sunday],
            start: start.parse().expect("time"),
            length: Duration::from_secs(3600),
            opens_before: Duration::from_secs(600),
        }
    }

    fn open(w: Window) -> Session {
        match w {
            Window::Open(s) => s,
            Window::Closed { next_opening } => panic!("closed, next {next_opening:?}"),
        }
    }

    #[test]
    fn a_class_opens_before_its_start_and_closes_at_its_end() {
        let mon = ClassSchedule {
            weekdays: vec![Weekday::Monday, Weekday::Wednesday],
            start: "09:00".parse().expect("time"),
            length: Duration::from_secs(3600),
            opens_before: Duration::from_secs(600),
        };
        let tz = berlin();
        // Monday 2026-12-07, 08:49:59 local (+01:00): not yet.
        let w = mon.window_at(at("2026-12-07T07:49:59Z"), &tz);
        let Window::Closed { next_opening } = w else {
            panic!("open too early");
        };
        assert_eq!(
            next_opening.expect("next").to_string(),
            "2026-12-07T08:50:00+01:00[Europe/Berlin]"
        );
        let s = open(mon.window_at(at("2026-12-07T07:50:00Z"), &tz));
        assert_eq!(
            s.start.to_string(),
            "2026-12-07T09:00:00+01:00[Europe/Berlin]"
        );
        open(mon.window_at(at("2026-12-07T08:59:59Z"), &tz));
        // 10:00 local: over; the next is Wednesday's.
        let Window::Closed { next_opening } = mon.window_at(at("2026-12-07T09:00:00Z"), &tz) else {
            panic!("open at the end");
        };
        assert_eq!(
            next_opening.expect("next").to_string(),
            "2026-12-09T08:50:00+01:00[Europe/Berlin]"
        );
    }

    #[test]
    fn local_start_times_hold_across_the_autumn_change() {
        // Sunday 2026-10-25: clocks go back at 03:00 CEST to 02:00 CET.
        let nine = sunday("09:00");
        let tz = berlin();
        let s = open(nine.window_at(at("2026-10-25T08:30:00Z"), &tz));
        assert_eq!(
            s.start.to_string(),
            "2026-10-25T09:00:00+01:00[Europe/Berlin]"
        );
        // The week before, 09:00 was 07:00 UTC; now it is 08:00 UTC.
        let before = open(nine.window_at(at("2026-10-18T07:30:00Z"), &tz));
        assert_eq!(before.start.timestamp(), at("2026-10-18T07:00:00Z"));
        assert_eq!(s.start.timestamp(), at("2026-10-25T08:00:00Z"));
        // 02:30 happens twice that night: the earlier (summer time) one is the start; the
        // session still lasts exactly an hour.
        let fold = open(sunday("02:30").window_at(at("2026-10-25T00:30:00Z"), &tz));
        assert_eq!(fold.start.timestamp(), at("2026-10-25T00:30:00Z"));
        assert_eq!(fold.end.timestamp(), at("2026-10-25T01:30:00Z"));
        assert_eq!(
            fold.end.to_string(),
            "2026-10-25T02:30:00+01:00[Europe/Berlin]"
        );
    }

    #[test]
    fn a_start_in_the_spring_gap_moves_forward_by_the_gap() {
        // Sunday 2027-03-28: clocks jump from 02:00 CET to 03:00 CEST; 02:30 does not exist.
        let tz = berlin();
        let s = open(sunday("02:30").window_at(at("2027-03-28T01:25:00Z"), &tz));
        assert_eq!(
            s.start.to_string(),
            "2027-03-28T03:30:00+02:00[Europe/Berlin]"
        );
        assert_eq!(s.start.timestamp(), at("2027-03-28T01:30:00Z"));
        // A 09:00 class that day is 09:00 summer time, 07:00 UTC.
        let nine = open(sunday("09:00").window_at(at("2027-03-28T07:10:00Z"), &tz));
        assert_eq!(nine.start.timestamp(), at("2027-03-28T07:00:00Z"));
    }

    #[test]
    fn a_session_running_past_midnight_is_found_from_the_next_day() {
        let late = ClassSchedule {
            weekdays: vec![Weekday::Saturday],
            start: "23:30".parse().expect("time"),
            length: Duration::from_secs(3600),
            opens_before: Duration::ZERO,
        };
        // Sunday 00:15 local belongs to Saturday's session.
        let s = open(late.window_at(at("2026-12-13T00:15:00Z"), &TimeZone::UTC));
        assert_eq!(s.start.date(), Date::constant(2026, 12, 12));
        assert_eq!(
            late.next_end(at("2026-12-13T00:15:00Z"), &TimeZone::UTC)
                .map(|z| z.timestamp()),
            Some(at("2026-12-13T00:30:00Z"))
        );
    }

    #[test]
    fn no_weekdays_is_never_open_and_has_no_next_opening() {
        let never = ClassSchedule {
            weekdays: vec![],
            ..sunday("09:00")
        };
        assert_eq!(
            never.window_at(at("2026-10-25T08:30:00Z"), &berlin()),
            Window::Closed { next_opening: None }
        );
    }

    #[test]
    fn weekdays_parse_by_name_or_abbreviation() {
        assert_eq!(parse_weekday("Mon"), Some(Weekday::Monday));
        assert_eq!(parse_weekday("wednesday"), Some(Weekday::Wednesday));
        assert_eq!(parse_weekday("SUN"), Some(Weekday::Sunday));
        assert_eq!(parse_weekday("mo"), None);
        assert_eq!(parse_weekday("monkey"), None);
    }
}
