//! `attend`, the student's client for `attendanced`: join a class, wait out its length, get
//! marked present.
//!
//! The session logic ([`session`]) is kept apart from how it is shown ([`render`]) and from the
//! countdown arithmetic ([`countdown`]), so each can be tested alone; [`tls`] gives it the same
//! stream over plain TCP or TLS. The binary is only argument parsing ([`cli`]), a stdin thread
//! and [`session::run`]. `attend admin …` ([`admin`]) talks to the daemon's admin socket
//! instead.

#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod countdown;
pub mod render;
pub mod session;
pub mod tls;

pub use render::{Mode, Output};
pub use session::{ClientError, IdSource, Marked, Options, PROMPT, Session, exit, run};
pub use tls::Trust;
