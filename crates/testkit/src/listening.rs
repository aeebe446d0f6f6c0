//! The daemon's `listening on <addr>` log lines, read for the address it bound.

use std::net::SocketAddr;

/// What the daemon's listener lines contain before the address: `listening on 127.0.0.1:4321`
/// for the student port, then `metrics listening on …` when metrics are on. The student port's
/// line comes first.
pub const LISTENING: &str = "listening on ";

/// The address after [`LISTENING`] in a log line, e.g. `… INFO … listening on
/// 127.0.0.1:40123 addr=127.0.0.1:40123 tls=false` → `127.0.0.1:40123`.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    line.split(LISTENING)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_the_listening_line() {
        let line = "2026-01-01T00:00:00Z  INFO attendance_server::server: listening on 127.0.0.1:40123 addr=127.0.0.1:40123 tls=false";
        assert_eq!(
            parse_listening(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 40123)))
        );
        let metrics =
            "INFO attendance_server::server: metrics listening on 127.0.0.1:9 addr=127.0.0.1:9";
        assert_eq!(
            parse_listening(metrics),
            Some(SocketAddr::from(([127, 0, 0, 1], 9)))
        );
        assert_eq!(parse_listening("listening on nowhere"), None);
        assert_eq!(parse_listening("started"), None);
    }
}
