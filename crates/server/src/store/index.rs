//! The dedupe index: who is already marked present, per class and roll, on the days that can
//! still be asked about, so a mark is never written twice.
//!
//! Only two local days are kept: the latest one a mark was recorded for ("today") and the day
//! before it (the zone edge: a mark made at 23:59:59.999 can reach the writer after midnight).
//! Older days are dropped as soon as a mark of a later day rolls the window, so the index holds
//! one day of marks (two around midnight) however long the daemon runs. Each day counts its own
//! marks, so [`Index::marks_today`] is O(1).
//!
//! The day is the calendar day in the configured time zone (a class at 00:30 local time belongs
//! to that local day, whatever the UTC date).

use std::sync::{Mutex, PoisonError};

use attendance_protocol::{ClassKey, Field, Timestamp};
use jiff::civil::Date;
use jiff::tz::TimeZone;

// Keys are client-chosen strings: a hasher seeded from the OS (crate::hashing).
use crate::hashing::Map;

/// The marks of one local day: class → roll → first mark. Nested rather than keyed by
/// `(class, roll)` so a look-up borrows the caller's class and roll instead of cloning them.
#[derive(Debug)]
struct Day {
    date: Date,
    classes: Map<ClassKey, Map<Field, Timestamp>>,
    /// Marks in `classes`.
    count: usize,
}

impl Day {
    fn new(date: Date) -> Self {
        Self {
            date,
            classes: Map::default(),
            count: 0,
        }
    }

    fn get(&self, class: &ClassKey, roll: &Field) -> Option<Timestamp> {
        self.classes.get(class)?.get(roll).copied()
    }

    /// Keeps `at` unless the roll already has a mark this day; true if it was new.
    fn insert(&mut self, class: &ClassKey, roll: &Field, at: Timestamp) -> bool {
        // One hash of the class and one of the roll: the keys are cloned only when new (a
        // `Field` of up to 24 bytes is held inline, so even then nothing is allocated).
        let rolls = match self.classes.get_mut(class) {
            Some(rolls) => rolls,
            None => self.classes.entry(class.clone()).or_default(),
        };
        match rolls.entry(roll.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(at);
                self.count += 1;
                true
            }
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// The latest day a mark was recorded for.
    today: Option<Day>,
    /// The day before `today`, if it has marks.
    previous: Option<Day>,
    /// The day last looked up: a mark looks its day up more than once, and a time-zone
    /// conversion each time showed in profiles.
    span: Option<DaySpan>,
}

impl Inner {
    fn day(&self, date: Date) -> Option<&Day> {
        [&self.today, &self.previous]
            .into_iter()
            .flatten()
            .find(|d| d.date == date)
    }
}

/// A calendar day and the instants it spans, [start, end) in Unix milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DaySpan {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) date: Date,
}

impl DaySpan {
    /// The day of `at` in `tz`, if its bounds can be computed (always, short of the ends of
    /// jiff's range).
    pub(crate) fn of(at: jiff::Timestamp, tz: &TimeZone) -> Option<Self> {
        let date = tz.to_datetime(at).date();
        Self::of_date(date, tz)
    }

