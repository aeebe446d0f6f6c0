//! Who is already marked present, per class, roll and day, so a mark is never written twice.
//! Rebuilt from the CSV at start-up, so a restart cannot allow a duplicate row either.
//!
//! The day is the calendar day in the configured time zone (a class at 00:30 local time belongs
//! to that local day, whatever the UTC date).

use std::sync::{Mutex, PoisonError};

use attendance_protocol::{ClassKey, Field, Timestamp};
use jiff::civil::Date;
use jiff::tz::TimeZone;

// Keys are client-chosen strings: a hasher seeded from the OS (crate::hashing).
use crate::hashing::Map;
use crate::storage::MarkRecord;

/// The first mark of each day a roll was marked, as (day, mark), sorted by day.
type Days = Vec<(Date, Timestamp)>;

/// class → roll → days. Nested rather than keyed by `(class, roll, day)` so a look-up borrows
/// the caller's class and roll instead of cloning three strings into a key.
#[derive(Debug, Default)]
struct Inner {
    classes: Map<ClassKey, Map<Field, Days>>,
    /// Marks in `classes` (all days).
    len: usize,
    /// The day last looked up: a mark looks its day up three or four times, and a time-zone
    /// conversion each time showed in profiles.
    day: Option<DaySpan>,
}

/// A calendar day and the instants it spans, [start, end) in Unix milliseconds.
#[derive(Debug, Clone, Copy)]
struct DaySpan {
    start: i64,
    end: i64,
    date: Date,
}

impl DaySpan {
    /// The day of `at` in `tz`, if its bounds can be computed (always, short of the ends of
    /// jiff's range).
    fn of(at: jiff::Timestamp, tz: &TimeZone) -> Option<Self> {
        let date = tz.to_datetime(at).date();
        let start = date.to_zoned(tz.clone()).ok()?.timestamp().as_millisecond();
        let end = date
            .tomorrow()
            .ok()?
            .to_zoned(tz.clone())
            .ok()?
            .timestamp()
            .as_millisecond();
        Some(Self { start, end, date })
    }
}

/// The set of marks known from the file and made since start-up.
#[derive(Debug)]
pub struct Marks {
    inner: Mutex<Inner>,
    tz: TimeZone,
}

impl Marks {
    /// Builds the set from the rows already in the CSV. Rows that are not well-formed are
    /// skipped (they cannot match a valid student anyway).
    pub fn from_records(records: &[MarkRecord], tz: TimeZone) -> Self {
        let marks = Self {
            inner: Mutex::new(Inner::default()),
            tz,
        };
        for r in records {
            let id = attendance_protocol::StudentId::from_parts(
                &r.course,
                &r.division,
                &r.name,
                &r.roll,
            );
            if let (Ok(id), Ok(at)) = (id, r.marked_at.parse::<Timestamp>()) {
                marks.insert(&id.class, &id.roll, at);
            }
        }
        marks
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The calendar day of `at` in the configured time zone.
    pub fn day(&self, at: Timestamp) -> Date {
        // The same civil date as `at.to_zoned(tz).date()`, without cloning the zone.
        self.tz.to_datetime(jiff_timestamp(at)).date()
    }

    /// [`Marks::day`], from the span of the day last looked up when `at` falls in it.
    fn day_cached(&self, inner: &mut Inner, at: Timestamp) -> Date {
        let ms = i64::try_from(at.unix_millis()).unwrap_or(i64::MAX);
        match inner.day {
            Some(span) if (span.start..span.end).contains(&ms) => span.date,
            _ => {
                inner.day = DaySpan::of(jiff_timestamp(at), &self.tz);
                inner.day.map_or_else(|| self.day(at), |span| span.date)
            }
        }
    }

    /// When `roll` of `class` was marked on the day of `now`, if it was.
    pub fn get(&self, class: &ClassKey, roll: &Field, now: Timestamp) -> Option<Timestamp> {
        let mut inner = self.lock();
        let day = self.day_cached(&mut inner, now);
        let days = inner.classes.get(class)?.get(roll)?;
        days.binary_search_by_key(&day, |&(d, _)| d)
            .ok()
            .map(|i| days[i].1)
    }

    /// Records a mark that is on disk. The first mark of a day is kept.
    pub fn insert(&self, class: &ClassKey, roll: &Field, at: Timestamp) {
        let mut guard = self.lock();
        let day = self.day_cached(&mut guard, at);
        let inner = &mut *guard;
        // One hash of the class and one of the roll: the keys are cloned only when new (a
        // `Field` of up to 24 bytes is held inline, so even then nothing is allocated).
        let rolls = match inner.classes.get_mut(class) {
            Some(rolls) => rolls,
            None => inner.classes.entry(class.clone()).or_default(),
        };
        match rolls.entry(roll.clone()) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let days = e.get_mut();
                if let Err(i) = days.binary_search_by_key(&day, |&(d, _)| d) {
                    days.insert(i, (day, at));
                    inner.len += 1;
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(vec![(day, at)]);
                inner.len += 1;
            }
        }
    }

    /// Marks known (all days).
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// True if no mark is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks made on the day of `now`.
    pub fn count_on_day_of(&self, now: Timestamp) -> usize {
        let today = self.day(now);
        self.lock()
            .classes
            .values()
            .flat_map(Map::values)
            .filter(|days| days.binary_search_by_key(&today, |&(d, _)| d).is_ok())
            .count()
    }
}

