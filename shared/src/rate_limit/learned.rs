//! What an isolate that sends checks straight to the `RateLimiter` objects knows of their
//! policies (`super::object`, "Checks sent straight to the object").
//!
//! Such an isolate does not read rate-limiter's KV: the object resolves the policy and says
//! which one it applied. The isolate keeps the latest one per policy name and scope, because
//! it needs a policy before the object answers, or when it does not:
//! - to repeat a remembered refusal only while the policy is the one that refused
//!   (`super::refusals`);
//! - to fail open or closed, as the policy says, when the object cannot be asked.
//!
//! Until an object has answered for a scope, the built-in policy of that name stands in. So a
//! KV override of a failure mode applies to the first checks of a new isolate only once an
//! object has answered one of them: the object itself always applies the override.

use std::collections::HashMap;

use super::api::Scope;
use super::policy::{Policy, PolicyName, ScopeId, builtin};

/// Most (policy, scope) pairs one isolate keeps; past that it starts again.
pub const MAX_LEARNED: usize = 1_024;

type ScopeKey = (PolicyName, Option<ScopeId>, Option<ScopeId>);

/// The policies the objects last applied, by name and scope.
#[derive(Debug, Clone, Default)]
pub struct LearnedPolicies {
    entries: HashMap<ScopeKey, Policy>,
}

impl LearnedPolicies {
    /// Nothing learned yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The policy an object last applied under `name` for `scope`, or the built-in one; `None`
    /// for a name that is neither learned nor built in.
    pub fn policy(&self, name: &PolicyName, scope: &Scope) -> Option<Policy> {
        self.entries
            .get(&key(name, scope))
            .copied()
            .or_else(|| builtin(name))
    }

    /// Records that an object applied `policy` under `name` for `scope`.
    pub fn learn(&mut self, name: &PolicyName, scope: &Scope, policy: Policy) {
        let key = key(name, scope);
        if self.entries.len() >= MAX_LEARNED && !self.entries.contains_key(&key) {
            self.entries.clear();
        }
        self.entries.insert(key, policy);
    }

    /// How many pairs are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn key(name: &PolicyName, scope: &Scope) -> ScopeKey {
    (name.clone(), scope.tenant.clone(), scope.plan.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::policy::{FailureMode, GcraParams, Limit, PRINCIPAL};

    fn name(text: &str) -> PolicyName {
        PolicyName::parse(text).expect("valid name")
    }

    fn scope(tenant: Option<&str>, plan: Option<&str>) -> Scope {
        let id = |text: &str| ScopeId::parse(text).expect("valid id");
        Scope {
            tenant: tenant.map(id),
            plan: plan.map(id),
        }
    }

    fn closed(rate: u64) -> Policy {
        Policy {
            limit: Limit::Gcra(GcraParams {
                rate,
                period_ms: 1_000,
                burst: rate,
            }),
            shadow: false,
            failure_mode: FailureMode::Closed,
        }
    }

    #[test]
    fn before_any_answer_the_builtin_policy_stands_in() {
        let learned = LearnedPolicies::new();
        let principal = name(PRINCIPAL);
        assert_eq!(
            learned.policy(&principal, &scope(Some("t1"), Some("pro"))),
            builtin(&principal)
        );
        assert_eq!(learned.policy(&name("custom"), &Scope::default()), None);
    }

    #[test]
    fn the_latest_answer_wins_for_its_own_scope_only() {
        let mut learned = LearnedPolicies::new();
        let principal = name(PRINCIPAL);
        let t1 = scope(Some("t1"), Some("pro"));
        learned.learn(&principal, &t1, closed(5));
        learned.learn(&principal, &t1, closed(7));
        assert_eq!(learned.policy(&principal, &t1), Some(closed(7)));
        assert_eq!(
            learned.policy(&principal, &scope(Some("t2"), Some("pro"))),
            builtin(&principal),
            "another tenant's override is not this one's"
        );
        assert_eq!(
            learned.policy(&principal, &scope(Some("t1"), Some("free"))),
            builtin(&principal),
            "the plan is part of the scope"
        );
        learned.learn(&name("custom"), &Scope::default(), closed(3));
        assert_eq!(
            learned.policy(&name("custom"), &Scope::default()),
            Some(closed(3))
        );
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut learned = LearnedPolicies::new();
        let principal = name(PRINCIPAL);
        for tenant in 0..MAX_LEARNED {
            learned.learn(
                &principal,
                &scope(Some(&format!("t{tenant}")), None),
                closed(1),
            );
        }
        assert_eq!(learned.len(), MAX_LEARNED);
        learned.learn(&principal, &scope(Some("t0"), None), closed(2));
        assert_eq!(
            learned.len(),
            MAX_LEARNED,
            "a known pair is replaced in place"
        );
        learned.learn(&principal, &scope(Some("new"), None), closed(2));
        assert_eq!(learned.len(), 1, "a new pair past the bound starts again");
        assert_eq!(
            learned.policy(&principal, &scope(Some("new"), None)),
            Some(closed(2))
        );
    }
}
