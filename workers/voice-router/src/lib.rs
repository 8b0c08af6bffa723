//! voice-router: the only public Worker. Every request passes the gate (route, firewall, body
//! limit, authentication through auth-validator, rate limits decided by rate-limiter's objects), is routed by
//! geo-router to a region, and is forwarded to that region's origin signed by the edge; each call
//! lives in a `CallSession` Durable Object. Every answer carries the request id, the security
//! headers, the rate-limit headers and CORS for configured browser origins; every refusal gets
//! its status in one place (`refusal`). Contracts: `ARCHITECTURE.md` ("Public HTTP surface",
//! "Edge → origin contract").

use edge_io::answer::rejection_response;
use shared::geo::wire::RouteDecision;
use shared::geo::{Target, targets};
use shared::principal::Principal;
use shared::request_id::Trust;
use shared::trace_context::TraceParent;
use worker::{Context, Env, Headers, Request, Response, ResponseBuilder, Result, event};

mod api;
mod call_start;
mod config;
mod gate;
mod health;
mod limiter;
mod origin;
mod outbound;
mod refusal;
mod services;
mod session;
mod stub;
mod voice;

use refusal::Refusal;
pub use session::CallSession;

/// Durable Object namespace of `CallSession`, one instance per call id.
pub const CALL_SESSION: &str = "CALL_SESSION";

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let request_id = edge_io::request_id(&req, Trust::Public);
    // This hop's span of the caller's trace (or a new trace): sent on to the origin.
    let trace = edge_io::trace::continue_or_start(&req);
    let browser_origin = req.headers().get("origin").ok().flatten();
    let limits = gate::Limits::default();
    let response = match handle(req, &env, &ctx, &limits, &request_id, trace).await {
        Ok(response) => response,
        Err(refusal) => {
            let tag = origin::Tag {
                request_id: &request_id,
                trace: &trace,
            };
            rejection_response(&refusal::rejection(refusal, &tag), &request_id)?
        }
    };
    let cors = config::load(&env)
        .map(|config| config.cors.response_headers(browser_origin.as_deref()))
        .unwrap_or_default();
    finish(response, &request_id, &limits.headers(), &cors)
}

/// Every public request, start to end.
async fn handle(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    limits: &gate::Limits,
    request_id: &str,
    trace: TraceParent,
) -> std::result::Result<Response, Refusal> {
    let config = config::load(env).map_err(|error| {
        worker::console_error!("request {request_id}: {error}");
        Refusal::Misconfigured
    })?;
    let method = req.method().to_string();
    let route = gate::route_of(&method, &req.path())?;
    if route == shared::public_route::PublicRoute::Preflight {
        return api::preflight(&req, &config);
    }
    let client = gate::Client::of(&req);
    gate::firewall(&config, &route, &client)?;
    let body = gate::read_body(&mut req, &route).await?;
    let exchange = Exchange {
        env,
        ctx,
        config: &config,
        limits,
        request_id,
        trace,
        client,
        body,
        public_url: gate::public_url(&req, &config),
    };
    use shared::public_route::PublicRoute;
    match route {
        PublicRoute::Health => health::answer(&exchange).await,
        PublicRoute::CarrierIncoming { carrier } => {
            voice::incoming(&exchange, &req, &route, carrier.carrier()).await
        }
        PublicRoute::CarrierStatus { carrier } => {
            voice::status(&exchange, &req, &route, carrier.carrier()).await
        }
        PublicRoute::OutboundCall => outbound::place(&exchange, &req, &route).await,
        PublicRoute::TwilioAction => voice::action(&exchange, &req, &route).await,
        PublicRoute::TwilioWhisper => voice::whisper(&exchange, &req, &route).await,
        PublicRoute::Relay { .. } => voice::relay(&exchange, req, &route).await,
        PublicRoute::CreateCall
        | PublicRoute::GetCall { .. }
        | PublicRoute::Turn { .. }
        | PublicRoute::EndCall { .. }
        | PublicRoute::Agents { .. }
        | PublicRoute::ListCalls
        | PublicRoute::Transcript { .. }
        | PublicRoute::CallEvents { .. }
        | PublicRoute::Events
        | PublicRoute::Usage
        | PublicRoute::SigningSecret { .. }
        | PublicRoute::Webhooks { .. } => api::handle(&exchange, &req, &route).await,
        PublicRoute::Preflight => api::preflight(&req, &config),
    }
}

