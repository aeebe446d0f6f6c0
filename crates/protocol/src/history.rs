//! `OK HISTORY …`: a student's own timeline for today in one class.
//!
//! On the wire: `status=<pending|Present|Late|Left|Absent> served=<seconds> required=<seconds>
//! late=<minutes> [<kind>@<RFC 3339> …]`, the entries oldest first (the most recent
//! [`MAX_HISTORY`] of them). Parsers ignore `key=value` words they do not know.

use std::fmt;
use std::str::FromStr;

use crate::server_line::ParseLineError;
use crate::status::AttendanceStatus;
use crate::timestamp::Timestamp;

/// Most timeline entries kept (and sent) per student and session; older ones are dropped.
pub const MAX_HISTORY: usize = 32;

/// What happened at one point of a student's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HistoryKind {
    /// A JOIN took a seat.
    Join,
    /// The connection holding the seat dropped (the grace begins).
    Drop,
    /// A RESUME took the seat back (within the grace, or over a live connection).
    Resume,
    /// The grace ran out with nobody back: the seat is free.
    Expired,
    /// The record was written (its status is the timeline's `status`).
    Mark,
}

impl HistoryKind {
    /// Every kind.
    pub const ALL: [HistoryKind; 5] = [
        Self::Join,
        Self::Drop,
        Self::Resume,
        Self::Expired,
        Self::Mark,
    ];

    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Drop => "drop",
            Self::Resume => "resume",
            Self::Expired => "expired",
            Self::Mark => "mark",
        }
    }
}

/// One entry of a timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEntry {
    /// What happened.
    pub kind: HistoryKind,
    /// When (the server's clock).
    pub at: Timestamp,
}

/// A student's timeline for today in one class, and the status decided so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The record's status, once written; `None` while the session runs (`pending`).
    pub status: Option<AttendanceStatus>,
    /// Seconds served so far (connected time only).
    pub served_seconds: u64,
    /// Seconds the student must serve in all.
    pub required_seconds: u64,
    /// Whole minutes the first JOIN came after the class's `late_after` (0 if on time).
    pub minutes_late: u32,
    /// The timeline, oldest first.
    pub entries: Vec<HistoryEntry>,
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "status={s}")?,
            None => f.write_str("status=pending")?,
        }
        write!(
            f,
            " served={} required={} late={}",
            self.served_seconds, self.required_seconds, self.minutes_late
        )?;
        for e in &self.entries {
            write!(f, " {}@{}", e.kind.as_str(), e.at)?;
        }
        Ok(())
    }
}

impl FromStr for History {
    type Err = ParseLineError;
    fn from_str(s: &str) -> Result<Self, ParseLineError> {
        let mut h = History {
            status: None,
            served_seconds: 0,
            required_seconds: 0,
            minutes_late: 0,
            entries: Vec::new(),
        };
        let mut seen_status = false;
        for word in s.split(' ').filter(|w| !w.is_empty()) {
            if let Some((key, value)) = word.split_once('=') {
                let num = |what| value.parse::<u64>().map_err(|_| ParseLineError::Word(what));
                match key {
                    "status" => {
                        seen_status = true;
                        h.status = match value {
                            "pending" => None,
                            v => Some(v.parse().map_err(|_| ParseLineError::Word("status"))?),
                        };
                    }
                    "served" => h.served_seconds = num("served")?,
                    "required" => h.required_seconds = num("required")?,
                    "late" => {
                        h.minutes_late = value.parse().map_err(|_| ParseLineError::Word("late"))?;
                    }
                    _ => {}
                }
            } else {
                let (kind, at) = word
                    .split_once('@')
                    .ok_or(ParseLineError::Word("history entry"))?;
                let kind = HistoryKind::ALL
                    .into_iter()
                    .find(|k| k.as_str() == kind)
                    .ok_or(ParseLineError::Word("history kind"))?;
                let at = at.parse().map_err(|_| ParseLineError::Word("timestamp"))?;
                h.entries.push(HistoryEntry { kind, at });
            }
        }
        if !seen_status {
            return Err(ParseLineError::Word("status"));
        }
        Ok(h)
    }
}
