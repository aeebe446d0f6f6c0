//! Property tests: every message the crate can build survives `Display` → parse, never contains a
//! line break, and survives the [`LineCodec`] however the byte stream is split into reads.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use attendance_protocol::{
    AttendanceStatus, BurstKind, ClassCount, ClassKey, Command, ErrorCode, Event, Field, FieldKind,
    FlagEntry, FlagKind, Hello, History, HistoryEntry, HistoryKind, LineCodec, MAX_TOKEN_CHARS,
    Page, Reply, ServerLine, Status, StudentId, Text, Timestamp, Token, Transport, WhoEntry,
};
use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use time::OffsetDateTime;
use tokio_util::codec::{Decoder, Encoder};
use unicode_normalization::UnicodeNormalization as _;

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Real-world names with non-ASCII letters, combining marks, apostrophes, dots and hyphens.
const SAMPLE_NAMES: &[&str] = &[
    "स्वाति",
    "ก้อง",
    "Zoe\u{308}",
    "José",
    "Zoë",
    "李雷",
    "O'Brien",
    "Jean-Luc",
    "J.R.R.",
    "Ørsted",
    "Ünal",
    "Ελένη",
    "Дмитрий",
    "محمد",
    "18BCP043",
    "Ⅻ",
    "²",
];

/// A valid [`Field`] of `kind`: sample names, ASCII or Unicode words, and exactly-max-length ones.
fn field(kind: FieldKind) -> BoxedStrategy<Field> {
    let max = kind.max_chars();
    // Every sample name must fit every field kind for this strategy to stay valid.
    let samples = prop::sample::select(SAMPLE_NAMES)
        .prop_filter("fits", move |s| s.chars().count() <= max)
        .prop_map(str::to_owned);
    let ascii = format!("[A-Za-z0-9][A-Za-z0-9.'-]{{0,{}}}", max - 1);
    let unicode = format!("[\\p{{L}}\\p{{N}}][\\p{{L}}\\p{{N}}.'-]{{0,{}}}", max - 1);
    let ascii_max = format!("[A-Za-z0-9][A-Za-z0-9.'-]{{{}}}", max - 1);
    let unicode_max = format!("[\\p{{L}}\\p{{N}}][\\p{{L}}\\p{{N}}.'-]{{{}}}", max - 1);
    prop_oneof![
        3 => samples,
        3 => regex(&ascii),
        2 => regex(&unicode),
        1 => regex(&ascii_max),
        1 => regex(&unicode_max),
    ]
    // Fields are held in NFC, and the limit counts the composed form: a few letters (composition
    // exclusions such as U+0958) decompose, so a drawn string may no longer fit.
    .prop_map(|s| s.nfc().collect::<String>())
    .prop_filter("fits once composed", move |s| s.chars().count() <= max)
    .prop_map(move |s| {
        Field::new(kind, &s).unwrap_or_else(|e| panic!("generator made a bad {kind:?} {s:?}: {e}"))
    })
    .boxed()
}

fn regex(pattern: &str) -> BoxedStrategy<String> {
    proptest::string::string_regex(pattern)
        .unwrap_or_else(|e| panic!("bad test regex {pattern}: {e}"))
        .boxed()
}

fn class_key() -> impl Strategy<Value = ClassKey> {
    (field(FieldKind::Course), field(FieldKind::Division))
        .prop_map(|(course, division)| ClassKey { course, division })
}

fn student_id() -> impl Strategy<Value = StudentId> {
    (class_key(), field(FieldKind::Name), field(FieldKind::Roll))
        .prop_map(|(class, name, roll)| StudentId { class, name, roll })
}

