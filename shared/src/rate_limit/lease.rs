//! Concurrent-call leases: a call acquires a lease when it starts, renews it while live and
//! releases it when it ends. Each lease expires `lease_ttl_ms` after its last renewal, so a call
//! that vanished without an end frees its slot once its lease expires (Stripe's
//! concurrent-requests limiter, with expiry instead of trust).

use serde::{Deserialize, Serialize};

use super::decision::Verdict;
use super::policy::ConcurrencyParams;

/// Longest lease id (a call id: Twilio's `CA…` sid, a UUID).
pub const MAX_LEASE_ID_LEN: usize = 128;

/// Why a lease operation could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// No live lease has this id: never acquired, released, or expired and reclaimed.
    #[error("no live lease {0:?}")]
    NotHeld(String),
}

/// Whether `id` may name a lease: 1–128 of `A-Z a-z 0-9 . _ : -`.
pub fn is_valid_lease_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEASE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// One live call's hold on a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The call id.
    pub id: String,
    /// The lease is reclaimable from this instant on.
    pub expires_at_ms: u64,
}

/// A lease as granted to the caller: renew it before `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// The call id.
    pub lease_id: String,
    /// Milliseconds since the epoch at which the lease lapses unless renewed.
    pub expires_at_ms: u64,
}

/// One key's leases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leases {
    /// The leases held, in no particular order.
    pub leases: Vec<Lease>,
}

impl Leases {
    /// Drops every lease expired at `now_ms`; returns how many.
    pub fn reclaim(&mut self, now_ms: u64) -> usize {
        let before = self.leases.len();
        self.leases.retain(|lease| lease.expires_at_ms > now_ms);
        before - self.leases.len()
    }

    /// Acquires (or, for a held id, renews) lease `id` at `now_ms`. When the cap is reached the
    /// verdict refuses; with `enforce` false (shadow mode) the lease is recorded anyway, since
    /// the call goes ahead and its slot is really taken. Reclaims expired leases first.
    pub fn acquire(
        &mut self,
        params: &ConcurrencyParams,
        id: &str,
        now_ms: u64,
        enforce: bool,
    ) -> (Verdict, Option<LeaseGrant>) {
        self.reclaim(now_ms);
        let expires_at_ms = now_ms.saturating_add(params.lease_ttl_ms);
        if let Some(lease) = self.leases.iter_mut().find(|lease| lease.id == id) {
            lease.expires_at_ms = expires_at_ms;
            return (
                self.verdict(params, now_ms, true),
                Some(grant(id, expires_at_ms)),
            );
        }
        let fits = (self.leases.len() as u64) < params.limit;
        if !fits {
            let refused = Verdict {
                retry_after_ms: self.slot_frees_after(params, now_ms),
                ..self.verdict(params, now_ms, false)
            };
            if enforce {
                return (refused, None);
            }
            self.leases.push(Lease {
                id: id.to_owned(),
                expires_at_ms,
            });
            let after = self.verdict(params, now_ms, false);
            return (
                Verdict {
                    retry_after_ms: refused.retry_after_ms,
                    ..after
                },
                Some(grant(id, expires_at_ms)),
            );
        }
        self.leases.push(Lease {
            id: id.to_owned(),
            expires_at_ms,
        });
        (
            self.verdict(params, now_ms, true),
            Some(grant(id, expires_at_ms)),
        )
    }

    /// Extends live lease `id` to `now_ms + lease_ttl_ms`.
    pub fn renew(
        &mut self,
        params: &ConcurrencyParams,
        id: &str,
        now_ms: u64,
    ) -> Result<(Verdict, LeaseGrant), LeaseError> {
        self.reclaim(now_ms);
        let expires_at_ms = now_ms.saturating_add(params.lease_ttl_ms);
        let lease = self
            .leases
            .iter_mut()
            .find(|lease| lease.id == id)
            .ok_or_else(|| LeaseError::NotHeld(id.to_owned()))?;
        lease.expires_at_ms = expires_at_ms;
        Ok((self.verdict(params, now_ms, true), grant(id, expires_at_ms)))
    }

    /// Ends lease `id`; `false` when it was not held (already released or reclaimed).
    pub fn release(&mut self, id: &str, now_ms: u64) -> bool {
        self.reclaim(now_ms);
        let before = self.leases.len();
        self.leases.retain(|lease| lease.id != id);
        self.leases.len() < before
    }

