//! The Redis keys and channels of a cluster, all under one prefix.

use attendance_protocol::{ClassKey, Field};

/// Counter of node starts (`INCR`): each start's incarnation.
pub(crate) const INCARNATION: &str = "attendanced:incarnation";
/// Set of the owners that announced themselves.
pub(crate) const NODES: &str = "attendanced:nodes";
/// Prefix of an owner's key: its open connections, expiring with its lease.
pub(crate) const NODE: &str = "attendanced:node:";
/// Prefix of a seat's key.
pub(crate) const SEAT: &str = "attendanced:seat:";

/// The key of the seat of `roll` in `class`.
pub(crate) fn seat(class: &ClassKey, roll: &Field) -> String {
    format!("{SEAT}{}:{}:{roll}", class.course, class.division)
}

/// The key of a resume token (its hex; `0` for none, a key never written).
pub(crate) fn token(token: &str) -> String {
    format!("attendanced:token:{token}")
}

/// The channel of `class`'s announcements.
pub(crate) fn class_channel(class: &ClassKey) -> String {
    format!("attendanced:class:{}:{}", class.course, class.division)
}

/// The channel of an owner's probe.
pub(crate) fn probe_channel(owner: &str) -> String {
    format!("attendanced:probe:{owner}")
}
