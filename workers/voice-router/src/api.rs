//! The API clients' routes: calls (create, read, one turn as Server-Sent Events, end) and agent
//! configuration passed to the origin; and CORS preflights.

use serde::{Deserialize, Serialize};
use shared::auth::MintSessionTokenRequest;
use shared::call::{CallDirection, CallSource};
use shared::call_session::wire::Touch;
use shared::call_session::{CallSession as CallState, EndReason, SessionRefusal};
use shared::carrier::{AnsweredBy, CarrierKind};
use shared::cors::Preflight;
use shared::edge_config::EdgeConfig;
use shared::geo::Target;
use shared::geo::wire::RouteRequest;
use shared::identifier::is_resource_id;
use shared::principal::Principal;
use shared::public_route::{ForwardFailure, PublicRoute, may_retry_elsewhere};
use worker::{Headers, Method, Request, Response, console_error, console_warn};

use crate::call_start::{self, NewCall};
use crate::origin::{self, Body, Forward};
use crate::refusal::Refusal;
use crate::voice::relay_url;
use crate::{Exchange, gate, services, stub};

/// `OPTIONS *`: answered at the edge from the configured origins.
pub fn preflight(req: &Request, config: &EdgeConfig) -> Result<Response, Refusal> {
    let header = |name: &str| req.headers().get(name).ok().flatten();
    match config.cors.preflight(
        header("origin").as_deref(),
        header("access-control-request-method").as_deref(),
        header("access-control-request-headers").as_deref(),
    ) {
        Preflight::Allowed(allowed) => {
            let headers = Headers::new();
            for (name, value) in allowed {
                headers.set(name, &value)?;
            }
            Ok(Response::empty()?.with_status(204).with_headers(headers))
        }
        Preflight::Refused(refusal) => Err(Refusal::CorsRefused(refusal.to_string())),
    }
}

/// `POST /api/v1/calls` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCallBody {
    agent_id: String,
}

/// `POST /api/v1/calls` answer.
#[derive(Debug, Serialize)]
struct CallCreated {
    call_id: String,
    region: String,
    relay_url: String,
    relay_token_expires_at: u64,
}

/// The API routes. Authentication, the per-IP limit and (for reads of a call) the call's state
/// go in parallel; the per-principal limit follows once the principal is known.
pub async fn handle(
    x: &Exchange<'_>,
    req: &Request,
    route: &PublicRoute,
) -> Result<Response, Refusal> {
    let call_id = route.call_id();
    let wants_route = matches!(route, PublicRoute::CreateCall | PublicRoute::Agents { .. });
    let route_request = RouteRequest {
        caller: Some(x.client.location()),
        pin: None,
    };
    let (principal, limited, state, decision) = futures::join!(
        gate::authenticate(x.env, req, route, &x.public_url, &x.body, x.request_id),
        gate::enforce_ip(x),
        async {
            match call_id {
                Some(id) => Some(stub::state(x.env, id).await),
                None => None,
            }
        },
        async {
            match wants_route {
                true => Some(services::route(x.env, &route_request, x.request_id).await),
                false => None,
            }
        },
    );
    limited?;
    let principal = principal?;
    gate::enforce_principal(x, &principal).await?;
    let state = state
        .transpose()?
        .map(|state| stub::owned(state, &principal))
        .transpose()?;
    let targets = decision
        .map(|decision| x.targets(decision))
        .unwrap_or_default();
    match (route, state) {
        (PublicRoute::CreateCall, _) => create_call(x, &principal, &targets).await,
        (PublicRoute::GetCall { .. }, Some(state)) => {
            Ok(Response::from_json(&CallView::of(&state))?)
        }
        (PublicRoute::Turn { call_id }, Some(state)) => {
            turn(x, req, &principal, call_id, &state).await
        }
        (PublicRoute::EndCall { call_id }, Some(_)) => {
            let state = stub::end(x.env, call_id, EndReason::Requested).await?;
            Ok(Response::from_json(&CallView::of(&state))?)
        }
        (PublicRoute::Agents { origin_path }, _) => {
            agents(x, req, &principal, origin_path, route, &targets).await
        }
        _ => Err(Refusal::NoRoute),
    }
}

/// What `GET /api/v1/calls/{id}` shows.
#[derive(Debug, Serialize)]
struct CallView<'a> {
    call_id: &'a str,
    status: shared::call_session::CallStatus,
    agent_id: Option<&'a str>,
    source: CallSource,
    region: &'a str,
    started_at_ms: u64,
    last_activity_ms: u64,
    ended_at_ms: Option<u64>,
    end_reason: Option<EndReason>,
    turn_count: u32,
    direction: CallDirection,
    #[serde(skip_serializing_if = "Option::is_none")]
    carrier: Option<CarrierKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    carrier_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    carrier_status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answered_by: Option<AnsweredBy>,
}

impl<'a> CallView<'a> {
    fn of(state: &'a CallState) -> Self {
        Self {
            call_id: &state.call_id,
            status: state.status,
            agent_id: state.agent_id.as_deref(),
            source: state.source,
            region: &state.region,
            started_at_ms: state.started_at_ms,
            last_activity_ms: state.last_activity_ms,
            ended_at_ms: state.ended_at_ms,
            end_reason: state.end_reason,
            turn_count: state.turn_count,
            direction: state.direction,
            carrier: state.carrier,
            carrier_call_id: state.carrier_call_id.as_deref(),
            carrier_status: state.carrier_status.as_deref(),
            answered_by: state.answered_by,
        }
    }
}

