//! rate-limiter: may this request proceed, and how much is left? No public route; voice-router
//! reaches it through its `RATE_LIMITER` service binding. One `RateLimiter` Durable Object per
//! (policy, key) decides, so limits are exact across the whole network. Policies come from KV
//! (per tenant, per plan, global) over the built-in seeds; the algorithms are
//! `shared::rate_limit`'s. All types below are in `shared::rate_limit`.
//!
//! # Routes (all JSON; errors are `{"error":{"code","message","request_id"}}`)
//!
//! - `POST /check` — body [`api::CheckRequest`]
//!   `{"checks":[{"policy":"ip","key":"203.0.113.7"},
//!   {"policy":"principal","key":"t1/u1","cost":1,"tenant":"t1","plan":"pro"}]}`
//!   (1–8 checks; `cost` defaults to 1, 0 reads without taking; `tenant`/`plan` select KV
//!   overrides). The checks go to their objects in parallel and are counted independently (a
//!   request refused by one check still counts against the others) — or, with
//!   `"in_order":true`, one after another, stopping at the first refusal (the later checks are
//!   neither counted nor answered: voice-router's per-IP then per-principal checks in one hop). 200 with
//!   [`api::CheckResponse`] `{"allowed": bool, "decisions": [Decision, …]}`: every decision,
//!   in the order of the checks; `allowed` is true when all allow. A refusal is a 200 too: the
//!   caller answers 429 (headers from `shared::rate_limit::headers::for_decisions`).
//! - `POST /leases/acquire` — body [`api::LeaseRequest`]
//!   `{"policy":"tenant-calls","key":"t1","lease_id":"CA…","tenant":"t1","plan":"pro"}`.
//!   200 with [`api::LeaseResponse`] `{"decision": Decision, "lease": {"lease_id",
//!   "expires_at_ms"}}`; no `lease` when refused (cap reached) or degraded. Acquiring a held
//!   lease id renews it (a retried acquire does not count twice).
//! - `POST /leases/renew` — same body; 200 [`api::LeaseResponse`] with the new expiry, or
//!   404 `lease_not_held` when the lease expired and was reclaimed, was released or never held.
//! - `POST /leases/release` — same body; 200 [`api::ReleaseResponse`]
//!   `{"released": bool, "degraded": bool}` (idempotent; false when not held).
//! - `GET /health` — KV and the Durable Object namespace answer.
//!
//! A [`shared::rate_limit::Decision`] is `{allowed, limit, remaining, reset_after_ms,
//! retry_after_ms, policy, shadow, degraded, window_ms?}`. `retry_after_ms > 0` exactly when the
//! limit was exceeded; a shadow policy always allows. When an object does not answer within
//! `LIMITER_TIMEOUT_MS` or fails, the decision is `degraded` and the policy's failure mode
//! applies: open (the default: allowed) or closed (refused, retry after 1 s).
//!
//! The `RateLimiter` objects also answer checks sent straight to them (`POST /check` on the
//! object, one [`api::Check`], answered `{"decision": Decision, "policy": Policy}`), from
//! voice-router's `RATE_LIMITER_OBJECTS` binding: the object resolves the policy from this
//! Worker's KV as `/check` would, after checking that its name is this Worker's HMAC of the
//! policy and key (400 `wrong_object` otherwise: the caller's key is not this Worker's). The
//! protocol is `shared::rate_limit::object`'s.
//!
//! An isolate repeats an enforced rate refusal for the same key, policy and at least the same
//! cost until its `retry_after_ms` lapses, without asking the object again
//! (`shared::rate_limit::refusals`): the object would refuse too, and a flood on one key is
//! then absorbed at the edge instead of queueing at its object.
//!
//! # Statuses
//!
//! 400 with a code for bad input: `invalid_json`, `no_checks`, `too_many_checks`,
//! `missing_policy`, `invalid_policy_name`, `unknown_policy`, `invalid_scope`, `missing_key`,
//! `key_too_long`, `invalid_cost`, `cost_too_large`, `cost_exceeds_capacity`,
//! `wrong_policy_kind`, `invalid_lease_id`, `wrong_object` (an object only); 413 `body_too_large`; 404 `lease_not_held`,
//! `not_found`; 405 `method_not_allowed`; 500 `misconfigured` (a missing or short
//! `RATE_LIMIT_KEY_SECRET`, or bad vars; the log says which).

use std::cell::OnceCell;
use std::rc::Rc;

use edge_io::{Failure, Rejection, probe, respond};
use shared::health::{HEALTH_PATH, HealthReport};
use shared::rate_limit::api::{
    self, ACQUIRE_PATH, CHECK_PATH, CheckResponse, LeaseResponse, MAX_BODY_BYTES, RELEASE_PATH,
    RENEW_PATH, ReleaseResponse, RequestError,
};
use shared::rate_limit::config::{Config, ConfigError};
use shared::rate_limit::decision::all_allowed;
use shared::rate_limit::key::KeyHasher;
use shared::rate_limit::policy::PolicyError;
use shared::request_id::Trust;
use worker::{Context, Env, Method, Request, Response, Result, console_error, event};

