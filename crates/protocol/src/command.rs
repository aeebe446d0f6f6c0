//! Client → server commands: parsing a line into a [`Command`] and writing one back.

use std::fmt;
use std::str::FromStr;

use crate::id::{ClassKey, Field, FieldKind, IdError, StudentId};
use crate::server_line::ErrorCode;
use crate::text::{Text, TextError, Token};

/// One line from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `JOIN COURSE_DIV_NAME_ROLL [CODE]` (or the bare identifier): check into a class; the
    /// code is the class's rotating code where the class has one.
    Join(StudentId, Option<Token>),
    /// `RESUME <token>`: take back the seat a dropped (or still open) connection held, with the
    /// resume token its `OK JOIN` carried.
    Resume(Token),
    /// `HISTORY`: the student's own timeline for today in the class this connection is seated
    /// in (or last resumed).
    History,
    /// `COURSE_DIV_NAME_ROLL_Present`, the original client's last line: join if not yet joined,
    /// then mark present. The original C client's wire shape, `ID_ID_Present` in one line (its
    /// two sends, the first without a line ending), parses to the same command.
    JoinPresent(StudentId),
    /// `PRESENT`: ask to be marked present once the class length has been served.
    Present,
    /// `TIME`: the server's clock.
    Time,
    /// `ELAPSED`: whole seconds since this connection was accepted.
    Elapsed,
    /// `CLIENTS`: the number of open connections.
    Clients,
    /// `PING [token]`: liveness check; the token is echoed.
    Ping(Option<Token>),
    /// `SAY <text>`: chat to the others in the class.
    Say(Text),
    /// `HELP`: the list of commands.
    Help,
    /// `QUIT`: leave.
    Quit,
    /// `SHUTDOWN <token>`: stop the server (administrators only). A bare `shutdown`, as the
    /// original project accepted, parses with no token and is refused.
    Shutdown(Option<Token>),
    /// `STATUS`: the daemon's live numbers (admin socket only).
    Status,
    /// `CLASSES [offset]`: every class with its number of students, one page from `offset`
    /// (admin socket only).
    Classes {
        /// Position in the list of the first class to show.
        offset: u64,
    },
    /// `WHO [course division] [offset]`: the students checked in, in every class or in one,
    /// with the seconds each has left; one page from `offset` (admin socket only).
    Who {
        /// Only this class, if given.
        class: Option<ClassKey>,
        /// Position in the list of the first student to show.
        offset: u64,
    },
    /// `FLAGS [course division] [offset]`: the check-ins flagged for the teacher (several
    /// rolls from one address, one roll from two), oldest first; one page from `offset`
    /// (admin socket only).
    Flags {
        /// Only this class, if given.
        class: Option<ClassKey>,
        /// Position in the list of the first flag to show.
        offset: u64,
    },
}

/// The one-line summary sent in reply to `HELP`.
pub const HELP_TEXT: &str = "JOIN COURSE_DIV_NAME_ROLL [CODE] | RESUME token | PRESENT | HISTORY | TIME | ELAPSED | CLIENTS | PING [token] | SAY text | HELP | QUIT | SHUTDOWN token";

/// The reply to `HELP` on the admin socket.
pub const ADMIN_HELP_TEXT: &str = "STATUS | CLASSES [offset] | WHO [course division] [offset] | FLAGS [course division] [offset] | SHUTDOWN | TIME | ELAPSED | CLIENTS | PING [token] | HELP | QUIT";

/// Why a line is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The line was empty or white space only; servers ignore it.
    #[error("empty line")]
    Empty,
    /// The first word is not a command.
    #[error("unknown command {0:?}; send HELP for the list")]
    Unknown(String),
    /// The command's arguments are wrong; the message says what was expected.
    #[error("{0}")]
    BadFormat(String),
}

impl CommandError {
    /// The `ERR` code a server answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Empty | Self::BadFormat(_) => ErrorCode::BadFormat,
            Self::Unknown(_) => ErrorCode::Unknown,
        }
    }

    fn usage(usage: &str, why: impl fmt::Display) -> Self {
        Self::BadFormat(format!("usage: {usage} ({why})"))
    }
}

