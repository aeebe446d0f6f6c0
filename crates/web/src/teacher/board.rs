//! The dashboard's picture of today: every student who joined a class since the daemon started
//! (or since midnight), with their seat, their mark and the class's chat, kept from the
//! engine's event stream alone.
//!
//! Every change is an [`Update`] with a sequence number; the last [`RING`] of them are kept so
//! an event stream that reconnects with `Last-Event-ID` gets exactly what it missed. One that
//! missed more than the ring holds is sent the whole class again (a snapshot): never a gap.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use attendance_protocol::{ClassKey, Field, StudentId, Timestamp, Transport};
use attendance_server::engine::{ClassEvent, Engine};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tracing::warn;

/// Updates kept for reconnecting streams (each a row or chat line as JSON, a few hundred bytes).
pub const RING: usize = 512;
/// Chat lines kept per class…
const CHAT: usize = 100;
/// …and over all classes (past it, the longest chat loses its oldest line).
const MAX_CHAT: usize = 10_000;
/// Students kept over all classes for one day: past it new arrivals are still counted by the
/// engine (and seen in `attend admin`), but get no row here until the next day.
pub const MAX_ROWS: usize = 50_000;
/// Updates a slow event stream may fall behind by before it is sent a snapshot instead.
const FANOUT: usize = 1024;

/// One student's row on a class page.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Row {
    /// Name.
    pub name: String,
    /// Roll number.
    pub roll: String,
    /// The address they checked in from.
    pub addr: Option<String>,
    /// `tcp` or `ws`.
    pub via: &'static str,
    /// When they (last) took their seat.
    pub joined_at: String,
    /// Seconds they had to stay from `joined_at`; 0 if marked.
    pub seconds_left: u64,
    /// When the mark was made, once it is on disk.
    pub marked_at: Option<String>,
    /// Whether they are seated now.
    pub connected: bool,
    /// When they left, if they are not seated.
    pub left_at: Option<String>,
    /// Announcements their connection missed (`EVENT LAGGED`) while seated.
    pub lagged: u64,
    /// Flags for the teacher: `shared-address` (several rolls from this address within
    /// minutes), `two-addresses` (this roll from two addresses today).
    pub flags: Vec<&'static str>,
}

/// One chat line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Chat {
    /// Who.
    pub name: String,
    /// Their roll.
    pub roll: String,
    /// What.
    pub text: String,
    /// When.
    pub at: String,
}

/// One change of one class, encoded once for every stream.
#[derive(Debug)]
pub struct Update {
    /// Its place in the sequence of every update.
    pub seq: u64,
    /// The class it changed.
    pub class: ClassKey,
    /// The SSE event name: `row` or `chat`.
    pub event: &'static str,
    /// The SSE data: one line of JSON.
    pub data: String,
}

/// A class as a page shows it.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ClassView {
    /// Every student of today, by name then roll.
    pub rows: Vec<Row>,
    /// The chat, oldest first.
    pub chat: Vec<Chat>,
}

/// A student of today as the board keeps them: small and without heap allocations (a name and
/// roll of up to 24 bytes are held inline in the key), as every student who joins costs one;
/// made into a [`Row`] only to be sent.
/// Times are Unix milliseconds (0: none), 56 bytes in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    addr: Option<IpAddr>,
    via: Transport,
    connected: bool,
    joined_at: i64,
    marked_at: i64,
    left_at: i64,
    seconds_left: u32,
    lagged: u32,
    /// [`FLAG_SHARED`] | [`FLAG_TWO`].
    flags: u8,
}

/// [`Entry::flags`]: several rolls checked in from this address within minutes.
const FLAG_SHARED: u8 = 1;
/// [`Entry::flags`]: this roll was seen from two addresses today.
const FLAG_TWO: u8 = 2;

fn millis(at: Timestamp) -> i64 {
    i64::try_from(at.unix_millis()).unwrap_or(0)
}

fn time_of(millis: i64) -> Option<String> {
    (millis != 0)
        .then(|| Timestamp::from_unix_millis(millis))
        .flatten()
        .map(rfc3339)
}

impl Entry {
    fn row(&self, (name, roll): &(Field, Field)) -> Row {
        Row {
            name: name.to_string(),
            roll: roll.to_string(),
            addr: self.addr.map(|a| a.to_string()),
            via: transport_word(self.via),
            joined_at: time_of(self.joined_at).unwrap_or_default(),
            seconds_left: u64::from(self.seconds_left),
            marked_at: time_of(self.marked_at),
            connected: self.connected,
            left_at: time_of(self.left_at),
            lagged: u64::from(self.lagged),
            flags: [(FLAG_SHARED, "shared-address"), (FLAG_TWO, "two-addresses")]
                .into_iter()
                .filter(|(bit, _)| self.flags & bit != 0)
                .map(|(_, word)| word)
                .collect(),
        }
    }
}

