//! Calls to the three internal Workers over their service bindings, typed with their `shared`
//! wire types, each with a deadline. A refusal from a service comes back as the service said it
//! (status, code, message, challenge), so the client sees auth-validator's own answer.

use std::borrow::Cow;
use std::cell::RefCell;
use std::time::Duration;

use edge_io::Rejection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::auth::{
    AUTHENTICATE_PATH, AuthenticateRequest, MintSessionTokenRequest, SESSION_TOKENS_PATH,
    SessionTokenResponse,
};
use shared::call_session::{LeaseAction, LeaseOutcome};
use shared::error_body::ErrorBody;
use shared::geo::wire::{
    DECISION_REUSE_MS, REPORT_PATH, ROUTE_PATH, ReportRequest, RouteDecision, RouteRequest,
};
use shared::principal::Principal;
use shared::rate_limit::api::{
    ACQUIRE_PATH, CHECK_PATH, Check, CheckRequest, CheckResponse, LEASE_NOT_HELD, LeaseRequest,
    LeaseResponse, RELEASE_PATH, RENEW_PATH, ReleaseResponse,
};
use shared::ttl_map::TtlMap;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, Headers, web_sys};

/// Service binding to auth-validator.
pub const AUTH: &str = "AUTH";
/// Service binding to rate-limiter.
pub const RATE_LIMITER: &str = "RATE_LIMITER";
/// Service binding to geo-router.
pub const GEO_ROUTER: &str = "GEO_ROUTER";

/// How long an internal service may take. They answer in milliseconds; waiting longer only
/// makes a caller listen to silence.
const DEADLINE: Duration = Duration::from_secs(3);

/// Why a service call did not produce its answer.
#[derive(Debug)]
pub enum ServiceError {
    /// The service answered with a refusal (4xx), to pass on to the client.
    Refused(Rejection),
    /// The service could not be reached, timed out, failed (5xx) or answered nonsense; the
    /// cause is for the log.
    Unavailable {
        /// Which binding.
        service: &'static str,
        /// What went wrong.
        cause: String,
    },
}

/// Posts `body` as JSON to `path` on the service bound as `binding`, and reads the JSON answer.
async fn post<Req: Serialize, Resp: DeserializeOwned>(
    env: &Env,
    binding: &'static str,
    path: &str,
    body: &Req,
    request_id: &str,
) -> Result<Resp, ServiceError> {
    let json = serde_json::to_string(body).map_err(|e| ServiceError::Unavailable {
        service: binding,
        cause: e.to_string(),
    })?;
    post_json(env, binding, path, json, request_id).await
}

/// [`post`] of a body already serialised.
async fn post_json<Resp: DeserializeOwned>(
    env: &Env,
    binding: &'static str,
    path: &str,
    json: String,
    request_id: &str,
) -> Result<Resp, ServiceError> {
    let unavailable = |cause: String| ServiceError::Unavailable {
        service: binding,
        cause,
    };
    // The runtime's own `Request`, binding `fetch` and `text()`: the body is read in one call,
    // not chunk by chunk through a Rust stream, and the deadline is the runtime's own signal,
    // covering the answer and its body (issue 15's profile).
    let late = |error: JsValue| {
        if edge_io::clock::is_timeout(&error) {
            unavailable(format!("no answer within {} ms", DEADLINE.as_millis()))
        } else {
            unavailable(worker::Error::from(error).to_string())
        }
    };
    let headers = Headers::new();
    headers
        .set("content-type", "application/json")
        .and_then(|()| headers.set(shared::headers::REQUEST_ID, request_id))
        .map_err(|e| unavailable(e.to_string()))?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers.0);
    init.set_body(&JsValue::from_str(&json));
    init.set_signal(Some(&edge_io::clock::deadline_signal(DEADLINE)));
    let url = format!("https://{}{path}", binding.to_ascii_lowercase());
    let request = web_sys::Request::new_with_str_and_init(&url, &init).map_err(late)?;
    let fetcher: worker::worker_sys::Fetcher = env
        .service(binding)
        .map_err(|e| unavailable(e.to_string()))?
        .into_rpc();
    let response: web_sys::Response = JsFuture::from(fetcher.fetch(&request).map_err(late)?)
        .await
        .map_err(late)?
        .dyn_into()
        .map_err(late)?;
    let text = JsFuture::from(response.text().map_err(late)?)
        .await
        .map_err(late)?
        .as_string()
        .unwrap_or_default();
    let status = response.status();
    match status {
        200..=299 => serde_json::from_str(&text)
            .map_err(|e| unavailable(format!("answer {status} not understood: {e}"))),
        400..=499 => {
            let error: ErrorBody = serde_json::from_str(&text)
                .map_err(|e| unavailable(format!("refusal {status} not understood: {e}")))?;
            let mut rejection =
                Rejection::new(status, Cow::Owned(error.error.code), error.error.message);
            for name in PASSED_ON_HEADERS {
                if let Ok(Some(value)) = response.headers().get(name) {
                    rejection = rejection.with_header(name, value);
                }
            }
            Err(ServiceError::Refused(rejection))
        }
        _ => Err(unavailable(format!(
            "answered {status}: {}",
            text.chars().take(200).collect::<String>()
        ))),
    }
}

/// Headers of a service's refusal that the client needs too.
const PASSED_ON_HEADERS: [&str; 2] = ["www-authenticate", "retry-after"];