mod limiter;
mod objects;
mod policies;

pub use limiter::RateLimiter;

const SERVICE: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// KV: rate-limit policies per plan and per tenant.
const RATE_LIMIT_KV: &str = "RATE_LIMIT_KV";
/// Durable Object namespace of `RateLimiter`, one instance per limited key.
const RATE_LIMITER: &str = "RATE_LIMITER";

/// What one isolate derives from its configuration, once.
struct Service {
    config: Config,
    hasher: KeyHasher,
}

thread_local! {
    static SERVICE_STATE: OnceCell<std::result::Result<Rc<Service>, ConfigError>> =
        const { OnceCell::new() };
}

/// The isolate's configuration, parsed on first use (vars and secrets do not change within an
/// isolate; a new deployment or secret starts new isolates).
fn service(env: &Env) -> std::result::Result<Rc<Service>, Refusal> {
    SERVICE_STATE.with(|cell| {
        cell.get_or_init(|| {
            Config::from_lookup(|name| edge_io::config::lookup(env, name)).map(|config| {
                let hasher = KeyHasher::new(&config.key_secret);
                Rc::new(Service { config, hasher })
            })
        })
        .clone()
        .map_err(Refusal::Misconfigured)
    })
}

/// Everything this Worker refuses for, mapped to statuses in [`rejection`].
enum Refusal {
    Request(RequestError),
    LeaseNotHeld,
    Misconfigured(ConfigError),
    /// A check sent straight to an object that is not the one named for its policy and key.
    WrongObject,
}

impl From<RequestError> for Refusal {
    fn from(error: RequestError) -> Self {
        Refusal::Request(error)
    }
}

impl From<PolicyError> for Refusal {
    fn from(error: PolicyError) -> Self {
        Refusal::Request(RequestError::Policy(error))
    }
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Failure::Rejected(rejection(refusal))
    }
}

/// The one place this Worker's refusals get their status and code.
fn rejection(refusal: Refusal) -> Rejection {
    let error = match refusal {
        Refusal::LeaseNotHeld => {
            return Rejection::new(
                404,
                shared::rate_limit::api::LEASE_NOT_HELD,
                "no live lease with this id: it expired, was released or was never acquired",
            );
        }
        Refusal::Misconfigured(error) => {
            console_error!("rate-limiter is misconfigured: {error}");
            return Rejection::new(
                500,
                "misconfigured",
                "rate-limiter is misconfigured; see its log",
            );
        }
        Refusal::WrongObject => {
            console_error!(
                "a check reached a RateLimiter object not named for its policy and key: the caller's RATE_LIMIT_KEY_SECRET is not rate-limiter's"
            );
            return Rejection::new(
                400,
                "wrong_object",
                "this object is not the one named for that policy and key: the caller's RATE_LIMIT_KEY_SECRET must be rate-limiter's",
            );
        }
        Refusal::Request(error) => error,
    };
    let (status, code) = match &error {
        RequestError::BodyTooLarge { .. } => (413, "body_too_large"),
        RequestError::NotJson(_) => (400, "invalid_json"),
        RequestError::NoChecks => (400, "no_checks"),
        RequestError::TooManyChecks { .. } => (400, "too_many_checks"),
        RequestError::MissingPolicy => (400, "missing_policy"),
        RequestError::MissingKey => (400, "missing_key"),
        RequestError::KeyTooLong { .. } => (400, "key_too_long"),
        RequestError::NegativeCost(_) => (400, "invalid_cost"),
        RequestError::CostTooLarge { .. } => (400, "cost_too_large"),
        RequestError::InvalidLeaseId => (400, "invalid_lease_id"),
        RequestError::Policy(PolicyError::InvalidName(_)) => (400, "invalid_policy_name"),
        RequestError::Policy(PolicyError::Unknown(_)) => (400, "unknown_policy"),
        RequestError::Policy(PolicyError::InvalidScope(_)) => (400, "invalid_scope"),
        RequestError::Policy(_) => (400, "invalid_policy"),
        RequestError::CostExceedsCapacity { .. } => (400, "cost_exceeds_capacity"),
        RequestError::NotARatePolicy(_) | RequestError::NotAConcurrencyPolicy(_) => {
            (400, "wrong_policy_kind")
        }
    };
    Rejection::new(status, code, error.to_string())
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let request_id = edge_io::request_id(&req, Trust::Internal);
    respond(route(req, &env, &request_id).await, &request_id)
}

