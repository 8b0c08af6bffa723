//! Calls to `RateLimiter` objects, with a deadline; a failure becomes a degraded decision.

use std::cell::RefCell;
use std::time::Duration;

use shared::rate_limit::decision::Decision;
use shared::rate_limit::lease::LeaseGrant;
use shared::rate_limit::object::{ObjectReply, ObjectRequest, Op};
use shared::rate_limit::policy::{Policy, PolicyName};
use shared::rate_limit::refusals::RefusalCache;
use worker::{Env, console_error, console_log};

use shared::rate_limit::key::LOGGED_NAME_LEN;

use crate::limiter::APPLY_URL;
use crate::{RATE_LIMITER, Service};

thread_local! {
    /// Refusals still in force, repeated without asking the object (see `shared`'s module).
    static REFUSALS: RefCell<RefusalCache> = RefCell::new(RefusalCache::new());
}

/// One key under one policy: the object that decides for it.
pub struct Target {
    name: PolicyName,
    policy: Policy,
    object_name: String,
    timeout: Duration,
}

/// What the object (or its absence) said.
enum Outcome {
    /// A check or an acquisition/renewal was decided.
    Decided {
        decision: Decision,
        lease: Option<LeaseGrant>,
    },
    /// A renewal named a lease that is not live.
    NotHeld,
    /// A release was done.
    Released { released: bool },
    /// The object could not be asked; the policy's failure mode decided.
    Degraded(Decision),
}

/// A renewal named a lease that is not live.
pub struct NotHeld;

impl Target {
    /// The object for `key` under `policy`.
    pub fn new(service: &Service, name: &PolicyName, policy: Policy, key: &str) -> Self {
        Self {
            name: name.clone(),
            policy,
            object_name: service.hasher.object_name(name, key),
            timeout: Duration::from_millis(service.config.limiter_timeout_ms),
        }
    }

    /// Takes `cost` units, or repeats a refusal still in force.
    pub async fn check(&self, env: &Env, cost: u64, request_id: &str) -> Decision {
        let sent_at_ms = edge_io::clock::now_ms();
        let repeated = REFUSALS.with(|cache| {
            cache
                .borrow()
                .recall(&self.object_name, &self.policy, cost, sent_at_ms)
        });
        if let Some(decision) = repeated {
            return decision;
        }
        let decision = match self.decide(env, Op::Check { cost }, request_id).await {
            Outcome::Decided { decision, .. } | Outcome::Degraded(decision) => decision,
            // `decide` answers a check with one of the two above.
            Outcome::NotHeld | Outcome::Released { .. } => self.degraded_decision(),
        };
        REFUSALS.with(|cache| {
            cache.borrow_mut().remember(
                &self.object_name,
                &self.policy,
                cost,
                &decision,
                sent_at_ms,
            );
        });
        decision
    }

    /// Acquires lease `lease_id`; no lease when refused or degraded.
    pub async fn acquire(
        &self,
        env: &Env,
        lease_id: String,
        request_id: &str,
    ) -> (Decision, Option<LeaseGrant>) {
        match self.decide(env, Op::Acquire { lease_id }, request_id).await {
            Outcome::Decided { decision, lease } => (decision, lease),
            Outcome::Degraded(decision) => (decision, None),
            Outcome::NotHeld | Outcome::Released { .. } => (self.degraded_decision(), None),
        }
    }

    /// Renews lease `lease_id`; degraded answers keep the call going per the failure mode.
    pub async fn renew(
        &self,
        env: &Env,
        lease_id: String,
        request_id: &str,
    ) -> Result<(Decision, Option<LeaseGrant>), NotHeld> {
        match self.decide(env, Op::Renew { lease_id }, request_id).await {
            Outcome::Decided { decision, lease } => Ok((decision, lease)),
            Outcome::Degraded(decision) => Ok((decision, None)),
            Outcome::NotHeld => Err(NotHeld),
            Outcome::Released { .. } => Ok((self.degraded_decision(), None)),
        }
    }

    /// Releases lease `lease_id`: (released, degraded).
    pub async fn release(&self, env: &Env, lease_id: String, request_id: &str) -> (bool, bool) {
        match self.decide(env, Op::Release { lease_id }, request_id).await {
            Outcome::Released { released } => (released, false),
            Outcome::Decided { .. } | Outcome::NotHeld | Outcome::Degraded(_) => (false, true),
        }
    }

    /// Asks the object to apply `op`; never fails: trouble is a degraded outcome, logged.
    async fn decide(&self, env: &Env, op: Op, request_id: &str) -> Outcome {
        let expects_renewal = matches!(op, Op::Renew { .. });
        let expects_release = matches!(op, Op::Release { .. });
        let request = ObjectRequest {
            policy_name: self.name.clone(),
            policy: self.policy,
            op,
        };
        let outcome = match self.call(env, &request).await {
            Ok(ObjectReply::Decided { decision, lease }) if !expects_release => {
                Outcome::Decided { decision, lease }
            }
            Ok(ObjectReply::NotHeld) if expects_renewal => Outcome::NotHeld,
            Ok(ObjectReply::Released { released }) if expects_release => {
                Outcome::Released { released }
            }
            Ok(other) => self.degraded(request_id, &format!("unexpected answer {other:?}")),
            Err(cause) => self.degraded(request_id, &cause),
        };
        if let Outcome::Decided { decision, .. } = &outcome
            && decision.shadow
            && decision.exceeded()
        {
            console_log!(
                "request {request_id}: shadow policy {} would refuse object {} (retry after {} ms)",
                self.name.as_str(),
                self.logged_name(),
                decision.retry_after_ms
            );
        }
        outcome
    }

    /// One round trip to the object (`edge_io::objects`).
    async fn call(&self, env: &Env, request: &ObjectRequest) -> Result<ObjectReply, String> {
        let body = serde_json::to_string(request).map_err(|e| e.to_string())?;
        let answer = edge_io::objects::post(
            env,
            RATE_LIMITER,
            &self.object_name,
            APPLY_URL,
            &body,
            self.timeout,
        )
        .await?;
        if answer.status != 200 {
            let first_line = answer.text.lines().next().unwrap_or_default();
            return Err(format!("answered {}: {first_line}", answer.status));
        }
        serde_json::from_str(&answer.text).map_err(|e| format!("unreadable answer: {e}"))
    }

    fn degraded(&self, request_id: &str, cause: &str) -> Outcome {
        let mode = if self.policy.fails_open() {
            "open"
        } else {
            "closed"
        };
        console_error!(
            "request {request_id}: rate limiter object {} for policy {} failed ({cause}); degraded, failing {mode}",
            self.logged_name(),
            self.name.as_str()
        );
        Outcome::Degraded(self.degraded_decision())
    }

    fn degraded_decision(&self) -> Decision {
        Decision::degraded(&self.name, &self.policy)
    }

    fn logged_name(&self) -> &str {
        self.object_name
            .get(..LOGGED_NAME_LEN)
            .unwrap_or(&self.object_name)
    }
}
