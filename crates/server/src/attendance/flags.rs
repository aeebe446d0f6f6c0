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
    /// (class, roll) → (day, first address, flagged already).
    by_roll: HashMap<(ClassKey, Field), (Date, IpAddr, bool)>,
    /// Raised flags, oldest first.
    flags: VecDeque<Flag>,
}

/// The flags of the running daemon.
#[derive(Debug, Default)]
pub struct Flags {
    state: Mutex<State>,
}

impl Flags {
    /// Notes a check-in of `roll` in `class` from `addr` at `at` on `day`; the flags it raised.
    pub fn note(
        &self,
        class: &ClassKey,
        roll: &Field,
        addr: IpAddr,
        at: Instant,
        day: Date,
    ) -> Vec<Flag> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut raised = Vec::new();
        // One roll, two addresses.
        let key = (class.clone(), roll.clone());
        match state.by_roll.get_mut(&key) {
            Some((d, first, flagged)) if *d == day => {
                if *first != addr && !*flagged {
                    *flagged = true;
                    raised.push(Flag::TwoAddresses {
                        class: class.clone(),
                        roll: roll.clone(),
                        addrs: [*first, addr],
                    });
                }
            }
            _ => {
                if state.by_roll.len() >= MAX_TRACKED {
                    state.by_roll.retain(|_, (d, _, _)| *d >= day);
                }
                if state.by_roll.len() < MAX_TRACKED {
                    state.by_roll.insert(key, (day, addr, false));
                }
            }
        }
        // Several rolls, one address.
        let key = (class.clone(), addr);
        if !state.by_addr.contains_key(&key) && state.by_addr.len() >= MAX_TRACKED {
            state.by_addr.retain(|_, v| {
                v.back()
                    .is_some_and(|(_, t)| at.duration_since(*t) < SHARED_WINDOW)
            });
        }
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
                // Each further roll from the address raises the flag again, with all of them.
                if recent.len() >= SHARED_ROLLS {
                    raised.push(Flag::SharedAddress {
                        class: class.clone(),
                        addr,
                        rolls: recent.iter().map(|(r, _)| r.clone()).collect(),
                    });
                }
                // Bounded: a NAT of a thousand students keeps the last hundred.
                if recent.len() > 100 {
                    recent.pop_front();
                }
            }
        }
        for f in &raised {
            if state.flags.len() >= MAX_FLAGS {
                state.flags.pop_front();
            }
            state.flags.push_back(f.clone());
        }
        raised
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
        assert!(
            flags
                .note(&a.class, &a.roll, ip("10.0.0.5"), t0, DAY)
                .is_empty()
        );
        assert!(
            flags
                .note(
                    &b.class,
                    &b.roll,
                    ip("10.0.0.5"),
                    t0 + Duration::from_secs(30),
                    DAY
                )
                .is_empty()
        );
        // The same roll again is not a second roll.
        assert!(
            flags
                .note(
                    &b.class,
                    &b.roll,
                    ip("10.0.0.5"),
                    t0 + Duration::from_secs(40),
                    DAY
                )
                .is_empty()
        );
        let raised = flags.note(
            &c.class,
            &c.roll,
            ip("10.0.0.5"),
            t0 + Duration::from_secs(119),
            DAY,
        );
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(
            raised[0].to_string(),
            "shared-address CN D1 10.0.0.5 rolls=1,2,3"
        );
        // Outside the window the first ones no longer count.
        let later = t0 + Duration::from_secs(300);
        assert!(
            flags
                .note(&d.class, &d.roll, ip("10.0.0.5"), later, DAY)
                .is_empty()
        );
        assert_eq!(flags.list(Some(&a.class)).len(), 1);
        assert!(flags.list(Some(&id("XX_D1_A_1").class)).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn one_roll_from_two_addresses_on_one_day_is_flagged_once() {
        let flags = Flags::default();
        let a = id("CN_D1_A_1");
        let t0 = Instant::now();
        assert!(
            flags
                .note(&a.class, &a.roll, ip("10.0.0.5"), t0, DAY)
                .is_empty()
        );
        assert!(
            flags
                .note(&a.class, &a.roll, ip("10.0.0.5"), t0, DAY)
                .is_empty()
        );
        let raised = flags.note(&a.class, &a.roll, ip("10.9.9.9"), t0, DAY);
        assert_eq!(raised.len(), 1);
        assert_eq!(
            raised[0].to_string(),
            "two-addresses CN D1 roll=1 10.0.0.5 10.9.9.9"
        );
        assert!(
            flags
                .note(&a.class, &a.roll, ip("10.7.7.7"), t0, DAY)
                .is_empty()
        );
        // The next day starts afresh.
        let next = DAY.tomorrow().expect("day");
        assert!(
            flags
                .note(&a.class, &a.roll, ip("10.9.9.9"), t0, next)
                .is_empty()
        );
    }
}
