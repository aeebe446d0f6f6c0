//! Server → client lines: the greeting, replies, refusals and pushed events.
//!
//! Every line starts with a tag: `HELLO`, `OK`, `ERR` or `EVENT`. The second word names the
//! command (for `OK`), the error code (for `ERR`) or the kind of event (for `EVENT`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use bytes::{BufMut, Bytes};

use crate::admin::{ClassCount, FlagEntry, Page, Status, WhoEntry};
use crate::history::History;
use crate::id::{ClassKey, Field, FieldKind, StudentId};
use crate::status::AttendanceStatus;
use crate::text::{Text, Token};
use crate::timestamp::Timestamp;

/// The stable, upper-case codes of `ERR` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No such command.
    Unknown,
    /// Wrong arguments or characters; the message says what was expected.
    BadFormat,
    /// The command needs a JOIN first.
    NotJoined,
    /// This connection already joined as another student.
    Joined,
    /// PRESENT before the class length was served; the first word of the message is the number
    /// of seconds remaining.
    Early,
    /// That roll is checked in on another connection; the first connection keeps it.
    Already,
    /// Missing or wrong admin token.
    Denied,
    /// The line was longer than the server's limit; the rest of it was discarded.
    TooLong,
    /// The line was not valid UTF-8.
    Encoding,
    /// The mark could not be stored (the CSV on disk, or the database); nothing was recorded, try again.
    Storage,
    /// The server has no room for another connection.
    Full,
    /// No valid JOIN arrived in time.
    Timeout,
    /// Too many lines too fast.
    Rate,
    /// Too many protocol errors in a row; the server closes the connection.
    TooManyErrors,
    /// The server is shutting down and no longer takes marks.
    ShuttingDown,
    /// The class does not take JOIN now; the first word of the message is its next opening
    /// (RFC 3339).
    Closed,
    /// The class has a rotating code and the JOIN carried none, or a wrong one.
    BadCode,
    /// The class has a roster and this roll (or this name for the roll) is not on it.
    NotEnrolled,
    /// The class takes JOIN only from its listed networks.
    Forbidden,
    /// No seat to resume with that token (unknown, or its grace ran out): JOIN again.
    BadToken,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 20] = [
        Self::Unknown,
        Self::BadFormat,
        Self::NotJoined,
        Self::Joined,
        Self::Early,
        Self::Already,
        Self::Denied,
        Self::TooLong,
        Self::Encoding,
        Self::Storage,
        Self::Full,
        Self::Timeout,
        Self::Rate,
        Self::TooManyErrors,
        Self::ShuttingDown,
        Self::Closed,
        Self::BadCode,
        Self::NotEnrolled,
        Self::Forbidden,
        Self::BadToken,
    ];

    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::BadFormat => "BADFORMAT",
            Self::NotJoined => "NOTJOINED",
            Self::Joined => "JOINED",
            Self::Early => "EARLY",
            Self::Already => "ALREADY",
            Self::Denied => "DENIED",
            Self::TooLong => "TOOLONG",
            Self::Encoding => "ENCODING",
            Self::Storage => "STORAGE",
            Self::Full => "FULL",
            Self::Timeout => "TIMEOUT",
            Self::Rate => "RATE",
            Self::TooManyErrors => "TOOMANYERRORS",
            Self::ShuttingDown => "SHUTTINGDOWN",
            Self::Closed => "CLOSED",
            Self::BadCode => "BADCODE",
            Self::NotEnrolled => "NOTENROLLED",
            Self::Forbidden => "FORBIDDEN",
            Self::BadToken => "BADTOKEN",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = ParseLineError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(ParseLineError::Word("error code"))
    }
}

/// The greeting: `HELLO <server>/<version> <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The server's name, `attendanced`.
    pub server: Token,
    /// The server's version.
    pub version: Token,
    /// A human-readable welcome, mentioning `HELP`.
    pub text: Text,
}

