//! The class hub: who is joined to which class, and each class's broadcast channel.
//!
//! An announcement is formatted once and shared as [`Bytes`]; members receive it through a
//! `tokio::sync::broadcast` channel, so a slow member lags (and is told so) without slowing the
//! sender or anyone else. A std `Mutex` guards the map: it is held only for map updates, never
//! across an `.await`.
//!
//! A class starts with a ring of two slots (`LONE_RING`) and moves to its full ring of
//! `outbound_queue` slots when a second member arrives: a student alone in a class (the first to
//! arrive, a one-student class, a kiosk) then holds a few dozen bytes of ring instead of 10 KiB.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use attendance_protocol::{
    BurstKind, ClassKey, Event, Field, HistoryEntry, HistoryKind, MAX_HISTORY, ServerLine,
    StudentId, Timestamp, Transport,
};
use bytes::{Bytes, BytesMut};
use jiff::civil::Date;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::cluster::Relay;
use crate::engine::ClassEvent;
// Keys are client-chosen strings: a hasher seeded from the OS (crate::hashing).
use crate::hashing::Map;

/// Length of a burst window.
pub const BURST_WINDOW: Duration = Duration::from_millis(250);
/// Individual JOIN, PRESENT or LEAVE announcements a class sends per kind and window; more of
/// that kind in the same window are summed into one `EVENT JOINS|PRESENTS|LEAVES` line at the
/// window's end. Without this, a hall of N students joining at once costs N² lines.
pub const BURST_INDIVIDUAL: u32 = 4;

/// Slots of the ring a class starts with. Nothing is announced to a student alone in a class,
/// so until a second member arrives the ring carries nothing but the move to the full ring of
/// `outbound_queue` slots (see [`Classes::join_at`]); a class of one then costs a few dozen
/// bytes of ring instead of about 40 bytes per slot of the full one.
const LONE_RING: usize = 2;

/// Identifies one connection, so a member can skip its own announcements.
pub use crate::session::ConnId;

/// Most announcement lines gathered into one write.
pub const MAX_GATHER: usize = 64;

/// One line for the members of a class, shared by reference: a class's ring of
/// `outbound_queue` slots then costs 8 bytes per slot for the value instead of 40.
pub type Announcement = Arc<AnnouncementLine>;

/// What an [`Announcement`] carries.
#[derive(Debug)]
pub struct AnnouncementLine {
    /// The connection it came from (which does not receive it).
    pub from: ConnId,
    /// The encoded line, `\n` included.
    pub line: Bytes,
    /// Set only on the hub's own messages, which never reach a client: the class's move to
    /// its full ring, or a seat taken over by a resume.
    control: Option<Box<Control>>,
}

/// A message of the hub to the members' connections.
#[derive(Debug)]
enum Control {
    /// The full ring's receivers, subscribed for each member of the class as it moved to it,
    /// so nothing announced after the move is missed by a member that has not yet read the
    /// move. [`Membership::follow`] (and with it [`Membership::try_recv`]) takes it.
    Moved(Mutex<Vec<(ConnId, broadcast::Receiver<Announcement>)>>),
    /// Connection `0`'s seat was taken over by a `RESUME` on another connection.
    Replaced(ConnId),
    /// The class's session closed: each listed connection writes its line (its
    /// `EVENT ENDED …`) and closes.
    Ended(Map<ConnId, Bytes>),
}

#[derive(Debug)]
struct Class {
    shared: Arc<ClassShared>,
    /// roll → who holds it.
    members: Map<Field, Member>,
}

impl Class {
    /// Records `id` as held by connection `conn` from `since` for `length`, under `token`.
    fn seat(
        &mut self,
        id: &StudentId,
        conn: ConnId,
        clock: SeatClock,
        transport: Transport,
        token: u128,
        day: Option<Date>,
    ) {
        self.members.insert(
            id.roll.clone(),
            Member {
                conn,
                name: id.name.clone(),
                due: clock.since + clock.length,
                length_ms: clock.length_ms(),
                transport,
                token,
                parked_at: None,
                day,
            },
        );
    }

    /// Gives the class its full ring of `capacity` slots: subscribes each member to it and
    /// tells them on the first ring, where they find their new receivers. Called under the
    /// [`Classes`] lock, before anything is sent on the full ring.
    fn move_to_full_ring(&self, capacity: usize) {
        let full = broadcast::channel(capacity).0;
        // A parked seat has no connection to read the move.
        let receivers = self
            .members
            .values()
            .filter(|m| m.parked_at.is_none())
            .map(|m| (m.conn, full.subscribe()))
            .collect();
        if self.shared.full.set(full).is_err() {
            // Moved already: the receivers just made are dropped.
            return;
        }
        let _ = self.shared.lone.send(Arc::new(AnnouncementLine {
            from: 0,
            line: Bytes::new(),
            control: Some(Box::new(Control::Moved(Mutex::new(receivers)))),
        }));
    }
}

/// One student checked in, as the admin `WHO` lists it, with what a resume needs: about 90
/// bytes beside the roll (plus the name's heap bytes), per seat.
#[derive(Debug)]
struct Member {
    /// The connection holding the seat; [`PARKED`] while it waits for a resume.
    conn: ConnId,
    name: Field,
    /// When the seat's class length is served (moved on by a resume after a drop).
    due: Instant,
    /// The class length fixed at the JOIN.
    length_ms: u32,
    transport: Transport,
    /// The seat's resume token.
    token: u128,
    /// When the connection dropped, while the seat waits for a resume.
    parked_at: Option<Instant>,
    /// The local day of the JOIN, under which the time served is kept when the seat is given
    /// back before it was served (`None` in the hub's own tests).
    day: Option<Date>,
}

impl Member {
    fn length(&self) -> Duration {
        Duration::from_millis(u64::from(self.length_ms))
    }

    /// When the seat's served time started counting.
    fn since(&self) -> Instant {
        self.due.checked_sub(self.length()).unwrap_or(self.due)
    }
}

/// The connection id of a parked seat: no connection has it (ids start at 1).
const PARKED: ConnId = 0;

/// Most seats of one day whose served time is kept after their grace ran out (a later JOIN of
/// the same roll continues it). Rolls are client-chosen: bounded, oldest days dropped first.
pub const MAX_SERVED_LEDGER: usize = 100_000;

/// When a seat's served time counts from, and the class length it must serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatClock {
    /// The instant served time counts from (earlier than the JOIN if time was served before).
    pub since: Instant,
    /// The class length fixed at the JOIN.
    pub length: Duration,
}

impl SeatClock {
    fn length_ms(self) -> u32 {
        u32::try_from(self.length.as_millis()).unwrap_or(u32::MAX)
    }
}

/// A student checked in, with the instant the seat's class length is served (for the admin
/// `WHO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The student.
    pub id: StudentId,
    /// When the student will have stayed the class length fixed at the `JOIN`.
    pub due: Instant,
    /// How the student is connected.
    pub transport: Transport,
}

/// What the members of a class share: the channel and the burst accounting.
#[derive(Debug)]
struct ClassShared {
    key: ClassKey,
    /// The ring of [`LONE_RING`] slots the class starts with.
    lone: broadcast::Sender<Announcement>,
    /// The full ring, from the arrival of a second member on (set once, under the
    /// [`Classes`] lock).
    full: OnceLock<broadcast::Sender<Announcement>>,
    burst: Mutex<Burst>,
    /// The hub, through which a [`Membership`] gives its seat back (weak: the hub owns the
    /// class). Here rather than in every membership, which sits in every joined connection.
    hub: std::sync::Weak<HubInner>,
    /// The cluster link every line is relayed to, if this node is one of several.
    relay: RelaySlot,
}