async fn create_call(
    x: &Exchange<'_>,
    principal: &Principal,
    targets: &[Target],
) -> Result<Response, Refusal> {
    let body: CreateCallBody = serde_json::from_slice(&x.body).map_err(|e| {
        Refusal::InvalidRequest(format!("the body must be {{\"agent_id\": \"…\"}}: {e}"))
    })?;
    if !is_resource_id(&body.agent_id) {
        return Err(Refusal::InvalidRequest("agent_id is not an id".into()));
    }
    let call = NewCall {
        call_id: format!("call_{}", crate::uuid()),
        agent_id: body.agent_id,
        source: CallSource::Api,
        from: None,
        to: None,
        direction: CallDirection::Inbound,
        carrier: None,
        carrier_call_id: None,
        metadata: None,
    };
    let target = call_start::start_call(x, principal, &call, targets).await?;
    let token = services::mint_session_token(
        x.env,
        &MintSessionTokenRequest {
            call_id: call.call_id.clone(),
            principal: principal.clone(),
            scopes: None,
            ttl_s: None,
        },
        x.request_id,
    )
    .await?;
    let relay_url = format!(
        "{}?{}={}",
        relay_url(&x.public_url, &call.call_id),
        shared::auth::SESSION_TOKEN_PARAM,
        token.token
    );
    let created = CallCreated {
        call_id: call.call_id,
        region: target.region,
        relay_url,
        relay_token_expires_at: token.expires_at,
    };
    Ok(Response::from_json(&created)?.with_status(201))
}

/// One turn: forwarded to the call's origin, the reply streamed back as it comes (the SSE body
/// is passed through, never buffered). Not retried in another region: a turn could be answered
/// twice.
async fn turn(
    x: &Exchange<'_>,
    req: &Request,
    principal: &Principal,
    call_id: &str,
    state: &CallState,
) -> Result<Response, Refusal> {
    if !state.is_active() {
        return Err(SessionRefusal::CallEnded.into());
    }
    // geo-router is asked with the call's pin, so a pinned region that is down is skipped
    // with the others after it.
    let pinned = RouteRequest {
        caller: Some(x.client.location()),
        pin: Some(state.region.clone()),
    };
    let targets = x.targets(services::route(x.env, &pinned, x.request_id).await);
    let path = shared::origin_path::call_turns(call_id);
    let last_event_id = req.headers().get("last-event-id").ok().flatten();
    let mut extra = vec![("accept", "text/event-stream")];
    if let Some(id) = last_event_id.as_deref() {
        extra.push(("last-event-id", id));
    }
    let route = PublicRoute::Turn {
        call_id: call_id.to_owned(),
    };
    let retry = |failure: ForwardFailure| may_retry_elsewhere("POST", &route, failure);
    let forward = Forward {
        method: Method::Post,
        path_and_query: &path,
        body: Body::Bytes(&x.body),
        content_type: Some("application/json"),
        extra: &extra,
        may_retry: &retry,
        reporter: &principal.tenant_id,
    };
    // The turn is activity on the call whatever the origin says; recorded beside the forward.
    let signer = x.signer(principal);
    let (forwarded, touched) = futures::join!(
        origin::send(x.env, &signer, &targets, &forward),
        stub::touch(x.env, call_id, Touch { turn: true }),
    );
    if let Err(refusal) = touched {
        console_warn!(
            "request {}: call {call_id}: activity not recorded: {refusal:?}",
            x.request_id
        );
    }
    match forwarded {
        Ok((response, _)) => pass_through(response),
        Err(unavailable) => {
            console_error!("request {}: turn on {call_id}: {unavailable}", x.request_id);
            Err(Refusal::OriginUnavailable)
        }
    }
}

/// `/api/v1/agents…`: passed to the origin; reads and idempotent writes fail over.
async fn agents(
    x: &Exchange<'_>,
    req: &Request,
    principal: &Principal,
    origin_path: &str,
    route: &PublicRoute,
    targets: &[Target],
) -> Result<Response, Refusal> {
    let query = req.inner().url();
    let query = query.find('?').map(|at| &query[at..]).unwrap_or_default();
    let path_and_query = format!("{origin_path}{query}");
    let method = req.method();
    let method_name = method.to_string();
    let retry = |failure: ForwardFailure| may_retry_elsewhere(&method_name, route, failure);
    let body = if x.body.is_empty() {
        Body::Empty
    } else {
        Body::Bytes(&x.body)
    };
    let forward = Forward {
        method,
        path_and_query: &path_and_query,
        body,
        content_type: (!x.body.is_empty()).then_some("application/json"),
        extra: &[],
        may_retry: &retry,
        reporter: &principal.tenant_id,
    };
    match origin::send(x.env, &x.signer(principal), targets, &forward).await {
        Ok((response, _)) => pass_through(response),
        Err(unavailable) => {
            console_error!("request {}: agents: {unavailable}", x.request_id);
            Err(Refusal::OriginUnavailable)
        }
    }
}

/// The origin's answer to the client: status and body as they are (streams stay streams), and
/// only the headers a client should see.
fn pass_through(response: Response) -> Result<Response, Refusal> {
    const PASSED: [&str; 5] = [
        "content-type",
        "cache-control",
        "retry-after",
        "location",
        "etag",
    ];
    let status = response.status_code();
    let headers = Headers::new();
    for name in PASSED {
        if let Ok(Some(value)) = response.headers().get(name) {
            headers.set(name, &value)?;
        }
    }
    let (_, body) = response.into_parts();
    Ok(worker::ResponseBuilder::new()
        .with_status(status)
        .with_headers(headers)
        .body(body))
}