/// `OK` replies, one per command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK JOIN <course> <div> <name> <roll> <required_seconds> [resume_token]`.
    Join {
        /// Who joined.
        id: StudentId,
        /// Seconds the student must still stay before `PRESENT` is accepted.
        required_seconds: u64,
        /// The seat's resume token (`RESUME <token>` after a drop); absent where the server
        /// gives none (a seat already marked).
        resume: Option<Token>,
    },
    /// `OK RESUME <course> <div> <name> <roll> <required_seconds> <resume_token>`: the seat is
    /// back, with the time already served.
    Resume {
        /// Whose seat.
        id: StudentId,
        /// Seconds the student must still stay.
        required_seconds: u64,
        /// The seat's resume token (unchanged).
        resume: Token,
    },
    /// `OK PRESENT <marked_at> [<status> <minutes_late>]`: the record is on disk. The status is
    /// written only when it is not `Present`.
    Present {
        /// When the mark was recorded (the original time if it was already marked).
        marked_at: Timestamp,
        /// The record's status.
        status: AttendanceStatus,
        /// Whole minutes late (0 unless `Late`).
        minutes_late: u32,
    },
    /// `OK HISTORY …`: the student's timeline for today.
    History(History),
    /// `OK TIME <now>`.
    Time(Timestamp),
    /// `OK ELAPSED <seconds>` since the connection was accepted.
    Elapsed(u64),
    /// `OK CLIENTS <n>` connections open now.
    Clients(u64),
    /// `OK PONG [token]`.
    Pong(Option<Token>),
    /// `OK SAY`: the message was passed to the class.
    Say,
    /// `OK HELP <command list>`.
    Help(Text),
    /// `OK BYE`: the server closes the connection next.
    Bye,
    /// `OK SHUTDOWN`: the server is shutting down.
    Shutdown,
    /// `OK STATUS <key=value …>`: the daemon's live numbers (admin socket).
    Status(Status),
    /// `OK CLASSES <total> <offset> [course/division=members …]` (admin socket).
    Classes(Page<ClassCount>),
    /// `OK WHO <total> <offset> [course/division/name/roll/seconds_left/transport …]` (admin socket).
    Who(Page<WhoEntry>),
    /// `OK FLAGS <total> <offset> [kind/course/division/addrs/rolls …]` (admin socket).
    Flags(Page<FlagEntry>),
}

/// `EVENT` lines, pushed without being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `EVENT JOIN <course> <div> <name> [addr]`: someone joined your class. The address is
    /// there only where the server is set to announce addresses (`announce_addresses`).
    Join {
        /// The class.
        class: ClassKey,
        /// The student's name.
        name: Field,
        /// The student's IP address, if the server announces addresses.
        addr: Option<IpAddr>,
    },
    /// `EVENT PRESENT <name>`: someone in your class was marked present.
    Present {
        /// The student's name.
        name: Field,
    },
    /// `EVENT SAY <name> <text>`: chat from someone in your class.
    Say {
        /// Who said it.
        name: Field,
        /// What was said.
        text: Text,
    },
    /// `EVENT LEAVE <name>`: someone left your class (quit or dropped).
    Leave {
        /// The student's name.
        name: Field,
    },
    /// `EVENT JOINS|PRESENTS|LEAVES <course> <div> <count>`: in a burst (a whole hall joining
    /// at once), further individual announcements of one kind are summed into one line per
    /// window instead of one line per student.
    Burst {
        /// What happened `count` times.
        kind: BurstKind,
        /// The class.
        class: ClassKey,
        /// How many students (names omitted).
        count: u64,
    },
    /// `EVENT HEARTBEAT <now>`: sent to every client periodically.
    Heartbeat(Timestamp),
    /// `EVENT LAGGED <n>`: you fell behind and `n` announcements were skipped.
    Lagged(u64),
    /// `EVENT SHUTDOWN`: the server is shutting down and closes the connection next.
    Shutdown,
    /// `EVENT REPLACED`: a `RESUME` with this seat's token took it over on another connection;
    /// this one is closed next.
    Replaced,
    /// `EVENT ENDED <status> <minutes_attended>`: the session closed and this seat's record
    /// was written with that status.
    Ended {
        /// The record's status.
        status: AttendanceStatus,
        /// Whole minutes served.
        minutes_attended: u32,
    },
    /// `EVENT DEGRADED <dependency> <text>` (admin socket only): a service the node depends on
    /// is unreachable and the node works on alone, as `text` says.
    Degraded {
        /// The service (`redis`).
        dependency: Token,
        /// What it means for the node.
        text: Text,
    },
    /// `EVENT RECOVERED <dependency> <text>` (admin socket only): the service is back.
    Recovered {
        /// The service (`redis`).
        dependency: Token,
        /// What was done on its return.
        text: Text,
    },
}

