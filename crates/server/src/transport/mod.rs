//! Transports: each owns its socket, frames lines and carries them to and from a
//! [`crate::session::Session`]. They decide nothing about what a line means.
//!
//! - [`tcp`]: the student port (plain or TLS): accept loop, connection limits, refusals;
//! - [`admin_socket`]: the local administrator's Unix socket;
//! - [`conn`]: the connection driver every byte-stream transport shares (one task per
//!   connection, the only writer to its socket);
//! - [`lines`]: line framing without an idle read buffer;
//! - [`proxy`]: the PROXY protocol header a load balancer sends first (the student port and
//!   the web port read it).
//!
//! The web server's `/ws` (in `crates/web`) is one more transport: it turns frames into
//! [`lines::Line`]s and runs the same [`conn::serve`].

pub(crate) mod admin_socket;
pub mod conn;
pub mod lines;
pub mod proxy;
pub(crate) mod tcp;
pub(crate) mod tls;
