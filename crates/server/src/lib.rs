//! attendanced: the network attendance daemon, as a library.
//!
//! [`run`] serves the line protocol of `attendance-protocol` on an already-bound listener until
//! a shutdown signal or an administrator's `SHUTDOWN`. The binary `attendanced` (crate
//! `crates/daemon`) only parses settings, starts logging, binds and calls [`run_with_frontends`]
//! with the web server (`crates/web`) as a [`Frontend`], so tests can run the whole server
//! in-process on `127.0.0.1:0`.
//!
//! The folders follow the path of a line (see the README's "How it fits together"):
//! - [`transport`]: sockets in, lines out — TCP (plain and TLS) and the admin Unix socket; each
//!   frames lines and carries a [`session`]'s output, and decides nothing;
//! - [`session`]: the state machine that decides what a line means (JOIN, PRESENT, SAY, the
//!   queries, admin commands, the error streak, rate limits, the login timeout);
//! - [`attendance`]: the rules of a seat (how long a student must stay, what is left);
//! - [`hub`]: who sits in which class, and each class's announcements;
//! - [`store`]: marks in, `Recorded::New|Existing` out, group-committed to the CSV;
//! - [`admin`]: the admin token and the admin reports;
//! - [`ops`]: settings, reload, limits, metrics, systemd, logging;
//! - [`engine`]: the state every transport and session shares, and the read API observers use;
//! - [`daemon`]: the composition root that starts and stops it all.

pub mod admin;
pub mod attendance;
pub mod cluster;
pub mod daemon;
pub mod engine;
mod hashing;
pub mod hub;
pub mod ops;
pub mod session;
pub mod store;
pub mod transport;

pub use daemon::{
    Control, Frontend, FrontendContext, ServerError, run, run_controlled, run_with_frontends,
    run_with_log, run_with_services, run_with_store,
};
pub use ops::config::{self, Config, ConfigError, FsyncPolicy};
pub use ops::{cli, limits, metrics};