/// The kind of announcement a [`Event::Burst`] sums up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BurstKind {
    /// Students joined (`EVENT JOINS`).
    Joins,
    /// Students were marked present (`EVENT PRESENTS`).
    Presents,
    /// Students left (`EVENT LEAVES`).
    Leaves,
}

impl BurstKind {
    /// Every kind.
    pub const ALL: [BurstKind; 3] = [Self::Joins, Self::Presents, Self::Leaves];

    /// The event word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joins => "JOINS",
            Self::Presents => "PRESENTS",
            Self::Leaves => "LEAVES",
        }
    }
}

/// Any line the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    /// The greeting.
    Hello(Hello),
    /// A reply to the client's last command.
    Ok(Reply),
    /// A refusal.
    Err {
        /// The stable code.
        code: ErrorCode,
        /// The explanation (for `EARLY`, it starts with the seconds remaining).
        message: Text,
    },
    /// A pushed event.
    Event(Event),
}

impl ServerLine {
    /// An `ERR` line with a message written by the program (sanitised, never fails).
    pub fn err(code: ErrorCode, message: impl fmt::Display) -> Self {
        Self::Err {
            code,
            message: Text::lossy(&message.to_string()),
        }
    }

    /// `ERR EARLY <seconds> …`.
    pub fn early(seconds_remaining: u64) -> Self {
        Self::err(
            ErrorCode::Early,
            format_args!("{seconds_remaining} seconds of class remain before PRESENT is accepted"),
        )
    }

    /// For `ERR EARLY`, the seconds remaining.
    pub fn early_remaining(&self) -> Option<u64> {
        match self {
            Self::Err {
                code: ErrorCode::Early,
                message,
            } => message.as_str().split(' ').next()?.parse().ok(),
            _ => None,
        }
    }

    /// The line with its `\n`, ready to be written (or shared among many receivers).
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        Bytes::from(out)
    }

    /// Appends the line with its `\n` to `out`: for a connection gathering several replies into
    /// one write, without a buffer of the line's own.
    ///
    /// The replies of every mark (`OK JOIN`, `OK PRESENT`) are written directly, the rest
    /// through `Display`; both give the same text (a test checks).
    pub fn encode_into<B: BufMut>(&self, out: &mut B) {
        match self {
            Self::Ok(Reply::Join {
                id,
                required_seconds,
                resume,
            }) => {
                out.put_slice(b"OK JOIN ");
                for part in [
                    id.course().as_str(),
                    id.division().as_str(),
                    id.name.as_str(),
                    id.roll.as_str(),
                ] {
                    out.put_slice(part.as_bytes());
                    out.put_u8(b' ');
                }
                out.put_slice(itoa::Buffer::new().format(*required_seconds).as_bytes());
                if let Some(token) = resume {
                    out.put_u8(b' ');
                    out.put_slice(token.as_str().as_bytes());
                }
            }
            Self::Ok(Reply::Present {
                marked_at,
                status: AttendanceStatus::Present,
                ..
            }) => {
                out.put_slice(b"OK PRESENT ");
                marked_at.write_wire(out);
            }
            other => {
                use std::io::Write as _;
                // Writing into memory cannot fail; a Display impl that fails leaves what it wrote.
                let _ = write!((&mut *out).writer(), "{other}");
            }
        }
        out.put_u8(b'\n');
    }
}