#[derive(Debug, Default)]
struct ClassBoard {
    /// (name, roll) → entry, so the page lists by name.
    rows: BTreeMap<(Field, Field), Entry>,
    chat: VecDeque<Chat>,
}

#[derive(Debug, Default)]
struct State {
    seq: u64,
    day: Option<jiff::civil::Date>,
    classes: BTreeMap<ClassKey, ClassBoard>,
    rows: usize,
    /// Chat lines kept, over all classes.
    chat: usize,
    ring: VecDeque<Arc<Update>>,
}

/// What a reconnecting stream is sent first.
#[derive(Debug)]
pub enum Resume {
    /// The updates of the class it missed, in order (possibly none).
    Replay(Vec<Arc<Update>>),
    /// Too much was missed (or nothing is known of the id): the whole class, as of `seq`.
    Snapshot {
        /// The sequence number the view is current at.
        seq: u64,
        /// The class.
        view: ClassView,
    },
}

/// Today's classes, kept current by [`Board::follow`].
#[derive(Debug)]
pub struct Board {
    state: Mutex<State>,
    updates: broadcast::Sender<Arc<Update>>,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            updates: broadcast::channel(FANOUT).0,
        }
    }
}

fn rfc3339(at: Timestamp) -> String {
    at.to_string()
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies the engine's class events until the daemon shuts down. Subscribe (`events`)
    /// before the web port is announced, so nothing that happens once clients can connect is
    /// missed.
    pub async fn follow(
        self: Arc<Self>,
        engine: Arc<Engine>,
        mut events: broadcast::Receiver<ClassEvent>,
    ) {
        let shutdown = engine.shutdown_token().clone();
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                e = events.recv() => e,
            };
            match event {
                Ok(event) => self.apply(engine.local_date(Timestamp::now()), event),
                Err(RecvError::Lagged(n)) => {
                    warn!(
                        missed = n,
                        "dashboard fell behind the class events; rows may be stale until the next change"
                    );
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// One event of the engine, on the local day `today`.
    pub fn apply(&self, today: jiff::civil::Date, event: ClassEvent) {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.day != Some(today) {
            // A new day: only those still seated stay on the page.
            state.day = Some(today);
            for class in state.classes.values_mut() {
                class.rows.retain(|_, r| r.connected);
                class.chat.clear();
            }
            state.classes.retain(|_, c| !c.rows.is_empty());
            state.rows = state.classes.values().map(|c| c.rows.len()).sum();
            state.chat = 0;
        }
        match event {
            ClassEvent::Joined {
                id,
                addr,
                transport,
                at,
                seconds_left,
                marked_at,
            } => {
                let mut row = Entry {
                    addr,
                    via: transport,
                    connected: true,
                    joined_at: millis(at),
                    marked_at: marked_at.map_or(0, millis),
                    left_at: 0,
                    seconds_left: u32::try_from(seconds_left).unwrap_or(u32::MAX),
                    lagged: 0,
                    flags: 0,
                };
                self.upsert(state, &id, |old| {
                    // A mark (and a flag) outlives the seat it was made on.
                    if let Some(old) = old {
                        row.flags = old.flags;
                        if row.marked_at == 0 {
                            row.marked_at = old.marked_at;
                        }
                        if row.marked_at != 0 {
                            row.seconds_left = 0;
                        }
                    }
                    Some(row)
                });
            }
            ClassEvent::Left { id } => {
                let now = millis(Timestamp::now());
                self.upsert(state, &id, |old| {
                    old.map(|r| Entry {
                        connected: false,
                        left_at: now,
                        ..*r
                    })
                });
            }
            ClassEvent::Marked { id, at } => {
                self.upsert(state, &id, |old| {
                    old.map(|r| Entry {
                        marked_at: millis(at),
                        seconds_left: 0,
                        ..*r
                    })
                });
            }
            ClassEvent::Lagged { id, skipped } => {
                self.upsert(state, &id, |old| {
                    old.map(|r| Entry {
                        lagged: r
                            .lagged
                            .saturating_add(u32::try_from(skipped).unwrap_or(u32::MAX)),
                        ..*r
                    })
                });
            }
            ClassEvent::Flagged { flag, id } => {
                use attendance_server::attendance::flags::Flag;
                let (rolls, bit) = match flag {
                    Flag::SharedAddress { rolls, .. } => (rolls, FLAG_SHARED),
                    Flag::TwoAddresses { roll, .. } => (vec![roll], FLAG_TWO),
                };
                // The student of this check-in directly; the others a flag names (only when it
                // is raised, a few at most) by roll.
                let mut ids = vec![id.clone()];
                if rolls.len() > 1 {
                    if let Some(c) = state.classes.get(&id.class) {
                        ids.extend(
                            c.rows
                                .keys()
                                .filter(|(_, roll)| *roll != id.roll && rolls.contains(roll))
                                .map(|(name, roll)| StudentId {
                                    class: id.class.clone(),
                                    name: name.clone(),
                                    roll: roll.clone(),
                                }),
                        );
                    }
                }
                for id in ids {
                    self.upsert(state, &id, |old| {
                        old.map(|r| Entry {
                            flags: r.flags | bit,
                            ..*r
                        })
                    });
                }
            }
            ClassEvent::Said { id, text } => {
                let chat = Chat {
                    name: id.name.to_string(),
                    roll: id.roll.to_string(),
                    text: text.as_str().to_owned(),
                    at: rfc3339(Timestamp::now()),
                };
                let data = json_line(&chat);
                if !state.classes.contains_key(&id.class) {
                    return;
                }
                if state.chat >= MAX_CHAT {
                    if let Some(longest) = state.classes.values_mut().max_by_key(|c| c.chat.len()) {
                        longest.chat.pop_front();
                        state.chat -= 1;
                    }
                }
                if let Some(class) = state.classes.get_mut(&id.class) {
                    if class.chat.len() == CHAT {
                        class.chat.pop_front();
                    } else {
                        state.chat += 1;
                    }
                    class.chat.push_back(chat);
                    self.push(state, id.class, "chat", data);
                }
            }
            _ => {}
        }
    }

    /// Replaces `id`'s row by what `make` returns from the old one (`None`: no change), and
    /// records the update.
    fn upsert(
        &self,
        state: &mut State,
        id: &StudentId,
        make: impl FnOnce(Option<&Entry>) -> Option<Entry>,
    ) {
        let key = (id.name.clone(), id.roll.clone());
        let old = state.classes.get(&id.class).and_then(|c| c.rows.get(&key));
        let is_new = old.is_none();
        if is_new && state.rows >= MAX_ROWS {
            return;
        }
        let Some(row) = make(old) else {
            return;
        };
        let data = json_line(&row.row(&key));
        state
            .classes
            .entry(id.class.clone())
            .or_default()
            .rows
            .insert(key, row);
        if is_new {
            state.rows += 1;
        }
        self.push(state, id.class.clone(), "row", data);
    }

    fn push(&self, state: &mut State, class: ClassKey, event: &'static str, data: String) {
        state.seq += 1;
        let update = Arc::new(Update {
            seq: state.seq,
            class,
            event,
            data,
        });
        if state.ring.len() == RING {
            state.ring.pop_front();
        }
        state.ring.push_back(Arc::clone(&update));
        // Sent under the lock, so a stream that subscribed under it sees every later update.
        let _ = self.updates.send(update);
    }

    /// Subscribes to later updates and says where to start for `class`: after `last` (a
    /// reconnect's `Last-Event-ID`) if the ring still holds everything since, else a snapshot.
    pub fn resume(
        &self,
        class: &ClassKey,
        last: Option<u64>,
    ) -> (broadcast::Receiver<Arc<Update>>, Resume) {
        let state = self.lock();
        let rx = self.updates.subscribe();
        let oldest = state.ring.front().map_or(state.seq + 1, |u| u.seq);
        let resume = match last {
            Some(last) if last <= state.seq && last + 1 >= oldest => Resume::Replay(
                state
                    .ring
                    .iter()
                    .filter(|u| u.seq > last && u.class == *class)
                    .cloned()
                    .collect(),
            ),
            _ => Resume::Snapshot {
                seq: state.seq,
                view: view_of(&state, class),
            },
        };
        (rx, resume)
    }

    /// The class as it is now, and the sequence number it is current at.
    pub fn snapshot(&self, class: &ClassKey) -> (u64, ClassView) {
        let state = self.lock();
        (state.seq, view_of(&state, class))
    }

    /// Later updates (for the class list, which re-reads the counts on each).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Update>> {
        self.updates.subscribe()
    }

    /// (class, students of today, seated now) for every class with rows.
    pub fn counts(&self) -> Vec<(ClassKey, usize, usize)> {
        let state = self.lock();
        state
            .classes
            .iter()
            .map(|(k, c)| {
                let seated = c.rows.values().filter(|r| r.connected).count();
                (k.clone(), c.rows.len(), seated)
            })
            .collect()
    }
}

fn view_of(state: &State, class: &ClassKey) -> ClassView {
    state
        .classes
        .get(class)
        .map(|c| ClassView {
            rows: c.rows.iter().map(|(k, e)| e.row(k)).collect(),
            chat: c.chat.iter().cloned().collect(),
        })
        .unwrap_or_default()
}

fn transport_word(t: Transport) -> &'static str {
    t.as_str()
}

