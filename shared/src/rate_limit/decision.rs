//! What a limiter answers: an algorithm's [`Verdict`], dressed by its policy as a [`Decision`].

use serde::{Deserialize, Serialize};

use super::policy::{Policy, PolicyName};

/// What a caller refused while the limiter is unreachable (fail closed) is told to wait.
pub const DEGRADED_RETRY_AFTER_MS: u64 = 1_000;

/// An algorithm's answer, before the policy's shadow mode is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request fits the limit.
    pub allowed: bool,
    /// The capacity: burst, window quota or concurrent leases.
    pub limit: u64,
    /// Capacity left after this request.
    pub remaining: u64,
    /// Until the whole capacity is back if nothing more is taken.
    pub reset_after_ms: u64,
    /// Until this request would fit; 0 when allowed, at least 1 when not.
    pub retry_after_ms: u64,
}

/// The answer for one check or lease operation: what voice-router enforces and turns into headers.
///
/// `retry_after_ms > 0` exactly when the limit was exceeded. `allowed` is the verdict to enforce:
/// in shadow mode it is always `true`, and `retry_after_ms > 0` tells that the policy would have
/// denied. A `degraded` decision was made without the limiter (unreachable or failing): its
/// counts are unknown (0) and `allowed` follows the policy's failure mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// May the request proceed.
    pub allowed: bool,
    /// The policy's capacity (`q` of `RateLimit-Policy`).
    pub limit: u64,
    /// Capacity left (`r` of `RateLimit`).
    pub remaining: u64,
    /// Until the whole capacity is back if nothing more is taken.
    pub reset_after_ms: u64,
    /// Until a refused request would fit; 0 when the limit was not exceeded.
    pub retry_after_ms: u64,
    /// The policy's name, e.g. `ip`.
    pub policy: String,
    /// The policy only observes: it never denies.
    pub shadow: bool,
    /// Decided without the limiter, by the policy's failure mode.
    pub degraded: bool,
    /// The policy's window (`w` of `RateLimit-Policy`); absent for a concurrency limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
}

impl Decision {
    /// The decision for an algorithm's verdict under `policy`.
    pub fn decided(name: &PolicyName, policy: &Policy, verdict: Verdict) -> Self {
        Self {
            allowed: verdict.allowed || policy.shadow,
            limit: verdict.limit,
            remaining: verdict.remaining,
            reset_after_ms: verdict.reset_after_ms,
            retry_after_ms: verdict.retry_after_ms,
            policy: name.as_str().to_owned(),
            shadow: policy.shadow,
            degraded: false,
            window_ms: policy.limit.window_ms(),
        }
    }

    /// The decision when the limiter could not decide: the failure mode applies, shadow never denies.
    pub fn degraded(name: &PolicyName, policy: &Policy) -> Self {
        let open = policy.fails_open();
        Self {
            allowed: open,
            limit: policy.limit.capacity(),
            remaining: 0,
            reset_after_ms: 0,
            retry_after_ms: if open { 0 } else { DEGRADED_RETRY_AFTER_MS },
            policy: name.as_str().to_owned(),
            shadow: policy.shadow,
            degraded: true,
            window_ms: policy.limit.window_ms(),
        }
    }

    /// Whether the limit was exceeded (refused, or would have been in shadow mode).
    pub fn exceeded(&self) -> bool {
        !self.allowed || self.retry_after_ms > 0
    }

    /// Whether this decision is enforced and its counts are known, so clients may see them.
    pub fn is_advertised(&self) -> bool {
        !self.shadow && !self.degraded
    }
}

/// Whether a request may proceed: every one of its decisions allows it.
pub fn all_allowed(decisions: &[Decision]) -> bool {
    decisions.iter().all(|decision| decision.allowed)
}

