//! Who is already marked present, per class, roll and day (UTC), so a mark is never written
//! twice. Rebuilt from the CSV at start-up, so a restart cannot allow a duplicate row either.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use attendance_protocol::{ClassKey, Field, Timestamp};
use time::Date;

use crate::storage::MarkRecord;

type Key = (ClassKey, Field, Date);

/// The set of marks made today (and earlier days still in the file).
#[derive(Debug, Default)]
pub struct Marks {
    inner: Mutex<HashMap<Key, Timestamp>>,
}

impl Marks {
    /// Builds the set from the rows already in the CSV. Rows that are not well-formed are
    /// skipped (they cannot match a valid student anyway).
    pub fn from_records(records: &[MarkRecord]) -> Self {
        let mut map = HashMap::with_capacity(records.len());
        for r in records {
            let parsed = (|| {
                let id = attendance_protocol::StudentId::from_parts(
                    &r.course,
                    &r.division,
                    &r.name,
                    &r.roll,
                )
                .ok()?;
                let at: Timestamp = r.marked_at.parse().ok()?;
                Some(((id.class, id.roll, at.datetime().date()), at))
            })();
            if let Some((key, at)) = parsed {
                map.entry(key).or_insert(at);
            }
        }
        Self {
            inner: Mutex::new(map),
        }
    }

    /// When `roll` of `class` was marked on the day of `now`, if it was.
    pub fn get(&self, class: &ClassKey, roll: &Field, now: Timestamp) -> Option<Timestamp> {
        let key = (class.clone(), roll.clone(), now.datetime().date());
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied()
    }

    /// Records a mark that is on disk.
    pub fn insert(&self, class: &ClassKey, roll: &Field, at: Timestamp) {
        let key = (class.clone(), roll.clone(), at.datetime().date());
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
}