fn jiff_timestamp(at: Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(i64::try_from(at.unix_millis()).unwrap_or(i64::MAX))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(marked_at: &str) -> MarkRecord {
        MarkRecord {
            course: "CN".into(),
            division: "D1".into(),
            name: "Ann".into(),
            roll: "1".into(),
            status: "Present".into(),
            marked_at: marked_at.into(),
            joined_at: marked_at.into(),
            client_addr: "127.0.0.1".into(),
        }
    }

    fn key() -> (ClassKey, Field) {
        let id: attendance_protocol::StudentId = "CN_D1_Ann_1".parse().expect("valid");
        (id.class, id.roll)
    }

    #[test]
    fn the_day_is_the_local_day_of_the_configured_zone() {
        let kolkata = TimeZone::get("Asia/Kolkata").expect("tzdb");
        // 20:00 UTC on the 22nd is 01:30 on the 23rd in Kolkata.
        let marks = Marks::from_records(&[record("2026-11-22T20:00:00.000Z")], kolkata);
        let (class, roll) = key();
        let later_same_local_day: Timestamp = "2026-11-23T10:00:00.000Z".parse().expect("ts");
        assert!(marks.get(&class, &roll, later_same_local_day).is_some());
        let utc = Marks::from_records(&[record("2026-11-22T20:00:00.000Z")], TimeZone::UTC);
        assert!(
            utc.get(&class, &roll, later_same_local_day).is_none(),
            "a new UTC day"
        );
    }

    #[test]
    fn the_cached_day_agrees_with_the_zone_across_dst_changes() {
        // Berlin changes at 02:00/03:00 local; Beirut and Santiago have changed at midnight.
        for zone in ["Europe/Berlin", "Asia/Beirut", "America/Santiago", "UTC"] {
            let tz = TimeZone::get(zone).expect("tzdb");
            let marks = Marks::from_records(&[], tz);
            let mut inner = Inner::default();
            // Bounded: every 37 minutes through 2026, in order (as a daemon looks days up).
            let start: Timestamp = "2026-01-01T00:00:00.000Z".parse().expect("ts");
            let start_ms = i64::try_from(start.unix_millis()).expect("in range");
            for step in 0..(365 * 24 * 60 / 37) {
                let ms = start_ms + step * 37 * 60 * 1000;
                let at = Timestamp::from_datetime(
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                        .expect("in range"),
                );
                assert_eq!(
                    marks.day_cached(&mut inner, at),
                    marks.day(at),
                    "{zone} {at}"
                );
            }
        }
    }

    #[test]
    fn the_first_mark_of_a_day_wins() {
        let marks = Marks::from_records(
            &[
                record("2026-11-23T08:00:00.000Z"),
                record("2026-11-23T09:00:00.000Z"),
            ],
            TimeZone::UTC,
        );
        let (class, roll) = key();
        let now: Timestamp = "2026-11-23T12:00:00.000Z".parse().expect("ts");
        assert_eq!(
            marks.get(&class, &roll, now).map(|t| t.to_string()),
            Some("2026-11-23T08:00:00.000Z".into())
        );
        assert_eq!(marks.count_on_day_of(now), 1);
    }

    #[test]
    fn marks_are_kept_per_class_roll_and_day_in_any_order() {
        let ts = |s: &str| -> Timestamp { s.parse().expect("ts") };
        let marks = Marks::from_records(&[], TimeZone::UTC);
        let (class, roll) = key();
        let other: attendance_protocol::StudentId = "CN_D2_Bob_1".parse().expect("valid");
        // Days out of order, a second mark on a known day, another class with the same roll.
        marks.insert(&class, &roll, ts("2026-11-25T08:00:00.000Z"));
        marks.insert(&class, &roll, ts("2026-11-23T08:00:00.000Z"));
        marks.insert(&class, &roll, ts("2026-11-24T08:00:00.000Z"));
        marks.insert(&class, &roll, ts("2026-11-23T09:00:00.000Z"));
        marks.insert(&other.class, &other.roll, ts("2026-11-23T10:00:00.000Z"));
        assert_eq!(marks.len(), 4);
        for (now, first) in [
            ("2026-11-23T23:00:00.000Z", "2026-11-23T08:00:00.000Z"),
            ("2026-11-24T00:00:00.000Z", "2026-11-24T08:00:00.000Z"),
            ("2026-11-25T12:00:00.000Z", "2026-11-25T08:00:00.000Z"),
        ] {
            assert_eq!(marks.get(&class, &roll, ts(now)), Some(ts(first)), "{now}");
        }
        assert_eq!(
            marks.get(&class, &roll, ts("2026-11-26T00:00:00.000Z")),
            None
        );
        assert_eq!(marks.count_on_day_of(ts("2026-11-23T12:00:00.000Z")), 2);
        assert_eq!(marks.count_on_day_of(ts("2026-11-24T12:00:00.000Z")), 1);
        assert_eq!(marks.count_on_day_of(ts("2026-11-22T12:00:00.000Z")), 0);
        let unknown: attendance_protocol::StudentId = "CN_D1_Cat_2".parse().expect("valid");
        let day = ts("2026-11-23T12:00:00.000Z");
        assert_eq!(marks.get(&unknown.class, &unknown.roll, day), None);
        assert_eq!(
            marks.get(&other.class, &other.roll, day),
            Some(ts("2026-11-23T10:00:00.000Z"))
        );
    }
}
