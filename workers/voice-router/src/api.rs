//! The API clients' routes: calls (create, read, one turn as Server-Sent Events, end), agent
//! configuration passed to the origin, the read API passed to the origin (the call list, a
//! call's transcript and events, the tenant's events, usage); and CORS preflights.

use serde::{Deserialize, Serialize};
use shared::auth::MintSessionTokenRequest;
use shared::call::{CallDirection, CallSource};
use shared::call_list::CallListQuery;
use shared::call_session::wire::{EndRequest, Touch};
use shared::call_session::{CallSession as CallState, EndReason, SessionRefusal};
use shared::carrier::{AnsweredBy, CarrierKind};
use shared::cors::Preflight;
use shared::edge_config::EdgeConfig;
use shared::geo::Target;
use shared::geo::wire::RouteRequest;
use shared::headers::LAST_EVENT_ID;
use shared::identifier::is_resource_id;
use shared::origin_path;
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
/// go in parallel; the per-principal limit follows once the principal is known. A principal
/// this isolate remembers is known at once: the two limits then take one hop, in order.
pub async fn handle(
    x: &Exchange<'_>,
    req: &Request,
    route: &PublicRoute,
) -> Result<Response, Refusal> {
    let call_id = route.call_id();
    let wants_route = matches!(
        route,
        PublicRoute::CreateCall
            | PublicRoute::Agents { .. }
            | PublicRoute::ListCalls
            | PublicRoute::Events
            | PublicRoute::Usage
            | PublicRoute::SigningSecret { .. }
            | PublicRoute::Webhooks { .. }
    );
    let route_request = RouteRequest {
        caller: Some(x.client.location()),
        pin: None,
    };
    let state = async {
        match call_id {
            Some(id) => Some(stub::state(x.env, id).await),
            None => None,
        }
    };
    let decision = async {
        match wants_route {
            true => Some(services::route(x.env, &route_request, x.request_id).await),
            false => None,
        }
    };
    let credentials = gate::Credentials::of(x, req, route, &x.body);
    let (principal, state, decision) = match credentials.recalled() {
        // Remembered: both limits in one hop (the IP's first), beside the state and the route.
        Some(principal) => {
            let (limited, state, decision) = futures::join!(
                gate::enforce_ip_then_principal(x, &principal),
                state,
                decision
            );
            limited?;
            (principal, state, decision)
        }
        None => {
            let (principal, limited, state, decision) = futures::join!(
                credentials.authenticate(x.env, x.request_id),
                gate::enforce_ip(x),
                state,
                decision,
            );
            limited?;
            let principal = principal?;
            gate::enforce_principal(x, &principal).await?;
            (principal, state, decision)
        }
    };
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
            // An optional `{reason, handoff_data}`: the origin puts them in the relay's `end`.
            let request = EndRequest::from_api_body(&x.body)
                .map_err(|error| Refusal::InvalidRequest(error.to_string()))?;
            let state = stub::end(x.env, call_id, &request).await?;
            Ok(Response::from_json(&CallView::of(&state))?)
        }
        (
            PublicRoute::Agents { origin_path: path }
            | PublicRoute::SigningSecret { origin_path: path }
            | PublicRoute::Webhooks { origin_path: path },
            _,
        ) => {
            let path_and_query = format!("{path}{}", query_of(req));
            forward(
                x,
                req.method(),
                &principal,
                route,
                &targets,
                &path_and_query,
                &[],
            )
            .await
        }
        (PublicRoute::ListCalls | PublicRoute::Usage | PublicRoute::Events, _) => {
            read(x, req, &principal, route, None, &targets).await
        }
        (PublicRoute::Transcript { .. } | PublicRoute::CallEvents { .. }, Some(state)) => {
            read(x, req, &principal, route, Some(&state), &targets).await
        }
        _ => Err(Refusal::NoRoute),
    }
}

