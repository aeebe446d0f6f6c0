//! The class hub: who is joined to which class, and each class's broadcast channel.
//!
//! An announcement is formatted once and shared as [`Bytes`]; members receive it through a
//! `tokio::sync::broadcast` channel, so a slow member lags (and is told so) without slowing the
//! sender or anyone else. A std `Mutex` guards the map: it is held only for map updates, never
//! across an `.await`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Mutex, MutexGuard, PoisonError};

use attendance_protocol::{ClassKey, Event, Field, ServerLine, StudentId};
use bytes::Bytes;
use tokio::sync::broadcast;

/// Identifies one connection, so a member can skip its own announcements.
pub type ConnId = u64;

/// One line for the members of a class.
#[derive(Debug, Clone)]
pub struct Announcement {
    /// The connection it came from (which does not receive it).
    pub from: ConnId,
    /// The encoded line, `\n` included.
    pub line: Bytes,
}

#[derive(Debug)]
struct Class {
    tx: broadcast::Sender<Announcement>,
    /// roll → the connection that holds it.
    members: HashMap<Field, ConnId>,
}

/// Every class with at least one member.
#[derive(Debug)]
pub struct Classes {
    inner: Mutex<HashMap<ClassKey, Class>>,
    backlog: usize,
}

/// That roll is already checked in on another connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyJoined;

/// A connection's place in a class; give it back with [`Classes::leave`].
#[derive(Debug)]
pub struct Membership {
    /// The student.
    pub id: StudentId,
    conn: ConnId,
    tx: broadcast::Sender<Announcement>,
    /// This member's receiver of the class's announcements.
    pub rx: broadcast::Receiver<Announcement>,
}

impl Membership {
    /// Sends `event` to every other member of the class.
    pub fn announce(&self, event: Event) {
        let line = ServerLine::Event(event).encode();
        // No receivers is fine: nobody else is in the class.
        let _ = self.tx.send(Announcement {
            from: self.conn,
            line,
        });
    }

    /// The connection holding this membership.
    pub fn conn(&self) -> ConnId {
        self.conn
    }
}

impl Classes {
    /// An empty hub whose classes keep `backlog` announcements for slow members.
    pub fn new(backlog: usize) -> Self {
        Self {
            inner: Mutex::new(HashMap::new()),
            backlog,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClassKey, Class>> {
        // A panic elsewhere cannot leave the map half-updated: every update is one insert/remove.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins `id` to its class on connection `conn`, subscribing it before anything is
    /// announced, so it misses nothing that follows.
    ///
    /// # Errors
    /// [`AlreadyJoined`] if the roll is held by another connection.
    pub fn join(&self, id: &StudentId, conn: ConnId) -> Result<Membership, AlreadyJoined> {
        let mut map = self.lock();
        let class = map.entry(id.class.clone()).or_insert_with(|| Class {
            tx: broadcast::channel(self.backlog).0,
            members: HashMap::new(),
        });
        match class.members.entry(id.roll.clone()) {
            Entry::Occupied(_) => return Err(AlreadyJoined),
            Entry::Vacant(v) => {
                v.insert(conn);
            }
        }
        Ok(Membership {
            id: id.clone(),
            conn,
            tx: class.tx.clone(),
            rx: class.tx.subscribe(),
        })
    }

    /// Removes a member, telling the others, and forgets the class once it is empty.
    pub fn leave(&self, membership: Membership) {
        membership.announce(Event::Leave {
            name: membership.id.name.clone(),
        });
        let mut map = self.lock();
        if let Some(class) = map.get_mut(&membership.id.class) {
            if class.members.get(&membership.id.roll) == Some(&membership.conn) {
                class.members.remove(&membership.id.roll);
            }
            if class.members.is_empty() {
                map.remove(&membership.id.class);
            }
        }
    }

    /// (class, members) for every class, for status reports.
    pub fn snapshot(&self) -> Vec<(ClassKey, usize)> {
        self.lock()
            .iter()
            .map(|(k, c)| (k.clone(), c.members.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> StudentId {
        s.parse().expect("valid id")
    }

    #[test]
    fn a_roll_is_held_by_one_connection_until_it_leaves() {
        let classes = Classes::new(8);
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
        let classes = Classes::new(8);
        let mut a = classes.join(&id("CN_D1_Ann_1"), 1).expect("join");
        let b = classes.join(&id("CN_D1_Bob_2"), 2).expect("join");
        b.announce(Event::Present {
            name: b.id.name.clone(),
        });
        let got = a.rx.try_recv().expect("announcement");
        assert_eq!(got.from, 2);
        assert_eq!(&got.line[..], b"EVENT PRESENT Bob\n");
        classes.leave(b);
        assert_eq!(
            &a.rx.try_recv().expect("leave").line[..],
            b"EVENT LEAVE Bob\n"
        );
        classes.leave(a);
        assert!(classes.snapshot().is_empty());
    }
}
