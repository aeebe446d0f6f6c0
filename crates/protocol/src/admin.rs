//! Administration replies: `OK STATUS`, `OK CLASSES` and `OK WHO`, which only the admin socket
//! answers.
//!
//! Each is one line, like every reply. `STATUS` is a list of `key=value` words; `CLASSES` and
//! `WHO` are pages of compact entries (`course/division=members`,
//! `course/division/name/roll/seconds_left`) — `/` and `=` cannot occur in an identifier, so an
//! entry is one word that splits unambiguously. A page holds as many entries as fit in
//! [`MAX_PAGE_BYTES`]; the client asks for the next page with an offset.

use std::fmt;
use std::str::FromStr;

use crate::id::{ClassKey, Field, FieldKind, StudentId};
use crate::server_line::ParseLineError;
use crate::text::Token;

/// Most bytes of entries in one `OK CLASSES` or `OK WHO` line (the header and the line ending
/// come on top). A page always holds at least one entry when any remain.
pub const MAX_PAGE_BYTES: usize = 16 * 1024;

/// `OK STATUS …`: the daemon's live numbers.
///
/// On the wire: `connections=<n> joined=<n> classes=<n> marks_today=<n> writer_queue=<n>
/// last_fsync_ms=<ms with 3 decimals, or -> uptime=<seconds> version=<version>`. Parsers ignore
/// keys they do not know, so keys may be added later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Student connections open now (joined or not; admin connections are not counted).
    pub connections: u64,
    /// Students checked in to a class now.
    pub joined: u64,
    /// Classes with at least one student checked in.
    pub classes: u64,
    /// Marks on disk for today (the day in the server's `timezone`).
    pub marks_today: u64,
    /// Marks queued for the CSV writer and not yet taken by it.
    pub writer_queue: u64,
    /// How long the last `fdatasync` of the CSV took, in microseconds; `None` if there was none
    /// yet (or `fsync = "never"`). Written as milliseconds with three decimals.
    pub last_fsync_micros: Option<u64>,
    /// Whole seconds since the daemon started.
    pub uptime_secs: u64,
    /// The daemon's version.
    pub version: Token,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connections={} joined={} classes={} marks_today={} writer_queue={} last_fsync_ms=",
            self.connections, self.joined, self.classes, self.marks_today, self.writer_queue
        )?;
        match self.last_fsync_micros {
            Some(us) => write!(f, "{}.{:03}", us / 1000, us % 1000)?,
            None => f.write_str("-")?,
        }
        write!(f, " uptime={} version={}", self.uptime_secs, self.version)
    }
}

/// `<ms>.<3 digits>` → microseconds.
fn parse_millis(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || frac.len() != 3 || !digits(frac) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let frac: u64 = frac.parse().ok()?;
    whole.checked_mul(1000)?.checked_add(frac)
}

impl FromStr for Status {
    type Err = ParseLineError;
    /// Parses the fields after `OK STATUS`: every known key must be present; unknown keys are
    /// skipped.
    fn from_str(s: &str) -> Result<Self, ParseLineError> {
        let mut connections = None;
        let mut joined = None;
        let mut classes = None;
        let mut marks_today = None;
        let mut writer_queue = None;
        let mut last_fsync = None;
        let mut uptime = None;
        let mut version = None;
        for word in s.split(' ') {
            let (key, value) = word
                .split_once('=')
                .ok_or(ParseLineError::Word("key=value"))?;
            let number = |what| value.parse::<u64>().map_err(|_| ParseLineError::Word(what));
            match key {
                "connections" => connections = Some(number("connections")?),
                "joined" => joined = Some(number("joined")?),
                "classes" => classes = Some(number("classes")?),
                "marks_today" => marks_today = Some(number("marks_today")?),
                "writer_queue" => writer_queue = Some(number("writer_queue")?),
                "last_fsync_ms" if value == "-" => last_fsync = Some(None),
                "last_fsync_ms" => {
                    let us = parse_millis(value).ok_or(ParseLineError::Word("last_fsync_ms"))?;
                    last_fsync = Some(Some(us));
                }
                "uptime" => uptime = Some(number("uptime")?),
                "version" => {
                    version = Some(Token::new(value).map_err(|_| ParseLineError::Word("version"))?);
                }
                _ => {}
            }
        }
        Ok(Self {
            connections: connections.ok_or(ParseLineError::Word("connections"))?,
            joined: joined.ok_or(ParseLineError::Word("joined"))?,
            classes: classes.ok_or(ParseLineError::Word("classes"))?,
            marks_today: marks_today.ok_or(ParseLineError::Word("marks_today"))?,
            writer_queue: writer_queue.ok_or(ParseLineError::Word("writer_queue"))?,
            last_fsync_micros: last_fsync.ok_or(ParseLineError::Word("last_fsync_ms"))?,
            uptime_secs: uptime.ok_or(ParseLineError::Word("uptime"))?,
            version: version.ok_or(ParseLineError::Word("version"))?,
        })
    }
}

