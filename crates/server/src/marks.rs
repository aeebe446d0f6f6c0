//! Who is already marked present, per class, roll and day, so a mark is never written twice.
//! Rebuilt from the CSV at start-up, so a restart cannot allow a duplicate row either.
//!
//! The day is the calendar day in the configured time zone (a class at 00:30 local time belongs
//! to that local day, whatever the UTC date).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use attendance_protocol::{ClassKey, Field, Timestamp};
use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::storage::MarkRecord;

type Key = (ClassKey, Field, Date);

/// The set of marks known from the file and made since start-up.
#[derive(Debug)]
pub struct Marks {
    inner: Mutex<HashMap<Key, Timestamp>>,
    tz: TimeZone,
}

impl Marks {
    /// Builds the set from the rows already in the CSV. Rows that are not well-formed are
    /// skipped (they cannot match a valid student anyway).
    pub fn from_records(records: &[MarkRecord], tz: TimeZone) -> Self {
        let marks = Self {
            inner: Mutex::new(HashMap::with_capacity(records.len())),
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

    /// The calendar day of `at` in the configured time zone.
    pub fn day(&self, at: Timestamp) -> Date {
        jiff::Timestamp::from_millisecond(i64::try_from(at.unix_millis()).unwrap_or(i64::MAX))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone())
            .date()
    }

    /// When `roll` of `class` was marked on the day of `now`, if it was.
    pub fn get(&self, class: &ClassKey, roll: &Field, now: Timestamp) -> Option<Timestamp> {
        let key = (class.clone(), roll.clone(), self.day(now));
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied()
    }

    /// Records a mark that is on disk.
    pub fn insert(&self, class: &ClassKey, roll: &Field, at: Timestamp) {
        let key = (class.clone(), roll.clone(), self.day(at));
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(at);
    }

    /// Marks known (all days).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True if no mark is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks made on the day of `now`.
    pub fn count_on_day_of(&self, now: Timestamp) -> usize {
        let today = self.day(now);
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .filter(|(_, _, d)| *d == today)
            .count()
    }
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
}