    /// The span of `date` in `tz`.
    pub(crate) fn of_date(date: Date, tz: &TimeZone) -> Option<Self> {
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

/// The durable marks of today and the day before, shared by the writer (which adds marks once
/// they are on disk) and every reader.
#[derive(Debug)]
pub struct Index {
    inner: Mutex<Inner>,
    tz: TimeZone,
}

impl Index {
    /// An empty index whose days are the local days of `tz`.
    pub fn new(tz: TimeZone) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            tz,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The time zone whose local days the index keeps.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The calendar day of `at` in the index's time zone.
    pub fn day(&self, at: Timestamp) -> Date {
        // The same civil date as `at.to_zoned(tz).date()`, without cloning the zone.
        self.tz.to_datetime(jiff_timestamp(at)).date()
    }

    /// [`Index::day`], from the span of the day last looked up when `at` falls in it.
    fn day_cached(&self, inner: &mut Inner, at: Timestamp) -> Date {
        let ms = i64::try_from(at.unix_millis()).unwrap_or(i64::MAX);
        match inner.span {
            Some(span) if (span.start..span.end).contains(&ms) => span.date,
            _ => {
                inner.span = DaySpan::of(jiff_timestamp(at), &self.tz);
                inner.span.map_or_else(|| self.day(at), |span| span.date)
            }
        }
    }

    /// When `roll` of `class` was marked (durably) on the local day of `now`, if it was.
    pub fn marked_at(&self, class: &ClassKey, roll: &Field, now: Timestamp) -> Option<Timestamp> {
        let mut inner = self.lock();
        let date = self.day_cached(&mut inner, now);
        inner.day(date)?.get(class, roll)
    }

    /// The local day of `at` and the mark already held for `roll` of `class` on it, in one
    /// look-up (the writer's check before it writes a mark).
    pub(crate) fn classify(
        &self,
        class: &ClassKey,
        roll: &Field,
        at: Timestamp,
    ) -> (Date, Option<Timestamp>) {
        let mut inner = self.lock();
        let date = self.day_cached(&mut inner, at);
        (date, inner.day(date).and_then(|d| d.get(class, roll)))
    }

    /// Records a durable mark made at `at`. The first mark of a day is kept; a mark of a day
    /// after today rolls the window (today becomes the previous day, older days are dropped);
    /// a mark of a day before the previous one is not kept (nobody asks about it). Returns true
    /// if the mark is now the roll's mark of its day and was not before.
    pub fn insert(&self, class: &ClassKey, roll: &Field, at: Timestamp) -> bool {
        let mut inner = self.lock();
        let date = self.day_cached(&mut inner, at);
        Self::insert_on(&mut inner, class, roll, date, at)
    }

    /// [`Index::insert`] for several marks whose day is known, under one lock.
    pub(crate) fn insert_all<'a>(
        &self,
        marks: impl IntoIterator<Item = (&'a ClassKey, &'a Field, Date, Timestamp)>,
    ) {
        let mut inner = self.lock();
        for (class, roll, date, at) in marks {
            Self::insert_on(&mut inner, class, roll, date, at);
        }
    }

    fn insert_on(
        inner: &mut Inner,
        class: &ClassKey,
        roll: &Field,
        date: Date,
        at: Timestamp,
    ) -> bool {
        let today = inner.today.as_ref().map(|d| d.date);
        match today {
            Some(t) if date == t => {}
            Some(t) if date > t => {
                // The day rolled: keep the old today only if it is the new day's eve.
                let old = inner.today.take();
                inner.previous = old.filter(|_| date.yesterday().ok() == Some(t));
                inner.today = Some(Day::new(date));
            }
            Some(t) => {
                let eve = t.yesterday().ok() == Some(date);
                match &inner.previous {
                    Some(p) if p.date == date => {}
                    _ if eve => inner.previous = Some(Day::new(date)),
                    _ => return false,
                }
            }
            None => inner.today = Some(Day::new(date)),
        }
        let day = [&mut inner.today, &mut inner.previous]
            .into_iter()
            .flatten()
            .find(|d| d.date == date);
        day.is_some_and(|d| d.insert(class, roll, at))
    }

    /// Marks made on the local day of `now` (O(1): each kept day counts its marks).
    pub fn marks_today(&self, now: Timestamp) -> usize {
        let mut inner = self.lock();
        let date = self.day_cached(&mut inner, now);
        inner.day(date).map_or(0, |d| d.count)
    }

    /// Marks made on the local day of `now`, per class (unsorted).
    pub fn class_marks_today(&self, now: Timestamp) -> Vec<(ClassKey, usize)> {
        let mut inner = self.lock();
        let date = self.day_cached(&mut inner, now);
        inner.day(date).map_or_else(Vec::new, |d| {
            d.classes
                .iter()
                .map(|(class, rolls)| (class.clone(), rolls.len()))
                .collect()
        })
    }

    /// Marks held (today's and the previous day's).
    pub fn len(&self) -> usize {
        let inner = self.lock();
        [&inner.today, &inner.previous]
            .into_iter()
            .flatten()
            .map(|d| d.count)
            .sum()
    }

    /// True if no mark is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Local days held (at most two).
    pub fn days_held(&self) -> usize {
        let inner = self.lock();
        usize::from(inner.today.is_some()) + usize::from(inner.previous.is_some())
    }
}

pub(crate) fn jiff_timestamp(at: Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(i64::try_from(at.unix_millis()).unwrap_or(i64::MAX))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("ts")
    }

    fn key(id: &str) -> (ClassKey, Field) {
        let id: attendance_protocol::StudentId = id.parse().expect("valid");
        (id.class, id.roll)
    }

    #[test]
    fn the_day_is_the_local_day_of_the_configured_zone() {
        let kolkata = TimeZone::get("Asia/Kolkata").expect("tzdb");
        let (class, roll) = key("CN_D1_Ann_1");
        // 20:00 UTC on the 22nd is 01:30 on the 23rd in Kolkata.
        let marks = Index::new(kolkata);
        marks.insert(&class, &roll, ts("2026-11-22T20:00:00.000Z"));
        let later_same_local_day = ts("2026-11-23T10:00:00.000Z");
        assert!(
            marks
                .marked_at(&class, &roll, later_same_local_day)
                .is_some()
        );
        let utc = Index::new(TimeZone::UTC);
        utc.insert(&class, &roll, ts("2026-11-22T20:00:00.000Z"));
        assert!(
            utc.marked_at(&class, &roll, later_same_local_day).is_none(),
            "a new UTC day"
        );
    }

