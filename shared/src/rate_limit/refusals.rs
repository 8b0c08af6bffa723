//! An isolate's memory of recent refusals, so a flood on one key is refused at the edge instead
//! of queueing at its Durable Object (which serves roughly a thousand requests a second).
//!
//! Sound by construction: the memory only ever refuses, and only while the object would refuse
//! too. A refusal of `cost` units with `retry_after_ms` means no request of at least that cost
//! fits before then, whatever else happens meanwhile: admissions elsewhere only use more of the
//! limit, and GCRA and the window free capacity on a fixed schedule. The memory lasts
//! `retry_after_ms` from when the request was *sent*, on the isolate's own clock, while the
//! refusal lasts as long from when the object decided, which is later: the memory lapses first
//! (the object then decides again), whatever the skew between the two machines' clocks, since
//! only a duration crosses between them. Only enforced refusals of a rate limit are remembered:
//! not shadow or degraded decisions, not leases (a release frees a slot at any moment), not a
//! policy that has since changed.

use std::collections::HashMap;

use super::decision::Decision;
use super::policy::Policy;

/// Most refusals one isolate remembers.
pub const MAX_REMEMBERED: usize = 10_000;

#[derive(Debug, Clone)]
struct Remembered {
    policy: Policy,
    cost: u64,
    until_ms: u64,
    reset_at_ms: u64,
    decision: Decision,
}

/// Refusals by Durable Object instance name.
#[derive(Debug, Clone, Default)]
pub struct RefusalCache {
    entries: HashMap<String, Remembered>,
}

impl RefusalCache {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// The refusal to repeat for `cost` units of `object` under `policy` at `now_ms`, if one is
    /// still in force; its waits count down from when it was decided.
    pub fn recall(
        &self,
        object: &str,
        policy: &Policy,
        cost: u64,
        now_ms: u64,
    ) -> Option<Decision> {
        let entry = self.entries.get(object)?;
        if cost == 0 || cost < entry.cost || entry.policy != *policy || now_ms >= entry.until_ms {
            return None;
        }
        let retry_after_ms = entry.until_ms - now_ms;
        Some(Decision {
            retry_after_ms,
            reset_after_ms: entry.reset_at_ms.saturating_sub(now_ms).max(retry_after_ms),
            ..entry.decision.clone()
        })
    }

    /// Remembers `decision`, made for `cost` units of `object` under `policy` by a request sent
    /// at `sent_at_ms`, if it is a refusal worth repeating.
    pub fn remember(
        &mut self,
        object: &str,
        policy: &Policy,
        cost: u64,
        decision: &Decision,
        sent_at_ms: u64,
    ) {
        let repeatable = !decision.allowed
            && !decision.degraded
            && !decision.shadow
            && !policy.shadow
            && !policy.limit.is_concurrency()
            && cost > 0
            && decision.retry_after_ms > 0;
        if !repeatable {
            return;
        }
        let entry = Remembered {
            policy: *policy,
            cost,
            until_ms: sent_at_ms.saturating_add(decision.retry_after_ms),
            reset_at_ms: sent_at_ms.saturating_add(decision.reset_after_ms),
            decision: decision.clone(),
        };
        if self.entries.len() >= MAX_REMEMBERED && !self.entries.contains_key(object) {
            self.entries.retain(|_, kept| kept.until_ms > sent_at_ms);
            if self.entries.len() >= MAX_REMEMBERED {
                self.entries.clear();
            }
        }
        // A refusal of a smaller cost covers more requests; keep it while it lasts.
        match self.entries.get(object) {
            Some(kept)
                if kept.cost < cost && kept.policy == *policy && kept.until_ms > sent_at_ms => {}
            _ => {
                self.entries.insert(object.to_owned(), entry);
            }
        }
    }

    /// How many refusals are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::rate_limit::object::{self, ObjectReply, ObjectRequest, Op};
    use crate::rate_limit::policy::{
        ConcurrencyParams, FailureMode, GcraParams, Limit, PolicyName, WindowParams,
    };

    const T0: u64 = 1_700_000_000_000;

    fn policy(limit: Limit) -> Policy {
        Policy {
            limit,
            shadow: false,
            failure_mode: FailureMode::Open,
        }
    }

    fn window() -> Policy {
        policy(Limit::SlidingWindow(WindowParams {
            limit: 2,
            window_ms: 1_000,
            precision_ms: 1,
        }))
    }

    fn refusal(retry_after_ms: u64) -> Decision {
        Decision {
            allowed: false,
            limit: 2,
            remaining: 0,
            reset_after_ms: 1_000,
            retry_after_ms,
            policy: "ip".into(),
            shadow: false,
            degraded: false,
            window_ms: Some(1_000),
        }
    }