fn id_error(e: IdError) -> CommandError {
    CommandError::BadFormat(e.to_string())
}

impl Command {
    /// The command word, upper case, as written on the wire.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Join(..) => "JOIN",
            Self::Resume(_) => "RESUME",
            Self::History => "HISTORY",
            Self::JoinPresent(_) => "PRESENT",
            Self::Present => "PRESENT",
            Self::Time => "TIME",
            Self::Elapsed => "ELAPSED",
            Self::Clients => "CLIENTS",
            Self::Ping(_) => "PING",
            Self::Say(_) => "SAY",
            Self::Help => "HELP",
            Self::Quit => "QUIT",
            Self::Shutdown(_) => "SHUTDOWN",
            Self::Status => "STATUS",
            Self::Classes { .. } => "CLASSES",
            Self::Who { .. } => "WHO",
            Self::Flags { .. } => "FLAGS",
        }
    }

    /// True for the commands only the admin socket answers (`STATUS`, `CLASSES`, `WHO`,
    /// `FLAGS`); a server refuses them elsewhere with `ERR DENIED`.
    pub fn is_admin_only(&self) -> bool {
        matches!(
            self,
            Self::Status | Self::Classes { .. } | Self::Who { .. } | Self::Flags { .. }
        )
    }

    /// Parses one line (without its line ending).
    ///
    /// # Errors
    /// [`CommandError`], whose [`CommandError::code`] is the `ERR` code to answer with.
    pub fn parse(line: &str) -> Result<Self, CommandError> {
        let (word, rest) = word_and_rest(line);
        if word.is_empty() {
            return Err(CommandError::Empty);
        }
        let no_args = |cmd: Command| {
            if rest.is_empty() {
                Ok(cmd)
            } else {
                Err(CommandError::BadFormat(format!(
                    "{} takes no arguments",
                    cmd.word()
                )))
            }
        };
        // Upper-cased on the stack: every command word is short (a longer word is unknown, or
        // a bare identifier, below).
        let mut upper = [0u8; 8];
        let key: &[u8] = match upper.get_mut(..word.len()) {
            Some(buf) => {
                buf.copy_from_slice(word.as_bytes());
                buf.make_ascii_uppercase();
                buf
            }
            None => b"",
        };
        match key {
            b"JOIN" => {
                const USAGE: &str = "JOIN COURSE_DIV_NAME_ROLL [CODE]";
                let (id, code) = match rest.split_once(char::is_whitespace) {
                    Some((id, code)) => (id, Some(code.trim())),
                    None => (rest, None),
                };
                if id.is_empty() || code.is_some_and(|c| c.is_empty() || has_whitespace(c)) {
                    return Err(CommandError::usage(
                        USAGE,
                        "one identifier expected, then the class code if the class has one",
                    ));
                }
                let code = code
                    .map(Token::new)
                    .transpose()
                    .map_err(|e| CommandError::usage(USAGE, format_args!("code {e}")))?;
                let id = id.parse().map_err(id_error)?;
                Ok(Self::Join(id, code))
            }
            b"PRESENT" => no_args(Self::Present),
            b"HISTORY" => no_args(Self::History),
            b"RESUME" => match optional_token(rest, "RESUME token")? {
                Some(token) => Ok(Self::Resume(token)),
                None => Err(CommandError::usage(
                    "RESUME token",
                    "the resume token from OK JOIN expected",
                )),
            },
            b"TIME" => no_args(Self::Time),
            b"ELAPSED" => no_args(Self::Elapsed),
            b"CLIENTS" => no_args(Self::Clients),
            b"HELP" => no_args(Self::Help),
            b"QUIT" => no_args(Self::Quit),
            b"PING" => optional_token(rest, "PING [token]").map(Self::Ping),
            b"SHUTDOWN" => optional_token(rest, "SHUTDOWN token").map(Self::Shutdown),
            b"STATUS" => no_args(Self::Status),
            b"CLASSES" => parse_classes(rest),
            b"WHO" => parse_who(rest, "WHO [course division] [offset]")
                .map(|(class, offset)| Self::Who { class, offset }),
            b"FLAGS" => parse_who(rest, "FLAGS [course division] [offset]")
                .map(|(class, offset)| Self::Flags { class, offset }),
            b"SAY" => Text::new(rest)
                .map(Self::Say)
                .map_err(|e| CommandError::usage("SAY text", format_args!("text {e}"))),
            _ if rest.is_empty() && word.contains('_') => parse_bare_id(word),
            _ => Err(CommandError::Unknown(Text::lossy(word).to_string())),
        }
    }
}

