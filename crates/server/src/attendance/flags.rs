//! Flags for the teacher, never blocks: check-ins that may be proxies. A whole class behind one
//! NAT address is normal, so nothing is refused; the teacher sees the flag and decides.
//!
//! - [`Flag::SharedAddress`]: [`SHARED_ROLLS`] or more different rolls of one class checked in
//!   from one address within [`SHARED_WINDOW`];
//! - [`Flag::TwoAddresses`]: one roll seen from two addresses on one day.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] (class, address) and (class, roll) entries each,
//! the oldest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use attendance_protocol::{ClassKey, Field};
use jiff::civil::Date;
use tokio::time::Instant;

/// Rolls from one address that make a [`Flag::SharedAddress`].
pub const SHARED_ROLLS: usize = 3;
/// The window they must fall in.
pub const SHARED_WINDOW: Duration = Duration::from_secs(120);
/// Most entries of each kind kept.
pub const MAX_TRACKED: usize = 50_000;
/// Most flags kept (the newest).
pub const MAX_FLAGS: usize = 1_000;

/// Something the teacher may want to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    /// Several rolls of `class` checked in from `addr` within the window.
    SharedAddress {
        /// The class.
        class: ClassKey,
        /// The address.
        addr: IpAddr,
        /// The rolls, in the order they came.
        rolls: Vec<Field>,
    },
    /// `roll` of `class` was seen from two addresses today.
    TwoAddresses {
        /// The class.
        class: ClassKey,
        /// The roll.
        roll: Field,
        /// The first address, then the other.
        addrs: [IpAddr; 2],
    },
}

impl Flag {
    /// The class it is about.
    pub fn class(&self) -> &ClassKey {
        match self {
            Self::SharedAddress { class, .. } | Self::TwoAddresses { class, .. } => class,
        }
    }
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SharedAddress { class, addr, rolls } => {
                let rolls: Vec<&str> = rolls.iter().map(Field::as_str).collect();
                write!(f, "shared-address {class} {addr} rolls={}", rolls.join(","))
            }
            Self::TwoAddresses { class, roll, addrs } => {
                write!(
                    f,
                    "two-addresses {class} roll={roll} {} {}",
                    addrs[0], addrs[1]
                )
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// (class, address) → recent (roll, when), oldest first.
    by_addr: HashMap<(ClassKey, IpAddr), VecDeque<(Field, Instant)>>,
    /// The day the maps are of.
    day: Option<Date>,
    /// (class, roll) → (first address today, flagged already).
    by_roll: HashMap<(ClassKey, Field), (IpAddr, bool)>,
    /// Raised flags, oldest first.
    flags: VecDeque<Flag>,
}

/// What [`Flags::note`] found.
#[derive(Debug, Default)]
pub struct Noted {
    /// New flags (worth a log line).
    pub raised: Vec<Flag>,
    /// Flags raised before that this check-in is part of now (with only this roll).
    pub joined: Vec<Flag>,
}

/// The flags of the running daemon.
#[derive(Debug, Default)]
pub struct Flags {
    state: Mutex<State>,
}

impl Flags {
    /// Notes a check-in of `roll` in `class` from `addr` at `at` on `day`: the flags it raised,
    /// and the raised flags it joined (a further roll from a flagged address).
    pub fn note(
        &self,
        class: &ClassKey,
        roll: &Field,
        addr: IpAddr,
        at: Instant,
        day: Date,
    ) -> Noted {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut raised = Vec::new();
        // A new day starts afresh (and keeps the maps from filling with old days).
        if state.day != Some(day) {
            state.day = Some(day);
            state.by_roll.clear();
            state.by_addr.clear();
        }
        // One roll, two addresses.
        let key = (class.clone(), roll.clone());
        let room = state.by_roll.len() < MAX_TRACKED;
        match state.by_roll.get_mut(&key) {
            Some((first, flagged)) if *first != addr && !*flagged => {
                *flagged = true;
                raised.push(Flag::TwoAddresses {
                    class: class.clone(),
                    roll: roll.clone(),
                    addrs: [*first, addr],
                });
            }
            Some(_) => {}
            // Full: the rest of the day's rolls go untracked (bounded memory, no scans).
            None if room => {
                state.by_roll.insert(key, (addr, false));
            }
            None => {}
        }
        // Several rolls, one address: raised once when the third comes; each further roll in
        // the window joins that flag (told to the dashboard, not logged again).
        let key = (class.clone(), addr);
        let mut grown = None;
        if state.by_addr.len() < MAX_TRACKED || state.by_addr.contains_key(&key) {
            let recent = state.by_addr.entry(key).or_default();
            while recent
                .front()
                .is_some_and(|(_, t)| at.duration_since(*t) >= SHARED_WINDOW)
            {
                recent.pop_front();
            }
            if !recent.iter().any(|(r, _)| r == roll) {
                recent.push_back((roll.clone(), at));
                // Bounded: a NAT of a thousand students keeps the last twenty.
                if recent.len() > 20 {
                    recent.pop_front();
                }
                match recent.len() {
                    n if n == SHARED_ROLLS => raised.push(Flag::SharedAddress {
                        class: class.clone(),
                        addr,
                        rolls: recent.iter().map(|(r, _)| r.clone()).collect(),
                    }),
                    n if n > SHARED_ROLLS => grown = Some(()),
                    _ => {}
                }
            }
        }
        let mut joined = Vec::new();
        if grown.is_some() {
            let found = state.flags.iter_mut().rev().find_map(|f| match f {
                Flag::SharedAddress {
                    class: c,
                    addr: a,
                    rolls,
                } if c == class && *a == addr => Some(rolls),
                _ => None,
            });
            if let Some(rolls) = found {
                if rolls.len() < 100 && !rolls.contains(roll) {
                    rolls.push(roll.clone());
                }
            }
            joined.push(Flag::SharedAddress {
                class: class.clone(),
                addr,
                rolls: vec![roll.clone()],
            });
        }
        for f in &raised {
            if state.flags.len() >= MAX_FLAGS {
                state.flags.pop_front();
            }
            state.flags.push_back(f.clone());
        }
        Noted { raised, joined }
    }

