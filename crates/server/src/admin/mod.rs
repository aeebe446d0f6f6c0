//! Administration: the admin token (for `SHUTDOWN` over the network) and the answers to the
//! admin socket's reports.

pub(crate) mod report;
mod token;

pub use token::{AdminError, AdminToken, TokenSource};