/// One entry of `OK CLASSES`: `course/division=members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassCount {
    /// The class.
    pub class: ClassKey,
    /// Students checked in to it now.
    pub members: u64,
}

impl fmt::Display for ClassCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}={}",
            self.class.course, self.class.division, self.members
        )
    }
}

fn field(kind: FieldKind, s: &str) -> Result<Field, ParseLineError> {
    Field::new(kind, s).map_err(|_| ParseLineError::Word(kind.label()))
}

impl FromStr for ClassCount {
    type Err = ParseLineError;
    fn from_str(s: &str) -> Result<Self, ParseLineError> {
        let (class, members) = s.split_once('=').ok_or(ParseLineError::Word("class"))?;
        let (course, division) = class.split_once('/').ok_or(ParseLineError::Word("class"))?;
        Ok(Self {
            class: ClassKey {
                course: field(FieldKind::Course, course)?,
                division: field(FieldKind::Division, division)?,
            },
            members: members
                .parse()
                .map_err(|_| ParseLineError::Word("members"))?,
        })
    }
}

/// How a student's connection reaches the daemon, as `WHO` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    /// The line protocol over TCP (plain or TLS).
    #[default]
    Tcp,
    /// The line protocol over the web server's `/ws` WebSocket.
    Ws,
}

impl Transport {
    /// The word `WHO` shows: `tcp` or `ws`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Ws => "ws",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = ParseLineError;
    fn from_str(s: &str) -> Result<Self, ParseLineError> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "ws" => Ok(Self::Ws),
            _ => Err(ParseLineError::Word("transport")),
        }
    }
}

/// One entry of `OK WHO`: `course/division/name/roll/seconds_left/transport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoEntry {
    /// The student checked in.
    pub id: StudentId,
    /// Whole seconds (rounded up) the student must still stay before `PRESENT` is accepted: `0`
    /// once the class length is served, or if the roll is already marked today.
    pub seconds_left: u64,
    /// How the student is connected. A server older than this field sends none; it reads as
    /// [`Transport::Tcp`], the only transport such a server had.
    pub transport: Transport,
}

impl fmt::Display for WhoEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}/{}/{}",
            self.id.course(),
            self.id.division(),
            self.id.name,
            self.id.roll,
            self.seconds_left,
            self.transport
        )
    }
}

impl FromStr for WhoEntry {
    type Err = ParseLineError;
    fn from_str(s: &str) -> Result<Self, ParseLineError> {
        let mut parts = s.split('/');
        let mut next = |what| parts.next().ok_or(ParseLineError::Word(what));
        let course = field(FieldKind::Course, next("course")?)?;
        let division = field(FieldKind::Division, next("division")?)?;
        let name = field(FieldKind::Name, next("name")?)?;
        let roll = field(FieldKind::Roll, next("roll")?)?;
        let seconds_left = next("seconds left")?
            .parse()
            .map_err(|_| ParseLineError::Word("seconds left"))?;
        let transport = parts
            .next()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default();
        if parts.next().is_some() {
            return Err(ParseLineError::Trailing);
        }
        Ok(Self {
            id: StudentId {
                class: ClassKey { course, division },
                name,
                roll,
            },
            seconds_left,
            transport,
        })
    }
}

/// Which kind of [`FlagEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// Several rolls of a class checked in from one address within a short window.
    SharedAddress,
    /// One roll of a class seen from two addresses in a day.
    TwoAddresses,
}

