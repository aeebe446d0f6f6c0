//! A bounded line codec that turns bad lines into items instead of ending the stream.
//!
//! tokio-util's `LinesCodec` reports an over-long line or invalid UTF-8 as a decoder *error*, after
//! which `FramedRead` ends the stream: one typo would cost a student the class. [`LineCodec`]
//! yields `Err(LineError)` as an ordinary item and carries on with the next line. It never holds
//! more than `max_line + 2` bytes of one line: the rest of an over-long line is dropped as it
//! arrives. The limit excludes the line ending, so LF and CRLF clients get the same room.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::command::Command;
use crate::server_line::ServerLine;

/// Default longest line, in bytes, excluding the line ending.
pub const DEFAULT_MAX_LINE: usize = 1024;

/// A line that could not be decoded. The connection can go on with the next line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The line was longer than the limit; it has been (or is being) discarded.
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    /// The line was not valid UTF-8.
    #[error("line is not valid UTF-8")]
    Encoding,
}

/// Line codec: LF or CRLF in, LF out, at most `max_line` bytes per line.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_line: usize,
    /// How far the buffer has been searched for `\n` already.
    next_index: usize,
    /// Inside an over-long line whose error was already reported: drop bytes up to `\n`.
    discarding: bool,
}

impl LineCodec {
    /// A codec that accepts lines of up to `max_line` bytes (excluding `\r\n` or `\n`).
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            next_index: 0,
            discarding: false,
        }
    }

    /// The limit this codec enforces.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// The line's text without its line ending, checked against the limit and for UTF-8.
    fn finish_line(&self, line: &[u8]) -> Result<String, LineError> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.max_line {
            return Err(LineError::TooLong(self.max_line));
        }
        std::str::from_utf8(line)
            .map(str::to_owned)
            .map_err(|_| LineError::Encoding)
    }
}

impl Default for LineCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

impl Decoder for LineCodec {
    type Item = Result<String, LineError>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if self.discarding {
            match memchr::memchr(b'\n', buf) {
                Some(pos) => {
                    buf.advance(pos + 1);
                    self.discarding = false;
                }
                None => {
                    buf.clear();
                    return Ok(None);
                }
            }
        }
        // A complete line is at most max_line bytes of content plus "\r\n".
        let window = buf.len().min(self.max_line.saturating_add(2));
        let start = self.next_index.min(window);
        if let Some(offset) = memchr::memchr(b'\n', &buf[start..window]) {
            // Copied out and skipped: no split of the buffer (a split shares it, which costs an
            // allocation and reference counting per line).
            let end = start + offset + 1;
            let item = self.finish_line(&buf[..end]);
            buf.advance(end);
            self.next_index = 0;
            return Ok(Some(item));
        }
        // No line end yet. Only a trailing '\r' may sit past max_line while we wait for '\n'.
        let too_long = buf.len() > self.max_line.saturating_add(1)
            || (buf.len() == self.max_line.saturating_add(1) && buf.last() != Some(&b'\r'));
        if too_long {
            self.next_index = 0;
            // Drop the line: up to its end if that has arrived, else all of it, remembering to
            // drop what follows until the end comes.
            match memchr::memchr(b'\n', &buf[window..]) {
                Some(offset) => buf.advance(window + offset + 1),
                None => {
                    buf.clear();
                    self.discarding = true;
                }
            }
            return Ok(Some(Err(LineError::TooLong(self.max_line))));
        }
        self.next_index = buf.len();
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        self.next_index = 0;
        if self.discarding || buf.is_empty() {
            buf.clear();
            self.discarding = false;
            return Ok(None);
        }
        // A last line without its line ending still counts (netcat -N, piped files).
        let item = self.finish_line(buf);
        buf.clear();
        Ok(Some(item))
    }
}

/// Pre-encoded lines (already ending in `\n`), as the server shares them among receivers.
impl Encoder<Bytes> for LineCodec {
    type Error = std::io::Error;
    fn encode(&mut self, line: Bytes, dst: &mut BytesMut) -> Result<(), Self::Error> {
        dst.extend_from_slice(&line);
        Ok(())
    }
}

