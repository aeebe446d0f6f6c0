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

use attendance_protocol::{BurstKind, ClassKey, Event, Field, ServerLine, StudentId, Transport};
use bytes::{Bytes, BytesMut};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::TryRecvError;
use tokio::time::Instant;

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
    /// Set only on the one message a class's first ring carries: the receivers of the full
    /// ring for the members it had then. [`Membership::follow`] (and with it
    /// [`Membership::try_recv`]) takes it; it never reaches a client.
    moved: Option<Box<Moved>>,
}

/// The full ring's receivers, subscribed for each member of the class as it moved to it, so
/// nothing announced after the move is missed by a member that has not yet read the move.
#[derive(Debug)]
struct Moved(Mutex<Vec<(ConnId, broadcast::Receiver<Announcement>)>>);

#[derive(Debug)]
struct Class {
    shared: Arc<ClassShared>,
    /// roll → who holds it.
    members: Map<Field, Member>,
}

impl Class {
    /// Records `id` as held by connection `conn`, due to be served at `due`.
    fn seat(&mut self, id: &StudentId, conn: ConnId, due: Instant, transport: Transport) {
        self.members.insert(
            id.roll.clone(),
            Member {
                conn,
                name: id.name.clone(),
                due,
                transport,
            },
        );
    }

    /// Gives the class its full ring of `capacity` slots: subscribes each member to it and
    /// tells them on the first ring, where they find their new receivers. Called under the
    /// [`Classes`] lock, before anything is sent on the full ring.
    fn move_to_full_ring(&self, capacity: usize) {
        let full = broadcast::channel(capacity).0;
        let receivers = self
            .members
            .values()
            .map(|m| (m.conn, full.subscribe()))
            .collect();
        if self.shared.full.set(full).is_err() {
            // Moved already: the receivers just made are dropped.
            return;
        }
        let _ = self.shared.lone.send(Arc::new(AnnouncementLine {
            from: 0,
            line: Bytes::new(),
            moved: Some(Box::new(Moved(Mutex::new(receivers)))),
        }));
    }
}

