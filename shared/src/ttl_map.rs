//! A bounded map whose entries expire: what an isolate keeps warm between requests (verified
//! principals, region decisions). The time is passed in; an expired entry is never returned;
//! when full, expired entries go first, then the one closest to expiring.

use std::collections::HashMap;
use std::hash::Hash;

/// Entries of `V` by `K`, each with its expiry (Unix ms), at most `capacity` of them.
#[derive(Debug, Clone)]
pub struct TtlMap<K, V> {
    entries: HashMap<K, (V, u64)>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlMap<K, V> {
    /// An empty map holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// The value of `key` while it has not expired at `now_ms`.
    pub fn get(&self, key: &K, now_ms: u64) -> Option<V> {
        let (value, expires_at_ms) = self.entries.get(key)?;
        (now_ms < *expires_at_ms).then(|| value.clone())
    }

    /// Keeps `value` for `key` until `expires_at_ms` (nothing kept when that has passed).
    pub fn insert(&mut self, key: K, value: V, expires_at_ms: u64, now_ms: u64) {
        if expires_at_ms <= now_ms || self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, at)| *at > now_ms);
            if self.entries.len() >= self.capacity {
                let soonest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(key, _)| key.clone());
                if let Some(soonest) = soonest {
                    self.entries.remove(&soonest);
                }
            }
        }
        self.entries.insert(key, (value, expires_at_ms));
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_returned_until_it_expires() {
        let mut map = TtlMap::new(4);
        map.insert("a", 1, 1_000, 0);
        assert_eq!(map.get(&"a", 0), Some(1));
        assert_eq!(map.get(&"a", 999), Some(1));
        assert_eq!(map.get(&"a", 1_000), None);
        assert_eq!(map.get(&"b", 0), None);
    }

    #[test]
    fn an_entry_already_expired_is_not_kept() {
        let mut map = TtlMap::new(4);
        map.insert("a", 1, 500, 500);
        assert!(map.entries.is_empty());
        let mut none = TtlMap::new(0);
        none.insert("a", 1, 1_000, 0);
        assert!(none.entries.is_empty());
    }

    #[test]
    fn a_full_map_drops_expired_entries_then_the_soonest_to_expire() {
        let mut map = TtlMap::new(2);
        map.insert("a", 1, 100, 0);
        map.insert("b", 2, 300, 0);
        // "a" has expired at 150: it makes room.
        map.insert("c", 3, 400, 150);
        assert_eq!((map.get(&"b", 150), map.get(&"c", 150)), (Some(2), Some(3)));
        assert_eq!(map.entries.len(), 2);
        // Nothing expired: "b" (soonest) goes.
        map.insert("d", 4, 500, 200);
        assert_eq!(map.get(&"b", 200), None);
        assert_eq!((map.get(&"c", 200), map.get(&"d", 200)), (Some(3), Some(4)));
        // Replacing a held key never evicts another.
        map.insert("d", 5, 600, 200);
        assert_eq!((map.get(&"c", 200), map.get(&"d", 200)), (Some(3), Some(5)));
        map.clear();
        assert!(map.entries.is_empty());
    }
}
