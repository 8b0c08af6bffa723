//! The gate every public request passes before its route runs: recognise the route, the
//! firewall stage, the body limit, authentication, rate limits. The policy of each stage is in
//! `shared` (`public_route`, `firewall`, `rate_limit`); this module gathers the inputs from the
//! request, calls the services, and says why it refuses with a [`Refusal`].

use std::cell::RefCell;
use std::net::IpAddr;

use shared::auth::principal_cache::{self, CAPACITY, CredentialDigest, PrincipalCache};
use shared::auth::{AuthenticateRequest, CredentialHeaders};
use shared::edge_config::EdgeConfig;
use shared::firewall::{self, ClientFacts, Verdict};
use shared::geo::wire::CallerLocation;
use shared::principal::Principal;
use shared::public_route::{Credential, PublicRoute, RouteError};
use shared::rate_limit::api::Check;
use shared::rate_limit::decision::Decision;
use shared::rate_limit::policy::{IP, PRINCIPAL};
use worker::wasm_bindgen::JsValue;
use worker::{Env, Request, console_error, console_warn};

use crate::refusal::Refusal;
use crate::services::{self, ServiceError};

/// What the edge knows about the client, read once from the request.
pub struct Client {
    /// `CF-Connecting-IP`.
    pub ip: Option<String>,
    /// `request.cf` as JSON text (country, region code, coordinates, colo, bot score…).
    pub cf: Option<String>,
    /// `request.cf.country`.
    pub country: Option<String>,
    /// `request.cf.botManagement.score`.
    pub bot_score: Option<u8>,
}

impl Client {
    /// Reads the client's facts from the request.
    pub fn of(req: &Request) -> Self {
        let ip = req
            .headers()
            .get(shared::headers::CONNECTING_IP)
            .ok()
            .flatten();
        let cf = worker::js_sys::Reflect::get(req.inner(), &JsValue::from_str("cf"))
            .ok()
            .filter(|cf| cf.is_object())
            .and_then(|cf| worker::js_sys::JSON::stringify(&cf).ok()?.as_string());
        let facts = cf
            .as_deref()
            .map(shared::firewall::CfFacts::from_cf_json)
            .unwrap_or_default();
        Self {
            ip,
            cf,
            country: facts.country,
            bot_score: facts.bot_score,
        }
    }

    /// Where the client is, for geo-router.
    pub fn location(&self) -> CallerLocation {
        self.cf
            .as_deref()
            .and_then(|cf| CallerLocation::from_cf_json(cf).ok())
            .unwrap_or_default()
    }

    /// The rate-limit key of the client's address.
    pub fn ip_key(&self) -> String {
        self.ip.clone().unwrap_or_else(|| "unknown".to_owned())
    }
}

/// The route of a request, or why there is none.
pub fn route_of(method: &str, path: &str) -> Result<PublicRoute, Refusal> {
    PublicRoute::parse(method, path).map_err(|error| match error {
        RouteError::NotFound => Refusal::NoRoute,
        RouteError::MethodNotAllowed => Refusal::MethodNotAllowed,
        RouteError::BadId(segment) => Refusal::BadId(segment),
    })
}

/// The firewall stage.
pub fn firewall(config: &EdgeConfig, route: &PublicRoute, client: &Client) -> Result<(), Refusal> {
    let ip: Option<IpAddr> = client.ip.as_deref().and_then(|ip| ip.parse().ok());
    let facts = ClientFacts {
        ip,
        country: client.country.as_deref(),
        bot_score: client.bot_score,
    };
    match firewall::evaluate(&config.firewall, route.kind(), &facts) {
        Verdict::Pass => Ok(()),
        Verdict::Block(reason) => Err(Refusal::Firewall(reason)),
    }
}