impl FlagKind {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SharedAddress => "shared-address",
            Self::TwoAddresses => "two-addresses",
        }
    }
}

/// One flag for the teacher, as `FLAGS` lists it:
/// `<kind>/<course>/<division>/<addr>[+<addr>…]/<roll>[+<roll>…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagEntry {
    /// What was seen.
    pub kind: FlagKind,
    /// The class.
    pub class: ClassKey,
    /// The address(es) involved.
    pub addrs: Vec<std::net::IpAddr>,
    /// The roll(s) involved.
    pub rolls: Vec<Field>,
}

impl fmt::Display for FlagEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        let rolls: Vec<&str> = self.rolls.iter().map(Field::as_str).collect();
        write!(
            f,
            "{}/{}/{}/{}/{}",
            self.kind.as_str(),
            self.class.course,
            self.class.division,
            addrs.join("+"),
            rolls.join("+")
        )
    }
}

impl FromStr for FlagEntry {
    type Err = ParseLineError;
    fn from_str(s: &str) -> Result<Self, ParseLineError> {
        let parts: Vec<&str> = s.split('/').collect();
        let [kind, course, division, addrs, rolls] = parts.as_slice() else {
            return Err(ParseLineError::Word("flag"));
        };
        let kind = match *kind {
            "shared-address" => FlagKind::SharedAddress,
            "two-addresses" => FlagKind::TwoAddresses,
            _ => return Err(ParseLineError::Word("flag kind")),
        };
        let addrs = addrs
            .split('+')
            .map(|a| a.parse().map_err(|_| ParseLineError::Word("address")))
            .collect::<Result<Vec<_>, _>>()?;
        let rolls = rolls
            .split('+')
            .map(|r| field(FieldKind::Roll, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            kind,
            class: ClassKey {
                course: field(FieldKind::Course, course)?,
                division: field(FieldKind::Division, division)?,
            },
            addrs,
            rolls,
        })
    }
}

/// One page of a list: `<total> <offset> [entry …]`.
///
/// `total` is the length of the whole list now, `offset` the position of the first entry shown.
/// The list is complete when `offset + entries.len() == total`; otherwise ask again with the
/// offset `offset + entries.len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// Entries in the whole list.
    pub total: u64,
    /// Position of the first entry of this page in the whole list.
    pub offset: u64,
    /// The entries of this page.
    pub entries: Vec<T>,
}

impl<T> Page<T> {
    /// The offset of the next page, or `None` if this page reaches the end of the list.
    pub fn next_offset(&self) -> Option<u64> {
        let end = self.offset.saturating_add(self.entries.len() as u64);
        (end < self.total).then_some(end)
    }
}

impl<T: fmt::Display> Page<T> {
    /// The page of `all` that starts at `offset`: as many entries as fit in `max_bytes` (each
    /// counted with its separating space), and always at least one if any remain.
    pub fn of(all: Vec<T>, offset: u64, max_bytes: usize) -> Self {
        let total = all.len() as u64;
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let mut used = 0;
        let mut entries = Vec::new();
        for entry in all.into_iter().skip(skip) {
            let len = entry.to_string().len() + 1;
            if !entries.is_empty() && used + len > max_bytes {
                break;
            }
            used += len;
            entries.push(entry);
        }
        Self {
            total,
            offset,
            entries,
        }
    }
}

impl<T: fmt::Display> fmt::Display for Page<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.total, self.offset)?;
        for entry in &self.entries {
            write!(f, " {entry}")?;
        }
        Ok(())
    }
}

