//! What an attendance record says about a student: the CSV's `status` column, the word in
//! `OK PRESENT … <status>` and `OK HISTORY status=…`.

use std::fmt;
use std::str::FromStr;

/// The status of one student's record for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttendanceStatus {
    /// Served the required time, first JOIN on time (or an ad hoc class).
    Present,
    /// Served the required time, first JOIN after the class's `late_after`.
    Late,
    /// The session ended before the required time was served.
    Left,
    /// On the roster, no record when the session closed.
    Absent,
}

impl AttendanceStatus {
    /// Every status.
    pub const ALL: [AttendanceStatus; 4] = [Self::Present, Self::Late, Self::Left, Self::Absent];

    /// The word as written in the CSV and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Present => "Present",
            Self::Late => "Late",
            Self::Left => "Left",
            Self::Absent => "Absent",
        }
    }

    /// Whether the student is counted as attending (Present or Late).
    pub fn attended(self) -> bool {
        matches!(self, Self::Present | Self::Late)
    }
}

impl fmt::Display for AttendanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The word is not a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an attendance status (Present, Late, Left, Absent): {0:?}")]
pub struct StatusError(pub String);

impl FromStr for AttendanceStatus {
    type Err = StatusError;
    fn from_str(s: &str) -> Result<Self, StatusError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| StatusError(s.chars().take(32).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_and_others_are_refused() {
        for s in AttendanceStatus::ALL {
            assert_eq!(s.as_str().parse::<AttendanceStatus>(), Ok(s));
        }
        assert!("present".parse::<AttendanceStatus>().is_err());
        assert!(AttendanceStatus::Late.attended());
        assert!(!AttendanceStatus::Left.attended());
    }
}
