//! The `RateLimiter` Durable Object's protocol and state machine. The Worker resolves the policy
//! and sends an [`ObjectRequest`]; the object loads its [`Stored`] state, calls [`apply`] with
//! its clock, stores (or deletes) what comes back, schedules an alarm at `wake_at_ms` and
//! answers the [`ObjectReply`]. Its alarm calls [`on_alarm`], which reclaims expired leases and
//! forgets state that no longer limits anything.
//!
//! # Checks sent straight to the object
//!
//! A Worker that binds the `RateLimiter` namespace itself (voice-router, saving the hop through
//! rate-limiter) names the object as rate-limiter does (`super::key`, the same secret) and
//! posts one [`super::api::Check`] to [`CHECK_URL`]. The object resolves the policy from
//! rate-limiter's own KV, so policies have one owner, checks that the name is the HMAC of that
//! policy and key (a caller with another secret would split the limit silently), and answers a
//! [`CheckedReply`]: the decision and the policy it applied, which the caller needs to remember
//! refusals and to fail as the policy says when the object does not answer
//! (`super::learned`). Errors are rate-limiter's JSON errors, with its codes.

use serde::{Deserialize, Serialize};

use super::decision::Decision;
use super::gcra::{Gcra, GcraError};
use super::lease::{LeaseGrant, Leases};
use super::policy::{Limit, Policy, PolicyName};
use super::window::{SlidingWindow, WindowError};

/// Rate state that has gone idle is deleted by the alarm, checked at most this often per key.
pub const FORGET_IDLE_AFTER_MS: u64 = 60_000;

/// What the Worker asks of one key's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRequest {
    /// The policy's name, reported in the decision.
    pub policy_name: PolicyName,
    /// The policy that applies, as resolved by the Worker.
    pub policy: Policy,
    /// The operation.
    pub op: Op,
}

/// The URL of a check sent straight to the object (see the module documentation).
pub const CHECK_URL: &str = "https://rate-limiter.object/check";
/// Its path.
pub const CHECK_PATH: &str = "/check";

/// The object's answer to a check sent straight to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckedReply {
    /// The decision.
    pub decision: Decision,
    /// The policy the object resolved and applied.
    pub policy: Policy,
}

/// One operation on a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Take `cost` units of a rate limit (0 reads without taking).
    Check {
        /// Units to take.
        cost: u64,
    },
    /// Acquire a concurrency lease (renews it when already held).
    Acquire {
        /// The call id.
        lease_id: String,
    },
    /// Extend a live lease.
    Renew {
        /// The call id.
        lease_id: String,
    },
    /// End a lease.
    Release {
        /// The call id.
        lease_id: String,
    },
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Check { .. } => "check",
            Op::Acquire { .. } => "acquire",
            Op::Renew { .. } => "renew",
            Op::Release { .. } => "release",
        }
    }
}

/// What the object answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ObjectReply {
    /// A check or an acquisition/renewal was decided.
    Decided {
        /// The decision.
        decision: Decision,
        /// The lease held after an acquisition or renewal, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<LeaseGrant>,
    },
    /// A renewal named a lease that is not live.
    NotHeld,
    /// A release was done.
    Released {
        /// Whether the lease was live until now.
        released: bool,
    },
}

/// Why the object could not apply an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// A rate check on a concurrency policy, or a lease operation on a rate policy.
    #[error("{op} does not apply to policy {policy}")]
    WrongKind {
        /// The policy.
        policy: String,
        /// The operation.
        op: &'static str,
    },
    /// GCRA refused the cost.
    #[error(transparent)]
    Gcra(#[from] GcraError),
    /// The window refused the cost.
    #[error(transparent)]
    Window(#[from] WindowError),
}

/// One key's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The latest time the object has seen: its clock never runs backwards, so a clock that
    /// jumps back cannot make old usage look older.
    pub clock_ms: u64,
    /// The algorithm's state.
    pub state: LimiterState,
}

/// The state of whichever algorithm the key's policy uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LimiterState {
    /// GCRA.
    Gcra(Gcra),
    /// Sliding window.
    Window(SlidingWindow),
    /// Concurrency leases.
    Leases(Leases),
}