impl fmt::Display for ServerLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hello(h) => write!(f, "HELLO {}/{} {}", h.server, h.version, h.text),
            Self::Ok(r) => write!(f, "OK {r}"),
            Self::Err { code, message } => write!(f, "ERR {code} {message}"),
            Self::Event(e) => write!(f, "EVENT {e}"),
        }
    }
}

impl Reply {
    /// `OK PRESENT <marked_at>`: a `Present` record.
    pub fn present(marked_at: Timestamp) -> Self {
        Self::Present {
            marked_at,
            status: AttendanceStatus::Present,
            minutes_late: 0,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Join {
                id,
                required_seconds,
                resume,
            } => {
                write!(
                    f,
                    "JOIN {} {} {} {} {required_seconds}",
                    id.course(),
                    id.division(),
                    id.name,
                    id.roll
                )?;
                match resume {
                    Some(token) => write!(f, " {token}"),
                    None => Ok(()),
                }
            }
            Self::Resume {
                id,
                required_seconds,
                resume,
            } => write!(
                f,
                "RESUME {} {} {} {} {required_seconds} {resume}",
                id.course(),
                id.division(),
                id.name,
                id.roll
            ),
            Self::Present {
                marked_at,
                status: AttendanceStatus::Present,
                ..
            } => write!(f, "PRESENT {marked_at}"),
            Self::Present {
                marked_at,
                status,
                minutes_late,
            } => write!(f, "PRESENT {marked_at} {status} {minutes_late}"),
            Self::History(h) => write!(f, "HISTORY {h}"),
            Self::Time(t) => write!(f, "TIME {t}"),
            Self::Elapsed(s) => write!(f, "ELAPSED {s}"),
            Self::Clients(n) => write!(f, "CLIENTS {n}"),
            Self::Pong(None) => f.write_str("PONG"),
            Self::Pong(Some(t)) => write!(f, "PONG {t}"),
            Self::Say => f.write_str("SAY"),
            Self::Help(text) => write!(f, "HELP {text}"),
            Self::Bye => f.write_str("BYE"),
            Self::Shutdown => f.write_str("SHUTDOWN"),
            Self::Status(status) => write!(f, "STATUS {status}"),
            Self::Classes(page) => write!(f, "CLASSES {page}"),
            Self::Who(page) => write!(f, "WHO {page}"),
            Self::Flags(page) => write!(f, "FLAGS {page}"),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Join {
                class,
                name,
                addr: Some(addr),
            } => write!(f, "JOIN {class} {name} {addr}"),
            Self::Join {
                class,
                name,
                addr: None,
            } => write!(f, "JOIN {class} {name}"),
            Self::Present { name } => write!(f, "PRESENT {name}"),
            Self::Say { name, text } => write!(f, "SAY {name} {text}"),
            Self::Leave { name } => write!(f, "LEAVE {name}"),
            Self::Burst { kind, class, count } => write!(f, "{} {class} {count}", kind.as_str()),
            Self::Heartbeat(t) => write!(f, "HEARTBEAT {t}"),
            Self::Lagged(n) => write!(f, "LAGGED {n}"),
            Self::Shutdown => f.write_str("SHUTDOWN"),
            Self::Replaced => f.write_str("REPLACED"),
            Self::Ended {
                status,
                minutes_attended,
            } => write!(f, "ENDED {status} {minutes_attended}"),
            Self::Degraded { dependency, text } => write!(f, "DEGRADED {dependency} {text}"),
            Self::Recovered { dependency, text } => write!(f, "RECOVERED {dependency} {text}"),
        }
    }
}

/// Why a server line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseLineError {
    /// A word was missing or not what that position allows.
    #[error("bad or missing {0}")]
    Word(&'static str),
    /// Words were left over at the end.
    #[error("unexpected trailing words")]
    Trailing,
}

