//! The one way this workspace's tests and bench start a binary under test: spawn it with its
//! arguments and environment in a directory ([`Spawn`]), follow its log on a thread (kept as a
//! short tail for error messages, optionally forwarded to our stderr), wait — bounded — for a
//! line such as `listening on 127.0.0.1:4321` and parse the address ([`Process`]), signal it,
//! wait for its exit with a timeout, and kill it when dropped. [`cargo_binary`] finds (and
//! first builds) a workspace binary for the profile the tests run in.
//!
//! No async runtime: everything here is a thread and a channel, so it works from a plain
//! `#[test]`, a `#[tokio::test]` and the bench's own runtime alike.

mod cargo;
mod error;
mod listening;
mod process;

pub use cargo::cargo_binary;
pub use error::KitError;
pub use listening::{LISTENING, parse_listening};
pub use process::{LogTail, Output, Process, Spawn, TAIL_LINES};
