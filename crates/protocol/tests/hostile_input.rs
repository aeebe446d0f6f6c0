//! Property tests: whatever bytes a peer sends, split into reads however the network likes, the
//! [`LineCodec`] never panics, never holds more than a bounded number of bytes, yields exactly the
//! items a simple line-by-line model predicts, and hands the parsers only bounded lines, which
//! they never panic on.
//!
//! # The memory bound
//!
//! Let `m` be the codec's `max_line` and `c` the size of the chunk most recently appended to the
//! buffer. These tests prove, after every `decode`/`decode_eof` call:
//!
//! * `decode` never grows the buffer;
//! * so the buffer holds at most `m + 1 + c` bytes (what was left after the previous read plus the
//!   new chunk);
//! * whenever `decode` returns `Ok(None)` (the codec waits for more input) the buffer holds at most
//!   `m + 1` bytes, and exactly `m + 1` only when the last of them is a `\r` awaiting its `\n`;
//! * whenever `decode_eof` returns `Ok(None)` the buffer is empty.
//!
//! This is one byte tighter than the documented `m + 2` ("a line of `m` bytes plus `\r\n`"),
//! because a complete `\r\n`-terminated line is split off as soon as its `\n` arrives.

use std::str::FromStr;

use attendance_protocol::{Command, DEFAULT_MAX_LINE, LineCodec, LineError, ServerLine};
use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use tokio_util::codec::Decoder;

type Item = Result<String, LineError>;

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Lines that are, or are close to, real protocol lines, so the parsers get past their first word.
const SEED_LINES: &[&str] = &[
    "JOIN CN_D1_José_1",
    "join  cn_d1_李雷_18 ",
    "cn_d1_jay_18_present",
    "CN_Div1_Jay_18_",
    "CN_Div1_Jay_18__Present",
    "a_b_c_d_e_f",
    "_",
    "PING",
    "ping  tok ",
    "SAY  hi  there ",
    "SAY \u{85}x",
    "say \u{2028}",
    "SHUTDOWN",
    "shutdown x y",
    "TIME",
    "PRESENT",
    "HELLO attendanced/0.1.0 welcome; send HELP",
    "HELLO a/b/c d",
    "OK JOIN a b c d 5",
    "OK JOIN a b c d 18446744073709551616",
    "OK TIME 2026-11-23T15:17:54.123Z",
    "OK PRESENT 1985-04-12T23:20:50.52+01:00",
    "OK PRESENT 0000-01-01T00:00:00Z",
    "OK PONG ",
    "OK PONG a b",
    "ERR EARLY 42 seconds",
    "ERR NOPE x",
    "ERR RATE  x",
    "EVENT JOIN a b c ::ffff:1.2.3.4",
    "EVENT JOIN a b c 1.2.3.4 x",
    "EVENT SAY x  hi",
    "EVENT HEARTBEAT 2026-12-31T23:59:60Z",
    "EVENT LAGGED -1",
    "EVENT SHUTDOWN",
];

/// One piece of a hostile stream.
fn segment() -> impl Strategy<Value = Vec<u8>> {
    let special = prop::sample::select(vec![
        b'\n', b'\r', 0xff, 0x00, b'a', b' ', b'_', b'/', 0xc3, 0xa9, 0xe6, 0x9d, 0x8e, b'\t',
    ]);
    let run_byte = prop::sample::select(vec![b'x', b'\r', b'\n', 0xff, 0x00, b' ']);
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..48),
        3 => prop::collection::vec(special, 0..48),
        2 => (run_byte, 0usize..2_000).prop_map(|(b, n)| vec![b; n]),
        1 => (0usize..100).prop_map(|n| b"\r\n".repeat(n)),
        3 => prop::sample::select(SEED_LINES).prop_map(|s| format!("{s}\n").into_bytes()),
        2 => ".{0,40}".prop_map(String::into_bytes),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(segment(), 0..16).prop_map(|segments| segments.concat())
}

/// Small limits, where nearly every line is too long, and the default.
fn max_line() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..=64, Just(DEFAULT_MAX_LINE)]
}

/// How the stream is cut into reads.
#[derive(Debug, Clone)]
enum Split {
    /// At arbitrary points.
    Points(Vec<Index>),
    /// Into reads of a fixed size.
    Every(usize),
}

fn split() -> impl Strategy<Value = Split> {
    prop_oneof![
        prop::collection::vec(any::<Index>(), 0..32).prop_map(Split::Points),
        (1usize..16).prop_map(Split::Every),
        Just(Split::Every(usize::MAX)),
    ]
}