/// auth-validator: who is this?
pub async fn authenticate(
    env: &Env,
    request: &AuthenticateRequest,
    request_id: &str,
) -> Result<Principal, ServiceError> {
    post(env, AUTH, AUTHENTICATE_PATH, request, request_id).await
}

/// auth-validator: a short-lived token bound to one call, for its relay URL.
pub async fn mint_session_token(
    env: &Env,
    request: &MintSessionTokenRequest,
    request_id: &str,
) -> Result<SessionTokenResponse, ServiceError> {
    post(env, AUTH, SESSION_TOKENS_PATH, request, request_id).await
}

/// rate-limiter: may these proceed? One hop for every check of a request; `in_order` decides
/// them one after another and stops at the first refusal (what the later ones would not have
/// been asked had they been separate hops).
pub async fn check(
    env: &Env,
    checks: Vec<Check>,
    in_order: bool,
    request_id: &str,
) -> Result<CheckResponse, ServiceError> {
    post(
        env,
        RATE_LIMITER,
        CHECK_PATH,
        &CheckRequest { checks, in_order },
        request_id,
    )
    .await
}

/// rate-limiter: take a concurrent-call lease.
pub async fn acquire_lease(
    env: &Env,
    lease: &LeaseRequest,
    request_id: &str,
) -> Result<LeaseResponse, ServiceError> {
    post(env, RATE_LIMITER, ACQUIRE_PATH, lease, request_id).await
}

/// rate-limiter: extend a live call's lease.
pub async fn renew_lease(
    env: &Env,
    lease: &LeaseRequest,
    request_id: &str,
) -> Result<LeaseResponse, ServiceError> {
    post(env, RATE_LIMITER, RENEW_PATH, lease, request_id).await
}

/// rate-limiter: give a finished call's lease back.
pub async fn release_lease(
    env: &Env,
    lease: &LeaseRequest,
    request_id: &str,
) -> Result<ReleaseResponse, ServiceError> {
    post(env, RATE_LIMITER, RELEASE_PATH, lease, request_id).await
}

thread_local! {
    /// geo-router's recent decisions in this isolate, by the request's JSON
    /// ([`DECISION_REUSE_MS`]); forgotten when this isolate reports a failure.
    static DECISIONS: RefCell<TtlMap<String, RouteDecision>> =
        RefCell::new(TtlMap::new(DECISIONS_KEPT));
}
/// Distinct caller locations whose decisions an isolate keeps.
const DECISIONS_KEPT: usize = 256;

/// geo-router: which region, and in what order to fall back. A decision for the same location
/// and pin is reused for [`DECISION_REUSE_MS`].
pub async fn route(
    env: &Env,
    request: &RouteRequest,
    request_id: &str,
) -> Result<RouteDecision, ServiceError> {
    let json = serde_json::to_string(request).map_err(|e| ServiceError::Unavailable {
        service: GEO_ROUTER,
        cause: e.to_string(),
    })?;
    let now = edge_io::clock::now_ms();
    if let Some(decision) = DECISIONS.with(|kept| kept.borrow().get(&json, now)) {
        return Ok(decision);
    }
    let decision: RouteDecision =
        post_json(env, GEO_ROUTER, ROUTE_PATH, json.clone(), request_id).await?;
    DECISIONS.with(|kept| {
        kept.borrow_mut()
            .insert(json, decision.clone(), now + DECISION_REUSE_MS, now)
    });
    Ok(decision)
}

/// geo-router: an origin request in `region` failed. Best effort: the answer only informs.
/// This isolate's reused decisions are forgotten: the next request asks again.
pub async fn report_failure(env: &Env, report: &ReportRequest, request_id: &str) {
    DECISIONS.with(|kept| kept.borrow_mut().clear());
    let outcome: Result<serde_json::Value, ServiceError> =
        post(env, GEO_ROUTER, REPORT_PATH, report, request_id).await;
    if let Err(error) = outcome {
        worker::console_warn!(
            "request {request_id}: reporting region {} failed: {error:?}",
            report.region
        );
    }
}

/// rate-limiter: a call's lease operation, as the `CallSession` relay needs its outcome. A
/// degraded answer holds nothing to lose; a renewal naming a reclaimed lease is `NotHeld`.
pub async fn call_lease(env: &Env, action: &LeaseAction, request_id: &str) -> LeaseOutcome {
    let answer = match action {
        LeaseAction::Renew(lease) => renew_lease(env, lease, request_id).await,
        LeaseAction::Acquire(lease) => acquire_lease(env, lease, request_id).await,
        LeaseAction::Release(lease) => {
            return match release_lease(env, lease, request_id).await {
                Ok(_) => LeaseOutcome::Held,
                Err(error) => {
                    worker::console_error!("request {request_id}: releasing: {error:?}");
                    LeaseOutcome::Failed
                }
            };
        }
    };
    match answer {
        Ok(answer) if answer.lease.is_some() || answer.decision.degraded => LeaseOutcome::Held,
        Ok(_) => LeaseOutcome::Failed,
        Err(ServiceError::Refused(refusal)) if refusal.code == LEASE_NOT_HELD => {
            LeaseOutcome::NotHeld
        }
        Err(error) => {
            worker::console_error!("request {request_id}: lease: {error:?}");
            LeaseOutcome::Failed
        }
    }
}