/// Reads the body, refusing one larger than the route accepts before reading it when its
/// length is declared, and as soon as the limit is crossed when it is not.
pub async fn read_body(req: &mut Request, route: &PublicRoute) -> Result<Vec<u8>, Refusal> {
    let limit = route.body_limit();
    let declared = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Err(too_large) = firewall::check_declared_length(declared, limit) {
        return Err(Refusal::PayloadTooLarge(too_large.to_string()));
    }
    if declared == Some(0) || req.inner().body().is_none() {
        return Ok(Vec::new());
    }
    use futures::StreamExt;
    let mut stream = req.stream()?;
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk?);
        if body.len() as u64 > limit {
            return Err(Refusal::PayloadTooLarge(format!(
                "body exceeds the limit of {limit} bytes"
            )));
        }
    }
    Ok(body)
}

/// Decisions gathered for the response's rate-limit headers.
#[derive(Default)]
pub struct Limits {
    decisions: RefCell<Vec<Decision>>,
}

impl Limits {
    /// The rate-limit headers for every decision taken so far.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        shared::rate_limit::headers::for_decisions(&self.decisions.borrow())
    }

    fn record(&self, decisions: Vec<Decision>) {
        self.decisions.borrow_mut().extend(decisions);
    }
}

/// Runs `checks` and refuses with 429 when any refuses: straight at the `RateLimiter` objects
/// when their namespace is bound (`crate::limiter`), through rate-limiter otherwise. Either
/// answers degraded decisions itself; when rate-limiter cannot be reached at all, the request
/// proceeds (fail open, as the limiter's own default) and the log says so.
pub async fn enforce(
    x: &crate::Exchange<'_>,
    checks: Vec<Check>,
    in_order: bool,
) -> Result<(), Refusal> {
    let (env, limits, request_id) = (x.env, x.limits, x.request_id);
    let answer = match crate::limiter::direct(env, x.config)? {
        Some(direct) => Ok(direct.check(env, checks, in_order, request_id).await),
        None => services::check(env, checks, in_order, request_id).await,
    };
    match answer {
        Ok(answer) => {
            let allowed = answer.allowed;
            limits.record(answer.decisions);
            if allowed {
                Ok(())
            } else {
                Err(Refusal::RateLimited)
            }
        }
        Err(ServiceError::Refused(rejection)) => {
            console_error!(
                "request {request_id}: rate-limiter refused the check itself: {} {}",
                rejection.status,
                rejection.message
            );
            Ok(())
        }
        Err(ServiceError::Unavailable { service, cause }) => {
            console_warn!("request {request_id}: {service} unavailable, not limiting: {cause}");
            Ok(())
        }
    }
}

/// The per-IP check every route gets.
fn ip_check(client: &Client) -> Check {
    Check {
        policy: IP.to_owned(),
        key: client.ip_key(),
        cost: None,
        tenant: None,
        plan: None,
    }
}

/// The per-IP limit alone: what every route takes before anything more specific.
pub async fn enforce_ip(x: &crate::Exchange<'_>) -> Result<(), Refusal> {
    enforce(x, vec![ip_check(&x.client)], false).await
}

/// The per-IP limit, then the per-principal one, in one round trip: what an API route takes
/// when the principal is known at once (remembered). The principal's is not counted when the
/// IP's refuses, as when they are separate hops.
pub async fn enforce_ip_then_principal(
    x: &crate::Exchange<'_>,
    principal: &Principal,
) -> Result<(), Refusal> {
    let checks = vec![ip_check(&x.client), principal_check(principal)];
    enforce(x, checks, true).await
}

/// The per-principal limit: what every API route takes once the principal is known.
pub async fn enforce_principal(
    x: &crate::Exchange<'_>,
    principal: &Principal,
) -> Result<(), Refusal> {
    enforce(x, vec![principal_check(principal)], false).await
}

/// The per-principal check API routes get.
pub fn principal_check(principal: &Principal) -> Check {
    Check {
        policy: PRINCIPAL.to_owned(),
        key: format!("{}/{}", principal.tenant_id, principal.subject),
        cost: None,
        tenant: Some(principal.tenant_id.clone()),
        plan: Some(principal.plan.clone()),
    }
}

