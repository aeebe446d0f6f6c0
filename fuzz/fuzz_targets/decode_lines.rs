//! Fuzz target: arbitrary bytes, split into arbitrary reads, through `LineCodec`, then every line
//! through `Command::parse` and `ServerLine::from_str`.
//!
//! Input layout: byte 0 picks `max_line`, bytes 1-2 seed the read sizes, the rest is the stream.
//! Asserted (the same bounds as `crates/protocol/tests/hostile_input.rs`):
//! * `decode` never grows the buffer, which never exceeds `max_line + 1 + <latest read>` bytes;
//! * while the codec waits for more input it holds at most `max_line + 1` bytes (exactly that many
//!   only with a trailing `\r`), and nothing once `decode_eof` is done;
//! * the items equal a plain split-at-`\n` model, so they do not depend on the read sizes;
//! * `Ok` lines hold at most `max_line` bytes and no `\n`; `TooLong` names `max_line`;
//! * whatever either parser accepts displays as one line that parses back to the same value.

#![no_main]

use std::str::FromStr;

use attendance_protocol::{Command, DEFAULT_MAX_LINE, LineCodec, LineError, ServerLine};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

type Item = Result<String, LineError>;

fn max_line_from(b: u8) -> usize {
    match b {
        0..=191 => usize::from(b) % 65,
        192..=247 => DEFAULT_MAX_LINE,
        248..=254 => 1 << (usize::from(b) - 240), // 256 ..= 16 KiB
        255 => usize::MAX,
    }
}

/// Read sizes from a tiny xorshift generator: 0 means "everything in one read".
struct Reads(u16);

impl Reads {
    fn next(&mut self, left: usize) -> usize {
        if self.0 == 0 {
            return left;
        }
        let mut x = self.0;
        x ^= x << 7;
        x ^= x >> 9;
        x ^= x << 8;
        self.0 = x;
        // Mostly tiny reads, sometimes a big one.
        let n = if x.is_multiple_of(8) {
            usize::from(x)
        } else {
            usize::from(x % 17) + 1
        };
        n.min(left)
    }
}

fn model(stream: &[u8], max_line: usize) -> Vec<Item> {
    let judge = |line: &[u8]| -> Item {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > max_line {
            Err(LineError::TooLong(max_line))
        } else {
            String::from_utf8(line.to_vec()).map_err(|_| LineError::Encoding)
        }
    };
    let mut pieces: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    let last = pieces.pop().unwrap_or_default();
    let mut items: Vec<Item> = pieces.into_iter().map(judge).collect();
    if !last.is_empty() {
        items.push(judge(last));
    }
    items
}

fn check_parsers(line: &str) {
    if let Ok(cmd) = Command::parse(line) {
        let shown = cmd.to_string();
        assert!(
            !shown.contains(['\n', '\r']),
            "{line:?} displays as {shown:?}"
        );
        assert_eq!(
            Command::parse(&shown),
            Ok(cmd),
            "{line:?} displays as {shown:?}"
        );
    }
    if let Ok(parsed) = ServerLine::from_str(line) {
        let shown = parsed.to_string();
        assert!(
            !shown.contains(['\n', '\r']),
            "{line:?} displays as {shown:?}"
        );
        assert_eq!(
            shown.parse::<ServerLine>(),
            Ok(parsed),
            "{line:?} displays as {shown:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [b0, b1, b2, stream @ ..] = data else {
        return;
    };
    let max_line = max_line_from(*b0);
    let at_rest = max_line.saturating_add(1);
    let mut reads = Reads(u16::from_le_bytes([*b1, *b2]));

    let mut codec = LineCodec::new(max_line);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(reads.next(rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        let bound = at_rest.saturating_add(chunk.len());
        assert!(buf.len() <= bound);
        loop {
            let before = buf.len();
            let item = codec.decode(&mut buf).expect("decode is infallible");
            assert!(buf.len() <= before, "decode grew the buffer");
            assert!(buf.len() <= bound, "{} bytes > bound {bound}", buf.len());
            match item {
                Some(item) => items.push(item),
                None => {
                    assert!(
                        buf.len() <= at_rest,
                        "{} bytes held while waiting",
                        buf.len()
                    );
                    if buf.len() == at_rest {
                        assert_eq!(buf.last(), Some(&b'\r'));
                    }
                    break;
                }
            }
        }
    }
    loop {
        let before = buf.len();
        let item = codec
            .decode_eof(&mut buf)
            .expect("decode_eof is infallible");
        assert!(buf.len() <= before, "decode_eof grew the buffer");
        match item {
            Some(item) => items.push(item),
            None => {
                assert!(buf.is_empty(), "{} bytes left after the end", buf.len());
                break;
            }
        }
    }

    assert_eq!(items, model(stream, max_line));
    for item in &items {
        match item {
            Ok(line) => {
                assert!(line.len() <= max_line);
                assert!(!line.contains('\n'));
                check_parsers(line);
            }
            Err(LineError::TooLong(n)) => assert_eq!(*n, max_line),
            Err(_) => {}
        }
    }
});