/// Splits off words one at a time, keeping the rest of the line available.
struct Words<'a>(&'a str);

impl<'a> Words<'a> {
    fn next(&mut self, what: &'static str) -> Result<&'a str, ParseLineError> {
        let s = self.0;
        if s.is_empty() {
            return Err(ParseLineError::Word(what));
        }
        let (word, rest) = s.split_once(' ').unwrap_or((s, ""));
        self.0 = rest;
        if word.is_empty() {
            return Err(ParseLineError::Word(what));
        }
        Ok(word)
    }

    fn parse<T: FromStr>(&mut self, what: &'static str) -> Result<T, ParseLineError> {
        self.next(what)?
            .parse()
            .map_err(|_| ParseLineError::Word(what))
    }

    fn field(&mut self, kind: FieldKind) -> Result<Field, ParseLineError> {
        Field::new(kind, self.next(kind.label())?).map_err(|_| ParseLineError::Word(kind.label()))
    }

    fn student(&mut self) -> Result<StudentId, ParseLineError> {
        let course = self.field(FieldKind::Course)?;
        let division = self.field(FieldKind::Division)?;
        let name = self.field(FieldKind::Name)?;
        let roll = self.field(FieldKind::Roll)?;
        Ok(StudentId {
            class: ClassKey { course, division },
            name,
            roll,
        })
    }

    fn text(&mut self, what: &'static str) -> Result<Text, ParseLineError> {
        let rest = std::mem::take(&mut self.0);
        if rest.trim() != rest {
            return Err(ParseLineError::Word(what));
        }
        Text::new(rest).map_err(|_| ParseLineError::Word(what))
    }

    /// The next word parsed, or `None` at the end of the line.
    fn optional<T: FromStr>(&mut self, what: &'static str) -> Result<Option<T>, ParseLineError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        self.parse(what).map(Some)
    }

    fn optional_token(&mut self, what: &'static str) -> Result<Option<Token>, ParseLineError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        self.parse(what).map(Some)
    }

    /// The rest of the line, parsed as a whole.
    fn rest<T: FromStr<Err = ParseLineError>>(&mut self) -> Result<T, ParseLineError> {
        std::mem::take(&mut self.0).parse()
    }

    fn end<T>(self, value: T) -> Result<T, ParseLineError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ParseLineError::Trailing)
        }
    }
}

impl FromStr for ServerLine {
    type Err = ParseLineError;
    fn from_str(s: &str) -> Result<Self, ParseLineError> {
        let mut w = Words(s);
        match w.next("tag")? {
            "HELLO" => {
                let (server, version) = w
                    .next("server/version")?
                    .split_once('/')
                    .ok_or(ParseLineError::Word("server/version"))?;
                let server = server.parse().map_err(|_| ParseLineError::Word("server"))?;
                let version = version
                    .parse()
                    .map_err(|_| ParseLineError::Word("version"))?;
                let text = w.text("greeting")?;
                Ok(Self::Hello(Hello {
                    server,
                    version,
                    text,
                }))
            }
            "OK" => parse_reply(w).map(Self::Ok),
            "ERR" => {
                let code = w.parse("error code")?;
                let message = w.text("message")?;
                Ok(Self::Err { code, message })
            }
            "EVENT" => parse_event(w).map(Self::Event),
            _ => Err(ParseLineError::Word("tag")),
        }
    }
}

