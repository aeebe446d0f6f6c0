//! attendanced's external stores, beside the CSV the engine writes itself.
//!
//! [`pg`]: PostgreSQL as the system of record (`store = "postgres://…"`). Marks go to one table
//! with a unique key on (class, day, roll), in one transaction per batch of the writer (group
//! commit), acknowledged only after the commit with `synchronous_commit = on`; several nodes
//! writing the same database never double a mark, and every one of them answers a repeated
//! mark with the time of the first.

pub mod pg;

pub use pg::{PgError, PgSink, SCHEMA_VERSION, check, connect, export_rows, redact};