/// The cluster's [`Relay`], if any (a slot so the structs holding it stay `Debug`).
#[derive(Clone, Default)]
struct RelaySlot(Option<Arc<dyn Relay>>);

impl std::fmt::Debug for RelaySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Relay" } else { "NoRelay" })
    }
}

/// Announcements of each [`BurstKind`] in the current window.
#[derive(Debug)]
struct Burst {
    window_start: Instant,
    sent: [u32; 3],
    pending: [u64; 3],
    flush_scheduled: bool,
}

fn kind_index(kind: BurstKind) -> usize {
    match kind {
        BurstKind::Joins => 0,
        BurstKind::Presents => 1,
        BurstKind::Leaves => 2,
    }
}

impl ClassShared {
    fn new(key: ClassKey, hub: std::sync::Weak<HubInner>, relay: RelaySlot) -> Self {
        Self {
            hub,
            relay,
            key,
            lone: broadcast::channel(LONE_RING).0,
            full: OnceLock::new(),
            burst: Mutex::new(Burst {
                window_start: Instant::now(),
                sent: [0; 3],
                pending: [0; 3],
                flush_scheduled: false,
            }),
        }
    }

    /// The ring announcements go to now.
    fn tx(&self) -> &broadcast::Sender<Announcement> {
        self.full.get().unwrap_or(&self.lone)
    }

    /// Whether anyone but `from` would hear an announcement. (A member's own receiver counts
    /// as one.)
    fn has_listeners(&self, from: ConnId) -> bool {
        self.tx().receiver_count() > usize::from(from != 0)
    }

    /// Whether anyone but `from` may hear an announcement: a member here, or (with a cluster)
    /// members on other nodes.
    fn audience(&self, from: ConnId) -> bool {
        self.relay.0.is_some() || self.has_listeners(from)
    }

    fn send(&self, from: ConnId, event: Event) {
        // A member alone in its class (or a class with nobody left) has no one to tell: skip
        // the formatting.
        let local = self.has_listeners(from);
        if !local && self.relay.0.is_none() {
            return;
        }
        let line = ServerLine::Event(event).encode();
        if let Some(relay) = &self.relay.0 {
            relay.sent(&self.key, &line);
        }
        if local {
            let _ = self.tx().send(Arc::new(AnnouncementLine {
                from,
                line,
                control: None,
            }));
        }
    }

    /// Sends `event` now, or counts it into the window's summary if the window already carried
    /// [`BURST_INDIVIDUAL`] of its kind.
    fn send_counted(self: &Arc<Self>, from: ConnId, kind: BurstKind, event: Event) {
        enum Decision {
            SendNow,
            Counted,
            FlushAt(Instant),
        }
        // Nobody to tell, nothing to count: a later member is not told of joins before its own.
        if !self.audience(from) {
            return;
        }
        let i = kind_index(kind);
        let now = Instant::now();
        let decision = {
            let mut b = self.burst.lock().unwrap_or_else(PoisonError::into_inner);
            if !b.flush_scheduled && now.duration_since(b.window_start) >= BURST_WINDOW {
                b.window_start = now;
                b.sent = [0; 3];
            }
            if b.sent[i] < BURST_INDIVIDUAL && b.pending[i] == 0 {
                b.sent[i] += 1;
                Decision::SendNow
            } else {
                b.pending[i] += 1;
                if b.flush_scheduled {
                    Decision::Counted
                } else {
                    b.flush_scheduled = true;
                    Decision::FlushAt(b.window_start + BURST_WINDOW)
                }
            }
        };
        match decision {
            Decision::SendNow => self.send(from, event),
            Decision::Counted => {}
            Decision::FlushAt(at) => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let class = Arc::clone(self);
                    runtime.spawn(async move {
                        tokio::time::sleep_until(at).await;
                        class.flush();
                    });
                }
                // A seat given back outside the runtime (dropped as it shuts down): there is
                // no timer to wait for, so the summary goes now.
                Err(_) => self.flush(),
            },
        }
    }

    /// Sends the window's summaries and opens a new window.
    fn flush(&self) {
        let pending = {
            let mut b = self.burst.lock().unwrap_or_else(PoisonError::into_inner);
            b.flush_scheduled = false;
            b.window_start = Instant::now();
            b.sent = [0; 3];
            std::mem::take(&mut b.pending)
        };
        for kind in BurstKind::ALL {
            let count = pending[kind_index(kind)];
            if count > 0 {
                // From no member (0 is never a connection id): everyone gets the summary.
                self.send(
                    0,
                    Event::Burst {
                        kind,
                        class: self.key.clone(),
                        count,
                    },
                );
            }
        }
    }
}

/// Every class with at least one member.
#[derive(Debug)]
pub struct Classes {
    inner: Arc<HubInner>,
}

/// What the hub and every [`Membership`] share: a membership gives its seat back through it
/// when it is dropped.
#[derive(Debug)]
struct HubInner {
    state: Mutex<State>,
    /// Slots of a class's full ring (`outbound_queue`, live: read when a class gets its ring).
    backlog: AtomicUsize,
    /// The engine's stream of class events.
    events: broadcast::Sender<ClassEvent>,
}

/// Everything under the hub's one lock.
#[derive(Debug, Default)]
struct State {
    classes: Map<ClassKey, Class>,
    /// resume token → the seat it resumes.
    tokens: Map<u128, (ClassKey, Field)>,
    /// Time served by seats whose grace ran out before they were served, on the day they ran
    /// out: a later JOIN of the same roll that day continues it.
    served: Map<(ClassKey, Field), Served>,
    /// The timelines of rolls whose seat dropped today (joins, drops, resumes, expiries), for
    /// `HISTORY`; a roll that never dropped has none (its seat tells its one join), so a hall
    /// that sits still costs nothing here. Bounded like `served`.
    timelines: Map<(ClassKey, Field), (Date, Vec<HistoryEntry>)>,
    /// The cluster link, told of every seat given back and class emptied.
    relay: RelaySlot,
}

/// Time a roll served today in a seat it gave back before it was served.
#[derive(Debug, Clone)]
struct Served {
    day: Date,
    served: Duration,
    name: Field,
    /// When the seat's served time started, on the wall clock.
    since: Timestamp,
}

impl State {
    /// Forgets `roll` of class `key`: its member (if `matches` says it is the one meant) and
    /// its token; and the class, once it is empty. The member, if removed.
    fn remove(
        &mut self,
        key: &ClassKey,
        roll: &Field,
        matches: impl FnOnce(&Member) -> bool,
    ) -> Option<Member> {
        let class = self.classes.get_mut(key)?;
        if !class.members.get(roll).is_some_and(matches) {
            return None;
        }
        let member = class.members.remove(roll)?;
        if class.members.is_empty() {
            self.classes.remove(key);
            if let Some(relay) = &self.relay.0 {
                relay.closed(key);
            }
        }
        self.tokens.remove(&member.token);
        if let Some(relay) = &self.relay.0 {
            relay.released(key, roll, member.token);
        }
        Some(member)
    }

    /// Keeps `served` as the time `id` served on `day` (bounded: see [`MAX_SERVED_LEDGER`]).
    fn keep_served(&mut self, id: &StudentId, day: Date, served: Duration) {
        if self.served.len() >= MAX_SERVED_LEDGER {
            self.served.retain(|_, s| s.day >= day);
        }
        if self.served.len() >= MAX_SERVED_LEDGER {
            warn!(student = %id, "served-time ledger full; a later JOIN starts afresh");
            return;
        }
        let since = wall_at(
            Instant::now()
                .checked_sub(served)
                .unwrap_or_else(Instant::now),
        );
        self.served.insert(
            (id.class.clone(), id.roll.clone()),
            Served {
                day,
                served,
                name: id.name.clone(),
                since,
            },
        );
    }