fn optional_token(rest: &str, usage: &str) -> Result<Option<Token>, CommandError> {
    if rest.is_empty() {
        return Ok(None);
    }
    Token::new(rest)
        .map(Some)
        .map_err(|e: TextError| CommandError::usage(usage, format_args!("token {e}")))
}

fn offset(word: &str, usage: &str) -> Result<u64, CommandError> {
    word.parse()
        .map_err(|_| CommandError::usage(usage, "the offset is a whole number"))
}

/// `CLASSES [offset]`.
fn parse_classes(rest: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "CLASSES [offset]";
    let words: Vec<&str> = rest.split_whitespace().collect();
    let offset = match words.as_slice() {
        [] => 0,
        [n] => offset(n, USAGE)?,
        _ => return Err(CommandError::usage(USAGE, "too many words")),
    };
    Ok(Command::Classes { offset })
}

/// `WHO`'s (and `FLAGS`') `[course division] [offset]`: one word is an offset, two a class,
/// three both.
fn parse_who(rest: &str, usage: &'static str) -> Result<(Option<ClassKey>, u64), CommandError> {
    let class = |course: &str, division: &str| -> Result<Option<ClassKey>, CommandError> {
        let field = |kind, s| Field::new(kind, s).map_err(|e| CommandError::usage(usage, e));
        Ok(Some(ClassKey {
            course: field(FieldKind::Course, course)?,
            division: field(FieldKind::Division, division)?,
        }))
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (class, offset) = match words.as_slice() {
        [] => (None, 0),
        [n] => (None, offset(n, usage)?),
        [course, division] => (class(course, division)?, 0),
        [course, division, n] => (class(course, division)?, offset(n, usage)?),
        _ => return Err(CommandError::usage(usage, "too many words")),
    };
    Ok((class, offset))
}

/// A line's command word and its arguments: the line trimmed, cut at its first whitespace, the
/// rest trimmed; exactly what `str::trim` and `split_once(char::is_whitespace)` give. ASCII
/// lines (nearly all) are cut byte by byte, without decoding characters.
fn word_and_rest(line: &str) -> (&str, &str) {
    if !line.is_ascii() {
        let line = line.trim();
        return match line.split_once(char::is_whitespace) {
            Some((word, rest)) => (word, rest.trim()),
            None => (line, ""),
        };
    }
    // Every index of an ASCII string is a character boundary.
    let line = trim_ascii_space(line);
    match line.bytes().position(is_ascii_space) {
        Some(at) => (
            line.get(..at).unwrap_or_default(),
            trim_ascii_space(line.get(at + 1..).unwrap_or_default()),
        ),
        None => (line, ""),
    }
}

/// The ASCII characters `char::is_whitespace` accepts: tab, line feed, vertical tab, form feed,
/// carriage return and space (`u8::is_ascii_whitespace` leaves out the vertical tab).
fn is_ascii_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r' | b' ')
}

/// `s` without leading and trailing [`is_ascii_space`] bytes.
fn trim_ascii_space(s: &str) -> &str {
    let bytes = s.as_bytes();
    let start = bytes
        .iter()
        .position(|&b| !is_ascii_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| !is_ascii_space(b))
        .map_or(start, |last| last + 1);
    s.get(start..end).unwrap_or_default()
}

/// Whether `s` holds any whitespace (`char::is_whitespace`), byte by byte for ASCII text: this
/// checks every JOIN's identifier.
fn has_whitespace(s: &str) -> bool {
    if s.is_ascii() {
        s.bytes().any(is_ascii_space)
    } else {
        s.contains(char::is_whitespace)
    }
}