async fn route(
    req: Request,
    env: &Env,
    request_id: &str,
) -> std::result::Result<Response, Failure> {
    let path = req.path();
    match (req.method(), path.as_str()) {
        (Method::Get, HEALTH_PATH) => {
            let (kv, limiter) = futures::join!(
                probe::kv(env, RATE_LIMIT_KV),
                probe::durable_object(env, RATE_LIMITER)
            );
            let report = HealthReport::from_checks(SERVICE, VERSION, [kv, limiter]);
            edge_io::answer::health(&report, request_id)
        }
        (Method::Post, CHECK_PATH) => check(req, env, request_id).await,
        (Method::Post, ACQUIRE_PATH) => acquire(req, env, request_id).await,
        (Method::Post, RENEW_PATH) => renew(req, env, request_id).await,
        (Method::Post, RELEASE_PATH) => release(req, env, request_id).await,
        (_, HEALTH_PATH | CHECK_PATH | ACQUIRE_PATH | RENEW_PATH | RELEASE_PATH) => {
            Err(Failure::MethodNotAllowed)
        }
        _ => Err(Failure::NotFound),
    }
}

/// `POST /check`: every check decided by its own object, in parallel (or in order).
async fn check(
    mut req: Request,
    env: &Env,
    request_id: &str,
) -> std::result::Result<Response, Failure> {
    let service = service(env)?;
    let body = read_body(&mut req).await?;
    let (checks, in_order) = api::parse_check_plan(&body).map_err(Refusal::from)?;
    let scopes = checks.iter().map(|check| &check.scope);
    let docs = policies::load(env, service.config.policy_cache_ttl_ms, scopes).await;
    let mut targets = Vec::with_capacity(checks.len());
    for check in &checks {
        let policy = docs
            .resolve(&check.policy, &check.scope)
            .map_err(Refusal::from)?;
        api::check_fits(&check.policy, &policy, check.cost).map_err(Refusal::from)?;
        let target = objects::Target::new(&service, &check.policy, policy, &check.key);
        targets.push((target, check.cost));
    }
    let decisions = if in_order {
        let mut decisions = Vec::with_capacity(targets.len());
        for (target, cost) in &targets {
            let decision = target.check(env, *cost, request_id).await;
            let allowed = decision.allowed;
            decisions.push(decision);
            if !allowed {
                break;
            }
        }
        decisions
    } else {
        futures::future::join_all(
            targets
                .iter()
                .map(|(target, cost)| target.check(env, *cost, request_id)),
        )
        .await
    };
    let response = CheckResponse {
        allowed: all_allowed(&decisions),
        decisions,
    };
    edge_io::json(200, &response, request_id)
}

/// `POST /leases/acquire`.
async fn acquire(
    mut req: Request,
    env: &Env,
    request_id: &str,
) -> std::result::Result<Response, Failure> {
    let (target, lease_id) = lease_target(&mut req, env).await?;
    let (decision, lease) = target.acquire(env, lease_id, request_id).await;
    edge_io::json(200, &LeaseResponse { decision, lease }, request_id)
}

/// `POST /leases/renew`.
async fn renew(
    mut req: Request,
    env: &Env,
    request_id: &str,
) -> std::result::Result<Response, Failure> {
    let (target, lease_id) = lease_target(&mut req, env).await?;
    let (decision, lease) = target
        .renew(env, lease_id, request_id)
        .await
        .map_err(|objects::NotHeld| Refusal::LeaseNotHeld)?;
    edge_io::json(200, &LeaseResponse { decision, lease }, request_id)
}

/// `POST /leases/release`.
async fn release(
    mut req: Request,
    env: &Env,
    request_id: &str,
) -> std::result::Result<Response, Failure> {
    let (target, lease_id) = lease_target(&mut req, env).await?;
    let (released, degraded) = target.release(env, lease_id, request_id).await;
    edge_io::json(200, &ReleaseResponse { released, degraded }, request_id)
}

/// Parses a lease route's body and finds the object and policy it concerns.
async fn lease_target(
    req: &mut Request,
    env: &Env,
) -> std::result::Result<(objects::Target, String), Failure> {
    let service = service(env)?;
    let body = read_body(req).await?;
    let lease = api::parse_lease_request(&body).map_err(Refusal::from)?;
    let scopes = std::iter::once(&lease.scope);
    let docs = policies::load(env, service.config.policy_cache_ttl_ms, scopes).await;
    let policy = docs
        .resolve(&lease.policy, &lease.scope)
        .map_err(Refusal::from)?;
    api::lease_fits(&lease.policy, &policy).map_err(Refusal::from)?;
    let target = objects::Target::new(&service, &lease.policy, policy, &lease.key);
    Ok((target, lease.lease_id))
}

/// The body as text, refusing oversized ones before reading them when the length is declared.
async fn read_body(req: &mut Request) -> std::result::Result<String, Failure> {
    let declared = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|length| length.parse::<usize>().ok());
    if let Some(len) = declared.filter(|len| *len > MAX_BODY_BYTES) {
        return Err(Refusal::from(RequestError::BodyTooLarge {
            len,
            max: MAX_BODY_BYTES,
        })
        .into());
    }
    Ok(req.text().await?)
}
