//! The attendanced wire protocol: a bounded line codec and the typed messages that travel over it.
//!
//! The protocol is plain UTF-8 text, one message per line. Clients send [`Command`]s; the server
//! sends [`ServerLine`]s, each starting with one of four tags: `HELLO`, `OK`, `ERR` or `EVENT`.
//! Every message type implements [`std::str::FromStr`] and [`std::fmt::Display`], and the two
//! round-trip. The crate does no I/O of its own beyond the [`LineCodec`]; see `docs/PROTOCOL.md`
//! for the contract in prose.

mod admin;
mod codec;
mod command;
mod history;
mod id;
mod server_line;
mod status;
mod text;
mod timestamp;

pub use admin::{
    ClassCount, FlagEntry, FlagKind, MAX_PAGE_BYTES, Page, Status, Transport, WhoEntry,
};
pub use codec::{DEFAULT_MAX_LINE, LineCodec, LineError};
pub use command::{ADMIN_HELP_TEXT, Command, CommandError, HELP_TEXT};
pub use history::{History, HistoryEntry, HistoryKind, MAX_HISTORY};
pub use id::{
    ClassKey, Field, FieldError, FieldKind, IdError, MAX_COURSE_CHARS, MAX_DIVISION_CHARS,
    MAX_NAME_CHARS, MAX_ROLL_CHARS, StudentId,
};
pub use server_line::{BurstKind, ErrorCode, Event, Hello, ParseLineError, Reply, ServerLine};
pub use status::{AttendanceStatus, StatusError};
pub use text::{MAX_TOKEN_CHARS, Text, TextError, Token};
pub use timestamp::Timestamp;

/// The TCP port the original project listened on, kept as the default.
pub const DEFAULT_PORT: u16 = 65001;