/// The original client's lines: `ID`, `ID_` (join) and `ID_Present` (join, then present).
///
/// The original C client (`client.c` of the seed project) sends `ID_` without a line ending,
/// waits, then sends `ID_Present` and a line ending: the server receives the one line
/// `ID_ID_Present`, which is accepted as the same [`Command::JoinPresent`]. Only exactly that
/// shape: the same identifier twice, then `Present`.
fn parse_bare_id(word: &str) -> Result<Command, CommandError> {
    if let Some((id, last)) = word.rsplit_once('_') {
        if last.eq_ignore_ascii_case("present") {
            match id.split('_').count() {
                4 => return id.parse().map(Command::JoinPresent).map_err(id_error),
                8 => {
                    if let Some(first) = seed_client_repeat(id) {
                        return first.parse().map(Command::JoinPresent).map_err(id_error);
                    }
                }
                _ => {}
            }
        }
    }
    word.parse()
        .map(|id| Command::Join(id, None))
        .map_err(id_error)
}

/// `ID` if `s` is `ID_ID` for an `ID` of four parts (the seed client's two sends in one line).
fn seed_client_repeat(s: &str) -> Option<&str> {
    // The cut is the fourth `_`; `_` is ASCII, so the index is a character boundary.
    let cut = s.match_indices('_').nth(3)?.0;
    let (first, second) = (s.get(..cut)?, s.get(cut + 1..)?);
    (first == second).then_some(first)
}