    /// Adds `kind` at `at` to the timeline of `roll` of `key` on `day`; `joined` (when the seat
    /// was taken) starts a timeline that does not exist yet. Only `day`'s entries are kept, at
    /// most [`MAX_HISTORY`].
    fn note(
        &mut self,
        key: &ClassKey,
        roll: &Field,
        day: Option<Date>,
        joined: Option<Timestamp>,
        kind: HistoryKind,
    ) {
        let at = Timestamp::now();
        let entry = self.timelines.get_mut(&(key.clone(), roll.clone()));
        let entries = match (entry, day) {
            (Some((d, entries)), Some(day)) if *d != day => {
                entries.clear();
                *d = day;
                entries
            }
            (Some((_, entries)), _) => entries,
            (None, Some(day)) => {
                let Some(joined) = joined else {
                    return;
                };
                if self.timelines.len() >= MAX_SERVED_LEDGER {
                    self.timelines.retain(|_, (d, _)| *d >= day);
                }
                if self.timelines.len() >= MAX_SERVED_LEDGER {
                    return;
                }
                let (_, entries) = self
                    .timelines
                    .entry((key.clone(), roll.clone()))
                    .or_insert_with(|| (day, Vec::new()));
                entries.push(HistoryEntry {
                    kind: HistoryKind::Join,
                    at: joined,
                });
                entries
            }
            (None, None) => return,
        };
        if entries.len() >= MAX_HISTORY {
            entries.remove(0);
        }
        entries.push(HistoryEntry { kind, at });
    }

    /// The time `roll` of `key` already served on `day` in a seat whose grace ran out (taken
    /// out: the new seat carries it on).
    fn take_served(&mut self, key: &ClassKey, roll: &Field, day: Option<Date>) -> Duration {
        let Some(day) = day else {
            return Duration::ZERO;
        };
        if self.served.is_empty() {
            return Duration::ZERO;
        }
        match self.served.remove(&(key.clone(), roll.clone())) {
            Some(s) if s.day == day => s.served,
            _ => Duration::ZERO,
        }
    }
}

impl HubInner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the map half-updated: every update is one insert/remove.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, make: impl FnOnce() -> ClassEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(make());
        }
    }

    /// Frees the seat `id` holds on `conn`, telling the class and the observers, and forgets
    /// the class once it is empty. Nothing happens if `conn` no longer holds it (it was parked
    /// for a resume, or taken over by one).
    fn release(&self, id: &StudentId, conn: ConnId, class: &Arc<ClassShared>) {
        {
            let mut state = self.lock();
            let Some(m) = state.remove(&id.class, &id.roll, |m| m.conn == conn) else {
                return;
            };
            // Served time counts on: a JOIN later that day continues it, and a scheduled
            // session's close records it.
            let served = Instant::now().saturating_duration_since(m.since());
            if let Some(day) = m.day.filter(|_| !served.is_zero() && served < m.length()) {
                state.keep_served(id, day, served);
            }
        }
        self.tell_left(id, class, conn);
    }

    /// Tells the class (but `from`) and the observers that `id` left.
    fn tell_left(&self, id: &StudentId, class: &Arc<ClassShared>, from: ConnId) {
        if class.audience(from) {
            class.send_counted(
                from,
                BurstKind::Leaves,
                Event::Leave {
                    name: id.name.clone(),
                },
            );
        }
        self.publish(|| ClassEvent::Left { id: id.clone() });
    }

    /// The grace of the seat parked at `parked_at` ran out: it is given back, the class hears
    /// the student leave, and the time served is kept for a later JOIN on `day`.
    fn expire(&self, id: &StudentId, parked_at: Instant, day: Date, class: &Arc<ClassShared>) {
        let removed = {
            let mut state = self.lock();
            let removed = state.remove(&id.class, &id.roll, |m| m.parked_at == Some(parked_at));
            if let Some(m) = &removed {
                let served = parked_at
                    .saturating_duration_since(m.since())
                    .min(m.length());
                state.keep_served(id, day, served);
            }
            removed
        };
        if removed.is_some() {
            debug!(student = %id, "resume grace ran out");
            self.tell_left(id, class, PARKED);
        }
    }
}

/// The wall-clock time of `instant` (in the past), as the records show it.
fn wall_at(instant: Instant) -> Timestamp {
    let wall = Timestamp::now();
    let ago = Instant::now().saturating_duration_since(instant);
    Timestamp::from_datetime(wall.datetime() - ago)
}

/// `clock` moved back by `served` (time served earlier today), never before the clock's epoch.
fn carried(clock: SeatClock, served: Duration) -> SeatClock {
    SeatClock {
        since: clock.since.checked_sub(served).unwrap_or(clock.since),
        length: clock.length,
    }
}

/// That roll is already checked in on another connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyJoined;

/// A connection's place in a class. Dropping it gives the seat back (and tells the class), so a
/// connection task that ends any way at all — a panic included — frees its roll.
#[derive(Debug)]
pub struct Membership {
    /// The student.
    pub id: StudentId,
    conn: ConnId,
    transport: Transport,
    class: Arc<ClassShared>,
    /// This member's receiver of the class's announcements.
    rx: broadcast::Receiver<Announcement>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        // The hub outlives its members but for the daemon's very end.
        if let Some(hub) = self.class.hub.upgrade() {
            hub.release(&self.id, self.conn, &self.class);
        }
    }
}

impl Membership {
    /// Sends `event` to every other member of the class. JOIN, PRESENT and LEAVE announcements
    /// are subject to burst coalescing (see [`BURST_INDIVIDUAL`]); chat never is.
    pub fn announce(&self, event: Event) {
        let kind = match &event {
            Event::Join { .. } => Some(BurstKind::Joins),
            Event::Present { .. } => Some(BurstKind::Presents),
            Event::Leave { .. } => Some(BurstKind::Leaves),
            _ => None,
        };
        match kind {
            Some(kind) => self.class.send_counted(self.conn, kind, event),
            None => self.class.send(self.conn, event),
        }
    }

    /// [`Membership::announce`] of the event `make` builds, built only if anyone else would
    /// hear it (most marks are made alone in a class or a kiosk's: no clones for nobody).
    pub fn announce_with(&self, make: impl FnOnce() -> Event) {
        if self.class.audience(self.conn) {
            self.announce(make());
        }
    }

    /// The connection holding this membership.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// This member's receiver. What it yields may be the class's move to its full ring: hand
    /// every announcement received through it to [`Membership::follow`] first, and skip the
    /// ones it returns `true` for. (The connection awaits this receiver directly, not through
    /// a `recv` of this type: the extra await would enlarge every idle connection's task.)
    pub fn receiver(&mut self) -> &mut broadcast::Receiver<Announcement> {
        &mut self.rx
    }

    /// The next announcement already waiting for this member (its own included; skip those by
    /// `from`), following the class's move to its full ring on the way.
    ///
    /// # Errors
    /// As [`broadcast::Receiver::try_recv`].
    pub fn try_recv(&mut self) -> Result<Announcement, TryRecvError> {
        let a = self.rx.try_recv()?;
        // Only the move is taken here; the hub's other messages are for the caller to see.
        if matches!(a.control.as_deref(), Some(Control::Moved(_))) {
            self.follow(&a);
            self.rx.try_recv()
        } else {
            Ok(a)
        }
    }