    /// Leases held (live or not yet reclaimed).
    pub fn held(&self) -> u64 {
        self.leases.len() as u64
    }

    /// Whether no lease is live at `now_ms`.
    pub fn is_idle(&self, now_ms: u64) -> bool {
        self.leases
            .iter()
            .all(|lease| lease.expires_at_ms <= now_ms)
    }

    /// When the first lease expires; `None` when none is held.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.leases.iter().map(|lease| lease.expires_at_ms).min()
    }

    fn verdict(&self, params: &ConcurrencyParams, now_ms: u64, allowed: bool) -> Verdict {
        Verdict {
            allowed,
            limit: params.limit,
            remaining: params.limit.saturating_sub(self.held()),
            reset_after_ms: self
                .next_expiry_ms()
                .map_or(0, |at| at.saturating_sub(now_ms)),
            retry_after_ms: 0,
        }
    }

    /// Until enough leases expire for one more to fit, if none is renewed or released.
    fn slot_frees_after(&self, params: &ConcurrencyParams, now_ms: u64) -> u64 {
        let mut expiries: Vec<u64> = self.leases.iter().map(|l| l.expires_at_ms).collect();
        expiries.sort_unstable();
        // `held - limit + 1` leases must go; the last of them to expire decides.
        let must_go = (self.held() + 1).saturating_sub(params.limit).max(1);
        let index = usize::try_from(must_go - 1).unwrap_or(usize::MAX);
        expiries
            .get(index)
            .map_or(1, |at| at.saturating_sub(now_ms).max(1))
    }
}

