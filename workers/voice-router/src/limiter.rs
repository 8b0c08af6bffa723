//! Rate-limit checks sent straight to rate-limiter's `RateLimiter` objects, when this Worker
//! binds their namespace as `RATE_LIMITER_OBJECTS`: one hop per check instead of a hop to
//! rate-limiter and another from it. The object, not a Worker, decides, as before: it resolves
//! the policy from rate-limiter's KV and checks that it is the instance named for the policy
//! and key (`shared::rate_limit::object`, "Checks sent straight to the object"). Without the
//! binding, checks go to rate-limiter's `/check` over the service binding.
//!
//! Everything rate-limiter's `/check` does around the object call is done here the same way:
//! the naming HMAC with the same secret, refusals remembered until they lapse
//! (`shared::rate_limit::refusals`), the policy's failure mode when the object does not answer
//! in `LIMITER_TIMEOUT_MS` (with the policy the objects last applied,
//! `shared::rate_limit::learned`), and the same log lines.

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use shared::edge_config::EdgeConfig;
use shared::error_body::ErrorBody;
use shared::rate_limit::api::{Check, CheckResponse, ValidCheck, valid_check};
use shared::rate_limit::decision::{Decision, all_allowed};
use shared::rate_limit::key::{KeyHasher, LOGGED_NAME_LEN};
use shared::rate_limit::learned::LearnedPolicies;
use shared::rate_limit::object::{CHECK_URL, CheckedReply};
use shared::rate_limit::policy::Policy;
use shared::rate_limit::refusals::RefusalCache;
use worker::{Env, console_error, console_log};

use crate::refusal::Refusal;

/// Durable Object namespace of rate-limiter's `RateLimiter` class (a cross-script binding).
pub const RATE_LIMITER_OBJECTS: &str = "RATE_LIMITER_OBJECTS";

thread_local! {
    /// How this isolate reaches the objects, found once (bindings and secrets do not change
    /// within an isolate): the naming key prepared, or `None` without the binding.
    static DIRECT: OnceCell<Option<Rc<Direct>>> = const { OnceCell::new() };
    /// Refusals still in force, repeated without asking the object.
    static REFUSALS: RefCell<RefusalCache> = RefCell::new(RefusalCache::new());
    /// The policies the objects last applied.
    static LEARNED: RefCell<LearnedPolicies> = RefCell::new(LearnedPolicies::new());
}

/// Checks sent straight to the objects.
pub struct Direct {
    hasher: KeyHasher,
    timeout: Duration,
}

/// How this isolate's checks reach the objects: `None` through rate-limiter (no binding).
pub fn direct(env: &Env, config: &EdgeConfig) -> Result<Option<Rc<Direct>>, Refusal> {
    if let Some(known) = DIRECT.with(|cell| cell.get().cloned()) {
        return Ok(known);
    }
    let found = if env.durable_object(RATE_LIMITER_OBJECTS).is_err() {
        None
    } else {
        let Some(key) = config.rate_limit_key.as_deref() else {
            console_error!(
                "{RATE_LIMITER_OBJECTS} is bound but RATE_LIMIT_KEY_SECRET is not set: voice-router needs rate-limiter's secret to name its objects"
            );
            return Err(Refusal::Misconfigured);
        };
        Some(Rc::new(Direct {
            hasher: KeyHasher::new(key),
            timeout: Duration::from_millis(config.limiter_timeout_ms),
        }))
    };
    Ok(DIRECT.with(|cell| cell.get_or_init(|| found).clone()))
}

impl Direct {
    /// Decides `checks` as rate-limiter's `/check` would: in parallel, or one after another
    /// stopping at the first refusal. A check the object refuses to decide (a bad policy, a
    /// key it is not named for) is logged and left out: it does not limit the request.
    pub async fn check(
        &self,
        env: &Env,
        checks: Vec<Check>,
        in_order: bool,
        request_id: &str,
    ) -> CheckResponse {
        let mut decisions = Vec::with_capacity(checks.len());
        if in_order {
            for check in checks {
                if let Some(decision) = self.decide(env, check, request_id).await {
                    let allowed = decision.allowed;
                    decisions.push(decision);
                    if !allowed {
                        break;
                    }
                }
            }
        } else {
            let decided = futures::future::join_all(
                checks
                    .into_iter()
                    .map(|check| self.decide(env, check, request_id)),
            )
            .await;
            decisions.extend(decided.into_iter().flatten());
        }
        CheckResponse {
            allowed: all_allowed(&decisions),
            decisions,
        }
    }