fn parse_reply(mut w: Words<'_>) -> Result<Reply, ParseLineError> {
    let reply = match w.next("command")? {
        "JOIN" => {
            let id = w.student()?;
            let required_seconds = w.parse("required seconds")?;
            Reply::Join {
                id,
                required_seconds,
                resume: w.optional_token("resume token")?,
            }
        }
        "RESUME" => Reply::Resume {
            id: w.student()?,
            required_seconds: w.parse("required seconds")?,
            resume: w.parse("resume token")?,
        },
        "PRESENT" => {
            let marked_at = w.parse("timestamp")?;
            match w.optional::<AttendanceStatus>("status")? {
                None => Reply::Present {
                    marked_at,
                    status: AttendanceStatus::Present,
                    minutes_late: 0,
                },
                Some(status) => Reply::Present {
                    marked_at,
                    status,
                    minutes_late: w.parse("minutes late")?,
                },
            }
        }
        "HISTORY" => Reply::History(w.rest()?),
        "TIME" => Reply::Time(w.parse("timestamp")?),
        "ELAPSED" => Reply::Elapsed(w.parse("seconds")?),
        "CLIENTS" => Reply::Clients(w.parse("count")?),
        "PONG" => Reply::Pong(w.optional_token("token")?),
        "SAY" => Reply::Say,
        "HELP" => Reply::Help(w.text("help text")?),
        "BYE" => Reply::Bye,
        "SHUTDOWN" => Reply::Shutdown,
        "STATUS" => Reply::Status(w.rest()?),
        "CLASSES" => Reply::Classes(w.rest()?),
        "WHO" => Reply::Who(w.rest()?),
        "FLAGS" => Reply::Flags(w.rest()?),
        _ => return Err(ParseLineError::Word("command")),
    };
    w.end(reply)
}