/// One student checked in, as the admin `WHO` lists it: 48 bytes beside the roll (plus the
/// name's heap bytes), per joined connection.
#[derive(Debug)]
struct Member {
    conn: ConnId,
    name: Field,
    due: Instant,
    transport: Transport,
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
    fn new(key: ClassKey, hub: std::sync::Weak<HubInner>) -> Self {
        Self {
            hub,
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

    fn send(&self, from: ConnId, event: Event) {
        // A member alone in its class (or a class with nobody left) has no one to tell: skip
        // the formatting.
        if !self.has_listeners(from) {
            return;
        }
        let _ = self.tx().send(Arc::new(AnnouncementLine {
            from,
            line: ServerLine::Event(event).encode(),
            moved: None,
        }));
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
        if !self.has_listeners(from) {
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
    map: Mutex<Map<ClassKey, Class>>,
    /// Slots of a class's full ring (`outbound_queue`, live: read when a class gets its ring).
    backlog: AtomicUsize,
    /// The engine's stream of class events.
    events: broadcast::Sender<ClassEvent>,
}

impl HubInner {
    fn lock(&self) -> MutexGuard<'_, Map<ClassKey, Class>> {
        // A panic elsewhere cannot leave the map half-updated: every update is one insert/remove.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, make: impl FnOnce() -> ClassEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(make());
        }
    }

    /// Frees the seat `id` holds on `conn`, telling the class and the observers, and forgets
    /// the class once it is empty.
    fn release(&self, id: &StudentId, conn: ConnId, class: &Arc<ClassShared>) {
        if class.has_listeners(conn) {
            class.send_counted(
                conn,
                BurstKind::Leaves,
                Event::Leave {
                    name: id.name.clone(),
                },
            );
        }
        {
            let mut map = self.lock();
            if let Some(c) = map.get_mut(&id.class) {
                if c.members.get(&id.roll).map(|m| m.conn) == Some(conn) {
                    c.members.remove(&id.roll);
                }
                if c.members.is_empty() {
                    map.remove(&id.class);
                }
            }
        }
        self.publish(|| ClassEvent::Left { id: id.clone() });
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
        if self.class.has_listeners(self.conn) {
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
        if self.follow(&a) {
            self.rx.try_recv()
        } else {
            Ok(a)
        }
    }

    /// The lines this member is to write for `first`, just received, and the others already
    /// waiting (at most [`MAX_GATHER`]), as one piece: its own announcements and the class's
    /// move to its full ring are left out. With it, how many were skipped if the member lagged
    /// meanwhile.
    pub fn gather(&mut self, first: &Announcement) -> (Option<Bytes>, Option<u64>) {
        let me = self.conn;
        let mut single = (!self.follow(first) && first.from != me).then(|| first.line.clone());
        let mut batch: Option<BytesMut> = None;
        let mut lagged = None;
        for _ in 0..MAX_GATHER {
            match self.try_recv() {
                Ok(a) if a.from == me => {}
                Ok(a) => {
                    let buf = batch.get_or_insert_with(BytesMut::new);
                    if let Some(line) = single.take() {
                        buf.extend_from_slice(&line);
                    }
                    buf.extend_from_slice(&a.line);
                }
                Err(TryRecvError::Lagged(n)) => {
                    lagged = Some(n);
                    break;
                }
                Err(_) => break,
            }
        }
        (batch.map(BytesMut::freeze).or(single), lagged)
    }

    /// If `a` is the class's move to its full ring, takes this member's receiver of that ring
    /// from it and returns `true`: `a` is then not for the client.
    pub fn follow(&mut self, a: &AnnouncementLine) -> bool {
        let Some(moved) = &a.moved else {
            return false;
        };
        let mut receivers = moved.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = receivers.iter().position(|(conn, _)| *conn == self.conn) {
            self.rx = receivers.swap_remove(i).1;
        }
        true
    }
}

impl Classes {
    /// An empty hub whose classes keep `backlog` announcements for slow members, and that tells
    /// `events` of every seat taken and given back.
    pub fn new(backlog: usize, events: broadcast::Sender<ClassEvent>) -> Self {
        Self {
            inner: Arc::new(HubInner {
                map: Mutex::new(Map::default()),
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

    fn lock(&self) -> MutexGuard<'_, Map<ClassKey, Class>> {
        self.inner.lock()
    }

    /// Joins `id` to its class on connection `conn`, subscribing it before anything is
    /// announced, so it misses nothing that follows.
    ///
    /// # Errors
    /// [`AlreadyJoined`] if the roll is held by another connection.
    pub fn join(&self, id: &StudentId, conn: ConnId) -> Result<Membership, AlreadyJoined> {
        self.join_at(id, conn, Instant::now(), Transport::Tcp)
    }

    /// [`Classes::join`], recording `due` as the instant the seat's class length is served
    /// (listed by [`Classes::members`]).
    ///
    /// # Errors
    /// [`AlreadyJoined`] if the roll is held by another connection.
    pub fn join_at(
        &self,
        id: &StudentId,
        conn: ConnId,
        due: Instant,
        transport: Transport,
    ) -> Result<Membership, AlreadyJoined> {
        let mut map = self.lock();
        let class = map.entry(id.class.clone()).or_insert_with(|| Class {
            shared: Arc::new(ClassShared::new(
                id.class.clone(),
                Arc::downgrade(&self.inner),
            )),
            members: Map::default(),
        });
        if class.members.contains_key(&id.roll) {
            return Err(AlreadyJoined);
        }
        // A second member: from now on there is someone to tell.
        if !class.members.is_empty() && class.shared.full.get().is_none() {
            class.move_to_full_ring(self.inner.backlog.load(Ordering::Relaxed));
        }
        class.seat(id, conn, due, transport);
        Ok(Membership {
            id: id.clone(),
            conn,
            transport,
            rx: class.shared.tx().subscribe(),
            class: Arc::clone(&class.shared),
        })
    }

    /// Hands the connection holding `membership` to another student, `id` (a lab kiosk: the
    /// next student checks in once this one is marked). The class hears `EVENT LEAVE` of the
    /// old student; announcing the new one is the caller's. Within one class the member keeps
    /// its receiver and the class is never emptied on the way; into another class it is a
    /// join there and a leave here.
    ///
    /// # Errors
    /// [`AlreadyJoined`] if `id`'s roll is held by another connection; `membership` is then
    /// unchanged.
    pub fn rejoin(
        &self,
        membership: &mut Membership,
        id: &StudentId,
        due: Instant,
    ) -> Result<(), AlreadyJoined> {
        let (conn, transport) = (membership.conn, membership.transport);
        if id.class != membership.id.class {
            let new = self.join_at(id, conn, due, transport)?;
            // The old seat is given back as it drops.
            drop(std::mem::replace(membership, new));
            return Ok(());
        }
        {
            let mut map = self.lock();
            let Some(class) = map.get_mut(&id.class) else {
                // Unreachable while `membership` lives (a member keeps its class); but if it
                // were so, joining afresh is the right answer.
                drop(map);
                *membership = self.join_at(id, conn, due, transport)?;
                return Ok(());
            };
            if class.members.get(&id.roll).is_some_and(|m| m.conn != conn) {
                return Err(AlreadyJoined);
            }
            // Our own entry goes; another connection's (not ours to take) is put back.
            if let Some(other) = class
                .members
                .remove(&membership.id.roll)
                .filter(|m| m.conn != conn)
            {
                class.members.insert(membership.id.roll.clone(), other);
            }
            class.seat(id, conn, due, transport);
        }
        let old = std::mem::replace(&mut membership.id, id.clone());
        // Our own receiver counts as the one listener `has_listeners` expects from a member.
        membership.announce(Event::Leave {
            name: old.name.clone(),
        });
        self.inner.publish(|| ClassEvent::Left { id: old });
        Ok(())
    }

    /// Removes a member, telling the others, and forgets the class once it is empty: the same
    /// as dropping `membership`.
    pub fn leave(&self, membership: Membership) {
        drop(membership);
    }

    /// (class, members) for every class, for status reports.
    pub fn snapshot(&self) -> Vec<(ClassKey, usize)> {
        self.lock()
            .iter()
            .map(|(k, c)| (k.clone(), c.members.len()))
            .collect()
    }

    /// Every student checked in (to `class` only, if given), with the instant each seat is
    /// served, sorted by class, name and roll.
    pub fn members(&self, class: Option<&ClassKey>) -> Vec<MemberInfo> {
        let mut list: Vec<MemberInfo> = {
            let map = self.lock();
            let classes: Vec<(&ClassKey, &Class)> = match class {
                Some(key) => map.get_key_value(key).into_iter().collect(),
                None => map.iter().collect(),
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
            .rejoin(&mut kiosk, &id("CN_D1_Bob_2"), Instant::now())
            .expect("rejoin");
        assert_eq!(kiosk.id, id("CN_D1_Bob_2"));
        assert_eq!(
            &watcher.try_recv().expect("leave").line[..],
            b"EVENT LEAVE Ann\n"
        );
        // Alone in a class, there is no one to tell: nothing is even formatted.
        let mut lone = classes.join(&id("CN_D4_Eve_5"), 6).expect("join");
        classes
            .rejoin(&mut lone, &id("CN_D4_Fay_6"), Instant::now())
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
            classes.rejoin(&mut kiosk, &id("CN_D2_Cat_3"), Instant::now()),
            Err(AlreadyJoined)
        );
        assert_eq!(kiosk.id, id("CN_D1_Bob_2"));
        // Into another class: a leave here and a join there.
        classes
            .rejoin(&mut kiosk, &id("CN_D3_Dan_4"), Instant::now())
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
            .join_at(&id("CN_D1_Bob_2"), 2, t0, Transport::Ws)
            .expect("join");
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
}
