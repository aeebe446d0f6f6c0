//! Sinks outside this crate (PostgreSQL, in `attendance-stores`) and the daemon's own sink,
//! [`DaemonSink`]: the CSV file, or such an external sink.
//!
//! The writer is generic over its sink; the engine holds one store type, so the daemon's sink
//! is an enum: the CSV path stays a direct call, an external sink one boxed future per batch
//! (a database round trip costs far more than the box).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::chain::CheckpointReason;
use super::{BatchSink, CsvSink, Held, Mark, Pipeline, StorageError, encode_mark};

/// A sink the writer commits batches to through a trait object: every row is the mark's CSV
/// row without its hash ([`encode_mark`]), so an external sink keeps the very bytes a CSV would
/// hold (and an export can chain them the same way).
pub trait ExternalSink: Send + 'static {
    /// Makes `rows` durable in one transaction; as [`BatchSink::commit`].
    fn commit<'a>(&'a mut self, rows: &'a [Vec<u8>]) -> BoxFuture<'a, Result<Held, StorageError>>;

    /// How long the last commit took, if it committed (for metrics).
    fn last_sync(&self) -> Option<Duration>;

    /// What it is, for logs (`postgres://host:port/db`, without a password).
    fn describe(&self) -> String;

    /// Its state for `/healthz` and the metrics, if it reports one.
    fn health(&self) -> Option<std::sync::Arc<crate::ops::health::Dependency>> {
        None
    }

    /// How to commit several batches at once, if it can ([`BatchSink::pipeline`]).
    fn pipeline(&self) -> Option<Arc<dyn Pipeline<Vec<u8>>>> {
        None
    }
}

/// The daemon's sink: the CSV file (the default) or an external sink.
pub enum DaemonSink {
    /// The attendance CSV.
    Csv(CsvSink),
    /// A database.
    External(Box<dyn ExternalSink>),
}

impl std::fmt::Debug for DaemonSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Csv(c) => f.debug_tuple("Csv").field(&c.path()).finish(),
            Self::External(e) => f.debug_tuple("External").field(&e.describe()).finish(),
        }
    }
}

impl BatchSink for DaemonSink {
    type Row = Vec<u8>;

    fn encode(mark: &Mark) -> Vec<u8> {
        encode_mark(mark)
    }

    async fn commit(&mut self, rows: &[Vec<u8>]) -> Result<Held, StorageError> {
        match self {
            Self::Csv(c) => c.commit(rows).await,
            Self::External(e) => e.commit(rows).await,
        }
    }

    async fn reopen(&mut self) -> Result<(), StorageError> {
        match self {
            Self::Csv(c) => BatchSink::reopen(c).await,
            // Nothing to rotate: the database holds the rows.
            Self::External(_) => Ok(()),
        }
    }

    async fn sync(&mut self) -> Result<(), StorageError> {
        match self {
            Self::Csv(c) => BatchSink::sync(c).await,
            // Every commit was durable when it returned.
            Self::External(_) => Ok(()),
        }
    }

    fn last_sync(&self) -> Option<Duration> {
        match self {
            Self::Csv(c) => BatchSink::last_sync(c),
            Self::External(e) => e.last_sync(),
        }
    }

    fn commit_delay(&self) -> bool {
        match self {
            Self::Csv(c) => c.commit_delay(),
            // Each commit is a round trip and a WAL flush: gather what is about to arrive.
            Self::External(_) => true,
        }
    }

    async fn checkpoint(&mut self, reason: CheckpointReason) -> Result<(), StorageError> {
        match self {
            Self::Csv(c) => BatchSink::checkpoint(c, reason).await,
            Self::External(_) => Ok(()),
        }
    }

    fn head(&self) -> Option<([u8; 32], u64)> {
        match self {
            Self::Csv(c) => BatchSink::head(c),
            Self::External(_) => None,
        }
    }

    fn pipeline(&self) -> Option<Arc<dyn Pipeline<Vec<u8>>>> {
        match self {
            Self::Csv(_) => None,
            Self::External(e) => e.pipeline(),
        }
    }
}
