//! A signed request is single-use: the origin remembers each accepted nonce until its
//! timestamp could no longer pass the skew check, and refuses the nonce while it remembers it.
//!
//! A request with timestamp `t` is accepted while the verifier's clock reads at most
//! `t + MAX_SKEW_SECS` (whole seconds), so its nonce is kept until [`forget_at`]`(t)`, plus
//! [`CLOCK_MARGIN_SECS`] for replicas whose clocks disagree by a little. After that the
//! timestamp check refuses a copy on its own; between the two, nothing can pass twice.
//!
//! Replicas share the memory through Redis (`SET key 1 NX EX` [`remember_for_secs`], see the
//! origin's fanout); a single process, or one whose Redis is away, uses [`NonceCache`], bounded:
//! when it holds [`NonceCache::capacity`] unexpired nonces it refuses new ones ([`Claim::Full`])
//! rather than forget one that could still be replayed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::MAX_SKEW_SECS;

/// Seconds a nonce is remembered beyond what one clock needs: replicas' clocks may differ.
pub const CLOCK_MARGIN_SECS: u64 = 5;

/// The first whole second at which a request signed at `timestamp` fails the skew check.
pub fn forget_at(timestamp: u64) -> u64 {
    timestamp
        .saturating_add(MAX_SKEW_SECS)
        .saturating_add(1)
        .saturating_add(CLOCK_MARGIN_SECS)
}

/// How many seconds from `now_secs` to keep the nonce of a request signed at `timestamp`
/// (at least 1: the request was just accepted, so it must be remembered at all).
pub fn remember_for_secs(timestamp: u64, now_secs: u64) -> u64 {
    forget_at(timestamp).saturating_sub(now_secs).max(1)
}

/// What claiming a nonce found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Never seen within the window: accepted and now remembered.
    Fresh,
    /// Seen within the window: the request is a replay.
    Replayed,
    /// The cache is full of nonces still in their window; nothing is forgotten early.
    Full,
}

/// Nonces seen recently, in one process: at most `capacity`, each until its `forget_at`.
#[derive(Debug)]
pub struct NonceCache {
    capacity: usize,
    until: HashMap<String, u64>,
    expiries: BinaryHeap<Reverse<(u64, String)>>,
}

impl NonceCache {
    /// An empty cache holding at most `capacity` nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            until: HashMap::new(),
            expiries: BinaryHeap::new(),
        }
    }

    /// The most nonces it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many nonces it holds now (expired ones go at the next claim).
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    /// Claims `nonce` of a request signed at `timestamp`, the clock at `now_secs`.
    pub fn claim(&mut self, nonce: &str, timestamp: u64, now_secs: u64) -> Claim {
        self.forget_expired(now_secs);
        if self.until.contains_key(nonce) {
            return Claim::Replayed;
        }
        if self.until.len() >= self.capacity {
            return Claim::Full;
        }
        let until = now_secs.saturating_add(remember_for_secs(timestamp, now_secs));
        self.until.insert(nonce.to_owned(), until);
        self.expiries.push(Reverse((until, nonce.to_owned())));
        Claim::Fresh
    }

    fn forget_expired(&mut self, now_secs: u64) {
        while let Some(Reverse((until, _))) = self.expiries.peek() {
            if *until > now_secs {
                break;
            }
            if let Some(Reverse((_, nonce))) = self.expiries.pop() {
                self.until.remove(&nonce);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::signing::{SigningError, check_timestamp};

    const T: u64 = 1_790_000_000;

    #[test]
    fn a_nonce_is_remembered_until_its_timestamp_is_stale_everywhere() {
        assert_eq!(forget_at(T), T + 66);
        assert_eq!(remember_for_secs(T, T), 66);
        // Signed by an edge whose clock is 60 s ahead: still accepted now, kept 126 s.
        assert_eq!(remember_for_secs(T + 60, T), 126);
        // Accepted at the last second of its window: kept past it.
        assert_eq!(remember_for_secs(T, T + 60), 6);
        assert_eq!(remember_for_secs(T, T + 1_000), 1);
    }

    #[test]
    fn an_exact_replay_is_refused_while_its_timestamp_passes() {
        let mut cache = NonceCache::new(10);
        assert_eq!(cache.claim("n1", T, T), Claim::Fresh);
        for now in [T, T + 1, T + 30, T + 60] {
            assert!(check_timestamp(Some(&T.to_string()), now).is_ok());
            assert_eq!(cache.claim("n1", T, now), Claim::Replayed, "at {now}");
        }
        assert_eq!(cache.claim("n2", T, T + 60), Claim::Fresh);
    }

    #[test]
    fn after_the_window_the_timestamp_check_refuses_what_the_cache_forgot() {
        let mut cache = NonceCache::new(10);
        assert_eq!(cache.claim("n1", T, T), Claim::Fresh);
        let later = forget_at(T);
        assert_eq!(
            check_timestamp(Some(&T.to_string()), later),
            Err(SigningError::Stale {
                skew_secs: later - T
            })
        );
        // Only a request that passed the timestamp check reaches the cache; by now it has
        // forgotten the nonce, and that is safe.
        assert_eq!(cache.claim("n1", T, later), Claim::Fresh);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forget_a_live_nonce() {
        let mut cache = NonceCache::new(2);
        assert_eq!(cache.claim("a", T, T), Claim::Fresh);
        assert_eq!(cache.claim("b", T + 10, T + 10), Claim::Fresh);
        assert_eq!(cache.claim("c", T + 10, T + 10), Claim::Full);
        // A replay is still named as one when full.
        assert_eq!(cache.claim("a", T, T + 10), Claim::Replayed);
        // Once "a" expires there is room again, and "b" is still remembered.
        assert_eq!(cache.claim("c", T + 66, T + 66), Claim::Fresh);
        assert_eq!(cache.claim("b", T + 10, T + 66), Claim::Replayed);
        assert_eq!(cache.len(), 2);
    }

    proptest! {
        /// Whatever the order of claims, within its window a nonce is accepted exactly once,
        /// and the cache never holds more than its capacity.
        #[test]
        fn within_the_window_each_nonce_passes_once(
            claims in proptest::collection::vec((0_u8..20, 0_u64..60), 1..200),
            capacity in 1_usize..30,
        ) {
            let mut cache = NonceCache::new(capacity);
            let mut accepted_at: HashMap<u8, u64> = HashMap::new();
            let mut now = T;
            for (nonce, step) in claims {
                now += step % 3;
                let timestamp = now;
                let name = format!("nonce-{nonce}");
                let claim = cache.claim(&name, timestamp, now);
                prop_assert!(cache.len() <= capacity);
                if claim == Claim::Fresh {
                    if let Some(first) = accepted_at.get(&nonce) {
                        prop_assert!(now >= forget_at(*first), "accepted twice in the window");
                    }
                    accepted_at.insert(nonce, timestamp);
                }
            }
        }
    }
}
