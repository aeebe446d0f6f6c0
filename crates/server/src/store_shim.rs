//! The mark store's interface over the writer task and the marks index (temporary: the store
//! folder replaces both).

use std::net::IpAddr;
use std::sync::Arc;

use attendance_protocol::{ClassKey, Field, StudentId, Timestamp};

use crate::marks::Marks;
use crate::storage::encode_row;
use crate::writer::{WriteError, WriterHandle};

/// A mark to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The student.
    pub id: StudentId,
    /// When the mark is made.
    pub marked_at: Timestamp,
    /// When the student joined.
    pub joined_at: Timestamp,
    /// The student's address.
    pub addr: Option<IpAddr>,
}

/// What the store did with a mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written and durable, at this time.
    New(Timestamp),
    /// Already marked on that day, at this time.
    Existing(Timestamp),
}

/// Why a mark was not recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The write or sync failed.
    #[error("{0}")]
    Storage(String),
    /// The store has stopped.
    #[error("the store has stopped")]
    Closed,
}

/// The store's handle.
#[derive(Debug, Clone)]
pub struct Store {
    writer: WriterHandle,
    marks: Arc<Marks>,
}

impl Store {
    /// A store over `writer` and `marks`.
    pub fn new(writer: WriterHandle, marks: Arc<Marks>) -> Self {
        Self { writer, marks }
    }

    /// Records `mark` durably, or answers the mark already made that day.
    ///
    /// # Errors
    /// [`StoreError`].
    pub async fn record(&self, mark: Mark) -> Result<Recorded, StoreError> {
        let id = &mark.id;
        if let Some(at) = self.marks.get(&id.class, &id.roll, mark.marked_at) {
            return Ok(Recorded::Existing(at));
        }
        let addr = mark.addr.map(|a| a.to_string()).unwrap_or_default();
        let mut row = Vec::new();
        encode_row(
            [
                id.course().as_str(),
                id.division().as_str(),
                id.name.as_str(),
                id.roll.as_str(),
                "Present",
                &mark.marked_at.to_wire(),
                &mark.joined_at.to_wire(),
                &addr,
            ],
            &mut row,
        );
        match self.writer.write(row).await {
            Ok(()) => {
                self.marks.insert(&id.class, &id.roll, mark.marked_at);
                Ok(Recorded::New(mark.marked_at))
            }
            Err(WriteError::Storage(e)) => Err(StoreError::Storage(e)),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// The durable mark of `roll` in `class` on the day of `now`.
    pub fn marked_at(&self, class: &ClassKey, roll: &Field, now: Timestamp) -> Option<Timestamp> {
        self.marks.get(class, roll, now)
    }

    /// Marks on the day of `now`.
    pub fn marks_today(&self, now: Timestamp) -> usize {
        self.marks.count_on_day_of(now)
    }

    /// Reopens the file.
    ///
    /// # Errors
    /// Why it could not be reopened.
    pub async fn reopen(&self) -> Result<(), String> {
        self.writer.reopen().await
    }

    /// Completes when the writer has worked through what was queued before.
    ///
    /// # Errors
    /// [`StoreError::Closed`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.writer.ping().await.map_err(|_| StoreError::Closed)
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.writer.queued()
    }
}
