//! The answers to the admin socket's `STATUS`, `CLASSES` and `WHO`, read through the engine's
//! snapshot API (each list sorted, then cut into a page of at most [`MAX_PAGE_BYTES`]).

use attendance_protocol::{
    ClassCount, ClassKey, FlagEntry, FlagKind, MAX_PAGE_BYTES, Page, Status, Token, WhoEntry,
};

use crate::engine::Engine;

/// `OK STATUS …`.
pub(crate) fn status(engine: &Engine) -> Status {
    let snap = engine.snapshot();
    let count = |n: usize| n as u64;
    Status {
        connections: count(snap.connections),
        joined: count(snap.joined()),
        classes: count(snap.classes.len()),
        marks_today: count(snap.marks_today),
        writer_queue: count(snap.store_queue),
        last_fsync_micros: snap
            .last_fsync
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        uptime_secs: snap.uptime.as_secs(),
        version: Token::new(env!("CARGO_PKG_VERSION"))
            .unwrap_or_else(|_| Token::new("unknown").expect("a valid token")),
    }
}

/// `OK CLASSES …`: every class with members, sorted, from `offset`.
pub(crate) fn classes(engine: &Engine, offset: u64) -> Page<ClassCount> {
    let mut all: Vec<ClassCount> = engine
        .snapshot()
        .classes
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
/// class length fixed at their JOIN, sorted by class, name and roll, from `offset`.
pub(crate) fn who(engine: &Engine, class: Option<&ClassKey>, offset: u64) -> Page<WhoEntry> {
    let all = engine
        .seats(class)
        .into_iter()
        .map(|s| WhoEntry {
            id: s.id,
            seconds_left: s.seconds_left,
            transport: s.transport,
        })
        .collect();
    Page::of(all, offset, MAX_PAGE_BYTES)
}

/// `OK FLAGS …`: the flags raised today (of `class`, if given), oldest first, from `offset`.
pub(crate) fn flags(engine: &Engine, class: Option<&ClassKey>, offset: u64) -> Page<FlagEntry> {
    let all = engine
        .flags
        .list(class)
        .into_iter()
        .map(flag_entry)
        .collect();
    Page::of(all, offset, MAX_PAGE_BYTES)
}

/// A raised flag as the protocol lists it.
pub(crate) fn flag_entry(flag: crate::attendance::flags::Flag) -> FlagEntry {
    use crate::attendance::flags::Flag;
    match flag {
        Flag::SharedAddress { class, addr, rolls } => FlagEntry {
            kind: FlagKind::SharedAddress,
            class,
            addrs: vec![addr],
            rolls,
        },
        Flag::TwoAddresses { class, roll, addrs } => FlagEntry {
            kind: FlagKind::TwoAddresses,
            class,
            addrs: addrs.to_vec(),
            rolls: vec![roll],
        },
    }
}