/// Free text: inner spaces and punctuation, Unicode, long runs; never blank at either end.
fn text() -> impl Strategy<Value = Text> {
    prop_oneof![
        Just("hello  there".to_owned()),
        Just("welcome; send HELP for commands".to_owned()),
        Just("a".to_owned()),
        Just("=SUM(A1:A9) +1 -1 @x 'quoted' \"dq\" \\ / | < > & ~ `tick` _ #".to_owned()),
        regex(
            "[A-Za-z0-9][A-Za-z0-9 ,.;:!?'\"()\\[\\]{}<>@#$%^&*+=/\\\\|~`_-]{0,80}[A-Za-z0-9.!?]"
        ),
        // Any character a Text allows inside, visible (non-white) at the ends.
        regex("[^\\p{Cc}\\s]([^\\p{Cc}\\u{2028}\\u{2029}]{0,60}[^\\p{Cc}\\s])?"),
        regex("[^\\p{Cc}\\s]( {1,3}[^\\p{Cc}\\s]{1,10}){0,12}"),
        regex("x{300,400}"),
    ]
    .prop_map(|s| Text::new(&s).unwrap_or_else(|e| panic!("generator made bad text {s:?}: {e}")))
}

/// One word of 1 to [`MAX_TOKEN_CHARS`] characters, including exactly-max-length ones.
fn token() -> BoxedStrategy<Token> {
    token_from("[^\\p{Cc}\\s]")
}

/// A token drawn from `class` (a regex character class).
fn token_from(class: &str) -> BoxedStrategy<Token> {
    prop_oneof![
        3 => regex("[A-Za-z0-9._-]{1,24}"),
        3 => regex(&format!("{class}{{1,40}}")),
        1 => regex(&format!("{class}{{{MAX_TOKEN_CHARS}}}")),
    ]
    .prop_map(|s| Token::new(&s).unwrap_or_else(|e| panic!("generator made bad token {s:?}: {e}")))
    .boxed()
}

/// `HELLO <server>/<version> …` splits at the first `/`, so a server name must not hold one; see
/// `a_hello_server_name_must_not_contain_a_slash` below.
fn server_token() -> BoxedStrategy<Token> {
    token_from("[^\\p{Cc}\\s/]")
        .prop_filter("no slash", |t| !t.as_str().contains('/'))
        .boxed()
}

/// 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z, the range RFC 3339 can write.
const MIN_MILLIS: i64 = -62_167_219_200_000;
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// Any instant RFC 3339 can write, from a millisecond Unix time plus sub-millisecond noise that
/// [`Timestamp::from_datetime`] must truncate away.
fn timestamp() -> impl Strategy<Value = Timestamp> {
    let millis = prop_oneof![
        Just(0i64),
        Just(MIN_MILLIS),
        Just(MAX_MILLIS),
        1_700_000_000_000i64..1_900_000_000_000,
        MIN_MILLIS..=MAX_MILLIS,
    ];
    (millis, 0i128..1_000_000).prop_map(|(ms, sub)| {
        let nanos = i128::from(ms) * 1_000_000 + sub;
        let dt = OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or_else(|e| panic!("generator made a bad instant {nanos}: {e}"));
        Timestamp::from_datetime(dt)
    })
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(u64::MAX), 0u64..100_000, any::<u64>()]
}

