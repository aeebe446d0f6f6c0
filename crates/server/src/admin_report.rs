//! The answers to the admin socket's `STATUS`, `CLASSES` and `WHO`: live numbers and lists read
//! from the shared state (each list sorted, then cut into a page of at most
//! [`MAX_PAGE_BYTES`]).

use std::time::Duration;

use attendance_protocol::{
    ClassCount, ClassKey, MAX_PAGE_BYTES, Page, Status, Timestamp, Token, WhoEntry,
};

use crate::server::Shared;

/// `OK STATUS …`.
pub(crate) fn status(shared: &Shared) -> Status {
    let classes = shared.classes.snapshot();
    let joined: usize = classes.iter().map(|(_, n)| n).sum();
    let count = |n: usize| n as u64;
    Status {
        connections: count(shared.open_connections()),
        joined: count(joined),
        classes: count(classes.len()),
        marks_today: count(shared.store.marks_today(Timestamp::now())),
        writer_queue: count(shared.store.queued()),
        last_fsync_micros: shared
            .metrics
            .last_fsync()
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        uptime_secs: shared.metrics.uptime().as_secs(),
        version: Token::new(env!("CARGO_PKG_VERSION"))
            .unwrap_or_else(|_| Token::new("unknown").expect("a valid token")),
    }
}

/// `OK CLASSES …`: every class with members, sorted, from `offset`.
pub(crate) fn classes(shared: &Shared, offset: u64) -> Page<ClassCount> {
    let mut all: Vec<ClassCount> = shared
        .classes
        .snapshot()
        .into_iter()
        .map(|(class, members)| ClassCount {
            class,
            members: members as u64,
        })
        .collect();
    all.sort_by(|a, b| a.class.cmp(&b.class));
    Page::of(all, offset, MAX_PAGE_BYTES)
}

/// `OK WHO …`: every student checked in (to `class`, if given) with the seconds left of the
/// class length, sorted by class, name and roll, from `offset`.
pub(crate) fn who(shared: &Shared, class: Option<&ClassKey>, offset: u64) -> Page<WhoEntry> {
    let class_length = shared.config.load().class_length;
    let now = Timestamp::now();
    let all = shared
        .classes
        .members(class)
        .into_iter()
        .map(|m| {
            let marked = shared
                .store
                .marked_at(&m.id.class, &m.id.roll, now)
                .is_some();
            let seconds_left = if marked {
                0
            } else {
                ceil_secs(class_length.saturating_sub(m.since.elapsed()))
            };
            WhoEntry {
                id: m.id,
                seconds_left,
            }
        })
        .collect();
    Page::of(all, offset, MAX_PAGE_BYTES)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
