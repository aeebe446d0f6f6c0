//! attendanced: the network attendance daemon, as a library.
//!
//! [`run`] serves the line protocol of `attendance-protocol` on an already-bound listener until
//! a shutdown signal or an administrator's `SHUTDOWN`. The binary `attendanced` (in `main.rs`)
//! only parses settings, starts logging, binds and calls [`run`], so tests can run the whole
//! server in-process on `127.0.0.1:0`.

pub mod admin;
mod admin_report;
mod admin_socket;
pub mod classes;
pub mod cli;
pub mod config;
mod connection;
mod hashing;
pub mod limits;
mod lines;
pub mod metrics;
mod metrics_http;
mod notify;
mod reload;
mod server;
pub mod store;
mod tls;

pub use config::{Config, ConfigError, FsyncPolicy};
pub use server::{Control, ServerError, run, run_controlled, run_with_log};