    #[test]
    fn the_cached_day_agrees_with_the_zone_across_dst_changes() {
        // Berlin changes at 02:00/03:00 local; Beirut and Santiago have changed at midnight.
        for zone in ["Europe/Berlin", "Asia/Beirut", "America/Santiago", "UTC"] {
            let tz = TimeZone::get(zone).expect("tzdb");
            let marks = Index::new(tz);
            let mut inner = Inner::default();
            // Bounded: every 37 minutes through 2026, in order (as a daemon looks days up).
            let start = ts("2026-01-01T00:00:00.000Z");
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
        let marks = Index::new(TimeZone::UTC);
        let (class, roll) = key("CN_D1_Ann_1");
        assert!(marks.insert(&class, &roll, ts("2026-11-23T08:00:00.000Z")));
        assert!(!marks.insert(&class, &roll, ts("2026-11-23T09:00:00.000Z")));
        let now = ts("2026-11-23T12:00:00.000Z");
        assert_eq!(
            marks.marked_at(&class, &roll, now),
            Some(ts("2026-11-23T08:00:00.000Z"))
        );
        assert_eq!(marks.marks_today(now), 1);
    }

    #[test]
    fn marks_are_kept_per_class_roll_and_day_around_midnight() {
        let marks = Index::new(TimeZone::UTC);
        let (class, roll) = key("CN_D1_Ann_1");
        let (other_class, other_roll) = key("CN_D2_Bob_1");
        // Today's mark reaches the index before one made just before midnight (the zone edge).
        marks.insert(&class, &roll, ts("2026-11-24T00:00:00.001Z"));
        marks.insert(&class, &roll, ts("2026-11-23T23:59:59.999Z"));
        marks.insert(&other_class, &other_roll, ts("2026-11-23T10:00:00.000Z"));
        assert_eq!(marks.len(), 3);
        assert_eq!(
            marks.marked_at(&class, &roll, ts("2026-11-23T12:00:00.000Z")),
            Some(ts("2026-11-23T23:59:59.999Z"))
        );
        assert_eq!(
            marks.marked_at(&class, &roll, ts("2026-11-24T12:00:00.000Z")),
            Some(ts("2026-11-24T00:00:00.001Z"))
        );
        assert_eq!(marks.marks_today(ts("2026-11-23T12:00:00.000Z")), 2);
        assert_eq!(marks.marks_today(ts("2026-11-24T12:00:00.000Z")), 1);
        assert_eq!(marks.marks_today(ts("2026-11-25T12:00:00.000Z")), 0);
        let (unknown_class, unknown_roll) = key("CN_D1_Cat_2");
        let day = ts("2026-11-23T12:00:00.000Z");
        assert_eq!(marks.marked_at(&unknown_class, &unknown_roll, day), None);
        assert_eq!(
            marks.marked_at(&other_class, &other_roll, day),
            Some(ts("2026-11-23T10:00:00.000Z"))
        );
    }

    /// Defect 1 (issue 16): the old `Marks` kept every day forever (its `len` counted all of
    /// them, and `count_on_day_of` scanned every roll of every day under the global lock). Here
    /// a week of daily marks leaves two days held, the previous day's dropped as soon as a day
    /// without an eve in the index begins, and the counts stay right.
    #[test]
    fn only_today_and_the_previous_day_are_held() {
        let marks = Index::new(TimeZone::UTC);
        let (class, roll) = key("CN_D1_Ann_1");
        for day in 1..=7 {
            let at = ts(&format!("2026-11-0{day}T09:00:00.000Z"));
            assert!(marks.insert(&class, &roll, at), "day {day}");
            assert!(marks.days_held() <= 2);
            assert!(marks.len() <= 2, "day {day}: {} marks held", marks.len());
            assert_eq!(marks.marks_today(at), 1);
        }
        assert_eq!(marks.len(), 2);
        assert_eq!(
            marks.marked_at(&class, &roll, ts("2026-11-05T12:00:00.000Z")),
            None,
            "an older day is dropped"
        );
        // A gap of days drops the previous day too.
        marks.insert(&class, &roll, ts("2026-11-10T09:00:00.000Z"));
        assert_eq!((marks.days_held(), marks.len()), (1, 1));
        // A mark of a day before the window is not held.
        assert!(!marks.insert(&class, &roll, ts("2026-11-02T09:00:00.000Z")));
        assert_eq!(marks.len(), 1);
    }
}