/// IPv4 and IPv6, including the forms IPv6 prints specially (`::`, `::1`, zero runs, v4-mapped).
fn ip_addr() -> impl Strategy<Value = IpAddr> {
    let zeroish = prop_oneof![Just(0u16), Just(0u16), any::<u16>()];
    prop_oneof![
        any::<Ipv4Addr>().prop_map(IpAddr::V4),
        any::<Ipv6Addr>().prop_map(IpAddr::V6),
        prop::array::uniform8(zeroish).prop_map(|s| IpAddr::V6(Ipv6Addr::from(s))),
        Just(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        Just(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        Just(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        any::<Ipv4Addr>().prop_map(|a| IpAddr::V6(a.to_ipv6_mapped())),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (student_id(), prop::option::of(token())).prop_map(|(id, code)| Command::Join(id, code)),
        token().prop_map(Command::Resume),
        Just(Command::History),
        student_id().prop_map(Command::JoinPresent),
        Just(Command::Present),
        Just(Command::Time),
        Just(Command::Elapsed),
        Just(Command::Clients),
        prop::option::of(token()).prop_map(Command::Ping),
        text().prop_map(Command::Say),
        Just(Command::Help),
        Just(Command::Quit),
        prop::option::of(token()).prop_map(Command::Shutdown),
        Just(Command::Status),
        count().prop_map(|offset| Command::Classes { offset }),
        (prop::option::of(class_key()), count())
            .prop_map(|(class, offset)| Command::Who { class, offset }),
        (prop::option::of(class_key()), count())
            .prop_map(|(class, offset)| Command::Flags { class, offset }),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    (
        (count(), count(), count(), count(), count()),
        prop::option::of(count()),
        count(),
        token(),
    )
        .prop_map(
            |(
                (connections, joined, classes, marks_today, writer_queue),
                last_fsync_micros,
                uptime_secs,
                version,
            )| Status {
                connections,
                joined,
                classes,
                marks_today,
                writer_queue,
                last_fsync_micros,
                uptime_secs,
                version,
            },
        )
}

fn page<T: std::fmt::Debug>(entry: impl Strategy<Value = T>) -> impl Strategy<Value = Page<T>> {
    (count(), count(), prop::collection::vec(entry, 0..6)).prop_map(|(total, offset, entries)| {
        Page {
            total,
            offset,
            entries,
        }
    })
}

fn class_count() -> impl Strategy<Value = ClassCount> {
    (class_key(), count()).prop_map(|(class, members)| ClassCount { class, members })
}

fn who_entry() -> impl Strategy<Value = WhoEntry> {
    (
        student_id(),
        count(),
        prop_oneof![Just(Transport::Tcp), Just(Transport::Ws)],
    )
        .prop_map(|(id, seconds_left, transport)| WhoEntry {
            id,
            seconds_left,
            transport,
        })
}

fn flag_entry() -> impl Strategy<Value = FlagEntry> {
    (
        prop_oneof![Just(FlagKind::SharedAddress), Just(FlagKind::TwoAddresses)],
        class_key(),
        prop::collection::vec(ip_addr(), 1..3),
        prop::collection::vec(field(FieldKind::Roll), 1..4),
    )
        .prop_map(|(kind, class, addrs, rolls)| FlagEntry {
            kind,
            class,
            addrs,
            rolls,
        })
}

fn hello() -> impl Strategy<Value = Hello> {
    (server_token(), token(), text()).prop_map(|(server, version, text)| Hello {
        server,
        version,
        text,
    })
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (student_id(), count(), prop::option::of(token())).prop_map(
            |(id, required_seconds, resume)| Reply::Join {
                id,
                required_seconds,
                resume
            }
        ),
        (student_id(), count(), token()).prop_map(|(id, required_seconds, resume)| {
            Reply::Resume {
                id,
                required_seconds,
                resume,
            }
        }),
        (timestamp(), attendance_status(), any::<u32>()).prop_map(|(marked_at, status, late)| {
            Reply::Present {
                marked_at,
                status,
                minutes_late: if status == AttendanceStatus::Present {
                    0
                } else {
                    late
                },
            }
        }),
        history().prop_map(Reply::History),
        timestamp().prop_map(Reply::Time),
        count().prop_map(Reply::Elapsed),
        count().prop_map(Reply::Clients),
        prop::option::of(token()).prop_map(Reply::Pong),
        Just(Reply::Say),
        text().prop_map(Reply::Help),
        Just(Reply::Bye),
        Just(Reply::Shutdown),
        status().prop_map(Reply::Status),
        page(class_count()).prop_map(Reply::Classes),
        page(who_entry()).prop_map(Reply::Who),
        page(flag_entry()).prop_map(Reply::Flags),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (
            class_key(),
            field(FieldKind::Name),
            prop::option::of(ip_addr())
        )
            .prop_map(|(class, name, addr)| Event::Join { class, name, addr }),
        field(FieldKind::Name).prop_map(|name| Event::Present { name }),
        (field(FieldKind::Name), text()).prop_map(|(name, text)| Event::Say { name, text }),
        field(FieldKind::Name).prop_map(|name| Event::Leave { name }),
        (
            prop::sample::select(BurstKind::ALL.to_vec()),
            class_key(),
            count()
        )
            .prop_map(|(kind, class, count)| Event::Burst { kind, class, count }),
        timestamp().prop_map(Event::Heartbeat),
        count().prop_map(Event::Lagged),
        Just(Event::Shutdown),
        Just(Event::Replaced),
        (attendance_status(), any::<u32>()).prop_map(|(status, minutes_attended)| {
            Event::Ended {
                status,
                minutes_attended,
            }
        }),
        (token(), text()).prop_map(|(dependency, text)| Event::Degraded { dependency, text }),
        (token(), text()).prop_map(|(dependency, text)| Event::Recovered { dependency, text }),
    ]
}

fn attendance_status() -> impl Strategy<Value = AttendanceStatus> {
    prop::sample::select(AttendanceStatus::ALL.to_vec())
}

fn history() -> impl Strategy<Value = History> {
    (
        prop::option::of(attendance_status()),
        count(),
        count(),
        any::<u32>(),
        prop::collection::vec(
            (prop::sample::select(HistoryKind::ALL.to_vec()), timestamp())
                .prop_map(|(kind, at)| HistoryEntry { kind, at }),
            0..6,
        ),
    )
        .prop_map(
            |(status, served_seconds, required_seconds, minutes_late, entries)| History {
                status,
                served_seconds,
                required_seconds,
                minutes_late,
                entries,
            },
        )
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ErrorCode::ALL.to_vec())
}

fn server_line() -> impl Strategy<Value = ServerLine> {
    prop_oneof![
        1 => hello().prop_map(ServerLine::Hello),
        4 => reply().prop_map(ServerLine::Ok),
        3 => (error_code(), text()).prop_map(|(code, message)| ServerLine::Err { code, message }),
        1 => count().prop_map(ServerLine::early),
        4 => event().prop_map(ServerLine::Event),
    ]
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Splits `bytes` at the given (unsorted, possibly repeated) points, giving every chunk in order.
fn split_at_points<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// Feeds `chunks` one by one through a fresh codec, draining it after each, then ends the stream.
fn decode_chunked(max_line: usize, chunks: &[&[u8]]) -> Vec<String> {
    let mut codec = LineCodec::new(max_line);
    let mut buf = BytesMut::new();
    let mut lines = Vec::new();
    let mut take = |item: Option<Result<String, attendance_protocol::LineError>>| match item {
        Some(Ok(line)) => {
            lines.push(line);
            true
        }
        Some(Err(e)) => panic!("a valid message stream decoded to an error: {e}"),
        None => false,
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while take(codec.decode(&mut buf).expect("decode is infallible")) {}
    }
    while take(
        codec
            .decode_eof(&mut buf)
            .expect("decode_eof is infallible"),
    ) {}
    lines
}

/// Encodes each item with the codec's own encoder.
fn encode_all<T>(items: &[T]) -> BytesMut
where
    for<'a> LineCodec: Encoder<&'a T, Error = std::io::Error>,
{
    let mut codec = LineCodec::default();
    let mut dst = BytesMut::new();
    for item in items {
        codec
            .encode(item, &mut dst)
            .expect("a valid message encodes");
    }
    dst
}

/// The longest line (in bytes, without `\n`) among the displayed items: the tightest limit.
fn longest_line<T: ToString>(items: &[T]) -> usize {
    items.iter().map(|i| i.to_string().len()).max().unwrap_or(0)
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
    #![proptest_config(config(192))]

    #[test]
    fn every_command_parses_back_from_its_display(cmd in command()) {
        let line = cmd.to_string();
        prop_assert_eq!(Command::parse(&line), Ok(cmd.clone()), "line: {:?}", line);
        prop_assert_eq!(line.parse::<Command>(), Ok(cmd));
    }

    #[test]
    fn every_server_line_parses_back_from_its_display(line in server_line()) {
        let shown = line.to_string();
        prop_assert_eq!(shown.parse::<ServerLine>(), Ok(line), "line: {:?}", shown);
    }

    #[test]
    fn err_lines_of_every_error_code_parse_back(message in text()) {
        for code in ErrorCode::ALL {
            let line = ServerLine::Err { code, message: message.clone() };
            let shown = line.to_string();
            let prefix = format!("ERR {} ", code.as_str());
            prop_assert!(shown.starts_with(&prefix), "{:?} does not start with {:?}", shown, prefix);
            prop_assert_eq!(shown.parse::<ServerLine>(), Ok(line), "line: {:?}", shown);
        }
    }

    #[test]
    fn displayed_messages_never_contain_a_line_break(cmd in command(), line in server_line()) {
        for shown in [cmd.to_string(), line.to_string()] {
            prop_assert!(!shown.contains(['\n', '\r']), "line break in {:?}", shown);
        }
        // The encoders add exactly one line ending, at the end, and nothing else breaks the line.
        for encoded in [encode_all(std::slice::from_ref(&cmd)), encode_all(std::slice::from_ref(&line)), BytesMut::from(&line.encode()[..])] {
            prop_assert_eq!(encoded.iter().filter(|&&b| b == b'\n' || b == b'\r').count(), 1);
            prop_assert_eq!(encoded.last(), Some(&b'\n'));
        }
    }

    #[test]
    fn timestamps_round_trip_at_millisecond_precision(t in timestamp()) {
        let shown = t.to_string();
        prop_assert_eq!(shown.len(), "2026-11-23T15:17:54.123Z".len());
        prop_assert_eq!(shown.parse::<Timestamp>().ok(), Some(t));
        prop_assert_eq!(t.unix_millis() * 1_000_000, t.datetime().unix_timestamp_nanos());
    }
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn encoded_commands_survive_the_codec_split_at_any_points(
        cmds in prop::collection::vec(command(), 1..8),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let bytes = encode_all(&cmds);
        let max_line = longest_line(&cmds);
        // One read, then arbitrary reads.
        for chunks in [vec![&bytes[..]], split_at_points(&bytes, &cuts)] {
            let lines = decode_chunked(max_line, &chunks);
            let parsed: Vec<_> = lines.iter().map(|l| Command::parse(l)).collect();
            let expected: Vec<_> = cmds.iter().cloned().map(Ok).collect();
            prop_assert_eq!(parsed, expected);
        }
    }

    #[test]
    fn encoded_server_lines_survive_the_codec_split_at_any_points(
        items in prop::collection::vec(server_line(), 1..8),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let bytes = encode_all(&items);
        let max_line = longest_line(&items);
        for chunks in [vec![&bytes[..]], split_at_points(&bytes, &cuts)] {
            let lines = decode_chunked(max_line, &chunks);
            let parsed: Vec<_> = lines.iter().map(|l| l.parse::<ServerLine>()).collect();
            let expected: Vec<_> = items.iter().cloned().map(Ok).collect();
            prop_assert_eq!(parsed, expected);
        }
    }

    #[test]
    fn crlf_framed_messages_decode_like_lf_framed_ones_at_the_same_limit(
        cmds in prop::collection::vec(command(), 1..6),
        items in prop::collection::vec(server_line(), 1..6),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let crlf = |bytes: BytesMut| -> Vec<u8> {
            bytes.iter().flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] }).collect()
        };
        let cmd_bytes = crlf(encode_all(&cmds));
        let lines = decode_chunked(longest_line(&cmds), &split_at_points(&cmd_bytes, &cuts));
        let parsed: Vec<_> = lines.iter().map(|l| Command::parse(l)).collect();
        prop_assert_eq!(parsed, cmds.iter().cloned().map(Ok).collect::<Vec<_>>());

        let line_bytes = crlf(encode_all(&items));
        let lines = decode_chunked(longest_line(&items), &split_at_points(&line_bytes, &cuts));
        let parsed: Vec<_> = lines.iter().map(|l| l.parse::<ServerLine>()).collect();
        prop_assert_eq!(parsed, items.iter().cloned().map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn the_last_message_counts_without_its_line_ending(
        cmds in prop::collection::vec(command(), 1..6),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let mut bytes = encode_all(&cmds);
        bytes.truncate(bytes.len() - 1);
        let lines = decode_chunked(longest_line(&cmds), &split_at_points(&bytes, &cuts));
        let parsed: Vec<_> = lines.iter().map(|l| Command::parse(l)).collect();
        prop_assert_eq!(parsed, cmds.iter().cloned().map(Ok).collect::<Vec<_>>());
    }
}

// ---------------------------------------------------------------------------------------------
// The generators themselves
// ---------------------------------------------------------------------------------------------

fn command_variant(c: &Command) -> usize {
    match c {
        Command::Join(_, None) => 0,
        Command::Join(_, Some(_)) => 17,
        Command::Resume(_) => 18,
        Command::History => 19,
        Command::JoinPresent(_) => 1,
        Command::Present => 2,
        Command::Time => 3,
        Command::Elapsed => 4,
        Command::Clients => 5,
        Command::Ping(None) => 6,
        Command::Ping(Some(_)) => 7,
        Command::Say(_) => 8,
        Command::Help => 9,
        Command::Quit => 10,
        Command::Shutdown(None) => 11,
        Command::Shutdown(Some(_)) => 12,
        Command::Status => 13,
        Command::Classes { .. } => 14,
        Command::Who { class: None, .. } => 15,
        Command::Who { class: Some(_), .. } => 16,
        Command::Flags { .. } => 20,
    }
}

fn reply_variant(r: &Reply) -> usize {
    match r {
        Reply::Join { .. } => 0,
        Reply::Present { .. } => 1,
        Reply::Time(_) => 2,
        Reply::Elapsed(_) => 3,
        Reply::Clients(_) => 4,
        Reply::Pong(None) => 5,
        Reply::Pong(Some(_)) => 6,
        Reply::Say => 7,
        Reply::Help(_) => 8,
        Reply::Bye => 9,
        Reply::Shutdown => 10,
        Reply::Status(Status {
            last_fsync_micros: None,
            ..
        }) => 11,
        Reply::Status(Status {
            last_fsync_micros: Some(_),
            ..
        }) => 12,
        Reply::Classes(p) if p.entries.is_empty() => 13,
        Reply::Classes(_) => 14,
        Reply::Who(p) if p.entries.is_empty() => 15,
        Reply::Who(_) => 16,
        Reply::Resume { .. } => 17,
        Reply::History(_) => 18,
        Reply::Flags(_) => 19,
    }
}

fn event_variant(e: &Event) -> usize {
    match e {
        Event::Join {
            addr: Some(IpAddr::V4(_)),
            ..
        } => 0,
        Event::Join {
            addr: Some(IpAddr::V6(_)),
            ..
        } => 1,
        Event::Join { addr: None, .. } => 9,
        Event::Present { .. } => 2,
        Event::Say { .. } => 3,
        Event::Leave { .. } => 4,
        Event::Heartbeat(_) => 5,
        Event::Lagged(_) => 6,
        Event::Shutdown => 7,
        Event::Burst { .. } => 8,
        Event::Replaced => 10,
        Event::Ended { .. } => 11,
        Event::Degraded { .. } => 12,
        Event::Recovered { .. } => 13,
    }
}

/// Draws `n` values and returns which of `variants` indices were seen.
fn variants_seen<S: Strategy>(
    strategy: S,
    n: usize,
    variants: usize,
    f: fn(&S::Value) -> usize,
) -> Vec<usize> {
    let mut runner = TestRunner::deterministic();
    let mut seen = vec![0; variants];
    for _ in 0..n {
        let value = strategy
            .new_tree(&mut runner)
            .expect("strategy yields")
            .current();
        seen[f(&value)] += 1;
    }
    seen
}

/// The exhaustive matches above fail to compile when a variant is added, and this test fails
/// when a strategy stops producing one, so the properties cover every message kind.
#[test]
fn the_generators_cover_every_message_variant() {
    let seen = variants_seen(command(), 1200, 21, command_variant);
    assert!(
        seen.iter().all(|&n| n > 0),
        "commands seen per variant: {seen:?}"
    );
    let seen = variants_seen(reply(), 1200, 20, reply_variant);
    assert!(
        seen.iter().all(|&n| n > 0),
        "replies seen per variant: {seen:?}"
    );
    let seen = variants_seen(event(), 700, 14, event_variant);
    assert!(
        seen.iter().all(|&n| n > 0),
        "events seen per variant: {seen:?}"
    );
    let kinds = |l: &ServerLine| match l {
        ServerLine::Hello(_) => 0,
        ServerLine::Ok(_) => 1,
        ServerLine::Err { .. } => 2,
        ServerLine::Event(_) => 3,
    };
    let seen = variants_seen(server_line(), 200, 4, kinds);
    assert!(
        seen.iter().all(|&n| n > 0),
        "server lines seen per tag: {seen:?}"
    );
}

#[test]
fn the_generators_reach_the_length_limits() {
    let mut runner = TestRunner::deterministic();
    let mut longest = [0usize; 4];
    for (i, kind) in [
        FieldKind::Course,
        FieldKind::Division,
        FieldKind::Name,
        FieldKind::Roll,
    ]
    .into_iter()
    .enumerate()
    {
        for _ in 0..200 {
            let f = field(kind)
                .new_tree(&mut runner)
                .expect("strategy yields")
                .current();
            longest[i] = longest[i].max(f.as_str().chars().count());
        }
        assert_eq!(longest[i], kind.max_chars(), "{kind:?}");
    }
    let mut longest_token = 0;
    for _ in 0..200 {
        let t = token()
            .new_tree(&mut runner)
            .expect("strategy yields")
            .current();
        longest_token = longest_token.max(t.as_str().chars().count());
    }
    assert_eq!(longest_token, MAX_TOKEN_CHARS);
}

// ---------------------------------------------------------------------------------------------
// Known gaps in the round trip, pinned so a change in behaviour is noticed
// ---------------------------------------------------------------------------------------------

/// `Hello::server` is a plain [`Token`], which may contain `/`; the wire form
/// `HELLO <server>/<version>` splits at the first `/`, so such a server name cannot round-trip.
/// The real server name is `attendanced`, so the strategies above avoid `/` in server names.
#[test]
fn a_hello_server_name_must_not_contain_a_slash() {
    let token = |s: &str| Token::new(s).expect("valid token");
    let hello = ServerLine::Hello(Hello {
        server: token("a/b"),
        version: token("1.0"),
        text: Text::new("hi").expect("valid text"),
    });
    let parsed: ServerLine = hello.to_string().parse().expect("still parses");
    assert_ne!(parsed, hello);
    // A slash in the version is fine.
    let hello = ServerLine::Hello(Hello {
        server: token("attendanced"),
        version: token("1.0/rc1"),
        text: Text::new("hi").expect("valid text"),
    });
    assert_eq!(hello.to_string().parse::<ServerLine>(), Ok(hello));
}