fn grant(id: &str, expires_at_ms: u64) -> LeaseGrant {
    LeaseGrant {
        lease_id: id.to_owned(),
        expires_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    const T0: u64 = 1_700_000_000_000;
    const TWO: ConcurrencyParams = ConcurrencyParams {
        limit: 2,
        lease_ttl_ms: 10_000,
    };

    #[test]
    fn ids_are_checked() {
        for good in ["CA0123456789abcdef0123456789abcdef", "9b2f-11ee:call.1_x"] {
            assert!(is_valid_lease_id(good), "{good}");
        }
        for bad in ["", "a b", "a/b", "é", &"a".repeat(MAX_LEASE_ID_LEN + 1)] {
            assert!(!is_valid_lease_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_cap_holds_and_a_release_frees_a_slot() {
        let mut leases = Leases::default();
        let (v, grant) = leases.acquire(&TWO, "a", T0, true);
        assert!(v.allowed);
        assert_eq!(v.remaining, 1);
        assert_eq!(grant.map(|g| g.expires_at_ms), Some(T0 + 10_000));
        assert!(leases.acquire(&TWO, "b", T0 + 1_000, true).0.allowed);
        // Exactly at the cap.
        let (refused, none) = leases.acquire(&TWO, "c", T0 + 2_000, true);
        assert!(!refused.allowed);
        assert_eq!(none, None);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after_ms, 8_000, "until a's lease expires");
        assert!(leases.release("a", T0 + 3_000));
        assert!(!leases.release("a", T0 + 3_000), "released twice");
        assert!(leases.acquire(&TWO, "c", T0 + 3_000, true).0.allowed);
        assert_eq!(leases.held(), 2);
    }

    #[test]
    fn acquiring_a_held_id_renews_instead_of_counting_twice() {
        let mut leases = Leases::default();
        leases.acquire(&TWO, "a", T0, true);
        let (v, grant) = leases.acquire(&TWO, "a", T0 + 5_000, true);
        assert!(v.allowed);
        assert_eq!(v.remaining, 1);
        assert_eq!(leases.held(), 1);
        assert_eq!(grant.map(|g| g.expires_at_ms), Some(T0 + 15_000));
    }

    #[test]
    fn an_expired_lease_is_reclaimed_and_cannot_be_renewed() {
        let mut leases = Leases::default();
        leases.acquire(&TWO, "a", T0, true);
        leases.acquire(&TWO, "b", T0 + 5_000, true);
        assert_eq!(leases.next_expiry_ms(), Some(T0 + 10_000));
        assert!(!leases.is_idle(T0 + 10_000));
        // The call behind "a" vanished: at its expiry its slot is free again.
        assert!(leases.acquire(&TWO, "c", T0 + 10_000, true).0.allowed);
        assert_eq!(
            leases.renew(&TWO, "a", T0 + 10_001),
            Err(LeaseError::NotHeld("a".into()))
        );
        let (v, grant) = leases.renew(&TWO, "b", T0 + 12_000).expect("b is live");
        assert_eq!(grant.expires_at_ms, T0 + 22_000);
        assert_eq!(v.remaining, 0);
        assert_eq!(leases.reclaim(T0 + 30_000), 2);
        assert!(leases.is_idle(T0 + 30_000));
    }

    #[test]
    fn shadow_mode_records_the_lease_past_the_cap_but_reports_the_excess() {
        let mut leases = Leases::default();
        leases.acquire(&TWO, "a", T0, true);
        leases.acquire(&TWO, "b", T0, true);
        let (v, grant) = leases.acquire(&TWO, "c", T0, false);
        assert!(!v.allowed, "the verdict says it would refuse");
        assert_eq!(v.retry_after_ms, 10_000);
        assert!(grant.is_some());
        assert_eq!(leases.held(), 3);
        assert_eq!(v.remaining, 0);
    }

    #[test]
    fn a_lowered_cap_waits_for_enough_leases_to_go() {
        let mut leases = Leases::default();
        let five = ConcurrencyParams {
            limit: 5,
            lease_ttl_ms: 10_000,
        };
        for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            leases.acquire(&five, id, T0 + i as u64 * 1_000, true);
        }
        // Cap lowered to 2 with 4 held: 3 must go, the third expires at T0 + 12_000.
        let (v, _) = leases.acquire(&TWO, "e", T0 + 4_000, true);
        assert!(!v.allowed);
        assert_eq!(v.retry_after_ms, 8_000);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(u8),
        Renew(u8),
        Release(u8),
        Reclaim,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..8).prop_map(Op::Acquire),
            (0u8..8).prop_map(Op::Renew),
            (0u8..8).prop_map(Op::Release),
            Just(Op::Reclaim),
        ]
    }

    proptest! {
        /// Against a plain model of live calls: the cap is never exceeded, expired leases never
        /// count, and every answer matches the model.
        #[test]
        fn leases_match_a_model_and_never_exceed_the_cap(
            limit in 1u64..5,
            ttl in 1_000u64..5_000,
            ops in prop::collection::vec((0u64..2_000, op()), 1..150),
        ) {
            let params = ConcurrencyParams { limit, lease_ttl_ms: ttl };
            let mut leases = Leases::default();
            let mut model: HashMap<String, u64> = HashMap::new();
            let mut now = T0;
            for (step, op) in ops {
                now += step;
                model.retain(|_, expires| *expires > now);
                match op {
                    Op::Acquire(id) => {
                        let id = id.to_string();
                        let fits = model.contains_key(&id) || (model.len() as u64) < limit;
                        let (v, grant) = leases.acquire(&params, &id, now, true);
                        prop_assert_eq!(v.allowed, fits);
                        prop_assert_eq!(grant.is_some(), fits);
                        if fits {
                            model.insert(id, now + ttl);
                        } else {
                            prop_assert!(v.retry_after_ms >= 1);
                            // Waiting the hint frees a slot if nothing is renewed.
                            let soonest = model.values().min().copied().unwrap_or(now);
                            prop_assert_eq!(now + v.retry_after_ms, soonest);
                        }
                    }
                    Op::Renew(id) => {
                        let id = id.to_string();
                        let held = model.contains_key(&id);
                        prop_assert_eq!(leases.renew(&params, &id, now).is_ok(), held);
                        if held {
                            model.insert(id, now + ttl);
                        }
                    }
                    Op::Release(id) => {
                        let id = id.to_string();
                        prop_assert_eq!(leases.release(&id, now), model.remove(&id).is_some());
                    }
                    Op::Reclaim => {
                        leases.reclaim(now);
                        prop_assert!(leases.leases.iter().all(|l| l.expires_at_ms > now));
                        prop_assert_eq!(leases.held(), model.len() as u64);
                    }
                }
                prop_assert!(leases.held() <= limit);
            }
        }
    }
}