    /// The lines this member is to write for `first`, just received, and the others already
    /// waiting (at most [`MAX_GATHER`]), as one piece: its own announcements and the hub's
    /// messages are left out. With it, how many were skipped if the member lagged meanwhile,
    /// and whether the seat was taken over by a resume on another connection (the lines
    /// gathered before that are still this connection's).
    pub fn gather(&mut self, first: &Announcement) -> Gathered {
        let me = self.conn;
        let mut out = Gathered::default();
        if self.replaced_by(first) {
            out.replaced = true;
            return out;
        }
        if let Some(line) = self.ended_by(first) {
            out.lines = Some(line);
            out.ended = true;
            return out;
        }
        let mut single = (!self.follow(first) && first.from != me).then(|| first.line.clone());
        let mut batch: Option<BytesMut> = None;
        for _ in 0..MAX_GATHER {
            match self.try_recv() {
                Ok(a) if self.replaced_by(&a) => {
                    out.replaced = true;
                    break;
                }
                Ok(a) if self.ended_by(&a).is_some() => {
                    let buf = batch.get_or_insert_with(BytesMut::new);
                    if let Some(line) = single.take() {
                        buf.extend_from_slice(&line);
                    }
                    if let Some(line) = self.ended_by(&a) {
                        buf.extend_from_slice(&line);
                    }
                    out.ended = true;
                    break;
                }
                Ok(a) if a.from == me || a.control.is_some() => {}
                Ok(a) => {
                    let buf = batch.get_or_insert_with(BytesMut::new);
                    if let Some(line) = single.take() {
                        buf.extend_from_slice(&line);
                    }
                    buf.extend_from_slice(&a.line);
                }
                Err(TryRecvError::Lagged(n)) => {
                    out.lagged = Some(n);
                    break;
                }
                Err(_) => break,
            }
        }
        out.lines = batch.map(BytesMut::freeze).or(single);
        out
    }

    /// This member's closing line, if `a` tells that the class's session closed.
    fn ended_by(&self, a: &AnnouncementLine) -> Option<Bytes> {
        match a.control.as_deref() {
            Some(Control::Ended(lines)) => lines.get(&self.conn).cloned(),
            _ => None,
        }
    }

    /// Whether `a` tells this member that its seat was taken over.
    pub fn replaced_by(&self, a: &AnnouncementLine) -> bool {
        matches!(a.control.as_deref(), Some(Control::Replaced(conn)) if *conn == self.conn)
    }

    /// If `a` is the class's move to its full ring, takes this member's receiver of that ring
    /// from it and returns `true`; `true` too for the hub's other messages: `a` is then not
    /// for the client.
    pub fn follow(&mut self, a: &AnnouncementLine) -> bool {
        match a.control.as_deref() {
            None => false,
            Some(Control::Replaced(_) | Control::Ended(_)) => true,
            Some(Control::Moved(receivers)) => {
                let mut receivers = receivers.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(i) = receivers.iter().position(|(conn, _)| *conn == self.conn) {
                    self.rx = receivers.swap_remove(i).1;
                }
                true
            }
        }
    }

    /// Whether this connection still holds the seat: `false` once a resume on another
    /// connection took it over (told through the ring, which a lagging member may have missed:
    /// asked after a lag and before acting for the student).
    pub fn holds(&self) -> bool {
        let Some(hub) = self.class.hub.upgrade() else {
            return false;
        };
        let state = hub.lock();
        state
            .classes
            .get(&self.id.class)
            .and_then(|c| c.members.get(&self.id.roll))
            .is_some_and(|m| m.conn == self.conn)
    }

    /// The connection dropped: the seat waits `grace` for a `RESUME` with its token, without a
    /// word to the class (no `EVENT LEAVE`). Once the grace runs out, the seat is given back,
    /// the class hears the student leave, and the time served is kept for a later JOIN on
    /// `day`. With no runtime to keep the timer, the seat is given back at once.
    pub fn park(self, grace: Duration, day: Date) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(hub) = self.class.hub.upgrade() else {
            return;
        };
        let parked_at = Instant::now();
        {
            let mut state = hub.lock();
            let Some(m) = state
                .classes
                .get_mut(&self.id.class)
                .and_then(|c| c.members.get_mut(&self.id.roll))
                .filter(|m| m.conn == self.conn)
            else {
                return;
            };
            m.conn = PARKED;
            m.parked_at = Some(parked_at);
            let joined = wall_at(m.since());
            state.note(
                &self.id.class,
                &self.id.roll,
                Some(day),
                Some(joined),
                HistoryKind::Drop,
            );
        }
        debug!(student = %self.id, grace = ?grace, "seat parked for a resume");
        let id = self.id.clone();
        let class = Arc::clone(&self.class);
        // Dropped now: no longer the holder, it gives nothing back.
        drop(self);
        runtime.spawn(async move {
            tokio::time::sleep_until(parked_at + grace).await;
            hub.expire(&id, parked_at, day, &class);
        });
    }
}

/// What [`Membership::gather`] found.
#[derive(Debug, Default)]
pub struct Gathered {
    /// The lines to write, as one piece.
    pub lines: Option<Bytes>,
    /// How many announcements were skipped, if the member lagged.
    pub lagged: Option<u64>,
    /// The seat was taken over by a resume on another connection.
    pub replaced: bool,
    /// The class's session closed: the lines end with this member's `EVENT ENDED`; the
    /// connection closes after writing them.
    pub ended: bool,
}

/// The seat a `RESUME` gave back.
#[derive(Debug)]
pub struct Resumed {
    /// The place in the class, on the resuming connection.
    pub membership: Membership,
    /// Served time, continued: counted from before the drop, without the time away.
    pub clock: SeatClock,
    /// Another connection still held the seat (it was told `EVENT REPLACED`).
    pub took_over: bool,
}

/// What a student served in a session that closed ([`Classes::end_class`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The student.
    pub id: StudentId,
    /// Connected time served in the session.
    pub served: Duration,
    /// The class length the seat had to serve (zero for a seat whose grace ran out).
    pub required: Duration,
    /// The connection holding the seat, if one did.
    pub conn: Option<ConnId>,
    /// When the student's first JOIN of the day came.
    pub first_join: Timestamp,
}

/// No seat is held with that resume token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownToken;

/// A seat just taken by a JOIN.
#[derive(Debug)]
pub struct Taken {
    /// The place in the class.
    pub membership: Membership,
    /// The seat's resume token.
    pub token: u128,
    /// From when its served time counts (before the JOIN if the roll served time earlier
    /// today in a seat whose grace ran out).
    pub clock: SeatClock,
}

/// A fresh resume token: 128 bits from the OS's generator (never derived from the roll); 0
/// (no token: the seat cannot be resumed) if the generator fails.
fn new_token() -> u128 {
    let mut bytes = [0u8; 16];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u128::from_le_bytes(bytes),
        Err(_) => 0,
    }
}

/// The token of a seat served from `clock`: none (0) for a seat with nothing to serve (a
/// kiosk with no class length, a roll already marked), which no drop can cost anything, and
/// which spares the kiosk's hot path a system call per JOIN.
pub fn token_for(clock: SeatClock) -> u128 {
    if clock.length.is_zero() {
        0
    } else {
        new_token()
    }
}

/// `token` as a client sends it: 32 lowercase hex digits.
pub fn format_token(token: u128) -> String {
    format!("{token:032x}")
}

/// A token a client sent, if it has the shape of one.
pub fn parse_token(s: &str) -> Option<u128> {
    (s.len() == 32)
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
        .filter(|t| *t != 0)
}

