//! Where a session's lines go: a buffer the transport writes out in one piece once the session
//! has answered what it was given.

use attendance_protocol::ServerLine;
use bytes::{Bytes, BytesMut};

/// Room an outbox starts with: the usual replies (`OK JOIN …`, `OK PRESENT …`) fit without
/// the buffer growing.
const ROOM: usize = 256;

/// Lines for the peer, in order, each with its `\n`.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: BytesMut,
}

impl Outbox {
    /// An empty outbox (allocates on the first line).
    pub fn new() -> Self {
        Self::default()
    }

    /// An outbox that starts with `head` (the greeting, before the replies to lines a client
    /// sent without waiting for it).
    pub fn starting_with(head: &[u8]) -> Self {
        let mut buf = BytesMut::with_capacity(head.len() + ROOM);
        buf.extend_from_slice(head);
        Self { buf }
    }

    /// Adds `line`, encoded straight into the buffer.
    pub fn push(&mut self, line: &ServerLine) {
        if self.buf.capacity() == 0 {
            self.buf.reserve(ROOM);
        }
        line.encode_into(&mut self.buf);
    }

    /// Adds bytes that are already lines (pre-encoded announcements).
    pub fn push_bytes(&mut self, lines: &[u8]) {
        self.buf.extend_from_slice(lines);
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Everything waiting, leaving the outbox empty; `None` if nothing is.
    pub fn take(&mut self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf).freeze())
    }

    /// The waiting lines as text, one item each (for tests and logs).
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.buf)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