    #[test]
    fn a_refusal_is_repeated_until_it_lapses_counting_down() {
        let mut cache = RefusalCache::new();
        cache.remember("obj", &window(), 1, &refusal(400), T0);
        let repeated = cache
            .recall("obj", &window(), 1, T0 + 100)
            .expect("in force");
        assert_eq!(repeated.retry_after_ms, 300);
        assert_eq!(repeated.reset_after_ms, 900);
        assert!(!repeated.allowed);
        assert!(
            cache.recall("obj", &window(), 5, T0 + 399).is_some(),
            "a bigger cost too"
        );
        assert_eq!(cache.recall("obj", &window(), 1, T0 + 400), None, "lapsed");
        assert_eq!(cache.recall("other", &window(), 1, T0 + 100), None);
    }

    #[test]
    fn only_what_the_object_would_refuse_too_is_repeated() {
        let mut cache = RefusalCache::new();
        cache.remember("obj", &window(), 2, &refusal(400), T0);
        assert_eq!(
            cache.recall("obj", &window(), 1, T0),
            None,
            "a smaller cost may fit"
        );
        assert_eq!(
            cache.recall("obj", &window(), 0, T0),
            None,
            "a read never refuses"
        );
        let mut changed = window();
        changed.failure_mode = FailureMode::Closed;
        assert_eq!(
            cache.recall("obj", &changed, 2, T0),
            None,
            "the policy changed"
        );
    }

    #[test]
    fn shadow_degraded_allowed_and_lease_decisions_are_not_remembered() {
        let mut cache = RefusalCache::new();
        let mut shadow = refusal(400);
        shadow.shadow = true;
        shadow.allowed = true;
        let mut degraded = refusal(1_000);
        degraded.degraded = true;
        let mut allowed = refusal(0);
        allowed.allowed = true;
        for decision in [shadow, degraded, allowed] {
            cache.remember("obj", &window(), 1, &decision, T0);
        }
        let calls = policy(Limit::Concurrency(ConcurrencyParams {
            limit: 1,
            lease_ttl_ms: 60_000,
        }));
        cache.remember("calls", &calls, 1, &refusal(5_000), T0);
        let mut shadow_policy = window();
        shadow_policy.shadow = true;
        cache.remember("s", &shadow_policy, 1, &refusal(5_000), T0);
        assert!(cache.is_empty());
    }

    #[test]
    fn the_smaller_cost_refusal_is_kept_and_memory_is_bounded() {
        let mut cache = RefusalCache::new();
        cache.remember("obj", &window(), 1, &refusal(400), T0);
        cache.remember("obj", &window(), 2, &refusal(900), T0 + 1);
        assert_eq!(
            cache
                .recall("obj", &window(), 1, T0 + 10)
                .map(|d| d.retry_after_ms),
            Some(390)
        );
        for i in 0..MAX_REMEMBERED + 10 {
            cache.remember(&format!("k{i}"), &window(), 1, &refusal(400), T0);
        }
        assert!(cache.len() <= MAX_REMEMBERED);
    }

    /// Runs a schedule through the object's state machine with the isolate's memory in front
    /// (`with_cache`) or without; returns each request's verdict.
    fn verdicts(limit: Limit, schedule: &[(u64, u64)], with_cache: bool) -> Vec<bool> {
        let name = PolicyName::parse("p").expect("valid");
        let policy = policy(limit);
        let mut cache = RefusalCache::new();
        let mut stored = None;
        let mut now = T0;
        let mut out = Vec::new();
        for (step, cost) in schedule {
            now += step;
            if with_cache && let Some(repeated) = cache.recall("obj", &policy, *cost, now) {
                out.push(repeated.allowed);
                continue;
            }
            let request = ObjectRequest {
                policy_name: name.clone(),
                policy,
                op: Op::Check { cost: *cost },
            };
            let (transition, reply) = object::apply(stored, &request, now).expect("applies");
            stored = transition.stored;
            let ObjectReply::Decided { decision, .. } = reply else {
                panic!("a check is decided");
            };
            cache.remember("obj", &policy, *cost, &decision, now);
            out.push(decision.allowed);
        }
        out
    }

    proptest! {
        /// With one clock, the memory changes no verdict: it repeats only refusals the object
        /// would have made, so admissions (and thus exactness) are the object's own.
        #[test]
        fn the_memory_changes_no_verdict(
            gcra in any::<bool>(),
            limit in 1u64..10,
            period_ms in 1u64..2_000,
            schedule in prop::collection::vec((0u64..300, 0u64..4), 1..200),
        ) {
            let limit_kind = if gcra {
                Limit::Gcra(GcraParams { rate: limit, period_ms, burst: limit })
            } else {
                Limit::SlidingWindow(WindowParams {
                    limit,
                    window_ms: period_ms,
                    precision_ms: (period_ms / 7).max(1),
                })
            };
            let schedule: Vec<(u64, u64)> = schedule.into_iter().map(|(s, c)| (s, c.min(limit))).collect();
            prop_assert_eq!(
                verdicts(limit_kind, &schedule, true),
                verdicts(limit_kind, &schedule, false)
            );
        }
    }
}