impl LimiterState {
    fn fresh(limit: &Limit) -> Self {
        match limit {
            Limit::Gcra(_) => LimiterState::Gcra(Gcra::default()),
            Limit::SlidingWindow(_) => LimiterState::Window(SlidingWindow::default()),
            Limit::Concurrency(_) => LimiterState::Leases(Leases::default()),
        }
    }

    fn suits(&self, limit: &Limit) -> bool {
        matches!(
            (self, limit),
            (LimiterState::Gcra(_), Limit::Gcra(_))
                | (LimiterState::Window(_), Limit::SlidingWindow(_))
                | (LimiterState::Leases(_), Limit::Concurrency(_))
        )
    }

    fn is_idle(&self, now_ms: u64) -> bool {
        match self {
            LimiterState::Gcra(gcra) => gcra.is_idle(now_ms),
            LimiterState::Window(window) => window.is_idle(now_ms),
            LimiterState::Leases(leases) => leases.is_idle(now_ms),
        }
    }

    /// When the object should next look at this state: leases when the first one expires (a
    /// vanished call's slot comes back on time), rate state once it is idle but not before
    /// [`FORGET_IDLE_AFTER_MS`] from now (so a key used every few seconds costs at most one
    /// alarm a minute instead of one per request).
    fn wake_at_ms(&self, clock_ms: u64) -> u64 {
        let not_before = clock_ms.saturating_add(FORGET_IDLE_AFTER_MS);
        match self {
            LimiterState::Gcra(gcra) => gcra.idle_at_ms().max(not_before),
            LimiterState::Window(window) => window.idle_at_ms().max(not_before),
            LimiterState::Leases(leases) => leases.next_expiry_ms().unwrap_or(clock_ms),
        }
    }
}

/// An object's clock in memory: never runs backwards while the instance lives. Stored state
/// carries its own high-water mark ([`Stored::clock_ms`]); this one also covers a key whose idle
/// state was just forgotten, so a wall clock stepping back cannot re-admit what was forgotten.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    latest_ms: u64,
}

impl Clock {
    /// The time to decide with, given the wall clock now.
    pub fn observe(&mut self, wall_ms: u64) -> u64 {
        self.latest_ms = self.latest_ms.max(wall_ms);
        self.latest_ms
    }
}

/// The outcome of an operation or an alarm: what to store and when to wake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state to keep; `None` to delete it (nothing limits the key any more).
    pub stored: Option<Stored>,
    /// When the object's alarm should fire next; `None` for no alarm.
    pub wake_at_ms: Option<u64>,
}

impl Transition {
    fn keep(clock_ms: u64, state: LimiterState) -> Self {
        if state.is_idle(clock_ms) {
            return Self {
                stored: None,
                wake_at_ms: None,
            };
        }
        Self {
            wake_at_ms: Some(state.wake_at_ms(clock_ms)),
            stored: Some(Stored { clock_ms, state }),
        }
    }
}

/// Applies `request` to the key's state at `now_ms`. State of another algorithm than the
/// policy's (the policy changed kind) is replaced by a fresh one.
pub fn apply(
    stored: Option<Stored>,
    request: &ObjectRequest,
    now_ms: u64,
) -> Result<(Transition, ObjectReply), ObjectError> {
    let limit = &request.policy.limit;
    let (clock_ms, state) = match stored {
        Some(stored) => (stored.clock_ms.max(now_ms), stored.state),
        None => (now_ms, LimiterState::fresh(limit)),
    };
    let mut state = if state.suits(limit) {
        state
    } else {
        LimiterState::fresh(limit)
    };
    let decide = |verdict| Decision::decided(&request.policy_name, &request.policy, verdict);
    let reply = match (&mut state, limit, &request.op) {
        (LimiterState::Gcra(gcra), Limit::Gcra(params), Op::Check { cost }) => {
            ObjectReply::Decided {
                decision: decide(gcra.try_take(params, clock_ms, *cost)?),
                lease: None,
            }
        }
        (LimiterState::Window(window), Limit::SlidingWindow(params), Op::Check { cost }) => {
            ObjectReply::Decided {
                decision: decide(window.try_take(params, clock_ms, *cost)?),
                lease: None,
            }
        }
        (LimiterState::Leases(leases), Limit::Concurrency(params), Op::Acquire { lease_id }) => {
            let enforce = !request.policy.shadow;
            let (verdict, lease) = leases.acquire(params, lease_id, clock_ms, enforce);
            ObjectReply::Decided {
                decision: decide(verdict),
                lease,
            }
        }
        (LimiterState::Leases(leases), Limit::Concurrency(params), Op::Renew { lease_id }) => {
            match leases.renew(params, lease_id, clock_ms) {
                Ok((verdict, lease)) => ObjectReply::Decided {
                    decision: decide(verdict),
                    lease: Some(lease),
                },
                Err(_) => ObjectReply::NotHeld,
            }
        }
        (LimiterState::Leases(leases), Limit::Concurrency(_), Op::Release { lease_id }) => {
            ObjectReply::Released {
                released: leases.release(lease_id, clock_ms),
            }
        }
        _ => {
            return Err(ObjectError::WrongKind {
                policy: request.policy_name.as_str().to_owned(),
                op: request.op.name(),
            });
        }
    };
    Ok((Transition::keep(clock_ms, state), reply))
}