impl FromStr for Command {
    type Err = CommandError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Command {
    /// The canonical line for this command (without line ending).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Join(id, None) => write!(f, "JOIN {id}"),
            Self::Join(id, Some(code)) => write!(f, "JOIN {id} {code}"),
            Self::Resume(token) => write!(f, "RESUME {token}"),
            Self::History => f.write_str("HISTORY"),
            Self::JoinPresent(id) => write!(f, "{id}_Present"),
            Self::Ping(Some(t)) => write!(f, "PING {t}"),
            Self::Shutdown(Some(t)) => write!(f, "SHUTDOWN {t}"),
            Self::Say(text) => write!(f, "SAY {text}"),
            Self::Classes { offset } if *offset > 0 => write!(f, "CLASSES {offset}"),
            Self::Who { class, offset } | Self::Flags { class, offset } => {
                f.write_str(self.word())?;
                if let Some(class) = class {
                    write!(f, " {class}")?;
                }
                if *offset > 0 {
                    write!(f, " {offset}")?;
                }
                Ok(())
            }
            other => f.write_str(other.word()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Command, CommandError> {
        Command::parse(s)
    }

    proptest::proptest! {
        /// The byte-wise cut of ASCII lines gives exactly what the character-wise one gives.
        #[test]
        fn the_word_and_rest_cut_agrees_with_trim_and_split_once(
            s in "[ \t\n\x0B\x0C\ra-zA-Z_\u{a0}\u{2003}\u{e9}]{0,16}"
        ) {
            let trimmed = s.trim();
            let expected = match trimmed.split_once(char::is_whitespace) {
                Some((word, rest)) => (word, rest.trim()),
                None => (trimmed, ""),
            };
            proptest::prop_assert_eq!(word_and_rest(&s), expected);
        }
    }

    #[test]
    fn the_ascii_whitespace_check_agrees_with_char_is_whitespace() {
        for b in 0..=0x7f_u8 {
            let s = format!("a{}b", char::from(b));
            assert_eq!(
                has_whitespace(&s),
                s.contains(char::is_whitespace),
                "{b:#x}"
            );
        }
        assert!(has_whitespace("a\u{2003}b"));
        assert!(!has_whitespace("caf\u{e9}"));
    }

    #[test]
    fn command_words_are_case_insensitive() {
        assert_eq!(parse("time"), Ok(Command::Time));
        assert_eq!(parse("Elapsed"), Ok(Command::Elapsed));
        assert_eq!(
            parse("  PiNg  abc "),
            Ok(Command::Ping(Token::new("abc").ok()))
        );
        // The longest words, and words that only start like one.
        assert_eq!(parse("sHuTdOwN"), Ok(Command::Shutdown(None)));
        assert_eq!(parse("clients"), Ok(Command::Clients));
        assert!(matches!(parse("shutdowns"), Err(CommandError::Unknown(_))));
        assert!(matches!(parse("présent"), Err(CommandError::Unknown(_))));
    }

    #[test]
    fn legacy_lines_of_the_original_client() {
        let id: StudentId = "CN_Div1_Jay_18".parse().expect("valid");
        assert_eq!(parse("CN_Div1_Jay_18"), Ok(Command::Join(id.clone(), None)));
        assert_eq!(
            parse("CN_Div1_Jay_18_"),
            Ok(Command::Join(id.clone(), None))
        );
        assert_eq!(
            parse("CN_Div1_Jay_18_Present"),
            Ok(Command::JoinPresent(id))
        );
        assert_eq!(parse("shutdown"), Ok(Command::Shutdown(None)));
    }

    #[test]
    fn the_seed_clients_two_sends_in_one_line_join_and_mark() {
        // client.c sends `ID_` with no line ending, then `ID_Present\n`.
        let id: StudentId = "CS_A_Ann_1".parse().expect("valid");
        assert_eq!(
            parse("CS_A_Ann_1_CS_A_Ann_1_Present"),
            Ok(Command::JoinPresent(id))
        );
        // Only exactly that shape: two different identifiers are not a check-in.
        assert!(matches!(
            parse("CS_A_Ann_1_CS_A_Bob_2_Present"),
            Err(CommandError::BadFormat(_))
        ));
        assert!(matches!(
            parse("CS_A_Ann_1_CS_A_Ann_1"),
            Err(CommandError::BadFormat(_))
        ));
    }

    #[test]
    fn admin_commands_take_an_optional_class_and_offset() {
        let class = |c: &str, d: &str| ClassKey {
            course: Field::new(FieldKind::Course, c).expect("course"),
            division: Field::new(FieldKind::Division, d).expect("division"),
        };
        assert_eq!(parse("status"), Ok(Command::Status));
        assert_eq!(parse("CLASSES"), Ok(Command::Classes { offset: 0 }));
        assert_eq!(parse("CLASSES 40"), Ok(Command::Classes { offset: 40 }));
        assert_eq!(
            parse("WHO"),
            Ok(Command::Who {
                class: None,
                offset: 0
            })
        );
        assert_eq!(
            parse("WHO 7"),
            Ok(Command::Who {
                class: None,
                offset: 7
            })
        );
        assert_eq!(
            parse("WHO CN D1"),
            Ok(Command::Who {
                class: Some(class("CN", "D1")),
                offset: 0
            })
        );
        assert_eq!(
            parse("who CN D1 12"),
            Ok(Command::Who {
                class: Some(class("CN", "D1")),
                offset: 12
            })
        );
        assert!(matches!(
            parse("STATUS now"),
            Err(CommandError::BadFormat(_))
        ));
        assert!(matches!(
            parse("CLASSES x"),
            Err(CommandError::BadFormat(_))
        ));
        assert!(matches!(
            parse("WHO CN D_1"),
            Err(CommandError::BadFormat(_))
        ));
        assert!(matches!(
            parse("WHO a b 1 2"),
            Err(CommandError::BadFormat(_))
        ));
        assert!(Command::Status.is_admin_only());
        assert!(!Command::Shutdown(None).is_admin_only());
    }

    #[test]
    fn bad_arguments_say_what_was_expected() {
        assert!(
            matches!(parse("JOIN"), Err(CommandError::BadFormat(m)) if m.contains("COURSE_DIV_NAME_ROLL"))
        );
        assert!(
            matches!(parse("JOIN a_b_c"), Err(CommandError::BadFormat(m)) if m.contains("four parts"))
        );
        assert!(matches!(parse("TIME now"), Err(CommandError::BadFormat(_))));
        assert!(matches!(parse("SAY"), Err(CommandError::BadFormat(_))));
        assert!(matches!(parse("PING a b"), Err(CommandError::BadFormat(_))));
        assert!(matches!(parse("a_b"), Err(CommandError::BadFormat(_))));
        assert_eq!(parse("dance"), Err(CommandError::Unknown("dance".into())));
        assert_eq!(parse(""), Err(CommandError::Empty));
        assert_eq!(
            parse("dance").map_err(|e| e.code()),
            Err(ErrorCode::Unknown)
        );
    }
}
