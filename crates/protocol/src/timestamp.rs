//! UTC timestamps as they appear on the wire and in the CSV: RFC 3339, millisecond precision.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use bytes::BufMut;
use compact_str::CompactString;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, UtcOffset, macros::format_description};

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

    /// The instant `millis` milliseconds after the Unix epoch, if it is one `time` can hold.
    pub fn from_unix_millis(millis: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
            .ok()
            .map(Self::from_datetime)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i128 {
        // Whole seconds and the millisecond within: no 128-bit division (which showed in
        // profiles; a mark asks several times). Exact, as a timestamp holds whole milliseconds.
        i128::from(self.0.unix_timestamp()) * 1000 + i128::from(self.0.millisecond())
    }
}

/// A UTC date, hour, minute and second.
type Second = (Date, u8, u8, u8);

impl Timestamp {
    /// The 24 bytes of the wire form, for years 0–9999 (every timestamp this daemon makes):
    /// fixed-width digits, a few times faster than the general formatter. Marks format two or
    /// three timestamps each, so this shows in profiles; and as they come in bursts, the date
    /// and time up to the second are kept per thread and reused within the same second.
    fn digits(self) -> Option<[u8; 24]> {
        thread_local! {
            /// The second last formatted on this thread (its UTC date, hour, minute and
            /// second, as the timestamp holds them), and its `YYYY-MM-DDTHH:MM:SS.`.
            static LAST_SECOND: Cell<(Second, [u8; 20])> =
                const { Cell::new(((Date::MIN, u8::MAX, u8::MAX, u8::MAX), [0; 20])) };
        }
        let (hh, mm, ss) = self.0.to_hms();
        let second = (self.0.date(), hh, mm, ss);
        let prefix = match LAST_SECOND.get() {
            (cached, prefix) if cached == second => prefix,
            _ => {
                let prefix = self.second_prefix()?;
                LAST_SECOND.set((second, prefix));
                prefix
            }
        };
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        buf[..20].copy_from_slice(&prefix);
        put_digits(&mut buf[20..23], u32::from(self.0.millisecond()));
        Some(buf)
    }

    /// `YYYY-MM-DDTHH:MM:SS.` for years 0–9999.
    fn second_prefix(self) -> Option<[u8; 20]> {
        let dt = self.0;
        let year = dt.year();
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut buf = *b"0000-00-00T00:00:00.";
        let (y, m, d) = dt.to_calendar_date();
        let (hh, mm, ss) = dt.to_hms();
        put_digits(&mut buf[0..4], y.unsigned_abs());
        put_digits(&mut buf[5..7], u32::from(u8::from(m)));
        put_digits(&mut buf[8..10], u32::from(d));
        put_digits(&mut buf[11..13], u32::from(hh));
        put_digits(&mut buf[14..16], u32::from(mm));
        put_digits(&mut buf[17..19], u32::from(ss));
        Some(buf)
    }

    /// Appends the wire form to `out` (a reply being encoded), without an intermediate string.
    pub fn write_wire<B: BufMut>(self, out: &mut B) {
        match self.digits() {
            Some(buf) => out.put_slice(&buf),
            None => out.put_slice(self.to_string().as_bytes()),
        }
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

/// Writes `value`'s last `out.len()` decimal digits into `out`, zero-padded.
fn put_digits(out: &mut [u8], mut value: u32) {
    for digit in out.iter_mut().rev() {
        // A single decimal digit: the cast cannot truncate.
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
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
            // The same second again, then the next and back (the per-thread second is reused
            // only for the same second), and a second before the epoch.
            "1970-01-01T00:00:00.999Z",
            "1970-01-01T00:00:01.001Z",
            "1970-01-01T00:00:00.500Z",
            "1969-12-31T23:59:59.999Z",
            "1969-12-31T23:59:59.000Z",
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
        let m: Timestamp = "2026-11-23T15:17:54.123Z".parse().expect("valid");
        let back = i64::try_from(m.unix_millis())
            .ok()
            .and_then(Timestamp::from_unix_millis);
        assert_eq!(back, Some(m));
        let t: Timestamp = "2026-11-23T20:47:54.123456+05:30".parse().expect("valid");
        assert_eq!(t.to_string(), "2026-11-23T15:17:54.123Z");
        assert_eq!(t.to_string().parse::<Timestamp>().ok(), Some(t));
    }
}
