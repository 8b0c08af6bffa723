//! The API clients' routes: calls (create, read, one turn as Server-Sent Events, end) and agent
//! configuration passed to the origin; and CORS preflights.

use edge_io::Failure;
use serde::{Deserialize, Serialize};
use shared::auth::MintSessionTokenRequest;
use shared::call::{CallSource, CreateCall};
use shared::call_session::{CallSession as CallState, EndReason};
use shared::cors::Preflight;
use shared::edge_config::EdgeConfig;
use shared::geo::wire::RouteRequest;
use shared::principal::Principal;
use shared::public_route::{ForwardFailure, PublicRoute, may_retry_elsewhere};
use shared::rate_limit::api::LeaseRequest;
use worker::{Headers, Method, Request, Response, console_error, console_warn};

use crate::Exchange;
use crate::gate::{self, refuse};
use crate::origin::{self, Body, Forward, Target};
use crate::services::{self, ServiceError};
use crate::session::{EndRequest, Touch};
use crate::voice::{self, pass_session_refusal, session_request, session_state};

/// `OPTIONS *`: answered at the edge from the configured origins.
pub fn preflight(req: &Request, config: &EdgeConfig) -> Result<Response, Failure> {
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
        Preflight::Refused(refusal) => Err(refuse(403, "cors_refused", refusal.to_string())),
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
) -> Result<Response, Failure> {
    let call_id = route.call_id();
    let wants_route = matches!(route, PublicRoute::CreateCall | PublicRoute::Agents { .. });
    let (principal, limited, state, decision) = futures::join!(
        gate::authenticate(x.env, req, route, &x.public_url, &x.body, x.request_id),
        gate::enforce_ip(x),
        async {
            match call_id {
                Some(id) => Some(session_state(x, id).await),
                None => None,
            }
        },
        async {
            if wants_route {
                Some(
                    services::route(
                        x.env,
                        &RouteRequest {
                            caller: Some(x.client.location()),
                            pin: None,
                        },
                        x.request_id,
                    )
                    .await,
                )
            } else {
                None
            }
        },
    );
    limited?;
    let principal = principal?;
    gate::enforce(
        x.env,
        x.limits,
        vec![gate::principal_check(&principal)],
        x.request_id,
    )
    .await?;
    // Another tenant's call does not exist, as far as this principal can tell.
    let state = match state {
        Some(Ok(state)) if state.tenant_id == principal.tenant_id => Some(state),
        Some(Ok(_)) => return Err(refuse(404, "unknown_call", "no such call")),
        Some(Err(failure)) => return Err(failure),
        None => None,
    };
    match (route, state) {
        (PublicRoute::CreateCall, _) => {
            let decision = decision.unwrap_or_else(|| {
                Err(ServiceError::Unavailable {
                    service: "GEO_ROUTER",
                    cause: "not asked".into(),
                })
            });
            create_call(x, &principal, decision).await
        }
        (PublicRoute::GetCall { .. }, Some(state)) => {
            Ok(Response::from_json(&CallView::of(&state))?)
        }
        (PublicRoute::Turn { call_id }, Some(state)) => {
            turn(x, req, &principal, call_id, &state).await
        }
        (PublicRoute::EndCall { call_id }, Some(_)) => end_call(x, call_id).await,
        (PublicRoute::Agents { origin_path }, _) => {
            let decision = decision.unwrap_or_else(|| {
                Err(ServiceError::Unavailable {
                    service: "GEO_ROUTER",
                    cause: "not asked".into(),
                })
            });
            let targets = voice::targets_or_default(x, decision);
            agents(x, req, &principal, origin_path, route, &targets).await
        }
        _ => Err(Failure::NotFound),
    }
}

/// What `GET /api/v1/calls/{id}` shows.
#[derive(Debug, Serialize)]
struct CallView<'a> {
    call_id: &'a str,
    status: shared::call_session::CallStatus,
    agent_id: Option<&'a str>,
    source: shared::call::CallSource,
    region: &'a str,
    started_at_ms: u64,
    last_activity_ms: u64,
    ended_at_ms: Option<u64>,
    end_reason: Option<EndReason>,
    turn_count: u32,
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
        }
    }
}