/// `value` as one line of JSON (SSE data may not hold a line break; JSON escapes them).
pub fn json_line<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> StudentId {
        s.parse().expect("id")
    }

    fn joined(s: &str) -> ClassEvent {
        ClassEvent::Joined {
            id: id(s),
            addr: None,
            transport: Transport::Ws,
            at: Timestamp::now(),
            seconds_left: 60,
            marked_at: None,
        }
    }

    fn day(d: &str) -> jiff::civil::Date {
        d.parse().expect("date")
    }

    #[test]
    fn a_mark_survives_leaving_and_a_new_day_keeps_only_the_seated() {
        let board = Board::default();
        let today = day("2026-12-05");
        board.apply(today, joined("CN_D1_Ann_1"));
        board.apply(today, joined("CN_D1_Bob_2"));
        board.apply(
            today,
            ClassEvent::Marked {
                id: id("CN_D1_Ann_1"),
                at: Timestamp::now(),
            },
        );
        board.apply(
            today,
            ClassEvent::Left {
                id: id("CN_D1_Ann_1"),
            },
        );
        let class = id("CN_D1_X_0").class;
        let (_, view) = board.snapshot(&class);
        let ann = &view.rows[0];
        assert_eq!((ann.name.as_str(), ann.connected), ("Ann", false));
        assert!(ann.marked_at.is_some());
        assert_eq!(ann.via, "ws");
        // Ann comes back on a new seat: still marked.
        board.apply(today, joined("CN_D1_Ann_1"));
        let (_, view) = board.snapshot(&class);
        assert!(view.rows[0].marked_at.is_some() && view.rows[0].connected);
        board.apply(
            today,
            ClassEvent::Left {
                id: id("CN_D1_Ann_1"),
            },
        );
        // The next day, only Bob (still seated) is on the page.
        board.apply(day("2026-12-06"), joined("CN_D2_Cat_3"));
        let (_, view) = board.snapshot(&class);
        let names: Vec<&str> = view.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["Bob"]);
    }

    #[test]
    fn a_resume_replays_what_the_ring_holds_and_snapshots_past_it() {
        let board = Board::default();
        let today = day("2026-12-05");
        board.apply(today, joined("CN_D1_Ann_1"));
        board.apply(today, joined("CN_D2_Bob_2"));
        board.apply(today, joined("CN_D1_Cat_3"));
        let class = id("CN_D1_X_0").class;
        match board.resume(&class, Some(1)).1 {
            Resume::Replay(updates) => {
                let seqs: Vec<u64> = updates.iter().map(|u| u.seq).collect();
                assert_eq!(seqs, [3], "only this class's updates after 1");
            }
            other => panic!("expected a replay, got {other:?}"),
        }
        assert!(matches!(
            board.resume(&class, None).1,
            Resume::Snapshot { seq: 3, .. }
        ));
        assert!(matches!(
            board.resume(&class, Some(9)).1,
            Resume::Snapshot { .. }
        ));
        // Overflow the ring: an old id can no longer be answered by a replay.
        for k in 0..RING {
            board.apply(
                today,
                ClassEvent::Lagged {
                    id: id("CN_D1_Ann_1"),
                    skipped: k as u64,
                },
            );
        }
        assert!(matches!(
            board.resume(&class, Some(1)).1,
            Resume::Snapshot { .. }
        ));
        let last = board.snapshot(&class).0;
        assert!(matches!(board.resume(&class, Some(last)).1, Resume::Replay(v) if v.is_empty()));
    }

    #[test]
    fn chat_is_kept_per_class_and_bounded() {
        let board = Board::default();
        let today = day("2026-12-05");
        board.apply(today, joined("CN_D1_Ann_1"));
        for k in 0..(CHAT + 5) {
            board.apply(
                today,
                ClassEvent::Said {
                    id: id("CN_D1_Ann_1"),
                    text: attendance_protocol::Text::lossy(&format!("line {k}")),
                },
            );
        }
        // A class nobody joined keeps no chat (and no rows).
        board.apply(
            today,
            ClassEvent::Said {
                id: id("CN_D9_Eve_5"),
                text: attendance_protocol::Text::lossy("hi"),
            },
        );
        let (_, view) = board.snapshot(&id("CN_D1_X_0").class);
        assert_eq!(view.chat.len(), CHAT);
        assert_eq!(view.chat[0].text, "line 5");
        assert!(board.snapshot(&id("CN_D9_X_0").class).1.chat.is_empty());
    }
}