impl<T: FromStr<Err = ParseLineError>> FromStr for Page<T> {
    type Err = ParseLineError;
    /// Parses the fields after `OK CLASSES` or `OK WHO`.
    fn from_str(s: &str) -> Result<Self, ParseLineError> {
        let mut words = s.split(' ');
        let mut number = |what| {
            words
                .next()
                .and_then(|w| w.parse::<u64>().ok())
                .ok_or(ParseLineError::Word(what))
        };
        let total = number("total")?;
        let offset = number("offset")?;
        let entries = words.map(str::parse).collect::<Result<Vec<T>, _>>()?;
        Ok(Self {
            total,
            offset,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_writes_milliseconds_with_three_decimals_and_skips_unknown_keys() {
        let status = Status {
            connections: 3,
            joined: 2,
            classes: 1,
            marks_today: 7,
            writer_queue: 0,
            last_fsync_micros: Some(1_234),
            uptime_secs: 60,
            version: Token::new("0.1.0").expect("token"),
        };
        let line = status.to_string();
        assert_eq!(
            line,
            "connections=3 joined=2 classes=1 marks_today=7 writer_queue=0 last_fsync_ms=1.234 uptime=60 version=0.1.0"
        );
        assert_eq!(line.parse::<Status>(), Ok(status.clone()));
        let newer = format!("{line} future_key=42");
        assert_eq!(newer.parse::<Status>(), Ok(status));
        assert_eq!(parse_millis("0.050"), Some(50));
        assert_eq!(parse_millis("1.5"), None);
        assert_eq!(parse_millis(".500"), None);
    }

    #[test]
    fn a_page_holds_what_fits_and_always_one_entry() {
        let all: Vec<u64> = (0..10).map(|i| 1000 + i).collect();
        // "1000 " is five bytes: two fit in ten.
        let page = Page::of(all.clone(), 0, 10);
        assert_eq!(page.entries, vec![1000, 1001]);
        assert_eq!(page.next_offset(), Some(2));
        let last = Page::of(all.clone(), 9, 10);
        assert_eq!(last.entries, vec![1009]);
        assert_eq!(last.next_offset(), None);
        assert_eq!(Page::of(all.clone(), 0, 1).entries.len(), 1);
        let past = Page::of(all, 50, 10);
        assert!(past.entries.is_empty());
        assert_eq!(past.to_string(), "10 50");
    }

    #[test]
    fn entries_split_at_slashes_and_equals() {
        let who: WhoEntry = "CN/D1/Ann/18BCP043/3540/ws".parse().expect("entry");
        assert_eq!(who.id.to_string(), "CN_D1_Ann_18BCP043");
        assert_eq!(who.seconds_left, 3540);
        assert_eq!(who.transport, Transport::Ws);
        let older: WhoEntry = "CN/D1/Ann/18BCP043/3540".parse().expect("entry");
        assert_eq!(older.transport, Transport::Tcp);
        assert!("CN/D1/Ann/1/5/6".parse::<WhoEntry>().is_err());
        assert!("CN/D1/Ann/1/5/tcp/7".parse::<WhoEntry>().is_err());
        assert!("CN/D1/Ann/1".parse::<WhoEntry>().is_err());
        let class: ClassCount = "CN/D1=30".parse().expect("entry");
        assert_eq!(class.members, 30);
        assert!("CN=30".parse::<ClassCount>().is_err());
    }

    #[test]
    fn a_flags_page_round_trips() {
        let line = "OK FLAGS 2 0 shared-address/CN/D1/10.0.0.5/1+2+3 two-addresses/CN/D1/10.0.0.5+10.0.0.9/7";
        let parsed: crate::ServerLine = line.parse().expect("parses");
        assert_eq!(parsed.to_string(), line);
        let crate::ServerLine::Ok(crate::Reply::Flags(page)) = parsed else {
            panic!("not FLAGS");
        };
        assert_eq!(page.entries[0].kind, FlagKind::SharedAddress);
        assert_eq!(page.entries[1].addrs.len(), 2);
        assert!("nope/CN/D1/10.0.0.5/1".parse::<FlagEntry>().is_err());
        assert!(
            "shared-address/CN/D1/not-an-ip/1"
                .parse::<FlagEntry>()
                .is_err()
        );
        assert_eq!(
            crate::Command::parse("FLAGS CN D1 5"),
            Ok(crate::Command::Flags {
                class: Some(ClassKey {
                    course: Field::new(FieldKind::Course, "CN").expect("course"),
                    division: Field::new(FieldKind::Division, "D1").expect("division"),
                }),
                offset: 5
            })
        );
        assert!(
            crate::Command::parse("FLAGS")
                .expect("parses")
                .is_admin_only()
        );
    }
}