fn parse_event(mut w: Words<'_>) -> Result<Event, ParseLineError> {
    let event = match w.next("event kind")? {
        "JOIN" => Event::Join {
            class: ClassKey {
                course: w.field(FieldKind::Course)?,
                division: w.field(FieldKind::Division)?,
            },
            name: w.field(FieldKind::Name)?,
            addr: w.optional("address")?,
        },
        "PRESENT" => Event::Present {
            name: w.field(FieldKind::Name)?,
        },
        "SAY" => Event::Say {
            name: w.field(FieldKind::Name)?,
            text: w.text("text")?,
        },
        "LEAVE" => Event::Leave {
            name: w.field(FieldKind::Name)?,
        },
        word @ ("JOINS" | "PRESENTS" | "LEAVES") => Event::Burst {
            kind: BurstKind::ALL
                .into_iter()
                .find(|k| k.as_str() == word)
                .ok_or(ParseLineError::Word("event kind"))?,
            class: ClassKey {
                course: w.field(FieldKind::Course)?,
                division: w.field(FieldKind::Division)?,
            },
            count: w.parse("count")?,
        },
        "HEARTBEAT" => Event::Heartbeat(w.parse("timestamp")?),
        "LAGGED" => Event::Lagged(w.parse("count")?),
        "SHUTDOWN" => Event::Shutdown,
        "REPLACED" => Event::Replaced,
        "ENDED" => Event::Ended {
            status: w.parse("status")?,
            minutes_attended: w.parse("minutes attended")?,
        },
        "DEGRADED" => Event::Degraded {
            dependency: w.parse("dependency")?,
            text: w.text("text")?,
        },
        "RECOVERED" => Event::Recovered {
            dependency: w.parse("dependency")?,
            text: w.text("text")?,
        },
        _ => return Err(ParseLineError::Word("event kind")),
    };
    w.end(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_display_for_the_direct_paths_and_the_rest() {
        let id: StudentId = "Compilers_Div2_José_18BCP043".parse().expect("valid id");
        let lines = [
            ServerLine::Ok(Reply::Join {
                id: id.clone(),
                required_seconds: 0,
                resume: None,
            }),
            ServerLine::Ok(Reply::Join {
                id,
                required_seconds: u64::MAX,
                resume: Some(Token::new("0123abcd").expect("token")),
            }),
            ServerLine::Ok(Reply::Present {
                marked_at: "2026-11-23T15:17:54.123Z".parse().expect("valid"),
                status: AttendanceStatus::Present,
                minutes_late: 0,
            }),
            ServerLine::Ok(Reply::Present {
                marked_at: "2026-11-23T15:17:54.123Z".parse().expect("valid"),
                status: AttendanceStatus::Late,
                minutes_late: 12,
            }),
            ServerLine::Ok(Reply::Pong(None)),
            ServerLine::early(42),
            ServerLine::Event(Event::Lagged(7)),
            ServerLine::Event(Event::Degraded {
                dependency: Token::new("redis").expect("valid"),
                text: Text::lossy("down: connection refused"),
            }),
        ];
        let mut gathered = bytes::BytesMut::from(&b"HELLO x\n"[..]);
        let mut expected = String::from("HELLO x\n");
        for line in lines {
            assert_eq!(&line.encode()[..], format!("{line}\n").as_bytes());
            // Appended after what is already there, as a connection gathers its replies.
            line.encode_into(&mut gathered);
            expected.push_str(&format!("{line}\n"));
        }
        assert_eq!(&gathered[..], expected.as_bytes());
    }

    #[test]
    fn early_carries_the_seconds_remaining() {
        let line = ServerLine::early(42);
        assert!(line.to_string().starts_with("ERR EARLY 42 "));
        let parsed: ServerLine = line.to_string().parse().expect("round trip");
        assert_eq!(parsed.early_remaining(), Some(42));
    }

    #[test]
    fn parses_documented_examples() {
        let lines = [
            "HELLO attendanced/0.1.0 welcome; send HELP for commands",
            "OK JOIN ComputerNetworks Div1 JayPatel 18BCP043 3600",
            "OK JOIN ComputerNetworks Div1 JayPatel 18BCP043 3600 9f86d081884c7d659a2feaa0c55ad015",
            "OK RESUME ComputerNetworks Div1 JayPatel 18BCP043 1200 9f86d081884c7d659a2feaa0c55ad015",
            "OK PRESENT 2026-11-23T15:17:54.123Z",
            "OK PRESENT 2026-11-23T14:17:54.123Z Late 12",
            "OK HISTORY status=pending served=600 required=2700 late=0 join@2026-10-25T08:00:03.000Z drop@2026-10-25T08:10:03.000Z",
            "OK HISTORY status=Late served=2700 required=2700 late=12 join@2026-10-25T08:22:00.000Z mark@2026-10-25T09:07:00.000Z",
            "ERR CLOSED 2026-12-07T08:45:00+01:00 ComputerNetworks Div1 is closed",
            "ERR BADTOKEN no seat to resume with that token",
            "EVENT REPLACED",
            "EVENT ENDED Left 23",
            "OK PONG",
            "OK PONG abc",
            "ERR DENIED bad admin token",
            "EVENT JOIN ComputerNetworks Div1 JayPatel 127.0.0.1",
            "EVENT JOIN ComputerNetworks Div1 JayPatel ::1",
            "EVENT SAY JayPatel hello  there",
            "EVENT HEARTBEAT 2026-11-23T15:17:54.000Z",
            "OK STATUS connections=3 joined=3 classes=2 marks_today=1 writer_queue=0 last_fsync_ms=0.412 uptime=3605 version=0.1.0",
            "OK STATUS connections=0 joined=0 classes=0 marks_today=0 writer_queue=0 last_fsync_ms=- uptime=0 version=0.1.0",
            "OK CLASSES 2 0 ComputerNetworks/Div1=2 ComputerNetworks/Div2=1",
            "OK CLASSES 0 0",
            "OK WHO 2 0 ComputerNetworks/Div1/Ann/1/0/tcp ComputerNetworks/Div1/JayPatel/18BCP043/2417/ws",
        ];
        for line in lines {
            let parsed: ServerLine = line.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(parsed.to_string(), line);
        }
        assert_eq!(
            "OK TIME".parse::<ServerLine>(),
            Err(ParseLineError::Word("timestamp"))
        );
        assert_eq!(
            "OK BYE now".parse::<ServerLine>(),
            Err(ParseLineError::Trailing)
        );
    }
}