    /// The flags raised so far (of `class` only, if given), oldest first.
    pub fn list(&self, class: Option<&ClassKey>) -> Vec<Flag> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state
            .flags
            .iter()
            .filter(|f| class.is_none_or(|c| f.class() == c))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> attendance_protocol::StudentId {
        s.parse().expect("id")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    const DAY: Date = Date::constant(2026, 12, 7);

    #[tokio::test(start_paused = true)]
    async fn three_rolls_from_one_address_within_two_minutes_are_flagged() {
        let flags = Flags::default();
        let (a, b, c, d) = (
            id("CN_D1_A_1"),
            id("CN_D1_B_2"),
            id("CN_D1_C_3"),
            id("CN_D1_D_4"),
        );
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        let at = ip("10.0.0.5");
        assert!(flags.note(&a.class, &a.roll, at, t0, DAY).raised.is_empty());
        assert!(
            flags
                .note(&b.class, &b.roll, at, secs(30), DAY)
                .raised
                .is_empty()
        );
        // The same roll again is not a second roll.
        assert!(
            flags
                .note(&b.class, &b.roll, at, secs(40), DAY)
                .raised
                .is_empty()
        );
        let raised = flags.note(&c.class, &c.roll, at, secs(119), DAY).raised;
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(
            raised[0].to_string(),
            "shared-address CN D1 10.0.0.5 rolls=1,2,3"
        );
        // A fourth within the window joins the flag: not raised again.
        let fourth = flags.note(&d.class, &d.roll, at, secs(119), DAY);
        assert!(fourth.raised.is_empty());
        assert_eq!(fourth.joined.len(), 1);
        assert_eq!(
            flags.list(None)[0].to_string(),
            "shared-address CN D1 10.0.0.5 rolls=1,2,3,4"
        );
        // Outside the window the first ones no longer count.
        let e = id("CN_D1_E_5");
        let later = flags.note(&e.class, &e.roll, at, secs(600), DAY);
        assert!(later.raised.is_empty() && later.joined.is_empty());
        assert_eq!(flags.list(Some(&a.class)).len(), 1);
        assert!(flags.list(Some(&id("XX_D1_A_1").class)).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn one_roll_from_two_addresses_on_one_day_is_flagged_once() {
        let flags = Flags::default();
        let a = id("CN_D1_A_1");
        let t0 = Instant::now();
        let note = |addr: &str, day| flags.note(&a.class, &a.roll, ip(addr), t0, day).raised;
        assert!(note("10.0.0.5", DAY).is_empty());
        assert!(note("10.0.0.5", DAY).is_empty());
        let raised = note("10.9.9.9", DAY);
        assert_eq!(raised.len(), 1);
        assert_eq!(
            raised[0].to_string(),
            "two-addresses CN D1 roll=1 10.0.0.5 10.9.9.9"
        );
        assert!(note("10.7.7.7", DAY).is_empty());
        // The next day starts afresh.
        assert!(note("10.9.9.9", DAY.tomorrow().expect("day")).is_empty());
    }
}