    /// One check: a remembered refusal, the object's decision, or the failure mode's.
    async fn decide(&self, env: &Env, check: Check, request_id: &str) -> Option<Decision> {
        let body = serde_json::to_string(&check).ok()?;
        let check = match valid_check(check) {
            Ok(check) => check,
            Err(error) => {
                console_error!("request {request_id}: a rate-limit check is invalid: {error}");
                return None;
            }
        };
        let object = self.hasher.object_name(&check.policy, &check.key);
        let policy = LEARNED.with(|learned| learned.borrow().policy(&check.policy, &check.scope));
        let sent_at_ms = edge_io::clock::now_ms();
        if let Some(policy) = &policy {
            let repeated = REFUSALS.with(|cache| {
                cache
                    .borrow()
                    .recall(&object, policy, check.cost, sent_at_ms)
            });
            if repeated.is_some() {
                return repeated;
            }
        }
        let answer = edge_io::objects::post(
            env,
            RATE_LIMITER_OBJECTS,
            &object,
            CHECK_URL,
            &body,
            self.timeout,
        )
        .await;
        let failure = match answer {
            Ok(answer) if answer.status == 200 => {
                match serde_json::from_str::<CheckedReply>(&answer.text) {
                    Ok(reply) => {
                        return Some(decided(&check, &object, reply, sent_at_ms, request_id));
                    }
                    Err(error) => format!("unreadable answer: {error}"),
                }
            }
            Ok(answer) if (400..500).contains(&answer.status) => {
                let message = serde_json::from_str::<ErrorBody>(&answer.text)
                    .map(|body| format!("{} {}", body.error.code, body.error.message))
                    .unwrap_or_else(|_| answer.text.lines().next().unwrap_or_default().to_owned());
                console_error!(
                    "request {request_id}: rate limiter object {} refused the check itself: {} {message}",
                    logged(&object),
                    answer.status
                );
                return None;
            }
            Ok(answer) => {
                let first_line = answer.text.lines().next().unwrap_or_default();
                format!("answered {}: {first_line}", answer.status)
            }
            Err(cause) => cause,
        };
        degraded(&check, &object, policy, &failure, request_id)
    }
}

/// The object's decision: its policy learned, a refusal remembered, a shadow refusal logged.
fn decided(
    check: &ValidCheck,
    object: &str,
    reply: CheckedReply,
    sent_at_ms: u64,
    request_id: &str,
) -> Decision {
    let CheckedReply { decision, policy } = reply;
    LEARNED.with(|learned| {
        learned
            .borrow_mut()
            .learn(&check.policy, &check.scope, policy)
    });
    REFUSALS.with(|cache| {
        cache
            .borrow_mut()
            .remember(object, &policy, check.cost, &decision, sent_at_ms)
    });
    if decision.shadow && decision.exceeded() {
        console_log!(
            "request {request_id}: shadow policy {} would refuse object {} (retry after {} ms)",
            check.policy.as_str(),
            logged(object),
            decision.retry_after_ms
        );
    }
    decision
}

/// The policy's failure mode, when the object could not be asked; nothing (not limited) for a
/// policy this isolate knows nothing of.
fn degraded(
    check: &ValidCheck,
    object: &str,
    policy: Option<Policy>,
    cause: &str,
    request_id: &str,
) -> Option<Decision> {
    let mode = match &policy {
        Some(policy) if !policy.fails_open() => "closed",
        _ => "open",
    };
    console_error!(
        "request {request_id}: rate limiter object {} for policy {} failed ({cause}); degraded, failing {mode}",
        logged(object),
        check.policy.as_str()
    );
    policy.map(|policy| Decision::degraded(&check.policy, &policy))
}

fn logged(object: &str) -> &str {
    object.get(..LOGGED_NAME_LEN).unwrap_or(object)
}
