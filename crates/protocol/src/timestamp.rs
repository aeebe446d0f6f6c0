//! UTC timestamps as they appear on the wire and in the CSV: RFC 3339, millisecond precision.

use std::fmt;
use std::str::FromStr;

use compact_str::CompactString;
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

impl Timestamp {
    /// The 24 bytes of the wire form, for years 0–9999 (every timestamp this daemon makes):
    /// fixed-width digits, a few times faster than the general formatter. Marks format two or
    /// three timestamps each, so this shows in profiles.
    fn digits(self) -> Option<[u8; 24]> {
        let dt = self.0;
        let year = dt.year();
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        let put = |buf: &mut [u8; 24], at: usize, width: usize, mut value: u32| {
            for i in (at..at + width).rev() {
                // A single decimal digit: the cast cannot truncate.
                buf[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        let (y, m, d) = dt.to_calendar_date();
        let (hh, mm, ss, ms) = dt.to_hms_milli();
        put(&mut buf, 0, 4, y.unsigned_abs());
        put(&mut buf, 5, 2, u32::from(u8::from(m)));
        put(&mut buf, 8, 2, u32::from(d));
        put(&mut buf, 11, 2, u32::from(hh));
        put(&mut buf, 14, 2, u32::from(mm));
        put(&mut buf, 17, 2, u32::from(ss));
        put(&mut buf, 20, 3, u32::from(ms));
        Some(buf)
    }

    /// The wire form, held inline (24 bytes: no allocation) and made without going through
    /// `fmt`. Marks format two or three timestamps each.
    pub fn to_wire(self) -> CompactString {
        match self.digits() {
            // ASCII by construction.
            Some(buf) => CompactString::from_utf8(buf).unwrap_or_else(|_| self.to_string().into()),
            None => self.to_string().into(),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(buf) = self.digits() {
            // All ASCII by construction.
            return f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?);
        }
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
    fn the_fast_format_matches_the_general_one() {
        let general = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        for text in [
            "2026-11-23T15:17:54.123Z",
            "2026-01-01T00:00:00.000Z",
            "1999-12-31T23:59:59.999Z",
            "0001-02-03T04:05:06.007Z",
            "9999-12-31T23:59:59.999Z",
            "1970-01-01T00:00:00.000Z",
        ] {
            let t: Timestamp = text.parse().expect("valid");
            assert_eq!(t.to_string(), text);
            assert_eq!(t.to_wire(), text);
            assert!(
                !t.to_wire().is_heap_allocated(),
                "{text} should be held inline"
            );
            assert_eq!(t.datetime().format(&general).ok(), Some(t.to_string()));
        }
        // Outside 0..=9999 the general formatter still answers.
        let far = Timestamp::from_datetime(
            OffsetDateTime::from_unix_timestamp(-70_000_000_000).expect("in range"),
        );
        assert_eq!(far.datetime().format(&general).ok(), Some(far.to_string()));
        assert_eq!(far.to_wire(), far.to_string());
    }

    #[test]
    fn round_trips_and_normalises_to_utc() {
        let t: Timestamp = "2026-11-23T20:47:54.123456+05:30".parse().expect("valid");
        assert_eq!(t.to_string(), "2026-11-23T15:17:54.123Z");
        assert_eq!(t.to_string().parse::<Timestamp>().ok(), Some(t));
    }
}