fn chunks<'a>(bytes: &'a [u8], split: &Split) -> Vec<&'a [u8]> {
    match split {
        Split::Points(cuts) => {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.push(0);
            points.push(bytes.len());
            points.sort_unstable();
            points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
        }
        Split::Every(n) => bytes.chunks((*n).min(bytes.len().max(1))).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// The driver and the model
// ---------------------------------------------------------------------------------------------

/// Feeds `chunks` through a fresh `LineCodec::new(max_line)`, calling `decode` until it waits after
/// each chunk and then `decode_eof` until it ends, as `FramedRead` does. Checks the memory bound
/// after every call and returns every item.
fn drive(max_line: usize, chunks: &[&[u8]]) -> Result<Vec<Item>, TestCaseError> {
    let mut codec = LineCodec::new(max_line);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let at_rest = max_line.saturating_add(1);
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let bound = at_rest.saturating_add(chunk.len());
        prop_assert!(
            buf.len() <= bound,
            "{} bytes before decoding, bound {}",
            buf.len(),
            bound
        );
        loop {
            let before = buf.len();
            let item = codec.decode(&mut buf)?;
            prop_assert!(
                buf.len() <= before,
                "decode grew the buffer {} -> {}",
                before,
                buf.len()
            );
            prop_assert!(
                buf.len() <= bound,
                "{} bytes after decode, bound {}",
                buf.len(),
                bound
            );
            match item {
                Some(item) => items.push(item),
                None => {
                    prop_assert!(
                        buf.len() <= at_rest,
                        "{} bytes held while waiting, limit {}",
                        buf.len(),
                        max_line
                    );
                    if buf.len() == at_rest {
                        prop_assert_eq!(buf.last(), Some(&b'\r'));
                    }
                    break;
                }
            }
        }
    }
    loop {
        let before = buf.len();
        let item = codec.decode_eof(&mut buf)?;
        prop_assert!(buf.len() <= before, "decode_eof grew the buffer");
        match item {
            Some(item) => items.push(item),
            None => {
                prop_assert!(buf.is_empty(), "{} bytes left after the end", buf.len());
                break;
            }
        }
    }
    Ok(items)
}

/// What the codec should yield: split at every `\n`, drop one trailing `\r`, then judge the length
/// and the encoding. A last line without `\n` counts unless it is empty.
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

/// Runs a decoded line through both parsers; anything they accept must re-display to a single
/// line that parses back to the same value.
fn parse_everything(line: &str) -> Result<(), TestCaseError> {
    if let Ok(cmd) = Command::parse(line) {
        let shown = cmd.to_string();
        prop_assert!(
            !shown.contains(['\n', '\r']),
            "{:?} displays as {:?}",
            line,
            shown
        );
        prop_assert_eq!(
            Command::parse(&shown),
            Ok(cmd),
            "{:?} displays as {:?}",
            line,
            shown
        );
    }
    if let Ok(server_line) = ServerLine::from_str(line) {
        let shown = server_line.to_string();
        prop_assert!(
            !shown.contains(['\n', '\r']),
            "{:?} displays as {:?}",
            line,
            shown
        );
        prop_assert_eq!(
            shown.parse::<ServerLine>(),
            Ok(server_line),
            "{:?} displays as {:?}",
            line,
            shown
        );
    }
    Ok(())
}