impl Classes {
    /// An empty hub whose classes keep `backlog` announcements for slow members, and that tells
    /// `events` of every seat taken and given back.
    pub fn new(backlog: usize, events: broadcast::Sender<ClassEvent>) -> Self {
        Self {
            inner: Arc::new(HubInner {
                state: Mutex::new(State::default()),
                backlog: AtomicUsize::new(backlog),
                events,
            }),
        }
    }

    /// Changes the ring size of classes that get their full ring from now on (a reload of
    /// `outbound_queue`); classes that have theirs keep it.
    pub fn set_backlog(&self, backlog: usize) {
        self.inner.backlog.store(backlog, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    /// Joins `id` to its class on connection `conn`, subscribing it before anything is
    /// announced, so it misses nothing that follows.
    ///
    /// # Errors
    /// [`AlreadyJoined`] if the roll is held by another connection.
    pub fn join(&self, id: &StudentId, conn: ConnId) -> Result<Membership, AlreadyJoined> {
        let clock = SeatClock {
            since: Instant::now(),
            length: Duration::ZERO,
        };
        self.join_at(id, conn, clock, Transport::Tcp, None)
            .map(|t| t.membership)
    }

    /// [`Classes::join`] of a seat served from `clock.since` for `clock.length`; on `day`, time
    /// the roll served earlier that day in a seat whose grace ran out is counted in (the
    /// [`Taken::clock`] then starts before `clock.since`).
    ///
    /// # Errors
    /// [`AlreadyJoined`] if the roll is held by another connection, or parked for a resume.
    pub fn join_at(
        &self,
        id: &StudentId,
        conn: ConnId,
        clock: SeatClock,
        transport: Transport,
        day: Option<Date>,
    ) -> Result<Taken, AlreadyJoined> {
        self.join_with(id, conn, clock, transport, day, None)
    }

    /// [`Classes::join_at`] under `token` if given (one the cluster knows the seat by), else a
    /// fresh one.
    ///
    /// # Errors
    /// [`AlreadyJoined`] if the roll is held by another connection, or parked for a resume.
    pub fn join_with(
        &self,
        id: &StudentId,
        conn: ConnId,
        clock: SeatClock,
        transport: Transport,
        day: Option<Date>,
        token: Option<u128>,
    ) -> Result<Taken, AlreadyJoined> {
        let mut state = self.lock();
        if state
            .classes
            .get(&id.class)
            .is_some_and(|c| c.members.contains_key(&id.roll))
        {
            return Err(AlreadyJoined);
        }
        let clock = carried(clock, state.take_served(&id.class, &id.roll, day));
        let token = token.unwrap_or_else(|| token_for(clock));
        if token != 0 {
            state
                .tokens
                .insert(token, (id.class.clone(), id.roll.clone()));
        }
        let relay = state.relay.clone();
        let mut formed = false;
        let class = state.classes.entry(id.class.clone()).or_insert_with(|| {
            formed = true;
            Class {
                shared: Arc::new(ClassShared::new(
                    id.class.clone(),
                    Arc::downgrade(&self.inner),
                    relay.clone(),
                )),
                members: Map::default(),
            }
        });
        if formed {
            if let Some(relay) = &relay.0 {
                relay.opened(&id.class);
            }
        }
        // A second member: from now on there is someone to tell. With a cluster, other nodes'
        // members may be there from the first.
        if (!class.members.is_empty() || relay.0.is_some()) && class.shared.full.get().is_none() {
            class.move_to_full_ring(self.inner.backlog.load(Ordering::Relaxed));
        }
        class.seat(id, conn, clock, transport, token, day);
        let membership = Membership {
            id: id.clone(),
            conn,
            transport,
            rx: class.shared.tx().subscribe(),
            class: Arc::clone(&class.shared),
        };
        Ok(Taken {
            membership,
            token,
            clock,
        })
    }

    /// Hands the connection holding `membership` to another student, `id` (a lab kiosk: the
    /// next student checks in once this one is marked), seated from `clock` as
    /// [`Classes::join_at`] seats. The class hears `EVENT LEAVE` of the old student;
    /// announcing the new one is the caller's. Within one class the member keeps its receiver
    /// and the class is never emptied on the way; into another class it is a join there and a
    /// leave here. The new seat's token and clock.
    ///
    /// # Errors
    /// [`AlreadyJoined`] if `id`'s roll is held by another connection; `membership` is then
    /// unchanged.
    pub fn rejoin(
        &self,
        membership: &mut Membership,
        id: &StudentId,
        clock: SeatClock,
        day: Option<Date>,
    ) -> Result<(u128, SeatClock), AlreadyJoined> {
        self.rejoin_with(membership, id, clock, day, None)
    }

    /// [`Classes::rejoin`] under `token` if given, else a fresh one.
    ///
    /// # Errors
    /// As [`Classes::rejoin`].
    pub fn rejoin_with(
        &self,
        membership: &mut Membership,
        id: &StudentId,
        clock: SeatClock,
        day: Option<Date>,
        token: Option<u128>,
    ) -> Result<(u128, SeatClock), AlreadyJoined> {
        let (conn, transport) = (membership.conn, membership.transport);
        if id.class != membership.id.class {
            let new = self.join_with(id, conn, clock, transport, day, token)?;
            // The old seat is given back as it drops.
            drop(std::mem::replace(membership, new.membership));
            return Ok((new.token, new.clock));
        }
        let (token, clock) = {
            let mut state = self.lock();
            let held_elsewhere = state
                .classes
                .get(&id.class)
                .and_then(|c| c.members.get(&id.roll))
                .is_some_and(|m| m.conn != conn);
            if held_elsewhere {
                return Err(AlreadyJoined);
            }
            let clock = carried(clock, state.take_served(&id.class, &id.roll, day));
            let token = token.unwrap_or_else(|| token_for(clock));
            let State {
                classes,
                tokens,
                relay,
                ..
            } = &mut *state;
            let Some(class) = classes.get_mut(&id.class) else {
                // Unreachable while `membership` lives (a member keeps its class); but if it
                // were so, joining afresh is the right answer.
                drop(state);
                let new = self.join_with(id, conn, clock, transport, day, Some(token))?;
                *membership = new.membership;
                return Ok((new.token, new.clock));
            };
            // Our own entry goes; another connection's (not ours to take) is put back.
            if let Some(old) = class.members.remove(&membership.id.roll) {
                if old.conn == conn {
                    tokens.remove(&old.token);
                    if let Some(relay) = &relay.0 {
                        relay.released(&id.class, &membership.id.roll, old.token);
                    }
                } else {
                    class.members.insert(membership.id.roll.clone(), old);
                }
            }
            if token != 0 {
                tokens.insert(token, (id.class.clone(), id.roll.clone()));
            }
            class.seat(id, conn, clock, transport, token, day);
            (token, clock)
        };
        let old = std::mem::replace(&mut membership.id, id.clone());
        // Our own receiver counts as the one listener `has_listeners` expects from a member.
        membership.announce(Event::Leave {
            name: old.name.clone(),
        });
        self.inner.publish(|| ClassEvent::Left { id: old });
        Ok((token, clock))
    }

    /// `RESUME token` on connection `conn`: the seat the token belongs to, parked after a drop
    /// (its served time continues without the time away) or still held by another connection
    /// (which is told through the ring that it was replaced). The class hears nothing.
    ///
    /// # Errors
    /// [`UnknownToken`] if no seat is held with `token` (never issued, or its grace ran out).
    pub fn resume(
        &self,
        token: u128,
        conn: ConnId,
        transport: Transport,
    ) -> Result<Resumed, UnknownToken> {
        let now = Instant::now();
        let mut state = self.lock();
        let (key, roll) = state.tokens.get(&token).cloned().ok_or(UnknownToken)?;
        let class = state.classes.get_mut(&key).ok_or(UnknownToken)?;
        let member = class
            .members
            .get_mut(&roll)
            .filter(|m| m.token == token)
            .ok_or(UnknownToken)?;
        let took_over = match member.parked_at.take() {
            Some(parked_at) => {
                let served = parked_at.saturating_duration_since(member.since());
                let since = now.checked_sub(served).unwrap_or(now);
                member.due = since + member.length();
                false
            }
            None => {
                let old = member.conn;
                let _ = class.shared.tx().send(Arc::new(AnnouncementLine {
                    from: PARKED,
                    line: Bytes::new(),
                    control: Some(Box::new(Control::Replaced(old))),
                }));
                true
            }
        };
        member.conn = conn;
        member.transport = transport;
        let clock = SeatClock {
            since: member.since(),
            length: member.length(),
        };
        let id = StudentId {
            class: key,
            name: member.name.clone(),
            roll,
        };
        let membership = Membership {
            id,
            conn,
            transport,
            rx: class.shared.tx().subscribe(),
            class: Arc::clone(&class.shared),
        };
        let joined = wall_at(clock.since);
        state.note(
            &membership.id.class,
            &membership.id.roll,
            None,
            Some(joined),
            HistoryKind::Resume,
        );
        Ok(Resumed {
            membership,
            clock,
            took_over,
        })
    }

    /// Closes the session of class `key` on `day`: every seat (held or parked) is given back
    /// without a word to the class, the time served by seats whose grace ran out is taken, and
    /// what each student served is returned, for the records the session's close writes.
    /// [`Classes::tell_ended`] then tells the connections.
    pub fn end_class(&self, key: &ClassKey, day: Date) -> Vec<Ending> {
        let now = Instant::now();
        let mut state = self.lock();
        let mut endings = Vec::new();
        if let Some(class) = state.classes.get(key) {
            for (roll, m) in &class.members {
                let until = m.parked_at.unwrap_or(now);
                endings.push(Ending {
                    id: StudentId {
                        class: key.clone(),
                        name: m.name.clone(),
                        roll: roll.clone(),
                    },
                    served: until.saturating_duration_since(m.since()),
                    required: m.length(),
                    conn: (m.conn != PARKED).then_some(m.conn),
                    first_join: wall_at(m.since()),
                });
            }
        }
        // Class kept (with its ring) until the lines are told; members forgotten now.
        let tokens: Vec<(Field, u128)> = state
            .classes
            .get_mut(key)
            .map(|c| c.members.drain().map(|(roll, m)| (roll, m.token)).collect())
            .unwrap_or_default();
        for (roll, t) in tokens {
            state.tokens.remove(&t);
            if let Some(relay) = &state.relay.0 {
                relay.released(key, &roll, t);
            }
        }
        let gone: Vec<(ClassKey, Field)> = state
            .served
            .iter()
            .filter(|((k, _), s)| k == key && s.day == day)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(s) = state.served.remove(&k) {
                let (class, roll) = k;
                endings.push(Ending {
                    id: StudentId {
                        class,
                        name: s.name,
                        roll,
                    },
                    served: s.served,
                    required: Duration::ZERO,
                    conn: None,
                    first_join: s.since,
                });
            }
        }
        for e in &mut endings {
            let k = (e.id.class.clone(), e.id.roll.clone());
            if let Some((d, entries)) = state.timelines.get(&k) {
                if *d == day {
                    if let Some(first) = entries.iter().find(|x| x.kind == HistoryKind::Join) {
                        e.first_join = first.at;
                    }
                }
            }
        }
        endings
    }

    /// Tells the connections of a closed class their closing lines (`lines`: connection →
    /// encoded line), and forgets the class.
    pub fn tell_ended(&self, key: &ClassKey, lines: Vec<(ConnId, Bytes)>) {
        let lines: Map<ConnId, Bytes> = lines.into_iter().collect();
        let mut state = self.lock();
        let Some(class) = state.classes.get(key) else {
            return;
        };
        if !lines.is_empty() {
            let _ = class.shared.tx().send(Arc::new(AnnouncementLine {
                from: PARKED,
                line: Bytes::new(),
                control: Some(Box::new(Control::Ended(lines))),
            }));
        }
        if class.members.is_empty() {
            state.classes.remove(key);
            if let Some(relay) = &state.relay.0 {
                relay.closed(key);
            }
        }
    }

    /// `id`'s timeline on `day`, if its seat ever dropped that day (else the seat's join is
    /// all there is to tell).
    pub fn timeline(&self, id: &StudentId, day: Date) -> Option<Vec<HistoryEntry>> {
        let state = self.lock();
        let (d, entries) = state.timelines.get(&(id.class.clone(), id.roll.clone()))?;
        (*d == day).then(|| entries.clone())
    }

    /// Until when `id`'s seat waits for a resume, if it is parked.
    pub fn parked_until(&self, id: &StudentId, grace: Duration) -> Option<Instant> {
        let state = self.lock();
        let member = state.classes.get(&id.class)?.members.get(&id.roll)?;
        member.parked_at.map(|at| at + grace)
    }

    /// Removes a member, telling the others, and forgets the class once it is empty: the same
    /// as dropping `membership`.
    pub fn leave(&self, membership: Membership) {
        drop(membership);
    }

    /// Relays every line and seat change to the cluster from now on (set once, before any
    /// member joins).
    pub fn set_relay(&self, relay: Arc<dyn Relay>) {
        self.lock().relay = RelaySlot(Some(relay));
    }

    /// Gives `class`'s members here `line`, which came from another node (nothing if the class
    /// has no member here).
    pub fn deliver(&self, class: &ClassKey, line: Bytes) {
        let shared = {
            let state = self.lock();
            let Some(c) = state.classes.get(class) else {
                return;
            };
            Arc::clone(&c.shared)
        };
        if shared.has_listeners(PARKED) {
            let _ = shared.tx().send(Arc::new(AnnouncementLine {
                from: PARKED,
                line,
                control: None,
            }));
        }
    }

    /// Gives up the seat of `roll` in `class` (if `token` is 0 or the seat's) without a word to
    /// the class: another node holds it now. Its connection, if one holds it, is told
    /// `EVENT REPLACED` and closes. Whether there was such a seat.
    pub fn evict(&self, class: &ClassKey, roll: &Field, token: u128) -> bool {
        let (shared, member) = {
            let mut state = self.lock();
            let Some(shared) = state.classes.get(class).map(|c| Arc::clone(&c.shared)) else {
                return false;
            };
            let Some(member) = state.remove(class, roll, |m| token == 0 || m.token == token) else {
                return false;
            };
            (shared, member)
        };
        if member.conn != PARKED {
            let _ = shared.tx().send(Arc::new(AnnouncementLine {
                from: PARKED,
                line: Bytes::new(),
                control: Some(Box::new(Control::Replaced(member.conn))),
            }));
        }
        debug!(class = %class, roll = %roll, "seat lost to another node");
        true
    }

    /// Every seat held here (only `id`'s, if given), live or parked, as the cluster's lease
    /// renewal sends it (its grace left for the caller: the hub does not know the rules).
    pub fn lease_seats(&self, id: Option<&StudentId>) -> Vec<crate::cluster::LeaseSeat> {
        let now = Instant::now();
        let state = self.lock();
        state
            .classes
            .iter()
            .filter(|(key, _)| id.is_none_or(|id| id.class == **key))
            .flat_map(|(key, c)| {
                c.members
                    .iter()
                    .filter(move |(roll, _)| id.is_none_or(|id| id.roll == **roll))
                    .map(move |(roll, m)| {
                        let until = m.parked_at.unwrap_or(now);
                        crate::cluster::LeaseSeat {
                            id: StudentId {
                                class: key.clone(),
                                name: m.name.clone(),
                                roll: roll.clone(),
                            },
                            token: m.token,
                            served: until.saturating_duration_since(m.since()).min(m.length()),
                            length: m.length(),
                            parked: m.parked_at.is_some(),
                            grace: Duration::ZERO,
                        }
                    })
            })
            .collect()
    }

    /// (class, members) for every class, for status reports.
    pub fn snapshot(&self) -> Vec<(ClassKey, usize)> {
        self.lock()
            .classes
            .iter()
            .map(|(k, c)| (k.clone(), c.members.len()))
            .collect()
    }

    /// Every student checked in (to `class` only, if given), with the instant each seat is
    /// served, sorted by class, name and roll.
    pub fn members(&self, class: Option<&ClassKey>) -> Vec<MemberInfo> {
        let mut list: Vec<MemberInfo> = {
            let state = self.lock();
            let classes: Vec<(&ClassKey, &Class)> = match class {
                Some(key) => state.classes.get_key_value(key).into_iter().collect(),
                None => state.classes.iter().collect(),
            };
            classes
                .into_iter()
                .flat_map(|(key, c)| {
                    c.members.iter().map(|(roll, m)| MemberInfo {
                        id: StudentId {
                            class: key.clone(),
                            name: m.name.clone(),
                            roll: roll.clone(),
                        },
                        due: m.due,
                        transport: m.transport,
                    })
                })
                .collect()
        };
        list.sort_by(|a, b| {
            (&a.id.class, &a.id.name, &a.id.roll).cmp(&(&b.id.class, &b.id.name, &b.id.roll))
        });
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> StudentId {
        s.parse().expect("valid id")
    }

    /// A seat served from `since` for no time at all.
    fn clock(since: Instant) -> SeatClock {
        SeatClock {
            since,
            length: Duration::ZERO,
        }
    }

    /// The next announcement for `m`, waiting, as the connection takes it (a class moves to
    /// its full ring once, so the second message is never a move).
    async fn recv(m: &mut Membership) -> Announcement {
        let a = m.receiver().recv().await.expect("announcement");
        if !m.follow(&a) {
            return a;
        }
        let a = m.receiver().recv().await.expect("announcement");
        assert!(!m.follow(&a), "a second move");
        a
    }

    #[test]
    fn a_roll_is_held_by_one_connection_until_it_leaves() {
        let classes = Classes::new(8, broadcast::channel(16).0);
        let a = classes.join(&id("CN_D1_Ann_1"), 1).expect("first join");
        assert_eq!(
            classes.join(&id("CN_D1_Ann_1"), 2).err(),
            Some(AlreadyJoined)
        );
        assert!(
            classes.join(&id("CN_D2_Ann_1"), 3).is_ok(),
            "other class, same roll"
        );
        classes.leave(a);
        assert!(classes.join(&id("CN_D1_Ann_1"), 2).is_ok());
    }

    #[test]
    fn members_hear_others_but_not_themselves() {
        let classes = Classes::new(8, broadcast::channel(16).0);
        let mut a = classes.join(&id("CN_D1_Ann_1"), 1).expect("join");
        let b = classes.join(&id("CN_D1_Bob_2"), 2).expect("join");
        b.announce(Event::Present {
            name: b.id.name.clone(),
        });
        let got = a.try_recv().expect("announcement");
        assert_eq!(got.from, 2);
        assert_eq!(&got.line[..], b"EVENT PRESENT Bob\n");
        classes.leave(b);
        assert_eq!(&a.try_recv().expect("leave").line[..], b"EVENT LEAVE Bob\n");
        classes.leave(a);
        assert!(classes.snapshot().is_empty());
    }

    #[test]
    fn a_connection_hands_over_to_the_next_student() {
        let classes = Classes::new(8, broadcast::channel(16).0);
        let mut watcher = classes.join(&id("CN_D1_Wat_0"), 9).expect("join");
        let mut kiosk = classes.join(&id("CN_D1_Ann_1"), 1).expect("join");
        let other = classes.join(&id("CN_D2_Cat_3"), 3).expect("join");
        // Within the class: the old student leaves, the class keeps its other member.
        classes
            .rejoin(&mut kiosk, &id("CN_D1_Bob_2"), clock(Instant::now()), None)
            .expect("rejoin");
        assert_eq!(kiosk.id, id("CN_D1_Bob_2"));
        assert_eq!(
            &watcher.try_recv().expect("leave").line[..],
            b"EVENT LEAVE Ann\n"
        );
        // Alone in a class, there is no one to tell: nothing is even formatted.
        let mut lone = classes.join(&id("CN_D4_Eve_5"), 6).expect("join");
        classes
            .rejoin(&mut lone, &id("CN_D4_Fay_6"), clock(Instant::now()), None)
            .expect("rejoin");
        assert!(lone.try_recv().is_err());
        // The roll it left is free again; the one it holds is not.
        // (Held: a membership dropped at once would give the seat back.)
        let _ann_again = classes.join(&id("CN_D1_Ann_1"), 4).expect("free again");
        assert_eq!(
            classes.join(&id("CN_D1_Bob_2"), 5).err(),
            Some(AlreadyJoined)
        );
        // A roll held elsewhere is refused and nothing changes.
        assert_eq!(
            classes.rejoin(&mut kiosk, &id("CN_D2_Cat_3"), clock(Instant::now()), None),
            Err(AlreadyJoined)
        );
        assert_eq!(kiosk.id, id("CN_D1_Bob_2"));
        // Into another class: a leave here and a join there.
        classes
            .rejoin(&mut kiosk, &id("CN_D3_Dan_4"), clock(Instant::now()), None)
            .expect("rejoin");
        assert_eq!(
            &watcher.try_recv().expect("leave").line[..],
            b"EVENT LEAVE Bob\n"
        );
        let rolls: Vec<String> = classes
            .members(None)
            .into_iter()
            .map(|m| m.id.to_string())
            .collect();
        assert_eq!(
            rolls,
            [
                "CN_D1_Ann_1",
                "CN_D1_Wat_0",
                "CN_D2_Cat_3",
                "CN_D3_Dan_4",
                "CN_D4_Fay_6"
            ]
        );
        drop(other);
    }

    #[tokio::test]
    async fn a_class_moves_to_its_full_ring_when_a_second_member_arrives() {
        let classes = Classes::new(256, broadcast::channel(16).0);
        let mut a = classes.join(&id("CN_D1_Ann_1"), 1).expect("join");
        assert!(a.class.full.get().is_none(), "alone: the first ring only");
        let b = classes.join(&id("CN_D1_Bob_2"), 2).expect("join");
        assert!(a.class.full.get().is_some());
        assert!(
            b.class.has_listeners(b.conn),
            "the first member's new receiver counts"
        );
        b.announce(Event::Present {
            name: b.id.name.clone(),
        });
        // The move is followed, never returned; what was said after it is not missed.
        assert_eq!(
            &a.try_recv().expect("line").line[..],
            b"EVENT PRESENT Bob\n"
        );
        assert!(a.try_recv().is_err());
        classes.leave(b);
        assert_eq!(&recv(&mut a).await.line[..], b"EVENT LEAVE Bob\n");

        // The same through `recv`, which waits.
        let mut c = classes.join(&id("CN_D2_Cat_3"), 3).expect("join");
        let d = classes.join(&id("CN_D2_Dan_4"), 4).expect("join");
        d.announce(Event::Present {
            name: d.id.name.clone(),
        });
        assert_eq!(&recv(&mut c).await.line[..], b"EVENT PRESENT Dan\n");

        // A member that leaves before reading the move gives its new receiver back with it.
        let e = classes.join(&id("CN_D3_Eve_5"), 5).expect("join");
        let f = classes.join(&id("CN_D3_Fay_6"), 6).expect("join");
        assert!(f.class.has_listeners(f.conn));
        classes.leave(e);
        assert!(
            !f.class.has_listeners(f.conn),
            "alone again: no one to tell"
        );
        drop((c, d, f));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_member_hears_everyone_who_joins_at_once_after_it() {
        let classes = Arc::new(Classes::new(256, broadcast::channel(16).0));
        let mut first = classes.join(&id("CN_D1_Ann_0"), 1_000).expect("join");
        let mut tasks = tokio::task::JoinSet::new();
        for i in 1..=40u64 {
            let classes = Arc::clone(&classes);
            tasks.spawn(async move {
                let m = classes
                    .join(&id(&format!("CN_D1_S{i}_{i}")), i)
                    .expect("join");
                // Chat is never summed: every line must arrive.
                m.announce(Event::Say {
                    name: m.id.name.clone(),
                    text: attendance_protocol::Text::lossy("hi"),
                });
                m
            });
        }
        let mut members = Vec::new();
        while let Some(m) = tasks.join_next().await {
            members.push(m.expect("task"));
        }
        let mut said = 0;
        for _ in 0..1_000 {
            match first.try_recv() {
                Ok(a) if a.line.starts_with(b"EVENT SAY ") => said += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        assert_eq!(
            said, 40,
            "every line said after the move reached the first member"
        );
        drop(members);
    }

    #[test]
    fn a_reloaded_backlog_sizes_the_rings_of_classes_formed_after_it() {
        let classes = Classes::new(256, broadcast::channel(16).0);
        classes.set_backlog(4);
        let mut a = classes.join(&id("CN_D1_Ann_1"), 1).expect("join");
        let b = classes.join(&id("CN_D1_Bob_2"), 2).expect("join");
        for _ in 0..10 {
            b.announce(Event::Say {
                name: b.id.name.clone(),
                text: attendance_protocol::Text::lossy("hi"),
            });
        }
        // The move to the full ring, then the ring of 4: six of ten were overwritten.
        assert!(matches!(a.try_recv(), Err(TryRecvError::Lagged(6))));
    }

    #[test]
    fn members_are_listed_sorted_with_their_join_instant() {
        let classes = Classes::new(8, broadcast::channel(16).0);
        let t0 = Instant::now();
        let b = classes
            .join_at(&id("CN_D1_Bob_2"), 2, clock(t0), Transport::Ws, None)
            .expect("join")
            .membership;
        let _a = classes.join(&id("CN_D1_Ann_1"), 1).expect("join");
        let _c = classes.join(&id("CN_D2_Cat_3"), 3).expect("join");
        let names = |list: Vec<MemberInfo>| -> Vec<String> {
            list.into_iter().map(|m| m.id.to_string()).collect()
        };
        assert_eq!(
            names(classes.members(None)),
            ["CN_D1_Ann_1", "CN_D1_Bob_2", "CN_D2_Cat_3"]
        );
        let d1 = classes.members(Some(&id("CN_D1_X_0").class));
        assert_eq!(d1.len(), 2);
        assert_eq!(d1[1].due, t0);
        assert_eq!(d1[1].transport, Transport::Ws);
        assert_eq!(d1[0].transport, Transport::Tcp);
        assert!(classes.members(Some(&id("XX_D1_X_0").class)).is_empty());
        classes.leave(b);
        assert_eq!(names(classes.members(None)).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_joins_is_summed_after_the_first_few() {
        let classes = Classes::new(64, broadcast::channel(16).0);
        let mut watcher = classes.join(&id("CN_D1_Wat_0"), 100).expect("join");
        let mut members = Vec::new();
        for i in 1..=10 {
            let m = classes
                .join(&id(&format!("CN_D1_S{i}_{i}")), i)
                .expect("join");
            m.announce(Event::Join {
                class: m.id.class.clone(),
                name: m.id.name.clone(),
                addr: Some([127, 0, 0, 1].into()),
            });
            members.push(m);
        }
        let mut lines = Vec::new();
        while let Ok(a) = watcher.try_recv() {
            lines.push(String::from_utf8_lossy(&a.line).into_owned());
        }
        assert_eq!(lines.len(), BURST_INDIVIDUAL as usize, "{lines:?}");
        assert!(lines.iter().all(|l| l.starts_with("EVENT JOIN CN D1 S")));
        // At the end of the window, the rest arrive as one summary line.
        let summary = recv(&mut watcher).await;
        assert_eq!(&summary.line[..], b"EVENT JOINS CN D1 6\n");
        assert_eq!(summary.from, 0, "everyone gets the summary");
        // A quiet class announces individually again.
        tokio::time::sleep(BURST_WINDOW).await;
        let m = &members[0];
        m.announce(Event::Present {
            name: m.id.name.clone(),
        });
        assert_eq!(
            &watcher.try_recv().expect("line").line[..],
            b"EVENT PRESENT S1\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closing_a_class_gives_every_seat_back_silently_with_what_it_served() {
        let classes = Classes::new(8, broadcast::channel(16).0);
        let day = Date::constant(2026, 12, 7);
        let hour = |since| SeatClock {
            since,
            length: Duration::from_secs(3600),
        };
        let t0 = Instant::now();
        let mut ann = classes
            .join_at(&id("CN_D1_Ann_1"), 1, hour(t0), Transport::Tcp, Some(day))
            .expect("join")
            .membership;
        let bob = classes
            .join_at(&id("CN_D1_Bob_2"), 2, hour(t0), Transport::Tcp, Some(day))
            .expect("join")
            .membership;
        tokio::time::advance(Duration::from_secs(600)).await;
        // Bob drops and his grace runs out: his ten minutes are kept.
        bob.park(Duration::from_secs(60), day);
        tokio::time::advance(Duration::from_secs(61)).await;
        tokio::task::yield_now().await;
        while ann.try_recv().is_ok() {}
        tokio::time::advance(Duration::from_secs(1200)).await;
        let mut endings = classes.end_class(&id("CN_D1_X_0").class, day);
        endings.sort_by(|a, b| a.id.roll.cmp(&b.id.roll));
        let served: Vec<(String, u64, Option<ConnId>)> = endings
            .iter()
            .map(|e| (e.id.to_string(), e.served.as_secs(), e.conn))
            .collect();
        assert_eq!(
            served,
            [
                ("CN_D1_Ann_1".to_owned(), 1861, Some(1)),
                ("CN_D1_Bob_2".to_owned(), 600, None)
            ]
        );
        assert!(classes.members(None).is_empty());
        classes.tell_ended(
            &id("CN_D1_X_0").class,
            vec![(1, Bytes::from_static(b"EVENT ENDED Left 31\n"))],
        );
        let first = ann.try_recv().expect("the close");
        let g = ann.gather(&first);
        assert!(g.ended);
        assert_eq!(g.lines.as_deref(), Some(&b"EVENT ENDED Left 31\n"[..]));
        // Dropping the membership now says nothing: nobody is left to tell, nothing to free.
        drop(ann);
        assert!(classes.snapshot().is_empty());
    }
}