async fn create_call(
    x: &Exchange<'_>,
    principal: &Principal,
    decision: Result<shared::geo::wire::RouteDecision, ServiceError>,
) -> Result<Response, Failure> {
    let body: CreateCallBody = serde_json::from_slice(&x.body).map_err(|e| {
        refuse(
            400,
            "invalid_request",
            format!("the body must be {{\"agent_id\": \"…\"}}: {e}"),
        )
    })?;
    if !shared::identifier::is_resource_id(&body.agent_id) {
        return Err(refuse(400, "invalid_request", "agent_id is not an id"));
    }
    let call_id = format!("call_{}", crate::uuid());
    let targets = voice::targets_or_default(x, decision);

    let lease = LeaseRequest::for_call(&principal.tenant_id, &principal.plan, &call_id);
    match services::acquire_lease(x.env, &lease, x.request_id).await {
        Ok(granted) if granted.decision.allowed => {}
        Ok(refused) => {
            let wait_s = refused.decision.retry_after_ms.div_ceil(1000).max(1);
            return Err(Failure::Rejected(
                edge_io::Rejection::new(
                    429,
                    "concurrent_calls_exceeded",
                    format!(
                        "the tenant already has {} live calls",
                        refused.decision.limit
                    ),
                )
                .with_header("retry-after", wait_s.to_string()),
            ));
        }
        Err(error) => console_warn!(
            "request {}: call {call_id}: lease not taken: {error:?}",
            x.request_id
        ),
    }

    let signer = voice::signer(x, principal);
    let create = CreateCall {
        id: Some(call_id.clone()),
        agent_id: Some(body.agent_id.clone()),
        source: CallSource::Api,
        carrier_call_sid: None,
        from: None,
        to: None,
    };
    let started = match voice::create_at_origin(x, &signer, &targets, &create, principal).await {
        Ok(target) => voice::start_session(
            x,
            principal,
            &call_id,
            Some(body.agent_id.clone()),
            CallSource::Api,
            &targets,
            &target,
        )
        .await
        .map(|()| target),
        Err(cause) => Err(cause),
    };
    let target = match started {
        Ok(target) => target,
        Err(cause) => {
            console_error!(
                "request {}: call {call_id}: not started: {cause}",
                x.request_id
            );
            if let Err(error) = services::release_lease(x.env, &lease, x.request_id).await {
                console_error!(
                    "request {}: call {call_id}: lease not released: {error:?}",
                    x.request_id
                );
            }
            return Err(if cause.contains("404") {
                refuse(404, "unknown_agent", "no such agent")
            } else {
                refuse(
                    503,
                    "origin_unavailable",
                    "the call could not be started; retry shortly",
                )
            });
        }
    };
    let token = services::mint_session_token(
        x.env,
        &MintSessionTokenRequest {
            call_id: call_id.clone(),
            principal: principal.clone(),
            scopes: None,
            ttl_s: None,
        },
        x.request_id,
    )
    .await
    .map_err(|e| gate::unavailable_or_refused(e, x.request_id))?;
    let relay_url = format!(
        "{}?{}={}",
        voice::relay_url(&x.public_url, &call_id),
        shared::auth::SESSION_TOKEN_PARAM,
        token.token
    );
    let created = CallCreated {
        call_id,
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
) -> Result<Response, Failure> {
    if !state.is_active() {
        return Err(refuse(409, "call_ended", "the call already ended"));
    }
    let routing_target = Target {
        region: state.region.clone(),
        origin_url: String::new(),
    };
    let targets = pinned_targets(x, &routing_target).await;
    let signer = voice::signer(x, principal);
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
    let touch = session_request(
        x,
        call_id,
        Method::Post,
        "/touch",
        Some(&Touch { turn: true }),
    );
    let (forwarded, touched) =
        futures::join!(origin::send(x.env, &signer, &targets, &forward), touch);
    if let Err(failure) = touched {
        console_warn!(
            "request {}: call {call_id}: activity not recorded: {failure:?}",
            x.request_id
        );
    }
    match forwarded {
        Ok((response, _)) => pass_through(response),
        Err(unavailable) => {
            console_error!("request {}: turn on {call_id}: {unavailable}", x.request_id);
            Err(refuse(
                502,
                "origin_unavailable",
                "the call's origin did not answer",
            ))
        }
    }
}

/// The call's pinned region first: geo-router is asked with the pin, so a pinned region that is
/// down is skipped with the others after it.
async fn pinned_targets(x: &Exchange<'_>, pinned: &Target) -> Vec<Target> {
    let decision = services::route(
        x.env,
        &RouteRequest {
            caller: Some(x.client.location()),
            pin: Some(pinned.region.clone()),
        },
        x.request_id,
    )
    .await;
    voice::targets_or_default(x, decision)
}

/// `POST /api/v1/calls/{id}/end`: the session ends the call (lease, origin, sockets).
async fn end_call(x: &Exchange<'_>, call_id: &str) -> Result<Response, Failure> {
    let mut answer = session_request(
        x,
        call_id,
        Method::Post,
        "/end",
        Some(&EndRequest {
            reason: EndReason::Requested,
        }),
    )
    .await?;
    if answer.status_code() != 200 {
        return Err(pass_session_refusal(&mut answer).await);
    }
    let state: CallState = answer.json().await?;
    Ok(Response::from_json(&CallView::of(&state))?)
}

/// `/api/v1/agents…`: passed to the origin; reads and idempotent writes fail over.
async fn agents(
    x: &Exchange<'_>,
    req: &Request,
    principal: &Principal,
    origin_path: &str,
    route: &PublicRoute,
    targets: &[Target],
) -> Result<Response, Failure> {
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
    match origin::send(x.env, &voice::signer(x, principal), targets, &forward).await {
        Ok((response, _)) => pass_through(response),
        Err(unavailable) => {
            console_error!("request {}: agents: {unavailable}", x.request_id);
            Err(refuse(502, "origin_unavailable", "no origin answered"))
        }
    }
}

/// The origin's answer to the client: status and body as they are (streams stay streams), and
/// only the headers a client should see.
fn pass_through(response: Response) -> Result<Response, Failure> {
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