/// The decision a single set of headers should describe: among advertised decisions, the refusal
/// with the longest wait, else the one with the least capacity left (the first on ties).
pub fn governing(decisions: &[Decision]) -> Option<&Decision> {
    let advertised = decisions.iter().filter(|d| d.is_advertised());
    let refused = advertised.clone().filter(|d| !d.allowed).reduce(|a, b| {
        if b.retry_after_ms > a.retry_after_ms {
            b
        } else {
            a
        }
    });
    refused.or_else(|| advertised.reduce(|a, b| if b.remaining < a.remaining { b } else { a }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::policy::{FailureMode, Limit, WindowParams};

    fn policy(shadow: bool, failure_mode: FailureMode) -> Policy {
        Policy {
            limit: Limit::SlidingWindow(WindowParams {
                limit: 10,
                window_ms: 60_000,
                precision_ms: 1_000,
            }),
            shadow,
            failure_mode,
        }
    }

    fn name() -> PolicyName {
        PolicyName::parse("ip").expect("valid")
    }

    fn refused(retry_after_ms: u64) -> Verdict {
        Verdict {
            allowed: false,
            limit: 10,
            remaining: 0,
            reset_after_ms: 60_000,
            retry_after_ms,
        }
    }

    #[test]
    fn shadow_mode_never_denies_but_tells_it_would_have() {
        let decision = Decision::decided(&name(), &policy(true, FailureMode::Open), refused(500));
        assert!(decision.allowed);
        assert!(decision.shadow);
        assert!(decision.exceeded());
        assert_eq!(decision.retry_after_ms, 500);
    }

    #[test]
    fn enforced_refusal_stays_refused() {
        let decision = Decision::decided(&name(), &policy(false, FailureMode::Open), refused(500));
        assert!(!decision.allowed);
        assert!(decision.exceeded());
        assert_eq!(decision.window_ms, Some(60_000));
    }

    #[test]
    fn degraded_follows_the_failure_mode_and_shadow_wins() {
        let cases = [
            (false, FailureMode::Open, true, 0),
            (false, FailureMode::Closed, false, DEGRADED_RETRY_AFTER_MS),
            (true, FailureMode::Closed, true, 0),
        ];
        for (shadow, mode, allowed, retry) in cases {
            let decision = Decision::degraded(&name(), &policy(shadow, mode));
            assert!(decision.degraded);
            assert_eq!(decision.allowed, allowed, "{shadow} {mode:?}");
            assert_eq!(decision.retry_after_ms, retry, "{shadow} {mode:?}");
            assert_eq!(decision.remaining, 0);
            assert_eq!(decision.limit, 10);
        }
    }

    #[test]
    fn serialises_to_the_documented_shape() {
        let decision = Decision::decided(&name(), &policy(false, FailureMode::Open), refused(1));
        assert_eq!(
            serde_json::to_value(&decision).expect("serialises"),
            serde_json::json!({"allowed":false,"limit":10,"remaining":0,"reset_after_ms":60000,
                "retry_after_ms":1,"policy":"ip","shadow":false,"degraded":false,"window_ms":60000})
        );
    }

    fn decision(policy: &str, allowed: bool, remaining: u64, retry: u64) -> Decision {
        Decision {
            allowed,
            limit: 100,
            remaining,
            reset_after_ms: 0,
            retry_after_ms: retry,
            policy: policy.into(),
            shadow: false,
            degraded: false,
            window_ms: Some(60_000),
        }
    }

    #[test]
    fn governing_prefers_the_longest_refusal_then_the_least_remaining() {
        let all = [
            decision("a", true, 5, 0),
            decision("b", false, 0, 300),
            decision("c", false, 0, 900),
        ];
        assert_eq!(governing(&all).map(|d| d.policy.as_str()), Some("c"));
        let allowed = [
            decision("a", true, 50, 0),
            decision("b", true, 3, 0),
            decision("c", true, 3, 0),
        ];
        assert_eq!(governing(&allowed).map(|d| d.policy.as_str()), Some("b"));
        assert!(all_allowed(&allowed));
        assert!(!all_allowed(&all));
    }

    #[test]
    fn governing_ignores_shadow_and_degraded_decisions() {
        let mut shadow = decision("s", true, 0, 700);
        shadow.shadow = true;
        let mut degraded = decision("d", false, 0, 1_000);
        degraded.degraded = true;
        assert_eq!(governing(&[shadow.clone(), degraded.clone()]), None);
        let enforced = decision("e", true, 9, 0);
        assert_eq!(
            governing(&[shadow, degraded, enforced]).map(|d| d.policy.as_str()),
            Some("e")
        );
    }
}