/// The request's credentials as auth-validator is asked about them, and what this isolate
/// remembers of its answers (`shared::auth::principal_cache`).
pub struct Credentials {
    envelope: AuthenticateRequest,
    /// The cache key of the credential and the expiry an answer gets, when it may be kept.
    key: Option<(CredentialDigest, u64)>,
}

thread_local! {
    /// Principals auth-validator verified for this isolate, by credential digest.
    static PRINCIPALS: RefCell<PrincipalCache> = RefCell::new(PrincipalCache::new(CAPACITY));
}

impl Credentials {
    /// Reads the credentials of a request for a route that takes `route.credential()`.
    pub fn of(x: &crate::Exchange<'_>, req: &Request, route: &PublicRoute, body: &[u8]) -> Self {
        let carrier_body = matches!(route.credential(), Credential::CarrierSignature);
        let envelope = AuthenticateRequest {
            method: req.method().to_string(),
            url: x.public_url.clone(),
            headers: CredentialHeaders::from_lookup(|name| req.headers().get(name).ok().flatten()),
            body: carrier_body.then(|| String::from_utf8_lossy(body).into_owned()),
            required_scopes: route
                .required_scopes()
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            call_id: route.call_id().map(str::to_owned),
        };
        let ttl_ms = x.config.principal_cache_ttl_ms;
        let key = (ttl_ms > 0)
            .then(|| principal_cache::cache_key(&envelope, edge_io::clock::now_ms(), ttl_ms))
            .flatten();
        Self { envelope, key }
    }

    /// The principal this isolate remembers for these credentials, when it serves the route.
    pub fn recalled(&self) -> Option<Principal> {
        let (key, _) = self.key.as_ref()?;
        let now = edge_io::clock::now_ms();
        PRINCIPALS.with(|cache| principal_cache::recall(&cache.borrow(), key, &self.envelope, now))
    }

    /// Who this is: remembered, or asked of auth-validator (and then remembered).
    pub async fn authenticate(&self, env: &Env, request_id: &str) -> Result<Principal, Refusal> {
        if let Some(principal) = self.recalled() {
            return Ok(principal);
        }
        let principal = services::authenticate(env, &self.envelope, request_id).await?;
        if let Some((key, expires_at_ms)) = self.key {
            let now = edge_io::clock::now_ms();
            PRINCIPALS.with(|cache| {
                cache
                    .borrow_mut()
                    .insert(key, principal.clone(), expires_at_ms, now)
            });
        }
        Ok(principal)
    }
}

/// Who this is, for a route that takes `route.credential()`.
pub async fn authenticate(
    x: &crate::Exchange<'_>,
    req: &Request,
    route: &PublicRoute,
    body: &[u8],
) -> Result<Principal, Refusal> {
    Credentials::of(x, req, route, body)
        .authenticate(x.env, x.request_id)
        .await
}

/// What a route starting a call needs first, at once: who this is, the per-IP limit, and the
/// regions geo-router chooses for the client's location (for a carrier's webhook that is the
/// carrier's media edge, where the relay WebSocket will come from).
pub async fn admit_and_route(
    x: &crate::Exchange<'_>,
    req: &Request,
    route: &PublicRoute,
) -> Result<(Principal, Vec<shared::geo::Target>), Refusal> {
    let route_request = shared::geo::wire::RouteRequest {
        caller: Some(x.client.location()),
        pin: None,
    };
    let (principal, limited, decision) = futures::join!(
        authenticate(x, req, route, &x.body),
        enforce_ip(x),
        services::route(x.env, &route_request, x.request_id),
    );
    limited?;
    Ok((principal?, x.targets(decision)))
}

/// The URL exactly as the client or carrier called it (`shared::public_route::as_called`).
pub fn public_url(req: &Request, config: &EdgeConfig) -> String {
    let websocket = req
        .headers()
        .get("upgrade")
        .ok()
        .flatten()
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    shared::public_route::as_called(
        &req.inner().url(),
        config.public_base_url.as_deref(),
        websocket,
    )
}