/// The read API, passed to the origin: the call list (its query refused here when the origin
/// would refuse it, else forwarded in its canonical form), usage, the tenant's events, and a
/// call's transcript and events — from the call's region first (its events are published
/// there).
async fn read(
    x: &Exchange<'_>,
    req: &Request,
    principal: &Principal,
    route: &PublicRoute,
    call: Option<&CallState>,
    targets: &[Target],
) -> Result<Response, Refusal> {
    let last_event_id = req.headers().get(LAST_EVENT_ID).ok().flatten();
    let (path_and_query, extra) = match route {
        PublicRoute::ListCalls => {
            let query = CallListQuery::parse(query_of(req).trim_start_matches('?'))
                .map_err(Refusal::InvalidListQuery)?;
            (
                format!("{}{}", origin_path::CALLS, query.to_query()),
                vec![],
            )
        }
        PublicRoute::Usage => (format!("{}{}", origin_path::USAGE, query_of(req)), vec![]),
        PublicRoute::Events => (origin_path::EVENTS.to_owned(), event_stream_headers(None)),
        PublicRoute::Transcript { call_id } => (origin_path::call_turns(call_id), vec![]),
        PublicRoute::CallEvents { call_id } => (
            origin_path::call_events(call_id),
            event_stream_headers(last_event_id.as_deref()),
        ),
        _ => return Err(Refusal::NoRoute),
    };
    let pinned = match call {
        Some(call) => pinned_targets(x, call).await,
        None => targets.to_vec(),
    };
    forward(
        x,
        Method::Get,
        principal,
        route,
        &pinned,
        &path_and_query,
        &extra,
    )
    .await
}

/// The media type of Server-Sent Events.
const EVENT_STREAM: &str = "text/event-stream";

/// The headers a forwarded event stream carries: `accept`, and the client's `Last-Event-ID`.
fn event_stream_headers(last_event_id: Option<&str>) -> Vec<(&'static str, &str)> {
    let mut headers = vec![("accept", EVENT_STREAM)];
    if let Some(id) = last_event_id {
        headers.push((LAST_EVENT_ID, id));
    }
    headers
}

/// The request's query string with its `?`, or empty.
fn query_of(req: &Request) -> String {
    let url = req.inner().url();
    url.find('?')
        .map(|at| url[at..].to_owned())
        .unwrap_or_default()
}

/// The regions to reach a call's origin by: geo-router asked with the call's pin, so a pinned
/// region that is down is skipped with the others after it.
async fn pinned_targets(x: &Exchange<'_>, state: &CallState) -> Vec<Target> {
    let pinned = RouteRequest {
        caller: Some(x.client.location()),
        pin: Some(state.region.clone()),
    };
    x.targets(services::route(x.env, &pinned, x.request_id).await)
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
    let targets = pinned_targets(x, state).await;
    let path = origin_path::call_turns(call_id);
    let last_event_id = req.headers().get(LAST_EVENT_ID).ok().flatten();
    let extra = event_stream_headers(last_event_id.as_deref());
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
            "{}: call {call_id}: activity not recorded: {refusal:?}",
            x.tag()
        );
    }
    match forwarded {
        Ok((response, _)) => pass_through(response),
        Err(unavailable) => {
            console_error!("{}: turn on {call_id}: {unavailable}", x.tag());
            Err(Refusal::OriginUnavailable)
        }
    }
}

/// A request passed to the origin as the client made it (the body, `path_and_query`, `extra`
/// headers), its answer passed back ([`pass_through`]; a stream stays a stream). Reads and
/// idempotent writes move to the next region when an origin fails before answering
/// (`may_retry_elsewhere`); once an answer has started — a stream of events included — it is
/// the client's, never retried; a non-idempotent write (a signing-secret rotation) is never
/// retried elsewhere either: it could happen twice.
async fn forward(
    x: &Exchange<'_>,
    method: Method,
    principal: &Principal,
    route: &PublicRoute,
    targets: &[Target],
    path_and_query: &str,
    extra: &[(&str, &str)],
) -> Result<Response, Refusal> {
    let method_name = method.to_string();
    let retry = |failure: ForwardFailure| may_retry_elsewhere(&method_name, route, failure);
    // A body on a `GET` is ignored, as the origin would (a fetch refuses to send one).
    let body = if x.body.is_empty() || method == Method::Get {
        Body::Empty
    } else {
        Body::Bytes(&x.body)
    };
    let content_type = matches!(body, Body::Bytes(_)).then_some("application/json");
    let forward = Forward {
        method,
        path_and_query,
        body,
        content_type,
        extra,
        may_retry: &retry,
        reporter: &principal.tenant_id,
    };
    match origin::send(x.env, &x.signer(principal), targets, &forward).await {
        Ok((response, _)) => pass_through(response),
        Err(unavailable) => {
            console_error!("{}: {route:?}: {unavailable}", x.tag());
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