/// The alarm at `now_ms`: reclaims expired leases, forgets idle state, and says when to wake.
/// Also returns how many leases it reclaimed, for the log.
pub fn on_alarm(stored: Option<Stored>, now_ms: u64) -> (Transition, usize) {
    match stored {
        None => (
            Transition {
                stored: None,
                wake_at_ms: None,
            },
            0,
        ),
        Some(Stored {
            clock_ms,
            mut state,
        }) => {
            let clock_ms = clock_ms.max(now_ms);
            let reclaimed = match &mut state {
                LimiterState::Leases(leases) => leases.reclaim(clock_ms),
                LimiterState::Gcra(_) | LimiterState::Window(_) => 0,
            };
            (Transition::keep(clock_ms, state), reclaimed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::policy::{self, FailureMode, builtin};

    const T0: u64 = 1_700_000_000_000;

    fn request(name: &str, op: Op) -> ObjectRequest {
        let policy_name = PolicyName::parse(name).expect("valid");
        let policy = builtin(&policy_name).expect("built in");
        ObjectRequest {
            policy_name,
            policy,
            op,
        }
    }

    fn check(cost: u64) -> Op {
        Op::Check { cost }
    }

    fn decision(reply: &ObjectReply) -> &Decision {
        match reply {
            ObjectReply::Decided { decision, .. } => decision,
            other => panic!("expected a decision, got {other:?}"),
        }
    }

    /// Runs requests in order, carrying the stored state like the object does.
    fn run(steps: &[(u64, ObjectRequest)]) -> (Option<Stored>, Vec<ObjectReply>) {
        let mut stored = None;
        let mut replies = Vec::new();
        for (now, req) in steps {
            let (transition, reply) = apply(stored, req, *now).expect("applies");
            stored = transition.stored;
            replies.push(reply);
        }
        (stored, replies)
    }

    #[test]
    fn the_ip_seed_admits_exactly_100_a_minute() {
        let mut stored = None;
        let mut allowed = 0;
        for i in 0..150 {
            let (t, reply) =
                apply(stored, &request(policy::IP, check(1)), T0 + i).expect("applies");
            stored = t.stored;
            if decision(&reply).allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 100);
        let (_, reply) =
            apply(stored, &request(policy::IP, check(1)), T0 + 60_060).expect("applies");
        assert!(decision(&reply).allowed, "a minute (and a bucket) later");
    }

    #[test]
    fn decisions_carry_policy_name_and_window() {
        let (_, replies) = run(&[(T0, request(policy::PRINCIPAL, check(1)))]);
        let decision = decision(&replies[0]);
        assert_eq!(decision.policy, "principal");
        assert_eq!(decision.limit, 60);
        assert_eq!(decision.remaining, 59);
        assert_eq!(decision.window_ms, Some(60_000));
        assert!(!decision.degraded);
    }

    #[test]
    fn the_clock_never_runs_backwards_in_stored_state() {
        let (stored, _) = run(&[
            (T0 + 10_000, request(policy::PRINCIPAL, check(60))),
            (T0, request(policy::PRINCIPAL, check(1))),
        ]);
        let stored = stored.expect("kept");
        assert_eq!(stored.clock_ms, T0 + 10_000);
        // At the stored clock a unit frees after one second, not eleven.
        let (_, reply) =
            apply(Some(stored), &request(policy::PRINCIPAL, check(1)), T0).expect("applies");
        assert_eq!(decision(&reply).retry_after_ms, 1_000);
    }

    #[test]
    fn the_clock_in_memory_never_runs_backwards() {
        let mut clock = Clock::default();
        assert_eq!(clock.observe(T0 + 5), T0 + 5);
        assert_eq!(clock.observe(T0), T0 + 5);
        assert_eq!(clock.observe(T0 + 6), T0 + 6);
    }

    #[test]
    fn wrong_kind_is_an_error() {
        let err = apply(None, &request(policy::TENANT_CALLS, check(1)), T0).expect_err("refused");
        assert_eq!(
            err,
            ObjectError::WrongKind {
                policy: "tenant-calls".into(),
                op: "check"
            }
        );
        let acquire = Op::Acquire {
            lease_id: "c1".into(),
        };
        assert!(apply(None, &request(policy::IP, acquire), T0).is_err());
        assert!(matches!(
            apply(None, &request(policy::IP, check(101)), T0),
            Err(ObjectError::Window(WindowError::CostExceedsLimit {
                cost: 101,
                limit: 100
            }))
        ));
    }

    #[test]
    fn state_of_another_algorithm_is_replaced() {
        let (stored, _) = run(&[(T0, request(policy::PRINCIPAL, check(60)))]);
        // The key's policy is now a sliding window: the GCRA state does not carry over.
        let (t, reply) = apply(stored, &request(policy::IP, check(1)), T0).expect("applies");
        assert!(decision(&reply).allowed);
        assert!(matches!(
            t.stored.map(|s| s.state),
            Some(LimiterState::Window(_))
        ));
    }

    #[test]
    fn idle_state_is_not_kept_and_busy_state_wakes_when_idle() {
        let (t, _) = apply(None, &request(policy::PRINCIPAL, check(0)), T0).expect("applies");
        assert_eq!(
            t,
            Transition {
                stored: None,
                wake_at_ms: None
            },
            "a read stores nothing"
        );
        let (t, _) = apply(None, &request(policy::PRINCIPAL, check(2)), T0).expect("applies");
        assert_eq!(
            t.wake_at_ms,
            Some(T0 + FORGET_IDLE_AFTER_MS),
            "idle at T0 + 2 s, looked at later"
        );
        assert!(t.stored.is_some());
    }

    #[test]
    fn leases_through_the_object_and_the_alarm() {
        let acquire = |id: &str| {
            request(
                policy::TENANT_CALLS,
                Op::Acquire {
                    lease_id: id.into(),
                },
            )
        };
        let mut stored = None;
        for i in 0..10 {
            let (t, reply) =
                apply(stored, &acquire(&format!("call-{i}")), T0 + i).expect("applies");
            assert!(decision(&reply).allowed, "call {i}");
            assert_eq!(t.wake_at_ms, Some(T0 + 60_000), "the first lease's expiry");
            stored = t.stored;
        }
        let (t, reply) = apply(stored.clone(), &acquire("call-10"), T0 + 20).expect("applies");
        let refused = decision(&reply);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ms, 60_000 - 20);
        assert_eq!(
            t.stored.map(|s| s.state),
            stored.clone().map(|s| s.state),
            "a refusal changes no lease"
        );

        // Nine calls vanish; call-9 renews. An alarm after their expiries reclaims the nine.
        let renew = request(
            policy::TENANT_CALLS,
            Op::Renew {
                lease_id: "call-9".into(),
            },
        );
        let (t, reply) = apply(stored, &renew, T0 + 30_000).expect("applies");
        assert!(
            matches!(reply, ObjectReply::Decided { lease: Some(LeaseGrant { expires_at_ms, .. }), .. } if expires_at_ms == T0 + 90_000)
        );
        let (alarm, reclaimed) = on_alarm(t.stored, T0 + 60_010);
        assert_eq!(reclaimed, 9);
        let kept = alarm.stored.clone().expect("call-9 is live");
        assert!(matches!(&kept.state, LimiterState::Leases(l) if l.held() == 1));
        assert_eq!(alarm.wake_at_ms, Some(T0 + 90_000));

        let renew_gone = request(
            policy::TENANT_CALLS,
            Op::Renew {
                lease_id: "call-0".into(),
            },
        );
        let (_, reply) = apply(Some(kept.clone()), &renew_gone, T0 + 60_001).expect("applies");
        assert_eq!(reply, ObjectReply::NotHeld);

        let release = request(
            policy::TENANT_CALLS,
            Op::Release {
                lease_id: "call-9".into(),
            },
        );
        let (t, reply) = apply(Some(kept), &release, T0 + 61_000).expect("applies");
        assert_eq!(reply, ObjectReply::Released { released: true });
        assert_eq!(t.stored, None, "no live lease: nothing to keep");
    }

    #[test]
    fn the_alarm_forgets_idle_rate_state_and_keeps_busy_state() {
        // A whole window of use: idle only at T0 + 60 s + a bucket.
        let (busy, _) = run(&[(T0, request(policy::IP, check(5)))]);
        let (later, _) = on_alarm(busy, T0 + 30_000);
        assert_eq!(
            later.wake_at_ms,
            Some(T0 + 90_000),
            "not before a minute from now"
        );
        let (stored, _) = run(&[(T0, request(policy::PRINCIPAL, check(5)))]);
        let (early, _) = on_alarm(stored.clone(), T0 + 4_999);
        assert_eq!(
            early.stored,
            stored.clone().map(|s| Stored {
                clock_ms: T0 + 4_999,
                ..s
            })
        );
        assert_eq!(early.wake_at_ms, Some(T0 + 4_999 + FORGET_IDLE_AFTER_MS));
        let forgotten = Transition {
            stored: None,
            wake_at_ms: None,
        };
        assert_eq!(on_alarm(stored, T0 + 5_000), (forgotten.clone(), 0));
        assert_eq!(on_alarm(None, T0), (forgotten, 0));
    }

    #[test]
    fn shadow_leases_are_recorded_past_the_cap() {
        let name = PolicyName::parse("tenant-calls").expect("valid");
        let mut policy = builtin(&name).expect("built in");
        policy.shadow = true;
        policy.failure_mode = FailureMode::Closed;
        let mut stored = None;
        for i in 0..12 {
            let req = ObjectRequest {
                policy_name: name.clone(),
                policy,
                op: Op::Acquire {
                    lease_id: format!("c{i}"),
                },
            };
            let (t, reply) = apply(stored, &req, T0).expect("applies");
            let d = decision(&reply);
            assert!(d.allowed, "shadow never denies");
            assert_eq!(d.exceeded(), i >= 10, "call {i}");
            stored = t.stored;
        }
        assert!(matches!(stored.map(|s| s.state), Some(LimiterState::Leases(l)) if l.held() == 12));
    }

    #[test]
    fn wire_shapes_are_stable() {
        let req = request(
            policy::TENANT_CALLS,
            Op::Acquire {
                lease_id: "CA1".into(),
            },
        );
        assert_eq!(
            serde_json::to_value(&req).expect("serialises"),
            serde_json::json!({"policy_name":"tenant-calls",
                "policy":{"algorithm":"concurrency","limit":10,"lease_ttl_ms":60000,"shadow":false,"failure_mode":"open"},
                "op":{"type":"acquire","lease_id":"CA1"}})
        );
        let stored = Stored {
            clock_ms: 5,
            state: LimiterState::Leases(Leases {
                leases: vec![crate::rate_limit::lease::Lease {
                    id: "CA1".into(),
                    expires_at_ms: 9,
                }],
            }),
        };
        let text = serde_json::to_string(&stored).expect("serialises");
        assert_eq!(
            text,
            r#"{"clock_ms":5,"state":{"kind":"leases","leases":[{"id":"CA1","expires_at_ms":9}]}}"#
        );
        assert_eq!(
            serde_json::from_str::<Stored>(&text).expect("parses"),
            stored
        );
        let window = Stored {
            clock_ms: 5,
            state: LimiterState::Window(SlidingWindow {
                entries: vec![crate::rate_limit::window::Entry(70, 2)],
            }),
        };
        assert_eq!(
            serde_json::to_string(&window).expect("serialises"),
            r#"{"clock_ms":5,"state":{"kind":"window","entries":[[70,2]]}}"#
        );
        assert_eq!(
            serde_json::to_string(&ObjectReply::NotHeld).expect("serialises"),
            r#"{"outcome":"not_held"}"#
        );
    }

    fn custom(limit: Limit) -> ObjectRequest {
        ObjectRequest {
            policy_name: PolicyName::parse("custom").expect("valid"),
            policy: Policy {
                limit,
                shadow: false,
                failure_mode: FailureMode::Open,
            },
            op: check(1),
        }
    }

    /// Runs a schedule through `apply` as the object does (its clock, state round-tripping
    /// through JSON), with a wall clock that may jump backwards; returns (time, cost) of
    /// admissions on the object's clock.
    fn admitted_through_object(
        request: &ObjectRequest,
        schedule: &[(i64, u64)],
    ) -> Vec<(u64, u64)> {
        let mut stored: Option<String> = None;
        let mut wall = T0;
        let mut clock = Clock::default();
        let mut admitted = Vec::new();
        for (step, cost) in schedule {
            wall = wall.saturating_add_signed(*step);
            let now = clock.observe(wall);
            let state = stored
                .as_deref()
                .map(|text| serde_json::from_str(text).expect("round trip"));
            let req = ObjectRequest {
                op: check(*cost),
                ..request.clone()
            };
            let (t, reply) = apply(state, &req, now).expect("applies");
            stored = t
                .stored
                .map(|s| serde_json::to_string(&s).expect("serialises"));
            if decision(&reply).allowed && *cost > 0 {
                admitted.push((now, *cost));
            }
        }
        admitted
    }

    proptest::proptest! {
        /// Whatever the schedule, even with a clock that jumps back: no window ever holds more
        /// than the quota, measured on the object's own (never decreasing) clock.
        #[test]
        fn a_window_never_over_admits_through_the_object(
            limit in 1u64..15,
            window_ms in 1u64..2_000,
            schedule in proptest::collection::vec((-500i64..500, 0u64..4), 1..150),
        ) {
            let request = custom(Limit::SlidingWindow(crate::rate_limit::policy::WindowParams {
                limit, window_ms, precision_ms: (window_ms / 10).max(1),
            }));
            let schedule: Vec<(i64, u64)> = schedule.into_iter().map(|(s, c)| (s, c.min(limit))).collect();
            let admitted = admitted_through_object(&request, &schedule);
            for (at, _) in &admitted {
                let units: u64 = admitted
                    .iter()
                    .filter(|(t, _)| t <= at && t + window_ms > *at)
                    .map(|(_, c)| c)
                    .sum();
                proptest::prop_assert!(units <= limit, "{} units in the window ending {}", units, at);
            }
        }

        /// The same for GCRA: burst plus rate over any interval between admissions.
        #[test]
        fn gcra_never_over_admits_through_the_object(
            rate in 1u64..20,
            period_ms in 1u64..3_000,
            burst in 1u64..10,
            schedule in proptest::collection::vec((-500i64..500, 0u64..4), 1..150),
        ) {
            let request = custom(Limit::Gcra(crate::rate_limit::policy::GcraParams { rate, period_ms, burst }));
            let schedule: Vec<(i64, u64)> = schedule.into_iter().map(|(s, c)| (s, c.min(burst))).collect();
            let admitted = admitted_through_object(&request, &schedule);
            for i in 0..admitted.len() {
                let mut units = 0u128;
                for later in &admitted[i..] {
                    units += u128::from(later.1);
                    let elapsed = u128::from(later.0 - admitted[i].0);
                    proptest::prop_assert!(
                        units * u128::from(period_ms)
                            <= u128::from(burst) * u128::from(period_ms) + elapsed * u128::from(rate)
                    );
                }
            }
        }
    }
}
