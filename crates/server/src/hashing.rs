//! The hasher for maps keyed by what clients choose (course, division, roll).
//!
//! foldhash is several times faster than std's SipHash on short keys. Its own random seed comes
//! from address-space layout, the clock and heap addresses; for a network daemon whose keys an
//! attacker picks, the process-wide part of the seed comes from the operating system's random
//! source instead (once per process), and each map still gets its own per-map seed.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::SharedSeed;
use foldhash::fast::{FoldHasher, SeedableRandomState};

/// A `HashMap` with [`Seeded`] hashing.
pub(crate) type Map<K, V> = HashMap<K, V, Seeded>;

/// The process-wide seed: from the OS random source, or foldhash's own if that fails.
fn shared_seed() -> &'static SharedSeed {
    static SEED: OnceLock<Option<SharedSeed>> = OnceLock::new();
    SEED.get_or_init(|| getrandom::u64().ok().map(SharedSeed::from_u64))
        .as_ref()
        .unwrap_or_else(SharedSeed::global_random)
}

/// A foldhash [`BuildHasher`] seeded from the OS random source (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Seeded(SeedableRandomState);

impl Default for Seeded {
    fn default() -> Self {
        // Distinct per map; the secret is the shared seed.
        static NEXT: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
        let per_map = NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        Self(SeedableRandomState::with_seed(per_map, shared_seed()))
    }
}

impl BuildHasher for Seeded {
    type Hasher = FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_hash_consistently_and_each_map_has_its_own_seed() {
        let (a, b) = (Seeded::default(), Seeded::default());
        assert_eq!(a.hash_one("18BCP043"), a.hash_one("18BCP043"));
        assert_ne!(a.hash_one("18BCP043"), b.hash_one("18BCP043"));
        let mut map: Map<String, u32> = Map::default();
        map.insert("Div1".into(), 1);
        assert_eq!(map.get("Div1"), Some(&1));
    }
}