/// `cases` by default (kept small so the suite stays quick); `PROPTEST_CASES=N` overrides it for
/// a longer hunt.
fn config(cases: u32) -> Config {
    let base = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            base.cases
        } else {
            cases
        },
        failure_persistence: None,
        ..base
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(256))]

    /// See the module documentation for the exact bound; `drive` asserts it after every call.
    #[test]
    fn the_buffer_never_exceeds_max_line_plus_one_plus_the_latest_read(
        bytes in stream(),
        max_line in max_line(),
        split in split(),
    ) {
        drive(max_line, &chunks(&bytes, &split))?;
    }

    #[test]
    fn decoded_items_match_the_line_by_line_model_however_the_stream_is_split(
        bytes in stream(),
        max_line in max_line(),
        split in split(),
    ) {
        let items = drive(max_line, &chunks(&bytes, &split))?;
        prop_assert_eq!(items, model(&bytes, max_line));
    }

    #[test]
    fn ok_lines_fit_the_limit_hold_no_line_feed_and_errors_name_the_limit(
        bytes in stream(),
        max_line in max_line(),
        split in split(),
    ) {
        for item in drive(max_line, &chunks(&bytes, &split))? {
            match item {
                Ok(line) => {
                    prop_assert!(line.len() <= max_line, "{} bytes > {}", line.len(), max_line);
                    prop_assert!(!line.contains('\n'), "line feed in {:?}", line);
                }
                Err(LineError::TooLong(n)) => prop_assert_eq!(n, max_line),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn every_decoded_line_parses_without_panicking_and_accepted_lines_reparse_identically(
        bytes in stream(),
        max_line in max_line(),
        split in split(),
    ) {
        for line in drive(max_line, &chunks(&bytes, &split))?.into_iter().flatten() {
            parse_everything(&line)?;
        }
    }

    #[test]
    fn arbitrary_strings_never_panic_the_parsers(line in ".{0,200}") {
        parse_everything(&line)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic cases
// ---------------------------------------------------------------------------------------------

/// Feeds `stream` in reads of `read` bytes, checking the bound, and returns the items.
fn decode_in_reads(max_line: usize, stream: &[u8], read: usize) -> Vec<Item> {
    let chunks: Vec<&[u8]> = stream.chunks(read).collect();
    drive(max_line, &chunks).unwrap_or_else(|e| panic!("reads of {read}: {e}"))
}

#[test]
fn a_mebibyte_line_without_newline_is_one_too_long_error_and_is_never_buffered() {
    let mut stream = b"A\n".to_vec();
    stream.extend(std::iter::repeat_n(b'x', 1 << 20));
    stream.extend_from_slice(b"\nTIME\n");
    let expected = vec![
        Ok("A".to_owned()),
        Err(LineError::TooLong(DEFAULT_MAX_LINE)),
        Ok("TIME".to_owned()),
    ];
    // `drive` checks that the buffer holds at most DEFAULT_MAX_LINE + 1 bytes between reads.
    for read in [1, 7, 1500, 4096, 65_536] {
        assert_eq!(
            decode_in_reads(DEFAULT_MAX_LINE, &stream, read),
            expected,
            "reads of {read}"
        );
    }
    assert_eq!(model(&stream, DEFAULT_MAX_LINE), expected);
}

#[test]
fn a_stream_ending_inside_an_over_long_line_reports_it_once() {
    let stream = [b"TIME\n".as_slice(), &[b'x'; 5000]].concat();
    for read in [1, 3, 4096] {
        assert_eq!(
            decode_in_reads(16, &stream, read),
            vec![Ok("TIME".to_owned()), Err(LineError::TooLong(16))]
        );
    }
}

#[test]
fn lines_at_the_limit_pass_and_one_byte_more_fails_for_lf_and_crlf() {
    for max_line in [0, 1, 2, 5, 64] {
        let fits = "y".repeat(max_line);
        let over = "y".repeat(max_line + 1);
        let stream = format!("{fits}\n{fits}\r\n{over}\n{over}\r\n{fits}\r{over}");
        let expected = vec![
            Ok(fits.clone()),
            Ok(fits.clone()),
            Err(LineError::TooLong(max_line)),
            Err(LineError::TooLong(max_line)),
            Err(LineError::TooLong(max_line)),
        ];
        for read in [1, 2, 3, 1000] {
            assert_eq!(
                decode_in_reads(max_line, stream.as_bytes(), read),
                expected,
                "max {max_line}, reads of {read}"
            );
        }
    }
}

#[test]
fn split_utf8_sequences_are_reassembled_and_broken_ones_are_encoding_errors() {
    let stream = "李雷 Zoë\n".as_bytes().to_vec();
    for read in [1, 2, 3] {
        assert_eq!(
            decode_in_reads(64, &stream, read),
            vec![Ok("李雷 Zoë".to_owned())]
        );
    }
    let broken = [&"李".as_bytes()[..2], b"\n\xff\nok\n\xc3"].concat();
    assert_eq!(
        decode_in_reads(64, &broken, 1),
        vec![
            Err(LineError::Encoding),
            Err(LineError::Encoding),
            Ok("ok".to_owned()),
            Err(LineError::Encoding)
        ]
    );
}

/// `max_line + 1` used to overflow: a panic in debug builds and, in release builds, a spurious
/// `TooLong` for an empty buffer (as `FramedRead` presents after every line).
#[test]
fn an_unbounded_max_line_neither_overflows_nor_reports_an_empty_buffer() {
    let mut codec = LineCodec::new(usize::MAX);
    let mut buf = BytesMut::new();
    assert_eq!(codec.decode(&mut buf).ok(), Some(None));
    buf.extend_from_slice(b"TIME\nPRES");
    assert_eq!(
        codec.decode(&mut buf).ok(),
        Some(Some(Ok("TIME".to_owned())))
    );
    assert_eq!(codec.decode(&mut buf).ok(), Some(None));
    buf.extend_from_slice(b"ENT\r");
    assert_eq!(codec.decode(&mut buf).ok(), Some(None));
    assert_eq!(
        codec.decode_eof(&mut buf).ok(),
        Some(Some(Ok("PRESENT".to_owned())))
    );
    assert_eq!(codec.decode_eof(&mut buf).ok(), Some(None));
    let stream = b"a\r\n\nbb\r\r\nccc".repeat(50);
    assert_eq!(
        decode_in_reads(usize::MAX, &stream, 7),
        model(&stream, usize::MAX)
    );
}