impl Encoder<&ServerLine> for LineCodec {
    type Error = std::io::Error;
    fn encode(&mut self, line: &ServerLine, dst: &mut BytesMut) -> Result<(), Self::Error> {
        write_line(dst, line)
    }
}

impl Encoder<&Command> for LineCodec {
    type Error = std::io::Error;
    fn encode(&mut self, cmd: &Command, dst: &mut BytesMut) -> Result<(), Self::Error> {
        write_line(dst, cmd)
    }
}

fn write_line(dst: &mut BytesMut, item: &dyn std::fmt::Display) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let start = dst.len();
    write!(dst, "{item}").map_err(std::io::Error::other)?;
    // Message types cannot hold a line break; refuse rather than send two lines if one ever did.
    if memchr::memchr2(b'\n', b'\r', &dst[start..]).is_some() {
        dst.truncate(start);
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "refusing to encode a line break inside a message",
        ));
    }
    dst.put_u8(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut LineCodec, input: &[u8]) -> Vec<Result<String, LineError>> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Ok(Some(item)) = codec.decode(&mut buf) {
            out.push(item);
        }
        if let Ok(Some(item)) = codec.decode_eof(&mut buf) {
            out.push(item);
        }
        out
    }

    #[test]
    fn lf_and_crlf_get_the_same_limit() {
        let mut c = LineCodec::new(4);
        assert_eq!(decode_all(&mut c, b"abcd\n"), vec![Ok("abcd".into())]);
        assert_eq!(decode_all(&mut c, b"abcd\r\n"), vec![Ok("abcd".into())]);
        assert_eq!(
            decode_all(&mut c, b"abcde\n"),
            vec![Err(LineError::TooLong(4))]
        );
        assert_eq!(
            decode_all(&mut c, b"abcde\r\n"),
            vec![Err(LineError::TooLong(4))]
        );
    }

    #[test]
    fn a_long_line_is_reported_once_and_the_next_line_survives() {
        let mut c = LineCodec::new(4);
        let out = decode_all(&mut c, b"0123456789abcdef\nok\n");
        assert_eq!(out, vec![Err(LineError::TooLong(4)), Ok("ok".into())]);
    }

    #[test]
    fn a_long_line_arriving_in_pieces_is_never_buffered() {
        let mut c = LineCodec::new(8);
        let mut buf = BytesMut::new();
        let mut errors = 0;
        for _ in 0..1000 {
            buf.extend_from_slice(b"xxxxxxxxxxxxxxxx");
            while let Ok(Some(item)) = c.decode(&mut buf) {
                assert_eq!(item, Err(LineError::TooLong(8)));
                errors += 1;
            }
            assert!(buf.len() <= 10, "buffer grew to {}", buf.len());
        }
        buf.extend_from_slice(b"\nTIME\n");
        assert_eq!(c.decode(&mut buf).ok().flatten(), Some(Ok("TIME".into())));
        assert_eq!(errors, 1);
    }

    #[test]
    fn invalid_utf8_is_an_item() {
        let mut c = LineCodec::new(16);
        let out = decode_all(&mut c, b"\xff\xfe\nPING\n");
        assert_eq!(out, vec![Err(LineError::Encoding), Ok("PING".into())]);
    }

    #[test]
    fn a_trailing_cr_waits_for_its_lf() {
        let mut c = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"abcd\r"[..]);
        assert_eq!(c.decode(&mut buf).ok(), Some(None));
        buf.extend_from_slice(b"\n");
        assert_eq!(c.decode(&mut buf).ok(), Some(Some(Ok("abcd".into()))));
    }

    #[test]
    fn last_line_without_newline_counts_at_eof() {
        let mut c = LineCodec::new(16);
        assert_eq!(
            decode_all(&mut c, b"TIME\nQUIT"),
            vec![Ok("TIME".into()), Ok("QUIT".into())]
        );
    }

    #[test]
    fn encoder_refuses_embedded_line_breaks() {
        let mut c = LineCodec::default();
        let mut dst = BytesMut::new();
        let line = ServerLine::Ok(crate::server_line::Reply::Bye);
        assert!(c.encode(&line, &mut dst).is_ok());
        assert_eq!(&dst[..], b"OK BYE\n");
    }
}
