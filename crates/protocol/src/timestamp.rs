//! UTC timestamps as they appear on the wire and in the CSV: RFC 3339, millisecond precision.

use std::fmt;
use std::str::FromStr;

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset, macros::format_description};

/// A UTC instant with millisecond precision, written as `2026-11-23T15:17:54.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    /// Converts any instant to UTC and truncates it to milliseconds.
    pub fn from_datetime(dt: OffsetDateTime) -> Self {
        let dt = dt.to_offset(UtcOffset::UTC);
        let millis = dt.millisecond();
        // Truncating to whole milliseconds cannot fail: the value is in range by construction.
        Self(dt.replace_millisecond(millis).unwrap_or(dt))
    }

    /// The instant.
    pub fn datetime(self) -> OffsetDateTime {
        self.0
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i128 {
        self.0.unix_timestamp_nanos() / 1_000_000
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        match self.0.format(&format) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl FromStr for Timestamp {
    type Err = time::error::Parse;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OffsetDateTime::parse(s, &Rfc3339).map(Self::from_datetime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_normalises_to_utc() {
        let t: Timestamp = "2026-11-23T20:47:54.123456+05:30".parse().expect("valid");
        assert_eq!(t.to_string(), "2026-11-23T15:17:54.123Z");
        assert_eq!(t.to_string().parse::<Timestamp>().ok(), Some(t));
    }
}