/// One request's context, shared by the route handlers.
pub struct Exchange<'a> {
    /// Bindings.
    pub env: &'a Env,
    /// For work that outlives the response.
    pub ctx: &'a Context,
    /// Parsed configuration.
    pub config: &'a shared::edge_config::EdgeConfig,
    /// Rate-limit decisions taken for this request.
    pub limits: &'a gate::Limits,
    /// This request's id.
    pub request_id: &'a str,
    /// This request's place in its trace: the `traceparent` forwarded to the origin.
    pub trace: TraceParent,
    /// What the edge knows about the client.
    pub client: gate::Client,
    /// The request body (within the route's limit).
    pub body: Vec<u8>,
    /// The URL as the client called it.
    pub public_url: String,
}

impl Exchange<'_> {
    /// How requests forwarded for `principal` are signed.
    pub fn signer<'a>(&'a self, principal: &'a Principal) -> origin::Signer<'a> {
        origin::Signer {
            secret: &self.config.signing_secret,
            principal,
            country: self.client.country.as_deref(),
            request_id: self.request_id,
            trace: self.trace,
            failover_budget_ms: self.config.failover_budget_ms,
        }
    }

    /// How this request's log lines name it: its id beside its trace id.
    pub fn tag(&self) -> origin::Tag<'_> {
        origin::Tag {
            request_id: self.request_id,
            trace: &self.trace,
        }
    }

    /// The regions geo-router chose, or the configured origin when it could not answer (the
    /// request still goes through, unrouted, rather than failing).
    pub fn targets(
        &self,
        decision: std::result::Result<RouteDecision, services::ServiceError>,
    ) -> Vec<Target> {
        match decision {
            Ok(decision) => targets::of_decision(&decision),
            Err(error) => {
                worker::console_warn!(
                    "{}: geo-router did not route, using ORIGIN_URL: {error:?}",
                    self.tag()
                );
                vec![Target::new("default", &self.config.origin_url)]
            }
        }
    }
}

/// Adds the request id, the security headers, the rate-limit headers and CORS to an answer. A
/// WebSocket upgrade (101) is passed as it is: its headers are the handshake's. An answer built
/// here gets them in place; one whose headers are immutable (a fetched response, e.g. a static
/// asset) is rebuilt around its body with a copy of its headers.
fn finish(
    response: Response,
    request_id: &str,
    rate_limit: &[(&'static str, String)],
    cors: &[(&'static str, String)],
) -> Result<Response> {
    if response.status_code() == 101 {
        return Ok(response);
    }
    let add = |headers: &Headers| -> Result<()> {
        headers.set(shared::headers::REQUEST_ID, request_id)?;
        for (name, value) in shared::headers::SECURITY {
            headers.set(name, value)?;
        }
        for (name, value) in rate_limit.iter().chain(cors) {
            headers.set(name, value)?;
        }
        Ok(())
    };
    if add(response.headers()).is_ok() {
        return Ok(response);
    }
    let status = response.status_code();
    let headers = Headers::new();
    for (name, value) in response.headers().entries() {
        headers.set(&name, &value)?;
    }
    add(&headers)?;
    let (_, body) = response.into_parts();
    Ok(ResponseBuilder::new()
        .with_status(status)
        .with_headers(headers)
        .body(body))
}

/// A fresh random UUID (the runtime's CSPRNG).
pub fn uuid() -> String {
    edge_io::request_id::random_uuid()
}
